from dissipate.analyses import accuracy_params, tables as analysis


def test_one_row_per_trained_net_joined_with_its_speed(smoke, result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    accuracy = result(accuracy_params.NAME)
    assert frame["model"].tolist() == accuracy["model"].tolist()
    assert frame["test_acc"].tolist() == accuracy["test_acc"].tolist()
    timed = frame[frame["images_per_s"].notna()]
    assert sorted(timed["model"]) == ["plain20", "pnnh20", "resnet20"]  # the smoke preset times depth 20 only
    assert (frame["flops"] > 0).all()
    out, _, _ = smoke
    markdown = (out / f"{analysis.NAME}.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + len(frame)  # a header and a line per net
    assert "| resnet20 | 0.27 |" in markdown

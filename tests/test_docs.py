"""The documents: every link in the README, the usage guide, the results and the design resolves, the README stays
short, its claims and the results' gallery are what the committed figures give, nothing cites a design document that
the repository does not hold, and what the Quickstart's commands write by default is ignored by git."""

import inspect
import re
from pathlib import Path

import pandas as pd
import pytest

from dissipate import cli
from dissipate.analyses import gallery

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
DOCUMENTS = [README, ROOT / "docs" / "design.md", ROOT / "docs" / "usage.md", RESULTS]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(document):
    links = [link for link in LINK.findall(document.read_text()) if not link.startswith(("http://", "https://"))]
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: {link} names no file"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), f"{document.name}: {link} names no heading"


def test_nothing_cites_a_design_document_outside_the_repository():
    sources = [*ROOT.glob("dissipate/**/*.py"), *ROOT.glob("benchmarks/*"), *DOCUMENTS]
    for path in sources:
        if path.is_file():
            assert "DESIGN" + ".md" not in path.read_text(errors="replace"), path  # spelt apart, so that no file names it


@pytest.mark.parametrize("command", [cli.probe, cli.figures, cli.plot], ids=lambda command: command.__name__)
def test_a_commands_default_output_is_ignored_by_git_so_a_clone_stays_clean(command):
    default = inspect.signature(command).parameters["out"].default.default  # the typer.Option's default
    folder = default.parent if default.suffix else default  # plot's is a figure in a folder of its own
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert str(folder) != "." and f"/{folder}/" in ignored  # so, too, the default is never the committed figures/


def section(document: Path, start: str, end: str) -> str:
    """The text of `document` from `start` to `end`, markers included."""
    text = document.read_text()
    assert text.count(start) == 1 and text.count(end) == 1, f"{document.name}: no single pair of markers"
    return text[text.index(start):text.index(end) + len(end)]


def test_the_readme_is_read_in_five_minutes():
    size = len(README.read_bytes())
    assert size < 12 * 1024, f"README.md is {size} bytes: move sections to docs/usage.md"


def test_the_readmes_claims_and_the_results_gallery_are_the_ones_generated_from_the_committed_figures():
    """Every number in the README's claims and in docs/results.md comes from figures/*.csv: regenerate both with
    `python -m dissipate.analyses.gallery figures README.md docs/results.md` after `dissipate figures --out figures`."""
    figures = ROOT / "figures"
    claims = gallery.claims_section(figures, README, RESULTS)
    assert section(README, gallery.CLAIMS_START, gallery.CLAIMS_END) == claims
    assert "| claim | verdict |" in claims and "](docs/results.md)" in claims and "](figures/claims.md)" in claims
    assert "![" not in claims  # the figures are in docs/results.md, not in the README
    full = gallery.gallery(figures, RESULTS)
    assert section(RESULTS, gallery.START, gallery.END) == full
    assert "| claim | verdict |" in full and "](../figures/remedies.png)" in full  # links from docs/ to figures/


def test_the_gallery_is_spliced_between_its_markers_and_a_document_without_them_is_refused():
    document = f"intro\n{gallery.START}\nold numbers\n{gallery.END}\nafter\n"
    assert gallery.splice(document, "new") == "intro\nnew\nafter\n"
    with pytest.raises(ValueError, match="no gallery markers"):
        gallery.splice("intro only", "new")
    claims = f"intro\n{gallery.CLAIMS_START}\nold\n{gallery.CLAIMS_END}\n"
    assert gallery.splice(claims, "new", gallery.CLAIMS_START, gallery.CLAIMS_END) == "intro\nnew\n"
    with pytest.raises(ValueError, match="no gallery markers"):
        gallery.splice(document, "new", gallery.CLAIMS_START, gallery.CLAIMS_END)


def test_a_sections_links_are_relative_to_the_document_that_holds_it(tmp_path):
    assert gallery.relative(tmp_path / "figures", tmp_path / "README.md") == "figures"
    assert gallery.relative(tmp_path / "figures", tmp_path / "docs" / "results.md") == "../figures"
    assert gallery.relative(tmp_path / "docs" / "results.md", tmp_path / "README.md") == "docs/results.md"


def test_the_quickstarts_numbers_are_the_committed_probes_of_the_same_nets():
    """The Quickstart quotes `dissipate probe --model plain34` (and resnet34): seed 0, 256 synthetic images at 32 px,
    which is what the cpu preset probes at initialisation, so the committed dissipation_curves.csv holds the same
    rows (measured equal to every printed digit) and the quoted numbers are checked against it, not remembered."""
    from dissipate.analyses import RECIPES

    recipe = RECIPES["cpu"]
    probe_defaults = inspect.signature(cli.probe).parameters
    assert recipe.init_data == probe_defaults["data"].default.default == "synthetic"
    assert recipe.init_image_size == 32 and recipe.probe_images == probe_defaults["num_images"].default.default
    readme = " ".join(README.read_text().split())
    number = r"([\d.]+) / ([\d.]+)"
    quoted = re.search(rf"plain34 keeps {number} \(CKA / R²\) at `(\S+)` against resnet34's {number}, and at the last "
                       rf"site the two are {number} and {number}", readme)
    assert quoted, "the Quickstart no longer quotes plain34 against resnet34"
    curves = pd.read_csv(ROOT / "figures" / "dissipation_curves.csv")
    init = curves[(curves["state"] == "init") & (curves["dataset"] == "synthetic")]

    def at(model: str, site: str | None) -> list[str]:
        rows = init[init["model"] == model]
        row = rows[rows["site"] == site].iloc[0] if site else rows.loc[rows["layer"].idxmax()]
        return [f"{row.cka_input:.3f}", f"{row.recon_r2:.3f}"]

    mid = quoted.group(3)
    numbers = [*quoted.groups()[:2], *quoted.groups()[3:]]
    assert numbers == [*at("plain34", mid), *at("resnet34", mid), *at("plain34", None), *at("resnet34", None)]

"""Signal propagation plots: timm's statistics, block by block, at initialisation."""

import pytest
import torch

from dissipate.analyses import signal_propagation as analysis


def test_the_statistics_are_timms_definitions():
    x = torch.randn(6, 5, 4, 3) * torch.arange(1.0, 6.0).view(1, 5, 1, 1) + torch.arange(5.0).view(1, 5, 1, 1)
    mean, var = analysis.channel_statistics(x)
    # timm.utils's avg_sq_ch_mean and avg_ch_var, as its signal-propagation hooks compute them on a block's output
    assert mean == pytest.approx(torch.mean(x.mean(axis=[0, 2, 3]) ** 2).item(), rel=1e-6)
    assert var == pytest.approx(torch.mean(x.var(axis=[0, 2, 3])).item(), rel=1e-6)
    assert mean == pytest.approx(sum(c * c for c in range(5)) / 5, rel=0.3)  # the channels' means 0 to 4


def test_each_block_output_of_each_family_and_what_bn_and_a_shortcut_do_to_them(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert set(frame["model"]) == {v.label for v in analysis.PRESETS["smoke"].models}
    plain = frame[frame["model"] == "plain20"]
    assert len(plain) == 10 and plain["block"].tolist() == list(range(10))  # the stem and 9 blocks
    # plain20's block outputs are BN outputs with statistics from these very images: mean 0 and variance 1
    assert (plain["avg_sq_ch_mean"] < 1e-6).all() and plain["avg_ch_var"].between(0.99, 1.01).all()
    assert plain["avg_ch_var_residual"].isna().all()  # no branch declared
    resnet = frame[frame["model"] == "resnet20"]
    # the shortcut carries the previous blocks' positive (post-ReLU) means along: the stream's mean grows
    assert resnet["avg_sq_ch_mean"].iloc[-1] > 2 * resnet["avg_sq_ch_mean"].iloc[1] > 0
    assert resnet["avg_ch_var_residual"].iloc[1:].between(0.99, 1.01).all()  # its branch ends in a calibrated BN
    figure = analysis.draw(frame)
    assert {line.get_gid() for line in figure.axes[0].lines} == {v.family for v in analysis.PRESETS["smoke"].models}

"""Lesson 01's helpers: INT4 values, scaling, rounding statistics and figures (headless, fast)."""
import math

import pytest
import torch

from int4lab.course import l01_numbers as l01


def test_nibble_table_is_twos_complement():
    table = l01.nibble_table()
    assert len(table) == 16
    assert [v for _, _, v in table] == list(range(8)) + list(range(-8, 0))
    assert table[15] == ("1111", 15, -1) and table[8] == ("1000", 8, -8)
    with pytest.raises(ValueError):
        l01.nibble_value(16)


def test_twos_complement_figure_has_16_bars():
    ax = l01.twos_complement_figure().axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [float(v) for _, _, v in l01.nibble_table()]


def test_quantization_stats_scale_and_error_bound():
    x = l01.sample_tensor(512, outlier=0.0, seed=0)
    st = l01.quantization_stats(x, bits=4)
    assert st["scale"] == pytest.approx(float(x.abs().max()) / 7, rel=1e-6)
    assert st["max_error"] <= st["scale"] / 2 + 1e-6
    assert st["rms_error"] == pytest.approx(st["scale"] / math.sqrt(12), rel=0.15)
    assert st["codes"].abs().max() <= 7


def test_an_outlier_inflates_the_scale_and_the_error():
    clean = l01.quantization_stats(l01.sample_tensor(512, 0.0), bits=4)
    dirty = l01.quantization_stats(l01.sample_tensor(512, 20.0), bits=4, exclude=(0,))
    assert dirty["scale"] == pytest.approx(20 / 7, rel=1e-6)
    assert dirty["levels_used"] <= 3 < clean["levels_used"]
    assert dirty["rms_error"] > 3 * clean["rms_error"]
    int8 = l01.quantization_stats(l01.sample_tensor(512, 20.0), bits=8, exclude=(0,))
    assert int8["rms_error"] < dirty["rms_error"] / 10


def test_quantization_figure_draws_the_grid():
    fig = l01.quantization_figure(outlier=10.0, bits=4)
    ax, ax2 = fig.axes
    # 15 grid lines and the outlier marker on the histogram
    assert len(ax.get_lines()) == 15 + 1
    assert "s = max|x|/7" in ax.get_title()
    assert len(ax2.collections) == 1                       # the error scatter
    err = ax2.collections[0].get_offsets()[:, 1]
    assert abs(err).max() <= 10 / 7 / 2 + 1e-5
    assert len(l01.quantization_figure(bits=8).axes[0].get_lines()) == 255


def test_rounding_stats_sr_is_unbiased_rtn_is_not():
    values = torch.tensor([0.3, -1.7, 0.5, 1.0])
    st = l01.rounding_stats(values, samples=20000, seed=0)
    assert torch.allclose(st["nearest"]["bias"], torch.tensor([-0.3, -0.3, -0.5, 0.0]), atol=1e-6)
    assert torch.all(st["nearest"]["var"] == 0)
    assert st["stochastic"]["bias"].abs().max() < 0.02
    f = values - values.floor()
    assert torch.allclose(st["stochastic"]["var"], f * (1 - f), atol=0.01)


def test_rounding_samples_stay_on_the_grid():
    r = l01.rounding_samples([0.25, 2.75], samples=100, rounding="stochastic", seed=1)
    assert r.shape == (100, 2)
    assert set(r[:, 0].tolist()) <= {0.0, 1.0} and set(r[:, 1].tolist()) <= {2.0, 3.0}


def test_rounding_figure_running_mean_converges():
    fig = l01.rounding_figure(value=0.3, samples=2000, seed=0)
    ax, ax2 = fig.axes
    assert len(ax.get_lines()) >= 2
    running = ax2.get_lines()[0].get_ydata()
    assert len(running) == 2000 and abs(running[-1] - 0.3) < 0.05
    rtn = ax2.get_lines()[1].get_ydata()
    assert rtn[0] == 0.0                                   # round to nearest of 0.3 is 0


def test_packing_figure_shows_the_spec_bytes():
    fig = l01.packing_figure((3, -1, -8, 7))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "byte 0 = 243 (0xf3)" in texts and "byte 1 = 120 (0x78)" in texts
    assert "q[1] = -1" in texts
    bits = "".join(t for t in texts if t in ("0", "1"))
    assert bits == "11110011" + "01111000"
    assert len(fig.axes[0].patches) == 16

"""Lesson 02's helpers (int4lab/course/l02_quantizers.py): numbers and figures, headless."""
import math

import pytest
import torch
from matplotlib.figure import Figure

from int4lab.course import l02_quantizers as l02
from int4lab.spec.quantizers import QMAX, lsq_init_scale


def test_helpers_restore_the_thread_count():
    n = torch.get_num_threads()
    l02.small_values_sum(ratio=0.1, n=64, trials=2)
    assert torch.get_num_threads() == n


def test_outlier_activations_scale_only_the_outlier_channels():
    base = l02.outlier_activations(8, 64, outlier=1.0, channels=(3, 50))
    x = l02.outlier_activations(8, 64, outlier=20.0, channels=(3, 50))
    assert torch.allclose(x[:, [3, 50]], 20 * base[:, [3, 50]])
    keep = [c for c in range(64) if c not in (3, 50)]
    assert torch.equal(x[:, keep], base[:, keep])


def test_bits_per_value():
    assert l02.bits_per_value("tensor", 4096) == 4.0
    assert l02.bits_per_value("row", 4096) == pytest.approx(4 + 32 / 4096)
    assert l02.bits_per_value("block", 4096, block_size=32) == 5.0


def test_finer_groups_hurt_the_bulk_less_with_outliers():
    x = l02.outlier_activations(64, 256, outlier=20.0)
    e = l02.granularity_errors(x, block_size=32)
    assert e["block"]["rel_error"] < e["row"]["rel_error"] < e["tensor"]["rel_error"]
    assert e["tensor"]["levels_used"] < e["block"]["levels_used"] <= 2 * QMAX[4] + 1
    assert e["block"]["column_error"].shape == (256,)


def test_without_outliers_all_granularities_are_close():
    x = l02.outlier_activations(64, 256, outlier=1.0)
    e = l02.granularity_errors(x, block_size=32)
    assert max(v["rel_error"] for v in e.values()) < 0.25


def test_granularity_figure():
    fig = l02.granularity_figure(outlier=10.0, block_size=16, rows=16, cols=256)
    assert isinstance(fig, Figure)
    left, right = fig.axes
    assert len(left.lines) == 6                        # a curve and a star per granularity
    assert len(right.lines) == 3 + 2                   # a profile per granularity + 2 markers
    assert "16" in right.get_title()
    ys = left.lines[0].get_ydata()                     # per tensor grows with the outliers
    assert ys[-1] > ys[0]


def test_rounding_bias_and_variance():
    v = torch.tensor([0.1, 0.3, 0.5, 1.25, 2.7])
    st = l02.rounding_bias_variance(v, samples=20000)
    rtn, sr = st["nearest"], st["stochastic"]
    assert torch.allclose(rtn["bias"], torch.round(v) - v)          # deterministic
    assert torch.all(rtn["var"] == 0)
    assert sr["bias"].abs().max() < 0.02                              # unbiased
    f = v - v.floor()
    assert torch.allclose(sr["var"], f * (1 - f), atol=0.01)          # variance f(1 - f)
    assert rtn["bias"][0] == pytest.approx(-0.1)                      # small values vanish


def test_small_values_vanish_under_rtn_but_not_sr():
    r = l02.small_values_sum(ratio=0.1, n=2048, trials=5)
    assert r["nearest"]["mean"] == 0.0
    assert r["stochastic"]["mean"] == pytest.approx(r["true"], rel=0.15)


def test_rounding_figure():
    fig = l02.rounding_figure(samples=200)
    left, right = fig.axes
    rtn = left.lines[0].get_ydata()
    assert rtn[0] == pytest.approx(-1.0)                # v = 0.01 rounds to 0: bias -100 %
    assert len(right.lines) == 3
    assert right.get_xscale() == "log"


def test_lsq_fit_moves_from_absmax_towards_the_best_scale():
    x = l02.lsq_sample(n=2048, outlier=10.0)
    fit = l02.lsq_fit(x, steps=80, lr=30.0)
    s0, s1 = fit["scales"][0], fit["scales"][-1]
    assert s0 == pytest.approx(float(x.abs().max()) / 7)
    assert s1 < 0.5 * s0
    assert fit["losses"][-1] < fit["losses"][0]
    assert len(fit["scales"]) == 81 and len(fit["losses"]) == 80
    init = l02.lsq_fit(x, steps=0, init="lsq")["scales"][0]
    assert init == pytest.approx(float(lsq_init_scale(x)))


def test_lsq_mse():
    x = torch.tensor([0.0, 1.0, 2.0, -3.0])
    assert l02.lsq_mse(x, 1.0) == 0.0                    # on the grid
    assert l02.lsq_mse(x, 1.0, qmax=2) == pytest.approx(1.0 / 4)   # -3 clips to -2


def test_lsq_staircase_figure():
    fig = l02.lsq_staircase_figure()
    left, right = fig.axes
    y = left.lines[0].get_ydata()
    assert y.max() == pytest.approx(7.0) and y.min() == pytest.approx(-7.0)
    mask = left.lines[2].get_ydata() / 7
    assert set(mask.round(6).tolist()) <= {0.0, 1.0}
    term = right.lines[0].get_ydata()
    assert term.max() == pytest.approx(7.0) and term.min() == pytest.approx(-7.0)
    inside = abs(left.lines[0].get_xdata()) < 6.9
    assert abs(term[inside]).max() <= 0.5 + 1e-6


def test_lsq_figure():
    fig = l02.lsq_figure(outlier=10.0, lr=30.0, steps=20)
    left, right = fig.axes
    assert len(left.lines) == 5                          # the curve and 4 marked scales
    assert len(right.lines[0].get_ydata()) == 21
    assert "sqrt" in right.get_title() and math.isclose(
        float(right.get_title().split("= ")[-1]), 1 / math.sqrt(4096 * 7), rel_tol=1e-3)

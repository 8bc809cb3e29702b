"""Lesson 05's helpers (int4lab.course.l05_linear): the STE curves and the recipe comparison."""
import pytest
import torch

from int4lab.course import l05_linear as l05

SMALL = dict(n_tokens=8, d_in=64, d_out=16, n_outliers=2, magnitude=20.0, device="cpu")


def test_ste_curves_are_the_staircase_and_the_mask():
    c = l05.ste_curves(scale=0.5, lo=-5, hi=5, n=101)
    v = c["x"] / 0.5
    assert torch.allclose(c["x_hat"], torch.round(v.clamp(-7, 7)) * 0.5)
    assert torch.equal(c["ste_grad"], (v.abs() <= 7).float())


def test_ste_figure_has_two_panels():
    fig = l05.ste_figure(scale=0.5)
    assert len(fig.axes) == 2
    grad_line = fig.axes[1].lines[1]
    assert set(grad_line.get_ydata().tolist()) == {0.0, 1.0}


def test_make_problem_shapes_and_seed():
    x, out, lin, gy = l05.make_problem(**SMALL)
    assert x.shape == (8, 64) and gy.shape == (8, 16) and out.numel() == 2
    assert lin.in_features == 64 and lin.out_features == 16
    x2, _, lin2, _ = l05.make_problem(**SMALL)
    assert torch.equal(x, x2) and torch.equal(lin.weight, lin2.weight)


def test_compare_recipes_errors():
    r = l05.compare_recipes(**SMALL)
    assert r["recipes"] == list(l05.RECIPE_NAMES)
    i = {n: k for k, n in enumerate(r["recipes"])}
    for key in l05.ERROR_LABELS:
        assert len(r[key]) == len(r["recipes"])
        assert r[key][i["fp32"]] == pytest.approx(0.0, abs=1e-6)
    assert r["forward"][i["int8"]] < r["forward"][i["int4_rtn"]]
    assert r["forward"][i["int4_hq"]] == pytest.approx(r["forward"][i["int4_hq_lss"]])
    r["forward"][0] = 123.0                       # a copy: the cache stays intact
    assert l05.compare_recipes(**SMALL)["forward"][0] != 123.0


def test_recipe_error_figure_bars():
    r = l05.compare_recipes(recipes=("fp32", "int4_rtn"), **SMALL)
    fig = l05.recipe_error_figure(r, magnitude=SMALL["magnitude"])
    bars = fig.axes[0].patches
    assert len(bars) == 2 * len(l05.ERROR_LABELS)
    assert bars[1].get_height() == pytest.approx(100 * r["forward"][1])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["fp32", "int4_rtn"]

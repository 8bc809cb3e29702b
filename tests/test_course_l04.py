"""Lesson 04's helpers (int4lab.course.l04_hadamard): data, reports and figures, headless and fast."""
import math

import pytest
import torch

from int4lab.course import l04_hadamard as l04
from int4lab.spec.hadamard import hadamard_matrix, quantization_error


def test_make_activations_has_the_outliers_it_says():
    x, out = l04.make_activations(16, 64, n_outliers=3, magnitude=40.0, seed=2)
    assert x.shape == (16, 64) and out.numel() == 3
    assert torch.equal(out, out.sort().values)
    col = x.abs().mean(0)
    assert torch.all(col[out] > 30) and torch.all(col[l04.bulk_columns(64, out)] < 3)
    x2, out2 = l04.make_activations(16, 64, n_outliers=3, magnitude=40.0, seed=2)
    assert torch.equal(x, x2) and torch.equal(out, out2)
    with pytest.raises(ValueError):
        l04.make_activations(4, 8, n_outliers=9)


def test_quantization_report_shows_the_damage_and_the_fix():
    x, out = l04.make_activations(32, 256, n_outliers=2, magnitude=50.0)
    plain = l04.quantization_report(x, out, 1)
    hq = l04.quantization_report(x, out, 32)
    assert plain["bulk_rel_error"] > 0.95 and plain["zero_fraction"] > 0.95
    assert math.isclose(plain["scale"], float(x.abs().max()) / 7, rel_tol=1e-6)
    assert hq["bulk_rel_error"] < 0.8 * plain["bulk_rel_error"]
    assert hq["scale"] < plain["scale"] / 3


def test_channel_figure_panels_and_step_line():
    x, out = l04.make_activations(8, 64, n_outliers=2)
    fig = l04.channel_figure(x, out)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.lines[0].get_xdata()) == 64
    step = float(x.abs().max()) / 7
    assert any(math.isclose(float(line.get_ydata()[0]), step, rel_tol=1e-5) for line in ax.lines[1:])
    assert len(l04.channel_figure(x, out, block_size=32).axes) == 2


def test_hadamard_figure_shows_h_and_the_identity():
    fig = l04.hadamard_figure(8)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2
    assert torch.allclose(torch.as_tensor(images[0].get_array()).float(), hadamard_matrix(8))
    assert torch.allclose(torch.as_tensor(images[1].get_array()).float(), torch.eye(8), atol=1e-6)


def test_block_size_sweep_matches_the_library():
    x, out = l04.make_activations(8, 64, n_outliers=1)
    w = l04.make_weight(8, 64)
    sw = l04.block_size_sweep(x, w, out, sizes=[1, 4, 64])
    assert sw["sizes"] == [1, 4, 64]
    for i, b in enumerate(sw["sizes"]):
        assert math.isclose(sw["err_x"][i], quantization_error(x, b), rel_tol=1e-5)
        assert math.isclose(sw["err_w"][i], quantization_error(w, b), rel_tol=1e-5)
        assert math.isclose(sw["product"][i], sw["err_x"][i] * sw["err_w"][i], rel_tol=1e-9)


def test_block_size_figure_marks_the_search_minimum():
    kw = dict(n_tokens=8, d=64, c=8, n_outliers=1, magnitude=50.0)
    fig = l04.block_size_figure(k=3, **kw)
    ax, ax2 = fig.axes[:2]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 4, 8, 16, 32, 64]
    product = list(ax2.lines[0].get_ydata())
    star = ax2.collections[0].get_offsets()[0]
    assert star[1] == pytest.approx(min(product))
    assert star[0] == [1, 2, 4, 8, 16, 32, 64][product.index(min(product))]
    with pytest.raises(ValueError):
        l04.block_size_figure(k=7, **kw)          # 128 does not divide d = 64


def test_ablation_figure_has_table4():
    fig = l04.ablation_figure()
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [s for _, s in l04.ABLATION_TABLE4]
    assert dict(l04.ABLATION_TABLE4)["HQ"] == 54.2 and dict(l04.ABLATION_TABLE4)["LSQ"] == 37.3


# ---- lesson 04's prose against its own outputs (both lesson sizes: INT4LAB_FAST and full) ------

LESSON_SIZES = [(64, 1024, 64), (256, 1024, 256)]       # lessons/src/04_hadamard.py: N_TOK, D, C


@pytest.mark.parametrize("n_tok, d, c", LESSON_SIZES)
def test_lesson_prose_section1_and_3(n_tok, d, c):
    """Section 1: "max|x| above 60 ... s/2, more than 4"; section 3: channel maxima of XH in the
    outliers' blocks "at about 12", "the per-tensor step falls more than fourfold", and section 5:
    "block 32 cuts the error of the non-outlier channels from 100% to under 60%"."""
    from int4lab.spec.hadamard import block_hadamard
    x, out = l04.make_activations(n_tok, d, n_outliers=4, magnitude=50.0)
    plain = l04.quantization_report(x, out, 1)
    hq = l04.quantization_report(x, out, 32)
    assert float(x.abs().max()) > 60 and plain["scale"] / 2 > 4
    xh = block_hadamard(x, 32)
    in_blocks = torch.isin(torch.arange(d) // 32, out // 32)
    assert 11 <= float(xh.abs().amax(dim=0)[in_blocks].mean()) <= 13          # "about 12"
    assert plain["scale"] / hq["scale"] > 4
    assert plain["bulk_rel_error"] > 0.995 and hq["bulk_rel_error"] < 0.6


@pytest.mark.parametrize("n_tok, d, c", LESSON_SIZES)
def test_lesson_prose_search_picks_a_large_block(n_tok, d, c):
    """Section 5: "the product is smallest at a large block ... in the hundreds of channels or at 1024"."""
    from int4lab.spec.hadamard import search_block_size
    x, out = l04.make_activations(n_tok, d, n_outliers=4, magnitude=50.0)
    best, _ = search_block_size(x, l04.make_weight(c, d))
    assert best >= 256

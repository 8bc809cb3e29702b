"""Lesson 09's helpers (int4lab.course.l09_beyond): FP8/FP4 fake quantizers and the figures."""
import pytest
import torch

from int4lab.course import l09_beyond as l09


def test_grids():
    assert l09.fp_grid("e2m1").tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert float(l09.fp_grid("e4m3")[-1]) == 448 and float(l09.fp_grid("e5m2")[-1]) == 57344
    assert len(l09.fp_grid("e4m3")) == 127                  # 128 codes minus NaN


@pytest.mark.parametrize("fmt,dtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_round_to_grid_matches_torch_fp8(fmt, dtype):
    g = torch.Generator().manual_seed(0)
    v = (torch.randn(4096, generator=g) * 30).clamp(-440, 440)
    v = torch.cat([v, l09.fp_grid(fmt)[:40], -l09.fp_grid(fmt)[1:40]])
    mid = (l09.fp_grid(fmt)[1:30] + l09.fp_grid(fmt)[:29]) / 2           # exact ties
    v = torch.cat([v, mid])
    assert torch.equal(l09.round_to_grid(v, fmt), v.to(dtype).float())


def test_e2m1_rounding_and_saturation():
    v = torch.tensor([0.24, 0.26, 0.75, 1.25, 2.5, 3.5, 5.0, 7.0, -100.0])
    assert l09.round_to_grid(v, "e2m1").tolist() == [0, 0.5, 1, 1, 2, 4, 4, 6, -6]


def test_block_formats():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, generator=g)
    mx = l09.mxfp4_fake(x)
    for blk, xb in zip(mx.reshape(-1, 32), x.reshape(-1, 32)):
        s = 2.0 ** (torch.floor(torch.log2(xb.abs().max())) - 2)
        assert set((blk.abs() / s).tolist()) <= set(l09.fp_grid("e2m1").tolist())
    nv = l09.nvfp4_fake(x)
    assert l09._rel(nv, x) < 0.15 and l09._rel(mx, x) < 0.2
    assert torch.equal(l09.nvfp4_fake(torch.zeros(2, 16)), torch.zeros(2, 16))
    with pytest.raises(ValueError):
        l09.mxfp4_fake(torch.randn(3, 40))


def test_format_errors_outliers_hurt_per_tensor_int4_most():
    x, out = l09.make_activations(16, 256, n_outliers=2, magnitude=50.0)
    e = l09.format_errors(x, out)
    assert set(e) == set(l09.FORMATS)
    assert e["INT4 per-tensor"][1] > 0.95                         # the bulk is wiped out
    assert e["INT4 + Hadamard (HQ)"][1] < 0.8 * e["INT4 per-tensor"][1]
    assert e["FP8 E4M3"][1] < e["NVFP4"][1] < e["INT4 per-tensor"][1]


def test_error_figure_bars_match_format_errors():
    fig = l09.error_figure(magnitude=20.0, n_tokens=8, d=128, n_outliers=2)
    ax = fig.axes[0]
    x, out = l09.make_activations(8, 128, 2, 20.0, 0)
    e = l09.format_errors(x, out)
    heights = [p.get_height() for p in ax.patches]
    n = len(l09.FORMATS)
    assert heights[:n] == pytest.approx([100 * v[0] for v in e.values()])
    assert heights[n:] == pytest.approx([100 * v[1] for v in e.values()])
    assert len(l09.grid_figure().axes[0].lines) == 3


# ---- lesson 09's prose against its own outputs (both lesson sizes: INT4LAB_FAST and full) ------

def test_lesson_prose_mxfp4_scale_within_075_and_15_of_ideal():
    """Section 2: the power-of-two scale is between 0.75x and 1.5x the ideal max/6."""
    lo, hi = l09.mxfp4_scale_vs_ideal()
    assert f"{lo:.2f}" == "0.75" and lo >= 0.75 and hi == 1.5
    amax = torch.tensor([4.0, 5.0, 7.9])          # the answers' examples: scale 1 for all three
    assert l09.mxfp4_scale(amax).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("n_tok, d", [(32, 512), (128, 1024)])     # lessons/src/09: N_TOK, D
def test_lesson_prose_hq_against_block_scales(n_tok, d):
    """Section 3: HQ brings the non-outlier error from 100% to "a little over half", behind every
    block-scaled format; its step is several times a typical block's. Summary: FP8 << NVFP4 <
    MXFP4 ~ INT4 per block < HQ < per-tensor INT4."""
    x, out = l09.make_activations(n_tok, d, n_outliers=4, magnitude=50.0)
    bulk = {k: v[1] for k, v in l09.format_errors(x, out).items()}
    assert bulk["INT4 per-tensor"] > 0.995
    assert 0.5 < bulk["INT4 + Hadamard (HQ)"] < 0.6
    for blocked in ("INT4 per-32 block", "MXFP4", "NVFP4"):
        assert bulk[blocked] < bulk["INT4 + Hadamard (HQ)"]
    assert bulk["FP8 E4M3"] * 5 < bulk["NVFP4"] < bulk["MXFP4"]
    assert abs(bulk["MXFP4"] - bulk["INT4 per-32 block"]) < 0.05
    hq_step, block_step = l09.int4_steps(x)
    assert hq_step > 4 * block_step

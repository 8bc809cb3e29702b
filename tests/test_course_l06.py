"""Lesson 06's helpers (int4lab.course.l06_gradients): gradient capture, per-tensor INT4 against
bit splitting, LSS probabilities and variance, unbiasedness curves, and their figures."""
import pytest
import torch

import int4lab
from int4lab.course import l06_gradients as l06
from int4lab.spec import gradients as gq
from int4lab.training.models import GPT, GPTConfig


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sparse_grad(n=64, c=16, seed=0):
    """A few large rows, most small: the structure of a real dY."""
    g = torch.randn(n, c, generator=gen(seed)) * 1e-3
    g[:3] *= 1000
    return g


def tiny_gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=32))
    x = torch.randint(0, 16, (3, 8), generator=gen(1))
    y = torch.randint(0, 16, (3, 8), generator=gen(2))
    return model, x, y


def test_capture_linear_io_gives_x_and_dy_of_every_linear():
    model, x, y = tiny_gpt()
    io = l06.capture_linear_io(model, x, y)
    assert {"lm_head", "blocks.0.attn.c_attn", "blocks.0.mlp.c_fc", "blocks.0.mlp.c_proj"} <= set(io)
    for name, rec in io.items():
        m = rec["module"]
        assert rec["x"].shape == (24, m.in_features) and rec["g"].shape == (24, m.out_features)
        # the weight gradient of a linear layer is dY^T X: the capture is the real backward pass
        assert torch.allclose(rec["g"].T @ rec["x"], m.weight.grad, atol=1e-6), name


def test_trained_gradients_runs_a_short_training():
    io, result = l06.trained_gradients("text", steps=2)
    assert result.steps[-1] == 2 and "blocks.0.attn.c_attn" in io
    assert io["blocks.0.attn.c_attn"]["g"].shape == (32 * 32, 96)


def test_row_stats_and_zero_rows():
    g = torch.zeros(10, 4)
    g[0] = 10.0
    g[1:5] = 1.0
    st = l06.row_stats(g, top=0.1)
    assert st["rows"] == 10 and st["zero_rows"] == pytest.approx(0.5)
    assert st["top_share"] == pytest.approx(400 / 416)
    assert st["max_over_median"] == float("inf")           # the median row is zero


def test_row_norm_figure_draws_each_layer():
    model, x, y = tiny_gpt()
    io = l06.capture_linear_io(model, x, y)
    fig = l06.row_norm_figure(io)
    ax, ax2 = fig.axes
    assert len(ax.lines) == len(io)
    assert len(ax2.lines) == len(io) + 1                     # + the "all rows equal" diagonal
    energy = ax2.lines[0].get_ydata()
    assert energy[-1] == pytest.approx(1.0) and all(a <= b + 1e-6 for a, b in zip(energy, energy[1:]))


def test_per_tensor_int4_loses_the_small_rows_bit_splitting_keeps_them():
    g = sparse_grad()
    assert l06.zeroed_rows(g) == pytest.approx(61 / 64)
    rel, errs = l06.row_errors(g)
    small = rel < 0.01
    assert torch.all(errs["INT4 round-to-nearest"][small] == 1.0)
    assert errs["bit splitting"][~small].max() < 0.2
    fig = l06.row_error_figure(g)
    assert len(fig.axes[0].collections) == 3


def test_bit_split_bias_is_at_the_top_and_gone_with_clamp_7():
    v, bias6 = l06.bit_split_bias(n=197, clamp=6)           # v = -98, -97, ..., 98
    _, bias7 = l06.bit_split_bias(n=197, clamp=7)
    assert bias7.abs().max() < 1e-3
    assert bias6[-1] == pytest.approx(-8.0, abs=1e-3)       # v = 98 is represented as 90
    assert bias6[98 + 3].abs() < 1e-4                       # v = 3: no bias
    fig = l06.bit_split_bias_figure(n=197)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_lss_example_is_clip_and_rescale():
    ex = l06.lss_example()
    assert ex["p"].tolist() == pytest.approx([1, 1, 0.25, 0.25, 0.25, 0.25, 0])
    assert float(ex["p"].sum()) == pytest.approx(ex["budget"])
    assert float(ex["proportional"].max()) > 1


def test_uniform_probs_spread_the_budget_over_non_zero_rows():
    rows = torch.ones(6, 3)
    rows[4:] = 0
    p = l06.uniform_probs(rows, 2)
    assert p.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0, 0])


def test_empirical_variance_matches_the_formula():
    g = sparse_grad(24, 6, seed=3)
    x = torch.randn(24, 5, generator=gen(4))
    probs = gq.weight_grad_probs(g, x, budget=8)
    formula = gq.lss_variance(g, x, probs)
    measured = l06.empirical_variance(g, x, probs, draws=300, seed=0)
    assert measured == pytest.approx(formula, rel=0.1)


def test_variance_curves_lss_beats_uniform_and_vanishes_with_every_row():
    # row sizes spread smoothly, so that every row of [hi; lo] has something to sample
    g = torch.randn(64, 16, generator=gen(5)) * (0.2 + torch.rand(64, 1, generator=gen(6)))
    x = torch.randn(64, 8, generator=gen(5))
    c = l06.variance_curves(g, x, [0.25, 0.5, 1.0, 2.0])
    for lss, uni in zip(c["LSS"], c["uniform"]):
        assert lss <= uni * (1 + 1e-9)
    assert c["LSS"][-1] == 0 and c["uniform"][-1] == 0       # budget 2N keeps every row
    assert c["LSS"][0] > c["LSS"][1] > c["LSS"][2]
    fig = l06.variance_figure(g, x, budget=0.5, n_points=5)
    ax, ax2 = fig.axes
    assert ax.lines[0].get_ydata().sum() == pytest.approx(0.5 * 64, rel=1e-4)   # sum p = budget N


def test_unbiasedness_curves_rtn_stays_stochastic_converges():
    g, x = sparse_grad(), torch.randn(64, 8, generator=gen(6))
    c = l06.unbiasedness_curves(g, x, draws=16)
    curves = c["curves"]
    assert set(curves) == set(l06.ESTIMATORS) and c["draws"] == list(range(1, 17))
    rtn = curves["INT4 round-to-nearest"]
    assert max(rtn) - min(rtn) < 1e-6 and rtn[0] > 0.05    # biased: averaging never helps
    sr = curves["INT4 stochastic"]
    assert sr[-1] < sr[0] / 2
    assert curves["bit splitting (clamp 6, released code)"][0] < sr[0]
    assert c["bs_bias"] >= 0
    fig = l06.unbiasedness_figure(c, layer_errors=[0.3, 0.2])
    # 5 estimators + the layer + the 1/sqrt(k) guide + the bias line
    assert len(fig.axes[0].lines) == len(l06.ESTIMATORS) + 3


def test_layer_unbiasedness_runs_the_library_layer():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(64, 32, generator=gen(7))
    g = sparse_grad(64, 16)
    with int4lab.use("spec"):
        errs = l06.layer_unbiasedness(lin, x, g, draws=4, device="cpu")
        assert int4lab.last_ran("bit_split") == "spec" and int4lab.last_ran("lss_gather") == "spec"
    assert len(errs) == 4 and all(0 < e < 10 for e in errs)

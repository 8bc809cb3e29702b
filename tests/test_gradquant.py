"""Gradient quantization: bit splitting and leverage score sampling, checked statistically."""
import pytest
import torch

from int4lab.spec.gradients import (
    bit_split,
    bit_split_dequantize,
    bit_split_mean,
    bit_split_spec,
    input_grad_probs,
    lss_gather_spec,
    lss_input_grad,
    lss_probabilities,
    lss_variance,
    lss_weight_grad,
    stack_bit_split,
    weight_grad_probs,
)
from int4lab.spec.packing import pack_int4, unpack_int4


def gen(seed):
    return torch.Generator().manual_seed(seed)


def sparse_grad(n=32, c=16, seed=0):
    """A gradient like the paper's: a few token rows large, most near zero."""
    g = gen(seed)
    return torch.randn(n, c, generator=g) * torch.rand(n, 1, generator=g) ** 4


# ---- bit splitting ------------------------------------------------------------------------------

def test_bit_split_codes_scales_and_error_bound():
    g = sparse_grad(64, 32)
    bs = bit_split(g, gen(0))
    s = 98 / g.abs().max()
    assert bs.hi.dtype == torch.int8 and bs.lo.dtype == torch.int8
    assert bs.hi.abs().max() <= 6 and bs.lo.abs().max() <= 6
    torch.testing.assert_close(bs.scale_hi, 14 / s)
    torch.testing.assert_close(bs.scale_lo, 1 / s)
    err = (bit_split_dequantize(bs) - g).abs()
    # one lo step (1/s) wherever hi does not saturate; hi saturates above 91/98 of max|g|
    small = (g * s).abs() < 91
    assert (err[small] <= 1 / s + 1e-6).all()
    assert (err <= 8 / s + 1e-6).all()
    # an INT8-like resolution: the rms error is far below one INT4 matrix's (step max|g| / 7)
    rtn_step = g.abs().max() / 7
    assert err.pow(2).mean().sqrt() < 0.1 * rtn_step


def test_bit_split_clamp7_has_one_step_error_everywhere():
    g = sparse_grad(64, 32)
    bs = bit_split(g, gen(0), clamp=7)
    assert ((bit_split_dequantize(bs) - g).abs() <= bs.scale_lo + 1e-6).all()


@pytest.mark.parametrize("clamp", [6, 7])
def test_bit_split_expectation(clamp):
    """Mean over draws -> bit_split_mean (exact expectation); with clamp 7 that is g itself."""
    g = sparse_grad(16, 8, seed=1)
    n = 3000
    draws = torch.stack([bit_split_dequantize(bit_split(g, gen(i), clamp=clamp)) for i in range(n)])
    s = 98 / g.abs().max()
    r = g * s - 14 * torch.round(g * s / 14).clamp(-clamp, clamp)
    # lo rounds up with probability frac(r): variance frac(1-frac)/s^2, exactly (a rare rounding
    # direction may never show in n draws, so the measured variance could be 0 where this is not)
    f = r - torch.floor(r)
    tol = 5 * torch.sqrt(f * (1 - f) / s ** 2 / n) + 1e-6 * g.abs().max()   # + fp32 averaging
    expected = bit_split_mean(g, clamp=clamp)
    assert ((draws.mean(0) - expected).abs() <= tol).all()
    unbiased_here = r.abs() <= 6                       # the released [-6, 6] clamp is exact here
    torch.testing.assert_close(expected[unbiased_here], g[unbiased_here], rtol=1e-5, atol=1e-6)
    if clamp == 7:
        torch.testing.assert_close(expected, g, rtol=1e-5, atol=1e-6)
    else:                                              # the released code's bias: small
        assert torch.linalg.vector_norm(expected - g) < 0.05 * torch.linalg.vector_norm(g)


def test_bit_split_zero_and_bad_input():
    bs = bit_split(torch.zeros(4, 6))
    assert (bs.hi == 0).all() and (bs.lo == 0).all()
    assert torch.isfinite(bs.scale_hi) and torch.isfinite(bs.scale_lo)
    g = torch.ones(4, 6)
    g[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bit_split(g)
    with pytest.raises(TypeError):
        bit_split(torch.ones(4, 6, dtype=torch.int64))


def test_bit_split_spec_packs_both_halves():
    g = sparse_grad(8, 16)
    hi, lo, s_hi, s_lo = bit_split_spec(g, seed=5)
    ref = bit_split(g, gen(5))
    assert hi.dtype == torch.uint8 and hi.shape == (8, 8) and lo.shape == (8, 8)
    assert torch.equal(unpack_int4(hi), ref.hi) and torch.equal(unpack_int4(lo), ref.lo)
    assert s_hi == ref.scale_hi and s_lo == ref.scale_lo
    with pytest.raises(ValueError, match="odd"):
        bit_split_spec(torch.ones(4, 5))
    with pytest.raises(ValueError, match="2-D"):
        bit_split_spec(torch.ones(8))


# ---- leverage score probabilities -------------------------------------------------------------

def test_lss_probabilities_valid():
    norms = torch.tensor([100.0, 50.0, 1.0, 2.0, 0.0, 3.0, 1.0, 0.5])
    p = lss_probabilities(norms, budget=4)
    assert p.sum().item() == pytest.approx(4.0, rel=1e-5)
    assert (p <= 1).all() and (p >= 0).all()
    assert p[4] == 0                                   # a zero row is never kept
    assert p[0] == 1 and p[1] == 1                      # the big rows clip at 1 ...
    free = p < 1                                       # ... and the rest stay proportional to norms
    ratio = p[free & (norms > 0)] / norms[free & (norms > 0)]
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()))


def test_lss_probabilities_on_a_cpu_are_the_torch_loops_bits():
    """The CPU path (numpy for the elementwise steps) returns exactly what the torch loop (the
    GPU path, and the spec before it) returns, on norms with clipping cascades, zeros and ties."""
    from int4lab.spec.gradients import _lss_probabilities_cpu, _lss_probabilities_loop
    gen = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(60):
        n = int(torch.randint(1, 5000, (1,), generator=gen))
        norms = torch.randn(n, generator=gen, dtype=torch.float64).abs() ** (1 + trial % 5)
        norms[torch.rand(n, generator=gen) < 0.1] = 0
        if trial % 7 == 0:
            norms[: n // 3] = norms[0]                      # ties
        for budget in (n / 2, max(1, n // 10), n // 2 + 0.5, 3):
            a = _lss_probabilities_cpu(norms.clone(), budget, 100)
            b = _lss_probabilities_loop(norms.clone(), budget, 100)
            assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b), (trial, budget)
            cases += (b == 1).any().item() and (b < 1).any().item()
    assert cases > 50            # most cases clipped some values and not others


def test_lss_probabilities_cascading_clip_and_full_budget():
    norms = torch.tensor([10.0, 6.0, 1.0, 1.0, 1.0, 1.0])
    p = lss_probabilities(norms, budget=3)            # 10 clips first, then 6 must clip too
    assert p[:2].tolist() == [1.0, 1.0]
    assert p.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert lss_probabilities(torch.tensor([1.0, 0.0, 3.0]), budget=2).tolist() == [1.0, 0.0, 1.0]
    for bad in (torch.tensor([1.0, -1.0]), torch.tensor([1.0, float("nan")]), torch.ones(2, 2)):
        with pytest.raises(ValueError):
            lss_probabilities(bad, 1)
    with pytest.raises(ValueError, match="budget"):
        lss_probabilities(torch.ones(3), 0)


def stacked_example(n=24, c=8, d=12, seed=0):
    g = sparse_grad(n, c, seed)
    x = torch.randn(n, d, generator=gen(seed + 100))
    rows = stack_bit_split(bit_split(g, gen(seed)))
    return rows, torch.cat([x, x]), x


def test_lss_weight_grad_unbiased_and_variance_formula():
    rows, xs, _ = stacked_example()
    probs = weight_grad_probs(rows, xs)                # budget N over the 2N stacked rows
    assert probs.sum().item() == pytest.approx(rows.shape[0] / 2, rel=1e-5)
    exact = rows.T @ xs
    n = 2000
    est = torch.stack([lss_weight_grad(rows, xs, probs, gen(i)) for i in range(n)])
    # per-entry variance, exactly: sum_k (1-p_k)/p_k (g_kc x_kd)^2 (a rarely kept row would make
    # the measured variance miss its share)
    keep = probs > 0
    odds = (1 - probs[keep]) / probs[keep]
    var = torch.einsum("k,kc,kd->cd", odds, rows[keep] ** 2, xs[keep] ** 2)
    assert ((est.mean(0) - exact).abs() <= 5 * torch.sqrt(var / n) + 1e-5).all()
    empirical = ((est - exact) ** 2).sum(dim=(1, 2)).mean().item()
    formula = lss_variance(rows, xs, probs)
    assert formula > 0
    assert empirical == pytest.approx(formula, rel=0.15)
    # the optimal probabilities beat uniform ones with the same budget
    uniform = torch.full_like(probs, 0.5)
    assert formula < lss_variance(rows, xs, uniform)


def test_lss_input_grad_unbiased_with_token_folding():
    rows, _, _ = stacked_example(n=16, c=8)
    w = torch.randn(8, 10, generator=gen(9))
    probs = input_grad_probs(rows)
    n_tok = rows.shape[0] // 2
    exact = (rows[:n_tok] + rows[n_tok:]) @ w
    n = 2000
    est = torch.stack([lss_input_grad(rows, w, probs, gen(i), n_tokens=n_tok) for i in range(n)])
    assert est.shape[1:] == exact.shape
    # exact per-entry variance: sum over the token's two stacked rows of (1-p)/p (g_k w)^2
    terms = (rows @ w) ** 2 * torch.where(probs > 0, (1 - probs) / probs, torch.zeros_like(probs))[:, None]
    var = terms[:n_tok] + terms[n_tok:]
    assert ((est.mean(0) - exact).abs() <= 5 * torch.sqrt(var / n) + 1e-5).all()


# ---- the gather slot ---------------------------------------------------------------------------

def test_lss_gather_spec_sampling():
    g = torch.Generator().manual_seed(0)
    codes = pack_int4(torch.randint(-7, 8, (40, 8), generator=g, dtype=torch.int8))
    other = pack_int4(torch.randint(-7, 8, (40, 6), generator=g, dtype=torch.int8))
    probs = torch.rand(40, generator=g)
    probs[0], probs[1] = 0.0, 1.0
    kept, kept_other, index, weight = lss_gather_spec(codes, probs, seed=3, other=other)
    assert index.dtype == torch.int64 and (index[1:] > index[:-1]).all()
    assert torch.equal(kept, codes[index]) and torch.equal(kept_other, other[index])
    torch.testing.assert_close(weight, 1 / probs[index])
    assert 0 not in index.tolist() and 1 in index.tolist()
    again = lss_gather_spec(codes, probs, seed=3)
    assert torch.equal(again[2], index) and again[1] is None
    # keep frequencies match p
    counts = torch.zeros(40)
    for s in range(2000):
        counts[lss_gather_spec(codes, probs, seed=s)[2]] += 1
    assert ((counts / 2000 - probs).abs() < 5 * torch.sqrt(probs * (1 - probs) / 2000) + 1e-3).all()


def test_lss_gather_spec_nonzero_mode_and_errors():
    q = torch.zeros(6, 4, dtype=torch.int8)
    q[1, 2], q[4, 0] = 3, -1
    codes = pack_int4(q)
    kept, _, index, weight = lss_gather_spec(codes)
    assert index.tolist() == [1, 4] and (weight == 1).all() and torch.equal(kept, codes[[1, 4]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lss_gather_spec(codes, torch.full((6,), 1.5))
    with pytest.raises(ValueError, match="one entry per row"):
        lss_gather_spec(codes, torch.full((5,), 0.5))
    with pytest.raises(ValueError, match="same 6 rows"):
        lss_gather_spec(codes, other=codes[:3])
    with pytest.raises(TypeError, match="uint8"):
        lss_gather_spec(q)

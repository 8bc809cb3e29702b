"""kernels/fused_linear.py, kernel by kernel, against the spec's layer (int4lab.layers and
int4lab.spec), in Triton's interpreter on a CPU: exact where the arithmetic is the same, in
distribution where the draws differ (Philox here, torch's generator there)."""
import pytest
import torch

from int4lab import runtime
from int4lab.layers import _lsq_scale_grad_2bit, lsq_unrecord
from int4lab.spec.gradients import bit_split, lss_probabilities
from int4lab.spec.hadamard import block_hadamard
from int4lab.spec.packing import pack_int4 as pack_int4_spec
from int4lab.spec.packing import unpack_int4 as unpack_int4_spec
from int4lab.spec.quantizers import QMAX

pytestmark = pytest.mark.skipif(not runtime.HAS_TRITON, reason="needs triton")

fl = pytest.importorskip("int4lab.kernels.fused_linear") if runtime.HAS_TRITON else None


def codes_of(packed):
    return unpack_int4_spec(packed).int()


def test_quantize_rows_codes_record_scales_and_norms():
    torch.manual_seed(0)
    R, K, bs = 6, 64, 32
    x = torch.randn(R, K)
    x[:, 5] *= 8                                     # an outlier channel: some values clip
    s = torch.tensor(0.15)
    codes, codes_t, rec, rs, sq = fl.quantize_rows(x, s, bs, seed=3, transposed=True)
    v = block_hadamard(x, bs) / s
    want = v.clamp(-QMAX[4], QMAX[4]).round().int()
    got = codes_of(codes)
    near_half = ((v.abs() - v.abs().floor()) - 0.5).abs() < 1e-4
    assert (got == want)[~near_half].all()
    assert ((got - want).abs() <= 1).all()
    assert torch.equal(codes_t, pack_int4_spec(got.T.contiguous().to(torch.int8)))
    assert torch.equal(rs, torch.full((R,), 0.15))
    assert torch.equal(sq, (got.float() ** 2).sum(1))
    # the record gives the STE's clip mask exactly (away from the clip boundary)
    inside, p, q = lsq_unrecord(rec.flatten(), got.to(torch.int8))
    mask = (v.abs() <= QMAX[4]).float()
    sure = (v.abs() - QMAX[4]).abs() > 1e-4
    assert torch.equal(inside[sure], mask[sure]) and torch.equal(q, got.float())
    assert (mask == 0).any() and (mask == 1).any()


def test_quantize_rows_record_is_unbiased():
    torch.manual_seed(1)
    x = torch.randn(8, 32)
    s = torch.tensor(0.3)
    v = block_hadamard(x, 32) / s
    r = v - v.round()
    draws = []
    for seed in range(48):
        codes, _, rec, _, _ = fl.quantize_rows(x, s, 32, seed=seed)
        inside, p, _ = lsq_unrecord(rec.flatten(), codes_of(codes).to(torch.int8))
        draws.append(p / 6.0)                       # the record's remainder where not clipped
    d = torch.stack(draws)
    inside_v = v.abs() <= QMAX[4]
    gap = (d.mean(0) - r)[inside_v]
    se = (d.var(0)[inside_v] / len(draws)).sum().sqrt()
    assert gap.norm() < 3 * se + 1e-6, (gap.norm(), se)
    # LSQ's step-size gradient sums the remainders: their total must be unbiased too (a dither
    # off by 10% moves it ~9 standard errors)
    assert gap.sum().abs() < 4 * se, (gap.sum(), se)


def test_quantize_rows_clamps_the_scale_in_place_and_a_nan_row_shows_in_its_scale():
    x = torch.randn(4, 32)
    x[2, 7] = float("nan")
    s = torch.tensor(-0.5)                           # an optimizer pushed LSQ's step below zero
    _, _, _, rs, _ = fl.quantize_rows(x, s, 32, seed=0)
    assert s.item() == pytest.approx(1e-8)
    assert torch.isnan(rs[2]) and torch.isfinite(rs[[0, 1, 3]]).all()


def test_grad_columns_and_split_rows_are_bit_splitting():
    torch.manual_seed(2)
    N, C = 10, 96
    g = torch.randn(N, C) * torch.logspace(-2, 0, N)[:, None]
    db, amax = fl.grad_columns(g, torch.float32)
    assert torch.allclose(db, g.sum(0), rtol=1e-5, atol=1e-6)
    assert amax.max() == g.abs().max()
    stacked, sc, sq = fl.split_rows(g, amax, seed=5)
    spec = bit_split(g)
    assert torch.equal(sc, torch.stack([spec.scale_hi, spec.scale_lo]))
    hi, lo = codes_of(stacked[:N]), codes_of(stacked[N:])
    assert torch.equal(hi, spec.hi.int())             # round to nearest: the same bits
    resid = g * (14.0 / spec.scale_hi) - 14.0 * hi    # lo is this, stochastically rounded
    assert ((lo - resid.clamp(-6, 6)).abs() < 1 + 1e-4).all()
    assert torch.equal(sq, torch.cat([(hi.float() ** 2).sum(1), (lo.float() ** 2).sum(1)]))
    # lo is unbiased: its mean over seeds approaches the residual (inside the clamp)
    draws = torch.stack([codes_of(fl.split_rows(g, amax, seed=k)[0][N:]).float() for k in range(32)])
    inside = resid.abs() < 6
    gap, se = (draws.mean(0) - resid)[inside], (draws.var(0)[inside] / 32).sum().sqrt()
    assert gap.norm() < 3 * se and gap.sum().abs() < 4 * se, (gap.norm(), gap.sum(), se)


def plan(norms_hi, norms_lo, budget, seed, xsq=None, sx=1.0):
    """lss_plan on stacked rows whose norms are given (scales 1, codes' sums of squares = n^2)."""
    sq = torch.cat([norms_hi, norms_lo]) ** 2
    n = norms_hi.numel()
    xsq = torch.ones(n) if xsq is None else xsq
    return fl.lss_plan(sq, torch.tensor([1.0, 1.0]), xsq, torch.tensor(sx), budget, seed)


def test_lss_plan_keeps_each_row_with_its_probability():
    torch.manual_seed(3)
    N = 24
    nh, nl = torch.rand(N) * 3, torch.rand(N)
    nh[0], nh[1], nl[5] = 40.0, 0.0, 0.0             # one row clips to p = 1; zeros are never kept
    xsq = torch.rand(N) + 0.1
    probs = [lss_probabilities(torch.cat([nh, nl]), N),
             lss_probabilities(torch.cat([nh, nl]) * xsq.sqrt().repeat(2), N)]
    assert probs[0][0] == 1.0 and probs[0][1] == 0.0
    S = fl.sample_size(N)
    counts = torch.zeros(2, 2 * N)
    trials = 300
    for seed in range(trials):
        src, wt, slot = plan(nh, nl, N, seed, xsq)
        for k in range(2):
            used = wt[k] > 0
            rows = src[k][used].long()
            assert rows.unique().numel() == rows.numel() <= S       # each row at most once
            assert torch.allclose(wt[k][used], 1.0 / probs[k][rows], rtol=1e-5)
            assert (src[k][~used] == 0).all()
            counts[k, rows] += 1
        # the input gradient's slots point back at the same rows
        kept0 = src[0][wt[0] > 0].long()
        assert torch.equal(torch.nonzero(slot >= 0).flatten().sort().values, kept0.sort().values)
        assert torch.equal(src[0][slot[slot >= 0].long()].long(), torch.nonzero(slot >= 0).flatten())
    for k in range(2):
        p = probs[k]
        se = (p * (1 - p) / trials).sqrt()
        assert ((counts[k] / trials - p).abs() <= 4 * se + 1e-9).all(), (counts[k] / trials, p)
        assert (counts[k][p == 0] == 0).all() and (counts[k][p == 1] == trials).all()


def test_lss_plan_keeps_every_nonzero_row_when_the_budget_allows():
    nh = torch.tensor([1.0, 0.0, 2.0, 0.0])
    nl = torch.tensor([0.0, 0.0, 3.0, 0.0])
    src, wt, slot = plan(nh, nl, 4, seed=7)
    for k in range(2):
        kept = src[k][wt[k] > 0].sort().values
        assert kept.tolist() == [0, 2, 6]
        assert torch.allclose(wt[k][wt[k] > 0], torch.ones(3))


def test_lss_operands_gather_requantize_and_transpose():
    torch.manual_seed(4)
    N, C, D = 8, 16, 32
    stacked = pack_int4_spec(torch.randint(-6, 7, (2 * N, C), dtype=torch.int8))
    xq = torch.randint(-7, 8, (N, D), dtype=torch.int8)
    S = fl.sample_size(N)
    src = torch.stack([torch.randperm(2 * N)[:S], torch.randperm(2 * N)[:S]]).int()
    wt = torch.rand(2, S) + 0.5
    wt[:, -2:] = 0.0                                   # unused places
    src[:, -2:] = 0
    kept, a, sa, b = fl.lss_operands(stacked, pack_int4_spec(xq), src, wt, seed=9)
    assert torch.equal(kept, stacked[src[0].long()])
    assert torch.equal(b, pack_int4_spec(xq[src[1].long() % N].T.contiguous()))
    vals = (codes_of(stacked).float()[src[1].long()] * wt[1][:, None]).T      # (C, S)
    assert torch.allclose(sa, vals.abs().amax(1) / 7.0)
    ratio = vals / sa[:, None]
    qa = codes_of(a).float()
    assert ((qa - ratio).abs() < 1 + 1e-4).all() and (qa.abs() <= 7).all()
    assert (qa[:, -2:] == 0).all()
    # stochastic rounding: unbiased over seeds
    draws = torch.stack([codes_of(fl.lss_operands(stacked, pack_int4_spec(xq), src, wt, seed=k)[1]).float()
                         for k in range(32)])
    gap, se = draws.mean(0) - ratio, (draws.var(0) / 32).sum().sqrt()
    assert gap.norm() < 3 * se and gap.sum().abs() < 4 * se, (gap.norm(), gap.sum(), se)


def test_lsq_backward_is_the_spec_layers_arithmetic():
    torch.manual_seed(5)
    R, K, bs = 6, 64, 32
    q = torch.randint(-7, 8, (R, K), dtype=torch.int8)
    rec = torch.randint(0, 256, (R, K // 4), dtype=torch.uint8)
    d = torch.randn(R, K)
    parts = torch.empty(2, 4)
    out = fl.lsq_backward(d, None, rec, pack_int4_spec(q), R, bs, R * K, torch.float32, parts[0])
    ds, d_in = _lsq_scale_grad_2bit(d, *lsq_unrecord(rec.flatten(), q), R * K)
    assert torch.allclose(out, block_hadamard(d_in, bs), rtol=1e-5, atol=1e-5)
    assert torch.allclose(parts[0].sum(), ds, rtol=1e-4, atol=1e-6)
    # gather: row r is d[slot[r]] + d[slot[R + r]] (-1: not sampled)
    rows = torch.randn(5, K)
    slot = torch.tensor([0, -1, 2, -1, 4, 1, 3, -1, -1, -1, -1, -1], dtype=torch.int32)
    want = torch.zeros(R, K)
    for i, m in enumerate(slot.tolist()):
        if m >= 0:
            want[i % R] += rows[m]
    out = fl.lsq_backward(rows, slot, rec, pack_int4_spec(q), R, bs, R * K, torch.float32, parts[1])
    ds, d_in = _lsq_scale_grad_2bit(want, *lsq_unrecord(rec.flatten(), q), R * K)
    assert torch.allclose(out, block_hadamard(d_in, bs), rtol=1e-5, atol=1e-5)
    assert torch.allclose(parts[1].sum(), ds, rtol=1e-4, atol=1e-6)


def test_the_layers_autotuned_gemm_launch_is_the_slots_gemm():
    """fused_linear.gemm launches int4_matmul_kernel through triton.autotune on a GPU; here the
    same launch with one config (nothing to time), against the slot's launcher."""
    torch.manual_seed(6)
    a = torch.randint(0, 256, (70, 48), dtype=torch.uint8)
    b = torch.randint(0, 256, (40, 48), dtype=torch.uint8)
    sa, sb = torch.rand(70, 1) + 0.1, torch.tensor(0.3)
    want = fl.int4_matmul(a, sa, b, sb)
    one = (dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4),)
    assert torch.equal(fl.gemm(a, sa, b, sb, configs=one), want)
    assert torch.equal(fl.gemm(a, sa, b, sb, out_dtype=torch.int32, configs=one),
                       fl.int4_matmul(a, sa, b, sb, torch.int32))
    assert torch.equal(fl.gemm(a, sa, b, sb), want)             # CPU: the slot's launcher
    assert fl.GEMM_CONFIGS[0] is fl.GPU_CONFIG                   # what `int4lab inspect` compiles

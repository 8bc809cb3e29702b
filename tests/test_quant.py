"""The quantizer spec: scales per granularity, error bounds, stochastic rounding, LSQ, the INT4 GEMM."""
import math

import pytest
import torch

from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import (
    QMAX,
    LSQQuantizer,
    dequantize,
    int4_matmul_spec,
    lsq_codes,
    lsq_grad_scale,
    lsq_init_scale,
    lsq_quantize,
    quantize,
    quantize_int4_spec,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("granularity,shape", [("tensor", ()), ("row", (2, 3, 1)), ("block", (2, 3, 4))])
def test_scale_shapes(granularity, shape):
    codes, scales = quantize(randn(2, 3, 64), granularity=granularity, block_size=16)
    assert codes.dtype == torch.int8 and codes.shape == (2, 3, 64)
    assert scales.dtype == torch.float32 and tuple(scales.shape) == shape


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("granularity", ["tensor", "row", "block"])
def test_round_trip_error_at_most_half_a_step(bits, granularity):
    x = randn(8, 64) * torch.linspace(0.1, 10, 64)       # channels of very different sizes
    codes, scales = quantize(x, bits=bits, granularity=granularity, block_size=16)
    assert codes.abs().max() <= QMAX[bits]
    err = (dequantize(codes, scales) - x).abs()
    step = dequantize(torch.ones_like(codes), scales)     # each element's scale
    assert (err <= step / 2 + 1e-6).all()
    # finer groups fit better: their error can only shrink
    assert err.max() <= (x.abs().max() / QMAX[bits]) / 2 + 1e-6


def test_max_maps_to_qmax_and_sign_symmetric():
    x = randn(4, 32)
    c1, _ = quantize(x, granularity="row")
    c2, _ = quantize(-x, granularity="row")
    assert torch.equal(c1, -c2)
    assert (c1.abs().amax(dim=1) == 7).all()


def test_all_zero_groups_give_zero_codes_and_unit_scale():
    x = torch.zeros(3, 32)
    x[1] = randn(32)
    codes, scales = quantize(x, granularity="row")
    assert torch.isfinite(scales).all()
    assert scales[0, 0] == 1.0 and scales[2, 0] == 1.0
    assert (codes[0] == 0).all() and (codes[2] == 0).all()
    c, s = quantize(torch.zeros(5, 8), granularity="tensor", rounding="stochastic",
                    generator=torch.Generator().manual_seed(0))
    assert s == 1.0 and (c == 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises(bad):
    x = randn(4, 8)
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN|Inf"):
        quantize(x)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="dtype"):
        quantize(torch.ones(4, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="granularity"):
        quantize(randn(4, 8), granularity="channel")
    with pytest.raises(ValueError, match="rounding"):
        quantize(randn(4, 8), rounding="up")
    with pytest.raises(ValueError, match="bits"):
        quantize(randn(4, 8), bits=3)
    with pytest.raises(ValueError, match="block_size"):
        quantize(randn(4, 40), granularity="block", block_size=32)
    with pytest.raises(ValueError, match="positive"):
        quantize(randn(4, 8), scale=0.0)
    with pytest.raises(ValueError, match="0-dim"):
        quantize(randn(4, 8), scale=torch.ones(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_compute_in_fp32(dtype):
    x = randn(4, 32).to(dtype)
    c, s = quantize(x, granularity="row")
    c32, s32 = quantize(x.float(), granularity="row")
    assert torch.equal(c, c32) and torch.equal(s, s32) and s.dtype == torch.float32


def test_given_scale_clips_and_fills_granularity():
    x = torch.tensor([[0.1, -0.5, 3.0, -9.0]])
    codes, scales = quantize(x, scale=0.25, granularity="row")
    assert codes.tolist() == [[0, -2, 7, -7]]              # 3.0/0.25 = 12 and -36 are clipped to +-7
    assert scales.shape == (1, 1) and scales.item() == 0.25


def test_stochastic_rounding_is_unbiased():
    x = randn(64)
    n = 4000
    codes, s = quantize(x.expand(n, 64), granularity="tensor", rounding="stochastic",
                        generator=torch.Generator().manual_seed(1))
    deq = dequantize(codes, s)
    mean, var = deq.mean(0), deq.var(0)
    # each mean is within 5 standard errors (from the measured variance) of x
    tol = 5 * torch.sqrt(var / n) + 1e-6
    assert ((mean - x).abs() <= tol).all()
    # and it is really random: the values straddle x (two neighbouring levels)
    assert (var > 0).sum() > 60
    # round-to-nearest is biased on the same inputs
    near = dequantize(*quantize(x, granularity="tensor"))
    assert (near - x).abs().max() > 10 * tol.max()


def test_stochastic_rounding_deterministic_under_a_seed():
    x = randn(16, 32)
    a = quantize(x, rounding="stochastic", generator=torch.Generator().manual_seed(7))[0]
    b = quantize(x, rounding="stochastic", generator=torch.Generator().manual_seed(7))[0]
    c = quantize(x, rounding="stochastic", generator=torch.Generator().manual_seed(8))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dequantize_infers_granularity_and_rejects_mismatch():
    x = randn(3, 64)
    for g in ("tensor", "row", "block"):
        c, s = quantize(x, granularity=g, block_size=16)
        assert (dequantize(c, s) - x).abs().max() < x.abs().max() / 7
    c, _ = quantize(x, granularity="row")
    with pytest.raises(ValueError, match="do not match"):
        dequantize(c, torch.ones(5, 1))
    with pytest.raises(ValueError, match="multiple"):
        dequantize(c, torch.ones(3, 5))
    with pytest.raises(TypeError):
        dequantize(c.float(), torch.ones(()))


# ---- the packed INT4 spec -------------------------------------------------------------------

@pytest.mark.parametrize("granularity", ["row", "block", "tensor"])
def test_quantize_int4_spec_packs_the_codes(granularity):
    x = randn(5, 64)
    packed, scales = quantize_int4_spec(x, granularity=granularity, block_size=32)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    codes, ref_scales = quantize(x, granularity=granularity, block_size=32)
    assert torch.equal(unpack_int4(packed), codes) and torch.equal(scales, ref_scales)


def test_quantize_int4_spec_seed_and_shapes():
    x = randn(4, 16)
    a = quantize_int4_spec(x, rounding="stochastic", seed=3)[0]
    b = quantize_int4_spec(x, rounding="stochastic", seed=3)[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="odd"):
        quantize_int4_spec(randn(4, 7))
    with pytest.raises(ValueError, match="0-dim"):
        quantize_int4_spec(torch.tensor(1.0))
    with pytest.raises(ValueError, match="Inf"):
        quantize_int4_spec(torch.full((2, 4), float("inf")))
    with pytest.raises(ValueError, match="block_size"):
        quantize_int4_spec(randn(2, 40), granularity="block", block_size=32)
    p, s = quantize_int4_spec(torch.zeros(0, 8))
    assert p.shape == (0, 4) and s.shape == (0, 1)
    p, s = quantize_int4_spec(torch.zeros(3, 0), granularity="block")
    assert p.shape == (3, 0) and s.shape == (3, 0)


def test_int4_matmul_spec_matches_dequantized_product():
    a_f, b_f = randn(6, 64, seed=1), randn(5, 64, seed=2)
    a, sa = quantize_int4_spec(a_f, granularity="row")
    b, sb = quantize_int4_spec(b_f, granularity="row")
    y = int4_matmul_spec(a, sa, b, sb)
    ref = dequantize(unpack_int4(a), sa) @ dequantize(unpack_int4(b), sb).T
    assert y.shape == (6, 5) and y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    # per-tensor scales too, and half output
    a0, sa0 = quantize_int4_spec(a_f, granularity="tensor")
    y16 = int4_matmul_spec(a0, sa0, b, sb, out_dtype=torch.float16)
    assert y16.dtype == torch.float16


def test_int4_matmul_spec_int32_is_exact():
    g = torch.Generator().manual_seed(0)
    qa = torch.randint(-8, 8, (7, 130), generator=g, dtype=torch.int8)
    qb = torch.randint(-8, 8, (9, 130), generator=g, dtype=torch.int8)
    from int4lab.spec.packing import pack_int4
    y = int4_matmul_spec(pack_int4(qa), torch.ones(()), pack_int4(qb), torch.ones(()), out_dtype=torch.int32)
    assert y.dtype == torch.int32
    assert torch.equal(y.long(), qa.long() @ qb.long().T)


def test_int4_matmul_spec_validates():
    a = torch.zeros(4, 8, dtype=torch.uint8)
    b = torch.zeros(3, 8, dtype=torch.uint8)
    s = torch.ones(())
    with pytest.raises(ValueError, match="K/2"):
        int4_matmul_spec(a, s, torch.zeros(3, 6, dtype=torch.uint8), s)
    with pytest.raises(ValueError, match=r"\(4, 1\)"):
        int4_matmul_spec(a, torch.ones(3, 1), b, s)
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        int4_matmul_spec(a, s, b, torch.ones(3))
    with pytest.raises(TypeError, match="uint8"):
        int4_matmul_spec(a.to(torch.int8), s, b, s)
    with pytest.raises(ValueError, match="2-D"):
        int4_matmul_spec(a[0], s, b, s)
    with pytest.raises(ValueError, match="out_dtype"):
        int4_matmul_spec(a, s, b, s, out_dtype=torch.int8)
    assert int4_matmul_spec(a[:0], s, b, s).shape == (0, 3)


# ---- LSQ -----------------------------------------------------------------------------------

def test_lsq_init_scale_formula():
    x = randn(10, 20)
    assert torch.isclose(lsq_init_scale(x), 2 * x.abs().mean() / math.sqrt(7))
    assert lsq_init_scale(torch.zeros(3)) == 1.0


def test_lsq_quantize_forward_and_gradients():
    x = (randn(8, 16) * 3).requires_grad_(True)
    s = torch.tensor(0.5, requires_grad=True)
    y = lsq_quantize(x, s)
    v = x.detach() / 0.5
    q = torch.round(v.clamp(-7, 7))
    torch.testing.assert_close(y, q * 0.5)
    g = randn(8, 16, seed=3)
    gx, gs = torch.autograd.grad(y, (x, s), g)
    inside = (v.abs() <= 7).float()
    assert 0 < inside.mean() < 1                              # some values really were clipped
    torch.testing.assert_close(gx, g * inside)                # STE with the clipping mask
    ref = (g * torch.where(v.abs() <= 7, q - v, q)).sum() * lsq_grad_scale(x.numel(), 7)
    torch.testing.assert_close(gs, ref)
    codes, mask = lsq_codes(x.detach(), s)
    assert torch.equal(codes.float(), q) and torch.equal(mask.float(), inside)


def test_lsq_quantizer_init_warmup_then_learn():
    lsq = LSQQuantizer(bits=4, warmup_steps=2)
    a, b = randn(64), randn(64, seed=1) * 5
    lsq(a)
    assert torch.isclose(lsq.scale.detach(), lsq_init_scale(a))
    lsq(b)                                                     # still warming up: reset from b
    assert torch.isclose(lsq.scale.detach(), lsq_init_scale(b))
    opt = torch.optim.SGD(lsq.parameters(), lr=1.0)
    before = lsq.scale.detach().clone()
    loss = ((lsq(a) - a) ** 2).sum()                         # step 3: learned, not reset
    opt.zero_grad()
    loss.backward()
    assert lsq.scale.grad is not None and lsq.scale.grad != 0
    opt.step()
    assert not torch.isclose(lsq.scale.detach(), before)
    moved = lsq.scale.detach().clone()
    lsq(b)
    assert torch.equal(lsq.scale.detach(), moved)             # after warm-up b does not reset it
    with pytest.raises(ValueError, match="bits"):
        LSQQuantizer(bits=2)

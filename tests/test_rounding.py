"""The given helpers of kernels/rounding.py (Triton's interpreter on CPU) and the interpreter's
exact fma (int4lab.interpreter.compat), on the cases where a shortcut would show: divisions whose
quotient lies within an ulp of a rounding boundary, subnormal and huge divisors, exact ties."""
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import int4lab  # noqa: F401  (sets TRITON_INTERPRET on a CPU before the kernels below are decorated)
from int4lab.interpreter.compat import exact_fma32
from int4lab.kernels.rounding import divide_rn, mul_div, nibble_rn


@triton.jit
def _helpers_kernel(x_ptr, s_ptr, q_ptr, m_ptr, c, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    x = tl.load(x_ptr + offs, mask=ok, other=0.0)
    s = tl.load(s_ptr + offs, mask=ok, other=1.0)
    tl.store(q_ptr + offs, divide_rn(x, s), mask=ok)
    tl.store(m_ptr + offs, mul_div(x, c, s), mask=ok)


@triton.jit
def _nibble_kernel(v_ptr, o_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    tl.store(o_ptr + offs, nibble_rn(tl.load(v_ptr + offs, mask=ok, other=0.0)), mask=ok)


def helpers(x, s, c=0.17677669):
    q, m = torch.empty_like(x), torch.empty_like(x)
    _helpers_kernel[(triton.cdiv(x.numel(), 4096),)](x, s, q, m, c, x.numel(), BLOCK=4096)
    return q, m


def hard_divisions(n, seed):
    """(x, s) fp32 with x / s near k + 1/2 (within a few ulps), s of every size incl. subnormal."""
    rng = np.random.default_rng(seed)
    mant = np.where(rng.random(n) < 0.5, 2 - rng.random(n) * 2.0 ** -rng.integers(1, 23, n),
                    1 + rng.random(n))
    s = (mant * 2.0 ** rng.integers(-149, 126, n)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
    k = rng.integers(-8, 8, n) + 0.5
    v = np.where(rng.random(n) < 0.8, k * (1 + rng.integers(-40, 41, n) * 2.0 ** -24),
                 rng.standard_normal(n) * 4)
    with np.errstate(over="ignore"):
        x = (v * s.astype(np.float64)).astype(np.float32)
    x = np.where(np.isfinite(x), x, np.float32(0.0)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(s)


@pytest.mark.parametrize("seed", [0, 1])
def test_divide_rn_is_torchs_division_bit_for_bit(seed):
    x, s = hard_divisions(200_000, seed)
    q, _ = helpers(x, s)
    want = x / s
    assert torch.equal(q, want), (q != want).nonzero()[:5]      # (-0.0 / s may come out +0.0)


def test_mul_div_is_within_two_ulps_and_finite_for_any_scale():
    x, s = hard_divisions(100_000, 2)
    c = np.float32(0.17677669)
    _, m = helpers(x, s, float(c))
    want = (x.double() * float(c) / s.double())
    ok = want.abs() < 2.0 ** 100                      # (z p) overflows only far beyond the clamp
    assert torch.isfinite(m[ok]).all()
    ulp = torch.from_numpy(np.spacing(np.abs(want[ok].numpy()).astype(np.float32))).double()
    assert ((m[ok].double() - want[ok]).abs() <= 2 * ulp).all()
    assert helpers(torch.zeros(3), torch.full((3,), 1e-45))[1].eq(0).all()   # 0 * huge stays 0


def test_nibble_rn_rounds_half_to_even_as_torch_round():
    v = torch.cat([torch.arange(-7, 7.5, 0.5), torch.linspace(-7.4999, 7.4999, 10001),
                   torch.tensor([7.0000005, -7.0000005, -0.0, 1e-30, -1e-30])]).float()
    codes = torch.empty(v.shape, dtype=torch.int32)
    _nibble_kernel[(triton.cdiv(v.numel(), 4096),)](v, codes, v.numel(), BLOCK=4096)
    want = torch.round(v).clamp(-7, 7).int()
    assert torch.equal(codes, want & 0xF)


def test_exact_fma32_rounds_once():
    """The fp32 fma the compat fix gives Triton 3.6's interpreter, against exact rationals."""
    from fractions import Fraction
    rng = np.random.default_rng(3)
    n = 2000
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    y = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    z = (-(x.astype(np.float64) * y) * (1 + rng.integers(-4, 5, n) * 2.0 ** -25)).astype(np.float32)
    got = exact_fma32(x, y, z)
    for a, b, c, g in zip(x, y, z, got):
        exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        lo = np.float32(float(exact))                  # within an ulp: compare the neighbours
        cands = [np.nextafter(lo, np.float32(-np.inf)), lo, np.nextafter(lo, np.float32(np.inf))]
        best = min(cands, key=lambda f: (abs(Fraction(float(f)) - exact),
                                         int(np.float32(f).view(np.int32)) & 1))
        assert g == best, (a, b, c, g, best)

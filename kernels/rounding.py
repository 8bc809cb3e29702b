"""Rounding and division helpers shared by the quantizing kernels (not a slot of their own).

torch.round rounds to the nearest integer with exact ties (x.5) going to the even neighbour; the
spec uses it, so every kernel that quantizes must round the same way, bit for bit. And the spec
divides in IEEE fp32, correctly rounded. The kernels that quantize (quantize_int4,
hadamard_quantize, bit_split) import these, and so do their exercise stubs: they are given, not
exercises (lesson 02 explains the tie rule and the fast path, and points here).

- round_half_to_even(v): torch.round for any fp32, with floor and an explicit tie rule;
- nibble_rn(v): the same rounding in 2 instructions, for |v| < 7.5, as an INT4 code;
- divide_rn(x, s): x / s correctly rounded, 4 instructions a value for a shared divisor s;
- mul_div(z, c, s): z * c / s to about an ulp, 2 instructions a value (not correctly rounded).
"""
import triton
import triton.language as tl


@triton.jit
def round_half_to_even(v):
    """torch.round for fp32: nearest integer, exact ties to the even neighbour.

    floor(v) and v - floor(v) are exact for |v| < 2**22; a tie rounds up only when floor(v) is
    odd (2.5 -> 2, 3.5 -> 4, -2.5 -> -2)."""
    f = tl.floor(v)
    d = v - f
    f_is_odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    up = (d > 0.5) | ((d == 0.5) & f_is_odd)
    return tl.where(up, f + 1.0, f)


# ---- the fast path: a few instructions per value, for the memory-bound kernels ---------------
# quantize_int4 and hadamard_quantize move 2.5 bytes per value (a bf16 in, half a byte out). An
# H200 streams about 20 bytes of DRAM per SM cycle and issues 4 warp-instructions per SM cycle,
# so such a kernel keeps up with memory only below about 16 instructions per value. Compiled for
# sm_90, tl.math.div_rn costs about 14 instructions per value on its own, round_half_to_even 6,
# and a float -> int conversion 1 more. divide_rn and nibble_rn give the same bits with 4 and 2;
# mul_div is divide_rn's cheaper, inexact cousin, for the Hadamard rotation (whose sums are
# reordered anyway).

@triton.jit
def divide_rn(x, s):
    """x / s correctly rounded, as torch's fp32 division and tl.math.div_rn (up to the sign of a
    zero: -0.0 / s gives +0.0), for a divisor s > 0 shared by many values: pass s as a column
    (s[:, None]), so that what depends on s alone is computed once per s, not once per value.

    Per s: p, a power of two that brings s p into [2**-85, 2**64] (exactly), and r = 1 / (s p)
    correctly rounded. Per value: q0 = (x p) r is within about an ulp of x / s, one fma gives the
    residual x p - q0 s p, and q0 + residual * r rounds to the correctly rounded quotient
    (Markstein's theorem: the last two steps of the sequence CUDA compiles a division into, with
    the reciprocal computed once instead of once per value). Four instructions per value instead
    of about fourteen. p keeps every step away from underflow, for a subnormal s too; x p can
    overflow only when |x / s| > 2**124: where s is not x's own max / 7 (a given scale), clamp x
    to [-7 s, 7 s] first.
    """
    # p = 2**64 where s < 2**-60, 2**-64 where s > 2**60, else 1
    p = tl.where(s < 8.673617379884035e-19, 1.8446744073709552e19,
                 tl.where(s > 1.152921504606847e18, 5.421010862427522e-20, 1.0))
    sp = s * p
    r = tl.math.div_rn(1.0, sp)
    xp = x * p
    q0 = xp * r
    return tl.fma(r, tl.fma(-q0, sp, xp), q0)


@triton.jit
def mul_div(z, c, s):
    """z * c / s to within about an ulp, for c > 0 and s > 0 (s as a column, s[:, None], so that
    its division is done once per s): two multiplies per value, and no division.

    r = c / (s p) is computed once per s, correctly rounded, with p the power of two of
    divide_rn, so that r is a normal float for any s (also a subnormal or a huge one); per value
    (z p) r, z p exact. z p overflows to +-inf only where |z c / s| would pass 2**120: clamp the
    result to [-7, 7] then. Not correctly rounded (two roundings): for a rotation whose sums are
    already reordered.
    """
    # p = 2**64 where s < 2**-60, 2**-64 where s > 2**60, else 1
    p = tl.where(s < 8.673617379884035e-19, 1.8446744073709552e19,
                 tl.where(s > 1.152921504606847e18, 5.421010862427522e-20, 1.0))
    return (z * p) * tl.math.div_rn(c, s * p)


@triton.jit
def nibble_rn(v):
    """round(v) with ties to even (torch.round), as the 4-bit two's complement code in the low 4
    bits of an int32 (-1 -> 0xF), for -7.5 < v < 7.5 (clamp to [-7, 7] first where v can be
    larger; 7.0000005 is fine).

    v + 1.5 * 2**23 lies in [2**23, 2**24), where floats are exactly the integers: the fp32 addition
    itself rounds v to the nearest integer, ties to even, and the bits of the sum are those of
    1.5 * 2**23 + round(v), whose low bits are round(v) in two's complement. One add, one and."""
    return (v + 12582912.0).to(tl.int32, bitcast=True) & 0xF     # 12582912 = 1.5 * 2**23

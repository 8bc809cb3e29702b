"""Rounding helpers shared by the quantizing kernels (not a slot of its own).

torch.round rounds to the nearest integer with exact ties (x.5) going to the even neighbour; the
spec uses it, so every kernel that quantizes must round the same way, bit for bit. The kernels
that quantize (quantize_int4, hadamard_quantize, bit_split) import this one, and so do their
exercise stubs: it is given, not an exercise (lesson 02 explains the tie rule and points here).
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

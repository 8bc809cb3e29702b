"""bit_split, WRONG on purpose: lo is rounded to nearest, with no random noise.

Every lo code is then the floor or the ceil of the residual, so it looks fine code by code,
but it is biased: a residual of 2.3 always becomes 2, never 3 with probability 0.3.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def absmax_kernel(g_ptr, amax_ptr, N, C, stride_n, stride_c, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < N)[:, None] & (cols < C)[None, :]
    x = tl.load(g_ptr + rows[:, None] * stride_n + cols[None, :] * stride_c, mask=mask, other=0.0)
    tl.atomic_max(amax_ptr, tl.max(tl.max(tl.abs(x.to(tl.float32)), axis=1), axis=0))


@triton.jit
def _round_half_even(x):
    f = tl.floor(x)
    d = x - f
    f_is_odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & f_is_odd), f + 1.0, f)


@triton.jit
def bit_split_kernel(g_ptr, amax_ptr, hi_ptr, lo_ptr, N, C, stride_n, stride_c,
                     BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    amax = tl.load(amax_ptr)
    s = tl.where(amax > 0.0, 196.0 * tl.math.div_rn(1.0, tl.where(amax > 0.0, 2.0 * amax, 1.0)), 1.0)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    byts = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    n_bytes = C // 2
    mask = (rows < N)[:, None] & (byts < n_bytes)[None, :]
    base = g_ptr + rows[:, None] * stride_n
    ve = tl.load(base + (2 * byts)[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32) * s
    vo = tl.load(base + (2 * byts + 1)[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32) * s
    hi_e = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(ve, 14.0)), -6.0), 6.0)
    hi_o = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(vo, 14.0)), -6.0), 6.0)
    # BUG: no noise: the residual is rounded to nearest
    lo_e = tl.minimum(tl.maximum(_round_half_even(ve - 14.0 * hi_e), -6.0), 6.0)
    lo_o = tl.minimum(tl.maximum(_round_half_even(vo - 14.0 * hi_o), -6.0), 6.0)
    out = rows[:, None] * n_bytes + byts[None, :]
    hi_byte = (hi_e.to(tl.int32) & 0xF) | ((hi_o.to(tl.int32) & 0xF) << 4)
    lo_byte = (lo_e.to(tl.int32) & 0xF) | ((lo_o.to(tl.int32) & 0xF) << 4)
    tl.store(hi_ptr + out, hi_byte.to(tl.uint8), mask=mask)
    tl.store(lo_ptr + out, lo_byte.to(tl.uint8), mask=mask)


def bit_split(g, seed=None):
    N, C = g.shape
    hi = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    lo = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    amax = torch.zeros((), dtype=torch.float32, device=g.device)
    if g.numel():
        absmax_kernel[(triton.cdiv(N, 32), triton.cdiv(C, 128))](g, amax, N, C, g.stride(0), g.stride(1),
                                                                 BLOCK_R=32, BLOCK_C=128)
        bit_split_kernel[(triton.cdiv(N, 32), triton.cdiv(C // 2, 64))](
            g, amax, hi, lo, N, C, g.stride(0), g.stride(1), BLOCK_R=32, BLOCK_B=64)
    s = torch.where(amax > 0, 196 / (2 * amax), torch.ones_like(amax))
    return hi, lo, (14 / s).float(), (1 / s).float()

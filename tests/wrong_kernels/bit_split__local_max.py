"""bit_split, WRONG on purpose: one pass, each program scales its tile by the tile's own max.

A plausible shortcut: skip the first pass and let every program find max|g| over the values it
already loaded. The scales returned are right (computed from the whole tensor in the launcher),
but the codes of every tile are scaled by a different, smaller max.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _round_half_even(x):
    f = tl.floor(x)
    d = x - f
    f_is_odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & f_is_odd), f + 1.0, f)


@triton.jit
def bit_split_kernel(g_ptr, hi_ptr, lo_ptr, N, C, stride_n, stride_c, seed,
                     BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    byts = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    n_bytes = C // 2
    mask = (rows < N)[:, None] & (byts < n_bytes)[None, :]
    base = g_ptr + rows[:, None] * stride_n
    even = tl.load(base + (2 * byts)[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)
    odd = tl.load(base + (2 * byts + 1)[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)
    # BUG: the max of this tile only, not of the whole tensor
    amax = tl.maximum(tl.max(tl.max(tl.abs(even), axis=1), axis=0),
                      tl.max(tl.max(tl.abs(odd), axis=1), axis=0))
    s = tl.where(amax > 0.0, 196.0 * tl.math.div_rn(1.0, tl.where(amax > 0.0, 2.0 * amax, 1.0)), 1.0)
    u_e, u_o, _, _ = tl.rand4x(seed, rows[:, None] * n_bytes + byts[None, :])
    ve, vo = even * s, odd * s
    hi_e = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(ve, 14.0)), -6.0), 6.0)
    hi_o = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(vo, 14.0)), -6.0), 6.0)
    lo_e = tl.minimum(tl.maximum(_round_half_even(ve - 14.0 * hi_e + u_e - 0.5), -6.0), 6.0)
    lo_o = tl.minimum(tl.maximum(_round_half_even(vo - 14.0 * hi_o + u_o - 0.5), -6.0), 6.0)
    out = rows[:, None] * n_bytes + byts[None, :]
    hi_byte = (hi_e.to(tl.int32) & 0xF) | ((hi_o.to(tl.int32) & 0xF) << 4)
    lo_byte = (lo_e.to(tl.int32) & 0xF) | ((lo_o.to(tl.int32) & 0xF) << 4)
    tl.store(hi_ptr + out, hi_byte.to(tl.uint8), mask=mask)
    tl.store(lo_ptr + out, lo_byte.to(tl.uint8), mask=mask)


def bit_split(g, seed=None):
    N, C = g.shape
    hi = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    lo = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    amax = g.float().abs().amax() if g.numel() else torch.zeros((), device=g.device)
    s = torch.where(amax > 0, 196 / (2 * amax), torch.ones_like(amax))
    if g.numel():
        grid = (triton.cdiv(N, 32), triton.cdiv(C // 2, 64))
        bit_split_kernel[grid](g, hi, lo, N, C, g.stride(0), g.stride(1), 0 if seed is None else seed,
                               BLOCK_R=32, BLOCK_B=64)
    return hi, lo, (14 / s).float(), (1 / s).float()

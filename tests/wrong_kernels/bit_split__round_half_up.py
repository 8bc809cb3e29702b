"""bit_split, WRONG on purpose: hi rounds halves up (floor(x + 0.5)) instead of to even.

torch.round sends 0.5 to 0 and 2.5 to 2 (ties to even); floor(x + 0.5) sends them to 1 and 3.
The two agree everywhere except at exact ties, which the "exact ties" check builds on purpose.
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
def bit_split_kernel(g_ptr, amax_ptr, hi_ptr, lo_ptr, N, C, stride_n, stride_c, seed,
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
    u_e, u_o, _, _ = tl.rand4x(seed, rows[:, None] * n_bytes + byts[None, :])
    # BUG: floor(x + 0.5) rounds every half up; torch.round rounds halves to even
    hi_e = tl.minimum(tl.maximum(tl.floor(tl.math.div_rn(ve, 14.0) + 0.5), -6.0), 6.0)
    hi_o = tl.minimum(tl.maximum(tl.floor(tl.math.div_rn(vo, 14.0) + 0.5), -6.0), 6.0)
    lo_e = tl.minimum(tl.maximum(tl.floor(ve - 14.0 * hi_e + u_e), -6.0), 6.0)   # round(r + u - 1/2)
    lo_o = tl.minimum(tl.maximum(tl.floor(vo - 14.0 * hi_o + u_o), -6.0), 6.0)
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
            g, amax, hi, lo, N, C, g.stride(0), g.stride(1), 0 if seed is None else seed,
            BLOCK_R=32, BLOCK_B=64)
    s = torch.where(amax > 0, 196 / (2 * amax), torch.ones_like(amax))
    return hi, lo, (14 / s).float(), (1 / s).float()

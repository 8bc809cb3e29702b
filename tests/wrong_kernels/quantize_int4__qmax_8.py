"""Wrong on purpose: uses the asymmetric range [-8, 7] with s = max|x| / 8; the course's INT4 is symmetric,
[-7, 7], s = max|x| / 7."""
import torch
import triton
import triton.language as tl


@triton.jit
def round_half_even(v):
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(0.5 * f)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)


@triton.jit
def quantize_kernel(x_ptr, p_ptr, s_ptr, G, L, scale, seed,
                    BLOCK_G: tl.constexpr, HALF: tl.constexpr, GIVEN: tl.constexpr,
                    STOCHASTIC: tl.constexpr):
    g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)      # groups (rows or blocks)
    j = tl.arange(0, HALF)                                      # pairs in a group
    mask = (g < G)[:, None] & (j < L // 2)[None, :]
    offs = g[:, None] * L + 2 * j[None, :]
    xe = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xo = tl.load(x_ptr + offs + 1, mask=mask, other=0.0).to(tl.float32)
    if GIVEN:
        s = tl.zeros([BLOCK_G], dtype=tl.float32) + scale
    else:
        amax = tl.maximum(tl.max(tl.abs(xe), axis=1), tl.max(tl.abs(xo), axis=1))
        s = tl.where(amax > 0, tl.math.div_rn(amax, 8.0), 1.0)
    tl.store(s_ptr + g, s, mask=g < G)
    ve = tl.minimum(tl.maximum(tl.math.div_rn(xe, s[:, None]), -8.0), 7.0)
    vo = tl.minimum(tl.maximum(tl.math.div_rn(xo, s[:, None]), -8.0), 7.0)
    if STOCHASTIC:
        ve = tl.floor(ve + tl.rand(seed, offs))
        vo = tl.floor(vo + tl.rand(seed, offs + 1))
    else:
        ve = round_half_even(ve)
        vo = round_half_even(vo)
    byte = (ve.to(tl.int32) & 0xF) | ((vo.to(tl.int32) & 0xF) << 4)
    tl.store(p_ptr + offs // 2, byte.to(tl.uint8), mask=mask)


def quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    x = x.contiguous()
    K = x.shape[-1]
    L = block_size if granularity == "block" else K
    G = x.numel() // L if L else 0
    packed = torch.empty((*x.shape[:-1], K // 2), dtype=torch.uint8, device=x.device)
    if granularity == "tensor" and scale is None:
        amax = x.abs().max().float() if x.numel() else torch.zeros(())
        scale = amax / 8 if amax > 0 else 1.0
    given = scale is not None
    s_shape = {"row": (*x.shape[:-1], 1), "block": (*x.shape[:-1], K // block_size), "tensor": ()}
    scales = torch.full(s_shape[granularity], float(scale) if given else 1.0, device=x.device)
    if x.numel() == 0:
        return packed, scales
    s_buf = scales if granularity != "tensor" else torch.empty(G, device=x.device)
    HALF = triton.next_power_of_2(L) // 2
    BLOCK_G = max(1, min(2048 // HALF, triton.next_power_of_2(G)))
    quantize_kernel[(triton.cdiv(G, BLOCK_G),)](
        x, packed, s_buf, G, L, float(scale) if given else 1.0, seed if seed is not None else 0,
        BLOCK_G=BLOCK_G, HALF=HALF, GIVEN=given, STOCHASTIC=rounding == "stochastic")
    return packed, scales

"""Wrong on purpose: the load masks rows only: when K is not a power of two the padded columns
read past the end of each row."""
import torch
import triton
import triton.language as tl

from int4lab.spec.hadamard import hadamard_matrix


@triton.jit
def round_half_even(v):
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(0.5 * f)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)


@triton.jit
def hq_kernel(x_ptr, h_ptr, p_ptr, s_ptr, R, K, scale,
              BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr, MODE: tl.constexpr):
    # MODE 0: a scale per row, 1: a scale per 32 values, 2: the given scale, 3: write row max only
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, KP)
    mask = (rows < R)[:, None] & (cols < KP)[None, :]
    x = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=mask, other=0.0)
    i = tl.arange(0, BS)
    h = tl.load(h_ptr + i[:, None] * BS + i[None, :], mask=(i[:, None] < BS) & (i[None, :] < BS))
    y = tl.dot(tl.reshape(x.to(tl.float32), (BLOCK_R * KP // BS, BS)), h, input_precision="ieee")
    y = tl.reshape(y, (BLOCK_R, KP)).to(x.dtype).to(tl.float32)
    if MODE == 3:
        tl.store(s_ptr + rows, tl.max(tl.abs(y), axis=1), mask=rows < R)
    else:
        if MODE == 1:
            y3 = tl.reshape(y, (BLOCK_R, KP // 32, 32))
            amax = tl.max(tl.abs(y3), axis=2)
            s = tl.where(amax > 0, tl.math.div_rn(amax, 7.0), 1.0)
            b = tl.arange(0, KP // 32)
            tl.store(s_ptr + rows[:, None] * (K // 32) + b[None, :], s,
                     mask=(rows < R)[:, None] & (b < K // 32)[None, :])
            v = tl.reshape(tl.math.div_rn(y3, s[:, :, None]), (BLOCK_R, KP))
        else:
            if MODE == 0:
                amax = tl.max(tl.abs(y), axis=1)
                s = tl.where(amax > 0, tl.math.div_rn(amax, 7.0), 1.0)
                tl.store(s_ptr + rows, s, mask=rows < R)
            else:
                s = tl.zeros([BLOCK_R], dtype=tl.float32) + scale
            v = tl.math.div_rn(y, s[:, None])
        v = round_half_even(tl.minimum(tl.maximum(v, -7.0), 7.0))
        even, odd = tl.split(tl.reshape(v.to(tl.int32), (BLOCK_R, KP // 2, 2)))
        j = tl.arange(0, KP // 2)
        tl.store(p_ptr + rows[:, None] * (K // 2) + j[None, :], ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.uint8),
                 mask=(rows < R)[:, None] & (j < K // 2)[None, :])


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    x = x.contiguous()
    K = x.shape[-1]
    R = x.numel() // K if K else 0
    packed = torch.empty((*x.shape[:-1], K // 2), dtype=torch.uint8, device=x.device)
    s_shape = {"row": (*x.shape[:-1], 1), "block": (*x.shape[:-1], K // 32), "tensor": ()}[granularity]
    scales = torch.full(s_shape, 1.0 if scale is None else float(scale), device=x.device)
    if x.numel() == 0:
        return packed, scales
    H = hadamard_matrix(block_size, device=x.device)
    KP = triton.next_power_of_2(K)
    BLOCK_R = max(16 * block_size // KP, 1, min(4096 // KP, triton.next_power_of_2(R)))
    grid = (triton.cdiv(R, BLOCK_R),)

    def run(out, mode, s=1.0):
        hq_kernel[grid](x, H, packed, out, R, K, s, BLOCK_R=BLOCK_R, KP=KP, BS=block_size, MODE=mode)

    if granularity == "tensor" or scale is not None:
        if scale is None:
            row_max = torch.empty(R, device=x.device)
            run(row_max, 3)
            amax = row_max.max()
            scales.fill_(float(amax / 7) if amax > 0 else 1.0)
        run(scales, 2, float(scales.flatten()[0]) if scales.numel() else 1.0)
    else:
        run(scales, 0 if granularity == "row" else 1)
    return packed, scales

"""Block Hadamard rotation fused with INT4 quantize and pack: x (..., K) -> (packed (..., K/2), scales).

What it computes (the spec is int4lab.spec.hadamard.hadamard_quantize_spec): y = x @ BlockDiag(H, ..., H)
along the last dim, H the normalized block_size x block_size Sylvester Hadamard matrix, then
y is quantized to INT4 with round-to-nearest (ties to even) and packed two codes per byte,
exactly as quantize_int4 would do with y:
  - "row":    one scale per row, max|y| / 7             -> scales x.shape[:-1] + (1,)
  - "block":  one scale per 32 consecutive values of y  -> scales x.shape[:-1] + (K / 32,)
              (32 whatever the rotation's block_size: the spec quantizes with the default block)
  - "tensor": one scale, max|y| / 7 or the given `scale` -> a 0-dim scale.
Supported rotation blocks: 16, 32, 64, 128.

Memory layout and why: the point of fusing is that y never goes to memory: x is read once, the
packed bytes and scales are written once. A program owns BLOCK_R whole rows, loaded as one
(BLOCK_R, KP) tile (KP = K rounded up to a power of two, the padding masked to zero). Seen as
(BLOCK_R * KP / block_size, block_size), each row of that view is one Hadamard block, so the
whole rotation is ONE tl.dot with the (block_size, block_size) matrix H; padded blocks are zero
and stay zero. H is built once by the launcher (int4lab.spec.hadamard.hadamard_matrix, fp32) and
read by every program. Because the program holds whole rotated rows, it knows each row's max
before it writes a single code: the per-row (and per-block) scale costs no second pass. The
rotated tile is then viewed as (BLOCK_R, KP / 2, 2) and tl.split separates codes 2j and 2j+1,
which are ORed into one byte.

Per-tensor dynamic scale needs max|y| over the whole tensor, which no program sees. That
falls back to two passes: pass 1 runs this kernel with AMAX_ONLY, which rotates and writes only
each row's max|y|; torch takes the max of those and divides by 7 as the spec does; pass 2
quantizes with that scale. A given per-tensor scale (LSQ's) is one pass.

Numbers: the dot runs in fp32 with input_precision="ieee" (tf32 would cost 3 digits). Its sums
run in another order than torch's matmul, so y can differ from the spec's in the last bit:
scales agree to ~1e-6 relative, and a code can differ by 1 where y / s sits within rounding of
a .5 boundary. The spec returns y in the input's dtype before quantizing (fp16 in, fp16 y), so
for fp16/bf16 inputs the kernel rounds y to that dtype too. Division is tl.math.div_rn (Triton's
`/` is approximate on GPUs) and ties round to even, as torch.round.
"""
import math

import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import round_half_to_even
from int4lab.spec.hadamard import hadamard_matrix, validate_hadamard_quantize
from int4lab.spec.quantizers import QMAX, _as_scale, absmax_scale

BLOCK_SIZES = (16, 32, 64, 128)
QBLOCK = 32          # the spec's quantization block for granularity "block"
TILE = 4096          # values per program


@triton.jit
def hadamard_quantize_kernel(x_ptr, h_ptr, p_ptr, s_ptr, given_ptr, R, K, stride_r, stride_c,
                             BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr,
                             QB: tl.constexpr, QP: tl.constexpr, GRANULARITY: tl.constexpr,
                             AMAX_ONLY: tl.constexpr):
    # GRANULARITY: 0 = a scale per row, 1 = per QB values, 2 = the given per-tensor scale
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, KP)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols < K)[None, :]
    rows64 = rows.to(tl.int64)                       # row * stride can pass 2**31
    x = tl.load(x_ptr + rows64[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)

    # the rotation: every BS consecutive values of a row times H, as one dot
    hi = tl.arange(0, BS)
    h = tl.load(h_ptr + hi[:, None] * BS + hi[None, :], mask=(hi[:, None] < BS) & (hi[None, :] < BS))
    blocks = tl.reshape(x.to(tl.float32), (BLOCK_R * KP // BS, BS))
    y = tl.reshape(tl.dot(blocks, h, input_precision="ieee"), (BLOCK_R, KP))
    y = y.to(x.dtype).to(tl.float32)                 # the spec's y is in x's dtype (fp16 in, fp16 y)

    if AMAX_ONLY:                                    # pass 1 of the per-tensor dynamic scale
        tl.store(s_ptr + rows, tl.max(tl.abs(y), axis=1), mask=row_ok)
    else:
        if GRANULARITY == 1:                         # a scale per QB values: a 3-D view
            y3 = tl.reshape(y, (BLOCK_R, KP // QB, QB))
            amax = tl.max(tl.abs(y3), axis=2)
            s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
            qb = tl.arange(0, KP // QB)
            tl.store(s_ptr + rows64[:, None] * (K // QB) + qb[None, :], s,
                     mask=row_ok[:, None] & (qb < K // QB)[None, :])
            v = tl.reshape(tl.math.div_rn(y3, s[:, :, None]), (BLOCK_R, KP))
        else:
            if GRANULARITY == 0:                     # a scale per row
                amax = tl.max(tl.abs(y), axis=1)
                s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
                tl.store(s_ptr + rows, s, mask=row_ok)
            else:                                    # every row reads the one given scale
                s = tl.load(given_ptr + 0 * rows, mask=row_ok, other=1.0)
            v = tl.math.div_rn(y, s[:, None])
        v = round_half_to_even(tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0))  # clamp, round
        even, odd = tl.split(tl.reshape(v.to(tl.int32), (BLOCK_R, KP // 2, 2)))
        j = tl.arange(0, KP // 2)
        out = p_ptr + rows64[:, None] * (K // 2) + j[None, :]
        tl.store(out, ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.uint8),
                 mask=row_ok[:, None] & (j < K // 2)[None, :])


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """Launcher: validate, build H, launch one program per BLOCK_R rows (two launches for a
    dynamic per-tensor scale)."""
    validate_hadamard_quantize(x, block_size, granularity, scale)        # the spec's checks
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size {block_size} is not supported by this kernel; it takes "
                         f"{', '.join(map(str, BLOCK_SIZES))}")
    qmax = QMAX[4]
    K, lead = x.shape[-1], tuple(x.shape[:-1])
    R = math.prod(lead)
    x2 = x.reshape(R, K)                             # a view whenever possible (no copy)
    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)
    given = None if scale is None else _as_scale(scale).to(x.device)
    if granularity == "tensor":
        scales = torch.empty((), dtype=torch.float32, device=x.device)
    else:
        scales = torch.empty(lead + ((K // QBLOCK) if granularity == "block" else 1,),
                             dtype=torch.float32, device=x.device)
    if x.numel() == 0:                               # nothing to rotate: scales as the spec
        scales.fill_(1.0 if given is None else float(given))
        return packed, scales

    h = hadamard_matrix(block_size, dtype=torch.float32, device=x.device)
    KP = triton.next_power_of_2(K)
    # at least 16 rows in the dot (a GPU minimum), else about TILE values per program
    BLOCK_R = max(16 * block_size // KP, 1, min(TILE // KP, triton.next_power_of_2(R)))
    grid = (triton.cdiv(R, BLOCK_R),)

    def launch(out_scales, gran, amax_only):        # 8 warps: H (up to 128 x 128 fp32) and the
        hadamard_quantize_kernel[grid](
            x2, h, packed, out_scales, given if given is not None else out_scales,
            R, K, x2.stride(0), x2.stride(1),
            BLOCK_R=BLOCK_R, KP=KP, BS=block_size, QB=QBLOCK, QP=qmax,
            GRANULARITY=gran, AMAX_ONLY=amax_only, num_warps=8)    # tile share the registers

    if granularity == "tensor" and given is None:
        row_max = torch.empty(R, dtype=torch.float32, device=x.device)
        launch(row_max, 0, True)                     # pass 1: max|x H| of each row
        given = absmax_scale(row_max.max(), qmax)    # the spec's max / 7 (1 if all zero)
    if granularity == "tensor":
        scales.copy_(given)
        launch(scales, 2, False)
    else:
        if given is not None:                        # a given scale fills every group's scale
            scales.fill_(float(given))
            launch(scales, 2, False)
        else:
            launch(scales, 0 if granularity == "row" else 1, False)
    return packed, scales

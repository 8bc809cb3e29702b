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
    # x: R rows of K values (row stride stride_r, column stride stride_c), any float dtype;
    # h: the (BS, BS) fp32 Hadamard matrix, row-major; p: R rows of K // 2 packed bytes;
    # s: where the scales go; given: the given per-tensor scale (read only when GRANULARITY is 2).
    # KP: K rounded up to a power of two. QB: values per scale for GRANULARITY 1 (32). QP: the
    # largest code (7).
    # GRANULARITY: 0 = a scale per row, 1 = a scale per QB values, 2 = the given scale.
    # AMAX_ONLY: write only each row's max|y| (pass 1 of a dynamic per-tensor scale).
    # TODO 1: this program's rows: rows = pid * BLOCK_R + tl.arange(0, BLOCK_R) (pid =
    #         tl.program_id(axis=0)); cols = tl.arange(0, KP); row_ok = rows < R;
    #         mask = row_ok[:, None] & (cols < K)[None, :]. rows64 = rows.to(tl.int64): every
    #         offset that multiplies a row goes through rows64 (row * stride can pass 2**31).
    #         Load the (BLOCK_R, KP) tile x from x_ptr + rows64[:, None] * stride_r
    #         + cols[None, :] * stride_c, masked, other=0.0 (the padding stays 0 through the
    #         rotation). Keep x in its own dtype: TODO 3 needs x.dtype.
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, KP)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols < K)[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(x_ptr + rows64[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)
    # TODO 2: load H: hi = tl.arange(0, BS); h from h_ptr + hi[:, None] * BS + hi[None, :],
    #         masked with (hi[:, None] < BS) & (hi[None, :] < BS) (always true, but every load is
    #         masked).
    hi = tl.arange(0, BS)
    h = tl.load(h_ptr + hi[:, None] * BS + hi[None, :], mask=(hi[:, None] < BS) & (hi[None, :] < BS))
    # TODO 3: rotate every BS consecutive values of a row with ONE dot:
    #         blocks = tl.reshape(x.to(tl.float32), (BLOCK_R * KP // BS, BS)) (each row of that
    #         view is one Hadamard block), then y = tl.reshape(tl.dot(blocks, h,
    #         input_precision="ieee"), (BLOCK_R, KP)) ("ieee": true fp32; a GPU's default, tf32,
    #         keeps 10 mantissa bits). The spec's y is in x's dtype (fp16 in, fp16 y): round it,
    #         y = y.to(x.dtype).to(tl.float32) (a no-op for fp32).
    blocks = tl.reshape(x.to(tl.float32), (BLOCK_R * KP // BS, BS))
    y = tl.reshape(tl.dot(blocks, h, input_precision="ieee"), (BLOCK_R, KP))
    y = y.to(x.dtype).to(tl.float32)

    if AMAX_ONLY:
        # TODO 4: pass 1 of a dynamic per-tensor scale: store each row's max|y|,
        #         tl.max(tl.abs(y), axis=1), at s_ptr + rows (masked with row_ok), and nothing
        #         else: this pass writes no codes.
        pass
        tl.store(s_ptr + rows, tl.max(tl.abs(y), axis=1), mask=row_ok)
    else:
        # The scales s and v = y / s depend on GRANULARITY, a tl.constexpr: branch on it with
        # `if GRANULARITY == 1: ... else: ...` (only the branch taken is compiled). Every scale
        # is max / 7 rounded as torch's: s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0),
        # 1.0) (an all-zero group gets 1), and every division is tl.math.div_rn (Triton's `/` is
        # approximate on GPUs).
        # TODO 5: GRANULARITY 1, a scale per QB values, on a 3-D view of y:
        #         y3 = tl.reshape(y, (BLOCK_R, KP // QB, QB)); amax = tl.max(tl.abs(y3), axis=2);
        #         s as above. With qb = tl.arange(0, KP // QB), store s at
        #         s_ptr + rows64[:, None] * (K // QB) + qb[None, :], masked with
        #         row_ok[:, None] & (qb < K // QB)[None, :]. Divide each group by its scale:
        #         v = tl.reshape(tl.math.div_rn(y3, s[:, :, None]), (BLOCK_R, KP)).
        if GRANULARITY == 1:
            y3 = tl.reshape(y, (BLOCK_R, KP // QB, QB))
            amax = tl.max(tl.abs(y3), axis=2)
            s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
            qb = tl.arange(0, KP // QB)
            tl.store(s_ptr + rows64[:, None] * (K // QB) + qb[None, :], s,
                     mask=row_ok[:, None] & (qb < K // QB)[None, :])
            v = tl.reshape(tl.math.div_rn(y3, s[:, :, None]), (BLOCK_R, KP))
        else:
        # TODO 6: GRANULARITY 0, a scale per row: amax = tl.max(tl.abs(y), axis=1); s as above;
        #         store s at s_ptr + rows (masked with row_ok).
            if GRANULARITY == 0:
                amax = tl.max(tl.abs(y), axis=1)
                s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
                tl.store(s_ptr + rows, s, mask=row_ok)
        # TODO 7: GRANULARITY 2, the given scale: every row reads it, as a (BLOCK_R,) vector like
        #         TODO 6's s: s = tl.load(given_ptr + 0 * rows, mask=row_ok, other=1.0).
        #         For GRANULARITY 0 and 2: v = tl.math.div_rn(y, s[:, None]).
            else:
                s = tl.load(given_ptr + 0 * rows, mask=row_ok, other=1.0)
            v = tl.math.div_rn(y, s[:, None])
        pass
        # TODO 8: clamp v to [-QP, QP], then round ties to even with the given helper:
        #         v = round_half_to_even(tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)).
        v = round_half_to_even(tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0))
        # TODO 9: pack: even, odd = tl.split(tl.reshape(v.to(tl.int32), (BLOCK_R, KP // 2, 2)))
        #         gives codes 2j and 2j+1 of each row. With j = tl.arange(0, KP // 2), store the
        #         bytes ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.uint8) at
        #         p_ptr + rows64[:, None] * (K // 2) + j[None, :], masked with
        #         row_ok[:, None] & (j < K // 2)[None, :].
        even, odd = tl.split(tl.reshape(v.to(tl.int32), (BLOCK_R, KP // 2, 2)))
        j = tl.arange(0, KP // 2)
        tl.store(p_ptr + rows64[:, None] * (K // 2) + j[None, :],
                 ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.uint8),
                 mask=row_ok[:, None] & (j < K // 2)[None, :])
        pass


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales): INT4 of x @ BlockDiag(H).
    Validate, build H, launch one program per BLOCK_R rows (two launches for a dynamic
    per-tensor scale)."""
    validate_hadamard_quantize(x, block_size, granularity, scale)        # the spec's checks
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size {block_size} is not supported by this kernel; it takes "
                         f"{', '.join(map(str, BLOCK_SIZES))}")
    qmax = QMAX[4]
    K, lead = x.shape[-1], tuple(x.shape[:-1])
    R = math.prod(lead)
    # TODO 1: x2 = x.reshape(R, K): R rows of K values (a view whenever possible; the kernel
    #         takes its strides, so no copy). Allocate packed = torch.empty(lead + (K // 2,),
    #         dtype=torch.uint8, device=x.device) and the fp32 scales on x.device, of shape
    #         () for "tensor", lead + (1,) for "row", lead + (K // QBLOCK,) for "block".
    #         given = None if scale is None, else _as_scale(scale).to(x.device) (a 0-dim fp32
    #         tensor).
    x2 = x.reshape(R, K)
    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)
    if granularity == "tensor":
        scales_shape = ()
    elif granularity == "row":
        scales_shape = lead + (1,)
    else:
        scales_shape = lead + (K // QBLOCK,)
    scales = torch.empty(scales_shape, dtype=torch.float32, device=x.device)
    given = None if scale is None else _as_scale(scale).to(x.device)
    # TODO 2: an empty x (x.numel() == 0) has nothing to rotate: fill the scales with 1.0, or
    #         with float(given) when a scale is given (as the spec does), and return
    #         (packed, scales).
    if x.numel() == 0:
        scales.fill_(1.0 if given is None else float(given))
        return packed, scales

    # Given: H, the padded row width KP, BLOCK_R rows per program, the grid, and launch().
    h = hadamard_matrix(block_size, dtype=torch.float32, device=x.device)
    KP = triton.next_power_of_2(K)
    # BLOCK_R (a power of two): about TILE values per program, fewer rows when R is small, but
    # never fewer than 16 rows in the dot (BLOCK_R * KP // block_size >= 16). Triton >= 3.6 does
    # not require that: tl.dot's minimum shape (min_dot_size in triton/backends/nvidia/compiler.py)
    # is on K only, here block_size, and small M and N are padded; older Triton asked 16 on
    # every dimension. It only adds masked rows when R is tiny.
    BLOCK_R = max(16 * block_size // KP, 1, min(TILE // KP, triton.next_power_of_2(R)))
    grid = (triton.cdiv(R, BLOCK_R),)

    def launch(out_scales, gran, amax_only):
        """One pass over all R rows: codes into packed, scales (with amax_only, each row's
        max|y|) into out_scales; gran is the kernel's GRANULARITY. `given` is read when launch
        is called (with no given scale, out_scales stands in: GRANULARITY 2 is never used then).
        8 warps: H (up to 128 x 128 fp32) and the tile share the registers."""
        hadamard_quantize_kernel[grid](
            x2, h, packed, out_scales, given if given is not None else out_scales,
            R, K, x2.stride(0), x2.stride(1),
            BLOCK_R=BLOCK_R, KP=KP, BS=block_size, QB=QBLOCK, QP=qmax,
            GRANULARITY=gran, AMAX_ONLY=amax_only, num_warps=8)

    # TODO 3: "tensor" with no given scale (given is None) needs max|y| over the whole tensor,
    #         which no program sees: pass 1, row_max = torch.empty(R, dtype=torch.float32,
    #         device=x.device) and launch(row_max, 0, True); then given = absmax_scale(
    #         row_max.max(), qmax) (the spec's max / 7, 1 if all zero): from here on it is a
    #         given scale.
    if granularity == "tensor" and given is None:
        row_max = torch.empty(R, dtype=torch.float32, device=x.device)
        launch(row_max, 0, True)
        given = absmax_scale(row_max.max(), qmax)
    # TODO 4: with a given scale (any granularity), every scale group gets it:
    #         scales.copy_(given) (a 0-dim tensor fills every entry), then launch(scales, 2, False).
    #         Otherwise launch(scales, 0, False) for "row", launch(scales, 1, False) for "block".
    #         Return (packed, scales).
    pass
    if given is not None:
        scales.copy_(given)
        launch(scales, 2, False)
    elif granularity == "row":
        launch(scales, 0, False)
    else:
        launch(scales, 1, False)
    return packed, scales


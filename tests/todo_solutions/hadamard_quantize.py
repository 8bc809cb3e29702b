import math

import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import divide_rn, mul_div, nibble_rn
from int4lab.spec.hadamard import hadamard_matrix, validate_hadamard_quantize
from int4lab.spec.quantizers import QMAX, _as_scale, absmax_scale

BLOCK_SIZES = (16, 32, 64, 128)
QBLOCK = 32          # the spec's quantization block for granularity "block"
TILE = 4096          # values per program (at least one whole row)
NORM = {b: float(hadamard_matrix(b)[0, 0]) for b in BLOCK_SIZES}   # c = 1 / sqrt(b), as the spec's fp32


@triton.jit
def load_blocks(x_ptr, pid, R, K, stride_r, stride_c,
                BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr, VEC: tl.constexpr):
    """Program pid's BLOCK_R rows of x, as fp32 Hadamard blocks: (NB, BS), NB = BLOCK_R * KP // BS,
    block b being columns (b % (KP // BS)) * BS ... + BS of row pid * BLOCK_R + b // (KP // BS);
    masked loads (other=0.0), rows past R and columns past K read as 0 (given).

    The layout is the point: each thread holds whole blocks, so that the butterflies never need
    a value from another thread. The pointers are built as a (BS // VEC, NB * VEC) tile: along
    its dim 1, runs of VEC (16 bytes) consecutive columns, one run per block, so Triton gives
    each thread one 16-byte run (a vector load) and consecutive threads consecutive blocks; dim 0
    (the run's place in its block) is left to each thread's registers. The permute and reshape
    that follow only rename registers.
    """
    NBR: tl.constexpr = KP // BS                     # blocks per row
    NB: tl.constexpr = BLOCK_R * NBR
    j = tl.arange(0, BS // VEC)[:, None]             # which run of VEC values in the block
    q = tl.arange(0, NB * VEC)[None, :]              # block q // VEC, value q % VEC of the run
    blk = q // VEC
    rows = pid * BLOCK_R + blk // NBR
    cols = (blk % NBR) * BS + j * VEC + q % VEC
    x = tl.load(x_ptr + rows.to(tl.int64) * stride_r + cols * stride_c,
                mask=(rows < R) & (cols < K), other=0.0)
    x = tl.reshape(x.to(tl.float32), (BS // VEC, NB, VEC))
    return tl.reshape(tl.permute(x, (1, 0, 2)), (NB, BS))


@triton.jit
def butterfly(z, H: tl.constexpr, NB: tl.constexpr, BS: tl.constexpr):
    """One stage of the fast Walsh-Hadamard transform on z (NB, BS), each row one block: value i
    with bit H clear (i % (2 H) < H) and value i + H become their sum and their difference."""
    # TODO: view z as (NB, BS // (2 * H), 2, H): dim 2 says whether a value is in the first
    #       (0) or the second (1) half of its run of 2 H values. Move that dim last with
    #       tl.permute(..., (0, 1, 3, 2)), then a, b = tl.split(...) (the two halves, each
    #       (NB, BS // (2 * H), H)). Return tl.join(a + b, a - b) put back the same way:
    #       tl.permute(..., (0, 1, 3, 2)), then tl.reshape to (NB, BS).
    a, b = tl.split(tl.permute(tl.reshape(z, (NB, BS // (2 * H), 2, H)), (0, 1, 3, 2)))
    return tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2)), (NB, BS))


@triton.jit
def hadamard_quantize_kernel(x_ptr, p_ptr, s_ptr, given_ptr, R, K, stride_r, stride_c, c,
                             BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr,
                             LOG_BS: tl.constexpr, VEC: tl.constexpr, QB: tl.constexpr,
                             QP: tl.constexpr, GRANULARITY: tl.constexpr,
                             AMAX_ONLY: tl.constexpr):
    # x: R rows of K values (row stride stride_r, column stride stride_c), any float dtype;
    # p: R rows of K // 2 packed bytes; s: where the scales go; given: the given per-tensor
    # scale (read only when GRANULARITY is 2). c: the entries' size 1 / sqrt(BS), as an fp32.
    # KP: K rounded up to a power of two. BS = 2 ** LOG_BS: the Hadamard block. VEC: values in
    # 16 bytes of x. QB: values per scale for GRANULARITY 1 (32). QP: the largest code (7).
    # GRANULARITY: 0 = a scale per row, 1 = a scale per QB values, 2 = the given scale.
    # AMAX_ONLY: write only each row's max|y| (pass 1 of a dynamic per-tensor scale).
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    rows64 = rows.to(tl.int64)                       # row * stride can pass 2**31
    # TODO 1: z = load_blocks(x_ptr, pid, R, K, stride_r, stride_c, BLOCK_R, KP, BS, VEC) (given,
    #         above): (BLOCK_R * KP // BS, BS), one Hadamard block a row. Rotate every block:
    #         for i in tl.static_range(LOG_BS): z = butterfly(z, 2 ** i, BLOCK_R * KP // BS, BS).
    #         Then z = tl.reshape(z, (BLOCK_R, KP)): row r of z is row r of x @ BlockDiag(S), S
    #         the +-1 Hadamard matrix, so y = x @ BlockDiag(H) is c * z (c is folded into the
    #         scales below: never multiply z by c).
    z = load_blocks(x_ptr, pid, R, K, stride_r, stride_c, BLOCK_R, KP, BS, VEC)
    for i in tl.static_range(LOG_BS):
        z = butterfly(z, 2 ** i, BLOCK_R * KP // BS, BS)
    z = tl.reshape(z, (BLOCK_R, KP))

    if AMAX_ONLY:
        # TODO 2: pass 1 of a dynamic per-tensor scale: store each row's max|y|,
        #         tl.max(tl.abs(z), axis=1) * c, at s_ptr + rows (masked with row_ok), and
        #         nothing else: this pass writes no codes.
        tl.store(s_ptr + rows, tl.max(tl.abs(z), axis=1) * c, mask=row_ok)
    else:
        # The scales s and v = y / s depend on GRANULARITY, a tl.constexpr: branch on it with
        # `if GRANULARITY == 1: ... else:` and, inside that else, `if GRANULARITY == 0: ...
        # else: ...` for 0 and 2 (only the branch taken is compiled). A dynamic scale is
        # max|y| / 7 rounded as torch's: s = tl.where(amax > 0.0, divide_rn(amax, QP * 1.0), 1.0)
        # (divide_rn, given: correctly rounded; an all-zero group gets 1), with amax = max|y| =
        # c * max|z|. Every v is mul_div(z, c, s) (given): z * c / s, with the division done once
        # per scale when s is passed as a column (s[:, None]), two multiplies per value.
        # TODO 3: GRANULARITY 1, a scale per QB values, on a 3-D view of z:
        #         z3 = tl.reshape(z, (BLOCK_R, KP // QB, QB)); amax = tl.max(tl.abs(z3), axis=2) * c;
        #         s as above. With qb = tl.arange(0, KP // QB), store s at
        #         s_ptr + rows64[:, None] * (K // QB) + qb[None, :], masked with
        #         row_ok[:, None] & (qb < K // QB)[None, :]. Then
        #         v = tl.reshape(mul_div(z3, c, s[:, :, None]), (BLOCK_R, KP)).
        # TODO 4: GRANULARITY 0, a scale per row: amax = tl.max(tl.abs(z), axis=1) * c; s as
        #         above; store s at s_ptr + rows (masked with row_ok); v = mul_div(z, c, s[:, None]).
        # TODO 5: GRANULARITY 2, the given scale: every row reads it, as a (BLOCK_R,) vector like
        #         TODO 4's s: s = tl.load(given_ptr + 0 * rows, mask=row_ok, other=1.0);
        #         v = mul_div(z, c, s[:, None]), clamped to [-QP, QP]:
        #         tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0) (values beyond 7 s clip; a
        #         dynamic scale never clips: |y| <= max|y| = 7 s, up to a rounding).
        if GRANULARITY == 1:
            z3 = tl.reshape(z, (BLOCK_R, KP // QB, QB))
            amax = tl.max(tl.abs(z3), axis=2) * c
            s = tl.where(amax > 0.0, divide_rn(amax, QP * 1.0), 1.0)
            qb = tl.arange(0, KP // QB)
            tl.store(s_ptr + rows64[:, None] * (K // QB) + qb[None, :], s,
                     mask=row_ok[:, None] & (qb < K // QB)[None, :])
            v = tl.reshape(mul_div(z3, c, s[:, :, None]), (BLOCK_R, KP))
        else:
            if GRANULARITY == 0:
                amax = tl.max(tl.abs(z), axis=1) * c
                s = tl.where(amax > 0.0, divide_rn(amax, QP * 1.0), 1.0)
                tl.store(s_ptr + rows, s, mask=row_ok)
                v = mul_div(z, c, s[:, None])
            else:
                s = tl.load(given_ptr + 0 * rows, mask=row_ok, other=1.0)
                v = mul_div(z, c, s[:, None])
                v = tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)
        # TODO 6: codes = nibble_rn(v) (given): round half to even, as torch.round, each code in
        #         the low 4 bits of an int32. Pack: even, odd = tl.split(tl.reshape(codes,
        #         (BLOCK_R, KP // 2, 2))) are codes 2j and 2j+1 of each row. With
        #         j = tl.arange(0, KP // 2), store the bytes (even | (odd << 4)).to(tl.uint8) at
        #         p_ptr + rows64[:, None] * (K // 2) + j[None, :], masked with
        #         row_ok[:, None] & (j < K // 2)[None, :].
        codes = nibble_rn(v)
        even, odd = tl.split(tl.reshape(codes, (BLOCK_R, KP // 2, 2)))
        j = tl.arange(0, KP // 2)
        tl.store(p_ptr + rows64[:, None] * (K // 2) + j[None, :], (even | (odd << 4)).to(tl.uint8),
                 mask=row_ok[:, None] & (j < K // 2)[None, :])


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales): INT4 of x @ BlockDiag(H).
    Validate, launch one program per BLOCK_R rows (two launches for a dynamic
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
    # TODO 2: an empty x (x.numel() == 0) has nothing to rotate: fill the scales with 1.0, or
    #         with float(given) when a scale is given (as the spec does), and return
    #         (packed, scales).
    x2 = x.reshape(R, K)
    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)
    if granularity == "tensor":
        shape = ()
    elif granularity == "row":
        shape = lead + (1,)
    else:
        shape = lead + (K // QBLOCK,)
    scales = torch.empty(shape, dtype=torch.float32, device=x.device)
    given = None if scale is None else _as_scale(scale).to(x.device)
    if x.numel() == 0:
        scales.fill_(float(given) if given is not None else 1.0)
        return packed, scales

    # Given: the padded row width KP, BLOCK_R rows per program, the grid, and launch().
    KP = triton.next_power_of_2(K)
    # BLOCK_R (a power of two): about TILE values per program, fewer rows when R is small.
    BLOCK_R = max(1, min(TILE // KP, triton.next_power_of_2(R)))
    grid = (triton.cdiv(R, BLOCK_R),)
    # a thread per Hadamard block (load_blocks), up to 32 warps (1024 threads, the most a
    # program may have): registers scale with the block, not with K
    num_warps = max(1, min(32, BLOCK_R * KP // block_size // 32))

    def launch(out_scales, gran, amax_only):
        """One pass over all R rows: codes into packed, scales (with amax_only, each row's
        max|y|) into out_scales; gran is the kernel's GRANULARITY. `given` is read when launch
        is called (with no given scale, out_scales stands in: GRANULARITY 2 is never used then)."""
        hadamard_quantize_kernel[grid](
            x2, packed, out_scales, given if given is not None else out_scales,
            R, K, x2.stride(0), x2.stride(1), NORM[block_size],
            BLOCK_R=BLOCK_R, KP=KP, BS=block_size, LOG_BS=block_size.bit_length() - 1,
            VEC=16 // x2.element_size(), QB=QBLOCK, QP=qmax,
            GRANULARITY=gran, AMAX_ONLY=amax_only, num_warps=num_warps)

    # TODO 3: "tensor" with no given scale (given is None) needs max|y| over the whole tensor,
    #         which no program sees: pass 1, row_max = torch.empty(R, dtype=torch.float32,
    #         device=x.device) and launch(row_max, 0, True); then given = absmax_scale(
    #         row_max.max(), qmax) (the spec's max / 7, 1 if all zero): from here on it is a
    #         given scale.
    # TODO 4: with a given scale (any granularity), every scale group gets it:
    #         scales.copy_(given) (a 0-dim tensor fills every entry), then launch(scales, 2, False).
    #         Otherwise launch(scales, 0, False) for "row", launch(scales, 1, False) for "block".
    #         Return (packed, scales).
    if granularity == "tensor" and given is None:
        row_max = torch.empty(R, dtype=torch.float32, device=x.device)
        launch(row_max, 0, True)
        given = absmax_scale(row_max.max(), qmax)
    if given is not None:
        scales.copy_(given)
        launch(scales, 2, False)
    elif granularity == "row":
        launch(scales, 0, False)
    else:
        launch(scales, 1, False)
    return packed, scales



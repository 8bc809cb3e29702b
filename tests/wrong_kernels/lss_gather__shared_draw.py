"""lss_gather, WRONG on purpose: one random number per program, shared by all its rows.

tl.rand(seed, pid) gives every row of a block the same u, so whole blocks of rows are kept or
dropped together: each row is still kept with probability p_i, but not independently, and the
variance of the estimate is far larger than it should be.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def keep_kernel(codes_ptr, probs_ptr, keep_ptr, R, W, stride_r, stride_b, seed,
                SAMPLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    in_rows = rows < R
    if SAMPLE:
        p = tl.load(probs_ptr + rows, mask=in_rows, other=0.0)
        keep = tl.rand(seed, tl.program_id(0) + 0 * rows) < p     # BUG: one u for the block
    else:
        nonzero = tl.zeros((BLOCK_R,), dtype=tl.int32)
        for b0 in range(0, W, BLOCK_B):
            cols = b0 + tl.arange(0, BLOCK_B)
            mask = in_rows[:, None] & (cols < W)[None, :]
            x = tl.load(codes_ptr + rows[:, None] * stride_r + cols[None, :] * stride_b, mask=mask, other=0)
            nonzero = tl.maximum(nonzero, tl.max((x != 0).to(tl.int32), axis=1))
        keep = nonzero != 0
    tl.store(keep_ptr + rows, keep.to(tl.int32), mask=in_rows)


@triton.jit
def gather_kernel(src_ptr, dst_ptr, keep_ptr, pos_ptr, R, W, stride_r, stride_b,
                  BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    kept = (rows < R) & (tl.load(keep_ptr + rows, mask=rows < R, other=0) != 0)
    dst_rows = tl.load(pos_ptr + rows, mask=kept, other=1) - 1
    mask = kept[:, None] & (cols < W)[None, :]
    x = tl.load(src_ptr + rows[:, None] * stride_r + cols[None, :] * stride_b, mask=mask, other=0)
    tl.store(dst_ptr + dst_rows[:, None] * W + cols[None, :], x, mask=mask)


def _gather(src, keep, pos, n_kept):
    R, W = src.shape
    dst = torch.empty((n_kept, W), dtype=src.dtype, device=src.device)
    if n_kept and W:
        gather_kernel[(triton.cdiv(R, 32), triton.cdiv(W, 128))](src, dst, keep, pos, R, W,
                                                                 src.stride(0), src.stride(1),
                                                                 BLOCK_R=32, BLOCK_B=128)
    return dst


def lss_gather(codes, probs=None, seed=None, other=None):
    R, W = codes.shape
    keep = torch.zeros(R, dtype=torch.int32, device=codes.device)
    if probs is not None:
        probs = probs.float().contiguous()
    if R:
        keep_kernel[(triton.cdiv(R, 32),)](codes, probs if probs is not None else keep, keep, R, W,
                                           codes.stride(0), codes.stride(1), 0 if seed is None else seed,
                                           SAMPLE=probs is not None, BLOCK_R=32, BLOCK_B=128)
    pos = torch.cumsum(keep, 0)
    index = keep.nonzero().flatten()
    weight = 1.0 / probs[index] if probs is not None else torch.ones(len(index), device=codes.device)
    kept = _gather(codes, keep, pos, len(index))
    kept_other = _gather(other, keep, pos, len(index)) if other is not None else None
    return kept, kept_other, index, weight

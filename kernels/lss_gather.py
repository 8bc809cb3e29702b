"""Leverage score sampling, the gather: keep row i with probability p_i, copy the kept rows.

What it computes (paper sec. 5.2): a backward GEMM is a sum of rank-1 terms, one per row of
the packed gradient codes. Keeping term i with probability p_i and scaling it by 1/p_i gives
an unbiased estimate that costs only the kept rows. Given codes (R, K/2) uint8 (packed INT4
rows), keep-probabilities probs (R,) and a seed, return

    kept        (M, K/2) uint8    the kept rows of codes, in their original order
    kept_other  (M, K2/2) uint8   the same rows of a second packed operand (or None)
    index       (M,) int64        which rows were kept, ascending
    weight      (M,) fp32         1 / p_i, the rescale the caller applies as row scales

With probs=None it is the released kernels' deterministic mode: keep every row whose codes are
not all zero (a zero INT4 code packs to a zero nibble, so a zero row is all-zero bytes),
weight 1.

Layout and pipeline: a gather is an irregular copy, so it runs as three small steps.
  1. lss_keep_kernel: one program per BLOCK_R rows decides keep_i, as int32 0/1. Sampling draws
     u_i = tl.rand(seed, i), one counter-based (Philox) draw per row keyed by the row index, and
     keeps the row when u_i < p_i (so p = 0 is never kept and p = 1 always: u is in [0, 1)).
     The deterministic mode instead walks the row's bytes in BLOCK_B chunks and ORs "any byte
     non-zero" across all of them.
  2. torch.cumsum(keep): an inclusive prefix sum, so kept row i goes to position pos_i - 1 and
     pos_{R-1} is the number of rows kept, which sizes the outputs (the one host sync).
  3. lss_gather_kernel: a 2-D grid of (BLOCK_R rows) x (BLOCK_B bytes) tiles of the source.
     Each program loads its rows' keep flags and positions, then copies only the kept rows
     (the mask is keep & in-bounds, so dropped rows are never read) to their compact position.
     Reading by source row keeps every program's loads contiguous along the bytes and needs no
     inverse index. It runs once for codes and once for other; the first launch also writes
     index and weight (from the programs of the first byte column only, so once per row).
Rows are read through their strides, so a non-contiguous codes needs no copy.

Randomness vs the spec: the spec draws its u with torch.rand, this kernel with tl.rand, so the
same seed keeps different rows. Both keep row i with probability exactly p_i, independently
across rows; the tests check the keep frequencies and the unbiasedness of the reweighted sum.
The deterministic mode matches the spec exactly.
"""
import torch
import triton
import triton.language as tl

from int4lab.spec.gradients import kernel_seed, validate_lss_gather

BLOCK_R = 64      # rows per program
BLOCK_B = 128     # bytes per program and row


@triton.jit
def lss_keep_kernel(codes_ptr, probs_ptr, keep_ptr, R, W, stride_r, stride_b, seed,
                    SAMPLE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    # Step 1: keep_i (int32 0/1) for BLOCK_R rows of codes (R rows of W bytes), one program each.
    # TODO 1: rows = tl.program_id(axis=0) * BLOCK_R + tl.arange(0, BLOCK_R); in_rows = rows < R.
    # TODO 2: if SAMPLE: p = tl.load(probs_ptr + rows, mask=in_rows, other=0.0);
    #         u = tl.rand(seed, rows), one independent draw in [0, 1) per row, keyed by the row
    #         index; keep = u < p (so p = 0 is never kept and p = 1 always).
    # TODO 3: else (probs=None): keep a row when ANY of its W bytes is non-zero. Start from
    #         nonzero = tl.zeros((BLOCK_R,), dtype=tl.int32) and walk the row in chunks:
    #         for b0 in range(0, W, BLOCK_B): cols = b0 + tl.arange(0, BLOCK_B); load the
    #         (BLOCK_R, BLOCK_B) tile at codes_ptr + rows.to(tl.int64)[:, None] * stride_r
    #         + cols[None, :] * stride_b with mask = in_rows[:, None] & (cols < W)[None, :] and
    #         other=0; nonzero = tl.maximum(nonzero, tl.max((x != 0).to(tl.int32), axis=1)).
    #         After the loop, keep = nonzero != 0. (Every chunk counts: a row may be zero only
    #         in its first BLOCK_B bytes.)
    # TODO 4: store keep.to(tl.int32) at keep_ptr + rows (mask=in_rows).
    ### BEGIN SOLUTION
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    in_rows = rows < R
    if SAMPLE:
        p = tl.load(probs_ptr + rows, mask=in_rows, other=0.0)
        u = tl.rand(seed, rows)                 # one independent draw per row, in [0, 1)
        keep = u < p
    else:
        # keep a row when ANY of its bytes is non-zero: look at all of them, block by block
        nonzero = tl.zeros((BLOCK_R,), dtype=tl.int32)
        for b0 in range(0, W, BLOCK_B):
            cols = b0 + tl.arange(0, BLOCK_B)
            mask = in_rows[:, None] & (cols < W)[None, :]
            x = tl.load(codes_ptr + rows.to(tl.int64)[:, None] * stride_r + cols[None, :] * stride_b,
                        mask=mask, other=0)
            nonzero = tl.maximum(nonzero, tl.max((x != 0).to(tl.int32), axis=1))
        keep = nonzero != 0
    tl.store(keep_ptr + rows, keep.to(tl.int32), mask=in_rows)
    ### END SOLUTION


@triton.jit
def lss_gather_kernel(src_ptr, dst_ptr, keep_ptr, pos_ptr, probs_ptr, index_ptr, weight_ptr,
                      R, W, stride_r, stride_b,
                      WRITE_INDEX: tl.constexpr, HAS_PROBS: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    # Step 3: copy the kept rows of src (R, W) to their compact positions in dst (M, W),
    # contiguous. A 2-D grid of (BLOCK_R rows) x (BLOCK_B bytes) tiles of src.
    # GIVEN: this program's rows and bytes, and the offsets of its tile in src (through the
    # strides, int64 rows).
    pid_r = tl.program_id(axis=0)
    pid_b = tl.program_id(axis=1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    in_rows = rows < R
    cols = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    src_offs = rows.to(tl.int64)[:, None] * stride_r + cols[None, :] * stride_b

    # TODO 1: the rows this tile copies: kept = in_rows & (tl.load(keep_ptr + rows,
    #         mask=in_rows, other=0) != 0). Their places in dst: pos_ptr holds the inclusive
    #         prefix sum of keep, the number of kept rows up to and including row i, so kept row i
    #         goes to dst row dst_rows = tl.load(pos_ptr + rows, mask=kept, other=1) - 1.
    # TODO 2: mask = kept[:, None] & (cols < W)[None, :], so a dropped row is never read;
    #         x = tl.load(src_ptr + src_offs, mask=mask, other=0); store x at
    #         dst_ptr + dst_rows[:, None] * W + cols[None, :] (mask=mask).
    # TODO 3: index and weight, written by the launch for codes only (WRITE_INDEX) and there by
    #         the programs of the first byte column only, so once per row: `if WRITE_INDEX:`,
    #         inside it `if pid_b == 0:`, first the weight w: if HAS_PROBS,
    #         p = tl.load(probs_ptr + rows, mask=kept, other=1.0) and w = tl.math.div_rn(1.0, p)
    #         (IEEE division, as torch's 1.0 / p); else w = tl.full((BLOCK_R,), 1.0, dtype=tl.float32).
    #         Then store rows.to(tl.int64) at index_ptr + dst_rows and w at weight_ptr + dst_rows,
    #         both with mask=kept.
    ### BEGIN SOLUTION
    keep = tl.load(keep_ptr + rows, mask=in_rows, other=0) != 0
    kept = in_rows & keep
    dst_rows = tl.load(pos_ptr + rows, mask=kept, other=1) - 1      # inclusive scan -> 0-based

    mask = kept[:, None] & (cols < W)[None, :]
    x = tl.load(src_ptr + src_offs, mask=mask, other=0)
    tl.store(dst_ptr + dst_rows[:, None] * W + cols[None, :], x, mask=mask)

    if WRITE_INDEX:
        if pid_b == 0:                          # one program per row block writes these
            tl.store(index_ptr + dst_rows, rows.to(tl.int64), mask=kept)
            if HAS_PROBS:
                p = tl.load(probs_ptr + rows, mask=kept, other=1.0)
                w = tl.math.div_rn(1.0, p)      # IEEE division, as torch's 1.0 / p
            else:
                w = tl.full((BLOCK_R,), 1.0, dtype=tl.float32)
            tl.store(weight_ptr + dst_rows, w, mask=kept)
    ### END SOLUTION


def _gather(src, keep, pos, n_kept, probs=None, index=None, weight=None):
    """GIVEN: launch lss_gather_kernel to copy the kept rows of src into a new (n_kept, W) tensor
    and return it; with index and weight (tensors of n_kept) it also fills those. A pointer
    the kernel does not use gets `keep` as a placeholder."""
    R, W = src.shape
    dst = torch.empty((n_kept, W), dtype=src.dtype, device=src.device)
    write_index = index is not None
    if n_kept == 0 or (W == 0 and not write_index):
        return dst
    # at least one byte column, so that index and weight are written even when W == 0
    grid = (triton.cdiv(R, BLOCK_R), max(1, triton.cdiv(W, BLOCK_B)))
    lss_gather_kernel[grid](src, dst, keep, pos,
                            probs if probs is not None else keep,
                            index if write_index else keep, weight if write_index else keep,
                            R, W, src.stride(0), src.stride(1),
                            WRITE_INDEX=write_index, HAS_PROBS=probs is not None,
                            BLOCK_R=BLOCK_R, BLOCK_B=BLOCK_B)
    return dst


def lss_gather(codes: torch.Tensor, probs=None, seed=None, other=None):
    """Launcher: validate, draw the keep mask, prefix-sum it, gather -> (kept, kept_other, index, weight)."""
    validate_lss_gather(codes, probs, seed, other)
    R, W = codes.shape
    if probs is not None:
        probs = probs.float().contiguous()       # the spec compares u < probs in fp32 too
    # TODO 1: keep = torch.empty(R, dtype=torch.int32, device=codes.device). When R > 0,
    #         launch lss_keep_kernel on (triton.cdiv(R, BLOCK_R),) programs with (codes, probs,
    #         keep, R, W, codes.stride(0), codes.stride(1), seed), SAMPLE=probs is not None,
    #         BLOCK_R=BLOCK_R, BLOCK_B=BLOCK_B. The seed: kernel_seed(seed) (GIVEN, imported
    #         above: seed=None draws a fresh one). Without probs, pass keep in place of probs (a
    #         pointer the kernel never reads) and 0 as the seed.
    # TODO 2: pos = torch.cumsum(keep, dim=0), the inclusive prefix sum (int64): kept row i goes
    #         to pos[i] - 1. n_kept = int(pos[-1]) if R else 0 (the one host sync: it sizes the
    #         outputs).
    # TODO 3: index = torch.empty(n_kept, dtype=torch.int64, device=codes.device) and weight, the
    #         same in torch.float32; kept = _gather(codes, keep, pos, n_kept, probs, index,
    #         weight) (the given helper: it also fills index and weight); kept_other =
    #         _gather(other, keep, pos, n_kept) if other is not None, else None. Return
    #         (kept, kept_other, index, weight).
    ### BEGIN SOLUTION
    keep = torch.empty(R, dtype=torch.int32, device=codes.device)
    if R:
        lss_keep_kernel[(triton.cdiv(R, BLOCK_R),)](
            codes, probs if probs is not None else keep, keep, R, W,
            codes.stride(0), codes.stride(1), kernel_seed(seed) if probs is not None else 0,
            SAMPLE=probs is not None, BLOCK_R=BLOCK_R, BLOCK_B=BLOCK_B)
    pos = torch.cumsum(keep, dim=0)              # int64: row i goes to pos[i] - 1 when kept
    n_kept = int(pos[-1]) if R else 0
    index = torch.empty(n_kept, dtype=torch.int64, device=codes.device)
    weight = torch.empty(n_kept, dtype=torch.float32, device=codes.device)
    kept = _gather(codes, keep, pos, n_kept, probs, index, weight)
    kept_other = _gather(other, keep, pos, n_kept) if other is not None else None
    return kept, kept_other, index, weight
    ### END SOLUTION

"""The fused Int4Linear: one int4_hq_lss training step in 13 launches, no host sync.

The slots' kernels (quantize, GEMM, bit split, gather) are one operation each, the course's unit.
A layer built from them alone pays for the glue between them: pads, casts, unpack -> transpose ->
repack for the backward GEMMs, the LSQ record and its unpacking in PyTorch, a host sync to size
the sampled rows (`inspect --layer int4_hq_lss --impl triton` counted 241 launches, 17 host
syncs, 117 full passes). This module is the library's answer for the default recipe on its own
kernels: the same mathematics as the spec's layer (int4lab.layers), with the glue folded into
six kernels and three GEMMs, the slot's int4_matmul kernel (autotuned on a GPU: `gemm` below):

  forward   quantize_rows (X)   XH / s_x rounded to INT4 codes (packed along D), LSQ's 2-bit
                                record, each row's sum of squared codes (for LSS) and a per-row
                                scale that is NaN where the row holds a NaN or an Inf
            quantize_rows (W)   the same for W, plus W's codes packed along C (dX's operand)
            int4_matmul         Y = s_x s_w codes(XH) codes(WH)^T; + bias (one PyTorch add)
  backward  grad_columns        db = column sums of dY, and max|dY| per column block
            split_rows          bit splitting of dY into a (2N, C/2) stack [hi; lo] and each
                                stacked row's sum of squared codes
            lss_plan            the two sets of keep-probabilities (paper sec. 5.2) and a
                                fixed-size sample of each (systematic sampling, below)
            lss_operands        the sampled rows for dX; for dW the sampled rows reweighted,
                                requantized per output channel and packed along the sample,
                                and X's sampled rows packed along the sample
            int4_matmul x 2     dX~ (sample x D) and dW~ (C x D), INT4 GEMMs
            lsq_backward (X, W) the STE's mask and LSQ's step-size gradient from the 2-bit
                                record, dX~'s two rows per token added, and the rotation undone
                                (H^T = H): dX and dW in the parameters' dtypes
            sum                 the step-size gradients' per-program partial sums (PyTorch)

What differs from the spec's layer, on purpose:
- Sampling. The spec keeps each stacked row independently with probability p_i (Bernoulli), so
  the number kept is random and sizing the output needs the host. Here the sample has a fixed
  size: systematic sampling (Madow 1949) lays the p_i end to end on [0, sum p), and keeps row i
  where one of the points u, u + 1, u + 2, ... (u uniform in [0, 1)) falls in its interval.
  Each row is kept with probability exactly p_i (p_i <= 1, so at most once), as in the spec, so
  the 1/p_i reweighting is unbiased in the same way; the number kept is floor(sum p - u) + 1,
  at most budget + 1 rows (sum p = budget = N), so every buffer has a shape known in advance.
  What changes is the joint law: two rows are no longer independent (the sizes of the spec's
  and this layer's noise are compared in tests/test_layer_backends.py). The running sums are fp64,
  so an interval's length is p_i to ~1e-12; u is an fp32 draw (2^-24 apart).
- Random draws: a counter-based hash in the kernels (_hash32: the record's 8-bit dither, lo's and
  the requantization's uniforms on 2^16 and 2^24 points) and Philox for the sample's one u,
  where the spec uses torch's generator: the same laws (up to those resolutions), other numbers.
- Order of float sums (column sums, norms, step-size partials): other roundings, ~1e-6 relative;
  XH / s as z * (c / s), one rounding more than the spec's division (a code can differ by one
  where XH / s sits within an ulp of a .5).
- A NaN or Inf in a row of X (or W) makes that row (column) of Y NaN, as nn.Linear does, through
  the per-row scale: s + 0 * sum|row| (the spec's layer adds 0 * max|X| to every entry).
- LSQ's clamp of its step size to >= 1e-8, done by quantize_rows in place (program 0 writes it
  back), instead of a PyTorch clamp_ per step.
Deterministic given the seeds (no atomics).

Layouts: every operand of a GEMM is packed along that GEMM's reduction dim, two codes a byte,
element 2j in the low nibble. X's codes (N, D/2) serve the forward; W's (C, D/2) the forward and
W's transposed codes (D, C/2), written by the same program that rounds W, serve dX = dY W; dW =
dY^T X reduces over the sampled tokens, so both of its operands are made by lss_operands packed
along the sample: A (C, S/2) and B (D, S/2), S the sample's size. Nothing is unpacked,
transposed and repacked by PyTorch. What backward keeps: X's codes and record (0.75 bytes a
value), W's codes twice and its record, two scales and a norm per token.

Only for int4_hq_lss-like recipes (hq_scale "lsq", lsq_grad "2bit", lss "sample") on the
library's kernels, with D a multiple of the Hadamard block and N, C even (int4lab.layers decides;
anything else takes the general path). Not part of a student copy: it is built from the slots'
solutions.
"""
import torch
import triton
import triton.language as tl

from int4lab.kernels.hadamard_quantize import BLOCK_SIZES, NORM, butterfly, load_blocks
from int4lab.kernels.int4_matmul import (
    GPU_CONFIG,
    GPU_CONFIG_FEW_ROWS,
    MAX_K,
    _scale_vector,
    int4_matmul,
    int4_matmul_kernel,
)
from int4lab.kernels.quantize_int4 import round_stochastic
from int4lab.kernels.rounding import divide_rn, nibble_rn
from int4lab.spec.quantizers import QMAX, lsq_grad_scale

__all__ = ["BLOCK_SIZES", "quantize_rows", "grad_columns", "split_rows", "lss_plan", "lss_operands",
           "lsq_backward", "gemm"]

TILE = 4096            # values per program for the row kernels
MIN_SCALE = 1e-8       # LSQ's smallest step size (LSQQuantizer.observe clamps to it)
MAGIC = 12582912.0     # 1.5 * 2**23: v + MAGIC - MAGIC is round(v), ties to even (nibble_rn)


def _rows_per_program(R, KP, at_least=1):
    return max(at_least, min(TILE // KP, triton.next_power_of_2(max(R, 1))))


@triton.jit
def _signed_nibbles(b):
    """(..., W) bytes as int32 -> (..., 2W) int32 codes in [-8, 7], element 2j the low nibble."""
    lo = (b << 28) >> 28
    hi = (b << 24) >> 28
    return tl.reshape(tl.join(lo, hi), (b.shape[0], 2 * b.shape[1]))


@triton.jit
def _pack_pairs(nib, R: tl.constexpr, W: tl.constexpr):
    """(R, 2W) int32 4-bit codes (low 4 bits) -> (R, W) bytes: codes 2j and 2j + 1 of a row."""
    even, odd = tl.split(tl.reshape(nib, (R, W, 2)))
    return ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.uint8)


# ---- random numbers -------------------------------------------------------------------------

@triton.jit
def _hash32(seed, index):
    """32 random bits for each (seed, index): "lowbias32" (C. Wellons, hash-prospector; two
    multiply-xorshift rounds with good avalanche) of the index and the seed mixed by two odd
    constants. Counter-based like Philox (tl.rand): no state, any index in any order, the same
    bits for the same seed; about 8 instructions where a Philox call costs some 60."""
    x = index.to(tl.uint32) * 0x9E3779B1 + (index * 0 + seed).to(tl.uint32) * 0x85EBCA77
    x ^= x >> 16
    x *= 0x7FEB352D
    x ^= x >> 15
    x *= 0x846CA68B
    x ^= x >> 16
    return x


@triton.jit
def _uniform(seed, index):
    """A uniform in [0, 1) on 2^24 points, from the top 24 bits of _hash32."""
    return (_hash32(seed, index) >> 8).to(tl.float32) * 5.9604644775390625e-08     # 2**-24


@triton.jit
def _uniform_pair(seed, index):
    """Two uniforms in [-1/2, 1/2), each on 2^16 points (k + 1/2) / 2^16 - 1/2, from one hash."""
    x = _hash32(seed, index)
    lo = (x & 0xFFFF).to(tl.float32) * 1.52587890625e-05 - (0.5 - 7.62939453125e-06)
    hi = (x >> 16).to(tl.float32) * 1.52587890625e-05 - (0.5 - 7.62939453125e-06)
    return lo, hi


# ---- forward --------------------------------------------------------------------------------

@triton.jit
def _dither(seed, group, R: tl.constexpr, KP: tl.constexpr):
    """1 + k / 256 for 8 random bits k per value of an (R, KP) tile, as fp32 in [1, 2): one
    32-bit hash per group of 4 values (group: their (R, KP // 4) flat indices), its 4 bytes for
    values 4j ... 4j + 3, each put under the exponent of 1.0 (no int -> float conversion).
    The hash is "lowbias32" (C. Wellons, hash-prospector: two multiply-xorshift rounds, good
    avalanche) of the index and the seed: a counter-based generator like Philox (tl.rand), at
    about a tenth of its instructions per random bit, which an 8-bit dither on every value of a
    memory-bound kernel needs (tests/test_kernel_fused_linear.py checks the record unbiased)."""
    x = _hash32(seed, group)
    t = tl.arange(0, 4)
    b = (x[:, :, None] >> (8 * t)[None, None, :].to(tl.uint32)) & 0xFF
    return tl.reshape((b << 15) | 0x3F800000, (R, KP)).to(tl.float32, bitcast=True)


@triton.jit
def quantize_rows_kernel(x_ptr, s_ptr, p_ptr, pt_ptr, rec_ptr, rs_ptr, sq_ptr,
                         R, K, stride_r, stride_c, c, seed,
                         BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr,
                         LOG_BS: tl.constexpr, VEC: tl.constexpr, QP: tl.constexpr,
                         TRANSPOSED: tl.constexpr, FOR_BACKWARD: tl.constexpr):
    """BLOCK_R whole rows of x: rotate (butterflies), v = XH / s with the given LSQ step size s,
    codes = round(clamp(v, -QP, QP)). Writes the codes packed along K (p, (R, K/2)), with
    TRANSPOSED also packed along R (pt, (K, R/2): rows 2i and 2i + 1 make byte i of column k),
    the 2-bit record (rec, (R, K/4), as int4lab.layers.lsq_record: value 4j + t in bits 2t of
    byte j), each row's scale s + 0 * sum|row| (rs: NaN for a row with a NaN or Inf) and each
    row's sum of squared codes (sq). Without FOR_BACKWARD (a call that needs no gradient) only
    the codes along K and the row scales."""
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    rows64 = rows.to(tl.int64)
    z = load_blocks(x_ptr, pid, R, K, stride_r, stride_c, BLOCK_R, KP, BS, VEC)
    for i in tl.static_range(LOG_BS):
        z = butterfly(z, 2 ** i, BLOCK_R * KP // BS, BS)
    z = tl.reshape(z, (BLOCK_R, KP))                              # XH = c * z
    s = tl.maximum(tl.load(s_ptr), 1e-8)                          # LSQ's clamp (MIN_SCALE) ...
    tl.store(s_ptr, s, mask=pid == 0)                             # ... written back, in place
    sv = s + 0.0 * rows                                           # (BLOCK_R,)
    tl.store(rs_ptr + rows, sv + 0.0 * tl.sum(tl.abs(z), axis=1), mask=row_ok)
    # v = z * (c / s), one multiply a value: s >= 1e-8 (clamped above), so c / s is a normal
    # float (mul_div's power-of-two guard is for any scale); within an ulp of XH / s, as mul_div
    v = z * tl.math.div_rn(c, sv)[:, None]
    vc = tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)
    q = (vc + 12582912.0) - 12582912.0                            # round(vc), ties to even: exact
    nib = nibble_rn(vc)
    cols = tl.arange(0, KP)
    col_ok = cols < K
    if FOR_BACKWARD:
        tl.store(sq_ptr + rows, tl.sum(q * q, axis=1), mask=row_ok)  # padding columns hold q = 0

        # the 2-bit record: the remainder r = v - q stochastically rounded to c/3 - 1/2, c in 0..3,
        # c = floor(3 r + 3/2 + u) (E = r, to within the dither's 1/512), or c = 3 above QP and
        # c = 0 below -QP (clipped): the excess v - vc (0 inside) times 2**30 pushes 3 r + ... past
        # 3 or below 0 before the clamp. u = (k + 1/2) / 256 for 8 random bits k, as the spec's
        # record; truncating a float in [0, 3.5] to an int is its floor.
        jr = tl.arange(0, KP // 4)
        f = _dither(seed, rows[:, None] * (K // 4) + jr[None, :], BLOCK_R, KP)      # 1 + k / 256
        t = 3.0 * (v - q) + (f + (0.5 + 1.0 / 512)) + (v - vc) * 1073741824.0
        lvl = tl.minimum(tl.maximum(t, 0.0), 3.5).to(tl.int32)
        a, b = tl.split(tl.reshape(lvl, (BLOCK_R, KP // 4, 2, 2)))    # values 4j + 2t and 4j + 2t + 1
        pair = a + 4 * b                                              # (BLOCK_R, KP // 4, 2)
        p0, p1 = tl.split(pair)
        tl.store(rec_ptr + rows64[:, None] * (K // 4) + jr[None, :], (p0 + 16 * p1).to(tl.uint8),
                 mask=row_ok[:, None] & (jr < K // 4)[None, :])

    j = tl.arange(0, KP // 2)
    tl.store(p_ptr + rows64[:, None] * (K // 2) + j[None, :], _pack_pairs(nib, BLOCK_R, KP // 2),
             mask=row_ok[:, None] & (j < K // 2)[None, :])
    if TRANSPOSED and FOR_BACKWARD:
        # rows 2i and 2i + 1 of this program's tile make byte i of each column: R is even
        t = tl.permute(tl.reshape(nib, (BLOCK_R // 2, 2, KP)), (0, 2, 1))
        er, od = tl.split(t)                                      # (BLOCK_R // 2, KP)
        i = pid * (BLOCK_R // 2) + tl.arange(0, BLOCK_R // 2)
        tl.store(pt_ptr + cols[None, :].to(tl.int64) * (R // 2) + i[:, None],
                 ((er & 0xF) | ((od & 0xF) << 4)).to(tl.uint8),
                 mask=(i < R // 2)[:, None] & col_ok[None, :])


def quantize_rows(x, scale, block_size, seed, transposed=False, for_backward=True):
    """x (R, K) float, scale the LSQ step size (a 0-dim fp32 tensor, clamped in place to >= 1e-8)
    -> (codes (R, K/2) uint8, codes_t (K, R/2) uint8 or None, record (R, K/4) uint8,
        row_scales (R,) fp32, row_sumsq (R,) fp32). K a multiple of block_size; R even for
    transposed. for_backward=False writes the codes and row scales only (the others are None)."""
    R, K = x.shape
    dev = x.device
    KP = triton.next_power_of_2(K)
    BLOCK_R = _rows_per_program(R, KP, 2 if transposed else 1)
    codes = torch.empty((R, K // 2), dtype=torch.uint8, device=dev)
    transposed = transposed and for_backward
    codes_t = torch.empty((K, R // 2), dtype=torch.uint8, device=dev) if transposed else None
    rec = torch.empty((R, K // 4), dtype=torch.uint8, device=dev) if for_backward else None
    rs = torch.empty(R, dtype=torch.float32, device=dev)
    sq = torch.empty(R, dtype=torch.float32, device=dev) if for_backward else None
    num_warps = max(1, min(32, BLOCK_R * KP // block_size // 32))
    quantize_rows_kernel[(triton.cdiv(R, BLOCK_R),)](
        x, scale, codes, codes_t if transposed else codes, rec if for_backward else codes, rs,
        sq if for_backward else rs, R, K, x.stride(0), x.stride(1), NORM[block_size], seed,
        BLOCK_R=BLOCK_R, KP=KP, BS=block_size, LOG_BS=block_size.bit_length() - 1,
        VEC=16 // x.element_size(), QP=QMAX[4], TRANSPOSED=transposed, FOR_BACKWARD=for_backward,
        num_warps=num_warps)
    return codes, codes_t, rec, rs, sq


# ---- backward: dY ---------------------------------------------------------------------------

@triton.jit
def grad_columns_kernel(g_ptr, db_ptr, amax_ptr, N, C, stride_n, stride_c,
                        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Program pid owns BLOCK_C columns of g (N, C) and walks down all N rows: db = the column
    sums (the bias gradient), and the block's max|g| into amax[pid] (bit splitting's scale
    reduces these few partial maxima: no atomics, no zero-filled buffer)."""
    pid = tl.program_id(axis=0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    mx = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        m = (rows < N)[:, None] & col_ok[None, :]
        g = tl.load(g_ptr + rows.to(tl.int64)[:, None] * stride_n + cols[None, :] * stride_c,
                    mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(g, axis=0)
        mx = tl.maximum(mx, tl.max(tl.abs(g), axis=0))
    if HAS_BIAS:
        tl.store(db_ptr + cols, acc, mask=col_ok)
    tl.store(amax_ptr + pid, tl.max(mx, axis=0))


GRAD_BLOCK_N, GRAD_BLOCK_C = 64, 32


def grad_columns(g, bias_dtype=None):
    """g (N, C) -> (db (C,) in bias_dtype or None, per-block max|g| (C / 32 rounded up,) fp32)."""
    N, C = g.shape
    P = triton.cdiv(C, GRAD_BLOCK_C)
    amax = torch.empty(P, dtype=torch.float32, device=g.device)
    db = torch.empty(C, dtype=bias_dtype, device=g.device) if bias_dtype is not None else None
    grad_columns_kernel[(P,)](g, db if db is not None else amax, amax, N, C, g.stride(0), g.stride(1),
                              BLOCK_N=GRAD_BLOCK_N, BLOCK_C=GRAD_BLOCK_C, HAS_BIAS=db is not None)
    return db, amax


@triton.jit
def split_rows_kernel(g_ptr, amax_ptr, P, out_ptr, sc_ptr, sq_ptr, N, C, stride_n, stride_c, seed,
                      BLOCK_R: tl.constexpr, BP: tl.constexpr, PP: tl.constexpr):
    """Bit splitting (kernels/bit_split.py's arithmetic: its scale, and its _split done with
    divide_rn and the 1.5 * 2**23 rounding: the same bits; lo's noise from one _hash32 per output
    byte, 16 bits per value, where bit_split draws Philox) of
    BLOCK_R whole rows of g: hi into row n of out (2N, C/2), lo into row N + n; each stacked
    row's sum of squared codes into sq (2N,); program 0 writes [scale_hi, scale_lo] into sc."""
    pid = tl.program_id(axis=0)
    pr = tl.arange(0, PP)
    amax = tl.max(tl.load(amax_ptr + pr, mask=pr < P, other=0.0), axis=0)
    s = tl.where(amax > 0.0, 196.0 * tl.math.div_rn(1.0, tl.where(amax > 0.0, 2.0 * amax, 1.0)), 1.0)
    inv_s = tl.math.div_rn(1.0, s)
    two = tl.arange(0, 2)
    tl.store(sc_ptr + two, tl.where(two == 0, 14.0 * inv_s, inv_s), mask=two + 2 * pid < 2)   # program 0

    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    cols = tl.arange(0, 2 * BP)
    mask = row_ok[:, None] & (cols < C)[None, :]
    g = tl.load(g_ptr + rows.to(tl.int64)[:, None] * stride_n + cols[None, :] * stride_c,
                mask=mask, other=0.0).to(tl.float32)             # whole rows: vector loads
    byts = tl.arange(0, BP)
    offs = rows.to(tl.int64)[:, None] * (C // 2) + byts[None, :]
    u_even, u_odd = _uniform_pair(seed, offs)                     # one hash per output byte
    u = tl.reshape(tl.join(u_even, u_odd), (BLOCK_R, 2 * BP))
    # _split's arithmetic with the cheap exact steps: divide_rn is v / 14 correctly rounded,
    # and adding and subtracting 1.5 * 2**23 rounds to the nearest integer, ties to even
    v = g * s
    hi = tl.minimum(tl.maximum((divide_rn(v, 14.0) + 12582912.0) - 12582912.0, -6.0), 6.0)
    lo = tl.minimum(tl.maximum(((v - 14.0 * hi) + u + 12582912.0) - 12582912.0, -6.0), 6.0)
    bm = row_ok[:, None] & (byts < C // 2)[None, :]
    tl.store(out_ptr + offs, _pack_pairs(nibble_rn(hi), BLOCK_R, BP), mask=bm)
    tl.store(out_ptr + (rows + N).to(tl.int64)[:, None] * (C // 2) + byts[None, :],
             _pack_pairs(nibble_rn(lo), BLOCK_R, BP), mask=bm)
    tl.store(sq_ptr + rows, tl.sum(hi * hi, axis=1), mask=row_ok)
    tl.store(sq_ptr + N + rows, tl.sum(lo * lo, axis=1), mask=row_ok)


def split_rows(g, amax, seed):
    """g (N, C), C even, and grad_columns' partial maxima -> (stacked (2N, C/2) uint8 [hi; lo],
    scales (2,) fp32 [scale_hi, scale_lo], sumsq (2N,) fp32)."""
    if g.dtype == torch.bfloat16 and g.device.type == "cpu":
        g = g.float()                                   # the interpreter has no bf16
    N, C = g.shape
    BP = triton.next_power_of_2(C // 2)
    BLOCK_R = max(1, min(2048 // BP, triton.next_power_of_2(N)))
    out = torch.empty((2 * N, C // 2), dtype=torch.uint8, device=g.device)
    sc = torch.empty(2, dtype=torch.float32, device=g.device)
    sq = torch.empty(2 * N, dtype=torch.float32, device=g.device)
    split_rows_kernel[(triton.cdiv(N, BLOCK_R),)](
        g, amax, amax.numel(), out, sc, sq, N, C, g.stride(0), g.stride(1), seed,
        BLOCK_R=BLOCK_R, BP=BP, PP=triton.next_power_of_2(amax.numel()))
    return out, sc, sq


# ---- backward: leverage score sampling ------------------------------------------------------

@triton.jit
def _norms(start, sq_ptr, xsq_ptr, s_hi, s_lo, sx, N, weight, BLOCK: tl.constexpr):
    """Norms of stacked rows start ... start + BLOCK (fp64, 0 past 2N): ||g_i|| = sqrt(sumsq_i)
    times s_hi (i < N) or s_lo; where `weight` (the weight gradient's plan) times ||x_(i mod N)||."""
    i = start + tl.arange(0, BLOCK)
    ok = i < 2 * N
    n = tl.sqrt(tl.load(sq_ptr + i, mask=ok, other=0.0)) * tl.where(i < N, s_hi, s_lo)
    xn = tl.sqrt(tl.load(xsq_ptr + i % N, mask=ok & weight, other=1.0)) * tl.where(weight, sx, 1.0)
    return (n * xn).to(tl.float64), i, ok


@triton.jit
def lss_plan_kernel(sq_ptr, sc_ptr, xsq_ptr, sx_ptr, src_ptr, wt_ptr, slot_ptr,
                    N, CAP, budget, seed, BLOCK: tl.constexpr, MAX_ITER: tl.constexpr):
    """Program 0 plans the input gradient's sample (p_i ~ ||g_i||), program 1 the weight
    gradient's (p_i ~ ||g_i|| ||x_i||), over the 2N stacked rows.

    Probabilities (int4lab.spec.gradients.lss_probabilities): p_i = min(1, n_i f) with sum p =
    budget, found by water-filling: f = (budget - k) / (sum of the unclipped n), clip, repeat.
    Once clipped a row stays clipped and f only grows, so "clipped" is n_i f_clip >= 1 for the
    last f that clipped: the state is two numbers, not a mask. A budget >= the non-zero rows
    keeps each of them (p = 1).
    Sample (systematic): row i is kept when a point u + m falls in (P_(i-1), P_i], P the running
    sum of p; it goes to place m. src[m] = i and wt[m] = (s_hi or s_lo) / p_i; places past the
    last point get src 0, wt 0 (a zero row). Program 0 also writes slot[i] = m or -1."""
    pid = tl.program_id(axis=0)
    weight = (tl.arange(0, 1) * 0 + pid) == 1                     # (1,): the weight gradient's plan
    s_hi = tl.load(sc_ptr)
    s_lo = tl.load(sc_ptr + 1)
    sx = tl.load(sx_ptr)
    B = tl.zeros((), dtype=tl.float64) + budget

    total = tl.zeros((), dtype=tl.float64)
    nnz = 0
    for start in range(0, 2 * N, BLOCK):
        n, i, ok = _norms(start, sq_ptr, xsq_ptr, s_hi, s_lo, sx, N, weight, BLOCK)
        total += tl.sum(n, axis=0)
        nnz += tl.sum((n > 0).to(tl.int32), axis=0)
    keep_all = budget >= nnz
    clip = budget < nnz                                           # water-filling is needed
    f = B / tl.where(total > 0, total, 1.0)
    f_clip = tl.zeros((), dtype=tl.float64)                      # nothing clipped yet
    k = 0
    newly = 1
    it = 0
    while (newly > 0) & (it < MAX_ITER) & clip:
        newly = 0
        for start in range(0, 2 * N, BLOCK):
            n, i, ok = _norms(start, sq_ptr, xsq_ptr, s_hi, s_lo, sx, N, weight, BLOCK)
            newly += tl.sum(((n > 0) & (n * f_clip < 1.0) & (n * f >= 1.0)).to(tl.int32), axis=0)
        if newly > 0:
            f_clip = f
            k += newly
            free = tl.zeros((), dtype=tl.float64)
            for start in range(0, 2 * N, BLOCK):
                n, i, ok = _norms(start, sq_ptr, xsq_ptr, s_hi, s_lo, sx, N, weight, BLOCK)
                free += tl.sum(tl.where(n * f_clip < 1.0, n, 0.0), axis=0)
            f = (B - k) / tl.where(free > 0, free, 1.0)
        it += 1

    # u: one uniform per program
    two = tl.arange(0, 2)
    u = tl.sum(tl.where(two == 0, tl.rand(seed, 2 * pid + two), 0.0), axis=0).to(tl.float64)
    carry = tl.zeros((), dtype=tl.float64)
    for start in range(0, 2 * N, BLOCK):
        n, i, ok = _norms(start, sq_ptr, xsq_ptr, s_hi, s_lo, sx, N, weight, BLOCK)
        p = tl.where(keep_all, (n > 0).to(tl.float64), tl.minimum(n * f, 1.0))
        p = tl.where(n > 0, p, 0.0)
        cum = carry + tl.cumsum(p, axis=0)
        m_hi = tl.floor(cum - u)
        m_lo = tl.floor(cum - p - u)
        kept = ok & (p > 0) & (m_hi > m_lo)
        m = m_hi.to(tl.int32)
        place = kept & (m < CAP)
        part = tl.where(i < N, s_hi, s_lo)
        tl.store(src_ptr + pid * CAP + m, i, mask=place)
        tl.store(wt_ptr + pid * CAP + m, (part / tl.where(kept, p, 1.0)).to(tl.float32), mask=place)
        tl.store(slot_ptr + i, tl.where(kept, m, -1), mask=ok & (i * 0 + pid == 0))
        carry = tl.max(cum, axis=0)
    count = tl.maximum(tl.floor(carry - u) + 1.0, 0.0).to(tl.int32)
    for start in range(0, CAP, BLOCK):
        m = start + tl.arange(0, BLOCK)
        rest = (m >= count) & (m < CAP)
        tl.store(src_ptr + pid * CAP + m, 0 * m, mask=rest)
        tl.store(wt_ptr + pid * CAP + m, 0.0 * m, mask=rest)


PLAN_BLOCK = 1024


def sample_size(n_tokens):
    """The fixed number of places of a sample with budget n_tokens: budget + 1 rows at most, even
    (dW packs two sampled rows a byte)."""
    return n_tokens + 2 - n_tokens % 2


def lss_plan(sumsq, scales, x_sumsq, s_x, n_tokens, seed, max_iter=100):
    """-> (src (2, S) int32, wt (2, S) fp32, slot (2N,) int32): row 0 the input gradient's
    sample, row 1 the weight gradient's; S = sample_size(n_tokens)."""
    N = sumsq.numel() // 2
    S = sample_size(n_tokens)
    src = torch.empty((2, S), dtype=torch.int32, device=sumsq.device)
    wt = torch.empty((2, S), dtype=torch.float32, device=sumsq.device)
    slot = torch.empty(2 * N, dtype=torch.int32, device=sumsq.device)
    lss_plan_kernel[(2,)](sumsq, scales, x_sumsq, s_x, src, wt, slot, N, S, n_tokens, seed,
                          BLOCK=PLAN_BLOCK, MAX_ITER=max_iter)
    return src, wt, slot


@triton.jit
def _gather_rows(pid, stacked_ptr, src_ptr, out_ptr, CAP, CB, BLOCK_M: tl.constexpr, BP: tl.constexpr):
    """Sampled rows for dX: out[m] = stacked[src[m]] (packed bytes), BLOCK_M places."""
    m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = m < CAP
    src = tl.load(src_ptr + m, mask=ok, other=0).to(tl.int64)
    j = tl.arange(0, BP)
    msk = ok[:, None] & (j < CB)[None, :]
    b = tl.load(stacked_ptr + src[:, None] * CB + j[None, :], mask=msk, other=0)
    tl.store(out_ptr + m.to(tl.int64)[:, None] * CB + j[None, :], b, mask=msk)


@triton.jit
def _sample_tile(src_ptr, codes_ptr, m0, ch0, CAP, rows_mod, CB,
                 BLOCK_M: tl.constexpr, BLOCK_CH: tl.constexpr):
    """Codes (BLOCK_M, BLOCK_CH) int32 of sampled places m = m0 ... (rows src[m] mod rows_mod of
    a (., CB) packed matrix, channels ch0 ...), and m."""
    m = m0 + tl.arange(0, BLOCK_M)
    ok = m < CAP
    src = tl.load(src_ptr + m, mask=ok, other=0) % rows_mod
    jb = ch0 // 2 + tl.arange(0, BLOCK_CH // 2)
    b = tl.load(codes_ptr + src.to(tl.int64)[:, None] * CB + jb[None, :],
                mask=ok[:, None] & (jb < CB)[None, :], other=0).to(tl.int32)
    return _signed_nibbles(b), m


@triton.jit
def _requantize_columns(pid, stacked_ptr, src_ptr, wt_ptr, a_ptr, sa_ptr, CAP, C, seed,
                        BLOCK_M: tl.constexpr, BLOCK_CH: tl.constexpr):
    """dW's A operand for channels pid * BLOCK_CH ...: the sampled rows' values code * wt
    (1/p_i reweighting times the part's scale), one scale per channel (max / 7) and stochastic
    rounding, as the spec's layer requantizes them; packed along the sample: a (C, CAP/2)."""
    ch0 = pid * BLOCK_CH
    ch = ch0 + tl.arange(0, BLOCK_CH)
    amax = tl.zeros((BLOCK_CH,), dtype=tl.float32)
    for m0 in range(0, CAP, BLOCK_M):
        q, m = _sample_tile(src_ptr, stacked_ptr, m0, ch0, CAP, 2147483647, C // 2, BLOCK_M, BLOCK_CH)
        w = tl.load(wt_ptr + m, mask=m < CAP, other=0.0)
        amax = tl.maximum(amax, tl.max(tl.abs(q.to(tl.float32) * w[:, None]), axis=0))
    s = tl.where(amax > 0.0, divide_rn(amax, 7.0), 1.0)
    tl.store(sa_ptr + ch, s, mask=ch < C)
    for m0 in range(0, CAP, BLOCK_M):
        q, m = _sample_tile(src_ptr, stacked_ptr, m0, ch0, CAP, 2147483647, C // 2, BLOCK_M, BLOCK_CH)
        w = tl.load(wt_ptr + m, mask=m < CAP, other=0.0)
        v = divide_rn(q.to(tl.float32) * w[:, None], s[None, :])
        u = _uniform(seed, ch[None, :] * CAP + m[:, None])
        r = tl.minimum(tl.maximum(round_stochastic(v, u), -7.0), 7.0)
        nib = tl.trans(r.to(tl.int32))                            # (BLOCK_CH, BLOCK_M)
        mb = m0 // 2 + tl.arange(0, BLOCK_M // 2)
        tl.store(a_ptr + ch.to(tl.int64)[:, None] * (CAP // 2) + mb[None, :],
                 _pack_pairs(nib, BLOCK_CH, BLOCK_M // 2),
                 mask=(ch < C)[:, None] & (mb < CAP // 2)[None, :])


@triton.jit
def _transpose_columns(pid, x_ptr, src_ptr, b_ptr, CAP, N, D, BLOCK_M: tl.constexpr, BLOCK_CH: tl.constexpr):
    """dW's B operand for columns pid * BLOCK_CH ... of X: X's codes of the sampled tokens
    (src mod N), packed along the sample: b (D, CAP/2)."""
    d0 = pid * BLOCK_CH
    d = d0 + tl.arange(0, BLOCK_CH)
    for m0 in range(0, CAP, BLOCK_M):
        q, m = _sample_tile(src_ptr, x_ptr, m0, d0, CAP, N, D // 2, BLOCK_M, BLOCK_CH)
        mb = m0 // 2 + tl.arange(0, BLOCK_M // 2)
        tl.store(b_ptr + d.to(tl.int64)[:, None] * (CAP // 2) + mb[None, :],
                 _pack_pairs(tl.trans(q), BLOCK_CH, BLOCK_M // 2),
                 mask=(d < D)[:, None] & (mb < CAP // 2)[None, :])


@triton.jit
def lss_operands_kernel(stacked_ptr, x_ptr, src_ptr, wt_ptr, kept_ptr, a_ptr, sa_ptr, b_ptr,
                        CAP, N, C, D, seed, P0, P1,
                        BLOCK_M: tl.constexpr, BP: tl.constexpr, BLOCK_CH: tl.constexpr):
    """Three jobs in one launch, by program id: [0, P0) gathers dX's sampled rows, [P0, P0 + P1)
    makes dW's A operand, the rest dW's B operand (src/wt row 0 for dX, row 1 for dW)."""
    pid = tl.program_id(axis=0)
    if pid < P0:
        _gather_rows(pid, stacked_ptr, src_ptr, kept_ptr, CAP, C // 2, BLOCK_M, BP)
    elif pid < P0 + P1:
        _requantize_columns(pid - P0, stacked_ptr, src_ptr + CAP, wt_ptr + CAP, a_ptr, sa_ptr, CAP, C, seed,
                            BLOCK_M, BLOCK_CH)
    else:
        _transpose_columns(pid - P0 - P1, x_ptr, src_ptr + CAP, b_ptr, CAP, N, D, BLOCK_M, BLOCK_CH)


OPS_BLOCK_M, OPS_BLOCK_CH = 32, 32


def lss_operands(stacked, x_codes, src, wt, seed, need_dx=True, need_dw=True):
    """-> (kept (S, C/2) for dX, a (C, S/2) and its scales (C,), b (D, S/2) for dW), None where
    not needed."""
    N2, CB = stacked.shape
    N, C, D, S = N2 // 2, 2 * CB, 2 * x_codes.shape[1], src.shape[1]
    dev = stacked.device
    kept = torch.empty((S, CB), dtype=torch.uint8, device=dev) if need_dx else None
    a = torch.empty((C, S // 2), dtype=torch.uint8, device=dev) if need_dw else None
    sa = torch.empty(C, dtype=torch.float32, device=dev) if need_dw else None
    b = torch.empty((D, S // 2), dtype=torch.uint8, device=dev) if need_dw else None
    P0 = triton.cdiv(S, OPS_BLOCK_M) if need_dx else 0
    P1 = triton.cdiv(C, OPS_BLOCK_CH) if need_dw else 0
    P2 = triton.cdiv(D, OPS_BLOCK_CH) if need_dw else 0
    if P0 + P1 + P2:
        dummy = stacked
        lss_operands_kernel[(P0 + P1 + P2,)](
            stacked, x_codes, src, wt, kept if need_dx else dummy, a if need_dw else dummy,
            sa if need_dw else wt, b if need_dw else dummy, S, N, C, D, seed, P0, P1,
            BLOCK_M=OPS_BLOCK_M, BP=triton.next_power_of_2(CB), BLOCK_CH=OPS_BLOCK_CH)
    return kept, a, sa, b


# ---- the GEMMs: the slot's kernel, autotuned on a GPU -------------------------------------

# The slot's launcher runs one fixed config (int4_matmul.GPU_CONFIG, the one `int4lab inspect`
# compiles and the lesson explains). The layer's three GEMMs run the same kernel through
# triton.autotune on a GPU: the first time a shape (M, N, K) comes, each config below is timed
# on it and the fastest is kept for that shape. The slot's own configs come first; the others
# trade tile shape (wider N, fewer rows) and pipeline depth. The interpreter never tunes (there
# is nothing to time): there `gemm` is the slot's launcher.
GEMM_CONFIGS = (GPU_CONFIG, GPU_CONFIG_FEW_ROWS,
                dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
                dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
                dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3),
                dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4))
_TUNERS: dict = {}


def _tuner(configs):
    """int4_matmul_kernel under triton.autotune over `configs`, made once per set of configs."""
    key = tuple(tuple(sorted(cfg.items())) for cfg in configs)
    if key not in _TUNERS:
        meta = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
        _TUNERS[key] = triton.autotune(
            configs=[triton.Config({k: cfg[k] for k in meta}, num_warps=cfg.get("num_warps", 4),
                                   num_stages=cfg.get("num_stages", 1)) for cfg in configs],
            key=["M", "N", "KH"])(int4_matmul_kernel)
    return _TUNERS[key]


def gemm(a, a_scale, b, b_scale, out_dtype=torch.float32, configs=None):
    """int4_matmul (the slot's arguments and result) for the layer: on a GPU its kernel autotuned
    over GEMM_CONFIGS, elsewhere the slot's launcher. `configs`: tune over these (dicts like
    GEMM_CONFIGS) on any device; a single config is launched without timing (a test's way to
    run the autotuned launch in the interpreter)."""
    if (configs is None and a.device.type != "cuda") or 2 * a.shape[1] > MAX_K:
        return int4_matmul(a, a_scale, b, b_scale, out_dtype)
    M, KH = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    sa, stride_sa = _scale_vector(a_scale)
    sb, stride_sb = _scale_vector(b_scale)
    kernel = _tuner(configs or GEMM_CONFIGS)
    kernel[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)](
        a, b, sa, sb, c, M, N, KH, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        stride_sa, stride_sb, c.stride(0), c.stride(1), APPLY_SCALES=out_dtype != torch.int32)
    return c


# ---- backward: LSQ, the STE and the rotation ------------------------------------------------

@triton.jit
def _levels(rb, R: tl.constexpr, KP: tl.constexpr):
    """(R, KP/4) record bytes (int32) -> (R, KP) fp32 p = 2c - 3, value 4j + t from bits 2t of byte j."""
    low = tl.join(rb & 3, (rb >> 2) & 3)                         # values 4j, 4j + 1
    high = tl.join((rb >> 4) & 3, (rb >> 6) & 3)                 # values 4j + 2, 4j + 3
    lv = tl.reshape(tl.permute(tl.join(low, high), (0, 1, 3, 2)), (R, KP))
    return (2 * lv - 3).to(tl.float32)


@triton.jit
def lsq_backward_kernel(d_ptr, slot_ptr, rec_ptr, codes_ptr, out_ptr, part_ptr,
                        R, K, stride_d, c, gscale, P, PMAX,
                        GATHER: tl.constexpr, BLOCK_R: tl.constexpr, KP: tl.constexpr,
                        BS: tl.constexpr, LOG_BS: tl.constexpr, PAD: tl.constexpr):
    """BLOCK_R rows of a GEMM's output d (dL/d(fake-quantized XH), rotated domain): with GATHER,
    row r is d[slot[r]] + d[slot[R + r]] (a token's hi and lo rows, -1 = not sampled). From the
    2-bit record and the codes q: I = min(1, 21 - q p) (0 exactly for the clipped), the STE's
    d * I rotated back (H^T = H: butterflies, then c) into out (R, K) in out's dtype, and this
    program's share of LSQ's step-size gradient, gscale * (sum d (1 - I) q - sum d I p / 6),
    into part[pid] (program 0 zeroes part[P ... PMAX))."""
    pid = tl.program_id(axis=0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    cols = tl.arange(0, KP)
    m = row_ok[:, None] & (cols < K)[None, :]
    if GATHER:
        s1 = tl.load(slot_ptr + rows, mask=row_ok, other=-1).to(tl.int64)
        s2 = tl.load(slot_ptr + R + rows, mask=row_ok, other=-1).to(tl.int64)
        d = tl.load(d_ptr + s1[:, None] * stride_d + cols[None, :], mask=m & (s1 >= 0)[:, None], other=0.0)
        d += tl.load(d_ptr + s2[:, None] * stride_d + cols[None, :], mask=m & (s2 >= 0)[:, None], other=0.0)
    else:
        d = tl.load(d_ptr + rows.to(tl.int64)[:, None] * stride_d + cols[None, :], mask=m, other=0.0)
    rows64 = rows.to(tl.int64)
    jr = tl.arange(0, KP // 4)
    rb = tl.load(rec_ptr + rows64[:, None] * (K // 4) + jr[None, :],
                 mask=row_ok[:, None] & (jr < K // 4)[None, :], other=0).to(tl.int32)
    p = _levels(rb, BLOCK_R, KP)
    jq = tl.arange(0, KP // 2)
    qb = tl.load(codes_ptr + rows64[:, None] * (K // 2) + jq[None, :],
                 mask=row_ok[:, None] & (jq < K // 2)[None, :], other=0).to(tl.int32)
    q = _signed_nibbles(qb).to(tl.float32)
    inside = tl.minimum(21.0 - q * p, 1.0)
    d_in = d * inside
    part = tl.sum(tl.sum((d - d_in) * q - d_in * p / 6.0, axis=1), axis=0) * gscale
    tl.store(part_ptr + pid, part)
    extra = P + tl.arange(0, PAD)
    tl.store(part_ptr + extra, 0.0 * extra, mask=(extra < PMAX) & (extra * 0 + pid == 0))

    z = tl.reshape(d_in, (BLOCK_R * KP // BS, BS))
    for i in tl.static_range(LOG_BS):
        z = butterfly(z, 2 ** i, BLOCK_R * KP // BS, BS)
    z = tl.reshape(z, (BLOCK_R, KP)) * c
    tl.store(out_ptr + rows64[:, None] * K + cols[None, :], z, mask=m)


def backward_programs(R, K):
    """(programs, rows per program) of lsq_backward for an (R, K) gradient."""
    BLOCK_R = _rows_per_program(R, triton.next_power_of_2(K))
    return triton.cdiv(R, BLOCK_R), BLOCK_R


def lsq_backward(d, slot, record, codes, rows, block_size, numel, out_dtype, parts):
    """d (rows or sampled rows, K) fp32 -> the gradient (rows, K) in out_dtype; this call's
    step-size partials go into parts (a row of a (2, PMAX) fp32 buffer, zero past its programs)."""
    K = d.shape[1]
    KP = triton.next_power_of_2(K)
    P, BLOCK_R = backward_programs(rows, K)
    out = torch.empty((rows, K), dtype=out_dtype, device=d.device)
    pmax = parts.numel()
    lsq_backward_kernel[(P,)](
        d, slot if slot is not None else record, record, codes, out, parts,
        rows, K, d.stride(0), NORM[block_size], lsq_grad_scale(numel, QMAX[4]), P, pmax,
        GATHER=slot is not None, BLOCK_R=BLOCK_R, KP=KP, BS=block_size,
        LOG_BS=block_size.bit_length() - 1, PAD=triton.next_power_of_2(max(pmax, 1)),
        num_warps=max(1, min(32, BLOCK_R * KP // block_size // 32)))
    return out

# %% [markdown]
# # Lesson 04 · Outliers and the Hadamard quantizer
#
# Lesson 01 showed that one large value ruins a per-tensor INT4 scale. In a transformer this is
# not a rare accident: a few **outlier channels** of the activations are tens of times larger than
# the rest, in every token. This lesson builds the fix of *Training Transformers with 4-bit
# Integers* (Xi, Li, Chen, Zhu, NeurIPS 2023, sec. 4): the **Hadamard quantizer (HQ)**, which
# rotates the values before quantizing them so that each outlier is spread over a block of
# channels, and rotates back for free inside the matrix product.
#
# **By the end of this lesson you can**
# 1. show, with numbers, how outlier channels wipe out per-tensor INT4;
# 2. build a normalized Sylvester Hadamard matrix and say why `H·H = I`;
# 3. apply the block-diagonal version along the reduction dimension and explain why the rotation
#    cancels in `Y = X Wᵀ`: `Y ≈ s_X s_W · int(XH) · int(WH)ᵀ`;
# 4. choose the block size with the paper's search and weigh error against cost;
# 5. read the paper's ablation (Table 4): per-tensor, per-token and per-channel INT4 all fail;
#    HQ nearly matches full precision;
# 6. write the fused kernel `hadamard_quantize`: rotation as fast Walsh–Hadamard butterflies,
#    quantize and pack in one pass, unlock it and benchmark it.

# %%
# %matplotlib inline
import int4lab
import torch
import triton
import triton.language as tl

from int4lab import runtime
from int4lab.course import l04_hadamard as l04
from int4lab.spec.hadamard import block_hadamard, hadamard_matrix, hq_matmul, search_block_size
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
print("kernels run:", runtime.describe())

# Activations X (tokens x D) and a weight W (C x D); D = 1024 lets us try blocks up to 1024.
# The analysis runs the PyTorch spec on the CPU, so the sizes stay small even on a GPU.
N_TOK, D, C = (64, 1024, 64) if FAST else (256, 1024, 256)

# %% [markdown]
# ## 1. Outlier channels break per-tensor INT4
#
# Activations of trained transformers (BERT, GPT, ViT alike) have a handful of feature dimensions
# that are systematically huge: a few channels out of a thousand, 10 to 100 times the typical
# magnitude, with the same sign in almost every token. `l04.make_activations` imitates that:
# N(0, 1) values, plus 4 channels of about ±50.
#
# A per-tensor scale is `s = max|x| / 7`. The outliers set `max|x|` above 60 (the cell below
# prints it, with `s` and `s/2`), so every value smaller than `s/2`, more than 4, rounds to 0:
# practically all of the normal channels.

# %%
x, outliers = l04.make_activations(N_TOK, D, n_outliers=4, magnitude=50.0)
w = l04.make_weight(C, D)
print("outlier channels:", outliers.tolist())
rep = l04.quantization_report(x, outliers, block_size=1)
print(f"max|x| = {float(x.abs().max()):.1f}, so s = max|x|/7 = {rep['scale']:.2f} and s/2 = {rep['scale'] / 2:.2f}")
print(f"per-tensor INT4: scale {rep['scale']:.2f}, {100 * rep['zero_fraction']:.1f}% of the codes are 0")
print(f"  error of X: {100 * rep['rel_error']:.0f}%   error of the non-outlier channels: "
      f"{100 * rep['bulk_rel_error']:.0f}% (all of their information is gone)")

# %%
l04.channel_figure(x, outliers)

# %% [markdown]
# Finer scales do not rescue it. **Per token** (one scale per row) is no better: the outliers are
# in every token, so every row has a max of about 50. **Per channel** (one scale per column of X)
# would isolate them, but a scale that varies along the reduction dimension `D` cannot be pulled
# out of the sum `Σ_d x_nd w_cd`, so the integer GEMM would not be an integer GEMM any more.
# The paper's ablation (section 6 below) trains with all three and gets nothing.
#
# The idea of HQ: do not fight the outlier, **spread it**. Mix each outlier channel with its
# neighbours by an orthogonal matrix, so that its energy lands on many channels, each carrying
# a modest share.
#
# ## 2. Hadamard matrices
#
# Sylvester's recursion, normalized, as in the paper:
#
# $$ H_0 = [1], \qquad H_k = \frac{1}{\sqrt 2}\begin{bmatrix} H_{k-1} & H_{k-1} \\ H_{k-1} & -H_{k-1} \end{bmatrix}. $$
#
# `H_k` is `2^k × 2^k`, every entry is `±1/√(2^k)`, and it is
# - **symmetric**: `Hᵀ = H` (each block of the recursion is symmetric);
# - **orthogonal**: `H·Hᵀ = I` (by induction: the off-diagonal blocks give `H H − H H = 0`,
#   the diagonal ones `(H H + H H)/2 = I`);
# - so `H·H = I`: applying it twice gives back the input.

# %%
H4 = hadamard_matrix(4)
print("H_2 * 2 =\n", (H4 * 2).int())
H = hadamard_matrix(32)
print("symmetric:", torch.equal(H, H.T), "| max |H H - I| =", float((H @ H - torch.eye(32)).abs().max()))

# %%
l04.hadamard_figure(8)

# %% [markdown]
# Why it spreads outliers: a vector with one spike, `50·e_i`, times `H` is `50 ×` row `i` of `H`:
# all `n` entries are `±50/√n`. The length is kept (orthogonal), but the largest entry drops
# by `√n`. A vector of ordinary N(0, 1) values stays N(0, 1) values after the rotation (an
# orthogonal map keeps a Gaussian cloud round), so the normal channels lose nothing.

# %%
spike = torch.zeros(32)
spike[5] = 50.0
rotated = spike @ H
print("spike:   max", float(spike.abs().max()), " norm", float(spike.norm()))
print("rotated: max", round(float(rotated.abs().max()), 3), "norm", round(float(rotated.norm()), 3),
      " (50/sqrt(32) =", round(50 / 32 ** 0.5, 3), ")")

# %% [markdown]
# ## 3. Block-diagonal H along the reduction dimension
#
# A full `D × D` Hadamard matrix would mix all channels, but multiplying by it costs a whole
# extra matrix product. HQ uses a **block-diagonal** one instead:
# `H = BlockDiag(H_k, …, H_k)` along `D` (which must be a multiple of `2^k`): each group of
# `2^k` consecutive channels is rotated on its own, at `2^k` multiply-adds per value. The paper
# typically uses `2^k = 32`. Its transpose is the same block-diagonal matrix, so it is still
# symmetric and orthogonal.
#
# `int4lab.spec.hadamard.block_hadamard(x, block_size)` computes `x @ BlockDiag(H, …, H)` along the
# last dimension. Below: the channel maxima of `XH` with blocks of 32. Each outlier now fills
# its block of 32 channels: `50/√32 ≈ 8.8` from the outlier itself, plus its own ±10% spread and
# the normal channels mixed in, so the channel maxima of those blocks (printed below, and in the
# plot) come out higher, at about 12. The per-tensor step falls more than fourfold (the `scale`
# of block 1 against block 32 below).

# %%
xh = block_hadamard(x, 32)
print("rotating twice gives x back:", torch.allclose(block_hadamard(xh, 32), x, atol=1e-4))
in_outlier_blocks = torch.isin(torch.arange(D) // 32, outliers // 32)
print(f"channel max of XH in the outliers' blocks: {float(xh.abs().amax(dim=0)[in_outlier_blocks].mean()):.1f}"
      f" on average (50/sqrt(32) = {50 / 32 ** 0.5:.1f})")
for b in (1, 32):
    r = l04.quantization_report(x, outliers, block_size=b)
    print(f"block {b:2d}: scale {r['scale']:5.2f}, codes at 0: {100 * r['zero_fraction']:5.1f}%, "
          f"error of the non-outlier channels {100 * r['bulk_rel_error']:3.0f}%")

# %%
l04.channel_figure(x, outliers, block_size=32)

# %% [markdown]
# ## 4. The Hadamard quantizer: the rotation cancels in the GEMM
#
# A linear layer computes `Y = X Wᵀ`, with X of shape `N × D` (tokens) and W `C × D`. Insert
# `I = H Hᵀ` between the two factors:
#
# $$ Y = X W^\top = X H H^\top W^\top = (XH)(WH)^\top \approx s_X s_W \cdot \mathrm{int}(XH)\,\mathrm{int}(WH)^\top. $$
#
# (the paper's HQ product). Both operands are rotated along `D`, quantized per tensor to INT4, and the
# integer GEMM of lesson 03 multiplies them; no rotation back is needed, because `H Hᵀ` has
# already cancelled. The rotation runs once per operand, `O(N·D·2^k)` work, against the GEMM's
# `O(N·D·C)`: with blocks of 32 it is cheap.
#
# `int4lab.spec.hadamard.hq_matmul(x, w, block_size)` is the spec of this product (block 1 is plain
# per-tensor INT4, no rotation).

# %%
y = x @ w.T
print("(XH)(WH)^T == X W^T up to float rounding:",
      torch.allclose(block_hadamard(x, 32) @ block_hadamard(w, 32).T, y, rtol=1e-4, atol=1e-3))


def rel(a, b):
    return float((a - b).norm() / b.norm())


xc = x.clone()
xc[:, outliers] /= 50.0                        # the same data with the outliers tamed
print(f"per-tensor INT4, no outliers:     error of Y {100 * rel(hq_matmul(xc, w, 1), xc @ w.T):.0f}%  (the price of 4 bits)")
for b in (1, 32, 256):
    print(f"outliers, HQ block {b:4d}:        error of Y {100 * rel(hq_matmul(x, w, b), y):.0f}%")

# %% [markdown]
# The error of `Y` is a blunt measure here: `Y` is dominated by the four outlier channels, which
# per-tensor INT4 represents well; what it loses is everything else, which the error of the
# non-outlier channels (sections 1 and 3) shows plainly. Both improve with the rotation.
#
# ## 5. Which block size? The paper's search
#
# A bigger block spreads an outlier over more channels (its peak falls as `1/√block`), but mixes
# it with more ordinary channels, and costs more. The paper picks `k` (block `2^k`) on the first
# batch: for each candidate, quantize X and W with HQ and keep the block with the lowest
#
# $$ \lVert q(X) - X \rVert \cdot \lVert q(W) - W \rVert . $$
#
# Its code tries blocks 1 to 1024. Left: the relative error of X against the block size; right:
# the search criterion, with the block it picks. Slide `k` (block = `2^k`) and the outlier
# magnitude (1 means no outliers: then no block beats plain per-tensor INT4 by much).

# %%
l04.block_size_figure(k=5, magnitude=50.0, n_tokens=N_TOK, c=C)

# %%
interactive_plot(lambda k, magnitude: l04.block_size_figure(k, magnitude, n_tokens=N_TOK, c=C),
                 k=(0, 10, 1, 5), magnitude=(1.0, 100.0, 1.0, 50.0));

# %% [markdown]
# The same search with the library's function, which returns the best block and every candidate's
# error product:

# %%
best, errors = search_block_size(x, w)
print("block size:", "  ".join(f"{b:>6}" for b in errors))
print("product:   ", "  ".join(f"{e:6.0f}" for e in errors.values()))
print("the search picks block", best)

# %% [markdown]
# On this synthetic data the product is smallest at a large block (the line above prints which:
# with these sizes it lies in the hundreds of channels or at 1024), but block 32 already cuts the
# error of the non-outlier channels from 100% to under 60% (section 3's output). Real layers are
# less tidy (outliers of varied size, weights with outliers
# of their own), and the cost grows with the block: the kernel of this lesson rotates with
# `log2(block)` additions per value (5 at 32) and keeps a whole block in each thread's registers
# (32 values at 32, 128 at 128), so it supports blocks 16 to 128. That is why 32 is the paper's
# usual choice.
#
# ## 6. What it buys in training: the paper's ablation
#
# The paper fine-tunes BERT on CoLA with different 4-bit forward quantizers (Table 4). Every
# fixed-scale scheme, per tensor, per token, per channel and SmoothQuant (which moves part of the
# activations' range into the weights), scores 0: training fails. LSQ, a learned per-tensor
# scale that is allowed to clip the outliers, reaches 37.3. HQ reaches 54.2, against about 56.9 in
# full precision.

# %%
l04.ablation_figure()

# %% [markdown]
# ### Check your understanding (HQ)
#
# 1. Compute `H_1` and check `H_1 · H_1 = I` by hand.
# 2. A row of 32 values is all zero except one value of 64. What does it become after `H_5`?
#    What is the per-tensor INT4 scale before and after?
# 3. Why may we quantize `XH` and `WH` instead of `X` and `W` without rotating the product
#    back? Would it still work with `H` applied along the token dimension of X?
# 4. Why not a per-channel scale for X instead of all this?
# 5. When does a bigger block stop helping?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. `H_1 = [[1, 1], [1, −1]] / √2`. `H_1·H_1 = [[1+1, 1−1], [1−1, 1+1]] / 2 = I`.
# 2. 64 times one row of `H_5`: 32 values of `±64/√32 ≈ ±11.3`. Scale before: `64/7 ≈ 9.1`;
#    after: `11.3/7 ≈ 1.6`, a step `√32 ≈ 5.7` times finer for every other value that shares
#    the scale.
# 3. `(XH)(WH)ᵀ = X H Hᵀ Wᵀ = X Wᵀ` because `H Hᵀ = I`: the rotation sits on the reduction
#    dimension `D`, shared by both operands. Along the token dimension it would not cancel: the
#    tokens of X are the rows of Y, so `Y` would come out rotated (`Hᵀ Y`) and need undoing.
# 4. A scale per channel of X varies along the reduction dimension `D`: `Σ_d s_d q_nd w_cd` is not
#    a scale times an integer sum, so the GEMM cannot run on integers. Scales must be per row of X
#    (token) and per row of W (output channel), or per tensor.
# 5. When the outlier's share per channel (`magnitude/√block`) falls below the ordinary values'
#    range: the step is then set by the normal values and there is nothing left to gain, while
#    mixing more channels keeps adding cost (and, in the plot, a little error back).

# %% [markdown]
# ## 7. The kernel: `hadamard_quantize`
#
# **The contract** (slot `hadamard_quantize`, spec `int4lab.spec.hadamard.hadamard_quantize_spec`):
# `hadamard_quantize(x, block_size=32, granularity="row", scale=None) -> (packed, scales)`:
# rotate the last dimension of `x` with `BlockDiag(H, …, H)`, then quantize the result to INT4
# (round to nearest, ties to even, codes in [−7, 7]) and pack two codes per byte, exactly as
# `quantize_int4` of lesson 02 would do with `x @ BlockDiag(H)`. Scales: one per row (`"row"`,
# shape `(…, 1)`), one per 32 rotated values (`"block"`, `(…, K/32)`), or one per tensor
# (`"tensor"`, 0-dim: `max|xH|/7`, or the given `scale`, as LSQ's learned one).
#
# **Why fuse?** `XH` is never needed in memory: the kernel reads `x` once and writes the packed
# codes once, a quarter of the bytes of an fp16 `XH`. Then the kernel is memory-bound only if
# it computes little: at 2.5 bytes per bf16 value an H200 allows about 16 instructions per
# value (lesson 02), for the rotation, the scale, the division, the rounding and the packing.
#
# **The rotation: butterflies, not a matrix product.** `H = c·S` with `S` the ±1 Sylvester matrix
# and `c = 1/√block`, and `S_{k+1} = [[S_k, S_k], [S_k, −S_k]]` splits `x·S` into stages: in the
# stage of distance `h` (1, 2, 4, …, block/2), value `i` of a block with bit `h` clear
# (`i mod 2h < h`) and value `i + h` become their **sum** and their **difference**. After
# `log2(block)` stages the block is `x·S` exactly as the matrix product would make it (the fast
# Walsh–Hadamard transform): 5 additions per value for a block of 32, where an fp32 `tl.dot`
# with `H` costs 32 multiply-adds per value (its tensor-core forms round the inputs: to bf16 or
# to TF32, 10 mantissa bits, the default for an fp32 `tl.dot` on NVIDIA GPUs).
#
# **The plan** (the library's kernel follows it; `int4lab.reveal("hadamard_quantize")` prints it):
# - One program owns `BLOCK_R` **whole rows** (`KP` = `K` rounded up to a power of two, padding
#   masked to 0). The given `load_blocks` loads them as `(BLOCK_R·KP/block, block)`, one
#   Hadamard block per row of the tile, in fp32, and **each thread holds whole blocks**: the
#   butterflies then never need a value from another thread (16-byte vector loads, one run of a
#   block each).
# - **`butterfly(z, H, …)`**, one stage, is yours: `tl.reshape` to `(NB, block/(2H), 2, H)`
#   exposes the "bit `H`" as a dimension of size 2; `tl.permute` moves it last, `tl.split`
#   gives the two halves `a` and `b`, `tl.join(a + b, a − b)` and the inverse permute and
#   reshape put the stage's result back in place. The kernel runs it for `H = 1, 2, …, block/2`
#   (`tl.static_range`: unrolled at compile time).
# - **`c` goes into the scales**, never into the values: the rotated row is `y = c·z`, so
#   `max|y| = c·max|z|` and `y/s = z·(c/s)`. The given `mul_div(z, c, s)` computes `z·c/s` with
#   one division per scale (pass `s[:, None]`) and two multiplies per value.
# - Holding whole rotated rows, the program knows each row's max before writing a code:
#   the per-row and per-32 scales cost no second pass.
# - **Per tensor** with no given scale needs the max over all rows, which no program sees: two
#   launches, the first storing only each row's `max|xH|`, then torch takes the max and divides
#   by 7, then the second quantizes with it.
# - Quantize and pack as in lesson 02, with its given helpers: `divide_rn` for `max/7` (as
#   torch), `nibble_rn` for the codes (round half to even, as `torch.round`), then
#   `tl.split(tl.reshape(codes, (BLOCK_R, KP/2, 2)))` gives codes `2j` and `2j+1`.
#
# **Given and yours.** The cell below gives the module's constants (`NORM[block]` is `c` as the
# spec's fp32), `load_blocks`, the kernel's signature and its `if AMAX_ONLY: … else: …` frame, and
# in the launcher the validation, `KP`, `BLOCK_R`, the grid, the number of warps (a thread per
# block) and `launch(out_scales, gran, amax_only)`, which runs the kernel once over all rows. You
# write `butterfly`, the kernel's body, TODO 1 to 6 (the rotation, pass 1's row maxima, the three
# kinds of scale, the rounding and the packing), and in the launcher the outputs with the empty
# case (TODO 1 and 2) and the one or two launches (TODO 3 and 4).
#
# Your kernel adds in another order than torch's matmul and computes `z·(c/s)` where the spec
# computes `y/s`, so `y/s` may differ from the spec's in the last bits; and the spec rounds `xH` to
# the input's dtype before quantizing (fp16 in, fp16 `xH`) while the kernel quantizes the fp32
# rotation. The checks allow a code to differ by 1 only where `xH/s` is within that rounding of a
# `.5` boundary, and compare bit for bit on inputs whose rotation is exact.

# %% tags=["exercise"] int4lab={"slot": "hadamard_quantize"}
# %%exercise hadamard_quantize
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
    pass

    if AMAX_ONLY:
        # TODO 2: pass 1 of a dynamic per-tensor scale: store each row's max|y|,
        #         tl.max(tl.abs(z), axis=1) * c, at s_ptr + rows (masked with row_ok), and
        #         nothing else: this pass writes no codes.
        pass
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
        pass
        # TODO 6: codes = nibble_rn(v) (given): round half to even, as torch.round, each code in
        #         the low 4 bits of an int32. Pack: even, odd = tl.split(tl.reshape(codes,
        #         (BLOCK_R, KP // 2, 2))) are codes 2j and 2j+1 of each row. With
        #         j = tl.arange(0, KP // 2), store the bytes (even | (odd << 4)).to(tl.uint8) at
        #         p_ptr + rows64[:, None] * (K // 2) + j[None, :], masked with
        #         row_ok[:, None] & (j < K // 2)[None, :].
        pass


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
    raise NotImplementedError("hadamard_quantize: replace this line with the code its TODOs ask for")

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
    pass


# %%
report = int4lab.unlock("hadamard_quantize")

# %% [markdown]
# ## 8. HQ with the slots
#
# The forward product of an HQ linear layer, with the slots of the course: `hadamard_quantize`
# (yours if unlocked) rotates and quantizes both operands per tensor, `int4_matmul` (lesson 03)
# multiplies the packed codes and applies the two scales. It matches the spec `hq_matmul`.

# %%
xd, wd = x.to(runtime.DEVICE), w.to(runtime.DEVICE)   # where the kernels run
px, sx = int4lab.hadamard_quantize(xd, 32, granularity="tensor")
print("hadamard_quantize ran:", int4lab.last_ran("hadamard_quantize"))
pw, sw = int4lab.hadamard_quantize(wd, 32, granularity="tensor")
y_hq = int4lab.int4_matmul(px, sx, pw, sw).cpu()
print("int4_matmul ran:      ", int4lab.last_ran("int4_matmul"))
print(f"X {tuple(x.shape)} fp32 {x.numel() * 4:,} bytes -> packed {tuple(px.shape)} {px.numel():,} bytes")
print(f"differs from the spec hq_matmul by {rel(y_hq, hq_matmul(x, w, 32)):.1e} (relative); "
      f"error against X W^T: {100 * rel(y_hq, y):.0f}%")

# %% [markdown]
# ## 9. Benchmark
#
# On a GPU, `bench` times your kernel, the library's and a bf16 copy (`torch.clone`) in GB/s:
# the kernel reads 2 bytes (bf16) and writes half a byte per value, so a good one approaches the
# copy's bandwidth, the butterflies hiding under the memory traffic. On a CPU it checks
# correctness only: interpreter times measure Python. Without a GPU,
# `int4lab inspect hadamard_quantize` compiles the kernel for an H200 and estimates from the
# compiled code whether it would wait on memory or on its instructions (an estimate, not a
# measurement).

# %%
result = int4lab.bench("hadamard_quantize")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding (the kernel)
#
# 1. Why does the kernel rotate with butterflies rather than a `tl.dot` with `H`, and why must
#    each thread hold whole blocks?
# 2. The per-row scale needs no second pass, the per-tensor one does. Why?
# 3. Why is it safe to fold `c = 1/√block` into the scales instead of multiplying every value?
# 4. The checks allow some codes to differ by 1 from the spec. Which ones, and why is that fair?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. The kernel is memory-bound only below about 16 instructions per value. An fp32 `tl.dot`
#    with `H` costs `block` multiply-adds per value (32 at block 32); its tensor-core forms round
#    `x` to bf16 or TF32 (10 mantissa bits), about 1e-3 relative, enough to move many codes and
#    the fp32 scales beyond the checks. The butterflies are exact sums and differences, `log2
#    (block)` per value. A stage combines values `h` apart in a block: if a block were spread
#    over threads, each stage would exchange values between them (shuffles or shared memory),
#    instructions that a thread holding its whole block never needs.
# 2. A program holds whole rows, so it sees each row's max before writing any code. The tensor's
#    max depends on every row, held by every program: it must be known before the first code is
#    written, hence a first launch for the row maxima and a second to quantize.
# 3. `c` is the same positive number for every value: `max|c·z| = c·max|z|`, and
#    `c·z / s = z·(c/s)`. One multiply per row replaces one per value; the results differ only
#    by where the fp32 roundings fall, which the checks allow (question 4).
# 4. Codes where the spec's `xH/s` lies within float rounding of `k + 0.5`: the kernel adds in
#    another order than torch's matmul and divides as `z·(c/s)`, so its `xH/s` can differ in the
#    last bits (and, for fp16 or bf16 inputs, by the spec's rounding of `xH` to that dtype, which
#    the kernel skips) and round the other way. Both answers are right to within that rounding;
#    anywhere else they must agree, and where the rotation is exact they agree bit for bit.

# %% [markdown]
# ## Summary
#
# - A few outlier channels, present in every token, set a per-tensor INT4 step so large that all
#   other channels round to zero; per-token scales do not help and per-channel scales break the
#   integer GEMM. In the paper's ablation all of them fail (CoLA 0).
# - A normalized Hadamard matrix is symmetric and orthogonal (`H·H = I`); a block-diagonal one
#   along the reduction dimension spreads each outlier over its block, and cancels in the GEMM:
#   `Y ≈ s_X s_W · int(XH) · int(WH)ᵀ`.
# - The block size trades error against cost; the paper searches it by `‖q(X)−X‖·‖q(W)−W‖` and
#   typically uses 32.
# - You wrote `hadamard_quantize`: the rotation as fast Walsh–Hadamard butterflies on blocks held
#   in registers, fused with quantize and pack, a few instructions per value.
#
# **Next: lesson 05, an INT4 linear layer.** A `torch.autograd.Function` whose forward is HQ and
# whose backward passes gradients straight through the rounding: `int4lab.layers.Int4Linear`,
# with the slots you have unlocked so far.

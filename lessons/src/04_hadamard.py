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
# 6. write the fused kernel `hadamard_quantize`: rotation as a `tl.dot`, quantize and pack in one
#    pass, unlock it and benchmark it.

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
# of their own), and the cost grows with the block: a fused kernel rotates a tile with one small
# `tl.dot` against a `block × block` matrix, cheap at 32, and the kernel of this lesson supports
# blocks 16 to 128. That is why 32 is the paper's usual choice.
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
# codes once, a quarter of the bytes of an fp16 `XH`.
#
# **The plan** (the library's kernel follows it; `int4lab.reveal("hadamard_quantize")` prints it):
# - One program owns `BLOCK_R` **whole rows**, loaded as a `(BLOCK_R, KP)` fp32 tile (`KP` = `K`
#   rounded up to a power of two, masked loads with `other=0.0`).
# - **The rotation is one `tl.dot`.** Reshape the tile to `(BLOCK_R·KP/block, block)`: each row
#   of that view is one Hadamard block, so `tl.dot(view, H)` rotates them all. `H` is built by
#   the launcher (`hadamard_matrix(block_size)`), passed as a pointer, loaded once per program.
#   Use `input_precision="ieee"`: on a GPU the default for fp32 is TF32, with 10 mantissa bits.
#   Triton's size rule for a dot is on its reduction dimension K, here the block: an fp32 dot
#   needs K ≥ 16 on Triton 3.6 (K ≥ 8 on 3.9), while M and N may be as small as 1 (Triton pads
#   them). So the checks use blocks 16 to 128.
# - Holding whole rotated rows, the program knows each row's max before writing a code:
#   the per-row and per-32 scales cost no second pass.
# - **Per tensor** with no given scale needs the max over all rows, which no program sees: two
#   launches, the first storing only each row's `max|xH|`, then torch takes the max and divides
#   by 7, then the second quantizes with it.
# - Quantize as in lesson 02 (`tl.math.div_rn`, clamp, round half to even), then pack as in
#   lesson 01: `tl.split(tl.reshape(v, (BLOCK_R, KP/2, 2)))` gives codes `2j` and `2j+1`.
#
# Your kernel's sums run in another order than torch's matmul, so `xH` may differ from the spec's
# in the last bit: the checks allow a code to differ by 1 only where `xH/s` is within float
# rounding of a `.5` boundary, and compare bit for bit on inputs whose rotation is exact.

# %% tags=["exercise"] int4lab={"slot": "hadamard_quantize"}
# %%exercise hadamard_quantize
import math

import torch
import triton
import triton.language as tl

from int4lab.spec.hadamard import hadamard_matrix
from int4lab.spec.quantizers import absmax_scale


@triton.jit
def round_half_to_even(v):
    """torch.round: round to nearest, exact ties to the even neighbour (this stub gives it to
    you; you wrote one in lesson 02)."""
    f = tl.floor(v)
    d = v - f
    f_is_odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & f_is_odd), f + 1.0, f)


@triton.jit
def hadamard_quantize_kernel(x_ptr, h_ptr, p_ptr, s_ptr, given_ptr, R, K, stride_r, stride_c,
                             BLOCK_R: tl.constexpr, KP: tl.constexpr, BS: tl.constexpr,
                             GRANULARITY: tl.constexpr, AMAX_ONLY: tl.constexpr):
    # x: R rows of K values (strides stride_r, stride_c); h: the (BS, BS) fp32 Hadamard matrix;
    # p: R rows of K // 2 packed bytes; s: where the scales go; given: a given per-tensor scale.
    # GRANULARITY: 0 = a scale per row, 1 = a scale per 32 rotated values, 2 = the given scale.
    # AMAX_ONLY: store only each row's max|x H| at s_ptr + row (pass 1 of a per-tensor scale).
    # TODO 1: this program's BLOCK_R rows and the KP columns; a mask (row < R and column < K);
    #         load the (BLOCK_R, KP) tile with the strides (other=0.0) and convert it to fp32.
    # TODO 2: load H (row-major, BS x BS).
    # TODO 3: rotate: tl.reshape the tile to (BLOCK_R * KP // BS, BS), tl.dot it with H
    #         (input_precision="ieee"), reshape back to (BLOCK_R, KP). The spec rotates in x's
    #         dtype: round y to x's dtype and back to fp32 (a no-op for fp32 input).
    # TODO 4: if AMAX_ONLY: store max|y| of each row (masked), and do nothing else (use else:).
    # TODO 5: the scales: per row, s = max|y| / 7 (tl.math.div_rn), 1.0 where the max is 0;
    #         per 32 values, the same on a (BLOCK_R, KP // 32, 32) view of y; or load the given
    #         scale (every row reads given_ptr). Store the scales you computed (masked).
    # TODO 6: v = y / s (tl.math.div_rn), clamp to [-7, 7], round_half_to_even.
    # TODO 7: even, odd = tl.split(tl.reshape(v.to(tl.int32), (BLOCK_R, KP // 2, 2)));
    #         byte = (even & 0xF) | ((odd & 0xF) << 4); store it as tl.uint8 at
    #         p_ptr + row * (K // 2) + j, masked (row < R, j < K // 2).
    pass


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales): INT4 of x @ BlockDiag(H)."""
    # TODO 1: R rows of K values: x2 = x.reshape(R, K). Allocate packed (*x.shape[:-1], K // 2)
    #         uint8 and the fp32 scales: () for "tensor", (*x.shape[:-1], 1) for "row",
    #         (*x.shape[:-1], K // 32) for "block".
    # TODO 2: an empty x: fill the scales with 1.0 (or the given scale) and return.
    # TODO 3: h = hadamard_matrix(block_size, device=x.device); KP = triton.next_power_of_2(K);
    #         BLOCK_R rows per program: a power of two, a few thousand values per program
    #         (Triton's only size rule for the dot is on K = block_size, 16 or more here);
    #         grid = (triton.cdiv(R, BLOCK_R),).
    # TODO 4: "tensor" with scale=None: launch with AMAX_ONLY into a buffer of R row maxima,
    #         then scale = absmax_scale(buffer.max(), 7) (the spec's max / 7) and go on as with
    #         a given scale.
    # TODO 5: a given scale: every scale group gets it (scales.fill_ / copy_), GRANULARITY 2.
    #         Otherwise GRANULARITY 0 ("row") or 1 ("block"). Launch and return (packed, scales).
    raise NotImplementedError("hadamard_quantize: fill in the kernel and the launcher above")


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
# copy's bandwidth, the rotation's small dots hiding under the memory traffic. On a CPU it
# checks correctness only: interpreter times measure Python.

# %%
result = int4lab.bench("hadamard_quantize")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding (the kernel)
#
# 1. Why does the kernel rotate with a `tl.dot` on a reshaped tile rather than a loop over blocks?
# 2. The per-row scale needs no second pass, the per-tensor one does. Why?
# 3. What would go wrong with `input_precision="tf32"` (the GPU default for fp32 dots)?
# 4. The checks allow some codes to differ by 1 from the spec. Which ones, and why is that fair?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. The rotation of every block is the same small matrix product, so one `tl.dot` of the
#    `(rows·KP/block, block)` view with `H` does them all at once, on tensor cores on a GPU;
#    a Python-level loop over blocks would issue many small dots one after another instead.
# 2. A program holds whole rows, so it sees each row's max before writing any code. The tensor's
#    max depends on every row, held by every program: it must be known before the first code is
#    written, hence a first launch for the row maxima and a second to quantize.
# 3. TF32 keeps 10 mantissa bits: `xH` would be off by about 1e-3 relative, enough to move many
#    codes across a rounding boundary and the scales beyond the checks' tolerance.
# 4. Codes where the spec's `xH/s` lies within float rounding of `k + 0.5`: the kernel sums the
#    products in another order than torch, so `xH` can differ in its last bit and round the other
#    way. Both answers are right to within the precision of fp32; anywhere else they must agree.

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
# - You wrote `hadamard_quantize`: rotation as a `tl.dot` on a reshaped tile, fused with quantize
#   and pack.
#
# **Next: lesson 05, an INT4 linear layer.** A `torch.autograd.Function` whose forward is HQ and
# whose backward passes gradients straight through the rounding: `int4lab.layers.Int4Linear`,
# with the slots you have unlocked so far.

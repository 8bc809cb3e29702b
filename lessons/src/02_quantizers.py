# %% [markdown]
# # Lesson 02 · Quantizers
#
# Lesson 01 turned real numbers into INT4 codes with one scale and round-to-nearest. That is a
# *quantizer*, and its three design choices decide whether 4-bit training works at all:
#
# - **which values share a scale** (the whole tensor, a row, or a block of a row);
# - **how to round** (to the nearest level, or stochastically);
# - **where the scale comes from** (the largest value, or *learned* like a weight: LSQ).
#
# The method of this course, *Training Transformers with 4-bit Integers* (Xi, Li, Chen, Zhu,
# NeurIPS 2023), uses one learned scale per tensor (LSQ) in the forward pass and stochastic
# rounding for the gradients. This lesson shows why, with plots you can play with, and ends with
# a kernel that quantizes and packs in one pass: the first half of every INT4 layer.
#
# **By the end of this lesson you can**
# 1. quantize with one scale per tensor, per row or per block, and say what each costs in
#    storage and what one outlier does to each;
# 2. explain why round-to-nearest is biased (worst for values under half a step) and why
#    stochastic rounding is unbiased but noisier;
# 3. describe LSQ: its initial scale `2·mean|x|/√Q_P`, the straight-through estimator with its
#    clipping mask, and its scaled step-size gradient;
# 4. write `quantize_int4`, a Triton kernel that finds each group's scale, rounds (either way)
#    and packs two codes per byte.

# %%
# %matplotlib inline
import int4lab
import torch

from int4lab import runtime
from int4lab.course import l02_quantizers as l02
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import (QMAX, LSQQuantizer, dequantize, lsq_grad_scale, lsq_init_scale, lsq_quantize, quantize, quantize_int4_spec)
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
DEVICE = runtime.DEVICE
print(runtime.describe())

# %% [markdown]
# ## 1. One quantizer, three granularities
#
# The symmetric quantizer of the paper: with a step size (scale) `s` and `Q_N = Q_P = 7`,
#
# $$\text{int}(x) = \text{round}\big(\text{clamp}(x / s,\; -Q_N,\; Q_P)\big), \qquad \hat x = s \cdot \text{int}(x).$$
#
# (The paper's released code clamps to `[-8, 7]`; the course keeps the symmetric `[-7, 7]` of its
# text, so that `-x` always quantizes to `-int(x)`.) The dynamic choice of scale is
# `s = max|x| / 7`: the largest value lands exactly on the last level. The question is *max over
# what*. `int4lab.spec.quantizers.quantize` offers three groups:
#
# | granularity | one scale per | scales' shape for `x` of shape `(R, K)` |
# |---|---|---|
# | `"tensor"` | the whole tensor | `()` |
# | `"row"` | row (a token of activations, an output channel of a weight) | `(R, 1)` |
# | `"block"` | `block_size` consecutive values of a row | `(R, K / block_size)` |

# %%
x = torch.tensor([[0.1, -0.4, 0.2, 3.5, -0.3, 0.05, 0.6, -0.2],
                  [0.02, 0.01, -0.03, 0.04, 0.0, -0.01, 0.02, 0.03]])
for gran in ("tensor", "row", "block"):
    codes, scales = quantize(x, bits=4, granularity=gran, block_size=4)
    err = (dequantize(codes, scales) - x).abs().max()
    print(f"{gran:6}  scales {str(tuple(scales.shape)):7} = {scales.flatten().numpy().round(4)}")
    print(f"        codes {codes.tolist()}   max error {err:.4f}")

# %% [markdown]
# Look at the second row. Per tensor, its step is `3.5 / 7 = 0.5` (set by the 3.5 in row 0), so all
# its values (at most 0.04) round to zero: the row is gone. Per row it keeps all its
# information. Per block, even row 0's small values away from the 3.5 get a fine step.
#
# Finer groups cost storage: an fp32 scale per group adds `32 / group` bits per value (per block
# of 32: 5 bits per value instead of 4). They also cost in the matrix product, and this decides
# what a GEMM can use (lesson 03): in `Y = X Wᵀ` the sum runs over the columns `k`, so a scale
# can be pulled out of the integer sum only if it does not depend on `k`: **one scale per row of
# X and one per row of W work; a scale per column (channel) of X does not.** Per block along `k`
# works only if the kernel rescales a partial sum per block.

# %% [markdown]
# ### Outliers
#
# Activations of transformers are not nice Gaussians: a few *channels* (columns of `X`) carry
# values 10 to 100 times larger than the rest, in every token. Here is a `64 × 256` matrix with
# two such channels (37 and 200). The left plot shows the error of the *ordinary* channels as
# the outliers grow; the right plot, the error of every channel for one setting.

# %%
l02.granularity_figure(outlier=20.0, block_size=32)

# %% [markdown]
# Per tensor, a ×20 outlier leaves the ordinary values 3 of the 15 levels: their error is as
# large as the values themselves. Per row hardly helps, because the outlier *channels* are in
# every row. Per block confines the damage to the two blocks that contain an outlier channel,
# at 5 bits per value. Move the sliders: how small must the block be before the outliers stop
# mattering? What does a block of 256 (= the row) give?

# %%
interactive_plot(l02.granularity_figure, outlier=(1.0, 100.0, 1.0, 20.0),
                 block_size=[32, 8, 16, 64, 128, 256]);

# %% [markdown]
# The paper measured this (its Table 4, BERT fine-tuned on CoLA, 4-bit): per-tensor, per-token
# and per-channel quantizers all scored **0** (training failed), a learned scale (LSQ, section 3)
# scored 37.3, and the Hadamard quantizer of lesson 04, which *spreads* each outlier over a block
# before quantizing, 54.2 (full precision: about 56.9).

# %% [markdown]
# ## 2. Rounding: nearest or stochastic
#
# Round-to-nearest (RTN) is the best you can do for *one* value: the error is at most half a
# step. But it is **biased**: the expected error `E[round(v)] − v` is not zero, and it is the
# same every time you round the same value. Stochastic rounding (SR) rounds `v` up with
# probability equal to its fractional part `f = v − ⌊v⌋`:
#
# $$\text{SR}(v) = \lfloor v + u \rfloor, \quad u \sim U[0, 1) \qquad\Rightarrow\qquad E[\text{SR}(v)] = \lfloor v\rfloor + f = v .$$
#
# Unbiased, at the price of variance `f(1 − f)` (in units of `s²`). Both are in the library:
# `quantize(..., rounding="stochastic", generator=...)`. The plot below rounds values from 0.01
# to 3 steps, many times each:

# %%
l02.rounding_figure(samples=4000 if FAST else 20000)

# %% [markdown]
# For values under half a step, RTN always gives 0: a **−100 % bias**. That is exactly where
# gradients live. Gradients of a transformer are dominated by a few large entries (lesson 06):
# with one scale per tensor, the step is set by the largest one, and the bulk of the gradient is
# a fraction of a step. Round it to nearest and it vanishes, every step, in the same direction.
# Stochastic rounding keeps it *on average*, and training averages over many steps:

# %%
for ratio in (0.05, 0.2, 0.45, 1.5):
    r = l02.small_values_sum(ratio=ratio, n=4096, trials=10 if FAST else 40)
    print(f"small values of mean {ratio:4} steps: true sum {r['true']:8.1f} | "
          f"RTN {r['nearest']['mean']:8.1f} | SR {r['stochastic']['mean']:8.1f} "
          f"± {r['stochastic']['std']:.1f} (spread over draws)")

# %% [markdown]
# That is why the paper quantizes the *forward* pass with round-to-nearest (lowest error per
# value) and uses stochastic rounding in the *backward* pass (the bit splitting of lesson 06
# rounds the residual of the gradient stochastically).

# %% [markdown]
# ## 3. LSQ: learn the step size
#
# `s = max|x| / 7` lets one outlier dictate the step. The alternative: **clip** the outliers and
# spend the levels on the bulk. Which clipping is best depends on the loss, so LSQ (Esser et al.,
# *Learned Step Size Quantization*, ICLR 2020), which the paper uses for its forward quantizer,
# makes `s` a parameter and learns it by gradient descent with the rest of the network:
#
# $$\hat x = s \cdot \text{round}\big(\text{clamp}(x/s, -Q_N, Q_P)\big)$$
#
# - **Forward:** as above, one learned scale per tensor.
# - **Backward to `x`: the straight-through estimator (STE).** `round` has zero derivative
#   almost everywhere, so the STE pretends it is the identity: `∂x̂/∂x = 1` where `x` was not
#   clipped and `0` where it was (the clipping mask `I_X`: clipped values cannot move `x̂`).
# - **Backward to `s`:** `∂x̂/∂s = round(v) − v` inside the range (`v = x/s`), and `±Q_P` where
#   clipped. Clipped values push `s` up, rounded ones push it either way.
# - **Gradient scale:** the step-size gradient sums over every element, so it is multiplied by
#   `g = 1/√(numel · Q_P)` to keep its updates in proportion to the weights' updates.
# - **Initial scale:** `s = 2·mean|x| / √Q_P` from the first batch. Training from scratch, the
#   paper resets `s` to this value at every step for the first few iterations, then learns it.
#
# All of it is in `int4lab.spec.quantizers`: `lsq_init_scale`, `lsq_quantize` (an autograd function) and
# the module `LSQQuantizer`. The forward and both gradients, for a scale `s = 1`:

# %%
l02.lsq_staircase_figure()

# %% [markdown]
# Check the gradients that `lsq_quantize` returns against the formulas above:

# %%
g = torch.Generator().manual_seed(0)
xs = torch.randn(1000, generator=g) * 2
xs.requires_grad_(True)
s = torch.tensor(0.5, requires_grad=True)
upstream = torch.randn(1000, generator=g)            # some dL/dx_hat from the layers above
lsq_quantize(xs, s).backward(upstream)

v = xs.detach() / s.detach()
mask = (v >= -7) & (v <= 7)                          # I_X: not clipped
step_term = torch.where(mask, torch.round(v) - v, torch.sign(v) * 7)
print("values clipped:          ", int((~mask).sum()), "of", v.numel())
print("dL/dx == upstream * mask:", torch.equal(xs.grad, upstream * mask))
print("dL/ds:", f"{float(s.grad):.5f}", "by hand:",
      f"{float((upstream * step_term).sum() * lsq_grad_scale(v.numel(), 7)):.5f}")
print("LSQ init 2 mean|x|/sqrt(7):", f"{float(lsq_init_scale(xs)):.3f}",
      "| absmax max|x|/7:", f"{float(xs.detach().abs().max() / 7):.3f}")

# %% [markdown]
# Now let LSQ learn. A stand-in for training: 4096 values ~ N(0, 1), 8 of them multiplied by
# an outlier factor, and plain SGD on the mean squared error `‖x̂ − x‖²/n` (in a network the loss
# would be the task's loss). Starting from the absmax scale, the learned `s` shrinks until
# clipping the outliers costs as much as it saves on the bulk:

# %%
l02.lsq_figure(outlier=10.0, lr=30.0, steps=60 if FAST else 150)

# %% [markdown]
# The LSQ initial value `2·mean|x|/√7` is already close to the best scale for Gaussian data.
# Try the sliders: with outliers ×30 and more, the curve has two valleys (clip the outliers, or
# keep them and lose the bulk), and gradient descent finds the nearest one. No single scale
# serves both, which is the Hadamard quantizer's motivation (lesson 04).

# %%
interactive_plot(l02.lsq_figure, outlier=(1.0, 50.0, 1.0, 10.0), lr=(1.0, 60.0, 1.0, 30.0));

# %% [markdown]
# `LSQQuantizer` packs it as a module with the paper's warm-up. One training step is one call in
# training mode:

# %%
q = LSQQuantizer(bits=4, warmup_steps=3)
for step in range(5):
    batch = torch.randn(256, generator=g) * (1 + step)        # the data drifts
    out = q(batch)
    print(f"step {step}: scale {float(q.scale.detach()):.3f}   2 mean|x|/sqrt(7) = "
          f"{float(lsq_init_scale(batch)):.3f}   {'(warm-up: reset)' if step < 3 else '(learned: kept)'}")

# %% [markdown]
# ## 4. Your kernel: `quantize_int4`
#
# Every INT4 layer starts by quantizing its inputs and packing the codes two per byte (lesson
# 01). Done as three passes (max, divide and round, pack), it would read and write the tensor
# three times; quantizing is memory-bound, so the kernel does it in one.
#
# **The contract** (`int4lab.quantize_int4`, spec `int4lab.spec.quantizers.quantize_int4_spec`):
#
# ```
# quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None)
#     -> (packed uint8 of shape (..., K/2), fp32 scales)
# ```
#
# - `x`: float, shape `(..., K)` with `K` even; `granularity` as in section 1 (scales of shape
#   `()`, `x.shape[:-1] + (1,)` or `x.shape[:-1] + (K / block_size,)`);
# - codes `round(clamp(x / s, -7, 7))`, with `s = max|x| / 7` per group (`1.0` for an all-zero
#   group), or the given per-tensor `scale` (a number or a 0-dim tensor: then values beyond `7s`
#   are clipped, as LSQ's);
# - `rounding="nearest"` must match `torch.round` bit for bit: ties go to the **even**
#   neighbour (`2.5 → 2`, `3.5 → 4`, `-2.5 → -2`). `"stochastic"`: `floor(v + u)` with `u` from
#   Triton's Philox generator (`tl.randint4x`); your random numbers are not torch's, so these
#   codes are checked in distribution (unbiased, right spread), not bit for bit;
# - packing as `pack_int4`: code `2j` in the low nibble of byte `j`, code `2j+1` in the high one.
#
# **The plan: a tile of groups per program.** See `x` as `R = x.numel() / K` rows of `K`
# (`x.reshape(R, K)`, a view whenever possible: the kernel takes its strides, so a transposed
# `x` needs no copy). A *group* is a row (`L = K` values) or a block (`L = block_size` values);
# there are `nb` per row, `R · nb` in all, numbered row by row. Each program takes **`BLOCK_G`
# groups as one 2-D tile**: tile row `i` is group `g[i]`, its values in column order. A group's
# max is `tl.max(..., axis=1)`. Codes `2j` and `2j+1` end up in one byte: `tl.split` of the
# `(BLOCK_G, LP/2, 2)` view of the codes gives the even and the odd ones, side by side, and
# packing is one shift and one OR. Several groups per program (up to `TILE = 4096` values) means
# fewer, bigger programs: the interpreter runs them much faster, and x is still read once.
#
# A per-tensor max needs the whole tensor, which no single program sees. So the launcher
# computes it with torch first (`s = max|x| / 7`, the same fp32 division as the spec) and hands
# it to the kernel like a given `scale`: two passes. With a given scale the kernel reduces
# nothing, so for `"tensor"` the rows are cut into chunks of at most `TILE` values.
#
# **Every instruction counts.** The kernel reads 2 bytes (bf16) and writes half a byte per
# value. An H200 moves about 20 bytes of DRAM per SM and cycle, and issues 4 warp-instructions
# per SM and cycle: above about 16 instructions per value, the kernel waits on its instructions,
# not on memory. That budget shapes the plan. Reading the tile in column order lets each thread
# load 16 contiguous bytes with one instruction (two strided loads, even and odd values as in
# `pack_int4`, compile to one load instruction per value). And the two exact operations the spec needs have cheap, exact forms,
# **given** in `int4lab.kernels.rounding` (imported in the stub; read them in
# `kernels/rounding.py`):
#
# - `divide_rn(x, s)`: `x / s` correctly rounded, as torch divides. On a GPU Triton's `/` is an
#   approximate division, and the correctly rounded `tl.math.div_rn` costs about 14
#   instructions per value. Every value of a group has the same divisor, so `divide_rn` computes
#   `1/s` once per group (pass `s[:, None]`), then per value a multiply and two fused
#   multiply-adds that correct the last bit: 4 instructions.
# - `nibble_rn(v)`: the 4-bit code of `round(v)`, rounded as `torch.round`, which sends exact
#   ties to the **even** neighbour. The checks compare bytes exactly, so the obvious
#   `tl.floor(v + 0.5)` will not do: it rounds every tie up, wrong exactly when the tie's floor
#   `k` is even (2.5 must give 2, not 3; −1.5 must give −2, not −1). `nibble_rn` adds
#   `1.5·2²³`: between `2²³` and `2²⁴` the floats are exactly the integers, so the fp32 addition
#   itself rounds `v`, ties to even, and the low 4 bits of the sum are the code in two's
#   complement. 2 instructions, and no float-to-int conversion.
#
# A dynamic scale needs no clamp: `|x| ≤ max|x| = 7s`, so `x / s` is at most 7 (and a hair,
# which rounds to 7). A given scale clips: clamp `x` to `[−7s, 7s]` before dividing.
#
# **Given and yours.** The stub gives the tile's index set-up (groups, `int64` rows, columns,
# masks, pointers), the random numbers (`uniform_tile`), and in the launcher the validation and
# the per-tensor scale. You write the heart: the load, each group's scale, the clamp, the
# division, the rounding, the packing and the store; `round_stochastic`; and the launcher's
# shapes, groups, allocation, seed and launch.
#
# Stochastic rounding is yours: `round_stochastic(v, u)` returns `floor(v) + 1` when
# `u < frac(v)`, else `floor(v)`. That is the law of `floor(v + u)`, without its fp32 trap: in
# fp32, `2.0 + 0.99999997` is `3.0`, so the sum could push an integer `v` up. The uniform `u` of
# every value comes from `uniform_tile`: one Philox call (`tl.randint4x`) makes 4 random words,
# one for each of 4 consecutive values, at an offset of its own (the flat index of the first);
# `tl.rand` would make 4 and keep 1.
# `int4lab.reveal("quantize_int4")` shows the library's solution once you are done.

# %% tags=["exercise"] int4lab={"slot": "quantize_int4"}
# %%exercise quantize_int4
import math

import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import divide_rn, nibble_rn
from int4lab.spec.quantizers import QMAX, _as_scale, absmax_scale, validate_quantize_int4

TILE = 4096          # values per program: few programs for the interpreter, few registers on a GPU


@triton.jit
def round_stochastic(v, u):
    """floor(v) + 1 with probability frac(v): the law of floor(v + u), u ~ U[0, 1), minus its fp32
    rounding (in fp32, 2.0 + 0.99999997 is 3.0, so an integer v could round up)."""
    # TODO: f = tl.floor(v); return f + 1.0 where u < v - f (the fractional part), f elsewhere
    #       (tl.where).


@triton.jit
def group_tile(pid, x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c,
               BLOCK_G: tl.constexpr, LP: tl.constexpr):
    """The index set-up of program pid's tile of BLOCK_G groups (given: the exercise follows it).

    Group g is block g % nb of row g // nb: the L values from column start = (g % nb) * L on.
    Tile position [i, k] is value k of group g[i], at column start[i] + k: along a tile row the
    columns are consecutive, so a contiguous x is read with wide (16-byte) loads. LP is L
    rounded up to a power of two (at least 4), so mask keeps real groups, values inside their
    group and columns inside the row (a "tensor" chunk can run past K). The packed bytes form
    the (BLOCK_G, LP // 2) tile of pairs: byte j of group g[i] holds its values 2j and 2j + 1.
    Returns g, g_ok (which groups exist), row (int64) and start, each (BLOCK_G,); mask and
    x_ptrs, each (BLOCK_G, LP); p_mask and p_ptrs (the output bytes), each (BLOCK_G, LP // 2).
    """
    g = pid * BLOCK_G + tl.arange(0, BLOCK_G)        # the groups this program owns
    row = (g // nb).to(tl.int64)                     # int64: row * stride can pass 2**31
    start = (g % nb) * L                             # each group's first column
    g_ok = g < n_groups
    k = tl.arange(0, LP)                             # value index inside a group
    col = start[:, None] + k[None, :]
    mask = g_ok[:, None] & (k[None, :] < L) & (col < K)
    x_ptrs = x_ptr + row[:, None] * stride_r + col * stride_c
    j = tl.arange(0, LP // 2)                        # pair (byte) index inside a group
    pcol = start[:, None] // 2 + j[None, :]          # packed is (R, K/2), in order
    p_mask = g_ok[:, None] & (j[None, :] < L // 2) & (pcol < K // 2)
    p_ptrs = p_ptr + row[:, None] * (K // 2) + pcol
    return g, g_ok, row, start, mask, x_ptrs, p_mask, p_ptrs


@triton.jit
def uniform_tile(seed, row, start, K, BLOCK_G: tl.constexpr, LP: tl.constexpr):
    """A uniform u in [0, 1) for every value of the (BLOCK_G, LP) tile (given).

    One Philox call per 4 consecutive values: tl.randint4x returns 4 random words per call, where
    tl.rand keeps 1 of them. The 4 values from column c of a row on use the call at offset
    row * K + c (an int32, like tl.rand's offsets): every group of 4 has its own offset, and a
    seed gives the same numbers whatever the tile size.
    """
    c = start[:, None] + 4 * tl.arange(0, LP // 4)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, row[:, None].to(tl.int32) * K + c)
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK_G, LP))   # value 4i+t: r_t
    return tl.random.uint_to_uniform_float(r)


@triton.jit
def quantize_int4_kernel(x_ptr, p_ptr, s_ptr, given_ptr,
                         n_groups, nb, L, K, stride_r, stride_c, seed,
                         BLOCK_G: tl.constexpr, LP: tl.constexpr, QP: tl.constexpr,
                         GIVEN_SCALE: tl.constexpr, STORE_SCALES: tl.constexpr,
                         STOCHASTIC: tl.constexpr):
    # Given: the index set-up of this program's tile (group_tile, above).
    g, g_ok, row, start, mask, x_ptrs, p_mask, p_ptrs = group_tile(
        tl.program_id(axis=0), x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c, BLOCK_G, LP)

    # TODO 1: load the tile, x = tl.load(x_ptrs, mask=mask, other=0.0), and convert it to
    #         tl.float32: x is (BLOCK_G, LP), each row one group.
    # TODO 2: s, one scale per group, shape (BLOCK_G,).
    #         - GIVEN_SCALE: every group reads the one value at given_ptr:
    #           s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0). Values beyond 7 s clip:
    #           clamp x to [-m, m] now, m = (QP * s)[:, None]: x = tl.minimum(tl.maximum(x, -m), m)
    #           (this also keeps x / s finite).
    #         - else: amax = tl.max(tl.abs(x), axis=1); s = divide_rn(amax, QP * 1.0) (the given
    #           correctly rounded division, as torch's amax / 7), or 1.0 where amax is 0
    #           (tl.where(amax > 0.0, ..., 1.0)). No clamp: |x| <= amax = 7 s.
    #         Then, if STORE_SCALES, store s at s_ptr + g (mask g_ok).
    pass
    # TODO 3: v = divide_rn(x, s[:, None]): x / s correctly rounded, as the spec's fp32 division
    #         (given; `/` is approximate on a GPU). Pass s as a column, s[:, None]: what depends
    #         on s alone is then computed once per group, not once per value.
    # TODO 4: codes, the 4-bit code of every value: an int32 whose low 4 bits are the code.
    #         - STOCHASTIC: clamp v to [-QP, QP], tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)
    #           (floor(7.0000005 + u) could be 8), then v = round_stochastic(v, u) (above) with
    #           u = uniform_tile(seed, row, start, K, BLOCK_G, LP) (given, above).
    #         - either way, then: codes = nibble_rn(v) (given): rounds half to even, as
    #           torch.round (a whole v, as after round_stochastic, stays as it is).
    pass
    # TODO 5: pack: even, odd = tl.split(tl.reshape(codes, (BLOCK_G, LP // 2, 2))) are the codes
    #         2j and 2j+1 of each group; store (even | (odd << 4)).to(tl.uint8) at p_ptrs
    #         (mask p_mask).


def given_scale(x, granularity, scale):
    """The one scale of every group, when there is one (the kernel's GIVEN_SCALE), as a 0-dim
    fp32 tensor on x's device: the `scale` argument; else for "tensor" the per-tensor scale
    max|x| / 7, which needs the max of the whole tensor before any code can be written (pass 1
    of 2); else None (each group finds its own scale in the kernel)."""
    if scale is not None:
        return _as_scale(scale).to(x.device)
    if granularity != "tensor":
        return None
    # the global max|x|, then the spec's own max / 7 (exact: the same fp32 ops)
    if x.numel():
        lo, hi = torch.aminmax(x)
        amax = torch.maximum(-lo, hi).float()
    else:
        amax = torch.zeros((), device=x.device)
    return absmax_scale(amax, QMAX[4])


def quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales), as quantize_int4_spec:
    validate, choose the groups, launch one program per BLOCK_G groups."""
    validate_quantize_int4(x, granularity, block_size, rounding, seed, scale)   # the spec's checks
    # TODO 1: given = given_scale(x, granularity, scale) (above: a 0-dim tensor or None).
    #         K = x.shape[-1], lead = tuple(x.shape[:-1]), R = math.prod(lead) rows (also right
    #         when K is 0); x2 = x.reshape(R, K): a view whenever possible, no copy (the kernel
    #         takes its strides, so a transposed x is fine).
    # TODO 2: the groups, nb per row of L values each:
    #         - "row": L = K, nb = 1;  "block": L = block_size, nb = K // block_size;
    #         - "tensor": the kernel reduces nothing (its scale is given), so cut rows into chunks:
    #           L = min(triton.next_power_of_2(max(K, 2)), TILE), nb = triton.cdiv(K, L).
    # TODO 3: allocate packed = torch.empty(lead + (K // 2,), dtype=torch.uint8) and the scales:
    #         given.clone() (0-dim) for "tensor", else torch.empty(lead + (nb,), dtype=torch.float32)
    #         (both on x.device). If x is empty, nothing to launch: for "row" and "block" fill the
    #         scales with 1.0, or float(given) when there is a given scale; return packed, scales.
    # TODO 4: the seed: with rounding="stochastic" and seed None, draw a fresh one,
    #         int(torch.randint(0, 2**31 - 1, ()).item()); then seed = int(seed) & (2**63 - 1) for
    #         stochastic rounding (a non-negative int64) and seed = 0 for nearest: the kernel
    #         gets this seed (TODO 5).
    # TODO 5: n_groups = R * nb; LP = max(4, triton.next_power_of_2(L)) (uniform_tile draws 4
    #         values at a time); BLOCK_G = max(1, min(TILE // LP, triton.next_power_of_2(n_groups)))
    #         groups per program (at most TILE values each, but always a whole group).
    #         Launch quantize_int4_kernel on (triton.cdiv(n_groups, BLOCK_G),) programs with
    #         x2, packed, scales, given (or scales when given is None: never read then), n_groups,
    #         nb, L, K, x2.stride(0), x2.stride(1), seed, BLOCK_G=BLOCK_G, LP=LP, QP=QMAX[4],
    #         GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
    #         STOCHASTIC=rounding == "stochastic", num_warps=min(32, max(4, LP // 1024)) (a
    #         thread per 32 values of a long row, so that registers do not grow with K).
    #         Return packed, scales.
    raise NotImplementedError("quantize_int4: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("quantize_int4")

# %% [markdown]
# Whatever happened above, the rest of the lesson runs: `int4lab.quantize_int4` dispatches to
# your kernel if it unlocked, else to the library's (on a GPU) or the spec (on a CPU), and
# `int4lab.last_ran` says which. First, does it agree with the spec, granularity by granularity?

# %%
if runtime.HAS_CUDA:
    rows, K = 4096, 4096
else:                          # the interpreter runs a kernel as Python: small sizes
    rows, K = (8, 256) if FAST else (64, 1024)
xq = l02.outlier_activations(rows, K, outlier=20.0, channels=(37, 200)).to(DEVICE)
for gran in ("tensor", "row", "block"):
    packed, scales = int4lab.quantize_int4(xq, granularity=gran, block_size=32)
    ran = int4lab.last_ran("quantize_int4")
    p_ref, s_ref = quantize_int4_spec(xq, granularity=gran, block_size=32)
    x_hat = dequantize(unpack_int4(packed), scales)
    rel = float((x_hat - xq).norm() / xq.norm())
    print(f"{gran:6} ran {ran:8} | same bytes and scales as the spec: "
          f"{torch.equal(packed, p_ref) and torch.equal(scales, s_ref)} | "
          f"relative error {rel:.3f} | scales {tuple(scales.shape)}")

# %% [markdown]
# And stochastic rounding: the average of many stochastic quantizations (different seeds)
# should approach `x` itself, while round-to-nearest stays where it is.

# %%
g = torch.Generator().manual_seed(1)
xs_small = torch.rand(4, 64, generator=g) * 0.2     # tiny next to the step s = 1 that...
xs_small[:, 0] = 7.0                                # ...this value sets in every row (7 / 7)
xs_small = xs_small.to(DEVICE)
n_draws = 16 if FAST else 200
acc = torch.zeros_like(xs_small)
for seed in range(n_draws):
    packed, scales = int4lab.quantize_int4(xs_small, granularity="row", rounding="stochastic",
                                           seed=seed)
    acc += dequantize(unpack_int4(packed), scales)
p_rtn, s_rtn = int4lab.quantize_int4(xs_small, granularity="row")
x_rtn = dequantize(unpack_int4(p_rtn), s_rtn)
print("ran:", int4lab.last_ran("quantize_int4"))
print(f"mean of the small values:        {float(xs_small[:, 1:].mean()):.4f}")
print(f"after RTN:                       {float(x_rtn[:, 1:].mean()):.4f}")
print(f"after SR, mean of {n_draws:3} draws:      {float((acc / n_draws)[:, 1:].mean()):.4f}")

# %% [markdown]
# On a GPU, `bench` times your kernel and the library's in GB/s (quantizing is memory-bound:
# what counts is bytes read and written, 2.5 per bf16 value) against `torch.clone` of the same
# tensor, a plain copy: the speed limit of any one-pass kernel. On a CPU it checks correctness
# only.

# %%
result = int4lab.bench("quantize_int4")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding
#
# 1. `X` is `(tokens, channels)` and `W` is `(out, channels)` in `Y = X Wᵀ`. Which of these
#    scales can be applied *after* an integer GEMM of the codes: per row of `X`, per column of
#    `X`, per row of `W`, one per tensor?
# 2. Per block of 32 with fp32 scales, how many bits does each value cost? And per row of 4096?
# 3. A gradient value is 0.3 steps. What does round-to-nearest give, every time? What does
#    stochastic rounding give, with which probabilities, and what is its mean and variance?
# 4. In LSQ, why does a clipped value contribute `±Q_P` to `∂x̂/∂s` but nothing to `∂x̂/∂x`?
# 5. Why does the LSQ gradient of `s` get multiplied by `1/√(numel · Q_P)`?
# 6. Suppose your kernel rounded with `tl.floor(v + 0.5)` instead of `nibble_rn`.
#    Which values of `v` would it get wrong, and how would `unlock` notice?
# 7. `int4lab inspect quantize_int4` compiles the kernel for an H200 without one. Why would a
#    kernel that calls `tl.math.div_rn` once per value be issue-bound rather than memory-bound,
#    and how does `divide_rn` get the same bits for less?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. Per row of `X`, per row of `W` and per tensor: `Y[m, n] = Σ_k s_m q_X[m,k] · t_n q_W[n,k]
#    = s_m t_n Σ_k q_X[m,k] q_W[n,k]`, the scales leave the sum. A scale per column `k` of `X`
#    sits inside the sum over `k`, so it cannot be pulled out of an integer GEMM.
# 2. `4 + 32/32 = 5` bits; `4 + 32/4096 ≈ 4.008` bits.
# 3. RTN gives 0, always (a bias of −0.3 steps). SR gives 1 with probability 0.3 and 0 with
#    probability 0.7: mean 0.3 (unbiased), variance `0.3 · 0.7 = 0.21` steps².
# 4. A clipped value's `x̂` is `±Q_P · s`: it does not change when `x` moves a little (so the STE
#    passes no gradient to `x`), but it grows with `s` at the rate `±Q_P`.
# 5. `∂L/∂s` is a sum over every element of the tensor, so it grows with the tensor's size and
#    with the number of levels; the factor keeps the step-size updates on the scale of the
#    weight updates (Esser et al.), so one learning rate suits both.
# 6. `floor(v + 0.5)` rounds every tie up, so it is wrong exactly on the ties `k + 0.5` whose
#    floor `k` is **even**: 2.5 (`k = 2`) gives 3 instead of 2, and −1.5 (`k = −2`) gives −1
#    instead of −2. Ties with `k` odd come out right (1.5 → 2, −2.5 → −2), and so does every
#    value that is not a tie. Values such as `x / s = 2.5` occur whenever an input is an exact
#    multiple of half a step; the checks compare bytes exactly, so those elements fail.
# 7. At 2.5 bytes per value the H200 leaves about 16 instructions per value before memory stops
#    being the limit, and a correctly rounded division alone compiles to about 14 (a reciprocal,
#    five fused multiply-adds, a range check and a branch to a slow path). Every value of a group
#    shares its divisor, so `divide_rn` pays the reciprocal once per group; per value, `x · r`
#    is within an ulp of `x / s`, one fma computes the remainder `x − q·s` and one more adds
#    `remainder · r`, which rounds to the correctly rounded quotient: 4 instructions.

# %% [markdown]
# ## Summary
#
# - A scale group trades storage and GEMM compatibility against error: per tensor is free but
#   one outlier ruins it; per row does not help against outlier *channels*; per block confines
#   them at 5 bits per value. The paper keeps one scale per tensor and fixes the outliers
#   another way (lesson 04).
# - Round-to-nearest is biased, totally for values under half a step; stochastic rounding is
#   unbiased with variance `f(1 − f)`. Forward: RTN; gradients: SR.
# - LSQ learns the scale: init `2·mean|x|/√Q_P`, the STE with the clipping mask, a step-size
#   gradient scaled by `1/√(numel · Q_P)`.
# - `quantize_int4` quantizes and packs in one pass, one program per tile of whole groups.
#
# **Next: lesson 03, the INT4 GEMM.** Multiply two packed INT4 matrices with integer dot
# products, exactly, on tensor cores that have no INT4 mode.

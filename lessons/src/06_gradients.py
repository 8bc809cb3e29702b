# %% [markdown]
# # Lesson 06 · Gradients on 4 bits: bit splitting and leverage score sampling
#
# Lesson 05's layer runs its forward GEMM on INT4. A training step has two more GEMMs, in the
# backward pass, and both take the output gradient `∇Y` as an operand. This lesson quantizes
# `∇Y` the way *Training Transformers with 4-bit Integers* (Xi, Li, Chen, Zhu, NeurIPS 2023,
# sec. 5) does, so that all three GEMMs of a linear layer run on 4-bit integers.
#
# **By the end of this lesson you can**
# 1. show, on a real backward pass, that a few token rows of `∇Y` are large and most are near
#    zero, and say why that breaks per-tensor INT4;
# 2. explain bit splitting, `∇Y ≈ s↑·hi + s↓·lo` with two INT4 matrices, compute it by hand, and
#    say where the released code's clamp makes it slightly biased;
# 3. derive leverage score sampling: keep rank-1 term `i` with probability `p_i`, scale it by
#    `1/p_i`, and choose `p_i` to minimise the variance under a budget `Σp = N`;
# 4. check unbiasedness and the variance formula numerically, with many seeded draws;
# 5. write the two Triton kernels, `bit_split` and `lss_gather`, unlock them and benchmark them.

# %%
# %matplotlib inline
import int4lab
import torch

from int4lab.spec import gradients as gq
from int4lab import runtime
from int4lab.course import l06_gradients as l06
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
DEV = runtime.DEVICE           # where the slots run (the GPU if there is one)
print("kernels run:", runtime.describe())

STEPS = 40 if FAST else 150    # fp32 training steps before we look at the gradients
DRAWS = 32 if FAST else 256    # seeded draws for the unbiasedness checks

# %% [markdown]
# ## 1. Where `∇Y` enters
#
# A linear layer computes `Y = X Wᵀ` (X is N×D with N = batch × tokens, W is C×D). Given the
# gradient of the loss with respect to its output, `∇Y` (N×C), backward computes
#
# $$ \nabla_X = \nabla_Y\, W \quad (N\times D), \qquad \nabla_W = \nabla_Y^\top X \quad (C\times D). $$
#
# Two GEMMs, each as large as the forward one. Lesson 05 showed that their right operands can be
# the INT4 codes the forward already made, `Ŵ` and `X̂`. What is left is `∇Y`: new at every step,
# so it must be quantized **dynamically**, on the fly, and cheaply. The question of this lesson:
# what does `∇Y` look like, and what does 4-bit quantization do to it?

# %% [markdown]
# ## 2. The row structure of `∇Y`, from a real backward pass
#
# We train the course's small character-level GPT (`int4lab.training.loop`, one block, width 32) in fp32
# for a few dozen steps, then run one more batch forward and backward with hooks on every
# `nn.Linear` to record its input `X` and its output gradient `∇Y`. One row of `∇Y` is one token.

# %%
io, run = l06.trained_gradients("text", steps=STEPS)
print(f"trained {STEPS} steps: val loss {run.val_loss[0]:.3f} -> {run.val_loss[-1]:.3f}\n")
print(f"{'layer':22} {'∇Y shape':>12} {'max/median row':>15} {'top 10% rows hold':>18}")
for name, rec in io.items():
    st = l06.row_stats(rec["g"])
    print(f"{name:22} {str(tuple(rec['g'].shape)):>12} {st['max_over_median']:15.1f} "
          f"{100 * st['top_share']:17.0f}%")

# %%
l06.row_norm_figure(io)

# %% [markdown]
# Inside the transformer block, the largest row of `∇Y` is several times to a few dozen times the
# median one, and the largest tenth of the rows holds far more than a tenth of the gradient's
# squared norm: around three quarters in `attn.c_attn`, whose `∇Y` gathers the gradients of the
# queries, keys and values. Why so uneven? The
# loss gradient of a token is `softmax − one-hot`: a character the model already predicts well
# sends back almost nothing, a surprising one sends back a lot, and attention routes it to the
# few positions that mattered. The paper (sec. 5) calls this structure sparsity: *a few rows are
# large, most are near zero*. (The `lm_head` row norms are flat: it sits before the softmax, and
# every token's `softmax − one-hot` has a similar size early in training; the paper keeps the
# head in full precision anyway.)
#
# The extreme case is the ViT of lesson 07 on digits: it classifies from the `cls` token only,
# so in its last block every other token's row of `∇Y` is **exactly zero**.

# %%
io_vit, _ = l06.trained_gradients("digits", steps=10)
for name, rec in io_vit.items():
    st = l06.row_stats(rec["g"])
    print(f"ViT {name:22} rows exactly zero: {100 * st['zero_rows']:5.1f}%")

# %% [markdown]
# (16 patches + 1 `cls` token: 16/17 ≈ 94% of the rows. The released CUDA code of the paper
# exploits exactly this: it keeps every row that is not zero, as `lss_gather(codes, probs=None)`
# will.)
#
# ## 3. Why naive INT4 gradients fail
#
# Per-tensor INT4 uses one step `s = max|∇Y| / 7` for the whole matrix. The largest entry sits in
# one of the large rows, so the step is huge compared with the entries of the small rows:
#
# - **round to nearest** turns every entry below `s/2` into 0. Whole rows vanish: their tokens
#   stop contributing to `∇W`, at every step, always in the same direction. That is a **bias**;
#   averaging over steps does not remove it.
# - **stochastic rounding** is unbiased, but a small entry becomes 0 or ±s at random: the noise
#   of a small row is many times the row itself.
#
# Here is every row of the attention layer's `∇Y`, its relative error against its size.

# %%
LAYER = "blocks.0.attn.c_attn"
g, x = io[LAYER]["g"], io[LAYER]["x"]          # ∇Y (N, C) and X (N, D) of one real layer
print(f"{LAYER}: ∇Y {tuple(g.shape)}, X {tuple(x.shape)}")
print(f"rows of ∇Y that INT4 round-to-nearest turns into zeros: {100 * l06.zeroed_rows(g):.0f}%")
l06.row_error_figure(g)

# %% [markdown]
# The green points are the fix this lesson builds: bit splitting, whose step is 14 times finer.
#
# ## 4. Bit splitting: INT8 as two INT4 halves
#
# The paper's first idea (sec. 5.1): represent `∇Y` with **two** INT4 matrices, a coarse one and a
# fine one for the remainder. In the released code's constants:
#
# $$ s = \frac{196}{2\,\max|\nabla_Y|}, \qquad
#    hi = \mathrm{clamp}\big(\mathrm{round}(\nabla_Y\, s / 14),\ -6,\ 6\big), $$
# $$ lo = \mathrm{clamp}\big(\mathrm{round}(\nabla_Y\, s - 14\,hi + u),\ -6,\ 6\big), \quad u \sim U(-\tfrac12, \tfrac12), \qquad
#    \nabla_Y \approx \underbrace{(14/s)}_{s_\uparrow}\, hi + \underbrace{(1/s)}_{s_\downarrow}\, lo . $$
#
# `s` maps `max|∇Y|` to 98 = 14·7. `hi` counts steps of 14 and is rounded to nearest; `lo` is the
# remainder in steps of 1, **stochastically** rounded, so the pair is unbiased wherever nothing
# is clipped. In total about 8 bits of resolution (`14·hi + lo` covers −90…90), stored as two
# 4-bit halves, so each half runs on the INT4 GEMM. Stacked, `[s↑·hi; s↓·lo]` is a 2N-row matrix:
# the backward GEMMs become sums over 2N rows instead of N.
#
# By hand, on four numbers:

# %%
g4 = torch.tensor([[1.0, 0.3, 0.01, -0.45]])
bs = gq.bit_split(g4, generator=gq.make_generator(0))
print("s =", float(gq.bit_split_scale(g4)), "  so  g·s =", (g4 * gq.bit_split_scale(g4)).tolist())
print("hi =", bs.hi.tolist(), "  lo =", bs.lo.tolist(),
      f"  s↑ = {float(bs.scale_hi):.4f}, s↓ = {float(bs.scale_lo):.4f}")
print("s↑·hi + s↓·lo =", [round(v, 4) for v in gq.bit_split_dequantize(bs).tolist()[0]])
print("exact mean    =", [round(v, 4) for v in gq.bit_split_mean(g4).tolist()[0]], " (over the random u)")

# %% [markdown]
# The exact mean is not quite `g` for `1.0`: `g·s = 98` needs `hi = 7` (or `lo = 14`), and the
# clamp to [−6, 6] stops `14·hi + lo` at 90. The released code clamps both halves to ±6
# (`num_bins_half = 2⁴ − 2 = 14`, clamp `14/2 − 1 = 6`), so bit splitting is **slightly biased at
# the largest values**, and in a one-step window around every `v = 7 + 14k` where `|lo|` would
# need to be 7. `int4lab.spec.gradients.bit_split_mean` computes the expectation exactly (no sampling);
# with `clamp=7` the bias is gone.

# %%
l06.bit_split_bias_figure()

# %%
mean_draws = torch.stack([gq.bit_split_dequantize(gq.bit_split(g, generator=gq.make_generator(k)))
                          for k in range(DRAWS)]).mean(0)
exact_mean = gq.bit_split_mean(g)
print(f"mean of {DRAWS} draws vs bit_split_mean: "
      f"max difference {float((mean_draws - exact_mean).abs().max()):.2e}"
      f"  (one lo step is {float(1 / gq.bit_split_scale(g)):.2e})")
print(f"bias of bit splitting on this layer's ∇W = ∇Yᵀ X: "
      f"{100 * float(((exact_mean - g).T @ x).norm() / (g.T @ x).norm()):.2f}% (released clamp)")

# %% [markdown]
# ### The slot `bit_split`
#
# `int4lab.bit_split(g, seed=None)` runs the active implementation and returns the two halves
# **packed** (the layout of lesson 01: element `2j` in the low nibble), with the two scales:
# `(hi_packed (N, C/2) uint8, lo_packed, scale_hi, scale_lo)`. The same seed gives the same codes.

# %%
hi_p, lo_p, s_hi, s_lo = int4lab.bit_split(g.to(DEV), seed=0)
print("bit_split ran:", int4lab.last_ran("bit_split"), "|", tuple(hi_p.shape), hi_p.dtype)
g_back = int4lab.unpack_int4(hi_p).float() * s_hi + int4lab.unpack_int4(lo_p).float() * s_lo
print(f"relative error of one draw: {float((g_back.cpu() - g).norm() / g.norm()):.4f}")

# %% [markdown]
# ### The plan for the kernel
#
# The scale needs `max|g|` over the **whole** tensor before any code can be computed, so the
# kernel runs in two passes:
#
# 1. **`absmax_kernel`** (yours): a 2-D grid of tiles; each program loads its tile of `g` (through
#    the strides, masked), reduces `|g|` to one number and combines it into a single fp32 cell with
#    `tl.atomic_max`. (A program that used only its own tile's max would be wrong: the codes must
#    share one scale.)
# 2. **`bit_split_kernel`**: each program handles `BLOCK_R` rows × `BLOCK_B` output **bytes**. Its
#    tile is given: the even columns `2j` and the odd ones `2j + 1` come in two strided loads, and
#    `offs` is each output byte's flat index in `hi` and `lo`. You write the rest: read the max and
#    compute `s = 196 / (2·max)` (1 for an all-zero `g`; the exact order of operations is below),
#    with program (0, 0) storing the two scales; draw the noise and split each half with the
#    helper **`_split`** (also yours: `v = g·s`, then `hi` and `lo`); pack as in lesson 01.
#
# The launcher (`bit_split`) validates `g` and widens it to fp32 where needed (given), then
# allocates the outputs and launches the two passes (yours).
#
# Details the checks look at:
# - The two scales must equal the spec's **bit for bit**, so compute them in the order torch does.
#   For a tensor `t`, torch evaluates `196 / t` as `reciprocal(t) * 196`, and the spec's
#   `14 / s` as `reciprocal(s) * 14`. In fp32 with IEEE division (`tl.math.div_rn`):
#   `s = 196 * div_rn(1, 2·max)`, then `scale_lo = div_rn(1, s)`, then `scale_hi = 14 * scale_lo`.
#   The direct `div_rn(196, 2·max)` and `div_rn(14, s)` are each rounded once instead of twice, so
#   they can land one ulp away from torch's, and the check fails on the scales.
# - `hi` must equal the spec bit for bit. `torch.round` rounds halves to **even**
#   (`round(0.5) = 0`, `round(2.5) = 2`), and ties do happen (`g·s = 7` gives `v/14 = 0.5`).
#   The helper `round_half_to_even` does exactly that; it is given, imported from
#   `int4lab.kernels.rounding`, the module of lesson 02's helpers. Use `tl.math.div_rn` for every
#   division (the scales' and `v / 14`) so that they round like torch's on a GPU too.
# - `lo`'s noise: `tl.rand4x(seed, offs)`, one counter-based (Philox) call per output byte, keyed
#   by the byte's flat index, returns four independent uniforms; the first two, minus 0.5, are
#   the noise of elements `2j` and `2j + 1`. Your draws differ from torch's, so `lo` is checked
#   **in distribution**: every code must be the floor or the ceiling of the exact remainder,
#   rounded up with probability equal to its fractional part.
# - Odd shapes (1×2, 3×34, 129×258), a non-contiguous view, fp16 input and an empty tensor.
#
# `int4lab.reveal("bit_split")` prints the library's kernel if you are stuck.

# %% tags=["exercise"] int4lab={"slot": "bit_split"}
# %%exercise bit_split
import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import round_half_to_even
from int4lab.spec.gradients import kernel_seed, validate_bit_split

BLOCK_R = 32      # rows per program
BLOCK_B = 64      # output bytes per program and row (128 input columns)


@triton.jit
def absmax_kernel(g_ptr, amax_ptr, N, C, stride_n, stride_c,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # Pass 1: max|g| over the whole (N, C) tensor into one fp32 cell (zero-initialized by the
    # launcher). A 2-D grid: program (pid_r, pid_c) owns a tile of BLOCK_R rows x BLOCK_C columns.
    # TODO 1: this program's rows, rows = tl.program_id(axis=0) * BLOCK_R + tl.arange(0, BLOCK_R),
    #         and columns, cols = tl.program_id(axis=1) * BLOCK_C + tl.arange(0, BLOCK_C); a 2-D
    #         mask = (rows < N)[:, None] & (cols < C)[None, :].
    # TODO 2: load the tile through the strides, at g_ptr + rows.to(tl.int64)[:, None] * stride_n
    #         + cols[None, :] * stride_c (int64 rows: row * stride may pass 2**31), masked with
    #         other=0.0, and convert it to tl.float32.
    # TODO 3: reduce |x| to one number, tl.max along axis 1 and then along axis 0, and combine it
    #         into the one cell with tl.atomic_max(amax_ptr, tile_max).
    pass


@triton.jit
def _split(g, s, u):
    """hi and lo (fp32 holding integers) of g (fp32) for scale s and noise u in [-1/2, 1/2)."""
    # TODO 1: v = g * s. hi = round_half_to_even(tl.math.div_rn(v, 14.0)), clamped to [-6, 6]
    #         (tl.maximum with -6.0, then tl.minimum with 6.0). round_half_to_even is GIVEN
    #         (imported above): torch.round for fp32, exact ties to the even neighbour, so
    #         v / 14 = 0.5 gives 0 as in the spec.
    # TODO 2: lo = round_half_to_even((v - 14.0 * hi) + u), clamped to [-6, 6] the same way: the
    #         remainder that hi leaves, stochastically rounded (u is uniform in [-1/2, 1/2)).
    #         Return hi, lo.


@triton.jit
def bit_split_kernel(g_ptr, amax_ptr, hi_ptr, lo_ptr, scale_hi_ptr, scale_lo_ptr,
                     N, C, stride_n, stride_c, seed,
                     BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    # Pass 2: BLOCK_R rows x BLOCK_B output bytes of hi and lo per program (2-D grid).
    # GIVEN: this program's tile. Output byte j of a row packs columns 2j (low nibble) and 2j + 1
    # (high nibble), so the even and the odd columns of g come in two strided loads. offs is
    # each output byte's flat index n * C/2 + j in hi and lo (both contiguous (N, C/2)).
    pid_r = tl.program_id(axis=0)
    pid_b = tl.program_id(axis=1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    byts = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    n_bytes = C // 2
    mask = (rows < N)[:, None] & (byts < n_bytes)[None, :]
    row_off = rows.to(tl.int64)[:, None] * stride_n
    even = tl.load(g_ptr + row_off + (2 * byts)[None, :] * stride_c, mask=mask, other=0.0)
    odd = tl.load(g_ptr + row_off + (2 * byts + 1)[None, :] * stride_c, mask=mask, other=0.0)
    offs = rows.to(tl.int64)[:, None] * n_bytes + byts[None, :]

    # TODO 1: the scales, in this order, which reproduces torch's bits (torch evaluates 196 / t
    #         for a tensor t as reciprocal(t) * 196, and 14 / s as reciprocal(s) * 14); every
    #         "/" is tl.math.div_rn, the IEEE division:
    #           amax = tl.load(amax_ptr)
    #           s = 196.0 * div_rn(1.0, 2.0 * amax) where amax > 0.0, else 1.0 (an all-zero g).
    #               Divide by tl.where(amax > 0.0, 2.0 * amax, 1.0), then pick with tl.where,
    #               so that nothing divides by zero.
    #           scale_lo = div_rn(1.0, s), then scale_hi = 14.0 * scale_lo.
    #         Only program (0, 0) stores them: tl.store(scale_hi_ptr, ..., mask=first) and the
    #         same for scale_lo, with first = (pid_r == 0) & (pid_b == 0).

    # TODO 2: the noise, one Philox call per output byte: u_even, u_odd, _, _ =
    #         tl.rand4x(seed, offs) gives four independent uniforms in [0, 1) per byte; subtract
    #         0.5 from u_even and from u_odd (uniform in [-1/2, 1/2)). Then split both halves:
    #         hi_e, lo_e = _split(even.to(tl.float32), s, u_even), and hi_o, lo_o from odd and u_odd.

    # TODO 3: pack as in lesson 01, in int32 (two's complement nibbles): hi_byte =
    #         (hi_e.to(tl.int32) & 0xF) | ((hi_o.to(tl.int32) & 0xF) << 4), element 2j in the low
    #         nibble; lo_byte the same from lo_e and lo_o. Store both as tl.uint8 at
    #         hi_ptr + offs and lo_ptr + offs (mask=mask).


def bit_split(g: torch.Tensor, seed=None):
    """Launcher: validate, find max|g| (pass 1), split and pack (pass 2).

    Returns (hi packed (N, C/2) uint8, lo packed (N, C/2) uint8, scale_hi, scale_lo), the
    scales 0-dim fp32 tensors with g ~ hi * scale_hi + lo * scale_lo.
    """
    validate_bit_split(g, seed)                  # the spec's own checks: the same messages
    # fp16/fp32 are read as they are and widened in registers. fp64 becomes fp32 first, as in
    # the spec; bf16 too on the CPU, where the interpreter has no bf16 (exact either way).
    if g.dtype == torch.float64 or (g.dtype == torch.bfloat16 and g.device.type == "cpu"):
        g = g.float()
    N, C = g.shape
    # TODO 1: allocate hi and lo, torch.empty((N, C // 2), dtype=torch.uint8, device=g.device).
    #         An empty g (g.numel() == 0) has nothing to split: return (hi, lo,
    #         torch.tensor(14.0, device=g.device), torch.tensor(1.0, device=g.device)), the
    #         scales of s = 1.
    # TODO 2: amax = torch.zeros((), dtype=torch.float32, device=g.device) (atomic_max combines
    #         into it, so it must start at 0), and two 0-dim fp32 scales with torch.empty((), ...).
    # TODO 3: launch absmax_kernel on (triton.cdiv(N, BLOCK_R), triton.cdiv(C, 2 * BLOCK_B))
    #         programs with (g, amax, N, C, g.stride(0), g.stride(1)), BLOCK_R=BLOCK_R and
    #         BLOCK_C=2 * BLOCK_B.
    # TODO 4: launch bit_split_kernel on (triton.cdiv(N, BLOCK_R), triton.cdiv(C // 2, BLOCK_B))
    #         programs with (g, amax, hi, lo, scale_hi, scale_lo, N, C, g.stride(0), g.stride(1),
    #         kernel_seed(seed)), BLOCK_R=BLOCK_R and BLOCK_B=BLOCK_B. kernel_seed is GIVEN
    #         (imported above): seed=None draws a fresh seed. Return (hi, lo, scale_hi, scale_lo).
    raise NotImplementedError("bit_split: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("bit_split")

# %% [markdown]
# ## 5. Leverage score sampling
#
# Bit splitting doubled the rows: `∇W = ∇Yᵀ X` became a sum over the 2N stacked rows. Write it as
# a sum of **rank-1 terms**, one per row (`g_i` a row of `[s↑·hi; s↓·lo]`, `x_i` the matching row
# of `[X̂; X̂]`):
#
# $$ \nabla_W = \sum_{i=1}^{2N} g_i^\top x_i . $$
#
# The paper's second idea (sec. 5.2): **keep term `i` with probability `p_i` and scale it by
# `1/p_i`**. With `b_i ~ Bernoulli(p_i)`, the estimate `Σ (b_i/p_i) g_iᵀx_i` has expectation
# `Σ (p_i/p_i) g_iᵀx_i = ∇W`: **unbiased**, for any `p_i > 0` (a zero row can have `p_i = 0`).
# Its variance, with independent keeps and `‖g_iᵀx_i‖_F = ‖g_i‖‖x_i‖` for a rank-1 term:
#
# $$ \mathbb{E}\,\|\hat\nabla_W - \nabla_W\|_F^2 = \sum_i \frac{1-p_i}{p_i}\,\|g_i\|^2\|x_i\|^2 . $$
#
# The GEMM only touches the kept rows, about `Σp_i` of them. The paper sets the budget
# `Σ p_i = N`: the two INT4 GEMMs of the stacked `[hi; lo]` then cost about as much as one.
# Minimising the variance under that budget (a Lagrange multiplier, or Cauchy–Schwarz) gives
#
# $$ p_i \propto \|g_i\|\,\|x_i\| \quad\text{for } \nabla_W, \qquad p_i \propto \|g_i\| \quad\text{for } \nabla_X = \nabla_Y W , $$
#
# (for `∇X`, each row of the output is its own estimate, `‖g_i W‖ ≤ ‖g_i‖‖W‖`, and `W` is the same
# for every row). These are *leverage scores*: the rows that carry the product get kept.
#
# **Making p valid.** Proportional `p_i` can exceed 1 for the few large rows. The fix, in
# `int4lab.spec.gradients.lss_probabilities`: scale so that `Σp = N`, clip the values above 1 to 1,
# rescale the unclipped ones so that the sum is `N` again, and repeat until nothing new clips.
# A small example: norms (10, 4, 1, 1, 1, 1, 0) and a budget of 3.

# %%
ex = l06.lss_example()
print("norms        ", ex["norms"].tolist())
print("proportional ", [round(v, 3) for v in ex["proportional"].tolist()], " (sum 3, but 1.67 > 1)")
print("valid p      ", [round(v, 3) for v in ex["p"].tolist()], f" (sum {float(ex['p'].sum()):g})")

# %% [markdown]
# First pass: 10 clips to 1; the remaining budget 2 over norms 4+1+1+1+1 = 8 gives 4·2/8 = 1 for
# the second row, which clips too; the last budget 1 is spread over four rows of norm 1: 0.25 each.
#
# On the real layer, with the stacked rows of one bit split and `Σp = N`:

# %%
g_rows, x_rows = l06.stacked_rows(g, x)          # [s↑·hi; s↓·lo] and [X; X]: 2N rows
probs = gq.weight_grad_probs(g_rows, x_rows)     # p_i ~ ||g_i|| ||x_i||, sum p = N
N = g.shape[0]
print(f"2N = {2 * N} stacked rows, sum p = {float(probs.sum()):.1f} (= N), "
      f"always kept (p = 1): {int((probs == 1).sum())}, never (zero rows): {int((probs == 0).sum())}")
probs_x = gq.input_grad_probs(g_rows)            # p_i ~ ||g_i|| for ∇X
print(f"for ∇X: sum p = {float(probs_x.sum()):.1f}, always kept: {int((probs_x == 1).sum())}")

measured = l06.empirical_variance(g_rows, x_rows, probs, draws=DRAWS * 4)
formula = gq.lss_variance(g_rows, x_rows, probs)
print(f"variance of the sampled ∇W: measured over {DRAWS * 4} draws {measured:.3e}, "
      f"formula Σ (1-p)/p ||g||²||x||² = {formula:.3e}")

# %% [markdown]
# The variance against the budget, for LSS and for the same budget spread uniformly. Move the
# slider: at a budget of 1 (the paper's) many large rows are kept with certainty and the rest are
# sampled; beyond the number of non-zero rows (many `hi` rows of small tokens are all zero) the
# variance is 0.

# %%
l06.variance_figure(g, x, budget=1.0)

# %%
interactive_plot(lambda budget: l06.variance_figure(g, x, budget=budget), budget=(0.1, 2.0, 0.1, 1.0));

# %% [markdown]
# ### The slot `lss_gather`
#
# In the layer, sampling happens on **packed codes**: the kernel draws `keep_i = (u_i < p_i)`,
# and copies the kept rows of the stacked codes (and the same rows of a second operand, the
# packed `[X̂; X̂]`) into compact matrices for the INT4 GEMM. The contract:
#
# `lss_gather(codes, probs=None, seed=None, other=None) -> (kept, kept_other, index, weight)`
# with `codes (R, K/2) uint8`, `probs (R,)`, `index` the kept rows (int64, ascending) and
# `weight = 1/p` (fp32) the rescale the GEMM applies as row scales. With `probs=None` it is the
# released code's deterministic mode: keep every non-zero row, weight 1.

# %%
x_p, s_x = int4lab.quantize_int4(x.to(DEV), granularity="tensor")     # X̂ packed, as the forward saved it
stacked = torch.cat([hi_p, lo_p])                                     # (2N, C/2) packed [hi; lo]
part_scale = torch.cat([s_hi.expand(N), s_lo.expand(N)])
rows = torch.cat([int4lab.unpack_int4(hi_p), int4lab.unpack_int4(lo_p)]).float() * part_scale[:, None]
xq_rows = torch.cat([int4lab.unpack_int4(x_p).float() * s_x] * 2)
p = gq.weight_grad_probs(rows, xq_rows)
kept, kept_x, index, weight = int4lab.lss_gather(stacked, p, seed=1, other=torch.cat([x_p, x_p]))
print("lss_gather ran:", int4lab.last_ran("lss_gather"))
print(f"kept {kept.shape[0]} of {stacked.shape[0]} rows (expected sum p = {float(p.sum()):.0f})")

# the GEMM on the kept rows only, each scaled by s (hi or lo) and 1/p
est = (int4lab.unpack_int4(kept).float() * (part_scale[index] * weight)[:, None]).T @ \
      (int4lab.unpack_int4(kept_x).float() * s_x)
exact = rows.T @ xq_rows
print(f"one draw of ∇W from the kept rows: relative error {float((est - exact).norm() / exact.norm()):.3f}")
kept0, _, index0, weight0 = int4lab.lss_gather(stacked)                 # deterministic mode
print(f"probs=None keeps the {kept0.shape[0]} non-zero rows, weight {float(weight0.max()):g}")

# %% [markdown]
# ### The plan for the kernel
#
# A gather is an irregular copy: row `i` goes to position "how many rows before it were kept".
# Three steps:
#
# 1. **`lss_keep_kernel`**: one program per `BLOCK_R` rows writes `keep_i` (int32 0/1). With
#    probabilities: `u_i = tl.rand(seed, i)`, `keep_i = u_i < p_i` (so `p = 0` is never kept and
#    `p = 1` always). Without: walk the row's bytes in `BLOCK_B` chunks and keep it when any byte is
#    non-zero (a zero INT4 code packs to a zero nibble, so a zero row is all-zero bytes).
# 2. **`torch.cumsum(keep)`**: the inclusive prefix sum `pos`; kept row `i` goes to `pos_i − 1`,
#    and `pos_{R−1}` is the number kept, which sizes the outputs.
# 3. **`lss_gather_kernel`**: a 2-D grid of (rows × bytes) tiles of the source; each program
#    loads its rows' keep flags and positions and copies only the kept rows (mask) to their
#    compact position. The tile's rows, bytes and source offsets (through the strides) are
#    given. It runs for `codes` and again for `other`; the launch for `codes` also writes `index`
#    (the kept row numbers, ascending because positions follow the rows' order) and
#    `weight = 1/p` (ones when `probs` is None), from the programs of the first byte column only,
#    so once per row.
#
# You write both kernels and the launcher's three steps; the helper `_gather`, which sets up a
# launch of `lss_gather_kernel` (its grid, and a placeholder for the pointers a launch does not
# use), is given. The checks compare the deterministic mode exactly and the sampling in
# distribution: keep frequencies per band of `p`, and the reweighted sum of the kept rows
# against the full sum.

# %% tags=["exercise"] int4lab={"slot": "lss_gather"}
# %%exercise lss_gather
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
    pass


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
    pass


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
    raise NotImplementedError("lss_gather: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("lss_gather")

# %% [markdown]
# ## 6. Unbiased: the mean of many draws
#
# The claim of sections 4 and 5: averaged over many steps (here, many seeded draws of the same
# gradient), the quantized `∇W` converges to the exact `∇Yᵀ X`. For an unbiased estimator, the
# error of the mean of `k` draws falls like `1/√k`; a biased one stops at its bias.
#
# The curves: per-tensor INT4 round-to-nearest and stochastic, bit splitting alone with the
# released clamp (±6) and with ±7, and bit splitting + LSS as the paper does it (`Σp = N`). The
# dash-dotted curve is the library's layer, `Int4Linear` with the paper's backward (HQ forward,
# bit splitting, LSS, and the reweighted rows requantized to INT4 with stochastic rounding),
# against the same layer with `∇Y` in full precision.

# %%
curves = l06.unbiasedness_curves(g, x, draws=DRAWS)
for name, errs in curves["curves"].items():
    print(f"{name:40} one draw {100 * errs[0]:6.2f}%   mean of {len(errs)}: {100 * errs[-1]:6.2f}%")

# The layer's many draws: on a CPU with the spec (the interpreter runs a kernel as Python,
# far too slow for dozens of backward passes); on a GPU with the active implementation.
with int4lab.use("auto" if runtime.HAS_CUDA else "spec"):
    layer_errors = l06.layer_unbiasedness(io[LAYER]["module"], x, g, draws=max(16, DRAWS // 4))
print(f"{'Int4Linear (HQ + BS + LSS)':40} one draw {100 * layer_errors[0]:6.2f}%   "
      f"mean of {len(layer_errors)}: {100 * layer_errors[-1]:6.2f}%")

# %% [markdown]
# And one backward pass of the layer with the active implementation, which is yours once
# unlocked: the paper's backward runs on your `bit_split` and `lss_gather`.

# %%
one = l06.layer_unbiasedness(io[LAYER]["module"], x, g, draws=1)
print(f"one draw with the active implementation: relative error of ∇W {100 * one[0]:.1f}%")
print("ran:", {k: int4lab.last_ran(k) for k in ("bit_split", "lss_gather", "int4_matmul")})

# %%
l06.unbiasedness_figure(curves, layer_errors)

# %% [markdown]
# How to read it:
#
# - **Round to nearest** is a flat line: the same rows are lost at every draw; no amount of
#   averaging brings them back. Training with it follows a wrong gradient.
# - **Stochastic INT4** converges, but from a large one-draw error: the noise of the small rows.
# - **Bit splitting** starts some ten times lower. With the released clamp it levels off at its
#   exact bias (the dashed line, from `bit_split_mean`), small but not zero; with ±7 it keeps
#   falling.
# - **Bit splitting + LSS** pays some variance for halving the GEMM work, and stays unbiased
#   (up to the same clamp bias).
# - **The layer** has more variance on one draw: its weight-gradient GEMM cannot fold the
#   per-term weights `1/p_i` into an integer GEMM's row and column scales (they vary along the
#   reduction dimension, the tokens), so it requantizes the reweighted rows to INT4 with
#   stochastic rounding, one more unbiased source of noise. Its mean still converges.
#
# ## 7. Benchmark
#
# On a GPU, `bench` times your kernels, the library's and a PyTorch baseline; on a CPU it checks
# correctness only: an interpreter time would measure Python, not the kernel.

# %%
result_bs = int4lab.bench("bit_split")

# %%
result_lss = int4lab.bench("lss_gather")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding
#
# 1. Why can a forward activation use a scale learned or computed ahead of time, while `∇Y` must
#    be quantized dynamically, at every step?
# 2. `max|∇Y| = 0.49`. Compute `s`, and `hi`, `lo` (the possible values, with probabilities)
#    for an entry `0.1`. What do `s↑·hi + s↓·lo` give on average?
# 3. Per-tensor INT4 round-to-nearest zeroes most rows of `∇Y` here. Why is that worse than the
#    same error spread as random noise?
# 4. Show that `Σ_i (b_i/p_i) g_iᵀx_i` is unbiased. What goes wrong if a non-zero row gets
#    `p_i = 0`?
# 5. Norms (10, 4, 1, 1, 1, 1, 0), budget 3: why is the proportional choice not valid, and what
#    does clip-and-rescale give?
# 6. Why does the weight gradient use `‖g_i‖‖x_i‖` but the input gradient only `‖g_i‖`?
# 7. The released CUDA code keeps every non-zero row with weight 1. When is that exact, and what
#    does it cost when few rows are zero?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. The forward's inputs (weights, activations) change slowly and the forward can calibrate
#    (LSQ learns a scale); `∇Y` is computed fresh by the backward pass, its range changes from step
#    to step and from batch to batch, and nothing is known about it before it exists. So its scale
#    is the current `max|∇Y|`, computed on the fly: the first pass of the `bit_split` kernel.
# 2. `s = 196 / (2 · 0.49) = 200`, `v = 0.1 · 200 = 20`, `hi = round(20/14) = round(1.43) = 1`,
#    remainder `20 − 14 = 6`, which is an integer, so `lo = 6` always. `(14·1 + 6)/200 = 0.1`
#    exactly. For `0.1025`: `v = 20.5`, remainder 6.5, `lo` is 6 or 7 with probability ½ each,
#    but 7 is clamped to 6: mean `20/200 = 0.1`, a bias of −0.0025 (one of the windows of the bias
#    figure).
# 3. Zeroing is the same at every step: the lost tokens never contribute to `∇W`, so the error
#    accumulates in one direction over training (a bias). Unbiased noise averages out over steps,
#    like the noise of mini-batch SGD itself.
# 4. `E[b_i] = p_i`, so `E[Σ (b_i/p_i) g_iᵀx_i] = Σ g_iᵀx_i`. With `p_i = 0` the term is never
#    kept and its expectation is 0 instead of `g_iᵀx_i`: a bias (and `lss_variance` returns
#    infinity). That is why only zero rows may get `p = 0`.
# 5. `p = 3·norm/18` gives 1.67 for the first row, not a probability. Clip it to 1; the other
#    budget 2 over norms 8 gives 1 for the row of norm 4: clip it too; the last 1 over four rows
#    gives 0.25 each: `p = (1, 1, 0.25, 0.25, 0.25, 0.25, 0)`, sum 3.
# 6. `∇W` sums all terms into one matrix; term `i` has Frobenius norm `‖g_i‖‖x_i‖`, so both
#    matter. In `∇X = ∇Y W`, output row `i` depends only on `g_i` and the shared `W`; the
#    variance of row `i` is at most `(1−p_i)/p_i ‖g_i‖²‖W‖²` and `‖W‖` is common to all rows.
# 7. It is exact (no sampling, no variance) and cheap when many rows are exactly zero, as in the
#    ViT's last block above or in the released speed test (half the rows zero). When no row is
#    zero, it keeps all 2N rows: the backward GEMMs cost twice the FP one instead of once.

# %% [markdown]
# ## Summary
#
# - `∇Y` is structurally sparse: a few token rows carry most of it. One per-tensor INT4 step,
#   set by the largest entry, erases the small rows (round to nearest: biased) or buries them in
#   noise (stochastic).
# - **Bit splitting**: `∇Y ≈ s↑·hi + s↓·lo`, INT8 resolution stored as two INT4 halves; `hi`
#   rounded to nearest, `lo` stochastically. The released clamp ±6 leaves a small bias at the
#   largest values (`bit_split_mean` computes it exactly).
# - **Leverage score sampling**: keep rank-1 term `i` with probability `p_i`, weight `1/p_i`:
#   unbiased, variance `Σ (1−p_i)/p_i ‖g_i‖²‖x_i‖²`, minimised by `p_i ∝ ‖g_i‖‖x_i‖` (∇W) or
#   `∝ ‖g_i‖` (∇X) with `Σp = N`, made valid by clip-and-rescale.
# - You wrote `bit_split` (two passes: a global max, then split and pack) and `lss_gather`
#   (keep flags, a prefix sum, a compacting copy).
#
# **Next: lesson 07, training a transformer in INT4.** `quantize_model` on the tiny GPT and the
# tiny ViT, every recipe trained from scratch, and the paper's ordering at small scale.

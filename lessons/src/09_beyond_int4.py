# %% [markdown]
# # Lesson 09 · Beyond INT4: FP8, FP4 and where low-precision training went
#
# The method of this course, *Training Transformers with 4-bit Integers* (Xi, Li, Chen, Zhu,
# NeurIPS 2023), was built for GPUs with INT4 tensor cores. The GPUs that followed went another
# way: Hopper (H100, H200) added **FP8** tensor cores and has no INT4 ones; Blackwell has **FP4**
# (MXFP4, NVFP4) and no INT4 either. This lesson simulates those formats in plain PyTorch and
# compares them with INT4, with and without the Hadamard rotation, on the same outlier-laden
# activations as lesson 04.
#
# **By the end of this lesson you can**
# 1. say what E4M3, E5M2 and E2M1 mean and list the values FP4 can represent;
# 2. explain block scaling: MXFP4's shared power-of-two scale per 32 values, NVFP4's FP8 scale
#    per 16 values plus a per-tensor one;
# 3. compare the error of these formats with per-tensor INT4 and HQ on data with outliers, and
#    say when the rotation still helps;
# 4. place Jetfire, Quartet and NVIDIA's NVFP4 pretraining relative to this course.

# %%
import torch

from int4lab import runtime
from int4lab.course import l09_beyond as l09
from int4lab.course.widgets import interactive_plot

# %matplotlib inline

FAST = runtime.FAST
N_TOK, D = (32, 512) if FAST else (128, 1024)      # the analysis runs on the CPU, in PyTorch

# %% [markdown]
# ## 1. Small floating-point formats
#
# A float with `e` exponent bits and `m` mantissa bits (format `EeMm`, plus a sign bit) stands
# for `(1 + mantissa/2^m) · 2^(exponent − bias)`, with *subnormals* `(mantissa/2^m) · 2^(1 − bias)`
# when the exponent field is 0. Unlike INT4's evenly spaced levels, float levels are dense near
# zero and sparse far from it: the relative step is about the same at every magnitude.
#
# | format | bits | bias | largest | where |
# |---|---|---|---|---|
# | FP8 E4M3 | 1+4+3 | 7 | 448 | Hopper, Ada, Blackwell tensor cores (forward: weights, activations) |
# | FP8 E5M2 | 1+5+2 | 15 | 57344 | same (wider range, coarser: often gradients) |
# | FP4 E2M1 | 1+2+1 | 1 | 6 | Blackwell tensor cores, always with block scales |
#
# `l09.fp_grid` enumerates every non-negative value of a format; `l09.round_to_grid` rounds to
# the nearest (ties to the even code, saturating at the largest). For FP8 the result is the same
# as PyTorch's own cast `x.to(torch.float8_e4m3fn)`, which we check:

# %%
print("E2M1 (FP4):", l09.fp_grid("e2m1").tolist())
v = torch.randn(10_000) * 40
for fmt, dtype in (("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
    same = torch.equal(l09.round_to_grid(v, fmt), v.to(dtype).float())
    print(f"{fmt}: {len(l09.fp_grid(fmt))} non-negative values, up to {float(l09.fp_grid(fmt)[-1]):g};"
          f" same as torch's cast: {same}")

# %%
l09.grid_figure()

# %% [markdown]
# ## 2. Scales: per tensor, per block
#
# Like INT4, a small float needs a scale: `x ≈ s · q`. The choices:
#
# - **FP8, per tensor**: `s = max|x| / 448` (E4M3). With 8 bits and float spacing, one scale per
#   tensor is often enough.
# - **MXFP4** (the Open Compute Project's *microscaling* format): each block of **32** values
#   shares a scale that is a **power of two**, `2^(⌊log₂ max|block|⌋ − 2)` (stored as an 8-bit
#   exponent, E8M0); the values are E2M1. A power of two is cheap in hardware, but it misses the
#   ideal scale `max|block| / 6` (the one that maps the block's max onto 6): with this rule
#   `max|block| / scale` lies in `[4, 8)`, so the scale is between 0.75× and 1.5× the ideal one
#   (the cell below checks it). Up to 1.5× too coarse, the max lands near 4 and the top level
#   goes unused; up to 4/3 too fine, the values above 6 scales saturate at 6.
# - **NVFP4** (NVIDIA, Blackwell): blocks of **16** values, each with an **FP8 E4M3 scale**
#   (a finer choice than a power of two), times one **fp32 scale per tensor** that keeps the
#   block scales inside E4M3's range. The values are E2M1.
#
# Block scales are what makes 4-bit floats work: an outlier only spoils the scale of its own
# block of 16 or 32, not the whole tensor. That is another fix for the problem the paper solved
# with the Hadamard rotation. The costs: 8/32 = 0.25 extra bits per value for MXFP4, 8/16 = 0.5
# for NVFP4, and the scales must be applied inside the GEMM (Blackwell's tensor cores do that).
#
# ## 3. The comparison on data with outliers
#
# Lesson 04's activations: N(0, 1) values with 4 outlier channels of about ±50. Each format is
# a *fake quantizer* (`l09.FORMATS`): it returns the values the format represents, and we
# measure `‖x̂ − x‖ / ‖x‖` over all of X and over its non-outlier channels (the signal that the
# outliers crowd out). The INT4 variants are the library's quantizer (`int4lab.spec.quantizers`) with one
# scale per tensor, the same after the paper's block Hadamard rotation (HQ, block 32,
# `int4lab.spec.hadamard.block_hadamard`), and with one scale per 32 values (for a fair comparison
# with the block-scaled floats).

# %%
lo, hi = l09.mxfp4_scale_vs_ideal()
print(f"MXFP4's power-of-two scale / the ideal max/6: from {lo:.2f} to {hi:.2f}")

x, outliers = l09.make_activations(N_TOK, D, n_outliers=4, magnitude=50.0)
errors = l09.format_errors(x, outliers)
print(f"{'format':24s} {'bits/value':>10s} {'error of X':>11s} {'non-outliers':>13s}")
for name, (e_all, e_bulk) in errors.items():
    print(f"{name:24s} {l09.FORMATS[name][1]:10.2f} {100 * e_all:10.1f}% {100 * e_bulk:12.1f}%")
hq_step, block_step = l09.int4_steps(x)
print(f"INT4 step: HQ's one per-tensor scale {hq_step:.2f}; per 32 values, median {block_step:.2f}")

# %%
l09.error_figure(magnitude=50.0, n_tokens=N_TOK, d=D)

# %% [markdown]
# Slide the outlier magnitude (1 means no outliers). Watch per-tensor INT4 lose its
# non-outlier channels entirely as the outliers grow, HQ recover a good part of them, and the
# block-scaled formats lose only the values that share a block with an outlier. Push it to 200:
# HQ with blocks of 32 breaks down too, because a rotated outlier is still `200/√32 ≈ 35` and the
# rounding error of those large values, rotated back, lands on the small channels (lesson 04's
# block-size search would pick bigger blocks there).

# %%
interactive_plot(lambda magnitude: l09.error_figure(magnitude, n_tokens=N_TOK, d=D),
                 magnitude=(1.0, 200.0, 1.0, 50.0));

# %% [markdown]
# What the numbers say:
#
# - **FP8 E4M3 is in another league**: 8 bits and a float's constant relative precision keep
#   every channel within a few percent with a single scale per tensor. E5M2 trades a mantissa bit
#   for range: twice the error, which is why it is kept for gradients, whose range is wide.
# - **Per-tensor INT4 is wiped out by outliers**, as in lesson 04 (100% error on the
#   non-outlier channels). **HQ** spreads each outlier over its block of 32 channels and brings
#   that error down to a little over half (the printed table), but it stays behind every
#   block-scaled format, INT4 per 32 values included. The reason is its single scale: after
#   the rotation the outliers' blocks still set the tensor's max, so HQ's step is several times
#   the step of a typical block of 32 (the line printed under the table), and the small values
#   of every block pay for it. Per-block scales let each block without an outlier keep its fine
#   step.
# - **Block scales contain the damage**: with INT4 per 32, MXFP4 and NVFP4, an outlier only
#   coarsens the scale of its own block. Here every row has 4 blocks with an outlier in them, and
#   their other values are lost; the rest keep their usual error (so the loss shrinks as `D`
#   grows). NVFP4, with a finer scale (FP8, not a power of two) over fewer values (16), loses the
#   fewest and is the most accurate 4-bit format in the chart.
# - **Rotation on top of small blocks can hurt** ("NVFP4 + Hadamard"): after rotating a block of
#   16 that holds an outlier, all 16 values are large, and the coarse rounding of large values
#   (E2M1's top step is a third of the block's max) is rotated back onto the small channels.
#   The rotation pays off when scales are coarse, or when the distribution inside a block is
#   heavy-tailed (gradients), which is where the methods below use it.
#
# Without outliers (magnitude 1) the formats separate by their bits and their scale granularity
# only. Mind the limits of this experiment: synthetic data, activations only, error of one
# tensor rather than of a trained model.

# %% [markdown]
# ## 4. What the hardware offers
#
# | GPU | tensor-core inputs (low precision) | dense peak (vendor sheet) |
# |---|---|---|
# | A100, RTX 3090 (Ampere) | FP16/BF16, INT8, **INT4** | RTX 3090: FP16 142 (71 with FP32 accumulation), INT4 568 |
# | RTX 4090 (Ada) | FP16/BF16, **FP8**, INT8, **INT4** | |
# | H100, H200 (Hopper) | FP16/BF16, **FP8** (E4M3, E5M2), INT8; **no INT4** | BF16 989, FP8 1979, INT8 1979 |
# | Blackwell | adds **FP4** (MXFP4, NVFP4), FP6; **no INT4** | |
#
# On Hopper, FP8 runs at the INT8 rate: an FP8 GEMM (`torch._scaled_mm`, lesson 08's benchmark)
# is as fast as the course's INT4-in-INT8 one, with far less error. So on an H100/H200, INT4
# training is a lesson in method, not the fastest recipe. On Blackwell, FP4 tensor cores bring
# back a 4-bit speed-up, with block scales built into the hardware.
#
# ## 5. Where the field went
#
# - **Jetfire** (Xi et al., ICML 2024, from the same group as this course's paper): INT8 training
#   of transformers in which the data flowing between operators stays in INT8 too, not only the
#   matmul inputs, with **per-block quantization** (a scale per small 2-D tile) to contain
#   outliers; it targets speed and memory savings on INT8 tensor cores.
# - **Quartet** (Castro et al., 2025): end-to-end **FP4 training on Blackwell** (MXFP4), every
#   linear-layer matmul in FP4 including the backward pass, using **Hadamard rotations** before
#   quantizing and rounding schemes chosen separately for the forward (low error) and backward
#   (unbiased gradients) passes; it studies how accuracy trades against compute at scale.
# - **NVFP4 pretraining** (NVIDIA, 2025 report): pretraining large language models with NVFP4
#   GEMMs, using **random Hadamard transforms** on the inputs of the weight-gradient GEMM,
#   two-dimensional block scaling for weights so forward and backward see the same quantized
#   values, **stochastic rounding of gradients**, and a few sensitive layers left in higher
#   precision.
#
# The through-line from this course: outliers are the enemy of low precision; rotations
# (Hadamard) and fine-grained scales are the two weapons; gradients need unbiased rounding
# (the paper's bit splitting uses stochastic rounding for the residual, NVFP4 for the gradients).

# %% [markdown]
# ### Check your understanding
#
# 1. List the 15 distinct values of FP4 E2M1 (both signs). How many does INT4 (codes −7..7)
#    have, and how are they spaced differently?
# 2. A block of 32 values has `max|x| = 5`. What is MXFP4's scale, and what happens to the
#    value 5? What if `max|x| = 7.9`?
# 3. Why does NVFP4 need a per-tensor fp32 scale in addition to its E4M3 block scales?
# 4. In the chart, why does the Hadamard rotation help per-tensor INT4 but not NVFP4?
# 5. On an H200, you can train with INT4 (this course) or FP8. Which is faster, and which is more
#    accurate?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6: 15 values. INT4 with codes −7..7 also has 15, evenly
#    spaced (step `s`); E2M1's step doubles with each power of two (0.5 up to 2, then 1, then 2).
# 2. `⌊log₂ 5⌋ = 2`, so the scale is `2^(2 − 2) = 1`. 5 lies exactly halfway between 4 and 6;
#    ties go to the even code, so it becomes 4 (an error of 20% on the block's largest value). With
#    `max|x| = 7.9`: `⌊log₂ 7.9⌋ = 2`, scale 1, and 7.9 saturates at 6: the power-of-two scale
#    clips the block's largest values.
# 3. E4M3 covers only about 2⁻⁹ to 448. Block scales are `max|block| / 6`, which for a tensor of
#    tiny gradients or huge activations falls outside that range; the fp32 per-tensor scale moves
#    the whole tensor into it, so the block scales only encode relative sizes.
# 4. Per-tensor INT4 has one scale for everything: spreading an outlier over 32 channels cuts
#    the tensor's max by about √32 and refines every step. NVFP4 already gives each block of 16 its
#    own scale, so an outlier only coarsens its block; rotating mixes it into all 16 values of
#    that block, which adds error to each without lowering the scale of any other block.
# 5. Both run on 1979-TOPS tensor cores (FP8 and INT8 share the rate), so neither beats the other
#    on the GEMM, and FP8 skips the Hadamard and bit-splitting passes. FP8 is also more accurate
#    (8 bits). INT4 on Hopper saves memory traffic and storage, not GEMM time against FP8.

# %% [markdown]
# ## Summary
#
# - FP8 (E4M3: precision, E5M2: range) and FP4 (E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6) are float
#   formats: dense near zero, constant relative precision.
# - 4-bit floats live on block scales: MXFP4, a power of two per 32 values; NVFP4, an E4M3 scale
#   per 16 values times an fp32 per-tensor scale. Block scales contain outliers, as HQ does for
#   per-tensor INT4.
# - On the outlier data, error of the non-outlier channels (section 3's table): FP8 ≪ NVFP4 <
#   MXFP4 ≈ INT4 per block < HQ < per-tensor INT4. Per-tensor HQ's one scale is still set by
#   the rotated outliers; block scales are set by each block's own values.
#   The rotation matters for coarse scales and heavy-tailed gradients.
# - Hopper: FP8, no INT4; Blackwell: FP4, no INT4. Jetfire (INT8, per-block), Quartet (FP4 on
#   Blackwell, Hadamard) and NVIDIA's NVFP4 pretraining (random Hadamard, stochastic rounding)
#   carry the ideas of this course to the formats the hardware now has.
#
# That closes the path of the course: INT4 numbers and kernels, the Hadamard quantizer, gradient
# quantization, training, speed, and what comes next. `int4lab.progress()` shows what you built.

# %% [markdown]
# # Lesson 07 · Training a transformer in INT4
#
# Everything is in place: INT4 codes and packing (01), the quantize kernel (02), the INT4 GEMM
# (03), the Hadamard quantizer (04), the INT4 linear layer (05), and 4-bit gradients with bit
# splitting and leverage score sampling (06). This lesson trains two small transformers from
# scratch with every linear layer on 4 bits, and compares the recipes the way *Training
# Transformers with 4-bit Integers* (Xi, Li, Chen, Zhu, NeurIPS 2023) does in its Table 1.
#
# **By the end of this lesson you can**
# 1. turn a model into an INT4 model with `quantize_model`, and say which of its operations
#    stay in full precision and why;
# 2. train the tiny GPT (text) and the tiny ViT (digits) under a recipe with `int4lab.training.loop`,
#    and say which implementation ran every quantized operation;
# 3. compare the recipes on loss curves, and read them against the paper's ordering,
#    FP ≥ INT8 ≥ HQ+LSS > LSQ+LUQ (its prior 4-bit baseline; here `int4_lsq_sr` is the closest
#    recipe), with naive INT4 (`int4_rtn`) below them all;
# 4. say what a small, short, single-seed run can and cannot tell you, and where the course's
#    measured numbers live (`docs/RESULTS.md`).

# %%
# %matplotlib inline
import int4lab
import torch

from int4lab.training import data as D
from int4lab import runtime
from int4lab.course import l07_training as l07
from int4lab.layers import RECIPES, quantize_model
from int4lab.training.loop import TrainConfig, get_batch, train

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: few steps, 3 recipes
print("kernels run:", runtime.describe())

STEPS = 30 if FAST else 300       # training steps per run
N_EVALS = 5 if FAST else 12        # evaluations per run (the points of the curves)
RECIPES_HERE = ("fp32", "int4_rtn", "int4_hq_lss") if FAST else l07.RECIPE_ORDER
# Which implementation the training runs use. On a GPU: "auto" (your unlocked kernels, else the
# library's Triton kernels, compiled). On a CPU: the PyTorch spec. Triton's interpreter runs a
# kernel as Python, thousands of times slower: fine for checking a kernel, not for training.
IMPL = "auto" if runtime.HAS_CUDA else "spec"

# %% [markdown]
# ## 1. The two models, and what becomes INT4
#
# - **text**: a character-level GPT (after nanoGPT) trained on the Python standard library's own
#   source code, which every Python installation carries: nothing is downloaded.
# - **digits**: a Vision Transformer on scikit-learn's bundled 8×8 handwritten digits, 2×2
#   patches, classified from a `cls` token.
#
# Both are tiny here (one transformer block, width 32) so that six recipes train in a couple of
# minutes on a laptop CPU. `int4lab.layers.quantize_model(model, recipe)` swaps every `nn.Linear`
# for an `Int4Linear` (lesson 05) in place, copying the weights, and leaves the output head
# alone. The paper's scope (sec. 4): **every linear layer's three GEMMs run on INT4**; the
# non-linear operations (LayerNorm, GELU, softmax), the attention matmuls `QKᵀ` and `P·V`, the
# embeddings, the optimizer and the classifier head stay in higher precision.

# %%
for task in ("text", "digits"):
    model = l07.build_model(task, "int4_hq_lss")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{task}: {type(model).__name__}, {n_params:,} parameters")
    for name, what, precision in l07.layer_table(model):
        print(f"   {name:22} {what:24} {precision}")
    print()

# %% [markdown]
# Four linear layers per block are quantized: `attn.c_attn` (Q, K and V in one GEMM),
# `attn.c_proj`, `mlp.c_fc` and `mlp.c_proj`. Each `Int4Linear` with the paper's recipe carries
# two LSQ scales (`x_quantizer`, `w_quantizer`): the two extra parameters per layer you see in
# the counts.
#
# `quantize_model` is all it takes; build the optimizer **after** it, since the swapped layers
# hold new parameter tensors. A model of your own works the same way:

# %%
mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 10))
print(quantize_model(mlp, "int4_hq_lss"))

# %% [markdown]
# ## 2. One training step, by hand
#
# `int4lab.training.loop.train(config)` is nanoGPT's loop, shrunk: AdamW, a linear warm-up then a cosine
# learning-rate decay, gradient clipping, an evaluation every `eval_every` steps on a fixed
# validation set, and batches that are a pure function of `(seed, step)`, so every recipe sees
# exactly the same data in the same order. One step of it, written out:

# %%
cfg = l07.lesson_config("text", "int4_hq_lss", steps=STEPS)
print(cfg)

text = D.load_text()
torch.manual_seed(cfg.seed)
model = l07.build_model("text", "int4_hq_lss", seed=cfg.seed).to(cfg.device)
optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
x, y = (t.to(cfg.device) for t in get_batch(cfg, text, step=0))
with int4lab.use(IMPL):
    _, loss = model(x, y)           # forward: HQ, INT4 GEMMs
    loss.backward()                 # backward: bit splitting, LSS, INT4 GEMMs
optimizer.step()
print(f"batch {tuple(x.shape)} of characters, loss {loss.item():.3f} (ln {text.vocab_size} = "
      f"{torch.log(torch.tensor(float(text.vocab_size))):.3f} for a uniform guess)")
print("ran:", int4lab.last_ran())

# %% [markdown]
# ## 3. Your kernels train too
#
# With `int4lab.use("learner")` every quantized operation runs your unlocked kernel where you
# have one, else the library's Triton kernel. On a GPU that is compiled and fast. On a CPU it runs
# in Triton's interpreter, so we take just one step of a tiny batch, to see it work.

# %%
tiny = TrainConfig(task="text", recipe="int4_hq_lss", steps=1, eval_every=1, eval_batches=1,
                   batch_size=4, block_size=32, n_layer=1, n_embd=32, progress=False,
                   device=runtime.DEVICE.type)
with int4lab.use("learner"):
    r = train(tiny)
print(f"one step on the Triton path: val loss {r.val_loss[0]:.3f} -> {r.val_loss[-1]:.3f}")
print("ran:", int4lab.last_ran())

# %% [markdown]
# `"learner"` means your kernel for a slot you unlocked, and the library's (`"triton"`) for the
# others; `int4lab.progress()` lists which are yours.
#
# ## 4. Every recipe, on text and on digits
#
# Now the comparison: one model per recipe, the **same** seed (same initial weights), the same
# batches, the same schedule and number of steps; only the quantization differs. The fp32
# baseline gets exactly the budget the INT4 recipes get. (A few hundred steps by default; in
# fast mode only three recipes and a few dozen steps, enough to see the curves start.)

# %%
for name in RECIPES_HERE:
    print(f"{name:12} {l07.RECIPE_ABOUT[name]}")

with int4lab.use(IMPL):
    results = {task: l07.run_recipes(task, RECIPES_HERE, STEPS, n_evals=N_EVALS)
               for task in ("text", "digits")}
print()
print(l07.format_rows(l07.final_rows(results)))
print("\nquantized ops ran:", int4lab.last_ran())
print("(seconds: wall time of each run on this machine with the implementation that ran,"
      " not INT4 speed)")

# %% [markdown]
# The `seconds` column is not speed. On a CPU the quantized recipes run the PyTorch spec (or, with
# `use("learner")`, Triton's interpreter): quantize, pack, unpack and an integer matmul in plain
# PyTorch, so the column measures that overhead on a CPU, which makes the INT4 recipes slower
# than fp32 here. INT4 speed needs integer tensor cores and compiled kernels: lesson 08.

# %%
l07.loss_curves_figure(results)

# %% [markdown]
# Pick the recipes to compare (and the metric). This only redraws the runs above; nothing is
# retrained.

# %%
l07.recipe_picker(results);

# %% [markdown]
# ## 5. The paper's ordering, at small scale
#
# The paper compares FP, INT8, the prior 4-bit method LSQ+LUQ and its own HQ+LSS. It mostly
# **fine-tunes pretrained models** (BERT on GLUE and SQuAD, ViTs from ImageNet-21k checkpoints);
# its from-scratch runs are DeiT-S pretraining and a Transformer-base on WMT14 En-De translation.
# This lesson trains tiny models **from scratch**, a different regime. Its Table 1, and how many
# points HQ+LSS is under FP on each row:

# %%
gaps = l07.paper_gaps()
for name, gap in gaps:
    print(f"   {name:24} HQ+LSS {gap:4.2f} points under FP")
print(f"   range {min(g for _, g in gaps):.1f} to {max(g for _, g in gaps):.1f} points")
l07.paper_figure()

# %% [markdown]
# The ordering is FP ≥ INT8 ≥ HQ+LSS > LSQ+LUQ on nearly every row (the two exceptions are in
# the title), with HQ+LSS 0.4 to 3.9 points under FP (the lines above): under one point on
# SQuAD and CIFAR-10, 1.9 to 2.7 on the GLUE averages and ImageNet, and most, 3.9 points, on
# DeiT-S pretraining, a from-scratch run. Our runs, pair by pair (final validation loss, lower is
# better; `int4_lsq_sr` stands in for LSQ+LUQ):

# %%
for task, by_recipe in results.items():
    print(f"{task:7} best to worst: {', '.join(l07.ranking(by_recipe))}")
    for claim, holds, a, b in l07.paper_order_checks(by_recipe):
        print(f"        {claim:40} {'holds' if holds else 'does NOT hold'}   ({a:.4f} vs {b:.4f})")

# %% [markdown]
# What to expect (in full mode, `INT4LAB_FAST` unset, with all six recipes; fast mode's few
# dozen steps show only the start):
#
# - **Naive INT4 (`int4_rtn`) is clearly worse**, as in the paper. Lesson 06 showed why its
#   backward is biased: one per-tensor step erases most rows of `∇Y` at every step. Lesson 04
#   showed its forward losing the small channels next to the outliers.
# - **INT8 follows fp32 closely**: 255 levels absorb both problems.
# - **The paper's recipe (`int4_hq_lss`)** should land between: well below naive INT4, above fp32.
#   `int4_hq` (the same forward, full-precision gradients) separates the forward's cost from
#   the gradients' on your runs.
# - Small differences (fp32 against INT8, say) are within the noise of **one seed**: another
#   seed can swap them. The same goes for the better 4-bit recipes among themselves:
#   `int4_lsq_sr`, `int4_hq` and `int4_hq_lss` end within a few percent of each other here, and
#   your run may rank `int4_lsq_sr` or `int4_hq` above `int4_hq_lss`. The three-seed table of
#   `docs/RESULTS.md` (section 6) puts `int4_hq_lss` ahead of `int4_lsq_sr` on text by several
#   standard deviations, while on digits the three end within one standard deviation of each
#   other in val loss. One seed and a few hundred steps of a tiny model (digits: 359 validation
#   images) cannot settle such gaps; the three-seed table, with its standard deviations and a
#   larger model trained longer, is the evidence. The paper's claims are about
#   large models and long runs; ours has one block of width 32 and a few hundred steps, where a
#   4-bit forward costs relatively more (each rounding error is a larger share of a narrow
#   layer) and the gradient noise has had little time to average out.
#
# ## 6. What the course measured: `docs/RESULTS.md`
#
# `python scripts/make_results.py` trains every recipe on both tasks with larger settings
# (`int4lab.training.loop.TASK_DEFAULTS`) and several seeds, and writes `docs/RESULTS.md` with means and
# standard deviations. The cell below reads its tables, if the file exists in your checkout: those
# are the course's numbers to quote, not the single-seed runs above.

# %%
tables = l07.results_md_tables()
if tables:
    for title, rows in tables.items():
        print(title)
        print("\n".join(rows), "\n")
    print(f"(from {l07.RESULTS_MD}; the file also discusses them)")
else:
    print(f"{l07.RESULTS_MD} has not been generated in this checkout: "
          "run `python scripts/make_results.py` (it takes a while on a CPU).")

# %% [markdown]
# ## Check your understanding
#
# 1. Which matmuls of a transformer block does the paper run on INT4, and which stay in higher
#    precision? Why might the attention matmuls be left out?
# 2. Why must the optimizer be built *after* `quantize_model`?
# 3. All recipes start from the same weights and see the same batches. Why does that matter for
#    comparing them, and what does it still not remove?
# 4. `int4_hq` and `int4_hq_lss` have the same forward. What does the gap between their curves
#    measure?
# 5. Your fp32 and INT8 curves cross. Does that contradict the paper's FP ≥ INT8?
# 6. Why does this lesson train with the spec on a CPU, although your Triton kernels are
#    unlocked?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. INT4: the three GEMMs (forward, input gradient, weight gradient) of every linear layer:
#    `c_attn`, `c_proj`, `c_fc`, `c_proj`. Higher precision: `QKᵀ` and `P·V` with the softmax,
#    LayerNorm, GELU, the embeddings and the output head. The attention matmuls multiply two
#    activations (no weights), whose per-token and per-head ranges vary a lot, and the softmax is
#    sensitive to errors in the logits; the linear layers hold most of the FLOPs of a large model.
# 2. `quantize_model` replaces each `nn.Linear` by a new `Int4Linear` module with its own
#    parameter tensors (copies), plus LSQ scales. An optimizer built before holds the old tensors
#    and would update parameters the model no longer uses.
# 3. It removes the differences that do not come from quantization (initialization, data order,
#    schedule), so the curves differ only by the recipe. It does not remove the randomness inside
#    the quantized recipes (stochastic rounding, sampling) or the luck of one particular seed:
#    for that you need several seeds, as `docs/RESULTS.md` has.
# 4. The cost of quantizing the gradients (bit splitting + LSS instead of an exact `∇Y`): the
#    variance (and the small clamp bias) that lesson 06 measured, accumulated over training.
# 5. No: a difference smaller than the spread across seeds says nothing about which is better.
#    The paper's own table has INT8 above FP on SQuAD. Compare means over seeds with their
#    standard deviations.
# 6. On a CPU the kernels run in Triton's interpreter, as Python: correct but thousands of times
#    slower. The spec computes the same quantities in PyTorch; on a GPU the lesson uses `"auto"`,
#    which runs your kernels (or the library's) compiled.

# %% [markdown]
# ## Summary
#
# - `quantize_model(model, recipe)` turns every linear layer into an `Int4Linear`: all three GEMMs
#   on INT4 (HQ forward; bit splitting and leverage score sampling backward), everything else in
#   full precision, as the paper prescribes.
# - The same training loop (`int4lab.training.loop`) runs every recipe with the same seed, data and
#   schedule, on the spec, the library's kernels or yours, and `int4lab.last_ran()` says which.
# - At small scale the broad ordering of the paper shows: naive INT4 is clearly worse, INT8 is
#   close to fp32, the paper's recipe is in between; small gaps need several seeds to mean
#   anything, which is what `docs/RESULTS.md` reports.
#
# From a shell, `int4lab train --task text --recipes all` trains the larger default models, and
# `python scripts/make_results.py` regenerates `docs/RESULTS.md`.
#
# **Next: lesson 08, speed.** Everything so far was about accuracy. Does INT4 make a linear layer
# faster, and on which GPU? The benchmark suite, the roofline, and where a layer's time goes.

# %% [markdown]
# # Lesson 08 · Speed: what INT4 buys on a real GPU
#
# The earlier lessons built INT4 training kernel by kernel and checked every one against a
# PyTorch spec. This lesson asks the question the whole method exists for: **is it faster?**
# *Training Transformers with 4-bit Integers* (Xi, Li, Chen, Zhu, NeurIPS 2023) reports its INT4
# operators "up to 2.2 times faster" than FP16, and a faster training: "by up to 35.1%" in the
# arXiv version's abstract (2306.11987), "by 17.8% on average for sufficiently large models" in
# the NeurIPS 2023 version's. We will see where those numbers come from, what the GPUs a learner
# can rent today (H100, H200) allow, and how to measure honestly.
#
# **By the end of this lesson you can**
# 1. place any GEMM on a roofline and say whether memory or compute bounds it;
# 2. explain why INT4 on Hopper is capped at 2× bf16, and where the paper's 2.2× came from;
# 3. split a linear layer's training step into its three GEMMs and its memory-bound quantize
#    passes, and say why the paper measured a slowdown at hidden size 2560, break-even at 4096
#    and a gain only at 8960;
# 4. run the course's benchmark suite (`int4lab bench`) and read its results, or know why a
#    CPU cannot produce any.

# %%
import int4lab
from int4lab import runtime
from int4lab.course import l08_speed as l08
from int4lab.course.widgets import interactive_plot

# %matplotlib inline

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1
GPU = runtime.HAS_CUDA and not runtime.INTERPRET
print("kernels run:", runtime.describe())

# %% [markdown]
# ## 1. Two ceilings: compute and memory
#
# A GPU kernel is limited by one of two things: how fast the tensor cores multiply, or how fast
# the memory (HBM) delivers the operands. The **roofline** puts both on one chart. Its x-axis is
# the **arithmetic intensity**: FLOPs done per byte moved to or from HBM. A kernel can go no
# faster than `min(peak, bandwidth × intensity)`.
#
# The numbers for the Hopper SXM GPUs, dense, from the vendor's sheets. The H100 and the H200
# have the same tensor cores; the H200's memory is faster, which moves the ridge points:
#
# | | peak | ridge point, H100 SXM (÷ 3.35 TB/s) | ridge point, H200 (÷ 4.8 TB/s) |
# |---|---|---|---|
# | bf16 tensor cores | 989 TFLOP/s | 295 FLOP/byte | 206 FLOP/byte |
# | int8 tensor cores | 1979 TOPS | 591 FLOP/byte | 412 FLOP/byte |
# | FP8 tensor cores | 1979 TFLOP/s | 591 FLOP/byte | 412 FLOP/byte |
# | **INT4 tensor cores** | **none** | | |
# | HBM | | 3.35 TB/s (HBM3) | 4.8 TB/s (HBM3e) |
#
# The plots of this lesson use the H200's figures. Peaks are not what you get: the dashed line
# of the plot is a **planning estimate, not a measurement of this course**: a bf16 8192³
# `torch.matmul` at about 770–790 TFLOP/s (about 80% of the peak) and a device-to-device copy at
# about 4.3 TB/s on an H200. No GPU run of the course is recorded in this repository; section 3
# shows how to measure your own.
#
# A square GEMM of side `n` does `2n³` FLOPs and moves at least its three matrices once:
# `(2·b + 2)·n²` bytes for `b` bytes per input value (bf16 `b = 2`, int8 `b = 1`, packed INT4
# `b = ½`) and a bf16 output. Intensity grows like `n`: small GEMMs are memory-bound, large ones
# compute-bound. Slide the size and switch the kind.

# %%
for kind in l08.KINDS:
    c = l08.gemm_cost(4096, kind)
    print(f"{kind:12} bytes of a 4096³ GEMM (bf16 output): {c['bytes'] / l08.gemm_cost(4096, 'bf16')['bytes']:.2f}"
          f" of bf16's; memory-bound below n ≈ {l08.memory_bound_below(kind):.0f} on an H200,"
          f" {l08.memory_bound_below(kind, l08.H100_SXM_HBM_TBS):.0f} on an H100 SXM")
l08.roofline_figure(log2_size=12, kind="int4-packed")

# %%
interactive_plot(l08.roofline_figure, log2_size=(6, 14, 1, 9), kind=list(l08.KINDS));

# %% [markdown]
# What the chart says:
#
# - **Small GEMMs are memory-bound**, and there, fewer bytes per value is everything. The lines
#   above print where each kind stops being memory-bound: on an H200 at a side of about 620
#   (bf16 and packed INT4) to 820 (int8 storage), on an H100 SXM about 890 to 1180. Packed INT4
#   reads a quarter of bf16's input bytes; with the bf16 output written too, it moves half of
#   bf16's bytes (the `0.50` above), and its attainable throughput is higher at the same size.
# - **Above the ridge, the peak is all that counts.** Hopper has no INT4 tensor cores: the
#   course's INT4 GEMM (lesson 03) holds its values in int8 registers and runs them on the INT8
#   tensor cores. Its ceiling is INT8's, **1979 / 989 = 2× bf16**, however the values are packed.
# - **The paper's 2.2×** came from an RTX 3090 (Ampere), which *has* INT4 tensor cores:
#   568 dense INT4 TOPS against 142 FP16 TFLOP/s with FP16 accumulation, or 71 with the FP32
#   accumulation that training uses: a 4× ceiling against the first, 8× against the second. Its
#   operators reached up to 2.2× over CUTLASS FP16 GEMMs. A100 and RTX 4090 also have INT4
#   tensor cores; H100/H200 and Blackwell do not (lesson 09 looks at what Blackwell offers
#   instead).

# %% [markdown]
# ## 2. Where a linear layer's time goes
#
# One training step of a linear layer `Y = X Wᵀ` (X: tokens × D, W: C × D) is three GEMMs of
# the same size, `2·tokens·D·C` FLOPs each:
#
# | | product | bf16 | INT4 method |
# |---|---|---|---|
# | forward | `Y = X Wᵀ` | bf16 GEMM | HQ: `int(XH)·int(WH)ᵀ` (lesson 04) |
# | input gradient | `∇X = ∇Y W` | bf16 GEMM | bit-split `∇Y` × `Ŵ` (lesson 06) |
# | weight gradient | `∇W = ∇Yᵀ X` | bf16 GEMM | bit-split, sampled `∇Y` × `X̂` (lesson 06) |
#
# The INT4 version halves the GEMMs at best (INT8 cores), but adds work bf16 does not have:
# rotating and quantizing `X` and `W`, bit-splitting `∇Y`, computing the leverage scores.
# These passes do a handful of FLOPs per value: they are **memory-bound**, their time is bytes
# divided by bandwidth. The GEMMs grow like `tokens·D·C`, the passes like `tokens·D`: the
# bigger the layer, the smaller their share.
#
# `l08.linear_time_model` turns this into numbers for a square `hidden × hidden` layer on an
# H200: GEMMs at 79% of their peak and passes at 4.3 TB/s (the planning estimates of section 1,
# not measurements), and a parameter for the passes' traffic in bytes per element of X, W and
# ∇Y. A fused kernel (the course's `hadamard_quantize` reads bf16 and writes packed codes) moves
# about 3 bytes; a chain of separate elementwise kernels (rotate, scale, round, pack, transpose,
# each reading and writing a full tensor) easily 20 or more. **This is a model, not a measurement**: it assumes
# every GEMM runs at the same efficiency and ignores kernel launch latency, both of which hurt
# small layers more.

# %%
l08.linear_breakdown_figure(quant_bytes=24)

# %%
interactive_plot(l08.linear_breakdown_figure, quant_bytes=(0.0, 48.0, 1.0, 24.0));

# The model against the paper, with unfused passes (24 bytes per element), as speed-ups over
# bf16 (the paper's wall-time change `d` is a speed-up of `1 / (1 − d)`):

# %%
for h, (model, (paper_lo, paper_hi)) in l08.model_vs_paper(quant_bytes=24).items():
    paper = f"{paper_lo:.2f}×" if abs(paper_lo - paper_hi) < 0.005 else f"{paper_lo:.2f}–{paper_hi:.2f}×"
    print(f"hidden {h:5}: model {model:.2f}×   paper {paper}")

# %% [markdown]
# The model has the paper's **trend, not its numbers**. The paper measured whole-model training
# of a BERT-like model on 8× A100 (black bars): 25–28% slower at hidden 2560, about even at 4096
# and a 35.1% shorter wall time at 8960. The model (the lines above) is slower at 2560 and faster
# at 4096 and 8960, but milder at both ends: a smaller slowdown at 2560 and a smaller gain at
# 8960 than the paper's. No match should be expected: the model is one linear layer on an H200,
# whose INT4 runs on INT8 cores (2× ceiling), while the paper timed whole models on A100s with
# INT4 tensor cores (4× ceiling). What the two share is the mechanism above: at small hidden
# sizes the quantize passes eat the GEMM savings. (The paper's two abstracts quote the gain
# differently: the arXiv version "up to 35.1%", the NeurIPS 2023 version "17.8% on average for
# sufficiently large models".) Slide the traffic to 3 bytes (fused kernels): the model then
# gains at every size, and the gain creeps towards, never past, 2×. Fusing the memory-bound
# passes is where the engineering goes.

# %% [markdown]
# ## 3. Measuring: the benchmark suite
#
# A model is a hypothesis; `int4lab bench` measures. On a CUDA GPU:
#
# ```bash
# int4lab bench --suite all --out results/h200-2026-01      # timings, results.json, PNG plots
# ```
#
# It times (`int4lab/perf/bench.py`):
# - **gemm**: our `int4_matmul` against `torch.mm` in bf16 (cuBLAS), `torch._int_mm` (int8,
#   cuBLASLt) and `torch._scaled_mm` in FP8, at sizes 1024³ to 8192³ and LLaMA-like shapes;
# - **memory**: `hadamard_quantize`, `quantize_int4`, `bit_split` as a percentage of the copy
#   bandwidth measured in the same run (`torch.clone`, which reads and writes every byte): 100%
#   is the most a memory-bound kernel can reach. The bytes come from a stated model, written into
#   the results per kernel (`bytes_read`, `bytes_written`): the quantizers read x once and write
#   half a byte per value plus the scales; `bit_split` reads its input twice (two passes) and
#   writes two packed halves;
# - **linear**: `Int4Linear` forward + backward against a bf16 `nn.Linear` at hidden 2048, 4096,
#   8192 (the same weights, the same bf16 input), with the time of each quantized piece the layer
#   calls, at the layer's own shapes (the forward GEMM is tokens × d_out × d_in);
# - **block**: one transformer block's training step, bf16 against INT4.
#
# Done right: every case is **checked against the spec before it is timed** (a fast wrong
# kernel is worthless; the layer's Y, dX and dW against the bf16 layer's within stated bounds),
# then the kernel is timed through its fast entry, without the input validation (a host sync
# per call) that the checked entry does; inputs are random (zeros flatter memory-bound kernels),
# and each figure is the median of `triton.testing.do_bench` (warm-up, L2 flushed) over several
# input sets. A case that fails is recorded and the others still run. The results file records
# the GPU, driver, versions and date: a number without its machine means nothing.
#
# ### Recorded results
#
# The lesson looks for recorded GPU runs in `results/*/results.json` and plots the newest.

# %%
recorded = l08.latest_results()
if recorded is None:
    print("No GPU benchmark has been recorded yet (no results/*/results.json with timings).\n"
          "The course was built without a GPU: the roofline and the model above are all this\n"
          "lesson can show. On a CUDA machine, run  int4lab bench --suite all --out results/NAME\n"
          "and run this cell again.")
else:
    print("recorded:", recorded["path"], "|", l08.results_title(recorded))
    display(l08.results_figure(recorded))

# %% [markdown]
# ### A small part of the suite, here and now
#
# On a GPU the next cell times one GEMM size live (two with `FAST` off). On a CPU it runs the
# GEMM suite in **smoke mode**: every case at tiny sizes through Triton's interpreter, checked
# against the spec, **not timed**. Interpreter timings measure Python executing NumPy, not a
# kernel; the course never shows them as speed.

# %%
live = l08.live_gemm(sizes=(4096,) if FAST else (4096, 8192))
print(l08.describe_gemm(live))
if live["timed"]:
    display(l08.results_figure(live))
else:
    print("smoke mode: the checks passed; interpreter timings mean nothing, so none are shown.")

# %% [markdown]
# `int4lab.bench(slot)` does the same for one slot, with your kernel if you unlocked it: on a GPU
# it times yours, the library's and a PyTorch baseline; on a CPU it reports correctness only.

# %%
int4lab.bench("int4_matmul");

# %% [markdown]
# ### Without a GPU: what the compiler says
#
# A benchmark needs a GPU; reading the compiled code does not. `int4lab.inspect` compiles a
# kernel for an H100/H200 (`sm_90`) on this machine and estimates, from the main loop's
# instructions, whether the tensor cores, the instruction issue or the memory would set the pace
# (an estimate with a written-down model, never a timing). Here it is for your `int4_matmul`
# (or the library's, if yours is not there), and for the quantizer that feeds it:

# %%
from int4lab.course import compiled

gemm = compiled.show("int4_matmul", arch="sm_90")
print()
quant = compiled.show("quantize_int4", arch="sm_90")

# %% [markdown]
# What those estimates said about the course's kernels, before and after issue 13 redesigned
# them (`docs/PERFORMANCE.md`; **static estimates from compiled code**, Triton 3.9.0 and 3.6.0,
# `sm_90`, 2026-11-29, model: the larger of tensor-core, issue and DRAM time per loop iteration;
# no GPU has timed them yet):
#
# | kernel | before | after | target |
# |---|---|---|---|
# | `int4_matmul` main loop | 242 other instructions per IGMMA: issue-bound, 26% of the INT8 peak | 37 per IGMMA: tensor-core bound | ≤ 40 per tensor-core instruction |
# | `quantize_int4` | ≈ 41 instructions per value: issue-bound, 41% of DRAM bandwidth | ≈ 13 per value: memory-bound, 100% | ≥ 80% |
# | `hadamard_quantize` | ≈ 75 per value: issue-bound, 23% | ≈ 15 per value: memory-bound, 100% | ≥ 80% |
#
# What changed: the GEMM unpacks in place (16 × each code, four bytes per 32-bit word, a shift
# by 8 at the end: lesson 03) with 256 × 128 tiles; the quantizers load 16 bytes at a time,
# divide with one reciprocal per group, round by adding 1.5·2²³, and rotate with in-register
# butterflies instead of a dot (lessons 02 and 04). Packed operands on a GPU without INT4 tensor
# cores cost instructions: the redesign is about spending few of them per byte moved.
#
# And for a whole layer: `int4lab inspect --layer int4_hq_lss --tokens T --d D` counts, for one
# `Int4Linear` forward + backward, the kernel launches, the host synchronisations (each `.item()`
# or data-dependent shape makes the CPU wait for the GPU) and the full-size memory passes. Each
# is a cost that no GEMM speed-up removes. On a CPU the counts are proxies for a GPU's (the same
# operations run; see `int4lab/perf/layer_counts.py`).

# %%
from int4lab.perf import layer_counts

counts = layer_counts.count_layer("int4_hq_lss", tokens=256, d=128)
print(layer_counts.format_report(counts))

# %% [markdown]
# That is the path this machine runs by default (on a CPU: the spec, or your kernels once
# unlocked): slot by slot, with PyTorch glue between the quantized operations. A GPU runs the
# library's kernels, and for this recipe it runs them **fused** (`kernels/fused_linear.py`):
# the same count on that path, through the interpreter (a few seconds; in a student copy,
# which holds no library kernels, this runs the spec again: the numbers below are the library's):

# %%
fused = layer_counts.count_layer("int4_hq_lss", tokens=256, d=128, impl="triton")
print(layer_counts.format_report(fused))

# %% [markdown]
# Counted for one 4096-token, 1024 → 1024 layer (through the interpreter, 2026-11-29;
# `docs/PERFORMANCE.md`). Slot by slot on the library's kernels: 241 launches (20 of them Triton
# kernels), 17 host syncs and 117 full-size passes per forward + backward, against targets of 14,
# 0 and 25. The kernels were not the problem there: the PyTorch glue between them was (the LSQ
# record and its unpacking, LSS's bookkeeping, seeds and the kept rows' count read back to the
# host). The fused path: **13 launches (11 Triton kernels, a bias add and one small sum), 0 host
# syncs, 11 full passes.** What it took:
#
# - *Every byte written once, in the layout its reader wants.* The kernel that rounds W also
#   writes W's codes packed along the other dim (dX = dY W reduces over C), and the one that
#   gathers the sampled rows for dW writes them packed along the sample, so nothing is
#   unpacked, transposed and repacked in between. The LSQ record is written by the quantize
#   kernel and read by the one that applies the STE and undoes the rotation.
# - *No host sync.* A host sync stalls the GPU's queue until the CPU has read a number. LSS's
#   independent coin flips keep a random number of rows, so sizing the output needed one;
#   systematic sampling keeps each row with the same probability p_i (so the same unbiased
#   1/p_i reweighting) but a number of rows fixed in advance. Seeds are drawn on the host.
# - *Cheap randomness.* A stochastic record or rounding on every value needs a random number
#   per value; Philox costs ~60 instructions a call, a multiply-xorshift hash ~8. In a kernel that
#   moves 3 bytes a value, that is the difference between 22% and 56% of the memory bandwidth
#   (static estimates, sm_90, for the kernel that quantizes X).
#
# At small widths launches and passes, not the GEMMs, set a layer's time: the fewer the better.

# %% [markdown]
# ### Check your understanding
#
# 1. A bf16 GEMM of 512³ and one of 8192³: which is memory-bound on an H200, and why does the
#    INT4 version help the small one more (in the roofline) than the large one?
# 2. Why can no INT4 kernel on an H200 beat bf16 by more than 2×, even a perfect one?
# 3. The paper's operators reached 2.2× on an RTX 3090. Why does that not contradict question 2?
# 4. In a linear layer of hidden size `h` on `t` tokens, how do the GEMM FLOPs and the quantize
#    traffic scale? What does that predict for hidden 1024?
# 5. Why does the suite check each kernel against the spec before timing it, and why random
#    inputs rather than zeros?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. 512³ bf16: `2·512³ / (6·512²) ≈ 171` FLOP/byte, under the ridge (206): memory-bound. 8192³:
#    about 2731 FLOP/byte, compute-bound. Packed INT4 reads a quarter of the input bytes (half of
#    all bytes, with the bf16 output), which raises the small GEMM's attainable throughput
#    directly; for the large one bytes do not matter, only the peak does (2×).
# 2. Hopper has no INT4 tensor cores; INT4 values run on INT8 ones, whose dense peak (1979
#    TOPS) is twice bf16's (989). Packing only saves bytes, not multiply time.
# 3. The RTX 3090 has INT4 tensor cores: 568 dense TOPS, 4× its FP16 peak with FP16
#    accumulation (142) and 8× its FP16 rate with FP32 accumulation (71). 2.2× is under either
#    ceiling. The speed-up depends on the hardware, not just the method.
# 4. GEMMs: `3 · 2·t·h²` FLOPs. Quantize passes: proportional to the elements of X, ∇Y (`t·h`
#    each) and W (`h²`). Their ratio falls like `1/h`: at hidden 1024 the passes cost a large
#    fraction of the GEMM time saved, so expect little or nothing (or a slowdown, unfused).
# 5. A wrong kernel can be very fast (skip work, read nothing); timing it would report a speed
#    that means nothing. Zeros compress in caches and can short-cut work (and hide bugs, since
#    a kernel that writes nothing "matches" a zero result), flattering the timings.

# %% [markdown]
# ## Summary
#
# - The roofline: `attainable = min(peak, bandwidth × FLOP/byte)`. On an H200, bf16 989 TFLOP/s
#   and int8 1979 TOPS dense, HBM 4.8 TB/s (an H100 SXM: the same peaks, 3.35 TB/s). The time
#   model assumes about 780 TFLOP/s and 4.3 TB/s: planning estimates, not measurements.
# - Hopper has no INT4 tensor cores: INT4-in-INT8 is capped at **2× bf16**. The paper's 2.2× was
#   INT4 tensor cores on an RTX 3090.
# - A linear layer's step is three GEMMs plus memory-bound quantize passes; the passes shrink
#   relative to the GEMMs as `1/hidden`, which is why the paper measured a slowdown at 2560,
#   break-even at 4096 and 35.1% less wall time at 8960. Fusing the passes is the lever.
# - Measure with `int4lab bench`: checked before timed, random inputs, medians of `do_bench`,
#   machine and date recorded. On a CPU it checks and never times.
#
# **Next: lesson 09, beyond INT4.** Newer GPUs dropped INT4 tensor cores for small *floating
# point* formats: FP8 on Hopper, FP4 (MXFP4, NVFP4) on Blackwell. How do they handle outliers
# compared with INT4 and the Hadamard rotation?

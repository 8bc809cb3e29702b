# %% [markdown]
# # Lesson 01 · INT4 numbers and packing
#
# The method we are building (Xi, Li, Chen, Zhu, *Training Transformers with 4-bit Integers*,
# NeurIPS 2023) runs every linear layer of a transformer on 4-bit integers. Before any kernel,
# we need the numbers themselves: what 4 bits can hold, how real numbers are mapped onto them,
# what that costs in accuracy, and how to store them compactly.
#
# **By the end of this lesson you can**
# 1. list the 16 values of a 4-bit two's complement integer and read any bit pattern;
# 2. quantize a tensor with a symmetric per-tensor scale `s = max|x| / 7` and predict its error;
# 3. explain why one outlier ruins a per-tensor scale;
# 4. compare round-to-nearest and stochastic rounding: bias and variance;
# 5. write Triton kernels that pack two INT4 values into each byte and unpack them, unlock them
#    and benchmark them.

# %%
# %matplotlib inline
import int4lab
import torch
import triton
import triton.language as tl

from int4lab import runtime
from int4lab.course import l01_numbers as l01
from int4lab.spec.quantizers import quantize, dequantize, make_generator
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
print("kernels run:", runtime.describe())

# %% [markdown]
# ## 1. What 4 bits can hold
#
# Four bits make 2⁴ = 16 patterns. Read as a **two's complement** integer, the top bit is worth
# −8 instead of +8, so the patterns `0000`…`0111` are 0…7 and `1000`…`1111` are −8…−1. The range
# is lopsided: −8 exists, +8 does not.
#
# Why two's complement? It has a single zero, and adding, subtracting and multiplying (keeping
# the low bits) work exactly as for unsigned numbers: the integer hardware is the same.

# %%
print(" bits  unsigned  INT4")
for bits, unsigned, value in l01.nibble_table():
    print(f" {bits}  {unsigned:8d}  {value:4d}")

# %%
l01.twos_complement_figure()

# %% [markdown]
# ## 2. Symmetric scaling: from real numbers to INT4
#
# A tensor of real numbers `x` is stored as integer **codes** `q` and one **scale** `s`, with
# `x ≈ s · q`. The paper (sec. 3, eq. 1) quantizes with
#
# $$ q = \mathrm{round}\big(\mathrm{clamp}(x / s,\ -Q_N,\ Q_P)\big), \qquad Q_N = Q_P = 7 \text{ for INT4}. $$
#
# The simplest choice of scale makes the largest magnitude land on the top code:
# **`s = max|x| / 7`**. It is *symmetric* (±7, so `−x` quantizes to `−q`; the code −8 is left
# unused) and *per tensor* (one scale for the whole tensor). The released code of the paper
# clamps to [−8, 7]; this course follows the paper's symmetric text.
#
# The library's spec does this: `int4lab.spec.quantizers.quantize(x, bits=4, granularity="tensor")`
# returns the codes (int8) and the scale; `dequantize(codes, scale)` gives back `s · q`.

# %%
x = torch.tensor([0.3, -1.1, 0.5, 2.8])
codes, scale = quantize(x, bits=4, granularity="tensor")
x_hat = dequantize(codes, scale)
print(f"scale s = max|x|/7 = {float(scale):.4f}")
print("codes q            =", codes.tolist())
print("s * q              =", [round(v, 4) for v in x_hat.tolist()])
print("error s*q - x      =", [round(v, 4) for v in (x_hat - x).tolist()])

# %% [markdown]
# **The error.** Rounding moves each value to the nearest grid point `s·q`, so the error of a
# value inside the range is at most `s/2`. When the values fall evenly between grid points, the
# error is spread uniformly over `[−s/2, s/2]` and its root mean square is `s/√12 ≈ 0.29 s`.
# The scale sets everything: a bigger `max|x|` means a bigger step for *every* value.
#
# Here is a tensor of 512 values from N(0, 1). Move the `outlier` slider to replace one value by a
# large one (real activations have such outlier channels), and watch the step size, the number
# of grid levels the other 511 values still use, and their error. `bits` switches to INT8 for
# comparison.

# %%
l01.quantization_figure(outlier=0.0, bits=4)

# %%
interactive_plot(l01.quantization_figure, outlier=(0.0, 30.0, 1.0, 0.0), bits=[4, 8]);

# %%
x = l01.sample_tensor(512, outlier=0.0)
x_out = l01.sample_tensor(512, outlier=20.0)
for name, t, excl in (("no outlier      ", x, ()), ("one outlier = 20", x_out, (0,))):
    st = l01.quantization_stats(t, bits=4, exclude=excl)
    print(f"{name}: scale {st['scale']:.3f}, the bulk uses {st['levels_used']:2d} of 15 levels, "
          f"RMS error of the bulk {st['rms_error']:.3f}")

# %% [markdown]
# With one value of 20 among values of size about 1, the step becomes 20/7 ≈ 2.9: nearly every
# other value rounds to −s, 0 or +s, and the bulk's error grows about fivefold. This is *the*
# problem of INT4 training. The paper's ablation (Table 4) trains with per-tensor, per-token and
# per-channel INT4 scales and gets a score of 0 on CoLA with all of them; its fix, the Hadamard
# quantizer, spreads each outlier over a block of values before quantizing (lesson 04).
# INT8 has 255 levels, so the same outlier costs much less: that is why INT8 training is easy
# and INT4 is not.

# %% [markdown]
# ## 3. Rounding: to nearest, or stochastic?
#
# **Round to nearest (RTN)** is deterministic: `v = 2.3` (in units of the step) always becomes 2.
# For that value the error is always −0.3: RTN is **biased** for any value that is not on the
# grid.
#
# **Stochastic rounding (SR)** rounds up with probability equal to the fractional part:
# `2.3` becomes 3 with probability 0.3 and 2 with probability 0.7, so on average it gives
# 0.3·3 + 0.7·2 = 2.3. SR is **unbiased**: E[SR(v)] = v. The price is noise: one draw has
# variance f·(1−f) (f the fractional part), up to 1/4 of a step squared.
#
# Why would training care? Gradients are summed over many steps. A bias adds up step after step;
# noise averages out. Worse, a gradient smaller than half a step is *always* rounded to 0 by RTN
# and is lost, while SR keeps it in expectation. The paper uses RTN in the forward pass and
# stochastic rounding for part of the gradients (its bit-splitting quantizer, lesson 06), so the
# gradient estimate stays unbiased.
#
# Left: the bias of both roundings for values between −2 and 2 steps (SR measured over many draws,
# with the spread of one draw). Right: the average of k stochastic roundings of one value
# approaches it; RTN never moves. Try a value below 0.5 on the slider.

# %%
SAMPLES = 500 if FAST else 4000
l01.rounding_figure(value=0.3, samples=SAMPLES)

# %%
interactive_plot(lambda value: l01.rounding_figure(value=value, samples=SAMPLES),
                 value=(-1.5, 1.5, 0.05, 0.3));

# %% [markdown]
# The same numbers, with the spec's `quantize(..., rounding="stochastic")`. Over values spread
# evenly between grid points, RTN's mean squared error is 1/12 of a step squared and SR's is
# 1/6: SR trades twice the error for zero bias. (SR's measured bias is not exactly 0 because it
# is an average over a finite number of draws; that noise shrinks as 1/√draws.)

# %%
grid = torch.linspace(-2, 2, 401)
st = l01.rounding_stats(grid, samples=SAMPLES)
for mode in ("nearest", "stochastic"):
    print(f"{mode:10}: largest |bias| measured {st[mode]['bias'].abs().max():.3f}, "
          f"mean squared error {st[mode]['mse'].mean():.3f} (in steps squared)")

small = torch.full((SAMPLES,), 0.3)            # a gradient of 0.3 steps, SAMPLES times
codes_rtn, s = quantize(small, scale=1.0, rounding="nearest")
codes_sr, s = quantize(small, scale=1.0, rounding="stochastic", generator=make_generator(0))
print(f"sum of {SAMPLES} values of 0.3: exact {0.3 * SAMPLES:.0f}, RTN {int(codes_rtn.sum())}, "
      f"SR {int(codes_sr.sum())}")

# %% [markdown]
# ### Check your understanding (numbers)
#
# 1. How many values does INT4 have, and how many does a symmetric quantizer (`Q_N = Q_P = 7`)
#    use? Which one is left out, and why leave it?
# 2. `x = [0.3, −1.1, 0.5, 2.8]`. Compute `s`, the codes and the error by hand, then compare
#    with the output of section 2.
# 3. Stochastic rounding of `v = 2.3`: which results, with what probabilities? Its mean and
#    variance?
# 4. A tensor of N(0, 1) values has one outlier of 30. About how many grid levels do the other
#    values use in INT4? In INT8?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. 16 values, −8…7. The symmetric quantizer uses 15, −7…7, leaving out −8. Symmetry makes
#    `quantize(−x) = −quantize(x)`, and the largest magnitude maps to ±7 exactly.
# 2. `s = 2.8 / 7 = 0.4`; `x / s = [0.75, −2.75, 1.25, 7]`, rounded `[1, −3, 1, 7]`;
#    `s·q = [0.4, −1.2, 0.4, 2.8]`; errors `[0.1, −0.1, −0.1, 0]`, all within `s/2 = 0.2`.
# 3. 3 with probability 0.3, 2 with probability 0.7. Mean 2.3 (unbiased), variance
#    0.3 · 0.7 = 0.21 steps squared.
# 4. The step is 30/7 ≈ 4.3, and the bulk lies within about ±3, so nearly all of it rounds to 0
#    (only values beyond ±2.1 reach ±1): about 3 levels. In INT8 the step is 30/127 ≈ 0.24, so
#    some 25 levels. Move the slider to check.

# %% [markdown]
# ## 4. Packing: two INT4 values per byte
#
# Neither PyTorch nor Triton has a 4-bit type. The course keeps INT4 **values** in int8 (the
# codes above are int8 tensors), and the GEMM of lesson 03 computes with them on int8 tensor
# cores. But **storing** them as int8 wastes half of every byte, and INT4 kernels are often
# limited by memory traffic: moving half the bytes is the point of 4 bits. So we store them
# packed, two per byte.
#
# **The contract** (every kernel and lesson of the course uses it, `int4lab/spec/packing.py`):
# INT4 values in [−8, 7], held in int8, are packed **along the last dimension**, two per byte,
# into **uint8**: element `2j` in the **low nibble** (bits 3…0) of byte `j`, element `2j+1` in
# the **high nibble** (bits 7…4). A `(…, K)` int8 tensor (K even) becomes a `(…, K/2)` uint8
# tensor. Unpacking reads each nibble back as a two's complement number.

# %%
l01.packing_figure((3, -1, -8, 7, 0, 5))

# %% [markdown]
# The bit operations, on plain Python integers first:
#
# - `v & 0xF` keeps the low 4 bits. For a negative int8 that *is* its two's complement nibble:
#   `-1 & 0xF == 15`, `-8 & 0xF == 8`.
# - `lo | (hi << 4)` puts two nibbles in one byte.
# - Unpacking: `b & 0xF` is the low nibble, `(b >> 4) & 0xF` the high one, and a nibble
#   `n >= 8` stands for `n - 16` (**sign extension**: forget it and −1 comes back as 15).

# %%
lo, hi = 3, -1
byte = (lo & 0xF) | ((hi & 0xF) << 4)
print(f"pack 3 and -1   -> {byte} = 0b{byte:08b}")
n_lo, n_hi = byte & 0xF, (byte >> 4) & 0xF
print(f"unpack {byte}      -> nibbles {n_lo}, {n_hi} -> values {l01.nibble_value(n_lo)}, {l01.nibble_value(n_hi)}")

# %% [markdown]
# And the slots: `int4lab.pack_int4` and `int4lab.unpack_int4` run the active implementation
# (on a CPU, the spec, until you unlock yours).

# %%
q = torch.tensor([[3, -1, -8, 7, 0, 5]], dtype=torch.int8, device=runtime.DEVICE)
p = int4lab.pack_int4(q)
print("packed:", p.tolist(), p.dtype, "| ran:", int4lab.last_ran("pack_int4"))
print("unpacked:", int4lab.unpack_int4(p).tolist(), "| ran:", int4lab.last_ran("unpack_int4"))

# %% [markdown]
# ### The plan for the kernels
#
# A `(R, K)` tensor is, in memory, one flat array of `R·K` values (after `.contiguous()`).
# Because `K` is even, flat byte `j` of the output always takes flat inputs `2j` and `2j+1`:
# a pair never straddles two rows. So the kernel can ignore rows entirely and use a 1-D grid, as
# `vector_add` did:
#
# - **pack:** each program owns `BLOCK` output bytes `offs`. It loads the even inputs at
#   `2·offs` and the odd ones at `2·offs + 1` (two strided loads, like `take_even_kernel` in
#   lesson 00), keeps the low 4 bits of each, shifts the odd one up and ORs them. Convert to
#   `tl.int32` *before* `& 0xF` and `<< 4`, so that every intermediate holds its true value: a
#   nibble shifted left reaches 240, beyond int8, where `15 << 4` wraps to −16. (Here the wrap
#   happens to be harmless: the low 8 bits, which the final `tl.uint8` store keeps, are the same,
#   so the checks cannot tell the two apart. It is not harmless the moment you compare or add
#   such a value, and the cell below shows it.) Store as `tl.uint8`.
# - **unpack:** each program owns `BLOCK` input bytes. It loads them (as int32), splits the two
#   nibbles, sign-extends each (`tl.where(n >= 8, n - 16, n)`), and writes them with two
#   strided stores to `2·offs` and `2·offs + 1` as `tl.int8`.
# - Mask every load and store with `offs < n_bytes`. The checks use last dimensions such as 34
#   and 130, which are not multiples of any power-of-two block, and empty tensors (launch
#   nothing when there are no bytes).
#
# The library's kernels (`kernels/pack_int4.py`, `kernels/unpack_int4.py`) follow this plan;
# `int4lab.reveal("pack_int4")` prints one if you are stuck (and records it as revealed).

# %%
# int8 wraps where int32 does not (torch shifts the same way Triton does)
nib = torch.tensor([15], dtype=torch.int8)
print("15 << 4 in int8: ", int(nib << 4), "  its 8 bits as a byte:", int((nib << 4).view(torch.uint8)))
print("15 << 4 in int32:", int(nib.to(torch.int32) << 4))
print("is it above 127?  int8 says", bool((nib << 4) > 127), "  int32 says", bool((nib.to(torch.int32) << 4) > 127))

# %% tags=["exercise"] int4lab={"slot": "pack_int4"}
# %%exercise pack_int4
import torch
import triton
import triton.language as tl

from int4lab.spec.packing import validate_pack


@triton.jit
def pack_int4_kernel(q_ptr, p_ptr, n_bytes, BLOCK: tl.constexpr):
    # q: flat int8 INT4 values (2 * n_bytes of them); p: flat uint8 output (n_bytes).
    # TODO 1: this program's output byte offsets (program_id, arange) and a mask offs < n_bytes.
    # TODO 2: load the even values (index 2*offs) and the odd values (2*offs + 1), masked.
    # TODO 3: convert both to tl.int32, keep the low 4 bits of each (& 0xF),
    #         shift the odd ones up by 4 and OR them with the even ones.
    # TODO 4: store the bytes as tl.uint8 (masked).
    pass


def pack_int4(q: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """(..., K) int8 in [-8, 7], K even -> (..., K/2) uint8: q[..., 2j] low nibble, q[..., 2j+1]
    high. Validates, flattens, launches one program per BLOCK output bytes."""
    validate_pack(q)
    # TODO 1: q = q.contiguous(), so that its memory is one flat array in order.
    # TODO 2: allocate p: shape (*q.shape[:-1], q.shape[-1] // 2), dtype torch.uint8, on q.device.
    # TODO 3: n_bytes = p.numel(); when it is 0, return p (a grid of 0 programs is an error).
    # TODO 4: launch pack_int4_kernel on (triton.cdiv(n_bytes, BLOCK),) programs; return p.
    raise NotImplementedError("pack_int4: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("pack_int4")

# %% tags=["exercise"] int4lab={"slot": "unpack_int4"}
# %%exercise unpack_int4
import torch
import triton
import triton.language as tl

from int4lab.spec.packing import validate_unpack


@triton.jit
def unpack_int4_kernel(p_ptr, q_ptr, n_bytes, BLOCK: tl.constexpr):
    # p: flat uint8 packed bytes (n_bytes); q: flat int8 output (2 * n_bytes values).
    # TODO 1: this program's input byte offsets and a mask offs < n_bytes.
    # TODO 2: load the bytes (masked) and convert them to tl.int32.
    # TODO 3: split each byte into its low nibble (& 0xF) and high nibble (>> 4, then & 0xF).
    # TODO 4: sign-extend both: a nibble n >= 8 means n - 16 (tl.where).
    # TODO 5: store the low nibbles at 2*offs and the high ones at 2*offs + 1, as tl.int8 (masked).
    pass


def unpack_int4(p: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8, each nibble sign-extended; the inverse of pack_int4.
    Validates, flattens, launches one program per BLOCK input bytes."""
    validate_unpack(p)
    # TODO 1: p = p.contiguous().
    # TODO 2: allocate q: shape (*p.shape[:-1], 2 * p.shape[-1]), dtype torch.int8, on p.device.
    # TODO 3: n_bytes = p.numel(); when it is 0, return q.
    # TODO 4: launch unpack_int4_kernel on (triton.cdiv(n_bytes, BLOCK),) programs; return q.
    raise NotImplementedError("unpack_int4: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("unpack_int4")

# %% [markdown]
# `unlock` compared your functions with the spec on odd shapes (1, 3, 127 and 129 rows of 34
# values, 3×130, 1×2, an empty tensor and a non-contiguous view), and on a failure it tries to
# say why: swapped nibbles, a missing sign extension, a wrong dtype.
#
# ## 5. Putting it together
#
# Quantize a matrix to INT4 codes with the spec, pack it, unpack it: the round trip is exact, and
# the packed matrix takes half the bytes. These cells run whichever implementation is active (yours
# if unlocked) and say which.

# %%
ROWS, K = (4096, 4096) if runtime.HAS_CUDA else ((64, 256) if FAST else (256, 1024))
torch.manual_seed(0)
w = torch.randn(ROWS, K, device=runtime.DEVICE)
codes, scale = quantize(w, bits=4, granularity="tensor")

packed = int4lab.pack_int4(codes)
print("pack_int4 ran:  ", int4lab.last_ran("pack_int4"))
back = int4lab.unpack_int4(packed)
print("unpack_int4 ran:", int4lab.last_ran("unpack_int4"))

print(f"codes  {tuple(codes.shape)} int8:  {codes.numel() * codes.element_size():>10,} bytes")
print(f"packed {tuple(packed.shape)} uint8: {packed.numel() * packed.element_size():>10,} bytes")
print("round trip exact:", torch.equal(back, codes))
print(f"relative error of s*q vs w: {float((dequantize(back, scale) - w).norm() / w.norm()):.3f}")

# %% [markdown]
# ## 6. Benchmark
#
# On a GPU, `bench` times your kernels, the library's and a PyTorch copy of the unpacked data
# (`torch.clone`), in GB/s of memory moved: packing reads 1 byte and writes half a byte per
# value, so a good kernel should approach the copy's bandwidth. On a CPU it checks correctness
# only: an interpreter time would measure Python.

# %%
result_pack = int4lab.bench("pack_int4")

# %%
result_unpack = int4lab.bench("unpack_int4")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding (packing)
#
# 1. Which byte does `pack_int4` make of the pair `(q[2j], q[2j+1]) = (-8, -1)`? Unpack the byte
#    `0x7F` by hand.
# 2. Why does treating a `(R, K)` tensor as one flat array work only because `K` is even? What
#    would go wrong for `K = 3`?
# 3. In the pack kernel, why convert to `tl.int32` before `<< 4`?
# 4. Your unpack kernel returns 15 where the spec has −1. Which step is missing?
# 5. A `(4096, 4096)` INT4 matrix: how many bytes as int8 codes, and packed? What does that
#    change for a kernel that is limited by memory bandwidth?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. `-8 & 0xF = 8` (low nibble), `-1 & 0xF = 15` (high nibble): `8 | 15 << 4 = 248 = 0xF8`.
#    `0x7F`: low nibble `0xF = 15` → −1 (element 2j), high nibble `0x7` = 7 (element 2j+1).
# 2. Packing pairs elements along each row. With `K` even, flat positions `2j` and `2j+1` are
#    always in the same row, so pairing the flat array pairs each row. With `K = 3`, flat
#    elements 2 and 3 are the end of row 0 and the start of row 1: a byte would mix two rows
#    (and a row could not be packed on its own anyway, which is why the contract requires an
#    even last dimension).
# 3. After `& 0xF` a nibble is 0…15; shifted left by 4 it is up to 240, which does not fit in
#    int8 (at most 127): in int8 it wraps (240 becomes −16). In int32 every step holds its true
#    value. For the stored byte it makes no difference (the wrapped int8 has the same 8 bits, and
#    `.to(tl.uint8)` keeps exactly those), which is why no check can catch it; it matters as
#    soon as the value is used as a number (compared, added, scaled), as in the cell above.
# 4. Sign extension: a nibble `n >= 8` stands for `n - 16`.
# 5. 16,777,216 bytes as int8 codes, 8,388,608 packed. A memory-bound kernel's time is roughly
#    bytes moved / bandwidth, so reading packed operands takes about half the time.

# %% [markdown]
# ## Summary
#
# - INT4 has 16 values, −8…7; the course's symmetric quantizer uses −7…7 with `s = max|x| / 7`,
#   so the error of each value is at most `s/2` (RMS about `s/√12`).
# - One outlier inflates a per-tensor scale and wipes out the resolution of every other value:
#   the central difficulty of 4-bit training, which the paper's Hadamard quantizer addresses.
# - Round to nearest is deterministic and biased per value; stochastic rounding is unbiased with
#   more variance, which is what gradients need.
# - Packed storage: element `2j` in the low nibble, `2j+1` in the high nibble, uint8, along the
#   last dimension. You wrote the Triton kernels for both directions.
#
# **Next: lesson 02, the quantize kernel.** One pass that computes the scale, quantizes and
# packs, per row or per block: `int4lab.quantize_int4`, built on what you wrote today.

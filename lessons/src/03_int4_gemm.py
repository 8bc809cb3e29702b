# %% [markdown]
# # Lesson 03 · The INT4 GEMM
#
# A linear layer is a matrix product, `Y = X Wᵀ`, and in a transformer the linear layers are
# most of the work. The whole point of 4-bit training (Xi, Li, Chen, Zhu, *Training Transformers
# with 4-bit Integers*, NeurIPS 2023) is to run these products on 4-bit integers. This lesson
# builds that product, the INT4 GEMM, and is honest about what it can gain on today's GPUs.
#
# **By the end of this lesson you can**
# 1. turn a float GEMM into an integer GEMM of codes followed by one multiplication by the
#    scales, and say which scales allow it;
# 2. explain why an INT4 dot product accumulated in int32 is *exact* (`|sum| ≤ 64·K`);
# 3. describe a tiled GEMM kernel: one program per output tile, a loop over `K`, masks;
# 4. explain why an H100/H200 has no INT4 tensor cores, how INT4 values run on its INT8 ones, and
#    why that caps the gain at 2× BF16 (the paper's 2.2× came from an RTX 3090);
# 5. multiply *packed* operands with no interleaving: dot of the low nibbles plus dot of the
#    high nibbles, unpacked *in place* (16 × each code, no sign extension);
# 6. read a roofline and a compiled kernel's instruction mix, and write `int4_matmul`.

# %%
# %matplotlib inline
import int4lab
import torch

from int4lab import runtime
from int4lab.course import l03_gemm as l03
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import dequantize, int4_matmul_spec, quantize
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
DEVICE = runtime.DEVICE
print(runtime.describe())

# %% [markdown]
# ## 1. From a float GEMM to an integer GEMM
#
# Quantize each row of `X` (M × K) and each row of `W` (N × K) with its own scale (lesson 02):
# `X[m, k] ≈ s_m · q_X[m, k]` and `W[n, k] ≈ t_n · q_W[n, k]`. Then
#
# $$Y[m, n] = \sum_k X[m,k]\,W[n,k] \;\approx\; s_m\, t_n \underbrace{\sum_k q_X[m,k]\, q_W[n,k]}_{\text{integers only}} .$$
#
# The scales do not depend on `k`, so they leave the sum: the expensive part (`2·M·N·K`
# operations) is a product of small integers, and the scales cost one multiplication per output
# at the end (the *epilogue*). A scale per row of `X`, per row of `W` or per tensor works; a scale
# per column `k` would not. Let's check it on small matrices:

# %%
g = torch.Generator().manual_seed(0)
X = torch.randn(4, 64, generator=g)
W = torch.randn(3, 64, generator=g)
qx, sx = quantize(X, bits=4, granularity="row")           # codes int8, scales (4, 1)
qw, sw = quantize(W, bits=4, granularity="row")           # codes int8, scales (3, 1)

fake = dequantize(qx, sx) @ dequantize(qw, sw).T          # float GEMM of the rounded values
integer = (qx.long() @ qw.long().T)                        # integer GEMM of the codes...
scaled = integer.float() * sx * sw.T                       # ...then one multiply per output
print("integer sums:\n", integer)
print("same as the float GEMM of the quantized values:", torch.allclose(fake, scaled, rtol=1e-6))
print(f"error vs the fp32 product: {l03.relative_error(scaled, X @ W.T):.1%}")

# %% [markdown]
# The library's spec for the INT4 GEMM, `int4lab.spec.quantizers.int4_matmul_spec(a, a_scale, b, b_scale)`,
# does exactly this from *packed* operands (two codes per byte along `K`, lesson 01). `b` is laid
# out like an `nn.Linear` weight, `(out, in)`, so the product is `A · Bᵀ`:

# %%
a, b = int4lab.pack_int4(qx), int4lab.pack_int4(qw)       # (4, 32) and (3, 32) uint8
print("packed shapes:", tuple(a.shape), tuple(b.shape))
print("spec == scaled integer GEMM:", torch.allclose(int4_matmul_spec(a, sx, b, sw), scaled))
print("raw int32 product:", torch.equal(int4_matmul_spec(a, sx, b, sw, out_dtype=torch.int32),
                                        integer.int()))

# %% [markdown]
# ## 2. Why int32 accumulation is exact
#
# An INT4 code lies in `[-8, 7]`, so one product lies in `[-56, 64]`: at most 64 in size
# (`-8 · -8`). A dot product of length `K` is therefore an integer with `|sum| ≤ 64·K`, and so is
# every partial sum on the way. An accumulator is exact as long as it can hold every integer up to
# that size:
#
# | accumulator | exact integers up to | exact for K up to |
# |---|---|---|
# | bf16 (8-bit significand) | 256 | 4 |
# | fp16 (11 bits) | 2 048 | 32 |
# | fp32 (24 bits) | 16 777 216 | 262 144 |
# | **int32** | 2 147 483 647 | **33 554 431** |
#
# So an int32 accumulator makes the INT4 GEMM *exact* for any `K` a transformer will ever have:
# the only errors are the quantization's, never the arithmetic's. (A float GEMM rounds at every
# addition; this one does not round at all until the epilogue.)

# %%
l03.accumulation_figure(K=4096)

# %% [markdown]
# The worst case, every code `-8`, with `K = 2048`: each output is `64 · 2048 = 131072`, exact
# in int32. Ask for an fp16 output and it overflows (fp16's largest value is 65504):

# %%
worst = int4lab.pack_int4(torch.full((3, 2048), -8, dtype=torch.int8, device=DEVICE))
one = torch.tensor(1.0, device=DEVICE)                                   # per-tensor scale 1
c32 = int4lab.int4_matmul(worst, one, worst, one, out_dtype=torch.int32)
c16 = int4lab.int4_matmul(worst, one, worst, one, out_dtype=torch.float16)
print("ran:", int4lab.last_ran("int4_matmul"))
print("int32:", c32[0].tolist(), " fp16:", c16[0].tolist(), " bound 64K =", l03.worst_case_sum(2048))

# %% [markdown]
# ## 3. Tiling: one program per tile of C
#
# A GEMM kernel does not compute one output per program: it would read a whole row of `A` and a
# whole row of `B` to produce a single number. Instead each program owns a `BLOCK_M × BLOCK_N`
# **tile of C** and walks along `K` in steps of `BLOCK_K`: at each step it loads a
# `BLOCK_M × BLOCK_K` tile of `A` and a `BLOCK_N × BLOCK_K` tile of `B` and adds their product
# into an accumulator tile that stays in registers. Every loaded value of `A` serves `BLOCK_N`
# outputs, and every value of `B` serves `BLOCK_M` outputs.
#
# The tiles form a grid of `cdiv(M, BLOCK_M) × cdiv(N, BLOCK_N)`, and each program works out
# which tile `(pid_m, pid_n)` is its own. Tiles at the bottom and right edges hang over `M` and
# `N`, and the last `K` step over `K`: mask them all (a masked load with `other=0` adds nothing).
# (The course's kernel numbers its programs `0, 1, 2, ...` on a 1-D grid and maps each number to
# a tile in *groups*: `GROUP_M` tiles down a column, then the next column, as in Triton's matmul
# tutorial. Programs that run at the same time then share rows of `A` and columns of `B`, which
# come from the L2 cache instead of memory. That mapping is given code.)

# %%
l03.tiling_figure(M=200, N=150, BLOCK_M=64, BLOCK_N=64, K=256, BLOCK_K=32, pid_m=1, pid_n=1)

# %%
interactive_plot(l03.tiling_figure, M=(16, 512, 16, 200), N=(16, 512, 16, 150),
                 BLOCK_M=[64, 16, 32, 128], BLOCK_N=[64, 16, 32, 128], pid_m=(0, 4, 1, 1),
                 pid_n=(0, 4, 1, 1));

# %% [markdown]
# Bigger tiles mean fewer re-reads: all programs together read `A` once per column of tiles and
# `B` once per row of tiles (caches aside). For a 4096³ INT4 GEMM (packed, half a byte per value):

# %%
M = N = K = 4096
ideal = 0.5 * (M * K + N * K)
for blk in (16, 32, 64, 128, 256):
    moved = l03.tile_traffic(M, N, K, blk, blk)
    print(f"tiles {blk:3} x {blk:3}: A and B read {moved / 2**20:8.0f} MiB = {moved / ideal:4.0f}x "
          "the operands' size")

# %% [markdown]
# ## 4. INT4 on GPUs that have no INT4
#
# A GEMM gets its speed from **tensor cores**, units that multiply small matrix tiles in one
# instruction. Which number formats they take depends on the GPU generation:
#
# | GPU | INT4 tensor cores? | dense peaks (TFLOP/s or TOPS) |
# |---|---|---|
# | RTX 3090 (Ampere), the paper's speed test | **yes** | FP16 142 (71\*), INT4 568: 4× (**8×**\*) |
# | A100 (Ampere) | yes | FP16 312, INT4 1248: 4× |
# | RTX 4090 (Ada) | yes | INT4 = 4× FP16 (8×\*) |
# | **H100 / H200 (Hopper)** | **no**: f16, bf16, tf32, fp8, int8 | BF16 989, INT8 1979 (2×) |
# | Blackwell | no (it has FP4 formats instead) | |
#
# \* The GeForce cards' FP16 peak (142 on the RTX 3090) is with FP16 accumulation; with the FP32
# accumulation that training GEMMs use it is half (71), so their INT4 is 8× that. The A100 runs
# FP16 at 312 with either accumulation.
#
# And Triton has no INT4 dot on any GPU: `tl.dot` takes `int8 × int8` and accumulates in int32.
# So the course's kernel keeps the INT4 values (`|q| ≤ 8`) in **int8 registers** and runs them on
# the **INT8 tensor cores**; the sums stay exact (section 2). Two consequences:
#
# - On an H100/H200 the ceiling is INT8's: **at most 2× BF16**, not the 4–8× of INT4 tensor
#   cores. The paper's "up to 2.2×" over FP16 was measured on an RTX 3090 with its INT4 tensor
#   cores; do not expect it on Hopper.
# - Packing still pays: the operands travel from memory at **half a byte per value**, half the
#   traffic of int8 storage. The unpacking happens in registers, but it is not free: every
#   instruction spent on nibbles is one the GPU must issue (section 10 counts them).

# %% [markdown]
# ## 5. Packed operands: low nibbles with low, high with high
#
# Byte `j` of a packed row holds code `2j` (even `k`) in its low nibble and code `2j+1` (odd `k`)
# in its high nibble. One could unpack a tile and *interleave* the nibbles back into `k` order
# before the dot. There is no need: a dot product is a sum, and a sum can be taken in any order.
# Split it into even and odd `k`:
#
# $$\sum_{k} A_{mk} B_{nk} = \sum_{j} A_{m,2j}\,B_{n,2j} + \sum_{j} A_{m,2j+1}\,B_{n,2j+1} = \text{lo}(A)\,\text{lo}(B)^\top + \text{hi}(A)\,\text{hi}(B)^\top .$$
#
# So a byte tile of `A` gives two int8 tiles (its low nibbles, its high nibbles), likewise for
# `B`, and two `tl.dot`s add into one int32 accumulator. The only rule: pair low with low and
# high with high **in both operands**. Sign extension turns a nibble `n` in `0..15` into its code:
# `n - 16` when `n ≥ 8` (`0xF → -1`, `0x8 → -8`).

# %%
qa = torch.randint(-8, 8, (5, 16), generator=g, dtype=torch.int8)
qb = torch.randint(-8, 8, (6, 16), generator=g, dtype=torch.int8)
pa, pb = int4lab.pack_int4(qa), int4lab.pack_int4(qb)     # (5, 8) and (6, 8) bytes

lo_a, hi_a = unpack_int4(pa)[:, 0::2], unpack_int4(pa)[:, 1::2]   # low nibbles = even k
lo_b, hi_b = unpack_int4(pb)[:, 0::2], unpack_int4(pb)[:, 1::2]
full = qa.int() @ qb.int().T
split = lo_a.int() @ lo_b.int().T + hi_a.int() @ hi_b.int().T
crossed = lo_a.int() @ hi_b.int().T + hi_a.int() @ lo_b.int().T
print("lo·loᵀ + hi·hiᵀ == A·Bᵀ:", torch.equal(split, full))
print("lo·hiᵀ + hi·loᵀ == A·Bᵀ:", torch.equal(crossed, full), "(the classic bug)")

nibbles = torch.arange(16)
print("nibble:", nibbles.tolist())
print("code:  ", torch.where(nibbles >= 8, nibbles - 16, nibbles).tolist())

# %% [markdown]
# ### Unpacking in place: 16 × the code, no sign extension
#
# Shifting a nibble down, comparing it with 8 and subtracting 16 costs several instructions per
# value. There is a cheaper way. Read the byte as **int8**: its high nibble sits in the top four
# bits, *sign bit included*. Clear the low four bits, `byte & 0xF0`, and the int8 you have is
# exactly 16 × the signed high code (`0x80 → -128 = 16 · -8`, `0x70 → 112 = 16 · 7`). Shift the
# byte left by four in int8, `byte << 4`, and the low nibble moves to the top: 16 × the signed
# low code. Both operands of each dot then carry a factor 16, so the int32 accumulator holds
# `256 ×` the true sum; one arithmetic shift right by 8 after the loop gives it back exactly
# (every term is a multiple of 256). Checked on all 256 bytes and on the product above:

# %%
byte = torch.arange(256).to(torch.uint8)
codes = unpack_int4(byte[:, None])                         # (256, 2): low code, high code
as_int8 = byte.view(torch.int8)
print("byte << 4 == 16 x low code: ", torch.equal(as_int8 << 4, 16 * codes[:, 0]))
print("byte & 0xF0 == 16 x high code:", torch.equal(as_int8 & -16, 16 * codes[:, 1]),
      "(-16 is 0xF0 as an int8)")

lo16_a, hi16_a = pa.view(torch.int8) << 4, pa.view(torch.int8) & -16
lo16_b, hi16_b = pb.view(torch.int8) << 4, pb.view(torch.int8) & -16
acc = lo16_a.int() @ lo16_b.int().T + hi16_a.int() @ hi16_b.int().T
print("acc == 256 x A·Bᵀ:", torch.equal(acc, 256 * full), "  acc >> 8 == A·Bᵀ:",
      torch.equal(acc >> 8, full))

# %% [markdown]
# Two refinements make it cheap on a GPU:
#
# - **Four bytes at a time.** The kernel views each run of 4 bytes along `K` as one 32-bit word
#   (the given helpers `_words` and `_bytes`; on a GPU the 4 bytes share one register anyway).
#   One shift and one AND then handle 8 nibbles: `(w << 4) & 0xF0F0F0F0` gives the low nibbles,
#   `w & 0xF0F0F0F0` the high ones; the mask (the byte `0xF0` four times) also drops the bits the
#   shift carries into the next byte. Byte by byte, the compiler would shift each byte alone and
#   then pack the bytes back together: several instructions per byte instead of two per word.
# - **Big tiles.** A loaded byte of `A` is unpacked once and feeds `BLOCK_N` columns, a byte of
#   `B` feeds `BLOCK_M` rows: 256 × 128 tiles spread the unpacking over more tensor-core work.
#
# The price of the factor 256: a product can now be `(16 · -8) · (16 · -8) = 2¹⁴`, so the int32
# sum is exact only for `K < 2¹⁷ = 131 072` (section 2's `2²⁵`, divided by 256). A transformer's
# `K` (its hidden or MLP width) is far below that, but a weight gradient reduces over every
# token of a batch: beyond the limit the launcher splits `K` into chunks within it and adds
# their exact int32 sums (given code, `_in_k_chunks`; one more launch per 131 070 values).

# %%
w = pa.contiguous().view(torch.int32)                      # (5, 2): 4 bytes per word
mask = torch.tensor([0xF0] * 4, dtype=torch.uint8).view(torch.int32)      # 0xF0F0F0F0
print("words, low nibbles: ", torch.equal(((w << 4) & mask).view(torch.int8), lo16_a))
print("words, high nibbles:", torch.equal((w & mask).view(torch.int8), hi16_a))

# %% [markdown]
# ## 6. The roofline: where the time goes
#
# A kernel is limited either by arithmetic (the tensor cores' peak) or by memory (bytes per second
# from HBM). The **arithmetic intensity**, FLOPs per byte moved, says which:
# `attainable = min(peak, bandwidth × intensity)`. For an H200 (dense peaks; HBM 4.8 TB/s) the
# bf16 roof is 989 TFLOP/s and the INT8 roof, where INT4 runs on Hopper, 1979 TOPS; memory stops
# being the limit at 989/4.8 ≈ 206 and 1979/4.8 ≈ 412 FLOP/byte (the *ridge points*).
#
# A square `n³` GEMM does `2n³` operations and, at best, moves each operand once: `A` and `B`
# (2 bytes per value in bf16, 1 stored as int8, ½ packed) and writes `C` (bf16, 2 bytes). Its
# intensity grows like `n`: big GEMMs are compute-bound, small or skinny ones memory-bound. Move
# the slider:

# %%
l03.roofline_figure(size=4096)

# %%
interactive_plot(l03.roofline_figure, size=(128, 16384, 128, 1024));

# %% [markdown]
# What the plot says:
#
# - For large GEMMs every kind is compute-bound, and INT4-in-INT8 can be at most **2×** bf16.
#   Real kernels reach less than the peaks; how much less on a given GPU, `int4lab bench`
#   measures (lesson 08). This course has recorded no GPU measurement of its own.
# - For small or skinny GEMMs (few tokens), memory decides, and packing matters: half a byte per
#   value moves less than int8 storage, which moves less than bf16.
# - The quantize passes (lesson 02) read bf16 activations and write packed codes: memory-bound
#   work that a layer adds around its GEMM. Their share shrinks as the matrices grow, which is why
#   the paper's INT4 training was slower than FP16 at hidden size 2560, about even at 4096, and
#   faster only at 8960 (lesson 08).

# %% [markdown]
# ## 7. Your kernel: `int4_matmul`
#
# **The contract** (`int4lab.int4_matmul`, spec `int4lab.spec.quantizers.int4_matmul_spec`):
#
# ```
# int4_matmul(a, a_scale, b, b_scale, out_dtype=torch.float32) -> C of shape (M, N)
# ```
#
# - `a`: `(M, K/2)` uint8 and `b`: `(N, K/2)` uint8, both packed along `K` (code `2j` in the low
#   nibble of byte `j`); `b` is an `nn.Linear` weight, so `C = A · Bᵀ`;
# - `a_scale`: `(M, 1)` or 0-dim; `b_scale`: `(N, 1)` or 0-dim (float);
# - `C[m, n] = (Σ_k A[m, k] B[n, k]) · a_scale[m] · b_scale[n]`, in `out_dtype` (float32, float16;
#   bfloat16 on a GPU); `out_dtype=torch.int32` returns the raw integer sums, no scales.
#
# **The plan:** one program per `(BLOCK_M, BLOCK_N)` tile of `C` (section 3); a loop over the
# `K/2` packed bytes in steps of `BLOCK_K`; per step, both byte tiles unpacked in place into
# 16 × their low and high codes, and two int8 dots, low with low and high with high (section 5),
# into an int32 accumulator; after the loop the shift right by 8, then the scales, the cast and
# a masked store. The strides are passed in, so that transposed or sliced views of `a` and `b`
# work without a copy.
#
# **Given** in the cell below: the helpers `_words` and `_bytes` (4 bytes as one 32-bit word and
# back); the grouped mapping of the program id to a tile, the tile's row and column offsets and
# their masks on `M` and `N`; the loop over `k0` with the addresses of each step's byte tiles
# (`a_ptrs`, `b_ptrs`, both `K` last as they lie in memory); the addresses and mask of the tile
# in `C` and the two masked stores (scaled and cast to `out_dtype`, or the raw int32 sums); the
# configs (`CPU_CONFIG`, `GPU_CONFIG`, chosen by `_config`), the chunks beyond the `K` limit
# (`_in_k_chunks`), the helper `_scale_vector` and the launcher's input checks.
#
# **Yours**, in the order of the TODOs: `_unpack16` (a byte tile to 16 × its low and high codes);
# in the kernel the int32 accumulator, the mask of the `K` tail, the two masked loads, the
# unpacking of both tiles, the two `tl.dot`s, the shift right by 8 and the scales (`c` before the
# store); in the launcher `int4_matmul` the output, the scales as vectors, the grid and the
# launch. The checks use sizes such as 31, 33, 127, 129 (no tile divides them) and `K = 2048`
# with every code `-8`.

# %% tags=["exercise"] int4lab={"slot": "int4_matmul"}
# %%exercise int4_matmul
import torch
import triton
import triton.language as tl

from int4lab.spec.quantizers import validate_int4_matmul


@triton.jit
def _words(x):
    """(R, C) byte tile -> (R, C // 4) uint32: bytes 4i .. 4i+3 of a row as one 32-bit word
    (byte 4i in the lowest bits, as in memory). Given."""
    q = tl.reshape(x.to(tl.uint8, bitcast=True), (x.shape[0], x.shape[1] // 4, 2, 2))
    even, odd = tl.split(q)             # bytes 4i, 4i+2 | bytes 4i+1, 4i+3
    b0, b2 = tl.split(even)
    b1, b3 = tl.split(odd)
    return (b0.to(tl.uint32) | (b1.to(tl.uint32) << 8) | (b2.to(tl.uint32) << 16)
            | (b3.to(tl.uint32) << 24))


@triton.jit
def _bytes(w):
    """(R, C // 4) uint32 words -> (R, C) int8 tile: the inverse of _words. Given."""
    b0 = w.to(tl.uint8).to(tl.int8, bitcast=True)
    b1 = (w >> 8).to(tl.uint8).to(tl.int8, bitcast=True)
    b2 = (w >> 16).to(tl.uint8).to(tl.int8, bitcast=True)
    b3 = (w >> 24).to(tl.uint8).to(tl.int8, bitcast=True)
    return tl.reshape(tl.join(tl.join(b0, b2), tl.join(b1, b3)), (w.shape[0], 4 * w.shape[1]))


@triton.jit
def _unpack16(x):
    """(R, C) packed bytes -> (lo, hi), two (R, C) int8 tiles: 16 x the low-nibble codes (the
    even k) and 16 x the high-nibble codes (the odd k)."""
    # TODO: unpack in place, four bytes at a time: w = _words(x); then
    #       lo = _bytes((w << 4) & 0xF0F0F0F0) (each low nibble moved to the top of its byte)
    #       and hi = _bytes(w & 0xF0F0F0F0) (each high nibble kept where it is, the low cleared).
    #       Read as int8, a byte whose nibble sits on top of four zero bits is 16 x that
    #       nibble's signed code: no sign extension. Return lo, hi.


@triton.jit
def int4_matmul_kernel(a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, KH,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_sa, stride_sb,
                       stride_cm, stride_cn, APPLY_SCALES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    # Given: which (BLOCK_M, BLOCK_N) tile of C this program computes. The grid is 1-D; the
    # program ids run down GROUP_M tiles of a column, then to the next column (Triton's matmul
    # tutorial), so programs that run together share rows of A and columns of B in L2.
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_pid_n)
    first_pid_m = group * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % (GROUP_M * num_pid_n)) % group_size_m
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_size_m
    # Given: the tile's rows and columns, and its edges on M and N.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)   # rows of A and C
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)   # rows of B, columns of C
    offs_k = tl.arange(0, BLOCK_K)                      # packed bytes along K
    mask_m = offs_m < M
    mask_n = offs_n < N

    # TODO 1: the tile's accumulator, in int32: acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32).
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k                                # this step's packed bytes
        # TODO 2: mask_k = kk < KH: True for the bytes that lie inside a row (KH = K/2 bytes);
        #         the last step may run past them (the K tail). Both loads below use it.
        # Given: the addresses of this step's byte tiles, from the strides (so transposed or
        # sliced views need no copy). Both tiles are K last, as they lie in memory: A's is
        # (BLOCK_M, BLOCK_K), B's (BLOCK_N, BLOCK_K).
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak
        b_ptrs = b_ptr + offs_n[:, None] * stride_bn + kk[None, :] * stride_bk
        # TODO 3: a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0) and
        #         b = tl.load(b_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0), the
        #         bytes as they are (uint8). other=0: a zero byte is two zero codes.
        # TODO 4: a_lo, a_hi = _unpack16(a) and b_lo, b_hi = _unpack16(b).
        # TODO 5: two int8 dots into the accumulator, low with low and high with high in BOTH
        #         operands, B's tiles transposed to (BLOCK_K, BLOCK_N):
        #         acc = tl.dot(a_lo, tl.trans(b_lo), acc, out_dtype=tl.int32), then
        #         acc = tl.dot(a_hi, tl.trans(b_hi), acc, out_dtype=tl.int32). Say
        #         out_dtype=tl.int32: Triton 3.6 (what many GPU installs of torch pin) defaults
        #         tl.dot to float32 and refuses an int32 accumulator without it.
    # TODO 6: every product carried 16 x 16 = 256: acc = acc >> 8 (an arithmetic shift of the
    #         int32 sums, exact: each is a multiple of 256) gives the true integer sums.

    # Given: where the tile goes in C, and which of its elements lie inside C.
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = mask_m[:, None] & mask_n[None, :]
    if APPLY_SCALES:
        # TODO 7: the scales, in fp32, after the integer sum (a float out_dtype):
        #         sa = tl.load(sa_ptr + offs_m * stride_sa, mask=mask_m, other=0.0) (one per row
        #         of the tile; stride_sa is 0 for a per-tensor scale),
        #         sb = tl.load(sb_ptr + offs_n * stride_sb, mask=mask_n, other=0.0) (one per column);
        #         c = acc.to(tl.float32) * sa[:, None], then c = c * sb[None, :]: a_scale first,
        #         then b_scale, the spec's order, so that fp32 results match it bit for bit.
        tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=c_mask)   # cast to out_dtype
    else:
        tl.store(c_ptrs, acc, mask=c_mask)              # out_dtype int32: the raw sums


# Fixed configs, no autotuning: `int4lab inspect` compiles exactly what a GPU would run (an
# autotuner picks its config by timing on the GPU, which inspect cannot do), and the choice below
# is the one its static estimate favours (docs/PERFORMANCE.md). (The library's fused layer runs
# this same kernel through triton.autotune on a GPU, over these configs and a few others.)
# The interpreter runs each program as a series of NumPy calls: a few 64x64 tiles keep it fast
# (BLOCK_K = 64 bytes = 128 values of K). On a GPU, 256x128 tiles with 8 warps (two warpgroups
# of 128 rows each on Hopper) spread each unpacked byte over the most tensor-core work that
# fits in 255 registers, and num_stages=3 loads the next steps while this one computes. With
# few rows (M <= 64: a handful of tokens) the GEMM is memory-bound and most of a 256-row tile
# would be padding that still gets unpacked and multiplied: one warpgroup's 64 rows instead
# (4 warps), the same number of programs along N. Every config keeps BLOCK_K >= 32 (the int8
# dot's minimum K).
CPU_CONFIG = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8)
GPU_CONFIG = dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
GPU_CONFIG_FEW_ROWS = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4,
                           num_stages=3)

# The in-place unpack scales every product by 256, at most 2^14 in size: int32 sums are exact
# for K < 2^17 values, i.e. K/2 < 65536 packed bytes.
MAX_K = 2 ** 17 - 2


def _config(a, M):
    """The launch config: the interpreter's, or a GPU's chosen by the number of rows."""
    if not a.is_cuda:
        return CPU_CONFIG
    return GPU_CONFIG if M > 64 else GPU_CONFIG_FEW_ROWS


def _in_k_chunks(a, a_scale, b, b_scale, out_dtype):
    """K beyond MAX_K (a weight gradient reduces over every token of a batch): the exact int32
    sums of K chunks within the kernel's range, added, then the scales in the kernel's order.
    One extra launch per 131070 values of K, and still exact (|sum| <= 64 K < 2^31 for K < 2^25)."""
    step = MAX_K // 2
    acc = sum(int4_matmul(a[:, i:i + step], a_scale, b[:, i:i + step], b_scale, torch.int32)
              for i in range(0, a.shape[1], step))
    if out_dtype == torch.int32:
        return acc
    b_s = b_scale.float().reshape(1, -1) if b_scale.dim() else b_scale.float()
    return (acc.float() * a_scale.float() * b_s).to(out_dtype)


def _scale_vector(s):
    """A scale as (fp32 tensor, stride): (rows, 1) -> stride 1, 0-dim -> stride 0 (broadcast)."""
    s = s.float()
    if s.dim() == 0:
        return s.reshape(1), 0
    s = s.reshape(-1).contiguous()
    return s, 1


def int4_matmul(a, a_scale, b, b_scale, out_dtype=torch.float32):
    """C = (A_codes · B_codesᵀ) · a_scale · b_scaleᵀ for a (M, K/2), b (N, K/2) packed along K:
    validate, allocate C (M, N) in out_dtype, launch one program per (BLOCK_M, BLOCK_N) tile."""
    validate_int4_matmul(a, a_scale, b, b_scale, out_dtype)
    if 2 * a.shape[1] > MAX_K:                  # beyond the in-place unpack's int32 range
        return _in_k_chunks(a, a_scale, b, b_scale, out_dtype)
    # TODO 1: M, KH = a.shape (KH = K/2 packed bytes per row); N = b.shape[0];
    #         c = torch.empty((M, N), dtype=out_dtype, device=a.device).
    #         If M == 0 or N == 0 there is nothing to launch: return c.
    # TODO 2: each scale as an fp32 vector and its stride, with the given helper:
    #         sa, stride_sa = _scale_vector(a_scale); sb, stride_sb = _scale_vector(b_scale).
    # TODO 3: cfg = _config(a, M) (the given choice of tiles, GROUP_M and, on a GPU, num_warps
    #         and num_stages); a 1-D grid, one program per tile:
    #         grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),).
    #         Launch int4_matmul_kernel[grid](a, b, sa, sb, c, M, N, KH,
    #         a.stride(0), a.stride(1), b.stride(0), b.stride(1), stride_sa, stride_sb,
    #         c.stride(0), c.stride(1), APPLY_SCALES=out_dtype != torch.int32, **cfg). Return c.
    raise NotImplementedError("int4_matmul: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("int4_matmul")

# %% [markdown]
# ## 8. The INT4 GEMM at work
#
# Whatever happened above, this runs: `int4lab.int4_matmul` dispatches to your kernel if it
# unlocked, else to the library's (on a GPU) or the spec (on a CPU). The full pipeline of an INT4
# linear layer's forward product: quantize and pack both operands per row (`quantize_int4`,
# lesson 02), multiply (`int4_matmul`), compare with the spec and with fp32.

# %%
if runtime.HAS_CUDA:
    M, N, K = 4096, 4096, 4096
else:                          # the interpreter runs a kernel as Python: small sizes
    M, N, K = (64, 64, 256) if FAST else (128, 128, 512)
X, W = l03.gaussian_operands(M, N, K)
X, W = X.to(DEVICE), W.to(DEVICE)

a, sa = int4lab.quantize_int4(X, granularity="row")       # (M, K/2) uint8, (M, 1) scales
b, sb = int4lab.quantize_int4(W, granularity="row")
Y4 = int4lab.int4_matmul(a, sa, b, sb)
print("quantize_int4 ran:", int4lab.last_ran("quantize_int4"), "| int4_matmul ran:",
      int4lab.last_ran("int4_matmul"))

Y_spec = int4_matmul_spec(a, sa, b, sb)
Y_fake = dequantize(unpack_int4(a), sa) @ dequantize(unpack_int4(b), sb).T   # float reference
Y_fp32 = X @ W.T
print("vs the spec:                 max |diff| =", f"{float((Y4 - Y_spec).abs().max()):.2e}")
print("vs the float reference:      relative error", f"{l03.relative_error(Y4, Y_fake):.2e}",
      "(float rounding only)")
print("vs fp32 X Wᵀ (quantization): relative error", f"{l03.relative_error(Y4, Y_fp32):.1%}")
raw = int4lab.int4_matmul(a, sa, b, sb, out_dtype=torch.int32)
print("int32 product identical to the spec's:",
      torch.equal(raw, int4_matmul_spec(a, sa, b, sb, out_dtype=torch.int32)))

# %% [markdown]
# The arithmetic is exact: what separates the INT4 GEMM from fp32 is the quantization of its
# inputs, about 20 % of `‖Y‖` on Gaussian data with per-row scales (INT8 would give about 1 %).
# Outlier channels in `X` make it worse, as in lesson 02; move the slider:

# %%
l03.gemm_error_figure(outlier=1.0, K=256 if FAST else 512)

# %%
interactive_plot(l03.gemm_error_figure, outlier=(1.0, 100.0, 1.0, 10.0));

# %% [markdown]
# ## 9. Benchmark
#
# On a GPU, `bench` times your kernel and the library's against `torch.mm` in bf16 (cuBLAS) on
# the same values, in TFLOP/s, for sizes up to 8192. Remember the ceiling from section 6: on an
# H100/H200 anything near 2× bf16 is the best possible. On a CPU it checks correctness only.

# %%
result = int4lab.bench("int4_matmul")

# %%
int4lab.progress();

# %% [markdown]
# ## 10. What your kernel compiles to on a GPU, without a GPU
#
# Triton's wheels carry NVIDIA's assembler (`ptxas`) and disassembler, so a kernel compiles for a
# GPU this machine does not have. `int4lab.inspect` compiles **your** `int4_matmul` for an
# H100/H200 (`sm_90`) at the tile sizes your launcher picks on a GPU and reports what a
# performance engineer reads first:
#
# - **registers** per thread and **spills** (registers that did not fit and went to slow memory);
# - the **tensor-core instructions** it uses: on `sm_90` an int8 `tl.dot` becomes
#   `IGMMA...S8.S8` (wgmma), on `sm_80` `IMMA...S8.S8`;
# - the **main loop's instructions by class**: how many integer/bit instructions (your nibble
#   unpacking, and the moving of bytes between registers) the GPU must issue for each
#   tensor-core one;
# - a **predicted bound**, an *estimate* from the compiled code, not a measurement: time on the
#   tensor cores, time to issue the loop's instructions (4 per cycle per SM) and time to move its
#   bytes, per loop step; the largest wins (the model is written down in docs/PERFORMANCE.md).
#
# If your kernel is missing or does not compile, the cell says so and shows the library's.

# %%
from int4lab.course import compiled

report = compiled.show("int4_matmul", arch="sm_90")

# %% [markdown]
# Read the loop line: for every tensor-core instruction, how many other instructions does the
# loop issue? A GEMM whose tensor cores do the work needs only a handful (addresses, loads, a
# barrier). This is the price of packed INT4 on a GPU without INT4 tensor cores: memory moves half
# a byte per value, but every value must be unpacked before the INT8 tensor cores can use it, and
# an SM issues only 4 warp-instructions per cycle. Too many unpack instructions and the schedulers,
# not the tensor cores, set the pace: the estimate says **issue-bound**, and the fraction is the
# share of the INT8 tensor-core peak it would reach.
#
# How the course's kernel got from one to the other (*static estimate from compiled code, Triton
# 3.9.0, sm_90, 2026-11-29*; the model: `int4lab inspect`'s estimate, written down in
# docs/PERFORMANCE.md, not a measurement; the middle rows are variants compiled for this table):
#
# | unpacking | tiles | loop instructions | other per tensor-core instruction | estimate |
# |---|---|---|---|---|
# | shift down, sign-extend each nibble in int32 | 128 × 128 | 970 | 241.5 | issue-bound, 26 % of peak |
# | in place (16 × codes), byte by byte | 128 × 128 | 333 | 82.3 | issue-bound, 77 % |
# | in place, 4 bytes per 32-bit word | 128 × 128 | 221 | 54.3 | tensor-core bound |
# | **in place, 4 bytes per word** (the kernel) | **256 × 128** | **305** | **37.1** | **tensor-core bound** |
#
# Under Triton 3.6.0 the last row reads 304 instructions, 37.0 per tensor-core instruction, also
# tensor-core bound; before, 972 and 242, issue-bound at 26 %. Whether a real H200 follows is for a
# GPU to measure (`int4lab bench`, lesson 08): the model ignores latency, shared memory and the
# grid's tail. Lesson 08 looks at where a whole layer's time goes.

# %%
if report is not None:
    for k in report["kernels"]:
        loop, p = k["loop"], k["predicted"]
        print(f"{k['kernel']}: {loop['per_tensor_core']} other instructions per tensor-core "
              f"instruction; estimate: {p['bound']}-bound")

# %% [markdown]
# ## Check your understanding
#
# 1. Why can `a_scale` be applied after the integer sum, and why would a scale per column `k`
#    of `A` break that?
# 2. With codes in `[-8, 7]`, what is the largest `K` for which an fp32 accumulator is still
#    exact? And int32?
# 3. A colleague pairs the low nibbles of `A` with the high nibbles of `B`. For which inputs does
#    the result still come out right?
# 4. On an H200, what is the best speed-up an INT4 GEMM written with int8 `tl.dot` can reach over
#    a bf16 GEMM, and why? Where did the paper's 2.2× come from?
# 5. A 4096³ GEMM and a GEMM with `M = 16` tokens, `N = K = 4096`: which one gains from packing
#    two codes per byte, and why?
# 6. Your kernel passes every check except `127x129, K=254`, where the last rows of `C` are wrong.
#    What is missing?
# 7. Unpacked in place, why does the kernel need no sign extension, and why does it stop at
#    `K < 131 072` when section 2 promised int32 exactness up to 33 million? (What does the
#    launcher do beyond that?)

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. `Σ_k s_m A[m,k] · t_n B[n,k] = s_m t_n Σ_k A[m,k] B[n,k]`: `s_m` and `t_n` are the same for
#    every term, so they factor out. A scale `s_k` differs term by term; it would have to be
#    applied inside the sum, to each product, before adding.
# 2. fp32 holds every integer up to `2²⁴`, so `64·K ≤ 2²⁴` gives `K ≤ 262 144`. int32: `64·K ≤ 2³¹ − 1`
#    gives `K ≤ 33 554 431`.
# 3. Only when the even and odd codes happen to give the same sums, for instance when all codes
#    of `A` (or of `B`) are equal within each byte. The checks include rows where even and odd `k`
#    are as different as they get (`7, -8, 7, -8, ...`) to catch it.
# 4. 2×: Hopper has no INT4 tensor cores, so INT4 values run on the INT8 ones, whose dense peak
#    (1979 TOPS) is twice bf16's (989). The paper's "up to 2.2×" was measured on an RTX 3090,
#    whose INT4 tensor cores run at 4× its FP16 rate with FP16 accumulation (568 vs 142) and 8×
#    with the FP32 accumulation that training uses (568 vs 71).
# 5. The skinny one: with `M = 16` its intensity is low (every weight is used by only 16 tokens),
#    so it is memory-bound, and moving half a byte per weight instead of one (int8) or two (bf16)
#    cuts its time. The 4096³ GEMM is compute-bound: packing changes its traffic, not its time.
# 6. The last, partial row tile: rows `64..126` of the CPU's `BLOCK_M = 64` tiling need
#    `offs_m < M` masks on the loads of `A` and on the store of `C`, and the grid must count
#    `cdiv(M, BLOCK_M)` tiles down (`M // BLOCK_M` leaves them out).
# 7. A nibble moved to the top four bits of an int8 (with zeros below) has its top bit in the
#    int8's sign bit, so the int8 is already 16 × its two's complement code. But each product
#    is then 256 × the codes' product, up to `128 · 128 = 2¹⁴` instead of 64, so the int32 sum is
#    safe only for `K · 2¹⁴ < 2³¹`: `K < 2¹⁷`. Beyond it the launcher runs the kernel on chunks
#    of `K` within the limit (int32 results, no scales) and adds them, then applies the scales.

# %% [markdown]
# ## Summary
#
# - With one scale per row (or per tensor) on each side, a GEMM becomes an integer GEMM of the
#   codes plus one multiply per output; int32 accumulation makes it exact for any realistic `K`.
# - A tiled kernel: one program per tile of `C`, a loop over `K`, masks on every edge.
# - Hopper has no INT4 tensor cores and Triton no INT4 dot: INT4 values run in int8 registers on
#   INT8 tensor cores, a ceiling of 2× bf16. Packing halves the memory traffic of int8 storage.
# - Packed operands need no interleave: low nibbles with low, high with high, two dots.
# - Unpacked in place (`(b << 4) & 0xF0`, `b & 0xF0`, four bytes per 32-bit word) the codes
#   enter the dots as 16 × themselves and a shift by 8 ends it: few enough instructions that the
#   estimate for 256 × 128 tiles on an H200 is tensor-core bound; `K` beyond `2¹⁷` goes in chunks.
#
# **Next: lesson 04, the Hadamard quantizer.** INT4 per tensor fails on outlier channels
# (lessons 02 and 03). The paper's fix rotates each block of 32 channels with a Hadamard matrix
# before quantizing, which spreads every outlier over its block; the rotation cancels in the GEMM.

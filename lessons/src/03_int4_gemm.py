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
#    high nibbles;
# 6. read a roofline, and write `int4_matmul`.

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
# The grid is 2-D: `(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))`, and `tl.program_id(0)`,
# `tl.program_id(1)` say which tile. Tiles at the bottom and right edges hang over `M` and `N`,
# and the last `K` step over `K`: mask them all (a masked load with `other=0` adds nothing).

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
#   traffic of int8 storage, and unpacking happens in registers, where it is almost free.

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
# **The plan:** a 2-D grid, one program per `(BLOCK_M, BLOCK_N)` tile of `C` (section 3); a loop
# over the `K/2` packed bytes in steps of `BLOCK_K`; per step, two int8 dots, low nibbles and high
# nibbles (section 5), into an int32 accumulator (section 2); then the scales, the cast and a
# masked store. The strides are passed in, so that transposed or sliced views of `a` and `b` work
# without a copy.
#
# **Given** in the cell below: the tile's row and column offsets and their masks on `M` and `N`;
# the loop over `k0` with the addresses of each step's byte tiles (`a_ptrs`, `b_ptrs`; `B`'s tile
# is loaded already transposed); the addresses and mask of the tile in `C` and the two masked
# stores (scaled and cast to `out_dtype`, or the raw int32 sums); the tile sizes (`CPU_CONFIG`,
# `GPU_CONFIG`), the helper `_scale_vector` and the launcher's input checks.
#
# **Yours**, in the order of the TODOs: `_sign_extend` (a nibble to its int8 code); in the kernel
# the int32 accumulator, the mask of the `K` tail, the two masked loads, the unpacking of both
# tiles, the two `tl.dot`s and the scales (`c` before the store); in the launcher `int4_matmul`
# the output, the scales as vectors, the grid and the launch. The checks use sizes such as 31,
# 33, 127, 129 (no tile divides them) and `K = 2048` with every code `-8`.

# %% tags=["exercise"] int4lab={"slot": "int4_matmul"}
# %%exercise int4_matmul
import torch
import triton
import triton.language as tl

from int4lab.spec.quantizers import validate_int4_matmul


@triton.jit
def _sign_extend(n):
    """int32 nibbles 0..15 -> int8 codes -8..7."""
    # TODO: sign extension. A nibble n >= 8 is the two's complement code n - 16 (0xF -> -1,
    #       0x8 -> -8); a nibble below 8 is its own code. Return tl.where(n >= 8, n - 16, n)
    #       converted with .to(tl.int8).


@triton.jit
def int4_matmul_kernel(a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, KH,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_sa, stride_sb,
                       stride_cm, stride_cn, APPLY_SCALES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Given: the (BLOCK_M, BLOCK_N) tile of C this program computes, and its edges on M and N.
    pid_m = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)   # rows of A and C
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)   # rows of B, columns of C
    offs_k = tl.arange(0, BLOCK_K)                      # packed bytes along K
    mask_m = offs_m < M
    mask_n = offs_n < N

    # TODO 1: the tile's accumulator, in int32 (exact for any realistic K):
    #         acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32).
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k                                # this step's packed bytes
        # TODO 2: mask_k = kk < KH: True for the bytes that lie inside a row (KH = K/2 bytes);
        #         the last step may run past them (the K tail). Both loads below use it.
        # Given: the addresses of this step's byte tiles, from the strides (so transposed or
        # sliced views need no copy): A's (BLOCK_M, BLOCK_K) tile, and B's tile loaded already
        # transposed, (BLOCK_K, BLOCK_N), ready to be the right operand of the dot.
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak
        b_ptrs = b_ptr + offs_n[None, :] * stride_bn + kk[:, None] * stride_bk
        # TODO 3: a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0) and
        #         b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0), each
        #         converted with .to(tl.int32) (the nibble arithmetic below, n - 16 included,
        #         is done in int32). other=0: a zero byte is two zero codes, which add nothing.
        # TODO 4: unpack each tile into two int8 tiles of the same shape with _sign_extend:
        #         a_lo = _sign_extend(a & 0xF) (low nibbles: the even k),
        #         a_hi = _sign_extend(a >> 4) (high nibbles: the odd k); b_lo, b_hi from b alike.
        # TODO 5: two int8 dots into the accumulator, low with low and high with high in BOTH
        #         operands: acc = tl.dot(a_lo, b_lo, acc, out_dtype=tl.int32), then
        #         acc = tl.dot(a_hi, b_hi, acc, out_dtype=tl.int32). int8 x int8 -> int32 is
        #         exact. Say out_dtype=tl.int32: Triton 3.6 (what many GPU installs of torch
        #         pin) defaults tl.dot to float32 and refuses an int32 accumulator without it
        #         (3.9 infers it from acc).

    # Given: where the tile goes in C, and which of its elements lie inside C.
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = mask_m[:, None] & mask_n[None, :]
    if APPLY_SCALES:
        # TODO 6: the scales, in fp32, after the integer sum (a float out_dtype):
        #         sa = tl.load(sa_ptr + offs_m * stride_sa, mask=mask_m, other=0.0) (one per row
        #         of the tile; stride_sa is 0 for a per-tensor scale),
        #         sb = tl.load(sb_ptr + offs_n * stride_sb, mask=mask_n, other=0.0) (one per column);
        #         c = acc.to(tl.float32) * sa[:, None], then c = c * sb[None, :]: a_scale first,
        #         then b_scale, the spec's order, so that fp32 results match it bit for bit.
        tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=c_mask)   # cast to out_dtype
    else:
        tl.store(c_ptrs, acc, mask=c_mask)              # out_dtype int32: the raw sums


# One fixed config per device, no autotuning. The interpreter runs each program as a series of
# NumPy calls, so few 64x64 tiles keep it fast (BLOCK_K = 64 bytes = 128 values of K). On a GPU,
# 128x128 tiles give each loaded byte more reuse; two int8 dots of K = 64 per step are legal on
# every NVIDIA target (K >= 32 for 8-bit operands), and num_stages=3 overlaps the next loads
# with this step's dots.
CPU_CONFIG = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64)
GPU_CONFIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)


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
    # TODO 1: M, KH = a.shape (KH = K/2 packed bytes per row); N = b.shape[0];
    #         c = torch.empty((M, N), dtype=out_dtype, device=a.device).
    #         If M == 0 or N == 0 there is nothing to launch: return c.
    # TODO 2: each scale as an fp32 vector and its stride, with the given helper:
    #         sa, stride_sa = _scale_vector(a_scale); sb, stride_sb = _scale_vector(b_scale).
    # TODO 3: cfg = GPU_CONFIG if a.is_cuda else CPU_CONFIG (tile sizes and, on a GPU,
    #         num_warps and num_stages; keep BLOCK_K >= 32: Triton requires K >= 32 for a dot
    #         of 8-bit operands on every NVIDIA GPU);
    #         grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"])).
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
#   unpacking: `& 0xF`, `>> 4`, the sign extension) the GPU must issue for each tensor-core one;
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
# barrier). Unpacking every nibble in the loop costs several integer instructions per element,
# so the schedulers, not the tensor cores, set the pace: the estimate says **issue-bound**, and
# the fraction is the share of the INT8 tensor-core peak it would reach. This is the price of
# packed INT4 on a GPU without INT4 tensor cores: memory moves half a byte per value, but every
# value must be unpacked before the INT8 tensor cores can use it. Lesson 08 looks at where a whole
# layer's time goes.

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
#    `offs_m < M` masks on the loads of `A` and on the store of `C`, and the grid must have
#    `cdiv(M, BLOCK_M)` programs along that axis (`M // BLOCK_M` leaves them out).

# %% [markdown]
# ## Summary
#
# - With one scale per row (or per tensor) on each side, a GEMM becomes an integer GEMM of the
#   codes plus one multiply per output; int32 accumulation makes it exact for any realistic `K`.
# - A tiled kernel: one program per tile of `C`, a loop over `K`, masks on every edge.
# - Hopper has no INT4 tensor cores and Triton no INT4 dot: INT4 values run in int8 registers on
#   INT8 tensor cores, a ceiling of 2× bf16. Packing halves the memory traffic of int8 storage.
# - Packed operands need no interleave: low nibbles with low, high with high, two dots.
#
# **Next: lesson 04, the Hadamard quantizer.** INT4 per tensor fails on outlier channels
# (lessons 02 and 03). The paper's fix rotates each block of 32 channels with a Hadamard matrix
# before quantizing, which spreads every outlier over its block; the rotation cancels in the GEMM.

"""INT4 x INT4 matrix multiply on INT8 tensor cores, with the scales applied in the epilogue.

What it computes: A is (M, K/2) and B is (N, K/2), both uint8, each byte holding two INT4 codes
along K (element 2j in the low nibble, element 2j+1 in the high nibble; see int4lab/spec/packing.py).
B is laid out like an nn.Linear weight, (out, in), so the product is A·Bᵀ:

    C[m, n] = (sum_k A_codes[m, k] * B_codes[n, k]) * a_scale[m] * b_scale[n]

with a_scale of shape (M, 1) or 0-dim (one scale per tensor), the same for b_scale. With
out_dtype=torch.int32, C is the raw integer sum, no scales (the exact accumulator).

The trade: Hopper and Blackwell have no INT4 tensor cores, and Triton has no int4 dot on any
GPU; tl.dot takes int8 x int8 with int32 accumulation. So the packed bytes are what moves from
HBM (half a byte per value: half the traffic of int8 codes), and in registers each byte is
turned into int8 operands for the INT8 tensor cores. Those unpack instructions are the price:
a GPU issues 4 warp-instructions per cycle per SM, and if the loop spends too many of them on
nibbles the schedulers, not the tensor cores, set the pace (`int4lab inspect int4_matmul`
counts them).

No interleave: the reduction is a sum over k, and a sum does not care about its order. Split it
into the even k (low nibbles) and the odd k (high nibbles):

    A·Bᵀ = A_even·B_evenᵀ + A_odd·B_oddᵀ

A byte tile of A gives both A_even and A_odd as two (BLOCK_M, BLOCK_K) int8 tiles, likewise
for B, and two dots add into one int32 accumulator: low with low, high with high, in BOTH
operands.

Unpacking in place: no shift down, no sign extension. Read a byte as int8. Its high nibble sits
in the top four bits, the sign bit included, so `byte & 0xF0` read as int8 is exactly 16 x the
signed high code (0x80 -> -128 = 16 x -8, 0x70 -> 112 = 16 x 7). Shifted left by four, the low
nibble moves to the top: `(byte << 4) & 0xF0` is 16 x the signed low code. Both operands of a
dot carry the factor 16, so the int32 accumulator holds 256 x the true sum, and an arithmetic
shift right by 8 after the loop gives the sum exactly (every term is a multiple of 256). Per
byte that is a shift and two ANDs instead of the old extract, compare, select and subtract.
And four bytes along K are done at once: the given helpers _words and _bytes view each run of
4 bytes of a row as one 32-bit word and back, so one shift and one AND handle 8 nibbles; the
mask 0xF0F0F0F0 drops the bits the shift carries into the next byte. (The four bytes already
share a register, so _words costs nothing; _bytes after the shift costs the compiler a few byte
moves per word, still far fewer instructions than byte by byte.)

The limit this costs: each product is now at most 128 x 128 = 2^14 (-8 x -8 times 256), so the
int32 sum is exact only for K < 2^17 = 131072 (K/2 < 65536 bytes), instead of 2^25 for the
plain codes. Beyond it the launcher splits K into chunks within the range and adds their exact
int32 sums (one more launch per 131070 values of K): a forward GEMM's K (a hidden or MLP width)
is far below it, but a weight gradient reduces over every token of a batch.

Tiles: one program per (BLOCK_M, BLOCK_N) tile of C, walking K/2 in steps of BLOCK_K packed
bytes (2 * BLOCK_K values of K); the last step is masked (other=0: a zero byte is two zero
codes, which add nothing). BLOCK_K >= 32 keeps the int8 dot legal (Triton requires K >= 32 for
8-bit operands on every NVIDIA target). On a GPU the tiles are big (256 x 128): every byte of A
that is loaded and unpacked feeds 128 columns, every byte of B 256 rows, so the unpacking is
spread over more tensor-core work. The grid is 1-D and the program ids are grouped
(GROUP_M tiles down, then across, as in Triton's matmul tutorial): the programs running at the
same time share rows of A and columns of B, which then come from L2 rather than HBM.
Both tiles are loaded as they lie in memory, K last (B's rows are its output features); B's
unpacked tiles are transposed with tl.trans for the dot.

Strides are passed in, so transposed or sliced views of A and B need no copy. The scales are
read as vectors; a per-tensor scale is the same vector with stride 0, so one code path serves
both. The accumulator is converted to fp32 and multiplied by a_scale then b_scale, in the
spec's order, before the cast to out_dtype. (On the CPU, Triton's interpreter truncates fp32 to
bf16 instead of rounding it, so bf16 outputs there can differ from the spec by one bf16 ulp; a
GPU rounds to nearest like PyTorch.)
"""
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
    ### BEGIN SOLUTION
    w = _words(x)
    lo = _bytes((w << 4) & 0xF0F0F0F0)
    hi = _bytes(w & 0xF0F0F0F0)
    return lo, hi
    ### END SOLUTION


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
    ### BEGIN SOLUTION
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    ### END SOLUTION
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k                                # this step's packed bytes
        # TODO 2: mask_k = kk < KH: True for the bytes that lie inside a row (KH = K/2 bytes);
        #         the last step may run past them (the K tail). Both loads below use it.
        ### BEGIN SOLUTION
        mask_k = kk < KH                                # the K tail
        ### END SOLUTION
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
        ### BEGIN SOLUTION
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0)
        b = tl.load(b_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0)
        a_lo, a_hi = _unpack16(a)                       # 16 x codes 2j   (even k) and 2j+1
        b_lo, b_hi = _unpack16(b)
        acc = tl.dot(a_lo, tl.trans(b_lo), acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, tl.trans(b_hi), acc, out_dtype=tl.int32)
        ### END SOLUTION
    # TODO 6: every product carried 16 x 16 = 256: acc = acc >> 8 (an arithmetic shift of the
    #         int32 sums, exact: each is a multiple of 256) gives the true integer sums.
    ### BEGIN SOLUTION
    acc = acc >> 8
    ### END SOLUTION

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
        ### BEGIN SOLUTION
        sa = tl.load(sa_ptr + offs_m * stride_sa, mask=mask_m, other=0.0)
        sb = tl.load(sb_ptr + offs_n * stride_sb, mask=mask_n, other=0.0)
        c = acc.to(tl.float32) * sa[:, None]
        c = c * sb[None, :]
        ### END SOLUTION
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
    ### BEGIN SOLUTION
    M, KH = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    sa, stride_sa = _scale_vector(a_scale)
    sb, stride_sb = _scale_vector(b_scale)
    cfg = _config(a, M)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    int4_matmul_kernel[grid](a, b, sa, sb, c, M, N, KH,
                             a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                             stride_sa, stride_sb, c.stride(0), c.stride(1),
                             APPLY_SCALES=out_dtype != torch.int32, **cfg)
    return c
    ### END SOLUTION

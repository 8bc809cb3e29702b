"""INT4 x INT4 matrix multiply on INT8 tensor cores, with the scales applied in the epilogue.

What it computes: A is (M, K/2) and B is (N, K/2), both uint8, each byte holding two INT4 codes
along K (element 2j in the low nibble, element 2j+1 in the high nibble; see int4lab/spec/packing.py).
B is laid out like an nn.Linear weight, (out, in), so the product is A·Bᵀ:

    C[m, n] = (sum_k A_codes[m, k] * B_codes[n, k]) * a_scale[m] * b_scale[n]

with a_scale of shape (M, 1) or 0-dim (one scale per tensor), the same for b_scale. With
out_dtype=torch.int32, C is the raw integer sum, no scales (the exact accumulator).

Why INT8 dots: Hopper and Blackwell have no INT4 tensor cores, and Triton has no int4 dot on any
GPU. tl.dot does take int8 x int8 with int32 accumulation, and a product of INT4 codes is at most
64, so every sum is exact in int32 up to K = 33 million. So we unpack the nibbles in registers,
sign-extend them to int8 and feed the INT8 tensor cores. Memory still moves half a byte per
value: the packed operands are what is loaded from HBM.

No interleave: the reduction is a sum over k, and a sum does not care about its order. Split it
into the even k (low nibbles) and the odd k (high nibbles):

    A·Bᵀ = A_even·B_evenᵀ + A_odd·B_oddᵀ

A byte tile of A gives both A_even (its low nibbles) and A_odd (its high nibbles) as two
(BLOCK_M, BLOCK_K) int8 tiles, likewise for B, and two dots add into one int32 accumulator.
The only rule is to pair low with low and high with high in BOTH operands.

Sign extension: a nibble n in 0..15 is the two's complement code n - 16 when n >= 8
(0xF is -1, 0x8 is -8), which is what tl.where(n >= 8, n - 16, n) computes.

Tiles: a 2-D grid, one program per (BLOCK_M, BLOCK_N) tile of C. Each program walks K/2 in steps
of BLOCK_K packed bytes (2 * BLOCK_K values of K); the last step is masked (other=0: a zero
byte is two zero codes, which add nothing). BLOCK_K >= 32 keeps the int8 dot legal: Triton
requires K >= 32 for 8-bit operands on every NVIDIA target.
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
def _sign_extend(n):
    """int32 nibbles 0..15 -> int8 codes -8..7."""
    # TODO: sign extension. A nibble n >= 8 is the two's complement code n - 16 (0xF -> -1,
    #       0x8 -> -8); a nibble below 8 is its own code. Return tl.where(n >= 8, n - 16, n)
    #       converted with .to(tl.int8).
    ### BEGIN SOLUTION
    return tl.where(n >= 8, n - 16, n).to(tl.int8)
    ### END SOLUTION


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
        ### BEGIN SOLUTION
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0).to(tl.int32)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0).to(tl.int32)
        a_lo = _sign_extend(a & 0xF)                    # elements 2j   (even k)
        a_hi = _sign_extend(a >> 4)                     # elements 2j+1 (odd k)
        b_lo = _sign_extend(b & 0xF)
        b_hi = _sign_extend(b >> 4)
        acc = tl.dot(a_lo, b_lo, acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, b_hi, acc, out_dtype=tl.int32)
        ### END SOLUTION

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
        ### BEGIN SOLUTION
        sa = tl.load(sa_ptr + offs_m * stride_sa, mask=mask_m, other=0.0)
        sb = tl.load(sb_ptr + offs_n * stride_sb, mask=mask_n, other=0.0)
        c = acc.to(tl.float32) * sa[:, None]
        c = c * sb[None, :]
        ### END SOLUTION
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
    ### BEGIN SOLUTION
    M, KH = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    sa, stride_sa = _scale_vector(a_scale)
    sb, stride_sb = _scale_vector(b_scale)
    cfg = GPU_CONFIG if a.is_cuda else CPU_CONFIG
    grid = (triton.cdiv(M, cfg["BLOCK_M"]), triton.cdiv(N, cfg["BLOCK_N"]))
    int4_matmul_kernel[grid](a, b, sa, sb, c, M, N, KH,
                             a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                             stride_sa, stride_sb, c.stride(0), c.stride(1),
                             APPLY_SCALES=out_dtype != torch.int32, **cfg)
    return c
    ### END SOLUTION

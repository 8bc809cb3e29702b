"""Wrong on purpose: the in-place unpack (16 x each code in both operands) without the shift
right by 8 after the loop: C is 256 times the product."""
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
    w = _words(x)
    lo = _bytes((w << 4) & 0xF0F0F0F0)
    hi = _bytes(w & 0xF0F0F0F0)
    return lo, hi


@triton.jit
def int4_matmul_kernel(a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, KH,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_sa, stride_sb,
                       stride_cm, stride_cn, APPLY_SCALES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_pid_n)
    first_pid_m = group * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % (GROUP_M * num_pid_n)) % group_size_m
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)   # rows of A and C
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)   # rows of B, columns of C
    offs_k = tl.arange(0, BLOCK_K)                      # packed bytes along K
    mask_m = offs_m < M
    mask_n = offs_n < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k                                # this step's packed bytes
        mask_k = kk < KH
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak
        b_ptrs = b_ptr + offs_n[:, None] * stride_bn + kk[None, :] * stride_bk
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0)
        b = tl.load(b_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0)
        a_lo, a_hi = _unpack16(a)
        b_lo, b_hi = _unpack16(b)
        acc = tl.dot(a_lo, tl.trans(b_lo), acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, tl.trans(b_hi), acc, out_dtype=tl.int32)
    # bug: no acc >> 8, C keeps the 16 x 16 = 256 of the in-place unpack

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = mask_m[:, None] & mask_n[None, :]
    if APPLY_SCALES:
        sa = tl.load(sa_ptr + offs_m * stride_sa, mask=mask_m, other=0.0)
        sb = tl.load(sb_ptr + offs_n * stride_sb, mask=mask_n, other=0.0)
        c = acc.to(tl.float32) * sa[:, None]
        c = c * sb[None, :]
        tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=c_mask)   # cast to out_dtype
    else:
        tl.store(c_ptrs, acc, mask=c_mask)              # out_dtype int32: the raw sums


CPU_CONFIG = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8)
GPU_CONFIG = dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3)
GPU_CONFIG_FEW_ROWS = dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4,
                           num_stages=3)

MAX_K = 2 ** 17 - 2


def _config(a, M):
    """The launch config: the interpreter's, or a GPU's chosen by the number of rows."""
    if not a.is_cuda:
        return CPU_CONFIG
    return GPU_CONFIG if M > 64 else GPU_CONFIG_FEW_ROWS


def _check_k(KH):
    """Raise ValueError when K = 2 * KH is beyond the in-place unpack's int32 range."""
    if 2 * KH > MAX_K:
        raise ValueError(f"int4_matmul: K = {2 * KH} values (K/2 = {KH} packed bytes) is too "
                         f"large for this kernel: it accumulates 256 x each product in int32, "
                         f"exact only for K < 131072 (K/2 < 65536). Split K into chunks and "
                         f"add the int32 results (out_dtype=torch.int32).")


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
    _check_k(a.shape[1])
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
                             a.stride(0), a.stride(1), b.stride(0), b.stride(1), stride_sa, stride_sb,
                             c.stride(0), c.stride(1), APPLY_SCALES=out_dtype != torch.int32, **cfg)
    return c

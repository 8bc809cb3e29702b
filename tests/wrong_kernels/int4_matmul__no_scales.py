"""Wrong on purpose: the epilogue stores the integer sums as floats and forgets the scales."""
import torch
import triton
import triton.language as tl

from int4lab.spec.quantizers import validate_int4_matmul


@triton.jit
def int4_matmul_kernel(a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, KH,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_sa, stride_sb,
                       stride_cm, stride_cn, APPLY_SCALES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k
        mask_k = kk < KH
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=mask_m[:, None] & mask_k[None, :], other=0).to(tl.int32)
        b = tl.load(b_ptr + offs_n[None, :] * stride_bn + kk[:, None] * stride_bk,
                    mask=mask_k[:, None] & mask_n[None, :], other=0).to(tl.int32)
        a_lo = tl.where((a & 0xF) >= 8, (a & 0xF) - 16, a & 0xF).to(tl.int8)
        a_hi = tl.where((a >> 4) >= 8, (a >> 4) - 16, a >> 4).to(tl.int8)
        b_lo = tl.where((b & 0xF) >= 8, (b & 0xF) - 16, b & 0xF).to(tl.int8)
        b_hi = tl.where((b >> 4) >= 8, (b >> 4) - 16, b >> 4).to(tl.int8)
        acc = tl.dot(a_lo, b_lo, acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, b_hi, acc, out_dtype=tl.int32)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = mask_m[:, None] & mask_n[None, :]
    if APPLY_SCALES:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)   # bug: no scales
    else:
        tl.store(c_ptrs, acc, mask=c_mask)


def int4_matmul(a, a_scale, b, b_scale, out_dtype=torch.float32):
    validate_int4_matmul(a, a_scale, b, b_scale, out_dtype)
    M, KH = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    sa = a_scale.float().reshape(-1).contiguous()
    sb = b_scale.float().reshape(-1).contiguous()
    grid = (triton.cdiv(M, 64), triton.cdiv(N, 64))
    int4_matmul_kernel[grid](a, b, sa, sb, c, M, N, KH,
                             a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                             0 if a_scale.dim() == 0 else 1, 0 if b_scale.dim() == 0 else 1,
                             c.stride(0), c.stride(1), APPLY_SCALES=out_dtype != torch.int32,
                             BLOCK_M=64, BLOCK_N=64, BLOCK_K=64)
    return c

"""Three small kernels whose bottleneck is known, for the known cases of tests/test_inspect.py.

- int8_gemm:   int8 codes loaded as they are, one int8 tl.dot per step, 128x128x64 tiles,
               8 warps, 3 stages: the tensor cores do the work, nothing else in the loop.
- unpack_gemm: the same GEMM on packed INT4 bytes, every element unpacked in the loop (nibble
               extraction + sign extension with tl.where, one element at a time), as
               kernels/int4_matmul.py did before issue 13: the integer instructions outnumber the
               tensor-core ones and issue bounds it.
- copy:        load -> store of 1024-element blocks: nothing but memory traffic.

Each has a launcher, so the tests inspect them the way `int4lab inspect` inspects a slot (the
launch is recorded, not run). Import int4lab before this module (it sets TRITON_INTERPRET on a
CPU before these kernels are decorated).
"""
import torch
import triton
import triton.language as tl

GEMM_CONFIG = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}


@triton.jit
def int8_gemm_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                     stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=(offs_m[:, None] < M) & (kk[None, :] < K), other=0)
        b = tl.load(b_ptr + offs_n[None, :] * stride_bn + kk[:, None] * stride_bk,
                    mask=(kk[:, None] < K) & (offs_n[None, :] < N), other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, acc,
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def unpack_gemm_kernel(a_ptr, b_ptr, c_ptr, M, N, KH,
                       stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, KH, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=(offs_m[:, None] < M) & (kk[None, :] < KH), other=0).to(tl.int32)
        b = tl.load(b_ptr + offs_n[None, :] * stride_bn + kk[:, None] * stride_bk,
                    mask=(kk[:, None] < KH) & (offs_n[None, :] < N), other=0).to(tl.int32)
        a_lo = a & 0xF                       # every element: extract its nibble ...
        a_hi = a >> 4
        b_lo = b & 0xF
        b_hi = b >> 4
        a_lo = tl.where(a_lo >= 8, a_lo - 16, a_lo).to(tl.int8)     # ... and sign-extend it
        a_hi = tl.where(a_hi >= 8, a_hi - 16, a_hi).to(tl.int8)
        b_lo = tl.where(b_lo >= 8, b_lo - 16, b_lo).to(tl.int8)
        b_hi = tl.where(b_hi >= 8, b_hi - 16, b_hi).to(tl.int8)
        acc = tl.dot(a_lo, b_lo, acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, b_hi, acc, out_dtype=tl.int32)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, acc,
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(axis=0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)


def _gemm(kernel, a, b):
    """C (M, N) int32 = A (M, K) · B (N, K)ᵀ, one program per 128x128 tile of C."""
    M, K = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), dtype=torch.int32, device=a.device)
    grid = (triton.cdiv(M, GEMM_CONFIG["BLOCK_M"]), triton.cdiv(N, GEMM_CONFIG["BLOCK_N"]))
    kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                 c.stride(0), c.stride(1), **GEMM_CONFIG)
    return c


def int8_gemm(a, b):
    """a (M, K) int8, b (N, K) int8 -> (M, N) int32."""
    return _gemm(int8_gemm_kernel, a, b)


def unpack_gemm(a, b):
    """a (M, K/2) uint8 packed INT4, b (N, K/2) uint8 -> (M, N) int32."""
    return _gemm(unpack_gemm_kernel, a, b)


def copy(x, BLOCK=1024):
    y = torch.empty_like(x)
    copy_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, x.numel(), BLOCK=BLOCK)
    return y

"""Unpack INT4 values from bytes, with sign extension.

What it computes: p of shape (..., K/2), uint8, becomes q of shape (..., K), int8, with
q[..., 2j] = low nibble of p[..., j] and q[..., 2j+1] = high nibble, each read as a 4-bit two's
complement number: nibbles 0..7 are 0..7 and 8..15 are -8..-1.

Memory layout and why: as in pack_int4, flat contiguous views make row boundaries irrelevant:
flat byte j feeds flat outputs 2j and 2j+1. Each program reads BLOCK bytes once and writes the
two nibbles with two strided stores. Sign extension is done with integer arithmetic
(n - 16 when n >= 8) so that it means the same on every backend; forgetting it is the classic
bug (-1 comes back as 15).
"""
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
    ### BEGIN SOLUTION
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    b = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.int32)
    lo = b & 0xF
    hi = (b >> 4) & 0xF
    lo = tl.where(lo >= 8, lo - 16, lo)
    hi = tl.where(hi >= 8, hi - 16, hi)
    tl.store(q_ptr + 2 * offs, lo.to(tl.int8), mask=mask)
    tl.store(q_ptr + 2 * offs + 1, hi.to(tl.int8), mask=mask)

    ### END SOLUTION


def unpack_int4(p: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8, each nibble sign-extended; the inverse of pack_int4.
    Validates, flattens, launches one program per BLOCK input bytes."""
    validate_unpack(p)
    # TODO 1: p = p.contiguous().
    # TODO 2: allocate q: shape (*p.shape[:-1], 2 * p.shape[-1]), dtype torch.int8, on p.device.
    # TODO 3: n_bytes = p.numel(); when it is 0, return q.
    # TODO 4: launch unpack_int4_kernel on (triton.cdiv(n_bytes, BLOCK),) programs; return q.
    ### BEGIN SOLUTION
    p = p.contiguous()
    q = torch.empty((*p.shape[:-1], 2 * p.shape[-1]), dtype=torch.int8, device=p.device)
    n_bytes = p.numel()
    if n_bytes:
        grid = (triton.cdiv(n_bytes, BLOCK),)
        unpack_int4_kernel[grid](p, q, n_bytes, BLOCK=BLOCK)
    return q
    ### END SOLUTION

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


@triton.jit
def unpack_int4_kernel(p_ptr, q_ptr, n_bytes, BLOCK: tl.constexpr):
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


def unpack_int4(p: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """Launcher: validate, flatten, launch one program per BLOCK input bytes."""
    from int4lab.spec.packing import validate_unpack
    validate_unpack(p)
    p = p.contiguous()
    q = torch.empty((*p.shape[:-1], 2 * p.shape[-1]), dtype=torch.int8, device=p.device)
    n_bytes = p.numel()
    if n_bytes:
        grid = (triton.cdiv(n_bytes, BLOCK),)
        unpack_int4_kernel[grid](p, q, n_bytes, BLOCK=BLOCK)
    return q

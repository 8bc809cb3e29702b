"""Wrong on purpose: the high nibble is written to element 2j and the low one to 2j+1."""
import torch
import triton
import triton.language as tl


@triton.jit
def unpack_int4_kernel(p_ptr, q_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    b = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.int32)
    lo = b & 0xF
    hi = (b >> 4) & 0xF
    lo = tl.where(lo >= 8, lo - 16, lo)
    hi = tl.where(hi >= 8, hi - 16, hi)
    tl.store(q_ptr + 2 * offs, hi.to(tl.int8), mask=mask)
    tl.store(q_ptr + 2 * offs + 1, lo.to(tl.int8), mask=mask)


def unpack_int4(p):
    p = p.contiguous()
    q = torch.empty((*p.shape[:-1], 2 * p.shape[-1]), dtype=torch.int8, device=p.device)
    if p.numel():
        unpack_int4_kernel[(triton.cdiv(p.numel(), 256),)](p, q, p.numel(), BLOCK=256)
    return q

"""Wrong on purpose: nibbles are not sign-extended, so -1 comes back as 15."""
import torch
import triton
import triton.language as tl


@triton.jit
def unpack_int4_kernel(p_ptr, q_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    b = tl.load(p_ptr + offs, mask=mask, other=0).to(tl.int32)
    tl.store(q_ptr + 2 * offs, (b & 0xF).to(tl.int8), mask=mask)
    tl.store(q_ptr + 2 * offs + 1, ((b >> 4) & 0xF).to(tl.int8), mask=mask)


def unpack_int4(p):
    p = p.contiguous()
    q = torch.empty((*p.shape[:-1], 2 * p.shape[-1]), dtype=torch.int8, device=p.device)
    if p.numel():
        unpack_int4_kernel[(triton.cdiv(p.numel(), 256),)](p, q, p.numel(), BLOCK=256)
    return q

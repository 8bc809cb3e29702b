"""Wrong on purpose: element 2j goes in the HIGH nibble (the contract says low)."""
import torch
import triton
import triton.language as tl


@triton.jit
def pack_int4_kernel(q_ptr, p_ptr, n_bytes, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    even = tl.load(q_ptr + 2 * offs, mask=mask, other=0).to(tl.int32) & 0xF
    odd = tl.load(q_ptr + 2 * offs + 1, mask=mask, other=0).to(tl.int32) & 0xF
    tl.store(p_ptr + offs, ((even << 4) | odd).to(tl.uint8), mask=mask)


def pack_int4(q):
    q = q.contiguous()
    p = torch.empty((*q.shape[:-1], q.shape[-1] // 2), dtype=torch.uint8, device=q.device)
    if p.numel():
        pack_int4_kernel[(triton.cdiv(p.numel(), 256),)](q, p, p.numel(), BLOCK=256)
    return p

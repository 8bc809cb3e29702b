"""A known-answer kernel for `int4lab doctor`: out[i] = 2 * x[i] + 1.

Not an exercise (student copies keep it): it only proves that Triton can compile or interpret
a kernel on this machine. One program per BLOCK elements, masked tail, as in every kernel here.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def known_answer_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, 2.0 * x + 1.0, mask=mask)


def known_answer(x: torch.Tensor, BLOCK: int = 256) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel():
        known_answer_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
    return out

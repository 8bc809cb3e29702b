import torch
import triton
import triton.language as tl


@triton.jit
def vector_add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # TODO 1: which program is this (tl.program_id along axis 0)? Compute the offsets of the
    #         BLOCK elements it owns.
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    # TODO 2: a mask that is True only for offsets inside the n elements.
    mask = offs < n
    # TODO 3: load a block of x and a block of y (masked; other=0.0).
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    # TODO 4: store their sum into out (masked).
    tl.store(out_ptr + offs, x + y, mask=mask)


def vector_add(x: torch.Tensor, y: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """out = x + y, for two float tensors of the same shape and dtype: check, flatten, launch one
    program per BLOCK elements."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype or not x.is_floating_point():
        raise TypeError(f"x and y must share one float dtype, got {x.dtype} and {y.dtype}")
    # TODO 1: make x and y contiguous (a transposed view's memory is not in row order, and the
    #         kernel walks both as flat arrays); allocate out = torch.empty_like(x).
    x = x.contiguous()
    y = y.contiguous()
    out = torch.empty_like(x)
    # TODO 2: n = out.numel(); when n == 0 there is nothing to launch: return out.
    n = out.numel()
    if n == 0:
        return out
    # TODO 3: launch vector_add_kernel on a grid of (triton.cdiv(n, BLOCK),) programs,
    #         passing BLOCK=BLOCK; then return out.
    vector_add_kernel[(triton.cdiv(n, BLOCK),)](x, y, out, n, BLOCK=BLOCK)
    return out

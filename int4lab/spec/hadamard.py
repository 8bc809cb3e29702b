"""The Hadamard quantizer (HQ), the spec: rotate, then quantize (paper sec. 4.1).

Activations of transformers have a few outlier channels, 10-100x the rest. With one scale per
tensor, the outlier sets the step size and every other value rounds to zero. HQ multiplies the
reduction dim by a block-diagonal Hadamard matrix H first: each block of 2^k channels is mixed
by an orthogonal +-1/sqrt(2^k) matrix, so an outlier's energy is spread over its whole block and
the quantization grid fits the rest again. Since H H^T = I, the rotation cancels in the GEMM:
Y = X W^T = (XH)(WH)^T ~ s_X s_W int(XH) int(WH)^T.
"""
import math

import torch

from int4lab.spec.quantizers import (
    dequantize,
    quantize,
    quantize_int4_trusted,
    validate_quantize_int4,
)
from int4lab.spec.validate import require_divisible, require_finite, require_float, require_power_of_two


def hadamard_matrix(n, dtype=torch.float32, device=None):
    """Normalized Sylvester Hadamard matrix (paper eq. 5): H_0 = [1], H_k = [[H, H], [H, -H]] / sqrt(2)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    require_power_of_two(n, "the Hadamard size n")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0) / math.sqrt(2)
    return h.to(dtype=dtype, device=device)


def _require_blocks(x, block_size):
    """x float with at least one dim, whose last dim splits into power-of-two blocks."""
    require_float(x, "x")
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    require_power_of_two(block_size, "block_size")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension, got a 0-dim tensor")
    require_divisible(x.shape[-1], block_size, "the last dim of x")


def block_hadamard(x: torch.Tensor, block_size: int = 32) -> torch.Tensor:
    """x @ BlockDiag(H, ..., H) along the last dim. H is orthonormal and symmetric: applying it twice is x."""
    _require_blocks(x, block_size)
    return block_hadamard_trusted(x, block_size)


_H_CACHE: dict = {}


def _cached_hadamard(n, dtype, device):
    """hadamard_matrix(n), built once per (n, dtype, device): a layer rotates every step. The
    cached tensor is only ever read (an operand of @)."""
    key = (n, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    H = _H_CACHE.get(key)
    if H is None:
        H = _H_CACHE[key] = hadamard_matrix(n, dtype=dtype, device=device)
    return H


def block_hadamard_trusted(x, block_size=32):
    """block_hadamard without validation (x float, last dim a multiple of the power-of-two block)."""
    K = x.shape[-1]
    # fp16/bf16 rotate in fp32: the sums of 32 terms would lose the small channels otherwise
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    H = _cached_hadamard(block_size, work, x.device)
    blocks = x.to(work).reshape(*x.shape[:-1], K // block_size, block_size)
    return (blocks @ H).reshape(x.shape).to(x.dtype)


def validate_hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """Raise on input hadamard_quantize cannot take, computing nothing."""
    _require_blocks(x, block_size)
    validate_quantize_int4(x, granularity=granularity, scale=scale)


def hadamard_quantize_spec(x, block_size=32, granularity="row", scale=None):
    """Slot "hadamard_quantize": INT4 round-to-nearest of x @ BlockDiag(H), packed: (packed, scales)."""
    validate_hadamard_quantize(x, block_size, granularity, scale)
    return hadamard_quantize_trusted(x, block_size, granularity, scale)


def hadamard_quantize_trusted(x, block_size=32, granularity="row", scale=None, rotated=None,
                              as_codes=False):
    """hadamard_quantize_spec without validation (for the layers, on tensors they made);
    `rotated`: block_hadamard(x, block_size), when the caller already has it; as_codes as
    quantize_int4_trusted."""
    xh = block_hadamard_trusted(x, block_size) if rotated is None else rotated
    return quantize_int4_trusted(xh, granularity=granularity, rounding="nearest", scale=scale,
                                 as_codes=as_codes)


def hq_fake_quantize(x, block_size=32):
    """What HQ stores for x, mapped back: s * int(XH) H^T (block 1 = plain per-tensor RTN)."""
    q, s = quantize(block_hadamard(x, block_size), bits=4, granularity="tensor")
    return block_hadamard(dequantize(q, s), block_size)


def hq_matmul(x, w, block_size=32):
    """The HQ product Y ~ s_X s_W int(XH) int(WH)^T (paper eq. 6), per-tensor scales, fp32."""
    require_float(x, "x")
    require_float(w, "w")
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"hq_matmul needs x (N, D) and w (C, D) with the same D; got "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    qx, sx = quantize(block_hadamard(x, block_size), bits=4, granularity="tensor")
    qw, sw = quantize(block_hadamard(w, block_size), bits=4, granularity="tensor")
    # integer GEMM (exact in fp64), then the two scales: H H^T = I cancels between the operands
    return ((qx.double() @ qw.double().T).float() * sx * sw)


def quantization_error(x, block_size=32):
    """||q(X) - X||_F for HQ with this block size (1 = no rotation, plain per-tensor INT4)."""
    require_finite(x, "x")
    return torch.linalg.vector_norm(hq_fake_quantize(x, block_size).float() - x.float()).item()


def search_block_size(x, w, candidates=None):
    """The paper's search: the block size with the lowest ||q(X) - X|| * ||q(W) - W||.

    candidates default to 1, 2, 4, ... up to the largest power of two dividing D.
    Returns (best block size, {block size: error product}).
    """
    require_float(x, "x")
    require_float(w, "w")
    D = x.shape[-1]
    if w.shape[-1] != D:
        raise ValueError(f"x and w must share the last dim (D); got {x.shape[-1]} and {w.shape[-1]}")
    if candidates is None:
        candidates, b = [], 1
        while b <= D and D % b == 0:
            candidates.append(b)
            b *= 2
    errors = {b: quantization_error(x, b) * quantization_error(w, b) for b in candidates}
    if not errors:
        raise ValueError("no candidate block sizes to search")
    return min(errors, key=errors.get), errors

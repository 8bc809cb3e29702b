"""The accelerated operations, each dispatched through the registry.

Layers call these for every quantized operation (ops.quantize_int4, ops.int4_matmul, ...), never
a kernel directly, so Int4Linear runs unchanged on the spec, the library's Triton kernels or a
learner's unlocked kernels; int4lab.last_ran(name) says which one ran. (The layers also use spec
helpers that no kernel replaces: block_hadamard for the backward's rotation, LSQ's codes.)
"""
import functools
import types

import torch
from torch import Tensor

from int4lab.exercises.registry import dispatch, dispatch_trusted


def vector_add(x: Tensor, y: Tensor) -> Tensor:
    """x + y through the registry (lesson 00's first kernel)."""
    return dispatch("vector_add", x, y)


def pack_int4(q: Tensor) -> Tensor:
    """(..., K) int8 in [-8, 7] -> (..., K/2) uint8, element 2j in the low nibble."""
    return dispatch("pack_int4", q)


def unpack_int4(p: Tensor) -> Tensor:
    """(..., K/2) uint8 -> (..., K) int8; the exact inverse of pack_int4."""
    return dispatch("unpack_int4", p)


def quantize_int4(x: Tensor, granularity: str = "row", block_size: int = 32, rounding: str = "nearest",
                  seed: int | None = None, scale: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales) per row, block or tensor."""
    return dispatch("quantize_int4", x, granularity=granularity, block_size=block_size,
                    rounding=rounding, seed=seed, scale=scale)


def int4_matmul(a: Tensor, a_scale: Tensor, b: Tensor, b_scale: Tensor,
                out_dtype: torch.dtype = torch.float32) -> Tensor:
    """(A_codes · B_codesᵀ) · s_A · s_Bᵀ for A (M, K/2), B (N, K/2) packed along K."""
    return dispatch("int4_matmul", a, a_scale, b, b_scale, out_dtype=out_dtype)


def hadamard_quantize(x: Tensor, block_size: int = 32, granularity: str = "row",
                      scale: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    """Block Hadamard rotation of the last dim fused with INT4 quantize and pack."""
    return dispatch("hadamard_quantize", x, block_size=block_size, granularity=granularity,
                    scale=scale)


def bit_split(g: Tensor, seed: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """∇Y -> (hi packed, lo packed, scale_hi, scale_lo): INT8 as two INT4 halves."""
    return dispatch("bit_split", g, seed=seed)


def lss_gather(codes: Tensor, probs: Tensor | None = None, seed: int | None = None,
               other: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Sample rows with keep-probabilities; gather kept rows -> (kept, kept_other, index, weight)."""
    return dispatch("lss_gather", codes, probs=probs, seed=seed, other=other)


# The same operations for the layers, which pass tensors they made themselves (codes in range,
# finite values, matching shapes): no validation at the call, and on the spec its trusted entry
# (the same results, without the spec's own checks). Public callers use the functions above,
# which validate once, at the boundary.
trusted = types.SimpleNamespace(**{
    name: functools.partial(dispatch_trusted, name)
    for name in ("pack_int4", "unpack_int4", "quantize_int4", "int4_matmul", "hadamard_quantize",
                 "bit_split", "lss_gather")})

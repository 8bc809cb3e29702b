"""The accelerated operations, each dispatched through the registry.

Layers call only these (ops.quantize_int4, ops.int4_matmul, ...), never a kernel or a spec
function directly, so Int4Linear runs unchanged on the spec, the library's Triton kernels or a
learner's unlocked kernels; int4lab.last_ran(name) says which one ran.
"""
import torch

from .registry import dispatch


def pack_int4(q):
    """(..., K) int8 in [-8, 7] -> (..., K/2) uint8, element 2j in the low nibble."""
    return dispatch("pack_int4", q)


def unpack_int4(p):
    """(..., K/2) uint8 -> (..., K) int8; the exact inverse of pack_int4."""
    return dispatch("unpack_int4", p)


def quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales) per row, block or tensor."""
    return dispatch("quantize_int4", x, granularity=granularity, block_size=block_size,
                    rounding=rounding, seed=seed, scale=scale)


def int4_matmul(a, a_scale, b, b_scale, out_dtype=torch.float32):
    """(A_codes · B_codesᵀ) · s_A · s_Bᵀ for A (M, K/2), B (N, K/2) packed along K."""
    return dispatch("int4_matmul", a, a_scale, b, b_scale, out_dtype=out_dtype)


def hadamard_quantize(x, block_size=32, granularity="row", scale=None):
    """Block Hadamard rotation of the last dim fused with INT4 quantize and pack."""
    return dispatch("hadamard_quantize", x, block_size=block_size, granularity=granularity,
                    scale=scale)


def bit_split(g, seed=None):
    """∇Y -> (hi packed, lo packed, scale_hi, scale_lo): INT8 as two INT4 halves."""
    return dispatch("bit_split", g, seed=seed)


def lss_gather(codes, probs=None, seed=None, other=None):
    """Sample rows with keep-probabilities; gather kept rows -> (kept, kept_other, index, weight)."""
    return dispatch("lss_gather", codes, probs=probs, seed=seed, other=other)

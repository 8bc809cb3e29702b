"""INT4 packing, the spec: two 4-bit integers per byte.

Layout (a contract every kernel and lesson uses): INT4 values in [-8, 7], held in int8, are
packed along the last dimension. Element 2j goes in the low nibble of byte j and element 2j+1
in the high nibble; the byte is stored as uint8. Unpacking sign-extends each nibble back to
int8, so pack and unpack are exact inverses.
"""
import torch

from int4lab.spec.validate import require_dtype, require_even_last_dim, require_int4_range


def validate_pack(q):
    require_dtype(q, "q", (torch.int8,))
    require_even_last_dim(q, "q")
    require_int4_range(q, "q")


def validate_unpack(p):
    require_dtype(p, "p", (torch.uint8,))
    if p.dim() == 0:
        raise ValueError("p must have at least one dimension, got a 0-dim tensor")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(..., K) int8 in [-8, 7] -> (..., K/2) uint8: low nibble = q[..., 2j], high = q[..., 2j+1]."""
    validate_pack(q)
    return pack_int4_trusted(q)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8, each nibble sign-extended (8..15 -> -8..-1)."""
    validate_unpack(p)
    return unpack_int4_trusted(p)


# The trusted entries: the same results for input that is already known to be valid (the layers
# pass codes they made themselves), computed in int8 without widening: q & 0xF is the nibble
# (two's complement), and q << 4 wraps in int8 to exactly the byte's high nibble. Unpacking
# shifts in int8, which is arithmetic: (b << 4) >> 4 sign-extends the low nibble and b >> 4 the
# high one. (Lesson 01 widens to int32 instead, which is clearer and the same bits.)

def pack_int4_trusted(q: torch.Tensor) -> torch.Tensor:
    """pack_int4 without validation: q must be int8 in [-8, 7] with an even last dim."""
    return ((q[..., 0::2] & 0xF) | (q[..., 1::2] << 4)).view(torch.uint8)


def unpack_int4_trusted(p: torch.Tensor) -> torch.Tensor:
    """unpack_int4 without validation: p must be uint8 with at least one dim."""
    b = p.view(torch.int8)
    q = torch.empty(*p.shape[:-1], 2 * p.shape[-1], dtype=torch.int8, device=p.device)
    q[..., 0::2] = (b << 4) >> 4
    q[..., 1::2] = b >> 4
    return q

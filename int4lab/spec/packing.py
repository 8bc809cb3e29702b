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
    u = q.to(torch.int16) & 0xF                    # two's complement nibble, 0..15
    return (u[..., 0::2] | (u[..., 1::2] << 4)).to(torch.uint8)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    """(..., K/2) uint8 -> (..., K) int8, each nibble sign-extended (8..15 -> -8..-1)."""
    validate_unpack(p)
    b = p.to(torch.int16)
    lo, hi = b & 0xF, (b >> 4) & 0xF
    q = torch.stack((lo, hi), dim=-1).reshape(*p.shape[:-1], 2 * p.shape[-1])
    return torch.where(q >= 8, q - 16, q).to(torch.int8)

"""Slots pack_int4 and unpack_int4 (lesson 01): two INT4 values per byte."""
import torch

from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Slot, register
from int4lab.exercises.slots.common import ODD_ROWS, int4_codes, noncontiguous
from int4lab.spec.packing import (
    pack_int4,
    pack_int4_trusted,
    unpack_int4,
    unpack_int4_trusted,
    validate_pack,
    validate_unpack,
)

# (name, shape, hidden). Last dims of 2, 34 and 130 are not multiples of any power-of-two
# block, so a kernel whose last block is unmasked fails them.
SHAPES = ([(f"{r}x34", (r, 34), False) for r in ODD_ROWS]
          + [("3x130", (3, 130), False), ("1x2", (1, 2), False), ("0x8 (empty)", (0, 8), False)]
          + [("129x2050", (129, 2050), True), ("5x7x66 (3-D)", (5, 7, 66), True),
             ("4x0 (empty)", (4, 0), True), ("1x4098", (1, 4098), True)])


def _codes(shape, contiguous=True, edge=None):
    def make(seed, device):
        q = int4_codes(shape, seed, device)
        if edge is not None:
            q.fill_(edge)
        return ((q if contiguous else noncontiguous(q)),), {}
    return make


def _packed(shape, contiguous=True):
    def make(seed, device):
        (q,), _ = _codes(shape)(seed, device)
        p = pack_int4(q)
        return ((p if contiguous else noncontiguous(p)),), {}
    return make


def _exact(e, g, args, kwargs):
    return compare.exact(e, g)


def _pack_checks():
    checks = [Check(name, _codes(shape), _exact, seeds=(0, 1, 2) if hidden else (0,), hidden=hidden)
              for name, shape, hidden in SHAPES]
    checks += [Check("31x66 non-contiguous", _codes((31, 66), contiguous=False), _exact),
               Check("all -8", _codes((3, 34), edge=-8), _exact, hidden=True),
               Check("all 7", _codes((3, 34), edge=7), _exact, hidden=True)]
    return checks


def _unpack_checks():
    checks = [Check(name, _packed(shape), _exact, seeds=(0, 1, 2) if hidden else (0,), hidden=hidden)
              for name, shape, hidden in SHAPES]
    checks += [Check("31x33 non-contiguous", _packed((31, 66), contiguous=False), _exact)]
    return checks


def _swap(p):
    return ((p & 0x0F) << 4) | (p >> 4)


def _hint_nibbles(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == torch.uint8:
        if torch.equal(_swap(got.cpu()), expected.cpu()):
            return ("the two nibbles are swapped: element 2j goes in the LOW nibble (bits 0-3) "
                    "and element 2j+1 in the HIGH nibble (bits 4-7)")
    return None


def _hint_pack_dtype(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.dtype != torch.uint8:
        return "packed bytes are stored as uint8 (torch.empty(..., dtype=torch.uint8))"
    return None


def _hint_sign(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        e, g = expected.cpu().to(torch.int16), got.cpu().to(torch.int16)
        if torch.equal(g & 0xF, e & 0xF) and (e < 0).any() and not torch.equal(g, e):
            return ("negative values come back as 8..15: sign-extend each nibble "
                    "(a nibble n >= 8 means n - 16)")
    return None


def _hint_order(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dim() >= 1:
        e, g = expected.cpu(), got.cpu()
        k = e.shape[-1]
        if k >= 2 and torch.equal(g[..., 0::2], e[..., 1::2]) and torch.equal(g[..., 1::2], e[..., 0::2]):
            return "even and odd outputs are swapped: the low nibble is element 2j, the high one 2j+1"
    return None



register(Slot(
    name="pack_int4", spec=pack_int4, trusted=pack_int4_trusted, triton="int4lab.kernels.pack_int4:pack_int4",
    validate=validate_pack, lesson="01", checks=_pack_checks(),
    hints=[_hint_pack_dtype, _hint_nibbles],
    bench=Bench(make=lambda n, d: ((int4_codes((n, n), 0, d),), {}),
                baseline=torch.clone, baseline_name="torch.clone (int8)", sizes=(1024, 4096, 8192),
                work=lambda a, k: a[0].numel() * 1.5),          # read 1 byte, write half a byte
))

register(Slot(
    name="unpack_int4", spec=unpack_int4, trusted=unpack_int4_trusted, triton="int4lab.kernels.unpack_int4:unpack_int4",
    validate=validate_unpack, lesson="01", checks=_unpack_checks(),
    hints=[_hint_sign, _hint_order],
    bench=Bench(make=lambda n, d: ((pack_int4(int4_codes((n, n), 0, d)),), {}),
                baseline=torch.clone, baseline_name="torch.clone (uint8)", sizes=(1024, 4096, 8192),
                work=lambda a, k: a[0].numel() * 3),            # read 1 byte, write 2
))

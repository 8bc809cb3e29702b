"""INT4 packing: spec, Triton kernels (through the interpreter on CPU) and dispatch."""
import pytest
import torch

import int4lab
from int4lab.kernels import pack_int4 as kpack
from int4lab.kernels import unpack_int4 as kunpack
from int4lab.spec import packing

SHAPES = [(1, 2), (3, 34), (127, 66), (129, 130), (1, 2050), (5, 7, 10), (0, 8), (4, 0)]


def codes(shape, seed=0):
    return torch.randint(-8, 8, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int8)


def test_layout_contract():
    # element 0 -> low nibble, element 1 -> high nibble; -2 is 0xE in two's complement
    p = packing.pack_int4(torch.tensor([[1, -2, -8, 7]], dtype=torch.int8))
    assert p.tolist() == [[0xE1, 0x78]]
    assert packing.unpack_int4(p).tolist() == [[1, -2, -8, 7]]


@pytest.mark.parametrize("shape", SHAPES)
def test_spec_roundtrip(shape):
    q = codes(shape)
    assert torch.equal(packing.unpack_int4(packing.pack_int4(q)), q)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_kernels_match_spec(shape, seed):
    q = codes(shape, seed)
    p = kpack.pack_int4(q)
    assert torch.equal(p, packing.pack_int4(q))
    assert torch.equal(kunpack.unpack_int4(p), q)


def test_kernels_on_non_contiguous_input():
    q = codes((66, 31)).t()                     # (31, 66), not contiguous
    assert not q.is_contiguous()
    assert torch.equal(kpack.pack_int4(q), packing.pack_int4(q))
    p = packing.pack_int4(codes((40, 62))).t()  # (31, 40) uint8 view
    assert torch.equal(kunpack.unpack_int4(p), packing.unpack_int4(p))


def test_every_value_round_trips_through_the_kernels():
    q = torch.tensor([[a, b] for a in range(-8, 8) for b in range(-8, 8)], dtype=torch.int8)
    assert torch.equal(kunpack.unpack_int4(kpack.pack_int4(q)), q)


@pytest.mark.parametrize("impl", ["spec", "triton"])
def test_dispatch_says_what_ran(impl):
    q = codes((3, 34))
    with int4lab.use(impl):
        p = int4lab.pack_int4(q)
        assert int4lab.last_ran("pack_int4") == impl
        assert torch.equal(int4lab.unpack_int4(p), q)
        assert int4lab.last_ran("unpack_int4") == impl


@pytest.mark.parametrize("fn", [int4lab.pack_int4, packing.pack_int4, kpack.pack_int4])
def test_bad_input_is_named(fn):
    with pytest.raises(ValueError, match="odd last dimension"):
        fn(torch.zeros(2, 3, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"outside the INT4 range.*max 9"):
        fn(torch.tensor([[1, 9]], dtype=torch.int8))
    with pytest.raises(TypeError, match="dtype int8"):
        fn(torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([1, 2])


@pytest.mark.parametrize("fn", [int4lab.unpack_int4, kunpack.unpack_int4])
def test_unpack_bad_input(fn):
    with pytest.raises(TypeError, match="uint8"):
        fn(torch.zeros(2, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="0-dim"):
        fn(torch.tensor(3, dtype=torch.uint8))

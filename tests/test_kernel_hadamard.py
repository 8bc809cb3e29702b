"""The fused hadamard_quantize kernel (Triton's interpreter on CPU) against the spec, its slot and
wrong kernels.

Its rotation is a tl.dot whose sums may run in another order than torch's matmul, so the
comparison is the slot's: scales within a tight rtol, codes equal except by 1 where x H / s is
within float rounding of a .5 boundary. Where the rotation is exact (block 16, dyadic inputs)
the comparison is bit for bit.
"""
import pytest
import torch
import wrong_kernels

import int4lab
from int4lab.exercises import learner as exercises
from int4lab.exercises import registry
from int4lab.exercises.slots import hadamard as slot_mod
from int4lab.kernels import hadamard_quantize as kh
from int4lab.spec.hadamard import block_hadamard, hadamard_quantize_spec
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import quantize_int4_spec


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 3).to(dtype)


def agree(x, *args, **kwargs):
    """The kernel against the spec with the slot's comparison; returns the kernel's output."""
    got = kh.hadamard_quantize(x, *args, **kwargs)
    expected = hadamard_quantize_spec(x, *args, **kwargs)
    m = slot_mod._close(expected, got, (x, *args), kwargs)
    assert m is None, m.message
    return got


@pytest.mark.parametrize("shape", [(1, 32), (3, 96), (127, 64), (129, 96), (2, 5, 64), (64,)])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matches_spec(shape, granularity, dtype):
    for seed in (0, 1):
        agree(randn(*shape, seed=seed, dtype=dtype), 32, granularity=granularity)


@pytest.mark.parametrize("block_size,K", [(16, 96), (32, 160), (64, 192), (128, 384)])
@pytest.mark.parametrize("granularity", ["row", "block", "tensor"])
def test_every_supported_block_size(block_size, K, granularity):
    agree(randn(33, K), block_size, granularity=granularity)


def test_it_is_rotate_then_quantize():
    x = randn(9, 64)
    p, s = kh.hadamard_quantize(x, 32)
    p2, s2 = quantize_int4_spec(block_hadamard(x, 32))
    assert torch.allclose(s, s2, rtol=1e-6) and (unpack_int4(p).int() - unpack_int4(p2).int()).abs().max() <= 1


def test_exact_rotation_is_bit_for_bit_ties_included():
    for dtype in (torch.float32, torch.float16):
        x = slot_mod._exact_ties((31, 128), 0, dtype)          # x H16 = k + 1/2 exactly, scale 1
        for gran in ("row", "tensor", "block"):
            p, s = kh.hadamard_quantize(x, 16, granularity=gran)
            pe, se = hadamard_quantize_spec(x, 16, granularity=gran)
            assert torch.equal(p, pe) and torch.equal(s, se)
    x = slot_mod._exact_ties((1, 16), 0, torch.float32)
    y = block_hadamard(x, 16)
    codes = unpack_int4(kh.hadamard_quantize(x, 16)[0])[0]
    assert torch.equal(codes.float(), torch.round(y[0]))        # ties to even, as torch.round


def test_non_contiguous_inputs():
    x = randn(96, 33).t()
    assert not x.is_contiguous()
    agree(x, 32)
    agree(x, 32, granularity="tensor")
    agree(randn(4, 64, 6).permute(0, 2, 1), 16, granularity="block")


def test_given_scale_and_edge_values():
    x = randn(17, 128)
    x[..., 3] *= 100                                          # an outlier channel
    x[0] = 0
    for gran in ("row", "block", "tensor"):
        agree(x, 32, granularity=gran)
        agree(x, 64, granularity=gran, scale=0.05)
        agree(x, 32, granularity=gran, scale=torch.tensor(0.7))
    z = torch.zeros(3, 32)
    p, s = kh.hadamard_quantize(z, granularity="tensor")
    assert s.item() == 1.0 and p.eq(0).all()


@pytest.mark.parametrize("shape,gran", [((0, 32), "row"), ((4, 0), "row"), ((4, 0), "block"), ((0, 64), "tensor")])
def test_empty_tensors(shape, gran):
    x = torch.zeros(shape)
    for scale in (None, 0.5):
        p, s = kh.hadamard_quantize(x, granularity=gran, scale=scale)
        pe, se = hadamard_quantize_spec(x, granularity=gran, scale=scale)
        assert p.shape == pe.shape and p.dtype == torch.uint8 and torch.equal(s, se)


def test_bad_input_is_refused_with_a_clear_message():
    f = kh.hadamard_quantize
    with pytest.raises(ValueError, match="NaN"):
        f(torch.full((2, 32), float("nan")))
    with pytest.raises(ValueError, match="Inf"):
        f(torch.full((2, 32), float("inf")))
    with pytest.raises(ValueError, match="not a multiple of the block size 32"):
        f(torch.zeros(2, 48))
    with pytest.raises(ValueError, match="16, 32, 64, 128"):
        f(torch.zeros(2, 256), 256)
    with pytest.raises(ValueError, match="16, 32, 64, 128"):
        f(torch.zeros(2, 8), 8)
    with pytest.raises(ValueError, match="power of two"):
        f(torch.zeros(2, 48), 24)
    with pytest.raises(TypeError, match="dtype"):
        f(torch.zeros(2, 32, dtype=torch.int8))
    with pytest.raises(ValueError, match="granularity"):
        f(torch.zeros(2, 32), granularity="col")
    with pytest.raises(ValueError, match="positive"):
        f(torch.zeros(2, 32), scale=0.0)


@pytest.mark.parametrize("impl", ["spec", "triton"])
def test_dispatch_says_what_ran(impl):
    x = randn(3, 64)
    with int4lab.use(impl):
        got = int4lab.hadamard_quantize(x, 32, granularity="tensor", scale=0.1)
        assert int4lab.last_ran("hadamard_quantize") == impl
    assert slot_mod._close(hadamard_quantize_spec(x, 32, "tensor", 0.1), got, (x, 32), {}) is None


def test_library_kernel_passes_visible_and_hidden_checks():
    results = exercises.run_checks("hadamard_quantize", registry.get("hadamard_quantize").triton_fn(), hidden=True)
    assert len(results) > 40 and all(r.passed for r in results), [r for r in results if not r.passed]
    slot = registry.get("hadamard_quantize")
    args, kw = slot.bench.make(64, "cpu")
    assert slot.bench.work(args, kw) > 0 and slot.bench.baseline(*args, **kw).shape == (64, 64)


def test_the_compare_allows_boundary_flips_only():
    x = randn(33, 64)
    expected = hadamard_quantize_spec(x, 32)
    v = slot_mod._rotated_ratio(x, expected[1], 32)
    codes = unpack_int4(expected[0]).clone()
    # flip one code by 1 far from a boundary: rejected
    far = ((v.abs() - v.abs().floor() - 0.5).abs() > 0.3).nonzero()[0].tolist()
    bad = codes.clone()
    bad[tuple(far)] += 1 if bad[tuple(far)] < 7 else -1
    from int4lab.spec.packing import pack_int4
    m = slot_mod._close(expected, (pack_int4(bad), expected[1]), (x, 32), {})
    assert m is not None and "beyond float rounding" in m.message
    # scales off by 1e-4 relative: rejected
    assert slot_mod._close(expected, (expected[0], expected[1] * (1 + 1e-4)), (x, 32), {}) is not None


WRONG = {"unnormalized": "Hadamard matrix is normalized",
         "scale_from_x": "ROTATED values",
         "no_column_mask": "needs a mask"}


@pytest.mark.parametrize("path", wrong_kernels.files("hadamard_quantize"), ids=lambda p: p.stem)
def test_wrong_kernels_are_rejected_with_actionable_messages(home, path):
    slot, fn = wrong_kernels.load(path)
    rep = int4lab.unlock(slot, fn, quiet=True)
    assert not rep.passed and int4lab.which(slot)["would_run"] != "learner"
    assert WRONG[path.stem.split("__")[1]] in str(rep), str(rep)

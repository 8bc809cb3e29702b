"""The quantize_int4 kernel (Triton's interpreter on CPU) against the spec, its slot and wrong kernels."""
import pytest
import torch
import wrong_kernels

import int4lab
from int4lab.exercises import learner as exercises
from int4lab.exercises import registry
from int4lab.exercises.slots import quantize as slot_mod
from int4lab.kernels import quantize_int4 as kq
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import quantize_int4_spec


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 3).to(dtype)


def same(a, b):
    (pa, sa), (pb, sb) = a, b
    assert pa.dtype == pb.dtype == torch.uint8 and pa.shape == pb.shape
    assert sa.dtype == sb.dtype == torch.float32 and sa.shape == sb.shape
    assert torch.equal(pa, pb), (unpack_int4(pa) != unpack_int4(pb)).nonzero()[:5]
    assert torch.equal(sa, sb)


@pytest.mark.parametrize("shape", [(1, 2), (3, 34), (127, 66), (129, 34), (5, 7, 66), (66,)])
@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_to_nearest_matches_spec_bit_for_bit(shape, granularity, dtype):
    for seed in (0, 1):
        x = randn(*shape, seed=seed, dtype=dtype)
        same(kq.quantize_int4(x, granularity=granularity), quantize_int4_spec(x, granularity=granularity))


@pytest.mark.parametrize("shape,block", [((33, 64), 32), ((5, 96), 16), ((3, 36), 6), ((2, 3, 128), 128), ((5, 2), 2)])
def test_block_granularity_matches_spec(shape, block):
    x = randn(*shape)
    same(kq.quantize_int4(x, granularity="block", block_size=block),
         quantize_int4_spec(x, granularity="block", block_size=block))


def test_exact_ties_round_half_to_even_as_torch_round():
    # scale = 7 / 7 = 1, so x / s is exactly these values
    x = torch.tensor([[7.0, 2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 1.5, -1.5, 6.5, -6.5, 4.5]])
    p, s = kq.quantize_int4(x)
    assert s.item() == 1.0
    assert unpack_int4(p).tolist() == [[7, 2, -2, 4, -4, 0, 0, 2, -2, 6, -6, 4]]
    same((p, s), quantize_int4_spec(x))
    # and a grid of ties in every granularity, fp16 too
    for dtype in (torch.float32, torch.float16):
        x = slot_mod._grid((31, 128), 0, 0.5, dtype)
        for gran in ("row", "block", "tensor"):
            same(kq.quantize_int4(x, granularity=gran), quantize_int4_spec(x, granularity=gran))


def test_non_contiguous_inputs_need_no_copy_and_match():
    x = randn(66, 31).t()                                  # (31, 66), strides (1, 31)
    assert not x.is_contiguous()
    for gran in ("row", "tensor"):
        same(kq.quantize_int4(x, granularity=gran), quantize_int4_spec(x, granularity=gran))
    x3 = randn(4, 64, 6).permute(0, 2, 1)                  # 3-D, reshape has to copy
    same(kq.quantize_int4(x3, granularity="block", block_size=16),
         quantize_int4_spec(x3, granularity="block", block_size=16))


def test_given_scale_clips_and_fills_every_scale():
    x = randn(9, 34)
    for scale in (0.05, torch.tensor(0.3), 2):
        for gran in ("tensor", "row", "block"):
            kw = dict(granularity=gran, block_size=2, scale=scale)
            same(kq.quantize_int4(x, **kw), quantize_int4_spec(x, **kw))
    p, s = kq.quantize_int4(x, granularity="tensor", scale=0.01)
    assert s.shape == () and unpack_int4(p).abs().max() == 7      # everything beyond 7 s is clipped


def test_edge_values():
    x = randn(17, 34)
    x[0] = 0
    x[5] = 0
    x[3, 7] = 1e4                                           # one huge outlier
    for gran in ("row", "tensor", "block"):
        same(kq.quantize_int4(x, granularity=gran, block_size=2), quantize_int4_spec(x, granularity=gran, block_size=2))
    z = torch.zeros(3, 8)
    same(kq.quantize_int4(z, granularity="tensor"), quantize_int4_spec(z, granularity="tensor"))


@pytest.mark.parametrize("shape,gran", [((0, 8), "row"), ((4, 0), "row"), ((4, 0), "block"), ((0, 8), "tensor"),
                                        ((2, 0, 6), "row")])
def test_empty_tensors(shape, gran):
    x = torch.zeros(shape)
    same(kq.quantize_int4(x, granularity=gran), quantize_int4_spec(x, granularity=gran))
    same(kq.quantize_int4(x, granularity=gran, scale=0.5), quantize_int4_spec(x, granularity=gran, scale=0.5))


def test_stochastic_rounding_is_seeded_unbiased_and_agrees_in_distribution():
    x = slot_mod._grid((65, 64), 0, 0.25, torch.float32)    # x / s = k + 1/4 exactly
    a = kq.quantize_int4(x, rounding="stochastic", seed=3)
    same(a, kq.quantize_int4(x, rounding="stochastic", seed=3))          # same seed, same codes
    b = kq.quantize_int4(x, rounding="stochastic", seed=4)
    assert not torch.equal(a[0], b[0])
    spec = quantize_int4_spec(x, rounding="stochastic", seed=3)
    assert slot_mod._stochastic(spec, a, (x,), {"rounding": "stochastic"}) is None
    # a quarter of the values round up (binomial, 3640 draws: sd 26)
    v = x / a[1]
    up = (unpack_int4(a[0]).float() > v) & (v != v.round())
    n = int((v != v.round()).sum())
    assert abs(int(up.sum()) - n / 4) < 6 * (n * 3 / 16) ** 0.5
    # unseeded calls draw fresh numbers
    assert not torch.equal(kq.quantize_int4(x, rounding="stochastic")[0],
                           kq.quantize_int4(x, rounding="stochastic")[0])


def test_the_stochastic_compare_rejects_deterministic_or_correlated_rounding():
    x = slot_mod._grid((65, 64), 0, 0.25, torch.float32)
    kw = {"rounding": "stochastic", "seed": 0}
    spec = quantize_int4_spec(x, **kw)
    nearest = quantize_int4_spec(x)
    assert "not random" in slot_mod._stochastic(spec, nearest, (x,), kw).message
    assert slot_mod._stochastic(spec, quantize_int4_spec(x, rounding="stochastic", seed=1), (x,), kw) is None


def test_bad_input_is_refused_with_a_clear_message():
    f = kq.quantize_int4
    with pytest.raises(ValueError, match="NaN"):
        f(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="Inf"):
        f(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="odd last dimension"):
        f(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="dtype"):
        f(torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="not a multiple of block_size"):
        f(torch.zeros(2, 34), granularity="block", block_size=32)
    with pytest.raises(ValueError, match="must be even"):
        f(torch.zeros(2, 6), granularity="block", block_size=3)
    with pytest.raises(ValueError, match="granularity"):
        f(torch.zeros(2, 4), granularity="col")
    with pytest.raises(ValueError, match="rounding"):
        f(torch.zeros(2, 4), rounding="up")
    with pytest.raises(ValueError, match="positive"):
        f(torch.zeros(2, 4), scale=-1.0)
    with pytest.raises(ValueError, match="0-dim"):
        f(torch.zeros(2, 4), scale=torch.ones(2))


@pytest.mark.parametrize("impl", ["spec", "triton"])
def test_dispatch_says_what_ran(impl):
    x = randn(3, 34)
    with int4lab.use(impl):
        out = int4lab.quantize_int4(x, granularity="block", block_size=2)
        assert int4lab.last_ran("quantize_int4") == impl
    same(out, quantize_int4_spec(x, granularity="block", block_size=2))


def test_library_kernel_passes_visible_and_hidden_checks():
    results = exercises.run_checks("quantize_int4", registry.get("quantize_int4").triton_fn(), hidden=True)
    assert len(results) > 40 and all(r.passed for r in results), [r for r in results if not r.passed]
    slot = registry.get("quantize_int4")
    args, kw = slot.bench.make(64, "cpu")
    assert slot.bench.work(args, kw) > 0 and slot.bench.baseline(*args, **kw).shape == (64, 64)


WRONG = {"round_half_up": (False, "EVEN neighbour"),
         "qmax_8": (False, "max|x| / 8"),
         "shared_random": (False, "reuses random numbers"),
         "no_zero_guard": (True, "all-zero group")}                     # hidden checks catch it


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # 0 / 0 in no_zero_guard
@pytest.mark.parametrize("path", wrong_kernels.files("quantize_int4"), ids=lambda p: p.stem)
def test_wrong_kernels_are_rejected_with_actionable_messages(home, path):
    slot, fn = wrong_kernels.load(path)
    hidden_only, text = WRONG[path.stem.split("__")[1]]
    if hidden_only:
        results = exercises.run_checks(slot, fn, hidden=True)
        assert not all(r.passed for r in results)
        report = "\n".join(f"{r.message} {r.hint}" for r in results)
    else:
        rep = int4lab.unlock(slot, fn, quiet=True)
        assert not rep.passed and int4lab.which(slot)["would_run"] != "learner"
        report = str(rep)
    assert text in report, report

"""The bit_split and lss_gather kernels against the spec (Triton's interpreter on the CPU), their
slots' checks, hints and wrong kernels, dispatch, and the benchmark definitions.

Both kernels are stochastic: the deterministic parts (hi, the scales, the probs=None gather)
must equal the spec bit for bit, the random parts (lo, which rows are kept) must agree with it
in distribution: the tests measure means, variances and frequencies over many draws.
"""
import math

import pytest
import torch
import wrong_kernels

import int4lab
from int4lab import runtime
from int4lab.exercises import learner as exercises
from int4lab.exercises import registry
from int4lab.exercises.slots.gradients import _lo_stochastic, _split_reference
from int4lab.kernels.bit_split import bit_split
from int4lab.kernels.lss_gather import lss_gather
from int4lab.spec.gradients import bit_split_mean, bit_split_spec, lss_gather_spec
from int4lab.spec.packing import pack_int4, unpack_int4

ON_GPU = runtime.HAS_CUDA and not runtime.INTERPRET
DEVICE = runtime.DEVICE






def gen(seed):
    return torch.Generator().manual_seed(seed)


def sparse_grad(n, c, seed=0, dtype=torch.float32):
    """A gradient like the paper's: a few token rows large, most near zero."""
    g = gen(seed)
    x = torch.randn(n, c, generator=g) * torch.rand(n, 1, generator=g) ** 4
    return x.to(dtype).to(DEVICE)


def packed_rows(rows, width, seed=0):
    q = torch.randint(-8, 8, (rows, 2 * width), generator=gen(seed), dtype=torch.int8)
    return pack_int4(q).to(DEVICE)


# ---- bit_split against the spec -------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 2), (3, 34), (31, 66), (33, 130), (129, 258)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bit_split_hi_and_scales_are_exact_lo_is_a_stochastic_rounding(shape, dtype):
    g = sparse_grad(*shape, seed=shape[0], dtype=dtype)
    hi, lo, s_hi, s_lo = bit_split(g, seed=7)
    e_hi, e_lo, e_shi, e_slo = bit_split_spec(g, seed=7)
    assert hi.dtype == lo.dtype == torch.uint8 and hi.shape == lo.shape == (shape[0], shape[1] // 2)
    assert s_hi.dim() == 0 and s_hi.dtype == torch.float32 and s_lo.dtype == torch.float32
    assert torch.equal(hi, e_hi) and torch.equal(s_hi, e_shi) and torch.equal(s_lo, e_slo)
    _, _, r = _split_reference(g)
    assert _lo_stochastic(r, unpack_int4(lo.cpu())) is None


def test_bit_split_exact_ties_round_half_to_even():
    # max|g| = 98/128 makes s = 128 exactly; g s = 14 k + 7 puts g s / 14 exactly on k + 1/2
    k = torch.arange(-7, 7, dtype=torch.float32).repeat(4, 1)
    g = torch.cat([(14 * k + 7) / 128, torch.full((4, 2), 98 / 128)], dim=1).to(DEVICE)
    hi, _, s_hi, _ = bit_split(g, seed=0)
    assert float(s_hi) == 14 / 128
    codes = unpack_int4(hi.cpu())[0, :14]
    assert codes.tolist() == torch.round(k[0] + 0.5).clamp(-6, 6).to(torch.int8).tolist()
    assert codes[7] == 0 and codes[9] == 2                  # 0.5 -> 0, 2.5 -> 2 (to even)
    assert torch.equal(hi, bit_split_spec(g, seed=0)[0])


def test_bit_split_layout_seed_and_noncontiguous():
    g = sparse_grad(40, 200, seed=3)
    a = bit_split(g, seed=11)
    b = bit_split(g.t().contiguous().t(), seed=11)          # same values, column-major
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = bit_split(g, seed=12)
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    d, e = bit_split(g), bit_split(g)                       # seed=None: fresh draws each call
    assert torch.equal(d[0], a[0]) and not torch.equal(d[1], e[1])


def test_bit_split_lo_is_unbiased_with_the_right_variance():
    """4096 copies of each of 16 values in one call (every element has its own draw): lo takes
    floor(r) or floor(r) + 1 (clamped), the second with probability frac(r), as for the spec:
    its mean and variance over the copies match those of that two-point distribution."""
    base = torch.linspace(-0.93, 0.93, 16)
    base[0] = 1.0                                             # max|g| = 1, s = 98
    g = base.repeat(256, 16).to(DEVICE)                       # column j holds base[j % 16]
    _, lo, _, _ = bit_split(g, seed=3)
    lo = unpack_int4(lo.cpu()).double().reshape(256, 16, 16).transpose(0, 1).reshape(-1, 16)
    _, _, r = _split_reference(g)
    r = r[0, :16].double()
    f = r - torch.floor(r)
    a, b = torch.floor(r).clamp(-6, 6), (torch.floor(r) + 1).clamp(-6, 6)
    mean = (1 - f) * a + f * b
    var = (1 - f) * a ** 2 + f * b ** 2 - mean ** 2
    n = lo.shape[0]
    assert ((lo.mean(0) - mean).abs() <= 5 * torch.sqrt(var / n) + 1e-9).all()
    # the sd of a sample variance is about sqrt((m4 - var^2) / n) <= sqrt(var / n) here
    assert ((lo.var(0) - var).abs() <= 5 * torch.sqrt(var / n) + 1e-6).all()


def test_bit_split_dequantized_mean_over_seeds_is_the_spec_expectation():
    g = sparse_grad(8, 16, seed=1)
    n = 30
    draws = []
    for seed in range(n):
        hi, lo, s_hi, s_lo = bit_split(g, seed=seed)
        draws.append(unpack_int4(hi.cpu()).float() * s_hi.cpu() + unpack_int4(lo.cpu()).float() * s_lo.cpu())
    mean = torch.stack(draws).mean(0)
    _, _, r = _split_reference(g)
    f = r - torch.floor(r)
    s_lo = float(bit_split_spec(g, seed=0)[3])
    tol = 5 * torch.sqrt(f * (1 - f) / n) * s_lo + 1e-6
    assert ((mean - bit_split_mean(g.cpu())).abs() <= tol).all()


@pytest.mark.parametrize("shape", [(0, 8), (4, 0)])
def test_bit_split_empty(shape):
    g = torch.zeros(shape, device=DEVICE)
    got, want = bit_split(g, seed=0), bit_split_spec(g, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_bit_split_all_zero_and_other_float_dtypes():
    z = torch.zeros(5, 34, device=DEVICE)
    hi, lo, s_hi, s_lo = bit_split(z, seed=0)
    assert not hi.any() and not lo.any() and float(s_hi) == 14.0 and float(s_lo) == 1.0
    g = sparse_grad(9, 66, seed=4)
    for dt in (torch.bfloat16, torch.float64):              # bf16: the CPU widens it first
        x = g.to(dt)
        got, want = bit_split(x, seed=1), bit_split_spec(x, seed=1)
        assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])


@pytest.mark.parametrize("bad,err,match", [
    (torch.ones(4, 5), ValueError, "odd last dimension"),
    (torch.ones(8), ValueError, "2-D"),
    (torch.ones(2, 4, 6), ValueError, "2-D"),
    (torch.ones(4, 6, dtype=torch.int32), TypeError, "dtype"),
    (torch.tensor([[1.0, float("nan")]]), ValueError, "NaN"),
    (torch.tensor([[1.0, float("inf")]]), ValueError, "Inf"),
    ([[1.0, 2.0]], TypeError, "torch.Tensor"),
])
def test_bit_split_rejects_bad_input_like_the_spec(bad, err, match):
    with pytest.raises(err, match=match):
        bit_split_spec(bad)
    with pytest.raises(err, match=match):
        bit_split(bad)
    with pytest.raises(err, match=match):
        registry.get("bit_split").validate(bad)


# ---- lss_gather against the spec ------------------------------------------------------------

def zero_some_rows(codes):
    c = codes.clone()
    c[::3] = 0
    c[1::5] = 0
    c[1::5, -1] = 0x30                      # non-zero only in the last byte (past byte 128 here)
    return c


@pytest.mark.parametrize("rows,width,other_width", [(1, 1, None), (31, 33, 5), (129, 200, 66),
                                                    (300, 257, None), (0, 8, 3), (5, 0, 2)])
def test_lss_gather_nonzero_mode_equals_the_spec(rows, width, other_width):
    codes = zero_some_rows(packed_rows(rows, width)) if rows and width else packed_rows(rows, width)
    other = packed_rows(rows, other_width, seed=1) if other_width is not None else None
    got, want = lss_gather(codes, other=other), lss_gather_spec(codes, other=other)
    for a, b in zip(got, want):
        assert (a is None and b is None) or torch.equal(a, b)
    assert got[2].dtype == torch.int64 and got[3].dtype == torch.float32


def test_lss_gather_nonzero_mode_non_contiguous_and_all_zero():
    codes = zero_some_rows(packed_rows(40, 150))
    nc = codes.t().contiguous().t()
    assert not nc.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(lss_gather(nc)[::2], lss_gather_spec(codes)[::2]))
    kept, _, index, weight = lss_gather(torch.zeros(9, 20, dtype=torch.uint8, device=DEVICE))
    assert kept.shape == (0, 20) and index.numel() == 0 and weight.numel() == 0


def test_lss_gather_sampling_keeps_each_row_with_probability_p():
    """Over many seeds: each row's keep frequency is p_i, the kept rows are exact copies with
    weight 1/p_i, and the reweighted sum of the kept rows is an unbiased estimate of the full sum."""
    R, n = 48, 100
    codes = packed_rows(R, 3, seed=2)
    other = packed_rows(R, 2, seed=3)
    p = torch.tensor([0.0, 0.05, 0.2, 0.5, 0.8, 1.0]).repeat(R // 6)
    x = unpack_int4(codes.cpu()).double()                  # the rows as numbers
    full = x[p > 0].sum(0)
    counts = torch.zeros(R)
    est_sum = torch.zeros_like(full)
    for seed in range(n):
        kept, kept_other, index, weight = lss_gather(codes, p.to(DEVICE), seed=seed, other=other)
        index = index.cpu()
        assert index.dtype == torch.int64 and (index[1:] > index[:-1]).all()
        assert torch.equal(kept.cpu(), codes.cpu()[index])
        assert torch.equal(kept_other.cpu(), other.cpu()[index])
        assert torch.equal(weight.cpu(), 1.0 / p[index])
        counts[index] += 1
        est_sum += (x[index] * weight.cpu().double()[:, None]).sum(0)
    freq = counts / n
    assert (freq[p == 0] == 0).all() and (freq[p == 1] == 1).all()
    assert ((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-9).all(), freq
    # E[estimate] = full sum; Var[estimate] = sum_i (1 - p_i)/p_i x_i^2 (independent rows)
    live = p > 0
    var = ((1 - p[live].double()) / p[live].double())[:, None] * x[live] ** 2
    sd = torch.sqrt(var.sum(0) / n)
    assert ((est_sum / n - full).abs() <= 5 * sd + 1e-9).all()
    # independent rows: no correlation between neighbours beyond chance
    # (one seed with many rows, as the slot's check does)
    big = p.repeat(40)
    _, _, index, _ = lss_gather(torch.ones(len(big), 1, dtype=torch.uint8, device=DEVICE),
                                big.to(DEVICE), seed=5)
    keep = torch.zeros(len(big))
    keep[index.cpu()] = 1
    d, v = keep - big, big * (1 - big)
    assert abs(float((d[1:] * d[:-1]).sum())) <= 5 * math.sqrt(float((v[1:] * v[:-1]).sum()))


def test_lss_gather_sampling_is_reproducible_and_reads_strides():
    codes = packed_rows(70, 140, seed=4)
    p = torch.rand(70, generator=gen(1)).to(DEVICE)
    a = lss_gather(codes, p, seed=9)
    b = lss_gather(codes.t().contiguous().t(), p, seed=9)
    c = lss_gather(codes, p.half(), seed=9)                 # fp16 probs are read as fp32
    assert all(torch.equal(x, y) for x, y in zip(a[::2], b[::2]))
    assert torch.equal(a[2], lss_gather(codes, p.half().float(), seed=9)[2]) and c[3].dtype == torch.float32
    assert not torch.equal(a[2], lss_gather(codes, p, seed=10)[2])
    assert torch.equal(lss_gather(codes, torch.ones(70, device=DEVICE), seed=1)[0], codes)
    assert lss_gather(codes, torch.zeros(70, device=DEVICE))[0].shape == (0, 140)
    kept, _, index, weight = lss_gather(torch.zeros(6, 0, dtype=torch.uint8, device=DEVICE),
                                        torch.ones(6, device=DEVICE), seed=0)
    assert kept.shape == (6, 0) and index.tolist() == list(range(6)) and (weight == 1).all()


@pytest.mark.parametrize("kwargs,err,match", [
    ({"probs": torch.full((6,), 1.5)}, ValueError, r"\[0, 1\]"),
    ({"probs": torch.full((6,), -0.1)}, ValueError, r"\[0, 1\]"),
    ({"probs": torch.full((5,), 0.5)}, ValueError, "one entry per row"),
    ({"probs": torch.tensor([0.5, float("nan"), 0.5, 0.5, 0.5, 0.5])}, ValueError, "NaN"),
    ({"probs": torch.ones(6, dtype=torch.int64)}, TypeError, "dtype"),
    ({"other": torch.zeros(3, 2, dtype=torch.uint8)}, ValueError, "same 6 rows"),
    ({"other": torch.zeros(6, 2, dtype=torch.int8)}, TypeError, "uint8"),
])
def test_lss_gather_rejects_bad_input_like_the_spec(kwargs, err, match):
    codes = torch.zeros(6, 4, dtype=torch.uint8)
    for fn in (lss_gather_spec, lss_gather):
        with pytest.raises(err, match=match):
            fn(codes, **kwargs)


@pytest.mark.parametrize("codes,err,match", [
    (torch.zeros(6, 4, dtype=torch.int8), TypeError, "uint8"),
    (torch.zeros(2, 3, 4, dtype=torch.uint8), ValueError, "2-D"),
    (torch.zeros(4, dtype=torch.uint8), ValueError, "2-D"),
])
def test_lss_gather_rejects_bad_codes(codes, err, match):
    for fn in (lss_gather_spec, lss_gather):
        with pytest.raises(err, match=match):
            fn(codes)


# ---- dispatch -------------------------------------------------------------------------------

def test_dispatch_runs_the_triton_kernels():
    g = sparse_grad(6, 10)
    with int4lab.use("triton"):
        hi, lo, s_hi, s_lo = int4lab.bit_split(g, seed=0)
        assert int4lab.last_ran("bit_split") == "triton"
        kept, _, index, weight = int4lab.lss_gather(torch.cat([hi, lo]), torch.full((12,), 0.5), seed=1)
        assert int4lab.last_ran("lss_gather") == "triton"
    assert torch.equal(hi, bit_split_spec(g)[0]) and torch.equal(weight, torch.full_like(weight, 2.0))
    with int4lab.use("spec"):
        int4lab.lss_gather(hi)
        assert int4lab.last_ran("lss_gather") == "spec"
    with pytest.raises(ValueError, match="odd last dimension"):     # validated before dispatch
        int4lab.bit_split(torch.ones(3, 5))


# ---- the slots: checks, hints, wrong kernels, bench -----------------------------------------

@pytest.mark.parametrize("slot", ["bit_split", "lss_gather"])
def test_library_kernel_passes_visible_and_hidden_checks(slot):
    fn = registry.get(slot).triton_fn()
    results = exercises.run_checks(slot, fn, hidden=True)
    assert len(results) >= 15 and all(r.passed for r in results), [r for r in results if not r.passed]
    names = {r.check for r in results}
    assert any("non-contiguous" in n for n in names) and any("empty" in n or "0 rows" in n for n in names)
    assert any(c.hidden for c in registry.get(slot).checks)


WRONG = {
    "bit_split": {
        "local_max": "ONE scale of the whole tensor",
        "round_half_up": "rounds halves to the EVEN neighbour",
        "lo_nearest": "lo is rounded to nearest",
    },
    "lss_gather": {
        "keep_if_above": "keep row i when u_i < p_i (not u_i > p_i)",
        "first_block_only": "test ALL the bytes of a row",
        "weight_p": "weight must be 1/p_i",
        "shared_draw": "every row needs its own random number",
    },
}


@pytest.mark.parametrize("slot", sorted(WRONG))
def test_every_wrong_kernel_has_an_expected_message(slot):
    assert sorted(p.stem.split("__")[1] for p in wrong_kernels.files(slot)) == sorted(WRONG[slot])


@pytest.mark.parametrize("path", wrong_kernels.files("bit_split") + wrong_kernels.files("lss_gather"),
                         ids=lambda p: p.stem)
def test_wrong_kernels_are_rejected_with_actionable_messages(home, path):
    slot, fn = wrong_kernels.load(path)
    report = int4lab.unlock(slot, fn, quiet=True)
    assert not report.passed and not report.not_implemented
    text = str(report)
    assert WRONG[slot][path.stem.split("__")[1]] in text, text
    assert "Not unlocked yet" in text
    assert int4lab.which(slot)["would_run"] != "learner"


def test_library_kernels_work_as_learner_files(home):
    """The kernel modules are self-contained: pasted into a learner's file they import and run
    on their own, and dispatch then runs them as the learner's."""
    import importlib.util

    from int4lab.exercises import workspace as store
    g = sparse_grad(5, 12)
    for slot in ("bit_split", "lss_gather"):
        module = registry.get(slot).triton.split(":")[0]
        path = home / "workspace" / f"{slot}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(open(importlib.util.find_spec(module).origin).read())
        registry.set_learner(slot, getattr(store.import_file(path, f"int4lab_workspace_{slot}"), slot))
    with int4lab.use("learner"):
        hi = int4lab.bit_split(g, seed=0)[0]
        assert int4lab.last_ran("bit_split") == "learner"
        assert torch.equal(int4lab.lss_gather(hi)[0], lss_gather_spec(hi)[0])
        assert int4lab.last_ran("lss_gather") == "learner"
    assert torch.equal(hi, bit_split_spec(g)[0])


def test_hints_for_swapped_nibbles_and_wrong_scales():
    slot = registry.get("bit_split")
    g = sparse_grad(9, 34, seed=2)
    expected = bit_split_spec(g, seed=0)
    hi, lo, s_hi, s_lo = expected
    swapped = ((hi & 0x0F) << 4) | (hi >> 4)
    assert "nibbles are swapped" in exercises._hint(slot, (g,), {}, expected, (swapped, lo, s_hi, s_lo))
    assert "scale_hi = 14 / s" in exercises._hint(slot, (g,), {}, expected, (hi, lo, 1 / s_lo, s_lo))
    lss = registry.get("lss_gather")
    codes = packed_rows(20, 4)
    want = lss_gather_spec(codes)
    shifted = (torch.roll(want[0], 1, 0), None, want[2], want[3])
    assert "cumsum[i] - 1" in exercises._hint(lss, (codes,), {}, want, shifted)
    assert "int64" in exercises._hint(lss, (codes,), {}, want, (want[0], None, want[2].int(), want[3]))


def test_bench_definitions():
    b = registry.get("lss_gather").bench
    assert b.unit == "GB/s" and b.sizes == (8192, 16384, 32768, 65536)
    args, kwargs = b.make(64, "cpu")
    codes = args[0]
    assert codes.shape == (64, 2048) and codes.dtype == torch.uint8 and not codes[32:].any()
    assert b.work(args, kwargs) == 64 * 2048 + 32 * 2048 + 12 * 32
    assert torch.equal(b.baseline(*args, **kwargs), codes)
    b = registry.get("bit_split").bench
    args, kwargs = b.make(16, "cpu")
    assert args[0].shape == (16, 16) and args[0].dtype == torch.bfloat16
    assert b.work(args, kwargs) == 16 * 16 * 3 and torch.equal(b.baseline(*args, **kwargs), args[0])


# ---- the GPU build --------------------------------------------------------------------------

@pytest.mark.skipif(not ON_GPU, reason="compiled Triton needs a GPU")
def test_gpu_large_shapes_match_the_spec():
    g = sparse_grad(4096, 4096, dtype=torch.bfloat16)
    got = [t.cpu() for t in bit_split(g, seed=0)]
    # against the spec on the CPU, where v / 14 is a true division. (On CUDA torch computes a
    # tensor divided by a python number as a product with fl(1/14), which moves exact ties,
    # frequent with bf16 inputs: about 4e-5 of the codes here.)
    want = bit_split_spec(g.cpu(), seed=0)
    assert all(torch.equal(got[i], want[i]) for i in (0, 2, 3))
    _, _, r = _split_reference(g)
    assert _lo_stochastic(r, unpack_int4(got[1])) is None
    codes = packed_rows(65536, 2048)
    codes[32768:] = 0
    assert all(torch.equal(a, b) for a, b in zip(lss_gather(codes)[::2], lss_gather_spec(codes)[::2]))


AOT = r'''
import os
os.environ["TRITON_INTERPRET"] = "0"          # compile for real, for a GPU this machine lacks
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from int4lab.kernels import bit_split as bs, lss_gather as lg


def ptx(k, sig, consts):
    src = ASTSource(k, sig, constexprs={(k.arg_names.index(n),): v for n, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]


p = ptx(bs.bit_split_kernel, dict(g_ptr="*bf16", amax_ptr="*fp32", hi_ptr="*u8", lo_ptr="*u8",
        scale_hi_ptr="*fp32", scale_lo_ptr="*fp32", N="i32", C="i32", stride_n="i32",
        stride_c="i32", seed="i32", BLOCK_R="constexpr", BLOCK_B="constexpr"),
        dict(BLOCK_R=bs.BLOCK_R, BLOCK_B=bs.BLOCK_B))
divs = {l.split()[0] for l in p.splitlines() if "div." in l and ".f32" in l}
print("bit_split", divs == {"div.rn.f32"})
p = ptx(bs.absmax_kernel, dict(g_ptr="*fp16", amax_ptr="*fp32", N="i32", C="i32", stride_n="i32",
        stride_c="i32", BLOCK_R="constexpr", BLOCK_C="constexpr"), dict(BLOCK_R=32, BLOCK_C=128))
print("absmax", "atom.global" in p)
p = ptx(lg.lss_gather_kernel, dict(src_ptr="*u8", dst_ptr="*u8", keep_ptr="*i32", pos_ptr="*i64",
        probs_ptr="*fp32", index_ptr="*i64", weight_ptr="*fp32", R="i32", W="i32", stride_r="i32",
        stride_b="i32", WRITE_INDEX="constexpr", HAS_PROBS="constexpr", BLOCK_R="constexpr",
        BLOCK_B="constexpr"), dict(WRITE_INDEX=True, HAS_PROBS=True, BLOCK_R=lg.BLOCK_R, BLOCK_B=lg.BLOCK_B))
print("lss_gather", "div.rn.f32" in p)
'''


@pytest.mark.slow
@pytest.mark.skipif(ON_GPU, reason="a GPU runs the kernels for real in test_gpu_large_shapes_match_the_spec")
def test_kernels_compile_for_hopper_without_a_gpu():
    """Compile the kernels for sm_90 (H100/H200) ahead of time: catches code that only the
    interpreter accepts, and checks every fp32 division is the IEEE one (div.rn), which is
    what keeps hi and the scales bit-exact on a GPU."""
    import os
    import subprocess
    import sys
    pytest.importorskip("triton.backends.nvidia")
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    r = subprocess.run([sys.executable, "-c", AOT], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode and ("ptxas" in r.stderr and "not found" in r.stderr.lower()):
        pytest.skip("no ptxas bundled with this Triton")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["bit_split", "True", "absmax", "True", "lss_gather", "True"], r.stdout

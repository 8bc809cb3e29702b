"""The int4_matmul kernel against the spec (Triton's interpreter on the CPU), its slot's checks,
hints and wrong kernels, dispatch, and the benchmark definition."""
import pytest
import torch
import wrong_kernels

import int4lab
from int4lab import runtime
from int4lab.exercises import learner as exercises
from int4lab.exercises import registry
from int4lab.kernels.int4_matmul import int4_matmul
from int4lab.spec.packing import pack_int4, unpack_int4
from int4lab.spec.quantizers import int4_matmul_spec

ON_GPU = runtime.HAS_CUDA and not runtime.INTERPRET
DEVICE = runtime.DEVICE


def operands(M, N, KH, seed=0, scales="row", device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    qa = torch.randint(-8, 8, (M, 2 * KH), generator=g, dtype=torch.int8)
    qb = torch.randint(-8, 8, (N, 2 * KH), generator=g, dtype=torch.int8)
    if scales == "row":
        sa, sb = torch.rand(M, 1, generator=g) + 0.01, torch.rand(N, 1, generator=g) + 0.01
    else:
        sa, sb = torch.rand((), generator=g) + 0.01, torch.rand((), generator=g) + 0.01
    return pack_int4(qa).to(device), sa.to(device), pack_int4(qb).to(device), sb.to(device)


def int64_product(a, b):
    """The exact integer product, with no floats anywhere."""
    return unpack_int4(a.cpu()).long() @ unpack_int4(b.cpu()).long().T




# ---- the kernel against the spec ------------------------------------------------------------

@pytest.mark.parametrize("M,N,KH", [(1, 1, 1), (31, 33, 127), (33, 31, 129), (127, 1, 33),
                                    (1, 129, 31), (129, 127, 65), (64, 64, 64), (577, 130, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_int32_output_is_the_exact_integer_product(M, N, KH, seed):
    a, sa, b, sb = operands(M, N, KH, seed)
    c = int4_matmul(a, sa, b, sb, out_dtype=torch.int32)
    assert c.dtype == torch.int32 and c.shape == (M, N)
    assert torch.equal(c.cpu().long(), int64_product(a, b))
    assert torch.equal(c, int4_matmul_spec(a, sa, b, sb, out_dtype=torch.int32))


@pytest.mark.parametrize("fill", [-8, 7])
def test_int32_accumulation_at_the_extremes(fill):
    """Every code -8 (or 7) over K = 2048: |C| = 64 * 2048 = 131072, well inside int32 but far
    outside int8/int16 and fp16's exact integers; the int32 accumulator must be exact."""
    q = torch.full((3, 2048), fill, dtype=torch.int8)
    a, b = pack_int4(q).to(DEVICE), pack_int4(q[:2]).to(DEVICE)
    one = torch.ones((), device=DEVICE)
    c = int4_matmul(a, one, b, one, out_dtype=torch.int32)
    assert torch.equal(c.cpu().long(), int64_product(a, b))
    assert int(c[0, 0]) == fill * fill * 2048


@pytest.mark.slow
def test_int32_accumulation_at_the_k_limit():
    """The in-place unpack accumulates 256 x each product: the largest K it takes (131070, every
    code -8) brings the int32 accumulator to 256 * 64 * 131070 = 2^31 - 32768, and the sum
    must still be exact."""
    from int4lab.kernels.int4_matmul import MAX_K
    q = torch.full((1, MAX_K), -8, dtype=torch.int8)
    a = pack_int4(q).to(DEVICE)
    one = torch.ones((), device=DEVICE)
    c = int4_matmul(a, one, a, one, out_dtype=torch.int32)
    assert MAX_K == 131070 and int(c[0, 0]) == 64 * MAX_K


def test_k_beyond_the_int32_range_goes_in_exact_chunks(monkeypatch):
    """Past MAX_K the launcher adds the int32 sums of K chunks within it (a weight gradient's K is
    the batch's tokens): exact, scales applied as the spec does. MAX_K made small here, so the
    interpreter runs it fast; the chunk boundary falls inside the operands."""
    from int4lab.kernels import int4_matmul as mod
    monkeypatch.setattr(mod, "MAX_K", 126)                     # 63 packed bytes a chunk
    g = torch.Generator().manual_seed(0)
    qa = torch.randint(-8, 8, (5, 300), generator=g, dtype=torch.int8)
    qb = torch.randint(-8, 8, (7, 300), generator=g, dtype=torch.int8)
    a, b = pack_int4(qa).to(DEVICE), pack_int4(qb).to(DEVICE)
    sa, sb = torch.rand(5, 1, generator=g).to(DEVICE), torch.rand(7, 1, generator=g).to(DEVICE)
    want = qa.to(torch.int64) @ qb.to(torch.int64).T
    assert torch.equal(mod.int4_matmul(a, sa, b, sb, torch.int32).cpu().to(torch.int64), want)
    assert torch.equal(mod.int4_matmul(a, sa, b, sb).cpu(), int4_matmul_spec(a.cpu(), sa.cpu(), b.cpu(), sb.cpu()))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("scales", ["row", "tensor"])
@pytest.mark.parametrize("M,N,KH", [(31, 33, 31), (129, 1, 127), (3, 65, 129)])
def test_float_outputs_match_the_spec(M, N, KH, scales, out_dtype):
    a, sa, b, sb = operands(M, N, KH, seed=M + N, scales=scales)
    c = int4_matmul(a, sa, b, sb, out_dtype=out_dtype)
    e = int4_matmul_spec(a, sa, b, sb, out_dtype=out_dtype)
    assert c.dtype == out_dtype and c.shape == e.shape
    # same fp32 products in the same order, then the same cast: bit for bit on the CPU
    torch.testing.assert_close(c, e, rtol=0 if not ON_GPU else 1e-6, atol=0)


def test_mixed_and_low_precision_scales():
    a, sa, b, sb = operands(33, 31, 33)
    for sa_, sb_ in ((sa, sb[0, 0]), (sa[0, 0], sb), (sa.half(), sb.double()), (sa.bfloat16(), sb)):
        torch.testing.assert_close(int4_matmul(a, sa_, b, sb_), int4_matmul_spec(a, sa_, b, sb_),
                                   rtol=1e-6, atol=0)


def test_noncontiguous_and_sliced_operands():
    a, sa, b, sb = operands(31, 33, 33, seed=3)
    e = int4_matmul_spec(a, sa, b, sb)
    at, bt = a.t().contiguous().t(), b.t().contiguous().t()          # column-major storage
    assert not at.is_contiguous() and not bt.is_contiguous()
    torch.testing.assert_close(int4_matmul(at, sa, bt, sb), e, rtol=0, atol=0)
    wide = torch.cat([a, a.new_full((31, 9), 0x88)], dim=1)         # row stride 42, not 33
    torch.testing.assert_close(int4_matmul(wide[:, :33], sa, b, sb), e, rtol=0, atol=0)
    sa_strided = torch.cat([sa, sa], dim=1)[:, :1]                   # a (M, 1) view, stride 2
    torch.testing.assert_close(int4_matmul(a, sa_strided, b, sb), e, rtol=0, atol=0)


def test_empty_outputs_and_empty_reduction():
    a, sa, b, sb = operands(5, 4, 8)
    assert int4_matmul(a[:0], sa[:0], b, sb).shape == (0, 4)
    assert int4_matmul(a, sa, b[:0], sb[:0], out_dtype=torch.int32).shape == (5, 0)
    z = int4_matmul(a[:, :0], sa, b[:, :0], sb)                      # K = 0: C is all zero
    assert z.shape == (5, 4) and torch.equal(z, torch.zeros_like(z))


def test_bf16_output():
    a, sa, b, sb = operands(33, 31, 65, seed=5)
    c = int4_matmul(a, sa, b, sb, out_dtype=torch.bfloat16)
    e = int4_matmul_spec(a, sa, b, sb, out_dtype=torch.bfloat16)
    assert c.dtype == torch.bfloat16
    if ON_GPU:
        torch.testing.assert_close(c, e, rtol=0, atol=0)
    else:
        # Triton's interpreter truncates fp32 -> bf16 instead of rounding to nearest (the GPU
        # rounds): one bf16 ulp apart at most
        torch.testing.assert_close(c.float(), e.float(), rtol=2 ** -7, atol=0)


def test_bad_input_raises_clear_errors():
    a, sa, b, sb = operands(3, 4, 8)
    with pytest.raises(ValueError, match="packed reduction dims differ"):
        int4_matmul(a, sa, b[:, :7], sb)                              # K of a != K of b
    with pytest.raises(TypeError, match="uint8"):
        int4_matmul(unpack_int4(a), sa, b, sb)                        # codes, not packed bytes
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        int4_matmul(a, sb, b, sb)                                     # b's scales given for a
    with pytest.raises(ValueError, match="2-D"):
        int4_matmul(a[0], sa, b, sb)
    with pytest.raises(ValueError, match="out_dtype"):
        int4_matmul(a, sa, b, sb, out_dtype=torch.int8)
    with pytest.raises(TypeError, match="a_scale"):
        int4_matmul(a, sa.int(), b, sb)


# ---- dispatch -------------------------------------------------------------------------------

def test_dispatch_runs_the_triton_kernel(home):
    a, sa, b, sb = operands(17, 19, 33)
    with int4lab.use("triton"):
        c = int4lab.int4_matmul(a, sa, b, sb)
    assert int4lab.last_ran("int4_matmul") == "triton"
    torch.testing.assert_close(c, int4_matmul_spec(a, sa, b, sb), rtol=0, atol=0)
    with int4lab.use("triton"), pytest.raises(ValueError, match="packed reduction dims differ"):
        int4lab.int4_matmul(a, sa, b[:, :5], sb)                      # validated before dispatch


# ---- the slot: checks, hints, wrong kernels, bench ------------------------------------------

def test_library_kernel_passes_visible_and_hidden_checks(home):
    fn = registry.get("int4_matmul").triton_fn()
    results = exercises.run_checks("int4_matmul", fn, hidden=True)
    assert len(results) > 30 and all(r.passed for r in results), [r for r in results if not r.passed]
    names = {r.check for r in results}
    assert any("non-contiguous" in n for n in names) and any("empty" in n for n in names)


WRONG = {
    "no_sign_extension": "sign-extend each nibble",
    "nibbles_swapped": "pairs even k of one operand with odd k of the other",
    "no_k_tail": "the last, partial K block",
    "k_mask_missing": "needs a mask",
    "no_scales": "C is the raw integer product",
    "scale_axes_swapped": "the scales are on the wrong axes",
    "no_shift_back": "C is 256 x the product",
}


def test_every_wrong_kernel_has_an_expected_message():
    assert sorted(p.stem.split("__")[1] for p in wrong_kernels.files("int4_matmul")) == sorted(WRONG)


@pytest.mark.parametrize("path", wrong_kernels.files("int4_matmul"), ids=lambda p: p.stem)
def test_wrong_kernels_are_rejected_with_actionable_messages(home, path):
    slot, fn = wrong_kernels.load(path)
    report = int4lab.unlock(slot, fn, quiet=True)
    assert not report.passed and not report.not_implemented
    text = str(report)
    assert WRONG[path.stem.split("__")[1]] in text, text
    assert "Not unlocked yet" in text
    assert int4lab.which(slot)["would_run"] != "learner"


def test_library_kernel_unlocks_as_a_learner_file(home):
    from nbrun import library_source
    path = home / "workspace" / "int4_matmul.py"
    path.parent.mkdir(parents=True)
    path.write_text(library_source("int4_matmul"))
    report = int4lab.unlock("int4_matmul", quiet=True)
    assert report.passed, str(report)
    a, sa, b, sb = operands(5, 6, 7)
    with int4lab.use("learner"):
        c = int4lab.int4_matmul(a, sa, b, sb)
    assert int4lab.last_ran("int4_matmul") == "learner"
    torch.testing.assert_close(c, int4_matmul_spec(a, sa, b, sb), rtol=0, atol=0)


def test_hint_for_scales_applied_to_the_int32_output():
    slot = registry.get("int4_matmul")
    a, sa, b, sb = operands(7, 9, 33)
    args, kwargs = (a, sa, b, sb), {"out_dtype": torch.int32}
    expected = int4_matmul_spec(*args, **kwargs)
    got = int4_matmul_spec(a, sa, b, sb).to(torch.int32)
    assert "apply no scales" in exercises._hint(slot, args, kwargs, expected, got)
    assert "allocate C with the requested out_dtype" in exercises._hint(
        slot, (a, sa, b, sb), {}, int4_matmul_spec(a, sa, b, sb), expected.float().half())


def test_bench_definition():
    b = registry.get("int4_matmul").bench
    assert b.unit == "TFLOP/s" and 8192 in b.sizes and (8192, 11008, 4096) in b.sizes
    args, kwargs = b.make((64, 32, 128), "cpu")
    a, sa, bb, sb = args
    assert a.shape == (64, 64) and bb.shape == (32, 64) and a.dtype == torch.uint8
    assert b.work(args, kwargs) == 2 * 64 * 32 * 128
    ref = int64_product(a, bb).float()
    torch.testing.assert_close(b.baseline(*args, **kwargs).float(), ref, rtol=2 ** -7, atol=0)


@pytest.mark.skipif(not ON_GPU, reason="compiled Triton needs a GPU")
def test_gpu_large_shapes_and_bf16():
    for M, N, KH in ((1024, 1024, 512), (1000, 3000, 1027), (64, 3000, 1027), (65, 300, 1027)):
        a, sa, b, sb = operands(M, N, KH)
        assert torch.equal(int4_matmul(a, sa, b, sb, out_dtype=torch.int32),
                           int4_matmul_spec(a, sa, b, sb, out_dtype=torch.int32))
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            torch.testing.assert_close(int4_matmul(a, sa, b, sb, out_dtype=dt),
                                       int4_matmul_spec(a, sa, b, sb, out_dtype=dt),
                                       rtol=1e-6 if dt == torch.float32 else 1e-2, atol=0)


AOT = r'''
import os, sys
os.environ["TRITON_INTERPRET"] = "0"          # compile for real, for a GPU this machine lacks
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from int4lab.kernels.int4_matmul import GPU_CONFIG, int4_matmul_kernel as k
sig = dict(a_ptr="*u8", b_ptr="*u8", sa_ptr="*fp32", sb_ptr="*fp32", c_ptr="*bf16", M="i32",
           N="i32", KH="i32", stride_am="i32", stride_ak="constexpr", stride_bn="i32",
           stride_bk="constexpr", stride_sa="i32", stride_sb="i32", stride_cm="i32",
           stride_cn="constexpr", APPLY_SCALES="constexpr", BLOCK_M="constexpr",
           BLOCK_N="constexpr", BLOCK_K="constexpr", GROUP_M="constexpr")
consts = dict(stride_ak=1, stride_bk=1, stride_cn=1, APPLY_SCALES=True,
              **{n: GPU_CONFIG[n] for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")})
src = ASTSource(k, sig, constexprs={(k.arg_names.index(n),): v for n, v in consts.items()})
out = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                     options={"num_warps": GPU_CONFIG["num_warps"], "num_stages": GPU_CONFIG["num_stages"]})
ptx = out.asm["ptx"]
print("wgmma" in ptx and ".s8" in ptx)
'''


@pytest.mark.slow
@pytest.mark.skipif(ON_GPU, reason="a GPU runs the kernel for real in test_gpu_large_shapes_and_bf16")
def test_gpu_config_compiles_for_hopper_without_a_gpu():
    """Compile the GPU config for sm_90 (H100/H200) ahead of time with Triton's bundled ptxas:
    the int8 dots must lower to wgmma on s8. Catches a kernel that only the interpreter accepts."""
    import os
    import subprocess
    import sys
    pytest.importorskip("triton.backends.nvidia")
    env = {**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"}
    r = subprocess.run([sys.executable, "-c", AOT], capture_output=True, text=True, env=env,
                       timeout=300)
    if r.returncode and ("ptxas" in r.stderr and "not found" in r.stderr.lower()):
        pytest.skip("no ptxas bundled with this Triton")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("True"), r.stdout

"""int4lab inspect: kernels compiled for a GPU this machine lacks, their SASS read, their bound.

The compiling tests need Triton's NVIDIA backend and the ptxas / nvdisasm / cuobjdump its wheel
ships; they are skipped with the reason where those are missing. Compiles are shared through
module fixtures (a few seconds each), and the three known cases (an int8 GEMM that the tensor
cores bound, a GEMM that unpacks every element and so is issue-bound, a copy that memory
bounds) compile in one batch.
"""
import json
import os
import shutil
import subprocess
import sys
import types

import pytest
import torch

import int4lab  # noqa: F401  (first: sets TRITON_INTERPRET before the test kernels are decorated)
from int4lab import runtime
from int4lab.exercises import registry
from int4lab.grading import student_copy as student
from int4lab.perf import kernel_inspect as ki

sys.path.insert(0, os.path.dirname(__file__))       # tests/inspect_kernels.py, after int4lab
import inspect_kernels as K


def _missing_compiler():
    """Why kernels cannot be compiled for a GPU here, or None."""
    try:
        import triton
        import triton.backends.nvidia
    except ImportError as e:
        return f"triton.backends.nvidia is missing ({e})"
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for tool in ("ptxas", "nvdisasm", "cuobjdump"):
        if not (os.path.exists(os.path.join(bin_dir, tool)) or shutil.which(tool)):
            return f"{tool} is not bundled with this Triton nor on PATH"
    return None


MISSING = _missing_compiler()
needs_compiler = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
# a student copy has the library's kernels as stubs (int4lab student-copy): nothing to compile
needs_library_kernels = pytest.mark.skipif(student.is_student_copy(),
                                           reason="a student copy has no library kernels")

# a learner's vector_add, as an exercise cell would write it to the workspace
LEARNER_VECTOR_ADD = """
import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask),
             mask=mask)


def vector_add(x, y):
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, out, x.numel(), BLOCK=1024)
    return out
"""


# ---- compiled once, shared -----------------------------------------------------------------

@pytest.fixture(scope="module")
def matmul_sm90(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect90")
    result = ki.inspect("int4_matmul", arch="sm_90", json_path=str(out / "r.json"),
                        dump_dir=str(out / "dump"))
    return result, out


@pytest.fixture(scope="module")
def matmul_sm80():
    return ki.inspect("int4_matmul", arch="sm_80")


@pytest.fixture(scope="module")
def known():
    """The three known cases at 4096 (GEMMs) and 2^24 elements (copy), sm_90, one compile batch."""
    launches = []
    for launcher, args in (
            (K.int8_gemm, (torch.zeros(4096, 4096, dtype=torch.int8),
                           torch.zeros(4096, 4096, dtype=torch.int8))),
            (K.unpack_gemm, (torch.zeros(4096, 2048, dtype=torch.uint8),
                             torch.zeros(4096, 2048, dtype=torch.uint8))),
            (K.copy, (torch.zeros(2 ** 24),))):
        recorded, error = ki.record_launches(launcher, args)
        assert error is None and len(recorded) == 1
        launches += recorded
    return {k["kernel"]: k for k in ki.inspect_launches(launches, arch="sm_90")}


# ---- int4_matmul, the slot -----------------------------------------------------------------

@needs_compiler
@needs_library_kernels
def test_int4_matmul_sm90_uses_int8_wgmma(matmul_sm90):
    result, out = matmul_sm90
    (k,) = result["kernels"]
    assert (k["kernel"], k["arch"], k["slot"]) == ("int4_matmul_kernel", "sm_90", "int4_matmul")
    assert any(op.startswith("IGMMA") and ".S8" in op for op in k["tensor_core"]), k["tensor_core"]
    assert isinstance(k["spills"], int) and k["spills"] >= 0
    assert isinstance(k["regs"], int) and 0 < k["regs"] <= 255
    assert k["smem_bytes"] > 0 and 0 < k["occupancy"] <= 1
    # the launcher's GPU config, not its CPU one
    from int4lab.kernels.int4_matmul import GPU_CONFIG
    assert {n: k["constexprs"][n] for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")} == \
        {n: GPU_CONFIG[n] for n in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}
    assert (k["num_warps"], k["num_stages"]) == (GPU_CONFIG["num_warps"], GPU_CONFIG["num_stages"])
    assert k["signature"]["a_ptr"] == "*u8" and k["signature"]["c_ptr"] == "*bf16"
    assert k["grid"] == [(4096 // GPU_CONFIG["BLOCK_M"]) * (4096 // GPU_CONFIG["BLOCK_N"]), 1, 1]
    loop = k["loop"]
    assert loop["found"] and loop["trips"] == 2048 // GPU_CONFIG["BLOCK_K"]
    assert loop["by_class"]["tensor_core"] > 0
    assert sum(loop["by_class"].values()) == loop["instructions"]
    assert loop["per_tensor_core"] > 0
    p = k["predicted"]
    assert p["bound"] in ("tensor-core", "issue", "memory") and 0 < p["fraction_of_peak"] <= 1
    assert "estimate" in p["model"].lower() and p["estimate"] is True
    # the JSON file holds the same report; the dump the PTX (wgmma on s8) and the SASS
    assert json.loads((out / "r.json").read_text())["kernels"][0]["regs"] == k["regs"]
    ptx = (out / "dump" / "int4_matmul_kernel.sm_90.ptx").read_text()
    assert "wgmma" in ptx and ".s8" in ptx
    assert "IGMMA" in (out / "dump" / "int4_matmul_kernel.sm_90.sass").read_text()


@needs_compiler
@needs_library_kernels
def test_int4_matmul_sm90_main_loop_is_tensor_core_bound(matmul_sm90):
    """Issue 13's static target: the unpacking (in place, four bytes per 32-bit word, 256x128
    tiles) leaves at most 40 other instructions per tensor-core instruction in the sm_90 main
    loop, and the estimate says tensor-core bound. An estimate from compiled code, no GPU."""
    result, _ = matmul_sm90
    (k,) = result["kernels"]
    loop = k["loop"]
    assert loop["per_tensor_core"] <= 40, (loop["per_tensor_core"], loop["by_class"])
    assert k["predicted"]["bound"] == "tensor-core", k["predicted"]
    assert k["spills"] == 0


@needs_compiler
@needs_library_kernels
def test_int4_matmul_sm80_uses_int8_mma(matmul_sm80):
    (k,) = matmul_sm80["kernels"]
    assert k["arch"] == "sm_80"
    assert any(op.startswith("IMMA") and ".S8" in op for op in k["tensor_core"]), k["tensor_core"]
    assert not any("GMMA" in op for op in k["tensor_core"])        # no wgmma before Hopper
    assert k["spills"] == 0 and k["loop"]["found"]


# ---- the memory-bound quantizers (issue 13) ------------------------------------------------

QUANTIZERS = ("quantize_int4", "hadamard_quantize")


@pytest.fixture(scope="module")
def quantizers_sm90():
    return {slot: ki.inspect(slot, arch="sm_90") for slot in QUANTIZERS}


@needs_compiler
@needs_library_kernels
@pytest.mark.parametrize("slot", QUANTIZERS)
def test_quantizers_are_predicted_memory_bound(quantizers_sm90, slot):
    """The static target: at the representative size (bf16, a scale per row), the compiled code
    moves its bytes faster than it issues its instructions, at >= 80% of DRAM bandwidth."""
    (k,) = quantizers_sm90[slot]["kernels"]
    p = k["predicted"]
    assert p["bound"] == "memory" and p["fraction_of_peak"] >= 0.8, p
    assert k["spills"] == 0 and k["tensor_core"] == []
    assert not k["loop"]["found"]                      # one pass: the whole kernel is counted
    c = p["cycles_per_iteration"]
    assert c["issue"] <= c["memory"], c


# ---- the model's known cases ---------------------------------------------------------------

@needs_compiler
def test_plain_int8_gemm_is_tensor_core_bound(known):
    k = known["int8_gemm_kernel"]
    assert any(op.startswith("IGMMA") for op in k["tensor_core"])
    assert k["predicted"]["bound"] == "tensor-core", k["predicted"]
    assert k["predicted"]["fraction_of_peak"] == pytest.approx(1.0)


@needs_compiler
def test_unpacking_every_element_is_issue_bound(known):
    k = known["unpack_gemm_kernel"]
    assert k["predicted"]["bound"] == "issue", k["predicted"]
    assert k["predicted"]["fraction_of_peak"] < 0.5        # of the int8 tensor-core peak
    plain = known["int8_gemm_kernel"]["loop"]["per_tensor_core"]
    assert k["loop"]["per_tensor_core"] > 3 * plain
    assert k["loop"]["by_class"]["int_bit"] > 10 * k["loop"]["by_class"]["tensor_core"]


@needs_compiler
def test_copy_is_memory_bound(known):
    k = known["copy_kernel"]
    assert k["tensor_core"] == [] and not k["loop"]["found"]
    assert k["predicted"]["bound"] == "memory"
    assert k["predicted"]["fraction_of_peak"] >= 0.9


@needs_compiler
def test_inspect_kernel_with_a_signature():
    """The lower-level entry: any @triton.jit kernel, a signature and constexprs."""
    k = ki.inspect_kernel(K.copy_kernel, {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"},
                          {"BLOCK": 1024}, num_warps=4, num_stages=3, arch="sm_86",
                          grid=(16384,), values={"n": 2 ** 24},
                          nbytes={"x_ptr": 2 ** 26, "y_ptr": 2 ** 26})
    assert k["kernel"] == "copy_kernel" and k["arch"] == "sm_86"
    assert k["predicted"]["bound"] == "memory" and k["predicted"]["fraction_of_peak"] >= 0.9
    assert k["occupancy_detail"]["max_warps"] == 48


# ---- the command ---------------------------------------------------------------------------

def test_cli_unknown_slot(capsys):
    assert ki.main(["no_such_slot"]) == 2
    out = capsys.readouterr().out
    assert "no_such_slot" in out and "int4_matmul" in out        # names the slots there are


def test_cli_unknown_arch(capsys):
    assert ki.main(["int4_matmul", "--arch", "sm_75"]) == 2
    assert "sm_90" in capsys.readouterr().out


def test_cli_learner_file_missing(home, capsys):
    assert ki.main(["vector_add", "--impl", "learner"]) == 2
    out = capsys.readouterr().out
    assert str(home / "workspace" / "vector_add.py") in out and len(out.strip().splitlines()) == 1


@needs_compiler
def test_cli_learner_kernel(home, tmp_path, capsys):
    """The learner's file is inspected (0, with a report); one that does not compile gives 1
    and the compiler's message."""
    workspace = home / "workspace"
    workspace.mkdir()
    (workspace / "vector_add.py").write_text(LEARNER_VECTOR_ADD)
    path = tmp_path / "learner.json"
    assert ki.main(["vector_add", "--impl", "learner", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["impl"] == "learner"
    assert [k["kernel"] for k in report["kernels"]] == ["add_kernel"]
    assert "estimate" in capsys.readouterr().out
    (workspace / "vector_add.py").write_text(LEARNER_VECTOR_ADD.replace("tl.arange(0, BLOCK)",
                                                                        "tl.arange(0, 1000)"))
    assert ki.main(["vector_add", "--impl", "learner"]) == 1
    assert "power of 2" in capsys.readouterr().out


def test_cli_layer_is_passed_on(monkeypatch):
    """--layer belongs to int4lab.perf.layer_counts: inspect only hands its arguments over."""
    seen = {}
    fake = types.ModuleType("int4lab.perf.layer_counts")
    fake.main_from_args = lambda args: seen.setdefault("args", args) and 7
    monkeypatch.setitem(sys.modules, "int4lab.perf.layer_counts", fake)
    assert ki.main(["--layer", "int4_hq", "--tokens", "64", "--d", "32"]) == 7
    assert (seen["args"].layer, seen["args"].tokens, seen["args"].d) == ("int4_hq", 64, 32)


def test_every_triton_slot_has_a_representative_size():
    registry._load_slots()
    slots = ki.triton_slots()
    assert set(slots) == {n for n, s in registry.SLOTS.items() if s.triton}
    assert "int4_matmul" in slots and set(slots) <= set(ki._table())


# ---- the pieces, without compiling -----------------------------------------------------------

def test_recording_launches_keeps_those_before_a_failure():
    def launcher(x):
        K.copy(x)
        raise ValueError("the output of a kernel that did not run")
    launches, error = ki.record_launches(launcher, (torch.zeros(3000),))
    assert len(launches) == 1 and "did not run" in error
    (launch,) = launches
    assert launch.name == "copy_kernel" and launch.grid == (3, 1, 1)
    assert launch.signature == {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"}
    assert launch.constexprs == {"BLOCK": 1024} and launch.values == {"n": 3000}
    assert set(launch.divisible) == {"x_ptr", "y_ptr"}        # 3000 is no multiple of 16
    # everything patched for the recording is back
    assert not torch.zeros(1).is_cuda
    assert torch.empty(4).numel() == 4 and "is_cuda" not in torch.Tensor.__dict__
    if runtime.INTERPRET:                                        # kernels run again
        assert torch.equal(K.copy(torch.arange(5.0)), torch.arange(5.0))


def test_specialization_as_a_launch():
    assert ki._specialize(1) == ("constexpr", 1)
    assert ki._specialize(1, specialize=False) == ("i32", False)
    assert ki._specialize(32) == ("i32", True) and ki._specialize(33) == ("i32", False)
    assert ki._specialize(2 ** 31) == ("i64", True) and ki._specialize(2 ** 63) == ("u64", True)
    assert ki._specialize(0.5) == ("fp32", False) and ki._specialize(True) == ("u1", False)
    assert ki._specialize(torch.zeros(4, dtype=torch.bfloat16)) == ("*bf16", True)
    assert ki._specialize(torch.zeros(8, dtype=torch.uint8)[1:])[1] is False   # unaligned


SAME_AS_TRITON = r'''
import json, os, sys
os.environ["TRITON_INTERPRET"] = "0"
import torch
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature
from int4lab.kernels.int4_matmul import GPU_CONFIG, int4_matmul_kernel as k
from int4lab.perf import kernel_inspect as ki
a = torch.zeros(64, 32, dtype=torch.uint8); c = torch.zeros(64, 48, dtype=torch.bfloat16)
args = [a, a, torch.ones(64), torch.ones(48), c, 64, 48, 33, 32, 1, 32, 1, 1, 0, 48, 1]
kwargs = dict(APPLY_SCALES=True, **GPU_CONFIG)
backend = make_backend(GPUTarget("cuda", 90, 32))
bound, spec, opts = create_function_from_signature(k.signature, k.params, backend)(*args, **kwargs)
options, signature, constexprs, attrs = k._pack_args(backend, dict(kwargs), bound, spec, opts)
mine = ki.launch_from_call(k, args, kwargs)
print(json.dumps({
    "triton": [signature, {k.arg_names[i[0]]: v for i, v in constexprs.items()},
               sorted(k.arg_names[i[0]] for i, v in attrs.items() if v)],
    "mine": [{**mine.signature, **{n: "constexpr" for n in mine.constexprs}}, mine.constexprs,
             sorted(mine.divisible)]}))
'''


@needs_compiler
@needs_library_kernels
def test_specialization_matches_tritons_own_launch():
    """Signature, constants and divisibility as Triton's launcher would compute them (its
    internal binder, run without the interpreter)."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    r = subprocess.run([sys.executable, "-c", SAME_AS_TRITON], check=False, capture_output=True,
                       text=True, env=env, timeout=300)
    if r.returncode and ("ImportError" in r.stderr or "AttributeError" in r.stderr):
        pytest.skip(f"this Triton's launcher internals differ: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    (sig_t, const_t, div_t), (sig_m, const_m, div_m) = out["triton"], out["mine"]
    assert sig_m == sig_t and const_m == const_t and div_m == div_t


SASS = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   ISETP.GE.AND P0, PT, R0, 0x10, PT ;
.L_x_0:
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   LDGSTS.E.BYPASS.LTC128B.128 [R1], desc[UR4][R2.64] ;
        /*0040*/              @!PT LDS RZ, [RZ] ;
        /*0050*/                   HMMA.16816.F32.BF16 R8, R4, R6, R8 ;
        /*0060*/                   IADD3 R2, R2, 0x40, RZ ;
        /*0070*/                   F2FP.BF16.F32.PACK_AB R5, R4, R4 ;
        /*0080*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0090*/              @P0 BRA `(.L_x_0) ;
.L_x_1:
        /*00a0*/                   FFMA R9, R8, R8, R9 ;
        /*00b0*/                   LDG.E.U8 R3, desc[UR4][R2.64] ;
        /*00c0*/              @P1 BRA `(.L_x_1) ;
        /*00d0*/                   STG.E.U16 desc[UR4][R2.64], R9 ;
        /*00e0*/                   EXIT ;
.L_x_2:
        /*00f0*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R0 ;
        /*0100*/                   BRA `(.L_x_0) ;
.L_x_3:
        /*0110*/                   BRA `(.L_x_3);
        /*0120*/                   NOP;
"""


def test_main_loop_of_a_listing():
    instrs = ki.parse_sass(SASS)
    assert all(x["opcode"] != "LDS" for x in instrs)              # @!PT never runs
    # loops: 0x20..0x90 (tensor cores), 0xa0..0xc0; not the out-of-line block after EXIT
    # (0xf0 -> 0x20 spans an EXIT) nor the trap branching to itself
    first, last = ki.find_main_loop(instrs)
    assert (instrs[first]["addr"], instrs[last]["addr"]) == (0x20, 0x90)
    tc, loop, work = ki.analyze_sass(SASS)
    assert tc == ["HMMA.16816.F32.BF16"] and work == [(16 * 8 * 16, "bf16")]
    assert loop["instructions"] == 7 and loop["per_tensor_core"] == 6
    assert loop["by_class"] == {"tensor_core": 1, "int_bit": 1, "float": 0, "conversion": 1,
                                "global_mem": 2, "shared_mem": 0, "barrier": 1, "other": 1}
    assert loop["load_bytes_per_warp"] == 2 * 32 * 16 and loop["store_bytes_per_warp"] == 0
    # without tensor cores the longest loop wins; without a loop, the kernel up to its EXIT
    no_tc = SASS.replace("HMMA.16816.F32.BF16", "FMUL").replace("LDGSTS.E.BYPASS.LTC128B.128",
                                                                 "NOP")
    _, loop, _ = ki.analyze_sass(no_tc)
    assert loop["found"] and loop["instructions"] == 7
    _, loop, _ = ki.analyze_sass(SASS.replace("@P0 BRA", "@P0 EXIT").replace("@P1 BRA", "@P1 EXIT"))
    assert not loop["found"] and loop["instructions"] == 14


def test_opcode_classes_and_tensor_core_shapes():
    assert ki.classify("IGMMA.64x128x32.S8.S8") == "tensor_core"
    assert ki.classify("UIADD3") == "int_bit" and ki.classify("ULDC.64") == "other"
    assert ki.classify("PRMT") == "int_bit" and ki.classify("I2F.S8") == "conversion"
    assert ki.classify("WARPGROUP.ARRIVE") == "barrier"
    assert ki.classify("LDSM.16.M88.4") == "shared_mem"
    assert ki.tensor_core_work("IGMMA.64x128x32.S8.S8") == (64 * 128 * 32 / 4, "int8")
    assert ki.tensor_core_work("IMMA.16832.S8.S8.SAT") == (16 * 8 * 32, "int8")
    assert ki.tensor_core_work("HGMMA.64x64x16.F32.BF16") == (64 * 64 * 16 / 4, "bf16")
    assert ki.tensor_core_work("HMMA.1684.F32.TF32")[1] == "tf32"


def test_gpu_tables():
    """Per-SM rates agree with the vendor peaks; occupancy follows the written limits."""
    for arch, a in ki.ARCHS.items():
        for kind, peak in a["peak_tops"].items():
            derived = 2 * a["sms"] * a["clock_ghz"] * 1e9 * a["mac_per_sm_cycle"][kind] / 1e12
            assert derived == pytest.approx(peak, rel=0.015), (arch, kind)
    assert ki.dram_bytes_per_cycle("sm_90") == pytest.approx(4.8e12 / (132 * 1.83e9))
    occ, d = ki.occupancy("sm_90", regs=128, smem_bytes=48 * 1024, num_warps=8)
    assert (occ, d["blocks_per_sm"], d["limited_by"]) == (0.25, 2, "registers")
    occ, d = ki.occupancy("sm_86", regs=32, smem_bytes=40 * 1024, num_warps=4)
    assert (d["blocks_per_sm"], d["limited_by"]) == (2, "shared_memory")
    assert occ == pytest.approx(8 / 48, abs=1e-4)
    assert ki.occupancy("sm_80", regs=32, smem_bytes=200 * 1024, num_warps=4)[0] == 0


# ---- the lessons' helper (int4lab/course/compiled.py): the learner's kernel, else the library's

def test_lesson_helper_says_when_it_falls_back_to_the_library(home, capsys):
    from int4lab.course import compiled
    result = compiled.show("int4_matmul", arch="sm_90")
    out = capsys.readouterr().out
    assert "Your int4_matmul kernel was not compiled" in out and "impl=triton" in out
    assert result["impl"] == "triton" and "IGMMA" in out


def test_lesson_helper_compiles_the_learners_kernel(home, capsys):
    from pathlib import Path

    from int4lab.course import compiled
    from int4lab.exercises import workspace as store
    src = Path(__file__).resolve().parents[1] / "kernels" / "int4_matmul.py"
    path = store.workspace_file("int4_matmul")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src.read_text())
    result = compiled.show("int4_matmul", arch="sm_90")
    out = capsys.readouterr().out
    assert result["impl"] == "learner" and "Your kernel (impl=learner)" in out
    assert any(op.startswith("IGMMA") for op in result["kernels"][0]["tensor_core"])


def test_lesson_helper_reports_a_learner_kernel_that_does_not_compile(home, capsys):
    from int4lab.course import compiled
    from int4lab.exercises import workspace as store
    path = store.workspace_file("int4_matmul")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import triton\nimport triton.language as tl\n\n@triton.jit\n"
                    "def k(x_ptr, BLOCK: tl.constexpr):\n    tl.store(x_ptr, undefined_name)\n\n"
                    "def int4_matmul(a, a_scale, b, b_scale, out_dtype=None):\n"
                    "    k[(1,)](a, BLOCK=16)\n    return a\n")
    result = compiled.show("int4_matmul", arch="sm_90")
    out = capsys.readouterr().out
    assert "Your int4_matmul kernel was not compiled" in out and result["impl"] == "triton"

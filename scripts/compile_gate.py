"""Compile every kernel of the course for GPUs this machine does not have, and assert what a GPU
user needs: it compiles under this Triton, it spills no registers, and the GEMM's main loop runs
on integer tensor cores (mma ... s8 on sm_80-89: SASS IMMA; wgmma on sm_90: SASS IGMMA).

Checked: every slot's library kernel at the config its launcher picks on a GPU, for each --arch;
the kernels of the fused Int4Linear (kernels/fused_linear.py) as one layer step launches them;
and every wrong-kernel fixture in tests/wrong_kernels (each is one bug away from a solution, and
the grader and the lessons' tests run them, so they must compile too) for the last --arch.
Run under each Triton of the support matrix by scripts/triton_matrix.sh.

Usage: python scripts/compile_gate.py [--arch sm_80 sm_90] [--json FILE]
"""
import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import triton

import int4lab  # (sets up the interpreter the launchers are recorded under)
from int4lab.perf import kernel_inspect as ki

ROOT = Path(__file__).resolve().parents[1]
# The slots whose kernels are GEMMs: their main loop must hold integer tensor-core instructions.
GEMM_SLOTS = {"int4_matmul": {"sm_80": "IMMA", "sm_86": "IMMA", "sm_89": "IMMA", "sm_90": "IGMMA"}}


def problems_of(slot, kernel, arch):
    """What is wrong with one compiled kernel, as sentences (empty when it passes)."""
    bad = []
    if kernel["spills"]:
        bad.append(f"{kernel['spills']} bytes of register spills ({kernel['regs']} registers)")
    want = GEMM_SLOTS.get(slot, {}).get(arch)
    if want:
        ops = [op for op in kernel["tensor_core"] if op.startswith(want) and ".S8" in op]
        if not ops:
            bad.append(f"no integer tensor-core instruction ({want} ... S8); found "
                       f"{kernel['tensor_core'] or 'none'}")
        elif not kernel["loop"].get("by_class", {}).get("tensor_core"):
            bad.append(f"{want} is not in the main loop")
    return bad


def fused_layer_step(tokens=256, d=256):
    """One forward + backward of Int4Linear(int4_hq_lss) on the fused path (kernels/fused_linear.py),
    for the recorder: its kernels compile with the shapes the layer gives them."""
    import torch

    from int4lab.layers import Int4Linear, fused_path
    torch.manual_seed(0)
    layer = Int4Linear(d, d, recipe="int4_hq_lss")
    x = torch.randn(tokens, d, requires_grad=True)
    with int4lab.use("triton"):
        if not fused_path(layer.recipe, x, layer.weight):
            raise RuntimeError("the layer did not take the fused path")
        layer(x).backward(torch.randn(tokens, d))


def load_fixture(path):
    spec = importlib.util.spec_from_file_location(f"int4lab_fixture_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # Triton reads the kernel's source via its module
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["sm_80", "sm_90"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows, failures = [], []
    t0 = time.time()
    for arch in args.arch:
        for slot in ki.triton_slots():
            try:
                kernels = ki.inspect(slot, arch=arch)["kernels"]
            except Exception as e:  # a compile error is the finding: report it, go on
                failures.append(f"{slot} {arch}: does not compile: {str(e)[-1500:]}")
                continue
            for k in kernels:
                bad = problems_of(slot, k, arch)
                failures += [f"{slot}/{k['kernel']} {arch}: {b}" for b in bad]
                rows.append({"slot": slot, "kernel": k["kernel"], "arch": arch, "regs": k["regs"],
                             "spills": k["spills"], "tensor_core": k["tensor_core"],
                             "bound": k["predicted"]["bound"],
                             "fraction_of_peak": k["predicted"]["fraction_of_peak"],
                             "ok": not bad})
                print(f"{'ok  ' if not bad else 'FAIL'} {arch} {slot:18} {k['kernel']:26} "
                      f"regs {k['regs']:3} spills {k['spills']} "
                      f"tc {','.join(k['tensor_core']) or '-'}")
        try:
            fused = ki.inspect_launcher(fused_layer_step, (), {}, arch)["kernels"]
        except Exception as e:
            fused = []
            failures.append(f"fused layer {arch}: does not compile: {str(e)[-1500:]}")
        for k in fused:
            bad = problems_of("fused_linear", k, arch)
            failures += [f"fused_linear/{k['kernel']} {arch}: {b}" for b in bad]
            rows.append({"slot": "fused_linear", "kernel": k["kernel"], "arch": arch, "regs": k["regs"],
                         "spills": k["spills"], "tensor_core": k["tensor_core"],
                         "bound": k["predicted"]["bound"],
                         "fraction_of_peak": k["predicted"]["fraction_of_peak"], "ok": not bad})
            print(f"{'ok  ' if not bad else 'FAIL'} {arch} {'fused_linear':18} {k['kernel']:26} "
                  f"regs {k['regs']:3} spills {k['spills']}")
    arch = args.arch[-1]
    for path in sorted((ROOT / "tests" / "wrong_kernels").glob("[a-z]*__*.py")):
        slot = path.stem.split("__")[0]
        try:
            _, a, kw = ki.representative_inputs(slot)
            launcher = getattr(load_fixture(path), slot)
            n = len(ki.inspect_launcher(launcher, a, kw, arch)["kernels"])
            ok = n > 0
            if not ok:
                failures.append(f"fixture {path.name} {arch}: launched no kernel")
        except Exception as e:
            ok = False
            failures.append(f"fixture {path.name} {arch}: does not compile: {str(e)[-1500:]}")
        rows.append({"fixture": path.name, "arch": arch, "ok": ok})
        print(f"{'ok  ' if ok else 'FAIL'} {arch} fixture {path.name}")
    result = {"triton": triton.__version__, "archs": args.arch, "rows": rows,
              "failures": failures, "seconds": round(time.time() - t0, 1)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"compile gate, triton {triton.__version__}, {', '.join(args.arch)}: "
          f"{len(rows) - len([r for r in rows if not r['ok']])} ok, {len(failures)} problems "
          f"({result['seconds']} s)")
    for f in failures:
        print("  - " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""`int4lab bench`: one benchmark suite for every kernel, layer and training step.

    int4lab bench --suite all --out results/DIR      (CUDA GPU: timings, JSON, PNG plots)
    int4lab bench --suite all --smoke --out DIR      (anywhere: tiny sizes, checks only)
    int4lab bench --slot pack_int4                   (one slot, as int4lab.bench does)

Timing done right: every case is checked against the spec before it is timed; inputs are
random (never zeros: zeros flatter memory-bound kernels and hide bugs); each figure is the
median of triton.testing.do_bench (which warms up and flushes the L2 cache) over several input
sets. Smoke mode runs the same code at tiny sizes through the interpreter and records no time:
it exists so the suite cannot rot between GPU runs.

Baselines measured in the same run: torch.mm in bf16 (cuBLAS), torch._int_mm (int8, cuBLASLt),
torch._scaled_mm in fp8 where the GPU has it, torch.clone for copy bandwidth, a bf16 nn.Linear
and a bf16 transformer block.
"""
import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch

from int4lab import runtime
from int4lab.exercises import registry

SUITES = ("gemm", "memory", "linear", "block")
INPUT_SETS = 3


class Timer:
    """do_bench medians on a GPU; in smoke mode it only runs the function once (no timing)."""

    def __init__(self, smoke):
        self.smoke = smoke

    def __call__(self, fn, inputs):
        if self.smoke:
            for args in inputs[:1]:
                fn(*args)
            return None
        import triton.testing
        return statistics.median(triton.testing.do_bench(lambda a=args: fn(*a), return_mode="median")
                                 for args in inputs)


def _rand_codes(m, k2, device, g):
    return torch.randint(0, 256, (m, k2), generator=g, dtype=torch.uint8).to(device)


def _check(name, got, want, atol=1e-3, rtol=1e-3):
    if not torch.allclose(got.float().cpu(), want.float().cpu(), atol=atol, rtol=rtol):
        err = (got.float().cpu() - want.float().cpu()).abs().max().item()
        raise AssertionError(f"{name}: result differs from the reference (max abs error {err:.3g}); "
                             "not timing a wrong kernel")


def bench_gemm(timer, sizes, device):
    """int4_matmul vs torch.mm bf16 vs torch._int_mm (int8) vs torch._scaled_mm (fp8)."""
    from int4lab.spec.quantizers import int4_matmul_spec
    rows = []
    g = torch.Generator().manual_seed(0)
    for (m, n, k) in sizes:
        sets = [(_rand_codes(m, k // 2, device, g), torch.rand(m, 1, generator=g).to(device) + 0.5,
                 _rand_codes(n, k // 2, device, g), torch.rand(n, 1, generator=g).to(device) + 0.5)
                for _ in range(INPUT_SETS if not timer.smoke else 1)]
        with registry.use("triton"):
            a, sa, b, sb = sets[0]
            _check(f"int4_matmul {m}x{n}x{k}", registry.dispatch("int4_matmul", a, sa, b, sb,
                                                                 out_dtype=torch.int32),
                   int4_matmul_spec(a, sa, b, sb, out_dtype=torch.int32), atol=0, rtol=0)
            row = {"M": m, "N": n, "K": k, "impl": registry.last_ran("int4_matmul"),
                   "int4_matmul_ms": timer(lambda *s: registry.dispatch("int4_matmul", *s,
                                                                        out_dtype=torch.bfloat16
                                                                        if device.type == "cuda"
                                                                        else torch.float32), sets)}
        fdt = torch.bfloat16 if device.type == "cuda" else torch.float32
        fl = [(torch.randn(m, k, generator=g).to(device, fdt), torch.randn(k, n, generator=g).to(device, fdt))
              for _ in range(len(sets))]
        row["torch_mm_ms"] = timer(torch.mm, fl)
        if device.type == "cuda":
            i8 = [(torch.randint(-8, 8, (m, k), dtype=torch.int8, device=device),
                   torch.randint(-8, 8, (k, n), dtype=torch.int8, device=device).t().contiguous().t())
                  for _ in range(len(sets))]
            row["int_mm_ms"] = timer(torch._int_mm, i8)
            row["scaled_mm_fp8_ms"] = _fp8(timer, m, n, k, device, len(sets))
        flops = 2 * m * n * k
        for key in [k_ for k_ in row if k_.endswith("_ms")]:
            if row[key]:
                row[key.replace("_ms", "_tflops")] = flops / (row[key] * 1e-3) / 1e12
        rows.append(row)
    return rows


def _fp8(timer, m, n, k, device, nsets):
    if not hasattr(torch, "float8_e4m3fn") or torch.cuda.get_device_capability() < (8, 9):
        return None
    one = torch.tensor(1.0, device=device)
    sets = [(torch.randn(m, k, device=device).to(torch.float8_e4m3fn),
             torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t(), one, one)
            for _ in range(nsets)]
    try:
        return timer(lambda a, b, sa, sb: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb,
                                                            out_dtype=torch.bfloat16), sets)
    except Exception:
        return None


def bench_memory(timer, shapes, device):
    """Memory-bound kernels vs the measured copy bandwidth (torch.clone)."""
    from int4lab.spec.gradients import bit_split_spec
    from int4lab.spec.hadamard import hadamard_quantize_spec
    from int4lab.spec.quantizers import quantize_int4_spec
    rows = []
    g = torch.Generator().manual_seed(1)
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    cases = {
        "hadamard_quantize": (lambda x: registry.dispatch("hadamard_quantize", x), hadamard_quantize_spec),
        "quantize_int4": (lambda x: registry.dispatch("quantize_int4", x), quantize_int4_spec),
        "bit_split": (lambda x: registry.dispatch("bit_split", x, seed=0)[0], lambda x: bit_split_spec(x, seed=0)[0]),
    }
    for (m, k) in shapes:
        sets = [(torch.randn(m, k, generator=g).to(device, dt),) for _ in range(INPUT_SETS if not timer.smoke else 1)]
        x = sets[0][0]
        nbytes_in = x.numel() * x.element_size()
        row = {"M": m, "K": k, "clone_ms": timer(torch.clone, sets)}
        if row["clone_ms"]:
            row["clone_GBps"] = 2 * nbytes_in / (row["clone_ms"] * 1e-3) / 1e9
        with registry.use("triton"):
            for name, (fn, spec) in cases.items():
                got, want = fn(x), spec(x)
                got, want = (got[0], want[0]) if isinstance(got, tuple) else (got, want)
                # packed codes: allow a few off-by-one codes where float rounding straddles .5
                mism = (got.cpu() != want.cpu()).float().mean().item()
                if mism > 1e-3:
                    raise AssertionError(f"{name} {m}x{k}: {mism:.2%} of the bytes differ from the spec")
                row[f"{name}_impl"] = registry.last_ran(name)
                row[f"{name}_ms"] = timer(lambda t: fn(t), sets)
                if row[f"{name}_ms"]:
                    moved = nbytes_in + x.numel() // 2        # read x, write packed int4
                    row[f"{name}_GBps"] = moved / (row[f"{name}_ms"] * 1e-3) / 1e9
                    row[f"{name}_pct_of_copy"] = 100 * row[f"{name}_GBps"] / row["clone_GBps"]
        rows.append(row)
    return rows


def _fwd_bwd(module, x):
    """One forward + backward of a linear layer with a fixed random output gradient."""
    grad = torch.randn(*x.shape[:-1], module.out_features, device=x.device, dtype=x.dtype)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)
    return run


def bench_linear(timer, tokens, dims, device):
    """Int4Linear forward + backward (int4_hq_lss) vs a bf16 nn.Linear, with a time breakdown."""
    from int4lab.layers import Int4Linear
    rows = []
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    for d in dims:
        x = torch.randn(tokens, d, device=device, dtype=dt, requires_grad=True)
        ref = torch.nn.Linear(d, d, bias=False).to(device, dt)
        q = Int4Linear.from_linear(torch.nn.Linear(d, d, bias=False), "int4_hq_lss").to(device)
        xq = torch.randn(tokens, d, device=device, requires_grad=True)
        with registry.use("triton" if device.type == "cuda" else "auto"):
            y = q(xq)
            y.backward(torch.randn_like(y))
            assert torch.isfinite(q.weight.grad).all(), "Int4Linear produced a non-finite gradient"
            row = {"tokens": tokens, "d": d,
                   "bf16_linear_ms": timer(_fwd_bwd(ref, x), [()]),
                   "int4_linear_ms": timer(_fwd_bwd(q, xq), [()]),
                   "impl": {k: v for k, v in registry.last_ran().items()}}
            # the breakdown: each quantized piece of one step, timed alone at the layer's shapes
            pieces = {
                "hadamard_quantize_x": lambda: registry.dispatch("hadamard_quantize", xq.detach()),
                "bit_split_dy": lambda: registry.dispatch("bit_split", xq.detach(), seed=0),
            }
            px, sx = registry.dispatch("quantize_int4", xq.detach())
            pieces["int4_gemm"] = lambda: registry.dispatch("int4_matmul", px, sx, px, sx)
            for name, fn in pieces.items():
                row[f"part_{name}_ms"] = timer(lambda f=fn: f(), [()])
        if row["bf16_linear_ms"] and row["int4_linear_ms"]:
            row["speedup_vs_bf16"] = row["bf16_linear_ms"] / row["int4_linear_ms"]
        rows.append(row)
    return rows


def bench_block(timer, tokens, d, device):
    """One transformer block's training step, bf16 vs int4_hq_lss."""
    from int4lab.layers import quantize_model
    from int4lab.training.models.gpt import Block, GPTConfig
    rows = []
    seq = 256 if tokens >= 256 else tokens
    batch = max(1, tokens // seq)
    cfg = GPTConfig(n_embd=d, n_head=max(1, d // 64), block_size=seq)
    for recipe in ("fp32", "int4_hq_lss"):
        torch.manual_seed(0)
        block = Block(cfg).to(device)
        dt = torch.bfloat16 if (device.type == "cuda" and recipe == "fp32") else torch.float32
        block = block.to(dt)
        if recipe != "fp32":
            quantize_model(block, recipe, skip=[])
        opt = torch.optim.AdamW(block.parameters(), lr=1e-4)
        x = torch.randn(batch, seq, d, device=device, dtype=dt)

        def step():
            opt.zero_grad(set_to_none=True)
            block(x).float().pow(2).mean().backward()
            opt.step()
        step()
        rows.append({"recipe": "bf16" if dt == torch.bfloat16 else recipe, "tokens": batch * seq,
                     "d": d, "step_ms": timer(step, [()])})
    if rows[0]["step_ms"] and rows[1]["step_ms"]:
        rows[1]["speedup_vs_bf16"] = rows[0]["step_ms"] / rows[1]["step_ms"]
    return rows


def environment():
    import triton
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "device": str(runtime.DEVICE), "interpreter": runtime.INTERPRET}
    if runtime.HAS_CUDA:
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            import subprocess
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True).stdout.strip()
        except OSError:
            env["driver"] = None
    return env


def run_suite(suites, smoke, device=None):
    device = device or runtime.DEVICE
    if not smoke and not runtime.HAS_CUDA:
        raise SystemExit("int4lab bench needs a CUDA GPU for timings; on the CPU use --smoke "
                         "(checks only: interpreter timings mean nothing)")
    timer = Timer(smoke)
    out = {"environment": environment(), "smoke": smoke, "timed": not smoke}
    if "gemm" in suites:
        sizes = ([(33, 31, 64), (64, 64, 128)] if smoke else
                 [(s, s, s) for s in (1024, 2048, 4096, 8192)] + [(8192, 4096, 4096), (8192, 11008, 4096)])
        out["gemm"] = bench_gemm(timer, sizes, device)
    if "memory" in suites:
        out["memory"] = bench_memory(timer, [(31, 64), (64, 128)] if smoke else
                                     [(8192, 2048), (8192, 4096), (16384, 8192)], device)
    if "linear" in suites:
        out["linear"] = bench_linear(timer, 64 if smoke else 8192, (64,) if smoke else (2048, 4096, 8192), device)
    if "block" in suites:
        out["block"] = bench_block(timer, 32 if smoke else 8192, 64 if smoke else 4096, device)
    return out


def plot(results, out_dir):
    """Throughput against size, and percent of the measured ceilings (PNG files)."""
    from matplotlib.figure import Figure
    paths = []
    if results.get("gemm") and results["timed"]:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        labels = [f"{r['M']}x{r['N']}x{r['K']}" for r in results["gemm"]]
        for key, name in (("int4_matmul_tflops", "int4_matmul (Triton)"), ("torch_mm_tflops", "torch.mm bf16"),
                          ("int_mm_tflops", "torch._int_mm int8"), ("scaled_mm_fp8_tflops", "_scaled_mm fp8")):
            ys = [r.get(key) for r in results["gemm"]]
            if any(ys):
                ax.plot(labels, [y or float("nan") for y in ys], marker="o", label=name)
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"GEMM throughput, {results['environment'].get('gpu', '')}")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "gemm.png")
        fig.savefig(paths[-1], dpi=120)
    if results.get("memory") and results["timed"]:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        labels = [f"{r['M']}x{r['K']}" for r in results["memory"]]
        for name in ("hadamard_quantize", "quantize_int4", "bit_split"):
            ax.plot(labels, [r.get(f"{name}_pct_of_copy") for r in results["memory"]], marker="o", label=name)
        ax.axhline(100, color="gray", ls="--", label="torch.clone bandwidth")
        ax.set_ylabel("% of measured copy bandwidth")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "memory.png")
        fig.savefig(paths[-1], dpi=120)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="int4lab bench", description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="all", help=f"all or a comma list of {', '.join(SUITES)}")
    p.add_argument("--out", default="results/latest", help="folder for results.json and plots")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, checks only, no timings (CPU ok)")
    p.add_argument("--slot", help="benchmark one slot instead (int4lab.bench(SLOT))")
    a = p.parse_args(argv)
    if a.slot:
        from int4lab.exercises.learner import bench
        bench(a.slot)
        return 0
    suites = SUITES if a.suite == "all" else tuple(s.strip() for s in a.suite.split(","))
    unknown = set(suites) - set(SUITES)
    if unknown:
        p.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    results = run_suite(suites, a.smoke)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    pngs = plot(results, out_dir)
    print(f"wrote {out_dir / 'results.json'}" + "".join(f", {p}" for p in pngs))
    if a.smoke:
        print("smoke mode: every case ran and was checked against the spec; nothing was timed.")
    return 0

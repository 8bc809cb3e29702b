"""Lesson 08's helpers: the roofline, a time model of a linear layer, and recorded benchmarks.

Hardware numbers (the course's fact sheet, docs/facts.md): H100/H200 SXM dense peaks BF16 989
TFLOP/s and INT8 1979 TOPS; HBM 4.8 TB/s on an H200, 3.35 TB/s on an H100 SXM. PLANNING_H200
holds planning estimates, NOT measurements of this course (no GPU run is recorded in the
repository): a bf16 8192^3 torch.matmul at about 770-790 TFLOP/s and a device-to-device copy at
about 4.3 TB/s on an H200. Hopper has no INT4 tensor cores: the course's INT4 GEMM runs its
values on the INT8 ones, so its ceiling is 2x bf16.

Recorded GPU results are the JSON files `int4lab bench --suite all --out results/DIR` writes
(results/*/results.json, with the machine and the date inside). latest_results finds the newest
timed one; smoke runs (no timings) are skipped. Figures use matplotlib.figure.Figure (no pyplot).
"""
import json
import math
from pathlib import Path

from int4lab.course import l03_gemm as _l03

H200 = dict(_l03.H200)                        # bf16_tflops 989, int8_tops 1979, hbm_tbs 4.8
H100_SXM_HBM_TBS = 3.35                       # H100 SXM: the same tensor cores, slower HBM3
#: Planning estimates for an H200, not measured by this course: a large bf16 matmul at ~780
#: TFLOP/s (middle of 770-790) and a device-to-device copy (read + write) at ~4.3 TB/s.
PLANNING_H200 = {"bf16_tflops": 780.0, "copy_tbs": 4.3}

#: dropdown name: (bytes per A/B value, peak key, label). INT4 on Hopper runs on INT8 cores.
KINDS = {
    "bf16": (2.0, "bf16_tflops", "bf16 (cuBLAS torch.mm)"),
    "int8": (1.0, "int8_tops", "int8 (torch._int_mm, or INT4 kept in int8)"),
    "int4-packed": (0.5, "int8_tops", "INT4 packed 2 per byte, on INT8 cores"),
}

#: The paper (Xi et al. 2023): wall-time change of BERT-like fine-tuning on 8 x A100 (INT4
#: tensor cores) against FP16, by hidden size. (T_fp16 - T_int4) / T_fp16: >0 is faster.
PAPER_WALLTIME = {2560: (-0.28, -0.25), 4096: (0.0, 0.0), 8960: (0.351, 0.351)}


# ---------------------------------------------------------------------------------------------
# The roofline

def gemm_cost(size, kind, out_bytes=2):
    """FLOPs, HBM bytes (A and B read once, C written once in bf16) and intensity of a square
    size^3 GEMM of the given kind ("bf16", "int8", "int4-packed")."""
    bpv = KINDS[kind][0]
    flops = 2.0 * size ** 3
    moved = 2 * bpv * size * size + out_bytes * size * size
    return {"flops": flops, "bytes": moved, "intensity": flops / moved}


def memory_bound_below(kind, hbm_tbs=H200["hbm_tbs"], out_bytes=2):
    """The side n under which a square n^3 GEMM of the given kind is memory-bound: where its
    intensity 2n / (2 b + out_bytes) meets the ridge point peak / bandwidth."""
    ridge = H200[KINDS[kind][1]] / hbm_tbs
    return ridge * (2 * KINDS[kind][0] + out_bytes) / 2


def attainable(intensity, kind, hbm_tbs=H200["hbm_tbs"]):
    """min(peak, bandwidth x intensity) in TFLOP/s (TOPS), and which limit binds."""
    peak = H200[KINDS[kind][1]]
    mem = hbm_tbs * intensity
    return (peak, "compute") if peak <= mem else (mem, "memory")


def roofline_figure(log2_size=12, kind="bf16"):
    """The H200 roofline with a square GEMM of side 2^log2_size of the chosen kind marked; the
    planning estimates of a bf16 matmul and a copy on an H200 (PLANNING_H200, not measured by
    this course) are drawn dashed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    size = 2 ** int(log2_size)
    fig = Figure(figsize=(9, 4.6))
    ax = fig.add_subplot()
    ai = [2 ** (p / 4) for p in range(0, 4 * 14 + 1)]             # 1 .. 16384 FLOP/byte
    for name, c in (("bf16", "tab:blue"), ("int8", "tab:green")):
        peak = H200[KINDS[name][1]]
        ax.plot(ai, [min(peak, H200["hbm_tbs"] * a) for a in ai], color=c, linewidth=1.6,
                label=f"{name} tensor cores: {peak:.0f} peak; ridge at {peak / H200['hbm_tbs']:.0f} FLOP/B")
    ax.plot(ai, [min(PLANNING_H200["bf16_tflops"], PLANNING_H200["copy_tbs"] * a) for a in ai],
            color="gray", linestyle="--", linewidth=1.0,
            label="planning estimate, not measured: bf16 matmul ~780, copy ~4.3 TB/s")
    c = gemm_cost(size, kind)
    perf, bound = attainable(c["intensity"], kind)
    color = {"bf16": "tab:blue", "int8": "tab:olive", "int4-packed": "tab:green"}[kind]
    ax.plot([c["intensity"]], [perf], "o", color=color, markersize=11, markeredgecolor="black",
            label=f"{KINDS[kind][2]} at {size}^3")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.set_ylim(4, 4096)
    ax.set_xlabel("arithmetic intensity (FLOP per byte of HBM traffic)")
    ax.set_ylabel("attainable TFLOP/s (TOPS)")
    ax.set_title(f"{kind} GEMM {size}^3: {c['intensity']:.0f} FLOP/B, at most {perf:.0f} TFLOP/s "
                 f"({bound}-bound; H200 peaks)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Where a linear layer's time goes: a model

def linear_time_model(hidden, tokens=8192, kind="bf16", quant_bytes=24.0,
                      efficiency=PLANNING_H200["bf16_tflops"] / H200["bf16_tflops"],
                      hbm_tbs=PLANNING_H200["copy_tbs"]):
    """Milliseconds of one training step of a square hidden x hidden linear layer on `tokens`
    rows, on an H200, split into its parts. The defaults are the planning estimates
    PLANNING_H200 (not measurements).

    Three GEMMs of 2 * tokens * hidden^2 FLOPs each (forward Y = X W^T, input gradient dY W,
    weight gradient dY^T X), run at `efficiency` of the peak (bf16: 989; int4: INT8's 1979;
    with leverage score sampling the two backward INT4 GEMMs over [hi; lo] cost about one full
    one each). For "int4", the quantize passes (Hadamard-quantize X and W, bit-split dY) are
    memory-bound: `quant_bytes` bytes of HBM traffic per element of X, W and dY at `hbm_tbs`.
    A fused kernel reads bf16 and writes packed codes, about 3 bytes; a pipeline of separate
    elementwise kernels (rotate, scale, round, pack, transpose...) several times more.
    """
    if kind not in ("bf16", "int4"):
        raise ValueError(f"kind must be 'bf16' or 'int4', got {kind!r}")
    peak = H200["bf16_tflops"] if kind == "bf16" else H200["int8_tops"]
    gemm_ms = 2.0 * tokens * hidden * hidden / (efficiency * peak * 1e12) * 1e3
    parts = {"forward GEMM": gemm_ms, "input-gradient GEMM": gemm_ms, "weight-gradient GEMM": gemm_ms}
    if kind == "int4":
        elements = 2 * tokens * hidden + hidden * hidden          # X, dY, W
        parts["quantize passes"] = elements * quant_bytes / (hbm_tbs * 1e12) * 1e3
    parts["total"] = sum(parts.values())
    return parts


def speedup(hidden, tokens=8192, quant_bytes=24.0):
    """The modelled int4 speed-up over bf16 of one training step (linear_time_model)."""
    return (linear_time_model(hidden, tokens, "bf16")["total"]
            / linear_time_model(hidden, tokens, "int4", quant_bytes)["total"])


def model_vs_paper(quant_bytes=24.0, tokens=8192):
    """{hidden: (modelled speed-up, (paper's speed-up low, high))} at the paper's hidden sizes.
    The paper's wall-time change d (PAPER_WALLTIME) is a speed-up of 1 / (1 - d)."""
    return {h: (speedup(h, tokens, quant_bytes), (1 / (1 - lo), 1 / (1 - hi)))
            for h, (lo, hi) in sorted(PAPER_WALLTIME.items())}


def linear_breakdown_figure(quant_bytes=24.0, tokens=8192, hiddens=(1024, 2048, 2560, 4096, 8192, 8960)):
    """Left: modelled time per step of a hidden x hidden linear layer, bf16 and int4 side by side,
    split into the three GEMMs and the quantize passes (normalized to bf16 = 1). Right: the
    modelled int4 speed-up against hidden size, with the paper's measured wall-time changes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.4))
    ax, ax2 = fig.subplots(1, 2)
    colors = {"forward GEMM": "tab:blue", "input-gradient GEMM": "tab:cyan",
              "weight-gradient GEMM": "tab:purple", "quantize passes": "tab:red"}
    x = list(range(len(hiddens)))
    speedups = []
    for j, kind in enumerate(("bf16", "int4")):
        bottom = [0.0] * len(hiddens)
        models = [linear_time_model(h, tokens, kind, quant_bytes) for h in hiddens]
        refs = [linear_time_model(h, tokens, "bf16")["total"] for h in hiddens]
        for part, c in colors.items():
            vals = [m.get(part, 0.0) / r for m, r in zip(models, refs)]
            ax.bar([i + (j - 0.5) * 0.38 for i in x], vals, width=0.36, bottom=bottom, color=c,
                   edgecolor="black" if kind == "int4" else "white", linewidth=0.5,
                   label=part if j == 1 else None)
            bottom = [b + v for b, v in zip(bottom, vals)]
        if kind == "int4":
            speedups = [1 / b for b in bottom]
    ax.set_xticks(x, [f"{h}\nbf16 | int4" for h in hiddens], fontsize=7)
    ax.set_xlabel("hidden size")
    ax.set_ylabel("time per step (bf16 = 1)")
    ax.set_title(f"model: {tokens} tokens, quantize traffic {quant_bytes:g} B per element", fontsize=9)
    ax.legend(fontsize=7)
    ax2.plot(list(hiddens), speedups, "o-", color="tab:green",
             label="model: linear layer, H200 (ceiling 2x)")
    ax2.axhline(2.0, color="tab:green", linestyle=":", linewidth=0.8)
    ax2.axhline(1.0, color="gray", linewidth=0.8)
    for i, (h, (lo, hi)) in enumerate(sorted(PAPER_WALLTIME.items())):
        s_lo, s_hi = 1 / (1 - lo), 1 / (1 - hi)
        ax2.plot([h, h], [s_lo, s_hi], color="black", linewidth=3)
        ax2.plot([h], [(s_lo + s_hi) / 2], "D", color="black",
                 label="paper: whole-model wall time, 8xA100, INT4 cores" if i == 0 else None)
    ax2.set_xlabel("hidden size")
    ax2.set_ylabel("speed-up over bf16 (x)")
    ax2.set_ylim(0, 2.2)
    ax2.set_title("gains need large layers: GEMMs grow as hidden^2, quantize passes as hidden",
                  fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Recorded results and the live benchmark

def _results_roots(root):
    if root is not None:
        return [Path(root)]
    here = Path.cwd()
    return [here / "results", here.parent / "results", Path(__file__).resolve().parents[2] / "results"]


def latest_results(root=None):
    """The newest *timed* results/*/results.json (smoke runs are skipped), as a dict with its
    "path" added; None when there is none. Newest by the date recorded in it."""
    found = []
    for r in _results_roots(root):
        for p in sorted(Path(r).glob("*/results.json")) if Path(r).is_dir() else []:
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("timed") and not data.get("smoke"):
                data["path"] = str(p)
                found.append(data)
        if found:
            break
    if not found:
        return None
    return max(found, key=lambda d: str(d.get("environment", {}).get("date", "")))


def results_title(results):
    env = results.get("environment", {})
    return f"{env.get('gpu') or env.get('device', '?')}, {env.get('date', 'undated')}"


def results_figure(results):
    """Plots a bench results dict: GEMM throughput against cuBLAS bf16 / int8 / fp8 with the
    H200 peaks, memory-bound kernels as % of the copy bandwidth, and the linear layer's
    speed-up, each panel where the results have it. The title names the machine and the date."""
    from matplotlib.figure import Figure

    panels = [k for k in ("gemm", "memory", "linear") if results.get(k)]
    if not panels:
        raise ValueError("these results hold no gemm, memory or linear rows")
    fig = Figure(figsize=(5.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        rows = results[panel]
        if panel == "gemm":
            labels = [f"{r['M']}x{r['N']}x{r['K']}" for r in rows]
            for key, name in (("int4_matmul_tflops", "int4_matmul (Triton)"),
                              ("torch_mm_tflops", "torch.mm bf16"),
                              ("int_mm_tflops", "torch._int_mm int8"),
                              ("scaled_mm_fp8_tflops", "_scaled_mm fp8")):
                ys = [r.get(key) for r in rows]
                if any(y is not None for y in ys):
                    ax.plot(labels, [math.nan if y is None else y for y in ys], "o-", label=name)
            ax.axhline(H200["bf16_tflops"], color="tab:blue", linestyle=":", linewidth=0.8,
                       label="H200 bf16 peak 989")
            ax.axhline(H200["int8_tops"], color="tab:green", linestyle=":", linewidth=0.8,
                       label="H200 int8 peak 1979")
            ax.set_ylabel("TFLOP/s (TOPS)")
            ax.set_title("GEMM throughput", fontsize=9)
        elif panel == "memory":
            labels = [f"{r['M']}x{r['K']}" for r in rows]
            for name in ("hadamard_quantize", "quantize_int4", "bit_split"):
                ys = [r.get(f"{name}_pct_of_copy") for r in rows]
                if any(y is not None for y in ys):
                    ax.plot(labels, [math.nan if y is None else y for y in ys], "o-", label=name)
            ax.axhline(100, color="gray", linestyle="--", label="torch.clone bandwidth")
            ax.set_ylabel("% of measured copy bandwidth")
            ax.set_title("memory-bound kernels", fontsize=9)
        else:
            labels = [str(r["d"]) for r in rows]
            ax.bar(labels, [r.get("speedup_vs_bf16") or 0.0 for r in rows], color="tab:green")
            ax.axhline(1.0, color="gray")
            ax.set_xlabel("hidden size (tokens %s)" % rows[0].get("tokens"))
            ax.set_ylabel("Int4Linear speed-up over bf16 nn.Linear")
            ax.set_title("linear layer, forward + backward", fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"recorded benchmark: {results_title(results)}", fontsize=10)
    fig.tight_layout()
    return fig


def live_gemm(sizes=(4096,)):
    """Run the GEMM part of the suite here. On a CUDA GPU: timed (int4_matmul vs torch.mm bf16,
    torch._int_mm int8, _scaled_mm fp8) at the given square sizes. Elsewhere: smoke mode,
    every case checked at tiny sizes, nothing timed. Returns the suite's results dict."""
    from int4lab import runtime
    from int4lab.perf import bench as suite
    if runtime.HAS_CUDA and not runtime.INTERPRET:
        out = {"environment": suite.environment(), "smoke": False, "timed": True}
        out["gemm"] = suite.bench_gemm(suite.Timer(False), [(s, s, s) for s in sizes], runtime.DEVICE)
        return out
    return suite.run_suite(("gemm",), smoke=True)


def describe_gemm(results):
    """One line per GEMM row: TFLOP/s of each implementation, or that it was checked only."""
    lines = []
    for r in results.get("gemm", []):
        head = f"{r['M']}x{r['N']}x{r['K']} (int4_matmul ran: {r.get('impl')})"
        if not results.get("timed"):
            lines.append(f"{head}: checked against the spec, not timed")
            continue
        vals = [f"{k[:-7]} {r[k]:.0f}" for k in ("int4_matmul_tflops", "torch_mm_tflops",
                                                  "int_mm_tflops", "scaled_mm_fp8_tflops") if r.get(k)]
        lines.append(f"{head}: " + ", ".join(vals) + " TFLOP/s")
    return "\n".join(lines)

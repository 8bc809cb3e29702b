"""Lesson 03's helpers: exact integer accumulation, tiling, the roofline, and INT4 GEMM error.

Hardware numbers are the vendors' dense peaks for an H200 SXM (see the course's fact sheet):
BF16 989 TFLOP/s, INT8 1979 TOPS, HBM3e 4.8 TB/s. Hopper has no INT4 tensor cores, so an INT4
GEMM on it runs its INT4 values through the INT8 tensor cores: its ceiling is INT8's, 2x BF16.
The quantized products come from the library's spec (int4lab.spec.quantizers), so the error shown is the
error of the course's own pipeline. Figures use matplotlib.figure.Figure (no pyplot).
"""
import math

import torch

from int4lab.course.common import single_threaded
from int4lab.spec.packing import pack_int4
from int4lab.spec.quantizers import int4_matmul_spec, quantize

# Dense peaks of an H200 SXM (same tensor cores as an H100 SXM), and its memory bandwidth.
H200 = {"bf16_tflops": 989.0, "int8_tops": 1979.0, "hbm_tbs": 4.8}

# Largest integer below which every integer is exactly representable (2**mantissa bits + 1).
EXACT_INTEGERS = {"bf16": 2 ** 8, "fp16": 2 ** 11, "fp32": 2 ** 24, "int32": 2 ** 31 - 1}
MAX_PRODUCT = 64          # |q_a * q_b| <= 8 * 8 for INT4 codes in [-8, 7]


# ---------------------------------------------------------------------------------------------
# Exact accumulation

def worst_case_sum(K):
    """The largest |sum_k q_a q_b| of a length-K INT4 dot product: 64 K (all codes -8)."""
    return MAX_PRODUCT * K


def max_exact_k(accumulator):
    """The longest K whose INT4 dot products are exact in `accumulator` ("bf16", "fp16",
    "fp32", "int32"): every partial sum is an integer of size <= 64 K, so it must stay at or
    under the largest exactly representable integer."""
    return EXACT_INTEGERS[accumulator] // MAX_PRODUCT


def accumulation_figure(K=4096):
    """|sum| <= 64 K against the largest exact integer of each accumulator type (log-log)."""
    from matplotlib.figure import Figure

    ks = [2 ** p for p in range(0, 27)]
    fig = Figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    ax.plot(ks, [worst_case_sum(k) for k in ks], color="black", linewidth=2,
            label="worst case |sum of K products| = 64 K")
    colors = {"bf16": "tab:red", "fp16": "tab:orange", "fp32": "tab:blue", "int32": "tab:green"}
    for acc, limit in EXACT_INTEGERS.items():
        ax.axhline(limit, color=colors[acc], linestyle="--", linewidth=1,
                   label=f"{acc}: exact up to {limit:,} (K <= {max_exact_k(acc):,})")
    ax.axvline(K, color="gray", linestyle=":", linewidth=1)
    ax.text(K, 2 ** 28, f" K = {K:,}: |sum| <= {worst_case_sum(K):,}", color="gray", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("K (length of the dot product)")
    ax.set_ylabel("integer size")
    ax.set_title("an INT4 dot product in int32 is exact for K up to 33 million; "
                 "in fp16 only up to K = 32", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Tiling

def tile_grid(M, N, BLOCK_M, BLOCK_N):
    """The programs of a 2-D GEMM grid: one dict per (pid_m, pid_n) tile of C with its row and
    column ranges and how many of its BLOCK_M x BLOCK_N lanes are real (the rest are masked)."""
    tiles = []
    for pm in range(math.ceil(M / BLOCK_M)):
        for pn in range(math.ceil(N / BLOCK_N)):
            rows = min(BLOCK_M, M - pm * BLOCK_M)
            cols = min(BLOCK_N, N - pn * BLOCK_N)
            tiles.append({"pid_m": pm, "pid_n": pn, "rows": rows, "cols": cols,
                          "active": rows * cols, "masked": BLOCK_M * BLOCK_N - rows * cols})
    return tiles


def tile_traffic(M, N, K, BLOCK_M, BLOCK_N, bytes_per_value=0.5):
    """Bytes all programs load from A and B together: each reads its BLOCK_M rows of A and its
    BLOCK_N rows of B along the whole K (caches aside), so A is read cdiv(N, BLOCK_N) times
    and B cdiv(M, BLOCK_M) times. Bigger tiles mean fewer re-reads."""
    gm, gn = math.ceil(M / BLOCK_M), math.ceil(N / BLOCK_N)
    return bytes_per_value * K * (M * gn + N * gm)


def tiling_figure(M=200, N=150, BLOCK_M=64, BLOCK_N=64, K=256, BLOCK_K=32, pid_m=1, pid_n=1):
    """A, B and C as rectangles: the program (pid_m, pid_n) reads a strip of BLOCK_M rows of A
    and BLOCK_N rows of B, chunk by chunk along K (BLOCK_K packed bytes = 2 BLOCK_K values),
    and writes one tile of C; partial edge tiles are hatched (masked lanes)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    gm, gn = math.ceil(M / BLOCK_M), math.ceil(N / BLOCK_N)
    asked = (pid_m, pid_n)
    pid_m, pid_n = min(pid_m, gm - 1), min(pid_n, gn - 1)
    # a program id past the grid does not exist: say so rather than redraw the same picture
    past = ("" if asked == (pid_m, pid_n) else
            f" [asked for ({asked[0]}, {asked[1]}): past the {gm} x {gn} grid, so no such program]")
    KH = K // 2
    fig = Figure(figsize=(11, 4))
    axA, axB, axC = fig.subplots(1, 3, gridspec_kw={"width_ratios": [KH, KH, N]})

    def strip(ax, rows, index, block, title):
        ax.add_patch(Rectangle((0, 0), KH, rows, facecolor="white", edgecolor="black"))
        r0 = index * block
        h = min(block, rows - r0)
        for c, k0 in enumerate(range(0, KH, BLOCK_K)):
            w = min(BLOCK_K, KH - k0)
            ax.add_patch(Rectangle((k0, r0), w, h, facecolor=("tab:blue", "tab:cyan")[c % 2],
                                   alpha=0.6, edgecolor="black", linewidth=0.5))
            if w < BLOCK_K:          # the K tail: masked
                ax.add_patch(Rectangle((k0 + w, r0), BLOCK_K - w, h, facecolor="none",
                                       edgecolor="tab:red", hatch="///", linewidth=0.5))
        ax.set_xlim(0, max(KH, math.ceil(KH / BLOCK_K) * BLOCK_K) + 1)
        ax.set_ylim(rows + 1, -1)
        ax.set_xlabel("K/2 packed bytes")
        ax.set_title(title, fontsize=9)

    strip(axA, M, pid_m, BLOCK_M, f"A (M={M}, K/2={KH}): rows of pid_m={pid_m}")
    strip(axB, N, pid_n, BLOCK_N, f"B (N={N}, K/2={KH}): rows of pid_n={pid_n}")
    axA.set_ylabel("row")

    for t in tile_grid(M, N, BLOCK_M, BLOCK_N):
        x0, y0 = t["pid_n"] * BLOCK_N, t["pid_m"] * BLOCK_M
        me = (t["pid_m"], t["pid_n"]) == (pid_m, pid_n)
        axC.add_patch(Rectangle((x0, y0), t["cols"], t["rows"],
                                facecolor="tab:green" if me else "white", alpha=0.6 if me else 1,
                                edgecolor="black", linewidth=0.6))
        if t["masked"]:                 # the lanes past M or N: masked on load and store
            axC.add_patch(Rectangle((x0, y0), BLOCK_N, BLOCK_M, facecolor="none",
                                    edgecolor="gray", linewidth=0.4, linestyle=":"))
        axC.text(x0 + min(BLOCK_N, t["cols"]) / 2, y0 + min(BLOCK_M, t["rows"]) / 2,
                 f"{t['pid_m']},{t['pid_n']}", ha="center", va="center", fontsize=7)
    for xy, wh in (((N, 0), (gn * BLOCK_N - N, gm * BLOCK_M)),
                   ((0, M), (N, gm * BLOCK_M - M))):
        if wh[0] > 0 and wh[1] > 0:
            axC.add_patch(Rectangle(xy, *wh, facecolor="none", edgecolor="tab:red",
                                    hatch="///", linewidth=0))
    axC.set_xlim(-1, gn * BLOCK_N + 1)
    axC.set_ylim(gm * BLOCK_M + 1, -1)
    axC.set_xlabel("column n of C")
    axC.set_title(f"C (M={M}, N={N}): grid {gm} x {gn} programs\n"
                  "(hatched: lanes past M or N, masked)", fontsize=9)
    for ax in (axA, axB, axC):
        ax.set_aspect("equal")
    steps = math.ceil(KH / BLOCK_K)
    fig.suptitle(f"program ({pid_m}, {pid_n}) runs {steps} K steps of {BLOCK_K} bytes: "
                 f"2 int8 dots each (low nibbles, high nibbles) into one int32 tile of C{past}",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The roofline

GEMM_KINDS = {
    # name: (bytes per A/B value, peak TFLOP/s key, label)
    "bf16": (2.0, "bf16_tflops", "bf16 GEMM (cuBLAS)"),
    "int4_in_int8": (1.0, "int8_tops", "INT4 stored as int8"),
    "int4_packed": (0.5, "int8_tops", "INT4 packed, 2 per byte"),
}


def gemm_cost(M, N, K, kind, out_bytes=2):
    """FLOPs, bytes moved (A and B once each, C written once in bf16, scales) and arithmetic
    intensity (FLOP per byte) of an (M x K) by (K x N) GEMM of the given kind. The ideal: each
    operand crosses HBM once (the tiles' re-reads hit the caches)."""
    bpv = GEMM_KINDS[kind][0]
    flops = 2.0 * M * N * K
    moved = bpv * (M * K + N * K) + out_bytes * M * N
    if kind != "bf16":
        moved += 4.0 * (M + N)                          # fp32 scales, one per row
    return {"flops": flops, "bytes": moved, "intensity": flops / moved}


def attainable_tflops(intensity, peak_tflops, hbm_tbs=H200["hbm_tbs"]):
    """The roofline: min(peak, bandwidth x intensity); TB/s x FLOP/B = TFLOP/s."""
    return min(peak_tflops, hbm_tbs * intensity)


def ridge_point(peak_tflops, hbm_tbs=H200["hbm_tbs"]):
    """The intensity (FLOP/byte) where memory stops being the limit."""
    return peak_tflops / hbm_tbs


def roofline_points(size, kinds=tuple(GEMM_KINDS)):
    """Square GEMM size^3 of each kind: its intensity and attainable TFLOP/s on an H200."""
    out = {}
    for kind in kinds:
        c = gemm_cost(size, size, size, kind)
        peak = H200[GEMM_KINDS[kind][1]]
        out[kind] = {**c, "peak": peak, "attainable": attainable_tflops(c["intensity"], peak)}
    return out


def roofline_figure(size=4096, sizes=(256, 1024, 4096)):
    """H200 rooflines for bf16 (989) and INT8 (1979, where INT4 runs on Hopper), with the
    GEMMs of each kind at `sizes` (small markers) and at `size` (large markers, labelled)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    fig = Figure(figsize=(9, 4.6))
    ax = fig.add_subplot()
    ai = [2 ** (p / 4) for p in range(0, 4 * 14 + 1)]             # 1 .. 16384 FLOP/byte
    roofs = (("bf16 tensor cores: 989 TFLOP/s", H200["bf16_tflops"], "tab:blue"),
             ("int8 tensor cores (INT4 on Hopper): 1979 TOPS", H200["int8_tops"], "tab:green"))
    for label, peak, c in roofs:
        ax.plot(ai, [attainable_tflops(a, peak) for a in ai], color=c, linewidth=1.5,
                label=f"{label}; ridge at {ridge_point(peak):.0f} FLOP/B")
    styles = {"bf16": ("o", "tab:blue"), "int4_in_int8": ("s", "tab:olive"),
              "int4_packed": ("^", "tab:green")}
    for s in sorted(set(sizes)):
        for kind, p in roofline_points(s).items():
            m, c = styles[kind]
            ax.plot([p["intensity"]], [p["attainable"]], m, color=c, markersize=5, alpha=0.5)
            if kind == "bf16":
                ax.annotate(f"{s}", (p["intensity"], p["attainable"]), fontsize=7, color="gray",
                            textcoords="offset points", xytext=(-4, -12))
    for kind, p in roofline_points(size).items():
        m, c = styles[kind]
        ax.plot([p["intensity"]], [p["attainable"]], m, color=c, markersize=11,
                markeredgecolor="black",
                label=f"{GEMM_KINDS[kind][2]} at {size}^3: {p['intensity']:.0f} FLOP/B, "
                      f"<= {p['attainable']:.0f} TFLOP/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("arithmetic intensity (FLOP per byte of HBM traffic)")
    ax.set_ylabel("attainable TFLOP/s (TOPS)")
    ax.set_ylim(4, 4096)
    b, i4 = roofline_points(size)["bf16"], roofline_points(size)["int4_packed"]
    ax.set_title(f"H200 roofline (HBM 4.8 TB/s): at {size}^3 the INT4 ceiling is "
                 f"{i4['attainable'] / b['attainable']:.2f}x bf16's (never more than 2x)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The error of a quantized GEMM

def gaussian_operands(M=128, N=128, K=512, outlier=1.0, channels=(5, 77), seed=0):
    """X (M, K) and W (N, K) with N(0, 1) entries; X's `channels` columns scaled by `outlier`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    w = torch.randn(N, K, generator=g)
    ch = [c for c in channels if 0 <= c < K]
    if ch and outlier != 1.0:
        x[:, ch] *= float(outlier)
    return x, w


@single_threaded
def quantized_gemm(x, w, bits=4, granularity="row"):
    """Y ~ X Wᵀ through integer codes: quantize both operands (round to nearest, one scale per
    row or per tensor), multiply the codes exactly, scale. For INT4 this is the course's
    pipeline: pack, then int4lab.spec.quantizers.int4_matmul_spec."""
    qx, sx = quantize(x, bits=bits, granularity=granularity)
    qw, sw = quantize(w, bits=bits, granularity=granularity)
    if bits == 4:
        return int4_matmul_spec(pack_int4(qx), sx, pack_int4(qw), sw)
    acc = qx.double() @ qw.double().T
    sw = sw.reshape(1, -1) if sw.dim() else sw
    return (acc * sx.double() * sw.double()).float()


def relative_error(approx, exact):
    """||approx - exact|| / ||exact|| (Frobenius)."""
    return float((approx.double() - exact.double()).norm() / exact.double().norm())


@single_threaded
def gemm_errors(outlier=1.0, M=128, N=128, K=512, seed=0):
    """Relative error vs the fp32 product of INT8 and INT4 GEMMs, per row and per tensor."""
    x, w = gaussian_operands(M, N, K, outlier, seed=seed)
    exact = x @ w.T
    return {f"int{bits} per {gran}": relative_error(quantized_gemm(x, w, bits, gran), exact)
            for bits in (8, 4) for gran in ("row", "tensor")}


def gemm_error_figure(outlier=1.0, K=512):
    """Left: entries of the INT4 (per row) product against the fp32 ones. Right: the relative
    error of INT8 and INT4 GEMMs, per row and per tensor, as X's outlier channels grow."""
    from matplotlib.figure import Figure

    mags = [1, 2, 5, 10, 20, 50, 100]
    curves = {}
    for m in mags:
        for name, e in gemm_errors(m, K=K).items():
            curves.setdefault(name, []).append(e)
    here = gemm_errors(outlier, K=K)
    x, w = gaussian_operands(K=K, outlier=outlier)
    exact = x @ w.T
    approx = quantized_gemm(x, w, 4, "row")
    colors = {"int8 per row": "tab:blue", "int8 per tensor": "tab:cyan",
              "int4 per row": "tab:orange", "int4 per tensor": "tab:red"}

    fig = Figure(figsize=(11, 3.9))
    ax0, ax = fig.subplots(1, 2)
    e, a = exact.reshape(-1)[::7].numpy(), approx.reshape(-1)[::7].numpy()
    ax0.scatter(e, a, s=2, color="tab:orange", alpha=0.5)
    lim = float(abs(e).max()) * 1.05
    ax0.plot([-lim, lim], [-lim, lim], color="black", linewidth=0.8)
    ax0.set_xlabel("Y = X Wᵀ in fp32")
    ax0.set_ylabel("INT4 per-row GEMM")
    ax0.set_title(f"128 x 128, K = {K}, outliers x{outlier:g}: error "
                  f"{here['int4 per row']:.1%} of ||Y||", fontsize=9)

    for name, ys in curves.items():
        ax.plot(mags, ys, "o-", color=colors[name], label=f"{name}: {here[name]:.1%} at x{outlier:g}")
        ax.plot([outlier], [here[name]], "*", color=colors[name], markersize=13,
                markeredgecolor="black")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("magnitude of 2 outlier channels of X (x times the others)")
    ax.set_ylabel("||Y_q - Y|| / ||Y||")
    ratio = here["int4 per row"] / here["int8 per row"]
    ax.set_title(f"INT4 per row: {ratio:.0f}x the error of INT8 per row at outliers x{outlier:g} "
                 f"(15 levels, not 255)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig

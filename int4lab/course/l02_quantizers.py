"""Lesson 02's helpers: scale groups (tensor, row, block), rounding (nearest vs stochastic), LSQ.

Every number comes from the library's spec (int4lab.spec.quantizers: quantize, dequantize, lsq_quantize,
lsq_init_scale, lsq_step_size_term), so the plots show what the course's kernels compute. The
figures are built with matplotlib.figure.Figure (no pyplot): they render headless and in tests.
"""
import math

import torch

from int4lab.course.common import single_threaded
from int4lab.spec.quantizers import (
    QMAX,
    dequantize,
    lsq_grad_scale,
    lsq_init_scale,
    lsq_quantize,
    lsq_step_size_term,
    make_generator,
    quantize,
)

GRANULARITY_COLORS = {"tensor": "tab:red", "row": "tab:orange", "block": "tab:green"}


# ---------------------------------------------------------------------------------------------
# Scale groups: per tensor, per row, per block

def outlier_activations(rows=64, cols=256, outlier=20.0, channels=(37, 200), seed=0):
    """Activations shaped like a transformer's X (tokens x channels): N(0, 1) everywhere, except
    a few outlier *channels* (columns) whose values are `outlier` times larger in every token.

    Large language models show exactly this pattern: a handful of hidden dimensions carry
    values 10-100x larger than the rest, in every token.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    ch = [c for c in channels if 0 <= c < cols]
    if ch:
        x[:, ch] *= float(outlier)
    return x


def bits_per_value(granularity, K, block_size=32, bits=4, scale_bits=32):
    """Storage cost per value: the code plus its share of an fp32 scale."""
    group = {"tensor": float("inf"), "row": K, "block": block_size}[granularity]
    return bits + scale_bits / group


@single_threaded
def granularity_errors(x, block_size=32, bits=4, channels=(37, 200)):
    """Quantize x (2-D) per tensor, per row and per block (round to nearest) and measure.

    Returns {granularity: {"rel_error": RMS error / RMS value over the ordinary channels
    (the outlier channels excluded), "column_error": RMS error of each column (a tensor of
    length cols), "levels_used": distinct codes used by the ordinary channels,
    "bits_per_value": storage with fp32 scales}}.
    """
    cols = x.shape[-1]
    keep = torch.ones(cols, dtype=torch.bool)
    keep[[c for c in channels if 0 <= c < cols]] = False
    out = {}
    for gran in ("tensor", "row", "block"):
        codes, scales = quantize(x, bits=bits, granularity=gran, block_size=block_size)
        err = dequantize(codes, scales) - x
        bulk_err, bulk = err[:, keep], x[:, keep]
        out[gran] = {
            "rel_error": float(bulk_err.pow(2).mean().sqrt() / bulk.pow(2).mean().sqrt()),
            "column_error": err.pow(2).mean(0).sqrt(),
            "levels_used": int(codes[:, keep].unique().numel()),
            "bits_per_value": bits_per_value(gran, cols, block_size, bits),
        }
    return out


@single_threaded
def granularity_figure(outlier=20.0, block_size=32, rows=64, cols=256, seed=0):
    """Left: the error of the ordinary channels vs the outlier magnitude, per granularity.
    Right: the RMS error of every channel (column) at the chosen magnitude and block size."""
    from matplotlib.figure import Figure

    channels = (37, 200)
    mags = [1, 2, 5, 10, 20, 50, 100]
    curves = {g: [] for g in GRANULARITY_COLORS}
    for m in mags:
        e = granularity_errors(outlier_activations(rows, cols, m, channels, seed), block_size,
                               channels=channels)
        for g in curves:
            curves[g].append(e[g]["rel_error"])
    here = granularity_errors(outlier_activations(rows, cols, outlier, channels, seed),
                              block_size, channels=channels)

    fig = Figure(figsize=(11, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    for g, c in GRANULARITY_COLORS.items():
        label = (f"per {g}" + (f" ({block_size})" if g == "block" else "")
                 + f": {here[g]['bits_per_value']:.2f} bits/value")
        ax.plot(mags, curves[g], "o-", color=c, label=label)
        ax.plot([outlier], [here[g]["rel_error"]], "*", color=c, markersize=13,
                markeredgecolor="black")
    ax.set_xscale("log")
    ax.set_xlabel("outlier channel magnitude (x times the others)")
    ax.set_ylabel("RMS error / RMS value\n(ordinary channels)")
    ax.set_ylim(0, max(max(v) for v in curves.values()) * 1.1)
    ax.set_title("one outlier sets the step of its whole group", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    cols_idx = torch.arange(cols).numpy()
    for g, c in GRANULARITY_COLORS.items():
        ax2.plot(cols_idx, here[g]["column_error"].numpy(), color=c, linewidth=1,
                 label=f"per {g}: {here[g]['levels_used']} levels used")
    for ch in channels:
        ax2.axvline(ch, color="gray", linestyle=":", linewidth=0.8)
    ax2.set_yscale("log")
    ax2.set_xlabel(f"channel (dotted: the outlier channels {channels[0]} and {channels[1]})")
    ax2.set_ylabel("RMS error of the channel")
    ax2.set_title(f"outliers x{outlier:g}, blocks of {block_size}: the damage stays in the "
                  "outlier's group", fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Round to nearest vs stochastic rounding

def rounded_draws(values, samples=2000, rounding="nearest", seed=0):
    """Round each value `samples` times on the INT4 grid with step 1 (scale=1.0), through the
    library's quantize: a (samples, len(values)) fp32 tensor of the rounded values."""
    v = torch.as_tensor(values, dtype=torch.float32).reshape(1, -1).expand(samples, -1).contiguous()
    gen = make_generator(seed) if rounding == "stochastic" else None
    codes, scale = quantize(v, bits=4, granularity="tensor", rounding=rounding, generator=gen,
                            scale=1.0)
    return dequantize(codes, scale)


@single_threaded
def rounding_bias_variance(values, samples=2000, seed=0):
    """Per value v (in units of the step): bias E[r] - v, variance Var[r] and MSE E[(r - v)^2]
    of round-to-nearest and stochastic rounding, estimated from `samples` draws."""
    v = torch.as_tensor(values, dtype=torch.float32)
    out = {}
    for mode in ("nearest", "stochastic"):
        r = rounded_draws(v, samples, mode, seed)
        out[mode] = {"bias": r.mean(0) - v, "var": r.var(0, unbiased=False),
                     "mse": (r - v).pow(2).mean(0)}
    return out


@single_threaded
def small_values_sum(ratio=0.1, n=4096, trials=20, seed=0):
    """A gradient-like tensor: one large value (it sets the per-tensor scale, s = max|g| / 7) and
    n - 1 small ones, all positive, of mean `ratio * s`. Returns the true sum of the small values
    and, per rounding, the mean and spread over `trials` of the sum after INT4 quantization."""
    g = torch.Generator().manual_seed(seed)
    s = 1.0
    x = torch.empty(n)
    x[1:] = ratio * s * 2 * torch.rand(n - 1, generator=g)     # mean ratio * s
    x[0] = QMAX[4] * s
    true = float(x[1:].sum())
    out = {"true": true}
    for mode in ("nearest", "stochastic"):
        sums = []
        for t in range(trials if mode == "stochastic" else 1):
            gen = make_generator(seed * 1000 + t) if mode == "stochastic" else None
            codes, scale = quantize(x, granularity="tensor", rounding=mode, generator=gen)
            sums.append(float(dequantize(codes, scale)[1:].sum()))
        t = torch.tensor(sums)
        out[mode] = {"mean": float(t.mean()), "std": float(t.std()) if len(sums) > 1 else 0.0}
    return out


@single_threaded
def rounding_figure(samples=20000, seed=0):
    """Left: bias of each rounding vs the value (log scale: small values are where RTN fails).
    Right: their mean squared error, and the SR variance f(1 - f) of theory."""
    from matplotlib.figure import Figure

    v = torch.logspace(-2, math.log10(3.0), 121)
    st = rounding_bias_variance(v, samples, seed)
    vn = v.numpy()
    fig = Figure(figsize=(11, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(vn, (st["nearest"]["bias"] / v).numpy(), color="tab:orange",
            label="round to nearest")
    ax.plot(vn, (st["stochastic"]["bias"] / v).numpy(), color="tab:blue",
            label=f"stochastic (mean of {samples} draws)")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0.5, color="gray", linestyle=":", linewidth=0.8)
    ax.text(0.48, -0.9, "v < s/2 rounds to 0 ", ha="right", fontsize=8, color="tab:orange")
    ax.set_xscale("log")
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel("value v (in units of the step s)")
    ax.set_ylabel("relative bias (E[round(v)] - v) / v")
    ax.set_title("RTN is biased, worst for small values (-100%); SR is unbiased", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    frac = v - v.floor()
    ax2.plot(vn, st["nearest"]["mse"].numpy(), color="tab:orange", label="RTN: error^2 (no variance)")
    ax2.plot(vn, st["stochastic"]["mse"].numpy(), color="tab:blue", label="SR: mean error^2 = variance")
    ax2.plot(vn, (frac * (1 - frac)).numpy(), color="black", linestyle="--", linewidth=0.8,
             label="theory f(1 - f), f = frac(v)")
    ax2.set_xscale("log")
    ax2.set_xlabel("value v (in units of the step s)")
    ax2.set_ylabel("mean squared error (units of s^2)")
    ax2.set_title("the price of no bias: SR's variance is larger than RTN's error", fontsize=9)
    ax2.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# LSQ: a learned step size

def lsq_mse(x, scale, qmax=7):
    """Mean squared error of LSQ fake quantization with a given scale (no gradient)."""
    with torch.no_grad():
        return float((lsq_quantize(x, torch.tensor(float(scale)), qmax) - x).pow(2).mean())


@single_threaded
def lsq_fit(x, steps=150, lr=30.0, init="absmax", qmax=7):
    """Learn the step size of x alone by SGD on the MSE ||s*int(x/s) - x||^2 / n, through the
    library's lsq_quantize (STE + LSQ gradient, scaled by 1 / sqrt(numel * Q_P)).

    init: "absmax" (max|x| / Q_P) or "lsq" (2 mean|x| / sqrt(Q_P)). Returns {"scales": the
    scale before each step and after the last, "losses": the loss at each step}.
    A stand-in for training: in a network the loss is the task loss, not this MSE.
    """
    s0 = float(x.abs().max()) / qmax if init == "absmax" else float(lsq_init_scale(x, qmax))
    s = torch.tensor(s0, requires_grad=True)
    scales, losses = [s0], []
    for _ in range(steps):
        loss = (lsq_quantize(x, s, qmax) - x).pow(2).mean()
        loss.backward()
        with torch.no_grad():                       # plain SGD: s <- s - lr * dL/ds
            s -= lr * s.grad
            s.clamp_(min=1e-6)
        s.grad = None
        scales.append(float(s.detach()))
        losses.append(float(loss.detach()))
    return {"scales": scales, "losses": losses}


def lsq_sample(n=4096, outlier=10.0, n_outliers=8, seed=0):
    """N(0, 1) values with `n_outliers` of them multiplied by `outlier`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    x[:n_outliers] *= float(outlier)
    return x


@single_threaded
def lsq_staircase_figure(qmax=7):
    """Left: LSQ's forward x_hat = s*round(clamp(x/s)) (s = 1) and the STE's pass-through mask.
    Right: d x_hat / d s per element: round(v) - v inside the range, +-Q_P where clipped."""
    from matplotlib.figure import Figure

    s = 1.0
    x = torch.linspace(-(qmax + 3), qmax + 3, 2001)
    xr = x.clone().requires_grad_(True)
    y = lsq_quantize(xr, torch.tensor(s), qmax)
    y.sum().backward()
    mask = xr.grad                                     # dL/dx with dL/dy = 1: the STE mask
    v = x / s
    codes = torch.round(v.clamp(-qmax, qmax))
    term = lsq_step_size_term(v, codes, (v >= -qmax) & (v <= qmax))

    fig = Figure(figsize=(11, 3.6))
    ax, ax2 = fig.subplots(1, 2)
    xn = x.numpy()
    ax.plot(xn, y.detach().numpy(), color="tab:blue", label="forward: x_hat")
    ax.plot(xn, xn, color="gray", linestyle=":", linewidth=0.8, label="x")
    ax.plot(xn, (mask * qmax).numpy(), color="tab:green", linewidth=1,
            label=f"backward: d x_hat / d x (x {qmax} to show)")
    ax.axvspan(-(qmax + 3), -qmax, color="tab:red", alpha=0.08)
    ax.axvspan(qmax, qmax + 3, color="tab:red", alpha=0.08, label="clipped: gradient 0")
    ax.set_xlabel("x (step s = 1)")
    ax.set_title(f"forward rounds and clips at +-{qmax}s; the STE passes the gradient "
                 "where not clipped", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    ax2.plot(xn, term.numpy(), color="tab:purple")
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_xlabel("v = x / s")
    ax2.set_ylabel("d x_hat / d s")
    ax2.set_title("LSQ's step-size gradient: round(v) - v inside, +-Q_P when clipped",
                  fontsize=9)
    fig.tight_layout()
    return fig


@single_threaded
def lsq_figure(outlier=10.0, lr=30.0, steps=150, seed=0):
    """Left: MSE vs step size s, with the absmax scale, LSQ's init 2 mean|x|/sqrt(7), and the
    scale SGD learns from the absmax start. Right: the learned scale step by step."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    x = lsq_sample(outlier=outlier, seed=seed)
    qmax = QMAX[4]
    s_absmax = float(x.abs().max()) / qmax
    s_init = float(lsq_init_scale(x, qmax))
    fit = lsq_fit(x, steps=steps, lr=lr, init="absmax", qmax=qmax)
    s_learned = fit["scales"][-1]
    lo, hi = 0.2 * min(s_init, s_learned), 1.3 * max(s_absmax, s_learned)
    grid = torch.logspace(math.log10(lo), math.log10(hi), 120)
    mses = [lsq_mse(x, float(s), qmax) for s in grid]
    best = float(grid[min(range(len(mses)), key=mses.__getitem__)])

    fig = Figure(figsize=(11, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(grid.numpy(), mses, color="black", linewidth=1, label="MSE(s)")
    marks = (("absmax: max|x| / 7", s_absmax, "tab:red"),
             ("LSQ init: 2 mean|x| / sqrt(7)", s_init, "tab:blue"),
             (f"learned ({steps} SGD steps, lr {lr:g})", s_learned, "tab:green"),
             ("best on the grid", best, "gray"))
    for label, s, c in marks:
        ax.plot([s], [lsq_mse(x, s, qmax)], "o", color=c, markersize=8,
                label=f"{label}: s = {s:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step size s")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"{x.numel()} values ~ N(0, 1), 8 of them x{outlier:g}: "
                 "a smaller s clips the outliers", fontsize=9)
    ax.legend(fontsize=7, loc="best")

    ax2.plot(range(len(fit["scales"])), fit["scales"], color="tab:green", label="learned s")
    ax2.axhline(best, color="gray", linestyle="--", linewidth=0.8, label="best on the grid")
    ax2.axhline(s_init, color="tab:blue", linestyle=":", linewidth=0.8, label="LSQ init")
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("s")
    ax2.set_title(f"gradient scale 1/sqrt(numel * Q_P) = {lsq_grad_scale(x.numel(), qmax):.4f}",
                  fontsize=9)
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig

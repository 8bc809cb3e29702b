"""Lesson 06's helpers: real gradients of a small GPT, and what INT4 does to them.

Everything is computed by the library: int4lab.training.loop trains the model, int4lab.spec.quantizers quantizes
per tensor, int4lab.spec.gradients does bit splitting (BS) and leverage score sampling (LSS) and
gives their exact expectation and variance, int4lab.layers.Int4Linear runs the paper's backward
(Xi, Li, Chen, Zhu, "Training Transformers with 4-bit Integers", NeurIPS 2023, sec. 5). The
figures are built with matplotlib.figure.Figure (no pyplot): they render headless and in tests.
"""
import math

import torch
import torch.nn as nn

from int4lab.course.common import one_thread
from int4lab.spec.gradients import (
    bit_split,
    bit_split_dequantize,
    bit_split_mean,
    bit_split_scale,
    lss_probabilities,
    lss_variance,
    lss_weight_grad,
    stack_bit_split,
    weight_grad_probs,
)
from int4lab.spec.quantizers import fake_quantize, make_generator

#: The estimators of dW = dY^T X that unbiasedness_curves compares, in plotting order.
ESTIMATORS = ("INT4 round-to-nearest", "INT4 stochastic", "bit splitting (clamp 6, released code)",
              "bit splitting (clamp 7)", "bit splitting + LSS (the paper)")

#: Small GPT settings for the gradient capture: one block, width 32, 32 windows of 32 characters.
GPT_SETTINGS = dict(block_size=32, batch_size=32, n_layer=1, n_head=4, n_embd=32, lr=3e-3,
                    warmup_steps=10)


def _rel(a, b):
    nb = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / nb if nb > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Capturing X and dY of every linear layer in a real backward pass

def capture_linear_io(model, *inputs):
    """One forward and backward of model(*inputs) (which must return (out, loss)); returns
    {layer name: {"x": X (N, D), "g": dY (N, C), "module": the layer}} for every nn.Linear,
    with the leading dims (batch, tokens) flattened into N rows."""
    io, handles = {}, []

    def on_forward(name):
        def hook(mod, inp, out):
            io.setdefault(name, {"module": mod})["x"] = inp[0].detach().reshape(-1, inp[0].shape[-1])
        return hook

    def on_backward(name):
        def hook(mod, grad_in, grad_out):
            g = grad_out[0].detach()
            io.setdefault(name, {"module": mod})["g"] = g.reshape(-1, g.shape[-1])
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(on_forward(name)))
            handles.append(mod.register_full_backward_hook(on_backward(name)))
    try:
        model.zero_grad(set_to_none=True)
        _, loss = model(*inputs)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in io.items() if "x" in v and "g" in v}


def trained_gradients(task="text", steps=60, seed=0, **overrides):
    """Train a small model in fp32 for `steps` steps (int4lab.training.loop), then capture X and dY of
    every linear layer on one fresh training batch. Returns (io, train result)."""
    from int4lab.training import data as D
    from int4lab.training.loop import TrainConfig, get_batch, train

    settings = dict(GPT_SETTINGS) if task == "text" else dict(
        batch_size=32, n_layer=1, n_head=4, n_embd=32, lr=3e-3, warmup_steps=10)
    settings.update(overrides)
    cfg = TrainConfig(task=task, recipe="fp32", steps=steps, eval_every=max(steps, 1), eval_batches=1,
                      seed=seed, progress=False, device="cpu", **settings)
    with one_thread():
        result = train(cfg)
        dataset = D.load_text() if task == "text" else D.load_digits()
        x, y = get_batch(cfg, dataset, steps + 1000)            # a batch training never saw
        return capture_linear_io(result.model, x, y), result


def row_norms(g):
    """||g_i|| for every row (token) of a 2-D gradient."""
    return torch.linalg.vector_norm(g.float(), dim=1)


def row_stats(g, top=0.1):
    """How concentrated dY's rows are: max/median row norm, the share of ||dY||_F^2 held by the
    top `top` fraction of rows, and the share of rows that are exactly zero."""
    n = row_norms(g)
    s = n.sort(descending=True).values
    energy = s.pow(2)
    k = max(1, int(round(top * len(s))))
    med = float(s.median())
    return {"rows": len(s), "max_over_median": float(s[0]) / med if med > 0 else math.inf,
            "top_share": float(energy[:k].sum() / energy.sum()) if energy.sum() > 0 else 0.0,
            "zero_rows": float((n == 0).float().mean())}


def row_norm_figure(io, layers=None):
    """Left: each layer's row norms of dY, sorted, relative to the largest (log scale).
    Right: the share of ||dY||_F^2 held by the largest rows (the diagonal: every row equal)."""
    from matplotlib.figure import Figure

    layers = list(layers or io)
    fig = Figure(figsize=(10, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    for i, name in enumerate(layers):
        s = row_norms(io[name]["g"]).sort(descending=True).values
        if float(s[0]) == 0:
            continue
        frac = (torch.arange(len(s)) + 1).float() / len(s)
        ax.plot(frac.numpy(), (s / s[0]).clamp_min(1e-6).numpy(), color=f"C{i}", label=name)
        energy = s.pow(2).cumsum(0) / s.pow(2).sum()
        ax2.plot(frac.numpy(), energy.numpy(), color=f"C{i}", label=name)
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.5)
    ax.set_xlabel("rows (tokens), largest first, as a fraction of all rows")
    ax.set_ylabel("||dY_i|| / max_j ||dY_j||")
    ax.set_title("row norms of dY, sorted: a few rows are large", fontsize=9)
    ax.legend(fontsize=7)
    ax2.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8, label="all rows equal")
    ax2.set_xlabel("fraction of rows, largest first")
    ax2.set_ylabel("share of ||dY||_F^2")
    ax2.set_title("how much of the gradient the largest rows hold", fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Per-tensor INT4 on a gradient, and bit splitting

def quantized_versions(g, seed=0):
    """dY as three quantizers represent it (dequantized): INT4 round to nearest and INT4
    stochastic (one per-tensor scale max|g|/7), and bit splitting (two INT4 halves)."""
    gen = make_generator(seed)
    return {"INT4 round-to-nearest": fake_quantize(g, bits=4, granularity="tensor"),
            "INT4 stochastic": fake_quantize(g, bits=4, granularity="tensor", rounding="stochastic",
                                             generator=gen),
            "bit splitting": bit_split_dequantize(bit_split(g, generator=gen))}


def row_errors(g, seed=0):
    """Per-row relative error ||q(g)_i - g_i|| / ||g_i|| of each quantizer (rows with g_i = 0
    left out), with the row norms relative to the largest: (rel_norms, {name: errors})."""
    n = row_norms(g)
    keep = n > 0
    out = {}
    for name, q in quantized_versions(g, seed).items():
        out[name] = (row_norms(q - g.float()) / n.clamp_min(1e-30))[keep]
    return (n / n.max())[keep], out


def zeroed_rows(g):
    """The share of non-zero rows of g that per-tensor INT4 round-to-nearest turns into zeros."""
    q = fake_quantize(g, bits=4, granularity="tensor")
    nz = row_norms(g) > 0
    return float(((row_norms(q) == 0) & nz).sum()) / max(1, int(nz.sum()))


def row_error_figure(g, seed=0):
    """Each row's relative error against its size: per-tensor INT4 erases the small rows
    (round to nearest: error 1) or drowns them in noise (stochastic: error >> 1); bit
    splitting has 14 times finer steps."""
    from matplotlib.figure import Figure

    rel_norms, errors = row_errors(g, seed)
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    styles = {"INT4 round-to-nearest": ("tab:red", "x"), "INT4 stochastic": ("tab:orange", "."),
              "bit splitting": ("tab:green", ".")}
    for name, err in errors.items():
        color, marker = styles[name]
        ax.scatter(rel_norms.numpy(), err.clamp_min(1e-4).numpy(), s=6, color=color, marker=marker,
                   label=name, alpha=0.6)
    ax.axhline(1.0, color="black", linewidth=0.7, linestyle="--")
    ax.text(rel_norms.min().item(), 1.1, "error 1 = the row is lost", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("row norm ||dY_i|| / max_j ||dY_j||")
    ax.set_ylabel("relative error of the row")
    ax.set_title("per-tensor INT4 on a real gradient: the small rows are lost", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    return fig


def bit_split_bias(n=4001, clamp=6):
    """v = g s over [-98, 98] (the whole range: s maps max|g| to 98) and the exact bias
    E[bit_split(g)] - g in lo steps (1/s), from int4lab.spec.gradients.bit_split_mean."""
    v = torch.linspace(-98, 98, n)
    g = v / 98.0                    # max|g| = 1, so s = 98 exactly and v = g s
    s = float(bit_split_scale(g))
    bias = (bit_split_mean(g, clamp=clamp) - g) * s
    return v, bias


def bit_split_bias_figure(n=4001):
    """The exact bias of bit splitting over its whole range, with the released code's clamp
    [-6, 6] and with [-7, 7]."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    ax, ax2 = fig.subplots(1, 2)
    for clamp, color, style in ((6, "tab:red", "-"), (7, "tab:green", "--")):
        v, bias = bit_split_bias(n, clamp)
        for a in (ax, ax2):
            a.plot(v.numpy(), bias.numpy(), color=color, linestyle=style, label=f"clamp [-{clamp}, {clamp}]")
    ax.set_xlabel("v = dY · s   (s maps max|dY| to 98 = 14·7)")
    ax.set_ylabel("E[bit split] − dY   (in lo steps, 1/s)")
    ax.set_title("exact bias of bit splitting: only the largest values", fontsize=9)
    ax.legend(fontsize=8)
    ax2.set_xlim(0, 42)
    ax2.set_ylim(-1.2, 1.2)
    ax2.set_xlabel("v (zoom on 0..42)")
    ax2.set_title("and a step-wide window around 7 + 14k (|lo| would be 7)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Leverage score sampling

def stacked_rows(g, x, clamp=6, seed=0):
    """The 2N rank-1 terms of dW = dY^T X after bit splitting: rows [s_hi hi; s_lo lo] and [X; X]."""
    bs = bit_split(g, generator=make_generator(seed), clamp=clamp)
    return stack_bit_split(bs), torch.cat([x.float(), x.float()])


def uniform_probs(rows, budget):
    """The same budget spread evenly over the non-zero rows (p_i = const), for comparison."""
    nz = row_norms(rows) > 0
    p = torch.zeros(rows.shape[0])
    p[nz] = min(1.0, budget / max(1, int(nz.sum())))
    return p


def empirical_variance(g_rows, x_rows, probs, draws=200, seed=0):
    """E||LSS estimate - G^T X||_F^2 measured over `draws` seeded draws (lss_weight_grad)."""
    exact = g_rows.T @ x_rows
    gen = make_generator(seed)
    total = 0.0
    for _ in range(draws):
        total += float((lss_weight_grad(g_rows, x_rows, probs, generator=gen) - exact).pow(2).sum())
    return total / draws


def variance_curves(g, x, budgets, seed=0):
    """For each budget (in units of N tokens; the 2N stacked rows keep `budget * N` on average):
    lss_variance / ||dY^T X||^2 with LSS's p_i ~ ||g_i|| ||x_i|| and with uniform p_i."""
    rows, xr = stacked_rows(g, x, seed=seed)
    n = g.shape[0]
    exact2 = float((rows.T @ xr).pow(2).sum())
    out = {"budgets": list(budgets), "LSS": [], "uniform": []}
    for b in budgets:
        out["LSS"].append(lss_variance(rows, xr, weight_grad_probs(rows, xr, b * n)) / exact2)
        out["uniform"].append(lss_variance(rows, xr, uniform_probs(rows, b * n)) / exact2)
    return out


def variance_figure(g, x, budget=1.0, seed=0, n_points=20):
    """Left: the keep-probabilities of the 2N stacked rows at this budget (sorted), LSS and
    uniform. Right: the relative variance of the dW estimate against the budget; the paper's
    budget is 1 (sum p = N: the two INT4 GEMMs cost about one)."""
    from matplotlib.figure import Figure

    rows, xr = stacked_rows(g, x, seed=seed)
    n = g.shape[0]
    p_lss = weight_grad_probs(rows, xr, budget * n).sort(descending=True).values
    p_uni = uniform_probs(rows, budget * n).sort(descending=True).values
    budgets = [round(0.1 + i * (1.9 / (n_points - 1)), 3) for i in range(n_points)]
    curves = variance_curves(g, x, budgets, seed)

    fig = Figure(figsize=(10, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    r = torch.arange(len(p_lss)).numpy()
    ax.plot(r, p_lss.numpy(), color="tab:blue", label=f"LSS, sum p = {float(p_lss.sum()):.0f}")
    ax.plot(r, p_uni.numpy(), color="tab:gray", linestyle="--",
            label=f"uniform, sum p = {float(p_uni.sum()):.0f}")
    ax.axvline(n, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlabel(f"stacked rows [hi; lo] (2N = {2 * n}), sorted by p")
    ax.set_ylabel("keep-probability p_i")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(f"budget {budget:g} N: {int((p_lss >= 1).sum())} rows always kept", fontsize=9)
    ax.legend(fontsize=8)
    # a variance of exactly 0 (every non-zero row kept) has no place on a log axis: left out
    for key, color, style, label in (("LSS", "tab:blue", "-", "LSS (p ~ ||g_i|| ||x_i||)"),
                                     ("uniform", "tab:gray", "--", "uniform p")):
        pts = [(b, v) for b, v in zip(curves["budgets"], curves[key]) if v > 0]
        ax2.plot([b for b, _ in pts], [v for _, v in pts], color=color, marker=".", linestyle=style,
                 label=label)
    ax2.axvline(budget, color="tab:red", linewidth=1, label=f"budget {budget:g} N")
    ax2.set_yscale("log")
    ax2.set_xlabel("budget: expected kept rows / N")
    ax2.set_ylabel("Var / ||dY^T X||^2   (lss_variance)")
    ax2.set_title("variance of the sampled dW (0, not drawn, once every\nnon-zero row is kept)",
                  fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lss_example():
    """A small worked example: norms (10, 4, 1, 1, 1, 1, 0) and budget 3 -> the clip-and-rescale
    result of lss_probabilities, with the pure proportional p_i for comparison."""
    norms = torch.tensor([10.0, 4.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    budget = 3
    return {"norms": norms, "budget": budget, "proportional": norms * budget / norms.sum(),
            "p": lss_probabilities(norms, budget)}


# ---------------------------------------------------------------------------------------------
# Unbiasedness: the mean of many seeded draws

def unbiasedness_curves(g, x, draws=64, seed=0):
    """Relative error ||mean of k estimates - dY^T X|| / ||dY^T X|| for k = 1..draws, for each
    estimator in ESTIMATORS, plus the exact bias of bit splitting with the released clamp
    (bit_split_mean, the floor that curve approaches)."""
    with one_thread():
        return _unbiasedness_curves(g.float(), x.float(), draws, seed)


def _unbiasedness_curves(g, x, draws, seed):
    exact = g.T @ x
    gen = make_generator(seed)
    sums = {name: torch.zeros_like(exact) for name in ESTIMATORS}
    curves = {name: [] for name in ESTIMATORS}
    rtn = fake_quantize(g, bits=4, granularity="tensor").T @ x       # deterministic
    xr = torch.cat([x, x])
    for k in range(1, draws + 1):
        sums["INT4 round-to-nearest"] += rtn
        sums["INT4 stochastic"] += fake_quantize(g, bits=4, granularity="tensor", rounding="stochastic",
                                                 generator=gen).T @ x
        sums[ESTIMATORS[3]] += bit_split_dequantize(bit_split(g, generator=gen, clamp=7)).T @ x
        bs = bit_split(g, generator=gen)
        sums[ESTIMATORS[2]] += bit_split_dequantize(bs).T @ x
        rows = stack_bit_split(bs)                 # the same split, then sampled: Sum p = N
        sums[ESTIMATORS[4]] += lss_weight_grad(rows, xr, weight_grad_probs(rows, xr), generator=gen)
        for name in ESTIMATORS:
            curves[name].append(_rel(sums[name] / k, exact))
    return {"draws": list(range(1, draws + 1)), "curves": curves,
            "bs_bias": _rel(bit_split_mean(g).T @ x, exact)}


def layer_unbiasedness(module, x, g, draws=32, seed=0, device=None):
    """The same question for the library's layer: Int4Linear with the paper's backward (HQ forward
    with a max scale, bit splitting + LSS) against the same forward with dY in full precision.
    Runs on `device` (default: int4lab's, the GPU if there is one, where the Triton kernels
    need their tensors). Returns relative errors of the running mean of dW, k = 1..draws."""
    from int4lab import runtime
    from int4lab.layers import Int4Linear, Recipe

    device = device or runtime.DEVICE
    x, g = x.to(device), g.to(device)
    paper = Int4Linear.from_linear(module, Recipe("hq_bs_lss", forward="int4_hq", grad="bs_lss",
                                                  hq_scale="max")).to(device)
    exact_layer = Int4Linear.from_linear(module, Recipe("hq_fp_grad", forward="int4_hq", grad="fp",
                                                        hq_scale="max")).to(device)

    def weight_grad(layer):
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)
        return layer.weight.grad.detach().clone()

    with one_thread():
        exact = weight_grad(exact_layer)
        torch.manual_seed(seed)           # the layer draws its seeds from torch's global generator
        total, errs = torch.zeros_like(exact), []
        for k in range(1, draws + 1):
            total += weight_grad(paper)
            errs.append(_rel(total / k, exact))
    return errs


def unbiasedness_figure(curves, layer_errors=None):
    """The running mean of k seeded draws against the exact dW: unbiased estimators fall as
    1/sqrt(k); a biased one stops at its bias."""
    from matplotlib.figure import Figure

    ks = curves["draws"]
    fig = Figure(figsize=(11, 4.2))
    ax = fig.add_subplot()
    styles = dict(zip(ESTIMATORS, (("tab:red", "-"), ("tab:orange", "-"), ("tab:blue", "-"),
                                   ("tab:green", "--"), ("black", "-"))))
    for name in ESTIMATORS:
        color, style = styles[name]
        ax.plot(ks, curves["curves"][name], color=color, linestyle=style, label=name)
    if layer_errors is not None:
        ax.plot(list(range(1, len(layer_errors) + 1)), layer_errors, color="tab:purple", linestyle="-.",
                label="Int4Linear, recipe HQ + BS + LSS (the layer)")
    first = curves["curves"]["INT4 stochastic"][0]
    ax.plot(ks, [first / math.sqrt(k) for k in ks], color="gray", linestyle=":", label="1/sqrt(k)")
    ax.axhline(curves["bs_bias"], color="tab:blue", linewidth=0.8, linestyle="--",
               label=f"exact bias of BS with clamp 6: {100 * curves['bs_bias']:.2f}%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("k, the number of seeded draws averaged")
    ax.set_ylabel("||mean of k estimates − dYᵀX|| / ||dYᵀX||")
    ax.set_title("unbiased estimators converge to the exact weight gradient; RTN never does", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig

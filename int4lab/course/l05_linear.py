"""Lesson 05's helpers: the straight-through estimator, and Int4Linear's recipes against fp32.

Everything runs the library: int4lab.spec.quantizers.lsq_quantize (an autograd.Function with the STE) and
int4lab.layers.Int4Linear (whose quantized operations go through the slots, so they run the
spec, the library's Triton kernels or the learner's, whichever is active). Figures are built
with matplotlib.figure.Figure (no pyplot): they render headless and in tests.
"""
import copy
import functools

import torch
import torch.nn as nn

from int4lab import runtime
from int4lab.course.l04_hadamard import bulk_columns, make_activations
from int4lab.layers import RECIPES, Int4Linear, get_recipe
from int4lab.spec.quantizers import lsq_quantize

#: The recipes in the order the lesson shows them: full precision first, the paper's last.
RECIPE_NAMES = tuple(RECIPES)

#: What each error of compare_recipes measures, for plot legends.
ERROR_LABELS = {"forward": "forward Y", "grad_x": "∇X", "grad_w": "∇W",
                "grad_w_normal": "∇W, non-outlier channels"}


# ---------------------------------------------------------------------------------------------
# The straight-through estimator

def ste_curves(scale=0.5, qmax=7, lo=-6.0, hi=6.0, n=1201):
    """x, the fake-quantized s * int(x) and d/dx as the STE gives it (via lsq_quantize's backward).

    Returns a dict of 1-D tensors: x, x_hat, ste_grad (1 where -Q s <= x <= Q s, else 0).
    """
    x = torch.linspace(lo, hi, n, requires_grad=True)
    x_hat = lsq_quantize(x, torch.tensor(float(scale)), qmax)
    x_hat.sum().backward()
    return {"x": x.detach(), "x_hat": x_hat.detach(), "ste_grad": x.grad.detach()}


def ste_figure(scale=0.5, qmax=7):
    """Left: the quantizer s * round(clamp(x / s, -Q, Q)), a staircase that clips at +-Q s.
    Right: its true derivative (0 almost everywhere) and the STE's (1 inside the range, 0 where
    clipped: the mask I_X)."""
    from matplotlib.figure import Figure

    c = ste_curves(scale, qmax)
    x = c["x"].numpy()
    fig = Figure(figsize=(10, 3.6))
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(x, x, color="gray", linestyle="--", linewidth=0.8, label="identity")
    ax.plot(x, c["x_hat"].numpy(), color="tab:blue", label="s * int(x)")
    for a in (ax, ax2):
        a.axvspan(x[0], -qmax * scale, color="tab:red", alpha=0.08)
        a.axvspan(qmax * scale, x[-1], color="tab:red", alpha=0.08)
    ax.set_xlabel("x")
    ax.set_ylabel("quantized value")
    ax.set_title(f"INT4 quantizer, s = {scale:g}: clips beyond ±{qmax}s = ±{qmax * scale:g} (red)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax2.plot(x, torch.zeros_like(c["x"]).numpy(), color="tab:orange", linewidth=2,
             label="true derivative: 0 (except at the jumps)")
    ax2.plot(x, c["ste_grad"].numpy(), color="tab:blue", linestyle="--",
             label="straight-through estimator: the mask I_X")
    ax2.set_ylim(-0.2, 1.6)
    ax2.set_xlabel("x")
    ax2.set_ylabel("d(quantized) / dx")
    ax2.set_title("the gradient backward uses", fontsize=9)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Int4Linear against nn.Linear

def _rel(a, b):
    nb = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / nb if nb > 0 else 0.0


def make_problem(n_tokens=64, d_in=1024, d_out=128, magnitude=20.0, n_outliers=4, seed=0,
                 device=None):
    """(x, outliers, linear, grad_y): inputs with outlier channels, an nn.Linear with PyTorch's
    default init, and an upstream gradient dL/dY from N(0, 1), all from `seed`, on `device`
    (default: where int4lab runs kernels, runtime.DEVICE)."""
    device = runtime.DEVICE if device is None else torch.device(device)
    x, outliers = make_activations(n_tokens, d_in, n_outliers, magnitude, seed)
    torch.manual_seed(seed)
    linear = nn.Linear(d_in, d_out)
    g = torch.Generator().manual_seed(seed + 1)
    grad_y = torch.randn(n_tokens, d_out, generator=g)
    return x.to(device), outliers, linear.to(device), grad_y.to(device)


def run_layer(layer, x, grad_y):
    """One forward and backward: (y, dL/dx, dL/dW), detached."""
    layer.weight.grad = None
    xx = x.clone().requires_grad_(True)
    y = layer(xx)
    y.backward(grad_y)
    return y.detach(), xx.grad.detach(), layer.weight.grad.detach().clone()


def compare_recipes(recipes=RECIPE_NAMES, n_tokens=64, d_in=1024, d_out=128, magnitude=20.0,
                    n_outliers=4, seed=0, device=None):
    """Relative errors of Int4Linear against fp32 nn.Linear (same weights, input and dL/dY).

    One forward and backward per recipe, from a fresh copy of the layer (so LSQ scales are at
    their initial value), torch's seed fixed so stochastic roundings repeat. Returns a dict:
    recipes (names), and lists over them: forward (Y), grad_x (dL/dX), grad_w (dL/dW) and
    grad_w_normal (dL/dW over the non-outlier input channels). Results are cached per
    arguments (a slider moved back redraws at once); a fresh copy is returned.
    """
    device = str(runtime.DEVICE if device is None else torch.device(device))
    return copy.deepcopy(_cached_compare(tuple(recipes), n_tokens, d_in, d_out, float(magnitude),
                                         n_outliers, seed, device))


@functools.lru_cache(maxsize=16)
def _cached_compare(recipes, n_tokens, d_in, d_out, magnitude, n_outliers, seed, device):
    x, outliers, linear, grad_y = make_problem(n_tokens, d_in, d_out, magnitude, n_outliers, seed,
                                               device)
    keep = bulk_columns(d_in, outliers).to(x.device)
    y0, gx0, gw0 = run_layer(linear, x, grad_y)
    out = {"recipes": [], "forward": [], "grad_x": [], "grad_w": [], "grad_w_normal": []}
    for r in recipes:
        recipe = get_recipe(r)
        torch.manual_seed(seed)
        y, gx, gw = run_layer(Int4Linear.from_linear(linear, recipe), x, grad_y)
        out["recipes"].append(recipe.name)
        out["forward"].append(_rel(y, y0))
        out["grad_x"].append(_rel(gx, gx0))
        out["grad_w"].append(_rel(gw, gw0))
        out["grad_w_normal"].append(_rel(gw[:, keep], gw0[:, keep]))
    return out


def recipe_error_figure(results=None, magnitude=20.0, n_tokens=64, d_in=1024, d_out=128,
                        n_outliers=4, seed=0):
    """Grouped bars: per recipe, the relative error of Y, dL/dX, dL/dW and dL/dW over the normal
    channels, against fp32. `results` from compare_recipes, or computed (and cached) here."""
    from matplotlib.figure import Figure

    if results is None:
        results = compare_recipes(RECIPE_NAMES, n_tokens, d_in, d_out, magnitude, n_outliers, seed)
    names = results["recipes"]
    keys = list(ERROR_LABELS)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:olive")
    fig = Figure(figsize=(11, 3.8))
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    for k, (key, color) in enumerate(zip(keys, colors)):
        vals = [100 * v for v in results[key]]
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, vals, width, color=color, label=ERROR_LABELS[key])
    ax.set_xticks(range(len(names)), names, fontsize=9)
    ax.set_ylabel("relative error vs fp32 (%)")
    ax.axhline(100, color="black", linewidth=0.5, linestyle=":")
    ax.set_title(f"Int4Linear against nn.Linear: one step, input with outlier channels "
                 f"({magnitude:g}x)", fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    ax.set_ylim(0, max(120, max(100 * max(results[k]) for k in keys) * 1.1))
    fig.tight_layout()
    return fig

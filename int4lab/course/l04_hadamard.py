"""Lesson 04's helpers: outlier channels, Hadamard matrices and the block-size search.

The numbers come from the library's spec (int4lab.spec.hadamard and int4lab.spec.quantizers), so the plots
show exactly what the Hadamard quantizer (HQ) of the course computes. Figures are built with
matplotlib.figure.Figure (no pyplot): they render headless and in tests.

Data: activations of trained transformers have a few *outlier channels*, feature dimensions
whose values are tens of times larger than the rest, in every token and with a consistent sign.
make_activations imitates that: N(0, 1) values plus `n_outliers` channels of about +-magnitude.
"""
import functools
import math

import torch

from int4lab.spec.hadamard import block_hadamard, hadamard_matrix, hq_fake_quantize, quantization_error
from int4lab.spec.quantizers import QMAX, quantize

#: Block sizes searched by the paper's code: 1, 2, 4, ..., 1024 (1 = no rotation).
BLOCK_SIZES = tuple(2 ** k for k in range(11))

#: Paper Table 4 (Xi et al. 2023): CoLA score of BERT fine-tuned with 4-bit forward quantizers.
ABLATION_TABLE4 = (("per-tensor", 0.0), ("per-token", 0.0), ("per-channel", 0.0),
                   ("SmoothQuant", 0.0), ("LSQ", 37.3), ("HQ", 54.2), ("FP", 56.9))


# ---------------------------------------------------------------------------------------------
# Data with outlier channels

def make_activations(n_tokens=128, d=1024, n_outliers=4, magnitude=50.0, seed=0):
    """(x, outliers): x (n_tokens, d) from N(0, 1), except `n_outliers` channels (the indices
    `outliers`, sorted) whose values are +-magnitude * (1 + 0.1 N(0, 1)), one sign per channel."""
    if n_outliers > d:
        raise ValueError(f"n_outliers ({n_outliers}) cannot exceed d ({d})")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d, generator=g)
    outliers = torch.randperm(d, generator=g)[:n_outliers].sort().values
    sign = torch.where(torch.rand(n_outliers, generator=g) < 0.5, -1.0, 1.0)
    noise = 1 + 0.1 * torch.randn(n_tokens, n_outliers, generator=g)
    if n_outliers:
        x[:, outliers] = sign * float(magnitude) * noise
    return x, outliers


def make_weight(c=128, d=1024, seed=1):
    """A weight (c, d) like a freshly initialised linear layer's: N(0, 1/d), no outliers."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, d, generator=g) / math.sqrt(d)


def bulk_columns(d, outliers):
    """A boolean mask of the channels that are not outliers."""
    keep = torch.ones(d, dtype=torch.bool)
    keep[torch.as_tensor(outliers, dtype=torch.long)] = False
    return keep


def _rel(a, b):
    nb = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / nb if nb > 0 else 0.0


def quantization_report(x, outliers=(), block_size=1):
    """What per-tensor INT4 does to x, after a block Hadamard rotation of `block_size` (1 = none).

    Returns a dict: scale (max|XH| / 7), zero_fraction (share of the codes that are 0),
    rel_error ||q(X) - X|| / ||X|| and bulk_rel_error, the same over the non-outlier channels
    only (the signal the outliers crowd out), both measured after rotating back.
    """
    codes, scale = quantize(block_hadamard(x, block_size), bits=4, granularity="tensor")
    x_hat = hq_fake_quantize(x, block_size)
    keep = bulk_columns(x.shape[-1], outliers)
    return {"block_size": block_size, "scale": float(scale),
            "zero_fraction": float((codes == 0).float().mean()),
            "rel_error": _rel(x_hat, x), "bulk_rel_error": _rel(x_hat[:, keep], x[:, keep])}


# ---------------------------------------------------------------------------------------------
# Figures

def channel_figure(x, outliers=(), block_size=None):
    """max|x| of each channel, with the per-tensor INT4 step s and the 'rounds to 0' line s/2.

    With block_size, a second panel shows the same for XH (block Hadamard of that size).
    """
    from matplotlib.figure import Figure

    panels = [("X (as it comes)", x, 1)]
    if block_size:
        panels.append((f"XH (block Hadamard, block {block_size})", block_hadamard(x, block_size),
                       block_size))
    fig = Figure(figsize=(11, 3.3 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    out = torch.as_tensor(outliers, dtype=torch.long)
    for ax, (title, t, b) in zip(axes, panels):
        amax = t.abs().amax(dim=0)
        s = float(amax.max()) / QMAX[4]
        ch = torch.arange(t.shape[-1])
        ax.plot(ch.numpy(), amax.numpy(), color="tab:blue", linewidth=0.8, label="max |value| of the channel")
        if out.numel() and b == 1:
            ax.scatter(out.numpy(), amax[out].numpy(), color="tab:red", zorder=3, s=18,
                       label=f"{out.numel()} outlier channels")
        ax.axhline(s, color="black", linestyle="--", linewidth=0.8, label=f"step s = max/7 = {s:.2f}")
        ax.axhline(s / 2, color="tab:orange", linestyle=":", linewidth=1.0,
                   label="s/2: smaller values round to 0")
        rep = quantization_report(x, outliers, b)
        ax.set_yscale("log")
        ax.set_xlabel("channel (the reduction dim D)")
        ax.set_ylabel("max |value| over tokens")
        ax.set_title(f"{title}: per-tensor INT4 sets {100 * rep['zero_fraction']:.1f}% of the codes "
                     f"to 0; error of the non-outlier channels {100 * rep['bulk_rel_error']:.0f}%",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def hadamard_figure(n=8):
    """Left: the normalized Hadamard matrix H_n (entries +-1/sqrt(n)). Right: H_n @ H_n = I."""
    from matplotlib.figure import Figure

    H = hadamard_matrix(n)
    HH = H @ H
    fig = Figure(figsize=(9, 4))
    ax, ax2 = fig.subplots(1, 2)
    v = 1 / math.sqrt(n)
    im = ax.imshow(H.numpy(), cmap="coolwarm", vmin=-v, vmax=v)
    ax.set_title(f"H_{int(math.log2(n))}: {n}x{n}, entries +-1/sqrt({n}) = +-{v:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    im2 = ax2.imshow(HH.numpy(), cmap="Greys", vmin=0, vmax=1)
    ax2.set_title(f"H @ H: the identity (max error {float((HH - torch.eye(n)).abs().max()):.1e})",
                  fontsize=9)
    fig.colorbar(im2, ax=ax2, shrink=0.8)
    for a in (ax, ax2):
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig


def block_size_sweep(x, w, outliers=(), sizes=BLOCK_SIZES):
    """Quantization error of X and W for each block size (the sizes must divide D).

    Returns a dict of lists over `sizes`: rel_error and bulk_rel_error of X (see
    quantization_report), err_x = ||q(X) - X|| and err_w = ||q(W) - W|| (the library's
    quantization_error) and product = err_x * err_w, the paper's search criterion.
    """
    out = {"sizes": list(sizes), "rel_error": [], "bulk_rel_error": [], "err_x": [], "err_w": [],
           "product": []}
    keep = bulk_columns(x.shape[-1], outliers)
    for b in sizes:
        x_hat = hq_fake_quantize(x, b)
        ex = float(torch.linalg.vector_norm(x_hat - x))
        ew = quantization_error(w, b)
        out["rel_error"].append(_rel(x_hat, x))
        out["bulk_rel_error"].append(_rel(x_hat[:, keep], x[:, keep]))
        out["err_x"].append(ex)
        out["err_w"].append(ew)
        out["product"].append(ex * ew)
    return out


@functools.lru_cache(maxsize=32)
def _cached_sweep(magnitude, n_tokens, d, c, n_outliers, seed):
    x, outliers = make_activations(n_tokens, d, n_outliers, magnitude, seed)
    w = make_weight(c, d, seed + 1)
    sweep = block_size_sweep(x, w, outliers, [b for b in BLOCK_SIZES if b <= d])
    xc = x.clone()
    xc[:, outliers] /= max(float(magnitude), 1e-12)       # the same data without the outliers
    sweep["no_outlier_rel_error"] = quantization_report(xc, outliers, 1)["rel_error"]
    return sweep


def block_size_figure(k=5, magnitude=50.0, n_tokens=64, d=1024, c=64, n_outliers=4, seed=0):
    """Error against block size 2^k (k = 0..10) on activations with outlier channels.

    Left: relative error of X (all of it, and its non-outlier channels) after HQ; the dashed
    line is per-tensor INT4 on the same data without outliers. Right: the paper's search
    criterion ||q(X) - X|| * ||q(W) - W||, its minimum starred. The chosen block is marked.
    """
    from matplotlib.figure import Figure

    block = 2 ** int(k)
    sw = _cached_sweep(float(magnitude), n_tokens, d, c, n_outliers, seed)
    sizes = sw["sizes"]
    if block not in sizes:
        raise ValueError(f"block size {block} must divide d = {d}")
    i = sizes.index(block)
    best = sizes[min(range(len(sizes)), key=sw["product"].__getitem__)]
    fig = Figure(figsize=(11, 3.8))
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(sizes, sw["rel_error"], "o-", color="tab:blue", label="all of X")
    ax.plot(sizes, sw["bulk_rel_error"], "s-", color="tab:orange", label="non-outlier channels")
    ax.axhline(sw["no_outlier_rel_error"], color="gray", linestyle="--", linewidth=0.8,
               label="per-tensor, no outliers")
    ax.axvline(block, color="black", linewidth=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes], fontsize=7)
    ax.set_ylim(0, max(1.05, max(sw["bulk_rel_error"]) * 1.05))
    ax.set_xlabel("Hadamard block size (1 = no rotation)")
    ax.set_ylabel("||q(X) - X|| / ||X||")
    ax.set_title(f"outliers {magnitude:g}x, block {block}: error {100 * sw['rel_error'][i]:.0f}% "
                 f"(non-outlier channels {100 * sw['bulk_rel_error'][i]:.0f}%)", fontsize=9)
    ax.legend(fontsize=7)
    ax2.plot(sizes, sw["product"], "o-", color="tab:green")
    ax2.scatter([best], [min(sw["product"])], marker="*", s=200, color="tab:red", zorder=3,
                label=f"the search picks {best}")
    ax2.axvline(block, color="black", linewidth=0.6)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(sizes, [str(s) for s in sizes], fontsize=7)
    ax2.set_xlabel("Hadamard block size")
    ax2.set_ylabel("||q(X) - X|| * ||q(W) - W||")
    ax2.set_title("the paper's block-size search (lowest product wins)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ablation_figure():
    """Paper Table 4: CoLA score of BERT fine-tuned with each 4-bit forward quantizer."""
    from matplotlib.figure import Figure

    names = [n for n, _ in ABLATION_TABLE4]
    scores = [s for _, s in ABLATION_TABLE4]
    colors = ["tab:gray"] * 4 + ["tab:blue", "tab:green", "black"]
    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), scores, color=colors)
    for b, s in zip(bars, scores):
        ax.text(b.get_x() + b.get_width() / 2, s + 1, f"{s:g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 65)
    ax.set_ylabel("CoLA score (Matthews corr. x100)")
    ax.set_title("4-bit forward quantizers, BERT fine-tuning on CoLA (Xi et al. 2023, Table 4)",
                 fontsize=9)
    fig.tight_layout()
    return fig

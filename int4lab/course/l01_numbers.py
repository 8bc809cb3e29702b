"""Lesson 01's helpers: the 16 INT4 values, symmetric scaling, rounding, and the packed layout.

Every number here comes from the library's spec (int4lab.spec.quantizers.quantize / dequantize and
int4lab.spec.packing), so the plots show exactly what the course's kernels compute. The figures are
built with matplotlib.figure.Figure (no pyplot), so they render headless and in tests.
"""
import torch

from int4lab.spec.packing import pack_int4
from int4lab.spec.quantizers import QMAX, dequantize, make_generator, quantize

# ---------------------------------------------------------------------------------------------
# The 16 values of a 4-bit two's complement integer

def nibble_value(n):
    """The value of a 4-bit pattern n (0..15) read as two's complement: 0..7 -> 0..7, 8..15 -> -8..-1."""
    if not 0 <= n <= 15:
        raise ValueError(f"a nibble is 0..15, got {n}")
    return n - 16 if n >= 8 else n


def nibble_table():
    """The 16 nibbles: a list of (bits as a string, unsigned value, two's complement value)."""
    return [(format(n, "04b"), n, nibble_value(n)) for n in range(16)]


def twos_complement_figure():
    """Bit pattern (x) against the value it stands for (y): 0..7 climb, then the jump to -8."""
    from matplotlib.figure import Figure

    rows = nibble_table()
    fig = Figure(figsize=(9, 3.2))
    ax = fig.add_subplot()
    xs = [r[1] for r in rows]
    ys = [r[2] for r in rows]
    colors = ["tab:blue" if v >= 0 else "tab:orange" for v in ys]
    ax.bar(xs, ys, color=colors, edgecolor="black", linewidth=0.5)
    for x, y in zip(xs, ys):
        ax.text(x, y + (0.3 if y >= 0 else -0.3), str(y), ha="center",
                va="bottom" if y >= 0 else "top", fontsize=8)
    ax.set_xticks(xs, [r[0] for r in rows], rotation=60, fontsize=8, family="monospace")
    ax.set_ylim(-9.5, 8.5)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("4-bit pattern (the top bit is the sign bit: it is worth -8)")
    ax.set_ylabel("value")
    ax.set_title("INT4 two's complement: 16 patterns, the values -8..7", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Symmetric per-tensor scaling and the error it introduces

def sample_tensor(n=512, outlier=0.0, seed=0):
    """n values from N(0, 1); when outlier != 0, the first one is replaced by `outlier`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    if outlier:
        x[0] = float(outlier)
    return x


def quantization_stats(x, bits=4, exclude=()):
    """Quantize x per tensor (round to nearest) and measure the error.

    Returns a dict: scale, qmax, codes, x_hat, rms_error, max_error and levels_used, the error
    and the level count taken over x without the indices in `exclude` (e.g. an outlier).
    """
    codes, scale = quantize(x, bits=bits, granularity="tensor")
    x_hat = dequantize(codes, scale)
    keep = torch.ones(x.numel(), dtype=torch.bool)
    keep[list(exclude)] = False
    err = (x_hat - x.float()).reshape(-1)[keep]
    return {"scale": float(scale), "qmax": QMAX[bits], "codes": codes, "x_hat": x_hat,
            "rms_error": float(err.pow(2).mean().sqrt()) if err.numel() else 0.0,
            "max_error": float(err.abs().max()) if err.numel() else 0.0,
            "levels_used": int(codes.reshape(-1)[keep].unique().numel())}


def quantization_figure(outlier=0.0, bits=4, n=512, seed=0):
    """The quantization grid over a N(0, 1) sample with one optional outlier, and the error.

    Left: a histogram of the values with the grid points s*q drawn as vertical lines.
    Right: the rounding error x_hat - x of each value, within +-s/2.
    """
    from matplotlib.figure import Figure

    x = sample_tensor(n, outlier, seed)
    exclude = (0,) if outlier else ()
    st = quantization_stats(x, bits, exclude)
    s, qmax = st["scale"], st["qmax"]
    bulk = x[1:] if outlier else x

    fig = Figure(figsize=(10, 3.6))
    ax, ax2 = fig.subplots(1, 2)
    lo, hi = float(x.min()), float(x.max())
    ax.hist(bulk.numpy(), bins=60, color="tab:blue", alpha=0.7, label=f"{bulk.numel()} values ~ N(0, 1)")
    levels = [q * s for q in range(-qmax, qmax + 1)]
    for v in levels:
        ax.axvline(v, color="tab:red", linewidth=0.6 if bits == 4 else 0.2, alpha=0.8)
    if outlier:
        ax.axvline(float(outlier), color="black", linewidth=2, label=f"outlier {outlier:g}")
    ax.set_xlim(min(lo, -qmax * s) - 0.5 * s, max(hi, qmax * s) + 0.5 * s)
    ax.set_xlabel(f"x   (red lines: the {2 * qmax + 1} grid points q*s, q = -{qmax}..{qmax})")
    ax.set_ylabel("count")
    ax.set_title(f"INT{bits}, per-tensor scale s = max|x|/{qmax} = {s:.3f}\n"
                 f"the bulk uses {st['levels_used']} of {2 * qmax + 1} levels", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")

    err = (st["x_hat"] - x).numpy()
    ax2.scatter(x.numpy(), err, s=4, color="tab:blue")
    ax2.axhline(s / 2, color="tab:red", linestyle="--", linewidth=0.8, label="+-s/2")
    ax2.axhline(-s / 2, color="tab:red", linestyle="--", linewidth=0.8)
    ax2.set_xlabel("x")
    ax2.set_ylabel("error  x_hat - x")
    ax2.set_title(f"error of the bulk: RMS {st['rms_error']:.3f} (s/sqrt(12) = "
                  f"{s / 12 ** 0.5:.3f}),\nmax {st['max_error']:.3f}", fontsize=9)
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Round to nearest vs stochastic rounding

def rounding_samples(values, samples=2000, rounding="nearest", seed=0):
    """Quantize each value `samples` times with scale 1 (so a code is the rounded value itself).

    Returns a (samples, len(values)) float tensor of the rounded values.
    """
    v = torch.as_tensor(values, dtype=torch.float32).reshape(1, -1).expand(samples, -1).contiguous()
    gen = make_generator(seed) if rounding == "stochastic" else None
    codes, scale = quantize(v, bits=4, granularity="tensor", rounding=rounding, generator=gen, scale=1.0)
    return dequantize(codes, scale)


def rounding_stats(values, samples=2000, seed=0):
    """Bias E[round(v)] - v and variance Var[round(v)] of both roundings, per value (torch tensors)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    out = {}
    for mode in ("nearest", "stochastic"):
        r = rounding_samples(v, samples, mode, seed)
        out[mode] = {"bias": r.mean(0) - v, "var": r.var(0, unbiased=False),
                     "mse": (r - v).pow(2).mean(0)}
    return out


def rounding_figure(value=0.3, samples=2000, seed=0):
    """Left: bias of both roundings across values (in units of the step). Right: averaging many
    stochastic roundings of `value` converges to it; round to nearest stays where it is."""
    from matplotlib.figure import Figure

    grid = torch.linspace(-2, 2, 161)
    st = rounding_stats(grid, samples, seed)
    fig = Figure(figsize=(10, 3.6))
    ax, ax2 = fig.subplots(1, 2)
    g = grid.numpy()
    ax.plot(g, st["nearest"]["bias"].numpy(), color="tab:orange", label="round to nearest: bias")
    sr_bias = st["stochastic"]["bias"].numpy()
    sr_std = st["stochastic"]["var"].sqrt().numpy()
    ax.plot(g, sr_bias, color="tab:blue", label=f"stochastic: bias (mean of {samples})")
    ax.fill_between(g, -sr_std, sr_std, color="tab:blue", alpha=0.15,
                    label="stochastic: +-1 std of one draw")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("value v (in units of the step s)")
    ax.set_ylabel("E[round(v)] - v")
    ax.set_title("RTN is biased (a sawtooth); SR is unbiased but noisy", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")

    draws = rounding_samples([value], samples, "stochastic", seed)[:, 0]
    running = draws.cumsum(0) / torch.arange(1, samples + 1)
    rtn = float(rounding_samples([value], 1, "nearest")[0, 0])
    k = torch.arange(1, samples + 1).numpy()
    ax2.plot(k, running.numpy(), color="tab:blue", label="mean of k stochastic roundings")
    ax2.axhline(rtn, color="tab:orange", label=f"round to nearest: always {rtn:g}")
    ax2.axhline(value, color="black", linestyle="--", linewidth=0.8, label=f"true value {value:g}")
    ax2.set_xscale("log")
    ax2.set_xlabel("k (number of draws averaged)")
    ax2.set_ylabel("average of the rounded values")
    ax2.set_title(f"averaging the roundings of v = {value:g}", fontsize=9)
    ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The packed layout

def packing_figure(values=(3, -1, -8, 7, 0, 5)):
    """How INT4 values land in bytes: element 2j in the low nibble (bits 3..0) of byte j,
    element 2j+1 in the high nibble (bits 7..4). Bytes are computed by the spec (int4lab.spec.packing)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    q = torch.tensor(values, dtype=torch.int8)
    packed = pack_int4(q)
    nbytes = packed.numel()
    fig = Figure(figsize=(2.6 * max(nbytes, 1) + 1, 3.0))
    ax = fig.add_subplot()
    ax.set_axis_off()
    palette = ("tab:blue", "tab:orange")
    for j in range(nbytes):
        x0 = j * 10
        byte = int(packed[j])
        bits = format(byte, "08b")
        for b in range(8):                      # drawn left to right: bit 7 .. bit 0
            elem = 2 * j + (1 if b < 4 else 0)
            ax.add_patch(Rectangle((x0 + b, 0), 1, 1, facecolor=palette[elem % 2], alpha=0.35,
                                   edgecolor="black"))
            ax.text(x0 + b + 0.5, 0.5, bits[b], ha="center", va="center", family="monospace")
        for side, elem in (("high", 2 * j + 1), ("low", 2 * j)):
            cx = x0 + (2 if side == "high" else 6)
            ax.text(cx, 1.35, f"q[{elem}] = {int(q[elem])}", ha="center", va="bottom", fontsize=9,
                    color=palette[elem % 2])
            ax.text(cx, 1.1, f"{side} nibble", ha="center", va="bottom", fontsize=7, color="gray")
        ax.text(x0 + 4, -0.35, f"byte {j} = {byte} (0x{byte:02x})", ha="center", va="top", fontsize=9)
    ax.set_xlim(-0.5, max(nbytes, 1) * 10 - 1.5)
    ax.set_ylim(-1.0, 2.1)
    ax.set_title("pack_int4: two INT4 values per uint8 byte (bits 7..4 | bits 3..0)", fontsize=10)
    return fig

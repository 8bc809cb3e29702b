"""Lesson 09's helpers: FP8 and FP4 formats simulated in PyTorch, against INT4 with and without HQ.

A small float format is a finite set of numbers. fp_grid(exp_bits, man_bits, bias) enumerates
its non-negative values (subnormals included); round_to_grid rounds to the nearest one (ties to
the even code, as hardware does) and saturates at the largest. On top of that:

- FP8 E4M3 (max 448) and E5M2 (max 57344) with one fp32 scale per tensor (amax -> max);
- MXFP4 (OCP Microscaling): E2M1 values (0, 0.5, 1, 1.5, 2, 3, 4, 6), 32 consecutive values
  share a power-of-two scale 2^(floor(log2 amax) - 2) (2 = E2M1's largest exponent);
- NVFP4: E2M1 values, one FP8 E4M3 scale per 16 values, times one fp32 scale per tensor;
- INT4 per tensor, with and without the block Hadamard rotation of the paper's HQ, and INT4
  with one scale per 32 values: the library's int4lab.spec.quantizers and int4lab.spec.hadamard.

All are fake quantizers: they return the float values the format represents (x_hat), so the
error is ||x_hat - x|| / ||x||. Figures use matplotlib.figure.Figure (no pyplot).
"""
import functools

import torch

from int4lab.course.l04_hadamard import bulk_columns, make_activations
from int4lab.spec.hadamard import block_hadamard
from int4lab.spec.quantizers import dequantize, quantize

#: name: (exponent bits, mantissa bits, bias, largest finite value)
FP_FORMATS = {
    "e4m3": (4, 3, 7, 448.0),          # float8_e4m3fn: no infinities, S.1111.111 is NaN
    "e5m2": (5, 2, 15, 57344.0),       # IEEE-like: exponent 11111 is inf/NaN
    "e2m1": (2, 1, 1, 6.0),            # FP4: every code is a finite number
}


@functools.lru_cache(maxsize=None)
def fp_grid(fmt):
    """The sorted non-negative finite values of a format in FP_FORMATS, code order (so the index
    parity is the mantissa's last bit)."""
    e_bits, m_bits, bias, vmax = FP_FORMATS[fmt]
    vals = []
    for e in range(2 ** e_bits):
        for m in range(2 ** m_bits):
            if e == 0:                                     # subnormal: 0.m * 2^(1 - bias)
                v = (m / 2 ** m_bits) * 2.0 ** (1 - bias)
            else:
                v = (1 + m / 2 ** m_bits) * 2.0 ** (e - bias)
            if v <= vmax:
                vals.append(v)
    return torch.tensor(vals, dtype=torch.float32)


def round_to_grid(v, fmt):
    """Round each value of v to the nearest value of the format (ties to the even code),
    saturating beyond the largest: sign * grid[nearest index of |v|]."""
    grid = fp_grid(fmt)
    a = v.abs().float().clamp(max=float(grid[-1]))
    hi = torch.searchsorted(grid, a).clamp(max=len(grid) - 1)
    lo = (hi - 1).clamp(min=0)
    d_lo, d_hi = a - grid[lo], grid[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    return torch.sign(v.float()) * grid[torch.where(pick_hi, hi, lo)]


def _blocks(x, block):
    if x.shape[-1] % block:
        raise ValueError(f"the last dim ({x.shape[-1]}) must be a multiple of the block ({block})")
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // block, block)


def fp8_fake(x, fmt="e4m3"):
    """FP8 with one fp32 scale per tensor, s = max|x| / max of the format."""
    amax = float(x.abs().max())
    s = amax / FP_FORMATS[fmt][3] if amax > 0 else 1.0
    return round_to_grid(x / s, fmt) * s


def mxfp4_scale(amax):
    """MXFP4's shared scale of a block whose max|x| is amax: 2^(floor(log2 amax) - 2) (OCP MX;
    2 = E2M1's largest exponent). amax / scale lies in [4, 8), so the scale is between 0.75x
    and 1.5x the ideal amax / 6 (see mxfp4_scale_vs_ideal)."""
    amax = torch.as_tensor(amax, dtype=torch.float32)
    return torch.exp2(torch.floor(torch.log2(amax.clamp(min=2.0 ** -126))) - 2)


def mxfp4_scale_vs_ideal(n=4096):
    """(min, max) over one octave of amax of MXFP4's scale divided by the ideal scale amax / 6
    (which maps the block's max onto E2M1's largest value). Above 1: the max lands below 6 and
    levels go unused; below 1: values above 6 scales saturate."""
    amax = torch.exp2(torch.arange(n, dtype=torch.float64) / n).float()      # [1, 2)
    ratio = mxfp4_scale(amax) / (amax / 6.0)
    return float(ratio.min()), float(ratio.max())


def mxfp4_fake(x, block=32):
    """MXFP4: E2M1 elements, a shared power-of-two scale per `block` values (OCP MX: exponent
    floor(log2 amax) - 2). Values whose ratio to the scale exceeds 6 saturate at 6."""
    b = _blocks(x, block)
    s = mxfp4_scale(b.abs().amax(-1, keepdim=True))
    return (round_to_grid(b / s, "e2m1") * s).reshape(x.shape)


def nvfp4_fake(x, block=16):
    """NVFP4: E2M1 elements, one FP8 E4M3 scale per `block` values, times a per-tensor fp32
    scale chosen so the largest block scale fits E4M3 (amax / (448 * 6))."""
    b = _blocks(x, block)
    amax_t = float(x.abs().max())
    s_t = amax_t / (448.0 * 6.0) if amax_t > 0 else 1.0
    s_b = round_to_grid(b.abs().amax(-1, keepdim=True) / 6.0 / s_t, "e4m3")
    s = s_b * s_t
    q = round_to_grid(torch.where(s > 0, b / torch.where(s > 0, s, 1.0), 0.0), "e2m1")
    return (q * s).reshape(x.shape)


def int4_fake(x, hadamard_block=None, granularity="tensor", block=32):
    """INT4 (codes in [-7, 7]) with the library's quantizer; with hadamard_block, rotate along
    the last dim first and rotate back after (the paper's HQ, as a fake quantizer)."""
    v = block_hadamard(x.float(), hadamard_block) if hadamard_block else x.float()
    v_hat = dequantize(*quantize(v, bits=4, granularity=granularity, block_size=block))
    return block_hadamard(v_hat, hadamard_block) if hadamard_block else v_hat


#: The formats compared in the lesson: name -> (fake quantizer, bits per value incl. scales)
FORMATS = {
    "INT4 per-tensor": (lambda x: int4_fake(x), 4.0),
    "INT4 + Hadamard (HQ)": (lambda x: int4_fake(x, hadamard_block=32), 4.0),
    "INT4 per-32 block": (lambda x: int4_fake(x, granularity="block", block=32), 4 + 32 / 32),
    "MXFP4": (mxfp4_fake, 4 + 8 / 32),
    "NVFP4": (nvfp4_fake, 4 + 8 / 16),
    "NVFP4 + Hadamard": (lambda x: block_hadamard(nvfp4_fake(block_hadamard(x.float(), 16)), 16),
                         4 + 8 / 16),
    "FP8 E5M2": (lambda x: fp8_fake(x, "e5m2"), 8.0),
    "FP8 E4M3": (lambda x: fp8_fake(x, "e4m3"), 8.0),
}


def int4_steps(x, hadamard_block=32, block=32):
    """(HQ's one per-tensor INT4 step max|XH| / 7, the median INT4 step of the blocks of `block`
    values of X, max|block| / 7): why per-tensor HQ loses to per-block scales on outliers."""
    hq = float(block_hadamard(x.float(), hadamard_block).abs().max()) / 7
    per_block = _blocks(x, block).abs().amax(-1) / 7
    return hq, float(per_block.median())


def _rel(a, b):
    nb = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / nb if nb > 0 else 0.0


def format_errors(x, outliers=(), formats=None):
    """{name: (relative error of x, relative error of its non-outlier channels)}."""
    keep = bulk_columns(x.shape[-1], outliers)
    out = {}
    for name in formats or FORMATS:
        x_hat = FORMATS[name][0](x)
        out[name] = (_rel(x_hat, x), _rel(x_hat[:, keep], x[:, keep]))
    return out


@functools.lru_cache(maxsize=32)
def _cached_errors(magnitude, n_tokens, d, n_outliers, seed):
    x, outliers = make_activations(n_tokens, d, n_outliers, magnitude, seed)
    return format_errors(x, outliers)


def error_figure(magnitude=50.0, n_tokens=64, d=1024, n_outliers=4, seed=0):
    """Relative error per format on activations with `n_outliers` channels of about
    +-magnitude (lesson 04's data): all of X, and its non-outlier channels."""
    from matplotlib.figure import Figure

    errs = _cached_errors(float(magnitude), n_tokens, d, n_outliers, seed)
    names = list(errs)
    fig = Figure(figsize=(11, 4.2))
    ax = fig.add_subplot()
    xs = range(len(names))
    ax.bar([i - 0.2 for i in xs], [100 * errs[n][0] for n in names], width=0.4,
           color="tab:blue", label="all of X")
    ax.bar([i + 0.2 for i in xs], [100 * errs[n][1] for n in names], width=0.4,
           color="tab:orange", label="non-outlier channels")
    for i, n in enumerate(names):
        ax.text(i + 0.2, 100 * errs[n][1] * 1.15, f"{100 * errs[n][1]:.1f}", ha="center",
                fontsize=7)
    ax.set_xticks(list(xs), [f"{n}\n{FORMATS[n][1]:g} bits" for n in names], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(1, 300)
    ax.set_ylabel("||x_hat - x|| / ||x||  (%)")
    ax.set_title(f"{n_outliers} outlier channels of ~{magnitude:g}x among {d}: relative error of "
                 "each format (bits per value include the scales)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def grid_figure():
    """The representable non-negative values of E2M1 (FP4), INT4 (scaled to the same max 6)
    and E4M3 (FP8, up to 8), on one axis: floats are dense near 0, integers evenly spaced."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.6))
    ax = fig.add_subplot()
    rows = (("FP4 E2M1", fp_grid("e2m1")), ("INT4 x 6/7", torch.arange(8) * 6 / 7),
            ("FP8 E4M3 (<= 8)", fp_grid("e4m3")[fp_grid("e4m3") <= 8]))
    for i, (_, vals) in enumerate(rows):
        ax.plot(vals.numpy(), [i] * len(vals), "|", markersize=18, markeredgewidth=1.5)
    ax.set_yticks(range(len(rows)), [f"{n} ({len(v)} values)" for n, v in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("value (non-negative half; each format is symmetric)")
    ax.set_title("what each format can represent", fontsize=9)
    fig.tight_layout()
    return fig

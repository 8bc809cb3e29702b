"""Gradient quantization, the spec: bit splitting (BS) and leverage score sampling (LSS).

Paper sec. 5. Gradients of activations are sparse in a structured way: a few token rows of
dY are large, most are near zero. Per-tensor INT4 would round those small rows to zero and bias
training. The paper's answer has two parts:
  - bit splitting: dY ~ s_hi * hi + s_lo * lo with two INT4 matrices, an INT8 number stored as
    two INT4 halves; stacked [s_hi*hi; s_lo*lo] it is a 2N-row matrix;
  - leverage score sampling: write each backward GEMM as a sum of 2N rank-1 terms, keep term i
    with probability p_i and scale it by 1/p_i (unbiased), with sum p_i = N so the two INT4
    GEMMs cost about one full-size GEMM. The best p_i are proportional to each term's norm.
"""
from collections import namedtuple

import numpy as np
import torch

from int4lab.spec.packing import pack_int4_trusted
from int4lab.spec.quantizers import make_generator
from int4lab.spec.validate import (
    data_checks_skipped,
    require_dtype,
    require_even_last_dim,
    require_finite,
    require_float,
)

BitSplit = namedtuple("BitSplit", ["hi", "lo", "scale_hi", "scale_lo"])

# The released code's constants: s maps max|g| to 98 = 14 * 7, hi counts steps of 14, lo the
# remainder; both are clamped to [-6, 6] (num_bins_half = 2^4 - 2 = 14, clamp = 14 / 2 - 1 = 6).
BS_LEVELS, BS_STEP, BS_CLAMP = 196, 14, 6


def bit_split_scale(g):
    """The per-tensor bit-splitting scale s = 196 / (2 max|g|) (1.0 for an all-zero g)."""
    amax = g.abs().amax() if g.numel() else torch.zeros((), device=g.device)
    return torch.where(amax > 0, BS_LEVELS / (2 * amax), torch.ones_like(amax))


def bit_split(g, generator=None, clamp=BS_CLAMP):
    """Split g into two INT4 matrices (paper sec. 5.1, eq. 9; the released code's rounding):

        hi = clamp(round(g s / 14), -6, 6),  lo = clamp(round(g s - 14 hi + U(-1/2, 1/2)), -6, 6)

    g ~ hi * scale_hi + lo * scale_lo with scale_hi = 14 / s, scale_lo = 1 / s. hi is rounded
    to nearest, lo (the residual) stochastically. Note the [-6, 6] clamp: where |g s - 14 hi| > 6
    (and where |g| > 0.93 max|g| saturates hi) lo is clipped, a small bias; clamp=7 removes it.
    """
    require_float(g, "g")
    require_finite(g, "g")
    if clamp not in (6, 7):
        raise ValueError(f"clamp must be 6 (the released code) or 7 (exactly unbiased); got {clamp!r}")
    return _bit_split(g, generator, clamp)


def _bit_split(g, generator, clamp):
    """bit_split on valid input."""
    gf = g.float()
    s = bit_split_scale(gf)
    v = gf * s
    # the same operations as hi = round(v / 14).clamp(...), lo = round(v - 14 hi + u).clamp(...),
    # in place: fewer large temporaries, which on a CPU cost as much as the arithmetic
    hi = (v / BS_STEP).round_().clamp_(-clamp, clamp)
    dev = generator.device if generator is not None else g.device
    u = torch.rand(g.shape, generator=generator, device=dev).to(g.device).sub_(0.5)
    lo = v.sub_(BS_STEP * hi).add_(u).round_().clamp_(-clamp, clamp)
    return BitSplit(hi.to(torch.int8), lo.to(torch.int8), (BS_STEP / s).float(), (1.0 / s).float())


def bit_split_dequantize(bs):
    """hi * scale_hi + lo * scale_lo: the gradient the two INT4 halves represent."""
    return bs.hi.float() * bs.scale_hi + bs.lo.float() * bs.scale_lo


def bit_split_mean(g, clamp=BS_CLAMP):
    """E[bit_split(g)] exactly, over the stochastic rounding of lo: shows the clamp's bias."""
    require_float(g, "g")
    require_finite(g, "g")
    gf = g.float()
    s = bit_split_scale(gf)
    v = gf * s
    hi = torch.round(v / BS_STEP).clamp(-clamp, clamp)
    r = v - BS_STEP * hi
    # round(r + u), u ~ U(-1/2, 1/2), is floor(r) + 1 with probability frac(r), else floor(r)
    f = r - torch.floor(r)
    lo_mean = (1 - f) * torch.floor(r).clamp(-clamp, clamp) + f * (torch.floor(r) + 1).clamp(-clamp, clamp)
    return (BS_STEP * hi + lo_mean) / s


def kernel_seed(seed):
    """The kernels' seed for tl.rand: a non-negative 31-bit int; seed=None draws a fresh one from
    OS entropy (like the spec's make_generator(None)), without touching torch's global state."""
    if seed is None:
        return torch.Generator().seed() % (2**31 - 1)
    return int(seed) % (2**31 - 1)


def validate_bit_split(g, seed=None):
    """Raise on input bit_split_spec cannot take (dtype, 2-D, even C, NaN/Inf), computing nothing."""
    require_float(g, "g")
    if g.dim() != 2:
        raise ValueError(f"g must be 2-D (N, C), got shape {tuple(g.shape)}")
    require_even_last_dim(g, "g")
    require_finite(g, "g")


def bit_split_spec(g, seed=None):
    """Slot "bit_split": g (N, C) float -> (hi packed (N, C/2) uint8, lo packed, scale_hi, scale_lo)."""
    validate_bit_split(g, seed)
    return bit_split_trusted(g, seed)


def bit_split_trusted(g, seed=None, as_codes=False):
    """bit_split_spec without validation (for the layers, on tensors they made); with as_codes,
    the int8 codes hi and lo in place of the packed bytes (nothing packed)."""
    bs = _bit_split(g, make_generator(seed), BS_CLAMP)
    if as_codes:
        return bs.hi, bs.lo, bs.scale_hi, bs.scale_lo
    return pack_int4_trusted(bs.hi), pack_int4_trusted(bs.lo), bs.scale_hi, bs.scale_lo


# ---- leverage score sampling --------------------------------------------------------------

def lss_probabilities(norms, budget, max_iter=100):
    """Keep-probabilities p_i proportional to norms with sum p = budget and p <= 1 (paper sec. 5.2).

    Scale so sum p = budget, clip at 1, rescale the unclipped ones so the sum is budget again,
    and repeat until no new value clips. Zero norms get p = 0; a budget at least the number of
    non-zero norms keeps all of them (p = 1).
    """
    require_float(norms, "norms")
    require_finite(norms, "norms")
    if norms.dim() != 1:
        raise ValueError(f"norms must be 1-D (one per row), got shape {tuple(norms.shape)}")
    if (norms < 0).any():
        raise ValueError("norms must be non-negative")
    if not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    return lss_probabilities_trusted(norms, budget, max_iter)


def lss_probabilities_trusted(norms, budget, max_iter=100):
    """lss_probabilities without validation (norms 1-D, finite, >= 0; budget > 0)."""
    n = norms.double()
    if n.device.type == "cpu":
        return _lss_probabilities_cpu(n, budget, max_iter)
    return _lss_probabilities_loop(n, budget, max_iter)


def _lss_probabilities_loop(n, budget, max_iter):
    nonzero = n > 0
    p = torch.zeros_like(n)
    if budget >= int(nonzero.sum()):
        return nonzero.float()
    clipped = torch.zeros_like(nonzero)
    k = 0                                   # how many are clipped
    for _ in range(max_iter):
        free = nonzero & ~clipped
        # the free ones get n_i (budget - k) / sum of the free n (summed over them alone), the
        # clipped 1, the zeros 0
        p = torch.where(free, n * (budget - k) / n[free].sum(), clipped.to(n.dtype))
        newly = free & (p >= 1)
        n_new = int(newly.sum())
        if not n_new:
            break
        clipped |= newly
        k += n_new
    return p.clamp(max=1).float()


def _lss_probabilities_cpu(n, budget, max_iter):
    """The loop above on a CPU, with its elementwise steps in numpy: on a few thousand rows each
    torch call costs more in overhead than in arithmetic. The same bits: IEEE products and
    quotients are the same in numpy, and each round's total is still torch's sum over the same
    values in the same order (tests/test_gradquant.py compares the two)."""
    a = n.numpy()
    nonzero = a > 0
    if budget >= int(nonzero.sum()):
        return torch.from_numpy(nonzero).float()
    free = nonzero.copy()
    k = 0
    for _ in range(max_iter):
        total = torch.from_numpy(a[free]).sum().item()
        p = a * (budget - k) / total
        newly = free & (p >= 1)
        n_new = int(newly.sum())
        if not n_new:
            break
        free &= ~newly
        k += n_new
    p = np.where(free, p, (nonzero & ~free).astype(a.dtype))
    return torch.from_numpy(p).clamp_(max=1).float()


def input_grad_probs(g_rows, budget=None):
    """LSS for dX = dY W: p_i proportional to ||g_i|| (the rows are independent outputs)."""
    require_float(g_rows, "g_rows")
    budget = g_rows.shape[0] / 2 if budget is None else budget
    return lss_probabilities(torch.linalg.vector_norm(g_rows.float(), dim=1), budget)


def weight_grad_probs(g_rows, x_rows, budget=None):
    """LSS for dW = dY^T X: p_i proportional to ||g_i|| ||x_i|| (the leverage of rank-1 term i).

    g_rows, x_rows: the stacked rows, e.g. [s_hi*hi; s_lo*lo] and [X; X]; budget defaults to
    half the rows (N for the 2N stacked rows).
    """
    require_float(g_rows, "g_rows")
    require_float(x_rows, "x_rows")
    if g_rows.shape[0] != x_rows.shape[0]:
        raise ValueError(f"g_rows and x_rows need the same number of rows; got {g_rows.shape[0]} "
                         f"and {x_rows.shape[0]}")
    budget = g_rows.shape[0] / 2 if budget is None else budget
    scores = torch.linalg.vector_norm(g_rows.float(), dim=1) * torch.linalg.vector_norm(x_rows.float(), dim=1)
    return lss_probabilities(scores, budget)


def stack_bit_split(bs):
    """The 2N stacked rows [s_hi * hi; s_lo * lo] of a 2-D bit split, fp32."""
    return torch.cat([bs.hi.float() * bs.scale_hi, bs.lo.float() * bs.scale_lo], dim=0)


def _sample_mask(probs, generator):
    dev = generator.device if generator is not None else probs.device
    u = torch.rand(probs.shape, generator=generator, device=dev).to(probs.device)
    return u < probs


def _check_probs(probs, rows):
    require_float(probs, "probs")
    require_finite(probs, "probs")
    if probs.dim() != 1 or probs.shape[0] != rows:
        raise ValueError(f"probs must be 1-D with one entry per row ({rows}); got shape {tuple(probs.shape)}")
    if probs.numel() and not data_checks_skipped() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError(f"probs must lie in [0, 1]; got min {float(probs.min())}, max {float(probs.max())}")


def lss_weight_grad(g_rows, x_rows, probs, generator=None):
    """Unbiased LSS estimate of g_rows^T x_rows = sum_i g_i^T x_i: keep term i w.p. p_i, weight 1/p_i."""
    require_float(g_rows, "g_rows")
    require_float(x_rows, "x_rows")
    _check_probs(probs, g_rows.shape[0])
    keep = _sample_mask(probs, generator)
    w = torch.where(keep, 1.0 / probs.clamp_min(1e-30), torch.zeros_like(probs))
    return (g_rows.float() * w[:, None]).T @ x_rows.float()


def lss_input_grad(g_rows, w, probs, generator=None, n_tokens=None):
    """Unbiased LSS estimate of g_rows @ w, row by row; n_tokens folds stacked row i + n into row i."""
    require_float(g_rows, "g_rows")
    require_float(w, "w")
    _check_probs(probs, g_rows.shape[0])
    keep = _sample_mask(probs, generator)
    weight = torch.where(keep, 1.0 / probs.clamp_min(1e-30), torch.zeros_like(probs))
    out = (g_rows.float() * weight[:, None]) @ w.float()
    if n_tokens is not None:
        if out.shape[0] % n_tokens:
            raise ValueError(f"{out.shape[0]} rows do not stack into blocks of n_tokens={n_tokens}")
        out = out.reshape(-1, n_tokens, out.shape[1]).sum(0)
    return out


def lss_variance(g_rows, x_rows, probs):
    """Exact total variance of lss_weight_grad: E||est - G^T X||_F^2 = sum (1-p_i)/p_i ||g_i||^2 ||x_i||^2.

    (Independent Bernoulli keeps; ||g_i^T x_i||_F = ||g_i|| ||x_i|| for a rank-1 term.) Terms
    with p_i = 0 must be zero rows; they add nothing.
    """
    _check_probs(probs, g_rows.shape[0])
    gn, xn = torch.linalg.vector_norm(g_rows.double(), dim=1), torch.linalg.vector_norm(x_rows.double(), dim=1)
    t = gn ** 2 * xn ** 2
    p = probs.double()
    if ((p == 0) & (t > 0)).any():
        return float("inf")
    return float(torch.where(p > 0, (1 - p) / p.clamp_min(1e-300) * t, torch.zeros_like(t)).sum())


# ---- registry slot "lss_gather" ------------------------------------------------------------

def validate_lss_gather(codes, probs=None, seed=None, other=None):
    require_dtype(codes, "codes", (torch.uint8,))
    if codes.dim() != 2:
        raise ValueError(f"codes must be 2-D packed rows (R, K/2), got shape {tuple(codes.shape)}")
    if probs is not None:
        _check_probs(probs, codes.shape[0])
    if other is not None:
        require_dtype(other, "other", (torch.uint8,))
        if other.dim() != 2 or other.shape[0] != codes.shape[0]:
            raise ValueError(f"other must be 2-D packed rows with the same {codes.shape[0]} rows as "
                             f"codes; got shape {tuple(other.shape)}")


def lss_gather_spec(codes, probs=None, seed=None, other=None):
    """Slot "lss_gather": keep row i when u_i < p_i; returns (kept, kept_other, index, weight = 1/p).

    probs=None is the released kernels' deterministic mode: keep every row that is not all zero,
    weight 1. index is int64, ascending; weight fp32.
    """
    validate_lss_gather(codes, probs, seed, other)
    return lss_gather_trusted(codes, probs, seed, other)


def lss_gather_trusted(codes, probs=None, seed=None, other=None):
    """lss_gather_spec without validation (for the layers, on tensors they made)."""
    if probs is None:
        keep = (codes != 0).any(dim=1)          # a zero code packs to a zero nibble, so a zero byte
    else:
        keep = _sample_mask(probs.float(), make_generator(seed))
    index = keep.nonzero().flatten().to(torch.int64)
    weight = (torch.ones(index.shape[0], device=codes.device) if probs is None
              else 1.0 / probs.float()[index])
    kept_other = other.index_select(0, index) if other is not None else None
    return codes.index_select(0, index), kept_other, index, weight.float()

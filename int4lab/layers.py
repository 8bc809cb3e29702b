"""Int4Linear: an nn.Linear that trains with 4-bit integer matmuls (paper sec. 4 and 5).

A linear layer Y = X W^T + b (X is N x D, W is C x D) runs three GEMMs per step:
  forward       Y  = X W^T                 -> HQ: s_X s_W int(XH) int(WH)^T
  input grad    dX = dY W                  -> (I_X o dY W_hat) H^T, dY bit-split + LSS
  weight grad   dW = dY^T X                -> (dY^T X_hat o I_W) H^T, dY bit-split + LSS
where X_hat = s_X int(XH), W_hat = s_W int(WH) are the forward's INT4 codes, saved packed and
reused, and I_X, I_W mark the values the forward quantizer did not clip (the straight-through
estimator). A Recipe names which quantizer each GEMM uses, so one layer runs every baseline of
the course. The quantized operations go through int4lab.ops, so the same layer runs on the
PyTorch spec, the library's Triton kernels or a learner's. The layer passes only tensors it made
itself, so it calls ops.trusted: no validation per call (the public ops validate at the
boundary), and each saved operand is unpacked at most once per backward.
"""
import dataclasses
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from int4lab import ops, runtime
from int4lab.exercises import registry
from int4lab.spec.gradients import lss_probabilities_trusted as lss_probabilities
from int4lab.spec.hadamard import block_hadamard_trusted as block_hadamard
from int4lab.spec.quantizers import (
    QMAX,
    LSQQuantizer,
    dequantize,
    fake_quantize,
    lsq_grad_scale,
    lsq_step_size_term,
    make_generator,
    quantize,
)

FORWARDS = ("fp", "int8_row", "int4_rtn", "int4_lsq", "int4_hq")
GRADS = ("fp", "int8_sr", "int4_rtn", "int4_sr", "bs_lss")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Which quantizer each GEMM of a linear layer uses.

    forward: fp (none) | int8_row (per-row INT8) | int4_rtn (per-tensor, max scale) |
             int4_lsq (per-tensor, learned LSQ scale) | int4_hq (Hadamard quantizer)
    grad:    fp (dY in full precision, the STE) | int8_sr | int4_rtn | int4_sr (per-tensor dY,
             round-to-nearest or stochastic) | bs_lss (bit splitting + leverage score sampling)
    hq_scale: HQ's per-tensor scale, "lsq" (learned, as the paper) or "max" (max|XH| / 7).
    lsq_grad: what backward keeps for a learned scale's gradient: "2bit" (the default: for each
         value 2 bits, its rounding remainder stochastically rounded to one of four levels, or
         "clipped"; with the INT4 codes a layer keeps 0.38x a bf16 nn.Linear's bytes, and the
         gradient is unbiased; its accuracy cost, measured, is in docs/RESULTS.md) or "exact"
         (the rotated fp32 values, 4 bytes each: 2.25x).
    lss: "sample" (the paper's unbiased sampling) or "nonzero" (the released kernels: keep every
         non-zero row, no reweighting).
    """
    name: str = "custom"
    forward: str = "int4_hq"
    grad: str = "bs_lss"
    block_size: int = 32
    lss: str = "sample"
    hq_scale: str = "lsq"
    lsq_warmup_steps: int = 10
    lsq_grad: str = "2bit"

    def __post_init__(self):
        for value, choices, what in ((self.forward, FORWARDS, "forward"), (self.grad, GRADS, "grad"),
                                     (self.lss, ("sample", "nonzero"), "lss"),
                                     (self.hq_scale, ("lsq", "max"), "hq_scale"),
                                     (self.lsq_grad, ("2bit", "exact"), "lsq_grad")):
            if value not in choices:
                raise ValueError(f"Recipe.{what} must be one of {', '.join(choices)}; got {value!r}")
        b = self.block_size
        if not isinstance(b, int) or b < 1 or b & (b - 1):
            raise ValueError(f"Recipe.block_size must be a power of two, got {b!r}")
        if self.grad == "bs_lss" and not self.int4_forward:
            raise ValueError("grad='bs_lss' reuses the forward's INT4 codes: it needs an int4_* forward, "
                             f"not {self.forward!r}")

    @property
    def int4_forward(self):
        return self.forward.startswith("int4")

    @property
    def hadamard(self):
        return self.forward == "int4_hq"

    @property
    def uses_lsq(self):
        return self.forward == "int4_lsq" or (self.hadamard and self.hq_scale == "lsq")


RECIPES = {r.name: r for r in (
    Recipe("fp32", forward="fp", grad="fp"),
    Recipe("int8", forward="int8_row", grad="int8_sr"),
    Recipe("int4_rtn", forward="int4_rtn", grad="int4_rtn"),
    Recipe("int4_lsq_sr", forward="int4_lsq", grad="int4_sr"),
    Recipe("int4_hq", forward="int4_hq", grad="fp"),
    Recipe("int4_hq_lss", forward="int4_hq", grad="bs_lss"),
)}


def get_recipe(recipe: "Recipe | str") -> "Recipe":
    """A Recipe from its name in RECIPES, or the Recipe itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; the recipes are: {', '.join(RECIPES)}")
        return RECIPES[recipe]
    raise TypeError(f"recipe must be a name or a Recipe, got {type(recipe).__name__}")


# ---- bookkeeping --------------------------------------------------------------------------

def _round_up(n, m):
    return -(-n // m) * m


def _pad2(t, rows, cols):
    """Zero-pad a matrix: zero rows/columns add nothing to any product, and packing needs even dims.
    (t itself when nothing is missing: no copy.)"""
    if (rows, cols) == tuple(t.shape):
        return t
    return F.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]))


def _seed():
    # drawn from torch's global CPU generator, so torch.manual_seed makes a run reproducible; on a
    # GPU this is host work, no launch or sync (runtime.host_work says so to the layer counts)
    with runtime.host_work():
        return int(torch.randint(0, 2 ** 62, (1,), device="cpu").item())


def _codes(packed):
    return ops.trusted.unpack_int4(packed)


def _even_rows(t):
    return _pad2(t, _round_up(t.shape[0], 2), t.shape[1])


def padded(t, rows, recipe):
    """t (rows', D) as the quantizer sees it: fp32, zero-padded to `rows` rows and along D to a
    whole number of Hadamard blocks (HQ) or an even count (packing)."""
    mult = recipe.block_size if recipe.hadamard else 2
    return _pad2(t.float(), rows, _round_up(t.shape[1], mult))


def rotated(tp, recipe):
    """The values the forward quantizer rounds: tp @ BlockDiag(H) for HQ, tp itself otherwise."""
    return block_hadamard(tp, recipe.block_size) if recipe.hadamard else tp


# ---- the backward GEMMs ---------------------------------------------------------------------

def _fake_grad(g, kind):
    """dY as the float-path backward sees it (no INT4 codes to reuse: fp and int8 forwards)."""
    if kind == "fp":
        return g
    bits, rounding = {"int8_sr": (8, "stochastic"), "int4_rtn": (4, "nearest"),
                      "int4_sr": (4, "stochastic")}[kind]
    return fake_quantize(g, bits=bits, granularity="tensor", rounding=rounding,
                         generator=make_generator(_seed()))


class Int4:
    """An INT4 operand of a GEMM, packed along its reduction dim: the packed bytes and/or the
    int8 codes, each made once, when first needed. On the spec the GEMM multiplies codes, so an
    operand that the layer already holds as codes (a transpose, a gathered row set) is never
    packed only to be unpacked again; a kernel gets the packed bytes."""

    def __init__(self, packed=None, codes=None):
        self._packed, self._codes = packed, codes

    @property
    def packed(self):
        if self._packed is None:
            self._packed = ops.trusted.pack_int4(self._codes)
        return self._packed

    @property
    def codes(self):
        if self._codes is None:
            self._codes = _codes(self._packed)
        return self._codes

    def t(self):
        """The transpose, packed along the other dim (a backward GEMM reduces over it). Its codes
        are a transposed view, not a copy: the spec's integer GEMM takes any layout, and packing
        reads the view (a kernel gets contiguous packed bytes either way)."""
        return Int4(codes=self.codes.T)

    def even_rows(self):
        """Zero-padded to an even number of rows (so that its transpose packs)."""
        return Int4(codes=_even_rows(self.codes))


def _on_spec(name):
    return registry.resolve(name)[0] == "spec"


def _quantized(name, *args, **kwargs):
    """(Int4, scales) from ops.trusted.<name> (quantize_int4 or hadamard_quantize); on the spec
    (with the spec's GEMM) as codes, which that GEMM multiplies: nothing packed unless kept."""
    if _on_spec(name) and _on_spec("int4_matmul"):
        extra = {**kwargs.pop("spec_extra", {}), "as_codes": True}
        codes, scales = getattr(ops.trusted, name)(*args, **kwargs, spec_extra=extra)
        return Int4(codes=codes), scales
    packed, scales = getattr(ops.trusted, name)(*args, **kwargs)
    return Int4(packed), scales


def _matmul(a, a_scale, b, b_scale):
    """ops.int4_matmul of two Int4 operands, as codes on the spec (int4_matmul_trusted takes
    them), as packed bytes on a kernel."""
    if _on_spec("int4_matmul"):
        return ops.trusted.int4_matmul(None, a_scale, None, b_scale,
                                       spec_extra={"a_codes": a.codes, "b_codes": b.codes})
    return ops.trusted.int4_matmul(a.packed, a_scale, b.packed, b_scale)


def _gather(rows, probs, other=None):
    """ops.lss_gather of Int4 rows: (kept rows as Int4, other's kept rows, index, weight). The
    spec's gather selects rows of codes (nothing packed); a kernel's, packed bytes."""
    if _on_spec("lss_gather"):
        kept, kept_other, idx, weight = ops.trusted.lss_gather(rows.codes, probs, seed=_seed(), other=other)
        return Int4(codes=kept), kept_other, idx, weight
    kept, kept_other, idx, weight = ops.trusted.lss_gather(rows.packed, probs, seed=_seed(), other=other)
    return Int4(kept), kept_other, idx, weight


def int4_backward(g, saved, rounding, need_dx=True, need_dw=True):
    """dY quantized per tensor to INT4, then dX~ = dY W_hat and dW~ = dY^T X_hat as INT4 GEMMs."""
    gq, sg = _quantized("quantize_int4", g, granularity="tensor", rounding=rounding, seed=_seed())
    dx = _matmul(gq, sg, saved.w.t(), saved.sw) if need_dx else None
    dw = _matmul(gq.t(), sg, saved.x.t(), saved.sx) if need_dw else None
    return dx, dw


def lss_backward(g, saved, n_tokens, mode="sample", need_dx=True, need_dw=True):
    """Bit splitting + leverage score sampling (paper sec. 5): returns (dX~, dW~), rotated domain.

    The 2N stacked rows are [s_hi hi; s_lo lo]; row i and row i + N belong to token i.
    """
    px, sx, sw = saved.px, saved.sx, saved.sw
    Np, Dp = px.shape[0], 2 * px.shape[1]
    if _on_spec("bit_split"):          # codes: the spec's gather and GEMM take them unpacked
        hi, lo, s_hi, s_lo = ops.trusted.bit_split(g, seed=_seed(), spec_extra={"as_codes": True})
        stacked = Int4(codes=torch.cat([hi, lo]))
    else:
        hi, lo, s_hi, s_lo = ops.trusted.bit_split(g, seed=_seed())
        stacked = Int4(packed=torch.cat([hi, lo]))
    part_scale = torch.cat([s_hi.float().expand(Np), s_lo.float().expand(Np)])
    g_norm = torch.linalg.vector_norm(stacked.codes.float(), dim=1) * part_scale
    dx = dw = None
    if need_dx:
        # input grad: output rows are independent, so term i is row i of dY W: p_i ~ ||g_i||
        probs = lss_probabilities(g_norm, n_tokens) if mode == "sample" else None
        kept, _, idx, weight = _gather(stacked, probs)
        # the 1/p_i reweighting is per output row: it folds into the GEMM's per-row scale
        rows = _matmul(kept, (part_scale[idx] * weight)[:, None], saved.w.t(), sw)
        dx = torch.zeros(Np, Dp, device=g.device).index_add_(0, idx % Np, rows)
    if need_dw:
        # weight grad: dY^T X = sum_i g_i^T x_i, p_i ~ ||g_i|| ||x_i|| (the term's Frobenius norm)
        x_norm = torch.linalg.vector_norm(saved.x.codes.float(), dim=1) * sx.float()
        probs = lss_probabilities(g_norm * x_norm.repeat(2), n_tokens) if mode == "sample" else None
        if _on_spec("int4_matmul"):           # X's kept rows as codes, selected here
            kept, _, idx, weight = _gather(stacked, probs)
            kept_x = Int4(codes=saved.x.codes.index_select(0, idx % Np))
        else:                                 # packed, gathered by the same call
            kept, kept_xp, idx, weight = _gather(stacked, probs, other=torch.cat([px, px]))
            kept_x = Int4(kept_xp)
        if mode == "sample":
            # 1/p_i varies along the GEMM's reduction index (tokens), which an integer GEMM's
            # row/column scales cannot absorb: requantize the reweighted rows to INT4 with one
            # scale per output channel and stochastic rounding (still unbiased)
            vals = _even_rows(kept.codes.float() * (part_scale[idx] * weight)[:, None])
            vals_t = vals.T if _on_spec("quantize_int4") else vals.T.contiguous()    # the spec takes a view
            qa, sa = _quantized("quantize_int4", vals_t, granularity="row", rounding="stochastic",
                                seed=_seed())
            dw = _matmul(qa, sa, kept_x.even_rows().t(), sx)
        else:
            # weights are all 1: two exact GEMMs, the hi rows and the lo rows with their scales
            dw = torch.zeros(g.shape[1], Dp, device=g.device)
            for part, scale in ((idx < Np, s_hi), (idx >= Np, s_lo)):
                a = Int4(codes=kept.codes[part]).even_rows().t()
                b = Int4(codes=kept_x.codes[part]).even_rows().t()
                dw += _matmul(a, scale, b, sx)
    return dx, dw


def _lsq_scale_grad(d_fq, v, mask, codes, numel):
    """LSQ step-size gradient: sum of dL/d(fq(z)) * d(fq(z))/ds, times 1/sqrt(numel Q_P); v = z / s
    and its clip mask from _lsq_masks."""
    return (d_fq * lsq_step_size_term(v, codes, mask)).sum() * lsq_grad_scale(numel, QMAX[4])


# What LSQ's backward needs of each rounded value v = z / s (paper sec. 4.1, Esser et al.): its
# clip mask I (|v| <= Q) and, where not clipped, the remainder r = v - round(v) in [-1/2, 1/2]:
# d(s q(v))/ds is q - v = -r inside the range and the clipped level q = +-Q outside. The "2bit"
# record keeps, in 2 bits a value, r stochastically rounded to one of four levels c/3 - 1/2
# (c = 0..3: -1/2, -1/6, 1/6, 1/2), so that E[r_hat] = r and the step-size gradient, a sum over
# every value, stays unbiased. A clipped value needs no remainder: above Q it is stored as c = 3,
# below -Q as c = 0, which an unclipped +-Q code never is (an unclipped v rounded to +Q lies in
# [Q - 1/2, Q], so r <= 0 and c <= 2; mirrored for -Q), so code and c together give I exactly.
# Rounding r to the nearest of three fixed levels instead was measured biased: most values sit
# near 0, where r = v, and a level 0 swallowed them (docs/RESULTS.md).
# On a CPU the record is float arithmetic only: comparisons, bool masks, where and masked_fill
# cost 5 to 45 times a float multiply there (torch 2.13, 2048 x 256 fp32, measured).
_TABLES: dict = {}


def _table(name, device):
    """A small constant tensor of the 2-bit record, made once per device:
    "places", [1, 4, 16, 64]: four 2-bit values to one byte, c0 + 4 c1 + 16 c2 + 64 c3 (a GEMV);
    "levels", (256, 4): row b holds 2c - 3 for the four 2-bit values c of byte b (lsq_record's
    order), so that unpacking a record is one row lookup per byte."""
    key = (name, torch.device(device))
    if key not in _TABLES:
        if name == "places":
            t = torch.tensor([1.0, 4.0, 16.0, 64.0])
        else:
            b = torch.arange(256)
            t = (2 * torch.stack([(b >> (2 * i)) & 3 for i in range(4)], dim=1) - 3).float()
        _TABLES[key] = t.to(device)
    return _TABLES[key]


def _dither(n, generator, offset):
    """n values offset + u, u uniform on the 256 points (k + 1/2) / 256: 8 random bits each, seven
    from one int64 draw of torch's generator (random_ fills [0, 2^63): the top byte is short of a
    bit, so it is dropped). The rounding floor(t + u) has E = t to within 1/512."""
    dev = generator.device if generator is not None else "cpu"
    words = torch.empty(-(-n // 7), dtype=torch.int64, device=dev).random_(generator=generator)
    k = words.view(torch.uint8).view(-1, 8)[:, :7].reshape(-1)[:n]       # little-endian: byte 7 is the top
    return k.float().mul_(1.0 / 256).add_(offset + 1.0 / 512)


def lsq_record(z, scale, generator=None):
    """z (R, K) fp32 and the scale -> (R * K / 4 rounded up,) uint8: 2 bits per value."""
    v = z / scale
    r = v - v.round()                                   # in [-1/2, 1/2]
    # c = floor(3 r + 3/2 + u): 3 r + 3/2 in [0, 3] stochastically rounded, so E[c/3 - 1/2] = r
    c = torch.add(_dither(v.numel(), generator, 1.5).view_as(v), r, alpha=3.0).floor_()
    # clipped: v - clamp(v) is > 0 above Q and < 0 below -Q (0 inside), so this sends c to 3 or 0
    c.add_(v.sub_(v.clamp(-QMAX[4], QMAX[4])), alpha=2.0 ** 30).clamp_(0, 3)
    c = F.pad(c.flatten(), (0, -c.numel() % 4)).view(-1, 4)
    return (c @ _table("places", c.device)).to(torch.uint8)


def lsq_unrecord(record, codes):
    """(I, p, q), fp32 of codes' shape, from lsq_record's bytes and the INT4 codes q the same
    values rounded to: I is the STE's mask (0 where the value was clipped, else 1) and p = 2c - 3
    for the record's level index c, so the remainder's level c/3 - 1/2 is p / 6 where I = 1."""
    p = _table("levels", record.device).index_select(0, record.int()).view(-1)[:codes.numel()].view(codes.shape)
    q = codes.float()
    # q * p is 21 = Q * 3 exactly for (Q, c = 3) and (-Q, c = 0), the clipped pairs, and at most
    # 18 for every other pair: 21 - it, capped at 1, is I
    inside = torch.mul(q, p).neg_().add_(QMAX[4] * 3).clamp_(max=1.0)
    return inside, p, q


def _lsq_scale_grad_2bit(d_fq, inside, p, q, numel):
    """LSQ's step-size gradient from the 2-bit record (lsq_unrecord), and the STE's d_fq * I: the
    sum of d_fq times q (the clipped level) where I = 0 and -r_hat = -p/6 where I = 1, as sums
    and dot products."""
    d_in = d_fq * inside
    d, d_i = d_fq.flatten(), d_in.flatten()
    total = torch.dot(d - d_i, q.flatten()) - torch.dot(d_i, p.flatten()) / 6.0
    return total * lsq_grad_scale(numel, QMAX[4]), d_in


def _lsq_masks(z, scale):
    """(v, I): v = z / s and LSQ's clip mask I (1 where v was not clipped: |v| <= Q, as
    lsq_codes's -Q <= v <= Q)."""
    v = z / scale
    return v, v.abs() <= QMAX[4]


class _Saved:
    """What backward reads of the forward's INT4 operands: X_hat and W_hat as Int4 (each
    unpacked at most once) and their scales."""

    def __init__(self, px, sx, pw, sw):
        self.px, self.sx, self.pw, self.sw = px, sx, pw, sw
        self.x, self.w = Int4(px), Int4(pw)


class Int4LinearFunction(torch.autograd.Function):
    """Y = X W^T + b with quantized GEMMs; saves X's and W's INT4 codes (packed) and, with a learned
    LSQ scale, what its step-size gradient and the STE's clip masks need (Recipe.lsq_grad)."""

    @staticmethod
    def forward(ctx, x, weight, bias, s_x, s_w, recipe):
        r = recipe
        N, D = x.shape
        C = weight.shape[0]
        xf, wf = x.detach().float(), weight.detach().float()
        ctx.recipe, ctx.dims = r, (N, D, C)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if r.forward == "fp":
            y = xf @ wf.T
            ctx.save_for_backward(x.detach(), weight.detach())     # in their own dtype: no fp32 copy
        elif r.forward == "int8_row":
            # INT8 is the baseline; no INT8 kernel in the registry, so it runs as fake-quant fp32;
            # backward keeps the int8 codes and their scales (1 byte a value), not the fp32 values
            qx, sxr = quantize(xf, bits=8, granularity="row")       # one scale per token
            qw, swr = quantize(wf, bits=8, granularity="row")       # one per output channel
            y = dequantize(qx, sxr) @ dequantize(qw, swr).T
            ctx.save_for_backward(qx, sxr, qw, swr)
        else:
            xp, wp = padded(xf, _round_up(N, 2), r), padded(wf, _round_up(C, 2), r)
            sx_in = sw_in = zx = zw = xh = wh = None
            if r.uses_lsq:
                # a learned scale clips: backward needs, of the values it rounded (XH, WH), the
                # clip masks I_X, I_W and what LSQ's step-size gradient reads: the values
                # themselves ("exact") or their 2-bit record
                sx_in, sw_in = s_x.detach().float(), s_w.detach().float()
                xh, wh = rotated(xp, r), rotated(wp, r)
                if r.lsq_grad == "2bit":
                    gen = make_generator(_seed(), xh.device)
                    zx, zw = lsq_record(xh, sx_in, gen), lsq_record(wh, sw_in, gen)
                else:
                    zx, zw = xh, wh
            if r.hadamard:
                # rotation and rounding in one call: the kernel fuses them, so XH is not written
                # out here (with a learned LSQ scale XH exists already: the spec reuses it)
                qx, sx = _quantized("hadamard_quantize", xp, r.block_size, granularity="tensor", scale=sx_in,
                                    spec_extra={"rotated": xh})
                qw, sw = _quantized("hadamard_quantize", wp, r.block_size, granularity="tensor", scale=sw_in,
                                    spec_extra={"rotated": wh})
            else:
                qx, sx = _quantized("quantize_int4", xp, granularity="tensor", scale=sx_in)
                qw, sw = _quantized("quantize_int4", wp, granularity="tensor", scale=sw_in)
            y = _matmul(qx, sx, qw, sw)[:N, :C]
            if xf.numel() and wf.numel():
                # nothing on the hot path reads values (no host sync), and under a learned scale a
                # NaN or Inf rounds to some code: let it show in Y, as in nn.Linear (0 * max|.| is
                # 0 for finite input, NaN otherwise; one reduction each, no sync)
                y = y + (xf.abs().amax() + wf.abs().amax()) * 0
            px, pw = qx.packed, qw.packed           # backward keeps the packed bytes only
            ctx.save_for_backward(px, pw, sx, sw, zx, zw,
                                  s_x if r.uses_lsq else None, s_w if r.uses_lsq else None)
        if bias is not None:
            y = y + bias.detach().float()
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, gy):
        r = ctx.recipe
        N, D, C = ctx.dims
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b, need_sx, need_sw, _ = ctx.needs_input_grad
        g = gy.float()
        db = g.sum(0).to(b_dtype) if need_b else None
        if not r.int4_forward:
            if r.forward == "fp":
                xd, wd = (t.float() for t in ctx.saved_tensors)
            else:
                qx, sxr, qw, swr = ctx.saved_tensors
                xd, wd = dequantize(qx, sxr), dequantize(qw, swr)
            gq = _fake_grad(g, r.grad)
            dx = (gq @ wd).to(x_dtype) if need_x else None
            dw = (gq.T @ xd).to(w_dtype) if need_w else None
            return dx, dw, db, None, None, None

        px, pw, sx, sw, zx, zw, s_x, s_w = ctx.saved_tensors
        saved = _Saved(px, sx, pw, sw)
        Np, Cp = px.shape[0], pw.shape[0]
        gp = _pad2(g, Np, Cp)
        want_dx, want_dw = need_x or need_sx, need_w or need_sw
        if r.grad in ("fp", "int8_sr"):
            gq = _fake_grad(gp, r.grad)
            dxr = gq @ dequantize(saved.w.codes, sw) if want_dx else None
            dwr = gq.T @ dequantize(saved.x.codes, sx) if want_dw else None
        elif r.grad in ("int4_rtn", "int4_sr"):
            rounding = "nearest" if r.grad == "int4_rtn" else "stochastic"
            dxr, dwr = int4_backward(gp, saved, rounding, want_dx, want_dw)
        else:
            dxr, dwr = lss_backward(gp, saved, N, r.lss, want_dx, want_dw)
        # dxr = dL/d(X_hat), the gradient at the fake-quantized rotated input; the STE passes
        # it through where XH was not clipped (I_X), then H^T = H undoes the rotation
        ds_x = ds_w = None
        dzx, dzw = dxr, dwr
        if r.uses_lsq:
            Dp = 2 * px.shape[1]
            numel_x, numel_w = N * (Dp if r.hadamard else D), C * (Dp if r.hadamard else D)
            if r.lsq_grad == "2bit":
                # the STE's masked gradients come out of the step-size gradient's sums
                if dxr is not None:
                    ds, dzx = _lsq_scale_grad_2bit(dxr, *lsq_unrecord(zx, saved.x.codes), numel_x)
                    ds_x = ds.to(s_x.dtype) if need_sx else None
                if dwr is not None:
                    ds, dzw = _lsq_scale_grad_2bit(dwr, *lsq_unrecord(zw, saved.w.codes), numel_w)
                    ds_w = ds.to(s_w.dtype) if need_sw else None
            else:
                (vx, mx), (vw, mw) = _lsq_masks(zx, s_x.detach().float()), _lsq_masks(zw, s_w.detach().float())
                if need_sx:
                    ds_x = _lsq_scale_grad(dxr, vx, mx, saved.x.codes, numel_x).to(s_x.dtype)
                if need_sw:
                    ds_w = _lsq_scale_grad(dwr, vw, mw, saved.w.codes, numel_w).to(s_w.dtype)
                dzx = dxr * mx if need_x else None
                dzw = dwr * mw if need_w else None
        dx = dw = None
        if need_x:
            dx = (block_hadamard(dzx, r.block_size) if r.hadamard else dzx)[:N, :D].to(x_dtype)
        if need_w:
            dw = (block_hadamard(dzw, r.block_size) if r.hadamard else dzw)[:C, :D].to(w_dtype)
        return dx, dw, db, ds_x, ds_w, None


# ---- the fused path: int4_hq_lss on the library's kernels --------------------------------

FUSED_SLOTS = ("hadamard_quantize", "int4_matmul", "bit_split", "lss_gather")
_FUSED = []


def _fused_kernels():
    """int4lab.kernels.fused_linear, or None where it cannot run (no Triton, a student copy)."""
    if not _FUSED:
        try:
            from int4lab.kernels import fused_linear
        except Exception:                   # no triton, or a copy without the library's kernels
            fused_linear = None
        _FUSED.append(fused_linear)
    return _FUSED[0]


def fused_path(recipe, x2, weight):
    """Whether Int4Linear runs this call through kernels/fused_linear.py: the default recipe's
    choices (HQ with LSQ scale, 2-bit record, bit splitting + sampled LSS), every slot it fuses
    resolving to the library's Triton kernels (int4lab.use("triton"), or "auto" on a GPU), and
    shapes it takes (D a multiple of the Hadamard block, N and C even, fp32 on a CPU). Anything
    else runs the general path below, slot by slot."""
    r = recipe
    if not (r.forward == "int4_hq" and r.grad == "bs_lss" and r.lss == "sample"
            and r.hq_scale == "lsq" and r.lsq_grad == "2bit"):
        return False
    (N, D), C = x2.shape, weight.shape[0]
    if N < 2 or N % 2 or C % 2 or D % r.block_size or D % 4:
        return False
    if x2.device.type != "cuda" and (x2.dtype != torch.float32 or weight.dtype != torch.float32):
        return False                        # the interpreter has no bf16
    if any(registry.resolve(name)[0] != "triton" for name in FUSED_SLOTS):
        return False
    fused = _fused_kernels()
    return fused is not None and r.block_size in fused.BLOCK_SIZES


class FusedInt4LinearFunction(torch.autograd.Function):
    """Int4LinearFunction for int4_hq_lss on kernels/fused_linear.py: 13 launches per forward +
    backward, no host sync (its docstring says how, and what differs from the spec's layer)."""

    @staticmethod
    def forward(ctx, x, weight, bias, s_x, s_w, recipe):
        fl = _fused_kernels()
        (N, D), C = x.shape, weight.shape[0]
        sx, sw = s_x.detach(), s_w.detach()
        registry.note_ran(FUSED_SLOTS, "triton")
        train = any(ctx.needs_input_grad[:5])     # else only the codes: no record, no W^T codes
        qx, _, rx, rsx, sqx = fl.quantize_rows(x.detach(), sx, recipe.block_size, _seed(),
                                               for_backward=train)
        qw, qwt, rw, rsw, _ = fl.quantize_rows(weight.detach(), sw, recipe.block_size, _seed(),
                                               transposed=True, for_backward=train)
        y = fl.gemm(qx, rsx[:, None], qw, rsw[:, None], out_dtype=x.dtype)
        if bias is not None:
            y = y + bias.detach()
        ctx.recipe, ctx.dims = recipe, (N, D, C)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(qx, rx, sqx, qw, qwt, rw, sx, sw)
        return y

    @staticmethod
    def backward(ctx, gy):
        fl = _fused_kernels()
        qx, rx, sqx, qw, qwt, rw, sx, sw = ctx.saved_tensors
        r, (N, D, C) = ctx.recipe, ctx.dims
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b, need_sx, need_sw, _ = ctx.needs_input_grad
        want_dx, want_dw = need_x or need_sx, need_w or need_sw
        registry.note_ran(FUSED_SLOTS, "triton")
        db, amax = fl.grad_columns(gy, b_dtype if need_b else None)
        stacked, scales, sq = fl.split_rows(gy, amax, _seed())
        src, wt, slot = fl.lss_plan(sq, scales, sqx, sx, N, _seed())
        kept, a, sa, b = fl.lss_operands(stacked, qx, src, wt, _seed(), want_dx, want_dw)
        parts = torch.empty((2, max(fl.backward_programs(N, D)[0], fl.backward_programs(C, D)[0])),
                            dtype=torch.float32, device=gy.device)
        dx = dw = ds_x = ds_w = None
        if want_dx:   # sampled rows x W^T's codes, then per token: hi row + lo row, STE, H^T
            dxr = fl.gemm(kept, wt[0][:, None], qwt, sw)
            dx = fl.lsq_backward(dxr, slot, rx, qx, N, r.block_size, N * D, x_dtype, parts[0])
        if want_dw:
            dwr = fl.gemm(a, sa[:, None], b, sx)
            dw = fl.lsq_backward(dwr, None, rw, qw, C, r.block_size, C * D, w_dtype, parts[1])
        if need_sx or need_sw:
            ds = parts.sum(1)
            ds_x = ds[0] if need_sx else None
            ds_w = ds[1] if need_sw else None
        return (dx if need_x else None), (dw if need_w else None), db, ds_x, ds_w, None


class Int4Linear(nn.Linear):
    """A drop-in nn.Linear (same weight, bias and init) whose GEMMs follow a Recipe.

    Inputs (..., in_features) have their leading dims flattened into tokens. Recipes with a
    learned LSQ scale add two small quantizer modules, x_quantizer and w_quantizer.
    """

    def __init__(self, in_features, out_features, bias=True, recipe="int4_hq_lss", device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.recipe = get_recipe(recipe)
        if self.recipe.uses_lsq:
            self.x_quantizer = LSQQuantizer(4, self.recipe.lsq_warmup_steps).to(device)
            self.w_quantizer = LSQQuantizer(4, self.recipe.lsq_warmup_steps).to(device)
        else:
            self.x_quantizer = self.w_quantizer = None

    @classmethod
    def from_linear(cls, linear, recipe="int4_hq_lss"):
        """An Int4Linear with a copy of linear's weight and bias."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    recipe=recipe, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Int4Linear expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Int4Linear({self.in_features} -> {self.out_features}) expects input of "
                             f"shape (..., {self.in_features}); got {tuple(x.shape)}")
        r = self.recipe
        if (r.forward == "fp" and r.grad == "fp") or x.numel() == 0:
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(-1, self.in_features)
        fused = fused_path(r, x2, self.weight)
        s_x = s_w = None
        if r.uses_lsq:
            with torch.no_grad():
                # LSQ initialises (and warms up) its scale from the values it will round; after
                # the warm-up it needs none, so they are rotated only while it looks (the fused
                # kernels clamp the scale themselves)
                s_x = self.x_quantizer.observe(lambda: self._lsq_view(x2), clamp=not fused)
                s_w = self.w_quantizer.observe(lambda: self._lsq_view(self.weight), clamp=not fused)
        function = FusedInt4LinearFunction if fused else Int4LinearFunction
        y = function.apply(x2, self.weight, self.bias, s_x, s_w, r)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _lsq_view(self, t):
        # HQ's blocks include the zero padding of D; a plain tensor has none to average over
        return rotated(padded(t, t.shape[0], self.recipe), self.recipe) if self.recipe.hadamard else t.float()

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe.name!r}"


def _swappable(module: nn.Module) -> bool:
    """An nn.Linear (or a subclass) that is not already an Int4Linear. MultiheadAttention's
    out_proj is left alone: attention reads its weight directly, so a swap would do nothing."""
    return (isinstance(module, nn.Linear) and not isinstance(module, Int4Linear)
            and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear))


def quantize_model(model: nn.Module, recipe: "Recipe | str" = "int4_hq_lss",
                   filter_fn: Callable[[nn.Module, str], bool] | None = None,
                   skip: str | Iterable[str] | None = None) -> nn.Module:
    """Swap the model's linear layers for Int4Linear in place (weights copied); returns the model.

    Which layers (torchao's convention): every nn.Linear (or subclass, not already an Int4Linear)
    for which `filter_fn(module, fqn)` is True, fqn being its name in `model.named_modules()`.
    With neither filter_fn nor skip, every such layer except the output head, which stays full
    precision as in the paper: the `lm_head` / `head` attribute if the model has one, else the
    last linear layer. skip: names to leave alone instead (each must name a linear layer of the
    model; `skip=()` swaps the head too).
    Embeddings, norms and attention matmuls are not nn.Linear and stay untouched. Build the
    optimizer after calling this: the swapped layers hold new parameters.
    """
    recipe = get_recipe(recipe)
    if isinstance(model, nn.Linear):
        raise TypeError("quantize_model swaps layers inside a model; for a single layer use "
                        "Int4Linear.from_linear(linear, recipe)")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn must be callable (module, fqn) -> bool, got {type(filter_fn).__name__}")
    linears = [(n, m) for n, m in model.named_modules() if n and _swappable(m)]
    names = {n for n, _ in linears}
    if skip is None and filter_fn is None:
        heads = [n for n in ("lm_head", "head") if n in names]
        skip = set(heads) if heads else ({linears[-1][0]} if linears else set())
    else:
        skip = set() if skip is None else {skip} if isinstance(skip, str) else set(skip)
        if skip - names:
            raise ValueError(f"skip names {sorted(skip - names)} are not linear layers of the model; "
                             f"its linear layers are: {sorted(names)}")
    filter_fn = filter_fn or _always
    for name, m in linears:
        if name in skip or not filter_fn(m, name):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int4Linear.from_linear(m, recipe))
    return model


def _always(module: nn.Module, fqn: str) -> bool:
    return True

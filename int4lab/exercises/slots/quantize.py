"""Slot quantize_int4 (lesson 02): dynamic INT4 quantization (row, block or tensor scales), packed.

Round-to-nearest is checked bit for bit against the spec, exact ties included (torch.round
rounds half to even). Stochastic rounding cannot share torch's random draws, so it is checked
in distribution: every code is the floor or the ceil of x / s, the codes are unbiased, and no
two rows (or columns) share their random numbers.
"""
import math

import torch

from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Mismatch, Slot, register
from int4lab.exercises.slots.common import ODD_ROWS, generator, hint_swapped_nibbles, noncontiguous, packed_pair_hint
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import QMAX, dequantize, quantize_int4_spec, quantize_int4_trusted, validate_quantize_int4

Z_MAX = 7.0          # a correlation this many standard deviations out fails (p ~ 1e-11 per pair)


# ---- inputs ---------------------------------------------------------------------------------

def _randn(shape, seed, dtype=torch.float32):
    """Rows of very different sizes, so every row gets its own scale."""
    g = generator(seed)
    x = torch.randn(shape, generator=g)
    if len(shape) >= 1 and x.numel():
        x = x * (0.1 + 4 * torch.rand(tuple(shape[:-1]) + (1,), generator=g))
    return x.to(dtype)


def _grid(shape, seed, frac, dtype=torch.float32):
    """c * (k + frac) with integer k in [-6, 5], and 7c at every 16th column.

    c is a power of two, so every group's max is 7c, its scale is exactly c and x / s is
    exactly k + frac: frac 0.5 gives exact ties, frac 0.25 values that round up 1 time in 4.
    """
    g = generator(seed)
    k = torch.randint(-6, 6, shape, generator=g).float()
    x = (k + frac) * 0.25
    x[..., 0::16] = 7 * 0.25
    if x.shape[-1] > 1:
        x[..., 1::16] = -7 * 0.25
    return x.to(dtype)


def _make(shape, dtype=torch.float32, contiguous=True, inputs="randn", edit=None, frac=0.5, **kw):
    def make(seed, device):
        x = _randn(shape, seed, dtype) if inputs == "randn" else _grid(shape, seed, frac, dtype)
        if edit is not None:
            edit(x)
        x = x.to(device)
        return ((x if contiguous else noncontiguous(x)),), dict(kw)
    return make


def _zero_rows(x):
    if x.shape[0] > 5:
        x[0] = 0
        x[5] = 0


def _outlier(x):
    x[..., 1, 3] = 1e4


# ---- comparing ------------------------------------------------------------------------------

_exact_pair = compare.each(compare.exact, compare.exact, names=["packed", "scales"])


def _exact(expected, got, args, kwargs):
    return _exact_pair(expected, got)


def _structure(expected, got):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return Mismatch(f"expected a tuple (packed, scales), got {compare._describe(got)}")
    for what, e, g in (("packed", expected[0], got[0]), ("scales", expected[1], got[1])):
        m = compare._structure(e, g, what)
        if m:
            return m
    return None


def _ratio_v(x, scales):
    """x / s per element, as the spec computes it (fp32 division), clamped to [-7, 7]."""
    xf = x.detach().float().cpu()
    s = dequantize(torch.ones(xf.shape, dtype=torch.int8), scales.cpu())
    return (xf / s).clamp(-QMAX[4], QMAX[4])


def _max_pair_z(r, ok, axis):
    """The largest correlation z-score between two rows (axis 0) or two columns (axis 1).

    r: standardized residuals (q - v) / sd, 0 where the rounding is not random enough to count;
    ok: 1 where it counts. Pairs sharing fewer than 32 such elements are not scored.
    """
    if axis:
        r, ok = r.T, ok.T
    if r.shape[0] < 2:
        return 0.0, None
    n = ok @ ok.T
    z = torch.where(n >= 32, (r @ r.T) / n.clamp_min(1).sqrt(), torch.zeros_like(n))
    z.fill_diagonal_(0)
    i = int(z.abs().argmax())
    return float(z.abs().flatten()[i]), divmod(i, z.shape[1])


def _bernstein_ok(dev, var_sum):
    """Is a sum of independent zero-mean terms bounded by 1 consistent with |sum| = dev (p > 1e-9)?"""
    return dev * dev <= 2 * 21.4 * (var_sum + dev / 3)


def _stochastic(expected, got, args, kwargs):
    """Scales bit for bit; codes: floor or ceil of x / s, unbiased, independent draws."""
    m = _structure(expected, got)
    if m:
        return m
    m = compare.exact(expected[1], got[1], what="scales")
    if m:
        return m
    x = args[0]
    v = _ratio_v(x, expected[1]).double()
    q = unpack_int4(got[0].cpu()).double()
    lo, hi = torch.floor(v), torch.ceil(v)
    # floor(v + u) in fp32 can round an integer v up when u is within 2**-23 of 1 (2.0 + 0.99999997
    # is 3.0): about 1e-7 per integer value, so allow a handful of those and no more
    fp32_up = (v == lo) & (q == lo + 1) & (lo + 1 <= QMAX[4])
    bad = (q != lo) & (q != hi) & ~fp32_up
    if int(fp32_up.sum()) > 2 + 1e-4 * int((v == lo).sum()):
        bad = bad | fp32_up
    if bad.any():
        idx = tuple(bad.nonzero()[0].tolist())
        return Mismatch(f"codes: {int(bad.sum())} of {bad.numel()} are neither the floor nor the ceil "
                        f"of x / s; first at index {idx}: x / s = {v[idx].item():.4f}, got {int(q[idx])}",
                        index=idx, expected=v[idx].item(), got=int(q[idx]))
    p = v - lo                                   # probability of rounding up
    var = p * (1 - p)
    n = int((var > 0).sum())
    if n == 0:
        return None
    rnd = var > 0
    if n >= 20:
        for name, f in (("rounded to nearest", torch.round), ("rounded down (floor)", torch.floor),
                        ("rounded up (ceil)", torch.ceil), ("truncated toward zero", torch.trunc)):
            if torch.equal(q[rnd], f(v)[rnd]):
                return Mismatch(f"with rounding='stochastic' the codes are not random: all {n} values x / s "
                                f"that are not integers were {name}. Round up with probability "
                                "frac(x / s): floor(x / s + u), u uniform in [0, 1) from "
                                "tl.rand(seed, offsets)")
    K = x.shape[-1]
    ok = ((p >= 0.1) & (p <= 0.9)).reshape(-1, K).double()
    r = torch.where(ok > 0, (q - v).reshape(-1, K) / var.reshape(-1, K).clamp_min(1e-12).sqrt(),
                    torch.zeros_like(ok))
    for axis, what in ((0, "rows"), (1, "columns")):
        z, pair = _max_pair_z(r, ok, axis)
        if z > Z_MAX:
            return Mismatch(f"stochastic rounding reuses random numbers: {what} {pair[0]} and {pair[1]} "
                            f"(of the input seen as {tuple(r.shape)}) round the same way far too often "
                            f"({z:.1f} standard deviations). Each element needs its own random number: "
                            "tl.rand(seed, offsets) with a different offset per element (its flat index)")
    dev, sd = float((q - v).sum()), math.sqrt(float(var.sum()))
    if not _bernstein_ok(abs(dev), sd * sd):
        way = "up" if dev > 0 else "down"
        return Mismatch(f"stochastic rounding is biased: over the {n} values x / s that are not "
                        f"integers, the codes sum to {dev:+.1f} from x / s (expected 0 +- {sd:.1f}): "
                        f"they round {way} too often. Round up with probability frac(x / s): "
                        "floor(x / s + u), u uniform in [0, 1)")
    return None


# ---- hints ----------------------------------------------------------------------------------

def _codes(t):
    return unpack_int4(t.cpu()).to(torch.int16)


def _pair_ok(expected, got):
    return (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(g, torch.Tensor) for g in got)
            and got[0].shape == expected[0].shape and got[0].dtype == torch.uint8)


def _hint_structure(args, kwargs, expected, got):
    return packed_pair_hint(got, expected, kwargs.get("granularity", "row"),
                            'x.shape[:-1] + (K // block_size,): one per block', ' (compute max|x| / 7 in fp32)')


def _hint_zero_group(args, kwargs, expected, got):
    if _pair_ok(expected, got) and got[1].shape == expected[1].shape:
        s = got[1].cpu().float()
        if not torch.isfinite(s).all() or (s == 0).any():
            return ("a scale is 0, NaN or Inf: an all-zero group has max|x| = 0, and the spec gives it "
                    "scale 1 (its codes are 0 anyway): s = where(max > 0, max / 7, 1)")
    return None


def _hint_qmax(args, kwargs, expected, got):
    if _pair_ok(expected, got) and got[1].shape == expected[1].shape and kwargs.get("scale") is None:
        e, g = expected[1].cpu().float(), got[1].cpu().float()
        ok = (e != 1) & (g != 0)
        if ok.any():
            r = (g[ok] / e[ok]).median().item()
            for qp in (8, 15, 16, 1):
                if abs(r - 7 / qp) < 1e-3:
                    return (f"the scales are max|x| / {qp}: INT4 codes here are symmetric, in [-7, 7], "
                            "so s = max|x| / 7 (Q_P = 7)")
    return None


def _mismatched_codes(args, kwargs, expected, got):
    if kwargs.get("rounding", "nearest") != "nearest" or not _pair_ok(expected, got):
        return None
    if not torch.equal(got[1].cpu(), expected[1].cpu()):
        return None
    e, g = _codes(expected[0]), _codes(got[0])
    bad = e != g
    if not bad.any():
        return None
    return _ratio_v(args[0], expected[1]), e, g, bad


def _hint_ties(args, kwargs, expected, got):
    m = _mismatched_codes(args, kwargs, expected, got)
    if m:
        v, e, g, bad = m
        tie = (v - torch.floor(v)) == 0.5
        if tie[bad].all():
            return ("codes differ only at exact ties (x / s = k + 0.5): torch.round rounds a tie to the "
                    "EVEN neighbour (2.5 -> 2, 3.5 -> 4, -2.5 -> -2); floor(v + 0.5) or rounding half "
                    "away from zero gets half of them wrong")
    return None


def _hint_truncation(args, kwargs, expected, got):
    m = _mismatched_codes(args, kwargs, expected, got)
    if m:
        v, e, g, bad = m
        if torch.equal(g[bad].double(), torch.trunc(v[bad]).double()):
            return "the codes are truncated toward zero: converting a float to int does not round; round first"
        if torch.equal(g[bad].double(), torch.floor(v[bad]).double()):
            return "the codes are rounded down (floor): round to nearest instead"
    return None


def _hint_clamp(args, kwargs, expected, got):
    m = _mismatched_codes(args, kwargs, expected, got)
    if m:
        v, e, g, bad = m
        if (e[bad].abs() == QMAX[4]).all():
            return ("codes differ where x / s is beyond +-7: clamp to [-7, 7] (a given scale clips the "
                    "values beyond 7 s); an unclamped 8 wraps to -8 in a nibble")
    return None


# ---- checks ---------------------------------------------------------------------------------

def _c(name, shape, compare=_exact, hidden=False, seeds=(0,), **kw):
    return Check(name, _make(shape, **kw), compare, seeds=seeds, hidden=hidden)


def _checks():
    f16, f64, more = torch.float16, torch.float64, (1, 2, 3)
    blk, ten, sto = dict(granularity="block"), dict(granularity="tensor"), dict(rounding="stochastic")
    visible = [_c(f"{r}x34 row", (r, 34)) for r in ODD_ROWS] + [
        _c("3x130 row", (3, 130)),
        _c("31x66 row fp16", (31, 66), dtype=f16),
        _c("31x66 row non-contiguous", (31, 66), contiguous=False),
        _c("33x64 block 32", (33, 64), **blk),
        _c("5x96 block 16 fp16", (5, 96), dtype=f16, block_size=16, **blk),
        _c("129x34 tensor", (129, 34), **ten),
        _c("31x66 tensor, given scale 0.05 (clips)", (31, 66), scale=0.05, **ten),
        _c("3x34 row, given scale", (3, 34), scale=torch.tensor(0.3)),
        _c("7x64 exact ties (x / s = k + 0.5)", (7, 64), inputs="grid"),
        _c("0x8 (empty)", (0, 8)),
        _c("4x0 (empty) block", (4, 0), **blk),
        _c("65x64 stochastic, x / s = k + 1/4", (65, 64), _stochastic, inputs="grid", frac=0.25, seed=0, **sto),
        _c("127x34 stochastic", (127, 34), _stochastic, seed=1, **sto)]
    # hidden: more seeds and shapes, and the edge cases
    hidden = [_c(f"{r}x34 row, more seeds", (r, 34), seeds=more) for r in (3, 129)] + [
        _c("9x2050 row", (9, 2050)),
        _c("5x7x66 row (3-D)", (5, 7, 66)),
        _c("1x2 row", (1, 2)),
        _c("66 (1-D) row", (66,)),
        _c("31x66 row fp64", (31, 66), dtype=f64),
        _c("127x96 fp16 non-contiguous", (127, 96), dtype=f16, contiguous=False, seeds=more),
        _c("2x3x64 block 16 (3-D)", (2, 3, 64), block_size=16, **blk),
        _c("3x36 block 6", (3, 36), block_size=6, **blk),
        _c("129x128 block 128 non-contiguous", (129, 128), block_size=128, contiguous=False, **blk),
        _c("5x2 block 2", (5, 2), block_size=2, **blk),
        _c("3x8194 tensor", (3, 8194), **ten),
        _c("127x34 tensor fp16 non-contiguous", (127, 34), dtype=f16, contiguous=False, **ten),
        _c("0x8 tensor (empty)", (0, 8), **ten),
        _c("4x0 row (empty)", (4, 0)),
        _c("33x64 block, given scale 0.05", (33, 64), scale=0.05, **blk),
        _c("17x34 all-zero rows", (17, 34), edit=_zero_rows),
        _c("17x64 all-zero rows, block", (17, 64), edit=_zero_rows, **blk),
        _c("4x6 all zero, tensor", (4, 6), edit=lambda x: x.zero_(), **ten),
        _c("9x66 one huge outlier", (9, 66), edit=_outlier),
        _c("9x66 one huge outlier, tensor", (9, 66), edit=_outlier, **ten),
        _c("31x128 exact ties, fp16", (31, 128), dtype=f16, inputs="grid", seeds=more),
        _c("31x128 exact ties, block 32", (31, 128), inputs="grid", **blk),
        _c("31x128 exact ties, tensor", (31, 128), inputs="grid", **ten),
        _c("65x128 stochastic, x / s = k + 1/4, more seeds", (65, 128), _stochastic, inputs="grid", frac=0.25,
           seed=5, seeds=more, **sto),
        _c("64x64 stochastic, x / s = k + 1/2, tensor", (64, 64), _stochastic, inputs="grid", frac=0.5, seed=6,
           **ten, **sto),
        _c("33x96 stochastic block 32", (33, 96), _stochastic, seed=7, seeds=more, **blk, **sto),
        _c("31x66 stochastic, given scale 0.05", (31, 66), _stochastic, seed=8, scale=0.05, **sto),
        _c("5x7x66 stochastic fp16 (3-D)", (5, 7, 66), _stochastic, dtype=f16, seed=9, **sto)]
    for check in hidden:
        check.hidden = True
    return visible + hidden


register(Slot(
    name="quantize_int4", spec=quantize_int4_spec, trusted=quantize_int4_trusted,
    triton="int4lab.kernels.quantize_int4:quantize_int4",
    validate=validate_quantize_int4, lesson="02", checks=_checks(),
    hints=[_hint_structure, hint_swapped_nibbles, _hint_zero_group, _hint_qmax, _hint_ties, _hint_clamp,
           _hint_truncation],
    bench=Bench(make=lambda n, d: ((torch.randn(n, n, device=d, dtype=torch.bfloat16),), {}),
                baseline=torch.clone, baseline_name="torch.clone (bf16)", sizes=(1024, 4096, 8192),
                # read 2 bytes, write half a byte per value, plus one fp32 scale per row
                work=lambda a, k: a[0].numel() * 2.5 + a[0].shape[0] * 4),
))

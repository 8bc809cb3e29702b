"""Slots bit_split and lss_gather (lesson 06): the backward pass's gradient quantization.

Both are stochastic, so the checks compare the deterministic parts exactly (hi, the scales,
which rows probs=None keeps) and the random parts in distribution:
  - bit_split's lo: every code must be the floor or the ceil of the exact residual
    r = g s - 14 hi (clamped to [-6, 6]), and it must round up with probability frac(r). The
    check bins the codes by frac(r) and compares the number of round-ups in each bin with its
    expectation (a z-score from the Bernoulli variance), which catches round-to-nearest (biased
    in every bin) and noise shared between elements.
  - lss_gather with probs: kept rows are exact copies, index ascending, weight 1/p; p = 0 rows
    never kept and p = 1 rows always; the number of kept rows per band of p matches sum p
    (z-score), and the reweighted sum of the kept rows estimates the full sum without bias.
The z-limit is 6: a correct kernel fails it with probability around 1e-9 per test, a biased
one (the checks use thousands of codes) fails it by tens of standard deviations.
"""
import math

import torch

from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Mismatch, Slot, register
from int4lab.exercises.slots.common import generator, noncontiguous
from int4lab.spec.gradients import (
    BS_CLAMP,
    BS_STEP,
    bit_split_scale,
    bit_split_spec,
    bit_split_trusted,
    lss_gather_spec,
    lss_gather_trusted,
    validate_bit_split,
    validate_lss_gather,
)
from int4lab.spec.packing import pack_int4, unpack_int4

Z_LIMIT = 6.0


def _is_tensor_like(expected, got):
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype


# ---- bit_split: inputs ----------------------------------------------------------------------

def _grad(shape, dtype=torch.float32, contiguous=True, kind="sparse"):
    """A gradient like the paper's: a few token rows large, most near zero."""
    def make(seed, device):
        gen = generator(seed)
        n, c = shape
        if kind == "sparse":
            g = torch.randn(n, c, generator=gen) * torch.rand(n, 1, generator=gen) ** 4
        elif kind == "zeros":
            g = torch.zeros(n, c)
        elif kind == "outlier":        # one value 10^4 times the rest: everything else is lo
            g = torch.randn(n, c, generator=gen) * 1e-3
            g[n // 2, c // 3] = -10.0
        elif kind == "ties":           # s = 128 exactly, and g s = 14 k + 7: v / 14 is k + 1/2
            k = torch.randint(-7, 7, (n, c), generator=gen).float()
            g = (14 * k + 7) / 128
            g[0, 0] = 98 / 128         # max|g| = 98/128 makes s = 196 / (2 max) = 128
        else:
            raise ValueError(kind)
        g = g.to(dtype).to(device)
        return ((g if contiguous else noncontiguous(g)),), {"seed": 1000 + seed}
    return make


def _split_reference(g):
    """(v = g s, hi, r = v - 14 hi) in fp32, exactly as the spec computes them."""
    gf = g.float().cpu()
    s = bit_split_scale(gf)
    v = gf * s
    hi = torch.round(v / BS_STEP).clamp(-BS_CLAMP, BS_CLAMP)
    return v, hi, v - BS_STEP * hi


# ---- bit_split: compare ---------------------------------------------------------------------

def _lo_stochastic(r, lo, what="lo (packed)"):
    """None when lo (codes) is a valid, unbiased stochastic rounding of the residual r."""
    lo = lo.float()
    # floor(r) and ceil(r), widened by one where r is within 1e-3 of an integer: a GPU may fuse
    # g * s - 14 * hi into one fma and see r an ulp away from the spec's (it only moves lo)
    low = (torch.ceil(r - 1e-3) - 1).clamp(-BS_CLAMP, BS_CLAMP)
    high = (torch.floor(r + 1e-3) + 1).clamp(-BS_CLAMP, BS_CLAMP)
    bad = (lo < low) | (lo > high)
    if bad.any():
        idx = tuple(bad.nonzero()[0].tolist())
        return Mismatch(f"{what}: {int(bad.sum())} of {bad.numel()} codes are not the floor or the "
                        f"ceil of the exact residual g*s - 14*hi (clamped to [-6, 6]); first at "
                        f"index {idx}: residual {r[idx].item():.4f}, got {int(lo[idx].item())}",
                        index=idx, expected=r[idx].item(), got=lo[idx].item())
    # unbiased: where the clamp does not bind, P(round up) = frac(r); test it by bands of frac(r)
    fl = torch.floor(r)
    f = r - fl
    free = (fl >= -BS_CLAMP) & (fl + 1 <= BS_CLAMP) & (f > 0)
    up = (lo == fl + 1).float()
    for a, b in ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)):
        band = free & (f >= a) & (f < b)
        var = float((f * (1 - f))[band].sum())
        if var < 4:                        # too few codes in this band to tell anything
            continue
        n_up, n_exp = float(up[band].sum()), float(f[band].sum())
        z = (n_up - n_exp) / math.sqrt(var)
        if abs(z) > Z_LIMIT:
            return Mismatch(f"{what}: biased rounding. Of the {int(band.sum())} residuals whose "
                            f"fractional part is in [{a}, {b}), {int(n_up)} rounded up where "
                            f"{n_exp:.0f} +- {math.sqrt(var):.0f} were expected (z = {z:+.1f}): "
                            "stochastic rounding rounds r up with probability frac(r)")
    return None


def _compare_bit_split(expected, got, args, kwargs):
    names = ["hi (packed)", "lo (packed)", "scale_hi", "scale_lo"]
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        return Mismatch(f"output: expected a tuple of 4 outputs ({', '.join(names)}), "
                        f"got {compare._describe(got)}")
    for i in (2, 3, 0):
        m = compare.exact(expected[i], got[i], what=names[i])
        if m:
            return m
    m = compare._structure(expected[1], got[1], names[1])
    if m:
        return m
    _, _, r = _split_reference(args[0])
    return _lo_stochastic(r, unpack_int4(got[1].cpu()))


# ---- bit_split: hints -----------------------------------------------------------------------

def _hint_bs_scales(args, kwargs, expected, got):
    e_hi, e_lo = expected[2].item(), expected[3].item()
    g_hi, g_lo = float(got[2]), float(got[3])
    if (g_hi, g_lo) != (e_hi, e_lo):
        if math.isclose(g_hi, e_hi, rel_tol=1e-5) and math.isclose(g_lo, e_lo, rel_tol=1e-5):
            return ("the scales are off in the last bits: compute them as the spec does, in fp32, "
                    "with IEEE division (tl.math.div_rn): s = 196 * (1 / (2 max|g|)), "
                    "scale_lo = 1 / s, scale_hi = 14 * scale_lo")
        return ("the scales are the value of one code step: scale_hi = 14 / s and scale_lo = 1 / s, "
                "with s = 196 / (2 max|g|) over the whole tensor (s = 1 when g is all zero), in fp32")
    return None


def _hint_bs_nibbles(args, kwargs, expected, got):
    for i in (0, 1):
        g = got[i]
        if _is_tensor_like(expected[i], g) and not torch.equal(g.cpu(), expected[i].cpu()):
            swapped = ((g.cpu() & 0x0F) << 4) | (g.cpu() >> 4)
            if i == 0 and torch.equal(swapped, expected[0].cpu()):
                return ("the two nibbles are swapped: element 2j goes in the LOW nibble (bits 0-3) "
                        "and element 2j+1 in the HIGH nibble, as in pack_int4")
    return None


def _hint_bs_ties(args, kwargs, expected, got):
    if not _is_tensor_like(expected[0], got[0]):
        return None
    v, hi, _ = _split_reference(args[0])
    e, g = unpack_int4(expected[0].cpu()), unpack_int4(got[0].cpu())
    bad = e != g
    x = v / BS_STEP
    tie = (x - torch.floor(x)) == 0.5
    if bad.any() and bool(tie[bad].all()):
        return ("hi differs only where g*s/14 is exactly halfway between two integers: torch.round "
                "rounds halves to the EVEN neighbour (0.5 -> 0, 1.5 -> 2, 2.5 -> 2); floor(x + 0.5) "
                "rounds them all up. Round down at a tie when floor(x) is even")
    return None


def _hint_bs_local_max(args, kwargs, expected, got):
    if not _is_tensor_like(expected[0], got[0]) or float(got[2]) != expected[2].item():
        return None
    e, g = unpack_int4(expected[0].cpu()), unpack_int4(got[0].cpu())
    if not torch.equal(e, g) and (g.abs() >= e.abs()).all():
        return ("hi is too large in places while the scales are right: every code must use the ONE "
                "scale of the whole tensor, s = 196 / (2 max|g|). A program that takes the max of "
                "its own tile uses a smaller max; find the global max first (a reduction pass, e.g. "
                "tl.atomic_max into one cell), then split")
    return None


def _hint_bs_lo(args, kwargs, expected, got):
    if not _is_tensor_like(expected[1], got[1]):
        return None
    v, hi, r = _split_reference(args[0])
    lo = unpack_int4(got[1].cpu()).float()
    free = (r.abs() <= BS_CLAMP - 1) & ((r - torch.floor(r)) != 0.5)
    if free.sum() > 100 and torch.equal(lo[free], torch.round(r[free])):
        return ("lo is rounded to nearest: it must be rounded stochastically, round(r + u) with u "
                "uniform in [-1/2, 1/2) (tl.rand(seed, offsets) - 0.5), a different u for every "
                "element, so that E[lo] = r")
    if free.sum() > 100 and torch.equal(lo[free], torch.floor(r[free] + 0.5)):
        return ("lo looks rounded to nearest (floor(r + 0.5)): add the noise u = tl.rand(seed, "
                "offsets) - 0.5 before rounding")
    direct = torch.round(v).clamp(-BS_CLAMP, BS_CLAMP)
    if (hi != 0).any() and ((lo - direct).abs() <= 1)[hi != 0].all() and \
            ((lo - r.clamp(-BS_CLAMP, BS_CLAMP)).abs() > 1).any():
        return "lo must quantize the residual g*s - 14*hi (what hi leaves over), not g*s itself"
    if _lo_stochastic(r, lo) is not None:
        return ("lo is not an unbiased stochastic rounding of the residual: use a different random "
                "number for every element (offsets = each element's or byte's own index, not the "
                "program id), u uniform in [-1/2, 1/2), and lo = round(r + u) clamped to [-6, 6]")
    return None


def _bit_split_checks():
    checks = [
        Check("1x2", _grad((1, 2)), _compare_bit_split),
        Check("3x34", _grad((3, 34)), _compare_bit_split),
        Check("129x258 (several tiles each way)", _grad((129, 258)), _compare_bit_split),
        Check("31x66 non-contiguous", _grad((31, 66), contiguous=False), _compare_bit_split),
        Check("33x130 fp16", _grad((33, 130), dtype=torch.float16), _compare_bit_split),
        Check("exact ties 8x34", _grad((8, 34), kind="ties"), _compare_bit_split),
        Check("0x8 (empty)", _grad((0, 8)), _compare_bit_split),
    ]
    checks += [
        Check("127x130", _grad((127, 130)), _compare_bit_split, seeds=(1, 2), hidden=True),
        Check("257x66 fp16 non-contiguous", _grad((257, 66), dtype=torch.float16, contiguous=False),
              _compare_bit_split, seeds=(3,), hidden=True),
        Check("all zero 5x34", _grad((5, 34), kind="zeros"), _compare_bit_split, hidden=True),
        Check("huge outlier 64x200", _grad((64, 200), kind="outlier"), _compare_bit_split,
              seeds=(0, 1), hidden=True),
        Check("exact ties fp16 33x66", _grad((33, 66), dtype=torch.float16, kind="ties"),
              _compare_bit_split, seeds=(1,), hidden=True),
        Check("4x0 (empty)", _grad((4, 0)), _compare_bit_split, hidden=True),
        Check("1x1026", _grad((1, 1026)), _compare_bit_split, hidden=True),
    ]
    return checks


def _bench_bit_split_make(n, device):
    g = torch.randn(n, n, device=device) * torch.rand(n, 1, device=device) ** 4
    return (g.to(torch.bfloat16),), {"seed": 0}


# ---- lss_gather: inputs ---------------------------------------------------------------------

P_LEVELS = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])


def _codes(rows, width, seed, zero_rows=True):
    """Packed rows (rows, width) uint8; with zero_rows some rows are all zero and some are zero
    except in their last byte (a kernel that only looks at the first block misses those)."""
    gen = generator(seed)
    q = torch.randint(-8, 8, (rows, 2 * width), generator=gen, dtype=torch.int8)
    if zero_rows and rows and width:
        q[::3] = 0
        q[1::5] = 0
        q[1::5, -1] = 3
    return pack_int4(q)


def _lss(rows, width, sample=True, other_width=None, contiguous=True, probs="levels",
         probs_dtype=torch.float32, zero_rows=True):
    def make(seed, device):
        codes = _codes(rows, width, seed, zero_rows=zero_rows)
        kwargs = {}
        if sample:
            gen = generator(10_000 + seed)
            if probs == "levels":
                p = P_LEVELS[torch.randint(0, len(P_LEVELS), (rows,), generator=gen)]
            elif probs == "uniform":
                p = torch.rand(rows, generator=gen)
            else:
                p = torch.full((rows,), float(probs))
            kwargs = {"probs": p.to(probs_dtype).to(device), "seed": 20_000 + seed}
        if other_width is not None:
            kwargs["other"] = _codes(rows, other_width, 30_000 + seed, zero_rows=False).to(device)
        codes = codes.to(device)
        return ((codes if contiguous else noncontiguous(codes)),), kwargs
    return make


def _lss_inputs(args, kwargs):
    names = ("codes", "probs", "seed", "other")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound.get("codes"), bound.get("probs"), bound.get("other")


# ---- lss_gather: compare --------------------------------------------------------------------

LSS_NAMES = ["kept", "kept_other", "index", "weight"]


def _compare_lss(expected, got, args, kwargs):
    codes, probs, other = _lss_inputs(args, kwargs)
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        return Mismatch(f"output: expected a tuple of 4 outputs ({', '.join(LSS_NAMES)}), "
                        f"got {compare._describe(got)}")
    if (expected[1] is None) != (got[1] is None):
        return Mismatch("kept_other: expected None (no `other` was passed)" if expected[1] is None
                        else f"kept_other: expected {compare._describe(expected[1])}, got None")
    if probs is None:                        # deterministic mode: exactly the spec
        for i in (2, 0, 1, 3):
            if expected[i] is not None:
                m = compare.exact(expected[i], got[i], what=LSS_NAMES[i])
                if m:
                    return m
        return None
    return _compare_lss_sample(codes.cpu(), probs.float().cpu(),
                               None if other is None else other.cpu(), got)


def _compare_lss_sample(codes, p, other, got):
    kept, kept_other, index, weight = (None if x is None else x.cpu() for x in got)
    R = codes.shape[0]
    if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.dim() != 1:
        return Mismatch(f"index: expected a 1-D int64 tensor, got {compare._describe(index)}")
    M = index.shape[0]
    if M and (index.min() < 0 or index.max() >= R):
        return Mismatch(f"index: values must be row numbers in [0, {R}); got min {int(index.min())}, "
                        f"max {int(index.max())}")
    if M > 1 and not (index[1:] > index[:-1]).all():
        j = int((index[1:] <= index[:-1]).nonzero()[0])
        return Mismatch(f"index: must be strictly ascending (kept rows in their original order); "
                        f"index[{j}] = {int(index[j])} but index[{j + 1}] = {int(index[j + 1])}")
    m = compare.exact(codes[index], kept, what="kept (must be codes[index])")
    if m is None and other is not None:
        m = compare.exact(other[index], kept_other, what="kept_other (must be other[index])")
    if m is None:
        m = compare.close(rtol=1e-6, atol=0)(1.0 / p[index], weight, what="weight (must be 1/p[index])")
    if m:
        return m
    keep = torch.zeros(R, dtype=torch.bool)
    keep[index] = True
    for value, must in ((0.0, False), (1.0, True)):
        wrong = (p == value) & (keep != must)
        if wrong.any():
            i = int(wrong.nonzero()[0])
            return Mismatch(f"row {i} has p = {value:g} but was {'dropped' if must else 'kept'}: rows "
                            "with p = 0 are never kept, rows with p = 1 always (keep when u < p, "
                            "u in [0, 1))",
                            index=(i,))
    # keep frequencies, by bands of p
    for a, b in ((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)):
        band = (p > a) & (p <= b) & (p < 1)
        var = float((p * (1 - p))[band].sum())
        if var < 4:
            continue
        n_kept, n_exp = float(keep[band].sum()), float(p[band].sum())
        z = (n_kept - n_exp) / math.sqrt(var)
        if abs(z) > Z_LIMIT:
            return Mismatch(f"keep frequency: of the {int(band.sum())} rows with p in ({a}, {b}], "
                            f"{int(n_kept)} were kept where {n_exp:.0f} +- {math.sqrt(var):.0f} were "
                            f"expected (z = {z:+.1f}): row i must be kept with probability p_i")
    # independence: neighbouring rows must not be kept together more often than p_i p_j
    z = _lag1_z(keep, p)
    if z is not None and abs(z) > Z_LIMIT:
        return Mismatch(f"keep decisions are not independent: neighbouring rows are kept or dropped "
                        f"together far more often than chance (z = {z:+.1f}); each row needs its "
                        "own random draw")
    # the reweighted sum of the kept rows estimates the sum of all rows. Only rows with p >= 0.1
    # enter this test: a weight 1/p of 1000 makes the estimate far from normal, and a z-limit
    # would then reject correct kernels (the weights themselves are checked exactly above)
    x = unpack_int4(codes).float().sum(dim=1).double()       # one number per row
    live = p >= 0.1
    sel = live[index]
    index, weight = index[sel], weight[sel].float()
    full = float(x[live].sum())
    est = float((x[index] * weight.double()).sum())
    var = float(((1 - p[live].double()) / p[live].double() * x[live] ** 2).sum())
    if var > 0 and abs(est - full) > Z_LIMIT * math.sqrt(var):
        return Mismatch(f"weighted sum: sum_kept weight_i * row_i = {est:.1f} but the full sum is "
                        f"{full:.1f} +- {math.sqrt(var):.1f}: the estimate is biased")
    return None


def _lag1_z(keep, p):
    """z-score of sum_i (k_i - p_i)(k_{i+1} - p_{i+1}): mean 0 and variance
    sum_i p_i(1-p_i) p_{i+1}(1-p_{i+1}) for independent keeps; large and positive when rows
    share their random number."""
    k, p = keep.double(), p.double()
    if k.numel() < 2:
        return None
    d = k - p
    v = p * (1 - p)
    var = float((v[1:] * v[:-1]).sum())
    if var < 4:
        return None
    return float((d[1:] * d[:-1]).sum()) / math.sqrt(var)


# ---- lss_gather: hints ----------------------------------------------------------------------

def _hint_lss_index_dtype(args, kwargs, expected, got):
    idx = got[2]
    if isinstance(idx, torch.Tensor) and idx.dtype != torch.int64:
        return "index must be int64 (torch.long), the dtype torch uses for indices"
    return None


def _hint_lss_weight(args, kwargs, expected, got):
    codes, probs, _ = _lss_inputs(args, kwargs)
    if probs is None or not isinstance(got[3], torch.Tensor) or not isinstance(got[2], torch.Tensor):
        return None
    index, w = got[2].cpu(), got[3].cpu().float()
    if index.dtype != torch.int64 or w.shape != index.shape or index.numel() == 0:
        return None
    p = probs.float().cpu()[index.clamp(0, codes.shape[0] - 1)]
    if torch.allclose(w, p):
        return "weight must be 1/p_i (the rescale that makes the estimate unbiased), not p_i"
    if (w == 1).all() and (p < 1).any():
        return ("in sampling mode each kept row is reweighted by 1/p_i (weight 1 is only for "
                "probs=None)")
    return None


def _hint_lss_frequency(args, kwargs, expected, got):
    codes, probs, _ = _lss_inputs(args, kwargs)
    if probs is None or not isinstance(got[2], torch.Tensor) or got[2].dtype != torch.int64:
        return None
    p = probs.float().cpu()
    keep = torch.zeros(codes.shape[0], dtype=torch.bool)
    keep[got[2].cpu().clamp(0, codes.shape[0] - 1)] = True
    if ((p == 0) & keep).any() and ((p == 1) & ~keep).any():
        return "rows are kept with probability 1 - p: keep row i when u_i < p_i (not u_i > p_i)"
    mid = (p > 0) & (p < 1)
    if mid.sum() < 20:
        return None
    # which explains the keeps better, probability p or 1 - p? (log-likelihoods)
    q, k = p[mid].double().clamp(1e-6, 1 - 1e-6), keep[mid]
    ll_p = float(torch.where(k, q.log(), (1 - q).log()).sum())
    ll_comp = float(torch.where(k, (1 - q).log(), q.log()).sum())
    if ll_comp > ll_p + 10:
        return "rows are kept with probability 1 - p: keep row i when u_i < p_i (not u_i > p_i)"
    z = _lag1_z(keep, p)
    if z is not None and z > Z_LIMIT:
        return ("neighbouring rows are kept or dropped together: every row needs its own random "
                "number, u = tl.rand(seed, rows) with the row indices as offsets (not the program "
                "id, not a constant)")
    return None


def _hint_lss_positions(args, kwargs, expected, got):
    codes, _, _ = _lss_inputs(args, kwargs)
    kept, index = got[0], got[2]
    if not (isinstance(kept, torch.Tensor) and isinstance(index, torch.Tensor)
            and index.dtype == torch.int64 and kept.dim() == 2 and kept.shape[0] == index.shape[0]):
        return None
    c = codes.cpu()
    kept, index = kept.cpu(), index.cpu()
    if index.numel() > 1 and (index.min() >= 0) and (index.max() < c.shape[0]) \
            and not torch.equal(kept, c[index]) and kept.shape[1] == c.shape[1]:
        if torch.equal(kept[1:], c[index[:-1]]) or torch.equal(kept[:-1], c[index[1:]]):
            return ("the kept rows are shifted by one position: torch.cumsum is an inclusive scan, "
                    "so kept row i goes to position cumsum[i] - 1")
        return "kept[j] must be an exact copy of codes[index[j]]: check the row and byte offsets"
    return None


def _hint_lss_nonzero(args, kwargs, expected, got):
    codes, probs, _ = _lss_inputs(args, kwargs)
    if probs is not None or not isinstance(got[2], torch.Tensor):
        return None
    e, g = set(expected[2].tolist()), set(got[2].cpu().tolist())
    if e == g:
        return None
    c = codes.cpu()
    missed = sorted(e - g)
    if missed and all(not c[i, :min(c.shape[1], 128)].any() for i in missed):
        return ("probs=None keeps every row with at least one non-zero byte; the rows you dropped "
                "are zero only at the start: test ALL the bytes of a row (loop over the row in "
                "blocks and OR the results), not just the first block")
    if g - e and all(not c[i].any() for i in g - e):
        return "probs=None drops the all-zero rows: keep a row only if one of its bytes is non-zero"
    return None


def _zero_codes(rows, width):
    def make(seed, device):
        return (torch.zeros(rows, width, dtype=torch.uint8, device=device),), {}
    return make


def _lss_checks():
    checks = [
        Check("nonzero rows 129x200 (probs=None)", _lss(129, 200, sample=False), _compare_lss),
        Check("nonzero rows 31x33 non-contiguous, with other (probs=None)",
              _lss(31, 33, sample=False, other_width=5, contiguous=False), _compare_lss),
        Check("1x1 (probs=None)", _lss(1, 1, sample=False, zero_rows=False), _compare_lss),
        Check("sample 1000x3, p in {0, .1, .3, .5, .7, .9, 1}", _lss(1000, 3), _compare_lss),
        Check("sample 129x200 with other 129x66", _lss(129, 200, other_width=66, probs="uniform"),
              _compare_lss),
        Check("sample 33x17 non-contiguous, fp16 probs",
              _lss(33, 17, contiguous=False, probs_dtype=torch.float16), _compare_lss),
        Check("0 rows", _lss(0, 8), _compare_lss),
    ]
    checks += [
        Check("sample 1500x5", _lss(1500, 5, probs="uniform"), _compare_lss, seeds=(1, 2), hidden=True),
        Check("sample p = 1 everywhere", _lss(257, 40, probs=1.0, other_width=3), _compare_lss, hidden=True),
        Check("sample p = 0 everywhere", _lss(65, 40, probs=0.0), _compare_lss, hidden=True),
        Check("sample p = 0.5, fp64 probs", _lss(1000, 2, probs=0.5, probs_dtype=torch.float64),
              _compare_lss, seeds=(3,), hidden=True),
        Check("sample 7x0 (rows without bytes)", _lss(7, 0, probs=0.5), _compare_lss, hidden=True),
        Check("nonzero rows 300x300 with other (probs=None)", _lss(300, 300, sample=False, other_width=9),
              _compare_lss, seeds=(1,), hidden=True),
        Check("all-zero codes (probs=None)", _zero_codes(40, 20), _compare_lss, hidden=True),
        Check("5x0 (probs=None)", _lss(5, 0, sample=False), _compare_lss, hidden=True),
    ]
    return checks


def _bench_lss_make(rows, device):
    """The released kernels' speed test: 2048-byte rows (K = 4096), the second half all zero."""
    codes = torch.randint(0, 256, (rows, 2048), dtype=torch.uint8, device=device)
    codes[rows // 2:] = 0
    return (codes,), {}


register(Slot(
    name="bit_split", spec=bit_split_spec, trusted=bit_split_trusted, triton="int4lab.kernels.bit_split:bit_split",
    validate=validate_bit_split, lesson="06", stochastic=True, checks=_bit_split_checks(),
    hints=[_hint_bs_scales, _hint_bs_nibbles, _hint_bs_ties, _hint_bs_local_max, _hint_bs_lo],
    # memory-bound: the work is what the split must move, read g once (bf16) and write two
    # packed halves (1 byte per element in all); the kernel reads g twice (max, then split)
    bench=Bench(make=_bench_bit_split_make, baseline=lambda g, seed=None: torch.clone(g),
                baseline_name="torch.clone (bf16 g)", sizes=(2048, 4096, 8192),
                work=lambda a, k: a[0].numel() * (a[0].element_size() + 1)),
))

register(Slot(
    name="lss_gather", spec=lss_gather_spec, trusted=lss_gather_trusted, triton="int4lab.kernels.lss_gather:lss_gather",
    validate=validate_lss_gather, lesson="06", stochastic=True, checks=_lss_checks(),
    hints=[_hint_lss_index_dtype, _hint_lss_weight, _hint_lss_positions, _hint_lss_nonzero,
           _hint_lss_frequency],
    # memory-bound: read every byte of codes (to find the zero rows), write the kept half and
    # its index and weight (12 bytes a row); torch.clone of codes moves 2 bytes per byte
    bench=Bench(make=_bench_lss_make, baseline=torch.clone, baseline_name="torch.clone (codes)",
                sizes=(8192, 16384, 32768, 65536),
                work=lambda a, k: a[0].numel() + a[0].numel() // 2 + 12 * (a[0].shape[0] // 2)),
))

"""Slot hadamard_quantize (lesson 04): block Hadamard rotation fused with INT4 quantize and pack.

A kernel rotates with a tl.dot whose sums run in another order than torch's matmul, so its
rotated values can differ from the spec's in the last bits. The compare allows exactly that:
scales within a tight relative tolerance, and a code off by 1 only where the spec's x H / s
sits within float rounding of a .5 boundary (where either rounding is right). Inputs whose
rotation is exact (block 16: H = +-1/4, dyadic x) are compared bit for bit, exact ties included.
"""
import torch

from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Mismatch, Slot, register
from int4lab.exercises.slots.common import ODD_ROWS, generator, hint_swapped_nibbles, noncontiguous, packed_pair_hint
from int4lab.spec.hadamard import (
    block_hadamard,
    hadamard_matrix,
    hadamard_quantize_spec,
    hadamard_quantize_trusted,
    validate_hadamard_quantize,
)
from int4lab.spec.packing import unpack_int4
from int4lab.spec.quantizers import QMAX, dequantize

# ---- inputs ---------------------------------------------------------------------------------

def _randn(shape, seed, dtype):
    g = generator(seed)
    x = torch.randn(shape, generator=g)
    if len(shape) >= 1 and x.numel():
        x = x * (0.1 + 4 * torch.rand(tuple(shape[:-1]) + (1,), generator=g))
    return x.to(dtype)


def _exact_ties(shape, seed, dtype):
    """x = y H16 with y = k + 1/2 (and 7 at the start of each block): x H16 = y exactly.

    H16's entries are +-1/4, so with these dyadic values every product and sum is exact in
    fp32 in any order: any correct kernel gets y bit for bit, and x H / s lands on exact ties.
    """
    g = generator(seed)
    y = torch.randint(-6, 6, shape, generator=g).double() + 0.5
    y[..., 0::16] = 7.0
    H = hadamard_matrix(16, dtype=torch.float64)
    x = (y.reshape(*shape[:-1], shape[-1] // 16, 16) @ H).reshape(shape)
    return x.to(dtype)


def _make(shape, dtype=torch.float32, contiguous=True, inputs="randn", edit=None, **kw):
    def make(seed, device):
        x = _randn(shape, seed, dtype) if inputs == "randn" else _exact_ties(shape, seed, dtype)
        if edit is not None:
            edit(x)
        x = x.to(device)
        return ((x if contiguous else noncontiguous(x)),), dict(kw)
    return make


def _zero_rows(x):
    x[0] = 0
    x[-1] = 0


def _outlier_channel(x):
    x[..., 3] = x[..., 3] * 100        # the outlier channel HQ is made for


# ---- comparing ------------------------------------------------------------------------------

def _tolerances(dtype):
    """(rtol of the scales, how close to a .5 boundary x H / s must be for a code to differ)."""
    if dtype in (torch.float32, torch.float64):
        return 1e-5, 1e-4
    if dtype == torch.float16:        # y rounded to fp16 (as the spec): one fp16 step apart at most
        return 2e-3, 2e-2
    return 1.6e-2, 1e-1               # bfloat16


def _rotated_ratio(x, scales, block_size):
    """The spec's x H / s per element, clamped to [-7, 7]."""
    y = block_hadamard(x.detach().cpu(), block_size).float()
    s = dequantize(torch.ones(y.shape, dtype=torch.int8), scales.cpu())
    return (y / s).clamp(-QMAX[4], QMAX[4])


def _structure(expected, got):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return Mismatch(f"expected a tuple (packed, scales), got {compare._describe(got)}")
    for what, e, g in (("packed", expected[0], got[0]), ("scales", expected[1], got[1])):
        m = compare._structure(e, g, what)
        if m:
            return m
    return None


def _close(expected, got, args, kwargs):
    """Scales within rtol; codes equal, or off by 1 where x H / s is within rounding of k + 0.5."""
    m = _structure(expected, got)
    if m:
        return m
    x = args[0]
    block_size = args[1] if len(args) > 1 else kwargs.get("block_size", 32)
    rtol, near = _tolerances(x.dtype)
    m = compare.close(rtol=rtol, atol=0)(expected[1], got[1], what="scales")
    if m:
        return m
    e, g = unpack_int4(expected[0].cpu()).int(), unpack_int4(got[0].cpu()).int()
    bad = e != g
    if not bad.any():
        return None
    v = _rotated_ratio(x, expected[1], block_size)
    boundary = ((v.abs() - v.abs().floor()) - 0.5).abs() < near
    wrong = bad & (((e - g).abs() != 1) | ~boundary)
    if wrong.any():
        idx = tuple(wrong.nonzero()[0].tolist())
        return Mismatch(f"codes: {int(wrong.sum())} of {wrong.numel()} differ beyond float rounding "
                        f"(a code may differ by 1 only where x H / s is within {near:g} of a .5 "
                        f"boundary); first at index {idx}: x H / s = {v[idx].item():.4f}, "
                        f"expected {int(e[idx])}, got {int(g[idx])}",
                        index=idx, expected=int(e[idx]), got=int(g[idx]))
    return None


_exact_pair = compare.each(compare.exact, compare.exact, names=["packed", "scales"])


def _exact(expected, got, args, kwargs):
    return _exact_pair(expected, got)


# ---- hints ----------------------------------------------------------------------------------

def _pair_ok(expected, got):
    return (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(g, torch.Tensor) for g in got)
            and got[0].shape == expected[0].shape and got[0].dtype == torch.uint8
            and got[1].shape == expected[1].shape)


def _block(args, kwargs):
    return args[1] if len(args) > 1 else kwargs.get("block_size", 32)


def _hint_structure(args, kwargs, expected, got):
    return packed_pair_hint(got, expected, kwargs.get("granularity", "row"),
                            'x.shape[:-1] + (K // 32,): one per 32 rotated values', '')


def _hint_unnormalized(args, kwargs, expected, got):
    if _pair_ok(expected, got) and kwargs.get("scale") is None:
        e, g = expected[1].cpu().float(), got[1].cpu().float()
        ok = e != 1
        if ok.any():
            r = (g[ok] / e[ok]).median().item()
            n = _block(args, kwargs)
            if abs(r - n ** 0.5) < 1e-3 * n:
                return (f"the scales are sqrt({n}) = {n ** 0.5:.3g} times too big: the Hadamard matrix is "
                        f"normalized, its entries are +-1/sqrt({n}) (hadamard_matrix({n}) builds it), so "
                        "the rotation keeps each row's length")
            if abs(r - n ** -0.5) < 1e-3:
                return f"the scales are sqrt({n}) times too small: H's entries are +-1/sqrt({n}), not +-1/{n}"
    return None


def _hint_unrotated_scale(args, kwargs, expected, got):
    if _pair_ok(expected, got) and kwargs.get("scale") is None:
        from int4lab.spec.quantizers import quantize_int4_spec
        gran = kwargs.get("granularity", "row")
        _, s_plain = quantize_int4_spec(args[0].detach(), granularity=gran)
        if (not torch.allclose(s_plain.cpu(), expected[1].cpu(), rtol=1e-3)
                and torch.allclose(got[1].cpu().float(), s_plain.cpu(), rtol=1e-3)):
            return ("the scales are max|x| / 7 of the input x: they must come from the ROTATED values, "
                    "max|x H| / 7, computed after the tl.dot")
    return None


def _hint_codes_unrotated(args, kwargs, expected, got):
    if _pair_ok(expected, got):
        from int4lab.spec.quantizers import quantize_int4_spec
        p_plain, _ = quantize_int4_spec(args[0].detach(), granularity=kwargs.get("granularity", "row"),
                                        scale=kwargs.get("scale"))
        if torch.equal(got[0].cpu(), p_plain.cpu()) and not torch.equal(p_plain.cpu(), expected[0].cpu()):
            return "the codes are those of x itself: quantize the rotated values x H, not x"
    return None


def _hint_ties(args, kwargs, expected, got):
    if _pair_ok(expected, got) and torch.equal(got[1].cpu(), expected[1].cpu()):
        e, g = unpack_int4(expected[0].cpu()), unpack_int4(got[0].cpu())
        bad = e != g
        if bad.any():
            v = _rotated_ratio(args[0], expected[1], _block(args, kwargs))
            if ((v - v.floor()) == 0.5)[bad].all():
                return ("codes differ only at exact ties (x H / s = k + 0.5): round ties to the EVEN "
                        "neighbour as torch.round does (2.5 -> 2, 3.5 -> 4), not half away from zero")
    return None


def _hint_zero_rows(args, kwargs, expected, got):
    if _pair_ok(expected, got):
        s = got[1].cpu().float()
        if not torch.isfinite(s).all() or (s == 0).any():
            return ("a scale is 0, NaN or Inf: an all-zero row has max|x H| = 0, and the spec gives it "
                    "scale 1: s = where(max > 0, max / 7, 1)")
    return None


# ---- checks ---------------------------------------------------------------------------------

def _c(name, shape, compare=_close, seeds=(0,), **kw):
    return Check(name, _make(shape, **kw), compare, seeds=seeds)


def _checks():
    f16, f64, more = torch.float16, torch.float64, (1, 2, 3)
    blk, ten = dict(granularity="block"), dict(granularity="tensor")
    visible = [_c(f"{r}x96 row", (r, 96)) for r in ODD_ROWS] + [
        _c("31x64 row fp16", (31, 64), dtype=f16),
        _c("33x64 row non-contiguous", (33, 64), contiguous=False),
        _c("5x48 block_size 16", (5, 48), block_size=16),
        _c("7x192 block_size 64", (7, 192), block_size=64),
        _c("3x256 block_size 128", (3, 256), block_size=128),
        _c("33x96 tensor", (33, 96), **ten),
        _c("31x64 tensor, given scale 0.05 (clips)", (31, 64), scale=0.05, **ten),
        _c("5x128 block (a scale per 32)", (5, 128), **blk),
        _c("7x64 exact ties (block 16)", (7, 64), _exact, inputs="ties", block_size=16),
        _c("0x32 (empty)", (0, 32), _exact),
        _c("4x0 (empty)", (4, 0), _exact)]
    # hidden: more seeds and shapes, and the edge cases
    hidden = [_c(f"{r}x96 row, more seeds", (r, 96), seeds=more) for r in (3, 129)] + [
        _c("129x1024 row", (129, 1024)),
        _c("2x5x64 row (3-D)", (2, 5, 64)),
        _c("64 (1-D) row", (64,)),
        _c("1x16 block_size 16", (1, 16), block_size=16),
        _c("31x96 row fp64", (31, 96), dtype=f64),
        _c("127x192 fp16 non-contiguous, block_size 64", (127, 192), dtype=f16, contiguous=False, block_size=64,
           seeds=more),
        _c("129x384 block_size 128 non-contiguous", (129, 384), contiguous=False, block_size=128),
        _c("129x96 tensor fp16", (129, 96), dtype=f16, **ten),
        _c("33x160 block, block_size 16", (33, 160), block_size=16, **blk),
        _c("33x256 block, block_size 128", (33, 256), block_size=128, **blk),
        _c("5x64 row, given scale", (5, 64), scale=torch.tensor(0.2)),
        _c("5x64 block, given scale", (5, 64), scale=0.2, **blk),
        _c("17x64 all-zero rows", (17, 64), edit=_zero_rows),
        _c("17x64 all-zero rows, block", (17, 64), edit=_zero_rows, **blk),
        _c("3x32 all zero, tensor", (3, 32), _exact, edit=lambda x: x.zero_(), **ten),
        _c("65x128 outlier channel", (65, 128), edit=_outlier_channel, seeds=more),
        _c("65x128 outlier channel, tensor", (65, 128), edit=_outlier_channel, **ten),
        _c("31x128 exact ties (block 16), fp16", (31, 128), _exact, dtype=f16, inputs="ties", block_size=16,
           seeds=more),
        _c("31x128 exact ties (block 16), tensor", (31, 128), _exact, inputs="ties", block_size=16, **ten),
        _c("0x64 tensor (empty)", (0, 64), _exact, **ten),
        _c("4x0 block (empty)", (4, 0), _exact, **blk)]
    for check in hidden:
        check.hidden = True
    return visible + hidden


register(Slot(
    name="hadamard_quantize", spec=hadamard_quantize_spec, trusted=hadamard_quantize_trusted,
    triton="int4lab.kernels.hadamard_quantize:hadamard_quantize",
    validate=validate_hadamard_quantize, lesson="04", checks=_checks(),
    hints=[_hint_structure, _hint_zero_rows, _hint_unnormalized, _hint_unrotated_scale,
           _hint_codes_unrotated, hint_swapped_nibbles, _hint_ties],
    bench=Bench(make=lambda n, d: ((torch.randn(n, n, device=d, dtype=torch.bfloat16),), {}),
                baseline=torch.clone, baseline_name="torch.clone (bf16)", sizes=(1024, 4096, 8192),
                # read 2 bytes, write half a byte per value, plus one fp32 scale per row
                work=lambda a, k: a[0].numel() * 2.5 + a[0].shape[0] * 4),
))

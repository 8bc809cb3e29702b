"""Comparing a candidate's output with the spec's, in words a learner can act on.

Each function returns None when the outputs agree, else a Mismatch that says what differs:
the type, the shape, the dtype, or the first element that differs, with expected vs got.
"""
import torch

from int4lab.exercises.registry import Mismatch


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {str(x.dtype).replace('torch.', '')}"
    return f"a {type(x).__name__}"


def _structure(expected, got, what):
    if not isinstance(got, torch.Tensor):
        return Mismatch(f"{what}: expected {_describe(expected)}, got {_describe(got)}")
    if got.shape != expected.shape:
        return Mismatch(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
    if got.dtype != expected.dtype:
        return Mismatch(f"{what}: expected dtype {str(expected.dtype).replace('torch.', '')}, "
                        f"got {str(got.dtype).replace('torch.', '')}")
    return None


def _first(bad, expected, got, what, how):
    idx = tuple(bad.nonzero()[0].tolist())
    n = int(bad.sum())
    return Mismatch(f"{what}: {n} of {bad.numel()} elements differ{how}; first at index {idx}: "
                    f"expected {expected[idx].item()}, got {got[idx].item()}",
                    index=idx, expected=expected[idx].item(), got=got[idx].item())


def exact(expected, got, what="output"):
    """Bit-for-bit equality (integer outputs: packed bytes, codes, int32 accumulators)."""
    m = _structure(expected, got, what)
    if m:
        return m
    bad = expected.cpu() != got.cpu()
    return _first(bad, expected.cpu(), got.cpu(), what, "") if bad.any() else None


def close(rtol=1e-5, atol=1e-6):
    """Agreement within rtol/atol (float outputs whose order of summation may differ)."""
    def compare(expected, got, what="output"):
        m = _structure(expected, got, what)
        if m:
            return m
        e, g = expected.cpu().float(), got.cpu().float()
        bad = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=False)
        if bad.any():
            return _first(bad, e, g, what, f" beyond rtol={rtol:g}, atol={atol:g}")
        return None
    return compare


def each(*compares, names=None):
    """Compare tuple outputs part by part, e.g. (packed, scales) with (exact, close)."""
    def compare(expected, got, what="output"):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return Mismatch(f"{what}: expected a tuple of {len(expected)} outputs "
                            f"({', '.join(names or [])}), got {_describe(got)}")
        for i, (cmp, e, g) in enumerate(zip(compares, expected, got)):
            m = cmp(e, g, what=names[i] if names else f"output[{i}]")
            if m:
                return m
        return None
    return compare

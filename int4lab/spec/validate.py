"""Input validation shared by the spec, the kernels' launchers and the registry.

Every public operation calls these first, so bad input fails here with a message that names
the problem (shape, dtype, range, NaN) instead of deep inside a kernel or, worse, silently.
"""
import contextlib
import contextvars

import torch

INT4_MIN, INT4_MAX = -8, 7

_DATA_CHECKS_OFF = contextvars.ContextVar("int4lab_data_checks_off", default=False)


@contextlib.contextmanager
def data_checks_off():
    """Within it the checks that read a tensor's values (NaN/Inf, the INT4 range, probabilities in
    [0, 1], a positive scale) return at once; shape, dtype and argument checks still run. For
    callers that pass tensors they made themselves: registry.dispatch_trusted wraps the library's
    launchers in it (the layers' calls), and the benchmark times that entry. On a GPU each such
    check is a full pass over the tensor and a host sync; a learner's kernel is never run in it."""
    token = _DATA_CHECKS_OFF.set(True)
    try:
        yield
    finally:
        _DATA_CHECKS_OFF.reset(token)


def data_checks_skipped():
    """True inside data_checks_off()."""
    return _DATA_CHECKS_OFF.get()


def require_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def require_dtype(x, name, dtypes):
    require_tensor(x, name)
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}; got {str(x.dtype).replace('torch.', '')}")


def require_float(x, name):
    require_dtype(x, name, (torch.float32, torch.float16, torch.bfloat16, torch.float64))


def require_finite(x, name):
    """NaN or Inf in an input would turn into a garbage scale: refuse it and say where."""
    if data_checks_skipped():
        return
    if x.numel() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        kind = "NaN" if torch.isnan(x).any() else "Inf"
        raise ValueError(f"{name} contains {kind} (first non-finite value at index {tuple(bad)}); "
                         "quantizing it would give a meaningless scale")


def require_even_last_dim(x, name):
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-dim tensor")
    if x.shape[-1] % 2:
        raise ValueError(f"{name} has an odd last dimension ({x.shape[-1]}): INT4 values are "
                         "packed two per byte along the last dimension, so it must be even")


def require_int4_range(q, name):
    if data_checks_skipped():
        return
    if q.numel():
        lo, hi = int(q.min()), int(q.max())
        if lo < INT4_MIN or hi > INT4_MAX:
            raise ValueError(f"{name} holds values outside the INT4 range [{INT4_MIN}, {INT4_MAX}] "
                             f"(min {lo}, max {hi})")


def require_divisible(n, block, what):
    if block <= 0 or n % block:
        raise ValueError(f"{what} ({n}) is not a multiple of the block size {block}")


def require_power_of_two(n, what):
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} must be a power of two, got {n}")


def validate_vector_add(x, y):
    """Lesson 00's operation: two tensors of one shape and one float dtype."""
    require_float(x, "x")
    require_float(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must share one float dtype, got {x.dtype} and {y.dtype}")

"""A bounds guard for Triton's interpreter: out-of-bounds loads and stores become errors.

On a GPU an unmasked access past the end of a tensor reads garbage or writes over someone
else's memory. Under the interpreter it is worse for a learner: the store lands in the CPU
heap and the Python process can hang or crash much later, far from the bug. So while the
interpreter is on, int4lab checks every active (unmasked) address of every load and store
against the tensors passed to the kernel, *before* the access, and raises
OutOfBoundsAccess naming the kernel, the operation and the overrun.

This wraps two methods of Triton's interpreter (the grid executor's argument set-up and the
builder's masked load/store). Where a Triton version lacks them, the guard stays off and says
so in `int4lab doctor`; kernels still run.
"""
import numpy as np


class OutOfBoundsAccess(RuntimeError):
    pass


_ranges = []        # (start, end, argument name) of the current launch's tensors
_kernel = [""]
installed = False


def _extent(t):
    """[first byte, one past the last byte] a (possibly strided) tensor may touch."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    span = sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0) + 1
    return t.data_ptr(), t.data_ptr() + span * t.element_size()


def _check(op, ptrs, mask, elem_size):
    addr = np.asarray(ptrs.data).astype(np.uint64)
    active = np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)
    addr = addr[active]
    if addr.size == 0 or not _ranges:
        return
    ok = np.zeros(addr.shape, dtype=bool)
    for start, end, _ in _ranges:
        ok |= (addr >= start) & (addr + elem_size <= end)
    if not ok.all():
        bad = int(addr[~ok][0])
        start, end, name = min(_ranges, key=lambda r: min(abs(bad - r[0]), abs(bad - r[1])))
        n = (bad - end) // elem_size + 1 if bad >= end else (start - bad) // elem_size
        plural = "element" if n == 1 else "elements"
        where = (f"{n} {plural} past the end of `{name}`" if bad >= end
                 else f"{n} {plural} before the start of `{name}`")
        raise OutOfBoundsAccess(
            f"{_kernel[0]}: a {op} touched memory outside the kernel's tensors "
            f"({int((~ok).sum())} addresses; the first is {where}). Every load and store needs a "
            "mask such as `offs < n` so the last block does not run past the end.")


def install():
    """Wrap the interpreter's memory operations (idempotent; only under TRITON_INTERPRET=1)."""
    global installed
    if installed:
        return True
    try:
        from triton.runtime import interpreter as interp
        builder = interp.interpreter_builder
        load, store = builder.create_masked_load, builder.create_masked_store
        init_args = interp.GridExecutor._init_args_hst
        get_np_dtype = interp._get_np_dtype
    except (ImportError, AttributeError):
        return False

    def guarded_load(ptrs, mask, other, *a, **k):
        _check("load", ptrs, mask, np.dtype(get_np_dtype(ptrs.get_element_ty())).itemsize)
        return load(ptrs, mask, other, *a, **k)

    def guarded_store(ptrs, value, mask, *a, **k):
        _check("store", ptrs, mask, np.dtype(get_np_dtype(ptrs.get_element_ty())).itemsize)
        return store(ptrs, value, mask, *a, **k)

    def recording_init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        names = list(self.arg_names)
        _ranges.clear()
        for i, a in enumerate(list(args_hst) + list(kwargs_hst.values())):
            if hasattr(a, "data_ptr") and hasattr(a, "stride"):
                name = names[i] if i < len(names) else f"arg{i}"
                _ranges.append((*_extent(a), name))
        _kernel[0] = getattr(self.fn, "__name__", "kernel")
        return args_hst, kwargs_hst

    builder.create_masked_load = guarded_load
    builder.create_masked_store = guarded_store
    interp.GridExecutor._init_args_hst = recording_init_args
    installed = True
    return True

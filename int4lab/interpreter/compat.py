"""Fixes for known bugs of Triton's CPU interpreter in the Triton versions the course supports.

Triton 3.6 with NumPy >= 2.4: a loop with a runtime bound (`for k in range(0, K, BLOCK)`) asks
the interpreter for `int(tensor)`, which calls `int()` on a one-element NumPy array of shape
(1,). NumPy 2.4 made that an error ("only 0-dimensional arrays can be converted to Python
scalars", Triton issue 9171), so every kernel with such a loop fails. Triton 3.9 squeezes the
array first. pip resolves NumPy 2.4 by default and torch's CUDA wheels pin Triton 3.6, so a
learner gets this pair without asking: we apply Triton 3.9's fix to the older interpreter.

Triton 3.6, any NumPy: the interpreter computes tl.fma(x, y, z) as x * y + z in fp32, rounding
twice, where a GPU's fma rounds once. Kernels that divide exactly with an fma residual
(int4lab.kernels.rounding.divide_rn) then differ from the spec in the last bit now and then.
Triton 3.9 computes the fp32 fma exactly: we give the older interpreter the same result
(exact_fma32, below).

The patches are applied only under TRITON_INTERPRET=1, only where the interpreter has the
function they replace and lacks the fix; `int4lab doctor` says whether the first is on.
"""
import numpy as np

applied = False
fma_patched = False      # the fma fix is installed (False too where the interpreter needs none)


def _scalar(data):
    """A one-element array (any shape) as a 0-d array, which int() accepts on every NumPy."""
    return np.asarray(data).reshape(())


def exact_fma32(x, y, z):
    """fp32 x * y + z rounded once, as a GPU's fma, with NumPy float64 (arrays broadcast).

    x * y is exact in float64 (24 + 24 bits). The sum is rounded to float64 "to odd" (TwoSum gives
    its exact error; a nonzero error sets the last bit): rounding that to fp32 is then the one
    correct rounding of x * y + z, since float64 has more than 24 + 2 bits."""
    x, y, z = np.broadcast_arrays(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                  np.asarray(z, np.float32))
    with np.errstate(all="ignore"):
        p = x.astype(np.float64) * y.astype(np.float64)
        c = z.astype(np.float64)
        s = p + c
        b = s - p
        err = (p - (s - b)) + (c - b)                        # s + err == p + c exactly
        inexact = (err != 0) & np.isfinite(err) & ((s.view(np.int64) & 1) == 0)
        s = np.where(inexact, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


def _patch_fma(interp) -> bool:
    """Triton 3.6's InterpreterBuilder.create_fma rounds twice in fp32: round once (3.9's)."""
    global fma_patched
    if fma_patched:
        return True
    builder = getattr(interp, "InterpreterBuilder", None)
    original = getattr(builder, "create_fma", None)
    if original is None or hasattr(getattr(interp, "_interpreter", None), "fma_fp32"):
        return False                                        # nothing to patch, or already exact

    def create_fma(self, x, y, z):
        if z.data.dtype == np.float32:
            return interp.TensorHandle(exact_fma32(x.data, y.data, z.data), z.dtype.scalar)
        return original(self, x, y, z)

    builder.create_fma = create_fma
    fma_patched = True
    return True


def apply() -> bool:
    """Install the fix (idempotent). True when the interpreter is patched or needs no patch."""
    global applied
    if applied:
        return True
    try:
        from triton.runtime import interpreter as interp
    except ImportError:
        return False
    _patch_fma(interp)
    patch_tensor = getattr(interp, "_patch_lang_tensor", None)
    if patch_tensor is None:
        return False

    def patched(tensor, scope, *args, **kwargs):
        result = patch_tensor(tensor, scope, *args, **kwargs)
        # Same __index__ as Triton 3.9: squeeze the one-element array before int().
        scope.set_attr(tensor, "__index__", lambda self: int(_scalar(self.handle.data)))
        return result

    interp._patch_lang_tensor = patched
    applied = True
    return True

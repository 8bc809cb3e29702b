"""Fixes for known bugs of Triton's CPU interpreter in the Triton versions the course supports.

Triton 3.6 with NumPy >= 2.4: a loop with a runtime bound (`for k in range(0, K, BLOCK)`) asks
the interpreter for `int(tensor)`, which calls `int()` on a one-element NumPy array of shape
(1,). NumPy 2.4 made that an error ("only 0-dimensional arrays can be converted to Python
scalars", Triton issue 9171), so every kernel with such a loop fails. Triton 3.9 squeezes the
array first. pip resolves NumPy 2.4 by default and torch's CUDA wheels pin Triton 3.6, so a
learner gets this pair without asking: we apply Triton 3.9's fix to the older interpreter.

The patch is applied only under TRITON_INTERPRET=1, only where the interpreter has the
function it wraps; `int4lab doctor` says whether it is on.
"""
import numpy as np

applied = False


def _scalar(data):
    """A one-element array (any shape) as a 0-d array, which int() accepts on every NumPy."""
    return np.asarray(data).reshape(())


def apply() -> bool:
    """Install the fix (idempotent). True when the interpreter is patched or needs no patch."""
    global applied
    if applied:
        return True
    try:
        from triton.runtime import interpreter as interp
        patch_tensor = interp._patch_lang_tensor
    except (ImportError, AttributeError):
        return False

    def patched(tensor, scope, *args, **kwargs):
        result = patch_tensor(tensor, scope, *args, **kwargs)
        # Same __index__ as Triton 3.9: squeeze the one-element array before int().
        scope.set_attr(tensor, "__index__", lambda self: int(_scalar(self.handle.data)))
        return result

    interp._patch_lang_tensor = patched
    applied = True
    return True

"""int4lab: INT4 training of transformers from scratch, with Triton kernels you write.

`import int4lab` first decides where kernels run (runtime.py: compiled on a CUDA GPU, Triton's
interpreter on the CPU) before any kernel module is imported.
"""
from . import runtime  # noqa: I001  (must come first: sets TRITON_INTERPRET)
from .runtime import DEVICE

if runtime.INTERPRET and runtime.HAS_TRITON:
    from . import guard as _guard
    _guard.install()

from . import registry
from .registry import use, last_ran
from .exercises import unlock, reveal, bench, progress
from .doctor import doctor


def pack_int4(q):
    """(..., K) int8 in [-8, 7] -> (..., K/2) uint8, element 2j in the low nibble."""
    return registry.dispatch("pack_int4", q)


def unpack_int4(p):
    """(..., K/2) uint8 -> (..., K) int8; the exact inverse of pack_int4."""
    return registry.dispatch("unpack_int4", p)


def vector_add(x, y):
    """x + y through the registry (lesson 00's first kernel)."""
    return registry.dispatch("vector_add", x, y)


def which(name):
    """Which implementation a call of slot `name` would run now, and which ran last."""
    impl, _ = registry.resolve(name)
    return {"would_run": impl, "last_ran": registry.last_ran(name), "mode": registry.mode()}


from .exercises import register_magic as _register_magic  # noqa: E402
_register_magic()

__all__ = ["DEVICE", "use", "last_ran", "which", "unlock", "reveal", "bench", "progress", "doctor",
           "pack_int4", "unpack_int4", "vector_add"]

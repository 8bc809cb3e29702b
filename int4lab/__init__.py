"""int4lab: INT4 training of transformers from scratch, with Triton kernels you write.

`import int4lab` first decides where kernels run (runtime.py: compiled on a CUDA GPU, Triton's
interpreter on the CPU) before any kernel module is imported.
"""
from . import runtime  # noqa: I001  (must come first: sets TRITON_INTERPRET)
from .runtime import DEVICE

if runtime.INTERPRET and runtime.HAS_TRITON:
    from . import guard as _guard
    from . import interpreter_compat as _interpreter_compat
    _interpreter_compat.apply()
    _guard.install()

from . import registry
from .registry import use, last_ran
from .exercises import unlock, reveal, bench, progress
from .doctor import doctor
from .kernel_inspect import inspect


from .ops import (pack_int4, unpack_int4, quantize_int4, int4_matmul, hadamard_quantize,  # noqa: E402
                  bit_split, lss_gather)


def vector_add(x, y):
    """x + y through the registry (lesson 00's first kernel)."""
    return registry.dispatch("vector_add", x, y)


def which(name):
    """Which implementation a call of slot `name` would run now, and which ran last."""
    impl, _ = registry.resolve(name)
    return {"would_run": impl, "last_ran": registry.last_ran(name), "mode": registry.mode()}


from .exercises import register_magic as _register_magic  # noqa: E402
_register_magic()

__all__ = ["DEVICE", "use", "last_ran", "which", "unlock", "reveal", "bench", "progress", "doctor", "inspect",
           "pack_int4", "unpack_int4", "vector_add", "quantize_int4", "int4_matmul",
           "hadamard_quantize", "bit_split", "lss_gather"]

"""int4lab: INT4 training of transformers from scratch, with Triton kernels you write.

The public API, top to bottom of the stack (docs/architecture.md):
- spec: `quantize`, `dequantize`, `block_hadamard` (plain PyTorch, the reference);
- the accelerated operations, each dispatched to the spec, the library's Triton kernel or the
  learner's: `pack_int4`, `unpack_int4`, `quantize_int4`, `int4_matmul`, `hadamard_quantize`,
  `bit_split`, `lss_gather`, `vector_add`;
- exercises: `unlock`, `reveal`, `bench`, `progress`, `use`, `last_ran`, `which`;
- layers: `Int4Linear`, `quantize_model`, `Recipe`, `RECIPES`, `get_recipe`;
- tools: `doctor`, `inspect`, `DEVICE`.

`import int4lab` first decides where kernels run (runtime.py: compiled on a CUDA GPU, Triton's
interpreter on the CPU) before any kernel module is imported.
"""
from int4lab import runtime  # noqa: I001  (must come first: sets TRITON_INTERPRET)
from int4lab.runtime import DEVICE

runtime.map_source_kernels()

if runtime.INTERPRET and runtime.HAS_TRITON:
    from int4lab.interpreter import compat as _compat
    from int4lab.interpreter import guard as _guard
    _compat.apply()
    _guard.install()

from int4lab.doctor import doctor
from int4lab.exercises.learner import bench, progress, reveal, unlock
from int4lab.exercises.learner import register_magic as _register_magic
from int4lab.exercises.registry import last_ran, use, which
from int4lab.layers import RECIPES, Int4Linear, Recipe, get_recipe, quantize_model
from int4lab.ops import (
    bit_split,
    hadamard_quantize,
    int4_matmul,
    lss_gather,
    pack_int4,
    quantize_int4,
    unpack_int4,
    vector_add,
)
from int4lab.perf.kernel_inspect import inspect
from int4lab.spec.hadamard import block_hadamard
from int4lab.spec.quantizers import dequantize, quantize

_register_magic()

__version__ = "0.1.0"

__all__ = [
    "DEVICE",
    # spec
    "quantize", "dequantize", "block_hadamard",
    # dispatched operations
    "pack_int4", "unpack_int4", "vector_add", "quantize_int4", "int4_matmul", "hadamard_quantize",
    "bit_split", "lss_gather",
    # exercises
    "use", "last_ran", "which", "unlock", "reveal", "bench", "progress",
    # layers
    "Int4Linear", "quantize_model", "Recipe", "RECIPES", "get_recipe",
    # tools
    "doctor", "inspect",
]

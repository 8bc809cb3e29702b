"""int4lab: INT4 training of transformers from scratch, with Triton kernels you write.

The public API, top to bottom of the stack (docs/architecture.md):
- spec: `quantize`, `dequantize`, `block_hadamard` (plain PyTorch, the reference);
- the accelerated operations, each dispatched to the spec, the library's Triton kernel or the
  learner's: `pack_int4`, `unpack_int4`, `quantize_int4`, `int4_matmul`, `hadamard_quantize`,
  `bit_split`, `lss_gather`, `vector_add`;
- exercises: `unlock`, `reveal`, `bench`, `progress`, `use`, `last_ran`, `which`;
- layers: `Int4Linear`, `quantize_model`, `Recipe`, `RECIPES`, `get_recipe`;
- tools: `doctor`, `inspect`, `DEVICE`.

`import int4lab` is light: it imports no torch, so `int4lab --help` answers at once. Each public
name is imported on first use (PEP 562). Before that first use, and before any kernel module
(`int4lab.kernels.*`) is imported, runtime.py decides where kernels run (compiled on a CUDA GPU,
Triton's interpreter on the CPU: TRITON_INTERPRET=1 is set before any kernel is decorated) and
installs the interpreter's compat fix and bounds guard. In IPython (a notebook) all of this,
and the `%%exercise` cell magic, happen on `import int4lab` itself.
"""
import importlib as _importlib
import os as _os
import sys as _sys
import types as _types

from int4lab import lazy as _lazy

__version__ = "0.1.0"

# public name -> the module it comes from (imported on first access); this is __all__
_API = {
    "DEVICE": "int4lab.runtime",
    # spec
    "quantize": "int4lab.spec.quantizers", "dequantize": "int4lab.spec.quantizers",
    "block_hadamard": "int4lab.spec.hadamard",
    # dispatched operations
    **{name: "int4lab.ops" for name in ("pack_int4", "unpack_int4", "vector_add", "quantize_int4",
                                        "int4_matmul", "hadamard_quantize", "bit_split", "lss_gather")},
    # exercises
    "use": "int4lab.exercises.registry", "last_ran": "int4lab.exercises.registry",
    "which": "int4lab.exercises.registry",
    **{name: "int4lab.exercises.learner" for name in ("unlock", "reveal", "bench", "progress")},
    # layers
    **{name: "int4lab.layers" for name in ("Int4Linear", "quantize_model", "Recipe", "RECIPES", "get_recipe")},
    # tools
    "doctor": "int4lab.doctor", "inspect": "int4lab.perf.kernel_inspect",
}

__all__ = list(_API)        # a new public name (a slot's operation, say) goes in _API above


_ready = []


def _setup():
    """Where kernels run (runtime.py's set-up) and, in IPython, the %%exercise magic; once."""
    if _ready:
        return
    _ready.append(True)
    from int4lab import runtime  # noqa: F401  (importing it runs runtime.setup())
    if _in_ipython():
        from int4lab.exercises.learner import register_magic
        register_magic()


def _in_ipython() -> bool:
    ipython = _sys.modules.get("IPython")     # never imported here: only if the session has it
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None


_submodule = _lazy.submodules(__name__)


def __getattr__(name):
    if name in _API:
        _setup()
        value = getattr(_importlib.import_module(_API[name]), name)
        globals()[name] = value                # later accesses skip this function
        return value
    return _submodule(name)


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """`int4lab.doctor` is the function, as when __init__ imported it eagerly: importing the
    submodule int4lab.doctor (its file) does not rebind the name to the module."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


class _SetUpBeforeKernels:
    """A finder consulted before the others for `int4lab.kernels`: it runs runtime's set-up
    first (TRITON_INTERPRET before any kernel is decorated, the source checkout's kernels/ mapped,
    the guard installed), then lets the usual finders find the package. Once, then it leaves."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "int4lab.kernels":
            return None
        if cls in _sys.meta_path:
            _sys.meta_path.remove(cls)
        _setup()
        mapped = _sys.modules.get(fullname)    # runtime.map_source_kernels() for a source checkout
        return getattr(mapped, "__spec__", None)


def _certainly_no_gpu() -> bool:
    """No device node through which torch could reach a GPU (NVIDIA, WSL's, ROCm's), checked
    without importing torch: then runtime would choose the interpreter anyway."""
    if _sys.platform == "darwin":
        return True
    if not _sys.platform.startswith("linux"):
        return False
    return not any(_os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia",
                                                "/dev/dxg", "/dev/kfd"))


# The flag first, cheaply, where the answer is sure: a script's own @triton.jit after a bare
# `import int4lab` is then decorated for the interpreter too. Elsewhere runtime decides (torch).
if _os.environ.get("TRITON_INTERPRET") in (None, "") and _certainly_no_gpu():
    _os.environ["TRITON_INTERPRET"] = "1"
if "int4lab.kernels" not in _sys.modules and "int4lab.runtime" not in _sys.modules:
    _sys.meta_path.insert(0, _SetUpBeforeKernels)
if _in_ipython():
    _setup()

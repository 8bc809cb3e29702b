"""Where the code runs, decided once, when this module is first imported.

With a CUDA GPU, Triton kernels run compiled. Without one, Triton's interpreter runs them on
the CPU with NumPy: it reads TRITON_INTERPRET=1 when a kernel is *decorated*, so the flag must
be set before any module defining kernels is imported. Importing this module does that, and the
rest of the set-up (`setup()`, run at the end of this module): `int4lab.kernels` mapped to this
checkout's kernels/, the interpreter's compat fix and bounds guard installed. Every module that
runs kernels imports runtime first; `import int4lab` itself stays light (it imports no torch, so
`int4lab --help` answers at once) and runs this set-up before the first kernel module is
imported or the first public name is used (int4lab/__init__.py).
"""
import contextlib
import contextvars
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")

if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") in (None, ""):
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
HAS_TRITON = importlib.util.find_spec("triton") is not None

# Lessons read FAST to pick small sizes (CI runs every notebook with INT4LAB_FAST=1).
FAST = os.environ.get("INT4LAB_FAST", "0") not in ("", "0")


def triton_usable() -> bool:
    """Triton kernels can run here: installed, and either a GPU or the interpreter."""
    return HAS_TRITON and (HAS_CUDA or INTERPRET)


def describe() -> str:
    if not HAS_TRITON:
        return "PyTorch spec only (triton is not installed)"
    if HAS_CUDA and not INTERPRET:
        return f"Triton compiled on {torch.cuda.get_device_name()}"
    return "Triton interpreter on the CPU (correctness only: timings mean nothing)"


# A student copy (`int4lab student-copy`) has no library kernels; its int4lab/ holds this marker.
STUDENT_COPY_MARKER = "STUDENT_COPY"
_IS_STUDENT_COPY = (Path(__file__).parent / STUDENT_COPY_MARKER).exists()   # read once: dispatch asks on every call


_HOST_WORK = contextvars.ContextVar("int4lab_host_work", default=False)


@contextlib.contextmanager
def host_work():
    """Marks work that stays on the host on every machine (a seed drawn from torch's CPU
    generator): int4lab.perf.layer_counts counts it apart, not as device launches or syncs (and
    checks that it touches CPU tensors only)."""
    token = _HOST_WORK.set(True)
    try:
        yield
    finally:
        _HOST_WORK.reset(token)


def in_host_work() -> bool:
    return _HOST_WORK.get()


def is_student_copy() -> bool:
    """True in a copy made by `int4lab student-copy` (the library's kernel bodies removed)."""
    return _IS_STUDENT_COPY


def map_source_kernels() -> None:
    """Make `int4lab.kernels` the kernels/ folder of the checkout this int4lab comes from.

    The kernels live in kernels/ at the top of the repository (one module per kernel, where a
    learner finds them) and install as `int4lab.kernels` through pyproject's package-dir
    mapping: `pip install -e .` or `pip install .` does the mapping. With only PYTHONPATH=<repo>
    nothing does, and where another checkout is installed editable (a student copy beside the
    course) its mapping would answer with the wrong kernels: in both cases map ours here, before
    anything imports a kernel. An installed wheel has int4lab/kernels/ inside the package and is
    left alone.
    """
    import sys
    repo = Path(__file__).resolve().parents[1]
    source = repo / "kernels"
    pyproject = repo / "pyproject.toml"     # ours, not another package's kernels/ beside int4lab
    if "int4lab.kernels" in sys.modules or not (
            (source / "__init__.py").exists() and pyproject.exists()
            and 'name = "int4lab"' in pyproject.read_text()):
        return
    found = importlib.util.find_spec("int4lab.kernels")
    if found is not None and found.origin and Path(found.origin).resolve().is_relative_to(source):
        return
    spec = importlib.util.spec_from_file_location("int4lab.kernels", source / "__init__.py",
                                                  submodule_search_locations=[str(source)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["int4lab.kernels"] = module
    spec.loader.exec_module(module)


def replace_atomically(path, write: Callable[[Path], None]) -> None:
    """Write the file at `path` so that no reader ever sees half of it (another DDP rank building
    the same cache, a kill mid-save): `write(tmp)` fills a unique temporary file beside it, which
    is flushed to disk and renamed over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def setup() -> None:
    """The side effects the rest of int4lab relies on, once per process (idempotent): the flag
    above is already set; map `int4lab.kernels` for a source checkout, then, under the
    interpreter, apply Triton's compat fix and install the bounds guard. Run when this module is
    imported, so `from int4lab import runtime` is enough before importing or running a kernel."""
    map_source_kernels()
    if INTERPRET and HAS_TRITON:
        from int4lab.interpreter import compat, guard
        compat.apply()
        guard.install()


setup()

"""Where the code runs, decided once when int4lab is imported.

With a CUDA GPU, Triton kernels run compiled. Without one, Triton's interpreter runs them on
the CPU with NumPy: it reads TRITON_INTERPRET=1 when a kernel is *decorated*, so the flag must
be set before any module defining kernels is imported. `import int4lab` does that first.
"""
import importlib.util
import os

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

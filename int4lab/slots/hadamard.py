"""Slot hadamard_quantize (lesson 04). Checks, hints and bench: to be completed with the kernel."""
from ..hadamard import hadamard_quantize_spec
from ..registry import Slot, register

register(Slot(name="hadamard_quantize", spec=hadamard_quantize_spec,
              triton="int4lab.kernels.hadamard_quantize:hadamard_quantize", lesson="04"))

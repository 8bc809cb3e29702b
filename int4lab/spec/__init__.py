"""The specification: every operation of the course in plain PyTorch, the reference the kernels,
the learners' kernels and the layers are checked against.

packing (INT4 codes two per byte), quantizers (per-tensor/row/block scales, RTN and stochastic
rounding, LSQ), hadamard (block Hadamard rotation and the Hadamard quantizer), gradients (bit
splitting, leverage score sampling) and validate (input checks that name the problem).
Imports nothing above it but int4lab.runtime's neighbours: torch alone.
"""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

"""Slot int4_matmul (lesson 03). Checks, hints and bench: to be completed with the kernel."""
from ..quant import int4_matmul_spec, validate_int4_matmul
from ..registry import Slot, register

register(Slot(name="int4_matmul", spec=int4_matmul_spec, validate=validate_int4_matmul,
              triton="int4lab.kernels.int4_matmul:int4_matmul", lesson="03"))

"""Slot quantize_int4 (lesson 02). Checks, hints and bench: to be completed with the kernel."""
from ..quant import quantize_int4_spec
from ..registry import Slot, register

register(Slot(name="quantize_int4", spec=quantize_int4_spec,
              triton="int4lab.kernels.quantize_int4:quantize_int4", lesson="02"))

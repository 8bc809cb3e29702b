"""The accelerated operations, dispatched through the registry.

TEMPORARY: until the registry lands, these call the PyTorch spec directly. Layers call only
these names (ops.quantize_int4, ops.int4_matmul, ...), never a kernel or a spec function, so
Int4Linear runs unchanged on the spec, the library's Triton kernels or a learner's kernels.
"""
from .packing import pack_int4, unpack_int4  # noqa: F401
from .quant import quantize_int4_spec as quantize_int4, int4_matmul_spec as int4_matmul  # noqa: F401
from .hadamard import hadamard_quantize_spec as hadamard_quantize  # noqa: F401
from .gradquant import bit_split_spec as bit_split, lss_gather_spec as lss_gather  # noqa: F401

"""Performance tools: the GPU benchmark suite (bench, `int4lab bench`), what a kernel compiles to
without a GPU (kernel_inspect, `int4lab inspect`) and a layer step's launches, syncs and passes
(layer_counts, `int4lab inspect --layer`)."""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

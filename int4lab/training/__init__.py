"""Training: the tiny GPT and ViT (models/), their offline datasets (data) and the loop and
`int4lab train` (loop)."""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

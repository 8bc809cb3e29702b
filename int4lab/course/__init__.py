"""Lesson helpers: the plots and small tools each notebook calls (one module per lesson)."""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

"""Triton's CPU interpreter, made safe for learners: the bounds guard (guard) and fixes for known
bugs of the supported Triton versions (compat). Installed by `import int4lab` when the
interpreter is on."""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

"""The exercise machinery: slots, checks, unlock and dispatch.

registry (Slot, Check, dispatch, `use`), slots/ (one module per group of slots, discovered
automatically), compare (how a result is compared with the spec, and diagnosers), workspace (the
learner's files and progress.json) and learner (unlock, reveal, bench, progress and the
`%%exercise` cell magic).
"""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

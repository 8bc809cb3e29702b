"""Deliberately wrong learner files, one bug each: <slot>__<bug>.py.

Each defines the function named like its slot, as a learner's %%exercise cell would. The
checks, the lessons and the grader must reject every one of them.
"""
from pathlib import Path

HERE = Path(__file__).parent


def files(slot=None):
    return sorted(p for p in HERE.glob("*__*.py") if not p.name.startswith("__")
                  and (slot is None or p.name.startswith(slot + "__")))


def load(path):
    """Import a wrong-kernel file as the learner's module; return (slot, function)."""
    from int4lab.exercises import workspace as store
    slot = path.name.split("__")[0]
    return slot, getattr(store.import_file(path, f"wrong_{path.stem}"), slot)

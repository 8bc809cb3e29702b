"""Grading a class: the out-of-process grader (grader) and the student copy (student_copy)."""
from int4lab.lazy import submodules

__getattr__ = submodules(__name__)   # submodules as attributes, on first use

"""The exercise registry: named slots, each with a spec, the library's kernel and a learner's.

A slot is one operation of the course (pack_int4, int4_matmul, ...). It holds
  - spec:    the plain PyTorch definition, obviously correct, the reference for everything;
  - triton:  the library's kernel in kernels/ ("module:function", imported only when needed);
  - learner: the learner's kernel, once it has passed the checks (see unlock below);
  - checks:  inputs to try (visible ones for the notebook, hidden ones for grading), compared
             against the spec, with hints that diagnose the usual bugs;
  - bench:   how to time it, and against which PyTorch baseline.

Calls go through `dispatch(name, ...)`, which validates the input once, picks the active
implementation, and records which one ran, so every result can say where it came from.

Which implementation runs ("mode"): set with int4lab.use(...) (global or as a context manager)
or the INT4LAB_IMPL environment variable.
  auto    (default) learner if unlocked, else triton on a GPU, else spec (the interpreter is
          too slow to train with);
  learner learner -> triton -> spec, the first that exists;
  triton  triton -> spec (spec only where triton is not installed);
  spec    spec.
"""
import dataclasses
import importlib
import os
import threading
from typing import Any, Callable, Optional

from int4lab import runtime
from int4lab.spec.validate import data_checks_off

MODES = ("auto", "spec", "triton", "learner")


@dataclasses.dataclass
class Check:
    """One check: make inputs from a seed, run spec and candidate, compare.

    make(seed, device) returns (args, kwargs). compare(expected, got, args, kwargs) returns None
    when they agree, else a Mismatch. hidden checks run only when grading.
    """
    name: str
    make: Callable[[int, Any], tuple]
    compare: Callable
    seeds: tuple = (0,)
    hidden: bool = False


@dataclasses.dataclass
class Mismatch:
    message: str                 # what differs, for a person
    index: Optional[tuple] = None
    expected: Any = None
    got: Any = None


@dataclasses.dataclass
class Bench:
    """How to time a slot on a GPU: inputs per size, a PyTorch baseline, and a work measure."""
    make: Callable[[int, Any], tuple]               # (size, device) -> (args, kwargs)
    baseline: Callable                               # called with the same args
    baseline_name: str
    sizes: tuple
    unit: str = "GB/s"                               # "GB/s" or "TFLOP/s"
    work: Callable = None                            # (args) -> bytes moved or flops


@dataclasses.dataclass
class Slot:
    name: str
    spec: Callable
    triton: Optional[str]                 # "int4lab.kernels.module:function"
    validate: Callable = None             # raises ValueError/TypeError on bad input
    trusted: Callable = None              # the spec without validation (dispatch_trusted)
    checks: list = dataclasses.field(default_factory=list)
    hints: list = dataclasses.field(default_factory=list)   # fn(args, kwargs, expected, got) -> str|None
    bench: Optional[Bench] = None
    lesson: str = ""
    stochastic: bool = False              # output depends on random draws (checked in distribution)
    timeout_s: float = 60.0               # per check, for a learner kernel that hangs

    def triton_fn(self):
        if self.triton is None or not runtime.triton_usable() or runtime.is_student_copy():
            return None
        module, fn = self.triton.split(":")
        return getattr(importlib.import_module(module), fn)


SLOTS: dict = {}
_learner: dict = {}                       # name -> the learner's callable, once unlocked
_looked_up: set = set()                   # names whose progress entry was read this process
_last_ran: dict = {}                      # name -> "spec" | "triton" | "learner"
_calls: dict = {}                         # (name, impl) -> calls so far in this process
_state = threading.local()
_global_mode = [os.environ.get("INT4LAB_IMPL", "auto") or "auto"]
if _global_mode[0] not in MODES:
    raise ValueError(f"INT4LAB_IMPL={_global_mode[0]!r} is not one of {', '.join(MODES)}")


def register(slot: Slot) -> Slot:
    SLOTS[slot.name] = slot
    return slot


def get(name: str) -> Slot:
    _load_slots()
    if name not in SLOTS:
        raise KeyError(f"no slot named {name!r}; the slots are: {', '.join(sorted(SLOTS))}")
    return SLOTS[name]


def _load_slots():
    if not SLOTS:
        from int4lab.exercises import slots  # noqa: F401  (registers every slot on import)


def mode() -> str:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _global_mode[0]


class use:
    """Choose the implementation: `int4lab.use("spec")` for the session, or
    `with int4lab.use("triton"): ...` for a block."""

    def __init__(self, which: str):
        if which not in MODES:
            raise ValueError(f"use() takes one of {', '.join(MODES)}; got {which!r}")
        self.which, self._previous = which, _global_mode[0]
        _global_mode[0] = which

    def __enter__(self):
        _global_mode[0] = self._previous          # a with-block is local, not global
        _state.stack = getattr(_state, "stack", []) + [self.which]
        return self

    def __exit__(self, *exc):
        _state.stack.pop()
        return False

    def __repr__(self):
        return f"int4lab.use({self.which!r})"


def learner_fn(name: str):
    """The learner's unlocked implementation, loading it from the workspace if needed."""
    if name not in _learner and name not in _looked_up:
        from int4lab.exercises import workspace
        _looked_up.add(name)               # read the progress file once, not on every call
        fn = workspace.load_unlocked(name)
        if fn is not None:
            _learner[name] = fn
    return _learner.get(name)


def resolve(name: str, which: Optional[str] = None):
    """(impl, callable) that a call to slot `name` would run under mode `which`."""
    slot = get(name)
    which = which or mode()
    order = {"auto": ["learner", "triton" if runtime.HAS_CUDA else None, "spec"],
             "learner": ["learner", "triton", "spec"],
             "triton": ["triton", "spec"],
             "spec": ["spec"]}[which]
    for impl in order:
        fn = {"learner": learner_fn(name) if impl == "learner" else None,
              "triton": slot.triton_fn() if impl == "triton" else None,
              "spec": slot.spec if impl == "spec" else None,
              None: None}[impl]
        if fn is not None:
            return impl, fn
    raise RuntimeError(f"slot {name!r} has no implementation")  # spec always exists


def dispatch(name: str, *args, **kwargs):
    slot = get(name)
    if slot.validate is not None:
        slot.validate(*args, **kwargs)
    impl, fn = resolve(name)
    _ran(name, impl)
    return fn(*args, **kwargs)


def dispatch_trusted(name: str, *args, spec_extra: Optional[dict] = None, **kwargs):
    """dispatch for callers that pass tensors they made themselves (the layers): no validation
    here, and the spec's trusted entry (the same results, without its own checks), which also
    gets `spec_extra` (what the caller has at hand, such as unpacked codes). The library's
    launcher runs with the checks that read tensor values off (spec.validate.data_checks_off:
    no NaN/range pass, no host sync; shapes and dtypes still checked). A learner's launcher is
    called as it is, with all its checks."""
    slot = get(name)
    impl, fn = resolve(name)
    _ran(name, impl)
    if impl == "spec" and slot.trusted is not None:
        return slot.trusted(*args, **kwargs, **(spec_extra or {}))
    if impl == "triton":
        with data_checks_off():
            return fn(*args, **kwargs)
    return fn(*args, **kwargs)


def note_ran(names, impl):
    """Record that `impl` did the work of these slots in a fused kernel (int4lab.layers' fused
    path runs the library's Triton kernels for several slots at once)."""
    for name in names:
        _ran(name, impl)


def _ran(name, impl):
    _last_ran[name] = impl
    _calls[name, impl] = _calls.get((name, impl), 0) + 1


def calls() -> dict:
    """{(slot, implementation): how many calls ran it} so far in this process: the difference
    of two snapshots says what ran in between (int4lab train counts each step so)."""
    return dict(_calls)


def last_ran(name: Optional[str] = None) -> Optional[str] | dict:
    """Which implementation the last call of a slot actually ran ("spec", "triton", "learner")."""
    return dict(_last_ran) if name is None else _last_ran.get(name)


def set_learner(name: str, fn: Optional[Callable]):
    _looked_up.add(name)
    if fn is None:
        _learner.pop(name, None)
    else:
        _learner[name] = fn


def which(name: str) -> dict:
    """Which implementation a call of slot `name` would run now, and which ran last."""
    impl, _ = resolve(name)
    return {"would_run": impl, "last_ran": last_ran(name), "mode": mode()}

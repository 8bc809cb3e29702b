"""What a learner calls: unlock, reveal, bench, progress, and the %%exercise cell magic.

Every report names the implementation it actually ran (the learner's file, the library's
kernel or the spec) and where (Triton compiled on a GPU, or the interpreter on the CPU).
"""
import contextlib
import dataclasses
import signal
import threading
import time
import traceback
from typing import Callable, Sequence

import torch

from int4lab import runtime
from int4lab.exercises import registry, workspace

# ---------------------------------------------------------------------------------------------
# Running checks

@dataclasses.dataclass
class CheckResult:
    check: str
    seed: int
    status: str                 # pass | fail | error | timeout | not_implemented
    message: str = ""
    hint: str = ""

    @property
    def passed(self):
        return self.status == "pass"


class CheckTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Raise CheckTimeout in this thread after `seconds` (Unix main thread only; else no limit).

    The interpreter runs kernels as Python, so a kernel stuck in a loop is interrupted here.
    The grader adds a process-level limit on top, for code that never returns to Python.
    """
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CheckTimeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _hint(slot, args, kwargs, expected, got):
    for diagnose in slot.hints:
        try:
            h = diagnose(args, kwargs, expected, got)
        except Exception:  # a hint must never hide the failure it explains
            h = None
        if h:
            return h
    return ""


_OWN_FILES = ("int4lab/interpreter/", "int4lab/exercises/learner.py")


def describe_error(e):
    """One line for a learner: the real error (not Triton's wrapper) and the line in their code."""
    while type(e).__name__ == "InterpreterError" and e.__cause__ is not None:
        e = e.__cause__
    # the learner's own line: not Triton's, not the library's bounds guard or its checks
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "site-packages" not in f.filename and "/triton/" not in f.filename
              and not any(part in f.filename.replace("\\", "/") for part in _OWN_FILES)]
    where = (f" (at {frames[-1].filename.split('/')[-1]}:{frames[-1].lineno}, in "
             f"{frames[-1].name}: {frames[-1].line.strip()})" if frames and frames[-1].line
             else f" (at {frames[-1].filename.split('/')[-1]}:{frames[-1].lineno})" if frames else "")
    return f"{type(e).__name__}: {e}{where}"


def run_checks(name, fn, hidden=False, timeout=None, stop_on_not_implemented=True):
    """Run slot `name`'s checks (visible, plus hidden when grading) on candidate `fn`."""
    slot = registry.get(name)
    device = runtime.DEVICE
    results = []
    for check in slot.checks:
        if check.hidden and not hidden:
            continue
        for seed in check.seeds:
            try:
                args, kwargs = check.make(seed, device)
                expected = slot.spec(*_clone(args), **_clone(kwargs))
                with time_limit(timeout or slot.timeout_s):
                    got = fn(*args, **kwargs)
                    if runtime.HAS_CUDA:
                        torch.cuda.synchronize()
                mismatch = check.compare(expected, got, args, kwargs)
            except NotImplementedError:
                results.append(CheckResult(check.name, seed, "not_implemented",
                                           "raises NotImplementedError"))
                if stop_on_not_implemented:
                    return results
                continue
            except CheckTimeout as e:
                results.append(CheckResult(check.name, seed, "timeout", str(e),
                                           "a loop that never ends? check its bounds and step"))
                continue
            except Exception as e:
                results.append(CheckResult(check.name, seed, "error", describe_error(e)))
                continue
            if mismatch is None:
                results.append(CheckResult(check.name, seed, "pass"))
            else:
                results.append(CheckResult(check.name, seed, "fail", mismatch.message,
                                           _hint(slot, args, kwargs, expected, got)))
    return results


# ---------------------------------------------------------------------------------------------
# The report card

def stands_in(name):
    """What runs for slot `name` while the learner's kernel is not unlocked, in words: the
    library's kernel where it would run (a GPU in "auto" mode, or use("triton"/"learner")), else
    the PyTorch spec (a CPU in "auto" mode, a student copy without library kernels, no Triton)."""
    which = registry.mode()
    triton_first = which in ("triton", "learner") or (which == "auto" and runtime.HAS_CUDA)
    if triton_first and registry.get(name).triton_fn() is not None:
        return "the library's kernel"
    return "the PyTorch spec"


@dataclasses.dataclass
class Report:
    name: str
    implementation: str          # what was checked, in words
    results: list
    note: str = ""

    @property
    def passed(self):
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def not_implemented(self):
        return any(r.status == "not_implemented" for r in self.results)

    def __str__(self):
        lines = [f"== {self.name}: checking {self.implementation} against the PyTorch spec",
                 f"   running on: {runtime.describe()}"]
        if self.not_implemented:
            lines.append(f"   not yet implemented: {stands_in(self.name)} stays in use for {self.name}.")
        else:
            for r in self.results:
                mark = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "timeout": "TIMEOUT"}[r.status]
                lines.append(f"   [{mark:7}] {r.check} (seed {r.seed})")
                if r.message:
                    lines.append(f"             {r.message}")
                if r.hint:
                    lines.append(f"             hint: {r.hint}")
            n = sum(r.passed for r in self.results)
            lines.append(f"   {n}/{len(self.results)} checks passed.")
        if self.note:
            lines.append(f"   {self.note}")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def unlock(name: str, fn: Callable | None = None, *, quiet: bool = False) -> "Report":
    """Check a learner's implementation of slot `name`; on a pass it becomes the active one.

    With fn=None the function `name` is taken from the workspace file that the exercise cell
    (`%%exercise name`) wrote, which is what makes the unlock last across kernel restarts.
    Learner code that raises, hangs or returns garbage is reported; this never raises for it.
    """
    registry.get(name)
    path = workspace.workspace_file(name)
    from_file = fn is None or getattr(fn, "__module__", "") == f"int4lab_workspace_{name}"
    if fn is None:
        if not path.exists():
            report = Report(name, "nothing", [], note=f"no implementation found: write {name} in "
                            f"the exercise cell that starts with %%exercise {name}, run it, then "
                            f"unlock again. {stands_in(name).capitalize()} stays in use.")
            return _show(report, quiet)
        try:
            fn = getattr(workspace.import_file(path, f"int4lab_workspace_{name}"), name)
        except Exception as e:
            report = Report(name, f"your file {path}", [CheckResult(
                "import", 0, "error", f"{type(e).__name__}: {e}",
                f"the file must define a function named {name}")])
            return _show(report, quiet)
    what = f"your implementation ({path.name})" if from_file else "the function you passed"
    report = Report(name, what, run_checks(name, fn))
    if report.passed:
        registry.set_learner(name, fn)
        if from_file and path.exists():
            workspace.update(name, unlocked=True, sha256=workspace.sha256(path),
                         unlocked_at=time.strftime("%Y-%m-%d %H:%M:%S"))
            report.note = (f"Unlocked: your {name} is now the active implementation, in this "
                           "lesson and the next ones.")
        else:
            report.note = (f"Unlocked for this session only: write it in a %%exercise {name} "
                           "cell to keep it after a restart.")
    elif not report.not_implemented:
        report.note = f"Not unlocked yet: {stands_in(name)} stays in use for {name}."
    return _show(report, quiet)


def _show(report, quiet):
    if not quiet:
        print(report)
    return report


# ---------------------------------------------------------------------------------------------
# Reveal, progress, bench

def reveal(name: str) -> str:
    """Print the library's solution to slot `name`, in the exercise cell's form (generated from
    the kernel module's solution fences, as the stub is); recorded as revealed, not earned."""
    from int4lab.exercises import stubs
    slot = registry.get(name)
    if slot.triton is None:
        raise ValueError(f"{name} has no library kernel to reveal")
    module = slot.triton.split(":")[0]
    source = stubs.solution_source(name)
    workspace.update(name, revealed=True)
    if runtime.is_student_copy():
        print(f"# This is a student copy: it has no library kernel for {name}. {module} holds only "
              "the stub you started from; progress records it as revealed.\n")
    else:
        print(f"# The library's {name} ({module}, without its docstring), the exercise cell filled "
              "in; progress records it as revealed.\n")
    print(source)
    return source


def progress(show: bool = True) -> list[dict]:
    """A table of the slots: where each stands (not started / unlocked / revealed / edited since
    unlocked), what a call runs now (the same answer as `which`) and the last benchmark."""
    registry._load_slots()
    data = workspace.read()["slots"]
    rows = []
    for name, slot in registry.SLOTS.items():
        entry = data.get(name, {})
        active = registry.learner_fn(name) is not None     # what dispatch would find
        path = workspace.workspace_file(name)
        if entry.get("revealed"):
            status = "revealed"
        elif active:
            status = "unlocked" if entry.get("unlocked") else "unlocked (this session)"
        elif entry.get("unlocked"):
            status = ("edited: unlock again" if path.exists() and workspace.sha256(path) != entry.get("sha256")
                      else "file gone" if not path.exists() else "unlocked, not loadable")
        else:
            status = "not started"
        rows.append({"slot": name, "lesson": slot.lesson, "status": status,
                     "runs": registry.which(name)["would_run"],
                     "last_bench": entry.get("bench", {}).get("summary", "")})
    if show:
        print(f"{'slot':18} {'lesson':7} {'status':24} {'a call runs':12} last benchmark")
        for r in rows:
            print(f"{r['slot']:18} {r['lesson']:7} {r['status']:24} {r['runs']:12} {r['last_bench']}")
    return rows


def bench(name: str, sizes: Sequence[int] | None = None, show: bool = True) -> dict:
    """Time the learner's kernel, the library's and a PyTorch baseline (GPU); on the CPU,
    report correctness only: interpreter timings measure Python, not the kernel."""
    slot = registry.get(name)
    candidates = {}
    if registry.learner_fn(name) is not None:
        candidates["learner"] = registry.learner_fn(name)
    if slot.triton_fn() is not None:
        candidates["triton"] = slot.triton_fn()
    out = {"slot": name, "device": str(runtime.DEVICE), "timed": False, "results": []}
    if not runtime.HAS_CUDA or runtime.INTERPRET:
        lines = [f"== bench {name}: no GPU here, so nothing is timed. Triton runs in its "
                 "interpreter on the CPU, where a time would measure Python, not the kernel.",
                 "   Correctness instead:"]
        for impl, fn in candidates.items():
            rep = Report(name, impl, run_checks(name, fn))
            ok = "passes" if rep.passed else "FAILS"
            lines.append(f"   {impl:8} {ok} {sum(r.passed for r in rep.results)}/{len(rep.results)} checks")
            out["results"].append({"impl": impl, "passed": rep.passed})
        if not candidates:
            why = ("triton is not installed" if not runtime.HAS_TRITON
                   else "a student copy has no library kernel; unlock yours to check it here"
                   if runtime.is_student_copy() and slot.triton
                   else "Triton's interpreter is off (TRITON_INTERPRET=0) and there is no GPU"
                   if not runtime.triton_usable() else "this slot has no Triton kernel")
            lines.append(f"   no Triton implementation to check here ({why}).")
        workspace.update(name, bench={"summary": "CPU: correctness only", "device": "cpu"})
        if show:
            print("\n".join(lines))
        return out
    return _bench_gpu(slot, candidates, sizes, out, show)


def _bench_gpu(slot, candidates, sizes, out, show):
    import triton.testing
    b = slot.bench
    if b is None:
        raise ValueError(f"{slot.name} has no benchmark definition")
    out["timed"] = True
    out["gpu"] = torch.cuda.get_device_name()
    lines = [f"== bench {slot.name} on {out['gpu']} (median of triton.testing.do_bench, {b.unit})"]
    for size in sizes or b.sizes:
        args, kwargs = b.make(size, runtime.DEVICE)
        row = {"size": size}
        for impl, fn in list(candidates.items()) + [(b.baseline_name, b.baseline)]:
            ms = triton.testing.do_bench(lambda: fn(*args, **kwargs), return_mode="median")
            row[impl] = {"ms": ms, b.unit: b.work(args, kwargs) / (ms * 1e-3) / (1e9 if b.unit == "GB/s" else 1e12)}
        out["results"].append(row)
        lines.append(f"   size {size}: " + ", ".join(f"{k} {v[b.unit]:.1f} ({v['ms']:.3f} ms)"
                                                    for k, v in row.items() if k != "size"))
    last = out["results"][-1]
    best = "learner" if "learner" in last else "triton"
    if best in last:
        summary = f"{last[best][b.unit]:.0f} {b.unit} ({best}, size {last['size']}, {out['gpu']})"
        workspace.update(slot.name, bench={"summary": summary, "device": out["gpu"],
                                       "date": time.strftime("%Y-%m-%d")})
    if show:
        print("\n".join(lines))
    return out


# ---------------------------------------------------------------------------------------------
# The %%exercise cell magic

def exercise_magic(line, cell):
    """%%exercise NAME: save this cell as the learner's file for slot NAME, and run it."""
    name = line.strip()
    try:
        registry.get(name)
    except KeyError as e:
        print(f"%%exercise: {e.args[0]}")
        return
    path = workspace.workspace_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cell)
    entry = workspace.read()["slots"].get(name, {})
    if entry.get("unlocked") and entry.get("sha256") != workspace.sha256(path):
        # an edited file runs only once it passes again, in this session as after a restart
        registry.set_learner(name, None)
    try:
        module = workspace.import_file(path, f"int4lab_workspace_{name}")
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        line_no = next((f.lineno for f in reversed(tb) if f.filename == str(path)), None)
        at = f" (line {line_no} of the cell)" if line_no else ""
        print(f"%%exercise {name}: the cell raised {type(e).__name__}: {e}{at}. "
              f"Fix it and run the cell again; the lesson goes on with {stands_in(name)}.")
        return
    from IPython import get_ipython
    ip = get_ipython()
    if ip is not None:
        ip.user_ns.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    print(f"saved to {path}; now run int4lab.unlock({name!r})")


def register_magic():
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is not None:
        ip.register_magic_function(exercise_magic, magic_kind="cell", magic_name="exercise")

"""`int4lab grade`: grade learners' kernels with visible and hidden checks, out of process.

    int4lab grade PATH [--hidden] [--timeout SECONDS] [--json FILE] [--junit FILE]

PATH is one learner's notebook (.ipynb), one learner's workspace (a folder of SLOT.py files, as
%%exercise writes them), or a folder of submissions, one per learner (each a notebook, or a
folder holding a notebook or a workspace).

Why learners cannot earn marks they did not earn:
  - progress.json is never read: every mark comes from checks run now;
  - inputs and expected outputs are made here, in the grader's process, from the spec;
  - the learner's code runs in a separate worker process that only returns its outputs
    (tensors, loaded back with torch.load(weights_only=True), so no code comes back);
  - the comparison happens here, so code that patches int4lab, torch or the checks inside the
    worker changes nothing but its own outputs;
  - each check has a time limit; a check that hangs or crashes the worker scores zero and the
    grader restarts a worker for the next check.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from int4lab.exercises import registry

# ---------------------------------------------------------------------------------------------
# Finding submissions

def sources_from_notebook(path):
    """{slot: source} from a notebook's exercise cells (tagged, or starting with %%exercise)."""
    nb = json.loads(Path(path).read_text())
    out = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", []))
        first, _, body = src.partition("\n")
        if first.startswith("%%exercise"):
            out[first.split(maxsplit=1)[1].strip()] = body
    return out


def sources_from_workspace(folder):
    registry._load_slots()
    return {p.stem: p.read_text() for p in sorted(Path(folder).glob("*.py")) if p.stem in registry.SLOTS}


def _merge_notebooks(paths):
    out = {}
    for nb in sorted(paths):
        out.update(sources_from_notebook(nb))
    return out


def submissions(path):
    """[(learner, {slot: source})] for PATH (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"int4lab grade: {path} does not exist")
    if path.is_file():
        return [(path.stem, sources_from_notebook(path))]
    own = sources_from_workspace(path) or _merge_notebooks(path.glob("*.ipynb"))
    subdirs = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if own and not subdirs:
        return [(path.name, own)]
    found = []
    for d in subdirs:
        ws = d / "workspace" if (d / "workspace").is_dir() else d
        src = sources_from_workspace(ws) or _merge_notebooks(d.rglob("*.ipynb"))
        found.append((d.name, src))
    if not subdirs:                 # a folder of notebooks, one per learner
        found = [(p.stem, sources_from_notebook(p)) for p in sorted(path.glob("*.ipynb"))]
    return found


# ---------------------------------------------------------------------------------------------
# Running one slot's checks in a worker process

def _cases(slot, hidden):
    """[(check, seed, args, kwargs, expected)] made here, from the spec."""
    out = []
    for check in slot.checks:
        if check.hidden and not hidden:
            continue
        for seed in check.seeds:
            args, kwargs = check.make(seed, torch.device("cpu"))
            expected = slot.spec(*_clone(args), **_clone(kwargs))
            out.append((check, seed, args, kwargs, expected))
    return out


def _clone(x):
    from int4lab.exercises.learner import _clone as clone
    return clone(x)


def grade_slot(name, source, hidden=False, timeout=60.0):
    """Score one learner's source for slot `name`: a list of per-check results."""
    slot = registry.get(name)
    cases = _cases(slot, hidden)
    results = [None] * len(cases)
    with tempfile.TemporaryDirectory(prefix="int4lab-grade-") as tmp:
        tmp = Path(tmp)
        (tmp / f"{name}.py").write_text(source)
        torch.save([(args, kwargs) for _, _, args, kwargs, _ in cases], tmp / "cases.pt")
        start = 0
        while start < len(cases):
            status = _run_worker(name, tmp, start, len(cases), timeout)
            done = sorted(int(p.stem.split("-")[1]) for p in tmp.glob("out-*.json"))
            nxt = max([start - 1] + done) + 1
            if nxt < len(cases) and status != "ok":
                # the worker hung or crashed on case `nxt`: zero for it, carry on after it
                msg = (f"took longer than {timeout:g} s (the worker was stopped)" if status == "timeout"
                       else f"the kernel crashed the Python process ({status})")
                (tmp / f"out-{nxt}.json").write_text(json.dumps({"status": "timeout" if status == "timeout"
                                                                 else "error", "message": msg}))
                nxt += 1
            start = max(nxt, start + 1) if status != "ok" else len(cases)
        for i, (check, seed, args, kwargs, expected) in enumerate(cases):
            results[i] = _score(check, seed, args, kwargs, expected, tmp, i)
    return results


STARTUP_S = 60.0       # a worker imports torch and triton before its first check


def _run_worker(name, tmp, start, n, timeout):
    """Run cases start.. in a child; stop it when one case outlives its time limit."""
    cmd = [sys.executable, "-m", "int4lab.grading.grader", "--worker", name, str(tmp), str(start), str(timeout)]
    with open(tmp / "worker.log", "ab") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        seen = _outputs(tmp)
        deadline = time.monotonic() + STARTUP_S + timeout
        while p.poll() is None:
            time.sleep(0.05)
            now = _outputs(tmp)
            if now != seen:
                seen, deadline = now, time.monotonic() + timeout + 2
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                return "timeout"
    if p.returncode == 0:
        return "ok"
    if p.returncode < 0:
        return f"signal {signal.Signals(-p.returncode).name}"
    return f"exit code {p.returncode}"


def _outputs(tmp):
    return len(list(tmp.glob("out-*.json")))


def _score(check, seed, args, kwargs, expected, tmp, i):
    from int4lab.exercises.learner import CheckResult
    meta_path = tmp / f"out-{i}.json"
    if not meta_path.exists():
        return CheckResult(check.name, seed, "error", "the worker produced no result")
    meta = json.loads(meta_path.read_text())
    if meta["status"] != "ok":
        return CheckResult(check.name, seed, meta["status"], meta.get("message", ""))
    try:
        got = torch.load(tmp / f"out-{i}.pt", weights_only=True)
    except Exception as e:
        return CheckResult(check.name, seed, "error", f"the output could not be read back ({type(e).__name__})")
    mismatch = check.compare(expected, got, args, kwargs)
    if mismatch is None:
        return CheckResult(check.name, seed, "pass")
    return CheckResult(check.name, seed, "fail", mismatch.message)


def _forbid_library(name):
    """In the worker: the graded file may not call the library's own implementation of `name`
    (its spec, its kernel, or the dispatching int4lab.NAME); each is replaced by a refusal."""
    import importlib

    import int4lab
    from int4lab import ops, runtime

    def refuse(*args, **kwargs):
        raise PermissionError(f"graded code may not call the library's own {name}; write it yourself")

    slot = registry.get(name)
    setattr(sys.modules[slot.spec.__module__], slot.spec.__name__, refuse)
    for module in (int4lab, ops):
        if hasattr(module, name):
            setattr(module, name, refuse)
    if slot.triton and runtime.triton_usable():
        module, fn = slot.triton.split(":")
        setattr(importlib.import_module(module), fn, refuse)


def _worker(name, tmp, start, timeout):
    """Runs in the child: import the learner's file, run cases start.., save each output."""
    import int4lab  # noqa: F401  (sets up the interpreter before the learner's kernels)
    from int4lab import runtime
    from int4lab.exercises import workspace
    from int4lab.exercises.learner import CheckTimeout, describe_error, time_limit
    tmp = Path(tmp)
    cases = torch.load(tmp / "cases.pt", weights_only=True)
    _forbid_library(name)
    try:
        fn = getattr(workspace.import_file(tmp / f"{name}.py", f"int4lab_graded_{name}"), name)
    except Exception as e:
        for i in range(start, len(cases)):
            (tmp / f"out-{i}.json").write_text(json.dumps({"status": "error", "message":
                                                           f"the file does not import: {describe_error(e)}"}))
        return 0

    def to_device(x):
        if isinstance(x, torch.Tensor):
            return x.to(runtime.DEVICE)
        if isinstance(x, (list, tuple)):
            return type(x)(to_device(v) for v in x)
        if isinstance(x, dict):
            return {k: to_device(v) for k, v in x.items()}
        return x

    def to_cpu(x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu()
        if isinstance(x, (list, tuple)):
            return tuple(to_cpu(v) for v in x)
        return x

    for i in range(start, len(cases)):
        args, kwargs = to_device(cases[i])
        try:
            with time_limit(timeout):
                got = to_cpu(fn(*args, **kwargs))
            torch.save(got, tmp / f"out-{i}.pt")
            meta = {"status": "ok"}
        except NotImplementedError:
            meta = {"status": "not_implemented", "message": "raises NotImplementedError"}
        except CheckTimeout as e:
            meta = {"status": "timeout", "message": str(e)}
        except Exception as e:
            meta = {"status": "error", "message": describe_error(e)}
        (tmp / f"out-{i}.json").write_text(json.dumps(meta))
    return 0


# ---------------------------------------------------------------------------------------------
# Reports

def grade(path, hidden=False, timeout=60.0, slots=None):
    """{learner: {slot: {"score", "passed", "total", "checks": [...]}}, "total": ...}."""
    registry._load_slots()
    report = {}
    for learner, sources in submissions(path):
        entry = {}
        for name in slots or sorted(registry.SLOTS):
            src = sources.get(name)
            if src is None:
                entry[name] = {"score": 0.0, "passed": 0, "total": 0, "missing": True, "checks": []}
                continue
            results = grade_slot(name, src, hidden=hidden, timeout=timeout)
            passed = sum(r.passed for r in results)
            entry[name] = {"score": passed / len(results) if results else 0.0, "passed": passed,
                           "total": len(results), "missing": False,
                           "checks": [{"check": r.check, "seed": r.seed, "status": r.status,
                                       "message": r.message} for r in results]}
        graded = [v for v in entry.values()]
        report[learner] = {"slots": entry,
                           "total": sum(v["score"] for v in graded),
                           "max": len(graded)}
    return report


def summary(report):
    lines = []
    for learner, r in report.items():
        lines.append(f"{learner}: {r['total']:.2f} / {r['max']}")
        for name, s in r["slots"].items():
            state = "missing" if s["missing"] else f"{s['passed']}/{s['total']} checks"
            lines.append(f"  {name:18} {s['score']:.2f}  ({state})")
    return "\n".join(lines)


def junit(report):
    suites = ET.Element("testsuites", name="int4lab grade")
    for learner, r in report.items():
        cases = [(name, c) for name, s in r["slots"].items() for c in s["checks"]]
        missing = [name for name, s in r["slots"].items() if s["missing"]]
        failures = sum(c["status"] != "pass" for _, c in cases) + len(missing)
        suite = ET.SubElement(suites, "testsuite", name=learner, tests=str(len(cases) + len(missing)),
                              failures=str(failures))
        for name, c in cases:
            tc = ET.SubElement(suite, "testcase", classname=f"{learner}.{name}",
                               name=f"{c['check']} (seed {c['seed']})")
            if c["status"] != "pass":
                ET.SubElement(tc, "failure", message=c["status"]).text = c["message"]
        for name in missing:
            tc = ET.SubElement(suite, "testcase", classname=f"{learner}.{name}", name="submitted")
            ET.SubElement(tc, "failure", message="missing").text = f"no implementation of {name} found"
    return ET.tostring(suites, encoding="unicode")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--worker":
        _, name, tmp, start, timeout = argv
        return _worker(name, tmp, int(start), float(timeout))
    p = argparse.ArgumentParser(prog="int4lab grade", description="grade learners' kernels")
    p.add_argument("path", help="a notebook, a workspace folder, or a folder of submissions")
    p.add_argument("--hidden", action="store_true", help="also run the hidden checks")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per check (default 60)")
    p.add_argument("--json", help="write the full report as JSON here")
    p.add_argument("--junit", help="write JUnit XML here (for classroom runners)")
    p.add_argument("--slots", help="comma list of slots to grade (default: all)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    report = grade(a.path, hidden=a.hidden, timeout=a.timeout,
                   slots=a.slots.split(",") if a.slots else None)
    print(summary(report))
    print(f"({time.perf_counter() - t0:.0f} s; {'visible and hidden' if a.hidden else 'visible'} checks)")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    if a.junit:
        Path(a.junit).write_text(junit(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

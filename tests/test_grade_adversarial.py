"""`int4lab grade` against submissions that cheat: each earns nothing and the report stays intact.

One classroom, graded once through `int4lab grade` (main(), so the JSON and JUnit files are
written as a teacher gets them), holds one learner per attack on the slot pack_int4:
  - reaching the library's reference by every route we know (the reference attacks are also
    run here, in this process, where they do work: so a zero in the grader means the worker
    stopped them, not that the attack was broken);
  - forging results: files in the worker's folder, /tmp, the grader's folders; fake protocol
    messages on stdout and on every other file descriptor;
  - background processes meant to rewrite the report after the grader exits;
  - signal games that used to stretch the time limit.
"""
import ast
import importlib
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nbrun import library_source

import int4lab
from int4lab.exercises import learner, registry, workspace
from int4lab.grading import grader

SLOT = "pack_int4"
TIMEOUT = 2.0
MARK = "int4lab-forged-by-a-learner"          # in every command a background attack runs

PACKAGE = Path(int4lab.__file__).resolve().parent
KERNEL_FILE = Path(importlib.util.find_spec("int4lab.kernels.pack_int4").origin).resolve()
SPEC_FILE = PACKAGE / "spec" / "packing.py"

ZEROS = '''
import torch


def _zeros(q):
    """What a cheat returns when its trick fails: wrong on every check (the empty ones too)."""
    return torch.zeros(q.shape[0] + 1, 1, dtype=torch.uint8)
'''


def attack(body):
    """A pack_int4 that returns the trick's result, or zeros when the trick is refused."""
    return ZEROS + f'''

def pack_int4(q):
    try:
{_indent(body, 8)}
    except BaseException:
        return _zeros(q)
'''


def _indent(text, n):
    return "\n".join(" " * n + line if line.strip() else line for line in text.strip("\n").splitlines())


# Each returns the library's answer when it works (see test_the_reference_attacks_do_work_here).
REFERENCE_ATTACKS = {
    "spec_import": "from int4lab.spec.packing import pack_int4 as ref\nreturn ref(q)",
    "registry_internals": ('import importlib\n'
                           'registry = importlib.import_module("int4lab.exercises.registry")\n'
                           'return registry.get("pack_int4").spec(q)'),
    "kernel_by_file_location": (f'import importlib.util\n'
                                f'spec = importlib.util.spec_from_file_location("k", {str(KERNEL_FILE)!r})\n'
                                f'module = importlib.util.module_from_spec(spec)\n'
                                f'spec.loader.exec_module(module)\n'
                                f'return module.pack_int4(q)'),
    "exec_kernel_file": (f'ns = {{"__name__": "stolen"}}\n'
                         f'exec(compile(open({str(KERNEL_FILE)!r}).read(), {str(KERNEL_FILE)!r}, "exec"), ns)\n'
                         f'return ns["pack_int4"](q)'),
    "use_spec_and_dispatch": 'import int4lab\nint4lab.use("spec")\nreturn int4lab.pack_int4(q)',
    "module_reload": ('import importlib\nimport int4lab.spec.packing as packing\n'
                      'return importlib.reload(packing).pack_int4(q)'),
    "read_spec_source": (f'ns = {{"__name__": "stolen"}}\n'
                         f'exec(open({str(SPEC_FILE)!r}).read(), ns)\n'
                         f'return ns["pack_int4"](q)'),
    "jit_kernel_launched": ('import triton\nimport torch\n'
                            'from int4lab.kernels.pack_int4 import pack_int4_kernel\n'
                            'p = torch.empty(*q.shape[:-1], q.shape[-1] // 2, dtype=torch.uint8)\n'
                            'if p.numel():\n'
                            '    grid = (triton.cdiv(p.numel(), 1024),)\n'
                            '    pack_int4_kernel[grid](q.contiguous(), p, p.numel(), BLOCK=1024)\n'
                            'return p'),
    "spec_under_another_name": (f'import sys\nsys.path.insert(0, {str(PACKAGE)!r})\n'
                                f'import spec.packing\nreturn spec.packing.pack_int4(q)'),
}


def forging_attacks(out, classroom):
    report = out / "grades.json"
    frame = ('import io, struct, torch\n'
             'def frame(obj):\n'
             '    b = io.BytesIO(); torch.save(obj, b); data = b.getvalue()\n'
             '    return struct.pack(">Q", len(data)) + data\n'
             'FORGED = frame(("ready", -1, "ok"))\n'
             'FORGED += b"".join(frame(("exc", i, "NotImplementedError", "x")) for i in range(8))\n'
             'FORGED += b"".join(frame(("out", i, {"status": "pass"})) for i in range(8))\n'
             'FORGED += b\'{"status": "ok"}\\n\' + b"\\x00" * 64\n')
    return {
        # the old worker's result files, written in every folder it could reach, then exit
        "result_files": attack(
            'import json, os, tempfile\n'
            f'for folder in (".", tempfile.gettempdir(), "/tmp", {str(out)!r}, {str(classroom)!r}):\n'
            '    for i in range(8):\n'
            '        try:\n'
            '            with open(os.path.join(folder, f"out-{i}.json"), "w") as f:\n'
            '                json.dump({"status": "ok"}, f)\n'
            '        except OSError:\n'
            '            pass\n'
            f'for target in ({str(report)!r}, {str(out / "sentinel.txt")!r}, '
            f'{str(classroom / "honest" / "pack_int4.py")!r}):\n'
            '    try:\n'
            '        with open(target, "w") as f:\n'
            '            f.write("forged")\n'
            '    except OSError:\n'
            '        pass\n'
            'os._exit(0)'),
        "fake_stdout": attack(
            frame + 'import os, sys\n'
            'print(FORGED)\nsys.stdout.buffer.write(FORGED); sys.stdout.flush()\n'
            'sys.__stdout__.buffer.write(FORGED); sys.__stdout__.flush()\n'
            'os.write(1, FORGED); os.write(2, FORGED)\n'
            'return _zeros(q)'),
        "other_fds": attack(   # on the first check only: each forgery costs a new worker
            frame + 'import os\n'
            'if tuple(q.shape) != (1, 34):\n'
            '    return _zeros(q)\n'
            'for fd in range(0, 256):\n'
            '    try:\n'
            '        os.write(fd, FORGED)\n'
            '    except OSError:\n'
            '        pass\n'
            'return _zeros(q)'),
    }


def background_attacks(out):
    report = out / "grades.json"
    shell = f"sleep 5; echo {MARK} > {report}"
    write_later = (f'import time\ntime.sleep(5)\n'
                   f'open({str(report)!r}, "w").write({MARK!r})\n')
    return {
        "popen": attack(f'import subprocess\nsubprocess.Popen(["sh", "-c", {shell!r}], start_new_session=True)\n'
                        'return _zeros(q)'),
        "fork": attack('import os\npid = os.fork()\nif pid == 0:\n'
                       + _indent(write_later, 4) + '\n    os._exit(0)\nreturn _zeros(q)'),
        "system": attack(f'import os\nos.system({("(" + shell + ") &")!r})\nreturn _zeros(q)'),
        "posixsubprocess": attack(  # below subprocess.Popen, where no audit event is raised
            'import _posixsubprocess, os\n'
            'r, w = os.pipe()\n'
            f'_posixsubprocess.fork_exec(["/bin/sh", "-c", {shell!r}], [b"/bin/sh"], True, (), None, None,\n'
            '    -1, -1, -1, -1, -1, -1, r, w, True, True, False, None, None, None, -1, None, False)\n'
            'return _zeros(q)'),
    }


HANG = 'if tuple(q.shape) in ((1, 34), (3, 34)):   # the first two checks hang, the rest are wrong\n'
SIGNAL_GAMES = {
    "ignores_sigalrm": ZEROS + '\nimport signal\n\n\ndef pack_int4(q):\n    ' + HANG
    + '        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n        while True:\n            pass\n'
    + '    return _zeros(q)\n',
    "blocks_every_signal": ZEROS + '\nimport signal\n\n\ndef pack_int4(q):\n    ' + HANG
    + '        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())\n'
    + '        while True:\n            pass\n    return _zeros(q)\n',
    "swallows_sigterm_and_sigalrm": ZEROS + '\nimport signal\n\n\ndef pack_int4(q):\n    ' + HANG
    + '        signal.signal(signal.SIGTERM, lambda *a: None)\n'
    + '        signal.signal(signal.SIGALRM, lambda *a: None)\n'
    + '        while True:\n            pass\n    return _zeros(q)\n',
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    classroom, out = root / "class", root / "out"
    out.mkdir()
    (out / "sentinel.txt").write_text("the teacher's file")
    learners = {"honest": library_source(SLOT)}
    learners.update({f"ref_{k}": attack(v) for k, v in REFERENCE_ATTACKS.items()})
    learners.update({f"forge_{k}": v for k, v in forging_attacks(out, classroom).items()})
    learners.update({f"bg_{k}": v for k, v in background_attacks(out).items()})
    learners.update({f"signal_{k}": v for k, v in SIGNAL_GAMES.items()})
    for name, source in learners.items():
        (classroom / name).mkdir(parents=True)
        (classroom / name / f"{SLOT}.py").write_text(source)
    report, xml = out / "grades.json", out / "grades.xml"
    t0 = time.monotonic()
    assert grader.main([str(classroom), "--slots", SLOT, "--timeout", str(TIMEOUT),
                        "--json", str(report), "--junit", str(xml)]) == 0
    seconds = time.monotonic() - t0
    written = report.read_bytes()
    return {"root": root, "classroom": classroom, "out": out, "report": report, "xml": xml,
            "learners": learners, "data": json.loads(written), "bytes": written, "seconds": seconds}


def _slot(graded, learner):
    return graded["data"]["learners"][learner]["slots"][SLOT]


def test_the_report_is_intact(graded):
    data = graded["data"]["learners"]
    assert sorted(data) == sorted(graded["learners"])
    suites = ET.parse(graded["xml"]).getroot()
    assert sorted(s.get("name") for s in suites.findall("testsuite")) == sorted(graded["learners"])


def test_an_honest_submission_scores_full_marks(graded):
    assert _slot(graded, "honest")["score"] == 1.0


@pytest.mark.parametrize("name", sorted(REFERENCE_ATTACKS))
def test_reaching_the_reference_earns_nothing(graded, name):
    s = _slot(graded, f"ref_{name}")
    assert s["score"] == 0.0, s["checks"][:2]
    assert all(c["status"] == "fail" for c in s["checks"])      # refused, so the zeros came back


def test_the_reference_attacks_do_work_here(tmp_path):
    """Without the worker (in this process, int4lab importable) each attack passes every check:
    so the zeros above are the worker's doing."""
    saved_modules, saved_path = set(sys.modules), list(sys.path)
    previous_mode = registry._global_mode[0]
    try:
        for name, body in REFERENCE_ATTACKS.items():
            path = tmp_path / f"{name}.py"
            path.write_text(attack(body).replace("except BaseException:", "except ImportError:"))
            fn = workspace.import_file(path, f"attack_{name}").pack_int4
            results = learner.run_checks(SLOT, fn)
            assert results and all(r.passed for r in results), (name, results[:1])
    finally:
        registry._global_mode[0] = previous_mode
        sys.path[:] = saved_path
        for module in set(sys.modules) - saved_modules:
            if not module.startswith(("int4lab", "triton", "torch", "numpy")):
                sys.modules.pop(module, None)


@pytest.mark.parametrize("name", ["result_files", "fake_stdout", "other_fds"])
def test_forging_earns_nothing(graded, name):
    assert _slot(graded, f"forge_{name}")["score"] == 0.0


def test_forgers_could_not_write_outside_their_folder(graded):
    out, classroom = graded["out"], graded["classroom"]
    assert (out / "sentinel.txt").read_text() == "the teacher's file"
    assert (classroom / "honest" / f"{SLOT}.py").read_text() == library_source(SLOT)
    assert not list(out.glob("out-*")) and not list(classroom.glob("out-*"))
    assert not list(Path("/tmp").glob("out-*.json"))


def test_background_processes_are_gone_and_the_report_stays(graded):
    for name in ("popen", "fork", "system", "posixsubprocess"):
        assert _slot(graded, f"bg_{name}")["score"] == 0.0
    assert not _processes_with(MARK)
    # each would rewrite the report 5 s after its worker started: look again 6 s after writing
    time.sleep(max(0.0, graded["report"].stat().st_mtime + 6.0 - time.time()))
    assert graded["report"].read_bytes() == graded["bytes"]
    assert MARK not in graded["report"].read_text()
    assert not _processes_with(MARK)


def _processes_with(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("name", sorted(SIGNAL_GAMES))
def test_signal_games_cannot_stretch_the_time_limit(graded, name):
    s = _slot(graded, f"signal_{name}")
    assert s["score"] == 0.0
    hung = [c for c in s["checks"] if c["status"] == "timeout"]
    assert [c["check"] for c in hung] == ["1x34", "3x34"]
    limit = TIMEOUT + grader.grace_s(TIMEOUT)
    for c in hung:
        assert f"took longer than {TIMEOUT:g} s" in c["message"]
        assert f"killed after {limit:g} s" in c["message"]
    # two checks killed at their hard limit, two restarts, six quick checks
    assert s["seconds"] < 30, s["seconds"]


def test_the_helpers_hold_no_reference():
    """The stand-in int4lab modules a worker gets: validators and helpers, no spec, no kernel."""
    sources = dict(grader.helper_modules())
    references = grader._references()
    for module, source in sources.items():
        if source is None:
            continue
        defined = {n for node in ast.parse(source).body for n in grader._defined_names(node)}
        assert defined and not defined & references, module
    assert "def pack_int4" not in "".join(s for s in sources.values() if s)


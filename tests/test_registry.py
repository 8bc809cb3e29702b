"""The exercise registry: unlock, use, fallback, progress, reveal, bench, the workspace."""
import json
import os

import pytest
import torch
import wrong_kernels

import int4lab
from int4lab import runtime
from int4lab.exercises import learner as exercises
from int4lab.exercises import registry


def write_exercise(home, slot, source):
    path = home / "workspace" / f"{slot}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


def library(slot):
    from nbrun import library_source
    return library_source(slot)


STUB = "def pack_int4(q):\n    raise NotImplementedError('write me')\n"


def test_stub_is_not_an_error(home, capsys):
    write_exercise(home, "pack_int4", STUB)
    report = int4lab.unlock("pack_int4")
    out = capsys.readouterr().out
    # in "auto" mode the library's kernel stands in on a GPU; the spec on a CPU and in a student copy
    stands_in = ("the library's kernel" if runtime.HAS_CUDA and runtime.triton_usable()
                 and not runtime.is_student_copy() else "the PyTorch spec")
    assert f"not yet implemented: {stands_in} stays in use for pack_int4" in out
    assert "ERROR" not in out and not report.passed
    assert int4lab.which("pack_int4")["would_run"] != "learner"


def test_unlock_from_workspace_persists_across_restarts(home, capsys):
    write_exercise(home, "pack_int4", library("pack_int4"))
    report = int4lab.unlock("pack_int4")
    assert report.passed and "Unlocked" in str(report)
    entry = json.loads((home / "progress.json").read_text())["slots"]["pack_int4"]
    assert entry["unlocked"] and len(entry["sha256"]) == 64
    # a "restart": forget everything in memory; the learner's kernel comes back from disk
    registry._learner.clear()
    registry._looked_up.clear()
    q = torch.randint(-8, 8, (3, 34), dtype=torch.int8)
    with int4lab.use("learner"):
        p = int4lab.pack_int4(q)
    assert int4lab.last_ran("pack_int4") == "learner"
    assert torch.equal(p, int4lab.spec.packing.pack_int4(q))


def test_edited_file_is_not_used_until_unlocked_again(home):
    path = write_exercise(home, "pack_int4", library("pack_int4"))
    assert int4lab.unlock("pack_int4", quiet=True).passed
    path.write_text(path.read_text() + "\n# edited\n")
    registry._learner.clear()
    registry._looked_up.clear()
    with pytest.warns(UserWarning, match="changed since pack_int4 was unlocked"):
        impl, _ = registry.resolve("pack_int4", "learner")
    assert impl != "learner"


@pytest.mark.parametrize("path", wrong_kernels.files("pack_int4") + wrong_kernels.files("unpack_int4")
                         + wrong_kernels.files("vector_add"), ids=lambda p: p.stem)
def test_wrong_kernels_are_rejected_with_actionable_messages(home, path):
    slot, fn = wrong_kernels.load(path)
    report = int4lab.unlock(slot, fn, quiet=True)
    assert not report.passed
    text = str(report)
    expected = {"swapped_nibbles": "nibbles are swapped", "missing_mask": "needs a mask",
                "no_sign_extension": "sign-extend", "even_odd_swapped": "even and odd outputs are swapped",
                "no_mask": "needs a mask", "no_contiguous": ".contiguous()"}
    bug = path.stem.split("__")[1]
    assert expected[bug] in text, text
    assert int4lab.which(slot)["would_run"] != "learner"


def test_library_kernels_pass_hidden_checks(home):
    for slot in ("vector_add", "pack_int4", "unpack_int4"):
        fn = registry.get(slot).triton_fn()
        results = exercises.run_checks(slot, fn, hidden=True)
        assert results and all(r.passed for r in results), [r for r in results if not r.passed]
        assert any(r.check for r in results)


def test_garbage_and_crashes_are_reported(home):
    report = int4lab.unlock("pack_int4", lambda q: "not a tensor", quiet=True)
    assert not report.passed and "expected a tensor" in str(report)
    report = int4lab.unlock("pack_int4", lambda q: 1 / 0, quiet=True)
    assert "ZeroDivisionError" in str(report) and "ERROR" in str(report)


def test_hanging_learner_code_times_out(home):
    def hang(q):
        while True:
            pass
    results = exercises.run_checks("pack_int4", hang, timeout=0.2)
    assert results and all(r.status == "timeout" for r in results)


def test_use_modes_and_fallback(home, monkeypatch):
    q = torch.randint(-8, 8, (2, 4), dtype=torch.int8)
    with int4lab.use("spec"):
        int4lab.pack_int4(q)
        assert int4lab.last_ran("pack_int4") == "spec"
    with int4lab.use("learner"):           # nothing unlocked: learner -> triton
        int4lab.pack_int4(q)
        assert int4lab.last_ran("pack_int4") == "triton"
    monkeypatch.setattr(registry.runtime, "HAS_TRITON", False)
    with int4lab.use("triton"):            # no triton installed: triton -> spec
        int4lab.pack_int4(q)
        assert int4lab.last_ran("pack_int4") == "spec"
    with pytest.raises(ValueError, match="one of"):
        int4lab.use("gpu")


def test_global_use_and_env(home):
    before = registry.mode()
    try:
        int4lab.use("spec")
        assert registry.mode() == "spec"
        with int4lab.use("triton"):
            assert registry.mode() == "triton"
        assert registry.mode() == "spec"
    finally:
        int4lab.use(before)
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import int4lab; print(int4lab.exercises.registry.mode())"],
                         env={**os.environ, "INT4LAB_IMPL": "spec"}, capture_output=True, text=True)
    assert out.stdout.strip() == "spec", out.stderr


def test_progress_reveal_and_corrupt_file(home, capsys):
    rows = {r["slot"]: r for r in int4lab.progress(show=False)}
    assert rows["pack_int4"]["status"] == "not started"
    source = int4lab.reveal("unpack_int4")
    assert "def unpack_int4_kernel" in source
    rows = {r["slot"]: r for r in int4lab.progress(show=False)}
    assert rows["unpack_int4"]["status"] == "revealed"
    (home / "progress.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        rows = int4lab.progress(show=False)
    assert all(r["status"] == "not started" for r in rows)
    assert list(home.glob("progress.json.corrupt-*"))


def test_bench_on_cpu_reports_correctness_not_time(home, capsys):
    out = int4lab.bench("pack_int4")
    text = capsys.readouterr().out
    assert out["timed"] is False and "nothing is timed" in text
    assert out["results"] and all(r["passed"] for r in out["results"])


def test_unknown_slot(home):
    with pytest.raises(KeyError, match="no slot named"):
        int4lab.unlock("pack_int5")


def test_exercise_magic_writes_the_workspace(home, capsys):
    exercises.exercise_magic("pack_int4", STUB)
    assert (home / "workspace" / "pack_int4.py").read_text() == STUB
    exercises.exercise_magic("pack_int4", "def pack_int4(q):\n    return q +\n")
    assert "the cell raised SyntaxError" in capsys.readouterr().out


def test_progress_and_which_agree_through_unlock_edit_and_restart(home, capsys):
    """progress() says "unlocked" exactly when a call would run the learner's code (which())."""
    def states():
        row = {r["slot"]: r for r in int4lab.progress(show=False)}["pack_int4"]
        return row["status"], row["runs"], int4lab.which("pack_int4")["would_run"]

    exercises.exercise_magic("pack_int4", library("pack_int4"))
    assert states()[0] == "not started"
    assert int4lab.unlock("pack_int4", quiet=True).passed
    assert states() == ("unlocked", "learner", "learner")
    # the learner edits the cell and runs it again, without unlocking: the old kernel stops
    exercises.exercise_magic("pack_int4", library("pack_int4") + "\n# an edit\n")
    status, runs, would = states()
    assert status == "edited: unlock again" and runs == would != "learner"
    registry._learner.clear()                 # a restart: the same answers from disk
    registry._looked_up.clear()
    with pytest.warns(UserWarning, match="changed since"):
        status2, runs2, would2 = states()
    assert (status2, runs2, would2) == (status, runs, would)
    assert int4lab.unlock("pack_int4", quiet=True).passed
    assert states() == ("unlocked", "learner", "learner")


def test_an_out_of_bounds_access_names_the_learners_kernel_and_line(home):
    source = library("vector_add").replace("mask = offs < n\n", "mask = offs < n + 5\n")
    assert source != library("vector_add")
    path = write_exercise(home, "vector_add", source)
    report = int4lab.unlock("vector_add", quiet=True)
    errors = [r for r in report.results if r.status == "error"]
    assert errors and not report.passed
    line = next(i for i, s in enumerate(source.splitlines(), 1) if "x = tl.load(x_ptr" in s)
    assert f"(at {path.name}:{line}, in vector_add_kernel: x = tl.load(" in errors[0].message, errors[0].message
    assert "guard.py" not in errors[0].message


def test_the_trusted_entry_skips_value_checks_for_the_library_only(home):
    """dispatch_trusted (the layers' entry) runs the library's launcher with the checks that read
    tensor values off (no NaN pass, no host sync) and a learner's launcher with every check: a
    learner's kernel is never trusted."""
    from int4lab.kernels.pack_int4 import pack_int4
    from int4lab.spec.validate import data_checks_skipped
    seen = []

    def learners(q):
        seen.append(data_checks_skipped())
        return pack_int4(q)
    bad = torch.tensor([[1, 9]], dtype=torch.int8)              # 9 is outside INT4
    with registry.use("triton"):
        assert registry.dispatch_trusted("pack_int4", bad).shape == (1, 1)
        with pytest.raises(ValueError, match="INT4 range"):
            registry.dispatch("pack_int4", bad)
    registry.set_learner("pack_int4", learners)
    try:
        with registry.use("learner"), pytest.raises(ValueError, match="INT4 range"):
            registry.dispatch_trusted("pack_int4", bad)
    finally:
        registry.set_learner("pack_int4", None)
    assert seen == [False] and not data_checks_skipped()

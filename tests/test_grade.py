"""`int4lab grade`: right scores for correct, wrong, hanging, crashing and forging submissions."""
import json
import shutil
import xml.etree.ElementTree as ET

import pytest
import wrong_kernels
from nbrun import library_source

from int4lab.exercises import registry
from int4lab.grading import grader as grade

PACK = ["pack_int4", "unpack_int4"]

FORGERY = '''
import json, os, pathlib
import int4lab, int4lab.exercises.compare, int4lab.exercises.learner, torch
# 1. a forged progress file
home = pathlib.Path(os.environ.get("INT4LAB_HOME", "."))
home.mkdir(parents=True, exist_ok=True)
(home / "progress.json").write_text(json.dumps({"slots": {"pack_int4": {"unlocked": True, "sha256": "x"}}}))
# 2. patch the checks and torch to say "equal" everywhere
int4lab.exercises.compare.exact = lambda *a, **k: None
int4lab.exercises.learner.run_checks = lambda *a, **k: []
torch.equal = lambda *a, **k: True
# 3. call the library's own implementation
from int4lab.spec.packing import pack_int4 as _spec

def pack_int4(q):
    try:
        return _spec(q)
    except PermissionError:
        return torch.zeros(1, dtype=torch.uint8)
'''


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for learner, files in {
        "alice": {s: library_source(s) for s in PACK},
        "bob": {"pack_int4": (wrong_kernels.HERE / "pack_int4__swapped_nibbles.py").read_text(),
                "unpack_int4": (wrong_kernels.HERE / "unpack_int4__no_sign_extension.py").read_text()},
        "carol": {"pack_int4": "def pack_int4(q):\n    while True:\n        pass\n",
                  # crashes the process on one input (the empty one), is wrong on the others
                  "unpack_int4": ("import os, torch\ndef unpack_int4(p):\n    if p.numel() == 0:\n"
                                  "        os.kill(os.getpid(), 9)\n"
                                  "    return torch.zeros(*p.shape[:-1], 2 * p.shape[-1], dtype=torch.int8)\n")},
        "eve": {"pack_int4": FORGERY},
    }.items():
        d = root / learner
        d.mkdir()
        for slot, src in files.items():
            (d / f"{slot}.py").write_text(src)
    report = grade.grade(root, timeout=2.0, slots=PACK)
    return root, report


def test_one_row_per_submission(classroom):
    _, report = classroom
    assert sorted(report) == ["alice", "bob", "carol", "eve"]


def test_correct_submission_scores_full_marks(classroom):
    _, report = classroom
    assert report["alice"]["total"] == report["alice"]["max"] == 2


def test_wrong_submission_scores_below_full(classroom):
    _, report = classroom
    for slot in PACK:
        assert report["bob"]["slots"][slot]["score"] < 1


def test_hanging_and_crashing_code_scores_zero_and_grading_goes_on(classroom):
    _, report = classroom
    pack, unpack = report["carol"]["slots"]["pack_int4"], report["carol"]["slots"]["unpack_int4"]
    assert pack["score"] == 0 and all(c["status"] == "timeout" for c in pack["checks"])
    assert unpack["score"] == 0
    crashed = [c for c in unpack["checks"] if "crashed" in c["message"]]
    assert len(crashed) == 1 and crashed[0]["status"] == "error"
    # the checks after the crash still ran (in a new worker) and failed on their merits
    assert sum(c["status"] == "fail" for c in unpack["checks"]) == len(unpack["checks"]) - 1


def test_forging_earns_nothing(classroom):
    _, report = classroom
    eve = report["eve"]
    assert eve["total"] < 0.2, eve
    assert eve["slots"]["unpack_int4"]["missing"]


def test_json_and_junit(classroom, tmp_path):
    root, _ = classroom
    j, x = tmp_path / "r.json", tmp_path / "r.xml"
    assert grade.main([str(root / "alice"), "--slots", "pack_int4", "--json", str(j), "--junit", str(x),
                       "--timeout", "5"]) == 0
    data = json.loads(j.read_text())
    assert data["learners"]["alice"]["slots"]["pack_int4"]["score"] == 1.0
    suites = ET.parse(x).getroot()
    assert suites.find("testsuite").get("failures") == "0"
    assert len(suites.findall(".//testcase")) == data["learners"]["alice"]["slots"]["pack_int4"]["total"]


def test_a_notebook_is_a_submission(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["%%exercise pack_int4\n", library_source("pack_int4")]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "frank.ipynb"
    path.write_text(json.dumps(nb))
    [(learner, sources)] = grade.submissions(path)
    assert learner == "frank" and list(sources) == ["pack_int4"]


def _slots_with_wrong_kernels():
    return sorted({p.name.split("__")[0] for p in wrong_kernels.files()})


def test_every_wrong_kernel_and_library_kernel_through_the_grader(tmp_path):
    """Each slot's wrong-kernel suite scores below full marks; the library scores full marks."""
    registry._load_slots()
    for path in wrong_kernels.files():
        slot = path.name.split("__")[0]
        d = tmp_path / path.stem
        d.mkdir()
        shutil.copy(path, d / f"{slot}.py")
    lib = tmp_path / "library"
    lib.mkdir()
    for slot in _slots_with_wrong_kernels():
        (lib / f"{slot}.py").write_text(library_source(slot))
    # hidden checks too: some bugs (quantize_int4 without the all-zero guard) only show there
    report = grade.grade(tmp_path, timeout=60.0, slots=_slots_with_wrong_kernels(), hidden=True)
    for learner, r in report.items():
        for slot, s in r["slots"].items():
            if learner == "library":
                assert s["score"] == 1.0, (slot, [c for c in s["checks"] if c["status"] != "pass"][:2])
            elif not s["missing"]:
                assert s["score"] < 1.0, (learner, slot)


def test_one_malformed_notebook_never_stops_the_class(tmp_path, capsys):
    """A truncated notebook and an exercise line without a slot are that learner's problems;
    everyone else is graded, and every learner appears in the summary, the JSON and JUnit."""
    cls = tmp_path / "class"
    (cls / "alice").mkdir(parents=True)
    (cls / "alice" / "pack_int4.py").write_text(library_source("pack_int4"))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": ["%%exercise\n", "x = 1\n"]}], "metadata": {}, "nbformat": 4,
          "nbformat_minor": 5}
    (cls / "bob.ipynb").write_text(json.dumps(nb)[:-40])          # truncated
    (cls / "carol.ipynb").write_text(json.dumps(nb))               # %%exercise with no slot
    j, x = tmp_path / "r.json", tmp_path / "r.xml"
    assert grade.main([str(cls), "--slots", "pack_int4", "--timeout", "10", "--json", str(j),
                       "--junit", str(x)]) == 0
    data = json.loads(j.read_text())
    assert sorted(data["learners"]) == ["alice", "bob", "carol"]
    assert data["learners"]["alice"]["slots"]["pack_int4"]["score"] == 1.0
    for learner in ("bob", "carol"):
        assert data["learners"][learner]["problems"], learner
        assert data["learners"][learner]["total"] == 0
    assert data["class"]["integrity"] == {"before": [], "after": []}
    out = capsys.readouterr().out
    assert "problem:" in out and "grader files: as shipped" in out
    suites = ET.parse(x).getroot()
    assert sorted(s.get("name") for s in suites.findall("testsuite")) == ["alice", "bob", "carol"]


def test_an_empty_class_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "class").mkdir()
    assert grade.main([str(tmp_path / "class")]) == 2
    assert "int4lab grade:" in capsys.readouterr().err


def test_a_changed_grader_refuses_to_grade(tmp_path, monkeypatch, capsys):
    from int4lab.grading import manifest
    monkeypatch.setattr(manifest, "verify", lambda *a, **k: ["int4lab/grading/grader.py changed"])
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "pack_int4.py").write_text(library_source("pack_int4"))
    assert grade.main([str(tmp_path / "alice"), "--slots", "pack_int4"]) == 2
    assert "grader.py changed" in capsys.readouterr().err


@pytest.mark.slow
def test_one_learner_all_slots_hidden_within_a_minute(tmp_path):
    """A per-submission runner's budget: eight slots, hidden checks, <= 60 s on 2 cores (11 s
    measured on an idle machine, 13-21 s under load)."""
    import time
    registry._load_slots()
    d = tmp_path / "alice"
    d.mkdir()
    for slot in registry.SLOTS:
        (d / f"{slot}.py").write_text(library_source(slot))
    t0 = time.perf_counter()
    report = grade.grade(d, hidden=True, timeout=60.0)
    seconds = time.perf_counter() - t0
    assert all(s["score"] == 1.0 for s in report["alice"]["slots"].values())
    assert seconds <= 60, f"{seconds:.0f} s"

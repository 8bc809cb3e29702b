"""Every lesson executes top to bottom, as shipped (stubs unfilled) and as a learner who did
every exercise runs it: all slots unlocked with the TODO-plan solutions (tests/todo_solutions/),
which are in the lesson's exercise cells too, so every INT4 op runs the learner's Triton kernel
(in the interpreter on a CPU).

Budgets: each notebook must run in under 120 s on a 2-core CPU in fast mode (INT4LAB_FAST=1),
both ways. Measured times are printed (pytest -s) and recorded in docs/teaching.md by hand.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import nbformat
import pytest
from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning
from nbrun import LESSONS, ROOT, execute, exercise_cells, lesson_paths, outputs_text, read, with_solutions

from int4lab import runtime

BUDGET_S = 120
# what runs in "auto" mode while an exercise is not unlocked: the library's kernel on a GPU; the
# PyTorch spec on a CPU and in a student copy, which has no library kernels
STANDS_IN = ("the library's kernel" if runtime.HAS_CUDA and runtime.triton_usable()
             and not runtime.is_student_copy() else "the PyTorch spec")
PATHS = lesson_paths()
SOURCES = sorted((LESSONS / "src").glob("[0-9][0-9]_*.py"))


def _build_module():
    """lessons/build.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_lessons():
    assert PATHS, "no lessons found under lessons/"


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, str(LESSONS / "build.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def test_every_notebook_has_a_source():
    assert [p.stem for p in PATHS] == [s.stem for s in SOURCES]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_sources_compile_as_python(src):
    """jupytext's percent format keeps magics commented out, so a source is plain Python."""
    compile(src.read_text(encoding="utf-8"), str(src), "exec")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_cell_ids_are_unique_deterministic_and_valid(path):
    build = _build_module()
    src = LESSONS / "src" / (path.stem + ".py")
    assert build.render(build.build(src)) == build.render(build.build(src)), "a rebuild changed the JSON"
    raw = json.loads(path.read_text(encoding="utf-8"))    # nbformat.read would fill in missing ids
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5)
    ids = [c.get("id") for c in raw["cells"]]
    assert all(ids), f"{path.name}: cells {[i for i, c in enumerate(ids) if not c]} have no id"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids), ids
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbformat.validate(nbformat.from_dict(raw))
    bad = [str(w.message) for w in caught
           if issubclass(w.category, (MissingIDFieldWarning, DuplicateCellId)) or "nbformat" in w.filename]
    assert not bad, f"{path.name}: {bad}"


@pytest.mark.parametrize("path", [p for p in PATHS if exercise_cells(read(p))], ids=lambda p: p.stem)
def test_built_exercise_cells_start_with_their_magic(path):
    """The source comments the magic out ("# %%exercise SLOT"); the notebook has it back."""
    for cell in exercise_cells(read(path)):
        slot = cell.metadata["int4lab"]["slot"]
        assert cell.cell_type == "code" and cell.source.startswith(f"%%exercise {slot}\n"), cell.source[:80]


def test_readme_lists_every_lesson():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- lessons:begin -->")[1].split("<!-- lessons:end -->")[0]
    listed = re.findall(r"\(lessons/(\d\d_[\w-]+\.ipynb)\)", table)
    listed = sorted(set(listed))
    assert listed == [p.name for p in PATHS]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_runs_as_shipped(path, tmp_path):
    nb, seconds = execute(read(path), tmp_path)
    print(f"{path.name} as shipped: {seconds:.1f} s")
    assert seconds < BUDGET_S, f"{path.name} took {seconds:.0f} s (budget {BUDGET_S} s)"
    text = outputs_text(nb)
    for cell in exercise_cells(nb):
        slot = cell.metadata["int4lab"]["slot"]
        # an unfilled stub is reported, and the lesson goes on with what stands in for it
        assert f"not yet implemented: {STANDS_IN} stays in use for {slot}" in text, slot


def todo_solutions():
    from int4lab.exercises import registry
    registry._load_slots()
    here = ROOT / "tests" / "todo_solutions"
    return {name: (here / f"{name}.py").read_text() for name, slot in registry.SLOTS.items() if slot.triton}


@pytest.fixture(scope="module")
def unlocked_home(tmp_path_factory):
    """A learner home with every slot unlocked from its TODO-plan solution (copied per test)."""
    import int4lab
    from int4lab.exercises import registry, workspace
    home = tmp_path_factory.mktemp("unlocked-home")
    saved = os.environ.get("INT4LAB_HOME"), dict(registry._learner), set(registry._looked_up)
    os.environ["INT4LAB_HOME"] = str(home)
    try:
        for slot, source in todo_solutions().items():
            path = workspace.workspace_file(slot)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            assert int4lab.unlock(slot, quiet=True).passed, slot
    finally:
        os.environ["INT4LAB_HOME"] = saved[0]
        registry._learner.clear(), registry._learner.update(saved[1])
        registry._looked_up.clear(), registry._looked_up.update(saved[2])
    return home


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_runs_with_the_learners_kernels(path, tmp_path, unlocked_home):
    """Every slot unlocked (the lessons after an exercise run the learner's kernels) and the
    lesson's own exercise cells filled with the TODO-plan solutions."""
    shutil.copytree(unlocked_home, tmp_path, dirs_exist_ok=True)
    nb, seconds = execute(with_solutions(read(path), todo_solutions()), tmp_path)
    print(f"{path.name} with the learner's kernels: {seconds:.1f} s")
    assert seconds < BUDGET_S, f"{path.name} took {seconds:.0f} s with the learner's kernels (budget {BUDGET_S} s)"
    text = outputs_text(nb)
    progress = json.loads((tmp_path / "progress.json").read_text())["slots"]
    for cell in exercise_cells(nb):
        slot = cell.metadata["int4lab"]["slot"]
        assert progress.get(slot, {}).get("unlocked"), f"{slot} was not unlocked:\n{text[-3000:]}"
        assert f"Unlocked: your {slot}" in text, slot
    assert "FAIL" not in text and "ERROR" not in text

"""Every lesson executes top to bottom, as shipped (stubs unfilled) and with solutions.

Budgets: each notebook must run in under 120 s on a 2-core CPU in fast mode (INT4LAB_FAST=1).
Measured times are printed (pytest -s) and recorded in docs/teaching.md by hand.
"""
import json
import re
import subprocess
import sys

import pytest

from nbrun import LESSONS, ROOT, execute, exercise_cells, lesson_paths, outputs_text, read, with_solutions

BUDGET_S = 120
PATHS = lesson_paths()


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
        # an unfilled stub is reported, and the lesson goes on with the library's kernel
        assert f"not yet implemented: the library's kernel stays in use for {slot}" in text, slot


@pytest.mark.parametrize("path", [p for p in PATHS if exercise_cells(read(p))], ids=lambda p: p.stem)
def test_runs_with_solutions(path, tmp_path):
    nb, seconds = execute(with_solutions(read(path)), tmp_path)
    print(f"{path.name} with solutions: {seconds:.1f} s")
    assert seconds < BUDGET_S
    text = outputs_text(nb)
    progress = json.loads((tmp_path / "progress.json").read_text())["slots"]
    for cell in exercise_cells(nb):
        slot = cell.metadata["int4lab"]["slot"]
        assert progress.get(slot, {}).get("unlocked"), f"{slot} was not unlocked:\n{text[-3000:]}"
    assert "FAIL" not in text and "ERROR" not in text

"""The TODO plans can be followed: independent solutions (tests/todo_solutions/) unlock every slot."""
import ast
from pathlib import Path

import pytest

from int4lab.exercises import registry, stubs
from int4lab.exercises.learner import run_checks
from int4lab.exercises.workspace import import_file

HERE = Path(__file__).parent / "todo_solutions"
registry._load_slots()
KERNEL_SLOTS = sorted(name for name, slot in registry.SLOTS.items() if slot.triton)


def signatures(source):
    return {f.name: ast.unparse(f.args) for f in ast.parse(source).body if isinstance(f, ast.FunctionDef)}


def todo_solution(slot):
    path = HERE / f"{slot}.py"
    assert path.exists(), f"no TODO-plan solution for {slot}: write {path} from the stub's TODOs"
    return path


@pytest.mark.parametrize("slot", KERNEL_SLOTS)
def test_fits_its_stub(slot):
    """Same functions with the same parameters as the stub (else it was written for an old plan)."""
    mine, stub = signatures(todo_solution(slot).read_text()), signatures(stubs.exercise_source(slot))
    assert {k: mine.get(k) for k in stub} == stub


@pytest.mark.parametrize("slot", KERNEL_SLOTS)
def test_unlocks_with_every_check(slot, tmp_path):
    """Visible and hidden checks: a plan followed literally passes everything a grader runs."""
    path = tmp_path / f"todo_{slot}.py"
    path.write_text(todo_solution(slot).read_text())
    fn = getattr(import_file(path, f"todo_{slot}"), slot)
    results = run_checks(slot, fn, hidden=True)
    bad = [(r.check, r.seed, r.status, r.message) for r in results if not r.passed]
    print(f"{slot}: the TODO-plan solution passed {len(results) - len(bad)}/{len(results)} checks")
    assert results and not bad, bad

"""One source per exercise: the solution fences in kernels/, and the stubs generated from them."""
import ast

import pytest
from nbrun import exercise_cells, lesson_paths, read

from int4lab.exercises import registry, stubs
from int4lab.exercises.learner import run_checks

registry._load_slots()
KERNEL_SLOTS = sorted(name for name, slot in registry.SLOTS.items() if slot.triton)

TOY = '''"""Doc."""
import triton


@triton.jit
def k(x_ptr, BLOCK: tl.constexpr):
    # TODO 1: the offsets
    ### BEGIN SOLUTION
    offs = tl.arange(0, BLOCK)
    ### END SOLUTION


def f(x):
    check(x)
    # TODO 1: allocate
    ### BEGIN SOLUTION
    out = x.clone()
    ### END SOLUTION
    # TODO 2: launch
    ### BEGIN SOLUTION
    k[(1,)](out, BLOCK=4)
    ### END SOLUTION
    return out
'''


def test_stub_rules_on_a_toy_module():
    stub = stubs.stub(TOY)
    ast.parse(stub)
    assert "SOLUTION" not in stub and "offs =" not in stub and "clone" not in stub and "k[(1,)]" not in stub
    assert "    # TODO 1: the offsets\n    pass\n" in stub                 # a jit body keeps a statement
    assert stub.count("raise NotImplementedError") == 1                   # once per launcher
    assert "    check(x)\n" in stub and "    return out\n" in stub      # given code stays
    assert stubs.solution_lines(TOY) == {"k": ["    offs = tl.arange(0, BLOCK)"],
                                        "f": ["    out = x.clone()", "    k[(1,)](out, BLOCK=4)"]}
    assert stubs.strip_fences(TOY) == TOY.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION\n", "")


@pytest.mark.parametrize("bad, why", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    ### END SOLUTION\n", "without a"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n", "inside the region"),
    ("def f():\n    x = 1  ### BEGIN SOLUTION\n", "a line of its own"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "inside a function"),
])
def test_malformed_fences_are_named(bad, why):
    with pytest.raises(ValueError, match=why):
        stubs.stub(bad, "bad.py")


@pytest.mark.parametrize("slot", KERNEL_SLOTS)
def test_every_kernel_module_fences_its_kernel_and_its_launcher(slot):
    source = stubs.module_path(slot).read_text()
    fenced = stubs.solution_lines(source, slot)
    launcher = registry.get(slot).triton.split(":")[1]
    assert launcher in fenced, f"{slot}: its launcher {launcher} has no solution fence"
    tree = ast.parse(source)
    jit = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and stubs._is_jit(f)
           and f.name.endswith("_kernel")]
    assert jit and all(name in fenced for name in jit), f"{slot}: kernels {jit}, fenced {sorted(fenced)}"
    cell = stubs.exercise_source(slot)
    assert "TODO" in cell and "### " not in cell
    for lines in fenced.values():            # not one line of a solution is left in the stub
        solution = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
        assert not [s for s in solution if len(s) > 25 and s in cell.splitlines()], slot


@pytest.mark.parametrize("slot", KERNEL_SLOTS)
def test_the_unfilled_stub_says_not_yet_implemented(slot, tmp_path):
    path = tmp_path / f"stub_{slot}.py"
    path.write_text(stubs.exercise_source(slot))
    from int4lab.exercises.workspace import import_file
    fn = getattr(import_file(path, f"stub_{slot}"), slot)
    results = run_checks(slot, fn)
    assert results and results[0].status == "not_implemented", results[0]


@pytest.mark.parametrize("path", [p for p in lesson_paths() if exercise_cells(read(p))], ids=lambda p: p.stem)
def test_notebooks_hold_the_generated_stubs(path):
    """A stub cannot drift from its kernel module: the notebook's cell is generated from it."""
    for cell in exercise_cells(read(path)):
        slot = cell.metadata["int4lab"]["slot"]
        assert cell.source == stubs.exercise_cell(slot).rstrip("\n"), (
            f"{path.name}: the {slot} cell differs from the stub of its kernel module: "
            "run python lessons/build.py")


@pytest.mark.parametrize("slot", sorted(registry.SLOTS))
def test_visible_checks_cover_what_the_lessons_promise(slot):
    """Every lesson promises that unlock tries an empty input and a view whose memory is not in
    order: those checks must be visible (run by unlock), not only hidden (run by a grader)."""
    names = [c.name for c in registry.get(slot).checks if not c.hidden]
    assert any("empty" in n or "n=0" in n or n.startswith("0 ") or "0x" in n.split()[0] or "x0" in n
               for n in names), names
    assert any("non-contiguous" in n or "transposed" in n or "sliced" in n for n in names), names

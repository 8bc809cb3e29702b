"""The layout docs/architecture.md describes, checked: the groups exist, imports point one way
(runtime -> spec -> kernels -> exercises -> layers -> training -> grading/perf -> course), module
imports form no cycle, and every registered slot has everything the "add a slot" steps ask for."""
import ast
import inspect
import re
from pathlib import Path

import pytest

import int4lab
from int4lab import ops
from int4lab.exercises import registry

ROOT = Path(__file__).resolve().parents[1]

# package or module -> level; a module may import int4lab modules of its own level or below.
LEVELS = {
    "int4lab.runtime": 0, "int4lab.support": 0, "int4lab.interpreter": 0, "int4lab.lazy": 0,
    "int4lab.spec": 1,
    "int4lab.kernels": 2,
    "int4lab.exercises": 3, "int4lab.ops": 3,
    "int4lab.layers": 4,
    "int4lab.training": 5,
    "int4lab.perf": 6,
    "int4lab.course": 7,
    "int4lab.grading": 8, "int4lab.doctor": 8, "int4lab.cli": 8, "int4lab.__main__": 8, "int4lab": 8,
}
GROUPS = ("spec", "interpreter", "exercises", "exercises/slots", "grading", "training",
          "training/models", "perf", "course")


def modules():
    """(dotted name, path) of every module of the package, kernels/ as int4lab.kernels."""
    for path in sorted((ROOT / "int4lab").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path
    for path in sorted((ROOT / "kernels").glob("*.py")):
        yield "int4lab.kernels" + ("" if path.stem == "__init__" else "." + path.stem), path


def level(name):
    best = max((k for k in LEVELS if name == k or name.startswith(k + ".")), key=len)
    return LEVELS[best]


def imports(path, top_level_only=False):
    """The int4lab modules a file imports (`from int4lab.x import y` names int4lab.x.y when that
    is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = {m for m, _ in modules()}
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "int4lab"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "int4lab":
            assert node.level == 0, f"{path}: relative import; the package uses absolute imports"
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in names else node.module)
    return out


def test_the_groups_exist():
    for group in GROUPS:
        assert (ROOT / "int4lab" / group / "__init__.py").exists(), group
    flat = sorted(p.name for p in (ROOT / "int4lab").glob("*.py"))
    assert flat == sorted(["__init__.py", "__main__.py", "cli.py", "doctor.py", "layers.py", "lazy.py", "ops.py",
                           "runtime.py", "support.py"]), flat


def test_imports_point_one_way():
    wrong = []
    for name, path in modules():
        for target in imports(path):
            if target == "int4lab" and name != "int4lab":
                # `import int4lab` runs the set-up; only the top (and the kernels' guard) may
                if level(name) < 8:
                    wrong.append(f"{name} imports the whole package (int4lab)")
                continue
            if level(target) > level(name):
                wrong.append(f"{name} (level {level(name)}) imports {target} (level {level(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: {t for t in imports(path, top_level_only=True) if t != name}
             for name, path in modules()}
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt in graph and nxt != "int4lab":
                visit(nxt)
        stack.pop()
        seen.add(node)

    for node in graph:
        visit(node)


registry._load_slots()
SLOTS = sorted(registry.SLOTS)


@pytest.mark.parametrize("slot", SLOTS)
def test_every_slot_has_what_adding_a_slot_asks_for(slot):
    s = registry.get(slot)
    # 1. spec and validator
    assert callable(s.spec) and s.spec.__doc__ is not None or slot == "vector_add", slot
    assert callable(s.validate), f"{slot}: no validate function"
    # 2. kernel module, named like the slot
    module, fn = s.triton.split(":")
    assert module == f"int4lab.kernels.{slot}" and fn == slot, s.triton
    assert (ROOT / "kernels" / f"{slot}.py").exists()
    # 4. an op with the spec's signature, exported at the top level
    op = getattr(ops, slot)
    assert list(inspect.signature(op).parameters) == list(inspect.signature(s.spec).parameters), slot
    assert slot in int4lab.__all__ and getattr(int4lab, slot) is op
    # 5. at least two wrong kernels
    wrong = list((ROOT / "tests" / "wrong_kernels").glob(f"{slot}__*.py"))
    assert len(wrong) >= 2, f"{slot}: {len(wrong)} wrong kernels"
    # 6. a lesson with an exercise cell for it, and the README names it
    sources = "".join(p.read_text() for p in (ROOT / "lessons" / "src").glob(f"{s.lesson}_*.py"))
    assert re.search(r'# %% .*int4lab=\{"slot": "' + slot + r'"\}', sources), f"{slot}: no exercise cell"
    assert f"`{slot}`" in (ROOT / "README.md").read_text(), f"{slot}: not in the README"


def test_public_api():
    for name in ("quantize", "dequantize", "block_hadamard", "Int4Linear", "quantize_model",
                 "Recipe", "RECIPES", "get_recipe"):
        assert name in int4lab.__all__, name
    for name in int4lab.__all__:
        obj = getattr(int4lab, name)          # every name in __all__ exists
        if callable(obj):
            assert inspect.getdoc(obj), f"int4lab.{name} has no docstring"
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            missing = [p for p in sig.parameters.values() if p.annotation is p.empty
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            assert not missing, f"int4lab.{name}: parameters without type hints: {missing}"
            assert sig.return_annotation is not sig.empty, f"int4lab.{name}: no return type hint"

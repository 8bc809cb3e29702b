"""`int4lab student-copy OUT`: the course without the library's kernel bodies.

The copy keeps every lesson, the spec, the checks and the tests of the spec, but each slot's
kernel module in kernels/ becomes the lesson's stub: its docstring (what it computes, the
layout), the given code and the TODO plan, with the code between the solution fences cut out
(int4lab.exercises.stubs, the same generator as the lessons' exercise cells), so its launcher
raises NotImplementedError. Given helpers (kernels/rounding.py, the doctor's known-answer kernel)
are copied as they are. A marker file tells the registry that the library's kernels are
absent, so everything falls back to the PyTorch spec and the lessons still run.

Left out: the tests of the kernel bodies, the deliberately wrong kernels (each one bug away from
a solution), and the maintainers' tools built on them (LEFT_OUT). Tests that need the library's
kernels are skipped in the copy with a reason (SKIPPED_IN_COPY, through the copy's conftest.py).
The copy is then scanned: no run of five lines of a library solution (the fenced code) or of a
wrong kernel (less what the stubs give) may be in any of its files (find_library_code);
`make_copy` refuses to finish otherwise.

A copy must run its own int4lab: installed in a fresh virtualenv (`pip install -e OUT`), or from
PYTHONPATH=OUT where no int4lab is installed. STUDENT_COPY.md in the copy says how, and lesson 00
and the copy's tests check it (installed_library).
"""
import argparse
import ast
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from int4lab.exercises import registry, stubs
from int4lab.runtime import STUDENT_COPY_MARKER as MARKER
from int4lab.runtime import is_student_copy  # noqa: F401  (the grader and tests ask it here too)

ROOT = Path(__file__).resolve().parents[2]

# Kernel modules that are not solutions, copied as they are: the package's __init__, the doctor's
# known-answer kernel (a copy must still be able to say whether Triton works on the machine) and
# the rounding helper that the stubs import (given in every lesson that quantizes).
NOT_SOLUTIONS = {"__init__", "known_answer", "rounding"}

# Files of the repository that a copy leaves out, with why (globs, relative to the repository).
LEFT_OUT = {
    "tests/test_kernel_*.py": "they test the library's kernel bodies",
    "kernels/fused_linear.py": "the library's fused Int4Linear, built from the slots' solutions",
    "tests/todo_solutions/*": "solutions to the exercises, written from the TODO plans",
    "tests/test_todo_solutions.py": "it unlocks every slot with tests/todo_solutions/",
    "tests/wrong_kernels/[a-z]*__*.py": "deliberately wrong kernels, each one bug away from a solution",
    "tests/inspect_kernels.py": "its unpack_gemm kernel is a working int4_matmul (sign-extending) without the scales",
    "tests/test_inspect.py": "it inspects the library's compiled kernels and tests/inspect_kernels.py",
    "tests/test_grade*.py": "they grade the library's kernels against the wrong ones and attacks",
    "tests/test_similarity.py": "it compares submissions with the library's kernels and the wrong ones",
    "scripts/compile_gate.py": "it compiles the library's kernels and the wrong ones for GPUs",
    "scripts/triton_matrix.sh": "it runs scripts/compile_gate.py and the kernel tests",
    ".ci/*": "the course's CI runs the maintainers' checks (scripts/triton_matrix.sh)",
}

# Tests kept in the copy that need the library's kernels (or the files LEFT_OUT): skipped there,
# with the reason, by the block `make_copy` appends to the copy's tests/conftest.py. A node id
# without "[...]" covers all its parameters. tests/test_student_copy.py runs a copy's suite, so a
# new test that needs the library fails there until it is listed here.
SKIPPED_IN_COPY = {
    "tests/test_lessons.py::test_runs_with_the_learners_kernels":
        "the TODO-plan solutions it runs (tests/todo_solutions/) are not part of a copy",
    "tests/test_registry.py::test_unlock_from_workspace_persists_across_restarts":
        "it unlocks the library's kernel as the learner's",
    "tests/test_registry.py::test_edited_file_is_not_used_until_unlocked_again":
        "it unlocks the library's kernel as the learner's",
    "tests/test_registry.py::test_library_kernels_pass_hidden_checks": "it checks the library's kernels",
    "tests/test_registry.py::test_use_modes_and_fallback": "it expects the library's kernel to run",
    "tests/test_registry.py::test_progress_and_which_agree_through_unlock_edit_and_restart":
        "it unlocks the library's kernel as the learner's",
    "tests/test_registry.py::test_an_out_of_bounds_access_names_the_learners_kernel_and_line":
        "it edits the library's kernel",
    "tests/test_registry.py::test_progress_reveal_and_corrupt_file": "it reveals a library kernel",
    "tests/test_registry.py::test_bench_on_cpu_reports_correctness_not_time": "it checks the library's kernel",
    "tests/test_packing.py::test_kernels_match_spec": "it runs the library's kernels",
    "tests/test_packing.py::test_kernels_on_non_contiguous_input": "it runs the library's kernels",
    "tests/test_packing.py::test_every_value_round_trips_through_the_kernels": "it runs the library's kernels",
    "tests/test_packing.py::test_dispatch_says_what_ran": "it expects the library's kernel to run",
    "tests/test_bench.py::test_smoke_ran_the_triton_kernels": "it expects the library's kernels to run",
    "tests/test_bench.py::test_the_fast_entry_skips_every_validation": "it calls the library's launcher",
    "tests/test_bench.py::test_linear_times_the_layers_own_gemms": "it spies on the library's GEMM launcher",
    "tests/test_bench.py::test_the_fused_layers_gemms_are_recorded_and_timed_through_its_gemm":
        "it records the library's fused layer (kernels/fused_linear.py is not part of a copy)",
    "tests/test_registry.py::test_the_trusted_entry_skips_value_checks_for_the_library_only":
        "it runs the library's pack_int4 launcher",
    "tests/test_stubs.py::test_every_kernel_module_fences_its_kernel_and_its_launcher":
        "a copy's kernel modules are the stubs: their fenced solutions were cut out",
    "tests/test_cli.py::test_a_kernel_imported_first_still_runs_in_the_interpreter":
        "it runs the library's vector_add",
    "tests/test_cli.py::test_interpreter_run_picks_the_small_size_and_says_why":
        "it trains with the library's kernels (in a copy --impl triton runs the spec, at full size)",
    "tests/test_cli.py::test_the_full_size_runs_on_a_gpu_and_with_the_spec":
        "it expects the library's kernels where --impl triton asks for them",
    "tests/test_cli.py::test_capstone_trains_on_the_learners_kernels_on_a_cpu":
        "it unlocks every slot with the library's solutions",
    "tests/test_layer_counts.py::test_a_triton_launch_is_counted": "it counts a launch of the library's kernel",
    "tests/test_layer_counts.py::test_the_fused_layer_meets_the_issue_targets":
        "it counts the library's fused layer (kernels/fused_linear.py is not part of a copy)",
    "tests/test_packaging.py::test_ci_runs_the_readme_test_command": "the course's CI is not part of a copy",
    "tests/test_packaging.py::test_interpreter_runs_runtime_bounded_loops_on_every_numpy":
        "it runs the library's int4_matmul",
    "tests/test_layer_backends.py": "it runs layers on the library's kernels",
    "tests/test_architecture.py::test_every_slot_has_what_adding_a_slot_asks_for":
        "a maintainer's check: the wrong kernels it counts are not part of a copy",
    "tests/test_student_copy.py": "it makes copies of the full course",
}

STUDENT_COPY_MD = """\
# This is a student copy of int4lab

It was written by `int4lab student-copy`: every lesson, the PyTorch spec, the checks and the
tests of the spec are here, but the library's Triton kernels are not. Each module in `kernels/`
keeps its docstring (what the kernel computes, its memory layout) and a function that raises
NotImplementedError; you write the kernels in the lessons' `%%exercise` cells. Until you unlock
yours, every operation runs on the PyTorch spec. `int4lab.reveal` has no library kernel to show
here.

## Install it in its own environment

The copy must run **its own** `int4lab`. If another int4lab is installed in the Python you use
(a teacher's full course, `pip install -e` of the original), the lessons would import that one,
with its kernels, and you would not be doing the exercises you think you are. So give the copy a
fresh virtualenv:

```bash
cd {name}                       # this folder
python3 -m venv .venv
. .venv/bin/activate            # Windows: .venv\\Scripts\\activate
(python3 -c "import torch" 2>/dev/null || python3 -m pip install torch==2.13.0)
python3 -m pip install -e ".[test]"
int4lab doctor
jupyter lab lessons/
```

(On a CPU-only machine install torch's CPU build first, as README.md says, or pip pulls a
multi-GB CUDA wheel.) `pip install -e .` maps `kernels/` to `int4lab.kernels`, as the course's
pyproject.toml says.

Without installing: `PYTHONPATH=$PWD jupyter lab lessons/` from this folder works only in a Python
where no int4lab is installed at all; where one is, `int4lab.kernels` would still come from the
installed course. Use the virtualenv.

## Check which int4lab runs

Lesson 00's first code cell prints where `int4lab` and its kernels come from, and whether that
is a student copy; it prints a loud WARNING when a notebook of this copy runs a library installed
elsewhere. From a shell:

```bash
python3 -c "import int4lab, int4lab.kernels as k
print(int4lab.__file__, k.__file__, int4lab.runtime.is_student_copy())"
```

should print paths inside this folder and `True`.

## Tests

`python3 -m pytest -q -ra` runs the copy's tests: the spec, the checks, the lessons as shipped
(your stubs unfilled). Tests of the library's kernels were left out of the copy or are skipped
with the reason (`-ra` lists them). The suite stops at once if it finds an int4lab other than
this copy's.
"""

README_NOTE = ("> **Student copy.** This is a copy of the course without the library's kernels: read "
               "[STUDENT_COPY.md](STUDENT_COPY.md) first, and install it in its own virtualenv.\n\n")

CONFTEST_BLOCK = '''

# --- added by `int4lab student-copy` (int4lab/grading/student_copy.py) ----------------------
# A student copy has no library kernels. Its tests must run its own int4lab (STUDENT_COPY.md),
# and the tests that need the library's kernels are skipped here, with the reason (pytest -rs).
def pytest_configure(config):
    from pathlib import Path as _Path

    import int4lab
    import int4lab.kernels
    here = _Path(__file__).resolve().parents[1]
    found = {"int4lab": _Path(int4lab.__file__).resolve().parent,
             "int4lab.kernels": _Path(int4lab.kernels.__file__).resolve().parent}
    wrong = {k: v for k, v in found.items() if here not in v.parents}
    if wrong or not int4lab.runtime.is_student_copy():
        pytest.exit(f"this student copy's tests import {wrong or found} instead of the copy in {here}: "
                    "install the copy (STUDENT_COPY.md) and run them in its environment", returncode=4)


_NEEDS_LIBRARY_KERNELS = __SKIPPED__


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid
        reason = next((r for key, r in _NEEDS_LIBRARY_KERNELS.items()
                       if nodeid == key or nodeid.split("[")[0] == key or nodeid.startswith(key + "::")),
                      None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"student copy: {reason}"))
'''


def _tracked_files(root):
    try:
        out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
        return [root / f for f in out.stdout.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


def left_out(rel) -> str | None:
    """Why the repository file `rel` is not part of a copy (None: it is)."""
    rel = Path(rel).as_posix()
    return next((why for pattern, why in LEFT_OUT.items() if fnmatch.fnmatch(rel, pattern)), None)


def stub_kernel(source: str, origin: str = "<kernel>") -> str:
    """A slot's kernel module as the copy holds it: its docstring, then the lesson's stub."""
    doc = stubs.module_docstring(source)
    body = stubs.stub(stubs._without_docstring(source), origin)
    return (f'"""{doc}\n\n(Student copy: the code between the TODOs is yours to write, in the '
            'lesson\'s exercise cell.)\n"""\n' + body)


STUB_LINT = ('"kernels/*.py" = ["F401", "F821", "F841"]   # student copy: stubs name what the '
             "learner's code (cut out) defines or uses\n")


def _with_stub_lint_rules(text: str) -> str:
    """pyproject.toml for a copy: ruff keeps passing on stubs whose imports and given names
    serve code that is not there yet."""
    head = "[tool.ruff.lint.per-file-ignores]\n"
    if head not in text:
        raise RuntimeError("int4lab student-copy: pyproject.toml has no [tool.ruff.lint.per-file-ignores]")
    return text.replace(head, head + STUB_LINT, 1)


def _conftest_block():
    body = "{\n" + "".join(f"    {k!r}:\n        {v!r},\n" for k, v in SKIPPED_IN_COPY.items()) + "}"
    return CONFTEST_BLOCK.replace("__SKIPPED__", body)


def make_copy(out, root=ROOT, check=True):
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"int4lab student-copy: {out} exists and is not empty")
    registry._load_slots()
    kernels = {s.triton.split(":")[0].rsplit(".", 1)[1] for s in registry.SLOTS.values() if s.triton}
    for src in _tracked_files(root):
        rel = src.relative_to(root)
        if left_out(rel) or not src.is_file():
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "kernels" and rel.suffix == ".py" and rel.stem in kernels:
            dst.write_text(stub_kernel(src.read_text(), str(rel)))
        elif rel.parts[0] == "kernels" and rel.suffix == ".py" and rel.stem not in NOT_SOLUTIONS:
            raise RuntimeError(f"int4lab student-copy: {rel} is neither a slot's kernel module nor "
                               "listed in NOT_SOLUTIONS: say whether a copy may hold it")
        elif rel.as_posix() == "tests/conftest.py":
            dst.write_text(src.read_text() + _conftest_block())
        elif rel.as_posix() == "README.md":
            dst.write_text(README_NOTE + src.read_text())
        elif rel.as_posix() == "pyproject.toml":
            dst.write_text(_with_stub_lint_rules(src.read_text()))
        else:
            shutil.copy2(src, dst)
    (out / "int4lab" / MARKER).write_text("The library's kernel bodies were removed from this copy.\n")
    (out / "STUDENT_COPY.md").write_text(STUDENT_COPY_MD.format(name=out.name))
    if check:
        found = find_library_code(out, root)
        if found:
            raise RuntimeError("int4lab student-copy: library code left in the copy at "
                               f"{out}:\n" + "\n".join(f"  {f}: {', '.join(sorted(v))}"
                                                     for f, v in sorted(found.items())))
    return out


# ---------------------------------------------------------------------------------------------
# What must never be in a copy: the library's kernels and the wrong kernels

RUN = 5            # lines in a row that count as a copied body


def _normalise(line: str) -> str:
    """A line as compared: comment markers and trailing comments dropped, no whitespace at all
    (so re-indenting or re-spacing a body does not hide it); "" for lines too short to tell."""
    s = line.strip().lstrip("#").strip()
    s = re.sub(r"\s#.*$", "", s)
    s = re.sub(r"\s+", "", s)
    return s if len(s) >= 6 else ""


def forbidden_bodies(root=ROOT) -> dict:
    """{"file:function": normalised lines} that a copy must not hold: the fenced solution lines
    of every slot's kernel module (not NOT_SOLUTIONS), and the body of every function of the
    wrong kernels (their given lines are dropped in find_library_code: the stubs show them)."""
    root = Path(root)
    bodies = {}
    for path in sorted((root / "kernels").glob("*.py")):
        if path.stem in NOT_SOLUTIONS:
            continue
        rel = path.relative_to(root).as_posix()
        for fn, lines in stubs.solution_lines(path.read_text(), rel).items():
            norm = [n for n in (_normalise(s) for s in lines if not s.strip().startswith("#")) if n]
            if norm:
                bodies[f"{rel}:{fn}"] = norm
    for path in sorted((root / "tests" / "wrong_kernels").glob("[a-z]*__*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if not body:
                continue
            seg = lines[body[0].lineno - 1:node.end_lineno]
            norm = [n for n in (_normalise(s) for s in seg if not s.strip().startswith("#")) if n]
            if norm:
                bodies[f"{path.relative_to(root).as_posix()}:{node.name}"] = norm
    return bodies


def _given_lines(root) -> set:
    """Normalised lines of the stubs (given code): a wrong kernel shares them with the copy."""
    given = set()
    for path in sorted((Path(root) / "kernels").glob("*.py")):
        if path.stem not in NOT_SOLUTIONS:
            given |= {n for n in (_normalise(s) for s in stubs.stub(path.read_text()).splitlines()) if n}
    return given


def _text_lines(path: Path) -> list:
    if path.suffix == ".ipynb":
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (ValueError, KeyError, UnicodeDecodeError):
            return []
        return [s for c in cells for s in "".join(c.get("source", "")).splitlines()]
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError):
        return []


def find_library_code(copy, root=ROOT) -> dict:
    """{file of the copy: {"file:function", ...}} for every file of `copy` that holds a run of
    RUN normalised lines of a library kernel or a wrong kernel (a whole body when it is shorter,
    down to 3 lines), or that is named like a wrong kernel. Empty for a clean copy."""
    copy = Path(copy)
    runs = {}
    given = _given_lines(root)
    for name, body in forbidden_bodies(root).items():
        if name.startswith("tests/"):
            body = [line for line in body if line not in given]
        n = min(RUN, len(body))
        if n >= 3:
            for i in range(len(body) - n + 1):
                runs.setdefault(tuple(body[i:i + n]), name)
    sizes = sorted({len(k) for k in runs})
    wrong_names = {p.name for p in (Path(root) / "tests" / "wrong_kernels").glob("[a-z]*__*.py")}
    found = {}
    for path in sorted(p for p in copy.rglob("*") if p.is_file()):
        rel = path.relative_to(copy).as_posix()
        if path.name in wrong_names:
            found.setdefault(rel, set()).add("tests/wrong_kernels/" + path.name)
        lines = [n for n in (_normalise(s) for s in _text_lines(path)) if n]
        for n in sizes:
            for i in range(len(lines) - n + 1):
                name = runs.get(tuple(lines[i:i + n]))
                if name:
                    found.setdefault(rel, set()).add(name)
    return found


# ---------------------------------------------------------------------------------------------
# Which int4lab runs (lesson 00's set-up cell)

def installed_library(course=None) -> tuple[bool, str]:
    """(ok, lines to print): where int4lab and its kernels come from and whether that is a
    student copy. `course` is the folder of the course a notebook belongs to (a lesson's cwd is
    lessons/, so its parent); when that is a student copy, anything but its own int4lab is not
    ok, and the lines say so loudly, with the fix."""
    import int4lab
    import int4lab.kernels
    lib = Path(int4lab.__file__).resolve().parent
    kernels = Path(int4lab.kernels.__file__).resolve().parent
    kind = ("a STUDENT COPY: no library kernels, the PyTorch spec stands in until you unlock yours"
            if is_student_copy() else "the full course, with the library's kernels")
    lines = [f"int4lab {int4lab.__version__} from {lib.parent}", f"  this is {kind}"]
    if kernels.parent != lib.parent:
        lines.append(f"  its kernels from {kernels}")
    ok = True
    if course is not None:
        course = Path(course).resolve()
        if (course / "int4lab" / MARKER).exists():
            mine = lib == course / "int4lab" and kernels == course / "kernels" and is_student_copy()
            if not mine:
                ok = False
                bar = "!" * 78
                lines += [bar,
                          f"WARNING: this notebook belongs to the student copy in {course},",
                          "but the int4lab it runs is not that copy's own: int4lab comes from",
                          f"{lib.parent} and its kernels from {kernels}.",
                          "You would be running another course's library (kernels included), not your copy.",
                          f"Fix: install the copy in its own virtualenv ({course / 'STUDENT_COPY.md'}):",
                          f"  python3 -m venv .venv && . .venv/bin/activate && pip install -e {course}",
                          "then start `jupyter lab` from that environment and open this notebook again.",
                          bar]
        elif (course / "int4lab").is_dir() and lib != course / "int4lab":
            lines.append(f"  note: this notebook's course is {course}, but int4lab comes from {lib.parent}")
    return ok, "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="int4lab student-copy", description=__doc__.split("\n")[0])
    p.add_argument("out", help="an empty or new folder")
    a = p.parse_args(argv)
    out = make_copy(a.out)
    print(f"wrote a student copy of the course to {out} (library kernels removed; lessons run on the spec)\n"
          f"install it in a fresh virtualenv before use: see {out / 'STUDENT_COPY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`int4lab student-copy`: kernel bodies removed, nothing of them left anywhere in the copy, the
copy runs its own int4lab (the registry falls back to the spec there) and its tests pass."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from int4lab.grading import student_copy as student

ROOT = Path(__file__).resolve().parents[1]

# The copy's suite as test_the_copys_own_suite_passes runs it: all of it but the browser tests
# (Chromium driving JupyterLab, about 3 minutes), DDP and training (about 40 s; a copy changes
# nothing there, they run on the spec anyway) and the notebook runs of lessons 01-09 (about 50 s
# in a copy); lesson 00 runs as shipped. 70-90 s on 2 cores, where the whole suite took 6 minutes.
# INT4LAB_COPY_SUITE=full runs all of it.
COPY_SUITE = ["--ignore=tests/browser", "--ignore=tests/test_ddp.py", "--ignore=tests/test_train.py",
              "-k", "not runs_as_shipped or 00_welcome"]


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return student.make_copy(tmp_path_factory.mktemp("copy") / "course")


@pytest.fixture(scope="module")
def copy_python(copy, tmp_path_factory):
    """The Python of a virtualenv in which the copy is installed (`pip install -e`), as
    STUDENT_COPY.md tells a student. It sees this machine's packages (torch, triton, jupyter),
    including the course installed here; the copy's own installation comes first, so `import
    int4lab` and `int4lab.kernels` must both resolve to the copy (checked)."""
    venv = tmp_path_factory.mktemp("venv") / "copy"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, capture_output=True)
    python = venv / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-e", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return python


def _env(home):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "INT4LAB_HOME", "INT4LAB_IMPL", "PYTEST_ADDOPTS")}
    env["INT4LAB_HOME"] = str(home)
    # JupyterLab's extensions (ipywidgets') lie in this Python's share/jupyter, which a virtualenv
    # does not search; a student's own virtualenv installs them in its own
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [env.get("JUPYTER_PATH"),
                                                        str(Path(sys.prefix) / "share" / "jupyter")]))
    return env


def test_student_copy_strips_kernels_and_runs_on_the_spec(copy, copy_python, tmp_path):
    kernel = (copy / "kernels" / "pack_int4.py").read_text()
    assert "NotImplementedError" in kernel and "tl.store" not in kernel
    assert "What it computes" in kernel                # the docstring (the contract) stays
    assert (copy / "kernels" / "known_answer.py").read_text().count("tl.store") == 1
    # the stub of the lesson: given code and the TODO plan, not the fenced solution
    assert "validate_pack(q)" in kernel and "# TODO 3:" in kernel and "SOLUTION" not in kernel
    rounding = (copy / "kernels" / "rounding.py").read_text()   # a given helper: copied as it is
    assert rounding == (ROOT / "kernels" / "rounding.py").read_text()
    assert (copy / "lessons" / "01_int4_numbers_and_packing.ipynb").exists()
    assert not list((copy / "tests").glob("test_kernel_*.py"))
    assert [p.name for p in (copy / "tests" / "wrong_kernels").iterdir()
            if p.suffix == ".py"] == ["__init__.py"]
    assert (copy / "int4lab" / student.MARKER).exists()
    assert "pip install -e" in (copy / "STUDENT_COPY.md").read_text()
    assert "STUDENT_COPY.md" in (copy / "README.md").read_text().split("\n", 1)[0]
    code = ("import torch, int4lab, int4lab.kernels\n"
            "q = torch.randint(-8, 8, (3, 34), dtype=torch.int8)\n"
            "with int4lab.use('triton'):\n"
            "    p = int4lab.pack_int4(q)\n"
            "print(int4lab.__file__, int4lab.kernels.__file__)\n"
            "print(int4lab.last_ran('pack_int4'), torch.equal(int4lab.unpack_int4(p), q))\n"
            "int4lab.bench('pack_int4')\n")
    r = subprocess.run([str(copy_python), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=_env(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].split() == [str(copy / "int4lab" / "__init__.py"), str(copy / "kernels" / "__init__.py")]
    assert lines[1].split() == ["spec", "True"]
    assert "a student copy has no library kernel" in r.stdout and "triton is not installed" not in r.stdout


def test_the_copy_holds_no_library_kernel_and_no_wrong_kernel(copy):
    assert student.find_library_code(copy) == {}


def test_the_scan_finds_a_body_however_it_is_laid_out(tmp_path):
    """The scan is not vacuous: a library kernel re-indented into a notebook cell, a wrong
    kernel under another name, and one in its own name are all found."""
    import json
    body = (ROOT / "kernels" / "quantize_int4.py").read_text().split("@triton.jit", 1)[1]
    cell = ["%%exercise quantize_int4\n"] + ["  " + s.replace(" = ", "=") + "\n" for s in body.splitlines()]
    (tmp_path / "lesson.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": cell}]}))
    wrong = sorted((ROOT / "tests" / "wrong_kernels").glob("int4_matmul__*.py"))[0]
    (tmp_path / "notes.md").write_text("```python\n" + wrong.read_text() + "```\n")
    (tmp_path / wrong.name).write_text("")
    found = student.find_library_code(tmp_path)
    assert any(k.startswith("kernels/quantize_int4.py:") for k in found["lesson.ipynb"]), found
    assert any(k.startswith(f"tests/wrong_kernels/{wrong.name}:") for k in found["notes.md"]), found
    assert found[wrong.name] == {f"tests/wrong_kernels/{wrong.name}"}


def test_lesson_00_warns_when_a_copy_runs_another_int4lab(copy, copy_python, tmp_path):
    code = ("import sys\nfrom pathlib import Path\nimport int4lab\n"
            "from int4lab.grading.student_copy import installed_library\n"
            "ok, text = installed_library(course=Path.cwd().parent)\nprint(ok)\nprint(text)\n")
    # this machine's Python runs the full course installed here, not the copy the notebook is in
    r = subprocess.run([sys.executable, "-c", code], cwd=copy / "lessons", capture_output=True,
                       text=True, env=_env(tmp_path))
    assert r.stdout.startswith("False\n") and "WARNING" in r.stdout and "pip install -e" in r.stdout, \
        r.stdout + r.stderr[-2000:]
    # the copy's own environment: its own int4lab, a student copy, no warning
    r = subprocess.run([str(copy_python), "-c", code], cwd=copy / "lessons", capture_output=True,
                       text=True, env=_env(tmp_path))
    assert r.stdout.startswith("True\n") and "STUDENT COPY" in r.stdout and "WARNING" not in r.stdout, \
        r.stdout + r.stderr[-2000:]
    assert str(copy) in r.stdout


@pytest.mark.slow
def test_the_copys_own_suite_passes(copy, copy_python, tmp_path):
    """Run the copy's tests inside the copy, with its own int4lab (the copy's conftest.py stops
    the run if `import int4lab` or `int4lab.kernels` resolve anywhere else)."""
    full = os.environ.get("INT4LAB_COPY_SUITE") == "full"
    args = [] if full else COPY_SUITE
    start = time.perf_counter()
    r = subprocess.run([str(copy_python), "-m", "pytest", "-v", "-x", "-rs", "-p", "no:cacheprovider",
                        f"--basetemp={tmp_path / 'inner'}", *args], cwd=copy, capture_output=True,
                       text=True, env=_env(tmp_path / "home"), timeout=1200 if full else 600)
    print(f"the copy's suite ({'full' if full else 'subset'}): {time.perf_counter() - start:.0f} s\n"
          + r.stdout[-2500:])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "tests/test_lessons.py::test_runs_as_shipped[00_welcome] PASSED" in r.stdout
    assert "tests/test_quant.py::" in r.stdout
    assert "tests/test_registry.py::test_stub_is_not_an_error PASSED" in r.stdout


def test_copy_stub_is_the_lessons_stub_with_the_docstring():
    src = ('"""Doc."""\nimport torch\n\ndef f(x, block_size=32, *, seed=None):\n'
           "    check(x)\n    # TODO 1: return x\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n")
    stub = student.stub_kernel(src, "f.py")
    assert "Doc." in stub and "def f(x, block_size=32, *, seed=None):" in stub
    assert "check(x)" in stub and "# TODO 1: return x" in stub        # given code and the plan
    assert "    return x\n" not in stub and "SOLUTION" not in stub and "NotImplementedError" in stub


def test_every_kernel_module_is_a_slot_or_said_to_be_given():
    """make_copy refuses a kernels/ module it does not know how to treat (a slot's, a given one,
    or one a copy leaves out)."""
    from int4lab.exercises import registry
    registry._load_slots()
    slots = {s.triton.split(":")[0].rsplit(".", 1)[1] for s in registry.SLOTS.values() if s.triton}
    for path in (ROOT / "kernels").glob("*.py"):
        assert (path.stem in slots or path.stem in student.NOT_SOLUTIONS
                or student.left_out(path.relative_to(ROOT))), path.name

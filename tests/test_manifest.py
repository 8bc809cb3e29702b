"""The grader checks itself (int4lab.grading.manifest): the committed manifest is current, and
a changed, missing or extra file of the package is reported by name."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from int4lab import runtime
from int4lab.grading import manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(runtime.is_student_copy(), reason="the copy's kernels are stubs; its manifest is the "
                    "library's until student_copy.make_copy writes the copy's own")
def test_the_committed_manifest_is_current():
    problems = manifest.verify()
    assert not problems, (
        f"int4lab/grading/MANIFEST.json is stale; regenerate it with `{manifest.WRITE_COMMAND}` "
        "(after every change to a .py file of int4lab/ or kernels/):\n  " + "\n  ".join(problems))


def test_the_manifest_is_package_data():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "MANIFEST.json" in setuptools["package-data"]["int4lab.grading"]
    assert manifest.DEFAULT == ROOT / "int4lab" / "grading" / "MANIFEST.json"


@pytest.fixture
def copy(tmp_path):
    """A copy of the package (int4lab/ and kernels/) and a manifest made from it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "MANIFEST.json")
    shutil.copytree(ROOT / "int4lab", tmp_path / "int4lab", ignore=ignore)
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=ignore)
    roots = {"package_root": tmp_path / "int4lab", "kernels_root": tmp_path / "kernels"}
    path = tmp_path / "MANIFEST.json"
    data = manifest.write(path, **roots)
    return tmp_path, path, roots, data


def test_a_fresh_manifest_lists_every_py_file_once(copy):
    root, path, roots, data = copy
    assert manifest.verify(path, **roots) == []
    files = data["files"]
    assert "int4lab/grading/grader.py" in files and "int4lab/kernels/pack_int4.py" in files
    assert len(files) == len(list((root / "int4lab").rglob("*.py"))) + len(list((root / "kernels").rglob("*.py")))
    assert all(len(h) == 64 for h in files.values()) and data["version"] == manifest.version()


def test_appending_a_line_is_reported(copy):
    root, path, roots, _ = copy
    with open(root / "int4lab" / "exercises" / "compare.py", "a") as f:
        f.write("exact = lambda *a, **k: None\n")
    with open(root / "kernels" / "pack_int4.py", "a") as f:
        f.write("\n")
    problems = manifest.verify(path, **roots)
    assert len(problems) == 2, problems
    assert problems[0].startswith("int4lab/exercises/compare.py changed: ")
    assert str(root / "int4lab" / "exercises" / "compare.py") in problems[0]
    assert problems[1].startswith("int4lab/kernels/pack_int4.py changed: ")
    assert str(root / "kernels" / "pack_int4.py") in problems[1]


def test_missing_and_extra_files_are_reported(copy):
    root, path, roots, _ = copy
    (root / "int4lab" / "grading" / "student_copy.py").unlink()
    (root / "int4lab" / "sitecustomize.py").write_text("import os\n")
    (root / "int4lab" / "__pycache__").mkdir(exist_ok=True)
    (root / "int4lab" / "__pycache__" / "ignored.py").write_text("x = 1\n")     # caches are not listed
    assert manifest.verify(path, **roots) == [
        "int4lab/grading/student_copy.py is missing: the manifest lists it, but "
        f"{root / 'int4lab' / 'grading' / 'student_copy.py'} does not exist",
        f"int4lab/sitecustomize.py is an extra file: {root / 'int4lab' / 'sitecustomize.py'} is not in the manifest"]


def test_crlf_line_endings_match(copy):
    root, path, roots, _ = copy
    grader = root / "int4lab" / "grading" / "grader.py"
    grader.write_bytes(grader.read_bytes().replace(b"\n", b"\r\n"))
    assert manifest.verify(path, **roots) == []


def test_a_missing_or_broken_manifest_is_a_sentence_not_a_crash(tmp_path):
    [problem] = manifest.verify(tmp_path / "none.json")
    assert "is missing" in problem and manifest.WRITE_COMMAND in problem
    (tmp_path / "bad.json").write_text('{"files": [')
    [problem] = manifest.verify(tmp_path / "bad.json")
    assert "unreadable" in problem


def test_the_command_line(tmp_path, capsys):
    path = tmp_path / "m.json"
    assert manifest.main(["--write", "--manifest", str(path)]) == 0
    assert manifest.main(["--check", "--manifest", str(path)]) == 0
    data = json.loads(path.read_text())
    data["files"]["int4lab/grading/grader.py"] = "0" * 64
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert manifest.main(["--check", "--manifest", str(path)]) == 1
    assert "int4lab/grading/grader.py changed" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "int4lab.grading.manifest", "--check", "--manifest", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "grader.py changed" in r.stdout, r.stderr[-2000:]

"""`int4lab student-copy OUT`: the course without the library's kernel bodies.

The copy keeps every lesson, the spec, the checks and the tests of the spec, but each slot's
kernel module in kernels/ keeps only its docstring (what it computes, the layout) and a
launcher that raises NotImplementedError. A marker file tells the registry that the library's
kernels are absent, so everything falls back to the PyTorch spec and the lessons still run.
"""
import argparse
import ast
import shutil
import subprocess
from pathlib import Path

from int4lab.exercises import registry
from int4lab.runtime import STUDENT_COPY_MARKER as MARKER
from int4lab.runtime import is_student_copy  # noqa: F401  (the grader and tests ask it here too)

ROOT = Path(__file__).resolve().parents[2]


def _tracked_files(root):
    try:
        out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
        return [root / f for f in out.stdout.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


def stub_kernel(source: str, launcher: str) -> str:
    """Keep the module docstring and the launcher's signature; drop every body."""
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == launcher), None)
    signature = ast.unparse(fn.args) if fn else "*args, **kwargs"
    return (f'"""{doc}\n\n(Student copy: the body is yours to write; see the lesson.)\n"""\n'
            "import torch\nimport triton\nimport triton.language as tl\n\n\n"
            f"def {launcher}({signature}):\n"
            f"    raise NotImplementedError('{launcher}: write this kernel in its lesson')\n")


def make_copy(out, root=ROOT):
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"int4lab student-copy: {out} exists and is not empty")
    registry._load_slots()
    kernels = {s.triton.split(":")[0].rsplit(".", 1)[1]: s.triton.split(":")[1]
               for s in registry.SLOTS.values() if s.triton}
    for src in _tracked_files(root):
        rel = src.relative_to(root)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "kernels" and rel.stem in kernels:
            dst.write_text(stub_kernel(src.read_text(), kernels[rel.stem]))
        elif rel.parts[0] == "tests" and rel.name.startswith("test_kernel"):
            continue                        # those test the library's kernel bodies
        else:
            shutil.copy2(src, dst)
    (out / "int4lab" / MARKER).write_text("The library's kernel bodies were removed from this copy.\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="int4lab student-copy", description=__doc__.split("\n")[0])
    p.add_argument("out", help="an empty or new folder")
    a = p.parse_args(argv)
    out = make_copy(a.out)
    print(f"wrote a student copy of the course to {out} (library kernels removed; lessons run on the spec)")
    return 0

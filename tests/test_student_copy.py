"""`int4lab student-copy`: kernel bodies removed, the registry falls back to the spec there."""
import subprocess
import sys

from int4lab.grading import student_copy as student


def test_student_copy_strips_kernels_and_runs_on_the_spec(tmp_path):
    out = student.make_copy(tmp_path / "course")
    kernel = (out / "kernels" / "pack_int4.py").read_text()
    assert "NotImplementedError" in kernel and "tl.store" not in kernel
    assert "What it computes" in kernel                # the docstring (the contract) stays
    assert (out / "kernels" / "known_answer.py").read_text().count("tl.store") == 1
    assert (out / "lessons" / "01_int4_numbers_and_packing.ipynb").exists()
    assert not list((out / "tests").glob("test_kernel_*.py"))
    assert (out / "int4lab" / student.MARKER).exists()
    code = ("import torch, int4lab\n"
            "q = torch.randint(-8, 8, (3, 34), dtype=torch.int8)\n"
            "with int4lab.use('triton'):\n"
            "    p = int4lab.pack_int4(q)\n"
            "print(int4lab.last_ran('pack_int4'), torch.equal(int4lab.unpack_int4(p), q))")
    r = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True,
                       env={"PYTHONPATH": str(out), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.stdout.split() == ["spec", "True"], r.stderr[-2000:]


def test_stub_keeps_the_signature():
    src = "'''Doc.'''\nimport torch\n\ndef f(x, block_size=32, *, seed=None):\n    return x\n"
    stub = student.stub_kernel(src, "f")
    assert "def f(x, block_size=32, *, seed=None):" in stub and "Doc." in stub

"""Set-up: pyproject and environment.yml agree, the README's commands are what CI runs,
the core imports without notebook packages, and `int4lab doctor` works and diagnoses."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(req):
    return re.split(r"[<>=!~;\s\[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    yml = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    listed = {_name(m) for m in re.findall(r"^\s*-\s+([A-Za-z][\w.-]*[^\n:]*)$", yml, re.M)}
    listed = {"torch" if n == "pytorch" else n for n in listed} - {"python", "pip"}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- test-command -->\s*```bash\n(.*?)\n```", readme, re.S)
    assert m and "pytest" in m.group(1) and '-e ".[test]"' in m.group(1)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "torch==2.13.0" in ci
    assert re.search(r"<!-- main-command -->\s*```bash\n.*int4lab train", readme, re.S)


def test_readme_installs_torch_cpu_wheels_and_keeps_an_installed_torch():
    """The README's commands install torch only where it is missing (a GPU machine keeps its CUDA
    build), and then from PyTorch's CPU index as well as PyPI, so that a CPU machine does not pull
    PyPI's multi-GB CUDA wheel; a machine that cannot reach that index does not wait on it."""
    readme = (ROOT / "README.md").read_text()
    for block in ("main-command", "test-command"):
        cmd = re.search(rf"<!-- {block} -->\s*```bash\n(.*?)\n```", readme, re.S).group(1)
        guard = re.match(r'\(python3 -c "import torch" 2>/dev/null \|\| (python3 -m pip install torch==[^)]*)\) && ',
                         cmd)
        assert guard, f"{block}: torch is not installed only when missing: {cmd}"
        install = guard.group(1)
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install, install
        assert "--index-url" not in install.replace("--extra-index-url", ""), "PyPI must stay an index"
        assert re.search(r"--retries \d", install), install


def test_core_imports_without_notebook_packages():
    code = ("import sys\n"
            "for m in ('ipywidgets', 'matplotlib', 'IPython', 'jupyterlab', 'sklearn'): sys.modules[m] = None\n"
            "import int4lab, int4lab.layers, int4lab.training.loop\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def test_kernels_install_under_our_namespace():
    import int4lab.kernels.pack_int4 as k
    assert Path(k.__file__).parent.name == "kernels"
    r = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True, text=True,
                       cwd="/")
    assert r.returncode != 0 or "int4lab" not in r.stdout  # no bare `kernels` package of ours


def _doctor(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "int4lab", "doctor"], capture_output=True,
                          text=True, env=env)


def test_doctor_passes_here():
    r = _doctor({})
    assert r.returncode == 0, r.stdout + r.stderr
    for word in ("torch", "triton", "numpy", "device", "interpreter", "known-answer kernel"):
        assert word in r.stdout


def test_doctor_explains_a_flag_that_is_off():
    import torch
    if torch.cuda.is_available():
        return
    r = _doctor({"TRITON_INTERPRET": "0"})
    assert r.returncode == 1 and "TRITON_INTERPRET" in r.stdout


def test_support_matrix_versions():
    from int4lab import support
    assert support.version_tuple("3.6.0+git12ab") == (3, 6, 0)
    assert support.triton_status("3.6.0")[0] and support.triton_status("3.9.1")[0]
    assert not support.triton_status("3.5.1")[0]
    assert "newer" in support.triton_status("3.10.0")[1]
    assert support.arch_status((9, 0))[0] and not support.arch_status((7, 5))[0]
    assert set(support.ARCH_NAMES) == {"sm_80", "sm_86", "sm_89", "sm_90"}


def test_pyproject_declares_the_oldest_supported_triton():
    import tomllib

    from int4lab import support
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    triton = [d for d in deps if d.startswith("triton")]
    assert triton and f">={support.TRITON_MIN}" in triton[0], triton


INDEX_LOOP = r"""
import int4lab, torch
from int4lab.interpreter import compat as interpreter_compat
from int4lab.kernels.int4_matmul import int4_matmul
from int4lab.spec.quantizers import int4_matmul_spec
a = torch.randint(0, 256, (5, 40), dtype=torch.uint8)
s = torch.tensor(1.0)
assert interpreter_compat.applied
assert torch.equal(int4_matmul(a, s, a, s, out_dtype=torch.int32),
                   int4_matmul_spec(a, s, a, s, out_dtype=torch.int32))
print("ok")
"""


def test_interpreter_runs_runtime_bounded_loops_on_every_numpy():
    """A runtime-bounded loop (int4_matmul's K loop) under the interpreter: the compat patch
    makes Triton 3.6 work with NumPy 2.4 (Triton issue 9171); harmless elsewhere."""
    import os
    import subprocess
    import sys

    import torch
    if torch.cuda.is_available():
        pytest.skip("compiled on a GPU: no interpreter")
    r = subprocess.run([sys.executable, "-c", INDEX_LOOP], capture_output=True, text=True,
                       env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr[-2000:]


SOURCE_CHECKOUT = r"""
import sys
if sys.argv[2] == "fresh":
    # no installed mapping of int4lab.kernels: drop the editable-install finder, as in a fresh clone
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
# else: another checkout is installed editable (a student copy run beside the course)
sys.path.insert(0, sys.argv[1])
import int4lab
import int4lab.kernels.pack_int4 as k
assert k.__file__.startswith(sys.argv[1]), k.__file__
assert int4lab.doctor()
"""


@pytest.mark.parametrize("machine", ["fresh", "other_checkout_installed"])
def test_source_checkout_without_installing(tmp_path, machine):
    """PYTHONPATH=<checkout> without `pip install`: int4lab.kernels maps to the checkout's kernels/,
    also where another checkout's editable install would answer for int4lab.kernels."""
    import shutil
    for name in ("int4lab", "kernels"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    r = subprocess.run([sys.executable, "-c", SOURCE_CHECKOUT, str(tmp_path), machine], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

"""Set-up: pyproject and environment.yml agree, the README's commands are what CI runs,
the core imports without notebook packages, and `int4lab doctor` works and diagnoses."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_core_imports_without_notebook_packages():
    code = ("import sys\n"
            "for m in ('ipywidgets', 'matplotlib', 'IPython', 'jupyterlab', 'sklearn'): sys.modules[m] = None\n"
            "import int4lab, int4lab.layers, int4lab.train\n"
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


def test_doctor_knows_the_bad_triton_numpy_pair():
    from int4lab.doctor import _known_bad_pair
    assert _known_bad_pair("3.6.0", "2.4.1") and not _known_bad_pair("3.9.0", "2.4.6")

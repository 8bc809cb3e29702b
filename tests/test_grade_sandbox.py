"""scripts/grade_sandboxed.sh: one bubblewrap sandbox per learner (docs/teaching.md, "Threat
model"). Skipped where bwrap is missing (apt-get install bubblewrap)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from nbrun import library_source

ROOT = Path(__file__).resolve().parents[1]

# writes forged grades for alice into the folder where the sandbox script collects them
MALLORY = '''
import json, pathlib
for p in pathlib.Path("/").glob("**/grades-out/alice"):
    (p / "grades.json").write_text(json.dumps({"learners": {"alice": "forged"}}))
def pack_int4(q):
    raise NotImplementedError
'''


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")
def test_one_sandbox_per_learner(tmp_path):
    cls = tmp_path / "class"
    for learner, src in {"alice": library_source("pack_int4"), "mallory": MALLORY}.items():
        (cls / learner).mkdir(parents=True)
        (cls / learner / "pack_int4.py").write_text(src)
    out = tmp_path / "grades-out"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "grade_sandboxed.sh"), str(cls), str(out),
                        "--slots", "pack_int4", "--timeout", "10"],
                       capture_output=True, text=True, timeout=600)
    if "Operation not permitted" in r.stderr and "bwrap" in r.stderr:
        pytest.skip("bwrap cannot create namespaces on this machine: " + r.stderr[-300:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    grades = json.loads((out / "grades.json").read_text())["learners"]
    assert grades["alice"]["slots"]["pack_int4"]["score"] == 1.0
    assert grades["mallory"]["slots"]["pack_int4"]["score"] == 0.0

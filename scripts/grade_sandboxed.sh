#!/usr/bin/env bash
# Grade a class with one sandbox per learner (bubblewrap): the equivalent of one container per
# submission (docker/grader.Dockerfile) for a Linux machine without Docker. See docs/teaching.md,
# "Threat model".
#
#   bash scripts/grade_sandboxed.sh CLASS_DIR OUT_DIR [int4lab grade options, e.g. --hidden]
#
# Each learner's folder or notebook is graded by `int4lab grade` inside its own sandbox: the whole
# file system read-only (the course and the grader included), the other learners' submissions and
# grades hidden, a fresh /tmp, no network, its own PID namespace (every process it starts dies
# with it), and only OUT_DIR/<learner>/ writable. The grades of all learners are then merged, outside any sandbox,
# into OUT_DIR/grades.json. Needs `bwrap` (Debian/Ubuntu: apt-get install bubblewrap).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CLASS_DIR OUT_DIR [int4lab grade options]" >&2; exit 2; }
class=$(realpath "$1"); out=$(realpath -m "$2"); shift 2
command -v bwrap >/dev/null || { echo "grade_sandboxed: bwrap not found (apt-get install bubblewrap)" >&2; exit 2; }
[ -d "$class" ] || { echo "grade_sandboxed: $class is not a folder" >&2; exit 2; }
mkdir -p "$out"
py=$(command -v python3)
# where int4lab is installed (an editable install points into its checkout, which may lie under
# /tmp): put back read-only inside each sandbox, after /tmp is replaced by an empty one
lib=$("$py" -c "import int4lab, os; print(os.path.dirname(os.path.dirname(os.path.realpath(int4lab.__file__))))")
failed=0
shopt -s nullglob
learners=("$class"/*)
[ ${#learners[@]} -gt 0 ] || { echo "grade_sandboxed: $class is empty: no learner to grade" >&2; exit 2; }
for sub in "${learners[@]}"; do
  name=$(basename "$sub"); name=${name%.ipynb}
  case "$name" in .*|__pycache__) echo "skipped $sub (hidden or cache)"; continue;; esac
  mkdir -p "$out/$name"
  echo "== $name"
  # the class and the grades folders are replaced by empty ones, then only this learner's
  # submission (read-only) and grades folder are put back
  bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs "$class" --tmpfs "$out" \
        --ro-bind "$lib" "$lib" --ro-bind "$sub" "$sub" --bind "$out/$name" "$out/$name" \
        --unshare-all --die-with-parent --new-session \
        --setenv INT4LAB_HOME /tmp/int4lab --setenv HOME /tmp --chdir /tmp \
        "$py" -m int4lab.cli grade "$sub" --json "$out/$name/grades.json" "$@" \
    || { echo "grade_sandboxed: grading $name failed (exit $?): see above"; failed=1; }
done
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
merged = {"learners": {}, "class": {"per_sandbox": {}}}
for f in sorted(out.glob("*/grades.json")):
    try:
        data = json.loads(f.read_text())
        merged["learners"].update(data["learners"])
        merged["class"]["per_sandbox"][f.parent.name] = data["class"]
    except (ValueError, KeyError) as e:
        merged["learners"][f.parent.name] = {"error": f"unreadable grades ({e})"}
(out / "grades.json").write_text(json.dumps(merged, indent=2))
print(f"merged {len(merged['learners'])} learner(s) into {out / 'grades.json'}")
PY
exit $failed

"""Build lessons/*.ipynb from their sources in lessons/src/*.py (percent format).

Why sources: a notebook's JSON is hard to review and merge; the .py source is plain text.
The committed .ipynb files are what learners open; tests/test_lessons.py checks that they are
up to date with their sources and carry no outputs.

Source format:
    # %% [markdown]            a markdown cell: the following lines, each starting with "# "
    # %%                       a code cell
    # %% exercise=pack_int4    an exercise cell (tagged; the tests put the library's kernel in it)
    # %% solution              a collapsed cell (answers to "check your understanding")

Usage: python lessons/build.py            (rebuild all)
       python lessons/build.py --check    (exit 1 if any notebook is stale)
"""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
HEADER = re.compile(r"^# %%(?: \[(markdown)\])?(?: exercise=(\w+))?(?: (solution))?\s*$")


def cells_from_source(text):
    cells, current = [], None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            current = {"kind": "markdown" if m.group(1) else "code", "slot": m.group(2),
                       "solution": bool(m.group(3)), "lines": []}
            cells.append(current)
        elif current is not None:
            current["lines"].append(line)
    out = []
    for c in cells:
        lines = c["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if c["kind"] == "markdown":
            lines = [l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines]
        source = "\n".join(lines)
        src = [l + "\n" for l in source.split("\n")]
        src[-1] = src[-1].rstrip("\n")
        cell = {"cell_type": c["kind"], "metadata": {}, "source": src}
        if c["kind"] == "code":
            cell.update(execution_count=None, outputs=[])
        if c["slot"]:
            cell["metadata"] = {"tags": ["exercise"], "int4lab": {"slot": c["slot"]}}
        if c["solution"]:
            cell["metadata"] = {"tags": ["solution"], "jupyter": {"source_hidden": True}}
        out.append(cell)
    return out


def build(src: Path) -> dict:
    return {"cells": cells_from_source(src.read_text()),
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def target(src: Path) -> Path:
    return HERE / (src.stem + ".ipynb")


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    stale = []
    for src in sorted((HERE / "src").glob("[0-9][0-9]_*.py")):
        text = render(build(src))
        dst = target(src)
        if "--check" in argv:
            if not dst.exists() or dst.read_text() != text:
                stale.append(dst.name)
        else:
            dst.write_text(text)
            print(f"built {dst.relative_to(HERE.parent)}")
    if stale:
        print("stale notebooks (run python lessons/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

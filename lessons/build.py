"""Build lessons/*.ipynb from their sources in lessons/src/*.py (jupytext's percent format).

Why sources: a notebook's JSON is hard to review and merge; the .py source is plain text, and
valid Python, so linters and `python -m py_compile` run on it. The committed .ipynb files are
what learners open; tests/test_lessons.py checks that they are up to date with their sources,
carry no outputs, and have unique, deterministic cell ids.

Source format (jupytext "py:percent", https://jupytext.readthedocs.io/en/latest/formats-scripts.html):
    # %% [markdown]                a markdown cell: the following lines, each starting with "# "
    # %%                           a code cell
    # %% tags=["exercise"] int4lab={"slot": "pack_int4"}
                                   an exercise cell (tagged). Its body is GENERATED: the build
                                   writes the stub that int4lab.exercises.stubs cuts from the
                                   slot's kernel module (kernels/pack_int4.py, whose solution sits
                                   between "### BEGIN SOLUTION" / "### END SOLUTION" fences)
                                   into the source and the notebook; edit the kernel module, not
                                   the cell. It starts with "# %%exercise pack_int4"
    # %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
                                   a collapsed cell (answers to "check your understanding");
                                   "# %% tags=[...] ..." makes a collapsed code cell
IPython magics are commented out in the source ("# %matplotlib inline", "# %%exercise SLOT")
and jupytext uncomments them in the notebook, so a learner sees "%matplotlib inline".
Easiest way to write one: jupytext --to py:percent NOTEBOOK.ipynb, or copy an existing cell.

The build sets what the source does not hold: cell ids "<lesson>-<index>" (deterministic, so a
rebuild changes nothing and JupyterLab does not invent random ids on a learner's first save),
no outputs, nbformat 4.5 and the kernelspec below. Every notebook is validated with nbformat.

jupytext is a development dependency (the `test` extra), not a learner's.

Usage: python lessons/build.py            (regenerate the exercise cells, rebuild all)
       python lessons/build.py --check    (exit 1 if any source or notebook is stale)
       python lessons/build.py 02 04      (only lessons 02_* and 04_*)
"""
import re
import sys
import warnings
from pathlib import Path

import nbformat
from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

try:
    import jupytext
except ImportError:  # pragma: no cover - a learner's environment
    sys.exit("lessons/build.py needs jupytext: pip install -e '.[test]'")

HERE = Path(__file__).parent
FORMAT = "py:percent"
METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}
# cell metadata jupytext keeps only to round-trip the text layout; never in a built notebook
JUPYTEXT_CELL_KEYS = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "cell_marker",
                      "skipline", "noskipline")
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")   # nbformat 4.5's rule for cell ids
CELL_MARKER = re.compile(r"^# %%(?: |$)")        # "# %%exercise" is a commented magic, not a cell
EXERCISE_MARKER = re.compile(r'^# %% tags=\["exercise"\] int4lab=\{"slot": "(\w+)"\}\s*$')


def with_generated_exercises(text: str) -> str:
    """The source text with every exercise cell's body replaced by its generated stub."""
    from int4lab.exercises.stubs import exercise_source
    lines = text.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        out.append(lines[i])
        m = EXERCISE_MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        while i < len(lines) and not CELL_MARKER.match(lines[i]):
            i += 1                                   # drop the old body
        body = f"# %%exercise {m.group(1)}\n" + exercise_source(m.group(1)).rstrip("\n") + "\n"
        out.append(body + ("\n\n" if i < len(lines) else ""))
    return "".join(out)


def cell_id(stem: str, index: int) -> str:
    """A deterministic id, unique in its notebook: "03_int4_gemm-7"."""
    cid = f"{stem}-{index}"
    assert CELL_ID.match(cid), f"{cid!r} is not a valid nbformat cell id"
    return cid


def build(src: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(str(src), fmt=FORMAT)
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = nbformat.from_dict(METADATA)
    for i, cell in enumerate(nb.cells):
        cell.id = cell_id(src.stem, i)
        for key in JUPYTEXT_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    validate(nb, src.name)
    return nb


def validate(nb, name="notebook"):
    """nbformat's schema, with a missing or duplicate cell id an error rather than a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingIDFieldWarning)
        warnings.simplefilter("error", DuplicateCellId)
        nbformat.validate(nb)
    ids = [c.get("id") for c in nb.cells]
    assert len(set(ids)) == len(ids) and all(CELL_ID.match(i or "") for i in ids), \
        f"{name}: cell ids must be unique and valid: {ids}"


def target(src: Path) -> Path:
    return HERE / (src.stem + ".ipynb")


def render(nb) -> str:
    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def sources():
    return sorted((HERE / "src").glob("[0-9][0-9]_*.py"))


def main(argv):
    stale = []
    only = [a for a in argv if not a.startswith("-")]     # e.g. "02": only lessons named 02_*
    for src in sources():
        if only and not any(src.stem.startswith(o) for o in only):
            continue
        generated = with_generated_exercises(src.read_text(encoding="utf-8"))
        if generated != src.read_text(encoding="utf-8"):
            if "--check" in argv:
                stale.append(f"{src.name} (its exercise cells differ from the kernel modules' stubs)")
            else:
                src.write_text(generated, encoding="utf-8")
                print(f"regenerated the exercise cells of {src.relative_to(HERE.parent)}")
        text = render(build(src))
        dst = target(src)
        if "--check" in argv:
            if not dst.exists() or dst.read_text(encoding="utf-8") != text:
                stale.append(dst.name)
        else:
            dst.write_text(text, encoding="utf-8")
            print(f"built {dst.relative_to(HERE.parent)}")
    if stale:
        print("stale (run python lessons/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

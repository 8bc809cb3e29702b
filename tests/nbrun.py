"""Execute a lesson notebook headless, as shipped or with the library's kernels as solutions."""
import copy
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"


def lesson_paths():
    return sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))


def library_source(slot):
    """The library's solution in the exercise cell's form (int4lab.reveal shows the same)."""
    from int4lab.exercises import stubs
    return stubs.solution_source(slot)


def exercise_cells(nb):
    return [c for c in nb.cells if "exercise" in c.get("metadata", {}).get("tags", [])]


def with_solutions(nb, sources=None):
    """A copy of nb whose exercise cells hold the library's kernels (or the given sources)."""
    nb = copy.deepcopy(nb)
    for cell in exercise_cells(nb):
        slot = cell.metadata["int4lab"]["slot"]
        body = (sources or {}).get(slot) or library_source(slot)
        cell.source = f"%%exercise {slot}\n{body}"
    return nb


def execute(nb, home, timeout=150, extra_env=None):
    """Run every cell top to bottom in a fresh kernel; returns (executed nb, seconds)."""
    # INT4LAB_WIDGETS=0: nbclient can hang at random on Output-widget cells (see widgets.py);
    # tests/browser drives the real widgets in JupyterLab.
    env = {"INT4LAB_HOME": str(home), "INT4LAB_FAST": "1", "INT4LAB_WIDGETS": "0",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.update(extra_env or {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        log = Path(home) / "cells.log"

        def on_cell_start(cell, cell_index):
            with open(log, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} start {cell_index}: {cell.source[:60]!r}\n")

        def on_cell_executed(cell, cell_index, execute_reply):
            with open(log, "a") as f:
                f.write(f"{time.strftime('%H:%M:%S')} done {cell_index}\n")

        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(LESSONS)}},
                                on_cell_start=on_cell_start, on_cell_executed=on_cell_executed)
        start = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def outputs_text(nb):
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
            elif out.get("output_type") == "error":
                parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def read(path):
    return nbformat.read(str(path), as_version=4)

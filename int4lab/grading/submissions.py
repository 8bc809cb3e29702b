"""Finding learners in a class folder: who submitted which slots, and what could not be read.

    discover(PATH) -> Found            (a list of Submission, plus .skipped for PATH itself)

PATH may be
  - one learner's notebook (.ipynb): one learner, named after the file;
  - one learner's workspace (a folder holding SLOT.py files, as %%exercise writes them), or
    one learner's copy of the lessons (notebooks all named like the lessons, NN_*.ipynb, and no
    subfolder holding notebooks or slot files): one learner, named after the folder (after its parent when the folder is
    called `workspace`);
  - a class folder: every notebook in it and every folder in it is a learner. A learner's
    folder may hold its SLOT.py files, a `workspace/` folder of them, and notebooks anywhere
    below it.

Reading rules: a notebook's code cells whose first line is `%%exercise SLOT` give SLOT's source
(the rest of the cell); a later cell for the same slot wins, and so does a later notebook (by
path). A workspace's SLOT.py files are read for the slots of the course; they win over a
notebook's cell for the same slot (they are what the learner last ran), notebooks fill in the
slots the workspace lacks.

Nothing a learner submitted stops the class: a truncated or malformed notebook, a file that is
not UTF-8 or cannot be read, an %%exercise line without a slot name or with an unknown one,
each becomes a line of that learner's `problems` (the learner still appears, with the slots
that could be read). Every file or folder not read is a line of `skipped`, with the reason.
SubmissionError (the command line exits 2) is kept for the instructor's mistakes: a PATH that
does not exist, is not a notebook or a folder, holds nothing to grade, or is ambiguous.
"""
import dataclasses
import difflib
import json
import os
import re
from pathlib import Path

from int4lab.exercises import registry

MAX_BYTES = 50 * 2**20        # a file larger than this is not read (a notebook full of images)
LESSON_NAME = re.compile(r"^\d\d_[\w-]+\.ipynb$")     # 01_int4_numbers_and_packing.ipynb


class SubmissionError(Exception):
    """PATH cannot be graded at all (the message says why and what to do)."""


@dataclasses.dataclass
class Submission:
    learner: str                                                  # unique within one discover()
    sources: dict = dataclasses.field(default_factory=dict)       # slot -> source text
    problems: list = dataclasses.field(default_factory=list)      # sentences for the instructor
    skipped: list = dataclasses.field(default_factory=list)       # "what: why not read"
    origins: dict = dataclasses.field(default_factory=dict)       # slot -> "lessons/01.ipynb, cell 12"
    path: str = ""                                                # the learner's notebook or folder


class Found(list):
    """discover()'s answer: the Submissions, sorted by learner, and `skipped`, the entries of
    the class folder itself that are nobody's submission ("README.md: not a notebook or a
    folder"). It is a list, so `for s in discover(path)` works."""

    def __init__(self, submissions=(), skipped=()):
        super().__init__(submissions)
        self.skipped = list(skipped)


def slots() -> set:
    registry._load_slots()
    return set(registry.SLOTS)


def _unknown_slot(name) -> str:
    close = difflib.get_close_matches(name, sorted(slots()), n=1, cutoff=0.75)
    return f"unknown slot {name!r}" + (f" (did you mean {close[0]}?)" if close else "")


def _read_text(path: Path, label: str, problems: list):
    """The file's text, or None with a problem line (missing, unreadable, too large, not UTF-8)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            problems.append(f"{label} is {size / 2**20:.0f} MB, over the {MAX_BYTES // 2**20} MB limit: not read")
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"missing file {label} (deleted while grading, or a broken link)")
        return None
    except OSError as e:
        problems.append(f"could not read {label} ({type(e).__name__}: {e.strerror or e})")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(f"undecodable file {label} (not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start})")
        return None


# ---------------------------------------------------------------------------------------------
# Notebooks

def _salvage_cells(text: str) -> list:
    """The complete cells at the start of a truncated notebook's "cells" list."""
    m = re.search(r'"cells"\s*:\s*\[', text)
    if not m:
        return []
    decoder, pos, cells = json.JSONDecoder(), m.end(), []
    sep = re.compile(r"\s*,?\s*")
    while True:
        pos = sep.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            return cells
        try:
            cell, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return cells
        cells.append(cell)


def read_notebook(path, label=None):
    """({slot: source}, {slot: origin}, [problem]) from one notebook; never raises."""
    path = Path(path)
    label = label or path.name
    sources, origins, problems = {}, {}, []
    text = _read_text(path, label, problems)
    if text is None:
        return sources, origins, problems
    try:
        nb = json.loads(text)
    except ValueError as e:
        cells = _salvage_cells(text)
        where = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        problems.append(f"{label} is not valid JSON (truncated?): {where}"
                        + (f"; the {len(cells)} complete cells before that point were read" if cells else ""))
    else:
        cells = nb.get("cells") if isinstance(nb, dict) else None
        if not isinstance(cells, list):
            problems.append(f"{label} is not a notebook (no list of cells)")
            return sources, origins, problems
    tagged = {}                           # slot -> cell number of its exercise cell by metadata
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            problems.append(f"{label}: cell {number} is not a notebook cell (not an object)")
            continue
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata")
        meta_slot = meta.get("int4lab", {}) if isinstance(meta, dict) else {}
        meta_slot = meta_slot.get("slot") if isinstance(meta_slot, dict) else None
        if isinstance(meta_slot, str):
            tagged.setdefault(meta_slot, number)
        src = cell.get("source", "")
        if isinstance(src, list) and all(isinstance(s, str) for s in src):
            src = "".join(src)
        elif not isinstance(src, str):
            problems.append(f"{label}: cell {number}'s source is not text")
            continue
        # IPython drops leading blank lines before it looks for a cell magic
        lines = src.split("\n")
        while lines and not lines[0].strip() and len(lines) > 1:
            lines.pop(0)
        words = lines[0].split()
        if not words or not words[0].startswith("%%exercise"):
            continue
        if words[0] != "%%exercise":
            problems.append(f"{label}: cell {number} starts with {words[0]!r}, not '%%exercise SLOT' "
                            "(a missing space?): not read")
            continue
        if len(words) == 1:
            problems.append(f"{label}: an %%exercise line with no slot name in cell {number}")
            continue
        if words[1] not in slots():
            problems.append(f"{label}: {_unknown_slot(words[1])} in cell {number}")
            continue
        sources[words[1]] = "\n".join(lines[1:])
        origins[words[1]] = f"{label}, cell {number}"
    for slot, number in tagged.items():
        if slot in slots() and slot not in sources:
            problems.append(f"{label}: cell {number} is the exercise cell for {slot} but does not start "
                            f"with '%%exercise {slot}', so it was not read")
    return sources, origins, problems


def sources_from_notebook(path) -> dict:
    """{slot: source} of a notebook's %%exercise cells (what could be read; never raises)."""
    return read_notebook(path)[0]


# ---------------------------------------------------------------------------------------------
# Folders

def _skip_reason(entry: Path):
    if entry.name.startswith("."):
        return f"hidden {'folder' if entry.is_dir() else 'file'}, skipped"
    if entry.name == "__pycache__":
        return "Python's bytecode cache, skipped"
    return None


def _slot_files(folder: Path) -> list:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".py" and p.stem in slots() and not p.is_dir())
    except OSError:
        return []


def _learner_like(folder: Path) -> bool:
    """The folder holds slot files (itself or in workspace/) or a notebook somewhere below."""
    if _slot_files(folder) or _slot_files(folder / "workspace"):
        return True
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _skip_reason(Path(dirpath) / d) is None]
        if any(f.endswith(".ipynb") and not f.startswith(".") for f in filenames):
            return True
    return False


def _read_folder(root: Path, learner: str) -> tuple:
    """(Submission, how many notebooks and .py files it held) for one learner's folder."""
    sub = Submission(learner, path=str(root))
    ws = root / "workspace" if (root / "workspace").is_dir() else root
    ws_label = "workspace/" if ws != root else ""
    notebooks, seen = [], 0

    def rel(p):
        return p.relative_to(root).as_posix()

    def on_error(e):
        where = Path(e.filename).relative_to(root).as_posix() if e.filename else "."
        sub.problems.append(f"could not read folder {where}/ ({type(e).__name__}: {e.strerror or e})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        folder = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            entry = folder / name
            why = _skip_reason(entry)
            if why is None and entry.is_symlink():
                why = "a link to a folder, not followed"
            if why:
                sub.skipped.append(f"{rel(entry)}/: {why}")
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            entry = folder / name
            why = _skip_reason(entry)
            if why:
                sub.skipped.append(f"{rel(entry)}: {why}")
            elif name.endswith(".ipynb"):
                notebooks.append(entry)
                seen += 1
            elif name.endswith(".py") and folder == ws:
                seen += 1
                stem = name[:-3]
                if stem in slots():
                    text = _read_text(entry, rel(entry), sub.problems)
                    if text is not None:
                        sub.sources[stem], sub.origins[stem] = text, rel(entry)
                elif difflib.get_close_matches(stem, sorted(slots()), n=1, cutoff=0.75):
                    sub.problems.append(f"{rel(entry)}: {_unknown_slot(stem)}: not graded")
                else:
                    sub.skipped.append(f"{rel(entry)}: not a slot of the course")
            elif name.endswith(".py"):
                seen += 1
                sub.skipped.append(f"{rel(entry)}: not read: only the SLOT.py files directly in "
                                   f"{ws_label or 'the learner folder'} are graded" if name[:-3] in slots()
                                   else f"{rel(entry)}: not a notebook or a SLOT.py file")
            else:
                sub.skipped.append(f"{rel(entry)}: not a notebook or a SLOT.py file")
    from_workspace = set(sub.sources)
    for nb in sorted(notebooks, key=rel):
        sources, origins, problems = read_notebook(nb, rel(nb))
        sub.problems += problems
        for slot, src in sources.items():
            if slot in from_workspace:
                if src.strip() != sub.sources[slot].strip():
                    sub.skipped.append(f"{origins[slot]}: not used for {slot}: {sub.origins[slot]} "
                                       "(what %%exercise last saved) takes precedence")
                continue
            if slot in sub.sources:
                sub.skipped.append(f"{sub.origins[slot]}: not used for {slot}: {origins[slot]} comes later")
            sub.sources[slot], sub.origins[slot] = src, origins[slot]
    if not sub.sources and not sub.problems:
        sub.problems.append("nothing to grade: no SLOT.py file of the course and no notebook with an "
                            "%%exercise cell")
    return sub, seen


def _read_notebook_submission(path: Path, learner: str, label=None) -> Submission:
    sources, origins, problems = read_notebook(path, label or path.name)
    if not sources and not problems:
        problems.append(f"nothing to grade: {label or path.name} has no %%exercise cell")
    return Submission(learner, sources, problems, [], origins, str(path))


def discover(path) -> Found:
    """The learners under PATH (see the module docstring); raises SubmissionError only when PATH
    as a whole cannot be graded."""
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".ipynb":
            raise SubmissionError(f"{path} is not a notebook (.ipynb) or a folder: pass a learner's notebook, "
                                  "a learner's workspace folder, or a folder of submissions")
        return Found([_read_notebook_submission(path, path.stem)])
    try:
        entries = sorted(path.iterdir())
    except OSError as e:
        raise SubmissionError(f"cannot list {path} ({type(e).__name__}: {e.strerror or e})") from None
    top_slots = _slot_files(path)
    folders = {e.name for e in entries if e.is_dir() and _skip_reason(e) is None}
    notebooks = [e for e in entries if e.suffix == ".ipynb" and _skip_reason(e) is None and not e.is_dir()]
    lessons = (bool(notebooks) and all(LESSON_NAME.match(e.name) for e in notebooks)
               and not any(_learner_like(path / f) for f in folders))
    if top_slots or lessons:               # a workspace, or one learner's copy of the lessons
        others = [e.name for e in entries if e.is_dir() and _skip_reason(e) is None
                  and (_slot_files(e) or _slot_files(e / "workspace"))]
        if others:
            raise SubmissionError(
                f"{path} is ambiguous: it holds {', '.join(p.name for p in top_slots)} like one learner's "
                f"workspace, and folders that hold slot files like learners' folders "
                f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}). Move the top-level slot "
                "files into a learner's folder to grade the class, or pass one learner's folder.")
        resolved = path.resolve()
        name = resolved.parent.name if resolved.name == "workspace" and resolved.parent.name else resolved.name
        sub, _ = _read_folder(path, name or "learner")
        return Found([sub])
    found, skipped, seen = [], [], 0
    for entry in entries:
        why = _skip_reason(entry)
        if why:
            skipped.append(f"{entry.name}{'/' if entry.is_dir() else ''}: {why}")
        elif entry.is_dir():
            sub, n = _read_folder(entry, entry.name)
            found.append(sub)
            seen += n
        elif entry.suffix == ".ipynb":
            learner = entry.stem
            if learner in folders:         # alice/ and alice.ipynb: two submissions, two names
                learner = entry.name
                note = (f"two submissions are named {entry.stem}: the folder {entry.stem}/ and the notebook "
                        f"{entry.name}; they are graded as {entry.stem!r} and {entry.name!r}")
                next(s for s in found if s.learner == entry.stem).problems.append(note)
            else:
                note = None
            sub = _read_notebook_submission(entry, learner)
            if note:
                sub.problems.insert(0, note)
            found.append(sub)
            seen += 1
        else:
            skipped.append(f"{entry.name}: not a notebook or a folder")
    if not found or not seen:
        what = (f"{len(found)} folder{'s' if len(found) != 1 else ''} but no notebook or .py file in "
                f"{'any of them' if len(found) != 1 else 'it'}" if found else "no notebook and no folder")
        raise SubmissionError(f"{path} holds nothing to grade: {what}"
                              + (f" (skipped: {'; '.join(skipped[:5])})" if skipped else "")
                              + ". Pass a learner's notebook, a learner's workspace folder, or a folder "
                              "with one notebook or folder per learner.")
    return Found(sorted(found, key=lambda s: s.learner), skipped)


# ---------------------------------------------------------------------------------------------
# What was found, for a person (the grader prints it; `python -m int4lab.grading.submissions PATH`)

def describe(found: Found, verbose: bool = False) -> str:
    """A few lines per learner: slots found (and where from), problems; skipped lines with
    verbose=True (a count otherwise)."""
    lines = []
    for s in found:
        lines.append(f"{s.learner}: {', '.join(sorted(s.sources)) or 'no slots'}")
        if verbose:
            lines += [f"  {slot:18} from {s.origins[slot]}" for slot in sorted(s.origins)]
        lines += [f"  problem: {p}" for p in s.problems]
        if verbose:
            lines += [f"  skipped {k}" for k in s.skipped]
        elif s.skipped:
            lines.append(f"  ({len(s.skipped)} skipped: --verbose lists them)")
    if found.skipped:
        lines.append(f"not learners ({len(found.skipped)}): " + "; ".join(found.skipped))
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m int4lab.grading.submissions",
                                description="list the learners and slots that `int4lab grade PATH` would grade")
    p.add_argument("path")
    p.add_argument("--verbose", "-v", action="store_true", help="say where each slot came from, list skipped files")
    a = p.parse_args(argv)
    try:
        found = discover(a.path)
    except SubmissionError as e:
        print(f"int4lab grade: {e}")
        return 2
    print(describe(found, verbose=a.verbose))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

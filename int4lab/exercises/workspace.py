"""Where a learner's work lives between sessions: the workspace and the progress file.

Design (written down in docs/architecture.md):
  - The home folder is $INT4LAB_HOME, or ~/.int4lab when unset.
  - An exercise cell that starts with `%%exercise NAME` writes its body to
    HOME/workspace/NAME.py and imports that file, so the learner's kernel is a real module on
    disk: Triton can read its source, and it survives a kernel restart.
  - unlock(NAME) checks the function NAME in that file. On a pass, progress.json records the
    file's SHA-256. A later session loads the learner's kernel only if the file is unchanged,
    so an edit after unlocking never runs unchecked.
  - progress.json is written atomically (temporary file + os.replace). A corrupt one is set
    aside as progress.json.corrupt-<time> with a warning; it never stops a lesson.
  - It is validated on read: each slot's entry must be an object whose known fields have their
    types (FIELDS below). Entries that are not are dropped with a warning, and the file as it
    was is kept as progress.json.corrupt-<time>, so one bad entry costs that slot its record,
    never a lesson.
  - update() is a read-modify-write under a lock (progress.json.lock beside the file: flock
    where fcntl exists, else a lock file created with O_EXCL), so notebooks, a DDP run or the
    grader's tests updating different slots at once lose none of each other's updates.
"""
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from int4lab.runtime import replace_atomically

try:
    import fcntl
except ImportError:          # Windows: the O_EXCL lock file below
    fcntl = None


def home() -> Path:
    return Path(os.environ.get("INT4LAB_HOME") or Path.home() / ".int4lab")


def workspace() -> Path:
    return home() / "workspace"


def workspace_file(name: str) -> Path:
    return workspace() / f"{name}.py"


def _progress_path() -> Path:
    return home() / "progress.json"


# ---------------------------------------------------------------------------------------------
# Validation: what learner.py and registry.py read from an entry, and the types they expect

FIELDS = {
    "unlocked": bool,        # unlock() passed on the file whose hash is sha256
    "sha256": str,
    "unlocked_at": str,      # "YYYY-MM-DD HH:MM:SS"
    "revealed": bool,        # reveal() showed the library's kernel
    "bench": dict,           # the last bench(): {"summary", "device", "date"}
}
BENCH_FIELDS = {"summary": str, "device": str, "date": str}
_KIND = {bool: "true or false", str: "a string", dict: "an object"}


def _describe(value) -> str:
    return {bool: "true/false", str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def entry_problem(entry) -> str | None:
    """Why a progress entry cannot be trusted (a sentence), or None when it is well formed.
    Fields not in FIELDS are kept as they are (a newer version may write them)."""
    if not isinstance(entry, dict):
        return f"{_describe(entry)}, not an object"
    for field, kind in FIELDS.items():
        if field in entry and type(entry[field]) is not kind:     # bool is not int, nor 1 a bool
            return f"{field!r} is {_describe(entry[field])}, not {_KIND[kind]}"
    for field, kind in BENCH_FIELDS.items():
        bench = entry.get("bench", {})
        if field in bench and type(bench[field]) is not kind:
            return f"'bench.{field}' is {_describe(bench[field])}, not {_KIND[kind]}"
    return None


def _validate(data) -> tuple[dict, list[str]]:
    """(the data with bad entries dropped, a line per dropped entry); raises ValueError when the
    top level itself is wrong (the whole file is then set aside)."""
    if not isinstance(data, dict) or not isinstance(data.get("slots"), dict):
        raise ValueError("top level must be an object with a 'slots' object")
    bad = []
    for name, entry in list(data["slots"].items()):
        problem = entry_problem(entry)
        if problem:
            bad.append(f"{name}: {problem}")
            del data["slots"][name]
    return data, bad


# ---------------------------------------------------------------------------------------------
# The lock around read-modify-write

LOCK_WAIT_S = 30.0       # after this long without the lock, go on without it (and say so)
STALE_LOCK_S = 10.0      # an O_EXCL lock file older than this was left by a process that died
_thread_lock = threading.RLock()
_depth = [0]             # nested _locked() in one thread takes the file lock once


def _lock_path() -> Path:
    return home() / "progress.json.lock"


def _acquire(path: Path):
    """Take the file lock; returns what _release needs, or None when it could not be had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_S
    pause = 0.002
    if fcntl is not None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return ("flock", fd)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return ("file", path)
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime > STALE_LOCK_S:
                    path.unlink(missing_ok=True)        # its owner died holding it
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _release(held) -> None:
    kind, what = held
    if kind == "flock":
        fcntl.flock(what, fcntl.LOCK_UN)
        os.close(what)
    else:
        Path(what).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked():
    """Hold progress.json.lock (re-entrant within a thread). A lock that cannot be created
    (read-only home) or had (held for LOCK_WAIT_S) never stops a lesson: a warning, and on."""
    with _thread_lock:
        if _depth[0]:
            _depth[0] += 1
            try:
                yield
            finally:
                _depth[0] -= 1
            return
        try:
            held = _acquire(_lock_path())
        except OSError as e:
            held = None
            warnings.warn(f"int4lab: could not create the lock {_lock_path()} ({e}); progress is "
                          "updated without it.", stacklevel=4)
        else:
            if held is None:
                warnings.warn(f"int4lab: {_lock_path()} stayed locked for {LOCK_WAIT_S:g} s; progress "
                              "is updated without it.", stacklevel=4)
        _depth[0] = 1
        try:
            yield
        finally:
            _depth[0] = 0
            if held is not None:
                _release(held)


# ---------------------------------------------------------------------------------------------
# Reading and writing progress.json

def _aside_path(path: Path) -> Path:
    stem = f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = path.with_name(stem), 1
    while aside.exists():
        aside, n = path.with_name(f"{stem}-{n}"), n + 1
    return aside


def _load(path: Path):
    """(data, None) for a valid file (bad entries dropped), or (None, why) for one that is not.
    Raises FileNotFoundError when there is no file."""
    try:
        data, bad = _validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as e:      # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, ("unreadable", str(e))
    return data, (("entries", bad) if bad else None)


def _repair(path: Path, why) -> dict:
    """Under the lock: set the file aside, write back what was valid, warn. Never raises."""
    kind, detail = why
    data = {"slots": {}}
    if kind == "entries":         # keep the valid entries (read again: the file is ours now)
        with contextlib.suppress(ValueError, OSError):
            data, _ = _validate(json.loads(path.read_text()))
    try:
        aside = _aside_path(path)
        os.replace(path, aside)
    except OSError as e:          # a read-only home: repaired in memory only, warned each time
        kept = f"left in place: it could not be moved ({e})"
    else:
        kept = f"moved to {aside.name}"
        if kind == "entries":
            kept = f"kept as {aside.name}"
            try:
                write(data)
            except OSError as e:
                kept += f"; the valid entries could not be written back ({e})"
    if kind == "unreadable":
        warnings.warn(f"int4lab: the progress file {path} was unreadable ({detail}); it was {kept} "
                      f"and progress starts afresh. Your kernels in {workspace()} are untouched: "
                      "unlock them again.", stacklevel=4)
    else:
        warnings.warn(f"int4lab: the progress file {path} had entries of the wrong type "
                      f"({'; '.join(detail)}); {'it was' if len(detail) == 1 else 'they were'} "
                      f"dropped (the file as it was is {kept}) and "
                      f"{'that slot starts' if len(detail) == 1 else 'those slots start'} afresh; "
                      f"the other slots are kept. Your kernels in {workspace()} are untouched: "
                      "unlock them again.", stacklevel=4)
    return data


def read() -> dict:
    """The progress data, {"slots": {name: entry}}; never raises for a bad file or entry.

    A file that is not JSON, or whose top level is wrong, is moved aside whole; entries of the
    wrong type (entry_problem) are dropped, the file as it was kept beside it. Both warn."""
    path = _progress_path()
    try:
        data, why = _load(path)
    except FileNotFoundError:
        return {"slots": {}}
    if why is None:
        return data
    with _locked():              # another process may be repairing it too: look again
        try:
            data, why = _load(path)
        except FileNotFoundError:
            return {"slots": {}}
        return data if why is None else _repair(path, why)


def write(data: dict) -> None:
    replace_atomically(_progress_path(),
                       lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def update(name: str, **fields) -> dict:
    """Merge `fields` into slot `name`'s entry; a locked read-modify-write, so concurrent
    updates (of any slots) from several processes are all kept."""
    for field, kind in FIELDS.items():
        if field in fields and type(fields[field]) is not kind:
            raise TypeError(f"progress field {field!r} must be {_KIND[kind]}, got {fields[field]!r}")
    with _locked():
        data = read()
        entry = data["slots"].setdefault(name, {})
        entry.update(fields)
        write(data)
        return entry


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def import_file(path: Path, module_name: str):
    """Import a learner's file as a module (a fresh copy each time)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module        # Triton and inspect look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_unlocked(name: str):
    """The learner's function for slot `name` if it was unlocked and its file is unchanged."""
    entry = read()["slots"].get(name, {})
    if not entry.get("unlocked"):
        return None
    path = workspace_file(name)
    if not path.exists():
        warnings.warn(f"int4lab: {name} was unlocked but {path} is gone; the library's "
                      "implementation is used instead.", stacklevel=3)
        return None
    if sha256(path) != entry.get("sha256"):
        warnings.warn(f"int4lab: {path.name} changed since {name} was unlocked, so it is not "
                      f"used until it passes again: run int4lab.unlock({name!r}).", stacklevel=3)
        return None
    try:
        return getattr(import_file(path, f"int4lab_workspace_{name}"), name)
    except Exception as e:  # a learner file that no longer imports must not stop a lesson
        warnings.warn(f"int4lab: could not import {path} ({type(e).__name__}: {e}); the "
                      "library's implementation is used instead.", stacklevel=3)
        return None

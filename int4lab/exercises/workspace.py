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
"""
import hashlib
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

from int4lab.runtime import replace_atomically


def home() -> Path:
    return Path(os.environ.get("INT4LAB_HOME") or Path.home() / ".int4lab")


def workspace() -> Path:
    return home() / "workspace"


def workspace_file(name: str) -> Path:
    return workspace() / f"{name}.py"


def _progress_path() -> Path:
    return home() / "progress.json"


def read() -> dict:
    path = _progress_path()
    if not path.exists():
        return {"slots": {}}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("slots"), dict):
            raise ValueError("top level must be an object with a 'slots' object")
        return data
    except (ValueError, OSError) as e:
        aside = path.with_name(f"progress.json.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        warnings.warn(f"int4lab: the progress file {path} was unreadable ({e}); it was moved to "
                      f"{aside.name} and progress starts afresh. Your kernels in "
                      f"{workspace()} are untouched: unlock them again.", stacklevel=2)
        return {"slots": {}}


def write(data: dict) -> None:
    replace_atomically(_progress_path(),
                       lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def update(name: str, **fields) -> dict:
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

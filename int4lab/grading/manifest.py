"""The grader checks itself: a SHA-256 of every .py file of int4lab and of its kernels.

    python -m int4lab.grading.manifest --write     # after any change to the package (before a commit)
    python -m int4lab.grading.manifest --check     # exit 0: the files are as shipped; 1: says which differ

MANIFEST.json (beside this file, shipped as package data) is made from the source tree and
committed; tests/test_manifest.py fails while it is stale. verify() compares the files that
`import int4lab` actually loads with it: a grader whose checks, spec or kernels were edited,
or that a learner's code rewrote on disk, reports the files. Keys are paths as the package is
installed: "int4lab/grading/grader.py", and "int4lab/kernels/pack_int4.py" for kernels/ (which
installs as int4lab.kernels). __pycache__ and the manifest itself are not listed. Line endings
are normalised (CRLF -> LF) before hashing, so a checkout on Windows matches.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().with_name("MANIFEST.json")
FORMAT = 1
WRITE_COMMAND = "python -m int4lab.grading.manifest --write"


def roots() -> dict:
    """{key prefix: folder} of the installed (or source) package: int4lab and int4lab.kernels."""
    package = Path(importlib.util.find_spec("int4lab").origin).parent
    kernels = Path(importlib.util.find_spec("int4lab.kernels").origin).parent
    return {"int4lab": package, "int4lab/kernels": kernels}


def version() -> str:
    import int4lab
    return getattr(int4lab, "__version__", "unknown")


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _files(folder: Path, exclude: list):
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith(".")
                             and (here / d).resolve() not in exclude)
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield here / name


def build(package_root=None, kernels_root=None) -> dict:
    """{"format", "version", "files": {key: sha256}} of the package found by import (or of the
    folders given: a copy of the package, in tests)."""
    found = roots()
    folders = {"int4lab": Path(package_root or found["int4lab"]),
               "int4lab/kernels": Path(kernels_root or found["int4lab/kernels"])}
    kernels = folders["int4lab/kernels"].resolve()
    files = {}
    for prefix, folder in folders.items():
        # installed, kernels/ sits inside int4lab/: listed once, as int4lab/kernels/...
        exclude = [kernels] if prefix == "int4lab" else []
        for path in _files(folder, exclude):
            if path.resolve() == DEFAULT:
                continue
            files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = digest(path)
    return {"format": FORMAT, "package": "int4lab", "version": version(), "files": dict(sorted(files.items()))}


def write(path=DEFAULT, package_root=None, kernels_root=None) -> dict:
    data = build(package_root, kernels_root)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
    return data


def _where(key: str, folders: dict) -> str:
    for prefix in sorted(folders, key=len, reverse=True):
        if key.startswith(prefix + "/"):
            return str(folders[prefix] / key[len(prefix) + 1:])
    return key


def verify(manifest_path=DEFAULT, package_root=None, kernels_root=None) -> list:
    """Sentences, one per file that differs from the manifest (changed, missing, extra), and
    one for a different version; [] when everything is as the manifest says."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["files"]
        if not isinstance(expected, dict):
            raise ValueError("'files' is not an object")
    except FileNotFoundError:
        return [f"the manifest {manifest_path} is missing, so the grader cannot check its own files "
                f"(make it with `{WRITE_COMMAND}`)"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        return [f"the manifest {manifest_path} is unreadable ({type(e).__name__}: {e}); make it again "
                f"with `{WRITE_COMMAND}`"]
    now = build(package_root, kernels_root)
    found = roots()
    folders = {"int4lab": Path(package_root or found["int4lab"]),
               "int4lab/kernels": Path(kernels_root or found["int4lab/kernels"])}
    out = []
    if manifest.get("version") != now["version"]:
        out.append(f"the manifest was made for int4lab {manifest.get('version')}, but {now['version']} "
                   "is installed")
    for key in sorted(set(expected) | set(now["files"])):
        if key not in now["files"]:
            out.append(f"{key} is missing: the manifest lists it, but {_where(key, folders)} does not exist")
        elif key not in expected:
            out.append(f"{key} is an extra file: {_where(key, folders)} is not in the manifest")
        elif expected[key] != now["files"][key]:
            out.append(f"{key} changed: {_where(key, folders)} does not have the SHA-256 the manifest "
                       f"records ({expected[key][:12]}..., now {now['files'][key][:12]}...)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m int4lab.grading.manifest",
                                description="the SHA-256 manifest of int4lab's own files")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"(re)make the manifest ({DEFAULT.name})")
    action.add_argument("--check", action="store_true", help="compare the package with the manifest")
    p.add_argument("--manifest", default=str(DEFAULT), help="the manifest file (default: the shipped one)")
    a = p.parse_args(argv)
    if a.write:
        data = write(a.manifest)
        print(f"wrote {a.manifest}: {len(data['files'])} files, int4lab {data['version']}")
        return 0
    problems = verify(a.manifest)
    if problems:
        print(f"int4lab's files differ from {a.manifest}:")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print(f"int4lab's files match {a.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

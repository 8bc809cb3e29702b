"""`int4lab grade`: grade learners' kernels with visible and hidden checks, out of process.

    int4lab grade PATH [--hidden] [--timeout SECONDS] [--json FILE] [--junit FILE] [--slots A,B]

PATH is one learner's notebook (.ipynb), one learner's workspace (a folder of SLOT.py files, as
%%exercise writes them), or a folder of submissions, one per learner (each a notebook, or a
folder holding a notebook or a workspace).

Why learners cannot earn marks they did not earn:
  - progress.json is never read: every mark comes from checks run now;
  - inputs and expected outputs are made here, in the grader's process, from the spec, and
    compared here; the grader alone decides every status, and keeps the time;
  - the learner's code runs in a worker (worker.py, a fresh `python -I` that imports no int4lab)
    that gets each check's inputs and the learner's file over a pipe and sends back only
    outputs or an exception's description (read with torch.load(weights_only=True): no code
    comes back); the worker cannot read the library, its kernels or the submissions, write
    outside its own folder, or start processes (worker.py's docstring says how and where);
  - one worker runs all of a (learner, slot)'s checks; a check that outlives its limit is
    killed with its whole process group and PID namespace, and a new worker takes the next;
  - grade() returns only when every worker process is gone, and main() writes the reports only
    then, each in one atomic step.

Around the workers: submissions.discover finds every learner (a malformed notebook is that
learner's problem, never the class's), similarity.report flags near-identical submissions (it
informs, it changes no score), and manifest.verify compares the grader's installed files with
the hash manifest shipped with the package, before grading (main() refuses a changed grader) and
after (a change during grading makes the exit code 1). The JSON report is
{"learners": {learner: ...}, "class": {"skipped", "integrity", "similarity_threshold"}}.
"""
import argparse
import ast
import atexit
import dataclasses
import functools
import importlib.util
import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from int4lab import runtime
from int4lab.exercises import registry
from int4lab.grading import manifest, similarity
from int4lab.grading.submissions import SubmissionError, discover

# ---------------------------------------------------------------------------------------------
# Finding submissions (int4lab/grading/submissions.py reads them; every learner appears)

def submissions(path):
    """[(learner, {slot: source})] for PATH: see submissions.discover for the rules."""
    return [(sub.learner, sub.sources) for sub in discover(path)]


# ---------------------------------------------------------------------------------------------
# What a worker may know: the helpers a kernel file may import, and the folders it may not read

# The names of the library that a kernel file may import (the library's own kernels and lesson
# 04's stub do): input validators and small helpers. The worker gets them as stand-in int4lab.*
# modules holding only these definitions (and what they use), cut out of the library's source
# here; never a slot's spec, a kernel, the registry or dispatch. "*" means the whole module.
HELPERS = {
    "int4lab.spec.validate": "*",
    "int4lab.spec.packing": ("validate_pack", "validate_unpack"),
    "int4lab.spec.quantizers": ("QMAX", "_as_scale", "absmax_scale", "validate_quantize_int4",
                                "validate_int4_matmul"),
    "int4lab.spec.hadamard": ("hadamard_matrix", "validate_hadamard_quantize"),
    "int4lab.spec.gradients": ("kernel_seed", "validate_bit_split", "validate_lss_gather"),
    "int4lab.kernels.rounding": "*",
}


def _defined_names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _used_names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _references():
    """Names a helper module must never hold: every slot, its spec, its kernel's launcher."""
    registry._load_slots()
    names = set()
    for slot in registry.SLOTS.values():
        names |= {slot.name, slot.spec.__name__}
        if slot.triton:
            names.add(slot.triton.split(":")[1])
    return names


def _helper_source(module, wanted, exported):
    """The source of `module` cut down to `wanted` (and the top-level definitions they use)."""
    text = Path(importlib.util.find_spec(module).origin).read_text()
    tree = ast.parse(text)
    defs = {name: node for node in tree.body for name in _defined_names(node)}
    keep = set(defs) if wanted == "*" else set()
    todo = [] if wanted == "*" else list(wanted)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in defs:
            raise RuntimeError(f"grader helpers: {module} defines no {name}")
        keep.add(name)
        todo += [n for n in _used_names(defs[name]) if n in defs]
    leaked = keep & _references()
    if leaked:
        raise RuntimeError(f"grader helpers: {module} would give graded code {sorted(leaked)}")
    kept_nodes = [node for node in tree.body if set(_defined_names(node)) & keep]
    used = set().union(*(_used_names(n) for n in kept_nodes)) if kept_nodes else set()
    lines = text.splitlines(keepends=True)
    out = [f'"""{module} for graded code: only {", ".join(sorted(keep))}."""\n']
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        segment = "".join(lines[first - 1:node.end_lineno])
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[0] == "int4lab" for a in node.names):
                raise RuntimeError(f"grader helpers: {module} imports int4lab as a module")
            out.append(segment)
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] != "int4lab":
                out.append(segment)
                continue
            names = [a for a in node.names if (a.asname or a.name) in used]
            missing = [a.name for a in names if a.name not in exported.get(node.module, ())]
            if missing:
                raise RuntimeError(f"grader helpers: {module} needs {missing} from {node.module}")
            if names:
                out.append(f"from {node.module} import "
                           + ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in names) + "\n")
        elif node in kept_nodes:
            out.append("\n\n" + segment)
    source = "".join(out)
    compile(source, module, "exec")
    return source, keep


@functools.lru_cache(maxsize=1)
def helper_modules():
    """[(module name, source or None for a package)] for the worker, in import order."""
    out, exported = [], {}
    for module in HELPERS:
        parts = module.split(".")
        for i in range(1, len(parts)):
            package = ".".join(parts[:i])
            if (package, None) not in out:
                out.append((package, None))
        source, exported[module] = _helper_source(module, HELPERS[module], exported)
        out.append((module, source))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _interpreter_sources():
    """int4lab/interpreter/guard.py and compat.py as text: the worker runs them privately."""
    from int4lab.interpreter import compat, guard
    return {"guard": Path(guard.__file__).read_text(), "compat": Path(compat.__file__).read_text()}


def _library_paths():
    """The int4lab package, kernels/ and (a source checkout) the whole repository, .git included."""
    import int4lab
    package = Path(int4lab.__file__).resolve().parent
    paths = [package, Path(importlib.util.find_spec("int4lab.kernels").origin).resolve().parent]
    repo = package.parent
    pyproject = repo / "pyproject.toml"
    if pyproject.exists() and 'name = "int4lab"' in pyproject.read_text():
        paths.append(repo)
    return paths


def _runtime_paths():
    """What the worker's Python needs to read even inside a denied folder (a venv in the repo)."""
    import site

    import numpy
    import triton
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
             os.path.dirname(torch.__file__), os.path.dirname(numpy.__file__),
             os.path.dirname(triton.__file__)}
    return [Path(p).resolve() for p in paths if p]


@dataclasses.dataclass
class World:
    """What every worker of one grading run is told: the denied folders and their exceptions."""
    deny: list
    deny_except: list
    scratch: Path                 # the grader's own folder (workers' logs); denied to workers


def _world(path, protect, scratch):
    core = _library_paths()[:2]
    home = Path(os.environ.get("INT4LAB_HOME") or Path.home() / ".int4lab")
    deny = [*_library_paths(), Path(path).resolve(), scratch.resolve(),
            *(Path(p).resolve() for p in protect), home.resolve()]
    # an exception may not uncover the library itself (a venv *is* the repository: no exception)
    deny_except = [p for p in _runtime_paths()
                   if any(p == d or d in p.parents for d in deny)
                   and not any(c == p or p in c.parents for c in core)]
    return World([str(p) for p in deny], [str(p) for p in deny_except], scratch)


@functools.lru_cache(maxsize=1)
def _namespace_prefix():
    """The command that puts a worker in its own PID namespace (and mount and network ones),
    where this machine allows it: as root; else as an unprivileged user namespace. When the
    worker (or its init, the shell) dies, the kernel kills every process left in it. [] where
    unshare is missing or refused (then only the process group is killed, and what the worker
    could start is up to seccomp and the audit hook). No cgroup is made (that needs a delegated
    cgroup tree): a worker's memory and CPU are not capped, only its time."""
    if os.environ.get("INT4LAB_GRADE_NAMESPACES", "1") == "0" or not shutil.which("unshare"):
        return []
    candidates = [["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net"],
                  ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child",
                   "--mount-proc", "--net"],
                  ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]]
    for prefix in candidates:
        try:
            ok = subprocess.run(prefix + ["/bin/sh", "-c", "exit 0"], capture_output=True,
                                timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            # sh is the namespace's init (PID 1 ignores signals it has no handler for, so the
            # worker must not be PID 1: a kernel that kills itself must die)
            return prefix + ["/bin/sh", "-c", '"$@"; exit $?', "sh"]
    return []


def _namespaces_in_use():
    prefix = _namespace_prefix()
    return ", ".join(n for n, flag in (("user", "--user"), ("pid", "--pid"), ("mount", "--mount-proc"),
                                       ("net", "--net")) if flag in prefix)


def _worker_env(tmp):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
           "TRITON_HOME": tmp, "TRITON_CACHE_DIR": os.path.join(tmp, ".triton", "cache"),
           "TRITON_DUMP_DIR": os.path.join(tmp, ".triton", "dump"),
           "TRITON_OVERRIDE_DIR": os.path.join(tmp, ".triton", "override"),
           "XDG_CACHE_HOME": os.path.join(tmp, ".cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}
    for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH",
                "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH", "CC"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


# ---------------------------------------------------------------------------------------------
# One worker process (worker.py): started, asked, stopped

WORKER = Path(__file__).with_name("worker.py")
STARTUP_S = 60.0        # a worker imports torch and triton before it imports the learner's file
MAX_MESSAGE = 256 << 20
HEADER = struct.Struct(">Q")
_LIVE = set()           # every worker not yet stopped, for the exit handler
SANDBOXES = set()       # what the workers said they set up (informative only: never trusted)


class Stopped(Exception):
    """The worker could not answer: status "timeout" or "error", and what to tell the learner."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class Worker:
    """A worker for one (learner, slot): runs any number of that slot's checks, one at a time.

    Timing is ours: each wait has a monotonic deadline, and at the deadline the whole process
    group (and namespace) is killed with SIGKILL, which no signal mask or handler can stop."""

    def __init__(self, slot, source, world, timeout):
        self.slot, self.timeout = slot, timeout
        self.tmp = tempfile.mkdtemp(prefix="int4lab-worker-")
        self.started = time.monotonic()
        self.ns = None
        self.sandbox = ""
        read_end, write_end = os.pipe()
        self.log = world.scratch / f"{os.path.basename(self.tmp)}.log"
        command = _namespace_prefix() + [sys.executable, "-I", "-B", str(WORKER), str(write_end)]
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_end,),
                    cwd=self.tmp, env=_worker_env(self.tmp), start_new_session=True)
        except BaseException:
            os.close(read_end)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        finally:
            os.close(write_end)
        _LIVE.add(self)
        self.results = read_end
        self.requests = self.process.stdin.fileno()
        os.set_blocking(self.requests, False)
        self.buffer = bytearray()
        setup = {"slot": slot, "source": source, "cuda": runtime.HAS_CUDA,
                 "deny": world.deny, "deny_except": world.deny_except + [self.tmp],
                 "helpers": [list(h) for h in helper_modules()],
                 "interpreter": _interpreter_sources()}
        self.ready = None           # None until wait_ready; then True or a Stopped
        try:
            self._send(json.dumps(setup).encode(), self.started + STARTUP_S)
        except Stopped as e:
            self.ready = e
        except TimeoutError:
            self.ready = Stopped("timeout", f"the worker did not start within {STARTUP_S:g} s")

    # -- talking ---------------------------------------------------------------------------

    def _send(self, payload, deadline):
        data = memoryview(HEADER.pack(len(payload)) + payload)
        while data:
            self._wait(self.requests, select.POLLOUT, deadline)
            try:
                data = data[os.write(self.requests, data):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise Stopped("error", self._crash("stopped reading its input")) from None

    def _wait(self, fd, event, deadline):
        poller = select.poll()
        poller.register(fd, event | select.POLLHUP | select.POLLERR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if poller.poll(max(1, int(left * 1000))):
                return

    def _receive(self, deadline):
        """One message's payload; TimeoutError at the deadline; Stopped when the worker is gone
        or sends something no honest worker would."""
        while True:
            if len(self.buffer) >= HEADER.size:
                (n,) = HEADER.unpack_from(self.buffer)
                if n > MAX_MESSAGE:
                    raise Stopped("error", f"the worker sent a message of {n} bytes (at most "
                                  f"{MAX_MESSAGE} allowed)")
                if len(self.buffer) >= HEADER.size + n:
                    payload = bytes(self.buffer[HEADER.size:HEADER.size + n])
                    del self.buffer[:HEADER.size + n]
                    return payload
            self._wait(self.results, select.POLLIN, deadline)
            chunk = os.read(self.results, 1 << 20)
            if not chunk:
                raise Stopped("error", self._crash())
            self.buffer += chunk

    def _crash(self, what=None):
        """Why the worker went away, from its exit status (it is gone or about to be)."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return f"the worker {what or 'closed its result pipe'}"
        if code < 0:
            how = f"signal {signal.Signals(-code).name}"
        elif code > 128 and code - 128 in signal.valid_signals():
            how = f"signal {signal.Signals(code - 128).name}"     # through the namespace's sh
        else:
            how = f"exit code {code}"
        return f"the kernel crashed the Python process ({how})"

    @staticmethod
    def decode(payload):
        """A worker message, or Stopped: only ("ready", -1, str), ("exc", int, str, str) and
        ("out", int, outputs) exist; torch.load(weights_only=True) loads no code."""
        try:
            message = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as e:
            raise Stopped("error", f"the worker's answer could not be read back ({type(e).__name__})") from None
        kinds = {"ready": (str,), "exc": (str, str), "out": None}
        if not (type(message) is tuple and len(message) >= 2 and message[0] in kinds
                and type(message[1]) is int):
            raise Stopped("error", "the worker's answer has the wrong form")
        shape = kinds[message[0]]
        if shape is not None and not (len(message) == 2 + len(shape)
                                      and all(type(v) is t for v, t in zip(message[2:], shape))):
            raise Stopped("error", "the worker's answer has the wrong form")
        if shape is None and len(message) != 3:
            raise Stopped("error", "the worker's answer has the wrong form")
        return message

    # -- the life of a worker --------------------------------------------------------------

    def wait_ready(self):
        """True when the learner's file imported; else raises Stopped (for every check)."""
        if self.ready is None:
            limit = STARTUP_S + self.timeout
            try:
                message = self.decode(self._receive(self.started + limit))
            except TimeoutError:
                self.ready = Stopped("timeout", f"the worker was not ready within {limit:g} s "
                                     f"({STARTUP_S:g} s to start, {self.timeout:g} s to import "
                                     "the file; it was stopped)")
            except Stopped as e:
                self.ready = e
            else:
                if message[0] == "ready" and message[1] == -1:
                    self.ready, self.sandbox = True, message[2][:200]
                    SANDBOXES.add(self.sandbox)
                    self.ns = _pid_namespace(self.process.pid)
                elif message[0] == "exc" and message[1] == -1:
                    self.ready = Stopped("error", f"the file does not import: {message[3]}")
                else:
                    self.ready = Stopped("error", "the worker answered before it was asked")
        if self.ready is not True:
            raise self.ready
        return True

    def run(self, index, args, kwargs, timeout, on_late=None):
        """(message, seconds) for one check; Stopped when it outlived timeout + grace (the
        worker is then killed) or the worker crashed or misbehaved. on_late() is called once
        the limit has passed without an answer (to start a replacement while we wait)."""
        buf = io.BytesIO()
        torch.save((index, args, kwargs, float(timeout)), buf)
        hard = timeout + grace_s(timeout)
        start = time.monotonic()
        try:
            self._send(buf.getvalue(), start + hard)
            try:
                payload = self._receive(start + timeout)
            except TimeoutError:
                if on_late is not None:
                    on_late()
                payload = self._receive(start + hard)
            message = self.decode(payload)
        except TimeoutError:
            self.stop()
            raise Stopped("timeout", f"took longer than {timeout:g} s (the worker did not stop "
                          f"by itself and was killed after {hard:g} s)") from None
        return message, time.monotonic() - start

    def leftover(self):
        """A message the worker sent that nobody asked for (after its last answer), or None."""
        try:
            return self.decode(self._receive(time.monotonic() + 0.01))
        except (TimeoutError, Stopped):
            return None

    def stop(self):
        """SIGKILL the worker's process group (and so its PID namespace), and wait until every
        process of it is gone; then remove its folder. Idempotent."""
        if self not in _LIVE:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        _wait_gone(self.process.pid, self.ns)
        for fd in (self.results,):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.process.stdin.close()
        except OSError:
            pass
        shutil.rmtree(self.tmp, onerror=_force_remove)
        _LIVE.discard(self)


def grace_s(timeout):
    """How long after its limit a check is killed: the worker's own SIGALRM stops an honest
    Python loop at the limit and keeps the worker; this margin is for code that ignores it."""
    return 1.0 + 0.05 * timeout


def _force_remove(function, path, excinfo):
    """rmtree's error handler: graded code may have made its files read-only."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _pid_namespace(pid):
    """The PID namespace of the worker started through unshare (its child's), or None."""
    try:
        child = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
        ns = os.readlink(f"/proc/{child}/ns/pid")
        return ns if ns != os.readlink("/proc/self/ns/pid") else None
    except (OSError, IndexError):
        return None


def _alive(pgid, ns):
    """Host pids of live (not zombie) processes in process group pgid or PID namespace ns."""
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            state, _, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            if state in "ZX":
                continue
            if int(pgrp) == pgid or (ns and os.readlink(f"/proc/{pid}/ns/pid") == ns):
                found.append(int(pid))
        except (OSError, ValueError):
            continue
    return found


def _wait_gone(pgid, ns, limit=5.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        alive = _alive(pgid, ns)
        if not alive:
            return True
        for pid in alive:                 # one that left the group (setsid) but not the namespace
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
    return False


def _stop_all():
    for worker in list(_LIVE):
        worker.stop()


atexit.register(_stop_all)


# ---------------------------------------------------------------------------------------------
# Grading one slot

def _cases(slot, hidden):
    """[(check, seed, args, kwargs, expected)] made here, from the spec."""
    out = []
    for check in slot.checks:
        if check.hidden and not hidden:
            continue
        for seed in check.seeds:
            args, kwargs = check.make(seed, torch.device("cpu"))
            expected = slot.spec(*_clone(args), **_clone(kwargs))
            out.append((check, seed, args, kwargs, expected))
    return out


def _clone(x):
    from int4lab.exercises.learner import _clone as clone
    return clone(x)


class _Workers:
    """The workers of one slot: one, reused for every check; a new one only after a kill. A
    spare starts in the background as soon as a check passes its limit, and after the first
    kill one is always kept ready, so that a kernel that hangs on every input costs each check
    its time limit, not a restart on top."""

    def __init__(self, name, source, world, timeout, first=None):
        self.args = (name, source, world, timeout)
        self.current, self.spare, self.kills = first, None, 0

    def get(self):
        if self.current is None:
            self.current, self.spare = self.spare or Worker(*self.args), None
        if self.kills:
            self.start_spare()
        self.current.wait_ready()
        return self.current

    def start_spare(self):
        if self.spare is None:
            self.spare = Worker(*self.args)

    def kill(self):
        if self.current is not None:
            self.current.stop()
        self.current = None
        self.kills += 1

    def close(self):
        for w in (self.current, self.spare):
            if w is not None:
                w.stop()


def grade_slot(name, source, hidden=False, timeout=60.0, *, worker=None, world=None):
    """Score one learner's source for slot `name`: a list of per-check results (CheckResult).

    `worker` may be one already started for this (learner, slot) (grade() starts the next one
    while this one runs); every worker is stopped before this returns."""
    from int4lab.exercises.learner import CheckResult
    slot = registry.get(name)
    cases = _cases(slot, hidden)
    results = [None] * len(cases)
    scratch = None
    if world is None:
        scratch = Path(tempfile.mkdtemp(prefix="int4lab-grade-"))
        world = _world(scratch, (), scratch)
    workers = _Workers(name, source, world, timeout, first=worker)
    try:
        for i, (check, seed, args, kwargs, expected) in enumerate(cases):
            try:
                w = workers.get()
            except Stopped as e:            # the file does not import, or no worker started
                for j in range(i, len(cases)):
                    results[j] = CheckResult(cases[j][0].name, cases[j][1], e.status, e.message)
                break
            try:
                message, seconds = w.run(i, args, kwargs, timeout, on_late=workers.start_spare)
            except Stopped as e:
                results[i] = CheckResult(check.name, seed, e.status, e.message)
                workers.kill()
                continue
            if message[1] != i:
                # out of turn: a message the learner's code wrote itself; whatever it claims,
                # this check and the one it names get nothing, and the stream is not trusted
                if 0 <= message[1] < i:
                    results[message[1]] = CheckResult(cases[message[1]][0].name, cases[message[1]][1],
                                                      "error", "the worker answered this check twice")
                results[i] = CheckResult(check.name, seed, "error", "the worker answered out of turn")
                workers.kill()
                continue
            results[i] = _judge(check, seed, args, kwargs, expected, message, seconds, timeout)
        if workers.current is not None and workers.current.ready is True:
            extra = workers.current.leftover()
            if extra is not None and 0 <= extra[1] < len(cases):
                j = extra[1]
                results[j] = CheckResult(cases[j][0].name, cases[j][1], "error",
                                         "the worker answered this check twice")
    finally:
        workers.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def _judge(check, seed, args, kwargs, expected, message, seconds, timeout):
    """The status of one check, decided here: the worker only said what it computed."""
    from int4lab.exercises.learner import CheckResult
    if seconds >= timeout:
        return CheckResult(check.name, seed, "timeout", f"took longer than {timeout:g} s")
    if message[0] == "exc":
        kind, text = message[2], message[3]
        if kind == "NotImplementedError":
            return CheckResult(check.name, seed, "not_implemented", "raises NotImplementedError")
        return CheckResult(check.name, seed, "error", text)
    if message[0] != "out":
        return CheckResult(check.name, seed, "error", "the worker's answer has the wrong form")
    try:
        mismatch = check.compare(expected, message[2], args, kwargs)
    except Exception as e:
        return CheckResult(check.name, seed, "error", f"the output could not be compared "
                           f"({type(e).__name__}: {e})")
    if mismatch is None:
        return CheckResult(check.name, seed, "pass")
    return CheckResult(check.name, seed, "fail", mismatch.message)


# ---------------------------------------------------------------------------------------------
# Reports

def _slot_entry(results, seconds):
    passed = sum(r.passed for r in results)
    return {"score": passed / len(results) if results else 0.0, "passed": passed,
            "total": len(results), "missing": False, "seconds": round(seconds, 2),
            "checks": [{"check": r.check, "seed": r.seed, "status": r.status, "message": r.message}
                       for r in results]}


AHEAD = 2              # workers started ahead of the slot being graded (each takes ~2 s to start)


SIMILARITY_THRESHOLD = 0.9


def grade(path, hidden=False, timeout=60.0, slots=None, *, protect=(), progress=None,
          class_info=None):
    """{learner: {"slots": {slot: {"score", "passed", "total", "missing", "seconds", "similarity",
    "checks": [...]}}, "total", "max", "problems", "skipped"}}.

    Every learner found in PATH appears, with the problems met reading their files (a malformed
    notebook, an undecodable file: that learner's, never the class's). protect: more files the
    workers may not read (the reports being written). progress: called as progress(learner,
    slot, seconds) after each slot. class_info, a dict, receives what concerns the class: the
    entries that are no learner ("skipped"), the grader's integrity before and after grading
    ("integrity", checked against its hash manifest) and the similarity threshold. Returns only
    once every worker process is gone. While one slot runs, the workers of the next AHEAD slots
    are already starting."""
    registry._load_slots()
    names = list(slots or sorted(registry.SLOTS))
    unknown = sorted(set(names) - set(registry.SLOTS))
    if unknown:
        raise SubmissionError(f"unknown slot(s) {', '.join(unknown)}; the slots are: "
                              f"{', '.join(sorted(registry.SLOTS))}")
    integrity_before = manifest.verify()
    subs = discover(path)
    found = [(sub.learner, sub.sources) for sub in subs]
    scratch = Path(tempfile.mkdtemp(prefix="int4lab-grade-"))
    world = _world(path, protect, scratch)
    jobs = [(learner, name, sources[name]) for learner, sources in found for name in names
            if sources.get(name) is not None]
    report = {learner: {"slots": {name: {"score": 0.0, "passed": 0, "total": 0, "missing": True,
                                         "checks": []} for name in names}}
              for learner, _ in found}
    started = {}
    try:
        for k, (learner, name, source) in enumerate(jobs):
            t0 = time.perf_counter()
            for nxt in jobs[k:k + 1 + AHEAD]:
                if nxt[:2] not in started:
                    started[nxt[:2]] = Worker(nxt[1], nxt[2], world, timeout)
            results = grade_slot(name, source, hidden=hidden, timeout=timeout,
                                 worker=started.pop((learner, name)), world=world)
            seconds = time.perf_counter() - t0
            report[learner]["slots"][name] = _slot_entry(results, seconds)
            if progress is not None:
                progress(learner, name, seconds)
    finally:
        for worker in started.values():
            worker.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    sim = similarity.report({learner: {k: v for k, v in sources.items() if k in names}
                             for learner, sources in found},
                            similarity.library_sources(names), threshold=SIMILARITY_THRESHOLD,
                            starters=similarity.starters())
    for sub in subs:
        r = report[sub.learner]
        r["total"] = sum(v["score"] for v in r["slots"].values())
        r["max"] = len(r["slots"])
        r["problems"], r["skipped"] = list(sub.problems), list(sub.skipped)
        for name, entry in r["slots"].items():
            v = sim.get(sub.learner, {}).get(name)
            entry["similarity"] = None if v is None else {
                "library": v["library"], "closest_peer": list(v["closest_peer"]), "flag": v["flag"]}
    if class_info is not None:
        after = manifest.verify()
        class_info.update(skipped=list(subs.skipped), similarity_threshold=SIMILARITY_THRESHOLD,
                          integrity={"before": integrity_before,
                                     "after": [m for m in after if m not in integrity_before]})
    return report


def summary(report, class_info=None):
    lines = []
    for learner, r in report.items():
        lines.append(f"{learner}: {r['total']:.2f} / {r['max']}")
        for name, s in r["slots"].items():
            state = "missing" if s["missing"] else f"{s['passed']}/{s['total']} checks"
            lines.append(f"  {name:18} {s['score']:.2f}  ({state})")
            flag = (s.get("similarity") or {}).get("flag")
            if flag:
                lines.append(f"  {'':18} ! {flag} (informative: the score is unchanged)")
        lines += [f"  problem: {p}" for p in r.get("problems", [])]
        if r.get("skipped"):
            lines.append(f"  ({len(r['skipped'])} file(s) skipped; see --json)")
    if class_info:
        lines += [f"not a learner: {s}" for s in class_info.get("skipped", [])]
        integrity = class_info.get("integrity", {})
        if integrity.get("before") or integrity.get("after"):
            lines.append("WARNING: the grader's own files differ from its manifest:")
            lines += [f"  - {m}" for m in integrity.get("before", []) + integrity.get("after", [])]
        else:
            lines.append("grader files: as shipped (hash manifest checked before and after)")
    return "\n".join(lines)


def junit(report):
    suites = ET.Element("testsuites", name="int4lab grade")
    for learner, r in report.items():
        cases = [(name, c) for name, s in r["slots"].items() for c in s["checks"]]
        missing = [name for name, s in r["slots"].items() if s["missing"]]
        failures = sum(c["status"] != "pass" for _, c in cases) + len(missing)
        suite = ET.SubElement(suites, "testsuite", name=learner, tests=str(len(cases) + len(missing)),
                              failures=str(failures))
        props = ET.SubElement(suite, "properties")
        for p in r.get("problems", []):
            ET.SubElement(props, "property", name="problem", value=p)
        for name, s in r["slots"].items():
            sim = s.get("similarity")
            if sim:
                if sim["library"] is not None:
                    ET.SubElement(props, "property", name=f"similarity.{name}.library",
                                  value=f"{sim['library']:.3f}")
                peer, score = sim["closest_peer"]
                if peer is not None:
                    ET.SubElement(props, "property", name=f"similarity.{name}.closest_peer",
                                  value=f"{peer} {score:.3f}")
                if sim["flag"]:
                    ET.SubElement(props, "property", name=f"flag.{name}", value=sim["flag"])
        for name, c in cases:
            tc = ET.SubElement(suite, "testcase", classname=f"{learner}.{name}",
                               name=f"{c['check']} (seed {c['seed']})")
            if c["status"] != "pass":
                ET.SubElement(tc, "failure", message=c["status"]).text = c["message"]
        for name in missing:
            tc = ET.SubElement(suite, "testcase", classname=f"{learner}.{name}", name="submitted")
            ET.SubElement(tc, "failure", message="missing").text = f"no implementation of {name} found"
    return ET.tostring(suites, encoding="unicode")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="int4lab grade", description="grade learners' kernels")
    p.add_argument("path", help="a notebook, a workspace folder, or a folder of submissions")
    p.add_argument("--hidden", action="store_true", help="also run the hidden checks")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per check (default 60)")
    p.add_argument("--json", help="write the full report as JSON here")
    p.add_argument("--junit", help="write JUnit XML here (for classroom runners)")
    p.add_argument("--slots", help="comma list of slots to grade (default: all)")
    p.add_argument("--allow-modified-grader", action="store_true",
                   help="grade even when the grader's files differ from its hash manifest")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    changed = manifest.verify()
    if changed and not a.allow_modified_grader:
        print("int4lab grade: the grader's own files differ from the manifest made when it was "
              "built, so its marks cannot be trusted:\n" + "\n".join(f"  - {m}" for m in changed)
              + "\nReinstall int4lab (pip install --force-reinstall), or pass "
              "--allow-modified-grader if you changed it on purpose.", file=sys.stderr)
        return 2
    torch.set_num_threads(1)      # the spec's small tensors: extra threads only contend for cores

    def show(learner, slot, seconds):
        print(f"  graded {learner}/{slot} in {seconds:.1f} s", file=sys.stderr, flush=True)

    # SIGTERM (a classroom runner giving up) unwinds like Ctrl-C: every worker is stopped
    on_term = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    class_info = {}
    try:
        report = grade(a.path, hidden=a.hidden, timeout=a.timeout,
                       slots=a.slots.split(",") if a.slots else None,
                       protect=[f for f in (a.json, a.junit) if f], progress=show,
                       class_info=class_info)
    except SubmissionError as e:
        print(f"int4lab grade: {e}", file=sys.stderr)
        return 2
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    print(summary(report, class_info))
    print(f"({time.perf_counter() - t0:.0f} s; {'visible and hidden' if a.hidden else 'visible'} checks)")
    print(f"workers: {' | '.join(sorted(SANDBOXES)) or 'none started'}; namespaces: "
          f"{_namespaces_in_use() or 'none (unshare unavailable here)'}")
    # every worker is gone by now: nothing but this process can write these files
    if a.json:
        doc = {"learners": report, "class": class_info}
        runtime.replace_atomically(a.json, lambda tmp: tmp.write_text(json.dumps(doc, indent=2)))
    if a.junit:
        runtime.replace_atomically(a.junit, lambda tmp: tmp.write_text(junit(report)))
    return 1 if class_info.get("integrity", {}).get("after") else 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())

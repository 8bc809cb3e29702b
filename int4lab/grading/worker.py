"""The grader's worker: runs one learner's file for one slot in a sandbox and returns its outputs.

This file is a script, not a module of the library. The grader (grader.py) starts it as

    [unshare --pid --fork --kill-child --mount-proc --net ... /bin/sh -c '"$@"; exit $?' sh]
        python -I -B worker.py RESULT_FD

in a fresh temporary folder (its cwd, HOME and TMPDIR), with a reduced environment. `-I` keeps
PYTHON* variables, the user's site-packages and the script's own folder off sys.path, so nothing
of int4lab is importable by accident; the sandbox below makes it impossible on purpose. It
imports only the standard library, torch, numpy and triton.

Protocol (every message is an 8-byte big-endian length, then that many bytes)
-----------------------------------------------------------------------------
grader -> worker, on stdin (fd 0, moved to a private fd at once; fd 0 becomes /dev/null):
  1. set-up, JSON: {"slot", "source" (the learner's file), "cuda", "deny", "deny_except",
     "helpers": [[module name, source or null], ...], "interpreter": {"guard", "compat"}};
  2. one message per check: torch.save((index, args, kwargs, timeout)).
  End of input means "done": the worker exits.
worker -> grader, on RESULT_FD (a pipe only the grader reads; stdout and stderr go to a log, so
a learner's print cannot reach it), each a torch.save of a tuple:
  ("ready", -1, sandbox description)               the file imported;
  ("exc", index, exception type name, one line)    the file (index -1) or a check raised;
  ("out", index, outputs)                          a check's outputs (tensors moved to the CPU).
The grader reads these with torch.load(weights_only=True) and decides every status itself: it
made the inputs and the expected outputs, compares, keeps the time, and treats anything
unreadable, late, out of turn or missing as an error of that check. So a forged message can at
most claim outputs, which must still equal the spec's; "not implemented" comes only from a
NotImplementedError description and earns nothing either.

What the sandbox guarantees, in the order it is set up
------------------------------------------------------
Before the learner's file is imported, the worker
  1. (Linux, where the kernel allows) restricts itself with Landlock: it may read everything but
     the denied folders (the int4lab package, the repository with kernels/, the submissions, the
     reports), write only in its own temporary folder, make no TCP connection, and signal no
     process outside itself. With seccomp it may not fork, exec, ptrace or unshare (on a GPU,
     where Triton runs ptxas and a C compiler, fork and exec stay allowed and the audit hook
     below limits them to Triton's own tools). Both are kernel-enforced and inherited by any
     thread; a machine without them keeps steps 2-3.
  2. imports torch and triton and sets up Triton's interpreter the way `import int4lab` does
     (TRITON_INTERPRET=1 is in its environment; the bounds guard and the Triton 3.6 fix arrive as
     source text over the pipe and run as private modules), then installs the course's helper
     functions that a kernel file may import (`from int4lab.spec.quantizers import absmax_scale`
     and the like; the grader sends their source, cut out of the library: input validators and
     small helpers, never a spec or a kernel) as stand-in modules named int4lab.*;
  3. arms a Python audit hook (sys.addaudithook: it cannot be removed) that refuses opening any
     file under the denied folders, opening any file for writing outside its temporary folder,
     importing any other int4lab module, compiling or running code whose file is under the
     denied folders, creating processes (fork, exec, posix_spawn, system, Popen; on a GPU only
     Triton's compilers, writing into the temporary folder), loading libraries or calling C
     through ctypes, changing directory, making links, signalling other processes, opening
     sockets, tracing or profiling (a trace function may rewrite a running frame's variables,
     the hook's own), and walking the garbage collector (which would find the hook's state).
     Opening a folder outside the temporary one and '..' in a relative path are refused too:
     a folder's fd with a relative path (dir_fd=) would name a file the hook never sees.
The hook and what it calls are closures over values captured when it is armed, so patching
builtins, os or this module (it is __main__: anyone can import it) afterwards changes nothing
it uses; any error inside it refuses the operation. The parent enforces the time limits with
its own clock and kills the whole process group with SIGKILL, and the PID namespace ends every
process the worker could have left behind.

Not covered: a submission is arbitrary code running with the grader's user rights. On a machine
without Landlock and seccomp, memory tricks (ctypes calls prepared before the hook saw them,
writing Python objects through a buffer) or a kernel exploit could get around the hook; see
docs/teaching.md.
"""
import io
import json
import os
import signal
import struct
import sys
import traceback
import types

HEADER = struct.Struct(">Q")


# ---------------------------------------------------------------------------------------------
# Framing

def read_message(fd):
    """One length-prefixed message from fd, or None at the end of input."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    (n,) = HEADER.unpack(header)
    return _read_exact(fd, n) if n else b""


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_message(fd, payload):
    data = HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------------------------------------
# Step 1: the kernel's own sandbox (Landlock, seccomp), before any other import

def _realpath_all(paths):
    return [os.path.realpath(p) for p in paths]


def _under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def readable_roots(deny, deny_except):
    """Folders and files whose subtrees may be read: all of / except the denied paths (Landlock
    only grants, so we grant every sibling along the way down to each denied path)."""
    roots = []

    def blocked(real):
        return any(_under(real, d) for d in deny) and not any(_under(real, e) for e in deny_except)

    def contains_denied(real):
        return any(_under(d, real) and d != real for d in deny)

    def walk(folder):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            real = os.path.realpath(entry.path)
            if blocked(real):
                # an exception inside a denied folder (a virtual environment in the repository)
                roots.extend(e for e in deny_except if _under(e, real))
            elif contains_denied(real):
                if real == entry.path:          # a symlink to an ancestor: its real path is walked
                    walk(entry.path)
            else:
                roots.append(entry.path)

    if not any(d == "/" for d in deny):
        walk("/")
    return roots


def landlock(tmp, deny, deny_except, cuda):
    """Restrict file access, TCP and signals with Landlock; returns its ABI version, or 0."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    create, add_rule, restrict = 444, 445, 446           # the same numbers on every architecture
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))   # ..._VERSION
    if abi < 1:
        return 0
    execute, write_file, read_file, read_dir = 1, 2, 4, 8
    fs_all = (1 << 13) - 1                               # ABI 1: execute .. make_sym
    if abi >= 2:
        fs_all |= 1 << 13                                # refer
    if abi >= 3:
        fs_all |= 1 << 14                                # truncate
    ioctl_dev = (1 << 15) if abi >= 5 else 0
    fs_all |= ioctl_dev
    net_all = 3 if abi >= 4 else 0                       # bind_tcp | connect_tcp: none granted
    scoped = 3 if abi >= 6 else 0                        # abstract unix sockets | signals

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = RulesetAttr(fs_all, net_all, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    file_rights = execute | write_file | read_file | (1 << 14 if abi >= 3 else 0) | ioctl_dev

    def grant(path, rights):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                rights &= file_rights                    # a file takes only file rights
            rule = PathBeneath(rights, fd)
            libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                         ctypes.c_uint32(0))
        finally:
            os.close(fd)

    try:
        for root in readable_roots(deny, deny_except):
            grant(root, execute | read_file | read_dir)
        grant(tmp, fs_all)
        grant("/dev/null", read_file | write_file | (1 << 14 if abi >= 3 else 0) | ioctl_dev)
        if cuda:                                         # the driver opens /dev/nvidia* read-write
            grant("/dev", read_file | write_file | read_dir | ioctl_dev)
            grant("/dev/shm", fs_all)
        if libc.prctl(38, 1, 0, 0, 0) != 0:              # PR_SET_NO_NEW_PRIVS
            return 0
        if libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


SECCOMP_TABLE = {
    # machine: (AUDIT_ARCH, syscalls refused always, refused on a CPU (fork/exec), clone, clone3)
    "x86_64": (0xC000003E, {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
                            "unshare": 272, "setns": 308, "mount": 165},
               {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322}, 56, 435),
    "aarch64": (0xC00000B7, {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "unshare": 97, "setns": 268, "mount": 40},
                {"execve": 221, "execveat": 281}, 220, 435),
}


def seccomp(allow_processes):
    """Refuse ptrace and namespace calls, and (unless allow_processes) fork, exec and clone of
    anything but a thread, for this process and all its threads. True when installed."""
    import ctypes
    table = SECCOMP_TABLE.get(os.uname().machine)
    if table is None:
        return False
    arch, always, processes, clone, clone3 = table
    ld_w_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [(ld_w_abs, 0, 0, 4),                         # A = seccomp_data.arch
            (jeq, 1, 0, arch), (ret, 0, 0, eperm),       # another ABI (int 0x80...): refuse
            (ld_w_abs, 0, 0, 0)]                         # A = seccomp_data.nr
    if arch == 0xC000003E:
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]    # the x32 ABI
    refused = list(always.values()) + ([] if allow_processes else list(processes.values()))
    for nr in refused:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    if not allow_processes:
        prog += [(jeq, 0, 1, clone3), (ret, 0, 0, enosys),       # glibc falls back to clone
                 (jeq, 0, 3, clone),
                 (ld_w_abs, 0, 0, 16),                            # A = low half of clone flags
                 (jset, 1, 0, 0x00010000),                        # CLONE_THREAD: a thread is fine
                 (ret, 0, 0, eperm)]
    prog += [(ret, 0, 0, allow)]

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(38, 1, 0, 0, 0) != 0:                  # PR_SET_NO_NEW_PRIVS
        return False
    nr_seccomp = 317 if arch == 0xC000003E else 277
    # SECCOMP_SET_MODE_FILTER with TSYNC: every thread of the process, now and later
    return libc.syscall(nr_seccomp, 1, 1, ctypes.byref(fprog)) == 0


# ---------------------------------------------------------------------------------------------
# Step 2: torch, triton, the interpreter set-up and the helper modules

def private_module(name, source, filename):
    """Run `source` as a module that is not in sys.modules (nothing can import it by name)."""
    module = types.ModuleType(name)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def set_up_interpreter(sources, tmp):
    """What `import int4lab` does for Triton's CPU interpreter: the Triton 3.6 fix and the bounds
    guard (int4lab/interpreter/compat.py and guard.py, sent as text by the grader)."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return []
    done = []
    for name in ("compat", "guard"):
        path = os.path.join(tmp, "interpreter", f"{name}.py")
        _write(path, sources[name])
        module = private_module(f"_interpreter_{name}", sources[name], path)
        if (module.apply if name == "compat" else module.install)():
            done.append(name)
    return done


def install_helpers(helpers, tmp):
    """Stand-in modules int4lab.* that hold only the helpers a kernel file may import.

    The sources are written to files in our folder (Triton reads a @triton.jit helper's source
    through inspect) and registered in sys.modules, so `from int4lab.spec.quantizers import
    absmax_scale` finds them without any import of the library. A package's __path__ is empty:
    nothing else can be found beneath it."""
    for name in [n for n in list(sys.modules) if n == "int4lab" or n.startswith("int4lab.")]:
        del sys.modules[name]
    for name, source in helpers:
        module = types.ModuleType(name, "int4lab for graded code: helper functions only")
        if source is None:
            module.__path__ = []
        else:
            module.__file__ = os.path.join(tmp, "helpers", name.replace(".", "/") + ".py")
            _write(module.__file__, source)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        if source is not None:
            exec(compile(source, module.__file__, "exec"), module.__dict__)


WARM_UP = '''
import triton
import triton.language as tl


@triton.jit
def warm_up(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1, mask=mask)
'''


def warm_up(torch, device, tmp):
    """Launch one tiny kernel before the hook is armed: Triton's lazy imports (and on a GPU its
    driver, which runs ldconfig and a C compiler once) happen now, not in the first check."""
    path = os.path.join(tmp, "warm_up.py")
    _write(path, WARM_UP)
    module = _import_file(path, "_warm_up")
    x = torch.zeros(8, device=device)
    module.warm_up[(1,)](x, 5, BLOCK=8)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sys.modules.pop("_warm_up", None)


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _import_file(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                # Triton and inspect look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def forget_library_paths(deny, deny_except):
    """No sys.path entry inside a denied folder, no editable-install finder on sys.meta_path or
    sys.path_hooks (it maps the name int4lab to the repository)."""
    def inside(path):
        real = os.path.realpath(path or ".")
        return (any(_under(real, d) for d in deny)
                and not any(_under(real, e) for e in deny_except))

    sys.path[:] = [p for p in sys.path if not str(p).startswith("__editable__") and not inside(p)]
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path_hooks[:] = [h for h in sys.path_hooks
                         if not getattr(h, "__module__", "").startswith("__editable__")]
    sys.path_importer_cache.clear()


# ---------------------------------------------------------------------------------------------
# Step 3: the audit hook

def arm_audit_hook(tmp, deny, deny_except, cuda, allowed_tools):
    """sys.addaudithook(hook): see the module docstring for what it refuses.

    Everything the hook uses is bound here, as closure variables, so nothing a submission does
    later to builtins, os, posixpath or this module (which is __main__, importable by anyone)
    changes its decisions; an exception inside the hook refuses the event."""
    import posix
    lstat, stat, readlink = posix.lstat, posix.stat, posix.readlink
    denied_error, os_error = PermissionError, OSError
    str_type, bytes_type, int_type, bool_type = str, bytes, int, bool
    type_of, is_instance, decode = type, isinstance, bytes.decode
    length, get_attr, fspath = len, getattr, os.fspath
    import pathlib
    pure_path = pathlib.PurePath
    cwd = os.getcwd()
    tmp_root = tmp.rstrip("/")
    deny = tuple(d.rstrip("/") or "/" for d in deny)
    deny_except = tuple(e.rstrip("/") for e in deny_except)
    tools = tuple(t.rstrip("/") for t in allowed_tools)
    own_pid = os.getpid()
    try:
        proc_self = readlink("/proc/self")
    except os_error:
        proc_self = str_type(own_pid)
    S_IFMT, S_IFLNK, S_IFDIR = 0o170000, 0o120000, 0o040000
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    ctypes_events = frozenset({"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
                               "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at",
                               "ctypes.wstring_at", "ctypes.call_function", "ctypes.addressof"})
    refused_always = frozenset({"os.chdir", "os.symlink", "os.link", "os.fork", "os.forkpty",
                                "os.system", "os.startfile", "os.killpg", "gc.get_objects",
                                "gc.get_referrers", "gc.get_referents", "socket.connect",
                                "socket.bind", "socket.sendto", "socket.sendmsg",
                                "socket.getaddrinfo", "socket.gethostbyname", "sys.remote_exec",
                                # a trace function can rewrite a running frame's variables,
                                # this hook's included
                                "sys.settrace", "sys.setprofile"})
    processes = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"})
    writes = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.truncate",
                        "os.chmod", "os.chown", "os.utime", "os.chflags", "os.lchflags",
                        "os.setxattr", "os.removexattr", "shutil.rmtree"})
    # events whose last argument is a dir_fd (a path relative to a folder we never saw)
    dir_fd_last = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime"})
    code_events = frozenset({"compile", "exec", "import"})
    reads = frozenset({"os.listdir", "os.scandir"})
    watched = (frozenset({"open", "os.kill"}) | ctypes_events | refused_always | processes
               | writes | code_events | reads)

    def text(path):
        t = type_of(path)
        if t is str_type:
            return path
        if t is bytes_type:
            return decode(path, "utf-8", "surrogateescape")
        if cuda and is_instance(path, pure_path):
            # Triton's compiler reads its cache through pathlib on a GPU. An object's __fspath__
            # could answer differently to the open and to us (a thread or a signal handler
            # racing): on a GPU, only Landlock closes that gap.
            return text(fspath(path))
        raise denied_error("graded code must name files with str or bytes paths")

    def real(path):
        """Absolute, normalized, every symlink followed (os.path.realpath, from captured calls)."""
        if not path.startswith("/"):
            if ".." in path.split("/"):
                # a relative path may be meant for another folder (dir_fd=): no climbing out
                raise denied_error("graded code may not use '..' in a relative path")
            path = cwd + "/" + path
        todo = path.split("/")[::-1]
        done, links = "", 0
        while todo:
            name = todo.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                done = done[:done.rfind("/")] if done else ""
                continue
            candidate = done + "/" + name
            try:
                mode = lstat(candidate).st_mode
            except os_error:
                done = candidate
                continue
            if mode & S_IFMT == S_IFLNK:
                links += 1
                if links > 40:
                    raise denied_error("too many symbolic links")
                target = readlink(candidate)
                if target.startswith("/"):
                    done = ""
                todo.extend(target.split("/")[::-1])
            else:
                done = candidate
        return done or "/"

    def under(path, root):
        return path == root or path.startswith(root + "/") or root == "/"

    def readable(path):
        """The resolved path is neither in a denied folder nor another process's /proc entry."""
        for d in deny:
            if under(path, d):
                for e in deny_except:
                    if under(path, e):
                        break
                else:
                    return False
        if path.startswith("/proc/"):
            first = path[6:].split("/")[0]
            if first.isdigit() and first != proc_self:
                return False
        return True

    def writable(path):
        return under(path, tmp_root) or path == "/dev/null"

    def check_open(path, mode, flags):
        if type_of(path) is int_type or type_of(path) is bool_type:
            return                                   # an fd this process already holds
        where = real(text(path))
        if not readable(where):
            raise denied_error(f"graded code may not read {where}")
        wants_write = (is_instance(flags, int_type) and flags & write_flags) or (
            type_of(mode) is str_type and ("w" in mode or "a" in mode or "x" in mode or "+" in mode))
        if wants_write and not writable(where):
            raise denied_error(f"graded code may write only in its own folder, not {where}")
        if not under(where, tmp_root):
            try:
                is_dir = stat(where).st_mode & S_IFMT == S_IFDIR
            except os_error:
                is_dir = False
            if is_dir:
                # a folder's fd would let a relative path (dir_fd=) reach past these checks
                raise denied_error(f"graded code may not open the folder {where}")

    def check_code(event, args):
        if event == "import":
            name = args[0]
            if type_of(name) is str_type and (name == "int4lab" or name.startswith("int4lab.")):
                raise denied_error(f"graded code may not import {name}")
            return
        filename = args[1] if event == "compile" else get_attr(args[0], "co_filename", None)
        if type_of(filename) is bytes_type:
            filename = decode(filename, "utf-8", "surrogateescape")
        if type_of(filename) is str_type and filename and not filename.startswith("<"):
            if ".." in filename.split("/") and not filename.startswith("/"):
                return                               # a label, not a file we could have read
            if not readable(real(filename)):
                raise denied_error(f"graded code may not run code from {filename}")

    def check_process(event, args):
        if not cuda or event != "subprocess.Popen":
            raise denied_error("graded code may not start processes")
        executable, argv = args[0], args[1]
        if type_of(argv) is str_type or type_of(argv) is bytes_type:
            argv = (argv,)
        exe = real(text(executable if executable is not None else argv[0]))
        for t in tools:
            if under(exe, t):
                break
        else:
            raise denied_error(f"graded code may not run {exe}")
        after_o = False
        for a in argv:                            # ptxas ... -o OUT, cc ... -o OUT
            if after_o and not writable(real(text(a))):
                raise denied_error("Triton's tools may write only in the worker's folder")
            after_o = text(a) == "-o"

    def hook(event, args):
        if event not in watched:
            return
        if event == "open":
            n = length(args)
            check_open(args[0], args[1] if n > 1 else None, args[2] if n > 2 else 0)
        elif event in code_events:
            check_code(event, args)
        elif event in reads:
            if args and (type_of(args[0]) is str_type or type_of(args[0]) is bytes_type):
                if not readable(real(text(args[0]))):
                    raise denied_error("graded code may not list that folder")
        elif event in writes:
            for a in args[:2] if event == "os.rename" else args[:1]:
                if type_of(a) is not int_type and not writable(real(text(a))):
                    raise denied_error("graded code may change files only in its own folder")
            if (event in dir_fd_last and args[-1] is not None) or (
                    event == "os.rename" and (args[2] is not None or args[3] is not None)):
                raise denied_error("graded code may not use dir_fd")
        elif event == "os.kill":
            if args[0] != own_pid:
                raise denied_error("graded code may signal only its own process")
        elif event in processes:
            check_process(event, args)
        elif event in ctypes_events:
            if not cuda:
                raise denied_error("graded code may not use ctypes")
            if event == "ctypes.dlopen":
                raise denied_error("graded code may not load libraries")
        else:
            raise denied_error(f"graded code may not use {event}")

    sys.addaudithook(hook)


# ---------------------------------------------------------------------------------------------
# Running the checks

class SoftTimeout(Exception):
    """Raised by SIGALRM inside a check that outlives its limit; the parent's hard limit, which
    no signal mask can stop, follows shortly after."""


def _on_alarm(signum, frame):
    raise SoftTimeout("took longer than the time limit")


def run_check(fn, args, kwargs, timeout, torch, device):
    args, kwargs = to_device((args, kwargs), torch, device)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        got = fn(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return to_cpu(got, torch)


def to_device(x, torch, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, torch, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, torch, device) for k, v in x.items()}
    return x


def to_cpu(x, torch):
    """Outputs for the grader: CPU tensors (copied, so a view does not drag its whole storage)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, (list, tuple)):
        return tuple(to_cpu(v, torch) for v in x)
    return x


def describe_error(e):
    """One line: the real error (not Triton's wrapper) and the line of the learner's file."""
    while type(e).__name__ == "InterpreterError" and e.__cause__ is not None:
        e = e.__cause__
    try:
        # the learner's line, not Triton's or the bounds guard's (tmp/interpreter/guard.py)
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if "site-packages" not in f.filename and "/triton/" not in f.filename
                  and "/interpreter/" not in f.filename]
    except Exception:
        frames = []
    where = ""
    if frames:
        f = frames[-1]
        code = f": {f.line.strip()}" if f.line else ""
        where = f" (at {f.filename.split('/')[-1]}:{f.lineno}, in {f.name}{code})"
    return f"{type(e).__name__}: {e}{where}"[:2000]


def encode(torch, message):
    buf = io.BytesIO()
    torch.save(message, buf)
    return buf.getvalue()


def reply(torch, result_fd, index, outcome):
    """Send ("out", index, outputs) or ("exc", index, type, text); outputs that torch.save
    cannot write become an error (the grader would refuse them anyway)."""
    kind, value = outcome
    if kind == "out":
        try:
            write_message(result_fd, encode(torch, ("out", index, value)))
            return
        except Exception as e:
            kind, value = "exc", e
    name = type(value).__name__ if isinstance(value, BaseException) else "Error"
    text = describe_error(value) if isinstance(value, BaseException) else str(value)
    write_message(result_fd, encode(torch, ("exc", index, name, text)))


def serve(torch, fn, request_fd, result_fd, device):
    """Answer check requests until the grader closes our input."""
    while True:
        payload = read_message(request_fd)
        if payload is None:
            return
        index, args, kwargs, timeout = torch.load(io.BytesIO(payload), weights_only=True)
        try:
            outcome = ("out", run_check(fn, args, kwargs, timeout, torch, device))
        except BaseException as e:           # SystemExit from graded code is an error too
            outcome = ("exc", e)
        reply(torch, result_fd, index, outcome)


# ---------------------------------------------------------------------------------------------

def take_protocol_fds(result_fd):
    """Keep the request pipe on a private fd; fd 0 becomes /dev/null (graded code that reads
    stdin gets nothing). Both protocol fds are closed on exec."""
    request_fd = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.set_inheritable(result_fd, False)
    return request_fd


def main(argv):
    result_fd = int(argv[1])
    request_fd = take_protocol_fds(result_fd)
    setup = json.loads(read_message(request_fd))
    tmp = os.path.realpath(os.getcwd())
    deny = _realpath_all(setup["deny"])
    deny_except = _realpath_all(setup["deny_except"])
    cuda = bool(setup["cuda"])
    protections = []
    if sys.platform.startswith("linux"):
        try:
            abi = landlock(tmp, deny, deny_except, cuda)
            protections.append(f"landlock v{abi}" if abi else "no landlock")
        except Exception as e:                   # an old kernel, another libc: the hook remains
            protections.append(f"no landlock ({type(e).__name__})")
        try:
            protections.append("seccomp" if seccomp(allow_processes=cuda) else "no seccomp")
        except Exception as e:
            protections.append(f"no seccomp ({type(e).__name__})")

    import torch
    torch.set_num_threads(1)                     # small tensors; a shared 2-core machine
    device = torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
    tools = []
    try:
        import triton
    except ImportError:
        triton = None                            # no Triton here: plain PyTorch code still runs
    if triton is not None:
        protections += [f"interpreter {name}" for name in set_up_interpreter(setup["interpreter"], tmp)]
        try:
            warm_up(torch, device, tmp)
        except Exception as e:                   # the learner's kernels will say what is wrong
            protections.append(f"no warm-up ({type(e).__name__})")
        if device.type == "cuda":
            tools = [os.path.dirname(os.path.realpath(triton.__file__))]
            try:
                import shutil

                from triton.runtime.build import _find_compiler
                tools.append(os.path.realpath(shutil.which(_find_compiler("c")) or _find_compiler("c")))
            except Exception:
                pass
    install_helpers(setup["helpers"], tmp)
    forget_library_paths(deny, deny_except)
    arm_audit_hook(tmp, deny, deny_except, device.type == "cuda", tools)
    protections.append("audit hook")

    name = setup["slot"]
    try:
        path = os.path.join(tmp, f"{name}.py")
        _write(path, setup["source"])
        fn = getattr(_import_file(path, f"learner_{name}"), name)
    except BaseException as e:
        reply(torch, result_fd, -1, ("exc", e))
        return 0
    write_message(result_fd, encode(torch, ("ready", -1, ", ".join(protections))))
    serve(torch, fn, request_fd, result_fd, device)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

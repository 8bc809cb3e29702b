"""What a Triton kernel compiles to on a GPU, and what will limit it: `int4lab inspect SLOT`.

No GPU is needed. `inspect(slot)` runs the slot's launcher on CPU tensors of a representative
GPU size with every Triton launch *recorded and not executed*, while the launcher believes it
is on a GPU (so it picks its GPU configuration: tile sizes, num_warps, num_stages). Each
recorded launch becomes a compile job: the kernel, its signature built from the arguments the
way a real launch specializes them (pointer types from the tensors' dtypes, ints as i32/i64,
the int 1 as a constant, 16-byte-aligned pointers and multiples of 16 marked divisible by 16),
its constexprs and options. A subprocess with TRITON_INTERPRET=0 compiles the jobs with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", 80|86|89|90, 32))` (the interpreter
flag is read when kernels are decorated, so the compile needs a fresh process), and the cubin
is read with the tools Triton's wheel ships (cuobjdump -res-usage, nvdisasm).

Reported per kernel: registers per thread and spills (cuobjdump's REG, and LOCAL / 4, which is
what CompiledKernel.n_regs / n_spills read from the driver on a GPU), dynamic shared memory
(metadata.shared), occupancy (resident warps per SM over the maximum, limited by registers,
shared memory, resident blocks; limits in ARCHS), the tensor-core opcodes of the whole kernel,
and the main loop of the SASS: the instructions between a backward branch's target and the
branch (the innermost loop holding tensor-core instructions if any, else the largest loop; the
whole kernel when it has no loop), counted by class (CLASSES).

Entry points: inspect(slot) for a slot, inspect_launcher(fn, args) for any Python launcher,
inspect_kernel(kernel, signature, constexprs, ...) for any @triton.jit kernel, main(argv) for
the command `int4lab inspect SLOT | --all [--impl] [--arch] [--json] [--dump]`.

The performance model (an estimate, never a measurement; MODEL below is the same paragraph):

    Per iteration of the main loop of one CTA (the whole kernel when it has no loop), three
    times in SM cycles, each for one resource of one SM: tensor cores = the multiply-
    accumulates of the loop's tensor-core instructions (from their shapes, times the warps
    that issue them) / the SM's dense tensor-core rate for their input type; issue = the
    loop's SASS instructions x warps per CTA / 4 (an SM issues one warp-instruction per cycle
    from each of its 4 schedulers); memory = the global bytes the loop's loads and stores move
    (access width x 32 threads x warps) / the SM's share of DRAM bandwidth per cycle, where
    loads are divided by their reuse across CTAs (bytes all CTAs load over all iterations /
    bytes of the tensors loaded, at least 1: perfect L2 reuse, each byte read from DRAM once;
    a lower bound on traffic) and stores count in full. Rates come from vendor peaks in ARCHS
    divided by SMs and clock (sm_90 assumes an H200 SXM: 1979 dense INT8 TOPS, 989 BF16
    TFLOPS, 4.8 TB/s). The largest time is the bound ("tensor-core", "issue" or "memory").
    fraction_of_peak = the time of the resource that does the kernel's useful work (the tensor
    cores when the loop has tensor-core instructions, else DRAM) / the largest time: 1.0 when
    that resource is the bound, e.g. 0.25 for a GEMM whose loop issues 4x longer than its
    tensor cores compute. Not modelled: latency (occupancy, pipelining), L2 and shared-memory
    bandwidth, bank conflicts, the code outside the loop, tail effects of the grid.
"""
import os
import sys

if __name__ == "__main__":
    # Run as a file (the compile worker, see compile_launches): Python put int4lab/ first on
    # the path, where its module names could shadow others. Drop it before importing more.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect as pyinspect  # `inspect` is this module's main function
import json
import math
import re
import shutil
import subprocess
import tempfile

MODEL = (
    "Estimate, not a measurement. Per iteration of the main loop of one CTA (the whole kernel "
    "when it has no loop), three times in SM cycles: tensor cores = multiply-accumulates of the "
    "loop's tensor-core instructions / the SM's dense tensor-core rate for their input type; "
    "issue = the loop's SASS instructions x warps per CTA / 4 (one warp-instruction per cycle "
    "from each of 4 schedulers); memory = global bytes moved by the loop's loads and stores "
    "(width x 32 threads x warps) / the SM's share of DRAM bandwidth per cycle, loads divided "
    "by their reuse across CTAs (bytes all CTAs load / bytes of the tensors loaded, >= 1: "
    "perfect L2 reuse, a lower bound on traffic), stores in full. Rates are vendor peaks / "
    "(SMs x clock). The largest time is the bound; fraction_of_peak = time of the resource doing "
    "the useful work (tensor cores if the loop has tensor-core instructions, else DRAM) / the "
    "largest time. Ignored: latency and occupancy, L2 and shared-memory bandwidth, code outside "
    "the loop, grid tails.")

# ---- the GPUs ---------------------------------------------------------------------------------
# One GPU per architecture. Vendor peaks are dense (no sparsity), tensor cores accumulating in
# fp32 (int32 for integers). The per-SM rates are multiply-accumulates per SM per cycle; each
# satisfies peak = 2 x sms x clock x rate (tests check it), where clock is the one the vendor's
# peaks are quoted at. DRAM per SM per cycle is derived from dram_tbs in dram_bytes_per_cycle().
# Occupancy limits (CUDA programming guide, compute capabilities): 64K 32-bit registers per SM,
# at most 255 per thread, allocated per warp in units of 256; max resident warps and blocks per
# SM; shared memory per SM and per block, plus 1 KB per block the CUDA runtime reserves.
ARCHS = {
    "sm_80": {"gpu": "A100 SXM 80GB", "sms": 108, "clock_ghz": 1.41, "dram_tbs": 2.0,
              "peak_tops": {"int8": 624, "int4": 1248, "bf16": 312, "tf32": 156},
              "mac_per_sm_cycle": {"int8": 2048, "int4": 4096, "bf16": 1024, "tf32": 512},
              "max_warps": 64, "max_blocks": 32, "smem_per_sm_kb": 164, "smem_per_block_kb": 163},
    "sm_86": {"gpu": "GeForce RTX 3090", "sms": 82, "clock_ghz": 1.695, "dram_tbs": 0.936,
              "peak_tops": {"int8": 284, "int4": 568, "bf16": 71, "tf32": 35.6},
              "mac_per_sm_cycle": {"int8": 1024, "int4": 2048, "bf16": 256, "tf32": 128},
              "max_warps": 48, "max_blocks": 16, "smem_per_sm_kb": 100, "smem_per_block_kb": 99},
    "sm_89": {"gpu": "GeForce RTX 4090", "sms": 128, "clock_ghz": 2.52, "dram_tbs": 1.008,
              "peak_tops": {"int8": 660.6, "int4": 1321.2, "bf16": 165.2, "tf32": 82.6,
                            "fp8": 330.3},
              "mac_per_sm_cycle": {"int8": 1024, "int4": 2048, "bf16": 256, "tf32": 128,
                                   "fp8": 512},
              "max_warps": 48, "max_blocks": 24, "smem_per_sm_kb": 100, "smem_per_block_kb": 99},
    # H200 SXM: the H100 SXM's SMs and tensor cores (same peaks), with 4.8 TB/s instead of 3.35.
    # Its boost clock is 1.98 GHz; the tensor-core peaks are quoted at 1.83 GHz.
    "sm_90": {"gpu": "H200 SXM", "sms": 132, "clock_ghz": 1.83, "dram_tbs": 4.8,
              "peak_tops": {"int8": 1979, "bf16": 989, "tf32": 494.5, "fp8": 1979},
              "mac_per_sm_cycle": {"int8": 4096, "bf16": 2048, "tf32": 1024, "fp8": 4096},
              "max_warps": 64, "max_blocks": 32, "smem_per_sm_kb": 228, "smem_per_block_kb": 227},
}
ARCHS_CC = {arch: int(arch[3:]) for arch in ARCHS}     # GPUTarget's compute capability
REGS_PER_SM = 65536
REG_ALLOC_UNIT = 256          # registers are given to a warp in blocks of 256
RESERVED_SMEM_PER_BLOCK = 1024
ISSUE_PER_SM_CYCLE = 4        # 4 schedulers, one warp-instruction per cycle each


def dram_bytes_per_cycle(arch):
    """The SM's share of DRAM bandwidth, bytes per SM cycle (H200: 4.8e12 / (132 x 1.83e9))."""
    a = ARCHS[arch]
    return a["dram_tbs"] * 1e12 / (a["sms"] * a["clock_ghz"] * 1e9)


# ---- SASS instruction classes -------------------------------------------------------------------
# By the opcode's base (the text before the first "."). A uniform-datapath opcode (UIADD3,
# ULOP3...) takes the class of the opcode without its U. Any *MMA opcode is a tensor-core one.
CLASSES = {
    "int_bit": {"IADD3", "IADD", "IADD32I", "IMAD", "IMUL", "IMUL32I", "LOP3", "LOP", "LOP32I",
                "SHF", "SHL", "SHR", "PRMT", "ISETP", "ICMP", "SEL", "LEA", "IABS", "IMNMX",
                "VIMNMX", "VIMNMX3", "VIADD", "VIADDMNMX", "POPC", "FLO", "BREV", "BMSK", "BFE",
                "BFI", "SGXT", "IDP", "IDP4A", "ISCADD", "XMAD", "PLOP3", "PSETP", "VABSDIFF",
                "VABSDIFF4", "IMMAD"},
    "float": {"FFMA", "FFMA32I", "FADD", "FADD32I", "FMUL", "FMUL32I", "FSETP", "FSET", "FMNMX",
              "FSEL", "FCHK", "FRND", "FSWZADD", "MUFU", "HADD2", "HFMA2", "HMUL2", "HSETP2",
              "HSET2", "HMNMX2", "DADD", "DFMA", "DMUL", "DSETP", "DMNMX", "FMNMX3", "FADD2",
              "FMUL2", "FFMA2"},
    "conversion": {"F2I", "I2F", "F2F", "I2I", "I2IP", "F2FP", "I2FP", "F2IP"},
    "global_mem": {"LDG", "STG", "LDGSTS", "ATOMG", "ATOM", "RED", "REDG", "REDUX", "LD", "ST",
                   "UTMALDG", "UTMASTG", "UTMAREDG", "UTMAPF", "UBLKCP", "UBLKRED", "UBLKPF"},
    "shared_mem": {"LDS", "STS", "LDSM", "STSM", "ATOMS"},
    "barrier": {"BAR", "DEPBAR", "LDGDEPBAR", "WARPSYNC", "WARPGROUP", "MEMBAR", "SYNCS",
                "ARRIVES", "BSSY", "BSYNC", "ERRBAR", "FENCE", "CGAERRBAR"},
}
CLASS_NAMES = ("tensor_core", "int_bit", "float", "conversion", "global_mem", "shared_mem",
               "barrier", "other")
# global accesses whose bytes cannot be read off the instruction (TMA copies: the box size is
# in a descriptor); counted as instructions, not as bytes
_UNSIZED_GLOBAL = {"UTMALDG", "UTMASTG", "UTMAREDG", "UTMAPF", "UBLKCP", "UBLKRED", "UBLKPF"}
_GLOBAL_STORES = {"STG", "ST", "ATOMG", "ATOM", "RED", "REDG"}


def classify(opcode):
    """The class of a SASS opcode such as "IMAD.WIDE.U32" or "IGMMA.64x128x32.S8.S8"."""
    base = opcode.split(".")[0]
    if base.endswith("MMA"):
        return "tensor_core"
    for name in (base, base[1:] if base.startswith("U") else None):
        for cls, members in CLASSES.items():
            if name in members:
                return cls
    return "other"


# ---- slots: what a representative GPU call looks like -------------------------------------------
# Shapes and dtypes are what matter: no kernel runs, so the values are zeros (which every
# validator accepts) and cost nothing to make. Sizes as in the benchmarks: a 4096^3 GEMM,
# (8192, 4096) activations for the quantizers, K = 8192 for the Hadamard quantizer.

def _zeros(*shape, dtype):
    import torch
    return torch.zeros(shape, dtype=dtype)


def _make_int4_matmul():
    import torch
    a = _zeros(4096, 2048, dtype=torch.uint8)             # M = 4096, K = 4096 packed in 2048 B
    b = _zeros(4096, 2048, dtype=torch.uint8)             # N = 4096
    sa, sb = torch.full((4096, 1), 0.01), torch.full((4096, 1), 0.02)
    return (a, sa, b, sb), {"out_dtype": torch.bfloat16}


def _table():
    import torch
    bf16, f32 = torch.bfloat16, torch.float32
    return {
        "vector_add": ("x, y (2^24,) fp32",
                       lambda: ((_zeros(2 ** 24, dtype=f32), _zeros(2 ** 24, dtype=f32)), {})),
        "pack_int4": ("q (8192, 4096) int8",
                      lambda: ((_zeros(8192, 4096, dtype=torch.int8),), {})),
        "unpack_int4": ("p (8192, 2048) uint8 (K = 4096)",
                        lambda: ((_zeros(8192, 2048, dtype=torch.uint8),), {})),
        "quantize_int4": ("x (8192, 4096) bf16, a scale per row",
                          lambda: ((_zeros(8192, 4096, dtype=bf16),), {})),
        "int4_matmul": ("A (4096, 4096) . B (4096, 4096)^T packed INT4, row scales, bf16 out",
                        _make_int4_matmul),
        "hadamard_quantize": ("x (4096, 8192) bf16, block 32, a scale per row",
                              lambda: ((_zeros(4096, 8192, dtype=bf16),), {})),
        # fp16, not bf16: on a CPU the launcher widens bf16 to fp32 before its kernels (the
        # interpreter has no bf16); fp16 moves the same 2 bytes a value that bf16 does on a GPU
        "bit_split": ("g (8192, 4096) fp16", lambda: ((_zeros(8192, 4096, dtype=torch.float16),),
                                                      {"seed": 0})),
        "lss_gather": ("codes (8192, 2048) uint8, keep the non-zero rows",
                       lambda: ((_zeros(8192, 2048, dtype=torch.uint8),), {})),
    }


class InspectUsageError(ValueError):
    """Bad input: an unknown slot or architecture, a learner file that does not exist."""


class KernelCompileError(RuntimeError):
    """Triton (or ptxas) could not compile a kernel; the message is the compiler's."""


def _check_arch(arch):
    if arch not in ARCHS:
        raise InspectUsageError(f"unknown architecture {arch!r}; choose one of "
                                f"{', '.join(ARCHS)}")


# ---- recording what a launcher launches ---------------------------------------------------------

@dataclasses.dataclass
class Launch:
    """One kernel launch as a compile job: everything triton.compile needs, plus sizes."""
    kernel: object                 # the @triton.jit object (JITFunction or InterpretedFunction)
    signature: dict                # runtime parameter -> Triton type ("*u8", "i32", "fp32", ...)
    constexprs: dict               # parameter -> value (constexpr parameters and the int 1)
    divisible: list                # parameters marked tt.divisibility=16
    options: dict                  # num_warps, num_stages, ... as passed to the launch
    grid: tuple = None             # CTAs along x, y, z, when known
    values: dict = dataclasses.field(default_factory=dict)   # runtime ints (loop bounds)
    nbytes: dict = dataclasses.field(default_factory=dict)   # pointer parameter -> tensor bytes

    @property
    def name(self):
        return _python_fn(self.kernel).__name__


def _python_fn(kernel):
    """The plain Python function under a @triton.jit object (and an autotuner around it)."""
    fn = kernel
    while not pyinspect.isfunction(fn) and hasattr(fn, "fn"):
        fn = fn.fn
    return fn


_TORCH_TO_TRITON = {
    "torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16",
    "torch.float64": "fp64", "torch.int8": "i8", "torch.uint8": "u8", "torch.int16": "i16",
    "torch.uint16": "u16", "torch.int32": "i32", "torch.uint32": "u32", "torch.int64": "i64",
    "torch.uint64": "u64", "torch.bool": "u1", "torch.float8_e4m3fn": "fp8e4nv",
    "torch.float8_e5m2": "fp8e5",
}


def _specialize(value, specialize=True, align=True):
    """(type, divisible-by-16) of one runtime argument, as Triton's launcher specializes it.

    Mirrors triton's native_specialize_impl (the same in 3.6 and 3.9): a tensor is a pointer to
    its dtype, divisible when its address is a multiple of 16; bool is u1; an int is i32, i64
    or u64 by range, divisible when a multiple of 16, and the int 1 becomes the constant 1;
    a float is fp32; None is a constant. Returns ("constexpr", value) for constants."""
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        ty = _TORCH_TO_TRITON.get(str(value.dtype))
        if ty is None:
            raise TypeError(f"no Triton type for a tensor of {value.dtype}")
        return "*" + ty, align and value.data_ptr() % 16 == 0
    if value is None:
        return "constexpr", None
    if isinstance(value, bool):
        return "u1", False
    if isinstance(value, int):
        if specialize and value == 1:
            return "constexpr", 1
        ty = ("i32" if -2 ** 31 <= value < 2 ** 31 else
              "i64" if -2 ** 63 <= value < 2 ** 63 else "u64")
        return ty, specialize and value % 16 == 0
    if isinstance(value, float):
        return "fp32", False
    raise TypeError(f"cannot pass a {type(value).__name__} to a kernel")


def _is_constexpr(param):
    ann = param.annotation
    return ann is not pyinspect.Parameter.empty and "constexpr" in str(ann)


def _no_specialize(kernel, key, names):
    """Parameters listed in @triton.jit(do_not_specialize=...), by name or index: kept in the
    `kwargs` of an InterpretedFunction, as an attribute of a JITFunction."""
    jit_kwargs = getattr(kernel, "kwargs", None)
    raw = jit_kwargs.get(key) if isinstance(jit_kwargs, dict) else getattr(kernel, key, None)
    return {names[r] if isinstance(r, int) else r for r in (raw or [])}


def _unwrap_constexpr(value):
    return value.value if type(value).__name__ == "constexpr" and hasattr(value, "value") else value


def launch_from_call(kernel, args, kwargs, grid=None):
    """A Launch from `kernel[grid](*args, **kwargs)`: the arguments a launcher passed."""
    fn = _python_fn(kernel)
    params = pyinspect.signature(fn).parameters
    names = list(params)
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in params}
    bound = pyinspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    no_spec = _no_specialize(kernel, "do_not_specialize", names)
    no_align = _no_specialize(kernel, "do_not_specialize_on_alignment", names)
    signature, constexprs, divisible, values, nbytes = {}, {}, [], {}, {}
    for name, value in bound.arguments.items():
        value = _unwrap_constexpr(value)
        if _is_constexpr(params[name]):
            constexprs[name] = value
            continue
        ty, div = _specialize(value, name not in no_spec, name not in no_align)
        if ty == "constexpr":                        # None, or the int 1
            constexprs[name] = value
            continue
        signature[name] = ty
        if div:
            divisible.append(name)
        if ty.startswith("*"):
            nbytes[name] = value.numel() * value.element_size()
        elif isinstance(value, int):
            values[name] = value
    if callable(grid):
        try:
            grid = grid({**bound.arguments, **options})
        except Exception:  # noqa: BLE001 - a grid function wanting more: grid unknown
            grid = None
    if grid is not None:
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
    return Launch(kernel, signature, constexprs, divisible, options, grid, values, nbytes)


@contextlib.contextmanager
def _as_if_on_gpu():
    """Launchers pick their GPU configuration (`cfg = GPU_CONFIG if a.is_cuda else ...`).

    Inside: every tensor says is_cuda, and torch.empty/empty_like return ones, not whatever
    memory held: a kernel that does not run leaves its outputs as allocated, and a launcher
    that reads one (lss_gather counts the rows kept) must see plausible numbers, not zeros
    that make it skip its next launch."""
    import torch
    had_property = "is_cuda" in torch.Tensor.__dict__
    saved_property = torch.Tensor.__dict__.get("is_cuda")
    empty, empty_like = torch.empty, torch.empty_like

    def ones(fn):
        def make(*args, **kwargs):
            t = fn(*args, **kwargs)
            return t.fill_(1) if t.numel() else t
        return make

    torch.Tensor.is_cuda = property(lambda self: True)
    torch.empty, torch.empty_like = ones(empty), ones(empty_like)
    try:
        yield
    finally:
        torch.empty, torch.empty_like = empty, empty_like
        if had_property:
            torch.Tensor.is_cuda = saved_property
        else:
            del torch.Tensor.is_cuda


@contextlib.contextmanager
def _recording(launches):
    """Triton launches append a Launch to `launches` and return without running.

    A launch goes through the `run` method of the kernel's class: InterpretedFunction under
    TRITON_INTERPRET=1 (a CPU), JITFunction when compiled (a GPU); both are wrapped here and
    restored after."""
    classes = []
    try:
        from triton.runtime.interpreter import InterpretedFunction
        classes.append(InterpretedFunction)
    except ImportError:
        pass
    from triton.runtime.jit import JITFunction
    classes.append(JITFunction)
    saved = {cls: cls.__dict__["run"] for cls in classes if "run" in cls.__dict__}

    def record(self, *args, grid, warmup, **kwargs):
        if not warmup:
            launches.append(launch_from_call(self, args, kwargs, grid))

    for cls in saved:
        cls.run = record
    try:
        yield
    finally:
        for cls, run in saved.items():
            cls.run = run


def record_launches(launcher, args, kwargs=None):
    """Call `launcher(*args, **kwargs)` with Triton launches recorded, not run, as on a GPU.

    Returns (launches, error): a launcher may fail after its first launch, since the outputs of
    the kernels that did not run are only ones; the launches recorded before that are kept and
    the error is returned as a message."""
    launches = []
    error = None
    with _as_if_on_gpu(), _recording(launches):
        try:
            launcher(*args, **(kwargs or {}))
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            error = f"{type(e).__name__}: {e}"
    return launches, error


# ---- compiling in a subprocess ------------------------------------------------------------------

def _encode(value):
    """A constexpr value as JSON (a tl.dtype is sent by name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__name__ == "dtype" and hasattr(value, "name"):
        return {"tl_dtype": value.name}
    raise TypeError(f"cannot send a constexpr of type {type(value).__name__} to the compiler")


def _job(launch, index):
    fn = _python_fn(launch.kernel)
    try:
        path = pyinspect.getsourcefile(fn)
    except TypeError:
        path = None
    return {"id": index, "module": fn.__module__, "qualname": fn.__qualname__, "file": path,
            "signature": launch.signature,
            "constexprs": {k: _encode(v) for k, v in launch.constexprs.items()},
            "divisible": list(launch.divisible),
            "options": {k: v for k, v in launch.options.items()
                        if isinstance(v, (bool, int, float, str))}}


def compile_launches(launches, arch, workdir):
    """Compile every launch for `arch` in one fresh process; a list of result dicts.

    Each result has "ok"; when true: "files" (ptx, sass, ttir paths in workdir), "regs",
    "local_bytes", "shared", "num_warps", "num_stages", "triton"; when false: "error"."""
    request = {"arch": ARCHS_CC[arch], "dir": workdir,
               "sys_path": [p for p in sys.path if p],     # where this process finds modules
               "jobs": [_job(launch, i) for i, launch in enumerate(launches)]}
    request_path = os.path.join(workdir, "request.json")
    with open(request_path, "w") as f:
        json.dump(request, f)
    env = dict(os.environ, TRITON_INTERPRET="0")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")      # Triton 3.9 warns when it is unset
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--compile-worker",
                           request_path], check=False, capture_output=True, text=True, env=env,
                          timeout=900)
    result_path = os.path.join(workdir, "result.json")
    if proc.returncode or not os.path.exists(result_path):
        raise KernelCompileError((proc.stderr or proc.stdout).strip()[-4000:]
                                 or f"the compile process exited with {proc.returncode}")
    with open(result_path) as f:
        return json.load(f)


def _tool(name):
    """cuobjdump / nvdisasm: Triton's wheel ships them next to ptxas."""
    import triton
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    found = bundled if os.path.exists(bundled) else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (neither in Triton's wheel nor on PATH)")
    return found


def _import_module(module_name, path):
    """The kernel's module in the worker: by name when that finds the same file (a package's
    imports then work as usual), else from the file itself."""
    try:
        spec = importlib.util.find_spec(module_name) if module_name != "__main__" else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and (path is None or (spec.origin and os.path.realpath(spec.origin)
                                              == os.path.realpath(path))):
        return importlib.import_module(module_name)
    if path is None:
        raise ImportError(f"cannot find the module {module_name!r}")
    # a kernel defined in a script: import it under another name, so that its
    # `if __name__ == "__main__":` block does not run here
    name = "int4lab_inspected_script" if module_name == "__main__" else module_name
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                     # Triton looks modules up by name
    spec.loader.exec_module(module)
    return module


def _load_kernel(job):
    """The JITFunction a job names (unwrapping an autotuner or heuristics around it)."""
    from triton.runtime.jit import JITFunction
    obj = _import_module(job["module"], job["file"])
    for part in job["qualname"].split("."):
        obj = getattr(obj, part)
    while not isinstance(obj, JITFunction) and hasattr(obj, "fn"):
        obj = obj.fn
    if not isinstance(obj, JITFunction):
        raise TypeError(f"{job['qualname']} is not a @triton.jit kernel in this process")
    return obj


def _compile_one(job, target, workdir):
    import triton
    import triton.language as tl
    from triton.compiler import ASTSource
    kernel = _load_kernel(job)
    names = kernel.arg_names

    def decode(v):
        return tl.dtype(v["tl_dtype"]) if isinstance(v, dict) else v

    signature = {n: job["signature"].get(n, "constexpr") for n in names}
    constexprs = {(names.index(n),): decode(v) for n, v in job["constexprs"].items()}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in job["divisible"]}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                              options=job["options"])
    stem = os.path.join(workdir, f"job{job['id']}")
    files = {}
    for kind in ("ptx", "ttir"):
        files[kind] = f"{stem}.{kind}"
        with open(files[kind], "w") as f:
            f.write(compiled.asm[kind])
    cubin = f"{stem}.cubin"
    with open(cubin, "wb") as f:
        f.write(compiled.asm["cubin"])
    files["sass"] = f"{stem}.sass"
    with open(files["sass"], "w") as f:
        f.write(subprocess.run([_tool("nvdisasm"), "-c", cubin], capture_output=True, text=True,
                               check=True).stdout)
    usage = subprocess.run([_tool("cuobjdump"), "-res-usage", cubin], capture_output=True,
                           text=True, check=True).stdout
    res = dict(re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", usage))
    meta = compiled.metadata
    return {"ok": True, "files": files, "regs": int(res.get("REG", 0)),
            "local_bytes": int(res.get("LOCAL", 0)), "static_shared": int(res.get("SHARED", 0)),
            "shared": int(meta.shared), "num_warps": int(meta.num_warps),
            "num_stages": int(meta.num_stages), "name": meta.name, "triton": triton.__version__}


def _compile_worker(request_path):
    """Runs in the subprocess (TRITON_INTERPRET=0): compile the jobs, write result.json."""
    with open(request_path) as f:
        request = json.load(f)
    # modules the caller could import (a notebook may have added a folder to its path), after
    # this process's own entries
    sys.path += [p for p in request.get("sys_path", []) if p not in sys.path]
    from triton.backends.compiler import GPUTarget
    target = GPUTarget("cuda", request["arch"], 32)
    results = []
    for job in request["jobs"]:
        try:
            results.append(_compile_one(job, target, request["dir"]))
        except Exception as e:  # noqa: BLE001 - the compiler's message goes to the user
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    with open(os.path.join(request["dir"], "result.json"), "w") as f:
        json.dump(results, f)


# ---- reading the SASS ---------------------------------------------------------------------------

_INSTR = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)\b(.*?);")
_LABEL = re.compile(r"^\s*(\.L\w+):")
_TARGET = re.compile(r"`\((\.L\w+)\)")


def parse_sass(text):
    """Instructions of nvdisasm's listing: dicts with addr, opcode, pred, target (a label's
    address for a branch). Instructions predicated on !PT never execute and are left out."""
    instrs, labels, pending = [], {}, []
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        addr = int(m.group(1), 16)
        for name in pending:
            labels[name] = addr
        pending = []
        pred = (m.group(2) or "").strip()
        if pred == "@!PT":
            continue
        target = _TARGET.search(m.group(4))
        instrs.append({"addr": addr, "opcode": m.group(3), "pred": pred,
                       "target": target.group(1) if target else None})
    for ins in instrs:
        if ins["target"] is not None:
            ins["target"] = labels.get(ins["target"])
    return instrs


def _is_exit(ins):
    return ins["opcode"].split(".")[0] == "EXIT" and not ins["pred"]


def find_main_loop(instrs):
    """(first, last) indices of the main loop, or None when the kernel has no loop.

    A loop is a backward branch and the instructions from its target to it. Not loops: a
    branch to itself (the trap after the last EXIT) and a "loop" holding an unconditional EXIT
    (an out-of-line block jumping back into the body). Of the loops, the innermost (shortest)
    that holds tensor-core instructions, else the longest."""
    index = {ins["addr"]: i for i, ins in enumerate(instrs)}
    loops = []
    for i, ins in enumerate(instrs):
        t = ins["target"]
        if ins["opcode"].split(".")[0] != "BRA" or t is None or t >= ins["addr"] or t not in index:
            continue
        first = index[t]
        if any(_is_exit(x) for x in instrs[first:i + 1]):
            continue
        loops.append((first, i))
    if not loops:
        return None
    with_tc = [(a, b) for a, b in loops
               if any(classify(x["opcode"]) == "tensor_core" for x in instrs[a:b + 1])]
    if with_tc:
        return min(with_tc, key=lambda ab: ab[1] - ab[0])
    return max(loops, key=lambda ab: ab[1] - ab[0])


def _kernel_body(instrs):
    """Everything up to the last unconditional EXIT (no trap branch, no padding NOPs)."""
    last = max((i for i, x in enumerate(instrs) if _is_exit(x)), default=len(instrs) - 1)
    return instrs[:last + 1]


def _global_width(opcode):
    """Bytes one thread moves with a global load/store, from its modifiers (None: not sized)."""
    parts = opcode.split(".")
    if parts[0] in _UNSIZED_GLOBAL:
        return None
    mods = set(parts[1:])
    if "128" in mods:
        return 16
    if "64" in mods:
        return 8
    if mods & {"U16", "S16"}:
        return 2
    if mods & {"U8", "S8"}:
        return 1
    return 4


_MMA_SHAPE = re.compile(r"^(16|8)(8)(\d+)$")
_GMMA_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def tensor_core_work(opcode):
    """(multiply-accumulates per warp-instruction, input type) of a tensor-core opcode.

    mma.sync (HMMA.16816..., IMMA.16832...): the warp computes the whole m x n x k tile.
    wgmma (HGMMA.64x128x16..., IGMMA.64x128x32...): the 4 warps of a warpgroup each issue the
    instruction for one m x n x k tile, so a warp's share is a quarter."""
    parts = opcode.split(".")
    base, mods = parts[0], set(parts[1:])
    kind = ("int4" if mods & {"S4", "U4"} else "int8" if base[0] == "I" else
            "fp8" if base[0] == "Q" or mods & {"E4M3", "E5M2"} else
            "tf32" if "TF32" in mods else "fp64" if base[0] == "D" else "bf16")
    for p in parts[1:]:
        m = _GMMA_SHAPE.match(p)
        if m:
            a, b, c = map(int, m.groups())
            return a * b * c / 4, kind
        m = _MMA_SHAPE.match(p)
        if m:
            a, b, c = map(int, m.groups())
            return a * b * c, kind
    return 0, kind


def analyze_sass(text):
    """Tensor-core opcodes of the kernel and the main loop's instruction mix and traffic."""
    instrs = parse_sass(text)
    span = find_main_loop(instrs)
    body = instrs[span[0]:span[1] + 1] if span else _kernel_body(instrs)
    by_class = {name: 0 for name in CLASS_NAMES}
    loads = stores = 0          # bytes per warp
    unsized = 0
    tc_work = []                # (MACs per warp-instruction, kind)
    for ins in body:
        cls = classify(ins["opcode"])
        by_class[cls] += 1
        if cls == "tensor_core":
            tc_work.append(tensor_core_work(ins["opcode"]))
        elif cls == "global_mem":
            width = _global_width(ins["opcode"])
            if width is None:
                unsized += 1
            elif ins["opcode"].split(".")[0] in _GLOBAL_STORES:
                stores += 32 * width
            else:
                loads += 32 * width
    n_tc = by_class["tensor_core"]
    loop = {"found": span is not None, "instructions": len(body), "by_class": by_class,
            "per_tensor_core": round((len(body) - n_tc) / n_tc, 2) if n_tc else None,
            "load_bytes_per_warp": loads, "store_bytes_per_warp": stores}
    if span is None:
        loop["note"] = "no loop: the whole kernel"
    if unsized:
        loop["note_tma"] = f"{unsized} TMA copies: their bytes are not counted"
    tensor_core = sorted({x["opcode"] for x in instrs if classify(x["opcode"]) == "tensor_core"})
    return tensor_core, loop, tc_work


# ---- reading the TTIR: trip count and the tensors the loop loads ---------------------------------

_FOR = re.compile(r"scf\.for\s+%[\w.]+\s*=\s*(%[\w.\-]+)\s+to\s+(%[\w.\-]+)\s+step\s+(%[\w.\-]+)")
_CONST = re.compile(r"(%[\w.\-]+)\s*=\s*arith\.constant\s+(-?\d+)\s*:\s*i(?:32|64)\b")
_DEF = re.compile(r"^\s*(%[\w.\-]+)(?::\d+)?\s*=\s*([\w.]+)\s*(.*)$")
_ITER = re.compile(r"(%[\w.\-]+)\s*=\s*(%[\w.\-]+)")
_FUNC_ARG = re.compile(r"(%[\w.\-]+)\s*:\s*(!tt\.ptr|i\d+|f\d+|bf16)")


def _strip_strings(line):
    return re.sub(r'"[^"]*"', '""', line)


def analyze_ttir(ttir, launch, want_dot):
    """(trips, loaded params) of the TTIR loop matching the SASS main loop, or of the whole
    function when want_dot is None (no SASS loop). trips is None when a bound is unknown."""
    lines = ttir.splitlines()
    func = next((line for line in lines if "tt.func" in line), "")
    runtime_params = list(launch.signature)
    args = list(dict.fromkeys(m.group(1) for m in _FUNC_ARG.finditer(func)))
    # TTIR names arguments after the parameters (%a_ptr); older versions number them (%arg0),
    # in the order of the runtime parameters (constexprs are not arguments)
    names = {a: (a[1:] if a[1:] in launch.signature else
                 runtime_params[i] if i < len(runtime_params) else a[1:])
             for i, a in enumerate(args)}
    consts = {m.group(1): int(m.group(2)) for m in map(_CONST.search, lines) if m}
    defs = {}
    for line in lines:
        m = _DEF.match(line)
        if m:
            defs[m.group(1)] = re.findall(r"%[\w.\-]+", m.group(3))
        if "iter_args(" in line:
            inner = line.split("iter_args(", 1)[1].split(")", 1)[0]
            for a, b in _ITER.findall(inner):
                defs[a] = [b]

    def value(token):
        if token in consts:
            return consts[token]
        return launch.values.get(names.get(token, token[1:]))

    def source_param(token, depth=0):
        while depth < 64:
            if token in names:
                return names[token]
            operands = [t for t in defs.get(token, []) if t not in consts]
            if not operands:
                return None
            token, depth = operands[0], depth + 1
        return None

    # loops: (first line, last line, bounds) by brace depth
    loops, depth, open_at = [], 0, []
    for i, line in enumerate(lines):
        clean = _strip_strings(line)
        m = _FOR.search(clean)
        if m:
            open_at.append((depth, i, m.groups()))
        depth += clean.count("{") - clean.count("}")
        while open_at and depth <= open_at[-1][0] and i > open_at[-1][1]:
            _, start, bounds = open_at.pop()
            loops.append((start, i, bounds))
    if want_dot is None or not loops:
        region, trips = lines, 1
    else:
        innermost = [lp for lp in loops
                     if not any(o[0] > lp[0] and o[1] < lp[1] for o in loops)]
        if want_dot:
            innermost = [lp for lp in innermost
                         if any("tt.dot" in line for line in lines[lp[0]:lp[1]])] or innermost
        start, end, (lb, ub, st) = max(innermost, key=lambda lp: lp[1] - lp[0])
        region = lines[start:end + 1]
        lo, hi, step = value(lb), value(ub), value(st)
        trips = max(0, -(-(hi - lo) // step)) if None not in (lo, hi, step) and step > 0 else None
    loaded = set()
    for line in region:
        m = re.search(r"tt\.load\s+(%[\w.\-]+)", line)
        if m:
            loaded.add(source_param(m.group(1)))
    return trips, loaded


# ---- occupancy and the model --------------------------------------------------------------------

def occupancy(arch, regs, smem_bytes, num_warps, static_smem_bytes=0):
    """(resident warps per SM / max warps, details), limited by registers, shared memory,
    resident blocks and resident warps. A block's shared memory is Triton's dynamic part, the
    cubin's static part (cuobjdump's SHARED: 1 KB in the Hopper GEMMs here) and the 1 KB the
    CUDA runtime reserves per block."""
    a = ARCHS[arch]
    regs_per_warp = math.ceil(max(regs, 1) * 32 / REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    smem_bytes += static_smem_bytes
    smem = smem_bytes + RESERVED_SMEM_PER_BLOCK
    limits = {
        "registers": (REGS_PER_SM // regs_per_warp) // num_warps,
        "shared_memory": (a["smem_per_sm_kb"] * 1024 // smem
                          if smem_bytes <= a["smem_per_block_kb"] * 1024 else 0),
        "blocks": a["max_blocks"],
        "warps": a["max_warps"] // num_warps,
    }
    blocks = min(limits.values())
    limited_by = min(limits, key=lambda k: limits[k])
    detail = {"blocks_per_sm": blocks, "warps_per_sm": blocks * num_warps,
              "max_warps": a["max_warps"], "limited_by": limited_by, "blocks_by": limits,
              "regs_per_warp": regs_per_warp, "smem_per_block": smem}
    if limits["shared_memory"] == 0:
        detail["note"] = (f"{smem_bytes} B of shared memory: more than a block may have "
                          f"({a['smem_per_block_kb']} KB); the launch would fail")
    return round(blocks * num_warps / a["max_warps"], 4), detail


def _fmt_peak(arch, kind):
    a = ARCHS[arch]
    unit = "TOPS" if kind.startswith("int") else "TFLOPS"
    return f"{kind} tensor-core peak ({a['gpu']}: {a['peak_tops'][kind]:g} {unit} dense)"


def predict(arch, loop, tc_work, num_warps, reuse):
    """The roofline-style estimate for one loop iteration of one CTA (see MODEL)."""
    a = ARCHS[arch]
    notes = []
    tc = 0.0
    kinds = set()
    for macs, kind in tc_work:
        rate = a["mac_per_sm_cycle"].get(kind)
        if rate is None:
            notes.append(f"no {kind} tensor-core rate for the {a['gpu']} in ARCHS: "
                         "those instructions are not counted")
            continue
        tc += macs * num_warps / rate
        kinds.add(kind)
    issue = loop["instructions"] * num_warps / ISSUE_PER_SM_CYCLE
    dram = (loop["load_bytes_per_warp"] * num_warps / reuse
            + loop["store_bytes_per_warp"] * num_warps)
    mem = dram / dram_bytes_per_cycle(arch)
    cycles = {"tensor-core": tc, "issue": issue, "memory": mem}
    bound = max(cycles, key=cycles.get)
    worst = cycles[bound]
    if tc > 0:
        fastest = max(kinds, key=lambda k: a["mac_per_sm_cycle"][k])
        work, of = "tensor-core", _fmt_peak(arch, fastest)
    elif mem > 0:
        work, of = "memory", f"DRAM bandwidth ({a['gpu']}: {a['dram_tbs']:g} TB/s)"
    else:
        work, of = "issue", "instruction issue (4 warp-instructions per SM cycle)"
    return {"bound": bound, "fraction_of_peak": round(cycles[work] / worst, 3) if worst else None,
            "of": of, "estimate": True,
            "cycles_per_iteration": {k: round(v, 1) for k, v in cycles.items()},
            "dram_bytes_per_iteration": round(dram), "reuse": round(reuse, 2),
            "gpu": a["gpu"], "notes": notes, "model": MODEL}


# ---- putting it together ------------------------------------------------------------------------

def _report(launch, compiled, arch, dump_dir, stem):
    """The dict of one compiled kernel (see inspect)."""
    with open(compiled["files"]["sass"]) as f:
        sass = f.read()
    with open(compiled["files"]["ttir"]) as f:
        ttir = f.read()
    tensor_core, loop, tc_work = analyze_sass(sass)
    num_warps = compiled["num_warps"]
    want_dot = (loop["by_class"]["tensor_core"] > 0) if loop["found"] else None
    trips, loaded = analyze_ttir(ttir, launch, want_dot)
    loop["trips"] = trips
    # reuse: bytes all CTAs load from the loaded tensors / the bytes of those tensors
    reuse, note = 1.0, None
    ctas = math.prod(launch.grid) if launch.grid else None
    if not loop["load_bytes_per_warp"]:
        pass
    elif None in loaded or not loaded:
        note = "could not tell which tensors the loop loads: loads counted in full"
    elif ctas is None or trips is None or not all(p in launch.nbytes for p in loaded):
        note = "grid, trip count or tensor sizes unknown: loads counted in full (no reuse)"
    else:
        unique = sum(launch.nbytes[p] for p in loaded)
        issued = loop["load_bytes_per_warp"] * num_warps * trips * ctas
        reuse = max(1.0, issued / unique) if unique else 1.0
    occ, occ_detail = occupancy(arch, compiled["regs"], compiled["shared"], num_warps,
                                compiled["static_shared"])
    predicted = predict(arch, loop, tc_work, num_warps, reuse)
    if note:
        predicted["notes"].append(note)
    result = {
        "kernel": compiled["name"], "arch": arch, "triton": compiled["triton"],
        "num_warps": num_warps, "num_stages": compiled["num_stages"],
        "grid": list(launch.grid) if launch.grid else None,
        "signature": launch.signature,
        "constexprs": {k: _encode(v) for k, v in launch.constexprs.items()},
        "regs": compiled["regs"], "spills": compiled["local_bytes"] // 4,
        "local_bytes": compiled["local_bytes"], "smem_bytes": compiled["shared"],
        "static_smem_bytes": compiled["static_shared"],
        "occupancy": occ, "occupancy_detail": occ_detail,
        "tensor_core": tensor_core, "loop": loop, "predicted": predicted,
    }
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        result["files"] = {}
        for kind in ("ptx", "sass"):
            path = os.path.join(dump_dir, f"{stem}.{arch}.{kind}")
            shutil.copyfile(compiled["files"][kind], path)
            result["files"][kind] = path
    return result


def inspect_launches(launches, arch="sm_90", dump_dir=None):
    """Compile recorded launches for `arch` and report on each distinct one (a list of dicts).

    Raises KernelCompileError with the compiler's message when a kernel does not compile."""
    _check_arch(arch)
    distinct, seen = [], set()
    for launch in launches:
        key = json.dumps(_job(launch, 0), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            distinct.append(launch)
    with tempfile.TemporaryDirectory(prefix="int4lab-inspect-") as workdir:
        compiled = compile_launches(distinct, arch, workdir)
        failed = [(launch, c) for launch, c in zip(distinct, compiled) if not c["ok"]]
        if failed:
            launch, c = failed[0]
            raise KernelCompileError(f"{launch.name} does not compile for {arch}: {c['error']}")
        results, stems = [], {}
        for launch, c in zip(distinct, compiled):
            stems[c["name"]] = stems.get(c["name"], 0) + 1
            stem = c["name"] + ("" if stems[c["name"]] == 1 else f"-{stems[c['name']]}")
            results.append(_report(launch, c, arch, dump_dir, stem))
    return results


def inspect_kernel(fn, signature, constexprs=None, num_warps=4, num_stages=3, arch="sm_90", *,
                   divisible=None, grid=None, values=None, nbytes=None, dump_dir=None):
    """Inspect any @triton.jit kernel for a signature you give.

    signature: runtime parameter -> Triton type ("*i8", "i32", "fp32"...); constexprs:
    parameter -> value. divisible: parameters marked divisible by 16 (default: every pointer,
    as a launch with aligned tensors would). grid, values (runtime ints, for the loop's trip
    count) and nbytes (pointer parameter -> tensor bytes) let the model count reuse across
    CTAs; without them every load is counted as DRAM traffic."""
    if divisible is None:        # as a launch: aligned pointers, ints that are multiples of 16
        divisible = [n for n, t in signature.items()
                     if t.startswith("*") or (values or {}).get(n, 1) % 16 == 0]
    launch = Launch(fn, dict(signature), dict(constexprs or {}), list(divisible),
                    {"num_warps": num_warps, "num_stages": num_stages},
                    tuple(grid) + (1,) * (3 - len(grid)) if grid else None,
                    dict(values or {}), dict(nbytes or {}))
    return inspect_launches([launch], arch, dump_dir)[0]


def inspect_launcher(launcher, args, kwargs=None, arch="sm_90", dump_dir=None):
    """Inspect the kernels a Python launcher launches for these arguments (CPU tensors).

    Returns {"kernels": [...], "notes": [...]} like inspect()."""
    _check_arch(arch)
    launches, error = record_launches(launcher, args, kwargs)
    if not launches:
        raise RuntimeError("the launcher launched no Triton kernel"
                           + (f" (it stopped with {error})" if error else ""))
    notes = []
    if error:
        notes.append(f"the launcher stopped after {len(launches)} launch(es), since the kernels "
                     f"did not run: {error}")
    return {"kernels": inspect_launches(launches, arch, dump_dir), "notes": notes}


def _launcher(slot, impl):
    from int4lab.exercises import workspace
    from int4lab.runtime import is_student_copy
    if impl == "triton":
        if slot.triton is None:
            raise InspectUsageError(f"slot {slot.name!r} has no Triton kernel")
        if is_student_copy():
            raise InspectUsageError("this is a student copy, without the library's kernels: "
                                    "inspect yours with --impl learner")
        module, name = slot.triton.split(":")
        return getattr(importlib.import_module(module), name)
    if impl == "learner":
        path = workspace.workspace_file(slot.name)
        if not path.exists():
            raise InspectUsageError(f"no learner file for {slot.name}: {path} does not exist "
                                    f"(write it with a %%exercise {slot.name} cell)")
        try:
            module = workspace.import_file(path, f"int4lab_workspace_{slot.name}")
        except Exception as e:         # the learner's file: say why, without a traceback
            raise RuntimeError(f"could not import {path}: {type(e).__name__}: {e}") from e
        if not hasattr(module, slot.name):
            raise InspectUsageError(f"{path} defines no function {slot.name}")
        return getattr(module, slot.name)
    raise InspectUsageError(f"unknown implementation {impl!r}; choose triton or learner")


def inspect(slot: str, impl: str = "triton", arch: str = "sm_90", json_path: str | None = None,
            dump_dir: str | None = None) -> dict:
    """Compile the kernel(s) slot `slot`'s launcher launches, for `arch`, as on a GPU.

    impl: "triton" (the library's kernel) or "learner" ($INT4LAB_HOME/workspace/SLOT.py).
    Returns {"slot", "impl", "arch", "size", "notes", "kernels": [{"kernel", "arch", "triton",
    "regs", "spills", "smem_bytes", "occupancy", "tensor_core", "loop", "predicted", ...}]};
    json_path writes it as JSON, dump_dir each kernel's PTX and SASS (<kernel>.<arch>.ptx/.sass).
    Raises InspectUsageError for bad input, KernelCompileError when a kernel does not compile.
    """
    from int4lab.exercises import registry
    _check_arch(arch)
    try:
        s = registry.get(slot)
    except KeyError as e:
        raise InspectUsageError(e.args[0]) from None
    launcher = _launcher(s, impl)
    size, args, kwargs = representative_inputs(slot)
    result = inspect_launcher(launcher, args, kwargs, arch, dump_dir)
    for k in result["kernels"]:
        k["slot"] = slot
    result = {"slot": slot, "impl": impl, "arch": arch, "size": size, **result}
    if json_path:
        _write_json(result, json_path)
    return result


def _write_json(data, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def representative_inputs(slot):
    """(description, args, kwargs): the GPU-size inputs `inspect` launches slot `slot` with."""
    table = _table()
    if slot not in table:
        raise InspectUsageError(f"no representative size for slot {slot!r}: add it to "
                                "int4lab.perf.kernel_inspect._table()")
    size, make = table[slot]
    args, kwargs = make()
    return size, args, kwargs


def triton_slots():
    """The slots that have a library Triton kernel, in lesson order."""
    from int4lab.exercises import registry
    registry._load_slots()
    return sorted((name for name, s in registry.SLOTS.items() if s.triton),
                  key=lambda name: (registry.SLOTS[name].lesson, name))


# ---- the command --------------------------------------------------------------------------------

def format_kernel(k):
    """A readable block of lines for one kernel's dict."""
    occ = k["occupancy_detail"]
    loop, p = k["loop"], k["predicted"]
    grid = k.get("grid") or ["?"]
    while len(grid) > 1 and grid[-1] == 1:
        grid = grid[:-1]
    grid = "x".join(str(g) for g in grid)
    slot = f"{k['slot']} / " if k.get("slot") else ""
    lines = [
        (f"{slot}{k['kernel']}   {k['arch']} ({p['gpu']})   Triton {k['triton']}   "
         f"grid {grid}, {k['num_warps']} warps, {k['num_stages']} stages"),
        (f"  registers {k['regs']}/thread   spills {k['spills']}   shared memory "
         f"{k['smem_bytes'] / 1024:.1f} KiB   occupancy {100 * k['occupancy']:.1f}% "
         f"({occ['blocks_per_sm']} block(s) of {k['num_warps']} warps per SM, limited by "
         f"{occ['limited_by'].replace('_', ' ')})"),
        f"  tensor-core ops: {', '.join(k['tensor_core']) or 'none'}",
    ]
    counts = ", ".join(f"{c} {n}" for c, n in loop["by_class"].items() if n)
    where = ("main loop" + (f" ({loop['trips']} trips)" if loop.get("trips") else "")
             if loop["found"] else "no loop, whole kernel")
    lines.append(f"  {where}: {loop['instructions']} instructions: {counts}")
    if loop["per_tensor_core"] is not None:
        lines.append(f"    {loop['per_tensor_core']:g} other instructions per tensor-core "
                     "instruction")
    c = p["cycles_per_iteration"]
    frac = "?" if p["fraction_of_peak"] is None else f"{100 * p['fraction_of_peak']:.0f}%"
    lines.append(f"  estimate: {p['bound']}-bound, {frac} of the {p['of']}")
    lines.append(f"    cycles per iteration: tensor cores {c['tensor-core']:g}, issue "
                 f"{c['issue']:g}, memory {c['memory']:g} (load reuse x{p['reuse']:g})")
    lines += [f"    note: {n}" for n in p["notes"]]
    return "\n".join(lines)


def format_report(result):
    head = []
    if result.get("slot"):
        head.append(f"{result['slot']} ({result['impl']}), as launched for {result['size']}")
    head += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(head + [format_kernel(k) for k in result["kernels"]])


def _parser():
    import argparse
    p = argparse.ArgumentParser(
        prog="int4lab inspect",
        description="Compile a slot's Triton kernel(s) for a GPU architecture without a GPU; "
                    "report registers, spills, shared memory, occupancy, the tensor-core "
                    "instructions, the main loop's instruction mix and an estimated bound.")
    p.add_argument("slot", nargs="?", help="the slot to inspect (e.g. int4_matmul)")
    p.add_argument("--all", action="store_true", help="every slot that has a Triton kernel")
    p.add_argument("--impl", default=None,
                   help="triton (the library's kernel, default) or learner (your workspace file)")
    p.add_argument("--arch", default="sm_90", help=f"one of {', '.join(ARCHS)} (default sm_90)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--dump", metavar="DIR", help="write each kernel's PTX and SASS here")
    p.add_argument("--layer", metavar="RECIPE",
                   help="count the launches, syncs and passes of one Int4Linear step instead")
    p.add_argument("--tokens", type=int, help="with --layer: rows of x")
    p.add_argument("--d", type=int, help="with --layer: the layer's width")
    return p


def main(argv=None):
    """`int4lab inspect ...`: 0 on success, 2 for bad input, 1 when a kernel does not compile."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.layer is not None:
        from int4lab.perf.layer_counts import main_from_args
        return main_from_args(args)
    impl = args.impl or "triton"
    if args.arch not in ARCHS:
        print(f"int4lab inspect: unknown architecture {args.arch!r}; choose one of "
              f"{', '.join(ARCHS)}")
        return 2
    if impl not in ("triton", "learner"):
        print(f"int4lab inspect: unknown implementation {impl!r}; choose triton or learner")
        return 2
    if args.all == bool(args.slot):
        print("int4lab inspect: name one SLOT or --all")
        return 2
    slots = triton_slots() if args.all else [args.slot]
    kernels, status = [], 0
    for slot in slots:
        try:   # one slot: its JSON is inspect()'s dict; --all writes every kernel below
            result = inspect(slot, impl=impl, arch=args.arch, dump_dir=args.dump,
                             json_path=None if args.all else args.json)
        except InspectUsageError as e:
            print(f"int4lab inspect: {e}")
            if not args.all:
                return 2
            continue                       # --all --impl learner: a slot not written yet
        except (KernelCompileError, RuntimeError) as e:
            print(f"int4lab inspect: {slot}: {e}")
            status = 1
            continue
        print(format_report(result))
        print()
        kernels += result["kernels"]
    if not kernels and status == 0:
        return 2
    if args.all and args.json:
        _write_json({"arch": args.arch, "impl": impl, "slots": slots, "model": MODEL,
                     "kernels": kernels}, args.json)
    if args.json and kernels:
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compile-worker":
        _compile_worker(sys.argv[2])
    else:
        sys.exit(main())

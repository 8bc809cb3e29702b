"""Count what one Int4Linear training step asks of the device: launches, host syncs, full passes.

Timings need a GPU; counts do not. `count_layer` runs ONE Int4Linear(d, d, recipe) forward +
backward (x of shape (tokens, d) with requires_grad, then y.backward(gy) with a random gy made
beforehand), after one untimed warm-up step, so one-time work (LSQ initialisation, Triton's
compile cache, the registry's lookups) is not counted. LSQ recipes also re-initialise their
scale from the data on each of the first lsq_warmup_steps = 10 steps of a run; by default
(steady=True) the counted step is one after that: the quantizers' step counts are moved past
their warm-up after the untimed step (steady=False counts the second step of a run instead).
It counts three things, the same way on any machine:

- launches: the device operations the step issues, as the sum of two parts.
  detail["aten"] counts every aten operator that reaches PyTorch's dispatcher, seen by a
  TorchDispatchMode (torch.utils._python_dispatch), except the ops in METADATA_OPS: views and
  reshapes (view, reshape, as_strided, t, transpose, expand, slice, select, ...), detach/alias,
  and bare allocations (empty, empty_strided, empty_like, new_empty, resize_, set_), which only
  write tensor metadata and launch nothing on a GPU. Everything else counts once per call,
  including fills (zeros, fill_), copies and the device-to-host read behind .item(). Composite
  ops are seen as the dispatcher sees them after autograd (F.linear as one addmm), which is how
  eager PyTorch launches them.
  detail["triton"] counts every Triton kernel launch (`kernel[grid](...)`): for the duration of
  the count, the `run` method of Triton's kernel classes is wrapped (JITFunction on a GPU,
  triton.runtime.interpreter.InterpretedFunction under TRITON_INTERPRET=1) and restored after.
  Launches with warmup=True (compile only) do not count. The aten ops Triton's interpreter runs
  to stage a kernel's arguments on the host are not counted: they do not exist on a GPU.
- host_syncs: the points where the host must wait for device data, through the same dispatch
  mode (SYNC_OPS): aten `_local_scalar_dense` (what .item(), int(t), float(t) and bool(t)
  reach), `is_nonzero` and `equal` where they reach the dispatcher themselves, and the ops whose
  output size depends on the data (nonzero, masked_select, unique and its variants,
  repeat_interleave without output_size, bincount, indexing or index_put with a boolean mask);
  on a GPU also every copy to the CPU of a device tensor (aten _to_copy / copy_ to the cpu
  device: .cpu(), .tolist(), .numpy()). detail["host_syncs_by_op"] counts them per op.
- full_passes: the operator calls (aten ops counted as launches, and Triton launches) that read
  or write at least one tensor with numel >= FULL, where FULL = min(tokens*d, d*d) // 4: a
  quarter of the smaller full operand of the layer. So the packed INT4 codes of X or W (numel/2)
  count, as does any float or int8 copy of an operand, of Y or of a gradient; a per-row scale,
  a norm vector or an index vector (tokens or d elements) does not. Each such call is one trip
  of a whole operand through memory, the thing a fused kernel exists to avoid.
  detail["passes_by_op"] lists the top ops.

Why the CPU counts are proxies for the GPU's. The CPU runs the same Python code and issues the
same dispatcher calls and Triton launches as a GPU would (Triton through its interpreter), so
launches and full passes count the same ops; only their cost is unknown (never show CPU times
as speed). A CPU never waits for itself, so on a CPU run every data read above counts as the
sync it would be on a GPU: `_local_scalar_dense`, data-dependent shapes, and (not visible to
the dispatcher on CPU tensors, so wrapped in Python for the count) Tensor.tolist(), .numpy()
and .cpu(). This is an upper bound: a read of a tensor that stays on the host on a GPU too
(e.g. a seed drawn from torch's CPU generator) is no sync there; on a GPU run only reads of
non-CPU tensors count. Two more differences: a CPU run uses fp32 and a GPU run bf16, so the GPU
has a few more dtype conversions (`.float()` of an fp32 tensor launches nothing); and the
default mode "auto" runs the spec on a CPU but the library's Triton kernels on a GPU, so count
with impl="triton" on the CPU to see the GPU's default path. Host work is left out: ops run inside
int4lab.runtime.host_work() (the layers' seeds, drawn from torch's CPU generator) stay on the host
on every machine, so on a GPU they launch nothing and wait for nothing; they are counted apart
in detail["host_work_ops"], and an op there that touches a device tensor is an error.
detail["host_syncs_by_site"] and
detail["passes_by_site"] name the int4lab function that issued each (innermost int4lab frame
<- its int4lab caller), so a count can be traced to its line.

`Counter` is the counting context manager (`with Counter(full_numel) as c: ...; c.counts()`),
usable on any code; `main_from_args` is the command-line report.
"""
import collections
import contextlib
import json
import os
import sys
import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from int4lab import runtime
from int4lab.exercises import registry

# aten ops (overload packet names) that only write metadata or allocate: not launches
METADATA_OPS = (
    "view", "_unsafe_view", "_reshape_alias", "reshape", "view_as", "as_strided", "as_strided_",
    "t", "t_", "transpose", "transpose_", "permute", "expand", "expand_as", "squeeze", "squeeze_",
    "unsqueeze", "unsqueeze_", "slice", "select", "narrow", "split", "split_with_sizes", "unbind",
    "chunk", "diagonal", "unfold", "movedim", "numpy_T", "mT", "detach", "detach_", "alias",
    "lift_fresh", "_conj", "_neg_view", "resolve_conj", "resolve_neg", "view_as_real",
    "view_as_complex", "empty", "empty_strided", "empty_like", "empty_permuted", "new_empty",
    "new_empty_strided", "resize_", "set_", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "size", "stride", "dim", "is_same_size",
    "_has_compatible_shallow_copy_type",
)

# aten ops that make the host wait for the device (always, or as noted in _sync_reason)
SYNC_OPS = (
    "_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select", "unique",
    "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "repeat_interleave", "bincount", "index", "index_put", "index_put_", "_index_put_impl_",
    "_to_copy", "copy_",
)

# Tensor methods that read device data into host memory without reaching the dispatcher when
# the tensor is already on the CPU: counted in Python on a CPU run (on a GPU, _to_copy sees them)
HOST_READ_METHODS = ("tolist", "numpy", "cpu")

_MODULE = __name__


def full_numel(tokens, d):
    """FULL = min(tokens*d, d*d) // 4: the smallest tensor that counts as a full-operand pass."""
    return max(1, min(tokens * d, d * d) // 4)


def _is_cpu(t):
    return t.device.type == "cpu"


def _bool_index(indices):
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _site():
    """`module.function` of the innermost int4lab frame, with its int4lab caller if any."""
    names, f = [], sys._getframe(2)
    while f is not None and len(names) < 2:
        mod = f.f_globals.get("__name__", "")
        if mod != _MODULE and mod.startswith("int4lab"):
            names.append(f"{mod}.{f.f_code.co_name}")
        f = f.f_back
    if not names:          # code outside the package (a test, a notebook): its innermost frame
        f = sys._getframe(2)
        while f is not None:
            mod = f.f_globals.get("__name__", "")
            if mod != _MODULE and not mod.startswith(("torch", "triton", "contextlib")):
                return f"{mod}.{f.f_code.co_name}"
            f = f.f_back
        return "?"
    return " <- ".join(names)


class _Mode(TorchDispatchMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.counter._in_triton:
            self.counter._aten(func, args, kwargs, out)
        return out


class Counter:
    """Count launches, host syncs and full passes of the code run inside the block.

        with Counter(full_numel(tokens, d)) as c:
            y = layer(x); y.backward(gy)
        c.counts()   # {"launches", "host_syncs", "full_passes"}
        c.detail()   # the parts and the per-op / per-site counts

    full: tensors with at least this many elements make an op a full pass (see the module
    docstring). proxy: count data reads as host syncs even on CPU tensors (default: True on a
    CPU run, where they stand for the syncs a GPU run would have). Not re-entrant.
    """

    def __init__(self, full, proxy=None):
        self.full = int(full)
        self.proxy = (not runtime.HAS_CUDA) if proxy is None else bool(proxy)
        self.aten = collections.Counter()
        self.triton = collections.Counter()
        self.syncs = collections.Counter()
        self.sync_sites = collections.Counter()
        self.passes = collections.Counter()
        self.pass_sites = collections.Counter()
        self.metadata = collections.Counter()
        self.host = collections.Counter()
        self.slot_calls = collections.defaultdict(collections.Counter)
        self._in_triton = 0
        self._lock = threading.Lock()
        self._restore = []
        self._mode = None

    # ---- recording ----

    def _record(self, name, tensors):
        if any(t.numel() >= self.full for t in tensors):
            self.passes[name] += 1
            self.pass_sites[_site()] += 1

    def _sync(self, name):
        self.syncs[name] += 1
        self.sync_sites[_site()] += 1

    def _sync_reason(self, op, args, kwargs):
        """Whether this aten call makes the host wait (None if not), as the name to count."""
        if op not in SYNC_OPS:
            return None
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        device_read = first is not None and (self.proxy or not _is_cpu(first))
        if op in ("_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select",
                  "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive",
                  "unique_dim_consecutive"):
            return op if device_read else None
        if op == "repeat_interleave":   # .Tensor(repeats): the output size is sum(repeats)
            return op if device_read and kwargs.get("output_size") is None else None
        if op == "bincount":
            return op if device_read else None
        if op == "index":
            return "index (bool mask)" if device_read and _bool_index(args[1] if len(args) > 1 else
                                                                       kwargs.get("indices")) else None
        if op in ("index_put", "index_put_", "_index_put_impl_"):
            return f"{op} (bool mask)" if device_read and _bool_index(args[1] if len(args) > 1 else
                                                                       kwargs.get("indices")) else None
        if op == "_to_copy":        # .cpu() / .to("cpu") of a device tensor
            dev = kwargs.get("device")
            return "_to_copy (to cpu)" if (first is not None and not _is_cpu(first) and dev is not None
                                           and torch.device(dev).type == "cpu") else None
        if op == "copy_":           # cpu_tensor.copy_(device_tensor)
            src = args[1] if len(args) > 1 else kwargs.get("src")
            return "copy_ (to cpu)" if (first is not None and isinstance(src, torch.Tensor)
                                        and _is_cpu(first) and not _is_cpu(src)) else None
        return None

    def _aten(self, func, args, kwargs, out):
        op = func.overloadpacket.__name__
        if op in METADATA_OPS:
            self.metadata[op] += 1
            return
        if runtime.in_host_work():
            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            on_device = [t.device for t in tensors if not _is_cpu(t)]
            if on_device:
                raise RuntimeError(f"int4lab: {op} inside runtime.host_work() touches a tensor on "
                                   f"{on_device[0]}: host work must stay on the CPU")
            with self._lock:
                self.host[op] += 1
            return
        with self._lock:
            self.aten[op] += 1
            reason = self._sync_reason(op, args, kwargs)
            if reason:
                self._sync(reason)
            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self._record(op, tensors)

    def _launch(self, kernel, args, kwargs):
        name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", "kernel")
        with self._lock:
            self.triton[name] += 1
            tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
            self._record(f"triton:{name}", tensors)

    # ---- patching ----

    def _patch_triton(self):
        if not runtime.HAS_TRITON:
            return
        classes = []
        try:
            from triton.runtime.jit import JITFunction
            classes.append(JITFunction)
        except ImportError:
            pass
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:
            pass
        counter = self
        for cls in classes:
            original = cls.__dict__.get("run")
            if original is None:
                continue

            def run(kernel, *args, _original=original, **kwargs):
                if kwargs.get("warmup"):
                    return _original(kernel, *args, **kwargs)
                launch_kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
                counter._launch(kernel, args, launch_kwargs)
                counter._in_triton += 1
                try:
                    return _original(kernel, *args, **kwargs)
                finally:
                    counter._in_triton -= 1

            cls.run = run
            self._restore.append((cls, "run", original))

    def _patch_host_reads(self):
        if not self.proxy:
            return
        counter = self
        for name in HOST_READ_METHODS:
            original = torch.Tensor.__dict__.get(name)
            bound = getattr(torch.Tensor, name)

            def method(t, *args, _bound=bound, _name=name, **kwargs):
                if not counter._in_triton and counter._mode is not None and not runtime.in_host_work():
                    with counter._lock:
                        counter._sync(f"Tensor.{_name}")      # a host read, not a launch
                return _bound(t, *args, **kwargs)

            setattr(torch.Tensor, name, method)
            self._restore.append((torch.Tensor, name, original))

    def _patch_registry(self):
        original = registry.resolve
        counter = self

        def resolve(name, which=None):
            impl, fn = original(name, which)
            if which is None:            # dispatch's own call (int4lab.which passes no mode either)
                counter.slot_calls[name][impl] += 1
            return impl, fn

        registry.resolve = resolve
        self._restore.append((registry, "resolve", original))

    def __enter__(self):
        self._patch_triton()
        self._patch_host_reads()
        self._patch_registry()
        self._mode = _Mode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._mode.__exit__(*exc)
        finally:
            self._mode = None
            for owner, name, original in reversed(self._restore):
                if original is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            self._restore.clear()
        return False

    # ---- results ----

    def counts(self):
        return {"launches": sum(self.aten.values()) + sum(self.triton.values()),
                "host_syncs": sum(self.syncs.values()),
                "full_passes": sum(self.passes.values())}

    def detail(self, top=12):
        def ranked(c, n=top):
            return dict(sorted(((k, v) for k, v in c.items() if v), key=lambda kv: (-kv[1], kv[0]))[:n])
        return {"aten": sum(self.aten.values()), "triton": sum(self.triton.values()),
                "full_numel": self.full, "proxy_syncs": self.proxy,
                "aten_by_op": ranked(self.aten, 10 ** 6),
                "triton_by_kernel": ranked(self.triton, 10 ** 6),
                "host_syncs_by_op": ranked(self.syncs, 10 ** 6),
                "host_syncs_by_site": ranked(self.sync_sites, 10 ** 6),
                "passes_by_op": ranked(self.passes),
                "passes_by_site": ranked(self.pass_sites),
                "metadata_ops_skipped": ranked(self.metadata, 10 ** 6),
                "host_work_ops": ranked(self.host, 10 ** 6),
                "slot_calls": {s: dict(c) for s, c in sorted(self.slot_calls.items())}}


@contextlib.contextmanager
def _mode_for_step(impl):
    """Run under `impl` (or the current mode). A CUDA backward runs on autograd's device thread,
    which does not see a with-block's thread-local mode, so the global mode is set too."""
    which = impl or registry.mode()
    with registry.use(which):
        saved = registry._global_mode[0]
        registry._global_mode[0] = which
        try:
            yield which
        finally:
            registry._global_mode[0] = saved


def _default_dtype(device):
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def count_layer(recipe="int4_hq_lss", tokens=4096, d=1024, impl=None, device=None, dtype=None,
                warmup=1, steady=True):
    """Count one Int4Linear(d, d, recipe) forward + backward on (tokens, d): see the module docstring.

    impl: None (the current int4lab.use mode) or "spec" / "triton" / "learner" / "auto".
    device: default int4lab.DEVICE; dtype: default bf16 on a GPU, fp32 on a CPU.
    warmup: untimed steps before the counted one (LSQ recipes re-initialise their scale on each
    of their first lsq_warmup_steps steps; steady=True counts a step after that, see above).
    Returns {"recipe", "tokens", "d", "impl", "mode", "device", "dtype", "counts", "detail"}.
    """
    from int4lab.layers import Int4Linear, get_recipe
    r = get_recipe(recipe)
    if impl is not None and impl not in registry.MODES:
        raise ValueError(f"impl must be one of {', '.join(registry.MODES)} or None; got {impl!r}")
    device = torch.device(device if device is not None else runtime.DEVICE)
    dtype = dtype or _default_dtype(device)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(0)
        layer = Int4Linear(d, d, recipe=r, device=device, dtype=dtype)
        gy = torch.randn(tokens, d, device=device, dtype=dtype)

        def step():
            x = torch.randn(tokens, d, device=device, dtype=dtype).requires_grad_()
            layer.zero_grad(set_to_none=True)
            return x

        with _mode_for_step(impl) as which:
            for _ in range(warmup):
                x = step()
                layer(x).backward(gy)
            if steady:
                for q in (layer.x_quantizer, layer.w_quantizer):
                    if q is not None:       # past the warm-up (host-side state, see LSQQuantizer)
                        state = q._host_state()
                        state[1] = max(state[1], q.warmup_steps)
            x = step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            with Counter(full_numel(tokens, d), proxy=device.type == "cpu") as c:
                layer(x).backward(gy)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    detail = c.detail()
    ran = {s: "+".join(sorted(calls)) for s, calls in detail["slot_calls"].items()}
    for s in ran:   # cross-check with the registry's own record of the last call
        detail.setdefault("last_ran", {})[s] = registry.last_ran(s)
    return {"recipe": r.name, "tokens": tokens, "d": d, "impl": ran, "mode": which, "steady": steady,
            "device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "counts": c.counts(), "detail": detail}


def format_report(result, top=8):
    """A short readable report of a count_layer result."""
    c, det = result["counts"], result["detail"]
    lines = [f"Int4Linear {result['d']}x{result['d']}, recipe {result['recipe']}, {result['tokens']} tokens, "
             f"{result['device']} {result['dtype']}, mode {result['mode']}: one forward + backward"
             + (" (a step after the LSQ warm-up)" if result.get("steady") else ""),
             f"  launches     {c['launches']:6d}  (aten {det['aten']}, triton {det['triton']})",
             f"  host syncs   {c['host_syncs']:6d}" + ("  (CPU: data reads that would sync on a GPU)"
                                                      if det["proxy_syncs"] else ""),
             f"  full passes  {c['full_passes']:6d}  "
             f"(ops touching a tensor of >= {det['full_numel']} elements)"]
    if result["impl"]:
        lines.append("  ran: " + ", ".join(f"{s}={i}" for s, i in result["impl"].items()))
    else:
        lines.append("  ran: no registry slot (plain PyTorch)")

    def block(title, d):
        if d:
            lines.append(f"  {title}:")
            lines.extend(f"    {v:5d}  {k}" for k, v in list(d.items())[:top])

    block("top ops", dict(sorted({**det["aten_by_op"], **{f"triton:{k}": v for k, v in
                                                           det["triton_by_kernel"].items()}}.items(),
                                 key=lambda kv: -kv[1])))
    block("host syncs by op", det["host_syncs_by_op"])
    block("host syncs by site", det["host_syncs_by_site"])
    block("full passes by op", det["passes_by_op"])
    block("full passes by site", det["passes_by_site"])
    return "\n".join(lines)


def main_from_args(args):
    """Run count_layer from an argparse namespace (layer, tokens, d, json, impl); 0, or 2 on bad input."""
    from int4lab.layers import RECIPES
    recipe = getattr(args, "layer", None) or "int4_hq_lss"
    if recipe not in RECIPES:
        print(f"unknown recipe {recipe!r}; the recipes are: {', '.join(RECIPES)}")
        return 2
    impl = getattr(args, "impl", None)
    if impl is not None and impl not in registry.MODES:
        print(f"unknown implementation {impl!r}; choose one of: {', '.join(registry.MODES)}")
        return 2
    tokens = int(getattr(args, "tokens", None) or 4096)
    d = int(getattr(args, "d", None) or 1024)
    result = count_layer(recipe, tokens=tokens, d=d, impl=impl)
    print(format_report(result))
    path = getattr(args, "json", None)
    if path:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"  wrote {path}")
    return 0


def saved_bytes(layer, x):
    """Bytes of the tensors autograd keeps between forward and backward for one call layer(x):
    every tensor that reaches torch.autograd.graph.saved_tensors_hooks' pack hook, each storage
    counted once (x itself counts when the layer saves it, as nn.Linear does)."""
    import torch
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x.detach().clone().requires_grad_(True))
    return sum(seen.values())

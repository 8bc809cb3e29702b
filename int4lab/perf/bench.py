"""`int4lab bench`: one benchmark suite for every kernel, layer and training step.

    int4lab bench --suite all --out results/DIR      (CUDA GPU: timings, JSON, PNG plots)
    int4lab bench --suite all --smoke --out DIR      (anywhere: tiny sizes, checks only)
    int4lab bench --slot pack_int4                   (one slot, as int4lab.bench does)

Timing done right: every case is checked against the spec before it is timed; inputs are
random (never zeros: zeros flatter memory-bound kernels and hide bugs); each figure is the
median of triton.testing.do_bench (which warms up and flushes the L2 cache) over several input
sets. Smoke mode runs the same code at tiny sizes through the interpreter and records no time:
it exists so the suite cannot rot between GPU runs.

What is timed is what the figure claims:
  - a kernel (gemm, memory, the linear layer's parts) is checked once through the validated
    entry, registry.dispatch, then timed through the fast one, registry.dispatch_trusted, the
    entry the layers use: it runs the library's launcher with the checks that read tensor
    values off (spec.validate.data_checks_off: no NaN/Inf or range pass, no host sync; shapes
    and dtypes still checked). The memory rows also give the validated entry's time
    ("<name>_dispatch_ms"): the difference is what validation costs.
  - bytes: each memory kernel's traffic follows a stated byte model (`memory_bytes`, written to
    the JSON per row and described under "method"); GB/s and % of copy come from it, and the
    copy bandwidth (torch.clone) counts its read and its write.
  - the linear layer: Int4Linear and a bf16 nn.Linear with the same weights, the same bf16 input
    and the same output gradient; Y, dX and dW are checked against the bf16 layer's within
    stated bounds (GRAD_BOUNDS) before anything is timed. Its parts are the quantized operations
    the layer itself calls in one step, recorded with their arguments (so the GEMMs have the
    layer's shapes: forward Y = X W^T is tokens x d_out x d_in) and timed alone.
  - every case is isolated: an exception or a failed check is recorded in "errors" as
    {"suite", "case", "error"} and the run goes on; the exit status is 1 if any case failed.

Baselines measured in the same run: torch.mm in bf16 (cuBLAS), torch._int_mm (int8, cuBLASLt),
torch._scaled_mm in fp8 where the GPU has it, torch.clone for copy bandwidth, a bf16 nn.Linear
and a bf16 transformer block.
"""
import argparse
import contextlib
import datetime
import json
import math
import platform
import statistics
import sys
import traceback
from pathlib import Path

import torch

from int4lab import runtime
from int4lab.exercises import registry

SUITES = ("gemm", "memory", "linear", "block")
INPUT_SETS = 3
MEMORY_KERNELS = ("hadamard_quantize", "quantize_int4", "bit_split")
LINEAR_RECIPE = "int4_hq_lss"

# The linear layer's check: Int4Linear (int4_hq_lss) against a bf16 nn.Linear with the same
# weights, input and output gradient, as relative Frobenius errors ||g_int4 - g_ref|| / ||g_ref||
# of one step, and as gains <g_int4, g_ref> / ||g_ref||^2 (the least-squares factor g_ref needs).
# Where the error comes from: the forward rounds XH and WH to INT4 with LSQ's per-tensor scale
# (7 levels each side of zero: ~0.25 relative error in Y, whatever the size); the backward adds
# bit splitting of dY (per-tensor max scale: the hi codes get coarser as max|dY| grows with the
# tensor) and, mostly, leverage score sampling's variance: of the 2N bit-split rows about N
# survive, each kept with probability p_i ~ its norm and reweighted by 1/p_i, which is unbiased
# but adds a relative variance sum_i (1 - p_i) / p_i * share_i (about 0.3 here). Measured on the
# CPU (bf16 input; spec and Triton interpreter, which agree; seeds 0..59 or more):
#   48 tokens, 64 -> 96:    Y 0.24-0.26, dX 0.42-0.80, dW 0.47-0.73, gains 0.78-1.12 (sd 0.06)
#   256 tokens, 64 -> 96:   Y 0.24-0.25, dX 0.52-0.70, dW 0.56-0.72, gains 0.91-1.07 (sd 0.025)
#   1024 tokens, 1024 -> 1024 (spec): dX 0.66-0.68, dW 0.69-0.70, gains 0.98-1.02 (sd 0.007)
#   8192 tokens, 64 -> 8192 (spec, the largest dY of the GPU sizes): dX 0.71, dW 0.77, gains 1.01, 1.00
# The error grows slowly with the size (max|dY| does) and its spread shrinks (more rows average
# out), so the error bounds sit above every measurement from 128 tokens on (fewer tokens: single
# steps get noisier) and below what a broken gradient gives: zero 1.0, an unrotated or
# transposed one ~1.4, a sign-flipped one 2.0. A gradient off by a constant factor (a lost 1/p,
# a wrong split scale) can hide under the error bound (half the gradient: ~0.6), so the gain is
# bounded too. Its noise is the sampling's, one independent draw per token: sd ~ 0.4 /
# sqrt(tokens) measured (above), so the gain must be within 2.5 / sqrt(tokens) of 1 (about 6 sd;
# the sampling's skew puts a rare draw at 4 sd below), and never closer than 0.05 (the INT4
# rounding's own bias, measured within 0.015): 0.16 at 256 tokens, 0.05 at 8192.
GRAD_BOUNDS = {"y_rel_err": 0.35, "dx_rel_err": 0.85, "dw_rel_err": 0.85,
               "gain_tol_floor": 0.05, "gain_tol_times_sqrt_tokens": 2.5}
GRAD_BOUNDS_REASON = (
    "one step of int4_hq_lss vs a bf16 nn.Linear (same weights, bf16 input and output gradient): "
    "LSQ INT4 forward ~0.25 relative error in Y; bit splitting + LSS sampling (unbiased, about N "
    "of 2N rows kept, reweighted by 1/p) 0.5-0.8 in dX and dW, growing slowly with the size; "
    "measured on the CPU: Y 0.24-0.26, dX 0.52-0.71, dW 0.56-0.77 (256 to 8192 tokens), gains with "
    "sd ~0.4/sqrt(tokens). Broken gradients give >= 1.0 (zero, sign, rotation, transpose); the gain "
    "bound |gain - 1| <= max(0.05, 2.5/sqrt(tokens)) catches a constant factor (half the gradient: "
    "error ~0.6, gain 0.5). Valid from 128 tokens on (int4lab/perf/bench.py, GRAD_BOUNDS)")


def grad_bounds(tokens):
    """The bounds check_gradients applies for a layer step of `tokens` tokens (see GRAD_BOUNDS)."""
    b = GRAD_BOUNDS
    tol = max(b["gain_tol_floor"], b["gain_tol_times_sqrt_tokens"] / math.sqrt(tokens))
    return {"y_rel_err": b["y_rel_err"], "dx_rel_err": b["dx_rel_err"], "dw_rel_err": b["dw_rel_err"],
            "gain_min": 1 - tol, "gain_max": 1 + tol}


# What one call of each memory kernel reads and writes (memory_bytes), for the JSON.
BYTE_MODELS = {
    "clone": "reads x and writes its copy: 2 * M*K*elem bytes (the copy bandwidth counts both)",
    "quantize_int4": "granularity 'row': reads x once (M*K*elem), writes the packed codes (M*K/2) "
                     "and one fp32 scale per row (4*M)",
    "hadamard_quantize": "granularity 'row', block 32: reads x once (M*K*elem) and the 32x32 fp32 "
                         "Hadamard matrix once (4096; every program reads it, from cache), writes "
                         "the packed codes (M*K/2) and one fp32 scale per row (4*M)",
    "bit_split": "reads g twice, 2*M*K*elem: pass 1 (absmax) and pass 2 (split) are separate "
                 "kernels and the second cannot start before the first has seen all of g, so "
                 "both reads are traffic this design issues; 100% of copy means both passes run "
                 "at copy speed (the unavoidable minimum, one read, is in "
                 "bit_split_bytes_read_min). Writes hi and lo packed (2 * M*K/2) and the two "
                 "0-dim fp32 scales (8). Not counted: the 4-byte max cell (zeroed, then read by "
                 "every program from cache). When g fits in L2 the second read can hit L2, so "
                 "small shapes can exceed what DRAM allows",
}
TIMED_ENTRY = ("checked once through registry.dispatch (validated) against the spec; timed through "
               "registry.dispatch_trusted (the layers' entry: the launcher's value-reading checks off, "
               "spec.validate.data_checks_off); memory rows also time registry.dispatch as <name>_dispatch_ms")


class Timer:
    """do_bench medians on a GPU; in smoke mode it only runs the function once (no timing)."""

    def __init__(self, smoke):
        self.smoke = smoke

    def __call__(self, fn, inputs):
        if self.smoke:
            for args in inputs[:1]:
                fn(*args)
            return None
        import triton.testing
        return statistics.median(triton.testing.do_bench(lambda a=args: fn(*a), return_mode="median")
                                 for args in inputs)


def _case(errors, suite, case, fn):
    """Run one case. errors is None: exceptions propagate (a direct call, as lesson 08 makes).
    Otherwise a failure (an exception or a failed check) is appended to errors as
    {"suite", "case", "error", "traceback"} and the result is None."""
    if errors is None:
        return fn()
    try:
        return fn()
    except Exception as e:          # every failure is recorded, none stops the run
        errors.append({"suite": suite, "case": case, "error": f"{type(e).__name__}: {e}",
                       "traceback": "".join(traceback.format_exc(limit=-6))})
        if runtime.HAS_CUDA:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
        return None


# ---- the fast entry --------------------------------------------------------------------------

def trusted(name):
    """The fast entry of a slot: fn(*args, **kwargs) -> registry.dispatch_trusted(name, ...)."""
    def call(*args, **kwargs):
        return registry.dispatch_trusted(name, *args, **kwargs)
    return call


def _rand_codes(m, k2, device, g):
    return torch.randint(0, 256, (m, k2), generator=g, dtype=torch.uint8).to(device)


def _check(name, got, want, atol=1e-3, rtol=1e-3):
    if not torch.allclose(got.float().cpu(), want.float().cpu(), atol=atol, rtol=rtol):
        err = (got.float().cpu() - want.float().cpu()).abs().max().item()
        raise AssertionError(f"{name}: result differs from the reference (max abs error {err:.3g}); "
                             "not timing a wrong kernel")


# ---- GEMM ------------------------------------------------------------------------------------

def bench_gemm(timer, sizes, device, errors=None):
    """int4_matmul vs torch.mm bf16 vs torch._int_mm (int8) vs torch._scaled_mm (fp8)."""
    from int4lab.spec.quantizers import int4_matmul_spec
    rows = []
    g = torch.Generator().manual_seed(0)
    fdt = torch.bfloat16 if device.type == "cuda" else torch.float32
    for (m, n, k) in sizes:
        nsets = INPUT_SETS if not timer.smoke else 1
        sets = [(_rand_codes(m, k // 2, device, g), torch.rand(m, 1, generator=g).to(device) + 0.5,
                 _rand_codes(n, k // 2, device, g), torch.rand(n, 1, generator=g).to(device) + 0.5)
                for _ in range(nsets)]
        row = {"M": m, "N": n, "K": k, "out_dtype": str(fdt).replace("torch.", "")}
        label = f"{m}x{n}x{k}"

        def int4(sets=sets, row=row, label=label):
            with registry.use("triton"):
                a, sa, b, sb = sets[0]
                # checked through the validated entry: the exact integer product, then the
                # scaled product in the dtype that is timed
                _check(f"int4_matmul {label}", registry.dispatch("int4_matmul", a, sa, b, sb, out_dtype=torch.int32),
                       int4_matmul_spec(a, sa, b, sb, out_dtype=torch.int32), atol=0, rtol=0)
                _check(f"int4_matmul {label} ({row['out_dtype']})",
                       registry.dispatch("int4_matmul", a, sa, b, sb, out_dtype=fdt),
                       int4_matmul_spec(a, sa, b, sb, out_dtype=fdt), atol=1e-3,
                       rtol=1e-2 if fdt == torch.bfloat16 else 1e-5)
                row["impl"] = registry.last_ran("int4_matmul")
                fast = trusted("int4_matmul")
                row["int4_matmul_ms"] = timer(lambda *s: fast(*s, out_dtype=fdt), sets)
        _case(errors, "gemm", f"{label} int4_matmul", int4)

        fl = [(torch.randn(m, k, generator=g).to(device, fdt), torch.randn(k, n, generator=g).to(device, fdt))
              for _ in range(nsets)]
        _case(errors, "gemm", f"{label} torch.mm", lambda: row.__setitem__("torch_mm_ms", timer(torch.mm, fl)))
        if device.type == "cuda":
            def int8(m=m, n=n, k=k, row=row):
                i8 = [(torch.randint(-8, 8, (m, k), dtype=torch.int8, device=device),
                       torch.randint(-8, 8, (k, n), dtype=torch.int8, device=device).t().contiguous().t())
                      for _ in range(nsets)]
                row["int_mm_ms"] = timer(torch._int_mm, i8)
            _case(errors, "gemm", f"{label} torch._int_mm", int8)
            _case(errors, "gemm", f"{label} torch._scaled_mm fp8",
                  lambda: row.__setitem__("scaled_mm_fp8_ms", _fp8(timer, m, n, k, device, nsets)))
        flops = 2 * m * n * k
        for key in [k_ for k_ in row if k_.endswith("_ms")]:
            if row[key]:
                row[key.replace("_ms", "_tflops")] = flops / (row[key] * 1e-3) / 1e12
        rows.append(row)
    return rows


def _fp8(timer, m, n, k, device, nsets):
    """_scaled_mm in fp8 e4m3, None where the GPU has no fp8 (compute capability < 8.9)."""
    if not hasattr(torch, "float8_e4m3fn") or torch.cuda.get_device_capability() < (8, 9):
        return None
    one = torch.tensor(1.0, device=device)
    sets = [(torch.randn(m, k, device=device).to(torch.float8_e4m3fn),
             torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t(), one, one)
            for _ in range(nsets)]
    return timer(lambda a, b, sa, sb: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb,
                                                        out_dtype=torch.bfloat16), sets)


# ---- memory-bound kernels --------------------------------------------------------------------

def memory_bytes(name, m, k, elem_size, block_size=32):
    """(bytes_read, bytes_written) of one call of a memory case on an (m, k) input of elem_size
    bytes per element, as BYTE_MODELS describes: clone, quantize_int4 and hadamard_quantize
    (granularity "row"), bit_split. bit_split counts both of its reads of g."""
    x, packed = m * k * elem_size, m * (k // 2)
    if name == "clone":
        return x, x
    if name == "quantize_int4":
        return x, packed + 4 * m
    if name == "hadamard_quantize":
        return x + 4 * block_size * block_size, packed + 4 * m
    if name == "bit_split":
        return 2 * x, 2 * packed + 2 * 4
    raise KeyError(f"no byte model for {name!r}; the models are: {', '.join(BYTE_MODELS)}")


def _check_memory(name, label, x, kwargs, got, want):
    """The slot's own comparison (its first graded check's: codes, scales and, for bit_split's
    stochastic lo codes, their distribution) of a kernel's result with the spec's."""
    m = registry.get(name).checks[0].compare(want, got, (x,), kwargs)
    if m is not None:
        raise AssertionError(f"{name} {label}: {m.message}; not timing a wrong kernel")


def bench_memory(timer, shapes, device, errors=None):
    """Memory-bound kernels vs the measured copy bandwidth (torch.clone), bytes per BYTE_MODELS."""
    from int4lab.spec.gradients import bit_split_spec
    from int4lab.spec.hadamard import hadamard_quantize_spec
    from int4lab.spec.quantizers import quantize_int4_spec
    rows = []
    g = torch.Generator().manual_seed(1)
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs = {"hadamard_quantize": {}, "quantize_int4": {}, "bit_split": {"seed": 0}}
    specs = {"hadamard_quantize": hadamard_quantize_spec, "quantize_int4": quantize_int4_spec,
             "bit_split": bit_split_spec}
    for (m, k) in shapes:
        sets = [(torch.randn(m, k, generator=g).to(device, dt),) for _ in range(INPUT_SETS if not timer.smoke else 1)]
        x = sets[0][0]
        es = x.element_size()
        row = {"M": m, "K": k, "dtype": str(dt).replace("torch.", "")}
        label = f"{m}x{k}"
        row["clone_bytes_read"], row["clone_bytes_written"] = memory_bytes("clone", m, k, es)

        def clone(row=row, sets=sets):
            row["clone_ms"] = timer(torch.clone, sets)
            if row["clone_ms"]:
                moved = row["clone_bytes_read"] + row["clone_bytes_written"]
                row["clone_GBps"] = moved / (row["clone_ms"] * 1e-3) / 1e9
        _case(errors, "memory", f"{label} clone", clone)

        for name in MEMORY_KERNELS:
            read, written = memory_bytes(name, m, k, es)
            row[f"{name}_bytes_read"], row[f"{name}_bytes_written"] = read, written
            if name == "bit_split":
                row["bit_split_bytes_read_min"] = read // 2

            def kernel(name=name, row=row, sets=sets, x=x, label=label, moved=read + written):
                kw = kwargs[name]
                with registry.use("triton"):
                    _check_memory(name, label, x, kw, registry.dispatch(name, x, **kw), specs[name](x, **kw))
                    row[f"{name}_impl"] = registry.last_ran(name)
                    fast = trusted(name)
                    row[f"{name}_ms"] = timer(lambda t: fast(t, **kw), sets)
                    row[f"{name}_dispatch_ms"] = timer(lambda t: registry.dispatch(name, t, **kw), sets)
                if row[f"{name}_ms"]:
                    row[f"{name}_GBps"] = moved / (row[f"{name}_ms"] * 1e-3) / 1e9
                    if row.get("clone_GBps"):
                        row[f"{name}_pct_of_copy"] = 100 * row[f"{name}_GBps"] / row["clone_GBps"]
            _case(errors, "memory", f"{label} {name}", kernel)
        rows.append(row)
    return rows


# ---- the linear layer ------------------------------------------------------------------------

def _fwd_bwd(module, x, grad=None):
    """One forward + backward of a linear layer with a fixed output gradient (random if None)."""
    if grad is None:
        grad = torch.randn(*x.shape[:-1], module.out_features, device=x.device, dtype=x.dtype)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)
    return run


def _step(module):
    """fn(x, gy): one forward + backward of module on a leaf x with output gradient gy."""
    def run(x, gy):
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(gy)
    return run


def _rel_err(got, want):
    got, want = got.detach().float(), want.detach().float()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _gain(got, want):
    got, want = got.detach().float(), want.detach().float()
    return ((got * want).sum() / (want * want).sum().clamp_min(1e-30)).item()


def check_gradients(ref, layer, x, gy, bounds=None):
    """Y, dX and dW of `layer` (an Int4Linear) against `ref` (the bf16 nn.Linear with the same
    weights) on the same input x and output gradient gy: relative Frobenius errors and gains
    within grad_bounds(tokens) (see GRAD_BOUNDS for why). Returns the measures and the bounds;
    raises AssertionError naming each measure out of bounds."""
    b = grad_bounds(x.shape[0]) if bounds is None else dict(bounds)
    xr, xq = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    ref.zero_grad(set_to_none=True)
    layer.zero_grad(set_to_none=True)
    yr, yq = ref(xr), layer(xq)
    yr.backward(gy)
    yq.backward(gy)
    for what, t in (("Y", yq), ("dX", xq.grad), ("dW", layer.weight.grad)):
        if t is None or not torch.isfinite(t).all():
            raise AssertionError(f"Int4Linear's {what} is missing or not finite")
    out = {"y_rel_err": _rel_err(yq, yr), "dx_rel_err": _rel_err(xq.grad, xr.grad),
           "dw_rel_err": _rel_err(layer.weight.grad, ref.weight.grad),
           "y_gain": _gain(yq, yr), "dx_gain": _gain(xq.grad, xr.grad),
           "dw_gain": _gain(layer.weight.grad, ref.weight.grad)}
    bad = [f"{k} {out[k]:.3g} > {b[k]}" for k in ("y_rel_err", "dx_rel_err", "dw_rel_err") if not out[k] <= b[k]]
    bad += [f"{k} {out[k]:.3g} outside [{b['gain_min']}, {b['gain_max']}]" for k in ("y_gain", "dx_gain", "dw_gain")
            if not b["gain_min"] <= out[k] <= b["gain_max"]]
    layer.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    if bad:
        raise AssertionError("Int4Linear against the bf16 nn.Linear: " + "; ".join(bad) + "; not timing it")
    return {**out, "bounds": b, "reason": GRAD_BOUNDS_REASON}


@contextlib.contextmanager
def recording_ops(calls):
    """Append (name, args, kwargs, fn) to `calls` for every quantized operation the layers call
    (ops.trusted.<name>) inside the block, then call it as before; fn is what to time it with:
    the slot's fast entry, or for the fused layer's GEMMs (kernels/fused_linear.gemm: the slot's
    kernel, autotuned on a GPU), recorded as "int4_matmul" calls, that gemm."""
    from int4lab import ops
    saved = dict(vars(ops.trusted))
    fused = _fused_module()

    def wrap(name, fn, timed):
        def rec(*args, **kwargs):
            calls.append((name, args, kwargs, timed))
            return fn(*args, **kwargs)
        return rec
    saved_gemm = fused.gemm if fused is not None else None
    try:
        for name, fn in saved.items():
            setattr(ops.trusted, name, wrap(name, fn, trusted(name)))
        if fused is not None:
            fused.gemm = wrap("int4_matmul", saved_gemm, saved_gemm)
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(ops.trusted, name, fn)
        if fused is not None:
            fused.gemm = saved_gemm


def _fused_module():
    """int4lab.kernels.fused_linear, or None (no Triton, or a student copy)."""
    try:
        from int4lab.kernels import fused_linear
    except Exception:
        return None
    return fused_linear


def record_step(layer, x, gy):
    """The quantized operations one forward + backward of layer calls, in order, as
    [(part, name, args, kwargs, fn)], part = "forward.<name>" or "backward.<name>" with "#i" for
    the i-th repeat (i >= 1), fn the function to time it with (recording_ops)."""
    x = x.detach().clone().requires_grad_()
    fwd, bwd = [], []
    layer.zero_grad(set_to_none=True)
    with recording_ops(fwd):
        y = layer(x)
    with recording_ops(bwd):
        y.backward(gy)
    layer.zero_grad(set_to_none=True)
    out = []
    for phase, calls in (("forward", fwd), ("backward", bwd)):
        seen = {}
        for name, args, kwargs, fn in calls:
            i = seen[name] = seen.get(name, -1) + 1
            out.append((f"{phase}.{name}" + (f"#{i}" if i else ""), name, args, kwargs, fn))
    return out


def _gemm_shape(args, kwargs):
    """(M, N, K) of an int4_matmul call: a (M, K/2), b (N, K/2) packed along K (on the spec the
    codes, (M, K) and (N, K), come in spec_extra)."""
    a, b = args[0], args[2]
    if a is None:
        ca, cb = kwargs["spec_extra"]["a_codes"], kwargs["spec_extra"]["b_codes"]
        return {"M": ca.shape[0], "N": cb.shape[0], "K": ca.shape[1]}
    return {"M": a.shape[0], "N": b.shape[0], "K": 2 * a.shape[1]}


def _shapes(args):
    return [list(a.shape) if isinstance(a, torch.Tensor) else None for a in args]


# part name in the layer's step -> the row's key (the first three are the suite's old keys)
LINEAR_PARTS = {"forward.hadamard_quantize": "part_hadamard_quantize_x_ms",
                "backward.bit_split": "part_bit_split_dy_ms",
                "forward.int4_matmul": "part_int4_gemm_ms",
                "forward.hadamard_quantize#1": "part_hadamard_quantize_w_ms",
                "backward.int4_matmul": "part_int4_gemm_dx_ms",
                "backward.int4_matmul#1": "part_int4_gemm_dw_ms"}
LINEAR_GEMMS = {"forward.int4_matmul": ("forward", "Y = X W^T: M = tokens, N = d_out, K = d_in"),
                "backward.int4_matmul": ("grad_input", "dX = dY W: M = rows of the bit-split dY that "
                                         "LSS kept (random, about tokens; on the fused path a fixed "
                                         "tokens + 2), N = d_in, K = d_out"),
                "backward.int4_matmul#1": ("grad_weight", "dW = dY^T X: M = d_out, N = d_in, K = the "
                                           "kept rows (random, about tokens, padded to even; fused: "
                                           "tokens + 2)")}


def bench_linear(timer, tokens, dims, device, errors=None):
    """Int4Linear forward + backward (int4_hq_lss) vs a bf16 nn.Linear, with a time breakdown.

    dims: hidden sizes d (a d -> d layer) or (d_in, d_out) pairs. Both layers get the same
    weights (bf16, as the reference), the same bf16 input and output gradient; Int4Linear's Y,
    dX and dW are checked against the reference (check_gradients) before anything is timed.
    The breakdown times each quantized operation the layer calls in one step on the arguments it
    called it with (record_step), through the fast entry; "gemm_shapes" names the three GEMMs."""
    from int4lab.layers import Int4Linear
    rows = []
    dt = torch.bfloat16
    for d in dims:
        d_in, d_out = (d, d) if isinstance(d, int) else tuple(d)
        label = f"tokens={tokens} d={d_in}" if d_in == d_out else f"tokens={tokens} d={d_in}->{d_out}"
        row = {"tokens": tokens, "d": d_in if d_in == d_out else f"{d_in}->{d_out}", "d_in": d_in, "d_out": d_out,
               "recipe": LINEAR_RECIPE, "dtype": "bfloat16"}
        made = {}

        def check(row=row, d_in=d_in, d_out=d_out, made=made):
            g = torch.Generator().manual_seed(2)
            ref = torch.nn.Linear(d_in, d_out, bias=False)
            with torch.no_grad():       # nn.Linear's own init, U(-1/sqrt(d_in), 1/sqrt(d_in))
                ref.weight.copy_((torch.rand(d_out, d_in, generator=g) * 2 - 1) / math.sqrt(d_in))
            ref = ref.to(device, dt)
            q = Int4Linear.from_linear(ref, LINEAR_RECIPE)     # the same bf16 weights
            sets = [(torch.randn(tokens, d_in, generator=g).to(device, dt).requires_grad_(),
                     torch.randn(tokens, d_out, generator=g).to(device, dt))
                    for _ in range(INPUT_SETS if not timer.smoke else 1)]
            with registry.use("triton"):
                torch.manual_seed(0)        # the layer's sampling seeds: a reproducible check
                row["grad_check"] = check_gradients(ref, q, *sets[0])
                steps = [record_step(q, x, gy) for x, gy in sets]
                row["impl"] = registry.last_ran()
            if any([p[0] for p in s] != [p[0] for p in steps[0]] for s in steps):
                raise AssertionError("the layer called different operations for different inputs")
            row["gemm_shapes"] = {LINEAR_GEMMS[p][0]: {**_gemm_shape(a, kw), "what": LINEAR_GEMMS[p][1]}
                                  for p, _, a, kw, _fn in steps[0] if p in LINEAR_GEMMS}
            made.update(ref=ref, q=q, sets=sets, steps=steps)
        _case(errors, "linear", f"{label} check", check)
        if "steps" not in made:
            continue                    # not checked: nothing of this layer is timed
        ref, q, sets, steps = made["ref"], made["q"], made["sets"], made["steps"]

        def layers(row=row, ref=ref, q=q, sets=sets, steps=steps):
            with registry.use("triton"):
                row["bf16_linear_ms"] = timer(_step(ref), sets)
                row["int4_linear_ms"] = timer(_step(q), sets)
            if row["bf16_linear_ms"] and row["int4_linear_ms"]:
                row["speedup_vs_bf16"] = row["bf16_linear_ms"] / row["int4_linear_ms"]
        _case(errors, "linear", f"{label} layers", layers)

        row["parts"] = []
        for i, (part, name, args, _kw, fn) in enumerate(steps[0]):
            entry = {"part": part, "op": name, "shapes": _shapes(args)}
            row["parts"].append(entry)

            def time_part(i=i, name=name, entry=entry, part=part, row=row, steps=steps, fast=fn):
                inputs = [(s[i][2], s[i][3]) for s in steps]
                with registry.use("triton"):
                    entry["impl"] = registry.resolve(name)[0]
                    entry["time_ms"] = timer(lambda a, kw: fast(*a, **kw), inputs)
                if part in LINEAR_PARTS:
                    row[LINEAR_PARTS[part]] = entry["time_ms"]
            _case(errors, "linear", f"{label} part {part}", time_part)
        rows.append(row)
    return rows


# ---- a transformer block ---------------------------------------------------------------------

def bench_block(timer, tokens, d, device, errors=None):
    """One transformer block's training step, bf16 vs int4_hq_lss, both with bf16 parameters and
    the same bf16 input (the INT4 block's linear layers are Int4Linear)."""
    from int4lab.layers import quantize_model
    from int4lab.training.models.gpt import Block, GPTConfig
    rows = []
    seq = 256 if tokens >= 256 else tokens
    batch = max(1, tokens // seq)
    cfg = GPTConfig(n_embd=d, n_head=max(1, d // 64), block_size=seq)
    dt = torch.bfloat16
    x = torch.randn(batch, seq, d, generator=torch.Generator().manual_seed(3)).to(device, dt)
    for recipe in ("bf16", "int4_hq_lss"):
        def case(recipe=recipe):
            torch.manual_seed(0)
            block = Block(cfg).to(device, dt)
            if recipe != "bf16":
                quantize_model(block, recipe, skip=[])
            opt = torch.optim.AdamW(block.parameters(), lr=1e-4)

            def step():
                opt.zero_grad(set_to_none=True)
                block(x).float().pow(2).mean().backward()
                opt.step()
            with registry.use("triton"):
                step()
                if not all(p.grad is None or torch.isfinite(p.grad).all() for p in block.parameters()):
                    raise AssertionError(f"block {recipe}: a non-finite gradient; not timing it")
                rows.append({"recipe": recipe, "tokens": batch * seq, "d": d, "dtype": "bfloat16",
                             "step_ms": timer(step, [()])})
        _case(errors, "block", f"tokens={batch * seq} d={d} {recipe}", case)
    by = {r["recipe"]: r for r in rows}
    if by.get("bf16", {}).get("step_ms") and by.get("int4_hq_lss", {}).get("step_ms"):
        by["int4_hq_lss"]["speedup_vs_bf16"] = by["bf16"]["step_ms"] / by["int4_hq_lss"]["step_ms"]
    return rows


def environment():
    import triton
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
           "device": str(runtime.DEVICE), "interpreter": runtime.INTERPRET}
    if runtime.HAS_CUDA:
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            import subprocess
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True).stdout.strip()
        except OSError:
            env["driver"] = None
    return env


def run_suite(suites, smoke, device=None):
    """Run the suites; every case isolated: failures are in out["errors"], the rest is kept."""
    device = device or runtime.DEVICE
    if not smoke and not runtime.HAS_CUDA:
        raise SystemExit("int4lab bench needs a CUDA GPU for timings; on the CPU use --smoke "
                         "(checks only: interpreter timings mean nothing)")
    timer = Timer(smoke)
    errors = []
    out = {"environment": environment(), "smoke": smoke, "timed": not smoke,
           "method": {"timed_entry": TIMED_ENTRY, "byte_models": BYTE_MODELS,
                      "linear_grad_bounds": GRAD_BOUNDS, "linear_grad_bounds_reason": GRAD_BOUNDS_REASON},
           "errors": errors}
    runs = {
        "gemm": lambda: bench_gemm(timer, [(33, 31, 64), (64, 64, 128)] if smoke else
                                   [(s, s, s) for s in (1024, 2048, 4096, 8192)] +
                                   [(8192, 4096, 4096), (8192, 11008, 4096)], device, errors),
        "memory": lambda: bench_memory(timer, [(31, 64), (64, 128)] if smoke else
                                       [(8192, 2048), (8192, 4096), (16384, 8192)], device, errors),
        # smoke: a non-square layer, so that every GEMM's M, N and K are told apart
        "linear": lambda: bench_linear(timer, 256 if smoke else 8192, [(64, 96)] if smoke else (2048, 4096, 8192),
                                       device, errors),
        "block": lambda: bench_block(timer, 32 if smoke else 8192, 64 if smoke else 4096, device, errors),
    }
    for suite in SUITES:
        if suite in suites:
            out[suite] = _case(errors, suite, f"{suite} suite", runs[suite]) or []
    return out


def plot(results, out_dir):
    """Throughput against size, and percent of the measured ceilings (PNG files)."""
    from matplotlib.figure import Figure
    paths = []
    if results.get("gemm") and results["timed"]:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        labels = [f"{r['M']}x{r['N']}x{r['K']}" for r in results["gemm"]]
        for key, name in (("int4_matmul_tflops", "int4_matmul (Triton)"), ("torch_mm_tflops", "torch.mm bf16"),
                          ("int_mm_tflops", "torch._int_mm int8"), ("scaled_mm_fp8_tflops", "_scaled_mm fp8")):
            ys = [r.get(key) for r in results["gemm"]]
            if any(ys):
                ax.plot(labels, [y or float("nan") for y in ys], marker="o", label=name)
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"GEMM throughput, {results['environment'].get('gpu', '')}")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "gemm.png")
        fig.savefig(paths[-1], dpi=120)
    if results.get("memory") and results["timed"]:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        labels = [f"{r['M']}x{r['K']}" for r in results["memory"]]
        for name in MEMORY_KERNELS:
            ys = [r.get(f"{name}_pct_of_copy") for r in results["memory"]]
            if any(y is not None for y in ys):
                ax.plot(labels, [float("nan") if y is None else y for y in ys], marker="o", label=name)
        ax.axhline(100, color="gray", ls="--", label="torch.clone bandwidth")
        ax.set_ylabel("% of measured copy bandwidth")
        ax.set_title("bytes read + written per the JSON's byte model", fontsize=9)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "memory.png")
        fig.savefig(paths[-1], dpi=120)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="int4lab bench", description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="all", help=f"all or a comma list of {', '.join(SUITES)}")
    p.add_argument("--out", default="results/latest", help="folder for results.json and plots")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, checks only, no timings (CPU ok)")
    p.add_argument("--slot", help="benchmark one slot instead (int4lab.bench(SLOT))")
    a = p.parse_args(argv)
    if a.slot:
        from int4lab.exercises.learner import bench
        bench(a.slot)
        return 0
    suites = SUITES if a.suite == "all" else tuple(s.strip() for s in a.suite.split(","))
    unknown = set(suites) - set(SUITES)
    if unknown:
        p.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    results = run_suite(suites, a.smoke)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    pngs = plot(results, out_dir)
    print(f"wrote {out_dir / 'results.json'}" + "".join(f", {p}" for p in pngs))
    if results["errors"]:
        for e in results["errors"]:
            print(f"FAILED {e['suite']}: {e['case']}: {e['error']}", file=sys.stderr)
        print(f"{len(results['errors'])} case(s) failed; the others are in the results", file=sys.stderr)
        return 1
    if a.smoke:
        print("smoke mode: every case ran and was checked against the spec; nothing was timed.")
    return 0

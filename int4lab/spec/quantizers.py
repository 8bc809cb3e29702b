"""Symmetric integer quantizers, the spec: round-to-nearest, stochastic rounding and LSQ.

A quantizer maps a float tensor x to integer codes q and a scale s with x ~ s * q
(paper sec. 3, eq. 1: int(x) = round(clamp(x / s, -Q_N, Q_P))). The scale is shared by a
group of values: the whole tensor, one row (a token, or an output channel), or a block of
`block_size` consecutive values along the last dim. A bigger group is cheaper and keeps the
integer GEMM exact, but one outlier in the group sets the step size for all of it; that is
the whole problem the Hadamard quantizer solves (see hadamard.py).

Everything computes in fp32, whatever the input float dtype.
"""
import math

import torch
import torch.nn as nn

from int4lab.spec.packing import pack_int4_trusted, unpack_int4_trusted
from int4lab.spec.validate import (
    data_checks_skipped,
    require_dtype,
    require_even_last_dim,
    require_finite,
    require_float,
    require_tensor,
)

# Symmetric ranges, as the paper's text: Q_N = Q_P = 7 for INT4. The released code clamps to
# [-8, 7]; a symmetric range keeps -x and x quantizing to -q and q, which the tests rely on.
QMAX = {4: 7, 8: 127}
GRANULARITIES = ("tensor", "row", "block")
ROUNDINGS = ("nearest", "stochastic")


def _check_choice(value, choices, what):
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _as_scale(scale):
    """A user-given per-tensor scale (python number or 0-dim tensor) as a positive fp32 0-dim tensor."""
    if isinstance(scale, torch.Tensor):
        if scale.dim() != 0:
            raise ValueError(f"scale must be a python number or a 0-dim tensor (one scale per "
                             f"tensor), got shape {tuple(scale.shape)}")
        s = scale.detach().float()
    elif isinstance(scale, (int, float)):
        s = torch.tensor(float(scale))
    else:
        raise TypeError(f"scale must be a python number or a 0-dim tensor, got {type(scale).__name__}")
    if not data_checks_skipped() and (not torch.isfinite(s) or s <= 0):
        raise ValueError(f"scale must be positive and finite, got {float(s)}")
    return s


def group_absmax(x, granularity, block_size=32):
    """max|x| over each scale group; the shape is the scales' shape for that granularity."""
    a = x.abs()
    if granularity == "tensor":
        return a.amax() if a.numel() else a.new_zeros(())
    if granularity == "row":
        shape = x.shape[:-1] + (1,)
        return a.amax(dim=-1, keepdim=True) if a.numel() else a.new_zeros(shape)
    K = x.shape[-1]
    if block_size <= 0 or K % block_size:
        raise ValueError(f"last dim ({K}) is not a multiple of block_size {block_size}")
    blocks = a.reshape(*x.shape[:-1], K // block_size, block_size)
    return blocks.amax(dim=-1) if a.numel() else a.new_zeros(x.shape[:-1] + (K // block_size,))


def absmax_scale(amax, qmax):
    """Dynamic scale s = max|x| / Q_P; an all-zero group gets s = 1 (its codes are 0 anyway)."""
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def _expand(scales, x, granularity):
    """Broadcast the group scales back over x's elements."""
    if granularity != "block":
        return scales
    nb = scales.shape[-1]
    return scales.repeat_interleave(x.shape[-1] // nb, dim=-1) if nb else scales


def round_nearest(v):
    """Round to nearest (ties to even): the deterministic forward quantizer."""
    return torch.round(v)


def round_stochastic(v, generator=None):
    """floor(v + u), u ~ U[0, 1): rounds up with probability frac(v), so E[result] = v (unbiased)."""
    dev = generator.device if generator is not None else v.device
    u = torch.rand(v.shape, generator=generator, device=dev, dtype=torch.float32).to(v.device)
    return torch.floor(v + u)


def quantize(x: torch.Tensor, bits: int = 4, granularity: str = "tensor", block_size: int = 32,
             rounding: str = "nearest", generator: torch.Generator | None = None,
             scale: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization (paper eq. 1): codes = round(clamp(x / s, -Q, Q)) in int8.

    granularity: "tensor" (0-dim scale), "row" (x.shape[:-1] + (1,)), "block" (block_size
    consecutive values of the last dim, scales x.shape[:-1] + (K // block_size,)).
    scale: a given per-tensor scale (e.g. LSQ's learned one) instead of max|x| / Q; values
    beyond Q * s are clipped. It fills the scales of the requested granularity.
    Returns (codes int8 with x's shape, scales fp32).
    """
    require_float(x, "x")
    require_finite(x, "x")
    if bits not in QMAX:
        raise ValueError(f"bits must be one of {sorted(QMAX)}; got {bits!r}")
    _check_choice(granularity, GRANULARITIES, "granularity")
    _check_choice(rounding, ROUNDINGS, "rounding")
    if granularity != "tensor" and x.dim() == 0:
        raise ValueError(f"granularity {granularity!r} needs at least one dimension; x is 0-dim")
    return _quantize(x, bits, granularity, block_size, rounding, generator,
                     None if scale is None else _as_scale(scale))


def _quantize(x, bits, granularity, block_size, rounding, generator, scale):
    """quantize() on valid input; scale None or a positive finite fp32 0-dim tensor."""
    qmax = QMAX[bits]
    xf = x.float()
    amax = group_absmax(xf, granularity, block_size)
    if scale is None:
        scales = absmax_scale(amax, qmax)
    else:
        scales = scale.to(x.device).expand(amax.shape).clone()
    v = xf / _expand(scales, xf, granularity)
    # round_nearest / round_stochastic, in place on v (a large temporary less)
    if rounding == "nearest":
        v.round_()
    else:
        dev = generator.device if generator is not None else v.device
        v.add_(torch.rand(v.shape, generator=generator, device=dev, dtype=torch.float32).to(v.device)).floor_()
    # clamp after rounding too: fp32 division can land a hair above Q (7.0000005 -> floor(v+u) = 8)
    codes = v.clamp_(-qmax, qmax).to(torch.int8)
    return codes, scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """codes * scale, the granularity read from the scales' shape (0-dim, last dim 1, or blocks)."""
    require_tensor(codes, "codes")
    require_tensor(scales, "scales")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    require_float(scales, "scales")
    q, s = codes.float(), scales.float()
    if s.dim() == 0:
        return q * s
    if s.dim() != q.dim() or s.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"scales of shape {tuple(s.shape)} do not match codes of shape "
                         f"{tuple(q.shape)}: expected 0-dim, {tuple(q.shape[:-1]) + (1,)} or "
                         f"{tuple(q.shape[:-1])} + (number of blocks,)")
    nb, K = s.shape[-1], q.shape[-1]
    if nb == 1:
        return q * s
    if nb == 0 or K % nb:
        raise ValueError(f"last dim of codes ({K}) is not a multiple of the number of blocks ({nb})")
    return (q.reshape(*q.shape[:-1], nb, K // nb) * s.unsqueeze(-1)).reshape(q.shape)


def fake_quantize(x, **kw):
    """dequantize(quantize(x)): the float value the integer pipeline represents."""
    return dequantize(*quantize(x, **kw))


def make_generator(seed, device=None):
    """A torch.Generator seeded with `seed`, or with fresh OS entropy when seed is None."""
    g = torch.Generator(device=device or "cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


# ---- registry slot "quantize_int4" ----------------------------------------------------------

def validate_quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """Raise on input quantize_int4 cannot take (dtype, shape, NaN/Inf, options), computing nothing."""
    require_float(x, "x")
    require_even_last_dim(x, "x")
    require_finite(x, "x")
    _check_choice(granularity, GRANULARITIES, "granularity")
    _check_choice(rounding, ROUNDINGS, "rounding")
    if granularity == "block" and (block_size <= 0 or x.shape[-1] % block_size):
        raise ValueError(f"last dim ({x.shape[-1]}) is not a multiple of block_size {block_size}")
    if granularity == "block" and block_size % 2:
        # a block must cover whole bytes: two INT4 codes share one byte
        raise ValueError(f"block_size must be even for packed INT4 (two codes per byte), got {block_size}")
    if scale is not None:
        _as_scale(scale)


def quantize_int4_spec(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """INT4 quantize then pack (slot "quantize_int4"): (..., K) float -> ((..., K/2) uint8, fp32 scales)."""
    validate_quantize_int4(x, granularity, block_size, rounding, seed, scale)
    return quantize_int4_trusted(x, granularity, block_size, rounding, seed, scale)


def quantize_int4_trusted(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None,
                          as_codes=False):
    """quantize_int4_spec without validation (for the layers, on tensors they made); with
    as_codes, (int8 codes, scales): the codes in place of the packed bytes, nothing packed (a
    GEMM on the spec multiplies codes)."""
    gen = make_generator(seed) if rounding == "stochastic" else None
    if scale is not None:
        scale = scale.detach().float() if isinstance(scale, torch.Tensor) else torch.tensor(float(scale))
    codes, scales = _quantize(x, 4, granularity, block_size, rounding, gen, scale)
    return (codes if as_codes else pack_int4_trusted(codes)), scales


# ---- registry slot "int4_matmul" ------------------------------------------------------------

def _check_gemm_scale(s, rows, name, operand):
    require_dtype(s, name, (torch.float32, torch.float16, torch.bfloat16, torch.float64))
    if s.dim() != 0 and tuple(s.shape) != (rows, 1):
        raise ValueError(f"{name} must be 0-dim (per tensor) or ({rows}, 1) (one per row of "
                         f"{operand}); got shape {tuple(s.shape)}")


def validate_int4_matmul(a, a_scale, b, b_scale, out_dtype=torch.float32):
    require_dtype(a, "a", (torch.uint8,))
    require_dtype(b, "b", (torch.uint8,))
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a and b must be 2-D packed matrices (M, K/2) and (N, K/2); got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"packed reduction dims differ: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
                         f"(both must be packed along K, so K/2 must match: {a.shape[1]} != {b.shape[1]})")
    _check_gemm_scale(a_scale, a.shape[0], "a_scale", "a")
    _check_gemm_scale(b_scale, b.shape[0], "b_scale", "b")
    if out_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.int32):
        raise ValueError(f"out_dtype must be float32, float16, bfloat16 or int32; got {out_dtype}")


def int4_matmul_spec(a, a_scale, b, b_scale, out_dtype=torch.float32):
    """Y = (A_codes @ B_codes^T) * a_scale * b_scale^T (slot "int4_matmul"), both packed along K.

    out_dtype=torch.int32 returns the raw integer product, no scales.
    """
    validate_int4_matmul(a, a_scale, b, b_scale, out_dtype)
    return int4_matmul_trusted(a, a_scale, b, b_scale, out_dtype)


def exact_float_dtype(K, bound=64):
    """The float dtype in which a sum of K integer products, each at most `bound` in size, is
    exact whatever the summation order: fp32 while K * bound <= 2**24 (every partial sum is an
    integer fp32 holds), else fp64 (2**53). fp32 only at full fp32 matmul precision: "high" or
    "medium" let torch use TF32 or bf16 inside a float32 matmul."""
    if K * bound <= 2**24 and torch.get_float32_matmul_precision() == "highest":
        return torch.float32
    return torch.float64


def _integer_gemm(qa, qb):
    """qa @ qb^T for int8 code matrices, exactly: torch._int_mm (int8 in, int32 sums: exact for
    K < 2**25) on the CPU, where it runs on every shape; else a float GEMM in which the integer
    sums are exact (exact_float_dtype: int64 matmul does not exist on CUDA)."""
    if qa.device.type == "cpu" and hasattr(torch, "_int_mm") and qa.shape[1] < 2**25:
        return torch._int_mm(qa, qb.T)
    work = exact_float_dtype(qa.shape[1])
    return qa.to(work) @ qb.to(work).T


def int4_matmul_trusted(a, a_scale, b, b_scale, out_dtype=torch.float32, a_codes=None, b_codes=None):
    """int4_matmul_spec without validation; a_codes, b_codes: their unpacked codes, if at hand."""
    qa = unpack_int4_trusted(a) if a_codes is None else a_codes
    qb = unpack_int4_trusted(b) if b_codes is None else b_codes
    acc = _integer_gemm(qa, qb)
    if out_dtype == torch.int32:
        return acc.to(torch.int64).to(torch.int32)
    b_s = b_scale.float().reshape(1, -1) if b_scale.dim() else b_scale.float()
    return (acc.float() * a_scale.float() * b_s).to(out_dtype)


# ---- LSQ: a learned step size (paper sec. 4.1, Esser et al. 2020) ---------------------------

def lsq_init_scale(x, qmax=7):
    """LSQ's initial step size s = 2 mean|x| / sqrt(Q_P); 1.0 for an all-zero x."""
    require_float(x, "x")
    require_finite(x, "x")
    m = x.detach().float().abs().mean() if x.numel() else torch.zeros(())
    return torch.where(m > 0, 2 * m / math.sqrt(qmax), torch.ones_like(m))


def lsq_grad_scale(numel, qmax=7):
    """LSQ's step-size gradient scale g = 1 / sqrt(numel * Q_P), keeping its update in proportion."""
    return 1.0 / math.sqrt(max(int(numel), 1) * qmax)


def lsq_codes(x, scale, qmax=7):
    """(codes, clip_mask): codes = round(clamp(x / s, -Q, Q)) int8, mask = 1 where x was not clipped.

    The mask is the STE's I_X: the gradient passes where -Q <= x/s <= Q and is zero elsewhere.
    """
    require_float(x, "x")
    require_finite(x, "x")
    s = _as_scale(scale).to(x.device)
    v = x.detach().float() / s
    mask = (v >= -qmax) & (v <= qmax)
    return round_nearest(v.clamp(-qmax, qmax)).to(torch.int8), mask


def lsq_step_size_term(v, codes, mask):
    """d(s * q(v)) / ds per element: q - v inside the range, the clipped level (+-Q) outside."""
    return codes.float() - v * mask


class _LSQFunction(torch.autograd.Function):
    """x_hat = s * round(clamp(x / s, -Q, Q)); STE for x (masked), LSQ gradient for s."""

    @staticmethod
    def forward(ctx, x, scale, qmax, grad_scale):
        s = scale.detach().float()
        v = x.detach().float() / s
        mask = (v >= -qmax) & (v <= qmax)
        codes = round_nearest(v.clamp(-qmax, qmax))
        ctx.save_for_backward(v, codes, mask)
        ctx.grad_scale = grad_scale
        ctx.x_dtype, ctx.s_dtype = x.dtype, scale.dtype
        return (codes * s).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        v, codes, mask = ctx.saved_tensors
        g = g.float()
        gx = (g * mask).to(ctx.x_dtype)
        gs = (g * lsq_step_size_term(v, codes, mask)).sum() * ctx.grad_scale
        return gx, gs.to(ctx.s_dtype), None, None


def lsq_quantize(x, scale, qmax=7):
    """LSQ fake quantization: returns s * int(x) with the STE and the scaled step-size gradient."""
    require_float(x, "x")
    require_finite(x, "x")
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(float(scale))
    _as_scale(scale)                                  # validates shape and sign
    return _LSQFunction.apply(x, scale, qmax, lsq_grad_scale(x.numel(), qmax))


class LSQQuantizer(nn.Module):
    """A per-tensor quantizer with a learned scale (LSQ), as the paper uses for HQ.

    The scale is initialised from the first batch it sees and, from scratch, reset to
    2 mean|x| / sqrt(Q_P) at every training step for the first `warmup_steps` steps (the
    paper's warm-up) before it is learned. One step = one training-mode call.
    """

    def __init__(self, bits=4, warmup_steps=10):
        super().__init__()
        if bits not in QMAX:
            raise ValueError(f"bits must be one of {sorted(QMAX)}; got {bits!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.bits, self.qmax, self.warmup_steps = bits, QMAX[bits], int(warmup_steps)
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # [initialized, steps] mirrored on the host, so that a step reads no device value (a host
        # sync on a GPU): read from the buffers once, written back to `steps` when saved
        self._host = None

    def _host_state(self):
        if self._host is None:
            self._host = [bool(self.initialized), int(self.steps)]
        return self._host

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self._host is not None:
            with torch.no_grad():
                self.steps.fill_(self._host[1])
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._host = None

    def observe(self, x, clamp=True):
        """Update the scale per the init/warm-up rule for this batch x and return the parameter.
        x may be a callable returning the batch: it is called only when the rule needs it.
        clamp=False leaves the clamp to >= 1e-8 to the caller (the fused layer's kernel does it
        in place). The step count lives on the host (the `steps` buffer is brought up to date
        when the module is saved)."""
        state = self._host_state()
        if not state[0] or (self.training and state[1] < self.warmup_steps):
            with torch.no_grad():
                self.scale.copy_(lsq_init_scale(x() if callable(x) else x, self.qmax))
                self.initialized.fill_(True)
            state[0] = True
        if self.training:
            state[1] += 1
        if clamp:
            with torch.no_grad():
                # an optimizer step can push a learned step size to <= 0, which has no meaning
                self.scale.clamp_(min=1e-8)
        return self.scale

    def forward(self, x):
        return lsq_quantize(x, self.observe(x), self.qmax)

    def extra_repr(self):
        return f"bits={self.bits}, warmup_steps={self.warmup_steps}"

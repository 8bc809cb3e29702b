"""Quantize to INT4 and pack, in one pass: x (..., K) float -> (packed (..., K/2) uint8, fp32 scales).

What it computes (the spec is int4lab.spec.quantizers.quantize_int4_spec): each group of values gets a
scale s = max|x| / 7 (s = 1 for an all-zero group, whose codes are 0 anyway), or a given
per-tensor scale; each value becomes the code q = round(clamp(x / s, -7, 7)), an integer in
[-7, 7]; codes 2j and 2j+1 of a row share byte j (2j in the low nibble, as pack_int4).
The groups are
  - "row":    the K values of one row                 -> scales of shape x.shape[:-1] + (1,)
  - "block":  block_size consecutive values of a row  -> scales x.shape[:-1] + (K / block_size,)
  - "tensor": the whole tensor                        -> a 0-dim scale.

Memory layout and why: a row's bytes depend on a max over its whole group, so a program must
own whole groups: it can then find the max, divide and pack without writing anything twice.
We see the input as a grid of groups, each group = (row r, block b) of L = K or block_size
values, and each program takes BLOCK_G groups as a (BLOCK_G, HALF) tile of *pairs*: like
pack_int4, it loads the even and the odd elements with two strided loads, so codes 2j and 2j+1
land in the same tile position and packing is one OR, no interleaving. x is read once, each
output byte and scale is written once. Strides are passed in, so a transposed (non-contiguous)
2-D input needs no copy.

Per-tensor dynamic scale needs the max of the whole tensor before any code can be written,
which no single program sees. So it takes two passes: torch.aminmax finds max|x| (one read of
x), torch divides by 7 exactly as the spec does, then the kernel runs with that given scale.
With a given scale there is no reduction at all, so long rows are cut into chunks of at most
4096 values and every program just quantizes its chunk.

Rounding, bit for bit with the spec:
  - the spec divides in IEEE fp32 (correctly rounded); on a GPU Triton's `/` is an approximate
    division, so we call tl.math.div_rn, the correctly rounded one, for x / s and max / 7;
  - torch.round rounds half to EVEN (2.5 -> 2, 3.5 -> 4, -2.5 -> -2), not half away from zero:
    floor(v + 0.5) gets every exact tie with an odd floor wrong. We round with floor and an
    explicit tie rule, which means the same on the interpreter and on every GPU;
  - clamping to [-7, 7] before rounding gives the same codes as the spec's round-then-clamp.
Stochastic rounding rounds up with probability frac(v), so E[q] = v (unbiased): the spec's
floor(v + u), u ~ U[0, 1), written as floor(v) + (u < frac(v)) so that fp32 rounding of v + u
cannot push an integer v up. The draws come from tl.rand(seed, offset) with each element's flat
index as its offset, so a seed gives the same codes on every run and every tile size. They
are not torch's draws (the spec uses a torch Generator), so stochastic codes agree with the
spec in distribution, not bit for bit.
"""
import math

import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import round_half_to_even
from int4lab.spec.quantizers import QMAX, _as_scale, absmax_scale, validate_quantize_int4

TILE = 4096          # values per program: few programs for the interpreter, few registers on a GPU


@triton.jit
def round_stochastic(v, u):
    """floor(v) + 1 with probability frac(v): the law of floor(v + u), u ~ U[0, 1), minus its fp32
    rounding (in fp32, 2.0 + 0.99999997 is 3.0, so an integer v could round up)."""
    f = tl.floor(v)
    return tl.where(u < v - f, f + 1.0, f)


@triton.jit
def quantize_int4_kernel(x_ptr, p_ptr, s_ptr, given_ptr,
                         n_groups, nb, L, K, stride_r, stride_c, seed,
                         BLOCK_G: tl.constexpr, HALF: tl.constexpr, QP: tl.constexpr,
                         GIVEN_SCALE: tl.constexpr, STORE_SCALES: tl.constexpr,
                         STOCHASTIC: tl.constexpr):
    pid = tl.program_id(axis=0)
    g = pid * BLOCK_G + tl.arange(0, BLOCK_G)        # the groups this program owns
    j = tl.arange(0, HALF)                           # pair index inside a group
    row = (g // nb).to(tl.int64)                     # int64: row * stride can pass 2**31
    col = (g % nb)[:, None] * L + 2 * j[None, :]     # column of the even element of each pair
    g_ok = g < n_groups
    mask = g_ok[:, None] & (2 * j[None, :] < L) & (col < K)
    ptrs = x_ptr + row[:, None] * stride_r + col * stride_c
    x_even = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    x_odd = tl.load(ptrs + stride_c, mask=mask, other=0.0).to(tl.float32)

    if GIVEN_SCALE:
        s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0)     # every group reads the one scale
    else:
        amax = tl.maximum(tl.max(tl.abs(x_even), axis=1), tl.max(tl.abs(x_odd), axis=1))
        s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
    if STORE_SCALES:
        tl.store(s_ptr + g, s, mask=g_ok)

    v_even = tl.math.div_rn(x_even, s[:, None])
    v_odd = tl.math.div_rn(x_odd, s[:, None])
    v_even = tl.minimum(tl.maximum(v_even, -QP * 1.0), QP * 1.0)
    v_odd = tl.minimum(tl.maximum(v_odd, -QP * 1.0), QP * 1.0)
    if STOCHASTIC:
        flat = row[:, None].to(tl.int32) * K + col      # each element's own random number
        v_even = round_stochastic(v_even, tl.rand(seed, flat))
        v_odd = round_stochastic(v_odd, tl.rand(seed, flat + 1))
    else:
        v_even = round_half_to_even(v_even)
        v_odd = round_half_to_even(v_odd)

    lo = v_even.to(tl.int32) & 0xF                   # two's complement nibble: -1 -> 0xF
    hi = v_odd.to(tl.int32) & 0xF
    out = p_ptr + row[:, None] * (K // 2) + col // 2
    tl.store(out, (lo | (hi << 4)).to(tl.uint8), mask=mask)


def quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """Launcher: validate, choose the groups, launch one program per BLOCK_G groups."""
    validate_quantize_int4(x, granularity, block_size, rounding, seed, scale)   # the spec's checks
    qmax = QMAX[4]
    K, lead = x.shape[-1], tuple(x.shape[:-1])
    R = math.prod(lead)
    x2 = x.reshape(R, K)                             # a view whenever possible (no copy)
    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)

    given = None
    if scale is not None:
        given = _as_scale(scale).to(x.device)
    elif granularity == "tensor":
        # pass 1 of 2: the global max|x|, then the spec's own max / 7 (exact: same fp32 ops)
        if x.numel():
            lo, hi = torch.aminmax(x2)
            amax = torch.maximum(-lo, hi).float()
        else:
            amax = torch.zeros((), device=x.device)
        given = absmax_scale(amax, qmax)

    if granularity == "tensor":
        scales = given.clone()
        L = min(triton.next_power_of_2(max(K, 2)), TILE)  # no reduction: any chunk will do
        nb = triton.cdiv(K, L)
    else:
        nb = K // block_size if granularity == "block" else 1
        L = block_size if granularity == "block" else K
        scales = torch.empty(lead + (nb,), dtype=torch.float32, device=x.device)
    if x.numel() == 0:                               # nothing to quantize: scales as the spec
        if granularity != "tensor":
            scales.fill_(1.0 if given is None else float(given))
        return packed, scales

    n_groups = R * nb
    LP = triton.next_power_of_2(L)
    BLOCK_G = max(1, min(TILE // LP, triton.next_power_of_2(n_groups)))
    if rounding == "stochastic" and seed is None:                # fresh draws, as the spec's
        seed = int(torch.randint(0, 2**31 - 1, ()).item())          # unseeded generator
    seed = int(seed) & (2**63 - 1) if rounding == "stochastic" else 0
    grid = (triton.cdiv(n_groups, BLOCK_G),)
    quantize_int4_kernel[grid](
        x2, packed, scales, given if given is not None else scales,
        n_groups, nb, L, K, x2.stride(0), x2.stride(1),
        seed,
        BLOCK_G=BLOCK_G, HALF=LP // 2, QP=qmax,
        GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
        STOCHASTIC=rounding == "stochastic")
    return packed, scales

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
    floor(v + 0.5) gets every exact tie with an even floor wrong. round_half_to_even
    (kernels/rounding.py, shared by the quantizing kernels) rounds with floor and an explicit
    tie rule, which means the same on the interpreter and on every GPU;
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
    # TODO: f = tl.floor(v); return f + 1.0 where u < v - f (the fractional part), f elsewhere
    #       (tl.where).
    ### BEGIN SOLUTION
    f = tl.floor(v)
    return tl.where(u < v - f, f + 1.0, f)
    ### END SOLUTION


@triton.jit
def group_tile(pid, x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c,
               BLOCK_G: tl.constexpr, HALF: tl.constexpr):
    """The index set-up of program pid's tile of BLOCK_G groups (given: the exercise follows it).

    Group g is block g % nb of row g // nb: the L values from column (g % nb) * L on. Tile
    position [i, j] is pair j of group g[i]: its even element at column col[i, j], its odd one at
    col + 1. HALF is L / 2 rounded up to a power of two, so mask keeps real groups, pairs inside
    their group and columns inside the row (a "tensor" chunk can run past K).
    Returns g, g_ok (which groups exist) and row (int64), each (BLOCK_G,); col, mask, x_ptrs
    (the even elements: the odd ones are at x_ptrs + stride_c) and p_ptrs (each pair's output
    byte), each (BLOCK_G, HALF).
    """
    g = pid * BLOCK_G + tl.arange(0, BLOCK_G)        # the groups this program owns
    j = tl.arange(0, HALF)                           # pair index inside a group
    row = (g // nb).to(tl.int64)                     # int64: row * stride can pass 2**31
    col = (g % nb)[:, None] * L + 2 * j[None, :]     # column of the even element of each pair
    g_ok = g < n_groups
    mask = g_ok[:, None] & (2 * j[None, :] < L) & (col < K)
    x_ptrs = x_ptr + row[:, None] * stride_r + col * stride_c
    p_ptrs = p_ptr + row[:, None] * (K // 2) + col // 2      # packed is (R, K/2), in order
    return g, g_ok, row, col, mask, x_ptrs, p_ptrs


@triton.jit
def quantize_int4_kernel(x_ptr, p_ptr, s_ptr, given_ptr,
                         n_groups, nb, L, K, stride_r, stride_c, seed,
                         BLOCK_G: tl.constexpr, HALF: tl.constexpr, QP: tl.constexpr,
                         GIVEN_SCALE: tl.constexpr, STORE_SCALES: tl.constexpr,
                         STOCHASTIC: tl.constexpr):
    # Given: the index set-up of this program's tile (group_tile, above).
    g, g_ok, row, col, mask, x_ptrs, p_ptrs = group_tile(
        tl.program_id(axis=0), x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c, BLOCK_G, HALF)

    # TODO 1: load the even elements (x_ptrs) and the odd ones (x_ptrs + stride_c), masked with
    #         other=0.0, and convert both to tl.float32: x_even, x_odd, each (BLOCK_G, HALF).
    ### BEGIN SOLUTION
    x_even = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    x_odd = tl.load(x_ptrs + stride_c, mask=mask, other=0.0).to(tl.float32)
    ### END SOLUTION
    # TODO 2: s, one scale per group, shape (BLOCK_G,).
    #         - GIVEN_SCALE: every group reads the one value at given_ptr:
    #           s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0).
    #         - else: amax = the larger of tl.max(tl.abs(x_even), axis=1) and
    #           tl.max(tl.abs(x_odd), axis=1) (tl.maximum); s = tl.math.div_rn(amax, QP * 1.0)
    #           (the correctly rounded division), or 1.0 where amax is 0 (tl.where(amax > 0.0, ...)).
    #         Then, if STORE_SCALES, store s at s_ptr + g (mask g_ok).
    ### BEGIN SOLUTION
    if GIVEN_SCALE:
        s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0)     # every group reads the one scale
    else:
        amax = tl.maximum(tl.max(tl.abs(x_even), axis=1), tl.max(tl.abs(x_odd), axis=1))
        s = tl.where(amax > 0.0, tl.math.div_rn(amax, QP * 1.0), 1.0)
    if STORE_SCALES:
        tl.store(s_ptr + g, s, mask=g_ok)
    ### END SOLUTION
    # TODO 3: v_even = tl.math.div_rn(x_even, s[:, None]) (not `/`: approximate on a GPU), the
    #         same for v_odd; then clamp both to [-QP, QP]:
    #         tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0).
    ### BEGIN SOLUTION
    v_even = tl.math.div_rn(x_even, s[:, None])
    v_odd = tl.math.div_rn(x_odd, s[:, None])
    v_even = tl.minimum(tl.maximum(v_even, -QP * 1.0), QP * 1.0)
    v_odd = tl.minimum(tl.maximum(v_odd, -QP * 1.0), QP * 1.0)
    ### END SOLUTION
    # TODO 4: round v_even and v_odd.
    #         - STOCHASTIC: each element draws its own uniform u from tl.rand(seed, offsets), with
    #           its flat index as offset: flat = row[:, None].to(tl.int32) * K + col for the even
    #           elements, flat + 1 for the odd ones; then round_stochastic(v, u) (above).
    #         - else: round_half_to_even(v), the given helper (imported above), torch.round's rule.
    ### BEGIN SOLUTION
    if STOCHASTIC:
        flat = row[:, None].to(tl.int32) * K + col      # each element's own random number
        v_even = round_stochastic(v_even, tl.rand(seed, flat))
        v_odd = round_stochastic(v_odd, tl.rand(seed, flat + 1))
    else:
        v_even = round_half_to_even(v_even)
        v_odd = round_half_to_even(v_odd)
    ### END SOLUTION
    # TODO 5: pack: lo = v_even.to(tl.int32) & 0xF (two's complement nibble: -1 -> 0xF),
    #         hi = the same for v_odd; store (lo | (hi << 4)).to(tl.uint8) at p_ptrs (mask).
    ### BEGIN SOLUTION
    lo = v_even.to(tl.int32) & 0xF
    hi = v_odd.to(tl.int32) & 0xF
    tl.store(p_ptrs, (lo | (hi << 4)).to(tl.uint8), mask=mask)
    ### END SOLUTION


def given_scale(x, granularity, scale):
    """The one scale of every group, when there is one (the kernel's GIVEN_SCALE), as a 0-dim
    fp32 tensor on x's device: the `scale` argument; else for "tensor" the per-tensor scale
    max|x| / 7, which needs the max of the whole tensor before any code can be written (pass 1
    of 2); else None (each group finds its own scale in the kernel)."""
    if scale is not None:
        return _as_scale(scale).to(x.device)
    if granularity != "tensor":
        return None
    # the global max|x|, then the spec's own max / 7 (exact: the same fp32 ops)
    if x.numel():
        lo, hi = torch.aminmax(x)
        amax = torch.maximum(-lo, hi).float()
    else:
        amax = torch.zeros((), device=x.device)
    return absmax_scale(amax, QMAX[4])


def quantize_int4(x, granularity="row", block_size=32, rounding="nearest", seed=None, scale=None):
    """x (..., K) float -> (packed (..., K/2) uint8, fp32 scales), as quantize_int4_spec:
    validate, choose the groups, launch one program per BLOCK_G groups."""
    validate_quantize_int4(x, granularity, block_size, rounding, seed, scale)   # the spec's checks
    # TODO 1: given = given_scale(x, granularity, scale) (above: a 0-dim tensor or None).
    #         K = x.shape[-1], lead = tuple(x.shape[:-1]), R = math.prod(lead) rows (also right
    #         when K is 0); x2 = x.reshape(R, K): a view whenever possible, no copy (the kernel
    #         takes its strides, so a transposed x is fine).
    # TODO 2: the groups, nb per row of L values each:
    #         - "row": L = K, nb = 1;  "block": L = block_size, nb = K // block_size;
    #         - "tensor": the kernel reduces nothing (its scale is given), so cut rows into chunks:
    #           L = min(triton.next_power_of_2(max(K, 2)), TILE), nb = triton.cdiv(K, L).
    # TODO 3: allocate packed = torch.empty(lead + (K // 2,), dtype=torch.uint8) and the scales:
    #         given.clone() (0-dim) for "tensor", else torch.empty(lead + (nb,), dtype=torch.float32)
    #         (both on x.device). If x is empty, nothing to launch: for "row" and "block" fill the
    #         scales with 1.0, or float(given) when there is a given scale; return packed, scales.
    # TODO 4: the seed: with rounding="stochastic" and seed None, draw a fresh one,
    #         int(torch.randint(0, 2**31 - 1, ()).item()); the kernel gets int(seed) & (2**63 - 1)
    #         for stochastic rounding (a non-negative int64), 0 for nearest.
    # TODO 5: n_groups = R * nb; LP = triton.next_power_of_2(L); BLOCK_G = max(1, min(TILE // LP,
    #         triton.next_power_of_2(n_groups))) groups per program (at most TILE values each).
    #         Launch quantize_int4_kernel on (triton.cdiv(n_groups, BLOCK_G),) programs with
    #         x2, packed, scales, given (or scales when given is None: never read then), n_groups,
    #         nb, L, K, x2.stride(0), x2.stride(1), seed, BLOCK_G=BLOCK_G, HALF=LP // 2, QP=QMAX[4],
    #         GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
    #         STOCHASTIC=rounding == "stochastic". Return packed, scales.
    ### BEGIN SOLUTION
    given = given_scale(x, granularity, scale)
    K, lead = x.shape[-1], tuple(x.shape[:-1])
    R = math.prod(lead)
    x2 = x.reshape(R, K)                             # a view whenever possible (no copy)
    if granularity == "tensor":
        L = min(triton.next_power_of_2(max(K, 2)), TILE)  # no reduction: any chunk will do
        nb = triton.cdiv(K, L)
    else:
        nb = K // block_size if granularity == "block" else 1
        L = block_size if granularity == "block" else K

    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)
    if granularity == "tensor":
        scales = given.clone()
    else:
        scales = torch.empty(lead + (nb,), dtype=torch.float32, device=x.device)
    if x.numel() == 0:                               # nothing to quantize: scales as the spec
        if granularity != "tensor":
            scales.fill_(1.0 if given is None else float(given))
        return packed, scales

    if rounding == "stochastic" and seed is None:                # fresh draws, as the spec's
        seed = int(torch.randint(0, 2**31 - 1, ()).item())          # unseeded generator
    seed = int(seed) & (2**63 - 1) if rounding == "stochastic" else 0

    n_groups = R * nb
    LP = triton.next_power_of_2(L)
    BLOCK_G = max(1, min(TILE // LP, triton.next_power_of_2(n_groups)))
    grid = (triton.cdiv(n_groups, BLOCK_G),)
    quantize_int4_kernel[grid](
        x2, packed, scales, given if given is not None else scales,
        n_groups, nb, L, K, x2.stride(0), x2.stride(1),
        seed,
        BLOCK_G=BLOCK_G, HALF=LP // 2, QP=QMAX[4],
        GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
        STOCHASTIC=rounding == "stochastic")
    return packed, scales
    ### END SOLUTION

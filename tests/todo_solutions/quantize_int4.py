import math

import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import divide_rn, nibble_rn
from int4lab.spec.quantizers import QMAX, _as_scale, absmax_scale, validate_quantize_int4

TILE = 4096          # values per program: few programs for the interpreter, few registers on a GPU


@triton.jit
def round_stochastic(v, u):
    """floor(v) + 1 with probability frac(v): the law of floor(v + u), u ~ U[0, 1), minus its fp32
    rounding (in fp32, 2.0 + 0.99999997 is 3.0, so an integer v could round up)."""
    # TODO: f = tl.floor(v); return f + 1.0 where u < v - f (the fractional part), f elsewhere
    #       (tl.where).
    f = tl.floor(v)
    return tl.where(u < v - f, f + 1.0, f)


@triton.jit
def group_tile(pid, x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c,
               BLOCK_G: tl.constexpr, LP: tl.constexpr):
    """The index set-up of program pid's tile of BLOCK_G groups (given: the exercise follows it).

    Group g is block g % nb of row g // nb: the L values from column start = (g % nb) * L on.
    Tile position [i, k] is value k of group g[i], at column start[i] + k: along a tile row the
    columns are consecutive, so a contiguous x is read with wide (16-byte) loads. LP is L
    rounded up to a power of two (at least 4), so mask keeps real groups, values inside their
    group and columns inside the row (a "tensor" chunk can run past K). The packed bytes form
    the (BLOCK_G, LP // 2) tile of pairs: byte j of group g[i] holds its values 2j and 2j + 1.
    Returns g, g_ok (which groups exist), row (int64) and start, each (BLOCK_G,); mask and
    x_ptrs, each (BLOCK_G, LP); p_mask and p_ptrs (the output bytes), each (BLOCK_G, LP // 2).
    """
    g = pid * BLOCK_G + tl.arange(0, BLOCK_G)        # the groups this program owns
    row = (g // nb).to(tl.int64)                     # int64: row * stride can pass 2**31
    start = (g % nb) * L                             # each group's first column
    g_ok = g < n_groups
    k = tl.arange(0, LP)                             # value index inside a group
    col = start[:, None] + k[None, :]
    mask = g_ok[:, None] & (k[None, :] < L) & (col < K)
    x_ptrs = x_ptr + row[:, None] * stride_r + col * stride_c
    j = tl.arange(0, LP // 2)                        # pair (byte) index inside a group
    pcol = start[:, None] // 2 + j[None, :]          # packed is (R, K/2), in order
    p_mask = g_ok[:, None] & (j[None, :] < L // 2) & (pcol < K // 2)
    p_ptrs = p_ptr + row[:, None] * (K // 2) + pcol
    return g, g_ok, row, start, mask, x_ptrs, p_mask, p_ptrs


@triton.jit
def uniform_tile(seed, row, start, K, BLOCK_G: tl.constexpr, LP: tl.constexpr):
    """A uniform u in [0, 1) for every value of the (BLOCK_G, LP) tile (given).

    One Philox call per 4 consecutive values: tl.randint4x returns 4 random words per call, where
    tl.rand keeps 1 of them. The 4 values from column c of a row on use the call at offset
    row * K + c (an int32, like tl.rand's offsets): every group of 4 has its own offset, and a
    seed gives the same numbers whatever the tile size.
    """
    c = start[:, None] + 4 * tl.arange(0, LP // 4)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, row[:, None].to(tl.int32) * K + c)
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK_G, LP))   # value 4i+t: r_t
    return tl.random.uint_to_uniform_float(r)


@triton.jit
def quantize_int4_kernel(x_ptr, p_ptr, s_ptr, given_ptr,
                         n_groups, nb, L, K, stride_r, stride_c, seed,
                         BLOCK_G: tl.constexpr, LP: tl.constexpr, QP: tl.constexpr,
                         GIVEN_SCALE: tl.constexpr, STORE_SCALES: tl.constexpr,
                         STOCHASTIC: tl.constexpr):
    # Given: the index set-up of this program's tile (group_tile, above).
    g, g_ok, row, start, mask, x_ptrs, p_mask, p_ptrs = group_tile(
        tl.program_id(axis=0), x_ptr, p_ptr, n_groups, nb, L, K, stride_r, stride_c, BLOCK_G, LP)

    # TODO 1: load the tile, x = tl.load(x_ptrs, mask=mask, other=0.0), and convert it to
    #         tl.float32: x is (BLOCK_G, LP), each row one group.
    # TODO 2: s, one scale per group, shape (BLOCK_G,).
    #         - GIVEN_SCALE: every group reads the one value at given_ptr:
    #           s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0). Values beyond 7 s clip:
    #           clamp x to [-m, m] now, m = (QP * s)[:, None]: x = tl.minimum(tl.maximum(x, -m), m)
    #           (this also keeps x / s finite).
    #         - else: amax = tl.max(tl.abs(x), axis=1); s = divide_rn(amax, QP * 1.0) (the given
    #           correctly rounded division, as torch's amax / 7), or 1.0 where amax is 0
    #           (tl.where(amax > 0.0, ..., 1.0)). No clamp: |x| <= amax = 7 s.
    #         Then, if STORE_SCALES, store s at s_ptr + g (mask g_ok).
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    if GIVEN_SCALE:
        s = tl.load(given_ptr + 0 * g, mask=g_ok, other=1.0)
        m = (QP * s)[:, None]
        x = tl.minimum(tl.maximum(x, -m), m)
    else:
        amax = tl.max(tl.abs(x), axis=1)
        s = tl.where(amax > 0.0, divide_rn(amax, QP * 1.0), 1.0)
    if STORE_SCALES:
        tl.store(s_ptr + g, s, mask=g_ok)
    # TODO 3: v = divide_rn(x, s[:, None]): x / s correctly rounded, as the spec's fp32 division
    #         (given; `/` is approximate on a GPU). Pass s as a column, s[:, None]: what depends
    #         on s alone is then computed once per group, not once per value.
    # TODO 4: codes, the 4-bit code of every value: an int32 whose low 4 bits are the code.
    #         - STOCHASTIC: clamp v to [-QP, QP], tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)
    #           (floor(7.0000005 + u) could be 8), then v = round_stochastic(v, u) (above) with
    #           u = uniform_tile(seed, row, start, K, BLOCK_G, LP) (given, above).
    #         - either way, then: codes = nibble_rn(v) (given): rounds half to even, as
    #           torch.round (a whole v, as after round_stochastic, stays as it is).
    v = divide_rn(x, s[:, None])
    if STOCHASTIC:
        v = tl.minimum(tl.maximum(v, -QP * 1.0), QP * 1.0)
        u = uniform_tile(seed, row, start, K, BLOCK_G, LP)
        v = round_stochastic(v, u)
    codes = nibble_rn(v)
    # TODO 5: pack: even, odd = tl.split(tl.reshape(codes, (BLOCK_G, LP // 2, 2))) are the codes
    #         2j and 2j+1 of each group; store (even | (odd << 4)).to(tl.uint8) at p_ptrs
    #         (mask p_mask).
    even, odd = tl.split(tl.reshape(codes, (BLOCK_G, LP // 2, 2)))
    tl.store(p_ptrs, (even | (odd << 4)).to(tl.uint8), mask=p_mask)


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
    # TODO 5: n_groups = R * nb; LP = max(4, triton.next_power_of_2(L)) (uniform_tile draws 4
    #         values at a time); BLOCK_G = max(1, min(TILE // LP, triton.next_power_of_2(n_groups)))
    #         groups per program (at most TILE values each, but always a whole group).
    #         Launch quantize_int4_kernel on (triton.cdiv(n_groups, BLOCK_G),) programs with
    #         x2, packed, scales, given (or scales when given is None: never read then), n_groups,
    #         nb, L, K, x2.stride(0), x2.stride(1), seed, BLOCK_G=BLOCK_G, LP=LP, QP=QMAX[4],
    #         GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
    #         STOCHASTIC=rounding == "stochastic", num_warps=min(32, max(4, LP // 1024)) (a
    #         thread per 32 values of a long row, so that registers do not grow with K).
    #         Return packed, scales.
    given = given_scale(x, granularity, scale)
    K = x.shape[-1]
    lead = tuple(x.shape[:-1])
    R = math.prod(lead)
    x2 = x.reshape(R, K)
    if granularity == "row":
        L, nb = K, 1
    elif granularity == "block":
        L, nb = block_size, K // block_size
    else:
        L = min(triton.next_power_of_2(max(K, 2)), TILE)
        nb = triton.cdiv(K, L)
    packed = torch.empty(lead + (K // 2,), dtype=torch.uint8, device=x.device)
    if granularity == "tensor":
        scales = given.clone()
    else:
        scales = torch.empty(lead + (nb,), dtype=torch.float32, device=x.device)
    if x.numel() == 0:
        if granularity in ("row", "block"):
            scales.fill_(float(given) if given is not None else 1.0)
        return packed, scales
    if rounding == "stochastic" and seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    kseed = int(seed) & (2**63 - 1) if rounding == "stochastic" else 0
    n_groups = R * nb
    LP = max(4, triton.next_power_of_2(L))
    BLOCK_G = max(1, min(TILE // LP, triton.next_power_of_2(n_groups)))
    quantize_int4_kernel[(triton.cdiv(n_groups, BLOCK_G),)](
        x2, packed, scales, given if given is not None else scales, n_groups,
        nb, L, K, x2.stride(0), x2.stride(1), kseed, BLOCK_G=BLOCK_G, LP=LP, QP=QMAX[4],
        GIVEN_SCALE=given is not None, STORE_SCALES=granularity != "tensor",
        STOCHASTIC=rounding == "stochastic", num_warps=min(32, max(4, LP // 1024)))
    return packed, scales



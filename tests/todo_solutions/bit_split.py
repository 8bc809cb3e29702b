import torch
import triton
import triton.language as tl

from int4lab.kernels.rounding import round_half_to_even
from int4lab.spec.gradients import kernel_seed, validate_bit_split

BLOCK_R = 32      # rows per program
BLOCK_B = 64      # output bytes per program and row (128 input columns)


@triton.jit
def absmax_kernel(g_ptr, amax_ptr, N, C, stride_n, stride_c,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # Pass 1: max|g| over the whole (N, C) tensor into one fp32 cell (zero-initialized by the
    # launcher). A 2-D grid: program (pid_r, pid_c) owns a tile of BLOCK_R rows x BLOCK_C columns.
    # TODO 1: this program's rows, rows = tl.program_id(axis=0) * BLOCK_R + tl.arange(0, BLOCK_R),
    #         and columns, cols = tl.program_id(axis=1) * BLOCK_C + tl.arange(0, BLOCK_C); a 2-D
    #         mask = (rows < N)[:, None] & (cols < C)[None, :].
    rows = tl.program_id(axis=0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(axis=1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < N)[:, None] & (cols < C)[None, :]
    # TODO 2: load the tile through the strides, at g_ptr + rows.to(tl.int64)[:, None] * stride_n
    #         + cols[None, :] * stride_c (int64 rows: row * stride may pass 2**31), masked with
    #         other=0.0, and convert it to tl.float32.
    x = tl.load(g_ptr + rows.to(tl.int64)[:, None] * stride_n + cols[None, :] * stride_c,
                mask=mask, other=0.0)
    x = x.to(tl.float32)
    # TODO 3: reduce |x| to one number, tl.max along axis 1 and then along axis 0, and combine it
    #         into the one cell with tl.atomic_max(amax_ptr, tile_max).
    tile_max = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    tl.atomic_max(amax_ptr, tile_max)


@triton.jit
def _split(g, s, u):
    """hi and lo (fp32 holding integers) of g (fp32) for scale s and noise u in [-1/2, 1/2)."""
    # TODO 1: v = g * s. hi = round_half_to_even(tl.math.div_rn(v, 14.0)), clamped to [-6, 6]
    #         (tl.maximum with -6.0, then tl.minimum with 6.0). round_half_to_even is GIVEN
    #         (imported above): torch.round for fp32, exact ties to the even neighbour, so
    #         v / 14 = 0.5 gives 0 as in the spec.
    v = g * s
    hi = round_half_to_even(tl.math.div_rn(v, 14.0))
    hi = tl.minimum(tl.maximum(hi, -6.0), 6.0)
    # TODO 2: lo = round_half_to_even((v - 14.0 * hi) + u), clamped to [-6, 6] the same way: the
    #         remainder that hi leaves, stochastically rounded (u is uniform in [-1/2, 1/2)).
    #         Return hi, lo.
    lo = round_half_to_even((v - 14.0 * hi) + u)
    lo = tl.minimum(tl.maximum(lo, -6.0), 6.0)
    return hi, lo


@triton.jit
def bit_split_kernel(g_ptr, amax_ptr, hi_ptr, lo_ptr, scale_hi_ptr, scale_lo_ptr,
                     N, C, stride_n, stride_c, seed,
                     BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    # Pass 2: BLOCK_R rows x BLOCK_B output bytes of hi and lo per program (2-D grid).
    # GIVEN: this program's tile. Output byte j of a row packs columns 2j (low nibble) and 2j + 1
    # (high nibble), so the even and the odd columns of g come in two strided loads. offs is
    # each output byte's flat index n * C/2 + j in hi and lo (both contiguous (N, C/2)).
    pid_r = tl.program_id(axis=0)
    pid_b = tl.program_id(axis=1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    byts = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    n_bytes = C // 2
    mask = (rows < N)[:, None] & (byts < n_bytes)[None, :]
    row_off = rows.to(tl.int64)[:, None] * stride_n
    even = tl.load(g_ptr + row_off + (2 * byts)[None, :] * stride_c, mask=mask, other=0.0)
    odd = tl.load(g_ptr + row_off + (2 * byts + 1)[None, :] * stride_c, mask=mask, other=0.0)
    offs = rows.to(tl.int64)[:, None] * n_bytes + byts[None, :]

    # TODO 1: the scales, in this order, which reproduces torch's bits (torch evaluates 196 / t
    #         for a tensor t as reciprocal(t) * 196, and 14 / s as reciprocal(s) * 14); every
    #         "/" is tl.math.div_rn, the IEEE division:
    #           amax = tl.load(amax_ptr)
    #           s = 196.0 * div_rn(1.0, 2.0 * amax) where amax > 0.0, else 1.0 (an all-zero g).
    #               Divide by tl.where(amax > 0.0, 2.0 * amax, 1.0), then pick with tl.where,
    #               so that nothing divides by zero.
    #           scale_lo = div_rn(1.0, s), then scale_hi = 14.0 * scale_lo.
    #         Only program (0, 0) stores them: tl.store(scale_hi_ptr, ..., mask=first) and the
    #         same for scale_lo, with first = (pid_r == 0) & (pid_b == 0).
    amax = tl.load(amax_ptr)
    s = 196.0 * tl.math.div_rn(1.0, tl.where(amax > 0.0, 2.0 * amax, 1.0))
    s = tl.where(amax > 0.0, s, 1.0)
    scale_lo = tl.math.div_rn(1.0, s)
    scale_hi = 14.0 * scale_lo
    first = (pid_r == 0) & (pid_b == 0)
    tl.store(scale_hi_ptr, scale_hi, mask=first)
    tl.store(scale_lo_ptr, scale_lo, mask=first)

    # TODO 2: the noise, one Philox call per output byte: u_even, u_odd, _, _ =
    #         tl.rand4x(seed, offs) gives four independent uniforms in [0, 1) per byte; subtract
    #         0.5 from u_even and from u_odd (uniform in [-1/2, 1/2)). Then split both halves:
    #         hi_e, lo_e = _split(even.to(tl.float32), s, u_even), and hi_o, lo_o from odd and u_odd.
    u_even, u_odd, _, _ = tl.rand4x(seed, offs)
    u_even = u_even - 0.5
    u_odd = u_odd - 0.5
    hi_e, lo_e = _split(even.to(tl.float32), s, u_even)
    hi_o, lo_o = _split(odd.to(tl.float32), s, u_odd)

    # TODO 3: pack as in lesson 01, in int32 (two's complement nibbles): hi_byte =
    #         (hi_e.to(tl.int32) & 0xF) | ((hi_o.to(tl.int32) & 0xF) << 4), element 2j in the low
    #         nibble; lo_byte the same from lo_e and lo_o. Store both as tl.uint8 at
    #         hi_ptr + offs and lo_ptr + offs (mask=mask).
    hi_byte = (hi_e.to(tl.int32) & 0xF) | ((hi_o.to(tl.int32) & 0xF) << 4)
    lo_byte = (lo_e.to(tl.int32) & 0xF) | ((lo_o.to(tl.int32) & 0xF) << 4)
    tl.store(hi_ptr + offs, hi_byte.to(tl.uint8), mask=mask)
    tl.store(lo_ptr + offs, lo_byte.to(tl.uint8), mask=mask)


def bit_split(g: torch.Tensor, seed=None):
    """Launcher: validate, find max|g| (pass 1), split and pack (pass 2).

    Returns (hi packed (N, C/2) uint8, lo packed (N, C/2) uint8, scale_hi, scale_lo), the
    scales 0-dim fp32 tensors with g ~ hi * scale_hi + lo * scale_lo.
    """
    validate_bit_split(g, seed)                  # the spec's own checks: the same messages
    # fp16/fp32 are read as they are and widened in registers. fp64 becomes fp32 first, as in
    # the spec; bf16 too on the CPU, where the interpreter has no bf16 (exact either way).
    if g.dtype == torch.float64 or (g.dtype == torch.bfloat16 and g.device.type == "cpu"):
        g = g.float()
    N, C = g.shape
    # TODO 1: allocate hi and lo, torch.empty((N, C // 2), dtype=torch.uint8, device=g.device).
    #         An empty g (g.numel() == 0) has nothing to split: return (hi, lo,
    #         torch.tensor(14.0, device=g.device), torch.tensor(1.0, device=g.device)), the
    #         scales of s = 1.
    hi = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    lo = torch.empty((N, C // 2), dtype=torch.uint8, device=g.device)
    if g.numel() == 0:
        return (hi, lo, torch.tensor(14.0, device=g.device), torch.tensor(1.0, device=g.device))
    # TODO 2: amax = torch.zeros((), dtype=torch.float32, device=g.device) (atomic_max combines
    #         into it, so it must start at 0), and two 0-dim fp32 scales with torch.empty((), ...).
    amax = torch.zeros((), dtype=torch.float32, device=g.device)
    scale_hi = torch.empty((), dtype=torch.float32, device=g.device)
    scale_lo = torch.empty((), dtype=torch.float32, device=g.device)
    # TODO 3: launch absmax_kernel on (triton.cdiv(N, BLOCK_R), triton.cdiv(C, 2 * BLOCK_B))
    #         programs with (g, amax, N, C, g.stride(0), g.stride(1)), BLOCK_R=BLOCK_R and
    #         BLOCK_C=2 * BLOCK_B.
    grid1 = (triton.cdiv(N, BLOCK_R), triton.cdiv(C, 2 * BLOCK_B))
    absmax_kernel[grid1](g, amax, N, C, g.stride(0), g.stride(1),
                         BLOCK_R=BLOCK_R, BLOCK_C=2 * BLOCK_B)
    # TODO 4: launch bit_split_kernel on (triton.cdiv(N, BLOCK_R), triton.cdiv(C // 2, BLOCK_B))
    #         programs with (g, amax, hi, lo, scale_hi, scale_lo, N, C, g.stride(0), g.stride(1),
    #         kernel_seed(seed)), BLOCK_R=BLOCK_R and BLOCK_B=BLOCK_B. kernel_seed is GIVEN
    #         (imported above): seed=None draws a fresh seed. Return (hi, lo, scale_hi, scale_lo).
    grid2 = (triton.cdiv(N, BLOCK_R), triton.cdiv(C // 2, BLOCK_B))
    bit_split_kernel[grid2](g, amax, hi, lo, scale_hi, scale_lo, N, C, g.stride(0), g.stride(1),
                            kernel_seed(seed), BLOCK_R=BLOCK_R, BLOCK_B=BLOCK_B)
    return (hi, lo, scale_hi, scale_lo)

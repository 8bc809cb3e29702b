"""Slot int4_matmul (lesson 03): C = (A_codes · B_codesᵀ) · s_A · s_Bᵀ from packed INT4 operands.

The checks cover odd M, N and K/2 (1, 31, 33, 127, 129: none a multiple of a power-of-two
tile, so a missing mask on any of the three axes shows), per-row and per-tensor scales, every
out_dtype the interpreter has (int32 raw products compared bit for bit, fp32 and fp16 within a
few ulps; bf16 only on a GPU), non-contiguous and sliced operands and empty outputs. The hints
recompute the product the usual bugs would give (codes not sign-extended, nibbles swapped in
one operand, one nibble half left out, the in-place unpack's factor 256 not shifted out, the K
tail dropped, scales forgotten or on the wrong axis) and name the one that matches.
"""
import torch

from int4lab import runtime
from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Slot, register
from int4lab.exercises.slots.common import generator, noncontiguous
from int4lab.spec.packing import pack_int4, unpack_int4
from int4lab.spec.quantizers import int4_matmul_spec, int4_matmul_trusted, validate_int4_matmul

# relative tolerance per output dtype: a correct kernel matches the spec exactly on the CPU
# (same fp32 products, same order); a few ulps leave room for another order of the scales.
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


# ---- inputs ---------------------------------------------------------------------------------

def _scale(shape, g, low=0.01, high=0.1):
    return low + (high - low) * torch.rand(shape, generator=g)


def _make(M, N, KH, out_dtype=torch.float32, scales="row", layout="contiguous", fill=None,
          scale_dtype=torch.float32, edit=None):
    """A maker of (args, kwargs) for one check.

    scales: "row" (a: (M, 1), b: (N, 1)), "tensor" (both 0-dim) or "mixed" (a per row, b per
    tensor). layout: "contiguous", "noncontiguous" (transposed storage) or "sliced" (a window
    of a wider buffer, so the row stride is not K/2). fill: every code set to this value.
    edit(qa, qb, sa, sb, g) may change the codes and scales in place (zero rows, outliers).
    """
    def make(seed, device):
        g = generator(seed)
        qa = torch.randint(-8, 8, (M, 2 * KH), generator=g, dtype=torch.int8)
        qb = torch.randint(-8, 8, (N, 2 * KH), generator=g, dtype=torch.int8)
        if fill is not None:
            qa.fill_(fill)
            qb.fill_(fill)
        if scales == "tensor":
            sa, sb = _scale((), g), _scale((), g)
        elif scales == "mixed":
            sa, sb = _scale((M, 1), g), _scale((), g)
        else:
            sa, sb = _scale((M, 1), g), _scale((N, 1), g)
        if edit is not None:
            edit(qa, qb, sa, sb, g)
        a, b = pack_int4(qa).to(device), pack_int4(qb).to(device)
        if layout == "noncontiguous":           # same values, column-major storage
            a, b = noncontiguous(a), noncontiguous(b)
        elif layout == "sliced":                # windows of wider buffers: row stride != K/2
            a = torch.cat([a.new_zeros(M, 3), a, a.new_full((M, 5), 0x77)], dim=1)[:, 3:3 + KH]
            b = torch.cat([b.new_full((N, 7), 0x88), b], dim=1)[:, 7:]
        return (a, sa.to(scale_dtype).to(device), b, sb.to(scale_dtype).to(device)), \
            {"out_dtype": out_dtype}
    return make


def _zero_rows(qa, qb, sa, sb, g):
    qa[::3] = 0                     # whole rows of A are zero: those rows of C are exactly 0
    qb[1::4] = 0


def _outlier(qa, qb, sa, sb, g):
    sa.view(-1)[sa.numel() // 2] = 1e4      # one row of A with a huge scale, the rest ~0.05
    qa[0] = 7
    qb[0] = -8


def _alternating(qa, qb, sa, sb, g):
    qa[:, 0::2], qa[:, 1::2] = 7, -8        # even k and odd k as different as they get
    qb[:, 0::2], qb[:, 1::2] = -8, 7


# ---- comparing ------------------------------------------------------------------------------

def _compare(expected, got, args, kwargs):
    if expected.dtype == torch.int32:
        return compare.exact(expected, got, what="C (the int32 accumulator)")
    rtol = RTOL[expected.dtype]
    # values are integer sums times scales: any error is relative, atol only absorbs rounding
    # of results that are tiny next to the largest one
    atol = rtol * 1e-3 * float(expected.abs().max()) if expected.numel() else 0.0
    return compare.close(rtol=rtol, atol=atol)(expected, got, what="C")


# ---- hints ----------------------------------------------------------------------------------

def _codes(p, signed=True):
    """Codes of a packed matrix as fp64 (exact), signed (correct) or as raw nibbles 0..15."""
    if signed:
        return unpack_int4(p.cpu()).double()
    b = p.cpu().to(torch.int16)
    return torch.stack((b & 0xF, b >> 4), dim=-1).reshape(p.shape[0], -1).double()


def _swap_halves(q):
    """Even and odd columns exchanged: what reading the nibbles the wrong way round gives."""
    s = q.clone()
    s[:, 0::2], s[:, 1::2] = q[:, 1::2], q[:, 0::2]
    return s


def _scales(args):
    _, sa, _, sb = args
    sa = sa.cpu().float()
    sb = sb.cpu().float()
    return sa, (sb.reshape(1, -1) if sb.dim() else sb)


def _finish(acc, args, kwargs):
    """An integer product as the kernel would return it with correct scales and dtype."""
    out_dtype = kwargs.get("out_dtype", torch.float32)
    if out_dtype == torch.int32:
        return acc.to(torch.int64).to(torch.int32)
    sa, sb = _scales(args)
    return (acc.float() * sa * sb).to(out_dtype)


def _same(expected, got, candidate):
    if got.shape != candidate.shape or got.dtype != candidate.dtype:
        return False
    if got.dtype == torch.int32:
        return torch.equal(got.cpu(), candidate)
    rtol = RTOL[got.dtype]
    atol = rtol * 1e-3 * float(expected.abs().max().cpu()) if expected.numel() else 0.0
    return torch.allclose(got.cpu().float(), candidate.float(), rtol=rtol, atol=atol)


def _usable(expected, got):
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and got.dtype == expected.dtype and got.numel() > 0)


def _hint_dtype(args, kwargs, expected, got):
    if not isinstance(got, torch.Tensor) or got.dtype == expected.dtype:
        return None
    want = str(expected.dtype).replace("torch.", "")
    if expected.dtype == torch.int32:
        return ("out_dtype=torch.int32 asks for the raw int32 accumulator: no scales, and C "
                "allocated with torch.empty((M, N), dtype=torch.int32)")
    return f"allocate C with the requested out_dtype: torch.empty((M, N), dtype=torch.{want})"


def _hint_shape(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape != expected.shape:
        M, N = args[0].shape[0], args[2].shape[0]
        return (f"C has one row per row of a and one column per row of b (b is an nn.Linear "
                f"weight, (out, in)): here ({M}, {N})")
    return None


def _hint_codes(args, kwargs, expected, got):
    """Bugs in reading the nibbles: sign, order, a half left out."""
    if not _usable(expected, got):
        return None
    a, _, b, _ = args
    A, B = _codes(a), _codes(b)
    uA, uB = _codes(a, signed=False), _codes(b, signed=False)
    # codes read as 0..15 in both operands, only in a, only in b; name the operand when only
    # one of the three fits (with few or symmetric codes several can)
    unsigned = [(uA @ uB.T, ""), (uA @ B.T, " in a"), (A @ uB.T, " in b")]
    fits = [where for acc, where in unsigned if _same(expected, got, _finish(acc, args, kwargs))]
    if fits:
        return (f"C matches codes read as 0..15{fits[0] if len(fits) == 1 else ''}: sign-extend "
                "each nibble (a nibble n >= 8 is the code n - 16, e.g. tl.where(n >= 8, n - 16, "
                "n)) before the dot")
    candidates = [
        # swapping the nibbles of one operand, or dotting lo with hi, give the same sum
        (_swap_halves(A) @ B.T, "C pairs even k of one operand with odd k of the other: the low "
                                "nibble is element 2j and the high one 2j+1 in BOTH a and b, and "
                                "the two dots are lo·lo and hi·hi (never lo·hi)"),
        (A[:, 0::2] @ B[:, 0::2].T, "only the low nibbles (even k) are summed: add the dot of the "
                                    "high nibbles (odd k) into the same accumulator"),
        (A[:, 1::2] @ B[:, 1::2].T, "only the high nibbles (odd k) are summed: add the dot of the "
                                    "low nibbles (even k) into the same accumulator"),
    ]
    for acc, text in candidates:
        if _same(expected, got, _finish(acc, args, kwargs)):
            return text
    return None


def _hint_shift_back(args, kwargs, expected, got):
    """The in-place unpack's factor left in C: 16 x each code in both operands, 256 x a product."""
    if not _usable(expected, got):
        return None
    a, _, b, _ = args
    acc = _codes(a) @ _codes(b).T
    if not acc.any():
        return None
    for factor, what in ((256, "256 x"), (16, "16 x"), (1 / 16, "1/16 of")):
        if _same(expected, got, _finish(acc * factor, args, kwargs)):
            return (f"C is {what} the product: unpacked in place, both operands of each dot "
                    "carry 16 x their codes, so the int32 sums are 16 x 16 = 256 x the product; "
                    "shift them right by 8 after the K loop (acc = acc >> 8), before the scales")
    return None


def _hint_k_tail(args, kwargs, expected, got):
    """The last partial K block dropped or garbled: only the first full blocks are summed."""
    if not _usable(expected, got):
        return None
    a, _, b, _ = args
    A, B = _codes(a), _codes(b)
    KH = a.shape[1]
    for block in (16, 32, 64, 128, 256):
        full = (KH // block) * block
        if full == KH:
            continue
        acc = A[:, :2 * full] @ B[:, :2 * full].T
        if _same(expected, got, _finish(acc, args, kwargs)):
            what = (f"C is zero: with K/2 = {KH} bytes, less than one full K block, the K loop "
                    "never ran" if full == 0 else
                    f"C sums only the first {full} of the K/2 = {KH} packed bytes")
            return (what + ": the loop must also run the last, partial K block "
                    "(for k0 in range(0, K_half, BLOCK_K)), its loads masked by k < K_half "
                    "with other=0")
    return None


def _hint_scales(args, kwargs, expected, got):
    if not _usable(expected, got):
        return None
    a, _, b, _ = args
    acc = _codes(a) @ _codes(b).T
    out_dtype = expected.dtype
    sa, sb = _scales(args)
    if out_dtype == torch.int32:
        if _same(expected, got, (acc.float() * sa * sb).to(torch.int32)):
            return "out_dtype=torch.int32 is the raw integer product: apply no scales then"
        return None
    M, N = acc.shape
    sa_col = sa.reshape(1, -1) if sa.dim() else sa
    sb_row = sb.reshape(-1, 1) if sb.dim() else sb
    candidates = [
        (acc, "C is the raw integer product: multiply by a_scale (one per row of C) and b_scale "
              "(one per column of C) before storing"),
        (acc * sa, "b_scale is missing: multiply column n of C by b_scale[n]"),
        (acc * sb, "a_scale is missing: multiply row m of C by a_scale[m]"),
    ]
    if M == N:
        candidates.append((acc * sa_col * sb_row, "the scales are on the wrong axes: a_scale[m] "
                           "scales row m of C (offs_m), b_scale[n] column n (offs_n)"))
    for cand, text in candidates:
        if _same(expected, got, cand.float().to(out_dtype)):
            return text
    return None


def _hint_edges(args, kwargs, expected, got):
    """Wrong only in the last rows or columns: a tile edge is not masked or not reached."""
    if not _usable(expected, got):
        return None
    if expected.dtype == torch.int32:
        bad = expected.cpu() != got.cpu()
    else:
        rtol = RTOL[expected.dtype]
        bad = ~torch.isclose(got.cpu().float(), expected.cpu().float(), rtol=rtol,
                             atol=rtol * 1e-3 * float(expected.abs().max().cpu()))
    if not bad.any():
        return None
    M, N = expected.shape
    # the signature of a tile edge: every wrong row (column) lies in a run at the end that
    # starts on a multiple of 16, and each row (column) of that run has wrong elements
    for axis, size, what, dim in ((1, M, "rows", "M"), (0, N, "columns", "N")):
        wrong = bad.any(dim=axis).nonzero().flatten()
        first = int(wrong.min())
        if first > 0 and first % 16 == 0 and len(wrong) == size - first:
            return (f"only {what} {first}.. of C are wrong: the last, partial BLOCK_{dim} tile "
                    f"(mask offs_{dim.lower()} < {dim} on the loads and on the store of C, and "
                    f"launch cdiv({dim}, BLOCK_{dim}) programs along that axis)")
    return None


def _hint_strides(args, kwargs, expected, got):
    if not _usable(expected, got):
        return None
    a, _, b, _ = args
    if (a.is_contiguous() and b.is_contiguous()) or a.numel() == 0:
        return None
    return ("this check passes transposed or sliced views of a and b: address them with "
            "a.stride(0), a.stride(1), b.stride(0), b.stride(1), not with K/2 (or call "
            ".contiguous() in the launcher)")


# ---- the checks -----------------------------------------------------------------------------

def _checks():
    f16, i32 = torch.float16, torch.int32
    visible = [
        ("1x1, K=2", _make(1, 1, 1)),
        ("31x33, K=62", _make(31, 33, 31)),
        ("33x31, K=66", _make(33, 31, 33)),
        ("127x129, K=254", _make(127, 129, 127)),
        ("129x127, K=258, fp16 out", _make(129, 127, 129, f16)),
        ("65x65, K=130", _make(65, 65, 65)),
        ("31x33, K=254, int32 out (raw product)", _make(31, 33, 127, i32)),
        ("33x31, K=128, per-tensor scales", _make(33, 31, 64, scales="tensor")),
        ("3x5, K=2048, all codes -8, int32 out", _make(3, 5, 1024, i32, fill=-8)),
        ("31x33, K=66, non-contiguous a and b", _make(31, 33, 33, layout="noncontiguous")),
        ("0x5 (empty M)", _make(0, 5, 16)),
        ("5x0 (empty N)", _make(5, 0, 16)),
    ]
    hidden = [
        ("129x1, K=254", _make(129, 1, 127), (0, 1)),
        ("1x129, K=258, fp16 out", _make(1, 129, 129, f16), (0, 1)),
        ("97x67, K=194, int32 out", _make(97, 67, 97, i32), (0, 1, 2)),
        ("64x64, K=128 (whole tiles)", _make(64, 64, 64), (0, 1)),
        ("33x31, K=2, int32 out", _make(33, 31, 1, i32), (0, 1)),
        ("31x33, K=66, a per row, b per tensor", _make(31, 33, 33, scales="mixed"), (0,)),
        ("31x33, K=66, fp16 scales", _make(31, 33, 33, scale_dtype=f16), (0,)),
        ("31x33, K=66, fp64 scales, fp16 out", _make(31, 33, 33, f16, scale_dtype=torch.float64), (0,)),
        ("33x31, K=66, sliced views of a and b", _make(33, 31, 33, layout="sliced"), (0, 1)),
        ("33x31, K=66, sliced views, int32 out", _make(33, 31, 33, i32, layout="sliced"), (0,)),
        ("31x33, K=66, non-contiguous, per-tensor, fp16", _make(31, 33, 33, f16, scales="tensor",
                                                               layout="noncontiguous"), (0, 1)),
        ("3x5, K=2048, all codes 7, int32 out", _make(3, 5, 1024, i32, fill=7), (0,)),
        ("33x31, K=2048, all codes -8", _make(33, 31, 1024, fill=-8), (0,)),
        ("31x33, K=62, zero rows", _make(31, 33, 31, edit=_zero_rows), (0,)),
        ("31x33, K=62, one huge row scale", _make(31, 33, 31, edit=_outlier), (0,)),
        ("17x19, K=66, even and odd k opposite", _make(17, 19, 33, i32, edit=_alternating), (0,)),
        ("0x0 (empty)", _make(0, 0, 8), (0,)),
        ("3x4, K=0 (empty reduction)", _make(3, 4, 0), (0,)),
    ]
    if runtime.HAS_CUDA and not runtime.INTERPRET:
        # the interpreter has no bf16 (and truncates fp32 -> bf16 instead of rounding)
        visible.append(("127x129, K=258, bf16 out", _make(127, 129, 129, torch.bfloat16)))
        hidden.append(("129x127, K=254, bf16 out, per-tensor",
                       _make(129, 127, 127, torch.bfloat16, scales="tensor"), (0, 1)))
    return ([Check(name, make, _compare) for name, make in visible]
            + [Check(name, make, _compare, seeds=seeds, hidden=True) for name, make, seeds in hidden])


# ---- the benchmark --------------------------------------------------------------------------

def _bench_shape(size):
    return (size, size, size) if isinstance(size, int) else tuple(size)


def _bench_make(size, device):
    M, N, K = _bench_shape(size)
    g = generator(0)
    qa = torch.randint(-8, 8, (M, K), generator=g, dtype=torch.int8).to(device)
    qb = torch.randint(-8, 8, (N, K), generator=g, dtype=torch.int8).to(device)
    # the unpacked codes as bf16 copies for the baseline; the kernel reads the packed bytes
    a, b = pack_int4(qa), pack_int4(qb)
    _BF16.clear()
    _BF16[_key(a, b)] = (qa.to(torch.bfloat16), qb.to(torch.bfloat16))
    del qa, qb
    sa = torch.full((M, 1), 0.01, device=device)
    sb = torch.full((N, 1), 0.02, device=device)
    return (a, sa, b, sb), {"out_dtype": torch.bfloat16}


_BF16 = {}      # the packed operands (address, shape) -> their bf16 copies, for the baseline


def _key(a, b):
    return a.data_ptr(), tuple(a.shape), b.data_ptr(), tuple(b.shape)


def _bf16_mm(a, a_scale, b, b_scale, out_dtype=torch.bfloat16):
    """torch.mm on bf16 copies of the same operands: Y = A Bᵀ as an nn.Linear computes it."""
    key = _key(a, b)
    if key not in _BF16:
        _BF16.clear()
        _BF16[key] = (unpack_int4(a).to(torch.bfloat16), unpack_int4(b).to(torch.bfloat16))
    a16, b16 = _BF16[key]
    return torch.mm(a16, b16.T)


register(Slot(
    name="int4_matmul", spec=int4_matmul_spec, trusted=int4_matmul_trusted, validate=validate_int4_matmul,
    triton="int4lab.kernels.int4_matmul:int4_matmul", lesson="03", checks=_checks(),
    hints=[_hint_shape, _hint_dtype, _hint_codes, _hint_shift_back, _hint_k_tail, _hint_scales,
           _hint_edges, _hint_strides],
    bench=Bench(make=_bench_make, baseline=_bf16_mm, baseline_name="torch.mm (bf16, cuBLAS)",
                sizes=(1024, 2048, 4096, 8192, (8192, 4096, 4096), (8192, 11008, 4096)),
                unit="TFLOP/s",
                work=lambda a, k: 2 * a[0].shape[0] * a[2].shape[0] * 2 * a[0].shape[1]),
))

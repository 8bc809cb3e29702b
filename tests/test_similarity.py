"""Near-identical submissions (int4lab.grading.similarity): a renamed copy of the library's
kernel, or of another learner's, is flagged; a different implementation is not."""
import io
import json
import tokenize

import pytest
import wrong_kernels

from int4lab import runtime
from int4lab.grading import similarity
from int4lab.grading.similarity import report, tokens

# a student copy has no library kernels to compare with (and no wrong kernels)
pytestmark = pytest.mark.skipif(runtime.is_student_copy(), reason="a student copy has no library kernels")
LIBRARY = similarity.library_sources()

# the library's pack_int4, renamed and recommented by hand (and laid out differently)
PACK_RENAMED = '''
import torch
import triton
import triton.language as tl

from int4lab.spec.packing import validate_pack


@triton.jit
def my_packer(src, dst, total, B: tl.constexpr):
    # my own words: which block am I
    me = tl.program_id(axis=0)
    idx = me * B + tl.arange(0, B)
    ok = idx < total   # guard the tail
    e = tl.load(src + 2 * idx, mask=ok, other=0)
    o = tl.load(src + 2 * idx + 1, mask=ok, other=0)
    low = e.to(tl.int32) & 15
    high = o.to(tl.int32) & 15
    tl.store(dst + idx, (low | (high << 4)).to(tl.uint8), mask=ok)


def pack_int4(x: torch.Tensor, B: int = 1024) -> torch.Tensor:
    """Packs two nibbles per byte (written by me)."""
    validate_pack(x)
    x = x.contiguous()
    out = torch.empty((*x.shape[:-1], x.shape[-1] // 2), dtype=torch.uint8, device=x.device)
    total = out.numel()
    if total:
        g = (triton.cdiv(total, B),)
        my_packer[g](x, out, total, B=B)
    return out
'''

# a correct pack_int4 written another way: one program per row, a loop over column chunks,
# 16-bit arithmetic, a sign fix-up instead of a mask, a multiply instead of a shift
PACK_OTHER = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _pack_rows(src, dst, n_rows, half, stride_src, stride_dst, COLS: tl.constexpr):
    row = tl.program_id(0)
    for start in range(0, half, COLS):
        j = start + tl.arange(0, COLS)
        keep = j < half
        pair = src + row * stride_src + j * 2
        a = tl.load(pair, mask=keep, other=0).to(tl.int16)
        b = tl.load(pair + 1, mask=keep, other=0).to(tl.int16)
        a = tl.where(a < 0, a + 16, a)
        b = tl.where(b < 0, b + 16, b)
        tl.store(dst + row * stride_dst + j, (a + b * 16).to(tl.uint8), mask=keep)


def pack_int4(q):
    k = q.shape[-1]
    flat = q.reshape(-1, k).contiguous()
    out = flat.new_empty((flat.shape[0], k // 2), dtype=torch.uint8)
    if out.numel() == 0:
        return out.reshape(*q.shape[:-1], k // 2)
    _pack_rows[(flat.shape[0],)](flat, out, flat.shape[0], k // 2, flat.stride(0), out.stride(0), COLS=64)
    return out.reshape(*q.shape[:-1], k // 2)
'''


def rename(source, prefix):
    """Every name the author chose renamed (consistently), comments and strings rewritten."""
    keep = similarity._KEEP
    names, out, prev = {}, [], None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, text = tok.type, tok.string
        if kind == tokenize.NAME and text not in keep and not (prev and prev.string == "."):
            text = names.setdefault(text, f"{prefix}{len(names)}")
        elif kind == tokenize.COMMENT:
            text = f"# {prefix}'s note"
        elif kind == tokenize.STRING:
            text = repr(f"{prefix} wrote this")
        out.append((kind, text))
        if kind not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    return tokenize.untokenize(out)


def test_tokens_ignore_names_comments_docstrings_and_layout():
    a = 'def f(x):\n    """Doc."""\n    # note\n    return x.contiguous() + torch.ones(0xF) + len("a")\n'
    b = 'def g(  y ):\n\n    return y.contiguous() \\\n            + torch.ones(15) + len("b")  # other\n'
    assert tokens(a) == ["def", "ID", "(", "ID", ")", ":", "NEWLINE", "return", "ID", ".", "contiguous", "(",
                         ")", "+", "torch", ".", "ones", "(", "15", ")", "+", "len", "(", "STR", ")", "NEWLINE"]
    assert tokens(b) == tokens(a)
    assert tokens("def f(:\n  'unterminated") is not None          # a syntax error never raises


def test_the_library_kernel_renamed_flags_as_the_library():
    r = report({"alice": {"pack_int4": PACK_RENAMED}}, LIBRARY)
    entry = r["alice"]["pack_int4"]
    assert entry["library"] == 1.0 and entry["closest_peer"] == (None, 0.0)
    assert entry["flag"] == "near-identical to the library's kernel (1.00)"


@pytest.mark.parametrize("slot", sorted(LIBRARY))
def test_every_library_kernel_renamed_is_still_the_library(slot):
    renamed = rename(LIBRARY[slot], "v")
    assert renamed != LIBRARY[slot]
    assert similarity.similarity(renamed, LIBRARY[slot]) == 1.0


def test_one_bug_away_from_the_library_flags_as_the_library():
    lib = LIBRARY["pack_int4"]
    swapped = lib.replace("(lo | (hi << 4))", "(hi | (lo << 4))")
    unmasked = lib.replace(", mask=mask, other=0)", ")").replace(", mask=mask)", ")")
    assert swapped != lib and unmasked != lib
    wrong = (wrong_kernels.HERE / "unpack_int4__even_odd_swapped.py").read_text()   # the library's body
    r = report({"a": {"pack_int4": rename(swapped, "a")}, "b": {"pack_int4": rename(unmasked, "b")},
                "c": {"unpack_int4": wrong}}, LIBRARY)
    for learner, slot in (("a", "pack_int4"), ("b", "pack_int4"), ("c", "unpack_int4")):
        assert r[learner][slot]["flag"].startswith("near-identical to the library's kernel"), (learner, r[learner])


def test_two_learners_with_the_same_renamed_code_flag_each_other():
    r = report({"alice": {"pack_int4": rename(PACK_OTHER, "a")}, "bob": {"pack_int4": rename(PACK_OTHER, "b")},
                "carol": {"pack_int4": LIBRARY["pack_int4"]}}, LIBRARY)
    assert r["alice"]["pack_int4"]["closest_peer"] == ("bob", 1.0)
    assert r["alice"]["pack_int4"]["flag"] == "near-identical to bob's (1.00)"
    assert r["bob"]["pack_int4"]["flag"] == "near-identical to alice's (1.00)"
    assert r["carol"]["pack_int4"]["flag"] == "near-identical to the library's kernel (1.00)"
    assert r["carol"]["pack_int4"]["closest_peer"][1] < 0.9
    json.dumps(r)                                    # the report goes into grades.json as it is


def test_a_learner_who_copied_the_library_and_a_peer_who_copied_them():
    r = report({"dan": {"pack_int4": PACK_RENAMED}, "erin": {"pack_int4": rename(PACK_RENAMED, "e")}}, LIBRARY)
    assert r["erin"]["pack_int4"]["flag"] == "near-identical to the library's kernel (1.00) and to dan's (1.00)"


def test_a_different_implementation_is_not_flagged():
    r = report({"frank": {"pack_int4": PACK_OTHER}, "gina": {"pack_int4": PACK_RENAMED}}, LIBRARY)
    entry = r["frank"]["pack_int4"]
    assert entry["flag"] is None and entry["library"] < 0.7 and entry["closest_peer"] == ("gina", pytest.approx(
        entry["library"], abs=0.05))


def test_the_untouched_starter_code_is_not_copying():
    starters = similarity.starters()
    if "pack_int4" not in starters:
        pytest.skip("no lessons/ beside the package (an installed copy)")
    stub = starters["pack_int4"]
    learners = {"hal": {"pack_int4": stub}, "ivy": {"pack_int4": stub + "\n# tried\n"}}
    assert report(learners, LIBRARY)["hal"]["pack_int4"]["flag"] == "near-identical to ivy's (1.00)"
    r = report(learners, LIBRARY, starters=starters)
    for learner in learners:
        assert r[learner]["pack_int4"]["closest_peer"] == (None, 0.0) and r[learner]["pack_int4"]["flag"] is None
        assert r[learner]["pack_int4"]["library"] < 0.5


def test_slots_without_a_library_source_and_lonely_submissions():
    r = report({"jo": {"pack_int4": "def pack_int4(q):\n    return q +\n", "made_up": "x = 1\n"}}, {})
    assert r == {"jo": {"pack_int4": {"library": None, "closest_peer": (None, 0.0), "flag": None},
                        "made_up": {"library": None, "closest_peer": (None, 0.0), "flag": None}}}


def test_no_library_sources_in_a_student_copy(monkeypatch):
    assert set(LIBRARY) >= {"pack_int4", "unpack_int4", "int4_matmul"}
    monkeypatch.setattr(runtime, "is_student_copy", lambda: True)
    assert similarity.library_sources() == {}

"""Which submissions are near-identical to the library's kernel or to each other, per slot.

It informs the instructor; it changes no score. Two sources are compared as token sequences
that ignore what copying usually changes and keep what it does not:
  - comments, blank lines, indentation and bare string statements (docstrings and strings used
    as comments) are dropped: they do not change what the code does;
  - every name the learner chose becomes ID: a variable, a parameter, a function or a kernel;
    kept as they are: keywords, builtins (range, len, min), and attribute names (tl.load,
    torch.empty, q.contiguous(), x.shape): those belong to Triton, PyTorch and Python, so
    renaming variables cannot change them. (Names are judged by where they stand, after a dot,
    not by a list of tl/torch/triton's attributes, where `t`, `abs` or `max` would pass as a
    learner's variable and survive the renaming);
  - numbers are kept by value (0xF and 15 are one token): a kernel's constants are part of what
    it computes, and writing them differently is an easy disguise;
  - other strings become STR: an error message is prose a copier rewrites freely, like a
    comment, while its place in the code still counts.
similarity(a, b) = difflib.SequenceMatcher(None, A, B, autojunk=False).ratio() over the two
token lists: 1.0 is the same code up to names, comments and layout.

A short kernel that follows its lesson's TODOs closely is near the library by construction (the
TODOs spell most of it out), so a library flag says "read this one", not "copied". Measured
against the library (2026-11): the library renamed and recommented 1.00; the library with one
bug put in 0.97-1.00 (swapping two variables is invisible once names are IDs); the files of
tests/wrong_kernels (short rewrites, one bug each) 0.55-0.84, and 0.905 for the one that keeps
the library's kernel body (unpack_int4__even_odd_swapped); a pack_int4 written by following
lesson 01's TODOs 0.89; a correct pack_int4 written another way 0.57. Learners who left the
lesson's starter code as it was are alike for the same reason: pass the starters (`starters()`,
read from the lessons) and a pair that is near its starter is not flagged.
"""
import ast
import builtins
import difflib
import io
import keyword
import tokenize
from pathlib import Path

MAX_TOKENS = 20_000            # a bigger file is compared on its first MAX_TOKENS tokens
_KEEP = set(keyword.kwlist) | set(dir(builtins)) | {"tl", "torch", "triton"}
_DROP = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
         tokenize.ENDMARKER}


def _raw(source: str) -> list:
    """tokenize's tokens, as far as the source can be tokenized (a syntax error ends the list)."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            out.append(tok)
            if len(out) > 4 * MAX_TOKENS:
                break
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return out


def _number(text: str) -> str:
    try:
        return repr(ast.literal_eval(text))           # 0xF -> 15, 1_024 -> 1024, 1e3 -> 1000.0
    except (ValueError, SyntaxError):
        return text


_FSTART = getattr(tokenize, "FSTRING_START", None)      # Python 3.12+ splits f-strings up
_FEND = getattr(tokenize, "FSTRING_END", None)


def _after_string(raw, i) -> int:
    """Index just after the string literal that starts at raw[i] (a whole f-string on 3.12+)."""
    if raw[i].type != _FSTART:
        return i + 1
    depth, j = 0, i
    while j < len(raw):
        depth += (raw[j].type == _FSTART) - (raw[j].type == _FEND)
        j += 1
        if depth == 0:
            break
    return j


def tokens(source: str) -> list:
    """The normalised token list of a source (see the module docstring)."""
    raw = [t for t in _raw(source) if t.type not in _DROP]
    out, i, line_start = [], 0, True
    while i < len(raw) and len(out) < MAX_TOKENS:
        t = raw[i]
        if t.type == tokenize.STRING or (_FSTART is not None and t.type == _FSTART):
            j = _after_string(raw, i)
            while j < len(raw) and (raw[j].type == tokenize.STRING or raw[j].type == _FSTART):
                j = _after_string(raw, j)                 # "implicit" "concatenation"
            if line_start and (j >= len(raw) or raw[j].type == tokenize.NEWLINE):
                i, line_start = j + 1, True               # a statement that is only a string
                continue
            out.append("STR")
            i, line_start = j, False
            continue
        if t.type == tokenize.NAME:
            after_dot = i > 0 and raw[i - 1].type == tokenize.OP and raw[i - 1].string == "."
            out.append(t.string if after_dot or t.string in _KEEP else "ID")
        elif t.type == tokenize.NUMBER:
            out.append(_number(t.string))
        elif t.type == tokenize.NEWLINE:
            out.append("NEWLINE")
        else:
            out.append(t.string)
        line_start = t.type == tokenize.NEWLINE
        i += 1
    return out


def similarity(a, b) -> float:
    """0..1; a and b are sources or token lists."""
    a = tokens(a) if isinstance(a, str) else a
    b = tokens(b) if isinstance(b, str) else b
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def library_sources(slots=None) -> dict:
    """{slot: the library's solution, as a learner would paste it in the exercise cell (what
    int4lab.reveal shows: kernels/<slot>.py without its docstring and solution fences)}, for the
    slots that have one. In a student copy (kernel bodies removed) it is empty: nothing to match."""
    from int4lab import runtime
    from int4lab.exercises import registry, stubs
    if runtime.is_student_copy():
        return {}
    registry._load_slots()
    out = {}
    for name in slots or sorted(registry.SLOTS):
        slot = registry.SLOTS.get(name)
        if slot is None or not slot.triton:
            continue
        try:
            out[name] = stubs.solution_source(name)
        except (ImportError, OSError, ValueError):
            continue
    return out


def starters(lessons=None) -> dict:
    """{slot: the starter code of its exercise cell}, read from the lessons as shipped
    (lessons/*.ipynb beside the package in a source checkout); {} when they are not there."""
    from int4lab.grading import submissions
    folder = Path(lessons) if lessons else Path(__file__).resolve().parents[2] / "lessons"
    out = {}
    for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        out.update(submissions.read_notebook(nb)[0])
    return out


def _flag(lib, peer, threshold):
    to_lib = lib is not None and lib >= threshold
    to_peer = peer[0] is not None and peer[1] >= threshold
    if to_lib and to_peer:
        return f"near-identical to the library's kernel ({lib:.2f}) and to {peer[0]}'s ({peer[1]:.2f})"
    if to_lib:
        return f"near-identical to the library's kernel ({lib:.2f})"
    if to_peer:
        return f"near-identical to {peer[0]}'s ({peer[1]:.2f})"
    return None


def report(sources_by_learner: dict, library: dict, threshold: float = 0.9, starters: dict | None = None) -> dict:
    """{learner: {slot: {"library": float | None, "closest_peer": (learner | None, float),
    "flag": str | None}}} for every slot each learner submitted.

    "library" is the similarity to library[slot] (None when the library has no source for it);
    "closest_peer" is the most similar other learner's submission of the slot ((None, 0.0) when
    nobody else submitted it); both rounded to 3 decimals (the flag compares before rounding).
    "flag" says which of the two reach `threshold`, e.g. "near-identical to the library's kernel
    (0.97)" or "near-identical to bob's (0.95)", or both ("... (0.97) and to bob's (0.95)"). With
    `starters` ({slot: the lesson's starter code}), two submissions that are both near the
    starter (learners who left it as it was) do not flag each other.
    """
    starters = starters or {}
    out = {learner: {} for learner in sources_by_learner}
    for slot in sorted({s for srcs in sources_by_learner.values() for s in srcs}):
        toks = {learner: tokens(srcs[slot]) for learner, srcs in sources_by_learner.items() if slot in srcs}
        lib = tokens(library[slot]) if slot in library else None
        start = tokens(starters[slot]) if slot in starters else None
        near_start = {n for n, t in toks.items() if start is not None and similarity(t, start) >= threshold}
        pairs = {}

        def pair(a, b):
            key = (a, b) if a < b else (b, a)
            if key not in pairs:
                pairs[key] = similarity(toks[key[0]], toks[key[1]])
            return pairs[key]

        for learner, mine in toks.items():
            lib_ratio = similarity(mine, lib) if lib is not None else None
            best = (None, 0.0)
            # exact maximum with few exact ratios: quick_ratio() is an upper bound of ratio()
            bound = []
            for other, theirs in toks.items():
                if other == learner or (learner in near_start and other in near_start):
                    continue
                sm = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
                bound.append((sm.quick_ratio() if mine or theirs else 1.0, other))
            for ub, other in sorted(bound, key=lambda x: (-x[0], x[1])):
                if ub < best[1] or (ub == best[1] and best[0] is not None):
                    break
                r = pair(learner, other)
                if r > best[1] or best[0] is None:
                    best = (other, r)
            out[learner][slot] = {"library": None if lib_ratio is None else round(lib_ratio, 3),
                                  "closest_peer": (best[0], round(best[1], 3)),
                                  "flag": _flag(lib_ratio, best, threshold)}
    return out

"""One source per exercise: a slot's kernel module carries its solution between fences, and the
lesson's stub, the student copy's file and `reveal()` are all generated from it.

A kernel module of kernels/ marks what the learner writes, as nbgrader does:

    @triton.jit
    def vector_add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        # TODO 1: ...            (the plan: comments stay in the stub)
        ### BEGIN SOLUTION
        pid = tl.program_id(axis=0)
        ...
        ### END SOLUTION

Everything outside the fences is given: the learner sees it in the stub. The fences are
comments, so the library runs its module as is. In the stub each fenced region is cut out;
the first one of a plain Python function (a launcher) becomes
`raise NotImplementedError(...)` (the learner replaces that line), so an unfilled stub says
"not yet implemented"; a
@triton.jit function left with no statement gets `pass`.

The exercise cell is the module without its docstring (the lesson's text explains what the
docstring does), stubbed. tests/test_lessons.py checks that every notebook holds exactly the
cell generated here; `python lessons/build.py` writes them.
"""
import ast
import importlib.util
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_FENCE = re.compile(r"^(\s*)(### (?:BEGIN|END) SOLUTION)\s*$")


def module_path(slot_name: str) -> Path:
    """kernels/<module>.py of a slot (whichever int4lab is imported: a student copy's is stubbed)."""
    from int4lab.exercises import registry
    slot = registry.get(slot_name)
    if slot.triton is None:
        raise ValueError(f"{slot_name} has no kernel module")
    return Path(importlib.util.find_spec(slot.triton.split(":")[0]).origin)


def fences(source: str, origin: str = "<source>") -> list[tuple[int, int]]:
    """[(begin line, end line)] of every fenced region (1-based, the fence lines included).
    Raises ValueError for a fence without its partner, nested fences, or a fence that is not a
    line of its own."""
    regions, begin = [], None
    for i, line in enumerate(source.splitlines(), 1):
        m = _FENCE.match(line)
        if m is None:
            if BEGIN in line or END in line:
                raise ValueError(f"{origin}:{i}: a solution fence must be a line of its own")
            continue
        if m.group(2) == BEGIN:
            if begin is not None:
                raise ValueError(f"{origin}:{i}: {BEGIN} inside the region opened at line {begin}")
            begin = i
        else:
            if begin is None:
                raise ValueError(f"{origin}:{i}: {END} without a {BEGIN}")
            regions.append((begin, i))
            begin = None
    if begin is not None:
        raise ValueError(f"{origin}:{begin}: {BEGIN} is never closed")
    return regions


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _is_jit(fn) -> bool:
    return any("jit" in ast.unparse(d) for d in fn.decorator_list)


def _innermost(tree, line):
    found = [f for f in _functions(tree) if f.lineno < line <= f.end_lineno]
    return max(found, key=lambda f: f.lineno) if found else None


def solution_lines(source: str, origin: str = "<source>") -> dict[str, list[str]]:
    """{function name: the lines inside its fences}: the code a learner writes."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: dict[str, list[str]] = {}
    for begin, end in fences(source, origin):
        fn = _innermost(tree, begin)
        out.setdefault(fn.name if fn else "<module>", []).extend(lines[begin:end - 1])
    return out


def strip_fences(source: str) -> str:
    """The solution: the module with its fence lines removed."""
    return "".join(line for line in source.splitlines(keepends=True) if not _FENCE.match(line))


def _statement_lists(tree):
    """(parent node, list of statements) for every block of the module: bodies, else branches."""
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield node, block


def stub(source: str, origin: str = "<source>") -> str:
    """The module with every fenced region cut out (see the module docstring for the rules)."""
    regions = fences(source, origin)
    if not regions:
        return source
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    keep = [True] * (len(lines) + 1)
    insert: dict[int, str] = {}                  # line number -> a line put where a region was
    raised = set()
    for begin, end in regions:
        for i in range(begin, end + 1):
            keep[i] = False
        fn = _innermost(tree, begin)
        indent = _FENCE.match(lines[begin - 1].rstrip("\n")).group(1)
        if fn is None:
            raise ValueError(f"{origin}:{begin}: a solution fence must lie inside a function")
        if not _is_jit(fn) and fn.name not in raised:
            raised.add(fn.name)
            insert[begin] = (f'{indent}raise NotImplementedError("{fn.name}: replace this line '
                             'with the code its TODOs ask for")\n')

    def cut(stmt):
        return not any(keep[i] for i in range(stmt.lineno, stmt.end_lineno + 1))

    # a block whose every statement was cut (a jit body, an if branch) needs one to stay Python:
    # `pass` where its last region was
    for _parent, block in _statement_lists(tree):
        if all(cut(stmt) for stmt in block):
            last = max(b for b, e in regions if block[0].lineno > b and block[-1].end_lineno < e
                       or b < block[-1].end_lineno < e)
            if last not in insert:
                indent = _FENCE.match(lines[last - 1].rstrip("\n")).group(1)
                insert[last] = f"{indent}pass\n"
    out = []
    for i, line in enumerate(lines, 1):
        if i in insert:
            out.append(insert[i])
        if keep[i]:
            out.append(line)
    text = "".join(out)
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f"{origin}: the stub is not valid Python ({e})") from e
    return text


def _without_docstring(source: str) -> str:
    tree = ast.parse(source)
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(
            getattr(tree.body[0], "value", None), ast.Constant) and isinstance(tree.body[0].value.value, str):
        lines = source.splitlines(keepends=True)
        return "".join(lines[tree.body[0].end_lineno:]).lstrip("\n")
    return source


def module_docstring(source: str) -> str:
    return ast.get_docstring(ast.parse(source)) or ""


def exercise_source(slot_name: str) -> str:
    """The stub a learner fills in: the slot's kernel module without its docstring, stubbed."""
    path = module_path(slot_name)
    return stub(_without_docstring(path.read_text()), str(path))


def solution_source(slot_name: str) -> str:
    """The filled-in exercise: what `reveal()` shows (the library's code, in the cell's form)."""
    path = module_path(slot_name)
    return strip_fences(_without_docstring(path.read_text()))


def exercise_cell(slot_name: str) -> str:
    """The notebook cell: the magic, then the stub."""
    return f"%%exercise {slot_name}\n" + exercise_source(slot_name).rstrip("\n") + "\n"

"""Finding learners in a class folder (int4lab.grading.submissions): every layout, and every
malformed submission becomes a problem of its learner, never an exception that stops the class."""
import json

import pytest

from int4lab.grading import submissions
from int4lab.grading.submissions import SubmissionError, discover

PACK = "def pack_int4(q):\n    return q\n"
UNPACK = "def unpack_int4(p):\n    return p\n"


def notebook(*cells, raw=False):
    """A notebook whose code cells hold `cells` (strings); a dict is a cell as it is."""
    nb = {"cells": [c if isinstance(c, dict) else
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": c.splitlines(keepends=True)} for c in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return nb if raw else json.dumps(nb, indent=1)


def make(root, files):
    """Write {relative path: text or bytes} under root; returns root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def by_learner(found):
    return {s.learner: s for s in found}


# --- the three kinds of PATH ------------------------------------------------------------------

def test_a_notebook_is_one_learner(tmp_path):
    path = make(tmp_path, {"frank.ipynb": notebook("import torch", "%%exercise pack_int4\n" + PACK)})
    [s] = discover(path / "frank.ipynb")
    assert s.learner == "frank" and s.sources == {"pack_int4": PACK} and not s.problems
    assert s.origins == {"pack_int4": "frank.ipynb, cell 2"}


def test_a_workspace_folder_is_one_learner(tmp_path, monkeypatch):
    ws = make(tmp_path / "alice", {"pack_int4.py": PACK, "unpack_int4.py": UNPACK,
                                    "__pycache__/pack_int4.cpython-311.pyc": b"\0", "scratch.py": "x = 1\n"})
    [s] = discover(ws)
    assert s.learner == "alice" and s.sources == {"pack_int4": PACK, "unpack_int4": UNPACK}
    assert "__pycache__/: Python's bytecode cache, skipped" in s.skipped
    assert "scratch.py: not a slot of the course" in s.skipped
    # an INT4LAB_HOME/workspace folder is named after its parent; "." after the folder itself
    [s] = discover(make(tmp_path / "bob" / "workspace", {"pack_int4.py": PACK}))
    assert s.learner == "bob"
    monkeypatch.chdir(ws)
    [s] = discover(".")
    assert s.learner == "alice" and s.sources["pack_int4"] == PACK


def test_a_folder_of_lesson_notebooks_is_one_learner(tmp_path):
    root = make(tmp_path / "alice", {"01_int4_numbers_and_packing.ipynb": notebook("%%exercise pack_int4\n" + PACK),
                                      "02_quantizers.ipynb": notebook("%%exercise unpack_int4\n" + UNPACK),
                                      ".ipynb_checkpoints/01-checkpoint.ipynb": "{}", "src/01.py": "x = 1"})
    [s] = discover(root)
    assert s.learner == "alice" and sorted(s.sources) == ["pack_int4", "unpack_int4"]
    make(root, {"bob.ipynb": notebook("%%exercise pack_int4\n" + PACK)})       # not a lesson's name: a class
    assert [s.learner for s in discover(root)] == ["01_int4_numbers_and_packing", "02_quantizers", "bob", "src"]


def test_a_class_folder_grades_folders_and_notebooks(tmp_path):
    root = make(tmp_path / "class", {
        "alice/pack_int4.py": PACK,                                        # a bare workspace
        "bob/workspace/unpack_int4.py": UNPACK,                            # a copied INT4LAB_HOME
        "bob/workspace/__pycache__/x.pyc": b"\0",
        "carol/lessons/week1/01.ipynb": notebook("%%exercise pack_int4\n" + PACK),   # deep notebook
        "dave.ipynb": notebook("%%exercise unpack_int4\n" + UNPACK),      # beside the folders: graded too
        ".DS_Store": b"\0", ".git/HEAD": "ref", "__pycache__/y.pyc": b"\0", "README.md": "hello",
    })
    found = discover(root)
    assert [s.learner for s in found] == ["alice", "bob", "carol", "dave"]
    s = by_learner(found)
    assert s["alice"].sources == {"pack_int4": PACK}
    assert s["bob"].sources == {"unpack_int4": UNPACK} and s["bob"].origins["unpack_int4"] == "workspace/unpack_int4.py"
    assert s["carol"].origins == {"pack_int4": "lessons/week1/01.ipynb, cell 1"}
    assert s["dave"].sources == {"unpack_int4": UNPACK}
    assert not any(x.problems for x in found)
    assert sorted(found.skipped) == [".DS_Store: hidden file, skipped", ".git/: hidden folder, skipped",
                                     "README.md: not a notebook or a folder",
                                     "__pycache__/: Python's bytecode cache, skipped"]
    assert "workspace/__pycache__/: Python's bytecode cache, skipped" in s["bob"].skipped


def test_hidden_and_cache_folders_inside_a_learner_are_skipped(tmp_path):
    root = make(tmp_path, {"class/alice/01.ipynb": notebook("%%exercise pack_int4\n" + PACK),
                           "class/alice/.ipynb_checkpoints/01-checkpoint.ipynb": notebook("%%exercise pack_int4\nold"),
                           "class/alice/notes.txt": "x", "class/bob/pack_int4.py": PACK})
    s = by_learner(discover(root / "class"))["alice"]
    assert s.sources == {"pack_int4": PACK}
    assert s.skipped == [".ipynb_checkpoints/: hidden folder, skipped", "notes.txt: not a notebook or a SLOT.py file"]


# --- PATHs that cannot be graded: SubmissionError -------------------------------------------------

def test_an_empty_class_folder_is_an_error(tmp_path):
    with pytest.raises(SubmissionError, match="holds nothing to grade: no notebook and no folder"):
        discover(tmp_path)
    make(tmp_path, {".DS_Store": b"\0", "README.md": "x"})
    with pytest.raises(SubmissionError, match=r"nothing to grade.*skipped: \.DS_Store: hidden file"):
        discover(tmp_path)
    make(tmp_path, {"alice/notes.txt": "x", "bob/": ""})
    with pytest.raises(SubmissionError, match="2 folders but no notebook or .py file in any of them"):
        discover(tmp_path)


def test_a_path_that_does_not_exist_or_is_not_a_notebook(tmp_path):
    with pytest.raises(SubmissionError, match="does not exist"):
        discover(tmp_path / "nope")
    make(tmp_path, {"grades.csv": "x"})
    with pytest.raises(SubmissionError, match="not a notebook"):
        discover(tmp_path / "grades.csv")


def test_a_workspace_beside_learner_folders_is_ambiguous(tmp_path):
    make(tmp_path, {"pack_int4.py": PACK, "alice/pack_int4.py": PACK, "bob/workspace/pack_int4.py": PACK})
    with pytest.raises(SubmissionError, match=r"ambiguous.*pack_int4.py.*\(alice, bob\)"):
        discover(tmp_path)


def test_the_command_line_exits_2_on_a_submission_error(tmp_path, capsys):
    assert submissions.main([str(tmp_path)]) == 2
    assert "nothing to grade" in capsys.readouterr().out
    make(tmp_path, {"alice.ipynb": notebook("%%exercise\n" + PACK)})
    assert submissions.main([str(tmp_path), "-v"]) == 0
    out = capsys.readouterr().out
    assert "alice: no slots" in out and "no slot name in cell 1" in out


# --- malformed submissions: a problem of their learner, the class goes on ------------------

def test_a_truncated_notebook_keeps_the_cells_before_the_cut(tmp_path):
    text = notebook("%%exercise pack_int4\n" + PACK, "%%exercise unpack_int4\n" + UNPACK)
    cut = text.index("unpack_int4") + 5
    root = make(tmp_path, {"alice/lessons/02.ipynb": text[:cut],
                           "bob.ipynb": notebook("%%exercise pack_int4\n" + PACK)})
    s = by_learner(discover(root))
    assert s["alice"].sources == {"pack_int4": PACK}
    [problem] = s["alice"].problems
    assert problem.startswith("lessons/02.ipynb is not valid JSON (truncated?)")
    assert "the 1 complete cells before that point were read" in problem
    assert s["bob"].sources == {"pack_int4": PACK} and not s["bob"].problems


@pytest.mark.parametrize("content, problem", [
    ("", "is not valid JSON (truncated?)"),
    ("<html>404</html>", "is not valid JSON (truncated?)"),
    ("[1, 2]", "is not a notebook (no list of cells)"),
    ('{"cells": {"a": 1}}', "is not a notebook (no list of cells)"),
    ('{"cells": [3, {"cell_type": "code", "source": 7}]}', "cell 1 is not a notebook cell"),
    (b"\xff\xfe{\x00}\x00", "undecodable file 02.ipynb (not UTF-8"),
])
def test_malformed_notebooks_are_problems(tmp_path, content, problem):
    root = make(tmp_path, {"alice/02.ipynb": content, "alice/pack_int4.py": PACK, "bob/pack_int4.py": PACK})
    s = by_learner(discover(root))
    assert any(problem in p for p in s["alice"].problems), s["alice"].problems
    assert s["alice"].sources == {"pack_int4": PACK} and s["bob"].sources == {"pack_int4": PACK}


def test_a_notebook_given_directly_may_be_broken_too(tmp_path):
    make(tmp_path, {"eve.ipynb": '{"cells": ['})
    [s] = discover(tmp_path / "eve.ipynb")
    assert s.learner == "eve" and not s.sources and "not valid JSON" in s.problems[0]


def test_exercise_lines_without_a_slot_or_with_an_unknown_one(tmp_path):
    nb = notebook("%%exercise\n" + PACK,                        # cell 1: no slot name
                  "%%exercise pack_int5\n" + PACK,              # cell 2: a typo
                  "%%exercise foo\nx = 1\n",                    # cell 3: nothing like a slot
                  "%%exercisepack_int4\n" + PACK,               # cell 4: a missing space
                  "%%exercise pack_int4\nold = 1\n",            # cell 5: replaced by cell 7
                  {"cell_type": "markdown", "metadata": {}, "source": "%%exercise unpack_int4"},
                  "\n%%exercise pack_int4\n" + PACK,            # cell 7: a leading blank line is fine
                  {"cell_type": "code", "metadata": {"int4lab": {"slot": "unpack_int4"}}, "outputs": [],
                   "execution_count": None, "source": UNPACK})   # cell 8: the exercise cell, magic deleted
    make(tmp_path, {"alice.ipynb": nb})
    [s] = discover(tmp_path / "alice.ipynb")
    assert s.sources == {"pack_int4": PACK} and s.origins == {"pack_int4": "alice.ipynb, cell 7"}
    assert s.problems == [
        "alice.ipynb: an %%exercise line with no slot name in cell 1",
        "alice.ipynb: unknown slot 'pack_int5' (did you mean pack_int4?) in cell 2",
        "alice.ipynb: unknown slot 'foo' in cell 3",
        "alice.ipynb: cell 4 starts with '%%exercisepack_int4', not '%%exercise SLOT' (a missing space?): not read",
        "alice.ipynb: cell 8 is the exercise cell for unpack_int4 but does not start with "
        "'%%exercise unpack_int4', so it was not read",
    ]


def test_undecodable_missing_and_misnamed_files(tmp_path):
    root = make(tmp_path, {"alice/pack_int4.py": "# caf\xe9\n".encode("latin-1") + PACK.encode(),
                           "alice/unpack_int4.py": UNPACK, "alice/pack_int.py": PACK,
                           "bob/pack_int4.py": PACK})
    (root / "alice" / "vector_add.py").symlink_to(root / "gone.py")          # a broken link
    s = by_learner(discover(root))
    assert s["alice"].sources == {"unpack_int4": UNPACK}
    assert sorted(s["alice"].problems) == sorted([
        "undecodable file pack_int4.py (not UTF-8: byte 0xe9 at offset 5)",
        "missing file vector_add.py (deleted while grading, or a broken link)",
        "pack_int.py: unknown slot 'pack_int' (did you mean pack_int4?): not graded"])
    assert s["bob"].sources == {"pack_int4": PACK}


def test_a_learner_with_nothing_readable_still_appears(tmp_path):
    root = make(tmp_path, {"alice/notes.txt": "x", "bob/pack_int4.py": PACK, "carol.ipynb": notebook("x = 1")})
    s = by_learner(discover(root))
    assert not s["alice"].sources and "nothing to grade" in s["alice"].problems[0]
    assert "carol.ipynb has no %%exercise cell" in s["carol"].problems[0]


def test_workspace_files_win_over_notebooks_which_fill_the_gaps(tmp_path):
    root = make(tmp_path, {"alice/workspace/pack_int4.py": PACK,
                           "alice/a.ipynb": notebook("%%exercise pack_int4\nolder = 1\n",
                                                     "%%exercise unpack_int4\nfirst = 1\n"),
                           "alice/b.ipynb": notebook("%%exercise unpack_int4\n" + UNPACK),
                           "alice/pack_int4.py": "stray = 1\n", "bob.ipynb": notebook("x = 1")})
    s = by_learner(discover(root))["alice"]
    assert s.sources == {"pack_int4": PACK, "unpack_int4": UNPACK}
    assert s.origins == {"pack_int4": "workspace/pack_int4.py", "unpack_int4": "b.ipynb, cell 1"}
    assert "a.ipynb, cell 1: not used for pack_int4: workspace/pack_int4.py (what %%exercise last saved) " \
           "takes precedence" in s.skipped
    assert "a.ipynb, cell 2: not used for unpack_int4: b.ipynb, cell 1 comes later" in s.skipped
    assert "pack_int4.py: not read: only the SLOT.py files directly in workspace/ are graded" in s.skipped


def test_a_folder_and_a_notebook_with_the_same_name(tmp_path):
    root = make(tmp_path, {"alice/pack_int4.py": PACK, "alice.ipynb": notebook("%%exercise unpack_int4\n" + UNPACK)})
    s = by_learner(discover(root))
    assert sorted(s) == ["alice", "alice.ipynb"]
    assert s["alice"].sources == {"pack_int4": PACK} and s["alice.ipynb"].sources == {"unpack_int4": UNPACK}
    assert "two submissions are named alice" in s["alice"].problems[0] == s["alice.ipynb"].problems[0]

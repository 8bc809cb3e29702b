"""Real, offline data for the two training tasks; nothing is downloaded.

text:   characters of the Python standard library's own source (.py files of the running
        interpreter, sorted by path, test suites left out, cut at a fixed size). Built on first use
        and cached under data/cache/ with a JSON that records its SHA-256, the Python version and
        the split. The stdlib differs between Python versions, so a version mismatch rebuilds it.
digits: scikit-learn's bundled handwritten digits (1,797 8x8 images), split by a fixed seed.

Batches are pure functions of (seed, step): a resumed run, or a DDP rank, draws exactly the batch
an uninterrupted single process would, with no sampler state to save.
"""
import hashlib
import json
import os
import platform
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from int4lab.runtime import replace_atomically

TEXT_MAX_CHARS = 1_500_000
VAL_FRACTION = 0.1
SKIP_DIRS = {"test", "tests", "idlelib", "turtledemo", "site-packages", "__pycache__"}  # not library code


def default_cache_dir():
    """INT4LAB_DATA_DIR if set, else data/cache/ of a source checkout, else ~/.cache/int4lab."""
    if os.environ.get("INT4LAB_DATA_DIR"):
        return Path(os.environ["INT4LAB_DATA_DIR"])
    repo_data = Path(__file__).resolve().parents[2] / "data"
    return repo_data / "cache" if repo_data.is_dir() else Path.home() / ".cache" / "int4lab"


# ---------------------------------------------------------------- text: the stdlib corpus

def stdlib_files(root=None):
    """The stdlib's .py files in a fixed order (sorted POSIX relative paths)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(
            f"text corpus: the Python standard library source directory {root} does not exist "
            "(an embedded or zipped Python?). Use the digits task (--task digits), or point "
            "INT4LAB_DATA_DIR at a cache built on another machine with the same Python version.")
    files = [p for p in root.rglob("*.py")
             if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(
            f"text corpus: no .py files under {root}; this Python ships its standard library "
            "without source. Use --task digits instead.")
    return root, files


def build_corpus(max_chars=TEXT_MAX_CHARS, root=None):
    """Concatenate stdlib sources until max_chars; non-ASCII characters become '?' so the
    vocabulary stays ~100 characters. Returns (text, list of files used)."""
    root, files = stdlib_files(root)
    parts, used, n = [], [], 0
    for p in files:
        src = p.read_text(encoding="utf-8", errors="replace")
        src = src.encode("ascii", errors="replace").decode("ascii")
        parts.append(src)
        used.append(p.relative_to(root).as_posix())
        n += len(src)
        if n >= max_chars:
            break
    return "".join(parts)[:max_chars], used


def _sha256(text):
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class TextData:
    train: torch.Tensor          # int64 token ids
    val: torch.Tensor
    vocab: str                   # the characters, sorted; token id = index
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def encode(self, s):
        stoi = {c: i for i, c in enumerate(self.vocab)}
        return torch.tensor([stoi[c] for c in s], dtype=torch.long)

    def decode(self, ids):
        return "".join(self.vocab[int(i)] for i in ids)


def load_text(cache_dir=None, max_chars=TEXT_MAX_CHARS, rebuild=False):
    """The stdlib character corpus, split 90/10 (the last 10% of the text is validation)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    txt_path, meta_path = cache_dir / "stdlib_text.txt", cache_dir / "stdlib_text.json"
    want = {"python": platform.python_version(), "max_chars": max_chars, "val_fraction": VAL_FRACTION}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and not rebuild else None
    text = None
    if meta and all(meta.get(k) == v for k, v in want.items()) and txt_path.exists():
        text = txt_path.read_text(encoding="ascii")
        if _sha256(text) != meta["sha256"]:
            text = None  # a damaged or edited cache: rebuild rather than train on it
    if text is None:
        text, files = build_corpus(max_chars)
        meta = {**want, "sha256": _sha256(text), "n_chars": len(text), "n_files": len(files),
                "first_file": files[0], "last_file": files[-1],
                "split_at": int(len(text) * (1 - VAL_FRACTION))}
        # DDP ranks may build at the same time: neither sees a half file
        for path, content in ((txt_path, text), (meta_path, json.dumps(meta, indent=1))):
            replace_atomically(path, lambda tmp, c=content: tmp.write_text(c, encoding="ascii"))
    vocab = "".join(sorted(set(text)))
    lut = np.zeros(128, dtype=np.int64)
    lut[np.frombuffer(vocab.encode("ascii"), dtype=np.uint8)] = np.arange(len(vocab))
    ids = torch.from_numpy(lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)])
    return TextData(ids[:meta["split_at"]], ids[meta["split_at"]:], vocab, meta)


def text_batch(ids, block_size, batch_size, generator):
    """batch_size random windows of block_size+1 tokens: inputs x and next-token targets y."""
    if len(ids) <= block_size + 1:
        raise ValueError(f"text of {len(ids)} tokens is too short for block_size {block_size}")
    ix = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=generator)
    rows = torch.stack([ids[i:i + block_size + 1] for i in ix.tolist()])
    return rows[:, :-1], rows[:, 1:]


# ---------------------------------------------------------------- digits

@dataclass
class DigitsData:
    x_train: torch.Tensor        # (N, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor        # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits(seed=0, val_fraction=0.2):
    """scikit-learn's 1,797 digits, scaled to [0, 1], a fixed random split per seed."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError("the digits task needs scikit-learn (pip install scikit-learn); "
                          "it bundles the images, nothing is downloaded") from e
    d = sk_load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(len(y)))
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return DigitsData(x[train], y[train], x[val], y[val])


def epoch_indices(n, seed, start, count):
    """Positions start .. start+count-1 of an endless stream of shuffled epochs over range(n);
    epoch e is a permutation drawn from (seed, e) alone."""
    out = []
    while count > 0:
        epoch, offset = divmod(start, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(count, n - offset)
        out.append(perm[offset:offset + take])
        start, count = start + take, count - take
    return torch.cat(out)

"""The offline datasets: deterministic, checksummed, split, and clear when something is missing."""
import json

import pytest
import torch

from int4lab.training import data as D


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """A private, small corpus (so the tests neither depend on nor disturb data/cache)."""
    d = tmp_path_factory.mktemp("cache")
    return d, D.load_text(cache_dir=d, max_chars=200_000)


def test_text_corpus_is_deterministic_and_checksummed(small_cache):
    d, text = small_cache
    meta = json.loads((d / "stdlib_text.json").read_text())
    assert meta["sha256"] == text.meta["sha256"] and meta["n_chars"] == 200_000
    assert meta["python"]  # recorded: the stdlib differs between versions
    again, _ = D.build_corpus(200_000)          # rebuilt from scratch, same bytes
    assert D._sha256(again) == meta["sha256"]
    assert text.decode(torch.cat([text.train, text.val])) == again


def test_text_split_and_vocab(small_cache):
    _, text = small_cache
    assert len(text.train) == 180_000 and len(text.val) == 20_000   # last 10% is validation
    assert 60 < text.vocab_size < 100 and text.vocab == "".join(sorted(set(text.vocab)))
    assert text.decode(text.encode("def f(x):")) == "def f(x):"


def test_damaged_or_other_version_cache_is_rebuilt(small_cache, tmp_path):
    d, text = small_cache
    for name in ("stdlib_text.txt", "stdlib_text.json"):
        (tmp_path / name).write_text((d / name).read_text())
    (tmp_path / "stdlib_text.txt").write_text("x" * 200_000)       # damaged: checksum mismatch
    assert D.load_text(cache_dir=tmp_path, max_chars=200_000).meta["sha256"] == text.meta["sha256"]
    meta = json.loads((tmp_path / "stdlib_text.json").read_text())
    meta["python"] = "2.7.18"                                       # built by another Python
    (tmp_path / "stdlib_text.json").write_text(json.dumps(meta))
    assert D.load_text(cache_dir=tmp_path, max_chars=200_000).meta["python"] != "2.7.18"


def test_missing_stdlib_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*--task digits"):
        D.stdlib_files(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no .py files"):
        D.stdlib_files(tmp_path)


def test_text_batches_are_next_character_pairs(small_cache):
    _, text = small_cache
    x, y = D.text_batch(text.train, 16, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = D.text_batch(text.train, 16, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_digits_split_is_fixed_by_seed():
    a, b, c = D.load_digits(0), D.load_digits(0), D.load_digits(1)
    assert a.x_train.shape == (1438, 1, 8, 8) and a.x_val.shape == (359, 1, 8, 8)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert set(a.y_val.tolist()) == set(range(10))


def test_epoch_indices_cover_each_epoch_once():
    idx = D.epoch_indices(7, seed=3, start=0, count=21)
    for e in range(3):
        assert sorted(idx[7 * e:7 * e + 7].tolist()) == list(range(7))
    # any window of the stream is the same slice, whatever start it is asked from
    assert torch.equal(D.epoch_indices(7, 3, 5, 10), idx[5:15])

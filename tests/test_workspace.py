"""progress.json: validated on read (a bad entry costs its slot, never a lesson) and updated under
a lock (concurrent updates from several processes are all kept)."""
import json
import multiprocessing
import os
import time
import warnings

import pytest
import torch

import int4lab
from int4lab.exercises import registry, workspace


def write_progress(home, slots):
    (home / "progress.json").write_text(json.dumps({"slots": slots}))


def test_an_entry_of_the_wrong_type_is_set_aside(home):
    write_progress(home, {"pack_int4": "unlocked", "unpack_int4": {"revealed": True}})
    with pytest.warns(UserWarning, match=r"pack_int4: a string, not an object.*that slot starts afresh"):
        rows = {r["slot"]: r for r in int4lab.progress(show=False)}
    assert rows["pack_int4"]["status"] == "not started"
    assert rows["unpack_int4"]["status"] == "revealed"          # the good entry is kept
    # the file as it was is kept aside; the rewritten one holds only the good entry
    [aside] = home.glob("progress.json.corrupt-*")
    assert json.loads(aside.read_text())["slots"]["pack_int4"] == "unlocked"
    assert json.loads((home / "progress.json").read_text()) == {"slots": {"unpack_int4": {"revealed": True}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # said once, not on every read
        int4lab.progress(show=False)


def test_the_slot_with_a_bad_entry_still_dispatches(home):
    write_progress(home, {"pack_int4": "unlocked"})
    q = torch.randint(-8, 8, (3, 6), dtype=torch.int8)
    with pytest.warns(UserWarning, match="wrong type"), int4lab.use("learner"):
        p = int4lab.pack_int4(q)
    assert int4lab.last_ran("pack_int4") != "learner"
    assert torch.equal(p, int4lab.spec.packing.pack_int4(q))
    assert registry.learner_fn("pack_int4") is None


@pytest.mark.parametrize("entry, why", [
    ({"unlocked": "yes", "sha256": "ab"}, "'unlocked' is a string, not true or false"),
    ({"unlocked": True, "sha256": 5}, "'sha256' is a number, not a string"),
    ({"revealed": 1}, "'revealed' is a number, not true or false"),
    ({"bench": "fast"}, "'bench' is a string, not an object"),
    ({"bench": {"summary": ["x"]}}, "'bench.summary' is a list, not a string"),
    ({"unlocked_at": None}, "'unlocked_at' is null, not a string"),
    (["pack_int4"], "a list, not an object"),
])
def test_each_field_is_checked(home, entry, why):
    write_progress(home, {"pack_int4": entry, "vector_add": {"revealed": True, "from_the_future": [1]}})
    with pytest.warns(UserWarning, match=f"pack_int4: {why}"):
        data = workspace.read()
    # unknown fields of a good entry are kept (a newer int4lab may write them)
    assert data == {"slots": {"vector_add": {"revealed": True, "from_the_future": [1]}}}
    assert workspace.update("pack_int4", revealed=True) == {"revealed": True}


def test_a_corrupt_file_is_still_moved_aside(home):
    (home / "progress.json").write_text('{"slots": {"pack_int4": {"unlo')       # truncated
    with pytest.warns(UserWarning, match="unreadable"):
        assert workspace.update("pack_int4", revealed=True) == {"revealed": True}
    assert len(list(home.glob("progress.json.corrupt-*"))) == 1
    assert workspace.read() == {"slots": {"pack_int4": {"revealed": True}}}


def test_update_refuses_a_field_of_the_wrong_type(home):
    with pytest.raises(TypeError, match="'unlocked' must be true or false"):
        workspace.update("pack_int4", unlocked="yes")
    assert not (home / "progress.json").exists()


def _hammer(worker, n, barrier, exclusive_file):
    if exclusive_file:
        workspace.fcntl = None              # the platforms without fcntl: an O_EXCL lock file
    barrier.wait()
    for i in range(n):
        workspace.update(f"slot{worker}_{i}", revealed=True, unlocked_at=str(i))


@pytest.mark.parametrize("exclusive_file", [False, True], ids=["flock", "o_excl"])
def test_concurrent_updates_are_not_lost(home, exclusive_file):
    procs, n = 4, 50
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier = ctx.Barrier(procs)
    t0 = time.perf_counter()
    workers = [ctx.Process(target=_hammer, args=(w, n, barrier, exclusive_file)) for w in range(procs)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in workers), [p.exitcode for p in workers]
    slots = workspace.read()["slots"]
    lost = {f"slot{w}_{i}" for w in range(procs) for i in range(n)} - set(slots)
    assert not lost, f"{len(lost)} of {procs * n} updates lost"
    assert not list(home.glob(".progress.json.*.tmp"))            # no temporary file left behind
    print(f"{procs} x {n} updates ({'O_EXCL' if exclusive_file else 'flock'}): "
          f"{time.perf_counter() - t0:.1f} s")


def test_a_stale_lock_file_is_broken(home, monkeypatch):
    monkeypatch.setattr(workspace, "fcntl", None)
    lock = home / "progress.json.lock"
    lock.write_text("12345")                                     # left by a process that died
    old = time.time() - workspace.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    t0 = time.perf_counter()
    workspace.update("pack_int4", revealed=True)
    assert time.perf_counter() - t0 < 5 and not lock.exists()


def test_a_lock_held_too_long_warns_and_goes_on(home, monkeypatch):
    monkeypatch.setattr(workspace, "fcntl", None)
    monkeypatch.setattr(workspace, "LOCK_WAIT_S", 0.2)
    (home / "progress.json.lock").write_text("held")             # fresh: not stale
    with pytest.warns(UserWarning, match="stayed locked"):
        workspace.update("pack_int4", revealed=True)
    assert workspace.read()["slots"]["pack_int4"] == {"revealed": True}

"""Test-wide set-up.

- Progress and learner files go to a temporary home, never ~/.int4lab.
- torch runs single-threaded: the tensors here are small, and intra-op threads on a shared
  2-core machine only add overhead (some spec calls were 100x slower with 2 threads).
"""
import os
import tempfile

os.environ.setdefault("INT4LAB_HOME", tempfile.mkdtemp(prefix="int4lab-test-home-"))
os.environ.setdefault("INT4LAB_FAST", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh learner home, with the registry's in-memory learner state saved and restored."""
    from int4lab.exercises import registry
    monkeypatch.setenv("INT4LAB_HOME", str(tmp_path))
    saved = dict(registry._learner), set(registry._looked_up)
    registry._learner.clear()
    registry._looked_up.clear()
    yield tmp_path
    registry._learner.clear()
    registry._learner.update(saved[0])
    registry._looked_up.clear()
    registry._looked_up.update(saved[1])

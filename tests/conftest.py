"""Test-wide set-up: progress and learner files go to a temporary home, never ~/.int4lab."""
import os
import tempfile

os.environ.setdefault("INT4LAB_HOME", tempfile.mkdtemp(prefix="int4lab-test-home-"))
os.environ.setdefault("INT4LAB_FAST", "1")

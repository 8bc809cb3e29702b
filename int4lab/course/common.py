"""Helpers shared by the lessons' modules."""
import contextlib
import functools

import torch


@contextlib.contextmanager
def one_thread():
    """Run a block with one intra-op thread, then restore the previous count.

    The lessons' tensors are small: one thread computes them about as fast as two, and on a busy
    machine (other notebooks, tests) several threads spinning against each other can make a run
    ten times slower.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def single_threaded(fn):
    """A function decorated to run under one_thread()."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper

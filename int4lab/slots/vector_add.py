"""Slot vector_add (lesson 00): the first kernel a learner writes."""
import torch

from .. import compare
from ..registry import Bench, Check, Slot, register
from .common import generator


def spec(x, y):
    return x + y


def _make(n):
    def make(seed, device):
        g = generator(seed)
        return (torch.randn(n, generator=g).to(device), torch.randn(n, generator=g).to(device)), {}
    return make


def _hint_tail(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        bad = (got != expected).nonzero()
        if len(bad) and int(bad[0, 0]) >= 1024 * (expected.numel() // 1024):
            return "only the last, partial block is wrong: is every load and store masked?"
    return None


register(Slot(
    name="vector_add", spec=spec, triton="int4lab.kernels.vector_add:vector_add", lesson="00",
    checks=[Check(f"n={n}", _make(n), lambda e, g, a, k: compare.close(0, 0)(e, g), seeds=(0,),
                  hidden=hidden)
            for n, hidden in ((1, False), (1000, False), (4099, False), (98432, True), (0, True))],
    hints=[_hint_tail],
    bench=Bench(make=lambda n, d: ((torch.randn(n, device=d), torch.randn(n, device=d)), {}),
                baseline=torch.add, baseline_name="torch.add", sizes=(2**20, 2**24),
                work=lambda a, k: 3 * a[0].numel() * a[0].element_size()),
))

"""Slot vector_add (lesson 00): the first kernel a learner writes."""
import torch

from int4lab.exercises import compare
from int4lab.exercises.registry import Bench, Check, Slot, register
from int4lab.exercises.slots.common import generator
from int4lab.spec.validate import validate_vector_add


def spec(x, y):
    return x + y


def _make(n):
    def make(seed, device):
        g = generator(seed)
        return (torch.randn(n, generator=g).to(device), torch.randn(n, generator=g).to(device)), {}
    return make


def _make_views(seed, device):
    """x a transposed view (its memory not in row order), y contiguous: a kernel that walks both
    as flat memory without .contiguous() adds the wrong pairs."""
    g = generator(seed)
    x = torch.randn(70, 64, generator=g).to(device).t()
    return (x, torch.randn(64, 70, generator=g).to(device)), {}


def _hint_views(args, kwargs, expected, got):
    x, y = args
    if isinstance(got, torch.Tensor) and not (x.is_contiguous() and y.is_contiguous()):
        return ("the inputs here are views whose memory is not in row order (x is transposed): "
                "flatten them with .contiguous() before the kernel walks them as flat arrays")
    return None


def _hint_tail(args, kwargs, expected, got):
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        bad = (got != expected).nonzero()
        if len(bad) and int(bad[0, 0]) >= 1024 * (expected.numel() // 1024):
            return "only the last, partial block is wrong: is every load and store masked?"
    return None


register(Slot(
    name="vector_add", spec=spec, triton="int4lab.kernels.vector_add:vector_add", lesson="00",
    validate=validate_vector_add,
    checks=[Check(f"n={n}", _make(n), lambda e, g, a, k: compare.close(0, 0)(e, g), seeds=(0,),
                  hidden=hidden)
            for n, hidden in ((1, False), (1000, False), (4099, False), (98432, True), (0, False))]
    + [Check("x transposed, y contiguous (64, 70)", _make_views,
             lambda e, g, a, k: compare.close(0, 0)(e, g), seeds=(0,))],
    hints=[_hint_views, _hint_tail],
    bench=Bench(make=lambda n, d: ((torch.randn(n, device=d), torch.randn(n, device=d)), {}),
                baseline=torch.add, baseline_name="torch.add", sizes=(2**20, 2**24),
                work=lambda a, k: 3 * a[0].numel() * a[0].element_size()),
))

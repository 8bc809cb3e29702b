"""The spec's hot path (issue 14) changes how Int4Linear computes, never what: every recipe's
outputs and gradients equal, bit for bit, those recorded from the plain spec before it."""
import pytest
import torch
from golden_layers import PATH, compute


@pytest.fixture(scope="module")
def results():
    return compute(), torch.load(PATH)


def test_every_recipe_is_bit_identical_to_the_recorded_spec(results):
    now, golden = results
    assert sorted(now) == sorted(golden)
    for case, tensors in golden.items():
        assert sorted(now[case]) == sorted(tensors), case
        for name, ref in tensors.items():
            got = now[case][name]
            assert got.dtype == ref.dtype and torch.equal(got, ref), (
                f"{case} {name}: max |diff| {(got.float() - ref.float()).abs().max().item():.3g}")

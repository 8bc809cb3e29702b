"""int4lab.perf.layer_counts: launches, host syncs and full passes of one Int4Linear step."""
import argparse
import json

import pytest
import torch

import int4lab
from int4lab import runtime
from int4lab.exercises import registry
from int4lab.layers import RECIPES
from int4lab.perf import layer_counts
from int4lab.perf.layer_counts import Counter, count_layer, full_numel, main_from_args

TOKENS, D = 256, 128


@pytest.fixture(scope="module")
def hq_lss():
    return count_layer("int4_hq_lss", tokens=TOKENS, d=D, impl="spec")


def test_counts_are_positive_ints_for_int4_hq_lss(hq_lss):
    counts = hq_lss["counts"]
    assert set(counts) == {"launches", "host_syncs", "full_passes"}
    for key, value in counts.items():
        assert isinstance(value, int) and value > 0, (key, value)
    det = hq_lss["detail"]
    assert counts["launches"] == det["aten"] + det["triton"]
    assert counts["host_syncs"] == sum(det["host_syncs_by_op"].values())
    assert det["full_numel"] == full_numel(TOKENS, D) == min(TOKENS * D, D * D) // 4
    assert hq_lss["impl"] and set(hq_lss["impl"].values()) == {"spec"}
    assert {"int4_matmul", "hadamard_quantize", "bit_split", "lss_gather"} <= set(hq_lss["impl"])
    assert hq_lss["recipe"] == "int4_hq_lss" and hq_lss["tokens"] == TOKENS and hq_lss["d"] == D


def test_fp32_has_far_fewer_launches_and_no_host_syncs(hq_lss):
    fp = count_layer("fp32", tokens=TOKENS, d=D)
    assert fp["counts"]["host_syncs"] == 0
    assert 0 < fp["counts"]["launches"] * 5 < hq_lss["counts"]["launches"]
    assert fp["impl"] == {}          # plain PyTorch, no registry slot


def test_one_item_is_one_host_sync():
    def f(t):
        return (t * 2).sum().item()

    t = torch.ones(8)
    with Counter(full_numel(4, 4)) as c:
        f(t)
    assert c.counts()["host_syncs"] == 1
    assert c.detail()["host_syncs_by_op"] == {"_local_scalar_dense": 1}
    assert c.detail()["aten"] == 3          # mul, sum, _local_scalar_dense


def test_views_and_allocations_are_not_launches_and_big_tensors_are_passes():
    x = torch.ones(64, 64)
    with Counter(1024) as c:
        x.view(-1).reshape(64, 64).t().unsqueeze(0)
        torch.empty(10)
        x + 1                  # full: 4096 elements >= 1024
        x[:4].sum()            # 256 elements: a launch, not a full pass
    assert c.detail()["aten"] == 2
    assert c.counts() == {"launches": 2, "host_syncs": 0, "full_passes": 1}
    assert c.detail()["passes_by_op"] == {"add": 1}


def test_data_dependent_shapes_and_host_reads_are_syncs():
    x = torch.arange(16.0)
    with Counter(10 ** 9) as c:
        x[x > 3]               # boolean index: output size depends on the data
        torch.nonzero(x)
        bool(x[0] > 0)
        x.tolist()
    by_op = c.detail()["host_syncs_by_op"]
    assert by_op["index (bool mask)"] == 1 and by_op["nonzero"] == 1
    if c.proxy:
        assert by_op["Tensor.tolist"] == 1
    assert c.counts()["host_syncs"] == sum(by_op.values()) >= 3


@pytest.mark.skipif(not runtime.triton_usable(), reason="Triton is not installed here")
def test_a_triton_launch_is_counted():
    q = torch.randint(-8, 8, (4, 16), dtype=torch.int8, device=int4lab.DEVICE)
    with int4lab.use("triton"):
        with Counter(16) as c:
            int4lab.ops.pack_int4(q)
    assert c.detail()["triton"] == 1
    assert c.detail()["triton_by_kernel"] == {"pack_int4_kernel": 1}
    assert c.detail()["slot_calls"] == {"pack_int4": {"triton": 1}}
    assert c.counts()["launches"] == c.detail()["aten"] + 1


def test_counter_restores_what_it_patched():
    before = (registry.resolve, torch.Tensor.__dict__.get("tolist"), torch.Tensor.cpu)
    with Counter(1):
        assert registry.resolve is not before[0]
    assert registry.resolve is before[0]
    assert torch.Tensor.__dict__.get("tolist") is before[1]
    assert torch.Tensor.cpu == before[2]
    if runtime.triton_usable():
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
        assert InterpretedFunction.run.__module__.startswith("triton")
        assert JITFunction.run.__module__.startswith("triton")


def test_main_from_args_writes_json(tmp_path, capsys):
    path = tmp_path / "out" / "counts.json"
    args = argparse.Namespace(layer="int4_rtn", tokens=64, d=64, json=str(path), impl=None)
    assert main_from_args(args) == 0
    data = json.loads(path.read_text())
    assert set(data["counts"]) == {"launches", "host_syncs", "full_passes"}
    assert all(isinstance(v, int) for v in data["counts"].values())
    assert data["recipe"] == "int4_rtn"
    out = capsys.readouterr().out
    assert "launches" in out and "host syncs" in out and "full passes" in out and "ran:" in out


def test_unknown_recipe_returns_2(capsys):
    args = argparse.Namespace(layer="int3", tokens=64, d=64, json=None, impl=None)
    assert main_from_args(args) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    assert "int3" in out and all(name in out for name in RECIPES)


def test_module_lists_what_it_excludes():
    assert {"view", "reshape", "as_strided", "t", "transpose", "expand", "detach", "alias",
            "_unsafe_view", "empty", "empty_strided"} <= set(layer_counts.METADATA_OPS)
    assert "_local_scalar_dense" in layer_counts.SYNC_OPS


def test_the_fused_layer_meets_the_issue_targets():
    """Issue 13's targets for int4_hq_lss on the library's kernels (the GPU's default path),
    counted in the interpreter: <= 14 launches, 0 host syncs, <= 25 full passes per step."""
    r = count_layer("int4_hq_lss", tokens=TOKENS, d=D, impl="triton")
    c = r["counts"]
    assert c["launches"] <= 14 and c["host_syncs"] == 0 and c["full_passes"] <= 25, (c, r["detail"])
    assert set(r["impl"].values()) == {"triton"} and r["steady"]
    assert r["detail"]["aten"] <= 2                  # the bias add and the step-size sums
    assert r["detail"]["host_work_ops"]              # the seeds: drawn on the host, counted apart


def test_host_work_is_counted_apart_and_cpu_only():
    t = torch.ones(8)
    with Counter(1000) as c:
        with runtime.host_work():
            int(torch.randint(0, 10, (1,)).item())
        (t * 2).sum()
    assert c.counts() == {"launches": 2, "host_syncs": 0, "full_passes": 0}
    assert c.detail()["host_work_ops"] == {"_local_scalar_dense": 1, "randint": 1}

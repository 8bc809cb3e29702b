"""The benchmark suite's smoke mode: every case runs and is checked at tiny sizes, untimed."""
import json

import pytest
import torch

from int4lab.perf import bench


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--suite", "all", "--smoke", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_smoke_covers_every_suite(smoke):
    assert smoke["smoke"] is True and smoke["timed"] is False
    for suite in bench.SUITES:
        assert smoke[suite], f"suite {suite} produced no rows"
    env = smoke["environment"]
    assert env["torch"] and env["triton"] and env["date"]


def test_smoke_records_no_timings(smoke):
    def values(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k, v
                yield from values(v)
        elif isinstance(node, list):
            for v in node:
                yield from values(v)
    timed = [(k, v) for k, v in values(smoke) if k.endswith(("_ms", "_tflops", "_GBps")) and v is not None]
    assert not timed, f"smoke mode must not report timings: {timed[:3]}"


def test_smoke_ran_the_triton_kernels(smoke):
    assert all(r["impl"] == "triton" for r in smoke["gemm"])
    for name in ("hadamard_quantize", "quantize_int4", "bit_split"):
        assert all(r[f"{name}_impl"] == "triton" for r in smoke["memory"])


def test_timing_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--smoke"):
        bench.run_suite(("gemm",), smoke=False)


def test_a_wrong_result_is_never_timed():
    with pytest.raises(AssertionError, match="not timing a wrong kernel"):
        bench._check("demo", torch.ones(2), torch.zeros(2))

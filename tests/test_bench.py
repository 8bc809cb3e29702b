"""The benchmark suite's smoke mode: every case runs and is checked at tiny sizes, untimed."""
import json

import pytest
import torch

import int4lab
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
    lin = smoke["linear"][0]
    assert all(impl == "triton" for impl in lin["impl"].values())
    assert all(p["impl"] == "triton" for p in lin["parts"])


def test_timing_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--smoke"):
        bench.run_suite(("gemm",), smoke=False)


def test_a_wrong_result_is_never_timed():
    with pytest.raises(AssertionError, match="not timing a wrong kernel"):
        bench._check("demo", torch.ones(2), torch.zeros(2))


# ---- what the suite measures (issue 13, item 4) -------------------------------------------------

def test_smoke_has_no_errors_and_every_case_checked(smoke):
    assert smoke["errors"] == []
    assert {r["recipe"] for r in smoke["block"]} == {"bf16", "int4_hq_lss"}
    assert all(r["dtype"] == "bfloat16" for r in smoke["block"] + smoke["linear"])
    method = smoke["method"]
    assert set(method["byte_models"]) == {"clone", *bench.MEMORY_KERNELS}
    assert method["linear_grad_bounds"] == bench.GRAD_BOUNDS and method["linear_grad_bounds_reason"]


def test_byte_models_exact():
    # x of 4 rows x 8 values, 2 bytes each (bf16): 64 bytes; packed codes 4 x 4 = 16 bytes
    assert bench.memory_bytes("clone", 4, 8, 2) == (64, 64)
    assert bench.memory_bytes("quantize_int4", 4, 8, 2) == (64, 16 + 4 * 4)          # + a fp32 scale per row
    assert bench.memory_bytes("hadamard_quantize", 4, 8, 2) == (64 + 32 * 32 * 4, 16 + 4 * 4)   # + H, once
    assert bench.memory_bytes("bit_split", 4, 8, 2) == (2 * 64, 2 * 16 + 2 * 4)     # g twice; hi, lo, 2 scales
    with pytest.raises(KeyError):
        bench.memory_bytes("pack_int4", 4, 8, 2)


def test_smoke_rows_carry_the_byte_model(smoke):
    r = smoke["memory"][0]
    assert (r["M"], r["K"], r["dtype"]) == (31, 64, "float32")        # fp32 on the CPU: 4 bytes
    x = 31 * 64 * 4
    assert (r["clone_bytes_read"], r["clone_bytes_written"]) == (x, x)
    assert (r["quantize_int4_bytes_read"], r["quantize_int4_bytes_written"]) == (x, 31 * 32 + 31 * 4)
    assert (r["hadamard_quantize_bytes_read"], r["hadamard_quantize_bytes_written"]) == (x + 4096, 31 * 32 + 31 * 4)
    assert (r["bit_split_bytes_read"], r["bit_split_bytes_written"]) == (2 * x, 2 * 31 * 32 + 8)
    assert r["bit_split_bytes_read_min"] == x


def test_the_fast_entry_skips_every_validation():
    """What is timed has no host sync: registry.dispatch validates twice (the registry and the
    launcher); dispatch_trusted, the layers' entry, runs the library's launcher with its
    value-reading checks off (and a NaN goes through unseen), while a direct call checks."""
    from int4lab.exercises import registry
    from int4lab.perf.layer_counts import Counter
    x = torch.randn(8, 64)
    syncs = {}
    with registry.use("triton"):
        for how in ("dispatch", "trusted"):
            with Counter(10**9) as c:
                (registry.dispatch if how == "dispatch" else registry.dispatch_trusted)("quantize_int4", x)
            syncs[how] = c.counts()["host_syncs"]
        bad = x.clone()
        bad[0, 0] = float("nan")
        bench.trusted("quantize_int4")(bad)                     # nothing looks at the values
        with pytest.raises(ValueError, match="NaN"):
            registry.dispatch("quantize_int4", bad)
        with pytest.raises(ValueError, match="NaN"):
            registry.get("quantize_int4").triton_fn()(bad)      # the launcher alone checks again
        with pytest.raises(ValueError, match="even"):           # shapes are still checked
            bench.trusted("quantize_int4")(torch.randn(8, 63))
    assert syncs["dispatch"] > syncs["trusted"] == 0


def test_a_failing_case_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    from int4lab.exercises import registry

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(registry.get("quantize_int4"), "triton_fn", lambda: broken)
    assert bench.main(["--suite", "gemm,memory", "--smoke", "--out", str(tmp_path)]) == 1
    res = json.loads((tmp_path / "results.json").read_text())
    assert [(e["suite"], e["case"]) for e in res["errors"]] == [("memory", "31x64 quantize_int4"),
                                                                 ("memory", "64x128 quantize_int4")]
    assert all("injected failure" in e["error"] for e in res["errors"])
    # the other cases ran, on what the triton mode resolves to (the library's kernels; the spec
    # in a student copy, whose kernels are stubs)
    with registry.use("triton"):
        impl = {name: registry.resolve(name)[0] for name in ("int4_matmul", "hadamard_quantize", "bit_split")}
    assert len(res["gemm"]) == 2 and all(r["impl"] == impl["int4_matmul"] for r in res["gemm"])
    for r in res["memory"]:
        assert "quantize_int4_impl" not in r
        assert (r["hadamard_quantize_impl"], r["bit_split_impl"]) == (impl["hadamard_quantize"], impl["bit_split"])


def test_a_suite_that_raises_outside_its_cases_is_recorded(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("suite broke")
    monkeypatch.setattr(bench, "bench_block", boom)
    res = bench.run_suite(("gemm", "block"), smoke=True)
    assert res["block"] == [] and len(res["gemm"]) == 2
    assert res["errors"][0]["suite"] == "block" and "suite broke" in res["errors"][0]["error"]


def test_linear_times_the_layers_own_gemms(smoke, monkeypatch):
    tokens, d_in, d_out = 256, 64, 96
    lin = smoke["linear"][0]
    assert (lin["tokens"], lin["d_in"], lin["d_out"]) == (tokens, d_in, d_out)
    shapes = lin["gemm_shapes"]
    assert {k: shapes["forward"][k] for k in "MNK"} == {"M": tokens, "N": d_out, "K": d_in}
    assert (shapes["grad_input"]["N"], shapes["grad_input"]["K"]) == (d_in, d_out)
    assert (shapes["grad_weight"]["M"], shapes["grad_weight"]["N"]) == (d_out, d_in)
    fwd = next(p for p in lin["parts"] if p["part"] == "forward.int4_matmul")
    assert fwd["shapes"] == [[tokens, d_in // 2], [], [d_out, d_in // 2], []]
    # every GEMM the linear suite runs, the layer's or timed alone, is one of the layer's three
    kernel = __import__("int4lab.kernels.int4_matmul", fromlist=["x"])
    seen, launch = [], kernel.int4_matmul

    def spy(a, a_scale, b, b_scale, *args, **kwargs):
        seen.append((a.shape[0], b.shape[0], 2 * a.shape[1]))
        return launch(a, a_scale, b, b_scale, *args, **kwargs)
    monkeypatch.setattr(kernel, "int4_matmul", spy)
    errors = []
    bench.bench_linear(bench.Timer(True), tokens, [(d_in, d_out)], torch.device("cpu"), errors)
    assert errors == [] and len(seen) >= 9
    for m, n, k in seen:
        assert ((m, n, k) == (tokens, d_out, d_in) or (n, k) == (d_in, d_out) or (m, n) == (d_out, d_in)), (m, n, k)
    assert seen.count((tokens, d_out, d_in)) >= 3       # the check, the recording, the part timed alone


@pytest.fixture
def layer_pair():
    import math

    from int4lab.layers import Int4Linear
    g = torch.Generator().manual_seed(2)
    ref = torch.nn.Linear(64, 96, bias=False)
    with torch.no_grad():
        ref.weight.copy_((torch.rand(96, 64, generator=g) * 2 - 1) / math.sqrt(64))
    ref = ref.to(torch.bfloat16)
    x = torch.randn(256, 64, generator=g).to(torch.bfloat16)
    gy = torch.randn(256, 96, generator=g).to(torch.bfloat16)
    return ref, Int4Linear.from_linear(ref, "int4_hq_lss"), x, gy


def test_gradient_check_passes_the_layer(layer_pair):
    from int4lab.exercises import registry
    with registry.use("spec"):
        torch.manual_seed(0)
        out = bench.check_gradients(*layer_pair)
    assert out["bounds"] == bench.grad_bounds(256)
    assert 0.2 < out["y_rel_err"] < 0.3 and 0.4 < out["dx_rel_err"] < 0.85 and 0.4 < out["dw_rel_err"] < 0.85


@pytest.mark.parametrize("factor, caught_by", [(-1.0, "dx_rel_err"), (0.5, "dx_gain"), (1.5, "dw_gain")])
def test_gradient_check_fails_on_a_wrong_gradient(layer_pair, monkeypatch, factor, caught_by):
    from int4lab import layers
    from int4lab.exercises import registry
    right = layers.lss_backward

    def wrong(*args, **kwargs):
        return tuple(None if t is None else t * factor for t in right(*args, **kwargs))
    monkeypatch.setattr(layers, "lss_backward", wrong)
    with registry.use("spec"), pytest.raises(AssertionError, match=caught_by):
        torch.manual_seed(0)
        bench.check_gradients(*layer_pair)


def test_a_wrong_gradient_is_recorded_and_the_layer_not_timed(monkeypatch):
    from int4lab import layers
    right = layers.lss_backward
    monkeypatch.setattr(layers, "lss_backward", lambda *a, **k: tuple(-t for t in right(*a, **k)))
    errors = []
    rows = bench.bench_linear(bench.Timer(True), 256, [(64, 96)], torch.device("cpu"), errors)
    assert rows == [] and len(errors) == 1
    assert errors[0]["case"] == "tokens=256 d=64->96 check" and "dx_rel_err" in errors[0]["error"]


def test_gain_bounds_tighten_with_tokens():
    assert bench.grad_bounds(256)["gain_min"] == pytest.approx(1 - 2.5 / 16)
    assert bench.grad_bounds(8192)["gain_min"] == pytest.approx(0.95)        # the floor


def test_the_fused_layers_gemms_are_recorded_and_timed_through_its_gemm():
    """On the fused path (what a GPU runs; here fp32 in the interpreter) the layer's three GEMMs
    go through kernels/fused_linear.gemm: record_step sees them as int4_matmul parts, with the
    layer's shapes, to be timed through that same gemm."""
    from int4lab.kernels import fused_linear
    from int4lab.layers import Int4Linear, fused_path
    torch.manual_seed(0)
    tokens, d_in, d_out = 64, 64, 96
    layer = Int4Linear(d_in, d_out, recipe="int4_hq_lss")
    x, gy = torch.randn(tokens, d_in), torch.randn(tokens, d_out)
    with int4lab.use("triton"):
        assert fused_path(layer.recipe, x, layer.weight)
        steps = bench.record_step(layer, x, gy)
    assert [p[0] for p in steps] == ["forward.int4_matmul", "backward.int4_matmul", "backward.int4_matmul#1"]
    assert all(fn is fused_linear.gemm for *_, fn in steps)
    shapes = [bench._gemm_shape(a, kw) for _, _, a, kw, _ in steps]
    S = fused_linear.sample_size(tokens)
    assert shapes == [{"M": tokens, "N": d_out, "K": d_in}, {"M": S, "N": d_in, "K": d_out},
                      {"M": d_out, "N": d_in, "K": S}]

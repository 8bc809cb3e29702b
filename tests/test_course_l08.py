"""Lesson 08's helpers (int4lab.course.l08_speed): roofline, time model, recorded results."""
import json
import math

import pytest

from int4lab.course import l08_speed as l08


def test_roofline_limits_and_ridge():
    # 256^3 bf16 is memory-bound, 4096^3 compute-bound; packed INT4 moves fewer bytes
    small = l08.gemm_cost(256, "bf16")
    assert l08.attainable(small["intensity"], "bf16")[1] == "memory"
    assert l08.attainable(l08.gemm_cost(4096, "bf16")["intensity"], "bf16") == (989.0, "compute")
    assert l08.attainable(l08.gemm_cost(4096, "int4-packed")["intensity"], "int4-packed")[0] == 1979.0
    assert l08.gemm_cost(1024, "int4-packed")["intensity"] > l08.gemm_cost(1024, "int8")["intensity"] \
        > l08.gemm_cost(1024, "bf16")["intensity"]


@pytest.mark.parametrize("kind", list(l08.KINDS))
def test_roofline_figure_marks_the_point(kind):
    fig = l08.roofline_figure(log2_size=9, kind=kind)
    ax = fig.axes[0]
    point = ax.lines[-1]
    c = l08.gemm_cost(512, kind)
    assert point.get_xdata()[0] == pytest.approx(c["intensity"])
    assert point.get_ydata()[0] == pytest.approx(l08.attainable(c["intensity"], kind)[0])
    assert max(ax.lines[1].get_ydata()) == pytest.approx(1979.0)
    assert "512^3" in ax.get_title()


def test_linear_model_ceiling_and_crossover():
    big = [l08.linear_time_model(h, kind=k, quant_bytes=0)["total"] for k in ("bf16", "int4") for h in [8192]]
    assert big[0] / big[1] == pytest.approx(1979 / 989)    # INT8 cores: never more than 2x
    def speedup(h, qb):
        return l08.linear_time_model(h)["total"] / l08.linear_time_model(h, kind="int4", quant_bytes=qb)["total"]
    assert speedup(2560, 24) < 1 < speedup(8960, 24)       # the paper's trend with unfused passes
    assert speedup(1024, 3) < speedup(8192, 3) < 2
    with pytest.raises(ValueError):
        l08.linear_time_model(1024, kind="fp8")


def test_linear_breakdown_figure():
    fig = l08.linear_breakdown_figure(quant_bytes=24, hiddens=(2560, 8960))
    ax, ax2 = fig.axes
    model = ax2.lines[0]
    assert list(model.get_xdata()) == [2560, 8960]
    ys = model.get_ydata()
    assert ys[0] < 1 < ys[1] <= 2
    assert len(ax.patches) == 2 * 4 * 2                   # 2 sizes x 4 parts x (bf16, int4)


def _fake_results(tmp_path, name, date, timed=True):
    d = tmp_path / name
    d.mkdir()
    res = {"environment": {"date": date, "gpu": "NVIDIA H200", "device": "cuda"}, "smoke": not timed,
           "timed": timed,
           "gemm": [{"M": 4096, "N": 4096, "K": 4096, "impl": "triton", "int4_matmul_tflops": 900.0,
                     "torch_mm_tflops": 700.0, "int_mm_tflops": 1200.0, "scaled_mm_fp8_tflops": None}],
           "linear": [{"tokens": 8192, "d": 4096, "speedup_vs_bf16": 1.1}]}
    (d / "results.json").write_text(json.dumps(res))
    return res


def test_latest_results_none_then_newest_timed(tmp_path):
    assert l08.latest_results(tmp_path) is None
    assert l08.latest_results(tmp_path / "missing") is None
    _fake_results(tmp_path, "a", "2026-01-01T00:00:00")
    _fake_results(tmp_path, "b", "2026-03-01T00:00:00")
    _fake_results(tmp_path, "c", "2026-05-01T00:00:00", timed=False)   # smoke: skipped
    got = l08.latest_results(tmp_path)
    assert got["environment"]["date"].startswith("2026-03") and got["path"].endswith("b/results.json")


def test_results_figure_titles_machine_and_date(tmp_path):
    res = _fake_results(tmp_path, "a", "2026-01-01T00:00:00")
    fig = l08.results_figure(res)
    assert "NVIDIA H200" in fig._suptitle.get_text() and "2026-01-01" in fig._suptitle.get_text()
    gemm_ax = fig.axes[0]
    labels = [line.get_label() for line in gemm_ax.lines]
    assert "torch.mm bf16" in labels and "_scaled_mm fp8" not in labels
    assert [p.get_height() for p in fig.axes[1].patches] == [1.1]
    with pytest.raises(ValueError):
        l08.results_figure({"environment": {}})


def test_live_gemm_smoke_on_cpu_and_bench_stays_callable():
    import int4lab
    out = l08.live_gemm()
    assert out["smoke"] and not out["timed"] and len(out["gemm"]) == 2
    assert all(r["int4_matmul_ms"] is None for r in out["gemm"])
    assert "not timed" in l08.describe_gemm(out)
    assert callable(int4lab.bench) and not hasattr(int4lab.bench, "run_suite")
    assert math.isclose(l08.PLANNING_H200["bf16_tflops"] / l08.H200["bf16_tflops"], 780 / 989)
    assert not hasattr(l08, "MEASURED_H200")           # planning estimates, never called measured


# ---- lesson 08's prose against the helpers' outputs ---------------------------------------------

def test_lesson_prose_bytes_and_memory_bound_sizes():
    """Section 1: packed INT4 moves half of bf16's bytes with a bf16 output (a quarter of the
    input bytes); memory-bound below about 620 to 820 on an H200, 890 to 1180 on an H100 SXM;
    ridge points 206/412 (H200) and 295/591 (H100 SXM)."""
    ratio = l08.gemm_cost(4096, "int4-packed")["bytes"] / l08.gemm_cost(4096, "bf16")["bytes"]
    assert ratio == pytest.approx(0.5)
    assert l08.KINDS["int4-packed"][0] / l08.KINDS["bf16"][0] == 0.25
    h200 = [l08.memory_bound_below(k) for k in l08.KINDS]
    h100 = [l08.memory_bound_below(k, l08.H100_SXM_HBM_TBS) for k in l08.KINDS]
    assert round(min(h200), -1) == 620 and round(max(h200), -1) == 820
    assert round(min(h100), -1) == 890 and round(max(h100), -1) == 1180
    for kind, n in zip(l08.KINDS, h200):       # the crossover is where the roofline's limit flips
        assert l08.attainable(l08.gemm_cost(int(n) - 1, kind)["intensity"], kind)[1] == "memory"
        assert l08.attainable(l08.gemm_cost(int(n) + 2, kind)["intensity"], kind)[1] == "compute"
    assert [round(l08.H200[k] / l08.H200["hbm_tbs"]) for k in ("bf16_tflops", "int8_tops")] == [206, 412]
    assert [round(l08.H200[k] / l08.H100_SXM_HBM_TBS) for k in ("bf16_tflops", "int8_tops")] == [295, 591]


def test_lesson_prose_model_against_the_paper():
    """Section 2: the model is slower at 2560 and faster at 4096 and 8960, milder than the paper
    at both ends (a smaller slowdown at 2560, a smaller gain at 8960)."""
    mvp = l08.model_vs_paper(quant_bytes=24)
    (m2560, (p_lo, p_hi)), (m4096, _), (m8960, (q_lo, _)) = mvp[2560], mvp[4096], mvp[8960]
    assert m2560 < 1 < m4096 < m8960
    assert p_hi < m2560                                 # paper 0.78-0.80x, model about 0.87x
    assert m8960 < q_lo                                 # paper 1.54x, model about 1.33x
    assert round(p_lo, 2) == 0.78 and round(p_hi, 2) == 0.80 and round(q_lo, 2) == 1.54
    assert all(1 < l08.speedup(h, quant_bytes=3) < 2 for h in (1024, 2048, 2560, 4096, 8192, 8960))

"""Lesson 03's helpers (int4lab/course/l03_gemm.py): bounds, tiles, roofline, GEMM error."""
import pytest
import torch

from int4lab.course import l03_gemm as l03
from int4lab.spec.packing import pack_int4
from int4lab.spec.quantizers import int4_matmul_spec, quantize


def test_exact_k_bounds():
    assert l03.worst_case_sum(2048) == 131072
    assert l03.max_exact_k("int32") == 33_554_431
    assert l03.max_exact_k("fp32") == 262_144
    assert l03.max_exact_k("fp16") == 32
    assert l03.max_exact_k("bf16") == 4
    # the bound is reached: all codes -8
    a = pack_int4(torch.full((2, 2048), -8, dtype=torch.int8))
    c = int4_matmul_spec(a, torch.tensor(1.0), a, torch.tensor(1.0), out_dtype=torch.int32)
    assert int(c[0, 0]) == l03.worst_case_sum(2048)


def test_accumulation_figure():
    fig = l03.accumulation_figure(K=1024)
    ax, = fig.axes
    ys = ax.lines[0].get_ydata()
    assert ys[0] == 64 and ys[-1] == 64 * 2 ** 26
    levels = sorted(line.get_ydata()[0] for line in ax.lines[1:5])
    assert levels == [2 ** 8, 2 ** 11, 2 ** 24, 2 ** 31 - 1]


def test_tile_grid_masks_the_edges():
    tiles = l03.tile_grid(200, 150, 64, 64)
    assert len(tiles) == 4 * 3
    assert sum(t["active"] for t in tiles) == 200 * 150
    last = tiles[-1]
    assert (last["rows"], last["cols"], last["masked"]) == (8, 22, 64 * 64 - 8 * 22)


def test_tile_traffic_shrinks_with_bigger_tiles():
    small = l03.tile_traffic(4096, 4096, 4096, 32, 32)
    big = l03.tile_traffic(4096, 4096, 4096, 128, 128)
    assert small == 4 * big
    assert big == 0.5 * 4096 * (4096 * 32 * 2)


def test_tiling_figure():
    fig = l03.tiling_figure(M=100, N=70, BLOCK_M=32, BLOCK_N=32, K=128, BLOCK_K=32, pid_m=9, pid_n=0)
    assert len(fig.axes) == 3
    assert "grid 4 x 3" in fig.axes[2].get_title()
    assert "program (3, 0)" in fig._suptitle.get_text()         # pid clipped to the grid
    assert "2 K steps" in fig._suptitle.get_text()


def test_gemm_cost_and_roofline():
    c = l03.gemm_cost(4096, 4096, 4096, "bf16")
    assert c["flops"] == 2 * 4096 ** 3
    assert c["bytes"] == 2 * 2 * 4096 ** 2 + 2 * 4096 ** 2
    assert c["intensity"] == pytest.approx(4096 / 3)
    packed = l03.gemm_cost(4096, 4096, 4096, "int4_packed")
    int8 = l03.gemm_cost(4096, 4096, 4096, "int4_in_int8")
    assert packed["bytes"] < int8["bytes"] < c["bytes"]
    assert l03.ridge_point(989) == pytest.approx(206.0, abs=0.1)
    assert l03.attainable_tflops(10, 989) == pytest.approx(48.0)
    assert l03.attainable_tflops(1e5, 989) == 989
    for size in (128, 1024, 8192, 16384):                 # never more than 1979/989 = 2.0x
        p = l03.roofline_points(size)
        assert p["int4_packed"]["attainable"] <= 1979 / 989 * p["bf16"]["attainable"] + 1e-9
        assert p["int4_packed"]["attainable"] >= p["int4_in_int8"]["attainable"]
    big = l03.roofline_points(8192)
    assert big["int4_packed"]["attainable"] / big["bf16"]["attainable"] == pytest.approx(1979 / 989)


def test_roofline_figure():
    fig = l03.roofline_figure(size=2048, sizes=(256, 1024))
    ax, = fig.axes
    roof_bf16, roof_int8 = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert max(roof_bf16) == 989 and max(roof_int8) == 1979
    big = [line for line in ax.lines if line.get_markersize() == 11]
    assert len(big) == 3
    xs = [line.get_xdata()[0] for line in big]
    assert xs == sorted(xs)                       # bf16 < int8-stored < packed intensity
    assert "2048" in ax.get_title() and "2.00x" in ax.get_title()


def test_quantized_gemm_matches_the_spec_pipeline():
    x, w = l03.gaussian_operands(16, 12, 64)
    y4 = l03.quantized_gemm(x, w, bits=4, granularity="row")
    qx, sx = quantize(x, bits=4, granularity="row")
    qw, sw = quantize(w, bits=4, granularity="row")
    assert torch.equal(y4, int4_matmul_spec(pack_int4(qx), sx, pack_int4(qw), sw))
    y8 = l03.quantized_gemm(x, w, bits=8, granularity="tensor")
    assert l03.relative_error(y8, x @ w.T) < 0.03


def test_gemm_errors_order():
    e = l03.gemm_errors(outlier=1.0, M=64, N=64, K=256)
    assert e["int8 per row"] < e["int4 per row"]
    assert 0.1 < e["int4 per row"] < 0.3
    assert e["int4 per row"] <= e["int4 per tensor"]
    worse = l03.gemm_errors(outlier=10.0, M=64, N=64, K=256)
    assert worse["int4 per row"] > e["int4 per row"]


def test_gemm_error_figure():
    fig = l03.gemm_error_figure(outlier=5.0, K=128)
    scatter, ax = fig.axes
    assert len(ax.lines) == 8                     # a curve and a star per configuration
    assert "x5" in ax.get_legend().get_texts()[0].get_text()
    assert len(scatter.collections) == 1

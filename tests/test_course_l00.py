"""Lesson 00's helpers: the grid layout and its figure (headless, fast)."""
import pytest

from int4lab.course import l00_welcome as l00


def test_cdiv_matches_triton():
    triton = pytest.importorskip("triton")
    for a, b in [(0, 4), (1, 4), (4, 4), (5, 4), (1000, 256), (4099, 1024)]:
        assert l00.cdiv(a, b) == triton.cdiv(a, b)


def test_grid_layout_covers_n_with_a_masked_tail():
    rows = l00.grid_layout(1000, 256)
    assert [r["pid"] for r in rows] == [0, 1, 2, 3]
    assert sum(r["active"] for r in rows) == 1000
    assert [r["masked"] for r in rows] == [0, 0, 0, 24]
    assert rows[-1]["start"] == 768 and rows[-1]["stop"] == 1024


def test_grid_layout_exact_multiple_and_empty():
    assert [r["masked"] for r in l00.grid_layout(1024, 256)] == [0, 0, 0, 0]
    assert l00.grid_layout(0, 256) == []
    with pytest.raises(ValueError):
        l00.grid_layout(10, 0)


def test_program_owners():
    owners = l00.program_owners(10, 4)
    assert owners == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_grid_figure_draws_one_bar_per_program_and_the_tail():
    fig = l00.grid_figure(n=1000, BLOCK=256)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    # 4 active bars (256, 256, 256, 232) and one masked tail of 24 lanes
    assert sorted(widths) == [24, 232, 256, 256, 256]
    assert "4 programs" in ax.get_title() and "24 lanes" in ax.get_title()
    assert any(line.get_xdata()[0] == 1000 for line in ax.get_lines())   # the n marker


def test_grid_figure_flags_a_block_that_is_not_a_power_of_two():
    assert "not a power of two" in l00.grid_figure(n=300, BLOCK=192).axes[0].get_title()
    assert "not a power of two" not in l00.grid_figure(n=300, BLOCK=128).axes[0].get_title()


def test_grid_figure_without_masked_lanes_and_empty():
    ax = l00.grid_figure(n=512, BLOCK=256).axes[0]
    assert len(ax.patches) == 2
    assert len(l00.grid_figure(n=0, BLOCK=64).axes[0].patches) == 0

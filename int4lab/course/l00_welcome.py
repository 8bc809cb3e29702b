"""Lesson 00's helpers: how a 1-D grid of Triton programs covers n elements.

A Triton launch `kernel[(cdiv(n, BLOCK),)](...)` starts cdiv(n, BLOCK) programs; program `pid`
handles the BLOCK indices pid*BLOCK + arange(BLOCK). The last program runs past n unless n is a
multiple of BLOCK, and its extra lanes must be masked. These functions compute that layout in
plain Python and draw it; the notebook checks them against a real kernel.
"""


def cdiv(a, b):
    """Ceiling division, as triton.cdiv: the number of BLOCK-sized programs that cover a."""
    return -(-a // b)


def is_power_of_two(v):
    return v > 0 and v & (v - 1) == 0


def grid_layout(n, BLOCK):
    """One dict per program of a 1-D grid over n elements: pid, start, stop, active, masked.

    start/stop bound the lanes pid*BLOCK .. pid*BLOCK + BLOCK (stop excluded); `active` lanes
    are < n and do real work, `masked` lanes are >= n and must be switched off by the mask.
    """
    if n < 0 or BLOCK < 1:
        raise ValueError(f"need n >= 0 and BLOCK >= 1, got n={n}, BLOCK={BLOCK}")
    rows = []
    for pid in range(cdiv(n, BLOCK)):
        start = pid * BLOCK
        active = min(BLOCK, n - start)
        rows.append({"pid": pid, "start": start, "stop": start + BLOCK, "active": active,
                     "masked": BLOCK - active})
    return rows


def program_owners(n, BLOCK):
    """A list of n ints: the program id that handles each element (what the demo kernel writes)."""
    return [i // BLOCK for i in range(n)]


def grid_figure(n=1000, BLOCK=256):
    """A matplotlib Figure: one bar per program, its active lanes coloured, its masked tail hatched."""
    from matplotlib.figure import Figure

    rows = grid_layout(n, BLOCK)
    fig = Figure(figsize=(9, 1.8 + 0.25 * min(len(rows), 14)))
    ax = fig.add_subplot()
    colors = ("tab:blue", "tab:cyan")
    for r in rows:
        ax.barh(r["pid"], r["active"], left=r["start"], height=0.7, color=colors[r["pid"] % 2],
                edgecolor="black", linewidth=0.5, label="active lanes (offs < n)" if r["pid"] == 0 else None)
        if r["masked"]:
            ax.barh(r["pid"], r["masked"], left=r["start"] + r["active"], height=0.7, color="white",
                    edgecolor="tab:red", hatch="///", linewidth=0.8, label="masked lanes (offs >= n)")
    ax.axvline(n, color="tab:red", linestyle="--", linewidth=1)
    ax.text(n, -0.62, f"n = {n} ", color="tab:red", ha="right", va="center", fontsize=9)
    ax.set_xlabel("element index (offs = pid * BLOCK + tl.arange(0, BLOCK))")
    ax.set_ylabel("program id (pid)")
    ax.set_xlim(0, max(len(rows) * BLOCK, n, 1) * 1.02)
    ax.set_ylim(max(len(rows), 1) - 0.4, -0.9)
    if len(rows) > 24:
        ax.set_yticks([r["pid"] for r in rows][:: cdiv(len(rows), 12)])
    masked = rows[-1]["masked"] if rows else 0
    title = (f"n = {n}, BLOCK = {BLOCK}: grid = cdiv(n, BLOCK) = {len(rows)} programs, "
             f"{masked} lanes of the last one masked")
    if not is_power_of_two(BLOCK):
        title += f"\nBLOCK = {BLOCK} is not a power of two: tl.arange(0, BLOCK) would not compile"
    ax.set_title(title, fontsize=10, color="black" if is_power_of_two(BLOCK) else "tab:red")
    if rows:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig

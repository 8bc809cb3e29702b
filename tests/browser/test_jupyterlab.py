"""The lessons work for a learner in JupyterLab, not only under nbclient (issue 9).

nbclient proves that every cell executes; it cannot see what a learner sees. Here JupyterLab
serves temp copies of the lessons (see conftest.py) and headless Chromium opens each lesson,
runs Run > Run All Cells from the menu in a fresh kernel, waits for the kernel, and checks the
page: every code cell ran (no cell depends on a lucky order), no cell shows an error, every
figure is an image, every widget is drawn (no "Error displaying widget"), and each slider
redraws the plot it drives. A screenshot per lesson goes to results/browser/.

The checks are plain functions (lab_problems, slider_problems) and a broken notebook proves
they can fail. Run: python -m pytest tests/browser -q -s
"""
import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "results" / "browser"
# The lessons with widgets, opened in the browser (kernel seconds in fast mode on 2 cores: 00 ~5,
# 01 ~8, 02 ~8, 04 ~12-22, 05 ~10, 08 ~8, 09 ~6). Left out for the suite's time budget: 06
# (~30 s of kernel time) and 07 (trains several recipes). 03's tiling widget once clamped
# program ids past the grid and did not redraw; this suite caught it and it was fixed.
# INT4LAB_BROWSER_LESSONS="06_gradients 07_training" runs others.
BROWSER_LESSONS = os.environ.get("INT4LAB_BROWSER_LESSONS", " ".join([
    "00_welcome", "01_int4_numbers_and_packing", "02_quantizers", "03_int4_gemm", "04_hadamard",
    "05_int4_linear", "08_speed", "09_beyond_int4"])).split()
RUN_TIMEOUT_S = 150
WIDGET_ERRORS = ("Error displaying widget", "Error rendering output item",
                 "A Jupyter widget could not be displayed", "Failed to display Jupyter Widget")

# a top-level line that shows a figure: `l01.quantization_figure(...)`, `display(x_figure(...))`
FIGURE_LINE = re.compile(r"^(?:display\()?[\w.]*_figure\(", re.M)
WIDGET_LINE = re.compile(r"^interactive_plot\(", re.M)


def expected_outputs(nb):
    """{cell index: (figures, widget boxes)} that the notebook's code cells must show, read from
    their sources. A cell whose top-level line calls a *_figure function shows a figure (its last
    expression); each interactive_plot call shows a widget box and, inside it, a figure. A lower
    bound: figures drawn inside loops or conditions are not counted."""
    expected = {}
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] == "code":
            w = len(WIDGET_LINE.findall(src))
            expected[i] = (w + (1 if FIGURE_LINE.search(src) else 0), w)
    return expected


def totals(expected):
    return sum(f for f, _ in expected.values()), sum(w for _, w in expected.values())


# ---- driving JupyterLab -------------------------------------------------------------------

STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return {prompts, status: ind ? ind.getAttribute('data-status') : null};
}"""


def open_notebook(page, lab, name, timeout_s=90):
    """Open a notebook in a fresh workspace; wait until JupyterLab has started its kernel (from
    the notebook's kernelspec, with no "Select Kernel" dialog) and the kernel is idle."""
    page.goto(lab.url(name, workspace=Path(name).stem.replace("_", "-")))
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=60_000)
    wait_for_kernel(page, lab, name, timeout_s)


def wait_for_kernel(page, lab, name, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server = {s["path"]: s["kernel"]["execution_state"] for s in lab.api("sessions")}
        ui = page.evaluate(KERNEL_JS)
        if server.get(name) == "idle" and ui["status"] == "idle" and ui["kernel"] not in ("", "No Kernel"):
            return
        if ui["dialog"]:
            raise AssertionError(f"{name}: JupyterLab asks the learner to select a kernel: {ui['dialog']}")
        time.sleep(0.5)
    raise AssertionError(f"{name}: no idle kernel after {timeout_s} s (server {server}, page {ui})")


KERNEL_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const ind = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = panel && panel.querySelector('.jp-Toolbar-kernelName');
  const dialog = document.querySelector('.jp-Dialog');
  return {status: ind ? ind.getAttribute('data-status') : null,
          kernel: kernel ? kernel.textContent.trim() : '',
          dialog: dialog ? dialog.innerText.slice(0, 300) : ''};
}"""


def run_all(page, timeout_s=RUN_TIMEOUT_S):
    """Run > Run All Cells, as a learner would; wait until no cell is queued or running and the
    kernel is idle. Returns the seconds it took. Cells skipped after an error keep `[ ]`."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    start = time.monotonic()
    # the first cell leaves `[ ]` as soon as the request is queued
    page.wait_for_function(STATE_JS.replace("return {prompts", "return prompts[0] !== '[ ]:' && {prompts"),
                           timeout=30_000)
    idle_polls = 0
    while time.monotonic() - start < timeout_s:
        state = page.evaluate(STATE_JS)
        done = state and "[*]:" not in state["prompts"] and state["status"] == "idle"
        idle_polls = idle_polls + 1 if done else 0
        if idle_polls >= 3:                      # idle for ~1.5 s: the queue is empty
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"the notebook was still running after {timeout_s} s: {page.evaluate(STATE_JS)}")


COLLECT_JS = """async (widgetErrors) => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')];
  const out = [];
  for (const [index, cell] of cells.entries()) {
    if (!cell.classList.contains('jp-CodeCell')) continue;
    const prompt = (cell.querySelector('.jp-InputPrompt') || {}).textContent || '';
    const stderr = [...cell.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(o => o.textContent);
    const text = (cell.querySelector('.jp-Cell-outputWrapper') || {}).textContent || '';
    const imgs = [...cell.querySelectorAll('.jp-Cell-outputWrapper img')];
    let broken = 0;
    for (const img of imgs) {
      try { await img.decode(); if (!img.naturalWidth) broken++; } catch (e) { broken++; }
    }
    const boxes = [...cell.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets.widget-vbox')];
    out.push({
      index, prompt: prompt.trim(), stderr,
      widgetErrors: widgetErrors.filter(e => text.includes(e)),
      images: imgs.length, brokenImages: broken,
      boxes: boxes.length,
      controls: cell.querySelectorAll('.widget-slider, .widget-dropdown').length,
    });
  }
  return out;
}"""


def collect(page):
    return page.evaluate(COLLECT_JS, list(WIDGET_ERRORS))


def lab_problems(cells, nb):
    """What a learner would see go wrong, from collect(page); [] when the lesson is fine."""
    expected = expected_outputs(nb)
    figures, widgets = totals(expected)
    problems = []

    def where(c):
        lines = "".join(nb["cells"][c["index"]]["source"]).strip().splitlines()
        return f"cell {c['index']} ({lines[0][:60] if lines else 'empty'})"

    for c in cells:
        want_figures, want_boxes = expected.get(c["index"], (0, 0))
        if not re.fullmatch(r"\[\d+\]:", c["prompt"]):
            problems.append(f"{where(c)} never ran (prompt {c['prompt']!r}): Run All stopped before it")
        for s in c["stderr"]:
            if "Traceback" in s or re.search(r"^\w*(Error|Exception)\b", s, re.M):
                problems.append(f"{where(c)} shows an error:\n{s[-1500:]}")
        for e in c["widgetErrors"]:
            problems.append(f"{where(c)} shows {e!r}")
        if c["brokenImages"]:
            problems.append(f"{where(c)} has {c['brokenImages']} image(s) that do not decode")
        if c["images"] < want_figures:
            problems.append(f"{where(c)} shows {c['images']} figure image(s), expected {want_figures}")
        if c["boxes"] != want_boxes:
            problems.append(f"{where(c)} shows {c['boxes']} widget box(es), expected {want_boxes}")
        if c["boxes"] and not c["controls"]:
            problems.append(f"{where(c)}: its widget box shows no slider or dropdown")
    n_images = sum(c["images"] for c in cells)
    if n_images < figures:
        problems.append(f"{n_images} figure image(s) on the page, expected at least {figures}")
    n_boxes = sum(c["boxes"] for c in cells)
    if n_boxes < widgets:
        problems.append(f"{n_boxes} widget box(es) drawn, expected {widgets}")
    return problems


def stderr_notes(cells):
    """stderr that is not an error (warnings): printed, not failed."""
    return [f"cell {c['index']} stderr: {s.strip()[:300]}" for c in cells for s in c["stderr"]
            if not ("Traceback" in s or re.search(r"^\w*(Error|Exception)\b", s, re.M))]


BOX = ".jp-OutputArea-output > .jupyter-widgets.widget-vbox"


WAIT_REDRAW_JS = """([box, before]) => {
  const err = [...box.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent).find(s => /Traceback|^\\w*(Error|Exception)\\b/m.test(s));
  if (err) return {error: err.slice(-1500)};
  const img = box.querySelector('img');
  return img && img.getAttribute('src') !== before ? {changed: true} : false;
}"""


def _redraw(page, box, act, timeout_s):
    """Do act() (a key press, a selection) and wait for the box's figure to be redrawn.
    Returns None when it was, else what went wrong."""
    img = box.locator("img")
    before = img.first.get_attribute("src") if img.count() else None
    act()
    try:
        result = page.wait_for_function(WAIT_REDRAW_JS, arg=[box.element_handle(), before],
                                        timeout=timeout_s * 1000).json_value()
    except Exception:
        return f"its figure did not change within {timeout_s} s"
    return f"the figure failed:\n{result['error']}" if "error" in result else None


def slider_problems(page, timeout_s=45, keys=("ArrowRight", "End", "Home")):
    """Drive every control of every widget box as a learner would, one control at a time: each
    slider one step right (ArrowRight), to its maximum (End), to its minimum (Home), then back
    to its first value (typed into its readout); each dropdown to each of its other options and
    back. Every move must redraw the box's figure, without an error."""
    problems = []
    boxes = page.locator(f".jp-NotebookPanel:not(.lm-mod-hidden) {BOX}")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        if not box.locator("img").count():
            problems.append(f"widget box {i}: no figure to redraw")
            continue
        sliders = box.locator(".widget-slider")
        for j in range(sliders.count()):
            slider = sliders.nth(j)
            handle = slider.locator(".noUi-handle").first
            handle.scroll_into_view_if_needed()
            # text_content, not inner_text: off-screen cells (content-visibility) have no inner text
            label = slider.locator(".widget-label").first.text_content().strip()
            readout = slider.locator(".widget-readout").first
            first = readout.text_content().strip()
            for key in keys:
                now, lo, hi = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
                if (key == "Home" and now == lo) or (key != "Home" and now == hi):
                    continue                                   # already there: nothing to redraw
                start = readout.text_content().strip()
                handle.focus()
                bad = _redraw(page, box, lambda: page.keyboard.press(key), timeout_s)
                if bad:
                    problems.append(f"widget box {i}: slider {label} moved {start} -> "
                                    f"{readout.text_content().strip()} ({key}): {bad}")
            if readout.text_content().strip() != first:

                def type_first():
                    readout.click()
                    page.keyboard.press("Control+a")
                    page.keyboard.type(first)
                    page.keyboard.press("Enter")
                bad = _redraw(page, box, type_first, timeout_s)
                if bad:
                    problems.append(f"widget box {i}: slider {label} set back to {first} "
                                    f"(typed into its readout): {bad}")
        dropdowns = box.locator(".widget-dropdown")
        for j in range(dropdowns.count()):
            dropdown = dropdowns.nth(j)
            label = dropdown.locator(".widget-label").first.text_content().strip()
            select = dropdown.locator("select")
            options = select.locator("option").all_text_contents()
            for option in options[1:] + options[:1]:          # each other option, then back
                bad = _redraw(page, box, lambda: select.select_option(label=option), timeout_s)
                if bad:
                    problems.append(f"widget box {i}: dropdown {label} set to {option}: {bad}")
    return problems


def screenshot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    first = page.locator(f".jp-NotebookPanel:not(.lm-mod-hidden) {BOX}").first
    if first.count():
        first.scroll_into_view_if_needed()
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def wait_for_outputs(page, figures, timeout_s=15):
    """Widget views and images render after the kernel replies: let them settle."""
    try:
        page.wait_for_function(
            "(n) => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-Cell-outputWrapper img').length >= n", arg=figures, timeout=timeout_s * 1000)
    except Exception:
        pass                                   # lab_problems reports what is missing


def check_in_lab(page, lab, name, **slider_options):
    """Open, run all, and check one notebook of lab.root (then drive its widgets); returns the
    problems found, [] when a learner would see nothing wrong."""
    nb = json.loads((lab.root / name).read_text())
    figures, widgets = totals(expected_outputs(nb))
    t0 = time.monotonic()
    open_notebook(page, lab, name)
    t1 = time.monotonic()
    seconds = run_all(page)
    wait_for_outputs(page, figures)
    cells = collect(page)
    problems = lab_problems(cells, nb)
    for note in stderr_notes(cells):
        print(f"{name}: {note}")
    t2 = time.monotonic()
    problems += slider_problems(page, **slider_options)
    # what the widgets left in their outputs (an error raised by a redraw, say)
    problems += [p for p in lab_problems(collect(page), nb) if p not in problems]
    print(f"{name}: opened in {t1 - t0:.1f} s, ran all in {seconds:.1f} s, "
          f"{sum(c['images'] for c in cells)} images (expected >= {figures}), "
          f"{sum(c['boxes'] for c in cells)} widget boxes (expected {widgets}), "
          f"widgets driven in {time.monotonic() - t2:.1f} s")
    return problems


def reload_problems(page, lab, name):
    """A learner saves and refreshes the browser tab: with the kernel still running, the saved
    widget views must be drawn again from the kernel's models, not "model not found"."""
    nb = json.loads((lab.root / name).read_text())
    figures, _ = totals(expected_outputs(nb))
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty')", timeout=15_000)
    page.reload()
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=60_000)
    wait_for_kernel(page, lab, name)
    wait_for_outputs(page, figures)
    page.wait_for_function(  # widget views are restored from the kernel a little later
        "(n) => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider').length >= n",
        arg=1, timeout=15_000)
    return [f"after a reload: {p}" for p in lab_problems(collect(page), nb)]


# ---- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("stem", BROWSER_LESSONS)
def test_lesson_in_jupyterlab(stem, page, lab):
    name = f"{stem}.ipynb"
    figures, widgets = totals(expected_outputs(json.loads((lab.root / name).read_text())))
    assert figures and widgets, f"{name}: a browser lesson should have figures and widgets"
    problems = check_in_lab(page, lab, name)
    screenshot(page, stem)
    if stem == BROWSER_LESSONS[0]:                 # once: a refresh of the browser tab
        problems += reload_problems(page, lab, name)
    assert not problems, f"{name} in JupyterLab:\n- " + "\n- ".join(problems)


def _code(src):
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": src}


BROKEN = [
    _code("%matplotlib inline\nfrom IPython.display import display\nfrom matplotlib.figure import Figure\n"
          "from int4lab.course.widgets import interactive_plot\n"
          "frozen = Figure(figsize=(3, 2)); frozen.subplots().plot([0, 1], [1, 0])"),
    # a slider that drives nothing: its figure never changes
    _code("interactive_plot(lambda a: frozen, a=(0, 10, 1, 5));"),
    # a widget view whose model the kernel never created
    _code('display({"application/vnd.jupyter.widget-view+json": {"model_id": "0" * 32,\n'
          '          "version_major": 2, "version_minor": 0}}, raw=True)'),
    # a long page: the checks must also see cells far below the visible part of the notebook
    {"cell_type": "markdown", "metadata": {}, "source": "\n\n".join(f"filler {i}" for i in range(60))},
    # a figure that is never drawn (a name defined nowhere: works only in a lucky order)
    _code("missing_figure(k=3)"),
    _code('print("never reached")'),
]


def test_the_checks_catch_a_broken_notebook(page, lab):
    """The suite can fail: a notebook with an error, a missing widget model, a figure that never
    appears, a cell that never runs and a slider that redraws nothing is reported on each count."""
    nb = {"cells": BROKEN, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                       "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    name = "zz_broken_check.ipynb"
    (lab.root / name).write_text(json.dumps(nb))
    assert totals(expected_outputs(nb)) == (2, 1)
    problems = check_in_lab(page, lab, name, timeout_s=5, keys=("ArrowRight",))
    screenshot(page, "zz_broken_check")
    report = "\n".join(problems)
    print(report)
    assert "cell 4 (missing_figure(k=3)) shows an error" in report and "NameError" in report, report
    assert "cell 2 (display(" in report and "shows 'Error displaying widget'" in report, report
    assert "cell 4 (missing_figure(k=3)) shows 0 figure image(s), expected 1" in report, report
    assert "1 figure image(s) on the page, expected at least 2" in report, report
    assert "cell 5 (print(\"never reached\")) never ran" in report, report
    assert "slider a moved 5 -> 6 (ArrowRight): its figure did not change" in report, report

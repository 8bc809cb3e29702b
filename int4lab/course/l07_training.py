"""Lesson 07's helpers: train the tiny GPT and ViT under each recipe, and compare.

Training is int4lab.training.loop (the same loop as `int4lab train`), quantization is
int4lab.layers.quantize_model; nothing here re-implements either. The paper's numbers are its
Table 1 (Xi, Li, Chen, Zhu, "Training Transformers with 4-bit Integers", NeurIPS 2023); the
course's own measurements are read from docs/RESULTS.md (made by scripts/make_results.py), never
written here. Figures are built with matplotlib.figure.Figure (no pyplot): headless and testable.
"""
import contextlib
import os
import re
import time
from pathlib import Path

import torch.nn as nn

from int4lab.course.l06_gradients import one_thread
from int4lab.layers import Int4Linear

#: The recipes in the order the lesson shows them, full precision first, the paper's last.
RECIPE_ORDER = ("fp32", "int8", "int4_rtn", "int4_lsq_sr", "int4_hq", "int4_hq_lss")

#: What each recipe quantizes, in words.
RECIPE_ABOUT = {
    "fp32": "no quantization: the reference",
    "int8": "INT8 per-row forward, INT8 stochastic ∇Y",
    "int4_rtn": "naive INT4: per-tensor round-to-nearest, forward and ∇Y",
    "int4_lsq_sr": "INT4 with LSQ's learned scale; stochastic INT4 ∇Y",
    "int4_hq": "Hadamard quantizer forward; ∇Y in full precision",
    "int4_hq_lss": "the paper: HQ forward, bit splitting + LSS for ∇Y",
}

#: One colour per recipe, the same in every figure.
RECIPE_COLORS = dict(zip(RECIPE_ORDER, ("black", "tab:gray", "tab:red", "tab:orange", "tab:cyan",
                                        "tab:blue")))

#: Tiny models for a 2-core CPU: one block, width 32 (a Hadamard block), 32 sequences per step.
LESSON_SETTINGS = {
    "text": dict(block_size=32, batch_size=32, n_layer=1, n_head=4, n_embd=32, lr=3e-3, min_lr=3e-4,
                 warmup_steps=10, eval_batches=4),
    "digits": dict(batch_size=32, n_layer=1, n_head=4, n_embd=32, lr=3e-3, min_lr=1e-4,
                   warmup_steps=10),
}

#: The paper's Table 1 (FP / INT8 / LSQ+LUQ / HQ+LSS), higher is better for every row.
PAPER_COLUMNS = ("FP", "INT8", "LSQ+LUQ", "HQ+LSS")
PAPER_TABLE1 = (
    ("GLUE avg, BERT-base", 82.67, 81.45, 75.29, 80.81),
    ("GLUE avg, BERT-large", 84.57, 82.74, 55.93, 82.25),
    ("SQuAD v1 F1, BERT", 88.32, 88.42, 85.75, 87.60),
    ("CIFAR-10, ViT-B/32", 98.77, 98.59, 97.76, 98.36),
    ("ImageNet, ViT-B/32", 81.88, 80.42, 77.25, 79.18),
    ("DeiT-S pretraining", 73.1, 70.95, 69.96, 69.18),
)

RESULTS_MD = Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md"


# ---------------------------------------------------------------------------------------------
# Building and quantizing the two models

def lesson_config(task, recipe="fp32", steps=100, seed=0, n_evals=10, **overrides):
    """A TrainConfig for the lesson's tiny models (LESSON_SETTINGS), evaluated n_evals times."""
    from int4lab import runtime
    from int4lab.training.loop import TrainConfig

    settings = {**LESSON_SETTINGS[task], **overrides}
    settings.setdefault("eval_every", max(1, steps // n_evals))
    # where int4lab's slots run: the Triton kernels on a GPU need the model there too
    settings.setdefault("device", runtime.DEVICE.type)
    return TrainConfig(task=task, recipe=recipe, steps=steps, seed=seed, progress=False, **settings)


def build_model(task, recipe="fp32", seed=0):
    """The tiny GPT (text) or ViT (digits) of the lesson, with quantize_model applied."""
    import torch

    from int4lab.training import data as D
    from int4lab.training.loop import apply_recipe, build

    cfg = lesson_config(task, recipe)
    dataset = D.load_text() if task == "text" else D.load_digits()
    torch.manual_seed(seed)
    return apply_recipe(build(cfg, dataset), recipe)


def layer_table(model):
    """Every module that holds a matmul or an embedding: (name, what it is, precision)."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, Int4Linear):
            rows.append((name, f"Int4Linear {m.in_features}->{m.out_features}", f"recipe {m.recipe.name}"))
        elif isinstance(m, nn.Linear):
            rows.append((name, f"nn.Linear {m.in_features}->{m.out_features}", "full precision"))
        elif isinstance(m, (nn.Embedding, nn.Conv2d)):
            rows.append((name, type(m).__name__, "full precision"))
    return rows


# ---------------------------------------------------------------------------------------------
# Training every recipe

def run_recipes(task, recipes, steps, seed=0, n_evals=10, **overrides):
    """Train one model per recipe, same seed, data and schedule; {recipe: TrainResult}, each with
    a `seconds` attribute (wall time, this machine). On the CPU with one thread (l06.one_thread:
    these models are tiny)."""
    from int4lab import runtime
    from int4lab.training.loop import train

    out = {}
    with one_thread() if not runtime.HAS_CUDA else contextlib.nullcontext():
        for recipe in recipes:
            t = time.perf_counter()
            r = train(lesson_config(task, recipe, steps, seed, n_evals, **overrides))
            r.seconds = time.perf_counter() - t
            out[recipe] = r
    return out



def _get(r, key):
    return r[key] if isinstance(r, dict) else getattr(r, key)


def final_rows(results):
    """One row per (task, recipe): final val loss, its change vs fp32, val accuracy, seconds.
    results: {task: {recipe: TrainResult or its to_dict()}}."""
    rows = []
    for task, by_recipe in results.items():
        base = by_recipe.get("fp32")
        base_loss = _get(base, "val_loss")[-1] if base is not None else None
        for recipe, r in by_recipe.items():
            loss = _get(r, "val_loss")[-1]
            rows.append({"task": task, "recipe": recipe, "val_loss": loss,
                         "vs_fp32": (loss / base_loss - 1) if base_loss else None,
                         "val_acc": _get(r, "val_acc")[-1],
                         "seconds": r.get("seconds") if isinstance(r, dict) else getattr(r, "seconds", None)})
    return rows


def format_rows(rows):
    """final_rows as a text table."""
    lines = [f"{'task':7} {'recipe':12} {'val loss':>9} {'vs fp32':>8} {'val acc':>8} {'seconds':>8}",
             "-" * 57]
    for r in rows:
        rel = f"{100 * r['vs_fp32']:+.1f}%" if r["vs_fp32"] is not None else "-"
        sec = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        lines.append(f"{r['task']:7} {r['recipe']:12} {r['val_loss']:9.4f} {rel:>8} "
                     f"{100 * r['val_acc']:7.1f}% {sec:>8}")
    return "\n".join(lines)


def ranking(by_recipe, metric="val_loss"):
    """Recipes from best to worst by the final value of metric (lower loss, higher accuracy)."""
    sign = -1 if metric == "val_acc" else 1
    return sorted(by_recipe, key=lambda k: sign * _get(by_recipe[k], metric)[-1])


def paper_order_checks(by_recipe):
    """The paper's ordering FP >= INT8 >= HQ+LSS > LSQ+LUQ (its prior 4-bit baseline; here
    int4_lsq_sr, the closest recipe), and HQ+LSS > naive INT4 (int4_rtn), pair by pair, on final
    val loss (lower is better). Returns [(claim, holds, loss_a, loss_b)] for the pairs both
    present."""
    pairs = (("fp32", "int8"), ("int8", "int4_hq_lss"), ("fp32", "int4_hq_lss"),
             ("int4_hq_lss", "int4_lsq_sr"), ("int4_hq_lss", "int4_rtn"))
    out = []
    for a, b in pairs:
        if a in by_recipe and b in by_recipe:
            la, lb = _get(by_recipe[a], "val_loss")[-1], _get(by_recipe[b], "val_loss")[-1]
            strict = b in ("int4_lsq_sr", "int4_rtn")
            holds = la < lb if strict else la <= lb
            out.append((f"{a} {'<' if strict else '<='} {b} (val loss)", holds, la, lb))
    return out


# ---------------------------------------------------------------------------------------------
# Figures

METRICS = {"val_loss": "validation loss", "train_loss": "training loss", "val_acc": "validation accuracy (%)"}


def loss_curves_figure(results, recipes=None, metric="val_loss"):
    """One panel per task: metric against the training step for the chosen recipes (all if None).
    results: {task: {recipe: TrainResult or dict}}. Nothing is trained here."""
    from matplotlib.figure import Figure

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    tasks = list(results)
    fig = Figure(figsize=(5 * max(1, len(tasks)), 3.8))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        shown = [r for r in (recipes if recipes is not None else results[task]) if r in results[task]]
        for recipe in shown:
            res = results[task][recipe]
            steps, values = _get(res, "steps"), _get(res, metric)
            if metric == "train_loss":           # the first point is the initial val loss
                steps, values = steps[1:], values[1:]
            if metric == "val_acc":
                values = [100 * v for v in values]
            ax.plot(steps, values, color=RECIPE_COLORS.get(recipe), marker=".", label=recipe)
        ax.set_xlabel("training step")
        ax.set_ylabel(METRICS[metric])
        model = {"text": "GPT on Python source", "digits": "ViT on 8x8 digits"}.get(task, task)
        ax.set_title(f"{task}: {model}", fontsize=10)
        if metric != "val_acc" and shown:
            # zoom on the second half, where the recipes separate
            finals = []
            for r in shown:
                values = _get(results[task][r], metric)
                finals += values[len(values) // 3:]
            lo, hi = min(finals), max(finals)
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
        if shown:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def paper_order_exceptions():
    """The rows of Table 1 where FP >= INT8 >= HQ+LSS > LSQ+LUQ does not hold, in words."""
    out = []
    for name, fp, i8, luq, hq in PAPER_TABLE1:
        if i8 > fp:
            out.append(f"{name}: INT8 {i8} > FP {fp}")
        if hq > i8:
            out.append(f"{name}: HQ+LSS {hq} > INT8 {i8}")
        if luq >= hq:
            out.append(f"{name}: LSQ+LUQ {luq} >= HQ+LSS {hq}")
    return out


def paper_gaps():
    """[(row, FP - HQ+LSS)] of the paper's Table 1: how many points HQ+LSS is under FP."""
    return [(name, round(fp - hq, 2)) for name, fp, _, _, hq in PAPER_TABLE1]


def paper_figure():
    """The paper's Table 1 as grouped bars: FP, INT8, LSQ+LUQ (the prior 4-bit method) and HQ+LSS."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8))
    ax = fig.add_subplot()
    colors = ("black", "tab:gray", "tab:red", "tab:blue")
    width = 0.2
    for j, (col, color) in enumerate(zip(PAPER_COLUMNS, colors)):
        xs = [i + (j - 1.5) * width for i in range(len(PAPER_TABLE1))]
        ax.bar(xs, [row[1 + j] for row in PAPER_TABLE1], width, color=color, label=col)
    ax.set_xticks(range(len(PAPER_TABLE1)), [row[0] for row in PAPER_TABLE1], fontsize=8)
    ax.set_ylim(50, 100)
    ax.set_ylabel("score (higher is better)")
    exceptions = paper_order_exceptions()
    ax.set_title("paper, Table 1: FP ≥ INT8 ≥ HQ+LSS > LSQ+LUQ"
                 + (f", except\n{'; '.join(exceptions)}" if exceptions else " on every row"), fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    fig.tight_layout()
    return fig


def recipe_picker(results, metric="val_loss"):
    """A widget: one checkbox per recipe and a metric menu; redraws loss_curves_figure from the
    results already computed (no training). Returns the widget, or None without ipywidgets."""
    from IPython.display import display

    recipes = []
    for by_recipe in results.values():
        recipes += [r for r in by_recipe if r not in recipes]
    recipes.sort(key=lambda r: RECIPE_ORDER.index(r) if r in RECIPE_ORDER else len(RECIPE_ORDER))
    try:
        import ipywidgets as w
    except ImportError:
        print("ipywidgets is not installed: showing every recipe.")
        display(loss_curves_figure(results, None, metric))
        return None
    if os.environ.get("INT4LAB_WIDGETS", "1") == "0":      # headless runs: see int4lab/course/widgets.py
        print("(controls off: INT4LAB_WIDGETS=0; showing every recipe)")
        display(loss_curves_figure(results, None, metric))
        return None
    boxes = {r: w.Checkbox(value=True, description=r, indent=False, layout=w.Layout(width="130px"))
             for r in recipes}
    menu = w.Dropdown(options=[(v, k) for k, v in METRICS.items()], value=metric, description="show")
    out = w.Output()

    def redraw(*_):
        chosen = [r for r, b in boxes.items() if b.value]
        out.clear_output(wait=True)
        with out:
            display(loss_curves_figure(results, chosen, menu.value))

    for b in boxes.values():
        b.observe(redraw, names="value")
    menu.observe(redraw, names="value")
    box = w.VBox([w.HBox(list(boxes.values())), menu, out])
    redraw()
    display(box)
    return box


# ---------------------------------------------------------------------------------------------
# What docs/RESULTS.md measured (read, never invented)

def results_md_text(path=None):
    """The text of docs/RESULTS.md, or None when it has not been generated."""
    path = Path(path) if path is not None else RESULTS_MD
    return path.read_text() if path.exists() else None


def results_md_tables(path=None):
    """The recipe tables of docs/RESULTS.md: {section title: [table lines]} for every '## '
    section that holds a markdown table of recipes; {} when the file does not exist."""
    text = results_md_text(path)
    if text is None:
        return {}
    tables, title = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.startswith("|") and title is not None and re.search(r"recipe|`\w+`", line):
            tables.setdefault(title, []).append(line)
        elif line.startswith("|---") and title in tables:
            tables[title].append(line)
    # keep the tables that list recipes (a header row naming "recipe")
    return {t: rows for t, rows in tables.items() if rows and "recipe" in rows[0]}

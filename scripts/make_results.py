"""Regenerate docs/RESULTS.md: every recipe on both tasks, several seeds, on this machine.

    python scripts/make_results.py                 # all recipes, both tasks, seeds 0,1,2
    python scripts/make_results.py --tasks digits --seeds 0

Each finished run is kept as JSON under --runs (default runs/make_results/), so an interrupted
invocation picks up where it stopped; --fresh discards them. The settings are int4lab.training.loop's
TASK_DEFAULTS, the same for every recipe: the fp32 baseline gets exactly the budget the INT4
recipes get.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from int4lab.training.loop import TASK_DEFAULTS, config_for, recipe_names, train  # noqa: E402

# paper Table 1 (FP / INT8 / LSQ+LUQ / HQ+LSS); source and caveats: docs/facts.md
PAPER = [("GLUE avg, BERT-base", "82.67", "81.45", "75.29", "80.81"),
         ("GLUE avg, BERT-large", "84.57", "82.74", "55.93", "82.25"),
         ("SQuAD v1 F1", "88.32", "88.42", "85.75", "87.60"),
         ("CIFAR-10, ViT-B/32", "98.77", "98.59", "97.76", "98.36"),
         ("ImageNet, ViT-B/32", "81.88", "80.42", "77.25", "79.18"),
         ("DeiT-S pretraining", "73.1", "70.95", "69.96", "69.18")]
PAPER_COLUMN = {"fp32": "FP", "int8": "INT8", "int4_lsq_sr": "≈ LSQ+LUQ", "int4_hq_lss": "HQ+LSS",
                "int4_rtn": "naive INT4 (Table 4: per-tensor)", "int4_hq": "ablation: HQ, fp grads"}
WHAT = {"fp32": "full precision", "int8": "INT8 per-row forward, INT8 stochastic-rounded dY",
        "int4_rtn": "INT4 per-tensor round-to-nearest, forward and dY",
        "int4_lsq_sr": "INT4 LSQ forward, INT4 stochastic-rounded dY",
        "int4_hq": "Hadamard quantizer forward, full-precision backward",
        "int4_hq_lss": "Hadamard quantizer forward, bit splitting + leverage score sampling backward",
        "int4_lsq_sr_exact": "`int4_lsq_sr`, LSQ's step-size gradient from the fp32 values (not 2 bits)",
        "int4_hq_lss_exact": "`int4_hq_lss`, LSQ's step-size gradient from the fp32 values (not 2 bits)"}


def run_one(runs_dir, fresh, task, recipe, seed, tag="", **overrides):
    """One training run, or its saved JSON from an earlier invocation."""
    path = runs_dir / f"{task}-{recipe}{tag}-seed{seed}.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    cpu = time.process_time()
    r = train(config_for(task, recipe=recipe, seed=seed, progress=False, **overrides))
    # CPU seconds of this process: on a shared machine, steadier than wall time
    out = {**r.to_dict(), "cpu_time": time.process_time() - cpu, "threads": torch.get_num_threads()}
    runs_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    print(f"{task:6} {recipe + tag:16} seed {seed}: val loss {r.val_loss[-1]:.4f}, "
          f"acc {100 * r.val_acc[-1]:.2f}%, {out['cpu_time']:.0f} s CPU", flush=True)
    return out


# Rows that run named recipes with LSQ's exact step-size gradient (Recipe.lsq_grad="exact": the
# layer keeps the fp32 rotated values, 2.25x a bf16 Linear's saved bytes, instead of the default
# 2-bit record's 0.38x; issue 14), on every task and seed, so the record's cost is measured where
# the recipes are.
EXACT = {"int4_lsq_sr_exact": "int4_lsq_sr", "int4_hq_lss_exact": "int4_hq_lss"}


def register_exact():
    from dataclasses import replace

    from int4lab import layers
    for name, base in EXACT.items():
        layers.RECIPES.setdefault(name, replace(layers.RECIPES[base], name=name, lsq_grad="exact"))
    return list(EXACT)


# One seed each, on text: which part of a recipe costs what. Recipes built here from the parts
# int4lab.layers.Recipe offers, registered under a name so train() can apply them.
ABLATIONS = [  # (name, Recipe fields or None for a named recipe, TrainConfig overrides, what it shows)
    ("int4_hq", None, {}, "HQ forward only (exact backward)"),
    ("abl_rtn_forward", dict(forward="int4_rtn", grad="fp"), {}, "naive INT4 forward only (exact backward)"),
    ("abl_rtn_grad", dict(forward="int4_hq", grad="int4_rtn"), {},
     "HQ forward, naive INT4 (round-to-nearest) dY"),
    ("int4_hq_lss", None, {"quantizer_lr_scale": 1.0}, "int4_hq_lss with LSQ step sizes at the full lr"),
]


def run_ablations(runs_dir, fresh):
    from int4lab import layers
    out = []
    for name, fields, overrides, what in ABLATIONS:
        if fields is not None:
            layers.RECIPES.setdefault(name, layers.Recipe(name, **fields))
        tag = "".join(f"-{k}{v}" for k, v in overrides.items())
        out.append((name + (" (quantizer_lr_scale 1.0)" if overrides else ""), what,
                    run_one(runs_dir, fresh, "text", name, 0, tag, **overrides)))
    return out


def stats(runs, task, recipe, seeds, key, scale=1.0):
    v = np.array([np.ravel(runs[task, recipe, s][key])[-1] * scale for s in seeds])
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else 0.0)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = torch.get_num_threads()
    return (f"{cpu}, {os.cpu_count()} cores, {n} thread{'s' if n > 1 else ''} used; "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()}")


def render(runs, tasks, recipes, seeds, ablations, total_time):
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip() or time.ctime()
    n = len(seeds)
    L = ["# Results: every recipe on the course's two tasks", "",
         f"Generated by `python scripts/make_results.py` on {date}, on {machine()}. "
         f"{n} seeds ({', '.join(map(str, seeds))}) per cell, mean ± standard deviation (ddof=1) "
         f"of the final value. The quantized recipes ran on the PyTorch spec (CPU). "
         f"CPU time is per run, one thread; total {total_time / 60:.1f} CPU minutes.", ""]
    verdicts = []
    for task in tasks:
        d = TASK_DEFAULTS[task]
        any_run = runs[task, recipes[0], seeds[0]]
        if task == "text":
            L += ["## text: character-level GPT on the Python standard library's source", "",
                  f"GPT, {d['n_layer']} layers, width {d['n_embd']}, context {d['block_size']}, "
                  f"{any_run['n_params']:,} parameters; {d['steps']} steps of {d['batch_size']} windows, "
                  f"AdamW, lr {d['lr']:g} → {d['min_lr']:g} (warm-up + cosine). Validation: "
                  f"the same held-out windows for every run; accuracy = next-character top-1.", ""]
        else:
            L += ["## digits: ViT on scikit-learn's 8x8 digits", "",
                  f"ViT, 2x2 patches, {d['n_layer']} layers, width {d['n_embd']}, "
                  f"{any_run['n_params']:,} parameters; {d['steps']} steps of {d['batch_size']} images, "
                  f"AdamW, lr {d['lr']:g} → {d['min_lr']:g}. Validation: 359 held-out images.", ""]
        L += ["| recipe | what it quantizes | val loss | vs fp32 | val accuracy (%) | vs fp32 (points) "
              "| CPU time (s) | paper column |",
              "|---|---|---|---|---|---|---|---|"]
        base_loss, _ = stats(runs, task, "fp32", seeds, "val_loss") if "fp32" in recipes else (None, None)
        base_acc, _ = stats(runs, task, "fp32", seeds, "val_acc", 100) if "fp32" in recipes else (None, None)
        for recipe in recipes:
            lm, ls = stats(runs, task, recipe, seeds, "val_loss")
            am, as_ = stats(runs, task, recipe, seeds, "val_acc", 100)
            tm, _ = stats(runs, task, recipe, seeds, "cpu_time")
            rel = f"{100 * (lm / base_loss - 1):+.1f}%" if base_loss else "-"
            dacc = f"{am - base_acc:+.2f}" if base_acc is not None else "-"
            L.append(f"| `{recipe}` | {WHAT.get(recipe, '')} | {lm:.4f} ± {ls:.4f} | {rel} | "
                     f"{am:.2f} ± {as_:.2f} | {dacc} | {tm:.0f} | {PAPER_COLUMN.get(recipe, '')} |")
        L.append("")
        if {"fp32", "int4_hq_lss", "int4_rtn"} <= set(recipes):
            hq, _ = stats(runs, task, "int4_hq_lss", seeds, "val_loss")
            rtn, _ = stats(runs, task, "int4_rtn", seeds, "val_loss")
            hq_acc, _ = stats(runs, task, "int4_hq_lss", seeds, "val_acc", 100)
            if task == "text":
                gap = 100 * (hq / base_loss - 1)
                verdicts.append(f"- text: `int4_hq_lss` final val loss is {gap:+.2f}% relative to fp32 "
                                f"(goal: within 2%): **{'met' if abs(gap) <= 2 else 'not met'}**.")
            else:
                gap = hq_acc - base_acc
                verdicts.append(f"- digits: `int4_hq_lss` accuracy is {gap:+.2f} points from fp32 "
                                f"(goal: within 1.5): **{'met' if abs(gap) <= 1.5 else 'not met'}**.")
            verdicts.append(f"- {task}: `int4_rtn` val loss {rtn:.4f} vs `int4_hq_lss` {hq:.4f} and fp32 "
                            f"{base_loss:.4f}: naive INT4 is "
                            f"**{'clearly worse' if rtn > 1.05 * max(hq, base_loss) else 'not clearly worse'}**.")
    L += ["## Goals", ""] + verdicts + [""]
    if ablations:
        base = stats(runs, "text", "fp32", seeds[:1], "val_loss")[0] if "fp32" in recipes else None
        L += ["## Ablations (text, seed 0): which part costs what", "",
              "| run | what it changes | val loss | vs fp32 (seed 0) |", "|---|---|---|---|"]
        for name, what, r in ablations:
            rel = f"{100 * (r['val_loss'][-1] / base - 1):+.1f}%" if base else "-"
            L.append(f"| `{name}` | {what} | {r['val_loss'][-1]:.4f} | {rel} |")
        L.append("")
    L += ["## The paper's Table 1, for the ordering", "",
          "| benchmark | FP | INT8 | LSQ+LUQ | HQ+LSS |", "|---|---|---|---|---|"]
    L += [f"| {name} | {fp} | {i8} | {luq} | {hq} |" for name, fp, i8, luq, hq in PAPER]
    L += ["", "Its ordering is FP ≥ INT8 ≥ HQ+LSS > LSQ+LUQ (its 4-bit baseline) on most rows (not all: "
          "INT8 edges FP on SQuAD, LSQ+LUQ edges HQ+LSS on DeiT-S), HQ+LSS 0.4 to 3.9 points under FP. "
          "Our `int4_lsq_sr` is the closest recipe to the LSQ+LUQ column (LSQ forward, unbiased "
          "4-bit gradients), not the same method: LUQ rounds gradients to a logarithmic grid.", ""]
    L += [DISCUSSION, ""]
    return "\n".join(L)


# Written for the numbers above (the run of the date in the header): re-read it after regenerating.
DISCUSSION = """## Where the small scale agrees with the paper, and where it differs

- **The ordering holds on text, and roughly on digits.** On text: fp32 ≈ INT8 ≥ HQ+LSS > LSQ +
  stochastic rounding > naive INT4, the order of the paper's Table 1 (with `int4_lsq_sr` in the
  LSQ+LUQ place), HQ+LSS ahead of LSQ by several seed standard deviations. On digits HQ+LSS and
  LSQ + stochastic rounding are within one standard deviation of each other (HQ+LSS ahead in
  accuracy, 95.73 vs 95.54; level in val loss), both far ahead of naive INT4. INT8 is within the
  seeds' spread of fp32 on both, as in the paper.
- **HQ+LSS is close to fp32, and just outside both goals.** On text it is +2.8% in loss (−1.6
  points of next-character accuracy; +2.3% with the exact LSQ gradient), several seed standard
  deviations: a real gap, not noise. On digits it is 1.9 points under fp32 (goal: 1.5) with a
  seed spread of ±1.8 (one seed at 94.4%); with the exact LSQ gradient 0.9 points. The paper has
  HQ+LSS 0.4 to 3.9 points under FP, and its from-scratch DeiT-S pretraining (in Table 1) shows
  its largest gap, 3.9 points. Ours are from-scratch runs, and short ones.
- **What the 2-bit LSQ record costs.** LSQ's step-size gradient reads each rounded value's
  remainder. Kept as fp32 rotated values (`*_exact` rows, `Recipe(lsq_grad="exact")`), a layer
  keeps 2.25x the bytes of a bf16 nn.Linear for backward; the default keeps 2 bits per value
  instead (the remainder stochastically rounded to one of four levels, unbiased, or "clipped"):
  0.38x. Same seeds, paired (a seed's runs see the same batches): on text `int4_hq_lss` loses
  0.45% of val loss to the record (+2.8% vs +2.3% over fp32; each seed 0.006 to 0.014 higher, a
  small real cost) at the same accuracy (45.46 vs 45.48), and `int4_lsq_sr` none (+6.9% vs
  +7.2%); on digits `int4_lsq_sr` is better with the record (95.54 vs 94.52) and `int4_hq_lss`
  worse (95.73 vs 96.66). Three more digits seeds (3, 4, 5; not in the table) put the two
  `int4_hq_lss` variants level (95.54 vs 95.73; val loss 0.183 vs 0.200): over six seeds the
  record costs 0.55 points of digits accuracy, standard error of the paired difference 0.39
  (val loss +0.011 ± 0.016), not a clear cost. The record is the default for its memory.
  An earlier 2-bit record rounded the remainder to the nearest of three fixed levels: biased
  (most values sit near 0, where the level 0 swallowed them), it cost 0.6 points and +50% val
  loss on digits, and was not made the default.
- **On text the gap comes from the gradients, not the forward.** The ablations split it: HQ
  forward with an exact backward (`int4_hq`) is as good as fp32 (−0.7%, slightly better; the
  quantization noise may act as a regularizer); the cost appears once dY is quantized. LSS keeps
  about N of the 2N rank-1 terms and reweights them: unbiased, but noisy, and 400 steps leave
  little time for that noise to average out. On digits the differences between the HQ variants
  are within the seeds' spread.
- **Naive INT4 fails, and mostly in its backward.** `int4_rtn` is +44% in loss on text and 12
  points of accuracy down on digits. Split on text: a naive per-tensor INT4 forward alone costs
  +2.9% (the HQ forward: −0.6% on the same seed, so the rotation helps even here); naive
  round-to-nearest dY behind the HQ forward costs +29.4%. One per-tensor scale for dY is set by
  its largest entry, the many small gradient rows round to zero, and round-to-nearest makes that
  error a bias rather than noise: the paper's case for bit splitting with stochastic rounding
  (sec. 5).
- **Outliers are mild at this scale.** In the paper (Table 4) a per-tensor INT4 forward scores 0
  on CoLA, because large pretrained models have outlier channels. Here a naive INT4 forward costs
  3%: a 64-wide model trained for minutes grows few outliers. HQ's benefit shows here as a
  modest one; the outlier lessons show it on activations built to have them.
- **One setting the quantized recipes needed: the LSQ step sizes' learning rate.** Adam moves
  every parameter by about lr per step whatever the size of its gradient, so LSQ's gradient
  scaling has no effect, and at lr 3e-3 a weight step size of ~0.01 is pushed by up to 30% a
  step. The paper fine-tunes at lr ~1e-5, where this cannot happen. With the step sizes at the
  full lr, `int4_hq_lss` is +11.6% on text (ablation row); `TrainConfig.quantizer_lr_scale` is
  0.1, chosen by a sweep on text, seed 0, with `int4_hq` and the exact LSQ gradient, before the
  2-bit record (1.0: +10%, 0.1: −0.6%, 0.01: +0.8%, frozen after the warm-up: +0.9%). It
  touches only LSQ step sizes; fp32, INT8 and `int4_rtn` have none.
- **Time.** The quantized recipes run the PyTorch *spec*: quantize, pack, unpack and an integer
  matmul in plain PyTorch, 1.1–2.8x the CPU time of fp32 here (the CPU time column). It measures
  the simulation's overhead on a CPU, not INT4 speed, which needs integer tensor cores (see the
  kernel benchmarks). Per step, paired with fp32 in one process: `python scripts/bench_cpu_spec.py`.

## How the settings were chosen, in the open

- Model size, steps and batch fit the CPU budget. Learning rates were tuned for fp32 (text: 3e-3
  beat 1e-3; digits: 2e-3) and then held fixed for every recipe: the baseline is not weakened.
- digits runs 800 steps, not 400: at 400 steps (three seeds) HQ+LSS was ~1.9 points under fp32.
  Longer training helps both (fp32 95.5% → 97.6%), but the choice was made with the quantized
  results in view.
- `quantizer_lr_scale` was picked on the same text validation windows reported here (one seed).
- The grid, the two `*_exact` rows and the ablations took about 19 CPU minutes of one thread
  (the header has the exact sum); before issue 14's faster spec the grid alone took 32.
  `--no-ablations` saves a few minutes; `--tasks text` and `--tasks digits` in two processes use
  both cores (finished runs are kept, a last plain invocation writes the page)."""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="text,digits")
    p.add_argument("--recipes", default="all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default=str(REPO / "runs" / "make_results"))
    p.add_argument("--out", default=str(REPO / "docs" / "RESULTS.md"))
    p.add_argument("--fresh", action="store_true", help="rerun every run, ignoring saved ones")
    p.add_argument("--no-ablations", dest="ablations", action="store_false",
                   help="skip the one-seed ablations on text")
    a = p.parse_args(argv)
    # one thread: CPU times that mean the same on a busy shared machine, and bit-identical
    # reruns (a different thread count can change the order of float sums)
    torch.set_num_threads(1)
    tasks = a.tasks.split(",")
    named = recipe_names()
    extra = register_exact()
    recipes = named + extra if a.recipes == "all" else a.recipes.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    t = time.perf_counter()
    runs = {(task, recipe, seed): run_one(Path(a.runs), a.fresh, task, recipe, seed)
            for task in tasks for recipe in recipes for seed in seeds}
    ablations = run_ablations(Path(a.runs), a.fresh) if a.ablations and "text" in tasks else []
    total = sum(r["cpu_time"] for r in runs.values()) + sum(r["cpu_time"] for *_, r in ablations)
    Path(a.out).write_text(render(runs, tasks, recipes, seeds, ablations, total))
    print(f"wrote {a.out} ({(time.perf_counter() - t) / 60:.1f} min this invocation)")


if __name__ == "__main__":
    main()

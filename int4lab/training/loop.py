"""Train the course's small transformers under a quantization recipe, after nanoGPT's train.py.

    from int4lab.training.loop import TrainConfig, train
    result = train(TrainConfig(task="digits", recipe="int4_hq_lss"))
    result.val_loss[-1], result.val_acc[-1]

or from a shell: `int4lab train` (= `python -m int4lab.training.loop`), see main() for the flags.

A run is deterministic on the CPU for a given seed, and resumable exactly: the checkpoint holds
the model, the optimizer, the step (which is the schedule position and the data position, since
batches are a function of (seed, step)) and every rank's RNG states. Under torchrun it trains
with DistributedDataParallel: the global batch is split across ranks.
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm.auto import tqdm

from int4lab import runtime
from int4lab.exercises.registry import calls, resolve, use
from int4lab.layers import RECIPES, get_recipe, quantize_model
from int4lab.runtime import replace_atomically
from int4lab.training import data as D
from int4lab.training.models import GPT, GPTConfig, ViT, ViTConfig

TASKS = ("text", "digits")
DEFAULT_RECIPES = "fp32,int4_hq_lss"


@dataclass
class TrainConfig:
    task: str = "text"            # "text" (stdlib characters, GPT) or "digits" (8x8 images, ViT)
    recipe: str = "fp32"          # a name in int4lab.layers.RECIPES
    steps: int = 400              # TrainConfig() is config_for("text")
    batch_size: int = 32          # the global batch; DDP ranks take equal slices of it
    block_size: int = 64          # text context length
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64              # a multiple of 32, the Hadamard block
    lr: float = 3e-3
    min_lr: float = 3e-4          # cosine decays to here
    warmup_steps: int = 30
    weight_decay: float = 0.1     # on matrices only; never on biases, norms or quantizer scales
    quantizer_lr_scale: float = 0.1  # LSQ step sizes learn at lr * this (see train())
    grad_clip: float = 1.0        # max gradient norm; 0 disables clipping
    eval_every: int = 50
    eval_batches: int = 8         # text: eval_batches * batch_size fixed validation windows
    seed: int = 0
    device: str = "auto"          # "auto" = cuda if available, else cpu
    out_dir: str = ""             # where checkpoints go; "" = no checkpoints
    ckpt_every: int = 0           # 0 = at every evaluation (when out_dir is set)
    resume: bool = False          # continue from out_dir's checkpoint of this run, if present
    progress: bool = True         # tqdm bar


@dataclass
class TrainResult:
    task: str
    recipe: str
    seed: int
    n_params: int
    config: dict
    steps: list = field(default_factory=list)       # evaluation points
    train_loss: list = field(default_factory=list)  # mean training loss since the previous point
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)     # text: next-character top-1 accuracy
    wall_time: list = field(default_factory=list)   # seconds since the start, evaluation included
    grad_norm: list = field(default_factory=list)   # mean gradient norm since then, before clipping
    # {slot: {impl: steps}}: which implementation ("learner", "triton", "spec") each INT4
    # operation ran, per training step of this process (see record_ran)
    ran: dict = field(default_factory=dict)
    model: nn.Module = field(default=None, repr=False, compare=False)

    def to_dict(self):  # JSON-ready: everything but the model
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


HISTORY = ("steps", "train_loss", "val_loss", "val_acc", "wall_time", "grad_norm")

# ---------------------------------------------------------------- pieces

# per-task settings that `int4lab train` and scripts/make_results.py use (tuned for fp32 on a
# 2-core CPU, then held fixed for every recipe: the baseline is never weakened)
TASK_DEFAULTS = {
    "text": dict(steps=400, batch_size=32, block_size=64, n_layer=2, n_embd=64, lr=3e-3, min_lr=3e-4),
    "digits": dict(steps=800, batch_size=64, n_layer=2, n_embd=64, lr=2e-3, min_lr=1e-4),
}


# The size `int4lab train` picks when the INT4 operations run as Triton code in the interpreter
# (a learner's kernels or the library's, on a CPU): the interpreter runs every kernel program in
# Python, so at the full size one text step takes ~100 s (a 400-step run: ~11 hours). This size
# shows your kernels training in about a minute, and held fixed for every recipe of the run (the
# fp32 baseline too). It is a demonstration, not a result: the text loss falls from 4.6 to ~2.2,
# the ViT barely starts on digits. Measured (see INTERPRETER_SECONDS_PER_STEP) on a 2-core CPU.
SMALL = {
    "text": dict(steps=30, batch_size=4, block_size=32, n_layer=1, n_embd=32, lr=1e-2, min_lr=1e-3,
                 warmup_steps=5, eval_every=10, eval_batches=2),
    "digits": dict(steps=30, batch_size=16, n_layer=1, n_embd=32, lr=5e-3, min_lr=5e-4, warmup_steps=5,
                   eval_every=15),
}
SIZES = ("auto", "full", "small")


def config_for(task, size="full", **overrides):
    """TrainConfig with the task's defaults (size "small": SMALL's), then overrides."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if size not in ("full", "small"):
        raise ValueError(f"size must be full or small, got {size!r}")
    return TrainConfig(task=task, **{**TASK_DEFAULTS[task], **(SMALL[task] if size == "small" else {}),
                                     **overrides})


def get_lr(step, cfg):
    """Linear warm-up, then cosine decay from lr to min_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    ratio = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(ratio, 1.0))) * (cfg.lr - cfg.min_lr)


def recipe_names():
    """The recipes int4lab.layers offers."""
    return list(RECIPES)


def apply_recipe(model, recipe):
    if recipe == "fp32":
        return model  # the baseline is the plain model: PyTorch's own nn.Linear, no wrapper
    if recipe not in recipe_names():
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(recipe_names())}")
    quantize_model(model, recipe)
    return model


def build(cfg, dataset):
    """The model for cfg.task, before quantization."""
    if cfg.task == "text":
        return GPT(GPTConfig(vocab_size=dataset.vocab_size, block_size=cfg.block_size,
                             n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd))
    return ViT(ViTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd))


def get_batch(cfg, dataset, step, rank=0, world=1):
    """This rank's slice of the global batch of `step`, a pure function of (seed, step)."""
    if cfg.task == "text":
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x, y = D.text_batch(dataset.train, cfg.block_size, cfg.batch_size, g)
    else:
        idx = D.epoch_indices(len(dataset.y_train), cfg.seed, step * cfg.batch_size, cfg.batch_size)
        x, y = dataset.x_train[idx], dataset.y_train[idx]
    per = cfg.batch_size // world
    return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]


@torch.no_grad()
def evaluate(model, cfg, dataset, device):
    """(val loss, val accuracy) on a fixed validation set, the same for every seed and recipe."""
    model.eval()
    if cfg.task == "text":
        g = torch.Generator().manual_seed(1234)
        batches = [D.text_batch(dataset.val, cfg.block_size, cfg.batch_size, g)
                   for _ in range(cfg.eval_batches)]
    else:
        batches = [(dataset.x_val, dataset.y_val)]
    loss_sum = correct = count = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits, loss = model(x, y)
        loss_sum += loss.item() * y.numel()
        correct += (logits.argmax(-1) == y).sum().item()
        count += y.numel()
    model.train()
    return loss_sum / count, correct / count


def check_finite(model, loss, grad_norm, step, x, y):
    """Stop at the first NaN/Inf with the step and the layer where it first appears."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    names = dict(model.named_modules())
    if not math.isfinite(loss):
        # replay the forward with hooks: hooks fire when a module finishes, so the first
        # non-finite output belongs to the innermost, earliest layer that produced it
        found = []

        def hook(name):
            def fn(mod, inp, out):
                outs = out if isinstance(out, (tuple, list)) else (out,)
                if not found and any(torch.is_tensor(t) and t.is_floating_point()
                                     and not torch.isfinite(t).all() for t in outs):
                    found.append(name)
            return fn
        handles = [m.register_forward_hook(hook(n)) for n, m in names.items() if n]
        try:
            with torch.no_grad():
                model(x, y)
        finally:
            for h in handles:
                h.remove()
        where = f"layer '{found[0]}' ({type(names[found[0]]).__name__})" if found else "the loss itself"
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        raise FloatingPointError(
            f"non-finite loss ({loss}) at step {step}: first non-finite output in {where}"
            + (f"; non-finite parameters: {', '.join(bad)}" if bad else ""))
    # finite loss, non-finite gradient: report the layer nearest the output (backward runs
    # in reverse) whose own parameters received NaN/Inf
    for name, mod in reversed(list(names.items())):
        for pname, p in mod.named_parameters(recurse=False):
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise FloatingPointError(
                    f"non-finite gradient (norm {grad_norm}) at step {step} in layer '{name}' "
                    f"({type(mod).__name__}), parameter '{pname}'")
    raise FloatingPointError(f"non-finite gradient norm ({grad_norm}) at step {step}")


def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def checkpoint_path(cfg):
    return Path(cfg.out_dir) / f"ckpt-{cfg.task}-{cfg.recipe}-seed{cfg.seed}.pt"


# the settings a resumed run may change without changing the result
RESUME_FREE = {"resume", "progress", "device", "out_dir", "ckpt_every"}


class ResumeMismatch(ValueError):
    """The checkpoint in out_dir belongs to a run with other settings (or another process count).
    changed: [(setting, the checkpoint's value, this run's value)]."""

    def __init__(self, message, changed=()):
        super().__init__(message)
        self.changed = list(changed)


def dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------- the loop

def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Train one model under one recipe. on_step(step, model), if given, is called after each
    optimizer step (and after that step's checkpoint): a hook for notebooks and tests."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; choose from {', '.join(TASKS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo")
    rank, world = dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split evenly over {world} processes")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested, but this torch sees no CUDA GPU; use cpu or auto")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)

    dataset = D.load_text() if cfg.task == "text" else D.load_digits()
    torch.manual_seed(cfg.seed)                    # same initial weights on every rank
    model = apply_recipe(build(cfg, dataset), cfg.recipe).to(device)
    # training noise (stochastic rounding, sampling) is independent across ranks
    torch.manual_seed(cfg.seed * 1000 + 1 + rank)
    np.random.seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)

    params = [p for p in model.parameters() if p.requires_grad]
    # LSQ step sizes (the parameters of modules with a warm-up, i.e. quantizers) get their own
    # group: Adam moves every parameter by ~lr per step whatever LSQ's gradient scaling, and a
    # step size of ~0.01 moved by 3e-3 a step wanders. The paper fine-tunes at lr ~1e-5, where
    # this never shows; from scratch, lr * 0.1 measured best (text, seed 0: loss +10% vs fp32
    # at 1.0, -0.6% at 0.1, +0.8% at 0.01, +0.9% frozen after warm-up).
    scales = {id(p) for m in model.modules() if hasattr(m, "warmup_steps") for p in m.parameters()}
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2 and id(p) not in scales], "weight_decay": 0.0},
              {"params": [p for p in params if id(p) in scales], "weight_decay": 0.0,
               "lr_scale": cfg.quantizer_lr_scale}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    result = TrainResult(cfg.task, cfg.recipe, cfg.seed, sum(p.numel() for p in params), asdict(cfg))

    step, elapsed, losses, norms = 0, 0.0, [], []  # losses, norms: since the last evaluation
    ckpt = checkpoint_path(cfg) if cfg.out_dir else None
    if cfg.resume and ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        changed = [(k, v, getattr(cfg, k)) for k, v in sorted(state["config"].items())
                   if k not in RESUME_FREE and v != getattr(cfg, k)]
        if changed:
            raise ResumeMismatch(
                f"cannot resume {ckpt}: it was trained with different {', '.join(k for k, _, _ in changed)} ("
                + ", ".join(f"{k}={old} there, {new} now" for k, old, new in changed) + ")", changed)
        if len(state["rng"]) != world:
            raise ResumeMismatch(f"cannot resume {ckpt} exactly: saved by {len(state['rng'])} processes, "
                                 f"resumed by {world}", [("nproc", len(state["rng"]), world)])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, losses, norms = state["step"], state["elapsed"], state["losses"], state["norms"]
        for k in HISTORY:
            setattr(result, k, state["history"][k])
        set_rng_state(state["rng"][rank])
    ckpt_every = cfg.ckpt_every or cfg.eval_every
    raw = model
    # LSQ quantizers set their scale from the batch they see during their warm-up, under DDP
    # each rank's own slice: averaging parameters until then gives every rank the full batch's
    # scale, as in one process (later updates come from all-reduced gradients, identical)
    warmups = [m.warmup_steps for m in raw.modules() if hasattr(m, "warmup_steps")]
    sync_until = max(warmups) + 1 if world > 1 and warmups else 0
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)

    t0 = time.perf_counter() - elapsed
    # the bar moves once per optimizer step (under the interpreter, a step of the INT4 recipes
    # takes seconds): it says when it is evaluating instead
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress or rank != 0,
               desc=f"{cfg.task}/{cfg.recipe}", leave=False)
    # which implementation each INT4 operation ran: only quantized models call them
    record = get_recipe(cfg.recipe).int4_forward if cfg.recipe in recipe_names() else False
    while True:
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if not (result.steps and result.steps[-1] == step):
                bar.set_postfix_str("evaluating", refresh=True)
                vl, va = evaluate(raw, cfg, dataset, device)
                result.steps.append(step)
                result.train_loss.append(float(np.mean(losses)) if losses else vl)
                result.val_loss.append(vl)
                result.val_acc.append(va)
                result.wall_time.append(time.perf_counter() - t0)
                result.grad_norm.append(float(np.mean(norms)) if norms else None)
                losses, norms = [], []
                bar.set_postfix(val_loss=f"{vl:.4f}", val_acc=f"{va:.3f}")
        if step == cfg.steps:
            break
        for g in optimizer.param_groups:
            g["lr"] = get_lr(step, cfg) * g.get("lr_scale", 1.0)
        x, y = (t.to(device) for t in get_batch(cfg, dataset, step, rank, world))
        called = calls() if record else None
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss_value = loss.detach()
        if world > 1:  # log the global batch's loss, and stop every rank together on NaN
            dist.all_reduce(loss_value)
            loss_value /= world
        # check before clipping: clipping by a NaN norm would spread the NaN to every gradient
        grad_norm = torch.stack([p.grad.norm() for p in params if p.grad is not None]).norm()
        check_finite(raw, loss_value.item(), grad_norm.item(), step, x, y)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        losses.append(loss_value.item())
        norms.append(grad_norm.item())
        optimizer.step()
        step += 1
        if record:
            record_ran(result.ran, called)
        if step <= sync_until:
            with torch.no_grad():
                for p in raw.parameters():
                    dist.all_reduce(p)
                    p /= world
        bar.update(1)
        if ckpt is not None and (step % ckpt_every == 0 or step == cfg.steps):
            save_checkpoint(ckpt, {"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                                   "step": step, "elapsed": time.perf_counter() - t0,
                                   "losses": losses, "norms": norms,
                                   "history": {k: list(getattr(result, k)) for k in HISTORY},
                                   "config": asdict(cfg)})
        if on_step is not None:
            on_step(step, raw)
    bar.close()
    if world > 1:  # every rank applied the same averaged updates: the replicas must be equal
        sums = [None] * world
        dist.all_gather_object(sums, [p.detach().double().sum().item() for p in raw.parameters()])
        if any(s != sums[0] for s in sums):
            raise RuntimeError("DDP replicas diverged: parameters differ between ranks after training")
    result.model = raw
    return result


def record_ran(ran, before):
    """Add one step to ran ({slot: {impl: steps}}): each (slot, implementation) that was called
    since the snapshot `before` (registry.calls() at the step's start)."""
    for (slot, impl), n in calls().items():
        if n > before.get((slot, impl), 0):
            counts = ran.setdefault(slot, {})
            counts[impl] = counts.get(impl, 0) + 1


def save_checkpoint(path, state):
    """Add every rank's RNG states to state and write it from rank 0."""
    rank, world = dist_info()
    state["rng"] = [rng_state()]
    if world > 1:
        state["rng"] = [None] * world
        dist.all_gather_object(state["rng"], rng_state())
    if rank == 0:
        # a kill mid-save keeps the old checkpoint
        replace_atomically(path, lambda tmp: torch.save(state, tmp))


# ---------------------------------------------------------------- reporting

def format_table(results):
    """A text table: final validation loss, accuracy, wall time, and loss relative to fp32."""
    base = {r.task: r.val_loss[-1] for r in results if r.recipe == "fp32"}
    lines = [f"{'task':7} {'recipe':12} {'val loss':>9} {'vs fp32':>8} {'val acc':>8} {'time (s)':>9}",
             "-" * 58]
    for r in results:
        rel = f"{100 * (r.val_loss[-1] / base[r.task] - 1):+.1f}%" if r.task in base else "-"
        lines.append(f"{r.task:7} {r.recipe:12} {r.val_loss[-1]:9.4f} {rel:>8} "
                     f"{100 * r.val_acc[-1]:7.2f}% {r.wall_time[-1]:9.1f}")
    return "\n".join(lines)


def plot_history(results, path=None):
    """Validation (solid) and training (dashed) loss curves per recipe; saved to path if given."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no backend switch

    fig = Figure(figsize=(10, 4), layout="tight")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, r in enumerate(results):
        c = f"C{i}"
        ax_loss.plot(r.steps, r.val_loss, color=c, label=f"{r.task}/{r.recipe} val")
        ax_loss.plot(r.steps[1:], r.train_loss[1:], color=c, ls="--", alpha=0.6)
        ax_acc.plot(r.steps, [100 * a for a in r.val_acc], color=c, label=f"{r.task}/{r.recipe}")
    ax_loss.set(xlabel="step", ylabel="loss (dashed: train)", title="loss")
    ax_acc.set(xlabel="step", ylabel="val accuracy (%)", title="accuracy")
    ax_loss.legend()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ---------------------------------------------------------------- CLI

# The INT4 operations an INT4 model calls (int4lab.ops, each a slot of the exercise registry)
INT4_SLOTS = ("quantize_int4", "hadamard_quantize", "pack_int4", "unpack_int4", "int4_matmul", "bit_split",
              "lss_gather")

# Seconds per step of int4_hq_lss, measured with `int4lab train` on a 2-vCPU AMD EPYC VM (KVM,
# shared with other jobs), 1 torch thread, 2026-11-29: "spec" with --impl spec at the task's
# size; "full" and "small" with Triton's interpreter (--impl triton, the library's kernels; a
# learner's solution is the same code and runs as fast; `--impl learner` with all seven unlocked:
# 1.2 s a step, 40 s for the whole default run) at the task's size and at SMALL's.
INTERPRETER_SECONDS_PER_STEP = {"text": {"spec": 0.28, "full": 100.0, "small": 1.2},
                                "digits": {"spec": 0.11, "full": 47.0, "small": 1.9}}

# How many torch threads CPU training uses unless told (--threads N, or OMP_NUM_THREADS): one.
# A tester saw training 11-16x slower with 2 intra-op threads than with 1 on a loaded 2-core CPU.
# Measured on the VM above, 2026-11-29: `int4lab train --steps 40 --recipes fp32 --threads N`,
# seconds of training (the table's time column), two runs each:
#                                                      1 thread      2 threads
#   idle                                               1.2, 1.2      0.8, 0.8
#   one CPU hog (`python -c "while True: pass" &`)     1.2, 1.3      2.5, 3.1
#   two CPU hogs (both cores busy)                     2.1, 1.8     41.9, 45.3
# One thread gives up a third on an idle machine and avoids a 2-20x loss on a busy one.
CPU_THREADS = 1

FORWARD_ABOUT = {"fp": "full-precision forward", "int8_row": "INT8 per-row forward",
                 "int4_rtn": "INT4 per-tensor round-to-nearest forward",
                 "int4_lsq": "INT4 forward with LSQ's learned scale",
                 "int4_hq": "Hadamard quantizer (HQ) INT4 forward"}
GRAD_ABOUT = {"fp": "full-precision dY", "int8_sr": "INT8 stochastic dY", "int4_rtn": "INT4 round-to-nearest dY",
              "int4_sr": "INT4 stochastic dY", "bs_lss": "bit splitting + leverage score sampling for dY"}


def recipe_about(name):
    """One line about a recipe: its own description if it has one, else what its fields say."""
    r = RECIPES[name]
    about = getattr(r, "description", None) or getattr(r, "about", None)
    if about:
        return str(about).strip().splitlines()[0]
    if r.forward == "fp" and r.grad == "fp":
        return "no quantization: the baseline"
    return f"{FORWARD_ABOUT.get(r.forward, r.forward)}; {GRAD_ABOUT.get(r.grad, r.grad)}"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every default shown (written out in the help where it is not a plain value), and the
    epilog's recipe list kept one per line."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    steps = ", ".join(f"{t} {TASK_DEFAULTS[t]['steps']}" for t in TASKS)
    small = ", ".join(f"{t} {SMALL[t]['steps']}" for t in TASKS)
    width = max(map(len, recipe_names()))
    recipes = "\n".join(f"  {name:{width}}  {recipe_about(name)}" for name in recipe_names())
    p = argparse.ArgumentParser(
        prog="int4lab train", formatter_class=_HelpFormatter,
        description="Train the small GPT (text) or ViT (digits) under several recipes and compare them.",
        epilog=f"recipes (--recipes):\n{recipes}\n\n"
               "With Triton's interpreter running the INT4 operations (--impl learner or triton on a CPU), "
               "--size auto\npicks the small size: about a minute per INT4 recipe instead of hours.")
    p.add_argument("--task", choices=TASKS, default="text", help="text (tiny GPT) or digits (tiny ViT)")
    p.add_argument("--recipes", default=DEFAULT_RECIPES, help="comma-separated recipe names (below), or 'all'")
    p.add_argument("--steps", type=int,
                   help=f"training steps (default: the task's: {steps}; at the small size: {small})")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when there is one)")
    p.add_argument("--impl", choices=["spec", "triton", "learner"],
                   help="which implementation the INT4 ops run (default: leave as is: INT4LAB_IMPL, else auto)")
    p.add_argument("--size", choices=SIZES, default="auto",
                   help="full: the task's model, batch and steps; small: a model, batch and evaluation small "
                        "enough for Triton's interpreter; auto: small when the INT4 ops run in the interpreter")
    p.add_argument("--threads", type=int,
                   help=f"torch threads (default: on a CPU {CPU_THREADS} unless OMP_NUM_THREADS is set; "
                        "else torch's)")
    p.add_argument("--out", default="runs/latest", help="results, plot and checkpoints")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes for DDP via torchrun (gloo on CPU, nccl on GPU)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def interpreted(recipes, device):
    """{slot: impl} of the INT4 operations that would run as Triton code in Triton's interpreter
    (a learner's kernel or the library's) during this run; {} when none would (a GPU, the spec,
    or recipes without INT4 operations)."""
    if device != "cpu" or not runtime.INTERPRET or not any(get_recipe(r).int4_forward for r in recipes):
        return {}
    slots = {slot: resolve(slot)[0] for slot in INT4_SLOTS}
    return {slot: impl for slot, impl in slots.items() if impl != "spec"}


def _minutes(seconds):
    return f"{seconds / 3600:.0f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


def size_notice(task, size, steps, n_int4, explicit_steps, learner=True):
    """(line for stdout, warning for stderr or None): why this size, and how long it will take."""
    seconds = INTERPRETER_SECONDS_PER_STEP[task]
    per_step = seconds[size]
    total = _minutes(per_step * steps * n_int4)
    slower = round(seconds["full"] / seconds["spec"], -1)
    why = (f"int4lab train: Triton's interpreter runs the kernels on the CPU, ~{slower:.0f}x slower than the "
           "spec at the task's size: ")
    whose = "your" if learner else "the library's"
    if size == "small":
        c = SMALL[task]
        shape = (f"batch {c['batch_size']} x {c['block_size']} characters" if task == "text"
                 else f"batch {c['batch_size']} images")
        line = why + (f"a smaller run ({steps} steps, {shape}, {c['n_layer']} layer of width {c['n_embd']}, "
                      f"about {total} in all) that shows {whose} kernels training; --size full for the task's "
                      "size, --impl spec for PyTorch's.")
    else:
        line = why + f"the full size, as asked (--size full): about {total} in all."
    warning = None
    if explicit_steps or size == "full":
        warning = (f"int4lab train: warning: {steps} steps at the {size} size in the interpreter: expect about "
                   f"{total} ({n_int4} INT4 recipe{'s' if n_int4 > 1 else ''}, ~{per_step:g} s a step measured "
                   "on a 2-core CPU)")
    return line, warning


IMPL_ABOUT = {"learner": "your kernel", "triton": "the library's Triton kernel", "spec": "the PyTorch spec"}


def format_ran(results):
    """Which implementation ran each INT4 operation, over every recipe of the run."""
    total = {}
    for r in results:
        for slot, counts in r.ran.items():
            for impl, n in counts.items():
                total.setdefault(slot, {}).setdefault(impl, 0)
                total[slot][impl] += n
    if not total:
        return ""
    width = max(map(len, total))
    lines = ["what ran the INT4 operations during training (steps that called each one):"]
    for slot in sorted(total):
        parts = [f"{impl} ({IMPL_ABOUT.get(impl, impl)}) {n} step{'s' if n > 1 else ''}"
                 for impl, n in sorted(total[slot].items(), key=lambda kv: -kv[1])]
        lines.append(f"  {slot:{width}}  " + ", ".join(parts))
    return "\n".join(lines)


RESUME_FLAGS = {"task": "--task", "steps": "--steps", "seed": "--seed", "nproc": "--nproc"}


def resume_fix(e, args):
    """What to do about a ResumeMismatch, in a few words: the flags that resume the saved run,
    or a fresh start."""
    same = [f"{RESUME_FLAGS[k]} {old}" for k, old, _ in e.changed if k in RESUME_FLAGS]
    if any(k not in RESUME_FLAGS for k, _, _ in e.changed):
        same.append("the same --size")
    keep = f"resume with the settings it was saved with ({' '.join(same)})" if same else \
        "resume with the settings it was saved with"
    return f"{keep}, or start afresh: drop --resume, or pick another --out than {args.out}"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        # re-launch this same command under torchrun, which starts args.nproc copies; after
        # "--" torchrun parses none of our flags (its parser would take --nproc for its own)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", "-m", "int4lab.training.loop", "--", *argv]
        return subprocess.call(cmd)
    first = int(os.environ.get("RANK", "0")) == 0
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(CPU_THREADS)
    if args.impl:
        os.environ["INT4LAB_IMPL"] = args.impl  # read by int4lab.exercises.registry when it is imported
        use(args.impl)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    recipes = recipe_names() if recipes == ["all"] else recipes
    unknown = [r for r in recipes if r not in recipe_names()]
    if unknown:
        raise SystemExit(f"int4lab train: unknown recipe(s) {', '.join(unknown)}; available: "
                         f"{', '.join(recipe_names())} (quantized recipes need int4lab.layers)")
    slow = interpreted(recipes, device)
    size = args.size if args.size != "auto" else ("small" if slow else "full")
    steps = args.steps or config_for(args.task, size).steps
    if slow and first:
        line, warning = size_notice(args.task, size, steps, sum(get_recipe(r).int4_forward for r in recipes),
                                    explicit_steps=bool(args.steps), learner="learner" in slow.values())
        print(line, flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    results = []
    try:
        for recipe in recipes:
            cfg = config_for(args.task, size, recipe=recipe, seed=args.seed, device=args.device, out_dir=args.out,
                             resume=args.resume, progress=not args.no_progress, steps=steps)
            results.append(train(cfg))
    except ResumeMismatch as e:
        if first:
            print(f"int4lab train: {e}; {resume_fix(e, args)}", file=sys.stderr)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 2
    rank, _ = dist_info()
    if rank == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(format_table(results))
        ran = format_ran(results)
        if ran:
            print(ran)
        (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1))
        plot_history(results, out / "loss_curves.png")
        print(f"wrote {out / 'results.json'} and {out / 'loss_curves.png'}")
    if dist.is_initialized():
        # tear down together: a rank that leaves while rank 0 still writes the results can die
        # in gloo's threads at exit ("terminate called without an active exception", seen once
        # in CI under load)
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

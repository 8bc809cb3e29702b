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

from int4lab.exercises.registry import use
from int4lab.layers import RECIPES, quantize_model
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


def config_for(task, **overrides):
    """TrainConfig with the task's defaults, then overrides."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return TrainConfig(task=task, **{**TASK_DEFAULTS[task], **overrides})


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
        changed = sorted(k for k, v in state["config"].items()
                         if k not in RESUME_FREE and v != getattr(cfg, k))
        if changed:
            raise ValueError(f"cannot resume {ckpt}: it was trained with different {', '.join(changed)}")
        if len(state["rng"]) != world:
            raise ValueError(f"cannot resume {ckpt} exactly: saved by {len(state['rng'])} processes, "
                             f"resumed by {world}")
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
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress or rank != 0,
               desc=f"{cfg.task}/{cfg.recipe}", leave=False)
    while True:
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if not (result.steps and result.steps[-1] == step):
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

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="int4lab train", description=
        "Train the small GPT (text) or ViT (digits) under several recipes and compare them.")
    p.add_argument("--task", choices=TASKS, default="text")
    p.add_argument("--recipes", default=DEFAULT_RECIPES,
                   help=f"comma-separated recipe names, or 'all' (default {DEFAULT_RECIPES})")
    p.add_argument("--steps", type=int, help="training steps (default: the task's, see TASK_DEFAULTS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--impl", choices=["spec", "triton", "learner"],
                   help="which implementation the INT4 ops run (default: leave as is)")
    p.add_argument("--out", default="runs/latest", help="results, plot and checkpoints (default runs/latest)")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes for DDP via torchrun (gloo on CPU, nccl on GPU)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        # re-launch this same command under torchrun, which starts args.nproc copies; after
        # "--" torchrun parses none of our flags (its parser would take --nproc for its own)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", "-m", "int4lab.training.loop", "--", *argv]
        return subprocess.call(cmd)
    if args.impl:
        os.environ["INT4LAB_IMPL"] = args.impl  # read by int4lab.exercises.registry when it is imported
        use(args.impl)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    recipes = recipe_names() if recipes == ["all"] else recipes
    unknown = [r for r in recipes if r not in recipe_names()]
    if unknown:
        raise SystemExit(f"int4lab train: unknown recipe(s) {', '.join(unknown)}; available: "
                         f"{', '.join(recipe_names())} (quantized recipes need int4lab.layers)")
    results = []
    for recipe in recipes:
        steps = {"steps": args.steps} if args.steps else {}
        cfg = config_for(args.task, recipe=recipe, seed=args.seed, device=args.device, out_dir=args.out,
                         resume=args.resume, progress=not args.no_progress, **steps)
        results.append(train(cfg))
    rank, _ = dist_info()
    if rank == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(format_table(results))
        (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1))
        plot_history(results, out / "loss_curves.png")
        print(f"wrote {out / 'results.json'} and {out / 'loss_curves.png'}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training loop: it learns, it reports, it resumes exactly, and it stops loudly on NaN."""
import json
import math

import pytest
import torch

from int4lab.training.loop import (
    SMALL,
    TASK_DEFAULTS,
    ResumeMismatch,
    TrainConfig,
    config_for,
    get_lr,
    main,
    recipe_names,
    train,
)

# small enough that each run takes about a second on one CPU core
TINY = {"digits": dict(task="digits", batch_size=64, n_layer=1, n_embd=32, lr=5e-3, eval_every=10),
        "text": dict(task="text", batch_size=8, block_size=32, n_layer=1, n_embd=32, eval_every=10,
                     eval_batches=2)}


def tiny(task="digits", **kw):
    return TrainConfig(**{**TINY[task], "progress": False, **kw})


def quantized_recipes():
    return [r for r in ("int4_hq_lss",) if r in recipe_names()]


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert get_lr(0, cfg) == pytest.approx(0.1) and get_lr(9, cfg) == pytest.approx(1.0)
    assert get_lr(10, cfg) == pytest.approx(1.0) and get_lr(100, cfg) == pytest.approx(0.1)
    assert all(get_lr(s, cfg) >= get_lr(s + 1, cfg) for s in range(10, 100))


def test_loss_decreases_and_history_is_returned():
    r = train(tiny(steps=100, warmup_steps=5, eval_every=20))
    assert r.steps == [0, 20, 40, 60, 80, 100]
    assert len(r.train_loss) == len(r.val_loss) == len(r.val_acc) == len(r.wall_time) == 6
    # measured: 2.38 -> 0.96, accuracy 10% -> 70%
    assert r.val_loss[-1] < 0.6 * r.val_loss[0] and r.val_acc[-1] > 0.5
    assert r.wall_time == sorted(r.wall_time) and r.n_params > 0
    json.dumps(r.to_dict())  # the history is plain data


def test_same_seed_same_run_and_other_seed_differs():
    a, b, c = (train(tiny(steps=20, seed=s)) for s in (0, 0, 1))
    assert a.val_loss == b.val_loss and a.val_loss != c.val_loss


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("task,recipe", [("digits", "fp32"), ("text", "fp32")]
                         + [("digits", r) for r in quantized_recipes()])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, task, recipe):
    cfg = tiny(task, recipe=recipe, steps=30, warmup_steps=5, ckpt_every=10)
    full = train(cfg)

    def stop_at_20(step, model):
        if step == 20:
            raise Interrupt  # after the step-20 checkpoint, like a kill between steps
    cfg.out_dir = str(tmp_path)
    with pytest.raises(Interrupt):
        train(cfg, on_step=stop_at_20)
    cfg.resume = True
    resumed = train(cfg)
    for (n, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), f"{n} differs after resume"
    assert resumed.val_loss == full.val_loss and resumed.train_loss == full.train_loss
    assert resumed.steps == full.steps


def test_resume_refuses_a_different_run(tmp_path):
    cfg = tiny(steps=10, out_dir=str(tmp_path))
    train(cfg)
    with pytest.raises(ValueError, match="different lr") as e:
        train(tiny(steps=10, out_dir=str(tmp_path), resume=True, lr=1e-2))
    assert isinstance(e.value, ResumeMismatch) and e.value.changed == [("lr", 5e-3, 1e-2)]


def test_small_size_is_the_task_defaults_made_small():
    for task in TASK_DEFAULTS:
        full, small = config_for(task), config_for(task, "small")
        assert (small.steps, small.batch_size, small.n_layer, small.n_embd) == tuple(
            SMALL[task][k] for k in ("steps", "batch_size", "n_layer", "n_embd"))
        assert small.steps < full.steps and small.n_embd % 32 == 0   # the Hadamard block
    assert config_for("text", "small", steps=7).steps == 7
    with pytest.raises(ValueError, match="size"):
        config_for("text", "tiny")


def test_result_records_which_implementation_each_int4_op_ran():
    from int4lab.exercises.registry import use
    with use("spec"):
        r = train(tiny(recipe="int4_hq_lss", steps=3, eval_every=3))
    assert r.ran and all(counts == {"spec": 3} for counts in r.ran.values()), r.ran
    assert {"int4_matmul", "hadamard_quantize"} <= set(r.ran)
    assert train(tiny(steps=2)).ran == {}          # fp32: no INT4 operation
    json.dumps(r.to_dict())


def test_nan_in_forward_names_step_and_layer():
    def poison(step, model):
        if step == 3:
            with torch.no_grad():
                model.blocks[0].mlp.c_fc.weight[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"loss .* at step 3: .*layer 'blocks\.0\.mlp\.c_fc'"):
        train(tiny(steps=10), on_step=poison)


def test_nan_in_backward_names_step_and_layer():
    def poison(step, model):
        if step == 2:
            model.blocks[0].attn.c_proj.weight.register_hook(lambda g: g * math.nan)
    with pytest.raises(FloatingPointError, match=r"gradient .* at step 2 in layer 'blocks\.0\.attn\.c_proj'"):
        train(tiny(steps=10), on_step=poison)


def test_cli_writes_table_results_and_plot(tmp_path, capsys):
    main(["--task", "digits", "--recipes", "fp32", "--steps", "10", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert "fp32" in out and "val loss" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results[0]["recipe"] == "fp32" and results[0]["steps"][-1] == 10
    assert (tmp_path / "loss_curves.png").stat().st_size > 0


def test_cli_rejects_unknown_recipe(tmp_path):
    with pytest.raises(SystemExit, match="unknown recipe.*int3"):
        main(["--recipes", "int3", "--out", str(tmp_path)])


def test_naive_int4_trains_clearly_worse_than_hq_lss_and_fp32():
    """The paper's ordering at its most robust point: naive per-tensor INT4 (forward and dY,
    round-to-nearest) loses to both full precision and HQ+LSS. Tiny ViT, 150 steps, seed 0.
    Measured final val loss over seeds 0/1/2: fp32 0.50/0.51/0.87, int4_hq_lss 0.76/0.55/1.06,
    int4_rtn 1.40/1.32/1.74, so int4_rtn / int4_hq_lss >= 1.63 and int4_rtn / fp32 >= 2.0 on
    every seed; the margins below (1.25x, 1.5x) hold with room on all three. fp32 vs HQ+LSS is
    not asserted: at this size and length their gap is within seed-to-seed spread."""
    missing = {"int4_rtn", "int4_hq_lss"} - set(recipe_names())
    if missing:
        pytest.skip(f"int4lab.layers does not provide {missing}")
    cfg = dict(steps=150, warmup_steps=10, eval_every=50, seed=0)
    loss = {r: train(tiny(recipe=r, **cfg)).val_loss[-1] for r in ("fp32", "int4_rtn", "int4_hq_lss")}
    assert loss["int4_rtn"] > 1.25 * loss["int4_hq_lss"], loss
    assert loss["int4_rtn"] > 1.5 * loss["fp32"], loss

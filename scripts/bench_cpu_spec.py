"""How much a simulated INT4 step costs on a CPU, and what Int4Linear keeps for backward.

    python scripts/bench_cpu_spec.py [--threads 1] [--rounds 5] [--recipes int4_hq_lss,...] [--json OUT]

1. Step time, paired and interleaved: the default text GPT (`int4lab train`'s size, 2048 tokens a
   step) under fp32 and under each recipe, all in one process on the PyTorch spec, taking turns
   (3 steps each per round) so that a machine's load hits every recipe alike. Reported: each
   recipe's median ms per step and the median over rounds of its time / fp32's time in the
   same round. This is CPU speed of the simulation, not INT4 speed (no INT4 hardware runs).
2. Saved bytes: what autograd keeps between forward and backward for one 4096-token,
   1024 -> 1024 layer (bf16 input and weight), counted with torch.autograd.graph.saved_tensors_hooks,
   against a bf16 nn.Linear of the same size.
Each recipe with a learned LSQ scale is also run with the other LSQ record ("NAME lsq_grad=exact"
beside the default 2-bit one), in both parts.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch


def _recipe(name):
    """A recipe by name; "NAME lsq_grad=MODE" is that recipe with the other LSQ record."""
    from dataclasses import replace

    from int4lab.layers import get_recipe
    base, _, mode = name.partition(" lsq_grad=")
    return replace(get_recipe(base), lsq_grad=mode) if mode else get_recipe(base)


def with_other_lsq_grad(recipes):
    """The recipes, each with a learned LSQ scale followed by itself with the other record."""
    from int4lab.layers import get_recipe
    out = []
    for name in recipes:
        out.append(name)
        r = get_recipe(name)
        if r.uses_lsq:
            out.append(f"{name} lsq_grad={'exact' if r.lsq_grad == '2bit' else '2bit'}")
    return out


def memory(recipes, tokens=4096, d=1024):
    import int4lab
    from int4lab.layers import Int4Linear
    torch.manual_seed(0)
    x = torch.randn(tokens, d, dtype=torch.bfloat16)
    from int4lab.perf.layer_counts import saved_bytes
    ref = saved_bytes(torch.nn.Linear(d, d).to(torch.bfloat16), x)
    out = {"tokens": tokens, "in": d, "out": d, "bf16_linear_bytes": ref, "recipes": {}}

    with int4lab.use("spec"):
        for name in recipes:
            b = saved_bytes(Int4Linear(d, d, recipe=_recipe(name)).to(torch.bfloat16), x)
            out["recipes"][name] = {"bytes": b, "ratio": b / ref}
    return out


def step_times(recipes, rounds):
    import int4lab
    from int4lab.layers import quantize_model
    from int4lab.training import data as D
    from int4lab.training import loop
    cfg = loop.config_for("text")
    ds = D.load_text()
    runs = {}
    for name in ["fp32"] + recipes:
        torch.manual_seed(0)
        model = loop.build(cfg, ds)
        if name != "fp32":
            quantize_model(model, _recipe(name))
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def step(name, i):
        model, opt = runs[name]
        x, y = loop.get_batch(cfg, ds, i)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {name: [] for name in runs}
    with int4lab.use("spec"):
        for name in runs:                 # warm up, and past LSQ's warm-up steps
            for i in range(12):
                step(name, i)
        for k in range(rounds):
            for name in runs:
                t = time.perf_counter()
                for i in range(3):
                    step(name, 100 + 3 * k + i)
                times[name].append((time.perf_counter() - t) / 3)
    fp = times["fp32"]
    return {"tokens_per_step": cfg.batch_size * cfg.block_size, "rounds": rounds,
            "fp32_ms": 1e3 * statistics.median(fp),
            "recipes": {name: {"ms": 1e3 * statistics.median(times[name]),
                               "ratio": statistics.median(a / b for a, b in zip(times[name], fp)),
                               "ratio_min": min(a / b for a, b in zip(times[name], fp)),
                               "ratio_max": max(a / b for a, b in zip(times[name], fp))}
                        for name in recipes}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as int4lab train)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--recipes", default="int8,int4_rtn,int4_lsq_sr,int4_hq,int4_hq_lss")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    recipes = with_other_lsq_grad(a.recipes.split(","))
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, {a.threads} thread(s)",
              "step": step_times(recipes, a.rounds), "saved": memory(recipes)}
    st, sv = result["step"], result["saved"]
    print(f"{result['machine']}, {result['date']}")
    print(f"step time, default text GPT ({st['tokens_per_step']} tokens), spec, paired over "
          f"{st['rounds']} rounds: fp32 {st['fp32_ms']:.1f} ms")
    for name, r in st["recipes"].items():
        print(f"  {name:26} {r['ms']:7.1f} ms  {r['ratio']:.2f}x fp32 "
              f"(rounds {r['ratio_min']:.2f}-{r['ratio_max']:.2f})")
    print(f"saved for backward, {sv['tokens']} tokens, {sv['in']} -> {sv['out']}, bf16: nn.Linear "
          f"{sv['bf16_linear_bytes'] / 2**20:.2f} MiB")
    for name, r in sv["recipes"].items():
        print(f"  {name:26} {r['bytes'] / 2**20:7.2f} MiB  {r['ratio']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference outputs of Int4Linear under every recipe, recorded from the spec (CPU), so that a
faster spec can be checked bit for bit against the one it replaces.

    python tests/golden_layers.py --write    records tests/data/golden_layers.pt (once, on purpose)

tests/test_golden_layers.py recomputes the same cases and compares with torch.equal.
"""
import dataclasses
import sys
from pathlib import Path

import torch

PATH = Path(__file__).parent / "data" / "golden_layers.pt"
CASES = [  # (tokens, in_features, out_features, dtype)
    (33, 64, 48, torch.float32),
    (64, 96, 32, torch.float32),
    (17, 40, 24, torch.bfloat16),
]


def compute(exact_lsq=True):
    """{recipe/case: {name: tensor}} for every recipe (and two more that cover the other code
    paths: max-scale HQ with "nonzero" LSS, LSQ with INT4 gradients), three layer shapes, two
    steps each (the second after an SGD step, so LSQ's learned scales move)."""
    import int4lab
    from int4lab.layers import RECIPES, Int4Linear, Recipe
    out = {}
    recipes = dict(RECIPES)
    recipes["hq_max_scale_nonzero_lss"] = Recipe("hq_max_scale_nonzero_lss", forward="int4_hq",
                                                 grad="bs_lss", lss="nonzero", hq_scale="max")
    recipes["lsq_int4_rtn_grad"] = Recipe("lsq_int4_rtn_grad", forward="int4_lsq", grad="int4_rtn")
    if exact_lsq:
        # today's spec kept the rotated fp32 values for LSQ's step-size gradient: "exact"
        recipes = {k: dataclasses.replace(v, lsq_grad="exact") for k, v in recipes.items()}
    with int4lab.use("spec"):
        for name, recipe in recipes.items():
            for i, (n, d, c, dtype) in enumerate(CASES):
                torch.manual_seed(100 + i)
                layer = Int4Linear(d, c, recipe=recipe).to(dtype)
                x0 = (torch.randn(n, d) * torch.linspace(0.1, 4.0, d)).to(dtype)   # outlier-ish channels
                x0[:, 3] *= 20
                for step in range(2):
                    x = x0.clone().requires_grad_(True)
                    y = layer(x)
                    gy = torch.randn_like(y, dtype=torch.float32).to(dtype) * (1 + step)
                    y.backward(gy)
                    rec = {"y": y.detach(), "dx": x.grad, "dw": layer.weight.grad.clone(),
                           "db": layer.bias.grad.clone()}
                    for q in ("x_quantizer", "w_quantizer"):
                        mod = getattr(layer, q)
                        if mod is not None:
                            rec[f"{q}.scale"] = mod.scale.detach().clone()
                            rec[f"{q}.grad"] = mod.scale.grad.clone()
                    out[f"{name}/{i}/{step}"] = rec
                    with torch.no_grad():
                        for p in layer.parameters():
                            if p.grad is not None:
                                p -= 0.01 * p.grad
                                p.grad = None
    return out


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/golden_layers.py --write")
    PATH.parent.mkdir(exist_ok=True)
    torch.save(compute(), PATH)
    print(f"wrote {PATH}")

"""Int4Linear under int4_hq_lss runs the same on the library's Triton kernels as on the spec.

Forward: HQ is deterministic, so outputs agree to float tolerance (a code may differ by one
only where a rotated value sits on a rounding boundary). Backward: bit splitting's low part
and the row sampling are random and the two backends draw differently, so the gradients are
compared in distribution: the mean over seeds of each backend approaches the same value.
"""
import pytest
import torch

import int4lab
from int4lab.layers import Int4Linear


def layer_and_input(recipe="int4_hq_lss"):
    torch.manual_seed(0)
    layer = Int4Linear(64, 32, recipe=recipe)
    x = torch.randn(48, 64)
    x[:, 3] *= 20                                 # an outlier channel, as in real activations
    return layer, x


def run(layer, x, impl, seed):
    torch.manual_seed(seed)
    layer.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    with int4lab.use(impl):
        y = layer(xg)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        ran = dict(int4lab.last_ran())
    return y.detach(), xg.grad, layer.weight.grad.clone(), ran


def test_forward_matches_and_triton_really_ran():
    layer, x = layer_and_input()
    y_spec, _, _, ran_spec = run(layer, x, "spec", 0)
    y_tri, _, _, ran_tri = run(layer, x, "triton", 0)
    assert ran_spec["hadamard_quantize"] == "spec" and ran_tri["hadamard_quantize"] == "triton"
    for slot in ("int4_matmul", "bit_split", "lss_gather"):
        assert ran_tri.get(slot) == "triton", (slot, ran_tri)
    assert torch.allclose(y_tri, y_spec, rtol=1e-4, atol=1e-4 * y_spec.abs().max())


def test_deterministic_backward_matches_exactly_enough():
    layer, x = layer_and_input("int4_hq")
    _, dx_s, dw_s, _ = run(layer, x, "spec", 0)
    _, dx_t, dw_t, _ = run(layer, x, "triton", 0)
    assert torch.allclose(dx_t, dx_s, rtol=1e-4, atol=1e-5)
    assert torch.allclose(dw_t, dw_s, rtol=1e-4, atol=1e-5)


def test_stochastic_backward_agrees_in_distribution():
    layer, x = layer_and_input()
    draws = {impl: [run(layer, x, impl, seed)[1:3] for seed in range(12)] for impl in ("spec", "triton")}
    for k, name in ((0, "dX"), (1, "dW")):
        s = torch.stack([d[k] for d in draws["spec"]])
        t = torch.stack([d[k] for d in draws["triton"]])
        # the difference of two means of 12 draws: its standard error per entry is
        # sqrt(var_s/12 + var_t/12); on the whole tensor the normalized gap is ~1 when they agree
        se = ((s.var(0) + t.var(0)) / 12).sum().sqrt()
        gap = (s.mean(0) - t.mean(0)).norm()
        assert gap < 3 * se + 1e-6, f"{name}: mean gradients differ by {gap:.3g} (standard error {se:.3g})"
        # and the noise has the same size on both backends (within a factor 2)
        ratio = (t.var(0).sum() / s.var(0).sum()).item()
        assert 0.5 < ratio < 2.0, f"{name}: variance ratio triton/spec = {ratio:.2f}"


def test_the_triton_mode_takes_the_fused_path_only_where_it_applies():
    from int4lab.layers import fused_path
    layer, x = layer_and_input()
    with int4lab.use("triton"):
        assert fused_path(layer.recipe, x, layer.weight)
        assert not fused_path(layer.recipe, x[:47], layer.weight)          # odd token count
        assert not fused_path(Int4Linear(64, 32, recipe="int4_hq").recipe, x, layer.weight)
    with int4lab.use("spec"):
        assert not fused_path(layer.recipe, x, layer.weight)
    with int4lab.use("triton"):                    # the general path still runs what it cannot
        y = layer(x[:47])
    assert y.shape == (47, 32) and torch.isfinite(y).all()


def test_fused_scale_gradients_agree_in_distribution():
    layer, x = layer_and_input()
    with torch.no_grad():
        layer.x_quantizer.scale.mul_(0.6)          # so that values clip and both terms matter
    draws = {}
    for impl in ("spec", "triton"):
        out = []
        for seed in range(12):
            run(layer, x, impl, seed)
            out.append(torch.stack([layer.x_quantizer.scale.grad, layer.w_quantizer.scale.grad]))
        draws[impl] = torch.stack(out)
    s, t = draws["spec"], draws["triton"]
    se = ((s.var(0) + t.var(0)) / 12).sqrt()
    assert ((s.mean(0) - t.mean(0)).abs() < 4 * se + 1e-6).all(), (s.mean(0), t.mean(0), se)
    assert (s.mean(0).abs() > 2 * se).any()        # the comparison has something to compare


def test_fused_nan_in_a_row_makes_that_row_nan_as_nn_linear():
    layer, x = layer_and_input()
    layer.eval()
    with int4lab.use("triton"):
        layer(x)                                   # LSQ's scale starts from finite data
        x = x.clone()
        x[5, 2] = float("nan")
        y = layer(x)
    assert torch.isnan(y[5]).all() and torch.isfinite(y[torch.arange(48) != 5]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fused path in bf16)")
def test_on_a_gpu_the_fused_path_agrees_with_the_spec_and_runs_bf16():
    from int4lab.layers import fused_path
    torch.manual_seed(0)
    layer = Int4Linear(256, 128, recipe="int4_hq_lss").cuda()
    x = torch.randn(96, 256, device="cuda")
    x[:, 3] *= 20
    draws = {}
    for impl in ("spec", "triton"):
        out = []
        for seed in range(12):
            torch.manual_seed(seed)
            layer.zero_grad(set_to_none=True)
            xg = x.clone().requires_grad_(True)
            with int4lab.use(impl):
                if impl == "triton":
                    assert fused_path(layer.recipe, xg, layer.weight)
                y = layer(xg)
                y.backward(torch.linspace(-1, 1, y.numel(), device="cuda").reshape(y.shape))
            out.append((y.detach(), xg.grad, layer.weight.grad.clone()))
        draws[impl] = out
    assert torch.allclose(draws["triton"][0][0], draws["spec"][0][0], rtol=1e-3, atol=1e-3)
    for k in (1, 2):
        s = torch.stack([d[k] for d in draws["spec"]])
        t = torch.stack([d[k] for d in draws["triton"]])
        se = ((s.var(0) + t.var(0)) / 12).sum().sqrt()
        assert (s.mean(0) - t.mean(0)).norm() < 3 * se + 1e-6
    # bf16 end to end: the same layer in bf16 takes the fused path and stays close to fp32
    lb = Int4Linear(256, 128, recipe="int4_hq_lss").cuda().to(torch.bfloat16)
    with torch.no_grad():
        lb.weight.copy_(layer.weight)
        lb.bias.copy_(layer.bias)
    xb = x.to(torch.bfloat16).requires_grad_(True)
    with int4lab.use("triton"):
        assert fused_path(lb.recipe, xb, lb.weight)
        yb = lb(xb)
        yb.float().sum().backward()
    assert yb.dtype == torch.bfloat16 and xb.grad.dtype == torch.bfloat16
    assert torch.isfinite(yb).all() and torch.isfinite(xb.grad).all() and torch.isfinite(lb.weight.grad).all()
    ref = draws["triton"][0][0]
    assert (yb.float() - ref).norm() / ref.norm() < 0.1       # bf16 inputs move some codes by one


def test_fused_without_grad_writes_only_what_the_forward_needs():
    from int4lab.perf.layer_counts import Counter
    layer, x = layer_and_input()
    with int4lab.use("triton"):
        y = layer(x)                                # training mode: the record is written too
        with torch.no_grad(), Counter(10 ** 9) as c:
            y0 = layer(x)
    assert torch.equal(y0, y.detach())              # the forward's codes do not depend on draws
    assert c.detail()["triton_by_kernel"] == {"quantize_rows_kernel": 2, "int4_matmul_kernel": 1}

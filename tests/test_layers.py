"""Int4Linear under every recipe: exactness of fp32, the STE's mask placement, the paper's error
ordering on outlier inputs, unbiasedness of HQ+LSS, determinism, and short training runs."""
import dataclasses

import pytest
import torch
import torch.nn as nn

import int4lab
from int4lab.layers import RECIPES, Int4Linear, Recipe, get_recipe, quantize_model
from int4lab.spec.gradients import bit_split_mean
from int4lab.spec.hadamard import block_hadamard
from int4lab.spec.quantizers import lsq_quantize


def rel(a, b):
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def sparse_grad(n, c, gen):
    """dY as the paper describes it: a few token rows large, most near zero."""
    return torch.randn(n, c, generator=gen) * torch.rand(n, 1, generator=gen) ** 3


def test_fp32_recipe_matches_nn_linear_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(24, 10)
    q = Int4Linear.from_linear(lin, "fp32")
    x = torch.randn(3, 5, 24, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = lin(x), q(x2)
    assert torch.equal(y, y2)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    assert torch.equal(x.grad, x2.grad)
    assert torch.equal(lin.weight.grad, q.weight.grad) and torch.equal(lin.bias.grad, q.bias.grad)


def test_int4linear_is_an_nn_linear_drop_in():
    torch.manual_seed(1)
    a = nn.Linear(32, 16)
    torch.manual_seed(1)
    b = Int4Linear(32, 16)
    assert isinstance(b, nn.Linear)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)      # same init
    c = Int4Linear.from_linear(a, "int4_rtn")
    assert torch.equal(c.weight, a.weight) and c.weight is not a.weight          # a copy
    assert Int4Linear(8, 4, bias=False).bias is None
    assert "int4_hq_lss" in repr(b)


def outlier_setup(seed=0, n=128, d=512, c=128, channels=2):
    """Activations with `channels` outlier channels, 50x the rest (random sign per token)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = nn.Linear(d, c)
    x = torch.randn(n, d, generator=g)
    ch = torch.randperm(d, generator=g)[:channels]
    signs = torch.randint(0, 2, (n, channels), generator=g) * 2 - 1
    x[:, ch] = 50 * signs * (1 + 0.1 * torch.randn(n, channels, generator=g))
    normal = torch.ones(d, dtype=torch.bool)
    normal[ch] = False
    return lin, x, sparse_grad(n, c, g), normal


def test_recipe_errors_follow_the_papers_ordering():
    lin, x, g, normal = outlier_setup()
    xr = x.clone().requires_grad_(True)
    y0 = lin(xr)
    gx0, gw0 = torch.autograd.grad(y0, (xr, lin.weight), g)
    err = {}
    for name in RECIPES:
        layer = Int4Linear.from_linear(lin, name)
        xq = x.clone().requires_grad_(True)
        y = layer(xq)
        gx, gw = torch.autograd.grad(y, (xq, layer.weight), g)
        err[name] = dict(y=rel(y, y0), dx=rel(gx, gx0), dw=rel(gw, gw0),
                         dw_normal=rel(gw[:, normal], gw0[:, normal]))
    print("\nrelative errors vs fp32 on 2 outlier channels (50x):")
    for name, e in err.items():
        print(f"  {name:12s} " + "  ".join(f"{k} {v:.3f}" for k, v in e.items()))
    assert all(v == 0 for v in err["fp32"].values())
    assert max(err["int8"].values()) < 0.15
    assert max(err["int8"][k] for k in ("y", "dx", "dw")) < 0.06
    # per-tensor RTN: the outliers set the step and every other channel rounds to zero, so the
    # weights of those channels get no gradient at all
    assert err["int4_rtn"]["dw_normal"] > 0.99
    # HQ spreads each outlier over its block: forward and weight gradient well below RTN's
    assert err["int4_hq"]["y"] < 0.7 * err["int4_rtn"]["y"]
    assert err["int4_hq"]["dw"] < 0.5 * err["int4_rtn"]["dw"]
    assert err["int4_hq"]["dw_normal"] < 0.6
    # plain per-tensor LSQ clips the outliers (its initial scale is from mean|x|): worse than HQ
    assert err["int4_lsq_sr"]["y"] > 2 * err["int4_hq"]["y"]
    # HQ+LSS has HQ's forward; its sampled gradients are noisier but keep the normal channels
    assert err["int4_hq_lss"]["y"] == err["int4_hq"]["y"]
    assert err["int4_hq_lss"]["dw_normal"] < 0.85 * err["int4_rtn"]["dw_normal"]


@pytest.mark.parametrize("forward,block", [("int4_hq", 32), ("int4_lsq", 1), ("int4_rtn", 1)])
def test_backward_is_the_ste_of_the_quantized_forward(forward, block):
    """With dY in full precision the layer's gradients equal autograd through a fake-quant
    reference: mask in the rotated domain, then H^T, i.e. dX = s_W (I_X o dY W_hat) H^T."""
    recipe = Recipe(forward=forward, grad="fp", lsq_warmup_steps=0, lsq_grad="exact")
    torch.manual_seed(0)
    layer = Int4Linear(64, 16, recipe=recipe)
    x = torch.randn(12, 64)
    x[:, 7] *= 20
    x.requires_grad_(True)
    layer(x)                                           # initialises the LSQ scales
    if recipe.uses_lsq:
        with torch.no_grad():                          # small scales: a good share gets clipped
            layer.x_quantizer.scale.mul_(0.5)
            layer.w_quantizer.scale.mul_(0.5)
        sx, sw = layer.x_quantizer.scale, layer.w_quantizer.scale
        zx = block_hadamard(x.detach(), block) / sx.detach()
        assert 0.01 < (zx.abs() > 7).float().mean() < 0.5
    y = layer(x)
    g = torch.randn_like(y)
    params = [x, layer.weight, layer.bias] + ([sx, sw] if recipe.uses_lsq else [])
    got = torch.autograd.grad(y, params, g)

    xr, wr = x.detach().clone().requires_grad_(True), layer.weight.detach().clone().requires_grad_(True)
    if recipe.uses_lsq:
        sxr, swr = sx.detach().clone().requires_grad_(True), sw.detach().clone().requires_grad_(True)
        yr = lsq_quantize(block_hadamard(xr, block), sxr) @ lsq_quantize(block_hadamard(wr, block), swr).T
        ref_params = [xr, wr, sxr, swr]
    else:                                              # max scale: fixed, nothing clips
        s_x = (xr.detach().abs().max() / 7).item()
        s_w = (wr.detach().abs().max() / 7).item()
        yr = lsq_quantize(xr, s_x) @ lsq_quantize(wr, s_w).T
        ref_params = [xr, wr]
    yr = yr + layer.bias.detach()
    ref = torch.autograd.grad(yr, ref_params, g)
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[2], g.sum(0))
    if recipe.uses_lsq:
        torch.testing.assert_close(got[3], ref[2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got[4], ref[3], rtol=1e-4, atol=1e-5)


def average_grads(layer, x, g, draws):
    """Forward once, backward `draws` times: (mean of (dX, dW), mean squared deviation)."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    samples = []
    for _ in range(draws):
        grads = torch.autograd.grad(y, (x, layer.weight), g, retain_graph=True)
        samples.append(torch.cat([t.flatten() for t in grads]))
    s = torch.stack(samples)
    return s.mean(0), ((s - s.mean(0)) ** 2).sum(1).mean()


@pytest.mark.parametrize("lss", ["sample", "nonzero"])
def test_hq_lss_expected_gradient_is_hq_gradient(lss):
    """E[int4_hq_lss grads] = int4_hq grads with dY replaced by E[bit split of dY]: LSS and the
    stochastic requantization are unbiased; the only bias is bit splitting's [-6, 6] clamp."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(32, 64, generator=gen)
    x[:, 3] *= 20
    g = sparse_grad(32, 32, gen)
    recipe = dataclasses.replace(RECIPES["int4_hq_lss"], lss=lss)
    draws = 2000
    mean, msd = average_grads(Int4Linear.from_linear(lin, recipe), x, g, draws)

    hq = Int4Linear.from_linear(lin, "int4_hq")
    xr = x.clone().requires_grad_(True)
    y = hq(xr)
    ref = torch.cat([t.flatten() for t in torch.autograd.grad(y, (xr, hq.weight), bit_split_mean(g),
                                                             retain_graph=True)])
    ref_true = torch.cat([t.flatten() for t in torch.autograd.grad(y, (xr, hq.weight), g)])
    # an unbiased mean is off by about sqrt(msd / draws); a bias would not shrink with draws
    dev = torch.linalg.vector_norm(mean - ref).item()
    noise = (msd / draws).sqrt().item()
    print(f"\n{lss}: |mean - E| = {dev:.4g}, noise {noise:.4g}, per-draw rel. spread "
          f"{(msd.sqrt() / torch.linalg.vector_norm(ref)).item():.3f}")
    assert dev < 3 * noise
    assert noise < 0.05 * torch.linalg.vector_norm(ref)        # the check can see a 15% bias
    # bit splitting's bias (its [-6, 6] clamp) is small, yet this check is sharp enough to see it
    bias = torch.linalg.vector_norm(ref - ref_true).item()
    print(f"   bit-split bias |E - HQ grads at the true dY| = {bias:.4g}")
    assert rel(ref, ref_true) < 0.05
    assert torch.linalg.vector_norm(mean - ref_true).item() > 3 * noise


def test_nonzero_mode_is_int8_like():
    """In 'nonzero' mode the only randomness is the bit split: with 7 levels for lo it is
    INT8-like, far closer to the full-precision gradient than per-tensor INT4 of dY."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    lin = nn.Linear(64, 32)
    x, g = torch.randn(16, 64, generator=gen), sparse_grad(16, 32, gen)
    grads = {}
    for name in ("int4_hq", "nonzero", "int4_rtn_grad"):
        recipe = {"int4_hq": RECIPES["int4_hq"],
                  "nonzero": dataclasses.replace(RECIPES["int4_hq_lss"], lss="nonzero"),
                  "int4_rtn_grad": dataclasses.replace(RECIPES["int4_hq"], grad="int4_rtn")}[name]
        layer = Int4Linear.from_linear(lin, recipe)
        xr = x.clone().requires_grad_(True)
        grads[name] = torch.autograd.grad(layer(xr), (xr, layer.weight), g)
    for i in range(2):
        e_bs = rel(grads["nonzero"][i], grads["int4_hq"][i])
        e_rtn = rel(grads["int4_rtn_grad"][i], grads["int4_hq"][i])
        assert e_bs < 0.1 and e_bs < 0.5 * e_rtn


@pytest.mark.parametrize("name", ["int8", "int4_lsq_sr", "int4_hq_lss"])
def test_deterministic_under_torch_manual_seed(name):
    lin = nn.Linear(32, 16)
    x, g = torch.randn(2, 8, 32), torch.randn(2, 8, 16)

    def run(seed):
        torch.manual_seed(seed)
        layer = Int4Linear.from_linear(lin, name)
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(layer(xr), (xr, layer.weight), g)

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


@pytest.mark.parametrize("name", list(RECIPES))
def test_odd_shapes_and_batch_dims(name):
    """Odd sizes (tokens, in and out features) are zero-padded inside; leading dims are flattened."""
    torch.manual_seed(0)
    layer = Int4Linear(15, 7, recipe=name)
    x = torch.randn(3, 5, 15, requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 5, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape and layer.weight.grad.shape == (7, 15)
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    ref = nn.functional.linear(x, layer.weight, layer.bias)
    assert rel(y, ref) < (1e-6 if name == "fp32" else 0.5)
    assert layer(torch.randn(0, 15)).shape == (0, 7)


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_zero_gradient(name, dtype):
    """A zero dY (all-zero groups) must give zero, finite gradients; dtypes follow the inputs."""
    layer = Int4Linear(32, 16, recipe=name).to(dtype)
    x = torch.randn(4, 32, dtype=dtype, requires_grad=True)
    y = layer(x)
    y.backward(torch.zeros_like(y))
    assert y.dtype == dtype and x.grad.dtype == dtype and layer.weight.grad.dtype == dtype
    assert (x.grad == 0).all() and (layer.weight.grad == 0).all()


def test_clear_errors():
    layer = Int4Linear(16, 8)
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\)"):
        layer(torch.randn(4, 12))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.full((4, 16), float("nan")))
    with pytest.raises(ValueError, match="unknown recipe"):
        Int4Linear(16, 8, recipe="int2")


@pytest.mark.parametrize("recipe", ["int4_hq_lss", "int4_lsq_sr", "int4_rtn"])
def test_non_finite_input_after_the_warm_up_shows_in_the_output(recipe):
    """After LSQ's warm-up nothing on the hot path reads values (no host sync on a GPU), and a
    learned scale would round NaN or Inf to some code: the layer lets it show in Y instead, as
    nn.Linear does, rather than return finite garbage."""
    torch.manual_seed(0)
    layer = Int4Linear(16, 8, recipe=Recipe(**{**vars(get_recipe(recipe)), "lsq_warmup_steps": 1}))
    x = torch.randn(4, 16)
    for _ in range(3):
        assert torch.isfinite(layer(x)).all()
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[1, 3] = bad
        assert not torch.isfinite(layer(xb)).any()
    with pytest.raises(TypeError):
        get_recipe(3)
    with pytest.raises(ValueError, match="forward"):
        Recipe(forward="int3")
    with pytest.raises(ValueError, match="power of two"):
        Recipe(block_size=24)
    with pytest.raises(ValueError, match="bs_lss"):
        Recipe(forward="fp", grad="bs_lss")
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES["int4_hq"].block_size = 64


def make_task(n=512):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    x[:, 2] *= 10                                          # an outlier feature
    w = torch.randn(16, 4, generator=g) / 4
    return x, torch.tanh(x @ w) + 0.1 * torch.sin(3 * x[:, :4])


def train(model, x, y, steps=200, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(RECIPES))
def test_mlp_trains_under_every_recipe(name):
    x, y = make_task()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4))
    quantize_model(model, name, skip=())                    # every layer, the head included
    assert all(isinstance(m, Int4Linear) for m in model if isinstance(m, nn.Linear))
    losses = train(model, x, y)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"\n{name}: loss {first:.4f} -> {last:.4f}")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert last < 0.5 * first


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(20, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.lm_head = nn.Linear(32, 20)

    def forward(self, idx):
        h = self.wte(idx)
        return self.lm_head(h + self.blocks(h))


def test_quantize_model_swaps_the_right_layers_and_trains():
    torch.manual_seed(0)
    model = TinyLM()
    w0 = model.blocks[0].weight.detach().clone()
    assert quantize_model(model, "int4_hq_lss") is model
    assert isinstance(model.blocks[0], Int4Linear) and isinstance(model.blocks[2], Int4Linear)
    assert type(model.lm_head) is nn.Linear and type(model.wte) is nn.Embedding
    assert torch.equal(model.blocks[0].weight, w0)
    idx = torch.randint(0, 20, (8, 12))
    target = (idx + 1) % 20                                # learn "next letter"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(idx).reshape(-1, 20), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

    seq = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    quantize_model(seq, dataclasses.replace(RECIPES["int4_hq"], block_size=8))
    assert isinstance(seq[0], Int4Linear) and type(seq[2]) is nn.Linear   # last Linear = head
    assert seq[0].recipe.block_size == 8
    seq2 = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    quantize_model(seq2, "int8", skip=["0"])
    assert type(seq2[0]) is nn.Linear and isinstance(seq2[2], Int4Linear)
    with pytest.raises(ValueError, match="not linear layers"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), "int8", skip=["head"])
    with pytest.raises(TypeError, match="from_linear"):
        quantize_model(nn.Linear(4, 4), "int8")


def test_quantize_model_filter_fn_follows_torchaos_convention():
    model = TinyLM()
    seen = []

    def only_blocks(module, fqn):
        seen.append((type(module).__name__, fqn))
        return fqn.startswith("blocks.")

    int4lab.quantize_model(model, "int4_hq", filter_fn=only_blocks)
    assert isinstance(model.blocks[0], Int4Linear) and isinstance(model.blocks[2], Int4Linear)
    assert type(model.lm_head) is nn.Linear                  # filter_fn said no
    assert ("Linear", "lm_head") in seen
    # a second call leaves Int4Linear alone (one type check for swapping and for skip)
    int4lab.quantize_model(model, "int4_hq", skip=())
    assert isinstance(model.lm_head, Int4Linear) and model.blocks[0].recipe.name == "int4_hq"
    with pytest.raises(ValueError, match="not linear layers"):
        int4lab.quantize_model(TinyLM(), skip=["wte"])
    with pytest.raises(TypeError, match="filter_fn must be callable"):
        int4lab.quantize_model(TinyLM(), filter_fn="blocks")


@pytest.mark.parametrize("forward,block", [("int4_hq", 32), ("int4_lsq", 1)])
def test_the_2bit_lsq_record_changes_only_the_step_size_gradient(forward, block):
    """lsq_grad="2bit" keeps 2 bits a value instead of the fp32 rotated values: the output and
    the STE gradients (the clip masks are exact) are the same; only LSQ's step-size gradients
    differ (test below)."""
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    x[:, 7] *= 20
    out = {}
    for mode in ("exact", "2bit"):
        torch.manual_seed(1)
        layer = Int4Linear(64, 48, recipe=Recipe(forward=forward, grad="fp", lsq_warmup_steps=0, lsq_grad=mode))
        xi = x.clone().requires_grad_(True)
        layer(xi)                                       # initialises the scales
        with torch.no_grad():
            layer.x_quantizer.scale.mul_(0.6)           # so that some values clip
        y = layer(xi)
        g = torch.randn_like(y, generator=torch.Generator().manual_seed(2))
        out[mode] = [y.detach()] + list(torch.autograd.grad(
            y, [xi, layer.weight, layer.x_quantizer.scale, layer.w_quantizer.scale], g))
    for a, b in zip(out["exact"][:3], out["2bit"][:3]):
        assert torch.equal(a, b)
    assert not torch.equal(out["exact"][3], out["2bit"][3])


def test_the_2bit_record_is_the_mask_and_an_unbiased_remainder():
    """lsq_record/lsq_unrecord: the clip mask exactly (a clipped value and an unclipped +-Q told
    apart by the code and the record together); the rounding remainder r = v - round(v)
    stochastically rounded to one of the two of the levels -1/2, -1/6, 1/6, 1/2 around it, so that
    over the record's random draws E[r_hat] = r (to within its 8-bit dither's 1/1536) and the
    2-bit step-size gradient is the exact one on average."""
    from int4lab.layers import _lsq_masks, _lsq_scale_grad, _lsq_scale_grad_2bit, lsq_record, lsq_unrecord
    from int4lab.spec.quantizers import QMAX, make_generator
    torch.manual_seed(0)
    # 1110 values (not a multiple of 4), heavy-tailed like activations: most near 0, some clipped
    z, s = torch.randn(37, 30) ** 3 * 1.5, torch.tensor(0.5)
    z[0, :4] = torch.tensor([3.5, -3.5, 3.5 + 4e-7, -3.5 - 4e-7])      # v on and just past +-Q
    v = z / s
    r = v - torch.round(v)
    codes = torch.round(v.clamp(-QMAX[4], QMAX[4])).to(torch.int8)
    mask = (v >= -7) & (v <= 7)
    assert mask[0, :4].tolist() == [True, True, False, False]
    assert ((codes.abs() == 7) & mask).sum() > 10 and 0.05 < (~mask).float().mean() < 0.5
    g = torch.randn_like(z)
    exact = _lsq_scale_grad(g, *_lsq_masks(z, s), codes, z.numel())
    mean_r, grads = torch.zeros_like(z), []
    draws = 400
    for seed in range(draws):
        inside, p, q = lsq_unrecord(lsq_record(z, s, make_generator(seed)), codes)
        assert torch.equal(inside, mask.float()) and torch.equal(q, codes.float())
        assert set(p.unique().tolist()) <= {-3.0, -1.0, 1.0, 3.0}     # p = 2c - 3, c = 0..3
        r_hat = p / 6 * inside
        assert ((r_hat - r).abs()[mask] <= 1 / 3 + 1e-6).all()        # one of the two levels around r
        mean_r += r_hat / draws
        ds, d_in = _lsq_scale_grad_2bit(g, inside, p, q, z.numel())
        assert torch.equal(d_in, g * mask)                             # the STE's gradient, exactly
        grads.append(float(ds))
    # each r_hat has standard deviation <= 1/6, so the mean of 400 draws is within 6 sigma = 0.05
    assert (mean_r - r)[mask].abs().max() < 0.05
    grads = torch.tensor(grads)
    sem = grads.std() / draws ** 0.5
    assert grads.std() > 0 and (grads.mean() - exact).abs() < 5 * sem
    # the old deterministic record (the nearest of -1/3, 0, 1/3) misses by far more than that
    r_near = ((r + 0.5) * 3).floor().clamp(0, 2).sub(1).div(3) * mask
    biased = _lsq_scale_grad(g, r_near + torch.round(v), mask, codes, z.numel())
    assert (biased - exact).abs() > 5 * sem, (float(biased - exact), float(sem))


@pytest.mark.parametrize("recipe, lsq_grad, at_most", [
    ("int4_hq_lss", None, 0.4), ("int4_lsq_sr", None, 0.4), ("int4_hq", None, 0.4),
    ("int4_hq_lss", "2bit", 0.5), ("int4_lsq_sr", "2bit", 0.5), ("int4_hq", "2bit", 0.5),
    ("int4_hq_lss", "exact", 2.8), ("int4_rtn", "exact", 0.3), ("int8", "exact", 0.55), ("fp32", "exact", 1.0)])
def test_what_backward_keeps_against_a_bf16_linear(recipe, lsq_grad, at_most):
    """Saved for backward (counted with saved_tensors_hooks), bf16 input and weight: INT4 codes
    packed, no fp32 copy of a bf16 tensor; with a learned LSQ scale, the 2-bit record (the
    default, None here) or the rotated fp32 values ("exact"). nn.Linear keeps x and W in bf16."""
    import dataclasses

    from int4lab.layers import get_recipe
    from int4lab.perf.layer_counts import saved_bytes
    torch.manual_seed(0)
    x = torch.randn(512, 256, dtype=torch.bfloat16)
    ref = saved_bytes(torch.nn.Linear(256, 256).to(torch.bfloat16), x)
    assert ref == 2 * (512 * 256 + 256 * 256)
    r = get_recipe(recipe) if lsq_grad is None else dataclasses.replace(get_recipe(recipe), lsq_grad=lsq_grad)
    got = saved_bytes(Int4Linear(256, 256, recipe=r).to(torch.bfloat16), x)
    print(f"{recipe} ({lsq_grad}): {got / ref:.3f}x a bf16 nn.Linear")
    assert got <= at_most * ref


def test_the_records_dither_is_uniform():
    """The 2-bit record's dither: every byte of the random words used is uniform over 0..255
    (torch's int64 random_ leaves the top bit of each word 0, so that byte is not used)."""
    from int4lab.layers import _dither
    from int4lab.spec.quantizers import make_generator
    u = _dither(700_001, make_generator(0), 0.0)
    assert u.shape == (700_001,) and 0 < float(u.min()) and float(u.max()) < 1
    counts = torch.histc(u, bins=256, min=0, max=1)
    # 256 cells of ~2734: a chi-square with 255 degrees of freedom stays well under 400
    assert float(((counts - counts.mean()) ** 2 / counts.mean()).sum()) < 400
    assert abs(float(u.mean()) - 0.5) < 0.002

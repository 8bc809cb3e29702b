"""The course's two transformers: shapes, sizes, and which layers are left for quantization."""
import pytest
import torch
import torch.nn as nn

from int4lab.training.models import GPT, GPTConfig, ViT, ViTConfig


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_gpt_forward_shapes_and_loss():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_embd=64))
    idx = torch.randint(50, (3, 16))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 16, 50)
    # at initialization the prediction is near uniform: loss ~ ln(vocab)
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.2
    assert m(idx[:, :5])[1] is None


def test_gpt_default_is_about_one_million_parameters():
    assert 0.9e6 < n_params(GPT(GPTConfig(vocab_size=96))) < 1.2e6


def test_gpt_is_causal():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_embd=32)).eval()
    a = torch.randint(20, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 20  # change the future only
    assert torch.equal(m(a)[0][0, :5], m(b)[0][0, :5])


def test_gpt_rejects_too_long_input():
    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_embd=32))
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_vit_forward_shapes_and_size():
    torch.manual_seed(0)
    m = ViT(ViTConfig())
    logits, loss = m(torch.rand(5, 1, 8, 8), torch.arange(5))
    assert logits.shape == (5, 10) and loss.ndim == 0
    assert 1.5e5 < n_params(m) < 2.5e5
    with pytest.raises(ValueError, match="expected images"):
        m(torch.rand(5, 64))


@pytest.mark.parametrize("model", [GPT(GPTConfig(vocab_size=40)), ViT(ViTConfig())], ids=["gpt", "vit"])
def test_linear_layers_are_the_quantizable_ones(model):
    """Every nn.Linear but the head has a reduction dim that the 32-wide Hadamard block tiles;
    the head (lm_head / head) is an nn.Linear too, kept apart by name."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    head = "lm_head" if isinstance(model, GPT) else "head"
    assert head in linears
    body = {n: m for n, m in linears.items() if n != head}
    assert len(body) == 4 * model.config.n_layer
    assert {n.rsplit(".", 1)[-1] for n in body} == {"c_attn", "c_proj", "c_fc"}
    assert all(m.in_features % 32 == 0 and m.out_features % 32 == 0 for m in body.values())


@pytest.mark.parametrize("make", [lambda: GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_embd=64)),
                                  lambda: ViT(ViTConfig(n_layer=2))], ids=["gpt", "vit"])
def test_quantize_model_swaps_the_body_and_keeps_the_head(make):
    layers = pytest.importorskip("int4lab.layers")
    torch.manual_seed(0)
    model = layers.quantize_model(make(), "int4_hq_lss")
    swapped = [n for n, m in model.named_modules() if isinstance(m, layers.Int4Linear)]
    assert len(swapped) == 4 * model.config.n_layer
    head = model.lm_head if isinstance(model, GPT) else model.head
    assert type(head) is nn.Linear
    x = torch.randint(40, (2, 16)) if isinstance(model, GPT) else torch.rand(2, 1, 8, 8)
    y = torch.randint(10, (2, 16)) if isinstance(model, GPT) else torch.randint(10, (2,))
    model(x, y)[1].backward()
    assert all(p.grad is not None for p in model.parameters())

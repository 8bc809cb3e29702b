# %% [markdown]
# # Lesson 05 · An INT4 linear layer
#
# Lessons 01 to 04 built the pieces: INT4 codes and packing, the quantize kernel, the INT4 GEMM
# and the Hadamard quantizer. This lesson assembles them into a layer that *trains*: a drop-in
# replacement for `nn.Linear` whose forward pass runs on 4-bit integers and whose backward pass
# produces gradients through the rounding, following *Training Transformers with 4-bit Integers*
# (Xi, Li, Chen, Zhu, NeurIPS 2023, sec. 4 and 5).
#
# **By the end of this lesson you can**
# 1. write a `torch.autograd.Function`: a forward that saves what the backward needs, and a
#    backward that returns one gradient per input;
# 2. explain the straight-through estimator (STE) and its clipping mask, and write one;
# 3. derive the paper's gradients of an HQ layer, `∇X = s_W (I_X ∘ ∇Y Ŵ) Hᵀ` and
#    `∇W = s_X (∇Yᵀ X̂ ∘ I_W) Hᵀ`, and check them against the library's layer;
# 4. use `int4lab.layers.Int4Linear`, its recipes and `quantize_model`;
# 5. measure each recipe's forward and gradient error against fp32 on inputs with outlier
#    channels, and say which implementation ran every quantized operation.
#
# There is no new kernel to write: the layer runs on the slots you unlocked in lessons 01 to 04.

# %%
# %matplotlib inline
import int4lab
import torch
import torch.nn as nn

from int4lab import runtime
from int4lab.course import l05_linear as l05
from int4lab.spec.hadamard import block_hadamard
from int4lab.layers import RECIPES, Int4Linear, Recipe, get_recipe, quantize_model
from int4lab.spec.quantizers import lsq_codes, lsq_quantize
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
DEV = runtime.DEVICE
print("kernels run:", runtime.describe())

# tokens, in_features, out_features: 4 outlier channels among 1024 inputs
N_TOK, D_IN, D_OUT = (1024, 1024, 1024) if runtime.HAS_CUDA else ((64, 1024, 128) if FAST else (256, 1024, 256))


# %% [markdown]
# ## 1. `torch.autograd.Function` from scratch
#
# Autograd differentiates any composition of PyTorch operations. But an INT4 layer computes its
# output from integer codes, through `round`, whose derivative is useless, and we want to choose
# the backward pass ourselves (which GEMMs, in which precision). A `torch.autograd.Function`
# lets us write both passes:
#
# - `forward(ctx, *inputs)` computes the output. Whatever the backward will need goes into
#   `ctx.save_for_backward(...)` (tensors) or onto `ctx` (anything else).
# - `backward(ctx, grad_output)` receives `∂L/∂output` and returns `∂L/∂input` for **each**
#   input of forward, in order (`None` for inputs that need no gradient).
# - Call it as `MyFunction.apply(*inputs)`.
#
# A plain linear layer, `Y = X Wᵀ`: `∂L/∂X = ∇Y · W` and `∂L/∂W = ∇Yᵀ · X`. Its backward needs
# `X` and `W`, so forward saves them. `torch.autograd.gradcheck` compares the backward with
# finite differences (in float64).

# %%
class MyLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)          # what backward needs
        return x @ w.T

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        return grad_y @ w, grad_y.T @ x      # one gradient per input of forward, in order


xs = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
ws = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
print("gradcheck passes:", torch.autograd.gradcheck(MyLinear.apply, (xs, ws)))

# %% [markdown]
# What forward *saves* matters as much as what it computes: a transformer keeps every layer's
# saved tensors alive from the forward pass until its backward, and they are much of a training
# run's memory. The INT4 layer saves the **packed INT4 codes** of X and W (half a byte per
# value, against 4 for fp32) and reuses them in the backward GEMMs. A learned LSQ scale (below)
# needs a little more: its gradient reads each value's rounding remainder `x/s − round(x/s)`, and
# the STE needs to know which values were clipped. The layer keeps both in **2 more bits** per
# value: the remainder stochastically rounded to one of four levels (so the gradient stays
# unbiased), or "clipped". In all, 0.38× the bytes a bf16 `nn.Linear` keeps (x and W in bf16);
# keeping the fp32 values instead (`Recipe(lsq_grad="exact")`) would be 2.25×.
#
# ## 2. Rounding has no useful gradient: the straight-through estimator
#
# The quantizer `s·round(clamp(x/s, −7, 7))` is a staircase: flat almost everywhere, so its
# true derivative is 0 (and undefined at the jumps). Backpropagating through it would stop every
# gradient. The **straight-through estimator** (STE) pretends, in the backward pass only, that
# rounding is the identity: the gradient passes through unchanged, **except where the value was
# clipped**. A clipped value would not change if x moved a little, so its gradient is 0. That is
# the mask `I_X`: 1 where `−7 ≤ x/s ≤ 7`, 0 elsewhere.
#
# The library's LSQ quantizer, `int4lab.spec.quantizers.lsq_quantize(x, scale)`, is an autograd.Function
# with exactly this backward for `x` (it also learns the scale, lesson 02). The plot runs it.

# %%
l05.ste_figure(scale=0.5)

# %%
x = torch.tensor([-5.0, -1.3, 0.2, 2.6, 4.0], requires_grad=True)
x_hat = lsq_quantize(x, torch.tensor(0.5))           # clips beyond 7 * 0.5 = 3.5
x_hat.backward(torch.ones_like(x_hat))
print("x       ", x.tolist())
print("s*int(x)", x_hat.tolist())
print("grad (STE)", x.grad.tolist(), "  <- 0 where clipped")


# %% [markdown]
# ### Exercise (not graded): your own STE
#
# Complete `FakeQuantSTE`: forward returns `s · round(clamp(x / s, −7, 7))` and saves the mask
# of the values that were not clipped; backward returns `grad · mask` for `x` and `None` for the
# scale (we do not learn it here). The next cell checks it against `lsq_quantize` with plain
# asserts; until you write it, it says so and the lesson goes on.

# %%
class FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        # TODO 1: v = x / scale
        # TODO 2: mask = values that are not clipped: -7 <= v <= 7; save it for backward
        # TODO 3: return torch.round(torch.clamp(v, -7, 7)) * scale
        raise NotImplementedError("FakeQuantSTE.forward")

    @staticmethod
    def backward(ctx, grad_out):
        # TODO 4: load the mask; return (grad_out * mask, None): no gradient for the scale
        raise NotImplementedError("FakeQuantSTE.backward")


# %%
def check_ste(fn):
    x = torch.linspace(-5, 5, 101, requires_grad=True)
    s = torch.tensor(0.5)
    y = fn(x, s)
    assert torch.allclose(y.detach(), lsq_quantize(x.detach(), s)), "forward: expected s * round(clamp(x / s, -7, 7))"
    upstream = torch.linspace(1, 2, 101)                # a gradient that is not all ones
    y.backward(upstream)
    mask = (x.detach() / s).abs() <= 7
    assert x.grad is not None, "backward returned no gradient for x"
    assert torch.allclose(x.grad, upstream * mask), "backward: expected grad_out * mask (0 where clipped)"
    print("FakeQuantSTE: forward and backward agree with lsq_quantize. Well done.")


try:
    check_ste(FakeQuantSTE.apply)
except NotImplementedError as e:
    print(f"FakeQuantSTE is not written yet ({e}); the lesson goes on. An answer is in the collapsed cell below.")
except AssertionError as e:
    print(f"FakeQuantSTE is not right yet: {e}")

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **One answer**
#
# ```python
# class FakeQuantSTE(torch.autograd.Function):
#     @staticmethod
#     def forward(ctx, x, scale):
#         v = x / scale
#         mask = (v >= -7) & (v <= 7)
#         ctx.save_for_backward(mask)
#         return torch.round(torch.clamp(v, -7, 7)) * scale
#
#     @staticmethod
#     def backward(ctx, grad_out):
#         (mask,) = ctx.saved_tensors
#         return grad_out * mask, None
# ```

# %% [markdown]
# ## 3. The gradients of an HQ layer
#
# The forward of lesson 04: `X̂ = int(XH)` and `Ŵ = int(WH)` (per-tensor scales `s_X`, `s_W`), and
# `Y = s_X s_W · X̂ Ŵᵀ`. Read it as a chain: rotate `Z = XH`, fake-quantize `Z → s_X X̂`, multiply.
# Backward, from the output:
#
# 1. the product: `∂L/∂(s_X X̂) = ∇Y · (s_W Ŵ)` (as `MyLinear`, with the quantized W);
# 2. the quantizer, by the STE: multiply by the mask `I_X` of the values of `XH` not clipped;
# 3. the rotation `Z = XH`: `∂L/∂X = ∂L/∂Z · Hᵀ`.
#
# Together, and symmetrically for W (the paper's backward pass):
#
# $$ \nabla_X = s_W \,\big(I_X \circ \nabla_Y \hat W\big)\, H^\top, \qquad
#    \nabla_W = s_X \,\big(\nabla_Y^\top \hat X \circ I_W\big)\, H^\top. $$
#
# The expensive parts are the two GEMMs `∇Y Ŵ` and `∇Yᵀ X̂`. Their right operands are the INT4
# codes the forward already computed and saved; if `∇Y` is quantized to INT4 too, both are INT4
# GEMMs (lesson 06 does that, with bit splitting and leverage score sampling).
#
# Let us check the formulas against the library's layer. Recipe `int4_hq` runs the HQ forward and
# keeps `∇Y` in full precision, so the formulas above are exactly its backward. Its per-tensor
# scales are LSQ's (`layer.x_quantizer.scale`), which can clip: hence the masks.

# %%
x, outliers, linear, grad_y = l05.make_problem(N_TOK, D_IN, D_OUT, magnitude=20.0)
layer = Int4Linear.from_linear(linear, "int4_hq")
x_in = x.clone().requires_grad_(True)
y = layer(x_in)
y.backward(grad_y)

s_x, s_w = layer.x_quantizer.scale.detach(), layer.w_quantizer.scale.detach()
B = layer.recipe.block_size
X_hat, I_X = lsq_codes(block_hadamard(x, B), s_x)                       # int(XH) and its mask
W_hat, I_W = lsq_codes(block_hadamard(layer.weight.detach(), B), s_w)  # int(WH) and its mask
X_hat, W_hat = X_hat.float(), W_hat.float()

y_formula = s_x * s_w * (X_hat @ W_hat.T) + layer.bias.detach()
grad_x = block_hadamard(s_w * (I_X * (grad_y @ W_hat)), B)             # H^T = H
grad_w = block_hadamard(s_x * ((grad_y.T @ X_hat) * I_W), B)


def rel(a, b):
    return float((a - b).norm() / b.norm())


print(f"share of XH clipped by LSQ's scale: {100 * (1 - I_X.float().mean()):.2f}%")
print(f"Y : formula vs layer, relative difference {rel(y_formula, y.detach()):.1e}")
print(f"∇X: formula vs layer, relative difference {rel(grad_x, x_in.grad):.1e}")
print(f"∇W: formula vs layer, relative difference {rel(grad_w, layer.weight.grad):.1e}")
print("quantized ops ran:", int4lab.last_ran())

# %% [markdown]
# The line above says which implementation ran for each slot: `spec` (PyTorch), `triton` (the
# library's kernels) or `learner` (yours, once unlocked; on a CPU through the interpreter). Where
# it is the spec, the differences are 0 or at float rounding. A Triton kernel, yours or the
# library's, may sum in another order, so a code may differ where a value sits on a rounding
# boundary.
#
# ## 4. `Int4Linear` and its recipes
#
# `int4lab.layers.Int4Linear` is an `nn.Linear` (same weight, bias and initialisation) whose
# three GEMMs follow a **recipe**: which quantizer the forward uses, and which the gradient `∇Y`
# uses. One layer class runs every baseline of the course:

# %%
print(f"{'recipe':12} {'forward':9} {'grad':9}  what it is")
about = {"fp32": "no quantization: the reference",
         "int8": "INT8 per row forward, INT8 stochastic gradients",
         "int4_rtn": "INT4 per tensor, round to nearest, both ways",
         "int4_lsq_sr": "INT4 with LSQ's learned scale; stochastic INT4 gradients",
         "int4_hq": "the Hadamard quantizer; gradients in full precision",
         "int4_hq_lss": "the paper: HQ, and bit splitting + leverage score sampling for ∇Y"}
for name, r in RECIPES.items():
    print(f"{name:12} {r.forward:9} {r.grad:9}  {about.get(name, '')}")

# %% [markdown]
# `get_recipe(name)` looks one up; `Recipe(...)` makes your own (say, a bigger block:
# `Recipe("hq64", forward="int4_hq", grad="fp", block_size=64)`). `quantize_model(model, recipe)`
# swaps every `nn.Linear` of a model for an `Int4Linear` in place, copying the weights, and
# leaves the output head in full precision, as the paper does.

# %%
print(get_recipe("int4_hq_lss"))
mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64), nn.GELU(), nn.Linear(64, 10))
print(quantize_model(mlp, "int4_hq_lss"))

# %% [markdown]
# ## 5. How far from fp32? One step on inputs with outlier channels
#
# Same weights, same input (4 outlier channels of about 20× among 1024, as in lesson 04), same
# upstream gradient `∇Y`: one forward and backward per recipe, compared with `nn.Linear` in
# fp32. Four relative errors per recipe: the output `Y`, the gradients `∇X` and `∇W`, and `∇W`
# over the **non-outlier** input channels only (the weights of the normal channels: relative
# errors over a whole tensor are dominated by its largest entries, here the outlier columns).

# %%
results = l05.compare_recipes(n_tokens=N_TOK, d_in=D_IN, d_out=D_OUT, magnitude=20.0)
print(f"{'recipe':12} " + " ".join(f"{l05.ERROR_LABELS[k]:>26}" for k in l05.ERROR_LABELS))
for i, name in enumerate(results["recipes"]):
    print(f"{name:12} " + " ".join(f"{100 * results[k][i]:25.1f}%" for k in l05.ERROR_LABELS))

# %%
l05.recipe_error_figure(results, magnitude=20.0)

# %% [markdown]
# Move the outlier magnitude (1 = no outliers). Each position reruns the six layers once.

# %%
interactive_plot(lambda magnitude: l05.recipe_error_figure(magnitude=magnitude, n_tokens=N_TOK,
                                                           d_in=D_IN, d_out=D_OUT),
                 magnitude=(1.0, 100.0, 1.0, 20.0));

# %% [markdown]
# How to read it:
#
# - **int8** is within a few percent everywhere: 255 levels absorb the outliers.
# - **int4_rtn**: the outliers set the per-tensor step, the normal channels of X round to 0,
#   so `Y` loses their contribution and their weights get almost no gradient (`∇W` over the normal
#   channels near 100%: they would barely learn). `∇X` is fine: it needs only `Ŵ` (W has no
#   outliers) and there is no clipping.
# - **int4_lsq_sr**: LSQ's initial scale, `2·mean|x|/√7`, is small and **clips** the outliers:
#   the normal channels survive, the outliers are cut, and `Y` is far off. Training moves the
#   scale; the paper's LSQ run reached 37.3 on CoLA against HQ's 54.2 (lesson 04).
# - **int4_hq**: the Hadamard quantizer keeps both: the smallest INT4 errors across the board.
# - **int4_hq_lss** has the same forward, but its gradients are larger errors on one draw: bit
#   splitting and leverage score sampling keep about half of the gradient's rows and reweight
#   them. The estimate is **unbiased** (right on average over steps) at the price of variance,
#   which SGD averages out. Lesson 06 builds it and measures that trade.
#
# ## 6. Which implementation ran?
#
# Every quantized operation of `Int4Linear` goes through a slot (`int4lab.ops`), so the same
# layer runs the PyTorch spec, the library's Triton kernels, or **yours**: in the default mode
# `"auto"`, an unlocked learner kernel comes first, then the library's kernels on a GPU, then the
# spec. `int4lab.last_ran()` says what ran last for each slot, after the runs above:

# %%
int4lab.last_ran()

# %% [markdown]
# `int4lab.use(...)` picks explicitly. Here one small HQ layer runs first with the spec, then with
# the library's Triton kernels (on a CPU through the interpreter, so small, and not timed); the
# deterministic recipe `int4_hq` gives the same output either way.

# %%
torch.manual_seed(0)
small = Int4Linear(128, 64, recipe="int4_hq").to(DEV)
xs = torch.randn(16, 128, device=DEV)
outputs = {}
for mode in ("spec", "triton"):
    with int4lab.use(mode):
        x_small = xs.clone().requires_grad_(True)
        outputs[mode] = small(x_small)
        outputs[mode].sum().backward()
        print(f"use({mode!r}): ran", {k: int4lab.last_ran(k) for k in ("hadamard_quantize", "int4_matmul", "unpack_int4")})
print(f"spec vs triton: relative difference of Y {rel(outputs['triton'].detach(), outputs['spec'].detach()):.1e}")

# %% [markdown]
# Your slots so far (in this notebook's workspace; a kernel you unlocked in an earlier lesson is
# what `"auto"` runs now):

# %%
int4lab.progress();

# %% [markdown]
# ### Check your understanding
#
# 1. In `MyLinear`, what would happen if forward did not call `ctx.save_for_backward`? What does
#    the INT4 layer save instead of X and W, and why does it matter for memory?
# 2. `x = 4.0`, `s = 0.5`. What is `s·int(x)`, and what gradient does the STE pass back?
#    And for `x = 1.3`?
# 3. In `∇X = s_W (I_X ∘ ∇Y Ŵ) Hᵀ`, why is the mask applied *before* the rotation back `Hᵀ`
#    and not after?
# 4. Why is `∇X` of `int4_rtn` much better than its `∇W` on inputs with outliers?
# 5. `int4_hq_lss` has larger one-step gradient errors than `int4_hq`. Why use it at all?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. Backward would have nothing to compute the gradients from (`ctx.saved_tensors` is empty).
#    `Int4LinearFunction` saves the packed INT4 codes of `XH` and `WH` with their scales (and,
#    when a learned scale can clip, a 2-bit record per value: clipped or not, and the rounding
#    remainder LSQ's gradient reads): under a byte per value instead of 4 for fp32, and the saved
#    activations are much of the memory of training.
# 2. `4.0 / 0.5 = 8 > 7`: clipped to 7, `s·int(x) = 3.5`, STE gradient 0. `1.3 / 0.5 = 2.6`,
#    rounded to 3, `s·int(x) = 1.5`, STE gradient 1 (passed through).
# 3. Clipping happened to the values of `XH`, in the rotated space, so the mask belongs to the
#    rotated coordinates: first mask `∂L/∂(XH)` there, then map it back to X's coordinates
#    with `Hᵀ`.
# 4. `∇X = ∇Y Ŵ` uses only the weight's codes, and W has no outliers, so `Ŵ` is accurate (and
#    per-tensor max scaling does not clip, so `I_X` is all ones). `∇W = ∇Yᵀ X̂` uses X's codes,
#    in which every normal channel was rounded to 0.
# 5. Its two backward GEMMs run on INT4 (the point of the paper: all three GEMMs on 4 bits),
#    and its estimate is unbiased: the noise averages out over training steps, while a biased
#    error would accumulate. Lesson 06 measures that.

# %% [markdown]
# ## Summary
#
# - A `torch.autograd.Function` has a forward that saves what backward needs and a backward that
#   returns one gradient per input. The INT4 layer saves packed INT4 codes.
# - The straight-through estimator treats rounding as the identity in the backward pass, masked
#   where values were clipped (`I_X`, `I_W`).
# - An HQ layer's gradients are `∇X = s_W (I_X ∘ ∇Y Ŵ) Hᵀ` and `∇W = s_X (∇Yᵀ X̂ ∘ I_W) Hᵀ`,
#   reusing the forward's INT4 codes; we checked them against `Int4Linear`.
# - `Int4Linear` runs every recipe of the course; on inputs with outlier channels, per-tensor
#   INT4 loses the normal channels, LSQ clips the outliers, HQ keeps both.
# - The layer's quantized operations run through the slots: yours once unlocked, and
#   `int4lab.last_ran()` says which.
#
# **Next: lesson 06, the gradients on 4 bits.** Quantizing `∇Y` to INT4 with bit splitting, and
# leverage score sampling to spend the two INT4 GEMMs where the gradient is large: the kernels
# `bit_split` and `lss_gather`.

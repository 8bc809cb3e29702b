# %% [markdown]
# # Lesson 00 · Welcome and set-up
#
# This course builds, kernel by kernel, the method of *Training Transformers with 4-bit
# Integers* (Xi, Li, Chen, Zhu, NeurIPS 2023): every linear layer of a transformer trained with
# 4-bit integers in the forward and the backward pass. You will write the GPU kernels yourself
# in [Triton](https://triton-lang.org), check each one against a plain PyTorch definition, and
# then use your own kernels in the later lessons.
#
# You need Python and basic PyTorch. You need no Triton, no quantization and no GPU: on a
# laptop every kernel runs in Triton's interpreter.
#
# **By the end of this lesson you can**
# 1. check that your machine is ready (`int4lab.doctor()`);
# 2. explain what a *slot* is and use `unlock`, `use`, `last_ran`, `progress`, `reveal` and `bench`;
# 3. read a Triton kernel: programs, blocks, `tl.arange`, masks and pointer arithmetic;
# 4. explain why the last block needs a mask, and why kernels run in an interpreter on a CPU;
# 5. write, unlock and benchmark your first kernel, `vector_add`.

# %% [markdown]
# ## 1. Set-up
#
# `import int4lab` comes first in every lesson, before anything else that touches Triton. On a
# machine without a CUDA GPU it sets `TRITON_INTERPRET=1`, which tells Triton to run kernels on
# the CPU with NumPy. Triton reads that flag when a kernel is *defined* (decorated with
# `@triton.jit`), not when it runs, so setting it later is too late.
#
# `int4lab.doctor()` prints the versions, where kernels will run, and runs one known-answer
# kernel. If it lists a problem, it also says how to fix it.
#
# The cell also prints **which int4lab** this notebook runs: where the library and its kernels
# come from, and whether that is a *student copy* (a copy of the course without the library's
# kernels, made by `int4lab student-copy`, where the PyTorch spec stands in until you unlock your
# own). A notebook of a student copy must run that copy's own library: if it finds one installed
# elsewhere, it prints a loud WARNING and the fix (STUDENT_COPY.md in the copy says how to install it).

# %%
# %matplotlib inline
# (figures appear below the cells that make them)
import int4lab
import torch
import triton
import triton.language as tl

from int4lab import runtime
from int4lab.course import l00_welcome as l00
from int4lab.course.widgets import interactive_plot

FAST = runtime.FAST            # CI runs the lessons with INT4LAB_FAST=1: small sizes
ok = int4lab.doctor()

# Which int4lab is this? This notebook's folder is lessons/, so its course is the folder above.
import sys
from pathlib import Path
from int4lab.grading.student_copy import installed_library
mine, where = installed_library(course=Path.cwd().parent)
print("\n" + where, file=sys.stdout if mine else sys.stderr)

# %% [markdown]
# ## 2. How the exercises work: slots
#
# Each operation of the course (adding two vectors, packing INT4 values, an INT4 matrix
# product, ...) is a **slot** with up to three implementations:
#
# | implementation | what it is |
# |---|---|
# | `spec` | a few lines of plain PyTorch: obviously correct, slow, the reference for everything |
# | `triton` | the library's Triton kernel (in `kernels/`), the one you can peek at when stuck |
# | `learner` | **yours**, once it has passed the checks |
#
# The library always calls a slot through one function (here `int4lab.vector_add`), which picks
# the implementation and remembers which one ran. The tools you will use in every lesson:
#
# | call | what it does |
# |---|---|
# | `%%exercise NAME` (first line of a cell) | saves the cell to your workspace as `NAME.py` and runs it |
# | `int4lab.unlock("NAME")` | checks your `NAME` against the spec on several inputs; on a pass it becomes the active implementation, in this lesson and the next ones |
# | `int4lab.use("spec")` | choose the implementation: `"auto"` (default), `"spec"`, `"triton"` or `"learner"`; also `with int4lab.use(...):` for one block |
# | `int4lab.last_ran("NAME")` | which implementation the last call *actually* ran |
# | `int4lab.progress()` | a table of the slots: not started, unlocked or revealed |
# | `int4lab.reveal("NAME")` | stuck? prints the library's kernel (progress records it as revealed) |
# | `int4lab.bench("NAME")` | on a GPU, times your kernel against the library's and PyTorch's; on a CPU, checks correctness only |
#
# In `"auto"` mode a call runs your kernel if you unlocked it; otherwise the library's kernel on a
# GPU, and the spec on a CPU (the interpreter is far too slow to train a model with). In a student
# copy, which has no library kernels, the spec stands in for them everywhere: there
# `use("triton")` runs the spec too. Let's see it with the first slot, `vector_add`:

# %%
N = 1 << 20 if runtime.HAS_CUDA else (1000 if FAST else 4099)
torch.manual_seed(0)
x = torch.randn(N, device=runtime.DEVICE)
y = torch.randn(N, device=runtime.DEVICE)

out = int4lab.vector_add(x, y)
print("auto mode ran:      ", int4lab.last_ran("vector_add"))

with int4lab.use("triton"):                 # force the library's Triton kernel for this block
    out_triton = int4lab.vector_add(x, y)
print("use('triton') ran:  ", int4lab.last_ran("vector_add"))
print("same result:        ", torch.equal(out, out_triton))
print("what would run now: ", int4lab.which("vector_add"))

# %% [markdown]
# Your work is kept on disk, so an unlock survives a restart of the notebook:

# %%
from int4lab.exercises import workspace as store
print("your kernels are saved in", store.workspace())
int4lab.progress();


# %% [markdown]
# `int4lab.reveal("vector_add")` would print the library's kernel (a student copy has none to
# print). Try the exercise first: the progress table records a revealed slot as *revealed*, not
# *unlocked*.

# %% [markdown]
# ## 3. Triton in ten minutes
#
# A GPU runs thousands of threads at once. In CUDA you program one thread; in Triton you program
# one **program instance** that works on a whole **block** of elements at a time, and Triton
# spreads that block over the threads for you.
#
# - **The grid.** Launching `kernel[grid](args...)` with `grid = (G,)` starts `G` programs.
#   Each one runs the same code; `tl.program_id(axis=0)` tells it which one it is (`pid`).
# - **Blocks.** `tl.arange(0, BLOCK)` is the vector `[0, 1, ..., BLOCK-1]`. Program `pid`
#   handles the elements `offs = pid * BLOCK + tl.arange(0, BLOCK)`. `BLOCK` is a
#   `tl.constexpr`: a compile-time constant, and it must be a power of two.
# - **Pointer arithmetic.** A tensor arrives in the kernel as a pointer to its first element.
#   `x_ptr + offs` is a block of pointers, one per element (counted in elements, not bytes);
#   `tl.load` reads them and `tl.store` writes them. A 2-D tensor is the same memory with
#   strides: element `(i, j)` lives at `x_ptr + i * stride_0 + j * stride_1`.
# - **Masks.** `n` is rarely a multiple of `BLOCK`, so the last program's block runs past the
#   end. `mask = offs < n` switches those lanes off: `tl.load(ptrs, mask=mask, other=0)` reads
#   nothing there (and gives `other`), `tl.store(ptrs, v, mask=mask)` writes nothing there.
# - **Launching.** The grid is usually `(triton.cdiv(n, BLOCK),)`: the number of blocks that
#   cover `n`, rounded up.
#
# Here is a tiny kernel (not one of the exercises) in which every program writes its own id into
# the elements it owns:

# %%
@triton.jit
def whoami_kernel(out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)                 # which program am I?
    offs = pid * BLOCK + tl.arange(0, BLOCK)    # the element indices of my block
    mask = offs < n                             # lanes past the end do nothing
    ids = tl.zeros((BLOCK,), dtype=tl.int32) + pid
    tl.store(out_ptr + offs, ids, mask=mask)


n, BLOCK = 1000, 256
owner = torch.full((n,), -1, dtype=torch.int32, device=runtime.DEVICE)
whoami_kernel[(triton.cdiv(n, BLOCK),)](owner, n, BLOCK=BLOCK)
print("grid:", triton.cdiv(n, BLOCK), "programs")
print("elements written by each program:", torch.bincount(owner.cpu().long()).tolist())
print("matches pid = index // BLOCK:", owner.cpu().tolist() == l00.program_owners(n, BLOCK))

# %% [markdown]
# Four programs of 256 lanes make 1024 lanes for 1000 elements: the last program has 24 lanes
# past the end, and the mask switches them off. The picture below shows it; move the sliders.
# What happens when `n` is a multiple of `BLOCK`? And when `BLOCK` is not a power of two?

# %%
l00.grid_figure(n=1000, BLOCK=256)

# %%
interactive_plot(l00.grid_figure, n=(1, 5000, 1, 1000), BLOCK=(64, 1024, 64, 256));


# %% [markdown]
# ### What a missing mask does
#
# On a GPU, an unmasked store past the end of a tensor writes over whatever lies there, silently,
# and the damage shows up later, somewhere else. Triton's interpreter does not catch it either.
# `int4lab` adds a bounds guard to the interpreter, so on a CPU the same bug stops at once with
# a message. Here is the kernel above without its mask:

# %%
@triton.jit
def whoami_unmasked_kernel(out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros((BLOCK,), dtype=tl.int32) + pid)   # no mask!


if runtime.INTERPRET:
    try:
        whoami_unmasked_kernel[(triton.cdiv(n, BLOCK),)](owner, n, BLOCK=BLOCK)
        print("no complaint (the bounds guard is off on this Triton version)")
    except Exception as e:
        err = e.__cause__ or e                 # Triton wraps it in an InterpreterError
        print(f"{type(err).__name__}: {err}")
else:
    print("On a GPU this would corrupt memory silently, so we do not run it here.")


# %% [markdown]
# ### Loads with a stride
#
# Pointer arithmetic is not limited to `x_ptr + offs`: any integer expression works. This kernel
# reads every other element, `x[0], x[2], x[4], ...`, a pattern you will use in lesson 01 to
# pack two 4-bit numbers into one byte. Note that the mask is on the *output* index.

# %%
@triton.jit
def take_even_kernel(x_ptr, out_ptr, n_out, BLOCK: tl.constexpr):
    pid = tl.program_id(axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)      # output indices
    mask = offs < n_out
    v = tl.load(x_ptr + 2 * offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, v, mask=mask)


v = torch.arange(10, dtype=torch.float32, device=runtime.DEVICE)
evens = torch.empty(5, device=runtime.DEVICE)
take_even_kernel[(triton.cdiv(5, 4),)](v, evens, 5, BLOCK=4)
print(evens.tolist(), "==", v[0::2].tolist())

# %% [markdown]
# ### Why an interpreter on a CPU
#
# Triton compiles kernels for NVIDIA and AMD GPUs only. With `TRITON_INTERPRET=1` it instead
# runs each program, one after the other, as NumPy operations on whole blocks. The results are
# the same as on a GPU (that is how every test of this course runs), with three consequences:
#
# - **Correct, not fast.** An interpreter time measures Python, not the kernel. The course never
#   shows one as speed; `int4lab.bench` times kernels only on a GPU.
# - **The flag must be set before kernels are defined:** `import int4lab` first, always.
# - **Mask every load and store.** The bounds guard above catches a missing mask on the CPU; on
#   a GPU nothing would.

# %% [markdown]
# ## 4. Your first kernel: `vector_add`
#
# Write `out = x + y` for two float tensors of the same shape. The plan:
#
# - view both inputs as flat arrays of `n = x.numel()` elements (make them `.contiguous()`
#   first: the checks also pass views whose memory is not in order);
# - the kernel: one program per `BLOCK` elements; load a block of `x` and one of `y`, add, store;
#   mask everything;
# - the launcher `vector_add(x, y)`: allocate the output, launch `cdiv(n, BLOCK)` programs
#   (none when `n == 0`: a grid of zero programs is an error), return the output.
#
# Fill in the cell below and run it: `%%exercise vector_add` saves it to your workspace and runs
# it. Then run the `unlock` cell. Until you write it, the cell raises `NotImplementedError` when
# called, `unlock` says so, and the lesson goes on without it: with the library's kernel on a
# GPU, with the PyTorch spec on a CPU (and in a student copy, which has no library kernels).

# %% tags=["exercise"] int4lab={"slot": "vector_add"}
# %%exercise vector_add
import torch
import triton
import triton.language as tl


@triton.jit
def vector_add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # TODO 1: which program is this (tl.program_id along axis 0)? Compute the offsets of the
    #         BLOCK elements it owns.
    # TODO 2: a mask that is True only for offsets inside the n elements.
    # TODO 3: load a block of x and a block of y (masked; other=0.0).
    # TODO 4: store their sum into out (masked).
    pass


def vector_add(x: torch.Tensor, y: torch.Tensor, BLOCK: int = 1024) -> torch.Tensor:
    """out = x + y, for two float tensors of the same shape and dtype: check, flatten, launch one
    program per BLOCK elements."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype or not x.is_floating_point():
        raise TypeError(f"x and y must share one float dtype, got {x.dtype} and {y.dtype}")
    # TODO 1: make x and y contiguous (a transposed view's memory is not in row order, and the
    #         kernel walks both as flat arrays); allocate out = torch.empty_like(x).
    # TODO 2: n = out.numel(); when n == 0 there is nothing to launch: return out.
    # TODO 3: launch vector_add_kernel on a grid of (triton.cdiv(n, BLOCK),) programs,
    #         passing BLOCK=BLOCK; then return out.
    raise NotImplementedError("vector_add: replace this line with the code its TODOs ask for")


# %%
report = int4lab.unlock("vector_add")

# %% [markdown]
# `unlock` ran your function on several sizes (1 element, 1000, 4099: the last two are not
# multiples of any power-of-two block; 0, an empty tensor, where nothing may be launched) and on
# a transposed view whose memory is not in row order, and compared it with the spec, `x + y`.
# (A grader's hidden checks add a larger size.) Whatever happened, the next cell works: it runs
# whichever implementation is active and says which.

# %%
out = int4lab.vector_add(x, y)
print("ran:", int4lab.last_ran("vector_add"), "| correct:", torch.equal(out, x + y))

# %% [markdown]
# Now benchmark it. On a GPU, `bench` times your kernel, the library's and `torch.add` in GB/s
# (a vector add moves 3 values per element: two reads and one write, and is limited by memory
# bandwidth). On a CPU it checks correctness only and says why.

# %%
result = int4lab.bench("vector_add")

# %%
int4lab.progress();

# %% [markdown]
# ## Check your understanding
#
# 1. `n = 4099` and `BLOCK = 1024`. How many programs run, and how many lanes of the last one
#    are masked?
# 2. Why must the flag `TRITON_INTERPRET=1` be set before `@triton.jit` runs, and what does
#    `import int4lab` do about it?
# 3. You call `int4lab.vector_add` on a CPU in `"auto"` mode without having unlocked anything.
#    Which implementation runs? And after a successful unlock?
# 4. `take_even_kernel` ran with `BLOCK = 4` for 5 outputs from a 10-element `x`. Without its
#    mask, which loads and stores of program 1 would fall outside the tensors?
# 5. Your kernel passes `unlock`, then you edit the exercise cell and restart the notebook
#    without unlocking again. Which implementation runs?

# %% [markdown] tags=["solution"] jupyter={"source_hidden": true}
# **Answers**
#
# 1. `cdiv(4099, 1024) = 5` programs cover 5120 lanes, so 5120 − 4099 = 1021 lanes of the
#    last program are masked (it does real work on only 3 elements).
# 2. Triton decides how to run a kernel when it is decorated; a kernel decorated without the
#    flag expects a GPU driver and fails with "0 active drivers". `import int4lab` sets the flag
#    (on machines without a CUDA GPU) before any module that defines kernels is imported.
# 3. The spec (plain PyTorch): the interpreter would be correct but too slow to train with.
#    After a successful unlock, yours: `int4lab.last_ran("vector_add")` says `learner`.
# 4. Program 1 owns `offs = 4, 5, 6, 7`. It would load `x[8], x[10], x[12], x[14]` (the last
#    three are past the 10 elements of `x`) and store `evens[4..7]` (5, 6 and 7 are past the 5
#    outputs). With the mask only lane `offs = 4` is active. One mask on the output index covers
#    both here because `2 * offs < 10` exactly when `offs < 5`; in general, check that every
#    load's index stays inside its own array.
# 5. The library's: the progress file stores the SHA-256 of the file you unlocked, and an edited
#    file is not used until it passes `unlock` again (you get a warning saying so).

# %% [markdown]
# ## Summary
#
# - A slot has a spec, the library's kernel and yours; `unlock` checks yours against the spec,
#   `use` and `last_ran` control and report which one runs, `bench` times them on a GPU.
# - A Triton kernel is written for one program working on a block: `program_id`, `tl.arange`,
#   pointer arithmetic, and a mask on every load and store for the last, partial block.
# - On a CPU, kernels run in Triton's interpreter: same results, meaningless timings.
#
# **Next: lesson 01, INT4 numbers and packing.** What 4-bit integers can represent, how a scale
# maps real numbers onto them, how to round, and your first real kernels of the course: packing
# two INT4 values into each byte, and unpacking them.

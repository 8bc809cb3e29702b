"""The support matrix: the Triton versions and GPU architectures every kernel is built and tested for.

GPU users run the Triton that their torch build pins (torch's CUDA wheels pin one exact Triton
each), not one we choose, so the kernels must work across a range. CI checks each edge of it
without a GPU (scripts/compile_gate.py): every kernel compiles ahead of time for sm_80 and
sm_90 under the oldest and the newest Triton here, and the interpreter tests run under both.
`int4lab doctor` compares what is installed with this table.
"""
TRITON_TESTED = ("3.6.0", "3.8.0", "3.9.0")      # 3.6.0 and 3.9.0 in CI; 3.8.0 by hand
TRITON_MIN, TRITON_MAX_TESTED = "3.6.0", "3.9"

# compute capability -> (arch name, GPUs); all have INT8 tensor cores that Triton's int8 tl.dot uses
ARCHS = {
    (8, 0): ("sm_80", "A100"),
    (8, 6): ("sm_86", "RTX 3090, A10, A40"),
    (8, 9): ("sm_89", "L4, L40, RTX 4090"),
    (9, 0): ("sm_90", "H100, H200"),
}
ARCH_NAMES = tuple(name for name, _ in ARCHS.values())

# Known bad combinations and what int4lab does about each.
NOTES = (
    "Triton 3.6 with NumPy >= 2.4 crashes the interpreter on loops with runtime bounds (Triton "
    "issue 9171): int4lab patches the interpreter on import (int4lab/interpreter/compat.py).",
    "Triton 3.6's tl.dot defaults to out_dtype=float32: every int8 dot in the course says "
    "out_dtype=tl.int32.",
    "No Triton wheels for macOS or Windows: the PyTorch spec runs every lesson there.",
)


def version_tuple(v: str) -> tuple:
    """'3.6.0+git1234' -> (3, 6, 0)."""
    parts = []
    for p in v.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def triton_status(v: str) -> tuple:
    """(ok, message) for an installed Triton version."""
    t = version_tuple(v)
    if t < version_tuple(TRITON_MIN):
        return False, (f"triton {v} is older than {TRITON_MIN}, the oldest the course supports: "
                       "`pip install 'triton>=3.6'` (or a torch build that pins a newer one)")
    if t[:2] > version_tuple(TRITON_MAX_TESTED)[:2]:
        return True, (f"triton {v} is newer than the tested range ({TRITON_MIN} to "
                      f"{TRITON_MAX_TESTED}.x): it should work; report what breaks")
    return True, f"triton {v}: in the tested range ({TRITON_MIN} to {TRITON_MAX_TESTED}.x)"


def arch_status(capability: tuple) -> tuple:
    """(ok, message) for a GPU's compute capability."""
    name = f"sm_{capability[0]}{capability[1]}"
    if tuple(capability) in ARCHS:
        return True, f"{name} ({ARCHS[tuple(capability)][1]}): supported"
    if tuple(capability) < (8, 0):
        return False, (f"{name}: older than sm_80; the kernels are tested on sm_80 to sm_90 only. "
                       "Lessons run, but use the spec (`int4lab.use('spec')`) if a kernel fails")
    return True, (f"{name}: newer than the tested sm_80 to sm_90; the kernels should compile "
                  "(int8 tensor cores), but nothing was measured there")

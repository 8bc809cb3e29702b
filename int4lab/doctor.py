"""`int4lab doctor`: is this machine ready for the course? Says what to do when it is not."""
import platform
import sys

import numpy
import torch

from int4lab import runtime, support


def _version(name):
    try:
        return __import__(name).__version__
    except ImportError:
        return None


def diagnose():
    """Return (lines, problems): what was found, and what is broken with the fix for each."""
    lines, problems = [], []
    tv = _version("triton")
    lines += [f"python      {platform.python_version()} ({sys.platform}, {platform.machine()})",
              f"torch       {torch.__version__}",
              f"triton      {tv or 'not installed'}",
              f"numpy       {numpy.__version__}",
              f"device      {runtime.DEVICE}" + (f" ({torch.cuda.get_device_name()})" if runtime.HAS_CUDA else ""),
              f"interpreter {'on (TRITON_INTERPRET=1)' if runtime.INTERPRET else 'off'}",
              f"kernels run {runtime.describe()}"]
    if tv is None:
        problems.append("triton is not installed, so lessons run on the PyTorch spec only. Triton "
                        "ships wheels for Linux x86-64: `pip install triton`. On macOS or Windows "
                        "use the spec path, or a Linux machine / Colab for the kernels.")
        return lines, problems
    ok, message = support.triton_status(tv)
    lines.append(f"support     {message}")
    if not ok:
        problems.append(message + ".")
    if runtime.HAS_CUDA:
        ok, message = support.arch_status(torch.cuda.get_device_capability())
        lines.append(f"gpu arch    {message}")
        if not ok:
            problems.append(message + ".")
    if runtime.INTERPRET and support.version_tuple(tv)[:2] <= (3, 6) and \
            support.version_tuple(numpy.__version__)[:2] >= (2, 4):
        from int4lab.interpreter import compat as interpreter_compat
        lines.append("interpreter patched for triton 3.6 with numpy >= 2.4 (Triton issue 9171): "
                     + ("on" if interpreter_compat.applied else "OFF"))
        if not interpreter_compat.applied:
            problems.append(f"triton {tv} with numpy {numpy.__version__} crashes the interpreter on "
                            "loops with runtime bounds (Triton issue 9171) and int4lab could not "
                            "patch it. Fix: `pip install 'numpy<2.4'` or `pip install 'triton>=3.9'`.")
    if not runtime.HAS_CUDA and not runtime.INTERPRET:
        problems.append("no GPU and TRITON_INTERPRET is off (it was set to 0 before int4lab was "
                        "imported). Unset it, or set TRITON_INTERPRET=1, and restart.")
        return lines, problems
    from int4lab.kernels import known_answer as ka
    if runtime.INTERPRET and type(ka.known_answer_kernel).__name__ != "InterpretedFunction":
        problems.append("the Triton interpreter flag was set too late: kernels were decorated before "
                        "TRITON_INTERPRET=1 was set. Restart the Python kernel and `import int4lab` "
                        "before anything that defines Triton kernels.")
        return lines, problems
    try:
        x = torch.arange(1000, dtype=torch.float32, device=runtime.DEVICE)
        got = ka.known_answer(x)
        ok = torch.equal(got, 2 * x + 1)
        lines.append(f"known-answer kernel (2x+1 on 1000 elements): {'ok' if ok else 'WRONG ANSWER'}")
        if not ok:
            problems.append("the known-answer kernel returned a wrong result: reinstall triton "
                            "(`pip install --force-reinstall triton`) and run doctor again.")
    except Exception as e:
        msg = str(e)
        fix = ("the interpreter flag was set too late: restart and import int4lab first"
               if "active drivers" in msg else "reinstall triton and check the versions above")
        problems.append(f"the known-answer kernel failed ({type(e).__name__}: {msg[:200]}); {fix}.")
    if runtime.INTERPRET:
        from int4lab.interpreter import guard
        lines.append(f"bounds guard {'on' if guard.installed else 'off (unknown Triton internals)'}")
    return lines, problems


def doctor() -> bool:
    """Print the report; return True when everything works."""
    lines, problems = diagnose()
    print("int4lab doctor")
    for line in lines:
        print("  " + line)
    if problems:
        print("\nProblems:")
        for p in problems:
            print("  - " + p)
        return False
    print("\nAll good." + ("" if runtime.HAS_CUDA else
                           " No GPU: kernels run in Triton's interpreter (correct, not fast)."))
    return True

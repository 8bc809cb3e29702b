"""What a kernel compiles to on a GPU, shown in a lesson on a machine without one (lessons 03, 08).

`show(slot)` compiles the learner's kernel for a GPU architecture through `int4lab.inspect`
(Triton's own compiler and ptxas, no GPU needed) and prints the report; when the learner's
kernel is missing or does not compile it says why and shows the library's instead, naming which
one it shows. A failure never stops the lesson.
"""
from int4lab.perf import kernel_inspect


def _try(slot, impl, arch):
    try:
        return kernel_inspect.inspect(slot, impl=impl, arch=arch), None
    except Exception as e:  # a learner's kernel may fail in any way: report it, go on
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"


def show(slot, arch="sm_90"):
    """Print the compiled report of the learner's kernel (else the library's); return the result
    dict (None when neither compiles). The report's bound is an estimate from the compiled code."""
    result, why = _try(slot, "learner", arch)
    if result is None:
        print(f"Your {slot} kernel was not compiled ({why}).")
        result, why_lib = _try(slot, "triton", arch)
        if result is None:
            print(f"The library's {slot} kernel could not be compiled either ({why_lib}).")
            return None
        print("Showing the library's kernel instead (impl=triton).\n")
    else:
        print(f"Your kernel (impl=learner), compiled for {arch}:\n")
    print(kernel_inspect.format_report(result))
    return result

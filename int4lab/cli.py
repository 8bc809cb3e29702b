"""The `int4lab` command: doctor, train, bench, grade, student-copy, inspect.

This module imports nothing heavy: `int4lab --help`, `int4lab --version` and a mistyped command
answer without importing torch or triton (tests/test_cli.py checks it); each command imports
what it needs when it runs.
"""
import sys

COMMANDS = {
    "doctor": "check that torch, triton and the kernels work on this machine",
    "train": "train the tiny GPT / ViT under several recipes and compare (int4lab train -h)",
    "bench": "benchmark the kernels (int4lab bench -h)",
    "grade": "grade learners' notebooks or workspaces, out of process (int4lab grade -h)",
    "student-copy": "write a copy of the course without the library's kernel bodies",
    "inspect": "compile a slot's kernels for a GPU without one: registers, SASS loop, estimated "
               "bound; --layer counts a layer's launches and syncs (int4lab inspect -h)",
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: int4lab COMMAND [options]", "       int4lab --version", "", "commands:"]
    lines += [f"  {name:{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from int4lab import __version__
        print(f"int4lab {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        what = "option" if command.startswith("-") else "command"
        print(f"int4lab: unknown {what} {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "doctor":
        import argparse
        argparse.ArgumentParser(prog="int4lab doctor", description=COMMANDS["doctor"]).parse_args(rest)
        import int4lab
        return 0 if int4lab.doctor() else 1
    if command == "train":
        from int4lab.training.loop import main as train_main
        return train_main(rest)
    if command == "bench":
        from int4lab.perf.bench import main as bench_main
        return bench_main(rest)
    if command == "grade":
        from int4lab.grading.grader import main as grade_main
        return grade_main(rest)
    if command == "student-copy":
        from int4lab.grading.student_copy import main as student_main
        return student_main(rest)
    from int4lab.perf.kernel_inspect import main as inspect_main
    return inspect_main(rest)


if __name__ == "__main__":
    sys.exit(main())

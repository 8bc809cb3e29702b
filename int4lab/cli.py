"""The `int4lab` command: doctor, train, bench, grade, student-copy."""
import argparse
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "doctor": "check that torch, triton and the kernels work on this machine",
        "train": "train the tiny GPT / ViT under several recipes and compare (int4lab train -h)",
        "bench": "benchmark the kernels (int4lab bench -h)",
        "grade": "grade learners' notebooks or workspaces, out of process (int4lab grade -h)",
        "student-copy": "write a copy of the course without the library's kernel bodies",
        "inspect": "compile a slot's kernels for a GPU without one: registers, SASS loop, estimated "
                   "bound; --layer counts a layer's launches and syncs (int4lab inspect -h)",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: int4lab COMMAND [options]\n\ncommands:")
        for name, text in commands.items():
            print(f"  {name:8} {text}")
        return 0 if (not argv or argv[0] in ("-h", "--help")) else 2
    command, rest = argv[0], argv[1:]
    if command == "doctor":
        argparse.ArgumentParser(prog="int4lab doctor", description=commands["doctor"]).parse_args(rest)
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
    if command == "inspect":
        from int4lab.perf.kernel_inspect import main as inspect_main
        return inspect_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())

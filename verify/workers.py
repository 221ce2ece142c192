"""Cells computed in worker processes: ``sparsity-verify run --jobs N``.

Every cell is independent (its own seeds, from ``seed_base``, and its own
configuration), so N processes may compute N cells at once and return exactly
what one process would: the result of a cell does not depend on which process
computed it or on what ran before it there (``tests/test_runner.py`` checks that
``--jobs 2`` writes the same cell results as ``--jobs 1``).

Why processes: compilation and Python dispatch use one core, so on a machine
with many cores several cells at once may keep them busy. Measured on 2 cores it
did not pay (see :func:`default_jobs`), so one job is the default. On an
accelerator a second process would compete for the one device (and its memory),
so ``auto`` means one job there.

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

    Not ``auto``: on 2 CPU cores the quick preset took 527 s with 2 jobs against
    475 s with 1 (both at commit ec2f4ad): much of a cell is XLA's compute, which
    already uses every core, and each worker compiles the programs its cells
    share. The test suite sets the variable to 1 as well: its patches of suite
    and library functions live in the test process, which workers never see."""
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


def compute(tasks: list[tuple[int, str, dict]], jobs: int,
            options: Optional[dict] = None) -> Iterator[tuple[int, dict, float]]:
    """Run ``(index, suite name, cell)`` tasks in ``jobs`` worker processes; yield
    ``(index, result, seconds)`` as each cell finishes (not in task order).

    A cell that raises stops the pool: the cells not yet started are cancelled,
    the ones already running finish and are yielded (so the caller saves them),
    then the first exception is raised here."""
    context = multiprocessing.get_context("spawn")
    x64 = bool(jax.config.jax_enable_x64)
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_initialise,
            initargs=(x64, compilation_cache.current_dir(), dict(options or {}))) as pool:
        futures = {pool.submit(_run_cell, name, cell): index for index, name, cell in tasks}
        error: Optional[BaseException] = None
        try:
            for future in concurrent.futures.as_completed(futures):
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:
                        error = future.exception()
                        for other in futures:
                            other.cancel()
                    continue
                result, seconds = future.result()
                yield futures[future], result, seconds
        except BaseException:  # Ctrl-C, or the caller stopped: start nothing new
            for future in futures:
                future.cancel()
            raise
        if error is not None:
            raise error

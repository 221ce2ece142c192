"""Throughput benchmark of the per-row pipeline: ``python -m verify.bench``.

One run measures, on the default JAX backend, for each n (default 1024, 4096,
16384, 65536; d = 64; float32):

* the pipeline engine (``st.stream_rows`` when the package has it, else
  ``st.evaluate_rows``) on a block of query rows against n keys with values:
  median wall time after a compile call, rows/s and scores/s;
* the bare XLA score matmul ``jax.jit(lambda q, k: q @ k.T)`` of the same shape
  (the roofline: the pipeline computes these scores and more);
* the NumPy reference (:mod:`verify.numpy_reference`: materialised scores,
  argpartition) on the same inputs, and a cross-check of the engine against it
  (in the benchmark's dtype, and in float64 on a few rows, where they must agree);

and, each in a fresh subprocess so that its peak resident memory is its own:

* all n rows of n = 65536 through the engine (time, rows/s, peak RSS; on a GPU
  also the device's peak bytes in use);
* n = 2^20 with 256 sampled query rows per seed: drawing the inputs, projection
  and the engine, timed per seed.

Targets (issue text) are judged by :func:`evaluate_targets` from ratios taken
in the same run. Writes ``OUT/bench.json`` and regenerates ``docs/benchmarks.md``.
Exit status 0 when the run completed (targets not met are reported, not an
error), 1 when the float64 cross-check found a disagreement, 2 on bad arguments.

Modules: :mod:`~verify.bench.targets` (the issue's targets, peak FLOP/s),
:mod:`~verify.bench.measure` (inputs, timing, cross-checks, subprocess runs),
:mod:`~verify.bench.machine`, :mod:`~verify.bench.render` (Markdown) and
:mod:`~verify.bench.command` (options, the run, the files it writes).
"""

from verify.bench.command import (DEFAULT_DOCS, DESCRIPTION, FULL, QUICK, SCHEMA, config_from_args,
                                  main, run)
from verify.bench.machine import cpu_model, loadavg, machine_info
from verify.bench.measure import (REPO, compare_statistics, draw_qkv, measure_profile,
                                  measure_size, resolve_engine, run_child)
from verify.bench.render import (profile_table, render_markdown, selection_table, size_table,
                                 targets_table)
from verify.bench.targets import (ISSUE_MEMORY_N, ISSUE_SAMPLE_N, PEAK_FLOPS,
                                  TARGET_FLOAT64_SELECTION_FRACTION, TARGET_MATMUL_FACTOR_CPU,
                                  TARGET_MATMUL_FACTOR_GPU, TARGET_MATMUL_MIN_N_CPU,
                                  TARGET_NUMPY_SPEED_RATIO, TARGET_PEAK_BYTES,
                                  TARGET_SAMPLE_SECONDS, evaluate_targets, peak_flops)

__all__ = [
    "DEFAULT_DOCS", "DESCRIPTION", "FULL", "QUICK", "SCHEMA", "config_from_args", "main", "run",
    "cpu_model", "loadavg", "machine_info",
    "REPO", "compare_statistics", "draw_qkv", "measure_profile", "measure_size", "resolve_engine",
    "run_child",
    "profile_table", "render_markdown", "selection_table", "size_table", "targets_table",
    "ISSUE_MEMORY_N", "ISSUE_SAMPLE_N", "PEAK_FLOPS", "TARGET_FLOAT64_SELECTION_FRACTION",
    "TARGET_MATMUL_FACTOR_CPU", "TARGET_MATMUL_FACTOR_GPU",
    "TARGET_MATMUL_MIN_N_CPU", "TARGET_NUMPY_SPEED_RATIO", "TARGET_PEAK_BYTES",
    "TARGET_SAMPLE_SECONDS", "evaluate_targets", "peak_flops",
]

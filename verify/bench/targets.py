"""Targets of the issue and the peak FLOP/s of known GPUs (pure: tested on
synthetic numbers): :func:`evaluate_targets` judges a run's measured numbers."""

from __future__ import annotations

from typing import Optional

# Targets of the issues (the speed targets of issue 16).
TARGET_NUMPY_SPEED_RATIO = 1.5      # engine speed / NumPy speed >= this, at every n (CPU)
TARGET_MATMUL_FACTOR_CPU = 4.0      # engine time / matmul time <= this, for n >= ...
TARGET_MATMUL_MIN_N_CPU = 16384     # ... this on CPU
TARGET_MATMUL_FACTOR_GPU = 3.0      # ... and <= this at every n on a GPU
# float64 top-k through selection.top_k at least this fraction of float32
# lax.top_k's throughput on the same rows: float64 rows should cost at most
# twice float32 ones, not the ~30x of XLA's float64 sort fallback.
TARGET_FLOAT64_SELECTION_FRACTION = 0.5
TARGET_PEAK_BYTES = 4e9             # all rows of n = 65536: peak memory < 4 GB
TARGET_SAMPLE_SECONDS = 60.0        # n = 2^20, 256 sampled rows: < 60 s per seed
ISSUE_MEMORY_N = 65536
ISSUE_SAMPLE_N = 2**20

# Dense (no structured sparsity) peak FLOP/s from NVIDIA's datasheets, keyed by
# a substring of jax's device_kind. "tf32" is the tensor-core rate that XLA uses
# for float32 matmuls at JAX's default precision on these GPUs.
PEAK_FLOPS = {
    "H200 NVL": {"float32": 60e12, "tf32": 417.5e12, "float64": 60e12},
    "H200": {"float32": 67e12, "tf32": 494.7e12, "float64": 67e12},
    "H100 NVL": {"float32": 60e12, "tf32": 417.5e12, "float64": 60e12},
    "H100 PCIe": {"float32": 51e12, "tf32": 378e12, "float64": 51e12},
    "H100": {"float32": 67e12, "tf32": 494.7e12, "float64": 67e12},  # SXM (HBM3)
}


def peak_flops(device_kind: str) -> Optional[dict]:
    """Known peak FLOP/s of a GPU by its jax ``device_kind`` (None if unknown)."""
    kind = device_kind.lower()
    for name, peaks in PEAK_FLOPS.items():  # most specific names first
        if all(part.lower() in kind for part in name.split()):
            return {"name": name, **peaks}
    return None


def _status(ok: Optional[bool]) -> str:
    return "NOT MEASURED" if ok is None else ("MET" if ok else "NOT MET")


def evaluate_targets(per_n: list, memory: Optional[dict] = None, sampled: Optional[dict] = None,
                     backend: str = "cpu", selection: Optional[list] = None) -> list:
    """Pass/fail of the issues' targets from measured numbers.

    Args:
      per_n: one dict per engine and n: ``n``, ``engine`` (a label, default
        ``pipeline``), ``pipeline_s`` (the engine's time on the timed rows),
        ``matmul_s`` (bare score matmul, same shape) and ``numpy_s`` (NumPy
        reference, same rows; None if not measured).
      memory: ``n``, ``rows``, ``peak_bytes`` (None if the run failed) of the
        all-rows run.
      sampled: ``n``, ``rows``, ``seconds_per_seed`` (None if it failed).
      backend: ``"cpu"`` or a GPU backend.
      selection: one dict per n: ``n``, ``float64_selection_per_s`` and
        ``float32_top_k_per_s`` (scores per second of ``selection.top_k`` on
        float64 rows and of ``lax.top_k`` on the same rows in float32).

    Returns:
      A list of dicts ``id``, ``target``, ``measured``, ``threshold``, ``status``
      (MET / NOT MET / NOT MEASURED). On CPU: each engine at least 1.5x NumPy's
      speed at every n and within 4x of the matmul for n >= 16384; float64
      selection at least half float32 top-k's throughput; peak memory < 4 GB;
      sampled rows < 60 s per seed. On a GPU: within 3x of the matmul at every n
      (the other numbers are reported, not judged).
    """
    out = []
    cpu = backend == "cpu"
    factor_limit = TARGET_MATMUL_FACTOR_CPU if cpu else TARGET_MATMUL_FACTOR_GPU
    for row in per_n:
        n = int(row["n"])
        engine = row.get("engine", "pipeline")
        prefix = "" if engine == "pipeline" else f"{engine}-"
        t_pipe, t_mm, t_np = row.get("pipeline_s"), row.get("matmul_s"), row.get("numpy_s")
        if cpu:
            ratio = None if not (t_pipe and t_np) else t_np / t_pipe
            out.append(dict(
                id=f"{prefix}numpy-speed-n{n}", target=f"{engine} speed / NumPy speed at n={n}",
                measured=ratio, threshold=f">= {TARGET_NUMPY_SPEED_RATIO:g}",
                status=_status(None if ratio is None else ratio >= TARGET_NUMPY_SPEED_RATIO)))
        if not cpu or n >= TARGET_MATMUL_MIN_N_CPU:
            factor = None if not (t_pipe and t_mm) else t_pipe / t_mm
            out.append(dict(
                id=f"{prefix}matmul-factor-n{n}", target=f"{engine} time / score-matmul time at n={n}",
                measured=factor, threshold=f"<= {factor_limit:g}",
                status=_status(None if factor is None else factor <= factor_limit)))
    if cpu:
        for row in selection or []:
            f64, f32 = row.get("float64_selection_per_s"), row.get("float32_top_k_per_s")
            fraction = None if not (f64 and f32) else f64 / f32
            out.append(dict(
                id=f"float64-selection-n{row['n']}",
                target=f"float64 top-k (selection.top_k) / float32 lax.top_k throughput at n={row['n']}",
                measured=fraction, threshold=f">= {TARGET_FLOAT64_SELECTION_FRACTION:g}",
                status=_status(None if fraction is None
                               else fraction >= TARGET_FLOAT64_SELECTION_FRACTION)))
    if cpu and memory is not None:
        peak = memory.get("peak_bytes")
        out.append(dict(
            id="peak-memory", target=f"peak memory, all {memory['rows']} rows of n={memory['n']}",
            measured=peak, threshold=f"< {TARGET_PEAK_BYTES / 1e9:g} GB",
            status=_status(None if peak is None else peak < TARGET_PEAK_BYTES)))
    if cpu and sampled is not None:
        sec = sampled.get("seconds_per_seed")
        out.append(dict(
            id="sampled-rows", target=f"n={sampled['n']} with {sampled['rows']} sampled rows, "
            "time per seed", measured=sec, threshold=f"< {TARGET_SAMPLE_SECONDS:g} s",
            status=_status(None if sec is None else sec < TARGET_SAMPLE_SECONDS)))
    return out

"""Inputs, engines and timing of the benchmark, the cross-check against the
NumPy reference, and the subprocess runs that measure their own peak memory."""

from __future__ import annotations

import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Inputs, engines, timing
# --------------------------------------------------------------------------

def resolve_engine(name: str = "auto"):
    """The engine under test: ``stream_rows`` when the package has it, else
    ``evaluate_rows`` (``name`` "auto"), or the named function of the package."""
    import sparsity_theory as st
    if name == "auto":
        name = "stream_rows" if hasattr(st, "stream_rows") else "evaluate_rows"
    fn = getattr(st, name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"sparsity_theory has no engine {name!r}.")
    return name, fn


def _sample_inputs_has_rows() -> bool:
    import sparsity_theory as st
    try:
        return "rows" in inspect.signature(st.sample_inputs).parameters
    except (TypeError, ValueError):
        return False


_DRAW_CACHE: dict = {}


def _drawer(n: int, d: int, rows: int, dtype: str):
    """A jitted ``key, weights -> (q, k, v)``: Gaussian inputs in cross mode
    (keys and values from an independent Y), only ``rows`` query rows kept
    (drawn directly when ``sample_inputs`` takes ``rows``, else sliced)."""
    import jax
    import sparsity_theory as st
    cache_key = (n, d, rows, dtype)
    if cache_key not in _DRAW_CACHE:
        model = st.Gaussian(1.0)
        with_rows = _sample_inputs_has_rows() and rows < n

        def draw(key, weights):
            if with_rows:
                inp = st.sample_inputs(key, n, d, model, "cross", dtype, rows=rows)
            else:
                inp = st.sample_inputs(key, n, d, model, "cross", dtype)
                inp = st.AttentionInputs(inp.x[:rows], inp.y)
            return st.project(inp, weights)

        _DRAW_CACHE[cache_key] = jax.jit(draw)
    return _DRAW_CACHE[cache_key]


def _weights(d: int, dtype: str, seed: int = 0):
    import jax
    import sparsity_theory as st
    return st.gaussian_weights(jax.random.fold_in(jax.random.PRNGKey(seed), 0), d, dtype=dtype)


def draw_qkv(n: int, d: int, rows: int, dtype: str, seed: int = 0, weights=None):
    """Query rows (rows, d), keys (n, d), values (n, d) of one seed."""
    import jax
    weights = _weights(d, dtype, seed) if weights is None else weights
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return jax.block_until_ready(_drawer(n, d, rows, dtype)(key, weights))


def _timed(fn, repeats: int) -> list:
    import jax
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def compare_statistics(engine_stats, ref, max_window: int) -> dict:
    """Engine output against the NumPy reference: per field the largest absolute
    and relative (to max(1, |ref|)) difference where both are finite and the
    number of entries finite in one only; counts: entries that differ. The
    engine's certified window is censored at max_window + 1 first."""
    import numpy as np
    out = {}
    for name in ref._fields:
        a, b = getattr(engine_stats, name), getattr(ref, name)
        if a is None or b is None:
            continue
        a = np.asarray(a)
        b = np.asarray(b)
        if name in ("num_small", "certified_window"):
            if name == "certified_window":
                a = np.minimum(a, max_window + 1)
            diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
            out[name] = {"mismatches": int(np.count_nonzero(diff)),
                         "max_abs_diff": int(diff.max(initial=0)), "entries": int(diff.size)}
            continue
        a = a.astype(np.float64)
        b = b.astype(np.float64)
        fa, fb = np.isfinite(a), np.isfinite(b)
        both = fa & fb
        same_inf = (~fa & ~fb) & (a == b)
        diff = np.abs(a[both] - b[both])
        out[name] = {
            "max_abs_diff": float(diff.max(initial=0.0)),
            "max_rel_diff": float((diff / np.maximum(1.0, np.abs(b[both]))).max(initial=0.0)),
            "finite_mismatches": int(np.count_nonzero(~both & ~same_inf)),
        }
    return out


def _agrees(cmp: dict, rtol: float) -> bool:
    for name, c in cmp.items():
        if "mismatches" in c:
            if c["mismatches"]:
                return False
        elif c["max_rel_diff"] > rtol or c["finite_mismatches"]:
            return False
    return True


def measure_size(n: int, cfg: dict, engine_name: str, engine) -> dict:
    """Pipeline, matmul and NumPy timings at one n, and the cross-checks; when the
    engine is the streamed one, the dense engine (``evaluate_rows``) side by side
    on the same rows, with its own float64 cross-check."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from verify.numpy_reference import reference_rows

    d, dtype = cfg["d"], cfg["dtype"]
    rows = min(n, max(cfg["rows"], -(-cfg["min_scores"] // n)))
    windows = tuple(k for k in cfg["windows"] if k <= n)
    eps, scale, repeats = cfg["eps"], cfg["scale"], cfg["repeats"]
    q, k, v = draw_qkv(n, d, rows, dtype, seed=n)

    def pipeline():
        return engine(q, k, v, windows=windows, eps=eps, scale=scale)

    matmul = jax.jit(lambda a, b: a @ b.T)
    qn, kn, vn = (np.asarray(a) for a in (q, k, v))

    def numpy_ref():
        return reference_rows(qn, kn, vn, windows=windows, eps=eps, scale=scale)

    import sparsity_theory as st
    dense_engine = st.evaluate_rows if engine_name == "stream_rows" else None

    def dense():
        return dense_engine(q, k, v, windows=windows, eps=eps, scale=scale)

    log(f"n={n}: {rows} rows, compiling {engine_name}")
    t0 = time.perf_counter()
    stats = jax.block_until_ready(pipeline())
    first = time.perf_counter() - t0
    jax.block_until_ready(matmul(q, k))
    dense_stats = None if dense_engine is None else jax.block_until_ready(dense())
    ref = numpy_ref()  # warm-up (page faults, BLAS threads)
    log(f"n={n}: timing pipeline, matmul, NumPy reference"
        + ("" if dense_engine is None else " and the dense engine") + ", interleaved")
    # Interleaved so that a change in the machine's other load hits all of them.
    t_pipe, t_mm, t_np, t_dense = [], [], [], []
    for _ in range(repeats):
        t_pipe += _timed(pipeline, 1)
        t_mm += _timed(lambda: matmul(q, k), 3)
        t_np += _timed(numpy_ref, 1)
        if dense_engine is not None:
            t_dense += _timed(dense, 1)

    profile = measure_profile(q, k, windows, eps, scale, repeats, engine)
    check = compare_statistics(stats, ref, max(windows))
    # float64 on a few rows: the engine and the reference must agree.
    m64 = min(rows, cfg["check_rows"])
    q64, k64, v64 = (jnp.asarray(a, jnp.float64) for a in (q[:m64], k, v))
    stats64 = jax.block_until_ready(engine(q64, k64, v64, windows=windows, eps=eps, scale=scale))
    ref64 = reference_rows(np.asarray(q64), np.asarray(k64), np.asarray(v64), windows=windows,
                           eps=eps, scale=scale)
    check64 = compare_statistics(stats64, ref64, max(windows))
    dense_part = None
    if dense_engine is not None:
        med_dense = statistics.median(t_dense)
        dense64 = compare_statistics(jax.block_until_ready(
            dense_engine(q64, k64, v64, windows=windows, eps=eps, scale=scale)), ref64, max(windows))
        dense_check = compare_statistics(dense_stats, ref, max(windows))
        dense_part = dict(
            engine="evaluate_rows", median_s=med_dense, times_s=t_dense, min_s=min(t_dense),
            profile=measure_dense_profile(q, k, v, windows, eps, scale, repeats),
            rows_per_s=rows / med_dense, scores_per_s=rows * n / med_dense,
            speed_over_numpy=statistics.median(t_np) / med_dense,
            time_over_matmul=med_dense / statistics.median(t_mm),
            check=dict(max_abs_diff_log_tail=dense_check["log_tail_mass"]["max_abs_diff"],
                       float64_agree=_agrees(dense64, 1e-9), float64_fields=dense64))

    med_pipe, med_mm, med_np = (statistics.median(t) for t in (t_pipe, t_mm, t_np))
    flops = 2.0 * rows * n * d
    result = dict(
        n=n, rows=rows, d=d, windows=list(windows),
        pipeline=dict(median_s=med_pipe, times_s=t_pipe, min_s=min(t_pipe), first_call_s=first,
                      rows_per_s=rows / med_pipe, scores_per_s=rows * n / med_pipe,
                      score_gflops=flops / med_pipe / 1e9),
        matmul=dict(median_s=med_mm, times_s=t_mm, min_s=min(t_mm), scores_per_s=rows * n / med_mm,
                    gflops=flops / med_mm / 1e9),
        numpy=dict(median_s=med_np, times_s=t_np, min_s=min(t_np), rows_per_s=rows / med_np,
                   scores_per_s=rows * n / med_np),
        dense=dense_part,
        profile={name: dict(median_s=t, scores_per_s=rows * n / t) for name, t in profile.items()},
        ratios=dict(pipeline_over_numpy_speed=med_np / med_pipe,
                    matmul_time_over_pipeline_time=med_mm / med_pipe,
                    pipeline_time_over_matmul_time=med_pipe / med_mm),
        check=dict(
            dtype=dtype, rows=rows, fields=check,
            max_abs_diff_log_tail=check["log_tail_mass"]["max_abs_diff"],
            counts_equal=check["num_small"]["mismatches"] == 0,
            float64=dict(rows=m64, fields=check64, rtol=1e-9, agree=_agrees(check64, 1e-9),
                         max_rel_diff_log_tail=check64["log_tail_mass"]["max_rel_diff"]),
        ),
    )
    log(f"n={n}: pipeline {med_pipe * 1e3:.1f} ms ({rows / med_pipe:,.0f} rows/s), matmul "
         f"{med_mm * 1e3:.2f} ms, NumPy {med_np * 1e3:.1f} ms"
         + ("" if dense_part is None else f", dense {dense_part['median_s'] * 1e3:.1f} ms")
         + f"; float64 check {'agrees' if result['check']['float64']['agree'] else 'DISAGREES'}")
    return result


def measure_selection(n: int, window: int, repeats: int, rows: int = 64) -> dict:
    """Scores per second of the top-``window`` selection on (rows, n) Gaussian
    scores: ``lax.top_k`` in float32, ``lax.top_k`` in float64 (XLA's CPU sort
    fallback) and ``selection.top_k`` in float64 (float32 preselection, exact
    float64 finish), whose indices must equal ``lax.top_k``'s (checked here)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from sparsity_theory import selection

    x64 = jax.random.normal(jax.random.PRNGKey(n), (rows, n), jnp.float64)
    x32 = x64.astype(jnp.float32)
    lax_top_k = jax.jit(lambda a: lax.top_k(a, window))
    ours = jax.jit(lambda a: selection.top_k(a, window))
    same = bool(np.array_equal(np.asarray(ours(x64)[1]), np.asarray(lax_top_k(x64)[1])))
    jax.block_until_ready(lax_top_k(x32))
    rate = {}
    for name, fn, x in (("float32_top_k", lax_top_k, x32), ("float64_top_k", lax_top_k, x64),
                        ("float64_selection", ours, x64)):
        rate[f"{name}_per_s"] = rows * n / statistics.median(_timed(lambda: fn(x), max(repeats, 3)))
    return dict(n=n, rows=rows, window=window, float64_selection_equals_lax_top_k=same, **rate)


def measure_profile(q, k, windows, eps, scale, repeats: int, engine) -> dict:
    """Where the pipeline's time goes, as median seconds for the same rows:

    * ``light``: the engine with window 1, the largest eps and no values (scores,
      normaliser, a top-1 merge, no second counting pass in practice);
    * ``no_values``: the full windows and eps without values (no output error);
    * ``top_k``: ``lax.top_k`` alone on blocks of 64 rows x (4096 keys + K),
      scaled to the same number of scores: the selection primitive's own cost
      (the streamed merge now pays it on fewer entries: long float32 blocks go
      through the two-stage selection, see ``sparsity_theory.streaming``).
    """
    import jax
    from jax import lax

    rows, n = q.shape[0], k.shape[0]
    window = max(windows)
    width = min(n, 4096) + window
    block = jax.random.normal(jax.random.PRNGKey(0), (64, width), q.dtype)
    top_k = jax.jit(lambda a: lax.top_k(a, window + 1))
    jax.block_until_ready(top_k(block))
    scale_to_rows = (rows * n) / (64 * width)
    light = lambda: engine(q, k, None, windows=(1,), eps=(max(eps),), scale=scale)  # noqa: E731
    no_values = lambda: engine(q, k, None, windows=windows, eps=eps, scale=scale)  # noqa: E731
    for f in (light, no_values):
        jax.block_until_ready(f())
    return {
        "light": statistics.median(_timed(light, repeats)),
        "no_values": statistics.median(_timed(no_values, repeats)),
        "top_k": statistics.median(_timed(lambda: top_k(block), max(repeats, 5))) * scale_to_rows,
    }


def measure_dense_profile(q, k, v, windows, eps, scale, repeats: int) -> dict:
    """Where the dense engine's time goes, as median seconds for the same rows.
    Each part runs block by block over the score matrix ``scale * q k^T``
    (held whole), as ``evaluate_rows`` does (its default rows per block),
    through the public function whose code the engine runs:

    * ``scores``: the score matmul with its scale (all rows at once);
    * ``certified_window``: the bisection for the smallest window with tail
      mass <= eps, at every eps (``st.certified_window``);
    * ``num_small``: the count of entries <= eps (``st.num_small_entries``,
      in the engine's chunks of rows);
    * ``errors``: top-K, tail masses and the l1/l2/linf/output errors at every
      window (``st.sparse_attention_errors`` with the values).
    """
    import jax

    import sparsity_theory as st
    from sparsity_theory.evaluate import map_row_blocks
    from sparsity_theory.sparsity import over_rows

    block = inspect.signature(st.evaluate_rows).parameters["block_size"].default

    def blocked(part):
        return jax.jit(lambda u: map_row_blocks(part, u, min(block, u.shape[0])))

    scores = jax.jit(lambda a, b: scale * (a @ b.T))
    u = jax.block_until_ready(scores(q, k))
    certified = blocked(lambda b: st.certified_window(b, eps))
    # The engine counts in over_rows' chunks of rows, beside the bisection.
    num_small = blocked(lambda b: over_rows(lambda r: st.num_small_entries(r, eps), b))
    errors = blocked(lambda b: st.sparse_attention_errors(b, windows, v))
    parts = {
        "scores": lambda: scores(q, k),
        "certified_window": lambda: certified(u),
        "num_small": lambda: num_small(u),
        "errors": lambda: errors(u),
    }
    out = {}
    for name, fn in parts.items():
        jax.block_until_ready(fn())
        out[name] = statistics.median(_timed(fn, repeats))
    return out


# --------------------------------------------------------------------------
# Subprocess runs (peak memory of their own)
# --------------------------------------------------------------------------

def _self_peak_bytes() -> int:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _children_peak_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _device_peak_bytes() -> Optional[int]:
    import jax
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return None
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # not every backend implements it
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def child(spec: dict) -> dict:
    """Body of a subprocess run (``--child JSON``)."""
    import jax

    engine_name, engine = resolve_engine(spec["engine"])
    n, d, rows, dtype = spec["n"], spec["d"], spec["rows"], spec["dtype"]
    windows, eps, scale = tuple(spec["windows"]), tuple(spec["eps"]), spec["scale"]
    out = dict(task=spec["task"], engine=engine_name, n=n, d=d, rows=rows,
               backend=jax.default_backend(), sample_inputs_rows=_sample_inputs_has_rows())
    if spec["task"] == "all_rows":
        q, k, v = draw_qkv(n, d, rows, dtype, seed=n)
        out["rss_after_inputs_bytes"] = _self_peak_bytes()
        log(f"all rows: n={n}, {rows} rows through {engine_name} (first call includes compiling)")
        t0 = time.perf_counter()
        jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
        out["cold_s"] = time.perf_counter() - t0
        log(f"all rows: cold call {out['cold_s']:.1f} s")
        if out["cold_s"] < spec["warm_repeat_below"]:
            t0 = time.perf_counter()
            jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
            out["warm_s"] = time.perf_counter() - t0
            log(f"all rows: warm call {out['warm_s']:.1f} s")
        t = out.get("warm_s", out["cold_s"])
        out.update(seconds=t, seconds_includes_compile="warm_s" not in out, rows_per_s=rows / t,
                   scores_per_s=rows * n / t)
    elif spec["task"] == "sampled":
        weights = _weights(d, dtype, seed=n)
        times = []
        for seed in range(spec["seeds"]):
            t0 = time.perf_counter()
            q, k, v = _drawer(n, d, rows, dtype)(
                jax.random.fold_in(jax.random.PRNGKey(n), 1 + seed), weights)
            jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
            times.append(time.perf_counter() - t0)
            log(f"sampled rows: n={n}, seed {seed}: {times[-1]:.1f} s"
                 + (" (includes compiling)" if seed == 0 else ""))
        warm = times[1:]
        out.update(seed_times_s=times, cold_s=times[0], warm_max_s=max(warm) if warm else None,
                   seconds_per_seed=max(warm) if warm else times[0],
                   seconds_includes_compile=not warm)
    else:
        raise ValueError(f"unknown child task {spec['task']!r}")
    out["peak_rss_bytes"] = _self_peak_bytes()
    out["device_peak_bytes"] = _device_peak_bytes()
    return out


MARK = "BENCH-CHILD-RESULT "


def run_child(spec: dict, timeout: float) -> dict:
    """Run :func:`child` in a fresh interpreter; its own peak RSS comes back in
    its result, and the parent's ``RUSAGE_CHILDREN`` maximum is recorded too."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "verify.bench", "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=None,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout:g} s",
                    wall_s=time.perf_counter() - t0,
                    rusage_children_maxrss_bytes=_children_peak_bytes())
    wall = time.perf_counter() - t0
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
    if proc.returncode != 0 or result is None:
        return dict(ok=False, error=f"exit status {proc.returncode}", wall_s=wall,
                    rusage_children_maxrss_bytes=_children_peak_bytes())
    result.update(ok=True, wall_s=wall, rusage_children_maxrss_bytes=_children_peak_bytes())
    return result


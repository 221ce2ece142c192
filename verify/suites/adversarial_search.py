"""The search machinery of suite ``adversarial`` (the method is described in
``verify.suites.adversarial``'s docstring).

Deterministic part: :class:`DeterministicObjective` (the smooth maximum of the
log-ratios, differentiable), :func:`exact_log_ratios` (the reported ratios, from
the library in float64), the starting points and the projection. Probabilistic
part: the library's bounds as functions of sigma (:func:`bound_functions`) and
their affine coefficients (:func:`affine_bounds`), :class:`ProbabilisticObjective`
(the smoothed failure rate), :func:`probabilistic_search`, and the re-check on
fresh seeds (:func:`recheck`, :func:`recheck_keys`, :func:`describe_weights`).
The claims and constants shared with the suite and its analysis live here.
This module never imports the suite module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, error_bounds
from sparsity_theory.inputs import drawn_flat
from verify import adversary
from verify.rules import rule
from verify.claims import TOLERANCE  # a ratio above 1 + 1e-9 is a violation (rounding slack)
from verify.sampling import trial_keys

WRONG_FACTOR = rule("adversarial", "wrong_factor", 0.6, "planted output bound at 0.6 x the real one: the "
                    "search must break it (CAUGHT)")

DETERMINISTIC_CLAIMS = {
    "D4": "adversarial X, W, V: tau(k) <= 1 - k/n",
    "D5-lower": "adversarial X, W, V: (n-k)/(n-k + k r) <= tau(k), r = exp(max u - min u)",
    "D6-lower": "adversarial X, W, V: tau sqrt(n / (k (n-k))) <= ||s - s^||_2",
    "D6-upper": "adversarial X, W, V: ||s - s^||_2 <= r sqrt((n-k) / (n k))",
    "output-upper": "adversarial X, W, V: ||(s - s^)^T V||_2 <= min(2 tau_up max_j ||v_j - vbar||, "
                    "l2_up ||V - 1 vbar^T||_2)",
    "output-wrong": f"planted wrong bound: {WRONG_FACTOR} x the output bound (the search must break it)",
}
SEARCHED = ("D4", "D5-lower", "D6-lower", "D6-upper", "output-upper")

PROBABILISTIC_CLAIMS = {
    "L4.2-P1": "adversarial W: P(max_j |u_0j - mu_0| > sigma sqrt(2 ln(2n/delta))) <= delta",
    "T4.3": "adversarial W: P(k-th smallest s_0j > exp(t + eta)/n) <= delta, k = n/2, binomial t",
    "T5.1-max": "adversarial W: P(max_j s_0j > exp(sigma sqrt(2 ln(n/delta_1)) + eta)/n) <= delta",
    "T6.1": "adversarial W: P(||s_0 - s^_0||_2 > e^rho sqrt((n-k)/(n k))) <= delta, k = n/16",
    "L4.2-P3-wrong": "planted wrong bound: P(log sum_j exp(u_0j) < ln n + mu_0 + sigma^2/4 - eta) "
                     "<= delta (must be caught at the adversarial W)",
}
PROBABILISTIC_TARGETS = tuple(PROBABILISTIC_CLAIMS)

# Rademacher and Uniform inputs: the direction of W matters. Gaussian input is
# rotation invariant (only W's singular values matter): a control.
MODELS = {"rademacher": st.Rademacher(1.0), "uniform": st.Uniform(1.0),
          "gaussian": st.Gaussian(1.0)}


# --- deterministic part --------------------------------------------------------------


def _log_ratios_from_errors(log_tau, log_l2, log_out, spread, values, n: int,
                            windows: tuple[int, ...]) -> dict[str, Any]:
    """``log(quantity / bound)`` (lower bounds: ``log(bound / quantity)``) per row
    and window, shape (n, len(windows)), for every searched target; the bounds
    come from ``sparsity_theory.error_bounds`` (traced or concrete alike)."""
    per_window = [error_bounds.deterministic_error_bounds(spread, n, k) for k in windows]
    b = error_bounds.ErrorBounds(*(jnp.stack(f, axis=-1) for f in zip(*per_window)))
    # One call for all windows: the values' radius and spectral norm (an SVD,
    # costly to differentiate and to compile) are computed once.
    out_bound = error_bounds.log_output_error_upper_bound(b.log_tail_upper, b.log_l2_upper, values)
    d4 = jnp.asarray([math.log(n - k) - math.log(n) for k in windows])
    # D6-lower as stated (with the row's own tau), not deterministic_error_bounds'
    # composite with D5's lower bound on tau (which D5-lower and D6-lower imply).
    d6_lower = jnp.stack([error_bounds.log_l2_error_lower_bound(log_tau[..., j], n, k)
                          for j, k in enumerate(windows)], axis=-1)
    return {"D4": log_tau - d4, "D5-lower": b.log_tail_lower - log_tau,
            "D6-lower": d6_lower - log_l2, "D6-upper": log_l2 - b.log_l2_upper,
            "output-upper": log_out - out_bound}


def _self_logits(x, w, scale: float):
    """``U = lambda X W X^T`` (queries X W, keys X)."""
    return st.attention_logits(x @ w, x, scale)


@dataclasses.dataclass(frozen=True)
class DeterministicObjective:
    """Smooth maximum of the log-ratios of one target over rows and windows.

    ``objective((X, W, V), selected)`` returns ``(T logsumexp(r / T), max r)``
    for the target marked True in ``selected`` (a boolean vector over
    ``SEARCHED``, traced: one compilation serves every target). Errors come
    from ``masked_attention_errors`` with the top-k kept sets of
    ``stop_gradient(U)`` (differentiable; see the docstring of
    ``verify.suites.adversarial`` for why not ``sparse_attention_errors``).
    """

    windows: tuple[int, ...]
    score_scale: float
    temperature: float

    def log_ratios(self, params) -> dict[str, Any]:
        x, w, v = params
        u = _self_logits(x, w, self.score_scale)
        n = u.shape[-1]
        # Every window's top-k set from one ordering: the k largest scores (ties
        # to the lower index, as top_k_mask) are the first k of top_k_indices.
        order = st.top_k_indices(jax.lax.stop_gradient(u), n)
        rank = jnp.zeros(u.shape, jnp.int32).at[
            jnp.arange(n)[:, None], order].set(jnp.arange(n, dtype=jnp.int32)[None, :])
        kept = rank[None] < jnp.asarray(self.windows)[:, None, None]  # (windows, n, n)
        # One call over a windows axis, not one per window: XLA compiles it once.
        e = st.masked_attention_errors(jnp.broadcast_to(u, kept.shape), kept, v)
        log_tau, log_l2, log_out = (jnp.moveaxis(f, 0, -1) for f in
                                    (e.log_tail_mass, e.log_l2, e.log_output))
        spread = jnp.max(u, axis=-1) - jnp.min(u, axis=-1)
        return _log_ratios_from_errors(log_tau, log_l2, log_out, spread, v, n, self.windows)

    def __call__(self, params, selected):
        ratios = self.log_ratios(params)
        stacked = jnp.stack([ratios[t] for t in SEARCHED])  # (targets, n, windows)
        temp = self.temperature
        smooth = temp * jax.nn.logsumexp(stacked / temp, axis=(1, 2))
        hard = jnp.max(stacked, axis=(1, 2))
        # where, not a product with a one-hot: a NaN in another target must not
        # reach this one's value.
        return jnp.sum(jnp.where(selected, smooth, 0.0)), jnp.sum(jnp.where(selected, hard, 0.0))


def exact_log_ratios(params, cell: dict) -> dict[str, np.ndarray]:
    """The reported log-ratios at concrete ``(X, W, V)``, float64, from
    ``sparse_attention_errors`` and ``error_bounds`` (not the search's path);
    shape (n, len(windows)) per target, ``output-wrong`` included. With a
    leading restart axis on every parameter, shape (restarts, n, windows)."""
    x, w, v = (jnp.asarray(p, jnp.float64) for p in params)
    for a, name in ((x, "X"), (w, "W"), (v, "V")):
        if not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"{name} must be finite.")
    batched = x.ndim == 3
    if not batched:
        x, w, v = x[None], w[None], v[None]
    ratios = _exact_log_ratios(x, w, v, tuple(cell["windows"]), float(cell["score_scale"]))
    out = {t: np.asarray(r) if batched else np.asarray(r)[0] for t, r in ratios.items()}
    out["output-wrong"] = out["output-upper"] - math.log(WRONG_FACTOR)
    return out


@functools.partial(jax.jit, static_argnames=("windows", "score_scale"))
def _exact_log_ratios(x, w, v, windows, score_scale):
    # Compiled as one program (and vmapped over restarts): op by op, every
    # small operation of the library would be compiled on its own first.
    def one(x, w, v):
        u = _self_logits(x, w, score_scale)
        errors = st.sparse_attention_errors(u, windows, v)
        spread = jnp.max(u, axis=-1) - jnp.min(u, axis=-1)
        return _log_ratios_from_errors(errors.log_tail_mass, errors.log_l2, errors.log_output,
                                       spread, v, u.shape[-1], windows)
    return jax.vmap(one)(x, w, v)


def deterministic_start(cell: dict):
    """The random starting points ``(X, W, V)`` with a leading restart axis: X
    and V uniform in the box, W Gaussian rescaled onto the ball's sphere."""
    r, n, d, dv = cell["restarts"], cell["n"], cell["d"], cell["value_dim"]
    key = jax.random.fold_in(jax.random.PRNGKey(cell["seed_base"]), 0)
    x, v = _uniform_boxes(key, ((r, n, d), (r, n, dv)), float(cell["input_radius"]))
    w = adversary.random_in_ball(jax.random.fold_in(key, 1), (r, d, d), cell["weight_ball"],
                                 cell["weight_radius"])
    return x, w, v


@functools.partial(jax.jit, static_argnames=("shapes", "radius"))
def _uniform_boxes(key, shapes, radius):
    keys = jax.random.split(key, len(shapes))
    return tuple(drawn_flat(jax.random.uniform, k, s, jnp.float64, -radius, radius)
                 for k, s in zip(keys, shapes))


def deterministic_projection(cell: dict) -> adversary.Product:
    box = adversary.Box(float(cell["input_radius"]))
    return adversary.Product((box, adversary.weight_ball(cell["weight_ball"],
                                                         cell["weight_radius"]), box))

# --- probabilistic part --------------------------------------------------------------


def row_scores(w_matrix, keys, model, n: int, d: int, scale: float):
    """Per key: ``(sigma, mu, u, w)`` of query row 0 in cross mode with
    ``W = W_Q W_K^T = w_matrix`` (``W_K = I``): fresh inputs from
    ``sample_inputs``, ``w = scale W^T x_0``, ``u_j = <w, y_j>`` over the n
    independent keys. Traceable in ``w_matrix`` (the search differentiates it)."""
    eye = jnp.eye(d, dtype=w_matrix.dtype)
    weights = st.AttentionWeights(w_matrix, eye, eye)

    def one(key):
        inp = st.sample_inputs(key, n, d, model, "cross", dtype=w_matrix.dtype)
        x = inp.x[0]
        w = bounds.row_weight_vector(x, weights, scale)
        return (bounds.row_score_scale(x, weights, model, scale),
                bounds.row_score_mean(x, weights, model, scale), inp.y @ w, w)

    return jax.vmap(one)(keys)


def _switch_rows(w_matrix, keys, model_index, models: tuple, n: int, d: int, scale: float):
    """:func:`row_scores` for ``models[model_index]`` with the index traced: one
    compiled program serves every input model (a conditional, not a select,
    since the index is the same for every restart)."""
    branches = [lambda w, k, m=m: row_scores(w, k, m, n, d, scale) for m in models]
    return jax.lax.switch(model_index, branches, w_matrix, keys)


_rows_jit = jax.jit(_switch_rows, static_argnames=("models", "n", "d", "scale"))


def bound_functions(cell: dict) -> dict[str, Callable]:
    """The library's bound for each probabilistic target, as a function of sigma
    (NumPy in, NumPy out): ``L4.2-P1``: the threshold t itself; the others:
    the log of the bound (``L4.2-P3-wrong``: Part 3's ``ln n + mu - eta`` at
    mu = 0, to which the planted bound adds ``sigma^2/4``)."""
    n, delta = cell["n"], cell["delta"]
    half = delta / 2
    k_small, k_window = cell["num_small"], cell["small_window"]
    return {
        "L4.2-P1": lambda s: np.asarray(bounds.score_deviation_bound(s, n, delta)),
        "T4.3": lambda s: np.asarray(bounds.small_entry_log_bound(s, n, k_small, half, half,
                                                                  "binomial")),
        "T5.1-max": lambda s: np.asarray(bounds.largest_entry_log_bound(s, n, half, half)),
        "T6.1": lambda s: np.asarray(error_bounds.row_error_bounds(s, n, k_window, delta,
                                                                   "cross").log_l2_upper),
        "L4.2-P3-wrong": lambda s: np.asarray(bounds.log_normaliser_lower_bound(s, n, delta, 0.0)),
    }


def affine_bounds(cell: dict, check_at=(0.37, 2.5, 9.0)) -> dict[str, tuple[float, float]]:
    """``(intercept, slope)`` of each target's bound as a function of sigma,
    from the library at sigma = 0 and 1; raises if the library is not affine
    at ``check_at`` (relative 1e-12), which would make the search's bound wrong."""
    out = {}
    for target, fn in bound_functions(cell).items():
        intercept = float(fn(np.float64(0.0)))
        slope = float(fn(np.float64(1.0))) - intercept
        for s in check_at:
            lib, aff = float(fn(np.float64(s))), intercept + slope * s
            if abs(lib - aff) > 1e-12 * max(1.0, abs(lib)):
                raise ValueError(f"{target}: the library bound is not affine in sigma "
                                 f"({lib} != {aff} at sigma = {s}).")
        out[target] = (intercept, slope)
    return out


def _standardise(log_ratio, sigma, scale_free: bool):
    """The search's violation score: the log-ratio itself for a scale-free ratio,
    else ``log_ratio / sigma`` (no plateau at the sigma = 0 equality); NaN and
    sigma = 0 (an equality, never a failure) become -inf."""
    if scale_free:
        return jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    z = log_ratio / jnp.where(sigma > 0, sigma, 1.0)
    return jnp.where(jnp.isnan(z) | (sigma <= 0), -jnp.inf, z)


@dataclasses.dataclass(frozen=True)
class ProbabilisticObjective:
    """Smoothed failure rate of one probabilistic target over a fresh batch.

    ``objective(W, key, model_index, target_index, coefficients)`` draws
    ``batch`` seeds from ``key`` for ``MODELS``' model number ``model_index``,
    computes the log-ratio of target number ``target_index`` (of
    ``PROBABILISTIC_TARGETS``) per seed, with the bound from the affine
    ``coefficients`` (shape (targets, 2)), and returns
    ``(mean sigmoid(z / T), fraction of seeds with log-ratio > 1e-9)``, z the
    standardised log-ratio (:func:`_standardise`). Model and target are traced
    indices into ``lax.switch``: one compilation serves all of them, and a step
    computes only the selected target (a sort or a top-k of every row is the
    costly part on CPU).
    """

    models: tuple
    n: int
    d: int
    score_scale: float
    batch: int
    temperature: float
    num_small: int
    small_window: int

    def target_log_ratio(self, target: str, sigma, mu, u, intercept, slope):
        """``log(quantity / bound)`` (Part 3: ``log(bound / normaliser)``) per seed."""
        bound = intercept + slope * sigma
        lse = jax.nn.logsumexp(u, axis=-1)
        if target == "L4.2-P1":
            return jnp.log(jnp.max(jnp.abs(u - mu[:, None]), axis=-1)) - jnp.log(bound)
        if target == "T4.3":
            return jnp.sort(u, axis=-1)[:, self.num_small - 1] - lse - bound
        if target == "T5.1-max":
            return jnp.max(u, axis=-1) - lse - bound
        if target == "T6.1":
            kept = st.top_k_mask(jax.lax.stop_gradient(u), self.small_window)
            return st.masked_attention_errors(u, kept).log_l2 - bound
        if target == "L4.2-P3-wrong":
            return bound + mu + sigma**2 / 4 - lse
        raise ValueError(f"unknown probabilistic target {target!r}")

    def __call__(self, w_matrix, key, model_index, target_index, coefficients):
        keys = jax.random.split(key, self.batch)
        sigma, mu, u, _ = _switch_rows(w_matrix, keys, model_index, self.models, self.n,
                                       self.d, self.score_scale)

        def branch(i, target):
            def run(sigma, mu, u):
                r = self.target_log_ratio(target, sigma, mu, u, coefficients[i, 0],
                                          coefficients[i, 1])
                z = _standardise(r, sigma, scale_free=(target == "L4.2-P1"))
                return (jnp.mean(jax.nn.sigmoid(z / self.temperature)),
                        jnp.mean((r > TOLERANCE).astype(sigma.dtype)))
            return run

        branches = [branch(i, t) for i, t in enumerate(PROBABILISTIC_TARGETS)]
        return jax.lax.switch(target_index, branches, sigma, mu, u)


def recheck(w_matrix, cell: dict, keys) -> dict[str, dict]:
    """Every probabilistic target at a fixed W on the seeds ``keys``, with the
    library functions in NumPy/float64: per target ``failed`` (log-ratio >
    1e-9) and ``log_ratio`` per seed, plus per-seed sigma and the coordinate
    concentration of w (``sum w^4 / (sum w^2)^2``: 1/d flat, 1 on one coordinate)."""
    n, d = cell["n"], cell["d"]
    w_matrix = jnp.asarray(w_matrix, jnp.float64)
    num = keys.shape[0]
    chunk = min(num, max(1, 2**22 // (n * d)))
    # Pad the last chunk to the chunk size: one compiled shape for every chunk.
    padded = jnp.concatenate([keys, jnp.broadcast_to(keys[:1], (-num % chunk,) + keys.shape[1:])])
    model_index = list(MODELS).index(cell["model"])
    parts = [_rows_jit(w_matrix, padded[i:i + chunk], model_index, tuple(MODELS.values()), n, d,
                       float(cell["score_scale"])) for i in range(0, num, chunk)]
    sigma, mu, u, w = (np.concatenate([np.asarray(p[j]) for p in parts])[:num] for j in range(4))
    delta, half = cell["delta"], cell["delta"] / 2
    k_small = cell["num_small"]
    ratios = {t: np.asarray(r) for t, r in _recheck_ratios(
        jnp.asarray(sigma), jnp.asarray(mu), jnp.asarray(u), n, float(delta),
        int(cell["small_window"])).items()}
    # Theorem 4.3's bound is NumPy/SciPy (the exact binomial quantile): outside jit.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_entry_k = np.sort(u, axis=1)[:, k_small - 1] - np.logaddexp.reduce(u, axis=1)
        ratios["T4.3"] = log_entry_k - bounds.small_entry_log_bound(sigma, n, k_small, half, half,
                                                                    "binomial")
        w_sq = np.sum(w**2, axis=1)
        concentration = np.where(w_sq > 0, np.sum(w**4, axis=1) / np.where(w_sq > 0, w_sq, 1)**2,
                                 np.nan)
    ratios = {t: ratios[t] for t in PROBABILISTIC_TARGETS}
    out = {t: {"failed": r > TOLERANCE, "log_ratio": r} for t, r in ratios.items()}
    out["_rows"] = {"sigma": sigma, "concentration": concentration}
    return out


@functools.partial(jax.jit, static_argnames=("n", "delta", "small_window"))
def _recheck_ratios(sigma, mu, u, n: int, delta: float, small_window: int) -> dict:
    """The log-ratios of the targets whose library bounds are JAX functions,
    at concrete per-seed ``sigma, mu, u`` (compiled as one program: op by op
    every small library operation would be compiled on its own first)."""
    half = delta / 2
    lse = jax.nn.logsumexp(u, axis=1)
    deviation = jnp.max(jnp.abs(u - mu[:, None]), axis=1)
    t = bounds.score_deviation_bound(sigma, n, delta)
    log_l2 = st.sparse_attention_errors(u, (small_window,)).log_l2[:, 0]
    return {
        "L4.2-P1": jnp.log(deviation) - jnp.log(t),
        "T5.1-max": jnp.max(u, axis=1) - lse - bounds.largest_entry_log_bound(sigma, n, half, half),
        "T6.1": log_l2 - error_bounds.row_error_bounds(sigma, n, small_window, delta,
                                                       "cross").log_l2_upper,
        "L4.2-P3-wrong": bounds.log_normaliser_lower_bound(sigma, n, delta, mu) + sigma**2 / 4 - lse,
    }


def describe_weights(w_matrix, radius: float, rows: dict) -> dict:
    """What a W looks like: singular values over the radius, stable rank
    ``||W||_F^2 / ||W||_2^2``, top singular value's share of their sum, and
    over the re-check seeds the median sigma and mean concentration of w."""
    s = np.linalg.svd(np.asarray(w_matrix), compute_uv=False)
    return {"singular_values_over_radius": (s / radius).tolist(),
            "stable_rank": float(np.sum(s**2) / s[0] ** 2) if s[0] > 0 else 0.0,
            "top_singular_share": float(s[0] / np.sum(s)) if s[0] > 0 else 0.0,
            "sigma_median": float(np.median(rows["sigma"])),
            "sigma_q90": float(np.quantile(rows["sigma"], 0.9)),
            "w_concentration_mean": float(np.nanmean(rows["concentration"]))}


def probabilistic_objective(cell: dict) -> ProbabilisticObjective:
    return ProbabilisticObjective(tuple(MODELS.values()), int(cell["n"]), int(cell["d"]),
                                  float(cell["score_scale"]), int(cell["batch"]),
                                  float(cell["temperature"]), int(cell["num_small"]),
                                  int(cell["small_window"]))


def probabilistic_search(cell: dict, target: str, coefficients=None) -> adversary.AscentResult:
    """The search for one probabilistic target: restarts from Gaussian W on the
    ball's sphere (stream 0 of the cell's seed base), fresh batches from
    stream 1 (per target), never from the re-check's stream 2."""
    if target not in PROBABILISTIC_TARGETS:
        raise ValueError(f"unknown probabilistic target {target!r}; known: {PROBABILISTIC_TARGETS}")
    base = jax.random.PRNGKey(cell["seed_base"])
    start = adversary.random_in_ball(jax.random.fold_in(base, 0),
                                     (cell["restarts"], cell["d"], cell["d"]),
                                     cell["weight_ball"], cell["weight_radius"])
    if coefficients is None:
        affine = affine_bounds(cell)
        coefficients = jnp.asarray([affine[t] for t in PROBABILISTIC_TARGETS], jnp.float64)
    target_index = PROBABILISTIC_TARGETS.index(target)
    key = jax.random.fold_in(jax.random.fold_in(base, 1), target_index)
    return adversary.ascend(probabilistic_objective(cell), start,
                            adversary.weight_ball(cell["weight_ball"], cell["weight_radius"]),
                            cell["steps"], cell["learning_rate"], clip_norm=cell["clip_norm"],
                            key=key, args=(list(MODELS).index(cell["model"]), target_index,
                                           coefficients), has_aux=True)


def recheck_keys(cell: dict):
    """The fresh seeds of the re-check: stream 2 of the cell's seed base."""
    return trial_keys(cell["seed_base"], cell["recheck_seeds"], stream=2)

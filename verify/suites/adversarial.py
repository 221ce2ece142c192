"""Suite ``adversarial``: the bounds' worst cases, searched by projected gradient ascent.

The search engine is ``verify.adversary``; random sampling is the baseline.

The paper's bounds hold for every weight matrix of a given norm and, for the
deterministic facts, for every input. Random draws rarely reach the worst
case, so this suite maximises a smooth surrogate of ``quantity / bound`` (lower
bounds: ``bound / quantity``; a ratio <= 1 means the bound holds) over a
constrained set, from several random starting points, and reports the worst
ratio at the random starts next to the worst the search found.

**Deterministic part** (D4-D6 and the output bound of Theorems 6.1/6.2,
docs/theory.md; they hold for every finite row). Self attention with logits
``U = lambda X W X^T`` over

    X in [-R, R]^{n x d},   ||W||_2 <= rho (W = W_Q W_K^T),   V in [-R, R]^{n x d_v},

every row and the windows ``k in {1, n/8, n/2, n-1}``. Targets: ``D4``
(``tau <= 1 - k/n``), ``D5-lower`` (``(n-k)/(n-k + k r) <= tau``), ``D6-lower``
(``tau sqrt(n/(k(n-k))) <= ||s - s^||_2`` with the row's own tau), ``D6-upper``
(``||s - s^||_2 <= r sqrt((n-k)/(nk))``) and ``output-upper``
(``min(2 tau_up max_j ||v_j - vbar||, l2_up ||V - 1 vbar^T||_2)`` with tau_up and
l2_up from D5/D6, as in suite ``identities``), all from
``sparsity_theory.error_bounds``. The objective is a smooth maximum over rows
and windows, ``T logsumexp(log_ratio / T)`` with T = 0.1 (in trials at T = 0.05
about a third of the restarts stalled on the output target near their start).

Gradients: the search differentiates ``masked_attention_errors`` (the exact
forms for any kept set) with the kept set ``top_k_mask(stop_gradient(U), k)``;
it equals ``sparse_attention_errors`` (to 1e-15), and the set is piecewise
constant, so stopping its gradient loses nothing. (Writing this suite found
that ``sparse_attention_errors`` itself gave the kept logits a zero gradient,
because its top-k ran on a bitcast copy of the logits; ``window_profile`` now
gathers the kept logits from the logits, and tests/test_gradients.py checks
the gradients against finite differences.) Library functions throughout, no
surrogate formulas; the REPORTED ratios are re-evaluated in float64 with ``sparse_attention_errors`` and
``error_bounds`` at the best parameters found, never taken from the search. A
violation is a ratio above ``1 + 1e-9`` (rounding). Planted: ``output-wrong`` =
the output bound times ``WRONG_FACTOR = 0.6``; random inputs give output ratios
up to about 0.5 (suite ``identities``; 0.53 over 1280 random starts of the quick
configuration), so random sampling does not catch it; the search must drive its
ratio above 1 (CAUGHT, else MISSED): kept and dropped value rows pushed to
opposite corners of the box. It shares ``output-upper``'s search (the two
objectives differ by the constant ``log 0.6``). D4, D5-lower, D6-lower and
D6-upper are attained with equality (equal kept and equal dropped scores; r = 1
for D4 and D6-upper), so their searches end at ratios within about 1e-5 of 1
(quick preset), from below.

**Probabilistic part** (hold with probability >= 1 - delta over the inputs, for
every W). W in the spectral ball ``||W||_2 <= rho``; cross attention, one query
row x_0 and n independent keys per seed, so ``u_j = <w, y_j>`` with
``w = lambda W^T x_0`` and ``sigma = nu ||w||_2`` (``bounds.row_score_scale``). Each
search step draws a fresh batch of seeds. Targets (delta = 0.05, split
0.025 + 0.025 where the theorem has two events):

* ``L4.2-P1`` (Lemma 4.2 Part 1): ``max_j |u_j - mu| <= sigma sqrt(2 ln(2n/delta))``;
* ``T4.3`` (Theorem 4.3, binomial method, k = n/2 small entries): the k-th
  smallest softmax entry is at most ``eps_k = exp(t + eta) / n``;
* ``T5.1-max`` (Theorem 5.1): ``max_j s_j <= exp(t_1 + eta) / n``;
* ``T6.1`` (Theorem 6.1, per row, window k = n/16):
  ``||s - s^||_2 <= e^rho sqrt((n-k)/(n k))``;
* ``L4.2-P3-wrong`` (planted): ``log sum_j exp(u_j) >= ln n + mu + sigma^2/4 - eta``.

Every bound is affine in sigma in log form (``t``, ``t_1``, ``eta`` and ``rho``
are sigma times constants; ``-ln n`` is constant), but some library bounds use
NumPy/SciPy and cannot be traced; :func:`affine_bounds` evaluates the library
at sigma = 0 and 1 outside the trace (and checks the affine form at other
sigmas), and the search uses those coefficients. The objective is the smoothed
failure rate ``mean_seeds sigmoid(z / T)`` (T = 0.25) of the standardised
log-ratio ``z = log_ratio / sigma`` (``L4.2-P1``'s ratio is already free of the
scale). Why standardised: at sigma = 0 every one of these bounds is an
equality, so the raw log-ratio tends to 0 from below as W -> 0 and a sigmoid of
it would reward shrinking W towards that equality (where nothing fails); ``z``
keeps the sign of the violation and has no such plateau. For the real bounds
``z`` is still largest at small sigma (they are tightest, relative to the score
scale, there), so those searches typically shrink sigma and end with worst
ratios close to 1 -- without failures.

After the search, the best W (the restart with the largest smoothed rate) and
that restart's random starting W are RE-CHECKED on ``recheck_seeds`` FRESH
seeds (a PRNG stream the search never used, so the selection of W cannot fake a
pass or a failure) with the library functions in NumPy/float64, through
``verify.claims.claim_result`` (exact binomial test at alpha = 1e-6,
Clopper-Pearson interval, looseness). A trial fails when its log-ratio exceeds
1e-9: every bound here is an equality at sigma = 0 (which a rank-deficient W
produces for some x), and rounding there must not count as a failure. The
verdict rows are those of the adversarial W (pooled over input models by
``summarise_claims``); the random-W re-check is kept in the cell (``random_w``)
and shown in the report section.

The planted ``L4.2-P3-wrong`` is an annealed normaliser: for Gaussian scores
``log E e^u = mu + sigma^2/2``, and it gives back half of that. It is wrong twice
over: at a finite n the normaliser is dominated by its largest terms once sigma
is large (``log sum e^u ~ max_j u_j``, linear in sigma against the bound's
quadratic term), and for Rademacher input a W that maps x onto few coordinates
gives two-valued scores ``+-s`` with ``log cosh s < s^2/4`` beyond s ~ 3.3. In a
spectral ball the search's lever is mostly the first: a random Gaussian W rescaled
to ``||W||_2 = rho`` has ``||W^T x|| ~ rho sqrt(d)/2`` while a W with every singular
value at rho has ``rho sqrt(d)`` (the searches end there: stable rank close to
d). The presets fix ``rho`` (with lambda = 1/sqrt(d), Rademacher input has
sigma = rho at such W) where a simulation gave a random-W failure rate well below
delta and an adversarial one far above it: quick (n = 32, d = 8) rho = 6: about
0.5-0.9% at random W, 12% (orthogonal W) to 19% (Hadamard W); paper (n = 128,
d = 16) rho = 7.5: about 0.2% against 28-33%. Gaussian input is rotation
invariant, so only W's singular values matter there: the same lever works and
the planted bound is caught there too (a control that the mechanism is the
score scale, not the direction). Uniform input cannot reach the scale
(nu^2 = 1/3 and ``||x||^2 ~ d/3``: sigma <= rho/3 about), so the planted bound is
not caught there: another control.
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
from verify import adversary
from verify.claims import ALPHA, claim_result, summarise_claims
from verify.report.figures import pyplot, save_figure
from verify.report.ledger import bound_entry
from verify.suite import Suite, register, with_seeds

NAME = "adversarial"
TOLERANCE = 1e-9  # relative rounding slack: a ratio above 1 + 1e-9 is a violation
WRONG_FACTOR = 0.6  # output-wrong: 0.6 x the output bound
DELTA = 0.05
TRACE_POINTS = 200  # traces are stored at about this many steps

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

CLAIMS = {**DETERMINISTIC_CLAIMS, **PROBABILISTIC_CLAIMS}


def _deterministic_preset(n: int, d: int, steps: int, restarts: int) -> dict:
    return {"n": n, "d": d, "value_dim": d, "input_radius": 1.0, "weight_ball": "spectral",
            "weight_radius": 2.0, "score_scale": 1.0 / math.sqrt(d), "windows": windows_for(n),
            "steps": steps, "restarts": restarts, "learning_rate": 0.05, "clip_norm": 1.0,
            "temperature": 0.1}


def _probabilistic_preset(n: int, d: int, rho: float, steps: int, restarts: int, batch: int,
                          recheck_seeds: int) -> dict:
    return {"n": n, "d": d, "weight_ball": "spectral", "weight_radius": rho,
            "score_scale": 1.0 / math.sqrt(d), "steps": steps, "restarts": restarts,
            "batch": batch, "recheck_seeds": recheck_seeds, "learning_rate": 0.1,
            "clip_norm": 1.0, "temperature": 0.25, "num_small": n // 2,
            "small_window": max(1, n // 16)}


def windows_for(n: int) -> list[int]:
    """The windows of the deterministic part: 1, n/8, n/2 and n - 1 (distinct)."""
    return sorted({k for k in (1, n // 8, n // 2, n - 1) if 1 <= k < n})


PRESETS = {
    "quick": {"deterministic": _deterministic_preset(32, 8, steps=250, restarts=4),
              "probabilistic": _probabilistic_preset(32, 8, 6.0, steps=150, restarts=4,
                                                     batch=128, recheck_seeds=2000)},
    "paper": {"deterministic": _deterministic_preset(128, 16, steps=1000, restarts=16),
              "probabilistic": _probabilistic_preset(128, 16, 7.5, steps=1000, restarts=16,
                                                     batch=128, recheck_seeds=20000)},
    "large": {"deterministic": _deterministic_preset(128, 16, steps=3000, restarts=16),
              "probabilistic": _probabilistic_preset(128, 16, 7.5, steps=3000, restarts=16,
                                                     batch=128, recheck_seeds=50000)},
}

# Rademacher and Uniform inputs: the direction of W matters. Gaussian input is
# rotation invariant (only W's singular values matter): a control.
MODELS = {"rademacher": st.Rademacher(1.0), "uniform": st.Uniform(1.0),
          "gaussian": st.Gaussian(1.0)}


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    """One deterministic cell and one probabilistic cell per input model.
    ``seeds`` overrides the number of fresh re-check seeds."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for suite {NAME}; known: {sorted(PRESETS)}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}.")
    p = PRESETS[preset]
    out = [{"suite": NAME, "part": "deterministic", "mode": "self",
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in p["deterministic"].items()}}]
    for model in MODELS:
        cell = {"suite": NAME, "part": "probabilistic", "model": model, "mode": "cross",
                "delta": DELTA, **p["probabilistic"]}
        if seeds is not None:
            cell["recheck_seeds"] = int(seeds)
        out.append(cell)
    return with_seeds(NAME, out)


def cell_id(cell: dict) -> str:
    if cell["part"] == "deterministic":
        return (f"deterministic-n{cell['n']}-d{cell['d']}-steps{cell['steps']}"
                f"-r{cell['restarts']}")
    return (f"probabilistic-{cell['model']}-n{cell['n']}-d{cell['d']}-steps{cell['steps']}"
            f"-r{cell['restarts']}-s{cell['recheck_seeds']}")


def run_cell(cell: dict) -> dict[str, Any]:
    part = cell.get("part")
    if part == "deterministic":
        return _deterministic_cell(cell)
    if part == "probabilistic":
        if cell.get("model") not in MODELS:
            raise ValueError(f"unknown input model {cell.get('model')!r}; known: {sorted(MODELS)}")
        return _probabilistic_cell(cell)
    raise ValueError(f"cell part must be 'deterministic' or 'probabilistic', got {part!r}.")


def _thin(values, points: int = TRACE_POINTS) -> dict:
    """A trace kept at about ``points`` steps (always the first and last)."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.unique(np.linspace(0, values.size - 1, min(points, values.size)).round().astype(int))
    return {"step": idx.tolist(), "value": [float(v) for v in values[idx]]}


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
    ``stop_gradient(U)`` (differentiable; see the module docstring for why not
    ``sparse_attention_errors``).
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
    return tuple(jax.random.uniform(k, s, jnp.float64, -radius, radius)
                 for k, s in zip(keys, shapes))


def deterministic_projection(cell: dict) -> adversary.Product:
    box = adversary.Box(float(cell["input_radius"]))
    return adversary.Product((box, adversary.weight_ball(cell["weight_ball"],
                                                         cell["weight_radius"]), box))


def _check_deterministic(cell: dict) -> None:
    n = cell["n"]
    if not all(1 <= k < n for k in cell["windows"]):
        raise ValueError(f"windows must lie in [1, n - 1] = [1, {n - 1}], got {cell['windows']}.")
    for key in ("steps", "restarts", "n", "d", "value_dim"):
        if int(cell[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cell[key]}.")
    for key in ("input_radius", "weight_radius", "score_scale", "learning_rate", "temperature"):
        if not cell[key] > 0:
            raise ValueError(f"{key} must be > 0, got {cell[key]}.")


def _restart(tree, r: int):
    return jax.tree.map(lambda a: a[r], tree)


def _summary(log_ratios: list[np.ndarray]) -> dict:
    x = np.concatenate([np.ravel(a) for a in log_ratios])
    finite = x[np.isfinite(x)]
    return {"checked": int(x.size), "violations": int(np.sum(x > TOLERANCE)),
            "median_ratio": float(np.exp(np.median(finite))) if finite.size else None,
            "worst_ratio": float(np.exp(np.max(finite))) if finite.size else None}


def _params_json(params) -> dict:
    return {name: np.asarray(p).tolist() for name, p in zip(("X", "W", "V"), params)}


def _deterministic_cell(cell: dict) -> dict[str, Any]:
    _check_deterministic(cell)
    start = deterministic_start(cell)
    project = deterministic_projection(cell)
    objective = DeterministicObjective(tuple(cell["windows"]), float(cell["score_scale"]),
                                       float(cell["temperature"]))
    restarts = cell["restarts"]
    with np.errstate(invalid="ignore"):
        initial = exact_log_ratios(jax.vmap(project)(start), cell)
    results: dict[str, Any] = {}
    for target in SEARCHED:
        selected = jnp.asarray([t == target for t in SEARCHED])
        search = adversary.ascend(objective, start, project, cell["steps"], cell["learning_rate"],
                                  clip_norm=cell["clip_norm"], args=(selected,), has_aux=True)
        with np.errstate(invalid="ignore"):
            found = exact_log_ratios(search.best_params, cell)
        # The hard maximum of the log-ratio along the search (the surrogate's
        # own evaluation, best so far over restarts): the figure's trace.
        hard = np.maximum.accumulate(np.nan_to_num(np.asarray(search.aux_trace), nan=-np.inf),
                                     axis=1).max(axis=0)
        names = [target] + (["output-wrong"] if target == "output-upper" else [])
        for name in names:
            shift = -math.log(WRONG_FACTOR) if name == "output-wrong" else 0.0
            worst_per_restart = [float(np.max(f)) for f in found[name]]
            worst_restart = int(np.argmax(worst_per_restart))
            results[name] = {
                **_summary([found[name]]),
                "initial": _summary([initial[name]]),
                "search": {"steps": cell["steps"], "restarts": restarts,
                           "searched_as": target, "worst_restart": worst_restart,
                           "best_step": int(search.best_step[worst_restart]),
                           "surrogate_best": float(search.best_value[worst_restart]) + shift,
                           "worst_ratio_per_restart": [math.exp(x) for x in worst_per_restart]},
                "trace": _thin(np.exp(hard + shift)),
                "worst_params": _params_json(_restart(search.best_params, worst_restart)),
            }
    return results


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


def _check_probabilistic(cell: dict) -> None:
    for key in ("steps", "restarts", "batch", "recheck_seeds", "n", "d"):
        if int(cell[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cell[key]}.")
    if not 1 <= cell["num_small"] <= cell["n"]:
        raise ValueError(f"num_small must be in [1, n], got {cell['num_small']}.")
    if not 1 <= cell["small_window"] < cell["n"]:
        raise ValueError(f"small_window must be in [1, n - 1], got {cell['small_window']}.")
    if cell.get("mode", "cross") != "cross":
        raise ValueError("the probabilistic part runs in cross mode only (keys independent "
                         "of the query).")
    for key in ("weight_radius", "score_scale", "learning_rate", "temperature"):
        if not cell[key] > 0:
            raise ValueError(f"{key} must be > 0, got {cell[key]}.")


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
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(cell["seed_base"]), 2),
                            cell["recheck_seeds"])


def _probabilistic_cell(cell: dict) -> dict[str, Any]:
    _check_probabilistic(cell)
    affine = affine_bounds(cell)
    coefficients = jnp.asarray([affine[t] for t in PROBABILISTIC_TARGETS], jnp.float64)
    keys = recheck_keys(cell)
    radius = float(cell["weight_radius"])
    results: dict[str, Any] = {}
    for target in PROBABILISTIC_TARGETS:
        search = probabilistic_search(cell, target, coefficients)
        best = int(np.argmax(np.asarray(search.best_value)))
        adversarial_w = np.asarray(search.best_params[best])
        random_w = np.asarray(search.initial_params[best])
        at_adv, at_random = recheck(adversarial_w, cell, keys), recheck(random_w, cell, keys)
        random_result = claim_result(at_random[target]["failed"], at_random[target]["log_ratio"],
                                     cell["delta"], ALPHA)
        results[target] = claim_result(
            at_adv[target]["failed"], at_adv[target]["log_ratio"], cell["delta"], ALPHA, extra={
                "random_w": random_result,
                "weights": {"adversarial": describe_weights(adversarial_w, radius, at_adv["_rows"]),
                            "random": describe_weights(random_w, radius, at_random["_rows"])},
                "adversarial_w": adversarial_w.tolist(),
                "search": {"steps": cell["steps"], "restarts": cell["restarts"],
                           "batch": cell["batch"], "chosen_restart": best,
                           "best_step": int(search.best_step[best]),
                           "smoothed_rate_best": float(search.best_value[best]),
                           "smoothed_rate_start": float(search.trace[best, 0])},
                "trace": {"batch_failure_rate": _thin(np.asarray(search.aux_trace[best])),
                          "smoothed_rate": _thin(np.asarray(search.trace[best]))},
            })
    results["affine_bounds"] = {t: list(c) for t, c in affine.items()}
    return results


# --- verdicts, figure, analysis ------------------------------------------------------


def summarise(cell_results: list[tuple[dict, dict]]) -> list[dict]:
    """Deterministic rows like suite ``identities`` (HOLDS / VIOLATED at a ratio
    above 1 + 1e-9; planted: CAUGHT when the search broke it, else MISSED);
    probabilistic rows pooled over input models by ``summarise_claims``."""
    rows = []
    for claim, statement in DETERMINISTIC_CLAIMS.items():
        parts = [r[claim] for c, r in cell_results if c["part"] == "deterministic" and claim in r]
        if not parts:
            continue
        violations = sum(p["violations"] for p in parts)
        worst = max(p["worst_ratio"] for p in parts if p["worst_ratio"] is not None)
        medians = [p["median_ratio"] for p in parts if p["median_ratio"] is not None]
        if claim.endswith("-wrong"):
            verdict = "CAUGHT" if violations > 0 else "MISSED"
        else:
            verdict = "HOLDS" if violations == 0 else "VIOLATED"
        rows.append({"suite": NAME, "claim": claim, "statement": statement,
                     "checked": sum(p["checked"] for p in parts), "violations": violations,
                     "verdict": verdict,
                     "median_of_cell_medians": float(np.median(medians)) if medians else None,
                     "worst_ratio": worst,
                     "initial_worst_ratio": max(p["initial"]["worst_ratio"] for p in parts)})
    probabilistic = [(c, r) for c, r in cell_results if c["part"] == "probabilistic"]
    return rows + summarise_claims(NAME, PROBABILISTIC_CLAIMS, probabilistic, ALPHA)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, x.size))
    c = np.cumsum(np.concatenate([[0.0], x]))
    out = np.empty_like(x)
    for i in range(x.size):
        lo = max(0, i - width + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def figures(cell_results: list[tuple[dict, dict]], out_dir: str) -> list[dict]:

    plt = pyplot()
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for cell, result in cell_results:
        if cell["part"] != "deterministic":
            continue
        for i, claim in enumerate(DETERMINISTIC_CLAIMS):
            if claim in result:
                tr = result[claim]["trace"]
                left.plot(tr["step"], tr["value"], color=colours[i % len(colours)],
                          ls="--" if claim.endswith("-wrong") else "-", label=claim)
        left.set_title(f"deterministic: n = {cell['n']}, d = {cell['d']}, "
                       f"{cell['restarts']} restarts", fontsize=10)
    left.axhline(1.0, color="k", lw=1, ls=":")
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("worst ratio quantity/bound so far (max over restarts)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    styles = {"rademacher": "-", "uniform": "--", "gaussian": ":"}
    floor = 1e-3
    for cell, result in cell_results:
        if cell["part"] != "probabilistic":
            continue
        for i, claim in enumerate(PROBABILISTIC_CLAIMS):
            if claim not in result:
                continue
            label = (f"{claim} ({cell['model']})" if cell["model"] == "rademacher"
                     or claim.endswith("-wrong") else None)
            style = dict(color=colours[i % len(colours)], ls=styles.get(cell["model"], "-"))
            hard = result[claim]["trace"]["batch_failure_rate"]
            rate = _moving_average(np.asarray(hard["value"]), 10) / result[claim]["delta"]
            middle.plot(hard["step"], np.maximum(rate, floor), label=label, **style)
            smooth = result[claim]["trace"]["smoothed_rate"]
            right.plot(smooth["step"], _moving_average(np.asarray(smooth["value"]), 10),
                       label=label, **style)
        middle.set_title(f"probabilistic (cross, n = {cell['n']}, d = {cell['d']}): failures "
                         f"in the batches of {cell['batch']}", fontsize=10)
        right.set_title("probabilistic: the searches' objective", fontsize=10)
    figure.suptitle("probabilistic panels, input: solid rademacher, dashed uniform, dotted "
                    "gaussian", fontsize=9, x=0.67, y=0.995)
    middle.axhline(1.0, color="k", lw=1, ls=":")
    middle.set_yscale("log")
    middle.set_xlabel("step")
    middle.set_ylabel(f"failure rate / delta (moving average; 0 at {floor:g})")
    middle.grid(alpha=0.3)
    middle.legend(fontsize=7)
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel("smoothed failure rate mean sigmoid(z / T)")
    right.grid(alpha=0.3)
    return [save_figure(figure, out_dir, "adversarial_search.png",
                      "Adversarial search (verify.suites.adversarial). Left: the worst ratio "
                      "quantity/bound found so far for each deterministic target (ratio 1 dotted; "
                      "output-wrong is the planted 0.6 x output bound). Middle: the failure rate of "
                      "each probabilistic target on each step's fresh batch at the chosen restart, "
                      "over delta (moving average over 10 steps; 1 dotted: rate = delta). Right: "
                      "the objective those searches maximise (smoothed failure rate of the "
                      "standardised log-ratio z; it is not a rate, and it rises for the real bounds "
                      "without any failure). Verdicts come from re-checks on fresh seeds, not from "
                      "these batches.")]


def _rate_text(r: dict) -> str:
    check = r.get("check")
    if not check:
        return "-"
    return (f"{r['failures']}/{r['trials']} = {check['empirical_rate']:.3g} "
            f"[{check['ci_low']:.3g}, {check['ci_high']:.3g}]")


def _loose(r: dict, key: str):
    loose = r.get("looseness") or {}
    return loose.get(key)


def analysis(cell_results: list[tuple[dict, dict]]) -> dict:
    det, prob = [], []
    for cell, result in cell_results:
        if cell["part"] == "deterministic":
            for claim in DETERMINISTIC_CLAIMS:
                if claim not in result:
                    continue
                r = result[claim]
                det.append({"claim": claim, "n": cell["n"], "d": cell["d"],
                            "windows": cell["windows"], "input_radius": cell["input_radius"],
                            "weight_radius": cell["weight_radius"],
                            "score_scale": cell["score_scale"],
                            "initial_worst_ratio": r["initial"]["worst_ratio"],
                            "search_worst_ratio": r["worst_ratio"],
                            "search_median_ratio": r["median_ratio"],
                            "violations": r["violations"], "checked": r["checked"],
                            "steps": r["search"]["steps"], "restarts": r["search"]["restarts"],
                            "best_step": r["search"]["best_step"],
                            "planted": claim.endswith("-wrong")})
        else:
            for claim in PROBABILISTIC_CLAIMS:
                if claim not in result:
                    continue
                r = result[claim]
                rows = {}
                for which, rec in (("random", r["random_w"]), ("adversarial", r)):
                    rejected = bool(rec["check"] and rec["check"]["verdict"] == "VIOLATED")
                    rows[which] = {"failures": rec["failures"], "trials": rec["trials"],
                                   "text": _rate_text(rec), "rejected": rejected,
                                   "median_ratio": _loose(rec, "median"),
                                   "worst_ratio": _loose(rec, "worst"),
                                   "weights": r["weights"][which]}
                prob.append({"claim": claim, "model": cell["model"], "n": cell["n"],
                             "d": cell["d"], "delta": r["delta"],
                             "weight_radius": cell["weight_radius"],
                             "score_scale": cell["score_scale"], "steps": r["search"]["steps"], "restarts": r["search"]["restarts"],
                             "batch": r["search"]["batch"], "planted": claim.endswith("-wrong"),
                             **rows})
    return {"deterministic": det, "probabilistic": prob}


def _f(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def report_sections(result_analysis: dict) -> str:
    lines = []
    det = result_analysis.get("deterministic", [])
    if det:
        first = det[0]
        lines += [
            "### Deterministic bounds: worst ratio at random starts and after the search",
            "",
            f"Self attention U = lambda X W X^T, n = {first['n']}, d = {first['d']}, "
            f"lambda = {first['score_scale']:.4g}, windows {first['windows']}; X and V in the box "
            f"[-{first['input_radius']:g}, {first['input_radius']:g}], "
            f"||W||_2 <= {first['weight_radius']:g}; ratio = quantity/bound (lower bounds: "
            "bound/quantity), re-evaluated in float64 with `sparse_attention_errors` and "
            "`error_bounds` at the best parameters of each restart. A ratio above 1 + 1e-9 is a "
            "violation.",
            "",
            "| target | worst ratio, random starts | worst ratio, search | median ratio, search "
            "| violations / pairs | steps | restarts |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in det:
            name = f"{r['claim']} (planted)" if r["planted"] else r["claim"]
            lines.append(f"| {name} | {_f(r['initial_worst_ratio'])} | {_f(r['search_worst_ratio'])} "
                         f"| {_f(r['search_median_ratio'])} | {r['violations']} / {r['checked']} "
                         f"| {r['steps']} | {r['restarts']} |")
        lines += ["", "D4, D5-lower, D6-lower and D6-upper are equalities for some inputs "
                  "(equal kept and equal dropped scores), so a search ending within rounding of "
                  "1 shows it found the extremal inputs, not a violation. The planted "
                  "output-wrong (0.6 x the output bound) stays below 1 at the random starts and "
                  "must be driven above 1 by the search.", ""]
    prob = result_analysis.get("probabilistic", [])
    if prob:
        first = prob[0]
        lines += [
            "### Probabilistic bounds: re-check at the random W and at the adversarial W",
            "",
            f"Cross attention, query row 0, n = {first['n']}, d = {first['d']}, "
            f"||W||_2 <= {first['weight_radius']:g}, score scale lambda = "
            f"{first['score_scale']:.4g}; search: "
            f"{first['steps']} steps, {first['restarts']} restarts, {first['batch']} fresh seeds "
            "per step. Re-check: the same fresh seeds (never used by the search) at the chosen "
            "restart's random starting W and at its best W; failures / trials = rate "
            "[95% Clopper-Pearson], exact binomial test of rate <= delta at alpha = 1e-6 "
            "(**rejected** in bold). The verdicts are the adversarial-W column, pooled over "
            "input models; a real bound must hold there, a planted one must be rejected there "
            "(and, to show what the search adds, not at the random W).",
            "",
            "| model | target | delta | random W: failures (rate [CI]) | random W: median / worst "
            "ratio | adversarial W: failures (rate [CI]) | adversarial W: median / worst ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in prob:
            cells_text = []
            for which in ("random", "adversarial"):
                w = r[which]
                text = f"**{w['text']}**" if w["rejected"] else w["text"]
                cells_text += [text, f"{_f(w['median_ratio'])} / {_f(w['worst_ratio'])}"]
            name = f"{r['claim']} (planted)" if r["planted"] else r["claim"]
            lines.append(f"| {r['model']} | {name} | {r['delta']:g} | " + " | ".join(cells_text) + " |")
        lines += [
            "",
            "What the weights look like (singular values relative to the radius, stable rank "
            "||W||_F^2/||W||_2^2 out of d, top singular value's share of their sum; over the "
            "re-check seeds the median sigma and the mean concentration sum w^4/(sum w^2)^2 of "
            "w = lambda W^T x_0, 1/d when flat and 1 on a single coordinate):",
            "",
            "| model | target | W | stable rank | top share | median sigma | w concentration |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in prob:
            for which in ("random", "adversarial"):
                w = r[which]["weights"]
                lines.append(f"| {r['model']} | {r['claim']} | {which} | {w['stable_rank']:.3g} | "
                             f"{w['top_singular_share']:.3g} | {w['sigma_median']:.3g} | "
                             f"{w['w_concentration_mean']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def ledger_entries(results: dict) -> list[dict]:
    return [bound_entry(results, NAME, ["D4", "D5-lower", "D6-lower", "D6-upper", "output-upper"],
                        ["output-wrong"], "Theorems 6.1/6.2, deterministic core (D4-D6, output bound) "
                        "under adversarial search",
                        "no input X, weight W (spectral ball) or values V found by projected gradient "
                        "ascent makes quantity / bound exceed 1 + 1e-9",
                        "self attention, every row, windows 1, n/8, n/2, n-1; several restarts"),
            bound_entry(results, NAME, ["L4.2-P1", "T4.3", "T5.1-max", "T6.1"], ["L4.2-P3-wrong"],
                        "Lemma 4.2 / Theorems 4.3, 5.1, 6.1 at adversarial weights",
                        "failure rate <= delta on fresh seeds at the W that maximised the smoothed "
                        "failure rate over the spectral ball",
                        "Rademacher, Uniform and Gaussian input, cross mode, one row per seed")]


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=6.2,
    analysis=analysis, report_sections=report_sections, figures=figures,
    ledger_entries=ledger_entries))

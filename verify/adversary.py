"""Projected gradient ascent (optax) for the adversarial search of ``verify.suites.adversarial``.

The paper's bounds hold for every weight matrix of a given norm and, for the
deterministic facts, for every input. Random draws rarely land on the worst
case, so the suite maximises a smooth surrogate of ``quantity / bound`` over a
constrained set instead:

    maximise f(theta) over theta in C,   theta_{t+1} = P_C(theta_t + step_t),

where ``step_t`` is an Adam update on the gradient of f (after clipping the
gradient's global norm) and ``P_C`` is the Euclidean (Frobenius) projection onto
C. Three sets are provided, each the nearest-point projection:

* the box ``[-R, R]^m`` (entrywise clip; ``optax.projections.projection_box``);
* the Frobenius ball ``||theta||_F <= r`` over a whole pytree (scale by
  ``min(1, r / ||theta||_F)``; ``optax.projections.projection_l2_ball``);
* the spectral-norm ball ``||W||_2 <= r`` of a matrix: with ``W = U diag(s) V^T``
  the nearest point in Frobenius norm is ``U diag(min(s, r)) V^T`` (von
  Neumann's trace inequality: the Frobenius distance to any matrix with
  singular values s' is at least ``||s - s'||_2``, attained with W's singular
  vectors). optax has no such projection; it is one SVD.

**Which Adam.** optax's ``adam`` scales every coordinate by its own running
RMS. With a projection that is not separable over coordinates (a spectral or
Frobenius ball) its fixed points are not the constrained maxima: on a linear
objective ``<A, W>`` the step tends to ``lr sign(A)`` and projected ascent stalls
where ``P(W + lr sign(A)) = W``, e.g. at 66% of the maximum ``r ||A||_*`` over a
spectral ball (tests/test_adversarial.py shows it). The default here,
:func:`scale_by_leaf_adam`, keeps Adam's first moment per coordinate but uses one
second moment per parameter array (the mean square of its gradient): each
array's step is a positive multiple of its averaged gradient, so the projected
iteration's fixed points are the KKT points of the constrained problem, and the
step size still does not depend on the gradient's scale (Adam's reason to be).
``optimizer="adam"`` selects optax's per-coordinate Adam (fine on boxes, which
are separable).

:func:`ascend` runs the iteration from several starting points (a ``lax.scan``
over the steps, compiled once per configuration and run once per restart),
keeps the best iterate of each restart and returns the whole trace. A
stochastic objective takes a PRNG key per step and restart, so each step sees a
fresh batch.

Projections and objectives are passed to the compiled function as static
arguments: use hashable callables whose hash is their configuration (the frozen
dataclasses below, or module-level functions), so that a second search with the
same configuration reuses the compiled code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PyTree = Any


# --- projections ----------------------------------------------------------------


def project_box(tree: PyTree, radius: float) -> PyTree:
    """Nearest point of the box ``[-radius, radius]`` (every leaf, entrywise)."""
    # optax wants the bounds as pytrees of the tree's structure.
    lower = jax.tree.map(lambda _: -radius, tree)
    upper = jax.tree.map(lambda _: radius, tree)
    return optax.projections.projection_box(tree, lower, upper)


def project_frobenius_ball(tree: PyTree, radius: float) -> PyTree:
    """Nearest point of the ball ``||tree||_F <= radius`` (all leaves as one vector)."""
    return optax.projections.projection_l2_ball(tree, radius)


def project_spectral_ball(matrix: Array, radius: float) -> Array:
    """Nearest point (in Frobenius norm) of the ball ``||W||_2 <= radius``:
    the singular values are clipped at ``radius``. A matrix already inside is
    returned unchanged (bit for bit), so the projection is idempotent on the
    interior; batched over leading axes."""
    u, s, vh = jnp.linalg.svd(matrix, full_matrices=False)
    clipped = (u * jnp.minimum(s, radius)[..., None, :]) @ vh
    inside = (s[..., 0] <= radius)[..., None, None]
    return jnp.where(inside, matrix, clipped)


def spectral_norm(matrix: Array) -> Array:
    """``||W||_2``, the largest singular value (batched over leading axes)."""
    return jnp.linalg.svd(matrix, compute_uv=False)[..., 0]


@dataclasses.dataclass(frozen=True)
class Box:
    """The box ``[-radius, radius]`` for every leaf."""

    radius: float

    def __call__(self, tree: PyTree) -> PyTree:
        return project_box(tree, self.radius)


@dataclasses.dataclass(frozen=True)
class FrobeniusBall:
    """The ball ``||theta||_F <= radius`` (the whole pytree as one vector)."""

    radius: float

    def __call__(self, tree: PyTree) -> PyTree:
        return project_frobenius_ball(tree, self.radius)


@dataclasses.dataclass(frozen=True)
class SpectralBall:
    """The ball ``||W||_2 <= radius`` of one matrix."""

    radius: float

    def __call__(self, matrix: Array) -> Array:
        return project_spectral_ball(matrix, self.radius)


@dataclasses.dataclass(frozen=True)
class Product:
    """The product set ``C_1 x ... x C_m`` for a tuple of parameters: the
    projection onto a product of sets projects each factor on its own."""

    factors: tuple

    def __call__(self, params: tuple) -> tuple:
        if len(params) != len(self.factors):
            raise ValueError(f"Product of {len(self.factors)} sets got {len(params)} parameters.")
        return tuple(project(p) for project, p in zip(self.factors, params))


WEIGHT_BALLS = {"spectral": SpectralBall, "frobenius": FrobeniusBall}


def weight_ball(kind: str, radius: float):
    """The projection onto the ball of ``kind`` (``spectral`` or ``frobenius``)."""
    if kind not in WEIGHT_BALLS:
        raise ValueError(f"weight ball must be one of {sorted(WEIGHT_BALLS)}, got {kind!r}.")
    if not radius > 0:
        raise ValueError(f"the weight ball's radius must be > 0, got {radius!r}.")
    return WEIGHT_BALLS[kind](float(radius))


def random_in_ball(key: Array, shape: tuple[int, ...], kind: str, radius: float) -> Array:
    """A Gaussian matrix rescaled onto the sphere of the ball (norm exactly
    ``radius``): the random weights a search starts from, as strong in norm as
    anything the search may reach."""
    weight_ball(kind, radius)  # validates
    return _random_in_ball(key, tuple(shape), kind, jnp.asarray(radius, jnp.float64))


@functools.partial(jax.jit, static_argnames=("shape", "kind"))
def _random_in_ball(key, shape, kind, radius):
    g = jax.random.normal(key, shape, jnp.float64)
    norm = spectral_norm(g) if kind == "spectral" else jnp.sqrt(
        jnp.sum(g**2, axis=(-2, -1)))
    return radius * g / norm[..., None, None]


# --- the ascent -----------------------------------------------------------------


class AscentResult(NamedTuple):
    """Output of :func:`ascend`; every array has a leading restart axis R.

    ``trace[r, t]`` is the objective at iterate t (t = 0 is the projected start,
    t = steps the last iterate) and ``aux_trace`` the objective's auxiliary
    output there (the objective itself when it has none).
    ``best_*`` is the iterate with the largest objective of each restart
    (NaN values never count as best); ``best_step`` its index.
    """

    best_params: PyTree
    best_value: Array
    best_aux: Array
    best_step: Array
    final_params: PyTree
    initial_params: PyTree
    trace: Array
    aux_trace: Array

    def best_so_far(self) -> Array:
        """The running maximum of ``trace`` along the steps (non-decreasing)."""
        filled = jnp.where(jnp.isnan(self.trace), -jnp.inf, self.trace)
        return jax.lax.cummax(filled, axis=1)


class LeafAdamState(NamedTuple):
    count: Array
    first_moment: PyTree
    second_moment: PyTree  # one scalar per leaf


def scale_by_leaf_adam(b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-30) -> optax.GradientTransformation:
    """Adam with one second moment per leaf: ``m_t = b1 m + (1 - b1) g`` per
    coordinate, ``v_t = b2 v + (1 - b2) mean(g^2)`` per leaf, update
    ``m_hat / (sqrt(v_hat) + eps)`` (bias-corrected, as in Adam). Each leaf's
    update is a positive multiple of its averaged gradient, so a projection onto
    any set that is a product over leaves keeps the KKT fixed points (see the
    module docstring). A leaf with an exactly zero gradient gets a zero update."""

    def init(params):
        return LeafAdamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                             jax.tree.map(lambda p: jnp.zeros([], p.dtype), params))

    def update(grads, state, params=None):
        del params
        first = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.first_moment, grads)
        second = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.mean(jnp.square(g)),
                              state.second_moment, grads)
        count = state.count + 1
        c1, c2 = 1 - b1**count, 1 - b2**count
        updates = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), first, second)
        return updates, LeafAdamState(count, first, second)

    return optax.GradientTransformation(init, update)


OPTIMIZERS = ("leaf-adam", "adam")


SCHEDULES = ("cosine", "constant")


def _optimizer(name: str, learning_rate: float, clip_norm: float, schedule: str,
               steps: int) -> optax.GradientTransformation:
    # NaN gradients (a norm at an exact zero, e.g. two identical value rows) are
    # zeroed rather than allowed to poison Adam's moments; the gradient's global
    # norm is clipped so that one spike cannot dominate the moments. A constant
    # Adam step keeps oscillating at about the step size around a maximum on the
    # boundary; the cosine decay (to 1% of the step) lets the last steps settle.
    rate = (optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01)
            if schedule == "cosine" else learning_rate)
    head = (optax.zero_nans(), optax.clip_by_global_norm(clip_norm))
    if name == "adam":
        return optax.chain(*head, optax.adam(rate))
    return optax.chain(*head, scale_by_leaf_adam(), optax.scale_by_learning_rate(rate))


@functools.partial(jax.jit, static_argnames=("objective", "project", "steps", "learning_rate",
                                             "clip_norm", "stochastic", "has_aux", "optimizer",
                                             "schedule"))
def _run_one(params, key, args, *, objective, project, steps, learning_rate, clip_norm,
             stochastic, has_aux, optimizer, schedule):
    """One restart: a ``lax.scan`` over the steps + 1 iterates. Restarts run one
    after another through this compiled function rather than under ``vmap``:
    on CPU the vmapped program compiled about twice as slowly, and the
    objectives here already work on a whole batch per step."""
    optimizer = _optimizer(optimizer, learning_rate, clip_norm, schedule, steps)

    def evaluate(params, key):
        call = (lambda p: objective(p, key, *args)) if stochastic else (lambda p: objective(p, *args))
        if has_aux:
            (value, aux), grads = jax.value_and_grad(call, has_aux=True)(params)
        else:
            value, grads = jax.value_and_grad(call)(params)
            aux = value
        return jnp.asarray(value), jnp.asarray(aux, jnp.result_type(value)), grads

    params = project(params)
    start = params

    # The objective appears once in the compiled program (no extra evaluation
    # after the loop); the update computed at the last iterate is discarded.
    def step(carry, t):
        params, opt_state, best = carry
        value, aux, grads = evaluate(params, jax.random.fold_in(key, t))
        best = _keep_best(best, params, value, aux, t)
        # Ascent: optax minimises, so it is given the gradient of -f.
        updates, new_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        new_params = project(optax.apply_updates(params, updates))
        last = t == steps
        params, opt_state = jax.tree.map(lambda old, new: jnp.where(last, old, new),
                                         (params, opt_state), (new_params, new_state))
        return (params, opt_state, best), (value, aux)

    best0 = (params, jnp.asarray(-jnp.inf), jnp.asarray(jnp.nan), jnp.asarray(0))
    (params, _, best), (trace, aux_trace) = jax.lax.scan(
        step, (params, optimizer.init(params), best0), jnp.arange(steps + 1))
    return best, params, start, trace, aux_trace


def _keep_best(best, params, value, aux, t):
    best_params, best_value, best_aux, best_step = best
    better = value > best_value  # False for NaN
    pick = functools.partial(jnp.where, better)
    return (jax.tree.map(pick, params, best_params), pick(value, best_value),
            pick(aux, best_aux), pick(t, best_step))


def ascend(objective: Callable[..., Any], init_params: PyTree, project: Callable[[PyTree], PyTree],
           steps: int, learning_rate: float, *, clip_norm: float = 1.0,
           key: Optional[Array] = None, args: tuple = (), has_aux: bool = False,
           optimizer: str = "leaf-adam", schedule: str = "cosine") -> AscentResult:
    """Projected gradient ascent on ``objective`` from R starting points at once.

    Args:
      objective: ``f(params, *args)`` (deterministic) or ``f(params, key, *args)``
        (stochastic: when ``key`` is given) returning a scalar, or
        ``(scalar, aux scalar)`` with ``has_aux``. Must be hashable (see the
        module docstring); ``args`` are passed traced, so changing them does
        not recompile.
      init_params: pytree whose leaves have a leading restart axis R.
      project: the projection onto the constraint set, applied to one
        restart's params (also to the starting point).
      steps: number of updates (``steps + 1`` iterates are evaluated).
      learning_rate: Adam's step size (about the step per coordinate).
      clip_norm: the gradient's global norm is clipped to this before Adam.
      optimizer: ``leaf-adam`` (default, :func:`scale_by_leaf_adam`) or
        ``adam`` (optax's per-coordinate Adam); see the module docstring.
      schedule: ``cosine`` (default: the step decays from ``learning_rate`` to
        1% of it over the steps) or ``constant``.
      key: PRNG key for a stochastic objective; restart r at step t uses
        ``fold_in(split(key, R)[r], t)``, a fresh key per step.

    Returns:
      :class:`AscentResult` (best and final iterates, their values, the trace).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    leaves = jax.tree.leaves(init_params)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("init_params must be a pytree of arrays with a leading restart axis.")
    restarts = jnp.shape(leaves[0])[0]
    if any(jnp.shape(leaf)[0] != restarts for leaf in leaves):
        raise ValueError("every leaf of init_params needs the same leading restart axis.")
    stochastic = key is not None
    keys = jax.random.split(key if stochastic else jax.random.PRNGKey(0), restarts)
    config = dict(objective=objective, project=project, steps=steps,
                  learning_rate=float(learning_rate), clip_norm=float(clip_norm),
                  stochastic=stochastic, has_aux=bool(has_aux), optimizer=optimizer,
                  schedule=schedule)
    runs = [_run_one(jax.tree.map(lambda a: a[r], init_params), keys[r], tuple(args), **config)
            for r in range(restarts)]
    best, final, start, trace, aux_trace = jax.tree.map(lambda *a: jnp.stack(a), *runs)
    return AscentResult(best[0], best[1], best[2], best[3], final, start, trace, aux_trace)


__all__ = [
    "AscentResult",
    "Box",
    "FrobeniusBall",
    "LeafAdamState",
    "OPTIMIZERS",
    "Product",
    "SCHEDULES",
    "SpectralBall",
    "WEIGHT_BALLS",
    "ascend",
    "project_box",
    "project_frobenius_ball",
    "project_spectral_ball",
    "random_in_ball",
    "scale_by_leaf_adam",
    "spectral_norm",
    "weight_ball",
]

"""Input models (Definition 3.1's X, Definition C.1's assumptions) and weights.

An input model draws ``X`` with independent, identically distributed entries
``X_ab = m + Z_ab`` where ``Z`` is centred. The bounds of Sections 4-6 need two
numbers from it:

* ``variance_proxy`` nu^2: ``E exp(t Z) <= exp(nu^2 t^2 / 2)`` for all real t
  (sub-Gaussian variance proxy of the centred entry);
* ``almost_sure_bound`` R: ``|X_ab| <= R`` surely (Definition C.1's bound, with
  probability one), or ``None`` when the law is unbounded (Gaussian).

Two attention modes (THEORY_NOTES "Setting"): in ``"self"`` mode the keys and
values are the query rows ``X`` themselves; in ``"cross"`` mode they come from an
independent ``Y`` with the same law, so that given ``x_i`` the scores
``u_ij = lambda x_i^T W_Q W_K^T y_j`` are independent over j.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from sparsity_theory import _checks

Array = jax.Array
# A dtype, or None for JAX's default float dtype (float32 unless 64-bit mode
# is on; see sparsity_theory.enable_x64 and _checks.check_dtype).
DType = Optional[Union[type, jnp.dtype, str]]

MODES = ("self", "cross")


def drawn_flat(draw, key: Array, shape: tuple[int, ...], *args, **kwargs) -> Array:
    """``draw(key, shape, ...)`` (a ``jax.random`` sampler) drawn as one flat
    vector and reshaped: the same numbers, bit for bit, since threefry numbers
    the entries of a draw in row-major order whatever its shape. Why: under
    ``vmap`` over keys, a draw of rank 2 becomes a rank-3 program, which XLA's
    CPU backend compiled about 4x slower (0.8-1.2 s against 0.2 s per sampler,
    jax 0.10.2, 2 cores), and every suite compiles its samplers per shape."""
    return draw(key, (math.prod(shape),), *args, **kwargs).reshape(shape)


class _EntryModel:
    """Shared validation: a positive spread parameter (named by ``_spread``) and
    a finite mean. Subclasses are frozen dataclasses."""

    _spread: ClassVar[str]
    _spread_label: ClassVar[str]

    def __post_init__(self):
        spread = _checks.check_positive(getattr(self, self._spread), self._spread_label)
        object.__setattr__(self, self._spread, spread)
        object.__setattr__(self, "mean", _checks.check_finite_scalar(self.mean, "mean"))

    @property
    def variance(self) -> float:
        """Variance of an entry."""
        raise NotImplementedError

    @property
    def variance_proxy(self) -> float:
        """Sub-Gaussian variance proxy nu^2 of a centred entry."""
        return self.variance


@dataclasses.dataclass(frozen=True)
class Uniform(_EntryModel):
    """Entries ``m + U``, ``U ~ Uniform[-radius, radius]``.

    Variance proxy ``radius^2 / 3`` (= the variance): Uniform is strictly sub-Gaussian, since
    ``E exp(tU) = sinh(t R)/(t R) = sum_j (tR)^{2j}/(2j+1)! <= sum_j (t^2R^2/6)^j/j!``
    because ``(2j+1)! >= 6^j j!``. Hoeffding's proxy ``radius^2`` is also valid
    but looser by a factor 3.
    """

    radius: float = 1.0
    mean: float = 0.0

    _spread = "radius"
    _spread_label = "radius (R)"

    @property
    def variance(self) -> float:
        return self.radius**2 / 3.0

    @property
    def almost_sure_bound(self) -> Optional[float]:
        return abs(self.mean) + self.radius

    def sample(self, key: Array, shape: tuple[int, ...], dtype: DType = None) -> Array:
        dtype = _checks.check_dtype(dtype)
        z = drawn_flat(jax.random.uniform, key, shape, dtype, minval=-self.radius,
                       maxval=self.radius)
        return z + jnp.asarray(self.mean, dtype)


@dataclasses.dataclass(frozen=True)
class Rademacher(_EntryModel):
    """Entries ``m + radius * xi``, ``xi = +-1`` with probability 1/2 each.

    Variance proxy ``radius^2`` (= the variance): ``cosh(tR) <= exp(t^2 R^2 / 2)``.
    """

    radius: float = 1.0
    mean: float = 0.0

    _spread = "radius"
    _spread_label = "radius (R)"

    @property
    def variance(self) -> float:
        return self.radius**2

    @property
    def almost_sure_bound(self) -> Optional[float]:
        return abs(self.mean) + self.radius

    def sample(self, key: Array, shape: tuple[int, ...], dtype: DType = None) -> Array:
        dtype = _checks.check_dtype(dtype)
        signs = drawn_flat(jax.random.rademacher, key, shape, dtype=dtype)
        return self.radius * signs + jnp.asarray(self.mean, dtype)


@dataclasses.dataclass(frozen=True)
class Gaussian(_EntryModel):
    """Entries ``N(mean, std^2)``: the paper's v1 setting. Unbounded (R = None)."""

    std: float = 1.0
    mean: float = 0.0

    _spread = "std"
    _spread_label = "std (sigma)"

    @property
    def variance(self) -> float:
        return self.std**2

    @property
    def almost_sure_bound(self) -> Optional[float]:
        return None

    def sample(self, key: Array, shape: tuple[int, ...], dtype: DType = None) -> Array:
        dtype = _checks.check_dtype(dtype)
        return self.std * drawn_flat(jax.random.normal, key, shape, dtype) + jnp.asarray(self.mean, dtype)


InputModel = Union[Uniform, Rademacher, Gaussian]


class AttentionWeights(NamedTuple):
    """Projection weights ``W_Q, W_K`` (d x d) and ``W_V`` (d x d_v) of Definition 3.1."""

    query: Array
    key: Array
    value: Array

    @property
    def score_matrix(self) -> Array:
        """``W = W_Q W_K^T``, so that ``u_ij = lambda x_i^T W y_j``."""
        return self.query @ self.key.T


def attention_weights(query, key, value) -> AttentionWeights:
    """Validated weights given by the user: finite, ``W_Q`` and ``W_K`` of one shape
    (d x d'), ``W_V`` with d rows."""
    for w, name in ((query, "W_Q"), (key, "W_K"), (value, "W_V")):
        _checks.check_ndim(w, 2, name)
        _checks.check_finite_array(w, name)
    if jnp.shape(query) != jnp.shape(key):
        raise ValueError(
            f"mismatched shapes: W_Q {jnp.shape(query)} and W_K {jnp.shape(key)} must match."
        )
    _checks.check_same(jnp.shape(value)[0], jnp.shape(query)[0], "W_V rows vs W_Q rows (d)")
    return AttentionWeights(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value))


def gaussian_weights(
    key: Array, d: int, scale: float = 1.0, value_dim: Optional[int] = None,
    dtype: DType = None,
) -> AttentionWeights:
    """Independent ``W_Q, W_K, W_V`` with entries ``N(0, scale^2 / d)``.

    With this normalisation ``||W||_2 -> 2 scale`` as d grows, and a unit-variance
    input row maps to a query of norm about ``scale sqrt(d)``.
    """
    d = _checks.check_int(d, "d")
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}.")
    scale = _checks.check_positive(scale, "scale")
    dv = d if value_dim is None else _checks.check_int(value_dim, "value_dim")
    dtype = _checks.check_dtype(dtype)
    kq, kk, kv = jax.random.split(key, 3)
    s = scale / math.sqrt(d)
    return AttentionWeights(
        s * drawn_flat(jax.random.normal, kq, (d, d), dtype),
        s * drawn_flat(jax.random.normal, kk, (d, d), dtype),
        s * drawn_flat(jax.random.normal, kv, (d, dv), dtype),
    )


def _haar_orthogonal(key: Array, d: int, dtype: DType) -> Array:
    # QR of a Gaussian matrix with the signs of R's diagonal fixed is Haar distributed.
    q, r = jnp.linalg.qr(drawn_flat(jax.random.normal, key, (d, d), dtype))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def orthogonal_weights(
    key: Array, d: int, scale: float = 1.0, dtype: DType = None
) -> AttentionWeights:
    """``W_Q, W_K, W_V`` each ``scale`` times an independent Haar orthogonal matrix,
    so every singular value equals ``scale`` (``||W_Q W_K^T||_2 = scale^2``)."""
    d = _checks.check_int(d, "d")
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}.")
    scale = _checks.check_positive(scale, "scale")
    dtype = _checks.check_dtype(dtype)
    kq, kk, kv = jax.random.split(key, 3)
    return AttentionWeights(
        scale * _haar_orthogonal(kq, d, dtype),
        scale * _haar_orthogonal(kk, d, dtype),
        scale * _haar_orthogonal(kv, d, dtype),
    )


class AttentionInputs(NamedTuple):
    """Query-side rows ``x`` (n x d) and key/value-side rows ``y`` (n x d).

    In self mode ``y`` is ``x``; in cross mode it is an independent draw.
    """

    x: Array
    y: Array


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    return mode


def sample_inputs(
    key: Array, n: int, d: int, model: InputModel, mode: str = "self",
    dtype: DType = None, rows: Optional[int] = None,
) -> AttentionInputs:
    """Draw ``X`` (and ``Y`` in cross mode) from ``model``. ``vmap`` over ``key``
    to draw many seeds at once (n, d, model, mode and rows are static).

    ``rows``: draw only the first ``rows`` query rows (row sampling): ``x`` is
    then (rows, d) and bit-identical to the first rows of the full draw (JAX's
    partitionable threefry gives each entry bits that depend on its position
    only), while ``y`` keeps all n rows. Rows are exchangeable, so the first
    ``rows`` are a uniformly random sample in law, and per-row statistics over
    them estimate the per-row rates without bias at a fraction of the cost.
    In self mode ``x`` is the first rows of ``y``.
    """
    n = _checks.check_int(n, "n")
    d = _checks.check_int(d, "d")
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got n={n}, d={d}.")
    check_mode(mode)
    dtype = _checks.check_dtype(dtype)
    if rows is None:
        rows = n
    rows = _checks.check_int(rows, "rows")
    if not 1 <= rows <= n:
        raise ValueError(f"rows must be in [1, n] = [1, {n}], got {rows}.")
    kx, ky = jax.random.split(key)
    if mode == "self":
        y = model.sample(kx, (n, d), dtype)
        return AttentionInputs(y[:rows], y)
    return AttentionInputs(model.sample(kx, (rows, d), dtype), model.sample(ky, (n, d), dtype))


def project(inputs: AttentionInputs, weights: AttentionWeights) -> tuple[Array, Array, Array]:
    """``Q = X W_Q``, ``K = Y W_K``, ``V = Y W_V`` (Definition 3.1)."""
    _checks.check_same(inputs.x.shape[-1], weights.query.shape[0], "X columns vs W_Q rows (d)")
    _checks.check_same(inputs.y.shape[-1], weights.key.shape[0], "Y columns vs W_K rows (d)")
    return inputs.x @ weights.query, inputs.y @ weights.key, inputs.y @ weights.value

"""Pure-NumPy reference for the per-row statistics of :func:`sparsity_theory.evaluate_rows`.

Independent of JAX: the scores ``scale * Q K^T`` are materialised (a block of
query rows at a time, so memory is O(block x n)), the top K = max(windows) of each
row are found with ``np.argpartition`` and only those K are sorted (value
descending, ties to the lower index, as ``lax.top_k``). Every quantity is then
formed in log space from the factorised forms of docs/definitions.md:

* ``log tau(k)``: log-sum-exp of the entries outside the top K plus a reverse
  cumulative log-sum-exp over the sorted top K (never ``log(1 - head)``);
* ``l1 = 2 tau``; ``l2^2 = (tau / (1 - tau))^2 sum_T s^2 + sum_{not T} s^2``;
  ``linf = max(s_(1) tau / (1 - tau), s_(k+1))``;
* ``output = tau ||mu_tail - mu_head||_2`` with s-weighted means of value rows,
  each weighted relative to its own largest logit (exact for tiny tails).

Two uses: a correctness oracle for the JAX engines (in float64 it agrees with
``evaluate_rows`` to about 1e-12 relative, counts exactly), and the NumPy
baseline the benchmark (:mod:`verify.bench`) compares against.

The certified window is censored at K + 1: the smallest k <= K with
``log tau(k) <= log eps``, else K + 1 (as ``stream_rows``; the exact window of
``evaluate_rows`` agrees with it wherever it is <= K).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

# Scores per block (rows x n) when block_rows is not given: 2^24 entries, i.e.
# 64 MiB of float32 scores (a few such temporaries live at once).
BLOCK_ELEMENTS = 2**24


class ReferenceStatistics(NamedTuple):
    """The fields of :class:`sparsity_theory.RowStatistics`, as NumPy arrays
    (leading axis m; ``certified_window`` censored at K + 1)."""

    log_normaliser: np.ndarray
    max_logit: np.ndarray
    min_logit: np.ndarray
    mean_logit: np.ndarray
    num_small: np.ndarray
    certified_window: np.ndarray
    log_tail_mass: np.ndarray
    log_l1_error: np.ndarray
    log_l2_error: np.ndarray
    log_linf_error: np.ndarray
    log_output_error: Optional[np.ndarray]


def _as_float(x, dtype=None) -> np.ndarray:
    x = np.asarray(x)
    if dtype is not None:
        return x.astype(dtype, copy=False)
    if not np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    return x


def _logsumexp_sorted_prefix(x: np.ndarray) -> np.ndarray:
    """``out[..., i] = logsumexp(x[..., :i+1])`` for x sorted in decreasing order
    along the last axis (terms relative to the first lie in (0, 1])."""
    return x[..., :1] + np.log(np.cumsum(np.exp(x - x[..., :1]), axis=-1))


def _logsumexp_after(x: np.ndarray) -> np.ndarray:
    """``out[..., i] = logsumexp(x[..., i+1:])`` (-inf for the last index), as a
    sequential reverse scan of logaddexp (the order the JAX code uses)."""
    xt = np.ascontiguousarray(np.moveaxis(x, -1, 0))  # scan over contiguous rows
    out = np.empty_like(xt)
    acc = np.full(xt.shape[1:], -np.inf, x.dtype)
    for i in range(xt.shape[0] - 1, -1, -1):
        out[i] = acc
        acc = np.logaddexp(acc, xt[i])
    return np.moveaxis(out, 0, -1)


def _log_norm(x: np.ndarray) -> np.ndarray:
    """``log ||x||_2`` over the last axis, scaled by the largest entry."""
    big = np.max(np.abs(x), axis=-1, keepdims=True)
    safe = np.where(big > 0, big, 1.0).astype(x.dtype)
    return np.log(big[..., 0]) + 0.5 * np.log(np.sum((x / safe) ** 2, axis=-1))


def top_k_sorted(u: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k largest entries of each row of ``u`` (b, n), sorted by value
    descending with ties to the lower index (``lax.top_k``'s order), and the
    (k+1)-th largest value of each row (-inf when k = n).

    ``np.argpartition`` finds a top-k set in O(n); when the k-th and (k+1)-th
    largest values are equal the set it picks among the tied entries is
    arbitrary, so those rows (rare for continuous data) are redone so that the
    lowest-indexed tied entries are kept.
    """
    b, n = u.shape
    rows = np.arange(b)[:, None]
    if k >= n:
        idx = np.broadcast_to(np.arange(n), (b, n)).copy()
        next_value = np.full(b, -np.inf, u.dtype)
    else:
        part = np.argpartition(u, n - k - 1, axis=1)
        idx = part[:, n - k:]
        next_value = u[np.arange(b), part[:, n - k - 1]]
        kth = u[rows, idx].min(axis=1)
        for r in np.flatnonzero(kth == next_value):  # a tie straddles the boundary
            above = np.flatnonzero(u[r] > kth[r])
            tied = np.flatnonzero(u[r] == kth[r])
            idx[r] = np.concatenate([above, tied[: k - above.size]])
    vals = u[rows, idx]
    order = np.lexsort((idx, -vals), axis=-1)
    return np.take_along_axis(idx, order, axis=1), next_value


def _block_statistics(u: np.ndarray, values: Optional[np.ndarray], windows: tuple[int, ...],
                      log_eps: np.ndarray) -> dict:
    b, n = u.shape
    dtype = u.dtype
    big_k = max(windows)
    pos = np.asarray(windows) - 1
    rows = np.arange(b)[:, None]

    idx, max_out = top_k_sorted(u, big_k)
    top = u[rows, idx]  # (b, K), largest first

    # Entries outside the top K, relative to their own maximum (the (K+1)-th
    # largest value): their sums keep full relative precision however small.
    none_out = max_out == -np.inf
    ref_out = np.where(none_out, 0, max_out).astype(dtype)
    buf = np.subtract(u, ref_out[:, None])
    w_out = np.exp(buf, out=buf)  # kept entries may overflow: zeroed next
    w_out[rows, idx] = 0
    sum_out = w_out.sum(axis=1)
    log_outside = np.where(none_out, -np.inf, ref_out + np.log(sum_out))
    log_outside_sq = np.where(
        none_out, -np.inf, 2 * ref_out + np.log(np.einsum("ij,ij->i", w_out, w_out)))
    mean_out = None
    if values is not None:  # mean of the value rows outside the top K
        mean_out = (w_out @ values) / np.where(none_out, 1, sum_out)[:, None]

    # The row's log-sum-exp from the same pieces (no second pass of exp).
    log_top_prefix = _logsumexp_sorted_prefix(top)  # unnormalised log heads
    lse = np.logaddexp(log_top_prefix[:, -1], log_outside)

    # |S_eps| = #{j : u_j - lse <= log eps}, the log formed exactly as the JAX
    # code does; counted as n minus the (usually few) entries above log eps.
    log_s = np.subtract(u, lse[:, None], out=buf)
    num_small = _count_at_most(log_s, log_eps)
    del buf, log_s, w_out

    # Window profile for every k = 1..K (index k - 1).
    log_tail = np.logaddexp(log_outside[:, None], _logsumexp_after(top)) - lse[:, None]
    log_tail_sq = np.logaddexp(log_outside_sq[:, None], _logsumexp_after(2 * top)) - 2 * lse[:, None]
    log_head = log_top_prefix - lse[:, None]
    log_head_sq = _logsumexp_sorted_prefix(2 * top) - 2 * lse[:, None]
    first_dropped = np.concatenate([top[:, 1:], max_out[:, None]], axis=1) - lse[:, None]
    log_ratio = log_tail - log_head
    log_l2 = 0.5 * np.logaddexp(2 * log_ratio + log_head_sq, log_tail_sq)
    log_linf = np.maximum((top[:, 0] - lse)[:, None] + log_ratio, first_dropped)

    below = log_tail[:, None, :] <= log_eps[None, :, None]  # (b, E, K)
    window = np.where(below.any(axis=2), below.argmax(axis=2) + 1, big_k + 1)

    out = dict(
        log_normaliser=lse, max_logit=top[:, 0], min_logit=u.min(axis=1),
        mean_logit=u.mean(axis=1), num_small=num_small, certified_window=window,
        log_tail_mass=log_tail[:, pos], log_l1_error=np.log(dtype.type(2.0)) + log_tail[:, pos],
        log_l2_error=log_l2[:, pos], log_linf_error=log_linf[:, pos], log_output_error=None,
    )
    if values is None:
        return out

    top_values = values[idx]  # (b, K, d_v)
    # Kept means per window: weights relative to the largest kept logit.
    head = np.arange(big_k)[None, :] <= pos[:, None]  # (W, K)
    w_head = np.where(head[None], np.exp(top - top[:, :1])[:, None, :], 0).astype(dtype)
    mu_head = np.matmul(w_head, top_values) / w_head.sum(axis=2)[:, :, None]  # (b, W, d_v)
    # Dropped means per window, relative to the largest dropped logit.
    nxt = np.minimum(pos + 1, big_k - 1)
    ref = np.where(pos[None, :] + 1 < big_k, top[:, nxt], max_out[:, None])  # (b, W)
    ref = np.where(ref == -np.inf, 0, ref).astype(dtype)
    w_drop = np.where(~head[None], np.exp(top[:, None, :] - ref[:, :, None]), 0).astype(dtype)
    w_rest = np.exp(log_outside[:, None] - ref)  # (b, W)
    total = w_drop.sum(axis=2) + w_rest
    mu_tail = np.matmul(w_drop, top_values) + w_rest[:, :, None] * mean_out[:, None, :]
    mu_tail = mu_tail / np.where(total > 0, total, 1)[:, :, None]
    out["log_output_error"] = log_tail[:, pos] + _log_norm(mu_tail - mu_head)
    return out


def _count_at_most(log_s: np.ndarray, log_eps: np.ndarray) -> np.ndarray:
    """``#{j : log_s[i, j] <= log_eps[e]}`` per row i and threshold e, (b, E)."""
    b, n = log_s.shape
    above = log_s > log_eps.min()
    if np.count_nonzero(above) > above.size // 8:  # dense: count directly
        return np.stack([np.count_nonzero(log_s <= le, axis=1) for le in log_eps], axis=1)
    r, c = np.nonzero(above)
    vals = log_s[r, c]
    return np.stack([n - np.bincount(r[vals > le], minlength=b) for le in log_eps], axis=1)


def reference_rows(queries, keys, values=None, *, windows=(1,), eps=(1e-3,), scale: float = 1.0,
                   block_rows: Optional[int] = None, dtype=None) -> ReferenceStatistics:
    """Per-row statistics of attention with scores ``scale * Q K^T``, in NumPy.

    Args:
      queries: (m, d) query rows; keys: (n, d); values: optional (n, d_v).
      windows: window sizes in [1, n]; eps: thresholds in (0, 1].
      scale: the score scale.
      block_rows: query rows per block (default: 2^24 / n scores per block,
        at most m); memory is O(block_rows x n).
      dtype: compute dtype (default: the inputs' float dtype; integers -> float64).

    Returns:
      :class:`ReferenceStatistics` (the RowStatistics fields; certified window
      censored at max(windows) + 1).
    """
    queries = _as_float(queries, dtype)
    dtype = np.result_type(queries.dtype, _as_float(keys).dtype) if dtype is None else dtype
    dtype = np.dtype(dtype)
    queries = queries.astype(dtype, copy=False)
    keys = _as_float(keys, dtype)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (m, d) and keys (n, d) expected, got {queries.shape} "
                         f"and {keys.shape}.")
    m, n = queries.shape[0], keys.shape[0]
    if values is not None:
        values = _as_float(values, dtype)
        if values.ndim != 2 or values.shape[0] != n:
            raise ValueError(f"values must be (n, d_v) with n = {n}, got {values.shape}.")
    windows = tuple(int(k) for k in np.atleast_1d(windows))
    if not windows or min(windows) < 1 or max(windows) > n:
        raise ValueError(f"windows must lie in [1, n] = [1, {n}], got {windows}.")
    eps64 = np.atleast_1d(np.asarray(eps, np.float64))
    if eps64.size == 0 or np.any(~(eps64 > 0)) or np.any(eps64 > 1):
        raise ValueError(f"eps must lie in (0, 1], got {eps!r}.")
    log_eps = np.log(eps64).astype(dtype)
    scale = dtype.type(scale)
    if block_rows is None:
        block_rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    block_rows = max(1, min(int(block_rows), max(m, 1)))

    parts = []
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        for start in range(0, m, block_rows):
            u = queries[start:start + block_rows] @ keys.T
            if scale != 1:
                u *= scale  # = scale * (Q K^T), as the JAX code rounds it
            parts.append(_block_statistics(u, values, windows, log_eps))
    if not parts:
        raise ValueError("queries must hold at least one row.")
    fields = {}
    for name in ReferenceStatistics._fields:
        if parts[0][name] is None:
            fields[name] = None
        else:
            fields[name] = np.concatenate([p[name] for p in parts], axis=0)
    return ReferenceStatistics(**fields)

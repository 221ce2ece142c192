"""The figures' common ground (matplotlib, Agg backend: no display needed).

A suite's ``figures`` takes its ``(cell, result)`` pairs and the run directory,
draws with :func:`pyplot` and writes each figure with :func:`save_figure`
(``DIR/figures/<name>.png`` and ``.pdf``), returning ``{"path", "caption"}``
with the path relative to DIR, for the Markdown report. The device and git
commit of the run are in the report beside the figure.

One style for every figure: :data:`STYLE` (font sizes, line widths, grid,
constrained layout, resolution). A figure function is decorated with
:func:`styled` (or draws inside ``with style():``), which applies the style
for the duration of the call only, through ``matplotlib.rc_context``: the
caller's matplotlib settings are left as they were. Conventions the figures
follow: every axis names its quantity and its scale ("(log scale)"); legends
sit outside the axes (:func:`legend_right`, :func:`legend_below`) or in empty
space, never over data.
"""

from __future__ import annotations

import contextlib
import functools
import os

# matplotlib's rcParams for every figure of the report (applied by ``style``).
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "figure.titlesize": 11.5,
    "legend.framealpha": 0.9,
    "legend.borderaxespad": 0.4,
    "lines.linewidth": 1.5,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2.5,
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "image.cmap": "viridis",
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,  # no overlapping titles, labels or legends
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (journals ask for it)
    "ps.fonttype": 42,
}


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported on first use: the
    package loads without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def style():
    """``with style() as plt:`` draw with :data:`STYLE`; matplotlib's settings
    are restored when the block ends (``matplotlib.rc_context``). Draw AND save
    inside the block: matplotlib reads some settings only when it draws."""
    import matplotlib

    plt = pyplot()
    with matplotlib.rc_context(STYLE):
        yield plt


def styled(draw):
    """Decorator for a figure function: the whole call runs inside :func:`style`."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with style():
            return draw(*args, **kwargs)

    return wrapper


def ticker():
    """``matplotlib.ticker`` (imported on first use, like :func:`pyplot`)."""
    import matplotlib.ticker

    return matplotlib.ticker


def readable_log_ticks(axis) -> None:
    """Plain-number tick labels (0.5, 0.6, 0.8, 1, 1.5; or 0.1, 0.2, 0.5, 1) on a log
    ``axis`` that spans two decades or less, where matplotlib would label one tick
    or crowd its minor ticks with powers of ten; wider axes keep matplotlib's
    powers of ten. Call after the limits are final."""
    ax = axis.axes  # get_ylim/get_xlim first apply any pending autoscaling
    low, high = sorted(ax.get_ylim() if axis is ax.yaxis else ax.get_xlim())
    if not 0 < low < high or high / low > 100:
        return
    subs = (1, 1.5, 2, 3, 4, 5, 6, 7, 8) if high / low <= 4 else (1, 2, 5) if high / low <= 30 else (1, 3)
    t = ticker()
    axis.set_major_locator(t.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(t.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(t.NullFormatter())


def legend_right(ax, **kwargs):
    """The legend of ``ax`` outside it, to its right (constrained layout makes room)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def legend_below(fig, handles, labels, ncol: int, **kwargs):
    """One legend for the whole figure, below its panels (constrained layout makes room)."""
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, **kwargs)


def save_figure(fig, out_dir: str, name: str, caption: str) -> dict:
    """Write ``fig`` to ``DIR/figures/<name>`` (PNG) and the same name with .pdf
    (vector, for papers); close it; return ``{"path", "caption"}`` (path of the
    PNG, relative to DIR). Saved with :data:`STYLE` in force (resolution, tight
    bounding box), whoever drew the figure.

    The layout and the tight bounding box are computed once, at the PNG's
    resolution, and both files are written with them: ``savefig(bbox_inches=
    "tight")`` would lay the figure out and draw it twice per file (for the
    quick preset's figures the constrained layouts took 10.6 of the 36 s of
    saving)."""
    import matplotlib

    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    rel = os.path.join("figures", name)
    with matplotlib.rc_context(STYLE):
        fig.set_dpi(STYLE["savefig.dpi"])
        fig.draw_without_rendering()  # runs the constrained layout
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(STYLE["savefig.pad_inches"])
        # Keep the layout just computed. The rc setting is off as well: savefig
        # restores the figure's engine on exit, and None would read it again.
        with matplotlib.rc_context({"figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)
            fig.savefig(os.path.join(out_dir, rel), dpi=STYLE["savefig.dpi"], bbox_inches=box)
            fig.savefig(os.path.join(out_dir, os.path.splitext(rel)[0] + ".pdf"), bbox_inches=box)
    pyplot().close(fig)
    return {"path": rel, "caption": caption}

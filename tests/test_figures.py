"""verify.report.figures: save_figure lays out once and writes what savefig with
a tight bounding box would have written."""

import numpy as np
import matplotlib
import pytest

from verify.report import figures


def _draw(plt):
    fig = plt.figure(figsize=(6, 3))
    rows = fig.subfigures(1, 2)
    for i, sub in enumerate(rows):
        ax = sub.subplots()
        ax.plot(np.arange(10), np.arange(10) ** (i + 1), "o-", label=f"power {i + 1}")
        ax.set_yscale("log")
        ax.set_title(f"panel {i}")
        ax.set_ylabel("a long label to make the layout work")
        figures.legend_right(ax)
    fig.suptitle("a title")
    return fig


def test_png_equals_savefig_tight_and_the_pdf_is_written(tmp_path):
    plt = figures.pyplot()
    with figures.style():
        ours = figures.save_figure(_draw(plt), str(tmp_path), "ours.png", "c")
        reference = _draw(plt)
        reference.savefig(tmp_path / "reference.png", dpi=figures.STYLE["savefig.dpi"],
                          bbox_inches="tight")
        plt.close(reference)
    assert ours == {"path": "figures/ours.png", "caption": "c"}
    a = plt.imread(tmp_path / "figures" / "ours.png")
    b = plt.imread(tmp_path / "reference.png")
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "figures" / "ours.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_callers_settings_are_left_alone(tmp_path):
    before = dict(matplotlib.rcParams)
    figures.save_figure(_draw(figures.pyplot()), str(tmp_path), "f.png", "c")
    assert dict(matplotlib.rcParams) == before


def test_an_unwritable_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        figures.save_figure(_draw(figures.pyplot()), str(blocker), "f.png", "c")

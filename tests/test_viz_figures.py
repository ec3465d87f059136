"""Figure helpers of notebooks 03-05 (klsc_lib.viz.sae_training, viz.explanations,
analysis.raters.plots): the plotted data are the inputs, panel by panel."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from klsc_lib.analysis.raters.plots import paper_tables_figure  # noqa: E402
from klsc_lib.paper_values import TABLE4, TABLE6, TABLE7  # noqa: E402
from klsc_lib.viz.explanations import strength_curve  # noqa: E402
from klsc_lib.viz.sae_training import depth_bars, monosemanticity_figure, training_curves  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_training_curves_plot_each_run_in_every_panel_with_its_reference():
    h = SimpleNamespace(step=[0, 10, 20], fvu=[1.0, 0.5, 0.1], l0=[8, 8, 8], dead_frac=[0.0, 0.1, 0.2])
    fig = training_curves({"a": h, "b": h}, (0.05, 8, 0.1), 100, "t")
    axes = fig.axes
    assert len(axes) == 3 and axes[0].get_yscale() == "log"
    for ax, values, ref in zip(axes, (h.fvu, h.l0, h.dead_frac), (0.05, 8, 0.1)):
        lines = ax.get_lines()
        assert [list(l.get_ydata()) for l in lines[:2]] == [list(values)] * 2
        assert list(lines[2].get_ydata()) == [ref, ref]  # the dashed reference


def test_monosemanticity_bars_are_fractions_of_units_above_the_threshold():
    m = SimpleNamespace(score_U=np.array([0.9, 0.8, 0.1, 0.6]), best_factor_U=np.array([0, 1, 1, 0]))
    fig = monosemanticity_figure({"features": m}, ["digit", "colour"], 20)
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert heights == pytest.approx([2 / 4, 1 / 4])


def test_depth_bars_and_strength_curve_show_their_inputs():
    res = SimpleNamespace(explained_variance=0.9, dead_frac=0.2)
    fig = depth_bars({"stages.1.blocks.0": (100, res), "stages.2.blocks.2": (200, res)}, 0.8, "t")
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.9, 0.9])
    rows = [(0.0, 0.1, 0.2), (1.0, 0.5, 0.4)]
    fig = strength_curve(rows, [(1.0, 0.3), (6.0, 29.7)])
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [0.1, 0.5] and len(fig.axes) == 2


def test_paper_tables_figure_draws_wilson_intervals_for_table7():
    human = {m: 2.0 for m in TABLE4}
    fig = paper_tables_figure(TABLE4, TABLE6, TABLE7, human)
    bars = fig.axes[2].patches
    assert [b.get_height() for b in bars] == pytest.approx([v["success_rate"] for v in TABLE7.values()])
    r = TABLE7["Feature"]["success_rate"]
    ci = stats.binomtest(round(100 * r), 100).proportion_ci(method="wilson")
    assert 0 < ci.low < r < ci.high < 1

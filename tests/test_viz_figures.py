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


def _inside_figure(fig, artist) -> bool:
    """Whether a text artist is drawn wholly inside the figure (not clipped at its edge)."""
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1


def test_paper_tables_start_at_zero_with_titles_inside_the_figure():
    human = {m: 2.0 for m in TABLE4}
    fig = paper_tables_figure(TABLE4, TABLE6, TABLE7, human)
    assert [ax.get_ylim()[0] for ax in fig.axes[:3]] == [0, 0, 0]
    for ax in fig.axes[:3]:  # each title inside the figure and no wider than its own panel
        box, panel = ax.title.get_window_extent(), ax.get_window_extent()
        assert ax.get_title() and _inside_figure(fig, ax.title), ax.get_title()
        assert box.x0 >= panel.x0 - 2 and box.x1 <= panel.x1 + 2, ax.get_title()


def test_method_rows_write_column_titles_and_a_label_under_each_image():
    import torch

    from klsc_lib.viz.explanations import column_panels, method_rows

    psi = torch.tensor([[0.5, 0.1], [2.0, 0.3], [1.0, 0.2]])
    samples = {m: (torch.zeros(3, 2, 3, 4, 4), psi * (i + 1)) for i, m in enumerate(("TopK", "EnergyDPS"))}
    names = ["feature 4\nsize=12px", "feature 7\ncolour=red", "feature 9\ndigit=3"]
    panels, titles, cells = column_panels(samples, ["TopK", "EnergyDPS"], [2, 0], names, torch.tensor([1.0, 2.0, 4.0]))
    assert titles == ["feature 9\ndigit=3\nt 4.00", "feature 4\nsize=12px\nt 1.00"]
    assert cells[""]["EnergyDPS"] == ["psi 2.00", "psi 1.00"]  # the first sample of units 2 and 0, x2
    fig = method_rows(panels, None, "t", col_titles=titles, cell_labels=cells)
    axes = fig.axes
    assert [a.get_title() for a in axes[:2]] == titles
    assert [a.get_xlabel() for a in axes[2:4]] == ["psi 2.00", "psi 1.00"]
    assert axes[2].get_ylabel() == "EnergyDPS"


def test_method_rows_title_fits_inside_a_narrow_figure():
    """A long title (notebook 04's Fig 4 names every matched method) is wrapped, not cut at the edges."""
    import torch

    from klsc_lib.viz.explanations import method_rows

    panels = {"f0": {"TopK": torch.zeros(4, 3, 4, 4)}}
    title = "Fig 4: " + " ".join(f"method{i}" for i in range(30)) + "\nsecond line"
    fig = method_rows(panels, None, title)
    fig.canvas.draw()
    box, frame = fig._suptitle.get_window_extent(), fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1
    assert fig._suptitle.get_text().replace("\n", " ").split() == title.split()  # every word kept, in order
    plt.close(fig)


def test_feature_panels_caption_psi_as_a_fraction_of_t():
    import torch

    from klsc_lib.viz.explanations import feature_panels

    samples = {"EnergyDPS": (torch.zeros(2, 2, 3, 4, 4), torch.tensor([[0.6, 0.8], [1.0, 1.0]]))}
    _, captions = feature_panels(samples, ["EnergyDPS"], [0], ["f0", "f1"], torch.tensor([1.4, 2.0]))
    assert captions == {"f0": {"EnergyDPS": "psi 0.70 = 0.50 t"}}


def test_metric_bars_grid_log_axes_and_intervals():
    from klsc_lib.viz.explanations import metric_bars

    table = {"MACO": {"a": (0.5, 0.4, 0.6), "KID": (1.5, 1.4, 1.6)},
             "EnergyDPS": {"a": (0.9, 0.8, 1.0), "KID": (0.03, -0.01, 0.07)}}
    fig = metric_bars(table, ["a", "KID", "a"], "t", ncols=2, log=("KID",), log_floor=1e-3)
    axes = fig.axes
    assert len(axes) == 4 and not axes[3].axison  # 2 x 2 grid, the spare panel hidden
    assert axes[0].get_yscale() == "linear" and axes[1].get_yscale() == "log"
    assert axes[1].get_ylim()[0] == pytest.approx(1e-3)
    tops = [p.get_y() + p.get_height() for p in axes[1].patches]
    assert tops == pytest.approx([1.5, 0.03])  # bars end at the means, drawn up from the floor
    lows = [seg[0][1] for seg in axes[1].collections[0].get_segments()]
    assert lows == pytest.approx([1.4, 1e-3])  # a negative interval end drawn at the floor
    assert [p.get_height() for p in axes[0].patches] == pytest.approx([0.5, 0.9])


def test_metric_scatter_places_each_method_at_its_means_with_both_intervals():
    from klsc_lib.viz.explanations import metric_scatter

    table = {"q*": {"p": (1.0, 0.9, 1.1), "c": (0.6, 0.5, 0.7)}, "MACO": {"p": (1.02, 1.0, 1.05), "c": (-0.2, -0.3, 0.0)}}
    fig = metric_scatter(table, "p", "c", "t", xline=1.0)
    ax = fig.axes[0]
    assert [a.get_text() for a in ax.texts] == ["q*", "MACO"]
    assert [a.xy for a in ax.texts] == [(1.0, 0.6), (1.02, -0.2)]
    ends = {tuple(np.round(seg[:, k], 6)) for c in ax.collections for seg in c.get_segments() for k in (0, 1)
            if np.ptp(seg[:, k]) > 0}
    assert (0.9, 1.1) in ends and (-0.3, 0.0) in ends  # x interval of q*, y interval of MACO
    assert ax.get_xlabel() == "p" and ax.get_ylabel() == "c"


def test_strength_curve_labels_points_in_the_texts_units():
    rows = [(0.0, 0.1, 0.05), (0.2, 0.6, 0.03), (2.0, 1.4, 1.4)]
    fig = strength_curve(rows, [(1.0, 0.3)], unit=500.0, unit_name="strength x steps",
                         kid_label="KID vs real held-out images", paper_kid_label="KID vs unguided samples")
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["0", "100", "1000"]
    assert "strength x steps" in fig.axes[0].get_title()
    assert fig.axes[0].get_ylabel() == "KID vs real held-out images"
    assert fig.axes[1].get_ylabel() == "KID vs unguided samples"

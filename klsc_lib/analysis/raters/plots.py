"""Grouped bar charts of rater-study tables (paper Tables 4, 6, 7), with CIs where known."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from klsc_lib.analysis.raters.analysis import Estimate
from klsc_lib.analysis.raters.packets import Packet


def bar_table(ax, table: Mapping[str, Mapping[str, Estimate | float]], title: str, ylabel: str = "mean score (1-4)",
              ylim: tuple[float, float] | None = (1, 4)) -> None:
    """Bars ``table[row][column]`` grouped by row; an :class:`Estimate` gets its CI as an error bar."""
    rows = list(table)
    cols = list(dict.fromkeys(c for r in rows for c in table[r]))
    width = 0.8 / len(cols)
    for j, c in enumerate(cols):
        vals = [table[r].get(c) for r in rows]
        mean = np.array([np.nan if v is None else getattr(v, "mean", v) for v in vals], float)
        err = np.array([[v.mean - v.low, v.high - v.mean] if isinstance(v, Estimate) else [0, 0]
                        for v in vals], float).T
        x = np.arange(len(rows)) + (j - (len(cols) - 1) / 2) * width
        ax.bar(x, mean, width, label=c, yerr=err if err.any() else None, capsize=2)
    ax.set_xticks(np.arange(len(rows)), rows)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, ncol=2)


def packet_examples(packet: Packet, n: int = 3):
    """The first ``n`` grids of a packet as a rater sees them, titled by item id only."""
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    for ax, item_id in zip(axes[0], packet.item_ids):
        ax.imshow(plt.imread(packet.grid_path(item_id)))
        ax.set_title(f"item {item_id}", fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    return fig


def paper_tables_figure(table4: Mapping, table6: Mapping, table7: Mapping, human_mean: Mapping[str, float]):
    """The paper's rater tables side by side: Table 6 per rater, Table 4 per rater kind
    (with the plain mean of Table 6's humans beside its Human column) and Table 7's
    success rates with Wilson 95 % intervals for 100 units per kind (App K.2). Every
    y-axis starts at 0, so bar heights compare as ratios."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [3, 2, 1.3]},
                             layout="constrained")
    bar_table(axes[0], table6, "paper Table 6: per rater", ylim=(0, 4))
    bar_table(axes[1], {m: {"Human": v["Human"], "mean of H1-4": human_mean[m], "GPT": v["GPT"],
                            "Gemini": v["Gemini"]} for m, v in table4.items()},
              "paper Table 4, with the mean of\nTable 6's four humans", ylim=(0, 4))
    rates = [v["success_rate"] for v in table7.values()]
    ci = [stats.binomtest(round(100 * r), 100).proportion_ci(method="wilson") for r in rates]
    axes[2].bar(list(table7), rates, yerr=np.array([[r - c.low, c.high - r] for r, c in zip(rates, ci)]).T,
                capsize=3, color=["tab:gray", "tab:green"])
    axes[2].set_title("paper Table 7: success rate\n(score > 2.5, Wilson 95 % CI)", fontsize=10)
    axes[2].set_ylim(0, 1)
    return fig

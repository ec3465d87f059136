"""Grouped bar charts of rater-study tables (paper Tables 4, 6, 7), with CIs where known."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np

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

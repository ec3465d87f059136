"""Figures of notebook 04 (paper Fig 4, Tables 3, 10, 11, App L.3, L.5): image rows per
method, strips along a knob, and per-method bars with confidence intervals."""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_rgb(x_CHW: torch.Tensor) -> np.ndarray:
    """An image in [-1, 1] as an (H, W, C) array in [0, 1]."""
    return ((x_CHW.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()


def method_rows(panels: Mapping[str, Mapping[str, torch.Tensor]],
                captions: Mapping[str, Mapping[str, str]] | None = None, title: str = "",
                col_titles: Sequence[str] | None = None,
                cell_labels: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> plt.Figure:
    """Fig 4 layout: one block per panel (a feature), a row per method, its images
    (K, C, H, W) side by side; ``captions[panel][method]`` is written left of the row,
    ``col_titles[j]`` above column j and ``cell_labels[panel][method][j]`` under image j."""
    n_img = max(len(x) for rows in panels.values() for x in rows.values())
    n_rows = sum(len(rows) for rows in panels.values())
    extra = 0.25 * (max((len(t.splitlines()) for t in col_titles), default=0) if col_titles else 0)
    cell_h = 1.3 + (0.2 if cell_labels else 0)
    fig, axes = plt.subplots(n_rows, n_img, figsize=(1.3 * n_img + 2.4, cell_h * n_rows + 0.7 + extra),
                             squeeze=False)
    r = 0
    for panel, rows in panels.items():
        for method, images in rows.items():
            labels = (cell_labels or {}).get(panel, {}).get(method, ())
            for j in range(n_img):
                ax = axes[r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(images):
                    ax.imshow(to_rgb(images[j]), interpolation="nearest")
                    if j < len(labels):
                        ax.set_xlabel(labels[j], fontsize=7, labelpad=2)
                else:
                    ax.axis("off")
            cap = (captions or {}).get(panel, {}).get(method, "")
            axes[r, 0].set_ylabel("\n".join(t for t in (panel, method, cap) if t), rotation=0, ha="right",
                                  va="center", fontsize=7)
            r += 1
    for j, t in enumerate(col_titles or ()):
        axes[0, j].set_title(t, fontsize=7)
    width = int(fig.get_figwidth() * 11)  # characters of a 9 pt title that fit on a line (DejaVu Sans ~6 pt each)
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=9)
    fig.tight_layout()
    return fig


def feature_panels(samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], methods: Sequence[str],
                   idx: Sequence[int], labels: Sequence[str], target_U: torch.Tensor
                   ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, str]]]:
    """(panels, captions) of :func:`method_rows` for the units at positions ``idx``:
    ``samples[method] = (images_UNCHW, psi_UN)``, each row captioned with its mean psi
    as a fraction of the unit's target t (the psi reached by that method)."""
    panels = {labels[i]: {m: samples[m][0][i] for m in methods} for i in idx}
    captions = {labels[i]: {m: psi_caption(float(samples[m][1][i].mean()), float(target_U[i])) for m in methods}
                for i in idx}
    return panels, captions


def psi_caption(psi: float, t: float) -> str:
    """``psi 0.68 = 0.99 t``: a mean psi and its fraction of the target t."""
    return f"psi {psi:.2f} = {psi / t:.2f} t" if t else f"psi {psi:.2f}"


def column_panels(samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], methods: Sequence[str],
                  idx: Sequence[int], names: Sequence[str], target_U: torch.Tensor, k: int = 0
                  ) -> tuple[dict[str, dict[str, torch.Tensor]], list[str], dict[str, dict[str, list[str]]]]:
    """One sample (the ``k``-th) of each unit at positions ``idx``, a column per unit, a
    row per method: (panels, column titles ``names[i]`` with t, psi under each image)."""
    panels = {"": {m: samples[m][0][list(idx), k] for m in methods}}
    titles = [f"{names[i]}\nt {float(target_U[i]):.2f}" for i in idx]
    cells = {"": {m: [f"psi {float(samples[m][1][i, k]):.2f}" for i in idx] for m in methods}}
    return panels, titles, cells


def strip(images_KCHW: torch.Tensor, labels: Sequence[str], title: str = "", rows: int = 1) -> plt.Figure:
    """Images along a knob (targets, task weights), ``rows`` samples per column
    (images ordered column-major: column j holds images j*rows ... j*rows + rows - 1)."""
    cols = len(images_KCHW) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows + 0.6), squeeze=False)
    for j in range(cols):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(to_rgb(images_KCHW[j * rows + i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(labels[j], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def metric_bars(table: Mapping[str, Mapping[str, tuple[float, float, float]]], metrics: Sequence[str],
                title: str = "", ncols: int | None = None, log: Sequence[str] = (),
                log_floor: float = 1e-3) -> plt.Figure:
    """One panel per metric (``ncols`` panels a row), a bar per method with its interval
    ``(mean, low, high)``. Metrics in ``log`` get a log y-axis from ``log_floor``; a bar or
    interval end below it (KID can be negative) is drawn down to the floor."""
    ncols = ncols or len(metrics)
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows + 0.4), squeeze=False,
                             layout="constrained")
    methods = list(table)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes.flat, metrics):
        vals = [table[k].get(m, (np.nan,) * 3) for k in methods]
        mean = np.array([v[0] for v in vals], float)
        low, high = np.array([v[1] for v in vals], float), np.array([v[2] for v in vals], float)
        if m in log:
            mean, low, high = (np.maximum(a, log_floor) for a in (mean, low, high))
            ax.set_yscale("log")
            ax.set_ylim(log_floor, max(1.5 * np.nanmax(high), 10 * log_floor))
        bottom = log_floor if m in log else 0.0
        ax.bar(range(len(methods)), mean - bottom, yerr=np.stack([mean - low, high - mean]), capsize=3,
               color=colours[:len(methods)], bottom=bottom)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=7)
        ax.set_title(m + (" (log)" if m in log else ""), fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return fig


def metric_scatter(table: Mapping[str, Mapping[str, tuple[float, float, float]]], x: str, y: str,
                   title: str = "", xline: float | None = None) -> plt.Figure:
    """One labelled point per method at (mean ``x``, mean ``y``) with both intervals, e.g.
    concept accuracy against psi / t; ``xline`` marks a reference x (t itself)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (m, row) in enumerate(table.items()):
        (xm, xl, xh), (ym, yl, yh) = row[x], row[y]
        ax.errorbar([xm], [ym], xerr=[[xm - xl], [xh - xm]], yerr=[[ym - yl], [yh - ym]], fmt="o", capsize=3,
                    color=colours[k % len(colours)])
        ax.annotate(m, (xm, ym), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if xline is not None:
        ax.axvline(xline, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    return fig


def strength_curve(rows: Sequence[tuple[float, float, float]], paper: Sequence[tuple[float, float]] = (),
                   title: str = "Strength ablation (Table 10 analogue)", unit: float = 1.0,
                   unit_name: str = "x", kid_label: str = "KID (backbone features)",
                   paper_kid_label: str = "KID") -> plt.Figure:
    """KID against mean psi along the guidance strength (rows ``(multiple, psi, KID)``),
    each point labelled by ``multiple * unit`` in ``unit_name`` (e.g. strength x steps);
    the paper's (activation, KID) pairs in a second panel when given (their scales
    differ from ours)."""
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(8.5 if paper else 4.5, 3.4), squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    ax.plot([r[1] for r in rows], [r[2] for r in rows], "o-")
    for s, p, k in rows:
        label = f"x{s:g}" if unit_name == "x" else f"{s * unit:g}"
        ax.annotate(label, (p, k), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.margins(0.12)  # room for the labels of the end points
    ax.set(xlabel="mean psi", ylabel=kid_label,
           title="ours" + ("" if unit_name == "x" else f" (points: {unit_name})"))
    if paper:
        ax = axes[0, 1]
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "s-", color="C1")
        ax.set(xlabel="mean activation", ylabel=paper_kid_label, title="paper (Table 10)")
    fig.suptitle(title, fontsize=9)
    return fig

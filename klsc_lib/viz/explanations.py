"""Figures of notebook 04 (paper Fig 4, Tables 3, 10, 11, App L.3, L.5): image rows per
method, strips along a knob, and per-method bars with confidence intervals."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_rgb(x_CHW: torch.Tensor) -> np.ndarray:
    """An image in [-1, 1] as an (H, W, C) array in [0, 1]."""
    return ((x_CHW.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()


def method_rows(panels: Mapping[str, Mapping[str, torch.Tensor]],
                captions: Mapping[str, Mapping[str, str]] | None = None, title: str = "") -> plt.Figure:
    """Fig 4 layout: one block per panel (a feature), a row per method, its images
    (K, C, H, W) side by side; ``captions[panel][method]`` is written left of the row."""
    n_img = max(len(x) for rows in panels.values() for x in rows.values())
    n_rows = sum(len(rows) for rows in panels.values())
    fig, axes = plt.subplots(n_rows, n_img, figsize=(1.3 * n_img + 2.2, 1.3 * n_rows + 0.6), squeeze=False)
    r = 0
    for panel, rows in panels.items():
        for method, images in rows.items():
            for j in range(n_img):
                ax = axes[r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(images):
                    ax.imshow(to_rgb(images[j]), interpolation="nearest")
                else:
                    ax.axis("off")
            cap = (captions or {}).get(panel, {}).get(method, "")
            axes[r, 0].set_ylabel(f"{panel}\n{method}\n{cap}", rotation=0, ha="right", va="center", fontsize=7)
            r += 1
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def feature_panels(samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], methods: Sequence[str],
                   idx: Sequence[int], labels: Sequence[str], target_U: torch.Tensor
                   ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, str]]]:
    """(panels, captions) of :func:`method_rows` for the units at positions ``idx``:
    ``samples[method] = (images_UNCHW, psi_UN)``, each row captioned with its mean psi
    against the unit's target t."""
    panels = {labels[i]: {m: samples[m][0][i] for m in methods} for i in idx}
    captions = {labels[i]: {m: f"psi {samples[m][1][i].mean():.2f} / t {target_U[i]:.2f}" for m in methods}
                for i in idx}
    return panels, captions


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
                title: str = "") -> plt.Figure:
    """One panel per metric, a bar per method: (mean, low, high) from a bootstrap."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    methods = list(table)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes[0], metrics):
        vals = [table[k].get(m, (np.nan,) * 3) for k in methods]
        mean = np.array([v[0] for v in vals])
        err = np.array([[v[0] - v[1], v[2] - v[0]] for v in vals]).T
        ax.bar(range(len(methods)), mean, yerr=err, capsize=3, color=colours[:len(methods)])
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def strength_curve(rows: Sequence[tuple[float, float, float]], paper: Sequence[tuple[float, float]] = (),
                   title: str = "Strength ablation (Table 10 analogue)") -> plt.Figure:
    """KID against mean psi along the guidance strength (rows ``(multiple, psi, KID)``),
    each point labelled by its multiple; the paper's (activation, KID) pairs in a
    second panel when given (their scales differ from ours)."""
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(8.5 if paper else 4.5, 3.4), squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    ax.plot([r[1] for r in rows], [r[2] for r in rows], "o-")
    for s, p, k in rows:
        ax.annotate(f"x{s:g}", (p, k), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.margins(0.12)  # room for the labels of the end points
    ax.set(xlabel="mean psi", ylabel="KID (backbone features)", title="ours")
    if paper:
        ax = axes[0, 1]
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "s-", color="C1")
        ax.set(xlabel="mean activation", ylabel="KID", title="paper (Table 10)")
    fig.suptitle(title, fontsize=9)
    return fig

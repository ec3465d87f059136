"""Figures of notebook 03 (paper Sec 3.1, App C, J.1, L.1, L.2.1): training curves of
the transcoders, features vs neurons by ground-truth factor, and the hook-depth bars."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np


def training_curves(histories: Mapping[str, object], refs: tuple[float, float, float], dead_window: int,
                    title: str) -> plt.Figure:
    """FVU (log), L0 and dead fraction along training, one line per run
    (``histories[label]`` has ``step, fvu, l0, dead_frac``); ``refs`` = the dashed
    reference of each panel (1 - EV target, k, dead target)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    for label, h in histories.items():
        for ax, values in zip(axes, (h.fvu, h.l0, h.dead_frac)):
            ax.plot(h.step, values, label=label)
    ylabels = ("FVU (train batch)", "non-zeros per position", f"silent for {dead_window} steps")
    titles = ("Unexplained variance (target dashed)", "L0 (k dashed)", "Dead fraction (target dashed)")
    for ax, ref, ylabel, panel in zip(axes, refs, ylabels, titles):
        ax.axhline(ref, ls="--", c="k")
        ax.set(xlabel="step", ylabel=ylabel, title=panel)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(title)
    return fig


def monosemanticity_figure(studies: Mapping[str, object], factor_names: Sequence[str], top_n: int,
                           threshold: float = 0.5, title: str = "") -> plt.Figure:
    """Left: histogram of each unit set's best-factor purity (``score_U``); right: per
    factor, the fraction of units monosemantic for it (purity > ``threshold``)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    for name, m in studies.items():
        axes[0].hist(m.score_U, np.linspace(-0.2, 1, 25), alpha=0.5,
                     weights=np.full(len(m.score_U), 1 / len(m.score_U)), label=f"{name} (n={len(m.score_U)})")
    axes[0].axvline(threshold, c="k", ls="--", label="success threshold")
    axes[0].set(xlabel="best-factor purity of top images (chance-corrected)", ylabel="fraction of units",
                title=f"Monosemanticity, top-{top_n} images")
    axes[0].legend(fontsize=8)
    x, width = np.arange(len(factor_names)), 0.8 / len(studies)
    for j, (name, m) in enumerate(studies.items()):
        frac = np.bincount(m.best_factor_U[m.score_U > threshold], minlength=len(x)) / len(m.score_U)
        axes[1].bar(x + (j - (len(studies) - 1) / 2) * width, frac, width, label=name)
    axes[1].set(xticks=x, xticklabels=list(factor_names), ylabel="fraction of units monosemantic for it",
                title="Which factor they encode")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def depth_bars(runs: Mapping[str, tuple[int, object]], ev_target: float, title: str) -> plt.Figure:
    """Held-out explained variance and dead fraction per hooked block (``runs[block] =
    (steps, held-out result)``, in depth order), the EV target dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    names = [f"{b.replace('stages.', 's').replace('.blocks.', '.b')}\n{s} steps" for b, (s, _) in runs.items()]
    for ax, key, ylabel in zip(axes, ("explained_variance", "dead_frac"),
                               ("held-out explained variance", "dead fraction")):
        ax.bar(names, [getattr(res, key) for _, res in runs.values()], color="tab:blue")
        ax.set(ylabel=ylabel, title=f"{ylabel} by hook depth (shallow to deep)")
    axes[0].axhline(ev_target, ls="--", c="k")
    fig.suptitle(title)
    return fig

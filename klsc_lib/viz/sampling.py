"""Figures of notebook 02 (paper Fig 3, Fig 2 analogue, App E-I on the GMM toy)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from klsc_lib.analysis.kde import Grid2D
from klsc_lib.studies.nb02_sampling_pathologies import METHODS, ExactVsPlugin, mean_sd
from klsc_lib.constraints.calibration import Calibrated
from klsc_lib.diffusion.gmm_oracle import GaussianMixture

def knob_text(method: str, res: Calibrated) -> str:
    """'k = 18,838' (retrieval), 'beta = 3.2' (OR), 'lambda = 0.41' (EnergyDPS) in mathtext."""
    if method.startswith("retrieval"):
        return f"$k$ = {int(res.knob):,}"
    return ("$\\beta$" if method.startswith("OR") else "$\\lambda$") + f" = {res.knob:.3g}"


def _contours(ax, grid: Grid2D, values_G: torch.Tensor, **kw) -> None:
    ax.contour(grid.axis_G.numpy(), grid.axis_G.numpy(), values_G.reshape(grid.n, grid.n).numpy(), **kw)
    ax.set(xlim=(grid.lo, grid.hi), ylim=(grid.lo, grid.hi), aspect="equal", xticks=[], yticks=[])


def fig3(grid: Grid2D, gmm: GaussianMixture, psi, prior_samples: torch.Tensor,
         calibrated: Mapping[tuple[str, float], Calibrated], exact_samples: Mapping[float, torch.Tensor], kl: Mapping,
         kl_exact: Mapping[float, float]):
    """Paper Fig 3 analogue: column 0 the baseline (prior samples over psi's contours),
    then one column per level t and one row per method of ``METHODS`` and a last row of
    exact-tilt samples; right, KDE-KL mean +- SD."""
    targets = sorted(kl_exact)
    prior_log_G, psi_G = gmm.log_prob(grid.points_GD), psi(grid.points_GD)
    rows: dict[str, Mapping[float, Calibrated | torch.Tensor]] = {m: {t: calibrated[m, t] for t in targets}
                                                                  for m in METHODS}
    rows["exact tilt $q^\\star_t$ (ours)"] = exact_samples
    n_r, n_c = len(rows), len(targets) + 1
    fig = plt.figure(figsize=(2.6 * n_c + 5.5, 2.6 * n_r))
    gs = fig.add_gridspec(n_r, n_c + 1, width_ratios=[1] * n_c + [2.2], wspace=0.08, hspace=0.35)
    for r, (name, by_t) in enumerate(rows.items()):
        ax = fig.add_subplot(gs[r, 0])
        if r == 0:
            _contours(ax, grid, psi_G, levels=8, cmap="magma", linewidths=0.6)
            ax.scatter(*prior_samples.T.numpy(), s=1, alpha=0.3, color="0.3")
            ax.set_title("baseline: prior $p$ (dots)\nand $\\psi$ (contours)", fontsize=8)
        else:
            ax.axis("off")
        ax.text(-0.08, 0.5, name, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=9)
        for c, t in enumerate(targets, start=1):
            ax = fig.add_subplot(gs[r, c])
            _contours(ax, grid, prior_log_G.exp(), levels=5, colors="0.7", linewidths=0.5)
            res = by_t[t]
            samples = res if isinstance(res, torch.Tensor) else res.samples
            if isinstance(res, Calibrated) and not res.reached:
                rng = "" if res.attainable is None else f"\nattainable mean $\\psi$\n[{res.attainable[0]:.2f}, {res.attainable[1]:.2f}]"
                ax.text(0, 0, f"$t$={t:g} unreachable{rng}", ha="center", va="center", fontsize=7, color="crimson")
                ax.set_title(f"$t$ = {t:g}", fontsize=8)
                continue
            ax.scatter(*samples.T.numpy(), s=1, alpha=0.35, color=f"C{r}")
            knob = "" if isinstance(res, torch.Tensor) else ", " + knob_text(name, res)
            ax.set_title(f"$t$ = {t:g}{knob}\nmean $\\psi$ = {float(psi(samples).mean()):.2f}", fontsize=8)
    ax = fig.add_subplot(gs[:, -1])
    for i, (name, by_t) in enumerate(kl.items()):
        ts = [t for t in targets if by_t[t]["kde_kl"]]
        ms = [mean_sd(by_t[t]["kde_kl"]) for t in ts]
        ax.errorbar(ts, [m for m, _ in ms], [s for _, s in ms], fmt="o-", capsize=3, color="0.5" if name == "prior" else f"C{i}",
                    ls=":" if name == "prior" else "-", label=name)
    ax.plot(targets, [kl_exact[t] for t in targets], "k--", label="exact KL$(q^\\star_t\\Vert p)$ (population value)")
    n_seeds = max(len(v["kde_kl"]) for by_t in kl.values() for v in by_t.values())
    ax.set(yscale="log", xlabel="target level $t$", xticks=targets,
           ylabel="KDE-KL$(\\hat q_h\\Vert p_h)$, mean $\\pm$ SD", title=f"KL to the prior (eq. 212), {n_seeds} seeds")
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.legend(fontsize=7, loc="lower right")
    return fig


def path_speed_figure(paths: Mapping[str, Mapping[str, torch.Tensor]]):
    """Sliced-W2 between neighbouring levels / level step along t, mean +- SD over replicates,
    on the fine grid and on the grid of every other level (:func:`~klsc_lib.studies.nb02_sampling_pathologies.smoothness_paths`)."""
    fig, ax = plt.subplots(1, 1, figsize=(7, 3.6))
    for i, (name, p) in enumerate(paths.items()):
        for key, style in (("fine", "o-"), ("coarse", "s--")):
            mids, sp = p[f"{key}_mid"].numpy(), p[f"{key}_speed"].numpy()
            ax.errorbar(mids, sp.mean(0), sp.std(0, ddof=1) if len(sp) > 1 else None, fmt=style, color=f"C{i}",
                        capsize=2, alpha=1.0 if key == "fine" else 0.6, label=f"{name}, {key} grid")
    ax.set(xlabel="level $t$ (midpoint of the pair)", ylabel="SW$_2$(neighbours) / $\\Delta t$",
           title="samples move smoothly in $t$: speed stays bounded as the grid is refined", ylim=(0, None))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def exact_vs_plugin_figure(study: ExactVsPlugin, t_level: float, lam: float):
    """Left: energy distance to q_lambda by reverse steps (log-log, Monte-Carlo band);
    middle: mean psi; right: |exact| and |plug-in| guidance and their cosine over diffusion time."""
    conv, mc_band, profile = study.convergence, (min(study.mc_band), max(study.mc_band)), study.profile
    matched = (study.matched_lambda, study.matched_ed) if study.matched_reached else None
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    steps = list(conv)
    floor = mc_band[0] / 10
    ax[0].axhspan(floor, mc_band[1], color="0.85", label="Monte Carlo band (exact vs exact)")
    ax[0].plot(steps, [max(conv[s]["exact_ed"], floor) for s in steps], "o-", label="exact guidance (Thm G.3)")
    ax[0].plot(steps, [max(conv[s]["plugin_ed"], floor) for s in steps], "s-", label=f"plug-in, same $\\lambda$ = {lam:.3f}")
    if matched is not None:
        ax[0].axhline(max(matched[1], floor), color="C2", ls=":", label=f"plug-in calibrated to $t$ ($\\lambda$ = {matched[0]:.3f})")
    ax[0].set(xscale="log", yscale="log", xlabel="reverse steps", ylabel="energy distance to exact $q_\\lambda$",
              title=f"convergence at $t$ = {t_level:g} (values below the band are clipped)")
    ax[0].legend(fontsize=7)
    ax[1].plot(steps, [conv[s]["exact_mean_psi"] for s in steps], "o-", label="exact guidance")
    ax[1].plot(steps, [conv[s]["plugin_mean_psi"] for s in steps], "s-", label="plug-in, same $\\lambda$")
    ax[1].axhline(t_level, color="k", ls="--", label="$E_q\\psi = t$")
    ax[1].set(xscale="log", xlabel="reverse steps", ylabel="mean $\\psi$", title="faithfulness reached")
    ax[1].legend(fontsize=7)
    for a in ax[:2]:
        a.set_xticks(steps, [str(s) for s in steps])
        a.minorticks_off()
    ts = profile["timestep"]
    ax[2].plot(ts, profile["exact"], "C0-", label="$|\\nabla\\log h_t|$ (exact)")
    ax[2].plot(ts, profile["plugin"], "C1-", label="$|\\lambda\\nabla\\psi(\\hat x_0)|$ (plug-in)")
    ax[2].set(xlabel="diffusion timestep (0 = data, 999 = noise)", ylabel="median norm (log)", yscale="log",
              title="guidance along noised exact-tilt samples")
    ax_cos = ax[2].twinx()
    ax_cos.plot(ts, profile["cosine"], "k:", label="median cosine (right axis)")
    ax_cos.set(ylabel="cosine(exact, plug-in)", ylim=(-1.05, 1.05))
    lines = ax[2].get_lines() + ax_cos.get_lines()
    ax[2].legend(lines, [l.get_label() for l in lines], fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def retrieval_figure(ess: Mapping[float, float], max_w: Mapping[float, float], boundary: Mapping[float, Mapping],
                     pool_size: int, delta: float):
    """Lemma F.1 (winner-takes-most) and boundary mass B_delta of top-k vs the exact tilt."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    lams = [l for l in ess if l > 0]
    ax[0].plot(lams, [ess[l] for l in lams], "o-", label="ESS $= 1/\\sum_i w_i^2$")
    ax[0].plot(lams, [1 / max_w[l] for l in lams], "s--", label="$1/\\max_i w_i$")
    ax[0].axhline(1, color="k", ls=":", label="$|\\arg\\max| = 1$")
    ax[0].set(xscale="log", yscale="log", xlabel="$\\lambda$", ylabel="effective support size",
              title=f"Lemma F.1: tilted pool of {pool_size:,} points")
    ax[0].legend(fontsize=8)
    bt = sorted(boundary)
    x = np.arange(len(bt))
    ax[1].bar(x - 0.18, [boundary[t]["B_delta_retrieval"] for t in bt], 0.35, label="retrieval (top-$k$)")
    ax[1].bar(x + 0.18, [boundary[t]["B_delta_exact_tilt"] for t in bt], 0.35, label="exact tilt given $A_\\tau$")
    ax[1].set(xticks=x, xticklabels=[f"$t$ = {t:g}" for t in bt], ylabel=f"$B_\\delta$ ($\\delta$ = {delta})",
              title="mass in the shell just above the selection threshold $\\tau$")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def typical_set_figure(log_p_prior: torch.Tensor, log_p: Mapping[float, Mapping[str, torch.Tensor]],
                       band: tuple[float, float], ell: float, eps: float):
    """Histograms of log p(x) of the prior and of each method's samples, per level t."""
    ts = sorted(log_p)
    fig, axes = plt.subplots(1, max(len(ts), 1), figsize=(5 * max(len(ts), 1), 3.6), squeeze=False)
    bins = np.linspace(-25, 0, 80)
    for ax, t in zip(axes[0], ts):
        ax.hist(log_p_prior.numpy(), bins=bins, density=True, alpha=0.4, label="prior $p$")
        for name, lp in log_p[t].items():
            ax.hist(lp.numpy(), bins=bins, density=True, histtype="step", lw=1.5, label=name)
        ax.axvspan(*band, color="0.85", zorder=-1, label="prior 95% band of $\\log p$")
        ax.axvline(ell, color="k", ls="--", lw=0.8, label=f"typical-region level ({1 - eps:.0%} HPD)")
        ax.set(xlabel="$\\log p(x)$", ylabel="density", title=f"prior log-density of samples, $t$ = {t:g}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def object_drift_figure(grid: Grid2D, gmm: GaussianMixture, runs: Mapping[float, Calibrated],
                        rows: Sequence[Mapping[str, float]], x_ref: Sequence[float], t_level: float):
    """Fig 2 analogue: one small panel of EnergyDPS samples per task weight omega (the reached
    ``runs`` of :func:`~klsc_lib.studies.nb02_sampling_pathologies.object_drift_study`, labelled from its ``rows``)."""
    prior_log_G = gmm.log_prob(grid.points_GD)
    samples = {om: r.samples for om, r in runs.items() if r.reached}
    labels = {r["omega"]: f"$\\omega$ = {r['omega']:.3g}, $s - s_0$ = {r['s_gain']:g}" for r in rows}
    fig, axes = plt.subplots(1, len(samples), figsize=(2.4 * len(samples), 2.8), squeeze=False)
    for i, (ax, (omega, s)) in enumerate(zip(axes[0], samples.items())):
        _contours(ax, grid, prior_log_G.exp(), levels=5, colors="0.7", linewidths=0.5)
        ax.scatter(*s.T.numpy(), s=1, alpha=0.35, color=plt.cm.viridis(i / max(len(samples) - 1, 1)))
        ax.scatter(*x_ref, marker="*", s=90, color="red")
        ax.set_title(labels[omega], fontsize=8)
    fig.suptitle(f"Fig 2 analogue (object drift): EnergyDPS with energy $\\lambda\\psi + \\omega g$, mean $\\psi$ held at "
                 f"$t$ = {t_level:g}; red star: $x_{{ref}}$ of the task $g$", fontsize=9)
    fig.tight_layout()
    return fig


def two_constraint_figure(rows: Sequence[Mapping[str, float]], t_level: float):
    """Lemma E.1: (lambda, omega) solving E psi = t, E g = s, and D_task(s) vs Theorem E.3's bound."""
    s = [r["s_gain"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(s, [r["lambda"] for r in rows], "o-", label="$\\lambda$ (feature)")
    ax[0].plot(s, [r["omega"] for r in rows], "s-", label="$\\omega$ (task)")
    ax[0].set(xlabel="task level gain $s - E_{q^\\star_t} g$", ylabel="multiplier",
              title=f"Lemma E.1: both multipliers calibrated ($E\\psi$ = {t_level:g}, $Eg$ = $s$)")
    ax[0].legend(fontsize=8)
    ax[1].plot(s, [r["kl_to_feature_tilt"] for r in rows], "o-", label="$D_{task}(s)$ = KL$(p^{\\lambda,\\omega}\\Vert q^\\star_t)$")
    ax[1].plot(s, [r["thm_E3_lower_bound"] for r in rows], "s--", label="Theorem E.3 lower bound")
    ax[1].set(xlabel="task level gain $s - E_{q^\\star_t} g$", ylabel="nats", title="object drift grows with the task level")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def prompt_figure(prompt: Mapping[float, Mapping[str, float]]):
    """Theorem F.7: KLs to the prior, and the gap KL(best prompt||p) - KL(q*||p) vs the floor."""
    ts = sorted(prompt)
    fig, ax = plt.subplots(1, 2, figsize=(10.5, 3.8))
    ax[0].plot(ts, [prompt[t]["kl_exact_tilt"] for t in ts], "o-", label="KLSC tilt $q^\\star_t$")
    ax[0].plot(ts, [prompt[t]["kl_best_prompt"] for t in ts], "s-", label="best prompt $p_w$")
    ax[0].plot(ts, [prompt[t]["sampler_kde_kl"] for t in ts], "^:", label="prompt sampler (DDPM), KDE-KL (biased up)")
    ax[0].set(xlabel="target level $t$", ylabel="KL to the prior", yscale="log", xticks=ts,
              title="the prompt family stays above the tilt")
    ax[0].legend(fontsize=7)
    ax[1].plot(ts, [prompt[t]["kl_best_prompt"] - prompt[t]["kl_exact_tilt"] for t in ts], "o-",
               label="gap KL$(p_w\\Vert p)$ $-$ KL$(q^\\star_t\\Vert p)$")
    ax[1].plot(ts, [prompt[t]["floor_kl_to_tilt"] for t in ts], "s--", label="floor KL$(p_w\\Vert q^\\star_t)$ (eq. 175)")
    ax[1].set(xlabel="target level $t$", ylabel="nats", xticks=ts, title="Theorem F.7: gap $\\geq$ floor > 0")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    return fig

"""Figures and printed tables of notebook 01: hard constraint vs KLSC on the App H toy
(paper Sec 2.2.2, App D, App H: Table 2, Fig. 1 and the App D.4 sweep)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from klsc_lib.constraints import gaussian_example as gx
from klsc_lib.constraints.hard_vs_tilt import tilt, truncate, v_hard
from klsc_lib.constraints.score_variable import EmpiricalScore

PAPER_KEYS = {"B": "boundary_mass", "TV": "tv_step", "KL": "kl"}  # our row keys -> paper_values.TABLE2 keys
_HARD, _SOFT = "C3", "C0"


def table2_lines(mc: Sequence[Mapping[str, float]], grid: Sequence[Mapping[str, float]],
                 paper: Mapping[int, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Our Table 2 (Monte Carlo mean ± std over seeds, and the quadrature grid) beside
    the paper's, one line per (t, method)."""
    head = f"{'t':>3} {'method':<6} {'knob':>9} | " + " | ".join(
        f"{m + ' MC':>17} {m + ' grid':>8} {'paper':>7}" for m in PAPER_KEYS)
    lines = [head, "-" * len(head)]
    for r, g in zip(mc, grid):
        for method, sfx, knob in (("Hard", "hard", "tau"), ("KLSC", "soft", "lam")):
            p = paper.get(int(r["t"]), {}).get(method)
            cells = [f"{r[f'{m}_{sfx}']:8.4f} ± {r.get(f'{m}_{sfx}_std', 0.0):6.4f} {g[f'{m}_{sfx}']:8.4f} "
                     f"{p[k]:7.4f}" if p else f"{r[f'{m}_{sfx}']:8.4f} ± {r.get(f'{m}_{sfx}_std', 0.0):6.4f} "
                     f"{g[f'{m}_{sfx}']:8.4f} {'-':>7}" for m, k in PAPER_KEYS.items()]
            lines.append(f"{r['t']:3g} {method:<6} {r[knob]:9.4f} | " + " | ".join(cells))
    return lines


def table_figure(header: Sequence[str], rows: Sequence[Sequence[str]], title: str, col_width: float = 1.05):
    """A matplotlib table (for the PNG record of a printed table)."""
    fig, ax = plt.subplots(figsize=(col_width * len(header) + 0.5, 0.32 * (len(rows) + 2) + 0.6))
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1, 1.35)
    header_lines = max(h.count("\n") + 1 for h in header)
    for (i, _), cell in tab.get_celld().items():
        if i == 0:
            cell.set_facecolor("#dde6f0")
            cell.set_height(cell.get_height() * header_lines)
    ax.set_title(title, fontsize=11)
    return fig


def gaussian_table_figure(closed: Sequence[Mapping[str, float]], numeric: Sequence[Mapping[str, float]],
                          dev_scipy: float, dev_numeric: float, keys: Sequence[str] = gx.ANCHOR_KEYS):
    """The Gaussian example (App D.4.4): closed forms beside the generic numerics, one row per
    threshold, titled with the largest relative deviations from SciPy and from the numerics."""
    return table_figure(["τ"] + [f"{k}\nclosed | numeric" for k in keys],
                        [[f"{c['tau']:g}"] + [f"{c[k]:.6f} | {n[k]:.6f}" for k in keys] for c, n in zip(closed, numeric)],
                        f"Gaussian example (App D.4.4): closed forms vs generic numerics; "
                        f"vs scipy {dev_scipy:.0e}, vs numerics {dev_numeric:.0e}", col_width=2.0)


def table2_figure(mc: Sequence[Mapping[str, float]], grid: Sequence[Mapping[str, float]],
                  paper: Mapping[int, Mapping[str, Mapping[str, float]]], title: str):
    header = ["t", "method", "knob"] + [f"{m} {src}" for m in ("B_δ", "TV", "KL") for src in ("MC", "grid", "paper")]
    rows = []
    for r, g in zip(mc, grid):
        for method, sfx, knob in (("Hard", "hard", "τ"), ("KLSC", "soft", "λ")):
            p = paper.get(int(r["t"]), {}).get(method)
            cells = [f"{r['t']:g}", method, f"{knob}={r['tau' if sfx == 'hard' else 'lam']:.3f}"]
            for m, k in PAPER_KEYS.items():
                cells += [f"{r[f'{m}_{sfx}']:.4f}±{r.get(f'{m}_{sfx}_std', 0.0):.4f}", f"{g[f'{m}_{sfx}']:.4f}",
                          f"{p[k]:.4f}" if p else "-"]
            rows.append(cells)
    return table_figure(header, rows, title, col_width=1.5)


def _density(law: EmpiricalScore, log_cell: float, n: int) -> np.ndarray:
    return (law.log_weights - log_cell).exp().reshape(n, n).cpu().numpy()


def fig1_densities(grid_law: EmpiricalScore, log_cell: float, n: int, lim: float,
                   rows: Sequence[Mapping[str, float]]):
    """Fig. 1 (App H.2): top, the prior and the KLSC tilts q_lambda; bottom, the score and
    the hard truncations p_tau, at the calibrated (lambda, tau) of ``rows``. Each row
    of densities shares one colour scale, so the panels compare by eye."""
    extent = (-lim, lim, -lim, lim)
    top = [("Baseline prior $p$", _density(grid_law, log_cell, n))]
    top += [(rf"KLSC $\lambda={r['lam']:.3f}$ ($t={r['t']:g}$)", _density(tilt(grid_law, r["lam"]), log_cell, n))
            for r in rows]
    bottom = [(rf"Hard $\tau={r['tau']:.3f}$ ($t={r['t']:g}$)", _density(truncate(grid_law, r["tau"]), log_cell, n))
              for r in rows]
    fig, axes = plt.subplots(2, len(top), figsize=(3.6 * len(top) + 1, 7.4), constrained_layout=True)
    for ax_row, panels in ((axes[0], top), (axes[1, 1:], bottom)):
        vmax = max(img.max() for _, img in panels)
        for ax, (title, img) in zip(ax_row, panels):
            im = ax.imshow(img, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(title)
        fig.colorbar(im, ax=list(ax_row), shrink=0.85, label="density (shared scale in this row)")
    im = axes[1, 0].imshow(grid_law.values.reshape(n, n).cpu().numpy(), origin="lower", extent=extent, cmap="viridis")
    axes[1, 0].set_title(r"Intrinsic score $\psi$")
    fig.colorbar(im, ax=axes[1, 0], shrink=0.85, label=r"$\psi(x)$")
    for ax in axes.flat:
        ax.set(xlabel="$x_1$", ylabel="$x_2$")
    fig.suptitle("Fig. 1: prior and KLSC tilts (top), score and hard truncations (bottom) at matched "
                 "faithfulness $t$")
    return fig


def sweep_figure(sweep_t: np.ndarray, sweep: Sequence[Mapping[str, float]], eps: float, delta: float,
                 tau_G: torch.Tensor, gauss_eps: float, gauss_delta: float, gauss_rows: Sequence[Mapping[str, float]]):
    """The App D.4 sweep (not the paper's Fig. 2): (a) GMM finite-step TV speed with the
    local speeds of Lemmas D.11-D.12, (b) GMM boundary mass, (c) Gaussian speeds with
    their finite steps, (d) Gaussian boundary masses (closed form and quadrature)."""
    from klsc_lib.constraints.divergences import tv_between_truncations, tv_unit_gaussians
    from klsc_lib.constraints.calibration import calibrate_tau

    get = lambda key: np.array([r[key] for r in sweep])  # noqa: E731
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(sweep_t, get("TV_hard") / eps, "o", color=_HARD, label=r"Hard $\mathrm{TV}/\varepsilon$")
    ax.plot(sweep_t, get("TV_soft") / eps, "s", color=_SOFT, label=r"KLSC $\mathrm{TV}/\varepsilon$")
    ax.plot(sweep_t, get("v_hard"), "-", color=_HARD, label=r"$v_{\rm hard}=1/m(\tau_t)$")
    ax.plot(sweep_t, get("v_soft"), "-", color=_SOFT,
            label=r"$v_{\rm soft}=\mathbb{E}_q|\psi-t|\,/\,2\mathrm{Var}_q\psi$")
    ax.set(title=rf"(a) GMM: TV speed, $\varepsilon={eps}$", xlabel="faithfulness level $t$",
           ylabel=r"$\mathrm{TV}(q_t,\,q_{t+\varepsilon})\,/\,\varepsilon$")
    ax = axes[0, 1]
    ax.plot(sweep_t, get("B_hard"), "o-", color=_HARD, label=r"Hard $B_\delta(p_\tau)$")
    ax.plot(sweep_t, get("B_soft"), "s-", color=_SOFT, label=r"KLSC $B_\delta(q_\lambda\,|\,A_\tau)$")
    ax.set(title=rf"(b) GMM: boundary mass, $\delta={delta}$", xlabel="faithfulness level $t$", ylabel=r"$B_\delta$")
    t_G = gx.NORMAL.truncated_mean(tau_G)
    step = max(1, len(tau_G) // 20)
    tau_s, t_s = tau_G[::step], t_G[::step]
    tau_next = calibrate_tau(gx.NORMAL, t_s + gauss_eps, lo=-10.0, hi=20.0)
    ax = axes[1, 0]
    ax.plot(t_G, v_hard(gx.NORMAL, tau_G), color=_HARD, label=r"$v_{\rm hard}=1/(r(\tau)-\tau)$")
    ax.axhline(gx.V_SOFT, color=_SOFT, label=r"$v_{\rm soft}=1/\sqrt{2\pi}$")
    ax.plot(t_s, tv_between_truncations(gx.NORMAL.survival(tau_s), gx.NORMAL.survival(tau_next)) / gauss_eps, "o",
            color=_HARD, mfc="none", label=rf"Hard $\mathrm{{TV}}/\varepsilon$, $\varepsilon={gauss_eps}$")
    ax.plot(t_s, tv_unit_gaussians(t_s, t_s + gauss_eps) / gauss_eps, "s", color=_SOFT, mfc="none",
            label=rf"KLSC $\mathrm{{TV}}/\varepsilon$, $\varepsilon={gauss_eps}$")
    ax.axhline(gx.V_HARD_FLOOR, color="gray", ls=":", label=r"$\sqrt{\pi/2}$ (Prop. D.13)")
    ax.set(title=r"(c) Gaussian example: local TV speed ($\tau\geq 0$)", xlabel=r"faithfulness level $t=r(\tau)$",
           ylabel="TV speed")
    ax = axes[1, 1]
    ax.plot(t_G, gx.NORMAL.boundary_mass(tau_G, gauss_delta), color=_HARD, label="Hard, closed form")
    ax.plot(t_G, gx.boundary_mass_soft(tau_G, t_G, gauss_delta), color=_SOFT, label="KLSC, closed form")
    ax.plot([r["t"] for r in gauss_rows], [r["B_hard"] for r in gauss_rows], "o", color=_HARD, label="Hard, quadrature")
    ax.plot([r["t"] for r in gauss_rows], [r["B_soft"] for r in gauss_rows], "s", color=_SOFT, label="KLSC, quadrature")
    ax.set(title=rf"(d) Gaussian example: boundary mass, $\delta={gauss_delta}$",
           xlabel=r"faithfulness level $t=r(\tau)$", ylabel=r"$B_\delta$")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("App D.4 sweep: threshold instability and boundary bias at matched faithfulness "
                 "(hard truncation vs KLSC)")
    return fig

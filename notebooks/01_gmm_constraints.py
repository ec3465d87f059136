# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (klsc)
#     language: python
#     name: klsc
# ---

# %% [markdown]
# # 01 · Hard constraint vs. KLSC on a toy GMM (paper Sec 2.2.2, App D.1-D.5, App H)
#
# The paper asks what distribution a feature visualisation should sample. Two answers
# reach the same faithfulness level $t=\mathbb E_q\psi$ of an intrinsic score $\psi$:
#
# * the **hard constraint** (Def. 2.1) keeps only $\psi\ge\tau$: the truncation
#   $p_\tau=p(\cdot\mid\psi\ge\tau)$, with $\mathrm{KL}(p_\tau\|p)=-\log S(\tau)$ (Lemma D.1);
# * the **KLSC principle** (Def. 2.2) asks only $\mathbb E_q\psi\ge t$: the exponential tilt
#   $q_\lambda\propto e^{\lambda\psi}p$ with $A'(\lambda)=t$ (Lemma D.4, Remark D.5).
#
# Sec 2.2.2 predicts three biases of the hard constraint: mass piles up at the threshold
# (boundary bias, Lemmas D.6-D.7), the distribution jumps when the level moves (threshold
# instability, Lemmas D.8-D.12) and it moves further from the prior than KLSC at the same
# faithfulness (interpretability gap, Theorem D.14). This notebook checks each one on the
# four-mode GMM of App H (Table 2, Fig. 1, Fig. 2) and on the Gaussian example of App D.4.4,
# where everything has a closed form (RECOVERED_MATH "RM" §6).
#
# **Which numbers are ours.** The GMM constants, the score scale, $\delta$, $\varepsilon$ and
# the column headers of Table 2 were stripped from the paper (RM §11). We use RM §11's
# suggested defaults (modes at $(\pm2,\pm2)$, std 0.6, $\theta_0=\pi/4$, score scale 3,
# $\delta=0.25$, $\varepsilon=0.1$), all of them fields of the profile
# `klsc_lib/profiles/nb01_gmm_constraints.py`. So only the *orderings* of Table 2 are
# comparable with the paper, not its absolute values.

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0
device = "auto"
out_dir = "../figures/01_gmm_constraints"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from klsc_lib.constraints import gaussian_example as gx
from klsc_lib.constraints.calibration import calibrate_lambda, calibrate_tau, matched_comparison
from klsc_lib.constraints.divergences import (kl_truncation, kl_weights, pinsker_bound, tv_between_truncations,
                                              tv_unit_gaussians)
from klsc_lib.constraints.hard_vs_tilt import kl_between_tilts, kl_tilt, tilt, tilted_var, truncate
from klsc_lib.worlds.gmm import AngularScore, four_mode_gmm
from klsc_lib.profiles import get_profile
from klsc_lib.report import Report
from klsc_lib.runtime import resolve_device, seed_everything
from klsc_lib.constraints.score_variable import EmpiricalScore, midpoint_grid_2d

cfg = get_profile("01_gmm_constraints", profile)
dev = resolve_device(device)
generator = seed_everything(seed)
report = Report("01_gmm_constraints", out_dir, profile, seed, dev)
print(cfg, dev, sep="\n")

# %% [markdown]
# ## The prior and the intrinsic score (App H.1)
#
# $p=\sum_k\frac14\mathcal N(\mu_k,\sigma^2I)$ with four modes at angles $\theta_0+k\pi/2$
# (eq. 194), and the angular deviation score
# $\psi(x)=s\,|\mathrm{wrap}(\operatorname{atan2}(x_2,x_1)-\theta_0)|\in[0,s\pi]$ (eq. 195).
# The two modes off the diagonal have $\psi\approx s\pi/2$ and the opposite mode has
# $\psi\approx s\pi$, so $\mathbb E_p\psi\approx 4.7$ and the levels $t\in\{5,6,7\}$ are active.
#
# We look at the prior through two laws of the score variable $Y=\psi(X)$
# (`klsc_lib.constraints.score_variable.EmpiricalScore`): the Monte Carlo sample that App H.3 prescribes
# (`n_prior_samples` draws, uniform weights) and a midpoint-rule quadrature grid of the GMM
# density on $[-L,L]^2$ (a weight is density $\times$ cell area), our cross-check.

# %%
gmm = four_mode_gmm(cfg.gmm_radius, cfg.gmm_std, cfg.theta0).to(dev)
score = AngularScore(cfg.theta0, cfg.score_scale)
x_ND = gmm.sample(cfg.n_prior_samples, generator=generator)
mc_law = EmpiricalScore(score(x_ND))

x_GD, log_cell = midpoint_grid_2d(cfg.grid_lim, cfg.grid_n, dev)
log_p_G = gmm.log_prob(x_GD)
grid_law = EmpiricalScore.from_density_grid(score(x_GD), log_p_G, log_cell)
grid_mass = float(torch.logsumexp(log_p_G + log_cell, 0).exp())
print(f"E_p psi: Monte Carlo {float(mc_law.mean()):.4f}, grid {float(grid_law.mean()):.4f}; "
      f"grid captures mass {grid_mass:.8f}; psi range of the sample [{mc_law.lower:.3g}, {mc_law.upper:.4g}]")
report.metric("prior_mean_score", {"monte_carlo": float(mc_law.mean()), "grid": float(grid_law.mean())})
report.metric("grid_mass", grid_mass, note="GMM mass inside the quadrature square")

# %% [markdown]
# ## Table 2: hard vs. KLSC at matched faithfulness (App H.3-H.4)
#
# For each $t$ both families are calibrated on the prior sample by bisection (eqs. 198-201):
# $\tau$ on $\hat m_{\rm hard}(\tau)=\mathrm{mean}\{\psi_i:\psi_i\ge\tau\}$ over the observed
# score range, $\lambda\in[0,\lambda_{\max}]$ on the self-normalised weighted mean with
# log-sum-exp weights. Then (eqs. 202-203):
#
# * $B_\delta$: the mass of the shell $[\tau,\tau+\delta)$ relative to the upper set $A_\tau$,
#   for $p_\tau$ and for $q_\lambda$ conditioned on the same $A_\tau$ (Def. 2.3);
# * $\mathrm{TV}(q_t,q_{t+\varepsilon})$ after re-calibrating both families at $t+\varepsilon$;
#   both are reweightings of the same prior sample, so TV $=\frac12\sum_i|w_i-w'_i|$ exactly;
# * $\mathrm{KL}(q\|p)$ exactly on the sample: $-\log\hat S(\tau)$ and
#   $\lambda\hat t-\log\hat Z(\lambda)$.
#
# The paper's column headers were stripped. We print the paper's numbers under RM §11's
# reading A (col1 = TV, col2 = $B_\delta$, col3 = KL); under either reading the claim is
# Hard $\ge$ KLSC in every cell, which is what the ledger tests.

# %%
# Table 2 of the paper, rows (t, method), columns (col1, col2, col3) as printed.
PAPER_TABLE2 = {
    (5.0, "Hard"): (0.0103, 0.2030, 0.0168), (5.0, "KLSC"): (0.0101, 0.1499, 0.0126),
    (6.0, "Hard"): (0.0140, 0.4183, 0.0319), (6.0, "KLSC"): (0.0104, 0.3137, 0.0147),
    (7.0, "Hard"): (0.0186, 0.6198, 0.0346), (7.0, "KLSC"): (0.0083, 0.5095, 0.0187),
}
READING_A = {"TV": 0, "B": 1, "KL": 2}  # metric -> paper column index (RM §11, reading A)
calib = dict(lam_max=cfg.lam_max, tol=cfg.bisect_tol, max_iter=cfg.bisect_max_iter)

mc_rows = [matched_comparison(mc_law, t, cfg.delta, cfg.eps, **calib) for t in cfg.targets]
grid_rows = [matched_comparison(grid_law, t, cfg.delta, cfg.eps, **calib) for t in cfg.targets]


def table2_entries(rows, source):
    out = []
    for r in rows:
        for method, suffix in (("Hard", "hard"), ("KLSC", "soft")):
            paper = PAPER_TABLE2.get((r["t"], method))
            out.append({
                "t": r["t"], "method": method, "source": source,
                "knob": r["tau"] if method == "Hard" else r["lam"], "achieved_t": r[f"t_{suffix}"],
                **{m: r[f"{m}_{suffix}"] for m in ("B", "TV", "KL")},
                **({f"paper_{m}": paper[i] for m, i in READING_A.items()} if paper else {}),
            })
    return out


table2 = table2_entries(mc_rows, "monte_carlo") + table2_entries(grid_rows, "grid")
print(f"{'t':>4} {'method':<5} {'source':<11} {'knob':>8} {'t_hat':>7} | {'B_delta':>8} {'paper':>7} | "
      f"{'TV':>8} {'paper':>7} | {'KL':>8} {'paper':>7}")
for e in table2:
    print(f"{e['t']:4.0f} {e['method']:<5} {e['source']:<11} {e['knob']:8.4f} {e['achieved_t']:7.4f} | "
          + " | ".join(f"{e[m]:8.4f} {e.get('paper_' + m, float('nan')):7.4f}" for m in ("B", "TV", "KL")))
report.metric("table2", table2, paper=[{"t": t, "method": m, "col1": v[0], "col2": v[1], "col3": v[2]}
                                       for (t, m), v in PAPER_TABLE2.items()],
              note="ours: RM §11 default constants (paper's stripped); paper columns mapped by RM §11 reading A "
                   "(col1=TV, col2=B_delta, col3=KL); absolute values are not comparable")

# %%
def hard_ge_klsc(rows, metric):
    return [{"t": r["t"], "hard": r[f"{metric}_hard"], "klsc": r[f"{metric}_soft"]} for r in rows]


for metric, name in (("B", "boundary mass B_delta"), ("TV", "finite-step TV(q_t, q_t+eps)"), ("KL", "KL(q||p)")):
    cells = hard_ge_klsc(mc_rows, metric)
    report.claim(f"table2_{metric}_hard_ge_klsc", "Table 2, Sec 2.2.2, App H.4",
                 f"{name}: Hard >= KLSC at every t in {list(cfg.targets)} (Monte Carlo, matched t)",
                 cells, {f"t={t:g}": {"hard": PAPER_TABLE2[(t, 'Hard')][READING_A[metric]],
                                      "klsc": PAPER_TABLE2[(t, 'KLSC')][READING_A[metric]]} for t in cfg.targets
                         if (t, "Hard") in PAPER_TABLE2},
                 all(c["hard"] >= c["klsc"] for c in cells))
grid_cells = [hard_ge_klsc(grid_rows, m) for m in ("B", "TV", "KL")]
report.claim("table2_grid_hard_ge_klsc", "Table 2 (cross-check on a quadrature grid)",
             "Hard >= KLSC for B_delta, TV and KL at every t, with the GMM density on a grid instead of samples",
             {m: c for m, c in zip(("B", "TV", "KL"), grid_cells)}, "Hard >= KLSC in every cell",
             all(c["hard"] >= c["klsc"] for cells in grid_cells for c in cells))


# %%
def table_figure(header, rows, title, col_width=1.05):
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


header = ["t", "method", "knob", "B_δ MC", "B_δ grid", "B_δ paper", "TV MC", "TV grid", "TV paper",
          "KL MC", "KL grid", "KL paper"]
mc_entries, grid_entries = table2_entries(mc_rows, "mc"), table2_entries(grid_rows, "grid")
rows = []
for e, g in zip(mc_entries, grid_entries):
    knob = f"τ={e['knob']:.3f}" if e["method"] == "Hard" else f"λ={e['knob']:.4f}"
    cells = [f"{e['t']:g}", e["method"], knob]
    for m in ("B", "TV", "KL"):
        cells += [f"{e[m]:.4f}", f"{g[m]:.4f}", f"{e['paper_' + m]:.4f}" if "paper_" + m in e else "-"]
    rows.append(cells)
fig = table_figure(header, rows, f"Table 2 (App H): hard vs KLSC at matched E_q ψ = t; δ={cfg.delta}, ε={cfg.eps}, "
                   f"n={cfg.n_prior_samples:,} prior samples\nMC and grid are ours (RM §11 constants); "
                   "paper columns by reading A (col1=TV, col2=B_δ, col3=KL)")
report.savefig(fig, "table2")
plt.show()

# %% [markdown]
# ## Fig. 1: the induced densities (Sec 2.2.2, App H.2)
#
# Top row: the prior and the KLSC tilts $q_\lambda\propto e^{\lambda\psi}p$; bottom row: the
# score $\psi$ and the hard truncations $p_\tau$, at the $\lambda,\tau$ calibrated above on the
# Monte Carlo sample (Table 2). Densities are evaluated on the quadrature grid. The tilt
# reweights every mode smoothly; the truncation cuts each mode along the rays $\psi=\tau$.

# %%
n = cfg.grid_n
extent = (-cfg.grid_lim, cfg.grid_lim, -cfg.grid_lim, cfg.grid_lim)


def grid_image(law):
    return (law.log_weights - log_cell).exp().reshape(n, n).cpu().numpy()


fig, axes = plt.subplots(2, 4, figsize=(15, 7.4), constrained_layout=True)
panels = [(axes[0, 0], grid_image(grid_law), "Baseline prior p"),
          (axes[1, 0], grid_law.values.reshape(n, n).cpu().numpy(), "Intrinsic score ψ")]
for j, r in enumerate(mc_rows, start=1):
    panels.append((axes[0, j], grid_image(tilt(grid_law, r["lam"])), f"KLSC, λ={r['lam']:.3f} (t={r['t']:g})"))
    panels.append((axes[1, j], grid_image(truncate(grid_law, r["tau"])), f"Hard, τ={r['tau']:.3f} (t={r['t']:g})"))
for ax, img, title in panels:
    im = ax.imshow(img, origin="lower", extent=extent, cmap="magma" if "ψ" not in title else "viridis")
    fig.colorbar(im, ax=ax, shrink=0.8, label="ψ(x)" if "ψ" in title else "density")
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
fig.suptitle("Fig. 1: prior, KLSC tilts (top) and hard truncations (bottom) at matched faithfulness t ∈ {5, 6, 7}")
report.savefig(fig, "fig1_densities")
plt.show()

# %% [markdown]
# ## The Gaussian example in closed form and numerically (App D.4.4, RM §6)
#
# With $Y\sim\mathcal N(0,1)$: $t_{\rm hard}=r(\tau)$ (inverse Mills ratio), $m=r-\tau$,
# $v_{\rm hard}=1/m$; the tilt is $\mathcal N(\lambda,1)$, so $\lambda=t$,
# $\mathrm{KL}_{\rm soft}=t^2/2$ and $v_{\rm soft}=1/\sqrt{2\pi}$. The *numerics* column
# evaluates the same quantities with no Gaussian formula at all: $\mathcal N(0,1)$ as a
# midpoint quadrature law, $\lambda$ by bisection on $A'(\lambda)=t$, $v_{\rm hard}=1/m$
# (Lemma D.11) and $v_{\rm soft}=\mathbb E_q|\psi-t|/(2\mathrm{Var}_q\psi)$ (Lemma D.12).
# Rows are RM §6's anchors ($\delta=0.1$, KLSC at the matched level, $B$ on the same shell).

# %%
normal_law = gx.normal_quadrature_law(cfg.gauss_lo, cfg.gauss_hi, cfg.gauss_n, dev)
keys = ["t", "m", "v_hard", "KL_hard", "KL_soft", "B_hard", "B_soft"]
closed_rows = [gx.anchor_row(tau, cfg.gauss_delta) for tau in cfg.gauss_taus]
numeric_rows = [gx.numeric_anchor_row(normal_law, tau, cfg.gauss_delta, cfg.lam_max) for tau in cfg.gauss_taus]
rel_dev = max(abs(nr[k] - cr[k]) / abs(cr[k]) for cr, nr in zip(closed_rows, numeric_rows) for k in keys)
v_soft_dev = max(abs(nr["v_soft"] - gx.V_SOFT) / gx.V_SOFT for nr in numeric_rows)
lam_dev = max(abs(nr["lam"] - cr["t"]) / cr["t"] for cr, nr in zip(closed_rows, numeric_rows))
anchor_dev = max(abs(cr[k] - gx.RM6_ANCHORS[cr["tau"]][k]) for cr in closed_rows if cr["tau"] in gx.RM6_ANCHORS
                 for k in keys)
print(f"{'tau':>4} " + " ".join(f"{k:>17}" for k in keys))
for cr, nr in zip(closed_rows, numeric_rows):
    print(f"{cr['tau']:4.1f} " + " ".join(f"{cr[k]:8.5f}|{nr[k]:8.5f}" for k in keys))
print(f"max relative deviation closed vs numeric: {rel_dev:.2e} (v_soft {v_soft_dev:.2e}, lambda = t {lam_dev:.2e}); "
      f"closed forms vs RM §6 anchors: {anchor_dev:.1e}")
report.metric("gaussian_closed_form", closed_rows, paper=[{"tau": k, **v} for k, v in gx.RM6_ANCHORS.items()],
              note="paper column: RM §6 anchor table (derived from App D.4.4)")
report.metric("gaussian_numeric", numeric_rows, note=f"midpoint quadrature, {cfg.gauss_n} cells on "
              f"[{cfg.gauss_lo}, {cfg.gauss_hi}]")
report.claim("gaussian_closed_vs_numeric", "App D.4.4 eqs. 109-124, Lemmas D.11-D.12",
             "closed forms of the Gaussian example and generic numerics agree to 1e-3 relative "
             "(t, m, v_hard, KL_hard, KL_soft, B_hard, B_soft, v_soft, lambda = t)",
             max(rel_dev, v_soft_dev, lam_dev), 1e-3, max(rel_dev, v_soft_dev, lam_dev) <= 1e-3)
report.claim("gaussian_rm6_anchors", "App D.4.4 (RM §6 anchor table)",
             "closed forms reproduce the RM §6 anchor values (max abs. deviation; anchors rounded to 6 decimals)",
             anchor_dev, "RM §6 table, 6 decimals", anchor_dev <= 6e-7)

fig = table_figure(["τ"] + [f"{k}\nclosed | numeric" for k in keys],
                   [[f"{cr['tau']:g}"] + [f"{cr[k]:.6f} | {nr[k]:.6f}" for k in keys]
                    for cr, nr in zip(closed_rows, numeric_rows)],
                   f"Gaussian example (App D.4.4): closed forms vs numerics, max rel. deviation {rel_dev:.1e}",
                   col_width=1.75)
report.savefig(fig, "gaussian_table")
plt.show()

# %% [markdown]
# **Prop. D.13** says $v_{\rm hard}\ge\sqrt{\pi/2}>1/\sqrt{2\pi}=v_{\rm soft}$ for every
# $\tau\ge0$ (RM §6 notes the ordering fails below $\tau^*\approx-2.488$, so the hypothesis
# must be $\tau\ge0$), and the average hard instability over $\tau\in[0,2]$ is
# $\bar I_{\rm hard}=1.961516$ (eq. 118) against $\bar I_{\rm soft}=0.398942$.

# %%
tau_sweep = torch.linspace(*cfg.gauss_tau_sweep, 501, dtype=torch.float64)
v_hard_min = float(gx.v_hard(tau_sweep).min())
i_hard = gx.mean_instability_hard(0.0, 2.0)
report.claim("prop_D13_v_hard_gt_v_soft", "Prop. D.13 eqs. 125-136",
             f"min over tau in {list(cfg.gauss_tau_sweep)} of v_hard >= sqrt(pi/2) > v_soft = 1/sqrt(2 pi)",
             {"min_v_hard": v_hard_min, "v_soft": gx.V_SOFT}, {"floor": gx.V_HARD_FLOOR, "v_soft": gx.V_SOFT},
             v_hard_min >= gx.V_HARD_FLOOR - 1e-12 and gx.V_HARD_FLOOR > gx.V_SOFT)
report.claim("eq118_mean_instability", "App D.4.4 eq. 118",
             "average hard TV instability over tau in [0, 2] (soft: 1/sqrt(2 pi))", i_hard,
             gx.RM6_MEAN_INSTABILITY_HARD_0_2, abs(i_hard - gx.RM6_MEAN_INSTABILITY_HARD_0_2) <= 6e-7)
print(f"min v_hard = {v_hard_min:.6f} >= {gx.V_HARD_FLOOR:.6f} > v_soft = {gx.V_SOFT:.6f}; I_hard[0,2] = {i_hard:.6f}")

# %% [markdown]
# ## Lemma D.7: tilting lowers the boundary hazard
#
# At a fixed threshold $\tau$ the tilt conditioned on $A_\tau$ has hazard
# $h_\lambda(\tau)=f(\tau)e^{\lambda\tau}/\int_\tau^\infty f(u)e^{\lambda u}du\le h(\tau)$.
# Gaussian: $h_\lambda(\tau)=r(\tau-\lambda)\le r(\tau)$ on a $(\tau,\lambda)$ grid. GMM: its
# finite-shell form $B_\delta(q_\lambda\mid A_\tau)\le B_\delta(p_\tau)$ at every level of the
# Fig. 2 sweep below.

# %%
tau_LL, lam_LL = torch.meshgrid(torch.linspace(-2, 5, 141, dtype=torch.float64),
                                torch.linspace(0, 5, 101, dtype=torch.float64), indexing="ij")
hazard_excess = float((gx.tilted_hazard(tau_LL, lam_LL) - gx.NORMAL.hazard(tau_LL)).max())
report.claim("lemma_D7_gaussian", "Lemma D.7 eqs. 66-69 (Gaussian, RM §3)",
             "h_lambda(tau) = r(tau - lambda) <= h(tau) = r(tau) for tau in [-2, 5], lambda in [0, 5]",
             {"max(h_lambda - h)": hazard_excess}, "<= 0", hazard_excess <= 1e-12)

# %%
sweep_t = np.linspace(*cfg.sweep_t, cfg.sweep_levels)
sweep = [matched_comparison(mc_law, float(t), cfg.delta, cfg.eps, **calib)
         for t in tqdm(sweep_t, desc="Fig. 2 sweep (Monte Carlo)")]
b_hard, b_soft = np.array([r["B_hard"] for r in sweep]), np.array([r["B_soft"] for r in sweep])
report.claim("lemma_D7_gmm", "Lemma D.7 (finite shell, Def. 2.3)",
             f"B_delta(q_lambda | A_tau) <= B_delta(p_tau) on the GMM at all {len(sweep)} levels "
             f"t in {list(cfg.sweep_t)}",
             {"max(B_soft - B_hard)": float((b_soft - b_hard).max())}, "<= 0", bool((b_soft <= b_hard).all()))
report.metric("fig2_sweep", sweep)

# %% [markdown]
# ## Lemmas D.8-D.9: threshold instability in KL
#
# At the $t=6$ calibration, perturb the knob by shrinking amounts $\epsilon$. As long as the
# shell $\tau\le\psi<\tau+\epsilon$ holds sample mass, $\mathrm{KL}(p_\tau\|p_{\tau+\epsilon})=\infty$
# (Lemma D.8), while $\mathrm{KL}(q_\lambda\|q_{\lambda+\epsilon})
# =-\epsilon A'(\lambda)-(A(\lambda)-A(\lambda+\epsilon))\approx\tfrac12\epsilon^2\mathrm{Var}_{q_\lambda}\psi\to0$
# (Lemma D.9, eq. 72-73).

# %%
ref = next(r for r in mc_rows if r["t"] == 6.0) if 6.0 in cfg.targets else mc_rows[0]
tau0, lam0 = ref["tau"], ref["lam"]
hard0, var0 = truncate(mc_law, tau0), float(tilted_var(mc_law, lam0))
kl_rows = []
for e in cfg.perturbations:
    kl_soft_e = float(kl_between_tilts(mc_law, lam0, lam0 + e))
    kl_rows.append({"eps": e, "shell_mass": float(mc_law.survival(tau0) - mc_law.survival(tau0 + e)),
                    "KL_hard": float(kl_weights(hard0.log_weights, truncate(mc_law, tau0 + e).log_weights)),
                    "KL_soft": kl_soft_e, "KL_soft_over_half_eps2_var": kl_soft_e / (0.5 * e**2 * var0)})
    print(kl_rows[-1])
report.metric("lemma_D8_D9", kl_rows, note=f"t={ref['t']:g}: tau={tau0:.4f}, lambda={lam0:.4f}")
charged = [r for r in kl_rows if r["shell_mass"] > 0]
report.claim("lemma_D8_D9_kl_regularity", "Lemmas D.8-D.9 eqs. 70-73",
             "KL(p_tau || p_tau+eps) = inf for every eps whose shell holds mass, while KL(q_lam || q_lam+eps) -> 0 "
             "as eps^2 Var/2 (ratio within 5% at the smallest eps)",
             {"hard_KL": [r["KL_hard"] for r in kl_rows], "soft_KL": [r["KL_soft"] for r in kl_rows],
              "soft_ratio_smallest_eps": kl_rows[-1]["KL_soft_over_half_eps2_var"]},
             {"hard": "inf", "soft": "-> 0"},
             bool(charged) and all(math.isinf(r["KL_hard"]) for r in charged)
             and abs(kl_rows[-1]["KL_soft_over_half_eps2_var"] - 1) < 0.05)

# %% [markdown]
# ## Theorem D.14: the interpretability gap as an exact identity
#
# Fix $\tau$, let $t_\tau=\mathbb E_{p_\tau}\psi$ and calibrate $q^\star=q_\lambda$ to the
# *same* $t_\tau$. Then (RM §2, §7)
# $$\mathrm{KL}(p_\tau\|p)-\mathrm{KL}(q^\star\|p)=\mathrm{KL}(p_\tau\|q^\star)\ \ge 0.$$
# On a discretised law the identity is exact only if the mean is matched on that same law,
# so on the GMM we take $t_\tau$ and $\lambda$ from the quadrature grid (and report the
# residual); on the Gaussian we check it on the quadrature law and against the closed form
# $-\log\bar\Phi(\tau)-r(\tau)^2/2$. Pinsker ($\mathrm{TV}\le\sqrt{\mathrm{KL}/2}$, Lemma B.4) is
# checked on the same pairs.

# %%
gauss_resid = max(abs(nr["gap"] - nr["kl_hard_soft"]) for nr in numeric_rows)
gauss_closed_resid = max(abs(nr["kl_hard_soft"] - float(gx.interpretability_gap(nr["tau"]))) for nr in numeric_rows)
report.claim("thm_D14_identity_gaussian", "Theorem D.14 eqs. 141-144 (Gaussian, RM §7)",
             "KL(p_tau||p) - KL(q*||p) = KL(p_tau||q*) at matched mean, Gaussian example, taus "
             f"{list(cfg.gauss_taus)}: residual of the numeric identity and vs the closed form -log Phi_bar - r^2/2",
             {"numeric_residual": gauss_resid, "vs_closed_form": gauss_closed_resid}, 1e-6,
             max(gauss_resid, gauss_closed_resid) <= 1e-6)

d14_rows = []
for r in grid_rows:
    tau = r["tau"]
    t_tau = float(grid_law.truncated_mean(tau))
    lam = calibrate_lambda(grid_law, t_tau, cfg.lam_max, tol=1e-14, max_iter=cfg.bisect_max_iter)
    hard, soft = truncate(grid_law, tau), tilt(grid_law, lam)
    kl_h = float(kl_truncation(grid_law.log_survival(tau)))
    kl_s = float(kl_tilt(grid_law, lam))
    kl_hs = float(kl_weights(hard.log_weights, soft.log_weights))
    tv_hs = r["tv_hard_soft"]
    d14_rows.append({"t": r["t"], "tau": tau, "t_tau": t_tau, "lam": lam, "KL_hard": kl_h, "KL_soft": kl_s,
                     "KL_hard_soft": kl_hs, "residual": kl_h - kl_s - kl_hs,
                     "TV_hard_soft": tv_hs, "pinsker_bound": float(pinsker_bound(r["kl_hard_soft"]))})
    print(d14_rows[-1])
report.metric("thm_D14_gmm_grid", d14_rows)
grid_resid = max(abs(d["residual"]) for d in d14_rows)
report.claim("thm_D14_identity_gmm_grid", "Theorem D.14 eqs. 141-144 (GMM, quadrature grid)",
             "KL(p_tau||p) - KL(q*||p) = KL(p_tau||q*) with t_tau and lambda matched on the grid", grid_resid, 1e-3,
             grid_resid <= 1e-3)
report.claim("thm_D14_soft_closer_to_prior", "Theorem D.14 eq. 142",
             "KL(q*||p) <= KL(p_tau||p) at matched mean (GMM grid and Gaussian)",
             {"gmm": [(d["KL_soft"], d["KL_hard"]) for d in d14_rows],
              "gaussian": [(nr["KL_soft"], nr["KL_hard"]) for nr in numeric_rows]}, "soft <= hard",
             all(d["KL_soft"] <= d["KL_hard"] for d in d14_rows) and all(nr["KL_soft"] <= nr["KL_hard"]
                                                                          for nr in numeric_rows))
report.claim("pinsker_hard_vs_soft", "Lemma B.4 (Pinsker)",
             "TV(p_tau, q_lambda) <= sqrt(KL(p_tau||q_lambda)/2) at each t on the GMM grid",
             [(d["TV_hard_soft"], d["pinsker_bound"]) for d in d14_rows], "TV <= bound",
             all(d["TV_hard_soft"] <= d["pinsker_bound"] for d in d14_rows))

# %% [markdown]
# ## Fig. 2: instability as the faithfulness level moves (Sec 2.2.2, App D.4)
#
# (a) finite-step TV speed $\mathrm{TV}(q_t,q_{t+\varepsilon})/\varepsilon$ and (b) boundary
# mass $B_\delta$ along the GMM sweep (Monte Carlo, re-calibrated at every level);
# (c) the Gaussian local speeds $v_{\rm hard}(t)=1/m(\tau_t)$ and $v_{\rm soft}=1/\sqrt{2\pi}$
# with their finite steps $\mathrm{TV}/\varepsilon$ (Lemma D.10 and $2\Phi(\varepsilon/2)-1$);
# (d) the Gaussian boundary masses at matched $t$, closed form (lines) and quadrature (dots).

# %%
tv_hard = np.array([r["TV_hard"] for r in sweep]) / cfg.eps
tv_soft = np.array([r["TV_soft"] for r in sweep]) / cfg.eps
t_curve = gx.NORMAL.truncated_mean(tau_sweep)
tau_step = torch.tensor([calibrate_tau(gx.NORMAL, float(t) + cfg.gauss_eps, lo=-10.0, hi=20.0)
                         for t in t_curve[::25]], dtype=torch.float64)
tv_hard_step = tv_between_truncations(gx.NORMAL.survival(tau_sweep[::25]), gx.NORMAL.survival(tau_step)) / cfg.gauss_eps
tv_soft_step = tv_unit_gaussians(t_curve[::25], t_curve[::25] + cfg.gauss_eps) / cfg.gauss_eps

fig, axes = plt.subplots(2, 2, figsize=(12, 9), constrained_layout=True)
ax = axes[0, 0]
ax.plot(sweep_t, tv_hard, "o-", color="C3", label="Hard")
ax.plot(sweep_t, tv_soft, "s-", color="C0", label="KLSC")
ax.set(title=f"(a) GMM: finite-step TV speed, ε={cfg.eps}", xlabel="faithfulness level t",
       ylabel="TV(q_t, q_{t+ε}) / ε")
ax = axes[0, 1]
ax.plot(sweep_t, b_hard, "o-", color="C3", label="Hard  B_δ(p_τ)")
ax.plot(sweep_t, b_soft, "s-", color="C0", label="KLSC  B_δ(q_λ | A_τ)")
ax.set(title=f"(b) GMM: boundary mass, δ={cfg.delta}", xlabel="faithfulness level t", ylabel="B_δ")
ax = axes[1, 0]
ax.plot(t_curve, gx.v_hard(tau_sweep), color="C3", label="v_hard = 1/m(τ_t)")
ax.plot(t_curve, gx.v_soft(t_curve), color="C0", label="v_soft = 1/√(2π)")
ax.plot(t_curve[::25], tv_hard_step, "o", color="C3", mfc="none", label=f"Hard TV/ε, ε={cfg.gauss_eps}")
ax.plot(t_curve[::25], tv_soft_step, "s", color="C0", mfc="none", label=f"KLSC TV/ε, ε={cfg.gauss_eps}")
ax.axhline(gx.V_HARD_FLOOR, color="gray", ls=":", label="√(π/2) (Prop. D.13)")
ax.set(title="(c) Gaussian example: local TV speed vs t (τ ≥ 0)", xlabel="faithfulness level t = r(τ)",
       ylabel="TV speed")
ax = axes[1, 1]
ax.plot(t_curve, gx.NORMAL.boundary_mass(tau_sweep, cfg.gauss_delta), color="C3", label="Hard, closed form")
ax.plot(t_curve, gx.boundary_mass_soft(tau_sweep, t_curve, cfg.gauss_delta), color="C0", label="KLSC, closed form")
t_numeric = [nr["t"] for nr in numeric_rows]
ax.plot(t_numeric, [nr["B_hard"] for nr in numeric_rows], "o", color="C3", label="Hard, quadrature")
ax.plot(t_numeric, [nr["B_soft"] for nr in numeric_rows], "s", color="C0", label="KLSC, quadrature")
ax.set(title=f"(d) Gaussian example: boundary mass, δ={cfg.gauss_delta}", xlabel="faithfulness level t = r(τ)",
       ylabel="B_δ")
for ax in axes.flat:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
fig.suptitle("Fig. 2: threshold instability and boundary bias, hard truncation vs KLSC at matched faithfulness")
report.savefig(fig, "fig2_instability")
plt.show()

# %% [markdown]
# ## Summary
#
# Every claim above is in `metrics.json` under `"claims"` with our number beside the paper's.
# The orderings of Table 2 (Hard $\ge$ KLSC) are what the paper's toy experiment supports;
# the absolute values depend on the stripped GMM constants and on the unknown column
# reading, so they are printed for comparison only. With RM §11's constants $B_\delta$ is not
# monotone in $t$ (the score is multimodal), unlike the paper's column 2.

# %%
n_hold = sum(c.holds for c in report.claims)
print(f"{n_hold} of {len(report.claims)} claims hold")
for c in report.claims:
    print(f"  [{'ok' if c.holds else 'NO'}] {c.id}: {c.statement}")
report.write()

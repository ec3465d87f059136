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
# Two ways to reach the same faithfulness level $t=\mathbb E_q\psi$ of an intrinsic score $\psi$:
#
# * the **hard constraint** (Def. 2.1) keeps only $\psi\ge\tau$: the truncation
#   $p_\tau=p(\cdot\mid\psi\ge\tau)$, with $\mathrm{KL}(p_\tau\|p)=-\log S(\tau)$ (Lemma D.1);
# * the **KLSC principle** (Def. 2.2) asks only $\mathbb E_q\psi\ge t$: the exponential tilt
#   $q_\lambda\propto e^{\lambda\psi}p$ with $A'(\lambda)=t$ (Lemma D.4, Remark D.5).
#
# Sec 2.2.2 predicts three biases of the hard constraint: boundary bias (Lemmas D.6-D.7),
# threshold instability (Lemmas D.8-D.12) and an interpretability gap (Theorem D.14). We check
# each on the four-mode GMM of App H and on the Gaussian example of App D.4.4.
#
# **Claim kinds.** `identity`: a theorem that holds for any input, so it checks our code, with a
# tolerance set to the precision reached. `paper`: an empirical statement of the paper, tested on
# our data. **Our numbers.** The GMM constants, the score scale, $\delta$, $\varepsilon$ and Table 2's
# column headers were stripped from the paper. Our values (modes at $(\pm2,\pm2)$, std 0.6,
# $\theta_0=\pi/4$, score scale 3, $\delta=0.25$, $\varepsilon=0.1$) are fields of
# `klsc_lib/profiles/nb01_gmm_constraints.py`. Only Table 2's *orderings* compare with the paper.

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0
device = "auto"
out_dir = "../runs/01_gmm_constraints"  # interactive runs write here; make figures passes figures/01_gmm_constraints

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import integrate, stats
from tqdm.auto import tqdm

from klsc_lib.constraints import gaussian_example as gx
from klsc_lib.constraints.calibration import calibrate_lambda, calibrate_tau, matched_comparison, summarize_seeds
from klsc_lib.constraints.divergences import pinsker_bound
from klsc_lib.constraints.hard_vs_tilt import (finite_step_speeds, knob_perturbations, mean_instability_hard,
                                               mean_instability_soft, v_hard, v_soft)
from klsc_lib.constraints.score_variable import EmpiricalScore, angular_score_law, midpoint_grid_2d
from klsc_lib.paper_values import TABLE2
from klsc_lib.profiles import get_profile
from klsc_lib.report import Report
from klsc_lib.runtime import resolve_device, seed_everything
from klsc_lib.viz import constraints as vz
from klsc_lib.energies.toy import AngularScore
from klsc_lib.worlds.gmm import four_mode_gmm

cfg = get_profile("01_gmm_constraints", profile)
dev = resolve_device(device)
report = Report("01_gmm_constraints", out_dir, profile, seed, dev)
calib = dict(lam_max=cfg.lam_max, tol=cfg.bisect_tol, max_iter=cfg.bisect_max_iter)
torch.set_num_threads(1)  # 1-D score vectors of <= 4e5 entries: intra-op threads cost more than they gain
print(cfg, dev, sep="\n")

# %% [markdown]
# ## The prior and the score variable (App H.1)
#
# $p=\sum_k\frac14\mathcal N(\mu_k,\sigma^2I)$ and $\psi(x)=s\,|\mathrm{wrap}(\operatorname{atan2}(x_2,x_1)-\theta_0)|$.
# We see the prior through the law of $Y=\psi(X)$ in two ways: Monte Carlo samples as App H.3
# prescribes (`n_seeds` independent sets of `n_prior_samples`), and a midpoint quadrature grid of
# the GMM density (weight = density $\times$ cell area), which has no sampling noise.

# %%
gmm = four_mode_gmm(cfg.gmm_radius, cfg.gmm_std, cfg.theta0).to(dev)
score = AngularScore(cfg.theta0, cfg.score_scale)
mc_laws = [EmpiricalScore(score(gmm.sample(cfg.n_prior_samples, generator=seed_everything(seed + k))))
           for k in range(cfg.n_seeds)]
mc_law = mc_laws[0]
x_GD, log_cell = midpoint_grid_2d(cfg.grid_lim, cfg.grid_n, dev)
grid_law = EmpiricalScore.from_density_grid(score(x_GD), gmm.log_prob(x_GD), log_cell)
grid_mass = float(torch.logsumexp(gmm.log_prob(x_GD) + log_cell, 0).exp())
print(f"E_p psi: MC {float(mc_law.mean()):.4f}, grid {float(grid_law.mean()):.4f}; grid mass {grid_mass:.8f}")
report.metric("prior_mean_score", {"monte_carlo": float(mc_law.mean()), "grid": float(grid_law.mean())})

# %% [markdown]
# ## Table 2: hard vs. KLSC at matched faithfulness (App H.3-H.4)
#
# At each $t$ both knobs are found by vectorised bisection (eqs. 198-201), then (eqs. 202-203):
# $B_\delta$, the mass of the shell $[\tau,\tau+\delta)$ relative to $A_\tau$ for $p_\tau$ and for
# $q_\lambda$ conditioned on $A_\tau$; $\mathrm{TV}(q_t,q_{t+\varepsilon})$ after re-calibrating at
# $t+\varepsilon$; and $\mathrm{KL}(q\|p)$, exact on the sample. The paper's headers were stripped:
# we read col1 = TV, col2 = $B_\delta$, col3 = KL. The $B$ ordering holds for any law at a common
# $\tau$ ($e^{\lambda\psi}$ is increasing), the KL ordering is Theorem D.14: both are `identity`.
# The TV ordering is an empirical statement: `paper`, with the spread over seeds.

# %%
by_seed = [[matched_comparison(law, t, cfg.delta, cfg.eps, **calib) for t in cfg.targets]
           for law in tqdm(mc_laws, desc="Table 2 seeds")]
mc_rows = summarize_seeds(by_seed)
grid_rows = [matched_comparison(grid_law, t, cfg.delta, cfg.eps, **calib) for t in cfg.targets]
print("\n".join(vz.table2_lines(mc_rows, grid_rows, TABLE2)))
report.metric("table2", {"monte_carlo": mc_rows, "grid": grid_rows}, paper=TABLE2,
              note=f"ours: our constants, MC mean ± std over {cfg.n_seeds} seeds; paper columns read as TV, B, KL")
for key, kind, ref in (("B", "identity", "Lemma D.7 (finite shell), Table 2"), ("KL", "identity", "Theorem D.14, Table 2"),
                       ("TV", "paper", "Table 2, Sec 2.2.2")):
    every = [rows[i][f"{key}_hard"] >= rows[i][f"{key}_soft"] for rows in by_seed + [grid_rows]
             for i in range(len(cfg.targets))]
    report.claim(f"table2_{key}_hard_ge_klsc", ref, f"{key}: Hard >= KLSC at t in {list(cfg.targets)} (every seed and grid)",
                 {f"t={r['t']:g}": {"hard": f"{r[f'{key}_hard']:.4f}±{r[f'{key}_hard_std']:.4f}",
                                    "klsc": f"{r[f'{key}_soft']:.4f}±{r[f'{key}_soft_std']:.4f}"} for r in mc_rows},
                 {f"t={t}": (v["Hard"][vz.PAPER_KEYS[key]], v["KLSC"][vz.PAPER_KEYS[key]]) for t, v in TABLE2.items()},
                 all(every), kind=kind, threshold="hard >= klsc in every cell")
report.savefig(vz.table2_figure(mc_rows, grid_rows, TABLE2, f"Table 2: ours (MC mean±std over {cfg.n_seeds} seeds, "
                                f"grid) vs paper; δ={cfg.delta}, ε={cfg.eps}"), "table2")
plt.show()

# %% [markdown]
# **What we see.** Hard $\ge$ KLSC in every $B_\delta$ and KL cell (as it must) and, for TV, the
# paper's empirical ordering, at every $t$ and seed; the seed spread is far below the gaps, and
# Monte Carlo agrees with the grid. The absolute values do not match the paper's (unknown
# constants; its KL values of ~0.01-0.03 cannot be $-\log S(\tau)$ for a truncation that moves the
# mean by ~2 units), and our $B_\delta$ is not monotone in $t$: at $t=6$ the threshold sits in the
# empty gap between modes, so the shell holds little mass for either method.
#
# ## Fig. 1: the induced densities (App H.2)
#
# Top row: the prior and the KLSC tilts; bottom row: the score and the hard truncations, at the
# knobs of Table 2 (MC, seed mean), on the quadrature grid. Each row has one colour scale.

# %%
report.savefig(vz.fig1_densities(grid_law, log_cell, cfg.grid_n, cfg.grid_lim, mc_rows), "fig1_densities")
plt.show()

# %% [markdown]
# **What we see.** The tilt reweights whole modes smoothly: mass moves from the diagonal mode to
# the two side modes and the opposite one. The truncation cuts every mode along the rays
# $\psi=\tau$, leaving sharp edges where its density is largest.
#
# ## The Gaussian example, three ways (App D.4.4)
#
# $Y\sim\mathcal N(0,1)$: $t_{\rm hard}=r(\tau)$ (inverse Mills ratio), $m=r-\tau$; the tilt is
# $\mathcal N(\lambda,1)$, so $\lambda=t$ and $\mathrm{KL}_{\rm soft}=t^2/2$. We compare (i) these
# closed forms, (ii) SciPy (`truncnorm` moments, adaptive quadrature of $e^{\lambda y}\varphi(y)$,
# Brent for $\lambda$), and (iii) our generic code on a midpoint quadrature law, with no Gaussian
# formula. $B$ uses $\delta=0.1$ and the same shell for both.

# %%
normal_law = gx.normal_quadrature_law(cfg.gauss_lo, cfg.gauss_hi, cfg.gauss_n, dev)
closed, scipy_rows, numeric = gx.anchor_tables(cfg.gauss_taus, cfg.gauss_delta, normal_law, cfg.lam_max)
dev_scipy, dev_numeric = gx.max_rel_deviation(closed, scipy_rows), gx.max_rel_deviation(closed, numeric)
report.metric("gaussian", {"closed": closed, "scipy": scipy_rows, "numeric": numeric})
report.claim("gaussian_anchors_scipy", "App D.4.4 eqs. 109-124, Lemma D.7", "closed forms = scipy truncnorm/quadrature "
             "(max rel. deviation over t, m, v_hard, KL, B)", dev_scipy, None, dev_scipy <= 1e-11, kind="identity",
             threshold=1e-11)
report.claim("gaussian_closed_vs_numeric", "App D.4.4, Lemmas D.11-D.12", f"closed forms = generic code on a "
             f"{cfg.gauss_n}-cell quadrature law (max rel. deviation)", dev_numeric, None, dev_numeric <= 1e-5,
             kind="identity", threshold=1e-5)
report.savefig(vz.gaussian_table_figure(closed, numeric, dev_scipy, dev_numeric), "gaussian_table")
plt.show()

# %% [markdown]
# **What we see.** The closed forms agree with SciPy to ~1e-14 and with the generic code on the
# quadrature law to ~1e-8 (the midpoint rule's error): the Gaussian anchors are right, and so is
# the code path that the GMM uses.

# %% [markdown]
# **Prop. D.13**: $v_{\rm hard}\ge\sqrt{\pi/2}>1/\sqrt{2\pi}=v_{\rm soft}$ for $\tau\ge0$ (below
# $\tau^*\approx-2.488$ the order flips, so the hypothesis must be $\tau\ge0$). **Eq. 118**: the
# average hard speed over $\tau\in[0,2]$ is the accumulated hazard; we integrate
# $v_{\rm hard}$ along $t$ with `scipy.integrate.quad` instead.

# %%
tau_G = torch.linspace(*cfg.gauss_tau_sweep, 501, dtype=torch.float64)
v_min = float(v_hard(gx.NORMAL, tau_G).min())
report.claim("prop_D13_v_hard_gt_v_soft", "Prop. D.13 eqs. 125-136", f"min v_hard over tau in {list(cfg.gauss_tau_sweep)} "
             ">= sqrt(pi/2) > v_soft", {"min_v_hard": v_min, "v_soft": gx.V_SOFT}, {"floor": gx.V_HARD_FLOOR},
             v_min >= gx.V_HARD_FLOOR - 1e-12 and gx.V_HARD_FLOOR > gx.V_SOFT, kind="identity", threshold="1e-12")
t_of = lambda x: stats.truncnorm(x, math.inf).mean()  # noqa: E731
i_quad = integrate.quad(lambda x: stats.norm.pdf(x) / stats.norm.sf(x), 0.0, 2.0, epsrel=1e-12)[0] / (t_of(2) - t_of(0))
i_hard = mean_instability_hard(gx.NORMAL, 0.0, 2.0)
report.claim("eq118_mean_instability", "App D.4.4 eq. 118", "closed-form bar I_hard over tau in [0, 2] = quadrature of "
             "the hazard over t2 - t1 (scipy)", i_hard, i_quad, abs(i_hard - i_quad) <= 1e-10 * i_quad, kind="identity",
             threshold="rel 1e-10")
print(f"min v_hard {v_min:.6f} >= {gx.V_HARD_FLOOR:.6f} > v_soft {gx.V_SOFT:.6f}; I_hard[0,2] {i_hard:.8f} vs quad {i_quad:.8f}")

# %% [markdown]
# **What we see.** $\min v_{\rm hard}=\sqrt{\pi/2}\approx1.2533$, attained at $\tau=0$, which is $\pi$
# times $v_{\rm soft}$; $\bar I_{\rm hard}[0,2]\approx1.9615$ equals the SciPy quadrature to 1e-10.

# %% [markdown]
# ## Lemma D.7: tilting lowers the boundary hazard; the App D.4 sweep
#
# Gaussian: $h_\lambda(\tau)=r(\tau-\lambda)\le r(\tau)$ on a $(\tau,\lambda)$ grid. GMM: the
# finite-shell form $B_\delta(q_\lambda\mid A_\tau)\le B_\delta(p_\tau)$ along a sweep of levels.

# %%
tau_LL, lam_LL = torch.meshgrid(torch.linspace(-2, 5, 141, dtype=torch.float64),
                                torch.linspace(0, 5, 101, dtype=torch.float64), indexing="ij")
excess = float((gx.tilted_hazard(tau_LL, lam_LL) - gx.NORMAL.hazard(tau_LL)).max())
report.claim("lemma_D7_gaussian", "Lemma D.7 eqs. 66-69", "r(tau - lambda) <= r(tau), tau in [-2, 5], lambda in [0, 5]",
             {"max(h_lambda - h)": excess}, None, excess <= 0.0, kind="identity", threshold="<= 0")
sweep_t = np.linspace(*cfg.sweep_t, cfg.sweep_levels)
sweep = [matched_comparison(mc_law, float(t), cfg.delta, cfg.eps, **calib) for t in tqdm(sweep_t, desc="App D.4 sweep")]
b_gap = max(r["B_soft"] - r["B_hard"] for r in sweep)
report.claim("lemma_D7_gmm", "Lemma D.7 (finite shell, Def. 2.3)", f"B_delta(q | A_tau) <= B_delta(p_tau) at all "
             f"{len(sweep)} sweep levels", {"max(B_soft - B_hard)": b_gap}, None, b_gap <= 0, kind="identity",
             threshold="<= 0")
report.metric("app_d4_sweep", sweep)

# %% [markdown]
# **What we see.** The tilted hazard never exceeds the hazard; on the GMM, $B_\delta$ of the
# conditioned tilt stays below the truncation's at every level of the sweep (figure below).

# %% [markdown]
# ## Lemmas D.8-D.9: threshold instability in KL
#
# At $t=6$, perturb each knob by shrinking $\epsilon$: $\mathrm{KL}(p_\tau\|p_{\tau+\epsilon})=\infty$
# whenever the shell holds mass (Lemma D.8), while
# $\mathrm{KL}(q_\lambda\|q_{\lambda+\epsilon})\approx\tfrac12\epsilon^2\mathrm{Var}_{q_\lambda}\psi\to0$ (Lemma D.9).

# %%
ref = by_seed[0][list(cfg.targets).index(6.0)] if 6.0 in cfg.targets else by_seed[0][0]
kl_rows = knob_perturbations(mc_law, ref["tau"], ref["lam"], list(cfg.perturbations))
report.metric("lemma_D8_D9", kl_rows, note=f"t={ref['t']:g}: tau={ref['tau']:.4f}, lambda={ref['lam']:.4f}")
ratio = kl_rows[-1]["KL_soft_ratio"]
report.claim("lemma_D8_D9_kl_regularity", "Lemmas D.8-D.9 eqs. 70-73", "KL(p_tau||p_tau+eps) = inf whenever the shell "
             "holds mass; KL(q_lam||q_lam+eps) / (eps^2 Var / 2) -> 1", {"hard": [r["KL_hard"] for r in kl_rows],
             "soft_ratio_smallest_eps": ratio}, None, all(math.isinf(r["KL_hard"]) for r in kl_rows if r["shell_mass"] > 0)
             and abs(ratio - 1) <= 0.01, kind="identity", threshold="inf; |ratio - 1| <= 0.01 at eps=1e-3")
print(*kl_rows, sep="\n")

# %% [markdown]
# **What we see.** The hard KL is infinite for every perturbation (each shell holds samples); the
# tilt KL shrinks like $\epsilon^2\mathrm{Var}/2$ (ratio ~0.9996 at $\epsilon=10^{-3}$ on default).

# %% [markdown]
# ## Lemmas D.11-D.12 and eqs. 102-107: local and averaged instability on the GMM
#
# The local TV speeds in the level $t$ are $v_{\rm hard}=1/m(\tau_t)$ and
# $v_{\rm soft}=\mathbb E_q|\psi-t|/(2\mathrm{Var}_q\psi)$. We check them against central finite
# steps of the knobs, $\mathrm{TV}/|\Delta t|$ (`identity`, error $O(\text{step})$), on a polar
# quadrature law of $\psi$ (midpoint cells in the angle, Gauss-Legendre in the radius), whose score
# values are evenly spaced, unlike the Cartesian grid's. Averaged over $[t_1,t_2]$ (eqs. 106-107),
# $\bar I_{\rm hard}$ is the accumulated hazard and $\bar I_{\rm soft}$ the accumulated mean absolute
# deviation; the paper expects the hard path to be the less stable one (`paper`).

# %%
polar = angular_score_law(gmm.log_prob, cfg.theta0, cfg.score_scale, cfg.polar_n_theta, device=dev)
levels = torch.tensor(sorted({*cfg.targets, *cfg.average_t}), dtype=torch.float64)
knobs = {float(t): (float(tau), float(lam)) for t, tau, lam in
         zip(levels, calibrate_tau(polar, levels, tol=1e-12), calibrate_lambda(polar, levels, cfg.lam_max, tol=1e-12))}
speeds = [{"t": t, "v_hard": float(v_hard(polar, knobs[t][0])), "v_soft": float(v_soft(polar, knobs[t][1])),
           **dict(zip(("fd_hard", "fd_soft"), finite_step_speeds(polar, *knobs[t], cfg.speed_step)))} for t in cfg.targets]
fd_dev = {k: max(abs(s[f"fd_{k}"] / s[f"v_{k}"] - 1) for s in speeds) for k in ("hard", "soft")}
report.metric("local_speeds_gmm", speeds, note=f"polar quadrature law, {cfg.polar_n_theta} angle cells")
report.claim("lemma_D11_D12_local_speeds", "Lemmas D.11-D.12 eqs. 85-101", f"central finite-step TV/|dt| -> v_hard, "
             f"v_soft on the GMM (knob step {cfg.speed_step}): max rel. deviation", fd_dev, None,
             max(fd_dev.values()) <= 2 * cfg.speed_step, kind="identity", threshold=f"2 x step = {2 * cfg.speed_step}")
(t1, t2) = cfg.average_t
i_bar = {"hard": mean_instability_hard(polar, knobs[t1][0], knobs[t2][0]),
         "soft": mean_instability_soft(polar, knobs[t1][1], knobs[t2][1])}
i_sweep = {k: float(np.mean([r[f"TV_{k}"] for r in sweep if t1 <= r["t"] <= t2])) / cfg.eps for k in ("hard", "soft")}
report.claim("mean_instability_hard_gt_soft", "App D.4 eqs. 102-108", f"bar I_hard > bar I_soft over t in [{t1}, {t2}] "
             "(polar law; eq. 108's discrete average on the MC sweep alongside)", {"polar": i_bar, "mc_sweep": i_sweep},
             None, i_bar["hard"] > i_bar["soft"], kind="paper")
print(*speeds, f"bar I (eqs. 106-107): {i_bar}; eq. 108 on the MC sweep: {i_sweep}", sep="\n")

# %% [markdown]
# **What we see.** The finite steps match $v_{\rm hard}$ to ~2e-3 and $v_{\rm soft}$ to ~1e-5 on
# default (the $O(\text{step})$ error). Averaged over $t\in[5,7]$ the hard path moves about twice as
# fast ($\bar I_{\rm hard}\approx0.30$ vs $\bar I_{\rm soft}\approx0.15$), and eq. 108's discrete
# average on the Monte Carlo sweep gives the same pair.

# %% [markdown]
# ## Theorem D.14: the interpretability gap as an exact identity
#
# With $t_\tau=\mathbb E_{p_\tau}\psi$ and $q^\star$ calibrated to the *same* $t_\tau$,
# $\mathrm{KL}(p_\tau\|p)-\mathrm{KL}(q^\star\|p)=\mathrm{KL}(p_\tau\|q^\star)\ge0$. On a discretised law the
# identity is exact once the mean is matched on that same law, so on the GMM we take $t_\tau$ and
# $\lambda$ from the grid. Pinsker ($\mathrm{TV}\le\sqrt{\mathrm{KL}/2}$, Lemma B.4) on the same pairs.

# %%
gauss_resid = max(abs(n["gap"] - n["kl_hard_soft"]) for n in numeric)
d14 = [gx.numeric_anchor_row(grid_law, r["tau"], cfg.delta, cfg.lam_max, tol=1e-14) for r in grid_rows]
grid_resid = max(abs(d["gap"] - d["kl_hard_soft"]) for d in d14)
report.metric("thm_D14_gmm_grid", d14)
report.claim("thm_D14_identity", "Theorem D.14 eqs. 141-144", "KL(p_tau||p) - KL(q*||p) = KL(p_tau||q*) at matched "
             "mean: max residual (Gaussian quadrature law, GMM grid)", {"gaussian": gauss_resid, "gmm_grid": grid_resid},
             None, max(gauss_resid, grid_resid) <= 1e-10, kind="identity", threshold=1e-10)
report.claim("thm_D14_soft_closer_to_prior", "Theorem D.14 eq. 142", "KL(q*||p) <= KL(p_tau||p) at matched mean",
             [(d["KL_soft"], d["KL_hard"]) for d in d14 + numeric], None,
             all(d["KL_soft"] <= d["KL_hard"] for d in d14 + numeric), kind="identity", threshold="soft <= hard")
pinsker = [(r["tv_hard_soft"], float(pinsker_bound(r["kl_hard_soft"]))) for r in grid_rows]
report.claim("pinsker_hard_vs_soft", "Lemma B.4 (Pinsker)", "TV(p_tau, q_lambda) <= sqrt(KL(p_tau||q_lambda) / 2), GMM grid",
             pinsker, None, all(tv <= bound for tv, bound in pinsker), kind="identity", threshold="TV <= bound")
print(f"residuals: Gaussian {gauss_resid:.1e}, GMM grid {grid_resid:.1e}", *d14, sep="\n")

# %% [markdown]
# **What we see.** The identity holds to ~1e-13 on both laws (the tolerance is 1e-10), the tilt is
# closer to the prior at every matched level, and Pinsker holds with room to spare.

# %% [markdown]
# ## The App D.4 sweep (our figure, not the paper's Fig. 2)
#
# (a) GMM finite-step TV speed along the sweep with the local speeds of Lemmas D.11-D.12;
# (b) GMM boundary mass; (c) Gaussian local speeds and finite steps (Lemma D.10 and
# $2\Phi(\varepsilon/2)-1$); (d) Gaussian boundary masses, closed form and quadrature.

# %%
report.savefig(vz.sweep_figure(sweep_t, sweep, cfg.eps, cfg.delta, tau_G, cfg.gauss_eps, cfg.gauss_delta, numeric),
               "app_d4_sweep")
plt.show()

# %% [markdown]
# **What we see.** (a) The finite-step speeds follow the local speeds; the hard speed jumps near
# $t=6$, where $\tau_t$ crosses the gap between modes, while the KLSC speed grows smoothly. (b)
# The hard boundary mass is above KLSC's everywhere. (c) On the Gaussian, $v_{\rm hard}$ grows like
# $t$ while $v_{\rm soft}$ stays at $1/\sqrt{2\pi}$; the $\varepsilon=0.1$ steps lag the local hard
# speed, as a finite step should. (d) Closed forms and quadrature coincide.

# %% [markdown]
# ## Summary
#
# Every claim is in `metrics.json` under `"claims"` with its kind; `figures/CLAIMS.md` groups them.

# %%
for kind in ("identity", "paper"):
    claims = [c for c in report.claims if c.kind == kind]
    print(f"{kind}: {sum(c.holds for c in claims)} of {len(claims)} hold")
    for c in claims:
        print(f"  [{'ok' if c.holds else 'NO'}] {c.id}: {c.statement}")
report.write()

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
# # 02 · Sampling pathologies on the GMM (paper Fig 3, Sec 2.2.3, 2.2.4, 2.3, App E, F, G, I)
#
# The KLSC principle (Def 2.2) asks for the exponential tilt
# $q_\lambda \propto p\,e^{\lambda\psi}$ of the prior. Sec 2.2.4 argues that the usual
# *sampling methodologies* miss it in characteristic ways: **retrieval** only returns
# points of a finite pool (Lemma F.1), **optimisation with regularisation** (OR) is a
# MAP sampler that lands outside the typical set (App F.3), and **prompt-guided**
# diffusion moves only inside a low-dimensional prompt family, which leaves a KL floor
# (Theorem F.7). Sec 2.2.3 adds **object drift**: a task score changes what is being
# explained (App E). EnergyDPS (Sec 2.3, Algorithm 1) samples the tilt with a diffusion prior.
#
# Everything runs on the toy of App H-I: a symmetric four-mode 2-D GMM and the angular
# score $\psi(x)=3\,|\mathrm{wrap}(\mathrm{atan2}(x_2,x_1)-\pi/4)|$ (the toy's constants
# are ours; the paper does not list them). The diffusion score is the exact oracle of the
# noised GMM (App I.3). Methods are compared at **matched faithfulness**
# $|\hat{\mathbb E}\psi - t|\le$ tol for $t\in\{5,6,7\}$ with one sample budget, and scored by
# the KDE-KL of eq. (212) against the equally smoothed prior (App I.4).

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0
device = "auto"
out_dir = "../runs/02_sampling_pathologies"  # interactive runs write here; make figures passes figures/02_sampling_pathologies

# %%
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from klsc_lib.analysis import kde
from klsc_lib.studies import nb02_sampling_pathologies as gs
from klsc_lib.baselines.gmm import PromptFamily
from klsc_lib.diffusion.gmm_oracle import gmm_oracle_prior
from klsc_lib.energies import angular_energy
from klsc_lib.profiles import get_profile
from klsc_lib.report import Report
from klsc_lib.runtime import seed_everything
from klsc_lib.viz import sampling as vs
from klsc_lib.worlds.gmm import four_mode_gmm

cfg = get_profile("02_sampling_pathologies", profile)
report = Report("02_sampling_pathologies", out_dir, profile, seed, device)
gen = seed_everything(seed)
torch.set_num_threads(1)  # 2-D points: intra-op threads cost more than they gain (the toy runs on the CPU)
cfg

# %% [markdown]
# ## Prior, score, oracle diffusion and the exact reference tilt
#
# The reference $q^\star_t$ is the exact KLSC tilt by self-normalised importance
# weighting of a large prior pool (App H.2-H.3): $\lambda^\star(t)$ by bisection of the
# tilted mean (monotone, since its derivative is $\mathrm{Var}_{q_\lambda}\psi$, eq. 61),
# $\mathrm{KL}(q_\lambda\Vert p)=\lambda t-A(\lambda)$ (eq. 62), samples by importance resampling.

# %%
gmm, psi = four_mode_gmm(), angular_energy()
prior = gmm_oracle_prior(gmm)  # the oracle score of the noised GMM under the default DDPM schedule (App I.3)
grid, targets = kde.Grid2D(-5.0, 5.0, cfg.grid_n), list(cfg.targets)
ref_pool, ref_law, lam_exact, kl_exact, exact = gs.exact_reference(gmm, psi, cfg.reference_pool, targets,
                                                                   cfg.n_samples, gen)
samplers = gs.ToySamplers.from_profile(cfg, gmm, prior, psi, seed)
report.metric("prior_mean_psi", float(ref_law.mean()), note="E_p psi; every t above it makes the constraint active")
report.metric("exact_tilt", {t: {"lambda": lam_exact[t], "kl": kl_exact[t]} for t in targets})
{t: (round(lam_exact[t], 4), round(kl_exact[t], 4)) for t in targets}

# %% [markdown]
# ## Matched-faithfulness calibration (App I) and KDE-KL over seeds (Fig 3)
#
# One knob per method and one budget $n$: retrieval's top-$k$ from a pool of prior draws
# (prefix search, eq. 206), scored on $n$ draws from its top-$k$ set; OR's weight $\beta$ of
# $\max_x\psi(x)-\beta x_2^2$ by multi-start proximal gradient ascent in the box (eqs. 18,
# 207); EnergyDPS's $\lambda$ (Algorithm 1, oracle score) with two step sizes: the
# paper's **constant** step ($\zeta\lambda$ constant over the steps, App J.4) and the
# **tilted-score** step $\zeta_i=\beta_i/\sqrt{\alpha_i}$, for which line 7 is exactly
# "sample with the score $s+\lambda\nabla\psi(\hat x_0)$" and $\lambda$ is the tilt's
# $\lambda$ (App G.4). Draws use common random numbers, so the mean score is monotone in
# the knob. For a purely angular $\psi$ the MAP is **ill-posed**: $\psi$ is constant along
# rays, so its supremum is approached at the origin, where every angle meets; OR's output
# is set by the box and the regulariser, not by the prior. Knobs are calibrated at the
# first seed; the other seeds redraw at the same knob, and the KDE-KL is reported as mean
# $\pm$ SD. The row "prior" is $n$ draws of $p$ itself: the estimator's value at $\lambda=0$.

# %%
calibrated = gs.matched_run(samplers, targets, cfg.tol, cfg.calib_max_iter)
report.metric("calibration", gs.calibration_summary(calibrated))
kl_seeds = gs.replicate_kl(samplers, calibrated, [seed + i for i in range(cfg.seeds)], exact, cfg.kde_bandwidth,
                           grid, progress=lambda it: tqdm(it, desc="seeds"))
kl_summary = {m: {t: gs.mean_sd(v["kde_kl"]) for t, v in by_t.items() if v["kde_kl"]} for m, by_t in kl_seeds.items()}
report.metric("kde_kl_to_prior", kl_seeds, paper="Fig 3: EnergyDPS smallest at every t",
              note=f"eq. 212, h={cfg.kde_bandwidth}, grid {cfg.grid_n}^2 on [-5,5]^2, {cfg.seeds} seeds")
report.metric("kde_kl_mean_sd", kl_summary)
{m: {t: f"{mu:.3f} ± {sd:.3f}" for t, (mu, sd) in v.items()} for m, v in kl_summary.items()}

# %%
report.savefig(vs.fig3(grid, gmm, psi, gmm.sample(cfg.n_samples, generator=gen), calibrated,
                       {t: exact(t, seed) for t in targets}, kl_seeds, kl_exact), "fig3_sampling_pathologies")
plt.show()

# %%
smallest = {t: min((kl_summary[m][t][0], m) for m in gs.METHODS if t in kl_summary[m])[1] for t in targets}
dps_vs_tilt = {t: kl_summary["EnergyDPS"][t][0] - kl_summary["exact tilt"][t][0] for t in targets
               if t in kl_summary["EnergyDPS"]}
report.claim("fig3_energydps_smallest_kl", "Sec 2.3, Fig 3, App I",
             f"At every matched t, an EnergyDPS variant has the smallest mean KDE-KL ({cfg.seeds} seeds) among "
             "retrieval, OR and EnergyDPS", ours={"mean_sd": kl_summary, "smallest": smallest},
             paper="EnergyDPS smallest at every t", kind="paper",
             holds=all(smallest[t].startswith("EnergyDPS") for t in targets))
report.claim("energydps_not_below_exact_tilt", "App I.4 (eq. 212 on exact samples)",
             "EnergyDPS's mean KDE-KL is not below the exact tilt's by more than 2 SD of the difference over seeds "
             "(an estimate below the ideal sampler's would be noise or estimator bias)",
             ours={"mean_difference": dps_vs_tilt}, paper=None, kind="ours",
             holds=all(d >= -2 * (kl_summary["EnergyDPS"][t][1] ** 2 + kl_summary["exact tilt"][t][1] ** 2) ** 0.5
                       for t, d in dps_vs_tilt.items()))

# %% [markdown]
# **What we see.** Read the ledger and the right panel together. Retrieval and OR sit
# well above EnergyDPS at every level; OR's samples pile on the ray $\theta=\pi/4$ (the MAP
# set), retrieval's on the pool's top-$k$ points. The **dashed** exact
# $\mathrm{KL}(q^\star_t\Vert p)$ lies far below every KDE-KL, including the exact tilt's own:
# eq. (212) with $n$ samples and bandwidth $h$ has a large positive finite-sample bias (a
# sum of $n$ narrow bumps is much rougher than $p_h$; the "prior" row shows that bias at
# $\lambda=0$). Because every method pays the same bias at the same $n$ and $h$, the ranking
# is meaningful, but the absolute values are not KLs; only the exact tilt's row is the
# ideal a sampler can reach, and a sampler scoring below it within a seed is noise.

# %% [markdown]
# ## Smoothness in $t$ (Sec 2.3, Fig 3 text)
#
# "Samples vary smoothly as $t$ changes" is tested as continuity: on a fine grid of
# $\lambda$ between the levels 5 and 7 (common random numbers along the grid, so only
# $\lambda$ changes), the sliced-W2 distance between neighbouring sample sets divided by
# the step in $t$ (the achieved mean $\psi$) stays bounded as the grid is refined. A jump
# of size $J$ would give $J/\Delta t$, doubling when the grid is halved. The exact tilt's
# path, coupled the same way, is the reference; bands are the SD over replicates.

# %%
paths = gs.smoothness_paths(samplers, calibrated, ref_law, ref_pool, lam_exact, (targets[0], targets[-1]),
                            cfg.path_levels, cfg.path_replicates, cfg.path_n, seed)
max_speed = {m: {k: float(p[f"{k}_speed"].mean(0).max()) for k in ("fine", "coarse")} for m, p in paths.items()}
report.metric("path_speed_sw2_per_t", {m: {k: p[k] for k in ("levels", "fine_speed", "coarse_speed")}
                                       for m, p in paths.items()}, note="SW2(neighbours)/dt, replicates x pairs")
report.savefig(vs.path_speed_figure(paths), "smoothness_in_t")
plt.show()
report.claim("fig3_samples_smooth_in_t", "Sec 2.3, Fig 3",
             "EnergyDPS samples vary continuously in t: the largest SW2/dt between neighbours on the fine grid is "
             "< 1.5x that on the grid of every other level (a jump would double it), as for the exact tilt",
             ours=max_speed, paper="samples vary smoothly as t changes", kind="paper",
             holds=all(v["fine"] < 1.5 * v["coarse"] for v in max_speed.values()))

# %% [markdown]
# **What we see.** Both speed curves are flat under refinement (the fine-grid markers sit
# on the coarse ones), so neither path jumps; the ledger gives the largest speeds. The
# metric is a continuity check, not a ranking: a collapsed sampler would also move little.

# %% [markdown]
# ## Exact guidance vs the plug-in (Theorem G.3, App G.3-G.4)
#
# Theorem G.3: sampling with the score $\nabla\log p_t+\nabla\log h_t$,
# $h_t(x)\propto\mathbb E[e^{\lambda\psi(X_0)}\mid X_t=x]$, is exact for $q_\lambda$. For the GMM
# the posterior of $x_0$ given $x_t$ is again a mixture, so $\nabla\log h_t$ is computable
# (Gauss-Hermite quadrature per mode, `ExactTiltGuidance`). DDPM with it at
# $\lambda^\star(t)$ must reproduce $q^\star_t$ up to discretisation and Monte Carlo error;
# the plug-in $\lambda\nabla\psi(\hat x_0)$ (tilted-score step) runs at the same $\lambda$.
# The Monte Carlo band is the energy distance between independent exact sample sets.

# %%
t_conv = cfg.convergence_target
gp = gs.exact_vs_plugin(samplers, exact, lam_exact[t_conv], calibrated["EnergyDPS", t_conv], t_conv, seed,
                        cfg.exact_guidance_order, list(cfg.convergence_steps), progress=lambda it: tqdm(it, desc="steps"))
report.metric("exact_vs_plugin_by_steps", gp.convergence, note=f"lambda = lambda*({t_conv:g}) = {lam_exact[t_conv]:.4f}")
report.metric("energy_distance_mc_band", gp.mc_band)
report.metric("guidance_profile", gp.profile)
report.savefig(vs.exact_vs_plugin_figure(gp, t_conv, lam_exact[t_conv]), "exact_vs_plugin_guidance")
plt.show()

# %%
last, mc, psi_se = gp.most_steps, gp.mc_band, gp.psi_standard_error
report.claim("exact_guidance_matches_tilt", "Theorem G.3, App G.3-G.4",
             "DDPM with the exact guidance grad log h_t at the tilt's lambda matches q_lambda: energy distance "
             "within 3x the largest exact-vs-exact value and mean psi within 3 standard errors of t, at the most steps",
             ours={"energy_distance": last["exact_ed"], "mc_band": mc, "mean_psi": last["exact_mean_psi"],
                   "psi_standard_error": psi_se}, paper="the ideal guided reverse SDE targets the KLSC tilt",
             kind="paper", holds=last["exact_ed"] <= 3 * max(mc) and abs(last["exact_mean_psi"] - t_conv) <= 3 * psi_se)
report.claim("plugin_overshoots_same_lambda", "App G.3 (plug-in approximation), App G.4",
             "At the tilt's lambda the plug-in lambda grad psi(x0-hat) overshoots (mean psi > t + 3 SE), and "
             "calibrating lambda to t brings its energy distance back within 3x the Monte Carlo band",
             ours={"plugin_mean_psi": last["plugin_mean_psi"], "plugin_ed": last["plugin_ed"], "matched_ed": gp.matched_ed,
                   "lambda_matched": gp.matched_lambda, "lambda_exact": lam_exact[t_conv]},
             paper="plug-in surrogate of grad log h_t", kind="paper",
             holds=last["plugin_mean_psi"] > t_conv + 3 * psi_se and abs(gp.matched_ed) <= 3 * max(mc))

# %% [markdown]
# **What we see.** Left (log-log): the exact-guidance curve falls into the grey Monte Carlo
# band as steps grow, while the plug-in at the same $\lambda$ stays above it; the dotted line
# is the plug-in with $\lambda$ calibrated to $t$. Right: at high noise (large timestep) the
# exact $|\nabla\log h_t|$ is small, since the posterior of $x_0$ is broad and $h_t$ nearly
# flat, while $|\lambda\nabla\psi(\hat x_0)|$ is not: the plug-in over-guides early, with a
# direction that agrees with the exact one (cosine near 1) only close to the data. That is
# the bias that calibrating $\lambda$ to $t$ absorbs.

# %% [markdown]
# ## Retrieval: mass only on the pool (Lemma F.1) and boundary concentration
#
# The tilted empirical measure $\hat q_\lambda=\sum_i w_i\delta_{x_i}$ (eq. 17) lives on
# the pool; as $\lambda\to\infty$ its weights collapse onto $\arg\max_i\psi(x_i)$ (effective
# sample size $1/\sum_iw_i^2\to 1$). Top-$k$ is a hard truncation at its smallest score
# $\tau_k$, so it piles up at the selection boundary: $B_\delta$ (Def 2.3) of retrieval vs
# the exact tilt conditioned on the same $A_\tau$ (Lemmas D.6-D.7).

# %%
ess, max_w, boundary, on_pool = gs.retrieval_study(samplers, ref_law, ref_pool, calibrated, exact, seed,
                                                   list(cfg.retrieval_lambdas), cfg.boundary_delta)
report.metric("pool_tilt", {"ess": ess, "max_weight": max_w, "energydps_fraction_on_pool": on_pool})
report.metric("boundary_mass", boundary, note=f"delta={cfg.boundary_delta}; exact tilt conditioned on psi >= tau")
report.savefig(vs.retrieval_figure(ess, max_w, boundary, cfg.pool_size, cfg.boundary_delta), "retrieval_finite_support")
plt.show()
lam_top = max(cfg.retrieval_lambdas)
report.claim("lemma_F1_winner_takes_most", "Lemma F.1, eq. 159",
             "The tilted empirical measure on a finite pool collapses to its argmax as lambda grows (ESS < 1.5, max "
             "weight > 0.8 at the largest lambda), and EnergyDPS draws points off the pool",
             ours={"ess": ess, "max_weight": max_w[lam_top], "energydps_on_pool": on_pool}, paper="w_i -> 1{i in M}/|M|",
             kind="identity", holds=ess[lam_top] < 1.5 and max_w[lam_top] > 0.8 and all(v == 0 for v in on_pool.values()))
report.claim("retrieval_boundary_concentration", "Sec 2.2.4 Fig 3 text, Lemmas D.6-D.7",
             "Retrieval concentrates near its selection boundary: B_delta(top-k) > B_delta(exact tilt | A_tau) at "
             "every reached t", ours=boundary, paper="retrieval concentrates near the selection boundary", kind="paper",
             holds=bool(boundary) and all(v["B_delta_retrieval"] > v["B_delta_exact_tilt"] for v in boundary.values()))

# %% [markdown]
# **What we see.** The effective support of the tilted pool falls to one point (left), and
# top-$k$ puts several times more of its mass in the shell above $\tau$ than the tilt does
# (right). EnergyDPS's samples are new points, none on the pool.

# %% [markdown]
# ## OR lands outside the typical set (App F.3)
#
# The $(1-\varepsilon)$ typical region of $p$ (Def F.3) is the highest-density region
# $\{x:\log p(x)\ge \ell_\varepsilon\}$, $\ell_\varepsilon$ the $\varepsilon=0.05$ quantile of
# $\log p(X)$, $X\sim p$. A fair sampler at level $t$ leaves it only as much as the exact tilt.

# %%
log_p_prior, ell, band, log_p, outside = gs.typical_set_study(gmm, ref_pool[:200_000], calibrated, exact, seed, 0.05)
report.metric("fraction_outside_typical_region", outside, note=f"log p < {ell:.3f} (95% HPD level)")
report.savefig(vs.typical_set_figure(log_p_prior, log_p, band, ell, 0.05), "or_typical_set")
plt.show()
report.claim("F3_or_outside_typical_set", "Sec 2.2.4 Methodology II, App F.3, Lemma F.4",
             "OR samples fall outside the prior's 95% typical region far more often than the exact tilt at the same t "
             "(OR fraction > 0.5 and > 3x the tilt's)", ours=outside, kind="paper",
             paper="MAP modes are unrepresentative of typical samples",
             holds=bool(outside) and all(v["OR"] > 0.5 and v["OR"] > 3 * v["exact tilt"] for v in outside.values()))

# %% [markdown]
# **What we see.** OR's log-densities sit far left of the prior's band at every level it
# reaches (the proximal step makes $t=5$ reachable too): its points are on the low-density
# ray near the origin and the box edge, where the ill-posed MAP puts them.

# %% [markdown]
# ## Object drift: the two-constraint problem (Lemma E.1, Theorem E.3, Sec 2.2.3)
#
# Add a pixel-reference task $g(x)=-\Vert x-x_{\rm ref}\Vert^2$ (eq. 216). Lemma E.1: the
# KL projection of $p$ onto $\{\mathbb E\psi=t,\ \mathbb Eg=s\}$ is
# $p^{\lambda,\omega}\propto p\,e^{\lambda\psi+\omega g}$, with **both** multipliers set by the
# two targets. We solve for $(\lambda,\omega)$ at $t=6$ and increasing task levels $s$ (Newton
# on the convex dual, on the prior pool); its KL to the pure-feature tilt $q^\star_t$ is the
# task-injection distortion $D_{\rm task}(s)$ (Def 2.5), bounded below by Theorem E.3.
# Then EnergyDPS runs with the energy $\lambda\psi+\omega g$ at each solved $\omega$, its
# $\lambda$ re-calibrated so that mean $\psi$ stays at $t$: the toy's version of Fig 2.

# %%
drift, dps_drift, dps_summary = gs.object_drift_study(samplers, ref_law, ref_pool, cfg.task_reference, cfg.drift_target,
                                                      list(cfg.drift_task_gains), cfg.tol, cfg.calib_max_iter,
                                                      progress=lambda it: tqdm(it, desc="Fig 2 analogue"))
report.metric("lemma_E1_two_constraints", drift, note=f"t={cfg.drift_target:g}, x_ref={cfg.task_reference}")
report.savefig(vs.two_constraint_figure(drift, cfg.drift_target), "two_constraint_drift")
plt.show()
report.metric("object_drift_energydps", dps_summary)
report.savefig(vs.object_drift_figure(grid, gmm, dps_drift, drift, cfg.task_reference, cfg.drift_target), "object_drift")
plt.show()
kls = [r["kl_to_feature_tilt"] for r in drift]
report.claim("object_drift_grows_with_task_level", "Sec 2.2.3, Lemma E.1, Def 2.5, Theorem E.3",
             "With both multipliers calibrated (E psi = t, E g = s), D_task(s) = KL(p^(lambda,omega)||q*_t) is 0 at "
             "s = E_q* g, grows with s, and stays above the Theorem E.3 bound", ours=drift, kind="paper",
             paper="task-dominated object drift (Fig 2); D_task >= sup eta s - Lambda",
             holds=kls[0] < 1e-9 and all(b > a for a, b in zip(kls[:-1], kls[1:]))
             and all(r["kl_to_feature_tilt"] >= r["thm_E3_lower_bound"] - 1e-9 for r in drift))
report.claim("lemma_E1_moments_matched", "Lemma E.1",
             "The solved (lambda, omega) hit both moments: |E psi - t| and |E g - s| < 1e-6",
             ours=[{k: r[k] for k in ("mean_psi", "mean_g", "s")} for r in drift], paper=None, kind="identity",
             holds=all(abs(r["mean_psi"] - cfg.drift_target) < 1e-6 and abs(r["mean_g"] - r["s"]) < 1e-6 for r in drift))

# %% [markdown]
# **What we see.** Raising the task level forces $\omega$ up and, to keep $\mathbb E\psi=t$,
# moves $\lambda$ too; the distortion grows above its Theorem E.3 bound. In samples (Fig 2
# analogue), the mass migrates from the $\psi$-favoured mode towards $x_{\rm ref}$ while mean
# $\psi$ stays matched: what is being "explained" drifts to the task.

# %% [markdown]
# ## Prompt information bottleneck (Sec 2.2.4 Methodology III, Theorem F.7)
#
# In the toy a **prompt** is a choice of mixing weights $w$ over the four fixed modes:
# $p_w=\sum_kw_k\mathcal N(\mu_k,\Sigma_k)$, like a class/concept prompt that can say *which*
# mode but cannot reshape anything *inside* a mode. The best prompt at level $t$ minimises
# $\mathrm{KL}(p_w\Vert p)$ subject to $\mathbb E_{p_w}\psi\ge t$ (eq. 22). Csiszár's inequality
# (eq. 175) puts it at least $\mathrm{KL}(p_w\Vert q^\star_t)$ above the KLSC tilt: the floor. All
# KLs by quadrature on one grid; the prompt sampler is DDPM on the oracle score of $p_w$.

# %%
prompt = gs.prompt_study(PromptFamily(gmm, psi, kde.Grid2D(-7.0, 7.0, cfg.prompt_grid_n)), samplers, targets,
                         cfg.kde_bandwidth, grid)
report.metric("prompt_bottleneck", prompt, note="Theorem F.7: KL(best prompt||p) >= KL(q*_t||p) + KL(best prompt||q*_t)")
report.savefig(vs.prompt_figure(prompt), "prompt_bottleneck")
plt.show()
gap = {t: prompt[t]["kl_best_prompt"] - prompt[t]["kl_exact_tilt"] for t in targets}
report.claim("thm_F7_prompt_floor", "Sec 2.2.4 eq. 23, Theorem F.7",
             "The best prompt's KL to the prior exceeds the KLSC tilt's at every t by a gap >= its KL to the tilt > 0",
             ours={t: {"gap": gap[t], "floor": prompt[t]["floor_kl_to_tilt"]} for t in targets},
             paper="inf_prompt KL(q||p) >= KL(q*_t||p) + inf_prompt KL(q||q*_t)", kind="paper",
             holds=all(prompt[t]["floor_kl_to_tilt"] > 0 and gap[t] >= prompt[t]["floor_kl_to_tilt"] - 1e-6 for t in targets))

# %% [markdown]
# **What we see.** The gap between the best prompt and the tilt is positive at every level
# and equals the floor $\mathrm{KL}(p_w\Vert q^\star_t)$ to quadrature precision: the best prompt
# meets $\mathbb E_{p_w}\psi=t$ exactly, and then eq. (175) holds with equality (the
# Pythagorean identity of the I-projection). The floor is small here (the four modes are
# well separated, so reweighting them comes close), but it is never zero: reweighting
# whole modes cannot reproduce the within-mode reshaping that $e^{\lambda\psi}$ does. The
# sampler's KDE-KL carries the estimator bias discussed under Fig 3.

# %%
report.write()
print(f"wrote {report.out_dir}")

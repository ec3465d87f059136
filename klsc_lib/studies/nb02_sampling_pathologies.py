"""The toy studies of paper Fig 3, Sec 2.2.3-2.3 and App E-I on the four-mode GMM:
matched-faithfulness comparisons repeated over seeds, smoothness of a sampler's
path in t, exact-vs-plug-in guidance along the diffusion, and the two-constraint
problem of Lemma E.1. Each function returns plain tensors / dicts that the notebook
records and :mod:`klsc_lib.viz.sampling` plots.

- :class:`ToySamplers`: the samplers compared at one seed with common random numbers
  (CRN: every draw re-seeds its generator, so the mean score is a smooth, monotone
  function of the knob and bisection is well posed; App I).
- :func:`matched_run`: calibrate every method at every level t (one seed).
- :func:`replicate_kl`: the KDE-KL of eq. (212) per method, level and seed, with the
  knob calibrated at the first seed and redrawn at the others.
- :func:`path_speeds`, :func:`energy_dps_path`, :func:`exact_path`: sliced-W2 between neighbouring levels
  divided by the level step, on a fine grid with CRN ("samples vary smoothly in t").
- :func:`guidance_profile`: |exact grad log h_t| vs |lambda grad psi(x0-hat)| and their
  cosine over diffusion time (Theorem G.3, App G.3-G.4).
- :func:`guidance_convergence`: exact guidance vs the plug-in at one lambda, by steps.
- :func:`calibrate_two_constraints`, :func:`task_drift`: (lambda, omega) with E psi = t
  and E g = s under p e^{lambda psi + omega g} on a weighted pool (Lemma E.1), its KL to
  the pure-feature tilt (D_task(s), Def 2.5) and Theorem E.3's bound.
- :func:`prompt_study`: the best prompt of the toy's prompt family per level (Theorem F.7).
- :func:`exact_reference`, :func:`smoothness_paths`, :func:`exact_vs_plugin`, :func:`retrieval_study`,
  :func:`typical_set_study`, :func:`object_drift_study`: one call per section of notebook 02,
  each returning the numbers that its claims and figure use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
from scipy.optimize import minimize

from klsc_lib.analysis.kde import Grid2D, energy_distance, kde_kl_to_prior, sliced_wasserstein
from klsc_lib.baselines.gmm import (PromptFamily, calibrate_top_k, optimize_regularized, prompt_conditioned_gmm,
                                    resample_uniform, uniform_box_starts, y_axis_prox)
from klsc_lib.constraints.calibration import Calibrated, calibrate_knob, calibrate_lambda
from klsc_lib.constraints.divergences import kl_weights
from klsc_lib.constraints.hard_vs_tilt import (effective_sample_size, kl_tilt, resample, task_distortion_lower_bound,
                                               tilt)
from klsc_lib.constraints.score_variable import EmpiricalScore
from klsc_lib.diffusion.energy_dps import guidance_step, sample_energy_dps
from klsc_lib.diffusion.exact_guidance import ExactTiltGuidance
from klsc_lib.diffusion.gmm_oracle import GMMOracle, GaussianMixture
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.samplers import sample_ddpm, spaced_timesteps
from klsc_lib.energies import reference_energy
from klsc_lib.energies.base import Energy
from klsc_lib.interfaces import Prior

ENERGY_DPS_STEPS = {"EnergyDPS": "tilted_score", "EnergyDPS (constant step)": "constant"}
METHODS = ("retrieval", "OR", *ENERGY_DPS_STEPS)


@dataclass
class ToySamplers:
    """The compared samplers on the toy at one ``seed``, each a function knob -> samples
    with CRN. ``lam_brackets`` maps an EnergyDPS step size to its lambda search range."""

    gmm: GaussianMixture
    prior: Prior
    psi: Energy
    n: int
    num_steps: int
    pool_size: int
    or_box: tuple[float, float]
    or_steps: int
    or_lr: float
    or_beta_bracket: tuple[float, float]
    lam_brackets: dict[str, tuple[float, float]]
    seed: int = 0

    @classmethod
    def from_profile(cls, cfg: Any, gmm: GaussianMixture, prior: Prior, psi: Energy, seed: int = 0) -> ToySamplers:
        """The samplers of a notebook-02 profile (its ``n_samples``, ``num_steps``, ``pool_size``,
        ``or_*`` and ``lam_bracket*`` fields; App I sizes)."""
        return cls(gmm, prior, psi, cfg.n_samples, cfg.num_steps, cfg.pool_size, cfg.or_box, cfg.or_steps, cfg.or_lr,
                   cfg.or_beta_bracket, {"tilted_score": cfg.lam_bracket, "constant": cfg.lam_bracket_constant}, seed)

    def _gen(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(1000 * self.seed + offset)

    def energy_dps(self, lam: float, step_size: str = "tilted_score", energy: Energy | None = None,
                   num_steps: int | None = None, offset: int = 1, n: int | None = None) -> torch.Tensor:
        """Algorithm 1 with the oracle score, x_T and all step noise from one seeded generator."""
        g = self._gen(offset)
        x_T = torch.randn(self.n if n is None else n, 2, generator=g, dtype=torch.float64)
        guidance = GuidanceConfig(num_steps=num_steps or self.num_steps, step_size=step_size, cap_rule="none")
        return sample_energy_dps(self.prior, self.psi if energy is None else energy, guidance, lam_B=lam, x_T=x_T,
                                 generators=g, disable=True)

    def optimize(self, beta: float) -> torch.Tensor:
        """OR (eq. 18) by proximal gradient ascent of psi - beta x_(2)^2 from n box starts."""
        starts = uniform_box_starts(self.n, self.or_box, generator=self._gen(3))
        return optimize_regularized(self.psi, None, beta, starts, self.or_steps, self.or_lr, self.or_box,
                                    prox=y_axis_prox)

    def pool(self) -> torch.Tensor:
        """The retrieval pool: ``pool_size`` prior draws."""
        return self.gmm.sample(self.pool_size, generator=self._gen(4))

    def retrieve(self, pool_ND: torch.Tensor, target: float, tol: float) -> Calibrated:
        """Top-k at level ``target`` (eq. 206), scored on n uniform draws from the top-k set."""
        res = calibrate_top_k(pool_ND, self.psi(pool_ND), target, tol)
        if not res.reached:
            return res
        return Calibrated(res.method, res.target, res.knob, resample_uniform(res.samples, self.n, self._gen(5)),
                          res.mean_psi, True, attainable=res.attainable)


def calibration_summary(calibrated: dict[tuple[str, float], Calibrated]) -> dict[str, dict[str, Any]]:
    """The knob, achieved mean psi, success and message of each matched calibration (App I), keyed "method@t=level"."""
    return {f"{m}@t={t:g}": {"knob": r.knob, "mean_psi": r.mean_psi, "reached": r.reached, "message": r.message}
            for (m, t), r in calibrated.items()}


def matched_run(samplers: ToySamplers, targets: list[float], tol: float, max_iter: int,
                methods: tuple[str, ...] = METHODS) -> dict[tuple[str, float], Calibrated]:
    """Every method calibrated at every level t (App I): one knob each, the same n."""
    out: dict[tuple[str, float], Calibrated] = {}
    pool = samplers.pool() if "retrieval" in methods else None
    for t in targets:
        for m in methods:
            if m == "retrieval":
                out[m, t] = samplers.retrieve(pool, t, tol)
            elif m == "OR":
                out[m, t] = calibrate_knob(samplers.optimize, samplers.psi, t, *samplers.or_beta_bracket, tol,
                                           max_iter, increasing=False, method=m, knob_name="beta")
            else:
                step = ENERGY_DPS_STEPS[m]
                out[m, t] = calibrate_knob(lambda lam, s=step: samplers.energy_dps(lam, s), samplers.psi, t,
                                           *samplers.lam_brackets[step], tol, max_iter, method=m, knob_name="lambda")
    return out


def redraw(samplers: ToySamplers, method: str, res: Calibrated) -> torch.Tensor | None:
    """A fresh sample set of ``method`` at its calibrated knob, at ``samplers.seed``."""
    if not res.reached:
        return None
    if method == "retrieval":
        return samplers.retrieve(samplers.pool(), res.target, math.inf).samples
    if method == "OR":
        return samplers.optimize(res.knob)
    return samplers.energy_dps(res.knob, ENERGY_DPS_STEPS[method])


def replicate_kl(base: ToySamplers, calibrated: dict[tuple[str, float], Calibrated], seeds: list[int],
                 exact: Callable[[float, int], torch.Tensor], bandwidth: float, grid: Grid2D,
                 progress: Callable = lambda it: it) -> dict[str, dict[float, dict[str, list[float]]]]:
    """KDE-KL to the prior (eq. 212) and mean psi per method, level and seed. The first
    seed's sample sets are ``calibrated``'s; the others redraw at the same knob with fresh
    randomness (retrieval recalibrates k on a fresh pool). ``exact(t, seed)`` draws the
    exact tilt, and ``"prior"`` (n prior draws, no constraint) gives the estimator's own
    finite-sample value at lambda = 0."""
    targets = sorted({t for _, t in calibrated})
    methods = list(dict.fromkeys(m for m, _ in calibrated))
    out: dict[str, dict[float, dict[str, list[float]]]] = {
        m: {t: {"kde_kl": [], "mean_psi": []} for t in targets} for m in [*methods, "exact tilt", "prior"]}

    def record(m: str, t: float, samples: torch.Tensor | None) -> None:
        if samples is not None:
            out[m][t]["kde_kl"].append(kde_kl_to_prior(samples, base.gmm, bandwidth, grid))
            out[m][t]["mean_psi"].append(float(base.psi(samples).mean()))

    for i, seed in enumerate(progress(seeds)):
        s = ToySamplers(**{**base.__dict__, "seed": seed})
        prior_samples = base.gmm.sample(base.n, generator=s._gen(6))
        for t in targets:
            for m in methods:
                record(m, t, calibrated[m, t].samples if i == 0 else redraw(s, m, calibrated[m, t]))
            record("exact tilt", t, exact(t, seed))
            record("prior", t, prior_samples)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation, ddof 1; 0 for a single value)."""
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


def path_speeds(samples: list[torch.Tensor], levels: list[float], projection_seed: int = 0) -> torch.Tensor:
    """SW_2(samples_k, samples_{k+1}) / |level_{k+1} - level_k| for consecutive sample sets
    (one set of random projections for all pairs). A path continuous in its level keeps
    these bounded as the grid is refined; a jump of size J gives J / step."""
    if len(samples) != len(levels) or len(levels) < 2:
        raise ValueError("need one sample set per level and at least two levels")
    speeds = []
    for a, b, la, lb in zip(samples[:-1], samples[1:], levels[:-1], levels[1:]):
        if la == lb:
            raise ValueError(f"two consecutive levels are equal ({la}); the speed is undefined")
        sw = sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(projection_seed))
        speeds.append(sw / abs(lb - la))
    return torch.tensor(speeds, dtype=torch.float64)


def guidance_profile(exact: ExactTiltGuidance, prior: Prior, energy: Energy, x0_BD: torch.Tensor,
                     timesteps: list[int], generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """Along the forward noising of ``x0_BD`` (e.g. exact-tilt samples): median |grad log h_t|
    (exact, Theorem G.3), median |lambda grad_{x_t} psi(x0-hat)| (the plug-in of App G.4, same
    lambda) and the median cosine between the two, per diffusion timestep."""
    out: dict[str, list[float]] = {"timestep": [], "exact": [], "plugin": [], "cosine": []}
    for t in timesteps:
        t_B = torch.full((len(x0_BD),), int(t))
        x_t = prior.schedule.add_noise(x0_BD, torch.randn(x0_BD.shape, generator=generator, dtype=x0_BD.dtype), t_B)
        g_ex = exact.grad_log_h(x_t, t_B)
        g_pl = exact.lam * guidance_step(prior, energy, x_t, int(t)).grad
        out["timestep"].append(int(t))
        out["exact"].append(float(g_ex.norm(dim=1).median()))
        out["plugin"].append(float(g_pl.norm(dim=1).median()))
        out["cosine"].append(float(torch.nn.functional.cosine_similarity(g_ex, g_pl, dim=1).median()))
    return out


def calibrate_two_constraints(law_psi: EmpiricalScore, g_N: torch.Tensor, t: float, s: float,
                              tol: float = 1e-9) -> tuple[float, float]:
    """(lambda, omega) with E psi = t and E g = s under the tilt p e^{lambda psi + omega g} of
    the weighted pool ``law_psi`` (its values psi_N, task scores ``g_N``): Lemma E.1's
    two-constraint KL projection, by Newton's method on the convex dual
    log E_p e^{lambda psi + omega g} - lambda t - omega s (its gradient is the moment gap,
    its Hessian the tilted covariance). Raises ValueError when (t, s) is not attained."""
    psi_N, g_N = law_psi.values, g_N.to(law_psi.values)
    for name, v, level in (("psi", psi_N, t), ("g", g_N, s)):
        if not float(v.min()) < level < float(v.max()):
            raise ValueError(f"level {level:.4g} of {name} is not attained: it must lie strictly inside the pool's "
                             f"range [{float(v.min()):.4g}, {float(v.max()):.4g}]")
    log_w = law_psi.log_weights
    scale = torch.stack([psi_N.std(), g_N.std()]).clamp(min=1e-12)  # work in standardised units
    stats_N2 = torch.stack([psi_N, g_N], dim=1) / scale
    target_2 = torch.tensor([t, s], dtype=torch.float64) / scale

    def dual(v):
        eta = torch.as_tensor(v, dtype=torch.float64)
        logits = log_w + stats_N2 @ eta
        q = torch.softmax(logits, 0)
        mean = q @ stats_N2
        cov = (stats_N2 - mean).T @ (q.unsqueeze(1) * (stats_N2 - mean))
        return (float(torch.logsumexp(logits, 0) - eta @ target_2), (mean - target_2).numpy(), cov.numpy())

    res = minimize(lambda v: dual(v)[0], [0.0, 0.0], jac=lambda v: dual(v)[1], hess=lambda v: dual(v)[2],
                   method="trust-exact", options={"gtol": tol, "maxiter": 200})
    gap = float(abs(dual(res.x)[1]).max())
    if gap > 1e-6:
        raise ValueError(f"(t, s) = ({t:.4g}, {s:.4g}) is not attained by any tilt p e^(lambda psi + omega g) of this "
                         f"pool (moment gap {gap:.2g} in standard units); choose levels inside the pool's range")
    lam, omega = (torch.as_tensor(res.x) / scale).tolist()
    return lam, omega


def exact_tilt_sampler(law: EmpiricalScore, pool_ND: torch.Tensor, lams: dict[float, float],
                       n: int) -> Callable[[float, int], torch.Tensor]:
    """(t, seed) -> n draws of the exact tilt q*_t by importance resampling of the pool (App H.2)."""
    return lambda t, seed: resample(tilt(law, lams[t]), pool_ND, n, torch.Generator().manual_seed(7919 * seed + 1))


def guidance_convergence(samplers: ToySamplers, exact: ExactTiltGuidance, reference_ND: torch.Tensor,
                         steps: list[int], progress: Callable = lambda it: it) -> dict[int, dict[str, float]]:
    """DDPM with the exact guidance of Theorem G.3 and EnergyDPS (tilted-score step) at the
    same lambda, per number of reverse steps: energy distance to exact-tilt samples and mean psi."""
    out = {}
    for n_steps in progress(steps):
        g = samplers._gen(8)
        x_T = torch.randn(samplers.n, 2, generator=g, dtype=torch.float64)
        s_exact = sample_ddpm(exact, x_T, samplers.prior.schedule, generator=g, disable=True,
                              timesteps=spaced_timesteps(samplers.prior.schedule, n_steps))
        s_plug = samplers.energy_dps(exact.lam, num_steps=n_steps, offset=8)
        out[n_steps] = {"exact_ed": energy_distance(s_exact, reference_ND), "exact_mean_psi": float(samplers.psi(s_exact).mean()),
                        "plugin_ed": energy_distance(s_plug, reference_ND), "plugin_mean_psi": float(samplers.psi(s_plug).mean())}
    return out


def task_drift(law_psi: EmpiricalScore, g_N: torch.Tensor, t: float, gains: list[float]) -> list[dict[str, float]]:
    """Lemma E.1 at E psi = t and E g = s = E_{q*_t} g + gain, per gain: (lambda, omega), the
    exact D_task(s) = KL(p^{lambda,omega} || q*_t) on the pool and Theorem E.3's lower bound."""
    lam0 = calibrate_lambda(law_psi, t)
    feature = EmpiricalScore(g_N, law_psi.log_weights + lam0 * law_psi.values)  # g under q*_t
    s0 = float(feature.mean())
    rows = []
    for gain in gains:
        lam, omega = (lam0, 0.0) if gain == 0 else calibrate_two_constraints(law_psi, g_N, t, s0 + gain)
        joint = EmpiricalScore(g_N, law_psi.log_weights + lam * law_psi.values + omega * g_N)
        rows.append({"s_gain": gain, "s": s0 + gain, "lambda": lam, "omega": omega,
                     "mean_psi": float((joint.weights * law_psi.values).sum()), "mean_g": float(joint.mean()),
                     "kl_to_feature_tilt": float(kl_weights(joint.log_weights, feature.log_weights)),
                     "thm_E3_lower_bound": task_distortion_lower_bound(feature, s0 + gain)})
    return rows


def energy_dps_with_task(samplers: ToySamplers, task: Energy, omega: float, t: float, tol: float,
                         max_iter: int) -> Calibrated:
    """EnergyDPS with the energy lambda psi + omega g, lambda calibrated so mean psi = t (Fig 2 set-up)."""
    return calibrate_knob(lambda lam: samplers.energy_dps(1.0, energy=lam * samplers.psi + omega * task), samplers.psi,
                          t, *samplers.lam_brackets["tilted_score"], tol, max_iter, method=f"EnergyDPS omega={omega:.3g}",
                          knob_name="lambda")


def prompt_study(family: PromptFamily, samplers: ToySamplers, targets: list[float], bandwidth: float,
                 grid: Grid2D) -> dict[float, dict]:
    """Per level t: the best prompt (eq. 22), the KLSC tilt, the floor KL(p_w || q*_t) of eq. (175),
    all by quadrature, and the prompt sampler (DDPM on the oracle score of p_w) scored by KDE-KL."""
    out = {}
    for t in targets:
        w = family.best_weights(t)
        lam_t = family.tilt_lambda(t)
        oracle = GMMOracle(prompt_conditioned_gmm(samplers.gmm, w), samplers.prior.schedule)
        g = samplers._gen(7)
        x_T = torch.randn(samplers.n, 2, generator=g, dtype=torch.float64)
        s = sample_ddpm(oracle, x_T, samplers.prior.schedule, generator=g, disable=True,
                        timesteps=spaced_timesteps(samplers.prior.schedule, samplers.num_steps))
        out[t] = {"weights_best": w, "mean_psi_best": family.mean_psi(w), "kl_best_prompt": family.kl_to_prior(w),
                  "kl_exact_tilt": family.tilt_kl_to_prior(lam_t), "floor_kl_to_tilt": family.kl_to_tilt(w, lam_t),
                  "sampler_mean_psi": float(samplers.psi(s).mean()),
                  "sampler_kde_kl": kde_kl_to_prior(s, samplers.gmm, bandwidth, grid)}
    return out


def _fine_and_coarse(samples_RK: list[list[torch.Tensor]], levels_RK: list[list[float]]) -> dict[str, torch.Tensor]:
    """Path speeds per replicate on the full grid and on every other level (the coarse grid)."""
    out: dict[str, list] = {"fine_speed": [], "coarse_speed": [], "fine_mid": [], "coarse_mid": []}
    for samples, levels in zip(samples_RK, levels_RK):
        for key, sl in (("fine", slice(None)), ("coarse", slice(None, None, 2))):
            lv = levels[sl]
            out[f"{key}_speed"].append(path_speeds(samples[sl], lv))
            out[f"{key}_mid"].append(torch.tensor([(a + b) / 2 for a, b in zip(lv[:-1], lv[1:])]))
    stacked = {k: torch.stack(v) for k, v in out.items()}
    return {**stacked, "fine_mid": stacked["fine_mid"].mean(0), "coarse_mid": stacked["coarse_mid"].mean(0),
            "levels": torch.tensor(levels_RK)}


def energy_dps_path(samplers: ToySamplers, lams: list[float], replicates: int, n: int,
                    step_size: str = "tilted_score") -> dict[str, torch.Tensor]:
    """EnergyDPS along a lambda grid with CRN (one x_T and noise per replicate for every
    lambda); the level of each set is its mean psi. Speeds as in :func:`path_speeds`."""
    samples_RK, levels_RK = [], []
    for r in range(replicates):
        rep = ToySamplers(**{**samplers.__dict__, "seed": samplers.seed + 101 + r})
        samples = [rep.energy_dps(lam, step_size, n=n, offset=9) for lam in lams]
        samples_RK.append(samples)
        levels_RK.append([float(samplers.psi(s).mean()) for s in samples])
    return _fine_and_coarse(samples_RK, levels_RK)


def weighted_sliced_wasserstein(pool_ND: torch.Tensor, w_a: torch.Tensor, w_b: torch.Tensor,
                                num_projections: int = 128, num_quantiles: int = 512,
                                generator: torch.Generator | None = None) -> float:
    """Sliced W2 between two weightings of one point set (no resampling noise): per random
    direction, the weighted quantile functions of the projections on a common level grid."""
    directions = torch.randn(num_projections, pool_ND.shape[1], generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    proj_NP, order_NP = torch.sort(pool_ND.to(torch.float64) @ directions.T, dim=0)
    levels_Q = ((torch.arange(num_quantiles, dtype=torch.float64) + 0.5) / num_quantiles).expand(num_projections, -1)
    quantiles = []
    for w in (w_a, w_b):
        cdf_PN = (w / w.sum()).to(torch.float64)[order_NP].cumsum(0).T.contiguous()
        idx_PQ = torch.searchsorted(cdf_PN, levels_Q.contiguous()).clamp(max=len(pool_ND) - 1)
        quantiles.append(torch.gather(proj_NP.T, 1, idx_PQ))
    return float((quantiles[0] - quantiles[1]).square().mean().sqrt())


def exact_path(law: EmpiricalScore, pool_ND: torch.Tensor, lams: list[float], replicates: int, n: int,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """The exact tilt along a lambda grid as weightings of one prior sub-pool of size n
    (replicates: disjoint sub-pools), SW2 between neighbours by
    :func:`weighted_sliced_wasserstein`; the level is the tilted mean of the sub-pool."""
    if replicates * n > len(pool_ND):
        raise ValueError(f"need replicates * n <= pool size ({len(pool_ND)}), got {replicates} x {n}")
    out: dict[str, list] = {"fine_speed": [], "coarse_speed": [], "fine_mid": [], "coarse_mid": [], "levels": []}
    for r in range(replicates):
        sub = slice(r * n, (r + 1) * n)
        weights = [tilt(EmpiricalScore(law.values[sub], law.log_weights[sub]), lam).weights for lam in lams]
        levels = [float((w * law.values[sub]).sum()) for w in weights]
        out["levels"].append(levels)
        for key, step in (("fine", 1), ("coarse", 2)):
            w_k, lv = weights[::step], levels[::step]
            sw = [weighted_sliced_wasserstein(pool_ND[sub], a, b, generator=torch.Generator().manual_seed(seed))
                  for a, b in zip(w_k[:-1], w_k[1:])]
            out[f"{key}_speed"].append(torch.tensor(sw) / torch.tensor(lv).diff().abs())
            out[f"{key}_mid"].append(torch.tensor([(a + b) / 2 for a, b in zip(lv[:-1], lv[1:])]))
    stacked = {k: torch.tensor(v) if k == "levels" else torch.stack(v) for k, v in out.items()}
    return {**stacked, "fine_mid": stacked["fine_mid"].mean(0), "coarse_mid": stacked["coarse_mid"].mean(0)}


def pool_collapse(psi_N: torch.Tensor, lams: list[float]) -> dict[str, dict[float, float]]:
    """Lemma F.1 on a finite pool: ESS = 1 / sum w^2 and max w of the tilted empirical measure (eq. 17)."""
    laws = {lam: EmpiricalScore(psi_N, lam * psi_N) for lam in lams}
    return {"ess": {lam: effective_sample_size(law) for lam, law in laws.items()},
            "max_weight": {lam: float(law.weights.max()) for lam, law in laws.items()}}


def boundary_masses(psi: Energy, retrieved: torch.Tensor, exact_ND: torch.Tensor, delta: float) -> dict[str, float]:
    """B_delta (Def 2.3) above retrieval's threshold tau = its smallest score, for the top-k set
    and for exact-tilt samples conditioned on A_tau."""
    tau = float(psi(retrieved).min())
    return {"tau": tau, "B_delta_retrieval": float(EmpiricalScore(psi(retrieved)).boundary_mass(tau, delta)),
            "B_delta_exact_tilt": float(EmpiricalScore(psi(exact_ND)).boundary_mass(tau, delta))}


def typical_region(log_p_prior_N: torch.Tensor, eps: float = 0.05) -> tuple[float, tuple[float, float]]:
    """(ell_eps, central 95% band) of log p(X), X ~ p: the (1 - eps) highest-density region is
    {log p >= ell_eps} (Def F.3)."""
    q = torch.quantile(log_p_prior_N, torch.tensor([eps, 0.025, 0.975], dtype=log_p_prior_N.dtype))
    return float(q[0]), (float(q[1]), float(q[2]))


class ExactReference(NamedTuple):
    """The exact KLSC tilt q*_t of a prior pool: the pool, its score law, lambda*(t),
    KL(q*_t || p) and a sampler (t, seed) -> n draws (App H.2-H.3)."""

    pool_ND: torch.Tensor
    law: EmpiricalScore
    lam: dict[float, float]
    kl: dict[float, float]
    sample: Callable[[float, int], torch.Tensor]


def exact_reference(gmm: GaussianMixture, psi: Energy, pool_size: int, targets: list[float], n: int,
                    generator: torch.Generator) -> ExactReference:
    """q*_t per level t by self-normalised importance weighting of ``pool_size`` prior draws
    (App H.2-H.3): lambda*(t) by bisection of the tilted mean (Remark D.5) and
    KL(q*_t || p) = lambda t - A(lambda) (eq. 62)."""
    pool_ND = gmm.sample(pool_size, generator=generator)
    law = EmpiricalScore(psi(pool_ND))
    lam = {t: calibrate_lambda(law, t) for t in targets}
    kl = {t: float(kl_tilt(law, lam[t])) for t in targets}
    return ExactReference(pool_ND, law, lam, kl, exact_tilt_sampler(law, pool_ND, lam, n))


def smoothness_paths(samplers: ToySamplers, calibrated: dict[tuple[str, float], Calibrated], law: EmpiricalScore,
                     pool_ND: torch.Tensor, lam_exact: dict[float, float], ends: tuple[float, float], levels: int,
                     replicates: int, n: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Path speeds in t ("samples vary smoothly as t changes", Sec 2.3, Fig 3) of EnergyDPS
    (:func:`energy_dps_path`) and of the exact tilt (:func:`exact_path`) on ``levels`` evenly
    spaced lambdas between each one's lambda at the two levels ``ends``."""
    lam_dps = [calibrated["EnergyDPS", t].knob for t in ends]
    return {"EnergyDPS": energy_dps_path(samplers, torch.linspace(*lam_dps, levels).tolist(), replicates, n),
            "exact tilt": exact_path(law, pool_ND, torch.linspace(*[lam_exact[t] for t in ends], levels).tolist(),
                                     replicates, n, seed)}


@dataclass
class ExactVsPlugin:
    """Exact guidance vs the plug-in at one level (Theorem G.3, App G.3-G.4); see :func:`exact_vs_plugin`."""

    convergence: dict[int, dict[str, float]]
    mc_band: list[float]
    psi_standard_error: float
    matched_lambda: float
    matched_ed: float
    matched_reached: bool
    profile: dict[str, list[float]]

    @property
    def most_steps(self) -> dict[str, float]:
        """The convergence row at the largest number of reverse steps."""
        return self.convergence[max(self.convergence)]


def exact_vs_plugin(samplers: ToySamplers, exact: Callable[[float, int], torch.Tensor], lam: float,
                    matched: Calibrated, t: float, seed: int, order: int, steps: list[int], mc_replicates: int = 3,
                    profile_points: int = 400, profile_steps: int = 25,
                    progress: Callable = lambda it: it) -> ExactVsPlugin:
    """Theorem G.3 on the toy at level ``t`` (``lam`` = lambda*(t)): the Monte Carlo band (energy
    distances between independent exact-tilt sets), :func:`guidance_convergence` of the exact
    guidance grad log h_t vs the plug-in, the plug-in calibrated to t (``matched``) against the
    same reference, the standard error of mean psi, and :func:`guidance_profile` along the
    noising of ``profile_points`` reference samples (App G.3-G.4)."""
    reference = exact(t, seed)
    mc = [abs(energy_distance(reference, exact(t, seed + 50 + i))) for i in range(mc_replicates)]
    guided = ExactTiltGuidance(GMMOracle(samplers.gmm, samplers.prior.schedule), samplers.psi, lam, order=order)
    conv = guidance_convergence(samplers, guided, reference, steps, progress=progress)
    ed_matched = energy_distance(matched.samples, reference) if matched.reached else float("nan")
    profile = guidance_profile(guided, samplers.prior, samplers.psi, reference[:profile_points],
                               spaced_timesteps(samplers.prior.schedule, profile_steps).tolist(),
                               torch.Generator().manual_seed(seed))
    return ExactVsPlugin(conv, mc, float(samplers.psi(reference).std()) / samplers.n**0.5, matched.knob, ed_matched,
                         matched.reached, profile)


class RetrievalStudy(NamedTuple):
    """Lemma F.1 and boundary concentration of retrieval; see :func:`retrieval_study`."""

    ess: dict[float, float]
    max_weight: dict[float, float]
    boundary: dict[float, dict[str, float]]
    energydps_on_pool: dict[float, float]


def retrieval_study(samplers: ToySamplers, law: EmpiricalScore, pool_ND: torch.Tensor,
                    calibrated: dict[tuple[str, float], Calibrated], exact: Callable[[float, int], torch.Tensor],
                    seed: int, lams: list[float], delta: float) -> RetrievalStudy:
    """Sec 2.2.4 Methodology I on the first ``samplers.pool_size`` points of a prior pool:
    :func:`pool_collapse` of the tilted empirical measure (Lemma F.1, eq. 17),
    :func:`boundary_masses` of top-k vs the exact tilt per reached level (Lemmas D.6-D.7),
    and the fraction of EnergyDPS samples that coincide with a pool point."""
    pool = pool_ND[:samplers.pool_size]
    collapse = pool_collapse(law.values[:samplers.pool_size], lams)
    targets = list(dict.fromkeys(t for _, t in calibrated))
    boundary = {t: boundary_masses(samplers.psi, calibrated["retrieval", t].samples, exact(t, seed), delta)
                for t in targets if calibrated["retrieval", t].reached}
    on_pool = {t: float((torch.cdist(calibrated["EnergyDPS", t].samples, pool).min(1).values < 1e-12).float().mean())
               for t in targets if calibrated["EnergyDPS", t].reached}
    return RetrievalStudy(collapse["ess"], collapse["max_weight"], boundary, on_pool)


class TypicalSetStudy(NamedTuple):
    """Prior log-densities of each method's samples vs the typical region; see :func:`typical_set_study`."""

    log_p_prior: torch.Tensor
    ell: float
    band: tuple[float, float]
    log_p: dict[float, dict[str, torch.Tensor]]
    outside: dict[float, dict[str, float]]


def typical_set_study(gmm: GaussianMixture, prior_ND: torch.Tensor, calibrated: dict[tuple[str, float], Calibrated],
                      exact: Callable[[float, int], torch.Tensor], seed: int, eps: float = 0.05) -> TypicalSetStudy:
    """App F.3 (Def F.3, Lemma F.4): log p of the exact tilt, EnergyDPS and OR samples at each
    level OR reaches, and the fraction of each below the (1 - eps) typical-region level
    ell_eps of log p(X), X ~ p (from the prior draws ``prior_ND``)."""
    log_p_prior = gmm.log_prob(prior_ND)
    ell, band = typical_region(log_p_prior, eps)
    targets = list(dict.fromkeys(t for _, t in calibrated))
    log_p = {t: {"exact tilt": gmm.log_prob(exact(t, seed)),
                 **{m: gmm.log_prob(calibrated[m, t].samples) for m in ("EnergyDPS", "OR") if calibrated[m, t].reached}}
             for t in targets if calibrated["OR", t].reached}
    outside = {t: {m: float((lp < ell).float().mean()) for m, lp in row.items()} for t, row in log_p.items()}
    return TypicalSetStudy(log_p_prior, ell, band, log_p, outside)


class ObjectDrift(NamedTuple):
    """The two-constraint problem on the toy; see :func:`object_drift_study`."""

    rows: list[dict[str, float]]
    runs: dict[float, Calibrated]
    summary: dict[float, dict[str, Any]]


def object_drift_study(samplers: ToySamplers, law: EmpiricalScore, pool_ND: torch.Tensor, x_ref: Sequence[float],
                       t: float, gains: list[float], tol: float, max_iter: int,
                       progress: Callable = lambda it: it) -> ObjectDrift:
    """Object drift (Sec 2.2.3, App E) for the pixel-reference task g(x) = -||x - x_ref||^2
    (eq. 216): :func:`task_drift` (Lemma E.1's multipliers, D_task(s) and Theorem E.3's bound)
    on the weighted pool, then :func:`energy_dps_with_task` at each solved omega with lambda
    re-calibrated to mean psi = t (the toy's Fig 2), summarised by lambda, mean psi and the
    mean task score of its samples."""
    task = reference_energy(torch.tensor(x_ref, dtype=torch.float64))
    rows = task_drift(law, task(pool_ND), t, gains)
    runs = {r["omega"]: energy_dps_with_task(samplers, task, r["omega"], t, tol, max_iter) for r in progress(rows)}
    summary = {om: {"lambda": r.knob, "mean_psi": r.mean_psi, "reached": r.reached,
                    "mean_g": float(task(r.samples).mean()) if r.reached else None} for om, r in runs.items()}
    return ObjectDrift(rows, runs, summary)

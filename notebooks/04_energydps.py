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
# # 04 · EnergyDPS against dataset search, MACO and proxy guidance (paper Sec 2.3, 3.1-3.2, App J, L.2-L.5)
#
# EnergyDPS samples the KLSC tilt p(x) e^{lambda psi(x)} of a diffusion prior (eq. 24,
# Algorithm 1) with the gradient of the capped score min(psi(x0-hat), c). Every method
# here reads the same psi (the mix-reduced pre-TopK map of a transcoder feature, App J.2)
# and is calibrated per feature to the same target t, the mean psi of the feature's top-4
# real images (Sec 3.2): EnergyDPS through its cap c, MACO and the proxy baseline through
# their number of optimisation steps within a fixed budget. The proxy baseline (DiffExplainer-style,
# App J.3.2) optimises one prompt per feature over fresh noise with classifier-free guidance 4
# (eq. 20); its prompt space is the mini-world generator's own factor embedding, which knows the
# ground-truth factors: an advantage no real text prompt has. The world knows each image's generative factors, so
# a feature's concept is the (factor, value) its top real images share and we can measure
# whether an explanation shows it. We sample in a **fast configuration** (50 respaced DDPM
# steps, the gradient through the denoiser, strength x steps half the paper's 1.0 x 1000,
# batches mixing features) and time the paper's configuration (1000 steps) beside it, the fast
# one calibrated towards the psi `paper_config` reached. All samples go to the samples store. How we chose it, on 12 features of
# this world with an earlier prior (its first 7000-step training stage): Jacobian-free
# guidance is a third cheaper per step but left high-frequency colour patterns at matched psi;
# with the Jacobian at the paper's full strength x steps, a full run of this notebook turned
# both Fig 4 features (a size and a position feature) into colour noise (concept accuracy
# 0.475, KID in the factor classifier's features 1.31); half the strength reaches the same
# calibrated psi with cleaner samples.

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0
device = "auto"
out_dir = "../figures/04_energydps"

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from klsc_lib.analysis.explanation_metrics import concept_accuracy, method_table
from klsc_lib.analysis.image_metrics import kid
from klsc_lib.baselines.maco import MacoPrior
from klsc_lib.energies import class_logit
from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import sample_seeds, unit_seeds
from klsc_lib.explain import explain, feature_units, run_energy_dps, run_maco, run_proxy, stored_samples
from klsc_lib.paper_values import TABLE3, TABLE10, TABLE11
from klsc_lib.profiles import get_profile
from klsc_lib.profiles.nb04_energydps import samples_stores
from klsc_lib.report import Report
from klsc_lib.runtime import resolve_device, seed_everything
from klsc_lib.studies.nb04_energydps import (draw_units, explain_neurons, matched_cost, object_drift,
                                            strength_ablation, world_reader)
from klsc_lib.viz.explanations import (column_panels, feature_panels, method_rows, metric_bars, metric_scatter,
                                      strength_curve, strip)
from klsc_lib.viz.world import record_world
from klsc_lib.worlds import load_world
from klsc_lib.worlds.miniworld.quality import classify

cfg = get_profile("04_energydps", profile)
dev = resolve_device(device)
seed_everything(seed)
if cfg.threads:
    torch.set_num_threads(cfg.threads)
report = Report("04_energydps", out_dir, profile, seed, dev)
world = load_world(cfg.world, dev)
record_world(report, world)
units = feature_units(world, cfg.recipe, seed, dev)
half = len(world.test) // 2  # first half: dataset search; second half: KID reference
real = torch.stack([world.test[i][0] for i in range(len(world.test))])
n = cfg.n_per_unit

# %% [markdown]
# ## Features, their targets t and concepts (dataset search on the same psi)
# Random features among those that fire on all of their top-20 search images (disclosed
# filter: a feature that never fires has no target). A feature's concept is its best
# factor by chance-corrected purity over the top-20 images, and that factor's modal value.

# %%
g = torch.Generator().manual_seed(seed)
drawn = draw_units(units, world, cfg.n_features, g, cfg.top_k, cfg.k_target)
feats, target, search, concepts = drawn.units_U, drawn.target_U, drawn.search, drawn.concepts
print(f"{len(feats)} features; t from {target.min():.2f} to {target.max():.2f}; mean concept purity "
      f"{concepts.purity_U.mean():.2f}")
report.metric("features", {"n": len(feats), "eligible_of_drawn": f"{drawn.eligible}/{drawn.drawn}",
                           "mean_purity": concepts.purity_U.mean()})

# %% [markdown]
# ## The four methods, each calibrated towards the same target t (Sec 3.2), through the samples store

# %%
stores = {m: s for (m, kind), s in samples_stores(profile, seed).items() if kind == "Feature"}
samples = {"TopK": (search.images_UKCHW[:, :cfg.k_target], search.psi_UK[:, :cfg.k_target])}
maco_prior = MacoPrior.from_images(real[:half])
runs = {"MACO": lambda u, t: run_maco(maco_prior, units, u, t, n, world.image_size, cfg.maco, seed),
        "DiffExplainer": lambda u, t: run_proxy(world.prompt_proxy, world.prior, units, u, t, n, cfg.proxy, seed),
        "EnergyDPS": lambda u, t: run_energy_dps(world.prior, units, u, t, n, cfg.fast, seed, cfg.batch_size)}
for j, u in enumerate(feats.tolist()):
    stores["TopK"].put(u, samples["TopK"][0][j], samples["TopK"][1][j])
for method, run in runs.items():
    explain(stores[method], run, feats, target)
    samples[method] = stored_samples(stores[method], feats)
seeds = unit_seeds(seed, feats, n)  # the noise of the EnergyDPS samples above, unguided
x_u, psi_u = sample_units(world.prior, units.energy, feats.repeat_interleave(n),
                          replace(cfg.fast, strength=0.0, cap_rule="none"), seeds, batch_size=cfg.batch_size,
                          device=units.device)
samples["unguided"] = (x_u.reshape(len(feats), n, *x_u.shape[1:]), psi_u.reshape(len(feats), n))
cost_of = lambda m: stores[m].get(int(feats[0])).meta["seconds_per_sample"]  # noqa: E731  (as measured when drawn)

# %% [markdown]
# ## Fig 4 analogue: two features, a row per method

# %%
show = np.argsort(-concepts.purity_U)[:2]
methods = ("TopK", "MACO", "DiffExplainer", "EnergyDPS")
value_names = world.value_names  # readable values on the mini-world, else value ids
concept = [f"{c}={value_names[c][int(v)] if c in value_names else v}" for c, v in zip(concepts.factor_U,
                                                                                     concepts.value_U)]
labels = [f"feature {int(f)}\n{c}" for f, c in zip(feats, concept)]
fig = method_rows(*feature_panels(samples, methods, show, labels, target),
                  "Fig 4 analogue: the two purest of the random features, each method calibrated towards the "
                  "target t\n(the mean psi of the top-4 real images); each row gives the psi that method reached")
report.savefig(fig, "fig4_methods")
plt.show()
report.metric("fig4", {f"feature {int(feats[i])}": {"concept": concept[i], "t": target[i],
                                                     **{m: samples[m][1][i].mean() for m in methods}} for i in show},
              note="mean psi of each method's samples against the feature's target t")
rand = torch.randperm(len(feats), generator=g)[:4]
panels, titles, cells = column_panels(samples, methods, rand.tolist(), labels, target)
fig = method_rows(panels, None, "Four more random features, one sample per method (column: feature, concept, "
                  "target t; under each image: its psi)", col_titles=titles, cell_labels=cells)
report.savefig(fig, "fig4_random")
report.metric("fig4_random", {f"feature {int(feats[i])}": {"concept": concept[i], "t": target[i],
                                                            **{m: samples[m][1][i, 0] for m in methods}}
                              for i in rand.tolist()}, note="psi of the one sample shown per method")
plt.show()

# %% [markdown]
# **What we see.** Each caption gives the psi the row's samples reached, as a fraction of the
# feature's target t: the top-k row is t by construction; a generated row far above t overshot (the
# cap bounds the gradient, not the value), far below t fell short. On the smoke world (an untrained
# prior) the generated rows are noise. On `default`, EnergyDPS falls short on one feature and
# overshoots on the other (0.16<!--= 04:fig4.feature 373.EnergyDPS --> of 0.21<!--= 04:fig4.feature 373.t --> and
# 1.90<!--= 04:fig4.feature 445.EnergyDPS --> of 1.72<!--= 04:fig4.feature 445.t -->). For the large-digit feature (373, concept
# size = 12px) its four samples are clean glyphs, three of them large, of other digits than the top images' 5s.
# For the small-digit feature (445, concept size = 8px) one sample is a clean small glyph, but two are strewn with
# blocks of colour noise and one is mostly noise: guidance still finds adversarial patterns where psi is large.
# DiffExplainer-style samples are clean digits that fall far short of t
# (-0.06<!--= 04:fig4.feature 373.DiffExplainer --> of 0.21 and 0.64<!--= 04:fig4.feature 445.DiffExplainer --> of 1.72); MACO
# gives colour fields. The four random features of the second figure give a similar picture: clean
# glyphs from EnergyDPS and DiffExplainer (the latter far below t), colour fields from MACO.
#
# ## Table 3 analogue: activation, KID, concept accuracy, high frequencies, diversity
# Concept accuracy: a factor reader that is not the explained backbone (the world's
# all-factor classifier when it has one, else nearest real images in pixel space) reads each
# sample's value of the feature's concept factor. KID pools every sample of a method against
# held-out real images, in the backbone's penultimate features and in a second space (the
# factor classifier's features, else pixels). Intervals: bootstrap over features.

# %%
reader = world_reader(world)
read, second, second_name = reader.read, reader.features, reader.name
spaces = {"backbone": lambda x: classify(world.backbone, x.to(dev))[1].cpu(), second_name: second}
table = method_table(samples, target, read, concepts, spaces, real[half:half + cfg.n_real_kid], seed)
rows = {m: {k: round(v[0], 4) for k, v in row.items()} for m, row in table.items()}
for m, row in table.items():
    print(f"{m:>14}: " + ", ".join(f"{k} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for k, v in row.items()))
    report.metric(f"table3/{m}", {k: list(v) for k, v in row.items()}, paper=TABLE3["random100"].get(m),
                  note=f"{len(feats)} features x {samples[m][0].shape[1]} samples; mean, lo, hi")
kid2 = f"KID {second_name}"
# one kind of interval in the figure, 95 %: bootstrap over features, and KID's mean +- 1.96 SD over subsets
# (method_table gives KID as mean +- 1 SD)
z95 = {k: 1.96 if k.startswith("KID") else 1.0 for k in next(iter(table.values()))}
plotted = {m: {k: (v[0], v[0] - z95[k] * (v[0] - v[1]), v[0] + z95[k] * (v[2] - v[0])) for k, v in row.items()}
           for m, row in table.items()}
fig = metric_bars(plotted, ["psi_over_t", "concept_acc", "hf", "KID backbone", kid2, "diversity"],
                  f"Table 3 analogue: {len(feats)} random features x {n} samples, 95 % intervals (bootstrap over "
                  "features; KID: mean +- 1.96 SD over subsets, values below 0.001 drawn at 0.001)", ncols=3,
                  log=("KID backbone", kid2))
report.savefig(fig, "table3")
plt.show()

# %%
gen = ("MACO", "DiffExplainer", "EnergyDPS")
best = lambda key, sign=1: max(gen, key=lambda m: sign * table[m][key][0])
sep = lambda key: all(table["EnergyDPS"][key][2] < table[m][key][1] for m in gen if m != "EnergyDPS")
for key in ("KID backbone", kid2):
    report.claim(f"energydps_best_{key.replace(' ', '_').lower()}", "Sec 3.2, Table 3", f"with every method "
                 f"calibrated towards the same t, EnergyDPS has the lowest {key} among the generated explanations (separated by 1 SD: {sep(key)})",
                 {m: rows[m][key] for m in gen}, None, best(key, -1) == "EnergyDPS", kind="paper")
report.claim("energydps_best_concept", "Sec 3.2-3.3", "EnergyDPS has the highest ground-truth concept accuracy among "
             "the generated explanations", {m: rows[m]["concept_acc"] for m in gen}, None,
             best("concept_acc") == "EnergyDPS", kind="paper")
report.claim("maco_most_high_frequency", "Sec 3.2, App J.3.1", "MACO shows the most high-frequency energy",
             {m: rows[m]["hf"] for m in gen}, None, best("hf") == "MACO", kind="paper")
dx = rows["DiffExplainer"]
short = dx["psi_over_t"] < 0.95 or dx["concept_acc"] < rows["EnergyDPS"]["concept_acc"]
report.claim("proxy_short_or_drifts", "Sec 3.2, App J.3.2", "the proxy-guided baseline falls short of t or drifts off "
             "the feature's concept", rows["DiffExplainer"], None, short, kind="paper")
reached = float((abs(table["EnergyDPS"]["psi_over_t"][0] - 1) <= 0.05))
report.claim("energydps_matched", "Sec 3.2", "calibrated EnergyDPS reaches t within 5 % on average",
             rows["EnergyDPS"]["psi_over_t"], 1.0, bool(reached), kind="ours", threshold=0.05)

# %% [markdown]
# **What we see.** On `default` (50<!--= 04:features.n --> features x 4 samples), EnergyDPS reaches t (psi/t
# 0.97<!--= 04:table3/EnergyDPS.psi_over_t.0 -->, 95 % CI 0.94<!--= 04:table3/EnergyDPS.psi_over_t.1 -->-1.01<!--= 04:table3/EnergyDPS.psi_over_t.2 -->).
#
# The paper's Table 3 reports activation and two no-reference image-quality scores, QualiCLIP and
# NRQM, on which EnergyDPS is best; those scores mean nothing on 16 px images, so we test its
# claims with KID, ground-truth concept accuracy and high-frequency energy instead. In the paper
# the DiffExplainer baseline reached about the same activation as the others (psi
# 15.34<!--= 04:table3/DiffExplainer.paper.psi --> against EnergyDPS's 16.2<!--= 04:table3/EnergyDPS.paper.psi -->
# and MACO's 16.51<!--= 04:table3/MACO.paper.psi -->); here it stops far below t. Three of the
# four Table 3 claims hold here (both KIDs and MACO's high-frequency energy), concept accuracy does not,
# and every one is decided by a gap inside its interval:
#
# - **KID, backbone features (holds<!--holds 04:energydps_best_kid_backbone -->, inside 1 SD):** EnergyDPS's
#   0.139<!--= 04:table3/EnergyDPS.KID backbone.0 --> +- 0.065<!--= 04:table3/EnergyDPS.KID backbone.0 - 04:table3/EnergyDPS.KID backbone.1 -->
#   is below DiffExplainer's 0.273<!--= 04:table3/DiffExplainer.KID backbone.0 --> +-
#   0.082<!--= 04:table3/DiffExplainer.KID backbone.0 - 04:table3/DiffExplainer.KID backbone.1 --> and far below MACO's
#   1.58<!--= 04:table3/MACO.KID backbone.0 -->, but the 1 SD bands of EnergyDPS and DiffExplainer touch.
#   DiffExplainer stays near the prior and reaches only 11<!--= 04:table3/DiffExplainer.psi_over_t.0 * 100 --> % of t;
#   unguided samples score 0.108<!--= 04:table3/unguided.KID backbone.0 -->, and the real top-k images
#   0.347<!--= 04:table3/TopK.KID backbone.0 --> (four images of a narrow concept per feature are not a sample of the data).
# - **KID, factor classifier's features (holds<!--holds 04:energydps_best_kid_factor_classifier -->, inside 1 SD):** EnergyDPS's
#   0.080<!--= 04:table3/EnergyDPS.KID factor classifier.0 --> is just below DiffExplainer's
#   0.093<!--= 04:table3/DiffExplainer.KID factor classifier.0 --> and far below MACO's
#   0.28<!--= 04:table3/MACO.KID factor classifier.0 -->; the real top-k images score
#   0.049<!--= 04:table3/TopK.KID factor classifier.0 --> and unguided samples
#   0.018<!--= 04:table3/unguided.KID factor classifier.0 -->. In the previous committed run (other features) it was
#   0.648, dominated by colour noise on spatial features; the colour noise is still there on some features (Fig 4's
#   feature 445).
# - **Concept accuracy (fails<!--holds 04:energydps_best_concept -->, inside the CI):** EnergyDPS's
#   0.525<!--= 04:table3/EnergyDPS.concept_acc.0 --> (CI 0.435<!--= 04:table3/EnergyDPS.concept_acc.1 -->-0.615<!--= 04:table3/EnergyDPS.concept_acc.2 -->)
#   is between MACO's 0.51<!--= 04:table3/MACO.concept_acc.0 --> (whose steps are calibrated on the same psi) and
#   DiffExplainer's 0.565<!--= 04:table3/DiffExplainer.concept_acc.0 -->, which reaches 11 % of t: its clean prior
#   digits carry the concept factor's common values. The real top-4 images reach
#   0.76<!--= 04:table3/TopK.concept_acc.0 --> and unguided samples 0.395<!--= 04:table3/unguided.concept_acc.0 -->.
# - **High frequencies (holds<!--holds 04:maco_most_high_frequency -->):** MACO has the most high-frequency
#   energy among the generated explanations: 0.193<!--= 04:table3/MACO.hf.0 --> against DiffExplainer's
#   0.173<!--= 04:table3/DiffExplainer.hf.0 --> and EnergyDPS's 0.168<!--= 04:table3/EnergyDPS.hf.0 -->; the top-k
#   real images have 0.196<!--= 04:table3/TopK.hf.0 -->.
#
# These verdicts moved between the previous committed run and this one although the prior, the seed
# scheme and the recipe are the same: notebook 03's transcoder was retrained into a fresh cache and
# differs in rounding (its dead fraction moved from 34 % to 30 %), so notebook 04 drew other random
# features. On the previous features both KID claims failed and concept accuracy held; here it is the
# other way round. Every one of these gaps is inside its interval, so on this world they are
# feature-draw noise, not findings.
#
# The fifth claim, that the proxy baseline falls short of t, holds<!--holds 04:proxy_short_or_drifts -->. Each claim is
# in the ledger.
#
# The better prior helped EnergyDPS most in KID: in the factor classifier's features its KID fell
# from 0.46 on the CPU-trained default prior of an earlier version to 0.17 on the previous GPU prior
# and 0.035-0.648 on this one, depending on the seeds and the features drawn. The verdicts move
# with the prior, the seeds and the features, and every combination gave different ones:
#
# | prior | EnergyDPS's KID rank (backbone; factor classifier) | concept accuracy, EnergyDPS vs MACO |
# |---|---|---|
# | this one, present seeds, this run's transcoder | first; first | 0.525 vs 0.51 (DiffExplainer 0.565) |
# | this one, present seeds, previous transcoder | second; second | 0.51 vs 0.51 |
# | this one (12700 GPU steps, max-probability 0.953), previous seeds | first; first | 0.465 vs 0.53 |
# | previous (9100 GPU steps, 0.950) | second; second | 0.47 vs 0.53 |
# | earlier default (28000 CPU steps, 0.941) | first, narrowly; third | 0.51 vs 0.53 |
# | 16000 CPU steps | second; second | – |
# | 7000 CPU steps | – ; first (0.045) | – |
#
# KID pools only 200 samples per method, so the "separated by 1 SD" flag says whether KID can rank
# the methods at all at this size.
#
# The verdicts also move with floating-point noise. On an earlier prior we ran notebook 03 with
# one OpenMP thread instead of two. It trained a transcoder that differed only in rounding
# (explained variance 0.956 either way, 28 % dead instead of 34 %), so notebook 04 drew other
# random features. On that run EnergyDPS had the best concept accuracy (0.54 vs MACO's 0.52) and
# failed both KID claims. With 50 features, gaps of a few hundredths in concept accuracy or KID are
# within run-to-run noise. Only DiffExplainer's shortfall has held on every run. MACO had the most
# high frequencies on every CPU-trained prior; on the GPU-trained ones it depends on the seeds and the
# features drawn (it does on this run and on the previous committed one).
#
# ## Table 3 against the exact answer: the KLSC tilt q* of the world's own generator
# The table above compares methods with each other and with real images. On the mini-world we
# can do better: draw a pool of fresh images from the world's generator (the data law p itself),
# score them with the same psi, and solve for each feature the tilt q* ∝ p e^{lambda psi} with
# E_q* psi = t, the law KLSC asks a sampler to reach (Def. 2.2), and the hard truncation with the
# same mean. Each method is then scored by how close its samples are to q*, feature by feature,
# so two methods are compared on the same features (paired bootstrap). The paper's Table 3 used
# QualiCLIP and NRQM (no-reference quality scores); on 16 px images they mean nothing, so these
# columns are our substitutes: TV of the factor histograms (read by the factor classifier) to q*'s,
# on all factors and on the concept factor; Wasserstein-1 of psi to q*'s psi law; KID to q* draws;
# concept accuracy (the concept from the feature's top pool images, disjoint from the real top-k
# images; a reading below 0.9 confidence counts as a miss; chance-corrected); the share of
# off-palette pixels (colours no world image has; 0 on every real image); diversity; cost.
#
# First, on separate development features, the EnergyDPS variants against q* (the notebook
# picks the single-pass variant with the lowest median TV to q* for the reported features).

# %%
from klsc_lib.studies.feature_reference import feature_references
from klsc_lib.studies.nb04_energydps import reach, sampler_candidates
from klsc_lib.studies.reference_table import concept_names, exact_samples, prior_reweighted, reference_table
from klsc_lib.worlds.miniworld.factor_classifier import factor_probabilities

probs_of = lambda x: factor_probabilities(world.factor_classifier, x.to(dev))  # noqa: E731
candidates = sampler_candidates(world.prior, units, cfg.fast, cfg.tilt, cfg.smc_particles, cfg.smc_population, seed,
                                cfg.batch_size)
g_dev = torch.Generator().manual_seed(seed + 1)
dev_draw = draw_units(units, world, 2 * cfg.n_dev_features + len(feats), g_dev, cfg.top_k, cfg.k_target)
dev_feats = torch.tensor([u for u in dev_draw.units_U.tolist() if u not in set(feats.tolist())][:cfg.n_dev_features])
dev_refs = feature_references(world, cfg.recipe, dev_feats, cfg.n_pool, seed=seed, device=dev)
dev_lam = torch.tensor([r.tilt.knob for r in dev_refs.refs])
dev_runs = {name: run(dev_feats, dev_refs.target_U, dev_lam, cfg.n_dev_samples)
            for name, run in tqdm(candidates.items(), desc="development candidates")}
dev_table = reference_table({"q*": exact_samples(dev_refs, cfg.n_dev_samples, seed=seed),
                             **{k: (r.images_UNCHW, r.psi_UN) for k, r in dev_runs.items()}},
                            dev_refs, probs_of, reader.features, seed=seed)
dev_tv = dev_table.median("tv_mean")
smc_variants = [k for k in candidates if k.startswith("twisted SMC")]
chosen = min([k for k in candidates if k not in smc_variants], key=dev_tv.get)
smc_chosen = min(smc_variants, key=dev_tv.get)
for k, row in dev_table.summary(seed).items():
    cost = f", {dev_runs[k].seconds_per_sample:.2f} s/sample" if k in dev_runs else ""
    print(f"{k:>17}: median TV {dev_tv[k]:.3f}, " + ", ".join(f"{m} {v[0]:.3f}" for m, v in row.items()) + cost)
print("chosen:", chosen, "; SMC variant:", smc_chosen)
report.metric("dev_candidates", {k: {**{m: v[0] for m, v in row.items()}, "median_tv": dev_tv[k],
                                     **({"s_per_sample": dev_runs[k].seconds_per_sample} if k in dev_runs else {})}
                                 for k, row in dev_table.summary(seed).items()},
              note=f"{len(dev_feats)} development features x {cfg.n_dev_samples} samples; chosen: {chosen}, "
                   f"{smc_chosen}")
report.metric("dev_chosen", {"single pass": chosen, "SMC": smc_chosen})

# %% [markdown]
# **What we see** (8 development features x 8 samples, disjoint from the reported ones). Against
# q*, whose own 8 draws sit at a median TV of 0.20<!--= 04:dev_candidates.q*.median_tv --> (the floor that 8 samples allow), every
# single-pass variant stays near the unguided prior: median TV 0.377<!--= 04:dev_candidates.capped.median_tv --> for the capped configuration
# of the table above (1.34<!--= 04:dev_candidates.capped.s_per_sample ~30% --> s per sample, calibration included), 0.379<!--= 04:dev_candidates.tilt.median_tv --> for the tilt at the pool's
# lambda (0.29<!--= 04:dev_candidates.tilt.s_per_sample ~30% --> s per sample; it reaches only 0.57<!--= 04:dev_candidates.tilt.psi_over_t --> t, the plug-in's usual shortfall), the same
# 0.379<!--= 04:dev_candidates.tilt+final shift.median_tv --> with the release's un-denoised final shift (which changes almost nothing here), and 0.342<!--= 04:dev_candidates.tilt 2 lambda.median_tv -->
# with lambda doubled (1.07<!--= 04:dev_candidates.tilt 2 lambda.psi_over_t --> t), which the notebook chose. The shared-population twisted SMC reaches
# the concept best (concept accuracy 0.37<!--= 04:dev_candidates.twisted SMC.concept_acc --> against q*'s 0.54<!--= 04:dev_candidates.q*.concept_acc --> and at most 0.22 for the others) but
# its 32 particles collapse onto a few lineages (diversity 25<!--= 04:dev_candidates.twisted SMC.diversity --> against q*'s 48<!--= 04:dev_candidates.q*.diversity -->), so its factor histograms are the farthest from
# q* (0.56<!--= 04:dev_candidates.twisted SMC.median_tv -->). The independent-population variant (one population of 8 particles per kept sample,
# the same cost) has the lowest median TV of all candidates, 0.331<!--= 04:dev_candidates.twisted SMC, independent.median_tv -->, with concept accuracy
# 0.22<!--= 04:dev_candidates.twisted SMC, independent.concept_acc -->, q*'s diversity (49<!--= 04:dev_candidates.twisted SMC, independent.diversity -->) and no off-palette pixels, at
# 2.3<!--= 04:dev_candidates.twisted SMC, independent.s_per_sample ~30% --> s per sample; the notebook takes it as the SMC row.
#
# Four corrections on top of the doubled lambda, none of which beats it on median TV:
# psi averaged over 4 shifted copies of x0-hat (0.372<!--= 04:dev_candidates.tilt 2 lambda, 4 views.median_tv -->) makes psi harder to raise, so the same lambda
# reaches only 0.48<!--= 04:dev_candidates.tilt 2 lambda, 4 views.psi_over_t --> t; clipping each sample's shift to the noise norm of its step (0.377<!--= 04:dev_candidates.tilt 2 lambda, shift clipped.median_tv -->,
# 0.98<!--= 04:dev_candidates.tilt 2 lambda, shift clipped.psi_over_t --> t) changes little; guiding with psi read on the whole map instead of its centre
# (0.356<!--= 04:dev_candidates.tilt 2 lambda, full map.median_tv -->) moves the feature's activity out of the central window, so the psi that is
# reported falls to -0.07<!--= 04:dev_candidates.tilt 2 lambda, full map.psi_over_t --> t. Self-recurrence (every step taken 3 times, re-noised in between)
# is the one that moves the sampler toward q* on the other columns: psi-W1 0.096<!--= 04:dev_candidates.tilt 2 lambda, recurrence 3.psi_w1 --> against
# 0.238<!--= 04:dev_candidates.tilt 2 lambda.psi_w1 -->, KID to q* 0.075<!--= 04:dev_candidates.tilt 2 lambda, recurrence 3.KID to q* --> against 0.109<!--= 04:dev_candidates.tilt 2 lambda.KID to q* -->, concept accuracy 0.10<!--= 04:dev_candidates.tilt 2 lambda, recurrence 3.concept_acc --> against 0.04<!--= 04:dev_candidates.tilt 2 lambda.concept_acc -->,
# at 0.79<!--= 04:dev_candidates.tilt 2 lambda, recurrence 3.s_per_sample ~30% --> s per sample (3x the steps), but not on the factor histograms (median TV
# 0.373<!--= 04:dev_candidates.tilt 2 lambda, recurrence 3.median_tv -->). With 8 features x 8 samples these differences are small against the spread
# between features; the selection rule (lowest median TV) was fixed before they were measured and
# keeps the doubled lambda.
#
# Now the reported features: each row's samples against each feature's q*. The tilt's lambda
# comes from the pool (fresh images of the world: on a real model, the same solve on the real
# images' psi that dataset search computes anyway); the capped row is the stored EnergyDPS above.

# %%
refs = feature_references(world, cfg.recipe, feats, cfg.n_pool, seed=seed, device=dev)
lam = torch.tensor([r.tilt.knob for r in refs.refs])
summ = refs.summary()
ess, kl = np.array([r["tilt_ess"] for r in summ]), np.array([r["tilt_kl"] for r in summ])
print(f"q* of {len(feats)} features on {cfg.n_pool} pool images: lambda {lam.min():.1f}-{lam.max():.1f}, ESS median "
      f"{np.median(ess):.0f} (min {ess.min():.0f}), KL(q*||p) median {np.median(kl):.2f} nats")
report.metric("exact_reference", {"n_pool": cfg.n_pool, "lambda_median": lam.median(), "ess_median": np.median(ess),
                                  "ess_min": ess.min(), "kl_median": np.median(kl)})
prior_rw = prior_reweighted(world.prior, units.scores(feats), refs, cfg.n_prior_draws, n, cfg.tilt, seed,
                            cfg.batch_size, units.device)
print(f"the learned prior's own tilt at t, on {cfg.n_prior_draws} unguided draws: ESS median "
      f"{prior_rw.ess_U.median():.1f} (min {prior_rw.ess_U.min():.1f}); t above every draw for "
      f"{int(prior_rw.at_lambda_U.sum())} features (q*'s lambda used there)")
report.metric("prior_reweighted", {"n_draws": cfg.n_prior_draws, "ess_median": prior_rw.ess_U.median(),
                                   "ess_min": prior_rw.ess_U.min(), "at_lambda": int(prior_rw.at_lambda_U.sum())})
ours = f"EnergyDPS ({chosen})" if chosen != "capped" else "EnergyDPS (capped)"
extra = {ours: candidates[chosen](feats, target, lam, n)} if chosen != "capped" else {}
extra["EnergyDPS (twisted SMC)"] = candidates[smc_chosen](feats, target, lam, n)
rows_x = {"q*": exact_samples(refs, n, seed=seed), "truncation": exact_samples(refs, n, "truncation", seed=seed),
          "prior, reweighted": prior_rw.samples,
          "TopK": (samples["TopK"][0][:, :n], samples["TopK"][1][:, :n]), "EnergyDPS (capped)": samples["EnergyDPS"],
          **{k: (r.images_UNCHW, r.psi_UN) for k, r in extra.items()},
          "MACO": samples["MACO"], "DiffExplainer": samples["DiffExplainer"], "unguided": samples["unguided"]}
exact = reference_table(rows_x, refs, probs_of, reader.features, seed=seed)
cost_x = {"EnergyDPS (capped)": cost_of("EnergyDPS"), "MACO": cost_of("MACO"), "DiffExplainer": cost_of("DiffExplainer"),
          **{k: r.seconds_per_sample for k, r in extra.items()}}
summary_x = exact.summary(seed)
for k, row in summary_x.items():
    print(f"{k:>24}: " + ", ".join(f"{m} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for m, v in row.items())
          + (f", {cost_x[k]:.2f} s/sample" if k in cost_x else ""))
    report.metric(f"exact/{k}", {**{m: list(v) for m, v in row.items()}, "median_tv": exact.median("tv_mean")[k],
                                 **({"s_per_sample": cost_x[k]} if k in cost_x else {})},
                  note=f"{len(feats)} features x {n} samples; mean, lo, hi (95 % bootstrap over features; KID: +- 1 SD)")
paired_x = {m: exact.paired(m, ours, seed) for m in ("tv_mean", "tv_concept", "psi_w1", "concept_acc")}
report.metric("exact_paired", paired_x, note=f"mean(row - {ours}) over the same features, 95 % paired bootstrap")
resolved = {m: "farther from q*" if lo > 0 else "closer to q*" if hi < 0 else "inside the CI"
            for m, (_, lo, hi) in paired_x["tv_mean"].items()}
print(f"TV to q* against {ours}, paired over features: " + "; ".join(f"{m} {v}" for m, v in resolved.items()))
report.metric("exact_resolved", resolved, note=f"tv_mean of each row against {ours}: a difference inside the 95 % "
              "paired interval may flip with another seed")
reach_x = {"MACO": reach(stores["MACO"], feats, target, cfg.maco.max_steps),
           "DiffExplainer": reach(stores["DiffExplainer"], feats, target, cfg.proxy.max_steps)}
for m, r in reach_x.items():
    print(f"{m}: within {r['budget']} steps, psi >= 0.9 t on {r['share_at_0.9t']:.0%} of features, >= t on "
          f"{r['share_at_t']:.0%} (median step {r['steps_to_t_median']:.0f})")
report.metric("reach", reach_x, note="fixed step budgets; a feature stops at its first checked step at t")
smc = extra["EnergyDPS (twisted SMC)"].info
print(f"{smc_chosen}: {smc['n_particles']} particles per population, from "
      f"{smc['ancestors_U'].float().mean():.1f} distinct lineages on average (min {smc['ancestors_U'].min()})")
report.metric("smc", {"variant": smc_chosen, "particles": smc["n_particles"],
                      "lineages_mean": smc["ancestors_U"].float().mean(), "lineages_min": smc["ancestors_U"].min(), "resamples_mean": smc["resamples_U"].float().mean()})
cols = ["psi_over_t", "tv_mean", "tv_concept", "psi_w1", "KID to q*", "concept_acc", "off_palette", "diversity"]
fig = metric_bars(summary_x, cols, f"Table 3 against the exact tilt q*: {len(feats)} features x {n} samples, 95 % "
                  "bootstrap intervals over features (KID: +- 1 SD over subsets, log axis)", ncols=4,
                  log=("KID to q*",))
report.savefig(fig, "table3_exact")
plt.show()
report.savefig(metric_scatter(summary_x, "psi_over_t", "concept_acc", "Concept accuracy against the activation "
                              "reached (95 % bootstrap intervals over features)", xline=1.0), "concept_vs_psi")
plt.show()

# %%
med = exact.median("tv_mean")
gen_x = [ours, "MACO", "DiffExplainer"]
report.claim("energydps_closest_to_tilt", "Sec 3.2, Table 3 (our metric: TV to q*)", "among the generated explanations, "
             "EnergyDPS's samples are the closest to the exact tilt q* (lowest mean TV of the factor histograms)",
             {m: summary_x[m]["tv_mean"][0] for m in gen_x}, None,
             min(gen_x, key=lambda m: summary_x[m]["tv_mean"][0]) == ours, kind="paper")
report.claim("chosen_tv_30pct_lower", "ours (exact-tilt fidelity)", "the chosen EnergyDPS's median TV to q* is at least "
             "30 % lower than the capped configuration's", {"chosen": med[ours], "capped": med["EnergyDPS (capped)"]},
             None, med[ours] <= 0.7 * med["EnergyDPS (capped)"], kind="ours", threshold=0.3)
acc_gap = exact.paired("concept_acc", "q*", seed)[ours]
report.claim("chosen_concept_near_tilt", "ours (exact-tilt fidelity)", "the chosen EnergyDPS's concept accuracy is within "
             "0.05 of q*'s (the paired 95 % interval inside +-0.05)", acc_gap, 0.0,
             -0.05 <= acc_gap[1] and acc_gap[2] <= 0.05, kind="ours", threshold=0.05)
off = {m: summary_x[m]["off_palette"][0] for m in (ours, "unguided")}
report.claim("chosen_on_manifold", "ours (exact-tilt fidelity)", "the chosen EnergyDPS's off-palette pixel share is "
             "within 0.01 of the unguided prior's", off, None, abs(off[ours] - off["unguided"]) <= 0.01, kind="ours",
             threshold=0.01)
report.claim("smc_closer_still", "ours (exact-tilt fidelity)", "twisted SMC's median TV to q* is lower than the chosen "
             "EnergyDPS's", {"SMC": med["EnergyDPS (twisted SMC)"], "chosen": med[ours],
                             "SMC s/sample": cost_x["EnergyDPS (twisted SMC)"]}, None,
             med["EnergyDPS (twisted SMC)"] < med[ours], kind="ours")

# %% [markdown]
# **What we see** (50<!--= 04:features.n --> features x 4 samples). The pool gives q* a median
# lambda of 34<!--= 04:exact_reference.lambda_median -->, ESS 267<!--= 04:exact_reference.ess_median --> (minimum 17<!--= 04:exact_reference.ess_min -->) of 100 000 draws and KL(q*||p) 4.1<!--= 04:exact_reference.kl_median --> nats. At 4 samples per
# feature exact q* draws sit at a mean TV of 0.28<!--= 04:exact/q*.tv_mean.0 --> from q*'s histograms, the exact truncation at
# 0.29<!--= 04:exact/truncation.tv_mean.0 --> and the real top-4 images at 0.33<!--= 04:exact/TopK.tv_mean.0 -->: the hard truncation is close to the tilt on this world.
# The learned prior itself is not the obstacle: its own 2048 unguided draws, reweighted to each t
# (ESS only 8.5<!--= 04:prior_reweighted.ess_median --> in the median; t lies above every draw for 11<!--= 04:prior_reweighted.at_lambda --> features), sit at
# 0.36<!--= 04:exact/prior, reweighted.tv_mean.0 -->, 0.10<!--= 04:exact_paired.tv_mean.prior, reweighted.0 * -1 --> closer to q* than the chosen sampler (paired interval excludes 0): the tilt of the
# prior is within reach, the samplers do not reach it.
# The chosen EnergyDPS (lambda doubled) reaches 0.95<!--= 04:exact/EnergyDPS (tilt 2 lambda).psi_over_t.0 --> t but a TV of 0.46<!--= 04:exact/EnergyDPS (tilt 2 lambda).tv_mean.0 -->, no closer than the capped
# configuration (0.45<!--= 04:exact/EnergyDPS (capped).tv_mean.0 -->; the paired difference, -0.013<!--= 04:exact_paired.tv_mean.EnergyDPS (capped).0 --> [-0.045<!--= 04:exact_paired.tv_mean.EnergyDPS (capped).1 -->, 0.019<!--= 04:exact_paired.tv_mean.EnergyDPS (capped).2 -->], is inside the CI) or the
# unguided prior (0.47<!--= 04:exact/unguided.tv_mean.0 -->, also inside the CI); MACO (0.52<!--= 04:exact/MACO.tv_mean.0 -->) and DiffExplainer (0.50<!--= 04:exact/DiffExplainer.tv_mean.0 -->) are farther,
# both resolved by the paired intervals. So the paper's claim that EnergyDPS is the closest
# generated explanation to the tilt holds<!--holds 04:energydps_closest_to_tilt -->, but our target that the chosen sampler
# cuts the capped configuration's median TV by 30 % fails<!--holds 04:chosen_tv_30pct_lower --> (0.454<!--= 04:exact/EnergyDPS (tilt 2 lambda).median_tv --> against 0.434<!--= 04:exact/EnergyDPS (capped).median_tv -->): the
# variant that won on 8 development features does not win on the reported ones. The concept target
# fails<!--holds 04:chosen_concept_near_tilt --> too: concept accuracy -0.05<!--= 04:exact/EnergyDPS (tilt 2 lambda).concept_acc.0 --> against q*'s 0.72<!--= 04:exact/q*.concept_acc.0 -->.
# The independent-population twisted SMC is closer to q* than the chosen sampler (median TV
# 0.405<!--= 04:exact/EnergyDPS (twisted SMC).median_tv -->; paired -0.044<!--= 04:exact_paired.tv_mean.EnergyDPS (twisted SMC).0 --> [-0.080<!--= 04:exact_paired.tv_mean.EnergyDPS (twisted SMC).1 -->, -0.007<!--= 04:exact_paired.tv_mean.EnergyDPS (twisted SMC).2 -->]), so its target holds<!--holds 04:smc_closer_still -->, at
# 2.7<!--= 04:exact/EnergyDPS (twisted SMC).s_per_sample ~30% --> s per sample. It is still far from the floor: it reaches only 0.52<!--= 04:exact/EnergyDPS (twisted SMC).psi_over_t.0 --> t
# (concept accuracy 0.15<!--= 04:exact/EnergyDPS (twisted SMC).concept_acc.0 -->), and each population of 8 ends on
# 1.6<!--= 04:smc.lineages_mean --> distinct lineages on average: with a median lambda of 34 the twist is too sharp for 8 particles,
# and more particles per population are the direction to measure next.
# Off-palette pixels: 0.006<!--= 04:exact/EnergyDPS (tilt 2 lambda).off_palette.0 --> for the chosen sampler against 0 unguided,
# inside the 0.01 target (holds<!--holds 04:chosen_on_manifold -->); MACO 0.22<!--= 04:exact/MACO.off_palette.0 -->. DiffExplainer, now one prompt per feature over fresh noise
# with classifier-free guidance 4, reaches only 0.11<!--= 04:exact/DiffExplainer.psi_over_t.0 --> t in its 20 steps (psi >= 0.9 t on
# 2<!--= 04:reach.DiffExplainer.share_at_0.9t * 100 --> % of features, at t on none; in a side run with Adam's lr at 1 and 40 steps, 3 of 8
# development features): unmatched. MACO reaches 0.9 t on 72<!--= 04:reach.MACO.share_at_0.9t * 100 --> % of features within its
# 128 steps (t on 62<!--= 04:reach.MACO.share_at_t * 100 --> %, median 44<!--= 04:reach.MACO.steps_to_t_median --> steps). With 50 features x 4 samples the paired
# half-widths of TV are 0.03-0.04. The `exact_resolved` metric names every row whose
# difference from ours is inside its interval (capped and unguided): those may flip with another seed.
#
# `make scale-check` runs this comparison again on 100 features x 16 samples (these 50 features
# first; resumable, several CPU hours; `figures/scale/SCALE_CHECK.md`). With 16 draws the floor
# of q*'s own draws falls to 0.159<!--= scale:summary.q*.tv_mean.0 --> and the rows separate: the chosen sampler sits at
# 0.331<!--= scale:summary.EnergyDPS (chosen).tv_mean.0 -->, now resolved closer to q* than the unguided prior (0.364<!--= scale:summary.unguided.tv_mean.0 -->; paired
# +0.033<!--= scale:paired_tv.unguided.0 --> [+0.020<!--= scale:paired_tv.unguided.1 -->, +0.046<!--= scale:paired_tv.unguided.2 -->]), MACO farther (0.460<!--= scale:summary.MACO.tv_mean.0 -->; the paired half-width of
# the chosen sampler minus MACO is 0.016<!--= scale:maco_halfwidth -->), the prior's own reweighted draws closer
# (0.289<!--= scale:summary.prior, reweighted.tv_mean.0 -->). The capped configuration lands on the same mean TV,
# 0.331<!--= scale:summary.EnergyDPS (capped).tv_mean.0 --> (paired interval [-0.016<!--= scale:paired_tv.EnergyDPS (capped).1 -->, +0.014<!--= scale:paired_tv.EnergyDPS (capped).2 -->] around 0; medians 0.317<!--= scale:median_tv.EnergyDPS (capped) --> and
# 0.325<!--= scale:median_tv.EnergyDPS (chosen) -->, so the 30 % target fails there too), with a better concept accuracy (0.10<!--= scale:summary.EnergyDPS (capped).concept_acc.0 -->) and
# psi law (psi-W1 0.081<!--= scale:summary.EnergyDPS (capped).psi_w1.0 --> against 0.219<!--= scale:summary.EnergyDPS (chosen).psi_w1.0 -->) but a worse KID to q* (0.157<!--= scale:summary.EnergyDPS (capped).KID to q*.0 --> against
# 0.058<!--= scale:summary.EnergyDPS (chosen).KID to q*.0 -->) and more off-palette pixels (0.015<!--= scale:summary.EnergyDPS (capped).off_palette.0 -->). The chosen sampler's concept accuracy stays at
# 0.00<!--= scale:summary.EnergyDPS (chosen).concept_acc.0 --> against q*'s 0.60<!--= scale:summary.q*.concept_acc.0 -->: that target fails at this scale too.
# The twisted SMC is the closest of the samplers at this scale: 0.274<!--= scale:summary.EnergyDPS (twisted SMC).tv_mean.0 -->, paired against the chosen
# sampler -0.057<!--= scale:paired_tv.EnergyDPS (twisted SMC).0 --> [-0.072<!--= scale:paired_tv.EnergyDPS (twisted SMC).1 -->, -0.043<!--= scale:paired_tv.EnergyDPS (twisted SMC).2 -->], closer than the prior's own reweighted draws, with
# concept accuracy 0.22<!--= scale:summary.EnergyDPS (twisted SMC).concept_acc.0 --> and no off-palette pixels, but still at 0.59<!--= scale:summary.EnergyDPS (twisted SMC).psi_over_t.0 --> t and at
# 4.5<!--= scale:s_per_sample.EnergyDPS (twisted SMC) --> s per sample, x9.1<!--= scale:s_per_sample.EnergyDPS (twisted SMC) / scale:s_per_sample.EnergyDPS (chosen) --> the chosen sampler's. DiffExplainer is the farthest row
# (0.472<!--= scale:summary.DiffExplainer.tv_mean.0 -->; psi / t -0.05<!--= scale:summary.DiffExplainer.psi_over_t.0 -->: unmatched again). Every verdict at this scale is notebook 04's:
# EnergyDPS closest to the tilt among the peers and SMC closer still hold, the 30 % and concept targets
# fail. The 1000-step `paper_config` row is not in that run (about 4 CPU hours on 2 cores; resumable,
# meant for a GPU). A second run (`figures/scale/paper_config/`, 2 CPU hours) drew it on the first 50
# features of the draw with the chosen sampler beside it, from another cache: its transcoder, of
# the same recipe, learned slightly different features, so the two runs are compared only within
# themselves. There the paper's configuration is closer to q* than the chosen sampler:
# 0.281<!--= scale/paper_config:summary.EnergyDPS (paper config).tv_mean.0 --> against 0.319<!--= scale/paper_config:summary.EnergyDPS (chosen).tv_mean.0 -->, paired -0.038<!--= scale/paper_config:paired_tv.EnergyDPS (paper config).0 --> [-0.057<!--= scale/paper_config:paired_tv.EnergyDPS (paper config).1 -->, -0.019<!--= scale/paper_config:paired_tv.EnergyDPS (paper config).2 -->], with concept
# accuracy 0.23<!--= scale/paper_config:summary.EnergyDPS (paper config).concept_acc.0 --> against 0.04<!--= scale/paper_config:summary.EnergyDPS (chosen).concept_acc.0 -->, psi-W1 0.082<!--= scale/paper_config:summary.EnergyDPS (paper config).psi_w1.0 --> against 0.200<!--= scale/paper_config:summary.EnergyDPS (chosen).psi_w1.0 --> and KID to q*
# 0.025<!--= scale/paper_config:summary.EnergyDPS (paper config).KID to q*.0 --> against 0.047<!--= scale/paper_config:summary.EnergyDPS (chosen).KID to q*.0 -->, but it overshoots (psi 1.14<!--= scale/paper_config:summary.EnergyDPS (paper config).psi_over_t.0 --> t) and costs 8.2<!--= scale/paper_config:s_per_sample.EnergyDPS (paper config) --> s per
# sample, x22<!--= scale/paper_config:s_per_sample.EnergyDPS (paper config) / scale/paper_config:s_per_sample.EnergyDPS (chosen) --> the chosen sampler's. The fast sampler we chose on development features
# is not the closest single-pass sampler to the tilt: the 1000-step one is, at that price.
#
# ### Fig 4 against q*: the two features with the clearest concept, a row per method and q* itself

# %%
names_x = concept_names(refs, world.value_names)
show_x = np.argsort(-exact.concepts.purity_U)[:2].tolist()
labels_x = [f"feature {int(f)}\n{c}" for f, c in zip(feats, names_x)]
order_x = ["q*", "TopK", "MACO", "DiffExplainer", "EnergyDPS (capped)", *extra]
ratio_x = {m: float(rows_x[m][1][show_x].mean(1).div(target[show_x]).sub(1).abs().max()) for m in order_x}
matched_x = [m for m in order_x if ratio_x[m] <= 0.05]
fig = method_rows(*feature_panels(rows_x, order_x, show_x, labels_x, target),
                  "Fig 4 against q*: the two features whose top pool images share a concept most clearly.\n"
                  f"Within 5 % of t on both: {', '.join(matched_x) or 'none'}; the others fall short or overshoot "
                  "(each row's psi / t on the left)")
report.savefig(fig, "fig4_exact")
plt.show()
report.metric("fig4_exact", {f"feature {int(feats[i])}": {"concept": names_x[i], "t": target[i],
                                                           **{m: rows_x[m][1][i].mean() for m in order_x},
                                                           "off_palette": {m: exact.per_feature[m]["off_palette"][i]
                                                                           for m in order_x}}
                             for i in show_x})

# %% [markdown]
# **What we see.** The concept names come from the top pool images
# ("size 12px, digit 7"; "size 12px, digit 6"). On both features the exact q* draws and the real
# top-k images show the concept (with other digits mixed in: q* is a soft tilt), MACO shows colour
# fields at t, DiffExplainer's glyphs sit near the prior far below t, and the EnergyDPS rows show
# clean glyphs of the concept's size (off-palette share at most 0.002<!--= 04:fig4_exact.feature 137.off_palette.EnergyDPS (capped) -->).
# The capped row shows the concept's digit in about half of its samples; the doubled-lambda tilt
# and the SMC rows mostly show other digits, and SMC stops at 0.44 t and 0.81 t (captions). Only the
# real top-k images are within 5 % of t on both features.
#
# ## Table 10: guidance strength (uncapped), activation and KID rise together (App L.2.3)

# %%
few = feats[:cfg.n_strength_units].repeat_interleave(n)
ref_bb = spaces["backbone"](real[half:half + cfg.n_real_kid])
abl = strength_ablation(world.prior, units, few, cfg.fast, cfg.strengths, seeds[:len(few)],
                        lambda x: kid(spaces["backbone"](x), ref_bb, seed=seed)[0], cfg.batch_size)
print("\n".join(f"scale x{s}: mean psi {p:.3f}, KID {k:.4f}" for s, p, k in abl))
report.metric("table10", abl, paper=[dict(r) for r in TABLE10], note="(strength multiple, mean psi, KID backbone)")
report.savefig(strength_curve(abl, [(r["mean_activation"], r["kid"]) for r in TABLE10],
                              unit=cfg.fast.step_scale(world.prior.schedule) * cfg.fast.num_steps, unit_name="strength x steps",
                              kid_label="KID vs real held-out images",
                              paper_kid_label="KID vs unguided samples (as printed)"),
               "table10_strength")
plt.show()
rise = all(b[1] >= a[1] and b[2] >= a[2] for a, b in zip(abl, abl[1:]))
report.claim("strength_activation_and_kid_rise", "App L.2.3, Table 10", "activation and KID rise together with the "
             "guidance strength", abl, [(r["mean_activation"], r["kid"]) for r in TABLE10], rise, kind="paper")

# %% [markdown]
# **What we see.** Mean psi rises with the strength: 0.07<!--= 04:table10.0.1 -->, 0.88<!--= 04:table10.1.1 -->,
# 1.17<!--= 04:table10.2.1 --> and 1.80<!--= 04:table10.3.1 --> at 0, 100, 300 and 1000 in strength x steps (the
# figure's point labels), and KID with it: 0.064<!--= 04:table10.0.2 --> unguided, then
# 0.100<!--= 04:table10.1.2 -->, 0.14<!--= 04:table10.2.2 -->, and 1.45<!--= 04:table10.3.2 --> at the paper's strength x
# steps. So the claim holds<!--holds 04:strength_activation_and_kid_rise --> on this run, KID growing fastest at the
# largest strength, the paper's shape. The first step's rise is inside KID's noise on 128 samples: on the
# previous committed run of this prior (other features) KID dipped there (0.071 unguided, 0.035 at the
# first step) and the strict claim failed.
#
# Our KID and the paper's do not compare the same sets. Ours compares each strength's samples with
# real held-out images (the same reference as Table 3), so the unguided row measures how far the
# prior is from the data. The paper's compares them with a separate set of unguided prior samples,
# so its unguided row (0.32<!--= 04:table10.paper.0.kid -->) measures only the noise between two prior draws. Its
# KIDs are printed on another scale (29.7<!--= 04:table10.paper.1.kid --> to 64.66<!--= 04:table10.paper.3.kid -->), and its
# activations are ImageNet-scale, so the figure plots the two in separate panels. The claim held on the previous prior (KID -0.004, 0.053, 0.20, 1.81) and failed
# at the first step on an earlier one (0.050 at x0.2 against 0.066 unguided).
#
# ## L.3 semantic shift and L.5 object drift, on the first Fig 4 feature

# %%
f0, i0 = int(feats[show[0]]), int(show[0])
levels = torch.tensor(cfg.shift_levels).repeat_interleave(2) * target[i0]
x, psi = sample_units(world.prior, units.energy, torch.full((len(levels),), f0),
                      replace(cfg.fast, cap_rule="target"), sample_seeds(seed, f0, 2) * len(cfg.shift_levels), levels,
                      device=units.device)
fig = strip(x, [f"cap {c:g}t\npsi {p:.2f}" for c, p in zip(cfg.shift_levels, psi.reshape(-1, 2).mean(1))],
            f"Semantic shift (App L.3): feature {f0} at rising caps", rows=2)
report.savefig(fig, "l3_semantic_shift")
plt.show()
report.metric("l3_shift", [(c, p) for c, p in zip(cfg.shift_levels, psi.reshape(-1, 2).mean(1))],
              note="(cap as a multiple of t, mean psi of the two samples)")
task = int((concepts.value_U[i0] + 1) % world.num_classes) if concepts.factor_U[i0] == "digit" else 0
drift = object_drift(world.prior, units, f0, float(target[i0]), class_logit(world.backbone, task),
                     lambda x: classify(world.backbone, x)[0][:, task], cfg.drift_weights, cfg.fast, seed)
fig = strip(torch.cat([d.images_BCHW for d in drift]),
            [f"omega {d.omega:g}\npsi {d.mean_psi:.2f}, P(task) {d.p_task:.2f}" for d in drift],
            f"Object drift (App L.5): psi + omega logit[{task}]", rows=4)
report.savefig(fig, "l5_object_drift")
plt.show()
report.metric("l5_drift", [(d.omega, d.mean_psi, d.p_task) for d in drift], note="(omega, mean psi, P(task class))")

# %% [markdown]
# **What we see.** Semantic shift (L.3), on feature 373 (concept size = 12px; its top images are mostly
# large 5s): psi follows the cap and does not saturate (0.10<!--= 04:l3_shift.0.1 --> at 0.25 t,
# 0.10<!--= 04:l3_shift.1.1 --> at 0.5 t, 0.25<!--= 04:l3_shift.2.1 --> at t, 0.35<!--= 04:l3_shift.3.1 --> at 1.5 t and
# 0.53<!--= 04:l3_shift.4.1 --> at 2 t; t is 0.21).
#
# - The first seed draws a small yellow 6 at the bottom left up to 0.5 t, a large green 8-like glyph at t,
#   then a large yellow 5 at 1.5 t and 2 t.
# - The second draws a red 9 at 0.25 t, a small yellow glyph at 0.5 t, a red 9 again at t, then a red 5
#   at 1.5 t and 2 t.
#
# So on this feature the images do shift with the cap, towards large glyphs and, above t, to the
# digit of the feature's top images, without colour noise: a semantic shift of the kind App L.3 shows.
#
# Object drift (L.5): with the logit of class 0 added, the feature's own psi falls from
# 0.25<!--= 04:l5_drift.0.1 --> to below zero at every omega (-0.09<!--= 04:l5_drift.1.1 -->,
# -0.14<!--= 04:l5_drift.2.1 -->, -0.10<!--= 04:l5_drift.3.1 -->). P(class 0) under the backbone's head rises with omega:
# 0.26<!--= 04:l5_drift.1.2 --> at omega 0.5, 0.50<!--= 04:l5_drift.2.2 --> at omega 2 and 0.64<!--= 04:l5_drift.3.2 --> at omega 8,
# where most samples are 0s and one is a patch of colour noise.
#
# These samples are **not** at matched activation: the cap stays at the feature's t, but nothing
# holds psi there once the task term is added, and psi collapses. So this strip shows the task
# term replacing the feature, not the drift App L.5 describes, where the explanation keeps its
# activation while the task shifts what it shows. Measuring that would need the cap (or lambda)
# recalibrated at every omega so that psi stays at t, as notebook 02 does on the toy with both
# multipliers calibrated (Lemma E.1); we have not done it on images.
#
# ## Table 11: cost per sample (this machine), and fast vs paper configuration

# %%
k_paper = cfg.n_paper_units
matched = matched_cost(world.prior, units, feats[:k_paper], target[:k_paper], n,
                       replace(cfg.fast, calib_iters=cfg.matched_calib_iters), cfg.paper, seed, cfg.batch_size)
cost = {name: {"s_per_sample": r.seconds_per_sample, "psi_over_t": float((r.psi_UN.mean(1) / r.target_U).mean()),
               "concept_acc": float(concept_accuracy(read, r.images_UNCHW, concepts.subset(range(k_paper))).mean())}
        for name, r in matched.items()}
for m in runs:
    meta = stores[m].get(int(feats[0])).meta
    cost[m] = {"s_per_sample": meta["seconds_per_sample"], "peak_MiB_per_sample": meta["peak_bytes_per_sample"] / 2**20}
for k, v in cost.items():
    print(f"{k:>14}: " + ", ".join(f"{a} {b:.3g}" for a, b in v.items()))
report.metric("table11", cost, paper={k: dict(v) for k, v in TABLE11.items()},
              note=f"{dev}; shared CPU cores inflate absolute times, compare ratios; EnergyDPS/MACO/DiffExplainer "
                   "include calibration")
speed = cost["paper_config"]["s_per_sample"] / cost["fast"]["s_per_sample"]
report.claim("fast_10x_cheaper", "App L.4 (ours)", "at matched activation (the fast configuration calibrated to the "
             "psi paper_config reached, within 5 %) a fast sample is >= 10x cheaper than a paper_config one (the "
             "calibration passes, a one-off per feature, are reported beside)", {"speed-up": speed, **{
                 f"{k}/{a}": b for k, v in cost.items() for a, b in v.items()}}, None,
             speed >= 10 and abs(cost["fast"]["psi_over_t"] / cost["paper_config"]["psi_over_t"] - 1) <= 0.05,
             kind="ours", threshold=10)

# %% [markdown]
# **What we see.** `paper_config` with its cap at t stops at 1.22<!--= 04:table11.paper_config.psi_over_t --> t this
# time (it overshoots: the cap bounds the gradient, not the value), at
# 8.5<!--= 04:table11.paper_config.s_per_sample ~15% --> s per sample on this CPU. The fast configuration, calibrated
# towards that level, stops at 1.29<!--= 04:table11.fast.psi_over_t --> t, 6 % above `paper_config`, at
# 0.43<!--= 04:table11.fast.s_per_sample ~15% --> s per sample: 20.0<!--= 04:claims.fast_10x_cheaper.ours.speed-up ~15% -->x
# cheaper (timings vary by a few percent between runs), or 3.4<!--= 04:table11.fast_calibration.s_per_sample ~15% --> s
# per sample counting its calibration passes, which makes it only
# 2.5<!--= 04:table11.paper_config.s_per_sample / 04:table11.fast_calibration.s_per_sample ~15% -->x cheaper. The gap
# in psi is just outside the 5 % that "matched" allows, so the "10x cheaper at matched activation" claim
# fails<!--holds 04:fast_10x_cheaper --> this time (on earlier runs it held at a 4 % gap and failed at 18 %). Concept accuracy is
# 0.625<!--= 04:table11.paper_config.concept_acc --> (paper) and 0.625<!--= 04:table11.fast.concept_acc --> (fast) on these 8
# samples. Per sample, calibration included, MACO costs 1.38<!--= 04:table11.MACO.s_per_sample ~15% --> s, DiffExplainer
# 1.47<!--= 04:table11.DiffExplainer.s_per_sample ~15% --> s (one prompt per feature, over its 4 samples) and EnergyDPS
# 1.42<!--= 04:table11.EnergyDPS.s_per_sample ~15% --> s (measured when the samples were drawn, in this run). Peak memory on a CPU is
# the growth of the process's peak RSS, which earlier cells already set, so it is not a reliable
# per-method number here.
#
# At paper scale the costs are GPU numbers. We measured them with the paper's architectures and random
# weights (`make bench`, `benchmarks/bench_paper_scale.py`). One `paper_config` sample in float32 took 121 s
# on an H100 and 95 s on an H200, at a peak of 9 697 MiB (9.47 GiB), against the paper's
# 96<!--= 04:table11.paper.EnergyDPS.seconds_per_sample --> s and 14 567<!--= 04:table11.paper.EnergyDPS.gpu_mib --> MiB
# (which it writes as 14.6 GB). Batches of 16 bring that to 38 s per sample on the H200, and this
# notebook's fast setting (50 steps) takes 1.9 s per sample there for one pass.
#
# ## Random neurons with EnergyDPS, for notebook 05 (Table 7 analogue)
# The profile asks for 100 random neurons, as the paper sampled; the hooked block of the
# mini-world's backbone has only 64 channels, so all 64<!--= 04:neurons.n --> are sampled.

# %%
nstore = samples_stores(profile, seed)[("EnergyDPS", "Neuron")]  # keyed by the settings below
n_ids, n_t, psi_n = explain_neurons(nstore, world, cfg.n_neurons, g, real[:half], cfg.n_neuron_samples,
                                    replace(cfg.fast, cap_rule="target"), seed, cfg.batch_size, cfg.k_target)
ratio = float(torch.stack([psi_n[int(u)].mean() for u in n_ids]).mean() / n_t.mean())
print(f"{len(psi_n)} neurons stored in {nstore.folder}; mean psi / t {ratio:.2f}")
report.metric("neurons", {"n": len(psi_n), "psi_over_t": ratio, "store": nstore.folder.name})
report.write()

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
# # 05 · The blinded rater study (paper Sec 3.3, App K, App L.1)
#
# For each of 100 random transcoder features and each method, the paper shows raters a
# 2x2 grid of four generated images without any label, and asks for (i) a short
# description of the shared concept and (ii) a 1-4 interpretability score (App K
# rubric). Four humans and two AI raters (GPT-5.4, Gemini-3-flash-lite) rated; Table 4
# reports the means, Table 6 the per-rater means, and the score-weighted variance of the
# descriptions in a text-embedding space. App L.1 (Table 7) repeats the AI rating on
# EnergyDPS grids of 100 neurons vs 100 features (success = score > 2.5).
#
# This notebook (1) re-plots the paper's tables, (2) checks the analysis on sample sets
# with a planted truth, (3) runs a full study with **simulated** raters on notebook 04's
# stored samples (run notebook 04 with the same profile first) through the same code a
# real study uses: blinded packets, raters, tables with bootstrap CIs, paired tests,
# agreement, description variance, neurons vs features, and (4) analyses your own
# ratings instead when the papermill parameter `ratings` names a CSV or folder.
#
# **What the simulated study is and is not.** No person and no AI model is asked anything.
# Each simulated rater ("Sim 1" to "Sim 6") scores a grid from one number, the fraction of
# its images in which the world's factor classifier reads the unit's concept (notebook 04's
# concept accuracy), plus its own leniency and Gaussian noise. Its scores are therefore a
# noisy copy of notebook 04's concept accuracy: they exercise the analysis a real study
# needs, and its claims are recorded as kind `ours` (targets of this reproduction, with
# "simulated" in their text), not as evidence for or against the paper.

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
seed = 0
device = "auto"
out_dir = "../runs/05_rater_study"  # interactive runs write here; make figures passes figures/05_rater_study
ratings = None  # a ratings CSV or a folder of them: analyse those instead of simulated raters

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from klsc_lib.analysis.raters import (best_method_per_rater, bootstrap_mean, description_variance, feature_means,
                                      krippendorff_alpha, load_ratings, mean_scores, paired_wilcoxon,
                                      simulate_ratings, success_rate, text_encoder, write_packet, write_ratings)
from klsc_lib.analysis.raters.plots import bar_table, packet_examples, paper_tables_figure
from klsc_lib.analysis.raters.simulate import describe_from_factors, planted_study
from klsc_lib.explain import feature_units
from klsc_lib.paper_values import TABLE4, TABLE6, TABLE7, TABLE7_SUCCESS_THRESHOLD
from klsc_lib.profiles import get_profile
from klsc_lib.profiles.nb04_energydps import samples_stores
from klsc_lib.report import Report
from klsc_lib.runtime import resolve_device, seed_everything
from klsc_lib.studies.nb05_rater_study import stored_study_sets
from klsc_lib.worlds import load_world
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES, VALUE_NAMES, MiniWorldDataset

cfg = get_profile("05_rater_study", profile)
dev = resolve_device(device)
seed_everything(seed)
if cfg.threads:
    torch.set_num_threads(cfg.threads)
report = Report("05_rater_study", out_dir, profile, seed, dev)
simulated = ratings is None

# %% [markdown]
# ## The paper's tables
# Table 6 gives one mean per rater; Table 4 one per rater kind. Only Table 7's success
# rates come with their count (100 units), so only they get confidence intervals (Wilson,
# binomial); the means have no per-feature data behind them.

# %%
human_mean = {m: float(np.mean([v for k, v in TABLE6[m].items() if k.startswith("Human")])) for m in TABLE6}
for m in TABLE4:
    print(f"{m:14s} Table 4 Human {TABLE4[m]['Human']:.2f}   mean of Table 6 humans {human_mean[m]:.4f}")
report.metric("table4_human_vs_mean_of_table6_humans", human_mean, paper={m: TABLE4[m]["Human"] for m in TABLE4},
              note="the paper's Human column is not the plain mean of its four human raters")
fig = paper_tables_figure(TABLE4, TABLE6, TABLE7, human_mean)
report.savefig(fig, "paper_tables")
n7 = 100  # App L.1: 100 random neurons and 100 random features
wilson = {k: stats.binomtest(round(n7 * v["success_rate"]), n7).proportion_ci(method="wilson") for k, v in TABLE7.items()}
report.metric("table7_paper_wilson_ci", {k: [c.low, c.high] for k, c in wilson.items()},
              paper={k: v["success_rate"] for k, v in TABLE7.items()},
              note=f"Wilson 95 % interval of the paper's success rates, {n7} units per kind")

# %% [markdown]
# **What we see.** In Table 6 EnergyDPS has the highest mean for all six raters, and the
# spread between humans is large (Human 3 gives MACO 1.02<!--= 05:mean_score_per_rater.paper.MACO.Human 3 -->,
# EnergyDPS 3.57<!--= 05:mean_score_per_rater.paper.EnergyDPS.Human 3 -->). Table 4's Human column differs
# from the mean of Table 6's humans by 0.04-0.16: MACO 1.92<!--= 05:table4_human_vs_mean_of_table6_humans.paper.MACO -->
# vs 2.0175<!--= 05:table4_human_vs_mean_of_table6_humans.MACO -->, DiffExplainer
# 1.95<!--= 05:table4_human_vs_mean_of_table6_humans.paper.DiffExplainer --> vs
# 1.7925<!--= 05:table4_human_vs_mean_of_table6_humans.DiffExplainer -->, EnergyDPS
# 2.92<!--= 05:table4_human_vs_mean_of_table6_humans.paper.EnergyDPS --> vs
# 2.8775<!--= 05:table4_human_vs_mean_of_table6_humans.EnergyDPS -->. We keep both as published.
# Table 7's Wilson 95 % intervals do not overlap: neurons
# 20.1<!--= 05:table7_paper_wilson_ci.Neuron.0 * 100 -->-37.5<!--= 05:table7_paper_wilson_ci.Neuron.1 * 100 --> %,
# features 64.6<!--= 05:table7_paper_wilson_ci.Feature.0 * 100 -->-81.6<!--= 05:table7_paper_wilson_ci.Feature.1 * 100 --> %.
#
# ## Validation: does the analysis recover a planted truth?
# Before the real samples, a check of the analysis itself. Sample sets are **real
# held-out mini-world images** picked with a planted purity per method: each unit gets a
# true concept (one factor value, e.g. "colour: red") and each of its four images shows
# it with the method's probability. Simulated raters (each with its own bias and noise)
# score every set from its truth, the fraction of images that show the concept. The
# expected score of every rater is known exactly, so the analysis must find it.

# %%
test_images = MiniWorldDataset(cfg.world.n_test, "test", cfg.world.seed)
names = VALUE_NAMES
planted_run = planted_study(test_images, FACTOR_SIZES, cfg.n_features, cfg.purity, cfg.raters, names, seed)
p_study, planted, p_methods = planted_run.ratings, planted_run.planted_mean, list(cfg.purity)
recovered = {m: e["simulated"] for m, e in mean_scores(p_study, by="rater_kind", n_resamples=cfg.n_bootstrap,
                                                        seed=seed).items()}
fm_e, fm_m = feature_means(p_study, "EnergyDPS"), feature_means(p_study, "MACO")
diff = bootstrap_mean([fm_e[f] - fm_m[f] for f in fm_e], n_resamples=cfg.n_bootstrap, seed=seed)
diff_planted = planted["EnergyDPS"] - planted["MACO"]
for m in p_methods:
    print(f"{m:14s} planted {planted[m]:.3f}  recovered {recovered[m].mean:.3f} "
          f"[{recovered[m].low:.3f}, {recovered[m].high:.3f}]")
print(f"EnergyDPS - MACO: planted {diff_planted:.3f}, recovered {diff.mean:.3f} [{diff.low:.3f}, {diff.high:.3f}]")
same_order = sorted(p_methods, key=planted.get) == sorted(p_methods, key=lambda m: recovered[m].mean)
report.claim("planted_ordering_and_effect_recovered", "Sec 3.3, Tables 4/6 (validation)",
             "on planted sample sets scored by simulated raters the rater analysis recovers the planted method ordering, and the planted "
             "EnergyDPS - MACO difference lies in its bootstrap CI",
             ours={"recovered": {m: vars(recovered[m]) for m in p_methods}, "diff": vars(diff)},
             paper={"planted": planted, "diff": diff_planted},
             holds=same_order and diff.low <= diff_planted <= diff.high, kind="ours")
report.claim("planted_means_in_ci", "Sec 3.3, Table 4 (validation)", "on planted sample sets scored by "
             "simulated raters each method's planted mean lies in its 95 % CI", ours={m: [recovered[m].low, recovered[m].high] for m in p_methods},
             paper=planted, holds=all(recovered[m].low <= planted[m] <= recovered[m].high for m in p_methods),
             kind="ours")

# %% [markdown]
# **What we see.** The recovered means sit on the planted ones and keep their order; the
# EnergyDPS - MACO gap is found within its interval. This validates the analysis, not
# the paper: the purities were chosen by us.
#
# ## The study on notebook 04's samples
# The sample sets are now the explanations notebook 04 stored for the same profile: the
# four methods on its random transcoder features and EnergyDPS on random neurons (App
# L.1). Each unit's true concept is fixed as in notebook 04 (the factor value shared
# most, above chance, by its top real images); the truth of a grid is the fraction of
# its images (up to four) whose factor, **read by the world's factor classifier**,
# equals that value. The simulated raters score from that truth, so the method ordering
# below is an empirical finding about the samples, not something we planted. Packets
# are written blinded from the same sets (first four images in a 2x2 grid).

# %%
work = Path(tempfile.mkdtemp(prefix="klsc-raters-"))
if simulated:
    stores = samples_stores(profile, seed, create=False)  # stops here if notebook 04 has not run
    cfg04 = get_profile("04_energydps", profile)
    world = load_world(cfg04.world, dev)
    stored = stored_study_sets(stores, world, feature_units(world, cfg04.recipe, seed, dev), cfg04.top_k)
    sets, factors, truth = stored.sets, stored.factors, stored.truth
    packet = write_packet(sets, work / "packet", work / "key.csv", seed=seed, cell=cfg.cell)
    print(f"packet: {len(packet.item_ids)} grids in {packet.folder}, key apart in {packet.key_path}")
    report.savefig(packet_examples(packet), "packet_examples")
    mean_truth = {f"{m} {k}": float(np.mean([t for i, t in truth.items() if i[1:] == (m, k)])) for m, k in stores}
    print("mean truth (classifier-read concept accuracy):", {k: round(v, 3) for k, v in mean_truth.items()})
    report.metric("mean_truth", mean_truth, note="fraction of a grid's images showing the unit's concept, read by "
                  "the factor classifier; what the simulated raters score")
    features = [i for i in truth if i[2] == "Feature"]
    describe = describe_from_factors(stored.concepts, factors, names)
    write_ratings(simulate_ratings(features, truth.__getitem__, cfg.raters, describe, seed=seed),
                  work / "simulated.csv")
    study = load_ratings(work / "simulated.csv")
else:
    study = load_ratings(ratings)
    print(f"analysing {len(study)} ratings from {ratings}")
raters = sorted({r.rater for r in study})
print(f"{len(study)} ratings, raters {raters}")

# %% [markdown]
# ## Table 4 / Table 6 analogue with bootstrap CIs over features

# %%
per_rater = mean_scores(study, by="rater", n_resamples=cfg.n_bootstrap, seed=seed)
per_kind = mean_scores(study, by="rater_kind", n_resamples=cfg.n_bootstrap, seed=seed)
methods = [m for m in ("MACO", "DiffExplainer", "EnergyDPS", "TopK") if m in per_rater]
fig, axes = plt.subplots(1, 2, figsize=(15, 3.6), gridspec_kw={"width_ratios": [3, 1.8]})
who = "simulated raters" if simulated else "your raters"
bar_table(axes[0], {m: per_rater[m] for m in methods}, f"ours, {who}: per rater (Table 6 analogue), 95 % CI",
          ylim=(0, 4))
bar_table(axes[1], {m: per_kind[m] for m in methods}, f"ours, {who}: per rater kind (Table 4 analogue)",
          ylim=(0, 4))
fig.set_layout_engine("constrained")
report.savefig(fig, "table4_table6_ours")
report.metric("mean_score_per_rater", {m: {r: e.mean for r, e in per_rater[m].items()} for m in methods},
              paper={m: dict(v) for m, v in TABLE6.items()})
tests = {b: paired_wilcoxon(study, "EnergyDPS", b) for b in methods if b != "EnergyDPS"} \
    if "EnergyDPS" in methods else {}
for b, t in tests.items():
    print(f"EnergyDPS vs {b}: n={t.n} mean diff {t.mean_diff:+.2f}, W={t.statistic:.0f}, p={t.pvalue:.2g}, "
          f"rank-biserial r={t.rank_biserial:+.2f}")
alpha = krippendorff_alpha(study) if len(raters) > 1 else float("nan")
encoder_name, encode = text_encoder(cfg.text_encoder)
variance = description_variance(study, encode, n_resamples=cfg.n_bootstrap, seed=seed) if len(raters) > 1 else {}
print(f"Krippendorff alpha (ordinal) {alpha:.3f}; weighted variance ({encoder_name}):",
      {m: round(v.mean, 4) for m, v in variance.items()}, "| paper (CLIP):",
      {m: v["weighted_variance"] for m, v in TABLE4.items()})
report.metric("paired_wilcoxon_vs_EnergyDPS", {b: vars(t) for b, t in tests.items()})
best = best_method_per_rater(per_rater, [m for m in TABLE4 if m in methods])
print("best generated method per rater (ties kept):", best)
kind = "ours" if simulated else "paper"
sim_note = (" (simulated raters scoring notebook 04's samples from the factor classifier's reading: a noisy copy of "
            "its concept accuracy)") if simulated else ""
report.claim("energydps_best_for_every_rater", "Sec 3.3, Table 4", "EnergyDPS alone gets the highest mean score "
             "among the generated explanations from every rater" + sim_note, ours=best,
             paper="EnergyDPS for all raters", holds=all(b == ["EnergyDPS"] for b in best.values()), kind=kind)
report.metric("krippendorff_alpha_ordinal", alpha)
report.metric("weighted_variance", {m: vars(v) for m, v in variance.items()},
              paper={m: v["weighted_variance"] for m, v in TABLE4.items()}, note=f"text encoder: {encoder_name}")
gen_var = {m: variance[m].mean for m in TABLE4 if m in variance}
if len(gen_var) > 1:
    report.claim("energydps_lowest_description_variance", "Sec 3.3, Table 4 (weighted variance)",
                 "EnergyDPS's descriptions have the lowest score-weighted variance among the generated explanations"
                 + (f" ({encoder_name} text space, not the paper's CLIP; the simulated descriptions name the factor "
                    "value the classifier reads in each image)" if simulated else f" ({encoder_name} text space)"),
                 ours=gen_var, paper={m: v["weighted_variance"] for m, v in TABLE4.items()},
                 holds=min(gen_var, key=gen_var.get) == "EnergyDPS", kind=kind)

# %% [markdown]
# **What we see.** (Simulated raters on notebook 04's samples.) Each rater's means
# shift with its leniency, but the ordering of the methods comes from the classifier's
# reading of the samples: it restates notebook 04's concept accuracy, it adds no evidence
# about the paper. On `default` DiffExplainer is rated best by four of the six simulated raters,
# EnergyDPS by one, and the last ties MACO with EnergyDPS, so the claim that EnergyDPS is best for every rater
# fails<!--holds 05:energydps_best_for_every_rater -->, as expected from the concept accuracies the raters score
# (DiffExplainer 0.565<!--= 05:mean_truth.DiffExplainer Feature -->, EnergyDPS
# 0.525<!--= 05:mean_truth.EnergyDPS Feature -->, MACO 0.510<!--= 05:mean_truth.MACO Feature -->). These gaps are
# small: the paired Wilcoxon tests find no difference between EnergyDPS and MACO
# (p 0.77<!--= 05:paired_wilcoxon_vs_EnergyDPS.MACO.pvalue -->) nor between EnergyDPS and DiffExplainer
# (p 0.77<!--= 05:paired_wilcoxon_vs_EnergyDPS.DiffExplainer.pvalue -->).
#
# The score-weighted variance of the descriptions is not lowest for EnergyDPS
# (0.350<!--= 05:weighted_variance.EnergyDPS.mean -->, about the same as MACO's
# 0.349<!--= 05:weighted_variance.MACO.mean -->; DiffExplainer's is lowest,
# 0.302<!--= 05:weighted_variance.DiffExplainer.mean -->), unlike the paper's Table 4, where
# EnergyDPS's is lowest (0.2505<!--= 05:weighted_variance.paper.EnergyDPS -->); the claim is recorded as
# failed<!--holds 05:energydps_lowest_description_variance -->. Caveats: the variance is measured in a MiniLM text space
# unless CLIP files are present, so its scale is not the paper's, and the simulated descriptions are the factor
# value the classifier reads in one image of the grid, so they vary exactly as often as the samples miss the concept.

# %% [markdown]
# ## Table 7 analogue: neurons vs features (App L.1)
# EnergyDPS grids of notebook 04's neurons and features, one AI-like simulated rater,
# success if its score exceeds 2.5.

# %%
if simulated:
    t7_items = [i for i in truth if i[1] == "EnergyDPS"]
    t7 = simulate_ratings(t7_items, truth.__getitem__, [cfg.table7_rater], lambda it, t, r: "", seed=seed)
else:
    t7 = study
kinds7 = [k for k in ("Neuron", "Feature") if any(r.unit_kind == k and r.method == "EnergyDPS" for r in t7)]
ours7 = {k: {"mean_score": bootstrap_mean(list(feature_means(t7, "EnergyDPS", unit_kind=k).values()),
                                          n_resamples=cfg.n_bootstrap, seed=seed),
             "success_rate": success_rate(t7, "EnergyDPS", k, n_resamples=cfg.n_bootstrap, seed=seed)}
         for k in kinds7}
for k, v in ours7.items():
    print(f"{k:8s} mean {v['mean_score'].mean:.2f} success {v['success_rate'].mean:.0%} "
          f"[{v['success_rate'].low:.0%}, {v['success_rate'].high:.0%}]  paper: {dict(TABLE7[k])}")
if kinds7:
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    bar_table(ax, {k: {"ours": v["success_rate"], "paper": TABLE7[k]["success_rate"]} for k, v in ours7.items()},
              f"Table 7 analogue{', simulated rater' if simulated else ''}:\nsuccess (score > "
              f"{TABLE7_SUCCESS_THRESHOLD})", "success rate", (0, 1))
    report.savefig(fig, "table7_ours")
    report.metric("table7", {k: {n: vars(e) for n, e in v.items()} for k, v in ours7.items()},
                  paper={k: dict(v) for k, v in TABLE7.items()})
if len(kinds7) == 2:
    gap = ours7["Feature"]["success_rate"].low > ours7["Neuron"]["success_rate"].high
    report.claim("rated_features_beat_neurons", "App L.1, Table 7", "features succeed more often than neurons "
                 "(95 % CIs apart)" + (" with a simulated rater scoring notebook 04's EnergyDPS samples"
                                       if simulated else ""),
                 ours={k: vars(v["success_rate"]) for k, v in ours7.items()},
                 paper={k: v["success_rate"] for k, v in TABLE7.items()}, holds=gap, kind=kind)

# %% [markdown]
# **What we see.** (Simulated rater on notebook 04's samples.) Whether features beat
# neurons depends on how often the EnergyDPS samples of each show their unit's concept
# to the factor classifier; with few units (smoke) the intervals are wide and overlap. On
# `default` neurons succeed more often than features
# (77<!--= 05:table7.Neuron.success_rate.mean * 100 --> % of 64<!--= 05:table7.Neuron.success_rate.n --> neurons vs
# 60<!--= 05:table7.Feature.success_rate.mean * 100 --> % of 50<!--= 05:table7.Feature.success_rate.n --> features,
# CIs overlapping), so the claim fails<!--holds 05:rated_features_beat_neurons -->: not the paper's Table 7.
#
# Notebook 03 found the opposite order, 87<!--= 03:claims.features_beat_neurons.ours.features * 100 --> % of features vs
# 80<!--= 03:claims.features_beat_neurons.ours.neurons * 100 --> % of neurons. The two measure different things.
# Notebook 03 asks whether a unit's top-20 *real* images share one factor value, and only features with a full
# top-20 enter it. Here the question is whether four *generated* EnergyDPS samples show the unit's concept, for
# every feature notebook 04 drew and all 64 neurons of the block. The mini-world's neurons are fairly clean already,
# and their EnergyDPS samples show their concept more often (mean truth
# 0.74<!--= 05:mean_truth.EnergyDPS Neuron -->) than the features' do
# (0.525<!--= 05:mean_truth.EnergyDPS Feature -->). So features are purer on real images but not easier to
# generate from on this prior.
#
# ## Running a real study
# 1. Packets: `write_packet(sets, "packet/", "key.csv", seed=...)` with the sample sets
#    of notebook 04 (`sets` above, from `stored_study_sets`; any iterable of
#    `(unit, method, images_BCHW)` works). Hand out `packet/` (grids, `sheet.csv`,
#    `form.html`); keep `key.csv` to yourself.
# 2. Humans open `form.html` in a browser, describe and score every grid, click
#    *Export*, and send back `ratings.csv`.
# 3. AI raters: set `KLSC_RATER_BASE_URL`, `KLSC_RATER_MODEL`, `KLSC_RATER_API_KEY` for any
#    OpenAI-compatible endpoint with image input, then
#    `ChatRater.from_env("cache/").rate_packet(packet, "gpt_sheet.csv", "gpt_failures.csv")`.
#    Replies are cached; unparseable answers are listed in the failures file.
# 4. `write_ratings(unblind(sheet, "key.csv", rater="Human 1", rater_kind="human"), "ratings/h1.csv")`
#    for each sheet (`allow_missing=True` for an AI sheet with failures).
# 5. `papermill notebooks/05_rater_study.ipynb out.ipynb -p ratings ratings/` analyses them.

# %%
report.write()

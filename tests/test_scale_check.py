"""Notebook 04's exact-tilt table at a larger scale (klsc_lib.scale_check)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from klsc_lib.analysis.explanation_metrics import Concepts
from klsc_lib.explain import RunResult, feature_units
from klsc_lib.profiles import get_profile
from klsc_lib.runtime import cache_dir
from klsc_lib.samples_store import SamplesStore
from klsc_lib import scale_check
from klsc_lib.studies.reference_table import ReferenceTable
from klsc_lib.studies.nb04_energydps import draw_units
from klsc_lib.scale_check import CHOSEN, fill, resolved, run_scale_check, to_markdown, verdicts, write_report


class FakeRun:
    """A run that draws unit u's n samples as images filled with u and psi = its lambda,
    recording every call's units."""

    def __init__(self, n: int = 2):
        self.n, self.calls = n, []

    def __call__(self, u, t, lam):
        self.calls.append(u.tolist())
        x = u.float()[:, None, None, None, None].expand(len(u), self.n, 3, 4, 4).clone()
        return RunResult("EnergyDPS", u, x, lam.float()[:, None].expand(len(u), self.n).clone(), lam, t.float(),
                         1.0, 0)


def test_fill_stops_at_the_deadline_after_a_chunk_and_resumes_with_only_the_missing_units(tmp_path, monkeypatch):
    store = SamplesStore("EnergyDPS", "Feature", {"test": "fill"}, root=tmp_path)
    units, target, lam = torch.tensor([7, 3, 11, 5, 2]), torch.ones(5), torch.tensor([0.7, 0.3, 1.1, 0.5, 0.2])
    clock = iter([0.0, 100.0])  # first chunk before the deadline (50), the next check after it
    monkeypatch.setattr(scale_check.time, "monotonic", lambda: next(clock))
    run = FakeRun()
    assert fill(store, run, units, target, lam, chunk=2, deadline=50.0) is False
    assert run.calls == [[7, 3]] and sorted(store.units()) == [3, 7]
    monkeypatch.setattr(scale_check.time, "monotonic", lambda: 0.0)
    assert fill(store, run, units, target, lam, chunk=2) is True
    assert run.calls == [[7, 3], [11, 5], [2]]
    for u, l in zip(units.tolist(), lam.tolist()):  # each unit got its own lambda, whatever its chunk
        got = store.get(u)
        assert torch.allclose(got.psi_B, torch.full((2,), l)) and bool((got.images_BCHW == u).all())
    assert fill(store, run, units, target, lam, chunk=2) is True and len(run.calls) == 3  # nothing left
    with pytest.raises(ValueError, match="chunk"):
        fill(store, run, units, target, lam, chunk=0)


def _table(rows: dict[str, dict[str, list[float]]]) -> ReferenceTable:
    per = {m: {k: np.asarray(v, dtype=float) for k, v in cols.items()} for m, cols in rows.items()}
    concepts = Concepts(("digit",) * 3, np.zeros(3), np.zeros(3), np.zeros(3), 20)  # not read by the verdicts
    return ReferenceTable(per, {m: (0.0, 0.0) for m in per}, concepts)


def test_verdicts_follow_the_notebooks_rules_and_are_none_without_their_rows():
    base = {"tv_mean": [0.3, 0.3, 0.3], "concept_acc": [0.5, 0.6, 0.7], "off_palette": [0.0, 0.0, 0.0]}
    rows = {"q*": {**base, "tv_mean": [0.1, 0.1, 0.1], "concept_acc": [0.51, 0.6, 0.69]},
            CHOSEN: {**base, "off_palette": [0.02, 0.0, 0.0]},  # mean 0.0067: within 0.01 of unguided
            "EnergyDPS (capped)": {**base, "tv_mean": [0.5, 0.5, 0.5]},  # 0.3 <= 0.7 x 0.5
            "MACO": {**base, "tv_mean": [0.6, 0.6, 0.6]}, "DiffExplainer": {**base, "tv_mean": [0.4, 0.2, 0.4]},
            "unguided": base, "EnergyDPS (twisted SMC)": {**base, "tv_mean": [0.35, 0.35, 0.35]}}
    # by hand: mean TV chosen 0.300 < DiffExplainer 0.333 < MACO 0.6; medians 0.3 <= 0.7 x 0.5 (capped) and
    # 0.3 < 0.35 (SMC); concept differences to q* -0.01, 0, 0.01; off-palette means 0.0067 and 0
    assert verdicts(_table(rows)) == {"energydps_closest_to_tilt": True, "chosen_tv_30pct_lower": True,
                                      "chosen_concept_near_tilt": True, "chosen_on_manifold": True,
                                      "smc_closer_still": False}
    rows["DiffExplainer"]["tv_mean"] = [0.2, 0.2, 0.2]
    rows[CHOSEN]["concept_acc"] = [0.2, 0.3, 0.4]  # 0.3 below q* on every feature
    v = verdicts(_table(rows))
    assert v["energydps_closest_to_tilt"] is False and v["chosen_concept_near_tilt"] is False
    partial = verdicts(_table({k: rows[k] for k in ("q*", CHOSEN, "unguided")}))
    assert partial["chosen_tv_30pct_lower"] is None and partial["smc_closer_still"] is None
    assert partial["energydps_closest_to_tilt"] is None and partial["chosen_on_manifold"] is True


def test_resolved_reads_the_sign_of_the_interval():
    assert resolved((0.1, 0.05, 0.15)) == "farther from q*"
    assert resolved((-0.1, -0.15, -0.05)) == "closer to q*"
    assert resolved((0.01, -0.02, 0.04)) == "inside the CI"


def test_a_notebook_run_at_another_seed_or_missing_is_refused_with_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook_runner --seed 0"):
        run_scale_check("smoke", notebook=tmp_path / "nowhere", out=tmp_path / "out")
    (tmp_path / "metrics.json").write_text(json.dumps({"seed": 1, "metrics": {"dev_chosen": {}}}))
    with pytest.raises(ValueError, match="seed 0"):
        run_scale_check("smoke", notebook=tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_smoke_study_fills_selected_rows_then_every_row_and_a_rerun_samples_nothing(smoke_world, tmp_path, monkeypatch):
    monkeypatch.setattr("klsc_lib.worlds.load_world", lambda *a, **k: smoke_world)
    kw = dict(profile="smoke", n_features=3, n_samples=2, notebook=None, out=tmp_path, chunk=2,
              chosen="tilt 2 lambda", smc="twisted SMC, independent", threads=1)
    with pytest.raises(ValueError, match="unknown rows"):
        run_scale_check(**kw, rows=["MAC0"])
    only = run_scale_check(**kw, rows=["MACO"])  # one row sampled; the chosen sampler's store is this study's own
    assert "MACO" in only["summary"] and CHOSEN in only["pending"] and only["maco_halfwidth"] is None
    real_fill, smc = scale_check.fill, "EnergyDPS (twisted SMC)"

    def smc_stops_after_one_chunk(store, run, units, target, lam, chunk, deadline, desc=""):
        if desc != smc:
            return real_fill(store, run, units, target, lam, chunk, deadline, desc)
        real_fill(store, run, units[:chunk], target[:chunk], lam[:chunk], chunk, deadline, desc)
        return False

    monkeypatch.setattr(scale_check, "fill", smc_stops_after_one_chunk)
    part = run_scale_check(**kw)  # SMC stored on the first 2 of 3 features, the paper config not started
    monkeypatch.setattr(scale_check, "fill", real_fill)
    assert part["pending"] == [smc, "EnergyDPS (paper config)"] and set(part["partial"]) == {smc}
    p = part["partial"][smc]
    assert p["n_features"] == 2 and part["verdicts"]["smc_closer_still"] is None
    assert set(p["verdicts"]) == {"smc_closer_still"}  # the only verdict the full table lacked and SMC gives
    assert f"{smc} (2 of 3 features)" in (tmp_path / "SCALE_CHECK.md").read_text()
    first = run_scale_check(**kw)
    tv = {m: np.asarray(v) for m, v in first["tv_per_feature"].items()}  # the full table on those 2 features
    assert p["summary"]["tv_mean"][0] == pytest.approx(tv[smc][:2].mean())
    assert p["median_tv"] == pytest.approx(np.median(tv[smc][:2]))
    assert p["chosen_median_tv"] == pytest.approx(np.median(tv[CHOSEN][:2]))
    assert p["paired_tv"][0] == pytest.approx((tv[smc][:2] - tv[CHOSEN][:2]).mean())
    assert p["verdicts"]["smc_closer_still"] == (p["median_tv"] < p["chosen_median_tv"])
    rows = {"q*", "truncation", "prior, reweighted", "TopK", CHOSEN, "unguided", "MACO", "EnergyDPS (capped)",
            "DiffExplainer", "EnergyDPS (twisted SMC)", "EnergyDPS (paper config)"}
    assert set(first["summary"]) == rows and first["pending"] == []
    assert len(set(first["features"])) == 3 and len(first["target"]) == 3 and min(first["target"]) > 0
    assert set(first["paired_tv"]) == rows - {CHOSEN} and first["maco_halfwidth"] >= 0
    for real in ("q*", "truncation", "TopK"):  # rendered by the world's writer: no off-palette pixel
        assert first["summary"][real]["off_palette"][0] == 0.0
    page = (tmp_path / "SCALE_CHECK.md").read_text()
    assert (tmp_path / "table3_exact.png").stat().st_size > 10_000
    assert "3 features x 2 samples" in page and all(f"| {r} |" in page for r in rows)
    assert f"({first['host']['torch_cpu_capability']})" in page  # the host the numbers were computed on
    stored = {p: p.stat().st_mtime_ns for p in (cache_dir() / "samples").rglob("*") if p.is_file()}
    second = run_scale_check(**kw, minutes=0.0)  # every store full: no chunk starts, nothing pending
    assert second["pending"] == [] and second["summary"]["MACO"] == first["summary"]["MACO"]
    assert {p: p.stat().st_mtime_ns for p in (cache_dir() / "samples").rglob("*") if p.is_file()} == stored
    write_report(json.loads((tmp_path / "metrics.json").read_text()), tmp_path / "again")  # the report from its JSON
    assert (tmp_path / "again" / "SCALE_CHECK.md").read_text() == (tmp_path / "SCALE_CHECK.md").read_text()
    assert (tmp_path / "again" / "table3_exact.png").stat().st_size > 10_000


class _Stop(Exception):
    pass


def test_the_transcoder_and_references_use_the_profiles_threads_and_the_samplers_the_threads_asked_for(
        smoke_world, tmp_path, monkeypatch):
    """A run at --threads 1 on an empty cache must learn notebook 04's features and draw its
    reference pools as ``make scale-check`` does: both at the profile's thread count (other
    threads round differently, learn other features and reach other pool maxima)."""
    monkeypatch.setattr("klsc_lib.worlds.load_world", lambda *a, **k: smoke_world)
    profile = replace(get_profile("04_energydps", "smoke"), threads=2)
    monkeypatch.setattr(scale_check, "get_profile", lambda name, p: profile)
    seen = {}

    def units(*a, **k):
        seen["transcoder"] = torch.get_num_threads()
        return real_units(*a, **k)

    def references(*a, **k):
        seen["references"] = torch.get_num_threads()
        return real_references(*a, **k)

    def rows(*a, **k):
        seen["samplers"] = torch.get_num_threads()
        raise _Stop

    real_units, real_references = scale_check.feature_units, scale_check.feature_references
    monkeypatch.setattr(scale_check, "feature_units", units)
    monkeypatch.setattr(scale_check, "feature_references", references)
    monkeypatch.setattr(scale_check, "sampled_rows", rows)
    before = torch.get_num_threads()
    try:
        with pytest.raises(_Stop):
            run_scale_check("smoke", n_features=3, n_samples=2, notebook=None, out=tmp_path, chosen="tilt 2 lambda",
                            smc="twisted SMC, independent", threads=1)
    finally:
        torch.set_num_threads(before)
    assert seen == {"transcoder": 2, "references": 2, "samplers": 1}


def test_a_feature_the_pool_cannot_reach_is_skipped_named_and_replaced_by_the_next_drawn(
        smoke_world, tmp_path, monkeypatch):
    import klsc_lib.studies.feature_reference as fr

    monkeypatch.setattr("klsc_lib.worlds.load_world", lambda *a, **k: smoke_world)
    real = fr.topk_targets

    def second_out_of_reach(*a, **k):
        search, target_U = real(*a, **k)
        return search, target_U * torch.tensor([1.0, 1e6] + [1.0] * (len(target_U) - 2), dtype=target_U.dtype)

    monkeypatch.setattr(fr, "topk_targets", second_out_of_reach)
    r = run_scale_check("smoke", n_features=2, n_samples=2, notebook=None, out=tmp_path, chosen="tilt 2 lambda",
                        smc="twisted SMC, independent", threads=1, rows=[])  # nothing sampled: the exact rows only
    drawn = draw_units(feature_units(smoke_world, get_profile("04_energydps", "smoke").recipe), smoke_world, 3,
                       torch.Generator().manual_seed(0))
    assert r["features"] == drawn.units_U[[0, 2]].tolist()  # the third drawn takes the second's place
    assert [k["feature"] for k in r["skipped"]] == [int(drawn.units_U[1])]
    assert f"feature {int(drawn.units_U[1])} (t = " in (tmp_path / "SCALE_CHECK.md").read_text()
    assert r["summary"]["TopK"]["psi_over_t"][0] == pytest.approx(
        float((drawn.search.psi_UK[[0, 2], :2].mean(1) / drawn.target_U[[0, 2]]).mean()), rel=1e-5)


def test_a_deadline_before_the_first_chunk_leaves_rows_pending_and_says_so(tmp_path):
    page = to_markdown({"profile": "smoke", "seed": 0, "n_features": 3, "n_samples": 2, "chosen": "tilt 2 lambda",
                        "smc": "twisted SMC, independent", "threads": 1, "wall_s": 6.0,
                        "pending": ["MACO", "DiffExplainer"], "summary": {}, "median_tv": {}, "s_per_sample": {},
                        "paired_tv": {}, "maco_halfwidth": None, "verdicts": {"smc_closer_still": None}})
    assert "rows still to run: MACO, DiffExplainer" in page and "| smc_closer_still | - | - |" in page

"""Notebook 04's verdicts under two seeds (klsc_lib.studies.seed_check)."""

from __future__ import annotations

import copy
import json

import pytest

from klsc_lib.studies.seed_check import CHOSEN, compare, main, summarise


def run(seed: int = 0, chosen: str = "tilt 2 lambda", tv=None, resolved=None, claims=None) -> dict:
    """A notebook 04 metrics.json with the fields the check reads."""
    tv = tv or {"q*": 0.28, f"EnergyDPS ({chosen})": 0.46, "MACO": 0.52, "unguided": 0.47}
    resolved = resolved or {"q*": "closer to q*", "MACO": "farther from q*", "unguided": "inside the CI"}
    metrics = {f"exact/{k}": {"ours": {"tv_mean": [v, v - 0.03, v + 0.03]}} for k, v in tv.items()}
    metrics["dev_chosen"] = {"ours": {"single pass": chosen, "SMC": "twisted SMC, independent"}}
    metrics["exact_resolved"] = {"ours": resolved}
    claims = claims or {"energydps_closest_to_tilt": True, "chosen_tv_30pct_lower": False}
    return {"seed": seed, "metrics": metrics, "claims": [{"id": k, "holds": v} for k, v in claims.items()]}


def test_the_same_run_twice_is_stable_and_rows_are_matched_by_role():
    a = summarise(run(0, "tilt 2 lambda"))
    b = summarise(run(1, "capped"))
    assert CHOSEN in a.tv and CHOSEN in b.tv and "EnergyDPS (capped)" not in b.tv
    check = compare(a, b)
    assert check.stable and check.same_ranking and check.flipped_claims == [] and check.contradictions == []


def test_a_flipped_claim_and_a_row_resolved_both_ways_are_reported():
    base = run(0)
    other = run(1, resolved={"q*": "closer to q*", "MACO": "closer to q*", "unguided": "farther from q*"},
                claims={"energydps_closest_to_tilt": False, "chosen_tv_30pct_lower": False},
                tv={"q*": 0.28, "EnergyDPS (tilt 2 lambda)": 0.46, "MACO": 0.40, "unguided": 0.47})
    check = compare(summarise(base), summarise(other))
    assert not check.stable
    assert check.flipped_claims == ["energydps_closest_to_tilt"]
    assert check.contradictions == ["MACO"]  # unguided: inside the CI at seed 0, so no contradiction
    assert not check.same_ranking


def test_a_run_without_the_exact_section_is_refused_naming_what_is_missing():
    bad = copy.deepcopy(run())
    del bad["metrics"]["exact_resolved"]
    with pytest.raises(ValueError, match="exact_resolved"):
        summarise(bad, "old/metrics.json")


def test_the_command_line_writes_the_page(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(run(seed)))
    out = tmp_path / "SEED_CHECK.md"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "**Stable**" in page and "| energydps_closest_to_tilt | holds | holds |" in page
    with pytest.raises(FileNotFoundError, match="run notebook 04 there first"):
        main([str(tmp_path / "a"), str(tmp_path / "missing")])

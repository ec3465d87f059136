"""The scale-out benchmark (benchmarks/bench_scale_out.py) on the smoke mini-world with 1 and
2 gloo ranks: every rank count writes the same bytes, and a run whose worker is killed
half-way finishes on rerun with those bytes, computing only the missing shards."""

from __future__ import annotations

import os

import pytest

from benchmarks import bench_scale_out as bench

SMOKE = bench.Workload(("--world", "miniworld", "--profile", "smoke"), n_train=64, n_eval=32)


@pytest.mark.slow
def test_rank_counts_write_the_same_bytes_and_a_killed_run_resumes(tmp_path):
    res = bench.scale_out(tmp_path, SMOKE, rank_counts=(1, 2), threads=1)
    assert [r["ranks"] for r in res["runs"]] == [1, 2]
    assert all(r["same_bytes_as_1_rank"] for r in res["runs"])
    assert res["runs"][0]["efficiency"] == 1.0
    kr = res["kill_and_resume"]
    assert kr["same_bytes_as_1_rank"]
    assert kr["shards_done_before_rerun"] + kr["shards_computed_by_rerun"] == res["shards"]
    if kr["killed_pid"] is not None:  # killed before the run exited: it failed and the rerun did the rest (none
        assert kr["first_exit_code"] != 0  # when the kill landed after its last shard: the sum above still holds)
    out = bench.summary(res)
    assert out["ratio"] == res["runs"][1]["efficiency"]


def test_too_few_cores_skip_with_a_reason(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    result = bench.run(rank_counts=(1, 2, 4, 8))
    assert result["detail"] == "skipped: needs 8 CPU cores, this machine has 2" and result["ratio"] != result["ratio"]

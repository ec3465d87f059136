"""The claims ledger and metrics.json: round trip, JSON safety, no partial files."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from klsc_lib.report import Report, to_jsonable, write_claims_table


def test_metrics_json_round_trip(tmp_path):
    report = Report("01_demo", tmp_path / "01_demo", profile="smoke", seed=3)
    report.metric("kl", torch.tensor(0.25), paper=0.0126)
    report.metric("table", {"t": np.arange(3), "inf": math.inf})
    report.claim("c1", "Thm D.14", "soft <= hard", ours=np.float32(0.1), paper=None, holds=True, kind="identity")
    report.claim("c2", "Lemma D.7", "does not reproduce", ours=2.0, paper=1.0, holds=False, kind="paper")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    report.savefig(fig, "line")
    data = json.loads(report.write().read_text())
    assert data["profile"] == "smoke" and data["seed"] == 3
    assert data["metrics"]["kl"] == {"ours": 0.25, "paper": 0.0126}
    assert data["metrics"]["table"]["ours"] == {"t": [0, 1, 2], "inf": "inf"}
    assert data["figures"] == ["line.png"]
    assert (tmp_path / "01_demo" / "line.png").read_bytes()[:4] == b"\x89PNG"
    assert data["versions"]["torch"].startswith("2.")
    assert data["host"]["cpu"] and data["host"]["threads"] == torch.get_num_threads() >= 1
    assert data["host"]["torch_cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE128"}
    assert [c["holds"] for c in data["claims"]] == [True, False]


def test_duplicate_claim_id_rejected(tmp_path):
    report = Report("01_demo", tmp_path, profile="smoke", seed=0)
    report.claim("c1", "ref", "s", 1, 1, True, kind="ours")
    with pytest.raises(ValueError, match="twice"):
        report.claim("c1", "ref", "s", 1, 1, True, kind="ours")


def _section_rows(table: str, kind: str) -> list[str]:
    """The table rows under the ``## kind`` heading."""
    section = table.split(f"## {kind}:")[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| holds")]


def test_claims_table_groups_by_kind_with_holding_rows_first(tmp_path):
    for name, claims in (("01_a", [("a-fails", "paper", False), ("a-id", "identity", True), ("a-holds", "paper", True)]),
                         ("02_b", [("b-holds", "paper", True), ("b-target", "ours", False)])):
        r = Report(name, tmp_path / name, profile="default", seed=0)
        for cid, kind, holds in claims:
            r.claim(cid, "Sec 2", "a | b", ours=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], paper=0.0126, holds=holds, kind=kind,
                    threshold="<= 1e-10" if kind == "identity" else None)
        r.write()
    table = write_claims_table(tmp_path).read_text()
    assert "3 of 5 claims hold" in table
    # sections in the order paper, identity, ours; each with its own count
    assert table.index("## paper:") < table.index("## identity:") < table.index("## ours:")
    assert "(2 of 3 hold)" in table and "(1 of 1 hold)" in table and "(0 of 1 hold)" in table
    paper = _section_rows(table, "paper")
    assert [row.split(" | ")[2] for row in paper] == ["a-holds", "b-holds", "a-fails"]  # holds first, then notebook
    assert paper[-1].startswith("| **no** |") and all(row.startswith("| yes |") for row in paper[:2])
    identity = _section_rows(table, "identity")
    assert len(identity) == 1 and identity[0].split(" | ")[-2:] == ["0.0126", "<= 1e-10 |"]  # paper value, threshold
    assert "a \\| b" in table  # pipes escaped
    assert "[1, 2, 3, 4, …]" in table  # long lists shortened


def test_claims_table_rejects_claims_without_a_kind(tmp_path):
    (tmp_path / "01_old").mkdir()
    (tmp_path / "01_old" / "metrics.json").write_text(json.dumps(
        {"notebook": "01_old", "profile": "smoke", "claims": [{"id": "x", "holds": True}]}))
    with pytest.raises(ValueError, match="kind"):
        write_claims_table(tmp_path)


def test_to_jsonable_handles_nan_and_nested_tensors():
    out = to_jsonable({"x": (torch.tensor([1.0, float("nan")]),)})
    assert out == {"x": [[1.0, "nan"]]}
    json.dumps(out)


def test_savefig_leaves_no_partial_file_on_error(tmp_path):
    report = Report("01_demo", tmp_path, profile="smoke", seed=0)

    class Broken:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        report.savefig(Broken(), "broken")
    assert list(tmp_path.iterdir()) == []


def test_claims_table_rejects_one_id_in_two_notebooks(tmp_path):
    for nb in ("04_a", "05_b"):
        r = Report(nb, tmp_path / nb, profile="smoke", seed=0)
        r.claim("features_beat_neurons", "App L.1", "s", 1, 1, True, kind="paper" if nb == "04_a" else "ours")
        r.write()
    with pytest.raises(ValueError, match="features_beat_neurons"):
        write_claims_table(tmp_path)

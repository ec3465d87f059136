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
    assert [c["holds"] for c in data["claims"]] == [True, False]


def test_duplicate_claim_id_rejected(tmp_path):
    report = Report("01_demo", tmp_path, profile="smoke", seed=0)
    report.claim("c1", "ref", "s", 1, 1, True, kind="ours")
    with pytest.raises(ValueError, match="twice"):
        report.claim("c1", "ref", "s", 1, 1, True, kind="ours")


def test_claims_table_lists_failures_and_counts(tmp_path):
    for name, holds in (("01_a", True), ("02_b", False)):
        r = Report(name, tmp_path / name, profile="default", seed=0)
        r.claim(f"{name}-claim", "Sec 2", "a | b", ours=[1.0, 2.0], paper=None, holds=holds, kind="paper")
        r.write()
    table = write_claims_table(tmp_path).read_text()
    assert "1 of 2 claims hold" in table
    assert "**no**" in table and "a \\| b" in table
    assert table.index("01_a-claim") < table.index("02_b-claim")


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

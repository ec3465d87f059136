"""Every notebook runs headlessly with papermill on profile=smoke and writes its
metrics.json with claims of a valid kind, every ``identity`` claim holding, at least
one PNG and an executed notebook small enough to commit."""

from __future__ import annotations

import json

import pytest

from klsc_lib.notebook_runner import MAX_EXECUTED_BYTES, notebook_names, run_notebook
from klsc_lib.report import CLAIM_KINDS, write_claims_table


@pytest.mark.notebook
@pytest.mark.parametrize("name", notebook_names())
def test_notebook_runs_on_smoke(name, tmp_path):
    out_dir = run_notebook(name, "smoke", tmp_path, seed=0, device="cpu")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["profile"] == "smoke"
    assert metrics["notebook"] == name
    assert metrics["claims"], "every notebook records the paper claims it tests"
    assert {c["kind"] for c in metrics["claims"]} <= set(CLAIM_KINDS)
    failed_identities = [c["id"] for c in metrics["claims"] if c["kind"] == "identity" and not c["holds"]]
    assert not failed_identities, f"identities hold for any input, so these are bugs: {failed_identities}"
    pngs = sorted(out_dir.glob("*.png"))
    assert pngs and set(metrics["figures"]) == {p.name for p in pngs}
    assert 0 < (out_dir / f"{name}.ipynb").stat().st_size <= MAX_EXECUTED_BYTES
    table = write_claims_table(tmp_path).read_text()
    assert all(c["id"] in table for c in metrics["claims"])

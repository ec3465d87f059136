"""The runner replaces a notebook's output folder only after a successful run, keeps
the executed notebook with its outputs, and refuses one over the size limit."""

from __future__ import annotations

import pytest

import json

from klsc_lib.notebook_runner import ExecutedNotebookTooLarge, run_notebook

HEADER = '''# %% tags=["parameters"]
profile = "default"
seed = 0
device = "auto"
out_dir = "."
# %%
from pathlib import Path
Path(out_dir, "a.txt").write_text(profile)
'''


def _notebook(folder, name, body=""):
    (folder / f"{name}.py").write_text(HEADER + body)


def test_success_replaces_the_folder_and_failure_keeps_the_previous_one(tmp_path):
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    _notebook(src, "90_demo")
    first = run_notebook("90_demo", "smoke", out, notebook_dir=src)
    assert (first / "a.txt").read_text() == "smoke"
    (first / "stale.png").write_bytes(b"old")
    run_notebook("90_demo", "default", out, notebook_dir=src)
    assert (first / "a.txt").read_text() == "default" and not (first / "stale.png").exists()

    _notebook(src, "90_demo", body='Path(out_dir, "b.png").write_bytes(b"x")\nraise RuntimeError("boom")\n')
    with pytest.raises(Exception, match="boom"):
        run_notebook("90_demo", "smoke", out, notebook_dir=src)
    assert sorted(p.name for p in first.iterdir()) == ["90_demo.ipynb", "a.txt"]
    assert (first / "a.txt").read_text() == "default"  # the last good run, untouched
    assert "boom" in (out / "90_demo.failed.ipynb").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["90_demo", "90_demo.failed.ipynb"]  # no temp folder left

    _notebook(src, "90_demo")
    run_notebook("90_demo", "smoke", out, notebook_dir=src)
    assert not (out / "90_demo.failed.ipynb").exists()


def test_executed_notebook_keeps_outputs_and_respects_the_size_limit(tmp_path):
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    _notebook(src, "91_demo", body='print("result", 6 * 7)\n')
    folder = run_notebook("91_demo", "smoke", out, notebook_dir=src, progress_bar=True)
    nb = json.loads((folder / "91_demo.ipynb").read_text())
    streams = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert "result 42" in streams  # outputs kept, so the copy reads on GitHub
    with pytest.raises(ExecutedNotebookTooLarge, match="MiB"):
        run_notebook("91_demo", "default", out, notebook_dir=src, max_bytes=100)
    assert (folder / "a.txt").read_text() == "smoke"  # the previous good run is kept

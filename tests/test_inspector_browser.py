"""End to end: the feature inspector in a real JupyterLab, in headless Chromium driven
by Playwright. A server on 127.0.0.1 (free port, token, temporary root) opens a small
notebook that displays the inspector on the tiny in-test world (building the smoke
mini-world and its transcoder takes minutes, too slow for a test); the browser runs
it, selects a feature, moves the strength slider, waits for the new EnergyDPS images,
saves a screenshot to ``figures/inspector/inspector.png`` and checks the page."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FEATURE = 9
N_SAMPLES = 4

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no system Chromium on PATH (Debian: apt-get install -y chromium); the browser test needs it")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyterlab is not installed in this environment")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(store_root: Path, notes: Path) -> dict:
    source = "\n".join([
        "import sys",
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})",
        "from _tiny_world import VALUE_NAMES, tiny_transcoder, tiny_world",
        "from klsc_lib.viz.inspector import FeatureInspector",
        "world = tiny_world()",
        "model, index = tiny_transcoder(world)",
        f"FeatureInspector(world, model, index, {str(store_root)!r}, notes_path={str(notes)!r}, steps=8, "
        f"n_samples={N_SAMPLES}, value_names=VALUE_NAMES)",
    ])
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    return {"cells": [cell], "metadata": {"kernelspec": {"name": "klsc", "display_name": "Python (klsc)",
                                                          "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def _stored_samples(store_root: Path) -> None:
    """Real EnergyDPS samples of FEATURE in a samples store, as notebook 04 leaves them."""
    from _tiny_world import tiny_transcoder, tiny_world
    from klsc_lib.samples_store import SamplesStore
    from klsc_lib.viz.inspector_data import sample_feature

    world = tiny_world()
    model, index = tiny_transcoder(world)
    batch = sample_feature(world.prior, world.backbone, model, FEATURE, n=N_SAMPLES, strength=20.0,
                           cap=float(index.scores_UK[FEATURE, 0]), steps=8, seeds=range(100, 100 + N_SAMPLES))
    SamplesStore("EnergyDPS", "Feature", {"steps": 8, "strength": 20.0}, store_root).put(FEATURE, batch.images_BCHW,
                                                                                       batch.psi_B)


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s")


def test_inspector_in_jupyterlab(tmp_path):
    chromium = _browser()
    from playwright.sync_api import expect, sync_playwright

    work, settings = tmp_path / "root", tmp_path / "settings"
    work.mkdir()
    _stored_samples(tmp_path / "samples")
    (work / "inspector.ipynb").write_text(json.dumps(_notebook(tmp_path / "samples", tmp_path / "notes.json")))
    # no news / update toasts over the screenshot
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(settings))
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/inspector.ipynb?token={token}")
                page.locator(".jp-Notebook .jp-Cell .cm-content").first.click(timeout=30_000)
                expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1,
                                                                                                        timeout=30_000)
                page.keyboard.press("Shift+Enter")
                inspector = page.locator(".klsc-inspector")
                expect(inspector).to_be_visible(timeout=60_000)

                # select a feature by typing its id
                box = page.locator(".klsc-feature-input input")
                box.fill(str(FEATURE))
                box.press("Enter")
                expect(page.locator(".klsc-feature-id")).to_have_text(str(FEATURE), timeout=20_000)
                expect(page.locator(".klsc-stored-EnergyDPS img")).to_have_count(N_SAMPLES, timeout=20_000)

                # move the strength slider: new EnergyDPS samples appear (sampled in the kernel's background thread)
                handle = page.locator(".klsc-strength .noUi-handle")
                handle.focus()
                for _ in range(6):
                    handle.press("ArrowLeft")
                expect(page.locator(".klsc-generated img")).to_have_count(N_SAMPLES, timeout=40_000)
                expect(page.locator(".klsc-strip img").first).to_be_visible()
                page.wait_for_timeout(300)
                out = ROOT / "figures" / "inspector" / "inspector.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                inspector.screenshot(path=str(out))

                assert page.locator(".klsc-topk img").count() == 8
                assert page.locator(".klsc-feature-id").inner_text() == str(FEATURE)
                assert page.locator(".klsc-message").inner_text().strip() == ""
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                                      ".jp-OutputArea-output.jp-mod-error")
                assert errors.count() == 0, errors.all_inner_texts()
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

"""End to end: the feature inspector in a real JupyterLab, in headless Chromium driven
by Playwright. The smoke mini-world, notebook 03's smoke transcoder and its index are
built (or loaded) under $KLSC_CACHE, with a few stored EnergyDPS samples of one feature;
a server on 127.0.0.1 (free port, token, temporary root, the same $KLSC_CACHE) opens a
small notebook that loads them from the cache and displays the inspector; the browser
runs it, selects the feature, moves the strength slider, waits for the new EnergyDPS
images, saves a screenshot (to ``$KLSC_INSPECTOR_SCREENSHOT`` if set) and checks the page.

With ``KLSC_INSPECTOR_PROFILE=default`` (``make screenshot``, which refreshes the README's
``figures/inspector/inspector.png``) the same test runs on the default world with its
trained prior, notebook 03's default transcoder and the samples notebook 04 stored
(run both notebooks on profile default first, with the same $KLSC_CACHE), on the feature
whose stored EnergyDPS samples show its concept most often."""

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

from klsc_lib.runtime import cache_dir

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 4
STEPS = 25  # EnergyDPS steps of the stored and the generated samples (smoke)
PROFILE = os.environ.get("KLSC_INSPECTOR_PROFILE", "smoke")  # smoke (CI) | default (make screenshot)
DEFAULT_STEPS = 50  # notebook 04's fast configuration

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no system Chromium on PATH (Debian: apt-get install -y chromium); the browser test needs it")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyterlab is not installed in this environment")
    return exe


@pytest.fixture(scope="module")
def smoke_feature(smoke_world) -> tuple[int, int]:
    """Notebook 03's smoke transcoder and index, cached, and the feature to open: the
    purest (its concept shared by most of its top images), ties to the strongest.
    Returns (feature, top-k images the inspector shows)."""
    from klsc_lib.energies.units import Units
    from klsc_lib.profiles import get_profile
    from klsc_lib.viz.inspector_data import feature_concepts

    from _smoke_transcoder import smoke_transcoder

    cfg, world, fitted, index = smoke_transcoder(smoke_world)
    units = Units("Feature", world.backbone, fitted.model, image_size=world.image_size)
    concepts = feature_concepts(units, world, get_profile("04_energydps", "smoke").top_k, world.value_names)
    feature = max(concepts, key=lambda f: (concepts[f].purity, float(index.scores_UK[f, 0])))
    return feature, cfg.grid_k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(k: int, store_root: Path, notes: Path, profile: str = "smoke", steps: int = STEPS) -> dict:
    source = "\n".join([
        "import sys",
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})",
        "from _smoke_transcoder import profile_transcoder",
        "from klsc_lib.diffusion.guidance import GuidanceConfig",
        "from klsc_lib.profiles import get_profile",
        "from klsc_lib.viz.inspector import FeatureInspector",
        f"_, world, fitted, index = profile_transcoder({profile!r})  # from $KLSC_CACHE",
        f"FeatureInspector(world, fitted, index, {str(store_root)!r}, notes_path={str(notes)!r}, k={k}, "
        f"guidance=GuidanceConfig.fast({steps}), n_samples={N_SAMPLES}, "
        f"concept_k=get_profile('04_energydps', {profile!r}).top_k)",
    ])
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    return {"cells": [cell], "metadata": {"kernelspec": {"name": "klsc", "display_name": "Python (klsc)",
                                                          "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def _default_case() -> tuple[int, int, Path]:
    """The default world's case: (feature, top-k images shown, notebook 04's samples root).
    The feature is the one of notebook 04's whose stored EnergyDPS samples the factor
    classifier reads as showing its concept most often (ties: the purer concept)."""
    import torch

    from klsc_lib.analysis.explanation_metrics import concept_accuracy
    from klsc_lib.energies.units import Units
    from klsc_lib.explain import stored_samples, true_concepts
    from klsc_lib.studies.nb04_energydps import world_reader
    from klsc_lib.profiles import get_profile
    from klsc_lib.profiles.nb04_energydps import samples_stores

    from _smoke_transcoder import profile_transcoder

    cfg, world, fitted, _ = profile_transcoder("default")
    store = samples_stores("default")[("EnergyDPS", "Feature")]  # only the features' EnergyDPS samples are needed
    if not store.units():
        pytest.skip("the default screenshot needs notebook 04's EnergyDPS samples: run notebook 04 on profile default "
                    "with the same $KLSC_CACHE first")
    ids = torch.tensor(sorted(store.units()))
    units = Units("Feature", world.backbone, fitted.model, image_size=world.image_size)  # as feature_units
    concepts = true_concepts(units, ids, world, get_profile("04_energydps", "default").top_k)
    images, _ = stored_samples(store, ids)
    acc = concept_accuracy(world_reader(world).read, images, concepts)
    best = max(range(len(ids)), key=lambda i: (float(acc[i]), float(concepts.purity_U[i])))
    return int(ids[best]), cfg.grid_k, store.folder.parent


def _stored_samples(smoke_world, feature: int, store_root: Path) -> None:
    """Real EnergyDPS samples of ``feature`` in a samples store, as notebook 04 leaves them
    (the inspector's default strength for STEPS steps, the cap at the top image's score)."""
    from dataclasses import replace

    from klsc_lib.diffusion.guidance import GuidanceConfig
    from klsc_lib.samples_store import SamplesStore
    from klsc_lib.viz.inspector_data import sample_feature

    from _smoke_transcoder import smoke_transcoder

    _, world, fitted, index = smoke_transcoder(smoke_world)
    guidance = replace(GuidanceConfig.fast(STEPS), cap_rule="fixed", cap=float(index.scores_UK[feature, 0]))
    batch = sample_feature(world.prior, fitted.backbone, fitted.model, feature, guidance, range(100, 100 + N_SAMPLES))
    SamplesStore("EnergyDPS", "Feature", {"steps": STEPS, "strength": guidance.strength}, store_root).put(
        feature, batch.images_BCHW, batch.psi_B)


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


def test_inspector_in_jupyterlab(chromium, request, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    work, settings = tmp_path / "root", tmp_path / "settings"
    work.mkdir()
    if PROFILE == "default":
        feature, k, store_root = _default_case()
        steps, slow = DEFAULT_STEPS, 4  # a 1.74 M-parameter prior on the CPU: allow more time
        presses, height = 2, 2600  # strength x 10^-0.1 (a small move that asks for new samples);
        # a viewport tall enough for the whole inspector, so the element screenshot is not overdrawn
    else:
        smoke_world = request.getfixturevalue("smoke_world")
        feature, k = request.getfixturevalue("smoke_feature")
        store_root, steps, slow = tmp_path / "samples", STEPS, 1
        presses, height = 6, 1100
        _stored_samples(smoke_world, feature, store_root)
    (work / "inspector.ipynb").write_text(json.dumps(_notebook(k, store_root, tmp_path / "notes.json", PROFILE,
                                                               steps)))
    # no news / update toasts over the screenshot
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(ROOT), KLSC_CACHE=str(cache_dir()),  # the kernel loads from the cache
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(settings))
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": height})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/inspector.ipynb?token={token}")
                page.locator(".jp-Notebook .jp-Cell .cm-content").first.click(timeout=30_000)
                expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1,
                                                                                                        timeout=30_000)
                page.keyboard.press("Shift+Enter")
                inspector = page.locator(".klsc-inspector")
                expect(inspector).to_be_visible(timeout=120_000 * slow)  # loads world and transcoder

                # select a feature by typing its id
                box = page.locator(".klsc-feature-input input")
                box.fill(str(feature))
                box.press("Enter")
                expect(page.locator(".klsc-feature-id")).to_have_text(str(feature), timeout=20_000)
                expect(page.locator(".klsc-stored-EnergyDPS img")).to_have_count(N_SAMPLES, timeout=20_000)

                # move the strength slider: new EnergyDPS samples appear (sampled in the kernel's background thread)
                handle = page.locator(".klsc-strength .noUi-handle")
                handle.focus()
                for _ in range(presses):
                    handle.press("ArrowLeft")
                expect(page.locator(".klsc-generated img")).to_have_count(N_SAMPLES, timeout=40_000 * slow)
                expect(page.locator(".klsc-strip img").first).to_be_visible()
                page.wait_for_timeout(300)
                # the README's screenshot only when asked for (make screenshot): a test run leaves the tree clean
                out = Path(os.environ.get("KLSC_INSPECTOR_SCREENSHOT", tmp_path / "inspector.png"))
                out.parent.mkdir(parents=True, exist_ok=True)
                inspector.screenshot(path=str(out))
                assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

                assert page.locator(".klsc-topk img").count() == k
                assert page.locator(".klsc-feature-id").inner_text() == str(feature)
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

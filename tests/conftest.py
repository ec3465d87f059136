"""Test isolation: no hub downloads, a throw-away TORCH_HOME, and a per-session
KLSC_CACHE (so a test run starts from nothing unless KLSC_CACHE is set by CI)."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="klsc-torch-home-")
os.environ.setdefault("KLSC_CACHE", tempfile.mkdtemp(prefix="klsc-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: the toy's 2-D tensors are tiny, and on a
    loaded 2-core machine extra threads cost more than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gmm_law():
    """Score variable psi(X) of 20,000 draws from the App H prior (RM §11 defaults)."""
    from klsc_lib.worlds.gmm import AngularScore, four_mode_gmm
    from klsc_lib.constraints.score_variable import EmpiricalScore

    x_ND = four_mode_gmm().sample(20_000, generator=torch.Generator().manual_seed(0))
    return EmpiricalScore(AngularScore()(x_ND))

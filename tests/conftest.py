"""Test isolation: no hub downloads, one OpenMP thread, a throw-away TORCH_HOME, and a per-session
KLSC_CACHE (so a test run starts from nothing unless KLSC_CACHE is set by CI)."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
# as `make test`: one OpenMP thread per process, so the pipeline's 2-process run picks the same
# conv kernels as the single-process run it is compared with bit for bit (tests/test_pipeline.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")
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
    """Score variable psi(X) of 20,000 draws from the App H prior (our default constants)."""
    from klsc_lib.energies.toy import AngularScore
    from klsc_lib.worlds.gmm import four_mode_gmm
    from klsc_lib.constraints.score_variable import EmpiricalScore

    x_ND = four_mode_gmm().sample(20_000, generator=torch.Generator().manual_seed(0))
    return EmpiricalScore(AngularScore()(x_ND))


@pytest.fixture(scope="session")
def normal_grid():
    """N(0, 1) as a midpoint quadrature law on [-12, 16] (56,000 cells, 5e-4 wide):
    thresholds on multiples of 0.5 fall on cell edges."""
    from klsc_lib.constraints.gaussian_example import normal_quadrature_law

    return normal_quadrature_law(-12.0, 16.0, 56_000)


@pytest.fixture(scope="session")
def gmm_grid_law():
    """psi(X) for the App H prior as a quadrature law on a 200 x 200 grid over [-6, 6]^2."""
    from klsc_lib.constraints.score_variable import EmpiricalScore, midpoint_grid_2d
    from klsc_lib.energies.toy import AngularScore
    from klsc_lib.worlds.gmm import four_mode_gmm

    x_GD, log_cell = midpoint_grid_2d(6.0, 200)
    return EmpiricalScore.from_density_grid(AngularScore()(x_GD), four_mode_gmm().log_prob(x_GD), log_cell)


@pytest.fixture(scope="session")
def smoke_world():
    """The smoke mini-world on the CPU: a cache hit under $KLSC_CACHE, or built once per
    session by the first test that needs it (about two minutes on two cores)."""
    from klsc_lib.worlds import load_world
    from klsc_lib.worlds.miniworld import MINIWORLD

    return load_world(MINIWORLD["smoke"], "cpu", progress=False)

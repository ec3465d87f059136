"""Dataset search (paper Sec 3.1 (i), App J.3) == brute force over the whole set, on
the same psi units; the mean psi of the top-k set is the matched target t."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.baselines.dataset_search import dataset_search, stack_energies

N, K = 37, 4


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(N, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def filters() -> torch.Tensor:
    return torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(1))


def batches(images: torch.Tensor, size: int, id_offset: int = 100):
    for start in range(0, len(images), size):  # uneven last batch
        yield torch.arange(start, min(start + size, len(images))) + id_offset, images[start:start + size]


def test_equals_brute_force(images, filters):
    energy = lambda x: torch.einsum("bchw,uchw->bu", x, filters)
    res = dataset_search(batches(images, 8), energy, n_units=5, k=K, disable=True)
    psi_NU = torch.einsum("bchw,uchw->bu", images.double(), filters.double())
    top_psi, top_idx = psi_NU.T.topk(K, dim=1)
    assert torch.equal(res.ids_UK, top_idx + 100)
    assert res.psi_UK.dtype == torch.float32
    assert torch.allclose(res.psi_UK.double(), top_psi, atol=1e-4)
    assert torch.equal(res.images_UKCHW, images[top_idx])
    assert torch.allclose(res.target_U.double(), top_psi.mean(dim=1), atol=1e-4)


def test_single_energies_stack_to_the_same_result(images, filters):
    singles = [lambda x, f=f: (x * f).sum(dim=(1, 2, 3)) for f in filters]
    stacked = dataset_search(batches(images, 5), stack_energies(singles), n_units=5, k=K, disable=True)
    joint = dataset_search(batches(images, 11), lambda x: torch.einsum("bchw,uchw->bu", x, filters), 5, K,
                           disable=True)
    assert torch.equal(stacked.ids_UK, joint.ids_UK)


def test_bad_input_is_refused(images):
    energy = lambda x: x.mean(dim=(2, 3))  # 3 units: one per channel
    with pytest.raises(ValueError, match="unique"):
        dataset_search([(torch.arange(4), images[:4]), (torch.arange(3, 6), images[4:7])], energy, 3, K, disable=True)
    with pytest.raises(ValueError, match="fewer than k"):
        dataset_search([(torch.arange(3), images[:3])], energy, 3, K, disable=True)
    with pytest.raises(ValueError, match=r"expected psi \(4, 2\)"):
        dataset_search([(torch.arange(4), images[:4])], energy, 2, K, disable=True)
    with pytest.raises(FloatingPointError, match=r"image ids \[1\]"):
        nan_at_1 = lambda x: energy(x).index_fill(0, torch.tensor([1]), torch.nan)
        dataset_search([(torch.arange(4), images[:4])], nan_at_1, 3, K, disable=True)

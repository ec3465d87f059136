"""The mini-world's reference pool: scored batch by batch, cached atomically, resumable,
its latents re-rendering exactly the images that were scored."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.worlds.miniworld.data import COLOURS, render_batch, sample_latents
from klsc_lib.worlds.miniworld.reference_pool import pool_batch_latents, score_pool

RED = list(COLOURS).index("red")


class CountingScore:
    """psi_BU = (mean red channel, mean blue channel), counting the images it scores;
    ``fail_at`` raises on that call (an interrupted run)."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.images, self.fail_at = 0, 0, fail_at

    def __call__(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.images += len(x_BCHW)
        return x_BCHW[:, [0, 2]].mean(dim=(2, 3))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path))
    return tmp_path


def test_pool_scores_what_its_latents_render(cache):
    psi = CountingScore()
    pool = score_pool(psi, {"score": "red-blue"}, n=300, batch_size=128, progress=False)
    assert len(pool) == 300 and pool.psi_NU.shape == (300, 2) and psi.images == 300
    idx = torch.tensor([0, 127, 128, 299])
    assert torch.allclose(pool.images(idx)[:, [0, 2]].mean(dim=(2, 3)), pool.psi_NU[idx])
    assert set(pool.factors) == {"digit", "colour", "size", "position", "background"}
    # red glyphs raise the red score: the factors belong to the scored images
    red = pool.factors["colour"] == RED
    assert pool.psi_NU[red, 0].mean() > pool.psi_NU[~red, 0].mean()


def test_pool_is_cached_resumable_and_keyed(cache):
    key = {"score": "red-blue"}
    first = score_pool(CountingScore(), key, n=300, batch_size=128, progress=False)
    again = CountingScore()
    assert torch.equal(score_pool(again, key, n=300, batch_size=128, progress=False).psi_NU, first.psi_NU)
    assert again.calls == 0
    folder = next((cache / "reference_pool").iterdir())
    (folder / "batch_00001.pt").unlink()
    resumed = CountingScore()
    assert torch.equal(score_pool(resumed, key, n=300, batch_size=128, progress=False).psi_NU, first.psi_NU)
    assert resumed.images == 128  # only the missing batch
    other = CountingScore()
    score_pool(other, {"score": "another"}, n=300, batch_size=128, progress=False)
    assert other.images == 300  # another key, another pool


def test_an_interrupted_run_leaves_only_complete_batches(cache):
    with pytest.raises(KeyboardInterrupt):
        score_pool(CountingScore(fail_at=2), {"score": "x"}, n=300, batch_size=128, progress=False)
    folder = next((cache / "reference_pool").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["batch_00000.pt", "config.json"]
    rest = CountingScore()
    score_pool(rest, {"score": "x"}, n=300, batch_size=128, progress=False)
    assert rest.images == 300 - 128


def test_pool_draws_are_fresh_and_bad_scores_are_refused(cache):
    train = sample_latents(64, "train", 0)  # the world's own training set (config seed 0)
    assert not torch.equal(pool_batch_latents(0, 64, 64, "train", 0).glyph_N, train.glyph_N)
    with pytest.raises(ValueError, match="past the end"):
        pool_batch_latents(3, 128, 300, "train", 0)
    with pytest.raises(ValueError, match=r"shape \(50, U\)"):
        score_pool(lambda x: x.mean(dim=(1, 2, 3)), {"score": "1d"}, n=50, batch_size=50, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        score_pool(lambda x: torch.full((len(x), 1), float("nan")), {"score": "nan"}, n=50, progress=False)
    assert render_batch(pool_batch_latents(2, 128, 300, "train", 0)).shape == (44, 3, 16, 16)

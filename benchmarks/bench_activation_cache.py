"""Activation cache throughput (App J.1 data pipeline) and dataset search by index
lookup vs a full re-scan (paper Table 11: 4,252 s per feature for the re-scan).

Two ratios measured in one run on the same backbone and images (a random timm
ConvNeXt the size of the mini-world's, so no world has to be trained):

- images/s of :func:`build_activation_cache` (batched, float16 shards) over a naive
  loop that runs one image at a time and saves one file per image;
- seconds of a full re-scan (backbone + transcoder over every image, top-k of one
  feature) over one :meth:`TopKIndex.lookup`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timm.models.convnext import ConvNeXt

from klsc_lib.sae.activation_cache import build_activation_cache
from klsc_lib.interfaces import HookedBackbone
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig

N_IMAGES, IMAGE = 2000, 16


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.images = torch.rand(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], {"label": 0}


def _backbone() -> HookedBackbone:
    torch.manual_seed(0)
    model = ConvNeXt(in_chans=3, num_classes=10, depths=(1, 1, 3, 1), dims=(16, 32, 64, 128), patch_size=2).eval()
    upsample = lambda x: torch.nn.functional.interpolate(x, size=64, mode="bilinear", align_corners=False)
    return HookedBackbone(model, "stages.2.blocks.2", upsample, name="bench-convnext")


@torch.no_grad()
def run() -> dict:
    backbone, data = _backbone(), _Images(N_IMAGES)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_activation_cache(backbone, data, Path(tmp) / "batched", {"bench": 1}, shard_size=500,
                                       batch_size=250, progress=False)
        batched_s = time.perf_counter() - t0
        naive_dir = Path(tmp) / "naive"
        naive_dir.mkdir()
        n_naive = N_IMAGES // 10  # the naive loop is timed on a tenth of the images
        t0 = time.perf_counter()
        for i in range(n_naive):
            x_in, x_out = backbone.hook_io(data[i][0][None])
            np.save(naive_dir / f"{i}.in.npy", x_in[0].numpy())
            np.save(naive_dir / f"{i}.out.npy", x_out[0].numpy())
        naive_s = (time.perf_counter() - t0) * N_IMAGES / n_naive

        transcoder = Transcoder(TranscoderConfig(64, 64, 512, 8, 3), generator=torch.Generator().manual_seed(0))
        index = TopKIndex(512, 20)
        for batch in cache.iterate(500):
            index.update_maps(transcoder.encode(batch.in_BCHW), batch.ids_B)
        feature = 7
        t0 = time.perf_counter()
        for _ in range(100):
            hits = index.lookup(feature)
        lookup_s = (time.perf_counter() - t0) / 100
        t0 = time.perf_counter()
        peaks = [transcoder.encode(backbone.hook_io(data.images[s:s + 250])[0])[:, feature].flatten(1).amax(1)
                 for s in range(0, N_IMAGES, 250)]
        rescan_top = torch.cat(peaks).topk(20).indices.tolist()
        rescan_s = time.perf_counter() - t0
    overlap = len(set(rescan_top) & {h.image_id for h in hits}) / 20
    return {
        "name": "activation cache: batched vs per-image (images/s); lookup vs re-scan",
        "ratio": rescan_s / lookup_s,
        "detail": (f"cache {N_IMAGES / batched_s:.0f} vs naive {N_IMAGES / naive_s:.0f} images/s "
                   f"(x{naive_s / batched_s:.1f}); dataset search lookup {lookup_s * 1e6:.0f} us vs re-scan "
                   f"{rescan_s:.2f} s of {N_IMAGES} images (x{rescan_s / lookup_s:.0f}, top-20 overlap {overlap:.0%})"),
        "cache_ratio": naive_s / batched_s,
    }


if __name__ == "__main__":
    print(run())

"""A tiny world for the inspector tests, built in about a second: coloured squares
(factors colour and position) on a dim textured background, the tiny random ConvNeXt
of ``_tiny_convnext`` hooked at ``stages.1.blocks.0``, a random transcoder, its top-k
index over the test images, and the exact diffusion prior of the training images'
empirical distribution (its eps is the posterior mean over the training set)."""

from __future__ import annotations

import torch

from klsc_lib.interfaces import DDPMSchedule, Prior, World
from klsc_lib.sae.topk_index import TopKIndex, index_maps
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig

from _tiny_convnext import tiny_backbone

SIZE = 32
COLOURS = ((1.0, 0.2, 0.2), (0.2, 0.9, 0.25), (0.3, 0.45, 1.0), (1.0, 0.9, 0.2))
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))
VALUE_NAMES = {"colour": ["red", "green", "blue", "yellow"],
               "position": ["top-left", "top-right", "bottom-left", "bottom-right"]}


class Squares(torch.utils.data.Dataset):
    """``n`` images in [-1, 1]: a square of one of 4 colours in one of 4 quadrants."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.factors = {"colour": torch.randint(4, (n,), generator=g), "position": torch.randint(4, (n,), generator=g)}
        base = -0.6 + 0.15 * torch.rand(n, 1, SIZE, SIZE, generator=g).expand(-1, 3, -1, -1)
        self.images = base.clone()
        half = SIZE // 2
        for i in range(n):
            r, c = CORNERS[int(self.factors["position"][i])]
            side = 8 + int(torch.randint(5, (1,), generator=g))
            top, left = r * half + (half - side) // 2, c * half + (half - side) // 2
            colour = torch.tensor(COLOURS[int(self.factors["colour"][i])]) * 2 - 1
            self.images[i, :, top:top + side, left:left + side] = colour[:, None, None]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], {name: int(v[i]) for name, v in self.factors.items()}


def empirical_prior(images_NCHW: torch.Tensor, schedule: DDPMSchedule) -> Prior:
    """The DDPM prior whose data law is the uniform distribution on ``images_NCHW``:
    x0-hat(x_t) = sum_n softmax(-|x_t - sqrt(abar) x_n|^2 / 2(1 - abar)) x_n."""
    data_NP = images_NCHW.flatten(1)

    def eps(x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        abar_B1 = schedule.alphas_cumprod_T.to(x_t)[t_B.long().cpu()].to(x_t.device)[:, None]
        x_BP = x_t.flatten(1)
        d_BN = ((x_BP[:, None, :] - abar_B1.sqrt()[:, :, None] * data_NP.to(x_t)[None]) ** 2).sum(-1)
        w_BN = torch.softmax(-d_BN / (2 * (1 - abar_B1)), dim=1)
        x0_BP = w_BN @ data_NP.to(x_t)
        return ((x_BP - abar_B1.sqrt() * x0_BP) / (1 - abar_B1).sqrt()).reshape(x_t.shape)

    return Prior(eps, schedule, tuple(images_NCHW.shape[1:]), name="empirical")


def tiny_world(n_train: int = 96, n_test: int = 96) -> World:
    backbone = tiny_backbone(block="stages.1.blocks.0")
    train, test = Squares(n_train, seed=1), Squares(n_test, seed=2)
    prior = empirical_prior(train.images, DDPMSchedule())
    return World("tiny-squares", backbone, prior, None, train, test, ("colour", "position"), 5)


def tiny_transcoder(world: World, d_sae: int = 32, seed: int = 0) -> tuple[Transcoder, TopKIndex]:
    """A random transcoder on the world's hook and its top-8 index over the test images."""
    with torch.no_grad():
        d_in = world.backbone.hook_io(world.test.images[:1])[0].shape[1]
    model = Transcoder(TranscoderConfig(d_in=d_in, d_out=d_in, d_sae=d_sae, k=4, kernel_size=3),
                       generator=torch.Generator().manual_seed(seed)).eval()
    with torch.no_grad():
        batches = ((torch.arange(s, s + 32), world.test.images[s:s + 32]) for s in range(0, len(world.test), 32))
        index = index_maps(batches, lambda x: model.encode(world.backbone.hook_io(x)[0]), d_sae, 8)
    return model, index

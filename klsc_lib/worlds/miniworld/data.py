"""The mini-world's images: real handwritten digit glyphs (scikit-learn's 1,797 8x8
digits, shipped with the package) composited with procedural factors on texture
backgrounds cut from scikit-image's sample photographs (also shipped). No download.

Every image is a pure function of its factors plus two nuisance variables (which
glyph of the chosen digit, where the background is cropped), so the factors are an
exact ground truth: later notebooks score a feature's explanation against them,
where the paper (Sec 3.3, App K) could only ask raters.

Factors (values are integer ids):

- ``digit``      0-9, the class the backbone is trained on (its head has 10 classes);
- ``colour``     glyph colour, one of :data:`COLOURS`;
- ``size``       glyph side in pixels, one of :data:`SIZES`;
- ``position``   the canvas corner the glyph is anchored to, one of :data:`POSITIONS`;
- ``background`` texture, one of :data:`BACKGROUNDS`.

Glyphs are split by index into disjoint train / test writers, so the test set holds
unseen handwriting.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SIZE = 16
FACTOR_NAMES = ("digit", "colour", "size", "position", "background")
COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.15, 0.95, 0.2), "blue": (0.25, 0.45, 1.0), "yellow": (1.0, 0.95, 0.15)}
SIZES = (8, 12)
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
# name -> side of the square crop (pixels of the 512x512 photograph) area-resized to 16x16:
# chosen so that each texture shows its structure (bricks, grass blades, pebbles, smooth regolith).
BACKGROUNDS = {"brick": 64, "grass": 48, "gravel": 32, "moon": 48}
FACTOR_SIZES = {"digit": 10, "colour": len(COLOURS), "size": len(SIZES), "position": len(POSITIONS),
                "background": len(BACKGROUNDS)}
VALUE_NAMES = {"digit": [str(d) for d in range(10)], "colour": list(COLOURS), "size": [f"{s}px" for s in SIZES],
               "position": list(POSITIONS), "background": list(BACKGROUNDS)}  # readable factor values
BACKGROUND_LEVEL, BACKGROUND_CONTRAST = -0.5, 0.22  # backgrounds are dim grey, glyphs bright and coloured
TEST_GLYPH_EVERY = 5  # glyphs whose index is a multiple of 5 are test writers


@lru_cache(maxsize=1)
def glyphs() -> tuple[torch.Tensor, torch.Tensor]:
    """(glyphs_N88 in [0, 1], digit_N) of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)


@lru_cache(maxsize=1)
def textures() -> torch.Tensor:
    """Texture photographs, standardised per image: (len(BACKGROUNDS), 512, 512)."""
    import skimage.data

    out = []
    for name in BACKGROUNDS:
        img = torch.tensor(getattr(skimage.data, name)(), dtype=torch.float32)
        out.append((img - img.mean()) / img.std())
    return torch.stack(out)


def glyph_ids(split: str) -> torch.Tensor:
    """Indices of the glyphs (writers) belonging to ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    idx = torch.arange(len(glyphs()[0]))
    is_test = idx % TEST_GLYPH_EVERY == 0
    return idx[is_test] if split == "test" else idx[~is_test]


def glyph_offset(size: int, position: int) -> tuple[int, int]:
    """Top-left pixel of a glyph of side ``size`` anchored at corner ``position``."""
    far = IMAGE_SIZE - size
    return (far if position >= 2 else 0, far if position % 2 else 0)


@dataclass(frozen=True)
class WorldSample:
    """The latent variables of a set of images: factors plus nuisances."""

    factors: dict[str, torch.Tensor]  # name -> (N,) long
    glyph_N: torch.Tensor  # which glyph (writer) draws the digit
    crop_N2: torch.Tensor  # background crop position in [0, 1)^2


def sample_latents(n: int, split: str, seed: int) -> WorldSample:
    """Draw ``n`` independent, uniformly distributed factor settings (deterministic in
    ``seed`` and ``split``); the glyph is drawn among ``split``'s glyphs of that digit."""
    gen = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    factors = {name: torch.randint(k, (n,), generator=gen) for name, k in FACTOR_SIZES.items()}
    ids = glyph_ids(split)
    digit_of = glyphs()[1][ids]
    glyph_N = torch.empty(n, dtype=torch.long)
    for d in range(10):
        pool = ids[digit_of == d]
        where = factors["digit"] == d
        glyph_N[where] = pool[torch.randint(len(pool), (int(where.sum()),), generator=gen)]
    crop_N2 = torch.rand(n, 2, generator=gen)
    return WorldSample(factors, glyph_N, crop_N2)


def glyph_alphas(glyph_N: torch.Tensor, size_N: torch.Tensor, position_N: torch.Tensor) -> torch.Tensor:
    """(N, 16, 16) ink of each glyph resized to ``SIZES[size]`` and anchored at corner
    ``position``: the alpha with which the glyph colour is painted."""
    alpha_NHW = torch.zeros(len(glyph_N), IMAGE_SIZE, IMAGE_SIZE)
    for size, side in enumerate(SIZES):
        table = F.interpolate(glyphs()[0][:, None], size=side, mode="bilinear", align_corners=False,
                              antialias=True)[:, 0].clamp(0, 1)
        for position in range(len(POSITIONS)):
            rows = ((size_N == size) & (position_N == position)).nonzero()[:, 0]
            y0, x0 = glyph_offset(side, position)
            alpha_NHW[rows, y0:y0 + side, x0:x0 + side] = table[glyph_N[rows]]
    return alpha_NHW


def background_crops(background_N: torch.Tensor, crop_N2: torch.Tensor) -> torch.Tensor:
    """(N, 16, 16) grey backgrounds: a square of each texture photograph (side
    ``BACKGROUNDS[name]``, placed by ``crop`` in [0, 1)^2) area-resized to 16x16."""
    bg_NHW = torch.empty(len(background_N), IMAGE_SIZE, IMAGE_SIZE)
    for background, side in enumerate(BACKGROUNDS.values()):
        rows = (background_N == background).nonzero()[:, 0]
        tex = textures()[background]
        y0 = (crop_N2[rows, 0] * (tex.shape[0] - side)).long()
        x0 = (crop_N2[rows, 1] * (tex.shape[1] - side)).long()
        ar = torch.arange(side)
        crops = tex[(y0[:, None] + ar)[:, :, None], (x0[:, None] + ar)[:, None, :]]
        bg_NHW[rows] = (BACKGROUND_LEVEL + BACKGROUND_CONTRAST
                        * F.interpolate(crops[:, None], size=IMAGE_SIZE, mode="area")[:, 0]).clamp(-1, 1)
    return bg_NHW


def render_batch(latents: WorldSample) -> torch.Tensor:
    """World images (N, 3, 16, 16) in [-1, 1]: each glyph colour painted with its
    :func:`glyph_alphas` over its :func:`background_crops`."""
    f = latents.factors
    alpha_N1HW = glyph_alphas(latents.glyph_N, f["size"], f["position"])[:, None]
    bg_N1HW = background_crops(f["background"], latents.crop_N2)[:, None]
    colour_NC = (torch.tensor(list(COLOURS.values())) * 2 - 1)[f["colour"]]
    return (1 - alpha_N1HW) * bg_N1HW + alpha_N1HW * colour_NC[:, :, None, None]


def render(glyph: int, colour: int, size: int, position: int, background: int,
           crop_yx: tuple[float, float]) -> torch.Tensor:
    """One world image (3, 16, 16) from explicit factors and nuisances."""
    factors = {"digit": glyphs()[1][[glyph]], "colour": torch.tensor([colour]), "size": torch.tensor([size]),
               "position": torch.tensor([position]), "background": torch.tensor([background])}
    return render_batch(WorldSample(factors, torch.tensor([glyph]), torch.tensor([crop_yx])))[0]


class MiniWorldDataset(Dataset):
    """``n`` rendered world images; items are ``(image_CHW in [-1, 1], factors)``.
    ``images_NCHW`` and ``factors`` hold the whole set as tensors for fast training."""

    def __init__(self, n: int, split: str, seed: int):
        if n < 1:
            raise ValueError(f"a world dataset needs n >= 1 images, got {n}")
        self.split, self.seed = split, seed
        self.latents = sample_latents(n, split, seed)
        self.images_NCHW = render_batch(self.latents)
        self.factors = self.latents.factors
        self.labels_N = self.factors["digit"]

    def __len__(self) -> int:
        return len(self.images_NCHW)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, int]]:
        return self.images_NCHW[i], {name: int(v[i]) for name, v in self.factors.items()}

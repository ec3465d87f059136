"""MACO: magnitude-constrained feature visualisation (Fel et al. 2023; paper Sec 3.1 (ii),
App J.3.1), the activation-maximisation baseline, on the same capped psi as EnergyDPS.

The image is parametrised in Fourier space with a FIXED magnitude spectrum; only the
phase is optimised (NAdam, lr 1.0). Per sample, each step:

    phase -> standardise -> magnitude * exp(i phase) -> inverse rFFT -> standardise
          -> recorrelate colours (decorrelated basis -> RGB) -> 2 sigmoid - 1  (a buffer in [-1, 1])
          -> random crops (side ~0.2-0.25 of the buffer, jittered centres) + Gaussian and uniform noise
          -> psi of every crop, objective = mean over crops of min(psi, c)

The buffer is ``buffer_factor`` (4) times the image side, so a crop holds about one
image worth of pixels. The magnitude spectrum and the colour basis are estimated from
the world's own images (:meth:`MacoPrior.from_images`), never downloaded. Every sample
draws its initial phase, crops and noise from its own generator and standardisation is
per sample, so one batch explains many features (one energy per sample) and equals B
single runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from klsc_lib.baselines.image_common import EnergyFn, rand_per_sample
from klsc_lib.diffusion.samplers import Generators, initial_noise, resolve_generators
from klsc_lib.energies import capped_objective, checked_psi

_EPS = 1e-4


def estimate_colour_basis(images_NCHW: torch.Tensor) -> torch.Tensor:
    """(C, C) recorrelation matrix M = U sqrt(S) / sqrt(s_max) from the pixel colour
    covariance U S U^T of ``images``: RGB = M @ decorrelated colour (the "decorrelated
    colour space" of MACO / Olah et al. 2017; the leading axis has unit gain)."""
    pixels_PC = images_NCHW.detach().double().permute(0, 2, 3, 1).reshape(-1, images_NCHW.shape[1])
    cov_CC = torch.cov(pixels_PC.T).reshape(pixels_PC.shape[1], pixels_PC.shape[1])
    vals_C, vecs_CC = torch.linalg.eigh(cov_CC)
    vals_C = vals_C.clamp_min(vals_C.max() * 1e-6)  # grey images: keep M invertible
    return (vecs_CC * (vals_C / vals_C.max()).sqrt()).float()


def recorrelate(x_BCHW: torch.Tensor, colour_CC: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour channels -> RGB."""
    return torch.einsum("ij,bjhw->bihw", colour_CC.to(x_BCHW), x_BCHW)


def decorrelate(x_BCHW: torch.Tensor, colour_CC: torch.Tensor) -> torch.Tensor:
    """RGB -> decorrelated colour channels (inverse of :func:`recorrelate`)."""
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(colour_CC.double()).to(x_BCHW), x_BCHW)


def estimate_magnitude_spectrum(images_NCHW: torch.Tensor, colour_CC: torch.Tensor,
                                batch_size: int = 256) -> torch.Tensor:
    """Mean |rFFT2| of the images in the decorrelated colour basis: (C, H, W // 2 + 1)."""
    total = None
    for start in range(0, images_NCHW.shape[0], batch_size):
        chunk = decorrelate(images_NCHW[start:start + batch_size].detach().float(), colour_CC)
        mag = torch.fft.rfft2(chunk).abs().sum(dim=0)
        total = mag if total is None else total + mag
    if total is None:
        raise ValueError("need at least one image to estimate the magnitude spectrum")
    return total / images_NCHW.shape[0]


def resize_spectrum(magnitude_CHF: torch.Tensor, size: int) -> torch.Tensor:
    """The rFFT2 magnitude of a ``size`` x ``size`` image with the same content per
    cycle-per-pixel: bilinear resize with the zero frequency kept in place."""
    if magnitude_CHF.shape[-2:] == (size, size // 2 + 1):
        return magnitude_CHF
    centred = torch.fft.fftshift(magnitude_CHF, dim=-2)[None]
    resized = F.interpolate(centred, size=(size, size // 2 + 1), mode="bilinear", align_corners=False,
                            antialias=True)[0]
    return torch.fft.ifftshift(resized, dim=-2)


@dataclass
class MacoPrior:
    """The fixed parts of the MACO parametrisation, estimated from a world's images."""

    colour_CC: torch.Tensor  # decorrelated colour -> RGB
    magnitude_CHF: torch.Tensor  # mean |rFFT2| in the decorrelated basis, at the images' own size

    @classmethod
    def from_images(cls, images_NCHW: torch.Tensor) -> "MacoPrior":
        """Estimate both from real images in [-1, 1], shape (N, C, H, W)."""
        if images_NCHW.ndim != 4 or images_NCHW.shape[-1] != images_NCHW.shape[-2]:
            raise ValueError(f"expected square images (N, C, H, W), got {tuple(images_NCHW.shape)}")
        colour_CC = estimate_colour_basis(images_NCHW)
        return cls(colour_CC, estimate_magnitude_spectrum(images_NCHW, colour_CC))


def maco_buffer(magnitude_CHF: torch.Tensor, phase_BCHF: torch.Tensor) -> torch.Tensor:
    """Spatial buffer (B, C, S, S) of the given magnitude and (standardised) phase,
    standardised per sample: the decorrelated image before recorrelation and sigmoid."""
    phase = _standardise(phase_BCHF)
    spectrum = torch.polar(magnitude_CHF.expand_as(phase).contiguous(), phase)
    side = phase_BCHF.shape[-2]
    return _standardise(torch.fft.irfft2(spectrum, s=(side, side)))


def buffer_to_image(buffer_BCHW: torch.Tensor, colour_CC: torch.Tensor) -> torch.Tensor:
    """Recorrelate colours and squash to the diffusion range [-1, 1]."""
    return 2 * torch.sigmoid(recorrelate(buffer_BCHW, colour_CC)) - 1


def crop_resize(images_BCHW: torch.Tensor, centres_BK2: torch.Tensor, sizes_BK: torch.Tensor,
                out_size: int) -> torch.Tensor:
    """(B, K, C, out, out) square crops, box centres and sides as fractions of the image
    (bilinear, differentiable)."""
    b, k = sizes_BK.shape
    theta = torch.zeros(b * k, 2, 3, device=images_BCHW.device, dtype=images_BCHW.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = sizes_BK.flatten()
    theta[:, :, 2] = 2 * centres_BK2.reshape(b * k, 2) - 1  # (x, y) in grid_sample's [-1, 1] coordinates
    grid = F.affine_grid(theta, [b * k, images_BCHW.shape[1], out_size, out_size], align_corners=False)
    grid = grid.reshape(b, k * out_size, out_size, 2)  # the K crops of a sample stacked along height
    crops = F.grid_sample(images_BCHW, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return crops.reshape(b, images_BCHW.shape[1], k, out_size, out_size).transpose(1, 2)


@dataclass
class MacoResult:
    x_BCHW: torch.Tensor  # final images in [-1, 1]: the centre crop of side box_size[1]
    psi_B: torch.Tensor  # energy of the final images
    buffer_BCHW: torch.Tensor  # standardised decorrelated buffer (before recorrelation and sigmoid)


def maco(energy: EnergyFn, prior: MacoPrior, batch_size: int, image_size: int, steps: int = 256, *,
         cap_B: float | torch.Tensor | None = None, lr: float = 1.0, buffer_factor: int = 4,
         crops_per_step: int = 6, box_size: tuple[float, float] = (0.20, 0.25), jitter: float = 0.15,
         noise: float = 0.02, seeds: Generators = None, device: torch.device | str | None = None,
         callback: Callable[[dict[str, Any]], None] | None = None, disable: bool | None = None) -> MacoResult:
    """MACO phase optimisation of ``batch_size`` images of side ``image_size`` (App J.3.1).

    ``steps`` is the knob the caller calibrates to the target level t; ``cap_B`` the
    clip cap (scalar or per sample); ``seeds`` one seed or generator per sample (default
    0..B-1), sample i drawing only from its own. ``noise`` 0.02 is the reference's 0.05 rescaled from
    its value range of width 5 to ours of width 2. ``callback`` receives
    ``{"i", "psi_B" (mean over crops), "x_BCHW" (buffer image)}`` before each update.
    """
    if steps < 0 or crops_per_step < 1 or buffer_factor < 1:
        raise ValueError(f"need steps >= 0, crops_per_step >= 1, buffer_factor >= 1; got {steps}, "
                         f"{crops_per_step}, {buffer_factor}")
    if not 0 < box_size[0] <= box_size[1] <= 1:
        raise ValueError(f"box_size must satisfy 0 < low <= high <= 1, got {box_size}")
    device = torch.device(device) if device is not None else prior.magnitude_CHF.device
    gens = resolve_generators(range(batch_size) if seeds is None else seeds, batch_size)
    side = image_size * buffer_factor
    magnitude_CHF = resize_spectrum(prior.magnitude_CHF.float(), side).to(device)
    colour_CC = prior.colour_CC.to(device)
    channels = magnitude_CHF.shape[0]
    phase_BCHF = initial_noise((channels, side, side // 2 + 1), gens, device=device).requires_grad_(True)
    optimiser = torch.optim.NAdam([phase_BCHF], lr=lr)
    k = crops_per_step
    for i in tqdm(range(steps), disable=disable, desc="MACO"):
        image_BCHW = buffer_to_image(maco_buffer(magnitude_CHF, phase_BCHF), colour_CC)
        half_BK = (box_size[0] + (box_size[1] - box_size[0]) * rand_per_sample(gens, (k,), device)) / 2
        centres_BK2 = 0.5 + jitter * initial_noise((k, 2), gens, device=device)
        centres_BK2 = torch.minimum(torch.maximum(centres_BK2, half_BK[..., None]), 1 - half_BK[..., None])
        crops = crop_resize(image_BCHW, centres_BK2, 2 * half_BK, image_size)
        crops = (crops + noise * initial_noise(crops.shape[1:], gens, device=device)
                 + noise * (rand_per_sample(gens, crops.shape[1:], device) - 0.5))
        # one call per crop index: the energy always sees one image per sample, in sample order
        psi_BK = torch.stack([checked_psi(energy, crops[:, j], f"MACO, optimisation step {i}") for j in range(k)],
                             dim=1)
        if callback is not None:
            callback({"i": i, "psi_B": psi_BK.detach().mean(dim=1), "x_BCHW": image_BCHW.detach()})
        optimiser.zero_grad(set_to_none=True)
        objective_BK = torch.stack([capped_objective(psi_B, cap_B, "clip") for psi_B in psi_BK.unbind(1)], dim=1)
        (-objective_BK.mean(dim=1).sum()).backward()
        optimiser.step()
    with torch.no_grad():
        buffer_BCHW = maco_buffer(magnitude_CHF, phase_BCHF)
        centre_B12 = torch.full((batch_size, 1, 2), 0.5, device=device)
        size_B1 = torch.full((batch_size, 1), box_size[1], device=device)
        x_BCHW = crop_resize(buffer_to_image(buffer_BCHW, colour_CC), centre_B12, size_B1, image_size)[:, 0]
        psi_B = checked_psi(energy, x_BCHW, f"MACO, optimisation step {steps}")
    return MacoResult(x_BCHW, psi_B, buffer_BCHW)


def _standardise(x_B: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per sample (over every non-batch axis)."""
    dims = tuple(range(1, x_B.ndim))
    return (x_B - x_B.mean(dim=dims, keepdim=True)) / (x_B.std(dim=dims, keepdim=True) + _EPS)

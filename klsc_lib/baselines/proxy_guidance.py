"""Proxy-guided generation in the style of DiffExplainer (Pennisi et al. 2025; paper
Sec 2.2.4 eq. 20, App J.3.2): optimise the conditioning embedding c of a conditional
prior by gradient ascent on E[min(psi(x_0(c)), cap)], where x_0(c) is a short
deterministic, differentiable DDIM chain from a FIXED initial noise per sample.

The search is confined to the prompt family {p_theta(x | c)} (eq. 21): what a
conditional prior can be asked for, not the tilted law of KLSC.

Protocol: ``eps_given_embedding(x_t, t_B, emb) -> eps`` with ``emb`` of leading
dimension B (one learnable embedding per sample, Adam). Two adapters:

- :func:`unet2d_eps_given_embedding`: a diffusers ``UNet2DModel`` with class embeddings
  (the mini-world's conditional prior); the embedding replaces the class-embedding
  output through a forward hook.
- :class:`SoftPromptSD`: Stable Diffusion 1.5 from a local diffusers folder, prompt =
  fixed prefix ("a picture of a") + K = 8 learnable token embeddings (App J.3.2 defaults),
  classifier-free guidance inside; latents are decoded by the VAE before psi.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from klsc_lib.baselines.image_common import EnergyFn, replaced_output
from klsc_lib.diffusion.samplers import Generators, initial_noise, resolve_generators, spaced_timesteps
from klsc_lib.energies import capped_objective, checked_psi
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.weights import WeightsFileError, WeightsSource

EmbEpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t_B, emb) -> eps


@dataclass(frozen=True)
class DDIMChain:
    """The timesteps (decreasing) and cumulative alphas of a deterministic DDIM chain."""

    alphas_cumprod_T: torch.Tensor
    timesteps: torch.Tensor

    @classmethod
    def from_schedule(cls, schedule: DDPMSchedule, num_steps: int) -> "DDIMChain":
        return cls(schedule.alphas_cumprod_T.float(), spaced_timesteps(schedule, num_steps))

    @classmethod
    def from_diffusers(cls, scheduler: Any, num_steps: int) -> "DDIMChain":
        """From any diffusers scheduler with ``alphas_cumprod`` and ``set_timesteps``."""
        scheduler = copy.deepcopy(scheduler)
        scheduler.set_timesteps(num_steps)
        return cls(scheduler.alphas_cumprod.float(), scheduler.timesteps.long().cpu())


def ddim_x0(eps_given_embedding: EmbEpsFn, x_T: torch.Tensor, emb: torch.Tensor, chain: DDIMChain,
            clip_x0: tuple[float, float] | None = None, use_checkpoint: bool = False) -> torch.Tensor:
    """x_0 of the eta = 0 DDIM chain from ``x_T``, differentiable in ``emb`` (abar = 1
    after the last step, so the output is the last x0-hat)."""
    abar_T = chain.alphas_cumprod_T.to(x_T.device)
    ts = chain.timesteps.tolist()
    x = x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        t_B = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if use_checkpoint:
            eps = checkpoint(eps_given_embedding, x, t_B, emb, use_reentrant=False)
        else:
            eps = eps_given_embedding(x, t_B, emb)
        abar, abar_prev = abar_T[t], (abar_T[t_prev] if t_prev >= 0 else abar_T.new_tensor(1.0))
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
            eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    return x


@dataclass
class ProxyGuidanceResult:
    x_BCHW: torch.Tensor  # images in [-1, 1] generated with the final embeddings
    psi_B: torch.Tensor  # their energy
    emb: torch.Tensor  # final embeddings (B, ...)


def proxy_guidance(energy: EnergyFn, eps_given_embedding: EmbEpsFn, emb_init: torch.Tensor,
                   sample_shape: tuple[int, ...], chain: DDIMChain, steps: int = 50, *, lr: float = 1e-3,
                   cap_B: float | torch.Tensor | None = None,
                   decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   clip_x0: tuple[float, float] | None = None, seeds: Generators = None,
                   samples_per_embedding: int = 1, fresh_noise: bool = False, use_checkpoint: bool = False,
                   callback: Callable[[dict[str, Any]], None] | None = None,
                   disable: bool | None = None) -> ProxyGuidanceResult:
    """``steps`` Adam steps on the embeddings ``emb_init`` (E, ...) to raise min(psi, cap)
    of the images ``decode(ddim_x0(...))`` (App J.3.2, eq. 20). Each embedding drives
    ``samples_per_embedding`` samples (B = E x that, embedding e for samples e*n ... e*n + n - 1:
    one prompt per unit, as eq. 20 optimises a prompt, not an image). Sample i starts its chain
    from its own noise (``seeds[i]``, a seed or generator, default i; shape ``sample_shape``):
    fixed, or with ``fresh_noise`` a new draw of its stream at every step (the expectation over
    x_T of eq. 20). ``decode`` maps the chain's output to images in [-1, 1] (the VAE for latent
    priors; identity if None). ``callback`` gets ``{"i", "psi_B", "x_BCHW"}`` before each update."""
    if samples_per_embedding < 1:
        raise ValueError(f"samples_per_embedding must be >= 1, got {samples_per_embedding}")
    batch = emb_init.shape[0] * samples_per_embedding
    device = emb_init.device
    gens = resolve_generators(range(batch) if seeds is None else seeds, batch)
    noise = {"x_T": initial_noise(tuple(sample_shape), gens, device=device)}
    emb = emb_init.detach().clone().requires_grad_(True)
    decode = decode if decode is not None else (lambda x: x)
    optimiser = torch.optim.Adam([emb], lr=lr)

    def images(e: torch.Tensor) -> torch.Tensor:
        return decode(ddim_x0(eps_given_embedding, noise["x_T"], e.repeat_interleave(samples_per_embedding, 0), chain,
                              clip_x0, use_checkpoint))

    for i in tqdm(range(steps), disable=disable, desc="proxy guidance"):
        if fresh_noise and i > 0:
            noise["x_T"] = initial_noise(tuple(sample_shape), gens, device=device)
        x_BCHW = images(emb)
        psi_B = checked_psi(energy, x_BCHW, f"proxy guidance, step {i}")
        if callback is not None:
            callback({"i": i, "psi_B": psi_B.detach(), "x_BCHW": x_BCHW.detach()})
        optimiser.zero_grad(set_to_none=True)
        (-capped_objective(psi_B, cap_B, "clip").sum()).backward()
        if not torch.isfinite(emb.grad).all():
            raise FloatingPointError(f"proxy guidance: non-finite gradient on the embedding at step {i}; lower lr "
                                     "or check the energy's gradient")
        optimiser.step()
    with torch.no_grad():
        if fresh_noise and steps > 0:
            noise["x_T"] = initial_noise(tuple(sample_shape), gens, device=device)
        x_BCHW = images(emb)
        psi_B = checked_psi(energy, x_BCHW, f"proxy guidance, step {steps}")
    return ProxyGuidanceResult(x_BCHW, psi_B, emb.detach())


# ---------------------------------------------------------------- mini-world adapter
def class_embedding_table(unet: torch.nn.Module) -> torch.Tensor:
    """(num_classes, E) class-embedding weights of a diffusers ``UNet2DModel``
    (e.g. the mean over classes, or the null row, as the initial embedding)."""
    table = getattr(unet, "class_embedding", None)
    if not isinstance(table, torch.nn.Embedding):
        raise ValueError("this UNet has no nn.Embedding class embedding (build it with num_class_embeds=...)")
    return table.weight.detach()


def classifier_free(eps_given_embedding: EmbEpsFn, null_of: Callable[[int], torch.Tensor], scale: float) -> EmbEpsFn:
    """eps_null + ``scale`` (eps(emb) - eps_null), the null embedding ``null_of(B)`` (the
    prior's "nothing given" conditioning): classifier-free guidance (Ho & Salimans 2022), as
    DiffExplainer samples its prompts (App J.3.2); ``scale`` 1 is the plain conditional model."""

    def eps(x_t: torch.Tensor, t_B: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return eps_given_embedding(x_t, t_B, emb)
        null = eps_given_embedding(x_t, t_B, null_of(x_t.shape[0]).to(emb.device, emb.dtype))
        return null + scale * (eps_given_embedding(x_t, t_B, emb) - null)

    return eps


def unet2d_eps_given_embedding(unet: torch.nn.Module) -> EmbEpsFn:
    """``eps(x_t, t_B, emb_BE)`` of a class-conditional diffusers ``UNet2DModel``: the
    class-embedding output is replaced by ``emb_BE`` (a forward hook; the labels passed
    to the model are placeholders)."""
    class_embedding_table(unet)

    def eps(x_t: torch.Tensor, t_B: torch.Tensor, emb_BE: torch.Tensor) -> torch.Tensor:
        labels_B = torch.zeros(x_t.shape[0], dtype=torch.long, device=x_t.device)
        with replaced_output(unet.class_embedding, lambda out: emb_BE.to(out.dtype)):
            return unet(x_t, t_B, class_labels=labels_B).sample

    return eps


# ---------------------------------------------------------------- Stable Diffusion 1.5
SD15_SOURCE = WeightsSource(
    what="Stable Diffusion v1.5 diffusers folder (DiffExplainer baseline, App J.3.2)",
    env_var="KLSC_SD15",
    published=("Hugging Face stable-diffusion-v1-5/stable-diffusion-v1-5 (huggingface_hub.snapshot_download, "
               "allow_patterns for unet/ vae/ text_encoder/ tokenizer/ scheduler/ and model_index.json)"),
)
SD15_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _transformers():
    try:
        import transformers
    except ImportError as err:  # only the paper-scale path needs it
        raise ImportError("the Stable Diffusion baseline needs `transformers` (CLIP text encoder and tokenizer): "
                          "pip install 'klsc_lib[paper]'") from err
    return transformers


@dataclass
class SoftPromptSD:
    """SD 1.5 components with prompt = ``prefix`` + ``num_soft_tokens`` learnable token
    embeddings (App J.3.2: "a picture of a" + K = 8 by default)."""

    unet: torch.nn.Module  # UNet2DConditionModel
    vae: torch.nn.Module  # AutoencoderKL
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler: Any  # diffusers DDIMScheduler
    prefix: str = "a picture of a"
    num_soft_tokens: int = 8
    guidance_scale: float = 7.5

    def __post_init__(self) -> None:
        tok = self.tokenizer
        prefix_ids = tok(self.prefix, add_special_tokens=False).input_ids
        length = tok.model_max_length
        ids = [tok.bos_token_id, *prefix_ids, *[tok.eos_token_id] * self.num_soft_tokens, tok.eos_token_id]
        if len(ids) > length:
            raise ValueError(f"prefix {self.prefix!r} + {self.num_soft_tokens} soft tokens exceed the tokenizer's "
                             f"{length} tokens")
        self.soft_start = 1 + len(prefix_ids)
        self.ids_L = torch.tensor(ids + [tok.pad_token_id] * (length - len(ids)))
        self.uncond_LE = self._encode(tok("", padding="max_length", max_length=length, return_tensors="pt").input_ids,
                                      None).detach()

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def initial_embedding(self, batch: int) -> torch.Tensor:
        """(B, K, E): the prefix's last token embedding for every soft token."""
        last = self.ids_L[self.soft_start - 1]
        emb_E = self.token_embedding.weight[last].detach()
        return emb_E.expand(batch, self.num_soft_tokens, -1).clone()

    def _encode(self, ids_BL: torch.Tensor, soft_BKE: torch.Tensor | None) -> torch.Tensor:
        device = self.token_embedding.weight.device
        if soft_BKE is None:
            return self.text_encoder(ids_BL.to(device)).last_hidden_state
        a, b = self.soft_start, self.soft_start + self.num_soft_tokens

        def insert(out_BLE: torch.Tensor) -> torch.Tensor:
            return torch.cat([out_BLE[:, :a], soft_BKE.to(out_BLE.dtype), out_BLE[:, b:]], dim=1)

        with replaced_output(self.token_embedding, insert):
            return self.text_encoder(ids_BL.to(device)).last_hidden_state

    def eps_given_embedding(self, z_t: torch.Tensor, t_B: torch.Tensor, soft_BKE: torch.Tensor) -> torch.Tensor:
        """Classifier-free guided eps on latents with the soft prompt."""
        cond = self._encode(self.ids_L.expand(z_t.shape[0], -1), soft_BKE)
        if self.guidance_scale == 1.0:
            return self.unet(z_t, t_B, encoder_hidden_states=cond).sample
        uncond = self.uncond_LE.to(cond).expand(z_t.shape[0], -1, -1)
        eps_u, eps_c = self.unet(torch.cat([z_t, z_t]), torch.cat([t_B, t_B]),
                                 encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def decode(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        """VAE decoding of latents to images in [-1, 1]."""
        return self.vae.decode(z_BCHW / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def chain(self, num_steps: int) -> DDIMChain:
        return DDIMChain.from_diffusers(self.scheduler, num_steps)


def load_sd15(folder: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              **prompt_options: Any) -> SoftPromptSD:
    """:class:`SoftPromptSD` from a local diffusers SD 1.5 folder (frozen, eval);
    ``prompt_options`` go to :class:`SoftPromptSD` (prefix, num_soft_tokens, guidance_scale).
    ``folder`` defaults to ``$KLSC_SD15``."""
    if folder is None:
        folder = os.environ.get(SD15_SOURCE.env_var)
        if not folder:
            raise WeightsFileError(Path("<unset>"), SD15_SOURCE, f"no folder given and ${SD15_SOURCE.env_var} is unset")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise WeightsFileError(folder, SD15_SOURCE, "folder not found")
    missing = [s for s in SD15_SUBFOLDERS if not (folder / s).is_dir()]
    if missing:
        listing = ", ".join(f"{m}/" for m in missing)
        raise WeightsFileError(folder, SD15_SOURCE, f"not a Stable Diffusion folder: missing {listing}")
    transformers = _transformers()
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    def frozen(model: torch.nn.Module) -> torch.nn.Module:
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    try:
        unet = frozen(UNet2DConditionModel.from_pretrained(folder, subfolder="unet"))
        vae = frozen(AutoencoderKL.from_pretrained(folder, subfolder="vae"))
        text_encoder = frozen(transformers.CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"))
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
    except (OSError, ValueError) as err:
        raise WeightsFileError(folder, SD15_SOURCE, f"cannot be loaded: {type(err).__name__}: {err}") from err
    return SoftPromptSD(unet, vae, text_encoder, tokenizer, scheduler, **prompt_options)

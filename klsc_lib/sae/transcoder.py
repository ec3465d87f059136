"""The CNN-architecture transcoder, the paper's SAE variant (paper Sec 3.1, App C.1,
App J.1; the authors' release).

    pre_BFHW  = Conv2d_{k x k}(s_in * x_BCHW)                    (eq. 38, 7x7 / padding 3 in the paper)
    acts_BFHW = TopK_F(pre_BFHW)  at every position (h, w)       (eq. 39, exactly k non-zeros)
    y_hat     = (W_dec^T acts + b_dec) / s_out                   (eq. 40, position-shared dictionary)

``W_dec_FC`` holds one dictionary direction per row (the paper's "columns" of the
decoder); the trainer keeps every row at unit norm. ``s_in`` / ``s_out`` implement
lm_saes' dataset-wise normalisation (``norm_activation="dataset-wise"`` in the release):
activations are rescaled so that their mean norm is sqrt(d). With
``decoder_norm_topk`` the TopK ranks ``pre * ||W_dec_f||`` (lm_saes'
``sparsity_include_decoder_norm``); with unit-norm rows this changes nothing, but it
makes imported checkpoints (:mod:`klsc_lib.sae.lm_saes_import`) behave exactly as in
the authors' code.

``target="input"`` gives a plain SAE (reconstruct the block input); the default
``"output"`` is the transcoder (block input -> block output).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from klsc_lib.interfaces import HookedBackbone


@dataclass(frozen=True)
class TranscoderConfig:
    d_in: int  # channels of the block input (768 at paper scale)
    d_out: int  # channels of the reconstruction target
    d_sae: int  # dictionary size F (expansion 16 -> 12 288 in the paper)
    k: int  # TopK per position (64 in the paper)
    kernel_size: int = 7  # encoder kernel (7x7, padding 3 in the paper)
    target: Literal["output", "input"] = "output"  # transcoder, or plain SAE
    decoder_norm_topk: bool = True  # lm_saes sparsity_include_decoder_norm

    def __post_init__(self):
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size padding), got {self.kernel_size}")
        if not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.target not in ("output", "input"):
            raise ValueError(f"target must be 'output' (transcoder) or 'input' (plain SAE), got {self.target!r}")
        if self.target == "input" and self.d_in != self.d_out:
            raise ValueError("a plain SAE (target='input') needs d_out == d_in")


def topk_per_position(scores_BFHW: torch.Tensor, values_BFHW: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, at every position, the ``values`` of the k features with the largest
    ``scores`` and zero the rest (App C, "Top-k sparsification": by value, no ReLU)."""
    idx_BKHW = scores_BFHW.topk(k, dim=1).indices
    return torch.zeros_like(values_BFHW).scatter(1, idx_BKHW, values_BFHW.gather(1, idx_BKHW))


class Transcoder(nn.Module):
    """Conv encoder + per-position TopK + position-shared linear decoder (App C.1)."""

    def __init__(self, cfg: TranscoderConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        ks = cfg.kernel_size
        bound = 1.0 / math.sqrt(cfg.d_in * ks * ks)
        self.W_enc_FCkk = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in, ks, ks).uniform_(-bound, bound, generator=generator))
        self.b_enc_F = nn.Parameter(torch.zeros(cfg.d_sae))
        W_dec_FC = torch.randn(cfg.d_sae, cfg.d_out, generator=generator)
        self.W_dec_FC = nn.Parameter(W_dec_FC / W_dec_FC.norm(dim=1, keepdim=True))
        self.b_dec_C = nn.Parameter(torch.zeros(cfg.d_out))
        # Dataset-wise normalisation factors sqrt(d) / E||x|| (the authors' release); 1 = off.
        self.register_buffer("in_scale", torch.tensor(1.0))
        self.register_buffer("out_scale", torch.tensor(1.0))

    # ------------------------------------------------------------------ encode / decode
    def _check(self, x_BCHW: torch.Tensor, channels: int, what: str) -> None:
        if x_BCHW.ndim != 4 or x_BCHW.shape[1] != channels:
            raise ValueError(f"{what} must be (B, {channels}, H, W), got {tuple(x_BCHW.shape)}")

    def decoder_norm_F(self) -> torch.Tensor:
        return self.W_dec_FC.norm(dim=1)

    def encode(self, x_BCHW: torch.Tensor, return_pre: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Sparse codes ``acts_BFHW`` of a raw block input; with ``return_pre`` also the
        dense pre-activation ``pre_BFHW`` (the conv output before TopK), which
        notebook 04's intrinsic score uses (App J.2)."""
        self._check(x_BCHW, self.cfg.d_in, "transcoder input")
        pre_BFHW = F.conv2d(x_BCHW * self.in_scale, self.W_enc_FCkk, self.b_enc_F, padding=self.cfg.kernel_size // 2)
        scores_BFHW = pre_BFHW * self.decoder_norm_F()[:, None, None] if self.cfg.decoder_norm_topk else pre_BFHW
        acts_BFHW = topk_per_position(scores_BFHW, pre_BFHW, self.cfg.k)
        return (acts_BFHW, pre_BFHW) if return_pre else acts_BFHW

    def decode(self, acts_BFHW: torch.Tensor) -> torch.Tensor:
        """Position-shared dictionary decoding (eq. 40), back in the target's raw units."""
        y_BCHW = torch.einsum("bfhw,fc->bchw", acts_BFHW, self.W_dec_FC) + self.b_dec_C[:, None, None]
        return y_BCHW / self.out_scale

    def forward(self, x_BCHW: torch.Tensor, return_acts: bool = False, return_pre: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Prediction of the target from the raw block input (and the codes, and the
        pre-activations, which the trainer's optional AuxK loss reads)."""
        acts_BFHW, pre_BFHW = self.encode(x_BCHW, return_pre=True)
        y_BCHW = self.decode(acts_BFHW)
        if not (return_acts or return_pre):
            return y_BCHW
        return (y_BCHW, acts_BFHW, pre_BFHW) if return_pre else (y_BCHW, acts_BFHW)

    # ------------------------------------------------------------------ parameter maintenance
    @torch.no_grad()
    def normalise_decoder_(self) -> None:
        """Rescale every dictionary row to unit norm (done by the trainer after each step)."""
        self.W_dec_FC.div_(self.W_dec_FC.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def set_dataset_norm_(self, mean_in_norm: float, mean_out_norm: float) -> None:
        """Dataset-wise normalisation (lm_saes): scale inputs and targets to mean norm sqrt(d)."""
        if not (mean_in_norm > 0 and mean_out_norm > 0):
            raise ValueError(f"mean activation norms must be positive, got {mean_in_norm}, {mean_out_norm}")
        self.in_scale.fill_(math.sqrt(self.cfg.d_in) / mean_in_norm)
        self.out_scale.fill_(math.sqrt(self.cfg.d_out) / mean_out_norm)

    @torch.no_grad()
    def fold_dataset_norm_(self) -> None:
        """Fold ``in_scale`` / ``out_scale`` into the weights as lm_saes'
        ``standardize_parameters_of_dataset_norm`` does: reconstructions are unchanged,
        codes and pre-activations are divided by ``in_scale`` (so they match the
        authors' inference-mode values), decoder rows stop being unit norm."""
        s_in, s_out = self.in_scale.item(), self.out_scale.item()
        self.b_enc_F.div_(s_in)
        self.W_dec_FC.mul_(s_in / s_out)
        self.b_dec_C.div_(s_out)
        self.in_scale.fill_(1.0)
        self.out_scale.fill_(1.0)

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> dict:
        return {"config": asdict(self.cfg), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "Transcoder":
        model = cls(TranscoderConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model


def hook_target(cfg: TranscoderConfig, in_BCHW: torch.Tensor, out_BCHW: torch.Tensor) -> torch.Tensor:
    """What the model reconstructs: the block output (transcoder) or its input (SAE)."""
    return out_BCHW if cfg.target == "output" else in_BCHW


@contextlib.contextmanager
def spliced(backbone: HookedBackbone, transcoder: Transcoder) -> Iterator[HookedBackbone]:
    """Within the context, the hooked block's output is replaced by the transcoder's
    prediction from the block's input (spliced evaluation; a plain SAE instead
    replaces the block input by its reconstruction)."""
    if transcoder.cfg.target == "output":
        handle = backbone.block.register_forward_hook(lambda _m, inputs, _out: transcoder(inputs[0]))
    else:
        handle = backbone.block.register_forward_pre_hook(lambda _m, inputs: (transcoder(inputs[0]), *inputs[1:]))
    try:
        yield backbone
    finally:
        handle.remove()

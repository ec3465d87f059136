"""Intrinsic scores of a vision backbone as :class:`Energy` objects.

- :func:`feature_score`: a transcoder feature (paper Sec 3.1, App J.2). The map is
  the transcoder's PRE-TopK activation (the encoder conv output) at the hooked block
  input: TopK would zero the gradient of a feature that is not among the k largest.
  Only the requested features' encoder rows are computed (a grouped convolution with
  one group per sample), not all F channels, so one batch can explain many features.
- :func:`neuron_score`: a channel of the hooked block's output (the paper's neurons,
  App L.1 Table 7).
- :func:`class_logit`: a logit of the backbone's head, the task term of object drift
  (App E, L.5).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from klsc_lib.energies.base import Energy
from klsc_lib.energies.reductions import check_reduction, reduce_map
from klsc_lib.interfaces import HookedBackbone
from klsc_lib.sae.transcoder import Transcoder


def _ids(ids, what: str) -> torch.Tensor:
    ids_B = torch.as_tensor(ids)
    if ids_B.dtype.is_floating_point or ids_B.dtype == torch.bool or ids_B.ndim > 1:
        raise ValueError(f"{what} ids must be an int or a 1-D integer tensor (one id per sample), got {ids!r}")
    return ids_B.long()


def _check_range(ids_B: torch.Tensor, size: int, what: str) -> None:
    bad = ids_B[(ids_B < 0) | (ids_B >= size)]
    if bad.numel():
        raise ValueError(f"unknown {what} ids {sorted(set(bad.tolist()))[:8]}: valid ids are in [0, {size})")


def _per_sample(ids_B: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Broadcast a scalar id to the batch; a 1-D id tensor must have one id per sample."""
    if ids_B.ndim == 0:
        return ids_B.expand(batch)
    if len(ids_B) != batch:
        raise ValueError(f"{len(ids_B)} {what} ids for a batch of {batch} samples; pass one id per sample or an int")
    return ids_B


def _device_ids(ids_B: torch.Tensor) -> Callable[[torch.device], torch.Tensor]:
    """``ids_B`` on a device, copied there once (a copy per call makes the host wait for the GPU)."""
    copies: dict[torch.device, torch.Tensor] = {}

    def on(device: torch.device) -> torch.Tensor:
        if device not in copies:
            copies[device] = ids_B.to(device)
        return copies[device]

    return on


def _label(kind: str, ids_B: torch.Tensor) -> str:
    if ids_B.ndim == 0:
        return f"{kind}[{int(ids_B)}]"
    shown = ",".join(str(i) for i in ids_B[:4].tolist())
    return f"{kind}[{shown}{',...' if len(ids_B) > 4 else ''}]"


def feature_pre_activation(transcoder: Transcoder, x_BCHW: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """pre_BHW[b] = (W_enc[units[b]] * (s_in x[b]) + b_enc[units[b]]): the pre-TopK map of
    one feature per sample, equal to ``transcoder.encode(x, return_pre=True)[1][b, units[b]]``."""
    if x_BCHW.ndim != 4 or x_BCHW.shape[1] != transcoder.cfg.d_in:
        raise ValueError(f"transcoder input must be (B, {transcoder.cfg.d_in}, H, W), got {tuple(x_BCHW.shape)}")
    pad = transcoder.cfg.kernel_size // 2
    x_BCHW = x_BCHW * transcoder.in_scale
    units = units.to(x_BCHW.device)
    if units.ndim == 0:
        w_1Ckk = transcoder.W_enc_FCkk[units].unsqueeze(0)
        return F.conv2d(x_BCHW, w_1Ckk, transcoder.b_enc_F[units].reshape(1), padding=pad)[:, 0]
    b, c, h, w = x_BCHW.shape
    units_B = _per_sample(units, b, "feature")
    out_1BHW = F.conv2d(x_BCHW.reshape(1, b * c, h, w), transcoder.W_enc_FCkk[units_B],
                        transcoder.b_enc_F[units_B], padding=pad, groups=b)
    return out_1BHW[0]


def feature_score(backbone: HookedBackbone, transcoder: Transcoder, units_B: int | torch.Tensor,
                  reduction: str = "mix", center_frac: float = 0.5, alpha: float = 0.7,
                  temperature: float = 0.2) -> Energy:
    """psi_f(x): the reduced pre-TopK map of transcoder feature ``units_B`` (an int, or one
    id per sample) at the hooked block input (App J.2, eq. 213 for ``mix``)."""
    units = _ids(units_B, "feature")
    _check_range(units, transcoder.cfg.d_sae, "feature")
    check_reduction(reduction, alpha, temperature)

    units_on = _device_ids(units)

    def psi(x_BCHW: torch.Tensor) -> torch.Tensor:
        block_in, _ = backbone.hook_io(x_BCHW, stop=True)
        pre_BHW = feature_pre_activation(transcoder, block_in,
                                         _per_sample(units_on(block_in.device), len(x_BCHW), "feature"))
        return reduce_map(pre_BHW, reduction, center_frac, alpha, temperature)

    return Energy(psi, _label("feature", units))


def neuron_score(backbone: HookedBackbone, channels_B: int | torch.Tensor, reduction: str = "mix",
                 center_frac: float = 0.5, alpha: float = 0.7, temperature: float = 0.2) -> Energy:
    """psi_c(x): the reduced map of output channel ``channels_B`` of the hooked block (App L.1)."""
    channels = _ids(channels_B, "channel")
    _check_range(channels, torch.iinfo(torch.long).max, "channel")
    check_reduction(reduction, alpha, temperature)

    channels_on = _device_ids(channels)

    def psi(x_BCHW: torch.Tensor) -> torch.Tensor:
        _, out_BCHW = backbone.hook_io(x_BCHW, stop=True)
        _check_range(channels, out_BCHW.shape[1], "channel")
        idx_B = _per_sample(channels_on(out_BCHW.device), len(x_BCHW), "channel")
        return reduce_map(out_BCHW[torch.arange(len(idx_B), device=out_BCHW.device), idx_B],
                          reduction, center_frac, alpha, temperature)

    return Energy(psi, _label("neuron", channels))


def class_logit(backbone: HookedBackbone, classes_B: int | torch.Tensor) -> Energy:
    """g(x) = logit of class ``classes_B`` (an int or one per sample), the task term of App L.5."""
    classes = _ids(classes_B, "class")
    _check_range(classes, torch.iinfo(torch.long).max, "class")

    def g(x_BCHW: torch.Tensor) -> torch.Tensor:
        logits_BK = backbone(x_BCHW)
        _check_range(classes, logits_BK.shape[1], "class")
        idx_B = _per_sample(classes, len(x_BCHW), "class").to(logits_BK.device)
        return logits_BK.gather(1, idx_B[:, None])[:, 0]

    return Energy(g, _label("class_logit", classes))

"""Import the authors' released transcoder (Hugging Face
``SII-ZhouGC/cnnsae_dinov3_resnext_large``, the authors' release) into our
:class:`~klsc_lib.sae.transcoder.Transcoder`.

The checkpoint is in the lm_saes layout (``OpenMOSS/Language-Model-SAEs`` branch
``gczhou_cnn``, ``src/lm_saes/cnnsae.py``, vendored in ``SII-ZhouGC/EnergyDPS``): a
folder with ``config.json`` and ``sae_weights.safetensors`` (or ``.pt`` holding
``{"sae": state_dict}``) whose tensors are

    W_conv (d_sae, d_model, 7, 7), b_conv (d_sae,)        conv encoder, padding 3
    W_D (d_sae, d_model), b_D (d_model,)                    position-shared decoder (rows = features)
    layer_norm_weight / layer_norm_bias (d_model,)          present but unused by the authors' encode
    dataset_average_activation_norm.<hook_point_in|out>     scalars (norm_activation="dataset-wise")

The authors' encode ranks ``pre * ||W_D_f||`` (``sparsity_include_decoder_norm``) and
their loader folds the dataset-wise norms into the weights (``from_config``,
``fold_activation_scale=True``). We do the same, so our ``encode(x, return_pre=True)``
returns exactly their ``hidden_pre`` (the intrinsic score's input, App J.2) for the
same block input (theirs is flattened to (B, H*W, d_model), ours stays (B, C, H, W)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig

WEIGHT_FILES = ("sae_weights.safetensors", "sae_weights.pt")


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if path.is_dir():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
        for name in WEIGHT_FILES:
            if (path / name).exists():
                return _load_state(path / name)[0], config
        raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {path}: download the lm_saes checkpoint "
                                "folder (e.g. SII-ZhouGC/cnnsae_dinov3_resnext_large) there")
    if not path.exists():
        raise FileNotFoundError(f"no lm_saes checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), {}
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)["sae"], {}
    raise ValueError(f"unsupported lm_saes checkpoint {path}: expected a folder, .safetensors or .pt")


def load_lm_saes_transcoder(path: str | Path, k: int | None = None) -> Transcoder:
    """Our Transcoder with the weights of an lm_saes ``CNNSparseAutoEncoder`` checkpoint
    (folder or weights file). ``k`` overrides the config's ``top_k`` (needed when the
    folder has no ``config.json``; the paper's value is 64)."""
    state, config = _load_state(Path(path))
    missing = [key for key in ("W_conv", "b_conv", "W_D") if key not in state]
    if missing:
        raise KeyError(f"{path} is not an lm_saes CNN transcoder checkpoint: missing {missing}; "
                       f"it has {sorted(state)[:8]}")
    W_conv, W_D = state["W_conv"].float(), state["W_D"].float()
    d_sae, d_model, ks, _ = W_conv.shape
    if W_D.shape[0] != d_sae:
        raise ValueError(f"W_conv has {d_sae} features but W_D has {W_D.shape[0]}")
    top_k = k if k is not None else config.get("top_k")
    if top_k is None:
        raise ValueError(f"{path} has no config.json with top_k: pass k= (the paper's transcoder uses k=64)")
    hook_in, hook_out = config.get("hook_point_in"), config.get("hook_point_out")
    cfg = TranscoderConfig(d_in=d_model, d_out=W_D.shape[1], d_sae=d_sae, k=int(top_k), kernel_size=ks,
                           target="input" if hook_in is not None and hook_in == hook_out else "output",
                           decoder_norm_topk=bool(config.get("sparsity_include_decoder_norm", True)))
    model = Transcoder(cfg)
    with torch.no_grad():
        model.W_enc_FCkk.copy_(W_conv)
        model.b_enc_F.copy_(state["b_conv"].float())
        model.W_dec_FC.copy_(W_D)
        model.b_dec_C.copy_(state["b_D"].float() if "b_D" in state else torch.zeros(cfg.d_out))
    norms = {key.split(".", 1)[1]: value for key, value in state.items()
             if key.startswith("dataset_average_activation_norm.")}
    if config.get("norm_activation", "dataset-wise") == "dataset-wise" and norms:
        if hook_in in norms and hook_out in norms:
            norm_in, norm_out = norms[hook_in].item(), norms[hook_out].item()
        elif len(norms) == 1:
            norm_in = norm_out = next(iter(norms.values())).item()
        else:
            raise ValueError(f"cannot match the dataset norms {sorted(norms)} to the hook points "
                             f"({hook_in!r}, {hook_out!r}): fix hook_point_in / hook_point_out in config.json")
        if math.isfinite(norm_in) and math.isfinite(norm_out):  # lm_saes writes empty scalars when unset
            model.set_dataset_norm_(norm_in, norm_out)
            model.fold_dataset_norm_()
    return model.eval()

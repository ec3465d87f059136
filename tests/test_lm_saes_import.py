"""Import of the authors' lm_saes CNN transcoder checkpoint (the authors' release), tested
on a random checkpoint written in that layout against a re-statement of the authors'
encode/decode (lm_saes cnnsae.py, with dataset-norm folding as in from_config)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from klsc_lib.sae.lm_saes_import import load_lm_saes_transcoder

HOOK_IN, HOOK_OUT = "stages.2.20.hook_resid_pre", "stages.2.20.hook_resid_post"
D, F, K = 12, 40, 5


def _random_checkpoint(folder, norm_in=37.0, norm_out=52.0, with_config=True):
    g = torch.Generator().manual_seed(0)
    state = {
        "W_conv": torch.randn(F, D, 7, 7, generator=g) * 0.05,
        "b_conv": torch.randn(F, generator=g) * 0.1,
        "W_D": torch.randn(F, D, generator=g) * torch.rand(F, 1, generator=g) * 2,  # non-unit rows
        "b_D": torch.randn(D, generator=g),
        "layer_norm_weight": torch.ones(D), "layer_norm_bias": torch.zeros(D),
        f"dataset_average_activation_norm.{HOOK_IN}": torch.tensor(norm_in),
        f"dataset_average_activation_norm.{HOOK_OUT}": torch.tensor(norm_out),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "sae_weights.safetensors"))
    if with_config:
        (folder / "config.json").write_text(json.dumps({
            "sae_type": "cnnsae", "d_model": D, "expansion_factor": F / D, "top_k": K, "act_fn": "topk",
            "hook_point_in": HOOK_IN, "hook_point_out": HOOK_OUT, "norm_activation": "dataset-wise",
            "sparsity_include_decoder_norm": True, "use_decoder_bias": True}))
    return state


def _authors_forward(state, x_BCHW):
    """lm_saes CNNSparseAutoEncoder at inference (after standardize_parameters_of_dataset_norm)."""
    f_in = math.sqrt(D) / state[f"dataset_average_activation_norm.{HOOK_IN}"].item()
    f_out = math.sqrt(D) / state[f"dataset_average_activation_norm.{HOOK_OUT}"].item()
    b_conv, W_D, b_D = state["b_conv"] / f_in, state["W_D"] * f_in / f_out, state["b_D"] / f_out
    b, d, h, w = x_BCHW.shape
    x_seq = x_BCHW.flatten(2).transpose(1, 2)  # b (h w) d, as their operator feeds it
    x_img = x_seq.transpose(1, 2).reshape(b, d, h, w)
    pre = torch.nn.functional.conv2d(x_img, state["W_conv"], b_conv, padding=3).flatten(2).transpose(1, 2)
    norm = W_D.norm(dim=1)
    scaled = pre * norm
    idx = scaled.topk(K, dim=-1).indices
    acts = torch.zeros_like(scaled).scatter(-1, idx, scaled.gather(-1, idx)) / norm
    recon = acts @ W_D + b_D
    as_map = lambda t: t.transpose(1, 2).reshape(b, -1, h, w)
    return as_map(acts), as_map(pre), as_map(recon)


def test_import_reproduces_the_authors_encode_and_decode(tmp_path):
    state = _random_checkpoint(tmp_path / "ckpt")
    model = load_lm_saes_transcoder(tmp_path / "ckpt")
    assert model.cfg.k == K and model.cfg.kernel_size == 7 and model.cfg.target == "output"
    x = torch.randn(3, D, 6, 6) * 10
    acts_ref, pre_ref, recon_ref = _authors_forward(state, x)
    with torch.no_grad():
        acts, pre = model.encode(x, return_pre=True)
        recon = model(x)
    torch.testing.assert_close(pre, pre_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts, acts_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(recon, recon_ref, rtol=1e-4, atol=1e-4)
    assert ((acts != 0).sum(dim=1) == K).all()


def test_weights_file_without_config_needs_k(tmp_path):
    _random_checkpoint(tmp_path / "ckpt", with_config=False)
    with pytest.raises(ValueError, match="pass k="):
        load_lm_saes_transcoder(tmp_path / "ckpt" / "sae_weights.safetensors")


def test_missing_or_foreign_checkpoints_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="sae_weights"):
        load_lm_saes_transcoder(tmp_path)
    save_file({"W_E": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(KeyError, match="not an lm_saes CNN transcoder"):
        load_lm_saes_transcoder(tmp_path / "other.safetensors", k=1)

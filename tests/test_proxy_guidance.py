"""DiffExplainer-style proxy guidance (paper App J.3.2, eq. 20): an embedding optimised
through a differentiable DDIM chain, on a tiny class-conditional UNet2DModel and on
tiny random Stable Diffusion components saved as a diffusers folder."""

from __future__ import annotations

import json
import string

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

from _finite_differences import assert_matches_finite_differences
from klsc_lib.baselines.proxy_guidance import (DDIMChain, class_embedding_table, classifier_free, ddim_x0, load_sd15,
                                               proxy_guidance, unet2d_eps_given_embedding)
from klsc_lib.diffusion.samplers import sample_ddim
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.worlds.miniworld.data import IMAGE_SIZE
from klsc_lib.weights import WeightsFileError

SCHEDULE = DDPMSchedule(100, 1e-3, 0.05)
SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    """A tiny class-conditional diffusers UNet (10 classes + a null label, with attention):
    the layout ``unet2d_eps_given_embedding`` adapts (any UNet2DModel built with
    ``num_class_embeds``)."""
    torch.manual_seed(0)
    return UNet2DModel(sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16, 16), norm_num_groups=4, num_class_embeds=11,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")).eval().requires_grad_(False)


def red_mean(x_BCHW: torch.Tensor) -> torch.Tensor:
    return x_BCHW[:, 0].mean(dim=(1, 2))


def test_hooked_embedding_equals_the_class_label(unet):
    """Feeding row y of the table as the embedding reproduces class_labels=y."""
    x, t = torch.randn(3, *SHAPE), torch.tensor([5, 50, 90])
    labels = torch.tensor([0, 2, 10])  # 10: the null label
    eps = unet2d_eps_given_embedding(unet)(x, t, class_embedding_table(unet)[labels])
    assert torch.allclose(eps, unet(x, t, class_labels=labels).sample, atol=1e-5)


def test_ddim_chain_matches_the_project_sampler(unet):
    """ddim_x0 is the same eta = 0 DDIM as klsc_lib.diffusion.samplers.sample_ddim."""
    chain = DDIMChain.from_schedule(SCHEDULE, 6)
    x_T = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    emb = class_embedding_table(unet)[torch.tensor([1, 3])]
    ours = ddim_x0(unet2d_eps_given_embedding(unet), x_T, emb, chain, clip_x0=(-1, 1))
    labels = torch.tensor([1, 3])
    ref = sample_ddim(lambda x, t: unet(x, t, class_labels=labels).sample, x_T, SCHEDULE, timesteps=chain.timesteps,
                      clip_x0=(-1, 1), disable=True)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_embedding_gradient_equals_finite_differences(unet):
    """d psi(x_0(emb)) / d emb through the whole DDIM chain (checkpointed), against central
    differences along random directions per sample, in float64."""
    import copy

    net = copy.deepcopy(unet).double()
    chain = DDIMChain.from_schedule(SCHEDULE, 5)
    x_T = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps_given = unet2d_eps_given_embedding(net)
    grad = assert_matches_finite_differences(
        lambda e: red_mean(ddim_x0(eps_given, x_T, e, chain, use_checkpoint=True)),
        class_embedding_table(net).mean(dim=0).expand(2, -1), seed=4)
    assert (grad.abs().sum(dim=1) > 0).all()


def test_psi_rises_over_optimisation(unet):
    history = []
    emb0 = class_embedding_table(unet).mean(dim=0).expand(3, -1)
    res = proxy_guidance(red_mean, unet2d_eps_given_embedding(unet), emb0, SHAPE, DDIMChain.from_schedule(SCHEDULE, 5),
                         steps=15, lr=0.2, seeds=[0, 1, 2], callback=lambda d: history.append(d["psi_B"]),
                         disable=True)
    assert (res.psi_B > history[0] + 0.05).all()
    assert res.x_BCHW.shape == (3, *SHAPE) and not torch.equal(res.emb, emb0)


def test_batch_equals_single_runs(unet):
    emb0 = class_embedding_table(unet)[torch.tensor([0, 4])]
    chain = DDIMChain.from_schedule(SCHEDULE, 4)
    eps = unet2d_eps_given_embedding(unet)
    batch = proxy_guidance(red_mean, eps, emb0, SHAPE, chain, steps=3, lr=0.1, seeds=[7, 8], disable=True)
    for i, seed in enumerate([7, 8]):
        single = proxy_guidance(red_mean, eps, emb0[i:i + 1], SHAPE, chain, steps=3, lr=0.1, seeds=[seed],
                                disable=True)
        assert torch.allclose(batch.x_BCHW[i], single.x_BCHW[0], atol=1e-4)


def test_one_prompt_per_unit_over_fresh_noise(unet):
    """Two prompts of three samples each: one embedding row per prompt, the samples of a prompt
    differ (their own noise), fresh noise redraws each stream per step (so the result differs
    from fixed noise), and one prompt's samples do not depend on the other prompt."""
    emb0 = class_embedding_table(unet)[torch.tensor([0, 4])]
    chain, eps = DDIMChain.from_schedule(SCHEDULE, 4), unet2d_eps_given_embedding(unet)
    run = lambda e, seeds, fresh: proxy_guidance(red_mean, eps, e, SHAPE, chain, steps=3, lr=0.1, seeds=seeds,  # noqa: E731
                                                 samples_per_embedding=3, fresh_noise=fresh, disable=True)
    both = run(emb0, list(range(6)), True)
    assert both.emb.shape == emb0.shape and both.x_BCHW.shape == (6, *SHAPE)
    assert not torch.allclose(both.x_BCHW[0], both.x_BCHW[1])
    assert not torch.allclose(both.x_BCHW, run(emb0, list(range(6)), False).x_BCHW)
    second = run(emb0[1:], [3, 4, 5], True)
    assert torch.allclose(both.x_BCHW[3:], second.x_BCHW, atol=1e-4)


def test_classifier_free_guidance_is_the_linear_extrapolation(unet):
    x, t = torch.randn(2, *SHAPE), torch.tensor([10, 60])
    table = class_embedding_table(unet)
    eps, null_of = unet2d_eps_given_embedding(unet), lambda b: table[10].expand(b, -1)
    emb = table[torch.tensor([2, 3])]
    cond, null = eps(x, t, emb), eps(x, t, null_of(2))
    torch.testing.assert_close(classifier_free(eps, null_of, 4.0)(x, t, emb), null + 4 * (cond - null))
    assert torch.equal(classifier_free(eps, null_of, 1.0)(x, t, emb), cond)


def test_nan_psi_names_the_step(unet):
    calls = {"n": 0}

    def energy(x_BCHW):
        calls["n"] += 1
        return red_mean(x_BCHW) * (torch.nan if calls["n"] > 2 else 1.0)

    emb0 = class_embedding_table(unet)[:2]
    with pytest.raises(FloatingPointError, match="step 2"):
        proxy_guidance(energy, unet2d_eps_given_embedding(unet), emb0, SHAPE, DDIMChain.from_schedule(SCHEDULE, 3),
                       steps=5, disable=True)


# ------------------------------------------------------------------ Stable Diffusion 1.5 path
@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A diffusers SD folder of tiny random components and a letter-level CLIP tokenizer."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("sd15")
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                         norm_num_groups=4, attention_head_dim=4).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16).save_pretrained(root / "vae")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False).save_pretrained(root / "scheduler")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=32,
                               pad_token="<|endoftext|>").save_pretrained(root / "tokenizer")
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=32,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModel(config).save_pretrained(root / "text_encoder")
    return root


def test_sd15_soft_prompt_runs_end_to_end(sd_folder):
    sd = load_sd15(sd_folder, num_soft_tokens=8, guidance_scale=3.0)
    assert sd.ids_L.shape == (32,) and sd.soft_start == 1 + 11  # <bos> + "a picture of a" as 11 letters
    emb0 = sd.initial_embedding(2)
    history = []
    res = proxy_guidance(red_mean, sd.eps_given_embedding, emb0, sd.latent_shape, sd.chain(3), steps=2, lr=1e-2,
                         decode=sd.decode, seeds=[0, 1], callback=lambda d: history.append(d["psi_B"]), disable=True)
    assert res.x_BCHW.shape == (2, 3, 16, 16) and res.x_BCHW.abs().max() <= 1
    assert res.emb.shape == (2, 8, 32) and not torch.equal(res.emb, emb0)
    assert len(history) == 2 and torch.isfinite(res.psi_B).all()


def test_sd15_gradient_reaches_only_the_soft_tokens(sd_folder):
    sd = load_sd15(sd_folder, guidance_scale=1.0)
    soft = sd.initial_embedding(1).requires_grad_(True)
    z = ddim_x0(sd.eps_given_embedding, torch.randn(1, *sd.latent_shape), soft, sd.chain(2))
    red_mean(sd.decode(z)).sum().backward()
    assert torch.isfinite(soft.grad).all() and (soft.grad.abs().sum(dim=-1) > 0).all()
    assert all(p.grad is None for p in sd.text_encoder.parameters())


def test_missing_sd15_folder_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KLSC_SD15", raising=False)
    with pytest.raises(WeightsFileError, match=r"\$KLSC_SD15 is unset"):
        load_sd15()
    with pytest.raises(WeightsFileError, match="folder not found") as err:
        load_sd15(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "KLSC_SD15" in str(err.value)
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    with pytest.raises(WeightsFileError, match="missing vae/, text_encoder/, tokenizer/, scheduler/"):
        load_sd15(tmp_path / "partial")

"""The World contract (klsc_lib.worlds.loader): conditional prior, dispatch, record_world,
and the mini-world's backbone wiring (preprocess, hook point)."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
import torch

from klsc_lib.worlds.miniworld import MINIWORLD, MiniWorldConfig
from klsc_lib.worlds.miniworld.data import FACTOR_NAMES, MiniWorldDataset
from klsc_lib.worlds.miniworld.models import build_convnext, build_unet, hooked_backbone, priors
from klsc_lib.report import Report
from klsc_lib.interfaces import ConditionalPrior, DDPMSchedule, World
from klsc_lib.viz.world import record_world
from klsc_lib.worlds.miniworld.quality import QUALITY_TARGETS, targets_met
from klsc_lib.worlds import load_world


def untrained_world(n: int = 16) -> World:
    cfg = MINIWORLD["smoke"]
    prior, cond_prior, factor_prior = priors(build_unet(cfg.prior).eval(), cfg.prior, "untrained")
    data = MiniWorldDataset(n, "test", 0)
    return World("untrained", hooked_backbone(build_convnext(cfg.backbone).eval(), cfg.backbone, "untrained"),
                 prior, cond_prior, data, data, FACTOR_NAMES, 10,
                 quality={"backbone_test_accuracy": 0.5, "prior_class_histogram": [1, 2],
                          "samples_BCHW": torch.zeros(8, 3, 16, 16)}, factor_prior=factor_prior)


def test_conditional_prior_given_fixes_the_labels():
    seen = {}

    def eps(x, t_B, y_B):
        seen["y"] = y_B
        return x * 0 + y_B.reshape(-1, 1).float()

    cond = ConditionalPrior(eps, DDPMSchedule(), (1,), 3)
    prior = cond.given(torch.tensor([2, 0]))
    out = prior.eps(torch.zeros(2, 1), torch.tensor([5, 5]))
    assert torch.equal(out, torch.tensor([[2.0], [0.0]])) and torch.equal(seen["y"], torch.tensor([2, 0]))
    assert prior.schedule is cond.schedule and prior.sample_shape == (1,)
    with pytest.raises(ValueError, match="class ids"):
        cond.given(torch.tensor([3]))
    with pytest.raises(ValueError, match="labels"):
        prior.eps(torch.zeros(3, 1), torch.tensor([1, 1, 1]))


def test_unconditional_prior_is_the_factor_prior_given_no_factor():
    world = untrained_world()
    x, t_B = torch.randn(2, 3, 16, 16), torch.tensor([3, 70])
    null = world.factor_prior.given({}, 2).eps(x, t_B)
    torch.testing.assert_close(world.prior.eps(x, t_B), null, rtol=0, atol=1e-6)  # guidance: eps_u + w * 0
    assert not torch.allclose(world.cond_prior.given(torch.tensor([1, 1])).eps(x, t_B), null)


def test_gradients_reach_the_image_through_prior_and_hook():
    """Guidance (EnergyDPS, Algorithm 1, App G) differentiates eps and the hooked block w.r.t. x_t."""
    world = untrained_world()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    world.prior.eps(x, torch.tensor([10, 10])).square().sum().backward()
    assert x.grad.abs().sum() > 0
    x.grad = None
    world.backbone.hook_io(x)[0].sum().backward()
    assert x.grad.abs().sum() > 0


def test_load_world_rejects_an_unknown_spec():
    with pytest.raises(TypeError, match="MiniWorldConfig"):
        load_world({"name": "miniworld"})


def test_preprocess_matches_the_papers_normalisation_and_keeps_gradients():
    pre = hooked_backbone(build_convnext(MINIWORLD["default"].backbone), MINIWORLD["default"].backbone, "x").preprocess
    x = torch.zeros(2, 3, 16, 16, requires_grad=True)  # 0 in [-1, 1] is 0.5 in [0, 1]
    out = pre(x)
    assert out.shape == (2, 3, 32, 32)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])  # ImageNet
    assert torch.allclose(out[0, :, 5, 7], expected)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="3, H, W"):
        pre(torch.zeros(2, 1, 16, 16))


def test_default_backbone_hooks_the_input_of_a_third_stage_block():
    cfg = MINIWORLD["default"].backbone
    backbone = hooked_backbone(build_convnext(cfg).eval(), cfg, "default")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    block_in, block_out = backbone.hook_io(x)
    assert block_in.shape == block_out.shape == (2, cfg.dims[2], 8, 8)
    assert cfg.hook_block.startswith("stages.2.blocks.")
    # the hooked input is the output of the previous block
    model = backbone.model
    h = model.stages[1](model.stages[0](model.stem(backbone.preprocess(x))))
    h = model.stages[2].downsample(h)
    for block in model.stages[2].blocks[: int(cfg.hook_block.rsplit(".", 1)[1])]:
        h = block(h)
    assert torch.allclose(block_in, h, atol=1e-6)
    assert backbone(x).shape == (2, 10)


def test_record_world_writes_metrics_and_a_grid(tmp_path):
    world = untrained_world()
    report = Report("00_test", tmp_path, "smoke", 0, "cpu")
    record_world(report, world)
    report.write()
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["world/backbone_test_accuracy"]["ours"] == 0.5
    assert metrics["world/prior_class_histogram"]["ours"] == [1, 2]
    assert metrics["world/name"]["ours"] == "untrained"
    assert not any("samples" in k for k in metrics)
    image = matplotlib.image.imread(tmp_path / "world.png")
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two panels side by side


def test_record_world_turns_the_quality_targets_into_claims_of_kind_ours(tmp_path):
    world = untrained_world()
    measured = {"kid_prior_vs_test": 0.04, "kid_prior_vs_test_std": 0.02, "kid_train_vs_test_reference": 0.01,
                "prior_mean_max_prob": 0.9, "prior_mean_max_prob_se": 0.004, "test_mean_max_prob": 0.98,
                "cond_prior_digit_accuracy": 1.0, "prior_factor_tv_to_test": {"digit": 0.05, "background": 0.12},
                "prior_factor_tv_to_test_sd": {"digit": 0.01, "background": 0.02}, "num_quality_samples": 1000}
    world.quality = {**measured, "quality_targets": QUALITY_TARGETS, "quality_targets_met": targets_met(measured)}
    report = Report("00_test", tmp_path, "default", 0, "cpu")
    record_world(report, world)
    assert report.claims == []  # only where asked
    record_world(report, world, quality_claims=True)
    verdicts = {c.id: (c.holds, c.kind) for c in report.claims}
    assert verdicts == {"world_prior_kid": (True, "ours"), "world_prior_recognised": (False, "ours"),
                        "world_cond_digits": (True, "ours"), "world_factor_marginals": (False, "ours")}
    assert report.claims[0].ours == {"kid": 0.04, "sd": 0.02, "train_vs_test": 0.01}
    assert report.claims[1].ours["se"] == 0.004
    assert report.claims[3].ours["largest"] == {"factor": "background", "tv": 0.12, "bootstrap_sd": 0.02}

    report = Report("00_test", tmp_path, "default", 0, "cpu")
    record_world(report, untrained_world(), quality_claims=True)  # a world without targets records no claim
    assert report.claims == []


def test_config_validation():
    with pytest.raises(ValueError, match="smaller than a training batch"):
        MiniWorldConfig(name="x", n_train=10)

"""Picture of a world: held-out images beside the prior samples its quality was measured on."""

from __future__ import annotations

import math

import torch

from klsc_lib.interfaces import World


def _image_grid(images_BCHW: torch.Tensor, ncol: int) -> torch.Tensor:
    """Tile images in [-1, 1] into one (H', W', C) array in [0, 1] with 1-pixel gaps."""
    b, c, h, w = images_BCHW.shape
    nrow = math.ceil(b / ncol)
    grid = torch.ones(c, nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i, img in enumerate(images_BCHW.detach().float().cpu().clamp(-1, 1)):
        r, q = divmod(i, ncol)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = (img + 1) / 2
    return grid.permute(1, 2, 0).squeeze(-1)


def _largest_tv(quality: dict) -> dict:
    """The factor whose marginal is farthest from the data's, with its bootstrap SD, then
    every factor's TV."""
    tv = quality["prior_factor_tv_to_test"]
    worst = max(tv, key=tv.get)
    return {"largest": {"factor": worst, "tv": tv[worst], "bootstrap_sd": quality["prior_factor_tv_to_test_sd"][worst]},
            "all": tv}


def _record_quality_claims(report, quality: dict) -> None:
    """The mini-world's quality targets (``quality["quality_targets"]``, set by the
    builder) as claims of kind ``ours``, with the verdicts measured when it was built."""
    targets, met = quality.get("quality_targets"), quality.get("quality_targets_met")
    if targets is None or met is None:
        return
    ref = "App J.4 (the prior EnergyDPS guides)"
    n = quality["num_quality_samples"]
    report.claim("world_prior_kid", ref, f"KID of {n} unconditional prior samples vs held-out images (backbone "
                 f"features) <= {targets['kid_prior_vs_test_max']}",
                 {"kid": quality["kid_prior_vs_test"], "sd": quality["kid_prior_vs_test_std"],
                  "train_vs_test": quality["kid_train_vs_test_reference"]}, None, met["kid_prior_vs_test"],
                 kind="ours", threshold=targets["kid_prior_vs_test_max"])
    report.claim("world_prior_recognised", ref, "the backbone's mean max-probability on prior samples >= "
                 f"{targets['prior_mean_max_prob_min']}",
                 {"samples": quality["prior_mean_max_prob"], "se": quality["prior_mean_max_prob_se"],
                  "real_held_out": quality["test_mean_max_prob"]}, None,
                 met["prior_mean_max_prob"], kind="ours", threshold=targets["prior_mean_max_prob_min"])
    report.claim("world_cond_digits", ref, "digit-conditional samples show the asked digit (factor classifier) >= "
                 f"{targets['cond_prior_digit_accuracy_min']:.0%} of the time",
                 quality["cond_prior_digit_accuracy"], None, met["cond_prior_digit_accuracy"], kind="ours",
                 threshold=targets["cond_prior_digit_accuracy_min"])
    report.claim("world_factor_marginals", ref, "every factor's marginal over prior samples (factor classifier) is "
                 f"within TV {targets['prior_factor_tv_max']} of the held-out images'",
                 _largest_tv(quality), None, met["prior_factor_tv"], kind="ours",
                 threshold=targets["prior_factor_tv_max"])


def record_world(report, world: World, num_images: int = 32, quality_claims: bool = False) -> None:
    """Write ``world.quality`` as metrics (prefixed ``world/``; tensors skipped), with
    ``quality_claims`` its quality targets as claims of kind ``ours`` (where the world has
    some; one notebook records them) and one PNG (``world``) into a
    :class:`klsc_lib.report.Report`: held-out world images beside
    the prior samples the quality was measured on (``quality["samples_BCHW"]`` and
    ``quality["cond_samples_BCHW"]``, where the builder kept them)."""
    import matplotlib.pyplot as plt

    report.metric("world/name", world.name)
    for key, value in world.quality.items():
        if not isinstance(value, torch.Tensor):
            report.metric(f"world/{key}", value)
    if quality_claims:
        _record_quality_claims(report, world.quality)
    n = min(num_images, len(world.test))
    panels = []
    if n:  # the paper world has no images unless an image folder is configured
        panels.append(("world images (held-out test set)", torch.stack([world.test[i][0] for i in range(n)]), 8))
    n = n or num_images
    if isinstance(world.quality.get("samples_BCHW"), torch.Tensor):
        panels.append((f"unconditional prior samples\n({world.prior.name})", world.quality["samples_BCHW"][:n], 8))
    if isinstance(world.quality.get("cond_samples_BCHW"), torch.Tensor) and world.cond_prior is not None:
        k = world.cond_prior.num_classes
        panels.append((f"class-conditional samples\n(column j: class j of {k})",
                       world.quality["cond_samples_BCHW"][: (n // k) * k or k], k))
    if not panels:
        return
    grids = [(title, _image_grid(batch, ncol=ncol).numpy()) for title, batch, ncol in panels]
    cell = 0.42 / 17  # inches per grid pixel: every panel shows its images at the same scale
    widths = [g.shape[1] for _, g in grids]
    fig, axes = plt.subplots(1, len(grids), figsize=(cell * sum(widths) + 0.3 * len(grids),
                                                     cell * max(g.shape[0] for _, g in grids) + 1.0),
                             squeeze=False, width_ratios=widths, layout="constrained")
    for ax, (title, grid) in zip(axes[0], grids):
        ax.imshow(grid, interpolation="nearest", cmap="gray")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"World {world.name!r}")
    report.savefig(fig, "world")
    plt.close(fig)

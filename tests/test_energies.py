"""Intrinsic scores as composable Energy objects (paper App J.2 eq. 213, App L.1, L.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from torch import nn

from klsc_lib.energies import (Energy, angular_energy, capped_objective, central_window, class_logit, feature_score,
                               neuron_score, reduce_map, reference_energy)
from klsc_lib.interfaces import HookedBackbone
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from tests._tiny_convnext import tiny_backbone


class _Head(nn.Module):
    """Identity block (the hook) followed by a linear head on the channel means."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.block = nn.Identity()
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        return self.head(self.block(x).mean(dim=(2, 3)))


def identity_backbone(channels: int = 3, classes: int = 4) -> HookedBackbone:
    torch.manual_seed(0)
    return HookedBackbone(_Head(channels, classes), "block", preprocess=lambda x: x, name="identity")


def channel_reader(d_in: int = 3, d_sae: int = 5, k: int = 1) -> Transcoder:
    """1x1 encoder: feature f reads channel f % d_in with weight (1 + f // d_in) and bias 0.1 f."""
    tc = Transcoder(TranscoderConfig(d_in=d_in, d_out=d_in, d_sae=d_sae, k=k, kernel_size=1))
    with torch.no_grad():
        tc.W_enc_FCkk.zero_()
        for f in range(d_sae):
            tc.W_enc_FCkk[f, f % d_in] = 1.0 + f // d_in
        tc.b_enc_F.copy_(0.1 * torch.arange(d_sae, dtype=torch.float32))
    return tc


def test_energy_algebra_values_and_names():
    a, r = angular_energy(), reference_energy(torch.tensor([1.0, -1.0]))
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    ax, rx = a(x), r(x)
    combo = 0.5 * a + r * 2 - (-a)
    torch.testing.assert_close(combo(x), 0.5 * ax + 2 * rx + ax)
    assert (0.5 * a + r).name == "0.5*angular+reference"
    assert (3 * (a + r)).name == "3*(angular+reference)"
    assert (a - r).name == "angular-reference" and (-a).name == "-angular"
    with pytest.raises(ValueError, match=r"one value per sample, shape \(7,\)"):
        Energy(lambda z: z, "bad")(x)


def test_central_window_is_the_middle_half_of_each_side():
    for side, (lo, hi) in {16: (4, 12), 8: (2, 6), 4: (1, 3)}.items():
        m = torch.zeros(1, side, side)
        m[0, lo:hi, lo:hi] = 1.0
        w = central_window(m, 0.5)
        assert w.shape == (1, side // 2, side // 2) and bool((w == 1).all())


def test_reductions_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 8, 8))
    c = a[:, 2:6, 2:6].reshape(3, -1)
    t = torch.from_numpy(a)
    torch.testing.assert_close(reduce_map(t, "max").numpy(), c.max(1))
    torch.testing.assert_close(reduce_map(t, "mean").numpy(), np.maximum(c, 0).mean(1))
    torch.testing.assert_close(reduce_map(t, "mix", alpha=0.7).numpy(), 0.7 * c.max(1) + 0.3 * np.maximum(c, 0).mean(1))
    torch.testing.assert_close(reduce_map(t, "lse", temperature=0.2).numpy(), 0.2 * logsumexp(np.maximum(c, 0) / 0.2, 1))
    with pytest.raises(ValueError, match="reduction"):
        reduce_map(t, "median")


def test_feature_score_is_the_mix_of_the_pre_topk_map():
    """Feature 0 reads channel 0 (weight 1, bias 0); feature 3 reads it with weight 2, so with
    k = 1 TopK keeps feature 3 wherever channel 0 is positive and feature 0's code is 0 there."""
    backbone, tc = identity_backbone(), channel_reader()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    psi = feature_score(backbone, tc, 0)
    centre = x[:, 0, 4:12, 4:12].reshape(2, -1).numpy()
    hand = 0.7 * centre.max(1) + 0.3 * np.maximum(centre, 0).mean(1)
    torch.testing.assert_close(psi(x).detach().numpy(), hand)
    codes = tc.encode(x)[:, 0, 4:12, 4:12].detach()
    assert float(codes.clamp(min=0).max()) == 0.0 and float(psi(x).detach().min()) > 0  # TopK would give psi = 0


def test_per_sample_features_equal_one_feature_at_a_time_and_encode():
    backbone = tiny_backbone()
    tc = Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=12, k=3, kernel_size=3),
                    generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    units = torch.tensor([5, 0, 11, 5])
    mixed = feature_score(backbone, tc, units, reduction="max", center_frac=1.0)(x)
    single = torch.stack([feature_score(backbone, tc, int(u), reduction="max", center_frac=1.0)(x[i:i + 1])[0]
                          for i, u in enumerate(units)])
    torch.testing.assert_close(mixed, single)
    pre = tc.encode(backbone.hook_io(x)[0], return_pre=True)[1]
    torch.testing.assert_close(mixed, pre[torch.arange(4), units].flatten(1).amax(1))


def test_unknown_feature_ids_are_rejected_before_running():
    backbone, tc = identity_backbone(), channel_reader()
    with pytest.raises(ValueError, match=r"unknown feature ids \[5, 9\]: valid ids are in \[0, 5\)"):
        feature_score(backbone, tc, torch.tensor([1, 5, 9]))
    with pytest.raises(ValueError, match="unknown feature ids"):
        feature_score(backbone, tc, -1)
    with pytest.raises(ValueError, match="2 feature ids for a batch of 3"):
        feature_score(backbone, tc, torch.tensor([0, 1]))(torch.zeros(3, 3, 16, 16))


def test_neuron_score_and_class_logit():
    backbone = identity_backbone()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    got = neuron_score(backbone, torch.tensor([2, 0, 1]), reduction="max")(x)
    torch.testing.assert_close(got, torch.stack([x[0, 2, 2:6, 2:6].max(), x[1, 0, 2:6, 2:6].max(),
                                                 x[2, 1, 2:6, 2:6].max()]))
    with pytest.raises(ValueError, match=r"valid ids are in \[0, 3\)"):
        neuron_score(backbone, 3)(x)
    logits = backbone(x)
    torch.testing.assert_close(class_logit(backbone, 2)(x), logits[:, 2])
    assert class_logit(backbone, 2).name == "class_logit[2]"
    assert (0.5 * neuron_score(backbone, 1) + class_logit(backbone, 2)).name == "0.5*neuron[1]+class_logit[2]"


def test_caps_have_their_stated_gradients():
    psi = torch.tensor([0.5, 1.5, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    cap = torch.tensor([1.0, 1.0, 3.5, 3.5], dtype=torch.float64)
    grads = {m: torch.autograd.grad(capped_objective(psi, cap, m, kappa=2.0).sum(), psi)[0]
             for m in ("clip", "hinge", "target")}
    p, c = psi.detach(), cap
    torch.testing.assert_close(grads["clip"], (p < c).double())
    torch.testing.assert_close(grads["hinge"], 1 - 4.0 * (p - c).clamp(min=0))
    torch.testing.assert_close(grads["target"], -2 * (p - c))
    # finite differences of the hinge objective
    h = 1e-6
    fd = (capped_objective(p + h, cap, "hinge", 2.0) - capped_objective(p - h, cap, "hinge", 2.0)) / (2 * h)
    torch.testing.assert_close(fd, grads["hinge"], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cap mode"):
        capped_objective(p, cap, "soft")


def _direct_pre_activation(w_Ckk: np.ndarray, bias: float, in_scale: float, x_CHW: np.ndarray) -> np.ndarray:
    """The encoder row as a sum over input channels and kernel offsets, written out: out[h, w] =
    b + sum_{c,i,j} W[c, i, j] s_in x_pad[c, h + i, w + j] (zero padding k // 2; cross-correlation)."""
    k = w_Ckk.shape[-1]
    pad = np.pad(x_CHW * in_scale, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    windows_CHWkk = np.lib.stride_tricks.sliding_window_view(pad, (k, k), axis=(1, 2))
    return bias + np.einsum("chwij,cij->hw", windows_CHWkk, w_Ckk)


def test_feature_score_equals_a_direct_convolution_of_the_encoder_on_the_hooked_activations():
    """psi of mixed features per sample against an independent computation: the block input
    captured by a forward hook of our own, the encoder row applied by explicit sums, and the
    mix reduction (0.7 max + 0.3 mean ReLU over the central half of each side, eq. 213)."""
    backbone = tiny_backbone()
    tc = Transcoder(TranscoderConfig(d_in=32, d_out=32, d_sae=12, k=3, kernel_size=3),
                    generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tc.b_enc_F.copy_(torch.linspace(-0.2, 0.3, 12))
    tc.set_dataset_norm_(mean_in_norm=2.5, mean_out_norm=1.0)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    units = torch.tensor([7, 2, 7])
    captured = {}
    handle = backbone.model.get_submodule(backbone.block_name).register_forward_hook(
        lambda _m, inputs, _out: captured.setdefault("in", inputs[0].detach()))
    with torch.no_grad():
        backbone.model(x)
    handle.remove()
    block_in = captured["in"].double().numpy()
    w, b, s = tc.W_enc_FCkk.detach().double().numpy(), tc.b_enc_F.detach().double().numpy(), float(tc.in_scale)
    expected = []
    for i, u in enumerate(units.tolist()):
        pre_HW = _direct_pre_activation(w[u], b[u], s, block_in[i])
        side = pre_HW.shape[0]
        centre = pre_HW[side // 4: 3 * side // 4, side // 4: 3 * side // 4]
        expected.append(0.7 * centre.max() + 0.3 * np.maximum(centre, 0).mean())
    assert side % 4 == 0
    with torch.no_grad():
        got = feature_score(backbone, tc, units)(x)
    np.testing.assert_allclose(got.numpy(), np.array(expected), rtol=1e-5, atol=1e-5)

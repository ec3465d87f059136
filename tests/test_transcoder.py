"""The CNN transcoder (paper App C.1) and its trainer (App J.1), with the optional AuxK loss."""

from __future__ import annotations

import pytest
import torch

torch.manual_seed(0)

from _tiny_convnext import RandomImages, tiny_backbone
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig, spliced, topk_per_position
from klsc_lib.sae.training import (
    TrainConfig, auxk_loss, classification_accuracy, evaluate_transcoder, fvu, init_from_sample_, lr_factor,
    train_transcoder,
)


def _random_transcoder(d_in=6, d_out=5, d_sae=24, k=4, kernel_size=3, seed=0, **kw) -> Transcoder:
    return Transcoder(TranscoderConfig(d_in, d_out, d_sae, k, kernel_size, **kw), generator=torch.Generator().manual_seed(seed))


def _signed_identity_sae(c: int, kernel_size: int = 7) -> Transcoder:
    """Plain SAE with d_sae = 2C, k = C: feature i reads +x_i, feature C+i reads -x_i
    (centre tap of the conv); the decoder rows are +e_i / -e_i. TopK keeps |x_i| for
    every channel, so the reconstruction is exact although half the codes are zero."""
    model = Transcoder(TranscoderConfig(c, c, 2 * c, c, kernel_size, target="input"))
    eye = torch.eye(c)
    with torch.no_grad():
        model.W_enc_FCkk.zero_()
        model.W_enc_FCkk[:, :, kernel_size // 2, kernel_size // 2] = torch.cat([eye, -eye])
        model.W_dec_FC.copy_(torch.cat([eye, -eye]))
    return model


def test_topk_keeps_exactly_k_largest_per_position():
    model = _random_transcoder()
    x = torch.randn(3, 6, 5, 7)
    acts, pre = model.encode(x, return_pre=True)
    assert acts.shape == pre.shape == (3, 24, 5, 7)
    assert ((acts != 0).sum(dim=1) == 4).all()
    kept = acts != 0
    # every kept pre-activation is >= every dropped one at the same position, and kept values are the pre-activations
    min_kept = pre.masked_fill(~kept, torch.inf).amin(dim=1)
    max_dropped = pre.masked_fill(kept, -torch.inf).amax(dim=1)
    assert (min_kept >= max_dropped).all()
    assert torch.equal(acts[kept], pre[kept])


def test_decoder_norm_aware_topk_ranks_by_pre_times_norm():
    pre = torch.tensor([3.0, 2.0, 1.0]).view(1, 3, 1, 1)
    norms = torch.tensor([0.1, 1.0, 5.0]).view(1, 3, 1, 1)
    plain = topk_per_position(pre, pre, 1)
    aware = topk_per_position(pre * norms, pre, 1)
    assert plain.flatten().tolist() == [3.0, 0.0, 0.0]
    assert aware.flatten().tolist() == [0.0, 0.0, 1.0]


def test_signed_identity_reconstructs_exactly():
    model = _signed_identity_sae(c=8)
    x = torch.randn(2, 8, 6, 6)
    acts = model.encode(x)
    assert ((acts != 0).sum(dim=1) == 8).all()
    torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)
    assert fvu(x, model(x)) < 1e-12


def test_fvu_of_perfect_and_mean_predictor():
    y = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1, 1) + 2
    assert fvu(y, y) == 0.0
    mean = y.double().mean(dim=(0, 2, 3), keepdim=True).expand_as(y)
    assert fvu(y, mean) == pytest.approx(1.0, abs=1e-12)
    assert fvu(y, torch.zeros_like(y)) > 1.0  # worse than the mean predictor


def test_evaluate_transcoder_matches_single_batch_fvu():
    model = _random_transcoder()
    x, y = torch.randn(4, 6, 5, 5), torch.randn(4, 5, 5, 5)
    with torch.no_grad():
        expected = fvu(y, model(x))
    result = evaluate_transcoder(model, [(x[:2], y[:2]), (x[2:], y[2:])])
    assert result.fvu == pytest.approx(expected, rel=1e-6)  # float32 conv on batches of 2 vs 4
    assert result.l0 == pytest.approx(4.0)
    assert result.n_positions == 4 * 25


def test_fold_dataset_norm_keeps_reconstruction_and_rescales_pre():
    model = _random_transcoder()
    x = torch.randn(2, 6, 4, 4) * 30
    model.set_dataset_norm_(mean_in_norm=50.0, mean_out_norm=7.0)
    y_before = model(x)
    _, pre_before = model.encode(x, return_pre=True)
    s_in = model.in_scale.item()
    model.fold_dataset_norm_()
    torch.testing.assert_close(model(x), y_before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.encode(x, return_pre=True)[1], pre_before / s_in, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = _random_transcoder()
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model.encode(torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="k must be"):
        TranscoderConfig(4, 4, 8, 9)
    with pytest.raises(ValueError, match="plain SAE"):
        TranscoderConfig(4, 5, 8, 2, target="input")


def _linear_teacher_batches(seed=0, batch=8):
    """Target = a fixed random 1x1 map of the input: learnable by the transcoder."""
    g = torch.Generator().manual_seed(123)
    A = torch.randn(5, 6, generator=g) / 6 ** 0.5

    def batches(start_step: int):
        step = start_step
        while True:
            x = torch.randn(batch, 6, 6, 6, generator=torch.Generator().manual_seed(seed * 1000 + step))
            yield x, torch.einsum("oc,bchw->bohw", A, x)
            step += 1
    return batches


def test_training_keeps_unit_decoder_norms_and_lowers_fvu():
    model = _random_transcoder(d_sae=48, k=8)
    before = model.W_dec_FC.detach().clone()
    x0, y0 = next(_linear_teacher_batches(seed=9)(0))
    init_from_sample_(model, x0, y0)
    hist = train_transcoder(model, _linear_teacher_batches(), TrainConfig(steps=150, lr=3e-3, warmup_steps=10,
                                                                          log_every=10, dead_window=50),
                            progress=False)
    assert not torch.allclose(model.W_dec_FC, before)
    torch.testing.assert_close(model.decoder_norm_F(), torch.ones(48), rtol=0, atol=1e-6)
    assert hist.fvu[-1] < 0.5 * hist.fvu[0]
    assert all(l0 == pytest.approx(8.0) for l0 in hist.l0)
    assert 0.0 <= hist.dead_frac[-1] <= 1.0


def test_checkpoint_resume_after_crash_matches_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=12, lr=1e-2, warmup_steps=3, log_every=4, checkpoint_every=6)
    straight = _random_transcoder(seed=1)
    train_transcoder(straight, _linear_teacher_batches(), cfg, progress=False)

    def crashing(start_step: int):
        for step, batch in enumerate(_linear_teacher_batches()(start_step), start=start_step):
            if step == 8:
                raise KeyboardInterrupt("simulated crash")
            yield batch

    ckpt = tmp_path / "tc.pt"
    with pytest.raises(KeyboardInterrupt):
        train_transcoder(_random_transcoder(seed=1), crashing, cfg, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=False)["step"] == 6
    resumed = _random_transcoder(seed=2)  # different init: everything must come from the checkpoint
    hist = train_transcoder(resumed, _linear_teacher_batches(), cfg, checkpoint=ckpt, progress=False)
    assert hist.step == [0, 4, 8, 11]
    for name, p in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], p, rtol=0, atol=0)


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, decay_frac=0.2)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(50, cfg) == 1.0
    assert lr_factor(90, cfg) == pytest.approx(0.5)
    assert lr_factor(99, cfg) == pytest.approx(0.05)


def test_spliced_identity_sae_keeps_backbone_logits():
    backbone = tiny_backbone()
    data = RandomImages(6)
    x = torch.stack([data[i][0] for i in range(6)])
    with torch.no_grad():
        logits = backbone(x)
        with spliced(backbone, _signed_identity_sae(32, kernel_size=3)):
            torch.testing.assert_close(backbone(x), logits, rtol=1e-5, atol=1e-5)
        scrambled = _random_transcoder(d_in=32, d_out=32, d_sae=64, k=2)
        acc = classification_accuracy(backbone, data, "label", batch_size=4)
        spliced_acc = classification_accuracy(backbone, data, "label", batch_size=4, transcoder=scrambled)
        assert 0.0 <= spliced_acc <= 1.0 and 0.0 <= acc <= 1.0
        with spliced(backbone, scrambled):
            assert not torch.allclose(backbone(x), logits, atol=1e-3)
    torch.testing.assert_close(backbone(x), logits)  # the hook is removed on exit


def _with_dead_latents(n_dead: int = 12) -> Transcoder:
    """A transcoder whose first ``n_dead`` latents can never enter the TopK."""
    model = _random_transcoder(d_sae=48, k=4)
    with torch.no_grad():
        model.b_enc_F[:n_dead] = -1e3
    return model


@pytest.mark.parametrize("aux_k", [0, 6])
def test_auxk_gives_dead_latents_a_gradient_and_off_gives_none(aux_k):
    model, n_dead = _with_dead_latents(), 12
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(steps=4, lr=1e-2, log_every=1, dead_window=1, decay_frac=0.0, aux_k=aux_k)
    hist = train_transcoder(model, _linear_teacher_batches(), cfg, progress=False)
    assert hist.dead_frac[-1] == pytest.approx(n_dead / 48)  # exactly the silenced latents are dead
    moved_enc = (model.W_enc_FCkk - before["W_enc_FCkk"]).flatten(1).abs().amax(1) > 0
    moved_dec = (model.W_dec_FC - before["W_dec_FC"]).abs().amax(1) > 1e-6  # renormalisation: rounding only
    if aux_k:
        assert moved_enc[:n_dead].all() and moved_dec[:n_dead].all()
    else:  # Adam from a zero state leaves a parameter with zero gradient exactly where it was
        assert not moved_enc[:n_dead].any() and not moved_dec[:n_dead].any()
    assert moved_enc[n_dead:].any()  # live latents train either way


def test_auxk_loss_is_zero_without_dead_latents_and_exact_for_a_perfect_aux_code():
    model = _random_transcoder(d_sae=8, k=2, d_in=4, d_out=4)
    pre = torch.randn(2, 8, 3, 3)
    resid = torch.randn(2, 4, 3, 3)
    assert auxk_loss(model, pre, resid, torch.zeros(8, dtype=torch.bool), 3).item() == 0.0
    # One dead latent whose decoder row is the residual's direction and whose pre-activation
    # is the residual's coordinate along it: the residual is reconstructed exactly.
    direction = torch.tensor([0.6, 0.8, 0.0, 0.0])
    with torch.no_grad():
        model.W_dec_FC[5] = direction
    coeff = torch.randn(2, 3, 3)
    resid = coeff[:, None] * direction[None, :, None, None]
    pre[:, 5] = coeff
    dead = torch.zeros(8, dtype=torch.bool)
    dead[5] = True
    assert auxk_loss(model, pre, resid, dead, 4).item() == pytest.approx(0.0, abs=1e-12)
    # The mean predictor's error over the variance is 1: an all-zero aux code on a zero-mean residual
    pre[:, 5] = 0.0
    centred = resid - resid.mean(dim=(0, 2, 3), keepdim=True)
    assert auxk_loss(model, pre, centred, dead, 4).item() == pytest.approx(1.0, rel=1e-6)

"""The paper-scale benchmark's set-up (benchmarks/bench_paper_scale.py), on slim versions
of the paper's architectures: random files in the published layouts pass the real loaders,
give a finite, unit-scale denoiser, and a guided sample with finite psi."""

from __future__ import annotations

import json

import torch

from benchmarks import bench_paper_scale as bench
from klsc_lib.diffusion.speed import Speed
from klsc_lib.sae.transcoder import TranscoderConfig
from klsc_lib.worlds.zoo import ConvNeXtArch, GuidedUNetConfig

SLIM_ARCH = ConvNeXtArch(depths=(1, 1, 3, 1), dims=(32, 64, 96, 128))
SLIM_UNET = GuidedUNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2, 2), attention_resolutions=(8,),
                             num_head_channels=16)
SLIM_TC = TranscoderConfig(d_in=96, d_out=96, d_sae=384, k=8, kernel_size=7)


def _models(tmp_path):
    return bench.random_paper_models(tmp_path, torch.device("cpu"), arch=SLIM_ARCH, hook="stages.2.blocks.2",
                                     unet_cfg=SLIM_UNET, image_size=64, transcoder_cfg=SLIM_TC)


def test_random_files_load_through_the_paper_loaders_with_a_unit_scale_denoiser(tmp_path):
    prior, units = _models(tmp_path)
    x_BCHW = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eps, log_var = prior.eps.eps_and_log_variance(x_BCHW, torch.tensor([500, 500]))
    assert eps.shape == x_BCHW.shape and torch.isfinite(eps).all() and torch.isfinite(log_var).all()
    assert 0.05 < eps.std().item() < 20  # N(0, 1/fan_in) weights keep activations O(1) through the 18 blocks
    assert units.count == SLIM_TC.d_sae


def test_measure_runs_paper_config_and_reports_per_sample_cost(tmp_path):
    prior, units = _models(tmp_path)
    out = bench.measure(prior, units, num_steps=2, batch_size=2)
    assert out["psi_finite"] and out["seconds_per_step"] > 0
    assert out["seconds_per_sample_1000_steps"] == out["seconds_per_step"] * 500  # 1000 steps, 2 samples per batch


def test_every_measurement_runs_on_cpu_and_speed_off_is_float32_bit_for_bit(tmp_path):
    prior, units = _models(tmp_path)
    res = bench.bench(tmp_path / "out", prior, units, Speed.off(), num_steps=2, batches=(1, 2), maco_steps=1)
    written = json.loads((tmp_path / "out" / "paper_scale.json").read_text())
    assert set(written) >= {"float32_b1", "tf32_b1", "fast", "fidelity", "breakdown_fast_b1", "profile_fast_b1",
                            "fast_config", "maco", "maco_float32"}
    assert res["fast_path"] == {"tf32": False, "autocast": None, "channels_last": False, "compile": False}
    assert res["fidelity"]["max_abs_x_diff"] == 0.0 and res["fidelity"]["mean_abs_psi_diff"] == 0.0
    assert all(v > 0 for v in res["breakdown_float32_b1"].values())
    assert res["fast_config"]["seconds_per_sample_calibrated"] == 5 * res["fast_config"]["seconds_per_sample_one_pass"]
    out = bench.summary(res)
    assert out["ratio"] == res["fast"][1]["seconds_per_sample_1000_steps"] / 96.0


def test_without_a_gpu_the_benchmark_is_skipped(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = bench.run()
    assert result["detail"].startswith("skipped") and result["ratio"] != result["ratio"]  # NaN

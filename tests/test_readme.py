"""The README's "Explain a feature of your own model" snippet runs as printed, on a tiny
random-weight backbone, transcoder and prior standing in for the user's models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from klsc_lib.interfaces import DDPMSchedule, HookedBackbone, Prior
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(heading: str) -> str:
    """The first python code block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_explain_a_feature_snippet_runs_and_returns_one_image_per_sample():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    backbone = HookedBackbone(net, "2", preprocess=lambda x: x).requires_grad_(False)
    transcoder = Transcoder(TranscoderConfig(d_in=8, d_out=8, d_sae=512, k=8, kernel_size=3)).requires_grad_(False)
    eps_net = nn.Conv2d(3, 3, 3, padding=1).requires_grad_(False)
    prior = Prior(lambda x_t, t_B: eps_net(x_t), DDPMSchedule(), (3, 16, 16), "tiny")
    scope = {"backbone": backbone, "transcoder": transcoder, "prior": prior}
    exec(snippet("### Explain a feature of your own model"), scope)  # noqa: S102
    x_BCHW, psi = scope["x_BCHW"], scope["psi"]
    assert x_BCHW.shape == (4, 3, 16, 16) and torch.isfinite(x_BCHW).all()
    assert psi(x_BCHW).shape == (4,)

"""HookedBackbone captures the hooked block's input and output exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from klsc_lib.interfaces import HookedBackbone


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)), nn.Flatten(), nn.LazyLinear(2))


def test_hook_io_matches_manual_forward_and_stop_skips_the_rest():
    net = _net()
    x = torch.rand(2, 3, 5, 5) * 2 - 1
    net(x)  # materialise the lazy layer
    bb = HookedBackbone(net, "1.1", preprocess=lambda x: x)
    a_in, a_out = bb.hook_io(x)
    h = net[1][0](net[0](x))
    assert torch.equal(a_in, h) and torch.equal(a_out, net[1][1](h))
    calls = []
    net[3].register_forward_hook(lambda *a: calls.append(1))
    bb.hook_io(x, stop=True)
    assert calls == []
    bb.hook_io(x, stop=False)
    assert calls == [1]


def test_gradients_flow_to_the_image():
    net = _net()
    x = torch.rand(1, 3, 5, 5, requires_grad=True)
    net(x)
    _, out = HookedBackbone(net, "1", preprocess=lambda x: (x + 1) / 2).hook_io(x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_block_is_a_clear_error():
    with pytest.raises(ValueError, match="no sub-module"):
        HookedBackbone(_net(), "stages.9", preprocess=lambda x: x)

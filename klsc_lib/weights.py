"""One error for every weights file of the paper's models that is missing, unreadable
or holds the wrong tensors (issue 4; App J.1, J.4, §15).

The DPS reference code falls back to random weights when a checkpoint does not load;
we never do: every loader of :mod:`klsc_lib.worlds.zoo` (and of the proxy baseline's
UNet) either loads every tensor of the architecture or raises :class:`WeightsFileError`, whose message names the file, where
it was expected (and the environment variable that moves it) and where the file is
published.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch


@dataclass(frozen=True)
class WeightsSource:
    """What a weights file is and where a user gets it."""

    what: str  # e.g. "DINOv3 ConvNeXt-Large backbone"
    env_var: str  # environment variable that points to the file
    published: str  # where it is published (release page, hub ids)


class WeightsFileError(RuntimeError):
    """A weights file is missing, truncated / unreadable, or has the wrong key set."""

    def __init__(self, path: str | Path, source: WeightsSource, problem: str):
        self.path = Path(path)
        self.source = source
        self.problem = problem
        super().__init__(
            f"{source.what}: {problem}\n"
            f"  file: {self.path}\n"
            f"  expected location: that path, or set ${source.env_var} to the file\n"
            f"  published at: {source.published}"
        )


def read_state_dict(path: str | Path, source: WeightsSource) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a ``.safetensors`` file or a torch
    pickle loaded with ``weights_only=True``; unwrap ``{"model": ...}`` /
    ``{"state_dict": ...}`` wrappers. Any failure becomes a :class:`WeightsFileError`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsFileError(path, source, "file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad header, pickle with code, ...
        raise WeightsFileError(path, source, f"cannot be read (truncated or corrupt?): {type(err).__name__}: {err}") from err
    for wrapper in ("model", "state_dict"):  # training checkpoints wrap the weights
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(path, source, "does not hold a flat {name: tensor} state dict")
    return dict(state)


def check_key_set(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], path: str | Path,
                  source: WeightsSource, layout: str, ignore: Iterable[str] = ()) -> None:
    """Raise :class:`WeightsFileError` unless ``state`` has exactly the ``expected``
    keys (up to those in ``ignore``) with the expected shapes; ``layout`` describes
    what was expected ("the meta layout (...)")."""
    ignore = set(ignore)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - ignore)
    wrong_shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {_head(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {_head(unexpected)})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(f"{len(wrong_shape)} keys with wrong shapes (e.g. {k}: {tuple(state[k].shape)}, "
                         f"expected {tuple(expected[k])})")
        raise WeightsFileError(path, source, f"wrong key set for {layout}: " + "; ".join(parts))


def _head(keys: list[Any], n: int = 3) -> str:
    return ", ".join(map(str, keys[:n])) + (", ..." if len(keys) > n else "")

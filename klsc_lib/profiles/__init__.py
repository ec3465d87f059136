"""Run profiles, defined once per notebook.

Each notebook ``NN_name`` has a module ``klsc_lib.profiles.nbNN_name`` holding a
frozen dataclass of its settings and ``PROFILES = {"smoke": ..., "default": ...,
"paper": ...}``. Notebooks call :func:`get_profile` with their papermill
parameter ``profile``; nothing else in a notebook branches on the profile name.

- ``smoke``:   CI, minutes on 2 CPU cores.
- ``default``: the embedded mini-world, any laptop CPU, no downloads (``make figures``).
- ``paper``:   the paper's settings, on a GPU, with weights the user placed locally.
"""

from __future__ import annotations

import importlib
from typing import Any

PROFILE_NAMES = ("smoke", "default", "paper")


def get_profile(notebook: str, profile: str) -> Any:
    """Settings of ``notebook`` (e.g. ``"01_gmm_constraints"``) under ``profile``."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILE_NAMES}")
    module_name = f"klsc_lib.profiles.nb{notebook}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise ValueError(f"no profiles for notebook {notebook!r} (expected module {module_name})") from None
    return module.PROFILES[profile]

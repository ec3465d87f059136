"""The one EnergyDPS configuration (paper Sec 2.3 Algorithm 1, Sec 3.2, App J.2, J.4) and
the one seed scheme every guided sample is drawn with.

:class:`GuidanceConfig` answers "how does EnergyDPS sample" in one place: the reverse
steps, the guidance strength, the gradient path, the sampler and how the cap on psi is
set. ``GuidanceConfig.paper()`` is the authors' release; ``GuidanceConfig.fast()`` (the
defaults) is notebook 04's measured choice: 50 respaced DDPM steps, the gradient
through the denoiser, half the paper's total guidance. ``GuidanceConfig.tilt()`` is the
uncapped plug-in of the tilt p e^{lambda psi} with the tilt's own lambda per unit, which
notebook 04 measures against the exact tilt beside the capped configuration.

Three corrections measured against the exact tilt in notebook 04 (off by default):
``psi_views`` (psi read on shifted copies of x0-hat), ``recurrence`` (each step repeated
with re-noising in between) and ``shift_clip`` (each sample's guidance shift at most a
multiple of the noise its step adds).

``strength`` is the total guidance relative to the paper's (zeta * lambda = 1.0 per
step over 1000 steps, App J.4): the per-step scale is strength x 1.0 x T / steps, T the
prior's training steps, so changing ``num_steps`` keeps the pull of the whole chain.

The cap rule is one explicit choice (App J.2, Sec 3.2):

- ``"calibrated"``: the cap c_U is bisected per unit until the mean psi of its samples
  reaches the unit's target t_U (``cap_bracket`` x t, ``calib_iters`` halvings);
- ``"target"``: one pass with the cap at t_U;
- ``"fixed"``: the cap ``cap`` for every sample (the release's 15);
- ``"none"``: no cap.

:func:`sample_seeds`: sample j of unit u in a run with seed s is drawn from its own
generator seeded by a hash of (s, u, j), so a unit's samples never depend on which
other units share its batch or its run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch

from klsc_lib.diffusion.samplers import Variance, spaced_timesteps
from klsc_lib.diffusion.speed import Speed
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.energies.caps import CAP_MODES
from klsc_lib.paper_values import ENERGYDPS, FEATURE_SCORE

StepSize = Literal["constant", "tilted_score"]
CapRule = Literal["calibrated", "target", "fixed", "none"]
CAP_RULES = ("calibrated", "target", "fixed", "none")


@dataclass(frozen=True)
class GuidanceConfig:
    """How EnergyDPS samples (see the module docstring); the defaults are :meth:`fast`."""

    num_steps: int | None = 50  # respaced reverse steps; None = every training step
    strength: float = 0.5  # total guidance / the paper's (1.0 per step x 1000 steps)
    grad_through_denoiser: bool = True  # False: Jacobian-free (eps held fixed)
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    eta: float = 0.0  # DDIM only
    step_size: StepSize = "constant"  # "tilted_score": lambda is the tilt's lambda (App G.4)
    variance: Variance = "auto"  # DDPM only: the model's learned variance where it has one
    cap_rule: CapRule = "calibrated"
    cap: float | None = None  # the cap of cap_rule "fixed"
    cap_mode: str = FEATURE_SCORE["cap_mode"]  # clip / hinge / target (App J.2)
    kappa: float = 10.0  # hinge stiffness
    cap_bracket: tuple[float, float] = (0.0, 1.5)  # calibration: caps searched in [lo t, hi t]
    calib_iters: int = 3  # calibration: bisection halvings
    final_shift: bool = True  # add the guidance shift after the last step too (the release); False: x_0 is the
    # last posterior mean, no shift that no later denoiser step could clean up
    psi_views: int = 1  # guidance reads psi(x0-hat) averaged over this many shifted copies (energies.views)
    view_shift: int = 2  # the views' largest shift in pixels
    recurrence: int = 1  # self-recurrence: each step taken this many times, re-noised in between (Universal Guidance)
    shift_clip: float | None = None  # per-sample: the guidance shift's norm is clipped at shift_clip x the step's
    # noise norm (posterior std x sqrt(dim)); None: unclipped
    speed: Speed = Speed()  # how the networks run (TF32, bf16, channels_last, compile); float32 eager

    def __post_init__(self) -> None:
        checks = {"sampler": ("ddpm", "ddim"), "step_size": ("constant", "tilted_score"), "cap_rule": CAP_RULES,
                  "cap_mode": CAP_MODES, "variance": ("auto", "posterior", "learned")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if (self.cap is not None) != (self.cap_rule == "fixed"):
            raise ValueError(f"cap={self.cap!r} with cap_rule={self.cap_rule!r}: a cap value goes with "
                             "cap_rule='fixed' and only with it")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {self.eta}")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 (or None for every training step), got {self.num_steps}")
        if self.psi_views < 1 or self.view_shift < 0 or self.recurrence < 1:
            raise ValueError(f"need psi_views >= 1, view_shift >= 0 and recurrence >= 1, got {self.psi_views}, "
                             f"{self.view_shift}, {self.recurrence}")
        if self.shift_clip is not None and not self.shift_clip > 0:
            raise ValueError(f"shift_clip must be > 0 (a multiple of the step's noise norm) or None, got {self.shift_clip}")

    @property
    def plain_steps(self) -> bool:
        """Whether every step is one plain guided step on psi itself (no views, recurrence or
        shift clip): what samplers that weight the proposal's density, like twisted SMC, need."""
        return self.psi_views == 1 and self.recurrence == 1 and self.shift_clip is None

    @classmethod
    def paper(cls) -> "GuidanceConfig":
        """The authors' release (App J.4): every training step (1000) of DDPM, the gradient through
        the denoiser, scale 1.0 per step, clip cap 15. Their cap clips the batch mean of
        psi (batch 1); ours clips each sample's psi (identical at batch 1)."""
        return cls(num_steps=None, strength=1.0,
                   grad_through_denoiser=ENERGYDPS["grad_through_denoiser"], cap_rule="fixed", cap=ENERGYDPS["cap"])

    @classmethod
    def fast(cls, num_steps: int = 50, strength: float = 0.5, **overrides) -> "GuidanceConfig":
        """Notebook 04's measured choice: respaced DDPM, the gradient through the denoiser,
        cap calibrated per unit. (Jacobian-free guidance costs ~0.65x per step but left
        high-frequency patterns on the mini-world's samples at matched psi, as did strength
        1 at 50 steps on spatial features.)"""
        return cls(num_steps=num_steps, strength=strength, **overrides)

    @classmethod
    def tilt(cls, num_steps: int = 50, **overrides) -> "GuidanceConfig":
        """The plug-in tilt sampler measured against the exact tilt in notebook 04: no cap, the
        step sized so that lambda is the tilt's own lambda (``step_size="tilted_score"``, App
        G.4; lambda per unit from the data, e.g. solved on real images' psi), and no guidance
        shift after the last step. ``strength`` is unused: lambda is passed per sample."""
        return cls(num_steps=num_steps, step_size="tilted_score", cap_rule="none", final_shift=False, **overrides)

    def timesteps(self, schedule: DDPMSchedule) -> torch.Tensor:
        """The decreasing training timesteps walked (stride spacing)."""
        return spaced_timesteps(schedule, self.num_steps)

    def step_scale(self, schedule: DDPMSchedule) -> float:
        """zeta * lambda per step: strength x the paper's 1.0 x T / steps."""
        t = schedule.num_train_timesteps
        return self.strength * ENERGYDPS["guidance_scale"] * t / (self.num_steps or t)

    def resolve_cap(self, cap_B: torch.Tensor | float | None) -> torch.Tensor | float | None:
        """The cap the sampler applies: ``cap_B`` (the target t or a calibrated cap) for the
        rules "target" and "calibrated", ``cap`` for "fixed", nothing for "none"."""
        if self.cap_rule in ("target", "calibrated"):
            if cap_B is None:
                raise ValueError(f"cap_rule={self.cap_rule!r} needs the per-sample cap_B (the target t or the "
                                 "calibrated cap); use cap_rule='none' to sample uncapped")
            return cap_B
        if cap_B is not None:
            raise ValueError(f"cap_rule={self.cap_rule!r} sets the cap itself; pass no cap_B")
        return self.cap if self.cap_rule == "fixed" else None


SEED_SCHEME = "sha256(seed/unit/j)"  # named in store keys: samples drawn otherwise are never reused


def sample_seeds(seed: int, unit: int, n: int, start: int = 0) -> list[int]:
    """One 63-bit seed per sample ``start <= j < start + n`` of ``unit`` in a run seeded
    ``seed``: a hash of (seed, unit, j) and of nothing else."""
    return [int(hashlib.sha256(f"{seed}/{unit}/{j}".encode()).hexdigest()[:15], 16) for j in range(start, start + n)]


def unit_seeds(seed: int, units_U: torch.Tensor | list[int], n_per_unit: int) -> list[int]:
    """The seeds of ``n_per_unit`` samples of each unit, unit-major (sample b is unit b // n)."""
    return [s for u in torch.as_tensor(units_U).tolist() for s in sample_seeds(seed, int(u), n_per_unit)]

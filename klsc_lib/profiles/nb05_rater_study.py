"""Profiles of notebook 05_rater_study (paper Sec 3.3, App K, App L.1).

The simulated study plants a purity per method (the chance that each of a grid's four
images shows the unit's true concept) on the mini-world's held-out images; simulated
raters score each grid from that truth with their own bias and noise. The planted
ordering (EnergyDPS above DiffExplainer above MACO) follows Table 4; the values are
ours. ``paper`` keeps the paper's study size (100 features, Sec 3.3) and asks for the
CLIP text encoder (App K), whose files the user places locally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from klsc_lib.analysis.raters.simulate import SimulatedRater
from klsc_lib.paper_values import RATER_NUM_FEATURES
from klsc_lib.worlds.miniworld import MINIWORLD

PURITY = MappingProxyType({"MACO": 0.3, "DiffExplainer": 0.45, "EnergyDPS": 0.75})
#: Six simulated raters, as many as the paper's four humans and two AI raters, each with its own leniency and
#: noise. They are random draws, not models: no person and no AI system is queried.
RATERS = (SimulatedRater("Sim 1", 0.3, 0.6), SimulatedRater("Sim 2", -0.2, 0.6), SimulatedRater("Sim 3", 0.0, 1.0),
          SimulatedRater("Sim 4", -0.4, 0.7), SimulatedRater("Sim 5", 0.1, 0.4), SimulatedRater("Sim 6", 0.3, 0.5))


@dataclass(frozen=True)
class RaterStudyProfile:
    world: Any  # MiniWorldConfig whose held-out images make the planted sample sets
    n_features: int  # units per method (Sec 3.3: 100 random features)
    purity: Mapping[str, float] = field(default_factory=lambda: PURITY)
    raters: tuple[SimulatedRater, ...] = RATERS
    # App L.1 Table 7 analogue: EnergyDPS grids of neurons vs features, one simulated rater (Sim 5's settings).
    neuron_purity: float = 0.35
    feature_purity: float = 0.75
    table7_rater: SimulatedRater = SimulatedRater("Sim 5", 0.1, 0.4)
    n_bootstrap: int = 2000
    cell: int = 96  # pixels per grid cell in the packets
    text_encoder: str = "auto"  # minilm | clip | auto (CLIP when its files are present)
    # torch intra-op threads, as in notebooks 03-04 (see klsc_lib.profiles.nb04_energydps): ``default`` pins 2,
    # the count its committed figures were made with; None: torch's default.
    threads: int | None = None


PROFILES = {
    "smoke": RaterStudyProfile(world=MINIWORLD["smoke"], n_features=16, n_bootstrap=300, cell=32),
    "default": RaterStudyProfile(world=MINIWORLD["default"], n_features=RATER_NUM_FEATURES, threads=2),
    "paper": RaterStudyProfile(world=MINIWORLD["default"], n_features=RATER_NUM_FEATURES, text_encoder="clip"),
}

"""Intrinsic scores psi as small named objectives that compose with ``+`` and ``*``
(paper Sec 2.3 eq. 24, App J.2, App L.1, L.5): the energy the guided samplers of
:mod:`klsc_lib.diffusion.energy_dps` tilt the prior by.

    energy = 0.5 * feature_score(backbone, transcoder, 3) + class_logit(backbone, 2)
    energy.name  ->  "0.5*feature[3]+class_logit[2]"
    energy(x_BCHW) -> psi_B
"""

from klsc_lib.energies.base import Energy, as_energy, checked_psi
from klsc_lib.energies.caps import CAP_MODES, capped_objective
from klsc_lib.energies.features import class_logit, feature_score, neuron_score
from klsc_lib.energies.reductions import REDUCTIONS, central_window, reduce_map
from klsc_lib.energies.toy import angular_energy, reference_energy

__all__ = ["Energy", "as_energy", "checked_psi", "CAP_MODES", "capped_objective", "class_logit", "feature_score", "neuron_score",
           "REDUCTIONS", "central_window", "reduce_map", "angular_energy", "reference_energy"]

"""Notebook 05's study on notebook 04's stored explanations (paper Sec 3.3, App K):
:func:`stored_study_sets` turns the samples stores into blinded-packet sample sets, each
with the unit's true concept (the one of notebook 04 and the inspector,
:func:`klsc_lib.explain.true_concepts`) and its truth: the fraction of the set's images
whose concept factor, read by the world's factor reader, equals the concept value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from klsc_lib.analysis.raters.packets import SampleSet
from klsc_lib.analysis.raters.simulate import Concept, Item, concept_fraction, set_name, stored_sample_sets
from klsc_lib.energies.units import Units
from klsc_lib.explain import true_concepts
from klsc_lib.interfaces import World
from klsc_lib.samples_store import SamplesStore
from klsc_lib.studies.nb04_energydps import world_reader


@dataclass
class StoredSets:
    """Sample sets of stored units with what the factor reader sees in them."""

    sets: list[SampleSet]
    factors: dict[Item, list[dict[str, int]]]  # per item, each image's read factor values
    concepts: dict[str, Concept]  # by set unit name (:func:`set_name`)
    truth: dict[Item, float]  # fraction of an item's images showing its unit's concept


def stored_study_sets(stores: Mapping[tuple[str, str], SamplesStore], world: World, features: Units,
                      top_k: int, n_images: int = 4) -> StoredSets:
    """The sets of every unit in ``stores`` (keyed (method, unit kind), as
    :func:`klsc_lib.profiles.nb04_energydps.samples_stores`): features' concepts from
    ``features`` (notebook 04's transcoder), neurons' from the world's backbone, both over
    the top ``top_k`` images (notebook 04's ``top_k``)."""
    neurons = Units("Neuron", world.backbone, image_size=world.image_size)
    concepts: dict[tuple[str, int], Concept] = {}
    for kind, units in (("Feature", features), ("Neuron", neurons)):
        ids = sorted({u for (_, k), s in stores.items() if k == kind for u in s.units()})
        if ids:
            found = true_concepts(units, ids, world, top_k)
            concepts |= {(kind, u): (found.factor_U[i], int(found.value_U[i])) for i, u in enumerate(ids)}
    sets, factors = stored_sample_sets(stores.values(), concepts, world_reader(world).read, n_images)
    by_name = {set_name(kind, u): c for (kind, u), c in concepts.items()}
    truth = {item: concept_fraction(by_name[item[0]], f) for item, f in factors.items()}
    return StoredSets(sets, factors, by_name, truth)

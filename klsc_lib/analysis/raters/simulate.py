"""Simulated raters with a known ground truth (validation, and the mini-world's stand-in).

A rater turns an item's truth ``t`` in [0, 1] (e.g. the fraction of the four images
that show the unit's true concept) into a score ``clip(round(1 + 3 t + bias + noise z),
1, 4)``, z ~ N(0, 1), and into a concept description: the unit's true concept with
probability ``t``, otherwise what one image happens to show. Because the truth is
planted, an analysis of these ratings can be checked against known means and orderings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from klsc_lib.analysis.raters.packets import SampleSet
from klsc_lib.analysis.raters.ratings import SCORES, Rating
from klsc_lib.samples_store import SamplesStore

Item = tuple[str, str, str]  # (unit, method, unit_kind)
Concept = tuple[str, int]  # (factor name, value id)


@dataclass(frozen=True)
class SimulatedRater:
    name: str
    bias: float = 0.0  # added on the 1-4 scale before rounding
    noise: float = 0.5  # sd of the Gaussian noise on the 1-4 scale
    kind: str = "simulated"


def expected_score(truth: float, bias: float, noise: float) -> float:
    """E[score] of a simulated rater at ``truth`` (exact, by the normal CDF over the rounding bins)."""
    mu = 1 + 3 * truth + bias
    edges = np.array([-np.inf, 1.5, 2.5, 3.5, np.inf])
    probs = np.diff(stats.norm.cdf(edges, loc=mu, scale=max(noise, 1e-12)))
    return float(np.dot(probs, SCORES))


def simulate_ratings(items: Iterable[Item], truth: Callable[[Item], float], raters: Sequence[SimulatedRater],
                     describe: Callable[[Item, float, random.Random], str], seed: int) -> list[Rating]:
    """One rating per (item, rater); scores and concepts as in the module docstring."""
    rng = random.Random(seed)
    out = []
    for item in items:
        t = float(truth(item))
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"truth of {item} must lie in [0, 1], got {t}")
        for r in raters:
            score = int(np.clip(round(1 + 3 * t + r.bias + r.noise * rng.gauss(0.0, 1.0)), 1, 4))
            out.append(Rating(item[0], item[1], r.name, r.kind, score, describe(item, t, rng), item[2]))
    return out


def concept_phrase(concept: Concept, value_names: Mapping[str, Sequence[str]]) -> str:
    """A short description of a ground-truth factor value, e.g. ``"colour: red"``."""
    factor, value = concept
    return f"{factor}: {value_names[factor][value]}"


def planted_sample_sets(dataset, unit_concepts: Mapping[str, Concept], purity: Mapping[str, float],
                        unit_kind: str = "Feature", n_images: int = 4, seed: int = 0,
                        ) -> tuple[list[SampleSet], dict[Item, list[dict[str, int]]]]:
    """Sample sets made of real images with a planted purity per method.

    For each unit and method, ``k ~ Binomial(n_images, purity[method])`` images show the
    unit's concept (factor == value) and the rest do not. Returns the sets and, per
    item, the factors of its images (what an all-factor classifier would report).
    """
    gen = np.random.default_rng(seed)
    factors = [dataset[i][1] for i in range(len(dataset))]
    sets, item_factors = [], {}
    for unit, (factor, value) in unit_concepts.items():
        pos = [i for i, f in enumerate(factors) if f[factor] == value]
        neg = [i for i, f in enumerate(factors) if f[factor] != value]
        if len(pos) < n_images or len(neg) < n_images:
            raise ValueError(f"unit {unit}: too few images with / without {factor} = {value}")
        for method, p in purity.items():
            k = int(gen.binomial(n_images, p))
            idx = list(gen.choice(pos, k, replace=False)) + list(gen.choice(neg, n_images - k, replace=False))
            idx = [int(i) for i in gen.permutation(idx)]
            sets.append(SampleSet(unit, method, torch.stack([dataset[i][0] for i in idx]), unit_kind))
            item_factors[(unit, method, unit_kind)] = [factors[i] for i in idx]
    return sets, item_factors


def set_name(unit_kind: str, unit: int) -> str:
    """The unit name of a stored unit's sample set, e.g. ``"feature_81"``."""
    return f"{unit_kind.lower()}_{unit}"


def stored_sample_sets(stores: Iterable[SamplesStore], concepts: Mapping[tuple[str, int], Concept],
                       read: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], n_images: int = 4,
                       ) -> tuple[list[SampleSet], dict[Item, list[dict[str, int]]]]:
    """Sample sets from explanation stores (notebook 04's samples), with what a factor
    reader sees in them.

    ``concepts`` maps (unit kind, unit id) to the unit's true concept; every stored unit
    that has one gives a set of its first ``n_images`` images, named ``"<kind>_<id>"``
    (e.g. ``"feature_81"``). ``read`` (the world's all-factor classifier) maps images to
    ``{factor: (B,) value ids}``; it runs once on all images. Returns what
    :func:`planted_sample_sets` returns, so :func:`concept_fraction` gives each item's truth.
    """
    sets = [SampleSet(set_name(st.unit_kind, u), st.method, st.get(u).images_BCHW[:n_images].float(),
                      st.unit_kind) for st in stores for u in st.units() if (st.unit_kind, u) in concepts]
    if not sets:
        raise ValueError(f"none of the stored units has a concept (concepts are given for {len(concepts)} units)")
    values = read(torch.cat([s.images_BCHW for s in sets]))
    values = {f: v.cpu().tolist() for f, v in values.items()}
    item_factors, start = {}, 0
    for s in sets:
        b = len(s.images_BCHW)
        item_factors[(s.unit, s.method, s.unit_kind)] = [{f: v[i] for f, v in values.items()}
                                                         for i in range(start, start + b)]
        start += b
    return sets, item_factors


def concept_fraction(concept: Concept, image_factors: Sequence[Mapping[str, int]]) -> float:
    """Fraction of the images whose ``factor`` equals ``value``: the per-item truth."""
    factor, value = concept
    return float(np.mean([f[factor] == value for f in image_factors]))


def describe_from_factors(unit_concepts: Mapping[str, Concept], item_factors: Mapping[Item, Sequence[Mapping]],
                          value_names: Mapping[str, Sequence[str]]) -> Callable[[Item, float, random.Random], str]:
    """A simulated rater's description: the true concept with probability ``truth``, else a
    factor value of one of the item's images chosen at random."""
    def describe(item: Item, truth: float, rng: random.Random) -> str:
        if rng.random() < truth:
            return concept_phrase(unit_concepts[item[0]], value_names)
        image = rng.choice(list(item_factors[item]))
        factor = rng.choice(sorted(image))
        return concept_phrase((factor, image[factor]), value_names)

    return describe


@dataclass
class PlantedStudy:
    """Simulated ratings of planted sample sets (:func:`planted_study`) and what they
    should recover: each method's planted expected score."""

    ratings: list[Rating]
    planted_mean: dict[str, float]  # method -> expected score over raters and items


def planted_study(dataset, factor_sizes: Mapping[str, int], n_units: int, purity: Mapping[str, float],
                  raters: Sequence[SimulatedRater], value_names: Mapping[str, Sequence[str]],
                  seed: int = 0) -> PlantedStudy:
    """A validation study with a known answer (Sec 3.3): ``n_units`` units with a random
    (factor, value) concept each, sample sets drawn from ``dataset`` at each method's
    planted ``purity``, rated by simulated ``raters``; the planted mean of a method is
    the expected score of its items' true concept fractions."""
    rng = random.Random(seed)
    concepts = {}
    for i in range(n_units):
        factor = rng.choice(sorted(factor_sizes))
        concepts[f"feature_{i}"] = (factor, rng.randrange(factor_sizes[factor]))
    _, item_factors = planted_sample_sets(dataset, concepts, purity, seed=seed)
    truth = {item: concept_fraction(concepts[item[0]], f) for item, f in item_factors.items()}
    ratings = simulate_ratings(list(item_factors), truth.__getitem__, raters,
                               describe_from_factors(concepts, item_factors, value_names), seed=seed)
    planted = {m: float(np.mean([expected_score(truth[i], r.bias, r.noise) for i in truth if i[1] == m
                                 for r in raters])) for m in purity}
    return PlantedStudy(ratings, planted)

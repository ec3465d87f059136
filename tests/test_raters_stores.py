"""The rater study on stored explanation samples (notebook 05 on notebook 04's stores):
sample sets and their truth from a factor reader, true concepts of units from their
top real images, and the stores a notebook-04 profile writes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from klsc_lib.analysis.raters import write_packet
from klsc_lib.analysis.raters.simulate import concept_fraction, stored_sample_sets
from klsc_lib.energies.units import Units
from klsc_lib.interfaces import HookedBackbone
from klsc_lib.profiles.nb04_energydps import samples_stores
from klsc_lib.explain import true_concepts
from klsc_lib.studies.nb05_rater_study import stored_study_sets
from klsc_lib.samples_store import SamplesStore

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(colours: list[int]) -> torch.Tensor:
    """One 3x8x8 image per entry: colour c lights channel c (+1), the others are -1."""
    x = -torch.ones(len(colours), 3, 8, 8)
    for i, c in enumerate(colours):
        x[i, c] = 1.0
    return x


def _read_colour(calls: list):
    def read(x_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(len(x_BCHW))
        return {"colour": x_BCHW.mean(dim=(2, 3)).argmax(1), "shade": torch.zeros(len(x_BCHW), dtype=torch.long)}
    return read


def test_stored_sets_take_the_first_four_images_and_their_truth_counts_the_concept(tmp_path):
    energy = SamplesStore("EnergyDPS", "Feature", {"a": 1}, root=tmp_path)
    maco = SamplesStore("MACO", "Feature", {"a": 1}, root=tmp_path)
    neurons = SamplesStore("EnergyDPS", "Neuron", {"a": 1}, root=tmp_path)
    energy.put(3, _images([1, 1, 0, 1, 2, 2]), torch.zeros(6))  # 3 of the first 4 are colour 1
    maco.put(3, _images([0, 2]), torch.zeros(2))  # only 2 images (smoke runs): none is colour 1
    energy.put(7, _images([2, 2, 2, 2]), torch.zeros(4))  # no concept given: skipped
    neurons.put(3, _images([0, 0, 1, 0]), torch.zeros(4))  # same id, other kind: its own concept
    concepts = {("Feature", 3): ("colour", 1), ("Neuron", 3): ("colour", 0)}
    calls = []
    sets, factors = stored_sample_sets([energy, maco, neurons], concepts, _read_colour(calls))
    assert calls == [4 + 2 + 4]  # one read of every image
    assert [(s.unit, s.method, s.unit_kind, len(s.images_BCHW)) for s in sets] == [
        ("feature_3", "EnergyDPS", "Feature", 4), ("feature_3", "MACO", "Feature", 2),
        ("neuron_3", "EnergyDPS", "Neuron", 4)]
    assert factors[("feature_3", "EnergyDPS", "Feature")] == [{"colour": c, "shade": 0} for c in (1, 1, 0, 1)]
    truth = {item: concept_fraction(concepts[(item[2], int(item[0].split("_")[1]))], f) for item, f in factors.items()}
    assert truth == {("feature_3", "EnergyDPS", "Feature"): 0.75, ("feature_3", "MACO", "Feature"): 0.0,
                     ("neuron_3", "EnergyDPS", "Neuron"): 0.75}
    packet = write_packet(sets, tmp_path / "packet", tmp_path / "key.csv", seed=0, cell=8)
    assert len(packet.item_ids) == 3  # a 2-image set still makes a (half blank) grid
    with pytest.raises(ValueError, match="none of the stored units has a concept"):
        stored_sample_sets([energy], {("Feature", 99): ("colour", 0)}, _read_colour([]))


def _colour_world():
    """Neuron c of an identity 1x1 convolution is channel c, which is high exactly on colour-c
    images; the second factor is drawn independently of the images."""
    g = torch.Generator().manual_seed(0)

    def dataset(n):
        colour, shade = torch.randint(3, (n,), generator=g), torch.randint(2, (n,), generator=g)
        x = _images(colour.tolist()) + 0.05 * torch.rand(n, 3, 8, 8, generator=g)
        return [(x[i], {"colour": int(colour[i]), "shade": int(shade[i])}) for i in range(n)]

    train, test = dataset(60), dataset(120)
    net = nn.Sequential()
    net.add_module("block", nn.Conv2d(3, 3, 1))
    with torch.no_grad():  # identity 1x1 convolution
        net.block.weight.copy_(torch.eye(3)[:, :, None, None])
        net.block.bias.zero_()
    backbone = HookedBackbone(net, "block", preprocess=lambda x: x)
    read = SimpleNamespace(read=_read_colour([]))
    return SimpleNamespace(train=train, test=test, factor_names=("colour", "shade"), backbone=backbone,
                           image_size=8, factor_reader=read)


def test_true_concepts_are_the_factor_a_neuron_fires_on():
    world = _colour_world()
    units = Units("Neuron", world.backbone, image_size=8)
    concepts = true_concepts(units, [2, 0, 1], world, k=10)
    assert concepts.factor_U == ("colour",) * 3 and concepts.value_U.tolist() == [2, 0, 1]
    assert concepts.purity_U.tolist() == pytest.approx([1.0] * 3)
    assert concepts.count_U.tolist() == [10] * 3 and concepts.top_k == 10


def test_notebook05_sets_carry_notebook04s_concepts_and_their_truth(tmp_path):
    """Notebook 05's path end to end: concepts of the stored units (features and neurons,
    here both the identity convolution's channels) and each set's truth, by hand."""
    world = _colour_world()
    stores = {("EnergyDPS", "Feature"): SamplesStore("EnergyDPS", "Feature", {"a": 1}, root=tmp_path),
              ("MACO", "Feature"): SamplesStore("MACO", "Feature", {"a": 1}, root=tmp_path),
              ("EnergyDPS", "Neuron"): SamplesStore("EnergyDPS", "Neuron", {"a": 1}, root=tmp_path)}
    stores["EnergyDPS", "Feature"].put(2, _images([2, 2, 0, 2]), torch.zeros(4))  # 3/4 show colour 2
    stores["MACO", "Feature"].put(2, _images([1, 0, 0, 0]), torch.zeros(4))  # none does
    stores["EnergyDPS", "Neuron"].put(0, _images([0, 1, 1, 1]), torch.zeros(4))  # 1/4 shows colour 0
    stored = stored_study_sets(stores, world, Units("Neuron", world.backbone, image_size=8), top_k=10)
    assert stored.concepts == {"feature_2": ("colour", 2), "neuron_0": ("colour", 0)}
    assert stored.truth == {("feature_2", "EnergyDPS", "Feature"): 0.75, ("feature_2", "MACO", "Feature"): 0.0,
                            ("neuron_0", "EnergyDPS", "Neuron"): 0.25}


def test_missing_notebook04_stores_stop_with_the_command_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--profile smoke --out figures 04_energydps"):
        samples_stores("smoke", seed=0, root=tmp_path, create=False)
    assert list(tmp_path.iterdir()) == []  # looking created nothing
    stores = samples_stores("smoke", seed=0, root=tmp_path)
    assert sorted(stores) == [("DiffExplainer", "Feature"), ("EnergyDPS", "Feature"), ("EnergyDPS", "Neuron"),
                              ("MACO", "Feature"), ("TopK", "Feature")]
    assert len({s.folder for s in stores.values()}) == 5
    with pytest.raises(FileNotFoundError, match="empty"):  # an interrupted notebook 04 left them empty
        samples_stores("smoke", seed=0, root=tmp_path, create=False)
    for s in stores.values():
        s.put(1, _images([0]), torch.zeros(1))
    again = samples_stores("smoke", seed=0, root=tmp_path, create=False)
    assert {k: s.folder for k, s in again.items()} == {k: s.folder for k, s in stores.items()}
    assert samples_stores("smoke", seed=1, root=tmp_path)[("MACO", "Feature")].folder != stores[("MACO", "Feature")].folder

"""The feature inspector driven from Python, without a browser: set widget values,
click buttons, and check what it displays, the notes it saves and that sampling runs
in a background thread (klsc_lib.viz.inspector, klsc_lib.viz.inspector_data)."""

from __future__ import annotations

import csv
import json
import re
import threading

import numpy as np
import pytest
import torch

from klsc_lib.analysis.explanation_metrics import unit_concepts
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies.units import Units
from klsc_lib.energies import feature_score
from klsc_lib.samples_store import SamplesStore
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.viz.inspector import FeatureInspector, count_images
from klsc_lib.viz.inspector_data import FeatureNotes, SampleBatch, find_stores, to_png

from _tiny_world import tiny_transcoder, tiny_world


@pytest.fixture(scope="module")
def tiny():
    world = tiny_world()
    model, index = tiny_transcoder(world)
    return world, model, index


def make(tiny, tmp_path, stores=None, **kw) -> FeatureInspector:
    world, model, index = tiny
    return FeatureInspector(world, model, kw.pop("index", index), stores, notes_path=tmp_path / "notes.json",
                            guidance=GuidanceConfig.fast(kw.pop("steps", 6)), **kw)


def captions(box) -> list[str]:
    return [re.sub("<[^>]+>", "", tile.children[1].value) for tile in box.children if len(tile.children) == 2]


class FakeSampler:
    """Stands in for EnergyDPS: records the thread and parameters of every call, ticks
    the progress callback once per step, and can be held until ``release``."""

    def __init__(self, world, hold: bool = False):
        self.world, self.calls, self.threads = world, [], []
        self.started, self.gate = threading.Event(), threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, prior, backbone, model, feature, guidance, seeds, callback):
        n, steps = len(seeds), guidance.num_steps
        self.calls.append((feature, guidance.strength, guidance.cap, tuple(seeds)))
        self.threads.append(threading.get_ident())
        self.started.set()
        assert self.gate.wait(30)
        for i in range(steps):
            callback({"i": i})
        psi_B = torch.arange(n, dtype=torch.float32) + 10 * len(self.calls)
        return SampleBatch(self.world.test.images[:n], psi_B, psi_B / 100)


# ---------------------------------------------------------------- data helpers
def test_concept_is_the_most_shared_value_chance_corrected():
    # image factors: 'size' (2 values) is shared 3/4, 'colour' (4 values) shared 3/4 as well:
    # chance-corrected, colour wins (3/4 of 4 values beats 3/4 of 2 values).
    factors = {"size": np.array([0, 0, 0, 1]), "colour": np.array([2, 2, 2, 0])}
    found = unit_concepts(np.array([[0, 1, 2, 3]]), factors, {"size": 2, "colour": 4})
    assert found.factor_U == ("colour",) and (int(found.count_U[0]), found.top_k) == (3, 4)
    assert found.label(0, {"colour": ["red", "green", "blue"]}) == "colour=blue" and found.label(0) == "colour=2"
    # chance-corrected purity: (3/4 - 1/4) / (1 - 1/4) for colour
    assert found.purity_U[0] == pytest.approx((0.75 - 0.25) / 0.75)


def test_notes_round_trip_search_csv_and_bad_file(tmp_path):
    notes = FeatureNotes(tmp_path / "sub" / "notes.json")
    notes.set(3, "  red squares ")
    notes.set(7, "Top-left corner")
    notes.set(9, "red, top-left")
    notes.set(9, "")  # an empty note removes it
    again = FeatureNotes(tmp_path / "sub" / "notes.json")
    assert again.notes == {3: "red squares", 7: "Top-left corner"}
    assert again.search("TOP") == [7] and again.search("red") == [3] and again.search(" ") == []
    out = again.export_csv(tmp_path / "notes.csv")
    assert list(csv.DictReader(out.open())) == [{"feature": "3", "note": "red squares", "concept": ""},
                                                {"feature": "7", "note": "Top-left corner", "concept": ""}]
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="fix or delete"):
        FeatureNotes(tmp_path / "bad.json")


def test_find_stores_groups_feature_stores_by_method(tmp_path):
    SamplesStore("MACO", "Feature", {"steps": 8}, tmp_path)
    SamplesStore("EnergyDPS", "Feature", {"cap": 1.0}, tmp_path)
    SamplesStore("EnergyDPS", "Feature", {"cap": 2.0}, tmp_path)
    SamplesStore("EnergyDPS", "Neuron", {"cap": 1.0}, tmp_path)
    found = find_stores(tmp_path)
    assert list(found) == ["MACO", "EnergyDPS"]  # METHODS order
    assert sorted(s.config["cap"] for s in found["EnergyDPS"]) == [1.0, 2.0]
    with pytest.raises(FileNotFoundError, match="notebook 04"):
        find_stores(tmp_path / "missing")


def test_png_is_the_image_upscaled():
    from io import BytesIO

    from PIL import Image

    img = torch.full((3, 4, 4), -1.0)
    img[0, 0, 0] = 1.0  # one red pixel in the corner
    arr = np.asarray(Image.open(BytesIO(to_png(img, size=8))))
    assert arr.shape == (8, 8, 3)
    assert (arr[:2, :2] == [255, 0, 0]).all() and (arr[2:, 2:] == 0).all()


# ---------------------------------------------------------------- the widget
def test_shows_a_feature_with_its_top_images_and_concept(tiny, tmp_path):
    world, model, index = tiny
    insp = make(tiny, tmp_path, initial=5)
    assert insp.feature == 5 and ">5</span>" in insp.header.value
    ids = index.top_ids(5)[: insp.k]
    assert count_images(insp.topk_box) == len(ids) and captions(insp.topk_box)[0].startswith(f"#{ids[0]} ")
    # the header's concept, checked against the labels of the feature's top images by psi
    # over the first half of the test items (notebook 04's search), ranked here by brute force
    factor, value = re.search(r"concept: <b>(\w+)=(\w+)</b> \((\d+)/", insp.header.value).groups()[:2]
    count, of = map(int, re.search(r"\((\d+)/(\d+) top", insp.header.value).groups())
    half = len(world.test) // 2
    units = Units("Feature", world.backbone, model, image_size=world.image_size)
    with torch.no_grad():
        psi_N = units.energy(torch.full((half,), 5))(world.test.images[:half])
    top = psi_N.argsort(descending=True, stable=True)[:of].tolist()
    assert of == 20 and count == sum(world.test[i][1][factor] == int(value) for i in top)
    assert insp.error == "no samples store given: only generated samples are shown"
    assert bytes(insp.histogram.value).startswith(b"\x89PNG")


def test_unknown_ids_are_refused_not_clamped(tiny, tmp_path):
    insp = make(tiny, tmp_path, initial=2)
    for bad in (32, 10**6, -1):
        insp.id_box.value = bad
        assert insp.id_box.value == bad  # no silent clamping
        assert insp.feature == 2 and "unknown feature id" in insp.message.value and "0..31" in insp.error
    insp.id_box.value = 4
    assert insp.feature == 4 and "unknown" not in insp.error


def test_navigation_prev_next_random_and_concept_search(tiny, tmp_path):
    insp = make(tiny, tmp_path, initial=31)
    insp.next_button.click()
    assert insp.feature == 0
    insp.prev_button.click()
    assert insp.feature == 31
    insp.random_button.click()
    assert 0 <= insp.feature < 32 and insp.id_box.value == insp.feature
    label = insp.concept_search.options[1][1]
    insp.concept_search.value = label
    found = [v for _, v in insp.matches.options if v >= 0]
    assert sorted(found) == sorted(f for f, c in insp.concepts.items() if c.label == label) and found
    insp.matches.value = found[-1]
    assert insp.feature == found[-1] and label in insp.header.value


def test_notes_are_saved_reloaded_searched_and_exported(tiny, tmp_path):
    insp = make(tiny, tmp_path, initial=6)
    insp.note.value = "green blob"
    insp.save_note.click()
    assert json.loads((tmp_path / "notes.json").read_text()) == {"6": "green blob"}
    assert "green blob" in insp.header.value
    later = make(tiny, tmp_path, initial=0)  # a new session reads the notes back
    later.note_search.value = "GREEN"
    assert [v for _, v in later.matches.options if v >= 0] == [6]
    later.matches.value = 6
    assert later.note.value == "green blob"
    later.export_button.click()
    rows = list(csv.DictReader((tmp_path / "notes.csv").open()))
    assert rows == [{"feature": "6", "note": "green blob", "concept": later.concepts[6].label}]


def test_stored_samples_per_method_and_bad_stores(tiny, tmp_path):
    world = tiny[0]
    dps = SamplesStore("EnergyDPS", "Feature", {"cap": 1.0}, tmp_path / "samples")
    maco = SamplesStore("MACO", "Feature", {"steps": 4}, tmp_path / "samples")
    dps.put(3, world.test.images[:5], torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3]))
    maco.put(4, world.test.images[:2], torch.tensor([1.0, 2.0]))
    insp = make(tiny, tmp_path, tmp_path / "samples", initial=3)
    assert insp.error == ""
    assert count_images(insp.stored_boxes["EnergyDPS"]) == 5 and count_images(insp.stored_boxes["MACO"]) == 0
    assert "no MACO samples stored" in insp.stored_boxes["MACO"].children[0].value
    # the semantic-shift strip orders the stored EnergyDPS samples by psi, nearest the target first kept
    insp.n_strip = 3
    insp.target.value = 0.3
    assert captions(insp.strip_box) == ["ψ 0.20", "ψ 0.30", "ψ 0.40"]
    missing = make(tiny, tmp_path, tmp_path / "nowhere")
    assert "no samples store folder" in missing.message.value and missing.feature == 0


def test_empty_or_mismatched_index_is_a_message(tiny, tmp_path):
    insp = make(tiny, tmp_path, index=TopKIndex(32, 8))
    assert "index is empty" in insp.error and count_images(insp.topk_box) == 0
    assert insp.concepts == {} and insp.feature == 0
    other = make(tiny, tmp_path, index=TopKIndex(10, 8))
    assert "holds 10 units but the transcoder has 32" in other.error


def test_sampling_runs_in_a_background_thread_with_progress_and_cache(tiny, tmp_path):
    world = tiny[0]
    sampler = FakeSampler(world, hold=True)
    insp = make(tiny, tmp_path, sampler=sampler, initial=1, n_samples=3)
    insp.more_button.click()  # returns at once although the sampler is held
    assert sampler.started.wait(30)
    assert count_images(insp.generated_box) == 0 and insp._worker.is_alive()
    insp.note.value = "still responsive"  # the widget takes input while sampling
    insp.save_note.click()
    sampler.gate.set()
    insp.wait(30)
    assert sampler.threads[0] != threading.main_thread().ident
    assert insp.progress.value == insp.progress.max == 6 and insp.progress.bar_style == "success"
    assert count_images(insp.generated_box) == 3 and insp.notes.get(1) == "still responsive"
    # a new cap re-samples; coming back to the old cap shows the cached result, no new call
    first_cap = insp.cap.value
    insp.cap.value = first_cap / 2
    insp.wait(30)
    assert len(sampler.calls) == 2 and sampler.calls[1][2] == round(first_cap / 2, 4)
    insp.cap.value = first_cap
    insp.wait(30)
    assert len(sampler.calls) == 2 and captions(insp.generated_box) == ["ψ 10.00", "ψ 11.00", "ψ 12.00"]
    insp.more_button.click()  # "more" adds a batch with new seeds
    insp.wait(30)
    assert count_images(insp.generated_box) == 6 and set(sampler.calls[0][3]).isdisjoint(sampler.calls[2][3])


def test_sampler_errors_are_shown_in_the_widget(tiny, tmp_path):
    def broken(*args, **kwargs):
        raise FloatingPointError("psi is NaN")

    insp = make(tiny, tmp_path, sampler=broken)
    insp.generate(more=True)
    insp.wait(30)
    assert "sampling feature 0 failed: FloatingPointError: psi is NaN" in insp.error
    assert insp.progress.bar_style == "danger"


def test_real_energy_dps_samples_and_their_scores(tiny, tmp_path):
    world, model, _ = tiny
    insp = make(tiny, tmp_path, initial=7, n_samples=2, steps=4)
    insp.generate(more=True)
    insp.wait(120)
    (batch,) = insp.generated[insp._key()]
    assert count_images(insp.generated_box) == 2 and insp.error.startswith("no samples store given")
    with torch.no_grad():
        psi = feature_score(world.backbone, model, 7)(batch.images_BCHW)
    torch.testing.assert_close(batch.psi_B, psi, rtol=1e-4, atol=1e-5)
    assert batch.images_BCHW.shape == (2, 3, 32, 32) and batch.images_BCHW.abs().max() <= 1.0 + 1e-6

"""Blinded packets leak neither method nor unit; the key round-trips; the HTML form exports
a sheet that load_ratings accepts (headless Chromium)."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from klsc_lib.analysis.raters import load_ratings, read_key, unblind, write_packet, write_ratings
from klsc_lib.analysis.raters.packets import SampleSet
from klsc_lib.paper_values import METHODS

UNITS = ("feature_9863", "feature_4831", "neuron_214")
NOTE = "SECRET-NOTE-ZEBRA"


def _sets() -> list[SampleSet]:
    gen = torch.Generator().manual_seed(0)
    return [SampleSet(u, m, torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1, note=NOTE)
            for u in UNITS for m in METHODS[1:]]


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kinds.append(data[pos + 4:pos + 8])
        assert zlib.crc32(data[pos + 4:pos + 8 + length]) == int.from_bytes(data[pos + 8 + length:pos + 12 + length],
                                                                            "big")
        pos += 12 + length
    return kinds


@pytest.fixture
def packet(tmp_path):
    return write_packet(_sets(), tmp_path / "packet", tmp_path / "key.csv", seed=3, cell=32)


def test_packet_leaks_no_method_unit_or_note(packet):
    secrets = [*METHODS, *UNITS, "9863", "4831", "214", NOTE, "feature", "neuron"]
    files = sorted(packet.folder.iterdir())
    assert {f.name for f in files} == {f"{i}.png" for i in packet.item_ids} | {"sheet.csv", "form.html"}
    for f in files:
        assert not any(s.lower() in f.name.lower() for s in secrets)
        if f.suffix == ".png":
            assert set(_png_chunks(f.read_bytes())) <= {b"IHDR", b"IDAT", b"IEND"}, "no text / time chunks"
            assert Image.open(f).size == (2 * 32 + 4, 2 * 32 + 4)
        else:
            text = f.read_text().lower()
            assert not any(s.lower() in text for s in secrets), f.name


def test_key_round_trips_and_order_is_seeded(packet, tmp_path):
    key = read_key(packet.key_path)
    assert list(key) == list(packet.item_ids)
    assert sorted((k.unit, k.method) for k in key.values()) == sorted((u, m) for u in UNITS for m in METHODS[1:])
    again = write_packet(_sets(), tmp_path / "again", tmp_path / "key2.csv", seed=3, cell=32)
    assert again.item_ids == packet.item_ids
    assert again.key_path.read_text() == packet.key_path.read_text()
    other = write_packet(_sets(), tmp_path / "other", tmp_path / "key3.csv", seed=4, cell=32)
    assert set(other.item_ids).isdisjoint(packet.item_ids)
    # the grid of an item shows that item's images: decode and compare with the source set
    sets = {(s.unit, s.method): s for s in _sets()}
    for item_id, k in key.items():
        img = torch.from_numpy(np.asarray(Image.open(packet.grid_path(item_id)), dtype=np.float32))
        cell = img[:32, :32].permute(2, 0, 1)[:, ::4, ::4]
        expected = ((sets[(k.unit, k.method)].images_BCHW[0] + 1) * 127.5).round()
        assert torch.equal(cell, expected)


def test_key_inside_packet_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the packet"):
        write_packet(_sets(), tmp_path / "p", tmp_path / "p" / "key.csv", seed=0)


def test_unblind_joins_sheet_and_key(packet, tmp_path):
    sheet = tmp_path / "filled.csv"
    rows = ["item_id,concept,score"] + [f'{i},"red, round things",{n % 4 + 1}' for n, i in enumerate(packet.item_ids)]
    sheet.write_text("\n".join(rows) + "\n")
    ratings = unblind(sheet, packet.key_path, rater="H1", rater_kind="human")
    key = read_key(packet.key_path)
    assert [(r.feature, r.method, r.score) for r in ratings] == [
        (key[i].unit, key[i].method, n % 4 + 1) for n, i in enumerate(packet.item_ids)]
    assert load_ratings(write_ratings(ratings, tmp_path / "r.csv")) == ratings
    sheet.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="not rated"):
        unblind(sheet, packet.key_path, "H1", "human")
    assert len(unblind(sheet, packet.key_path, "H1", "human", allow_missing=True)) == len(rows) - 2
    sheet.write_text("\n".join(rows[:2] + [rows[1]]) + "\n")
    with pytest.raises(ValueError, match="repeated"):
        unblind(sheet, packet.key_path, "H1", "human", allow_missing=True)


def _chromium() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no headless browser: needs `pip install playwright` and a "
                                                "`chromium` on PATH (apt-get install -y chromium)")
def test_html_form_exports_a_sheet_load_ratings_accepts(packet, tmp_path):
    from playwright.sync_api import sync_playwright

    concepts = {i: f'shape "{n}", with comma' for n, i in enumerate(packet.item_ids)}
    scores = {i: n % 4 + 1 for n, i in enumerate(packet.item_ids)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"], headless=True)
        page = browser.new_page(accept_downloads=True)
        page.goto(Path(packet.form_path).resolve().as_uri())
        assert page.locator("section.item").count() == len(packet.item_ids)
        assert "reasonably visible" in page.content()  # the App K rubric
        page.click("#export")  # nothing scored yet: no download, a message
        assert "Please score" in page.inner_text("#status")
        for i in packet.item_ids:
            page.fill(f'input[name="concept-{i}"]', concepts[i])
            page.check(f'input[name="score-{i}"][value="{scores[i]}"]')
        with page.expect_download() as dl:
            page.click("#export")
        sheet = tmp_path / "exported.csv"
        dl.value.save_as(sheet)
        browser.close()
    ratings = unblind(sheet, packet.key_path, rater="H1", rater_kind="human")
    loaded = load_ratings(write_ratings(ratings, tmp_path / "h1.csv"))
    key = read_key(packet.key_path)
    expected = {(key[i].unit, key[i].method): (scores[i], concepts[i]) for i in packet.item_ids}
    assert {(r.feature, r.method): (r.score, r.concept) for r in loaded} == expected

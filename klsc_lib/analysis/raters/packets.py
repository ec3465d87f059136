"""Blinded rater packets (paper App K): one 2x2 grid per (unit, method), no labels.

A packet folder holds ``<item_id>.png`` grids (random opaque ids, shuffled order, no
PNG text chunks), ``sheet.csv`` (``item_id, concept, score`` to fill in) and
``form.html``: a self-contained page (grids inlined) with the App K rubric that a
rater opens in any browser and that exports the same CSV. The key mapping item ids
back to (unit, method) is written *apart* from the packet, so the packet can be
handed out as is. Everything is deterministic in the seed. Notes a user attached to
a unit never enter the packet.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from PIL import Image

from klsc_lib.analysis.raters.prompts import HUMAN_INSTRUCTIONS, RUBRIC, RUBRIC_SUMMARY, TASK
from klsc_lib.analysis.raters.ratings import SCORES, Rating
from klsc_lib.paper_values import METHODS, UNIT_KINDS
from klsc_lib.runtime import atomic_path, atomic_write_text

SHEET_COLUMNS = ("item_id", "concept", "score")
KEY_COLUMNS = ("item_id", "unit", "unit_kind", "method")


@dataclass(frozen=True)
class SampleSet:
    """The images one method made for one unit (``images_BCHW`` in [-1, 1]; the grid shows
    the first four, App K; fewer leave blank cells, e.g. in a smoke run)."""

    unit: str
    method: str
    images_BCHW: torch.Tensor
    unit_kind: str = "Feature"
    note: str | None = None  # the user's own label: kept out of every packet file


@dataclass(frozen=True)
class KeyEntry:
    unit: str
    unit_kind: str
    method: str


@dataclass(frozen=True)
class Packet:
    folder: Path
    key_path: Path
    item_ids: tuple[str, ...]  # in the shuffled order of the sheet and the form

    @property
    def sheet_path(self) -> Path:
        return self.folder / "sheet.csv"

    @property
    def form_path(self) -> Path:
        return self.folder / "form.html"

    def grid_path(self, item_id: str) -> Path:
        return self.folder / f"{item_id}.png"


def as_sample_set(item: SampleSet | tuple) -> SampleSet:
    """Accept a :class:`SampleSet` or a ``(unit, method, images_BCHW)`` tuple."""
    s = item if isinstance(item, SampleSet) else SampleSet(str(item[0]), str(item[1]), item[2])
    if s.method not in METHODS:
        raise ValueError(f"unit {s.unit}: unknown method {s.method!r}; expected one of {METHODS}")
    if s.unit_kind not in UNIT_KINDS:
        raise ValueError(f"unit {s.unit}: unknown unit kind {s.unit_kind!r}; expected one of {UNIT_KINDS}")
    x = s.images_BCHW
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[0] >= 1 and x.shape[1] in (1, 3)):
        raise ValueError(f"unit {s.unit}, {s.method}: images_BCHW must be a (B>=1, 1|3, H, W) tensor, "
                         f"got {getattr(x, 'shape', type(x))}")
    if not torch.isfinite(x).all():
        raise ValueError(f"unit {s.unit}, {s.method}: images contain NaN or inf")
    return s


def grid_image(images_BCHW: torch.Tensor, cell: int = 128, gap: int = 4) -> Image.Image:
    """The first four images as a 2x2 grid (App K), each cell upscaled to ``cell`` pixels
    (cells without an image stay white)."""
    x = images_BCHW[:4].detach().float().cpu().clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = torch.nn.functional.interpolate(x, size=(cell, cell), mode="nearest" if x.shape[-1] < cell else "area")
    u8_BHWC = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    side = 2 * cell + gap
    canvas = np.full((side, side, 3), 255, np.uint8)
    for i, img in enumerate(u8_BHWC):
        r, c = divmod(i, 2)
        canvas[r * (cell + gap):r * (cell + gap) + cell, c * (cell + gap):c * (cell + gap) + cell] = img
    return Image.fromarray(canvas)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)  # no pnginfo: no text chunks
    return buf.getvalue()


def write_packet(samples: Iterable[SampleSet | tuple], folder: str | Path, key_path: str | Path, seed: int,
                 cell: int = 128, title: str = "Blinded interpretability study") -> Packet:
    """Write a blinded packet for ``samples`` into ``folder`` and its key to ``key_path``.

    ``key_path`` must lie outside ``folder``. Item ids and order depend only on ``seed``
    and the order of ``samples``.
    """
    folder, key_path = Path(folder), Path(key_path)
    if folder.resolve() in key_path.resolve().parents:
        raise ValueError(f"the key {key_path} must be written outside the packet folder {folder}")
    sets = [as_sample_set(s) for s in samples]
    seen = set()
    for s in sets:
        if (s.unit_kind, s.unit, s.method) in seen:
            raise ValueError(f"two sample sets for {s.unit_kind} {s.unit}, {s.method}")
        seen.add((s.unit_kind, s.unit, s.method))
    rng = random.Random(seed)
    ids: list[str] = []
    while len(ids) < len(sets):
        new = f"{rng.getrandbits(48):012x}"
        if new not in ids:
            ids.append(new)
    order = list(range(len(sets)))
    rng.shuffle(order)
    folder.mkdir(parents=True, exist_ok=True)
    grids: dict[str, bytes] = {}
    for item_id, i in zip(ids, order):
        grids[item_id] = _png_bytes(grid_image(sets[i].images_BCHW, cell))
        with atomic_path(folder / f"{item_id}.png") as tmp:
            tmp.write_bytes(grids[item_id])
    sheet = io.StringIO()
    csv.writer(sheet, lineterminator="\n").writerows([SHEET_COLUMNS, *[(i, "", "") for i in ids]])
    atomic_write_text(folder / "sheet.csv", sheet.getvalue())
    atomic_write_text(folder / "form.html", form_html(grids, title))
    key = io.StringIO()
    rows = [(item_id, sets[i].unit, sets[i].unit_kind, sets[i].method) for item_id, i in zip(ids, order)]
    csv.writer(key, lineterminator="\n").writerows([KEY_COLUMNS, *rows])
    atomic_write_text(key_path, key.getvalue())
    return Packet(folder, key_path, tuple(ids))


def read_key(key_path: str | Path) -> dict[str, KeyEntry]:
    """item_id -> (unit, unit_kind, method) from a key written by :func:`write_packet`."""
    with open(key_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != KEY_COLUMNS:
            raise ValueError(f"{key_path}: header {reader.fieldnames} is not a packet key {KEY_COLUMNS}")
        return {r["item_id"]: KeyEntry(r["unit"], r["unit_kind"], r["method"]) for r in reader}


def unblind(sheet_path: str | Path, key_path: str | Path, rater: str, rater_kind: str,
            allow_missing: bool = False) -> list[Rating]:
    """Join a filled rater sheet (``item_id, concept, score``) with the key into ratings.

    Every row must name an item of the key once, with an integer score 1-4; anything
    else raises with the sheet's row. Items of the key left unrated raise too, unless
    ``allow_missing`` (an AI rater's sheet, whose parse failures are recorded apart).
    """
    key = read_key(key_path)
    with open(sheet_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != SHEET_COLUMNS:
            raise ValueError(f"{sheet_path}: header {reader.fieldnames} is not a rater sheet {SHEET_COLUMNS}")
        out, done = [], set()
        for r in reader:
            item, score = r["item_id"].strip(), r["score"].strip()
            where = f"{sheet_path}: row {reader.line_num}"
            if item not in key or item in done:
                raise ValueError(f"{where}: item id {item!r} is {'repeated' if item in done else 'not in the key'}")
            if score not in {str(s) for s in SCORES}:
                raise ValueError(f"{where}, column 'score': {score!r} is not an integer in 1-4")
            done.add(item)
            k = key[item]
            out.append(Rating(k.unit, k.method, rater, rater_kind, int(score), r["concept"].strip(), k.unit_kind))
    if (missing := sorted(set(key) - done)) and not allow_missing:
        raise ValueError(f"{sheet_path}: {len(missing)} item(s) of the key are not rated, e.g. {missing[:3]}")
    return out


def form_html(grids: Mapping[str, bytes], title: str) -> str:
    """A self-contained rating form: grids inlined, App K rubric, CSV export in the page."""
    rubric = "".join(f"<li><b>{s}</b>: {html.escape(t)}</li>" for s, t in RUBRIC.items())
    items = []
    for n, (item_id, png) in enumerate(grids.items(), 1):
        radios = "".join(f'<label><input type="radio" name="score-{item_id}" value="{s}"> {s}</label> '
                         for s in SCORES)
        items.append(
            f'<section class="item" data-item="{item_id}"><h3>Grid {n} of {len(grids)}</h3>'
            f'<img alt="grid {n}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f'<p><label>Shared concept: <input type="text" class="concept" size="60" '
            f'name="concept-{item_id}"></label></p><p>Score: {radios}</p></section>')
    script = """
const ids = %s;
function quote(v) { return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function exportCsv() {
  const rows = ["item_id,concept,score"], missing = [];
  ids.forEach((id, n) => {
    const s = document.querySelector('input[name="score-' + id + '"]:checked');
    const c = document.querySelector('input[name="concept-' + id + '"]').value.trim();
    if (!s) { missing.push(n + 1); return; }
    rows.push([id, quote(c), s.value].join(","));
  });
  const status = document.getElementById("status");
  if (missing.length) { status.textContent = "Please score grid(s) " + missing.join(", ") + " first."; return; }
  const blob = new Blob([rows.join("\\n") + "\\n"], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = "ratings.csv"; a.click();
  status.textContent = "Exported " + ids.length + " ratings to ratings.csv.";
}""" % json.dumps(list(grids))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:auto}} .item{{border-top:1px solid #ccc;padding:1em 0}}
img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Each grid shows four images. {html.escape(TASK)} {html.escape(HUMAN_INSTRUCTIONS)}</p>
<h2>Scoring rubric</h2><ul>{rubric}</ul><p>{html.escape(RUBRIC_SUMMARY)}</p>
{''.join(items)}
<p><button id="export" onclick="exportCsv()">Export ratings (CSV)</button> <span id="status"></span></p>
<script>{script}</script></body></html>
"""

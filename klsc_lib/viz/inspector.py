"""The feature inspector: an ipywidgets explorer of transcoder features (paper Sec 3.1,
App J.2-J.4, L.3), for any notebook, JupyterLab or VS Code::

    from klsc_lib.viz.inspector import FeatureInspector
    FeatureInspector(world, fitted, index, store_root)

For one feature at a time it shows the top-k real images with activation heat-maps
(the top-k index), the samples stored by notebook 04 for every method present
(EnergyDPS, MACO, DiffExplainer, ...), EnergyDPS samples generated on demand in a
background thread at the strength and cap of two sliders (cached by parameters), the
feature's activation histogram over the held-out set with the cap and the samples
marked, the semantic-shift strip (samples ordered by psi around a target level,
App L.3), and a note per feature saved next to the transcoder. Every image is one
``widgets.Image`` (PNG bytes). Bad input (an unknown id, a missing store, an empty
index) becomes a message inside the widget.
"""

from __future__ import annotations

import html
import io
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from klsc_lib.interfaces import World
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds
from klsc_lib.runtime import cache_dir
from klsc_lib.samples_store import SamplesStore
from klsc_lib.sae.artifacts import FittedTranscoder
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.sae.transcoder import Transcoder
from klsc_lib.viz.inspector_data import (Concept, FeatureNotes, SampleBatch, feature_concepts, find_stores,
                                         peak_code, sample_feature, to_png)
from klsc_lib.energies import feature_score
from klsc_lib.energies.units import Units

PX = 88  # displayed image side, pixels
ERROR_STYLE = "color:#a40000;background:#fdecea;padding:4px 8px;border-radius:4px"


def count_images(box: widgets.Widget) -> int:
    """Number of ``widgets.Image`` inside ``box`` (recursively)."""
    if isinstance(box, widgets.Image):
        return 1
    return sum(count_images(c) for c in getattr(box, "children", ()))


def _tile(png: bytes, caption: str, size: int = PX) -> widgets.VBox:
    image = widgets.Image(value=png, format="png", width=size, height=size)
    return widgets.VBox([image, widgets.HTML(f"<small>{html.escape(caption)}</small>")],
                        layout=widgets.Layout(align_items="center", margin="1px"))


def _row(tiles: list[widgets.Widget], empty: str) -> list[widgets.Widget]:
    return tiles or [widgets.HTML(f"<i style='color:#666'>{html.escape(empty)}</i>")]


class FeatureInspector:
    """Explore the features of ``transcoder`` (a :class:`FittedTranscoder` or a bare
    :class:`Transcoder`) on ``world``: ``index`` is the features' top-k index over
    ``world.test`` (ids are test-item ids), ``stores`` a samples-store root folder or
    :class:`SamplesStore` objects. Display the object (or ``.widget``) in a notebook.

    ``notes_path`` defaults to ``notes.json`` in the transcoder's cache folder (for a bare
    transcoder: ``$KLSC_CACHE/notes/features.json``). Generated samples follow ``guidance``
    (default :meth:`GuidanceConfig.fast`, notebook 04's), with the strength (x the paper's
    total guidance, App J.4) and a fixed cap from the sliders. Concepts are notebook
    04's (:func:`~klsc_lib.explain.true_concepts` over the top ``concept_k`` images by
    psi; pass notebook 04's ``top_k``), so the same feature carries the same label here,
    in notebook 04 and in notebook 05."""

    def __init__(self, world: World, transcoder: FittedTranscoder | Transcoder, index: TopKIndex,
                 stores: str | Path | Iterable[SamplesStore] | None = None, *, k: int = 8, n_samples: int = 4,
                 guidance: GuidanceConfig = GuidanceConfig.fast(), strip: int = 8,
                 notes_path: str | Path | None = None, initial: int = 0,
                 seed: int = 0, concept_k: int = 20,
                 value_names: Mapping[str, Sequence[Any]] | None = None, sampler=sample_feature):
        fitted = transcoder if isinstance(transcoder, FittedTranscoder) else None
        self.world, self.index, self.k, self.n_samples = world, index, k, n_samples
        self.model: Transcoder = fitted.model if fitted else transcoder
        self.backbone = fitted.backbone if fitted else world.backbone
        self.n_features = self.model.cfg.d_sae
        self.guidance, self.n_strip, self.seed, self._sampler = guidance, strip, seed, sampler
        self.notes_path = Path(notes_path) if notes_path else (fitted.folder / "notes.json" if fitted else
                                                              cache_dir() / "notes" / "features.json")
        self.feature: int | None = None
        self.error = ""  # the message shown, "" when all is well
        self.sample_threads: list[int] = []  # thread ids that ran the sampler (for tests and debugging)
        self.generated: dict[tuple[int, float, float], list[SampleBatch]] = {}  # cache by parameters
        self._lock, self._worker, self._pending = threading.Lock(), None, None
        self._quiet = False  # True while the inspector itself moves the sliders
        self._startup: list[str] = []

        try:
            self.notes = FeatureNotes(self.notes_path)
        except ValueError as err:
            self._startup.append(str(err))
            self.notes = FeatureNotes(self.notes_path.with_suffix(".recovered.json"))
        try:
            self.stores = find_stores(stores) if stores is not None else {}
            if stores is None:
                self._startup.append("no samples store given: only generated samples are shown")
        except (FileNotFoundError, ValueError) as err:
            self.stores = {}
            self._startup.append(str(err))
        if index.n_units != self.n_features:
            self._startup.append(f"the index holds {index.n_units} units but the transcoder has {self.n_features} "
                                 "features: pass the index built from this transcoder (load_or_build_index)")
        if index.n_images == 0:
            self._startup.append("the top-k index is empty (it saw no images): build it with "
                                 "load_or_build_index(fitted, 'features', k) before inspecting")
            self.concepts: dict[int, Concept] = {}
        else:
            units = Units("Feature", self.backbone, self.model, image_size=world.image_size)
            names = value_names if value_names is not None else world.value_names
            self.concepts = feature_concepts(units, world, concept_k, names)
        self._build()
        self.show(initial)

    # ------------------------------------------------------------ layout
    def _build(self) -> None:
        W = widgets
        self.id_box = W.IntText(value=0, description="feature", layout=W.Layout(width="170px"))
        self.prev_button, self.next_button = W.Button(description="◀", layout=W.Layout(width="40px")), \
            W.Button(description="▶", layout=W.Layout(width="40px"))
        self.random_button = W.Button(description="random", icon="random", layout=W.Layout(width="90px"))
        by_concept: dict[str, list[int]] = {}
        for f, c in sorted(self.concepts.items(), key=lambda fc: -fc[1].purity):
            by_concept.setdefault(c.label, []).append(f)
        self._by_concept = by_concept
        self.concept_search = W.Dropdown(options=[("concept…", "")] + [(f"{c} ({len(fs)})", c) for c, fs in
                                         sorted(by_concept.items())], layout=W.Layout(width="190px"))
        self.note_search = W.Text(placeholder="search notes", continuous_update=False, layout=W.Layout(width="150px"))
        self.matches = W.Dropdown(options=[("matches", -1)], layout=W.Layout(width="200px"))
        self.header = W.HTML()
        self.message = W.HTML()
        self.topk_box = W.HBox(layout=W.Layout(flex_flow="row wrap", max_width=f"{4 * (PX + 8)}px"))
        self.stored_boxes = {m: W.HBox(layout=W.Layout(flex_flow="row wrap")) for m in self.stores}
        self.generated_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.more_button = W.Button(description="generate more", icon="plus", button_style="primary")
        steps = len(self.guidance.timesteps(self.world.prior.schedule))
        self.progress = W.IntProgress(value=0, min=0, max=steps, description="sampling",
                                      layout=W.Layout(width="260px"))
        default = self.guidance.strength
        slider = dict(continuous_update=False, style={"description_width": "70px"}, layout=W.Layout(width="330px"))
        self.strength = W.FloatLogSlider(value=default, base=10, min=np.log10(default) - 1.5,
                                         max=np.log10(default) + 1, step=0.05, description="strength",
                                         readout_format=".3g", **slider)
        self.cap = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.01, description="cap c", **slider)
        self.target = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.01, description="target ψ", **slider)
        self.histogram = W.Image(format="png", layout=W.Layout(width="420px"))
        self.strip_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.note = W.Text(placeholder="a short label for this feature", layout=W.Layout(width="300px"))
        self.save_note = W.Button(description="save note", icon="save")
        self.export_button = W.Button(description="export CSV", icon="download")
        self.note_status = W.HTML()

        self.id_box.observe(lambda ch: self.show(ch["new"]), names="value")
        self.prev_button.on_click(lambda _: self._step(-1))
        self.next_button.on_click(lambda _: self._step(+1))
        self.random_button.on_click(lambda _: self.id_box.set_trait("value", random.randrange(self.n_features)))
        self.concept_search.observe(lambda ch: self._set_matches(self._by_concept.get(ch["new"], [])), names="value")
        self.note_search.observe(lambda ch: self._set_matches(self.notes.search(ch["new"])), names="value")
        self.matches.observe(lambda ch: ch["new"] >= 0 and self.id_box.set_trait("value", ch["new"]), names="value")
        self.more_button.on_click(lambda _: self.generate(more=True))
        for s in (self.strength, self.cap):
            s.observe(lambda _: None if self._quiet else self.generate(), names="value")
        self.target.observe(lambda _: self._render_strip(), names="value")
        self.save_note.on_click(lambda _: self.set_note(self.note.value))
        self.export_button.on_click(lambda _: self.export_notes())

        def section(title: str, *body: widgets.Widget) -> widgets.VBox:
            return W.VBox([W.HTML(f"<b>{html.escape(title)}</b>"), *body], layout=W.Layout(margin="0 12px 8px 0"))

        stored = [section(f"{m} (stored)", box) for m, box in self.stored_boxes.items()]
        left = section(f"Top-{self.k} real images (heat-map: activation)", self.topk_box)
        right = W.VBox([*stored, section("EnergyDPS, generated at λ and c", self.generated_box,
                                         W.HBox([self.more_button, self.progress]))])
        self.widget = W.VBox([
            W.HBox([self.id_box, self.prev_button, self.next_button, self.random_button, self.concept_search,
                    self.note_search, self.matches], layout=W.Layout(flex_flow="row wrap")),
            self.header, self.message, W.HBox([left, right]),
            W.HBox([section("Activation over the held-out images", self.histogram),
                    section("Guidance", self.strength, self.cap, self.target,
                            W.HTML("<small>strip: samples of this feature nearest the target ψ, "
                                   "ordered by ψ (App L.3)</small>"), self.strip_box)]),
            W.HBox([self.note, self.save_note, self.export_button, self.note_status]),
        ], layout=W.Layout(padding="4px"))
        # CSS classes name the parts for browser tests and user stylesheets
        for part, name in ((self.widget, "inspector"), (self.id_box, "feature-input"), (self.message, "message"),
                           (self.topk_box, "topk"), (self.generated_box, "generated"), (self.strength, "strength"),
                           (self.cap, "cap"), (self.strip_box, "strip"), (self.progress, "progress"),
                           *((box, f"stored-{m}") for m, box in self.stored_boxes.items())):
            part.add_class(f"klsc-{name}")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------ messages and navigation
    def _say(self, text: str) -> None:
        self.error = text
        self.message.value = f"<div style='{ERROR_STYLE}'>{html.escape(text)}</div>" if text else ""

    def _step(self, delta: int) -> None:
        base = self.feature if self.feature is not None else 0
        self.id_box.value = (base + delta) % self.n_features

    def _set_matches(self, features: list[int]) -> None:
        label = lambda f: f"{f}: {self.concepts[f].label} {self.concepts[f].count}/{self.concepts[f].of}" \
            if f in self.concepts else f"{f}: {self.notes.get(f)}"
        self.matches.options = [(f"{len(features)} matches", -1)] + [(label(f), f) for f in features]
        self.matches.value = -1

    # ------------------------------------------------------------ one feature
    def show(self, feature: Any) -> None:
        """Display ``feature``; an id outside the transcoder leaves the last feature shown
        and says so (no clamping)."""
        if not (isinstance(feature, (int, np.integer)) and 0 <= feature < self.n_features):
            self._say(f"unknown feature id {feature!r}: this transcoder has {self.n_features} features "
                      f"(ids 0..{self.n_features - 1})")
            return
        if self.id_box.value != feature:
            self.id_box.value = int(feature)  # observer calls show again
            return
        self.feature = int(feature)
        problems = list(self._startup)
        concept = self.concepts.get(self.feature)
        note = self.notes.get(self.feature)
        self.header.value = (f"<h3 style='margin:4px 0'>feature <span class='klsc-feature-id'>{self.feature}</span>"
                             f" <small>of {self.n_features}</small></h3>" + (
                                 f"concept: <b>{html.escape(concept.label)}</b> ({concept.count}/{concept.of} top "
                                 f"images by psi, purity {concept.purity:.2f})" if concept else "concept: none (no indexed images)") +
                             (f" · note: <i>{html.escape(note)}</i>" if note else ""))
        self.note.value = note
        self.note_status.value = ""
        problems += self._render_topk()
        problems += self._render_stored()
        self._set_slider_ranges()
        self._render_generated()
        self._say(" · ".join(problems))

    def _render_topk(self) -> list[str]:
        ids = self.index.top_ids(self.feature)[: self.k] if self.index.n_images else []
        if not ids:
            self.topk_box.children = _row([], "no indexed image activates this feature")
            self._top_psi = torch.zeros(0)
            return []
        images_KCHW = torch.stack([self.world.test[i][0] for i in ids])
        peaks_K, maps_KHW = peak_code(self.backbone, self.model, self.feature, images_KCHW)
        with torch.no_grad():
            self._top_psi = feature_score(self.backbone, self.model, self.feature)(
                images_KCHW.to(self.model.W_enc_FCkk.device)).float().cpu()
        vmax = float(maps_KHW.max())
        self.topk_box.children = [_tile(to_png(img, m, vmax, PX), f"#{i} · {float(p):.2g}")
                                  for i, img, m, p in zip(ids, images_KCHW, maps_KHW, peaks_K)]
        return []

    def _render_stored(self) -> list[str]:
        problems = []
        self._stored: dict[str, SampleBatch] = {}
        for method, box in self.stored_boxes.items():
            store = next((s for s in self.stores[method] if s.has(self.feature)), None)
            if store is None:
                box.children = _row([], f"no {method} samples stored for this feature")
                continue
            try:
                samples = store.get(self.feature)
            except ValueError as err:
                box.children, _ = _row([], "unreadable"), problems.append(str(err))
                continue
            peaks = peak_code(self.backbone, self.model, self.feature, samples.images_BCHW)[0]
            self._stored[method] = SampleBatch(samples.images_BCHW.float(), samples.psi_B, peaks)
            box.children = [_tile(to_png(x, size=PX), f"ψ {float(p):.2f}")
                            for x, p in zip(samples.images_BCHW.float(), samples.psi_B)]
        return problems

    def _set_slider_ranges(self) -> None:
        """The cap and target sliders span the feature's scale: up to twice the larger of
        its top images' psi and its stored samples' psi; the cap starts at the mean psi of
        the top four images (the matched target of Sec 3.2)."""
        psis = [self._top_psi] + [b.psi_B for b in self._stored.values()]
        top = float(torch.cat(psis).max()) if sum(len(p) for p in psis) else 1.0
        hi = max(2 * top, 1e-2)
        level = float(self._top_psi[:4].mean()) if len(self._top_psi) else hi / 2
        self._quiet = True
        try:
            for s in (self.cap, self.target):
                s.max = max(hi, s.min + 1e-2)
                s.step = s.max / 200
            self.cap.value = min(max(level, 0.0), self.cap.max)
            self.target.value = self.cap.value
        finally:
            self._quiet = False

    def _key(self) -> tuple[int, float, float]:
        return (self.feature, round(float(self.strength.value), 4), round(float(self.cap.value), 4))

    # ------------------------------------------------------------ sampling
    def generate(self, more: bool = False) -> None:
        """Sample the current feature at the sliders' strength and cap in a background
        thread: ``more`` adds a batch with new seeds, otherwise a cached result is shown
        and nothing is sampled. The request replaces any queued one."""
        if self.feature is None:
            return
        key = self._key()
        if not more and key in self.generated:
            self._render_generated()
            return
        with self._lock:
            self._pending = key
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="klsc-inspector-sampler", daemon=True)
                self._worker.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until queued sampling is done (tests, scripts)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                key, self._pending = self._pending, None
                if key is None:
                    self._worker = None
                    return
            feature, strength, cap = key
            done = self.generated.get(key, [])
            seeds = sample_seeds(self.seed, feature, self.n_samples, start=len(done) * self.n_samples)
            self.progress.value, self.progress.bar_style = 0, "info"
            self.progress.description = f"strength {strength:.3g}"
            self.sample_threads.append(threading.get_ident())

            def tick(info: dict) -> None:
                self.progress.value = min(int(info["i"]) + 1, self.progress.max)

            try:
                guidance = replace(self.guidance, strength=strength, cap_rule="fixed", cap=cap)
                batch = self._sampler(self.world.prior, self.backbone, self.model, feature, guidance, seeds,
                                      callback=tick)
            except Exception as err:  # noqa: BLE001  (shown in the widget, not raised into a dead thread)
                self.progress.bar_style = "danger"
                self._say(f"sampling feature {feature} failed: {type(err).__name__}: {err}")
                continue
            self.generated[key] = done + [batch]
            self.progress.value, self.progress.bar_style = self.progress.max, "success"
            if feature == self.feature:
                self._render_generated()

    def _batches(self) -> list[SampleBatch]:
        return self.generated.get(self._key(), []) if self.feature is not None else []

    def _render_generated(self) -> None:
        batches = self._batches()
        tiles = [_tile(to_png(x, size=PX), f"ψ {float(p):.2f}") for b in batches
                 for x, p in zip(b.images_BCHW, b.psi_B)]
        self._render_histogram()
        self._render_strip()
        self.generated_box.children = _row(tiles, "none yet at these settings: press 'generate more' "
                                                  "or move a slider")  # last: new images mean all is drawn

    def _render_strip(self) -> None:
        """Every sample of this feature (generated at any setting, stored EnergyDPS) nearest
        the target psi, ordered by increasing psi (the semantic-shift strip of App L.3)."""
        if self.feature is None:
            return
        pool = [b for (f, _, _), bs in list(self.generated.items()) if f == self.feature for b in bs]
        pool += [b for m, b in getattr(self, "_stored", {}).items() if m == "EnergyDPS"]
        if not pool:
            self.strip_box.children = _row([], "no samples of this feature yet")
            return
        images = torch.cat([b.images_BCHW for b in pool])
        psi = torch.cat([b.psi_B for b in pool])
        near = (psi - float(self.target.value)).abs().argsort()[: self.n_strip]
        near = near[psi[near].argsort()]
        small = PX * 3 // 4
        self.strip_box.children = [_tile(to_png(images[j], size=small), f"ψ {float(psi[j]):.2f}", small)
                                   for j in near.tolist()]

    def _render_histogram(self) -> None:
        counts, edges = self.index.histogram(self.feature)
        markers = {f"{m} (stored)": b.peak_B for m, b in getattr(self, "_stored", {}).items()}
        gen = self._batches()
        if gen:
            markers["generated"] = torch.cat([b.peak_B for b in gen])
        self.histogram.value = histogram_png(counts, edges, self.cap.value, markers, self.feature)

    # ------------------------------------------------------------ notes
    def set_note(self, text: str) -> None:
        """Save ``text`` as the current feature's note (empty removes it)."""
        if self.feature is None:
            return
        self.notes.set(self.feature, text)
        self.note_status.value = f"<small>saved to {html.escape(str(self.notes.path))}</small>"
        self.show(self.feature)

    def export_notes(self, path: str | Path | None = None) -> Path:
        """Write the notes (and each noted feature's concept) as CSV next to the JSON."""
        out = self.notes.export_csv(path or self.notes.path.with_suffix(".csv"), self.concepts)
        self.note_status.value = f"<small>exported {len(self.notes.notes)} notes to {html.escape(str(out))}</small>"
        return out


def histogram_png(counts_B: torch.Tensor, edges: torch.Tensor, cap: float, markers: Mapping[str, torch.Tensor],
                  feature: int) -> bytes:
    """The index's histogram of a feature's per-image score (log bins; images where it
    did not fire counted apart), with the cap and each sample set's scores marked."""
    fig = Figure(figsize=(5.2, 2.6), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    e = edges.numpy()
    inner = counts_B[1:-1].numpy()
    ax.bar(e[:-1], inner, width=np.diff(e), align="edge", color="#9db4d0", edgecolor="#4a6d94", lw=0.4)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    shown = np.nonzero(inner)[0]
    lo, hi = (e[shown.min()], e[shown.max() + 1]) if len(shown) else (e[0], e[-1])
    for name, values in markers.items():
        v = values.clamp_min(e[0]).numpy()
        lo, hi = min(lo, v.min()), max(hi, v.max())
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ymax = max(inner.max(), 1)
    colours = iter(["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"])
    for j, (name, values) in enumerate(markers.items()):
        c = next(colours)
        ax.plot(values.clamp_min(e[0]).numpy(), np.full(len(values), ymax * (1.05 + 0.08 * j)), "v", color=c,
                ms=6, label=name)
    if cap > 0:
        ax.axvline(cap, color="tab:red", ls="--", lw=1.2, label="cap c (on ψ)")
    ax.set(xlabel="peak activation per image (index score)", ylabel="images",
           title=f"feature {feature}: {int(counts_B.sum())} images, {int(counts_B[0])} did not fire")
    ax.title.set_fontsize(9)
    ax.set_ylim(0, ymax * (1.2 + 0.08 * len(markers)))
    if markers or cap > 0:
        ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

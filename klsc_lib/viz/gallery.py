"""Show what a transcoder feature responds to: its top dataset images (dataset search,
paper Sec 3.1 and the top-k baseline of App J.3) with the feature's activation map
over each, as a static figure for the notebooks and as an interactive browser
(ipywidgets) for readers who want to look at any feature id.

Both read a :class:`klsc_lib.sae.topk_index.TopKIndex`, so showing a feature is a lookup,
not a re-scan of the data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch

from klsc_lib.sae.topk_index import TopKIndex


@dataclass
class FeatureGallery:
    """A unit's dataset-search result: top image ids from ``index``, the images
    (``image(id) -> image_CHW`` in [-1, 1]) and the unit's activation maps over them
    (``activation_maps(ids, unit) -> maps_KHW``)."""

    index: TopKIndex
    image: Callable[[int], torch.Tensor]
    activation_maps: Callable[[list[int], int], torch.Tensor]

    def top(self, unit: int, k: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """(ids, images_KCHW, maps_KHW) of the unit's ``k`` top images; ``KeyError`` for an unknown unit."""
        ids = self.index.top_ids(unit)[:k]
        if not ids:
            raise KeyError(f"feature {unit} has no indexed images: the index saw no data yet")
        images_KCHW = torch.stack([self.image(i) for i in ids]).detach().float().cpu()
        with torch.no_grad():
            maps_KHW = self.activation_maps(ids, unit).detach().float().cpu()
        if maps_KHW.shape[0] != len(ids) or maps_KHW.ndim != 3:
            raise ValueError(f"activation_maps must return (k, H, W) maps for {len(ids)} images, "
                             f"got shape {tuple(maps_KHW.shape)}")
        return ids, images_KCHW, maps_KHW

    def plot(self, units: Sequence[int], k: int, labels: dict[int, str] | None = None,
             title: str | None = None) -> plt.Figure:
        """Two rows per unit: its top ``k`` images, then the activation map over each
        (bilinear upsampling of the feature map onto the image, one colour scale per unit)."""
        labels = labels or {}
        fig, axes = plt.subplots(2 * len(units), k, figsize=(1.5 * k, 3.2 * len(units)), squeeze=False)
        for r, unit in enumerate(units):
            ids, images_KCHW, maps_KHW = self.top(int(unit), k)
            vmax = max(float(maps_KHW.max()), 1e-6)
            for c, (i, img_CHW, map_HW) in enumerate(zip(ids, images_KCHW, maps_KHW)):
                img_HWC = ((img_CHW.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
                axes[2 * r, c].imshow(img_HWC.squeeze(-1) if img_HWC.shape[-1] == 1 else img_HWC,
                                      cmap="gray", interpolation="nearest")
                axes[2 * r, c].set_title(f"#{i}", fontsize=8)
                axes[2 * r + 1, c].imshow(img_HWC.mean(-1), cmap="gray", interpolation="nearest")
                axes[2 * r + 1, c].imshow(map_HW.numpy(), cmap="inferno", alpha=0.6, interpolation="bilinear",
                                          vmin=0, vmax=vmax,
                                          extent=(-0.5, img_HWC.shape[1] - 0.5, img_HWC.shape[0] - 0.5, -0.5))
            label = labels.get(int(unit), "")
            axes[2 * r, 0].set_ylabel(f"feature {unit}" + (f"\n{label}" if label else ""), fontsize=9)
            axes[2 * r + 1, 0].set_ylabel("activation", fontsize=9)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        if title:
            fig.suptitle(title)
        return fig


class FeatureBrowser:
    """Interactive look-up of any feature id: type an id (or step with the arrows) and
    its top images and activation maps appear. An unknown id shows the index's error
    message instead of a figure. ``widget`` is the ipywidgets box to display."""

    def __init__(self, gallery: FeatureGallery, k: int = 8, initial: int = 0):
        import ipywidgets as widgets

        self.gallery, self.k = gallery, k
        self.unit = widgets.BoundedIntText(value=initial, min=0, max=gallery.index.n_units - 1,
                                           description="feature id")
        self.output = widgets.Output()
        self.message = ""
        self.unit.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = widgets.VBox([self.unit, self.output])
        self.show(initial)

    def render(self, unit: int) -> plt.Figure | str:
        """The figure for ``unit``, or the error message for an id the index does not hold."""
        try:
            return self.gallery.plot([unit], self.k, title=f"feature {unit}: top {self.k} images")
        except KeyError as err:
            return str(err.args[0]) if err.args else str(err)

    def show(self, unit: int) -> None:
        result = self.render(unit)
        self.output.clear_output(wait=True)
        with self.output:
            if isinstance(result, str):
                self.message = result
                print(result)
            else:
                self.message = ""
                plt.show()  # inline backends display (and close) the current figure
        if not isinstance(result, str):
            plt.close(result)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

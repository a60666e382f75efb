"""Plot one decoded sample, as TorchGeo datasets' ``plot(sample)`` does.

:func:`plot` draws the before and after scenes in true colour, the change mask (transition
codes, a legend per code present) and, when the sample has one, the model's ``prediction``
(TorchGeo's key for it); the first caption is the title. A series sample
(``load(..., mode="series")``, with ``dates``) is drawn as one row: every date in true colour,
titled with its date, then ``first_change`` (the first step at which each pixel changed). matplotlib is imported inside the
function (``pip install matplotlib``); the figure is returned, not shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from geodelta.errors import GeodeltaError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from matplotlib.figure import Figure

__all__ = ["RGB_BANDS", "PlotError", "plot"]

#: True-colour bands tried first (Sentinel-2 names), else the first three bands.
RGB_BANDS = ("B04", "B03", "B02")


class PlotError(GeodeltaError, ValueError):
    """A sample that cannot be plotted (no image, or RGB bands it does not have)."""


def _array(value: Any) -> np.ndarray:
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _band_names(sample: Mapping[str, Any], count: int) -> list[str]:
    meta = sample.get("meta") or {}
    names = meta.get("__bands__") or meta.get("bands") or []
    names = [str(n) for n in names]
    return names if len(names) == count else [f"band {i + 1}" for i in range(count)]


def _rgb(scene: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """(C, H, W) reflectance -> (H, W, 3) in [0, 1], a 2-98 percentile stretch; NaN -> 0."""
    import numpy as np

    rgb = np.moveaxis(scene[list(idx)], 0, -1).astype(np.float64)
    finite = np.isfinite(rgb)
    if finite.any():
        lo, hi = np.percentile(rgb[finite], [2, 98])
        rgb = (rgb - lo) / (hi - lo if hi > lo else 1.0)
    return np.where(finite, np.clip(rgb, 0.0, 1.0), 0.0)


def _codes_panel(
    ax: Any, codes: np.ndarray, title: str, legend: str = "code", zero: str = "0 no change"
) -> None:
    """A coded raster with one legend entry per code present (0 = ``zero``)."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    codes = np.asarray(codes)
    present = [int(c) for c in np.unique(codes) if c >= 0]
    cmap = colormaps["tab20"]
    colors = ["black"] + [cmap(i % 20) for i in range(len(present))]
    lookup = {c: i for i, c in enumerate(c for c in present if c != 0)}
    index = np.zeros(codes.shape, dtype=np.int64)
    for c, i in lookup.items():
        index[codes == c] = i + 1
    ax.imshow(index, cmap=ListedColormap(colors[: len(lookup) + 1]), vmin=0,
              vmax=max(len(lookup), 1), interpolation="nearest")  # fmt: skip
    ax.set_title(title)
    ax.legend(
        handles=[Patch(color="black", label=zero)]
        + [Patch(color=colors[i + 1], label=f"{c}") for c, i in lookup.items()],
        loc="upper right",
        fontsize="x-small",
        title=legend,
        title_fontsize="x-small",
    )


def plot(
    sample: Mapping[str, Any],
    *,
    rgb: Sequence[str] = RGB_BANDS,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Plot a decoded sample (``image`` [2, C, H, W], ``mask``, optional ``prediction``), or a
    series sample (``image`` [T, C, H, W], ``dates``, ``first_change``).

    Args:
        sample: a sample of :func:`geodelta.data.load` (torch or numpy).
        rgb: the band names to draw as red, green, blue; when the sample lacks them, its first
            three bands (or its one band as grey).
        show_titles: panel titles.
        suptitle: the figure title; default: the sample's first caption and key.

    Returns:
        A matplotlib Figure (1 row: before, after, mask[, prediction]; a series: the T dates,
        then first_change).

    Raises:
        PlotError: the sample has no ``image``.
        MissingDependencyError: matplotlib is not installed (the message says how to install).
    """
    try:  # a Figure, not pyplot: no backend is chosen or changed, nothing is shown
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency of geodelta
        raise MissingDependencyError(
            "geodelta.data.plot needs matplotlib: pip install matplotlib"
        ) from exc
    if "image" not in sample:
        raise PlotError("the sample has no 'image' (load it with decode='torch' or 'numpy')")
    image = _array(sample["image"])
    times = len(sample["dates"]) if "dates" in sample else 2
    if image.ndim != 4 or image.shape[0] != times:
        want = "[T, C, H, W] with T = len(dates)" if "dates" in sample else "[2, C, H, W]"
        raise PlotError(f"image must be {want} (actual shape={tuple(image.shape)})")
    names = _band_names(sample, int(image.shape[1]))
    if all(b in names for b in rgb):
        idx = [names.index(b) for b in rgb]
    else:
        idx = [0, 1, 2] if image.shape[1] >= 3 else [0, 0, 0]
    if "dates" in sample:
        fig = _plot_series(Figure, sample, image, idx, show_titles)
    else:
        fig = _plot_pair(Figure, sample, image, idx, show_titles)
    if suptitle is None:
        meta = sample.get("meta") or {}
        captions = list(sample.get("captions") or [])
        suptitle = " | ".join(
            s for s in (str(meta.get("__key__", "")), captions[0] if captions else "") if s
        )
    if suptitle:
        fig.suptitle(suptitle, fontsize="small")
    return fig


def _plot_series(
    figure: Any, sample: Mapping[str, Any], image: np.ndarray, idx: list[int], titles: bool
) -> Figure:
    """One row: each date in true colour (titled with its date), then ``first_change``."""
    import numpy as np

    dates = [
        d.date().isoformat() if isinstance(d, datetime) else str(d)[:10] for d in sample["dates"]
    ]
    extra = "first_change" in sample
    fig: Figure = figure(figsize=(3.2 * (len(dates) + extra), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(dates) + extra))
    for ax in axes:
        ax.set_axis_off()
    for t, ax in enumerate(axes[: len(dates)]):
        ax.imshow(_rgb(image[t], idx))
        if titles:
            ax.set_title(dates[t])
    if extra:
        title = "first change (step)" if titles else ""
        _codes_panel(axes[-1], _array(sample["first_change"]), title, "step", "0 never")
    return fig


def _plot_pair(
    figure: Any, sample: Mapping[str, Any], image: np.ndarray, idx: list[int], show_titles: bool
) -> Figure:
    """One row: before, after, mask[, prediction]."""
    panels = ["before", "after", "mask"] + (["prediction"] if "prediction" in sample else [])
    fig: Figure = figure(figsize=(4 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax in axes:
        ax.set_axis_off()
    axes[0].imshow(_rgb(image[0], idx))
    axes[1].imshow(_rgb(image[1], idx))
    if show_titles:
        axes[0].set_title("before")
        axes[1].set_title("after")
    _codes_panel(axes[2], _array(sample["mask"]), "mask" if show_titles else "")
    if "prediction" in sample:
        _codes_panel(axes[3], _array(sample["prediction"]), "prediction" if show_titles else "")
    return fig

"""Plots of the quality report, rendered to PNG bytes with matplotlib (Agg, no pyplot).

Every function returns the bytes of one PNG. Output is deterministic: the figure is drawn
with matplotlib's default style (a user's ``matplotlibrc`` does not leak in), a fixed size and
DPI, sorted inputs, and no ``Software``/date metadata in the file, so the same data give the
same bytes on the same matplotlib version. matplotlib is imported lazily, on the first plot.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: Colours of the splits on the map (others: grey).
SPLIT_COLOURS: dict[str, str] = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
#: Colours of the diff states on the diff map.
DIFF_COLOURS: dict[str, str] = {
    "added": "#2ca02c",
    "removed": "#d62728",
    "changed": "#ff7f0e",
    "unchanged": "#9e9e9e",
}
#: Overlay colours: previous version, current version.
OVERLAY = ("#9e9e9e", "#1f77b4")

_RC: Any = {  # a plain dict; typed Any for matplotlib's Literal-keyed stubs
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 8.0,
    "svg.hashsalt": "geodelta",
    "figure.dpi": 100.0,
    "savefig.dpi": 100.0,
    "path.simplify": False,
    # the title at the top of the axes, not placed above whatever is drawn there (none of
    # these plots has ticks on top): the same pixels, without a layout pass per figure
    "axes.titley": 1.0,
}


@contextmanager
def _figure(
    width: float = 5.0,
    height: float = 2.8,
    *,
    left: float = 0.55,
    right: float = 0.15,
    top: float = 0.3,
    bottom: float = 0.45,
) -> Iterator[Figure]:
    """A new figure under the default style; no pyplot (no global figure registry).

    Margins are fixed, in inches (a layout engine costs more time than drawing the plot).
    """
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(
            left=left / width,
            right=1.0 - right / width,
            top=1.0 - top / height,
            bottom=bottom / height,
        )
        FigureCanvasAgg(fig)
        yield fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def histogram(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    bins: int | Sequence[float] = 20,
    limits: Sequence[tuple[str, float]] = (),
    density: bool = False,
    ylabel: str = "samples",
    from_zero: bool = False,
) -> bytes:
    """Histogram of one or more labelled series (overlaid, step outlines when more than one).

    Args:
        series: ``(label, values)`` pairs; the same bin edges are used for all.
        title: axes title.
        xlabel: x-axis label.
        bins: a bin count or explicit edges.
        limits: ``(label, x)`` vertical dashed lines (config thresholds).
        density: normalise each series to a density (for comparing different sizes).
        ylabel: y-axis label (counts; "density" when ``density``).
        from_zero: start the bins at 0 (non-negative quantities).
    """
    arrays = [np.asarray(v, dtype=float) for _, v in series]
    finite = [a[np.isfinite(a)] for a in arrays]
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    if isinstance(bins, int):
        lo, hi = (float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0)
        for _, x in limits:
            lo, hi = min(lo, x), max(hi, x)
        if from_zero:
            lo = min(lo, 0.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    with _figure() as fig:
        ax = fig.add_subplot()
        many = len(series) > 1
        colours = OVERLAY if len(series) == 2 else (None,) * len(series)
        for (label, _), values, colour in zip(series, finite, colours, strict=True):
            ax.hist(
                values,
                bins=edges.tolist(),
                density=density,
                histtype="step" if many else "bar",
                linewidth=1.5 if many else 0.5,
                edgecolor=colour if many else "white",
                color=colour if many else "#1f77b4",
                label=f"{label} (n={values.size})",
            )
        for label, x in limits:
            ax.axvline(x, color="#c0392b", linestyle="--", linewidth=1, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density" if density else ylabel)
        if many or limits:
            ax.legend(loc="best", frameon=False)
        return _png(fig)


def bars(
    labels: Sequence[str],
    values: Sequence[float] | Sequence[Sequence[float]],
    *,
    title: str,
    xlabel: str,
    series: Sequence[str] = (),
) -> bytes:
    """Horizontal bars, first label on top; several series side by side when ``series`` is given.

    Args:
        labels: one per bar (group).
        values: one value per label, or (with ``series``) one sequence per series.
        title: axes title.
        xlabel: x-axis label.
        series: names of the series (legend); empty for a single series.
    """
    n = len(labels)
    height = max(1.6, 0.8 + 0.2 * n * max(1, len(series)) ** 0.5)
    left = 0.2 + 0.065 * max((len(str(x)) for x in labels), default=4)  # ~8 pt glyphs
    with _figure(max(5.0, left + 3.2), height, left=left) as fig:
        ax = fig.add_subplot()
        y = np.arange(n)[::-1].astype(float)
        if series:
            rows = [np.asarray(v, dtype=float) for v in values]
            h = 0.8 / len(rows)
            colours = OVERLAY if len(rows) == 2 else (None,) * len(rows)
            for i, (name, row, colour) in enumerate(zip(series, rows, colours, strict=True)):
                ax.barh(y + 0.4 - h * (i + 0.5), row, height=h, label=name, color=colour)
            ax.legend(loc="best", frameon=False)
        else:
            ax.barh(y, np.asarray(values, dtype=float), height=0.7, color="#1f77b4")
        ax.set_yticks(y, labels)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        return _png(fig)


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    radius: float | None = None,
) -> bytes:
    """Scatter plot with equal axes; ``radius`` draws a dashed circle (a shift limit)."""
    with _figure(3.4, 3.2, left=0.6) as fig:
        ax = fig.add_subplot()
        ax.scatter(np.asarray(x, float), np.asarray(y, float), s=10, alpha=0.7, color="#1f77b4")
        if radius is not None:
            from matplotlib.patches import Circle

            ax.add_patch(Circle((0, 0), radius, fill=False, linestyle="--", color="#c0392b"))
            ax.set_xlim(-radius * 1.1, radius * 1.1)
            ax.set_ylim(-radius * 1.1, radius * 1.1)
        ax.axhline(0, color="#999", linewidth=0.5)
        ax.axvline(0, color="#999", linewidth=0.5)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return _png(fig)


Box = tuple[float, float, float, float]


def footprint_map(
    boxes: Sequence[tuple[Box, str]],
    *,
    colours: dict[str, str],
    title: str,
    aoi: Box | None = None,
) -> bytes:
    """Lon/lat map of sample footprints: one rectangle per ``(bbox, group)``, coloured by group.

    No tiles and no coastline: the footprints, the AOI box (dashed) and a lon/lat grid. The
    aspect is corrected by cos(latitude) so cells look square.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch, Rectangle

    with _figure(6.6, 4.4, left=0.7, right=1.3) as fig:
        ax = fig.add_subplot()
        xs: list[float] = []
        ys: list[float] = []
        seen: list[str] = []
        corners: list[list[tuple[float, float]]] = []
        faces: list[str] = []
        for (x0, y0, x1, y1), group in boxes:
            corners.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            faces.append(colours.get(group, "#7f7f7f"))
            xs += [x0, x1]
            ys += [y0, y1]
            if group not in seen:
                seen.append(group)
        if corners:
            # one collection, not a patch per box: drawn in one pass (the limits are set below
            # from the boxes, so the collection's own limits are not added)
            ax.add_artist(
                PolyCollection(
                    corners, facecolors=faces, edgecolors="black", linewidths=0.4, alpha=0.55
                )
            )
        seen.sort(key=lambda g: (list(colours).index(g) if g in colours else len(colours), g))
        if aoi is not None:
            ax.add_patch(
                Rectangle(
                    (aoi[0], aoi[1]),
                    aoi[2] - aoi[0],
                    aoi[3] - aoi[1],
                    fill=False,
                    linestyle="--",
                    edgecolor="#444",
                    linewidth=1,
                )
            )
            xs += [aoi[0], aoi[2]]
            ys += [aoi[1], aoi[3]]
        if xs:
            pad_x = max(1e-3, 0.05 * (max(xs) - min(xs)))
            pad_y = max(1e-3, 0.05 * (max(ys) - min(ys)))
            ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
            ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
            mid = 0.5 * (min(ys) + max(ys))
            ax.set_aspect(1.0 / max(0.05, float(np.cos(np.radians(mid)))))
        handles = [Patch(facecolor=colours.get(g, "#7f7f7f"), alpha=0.55, label=g) for g in seen]
        if aoi is not None:
            handles.append(Patch(fill=False, linestyle="--", edgecolor="#444", label="AOI bbox"))
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(True, linewidth=0.3, color="#bbb")
        ax.ticklabel_format(useOffset=False)
        ax.set_title(title)
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        return _png(fig)

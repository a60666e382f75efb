"""Constants of the synthetic demo catalog: names, AOI, dates, conventions, class spectra.

What the other modules of :mod:`geodelta.sources.demo` share: the public constants callers and
tests read (collection ids, bands, windows and dates, the DN convention, the SCL codes, the kinds
of injected change, the shift convention), the geometry shared by the world and the renderer
(the AOI centre, the two UTM zones, the pixel sizes, the local metric frame), the mean spectrum
of each WorldCover class, the note every description carries, and :class:`DemoCatalogError`.

Imports nothing heavy: no rasterio, no pystac.
"""

from __future__ import annotations

import math
from typing import Final

from geodelta.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Public constants
# --------------------------------------------------------------------------------------------

#: The demo area of interest (min_lon, min_lat, max_lon, max_lat) at ``scale=1``.
DEMO_AOI: tuple[float, float, float, float] = (5.90, 45.00, 6.10, 45.09)
IMAGERY_COLLECTION = "geodelta-demo-s2l2a"
LANDCOVER_COLLECTION = "geodelta-demo-landcover"
BANDS = ("B02", "B03", "B04", "B08")
T0_WINDOW = ("2020-06-01", "2020-08-31")
T1_WINDOW = ("2021-06-01", "2021-08-31")

#: Acquisition dates of the imagery items (three per window, 25 and 35 days apart).
T0_DATES: Final[tuple[str, ...]] = ("2020-06-14", "2020-07-09", "2020-08-13")
T1_DATES: Final[tuple[str, ...]] = ("2021-06-19", "2021-07-14", "2021-08-18")

#: Reflectance = DN * DN_SCALE + DN_OFFSET (Sentinel-2 L2A, processing baseline >= 04.00).
DN_SCALE: Final[float] = 0.0001
DN_OFFSET: Final[float] = -0.1

#: Sentinel-2 scene classification (SCL) codes the demo uses.
SCL_NODATA: Final[int] = 0
SCL_CLOUD_SHADOW: Final[int] = 3
SCL_VEGETATION: Final[int] = 4
SCL_NOT_VEGETATED: Final[int] = 5
SCL_WATER: Final[int] = 6
SCL_CLOUD_MEDIUM: Final[int] = 8
SCL_CLOUD_HIGH: Final[int] = 9

#: Kind of injected change -> (possible WorldCover from-classes, possible to-classes).
CHANGE_KINDS: Final[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "new_built_up": ((40, 30), (50,)),
    "deforestation": ((10,), (30, 60)),
    "water_gain": ((30,), (80,)),
    "water_loss": ((80,), (60,)),
    "cropland_change": ((30,), (40,)),
}

SHIFTS_CONVENTION: Final[str] = (
    "content displacement (dy, dx) in pixels of the item's 10 m grid, +dy = down (south), "
    "+dx = right (east): pixel (r, c) of a shifted item shows what an unshifted item shows at "
    "(r - dy, c - dx), so the content moved by +(dy, dx). The correction that aligns the after "
    "scene to the before scene is (-dy, -dx). Before (t0) items are not shifted: (0, 0)."
)

#: The years of the series demo (``write_demo_catalog(..., series=True)``): one land-cover map
#: and one summer of imagery each.
SERIES_YEARS: Final[tuple[int, ...]] = (2018, 2019, 2020, 2021, 2022)

#: Acquisition dates of the series demo's imagery: three per summer (June-August), on the
#: 5-day revisit grid of 2020-06-14; 2020 and 2021 are the pair demo's dates.
SERIES_DATES: Final[dict[int, tuple[str, ...]]] = {
    2018: ("2018-06-10", "2018-07-05", "2018-08-09"),
    2019: ("2019-06-15", "2019-07-15", "2019-08-19"),
    2020: T0_DATES,
    2021: T1_DATES,
    2022: ("2022-06-09", "2022-07-09", "2022-08-18"),
}

#: Kind of injected change in the series demo -> (possible WorldCover from-classes, possible
#: to-classes of its first change). How each kind goes on over the years:
#: :data:`SERIES_HISTORIES`.
SERIES_CHANGE_KINDS: Final[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "new_built_up": ((40, 30), (50,)),
    "deforestation": ((10,), (30, 60)),
    "flood": ((30,), (80,)),
    "double_change": ((40,), (30,)),
    "water_gain": ((30,), (80,)),
    "water_loss": ((80,), (60,)),
    "cropland_change": ((30,), (40,)),
}

#: Kind -> (history pattern, the change years of the first change of that kind). A pattern holds
#: one letter per change state: ``F`` the from-class, ``T`` the to-class, ``U`` the second
#: to-class of :data:`SERIES_SECOND_CLASS` (permanent kinds ``FT``, the transient flood ``FTF``,
#: the double change ``FTU``); the change years say in which year each next state begins.
#: Further changes of a kind draw their years at random.
SERIES_HISTORIES: Final[dict[str, tuple[str, tuple[int, ...]]]] = {
    "new_built_up": ("FT", (2020,)),
    "deforestation": ("FT", (2021,)),
    "flood": ("FTF", (2019, 2020)),
    "double_change": ("FTU", (2019, 2021)),
    "water_gain": ("FT", (2022,)),
    "water_loss": ("FT", (2019,)),
    "cropland_change": ("FT", (2022,)),
}

#: The ``U`` state of :data:`SERIES_HISTORIES`: cropland -> grassland -> bare.
SERIES_SECOND_CLASS: Final[dict[str, int]] = {"double_change": 60}

#: Weights of the kinds drawn at random once each kind is placed (order of
#: :data:`SERIES_CHANGE_KINDS`).
SERIES_KIND_WEIGHTS: Final[tuple[float, ...]] = (0.25, 0.2, 0.1, 0.1, 0.1, 0.05, 0.2)

SERIES_SHIFTS_CONVENTION: Final[str] = (
    "content displacement (dy, dx) in pixels of the item's 10 m grid, +dy = down (south), "
    "+dx = right (east): pixel (r, c) of a shifted item shows what an unshifted item shows at "
    "(r - dy, c - dx), so the content moved by +(dy, dx). The correction that aligns an item "
    "to the reference year is (-dy, -dx). The first year's (reference) items are not shifted: "
    "(0, 0)."
)

# --------------------------------------------------------------------------------------------
# Shared by the modules of the demo (not for callers)
# --------------------------------------------------------------------------------------------

CENTRE: Final[tuple[float, float]] = (6.0, 45.045)
ZONES: Final[tuple[tuple[int, int], ...]] = ((31, 32631), (32, 32632))
PIXEL_M: Final[float] = 10.0
SCL_PIXEL_M: Final[float] = 20.0
LC_STEPS_PER_DEG: Final[int] = 12000

# Local metric frame about the AOI centre (only used to lay shapes out; truth is in lon/lat).
M_PER_DEG_LAT: Final[float] = 111_132.0
M_PER_DEG_LON: Final[float] = 111_320.0 * math.cos(math.radians(CENTRE[1]))

#: Mean surface reflectance (B02, B03, B04, B08) per WorldCover class.
SPECTRA: Final[dict[int, tuple[float, float, float, float]]] = {
    10: (0.025, 0.045, 0.028, 0.360),  # tree cover
    20: (0.040, 0.062, 0.055, 0.250),  # shrubland
    30: (0.035, 0.070, 0.045, 0.290),  # grassland
    40: (0.045, 0.080, 0.070, 0.300),  # cropland (replaced by the per-parcel mix: render.py)
    50: (0.130, 0.145, 0.160, 0.190),  # built-up: bright, flat
    60: (0.150, 0.190, 0.230, 0.280),  # bare: bright, rising
    80: (0.055, 0.060, 0.035, 0.015),  # water: dark, NIR absorbed
    90: (0.035, 0.055, 0.040, 0.160),  # wetland
}
#: Ends every collection and catalog description. It is data (it reaches releases through the
#: collections): the file it names is the generator's name when it was written; keep it as is.
SYNTHETIC_NOTE: Final[str] = (
    "SYNTHETIC data generated by geodelta (sources/demo_catalog.py) for offline tests and "
    "demos; not real observations."
)


class DemoCatalogError(ConfigError):
    """A demo catalog that cannot be written or read; ``key`` names what to change.

    A :class:`~geodelta.errors.ConfigError`, hence still a ``ValueError``.
    """

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path

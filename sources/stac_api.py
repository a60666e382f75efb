"""STAC API search (Planetary Computer, Earth Search, pgstac, any STAC API) via pystac-client.

:class:`StacApiCatalog` implements :class:`~geodelta.sources.scenes.SceneCatalog` over HTTP:
``POST /search`` with collections, a bbox (or an ``intersects`` geometry), a datetime range and,
for imagery, a scene cloud-cover pre-filter; pages are followed up to ``catalog.max_items``.

HTTP behaviour, all from the ``catalog`` config section:

* retries (``catalog.retries``) on 429, 5xx, connection errors and timeouts
  (``catalog.timeout_s``), exponential backoff with jitter (``catalog.backoff_s``), honouring the
  server's ``Retry-After`` but never waiting more than ``catalog.max_wait_s`` per retry;
* at most ``catalog.concurrency_per_host`` requests in flight per host, shared by every client
  of the process (one semaphore per host);
* failures raise :class:`~geodelta.sources.scenes.CatalogError` with the URL, the HTTP status and
  the config key to change.

The cloud-cover pre-filter (``imagery.max_cloud_cover``) is sent as a CQL2 ``filter`` when the
API conforms to the Filter extension, else as a ``query``, and is always re-applied to the
results (items without ``eo:cloud_cover`` are kept). It only narrows the candidates: the
pixel-level clear fraction over each cell still decides the pair.

Items are reduced to :class:`~geodelta.schemas.SceneRef` records (hrefs stripped of any query
string) after the collection's profile filled missing scale/offsets
(:func:`geodelta.sources.profiles.complete_item`). Asset hrefs may be http(s) URLs or
``file://`` URIs (a bare absolute path in an API response resolves against the item's own URL,
as RFC 3986 says, so it becomes an http URL on the API host). Signing for reads is not done
here (see :mod:`geodelta.sources.signing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pystac
import requests
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from requests.adapters import HTTPAdapter

from geodelta.schemas import SceneRef
from geodelta.schemas.config import CatalogConfig, parse_datetime
from geodelta.schemas.records import BBox
from geodelta.sources.profiles import complete_item
from geodelta.sources.scenes import CatalogError, item_to_scene
from geodelta.sources.signing import make_retry, redact_secrets

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# per-host concurrency

_HOST_LOCK = threading.Lock()
_HOST_SLOTS: dict[str, threading.BoundedSemaphore] = {}


def host_semaphore(host: str, limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore of ``host`` (made with ``limit`` slots on first use)."""
    with _HOST_LOCK:
        sem = _HOST_SLOTS.get(host)
        if sem is None:
            sem = _HOST_SLOTS[host] = threading.BoundedSemaphore(limit)
        return sem


class HostLimitedAdapter(HTTPAdapter):
    """A requests adapter that holds its host's semaphore for each whole exchange: the request,
    its retries, and reading the response body.

    ``HTTPAdapter.send`` returns as soon as the response headers are in; requests reads the
    body afterwards (``Session.send``). Releasing the slot there would let the next request
    start while this body is still being sent, so the body is read here, inside the slot
    (``stream=True`` included: the body is then served from memory).
    """

    def __init__(self, limit: int, **kwargs: Any) -> None:
        self.limit = limit
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Send ``request`` and read its answer's body while holding the host's slot."""
        host = urlsplit(request.url or "").netloc
        with host_semaphore(host, self.limit):
            response = super().send(request, *args, **kwargs)
            try:
                _ = response.content  # read (and keep) the body before the slot goes
            except BaseException:
                response.close()
                raise
            return response


def stac_api_io(cfg: CatalogConfig) -> StacApiIO:
    """A pystac-client ``StacApiIO`` with geodelta's bounded retries and per-host limit."""
    io = StacApiIO(timeout=cfg.timeout_s, max_retries=None)
    retry = make_retry(
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        max_wait_s=cfg.max_wait_s,
        # a STAC search POST is a read: retrying it is safe
        allowed_methods=frozenset({"GET", "POST", "HEAD"}),
    )
    adapter = HostLimitedAdapter(
        cfg.concurrency_per_host, max_retries=retry, pool_maxsize=cfg.concurrency_per_host
    )
    io.session.mount("http://", adapter)
    io.session.mount("https://", adapter)
    return io


# --------------------------------------------------------------------------------------------
# errors


def _hint(status: int | None, cfg: CatalogConfig) -> str:
    if status is None:
        return (
            f"no answer after catalog.retries={cfg.retries} retries; check catalog.url and the "
            f"network, or raise catalog.timeout_s (now {cfg.timeout_s:g} s)"
        )
    if status in (401, 403):
        return "the API refused access; check credentials (PC_SDK_SUBSCRIPTION_KEY) and catalog.url"
    if status == 404:
        return "not found; catalog.url must be the STAC API root (e.g. .../api/stac/v1)"
    if status in (400, 422):
        return (
            "the API rejected the search; check imagery.collection, labels.collection, "
            "imagery.max_cloud_cover and aoi"
        )
    if status == 429 or status >= 500:
        return (
            f"the server still failed after catalog.retries={cfg.retries} retries; retry later, "
            "raise catalog.retries, or lower catalog.concurrency_per_host"
        )
    return "check catalog.url"


@contextmanager
def _api_errors(url: str, cfg: CatalogConfig, what: str) -> Iterator[None]:
    """Turn pystac-client / requests failures into a CatalogError naming URL, status, fix."""
    try:
        yield
    except APIError as exc:
        status = getattr(exc, "status_code", None)
        body = redact_secrets(" ".join(str(exc).split()))[:300]
        code = f"HTTP {status}" if status is not None else "request failed"
        raise CatalogError(
            url, f"{what}: {code} ({body}); {_hint(status, cfg)}", status=status
        ) from None
    except requests.RequestException as exc:
        raise CatalogError(
            url, f"{what}: {type(exc).__name__} ({redact_secrets(str(exc))}); {_hint(None, cfg)}"
        ) from None
    except NotImplementedError as exc:  # pystac-client: the API lacks item search
        raise CatalogError(
            url, f"{what}: {exc}; catalog.url must be a STAC API with /search"
        ) from None


# --------------------------------------------------------------------------------------------
# the catalog


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cloud_ok(props: dict[str, Any], max_cloud_cover: float | None) -> bool:
    if max_cloud_cover is None:
        return True
    cc = props.get("eo:cloud_cover")
    return cc is None or float(cc) <= max_cloud_cover


def _in_window(item: pystac.Item, window: tuple[datetime, datetime] | None) -> bool:
    """Whether the item's datetime (or start/end period) overlaps the window (re-checked here:
    APIs differ at the edges, and a double-check keeps static and API catalogs alike)."""
    if window is None:
        return True
    props = item.properties
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime")
    if start is None or end is None:
        return True
    return not (parse_datetime(end) < window[0] or parse_datetime(start) > window[1])


class StacApiCatalog:
    """A STAC API searched with pystac-client; one instance per worker process.

    Args:
        cfg: the ``catalog`` section (``url``, retries, timeouts, limits).
        url: the API root; default ``cfg.url``.
    """

    def __init__(self, cfg: CatalogConfig, *, url: str | None = None) -> None:
        self.cfg = cfg
        self.url = (url or cfg.url).rstrip("/")
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        #: searches that stopped at ``catalog.max_items`` (results possibly incomplete)
        self.truncated = 0
        #: HTTP searches run
        self.searches = 0

    def close(self) -> None:
        """Close the HTTP session (the client reopens on next use)."""
        with self._lock:
            if self._client is not None:
                io = self._client._stac_io
                if isinstance(io, StacApiIO):
                    io.session.close()
                self._client = None

    def __enter__(self) -> StacApiCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The pystac-client Client (landing page read once, on first use)."""
        with self._lock:
            if self._client is None:
                with _api_errors(self.url, self.cfg, "opening the STAC API"):
                    # Client.open re-applies its own timeout to the StacApiIO: pass ours again
                    self._client = Client.open(
                        self.url, stac_io=stac_api_io(self.cfg), timeout=self.cfg.timeout_s
                    )
                if not self._client.conforms_to(ConformanceClasses.ITEM_SEARCH):
                    raise CatalogError(
                        self.url,
                        "the API does not conform to STAC API - Item Search; catalog.url must "
                        "be a STAC API root with /search (use catalog.kind: static for a "
                        "catalog.json)",
                    )
            return self._client

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """Items of ``collections`` intersecting ``bbox`` (lon/lat) within ``window``.

        Args:
            collections: collection ids.
            bbox: (min_lon, min_lat, max_lon, max_lat).
            window: (start, end), UTC.
            max_cloud_cover: scene ``eo:cloud_cover`` pre-filter in percent (None = none).

        Returns:
            SceneRefs sorted by (datetime, item id).

        Raises:
            CatalogError: the API failed (URL, HTTP status and the key to change included).
        """
        return self.search_scenes(
            collections, bbox=bbox, window=window, max_cloud_cover=max_cloud_cover
        )

    def search_scenes(
        self,
        collections: Sequence[str],
        *,
        bbox: BBox | None = None,
        intersects: dict[str, Any] | None = None,
        window: tuple[datetime, datetime] | None = None,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """:meth:`search` with an ``intersects`` geometry instead of a bbox, or no window."""
        items = self.search_items(
            collections,
            bbox=bbox,
            intersects=intersects,
            window=window,
            max_cloud_cover=max_cloud_cover,
        )
        scenes = [item_to_scene(item) for item in items]
        scenes.sort(key=lambda s: (s.datetime, s.item_id))
        return scenes

    def search_items(
        self,
        collections: Sequence[str],
        *,
        bbox: BBox | None = None,
        intersects: dict[str, Any] | None = None,
        window: tuple[datetime, datetime] | None = None,
        max_cloud_cover: float | None = None,
    ) -> list[pystac.Item]:
        """The matching pystac Items, profile-completed, deduplicated (in the API's order)."""
        found, _ = self.search_items_flagged(
            collections,
            bbox=bbox,
            intersects=intersects,
            window=window,
            max_cloud_cover=max_cloud_cover,
        )
        return found

    def search_items_flagged(
        self,
        collections: Sequence[str],
        *,
        bbox: BBox | None = None,
        intersects: dict[str, Any] | None = None,
        window: tuple[datetime, datetime] | None = None,
        max_cloud_cover: float | None = None,
    ) -> tuple[list[pystac.Item], bool]:
        """:meth:`search_items`, and whether this search stopped at ``catalog.max_items``.

        Thread-safe (searches of several threads share the client, its HTTP session and the
        per-host limit): the flag is this search's own, where :attr:`truncated` counts those
        of every thread.
        """
        client = self.client
        params: dict[str, Any] = {
            "collections": list(collections),
            "limit": self.cfg.page_size,
            "max_items": self.cfg.max_items,
        }
        if bbox is not None:
            params["bbox"] = list(bbox)
        if intersects is not None:
            params["intersects"] = intersects
        if window is not None:
            params["datetime"] = f"{_iso(window[0])}/{_iso(window[1])}"
        if max_cloud_cover is not None:
            if client.conforms_to(ConformanceClasses.FILTER):
                params["filter"] = {
                    "op": "<=",
                    "args": [{"property": "eo:cloud_cover"}, max_cloud_cover],
                }
                params["filter_lang"] = "cql2-json"
            elif client.conforms_to(ConformanceClasses.QUERY):
                params["query"] = {"eo:cloud_cover": {"lte": max_cloud_cover}}
        found: dict[tuple[str, str], pystac.Item] = {}
        n = 0
        with _api_errors(self.url, self.cfg, f"searching {list(collections)}"):
            search = client.search(**params)
            for d in search.items_as_dicts():
                n += 1
                item = pystac.Item.from_dict(d, preserve_dict=False)
                if not _cloud_ok(item.properties, max_cloud_cover) or not _in_window(item, window):
                    continue
                complete_item(item)
                found[(item.collection_id or "", item.id)] = item
        cut = self.cfg.max_items is not None and n >= self.cfg.max_items
        with self._count_lock:
            self.searches += 1
            self.truncated += int(cut)
        if cut:
            logger.warning(
                "search of %s at %s stopped at catalog.max_items=%d items; results may be "
                "incomplete (raise catalog.max_items or narrow the time windows)",
                list(collections),
                self.url,
                self.cfg.max_items,
            )
        return list(found.values()), cut

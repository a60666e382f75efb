"""A real STAC API server for the integration tests: stac-fastapi-pgstac on a throwaway cluster.

What runs is what Planetary Computer runs (stac-fastapi-pgstac over PostgreSQL + PostGIS +
pgstac), started from scratch on 127.0.0.1 and torn down afterwards:

1. ``initdb`` a new PostgreSQL cluster in a temporary folder (as the ``postgres`` user when the
   tests run as root: PostgreSQL refuses to run as root) and run ``postgres`` on it as a child
   process, on a free port, listening on 127.0.0.1 only, trust authentication, durability off
   (it is thrown away);
2. ``CREATE EXTENSION postgis``, then ``pypgstac migrate`` (the CLI) installs the pgstac schema;
3. ``pypgstac load collections|items`` loads the collections and items given (ndjson files);
4. ``uvicorn stac_fastapi.pgstac.app:create_app --factory`` serves the API on another free
   port, with the ``PG*`` variables stac-fastapi-pgstac's ``PostgresSettings`` reads;
5. the server is ready when ``/`` and ``/collections`` answer 200 and every loaded collection
   is listed.

:func:`run_pgstac_server` does all this in a context manager and stops everything (server,
cluster, temporary folders) on the way out, also when the body raises.

The data the tests load come from ``../shared/data`` (:func:`oscd_stac`,
:func:`worldcover_stac`): every raster asset is a Cloud-Optimized GeoTIFF written here (GDAL's
COG driver) from the original files. :class:`RangeFileServer` serves them over HTTP with byte
ranges and :func:`publish` points the hrefs at it, so the pipeline reads COGs through GDAL's
``/vsicurl/`` as it would from blob storage.

:class:`Flaky503Proxy` is a test double: a local HTTP proxy that answers 503 to the first N
requests and passes every later one through to the server unchanged (method, path, query,
body, headers, and the raw response bytes).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pystac
import rasterio
import rasterio.shutil
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from tests import oscd_catalog

#: Where Debian's postgresql packages put the server binaries (newest major version first).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: Environment variable naming another folder holding initdb and postgres.
PG_BIN_ENV = "GEODELTA_PG_BIN"
#: The OS user the cluster runs as when the tests run as root.
PG_OS_USER = "postgres"
PG_DATABASE = "pgstac"
PG_SUPERUSER = "postgres"
#: Any password: the cluster trusts local TCP connections, stac-fastapi-pgstac requires one.
PG_PASSWORD = "geodelta-test"

#: OSCD cities the session's server holds: small, both in UTM zone 31N (56 cells of 640 m).
OSCD_CITIES: tuple[str, ...] = ("bercy", "paris")

WORLDCOVER_COLLECTION = "esa-worldcover"
WORLDCOVER_ASSET = "map"
WORLDCOVER_FILES = {
    2020: ("ESA_WorldCover_10m_2020_v100_N00E006_Map_saotome_city_crop.tif", "v100"),
    2021: ("ESA_WorldCover_10m_2021_v200_N00E006_Map_saotome_city_crop.tif", "v200"),
}
WORLDCOVER_ATTRIBUTION = (
    "© ESA WorldCover project 2020 and 2021 / Contains modified Copernicus Sentinel data "
    "(2020, 2021) processed by ESA WorldCover consortium"
)


class PgstacServerError(RuntimeError):
    """A step of starting the server failed.

    Attributes:
        step: which step (``initdb``, ``postgres``, ``pypgstac migrate`` ...).
        detail: what happened, with the tail of the step's output or log.
    """

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"pgstac test server, {step}: {detail}")
        self.step = step
        self.detail = detail


def find_pg_bin() -> Path | None:
    """The folder holding PostgreSQL's ``initdb`` and ``postgres``, or None when not installed.

    ``$GEODELTA_PG_BIN``, when set, is the only folder tried; otherwise the newest ``/usr/lib/postgresql/<major>/bin``; otherwise
    the folder of ``initdb`` on PATH.
    """
    if os.environ.get(PG_BIN_ENV):  # explicit: that folder or nothing
        folder = Path(os.environ[PG_BIN_ENV])
        ok = (folder / "initdb").is_file() and (folder / "postgres").is_file()
        return folder if ok else None
    candidates: list[Path] = []
    versions = sorted(
        Path("/").glob(PG_BIN_GLOB.lstrip("/")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def postgis_available(pg_bin: Path) -> bool:
    """Whether the PostGIS extension is installed for the server in ``pg_bin``."""
    pg_config = pg_bin / "pg_config"
    share: Path | None = None
    if pg_config.is_file():
        out = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            share = Path(out.stdout.strip())
    if share is None:  # Debian: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        share = Path("/usr/share/postgresql") / pg_bin.parent.name
    return (share / "extension" / "postgis.control").is_file()


def missing_prerequisites() -> str | None:
    """Why the server cannot start here (binaries missing), or None when it can."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        return (
            f"PostgreSQL server binaries not found (initdb/postgres in {PG_BIN_GLOB}, "
            f"${PG_BIN_ENV} or PATH); install the Debian packages postgresql and "
            "postgresql-15-postgis-3 (.ci/run does)"
        )
    if not postgis_available(pg_bin):
        return f"PostGIS is not installed for {pg_bin} (Debian package postgresql-15-postgis-3)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root and there is no {PG_OS_USER!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_tail(path: Path, lines: int = 30) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"


def _venv_script(name: str) -> str:
    """A console script of the running interpreter's environment (e.g. ``.venv/bin/pypgstac``)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise PgstacServerError(name, f"console script {name!r} not found beside {sys.executable}")
    return found


def _owner_kwargs() -> dict[str, Any]:
    """``subprocess`` arguments running a child as :data:`PG_OS_USER` when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(PG_OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see :func:`run_pgstac_server`).

    The postmaster is a direct child of this process (not daemonised by ``pg_ctl``), in the
    same process group: killing the test run's process group stops it too.
    """

    pg_bin: Path
    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """libpq connection string of the pgstac database (as the superuser)."""
        return self.dsn_of(PG_DATABASE)

    def dsn_of(self, database: str) -> str:
        """libpq connection string of ``database`` (as the superuser)."""
        return (
            f"postgresql://{PG_SUPERUSER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"
            "?connect_timeout=10"
        )

    def init(self) -> None:
        """``initdb``: superuser ``postgres``, trust auth, UTF8, no fsync."""
        args = [
            str(self.pg_bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        try:
            out = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=self.data_dir.parent,
                **_owner_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise PgstacServerError("initdb", "timed out after 120 s") from exc
        if out.returncode != 0:
            raise PgstacServerError(
                "initdb", f"exit {out.returncode}\n{_tail(out.stdout + out.stderr)}"
            )

    def start(self, timeout_s: float = 60.0) -> None:
        """Run ``postgres`` on 127.0.0.1:port (durability off) and wait until it accepts."""
        import psycopg

        args = [
            str(self.pg_bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=50",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.data_dir.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                **_owner_kwargs(),
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise PgstacServerError(
                    "postgres", f"exited with {self.proc.returncode}\n{_read_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(self.dsn_of("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PgstacServerError(
                        "postgres",
                        f"not accepting connections after {timeout_s:.0f} s ({exc})\n"
                        f"{_read_tail(self.log_path)}",
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass(frozen=True)
class PgstacServer:
    """A running STAC API.

    Attributes:
        url: root of the STAC API, ``http://127.0.0.1:<port>``.
        dsn: connection string of its pgstac database.
        items: collection id -> ids of the items loaded into it.
        log_path: uvicorn's log.
        asset_server: the HTTP server of the assets' COGs, when they are served over HTTP.
    """

    url: str
    dsn: str
    items: dict[str, tuple[str, ...]]
    log_path: Path
    asset_server: RangeFileServer | None = None

    def local_path(self, href: str) -> Path:
        """The local file behind an asset href (an URL of :attr:`asset_server`, or a path)."""
        if self.asset_server is not None and href.startswith(self.asset_server.url + "/"):
            return self.asset_server.path_of(href)
        return Path(href.removeprefix("file://"))


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        if resp.status != 200:
            raise urllib.error.HTTPError(url, resp.status, "not 200", resp.headers, None)
        return json.loads(resp.read())


def _item_record(item: pystac.Item, collection_id: str) -> dict[str, Any]:
    """The item as pgstac stores it: collection set, links dropped (the API makes its own)."""
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    data["collection"] = collection_id
    data["links"] = []
    return data


def _collection_record(collection: pystac.Collection) -> dict[str, Any]:
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = [link for link in data.get("links", []) if link.get("rel") == "license"]
    return data


def _write_ndjson(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _load(
    dsn: str,
    work_dir: Path,
    collections: Sequence[pystac.Collection],
    items: Sequence[pystac.Item],
) -> dict[str, tuple[str, ...]]:
    """``pypgstac load`` the collections, then their items (grouped per collection)."""
    ids = {c.id for c in collections}
    per_collection: dict[str, list[str]] = {c.id: [] for c in collections}
    records = []
    for item in items:
        if item.collection_id not in ids:
            raise PgstacServerError(
                "pypgstac load",
                f"item {item.id} names collection {item.collection_id!r}, not one of {sorted(ids)}",
            )
        records.append(_item_record(item, str(item.collection_id)))
        per_collection[str(item.collection_id)].append(item.id)
    cli = _venv_script("pypgstac")
    files = {
        "collections": _write_ndjson(
            work_dir / "collections.ndjson", [_collection_record(c) for c in collections]
        ),
        "items": _write_ndjson(work_dir / "items.ndjson", records),
    }
    for table, path in files.items():
        _run_checked(
            f"pypgstac load {table}",
            [cli, "load", table, str(path), "--dsn", dsn, "--method", "insert"],
        )
    return {cid: tuple(sorted(v)) for cid, v in per_collection.items()}


def _run_checked(step: str, args: list[str], timeout: float = 180) -> None:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PgstacServerError(step, f"timed out after {timeout:.0f} s") from exc
    if out.returncode != 0:
        raise PgstacServerError(step, f"exit {out.returncode}\n{_tail(out.stdout + out.stderr)}")


def _create_database(cluster: PostgresCluster) -> None:
    import psycopg

    with psycopg.connect(cluster.dsn_of("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")


def _api_env(cluster: PostgresCluster) -> dict[str, str]:
    """Environment of the uvicorn process: what ``PostgresSettings`` and ``Settings`` read."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PG", "POSTGRES_"))}
    env.update(
        {
            "PGUSER": PG_SUPERUSER,
            "PGPASSWORD": PG_PASSWORD,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "PGDATABASE": PG_DATABASE,
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "4",
            # a build reads, never writes: no transaction endpoints
            "ENABLE_TRANSACTIONS_EXTENSIONS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, expect: set[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PgstacServerError(
                "uvicorn", f"exited with {proc.returncode}\n{_read_tail(log_path)}"
            )
        try:
            _get_json(url + "/")
            listed = {c["id"] for c in _get_json(url + "/collections")["collections"]}
            if expect <= listed:
                return
            last = f"/collections lists {sorted(listed)}, expected {sorted(expect)}"
        except (OSError, ValueError, KeyError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise PgstacServerError(
        "uvicorn", f"not ready after {timeout:.0f} s ({last})\n{_read_tail(log_path)}"
    )


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@contextlib.contextmanager
def run_pgstac_server(
    work_dir: Path,
    collections: Sequence[pystac.Collection],
    items: Sequence[pystac.Item],
    *,
    pg_bin: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> Iterator[PgstacServer]:
    """Start PostgreSQL + pgstac + stac-fastapi-pgstac with these data; stop all on exit.

    Args:
        work_dir: folder for the ndjson files and uvicorn's log (kept; the caller owns it).
        collections: collections to load.
        items: items to load; each names one of ``collections`` in ``collection_id``.
        pg_bin: folder of ``initdb``/``postgres`` (default: :func:`find_pg_bin`).
        ready_timeout_s: how long the API may take to answer.

    Yields:
        The running server.

    Raises:
        PgstacServerError: a step failed (the message holds the step's output or log tail).
    """
    pg_bin = pg_bin or find_pg_bin()
    if pg_bin is None:
        raise PgstacServerError("find binaries", str(missing_prerequisites()))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # The cluster folder lives in the system temp dir, owned by the cluster's OS user: pytest's
    # own temp folders are private to the test user, and PostgreSQL runs as another one.
    pg_root = Path(tempfile.mkdtemp(prefix="geodelta-pgstac-"))
    api: subprocess.Popen[bytes] | None = None
    cluster = PostgresCluster(pg_bin, pg_root / "data", free_port(), pg_root / "postgres.log")
    try:
        if os.geteuid() == 0:
            shutil.chown(pg_root, user=PG_OS_USER, group=None)
        cluster.init()
        cluster.start()
        _create_database(cluster)
        _run_checked(
            "pypgstac migrate", [_venv_script("pypgstac"), "migrate", "--dsn", cluster.dsn]
        )
        loaded = _load(cluster.dsn, work_dir, collections, items)
        log_path = work_dir / "uvicorn.log"
        port = free_port()
        with log_path.open("wb") as log:
            api = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "stac_fastapi.pgstac.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=work_dir,  # stac-fastapi-pgstac reads a .env file from the working folder
                env=_api_env(cluster),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, api, log_path, set(loaded), ready_timeout_s)
        yield PgstacServer(url=url, dsn=cluster.dsn, items=loaded, log_path=log_path)
    finally:
        try:
            if api is not None:
                _stop_process(api)
        finally:
            try:
                cluster.stop()
            finally:
                shutil.rmtree(pg_root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Test data: COGs written from ../shared/data


def write_cog(src: Path, dst: Path) -> Path:
    """Copy a GeoTIFF to a Cloud-Optimized GeoTIFF (GDAL COG driver, deflate, 256 px blocks).

    Pixel values, CRS, transform and nodata are unchanged.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp.tif")
    rasterio.shutil.copy(
        str(src), str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="256", OVERVIEWS="AUTO"
    )
    tmp.replace(dst)
    return dst


def is_cog(path: Path) -> bool:
    """Whether GDAL reports the file as a Cloud-Optimized GeoTIFF layout."""
    with rasterio.open(path) as src:
        return (src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") or "").upper() == "COG"


def oscd_stac(
    data_dir: Path, cities: Sequence[str], out_dir: Path
) -> tuple[pystac.Collection, list[pystac.Item]]:
    """The OSCD collection (:mod:`tests.oscd_catalog`) with every raster asset rewritten as a COG.

    Args:
        data_dir: the ``oscd`` folder of the shared data.
        cities: city folder names.
        out_dir: folder for the COGs (``<out_dir>/<item id>/<asset>.tif``).

    Returns:
        The collection (id :data:`tests.oscd_catalog.COLLECTION_ID`) and its items, whose asset
        hrefs are the absolute paths of the COGs.
    """
    pairs = oscd_catalog.oscd_items(Path(data_dir), cities, Path(out_dir) / "_masks")
    items: list[pystac.Item] = []
    for item, _ in pairs:
        folder = Path(out_dir) / item.id
        for key, asset in item.assets.items():
            cog = write_cog(Path(asset.href), folder / f"{key}.tif")
            asset.href = str(cog.resolve())
            asset.media_type = pystac.MediaType.COG
        item.collection_id = oscd_catalog.COLLECTION_ID
        items.append(item)
    return _collection(
        oscd_catalog.COLLECTION_ID,
        "OSCD Sentinel-2 L1C pairs (COGs; geodelta integration-test fixture)",
        oscd_catalog.LICENCE,
        oscd_catalog.ATTRIBUTION,
        items,
    ), items


def worldcover_stac(data_dir: Path, out_dir: Path) -> tuple[pystac.Collection, list[pystac.Item]]:
    """ESA WorldCover 2020 and 2021 over Sao Tome as a land-cover collection of two items.

    Item ``esa-worldcover-<year>-saotome`` covers the calendar year (``datetime`` null,
    ``start_datetime``/``end_datetime`` set, like Planetary Computer's ``esa-worldcover``) and
    has one asset, ``map``: a COG of the crop (uint8, nodata 0, EPSG:4326).

    Args:
        data_dir: the ``esa_worldcover_pair`` folder of the shared data.
        out_dir: folder for the COGs.
    """
    items: list[pystac.Item] = []
    for year, (name, version) in sorted(WORLDCOVER_FILES.items()):
        src = Path(data_dir) / name
        iid = f"esa-worldcover-{year}-saotome"
        cog = write_cog(src, Path(out_dir) / iid / f"{WORLDCOVER_ASSET}.tif")
        with rasterio.open(cog) as ds:
            bounds, crs, transform = ds.bounds, ds.crs, ds.transform
            shape = [ds.height, ds.width]
            nodata = ds.nodata
        x0, y0, x1, y1 = (float(v) for v in bounds)
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        item = pystac.Item(
            id=iid,
            geometry={"type": "Polygon", "coordinates": [ring]},
            bbox=[x0, y0, x1, y1],
            datetime=None,
            start_datetime=datetime(year, 1, 1, tzinfo=UTC),
            end_datetime=datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC),
            properties={"esa_worldcover:product_version": version},
            collection=None,
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.epsg = int(crs.to_epsg())
        proj.shape = shape
        proj.transform = list(transform)[:6]
        asset = pystac.Asset(
            href=str(cog.resolve()),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title=f"ESA WorldCover {year} {version} land-cover map",
        )
        item.add_asset(WORLDCOVER_ASSET, asset)
        RasterExtension.ext(asset, add_if_missing=True).bands = [
            RasterBand.create(
                data_type=DataType.UINT8, nodata=int(nodata) if nodata is not None else 0
            )
        ]
        item.collection_id = WORLDCOVER_COLLECTION
        items.append(item)
    return _collection(
        WORLDCOVER_COLLECTION,
        "ESA WorldCover 10 m 2020 (v100) and 2021 (v200), Sao Tome crops (integration-test fixture)",
        "CC-BY-4.0",
        WORLDCOVER_ATTRIBUTION,
        items,
    ), items


def _collection(
    cid: str, description: str, licence: str, attribution: str, items: Sequence[pystac.Item]
) -> pystac.Collection:
    boxes = [list(i.bbox or []) for i in items]
    union = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    times = sorted(
        t
        for i in items
        for t in (
            i.datetime,
            pystac.utils.str_to_datetime(i.properties["start_datetime"])
            if i.properties.get("start_datetime")
            else None,
            pystac.utils.str_to_datetime(i.properties["end_datetime"])
            if i.properties.get("end_datetime")
            else None,
        )
        if t is not None
    )
    return pystac.Collection(
        id=cid,
        description=description,
        extent=pystac.Extent(
            pystac.SpatialExtent([union]), pystac.TemporalExtent([[times[0], times[-1]]])
        ),
        license=licence,
        extra_fields={"attribution": attribution},
    )


# --------------------------------------------------------------------------------------------
# Test double: a proxy that answers 503 before passing requests through


@dataclass
class ProxyLog:
    """What :class:`Flaky503Proxy` did, request by request (thread-safe counters)."""

    refused: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    # the proxy's own BaseHTTPRequestHandler sends these
    "server",
    "date",
}


class Flaky503Proxy:
    """Test double: an HTTP proxy on 127.0.0.1 that answers 503 to its first ``fail_first``
    requests (those whose path starts with ``path_prefix``, when given; with a ``Retry-After``
    of ``retry_after_s`` unless None), then forwards every request to ``upstream`` unchanged.

    Forwarded requests keep their method, path, query, body and headers (``Host`` included, so
    the API's own links, e.g. ``next`` pages, point back through the proxy); responses are passed
    back byte for byte (status, headers, body; compressed bodies stay compressed).

    Use as a context manager; ``url`` is the proxy's root and ``log`` records each request.
    """

    def __init__(
        self,
        upstream: str,
        fail_first: int = 2,
        retry_after_s: int | None = 0,
        path_prefix: str | None = None,
    ) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream_host = host
        self.upstream_port = int(port or 80)
        self.fail_first = fail_first
        self.retry_after_s = retry_after_s
        self.path_prefix = path_prefix
        self.log = ProxyLog()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Root URL of the proxy."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Flaky503Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                line = f"{self.command} {self.path}"
                targeted = proxy.path_prefix is None or self.path.startswith(proxy.path_prefix)
                with proxy.log.lock:
                    refuse = targeted and len(proxy.log.refused) < proxy.fail_first
                    (proxy.log.refused if refuse else proxy.log.passed).append(line)
                if refuse:
                    payload = b'{"code": "ServiceUnavailable", "description": "test double"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if proxy.retry_after_s is not None:
                        self.send_header("Retry-After", str(proxy.retry_after_s))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = _relay
            do_POST = _relay
            do_HEAD = _relay

        return Handler


# --------------------------------------------------------------------------------------------
# The assets over HTTP: a static file server with byte ranges (what GDAL's /vsicurl/ needs)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single ``bytes=`` range; None for none or several (full answer)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, _, last_s = header.removeprefix("bytes=").strip().partition("-")
    if first_s == "":  # suffix: the last N bytes
        return max(size - int(last_s), 0), size - 1
    first = int(first_s)
    return first, (min(int(last_s), size - 1) if last_s else size - 1)


class _RangeHandler(BaseHTTPRequestHandler):
    """Files under ``server.root``: HEAD, GET, single byte ranges (206); ``/_stats`` as JSON."""

    protocol_version = "HTTP/1.1"
    server: _FileHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _empty(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.count(status, 0)

    def _answer(self, send_body: bool) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        if rel == "_stats":
            with self.server.lock:
                payload = json.dumps(self.server.stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        path = (self.server.root / rel).resolve()
        if not path.is_file() or not path.is_relative_to(self.server.root):
            self._empty(404)
            return
        size = path.stat().st_size
        try:
            span = _byte_range(self.headers.get("Range"), size)
        except ValueError:
            span = None
        if span is not None and span[0] >= size:
            self._empty(416, Content_Range=f"bytes */{size}")
            return
        first, last = span if span is not None else (0, size - 1)
        status = 206 if span is not None else 200
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        if span is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        sent = 0
        if send_body:
            with path.open("rb") as f:
                f.seek(first)
                data = f.read(last - first + 1)
            self.wfile.write(data)
            sent = len(data)
        self.server.count(status, sent)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)


class _FileHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), _RangeHandler)
        self.root = Path(root).resolve()
        self.lock = threading.Lock()
        self.stats: dict[str, int] = {"bytes_sent": 0}

    def count(self, status: int, sent: int) -> None:
        with self.lock:
            self.stats[str(status)] = self.stats.get(str(status), 0) + 1
            self.stats["bytes_sent"] += sent


def serve_files(root: Path, port: int) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` until killed (the :class:`RangeFileServer` process)."""
    _FileHTTPServer(root, port).serve_forever()


class RangeFileServer:
    """A static HTTP file server over one folder, in its own process, on 127.0.0.1.

    Answers HEAD with the size, a single byte range with 206 (``Accept-Ranges: bytes``), other
    GETs with the whole file, and 404 outside the folder: enough for GDAL's ``/vsicurl/`` to read
    COGs the way it reads them from blob storage. Its own process, because GDAL holds the GIL
    while it reads: a server thread in the reading process would never get to answer.

    Use as a context manager; :meth:`stats` counts the answers by status, and the bytes sent.
    """

    def __init__(self, root: Path, ready_timeout_s: float = 30.0) -> None:
        self.root = Path(root).resolve()
        self.port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Root URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url_of(self, path: Path) -> str:
        """The URL of a file under :attr:`root`."""
        rel = Path(path).resolve().relative_to(self.root)
        return f"{self.url}/{rel.as_posix()}"

    def path_of(self, url: str) -> Path:
        """The file behind one of this server's URLs."""
        return self.root / url.removeprefix(self.url + "/").split("?", 1)[0]

    def stats(self) -> dict[str, int]:
        """Answers so far by HTTP status (keys ``"200"``, ``"206"`` ...) and ``bytes_sent``."""
        return dict(_get_json(self.url + "/_stats"))

    def __enter__(self) -> RangeFileServer:
        repo = Path(__file__).resolve().parent.parent
        code = "import sys; from tests.pgstac_server import serve_files; serve_files(sys.argv[1], int(sys.argv[2]))"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(self.root), str(self.port)],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise PgstacServerError(
                    "file server", f"exited {self._proc.returncode}\n{_tail(err)}"
                )
            try:
                self.stats()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    _stop_process(self._proc)
                    raise PgstacServerError(
                        "file server", f"not answering after {self.ready_timeout_s:.0f} s"
                    ) from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            _stop_process(self._proc)
            if self._proc.stderr is not None:
                self._proc.stderr.close()


def publish(items: Sequence[pystac.Item], files: RangeFileServer) -> None:
    """Point every asset href of ``items`` (local files under ``files.root``) at ``files``."""
    for item in items:
        for asset in item.assets.values():
            asset.href = files.url_of(Path(asset.href))

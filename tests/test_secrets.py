"""The secrets test: a build whose reads go through a SAS signer leaks the signature nowhere.

The synthetic demo catalog is served over HTTP by a local test double that refuses every file
request without the fake SAS signature (so the build can only succeed if every read is signed at
read time) and hands out that signature from a fake token endpoint. The catalog's hrefs point
at the double, unsigned; ``catalog.signing: planetary-computer`` signs them with the real
:class:`~geodelta.sources.signing.PlanetaryComputerSigner` code path. One asset is refused even
when signed, so a read error (whose GDAL message quotes the signed URL) reaches quarantine.

Then no shard member, manifest, parquet row, card, collection, report, log line (all loggers,
DEBUG) or console output may contain the signature.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geodelta.pipelines.api import build
from geodelta.schemas import AssetRef, load_config
from geodelta.sources.demo.catalog import write_demo_catalog
from geodelta.sources.raster import RasterAccess, RasterReadError, read_classes
from geodelta.sources.signing import PlanetaryComputerSigner, http_token_fetcher
from tests.conftest import REPO
from tests.http_doubles import FileServer
from tests.test_raster import make_job

SIG = "SECRET-SIG-7f3a9c"
TOKEN = f"sv=2024-05-04&se=2099-01-01T00%3A00%3A00Z&sp=r&sr=c&sig={SIG}"


def _point_hrefs_at(root: Path, origin: str) -> list[str]:
    """Rewrite every item's asset hrefs to unsigned http URLs under ``origin``."""
    hrefs = []
    for path in sorted(root.rglob("*.json")):
        data = json.loads(path.read_text())
        if data.get("type") != "Feature":
            continue
        for asset in data["assets"].values():
            target = (path.parent / asset["href"]).resolve()
            asset["href"] = f"{origin}/{target.relative_to(root.resolve()).as_posix()}"
            hrefs.append(asset["href"])
        path.write_text(json.dumps(data))
    return hrefs


def _texts(release: Path) -> dict[str, str]:
    """Every file of a release as text; tar members and parquet rows one by one."""
    out: dict[str, str] = {}
    for path in sorted(p for p in release.rglob("*") if p.is_file()):
        rel = path.relative_to(release).as_posix()
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                    out[f"{rel}:{member.name}"] = data.decode("latin-1")
        elif path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            out[rel] = json.dumps(rows, default=str)
        out[f"{rel}#bytes"] = path.read_bytes().decode("latin-1")
    return out


@pytest.mark.slow
def test_signed_reads_leave_no_secret_anywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = write_demo_catalog(tmp_path / "catalog", seed=0, scale=0.5)
    server = FileServer(cat.catalog_path.parent, require=("sig", SIG), token=TOKEN)
    with server.running():
        hrefs = _point_hrefs_at(cat.catalog_path.parent, server.origin)
        # one after-scene band is refused even when signed: a read error goes to quarantine
        denied = sorted(h for h in hrefs if "2021" in h and h.endswith("/B08.tif"))[0]
        server.deny = (denied.split(server.origin, 1)[1],)
        cfg = load_config(
            REPO / "configs" / "demo.yaml",
            {
                "catalog": {
                    "url": str(cat.catalog_path),
                    "signing": "planetary-computer",
                    "sas_url": f"{server.origin}/sas",
                    "sign_hosts": ["127.0.0.1"],
                },
                "aoi": {"bbox": list(cat.aoi_bbox)},
                "output": {"dir": str(tmp_path / "release")},
                "runner": {"name": "inprocess"},
            },
        )
        with caplog.at_level(logging.DEBUG):
            result = build(cfg, mode="overwrite", progress=True, on_stage=logging.info)
        tif_requests = [r for r in server.seen if r.path.endswith(".tif")]
        token_requests = [r for r in server.seen if r.path.startswith("/sas/")]

    # every read was signed at read time (the double refuses unsigned ones), with one token
    assert tif_requests and all(r.query.get("sig") == [SIG] for r in tif_requests)
    assert {r.path.rsplit("/", 1)[1] for r in token_requests} == {
        "geodelta-demo-s2l2a",
        "geodelta-demo-landcover",
    }  # one token per container, cached
    # per process signer: the pre-flight's (sampled items' headers) and the worker's
    assert len(token_requests) == 4
    assert result.samples > 0
    assert any(k.endswith(":read_error") for k in result.manifest.quarantined), (
        result.manifest.quarantined
    )

    texts = _texts(result.release_dir)
    assert any(name.endswith(".json") and ":" in name for name in texts)  # shard members seen
    assert {"manifest.json#bytes", "samples.parquet", "quarantine.parquet"} <= set(texts)
    assert any(name.startswith("report/") for name in texts)
    leaks = [name for name, text in texts.items() if SIG in text or "sig=" in text]
    assert leaks == []
    # the quarantined read error names the (stripped) href, not the signed one
    quarantine = json.loads(texts["quarantine.parquet"])
    errors = [q for q in quarantine if q["reason"] == "read_error"]
    assert errors
    for error in errors:
        assert "B08.tif" in error["detail"] and "127.0.0.1" in error["detail"]

    captured = capsys.readouterr()
    assert caplog.records, "the build logged nothing: the log check would be empty"
    assert SIG not in caplog.text and SIG not in captured.out and SIG not in captured.err
    for record in caplog.records:
        assert SIG not in record.getMessage()


def test_a_failed_signed_read_does_not_quote_the_signature(tmp_path: Path) -> None:
    server = FileServer(tmp_path, require=("sig", SIG), token=TOKEN)
    with server.running():
        signer = PlanetaryComputerSigner(
            http_token_fetcher(f"{server.origin}/sas", retries=0), hosts=("127.0.0.1",)
        )
        asset = AssetRef(href=f"{server.origin}/missing.tif")
        job = make_job("EPSG:32631", 500000, 5000300, 10.0, (8, 8))
        with pytest.raises(RasterReadError) as err:
            read_classes(asset, job, access=RasterAccess(signer=signer))
    assert server.seen[-1].query.get("sig") == [SIG]  # the read was signed
    assert SIG not in str(err.value) and "sig=" not in str(err.value)
    assert "missing.tif" in str(err.value)
    assert err.value.href == f"{server.origin}/missing.tif"
    assert SIG not in repr(err.value) and SIG not in err.value.reason

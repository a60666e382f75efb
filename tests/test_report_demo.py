"""The quality report of real demo builds: figures, the diff of two configs, a real browser.

Two dataset versions are built once for the module from one synthetic demo catalog
(scale 0.5, in-process runner), from DIFFERENT configs: version 0.2.0 has a narrower AOI (the
eastern cells leave), a lower ``pairing.min_clear_fraction`` (cloudier pairs come in) and a
``annotation.no_change_epsilon`` of 1% (a sample with a sliver of change gets "no change"
captions and answers; the others stay byte-identical). The report's
added/removed/changed counts are checked against sets computed here, independently, from the
two ``samples.parquet`` tables and the raw tar members.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from geodelta.pipelines.api import BuildResult, build
from geodelta.pipelines.report.render import PROVENANCE_FIELDS, write_report
from geodelta.schemas import load_config
from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import REPO
from tests.prerequisites import missing

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


def _build(cat_path: Path, aoi: list[float], out: Path, **extra: Any) -> BuildResult:
    overrides = {
        "catalog": {"url": str(cat_path)},
        "output": {"dir": str(out)},
        "aoi": {"bbox": aoi},
        "runner": {"name": "inprocess"},
        **extra,
    }
    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    return build(cfg, mode="overwrite", progress=False)


@pytest.fixture(scope="module")
def versions(
    demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, bytes]:
    """(v1 release, v2 release, v1's report bytes as `build` wrote them), over the session's
    demo catalog (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("demo-report")
    cat = demo_catalog
    x0, y0, x1, y1 = cat.aoi_bbox
    v1 = _build(cat.catalog_path, [x0, y0, x1, y1], root / "v1").release_dir
    built_report = (v1 / "report" / "index.html").read_bytes()
    v2 = _build(
        cat.catalog_path,
        [x0, y0, x0 + 0.7 * (x1 - x0), y1],
        root / "v2",
        version="0.2.0",
        pairing={"min_clear_fraction": 0.6},
        annotation={"no_change_epsilon": 0.01},
        validation={"great_expectations": False},
    ).release_dir
    write_report(v2, previous=v1, max_gallery=4)
    return v1, v2, built_report


def _section(page: str, ident: str) -> str:
    m = re.search(rf"<section id='{ident}'>(.*?)</section>", page, re.S)
    assert m, f"section {ident} missing"
    return m.group(1)


def _rows(rel: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(rel / "samples.parquet").to_pylist())


def _content(rel: Path) -> dict[str, dict[str, Any]]:
    """key -> {member: bytes}, the json member parsed and without provenance fields."""
    out: dict[str, dict[str, Any]] = {}
    for shard in sorted((rel / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                key, _, member = info.name.partition(".")
                f = tar.extractfile(info)
                assert f is not None
                data: Any = f.read()
                if member == "json":
                    data = {k: v for k, v in json.loads(data).items() if k not in PROVENANCE_FIELDS}
                out.setdefault(key, {})[member] = data
    return out


def test_build_writes_the_report_and_it_is_reproducible(
    versions: tuple[Path, Path, bytes],
) -> None:
    v1, _, built = versions
    page = built.decode()
    rows = _rows(v1)
    assert f"<th>samples</th><td>{len(rows)}</td>" in page and len(rows) >= 8
    changed = sum(1 for r in rows if r["changed_fraction"] > 0)
    assert f"{changed} of {len(rows)} samples show change" in _section(page, "transitions")
    applied = sum(1 for r in rows if r["coreg_applied"])
    assert f"<td>shift applied</td><td>{applied} of {len(rows)}</td>" in page
    manifest = json.loads((v1 / "manifest.json").read_text())
    for key, n in manifest["quarantined"].items():
        stage, _, reason = key.partition(":")
        assert f"<td>{stage}</td><td>{reason}</td><td class='n'>{n}</td>" in page
    # GX ran in the build: the section links to Data Docs that exist on disk
    val = _section(page, "validation")
    assert "<b class='pos'>passed</b>" in val
    assert "href='../validation/data_docs/index.html'" in val
    for href in re.findall(r"href='([^'#]+)'", page):
        target = (v1 / "report" / unquote(href)).resolve()
        assert target.is_file() and target.is_relative_to(v1.resolve()), href
    # regenerating gives the same bytes, also from a copy in another folder
    copy = shutil.copytree(v1, v1.parent / "v1-copy")
    assert write_report(copy).read_bytes() == built
    assert write_report(v1).read_bytes() == built


def test_diff_of_two_configs(versions: tuple[Path, Path, bytes]) -> None:
    v1, v2, _ = versions
    page = (v2 / "report" / "index.html").read_text()
    diff = _section(page, "diff")
    k1, k2 = {r["key"] for r in _rows(v1)}, {r["key"] for r in _rows(v2)}
    added, removed = k2 - k1, k1 - k2
    c1, c2 = _content(v1), _content(v2)
    assert set(c1) == k1 and set(c2) == k2
    changed = {k for k in k1 & k2 if c1[k] != c2[k]}
    unchanged = len(k1 & k2) - len(changed)
    # the configs really differ in what they produce
    assert removed and added and changed and unchanged
    counts = (len(k1), len(k2), len(added), len(removed), len(changed), unchanged)
    row = "<tr>" + "".join(f"<td class='n'>{n}</td>" for n in counts) + "</tr>"
    assert row in diff
    for key in added | removed | changed:
        assert key in diff
    assert "<td>version</td><td>0.1.0</td><td>0.2.0</td>" in diff
    for key in ("aoi.bbox", "pairing.min_clear_fraction", "annotation.no_change_epsilon"):
        assert f"<td>{key}</td>" in diff
    m = re.search(
        r"<td>samples</td><td class='n'>(\d+)</td><td class='n'>(\d+)</td>"
        r"<td class='n'><span class='\w+'>([^<]+)</span>",
        diff,
    )
    assert m and (int(m.group(1)), int(m.group(2))) == (len(k1), len(k2))
    assert int(m.group(3)) == len(k2) - len(k1)
    assert "Great Expectations validation: <b>not run</b>" in _section(page, "validation")


@pytest.mark.integration
def test_report_renders_in_chromium(versions: tuple[Path, Path, bytes]) -> None:
    """Open the report (with a diff) in headless Chromium at 1,280 px: every image loads, no
    console error, the verdict banner on the first screen, a colour legend under every mask, no
    horizontal overflow (screenshot in test-artifacts/)."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found (Debian package 'chromium'; .ci/run installs it)"
        missing(reason)
    from playwright.sync_api import sync_playwright

    _, v2, _ = versions
    path = v2 / "report" / "index.html"
    messages: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
            )
            sections = page.evaluate("Array.from(document.querySelectorAll('section')).length")
            toc = page.evaluate("document.querySelectorAll('nav a').length")
            banner = page.locator("#verdict-banner")
            banner_text = banner.inner_text()
            banner_box = banner.bounding_box()
            banner_colour = banner.evaluate("e => getComputedStyle(e).backgroundColor")
            # every mask figure (label "change"/"label", the model's "model") has a legend
            masks = page.evaluate(
                "Array.from(document.querySelectorAll('figure')).filter(f => "
                "['change', 'label', 'model'].includes(f.querySelector('img').alt)).map(f => "
                "Array.from(f.querySelectorAll('.legend .item')).map(i => i.innerText))"
            )
            widths = page.evaluate(
                "[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
            )
            wide = page.evaluate(
                "Array.from(document.querySelectorAll('table')).filter(t => "
                "t.getBoundingClientRect().right > 1280).map(t => t.id || t.innerText.slice(0, 40))"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "report-demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert len(images) >= 20
    assert [alt for complete, width, alt in images if not (complete and width > 0)] == []
    assert [m for m in messages if m.startswith(("error", "pageerror"))] == []
    assert sections == toc >= 13  # the verdict, the diff, the 11 content sections (and more)
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 50_000
    # the first screen says what to do: v2 has no reference metrics, which its gate requires
    assert banner_text.startswith("DO NOT PUBLISH"), banner_text
    assert "reference/metrics.json is missing" in banner_text
    assert banner_box is not None and banner_box["y"] + banner_box["height"] < 1000
    assert banner_colour == "rgb(183, 28, 28)"
    assert masks and all(items and items[0] == "no change" for items in masks), masks
    assert any(len(items) > 1 for items in masks)  # some mask shows a change, named by class
    assert widths[0] <= 1280 and wide == [], (widths, wide)

"""Screenshots of the quality report for the README: its first screen and its diff section.

Builds two versions of the synthetic demo (0.1.0 as ``configs/demo.yaml`` ships it, 0.2.0 with a
narrower AOI and a 1% no-change epsilon), trains the reference model on both, renders 0.2.0's
report with 0.1.0 as the previous version, opens it in headless Chromium at 1,280 px and saves
two PNGs (reduced to a 256-colour palette: commit-sized)::

    .venv/bin/python tools/report_screenshots.py            # docs/report-first-screen.png,
                                                            # docs/report-diff.png
    .venv/bin/python tools/report_screenshots.py --work /tmp/shots --out docs
    .venv/bin/python tools/report_screenshots.py --work /tmp/shots --reuse   # re-shoot only

About three minutes on two cores (two builds, two reference trainings). Needs Chromium
(``/usr/bin/chromium``, Debian package ``chromium``) and playwright (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
WIDTH = 1280
FIRST_SCREEN = 900  # px of the first screen
DIFF_HEIGHT = 1100  # px of the diff section shown (its top: counts and reference metrics)


def _build(cat: object, out: Path, **overrides: object) -> Path:
    from geodelta.pipelines.api import build, load_config

    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        {
            "catalog": {"url": str(cat.catalog_path)},  # type: ignore[attr-defined]
            "output": {"dir": str(out)},
            "runner": {"name": "inprocess"},
            **overrides,
        },
    )
    return build(cfg, mode="overwrite", progress=False).release_dir


def _palette_png(png: bytes) -> bytes:
    """``png`` with a 256-colour palette (text and flat colours survive; a third of the bytes)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def shoot(report: Path, out_dir: Path) -> list[Path]:
    """Save the first screen and the diff section of ``report`` as PNGs under ``out_dir``."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    first, diff = out_dir / "report-first-screen.png", out_dir / "report-diff.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": FIRST_SCREEN})
            page.goto(report.as_uri(), wait_until="load")
            width = page.evaluate("document.scrollingElement.scrollWidth")
            if width > WIDTH:
                raise SystemExit(f"the report overflows: {width} px in a {WIDTH} px window")
            first.write_bytes(_palette_png(page.screenshot()))
            top = page.evaluate(
                "document.getElementById('diff').getBoundingClientRect().top + window.scrollY"
            )
            clip = {"x": 0, "y": top - 8, "width": WIDTH, "height": DIFF_HEIGHT}
            diff.write_bytes(_palette_png(page.screenshot(full_page=True, clip=clip)))
        finally:
            browser.close()
    return [first, diff]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="folder for the builds (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep the releases already built in --work (re-render and re-shoot only)",
    )
    args = ap.parse_args(argv)
    if args.reuse and args.work is None:
        ap.error("--reuse needs --work")

    from geodelta.pipelines.api import train_reference, write_demo_catalog
    from geodelta.pipelines.report.render import write_report

    with tempfile.TemporaryDirectory(prefix="geodelta-shots-") as tmp:
        work = args.work or Path(tmp)
        if args.reuse:
            report = write_report(work / "v2", previous=work / "v1")
            for path in shoot(report, args.out):
                print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
            return 0
        cat = write_demo_catalog(work / "catalog", seed=0)
        x0, y0, x1, y1 = cat.aoi_bbox
        v1 = _build(cat, work / "v1")
        train_reference(v1, report=False)
        v2 = _build(
            cat,
            work / "v2",
            version="0.2.0",
            aoi={"bbox": [x0, y0, x0 + 0.8 * (x1 - x0), y1]},
            annotation={"no_change_epsilon": 0.01},
        )
        train_reference(v2, report=False)
        report = write_report(v2, previous=v1)
        for path in shoot(report, args.out):
            print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

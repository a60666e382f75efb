"""GX Data Docs made readable offline: no script, no CDN stylesheet, no remote image.

Great Expectations writes Data Docs pages that load jQuery, Bootstrap, Vega and Font Awesome
from CDNs; a release is read offline (and its report must not call out), so
:func:`make_offline` rewrites every page of the site with :func:`offline_html` and deletes the
static assets no page refers to any more. GX's index page builds its tables with a script (it is
blank without one): :func:`make_offline` replaces it with :func:`index_html`, a page rendered
from the template ``datadocs_index.html`` of the report package that lists every validation
result (suite, run, status, counts, from ``<validation>/results/*.json`` when present) and every
expectation suite page of the site.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["index_html", "make_offline", "offline_html"]

_SCRIPT_RE = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_REMOTE_TAG_RE = re.compile(
    r"<(?:link|img|iframe|source|embed)\b[^>]*\b(?:href|src)\s*=\s*[\"']?(?:https?:)?//[^>]*>",
    re.IGNORECASE,
)
_REMOTE_ATTR_RE = re.compile(
    r"\s(?:href|src|srcset|action)\s*=\s*([\"'])(?:https?:)?//.*?\1", re.IGNORECASE | re.DOTALL
)
# GX links the favicon one folder too shallow from validation pages; a broken link, so it goes
_ICON_RE = re.compile(
    r"<link\b[^>]*\brel\s*=\s*[\"'](?:shortcut\s+)?icon[\"'][^>]*>", re.IGNORECASE
)
_REMOTE_CSS_RE = re.compile(r"url\(\s*([\"']?)(?:https?:)?//[^)]*\)", re.IGNORECASE)
_LOCAL_REF_RE = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"'#?:]+)", re.IGNORECASE)


@cache
def templates_environment() -> Any:
    """The Jinja2 environment of the report package's templates (``templates/``; the
    ``datadocs_*.html`` ones are this module's): autoescaped, an undefined name an error.
    :mod:`geodelta.pipelines.report.render` adds its filters to one of these."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("geodelta.pipelines.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def offline_html(html: str) -> str:
    """Strip every network reference from a GX Data Docs page.

    Scripts go (they only drive CDN libraries: jQuery, Bootstrap, Vega), as do stylesheet
    links, images and other embeds loaded from ``http(s)://`` or ``//``; remote CSS
    ``url(...)`` become ``none``; links to remote pages lose their ``href``; the favicon link
    goes (GX points validation pages at a path that does not exist). A small inline
    stylesheet keeps the tables readable.
    """
    out = _SCRIPT_RE.sub("", html)
    out = _REMOTE_TAG_RE.sub("", out)
    out = _ICON_RE.sub("", out)
    out = _REMOTE_CSS_RE.sub("none", out)
    out = _REMOTE_ATTR_RE.sub("", out)
    if "</head>" in out:
        style = templates_environment().get_template("datadocs_offline_style.html").render()
        out = out.replace("</head>", style.strip() + "</head>", 1)
    return out


def _results(site: Path) -> list[dict[str, Any]]:
    """GX validation results next to the site (``<site>/../results/*.json``), sorted by suite."""
    out = []
    for path in sorted((site.parent / "results").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("suite_name"), str):
            out.append(data)
    return sorted(out, key=lambda d: str(d["suite_name"]))


def index_html(site_dir: str | Path) -> str:
    """The index page of an offline Data Docs site (replaces GX's, which is blank offline).

    Lists each validation result page under ``validations/`` (with the suite's status and
    expectation counts from the GX results beside the site, when there are) and each page
    under ``expectations/``; links are relative to the site.
    """
    site = Path(site_dir)
    results = {str(r["suite_name"]): r for r in _results(site)}
    names = sorted(
        {p.parent.name for p in (site / "validations").glob("*/*")} | set(results)
        if (site / "validations").is_dir()
        else set(results)
    )
    rows = []
    for name in names:
        pages = sorted((site / "validations" / name).rglob("*.html"))
        r = results.get(name, {})
        stats = r.get("statistics", {}) if isinstance(r.get("statistics"), dict) else {}
        run = r.get("meta", {}).get("run_id", {}) if isinstance(r.get("meta"), dict) else {}
        rows.append(
            {
                "suite": name,
                "run": run.get("run_name", "–") if isinstance(run, dict) else "–",
                "success": r.get("success") if r else None,
                "evaluated": stats.get("evaluated_expectations", "–"),
                "successful": stats.get("successful_expectations", "–"),
                "unsuccessful": stats.get("unsuccessful_expectations", "–"),
                "page": pages[0].relative_to(site).as_posix() if pages else None,
            }
        )
    suites = [
        (p.stem, p.relative_to(site).as_posix())
        for p in sorted((site / "expectations").glob("*.html"))
    ]
    versions = sorted(
        {str(r.get("meta", {}).get("great_expectations_version", "")) for r in results.values()}
        - {""}
    )
    env = templates_environment()
    runs = sorted({str(row["run"]) for row in rows} - {"–"})
    return env.get_template("datadocs_index.html").render(
        title=", ".join(runs) or "validation",  # the run is <name>-<version>; not the folder
        gx_version=", ".join(versions) or "?",
        results=rows,
        suites=suites,
    )


def make_offline(site_dir: str | Path) -> list[Path]:
    """Rewrite every HTML page of a Data Docs site with :func:`offline_html`, in place, and
    write its ``index.html`` with :func:`index_html` (whether GX built one or not).

    Static assets that no page refers to any more (GX ships fonts and animations, ~4 MB) are
    deleted.

    Returns:
        The HTML pages written, sorted (``index.html`` among them).
    """
    site = Path(site_dir)
    pages = sorted({*site.rglob("*.html"), site / "index.html"})
    used: set[Path] = set()
    for page in pages:
        if page == site / "index.html":
            text = index_html(site)
        else:
            text = offline_html(page.read_text(encoding="utf-8"))
        page.write_text(text, encoding="utf-8")
        for ref in _LOCAL_REF_RE.findall(text):
            used.add((page.parent / ref).resolve())
    static = site / "static"
    if static.is_dir():
        for path in sorted(static.rglob("*"), reverse=True):
            if path.is_file() and path.resolve() not in used:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if static.is_dir() and not any(static.iterdir()):
            static.rmdir()
    return pages

"""GX Data Docs made readable offline: no script, no CDN stylesheet, no remote image.

Great Expectations writes Data Docs pages that load jQuery, Bootstrap, Vega and Font Awesome
from CDNs; a release is read offline (and its report must not call out), so
:func:`make_offline` rewrites every page of the site with :func:`offline_html` and deletes the
static assets no page refers to any more.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["make_offline", "offline_html"]

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
_OFFLINE_STYLE = (
    "<style>/* geodelta: offline copy, CDN styles and scripts removed */"
    "body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top;text-align:left}"
    ".collapse{display:block}.d-none{display:none}.text-danger{color:#b00}"
    # status icons came from Font Awesome (a CDN): draw them with plain characters
    ".fas{font-style:normal}.fa-check-circle::before{content:'\\2714';color:#1a7f37}"
    ".fa-times::before{content:'\\2718';color:#b00}"
    ".fa-exclamation-triangle::before{content:'!';color:#b60}</style>"
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
        out = out.replace("</head>", _OFFLINE_STYLE + "</head>", 1)
    return out


def make_offline(site_dir: str | Path) -> list[Path]:
    """Rewrite every HTML page of a Data Docs site with :func:`offline_html`, in place.

    Static assets that no page refers to any more (GX ships fonts and animations, ~4 MB) are
    deleted.

    Returns:
        The HTML pages rewritten.
    """
    site = Path(site_dir)
    pages = sorted(site.rglob("*.html"))
    used: set[Path] = set()
    for page in pages:
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

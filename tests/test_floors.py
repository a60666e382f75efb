"""The house's floors, read from the source by an AST walk (DESIGN.md, "Layout").

ground (geodelta/) -> schemas -> sources | annotators (never each other) -> pipelines.stages ->
engines | release (release never imports engines) -> report | training (never each other) ->
api -> cli / dags. Every import counts, also those inside functions and under TYPE_CHECKING:
a function-level import that climbs a floor is still a dependency. No import circles; only
engines import apache_beam or distributed; the CLI and the DAG go through the public API.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Source folder -> import name of the package it installs as (pyproject.toml).
ROOTS: dict[str, str] = {
    "geodelta": "geodelta",
    "schemas": "geodelta.schemas",
    "sources": "geodelta.sources",
    "annotators": "geodelta.annotators",
    "pipelines": "geodelta.pipelines",
    "dags": "dags",
}

#: (prefix, floor, room). The longest matching prefix decides; rooms of one floor may import
#: each other only where ALLOWED_SIDEWAYS says so.
FLOORS: tuple[tuple[str, int, str], ...] = (
    ("geodelta", 0, "ground"),
    ("geodelta.schemas", 1, "schemas"),
    ("geodelta.sources", 2, "sources"),
    ("geodelta.annotators", 2, "annotators"),
    ("geodelta.pipelines", 3, "pipelines"),  # the (empty) package itself
    ("geodelta.pipelines.stages", 3, "stages"),
    ("geodelta.pipelines.engines", 4, "engines"),
    ("geodelta.pipelines.release", 4, "release"),
    ("geodelta.pipelines.report", 5, "report"),
    ("geodelta.pipelines.training", 5, "training"),
    ("geodelta.pipelines.api", 6, "api"),
    ("geodelta.pipelines.progress", 6, "api"),
    ("geodelta.pipelines.build", 6, "api"),
    ("geodelta.pipelines.cli", 7, "cli"),
    ("geodelta.pipelines.cli_common", 7, "cli"),
    ("geodelta.pipelines.cli_train", 7, "cli"),
    ("geodelta.pipelines.cli_snapshot", 7, "cli"),
    ("geodelta.pipelines.cli_export", 7, "cli"),
    ("dags", 7, "dags"),
)

#: Sideways edges between rooms of one floor that the design allows.
ALLOWED_SIDEWAYS: set[tuple[str, str]] = {
    ("engines", "release"),  # engines commit outcomes to the release's staging area
}

#: The one upward edge: the researcher loader (ground floor, the package's face) decodes members
#: through the one member table, a pure-data module that itself imports nothing of geodelta.
ALLOWED_UPWARD: set[tuple[str, str]] = {("geodelta.data", "geodelta.schemas.members")}

#: What the CLI and the DAG may import of geodelta: the public API and the ground floor's face.
FRONT_DOOR = ("geodelta.pipelines.api", "geodelta.errors", "geodelta")

#: Third-party packages only the engines may import.
ENGINE_ONLY = ("apache_beam", "distributed")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in a module, at any depth."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod when there is one
                sub = f"{module}.{alias.name}"
                yield (sub if sub in MODULES else module), node.lineno


def _internal(target: str) -> str | None:
    """The geodelta module an import names (a symbol import maps to its module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _floor(module: str) -> tuple[int, str]:
    best = max(
        (p for p in FLOORS if module == p[0] or module.startswith(p[0] + ".")),
        key=lambda p: len(p[0]),
    )
    return best[1], best[2]


EDGES: dict[str, set[tuple[str, int]]] = {
    name: {
        (t, line)
        for raw, line in _imports(name, path)
        if (t := _internal(raw)) is not None and t != name
    }
    for name, path in MODULES.items()
}


def test_every_module_has_a_floor() -> None:
    assert len(MODULES) > 60  # the walk found the package (a wrong root would find nothing)
    for name in MODULES:
        _floor(name)  # max() of an empty sequence raises: a module outside every floor


def _violation(src: str, dst: str) -> str | None:
    if (src, dst) in ALLOWED_UPWARD:
        return None
    # a package's __init__ importing its own submodules, or a module its own package
    if dst.startswith(src + ".") or (
        src.startswith(dst + ".") and MODULES[dst].name == "__init__.py"
    ):
        return None
    (f_src, r_src), (f_dst, r_dst) = _floor(src), _floor(dst)
    if f_dst > f_src:
        return f"climbs from floor {f_src} ({r_src}) to floor {f_dst} ({r_dst})"
    if f_dst == f_src and r_src != r_dst and (r_src, r_dst) not in ALLOWED_SIDEWAYS:
        return f"crosses sideways from {r_src} to {r_dst} (same floor {f_src})"
    return None


def test_imports_respect_the_floors() -> None:
    bad = [
        f"{MODULES[src].relative_to(REPO)}:{line}: {src} -> {dst}: {why}"
        for src, targets in EDGES.items()
        for dst, line in sorted(targets)
        if (why := _violation(src, dst)) is not None
    ]
    assert not bad, "\n".join(bad)


def test_the_ground_floor_imports_nothing_above_it() -> None:
    for name in MODULES:
        if _floor(name)[1] != "ground":
            continue
        above = {
            dst
            for dst, _ in EDGES[name]
            if _floor(dst)[1] != "ground" and (name, dst) not in ALLOWED_UPWARD
        }
        assert not above, f"{name} imports {sorted(above)}"
    # the one allowed upward edge leads to a module that imports nothing of geodelta
    for _, dst in ALLOWED_UPWARD:
        assert not EDGES[dst] - {(d, ln) for d, ln in EDGES[dst] if d == "geodelta"}, dst


def test_cli_and_dags_use_only_the_public_api() -> None:
    for name in MODULES:
        if _floor(name)[1] not in ("cli", "dags"):
            continue
        room = _floor(name)[1]  # the CLI's modules share its app and helpers
        other = {
            dst
            for dst, _ in EDGES[name]
            if dst not in FRONT_DOOR and not (dst in MODULES and _floor(dst)[1] == room)
        }
        assert not other, f"{name} imports {sorted(other)}; call geodelta.pipelines.api"


@pytest.mark.parametrize("package", ENGINE_ONLY)
def test_only_engines_import_beam_and_dask(package: str) -> None:
    users = sorted(
        f"{name}:{line}"
        for name, path in MODULES.items()
        for raw, line in _imports(name, path)
        if (raw == package or raw.startswith(package + ".")) and _floor(name)[1] != "engines"
    )
    assert not users, f"only pipelines/engines may import {package}: {users}"


def test_no_import_circles() -> None:
    """Tarjan's strongly connected components over every import, function-level ones included."""
    graph = {
        src: sorted({d for d, _ in targets if not src.startswith(d + ".")})
        for src, targets in EDGES.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_walk_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a climb hidden in a function body is found (it could be missed)."""
    src = "def f():\n    from geodelta.pipelines.api import build\n    return build\n"
    path = tmp_path / "m.py"
    path.write_text(src)
    found = {t for raw, _ in _imports("geodelta.schemas.fake", path) if (t := _internal(raw))}
    assert found == {"geodelta.pipelines.api"}
    assert _violation("geodelta.schemas.records", "geodelta.pipelines.api") is not None
    assert _violation("geodelta.sources.catalog", "geodelta.annotators.claims") is not None
    assert _violation("geodelta.pipelines.release.verify", "geodelta.pipelines.engines.beam")
    assert (
        _violation("geodelta.pipelines.engines.beam", "geodelta.pipelines.release.layout") is None
    )


#: STYLE.md: a module that grows past this is split by what it holds.
MAX_LINES = 800


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (STYLE.md: at most {MAX_LINES} lines): {long}"

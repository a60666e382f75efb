"""One error family: every exception class geodelta defines derives from GeodeltaError."""

from __future__ import annotations

import ast
import importlib

import pytest

from geodelta.errors import ConfigError, GeodeltaError, ReleaseError
from tests.test_floors import MODULES


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) for every class whose bases name an exception, found by an AST walk."""
    found = []
    for module, path in sorted(MODULES.items()):
        if module.startswith("dags"):
            continue  # needs Airflow; the DAG defines no exception classes
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(b).split(".")[-1].endswith(("Error", "Exception", "Failed", "Warning"))
                for b in node.bases
            ):
                found.append((module, node.name))
    return found


CLASSES = _exception_classes()


def test_the_walk_finds_the_error_classes() -> None:
    names = {name for _, name in CLASSES}
    assert {"PlanError", "CatalogError", "StagingError", "LoaderError"} <= names


@pytest.mark.parametrize(("module", "name"), CLASSES, ids=[f"{m}.{n}" for m, n in CLASSES])
def test_every_error_is_a_geodelta_error(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    if issubclass(cls, Warning):
        return  # warnings are not errors (geodelta.data.UnknownMemberWarning)
    assert issubclass(cls, GeodeltaError), f"{module}.{name} bases {cls.__mro__[1:]}"


def test_family_members_keep_the_builtin_they_replaced() -> None:
    from geodelta.pipelines.stages.plan import PlanError
    from geodelta.schemas import ConfigError as SchemasConfigError
    from geodelta.schemas.classes import UnknownClassError
    from geodelta.sources.catalog import CatalogError

    assert issubclass(PlanError, ValueError) and issubclass(PlanError, ConfigError)
    assert issubclass(UnknownClassError, KeyError)
    assert issubclass(CatalogError, RuntimeError)
    assert SchemasConfigError is ConfigError  # catching the schemas name catches the family
    err = ReleaseError("x is missing", path="x")
    assert err.path == "x" and str(err) == "x is missing"

"""The wheel holds every package and data folder (issue 17: setuptools warned at install that
``prompts/`` was an importable folder absent from ``packages``, and would have dropped it)."""

from __future__ import annotations

import tomllib

from tests.factories import REPO
from tests.test_floors import ROOTS

#: Files that make a folder worth shipping (code, prompts, templates, schemas).
SHIPPED = (".py", ".txt", ".html", ".css", ".json")
#: Folders that are not part of the package (caches, bytecode).
IGNORED = ("__pycache__",)


def test_every_code_or_data_folder_is_a_listed_package() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found: set[str] = set()
    for folder, package in ROOTS.items():
        if not package.startswith("geodelta"):  # dags/: Airflow reads it from its dags folder
            continue
        for path in (REPO / folder).rglob("*"):
            if not path.is_file() or path.suffix not in SHIPPED:
                continue
            parts = path.relative_to(REPO / folder).parent.parts
            if any(p in IGNORED or p.startswith(".") for p in parts):
                continue
            found.add(".".join([package, *parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "listed packages without files"


def test_data_files_are_package_data() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = setup["package-data"]
    assert "*.txt" in data["geodelta.annotators.llm.prompts"]
    assert {"*.html", "*.css"} <= set(data["geodelta.pipelines.report.templates"])

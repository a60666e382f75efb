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


def _extras() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_reading_a_release_installs_no_pipeline() -> None:
    """`pip install geodelta[data]` gets the core + data extra: no Beam, GDAL, GX or Dask
    (issue 17: a light extra for researchers)."""
    core, extras = _extras()
    light = _names(core) | _names(extras["data"])
    assert not light & {"apache-beam", "rasterio", "great-expectations", "dask", "scipy"}
    assert {"apache-beam", "rasterio", "pyarrow"} <= _names(extras["build"])
    assert "geodelta[build," in extras["all"][0]


def test_every_lazy_module_names_the_extra_that_installs_it() -> None:
    from importlib.metadata import packages_distributions

    from geodelta._optional import EXTRA_OF

    _, extras = _extras()
    dists = packages_distributions()
    for module, extra in EXTRA_OF.items():
        provided_by = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert provided_by, f"{module} is not installed here"
        listed = " ".join(extras[extra]).lower()  # "dask[distributed]" installs distributed
        assert any(dist in listed for dist in provided_by), (module, extra, provided_by)


def test_a_missing_extra_is_one_line_naming_it(demo_catalog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A build on an install without the `build` extra (rasterio made unimportable here)."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'rasterio':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from geodelta.pipelines.cli import app\n"
        "sys.argv = ['geodelta', 'build', sys.argv[1], '--no-progress']\n"
        "app()\n"
    )
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["catalog"]["url"] = str(demo_catalog.catalog_path)
    raw["aoi"] = {"bbox": list(demo_catalog.aoi_bbox)}
    raw["output"] = {"dir": str(tmp_path / "release")}  # empty: nothing refuses before the build
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-c", blocker, str(config)], capture_output=True, text=True, timeout=300
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, lines
    assert "rasterio is not installed" in lines[0] and "pip install 'geodelta[build]'" in lines[0]

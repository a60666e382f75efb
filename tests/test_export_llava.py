"""``geodelta export RELEASE --format llava --out DIR`` (issue 18): LLaVA / TEOChat conversations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from geodelta.annotators.qa.grounding import parse_boxes
from geodelta.errors import ReleaseError
from geodelta.pipelines import api
from geodelta.pipelines.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(demo_release: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "llava"
    result = api.export(demo_release.release_dir, out)
    manifest = api.read_manifest(demo_release.release_dir)
    assert result.conversations == {s: n for s, n in sorted(manifest.splits.items())}
    return out


def test_every_image_exists_and_every_box_lies_inside_it(exported: Path) -> None:
    files = sorted(p.name for p in exported.glob("*.json"))
    assert files and "README.md" in {p.name for p in exported.iterdir()}
    n_boxes = n_conv = 0
    for name in files:
        convs = json.loads((exported / name).read_text())  # plain json
        for conv in convs:
            n_conv += 1
            assert conv["split"] == name.removesuffix(".json")
            sizes = []
            for rel in conv["image"]:
                with Image.open(exported / rel) as img:
                    sizes.append(img.size)
            assert len(sizes) == 2 and sizes[0] == sizes[1] == tuple(conv["image_size"])
            turns = conv["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            assert turns[0]["value"].startswith("<image>\n<image>\n")
            assert sum(t["value"].count("<image>") for t in turns) == 2
            width, height = sizes[0]
            for t in turns:
                for x0, y0, x1, y1 in parse_boxes(t["value"]):
                    assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 1000, (conv["id"], t)
                    # in pixels, inside the image
                    assert x1 * width / 1000 <= width and y1 * height / 1000 <= height
                    n_boxes += 1
            regions = np.asarray(Image.open(exported / "images" / conv["id"] / "regions.png"))
            ids = {int(i) for i in np.unique(regions) if i}
            assert ids == {r["id"] for r in conv["regions"]}
            for g in conv["grounding"]:
                assert turns[g["turn"]]["from"] == "gpt" and set(g["region_ids"]) <= ids
    assert n_conv > 0 and n_boxes > 0


def test_segmentation_turns_are_the_boxes_of_their_mask(exported: Path) -> None:
    seen = 0
    for path in exported.glob("*.json"):
        for conv in json.loads(path.read_text()):
            boxes = {r["id"]: tuple(r["box"]) for r in conv["regions"]}
            for g in conv["grounding"]:
                if g["type"] == "segment_change":
                    answer = conv["conversations"][g["turn"]]["value"]
                    assert parse_boxes(answer) == [boxes[i] for i in g["region_ids"]]
                    seen += 1
    assert seen > 0


def test_the_same_release_exports_the_same_bytes(
    exported: Path, demo_release: Any, tmp_path: Path
) -> None:
    again = api.export(demo_release.release_dir, tmp_path / "again")
    for name in [*again.conversations, "README"]:
        suffix = ".md" if name == "README" else ".json"
        assert (tmp_path / "again" / f"{name}{suffix}").read_bytes() == (
            exported / f"{name}{suffix}"
        ).read_bytes()


def test_a_non_empty_folder_is_refused_unless_overwrite(demo_release: Any, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        ReleaseError, match="is not empty; choose an empty folder or pass --overwrite"
    ):
        api.export(demo_release.release_dir, out)
    assert (out / "notes.txt").read_text() == "mine"
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(demo_release.release_dir), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(
        app, ["export", str(demo_release.release_dir), "--out", str(out), "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    assert not (out / "notes.txt").exists() and (out / "README.md").is_file()
    res = runner.invoke(
        app,
        ["export", str(demo_release.release_dir), "--out", str(tmp_path / "x"), "--format", "coco"],
    )
    assert res.exit_code == 2 and "unknown export format 'coco'" in res.output


def test_build_exports_as_an_option(demo_catalog: Any, demo_release: Any, tmp_path: Path) -> None:
    """`geodelta build CONFIG --export-llava DIR`: the same files as `geodelta export`; a
    non-empty DIR is refused before any work."""
    import yaml

    from tests.factories import REPO

    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["catalog"]["url"] = str(demo_catalog.catalog_path)
    raw["aoi"] = {"bbox": list(demo_catalog.aoi_bbox)}
    raw["output"] = {"dir": str(tmp_path / "release")}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    full = tmp_path / "full"
    (full / "x").parent.mkdir()
    (full / "x").write_text("taken")
    res = CliRunner().invoke(
        app, ["build", str(config), "--no-progress", "--export-llava", str(full)]
    )
    assert res.exit_code == 2 and "is not empty" in res.output
    assert not (tmp_path / "release").exists()  # refused before any work
    out = tmp_path / "llava"
    res = CliRunner().invoke(
        app, ["build", str(config), "--no-progress", "--export-llava", str(out)]
    )
    assert res.exit_code == 0, res.output
    direct = tmp_path / "direct"
    api.export(tmp_path / "release", direct)
    got = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    want = {p.relative_to(direct): p.read_bytes() for p in direct.rglob("*") if p.is_file()}
    assert got == want and got

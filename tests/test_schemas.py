"""Records: round trips, JSON Schema export, secrets, and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from geodelta.schemas import (
    AssetRef,
    QAItem,
    QuarantineRecord,
    ScenePair,
    SceneRef,
    TileJob,
    change_ratio_bin,
    json_schemas,
    sample_key,
    strip_secret,
)
from geodelta.schemas.classes import (
    BINARY_CHANGE,
    N_CLASSES,
    decode_transition,
    transition_code,
    transition_table,
)

T0 = datetime(2020, 6, 14, 10, 30, tzinfo=UTC)
T1 = datetime(2021, 6, 19, 10, 30, tzinfo=UTC)


def _job() -> TileJob:
    return TileJob(
        cell_id="31N-1280-0569-3902",
        crs="EPSG:32631",
        transform=(10.0, 0.0, 728320.0, 0.0, -10.0, 4995840.0),
        shape=(128, 128),
        bbox_lonlat=(5.90, 45.06, 5.92, 45.08),
        t0_window=(T0, T0),
        t1_window=(T1, T1),
    )


def _scene(item_id: str, when: datetime) -> SceneRef:
    return SceneRef(
        collection="s2",
        item_id=item_id,
        datetime=when,
        crs="EPSG:32631",
        bbox_lonlat=(5.8, 45.0, 6.1, 45.1),
        assets={
            "B04": AssetRef(href="https://x.blob.core.windows.net/a/B04.tif?sv=2021&sig=SECRET")
        },
    )


def test_pair_round_trips_through_json() -> None:
    pair = ScenePair(
        job=_job(),
        before=_scene("a", T0),
        after=_scene("b", T1),
        before_clear=0.97,
        after_clear=None,
    )
    again = ScenePair.model_validate_json(pair.model_dump_json())
    assert again == pair
    assert again.key == "31N-1280-0569-3902_20200614_20210619"
    assert again.gap_days == pytest.approx(370.0)
    assert again.after_clear is None  # unknown stays unknown


def test_job_bounds_from_transform() -> None:
    assert _job().bounds() == (728320.0, 4994560.0, 729600.0, 4995840.0)
    assert _job().resolution == 10.0


def test_records_are_frozen_and_reject_unknown_fields() -> None:
    job = _job()
    with pytest.raises(ValidationError):
        job.cell_id = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        QuarantineRecord(key="k", cell_id="c", stage="pair", reason="r", detail="d", oops=1)  # type: ignore[call-arg]


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        _scene("a", datetime(2020, 1, 1))


def test_signed_hrefs_lose_their_query_string() -> None:
    scene = _scene("a", T0)
    assert scene.assets["B04"].href == "https://x.blob.core.windows.net/a/B04.tif"
    assert "SECRET" not in scene.model_dump_json()
    assert strip_secret("/data/a.tif") == "/data/a.tif"
    assert strip_secret("C:/data/a.tif") == "C:/data/a.tif"


def test_sample_key_has_no_dots() -> None:
    assert sample_key("31N-1280-0001-0002", T0, T1) == "31N-1280-0001-0002_20200614_20210619"


@pytest.mark.parametrize(
    ("fraction", "label"),
    [
        (0.0, "none"),
        (0.004, "under 1%"),
        (0.01, "under 1%"),
        (0.03, "1-5%"),
        (0.1, "5-10%"),
        (0.2, "10-25%"),
        (0.9, "over 25%"),
    ],
)
def test_change_ratio_bins(fraction: float, label: str) -> None:
    assert change_ratio_bin(fraction) == label


def test_qa_item_types_are_closed() -> None:
    with pytest.raises(ValidationError):
        QAItem(type="colour", question="q", answer="a", evidence={})  # type: ignore[arg-type]


def test_transition_codes_round_trip_and_fit_a_byte() -> None:
    codes = {row["code"] for row in transition_table()}
    assert len(codes) == N_CLASSES * (N_CLASSES - 1) + 1
    assert max(codes) == BINARY_CHANGE and max(codes - {BINARY_CHANGE}) <= N_CLASSES * N_CLASSES
    assert decode_transition(transition_code("tree_cover", "built_up")) == (
        "tree_cover",
        "built_up",
    )
    assert transition_code("tree_cover", "shrubland") == 2
    assert decode_transition(0) is None
    with pytest.raises(ValueError, match="different known classes"):
        transition_code("water", "water")


def test_json_schema_export_names_every_record() -> None:
    schemas = json_schemas()
    for name in (
        "TileJob",
        "SceneRef",
        "ScenePair",
        "ChangeFacts",
        "Annotation",
        "SampleMeta",
        "QuarantineRecord",
        "ReleaseManifest",
    ):
        assert schemas[name]["type"] == "object", name
    props = schemas["SampleMeta"]["properties"]
    assert "description" in props["t0"] and "coreg" in props
    json.dumps(schemas)  # serialisable as it is


def test_importing_schemas_imports_nothing_heavy() -> None:
    code = (
        "import sys, geodelta.schemas, geodelta.sources, geodelta.annotators, geodelta.pipelines;"
        "heavy = [m for m in ('torch', 'apache_beam', 'great_expectations', 'openai', 'rasterio') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def test_nothing_generic_lands_in_site_packages() -> None:
    import geodelta.pipelines
    import geodelta.schemas

    code = "import importlib.util as u; print([n for n in ('schemas','sources','annotators','pipelines') if u.find_spec(n)])"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert res.stdout.strip() == "[]"
    assert geodelta.schemas.__name__ == "geodelta.schemas"
    assert geodelta.pipelines.__name__ == "geodelta.pipelines"

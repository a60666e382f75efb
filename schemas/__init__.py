"""Records that cross stage boundaries, the build config, and the class tables.

Importing this package imports pydantic and nothing heavier (no torch, Beam, GX or openai).
"""

from __future__ import annotations

from typing import Any

from geodelta.schemas.config import (
    BuildConfig,
    ConfigError,
    InvalidConfigError,
    load_config,
    parse_config,
)
from geodelta.schemas.members import SAMPLE_MEMBERS
from geodelta.schemas.records import (
    CHANGE_RATIO_BINS,
    SCHEMA_VERSION,
    Annotation,
    AssetRef,
    ChangeComponent,
    ChangeFacts,
    CoregResult,
    FileInfo,
    QAItem,
    QuarantineRecord,
    ReleaseManifest,
    SampleMeta,
    ScenePair,
    SceneRef,
    ShardInfo,
    TileJob,
    TransitionStat,
    change_ratio_bin,
    sample_key,
    strip_secret,
)

RECORDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        TileJob,
        SceneRef,
        ScenePair,
        ChangeFacts,
        Annotation,
        SampleMeta,
        QuarantineRecord,
        ReleaseManifest,
        BuildConfig,
    )
}


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every record that crosses a stage boundary, and of the config."""
    return {name: cls.model_json_schema() for name, cls in RECORDS.items()}  # type: ignore[attr-defined]


__all__ = [
    "CHANGE_RATIO_BINS",
    "RECORDS",
    "SAMPLE_MEMBERS",
    "SCHEMA_VERSION",
    "Annotation",
    "AssetRef",
    "BuildConfig",
    "ChangeComponent",
    "ChangeFacts",
    "ConfigError",
    "CoregResult",
    "FileInfo",
    "InvalidConfigError",
    "QAItem",
    "QuarantineRecord",
    "ReleaseManifest",
    "SampleMeta",
    "ScenePair",
    "SceneRef",
    "ShardInfo",
    "TileJob",
    "TransitionStat",
    "change_ratio_bin",
    "json_schemas",
    "load_config",
    "parse_config",
    "sample_key",
    "strip_secret",
]

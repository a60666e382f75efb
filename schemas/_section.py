"""The base class of every build-config section (frozen, unknown keys rejected).

Its own module so that :mod:`geodelta.schemas.config` and the section modules it re-exports
(:mod:`geodelta.schemas.annotation_config`) share it without an import circle. Pure pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of config sections: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

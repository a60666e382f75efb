"""The annotators' errors, members of the :mod:`geodelta.errors` family.

:class:`AnnotatorConfigError` is a setting that cannot work (a :class:`~geodelta.errors.ConfigError`,
hence a ``ValueError``); :class:`AnnotationFailed` is one sample an annotator could not annotate
(a :class:`~geodelta.errors.StageError`: the annotate stage quarantines it with its reason).
"""

from __future__ import annotations

from geodelta.errors import ConfigError, StageError
from geodelta.secrets import redact as _redact

__all__ = [
    "REASON_BUDGET",
    "REASON_CLAIMS",
    "REASON_MALFORMED",
    "REASON_REJECTED",
    "REASON_UNAVAILABLE",
    "AnnotationFailed",
    "AnnotatorConfigError",
    "redact",
]

#: Quarantine reasons of the annotate stage.
REASON_BUDGET = "budget"
REASON_CLAIMS = "claims_failed"
REASON_MALFORMED = "malformed_output"
REASON_UNAVAILABLE = "llm_unavailable"
REASON_REJECTED = "llm_request_rejected"


class AnnotatorConfigError(ConfigError):
    """An annotator setting out of range; names the config key to change.

    Attributes:
        key: the key under ``annotation.`` to change.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"annotation.{key}: {message}")


class AnnotationFailed(StageError):
    """A sample the LLM annotator could not annotate; the annotate stage quarantines it.

    Attributes:
        key: sample key.
        reason: short machine-readable reason (``budget``, ``claims_failed``, ...).
        detail: what happened and what to change.
    """

    def __init__(self, key: str, reason: str, detail: str) -> None:
        self.key = key
        self.reason = reason
        self.detail = _redact(detail)  # it becomes a quarantine detail and a log line
        super().__init__(f"{key}: {reason}: {self.detail}")


def redact(text: str) -> str:
    """Remove every registered secret (the API key, by value) and anything shaped like an API
    key (``sk-...``, ``Authorization`` / ``api-key`` headers, JWTs) from a message."""
    return _redact(text)

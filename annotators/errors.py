"""The annotators' errors, members of the :mod:`geodelta.errors` family.

:class:`AnnotatorConfigError` is a setting that cannot work (a :class:`~geodelta.errors.ConfigError`,
hence a ``ValueError``); :class:`AnnotationFailed` is one sample an annotator could not annotate
(a :class:`~geodelta.errors.StageError`: the annotate stage quarantines it with its reason).
"""

from __future__ import annotations

import re

from geodelta.errors import ConfigError, StageError

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
        self.detail = detail
        super().__init__(f"{key}: {reason}: {detail}")


_SECRET_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,})")


def redact(text: str) -> str:
    """Mask anything that looks like an API key in an error message."""
    return _SECRET_RE.sub("sk-***", text)

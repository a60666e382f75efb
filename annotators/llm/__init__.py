"""The LLM annotator: captions and QA from an OpenAI-compatible endpoint, every claim checked.

Modules: :mod:`~.annotator` (:class:`LLMAnnotator`: client, concurrency, retries, spend),
:mod:`~.prompt` (the versioned prompt files in ``prompts/``, the facts summary, the reply
schema), :mod:`~.checks` (parse and check one reply), :mod:`~.batch` (the Batch API path),
:mod:`~.cache` (response cache and budget ledger), :mod:`~.ratelimit` (rate limits and
back-off), :mod:`~.usage` (tokens and cost per request, sample and worker).

The public names below are imported on first use: importing this package imports neither
openai nor the annotator's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geodelta.annotators.errors import AnnotationFailed, AnnotatorConfigError
    from geodelta.annotators.llm.annotator import LLMAnnotator
    from geodelta.annotators.llm.checks import check_output
    from geodelta.annotators.llm.prompt import (
        LLMOutput,
        LLMSeriesOutput,
        PromptTemplate,
        facts_summary,
        response_schema,
        series_summary,
    )
    from geodelta.annotators.llm.usage import LLMStats

__all__ = [
    "AnnotationFailed",
    "AnnotatorConfigError",
    "LLMAnnotator",
    "LLMOutput",
    "LLMSeriesOutput",
    "LLMStats",
    "PromptTemplate",
    "check_output",
    "facts_summary",
    "response_schema",
    "series_summary",
]

_HOME = {
    "AnnotationFailed": "geodelta.annotators.errors",
    "AnnotatorConfigError": "geodelta.annotators.errors",
    "LLMAnnotator": "geodelta.annotators.llm.annotator",
    "LLMOutput": "geodelta.annotators.llm.prompt",
    "LLMSeriesOutput": "geodelta.annotators.llm.prompt",
    "LLMStats": "geodelta.annotators.llm.usage",
    "PromptTemplate": "geodelta.annotators.llm.prompt",
    "check_output": "geodelta.annotators.llm.checks",
    "facts_summary": "geodelta.annotators.llm.prompt",
    "response_schema": "geodelta.annotators.llm.prompt",
    "series_summary": "geodelta.annotators.llm.prompt",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""Annotators: captions and QA from change facts, every claim checkable against the facts.

:mod:`~geodelta.annotators.template` (the offline template annotator), :mod:`~.qa` (one module
per QA type and the registry), :mod:`~.claims` (the claim checker), :mod:`~.llm` (the LLM
annotator), :mod:`~.models` (the change model and the pair encoder), :mod:`~.vocabulary` (the
shared words), :mod:`~.errors` (the annotators' errors).
"""

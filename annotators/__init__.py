"""Annotators: captions and QA from change facts (template; LLM and change models later)."""

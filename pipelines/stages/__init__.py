"""The per-cell stages, plain functions over records: plan, search/pair, load, coregister,
label (one source per label kind, in :mod:`.labels`), fuse, annotate, finalize (metadata,
validation, encoding), and the worker chaining them. No Beam or Dask here: the engines
(:mod:`geodelta.pipelines.engines`) run these functions."""

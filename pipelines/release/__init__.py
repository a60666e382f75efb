"""The release room: everything between a filled staging area and a published release.

One file per role: ``layout`` (every file name of a release, and the one reader of it),
``staging`` (where workers put finished samples), ``shards`` (the WebDataset tars), ``card``
(``README.md``), ``collection`` (``collection.json``), ``assemble`` (:func:`write_release`:
the orchestration and the parquet tables), ``gx_tables`` / ``gx`` / ``datadocs`` (the Great
Expectations contract, its checkpoint run and its offline Data Docs), ``verify`` (checksums and
members against the manifest), ``gate`` (the metric rules), ``publish`` (publish and promote),
``upload`` (releases at fsspec URLs) and ``qa_balance`` (answer balance of the QA).

The members of a sample are described once, in :mod:`geodelta.schemas.members`; released
samples are decoded once, in :mod:`geodelta.data`. This room never imports the engines.
"""

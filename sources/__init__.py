"""Where scenes come from: catalogs, signing, collection profiles, raster reads, land cover.

* :mod:`~geodelta.sources.catalog`: :func:`~geodelta.sources.catalog.open_catalog`, the one
  entry that picks a catalog from the config; :mod:`~geodelta.sources.scenes` (the
  ``SceneCatalog`` protocol, ``CatalogError``, STAC item -> ``SceneRef``),
  :mod:`~geodelta.sources.static` (a local catalog.json), :mod:`~geodelta.sources.stac_api`
  (any STAC API through pystac-client);
* :mod:`~geodelta.sources.signing` (Planetary Computer SAS tokens, secret redaction),
  :mod:`~geodelta.sources.profiles` (per-collection defaults),
  :mod:`~geodelta.sources.raster` (windowed COG reads onto a cell's grid),
  :mod:`~geodelta.sources.landcover` (land-cover products -> geodelta classes);
* :mod:`~geodelta.sources.demo`: the synthetic demo catalog with known truth.
"""

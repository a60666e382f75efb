"""Engines: chain the stages over many cells (in-process loop, Beam, Beam on Dask).

The only modules of geodelta that import ``apache_beam`` or ``distributed``. Start at
:func:`geodelta.pipelines.engines.run.run_cells`, which picks the engine the config's
``runner`` names and imports it lazily; every engine commits its outcomes through
:mod:`geodelta.pipelines.engines.commit`.
"""

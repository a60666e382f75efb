"""Label sources, one module per ``labels.kind``.

:mod:`.base` defines the :class:`~.base.LabelSource` protocol, :mod:`.landcover` and
:mod:`.change_mask` implement it, :mod:`.registry` maps each kind to its source. The mask and
facts maths they share lives in :mod:`geodelta.pipelines.stages.label`.
"""

"""The analysis layer: what a user does with a store once written (or while it is written).

``accessor`` (the ``ds.mfg`` xarray accessor: masses, moments, seed statistics) and ``report``
(PNG figures, ``mfg-ensemble report``). Reads stores through :mod:`mfg_ensemble.ensemble.store`
and :mod:`mfg_ensemble.schema`; never imports :mod:`mfg_ensemble.game`.
"""

"""The ensemble layer: many solves of one game, run on Dask, kept in one Zarr store.

``sweep`` (sweep files and axes: :class:`Sweep`), ``store`` (the :class:`SweepStore`),
``runner`` (:func:`run_sweep`: one Dask task per member), ``monitor`` (progress and
:class:`SweepMonitor`) and ``cluster`` (the Client, LocalCluster and thread settings).
Imports the game, kernels, schema and errors; nothing below imports from here.
"""

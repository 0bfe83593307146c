"""The NumPy references of the kernels: the test oracle and the fallback without the extension.

One module per kernel, with the stem of its Rust twin in ``rust_core/src``: ``weno``, ``hjb``, ``banded``,
``fv``, ``particles``, ``kde``, ``rng`` and ``substeps``. Each module's docstring is the one
place where that kernel's maths is written; the Rust module points here. The functions take
checked arguments (the facade :mod:`mfg_ensemble.kernels` checks them) and have the same
names as the Rust bindings.
"""

"""mfg_ensemble: Dask-parallel ensembles of mean field game solves, with Rust kernels.

The flat public face of the package. The layers, each importing only from those below it:

* :mod:`mfg_ensemble.errors`, :mod:`mfg_ensemble.schema` — the exceptions; the one
  description of a result and a store;
* :mod:`mfg_ensemble.kernels` — the numerical kernels (Rust, or their NumPy references in
  :mod:`mfg_ensemble.kernels.reference`);
* :mod:`mfg_ensemble.game` — one mean field game (:class:`Problem`, in 2-D :class:`Problem2D`)
  and its :func:`solve`;
* :mod:`mfg_ensemble.ensemble` — sweeps, the Zarr store, the Dask runner;
* :mod:`mfg_ensemble.analysis` — the ``ds.mfg`` accessor and the report figures;
* :mod:`mfg_ensemble.cli` — the ``mfg-ensemble`` command.
"""

from __future__ import annotations

import importlib.metadata
from types import ModuleType
from typing import Any

from mfg_ensemble import _legacy, kernels
from mfg_ensemble.analysis import accessor as _accessor  # noqa: F401  (registers the ds.mfg accessor)
from mfg_ensemble.ensemble.monitor import SweepMonitor
from mfg_ensemble.ensemble.runner import run_sweep
from mfg_ensemble.ensemble.store import SweepStore, open_sweep
from mfg_ensemble.ensemble.sweep import Sweep
from mfg_ensemble.errors import ConfigError, Diverged, NoWorkers, StoreMismatch
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.game.problem2d import Problem2D
from mfg_ensemble.game.solver import SolverOptions, solve
from mfg_ensemble.kernels import backend_info

try:
    __version__ = importlib.metadata.version("mfg_ensemble")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
    __version__ = "unknown"

_legacy.install()

__all__ = [
    "ConfigError",
    "Diverged",
    "NoWorkers",
    "Problem",
    "Problem2D",
    "SolverOptions",
    "StoreMismatch",
    "Sweep",
    "SweepMonitor",
    "SweepStore",
    "__version__",
    "backend_info",
    "kernels",
    "make_report",
    "open_sweep",
    "run_sweep",
    "solve",
]


def make_report(*args: Any, **kwargs: Any) -> list:
    """PNG figures of a sweep store: :func:`mfg_ensemble.analysis.report.make_report` (imported
    here on first use, so that ``import mfg_ensemble`` does not load matplotlib)."""
    from mfg_ensemble.analysis.report import make_report as _make_report

    return _make_report(*args, **kwargs)


def __getattr__(name: str) -> ModuleType:
    """``mfg_ensemble.<old module>`` of 0.1 (e.g. ``mfg_ensemble.report``), see :mod:`._legacy`."""
    if name in _legacy.MOVED:
        return _legacy.module(name)
    raise AttributeError(f"module 'mfg_ensemble' has no attribute {name!r}")

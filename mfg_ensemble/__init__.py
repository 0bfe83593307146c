"""mfg_ensemble: Dask-parallel ensembles of mean field game solves, with Rust kernels."""

from mfg_ensemble import kernels
from mfg_ensemble import accessor as _accessor  # noqa: F401  (registers the ds.mfg accessor)
from mfg_ensemble.kernels import backend_info
from mfg_ensemble.problem import Problem
from mfg_ensemble.runner import SweepMonitor, run_sweep
from mfg_ensemble.solver import SolverOptions, solve
from mfg_ensemble.store import open_sweep
from mfg_ensemble.sweep import ConfigError, Sweep

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "Problem",
    "SolverOptions",
    "Sweep",
    "SweepMonitor",
    "__version__",
    "backend_info",
    "kernels",
    "open_sweep",
    "run_sweep",
    "solve",
]

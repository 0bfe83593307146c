"""mfg_ensemble: Dask-parallel ensembles of mean field game solves, with Rust kernels."""

from mfg_ensemble import kernels
from mfg_ensemble.kernels import backend_info
from mfg_ensemble.problem import Problem
from mfg_ensemble.solver import SolverOptions, solve

__version__ = "0.1.0"
__all__ = ["Problem", "SolverOptions", "__version__", "backend_info", "kernels", "solve"]

"""mfg_ensemble: Dask-parallel ensembles of mean field game solves, with Rust kernels."""

from mfg_ensemble import kernels
from mfg_ensemble.kernels import backend_info

__version__ = "0.1.0"
__all__ = ["__version__", "backend_info", "kernels"]

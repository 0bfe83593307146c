"""Which implementation runs the kernels: the Rust extension or the NumPy reference.

``backend=None`` means: ``$MFG_ENSEMBLE_BACKEND`` if set ("rust" or "numpy"), else Rust when the
extension imports, else the NumPy reference with one ``RuntimeWarning`` per process. An explicit
``backend="rust"`` or ``"numpy"`` argument always wins over the environment.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any, Literal

Backend = Literal["rust", "numpy"]
BACKENDS: tuple[Backend, ...] = ("rust", "numpy")
ENV_VAR = "MFG_ENSEMBLE_BACKEND"

_rust_core: ModuleType | None
try:
    from mfg_ensemble import _rust_core
except ImportError as exc:  # pragma: no cover - exercised only on machines without the build
    _rust_core = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None

_warned = False


def _fallback() -> Backend:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "mfg_ensemble's Rust extension is not available "
            f"({_IMPORT_ERROR}); using the NumPy reference kernels, which are much slower. "
            "Reinstall the package (pip install .) to build it.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "numpy"


def resolve(backend: str | None) -> Backend:
    """The backend a kernel call with ``backend=backend`` uses."""
    if backend is None:
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if not env:
            return "rust" if _rust_core is not None else _fallback()
        if env not in BACKENDS:
            raise ValueError(f"${ENV_VAR} must be 'rust' or 'numpy', got {env!r}")
        backend = env
    if backend == "numpy":
        return "numpy"
    if backend == "rust":
        if _rust_core is None:
            raise ImportError(f"backend='rust' requested but the extension is missing: {_IMPORT_ERROR}")
        return "rust"
    raise ValueError(f"backend must be None, 'rust' or 'numpy', got {backend!r}")


def rust() -> ModuleType:
    """The extension module (call only after ``resolve`` returned "rust")."""
    assert _rust_core is not None
    return _rust_core


def size_rayon(threads: int) -> int | None:
    """Build Rayon's global pool with ``threads`` threads, unless ``RAYON_NUM_THREADS`` is set
    (the user's choice wins) or a kernel built the pool already (it is sized once per process).
    Returns the pool size in effect (None without the extension)."""
    if _rust_core is None:
        return None
    if not os.environ.get("RAYON_NUM_THREADS"):
        _rust_core.init_rayon(threads)
    return int(_rust_core.rayon_threads())


def backend_info() -> dict[str, Any]:
    """Which backend ``backend=None`` selects, the extension's version and build profile
    ("release", or "debug" from ``maturin develop``) and Rayon's pool size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        active = resolve(None)
    return {
        "backend": active,
        "extension_available": _rust_core is not None,
        "extension_version": getattr(_rust_core, "__version__", None),
        "build_profile": getattr(_rust_core, "build_profile", None),  # "release" or "debug"
        "rayon_threads": _rust_core.rayon_threads() if _rust_core is not None else None,
        "env": os.environ.get(ENV_VAR),
        "import_error": _IMPORT_ERROR,
    }

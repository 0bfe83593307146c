"""Backend selection, the fallback warning, backend_info and GIL release."""

from __future__ import annotations

import threading
import time

import numpy as np

import mfg_ensemble
from mfg_ensemble.kernels import backend_info, kde

from conftest import run_json

BLOCK_EXTENSION = "import sys; sys.modules['mfg_ensemble._rust_core'] = None\n"


def test_backend_info_reports_rust_and_rayon_threads() -> None:
    info = backend_info()
    assert info["backend"] == "rust"
    assert info["extension_available"] is True
    assert info["extension_version"] == mfg_ensemble.__version__  # one version: rust_core/Cargo.toml
    assert isinstance(info["rayon_threads"], int) and info["rayon_threads"] >= 1


def test_rayon_threads_follow_the_environment() -> None:
    code = "import json; from mfg_ensemble.kernels import backend_info; print(json.dumps(backend_info()))"
    assert run_json(code, {"RAYON_NUM_THREADS": "1"})["rayon_threads"] == 1
    assert run_json(code, {"RAYON_NUM_THREADS": "2"})["rayon_threads"] == 2


def test_environment_forces_the_numpy_reference() -> None:
    code = """
        import json, warnings
        warnings.simplefilter("error")
        from mfg_ensemble.kernels import backend_info, weno5_derivatives
        weno5_derivatives([0.0, 1, 2, 3, 4, 5, 6], 1.0)
        print(json.dumps(backend_info()))
    """
    info = run_json(code, {"MFG_ENSEMBLE_BACKEND": "numpy"})
    assert info["backend"] == "numpy" and info["extension_available"] is True


def test_missing_extension_falls_back_with_one_warning() -> None:
    code = (
        BLOCK_EXTENSION
        + """
import json, warnings
import numpy as np
from mfg_ensemble.kernels import backend_info, weno5_derivatives, kde
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    weno5_derivatives(np.arange(8.0), 1.0)
    kde([0.1, 0.2], [0.0, 0.5, 1.0], 0.3)
    weno5_derivatives(np.arange(8.0), 1.0)
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
print(json.dumps({"messages": messages, "info": backend_info()}))
"""
    )
    out = run_json(code)
    assert len(out["messages"]) == 1
    assert "Rust extension is not available" in out["messages"][0]
    assert out["info"]["backend"] == "numpy" and out["info"]["extension_available"] is False


def test_explicit_rust_without_the_extension_is_an_import_error() -> None:
    code = (
        BLOCK_EXTENSION
        + """
import json
from mfg_ensemble.kernels import weno5_derivatives
try:
    weno5_derivatives([0.0] * 8, 1.0, backend="rust")
except ImportError as exc:
    print(json.dumps(str(exc)))
"""
    )
    assert "extension is missing" in run_json(code)


def test_the_gil_is_released_while_rust_computes() -> None:
    """A long kernel in one thread must not stop the others (a Dask worker's event loop)."""
    x = np.random.default_rng(0).uniform(-1, 1, 400_000)
    grid = np.linspace(-1, 1, 2000)
    worker = threading.Thread(target=kde, args=(x, grid, 0.2), kwargs={"backend": "rust"})
    ticks = 0
    started = time.perf_counter()
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    # the kernel runs for a good fraction of a second; a held GIL would allow ~1 tick
    assert elapsed > 0.05, "kernel too short to tell"
    assert ticks >= 10

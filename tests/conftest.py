"""Shared fixtures: the two backends, and running code in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

BACKENDS = ("rust", "numpy")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a new interpreter (spawned, never forked) and return its stdout."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        # -P: no script directory on sys.path, so the installed package is imported
        [sys.executable, "-P", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_json(code: str, env: dict[str, str] | None = None) -> object:
    """Run ``code`` (which prints one JSON document last) in a new interpreter."""
    return json.loads(run_python(code, env).strip().splitlines()[-1])


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| relative to max |b| (the scale of the result)."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)

"""The wheel tox builds installs into a fresh venv with no Rust toolchain and runs a sweep.

tox builds one wheel (maturin, release profile, PyO3's abi3 for CPython ≥ 3.11: one wheel for
every later Python) and passes its path to the tests as ``TOX_PACKAGE``. This test installs it
with ``--no-index --no-deps`` into a new venv whose PATH has no cargo, borrowing the
dependencies of the running interpreter through a ``.pth`` file added after the install (no
network), and runs a
small version of the quick-start with the ``mfg-ensemble`` command it installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def built_wheel() -> Path:
    """The wheel tox built; outside tox, ``pytest.skip`` (``maturin build`` makes one)."""
    packages = [Path(p) for p in os.environ.get("TOX_PACKAGE", "").split(os.pathsep) if p.endswith(".whl")]
    if not packages:
        pytest.skip("no TOX_PACKAGE: run through tox, which builds the wheel this test installs")
    return packages[0]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_cargo(tmp_path) -> None:
    wheel = built_wheel()
    assert "-cp311-abi3-" in wheel.name, wheel.name  # one wheel for CPython 3.11 and later
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    env = {"PATH": path, "HOME": str(tmp_path), "MPLBACKEND": "Agg", "LANG": "C.UTF-8"}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(wheel)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    # then the dependencies (after the install, so pip sees no mfg_ensemble already there)
    (Path(site) / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    info = subprocess.run(
        [str(python), "-c", "import json, mfg_ensemble as m; print(json.dumps([m.__file__, m.backend_info()]))"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    where, backend = json.loads(info.stdout)
    assert where.startswith(str(venv)), where  # the wheel's copy, not the one under test
    assert backend["backend"] == "rust" and backend["build_profile"] == "release", backend

    quick = (CONFIGS / "quickstart.toml").read_text()
    quick = quick.replace("seed = { count = 4 }", "seed = { count = 1 }").replace("nx = 101", "nx = 41")
    (tmp_path / "quickstart.toml").write_text(quick)
    run = subprocess.run(
        [str(venv / "bin" / "mfg-ensemble"), "run", "quickstart.toml", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    from mfg_ensemble import open_sweep

    status = open_sweep(tmp_path / "quickstart.zarr").status.values
    assert status.shape == (3, 2, 1) and (status == 1).all(), run.stdout

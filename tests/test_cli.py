"""The ``mfg-ensemble`` command end to end, each call a fresh interpreter in a scratch folder.

A config error (or a store that cannot be used) is exit status 2 with the message on stderr,
no traceback, and nothing created; a run prints its summary and the dashboard link, resumes
an existing store, and refuses a store of another sweep unless told to overwrite it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, set_paused, solves_known

TINY = """
name = "tiny"

[problem]
nx = 31
nt = 11
sigma = 0.2
m0 = { kind = "gaussian", mean = 0.3, std = 0.1 }
terminal = { kind = "quadratic", strength = 1.0, center = 0.7 }

[solver]
fp = "fv"
max_iter = 20
seed = 3

[sweep]
sigma = [0.1, 0.2]
seed = { count = 2 }
"""
BAD = TINY.replace("sigma = [0.1, 0.2]", "sigma = [0.1, -0.2]")


def assert_clean_error(proc: subprocess.CompletedProcess[str], *patterns: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    for pattern in patterns:
        assert re.search(pattern, proc.stderr), (pattern, proc.stderr)


def counts_row(stdout: str) -> tuple[int, int, int, int]:
    """(members, done, failed, pending) from the summary table (whose columns are members,
    done, not converged, failed, pending)."""
    assert re.search(r"members\W+done\W+not converged\W+failed\W+pending", stdout), stdout
    rows = [r for r in stdout.splitlines() if re.fullmatch(r"\W*\d+\W+\d+\W+\d+\W+\d+\W+\d+\W*", r)]
    assert rows, stdout
    members, done, _, failed, pending = map(int, re.findall(r"\d+", rows[-1]))
    return members, done, failed, pending


# -- without a cluster ---------------------------------------------------------------------


def test_validate_prints_member_count_and_axes(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = cli("validate", "tiny.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sweep tiny: 4 member(s)" in proc.stdout
    assert "axis sigma (2): sigma = 0.1, 0.2" in proc.stdout
    assert "axis seed (2): seed = 0, 1" in proc.stdout
    assert "[3] sigma=0.2, seed=1" in proc.stdout
    assert "ok: 4 members" in proc.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.toml"]  # validating creates nothing


def test_validate_malformed_file_exits_2_with_the_message(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD)
    proc = cli("validate", "bad.toml", cwd=tmp_path)
    assert_clean_error(
        proc,
        r"error: invalid sweep bad\.toml:",
        r"problem\.sigma \(member 2: sigma=-0\.2, seed=0\): Input should be greater than or equal to 0 \(got -0\.2\)",
    )
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "text,line",
    [
        # rich markup must not eat "[b]" or "[/]", nor wrap a long line
        ('"[b]old[/]" = 1\n' + TINY, "[b]old[/]: unknown field; allowed: name, description, problem, solver, sweep"),
        (
            TINY.replace("max_iter = 20", "damping = 1.5"),
            "solver.damping: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            TINY.replace("nt = 11", "nt = 11\nsigmaa = 0.1"),
            "problem.sigmaa: unknown field; allowed: lo, hi, T, nx, nt, sigma, potential, coupling, m0, terminal, bc",
        ),
    ],
    ids=["markup", "interval", "long line"],
)
def test_error_message_is_printed_verbatim(tmp_path: Path, text: str, line: str) -> None:
    (tmp_path / "bad.toml").write_text(text)
    proc = cli("validate", "bad.toml", cwd=tmp_path)
    assert_clean_error(proc)
    assert f"  {line}\n" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["missing.toml", "broken.toml"])
def test_validate_unreadable_file_exits_2(tmp_path: Path, name: str) -> None:
    (tmp_path / "broken.toml").write_text("[problem\nnx = 31\n")
    proc = cli("validate", name, cwd=tmp_path)
    assert_clean_error(proc, rf"invalid sweep {name}:", r"cannot read the file|not valid TOML")


def test_run_malformed_file_exits_2_and_creates_no_store(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(BAD)
    proc = cli("run", "tiny.toml", "--workers", "1", cwd=tmp_path)
    assert_clean_error(proc, r"invalid sweep tiny\.toml:", r"problem\.sigma \(member 2")
    proc = cli("run", "tiny.toml", "--store", "out.zarr", "--workers", "1", cwd=tmp_path)
    assert_clean_error(proc, r"invalid sweep tiny\.toml:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_run_refuses_a_store_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "results.zarr").write_text("not a store")
    proc = cli("run", "tiny.toml", "--store", "results.zarr", "--workers", "1", cwd=tmp_path)
    assert_clean_error(proc, r"store: results\.zarr exists and is a file, not a Zarr store")
    assert (tmp_path / "results.zarr").read_text() == "not a store"


def test_run_refuses_a_store_in_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = cli("run", "tiny.toml", "--store", "no/such/dir/out.zarr", "--workers", "1", cwd=tmp_path)
    assert_clean_error(proc, r"store: the folder .*no/such/dir does not exist")


def test_info_of_something_that_is_not_a_store_exits_2(tmp_path: Path) -> None:
    assert_clean_error(cli("info", "nowhere.zarr", cwd=tmp_path), r"nowhere\.zarr is not an mfg_ensemble store")
    (tmp_path / "empty.zarr").mkdir()
    assert_clean_error(cli("info", "empty.zarr", cwd=tmp_path), r"empty\.zarr is not an mfg_ensemble store")


# -- with a LocalCluster -------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The tiny sweep run once on one worker: (its folder, the process)."""
    folder = tmp_path_factory.mktemp("cli_run")
    (folder / "tiny.toml").write_text(TINY)
    return folder, cli("run", "tiny.toml", "--workers", "1", cwd=folder)


@pytest.mark.slow
def test_run_solves_every_member_and_prints_a_summary(first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, proc = first_run
    assert proc.returncode == 0, proc.stderr
    assert "sweep tiny: 4 members → tiny.zarr" in proc.stdout
    assert re.search(r"dashboard: http://\S+/status", proc.stdout), proc.stdout
    assert counts_row(proc.stdout) == (4, 4, 0, 0)
    assert "open it with:  xarray.open_zarr('tiny.zarr')" in proc.stdout
    assert (folder / "tiny.zarr").is_dir()
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_run_again_resumes_with_nothing_to_do(first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = first_run
    proc = cli("run", "tiny.toml", "--workers", "1", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run: all 4 members are already done or failed in tiny.zarr" in proc.stdout
    assert "dashboard:" not in proc.stdout  # no cluster was started
    assert counts_row(proc.stdout) == (4, 4, 0, 0)


@pytest.mark.slow
def test_info_prints_the_counts(first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = first_run
    proc = cli("info", "tiny.zarr", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "mfg_ensemble sweep tiny" in proc.stdout
    assert "axes: ['sigma', 'seed']  from tiny.toml" in proc.stdout
    assert counts_row(proc.stdout) == (4, 4, 0, 0)
    for col in ("members", "done", "failed", "pending"):
        assert col in proc.stdout


@pytest.mark.slow
def test_run_of_another_sweep_on_the_store_needs_overwrite(
    first_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    folder, _ = first_run
    shutil.copytree(folder / "tiny.zarr", tmp_path / "tiny.zarr")
    (tmp_path / "other.toml").write_text(TINY.replace("sigma = [0.1, 0.2]", "sigma = [0.1, 0.3]"))

    refused = cli("run", "other.toml", "--store", "tiny.zarr", "--workers", "1", cwd=tmp_path)
    assert_clean_error(refused, r"tiny\.zarr holds a different sweep .*--overwrite")
    assert "dashboard:" not in refused.stdout
    assert "mfg_ensemble sweep tiny" in cli("info", "tiny.zarr", cwd=tmp_path).stdout  # untouched

    replaced = cli("run", "other.toml", "--store", "tiny.zarr", "--workers", "1", "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert counts_row(replaced.stdout) == (4, 4, 0, 0)
    info = cli("info", "tiny.zarr", cwd=tmp_path)
    assert "from other.toml" in info.stdout


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130, the short message, a consistent store; the same command then
    resumes and the store equals an uninterrupted run's. No race: the run goes to the test's
    cluster, whose workers are paused, and the SIGINT is sent once the scheduler holds every
    member's task, so no member can finish first."""
    import os
    import signal
    import time

    import numpy as np
    import xarray as xr
    from distributed import Client

    from mfg_ensemble.ensemble.cluster import local_cluster
    from mfg_ensemble.ensemble.store import SweepStore
    from mfg_ensemble.schema import PENDING

    (tmp_path / "tiny.toml").write_text(TINY)
    # memory_limit=0: no memory monitor, which would un-pause the workers
    with local_cluster(2, dashboard_address=":0", memory_limit=0) as cluster, Client(cluster) as client:
        address = cluster.scheduler_address
        client.run(set_paused, paused=True)
        args = [sys.executable, "-m", "mfg_ensemble.cli", "run", "tiny.toml", "--scheduler", address]
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while client.run_on_scheduler(solves_known) < 4:  # the event: all 4 members submitted
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (out, err)
        assert "interrupted: 0 member(s) finished in this run are in tiny.zarr" in err, err
        assert "Traceback" not in err + out, err
        assert (SweepStore(tmp_path / "tiny.zarr").status() == PENDING).all()

        client.run(set_paused, paused=False)
        again = cli("run", "tiny.toml", "--scheduler", address, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert counts_row(again.stdout) == (4, 4, 0, 0)
        whole = cli("run", "tiny.toml", "--scheduler", address, "--store", "whole.zarr", cwd=tmp_path)
        assert whole.returncode == 0, whole.stderr
    a, b = xr.open_zarr(tmp_path / "tiny.zarr"), xr.open_zarr(tmp_path / "whole.zarr")
    for name in ("m", "u", "status", "iterations"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_run_with_an_unreachable_scheduler_exits_2(tmp_path: Path) -> None:
    import os

    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run(
        [sys.executable, "-m", "mfg_ensemble.cli", "run", "tiny.toml", "--scheduler", "tcp://127.0.0.1:9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    assert_clean_error(proc, r"cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:9")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_store_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, code: int) -> None:
    """A full disk, a read-only or forbidden folder while creating the store: one line, exit 2,
    nothing left under the store's name (the store is built beside it and renamed)."""
    from click.testing import CliRunner

    from mfg_ensemble.cli import main
    from mfg_ensemble.ensemble import store as store_module

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "tiny.zarr"))

    monkeypatch.setattr(store_module, "_consolidate", refuse)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    result = CliRunner().invoke(main, ["run", "tiny.toml", "--workers", "1"])
    assert result.exit_code == 2, result.output
    assert f"cannot write the store tiny.zarr: {os.strerror(code)}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "tiny.zarr").exists()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["sweep", "dashboard:"], ids=["while the cluster starts", "mid-run"])
def test_a_terminal_ctrl_c_gives_the_short_message_only(tmp_path: Path, when: str) -> None:
    """A terminal sends SIGINT to the whole process group, the default LocalCluster's workers
    included: they never see it, and only the short "interrupted" line is printed (no worker
    tracebacks). The signal is sent on the line the CLI prints before it creates the store and
    starts the cluster, or on the dashboard line (the run under way); 24 members of ~0.5 s
    each are far from done either way."""
    import signal

    sweep = (
        TINY.replace("nx = 31", "nx = 151")
        .replace("nt = 11", "nt = 41")
        .replace("sigma = [0.1, 0.2]", "sigma = [0.1, 0.12, 0.14, 0.16, 0.18, 0.2]")
        .replace("seed = { count = 2 }", "seed = { count = 4 }")
    )
    (tmp_path / "tiny.toml").write_text(sweep)
    args = [sys.executable, "-m", "mfg_ensemble.cli", "run", "tiny.toml", "--workers", "2"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the event: the cluster is up and the members are submitted
        if line.startswith(when):
            break
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "run the same command to resume" in err


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_live_bar_keeps_the_count_at_any_width(width: int) -> None:
    from rich.console import Console

    from mfg_ensemble.cli import progress_bar

    out = Console(width=width, record=True, force_terminal=True, color_system=None)
    bar = progress_bar(out)
    counts = "done 3  failed 0  ETA 0:07  queued 18  running: #3 it 7 r 2.1e-03  #4 it 2 r 4.0e-01"
    bar.add_task("solving", total=24, completed=3, counts=counts)
    out.print(bar.get_renderable())
    assert "3/24" in out.export_text()


def test_a_batch_log_gets_plain_progress_lines(tmp_path: Path) -> None:
    """Output not on a terminal (a cluster job's log): plain progress lines, the last one at
    the end, besides the final table."""
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = cli("run", "tiny.toml", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "progress: 4/4 members, done 4, failed 0, running 0, queued 0" in proc.stdout, proc.stdout


def test_warm_start_names_an_axis(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    result = cli("run", "tiny.toml", "--warm-start", "coupling", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tiny.toml" in result.stderr and "--warm-start" in result.stderr and "(sigma, seed)" in result.stderr
    assert not (tmp_path / "tiny.zarr").exists()


ROOM = """
[problem]
nx = 11
ny = 9
nt = 4
T = 0.3
sigma = 0.3
coupling = { kind = "linear", strength = 0.5 }
potential = { kind = "constant", value = 1.0 }
m0 = { kind = "gaussian", mean = [0.3, 0.5], std = 0.15 }
obstacles = [{ kind = "rectangle", x = [0.5, 0.6], y = [0.3, 0.7] }]
exits = [{ side = "right", lo = 0.3, hi = 0.7 }]

[solver]
fp = "fv"
tol = 1e-6
max_iter = 40

[sweep]
sigma = [0.2, 0.3]
"""


def test_a_room_with_an_exit_on_a_periodic_side_exits_2(tmp_path: Path) -> None:
    (tmp_path / "room.toml").write_text(ROOM.replace("sigma = 0.3\n", 'sigma = 0.3\nbc = "periodic"\n'))
    proc = cli("run", "room.toml", "--workers", "1", cwd=tmp_path)
    assert_clean_error(proc, r"room\.toml", r"problem", r"exits\[0\] is on the right side, which is periodic")
    assert not (tmp_path / "room.zarr").exists()


@pytest.mark.slow
def test_a_room_sweep_runs_and_reports_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "room.toml").write_text(ROOM)
    proc = cli("run", "room.toml", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert counts_row(proc.stdout) == (2, 2, 0, 0)
    proc = cli("report", "room.zarr", "--out", "figs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {"snapshots.png", "density_animation.gif", "evacuation.png"} <= {
        p.name for p in (tmp_path / "figs").iterdir()
    }

"""The store never deletes what it does not own, is whole or absent, and has one writer.

``--overwrite`` removes only an mfg_ensemble store; names that would reach out of the working
folder or collide with the store's own names are refused; the store path is absolute before
any task is built; creation is atomic; a change of the axes' order is a different sweep; two
runs on one store: the second is refused, naming the first.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mfg_ensemble import ConfigError, StoreMismatch, Sweep, run_sweep
from mfg_ensemble.ensemble.cluster import local_cluster
from mfg_ensemble.ensemble.store import SweepStore
from mfg_ensemble.errors import StoreLocked
from mfg_ensemble.schema import DONE

from conftest import PROBLEM, SOLVER, cli

TINY = {**SOLVER, "fp": "fv", "max_iter": 3}


def tiny(axes: dict | None = None, **kw) -> Sweep:
    return Sweep({**PROBLEM, "nx": 21, "nt": 6}, TINY, axes or {"sigma": [0.2, 0.3]}, **kw)


def made_store(path: Path) -> SweepStore:
    """A store created (not run) for the tiny sweep."""
    sweep = tiny()
    return SweepStore.for_sweep(sweep, path).prepare(sweep)


# -- overwrite deletes only a store ------------------------------------------------------------
def test_overwrite_refuses_the_working_folder_and_its_parents(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "paper.tex").write_text("precious")
    monkeypatch.chdir(work)
    for target in (".", "..", str(tmp_path)):
        with pytest.raises(StoreMismatch, match="working folder or one of its parents"):
            SweepStore.for_sweep(tiny(), target).prepare(tiny(), overwrite=True)
    assert (work / "paper.tex").read_text() == "precious"


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    victim = tmp_path / "victim.zarr"
    victim.mkdir()
    (victim / "paper.tex").write_text("precious")
    with pytest.raises(StoreMismatch, match="not an mfg_ensemble store"):
        SweepStore.for_sweep(tiny(), victim).prepare(tiny(), overwrite=True)
    assert (victim / "paper.tex").exists()


def test_overwrite_refuses_a_store_that_holds_foreign_files(tmp_path: Path) -> None:
    store = made_store(tmp_path / "s.zarr")
    (store.path / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatch, match=r"entries that are not the store's \(notes.txt\)"):
        SweepStore.for_sweep(tiny(), store.path).prepare(tiny({"sigma": [0.5]}), overwrite=True)
    assert (store.path / "notes.txt").exists()


def test_overwrite_replaces_a_store_of_another_sweep(tmp_path: Path) -> None:
    store = made_store(tmp_path / "s.zarr")
    other = tiny({"sigma": [0.5, 0.6, 0.7]})
    SweepStore.for_sweep(other, store.path).prepare(other, overwrite=True)
    assert SweepStore(store.path).status().shape == (3,)


@pytest.mark.parametrize(
    "name,message",
    [
        ("../x", "not a valid name"),
        ("a/b", "not a valid name"),
        ("x" * 65, "not a valid name"),
        ("..", "not a valid name"),
        (".hidden", "not a valid name"),
    ],
)
def test_bad_sweep_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"name: .*{message}"):
        tiny(name=name)


@pytest.mark.parametrize("axis", ["u", "m", "status", "members", "t_index", "x", "iteration", "wall_time"])
def test_axis_names_of_the_store_itself_are_refused(axis: str) -> None:
    with pytest.raises(ConfigError, match=rf"sweep\.{axis}: '{axis}' is a name of the store itself"):
        tiny({axis: {"field": "sigma", "values": [0.1, 0.2]}})


def test_a_bad_name_in_a_file_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('name = "../escape"\n[sweep]\nsigma = [0.1, 0.2]\n')
    proc = cli("run", "s.toml", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "name: '../escape' is not a valid name" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.parent.iterdir() if "escape" in p.name) == []


# -- the store is absolute, whole or absent ----------------------------------------------------
def test_the_store_path_is_absolute_before_tasks_are_built(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SweepStore.for_sweep(tiny(), "rel.zarr").path == tmp_path / "rel.zarr"
    assert SweepStore.for_sweep(tiny(name="named")).path == tmp_path / "named.zarr"


def test_a_failed_creation_leaves_nothing_under_the_final_name(tmp_path: Path, monkeypatch) -> None:
    import mfg_ensemble.ensemble.store as store_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_consolidate", full_disk)
    with pytest.raises(OSError, match="No space left"):
        SweepStore.for_sweep(tiny(), tmp_path / "s.zarr").prepare(tiny())
    assert list(tmp_path.iterdir()) == []  # neither the store nor its hidden building folder


def test_creation_fills_an_empty_folder_the_user_made(tmp_path: Path) -> None:
    (tmp_path / "s.zarr").mkdir()
    made_store(tmp_path / "s.zarr")
    assert (SweepStore(tmp_path / "s.zarr").status() == 0).all()


# -- the axes' order is part of the sweep -------------------------------------------------------
def test_swapping_two_axes_is_a_different_sweep(tmp_path: Path) -> None:
    a = tiny({"sigma": [0.2, 0.3], "seed": {"count": 2}})
    b = tiny({"seed": {"count": 2}, "sigma": [0.2, 0.3]})
    assert a.fingerprint != b.fingerprint and a.fingerprint_0_1 == b.fingerprint_0_1
    SweepStore.for_sweep(a, tmp_path / "s.zarr").prepare(a)
    with pytest.raises(StoreMismatch, match="different sweep"):
        SweepStore.for_sweep(b, tmp_path / "s.zarr").prepare(b)


def test_a_0_1_store_resumes_only_with_its_own_axis_order(tmp_path: Path) -> None:
    """0.1 wrote the order-blind fingerprint; its axes attr tells the order."""
    import zarr

    a = tiny({"sigma": [0.2, 0.3], "seed": {"count": 2}})
    b = tiny({"seed": {"count": 2}, "sigma": [0.2, 0.3]})
    store = SweepStore.for_sweep(a, tmp_path / "s.zarr").prepare(a)
    zarr.open_group(str(store.path), mode="r+").attrs["mfg_ensemble.fingerprint"] = a.fingerprint_0_1
    SweepStore.for_sweep(a, store.path).prepare(a)  # the same sweep: resumes
    with pytest.raises(StoreMismatch, match="different sweep"):
        SweepStore.for_sweep(b, store.path).prepare(b)


# -- one run at a time --------------------------------------------------------------------------
def test_a_second_run_on_a_store_in_use_is_refused_naming_the_holder(tmp_path: Path, client) -> None:
    sweep, path = tiny(), tmp_path / "s.zarr"
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            run_sweep(sweep, path, client=client, on_start=lambda c, p: (started.set(), release.wait(60)))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(60), errors
        with pytest.raises(
            StoreLocked, match=rf"in use by another run \(host {socket.gethostname()}, pid {os.getpid()}\)"
        ):
            run_sweep(sweep, path, client=client)
    finally:
        release.set()
        thread.join(120)
    assert not errors and not SweepStore(path).lock_path.exists()
    assert (SweepStore(path).status() == DONE).all()


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path: Path, client) -> None:
    sweep, path = tiny(), tmp_path / "s.zarr"
    SweepStore.for_sweep(sweep, path).prepare(sweep)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    SweepStore(path).lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
    ds = run_sweep(sweep, path, client=client)
    assert (ds.status.values == DONE).all() and not SweepStore(path).lock_path.exists()


def test_a_lock_held_on_another_host_is_respected(tmp_path: Path) -> None:
    sweep, path = tiny(), tmp_path / "s.zarr"
    SweepStore.for_sweep(sweep, path).prepare(sweep)
    SweepStore(path).lock_path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(StoreLocked, match=r"host elsewhere, pid 1"):
        run_sweep(sweep, path, client="tcp://127.0.0.1:9")  # refused before connecting


# -- arguments and the dashboard ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [{"max_in_flight": -1}, {"max_in_flight": 0}, {"retries": -1}, {"n_workers": 0}, {"threads_per_worker": 0}]
)
def test_bad_run_arguments_raise_before_anything_is_created(tmp_path: Path, kw: dict) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be None or an integer"):
        run_sweep(tiny(), tmp_path / "s.zarr", **kw)
    assert not (tmp_path / "s.zarr").exists()


def test_workers_that_cannot_see_the_store_stop_the_run_before_compute(tmp_path: Path, client) -> None:
    from mfg_ensemble.ensemble.runner import _check_reachable

    _check_reachable(client, SweepStore(tmp_path))  # every local worker sees it
    with pytest.raises(StoreMismatch, match=r"not reachable from 2 of 2 worker\(s\)"):
        _check_reachable(client, SweepStore(tmp_path / "elsewhere"))


def test_the_default_dashboard_listens_on_localhost_only() -> None:
    import psutil

    with local_cluster(1) as cluster:
        port = cluster.scheduler.http_server.port
        bound = {c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.laddr.port == port}
    assert bound == {"127.0.0.1"}, bound


# -- damaged members are found and recomputed ------------------------------------------------------
def _chunk(store: Path, name: str) -> Path:
    """The chunk file of member (0, …) of the variable ``name``."""
    files = sorted(p for p in (store / name).iterdir() if p.name.startswith("c."))  # u/c.0.0.0
    assert files, name
    return files[0]


def test_every_member_chunk_carries_a_checksum(tmp_path: Path) -> None:
    import zarr

    store = made_store(tmp_path / "s.zarr")
    for name in ("u", "m", "residual", "status", "wall_time"):
        codecs = [type(c).__name__ for c in zarr.open_array(str(store.path), path=name, mode="r").compressors]
        assert "Crc32cCodec" in codecs, (name, codecs)


@pytest.mark.parametrize("damage", ["deleted chunk", "flipped bit"])
def test_a_damaged_member_is_found_and_recomputed(tmp_path: Path, client, damage: str) -> None:
    import numpy as np

    sweep, path = tiny(), tmp_path / "s.zarr"
    before = run_sweep(sweep, path, client=client).m.values.copy()
    assert SweepStore(path).verify() == {"damaged": [], "unverifiable": []}
    chunk = _chunk(path, "m")
    if damage == "deleted chunk":
        chunk.unlink()
    else:
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(data))
    assert SweepStore(path).verify()["damaged"] == [0]
    info = cli("info", str(path), "--verify")
    assert info.returncode == 1 and "damaged: 1 done member(s) no longer match their digest: 0" in info.stderr
    assert run_sweep(sweep, path, client=client).status.values.tolist() == [DONE, DONE]  # resume alone: no
    assert SweepStore(path).verify()["damaged"] == [0]
    after = run_sweep(sweep, path, client=client, retry_failed=True)
    assert SweepStore(path).verify() == {"damaged": [], "unverifiable": []}
    np.testing.assert_array_equal(after.m.values, before)


def test_retry_failed_recomputes_the_failed_members(tmp_path: Path, client) -> None:
    import zarr

    from mfg_ensemble.schema import FAILED

    sweep, path = tiny(), tmp_path / "s.zarr"
    run_sweep(sweep, path, client=client)
    zarr.open_array(str(path), path="status", mode="r+")[1] = FAILED
    assert run_sweep(sweep, path, client=client).status.values.tolist() == [DONE, FAILED]
    assert run_sweep(sweep, path, client=client, retry_failed=True).status.values.tolist() == [DONE, DONE]


def test_a_member_past_its_time_limit_is_failed_and_the_sweep_goes_on(tmp_path: Path, client) -> None:
    from mfg_ensemble.schema import FAILED

    sweep = Sweep(
        {**PROBLEM, "nx": 21, "nt": 6},
        TINY,
        {"time_limit": [1e-9, 600.0]},
    )
    ds = run_sweep(sweep, tmp_path / "s.zarr", client=client)
    assert ds.status.values.tolist() == [FAILED, DONE]
    assert SweepStore(tmp_path / "s.zarr").member_log(0)["reason"] == "time limit reached (1e-09 s)"
    assert tiny().fingerprint != tiny().fingerprint_0_1 and "time_limit" not in tiny().canonical_json()


def test_the_store_holds_about_two_files_per_member(tmp_path: Path, client) -> None:
    """The workers write u and m (one chunk each); the client commits the small values in
    blocks of members: the file count stays near the number of large-array chunks."""
    sweep, path = tiny({"seed": {"count": 24}}), tmp_path / "s.zarr"
    run_sweep(sweep, path, client=client)
    files = [p for p in path.rglob("*") if p.is_file()]
    chunks = [p for p in files if p.parent.name in ("u", "m") and p.name.startswith("c.")]
    assert len(chunks) == 2 * 24
    assert len(files) - len(chunks) < 40, sorted(str(p.relative_to(path)) for p in files)  # metadata, blocks
    assert sum(1 for p in path.rglob("*") if p.is_dir()) < 30  # a folder per variable, none per chunk


def test_a_full_disk_stops_the_run_at_once_and_leaves_the_store_consistent(tmp_path: Path, client) -> None:
    """The workers' first write fails with ENOSPC: no retries, no member marked failed, one
    OSError for the caller (the CLI prints it in one line, exit 2); the members stay pending."""
    import errno

    from mfg_ensemble.schema import PENDING

    def full_disk() -> None:
        from mfg_ensemble.ensemble.store import SweepStore

        def refuse(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "u"))

        SweepStore.write_fields_saved = SweepStore.write_fields
        SweepStore.write_fields = refuse

    def restore() -> None:
        from mfg_ensemble.ensemble.store import SweepStore

        SweepStore.write_fields = SweepStore.write_fields_saved

    sweep, path = tiny(), tmp_path / "s.zarr"
    client.run(full_disk)
    try:
        with pytest.raises(OSError, match="No space left on device") as info:
            run_sweep(sweep, path, client=client)
    finally:
        client.run(restore)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path / "u")
    assert (SweepStore(path).status() == PENDING).all()
    assert not SweepStore(path).lock_path.exists()
    assert (run_sweep(sweep, path, client=client).status.values == DONE).all()  # space again: it resumes

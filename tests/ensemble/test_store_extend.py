"""Growing a store: more seeds and more values at the end of an axis, without recomputing the
members already done — equal to a store run whole, refused when it is not an extension, the
failed members' logs following their members, an interrupted extension finished by a rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mfg_ensemble.ensemble.store as store_module
from mfg_ensemble import StoreMismatch, Sweep, run_sweep
from mfg_ensemble.ensemble.store import EXTENDING, SweepStore
from mfg_ensemble.schema import DONE, PENDING

from conftest import PROBLEM, SOLVER, cli

SMALL = {"sigma": [0.1, 0.2], "seed": {"count": 2}}
BIG = {"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}}


def test_an_extended_store_equals_the_whole_sweep_and_keeps_its_members(client, tmp_path: Path) -> None:
    path = tmp_path / "grow.zarr"
    first = run_sweep(Sweep(PROBLEM, SOLVER, SMALL), path, client=client).load()
    big = Sweep(PROBLEM, SOLVER, BIG)
    with pytest.raises(StoreMismatch, match=r"holds the first 2×2 members of this sweep \(3×3\): extend it"):
        run_sweep(big, path, client=client)

    seen: dict[str, int] = {}
    grown = run_sweep(big, path, client=client, extend=True, on_start=lambda c, p: seen.update(skipped=p.skipped))
    assert seen["skipped"] == 4  # the 4 members done before were not submitted again
    whole = run_sweep(big, tmp_path / "whole.zarr", client=client)
    for name in ("u", "m", "residual", "status", "iterations", "converged", "seed_value"):
        np.testing.assert_array_equal(grown[name].values, whole[name].values, err_msg=name)
    # the old members' own values (their wall times) are the first run's: kept, not recomputed
    np.testing.assert_array_equal(grown.wall_time.values[:2, :2], first.wall_time.values)
    assert grown.attrs["mfg_ensemble.fingerprint"] == big.fingerprint
    assert grown.attrs["history"].splitlines()[0].endswith("extended from (2, 2) to (3, 3)")
    assert SweepStore(path).verify() == {"damaged": [], "unverifiable": []}
    # the same sweep again: nothing to extend, nothing to run
    assert run_sweep(big, path, client=client, extend=True).status.values.tolist() == whole.status.values.tolist()


@pytest.mark.parametrize(
    "axes",
    [
        {"sigma": [0.2, 0.1, 0.3], "seed": {"count": 3}},  # the old values, not at the front
        {"sigma": [0.1], "seed": {"count": 3}},  # an axis shrinks
        {"seed": {"count": 3}, "sigma": [0.1, 0.2, 0.3]},  # the axes in another order
        {"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}, "nx": [41]},  # another axis
    ],
)
def test_what_is_not_an_extension_is_refused_as_another_sweep(tmp_path: Path, axes: dict) -> None:
    store = SweepStore.for_sweep(Sweep(PROBLEM, SOLVER, SMALL), tmp_path / "s.zarr")
    store.prepare(Sweep(PROBLEM, SOLVER, SMALL))
    other = Sweep(PROBLEM, SOLVER, axes)
    assert not SweepStore(store.path).extends(other)
    with pytest.raises(StoreMismatch, match="holds a different sweep"):
        SweepStore.for_sweep(other, store.path).prepare(other, extend=True)


def test_a_change_of_the_base_problem_is_no_extension(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    SweepStore.for_sweep(Sweep(PROBLEM, SOLVER, SMALL), path).prepare(Sweep(PROBLEM, SOLVER, SMALL))
    assert not SweepStore(path).extends(Sweep({**PROBLEM, "T": 2.0}, SOLVER, BIG))
    assert not SweepStore(path).extends(Sweep(PROBLEM, {**SOLVER, "tol": 1e-7}, BIG))
    assert SweepStore(path).extends(Sweep(PROBLEM, SOLVER, BIG))


def test_a_grid_that_outgrows_the_padding_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    small = Sweep(PROBLEM, SOLVER, {"nx": [21, 41]})
    SweepStore.for_sweep(small, path).prepare(small)
    bigger = Sweep(PROBLEM, SOLVER, {"nx": [21, 41, 81]})
    with pytest.raises(StoreMismatch, match=r"cannot extend .*nx = 81 \(the store holds 41\)"):
        SweepStore.for_sweep(bigger, path).prepare(bigger, extend=True)
    assert SweepStore(path).status().shape == (2,)  # left as it was


def _log(store: SweepStore, index: int, text: str) -> None:
    import zarr

    group = zarr.open_group(str(store.path), path=f"members/{index}", mode="w", zarr_format=3)
    group.attrs.update(error=text)


def test_logs_follow_their_members_and_an_interrupted_extension_is_finished(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "s.zarr"
    small, big = Sweep(PROBLEM, SOLVER, SMALL), Sweep(PROBLEM, SOLVER, BIG)
    store = SweepStore.for_sweep(small, path).prepare(small)
    for index in (1, 2, 3):  # positions (0, 1), (1, 0), (1, 1)
        _log(store, index, f"member at {np.unravel_index(index, (2, 2))}")

    def crash(_sweep):  # after the arrays grew and the logs moved, before the attrs change
        raise OSError("killed")

    monkeypatch.setattr(store_module, "provenance", crash)
    with pytest.raises(OSError, match="killed"):
        SweepStore.for_sweep(big, path).prepare(big, extend=True)
    monkeypatch.undo()
    assert EXTENDING in SweepStore(path).attrs()
    with pytest.raises(StoreMismatch, match="an extension to shape \\(3, 3\\) was interrupted"):
        SweepStore.for_sweep(big, path).prepare(big)

    SweepStore.for_sweep(big, path).prepare(big, extend=True)  # finishes it
    grown = SweepStore(path)
    assert EXTENDING not in grown.attrs()
    for old in (1, 2, 3):
        position = np.unravel_index(old, (2, 2))
        new = int(np.ravel_multi_index(position, (3, 3)))
        assert grown.member_log(new) == {"error": f"member at {position}"}
    assert grown.member_log(2) == {}  # (0, 2): a new member, no log
    assert (grown.status() == PENDING).all() and grown.status().shape == (3, 3)


def test_the_run_command_extends_with_extend(tmp_path: Path) -> None:
    text = """
[problem]
nx = 21
nt = 5
sigma = 0.2
[solver]
fp = "fv"
max_iter = 20
[sweep]
sigma = {values}
"""
    (tmp_path / "s.toml").write_text(text.format(values="[0.1, 0.2]"))
    assert cli("run", "s.toml", "--workers", "1", cwd=tmp_path).returncode == 0
    (tmp_path / "s.toml").write_text(text.format(values="[0.1, 0.2, 0.3]"))
    refused = cli("run", "s.toml", "--workers", "1", cwd=tmp_path)
    assert refused.returncode == 2 and "--extend" in refused.stderr + refused.stdout
    grown = cli("run", "s.toml", "--workers", "1", "--extend", cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    assert "resumed: 2 of 3 members" in grown.stdout
    assert (SweepStore(tmp_path / "s.zarr").status() == DONE).all()

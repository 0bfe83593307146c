"""The 2-D problem: rooms, obstacles, exits, families, validation, and sampling m0."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from mfg_ensemble import ConfigError, Sweep
from mfg_ensemble.game.problem import Problem
from mfg_ensemble.game.problem2d import Problem2D, problem_model
from mfg_ensemble.game.solver import in_obstacle, sample_initial_particles_2d
from mfg_ensemble.kernels.reference.grid2d import EXIT, FREE, OBSTACLE

ROOM = dict(
    nx=21,
    ny=11,
    nt=5,
    obstacles=[
        {"kind": "disc", "center": [0.5, 0.5], "radius": 0.2},
        {"kind": "rectangle", "x": [0, 0.1], "y": [0.9, 1]},
    ],
    exits=[{"side": "right", "lo": 0.4, "hi": 0.6}, {"side": "top", "lo": 0.8, "hi": 1.0}],
    m0={"kind": "gaussian", "mean": [0.3, 0.5], "std": 0.1},
)


def test_nodes_mark_obstacles_and_exits_where_the_geometry_says() -> None:
    p = Problem2D(**ROOM)
    nodes = p.nodes()
    X, Y = p.mesh()
    assert nodes.shape == (11, 21) and nodes.dtype == np.uint8
    disc = (X - 0.5) ** 2 + (Y - 0.5) ** 2 <= 0.04 + 1e-12
    corner = (X <= 0.1 + 1e-12) & (Y >= 0.9 - 1e-12)
    np.testing.assert_array_equal(nodes == OBSTACLE, disc | corner)
    right = np.zeros_like(disc)
    right[:, -1] = (Y[:, -1] >= 0.4 - 1e-12) & (Y[:, -1] <= 0.6 + 1e-12)
    top = np.zeros_like(disc)
    top[-1, :] = X[-1, :] >= 0.8 - 1e-12
    np.testing.assert_array_equal(nodes == EXIT, right | top)
    assert (nodes == FREE).sum() == nodes.size - (disc | corner).sum() - (right | top).sum()


def test_weights_are_the_trapezoid_products_without_obstacles_and_m0_has_mass_one() -> None:
    p = Problem2D(**ROOM)
    w = p.quadrature_weights()
    assert w[-1, 0] == 0.0  # the corner obstacle (top left)
    assert w[0, 5] == pytest.approx(p.dx * 0.5 * p.dy)  # a node on the bottom wall: a half cell
    assert w[0, -1] == pytest.approx(0.25 * p.dx * p.dy)  # a corner: a quarter cell
    assert w[5, 2] == pytest.approx(p.dx * p.dy)
    assert (w[p.nodes() == OBSTACLE] == 0).all()
    m0 = p.initial_density()
    assert (m0 * w).sum() == pytest.approx(1.0, abs=1e-14)
    assert (m0[p.nodes() != FREE] == 0).all()
    # a closed unit square with no obstacle: the weights add up to the area
    assert Problem2D(nx=9, ny=13).quadrature_weights().sum() == pytest.approx(1.0, abs=1e-14)
    assert Problem2D(nx=9, ny=13, bc="periodic").quadrature_weights().sum() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(bc="periodic", exits=[{"side": "left", "lo": 0, "hi": 1}]), "periodic: exits need walls"),
        (dict(exits=[{"side": "left", "lo": 0.41, "hi": 0.42}]), "covers no boundary node"),
        (dict(exits=[{"side": "left", "lo": 0.6, "hi": 0.4}]), "lo <= hi"),
        (
            dict(
                obstacles=[{"kind": "rectangle", "x": [0, 0.2], "y": [0, 1]}],
                exits=[{"side": "left", "lo": 0, "hi": 1}],
            ),
            "runs into an obstacle",
        ),
        (dict(obstacles=[{"kind": "rectangle", "x": [0, 1], "y": [0, 1]}]), "no free node"),
        (dict(x_hi=0.0), "x_lo < x_hi"),
        (
            dict(
                m0={"kind": "gaussian", "mean": [0.5, 0.5], "std": 0.001},
                obstacles=[{"kind": "disc", "center": [0.5, 0.5], "radius": 0.3}],
            ),
            "positive mass",
        ),
        (dict(terminal={"kind": "values", "values": [[1.0, 2.0]]}), "has shape"),
        (dict(coupling={"kind": "cosine"}), "coupling"),
    ],
)
def test_bad_rooms_are_refused_naming_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Problem2D(**{**ROOM, "exits": [], **change})


def test_a_sweep_file_table_picks_the_problem_kind_and_1d_files_stay_1d(tmp_path) -> None:
    assert problem_model({"nx": 11, "sigma": 0.1}) is Problem
    assert problem_model({"nx": 11, "ny": 11}) is Problem2D
    path = tmp_path / "room.toml"
    path.write_text(
        '[problem]\nnx = 11\nny = 9\nnt = 3\nbc = ["reflect", "periodic"]\n'
        'obstacles = [{ kind = "disc", center = [0.5, 0.5], radius = 0.2 }]\n'
        'exits = [{ side = "left", lo = 0.2, hi = 0.4 }]\n'
        'm0 = { kind = "gaussian", mean = [0.3, 0.5], std = [0.1, 0.2] }\n'
        '[solver]\nfp = "fv"\n[sweep]\nsigma = [0.1, 0.2]\nwidth = { field = "m0.std", values = [0.1, 0.2] }\n'
    )
    sweep = Sweep.from_file(path)
    assert isinstance(sweep.base_problem, Problem2D) and len(sweep) == 4
    assert sweep.base_problem.bc == ("reflect", "periodic")
    assert sweep.member(3).problem.m0.std == 0.2
    for axis, message in [
        ('door = { field = "exits.1.hi", values = [0.5] }', r"exits are numbered 0 … 0, as in 'exits.0'"),
        ('door = { field = "exits.0.width", values = [0.5] }', r"exits.0.side, exits.0.lo, exits.0.hi"),
        ('door = { field = "exits.x", values = [0.5] }', "numbered 0 … 0"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(path.read_text().replace('width = { field = "m0.std", values = [0.1, 0.2] }', axis))
        with pytest.raises(ConfigError, match=message):
            Sweep.from_file(bad)
    # geometry along axes: the whole list, an entry, an entry's field (validated per member)
    rooms = tmp_path / "rooms.toml"
    rooms.write_text(
        path.read_text().replace(
            'width = { field = "m0.std", values = [0.1, 0.2] }',
            'pillars = { field = "obstacles", values = [[], [{ kind = "disc", center = [0.6, 0.5], radius = 0.1 }]] }\n'
            'door = { field = "exits.0.hi", values = [0.4, 0.6] }',
        )
    )
    sweep = Sweep.from_file(rooms)
    assert sweep.shape == (2, 2, 2) and sweep.varies_grid()
    last = sweep.member(7).problem
    assert last.exits[0].hi == 0.6 and last.obstacles[0].center == [0.6, 0.5]
    assert sweep.member(0).problem.obstacles == ()
    inside = tmp_path / "inside.toml"
    inside.write_text(rooms.read_text().replace("values = [0.4, 0.6]", "values = [0.4, 0.1]"))
    with pytest.raises(ConfigError, match=r"problem.exits.*member 1"):
        Sweep.from_file(inside)
    typo = tmp_path / "typo.toml"
    typo.write_text(path.read_text().replace("ny = 9", 'ny = "9"'))
    with pytest.raises(ConfigError, match="problem.ny"):
        Sweep.from_file(typo)


def test_sampled_particles_follow_m0_exactly_and_avoid_obstacles() -> None:
    """The gaussian m0 sampled through its exact truncated CDFs: mean and variance within a few
    standard errors of the exact ones (truncation negligible here), none in an obstacle, the
    same particles for the same seed."""
    p = Problem2D(nx=41, ny=41, m0={"kind": "gaussian", "mean": [0.4, 0.55], "std": [0.08, 0.05]})
    n = 40_000
    x = sample_initial_particles_2d(p, n, seed=5)
    assert x.shape == (n, 2)
    for axis, (mu, sd) in enumerate(((0.4, 0.08), (0.55, 0.05))):
        assert abs(x[:, axis].mean() - mu) < 4 * sd / math.sqrt(n)
        assert abs(x[:, axis].var() - sd**2) < 4 * sd**2 * math.sqrt(2 / n)
    np.testing.assert_array_equal(x, sample_initial_particles_2d(p, n, seed=5))
    room = Problem2D(**ROOM)
    y = sample_initial_particles_2d(room, 5000, seed=1)
    assert not in_obstacle(room, room.nodes(), y).any()
    assert ((y[:, 0] >= 0) & (y[:, 0] <= 1) & (y[:, 1] >= 0) & (y[:, 1] <= 1)).all()
    # m0 given as values is sampled from its cells: close to the same distribution
    values = room.replace(m0=room.initial_density())
    z = sample_initial_particles_2d(values, 5000, seed=1)
    assert not in_obstacle(values, values.nodes(), z).any()
    np.testing.assert_allclose(z.mean(axis=0), y.mean(axis=0), atol=0.01)

"""The figures of a 2-D store (crowds in a room), for :func:`~mfg_ensemble.analysis.report.make_report`.

* ``snapshots.png`` — the density m(t, y, x) at five times (columns) for each parameter point
  (rows; seed-mean of the members used), or for one member; obstacles drawn in grey, exits
  as red segments on the walls, one colour scale per row (a square-root scale, so that the thin
  crowd late in the evacuation shows beside the dense start);
* ``density_animation.gif`` — the same seed-mean densities through time, side by side (at
  most four points), one frame per output time (at most ``MAX_FRAMES``);
* ``evacuation.png`` — the mass in the room and the mass that has left through the exits
  against t, per parameter point (seed-mean).

Matplotlib only (``Figure`` objects and its Pillow GIF writer), no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.figure import Figure

from mfg_ensemble.kernels.reference.grid2d import EXIT, OBSTACLE
from mfg_ensemble.schema import label

if TYPE_CHECKING:  # the snapshot type lives with the 1-D figures, which import this module late
    from mfg_ensemble.analysis.report import _Snapshot

SNAPSHOTS = 5
"""Times per row of ``snapshots.png``."""
MAX_ANIMATED = 4
"""Parameter points side by side in the animation."""
MAX_FRAMES = 60
GAMMA = 0.5
"""The colour scale is m^GAMMA (a power norm): a dense start and a thinning crowd in one scale."""
DPI = 110
OBSTACLE_COLOUR = ListedColormap(["0.55"])


class Room:
    """One picture's data: a density history on its grid, with the node kinds."""

    def __init__(self, m: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, nodes: np.ndarray, title: str):
        self.m, self.t, self.x, self.y, self.nodes, self.title = m, t, x, y, nodes, title

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """The image extent: the nodes' cells."""
        dx = self.x[1] - self.x[0]
        dy = self.y[1] - self.y[0]
        return (self.x[0] - dx / 2, self.x[-1] + dx / 2, self.y[0] - dy / 2, self.y[-1] + dy / 2)

    def draw(self, ax, k: int, vmax: float, cmap: str = "viridis"):  # type: ignore[no-untyped-def]
        """Draw m at time index k with obstacles and exits; returns the image."""
        shown = np.where(self.nodes == OBSTACLE, np.nan, self.m[k])
        norm = PowerNorm(GAMMA, vmin=0.0, vmax=vmax)  # the sparse crowd late on stays visible
        image = ax.imshow(shown, origin="lower", extent=self.extent, norm=norm, cmap=cmap)
        blocked = np.where(self.nodes == OBSTACLE, 1.0, np.nan)
        ax.imshow(blocked, origin="lower", extent=self.extent, cmap=OBSTACLE_COLOUR, vmin=0, vmax=1)
        for segment in exit_segments(self.x, self.y, self.nodes):
            ax.plot(*segment, color="red", lw=4, solid_capstyle="butt", clip_on=False)
        ax.set_xlim(self.x[0], self.x[-1])
        ax.set_ylim(self.y[0], self.y[-1])
        ax.set_aspect("equal")
        return image

    def vmax(self) -> float:
        free = self.m[:, self.nodes != OBSTACLE]
        finite = free[np.isfinite(free)]
        return float(np.percentile(finite, 99.5)) if finite.size else 1.0


def exit_segments(x: np.ndarray, y: np.ndarray, nodes: np.ndarray) -> list[tuple[list[float], list[float]]]:
    """The exits as line segments on the walls ([x0, x1], [y0, y1]), one per exit node's cell face."""
    dx, dy = x[1] - x[0], y[1] - y[0]
    out = []
    for j, i in np.argwhere(nodes == EXIT):
        if i in (0, x.size - 1):
            out.append(([x[i], x[i]], [max(y[j] - dy / 2, y[0]), min(y[j] + dy / 2, y[-1])]))
        if j in (0, y.size - 1):
            out.append(([max(x[i] - dx / 2, x[0]), min(x[i] + dx / 2, x[-1])], [y[j], y[j]]))
    return out


def _grid(sub: xr.Dataset, name: str, used: xr.DataArray, seed: str | None) -> np.ndarray:
    """A coordinate of a selection: the store's, or the members' own (padded stores)."""
    values = sub[name]
    if seed is not None and seed in values.dims:
        values = values.where(used).max(seed)
    return np.asarray(values.values)


def point_room(sw: _Snapshot, point: dict[str, int], member: int | None = None) -> Room | None:
    """The seed-mean density of a parameter point (or one member's), None if none is used."""
    ds = sw.ds
    if member is not None:
        position = np.unravel_index(member, sw.status.shape) if sw.axes else ()
        sub = ds.isel({a: int(i) for a, i in zip(sw.axes, position)})
        title = f"member {member}"
    else:
        sub = ds.isel(point)
        title = sw.point_label(point) or "all members"
    used = sub["used"]
    if not bool(used.any()):
        return None
    seed = sw.seed if member is None and sw.seed in sub.dims else None
    m = sub["m"].where(used)
    m = m.mean(seed, skipna=True) if seed else m
    t, x, y = (_grid(sub, n, used, seed) for n in ("t", "x", "y"))
    nodes = _grid(sub, "nodes", used, seed).astype(int)
    nt, nx, ny = np.isfinite(t).sum(), np.isfinite(x).sum(), np.isfinite(y).sum()  # padded stores: trim
    return Room(np.asarray(m.values)[:nt, :ny, :nx], t[:nt], x[:nx], y[:ny], nodes[:ny, :nx], title)


def _rooms(sw: _Snapshot, points: list[dict[str, int]], member: int | None) -> list[Room]:
    if member is not None:
        room = point_room(sw, {}, member)
        return [room] if room is not None else []
    return [r for r in (point_room(sw, p) for p in points) if r is not None]


def snapshots(sw: _Snapshot, out: Path, points: list[dict[str, int]], member: int | None) -> list[Path]:
    """``snapshots.png``: the density at SNAPSHOTS times per parameter point."""
    rooms = _rooms(sw, points, member)
    if not rooms:
        return []
    fig = Figure(figsize=(2.6 * SNAPSHOTS + 0.8, 2.5 * len(rooms) + 0.8), layout="constrained")
    axes = fig.subplots(len(rooms), SNAPSHOTS, squeeze=False)
    for row, room in zip(axes, rooms):
        vmax = room.vmax()
        picks = np.unique(np.linspace(0, room.t.size - 1, SNAPSHOTS).round().astype(int))
        image = None
        for ax, k in zip(row, picks):
            image = room.draw(ax, int(k), vmax)
            ax.set_title(f"t = {room.t[k]:.3g}", fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in row[len(picks) :]:
            ax.set_axis_off()
        row[0].set_ylabel(room.title, fontsize=8)
        fig.colorbar(image, ax=list(row), shrink=0.9, label=label(sw.ds["m"], "m"))
    fig.suptitle(f"{sw.title}: density ({sw.headline()}; {sw.which})", fontsize=10)
    path = out / "snapshots.png"
    fig.savefig(path, dpi=DPI)
    return [path]


def animation(sw: _Snapshot, out: Path, points: list[dict[str, int]], member: int | None) -> list[Path]:
    """``density_animation.gif``: the densities of up to MAX_ANIMATED points through time."""
    rooms = _rooms(sw, points[:: max(1, -(-len(points) // MAX_ANIMATED))][:MAX_ANIMATED], member)
    if not rooms:
        return []
    fig = Figure(figsize=(3.2 * len(rooms), 3.4), layout="constrained")
    axes = fig.subplots(1, len(rooms), squeeze=False)[0]
    vmax = [room.vmax() for room in rooms]
    frames = np.unique(np.linspace(0, rooms[0].t.size - 1, min(MAX_FRAMES, rooms[0].t.size)).round().astype(int))

    def frame(k: int) -> list:  # type: ignore[type-arg]
        artists = []
        for ax, room, top in zip(axes, rooms, vmax):
            ax.clear()
            kk = min(int(k), room.t.size - 1)
            artists.append(room.draw(ax, kk, top))
            ax.set_title(f"{room.title}\nt = {room.t[kk]:.3g}", fontsize=8)
            ax.tick_params(labelsize=7)
        return artists

    path = out / "density_animation.gif"
    FuncAnimation(fig, frame, frames=frames, blit=False).save(path, writer=PillowWriter(fps=8), dpi=80)
    return [path]


def evacuation(sw: _Snapshot, out: Path, points: list[dict[str, int]]) -> list[Path]:
    """``evacuation.png``: mass in the room and exited mass against t, per parameter point."""
    ds = sw.ds
    if "exited" not in ds:
        return []
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    mass = ds.mfg.integrate(ds["m"], "all").where(ds["used"])
    exited = ds["exited"].where(ds["used"])
    for k, point in enumerate(points):
        m, e = mass.isel(point), exited.isel(point)
        if sw.seed in m.dims:
            m, e = m.mean(sw.seed, skipna=True), e.mean(sw.seed, skipna=True)
        t = _grid(ds.isel(point), "t", ds["used"].isel(point), sw.seed)
        if not np.isfinite(np.asarray(m.values)).any():
            continue
        colour = f"C{k % 10}"
        text = sw.point_label(point) or "all members"
        ax.plot(t, np.asarray(m.values)[: t.size], color=colour, label=f"in the room: {text}")
        ax.plot(t, np.asarray(e.values)[: t.size], color=colour, ls="--", label=f"exited: {text}")
    ax.set_xlabel(label(ds["t"], "t"))
    ax.set_ylabel("mass")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(f"{sw.title}: evacuation ({sw.headline()}; {sw.which})", fontsize=10)
    path = out / "evacuation.png"
    fig.savefig(path, dpi=DPI)
    return [path]

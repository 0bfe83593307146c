"""PNG figures of a sweep store, from the store alone (``mfg-ensemble report STORE``).

:func:`make_report` writes, in ``out_dir``:

* ``density_<point>.png`` — heat maps of the density m(t, x), with the mean position over
  it: the seed-mean of each parameter point (the sweep axes other than the seed; at most
  ``max_points`` of them, evenly spread), or of one member (``member=INDEX`` →
  ``density_member<INDEX>.png``);
* ``final_density_<axis>.png`` — for each parameter axis, the final density m(T, x) of every
  value of that axis (the seed-mean and a ± one standard deviation band; the other parameter
  axes held at their middle value, named in the title);
* ``value_slices.png`` — the value function u(t, x) at five times, per parameter point (or
  for the chosen member);
* ``convergence.png`` — the residual against the Picard iteration (log scale) of every
  finished member: done members coloured by the first parameter axis, failed ones in red,
  the tolerance dashed;
* ``summary.png`` — iterations, wall time and members done (with failures) over the first
  two parameter axes (or one axis and the seeds), averaged over the other axes.

A 2-D store (dims (axes…, t, y, x)) gets the figures of :mod:`~mfg_ensemble.analysis.report2d`
(density snapshots with obstacles and exits, an animated GIF, the evacuation curves) instead
of the three 1-D density and value figures.

Labels and units are the dataset's ``long_name`` and ``units`` attributes. The store may be
still running or interrupted: the status is read once, first (it is the store's commit
marker), only members done by then are used, missing ones are drawn hatched in grey, and
titles say "n of N members done". Stores whose grid varies along an axis (dims ``t_index``,
``x_index``) are drawn with each member's own t and x.

Only :class:`matplotlib.figure.Figure` objects are used (no pyplot, no global state, no
display needed): safe in a headless job, a Dask worker or a notebook.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from mfg_ensemble import schema
from mfg_ensemble.analysis import accessor as _accessor  # noqa: F401  (registers ds.mfg)
from mfg_ensemble.ensemble.store import open_sweep
from mfg_ensemble.kernels import quadrature_weights
from mfg_ensemble.schema import DONE, FAILED, PENDING, label

BANDS = ("std", "quantiles")
QUANTILES = (0.05, 0.5, 0.95)
"""The quantiles of the "quantiles" band: its lower edge, the line, its upper edge."""
MISSING = dict(facecolor="0.88", edgecolor="0.55", hatch="///")
DPI = 110


def _fmt(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "all"


@dataclass
class _Snapshot:
    """The store with its status read once (the snapshot every figure masks with)."""

    ds: xr.Dataset
    status: np.ndarray
    axes: list[str]
    seed: str | None
    params: list[str]
    title: str
    members: str = "converged"  # which done members the figures use: "converged" or "all"
    used: np.ndarray | None = None  # those members (axes shape)

    @property
    def which(self) -> str:
        """What the figures average, for their titles."""
        return "converged members" if self.members == "converged" else "all done members (converged or not)"

    def mask(self, sub: xr.Dataset) -> xr.DataArray:
        """The members used, over the axes of ``sub`` (a selection of the snapshot's dataset)."""
        return sub["used"]

    @property
    def n(self) -> int:
        return int(self.status.size)

    def count(self, code: int) -> int:
        return int((self.status == code).sum())

    def headline(self) -> str:
        parts = [f"{self.count(DONE)} of {self.n} members done"]
        if "converged" in self.ds:
            converged = int(((self.status == DONE) & (self.ds["converged"].values == 1)).sum())
            if converged != self.count(DONE):
                parts.append(f"{converged} converged")
        if self.count(FAILED):
            parts.append(f"{self.count(FAILED)} failed")
        if self.count(PENDING):
            parts.append(f"{self.count(PENDING)} pending")
        return ", ".join(parts)

    def axis_label(self, axis: str) -> str:
        coord = self.ds[axis]
        fields = [str(f) for f in coord.attrs.get("fields", [])]
        text = str(coord.attrs.get("long_name", axis))
        if axis == self.seed:
            return f"{text} (replicate)"
        return f"{text} ({', '.join(fields)})" if fields and fields != [axis] else text

    def point_label(self, point: dict[str, int], sep: str = ", ") -> str:
        """``sigma = 0.1, res = 1 (nx = 41, nt = 9)``: the axis values, and the fields of zip axes."""
        parts = []
        for a, i in point.items():
            extra = [f"{c} = {_fmt(v[i])}" for c, v in self.extras(a).items()]
            parts.append(f"{a} = {_fmt(self.ds[a].values[i])}" + (f" ({', '.join(extra)})" if extra else ""))
        return sep.join(parts)

    def extras(self, axis: str) -> dict[str, np.ndarray]:
        """The other coordinates along a parameter axis (the fields of a zip axis), loaded."""
        if axis == self.seed:
            return {}
        return {str(c): np.asarray(v.values) for c, v in self.ds.coords.items() if v.dims == (axis,) and c != axis}

    def point_slug(self, point: dict[str, int]) -> str:
        return _slug("_".join(f"{a}={_fmt(self.ds[a].values[i])}" for a, i in point.items()))


def _open(store: str | Path | xr.Dataset, members: str = "converged") -> _Snapshot:
    ds = store if isinstance(store, xr.Dataset) else open_sweep(store)
    if "status" not in ds or "m" not in ds:
        raise ValueError("not an mfg_ensemble sweep store (no status or m variable)")
    status = ds["status"].load()  # the snapshot: members done now are complete on disk
    ds = ds.assign(status=status)
    if "converged" in ds:
        ds = ds.assign(converged=ds["converged"].load())
    used = ds.mfg.done(members).load()  # checks `members`
    ds = ds.assign(used=used)
    axes = ds.mfg.axes
    seed = ds.mfg.seed_dim
    title = str(ds.attrs.get("title", "mfg_ensemble sweep"))
    params = [a for a in axes if a != seed]
    return _Snapshot(ds, np.asarray(status.values), axes, seed, params, title, members, np.asarray(used.values))


def _points(sw: _Snapshot, limit: int) -> list[dict[str, int]]:
    """The parameter points (every combination of the parameter axes), at most ``limit``,
    evenly spread when there are more."""
    shape = [sw.ds.sizes[a] for a in sw.params]
    every = [dict(zip(sw.params, idx)) for idx in itertools.product(*(range(n) for n in shape))]
    if len(every) <= limit:
        return every
    keep = sorted(set(np.linspace(0, len(every) - 1, limit).round().astype(int).tolist()))
    return [every[i] for i in keep]


def _missing(ax: Any, text: str) -> None:
    """An empty panel that says what is missing."""
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, **MISSING))
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        wrap=True,
        bbox=dict(facecolor="white", edgecolor="0.55"),
    )
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class _Field:
    """A (t, x) field of one point: the seed-mean (or one member), trimmed of the padding."""

    t: np.ndarray
    x: np.ndarray
    values: np.ndarray  # (t, x)
    done: int
    total: int
    what: str  # "seed-mean", "one member" or "member <index>"
    note: str = ""
    bc: str = "reflect"

    @property
    def empty(self) -> bool:
        return self.values.size == 0 or not np.isfinite(self.values).any()


def _point_field(sw: _Snapshot, var: str, point: dict[str, int]) -> _Field:
    sub = sw.ds.isel(point)
    done = sw.mask(sub)
    n_done, total = int(done.sum()), int(done.size)
    if sw.seed is not None:
        values = sub[var].where(done).mean(sw.seed, skipna=True)
        t = sub["t"].where(done).mean(sw.seed) if sw.seed in sub["t"].dims else sub["t"]
        x = sub["x"].where(done).mean(sw.seed) if sw.seed in sub["x"].dims else sub["x"]
        what = f"seed-mean of {sw.which}"
    else:
        values, t, x = sub[var].where(done), sub["t"], sub["x"]
        what = "one member"
    field = _trim(np.asarray(values.values), np.asarray(t.values), np.asarray(x.values), n_done, total, what)
    field.bc = _bc(sub)
    return field


def _bc(ds: xr.Dataset) -> str:
    bc = ds.mfg.bc
    return bc if isinstance(bc, str) else "reflect"  # still an axis: not one point's


def _member_field(sw: _Snapshot, var: str, index: int) -> _Field:
    sub = sw.ds.mfg.member(index)
    code = int(sub["status"])
    state = {DONE: "done", FAILED: "failed", PENDING: "pending"}[code]
    values = sub[var] if code != PENDING else sub[var] * np.nan
    field = _trim(
        np.asarray(values.values),
        np.asarray(sub["t"].values),
        np.asarray(sub["x"].values),
        int(code == DONE),
        1,
        f"member {index}",
    )
    where = sw.point_label({a: int(i) for a, i in zip(sw.axes, np.unravel_index(index, sw.status.shape))})
    field.note = f"{where} ({state})" if where else state
    field.bc = _bc(sub)
    return field


def _trim(values: np.ndarray, t: np.ndarray, x: np.ndarray, done: int, total: int, what: str) -> _Field:
    kt, kx = np.isfinite(t), np.isfinite(x)
    return _Field(t[kt], x[kx], values[np.ix_(kt, kx)] if values.ndim == 2 else values, done, total, what)


def _save(fig: Figure, path: Path, files: list[Path]) -> list[Path]:
    fig.savefig(path, dpi=DPI)
    files.append(path)
    return files


# -- the figures ---------------------------------------------------------------------------------
def _density(sw: _Snapshot, out: Path, member: int | None, max_points: int) -> list[Path]:
    m, files = sw.ds["m"], []
    if member is not None:
        jobs = [(f"density_member{member}.png", _member_field(sw, "m", member))]
    else:
        points = _points(sw, max_points)
        jobs = []
        for point in points:
            name = f"density_{sw.point_slug(point)}.png" if point else "density_mean.png"
            field = _point_field(sw, "m", point)
            field.note = sw.point_label(point)
            jobs.append((name, field))
    finite = [f.values[np.isfinite(f.values)] for _, f in jobs if not f.empty]
    vmax = float(max(v.max() for v in finite)) if finite else 1.0
    tlabel, xlabel = label(sw.ds["t"], "t"), label(sw.ds["x"], "x")
    for name, f in jobs:
        fig = Figure(figsize=(6.4, 4.6), layout="constrained")
        ax = fig.add_subplot()
        count = f"{f.done} of {f.total} members done"
        second = f.note if member is not None else (f"{f.note} ({count})" if f.note else count)
        ax.set_title(f"{m.attrs.get('long_name', 'm')}: {f.what}\n{second}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(tlabel)
        if f.empty:
            _missing(ax, "no member done here yet" if member is None else f"no data: {f.note}")
        else:
            mesh = ax.pcolormesh(f.x, f.t, f.values, shading="nearest", cmap="viridis", vmin=0.0, vmax=vmax)
            fig.colorbar(mesh, ax=ax, label=label(m, "m"))
            w = _weights(f.x, f.bc)
            mean = (f.values @ (f.x * w)) / (f.values @ w)
            ax.plot(mean, f.t, color="white", lw=1.5, ls="--", label="mean position")
            ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
        _save(fig, out / name, files)
    return files


def _weights(x: np.ndarray, bc: str) -> np.ndarray:
    """The quadrature weights of a member's (trimmed, uniform) grid ``x``."""
    return quadrature_weights(x.size, x[1] - x[0], bc) if x.size >= 2 else np.ones_like(x)


def _final_density(sw: _Snapshot, out: Path, band: str = "std") -> list[Path]:
    ds, files = sw.ds, []
    axes = sw.params or ([sw.seed] if sw.seed else [])
    final = ds.mfg.final(sw.members)
    xlabel = label(ds["x"], "x")
    m_label = label(ds["m"], "m")
    if not axes:  # a sweep without axes: one member
        axes = [None]
    for axis in axes:
        others = {a: ds.sizes[a] // 2 for a in sw.params if a != axis}
        fig = Figure(figsize=(7.0, 4.6), layout="constrained")
        ax = fig.add_subplot()
        n = ds.sizes[axis] if axis else 1
        colours = _colours(n)
        handles, done_total, total = [], 0, 0
        for k in range(n):
            at = {**others, **({axis: k} if axis else {})}
            sub = final.isel(at)
            used = sw.used[tuple(at.get(a, slice(None)) for a in sw.axes)] if sw.axes else sw.used
            done = sub["m"].notnull().any(ds.mfg.xdim)
            n_done, n_all = int(np.asarray(used).sum()), int(np.asarray(used).size)
            done_total, total = done_total + n_done, total + n_all
            name = f"{axis} = {_fmt(ds[axis].values[k])}" if axis else "the member"
            reduce = sw.seed if (sw.seed and axis != sw.seed and sw.seed in sub["m"].dims) else None
            if n_done == 0:
                handles.append(Patch(label=f"{name}: no member done", **MISSING))
                continue
            if reduce:
                kept = sub["m"].where(done)
                if band == "quantiles":
                    q = kept.quantile(list(QUANTILES), dim=reduce, skipna=True).values
                    mean, lower, upper = q[1], q[0], q[2]
                else:
                    mean = kept.mean(reduce, skipna=True).values
                    std = kept.std(reduce, skipna=True, ddof=1).values if n_done > 1 else None
                    lower, upper = (mean - std, mean + std) if std is not None else (None, None)
                x = sub["x"].where(done).mean(reduce).values if reduce in sub["x"].dims else sub["x"].values
            else:
                mean, lower, upper, x = sub["m"].values, None, None, sub["x"].values
            keep = np.isfinite(x) & np.isfinite(mean)
            (line,) = ax.plot(
                x[keep],
                mean[keep],
                color=colours[k],
                lw=1.6,
                label=f"{name}" + (f" ({n_done}/{n_all} used)" if reduce else ""),
            )
            if lower is not None and n_done > 1:
                ax.fill_between(x[keep], lower[keep], upper[keep], color=colours[k], alpha=0.2, lw=0)
            handles.append(line)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"final {m_label}".replace("m(t, x)", "m(T, x)"))
        held = ", ".join(f"{a} = {_fmt(ds[a].values[i])}" for a, i in others.items())
        stat = "seed-median, 5–95 % band" if band == "quantiles" else "seed-mean ± 1 std"
        how = f"{stat} of {sw.which}" if (sw.seed and axis != sw.seed) else f"each member; {sw.which}"
        what = f" across {axis}" if axis else ""
        ax.set_title(
            f"final density m(T, x){what} ({how})"
            + (f" at {held}" if held else "")
            + (
                f"\n{done_total} of these {total} members used; sweep: {sw.headline()}"
                if total != sw.n
                else f"\n{sw.headline()}"
            ),
            fontsize=10,
        )
        if any(isinstance(h, Line2D) for h in handles):
            ax.set_ylim(bottom=0)
        else:
            _missing(ax, "no member done yet")
        ax.legend(handles=handles, fontsize=8, loc="best")
        _save(fig, out / (f"final_density_{_slug(axis)}.png" if axis else "final_density.png"), files)
    return files


def _colours(n: int) -> list[Any]:
    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.8 * k / max(1, n - 1)) for k in range(n)]


def _value_slices(sw: _Snapshot, out: Path, member: int | None, max_points: int) -> list[Path]:
    ds, files = sw.ds, []
    if member is not None:
        jobs = [_member_field(sw, "u", member)]
    else:
        jobs = []
        for point in _points(sw, min(max_points, 6)):
            f = _point_field(sw, "u", point)
            f.note = sw.point_label(point)
            jobs.append(f)
    ncols = min(3, len(jobs))
    nrows = math.ceil(len(jobs) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 0.8, 3.4 * nrows + 0.6), layout="constrained")
    axs = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    cmap = colormaps["plasma"]
    t_max = float(np.nanmax([f.t.max() for f in jobs if f.t.size] or [1.0]))
    norm = Normalize(0.0, t_max)
    for ax, f in zip(axs, jobs):
        title = (
            f"{f.note or 'the sweep'}\n{f.what} ({f.done} of {f.total} members done)"
            if member is None
            else f"{f.what}\n{f.note}"
        )
        ax.set_title(title, fontsize=9)
        if f.empty:
            _missing(ax, "no member done here yet" if member is None else "no data")
            continue
        picks = sorted(set(np.linspace(0, f.t.size - 1, 5).round().astype(int).tolist()))
        for j in picks:
            ax.plot(f.x, f.values[j], color=cmap(norm(f.t[j]) * 0.9), lw=1.4, label=f"t = {_fmt(float(f.t[j]))}")
        ax.set_xlabel(label(ds["x"], "x"))
        ax.set_ylabel(label(ds["u"], "u"))
        ax.legend(fontsize=7, loc="best")
    for ax in axs[len(jobs) :]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axs.tolist(), label=label(ds["t"], "t"), shrink=0.8)
    fig.suptitle(f"value function slices u(t, x) — {sw.title}\n{sw.headline()}", fontsize=10)
    _save(fig, out / "value_slices.png", files)
    return files


def _convergence(sw: _Snapshot, out: Path) -> list[Path]:
    ds, files = sw.ds, []
    res = np.asarray(ds["residual"].values).reshape(sw.n, -1)
    iters = np.asarray(ds["iteration"].values)
    status = sw.status.ravel()
    fig = Figure(figsize=(8.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(label(ds["iteration"], "iteration"))
    ax.set_ylabel(label(ds["residual"], "residual"))
    ax.set_title(f"convergence of the Picard iteration — {sw.title}\n{sw.headline()}", fontsize=10)
    colour_axis = sw.params[0] if sw.params else None
    if colour_axis is not None:
        position = np.unravel_index(np.arange(sw.n), sw.status.shape)[sw.axes.index(colour_axis)]
        cmap = colormaps["viridis"]
        norm = Normalize(0, max(1, ds.sizes[colour_axis] - 1))
    drawn, failed_drawn, shown_values = 0, 0, set()
    for i in np.flatnonzero(status != PENDING):
        r = res[i]
        keep = np.isfinite(r) & (r > 0)
        if not keep.any():
            continue
        if status[i] == FAILED:
            ax.plot(iters[keep], r[keep], color="tab:red", lw=1.2, ls="--", alpha=0.9, zorder=3)
            failed_drawn += 1
        else:
            colour = cmap(norm(position[i]) * 0.9) if colour_axis else "tab:blue"
            ax.plot(iters[keep], r[keep], color=colour, lw=1.0, alpha=0.75)
            shown_values.add(int(position[i]) if colour_axis else 0)
        drawn += 1
    if not drawn:
        _missing(
            ax,
            "no member finished yet"
            if not sw.count(FAILED)
            else f"no residual history: {sw.count(FAILED)} member(s) failed before the first iteration",
        )
        return _save(fig, out / "convergence.png", files)
    ax.set_yscale("log")
    handles: list[Any] = []
    tol = _tolerance(sw)
    if tol is not None:
        handles.append(ax.axhline(tol, color="k", ls=":", lw=1.2, label=f"tolerance {tol:g}"))
    n_failed = sw.count(FAILED)
    if n_failed:
        text = (
            f"failed ({n_failed})"
            if failed_drawn == n_failed
            else f"failed ({failed_drawn} drawn; {n_failed - failed_drawn} without history)"
        )
        handles.append(Line2D([], [], color="tab:red", ls="--", label=text))
    if colour_axis is not None:
        values = ds[colour_axis].values
        keys = sorted(shown_values)
        for k in keys if len(keys) <= 8 else [keys[j] for j in np.linspace(0, len(keys) - 1, 6).round().astype(int)]:
            handles.append(Line2D([], [], color=cmap(norm(k) * 0.9), label=f"{colour_axis} = {_fmt(values[k])}"))
    elif shown_values:
        handles.append(Line2D([], [], color="tab:blue", label=f"done ({sw.count(DONE)})"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, out / "convergence.png", files)


def _tolerance(sw: _Snapshot) -> float | None:
    """The solver's tolerance from the ``solver.tol`` attr (stores record every solver option;
    stores written before 0.2 only those the sweep set); None when it is unknown or tol is
    itself a sweep axis."""
    if any("tol" in sw.ds[a].attrs.get("fields", []) for a in sw.axes):
        return None
    tol = sw.ds.attrs.get(schema.SOLVER + "tol")
    return float(tol) if isinstance(tol, (int, float)) and tol > 0 else None


def _summary(sw: _Snapshot, out: Path) -> list[Path]:
    ds, files = sw.ds, []
    shown = sw.params[:2]
    if len(shown) < 2 and sw.seed:
        shown.append(sw.seed)
    rest = [a for a in sw.axes if a not in shown]
    done = ds["status"] == DONE
    finished = ds["status"] != PENDING
    iterations = ds["iterations"].where(done).mean(rest, skipna=True) if rest else ds["iterations"].where(done)
    wall = ds["wall_time"].where(finished).mean(rest, skipna=True) if rest else ds["wall_time"].where(finished)
    counts = {
        code: (ds["status"] == code).sum(rest) if rest else (ds["status"] == code).astype(int)
        for code in (DONE, FAILED, PENDING)
    }
    mean_note = f" (mean over {', '.join(rest)})" if rest else ""
    fig = Figure(figsize=(5.2 * 3, 4.4 if len(shown) == 2 else 4.0), layout="constrained")
    axs = fig.subplots(1, 3)
    panels = [
        (iterations, label(ds["iterations"], "iterations") + mean_note, "cividis", "done members"),
        (wall, label(ds["wall_time"], "wall_time") + mean_note, "magma", "done and failed members"),
    ]
    for ax, (values, text, cmap, of) in zip(axs[:2], panels):
        ax.set_title(f"{text}\nof {of}", fontsize=9)
        _panel(sw, ax, fig, shown, np.asarray(values.transpose(*shown).values, dtype=float), text, cmap)
    n_done = np.asarray(counts[DONE].transpose(*shown).values)
    n_failed = np.asarray(counts[FAILED].transpose(*shown).values)
    n_pending = np.asarray(counts[PENDING].transpose(*shown).values)
    loose = (done & (ds["converged"] == 0)).astype(int)
    n_loose = np.asarray((loose.sum(rest) if rest else loose).transpose(*shown).values)
    _status_panel(sw, axs[2], fig, shown, n_done, n_failed, n_pending, n_loose)
    fig.suptitle(f"summary — {sw.title}\n{sw.headline()}", fontsize=10)
    _save(fig, out / "summary.png", files)
    return files


def _ticks(ax: Any, which: str, values: np.ndarray) -> None:
    step = max(1, math.ceil(len(values) / 12))
    idx = np.arange(0, len(values), step)
    (ax.set_xticks if which == "x" else ax.set_yticks)(idx + 0.5)  # cell centres
    (ax.set_xticklabels if which == "x" else ax.set_yticklabels)([_fmt(values[i]) for i in idx], fontsize=8)


def _panel(sw: _Snapshot, ax: Any, fig: Figure, shown: list[str], values: np.ndarray, text: str, cmap: str) -> None:
    ds = sw.ds
    if len(shown) == 2:
        n0, n1 = values.shape
        mesh = ax.pcolormesh(np.arange(n1 + 1), np.arange(n0 + 1), np.ma.masked_invalid(values), cmap=cmap)
        if np.isfinite(values).any():
            fig.colorbar(mesh, ax=ax, label=text.split(" (mean")[0])
        for i, j in zip(*np.nonzero(~np.isfinite(values))):
            ax.add_patch(Rectangle((j, i), 1, 1, **MISSING))
        if n0 * n1 <= 150:
            for i, j in itertools.product(range(n0), range(n1)):
                v = values[i, j]
                ink = "0.2" if not np.isfinite(v) else _ink(mesh.cmap(mesh.norm(v)))
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    "missing" if not np.isfinite(v) else f"{v:.3g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=ink,
                    bbox=None if np.isfinite(v) else dict(facecolor="white", edgecolor="none", pad=1),
                )
        ax.set_xlabel(sw.axis_label(shown[1]))
        ax.set_ylabel(sw.axis_label(shown[0]))
        _ticks(ax, "x", ds[shown[1]].values)
        _ticks(ax, "y", ds[shown[0]].values)
        return
    values = values.reshape(-1)
    xs = np.arange(values.size)
    finite = np.isfinite(values)
    top = float(np.nanmax(values)) if finite.any() else 1.0
    ax.bar(xs[finite], values[finite], color="tab:blue")
    ax.bar(xs[~finite], np.full((~finite).sum(), top), **MISSING, label="missing")
    if (~finite).any():
        ax.legend(fontsize=8)
    ax.set_ylabel(text)
    if shown:
        ax.set_xlabel(sw.axis_label(shown[0]))
        _bar_ticks(ax, ds[shown[0]].values)
    else:
        ax.set_xticks([])


def _ink(rgba: tuple[float, ...]) -> str:
    """Black or white text, whichever reads on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _bar_ticks(ax: Any, values: np.ndarray) -> None:
    step = max(1, math.ceil(len(values) / 12))
    idx = np.arange(0, len(values), step)
    ax.set_xticks(idx)
    ax.set_xticklabels([_fmt(values[i]) for i in idx], fontsize=8)


def _status_panel(
    sw: _Snapshot,
    ax: Any,
    fig: Figure,
    shown: list[str],
    done: np.ndarray,
    failed: np.ndarray,
    pending: np.ndarray,
    loose: np.ndarray,
) -> None:
    """Members done of all, failed, and done without reaching the tolerance (max_iter hit)."""
    ds = sw.ds
    total = done + failed + pending
    ax.set_title('members done / failed / pending\n("not conv.": done at max_iter, tolerance not reached)', fontsize=9)
    if len(shown) == 2:
        n0, n1 = done.shape
        frac = np.where(total > 0, done / np.maximum(total, 1), np.nan)
        mesh = ax.pcolormesh(np.arange(n1 + 1), np.arange(n0 + 1), frac, cmap="Greens", vmin=0, vmax=1)
        fig.colorbar(mesh, ax=ax, label="fraction of members done")
        for i, j in zip(*np.nonzero(done == 0)):
            ax.add_patch(Rectangle((j, i), 1, 1, **MISSING))
        if n0 * n1 <= 150:
            for i, j in itertools.product(range(n0), range(n1)):
                text = (
                    f"{done[i, j]}/{total[i, j]} done"
                    + (f"\n{failed[i, j]} failed" if failed[i, j] else "")
                    + (f"\n{loose[i, j]} not conv." if loose[i, j] else "")
                )
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="tab:red" if failed[i, j] else "black",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=1),
                )
        ax.set_xlabel(sw.axis_label(shown[1]))
        ax.set_ylabel(sw.axis_label(shown[0]))
        _ticks(ax, "x", ds[shown[1]].values)
        _ticks(ax, "y", ds[shown[0]].values)
        return
    done, failed, pending, loose = (np.asarray(a).reshape(-1) for a in (done, failed, pending, loose))
    xs = np.arange(done.size)
    ax.bar(xs, done, color="tab:green", label="done")
    for k in np.flatnonzero(loose):
        ax.text(xs[k], done[k] / 2, f"{loose[k]} not\nconv.", ha="center", va="center", fontsize=7, color="white")
    ax.bar(xs, failed, bottom=done, color="tab:red", label="failed")
    ax.bar(xs, pending, bottom=done + failed, label="pending", **MISSING)
    ax.set_ylabel("members")
    ax.set_ylim(0, max(1, int(total.max(initial=0))) * 1.3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    if shown:
        ax.set_xlabel(sw.axis_label(shown[0]))
        _bar_ticks(ax, ds[shown[0]].values)
    else:
        ax.set_xticks([])


# -- entry point ----------------------------------------------------------------------------------
def make_report(
    store: str | Path | xr.Dataset,
    out_dir: str | Path,
    *,
    member: int | None = None,
    max_points: int = 12,
    members: str = "converged",
    band: str = "std",
) -> list[Path]:
    """Write the report's PNG figures of ``store`` (a path or an opened sweep dataset) in
    ``out_dir`` (created if needed) and return their paths.

    ``member``: the flat member index (as in ``members/<index>`` and the CLI) whose density
    and value function to draw, instead of the seed-mean of each parameter point.
    ``max_points``: most parameter points drawn as density heat maps (evenly spread).
    ``members``: the members the seed statistics use: "converged" (the default) or "all" done
    members, converged or not; the titles say which. ``band``: the band around the final
    densities: "std" (mean ± one standard deviation) or "quantiles" (median, 5–95 %).
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(map(repr, BANDS))}, got {band!r}")
    import dask

    # read here, with local threads: small reads, and a Dask client that may be active (its
    # workers elsewhere, with another working folder) is not needed to draw
    with dask.config.set(scheduler="threads"):
        sw = _open(store, members)
        if member is not None and not 0 <= member < sw.n:
            raise IndexError(f"member {member} is out of range: this store has {sw.n} member(s) (0 … {sw.n - 1})")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        if sw.ds.mfg.ndim == 2:
            from mfg_ensemble.analysis import report2d

            points = _points(sw, min(max_points, 6))
            files += report2d.snapshots(sw, out, points, member)
            files += report2d.animation(sw, out, points, member)
            files += report2d.evacuation(sw, out, points)
        else:
            files += _density(sw, out, member, max_points)
            files += _final_density(sw, out, band)
            files += _value_slices(sw, out, member, max_points)
        files += _convergence(sw, out)
        files += _summary(sw, out)
    return files

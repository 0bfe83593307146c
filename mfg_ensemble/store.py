"""The Zarr store of a sweep: one labelled xarray Dataset, written member by member.

Layout (Zarr v3, through xarray):

* dimensions: the sweep axes (in order), then ``t`` and ``x`` — or ``t_index`` and
  ``x_index`` when an axis changes the grid (nx, nt, lo, hi, T, bc), with the coordinates
  ``t`` and ``x`` then given per member and padded with NaN — and ``iteration``;
* ``u``, ``m`` (axes…, t, x); ``residual``, ``residual_u``, ``residual_m`` (axes…, iteration),
  NaN past a member's last iteration; ``status`` (0 pending, 1 done, 2 failed),
  ``converged``, ``iterations``, ``wall_time`` (axes…);
* one chunk per member along the axes, so no two members ever write the same chunk;
* a member's reason, error and traceback in the attributes of the group ``members/<index>``.

The store is created from a template before any member runs: the metadata, the coordinates
and ``status = 0`` are written once, the big variables are left unwritten (Zarr reads
missing chunks as the fill value, NaN). A member writes its region, then its log group, then
``status`` last: the status is the commit marker (a chunk's existence is not — Zarr v3
skips chunks that equal the fill value).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from mfg_ensemble.solver import versions
from mfg_ensemble.sweep import ConfigError, Sweep

PENDING, DONE, FAILED = 0, 1, 2
STATUS_ATTRS = {
    "long_name": "member status",
    "units": "1",
    "flag_values": [PENDING, DONE, FAILED],
    "flag_meanings": "pending done failed",
}
LOG_GROUP = "members"
_ZARR = dict(consolidated=False, zarr_format=3)


class StoreMismatch(ValueError):
    """The store at a path was made from a different sweep."""


def check_store_path(store: str | Path, source: str) -> Path:
    """The store path, or ``ConfigError`` when it cannot be a store (an existing file, no parent)."""
    path = Path(store)
    if path.exists() and not path.is_dir():
        raise ConfigError(source, [("store", f"{path} exists and is a file, not a Zarr store (a directory)")])
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ConfigError(source, [("store", f"the folder {parent} does not exist")])
    return path


def grid_dims(sweep: Sweep) -> tuple[str, str]:
    """The names of the time and space dimensions: (t, x), or (t_index, x_index) when an axis
    changes the grid."""
    return ("t_index", "x_index") if sweep.varies_grid() else ("t", "x")


def _sizes(sweep: Sweep) -> tuple[int, int, int]:
    """Largest nt, nx and max_iter over the members."""
    if not sweep.varies_grid() and not any("max_iter" in a.fields for a in sweep.axes):
        m = sweep.member(0)
        return m.problem.nt, m.problem.nx, m.solver.max_iter
    nt = nx = it = 0
    for m in sweep.members():
        nt, nx, it = max(nt, m.problem.nt), max(nx, m.problem.nx), max(it, m.solver.max_iter)
    return nt, nx, it


def _labels(values: list[Any]) -> np.ndarray:
    """Coordinate values; integers stay exact (seeds need all 64 bits)."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.uint64 if max(values) > np.iinfo(np.int64).max else np.int64)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=object)  # variable-length strings (Zarr v3 has no fixed-width spec)
    return np.asarray(values)


def template(sweep: Sweep) -> tuple[xr.Dataset, dict[str, Any]]:
    """The empty dataset of a sweep (lazy dask arrays of NaN for the data) and its encoding."""
    import dask.array as da

    axes = [a.name for a in sweep.axes]
    shape = sweep.shape
    tdim, xdim = grid_dims(sweep)
    nt, nx, n_iter = _sizes(sweep)
    one = (1,) * len(axes)

    def lazy(extra: tuple[int, ...]) -> Any:
        return da.full(shape + extra, np.nan, chunks=one + extra, dtype=np.float64)

    base = sweep.base_problem
    coords: dict[str, Any] = {}
    for a in sweep.axes:
        coords[a.name] = (a.name, _labels(list(a.coords)), {"long_name": a.name, "fields": list(a.fields)})
        if len(a.fields) > 1 or a.coords != tuple(v[0] for v in a.values):
            for k, field in enumerate(a.fields):
                values = [v[k] for v in a.values]
                if not all(isinstance(v, (int, float, str)) for v in values):
                    continue  # tables (families) along an axis: described by the sweep text only
                name = field.replace(".", "_") if field.replace(".", "_") != a.name else f"{a.name}_value"
                coords[name] = (a.name, _labels(values), {"long_name": field})
    coords["iteration"] = ("iteration", np.arange(1, n_iter + 1), {"long_name": "Picard iteration", "units": "1"})
    if tdim == "t":
        coords["t"] = ("t", base.times(), {"units": "time", "long_name": "time"})
        coords["x"] = ("x", base.grid(), {"units": "length", "long_name": "position"})
    data: dict[str, Any] = {
        "u": (axes + [tdim, xdim], lazy((nt, nx)), {"units": "cost", "long_name": "value function u(t, x)"}),
        "m": (axes + [tdim, xdim], lazy((nt, nx)), {"units": "1/length", "long_name": "density of players m(t, x)"}),
        "residual": (axes + ["iteration"], lazy((n_iter,)), {"units": "1", "long_name": "max of the relative L2 residuals"}),
        "residual_u": (axes + ["iteration"], lazy((n_iter,)), {"units": "1", "long_name": "relative L2 change of u"}),
        "residual_m": (axes + ["iteration"], lazy((n_iter,)), {"units": "1", "long_name": "relative L2 residual G(m) - m"}),
        "status": (axes, np.zeros(shape, np.int8), STATUS_ATTRS),
        "converged": (axes, np.zeros(shape, np.int8), {"units": "1", "long_name": "fixed point reached (1) or not (0)"}),
        "iterations": (axes, np.zeros(shape, np.int32), {"units": "1", "long_name": "Picard iterations"}),
        "wall_time": (axes, lazy(()), {"units": "s", "long_name": "wall time of the solve"}),
    }
    if tdim != "t":
        data["t"] = (axes + [tdim], lazy((nt,)), {"units": "time", "long_name": "time"})
        data["x"] = (axes + [xdim], lazy((nx,)), {"units": "length", "long_name": "position"})
    ds = xr.Dataset(data, coords=coords, attrs=provenance(sweep))
    if tdim != "t":
        ds = ds.set_coords(["t", "x"])
    encoding = {name: {"chunks": one + ds[name].shape[len(axes):]} for name in ds.data_vars}
    for name in ("t", "x"):
        if tdim != "t":
            encoding[name] = {"chunks": one + ds[name].shape[len(axes):]}
    return ds, encoding


def provenance(sweep: Sweep) -> dict[str, Any]:
    """Attributes of the store: what was run, with which software."""
    attrs: dict[str, Any] = {
        "title": f"mfg_ensemble sweep {sweep.name or sweep.source}",
        "mfg_ensemble.fingerprint": sweep.fingerprint,
        "mfg_ensemble.sweep_source": sweep.source,
        "mfg_ensemble.sweep_text": sweep.text,
        "mfg_ensemble.members": len(sweep),
        "mfg_ensemble.axes": [a.name for a in sweep.axes],
        **{f"problem.{k}": v for k, v in sweep.base_problem.to_attrs().items()},
        **{f"solver.{k}": (v if isinstance(v, (int, float, str)) else repr(v)) for k, v in sweep.solver_table.items()},
        **versions(),
    }
    for name in ("dask", "distributed", "zarr", "pydantic"):
        try:
            attrs[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            attrs[f"version.{name}"] = "unknown"
    return attrs


def create(sweep: Sweep, store: str | Path) -> None:
    """Write the template of ``sweep`` at ``store`` (metadata, coordinates, status = pending)."""
    ds, encoding = template(sweep)
    ds.to_zarr(store, mode="w-", compute=False, encoding=encoding, **_ZARR)
    zarr.open_group(str(store), path=LOG_GROUP, mode="a", zarr_format=3)
    _consolidate(store)


def _consolidate(store: str | Path) -> None:
    """Consolidate the metadata (arrays never change after creation; only chunks are written
    later), so that ``xr.open_zarr(store)`` opens it at once and without a warning. Zarr warns
    that consolidated metadata is not in the v3 spec yet; readers fall back without it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(str(store))


def prepare(sweep: Sweep, store: str | Path, *, resume: bool = True, overwrite: bool = False) -> Path:
    """Make ``store`` ready for ``sweep``: create it, or check that an existing one is the same
    sweep's (``StoreMismatch`` otherwise, unless ``overwrite``)."""
    path = check_store_path(store, sweep.source)
    if path.exists() and overwrite:
        shutil.rmtree(path)
    if path.exists() and any(path.iterdir()):
        found = read_attrs(path)["mfg_ensemble.fingerprint"]
        if found != sweep.fingerprint:
            raise StoreMismatch(
                f"{path} holds a different sweep (fingerprint {str(found)[:12]}…, this sweep's is "
                f"{sweep.fingerprint[:12]}…): choose another store or overwrite it (--overwrite)"
            )
        if not resume:
            raise StoreMismatch(f"{path} exists; resume=True continues it, overwrite=True starts again")
        return path
    create(sweep, path)
    return path


def read_attrs(store: str | Path) -> dict[str, Any]:
    """The store's attributes; ``StoreMismatch`` if it is not an mfg_ensemble store."""
    try:
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception as exc:  # not a Zarr store at all
        raise StoreMismatch(f"{store} is not an mfg_ensemble store: {exc}") from None
    if "mfg_ensemble.fingerprint" not in attrs:
        raise StoreMismatch(f"{store} is not an mfg_ensemble store (no mfg_ensemble.fingerprint attribute)")
    return attrs


def update_attrs(store: str | Path, attrs: dict[str, Any]) -> None:
    """Add run-time attributes (no member may be writing: call before submitting)."""
    zarr.open_group(str(store), mode="r+").attrs.update(attrs)
    _consolidate(store)


def status(store: str | Path) -> np.ndarray:
    """The status array (axes shape): PENDING, DONE or FAILED per member."""
    return np.asarray(zarr.open_array(str(store), path="status", mode="r")[...])



def write_member(
    store: str | Path,
    axes: list[str],
    position: tuple[int, ...],
    tdim: str,
    xdim: str,
    result: xr.Dataset | None,
    outcome: dict[str, Any],
) -> None:
    """Write one member: its data (if any), its log group, then its status (the commit marker)."""
    index_region = {name: slice(i, i + 1) for name, i in zip(axes, position)}
    lead = (1,) * len(axes)
    if result is not None:
        sizes = zarr.open_group(str(store), mode="r")
        nt, nx = sizes["u"].shape[-2:]
        n_iter = sizes["residual"].shape[-1]

        def pad(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            out = np.full(shape, np.nan)
            out[tuple(slice(0, n) for n in values.shape)] = values
            return out.reshape(lead + shape)

        data = {
            "u": (axes + [tdim, xdim], pad(result.u.values, (nt, nx))),
            "m": (axes + [tdim, xdim], pad(result.m.values, (nt, nx))),
            "wall_time": (axes, np.full(lead, outcome["wall_time"])),
        }
        for name in ("residual", "residual_u", "residual_m"):
            data[name] = (axes + ["iteration"], pad(result[name].values[:n_iter], (n_iter,)))
        if tdim != "t":
            data["t"] = (axes + [tdim], pad(result.t.values, (nt,)))
            data["x"] = (axes + [xdim], pad(result.x.values, (nx,)))
        xr.Dataset(data).to_zarr(store, region=index_region, mode="r+", **_ZARR)
    log = zarr.open_group(str(store), path=f"{LOG_GROUP}/{outcome['index']}", mode="w", zarr_format=3)
    log.attrs.update(json.loads(json.dumps(outcome, default=str)))
    marks = {
        "converged": (axes, np.full(lead, int(outcome.get("converged", 0)), np.int8)),
        "iterations": (axes, np.full(lead, int(outcome.get("iterations", 0)), np.int32)),
    }
    xr.Dataset(marks).to_zarr(store, region=index_region, mode="r+", **_ZARR)
    code = DONE if outcome["status"] == "done" else FAILED
    xr.Dataset({"status": (axes, np.full(lead, code, np.int8))}).to_zarr(store, region=index_region, mode="r+", **_ZARR)


def member_log(store: str | Path, index: int) -> dict[str, Any]:
    """What was recorded of member ``index`` (reason, error, traceback, worker), or {}."""
    try:
        return dict(zarr.open_group(str(store), path=f"{LOG_GROUP}/{index}", mode="r").attrs)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return {}


def open_sweep(store: str | Path, **kwargs: Any) -> xr.Dataset:
    """The sweep's dataset (lazy, dask-backed): dims are the axes plus t and x (and iteration)."""
    path = Path(store)
    if not path.is_dir():
        raise FileNotFoundError(f"no store at {path}")
    return xr.open_zarr(path, **kwargs)


def summary(store: str | Path) -> dict[str, Any]:
    """Counts of pending, done (and of those, not converged within max_iter) and failed
    members, and the failed members' errors."""
    st = status(store)
    flat = st.ravel()
    failed = [int(i) for i in np.flatnonzero(flat == FAILED)]
    converged = np.asarray(zarr.open_array(str(store), path="converged", mode="r")[...]).ravel()
    log = {i: member_log(store, i) for i in failed}
    return {
        "members": int(flat.size),
        "done": int((flat == DONE).sum()),
        "not converged": int(((flat == DONE) & (converged == 0)).sum()),
        "failed": len(failed),
        "pending": int((flat == PENDING).sum()),
        "errors": {i: entry.get("error") or entry.get("reason") for i, entry in log.items()},
    }


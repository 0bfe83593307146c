"""The Zarr store of a sweep: one labelled xarray Dataset, written member by member.

:class:`SweepStore` is the one object that reads and writes it; the layout (dims, variables,
units, attrs) is :mod:`mfg_ensemble.schema`'s. On disk (Zarr v3, through xarray):

* dimensions: the sweep axes (in order), then ``t`` and ``x`` — or ``t_index`` and
  ``x_index`` when an axis changes the grid (nx, nt, lo, hi, T, bc), with the coordinates
  ``t`` and ``x`` then given per member and padded with NaN — and ``iteration``;
* ``u``, ``m`` (axes…, t, x); ``residual``, ``residual_u``, ``residual_m`` (axes…, iteration),
  NaN past a member's last iteration; ``status`` (0 pending, 1 done, 2 failed),
  ``converged``, ``iterations``, ``wall_time`` (axes…);
* a member's reason, error, traceback and worker in the attributes of the group
  ``members/<index>``.

Invariants:

* **one writer per chunk** (Zarr has no locks): a member's large arrays (u, m; t and x on a
  padded store) are one chunk each, written by the worker that solved it; the small
  per-member values (residual histories, status, converged, iterations, wall_time, digest)
  are chunked in blocks of up to 4096 members and written by the client alone, in batches —
  so the store holds about two files per member, not ten;
* **the status is the commit marker**: the store is created from a template before any
  member runs (metadata, coordinates and ``status = 0`` written once, the big variables left
  unwritten: Zarr reads missing chunks as the fill value, NaN); a worker writes the member's
  large arrays, then the client (:meth:`SweepStore.commit`) its small values and, for a failed
  member, its log group, then ``status`` last. A chunk's existence is no marker — Zarr v3
  skips chunks that equal the fill value;
* **the metadata never changes after creation** (only chunks and run attrs are written), so
  it is consolidated once and ``xr.open_zarr`` opens the store at once;
* **a store is whole or absent**: it is built in a hidden folder beside the target and renamed
  into place, so a run killed while creating it leaves no half store under the final name;
* **one run at a time**: a run holds ``.<store name>.lock`` beside the store (its host and
  pid); a second run is
  refused naming the holder, and a lock whose process is gone (same host) is taken over;
* **a done member can be checked**: the array ``members/digest`` records a SHA-256 of its values
  (:meth:`SweepStore.verify` recomputes it: a lost chunk or a flipped bit shows), and every
  chunk carries Zarr's CRC32C checksum, so a corrupted chunk fails to decode;
* **``overwrite`` deletes only a store**: a folder that carries this package's fingerprint
  and holds nothing but the store's own entries, never the working folder or a parent of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from mfg_ensemble import schema
from mfg_ensemble.ensemble.sweep import Sweep
from mfg_ensemble.errors import ConfigError, StoreLocked, StoreMismatch
from mfg_ensemble.schema import DONE, FAILED, PENDING

_ZARR = dict(consolidated=False, zarr_format=3)
COMPRESSORS = (ZstdCodec(), Crc32cCodec())
"""Every member chunk: zstd, then a CRC32C checksum of the compressed bytes."""
SMALL = (*schema.HISTORY, "wall_time", "converged", "iterations")
"""A member's small values: committed by the client, in blocks of members per chunk."""
DIGESTED = (*schema.FIELDS, *SMALL)
"""The values of a member its digest covers (and its t and x on a padded store)."""
STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})
"""OSErrors of the file system the store lives on (full, read-only, forbidden): the user's to
fix; a run stops at the first, with one line, instead of failing every member."""
FLAT_KEYS = {"name": "default", "separator": "."}
"""Chunk files named ``u/c.3.1.0.0``: one folder per variable, not one per chunk index."""
BLOCK = 4096
"""Most members in one chunk of a small per-member variable."""
EXTENDING = "mfg_ensemble.extending"
"""Attr present while :meth:`SweepStore.extend` runs: its plan (old shape, new shape, log moves)."""
ANALYSIS_CHUNK = 128 * 2**20
"""Bytes of u or m in one dask chunk of a store opened for analysis."""

PROVENANCE_PACKAGES = ("mfg_ensemble", "numpy", "xarray", "dask", "distributed", "zarr", "pydantic")


def default_path(sweep: Sweep) -> Path:
    """Where a sweep's store goes when no path is given: ``<name>.zarr`` in the working folder."""
    return Path(f"{sweep.name or 'sweep'}.zarr")


@dataclass(frozen=True)
class Layout:
    """The shape of a store: axis names and sizes, the grid dims ((t, x), 2-D (t, y, x)) and the
    largest nt, nx (ny) and iteration count over the members (smaller members are padded with NaN)."""

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    tdim: str
    xdim: str
    nt: int
    nx: int
    n_iter: int
    ydim: str | None = None
    """The y dim of a 2-D store (None: 1-D)."""
    ny: int = 0

    @classmethod
    def of(cls, sweep: Sweep) -> Layout:
        members = [sweep.member(0)]
        if sweep.varies_grid() or any("max_iter" in a.fields for a in sweep.axes):
            members = list(sweep.members())
        nt = max(m.problem.nt for m in members)
        nx = max(m.problem.nx for m in members)
        ny = max(getattr(m.problem, "ny", 0) for m in members)
        n_iter = max(m.solver.max_iter for m in members)
        ndim = sweep.base_problem.ndim
        dims = schema.grid_dims(sweep.varies_grid(), ndim)
        ydim = dims[1] if ndim == 2 else None
        return cls(tuple(a.name for a in sweep.axes), sweep.shape, dims[0], dims[-1], nt, nx, n_iter, ydim, ny)

    @property
    def ndim(self) -> int:
        """Space dimensions of the store's games."""
        return 1 if self.ydim is None else 2

    @property
    def padded(self) -> bool:
        """Whether the grid varies along an axis (per-member coordinates, NaN padding)."""
        return self.tdim != schema.T

    @property
    def grid_dims(self) -> tuple[str, ...]:
        """The dims of u and m after the axes."""
        return (self.tdim, self.xdim) if self.ydim is None else (self.tdim, self.ydim, self.xdim)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (self.nt, self.nx) if self.ydim is None else (self.nt, self.ny, self.nx)

    @property
    def member_coords(self) -> dict[str, tuple[str, ...]]:
        """The per-member coordinates of a padded store, by name: their dims after the axes."""
        if not self.padded:
            return {}
        out = {schema.T: (self.tdim,), schema.X: (self.xdim,)}
        if self.ydim is not None:
            out |= {schema.Y: (self.ydim,), schema.NODES: (self.ydim, self.xdim)}
        return out

    def member_shape(self, name: str) -> tuple[int, ...]:
        """The shape of one member's large array ``name`` (u, m, exited, per-member coordinates)."""
        sizes = {self.tdim: self.nt, self.xdim: self.nx, self.ydim: self.ny}
        if name in schema.FIELDS:
            return self.grid_shape
        if name == schema.EXITED:
            return (self.nt,)
        return tuple(sizes[d] for d in self.member_coords[name])

    @property
    def large(self) -> tuple[str, ...]:
        """The arrays of one chunk per member, written by the worker that solved it."""
        return (*schema.FIELDS, *((schema.EXITED,) if self.ndim == 2 else ()), *self.member_coords)

    @property
    def block(self) -> tuple[int, ...]:
        """The chunk of the small per-member variables along the axes: up to BLOCK members,
        filled from the last axis (the members that finish together are neighbours)."""
        chunks: list[int] = []
        room = BLOCK
        for n in reversed(self.shape):
            chunks.append(max(1, min(n, room)))
            room = max(1, room // chunks[-1])
        return tuple(reversed(chunks))


def _labels(values: list[Any]) -> np.ndarray:
    """Coordinate values; integers stay exact (seeds need all 64 bits)."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.uint64 if max(values) > np.iinfo(np.int64).max else np.int64)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=object)  # variable-length strings (Zarr v3 has no fixed-width spec)
    return np.asarray(values)


def _axis_coords(sweep: Sweep) -> dict[str, Any]:
    """The label of each axis position, and the fields' values along zip and renamed axes."""
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
    return coords


def provenance(sweep: Sweep) -> dict[str, Any]:
    """Attributes of the store: what was run (the sweep, its base problem and solver options),
    with which software."""
    return {
        "title": f"mfg_ensemble sweep {sweep.name or sweep.source}",
        "Conventions": schema.CONVENTIONS,
        "history": _history(None, f"created for {len(sweep)} members of {sweep.source}"),
        schema.FINGERPRINT: sweep.fingerprint,
        schema.SWEEP_SOURCE: sweep.source,
        schema.SWEEP_TEXT: sweep.text,
        schema.MEMBERS: len(sweep),
        schema.AXES: [a.name for a in sweep.axes],
        **sweep.base_problem.to_attrs(),
        **sweep.base_solver.to_attrs(),
        **schema.versions(PROVENANCE_PACKAGES),
    }


def _history(previous: str | None, what: str) -> str:
    """The CF ``history`` attribute with a line for ``what`` added: one line per change, newest
    first (as NCO writes it), each starting with a UTC time stamp and the program."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} mfg_ensemble {schema.versions()[schema.VERSION + 'mfg_ensemble']}: {what}"
    return f"{line}\n{previous}" if previous else line


def template(sweep: Sweep, layout: Layout) -> tuple[xr.Dataset, dict[str, Any]]:
    """The empty dataset of a sweep (lazy dask arrays of NaN for the data) and its encoding:
    one member per chunk for the large arrays, blocks of members for the small ones."""
    import dask.array as da

    axes, one, block = list(layout.axes), (1,) * len(layout.axes), layout.block

    def lazy(lead: tuple[int, ...], extra: tuple[int, ...], fill: Any = np.nan, dtype: Any = np.float64) -> Any:
        return da.full(layout.shape + extra, fill, chunks=lead + extra, dtype=dtype)

    base = sweep.base_problem
    coords = _axis_coords(sweep)
    coords[schema.ITERATION] = (schema.ITERATION, np.arange(1, layout.n_iter + 1), schema.attrs(schema.ITERATION))
    if not layout.padded:
        coords[schema.T] = (schema.T, base.times(), schema.attrs(schema.T))
        if layout.ndim == 2:
            x, y = base.grid()
            coords[schema.X] = (schema.X, x, schema.attrs(schema.X))
            coords[schema.Y] = (schema.Y, y, schema.attrs(schema.Y))
            nodes = base.nodes().astype(np.int8)
            coords[schema.NODES] = ((schema.Y, schema.X), nodes, schema.attrs(schema.NODES))
        else:
            coords[schema.X] = (schema.X, base.grid(), schema.attrs(schema.X))
    grid = axes + list(layout.grid_dims)
    data: dict[str, Any] = {
        name: (grid, lazy(one, layout.grid_shape), schema.field_attrs(name, layout.ndim)) for name in schema.FIELDS
    }
    if layout.ndim == 2:
        data[schema.EXITED] = (axes + [layout.tdim], lazy(one, (layout.nt,)), schema.attrs(schema.EXITED))
    for name in schema.HISTORY:
        data[name] = (axes + [schema.ITERATION], lazy(block, (layout.n_iter,)), schema.attrs(name))
    zeros = {"status": np.int8, "converged": np.int8, "iterations": np.int32}
    for name in schema.MEMBER:
        values = np.zeros(layout.shape, zeros[name]) if name in zeros else lazy(block, ())
        data[name] = (axes, values, schema.attrs(name))
    for name, dims in layout.member_coords.items():
        shape = layout.member_shape(name)
        values = lazy(one, shape, -1, np.int8) if name == schema.NODES else lazy(one, shape)
        data[name] = (axes + list(dims), values, schema.attrs(name))
    ds = xr.Dataset(data, coords=coords, attrs=provenance(sweep))
    encoding = {
        name: {
            "chunks": (one if name in layout.large else block) + ds[name].shape[len(axes) :],
            "compressors": COMPRESSORS,
            "chunk_key_encoding": FLAT_KEYS,
        }
        for name in ds.data_vars
    }
    if layout.member_coords:
        ds = ds.set_coords(list(layout.member_coords))
    return ds, encoding


def _consolidate(path: Path) -> None:
    """Consolidate the metadata, so that ``xr.open_zarr(store)`` opens it at once and without a
    warning. Zarr warns that consolidated metadata is not in the v3 spec yet; readers fall back
    without it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(str(path))


class SweepStore:
    """The store of one sweep at ``path``: its layout and every read and write of it.

    ``SweepStore(path)`` opens an existing store (its layout read from disk when first
    needed); :meth:`for_sweep` is the store a sweep will write, and :meth:`prepare` creates
    it or checks that it is that sweep's. Picklable: a worker gets it with its member.
    """

    def __init__(self, path: str | Path, layout: Layout | None = None) -> None:
        self.path = Path(path)
        self._layout = layout

    def __repr__(self) -> str:
        return f"SweepStore({str(self.path)!r})"

    @classmethod
    def for_sweep(cls, sweep: Sweep, path: str | Path | None = None) -> SweepStore:
        """The store of ``sweep`` at ``path`` (default: :func:`default_path`); ``ConfigError``
        when the path cannot be a store (an existing file, a missing parent folder)."""
        given = Path(path) if path is not None else default_path(sweep)
        path = given.absolute()  # the workers may have another working folder
        if path.exists() and not path.is_dir():
            raise ConfigError(
                sweep.source, [("store", f"{given} exists and is a file, not a Zarr store (a directory)")]
            )
        parent = path.absolute().parent
        if not parent.is_dir():
            raise ConfigError(sweep.source, [("store", f"the folder {parent} does not exist")])
        return cls(path, Layout.of(sweep))

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = self._read_layout()
        return self._layout

    def _read_layout(self) -> Layout:
        group = zarr.open_group(str(self.path), mode="r")
        axes = tuple(self.attrs()[schema.AXES])
        u = group["u"]
        dims = tuple(u.metadata.dimension_names or ())
        n_iter = group["residual"].shape[-1]
        if len(u.shape) - len(axes) == 3:  # a 2-D store: (axes…, t, y, x)
            tdim, ydim, xdim = dims[-3:]
            nt, ny, nx = u.shape[-3:]
            return Layout(axes, tuple(u.shape[:-3]), tdim, xdim, nt, nx, n_iter, ydim, ny)
        tdim, xdim = dims[-2:] if len(dims) >= 2 else (schema.T, schema.X)
        return Layout(axes, tuple(u.shape[:-2]), tdim, xdim, u.shape[-2], u.shape[-1], n_iter)

    # -- creation ---------------------------------------------------------------------------
    def prepare(
        self, sweep: Sweep, *, resume: bool = True, overwrite: bool = False, extend: bool = False
    ) -> SweepStore:
        """Make the store ready for ``sweep``: create it, or check that the existing one is the
        same sweep's (``StoreMismatch`` otherwise, unless ``overwrite`` — which removes only a
        folder that :meth:`check_removable` accepts). ``extend``: a store whose sweep ``sweep``
        extends (:meth:`extends`) is grown to hold it (:meth:`extend`)."""
        path = self.path
        if path.exists() and overwrite:
            self.check_removable()
            shutil.rmtree(path)
        if path.exists() and any(path.iterdir()):
            if extend and (EXTENDING in self.attrs() or self.extends(sweep)):
                self.extend(sweep)
            self.check_matches(sweep)
            if not resume:
                raise StoreMismatch(f"{path} exists; resume=True continues it, overwrite=True starts again")
            return self
        self._create(sweep)
        return self

    def check_matches(self, sweep: Sweep) -> None:
        """``StoreMismatch`` unless this store was made from ``sweep``, with its axes in order
        (saying so when ``sweep`` extends it, or when an extension was interrupted)."""
        attrs = self.attrs()
        if EXTENDING in attrs:
            raise StoreMismatch(
                f"{self.path}: an extension to shape {tuple(attrs[EXTENDING]['to'])} was interrupted; "
                "run the extending sweep again with extend=True (--extend) to finish it"
            )
        found = attrs[schema.FINGERPRINT]
        same = found == sweep.fingerprint or (
            found == sweep.fingerprint_0_1 and list(attrs.get(schema.AXES, [])) == [a.name for a in sweep.axes]
        )
        if same:
            return
        if self.extends(sweep):
            raise StoreMismatch(
                f"{self.path} holds the first {'×'.join(map(str, self._read_layout().shape))} members of this sweep "
                f"({'×'.join(map(str, sweep.shape))}): extend it with extend=True (--extend), which keeps the "
                "members already done, or choose another store"
            )
        raise StoreMismatch(
            f"{self.path} holds a different sweep (fingerprint {str(found)[:12]}…, this sweep's is "
            f"{sweep.fingerprint[:12]}…; a change of the axes' order counts): choose another store "
            "or overwrite it (--overwrite)"
        )

    def extends(self, sweep: Sweep) -> bool:
        """Whether ``sweep`` extends this store's sweep: the same axes in the same order, each
        axis's values (or counted seeds) beginning with the store's, and the same base problem
        and solver options — so every member in the store is the member at the same position
        of ``sweep``."""
        lay, attrs = self._read_layout(), self.attrs()
        if list(lay.axes) != [a.name for a in sweep.axes] or any(n > len(a) for n, a in zip(lay.shape, sweep.axes)):
            return False
        if lay.shape == sweep.shape:
            return False  # the same size: the same sweep or another one, not an extension
        cut = sweep.prefix(lay.shape)
        return attrs[schema.FINGERPRINT] in (cut.fingerprint, cut.fingerprint_0_1)

    def extend(self, sweep: Sweep) -> None:
        """Grow the store in place to hold ``sweep``, which :meth:`extends` its sweep: the
        arrays grow at the end of their axes (the members already in the store keep their
        chunks and are not recomputed; the new ones are pending), failed members' logs move to
        their new flat indices, and the attrs become ``sweep``'s. Holds the store's lock.

        The padded sizes (nt, nx on a store whose axes change the grid) and the iteration
        dimension cannot grow: ``StoreMismatch`` saying so when ``sweep`` needs more.
        The plan (old shape, new shape, log moves) is written to the attrs first and removed
        last: an interrupted extension is finished by extending again with the same sweep.
        """
        with self.lock():
            group = zarr.open_group(str(self.path), mode="r+")
            plan = group.attrs.get(EXTENDING)
            disk = self._read_layout()
            old = disk if plan is None else dataclasses.replace(disk, shape=tuple(plan["from"]))
            if plan is not None and tuple(plan["to"]) != sweep.shape:
                raise StoreMismatch(
                    f"{self.path}: an extension to shape {tuple(plan['to'])} was interrupted; "
                    "finish it with that sweep first"
                )
            self._check_room(old, Layout.of(sweep))
            if plan is None:
                plan = {
                    "from": list(old.shape),
                    "to": list(sweep.shape),
                    "moves": self._log_moves(old.shape, sweep.shape),
                }
                group.attrs[EXTENDING] = plan
            self._grow(group, old.axes, sweep.shape)
            for name, (_, values, _) in _axis_coords(sweep).items():
                _write_coordinate(group, name, values)
            logs = self.path / schema.LOG_GROUP
            for source, target in plan["moves"]:  # largest index first: a target is never a log still to move
                if (logs / str(source)).exists() and not (logs / str(target)).exists():
                    os.rename(logs / str(source), logs / str(target))
            attrs = {k: v for k, v in provenance(sweep).items() if k != "title"}
            attrs["history"] = _history(group.attrs.get("history"), f"extended from {old.shape} to {sweep.shape}")
            group.attrs.update(attrs)
            del group.attrs[EXTENDING]
            _consolidate(self.path)
            self._layout = dataclasses.replace(old, shape=sweep.shape)

    def _check_room(self, old: Layout, want: Layout) -> None:
        """``StoreMismatch`` unless a sweep of layout ``want`` fits the store's (t, x) and
        iteration dims (they cannot grow: the member chunks hold them whole)."""
        grows = [
            f"{what} = {need} (the store holds {have})"
            for what, need, have in (
                ("nt", want.nt, old.nt),
                ("nx", want.nx, old.nx),
                ("ny", want.ny, old.ny),
                ("max_iter", want.n_iter, old.n_iter),
            )
            if need > have
        ]
        if want.tdim != old.tdim or grows:
            why = "; ".join(grows) or "its new members' grids differ from the store's one grid"
            raise StoreMismatch(
                f"cannot extend {self.path} to this sweep: {why}; write it to a new store or --overwrite"
            )

    def _grow(self, group: Any, axes: tuple[str, ...], shape: tuple[int, ...]) -> None:
        """Resize every array whose leading dims are axes (and the digests) to ``shape`` along
        them; Zarr keeps the chunks already written where they are (growth at the end only)."""
        sizes = dict(zip(axes, shape))
        digest = self._digest_array("r+")
        arrays = [a for _, a in group.arrays()] + ([digest] if digest is not None else [])
        for array in arrays:
            dims = axes if array is digest else tuple(array.metadata.dimension_names or ())
            if not dims or dims[0] not in sizes:
                continue
            new = tuple(sizes.get(d, n) for d, n in zip(dims, array.shape)) + array.shape[len(dims) :]
            if new != array.shape:
                array.resize(new)

    def _log_moves(self, old: tuple[int, ...], new: tuple[int, ...]) -> list[list[int]]:
        """(old flat index, new flat index) of every member log, largest first: a member keeps
        its position when the store grows, but its flat index changes when an inner axis grows."""
        logs = self.path / schema.LOG_GROUP
        indices = sorted((int(p.name) for p in logs.iterdir() if p.name.isdigit()), reverse=True)
        return [[i, int(np.ravel_multi_index(np.unravel_index(i, old), new))] for i in indices]

    def check_removable(self) -> None:
        """``StoreMismatch`` (saying why) unless the folder may be deleted: an mfg_ensemble store
        (its fingerprint attr) holding only the store's own entries, and neither the working
        folder nor one of its parents."""
        path, cwd = self.path.resolve(), Path.cwd().resolve()
        if path == cwd or path in cwd.parents:
            raise StoreMismatch(f"refusing to overwrite {self.path}: it is the working folder or one of its parents")
        if not path.is_dir():
            raise StoreMismatch(f"refusing to overwrite {self.path}: not a folder")
        self.attrs()  # StoreMismatch if it is not an mfg_ensemble store
        own = {"zarr.json", schema.LOG_GROUP, *zarr.open_group(str(path), mode="r").array_keys()}
        foreign = sorted(p.name for p in path.iterdir() if p.name not in own)
        if foreign:
            shown = ", ".join(foreign[:5])
            raise StoreMismatch(
                f"refusing to overwrite {self.path}: it holds entries that are not the store's ({shown})"
            )

    def _create(self, sweep: Sweep) -> None:
        """Write the template of ``sweep`` (metadata, coordinates, status = pending) in a hidden
        folder beside the target, then rename it into place: whole or absent."""
        building = self.path.with_name(f".{self.path.name}.creating-{uuid.uuid4().hex[:8]}")
        try:
            ds, encoding = template(sweep, self.layout)
            ds.to_zarr(building, mode="w-", compute=False, encoding=encoding, **_ZARR)
            logs = zarr.open_group(str(building), path=schema.LOG_GROUP, mode="a", zarr_format=3)
            lay = self.layout
            logs.create_array(  # beside the logs, out of the dataset xarray opens
                schema.DIGEST,
                shape=lay.shape + (32,),
                chunks=lay.block + (32,),
                dtype=np.uint8,
                fill_value=0,
                compressors=COMPRESSORS,
                chunk_key_encoding=FLAT_KEYS,
                attributes=schema.attrs(schema.DIGEST),
            )
            _consolidate(building)
            os.replace(building, self.path)  # atomic; replaces an empty folder, fails on a full one
        finally:
            shutil.rmtree(building, ignore_errors=True)

    @property
    def lock_path(self) -> Path:
        """The file a run holds while it writes the store (JSON: host, pid): ``.<name>.lock``
        beside the store (inside it, Zarr would warn about a foreign object)."""
        return self.path.with_name(f".{self.path.name}.lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's lock while the block runs; ``StoreLocked`` naming the holder if
        another live run has it. A lock left by a process that no longer runs on this host is
        taken over."""
        lock = self.lock_path
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                    lock.unlink(missing_ok=True)  # stale: its run was killed
                    continue
                raise StoreLocked(
                    f"{self.path} is in use by another run (host {holder.get('host')}, pid {holder.get('pid')}); "
                    f"wait for it, or remove {lock} if that run is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        try:
            yield
        finally:
            if _read_lock(lock) == me:
                lock.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """The store's attributes; ``StoreMismatch`` if it is not an mfg_ensemble store."""
        try:
            attrs = dict(zarr.open_group(str(self.path), mode="r").attrs)
        except Exception as exc:  # not a Zarr store at all
            raise StoreMismatch(f"{self.path} is not an mfg_ensemble store: {exc}") from None
        if schema.FINGERPRINT not in attrs:
            raise StoreMismatch(f"{self.path} is not an mfg_ensemble store (no {schema.FINGERPRINT} attribute)")
        return attrs

    def status(self) -> np.ndarray:
        """The status array (axes shape): PENDING, DONE or FAILED per member."""
        return np.asarray(zarr.open_array(str(self.path), path="status", mode="r")[...])

    def member_log(self, index: int) -> dict[str, Any]:
        """What was recorded of member ``index`` (reason, error, traceback, worker), or {}."""
        try:
            return dict(zarr.open_group(str(self.path), path=f"{schema.LOG_GROUP}/{index}", mode="r").attrs)
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            return {}

    def summary(self) -> dict[str, Any]:
        """Counts of pending, done (and of those, not converged within max_iter) and failed
        members, and the failed members' errors."""
        flat = self.status().ravel()
        failed = [int(i) for i in np.flatnonzero(flat == FAILED)]
        converged = np.asarray(zarr.open_array(str(self.path), path="converged", mode="r")[...]).ravel()
        log = {i: self.member_log(i) for i in failed}
        return {
            "members": int(flat.size),
            "done": int((flat == DONE).sum()),
            "not converged": int(((flat == DONE) & (converged == 0)).sum()),
            "failed": len(failed),
            "pending": int((flat == PENDING).sum()),
            "errors": {i: entry.get("error") or entry.get("reason") for i, entry in log.items()},
        }

    def open(self, **kwargs: Any) -> xr.Dataset:
        """The sweep's dataset (lazy, dask-backed): dims are the axes plus t and x (and iteration).

        Chunked for analysis, not as written: whole axes, from the last (usually the seed axis)
        backwards, while a chunk of u or m stays under ANALYSIS_CHUNK bytes (one dask task reads
        many members' chunks). Pass ``chunks=`` to choose otherwise."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"no store at {self.path}")
        kwargs.setdefault("chunks", self.analysis_chunks())
        return xr.open_zarr(self.path, **kwargs)

    def analysis_chunks(self) -> dict[str, int]:
        """Dask chunks along the axes for analysis: see :meth:`open`."""
        lay = self.layout
        room = max(1, ANALYSIS_CHUNK // (8 * int(np.prod(lay.grid_shape))))
        chunks: dict[str, int] = {}
        for name, n in reversed(list(zip(lay.axes, lay.shape))):
            chunks[name] = max(1, min(n, room))
            room = max(1, room // chunks[name])
        return chunks

    def verify(self) -> dict[str, list[int]]:
        """Check every done member against the digest recorded when it was written.

        Returns ``{"damaged": [...], "unverifiable": [...]}`` (flat indices): damaged members
        read back other values (a lost chunk reads as NaN, a flipped bit fails its checksum or
        changes a value); unverifiable ones were written without a digest (by 0.1).
        """
        status = self.status()
        group = zarr.open_group(str(self.path), mode="r")
        done = np.flatnonzero(status.ravel() == DONE).tolist()
        digest = self._digest_array("r")
        if digest is None:
            return {"damaged": [], "unverifiable": done}
        digests = np.asarray(digest[...]).reshape(-1, 32)
        arrays = {name: group[name] for name in self._digested()}
        out: dict[str, list[int]] = {"damaged": [], "unverifiable": []}
        for index in done:
            want = digests[index].tobytes()
            if not any(want):
                out["unverifiable"].append(index)
                continue
            position = tuple(int(i) for i in np.unravel_index(index, status.shape))
            try:
                got = _digest({name: array[position] for name, array in arrays.items()})
            except Exception:  # a chunk that fails its checksum or cannot be decoded
                got = b""
            if got != want:
                out["damaged"].append(index)
        return out

    def _digest_array(self, mode: str) -> Any:
        """The ``members/digest`` array (axes…, 32 bytes), or None in a store of 0.1."""
        try:
            return zarr.open_array(str(self.path), path=f"{schema.LOG_GROUP}/{schema.DIGEST}", mode=mode)
        except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError, zarr.errors.NodeTypeValidationError):
            return None

    def _digested(self) -> list[str]:
        return [*DIGESTED, *(n for n in self.layout.large if n not in DIGESTED)]

    def read_density(self, position: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray | None:
        """The density history m of the member at ``position`` (its first ``shape`` values:
        (nt, nx), 2-D (nt, ny, nx)), or None if it holds NaN there (not written, or another grid)."""
        stored = np.asarray(zarr.open_array(str(self.path), path="m", mode="r")[position])
        values = stored[tuple(slice(0, n) for n in shape)]
        return values if values.shape == tuple(shape) and np.isfinite(values).all() else None

    # -- writing ----------------------------------------------------------------------------
    def update_attrs(self, attrs: dict[str, Any]) -> None:
        """Add run-time attributes (no member may be writing: call before submitting)."""
        zarr.open_group(str(self.path), mode="r+").attrs.update(attrs)
        _consolidate(self.path)

    def write_fields(
        self, position: tuple[int, ...], result: xr.Dataset | None, outcome: dict[str, Any]
    ) -> dict[str, Any]:
        """The worker's part of writing a member: its large arrays (u, m, 2-D exited; t, x, y
        and nodes on a padded store), one chunk each and this member's alone. Returns what :meth:`commit` records:
        the small values (padded to the store's sizes) and the digest of everything."""
        lay = self.layout
        if result is None:
            return {}

        def pad(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            out = np.full(shape, -1 if values.dtype.kind == "i" else np.nan, dtype=values.dtype)
            out[tuple(slice(0, n) for n in values.shape)] = values
            return out

        large = {name: pad(result[name].values, lay.member_shape(name)) for name in lay.large}
        for name, values in large.items():
            zarr.open_array(str(self.path), path=name, mode="r+")[position] = values
        small = {name: pad(result[name].values[: lay.n_iter], (lay.n_iter,)) for name in schema.HISTORY}
        small |= _marks(outcome)
        return {"small": small, "digest": _digest({**large, **small})}

    def commit(self, records: list[dict[str, Any]]) -> None:
        """The client's part: record finished members (each an outcome with ``position`` and,
        from :meth:`write_fields`, ``small`` and ``digest``): their small values, a failed
        member's log group, then their status — the commit marker — last. One writer only."""
        if not records:
            return
        group = zarr.open_group(str(self.path), mode="r+")
        positions = [tuple(r["position"]) for r in records]
        nan_history = np.full(self.layout.n_iter, np.nan)
        small = [r.get("small") or {**dict.fromkeys(schema.HISTORY, nan_history), **_marks(r)} for r in records]
        for name in SMALL:
            _scatter(group[name], positions, [values[name] for values in small])
        digest = self._digest_array("r+")
        if digest is not None:  # stores of 0.1 have none
            _scatter(digest, positions, [np.frombuffer(r.get("digest", bytes(32)), np.uint8) for r in records])
        for r in records:
            if r["status"] != "done":
                log = zarr.open_group(str(self.path), path=f"{schema.LOG_GROUP}/{r['index']}", mode="w", zarr_format=3)
                entry = {k: v for k, v in r.items() if k not in ("small", "digest", "position")}
                log.attrs.update(json.loads(json.dumps(entry, default=str)))
        codes = [np.int8(DONE if r["status"] == "done" else FAILED) for r in records]
        _scatter(group["status"], positions, codes)


def open_sweep(store: str | Path, **kwargs: Any) -> xr.Dataset:
    """The sweep's dataset (lazy, dask-backed): dims are the axes plus t and x (and iteration)."""
    return SweepStore(store).open(**kwargs)


def _write_coordinate(group: Any, name: str, values: np.ndarray) -> None:
    """Write the labels of a grown axis; a coordinate whose dtype must change (integer labels
    joined by a float, seeds past 2⁶³ needing uint64) is made again with the same attrs."""
    array = group[name]
    if values.dtype == array.dtype or (values.dtype.kind == "O" and array.dtype.kind in "OTU"):
        array[...] = values
        return
    attributes = dict(array.attrs)
    dims = array.metadata.dimension_names
    group.create_array(
        name,
        shape=values.shape,
        dtype=values.dtype,
        chunks=values.shape,
        dimension_names=dims,
        attributes=attributes,
        compressors=COMPRESSORS,
        chunk_key_encoding=FLAT_KEYS,
        overwrite=True,
    )[...] = values


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(lock.read_text()))
    except (OSError, ValueError):
        return {}


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _digest(values: dict[str, Any]) -> bytes:
    """SHA-256 of a member's values (by name, as stored: their bytes, not their shape)."""
    h = hashlib.sha256()
    for name in sorted(values):
        h.update(name.encode())
        h.update(np.ascontiguousarray(values[name]).tobytes())
    return h.digest()


def _marks(outcome: dict[str, Any]) -> dict[str, np.ndarray]:
    """A member's scalar values, in the dtypes the store holds them in."""
    return {
        "wall_time": np.float64(outcome.get("wall_time", np.nan)),
        "converged": np.int8(outcome.get("converged", 0)),
        "iterations": np.int32(outcome.get("iterations", 0)),
    }


def _scatter(array: Any, positions: list[tuple[int, ...]], values: list[Any]) -> None:
    """``array[position] = value`` for many members, one read and one write per chunk touched
    (a chunk holds a block of members; the trailing dims are whole in every chunk)."""
    lead = len(positions[0]) if positions else 0
    chunks, shape = array.chunks[:lead], array.shape[:lead]
    blocks: dict[tuple[int, ...], list[tuple[tuple[int, ...], Any]]] = {}
    for position, value in zip(positions, values):
        blocks.setdefault(tuple(i // c for i, c in zip(position, chunks)), []).append((position, value))
    for key, items in blocks.items():
        region = tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(key, chunks, shape))
        block = np.asarray(array[region])
        for position, value in items:
            block[tuple(i - r.start for i, r in zip(position, region))] = value
        array[region] = block

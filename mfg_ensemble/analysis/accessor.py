"""``ds.mfg``: one-line, lazy post-analysis of a sweep store (or of one solve's dataset).

Importing :mod:`mfg_ensemble` registers the accessor on every :class:`xarray.Dataset`::

    ds = mfg_ensemble.open_sweep("quickstart.zarr")   # lazy, dask-backed
    ds.mfg.mass()                    # ∫ m dx per (axes…, t): 1 for every done member
    ds.mfg.mean_position()           # ∫ x m dx / ∫ m dx per (axes…, t)
    ds.mfg.variance()                # ∫ (x − mean)² m dx / ∫ m dx
    ds.mfg.seed_stats("m")           # m_mean, m_std, m_sem over the seed axis, and n_done
    ds.mfg.final().m                 # m(T, x) of every member
    ds.mfg.done()                    # status == done, per member

Every method returns dask-backed results when the store is (nothing is read until
``.compute()``, ``.values`` or a plot). Members that are not done (pending, or failed — a
diverged member keeps the history it wrote) are NaN in every result and left out of the
seed statistics: the results of a store that is still running are those of its done members
(for one consistent snapshot while it runs, load the status first:
``ds = ds.assign(status=ds.status.load())`` — a member's status is written last).

Quadrature: the x integrals use the grid's weights: the trapezoid rule for ``bc = "reflect"``
(nodes lo … hi, the end nodes weigh dx/2), dx at every node for ``bc = "periodic"`` (one
period of nodes, hi excluded) — the weights the solver normalises m0 and conserves mass with,
so ``mass()`` is 1 to rounding for a done member. The bc is read from the store's attrs
(``problem.bc``), or per member from the ``bc`` coordinate when bc is a sweep axis. On stores
whose grid varies along an axis (dims ``t_index``, ``x_index``), the weights come from each
member's own ``x`` coordinate, and the NaN padding weighs 0. For periodic problems the
moments are the plain ones on [lo, hi), not circular statistics.

Two-dimensional stores (dims (axes…, t, y, x)) integrate over y and x with the products of
the 1-D weights, 0 on obstacle nodes (the coordinate ``nodes``); ``mean_position`` and
``variance`` take ``along="x"`` or ``"y"``, ``covariance()`` gives the 2×2 covariance of the
position and ``exited()`` the mass that has left through the exits::

    ds.mfg.mass()                    # mass in the room, per (axes…, t)
    ds.mfg.mean_position(along="y")  # ∫∫ y m / ∫∫ m
    ds.mfg.covariance()              # cov_xx, cov_xy, cov_yy
    ds.mfg.exited()                  # mass that has left; mass() + exited() is 1
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np
import xarray as xr

from mfg_ensemble import schema
from mfg_ensemble.kernels import quadrature_weights
from mfg_ensemble.schema import DONE, FAILED, PENDING

Members = Literal["converged", "all"]
MEMBERS: tuple[str, ...] = typing.get_args(Members)
"""Which done members an analysis uses: the converged ones (the default) or all of them."""


@xr.register_dataset_accessor("mfg")
class MFGAccessor:
    """Analysis helpers of a sweep store opened with :func:`mfg_ensemble.open_sweep`."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    # -- layout -------------------------------------------------------------------------------
    @property
    def axes(self) -> list[str]:
        """The sweep axes still present as dimensions, in the store's order."""
        ds = self._ds
        named = ds.attrs.get(schema.AXES)
        if named is None:
            named = list(ds["status"].dims) if "status" in ds else []
        return [a for a in named if a in ds.dims]

    @property
    def seed_dim(self) -> str | None:
        """The replicate axis: the axis that varies the solver seed (usually ``seed``), or None."""
        for a in self.axes:
            if list(self._ds[a].attrs.get("fields", [])) == ["seed"]:
                return a
        return "seed" if "seed" in self.axes else None

    @property
    def parameter_axes(self) -> list[str]:
        """The sweep axes other than the seed axis."""
        return [a for a in self.axes if a != self.seed_dim]

    @property
    def tdim(self) -> str:
        """``t``, or ``t_index`` when the grid varies along an axis."""
        return "t_index" if "t_index" in self._ds.dims else "t"

    @property
    def xdim(self) -> str:
        """``x``, or ``x_index`` when the grid varies along an axis."""
        return "x_index" if "x_index" in self._ds.dims else "x"

    @property
    def ndim(self) -> int:
        """Space dimensions: 2 when the dataset has a ``y`` coordinate."""
        return 2 if "y" in self._ds.variables else 1

    @property
    def ydim(self) -> str:
        """``y``, or ``y_index`` when the grid varies along an axis (2-D)."""
        return "y_index" if "y_index" in self._ds.dims else "y"

    @property
    def space_dims(self) -> list[str]:
        """The space dims: [x] or [y, x]."""
        return [self.ydim, self.xdim] if self.ndim == 2 else [self.xdim]

    def _bc_along(self, axis: int) -> str | xr.DataArray:
        """The boundary condition along x (0) or y (1) of a 2-D game."""
        bc = self.bc
        if isinstance(bc, str) and bc.startswith("["):
            return str(ast.literal_eval(bc)[axis])
        return bc

    @property
    def bc(self) -> str | xr.DataArray:
        """The boundary condition: a string, or a DataArray over an axis when bc is swept."""
        ds = self._ds
        if "bc" in ds.variables:
            bc = ds["bc"]
            return str(bc.values) if bc.ndim == 0 else bc
        return str(schema.problem_attr(ds.attrs, "bc", "reflect"))

    def shape(self) -> tuple[int, ...]:
        return tuple(self._ds.sizes[a] for a in self.axes)

    def member(self, index: int) -> xr.Dataset:
        """Member ``index`` (the flat index of ``members/<index>`` and the CLI), axes selected."""
        shape = self.shape()
        n = int(np.prod(shape))
        if not 0 <= index < n:
            raise IndexError(f"member {index} is out of range: this store has {n} member(s) (0 … {n - 1})")
        position = np.unravel_index(index, shape) if shape else ()
        return self._ds.isel({a: int(i) for a, i in zip(self.axes, position)})

    # -- masks --------------------------------------------------------------------------------
    def done(self, members: Members = "converged") -> xr.DataArray:
        """The members analysed, over the axes (lazy): with ``members="converged"`` (the
        default) those done (``status == 1``) whose fixed point converged; with ``"all"`` every
        done member, converged or not (a member that stopped at max_iter is done too)."""
        ds = self._ds
        if members not in MEMBERS:
            raise ValueError(f"members must be one of {', '.join(map(repr, MEMBERS))}, got {members!r}")
        if "status" not in ds:  # one solve's dataset: done by construction
            converged = ds.attrs.get("converged", 1)
            return xr.DataArray(bool(converged) or members == "all")
        out = ds["status"] == DONE
        if members == "converged" and "converged" in ds:
            out = out & (ds["converged"] == 1)
        out.attrs = {"long_name": f"member {'done and converged' if members == 'converged' else 'done'}", "units": "1"}
        return out

    def where_done(self, members: Members = "converged") -> xr.Dataset:
        """The dataset with every variable over the axes set to NaN where a member is not
        analysed (see :meth:`done` for ``members``)."""
        ds, done = self._ds, self.done(members)
        axes = set(self.axes)
        out = ds.copy()
        for name, da in ds.data_vars.items():
            if name != "status" and axes & set(da.dims):
                out[name] = da.where(done)
                out[name].attrs = da.attrs
        for name in ("t", "x", "y"):
            if name in ds.coords and axes & set(ds[name].dims):
                out.coords[name] = ds[name].where(done)
                out[name].attrs = ds[name].attrs
        return out

    # -- quadrature ---------------------------------------------------------------------------
    def weights(self) -> xr.DataArray:
        """Quadrature weights w over x (per member when the grid varies): ∫ φ dx ≈ Σ w φ.

        Trapezoid for "reflect", dx at every node for "periodic"; 0 on NaN padding. In 2-D
        the products of the weights along y and x, 0 on obstacle nodes: ∫∫ φ ≈ Σ w φ.
        """
        if self.ndim == 1:
            w = self._weights_along("x", self.xdim, self.bc)
        else:
            w = self._weights_along("y", self.ydim, self._bc_along(1)) * self._weights_along(
                "x", self.xdim, self._bc_along(0)
            )
            if "nodes" in self._ds.variables:
                w = w.where(self._ds["nodes"].variable != 1, 0.0)
        w.attrs = {"long_name": "quadrature weight", "units": self._ds["x"].attrs.get("units", "1")}
        return w.rename("weights")

    def _weights_along(self, name: str, dim: str, bc: str | xr.DataArray) -> xr.DataArray:
        """The 1-D weights of the coordinate ``name`` (over ``dim``) under ``bc``."""
        x = self._ds[name]
        if dim == name:  # the index coordinate: plain values
            x = xr.DataArray(np.asarray(x.values, dtype=float), dims=name)
        n = x.notnull().sum(dim)
        dx = x.isel({dim: 1}, drop=True) - x.isel({dim: 0}, drop=True)
        size = self._ds.sizes[dim]
        periodic = bc == "periodic"  # a bool, or a bool DataArray when bc is an axis (no object dtype for dask)
        return xr.apply_ufunc(
            lambda n, dx, periodic: quadrature_weights(n, dx, np.where(periodic, "periodic", "reflect"), size),
            n,
            dx,
            periodic,
            output_core_dims=[[dim]],
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {dim: size}},
        )

    def integrate(self, values: xr.DataArray, members: Members = "converged") -> xr.DataArray:
        """∫ values dx (2-D: ∫∫ values dx dy) per (axes…, t), NaN for members not analysed
        (lazy; ``members``: see :meth:`done`)."""
        out = (values * self.weights()).sum(self.space_dims, skipna=True, min_count=1)
        return out.where(self.done(members))

    # -- moments ------------------------------------------------------------------------------
    def mass(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """∫ m dx per (axes…, t): 1 to rounding for a done member; NaN if not analysed."""
        out = self.integrate(self._ds[var], members)
        out.attrs = {"long_name": f"mass ∫ {var} dx", "units": "1"}
        return out.rename("mass")

    def mean_position(self, var: str = "m", members: Members = "converged", along: str = "x") -> xr.DataArray:
        """∫ x m dx / ∫ m dx per (axes…, t): the players' mean position (2-D: its ``along`` =
        "x" or "y" component, over the players still in the room)."""
        x = self._x(along)
        out = self.integrate(x * self._ds[var], members) / self.integrate(self._ds[var], members)
        out.attrs = {"long_name": f"mean position ∫ {along} m / ∫ m", "units": self._xunits()}
        return out.rename("mean_position" if along == "x" else f"mean_position_{along}")

    def variance(self, var: str = "m", members: Members = "converged", along: str = "x") -> xr.DataArray:
        """∫ (x − mean)² m dx / ∫ m dx per (axes…, t): the spread of the players (2-D: along
        ``along``)."""
        x, m = self._x(along), self._ds[var]
        mean = self.mean_position(var, members, along)
        out = self.integrate((x - mean) ** 2 * m, members) / self.integrate(m, members)
        out.attrs = {"long_name": f"variance of the position along {along}", "units": _squared(self._xunits())}
        return out.rename("variance" if along == "x" else f"variance_{along}")

    def covariance(self, var: str = "m", members: Members = "converged") -> xr.Dataset:
        """The covariance of the position of a 2-D game per (axes…, t): ``cov_xx``, ``cov_xy``,
        ``cov_yy`` = ∫∫ (p − mean)(q − mean) m / ∫∫ m."""
        if self.ndim != 2:
            raise ValueError("covariance() needs a 2-D game (a y coordinate); use variance() in 1-D")
        m = self._ds[var]
        mass = self.integrate(m, members)
        dev = {a: self._x(a) - self.mean_position(var, members, a) for a in ("x", "y")}
        units = _squared(self._xunits())
        out = xr.Dataset()
        for name, (a, b) in {"cov_xx": ("x", "x"), "cov_xy": ("x", "y"), "cov_yy": ("y", "y")}.items():
            out[name] = (self.integrate(dev[a] * dev[b] * m, members) / mass).assign_attrs(
                long_name=f"covariance of the position ({a}, {b})", units=units
            )
        return out

    def exited(self, members: Members = "converged") -> xr.DataArray:
        """The mass that has left through the exits of a 2-D room by each time, per (axes…, t)
        (``mass() + exited()`` is the initial mass, 1)."""
        if "exited" not in self._ds:
            raise ValueError("exited() needs a 2-D game's dataset (the variable 'exited')")
        return self._ds["exited"].where(self.done(members)).assign_attrs(self._ds["exited"].attrs)

    def std_position(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """The square root of :meth:`variance`."""
        out = np.sqrt(self.variance(var, members))
        out.attrs = {"long_name": "standard deviation of the position", "units": self._xunits()}
        return out.rename("std_position")

    def _x(self, along: str = "x") -> xr.DataArray:
        if along not in ("x", "y") or along not in self._ds.variables:
            raise ValueError(f"along must name a space coordinate of the dataset ('x' or 'y' in 2-D), got {along!r}")
        x = self._ds[along]
        return x.variable if along in self._ds.dims else x  # plain values, no self-referencing index

    def _xunits(self) -> str:
        return str(self._ds["x"].attrs.get("units", "1"))

    # -- time ---------------------------------------------------------------------------------
    def final(self, members: Members = "converged") -> xr.Dataset:
        """The variables over t (u, m) at each member's final time t = T, NaN where a member is
        not analysed (see :meth:`done` for ``members``)."""
        ds, tdim = self._ds, self.tdim
        names = [n for n, da in ds.data_vars.items() if tdim in da.dims]
        if tdim == "t":
            out = ds[names].isel(t=-1)
        else:  # padded grids: each member's last valid time
            t = ds["t"]
            last = t.notnull().sum(tdim) - 1
            pick = xr.DataArray(np.arange(ds.sizes[tdim]), dims=tdim) == last
            out = xr.Dataset({n: ds[n].where(pick).sum(tdim, min_count=1) for n in names})
            out.coords["t"] = t.where(pick).sum(tdim, min_count=1).assign_attrs(t.attrs)
            for name in ("x", "y", "nodes"):
                if name in ds.coords:
                    out.coords[name] = ds[name]
        for n in names:
            out[n] = out[n].where(self.done(members)).assign_attrs(ds[n].attrs)
        return out

    # -- replicates ---------------------------------------------------------------------------
    def seed_stats(
        self,
        var: str | Sequence[str] | xr.DataArray = "m",
        *,
        ddof: int = 1,
        quantiles: Sequence[float] = (),
        members: Members = "converged",
    ) -> xr.Dataset:
        """Statistics over the seed axis of the analysed members, per parameter point (lazy):
        by default the converged ones (``members="all"``: every done member; see :meth:`done`).

        ``var``: a variable name, several, or a DataArray over the axes (e.g. the result of
        :meth:`mean_position`). Returns ``<var>_mean``, ``<var>_std`` (``ddof`` = 1: the
        sample standard deviation of the replicates), ``<var>_sem`` (std/√count, the standard
        error of the mean) and ``n_done``, the done members averaged at each point. With
        ``quantiles`` (e.g. ``(0.05, 0.5, 0.95)``), also ``<var>_quantile`` along a ``quantile``
        dim: the empirical quantiles of the done replicates (linear interpolation, NumPy's
        default), for bands that need no symmetry.
        """
        seed = self.seed_dim
        if seed is None:
            raise ValueError(f"no seed axis in this dataset (axes: {self.axes}); sweep with seed = {{count = N}}")
        ds, done = self._ds, self.done(members)
        if isinstance(var, xr.DataArray):
            items = [(str(var.name or "value"), var)]
        else:
            items = [(n, ds[n]) for n in ([var] if isinstance(var, str) else var)]
        count = done.sum(seed)
        out = xr.Dataset()
        for name, da in items:
            kept = da.where(done)
            label, units = schema.label(da, name, units=False), da.attrs.get("units", "1")
            out[f"{name}_mean"] = kept.mean(seed, skipna=True).assign_attrs(
                long_name=f"seed-mean of {label}", units=units
            )
            out[f"{name}_std"] = kept.std(seed, skipna=True, ddof=ddof).assign_attrs(
                long_name=f"standard deviation over seeds of {label}", units=units
            )
            out[f"{name}_sem"] = (out[f"{name}_std"] / np.sqrt(count.where(count > 0))).assign_attrs(
                long_name=f"standard error of the seed-mean of {label}", units=units
            )
            if len(quantiles):
                whole = kept.chunk({seed: -1}) if kept.chunks is not None else kept  # one chunk along the seeds
                out[f"{name}_quantile"] = whole.quantile(list(quantiles), dim=seed, skipna=True).assign_attrs(
                    long_name=f"quantiles over seeds of {label}", units=units
                )
        out["n_done"] = count.assign_attrs(
            long_name=f"{'converged' if members == 'converged' else 'done'} members", units="1"
        )
        for name in ("t", "x", "y"):  # per-member grids (padded stores): the grid of each point
            if name in ds.coords and seed in ds[name].dims:
                out.coords[name] = ds[name].where(done).mean(seed, skipna=True).assign_attrs(ds[name].attrs)
        out.attrs = {"seed_dim": seed, "ddof": ddof, "members": members}
        return out

    def counts(self, dims: str | Sequence[str] | None = None) -> xr.Dataset:
        """Members done, failed and pending, summed over ``dims`` (default: all axes)."""
        ds = self._ds
        status = ds["status"]
        dims = self.axes if dims is None else ([dims] if isinstance(dims, str) else list(dims))
        return xr.Dataset(
            {
                "done": (status == DONE).sum(dims),
                **({"converged": ((status == DONE) & (ds["converged"] == 1)).sum(dims)} if "converged" in ds else {}),
                "failed": (status == FAILED).sum(dims),
                "pending": (status == PENDING).sum(dims),
            }
        )


def _squared(units: str) -> str:
    """UDUNITS text of ``units`` squared ("1" stays "1")."""
    return "1" if units == "1" else f"({units})^2"

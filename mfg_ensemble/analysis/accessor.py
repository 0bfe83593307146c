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
"""

from __future__ import annotations

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
        for name in ("t", "x"):
            if name in ds.coords and axes & set(ds[name].dims):
                out.coords[name] = ds[name].where(done)
                out[name].attrs = ds[name].attrs
        return out

    # -- quadrature ---------------------------------------------------------------------------
    def weights(self) -> xr.DataArray:
        """Quadrature weights w over x (per member when the grid varies): ∫ φ dx ≈ Σ w φ.

        Trapezoid for "reflect", dx at every node for "periodic"; 0 on NaN padding.
        """
        x, xdim = self._ds["x"], self.xdim
        if xdim == "x":  # the index coordinate: plain values
            x = xr.DataArray(np.asarray(x.values, dtype=float), dims="x")
        n = x.notnull().sum(xdim)
        dx = x.isel({xdim: 1}, drop=True) - x.isel({xdim: 0}, drop=True)
        size = self._ds.sizes[xdim]
        periodic = self.bc == "periodic"  # a bool, or a bool DataArray when bc is an axis (no object dtype for dask)
        w = xr.apply_ufunc(
            lambda n, dx, periodic: quadrature_weights(n, dx, np.where(periodic, "periodic", "reflect"), size),
            n,
            dx,
            periodic,
            output_core_dims=[[xdim]],
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {xdim: size}},
        )
        w.attrs = {"long_name": "quadrature weight", "units": self._ds["x"].attrs.get("units", "1")}
        return w.rename("weights")

    def integrate(self, values: xr.DataArray, members: Members = "converged") -> xr.DataArray:
        """∫ values dx per (axes…, t), NaN for members not analysed (lazy; ``members``: see
        :meth:`done`)."""
        out = (values * self.weights()).sum(self.xdim, skipna=True, min_count=1)
        return out.where(self.done(members))

    # -- moments ------------------------------------------------------------------------------
    def mass(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """∫ m dx per (axes…, t): 1 to rounding for a done member; NaN if not analysed."""
        out = self.integrate(self._ds[var], members)
        out.attrs = {"long_name": f"mass ∫ {var} dx", "units": "1"}
        return out.rename("mass")

    def mean_position(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """∫ x m dx / ∫ m dx per (axes…, t): the players' mean position."""
        x = self._x()
        out = self.integrate(x * self._ds[var], members) / self.integrate(self._ds[var], members)
        out.attrs = {"long_name": "mean position ∫ x m dx / ∫ m dx", "units": self._xunits()}
        return out.rename("mean_position")

    def variance(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """∫ (x − mean)² m dx / ∫ m dx per (axes…, t): the spread of the players."""
        x, m = self._x(), self._ds[var]
        mean = self.mean_position(var, members)
        out = self.integrate((x - mean) ** 2 * m, members) / self.integrate(m, members)
        out.attrs = {"long_name": "variance of the position", "units": _squared(self._xunits())}
        return out.rename("variance")

    def std_position(self, var: str = "m", members: Members = "converged") -> xr.DataArray:
        """The square root of :meth:`variance`."""
        out = np.sqrt(self.variance(var, members))
        out.attrs = {"long_name": "standard deviation of the position", "units": self._xunits()}
        return out.rename("std_position")

    def _x(self) -> xr.DataArray:
        x = self._ds["x"]
        return x.variable if self.xdim == "x" else x  # plain values, no self-referencing index

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
            if "x" in ds.coords:
                out.coords["x"] = ds["x"]
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
        for name in ("t", "x"):  # per-member grids (padded stores): the grid of each point
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

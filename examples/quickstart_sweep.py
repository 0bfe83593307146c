# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A small sweep, from the cluster to the figures
#
# A crowd (log congestion, Gaussian start, quadratic exit cost on the right) under three
# noise levels σ, three replicate seeds each (particle Fokker–Planck): 9 members, a few
# seconds. We run it on a Dask `Client`, open the Zarr store it writes, analyse it with the
# `ds.mfg` accessor and draw the standard figures.
#
# Run it as a notebook (`jupytext --to notebook examples/quickstart_sweep.py`, or open it
# in JupyterLab with jupytext) or as a plain script: `python examples/quickstart_sweep.py`
# (it writes `quickstart_small.zarr`, `quickstart_small_report/` and
# `mean_position.png` in the working folder).

# %%
# %matplotlib inline
import sys
from pathlib import Path

import numpy as np
from distributed import Client
from matplotlib.figure import Figure

import mfg_ensemble as mfg
from mfg_ensemble.ensemble.cluster import local_cluster

STORE = Path("quickstart_small.zarr")
REPORT = Path("quickstart_small_report")

# %% [markdown]
# ## A Dask client
#
# In a notebook, `local_cluster()` (from `mfg_ensemble.ensemble.cluster`) starts worker processes (as
# `mfg-ensemble run` does), each with its share of the cores for Rayon. A plain script would
# need an `if __name__ == "__main__":` guard for that (workers are spawned, and re-import the
# script), so run as a script this uses `Client(processes=False)`: workers that are threads of
# this process (the solves release the GIL; Rayon's one pool serves them all). On a cluster:
# `Client("tcp://scheduler:8786")`.

# %%
if "ipykernel" in sys.modules:  # a notebook
    client = Client(local_cluster(n_workers=2, dashboard_address=":0"))
else:  # a plain script: no __main__ guard, so thread workers
    client = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0")
print("dashboard:", client.dashboard_link)

# %% [markdown]
# ## The sweep: σ × seed

# %%
sweep = mfg.Sweep(
    problem={
        "nx": 61,
        "nt": 21,
        "coupling": {"kind": "log", "strength": 0.1, "delta": 0.01},
        "m0": {"kind": "gaussian", "mean": 0.25, "std": 0.07},
        "terminal": {"kind": "quadratic", "strength": 1.0, "center": 0.75},
    },
    solver={
        "fp": "particles",
        "n_particles": 2000,
        "damping": 0.5,
        "anderson": 5,
        "tol": 1e-4,
        "max_iter": 40,
        "seed": 2026,
    },
    axes={"sigma": [0.1, 0.2, 0.3], "seed": {"count": 3}},
    name="quickstart_small",
)
print(sweep.describe(limit=3))

# %%
ds = mfg.run_sweep(sweep, STORE, client=client, overwrite=True, monitor=mfg.SweepMonitor(verbose=True))

# %% [markdown]
# ## The store: labelled and lazy
#
# `open_sweep` (or `xarray.open_zarr`) reads nothing but metadata: every variable is a
# dask array, one chunk per member.

# %%
ds = mfg.open_sweep(STORE)
print(ds)
print(ds.mfg.counts().compute())

# %% [markdown]
# ## One-line analysis with `ds.mfg`
#
# Mass and moments integrate over x with the grid's quadrature weights (trapezoid for
# reflecting walls); members not done are NaN. The results stay lazy until `.compute()`.

# %%
mass = ds.mfg.mass()
print("mass is lazy:", type(mass.data).__name__)
print("max |mass - 1| over all members and times:", float(abs(mass - 1).max()))

position = ds.mfg.mean_position()  # (sigma, seed, t)
stats = ds.mfg.seed_stats(position)  # mean, std, sem over the seeds
final = stats.isel(t=-1).compute()
for s, mean, sem, n in zip(
    final.sigma.values, final.mean_position_mean.values, final.mean_position_sem.values, final.n_done.values
):
    print(f"sigma = {s:g}: mean position at T = {mean:.3f} ± {sem:.3f} (seed-mean ± s.e., {int(n)} seeds)")

# %% [markdown]
# The seed-mean ± one standard deviation of the mean position, per σ:

# %%
stats = stats.compute()
fig = Figure(figsize=(6, 4), layout="constrained")
ax = fig.add_subplot()
for s in stats.sigma.values:
    row = stats.sel(sigma=s)
    mean, std = row.mean_position_mean.values, row.mean_position_std.values
    ax.plot(row.t, mean, label=f"σ = {s:g}")
    ax.fill_between(row.t, mean - std, mean + std, alpha=0.25)
ax.set_xlabel(f"{ds.t.attrs['long_name']} [{ds.t.attrs['units']}]")
ax.set_ylabel(f"{position.attrs['long_name']} [{position.attrs['units']}]")
ax.set_title("players' mean position (seed-mean ± 1 std)")
ax.legend()
fig.savefig("mean_position.png", dpi=100)
fig

# %% [markdown]
# ## The standard figures
#
# The same as `mfg-ensemble report quickstart_small.zarr`: density heat maps (seed-mean per
# σ), the final density across σ, value-function slices, convergence of every member and a
# summary of iterations, wall time and failures.

# %%
files = mfg.make_report(STORE, REPORT)
for f in files:
    print(f)

# %%
try:  # in a notebook, show a few of them inline
    from IPython import get_ipython
    from IPython.display import Image, display

    inline = get_ipython() is not None
except ImportError:
    inline = False
if inline:
    for name in ("density_sigma=0.2.png", "final_density_sigma.png", "convergence.png", "summary.png"):
        display(Image(filename=str(REPORT / name)))

# %%
client.close()
print(
    "done:",
    len(files),
    "figures in",
    REPORT,
    "| members done:",
    int(np.sum(ds.status.values == 1)),
    "of",
    ds.status.size,
)

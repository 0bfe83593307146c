"""Throughput of the ensemble runner on a LocalCluster with 1 and 2 workers, in one run.

    python benchmarks/bench_sweep.py [--members 32] [--quick]     (release build: pip install .)

A sweep of the crowd problem (configs/crowd_log.toml, 3·10⁴ particles) over sigma × seed,
members of about a second or more each (the size the overhead target is set for). For
1 worker × 1 Rayon thread, 1 worker × 2 Rayon threads and 2 workers × 1 Rayon thread (the
default on 2 cores): the wall time, members per second and the scaling ratios; the runner's
overhead (Dask + store) as a share of the pure solve time,
(workers × wall − Σ member solve times) / Σ member solve times; and each worker's peak
resident memory. The cluster start-up time is reported apart and not counted.

    python benchmarks/bench_sweep.py --tiny 2000

The cost of the store per member instead: that many tiny members (fp = "fv", nx = 31,
nt = 11, a solve of a few ms) on 2 workers; members per second, the mean solve time, and the
files and folders the store holds per member.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client

from mfg_ensemble import Sweep, backend_info, run_sweep
from mfg_ensemble.ensemble.cluster import local_cluster

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "crowd_log.toml"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny(members: int) -> None:
    """Members per second and files per member of a sweep of tiny members (the store's cost)."""
    sweep = Sweep(
        {"nx": 31, "nt": 11, "sigma": 0.2, "coupling": {"kind": "log", "strength": 0.1}},
        {"fp": "fv", "max_iter": 50},
        {"seed": {"count": members}},
    )
    folder = Path(tempfile.mkdtemp(prefix="mfg-bench-"))
    try:
        with local_cluster(2, dashboard_address=":0") as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            ds = run_sweep(sweep, folder / "tiny.zarr", client=client)
            wall = time.perf_counter() - t0
        files = sum(1 for p in (folder / "tiny.zarr").rglob("*") if p.is_file())
        dirs = sum(1 for p in (folder / "tiny.zarr").rglob("*") if p.is_dir())
        print(f"# store cost: {members} tiny members (fp=fv, nx=31, nt=11), 2 workers; {backend_info()}\n")
        print("| members | sweep wall | members/s | mean solve | files per member | folders per member |")
        print("|---|---|---|---|---|---|")
        solve_ms = 1e3 * float(np.nanmean(ds.wall_time.values))
        print(
            f"| {members} | {wall:.1f} s | {members / wall:.1f} | {solve_ms:.1f} ms "
            f"| {files / members:.2f} | {dirs / members:.2f} |"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="8 small members")
    ap.add_argument("--tiny", type=int, default=None, metavar="N", help="the store's cost on N tiny members")
    args = ap.parse_args()
    if args.tiny:
        tiny(args.tiny)
        return
    base = Sweep.from_file(CONFIG)
    problem = dict(base.problem_table)
    solver = dict(base.solver_table, tol=1e-5, n_particles=30_000)  # members of >= 1 s
    n = 8 if args.quick else args.members
    if args.quick:
        problem.update(nx=61, nt=31)
        solver.update(n_particles=2000)
    sigmas = [0.15, 0.2, 0.25, 0.3]
    sweep = Sweep(problem, solver, {"sigma": sigmas, "seed": {"count": n // len(sigmas)}})
    print(
        f"# runner throughput: {len(sweep)} members of {CONFIG.name} (nx={problem['nx']}, nt={problem['nt']}, "
        f"{solver['n_particles']} particles)"
    )
    print(f"- {backend_info()}\n")
    print(
        "| workers | Rayon threads per worker | cluster start | sweep wall | members/s | Σ solve time | mean member "
        "| overhead | peak RSS per worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rates = {}
    for workers, rayon in ((1, 1), (1, 2), (2, 1)):
        folder = Path(tempfile.mkdtemp(prefix="mfg-bench-"))
        try:
            t0 = time.perf_counter()
            env = {"RAYON_NUM_THREADS": str(rayon)}
            with local_cluster(workers, dashboard_address=":0", env=env) as cluster, Client(cluster) as client:
                started = time.perf_counter() - t0
                t1 = time.perf_counter()
                ds = run_sweep(sweep, folder / "bench.zarr", client=client)
                wall = time.perf_counter() - t1
                rss = client.run(peak_rss_mib)
            solve_times = ds.wall_time.values.ravel()
            total = float(np.nansum(solve_times))
            overhead = (workers * wall - total) / total
            rates[workers, rayon] = len(sweep) / wall
            print(
                f"| {workers} | {rayon} | {started:.1f} s | {wall:.1f} s | {rates[workers, rayon]:.2f} | {total:.1f} s "
                f"| {np.nanmean(solve_times):.2f} s | {100 * overhead:.1f}% | {max(rss.values()):.0f} MiB |"
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nrunner scaling, 2 workers / 1 worker at 1 Rayon thread each: {rates[2, 1] / rates[1, 1]:.2f}× "
        "(target ≥ 1.8× on 2 cores)"
    )
    print(f"the default 2 workers × 1 thread vs 1 worker × 2 Rayon threads: {rates[2, 1] / rates[1, 2]:.2f}×")


if __name__ == "__main__":
    main()

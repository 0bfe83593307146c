"""One full MFG solve, Rust kernels vs the NumPy reference, measured side by side.

    python benchmarks/bench_solve.py [--quick]      (needs a release build: pip install .)

The standard crowd problem (configs/crowd_log.toml: nx = 201, nt = 101, log coupling), with
the particle Fokker–Planck sweep at 10⁴ and 10⁵ particles and with finite volumes. For each
case: the Rust solve to convergence (iterations, wall time), then both backends for the same
fixed number of Picard iterations (the NumPy reference is too slow to converge in a
benchmark), with the time split into HJB sweep, FP sweep and the rest (coupling, residuals,
Python). Times are medians of repeats; the machine is noisy, so quote the ratios.

Then (issue 11) a before/after table at the same size: "before" = the 0.2 numerics
(hjb_scheme = "rk3", fv_scheme = "upwind1", method = "picard", start = "m0"), "after" = the defaults
(hjb_scheme = "imex", fv_scheme = "muscl2", method = "adaptive", start = "coarse"); for FV and for 10⁴ particles:
iterations, seconds to converge (median and min of repeats) and ms per iteration. And the
cost slope: one converged FV solve at nx = 201, 401, 801, 1601 with nt fixed at 101, wall
time and the log–log slope of wall time against nx, before vs after. Run it with
RAYON_NUM_THREADS=1 for the one-core numbers (the thread count is printed).

``--room`` (issue 12): the 2-D room of configs/room.toml at nx = ny = 101, nt = 101, finite
volumes (tol 1e-6) and 10⁵ particles (tol 1e-3, the config's: the particle map levels off
near 5e-4): iterations, seconds to converge and ms per iteration for Rust with 1 and 2 Rayon
threads (each in its own process: the pool is sized once per process); the first iteration on 1
and 2 threads in three rounds of alternating processes, the best of each (the steadier
measure of 1 → 2: two-thread timings move with the host from process to process); the NumPy
reference against Rust on one thread (the median of those rounds) over the same first
iteration, G(m0) (after a warm-up on a small
grid: a NumPy iteration at 101² takes minutes, and the later iterates, which need fewer
sub-steps, are not the same work); then the
cost growth per iteration from 51² to 201² nodes (FV, three iterations, 2 threads; the
iteration counts to converge are those of the table and of the README). About 25 minutes.
``--room-threads``: the room's HJB and FV marches alone, on 1 and 2 threads, from 51² to 201²
nodes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mfg_ensemble import Problem, Problem2D, Sweep, backend_info, solve
from mfg_ensemble.game import solver as solver_mod
from mfg_ensemble.kernels import fv_forward_2d, hjb_backward_2d

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "crowd_log.toml"
ROOM = Path(__file__).resolve().parent.parent / "configs" / "room.toml"


def timed_solve(problem: Problem, **kw: object) -> tuple[float, dict[str, float], object]:
    """Wall time of one solve and the time spent in the HJB and FP sweeps."""
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(solver_mod.FixedPointMap, name) for name in ("hjb", "fp")}

    def wrap(name: str):
        def timed(self, arg):
            t0 = time.perf_counter()
            try:
                return originals[name](self, arg)
            finally:
                spent[name] += time.perf_counter() - t0

        return timed

    for name in originals:
        setattr(solver_mod.FixedPointMap, name, wrap(name))
    try:
        t0 = time.perf_counter()
        ds = solve(problem, **kw)
        wall = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(solver_mod.FixedPointMap, name, fn)
    return wall, dict(spent), ds


def median_of(repeats: int, problem: Problem, **kw: object) -> tuple[float, dict[str, float], object]:
    runs = [timed_solve(problem, **kw) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    parts = {k: statistics.median(r[1].get(k, 0.0) for r in runs) for k in ("hjb", "fp")}
    return wall, parts, runs[-1][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--issue11-only", action="store_true", help="only the before/after and cost-slope tables")
    ap.add_argument("--room", action="store_true", help="only the 2-D room (issue 12)")
    ap.add_argument("--room-threads", action="store_true", help="only the 2-D marches on 1 and 2 threads")
    ap.add_argument("--room-run", help=argparse.SUPPRESS)  # one measurement, in a child process (JSON)
    ap.add_argument("--room-march", help=argparse.SUPPRESS)  # one march timing, in a child process (JSON)
    args = ap.parse_args()
    if args.room_run:
        print(json.dumps(room_run(**json.loads(args.room_run))))
        return
    if args.room_march:
        print(json.dumps(room_march(**json.loads(args.room_march))))
        return
    if args.room_threads:
        room_threads(args.quick)
        return
    if args.room:
        room(args.quick)
        return
    if args.issue11_only:
        print(f"- {backend_info()}")
        issue11(args.quick)
        return
    problem = Problem.from_file(CONFIG)
    if args.quick:
        problem = problem.replace(nx=81, nt=41)
    cases = [("particles", 10_000), ("particles", 100_000), ("fv", None)]
    fixed_iter = 3 if args.quick else 5
    repeats = 1 if args.quick else 3
    print(f"# one MFG solve: {CONFIG.name}, nx={problem.nx}, nt={problem.nt}, sigma={problem.sigma}")
    print(f"- {backend_info()}")
    print(f"- medians of {repeats} repeat(s); fixed-iteration comparison: {fixed_iter} Picard iterations\n")
    print(
        "| FP | particles | Rust: iterations to tol | Rust: solve | Rust: per iter | NumPy ref: per iter | ref / Rust "
        "| Rust split HJB / FP / rest | ref split HJB / FP / rest |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fp, n in cases:
        kw = dict(fp=fp, n_particles=n or 10_000, tol=1e-6, max_iter=200)
        wall, _, ds = median_of(repeats, problem, backend="rust", **kw)
        fixed = dict(kw, tol=1e-300, max_iter=fixed_iter)
        r_wall, r_parts, _ = median_of(repeats, problem, backend="rust", **fixed)
        n_wall, n_parts, _ = median_of(1, problem, backend="numpy", **fixed)

        def split(total: float, parts: dict[str, float]) -> str:
            rest = total - parts["hjb"] - parts["fp"]
            return " / ".join(f"{100 * v / total:.0f}%" for v in (parts["hjb"], parts["fp"], rest))

        print(
            f"| {fp} | {n or '—'} | {ds.attrs['iterations']} "
            f"({'converged' if ds.attrs['converged'] else 'not converged'}) "
            f"| {wall:.2f} s | {1e3 * r_wall / fixed_iter:.1f} ms | {1e3 * n_wall / fixed_iter:.0f} ms "
            f"| {n_wall / r_wall:.1f}× | {split(r_wall, r_parts)} | {split(n_wall, n_parts)} |"
        )
    issue11(args.quick)


BEFORE = {"hjb_scheme": "rk3", "fv_scheme": "upwind1", "method": "picard", "start": "m0"}
AFTER: dict[str, object] = {}


def converged_runs(repeats: int, problem: Problem, **kw: object) -> tuple[list[float], object]:
    """Wall times of ``repeats`` solves to tol and the last result."""
    runs = []
    ds = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = solve(problem, **kw)
        runs.append(time.perf_counter() - t0)
    return runs, ds


def before_after(problem: Problem, repeats: int) -> None:
    """Iterations, seconds to converge and ms per iteration, 0.2 numerics vs the defaults."""
    solve(problem, fp="fv", tol=1e-6)  # warm-up (imports, first-call costs)
    print(f"\n# before / after (issue 11): {CONFIG.name}, nx={problem.nx}, nt={problem.nt}, tol 1e-6")
    print(f"- before = {BEFORE}; after = the defaults; {repeats} repeat(s), median (min)\n")
    print("| FP | numerics | iterations | seconds to converge | ms per iteration |")
    print("|---|---|---|---|---|")
    medians: dict[tuple[str, str], float] = {}
    for fp in ("fv", "particles"):
        for label, opts in (("before", BEFORE), ("after", AFTER)):
            kw = dict(fp=fp, n_particles=10_000, tol=1e-6, max_iter=200, **opts)
            runs, ds = converged_runs(repeats, problem, **kw)
            its = int(ds.attrs["iterations"])
            med = statistics.median(runs)
            medians[fp, label] = med
            conv = "" if ds.attrs["converged"] else " (not converged)"
            print(
                f"| {fp} | {label} | {its}{conv} | {med:.3f} ({min(runs):.3f}) "
                f"| {1e3 * med / its:.1f} ({1e3 * min(runs) / its:.1f}) |",
                flush=True,
            )
    for fp in ("fv", "particles"):
        print(f"- {fp}: before / after = {medians[fp, 'before'] / medians[fp, 'after']:.1f}× (medians)")


def cost_slope(problem: Problem, sizes: tuple[int, ...], repeats: int, before_max_nx: int) -> None:
    """One converged FV solve per nx (nt fixed), before vs after, and the log–log slopes.
    "before" runs once, and only up to ``before_max_nx`` (its explicit HJB costs ∝ nx³)."""
    print(f"\n# cost slope: converged FV solve of {CONFIG.name}, nt = {problem.nt} fixed, tol 1e-6")
    print(
        f"- after: {repeats} repeat(s), min wall time; before: 1 run, nx ≤ {before_max_nx}; "
        "slope = least-squares fit of log(time) on log(nx)\n"
    )
    print("| nx | before: iterations | before: s | after: iterations | after: s | before / after |")
    print("|---|---|---|---|---|---|")
    times: dict[str, list[float]] = {"before": [], "after": []}
    for nx in sizes:
        row = [str(nx)]
        for label, opts in (("before", BEFORE), ("after", AFTER)):
            if label == "before" and nx > before_max_nx:
                row += ["—", "—"]
                continue
            n = 1 if label == "before" else repeats
            runs, ds = converged_runs(n, problem.replace(nx=nx), fp="fv", tol=1e-6, max_iter=200, **opts)
            times[label].append(min(runs))
            conv = "" if ds.attrs["converged"] else " (not converged)"
            row += [f"{int(ds.attrs['iterations'])}{conv}", f"{min(runs):.3f}"]
        row.append(f"{times['before'][-1] / times['after'][-1]:.1f}×" if nx <= before_max_nx else "—")
        print("| " + " | ".join(row) + " |", flush=True)

    def slope(ts: list[float]) -> float:
        xs = [math.log(n) for n in sizes[: len(ts)]]
        ys = [math.log(t) for t in ts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    n_before = len(times["before"])
    print(
        f"- log–log slope of wall time against nx: before {slope(times['before']):.2f} "
        f"(nx {sizes[0]}–{sizes[n_before - 1]}), after {slope(times['after']):.2f} (nx {sizes[0]}–{sizes[-1]}); "
        f"after over the same range as before: {slope(times['after'][:n_before]):.2f}"
    )


def issue11(quick: bool) -> None:
    problem = Problem.from_file(CONFIG)
    if quick:
        problem = problem.replace(nx=81, nt=41)
    before_after(problem, 1 if quick else 3)
    sizes = (81, 161) if quick else (201, 401, 801, 1601)
    cost_slope(problem, sizes, 1 if quick else 2, before_max_nx=161 if quick else 801)


def room_problem(n: int, nt: int) -> Problem2D:
    problem = Sweep.from_file(ROOM).base_problem
    assert isinstance(problem, Problem2D)
    return problem.replace(nx=n, ny=n, nt=nt)


def room_run(n: int, nt: int, fp: str, backend: str, iterations: int | None, n_particles: int) -> dict[str, object]:
    """One measurement (run in a child process): a solve to tol, or ``iterations`` iterations."""
    kw: dict[str, object] = dict(fp=fp, n_particles=n_particles, backend=backend, damping=0.5)
    kw |= dict(tol=1e-300, max_iter=iterations) if iterations else dict(tol=1e-6 if fp == "fv" else 1e-3, max_iter=100)
    problem = room_problem(n, nt)
    # warm-up (imports, first calls) on a small grid: one NumPy iteration at 101² takes minutes
    solve(room_problem(21, 11), **{**kw, "max_iter": 1, "tol": 1e-300, "n_particles": 1000})
    t0 = time.perf_counter()
    ds = solve(problem, **kw)
    wall = time.perf_counter() - t0
    its = int(ds.attrs["iterations"])
    return {"wall": wall, "iterations": its, "converged": int(ds.attrs["converged"]), "per_iter": wall / its}


def _child(threads: int, flag: str = "--room-run", **kw: object) -> dict[str, object]:
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, __file__, flag, json.dumps(kw)], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def room_march(n: int, nt: int, repeats: int) -> dict[str, object]:
    """One HJB and one FV march of the room (run in a child process): the min over ``repeats``
    of each, with m(t) = m0 in the running cost and the FV driven by that u."""
    problem = room_problem(n, nt)
    m = np.repeat(problem.initial_density()[None], nt, axis=0)
    f, g, m0 = problem.running_cost(m), problem.terminal_values(), problem.initial_density()
    kw = dict(dx=problem.dx, dy=problem.dy, sigma=problem.sigma, T=problem.T, bc=problem.bc, nodes=problem.nodes())
    u, counts = hjb_backward_2d(f, g, **kw)  # warm-up
    out: dict[str, object] = {"hjb_substeps": int(counts.sum())}
    for name, march in (("hjb", lambda: hjb_backward_2d(f, g, **kw)), ("fv", lambda: fv_forward_2d(u, m0, **kw))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = march()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
        out[f"{name}_substeps"] = int(result[1].sum())
    return out


def room_threads(quick: bool) -> None:
    """The 2-D marches (Rust) on 1 and 2 Rayon threads, each in its own process, from 51² to
    201² nodes: the scaling inside one member, without the coupling around it."""
    sizes = ((51, 51), (101, 21)) if quick else ((51, 51), (101, 51), (151, 11), (201, 11))
    print(f"# the room's marches on 1 and 2 threads: {ROOM.name}, m(t) = m0; min of 3 (1 if quick)\n")
    print(
        "| nodes | nt | HJB sub-steps | HJB 1 thr (s) | HJB 2 thr (s) | HJB 1 → 2 | FV sub-steps "
        "| FV 1 thr (s) | FV 2 thr (s) | FV 1 → 2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, nt in sizes:
        runs = {t: _child(t, "--room-march", n=n, nt=nt, repeats=1 if quick else 3) for t in (1, 2)}
        one, two = runs[1], runs[2]
        print(
            f"| {n}² | {nt} | {one['hjb_substeps']} | {float(one['hjb']):.3f} | {float(two['hjb']):.3f} "
            f"| {float(one['hjb']) / float(two['hjb']):.2f}× | {one['fv_substeps']} | {float(one['fv']):.3f} "
            f"| {float(two['fv']):.3f} | {float(one['fv']) / float(two['fv']):.2f}× |",
            flush=True,
        )


def room(quick: bool) -> None:
    """The 2-D benchmark of issue 12 (see the module docstring)."""
    n, nt, particles = (51, 51, 20_000) if quick else (101, 101, 100_000)
    print(f"# one 2-D solve: {ROOM.name}, nx = ny = {n}, nt = {nt}; {backend_info()}")
    print(
        "- Rust: solve to tol (FV 1e-6, particles 1e-3); NumPy reference and Rust (1 thread): the same first\n"
        "  iteration, G(m0), whose ratio is the last column (the converged solve's mean per iteration is not\n"
        "  the same work: later iterates need fewer sub-steps)\n"
    )
    print(
        "| FP | Rust 1 thread: iterations / s / ms per iter | Rust 2 threads: iterations / s / ms per iter "
        "| 1 → 2 threads | first iteration 1 → 2 threads (best of 3 rounds) "
        "| first iteration: NumPy ms | first iteration: Rust ms (1 thread) | NumPy / Rust |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fp in ("fv", "particles"):
        common = dict(n=n, nt=nt, fp=fp, n_particles=particles)
        runs = {t: _child(t, backend="rust", iterations=None, **common) for t in (1, 2)}
        # the first iteration on 1 and 2 threads in alternating processes, the best of each: a
        # whole solve is measured once per thread count, and two-thread timings move with the
        # host from one process to the next (README, the room's table)
        rounds = [{t: _child(t, backend="rust", iterations=1, **common) for t in (1, 2)} for _ in range(3)]
        best = {t: min(float(r[t]["per_iter"]) for r in rounds) for t in (1, 2)}
        first = sorted((r[1] for r in rounds), key=lambda r: float(r["per_iter"]))[1]  # the median, for NumPy / Rust
        ref = _child(1, backend="numpy", iterations=1, **common)

        def cell(r: dict[str, object]) -> str:
            conv = "" if r["converged"] else " (not converged)"
            return f"{r['iterations']}{conv} / {r['wall']:.2f} / {1e3 * float(r['per_iter']):.0f}"

        speedup = float(runs[1]["per_iter"]) / float(runs[2]["per_iter"])
        ratio = float(ref["per_iter"]) / float(first["per_iter"])
        label = fp if fp == "fv" else f"particles ({particles:,})"
        print(
            f"| {label} | {cell(runs[1])} | {cell(runs[2])} | {speedup:.2f}× | {best[1] / best[2]:.2f}× "
            f"| {1e3 * float(ref['per_iter']):.0f} | {1e3 * float(first['per_iter']):.0f} | {ratio:.0f}× |",
            flush=True,
        )
    sizes = (31, 51) if quick else (51, 101, 151, 201)
    print(f"\n# cost growth per iteration: FV, nt = {nt}, three iterations, 2 threads\n")
    print("| nodes | ms per iteration |")
    print("|---|---|")
    times = []
    for size in sizes:
        r = _child(2, n=size, nt=nt, fp="fv", backend="rust", iterations=3, n_particles=particles)
        times.append(float(r["per_iter"]))
        print(f"| {size}² | {1e3 * float(r['per_iter']):.0f} |", flush=True)
    xs, ys = [math.log(s * s) for s in sizes], [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    print(f"- log–log slope of the time per iteration against the number of nodes: {slope:.2f}")


if __name__ == "__main__":
    main()

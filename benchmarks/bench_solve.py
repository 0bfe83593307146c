"""One full MFG solve, Rust kernels vs the NumPy reference, measured side by side.

    python benchmarks/bench_solve.py [--quick]      (needs a release build: pip install .)

The standard crowd problem (configs/crowd_log.toml: nx = 201, nt = 101, log coupling), with
the particle Fokker–Planck sweep at 10⁴ and 10⁵ particles and with finite volumes. For each
case: the Rust solve to convergence (iterations, wall time), then both backends for the same
fixed number of Picard iterations (the NumPy reference is too slow to converge in a
benchmark), with the time split into HJB sweep, FP sweep and the rest (coupling, residuals,
Python). Times are medians of repeats; the machine is noisy, so quote the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from mfg_ensemble import Problem, backend_info, solve
from mfg_ensemble.game import solver as solver_mod

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "crowd_log.toml"


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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()

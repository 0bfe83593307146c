"""Cost of one finite-volume Fokker–Planck march against the grid: "muscl2" (second order,
implicit diffusion, the default) vs "upwind1" (the former first-order explicit scheme).

    python benchmarks/bench_fv.py [--quick]      (needs a release build of the Rust kernels)

The drift comes from the crowd problem (configs/crowd_log.toml, σ = 0.2): its converged u
(fp = "fv", nx = 201, nt = 101) is interpolated in x by a cubic spline onto nx = 201, 401, 801,
1601 nodes; nt = 101 output rows stay fixed, so the sub-step counts are each scheme's own
(muscl2: the drift CFL, δ ∝ dx; upwind1: δ ∝ dx²/σ² once diffusion dominates). For each nx
the script prints the Rust wall time of one ``fv_forward`` call (the minimum of repeats: the
machine is shared, and the minimum is the least disturbed sample), the total
sub-steps, and the log–log slope of time against nx between consecutive grids and over the
whole range (least squares).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline

from mfg_ensemble import Problem, solve
from mfg_ensemble.kernels import fv_forward, quadrature_weights

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "crowd_log.toml"


def crowd_drift() -> tuple[CubicSpline, Problem]:
    problem = Problem.from_file(CONFIG)
    ds = solve(problem, fp="fv")
    return CubicSpline(ds.x.values, ds.u.values, axis=1), problem


def timed(repeats: int, **kw: object) -> tuple[float, int]:
    times, steps = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, k = fv_forward(**kw, backend="rust")
        times.append(time.perf_counter() - t0)
        steps = int(k.sum())
    return min(times), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="nx = 201, 401 only")
    args = parser.parse_args()
    spline, problem = crowd_drift()
    sizes = (201, 401) if args.quick else (201, 401, 801, 1601)
    print(f"crowd_log drift, sigma = {problem.sigma}, T = {problem.T}, nt = {problem.nt} output rows (fixed)\n")
    print("| nx | muscl2 s | muscl2 sub-steps | upwind1 s | upwind1 sub-steps |")
    print("|---:|---:|---:|---:|---:|")
    rows = {"muscl2": [], "upwind1": []}
    for nx in sizes:
        x = np.linspace(problem.lo, problem.hi, nx)
        dx = float(x[1] - x[0])
        m0 = np.exp(-0.5 * ((x - 0.25) / 0.07) ** 2)
        m0 /= m0 @ quadrature_weights(nx, dx, "reflect")
        kw = dict(u=spline(x), m0=m0, dx=dx, sigma=problem.sigma, T=problem.T, bc="reflect")
        cells = []
        for scheme in rows:
            repeats = 9 if nx <= 401 else 5
            wall, steps = timed(repeats, scheme=scheme, **kw)
            rows[scheme].append(wall)
            cells += [f"{wall:.4f}", str(steps)]
        print(f"| {nx} | " + " | ".join(cells) + " |")
    logn = np.log(np.array(sizes, dtype=float))
    print()
    for scheme, walls in rows.items():
        logt = np.log(walls)
        pairs = ", ".join(f"{s:.2f}" for s in np.diff(logt) / np.diff(logn))
        fit = np.polyfit(logn, logt, 1)[0]
        print(f"{scheme}: log-log slope of wall time vs nx: {fit:.2f} overall (per doubling: {pairs})")


if __name__ == "__main__":
    main()

"""Cost of one 2-D HJB march: `hjb_backward_2d` in Rust against its NumPy reference.

    RAYON_NUM_THREADS=1 python benchmarks/bench_hjb2d.py [--n 101] [--nt 21] [--repeats 3] [--no-numpy]

Two problems on the unit square, n × n nodes, nt output times, σ = 0.2, T = 1, "js" WENO:
"free" (periodic both ways, no obstacles, g = cos 2πx · cos 2πy / (2π)², f = 1) and "room"
("reflect", a pillar [0.4, 0.6]² and an exit of width 0.2 in the middle of the bottom wall,
g = 0, f = 1: the time to leave). Prints, per problem, the wall and CPU time per call of each
backend, the total sub-steps, and the Rust speed-up; and the largest difference between them.

Measured before this branch's speed-up (2026-12-04, 2 shared cores under heavy load from other
sessions (load average 3-5), RAYON_NUM_THREADS=1, n = 101, nt = 21, one call each; wall times,
Rust CPU time in brackets):

    problem  sub-steps   rust                 numpy       speed-up (wall)   max rel diff
    free        52       0.90 s (0.86 s cpu)   20.2 s         22.6             3.1e-15
    room      1094      25.2 s (16.2 s cpu)   160.4 s          6.4             8.9e-16

Before (91f5fb8, lead2d) and after (branch hjb2d), measured back to back (2026-12-04, load
average ~4.5 on 2 cores, RAYON_NUM_THREADS=1, n = 101, nt = 6, Rust CPU time per sub-step):

    problem  sub-steps   before      after     speed-up
    free        50       15.0 ms     3.7 ms      4.1
    room     1052/1053   13.9 ms     3.2 ms      4.4

(free includes building the lines, once per call.) Where the time went before (perf, room):
~20 % Rayon's hand-over between the Python thread and the pool (futex waits, one per parallel
loop, hundreds per sub-step), ~8 % malloc/memset of per-call and per-line buffers, 14 % the
interleaved pentadiagonal solves, the rest WENO (SIMD ~3 %), ghost gathers, transposes. What
changed: the march runs on a Rayon worker (`rayon::scope`), buffers live per march and per
worker, K = 2 ADI sweeps in one order (x then y) instead of 3 symmetrised (16 line-solve
passes per sub-step instead of 48; see the reference's docstring for the measured defects),
each direction's Godunov part computed in its WENO pass. After: ~1.5 ms of the 3.2 ms are the
explicit part (4 WENO evaluations of both directions per sub-step, the SIMD kernel ~30 % of it),
~1.7 ms the implicit stages (16 line-solve passes, 7 Δ₄ evaluations). The room's steep layer at
the exit (u = 0 there, ≈ 1 next to it) sets its many sub-steps. The NumPy reference is vectorised
over the lines of a direction.

Not reached yet: the issue's converged FV room solve (configs/room.toml at 101², nt = 101, T = 2)
in 10 s. After this speed-up, `bench_solve.py --room-run` (fv, 3 iterations, 2 threads, load
average 2.4-3.6) took 47.5 s per coupling iteration: the march takes far more sub-steps there
than the ~1000 assumed, which the cost per sub-step alone does not cure.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mfg_ensemble.kernels import hjb_backward_2d
from mfg_ensemble.kernels.reference.grid2d import EXIT, OBSTACLE

SIGMA, T = 0.2, 1.0


def problems(n: int, nt: int) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    out = {}
    d = 1.0 / n
    x = np.arange(n) * d
    g = np.cos(2 * np.pi * x)[None, :] * np.cos(2 * np.pi * x)[:, None] / (2 * np.pi) ** 2
    out["free"] = (np.ones((nt, n, n)), g, dict(dx=d, dy=d, bc=("periodic", "periodic")))
    d = 1.0 / (n - 1)
    x = np.arange(n) * d
    nodes = np.zeros((n, n), dtype=np.uint8)
    inside = (x >= 0.4) & (x <= 0.6)
    nodes[np.ix_(inside, inside)] = OBSTACLE
    nodes[0, (x >= 0.4) & (x <= 0.6)] = EXIT
    out["room"] = (np.ones((nt, n, n)), np.zeros((n, n)), dict(dx=d, dy=d, nodes=nodes))
    return out


def timed(f, g, kw, backend: str, repeats: int) -> tuple[float, float, np.ndarray, int]:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        u, counts = hjb_backward_2d(f, g, sigma=SIGMA, T=T, backend=backend, **kw)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), u, int(counts.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=101)
    ap.add_argument("--nt", type=int, default=21)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-numpy", action="store_true")
    args = ap.parse_args()
    print(f"n = {args.n}, nt = {args.nt}; times per call (median of {args.repeats} Rust, 1 NumPy)")
    for name, (f, g, kw) in problems(args.n, args.nt).items():
        wr, cr, ur, kr = timed(f, g, kw, "rust", args.repeats)
        line = f"{name:5s} rust {wr * 1e3:9.1f} ms wall {cr * 1e3:9.1f} ms cpu, {kr} sub-steps"
        if not args.no_numpy:
            wn, cn, un, kn = timed(f, g, kw, "numpy", 1)
            diff = float(np.max(np.abs(ur - un)) / np.max(np.abs(un)))
            line += f" | numpy {wn * 1e3:9.1f} ms wall ({kn} sub-steps) | speed-up {wn / wr:6.1f}"
            line += f" | max rel diff {diff:.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()

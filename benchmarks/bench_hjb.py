"""Cost of one HJB march against the grid: wall time of `hjb_backward` at nx = 201 … 1601.

    RAYON_NUM_THREADS=1 python benchmarks/bench_hjb.py [--before OLD_EXTENSION.so] [--repeats 3]

The crowd problem of configs/crowd_log.toml without the coupling iteration: σ = 0.2, T = 1,
"reflect", terminal cost ½(x − 0.75)², running cost f = 0.1·log(m + 0.01) for a Gaussian crowd
(std 0.07) moving from x = 0.25 to 0.75. nt = 101 output times at every nx (fixed), so the
sub-step counts alone carry the cost's growth. For each scheme ("imex", the default, and the
explicit "rk3") and optionally for an older build of the extension (`--before`, e.g. the
build before the IMEX scheme existed, which only had explicit TVD-RK3), it prints the median
wall time per call, the total sub-steps, and the log–log slope of time against nx.

Measured (2026-12-04, 2 shared cores under heavy load from other sessions, RAYON_NUM_THREADS=1;
CPU time of the process, which the load disturbs least; "before" = the build before issue 11's
HJB work, explicit TVD-RK3 with the 3-point Laplacian):

    nx                       201      401      801     1601    log-log slope
    before (rk3, 3-point)   15.6    117.4    901.2   7510.1 ms     2.97
    rk3 (5-point Δ₄)        22.2    164.0   1333.6  10248.4 ms     2.96
    imex (default)           9.1     31.4    119.3    467.1 ms     1.90

Sub-steps in total: before 4483 … 259466, imex 483 … 3466 (∝ nx).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import numpy as np

from mfg_ensemble.kernels import hjb_backward

GRIDS = (201, 401, 801, 1601)
NT, SIGMA, T = 101, 0.2, 1.0


def crowd(nx: int) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.linspace(0.0, 1.0, nx)
    t = np.linspace(0.0, T, NT)[:, None]
    m = np.exp(-0.5 * ((x[None, :] - 0.25 - 0.5 * t) / 0.07) ** 2) / (0.07 * np.sqrt(2 * np.pi))
    return 0.1 * np.log(m + 0.01), 0.5 * (x - 0.75) ** 2, x[1]


def load_extension(path: str):
    spec = importlib.util.spec_from_file_location("_rust_core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(call, args: tuple, repeats: int) -> tuple[float, float, int]:
    """Median wall time and median CPU time of the process (less disturbed by other load on a
    shared machine; equal to the work with RAYON_NUM_THREADS=1), and the sub-steps."""
    times, cpu, steps = [], [], 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        _, k = call(*args)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        steps = int(np.sum(k))
    return statistics.median(times), statistics.median(cpu), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="an older build of the extension (.so) to time as well")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cases = {
        "imex": lambda f, g, dx: hjb_backward(f, g, dx=dx, sigma=SIGMA, T=T, scheme="imex"),
        "rk3": lambda f, g, dx: hjb_backward(f, g, dx=dx, sigma=SIGMA, T=T, scheme="rk3"),
    }
    if args.before:
        old = load_extension(args.before)
        cases["before"] = lambda f, g, dx: old.hjb_backward(f, g, dx=dx, sigma=SIGMA, T=T)
    print(f"hjb_backward, crowd running cost, sigma = {SIGMA}, nt = {NT} (fixed), reflect")
    for name, call in cases.items():
        seconds, cpus = [], []
        for nx in GRIDS:
            f, g, dx = crowd(nx)
            repeats = args.repeats if nx < 1601 or name == "imex" else 1
            s, c, steps = measure(call, (f, g, dx), repeats)
            seconds.append(s)
            cpus.append(c)
            print(f"  {name:>6}  nx = {nx:5d}: wall {s * 1e3:10.1f} ms   cpu {c * 1e3:10.1f} ms   sub-steps {steps:7d}")
        for label, ts in (("wall", seconds), ("cpu", cpus)):
            slope = np.polyfit(np.log(GRIDS), np.log(ts), 1)[0]
            pairs = np.log2(np.array(ts[1:]) / np.array(ts[:-1]))
            per = ", ".join(f"{p:.2f}" for p in pairs)
            print(f"  {name:>6}  {label} log-log slope {slope:.2f} (per doubling: {per})")


if __name__ == "__main__":
    main()

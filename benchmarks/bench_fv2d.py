"""Cost of one 2-D finite-volume Fokker–Planck march (``fv_forward_2d``): Rust against the NumPy
reference, on a room with an obstacle and an exit.

    python benchmarks/bench_fv2d.py [--nx 101] [--nt 21] [--repeats 3]   (needs a release build)

The drift is a fixed smooth field pushing toward the exit (u = distance² to it plus a ripple),
σ = 0.2, T = 0.5; both backends take the same sub-steps. Printed: the wall time per call of
each backend (the minimum of the repeats: the machine is shared), the sub-steps, the ratio,
the Rust time per node and sub-step, and max |m_rust − m_numpy| / max |m| with the exited mass.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mfg_ensemble.kernels import backend_info, fv_forward_2d


def case(nx: int, nt: int) -> dict:
    x, y = np.linspace(0, 1, nx), np.linspace(0, 1, nx)
    X, Y = np.meshgrid(x, y)
    nodes = np.zeros((nx, nx), dtype=np.uint8)
    nodes[nx // 4 : nx // 2, nx // 3 : nx // 2] = 1  # obstacle
    nodes[nx // 2 - nx // 10 : nx // 2 + nx // 10, 0] = 2  # exit on the left wall
    u = 2.0 * (X**2 + (Y - 0.5) ** 2) + 0.2 * np.sin(6 * X) * np.cos(5 * Y)
    u = np.where(nodes == 0, u, 0.0)
    m0 = np.exp(-((X - 0.7) ** 2 + (Y - 0.5) ** 2) / 0.02)
    m0 = np.where(nodes == 0, m0, 0.0)
    return dict(u=np.tile(u, (nt, 1, 1)), m0=m0, dx=x[1], dy=y[1], sigma=0.2, T=0.5, nodes=nodes)


def timed(kw: dict, backend: str, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fv_forward_2d(**kw, backend=backend)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nx", type=int, default=101, help="nodes per side (nx = ny)")
    parser.add_argument("--nt", type=int, default=21, help="output rows")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = backend_info()
    kw = case(args.nx, args.nt)
    t_rust, (m_rust, k, e_rust) = timed(kw, "rust", max(args.repeats, 3))
    t_np, (m_np, k_np, e_np) = timed(kw, "numpy", args.repeats)
    assert (k == k_np).all()
    steps = int(k.sum())
    print(f"fv_forward_2d, nx = ny = {args.nx}, nt = {args.nt}, {steps} sub-steps,")
    print(f"Rust {info['build_profile']} build, {info['rayon_threads']} Rayon threads\n")
    print("| backend | s per call | µs per node·sub-step |")
    print("|---|---:|---:|")
    for name, t in (("rust", t_rust), ("numpy", t_np)):
        print(f"| {name} | {t:.3f} | {1e6 * t / (steps * args.nx**2):.3f} |")
    print(f"\nnumpy / rust = {t_np / t_rust:.1f}")
    print(f"max |m_rust - m_numpy| / max |m| = {np.abs(m_rust - m_np).max() / np.abs(m_np).max():.2e}")
    print(f"exited at T: {e_rust[-1]:.6f} (rust), {e_np[-1]:.6f} (numpy)")


if __name__ == "__main__":
    main()

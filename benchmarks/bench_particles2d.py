"""Cost of one 2-D particle Fokker–Planck march (``particles_forward_2d``) and of one 2-D KDE
(``kde_2d``): Rust against the NumPy reference.

    python benchmarks/bench_particles2d.py [--quick]      (needs a release build of the Rust kernels)

A room [0, 1]² with nx = ny = 101 nodes, a square pillar in the middle and an exit on the right
wall; u(t, x, y) = 3·((x − 1)² + (y − 0.5)²)·(1 + 0.1·t) (drift towards the exit), σ = 0.3, T = 1,
nt = 11 output times; 10⁵ particles (--quick: 2·10⁴) started uniformly in the left third. The
script prints the wall time of one call per backend and method (the minimum of repeats: the
machine is shared), the sub-steps taken and the exited fraction, and the Rust/NumPy agreement.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mfg_ensemble.kernels import backend_info, kde_2d, particles_forward_2d


def setup(n: int, size: int = 101, nt: int = 11):
    x = np.linspace(0.0, 1.0, size)
    X, Y = np.meshgrid(x, x)
    u = np.stack([3.0 * ((X - 1.0) ** 2 + (Y - 0.5) ** 2) * (1.0 + 0.1 * k) for k in range(nt)])
    nodes = np.zeros((size, size), dtype=np.uint8)
    nodes[40:60, 45:55] = 1
    nodes[45:56, -1] = 2
    x0 = np.random.default_rng(0).uniform([0.02, 0.02], [0.33, 0.98], (n, 2))
    return x, u, nodes, x0


def best(repeats: int, call):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2·10⁴ particles")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    x, u, nodes, x0 = setup(n)
    print(f"backend info: {backend_info()}")
    print(f"{n} particles, nx = ny = {x.size}, nt = {u.shape[0]}, sigma = 0.3, T = 1\n")
    print("| call | method | Rust s | NumPy s | NumPy/Rust | max rel. diff |")
    print("|---|---|---:|---:|---:|---:|")
    for method in ("binned", "exact"):
        kw = dict(lo=(0, 0), hi=(1, 1), sigma=0.3, T=1.0, seed=1, nodes=nodes, method=method)
        t_rust, (m_r, k, e) = best(3, lambda: particles_forward_2d(x0, u, backend="rust", **kw))  # noqa: B023
        t_np, (m_n, _, _) = best(1, lambda: particles_forward_2d(x0, u, backend="numpy", **kw))  # noqa: B023
        diff = np.max(np.abs(m_r - m_n)) / np.max(np.abs(m_n))
        print(
            f"| particles_forward_2d | {method} | {t_rust:.3f} | {t_np:.2f} | {t_np / t_rust:.0f} | {diff:.1e} |"
            f"  sub-steps {int(k.sum())}, exited {e[-1]:.3f}"
        )
    for method in ("binned", "exact"):
        t_rust, a = best(5, lambda: kde_2d(x0, x, x, "scott", method=method, nodes=nodes, backend="rust"))  # noqa: B023
        t_np, b = best(2, lambda: kde_2d(x0, x, x, "scott", method=method, nodes=nodes, backend="numpy"))  # noqa: B023
        diff = np.max(np.abs(a - b)) / np.max(np.abs(b))
        print(f"| kde_2d | {method} | {t_rust:.4f} | {t_np:.3f} | {t_np / t_rust:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()

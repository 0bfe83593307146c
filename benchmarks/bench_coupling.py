"""How many evaluations of G the 2-D room's coupling needs, whatever the accelerator.

    python benchmarks/bench_coupling.py [--n 51] [--nt 51]      (a release build: pip install .)

The room of configs/room.toml at n² nodes and nt output times, finite volumes. It is solved
to 1e-9 by the default method ("adaptive"); then the linearised map G' at that solution m* is
measured by difference quotients, G'v ≈ (G(m* + εv) − G(m*))/ε with ε = 1e-5·‖m*‖ (the
sub-step counts held at those of m*, as ``FixedPointMap.probe`` does), on the free nodes at
t > 0 (G(m)(0) = m0 whatever m). Printed: the time of one evaluation of G at m*, the
quotients' consistency for ε = 1e-2 … 1e-6, the largest Ritz values of G' (Arnoldi, 10
steps), and the residual of unrestarted GMRES on (I − G')x = b (b random, x0 = 0) after every
iteration.

Why: near the solution an iteration that costs one evaluation of G and mixes past iterates
(Anderson, the adaptive method) is, on the linearised problem, at best GMRES (Walker & Ni
2011). So GMRES's count to 1e-6 is a lower bound for such a solve's iterations from close
by, and times the cost of one evaluation a lower bound for the solve's time (README, "The
< 10 s target"). A preconditioner, an approximate inverse of I − G' much cheaper than G, is what
could lower it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.sparse.linalg import LinearOperator, gmres

from mfg_ensemble import Problem2D, Sweep, backend_info, solve
from mfg_ensemble.game.solver import FixedPointMap, SolverOptions
from mfg_ensemble.kernels.reference.grid2d import FREE

ROOM = Path(__file__).resolve().parent.parent / "configs" / "room.toml"
RELATIVE_EPS = 1e-5


def room(n: int, nt: int) -> Problem2D:
    problem = Sweep.from_file(ROOM).base_problem
    assert isinstance(problem, Problem2D)
    return problem.replace(nx=n, ny=n, nt=nt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=51, help="nodes per axis")
    ap.add_argument("--nt", type=int, default=51, help="output times")
    ap.add_argument("--krylov", type=int, default=80, help="most GMRES iterations")
    args = ap.parse_args()
    problem = room(args.n, args.nt)
    print(f"# the coupling of {ROOM.name} at {args.n}², nt = {args.nt}, finite volumes; {backend_info()}\n")
    ds = solve(problem, fp="fv", tol=1e-9, max_iter=400)
    residual = ds["residual"].values
    to_1e6 = int(np.argmax(residual < 1e-6)) + 1 if (residual < 1e-6).any() else None
    print(f"- adaptive mixing from m0: {to_1e6} iterations to 1e-6, {ds.attrs['iterations']} to 1e-9")
    m_star = ds["m"].values
    G = FixedPointMap(problem, SolverOptions(fp="fv"), None)
    G.evaluate(m_star)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        _, g_star = G.probe(m_star)
        times.append(time.perf_counter() - t0)
    evaluation = statistics.median(times)
    print(f"- one evaluation of G at m*: {evaluation:.3f} s (median of 3)")
    free = np.repeat((problem.nodes() == FREE)[None], problem.nt, axis=0)
    free[0] = False
    at = np.flatnonzero(free.ravel())
    scale = float(np.linalg.norm(m_star.ravel()[at]))

    def quotient(v: np.ndarray, eps: float) -> np.ndarray:
        """G'v by a difference quotient, v of norm one on the free nodes."""
        dm = np.zeros(m_star.size)
        dm[at] = v
        _, g = G.probe(m_star + eps * scale * dm.reshape(m_star.shape))
        return (g - g_star).ravel()[at] / (eps * scale)

    rng = np.random.default_rng(0)
    v = rng.standard_normal(at.size)
    v /= np.linalg.norm(v)
    print(
        "- difference quotients, v random: "
        + ", ".join(f"ε {eps:g}: |G'v| {np.linalg.norm(quotient(v, eps)):.4f}" for eps in (1e-2, 1e-4, 1e-6))
    )
    basis, hessenberg = [v], np.zeros((11, 10))
    for j in range(10):
        w = quotient(basis[j], RELATIVE_EPS)
        for i in range(j + 1):
            hessenberg[i, j] = basis[i] @ w
            w = w - hessenberg[i, j] * basis[i]
        hessenberg[j + 1, j] = np.linalg.norm(w)
        basis.append(w / hessenberg[j + 1, j])
    ritz = np.linalg.eigvals(hessenberg[:10, :10])
    ritz = ritz[np.argsort(-np.abs(ritz))]
    print("- Ritz values of G' (Arnoldi, 10 steps): " + ", ".join(f"{z.real:.2f}{z.imag:+.2f}j" for z in ritz))

    def apply(x: np.ndarray) -> np.ndarray:
        x = np.ravel(x)
        size = float(np.linalg.norm(x))
        return x.copy() if size == 0.0 else x - size * quotient(x / size, RELATIVE_EPS)

    history: list[float] = []
    operator = LinearOperator((at.size, at.size), matvec=apply, dtype=np.float64)
    b = rng.standard_normal(at.size)
    gmres(operator, b, rtol=1e-6, restart=args.krylov, maxiter=1, callback=history.append, callback_type="pr_norm")
    history_arr = np.array(history)
    first = {level: int(np.argmax(history_arr < level)) + 1 for level in (1e-3, 1e-6) if (history_arr < level).any()}
    rate = (history_arr[-1] / history_arr[0]) ** (1.0 / max(len(history_arr) - 1, 1))
    print(
        f"- GMRES on (I − G')x = b: iterations to 1e-3: {first.get(1e-3)}, to 1e-6: {first.get(1e-6)} "
        f"(of at most {args.krylov}); mean rate {rate:.2f} per iteration"
    )
    print("  residuals: " + " ".join(f"{r:.1e}" for r in history_arr[::5]))
    if 1e-6 in first:
        print(
            f"- so a solve by one-evaluation steps takes at least {first[1e-6]} × {evaluation:.3f} s = "
            f"{first[1e-6] * evaluation:.1f} s to go from a residual of 1 to 1e-6 near m* (timings: run alone)"
        )


if __name__ == "__main__":
    main()

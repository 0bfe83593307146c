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


class Linearised:
    """G' at m* by difference quotients: ``self(v, eps)`` = (G(m* + ε‖m*‖v) − G(m*))/(ε‖m*‖)
    on the free nodes at t > 0, for v of norm one there, at the sub-step counts of m*."""

    def __init__(self, problem: Problem2D, m_star: np.ndarray) -> None:
        self.G = FixedPointMap(problem, SolverOptions(fp="fv"), None)
        self.G.evaluate(m_star)  # the floors: the counts at m*
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _, self.g_star = self.G.probe(m_star)
            times.append(time.perf_counter() - t0)
        self.evaluation = statistics.median(times)
        """Seconds of one evaluation of G at m* (median of 3)."""
        free = np.repeat((problem.nodes() == FREE)[None], problem.nt, axis=0)
        free[0] = False
        self.at = np.flatnonzero(free.ravel())
        self.m_star = m_star
        self.scale = float(np.linalg.norm(m_star.ravel()[self.at]))

    def __call__(self, v: np.ndarray, eps: float = RELATIVE_EPS) -> np.ndarray:
        dm = np.zeros(self.m_star.size)
        dm[self.at] = v
        _, g = self.G.probe(self.m_star + eps * self.scale * dm.reshape(self.m_star.shape))
        return (g - self.g_star).ravel()[self.at] / (eps * self.scale)


def ritz_values(J: Linearised, v: np.ndarray, steps: int = 10) -> np.ndarray:
    """The Ritz values of G' after ``steps`` Arnoldi steps from v (norm one), largest first."""
    basis, hessenberg = [v], np.zeros((steps + 1, steps))
    for j in range(steps):
        w = J(basis[j])
        for i in range(j + 1):
            hessenberg[i, j] = basis[i] @ w
            w = w - hessenberg[i, j] * basis[i]
        hessenberg[j + 1, j] = np.linalg.norm(w)
        basis.append(w / hessenberg[j + 1, j])
    ritz = np.linalg.eigvals(hessenberg[:steps, :steps])
    return ritz[np.argsort(-np.abs(ritz))]


def gmres_residuals(J: Linearised, b: np.ndarray, most: int) -> np.ndarray:
    """The relative residuals of unrestarted GMRES on (I − G')x = b from 0, one per iteration
    (to 1e-6, or ``most`` iterations)."""

    def apply(x: np.ndarray) -> np.ndarray:
        x = np.ravel(x)
        size = float(np.linalg.norm(x))
        return x.copy() if size == 0.0 else x - size * J(x / size)

    history: list[float] = []
    operator = LinearOperator((b.size, b.size), matvec=apply, dtype=np.float64)
    gmres(operator, b, rtol=1e-6, restart=most, maxiter=1, callback=history.append, callback_type="pr_norm")
    return np.array(history)


def first_below(values: np.ndarray, level: float) -> int | None:
    """1-based index of the first value below ``level`` (None if none)."""
    below = values < level
    return int(np.argmax(below)) + 1 if below.any() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=51, help="nodes per axis")
    ap.add_argument("--nt", type=int, default=51, help="output times")
    ap.add_argument("--krylov", type=int, default=80, help="most GMRES iterations")
    args = ap.parse_args()
    problem = room(args.n, args.nt)
    print(f"# the coupling of {ROOM.name} at {args.n}², nt = {args.nt}, finite volumes; {backend_info()}\n")
    ds = solve(problem, fp="fv", tol=1e-9, max_iter=400)
    to_1e6 = first_below(ds["residual"].values, 1e-6)
    print(f"- adaptive mixing from m0: {to_1e6} iterations to 1e-6, {ds.attrs['iterations']} to 1e-9")
    J = Linearised(problem, ds["m"].values)
    print(f"- one evaluation of G at m*: {J.evaluation:.3f} s (median of 3)")
    rng = np.random.default_rng(0)
    v = rng.standard_normal(J.at.size)
    v /= np.linalg.norm(v)
    quotients = ", ".join(f"ε {eps:g}: |G'v| {np.linalg.norm(J(v, eps)):.4f}" for eps in (1e-2, 1e-4, 1e-6))
    print(f"- difference quotients, v random: {quotients}")
    ritz = ", ".join(f"{z.real:.2f}{z.imag:+.2f}j" for z in ritz_values(J, v))
    print(f"- Ritz values of G' (Arnoldi, 10 steps): {ritz}")
    residuals = gmres_residuals(J, rng.standard_normal(J.at.size), args.krylov)
    to = {level: first_below(residuals, level) for level in (1e-3, 1e-6)}
    rate = (residuals[-1] / residuals[0]) ** (1.0 / max(residuals.size - 1, 1))
    print(
        f"- GMRES on (I − G')x = b: iterations to 1e-3: {to[1e-3]}, to 1e-6: {to[1e-6]} "
        f"(of at most {args.krylov}); mean rate {rate:.2f} per iteration"
    )
    print("  residuals: " + " ".join(f"{r:.1e}" for r in residuals[::5]))
    if to[1e-6] is not None:
        print(
            f"- so a solve by one-evaluation steps takes at least {to[1e-6]} × {J.evaluation:.3f} s = "
            f"{to[1e-6] * J.evaluation:.1f} s to go from a residual of 1 to 1e-6 near m* (timings: run alone)"
        )


if __name__ == "__main__":
    main()

"""The convergence table of issue 11: does the coupled solve converge across the (σ, λ) plane?

    python benchmarks/bench_convergence.py [--max-iter 200] [--problems crowd_log two_exits]
                                           [--option key=value ...]      (needs a release build)

For configs/crowd_log.toml and configs/two_exits.toml, with fp = "fv" and tol = 1e-6, every
cell σ ∈ {0.02, 0.05, 0.1, 0.3, 1.0} × λ ∈ {0.01, 0.1, 1, 5} (problem.sigma and
problem.coupling.strength replaced, everything else as in the file, the solver's other options
at their defaults unless ``--option`` says otherwise) is solved once. For each cell it prints
the iterations, how many of them were Newton–Krylov steps, the evaluations of G: m ↦ FP(HJB(m))
(one per iteration for Picard/Anderson, several per Newton step),
whether it converged, the final residual, the seconds and where the first iterate came from
(attrs["start"]: the coarse-grid solve, or m0); then the count of converged cells
per problem.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

from mfg_ensemble import Problem, solve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SIGMAS = (0.02, 0.05, 0.1, 0.3, 1.0)
STRENGTHS = (0.01, 0.1, 1.0, 5.0)
PROBLEMS = ("crowd_log", "two_exits")


def cell(name: str, sigma: float, strength: float) -> Problem:
    """The problem of configs/<name>.toml at noise ``sigma`` and coupling strength ``strength``."""
    base = Problem.from_file(CONFIGS / f"{name}.toml")
    coupling = base.coupling.model_copy(update={"strength": strength})
    return base.replace(sigma=sigma, coupling=coupling)


def run_cell(name: str, sigma: float, strength: float, **options: object) -> dict[str, object]:
    """One solve of a cell with fp = "fv", tol = 1e-6 and ``options``; its outcome."""
    opts = {"fp": "fv", "tol": 1e-6, **options}
    t0 = time.perf_counter()
    ds = solve(cell(name, sigma, strength), **opts)
    seconds = time.perf_counter() - t0
    return {
        "problem": name,
        "sigma": sigma,
        "strength": strength,
        "iterations": int(ds.attrs["iterations"]),
        "evaluations": int(ds.attrs.get("evaluations", ds.attrs["iterations"])),
        "newton": int(ds.attrs.get("newton_steps", 0)),
        "converged": bool(ds.attrs["converged"]),
        "residual": float(ds.residual[-1]),
        "seconds": seconds,
        "method": ds.attrs.get("solver.method", "picard/anderson"),
        "start": str(ds.attrs.get("start", "m0")),
    }


def _value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS))
    parser.add_argument("--strengths", nargs="+", type=float, default=list(STRENGTHS))
    parser.add_argument("--option", action="append", default=[], help="a solver option key=value")
    args = parser.parse_args()
    options = {k: _value(v) for k, v in (o.split("=", 1) for o in args.option)}
    options["max_iter"] = args.max_iter
    print(f"fp = fv, tol = 1e-6, options {options}")
    header = (
        f"{'problem':<10} {'sigma':>5} {'lambda':>6} {'iter':>5} {'newton':>6} {'G evals':>7} {'conv':>5} "
        f"{'residual':>9} {'s':>6}  start"
    )
    total_start = time.perf_counter()
    for name in args.problems:
        print(header)
        ok = 0
        for sigma in args.sigmas:
            for strength in args.strengths:
                r = run_cell(name, sigma, strength, **options)
                ok += r["converged"]
                print(
                    f"{name:<10} {sigma:>5g} {strength:>6g} {r['iterations']:>5d} {r['newton']:>6d} "
                    f"{r['evaluations']:>7d} "
                    f"{'yes' if r['converged'] else 'NO':>5} {r['residual']:>9.2e} {r['seconds']:>6.2f}  {r['start']}",
                    flush=True,
                )
        print(f"{name}: {ok} of {len(args.sigmas) * len(args.strengths)} converge\n", flush=True)
    print(f"total {time.perf_counter() - total_start:.1f} s")


if __name__ == "__main__":
    main()

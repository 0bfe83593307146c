"""Benchmark of mfg_ensemble's whole-array kernels: NumPy reference vs Rust, 1 thread vs all.

What it measures (wall time of one call, ``time.perf_counter``, median of repeated samples):

* ``kernels.weno5_derivatives`` (bc="periodic", variant="js") on 1e3 and 1e6 nodes;
* ``kernels.evolve_particles`` (one Euler–Maruyama step, Philox noise drawn inside, reflecting
  walls) on 1e4 and 1e6 particles;
* ``kernels.kde`` (method "exact" and "binned", bc "reflect" and "none") of 1e4, 1e5 and 1e6
  samples onto 1000 uniform grid points, with one float bandwidth per sample size (Scott's
  rule of that sample) for every implementation. On bc="none" (plain Gaussian KDE, no wall
  images, no renormalisation) the exact sum is compared with ``scipy.stats.gaussian_kde`` and
  the binned one with ``KDEpy.FFTKDE`` on the same samples, bandwidth and grid; the error
  column is max_g |m(g) − m_exact(g)| / max_g m_exact(g), against the Rust exact sum;
* ``kernels.smoothness_indicators`` called once per 5-point window in a Python loop over a
  1e3-node array (the seed's per-call style) against one whole-array call, which shows the
  per-call overhead that whole-array kernels avoid.

Each implementation is timed in a fresh child interpreter (this script re-run with
``--worker``): the NumPy reference, scipy and KDEpy in one child, Rust in one child with
RAYON_NUM_THREADS=1 and one with RAYON_NUM_THREADS=<usable cores> (Rayon reads the variable
once per process). All children run one after the other in the same invocation. NumPy
reference / scipy cells whose estimated single call (linear extrapolation from the next
smaller size) exceeds a limit are reported as skipped with the estimate.

Run (needs ``pip install . KDEpy scipy``; under a minute on 2 idle cores)::

    python benchmarks/bench_kernels.py          # full sizes, prints a Markdown table
    python benchmarks/bench_kernels.py --quick  # small sizes only: a smoke test (seconds)

The table goes to stdout, progress to stderr. The script ends with one line per performance
target of the issue: met, or missed by how much.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import mfg_ensemble
from mfg_ensemble import kernels
from mfg_ensemble.kernels import backend as _backend

Record = dict[str, Any]
"""One timing cell: {"median": s, "samples": k, "number": calls per sample} or {"skipped": est. s}."""

KDE_GRID_POINTS = 1000
KDE_LO, KDE_HI = -6.0, 6.0
"""KDE grid: 1000 uniform points on [KDE_LO, KDE_HI]; the samples lie strictly inside."""
SAMPLE_LIMIT = 5.5
SEED = 20_240_611

REFERENCE_IMPLS = ("numpy", "scipy", "kdepy")
RUST_IMPLS = ("rust", "rust_raw")
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Settings:
    """Problem sizes and timing budget of one run."""

    weno: tuple[int, ...]
    particles: tuple[int, ...]
    kde: tuple[int, ...]
    percall_nodes: int
    budget: float  # seconds of repeated samples per cell (fast calls)
    min_samples: int
    max_call: float  # skip a cell whose estimated single call takes longer (seconds)


FULL = Settings(
    weno=(10**3, 10**6),
    particles=(10**4, 10**6),
    kde=(10**4, 10**5, 10**6),
    percall_nodes=10**3,
    budget=0.4,
    min_samples=5,
    max_call=5.0,
)
QUICK = Settings(
    weno=(10**3, 10**4),
    particles=(10**3, 10**4),
    kde=(10**3, 10**4),
    percall_nodes=10**3,
    budget=0.03,
    min_samples=3,
    max_call=1.0,
)


# ---------------------------------------------------------------------------------------------
# timing


def _run(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(fn: Callable[[], object], budget: float, min_samples: int) -> Record:
    """Median seconds per call of ``fn`` (garbage collector off, as in ``timeit``).

    The first call is a warm-up. Calls over 1 s are timed once (the warm-up), calls over
    0.2 s three times; faster calls are grouped so that one sample lasts ≥ 2 ms and sampled
    until ``budget`` seconds are spent (at least ``min_samples``, at most 50 samples).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        first = _run(fn, 1)
        if first >= 1.0:
            return {"median": first, "samples": 1, "number": 1}
        if first >= 0.2:
            return {"median": statistics.median(_run(fn, 1) for _ in range(3)), "samples": 3, "number": 1}
        number = max(1, math.ceil(2e-3 / max(first, 1e-9)))
        per_call = _run(fn, number)
        samples = min(50, max(min_samples, int(budget / max(per_call * number, 1e-9))))
        times = [_run(fn, number) for _ in range(samples)]
        return {"median": statistics.median(times), "samples": samples, "number": number}
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------------------------
# inputs (deterministic, rebuilt identically in every child)


def weno_input(n: int) -> tuple[np.ndarray, float]:
    """A periodic profile with a kink (so the nonlinear weights matter) on n nodes."""
    x = np.arange(n) / n
    return np.sin(2 * np.pi * x) + 0.5 * np.abs(np.sin(3 * np.pi * x)), 1.0 / n


def particle_input(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions uniform in [0, 1] and a smooth drift."""
    x = np.random.default_rng(SEED + n).uniform(0.0, 1.0, n)
    return x, 0.5 * np.sin(2 * np.pi * x)


def kde_input(n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(samples, grid, bandwidth): n draws of a two-bump Gaussian mixture kept inside
    (−5.5, 5.5), the 1000-point grid on [−6, 6], and Scott's bandwidth of the sample."""
    rng = np.random.default_rng(SEED + 7 * n)
    out = np.empty(0)
    while out.shape[0] < n:
        k = n + 64
        centres = np.where(rng.uniform(size=k) < 0.6, -1.5, 1.5)
        scales = np.where(centres < 0, 0.8, 1.0)
        draw = centres + scales * rng.standard_normal(k)
        out = np.concatenate([out, draw[np.abs(draw) < SAMPLE_LIMIT]])
    samples = out[:n]
    grid = np.linspace(KDE_LO, KDE_HI, KDE_GRID_POINTS)
    h = float(np.std(samples, ddof=1)) * n ** (-0.2)
    return samples, grid, h


# ---------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One row of the table: a kernel at one size, timed by several implementations."""

    key: str
    family: str  # kernel id: skip estimates scale within a family; targets refer to it
    label: str
    size: str
    n: int
    build: Callable[[], dict[str, Callable[[], object]]]  # impl name -> zero-argument call


def pow10(n: int) -> str:
    k = round(math.log10(n))
    return f"1e{k}" if 10**k == n else str(n)


def _weno_case(n: int) -> Case:
    def build() -> dict[str, Callable[[], object]]:
        u, dx = weno_input(n)
        return {
            impl: (lambda b=impl: kernels.weno5_derivatives(u, dx, bc="periodic", variant="js", backend=b))
            for impl in ("numpy", "rust")
        }

    return Case(f"weno|{n}", "weno", "WENO5 d⁻,d⁺ (periodic, js)", f"{pow10(n)} nodes", n, build)


def _particles_case(n: int) -> Case:
    def build() -> dict[str, Callable[[], object]]:
        x, drift = particle_input(n)

        def call(backend: str) -> object:
            return kernels.evolve_particles(
                x, drift, 1e-3, 0.3, lo=0.0, hi=1.0, seed=7, step=3, bc="reflect", backend=backend
            )

        return {"numpy": lambda: call("numpy"), "rust": lambda: call("rust")}

    return Case(f"particles|{n}", "particles", "particle EM step + noise (reflect)", f"{pow10(n)} particles", n, build)


def _kde_case(method: str, bc: str, n: int) -> Case:
    family = f"kde_{method}_{bc}"

    def build() -> dict[str, Callable[[], object]]:
        p, grid, h = kde_input(n)
        impls: dict[str, Callable[[], object]] = {
            b: (lambda b=b: kernels.kde(p, grid, h, method=method, bc=bc, backend=b)) for b in ("numpy", "rust")
        }
        if bc == "none" and method == "exact":
            impls["scipy"] = lambda: _scipy_kde(p, grid, h)
        if bc == "none" and method == "binned":
            impls["kdepy"] = lambda: _kdepy_kde(p, grid, h)
        return impls

    return Case(f"{family}|{n}", family, f"KDE {method} (bc={bc})", f"{pow10(n)} → {KDE_GRID_POINTS} pts", n, build)


def _smoothness_cases(n: int) -> list[Case]:
    def whole() -> dict[str, Callable[[], object]]:
        u, _ = weno_input(n)
        return {b: (lambda b=b: kernels.smoothness_indicators(u, backend=b)) for b in ("numpy", "rust")}

    def per_call() -> dict[str, Callable[[], object]]:
        u, _ = weno_input(n)
        windows = [u[i : i + 5] for i in range(n - 4)]

        def loop(backend: str) -> None:
            for w in windows:
                kernels.smoothness_indicators(w, backend=backend)

        def loop_raw() -> None:  # the extension function itself, without the Python wrapper's checks
            f = _backend.rust().smoothness_indicators
            for w in windows:
                f(w)

        return {"numpy": lambda: loop("numpy"), "rust": lambda: loop("rust"), "rust_raw": loop_raw}

    size = f"{pow10(n)} nodes"
    return [
        Case(f"smooth_whole|{n}", "smooth_whole", "smoothness β, 1 whole-array call", size, n, whole),
        Case(f"smooth_percall|{n}", "smooth_percall", f"smoothness β, {n - 4} calls × 1 window", size, n, per_call),
    ]


def all_cases(s: Settings) -> list[Case]:
    cases = [_weno_case(n) for n in s.weno]
    cases += _smoothness_cases(s.percall_nodes)
    cases += [_particles_case(n) for n in s.particles]
    for method, bc in (("exact", "reflect"), ("binned", "reflect"), ("exact", "none"), ("binned", "none")):
        cases += [_kde_case(method, bc, n) for n in s.kde]
    return cases


# ---------------------------------------------------------------------------------------------
# third-party KDEs (benchmark-only dependencies, imported in the reference child only)


def _scipy_kde(p: np.ndarray, grid: np.ndarray, h: float) -> np.ndarray:
    """scipy.stats.gaussian_kde with kernel standard deviation h (its factor times the
    sample standard deviation, ddof=1)."""
    from scipy.stats import gaussian_kde

    return gaussian_kde(p, bw_method=h / float(np.std(p, ddof=1)))(grid)


def _kdepy_kde(p: np.ndarray, grid: np.ndarray, h: float) -> np.ndarray:
    """KDEpy FFTKDE with kernel standard deviation h, evaluated on our equidistant grid
    (it must enclose every sample strictly; it does: |samples| < 5.5, grid on [−6, 6])."""
    from KDEpy import FFTKDE

    return FFTKDE(kernel="gaussian", bw=h).fit(p).evaluate(grid)


# ---------------------------------------------------------------------------------------------
# worker (child process)


def _peak_error(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(approx - exact)) / np.max(exact))


def kde_errors(s: Settings, timings: dict[str, dict[str, Record]]) -> dict[str, dict[str, float]]:
    """max |m − m_exact| / max m_exact of the Rust binned KDE and the third-party ones,
    against the Rust exact sum on the same samples, bandwidth, grid and bc (scipy only where
    its timing was not skipped as too slow)."""
    out: dict[str, dict[str, float]] = {}
    for n in s.kde:
        p, grid, h = kde_input(n)
        for bc in ("reflect", "none"):
            exact = kernels.kde(p, grid, h, method="exact", bc=bc, backend="rust")
            binned = kernels.kde(p, grid, h, method="binned", bc=bc, backend="rust")
            out[f"kde_binned_{bc}|{n}"] = {"rust": _peak_error(binned, exact)}
            if bc == "none":
                out[f"kde_binned_none|{n}"]["kdepy"] = _peak_error(_kdepy_kde(p, grid, h), exact)
                if "skipped" not in timings[f"kde_exact_none|{n}"]["scipy"]:
                    out[f"kde_exact_none|{n}"] = {"scipy": _peak_error(_scipy_kde(p, grid, h), exact)}
    return out


def sanity_checks() -> dict[str, float]:
    """Largest |Rust − NumPy reference| relative to the output's scale, per kernel, at small
    sizes: the timings compare implementations of the same thing."""
    out: dict[str, float] = {}

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

    u, dx = weno_input(3000)
    pairs = zip(kernels.weno5_derivatives(u, dx, backend="rust"), kernels.weno5_derivatives(u, dx, backend="numpy"))
    out["weno5_derivatives"] = max(rel(r, q) for r, q in pairs)
    out["smoothness_indicators"] = rel(
        kernels.smoothness_indicators(u, backend="rust"), kernels.smoothness_indicators(u, backend="numpy")
    )
    x, drift = particle_input(5000)
    step = {"dt": 1e-3, "sigma": 0.3, "lo": 0.0, "hi": 1.0, "seed": 7, "step": 3}
    out["evolve_particles"] = rel(
        kernels.evolve_particles(x, drift, backend="rust", **step),
        kernels.evolve_particles(x, drift, backend="numpy", **step),
    )
    p, grid, h = kde_input(5000)
    for method in ("exact", "binned"):
        for bc in ("reflect", "none"):
            out[f"kde {method}/{bc}"] = rel(
                kernels.kde(p, grid, h, method=method, bc=bc, backend="rust"),
                kernels.kde(p, grid, h, method=method, bc=bc, backend="numpy"),
            )
    return out


def worker(role: str, s: Settings) -> Record:
    """Time every case with the implementations of ``role`` ("reference" or "rust")."""
    wanted = REFERENCE_IMPLS if role == "reference" else RUST_IMPLS
    timings: dict[str, dict[str, Record]] = {}
    last: dict[tuple[str, str], tuple[int, float]] = {}  # (family, impl) -> (n, seconds)
    for case in all_cases(s):
        impls = {k: f for k, f in case.build().items() if k in wanted}
        timings[case.key] = {}
        for impl, fn in impls.items():
            prev = last.get((case.family, impl))
            if prev is not None:
                estimate = prev[1] * case.n / prev[0]
                if estimate > s.max_call:
                    timings[case.key][impl] = {"skipped": estimate}
                    print(f"  [{role}] {case.key} {impl}: skipped (est. {estimate:.1f} s)", file=sys.stderr)
                    continue
            rec = measure(fn, s.budget, s.min_samples)
            timings[case.key][impl] = rec
            last[(case.family, impl)] = (case.n, rec["median"])
            print(f"  [{role}] {case.key} {impl}: {fmt_time(rec['median'])}", file=sys.stderr)
    result: Record = {"info": mfg_ensemble.backend_info(), "timings": timings}
    if role == "reference":
        import KDEpy
        import scipy

        result["errors"] = kde_errors(s, timings)
        result["sanity"] = sanity_checks()
        result["versions"] = {"numpy": np.__version__, "scipy": scipy.__version__, "KDEpy": KDEpy.__version__}
    return result


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_child(role: str, threads: int, quick: bool) -> Record:
    """Re-run this script as a fresh interpreter with RAYON_NUM_THREADS=threads; its JSON,
    plus "run": its wall time, the cores it used and the cores other processes used meanwhile."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    if role == "reference":  # a single-threaded baseline, whatever NumPy is linked against
        env.update({name: "1" for name in SINGLE_THREAD_ENV})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", role] + (["--quick"] if quick else [])
    print(f"child: {role}, RAYON_NUM_THREADS={threads}", file=sys.stderr)
    busy0, cpu0, t0 = _busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    busy1, cpu1, wall = _busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"benchmark child {role!r} (RAYON_NUM_THREADS={threads}) failed: exit code {done.returncode}")
    result: Record = json.loads(done.stdout.strip().splitlines()[-1])  # the JSON is the last line
    own = (cpu1 - cpu0) / wall
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) / wall - own)
    result["run"] = {"wall": wall, "own_cores": own, "other_cores": other}
    return result


# ---------------------------------------------------------------------------------------------
# report (parent process)


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_cell(rec: Record | None) -> str:
    if rec is None:
        return "—"
    if "skipped" in rec:
        return f"skipped (too slow: est. {rec['skipped']:.0f} s)"
    text = fmt_time(rec["median"])
    return text if rec["samples"] >= 3 else f"{text} (n={rec['samples']})"


def seconds(rec: Record | None) -> float | None:
    return None if rec is None or "skipped" in rec else float(rec["median"])


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0:
        return "—"
    r = num / den
    return f"{r:.3g}×" if r < 1000 else f"{r:,.0f}×"


def fmt_err(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


COMPARATORS = {"scipy": "scipy gaussian_kde", "kdepy": "KDEpy FFTKDE"}


def build_table(cases: list[Case], ref: Record, one: Record, many: Record, threads: int) -> list[list[str]]:
    head = [
        "kernel",
        "size",
        "NumPy ref",
        "Rust 1 thr",
        f"Rust {threads} thr",
        "ref / Rust1",
        f"Rust1 / Rust{threads}",
        "comparator",
        "comparator / Rust1",
        "max err / peak: Rust",
        "max err / peak: comparator",
    ]
    rows = [head]
    for case in cases:
        t_ref = ref["timings"][case.key].get("numpy")
        t_one = one["timings"][case.key].get("rust")
        t_many = many["timings"][case.key].get("rust")
        comp_name = next((c for c in COMPARATORS if c in ref["timings"][case.key]), None)
        t_comp = ref["timings"][case.key].get(comp_name) if comp_name else None
        errs = ref.get("errors", {}).get(case.key, {})
        rows.append(
            [
                case.label,
                case.size,
                fmt_cell(t_ref),
                fmt_cell(t_one),
                fmt_cell(t_many),
                fmt_ratio(seconds(t_ref), seconds(t_one)),
                fmt_ratio(seconds(t_one), seconds(t_many)),
                f"{COMPARATORS[comp_name]}: {fmt_cell(t_comp)}" if comp_name else "—",
                fmt_ratio(seconds(t_comp), seconds(t_one)),
                fmt_err(errs.get("rust")),
                fmt_err(errs.get(comp_name)) if comp_name else "—",
            ]
        )
    return rows


def markdown(rows: list[list[str]]) -> str:
    """``rows`` (the first is the header) as a Markdown table with padded columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule] + [line(r) for r in rows[1:]])


def _verdict(value: float | None, target: float, what: str) -> str:
    if value is None:
        return f"{what}: not measured"
    if value >= target:
        return f"{what} = {value:.3g}× (met)"
    return f"{what} = {value:.3g}× (MISSED: {target / value:.3g}× short of {target:g}×)"


def targets(s: Settings, ref: Record, one: Record, many: Record, threads: int, quick: bool) -> list[str]:
    """One line per target of the issue, judged on the 1-thread Rust timings."""

    def t(rec: Record, key: str, impl: str) -> float | None:
        return seconds(rec["timings"].get(key, {}).get(impl))

    def ratio(num: float | None, den: float | None) -> float | None:
        return None if num is None or den is None else num / den

    def speedup(key: str, baseline: str, target: float, name: str) -> str:
        return _verdict(ratio(t(ref, key, baseline), t(one, key, "rust")), target, name)

    lines = []
    parts = [speedup(f"weno|{n}", "numpy", 30, f"{pow10(n)}: ref/Rust1") for n in s.weno]
    lines.append("WENO5 whole-grid ≥ 30× NumPy ref (1 thr): " + "; ".join(parts))

    parts = [speedup(f"particles|{n}", "numpy", 8, f"{pow10(n)}: ref/Rust1") for n in s.particles]
    big, wanted = max(s.particles), 0.75 * threads
    key = f"particles|{big}"
    scaling = ratio(t(one, key, "rust"), t(many, key, "rust"))
    what = f"{pow10(big)}: Rust1/Rust{threads} (taken as ≥ {wanted:g}×, 75% efficiency)"
    parts.append(_verdict(scaling, wanted, what))
    busy = many["run"]["other_cores"]
    if busy is not None and busy > 0.25:
        parts[-1] += f" [measured while other processes kept {busy:.2f} cores busy]"
    lines.append("Particle step ≥ 8× NumPy ref (1 thr) and scaling with threads: " + "; ".join(parts))

    parts = []
    for n in (10**5, 10**6):
        key = f"kde_binned_none|{n}"
        if key not in ref["timings"]:
            parts.append(f"{pow10(n)}: not measured" + (" (--quick)" if quick else ""))
            continue
        e_rust, e_kdepy = ref["errors"][key]["rust"], ref["errors"][key]["kdepy"]
        if e_rust <= e_kdepy:
            err = f"err {e_rust:.2e} ≤ KDEpy's {e_kdepy:.2e} (met)"
        else:
            err = f"err {e_rust:.2e} > KDEpy's {e_kdepy:.2e} (MISSED: {e_rust / e_kdepy:.3g}× KDEpy's)"
        many_ratio = ratio(t(ref, key, "kdepy"), t(many, key, "rust"))
        extra = "" if many_ratio is None else f" [KDEpy/Rust{threads} = {many_ratio:.3g}×]"
        parts.append(speedup(key, "kdepy", 1.0, f"{pow10(n)}: KDEpy/Rust1") + extra + ", " + err)
    lines.append("KDE binned faster than KDEpy FFTKDE at 1e5 and 1e6, error ≤ KDEpy's (1 thr): " + "; ".join(parts))

    parts = []
    for n in s.kde:
        key = f"kde_exact_none|{n}"
        scipy_rec = ref["timings"][key]["scipy"]
        if "skipped" in scipy_rec:
            rust = t(one, key, "rust")
            est = f"≈ {scipy_rec['skipped'] / rust:.3g}× by the estimate" if rust else "no estimate"
            parts.append(f"{pow10(n)}: scipy not run (est. {scipy_rec['skipped']:.0f} s, {est})")
        else:
            parts.append(speedup(key, "scipy", 20, f"{pow10(n)}: scipy/Rust1"))
    lines.append("KDE exact ≥ 20× scipy gaussian_kde (1 thr): " + "; ".join(parts))
    if quick:
        lines.append("(--quick: sizes below the issue's; these lines are a smoke test, not a verdict)")
    return lines


def notes(s: Settings, ref: Record, one: Record, many: Record, threads: int) -> list[str]:
    """The per-call overhead, and how busy the machine was while each child ran."""
    n = s.percall_nodes
    calls = n - 4
    parts = []
    for label, rec in (("1 thr", one), (f"{threads} thr", many)):
        loop = seconds(rec["timings"][f"smooth_percall|{n}"]["rust"])
        raw = seconds(rec["timings"][f"smooth_percall|{n}"]["rust_raw"])
        whole = seconds(rec["timings"][f"smooth_whole|{n}"]["rust"])
        assert loop is not None and raw is not None and whole is not None
        parts.append(
            f"{label}: {1e6 * (loop - whole) / calls:.2f} µs per call through kernels.smoothness_indicators "
            f"({1e6 * raw / calls:.2f} µs calling the extension directly) vs {1e9 * whole / calls:.1f} ns per "
            f"window in one whole-array call, so the per-window loop is {loop / whole:,.0f}× slower"
        )
    out = ["Per-call overhead (Rust), " + "; ".join(parts) + "."]
    np_loop = seconds(ref["timings"][f"smooth_percall|{n}"]["numpy"])
    if np_loop is not None:
        out.append(f"Per-call NumPy reference: {1e6 * np_loop / calls:.1f} µs per 5-point window.")
    runs = []
    for label, rec in (("Rust 1 thr", one), (f"Rust {threads} thr", many), ("NumPy/scipy/KDEpy", ref)):
        run = rec["run"]
        other = "?" if run["other_cores"] is None else f"{run['other_cores']:.2f}"
        runs.append(f"{label} child {run['wall']:.0f} s, used {run['own_cores']:.2f} cores, others {other} cores")
    out.append(f"Machine load during the children ({threads} usable cores): " + "; ".join(runs) + ".")
    busy = many["run"]["other_cores"]
    if threads > 1 and busy is not None and busy > 0.25:
        out.append(
            f"WARNING: other processes kept {busy:.2f} of {threads} cores busy during the Rust {threads}-thread "
            f"child, so Rust1 / Rust{threads} understates the thread scaling; rerun on an idle machine."
        )
    return out


def parent(quick: bool) -> None:
    s = QUICK if quick else FULL
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    started = time.perf_counter()
    load0 = os.getloadavg()
    one = run_child("rust", 1, quick)
    many = run_child("rust", threads, quick)
    ref = run_child("reference", 1, quick)
    elapsed = time.perf_counter() - started
    load1 = os.getloadavg()

    print(f"# mfg_ensemble kernel benchmark{' (--quick)' if quick else ''}")
    print()
    print(f"- mfg_ensemble {mfg_ensemble.__version__}, backend_info(): {mfg_ensemble.backend_info()}")
    print(
        f"- Rust children: rayon_threads = {one['info']['rayon_threads']} and {many['info']['rayon_threads']} "
        f"(RAYON_NUM_THREADS=1 / {threads}; usable cores: {threads}); NumPy/scipy/KDEpy child: single-threaded"
    )
    versions = ", ".join(f"{k} {v}" for k, v in ref["versions"].items())
    print(f"- Python {platform.python_version()}, {versions}; {platform.machine()} {platform.system()}")
    print(
        f"- load average (1 min) {load0[0]:.2f} before, {load1[0]:.2f} after; all children ran in this run, "
        f"{elapsed:.0f} s in total"
    )
    print(
        f"- time per call, median of ≥ {s.min_samples} samples (calls ≥ 0.2 s: 3 samples; ≥ 1 s: one call, "
        f"marked n=1); cells whose estimated call exceeds {s.max_call:g} s are skipped"
    )
    print(
        f"- KDE: grid of {KDE_GRID_POINTS} uniform points on [{KDE_LO:g}, {KDE_HI:g}]; bandwidth = Scott's rule of "
        "each sample, the same float for every implementation"
    )
    print("- max err / peak = max_g |m(g) − m_exact(g)| / max_g m_exact(g), m_exact = Rust exact sum, same bc")
    sanity = ", ".join(f"{k} {v:.1e}" for k, v in ref["sanity"].items())
    print(f"- sanity, max |Rust − NumPy ref| / max |NumPy ref| at small sizes: {sanity}")
    print()
    cases = all_cases(s)
    print(markdown(build_table(cases, ref, one, many, threads)))
    print()
    for line in notes(s, ref, one, many, threads):
        print(line)
    print()
    print("Targets:")
    for line in targets(s, ref, one, many, threads, quick):
        print(f"- {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test, a few seconds)")
    parser.add_argument("--worker", choices=("reference", "rust"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, QUICK if args.quick else FULL)
        print(json.dumps(result))
    else:
        parent(args.quick)


if __name__ == "__main__":
    main()

"""The 2-D Fokker–Planck equation by finite volumes: the NumPy reference of ``rust_core/src/fv2d.rs``.

    ∂t m − (σ²/2) Δm − div(m ∇u) = 0,   m(0) = m0,

the 1-D scheme of :mod:`mfg_ensemble.kernels.reference.fv` ("muscl2") on the 2-D grid of
SPEC2D (fields (ny, nx), index [j, i]; node kinds FREE, OBSTACLE, EXIT of
:mod:`~mfg_ensemble.kernels.reference.grid2d`). Drift α = −∇u, D = σ²/2.

Control volumes: node (j, i) owns the cell of area w[j, i] = wy[j]·wx[i] (the 1-D widths: half
cells at the walls of "reflect"), so Σ w·m is the mass. The x-face (j, i+½) between (j, i) and
(j, i+1) (and the wrap-around face of "periodic") has length wy[j]; an x-face update of (j, i)
is therefore the 1-D row update divided by wx[i]: m ← m − δ/wx[i]·(G_{i+½} − G_{i−½}) (rows
and columns alike). A face carries flux when neither end is an OBSTACLE and at least one end
is FREE (walls of obstacles and of the domain are closed). Face drifts α^x_{j,i+½} = −(u[j,
i+1] − u[j, i])/dx, α^y likewise, linear in t between output rows.

EXIT nodes are sinks: m = 0 there at all times; the flux through a face into an exit cell
leaves the room and is added to ``exited`` — exactly the fluxes the updates apply, so
Σ w·m[k] + exited[k] = Σ w·m0 to rounding (``exited`` is not computed as a difference). m0 is
taken as 0 at OBSTACLE and EXIT nodes (row 0 of the result shows it).

One sub-step δ (k_j equal sub-steps per output interval, as in 1-D) is the symmetric Strang
composition (applied right to left)

    m ← 𝒟ʸ_{δ/2} 𝒟ˣ_{δ/2} 𝒜_δ 𝒟ˣ_{δ/2} 𝒟ʸ_{δ/2} m,

second order as each piece is, even where 𝒟ˣ and 𝒟ʸ do not commute (obstacles, exits). Without
obstacles and exits 𝒟ˣ and 𝒟ʸ commute, so the transposed problem gives the transposed m to
rounding; with them, the transposed problem is the other ordering, equal to second order.

* 𝒜_δ: SSP-RK2 (Heun) of the unsplit residual R(m; α)[j, i] = −(G^x_{i+½} − G^x_{i−½})/wx[i]
  − (G^y_{j+½} − G^y_{j−½})/wy[j] at FREE nodes, with the upwind fluxes of the van Leer MUSCL
  reconstruction per dimension (the 1-D G and s); the slope s^x of a node is 0 unless both
  x-neighbours are FREE nodes (0 at walls, obstacle faces and next to exits, as 1-D's walls),
  likewise s^y. m¹ = m + δR(m; α(t)), m² = m¹ + δR(m¹; α(t + δ)), m ← (m + m²)/2; exited
  gains δ(E(m) + E(m¹))/2 with E the flux into the exit cells. Positivity: the outgoing
  reconstructions of a cell are ≤ 2m per dimension (half cells: s = 0, one face), so each
  Euler stage is a non-negative combination when δ·2(A_x/dx + A_y/dy) ≤ 1, A the max |α| per
  dimension over the faces that carry flux at both ends of the interval:
  δ_j = cfl/(2(A_x/dx + A_y/dy)) (no drift: one sub-step, or the floor).
* 𝒟ˣ_τ: the 1-D SDIRK2 of fv.py (γ = 1 − 1/√2) on every row, split into segments: maximal
  stretches of FREE nodes (a periodic row of FREE nodes only is one cyclic segment, solved by
  Sherman–Morrison; a segment crossing the seam of a periodic row with obstacles or exits is
  wrapped). A segment end at a wall or an obstacle has no flux; an end next to an EXIT has
  the Dirichlet condition m = 0 at the exit node: the face term D/dx·(0 − y) joins L and the
  diagonal of M = W − γτL. The exit flux of the step is τD/dx·((1 − γ)y¹ + γy²) at that end
  (the SDIRK2 weights of its stage fluxes), times the face length wy[j]. 𝒟ʸ: columns alike.

A-posteriori fallback, as 1-D: if the sub-step made any m < 0 (or a negative net exit flux,
possible only through an intermediate stage below 0; so ``exited`` never decreases) it is redone
by the first-order IMEX step — forward-Euler upwind advection (s = 0), then backward Euler
(W − δL)y = Wm on the rows, then on the columns (M-matrix solves: positive); it conserves mass
and counts its exit fluxes (all ≥ 0) the same way.

Measured (tests/kernels/test_fv2d.py: the 2-D Ornstein–Uhlenbeck drift, exact product of
Gaussians, σ = 0.1, walls negligible): L1 errors 3.75e-2, 8.91e-3, 2.07e-3, 4.98e-4 on n × n =
41², 81², 161², 321² nodes, orders 2.07, 2.10, 2.06. A problem constant in y reproduces the 1-D
march to ~2e-14; the transposed problem gives the transposed m to ~3e-15 without obstacles, and
to the O(δ²) splitting difference with them. Unlike 1-D's tests, a stiff spike (one sub-step,
τD/dx² ≈ 30) does trigger the fallback; the room tests (CFL sub-steps) never needed it.
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.errors import Diverged
from mfg_ensemble.kernels.checks import FloatArray
from mfg_ensemble.kernels.quadrature import quadrature_weights
from mfg_ensemble.kernels.reference import fv
from mfg_ensemble.kernels.reference.fv import GAMMA, Tridiagonal
from mfg_ensemble.kernels.reference.grid2d import EXIT, FREE, OBSTACLE
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps


class Segment:
    """A stretch of FREE nodes of a line: node indices ``idx`` (consecutive, modulo n if the line
    is periodic), whether it is the whole cyclic line, and whether the node before its first /
    after its last node is an EXIT (Dirichlet m = 0)."""

    def __init__(self, idx: list[int], cyclic: bool, exit_lo: bool, exit_hi: bool) -> None:
        self.idx = np.array(idx, dtype=np.int64)
        self.cyclic, self.exit_lo, self.exit_hi = cyclic, exit_lo, exit_hi
        n = len(idx)
        if cyclic:
            faces = np.full(n, 2.0)
        else:
            faces = np.full(n, 2.0)
            inner = 1.0 if n > 1 else 0.0
            faces[0] = inner + (1.0 if exit_lo else 0.0)
            faces[n - 1] = inner + (1.0 if exit_hi else 0.0)
        self.faces = faces  # faces of each node that carry diffusive flux


def line_segments(kinds: np.ndarray, periodic: bool) -> list[Segment]:
    """The segments of one line of node kinds."""
    n = kinds.shape[0]
    free = kinds == FREE
    if periodic and free.all():
        return [Segment(list(range(n)), True, False, False)]
    if periodic:  # start right after a non-free node: no segment crosses the end of the order
        start = int(np.flatnonzero(~free)[0]) + 1
        order = [(start + p) % n for p in range(n)]
    else:
        order = list(range(n))
    segments = []
    run: list[int] = []
    for i in order + [-1]:
        if i >= 0 and free[i]:
            run.append(i)
            continue
        if run:
            lo, hi = order.index(run[0]) - 1, order.index(run[-1]) + 1
            before = order[lo] if lo >= 0 else (order[-1] if periodic else None)
            after = order[hi] if hi < n else (order[0] if periodic else None)
            segments.append(
                Segment(
                    run,
                    False,
                    before is not None and kinds[before] == EXIT,
                    after is not None and kinds[after] == EXIT,
                )
            )
            run = []
    return segments


def segment_laplacian(y: FloatArray, seg: Segment) -> FloatArray:
    """(y_{p+1} − y_p) − (y_p − y_{p−1}) in the segment: no term through a closed end, −y_p
    through an exit end (the exit node holds 0), wrapped if cyclic."""
    if seg.cyclic:
        flux = np.roll(y, -1) - y
        return flux - np.roll(flux, 1)
    flux = y[1:] - y[:-1]
    div = np.r_[flux, 0.0] - np.r_[0.0, flux]
    if seg.exit_lo:
        div[0] = div[0] - y[0]
    if seg.exit_hi:
        div[-1] = div[-1] - y[-1]
    return div


def exit_values(y: FloatArray, seg: Segment) -> float:
    """Σ of y at the segment ends next to an exit (the face flux out is c·y there)."""
    out = 0.0
    if seg.exit_lo:
        out += float(y[0])
    if seg.exit_hi:
        out += float(y[-1])
    return out


class Lines:
    """The segments of every line along one axis (rows for x, columns for y) with their widths
    (the 1-D weights along the line), face lengths (the weights across it) and D/spacing."""

    def __init__(self, kinds: np.ndarray, widths: FloatArray, across: FloatArray, periodic: bool, ratio: float):
        # kinds: (nlines, n), one line per row
        self.segments = [line_segments(kinds[q], periodic) for q in range(kinds.shape[0])]
        self.widths, self.across, self.ratio = widths, across, ratio

    def solvers(self, c: float) -> list[list[Tridiagonal]]:
        """The factored M = W − cL of every segment (fv.Tridiagonal: Sherman–Morrison if cyclic)."""
        return [[Tridiagonal.segment(self.widths[s.idx], c, s.faces, s.cyclic) for s in segs] for segs in self.segments]

    def sdirk2(self, m: FloatArray, tau: float, solvers) -> float:
        """𝒟_τ on every line of m (nlines, n), in place; returns the mass that left by exits."""
        c, c2 = GAMMA * tau * self.ratio, (1.0 - GAMMA) * tau * self.ratio
        exited = 0.0
        for q, segs in enumerate(self.segments):
            for seg, solver in zip(segs, solvers[q]):
                wm = self.widths[seg.idx] * m[q, seg.idx]
                y1 = solver.solve(wm)
                y2 = solver.solve(wm + c2 * segment_laplacian(y1, seg))
                m[q, seg.idx] = y2
                if seg.exit_lo or seg.exit_hi:
                    exited += self.across[q] * (c2 * exit_values(y1, seg) + c * exit_values(y2, seg))
        return exited

    def backward_euler(self, m: FloatArray, tau: float, solvers) -> float:
        """(W − τL) y = W m on every line, in place; returns the mass that left by exits."""
        c = tau * self.ratio
        exited = 0.0
        for q, segs in enumerate(self.segments):
            for seg, solver in zip(segs, solvers[q]):
                y = solver.solve(self.widths[seg.idx] * m[q, seg.idx])
                m[q, seg.idx] = y
                if seg.exit_lo or seg.exit_hi:
                    exited += self.across[q] * c * exit_values(y, seg)
        return exited


def van_leer(minus: FloatArray, plus: FloatArray, ok: np.ndarray) -> FloatArray:
    """fv's van Leer slope where ``ok``, else 0."""
    return np.where(ok, fv.van_leer(minus, plus), 0.0)


class Grid:
    """The geometry of a 2-D march: weights, faces that carry flux, slope masks, exit faces, lines."""

    def __init__(self, kinds: np.ndarray, dx: float, dy: float, bc: tuple[str, str], diffusion: float) -> None:
        ny, nx = kinds.shape
        self.kinds, self.dx, self.dy = kinds, dx, dy
        self.px, self.py = bc[0] == "periodic", bc[1] == "periodic"
        self.bc = bc
        self.wx = quadrature_weights(nx, dx, bc[0])
        self.wy = quadrature_weights(ny, dy, bc[1])
        self.free = kinds == FREE
        self.w = np.where(kinds == OBSTACLE, 0.0, self.wy[:, None] * self.wx[None, :])
        self.nfx = nx if self.px else nx - 1
        self.nfy = ny if self.py else ny - 1
        obstacle, exit_ = kinds == OBSTACLE, kinds == EXIT
        # x-faces (ny, nfx) between [:, i] and [:, i+1 mod nx]
        lo_k, hi_k = kinds[:, : self.nfx], np.roll(kinds, -1, axis=1)[:, : self.nfx]
        self.open_x = (lo_k != OBSTACLE) & (hi_k != OBSTACLE) & ((lo_k == FREE) | (hi_k == FREE))
        self.exit_x = np.where(self.open_x & (hi_k == EXIT), 1.0, np.where(self.open_x & (lo_k == EXIT), -1.0, 0.0))
        lo_k, hi_k = kinds[: self.nfy, :], np.roll(kinds, -1, axis=0)[: self.nfy, :]
        self.open_y = (lo_k != OBSTACLE) & (hi_k != OBSTACLE) & ((lo_k == FREE) | (hi_k == FREE))
        self.exit_y = np.where(self.open_y & (hi_k == EXIT), 1.0, np.where(self.open_y & (lo_k == EXIT), -1.0, 0.0))
        # slopes only where both neighbours along the dimension are FREE nodes
        self.slope_x = self.free & self._both_free(axis=1, periodic=self.px)
        self.slope_y = self.free & self._both_free(axis=0, periodic=self.py)
        del obstacle, exit_
        self.diffusion = diffusion
        self.rows = Lines(kinds, self.wx, self.wy, self.px, diffusion / dx)
        self.cols = Lines(kinds.T, self.wy, self.wx, self.py, diffusion / dy)

    def _both_free(self, axis: int, periodic: bool) -> np.ndarray:
        f = self.free
        both = np.roll(f, 1, axis=axis) & np.roll(f, -1, axis=axis)
        if not periodic:
            ends = [slice(None), slice(None)]
            for end in (0, -1):
                ends[axis] = end
                both[tuple(ends)] = False
        return both

    def face_drift(self, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        ax = -(np.roll(u, -1, axis=1)[:, : self.nfx] - u[:, : self.nfx]) / self.dx
        ay = -(np.roll(u, -1, axis=0)[: self.nfy, :] - u[: self.nfy, :]) / self.dy
        return ax, ay

    def fluxes(self, m: FloatArray, ax: FloatArray, ay: FloatArray, limited: bool) -> tuple[FloatArray, FloatArray]:
        """The upwind face fluxes G^x (ny, nfx), G^y (nfy, nx) (0 at faces that carry none)."""
        if limited:
            dxm = m - np.roll(m, 1, axis=1)
            dxp = np.roll(m, -1, axis=1) - m
            sx = van_leer(dxm, dxp, self.slope_x)
            dym = m - np.roll(m, 1, axis=0)
            dyp = np.roll(m, -1, axis=0) - m
            sy = van_leer(dym, dyp, self.slope_y)
            lx, rx, ly, ry = m + 0.5 * sx, m - 0.5 * sx, m + 0.5 * sy, m - 0.5 * sy
        else:
            lx = rx = ly = ry = m
        gx = fv.upwind(ax, lx[:, : self.nfx], np.roll(rx, -1, axis=1)[:, : self.nfx])
        gy = fv.upwind(ay, ly[: self.nfy, :], np.roll(ry, -1, axis=0)[: self.nfy, :])
        return np.where(self.open_x, gx, 0.0), np.where(self.open_y, gy, 0.0)

    def euler(self, m: FloatArray, ax, ay, dt: float, limited: bool) -> tuple[FloatArray, float]:
        """m + δR(m) (0 off the FREE nodes) and the rate of flux into the exit cells E(m)."""
        gx, gy = self.fluxes(m, ax, ay, limited)
        divx, divy = fv.divergence(gx, self.bc[0], axis=1), fv.divergence(gy, self.bc[1], axis=0)
        new = m - (dt / self.wx[None, :] * divx + dt / self.wy[:, None] * divy)
        new = np.where(self.free, new, 0.0)
        rate_x = float(np.sum(self.wy[:, None] * (self.exit_x * gx)))
        rate = rate_x + float(np.sum(self.wx[None, :] * (self.exit_y * gy)))
        return new, rate


def fv_forward_2d(
    u: FloatArray,
    m0: FloatArray,
    *,
    dx: float,
    dy: float,
    sigma: float,
    T: float,
    bc: tuple[str, str] = ("reflect", "reflect"),
    nodes: np.ndarray | None = None,
    cfl: float = 0.9,
    min_substeps: IntArray | None = None,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """m at the output times (nt, ny, nx), the sub-steps of each output interval (nt − 1,) and
    the mass that has left by the exits by each output time (nt,)."""
    nt, ny, nx = u.shape
    kinds = np.zeros((ny, nx), dtype=np.uint8) if nodes is None else nodes
    floor = floors(min_substeps, nt - 1)
    diffusion = 0.5 * sigma * sigma
    grid = Grid(kinds, dx, dy, bc, diffusion)
    dt_out = T / (nt - 1)
    out = np.full((nt, ny, nx), np.nan)
    exited = np.zeros(nt)
    m = np.where(grid.free, m0, 0.0)
    out[0] = m
    now = grid.face_drift(u[0])
    counts = np.zeros(nt - 1, dtype=np.int64)
    gone = 0.0
    for j in range(nt - 1):
        nxt = grid.face_drift(u[j + 1])
        amax_x = float(np.max(np.abs(np.r_[now[0][grid.open_x], nxt[0][grid.open_x]]), initial=0.0))
        amax_y = float(np.max(np.abs(np.r_[now[1][grid.open_y], nxt[1][grid.open_y]]), initial=0.0))
        limit = step_limit(cfl, 2.0 * (amax_x / dx + amax_y / dy))
        k, dt = substeps(dt_out, limit, f"FP near t = {j * dt_out}", int(floor[j]))
        m, lost = interval(grid, m, now, nxt, k, dt)
        gone += lost
        counts[j] = k
        if not np.isfinite(m).all():
            raise Diverged(f"FP: m is not finite at t = {(j + 1) * dt_out}")
        out[j + 1] = m
        exited[j + 1] = gone
        now = nxt
    return out, counts, exited


def interval(grid: Grid, m: FloatArray, now, nxt, k: int, dt: float) -> tuple[FloatArray, float]:
    """k sub-steps of length dt (Strang: 𝒟ʸ 𝒟ˣ halves, Heun MUSCL, 𝒟ˣ 𝒟ʸ halves), each redone by
    the first-order IMEX step if it made m negative; returns m and the mass that left."""
    implicit = grid.diffusion > 0.0
    half = 0.5 * dt
    if implicit:
        row_half = grid.rows.solvers(GAMMA * half * grid.rows.ratio)
        col_half = grid.cols.solvers(GAMMA * half * grid.cols.ratio)
    fallback = None
    gone = 0.0
    for s in range(k):
        t0, t1 = s / k, (s + 1) / k
        ax0, ay0 = (1.0 - t0) * now[0] + t0 * nxt[0], (1.0 - t0) * now[1] + t0 * nxt[1]
        ax1, ay1 = (1.0 - t1) * now[0] + t1 * nxt[0], (1.0 - t1) * now[1] + t1 * nxt[1]
        y = m.copy()
        lost = 0.0
        if implicit:
            lost += grid.cols.sdirk2(y.T, half, col_half)
            lost += grid.rows.sdirk2(y, half, row_half)
        y1, e0 = grid.euler(y, ax0, ay0, dt, True)
        y2, e1 = grid.euler(y1, ax1, ay1, dt, True)
        y = 0.5 * (y + y2)
        lost += 0.5 * dt * (e0 + e1)
        if implicit:
            lost += grid.rows.sdirk2(y, half, row_half)
            lost += grid.cols.sdirk2(y.T, half, col_half)
        if (y < 0.0).any() or lost < 0.0:
            if implicit and fallback is None:
                fallback = (grid.rows.solvers(dt * grid.rows.ratio), grid.cols.solvers(dt * grid.cols.ratio))
            y, lost = first_order_imex_step(grid, m, ax0, ay0, dt, fallback)
        m = y
        gone += lost
    return m, gone


def first_order_imex_step(grid: Grid, m: FloatArray, ax, ay, dt: float, solvers) -> tuple[FloatArray, float]:
    """The positive fallback: forward-Euler upwind advection, then backward Euler on the rows and
    on the columns; returns m and the mass that left."""
    y, rate = grid.euler(m, ax, ay, dt, False)
    lost = dt * rate
    if solvers is not None:
        lost += grid.rows.backward_euler(y, dt, solvers[0])
        lost += grid.cols.backward_euler(y.T, dt, solvers[1])
    return y, lost

"""Euler–Maruyama particles in 2-D with walls, obstacles and exits: the NumPy reference of
``rust_core/src/particles2d.rs``.

Grid, node kinds and geometry: SPEC2D (/ :mod:`~mfg_ensemble.kernels.reference.grid2d`). Particles
are (n, 2) (columns x, y); u is (nt, ny, nx) on the output times t_k = k·T/(nt − 1).

**Drift.** α = −∇u. At the nodes, ∂x u along each row (∂y u along each column) by central
differences (u_{i+1} − u_{i−1})/(2dx) with the SPEC2D ghosts where a neighbour is not in the run:
beyond a domain wall the mirror about the end node (u_{−1} = u_1: zero slope at a wall node),
an obstacle neighbour the mirror about the face (the ghost is the node's own value), and at an
EXIT end node the odd ghost 2u_0 − u_1 (a one-sided slope); a one-node run has slope 0. Periodic
lines wrap. At OBSTACLE nodes ∇u = 0 (u is not defined there). Between nodes: bilinear in space
(a = (1 − fx)g[j, i] + fx·g[j, i+1], b likewise on row j + 1, g = (1 − fy)a + fy·b); between output
rows: linear in t, node by node ((1 − θ)g_k + θ·g_{k+1}, θ = s/k_j).

**Step.** P = X + α·dt + σ√dt·ξ, ξ = (ξx, ξy): ξx is normal p (the particle's index) of the Philox
sequence (seed, step, STREAM_EM) — the 1-D noise of particle p — and ξy normal p of (seed, step,
STREAM_EM_Y = 2): different Philox counters, so independent. Sub-step s of output interval j uses
the Philox step :func:`~mfg_ensemble.kernels.reference.particles.noise_step` (j, s), as in 1-D.

**Walls and exits (no obstacle).** If the straight segment X → P leaves the rectangle through a
"reflect" side, the first crossing (smallest segment parameter; ties: x-low, x-high, y-low,
y-high in that order) is judged: the crossing point's coordinate along the side (wrapped if that
direction is periodic) picks the node whose cell face covers it (nearest node, ⌊t + ½⌋); if that
node is an EXIT, the particle is removed (alive = False; a removed particle never moves again and
``exited`` counts its weight). Only the first crossing is judged (a particle reflected at a plain wall is
not judged again at a second wall within the same step). Otherwise each coordinate is folded back
as in 1-D (:func:`fold_into`: reflect or wrap).

**Exits between the steps (Brownian bridge): survival weights.** A path can touch an exit and
come back within one step, which the end points alone do not show: removing only steps that end
beyond the side misses those exits, an error of order √δ in the exited mass. So every particle
carries a weight w (1 at the start), and each step of an alive particle that is not removed,
from X to its end point Q (folded, after the walk), multiplies w by the probability S that the
step's Brownian bridge did not touch an exit: for each side with exit nodes (order x-low,
x-high, y-low, y-high; a corner exit node counts for both its walls) whose node nearest Q along
the side is an EXIT, with d₀, d₁ the distances of X and Q to that side, the bridge from X to Q
over the step (variance σ²δ per axis) touches the side's line with probability
exp(−2d₀d₁/(σ²δ)) (exact for a straight side and a constant drift, which does not change the
bridge), taken as 0 for exponents ≥ ``BRIDGE_CUTOFF``; S is the product of the 1 − exp(·). A
particle whose weight reaches 0 is removed. No weights when σ = 0 or there is no exit (all 1).

Weights rather than removals by a random draw (the first form of this, 2026-12-05): the expected
exits are the same, but the march is then continuous in u — S → 0 as Q nears the exit, where
the end-point rule removes the particle — so the fixed point does not stall at the jumps of
single removals (configs/room.toml's room without the pillar, 2·10⁴ particles: 3e-4 → below
1e-6). With a constant drift towards a straight exit the exited mass follows the first-passage
law of the continuous motion at any δ.

**Obstacles: one walk of the step.** Unfold the walls: along a "reflect" direction the plane is
tiled by the mirror images of the domain, along a "periodic" one by its translates, so that the
folded path of a step is the straight segment X → P followed in the unfolded plane, mapped back by
:func:`fold_into` at the end. In the unfolded plane the node cells are a regular lattice: cell k
is [lo + (k − ½)d, lo + (k + ½)d] for every integer k (the half cells of the end nodes of a
"reflect" direction and their mirror images join into whole cells), and it belongs to node k mod n
("periodic") or r = k mod 2(n − 1), node r or 2(n − 1) − r ("reflect"). Walls therefore lie inside
cells and only obstacle faces stop the walk. The step is walked cell by cell (2-D DDA,
Amanatides–Woo) from X's cell ⌊(X − lo)/d + ½⌋: the next face along each axis is
F = lo + (k ± ½)d at parameter t = (F − A)/(B − A) of the segment A → B; the axis with the smaller
t steps (ties: x); faces with t ≤ 1 are crossed. When the next cell is an OBSTACLE, the path is
reflected about that face: the crossing point R (R's coordinate set to F) starts a new segment
R → B', B' = B with that coordinate mirrored (2F − B), walked on from the same (free) cell. At most
``MAX_BOUNCES`` = 8 reflections; if the segment after the 8th is still blocked, the particle stays
at X for this step. The end point of the last segment is folded into the domain. A path that
crosses a blocked cell, or clips its corner, and ends in a free cell is reflected too. Exits are
judged on the walked path: its first crossing of a "reflect" side, found segment by segment (the
rule above applied to the segment, when the crossing comes no later than the segment's obstacle
face), is judged as above; no later crossing is. Without an obstacle hit the walk is the straight
step and all of this is the rule of the paragraph above, bit for bit. Last guard: if the folded
end point lies in a blocked cell by the point rule (nearest node; a rounding at a face), the
particle stays.

**Sub-steps.** Output interval j (length Δt) takes k_j = max(min_substeps[j], ⌈Δt·(Gx/dx + Gy/dy)⌉)
steps, Gx (Gy) the max |∂x u| (|∂y u|) at the nodes of the rows at both ends of the interval.

**Density.** At every output time the KDE (:mod:`~mfg_ensemble.kernels.reference.kde2d`) of the
alive particles with their weights, scaled to Σ w·m = W/n, W = Σ_alive weight (summed in particle
order; the alive count when there are no weights), and ``exited[k]`` = (n − W)/n: so Σ w·m +
exited = 1 up to rounding. A bandwidth rule is applied to the alive particles (weighted) at each
output time; when they have no spread (fewer than 2 alive, or all on a line) the previous output
time's bandwidth is kept (at t = 0: ValueError).
"""

from __future__ import annotations

import numpy as np

from mfg_ensemble.kernels.checks import FloatArray, check_finite
from mfg_ensemble.kernels.reference import rng
from mfg_ensemble.kernels.reference.grid2d import EXIT, OBSTACLE
from mfg_ensemble.kernels.reference.kde2d import bandwidth_rule_2d, density, ordered_sum
from mfg_ensemble.kernels.reference.particles import fold_into, noise_step
from mfg_ensemble.kernels.reference.substeps import IntArray, floors, step_limit, substeps

STREAM_EM_Y = 2
"""Stream tag of the y noise of the 2-D particles (x uses ``rng.STREAM_EM``)."""

BRIDGE_CUTOFF = 40.0
"""Exponents 2·d₀d₁/(σ²δ) above which the bridge's crossing probability is taken as 0: from 37.5
on, 1 − exp(−·) rounds to 1 anyway, so the cut-off changes no survival."""

MAX_BOUNCES = 8
"""Obstacle reflections per step; a step still blocked after them leaves the particle where it was."""


def spacing(lo: float, hi: float, n: int, bc: str) -> float:
    return (hi - lo) / (n if bc == "periodic" else n - 1)


def line_gradient(u: FloatArray, kinds: np.ndarray, d: float, periodic: bool) -> FloatArray:
    """∂u along the last axis of ``u`` (lines, n) with the ghosts of the module docstring."""
    obst = kinds == OBSTACLE
    if periodic:
        right = np.where(np.roll(obst, -1, axis=-1), u, np.roll(u, -1, axis=-1))
        left = np.where(np.roll(obst, 1, axis=-1), u, np.roll(u, 1, axis=-1))
    else:
        # neighbours inside the line (obstacle → the node's own value); at the walls: the inner one
        r_in = np.where(obst[..., 1:], u[..., :-1], u[..., 1:])  # right neighbour of nodes 0..n-2
        l_in = np.where(obst[..., :-1], u[..., 1:], u[..., :-1])  # left neighbour of nodes 1..n-1
        exit_ = kinds == EXIT
        first_ghost = np.where(exit_[..., 0], 2.0 * u[..., 0] - r_in[..., 0], r_in[..., 0])
        last_ghost = np.where(exit_[..., -1], 2.0 * u[..., -1] - l_in[..., -1], l_in[..., -1])
        right = np.concatenate([r_in, last_ghost[..., None]], axis=-1)
        left = np.concatenate([first_ghost[..., None], l_in], axis=-1)
    grad = (right - left) / (2.0 * d)
    return np.where(obst, 0.0, grad)


def node_gradients(
    u: FloatArray, dx: float, dy: float, bc: tuple[str, str], kinds: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """(∂x u, ∂y u) at the nodes of one field (ny, nx)."""
    gx = line_gradient(u, kinds, dx, bc[0] == "periodic")
    gy = line_gradient(u.T, kinds.T, dy, bc[1] == "periodic").T
    return gx, gy


def interpolate(g: FloatArray, lox: float, dx: float, loy: float, dy: float, p: FloatArray, bc) -> FloatArray:
    """Bilinear interpolation of node values g (ny, nx) at the points p (n, 2)."""
    ny, nx = g.shape
    tx = (p[:, 0] - lox) / dx
    i = np.minimum(np.maximum(np.floor(tx), 0.0).astype(np.int64), nx - 1 if bc[0] == "periodic" else nx - 2)
    fx = tx - i
    ty = (p[:, 1] - loy) / dy
    j = np.minimum(np.maximum(np.floor(ty), 0.0).astype(np.int64), ny - 1 if bc[1] == "periodic" else ny - 2)
    fy = ty - j
    i1, j1 = (i + 1) % nx, (j + 1) % ny
    a = (1.0 - fx) * g[j, i] + fx * g[j, i1]
    b = (1.0 - fx) * g[j1, i] + fx * g[j1, i1]
    return (1.0 - fy) * a + fy * b


def nearest_node(v: FloatArray, lo: float, d: float, n: int, periodic: bool) -> np.ndarray:
    """The node whose cell [lo + k·d ± d/2] holds v: ⌊(v − lo)/d + ½⌋ (wrapped, or capped to n − 1)."""
    k = np.floor((v - lo) / d + 0.5).astype(np.int64)
    return np.mod(k, n) if periodic else np.clip(k, 0, n - 1)


class Geometry:
    """The grid of a march: lows, highs, spacings, sizes, bcs and node kinds."""

    def __init__(self, lo, hi, nx: int, ny: int, bc: tuple[str, str], kinds: np.ndarray) -> None:
        self.lo, self.hi, self.n, self.bc, self.kinds = lo, hi, (nx, ny), bc, kinds
        self.d = (spacing(lo[0], hi[0], nx, bc[0]), spacing(lo[1], hi[1], ny, bc[1]))
        self.periodic = (bc[0] == "periodic", bc[1] == "periodic")
        self.has_exits = bool((kinds == EXIT).any())
        self.has_obstacles = bool((kinds == OBSTACLE).any())
        exit_ = kinds == EXIT
        ends = (exit_[:, 0].any(), exit_[:, -1].any(), exit_[0, :].any(), exit_[-1, :].any())
        self.exit_sides = tuple(bool(has) and not self.periodic[side // 2] for side, has in enumerate(ends))
        """Which sides (2·axis + 0 low / 1 high) are walls with exit nodes (a corner exit node counts
        for both walls it is on, as in :meth:`exit_at`)."""

    def weighs(self, sigma: float) -> bool:
        """Whether the particles of a march with noise ``sigma`` carry survival weights (the
        bridge of the module docstring): there are exits and σ > 0. Otherwise every weight stays 1."""
        return self.has_exits and sigma > 0.0

    def cell(self, p: FloatArray) -> tuple[np.ndarray, np.ndarray]:
        i = nearest_node(p[:, 0], self.lo[0], self.d[0], self.n[0], self.periodic[0])
        j = nearest_node(p[:, 1], self.lo[1], self.d[1], self.n[1], self.periodic[1])
        return j, i

    def blocked(self, p: FloatArray) -> np.ndarray:
        j, i = self.cell(p)
        return self.kinds[j, i] == OBSTACLE

    def first_wall(self, x: FloatArray, p: FloatArray) -> tuple[np.ndarray, np.ndarray]:
        """(t, side) of the first crossing of a "reflect" side by the segments x → p (t = inf and
        side = −1 where none; side = 2·axis + (0 low, 1 high); ties in that order)."""
        best = np.full(x.shape[0], np.inf)
        side = np.full(x.shape[0], -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            for a in range(2):
                if self.periodic[a]:
                    continue
                for s, wall in enumerate((self.lo[a], self.hi[a])):
                    crossed = p[:, a] < wall if s == 0 else p[:, a] > wall
                    t = (wall - x[:, a]) / (p[:, a] - x[:, a])
                    take = crossed & (t < best)
                    best = np.where(take, t, best)
                    side = np.where(take, 2 * a + s, side)
        return best, side

    def exit_at(self, x: FloatArray, p: FloatArray, t: np.ndarray, side: np.ndarray) -> np.ndarray:
        """Whether the crossing at parameter t of side ``side`` (≥ 0) of the segments x → p is at an exit."""
        out = np.zeros(x.shape[0], dtype=bool)
        for code in range(4):
            sel = side == code
            if not sel.any():
                continue
            a, s = divmod(code, 2)
            b = 1 - a
            c = x[sel, b] + t[sel] * (p[sel, b] - x[sel, b])
            if self.periodic[b]:
                c = fold_into(c, self.lo[b], self.hi[b], "periodic")
            else:
                c = np.clip(c, self.lo[b], self.hi[b])
            k = nearest_node(c, self.lo[b], self.d[b], self.n[b], self.periodic[b])
            end = 0 if s == 0 else self.n[a] - 1
            kinds = self.kinds[k, end] if a == 0 else self.kinds[end, k]
            out[sel] = kinds == EXIT
        return out

    def exits(self, x: FloatArray, p: FloatArray) -> np.ndarray:
        """Which straight steps x → p leave through an exit (see the module docstring)."""
        t, side = self.first_wall(x, p)
        return self.exit_at(x, p, t, side)

    def bridge_survival(self, x: FloatArray, q: FloatArray, inv: float) -> FloatArray:
        """The probability that the Brownian bridge of the steps x → q (inside the domain) did not
        touch an exit, ``inv`` = 2/(σ²δ) (module docstring, "Exits between the steps")."""
        survive = np.ones(x.shape[0])
        for side in range(4):
            if not self.exit_sides[side]:
                continue
            a, high = divmod(side, 2)
            wall = self.hi[a] if high else self.lo[a]
            e = np.abs(x[:, a] - wall) * np.abs(q[:, a] - wall) * inv
            b = 1 - a
            k = nearest_node(q[:, b], self.lo[b], self.d[b], self.n[b], self.periodic[b])
            end = self.n[a] - 1 if high else 0
            kinds = self.kinds[k, end] if a == 0 else self.kinds[end, k]
            hit = (e < BRIDGE_CUTOFF) & (kinds == EXIT)
            survive[hit] *= 1.0 - np.exp(-e[hit])
        return survive

    def fold(self, p: FloatArray) -> FloatArray:
        return np.stack([fold_into(p[:, a], self.lo[a], self.hi[a], self.bc[a]) for a in range(2)], axis=1)

    def node_of_cell(self, k: np.ndarray, a: int) -> np.ndarray:
        """The node of the unfolded cell k along axis a (the tiling of the plane by mirror images
        ("reflect", period 2(n − 1) cells) or translates ("periodic", period n))."""
        n = self.n[a]
        if self.periodic[a]:
            return np.mod(k, n)
        r = np.mod(k, 2 * (n - 1))
        return np.where(r > n - 1, 2 * (n - 1) - r, r)

    def first_face(self, a0: FloatArray, b: FloatArray, k: np.ndarray):
        """The DDA walk of the segments a0 → b from the unfolded cells k (n, 2): (t, axis, face, cell)
        of the first face into an obstacle cell (t = inf where none is crossed up to t = 1; cell =
        the last free cell, k where none)."""
        n = a0.shape[0]
        v = b - a0
        s = np.sign(v).astype(np.int64)
        k = k.copy()
        t_hit = np.full(n, np.inf)
        axis_hit = np.zeros(n, dtype=np.int64)
        face_hit = np.zeros(n)
        todo = np.arange(n)
        while todo.size:
            kk, ss, aa, vv = k[todo], s[todo], a0[todo], v[todo]
            f = np.empty((todo.size, 2))
            t = np.empty((todo.size, 2))
            with np.errstate(divide="ignore", invalid="ignore"):
                for a in range(2):
                    f[:, a] = self.lo[a] + (kk[:, a] + 0.5 * ss[:, a]) * self.d[a]
                    t[:, a] = np.where(ss[:, a] != 0, (f[:, a] - aa[:, a]) / vv[:, a], np.inf)
            axis = np.where(t[:, 1] < t[:, 0], 1, 0)
            rows = np.arange(todo.size)
            tt = t[rows, axis]
            going = tt <= 1.0
            nxt = kk.copy()
            nxt[rows, axis] += ss[rows, axis]
            blocked = self.kinds[self.node_of_cell(nxt[:, 1], 1), self.node_of_cell(nxt[:, 0], 0)] == OBSTACLE
            hit = going & blocked
            t_hit[todo[hit]] = tt[hit]
            axis_hit[todo[hit]] = axis[hit]
            face_hit[todo[hit]] = f[rows, axis][hit]
            move = going & ~blocked
            k[todo[move]] = nxt[move]
            todo = todo[move]
        return t_hit, axis_hit, face_hit, k

    def walk(self, x: FloatArray, p: FloatArray) -> tuple[FloatArray, np.ndarray, np.ndarray]:
        """The steps x → p with walls, exits and obstacles (module docstring): (end points, removed,
        stayed). Removed particles keep x; stayed ones (still blocked after ``MAX_BOUNCES``) too."""
        n = x.shape[0]
        end = p.copy()
        gone = np.zeros(n, dtype=bool)
        stay = np.zeros(n, dtype=bool)
        judged = np.full(n, not self.has_exits)
        a0, b = x.copy(), p.copy()
        k = np.stack([np.floor((x[:, a] - self.lo[a]) / self.d[a] + 0.5).astype(np.int64) for a in range(2)], axis=1)
        todo = np.arange(n)
        bounces = 0
        while todo.size:
            aa, bb = a0[todo], b[todo]
            t_hit, axis, face, cells = self.first_face(aa, bb, k[todo])
            judge = ~judged[todo]
            if judge.any():
                t_wall, side = self.first_wall(aa, bb)
                judge &= (side >= 0) & (t_wall <= t_hit)
                out = np.zeros(todo.size, dtype=bool)
                out[judge] = self.exit_at(aa[judge], bb[judge], t_wall[judge], side[judge])
                judged[todo[judge]] = True
                gone[todo[out]] = True
            else:
                out = np.zeros(todo.size, dtype=bool)
            hit = np.isfinite(t_hit) & ~out
            free = ~hit & ~out
            end[todo[free]] = bb[free]
            if bounces == MAX_BOUNCES:
                stay[todo[hit]] = True
                break
            bounces += 1
            rows = np.nonzero(hit)[0]
            r = aa[rows] + t_hit[rows, None] * (bb[rows] - aa[rows])
            r[np.arange(rows.size), axis[rows]] = face[rows]
            mirrored = bb[rows].copy()
            mirrored[np.arange(rows.size), axis[rows]] = 2.0 * face[rows] - bb[rows, axis[rows]]
            todo = todo[rows]
            a0[todo], b[todo], k[todo] = r, mirrored, cells[rows]
        q = self.fold(end)
        stay |= ~gone & self.blocked(q)
        return np.where((stay | gone)[:, None], x, q), gone, stay


def check_x0(x0: FloatArray, geo: Geometry) -> None:
    """ValueError naming x0 unless every particle is inside the domain and not in a blocked cell."""
    check_finite("x0", x0.ravel())
    for a, name in enumerate("xy"):
        bad = (x0[:, a] < geo.lo[a]) | (x0[:, a] > geo.hi[a])
        if bad.any():
            p = int(np.argmax(bad))
            raise ValueError(
                f"x0 must lie in the domain: x0[{p}] = ({x0[p, 0]}, {x0[p, 1]}) has {name} outside "
                f"[{geo.lo[a]}, {geo.hi[a]}]"
            )
    if geo.has_obstacles:
        bad = geo.blocked(x0)
        if bad.any():
            p = int(np.argmax(bad))
            raise ValueError(f"x0 must not lie in an obstacle: x0[{p}] = ({x0[p, 0]}, {x0[p, 1]}) is in a blocked cell")


def step_particles(x, alive, weight, gx, gy, dt, sigma, seed, step, geo: Geometry):
    """One step of all alive particles; returns (new positions, new alive mask, new weights)."""
    n = x.shape[0]
    lox, loy = geo.lo
    dx, dy = geo.d
    xi_x = rng.normals(seed, step, rng.STREAM_EM, n)
    xi_y = rng.normals(seed, step, STREAM_EM_Y, n)
    scale = sigma * np.sqrt(dt)
    bx = -interpolate(gx, lox, dx, loy, dy, x, geo.bc)
    by = -interpolate(gy, lox, dx, loy, dy, x, geo.bc)
    p = np.stack([x[:, 0] + bx * dt + scale * xi_x, x[:, 1] + by * dt + scale * xi_y], axis=1)
    if geo.has_obstacles:
        q, gone, _ = geo.walk(x, p)
    else:
        gone = geo.exits(x, p) if geo.has_exits else np.zeros(n, dtype=bool)
        q = geo.fold(p)
    keep = alive & ~gone
    if geo.weighs(sigma):
        survive = geo.bridge_survival(x, q, 2.0 / (sigma * sigma * dt))
        hit = keep & (survive < 1.0)
        weight = weight.copy()
        weight[hit] *= survive[hit]
        keep &= weight != 0.0
    return np.where(keep[:, None], q, x), keep, weight


def drive(x0, u, geo: Geometry, *, sigma, T, seed, min_substeps, at_output):
    """The particle motion; ``at_output(k, x, alive, weight)`` at every output time. Returns the
    sub-step counts."""
    nt = u.shape[0]
    floor = floors(min_substeps, nt - 1)
    dx, dy = geo.d
    dt_out = T / (nt - 1)
    x = np.array(x0, dtype=np.float64)
    alive = np.ones(x.shape[0], dtype=bool)
    weight = np.ones(x.shape[0])
    at_output(0, x, alive, weight)
    g_now = node_gradients(u[0], dx, dy, geo.bc, geo.kinds)
    counts = np.zeros(nt - 1, dtype=np.int64)
    for j in range(nt - 1):
        g_next = node_gradients(u[j + 1], dx, dy, geo.bc, geo.kinds)
        gxm = float(max(np.max(np.abs(g_now[0])), np.max(np.abs(g_next[0]))))
        gym = float(max(np.max(np.abs(g_now[1])), np.max(np.abs(g_next[1]))))
        rate = gxm / dx + gym / dy
        k, dt = substeps(dt_out, step_limit(1.0, rate), f"FP particles near t = {j * dt_out}", int(floor[j]))
        for s in range(k):
            theta = s / k
            gx = (1.0 - theta) * g_now[0] + theta * g_next[0]
            gy = (1.0 - theta) * g_now[1] + theta * g_next[1]
            x, alive, weight = step_particles(x, alive, weight, gx, gy, dt, sigma, seed, noise_step(j, s), geo)
        counts[j] = k
        at_output(j + 1, x, alive, weight)
        g_now = g_next
    return counts


def particles_forward_2d(
    x0: FloatArray,
    u: FloatArray,
    *,
    lo: tuple[float, float],
    hi: tuple[float, float],
    sigma: float,
    T: float,
    seed: int,
    bc: tuple[str, str],
    kinds: np.ndarray,
    method: str,
    bandwidth: tuple[float, float] | str,
    min_substeps: IntArray | None = None,
    positions: bool = False,
):
    """The 2-D particle Fokker–Planck march (module docstring). Returns (m (nt, ny, nx), counts
    (nt − 1,), exited (nt,)); with ``positions``, also the final positions (n, 2), alive mask and
    weights."""
    check_finite("u", u.ravel())
    nt, ny, nx = u.shape
    geo = Geometry(lo, hi, nx, ny, bc, kinds)
    check_x0(x0, geo)
    n = x0.shape[0]
    axes = ((lo[0], geo.d[0], nx), (lo[1], geo.d[1], ny))
    m = np.full((nt, ny, nx), np.nan)
    exited = np.zeros(nt)
    state: dict = {"h": None, "x": None, "alive": None, "weight": None}

    weighted = geo.weighs(sigma)

    def output(k: int, x: FloatArray, alive: np.ndarray, weight: FloatArray) -> None:
        live = x[alive]
        live_w = weight[alive] if weighted else None
        if isinstance(bandwidth, str):
            h = bandwidth_rule_2d(live, bandwidth, live_w)
            if h is None:
                h = state["h"]
                if h is None:
                    raise ValueError(
                        f"bandwidth={bandwidth!r} needs at least 2 particles spread in both x and y; "
                        "pass a float bandwidth instead"
                    )
            state["h"] = h
        else:
            h = bandwidth
        total = ordered_sum(live_w) if live_w is not None else float(alive.sum())
        m[k] = density(live, axes, h, method, bc, kinds, total / n, live_w)
        exited[k] = (n - total) / n
        state["x"], state["alive"], state["weight"] = x, alive, weight

    counts = drive(x0, u, geo, sigma=sigma, T=T, seed=seed, min_substeps=min_substeps, at_output=output)
    if positions:
        return m, counts, exited, state["x"], state["alive"], state["weight"]
    return m, counts, exited

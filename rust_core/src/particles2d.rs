//! Euler–Maruyama particles in 2-D for the Fokker–Planck equation: drift −∇u (central
//! differences with the SPEC2D ghosts, bilinear in space, linear in time), walls folded per
//! coordinate, steps walked cell by cell (2-D DDA in the plane unfolded at the walls) and
//! reflected about the first obstacle face they cross (at most `MAX_BOUNCES` times), particles
//! removed when their step leaves through an exit and weighted by the survival of the step's
//! Brownian bridge next to exits, the weighted KDE of the alive particles (scaled to their
//! weight) at every output time.
//!
//! The maths: see mfg_ensemble/kernels/reference/particles2d.py.
//!
//! Implementation: particles (interleaved x, y) are moved in fixed chunks (`CHUNK`, in
//! parallel), each chunk's x and y normals made in two batches by `rng::fill_normals` from the
//! particles' indices, so the result does not depend on how Rayon splits the work. The loop
//! over a chunk's particles (`step_chunk`) runs through `simd::dispatch`, its helpers inlined
//! into it, so that `floor` is one instruction (the same bits as the baseline's library call).
//! A step from a node whose clearance (Chebyshev distance in cells to the nearest obstacle,
//! precomputed) exceeds its length by 2.5 cells skips the cell walk: it cannot meet an obstacle,
//! and the walk would give exactly exits + fold (`may_meet_obstacle`; tested against the walk).
//! The weights' total is summed in particle order, so the exited mass too is the same bits for
//! any thread count.

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::grid2d::{EXIT, OBSTACLE};
use crate::kde::Method;
use crate::kde2d::{bandwidth_rule_2d, density, Axis};
use crate::particles::{fold_into, noise_step};
use crate::rng::{fill_normals_where, STREAM_EM};
use crate::simd;
use crate::substeps::{floors, substeps};

/// Stream tag of the y noise (x uses `STREAM_EM`): other Philox counters, independent normals.
pub const STREAM_EM_Y: u64 = 2;
/// Exponents 2·d₀d₁/(σ²δ) of the bridge's crossing probability e^(−·) above which it is taken as
/// 0: from 37.5 on, 1 − e^(−·) rounds to 1, so the cut-off changes no survival.
const BRIDGE_CUTOFF: f64 = 40.0;
/// Obstacle reflections per step; a step still blocked after them leaves the particle where it was.
pub const MAX_BOUNCES: usize = 8;
/// Largest clearance recorded (cells): farther obstacles are not looked for.
const CLEARANCE_CAP: u8 = 16;
/// Particles per parallel task: a multiple of 4 (one Philox block gives four normals).
const CHUNK: usize = 4096;

/// The bandwidth of the march's KDE: fixed (hx, hy), or a rule applied at every output time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bandwidth2 {
    Fixed(f64, f64),
    Rule,
}

/// Parameters of `particles_forward_2d` that are not arrays.
#[derive(Debug, Clone, Copy)]
pub struct Forward2dParams {
    pub lo: [f64; 2],
    pub hi: [f64; 2],
    pub sigma: f64,
    pub horizon: f64,
    pub seed: u64,
    pub bc: [Boundary; 2],
    pub method: Method,
    pub bandwidth: Bandwidth2,
}

/// What the march returns: densities (nt, ny, nx) row-major, sub-steps per output interval,
/// exited fraction per output time, the final positions (interleaved), alive mask and weights
/// (1 unless the bridge lowered them; those of removed particles unspecified), and why the march
/// blew up, if it did.
#[derive(Debug, Clone)]
pub struct Marching2d {
    pub values: Vec<f64>,
    pub substeps: Vec<usize>,
    pub exited: Vec<f64>,
    pub positions: Vec<f64>,
    pub alive: Vec<bool>,
    pub weights: Vec<f64>,
    pub diverged: Option<String>,
}

/// A wall with exit nodes: its axis, coordinate and end node index along the axis.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ExitWall {
    axis: usize,
    at: f64,
    end: usize,
}

/// The grid of a march: the two axes, the domain's ends and the node kinds (ny, nx).
pub struct Geometry<'a> {
    pub axes: [Axis; 2],
    pub lo: [f64; 2],
    pub hi: [f64; 2],
    pub kinds: &'a [u8],
    pub has_exits: bool,
    pub has_obstacles: bool,
    /// The walls with exit nodes (a corner exit node counts for both walls it is on, as in
    /// `exit_at`), in the order x-low, x-high, y-low, y-high: `exit_walls[..exit_wall_count]`.
    exit_walls: [ExitWall; 4],
    exit_wall_count: usize,
    /// Per node (ny, nx): the Chebyshev distance in cells (unfolded cells mapped to nodes) to
    /// the nearest obstacle cell, capped at `CLEARANCE_CAP`; empty without obstacles.
    clearance: Vec<u8>,
}

impl<'a> Geometry<'a> {
    /// Whether the particles of a march with noise `sigma` carry survival weights (the bridge
    /// of the module docs): there are exits and σ > 0. Otherwise every weight stays 1.
    pub fn weighs(&self, sigma: f64) -> bool {
        self.has_exits && sigma > 0.0
    }

    pub fn new(lo: [f64; 2], hi: [f64; 2], nx: usize, ny: usize, bc: [Boundary; 2], kinds: &'a [u8]) -> Self {
        let axis = |a: usize, n: usize| {
            let cells = if bc[a] == Boundary::Periodic { n } else { n - 1 };
            Axis { lo: lo[a], d: (hi[a] - lo[a]) / cells as f64, n, bc: bc[a] }
        };
        let mut geo = Geometry {
            axes: [axis(0, nx), axis(1, ny)],
            lo,
            hi,
            kinds,
            has_exits: kinds.contains(&EXIT),
            has_obstacles: kinds.contains(&OBSTACLE),
            exit_walls: [ExitWall { axis: 0, at: 0.0, end: 0 }; 4],
            exit_wall_count: 0,
            clearance: Vec::new(),
        };
        for side in 0..4 {
            let (a, high) = (side / 2, side % 2 == 1);
            let end = if high { geo.axes[a].n - 1 } else { 0 };
            let kind = |k: usize| if a == 0 { geo.kind(k, end) } else { geo.kind(end, k) };
            if !geo.periodic(a) && (0..geo.axes[1 - a].n).any(|k| kind(k) == EXIT) {
                let at = if high { hi[a] } else { lo[a] };
                geo.exit_walls[geo.exit_wall_count] = ExitWall { axis: a, at, end };
                geo.exit_wall_count += 1;
            }
        }
        if geo.has_obstacles {
            geo.clearance = geo.clearances(nx, ny);
        }
        geo
    }

    /// The clearance of every node: along rows the distance to the nearest obstacle cell, then
    /// along columns max(|dj|, row distance) minimised (a separable Chebyshev distance).
    fn clearances(&self, nx: usize, ny: usize) -> Vec<u8> {
        let cap = CLEARANCE_CAP as i64;
        let mut row = vec![CLEARANCE_CAP; nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                let hit = (0..cap).find(|&m| {
                    [i as i64 - m, i as i64 + m].iter().any(|&c| self.kind(j, self.node_of_cell(c, 0)) == OBSTACLE)
                });
                row[j * nx + i] = hit.map_or(CLEARANCE_CAP, |m| m as u8);
            }
        }
        let mut out = vec![CLEARANCE_CAP; nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                out[j * nx + i] = (-cap + 1..cap)
                    .map(|dj| (dj.unsigned_abs() as u8).max(row[self.node_of_cell(j as i64 + dj, 1) * nx + i]))
                    .min()
                    .unwrap_or(CLEARANCE_CAP)
                    .min(CLEARANCE_CAP);
            }
        }
        out
    }

    /// Whether the step x → p may meet an obstacle. Not if it moves at most R − 2.5 cells along
    /// each axis, R the clearance of x's node: it then crosses at most R − 2 faces per axis (one
    /// more if x lies on a face), so it only visits cells closer than R to x's, none blocked. The
    /// walk then crosses no obstacle face and is exactly exits + fold, which is faster.
    #[cfg(test)]
    fn may_meet_obstacle(&self, x: [f64; 2], p: [f64; 2]) -> bool {
        self.may_meet_obstacle_from(self.node_at(both(|a| self.cells(x[a], a))), x, p)
    }

    /// `may_meet_obstacle` with the index of x's nearest node given (`node_at` of x's cell
    /// coordinates, which the step computes once for the interpolation too).
    #[inline(always)]
    fn may_meet_obstacle_from(&self, node: usize, x: [f64; 2], p: [f64; 2]) -> bool {
        let r = self.clearance[node] as f64 - 2.5;
        !((p[0] - x[0]).abs() <= r * self.axes[0].d && (p[1] - x[1]).abs() <= r * self.axes[1].d)
    }

    #[inline(always)]
    fn periodic(&self, a: usize) -> bool {
        self.axes[a].bc == Boundary::Periodic
    }

    /// The cell coordinate (v − lo)/d of `v` along axis `a`: its floor is v's cell (`cell`), its
    /// rounding v's nearest node (`rounded`).
    #[inline(always)]
    fn cells(&self, v: f64, a: usize) -> f64 {
        (v - self.axes[a].lo) / self.axes[a].d
    }

    /// The node ⌊t + ½⌋ along axis `a` of the cell coordinate `t`, wrapped or capped.
    #[inline(always)]
    fn rounded(&self, t: f64, a: usize) -> usize {
        let n = self.axes[a].n as i64;
        let k = (t + 0.5).floor() as i64;
        if (0..n).contains(&k) {
            k as usize
        } else if self.periodic(a) {
            k.rem_euclid(n) as usize
        } else {
            k.clamp(0, n - 1) as usize
        }
    }

    /// The node whose cell [lo + k·d ± d/2] holds `v` along axis `a`: ⌊(v − lo)/d + ½⌋, wrapped or capped.
    #[inline(always)]
    fn nearest(&self, v: f64, a: usize) -> usize {
        self.rounded(self.cells(v, a), a)
    }

    /// The index in a field (ny, nx) of the nearest node of the point with cell coordinates `t`.
    #[inline(always)]
    fn node_at(&self, t: [f64; 2]) -> usize {
        self.rounded(t[1], 1) * self.axes[0].n + self.rounded(t[0], 0)
    }

    #[inline(always)]
    fn kind(&self, j: usize, i: usize) -> u8 {
        self.kinds[j * self.axes[0].n + i]
    }

    #[inline]
    pub fn blocked(&self, p: [f64; 2]) -> bool {
        self.kind(self.nearest(p[1], 1), self.nearest(p[0], 0)) == OBSTACLE
    }

    /// The first crossing of a "reflect" side by the segment x → p: (t, axis, 0 low / 1 high),
    /// ties in the order x-low, x-high, y-low, y-high.
    #[inline(always)]
    fn first_wall(&self, x: [f64; 2], p: [f64; 2]) -> Option<(f64, usize, usize)> {
        let mut best = f64::INFINITY;
        let mut side = None;
        for a in 0..2 {
            if self.periodic(a) {
                continue;
            }
            for (s, wall) in [self.lo[a], self.hi[a]].into_iter().enumerate() {
                let crossed = if s == 0 { p[a] < wall } else { p[a] > wall };
                if crossed {
                    let t = (wall - x[a]) / (p[a] - x[a]);
                    if t < best {
                        best = t;
                        side = Some((a, s));
                    }
                }
            }
        }
        side.map(|(a, s)| (best, a, s))
    }

    /// Whether the crossing at parameter t of side (a, s) by the segment x → p is at an exit.
    #[inline(always)]
    fn exit_at(&self, x: [f64; 2], p: [f64; 2], (t, a, s): (f64, usize, usize)) -> bool {
        let b = 1 - a;
        let c = x[b] + t * (p[b] - x[b]);
        let c = if self.periodic(b) {
            fold_into(c, self.lo[b], self.hi[b], Boundary::Periodic)
        } else {
            c.max(self.lo[b]).min(self.hi[b])
        };
        let k = self.nearest(c, b);
        let end = if s == 0 { 0 } else { self.axes[a].n - 1 };
        let kind = if a == 0 { self.kind(k, end) } else { self.kind(end, k) };
        kind == EXIT
    }

    /// Whether the straight step x → p leaves through an exit (first crossing of a "reflect" side).
    /// A p inside the domain crosses no side: that usual case is answered first, without
    /// `first_wall`'s loop over the sides.
    #[inline(always)]
    fn exits(&self, x: [f64; 2], p: [f64; 2]) -> bool {
        let inside = |a: usize| p[a] >= self.lo[a] && p[a] <= self.hi[a];
        if inside(0) && inside(1) {
            return false;
        }
        self.first_wall(x, p).is_some_and(|w| self.exit_at(x, p, w))
    }

    /// The probability that the Brownian bridge of a step from x to q (inside the domain) did
    /// not touch an exit: the product over the sides with exits, in the order x-low, x-high,
    /// y-low, y-high, of 1 − exp(−d₀d₁·`inv`), d₀ and d₁ the distances of x and q to the side and
    /// `inv` = 2/(σ²δ), for the sides whose node nearest q along them is an EXIT (taken as 1 from
    /// the exponent `BRIDGE_CUTOFF` on). See the reference's `bridge_survival`.
    #[inline(always)]
    fn bridge_survival(&self, x: [f64; 2], q: [f64; 2], inv: f64) -> f64 {
        let mut survive = 1.0;
        for &ExitWall { axis: a, at, end } in &self.exit_walls[..self.exit_wall_count] {
            let e = (x[a] - at).abs() * (q[a] - at).abs() * inv;
            if e < BRIDGE_CUTOFF {
                let k = self.nearest(q[1 - a], 1 - a);
                if (if a == 0 { self.kind(k, end) } else { self.kind(end, k) }) == EXIT {
                    survive *= 1.0 - (-e).exp();
                }
            }
        }
        survive
    }

    /// The node of the unfolded cell k along axis a (mirror images or translates of the domain).
    #[inline]
    fn node_of_cell(&self, k: i64, a: usize) -> usize {
        let n = self.axes[a].n as i64;
        if (0..n).contains(&k) {
            k as usize
        } else if self.periodic(a) {
            k.rem_euclid(n) as usize
        } else {
            let r = k.rem_euclid(2 * (n - 1));
            (if r > n - 1 { 2 * (n - 1) - r } else { r }) as usize
        }
    }

    /// `p` folded into the domain per coordinate (`fold_fast`, written out for both axes so that
    /// it is inlined into the dispatched step).
    #[inline(always)]
    fn fold(&self, p: [f64; 2]) -> [f64; 2] {
        let [ax, ay] = &self.axes;
        [fold_fast(p[0], self.lo[0], self.hi[0], ax.bc), fold_fast(p[1], self.lo[1], self.hi[1], ay.bc)]
    }

    /// The DDA walk of the segment a0 → b from the unfolded cell `k`: the first face into an
    /// obstacle cell crossed up to t = 1 as (t, axis, face), and the last free cell (updates `k`).
    fn first_face(&self, a0: [f64; 2], b: [f64; 2], k: &mut [i64; 2]) -> Option<(f64, usize, f64)> {
        let v = [b[0] - a0[0], b[1] - a0[1]];
        let s = v.map(|w| {
            if w > 0.0 {
                1i64
            } else if w < 0.0 {
                -1
            } else {
                0
            }
        });
        loop {
            let mut f = [0.0; 2];
            let mut t = [f64::INFINITY; 2];
            for a in 0..2 {
                f[a] = self.lo[a] + (k[a] as f64 + 0.5 * s[a] as f64) * self.axes[a].d;
                if s[a] != 0 {
                    t[a] = (f[a] - a0[a]) / v[a];
                }
            }
            let axis = if t[1] < t[0] { 1 } else { 0 };
            if t[axis].is_nan() || t[axis] > 1.0 {
                return None;
            }
            let mut next = *k;
            next[axis] += s[axis];
            if self.kind(self.node_of_cell(next[1], 1), self.node_of_cell(next[0], 0)) == OBSTACLE {
                return Some((t[axis], axis, f[axis]));
            }
            *k = next;
        }
    }

    /// The step x → p with walls, exits and obstacles (the reference's `walk`): `None` if the
    /// particle leaves through an exit, else its new position (x if it stays).
    fn walk(&self, x: [f64; 2], p: [f64; 2]) -> Option<[f64; 2]> {
        let mut judged = !self.has_exits;
        let (mut a0, mut b) = (x, p);
        let mut k = both(|a| ((x[a] - self.lo[a]) / self.axes[a].d + 0.5).floor() as i64);
        let mut bounces = 0;
        let end = loop {
            let hit = self.first_face(a0, b, &mut k);
            if !judged {
                if let Some(w) = self.first_wall(a0, b) {
                    if hit.is_none_or(|h| w.0 <= h.0) {
                        judged = true;
                        if self.exit_at(a0, b, w) {
                            return None;
                        }
                    }
                }
            }
            let Some((t, axis, face)) = hit else { break b };
            if bounces == MAX_BOUNCES {
                return Some(x);
            }
            bounces += 1;
            let mut r = [a0[0] + t * (b[0] - a0[0]), a0[1] + t * (b[1] - a0[1])];
            r[axis] = face;
            b[axis] = 2.0 * face - b[axis];
            a0 = r;
        };
        let q = self.fold(end);
        Some(if self.blocked(q) { x } else { q })
    }
}

/// ∂u along one line (values `u(k)`, kinds `kind(k)`, k < n) with the SPEC2D ghosts, into `out(k, g)`.
fn line_gradient(
    n: usize,
    d: f64,
    periodic: bool,
    u: impl Fn(usize) -> f64,
    kind: impl Fn(usize) -> u8,
    mut out: impl FnMut(usize, f64),
) {
    let obst = |k: usize| kind(k) == OBSTACLE;
    // neighbour inside the line; an obstacle neighbour gives the node's own value
    let inner = |i: usize, k: usize| if obst(k) { u(i) } else { u(k) };
    for i in 0..n {
        let (right, left) = if periodic {
            (inner(i, (i + 1) % n), inner(i, (i + n - 1) % n))
        } else {
            let ghost = |other: f64| if kind(i) == EXIT { 2.0 * u(i) - other } else { other };
            let right = if i + 1 < n { inner(i, i + 1) } else { ghost(inner(i, i - 1)) };
            let left = if i > 0 { inner(i, i - 1) } else { ghost(inner(i, i + 1)) };
            (right, left)
        };
        out(i, if obst(i) { 0.0 } else { (right - left) / (2.0 * d) });
    }
}

/// (∂x u, ∂y u) at the nodes of one field (ny, nx), row-major.
pub fn node_gradients(u: &[f64], geo: &Geometry) -> (Vec<f64>, Vec<f64>) {
    let (ax, ay) = (&geo.axes[0], &geo.axes[1]);
    let (nx, ny) = (ax.n, ay.n);
    let mut gx = vec![0.0; nx * ny];
    let mut gy = vec![0.0; nx * ny];
    gx.par_chunks_mut(nx).enumerate().for_each(|(j, row)| {
        let base = j * nx;
        line_gradient(
            nx,
            ax.d,
            ax.bc == Boundary::Periodic,
            |k| u[base + k],
            |k| geo.kinds[base + k],
            |k, g| row[k] = g,
        );
    });
    let cols: Vec<Vec<f64>> = (0..nx)
        .into_par_iter()
        .map(|i| {
            let mut col = vec![0.0; ny];
            line_gradient(
                ny,
                ay.d,
                ay.bc == Boundary::Periodic,
                |k| u[k * nx + i],
                |k| geo.kinds[k * nx + i],
                |k, g| col[k] = g,
            );
            col
        })
        .collect();
    for (i, col) in cols.iter().enumerate() {
        for (j, &g) in col.iter().enumerate() {
            gy[j * nx + i] = g;
        }
    }
    (gx, gy)
}

/// Bilinear interpolation of the node vectors `g` (ny, nx) at the point with cell coordinates
/// `t` (the same arithmetic for each component as the reference's `interpolate`; the cell and
/// weights found once, the two components of a node read together).
#[inline(always)]
fn interpolate2(g: &[[f64; 2]], geo: &Geometry, t: [f64; 2]) -> [f64; 2] {
    let (ax, ay) = (&geo.axes[0], &geo.axes[1]);
    let nx = ax.n;
    let (i, fx) = cell(ax, t[0]);
    let (j, fy) = cell(ay, t[1]);
    // the next node, wrapped (i < n: a comparison, not an integer division)
    let next = |k: usize, n: usize| if k + 1 == n { 0 } else { k + 1 };
    let (i1, j1) = (next(i, nx), next(j, ay.n));
    let (g00, g01, g10, g11) = (g[j * nx + i], g[j * nx + i1], g[j1 * nx + i], g[j1 * nx + i1]);
    both(|c| {
        let a = (1.0 - fx) * g00[c] + fx * g01[c];
        let b = (1.0 - fx) * g10[c] + fx * g11[c];
        (1.0 - fy) * a + fy * b
    })
}

/// `fold_into` with the same bits, without its remainder (a library fmod) for the usual case
/// |x − lo| < period, where the remainder of y = x − lo is y, or y + period for y < 0, exactly.
#[inline(always)]
fn fold_fast(x: f64, lo: f64, hi: f64, bc: Boundary) -> f64 {
    let length = hi - lo;
    let periodic = bc == Boundary::Periodic;
    let period = if periodic { length } else { 2.0 * length };
    let y = x - lo;
    if y.is_nan() || y.abs() >= period {
        return fold_into(x, lo, hi, bc);
    }
    let r = if y < 0.0 { y + period } else { y };
    let r = if periodic {
        if r >= length {
            0.0
        } else {
            r
        }
    } else if r > length {
        period - r
    } else {
        r
    };
    (lo + r).clamp(lo, hi)
}

/// The interpolation cell k of the cell coordinate `t` along `axis` and t's offset t − k in it:
/// k = ⌊t⌋ capped to [0, last]. The saturating cast gives that k for every t (truncation is
/// the floor for t ≥ 0; negative t and NaN give 0), without a rounding instruction.
#[inline(always)]
fn cell(axis: &Axis, t: f64) -> (usize, f64) {
    let last = if axis.bc == Boundary::Periodic { axis.n - 1 } else { axis.n - 2 };
    let k = (t as usize).min(last);
    (k, t - k as f64)
}

/// One Euler–Maruyama step of the alive particles (their weights multiplied by the bridge's
/// survival when there are exits and σ > 0); returns how many were removed.
#[allow(clippy::too_many_arguments)]
fn step_all(
    x: &mut [f64],
    alive: &mut [bool],
    weight: &mut [f64],
    g: &[[f64; 2]],
    dt: f64,
    sigma: f64,
    seed: u64,
    step: u64,
    geo: &Geometry,
) -> usize {
    let scale = sigma * dt.sqrt();
    let bridge = geo.weighs(sigma).then(|| 2.0 / (sigma * sigma * dt));
    x.par_chunks_mut(2 * CHUNK)
        .zip(alive.par_chunks_mut(CHUNK))
        .zip(weight.par_chunks_mut(CHUNK))
        .enumerate()
        .map(|(c, ((xs, live), wt))| {
            let start = (c * CHUNK) as u64;
            let len = live.len();
            let (mut nx_, mut ny_) = ([0.0; CHUNK], [0.0; CHUNK]);
            let (nx_, ny_) = (&mut nx_[..len], &mut ny_[..len]);
            // only the alive particles' normals: the Philox blocks of four dead ones are skipped
            fill_normals_where(seed, step, STREAM_EM, start, nx_, |k| live[k]);
            fill_normals_where(seed, step, STREAM_EM_Y, start, ny_, |k| live[k]);
            simd::dispatch(StepChunk { xs, live, wt, noise: [nx_, ny_], g, dt, scale, geo, bridge })
        })
        .sum()
}

/// The arguments of `step_chunk`, for `simd::dispatch`: compiled with AVX2 or AVX-512, the
/// loop does not vectorise (it branches per particle) but gets `floor` as one instruction
/// (baseline x86-64 has no SSE4.1 rounding: a library call) and the wider register file.
struct StepChunk<'a> {
    xs: &'a mut [f64],
    live: &'a mut [bool],
    wt: &'a mut [f64],
    noise: [&'a mut [f64]; 2],
    g: &'a [[f64; 2]],
    dt: f64,
    scale: f64,
    geo: &'a Geometry<'a>,
    /// 2/(σ²δ) when the step weighs the particles by the exits' bridge survival
    bridge: Option<f64>,
}

impl simd::Kernel for StepChunk<'_> {
    type Output = usize;
    #[inline(always)]
    fn run(self) -> usize {
        step_chunk(self.xs, self.live, self.wt, self.noise, self.g, self.dt, self.scale, self.geo, self.bridge)
    }
}

/// The step of one chunk of particles (interleaved `xs`, alive flags `live`, weights `wt`, their
/// x and y normals `noise`); returns how many were removed. With `bridge` = 2/(σ²δ), the weight of
/// a particle that stays is multiplied by `Geometry::bridge_survival` (removed once it is 0).
///
/// In two passes over the alive particles: the proposals p = x + b·dt + σ√dt·z (into `noise`)
/// and the node of x, a loop with few branches whose gradient loads (random: the particles are
/// not sorted) overlap, then walls, exits and obstacles (branchy) from p.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_chunk(
    xs: &mut [f64],
    live: &mut [bool],
    wt: &mut [f64],
    noise: [&mut [f64]; 2],
    g: &[[f64; 2]],
    dt: f64,
    scale: f64,
    geo: &Geometry,
    bridge: Option<f64>,
) -> usize {
    let [nx_, ny_] = noise;
    // the alive particles' indices, gathered without branches: a test per particle in the loop
    // below is mispredicted about as often as particles are dead
    let mut index = [0u32; CHUNK];
    let mut n = 0;
    for (k, &ok) in live.iter().enumerate() {
        index[n] = k as u32;
        n += ok as usize;
    }
    let index = &index[..n];
    let mut node = [0u32; CHUNK];
    for (&k, node) in index.iter().zip(&mut node) {
        let k = k as usize;
        let from = [xs[2 * k], xs[2 * k + 1]];
        let t = both(|a| geo.cells(from[a], a));
        let [ux, uy] = interpolate2(g, geo, t);
        let (bx, by) = (-ux, -uy);
        nx_[k] = from[0] + bx * dt + scale * nx_[k];
        ny_[k] = from[1] + by * dt + scale * ny_[k];
        if geo.has_obstacles {
            *node = geo.node_at(t) as u32;
        }
    }
    let mut removed = 0;
    for (&k, &node) in index.iter().zip(&node) {
        let k = k as usize;
        let (pos, ok) = (&mut xs[2 * k..2 * k + 2], &mut live[k]);
        let from = [pos[0], pos[1]];
        let p = [nx_[k], ny_[k]];
        let q = if geo.has_obstacles && geo.may_meet_obstacle_from(node as usize, from, p) {
            match geo.walk(from, p) {
                Some(q) => q,
                None => {
                    *ok = false;
                    removed += 1;
                    continue;
                }
            }
        } else {
            if geo.has_exits && geo.exits(from, p) {
                *ok = false;
                removed += 1;
                continue;
            }
            geo.fold(p)
        };
        if let Some(inv) = bridge {
            let survive = geo.bridge_survival(from, q, inv);
            if survive < 1.0 {
                wt[k] *= survive;
                if wt[k] == 0.0 {
                    *ok = false;
                    removed += 1;
                    continue;
                }
            }
        }
        pos[0] = q[0];
        pos[1] = q[1];
    }
    removed
}

/// [f(0), f(1)]: `[0, 1].map(f)`, but always inlined (`map` may be left out of line, and then
/// out of the SIMD-dispatched copy of the step).
#[inline(always)]
fn both<T>(f: impl Fn(usize) -> T) -> [T; 2] {
    [f(0), f(1)]
}

/// The node gradients at θ of the way from `now` to `next` ((∂x u, ∂y u) each), interleaved
/// per node into `g`: (1 − θ)·now + θ·next.
fn mix(g: &mut [[f64; 2]], now: [&[f64]; 2], next: [&[f64]; 2], theta: f64) {
    for (k, gk) in g.iter_mut().enumerate() {
        *gk = both(|c| (1.0 - theta) * now[c][k] + theta * next[c][k]);
    }
}

/// `Err` naming x0 unless every particle is inside the domain and not in a blocked cell.
pub fn check_x0(x0: &[f64], geo: &Geometry) -> KernelResult<()> {
    check_finite("x0", x0)?;
    for (p, pos) in x0.chunks_exact(2).enumerate() {
        for (a, name) in ["x", "y"].into_iter().enumerate() {
            if pos[a] < geo.lo[a] || pos[a] > geo.hi[a] {
                return Err(KernelError(format!(
                    "x0 must lie in the domain: x0[{p}] = ({}, {}) has {name} outside [{}, {}]",
                    pos[0], pos[1], geo.lo[a], geo.hi[a]
                )));
            }
        }
        if geo.has_obstacles && geo.blocked([pos[0], pos[1]]) {
            return Err(KernelError(format!(
                "x0 must not lie in an obstacle: x0[{p}] = ({}, {}) is in a blocked cell",
                pos[0], pos[1]
            )));
        }
    }
    Ok(())
}

/// The 2-D particle Fokker–Planck march (see the reference module): from `x0` (interleaved x, y)
/// with u of shape (nt, ny, nx) and node kinds (ny, nx); returns densities, sub-step counts,
/// exited fractions and the final particles.
#[allow(clippy::too_many_arguments)]
pub fn particles_forward_2d(
    x0: &[f64],
    u: &[f64],
    nt: usize,
    ny: usize,
    nx: usize,
    kinds: &[u8],
    p: &Forward2dParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Marching2d> {
    if nt < 2 || ny < 3 || nx < 3 || u.len() != nt * ny * nx {
        return Err(KernelError(format!(
            "u must have shape (nt, ny, nx) with nt >= 2 and ny, nx >= 3, got {} values for ({nt}, {ny}, {nx})",
            u.len()
        )));
    }
    if kinds.len() != ny * nx {
        return Err(KernelError(format!("nodes must have shape (ny, nx) = ({ny}, {nx})")));
    }
    if x0.is_empty() || x0.len() % 2 != 0 {
        return Err(KernelError("x0 must have shape (n, 2) with n >= 1".into()));
    }
    check_positive("T", p.horizon)?;
    check_non_negative("sigma", p.sigma)?;
    for a in 0..2 {
        if !(p.lo[a].is_finite() && p.hi[a].is_finite() && p.lo[a] < p.hi[a]) {
            return Err(KernelError(format!(
                "lo and hi must be finite with lo < hi, got lo={}, hi={}",
                p.lo[a], p.hi[a]
            )));
        }
    }
    if let Bandwidth2::Fixed(hx, hy) = p.bandwidth {
        check_positive("bandwidth[0]", hx)?;
        check_positive("bandwidth[1]", hy)?;
    }
    check_finite("u", u)?;
    let geo = Geometry::new(p.lo, p.hi, nx, ny, p.bc, kinds);
    check_x0(x0, &geo)?;
    let floor = floors(min_substeps, nt - 1)?;
    let n = x0.len() / 2;
    let field = ny * nx;
    let (dx, dy) = (geo.axes[0].d, geo.axes[1].d);
    let dt_out = p.horizon / (nt - 1) as f64;
    let mut out = Marching2d {
        values: vec![f64::NAN; nt * field],
        substeps: vec![0; nt - 1],
        exited: vec![0.0; nt],
        positions: x0.to_vec(),
        alive: vec![true; n],
        weights: vec![1.0; n],
        diverged: None,
    };
    let mut removed = 0usize;
    let mut h_prev: Option<(f64, f64)> = None;
    let weighted = geo.weighs(p.sigma);
    // the KDE of the alive particles (weighted when `weighted`); returns their mass Σw/n
    let mut output = |k: usize, x: &[f64], alive: &[bool], weight: &[f64], removed: usize, values: &mut [f64]| {
        let live: Vec<f64> = x.chunks_exact(2).zip(alive).filter(|(_, &a)| a).flat_map(|(q, _)| [q[0], q[1]]).collect();
        let live_w: Vec<f64> =
            if weighted { weight.iter().zip(alive).filter(|(_, &a)| a).map(|(&w, _)| w).collect() } else { Vec::new() };
        let weights = weighted.then_some(&live_w[..]);
        let h = match p.bandwidth {
            Bandwidth2::Fixed(hx, hy) => (hx, hy),
            Bandwidth2::Rule => match bandwidth_rule_2d(&live, weights).or(h_prev) {
                Some(h) => h,
                None => return Err(KernelError(
                    "bandwidth rule needs at least 2 particles spread in both x and y; pass a float bandwidth instead"
                        .into(),
                )),
            },
        };
        h_prev = Some(h);
        // in particle order, so the same bits for any thread count; without weights the count
        let total = if weighted { live_w.iter().sum::<f64>() } else { (n - removed) as f64 };
        let m = density(&live, weights, &geo.axes[0], &geo.axes[1], h, p.method, kinds, total / n as f64)?;
        values[k * field..(k + 1) * field].copy_from_slice(&m);
        KernelResult::Ok(total)
    };
    let mut x = x0.to_vec();
    let mut alive = vec![true; n];
    let mut weight = vec![1.0; n];
    output(0, &x, &alive, &weight, 0, &mut out.values)?;
    let mut g_now = node_gradients(&u[..field], &geo);
    let mut g = vec![[0.0; 2]; field];
    for j in 0..nt - 1 {
        let g_next = node_gradients(&u[(j + 1) * field..(j + 2) * field], &geo);
        let amax = |a: &[f64], b: &[f64]| a.iter().chain(b).fold(0.0f64, |m, v| m.max(v.abs()));
        let rate = amax(&g_now.0, &g_next.0) / dx + amax(&g_now.1, &g_next.1) / dy;
        let Some((k, dt)) = substeps(dt_out, 1.0 / rate, floor[j]) else {
            out.diverged = Some(format!("FP particles: the drift blew up near t = {}", j as f64 * dt_out));
            return Ok(out);
        };
        for s in 0..k {
            let theta = s as f64 / k as f64;
            mix(&mut g, [&g_now.0, &g_now.1], [&g_next.0, &g_next.1], theta);
            removed += step_all(&mut x, &mut alive, &mut weight, &g, dt, p.sigma, p.seed, noise_step(j, s), &geo);
        }
        out.substeps[j] = k;
        let total = output(j + 1, &x, &alive, &weight, removed, &mut out.values)?;
        out.exited[j + 1] = (n as f64 - total) / n as f64;
        g_now = g_next;
    }
    out.positions = x;
    out.alive = alive;
    out.weights = weight;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bc: [Boundary; 2]) -> Forward2dParams {
        Forward2dParams {
            lo: [0.0, 0.0],
            hi: [1.0, 1.0],
            sigma: 0.3,
            horizon: 0.5,
            seed: 3,
            bc,
            method: Method::Binned,
            bandwidth: Bandwidth2::Rule,
        }
    }

    #[test]
    fn the_bridge_judges_the_walls_with_exits_near_the_end_point() {
        // exits on the right wall's nodes 3..6 and at the bottom-right corner node; y periodic
        // in the second geometry, whose bottom is then no wall
        let (nx, ny) = (11, 11);
        let mut kinds = vec![0u8; nx * ny];
        for j in (3..7).chain([0]) {
            kinds[j * nx + nx - 1] = EXIT;
        }
        let geo = Geometry::new([0.0; 2], [1.0; 2], nx, ny, [Boundary::Reflect; 2], &kinds);
        let walls =
            |g: &Geometry| g.exit_walls[..g.exit_wall_count].iter().map(|w| (w.axis, w.at, w.end)).collect::<Vec<_>>();
        assert_eq!(walls(&geo), [(0, 1.0, 10), (1, 0.0, 0)]);
        let inv = 2.0 / (0.04 * 0.01);
        let (x, q) = ([0.97, 0.45], [0.98, 0.5]);
        assert_eq!(geo.bridge_survival(x, q, inv), 1.0 - (-((1.0f64 - 0.97) * (1.0 - 0.98)) * inv).exp());
        assert_eq!(geo.bridge_survival(x, [0.98, 0.8], inv), 1.0); // nearest node 8 is a wall
        assert_eq!(geo.bridge_survival([0.5, 0.45], [0.6, 0.5], inv), 1.0); // exponent 8000: cut off
        let corner = geo.bridge_survival([0.97, 0.02], [0.99, 0.01], inv);
        let sides = (1.0 - (-(0.03f64 * 0.01) * inv).exp()) * (1.0 - (-(0.02f64 * 0.01) * inv).exp()); // rounding apart
        assert!((corner - sides).abs() < 1e-15, "{corner} {sides}");
        let tube = Geometry::new([0.0; 2], [1.0; 2], nx, ny, [Boundary::Reflect, Boundary::Periodic], &kinds);
        assert_eq!(walls(&tube), [(0, 1.0, 10)]);
    }

    #[test]
    fn obstacles_hold_and_exits_account_for_the_mass() {
        let (nx, ny, nt) = (21, 21, 4);
        let mut kinds = vec![0u8; nx * ny];
        for j in 8..13 {
            for i in 8..13 {
                kinds[j * nx + i] = OBSTACLE;
            }
            kinds[j * nx + nx - 1] = EXIT;
        }
        let u: Vec<f64> = (0..nt * nx * ny)
            .map(|k| {
                let (i, j) = ((k % nx) as f64 / 20.0, ((k / nx) % ny) as f64 / 20.0);
                3.0 * ((i - 1.0).powi(2) + (j - 0.5).powi(2))
            })
            .collect();
        let mut x0 = vec![0.0; 4000];
        crate::rng::fill_normals(1, 0, 7, 0, &mut x0);
        x0.iter_mut().for_each(|v| *v = fold_into(0.2 + 0.05 * *v, 0.0, 1.0, Boundary::Reflect));
        let p = params([Boundary::Reflect, Boundary::Reflect]);
        let out = particles_forward_2d(&x0, &u, nt, ny, nx, &kinds, &p, None).unwrap();
        let geo = Geometry::new(p.lo, p.hi, nx, ny, p.bc, &kinds);
        assert!(out.positions.chunks_exact(2).all(|q| !geo.blocked([q[0], q[1]])));
        let w = crate::kde2d::weights_2d(&geo.axes[0], &geo.axes[1], &kinds);
        for k in 0..nt {
            let mass: f64 = w.iter().zip(&out.values[k * nx * ny..(k + 1) * nx * ny]).map(|(a, b)| a * b).sum();
            assert!((mass + out.exited[k] - 1.0).abs() < 1e-13);
        }
        assert!(out.exited[nt - 1] > 0.0);
        assert!(out.exited.windows(2).all(|e| e[1] >= e[0]));
    }

    #[test]
    fn the_walk_reflects_about_the_first_obstacle_face_and_gives_up_after_max_bounces() {
        // 21 × 17 nodes on [0, 1] × [0, 0.8] (dx = dy = 0.05), a pillar on nodes i = 9..11, j = 6..9
        let (nx, ny) = (21, 17);
        let mut kinds = vec![0u8; nx * ny];
        for j in 6..10 {
            for i in 9..12 {
                kinds[j * nx + i] = OBSTACLE;
            }
        }
        let bc = [Boundary::Reflect, Boundary::Reflect];
        let geo = Geometry::new([0.0, 0.0], [1.0, 0.8], nx, ny, bc, &kinds);
        // enters cell (9, 6) through its bottom face y = 0.275 and would end in cell (10, 6): the
        // end-cell rule reflected about x = 0.475 into the pillar and stayed; the walk mirrors y
        let q = geo.walk([0.455, 0.265], [0.479, 0.289]).unwrap();
        assert!((q[0] - 0.479).abs() < 1e-15 && (q[1] - 0.261).abs() < 1e-15, "{q:?}");
        // a corridor one cell wide (node column 5, cells [0.225, 0.275]) between obstacle columns
        let mut kinds = vec![0u8; nx * ny];
        for j in 0..ny {
            kinds[j * nx + 4] = OBSTACLE;
            kinds[j * nx + 6] = OBSTACLE;
        }
        let geo = Geometry::new([0.0, 0.0], [1.0, 0.8], nx, ny, bc, &kinds);
        // 0.31 along x from 0.25: faces at path lengths 0.025, 0.075, ..., 0.275 (6 reflections)
        let q = geo.walk([0.25, 0.4], [0.56, 0.4]).unwrap();
        assert!((q[0] - 0.26).abs() < 1e-13 && q[1] == 0.4, "{q:?}");
        // 0.5: ten faces, more than MAX_BOUNCES: the particle stays
        assert_eq!(geo.walk([0.25, 0.4], [0.75, 0.4]), Some([0.25, 0.4]));
    }

    #[test]
    fn the_clearance_shortcut_is_the_walk() {
        // where may_meet_obstacle is false, exits + fold (the shortcut) gives the walk's result
        let (nx, ny) = (21, 17);
        let mut kinds = vec![0u8; nx * ny];
        for j in 6..10 {
            for i in 9..12 {
                kinds[j * nx + i] = OBSTACLE;
            }
        }
        kinds[nx * 3 + 1] = OBSTACLE;
        for j in 5..11 {
            kinds[j * nx + nx - 1] = EXIT;
        }
        let mut noise = vec![0.0; 4 * 20000];
        crate::rng::fill_normals(5, 0, 9, 0, &mut noise);
        for bc in [[Boundary::Reflect, Boundary::Reflect], [Boundary::Reflect, Boundary::Periodic]] {
            let geo = Geometry::new([0.0, 0.0], [1.0, 0.8], nx, ny, bc, &kinds);
            let mut short = 0;
            for z in noise.chunks_exact(4) {
                let x = [fold_into(0.5 + 0.3 * z[0], 0.0, 1.0, bc[0]), fold_into(0.4 + 0.3 * z[1], 0.0, 0.8, bc[1])];
                if geo.blocked(x) {
                    continue;
                }
                let p = [x[0] + 0.15 * z[2], x[1] + 0.15 * z[3]];
                if geo.may_meet_obstacle(x, p) {
                    continue;
                }
                short += 1;
                let fast = if geo.exits(x, p) {
                    None
                } else {
                    Some([0, 1].map(|a| fold_fast(p[a], geo.lo[a], geo.hi[a], bc[a])))
                };
                assert_eq!(geo.walk(x, p), fast, "{x:?} -> {p:?}");
            }
            assert!(short > 5000, "{short}");
        }
    }

    #[test]
    fn fold_fast_is_fold_into() {
        for bc in [Boundary::Reflect, Boundary::Periodic] {
            for &(lo, hi) in &[(0.0, 1.0), (-0.3, 0.7), (1.1, 2.9)] {
                for k in 0..4001 {
                    let x = lo - 3.0 * (hi - lo) + 7.0 * (hi - lo) * k as f64 / 4000.0;
                    let x = if k % 7 == 0 { x + 1e-17 } else { x };
                    assert_eq!(fold_fast(x, lo, hi, bc).to_bits(), fold_into(x, lo, hi, bc).to_bits(), "{bc:?} {x}");
                }
                for x in [lo, hi, lo - 1e-300, hi + 1e-16, lo - (hi - lo), hi + (hi - lo), lo - 2.0 * (hi - lo)] {
                    assert_eq!(fold_fast(x, lo, hi, bc).to_bits(), fold_into(x, lo, hi, bc).to_bits(), "{bc:?} {x}");
                }
            }
        }
    }

    #[test]
    fn x0_in_an_obstacle_is_an_error() {
        let kinds = [0, 0, 0, 0, 1, 0, 0, 0, 0];
        let u = vec![0.0; 18];
        let p = params([Boundary::Reflect, Boundary::Reflect]);
        let e = particles_forward_2d(&[0.5, 0.5, 0.1, 0.1], &u, 2, 3, 3, &kinds, &p, None).unwrap_err();
        assert!(e.0.starts_with("x0 must not lie in an obstacle: x0[0]"), "{}", e.0);
    }
}

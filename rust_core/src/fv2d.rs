//! The 2-D Fokker–Planck equation by finite volumes on the node-centred cells of a rectangle
//! with obstacles and exits: per sub-step the Strang composition 𝒟ʸ_{δ/2} 𝒟ˣ_{δ/2} 𝒜_δ 𝒟ˣ_{δ/2}
//! 𝒟ʸ_{δ/2} of unsplit SSP-RK2 van Leer MUSCL advection and SDIRK2 implicit diffusion on the row
//! and column segments (tridiagonal solves, Dirichlet m = 0 next to exits), the first-order IMEX
//! step as the positive fallback, and `exited` accumulated from the fluxes into exit cells.
//!
//! The maths: see mfg_ensemble/kernels/reference/fv2d.py (the twin; the same operations in the
//! same order per value). Rayon over lines (diffusion) and rows (advection); every line and row
//! is computed by the same operations whatever the thread count, and the per-line exit fluxes
//! are added in line order, so the result is bit-identical for any number of threads.

use rayon::prelude::*;

use crate::boundary::{Boundary, REFLECT_OR_PERIODIC};
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::fv::cell_widths;
use crate::grid2d::{check_nodes, EXIT, FREE, OBSTACLE};
use crate::substeps::{floors, substeps, Marching};

#[derive(Debug, Clone, Copy)]
pub struct Fv2dParams {
    pub dx: f64,
    pub dy: f64,
    pub sigma: f64,
    pub horizon: f64,
    pub bc_x: Boundary,
    pub bc_y: Boundary,
    pub cfl: f64,
}

/// A 2-D march: the densities (nt, ny, nx) and sub-step counts of `march`, and the mass that
/// has left by the exits by each output time (nt values, `exited[0] = 0`).
#[derive(Debug, Clone)]
pub struct Fv2dOut {
    pub march: Marching,
    pub exited: Vec<f64>,
}

/// γ = 1 − 1/√2 of the SDIRK2 diffusion stage.
fn gamma() -> f64 {
    1.0 - 0.5_f64.sqrt()
}

/// A stretch of FREE nodes of a line (indices consecutive modulo the line length if periodic).
#[derive(Debug, Clone)]
struct Segment {
    idx: Vec<usize>,
    cyclic: bool,
    exit_lo: bool,
    exit_hi: bool,
    /// Faces of each node that carry diffusive flux (to FREE or EXIT neighbours).
    faces: Vec<f64>,
    /// The first index if the indices are `start, start + 1, …` (no wrap).
    start: Option<usize>,
}

impl Segment {
    fn new(idx: Vec<usize>, cyclic: bool, exit_lo: bool, exit_hi: bool) -> Segment {
        let n = idx.len();
        let mut faces = vec![2.0; n];
        if !cyclic {
            let inner = if n > 1 { 1.0 } else { 0.0 };
            faces[0] = inner + if exit_lo { 1.0 } else { 0.0 };
            faces[n - 1] = inner + if exit_hi { 1.0 } else { 0.0 };
        }
        let start = idx.windows(2).all(|p| p[1] == p[0] + 1).then(|| idx[0]);
        Segment { idx, cyclic, exit_lo, exit_hi, faces, start }
    }

    fn has_exit(&self) -> bool {
        self.exit_lo || self.exit_hi
    }

    /// Σ of y at the ends next to an exit.
    fn exit_values(&self, y: &[f64]) -> f64 {
        let mut out = 0.0;
        if self.exit_lo {
            out += y[0];
        }
        if self.exit_hi {
            out += y[y.len() - 1];
        }
        out
    }

    /// (y_{p+1} − y_p) − (y_p − y_{p−1}), −y_p through an exit end, wrapped if cyclic.
    fn laplacian(&self, y: &[f64], div: &mut [f64]) {
        let n = y.len();
        if self.cyclic {
            for p in 0..n {
                let flux = y[(p + 1) % n] - y[p];
                let before = y[p] - y[(p + n - 1) % n];
                div[p] = flux - before;
            }
            return;
        }
        for p in 0..n {
            let after = if p + 1 < n { y[p + 1] - y[p] } else { 0.0 };
            let before = if p > 0 { y[p] - y[p - 1] } else { 0.0 };
            div[p] = after - before;
        }
        if self.exit_lo {
            div[0] -= y[0];
        }
        if self.exit_hi {
            div[n - 1] -= y[n - 1];
        }
    }
}

/// The segments of one line of node kinds.
fn line_segments(kinds: &[u8], periodic: bool) -> Vec<Segment> {
    let n = kinds.len();
    let free = |i: usize| kinds[i] == FREE;
    if periodic && (0..n).all(free) {
        return vec![Segment::new((0..n).collect(), true, false, false)];
    }
    let order: Vec<usize> = if periodic {
        let start = (0..n).position(|i| !free(i)).unwrap_or(0) + 1;
        (0..n).map(|p| (start + p) % n).collect()
    } else {
        (0..n).collect()
    };
    let is_exit = |p: Option<usize>| p.is_some_and(|i| kinds[i] == EXIT);
    let mut segments = Vec::new();
    let mut first = 0; // position in `order` where the current run began
    let mut run: Vec<usize> = Vec::new();
    for p in 0..=n {
        if p < n && free(order[p]) {
            if run.is_empty() {
                first = p;
            }
            run.push(order[p]);
            continue;
        }
        if !run.is_empty() {
            let last = first + run.len() - 1;
            let before = if first > 0 { Some(order[first - 1]) } else { periodic.then(|| order[n - 1]) };
            let after = if last + 1 < n { Some(order[last + 1]) } else { periodic.then(|| order[0]) };
            segments.push(Segment::new(std::mem::take(&mut run), false, is_exit(before), is_exit(after)));
        }
    }
    segments
}

/// The factored M = W − cL of one segment: Thomas' algorithm, Sherman–Morrison if cyclic.
struct SegmentSolver {
    c: f64,
    inv: Vec<f64>,
    g: Vec<f64>,
    cyclic: Option<(f64, Vec<f64>, f64)>,
}

impl SegmentSolver {
    fn new(widths: &[f64], seg: &Segment, c: f64) -> SegmentSolver {
        let n = seg.idx.len();
        let mut d: Vec<f64> = seg.idx.iter().zip(&seg.faces).map(|(&i, &f)| widths[i] + f * c).collect();
        let (mut ratio, mut b0) = (0.0, 0.0);
        if seg.cyclic {
            b0 = d[0];
            ratio = c / b0;
            d[0] = b0 + b0;
            d[n - 1] += c * ratio;
        }
        let mut inv = vec![0.0; n];
        let mut g = vec![0.0; n];
        inv[0] = 1.0 / d[0];
        g[0] = c * inv[0];
        for i in 1..n {
            inv[i] = 1.0 / (d[i] - c * g[i - 1]);
            g[i] = c * inv[i];
        }
        let mut t = SegmentSolver { c, inv, g, cyclic: None };
        if seg.cyclic {
            let mut z = vec![0.0; n];
            z[0] = -b0;
            z[n - 1] = -c;
            t.thomas(&mut z);
            let denom = 1.0 + (z[0] + ratio * z[n - 1]);
            t.cyclic = Some((ratio, z, denom));
        }
        t
    }

    fn thomas(&self, x: &mut [f64]) {
        let n = x.len();
        x[0] *= self.inv[0];
        for i in 1..n {
            x[i] = (x[i] + self.c * x[i - 1]) * self.inv[i];
        }
        for i in (0..n - 1).rev() {
            x[i] += self.g[i] * x[i + 1];
        }
    }

    fn solve(&self, x: &mut [f64]) {
        self.thomas(x);
        if let Some((ratio, z, denom)) = &self.cyclic {
            let n = x.len();
            let q = (x[0] + ratio * x[n - 1]) / denom;
            for (xi, zi) in x.iter_mut().zip(z) {
                *xi -= q * zi;
            }
        }
    }
}

/// The segments of every line along one axis, the widths along the lines, the face lengths
/// across them (one per line) and D/spacing.
struct Lines {
    n: usize,
    segments: Vec<Vec<Segment>>,
    widths: Vec<f64>,
    across: Vec<f64>,
    ratio: f64,
}

type Solvers = Vec<Vec<SegmentSolver>>;

/// Work arrays of one line.
#[derive(Default)]
struct LineWork {
    wm: Vec<f64>,
    y1: Vec<f64>,
    y2: Vec<f64>,
    div: Vec<f64>,
}

impl LineWork {
    /// The four arrays, `n` values each.
    fn get(&mut self, n: usize) -> (&mut [f64], &mut [f64], &mut [f64], &mut [f64]) {
        for v in [&mut self.wm, &mut self.y1, &mut self.y2, &mut self.div] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
        (&mut self.wm[..n], &mut self.y1[..n], &mut self.y2[..n], &mut self.div[..n])
    }
}

impl Lines {
    /// `kinds`: one line per row of `n` values.
    fn new(kinds: &[u8], n: usize, widths: Vec<f64>, across: Vec<f64>, periodic: bool, ratio: f64) -> Lines {
        let segments = kinds.chunks(n).map(|line| line_segments(line, periodic)).collect();
        Lines { n, segments, widths, across, ratio }
    }

    fn solvers(&self, c: f64) -> Solvers {
        self.segments
            .par_iter()
            .map(|segs| segs.iter().map(|s| SegmentSolver::new(&self.widths, s, c)).collect())
            .collect()
    }

    /// 𝒟_τ on every line of `m` (lines of `n` values), in place; the mass that left by exits.
    fn sdirk2(&self, m: &mut [f64], tau: f64, solvers: &Solvers) -> f64 {
        let c = gamma() * tau * self.ratio;
        let c2 = (1.0 - gamma()) * tau * self.ratio;
        self.sweep(m, solvers, |seg, solver, line, w| {
            let n = seg.idx.len();
            let (wm, y1, y2, div) = w.get(n);
            gather(seg, &self.widths, line, wm);
            y1.copy_from_slice(wm);
            solver.solve(y1);
            seg.laplacian(y1, div);
            for p in 0..n {
                y2[p] = wm[p] + c2 * div[p];
            }
            solver.solve(y2);
            scatter(seg, y2, line);
            if seg.has_exit() {
                c2 * seg.exit_values(y1) + c * seg.exit_values(y2)
            } else {
                0.0
            }
        })
    }

    /// (W − τL) y = W m on every line, in place; the mass that left by exits.
    fn backward_euler(&self, m: &mut [f64], tau: f64, solvers: &Solvers) -> f64 {
        let c = tau * self.ratio;
        self.sweep(m, solvers, |seg, solver, line, w| {
            let (_, y, _, _) = w.get(seg.idx.len());
            gather(seg, &self.widths, line, y);
            solver.solve(y);
            scatter(seg, y, line);
            if seg.has_exit() {
                c * seg.exit_values(y)
            } else {
                0.0
            }
        })
    }

    /// `step` on every segment of every line (Rayon over lines); Σ over lines, in line order,
    /// of the face length times the exit flux `step` returns.
    fn sweep<F>(&self, m: &mut [f64], solvers: &Solvers, step: F) -> f64
    where
        F: Fn(&Segment, &SegmentSolver, &mut [f64], &mut LineWork) -> f64 + Sync,
    {
        let lost: Vec<f64> = m
            .par_chunks_mut(self.n)
            .zip(self.segments.par_iter().zip(solvers.par_iter()))
            .enumerate()
            .map_init(LineWork::default, |w, (q, (line, (segs, solvers)))| {
                let mut exited = 0.0;
                for (seg, solver) in segs.iter().zip(solvers) {
                    let flux = step(seg, solver, line, w);
                    if seg.has_exit() {
                        exited += self.across[q] * flux;
                    }
                }
                exited
            })
            .collect();
        lost.iter().sum()
    }
}

/// `to[p]` = w·m at the segment's nodes.
fn gather(seg: &Segment, widths: &[f64], line: &[f64], to: &mut [f64]) {
    match seg.start {
        Some(s) => {
            let n = to.len();
            for ((t, w), v) in to.iter_mut().zip(&widths[s..s + n]).zip(&line[s..s + n]) {
                *t = w * v;
            }
        }
        None => {
            for (t, &i) in to.iter_mut().zip(&seg.idx) {
                *t = widths[i] * line[i];
            }
        }
    }
}

/// The segment's nodes of `line` ← `from`.
fn scatter(seg: &Segment, from: &[f64], line: &mut [f64]) {
    match seg.start {
        Some(s) => line[s..s + from.len()].copy_from_slice(from),
        None => {
            for (&v, &i) in from.iter().zip(&seg.idx) {
                line[i] = v;
            }
        }
    }
}

/// `dst` (cols × rows) ← the transpose of `src` (rows × cols).
fn transpose(src: &[f64], rows: usize, cols: usize, dst: &mut [f64]) {
    dst.par_chunks_mut(rows).enumerate().for_each(|(i, out)| {
        for (j, o) in out.iter_mut().enumerate() {
            *o = src[j * cols + i];
        }
    });
}

#[inline(always)]
fn van_leer(minus: f64, plus: f64, ok: bool) -> f64 {
    let prod = minus * plus;
    if ok && prod > 0.0 {
        2.0 * prod / (minus + plus)
    } else {
        0.0
    }
}

/// The geometry of a 2-D march.
struct Grid {
    nx: usize,
    ny: usize,
    px: bool,
    py: bool,
    nfx: usize,
    nfy: usize,
    dx: f64,
    dy: f64,
    wx: Vec<f64>,
    wy: Vec<f64>,
    free: Vec<bool>,
    open_x: Vec<bool>,
    open_y: Vec<bool>,
    /// +1 where the face's high end is an exit, −1 where its low end is, 0 elsewhere.
    exit_x: Vec<f64>,
    exit_y: Vec<f64>,
    /// Whether a row of x-faces / y-faces has an exit face (its exit flux is summed).
    exit_rows_x: Vec<bool>,
    exit_rows_y: Vec<bool>,
    slope_x: Vec<bool>,
    slope_y: Vec<bool>,
    diffusion: f64,
    rows: Lines,
    cols: Lines,
}

fn face_kind(lo: u8, hi: u8) -> (bool, f64) {
    let open = lo != OBSTACLE && hi != OBSTACLE && (lo == FREE || hi == FREE);
    let exit = if open && hi == EXIT {
        1.0
    } else if open && lo == EXIT {
        -1.0
    } else {
        0.0
    };
    (open, exit)
}

impl Grid {
    fn new(kinds: &[u8], nx: usize, ny: usize, p: &Fv2dParams, diffusion: f64) -> Grid {
        let (px, py) = (p.bc_x == Boundary::Periodic, p.bc_y == Boundary::Periodic);
        let nfx = if px { nx } else { nx - 1 };
        let nfy = if py { ny } else { ny - 1 };
        let wx = cell_widths(nx, p.dx, p.bc_x);
        let wy = cell_widths(ny, p.dy, p.bc_y);
        let free: Vec<bool> = kinds.iter().map(|&k| k == FREE).collect();
        let (mut open_x, mut exit_x) = (vec![false; ny * nfx], vec![0.0; ny * nfx]);
        for j in 0..ny {
            for f in 0..nfx {
                (open_x[j * nfx + f], exit_x[j * nfx + f]) = face_kind(kinds[j * nx + f], kinds[j * nx + (f + 1) % nx]);
            }
        }
        let (mut open_y, mut exit_y) = (vec![false; nfy * nx], vec![0.0; nfy * nx]);
        for f in 0..nfy {
            for i in 0..nx {
                (open_y[f * nx + i], exit_y[f * nx + i]) = face_kind(kinds[f * nx + i], kinds[((f + 1) % ny) * nx + i]);
            }
        }
        let mut slope_x = vec![false; ny * nx];
        let mut slope_y = vec![false; ny * nx];
        for j in 0..ny {
            for i in 0..nx {
                let k = j * nx + i;
                let inside_x = px || (i > 0 && i < nx - 1);
                let inside_y = py || (j > 0 && j < ny - 1);
                slope_x[k] = free[k] && inside_x && free[j * nx + (i + nx - 1) % nx] && free[j * nx + (i + 1) % nx];
                slope_y[k] = free[k] && inside_y && free[((j + ny - 1) % ny) * nx + i] && free[((j + 1) % ny) * nx + i];
            }
        }
        let mut transposed = vec![0; nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                transposed[i * ny + j] = kinds[j * nx + i];
            }
        }
        let rows = Lines::new(kinds, nx, wx.clone(), wy.clone(), px, diffusion / p.dx);
        let cols = Lines::new(&transposed, ny, wy.clone(), wx.clone(), py, diffusion / p.dy);
        Grid {
            nx,
            ny,
            px,
            py,
            nfx,
            nfy,
            dx: p.dx,
            dy: p.dy,
            wx,
            wy,
            free,
            open_x,
            open_y,
            exit_rows_x: exit_x.chunks(nfx).map(|r| r.iter().any(|&e| e != 0.0)).collect(),
            exit_rows_y: exit_y.chunks(nx).map(|r| r.iter().any(|&e| e != 0.0)).collect(),
            exit_x,
            exit_y,
            slope_x,
            slope_y,
            diffusion,
            rows,
            cols,
        }
    }

    /// Face drifts (α^x (ny, nfx), α^y (nfy, nx)) of one output row of u.
    fn face_drift(&self, u: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (nx, ny, nfx, nfy) = (self.nx, self.ny, self.nfx, self.nfy);
        let mut ax = vec![0.0; ny * nfx];
        for j in 0..ny {
            for f in 0..nfx {
                ax[j * nfx + f] = -(u[j * nx + (f + 1) % nx] - u[j * nx + f]) / self.dx;
            }
        }
        let mut ay = vec![0.0; nfy * nx];
        for f in 0..nfy {
            for i in 0..nx {
                ay[f * nx + i] = -(u[((f + 1) % ny) * nx + i] - u[f * nx + i]) / self.dy;
            }
        }
        (ax, ay)
    }

    /// max |α| over the faces that carry flux.
    fn max_drift(a: &[f64], open: &[bool]) -> f64 {
        a.iter().zip(open).filter(|(_, &o)| o).fold(0.0_f64, |acc, (v, _)| acc.max(v.abs()))
    }

    /// `to` ← m + δR(m) (0 off the FREE nodes); returns the rate of flux into the exit cells.
    #[allow(clippy::too_many_arguments)]
    fn euler(&self, m: &[f64], ax: &[f64], ay: &[f64], dt: f64, limited: bool, w: &mut AdvWork, to: &mut [f64]) -> f64 {
        let (nx, ny, nfx, nfy) = (self.nx, self.ny, self.nfx, self.nfy);
        // reconstructions: lx = m + s^x/2, rx = m − s^x/2, likewise y
        w.lx.par_chunks_mut(nx)
            .zip(w.rx.par_chunks_mut(nx))
            .zip(w.ly.par_chunks_mut(nx).zip(w.ry.par_chunks_mut(nx)))
            .enumerate()
            .for_each(|(j, ((lx, rx), (ly, ry)))| {
                let row = &m[j * nx..(j + 1) * nx];
                if !limited {
                    for out in [lx, rx, ly, ry] {
                        out.copy_from_slice(row);
                    }
                    return;
                }
                let below = &m[(if j == 0 { ny - 1 } else { j - 1 }) * nx..][..nx];
                let above = &m[(if j + 1 == ny { 0 } else { j + 1 }) * nx..][..nx];
                let (ok_x, ok_y) = (&self.slope_x[j * nx..(j + 1) * nx], &self.slope_y[j * nx..(j + 1) * nx]);
                for i in 0..nx {
                    let left = row[if i == 0 { nx - 1 } else { i - 1 }];
                    let right = row[if i + 1 == nx { 0 } else { i + 1 }];
                    let v = row[i];
                    let sx = van_leer(v - left, right - v, ok_x[i]);
                    let sy = van_leer(v - below[i], above[i] - v, ok_y[i]);
                    lx[i] = v + 0.5 * sx;
                    rx[i] = v - 0.5 * sx;
                    ly[i] = v + 0.5 * sy;
                    ry[i] = v - 0.5 * sy;
                }
            });
        // face fluxes: the x-faces of row j and the y-faces between rows j and j + 1
        let (lx, rx, ly, ry) = (&w.lx, &w.rx, &w.ly, &w.ry);
        w.gx.par_chunks_mut(nfx).zip(w.gy.par_chunks_mut(nx)).enumerate().for_each(|(j, (g, h))| {
            let (l, r) = (&lx[j * nx..(j + 1) * nx], &rx[j * nx..(j + 1) * nx]);
            let (a, open) = (&ax[j * nfx..(j + 1) * nfx], &self.open_x[j * nfx..(j + 1) * nfx]);
            for f in 0..nfx {
                let right = r[if f + 1 == nx { 0 } else { f + 1 }];
                let v = a[f].max(0.0) * l[f] + a[f].min(0.0) * right;
                g[f] = if open[f] { v } else { 0.0 };
            }
            if j < nfy {
                let up = (if j + 1 == ny { 0 } else { j + 1 }) * nx;
                let (l, r) = (&ly[j * nx..(j + 1) * nx], &ry[up..up + nx]);
                let (a, open) = (&ay[j * nx..(j + 1) * nx], &self.open_y[j * nx..(j + 1) * nx]);
                for i in 0..nx {
                    let v = a[i].max(0.0) * l[i] + a[i].min(0.0) * r[i];
                    h[i] = if open[i] { v } else { 0.0 };
                }
            }
        });
        for (r, wx) in w.rate_x.iter_mut().zip(&self.wx) {
            *r = dt / wx;
        }
        for (r, wy) in w.rate_y.iter_mut().zip(&self.wy) {
            *r = dt / wy;
        }
        let (gx, gy, rate_x, rate_y) = (&w.gx, &w.gy, &w.rate_x, &w.rate_y);
        let rates: Vec<f64> = to
            .par_chunks_mut(nx)
            .enumerate()
            .map(|(j, out)| {
                let grow = &gx[j * nfx..(j + 1) * nfx];
                let after_y = (j < nfy).then(|| &gy[j * nx..(j + 1) * nx]);
                let before_y = if j > 0 {
                    Some(&gy[(j - 1) * nx..j * nx])
                } else if self.py {
                    Some(&gy[(ny - 1) * nx..ny * nx])
                } else {
                    None
                };
                let (row, free) = (&m[j * nx..(j + 1) * nx], &self.free[j * nx..(j + 1) * nx]);
                for i in 0..nx {
                    if !free[i] {
                        out[i] = 0.0;
                        continue;
                    }
                    let divx = if self.px {
                        grow[i] - grow[if i == 0 { nx - 1 } else { i - 1 }]
                    } else {
                        let after = if i < nfx { grow[i] } else { 0.0 };
                        let before = if i > 0 { grow[i - 1] } else { 0.0 };
                        after - before
                    };
                    let after = after_y.map_or(0.0, |g| g[i]);
                    let before = before_y.map_or(0.0, |g| g[i]);
                    let divy = after - before;
                    out[i] = row[i] - (rate_x[i] * divx + rate_y[j] * divy);
                }
                // the exit fluxes of the x-faces of row j and of the y-faces of face row j
                let mut flow_x = 0.0;
                if self.exit_rows_x[j] {
                    for (e, g) in self.exit_x[j * nfx..(j + 1) * nfx].iter().zip(grow) {
                        flow_x += self.wy[j] * (e * g);
                    }
                }
                let mut flow_y = 0.0;
                if j < nfy && self.exit_rows_y[j] {
                    for i in 0..nx {
                        flow_y += self.wx[i] * (self.exit_y[j * nx + i] * gy[j * nx + i]);
                    }
                }
                flow_x + flow_y
            })
            .collect();
        rates.iter().sum()
    }

    /// 𝒟ʸ_τ (by the transposed field) or 𝒟ˣ_τ on m in place; the mass that left.
    fn diffuse_y(&self, m: &mut [f64], tau: f64, solvers: &Solvers, buf: &mut [f64], euler: bool) -> f64 {
        transpose(m, self.ny, self.nx, buf);
        let lost =
            if euler { self.cols.backward_euler(buf, tau, solvers) } else { self.cols.sdirk2(buf, tau, solvers) };
        transpose(buf, self.nx, self.ny, m);
        lost
    }
}

/// Work arrays of the advection.
struct AdvWork {
    lx: Vec<f64>,
    rx: Vec<f64>,
    ly: Vec<f64>,
    ry: Vec<f64>,
    gx: Vec<f64>,
    gy: Vec<f64>,
    /// δ/wx, δ/wy.
    rate_x: Vec<f64>,
    rate_y: Vec<f64>,
}

fn validate(
    u: &[f64],
    m0: &[f64],
    nodes: Option<&[u8]>,
    nt: usize,
    ny: usize,
    nx: usize,
    p: &Fv2dParams,
) -> KernelResult<()> {
    if nx < 3 || ny < 3 {
        return Err(KernelError(format!(
            "m0 needs at least 3 x 3 nodes for the finite-volume scheme, got ({ny}, {nx})"
        )));
    }
    if m0.len() != ny * nx {
        return Err(KernelError(format!("m0 must have ny * nx = {} values, got {}", ny * nx, m0.len())));
    }
    if nt < 2 {
        return Err(KernelError(format!("u needs at least 2 output times, got {nt}")));
    }
    if u.len() != nt * ny * nx {
        return Err(KernelError(format!(
            "u must have shape (nt, ny, nx) = ({nt}, {ny}, {nx}), got {} values",
            u.len()
        )));
    }
    check_positive("dx", p.dx)?;
    check_positive("dy", p.dy)?;
    check_non_negative("sigma", p.sigma)?;
    check_positive("T", p.horizon)?;
    if !(p.cfl > 0.0 && p.cfl <= 1.0) {
        return Err(KernelError(format!("cfl must be in (0, 1], got {}", p.cfl)));
    }
    p.bc_x.check(&REFLECT_OR_PERIODIC)?;
    p.bc_y.check(&REFLECT_OR_PERIODIC)?;
    if let Some(kinds) = nodes {
        check_nodes(kinds, ny, nx, p.bc_x, p.bc_y)?;
    }
    check_finite("u", u)?;
    check_finite("m0", m0)?;
    match m0.iter().position(|&v| v < 0.0) {
        Some(k) => Err(KernelError(format!("m0 must be >= 0, m0[{}, {}] = {}", k / nx, k % nx, m0[k]))),
        None => Ok(()),
    }
}

/// m at the nt output times, row-major (nt, ny, nx), moved by the drift −∇u of `u` (nt, ny, nx)
/// in the room of `nodes` (ny × nx kinds; `None`: all FREE), and the exited mass per output time.
#[allow(clippy::too_many_arguments)]
pub fn fv_forward_2d(
    u: &[f64],
    m0: &[f64],
    nodes: Option<&[u8]>,
    nt: usize,
    ny: usize,
    nx: usize,
    p: &Fv2dParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Fv2dOut> {
    validate(u, m0, nodes, nt, ny, nx, p)?;
    let floor = floors(min_substeps, nt - 1)?;
    let all_free = vec![FREE; ny * nx];
    let kinds = nodes.unwrap_or(&all_free);
    let size = ny * nx;
    let diffusion = 0.5 * p.sigma * p.sigma;
    let grid = Grid::new(kinds, nx, ny, p, diffusion);
    let dt_out = p.horizon / (nt - 1) as f64;
    let mut out = Fv2dOut { march: Marching::new(nt, size), exited: vec![0.0; nt] };
    let mut m: Vec<f64> = m0.iter().zip(&grid.free).map(|(&v, &f)| if f { v } else { 0.0 }).collect();
    out.march.row_mut(0, size).copy_from_slice(&m);
    let mut now = grid.face_drift(&u[..size]);
    let mut gone = 0.0;
    let mut work = Work::new(&grid);
    for j in 0..nt - 1 {
        let next = grid.face_drift(&u[(j + 1) * size..(j + 2) * size]);
        let amax_x = Grid::max_drift(&now.0, &grid.open_x).max(Grid::max_drift(&next.0, &grid.open_x));
        let amax_y = Grid::max_drift(&now.1, &grid.open_y).max(Grid::max_drift(&next.1, &grid.open_y));
        let limit = p.cfl / (2.0 * (amax_x / p.dx + amax_y / p.dy));
        let Some((k, dt)) = substeps(dt_out, limit, floor[j]) else {
            out.march.diverged = Some(format!("FP: the CFL sub-step collapsed near t = {}", j as f64 * dt_out));
            return Ok(out);
        };
        gone += interval(&grid, &mut m, &now, &next, k, dt, &mut work);
        out.march.substeps[j] = k;
        if let Some(q) = m.iter().position(|v| !v.is_finite()) {
            out.march.diverged =
                Some(format!("FP: m is not finite at t = {}, node ({}, {})", (j + 1) as f64 * dt_out, q / nx, q % nx));
            return Ok(out);
        }
        out.march.row_mut(j + 1, size).copy_from_slice(&m);
        out.exited[j + 1] = gone;
        now = next;
    }
    Ok(out)
}

/// Work arrays of a march.
struct Work {
    adv: AdvWork,
    ax0: Vec<f64>,
    ay0: Vec<f64>,
    ax1: Vec<f64>,
    ay1: Vec<f64>,
    y: Vec<f64>,
    y1: Vec<f64>,
    y2: Vec<f64>,
    buf: Vec<f64>,
}

impl Work {
    fn new(grid: &Grid) -> Work {
        let size = grid.nx * grid.ny;
        let (fx, fy) = (grid.ny * grid.nfx, grid.nfy * grid.nx);
        Work {
            adv: AdvWork {
                lx: vec![0.0; size],
                rx: vec![0.0; size],
                ly: vec![0.0; size],
                ry: vec![0.0; size],
                gx: vec![0.0; fx],
                // one row of y-faces per row of nodes (the last unused for "reflect")
                gy: vec![0.0; grid.ny * grid.nx],
                rate_x: vec![0.0; grid.nx],
                rate_y: vec![0.0; grid.ny],
            },
            ax0: vec![0.0; fx],
            ay0: vec![0.0; fy],
            ax1: vec![0.0; fx],
            ay1: vec![0.0; fy],
            y: vec![0.0; size],
            y1: vec![0.0; size],
            y2: vec![0.0; size],
            buf: vec![0.0; size],
        }
    }
}

fn interpolate(now: &[f64], next: &[f64], t: f64, to: &mut [f64]) {
    for ((o, a), b) in to.iter_mut().zip(now).zip(next) {
        *o = (1.0 - t) * a + t * b;
    }
}

/// k sub-steps of length dt of m in place; returns the mass that left by the exits.
fn interval(
    grid: &Grid,
    m: &mut [f64],
    now: &(Vec<f64>, Vec<f64>),
    next: &(Vec<f64>, Vec<f64>),
    k: usize,
    dt: f64,
    w: &mut Work,
) -> f64 {
    let implicit = grid.diffusion > 0.0;
    let half = 0.5 * dt;
    let gamma = gamma();
    let halves = implicit.then(|| {
        (grid.rows.solvers(gamma * half * grid.rows.ratio), grid.cols.solvers(gamma * half * grid.cols.ratio))
    });
    let mut fallback: Option<(Solvers, Solvers)> = None;
    let mut gone = 0.0;
    for s in 0..k {
        let (t0, t1) = (s as f64 / k as f64, (s + 1) as f64 / k as f64);
        interpolate(&now.0, &next.0, t0, &mut w.ax0);
        interpolate(&now.1, &next.1, t0, &mut w.ay0);
        interpolate(&now.0, &next.0, t1, &mut w.ax1);
        interpolate(&now.1, &next.1, t1, &mut w.ay1);
        w.y.copy_from_slice(m);
        let mut lost = 0.0;
        if let Some((rows, cols)) = &halves {
            lost += grid.diffuse_y(&mut w.y, half, cols, &mut w.buf, false);
            lost += grid.rows.sdirk2(&mut w.y, half, rows);
        }
        let e0 = grid.euler(&w.y, &w.ax0, &w.ay0, dt, true, &mut w.adv, &mut w.y1);
        let e1 = grid.euler(&w.y1, &w.ax1, &w.ay1, dt, true, &mut w.adv, &mut w.y2);
        for (yi, y2i) in w.y.iter_mut().zip(&w.y2) {
            *yi = 0.5 * (*yi + y2i);
        }
        lost += 0.5 * dt * (e0 + e1);
        if let Some((rows, cols)) = &halves {
            lost += grid.rows.sdirk2(&mut w.y, half, rows);
            lost += grid.diffuse_y(&mut w.y, half, cols, &mut w.buf, false);
        }
        if lost < 0.0 || w.y.iter().any(|&v| v < 0.0) {
            if implicit && fallback.is_none() {
                fallback = Some((grid.rows.solvers(dt * grid.rows.ratio), grid.cols.solvers(dt * grid.cols.ratio)));
            }
            lost = first_order_imex_step(
                grid,
                m,
                (&w.ax0, &w.ay0),
                dt,
                fallback.as_ref(),
                &mut w.adv,
                &mut w.y,
                &mut w.buf,
            );
        }
        m.copy_from_slice(&w.y);
        gone += lost;
    }
    gone
}

/// The positive fallback into `y`: forward-Euler upwind advection, then backward Euler on the
/// rows and on the columns; returns the mass that left.
#[allow(clippy::too_many_arguments)]
fn first_order_imex_step(
    grid: &Grid,
    m: &[f64],
    (ax, ay): (&[f64], &[f64]),
    dt: f64,
    solvers: Option<&(Solvers, Solvers)>,
    adv: &mut AdvWork,
    y: &mut [f64],
    buf: &mut [f64],
) -> f64 {
    let rate = grid.euler(m, ax, ay, dt, false, adv, y);
    let mut lost = dt * rate;
    if let Some((rows, cols)) = solvers {
        lost += grid.rows.backward_euler(y, dt, rows);
        lost += grid.diffuse_y(y, dt, cols, buf, true);
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bc_x: Boundary, bc_y: Boundary) -> Fv2dParams {
        Fv2dParams { dx: 0.05, dy: 0.06, sigma: 0.4, horizon: 0.2, bc_x, bc_y, cfl: 0.9 }
    }

    #[test]
    fn segments_split_at_obstacles_wrap_and_see_exits() {
        let kinds = [EXIT, FREE, FREE, OBSTACLE, FREE, EXIT];
        let s = line_segments(&kinds, false);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].idx.clone(), s[0].exit_lo, s[0].exit_hi), (vec![1, 2], true, false));
        assert_eq!((s[1].idx.clone(), s[1].exit_lo, s[1].exit_hi), (vec![4], false, true));
        assert_eq!(s[1].faces, vec![1.0]);
        let s = line_segments(&[FREE, OBSTACLE, FREE, FREE], true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].idx, vec![2, 3, 0]);
        assert!(line_segments(&[FREE; 5], true)[0].cyclic);
    }

    #[test]
    fn mass_plus_exited_is_conserved_and_m_stays_non_negative() {
        let (nx, ny, nt) = (23, 19, 4);
        for (bc_x, bc_y) in [(Boundary::Reflect, Boundary::Reflect), (Boundary::Periodic, Boundary::Reflect)] {
            let p = params(bc_x, bc_y);
            let mut kinds = vec![FREE; nx * ny];
            for j in 5..9 {
                for i in 6..10 {
                    kinds[j * nx + i] = OBSTACLE;
                }
            }
            kinds[3..7].fill(EXIT);
            let u: Vec<f64> = (0..nt * ny * nx)
                .map(|q| {
                    let (j, i) = ((q / nx) % ny, q % nx);
                    3.0 * (i as f64 * 0.3).sin() * (j as f64 * 0.2).cos() + 0.5 * j as f64 * 0.06
                })
                .collect();
            let m0: Vec<f64> = (0..ny * nx).map(|q| if (q / nx) > 10 && (q % nx) < 8 { 5.0 } else { 0.0 }).collect();
            let out = fv_forward_2d(&u, &m0, Some(&kinds), nt, ny, nx, &p, None).unwrap();
            let (wx, wy) = (cell_widths(nx, p.dx, bc_x), cell_widths(ny, p.dy, bc_y));
            let mass = |row: &[f64]| -> f64 { (0..ny * nx).map(|q| wy[q / nx] * wx[q % nx] * row[q]).sum() };
            let start = mass(&out.march.values[..ny * nx]);
            assert!(out.exited[nt - 1] > 0.0);
            for t in 0..nt {
                let row = &out.march.values[t * ny * nx..(t + 1) * ny * nx];
                let drift = ((mass(row) + out.exited[t]) / start - 1.0).abs();
                // ~250 sub-steps of 8 line solves each: rounding adds up to ~1e-13
                assert!(drift < 1e-12, "{t} {drift}");
                assert!(row.iter().all(|&v| v >= 0.0));
                assert!(row.iter().zip(&kinds).all(|(&v, &k)| k == FREE || v == 0.0));
            }
        }
    }

    #[test]
    fn the_cyclic_segment_solve_inverts_the_periodic_matrix() {
        let n = 7;
        let widths = vec![0.1; n];
        let c = 3.7;
        let seg = Segment::new((0..n).collect(), true, false, false);
        let t = SegmentSolver::new(&widths, &seg, c);
        let x: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64).sin()).collect();
        let mut r: Vec<f64> =
            (0..n).map(|i| (widths[i] + 2.0 * c) * x[i] - c * (x[(i + 1) % n] + x[(i + n - 1) % n])).collect();
        t.solve(&mut r);
        assert!(r.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}

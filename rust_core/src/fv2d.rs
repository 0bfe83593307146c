//! The 2-D Fokker–Planck equation by finite volumes on the node-centred cells of a rectangle
//! with obstacles and exits: per sub-step the Strang composition 𝒟ʸ_{δ/2} 𝒟ˣ_{δ/2} 𝒜_δ 𝒟ˣ_{δ/2}
//! 𝒟ʸ_{δ/2} of unsplit SSP-RK2 van Leer MUSCL advection and SDIRK2 implicit diffusion on the row
//! and column segments (tridiagonal solves, Dirichlet m = 0 next to exits), the first-order IMEX
//! step as the positive fallback, and `exited` accumulated from the fluxes into exit cells.
//!
//! The maths: see mfg_ensemble/kernels/reference/fv2d.py (the twin). The advection does the
//! same operations in the same order per value. The line solves differ in form only: lines are
//! solved whole, 16 at a time with the inner loops across the lines (they vectorise; columns
//! need no transposition), a zero coupling at every closed face and a row of 1 at every
//! non-FREE node, which is exactly the reference's per-segment Thomas solves; a segment that
//! wraps around a periodic line is solved by Sherman–Morrison instead of by rotating the line
//! (the same system, equal to rounding). Rayon over blocks of lines (diffusion) and over rows
//! (advection); every value is computed by the same operations whatever the thread count, and
//! the per-line exit fluxes are added in line order, so the result is bit-identical for any
//! number of threads.

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

/// Lines per Rayon task of the diffusion sweeps: the lines of a block are solved together, the
/// inner loops running across them (independent recurrences, so they vectorise). 16 keeps two
/// threads balanced from about 50 lines (101 lines: 7 blocks; 32 made 4, split 64 : 37).
const BLOCK: usize = 16;

/// The geometry of up to `BLOCK` lines, values laid out [p][line] (p along the lines).
struct Block {
    /// Lines in this block.
    b: usize,
    free: Vec<bool>,
    /// Faces of each node that carry diffusive flux (to FREE or EXIT neighbours).
    faces: Vec<f64>,
    /// Faces of each node to an EXIT neighbour (Dirichlet m = 0 there).
    exits: Vec<f64>,
    /// 1 where the face (p, p + 1) couples two FREE nodes, else 0; at p = n − 1 the
    /// wrap-around face of a periodic line.
    cpl: Vec<f64>,
    /// Face lengths across the lines.
    across: Vec<f64>,
    /// Whether a line is cyclic (its wrap-around face couples: Sherman–Morrison).
    cyclic: Vec<bool>,
    /// (line, index into the block, exit faces) of the nodes next to an exit, by line then p.
    exit_nodes: Vec<(usize, usize, f64)>,
}

/// Every line along one axis in blocks: the lines are the columns (`along_y`: p = j, line i)
/// or the rows (p = i, line j) of the (ny, nx) field. A line's FREE nodes form segments
/// (separated by obstacles and exits, which hold m = 0): a zero coupling between two nodes
/// makes the tridiagonal solve of the whole line exactly the solves of its segments.
struct LineBlocks {
    nx: usize,
    along_y: bool,
    /// Nodes per line.
    n: usize,
    widths: Vec<f64>,
    ratio: f64,
    blocks: Vec<Block>,
}

/// The factored M = W − cL of a block (diagonal wᵢ + c·faces, off-diagonal −c·cpl; rows of 1 at
/// non-FREE nodes), with the Sherman–Morrison data of its cyclic lines.
struct BlockSolver {
    cf: Vec<f64>,
    inv: Vec<f64>,
    g: Vec<f64>,
    z: Vec<f64>,
    ratio: Vec<f64>,
    denom: Vec<f64>,
    /// Which lines are cyclic (`z` is empty if none is).
    cyclic: Vec<bool>,
}

impl LineBlocks {
    #[allow(clippy::too_many_arguments)]
    fn new(
        kinds: &[u8],
        nx: usize,
        ny: usize,
        along_y: bool,
        widths: Vec<f64>,
        across: &[f64],
        periodic: bool,
        ratio: f64,
    ) -> LineBlocks {
        let (n, k) = if along_y { (ny, nx) } else { (nx, ny) };
        let kind = |p: usize, q: usize| if along_y { kinds[p * nx + q] } else { kinds[q * nx + p] };
        let mut blocks = Vec::new();
        for q0 in (0..k).step_by(BLOCK) {
            let b = BLOCK.min(k - q0);
            let mut blk = Block {
                b,
                free: vec![false; n * b],
                faces: vec![0.0; n * b],
                exits: vec![0.0; n * b],
                cpl: vec![0.0; n * b],
                across: across[q0..q0 + b].to_vec(),
                cyclic: vec![false; b],
                exit_nodes: Vec::new(),
            };
            for l in 0..b {
                let q = q0 + l;
                for p in 0..n {
                    if kind(p, q) != FREE {
                        continue;
                    }
                    let at = p * b + l;
                    blk.free[at] = true;
                    let prev = if p > 0 { Some(p - 1) } else { periodic.then_some(n - 1) };
                    let next = if p + 1 < n { Some(p + 1) } else { periodic.then_some(0) };
                    for (side, other) in [(0, prev), (1, next)] {
                        let Some(o) = other else { continue };
                        match kind(o, q) {
                            FREE => {
                                blk.faces[at] += 1.0;
                                if side == 1 {
                                    blk.cpl[at] = 1.0;
                                }
                            }
                            EXIT => {
                                blk.faces[at] += 1.0;
                                blk.exits[at] += 1.0;
                            }
                            _ => {}
                        }
                    }
                }
                blk.cyclic[l] = periodic && blk.cpl[(n - 1) * b + l] != 0.0;
                for p in 0..n {
                    if blk.exits[p * b + l] != 0.0 {
                        blk.exit_nodes.push((l, p * b + l, blk.exits[p * b + l]));
                    }
                }
            }
            blocks.push(blk);
        }
        LineBlocks { nx, along_y, n, widths, ratio, blocks }
    }

    fn solvers(&self, c: f64) -> Vec<BlockSolver> {
        let n = self.n;
        self.blocks
            .par_iter()
            .map(|blk| {
                let b = blk.b;
                let cf: Vec<f64> = blk.cpl.iter().map(|&v| c * v).collect();
                let mut d: Vec<f64> = (0..n * b)
                    .map(|at| if blk.free[at] { self.widths[at / b] + blk.faces[at] * c } else { 1.0 })
                    .collect();
                let (mut ratio, mut b0) = (vec![0.0; b], vec![0.0; b]);
                for l in 0..b {
                    if blk.cyclic[l] {
                        b0[l] = d[l];
                        ratio[l] = c / b0[l];
                        d[l] = b0[l] + b0[l];
                        d[(n - 1) * b + l] += c * ratio[l];
                    }
                }
                let mut inv = vec![0.0; n * b];
                let mut g = vec![0.0; n * b];
                for l in 0..b {
                    inv[l] = 1.0 / d[l];
                    g[l] = cf[l] * inv[l];
                }
                for p in 1..n {
                    for l in 0..b {
                        let at = p * b + l;
                        inv[at] = 1.0 / (d[at] - cf[at - b] * g[at - b]);
                        g[at] = cf[at] * inv[at];
                    }
                }
                let cyclic = blk.cyclic.clone();
                let mut s = BlockSolver { cf, inv, g, z: Vec::new(), ratio, denom: vec![1.0; b], cyclic };
                if blk.cyclic.iter().any(|&c| c) {
                    let mut z = vec![0.0; n * b];
                    for l in 0..b {
                        if blk.cyclic[l] {
                            z[l] = -b0[l];
                            z[(n - 1) * b + l] = -c;
                        }
                    }
                    s.thomas(&mut z, n, b);
                    for l in 0..b {
                        if blk.cyclic[l] {
                            s.denom[l] = 1.0 + (z[l] + s.ratio[l] * z[(n - 1) * b + l]);
                        }
                    }
                    s.z = z;
                }
                s
            })
            .collect()
    }

    /// `field` ← the columns (y lines) held in buf: row j holds p = j of every line.
    fn scatter(&self, buf: &[f64], field: &mut [f64]) {
        let n = self.n;
        field.par_chunks_mut(self.nx).enumerate().for_each(|(j, row)| {
            for (bi, out) in row.chunks_mut(BLOCK).enumerate() {
                let b = out.len();
                out.copy_from_slice(&buf[bi * BLOCK * n + j * b..][..b]);
            }
        });
    }

    /// 𝒟_τ on every line of `field` (in place, through `buf`); the mass that left by exits.
    fn sdirk2(&self, field: &mut [f64], tau: f64, solvers: &[BlockSolver], buf: &mut [f64]) -> f64 {
        let c = gamma() * tau * self.ratio;
        let c2 = (1.0 - gamma()) * tau * self.ratio;
        let n = self.n;
        self.sweep(field, solvers, buf, |blk, s, x, scratch, out| {
            let b = blk.b;
            let size = n * b;
            scratch.resize(3 * size, 0.0);
            let (wm, rest) = scratch.split_at_mut(size);
            let (y1, div) = rest.split_at_mut(size);
            for p in 0..n {
                for l in 0..b {
                    wm[p * b + l] = self.widths[p] * x[p * b + l];
                }
            }
            y1.copy_from_slice(wm);
            s.solve(y1, n, b);
            blk.laplacian(y1, n, div);
            for ((xi, a), d) in x.iter_mut().zip(wm.iter()).zip(div.iter()) {
                *xi = a + c2 * d;
            }
            s.solve(x, n, b);
            // Σ over the exit faces of each line, in p order
            let (mut e1, mut e2) = (vec![0.0; b], vec![0.0; b]);
            for &(l, at, e) in &blk.exit_nodes {
                e1[l] += e * y1[at];
                e2[l] += e * x[at];
            }
            for (l, o) in out.iter_mut().enumerate() {
                *o = c2 * e1[l] + c * e2[l];
            }
        })
    }

    /// (W − τL) y = W m on every line of `field`; the mass that left by exits.
    fn backward_euler(&self, field: &mut [f64], tau: f64, solvers: &[BlockSolver], buf: &mut [f64]) -> f64 {
        let c = tau * self.ratio;
        let n = self.n;
        self.sweep(field, solvers, buf, |blk, s, x, _, out| {
            let b = blk.b;
            for p in 0..n {
                for l in 0..b {
                    x[p * b + l] *= self.widths[p];
                }
            }
            s.solve(x, n, b);
            let mut e = vec![0.0; b];
            for &(l, at, f) in &blk.exit_nodes {
                e[l] += f * x[at];
            }
            for (o, el) in out.iter_mut().zip(e) {
                *o = c * el;
            }
        })
    }

    /// `step` on every block (Rayon over blocks), which leaves each line's exit flux in `out`;
    /// returns Σ over lines, in line order, of face length × exit flux. Rows: a task gathers
    /// its block's rows (its own chunk of `field`) into `buf`, steps and scatters them back,
    /// one parallel pass; columns: a task gathers its columns, then one pass over the rows
    /// scatters them (the columns of a block are not a chunk of `field`).
    fn sweep<F>(&self, field: &mut [f64], solvers: &[BlockSolver], buf: &mut [f64], step: F) -> f64
    where
        F: Fn(&Block, &BlockSolver, &mut [f64], &mut Vec<f64>, &mut [f64]) + Sync,
    {
        let (n, nx) = (self.n, self.nx);
        let run = |scratch: &mut Vec<f64>, x: &mut [f64], blk: &Block, s: &BlockSolver| {
            let mut out = vec![0.0; blk.b];
            step(blk, s, x, scratch, &mut out);
            for (o, a) in out.iter_mut().zip(&blk.across) {
                *o *= a;
            }
            out
        };
        let blocks = self.blocks.par_iter().zip(solvers.par_iter());
        let flux: Vec<Vec<f64>> = if self.along_y {
            let from = &*field;
            let flux = buf
                .par_chunks_mut(n * BLOCK)
                .zip(blocks)
                .enumerate()
                .map_init(Vec::new, |scratch, (bi, (x, (blk, s)))| {
                    let (q0, b) = (bi * BLOCK, blk.b);
                    for p in 0..n {
                        x[p * b..(p + 1) * b].copy_from_slice(&from[p * nx + q0..p * nx + q0 + b]);
                    }
                    run(scratch, x, blk, s)
                })
                .collect();
            self.scatter(buf, field);
            flux
        } else {
            field
                .par_chunks_mut(BLOCK * nx)
                .zip(buf.par_chunks_mut(n * BLOCK))
                .zip(blocks)
                .map_init(Vec::new, |scratch, ((rows, x), (blk, s))| {
                    let b = blk.b;
                    for (l, row) in rows.chunks(nx).enumerate() {
                        for (p, &v) in row.iter().enumerate() {
                            x[p * b + l] = v;
                        }
                    }
                    let out = run(scratch, x, blk, s);
                    for (l, row) in rows.chunks_mut(nx).enumerate() {
                        for (p, v) in row.iter_mut().enumerate() {
                            *v = x[p * b + l];
                        }
                    }
                    out
                })
                .collect()
        };
        flux.iter().flatten().sum()
    }
}

impl Block {
    /// (y_{p+1} − y_p) − (y_p − y_{p−1}) over the faces that couple, − y_p per exit face.
    fn laplacian(&self, y: &[f64], n: usize, div: &mut [f64]) {
        let b = self.b;
        for p in 0..n {
            let next = if p + 1 < n { (p + 1) * b } else { 0 };
            let prev = if p > 0 { (p - 1) * b } else { (n - 1) * b };
            let at = p * b;
            let (yp, yn, yb) = (&y[at..at + b], &y[next..next + b], &y[prev..prev + b]);
            let (c_after, c_before) = (&self.cpl[at..at + b], &self.cpl[prev..prev + b]);
            let (exits, out) = (&self.exits[at..at + b], &mut div[at..at + b]);
            for l in 0..b {
                let after = c_after[l] * (yn[l] - yp[l]);
                let before = c_before[l] * (yp[l] - yb[l]);
                out[l] = (after - before) - exits[l] * yp[l];
            }
        }
    }
}

impl BlockSolver {
    fn thomas(&self, x: &mut [f64], n: usize, b: usize) {
        for (xl, inv) in x[..b].iter_mut().zip(&self.inv) {
            *xl *= inv;
        }
        for p in 1..n {
            let (done, rest) = x.split_at_mut(p * b);
            let prev = &done[(p - 1) * b..];
            let (cf, inv) = (&self.cf[(p - 1) * b..p * b], &self.inv[p * b..(p + 1) * b]);
            for l in 0..b {
                rest[l] = (rest[l] + cf[l] * prev[l]) * inv[l];
            }
        }
        for p in (0..n - 1).rev() {
            let (head, tail) = x.split_at_mut((p + 1) * b);
            let cur = &mut head[p * b..];
            let g = &self.g[p * b..(p + 1) * b];
            for l in 0..b {
                cur[l] += g[l] * tail[l];
            }
        }
    }

    fn solve(&self, x: &mut [f64], n: usize, b: usize) {
        self.thomas(x, n, b);
        if !self.z.is_empty() {
            for l in 0..b {
                if self.cyclic[l] {
                    let q = (x[l] + self.ratio[l] * x[(n - 1) * b + l]) / self.denom[l];
                    for p in 0..n {
                        x[p * b + l] -= q * self.z[p * b + l];
                    }
                }
            }
        }
    }
}

type Solvers = Vec<BlockSolver>;

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
    rows: LineBlocks,
    cols: LineBlocks,
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
        let rows = LineBlocks::new(kinds, nx, ny, false, wx.clone(), &wy, px, diffusion / p.dx);
        let cols = LineBlocks::new(kinds, nx, ny, true, wy.clone(), &wx, py, diffusion / p.dy);
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

    /// `to` ← m + δR(m) (0 off the FREE nodes), or with `average` `to` ← ½(`to` + m + δR(m)),
    /// the drift at the fraction `drift.2` of the interval; returns the rate of flux into the
    /// exit cells.
    #[allow(clippy::too_many_arguments)]
    fn euler(
        &self,
        m: &[f64],
        drift: Drift,
        dt: f64,
        limited: bool,
        w: &mut AdvWork,
        to: &mut [f64],
        average: bool,
    ) -> f64 {
        let (nx, ny, nfx, nfy) = (self.nx, self.ny, self.nfx, self.nfy);
        let ((ax0, ay0), (ax1, ay1), t) = (&drift.0, &drift.1, drift.2);
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
            let (a0, a1) = (&ax0[j * nfx..(j + 1) * nfx], &ax1[j * nfx..(j + 1) * nfx]);
            let open = &self.open_x[j * nfx..(j + 1) * nfx];
            for f in 0..nfx {
                let right = r[if f + 1 == nx { 0 } else { f + 1 }];
                let a = (1.0 - t) * a0[f] + t * a1[f];
                let v = a.max(0.0) * l[f] + a.min(0.0) * right;
                g[f] = if open[f] { v } else { 0.0 };
            }
            if j < nfy {
                let up = (if j + 1 == ny { 0 } else { j + 1 }) * nx;
                let (l, r) = (&ly[j * nx..(j + 1) * nx], &ry[up..up + nx]);
                let (a0, a1) = (&ay0[j * nx..(j + 1) * nx], &ay1[j * nx..(j + 1) * nx]);
                let open = &self.open_y[j * nx..(j + 1) * nx];
                for i in 0..nx {
                    let a = (1.0 - t) * a0[i] + t * a1[i];
                    let v = a.max(0.0) * l[i] + a.min(0.0) * r[i];
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
                        out[i] = if average { 0.5 * (out[i] + 0.0) } else { 0.0 };
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
                    let v = row[i] - (rate_x[i] * divx + rate_y[j] * divy);
                    out[i] = if average { 0.5 * (out[i] + v) } else { v };
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
}

/// The face drifts (α^x, α^y) at the ends of an output interval and the fraction of it at
/// which they are interpolated linearly.
type Drift<'a> = (&'a (Vec<f64>, Vec<f64>), &'a (Vec<f64>, Vec<f64>), f64);

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
    y: Vec<f64>,
    y1: Vec<f64>,
    buf: Vec<f64>,
}

impl Work {
    fn new(grid: &Grid) -> Work {
        let size = grid.nx * grid.ny;
        let fx = grid.ny * grid.nfx;
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
            y: vec![0.0; size],
            y1: vec![0.0; size],
            buf: vec![0.0; size],
        }
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
        w.y.copy_from_slice(m);
        let mut lost = 0.0;
        if let Some((rows, cols)) = &halves {
            lost += grid.cols.sdirk2(&mut w.y, half, cols, &mut w.buf);
            lost += grid.rows.sdirk2(&mut w.y, half, rows, &mut w.buf);
        }
        // SSP-RK2: y ← ½(y + E₁(E₀(y))), the average done in E₁'s pass
        let e0 = grid.euler(&w.y, (now, next, t0), dt, true, &mut w.adv, &mut w.y1, false);
        let e1 = grid.euler(&w.y1, (now, next, t1), dt, true, &mut w.adv, &mut w.y, true);
        lost += 0.5 * dt * (e0 + e1);
        if let Some((rows, cols)) = &halves {
            lost += grid.rows.sdirk2(&mut w.y, half, rows, &mut w.buf);
            lost += grid.cols.sdirk2(&mut w.y, half, cols, &mut w.buf);
        }
        if lost < 0.0 || w.y.par_iter().any(|&v| v < 0.0) {
            if implicit && fallback.is_none() {
                fallback = Some((grid.rows.solvers(dt * grid.rows.ratio), grid.cols.solvers(dt * grid.cols.ratio)));
            }
            lost = first_order_imex_step(
                grid,
                m,
                (now, next, t0),
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
    drift: Drift,
    dt: f64,
    solvers: Option<&(Solvers, Solvers)>,
    adv: &mut AdvWork,
    y: &mut [f64],
    buf: &mut [f64],
) -> f64 {
    let rate = grid.euler(m, drift, dt, false, adv, y, false);
    let mut lost = dt * rate;
    if let Some((rows, cols)) = solvers {
        lost += grid.rows.backward_euler(y, dt, rows, buf);
        lost += grid.cols.backward_euler(y, dt, cols, buf);
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
    fn lines_split_at_obstacles_wrap_and_see_exits() {
        // one row of six nodes (reflect), one periodic row of four, as x-lines of a (1, n) field
        let kinds = [EXIT, FREE, FREE, OBSTACLE, FREE, EXIT];
        let lines = LineBlocks::new(&kinds, 6, 1, false, vec![0.1; 6], &[1.0], false, 1.0);
        let blk = &lines.blocks[0];
        assert_eq!(blk.faces, vec![0.0, 2.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(blk.exits, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(blk.cpl, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let lines = LineBlocks::new(&[FREE, OBSTACLE, FREE, FREE], 4, 1, false, vec![0.1; 4], &[1.0], true, 1.0);
        let blk = &lines.blocks[0];
        assert_eq!(blk.cpl, vec![0.0, 0.0, 1.0, 1.0]); // 2–3 and the wrap 3–0
        assert!(blk.cyclic[0]);
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
    fn the_cyclic_solve_inverts_the_periodic_matrix() {
        let n = 7;
        let widths = vec![0.1; n];
        let c = 3.7;
        let lines = LineBlocks::new(&[FREE; 7], n, 1, false, widths.clone(), &[1.0], true, 1.0);
        let solver = &lines.solvers(c)[0];
        let x: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64).sin()).collect();
        // r = M x, M = diag(w + 2c) − c (neighbours, wrapping)
        let mut r: Vec<f64> =
            (0..n).map(|i| (widths[i] + 2.0 * c) * x[i] - c * (x[(i + 1) % n] + x[(i + n - 1) % n])).collect();
        solver.solve(&mut r, n, 1);
        assert!(r.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}

//! The 2-D HJB equation of the MFG marched backward in time: HJ-WENO5 derivatives per run of
//! every row (∂x) and column (∂y) with the ghost rules of SPEC2D, the separable Godunov
//! Hamiltonian, Δ₄ diffusion, ARS(4,4,3) with the implicit stages solved by K = 2 ADI
//! defect-correction sweeps, x then y (pentadiagonal solves per run, `banded`, factored once
//! per output interval), CFL sub-steps as in 1-D.
//!
//! The maths: see mfg_ensemble/kernels/reference/hjb2d.py (this module follows it operation
//! for operation). Columns are processed on transposed copies; Rayon works over lines, each
//! line computed by the same operations whatever the thread count (bit-identical results).

use rayon::prelude::*;

use crate::banded::{CyclicPenta, Penta};
use crate::boundary::Boundary;
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::grid2d::{EXIT, FREE, OBSTACLE};
use crate::hjb::{godunov, more_substeps, ARS_C, ARS_EXPLICIT, ARS_GAMMA, ARS_IMPLICIT};
use crate::substeps::{floors, substeps, Marching};
use crate::weno::{derivatives_extended_into, weno_combine, Variant, Workspace, MIN_NODES};

/// K, the defect-correction sweeps of each implicit stage.
pub const ADI_SWEEPS: usize = 2;
/// Whether each sweep is the mean of both orders of the factors (exact x ↔ y invariance, 1.3×
/// the cost of a sub-step; off: see the reference's docstring).
const SYMMETRISED: bool = false;
const LAPLACE: [f64; 5] = [-1.0, 16.0, -30.0, 16.0, -1.0];

#[derive(Debug, Clone, Copy)]
pub struct Hjb2dParams {
    pub dx: f64,
    pub dy: f64,
    pub sigma: f64,
    pub horizon: f64,
    /// (bc_x, bc_y)
    pub bc: [Boundary; 2],
    pub variant: Variant,
    pub eps: f64,
    pub cfl: f64,
}

/// The ghost rule at a run end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Wall,
    Face,
    Exit,
    Cyclic,
}

/// A linear combination of a run's values: (run position, coefficient), in the reference's order.
type Combo = Vec<(usize, f64)>;

/// The runs of one line: (node indices in order, left rule, right rule).
fn line_runs(kinds: &[u8], periodic: bool) -> Vec<(Vec<usize>, End, End)> {
    let n = kinds.len();
    let first_obstacle = kinds.iter().position(|&k| k == OBSTACLE);
    let order: Vec<usize> = match first_obstacle {
        None if periodic => return vec![((0..n).collect(), End::Cyclic, End::Cyclic)],
        Some(start) if periodic => (0..n).map(|s| (start + 1 + s) % n).collect(),
        _ => (0..n).collect(),
    };
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut cur = Vec::new();
    for i in order {
        if kinds[i] == OBSTACLE {
            if !cur.is_empty() {
                runs.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(i);
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    let rule = |node: usize, wall_node: usize| {
        if kinds[node] == EXIT {
            End::Exit
        } else if !periodic && node == wall_node {
            End::Wall
        } else {
            End::Face
        }
    };
    runs.into_iter()
        .map(|r| {
            let (left, right) = (rule(r[0], 0), rule(r[r.len() - 1], n - 1));
            (r, left, right)
        })
        .collect()
}

/// The extended run (three ghosts each side) as combinations of the run's values: entry p + 3
/// for position p ∈ [−3, L + 3), filled left 1, right 1, left 2, … as the reference does.
fn ghost_coefficients(len: usize, left: End, right: End) -> Vec<Combo> {
    let mut ext: Vec<Combo> = vec![Vec::new(); len + 6];
    for p in 0..len {
        ext[p + 3] = vec![(p, 1.0)];
    }
    if left == End::Cyclic {
        for q in 0..3 {
            ext[q] = vec![((q + len - 3) % len, 1.0)];
            ext[len + 3 + q] = vec![(q % len, 1.0)];
        }
        return ext;
    }
    if len == 1 {
        return vec![vec![(0, 1.0)]; 7];
    }
    let get = |ext: &[Combo], p: isize| ext[(p + 3) as usize].clone();
    let odd = |ext: &[Combo], end: isize, mirror: isize| {
        let mut out: Combo = get(ext, end).iter().map(|&(q, c)| (q, 2.0 * c)).collect();
        for (q, c) in get(ext, mirror) {
            match out.iter_mut().find(|e| e.0 == q) {
                Some(e) => e.1 -= c,
                None => out.push((q, 0.0 - c)),
            }
        }
        out
    };
    let (len_i, last) = (len as isize, len as isize - 1);
    for k in 1..=3isize {
        let l = match left {
            End::Wall => get(&ext, k),
            End::Face => get(&ext, k - 1),
            _ => odd(&ext, 0, k),
        };
        ext[(3 - k) as usize] = l;
        let r = match right {
            End::Wall => get(&ext, last - k),
            End::Face => get(&ext, len_i - k),
            _ => odd(&ext, last, last - k),
        };
        ext[(last + k + 3) as usize] = r;
    }
    ext
}

/// One run: its nodes (indices in the line), ghost combinations, Δ₄·12d² as five (wrapped,
/// for a cyclic run) diagonals, which nodes are free.
struct Run {
    idx: Vec<usize>,
    ext: Vec<Combo>,
    lap: [Vec<f64>; 5],
    free: Vec<bool>,
    cyclic: bool,
}

enum Factor {
    Band(Penta),
    Cyclic(Box<CyclicPenta>),
}

/// The runs of the lines (rows) of an (nl, n) array of node kinds, spacing d.
struct Lines {
    n: usize,
    d: f64,
    runs: Vec<Vec<Run>>,
    solver: Option<(f64, Vec<Vec<Factor>>)>,
}

/// The extended run of `line`: the run's values copied (their combinations are the identity:
/// 1·x is x, up to the sign of a zero) and the six ghosts combined.
fn fill_ext(run: &Run, line: &[f64], e: &mut Vec<f64>) {
    let combine = |combo: &Combo| {
        let mut acc = 0.0;
        for &(q, c) in combo {
            acc += c * line[run.idx[q]];
        }
        acc
    };
    let len = run.idx.len();
    e.clear();
    e.extend(run.ext[..3].iter().map(combine));
    e.extend(run.idx.iter().map(|&i| line[i]));
    e.extend(run.ext[len + 3..].iter().map(combine));
}

/// The buffers of one worker's WENO derivatives.
#[derive(Default)]
struct LineBufs {
    e: Vec<f64>,
    rm: Vec<f64>,
    rp: Vec<f64>,
    ws: Workspace,
}

/// max that propagates NaN, as NumPy's maximum.
#[inline(always)]
fn max_nan(a: f64, b: f64) -> f64 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

impl Lines {
    fn new(kinds: &[u8], nl: usize, n: usize, periodic: bool, d: f64) -> Lines {
        let runs = (0..nl)
            .map(|j| {
                let line = &kinds[j * n..(j + 1) * n];
                line_runs(line, periodic)
                    .into_iter()
                    .map(|(idx, left, right)| {
                        let len = idx.len();
                        let ext = ghost_coefficients(len, left, right);
                        let cyclic = left == End::Cyclic;
                        let mut lap: [Vec<f64>; 5] = std::array::from_fn(|_| vec![0.0; len]);
                        for r in 0..len {
                            for (k, &wk) in LAPLACE.iter().enumerate() {
                                for &(q, c) in &ext[r + 1 + k] {
                                    let off = if cyclic {
                                        let o = (q + len - r) % len; // 0..len
                                        if o <= 2 {
                                            o as isize
                                        } else {
                                            o as isize - len as isize
                                        }
                                    } else {
                                        q as isize - r as isize
                                    };
                                    assert!(off.abs() <= 2, "a folded stencil outside the band");
                                    lap[(off + 2) as usize][r] += wk * c;
                                }
                            }
                        }
                        let free = idx.iter().map(|&i| line[i] == FREE).collect();
                        Run { idx, ext, lap, free, cyclic }
                    })
                    .collect()
            })
            .collect();
        Lines { n, d, runs, solver: None }
    }

    /// This direction's part of Ĥ, ½ max(max(d⁻, 0)², min(d⁺, 0)²), into `h` (0 at obstacle
    /// nodes); returns the largest |d⁻|, |d⁺| over the free nodes (NaN propagated).
    fn hamiltonian(&self, u: &[f64], variant: Variant, eps: f64, h: &mut [f64]) -> f64 {
        let (n, d) = (self.n, self.d);
        h.par_chunks_mut(n)
            .zip(u.par_chunks(n))
            .zip(self.runs.par_iter())
            .map_init(LineBufs::default, |b, ((h, line), runs)| {
                h.fill(0.0);
                let LineBufs { e, rm, rp, ws } = b;
                let inv_d = 1.0 / d;
                let mut pmax = 0.0_f64;
                for run in runs {
                    fill_ext(run, line, e);
                    let len = run.idx.len();
                    rm.resize(len, 0.0);
                    rp.resize(len, 0.0);
                    if len >= MIN_NODES {
                        // the SIMD blocks of the 1-D kernel: the same bits as the scalar form below
                        derivatives_extended_into(e, d, variant, eps, rm, rp, ws);
                    } else {
                        for p in 0..len {
                            let w: [f64; 6] = std::array::from_fn(|t| (e[p + t + 1] - e[p + t]) * inv_d);
                            rm[p] = weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps);
                            rp[p] = weno_combine([w[5], w[4], w[3], w[2], w[1]], variant, eps);
                        }
                    }
                    for (((&i, &fr), &m), &pl) in run.idx.iter().zip(&run.free).zip(rm.iter()).zip(rp.iter()) {
                        h[i] = godunov(m, pl);
                        if fr {
                            pmax = max_nan(pmax, max_nan(m.abs(), pl.abs()));
                        }
                    }
                }
                pmax
            })
            .reduce(|| 0.0, max_nan)
    }

    /// Δ₄u on the free nodes (0 elsewhere) into `out`; times 1/(12d²) where the reference
    /// divides by 12d² (≤ 1 ulp).
    fn laplacian(&self, u: &[f64], out: &mut [f64]) {
        let (n, inv) = (self.n, 1.0 / (12.0 * (self.d * self.d)));
        out.par_chunks_mut(n).zip(u.par_chunks(n)).zip(self.runs.par_iter()).for_each_init(
            || (Vec::new(), Vec::new()),
            |(e, l), ((out, line), runs)| {
                out.fill(0.0);
                for run in runs {
                    fill_ext(run, line, e);
                    let len = run.idx.len();
                    l.clear();
                    l.extend(
                        (0..len).map(|p| {
                            (-e[p + 5] + 16.0 * e[p + 4] - 30.0 * e[p + 3] + 16.0 * e[p + 2] - e[p + 1]) * inv
                        }),
                    );
                    for ((&i, &fr), &v) in run.idx.iter().zip(&run.free).zip(l.iter()) {
                        if fr {
                            out[i] = v;
                        }
                    }
                }
            },
        );
    }

    /// The factors of I − cΔ₄ per run (identity rows at non-free nodes), kept for the last c.
    fn prepare(&mut self, c: f64) {
        if self.solver.as_ref().is_some_and(|(cc, _)| *cc == c) {
            return;
        }
        let scale = c / (12.0 * (self.d * self.d));
        let factors = self
            .runs
            .par_iter()
            .map(|runs| {
                runs.iter()
                    .map(|run| {
                        let len = run.idx.len();
                        let mut a: [Vec<f64>; 5] = std::array::from_fn(|_| vec![0.0; len]);
                        for (k, ak) in a.iter_mut().enumerate() {
                            let delta = if k == 2 { 1.0 } else { 0.0 };
                            for ((x, &free), &l) in ak.iter_mut().zip(&run.free).zip(&run.lap[k]) {
                                *x = if free { delta - scale * l } else { delta };
                            }
                        }
                        let [m2, m1, dd, p1, p2] = &a;
                        if run.cyclic {
                            Factor::Cyclic(Box::new(CyclicPenta::factor(m2, m1, dd, p1, p2)))
                        } else {
                            Factor::Band(Penta::factor(m2, m1, dd, p1, p2))
                        }
                    })
                    .collect()
            })
            .collect();
        self.solver = Some((c, factors));
    }

    /// (I − cΔ₄)⁻¹ r line by line, run by run (0 at obstacle nodes), after `prepare(c)`. Lines
    /// go in fixed groups of four; when the four have runs of the same lengths, their solves
    /// are interleaved (`Penta::solve4`: the same operations per line).
    fn solve(&self, r: &[f64], out: &mut [f64]) {
        const GROUP: usize = 4;
        let n = self.n;
        let factors = &self.solver.as_ref().expect("prepared").1;
        out.par_chunks_mut(GROUP * n).zip(r.par_chunks(GROUP * n)).enumerate().for_each_init(
            Vec::new,
            |buf, (gi, (out, rr))| {
                out.fill(0.0);
                let lines = out.len() / n;
                let runs = &self.runs[gi * GROUP..gi * GROUP + lines];
                let facs = &factors[gi * GROUP..gi * GROUP + lines];
                let alike = lines == GROUP
                    && runs.iter().all(|rs| {
                        rs.len() == runs[0].len()
                            && rs.iter().zip(&runs[0]).all(|(a, b)| a.idx.len() == b.idx.len() && a.cyclic == b.cyclic)
                    });
                if alike {
                    for q in 0..runs[0].len() {
                        let len = runs[0][q].idx.len();
                        buf.clear();
                        for (s, rs) in runs.iter().enumerate() {
                            let line = &rr[s * n..(s + 1) * n];
                            buf.extend(rs[q].idx.iter().map(|&i| line[i]));
                        }
                        let bands: [&Penta; GROUP] = std::array::from_fn(|s| match &facs[s][q] {
                            Factor::Band(f) => f,
                            Factor::Cyclic(f) => f.band(),
                        });
                        Penta::solve4(bands, buf);
                        for (s, (rs, fs)) in runs.iter().zip(facs).enumerate() {
                            let x = &mut buf[s * len..(s + 1) * len];
                            if let Factor::Cyclic(f) = &fs[q] {
                                f.correct(x);
                            }
                            let o = &mut out[s * n..(s + 1) * n];
                            for (&i, &v) in rs[q].idx.iter().zip(x.iter()) {
                                o[i] = v;
                            }
                        }
                    }
                    return;
                }
                for (s, (rs, fs)) in runs.iter().zip(facs).enumerate() {
                    let line = &rr[s * n..(s + 1) * n];
                    let o = &mut out[s * n..(s + 1) * n];
                    for (run, fac) in rs.iter().zip(fs) {
                        buf.clear();
                        buf.extend(run.idx.iter().map(|&i| line[i]));
                        match fac {
                            Factor::Band(f) => f.solve(buf),
                            Factor::Cyclic(f) => f.solve(buf),
                        }
                        for (&i, &x) in run.idx.iter().zip(buf.iter()) {
                            o[i] = x;
                        }
                    }
                }
            },
        );
    }
}

/// `dst` (cols, rows) = `src` (rows, cols) transposed.
fn transpose(src: &[f64], rows: usize, cols: usize, dst: &mut [f64]) {
    dst.par_chunks_mut(rows).enumerate().for_each(|(i, col)| {
        for (j, x) in col.iter_mut().enumerate() {
            *x = src[j * cols + i];
        }
    });
}

/// `out` (rows, cols) += `src` (cols, rows) transposed.
fn add_transposed(out: &mut [f64], src: &[f64], rows: usize, cols: usize) {
    out.par_chunks_mut(cols).enumerate().for_each(|(j, row)| {
        for (i, o) in row.iter_mut().enumerate() {
            *o += src[i * rows + j];
        }
    });
}

/// The x lines (rows) and y lines (columns, on transposed arrays) of the grid, and the
/// buffers of its operations (allocated once per march).
struct Grid {
    nx: usize,
    ny: usize,
    x: Lines,
    y: Lines,
    free: Vec<bool>,
    p: Hjb2dParams,
    s: Scratch,
}

/// Work arrays of nx·ny values.
struct Scratch {
    hx: Vec<f64>,
    ut: Vec<f64>,
    hy: Vec<f64>,
    lyt: Vec<f64>,
    u: Vec<f64>,
    lap: Vec<f64>,
    defect: Vec<f64>,
    t1: Vec<f64>,
    t2: Vec<f64>,
    xy: Vec<f64>,
    yx: Vec<f64>,
}

impl Grid {
    fn new(nodes: &[u8], ny: usize, nx: usize, p: &Hjb2dParams) -> Grid {
        let mut nt_ = vec![0u8; nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                nt_[i * ny + j] = nodes[j * nx + i];
            }
        }
        let z = || vec![0.0; nx * ny];
        Grid {
            nx,
            ny,
            x: Lines::new(nodes, ny, nx, p.bc[0] == Boundary::Periodic, p.dx),
            y: Lines::new(&nt_, nx, ny, p.bc[1] == Boundary::Periodic, p.dy),
            free: nodes.iter().map(|&k| k == FREE).collect(),
            p: *p,
            s: Scratch {
                hx: z(),
                ut: z(),
                hy: z(),
                lyt: z(),
                u: z(),
                lap: z(),
                defect: z(),
                t1: z(),
                t2: z(),
                xy: z(),
                yx: z(),
            },
        }
    }

    fn zeros(&self) -> Vec<f64> {
        vec![0.0; self.nx * self.ny]
    }

    /// f(θ) − Ĥ on the free nodes (0 elsewhere) into `out`; returns px/dx + py/dy.
    fn explicit(&mut self, u: &[f64], (f_hi, f_lo, theta): (&[f64], &[f64], f64), out: &mut [f64]) -> f64 {
        let (nx, ny) = (self.nx, self.ny);
        let s = &mut self.s;
        let px = self.x.hamiltonian(u, self.p.variant, self.p.eps, &mut s.hx);
        transpose(u, ny, nx, &mut s.ut);
        let py = self.y.hamiltonian(&s.ut, self.p.variant, self.p.eps, &mut s.hy);
        let (hx, hy, free) = (&s.hx, &s.hy, &self.free);
        out.par_chunks_mut(nx).enumerate().for_each(|(j, row)| {
            for (i, o) in row.iter_mut().enumerate() {
                let at = j * nx + i;
                *o = if free[at] {
                    let h = hx[at] + hy[i * ny + j];
                    let f = (1.0 - theta) * f_hi[at] + theta * f_lo[at];
                    f - h
                } else {
                    0.0
                };
            }
        });
        px / self.p.dx + py / self.p.dy
    }

    /// (Lx + Ly) u into `out`.
    fn diffusion(&mut self, u: &[f64], out: &mut [f64]) {
        let (nx, ny) = (self.nx, self.ny);
        let s = &mut self.s;
        self.x.laplacian(u, out);
        transpose(u, ny, nx, &mut s.ut);
        self.y.laplacian(&s.ut, &mut s.lyt);
        add_transposed(out, &s.lyt, ny, nx);
    }

    /// u ≈ (I − c(Lx + Ly))⁻¹ r by ADI_SWEEPS defect-correction sweeps from 0 (the first
    /// sweep's defect is r itself).
    fn implicit_solve(&mut self, c: f64, r: &mut [f64]) {
        let (nx, ny) = (self.nx, self.ny);
        self.x.prepare(c);
        self.y.prepare(c);
        let mut u = std::mem::take(&mut self.s.u);
        let mut lap = std::mem::take(&mut self.s.lap);
        u.fill(0.0);
        for sweep in 0..ADI_SWEEPS {
            if sweep > 0 {
                self.diffusion(&u, &mut lap);
            }
            let s = &mut self.s;
            if sweep == 0 {
                s.defect.copy_from_slice(r);
            } else {
                s.defect
                    .par_iter_mut()
                    .zip(r.par_iter())
                    .zip(u.par_iter().zip(lap.par_iter()))
                    .for_each(|((dd, &rr), (&uu, &ll))| *dd = rr - (uu - c * ll));
            }
            // x then y
            self.x.solve(&s.defect, &mut s.t1);
            transpose(&s.t1, ny, nx, &mut s.t2);
            self.y.solve(&s.t2, &mut s.t1);
            if SYMMETRISED {
                transpose(&s.t1, nx, ny, &mut s.xy);
                // y then x
                transpose(&s.defect, ny, nx, &mut s.t1);
                self.y.solve(&s.t1, &mut s.t2);
                transpose(&s.t2, nx, ny, &mut s.t1);
                self.x.solve(&s.t1, &mut s.yx);
                let (xy, yx) = (&s.xy, &s.yx);
                u.par_iter_mut().zip(xy.par_iter().zip(yx.par_iter())).for_each(|(uu, (&a, &b))| *uu += 0.5 * (a + b));
            } else {
                add_transposed(&mut u, &s.t1, ny, nx);
            }
        }
        r.copy_from_slice(&u);
        self.s.u = u;
        self.s.lap = lap;
    }
}

fn validate(f: &[f64], g: &[f64], nodes: &[u8], nt: usize, ny: usize, nx: usize, p: &Hjb2dParams) -> KernelResult<()> {
    if nx < MIN_NODES || ny < MIN_NODES {
        return Err(KernelError(format!("g must have at least {MIN_NODES} nodes along each axis, got ({ny}, {nx})")));
    }
    if g.len() != ny * nx || nodes.len() != ny * nx {
        return Err(KernelError("g and nodes must have shape (ny, nx)".into()));
    }
    if nt < 2 || f.len() != nt * ny * nx {
        return Err(KernelError(format!("f must have shape (nt, ny, nx) with nt >= 2 and (ny, nx) = ({ny}, {nx})")));
    }
    if nodes.iter().any(|&k| k > EXIT) {
        return Err(KernelError("nodes must hold only 0 (free), 1 (obstacle) and 2 (exit)".into()));
    }
    check_positive("dx", p.dx)?;
    check_positive("dy", p.dy)?;
    check_non_negative("sigma", p.sigma)?;
    check_positive("T", p.horizon)?;
    check_positive("eps", p.eps)?;
    check_positive("cfl", p.cfl)?;
    check_finite("f", f)?;
    check_finite("g", g)
}

/// u at the nt output times, row-major (nt, ny, nx), for the running cost `f` (nt, ny, nx),
/// terminal cost `g` (ny, nx) and node kinds `nodes` (ny, nx) (checked by the facade: exits
/// on "reflect" boundary nodes only, one free node at least); `min_substeps` the floors.
#[allow(clippy::too_many_arguments)]
pub fn hjb_backward_2d(
    f: &[f64],
    g: &[f64],
    nodes: &[u8],
    nt: usize,
    ny: usize,
    nx: usize,
    p: &Hjb2dParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Marching> {
    validate(f, g, nodes, nt, ny, nx, p)?;
    let floor = floors(min_substeps, nt - 1)?;
    // on a Rayon worker: the many short parallel loops of a sub-step then start without the
    // hand-over from a foreign thread (futex waits took ~20 % of a single-thread march)
    rayon::scope(|_| march(f, g, nodes, nt, ny, nx, p, &floor))
}

#[allow(clippy::too_many_arguments)]
fn march(
    f: &[f64],
    g: &[f64],
    nodes: &[u8],
    nt: usize,
    ny: usize,
    nx: usize,
    p: &Hjb2dParams,
    floor: &[usize],
) -> KernelResult<Marching> {
    let size = nx * ny;
    let mut grid = Grid::new(nodes, ny, nx, p);
    let dt_out = p.horizon / (nt - 1) as f64;
    let mut out = Marching::new(nt, size);
    let mut u: Vec<f64> = g.iter().zip(&grid.free).map(|(&x, &fr)| if fr { x } else { 0.0 }).collect();
    out.row_mut(nt - 1, size).copy_from_slice(&u);
    for j in (0..nt - 1).rev() {
        let f_lo = &f[j * size..(j + 1) * size];
        let f_hi = &f[(j + 1) * size..(j + 2) * size];
        match interval(&mut grid, &u, f_hi, f_lo, dt_out, floor[j], j) {
            Ok((v, k)) => {
                u = v;
                out.substeps[j] = k;
            }
            Err(reason) => {
                out.diverged = Some(reason);
                return Ok(out);
            }
        }
        if !u.iter().all(|x| x.is_finite()) {
            out.diverged = Some(format!("HJB 2-D: u is not finite at t = {}", j as f64 * dt_out));
            return Ok(out);
        }
        out.row_mut(j, size).copy_from_slice(&u);
    }
    Ok(out)
}

/// ARS(4,4,3) in k equal sub-steps over one output interval, restarted as in 1-D; `Err` with
/// the reason when the sub-step collapses.
fn interval(
    grid: &mut Grid,
    u: &[f64],
    f_hi: &[f64],
    f_lo: &[f64],
    dt_out: f64,
    floor: usize,
    j: usize,
) -> Result<(Vec<f64>, usize), String> {
    let p = grid.p;
    let collapsed = || format!("HJB 2-D near t = {}: the CFL sub-step collapsed", j as f64 * dt_out);
    let limit = |rate: f64| p.cfl / rate;
    let half_var = 0.5 * p.sigma * p.sigma;
    let mut e_start = grid.zeros();
    let rate_start = grid.explicit(u, (f_hi, f_lo, 0.0), &mut e_start);
    let (mut k, _) = substeps(dt_out, limit(rate_start), floor).ok_or_else(collapsed)?;
    let mut e: [Vec<f64>; 4] = std::array::from_fn(|_| grid.zeros());
    let mut li: [Vec<f64>; 3] = std::array::from_fn(|_| grid.zeros());
    let mut stage = grid.zeros();
    loop {
        let dt = dt_out / k as f64;
        let dtheta = 1.0 / k as f64;
        let c = ARS_GAMMA * dt * half_var;
        let mut v = u.to_vec();
        let mut failed = None;
        for s in 0..k {
            let theta = s as f64 / k as f64;
            let rate = if s == 0 {
                e[0].copy_from_slice(&e_start);
                rate_start
            } else {
                grid.explicit(&v, (f_hi, f_lo, theta), &mut e[0])
            };
            let allowed = limit(rate);
            if dt > 2.0 * allowed || allowed.is_nan() {
                failed = Some(allowed);
                break;
            }
            for st in 1..=4 {
                let (ae, ai) = (&ARS_EXPLICIT[st - 1], &ARS_IMPLICIT[st - 1]);
                let (e_ref, li_ref) = (&e, &li);
                stage.par_iter_mut().enumerate().for_each(|(i, x)| {
                    let mut acc = 0.0;
                    for jj in 0..st {
                        acc += ae[jj] * e_ref[jj][i];
                    }
                    for jj in 1..st {
                        acc += ai[jj - 1] * li_ref[jj - 1][i];
                    }
                    *x = v[i] + dt * acc;
                });
                if p.sigma > 0.0 {
                    grid.implicit_solve(c, &mut stage);
                }
                if st < 4 {
                    grid.explicit(&stage, (f_hi, f_lo, theta + ARS_C[st] * dtheta), &mut e[st]);
                    let l = &mut li[st - 1];
                    grid.diffusion(&stage, l);
                    l.par_iter_mut().for_each(|x| *x *= half_var);
                }
            }
            v.copy_from_slice(&stage);
        }
        let allowed = match failed {
            Some(a) => a,
            None => {
                let a = limit(grid.explicit(&v, (f_hi, f_lo, 1.0), &mut stage));
                if !(dt > 2.0 * a || a.is_nan()) {
                    return Ok((v, k));
                }
                a
            }
        };
        let wanted = if allowed > 0.0 { dt_out / allowed } else { f64::INFINITY };
        k = more_substeps(k, wanted).ok_or_else(collapsed)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_their_ends() {
        let kinds = [EXIT, FREE, OBSTACLE, FREE, FREE, FREE, OBSTACLE, FREE];
        let r = line_runs(&kinds, false);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].1, r[0].2), (End::Exit, End::Face));
        assert_eq!((r[2].1, r[2].2), (End::Face, End::Wall));
        let kinds = [FREE, OBSTACLE, FREE, FREE, FREE, FREE, FREE, FREE];
        let r = line_runs(&kinds, true);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, vec![2, 3, 4, 5, 6, 7, 0]);
        assert_eq!(line_runs(&[FREE; 6], true)[0].1, End::Cyclic);
    }

    #[test]
    fn ghosts_follow_the_rules() {
        let vals = [1.0, 2.0, 4.0, 7.0];
        let eval =
            |ext: &[Combo]| -> Vec<f64> { ext.iter().map(|c| c.iter().map(|&(q, w)| w * vals[q]).sum()).collect() };
        let e = eval(&ghost_coefficients(4, End::Wall, End::Face));
        assert_eq!(e, vec![7.0, 4.0, 2.0, 1.0, 2.0, 4.0, 7.0, 7.0, 4.0, 2.0]);
        let e = eval(&ghost_coefficients(4, End::Exit, End::Wall));
        assert_eq!(&e[..3], &[2.0 - 7.0, 2.0 - 4.0, 2.0 - 2.0]);
        // a short run folds repeatedly without leaving the run
        let e = eval(&ghost_coefficients(2, End::Wall, End::Wall));
        assert_eq!(e, vec![2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]);
    }

    #[test]
    fn a_constant_cost_accrues_exactly() {
        // g = 1, f = 2 everywhere: u(t) = 1 + 2(T − t) (no slopes, no curvature)
        let (nx, ny, nt) = (7, 6, 3);
        let p = Hjb2dParams {
            dx: 0.1,
            dy: 0.2,
            sigma: 0.3,
            horizon: 1.0,
            bc: [Boundary::Reflect, Boundary::Periodic],
            variant: Variant::Js,
            eps: 1e-6,
            cfl: 0.4,
        };
        let out =
            hjb_backward_2d(&vec![2.0; nt * nx * ny], &vec![1.0; nx * ny], &vec![FREE; nx * ny], nt, ny, nx, &p, None)
                .expect("a valid problem");
        for (j, row) in out.values.chunks(nx * ny).enumerate() {
            let want = 1.0 + 2.0 * (1.0 - j as f64 * 0.5);
            assert!(row.iter().all(|&u| (u - want).abs() < 1e-14), "t index {j}");
        }
    }
}

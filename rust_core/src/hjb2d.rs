//! The 2-D HJB equation of the MFG marched backward in time: HJ-WENO5 derivatives per run of
//! every row (∂x) and column (∂y) with the ghost rules of SPEC2D, the separable Godunov
//! Hamiltonian, Δ₄ diffusion, ARS(4,4,3) with the implicit stages solved by K = 2 ADI
//! defect-correction sweeps, x then y (pentadiagonal solves per run, `banded`, factored once
//! per output interval), CFL sub-steps as in 1-D.
//!
//! The maths: see mfg_ensemble/kernels/reference/hjb2d.py (this module follows it operation
//! for operation). A stage is four passes over groups of lines, rows and columns alternately,
//! each pass one Rayon loop (see `Grid`); every line is computed by the same operations
//! whatever the thread count (bit-identical results).

use rayon::prelude::*;

use crate::banded::{CyclicPenta, Lanes, Penta, LANES};
use crate::boundary::Boundary;
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::grid2d::{EXIT, FREE, OBSTACLE};
use crate::hjb::{godunov, more_substeps, ARS_C, ARS_EXPLICIT, ARS_GAMMA, ARS_IMPLICIT};
use crate::simd::{self, Kernel};
use crate::substeps::{floors, substeps, Marching};
use crate::weno::{derivatives_extended_into, weno_combine, Variant, Workspace, MIN_NODES};

/// K, the defect-correction sweeps of each implicit stage.
pub const ADI_SWEEPS: usize = 2;
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

/// One run: its nodes (indices in the line), its ghosts' combinations, Δ₄·12d² as five (wrapped,
/// for a cyclic run) diagonals, which nodes are free.
struct Run {
    idx: Vec<usize>,
    /// the line's nodes `span .. span + len` when the run is one unwrapped stretch of them
    span: Option<usize>,
    /// the six ghosts' combinations (left 3, right 3, outermost first) as terms (node of the
    /// line, coefficient), ghost g's at `ghosts[ghost_at[g]..ghost_at[g + 1]]`
    ghosts: Vec<(usize, f64)>,
    ghost_at: [usize; 7],
    lap: [Vec<f64>; 5],
    free: Vec<bool>,
    /// the run positions that are not free (exits: obstacles are in no run)
    exits: Vec<usize>,
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
    /// per line, its obstacle nodes (in no run) and its nodes that are not free (obstacles and
    /// exits): the nodes a pass sets to 0 instead of filling the whole line with 0 first
    holes: Vec<Vec<usize>>,
    fixed: Vec<Vec<usize>>,
    solver: Option<Solver>,
}

/// The factors of I − cΔ₄ for one c: per line its runs' (for a cyclic run's correction), and
/// per group of lines its runs, in order, side by side `LANES` at a time.
struct Solver {
    c: f64,
    factors: Vec<Vec<Factor>>,
    batches: Vec<Vec<Batch>>,
}

/// Up to `LANES` runs of a group, (line in the group, run in the line), and their band factors
/// side by side.
struct Batch {
    runs: Vec<(usize, usize)>,
    lanes: Lanes,
}

/// The extended run of `line`: the run's values copied (their combinations are the identity:
/// 1·x is x, up to the sign of a zero) and the six ghosts combined.
fn fill_ext(run: &Run, line: &[f64], e: &mut Vec<f64>) {
    let ghost = |g: usize| {
        let mut acc = 0.0;
        for &(i, c) in &run.ghosts[run.ghost_at[g]..run.ghost_at[g + 1]] {
            acc += c * line[i];
        }
        acc
    };
    let len = run.idx.len();
    e.resize(len + 6, 0.0);
    for g in 0..3 {
        e[g] = ghost(g);
        e[len + 3 + g] = ghost(3 + g);
    }
    match run.span {
        Some(a) => e[3..len + 3].copy_from_slice(&line[a..a + len]),
        None => {
            for (x, &i) in e[3..len + 3].iter_mut().zip(&run.idx) {
                *x = line[i];
            }
        }
    }
}

/// The buffers of one task of a pass: a group's gathered lines, its other inputs, the WENO
/// scratch and one line's Ĥ and Δ₄.
#[derive(Default)]
struct Work {
    e: Vec<f64>,
    rm: Vec<f64>,
    rp: Vec<f64>,
    ws: Workspace,
    lines: Vec<f64>,
    other: Vec<f64>,
    other2: Vec<f64>,
    rhs: Vec<f64>,
    solved: Vec<f64>,
    buf: Vec<f64>,
    h: Vec<f64>,
    l: Vec<f64>,
}

thread_local! {
    /// The work buffers of the passes' tasks on this thread, kept from pass to pass (a task
    /// allocated and zeroed its own before; with two threads a pass has several tasks).
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::new(Work::default());
}

/// `f` with this thread's work buffers (fresh ones if a task of a pass runs inside another
/// on this thread, which a nested parallel loop allows).
#[inline(always)]
fn with_work<R>(f: impl FnOnce(&mut Work) -> R) -> R {
    WORK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut w) => f(&mut w),
        Err(_) => f(&mut Work::default()),
    })
}

/// `out[i] = 0` for the nodes `at`.
#[inline(always)]
fn zero(out: &mut [f64], at: &[usize]) {
    for &i in at {
        out[i] = 0.0;
    }
}

/// The largest |d⁻|, |d⁺| over the free nodes (0 if none; NaN propagated), in `LANES` running
/// maxima (the largest of a set is the same in any order).
#[inline(always)]
fn largest_slope(free: &[bool], dm: &[f64], dp: &[f64]) -> f64 {
    let mut acc = [0.0_f64; LANES];
    let (f, m, p) = (free.chunks_exact(LANES), dm.chunks_exact(LANES), dp.chunks_exact(LANES));
    let rest = (f.remainder(), m.remainder(), p.remainder());
    for ((f, m), p) in f.zip(m).zip(p) {
        let (f, m, p): (&[bool; LANES], &[f64; LANES], &[f64; LANES]) =
            (f.try_into().expect("a chunk"), m.try_into().expect("a chunk"), p.try_into().expect("a chunk"));
        for k in 0..LANES {
            let x = max_nan(m[k].abs(), p[k].abs());
            acc[k] = max_nan(acc[k], if f[k] { x } else { 0.0 });
        }
    }
    for (((a, &f), &m), &p) in acc.iter_mut().zip(rest.0).zip(rest.1).zip(rest.2) {
        let x = max_nan(m.abs(), p.abs());
        *a = max_nan(*a, if f { x } else { 0.0 });
    }
    acc.into_iter().fold(0.0, max_nan)
}

/// Δ₄·`inv` of an extended run `e` at every node of `out` (p + 3 in `e` for node p), for
/// `simd::dispatch`.
struct Laplacian<'a> {
    e: &'a [f64],
    inv: f64,
    out: &'a mut [f64],
}

impl Kernel for Laplacian<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for (x, w) in self.out.iter_mut().zip(self.e[1..].windows(5)) {
            *x = lap5(w, self.inv);
        }
    }
}

/// Δ₄ at the middle of the five values `w`, times `inv` = 1/(12d²).
#[inline(always)]
fn lap5(w: &[f64], inv: f64) -> f64 {
    (-w[4] + 16.0 * w[3] - 30.0 * w[2] + 16.0 * w[1] - w[0]) * inv
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

/// Lines `first .. first + count` of the transpose of `src` (shape (a, b), row-major) into
/// `out` (count × a, count = out.len() / a): out[s·a + q] = src[q·b + first + s].
#[inline(always)]
fn gather(src: &[f64], a: usize, b: usize, first: usize, out: &mut [f64]) {
    let count = out.len() / a;
    for q in 0..a {
        let row = &src[q * b + first..q * b + first + count];
        for (s, &x) in row.iter().enumerate() {
            out[s * a + q] = x;
        }
    }
}

/// `gather` into a work vector, sized to count × a (its old values all overwritten).
#[inline(always)]
fn gather_into(src: &[f64], a: usize, b: usize, first: usize, count: usize, out: &mut Vec<f64>) {
    out.resize(count * a, 0.0);
    gather(src, a, b, first, out);
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
                        let free: Vec<bool> = idx.iter().map(|&i| line[i] == FREE).collect();
                        let span = idx.windows(2).all(|w| w[1] == w[0] + 1).then_some(idx[0]);
                        let mut ghost_at = [0; 7];
                        let mut ghosts = Vec::new();
                        for (g, combo) in ext[..3].iter().chain(&ext[len + 3..]).enumerate() {
                            ghosts.extend(combo.iter().map(|&(q, c)| (idx[q], c)));
                            ghost_at[g + 1] = ghosts.len();
                        }
                        let exits = (0..len).filter(|&p| !free[p]).collect();
                        Run { idx, span, ghosts, ghost_at, lap, free, exits, cyclic }
                    })
                    .collect()
            })
            .collect();
        let of_kind = |keep: fn(u8) -> bool| -> Vec<Vec<usize>> {
            (0..nl).map(|j| (0..n).filter(|&i| keep(kinds[j * n + i])).collect()).collect()
        };
        let (holes, fixed) = (of_kind(|k| k == OBSTACLE), of_kind(|k| k != FREE));
        Lines { n, d, runs, holes, fixed, solver: None }
    }

    /// This direction's part of Ĥ on line `j` (values `line`), ½ max(max(d⁻, 0)², min(d⁺, 0)²),
    /// into `h` (0 at obstacle nodes), and with `lap` its `laplacian` from the same ghosts;
    /// returns the largest |d⁻|, |d⁺| over its free nodes (NaN propagated).
    #[allow(clippy::too_many_arguments)]
    fn hamiltonian(
        &self,
        j: usize,
        line: &[f64],
        variant: Variant,
        eps: f64,
        w: &mut Work,
        h: &mut [f64],
        mut lap: Option<&mut [f64]>,
    ) -> f64 {
        zero(h, &self.holes[j]);
        if let Some(l) = lap.as_deref_mut() {
            zero(l, &self.fixed[j]);
        }
        let Work { e, rm, rp, ws, .. } = w;
        let inv_d = 1.0 / self.d;
        let mut pmax = 0.0_f64;
        for run in &self.runs[j] {
            fill_ext(run, line, e);
            if let Some(l) = lap.as_deref_mut() {
                self.laplacian_run(run, e, l);
            }
            let len = run.idx.len();
            rm.resize(len, 0.0);
            rp.resize(len, 0.0);
            if len >= MIN_NODES {
                // the SIMD blocks of the 1-D kernel: the same bits as the scalar form below
                derivatives_extended_into(e, self.d, variant, eps, rm, rp, ws);
            } else {
                for p in 0..len {
                    let w: [f64; 6] = std::array::from_fn(|t| (e[p + t + 1] - e[p + t]) * inv_d);
                    rm[p] = weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps);
                    rp[p] = weno_combine([w[5], w[4], w[3], w[2], w[1]], variant, eps);
                }
            }
            match run.span {
                Some(a) => {
                    for ((x, &m), &pl) in h[a..a + len].iter_mut().zip(rm.iter()).zip(rp.iter()) {
                        *x = godunov(m, pl);
                    }
                }
                None => {
                    for ((&i, &m), &pl) in run.idx.iter().zip(rm.iter()).zip(rp.iter()) {
                        h[i] = godunov(m, pl);
                    }
                }
            }
            pmax = max_nan(pmax, largest_slope(&run.free, rm, rp));
        }
        pmax
    }

    /// Δ₄ of line `j` (values `line`) on its free nodes (0 elsewhere) into `out`; times
    /// 1/(12d²) where the reference divides by 12d² (≤ 1 ulp).
    fn laplacian(&self, j: usize, line: &[f64], e: &mut Vec<f64>, out: &mut [f64]) {
        zero(out, &self.fixed[j]);
        for run in &self.runs[j] {
            fill_ext(run, line, e);
            self.laplacian_run(run, e, out);
        }
    }

    /// Δ₄ of one run from its extended values `e` into the run's nodes of `out` (0 at its exits).
    #[inline]
    fn laplacian_run(&self, run: &Run, e: &[f64], out: &mut [f64]) {
        let inv = 1.0 / (12.0 * (self.d * self.d));
        match run.span {
            // every node, then 0 at the run's exits (no branch in the loop: it vectorises)
            Some(a) => {
                let out = &mut out[a..a + run.idx.len()];
                simd::dispatch(Laplacian { e, inv, out: &mut *out });
                zero(out, &run.exits);
            }
            // the free nodes (`out` is 0 at the others: `laplacian`, `hamiltonian`)
            None => {
                for (p, (&i, &fr)) in run.idx.iter().zip(&run.free).enumerate() {
                    if fr {
                        out[i] = lap5(&e[p + 1..p + 6], inv);
                    }
                }
            }
        }
    }

    /// The factors of I − cΔ₄ per run (identity rows at non-free nodes), kept for the last c.
    fn prepare(&mut self, c: f64) {
        if self.solver.as_ref().is_some_and(|sv| sv.c == c) {
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
            .collect::<Vec<Vec<Factor>>>();
        let batches = (0..self.runs.len().div_ceil(GROUP))
            .into_par_iter()
            .map(|gi| {
                let lines = GROUP.min(self.runs.len() - gi * GROUP);
                let all: Vec<(usize, usize)> =
                    (0..lines).flat_map(|s| (0..self.runs[gi * GROUP + s].len()).map(move |q| (s, q))).collect();
                all.chunks(LANES)
                    .map(|runs| {
                        let bands: Vec<&Penta> = runs
                            .iter()
                            .map(|&(s, q)| match &factors[gi * GROUP + s][q] {
                                Factor::Band(f) => f,
                                Factor::Cyclic(f) => f.band(),
                            })
                            .collect();
                        Batch { runs: runs.to_vec(), lanes: Lanes::new(&bands) }
                    })
                    .collect()
            })
            .collect();
        self.solver = Some(Solver { c, factors, batches });
    }

    /// (I − cΔ₄)⁻¹ r of the lines of group `gi` (lines GROUP·gi …; `r` and `out` hold them one
    /// after the other), run by run (0 at obstacle nodes), after `prepare(c)`: the group's runs,
    /// `LANES` at a time side by side (`Lanes::solve`: each run's operations), then a cyclic
    /// run's correction.
    fn solve(&self, gi: usize, r: &[f64], out: &mut [f64], buf: &mut Vec<f64>) {
        let n = self.n;
        self.solve_from(gi, |l, i| r[l * n + i], out, buf);
    }

    /// `solve` with the lines' values read as `get(line in the group, node)`: a column pass
    /// reads its columns straight from the row-held array (`get(l, i)` = src[i·nx + first + l]),
    /// without gathering them first.
    #[inline(always)]
    fn solve_from(&self, gi: usize, get: impl Fn(usize, usize) -> f64, out: &mut [f64], buf: &mut Vec<f64>) {
        let n = self.n;
        let solver = self.solver.as_ref().expect("prepared");
        let first = gi * GROUP;
        for (l, o) in out.chunks_mut(n).enumerate() {
            zero(o, &self.holes[first + l]);
        }
        let mut one = Vec::new();
        for batch in &solver.batches[gi] {
            buf.clear();
            buf.resize(batch.lanes.len() * LANES, 0.0);
            for (s, &(l, q)) in batch.runs.iter().enumerate() {
                let run = &self.runs[first + l][q];
                match run.span {
                    Some(a) => {
                        for p in 0..run.idx.len() {
                            buf[p * LANES + s] = get(l, a + p);
                        }
                    }
                    None => {
                        for (p, &i) in run.idx.iter().enumerate() {
                            buf[p * LANES + s] = get(l, i);
                        }
                    }
                }
            }
            batch.lanes.solve(buf);
            for (s, &(l, q)) in batch.runs.iter().enumerate() {
                let run = &self.runs[first + l][q];
                let o = &mut out[l * n..(l + 1) * n];
                if let Factor::Cyclic(f) = &solver.factors[first + l][q] {
                    one.clear();
                    one.extend((0..run.idx.len()).map(|p| buf[p * LANES + s]));
                    f.correct(&mut one);
                    for (&i, &v) in run.idx.iter().zip(&one) {
                        o[i] = v;
                    }
                } else if let Some(a) = run.span {
                    for (p, x) in o[a..a + run.idx.len()].iter_mut().enumerate() {
                        *x = buf[p * LANES + s];
                    }
                } else {
                    for (p, &i) in run.idx.iter().enumerate() {
                        o[i] = buf[p * LANES + s];
                    }
                }
            }
        }
    }
}

/// Lines go in fixed groups of eight, the unit of a parallel task (measured at 101²: 4 lines
/// 3 % slower on one and two threads, 2 lines 20 %).
const GROUP: usize = 8;

/// What a column pass makes of its gathered columns y: the value is y as it is (no implicit
/// solve: σ = 0, or the start of an interval), the first ADI sweep's 0 + (I − cLy)⁻¹y, or a
/// later sweep's U + (I − cLy)⁻¹y.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Columns {
    Copy,
    First,
    Add,
}

/// The x lines (rows) and y lines (columns) of the grid, and the work arrays of a march
/// (allocated once). Arrays named `*_t` are held by columns, (nx, ny); the others by rows.
///
/// One sub-step stage is four passes over the lines, each one parallel loop over groups of
/// `GROUP` lines (the barriers the dimension splitting needs, and no others): rows (the previous
/// stage's Ĥx, Δx completing its E and I, the stage's right side R and the first sweep's x
/// solve), columns (the y solve, and Δy of the sweep's U), rows (the second sweep's defect and
/// x solve), columns (its y solve; Ĥy and Δy of the stage value). A pass reads the other
/// layout's arrays by gathering a group's lines; each line's operations are those of the
/// reference in its order, whatever the thread count.
struct Grid {
    nx: usize,
    ny: usize,
    x: Lines,
    y: Lines,
    free: Vec<bool>,
    p: Hjb2dParams,
    /// the stage value (U of the ADI sweeps), by columns
    w_t: Vec<f64>,
    /// Ĥy and Δy of `w_t`
    hy_t: Vec<f64>,
    ly_t: Vec<f64>,
    /// the sub-step's start value, the stage's right side R, the x solve's output
    v: Vec<f64>,
    r: Vec<f64>,
    t1: Vec<f64>,
    /// E and I of the stages (ARS), and a sink for outputs a pass does not need
    e: [Vec<f64>; 4],
    li: [Vec<f64>; 3],
    sink: Vec<f64>,
}

/// The data of one stage's row pass.
struct Stage<'a> {
    /// the stage (1 … 4): it completes E of stage − 1 (and I, from stage 2)
    st: usize,
    dt: f64,
    /// θ of stage − 1's E
    theta: f64,
    f_hi: &'a [f64],
    f_lo: &'a [f64],
    /// whether to solve the x factor (σ > 0)
    solve: bool,
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
            w_t: z(),
            hy_t: z(),
            ly_t: z(),
            v: z(),
            r: z(),
            t1: z(),
            e: std::array::from_fn(|_| z()),
            li: std::array::from_fn(|_| z()),
            sink: z(),
        }
    }

    /// The column pass: `w_t` from `src` (by rows: R, or the x solve's output) as `how` says,
    /// then Δy of each column into `ly_t` and, if `last` (the stage value is final), Ĥy into
    /// `hy_t`; returns the largest |dy±| over the free nodes (0 unless `last`).
    fn columns(&mut self, src: Src, how: Columns, last: bool) -> f64 {
        let (nx, ny, p) = (self.nx, self.ny, self.p);
        let (ylines, src) = (
            &self.y,
            match src {
                Src::R => &self.r,
                Src::T1 => &self.t1,
                Src::V => &self.v,
            },
        );
        let chunk = GROUP * ny;
        (self.w_t.par_chunks_mut(chunk), self.ly_t.par_chunks_mut(chunk), self.hy_t.par_chunks_mut(chunk))
            .into_par_iter()
            .enumerate()
            .map(|(gi, (w_t, ly_t, hy_t))| {
                with_work(|w| {
                    let count = w_t.len() / ny;
                    let first = gi * GROUP;
                    if how == Columns::Copy {
                        gather(src, ny, nx, first, w_t);
                    } else {
                        let mut solved = std::mem::take(&mut w.solved);
                        solved.resize(w_t.len(), 0.0);
                        ylines.solve_from(gi, |l, i| src[i * nx + first + l], &mut solved, &mut w.buf);
                        for (u, &y) in w_t.iter_mut().zip(&solved) {
                            *u = if how == Columns::First { 0.0 + y } else { *u + y };
                        }
                        w.solved = solved;
                    }
                    let mut pmax = 0.0_f64;
                    for s in 0..count {
                        let (i, col, l) = (gi * GROUP + s, &w_t[s * ny..(s + 1) * ny], &mut ly_t[s * ny..(s + 1) * ny]);
                        if last {
                            let h = &mut hy_t[s * ny..(s + 1) * ny];
                            pmax = max_nan(pmax, ylines.hamiltonian(i, col, p.variant, p.eps, w, h, Some(l)));
                        } else {
                            ylines.laplacian(i, col, &mut w.e, l);
                        }
                    }
                    pmax
                })
            })
            .reduce(|| 0.0, max_nan)
    }

    /// The row pass of a stage (see `Stage`): the rows of the previous stage's value (`w_t`;
    /// the sub-step's start value, copied to `v`, at stage 1), its E = f(θ) − Ĥ and, from stage
    /// 2, I = (σ²/2)(Δx + Δy); R = v + dt Σ(aE + âI) into `r`; the first ADI sweep's x solve of
    /// R into `t1`. Returns the largest |dx±| over the free nodes.
    fn stage_rows(&mut self, a: &Stage) -> f64 {
        let (nx, ny, p) = (self.nx, self.ny, self.p);
        let (st, half_var) = (a.st, 0.5 * p.sigma * p.sigma);
        let (ae, ai) = (&ARS_EXPLICIT[st - 1], &ARS_IMPLICIT[st - 1]);
        let (e_done, e_rest) = self.e.split_at_mut(st - 1);
        let (li_done, li_rest) = self.li.split_at_mut(st.saturating_sub(2));
        let e_out = &mut e_rest[0];
        let li_out = if st >= 2 { &mut li_rest[0] } else { &mut self.sink };
        let (xlines, free, w_t, hy_t, ly_t) = (&self.x, &self.free, &self.w_t, &self.hy_t, &self.ly_t);
        let chunk = GROUP * nx;
        (
            self.v.par_chunks_mut(chunk),
            e_out.par_chunks_mut(chunk),
            li_out.par_chunks_mut(chunk),
            self.r.par_chunks_mut(chunk),
            self.t1.par_chunks_mut(chunk),
        )
            .into_par_iter()
            .enumerate()
            .map(|(gi, (v, e_out, li_out, r, t1))| {
                with_work(|w| {
                    let count = v.len() / nx;
                    let j0 = gi * GROUP;
                    let (mut lines, mut hy, mut ly) =
                        (std::mem::take(&mut w.lines), std::mem::take(&mut w.other), std::mem::take(&mut w.other2));
                    gather_into(w_t, nx, ny, j0, count, &mut lines);
                    gather_into(hy_t, nx, ny, j0, count, &mut hy);
                    if st >= 2 {
                        gather_into(ly_t, nx, ny, j0, count, &mut ly);
                    }
                    if st == 1 {
                        v.copy_from_slice(&lines);
                    }
                    let (mut h, mut l) = (std::mem::take(&mut w.h), std::mem::take(&mut w.l));
                    h.resize(nx, 0.0);
                    l.resize(nx, 0.0);
                    let mut pmax = 0.0_f64;
                    for s in 0..count {
                        let (j, row) = (j0 + s, s * nx..(s + 1) * nx);
                        let lap = if st >= 2 { Some(&mut l[..]) } else { None };
                        pmax =
                            max_nan(pmax, xlines.hamiltonian(j, &lines[row.clone()], p.variant, p.eps, w, &mut h, lap));
                        // row by row, each loop one operation over the row (they vectorise), each
                        // node's operations those of the reference in its order
                        let at = j * nx..(j + 1) * nx;
                        let (free, f_hi, f_lo, hy) =
                            (&free[at.clone()], &a.f_hi[at.clone()], &a.f_lo[at.clone()], &hy[row.clone()]);
                        for (i, x) in e_out[row.clone()].iter_mut().enumerate() {
                            *x = if free[i] {
                                let h = h[i] + hy[i];
                                let f = (1.0 - a.theta) * f_hi[i] + a.theta * f_lo[i];
                                f - h
                            } else {
                                0.0
                            };
                        }
                        if st >= 2 {
                            for ((x, &lx), &ly) in li_out[row.clone()].iter_mut().zip(l.iter()).zip(&ly[row.clone()]) {
                                *x = (lx + ly) * half_var;
                            }
                        }
                        // R = v + dt Σ(aE + âI): the sum accumulated in r from 0, term by term
                        let acc = &mut r[row.clone()];
                        acc.fill(0.0);
                        for (jj, &c) in ae.iter().enumerate().take(st) {
                            let term = if jj == st - 1 { &e_out[row.clone()] } else { &e_done[jj][at.clone()] };
                            for (x, &y) in acc.iter_mut().zip(term) {
                                *x += c * y;
                            }
                        }
                        for jj in 1..st {
                            let term = if jj == st - 1 { &li_out[row.clone()] } else { &li_done[jj - 1][at.clone()] };
                            for (x, &y) in acc.iter_mut().zip(term) {
                                *x += ai[jj - 1] * y;
                            }
                        }
                        for (x, &v) in acc.iter_mut().zip(&v[row.clone()]) {
                            *x = v + a.dt * *x;
                        }
                    }
                    if a.solve {
                        xlines.solve(gi, r, t1, &mut w.buf);
                    }
                    (w.lines, w.other, w.other2, w.h, w.l) = (lines, hy, ly, h, l);
                    pmax
                })
            })
            .reduce(|| 0.0, max_nan)
    }

    /// The row pass of a later ADI sweep: the defect D = R − (U − c(ΔxU + ΔyU)) of the rows of
    /// U = `w_t` (its Δy in `ly_t`) and its x solve into `t1`.
    fn defect_rows(&mut self, c: f64) {
        let (nx, ny) = (self.nx, self.ny);
        let (xlines, w_t, ly_t, r) = (&self.x, &self.w_t, &self.ly_t, &self.r);
        let chunk = GROUP * nx;
        self.t1.par_chunks_mut(chunk).enumerate().for_each(|(gi, t1)| {
            with_work(|w| {
                let count = t1.len() / nx;
                let j0 = gi * GROUP;
                let (mut lines, mut ly, mut d, mut l) = (
                    std::mem::take(&mut w.lines),
                    std::mem::take(&mut w.other),
                    std::mem::take(&mut w.rhs),
                    std::mem::take(&mut w.l),
                );
                gather_into(w_t, nx, ny, j0, count, &mut lines);
                gather_into(ly_t, nx, ny, j0, count, &mut ly);
                d.resize(lines.len(), 0.0);
                l.resize(nx, 0.0);
                for s in 0..count {
                    let (j, row) = (j0 + s, s * nx..(s + 1) * nx);
                    xlines.laplacian(j, &lines[row.clone()], &mut w.e, &mut l);
                    let at = j * nx..(j + 1) * nx;
                    for ((((x, &r), &u), &lx), &ly) in
                        d[row.clone()].iter_mut().zip(&r[at]).zip(&lines[row.clone()]).zip(l.iter()).zip(&ly[row])
                    {
                        let lap = lx + ly;
                        *x = r - (u - c * lap);
                    }
                }
                xlines.solve(gi, &d, t1, &mut w.buf);
                (w.lines, w.other, w.rhs, w.l) = (lines, ly, d, l);
            })
        });
    }

    /// The rows of `w_t` into `v`; returns the largest |dx±| over the free nodes.
    fn value_rows(&mut self) -> f64 {
        let (nx, ny, p) = (self.nx, self.ny, self.p);
        let (xlines, w_t) = (&self.x, &self.w_t);
        let chunk = GROUP * nx;
        (self.v.par_chunks_mut(chunk), self.sink.par_chunks_mut(chunk))
            .into_par_iter()
            .enumerate()
            .map(|(gi, (v, h))| {
                with_work(|w| {
                    let count = v.len() / nx;
                    let mut lines = std::mem::take(&mut w.lines);
                    gather_into(w_t, nx, ny, gi * GROUP, count, &mut lines);
                    v.copy_from_slice(&lines);
                    w.lines = lines;
                    (0..count)
                        .map(|s| {
                            let row = s * nx..(s + 1) * nx;
                            xlines.hamiltonian(gi * GROUP + s, &v[row.clone()], p.variant, p.eps, w, &mut h[row], None)
                        })
                        .fold(0.0, max_nan)
                })
            })
            .reduce(|| 0.0, max_nan)
    }

    /// The CFL rate px/dx + py/dy of the value in `w_t` (py its column pass's).
    fn rate(&self, px: f64, py: f64) -> f64 {
        px / self.p.dx + py / self.p.dy
    }
}

/// The row-held array a column pass reads.
#[derive(Clone, Copy)]
enum Src {
    R,
    T1,
    V,
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
    march(f, g, nodes, nt, ny, nx, p, &floor)
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
    // u by columns with its Ĥy (the start value of every try), then its Ĥx for the rate
    let start = |grid: &mut Grid| {
        grid.v.copy_from_slice(u);
        grid.columns(Src::V, Columns::Copy, true)
    };
    let py = start(grid);
    let px = grid.value_rows();
    let rate_start = grid.rate(px, py);
    let (mut k, _) = substeps(dt_out, limit(rate_start), floor).ok_or_else(collapsed)?;
    let mut first_try = true;
    loop {
        if !first_try {
            start(grid);
        }
        first_try = false;
        let dt = dt_out / k as f64;
        let dtheta = 1.0 / k as f64;
        let c = ARS_GAMMA * dt * half_var;
        let solve = p.sigma > 0.0;
        if solve {
            grid.x.prepare(c);
            grid.y.prepare(c);
        }
        let mut py = py;
        let mut failed = None;
        'steps: for s in 0..k {
            let theta = s as f64 / k as f64;
            for st in 1..=4 {
                let stage_theta = if st == 1 { theta } else { theta + ARS_C[st - 1] * dtheta };
                let px = grid.stage_rows(&Stage { st, dt, theta: stage_theta, f_hi, f_lo, solve });
                if st == 1 && s > 0 {
                    // the rate of the sub-step's start value (its E is now complete)
                    let allowed = limit(grid.rate(px, py));
                    if dt > 2.0 * allowed || allowed.is_nan() {
                        failed = Some(allowed);
                        break 'steps;
                    }
                }
                if !solve {
                    py = grid.columns(Src::R, Columns::Copy, true);
                    continue;
                }
                for sweep in 0..ADI_SWEEPS {
                    if sweep > 0 {
                        grid.defect_rows(c);
                    }
                    let how = if sweep == 0 { Columns::First } else { Columns::Add };
                    py = grid.columns(Src::T1, how, sweep + 1 == ADI_SWEEPS);
                }
            }
        }
        let allowed = match failed {
            Some(a) => a,
            None => {
                let px = grid.value_rows();
                let a = limit(grid.rate(px, py));
                if !(dt > 2.0 * a || a.is_nan()) {
                    return Ok((grid.v.clone(), k));
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

//! Linear solves with the pentadiagonal matrices of an implicit five-point stencil: banded LU
//! without pivoting, and its cyclic variant (the stencil wrapped around a period) by the
//! Sherman–Morrison–Woodbury formula.
//!
//! The maths: see mfg_ensemble/kernels/reference/banded.py.

use crate::boundary::Boundary;
use crate::simd::{self, Kernel};

/// The LU factors of a pentadiagonal matrix A (no pivoting): L unit lower triangular with the
/// multipliers `l2`, `l1` on its sub-diagonals −2, −1; U upper with `u0`, `u1`, `u2` on its
/// diagonals 0, +1, +2, and `inv0` = 1/u0, by which the back substitution multiplies (a
/// division per row was the latency chain of the 2-D HJB's line solves).
#[derive(Debug, Clone)]
pub struct Penta {
    l2: Vec<f64>,
    l1: Vec<f64>,
    u0: Vec<f64>,
    u1: Vec<f64>,
    u2: Vec<f64>,
    inv0: Vec<f64>,
}

impl Penta {
    /// Factors A given by its diagonals: row i holds `m2[i]`, `m1[i]`, `d[i]`, `p1[i]`, `p2[i]`
    /// in the columns i − 2 … i + 2 (entries outside the matrix ignored).
    pub fn factor(m2: &[f64], m1: &[f64], d: &[f64], p1: &[f64], p2: &[f64]) -> Penta {
        let n = d.len();
        let z = || vec![0.0; n];
        let mut f = Penta { l2: z(), l1: z(), u0: z(), u1: z(), u2: z(), inv0: z() };
        for i in 0..n {
            let (mut b, mut c) = (if i >= 1 { m1[i] } else { 0.0 }, d[i]);
            if i >= 2 {
                let l2 = m2[i] / f.u0[i - 2];
                b -= l2 * f.u1[i - 2];
                c -= l2 * f.u2[i - 2];
                f.l2[i] = l2;
            }
            let mut e = if i + 1 < n { p1[i] } else { 0.0 };
            if i >= 1 {
                let l1 = b / f.u0[i - 1];
                c -= l1 * f.u1[i - 1];
                e -= l1 * f.u2[i - 1];
                f.l1[i] = l1;
            }
            f.u0[i] = c;
            f.u1[i] = e;
            f.u2[i] = if i + 2 < n { p2[i] } else { 0.0 };
            f.inv0[i] = 1.0 / c;
        }
        f
    }

    /// x ← A⁻¹ x: forward substitution with L, back substitution with U.
    pub fn solve(&self, x: &mut [f64]) {
        let n = x.len();
        for i in 1..n {
            let mut y = x[i] - self.l1[i] * x[i - 1];
            if i >= 2 {
                y -= self.l2[i] * x[i - 2];
            }
            x[i] = y;
        }
        for i in (0..n).rev() {
            let mut y = x[i];
            if i + 1 < n {
                y -= self.u1[i] * x[i + 1];
            }
            if i + 2 < n {
                y -= self.u2[i] * x[i + 2];
            }
            x[i] = y * self.inv0[i];
        }
    }
}

/// Systems side by side in a `Lanes`: one SIMD register of f64 on AVX-512.
pub const LANES: usize = 8;

/// The factors of up to `LANES` pentadiagonal systems laid side by side: row i of system s at
/// i·LANES + s, n the largest size; a system shorter than n (or an absent one) continues with
/// identity rows coupled to nothing. Its solve runs the recurrences of all systems together,
/// across the lanes (they vectorise).
#[derive(Debug, Clone)]
pub struct Lanes {
    n: usize,
    l2: Vec<f64>,
    l1: Vec<f64>,
    inv0: Vec<f64>,
    u1: Vec<f64>,
    u2: Vec<f64>,
}

impl Lanes {
    pub fn new(fs: &[&Penta]) -> Lanes {
        assert!(fs.len() <= LANES, "Lanes: at most LANES systems");
        let n = fs.iter().map(|f| f.u0.len()).max().unwrap_or(0);
        let mut l = Lanes {
            n,
            l2: vec![0.0; n * LANES],
            l1: vec![0.0; n * LANES],
            inv0: vec![1.0; n * LANES],
            u1: vec![0.0; n * LANES],
            u2: vec![0.0; n * LANES],
        };
        for (s, f) in fs.iter().enumerate() {
            for i in 0..f.u0.len() {
                let at = i * LANES + s;
                (l.l2[at], l.l1[at], l.inv0[at], l.u1[at], l.u2[at]) = (f.l2[i], f.l1[i], f.inv0[i], f.u1[i], f.u2[i]);
            }
        }
        l
    }

    /// The rows of the longest system.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// x ← A⁻¹ x for every system, x laid out as the factors (n·LANES values): the operations
    /// of `Penta::solve` per system. Past a system's end the identity rows add 0·x to its last
    /// rows, which for finite values changes nothing (but the sign of a zero).
    pub fn solve(&self, x: &mut [f64]) {
        assert_eq!(x.len(), self.n * LANES, "Lanes::solve: size");
        simd::dispatch(LanesSolve { f: self, x });
    }
}

/// `Lanes::solve` with its arguments, for `simd::dispatch` (one register of lanes per row).
struct LanesSolve<'a> {
    f: &'a Lanes,
    x: &'a mut [f64],
}

impl Kernel for LanesSolve<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        const L: usize = LANES;
        let (f, x, n) = (self.f, self.x, self.f.n);
        for i in 1..n {
            let (done, rest) = x.split_at_mut(i * L);
            let cur: &mut [f64; L] = (&mut rest[..L]).try_into().expect("a row of lanes");
            let p1 = &done[(i - 1) * L..i * L];
            let l1 = &f.l1[i * L..(i + 1) * L];
            if i >= 2 {
                let (p2, l2) = (&done[(i - 2) * L..(i - 1) * L], &f.l2[i * L..(i + 1) * L]);
                for s in 0..L {
                    let mut y = cur[s] - l1[s] * p1[s];
                    y -= l2[s] * p2[s];
                    cur[s] = y;
                }
            } else {
                for s in 0..L {
                    cur[s] -= l1[s] * p1[s];
                }
            }
        }
        for i in (0..n).rev() {
            let (head, tail) = x.split_at_mut((i + 1) * L);
            let cur = &mut head[i * L..];
            let (inv0, u1, u2) = (&f.inv0[i * L..(i + 1) * L], &f.u1[i * L..(i + 1) * L], &f.u2[i * L..(i + 1) * L]);
            for s in 0..L {
                let mut y = cur[s];
                if i + 1 < n {
                    y -= u1[s] * tail[s];
                }
                if i + 2 < n {
                    y -= u2[s] * tail[L + s];
                }
                cur[s] = y * inv0[s];
            }
        }
    }
}

/// 4 × 4 Gaussian elimination with partial pivoting: the factors (rows permuted) and the
/// permutation.
#[derive(Debug, Clone)]
struct Small {
    lu: [[f64; 4]; 4],
    perm: [usize; 4],
}

// index loops, as in the reference
#[allow(clippy::needless_range_loop)]
impl Small {
    fn factor(mut a: [[f64; 4]; 4]) -> Small {
        let mut perm = [0, 1, 2, 3];
        for k in 0..4 {
            let mut p = k;
            for r in k + 1..4 {
                if a[r][k].abs() > a[p][k].abs() {
                    p = r;
                }
            }
            a.swap(k, p);
            perm.swap(k, p);
            for r in k + 1..4 {
                let l = a[r][k] / a[k][k];
                a[r][k] = l;
                for c in k + 1..4 {
                    a[r][c] -= l * a[k][c];
                }
            }
        }
        Small { lu: a, perm }
    }

    fn solve(&self, b: [f64; 4]) -> [f64; 4] {
        let mut y = [0.0; 4];
        for r in 0..4 {
            let mut s = b[self.perm[r]];
            for c in 0..r {
                s -= self.lu[r][c] * y[c];
            }
            y[r] = s;
        }
        for r in (0..4).rev() {
            let mut s = y[r];
            for c in r + 1..4 {
                s -= self.lu[r][c] * y[c];
            }
            y[r] = s / self.lu[r][r];
        }
        y
    }
}

/// A solver of A x = r for the matrix A of a five-point stencil (w₋₂, w₋₁, w₀, w₁, w₂) on n
/// nodes with the ghost nodes of `bc` folded in: mirrored for "reflect" (a pentadiagonal
/// matrix), wrapped for "periodic" (pentadiagonal plus corners: A = B + P C Pᵀ with B the band,
/// P the columns 0, 1, n − 2, n − 1 of the identity and C the 4 × 4 corner block).
#[derive(Debug, Clone)]
pub struct StencilSolver {
    band: Penta,
    /// for "periodic": the corners' rows and columns, C, Z = B⁻¹P (column b at z[b·n..]) and
    /// the factors of I + C PᵀZ
    cyclic: Option<Cyclic>,
}

#[derive(Debug, Clone)]
struct Cyclic {
    idx: [usize; 4],
    c: [[f64; 4]; 4],
    z: Vec<f64>,
    m: Small,
}

impl StencilSolver {
    #[allow(clippy::needless_range_loop)]
    /// Needs n ≥ 6 nodes (so that the corner rows 0, 1, n − 2, n − 1 are distinct and clear of
    /// the band).
    pub fn new(n: usize, w: [f64; 5], bc: Boundary) -> StencilSolver {
        assert!(n >= 6, "a five-point stencil solve needs at least 6 nodes");
        let mut diag = [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]];
        let mut corner = [[0.0; 4]; 4];
        let idx = [0, 1, n - 2, n - 1];
        let slot = |j: usize| idx.iter().position(|&c| c == j);
        let last = n as isize - 1;
        for i in 0..n {
            for (k, &wk) in w.iter().enumerate() {
                let node = i as isize + k as isize - 2;
                let j = match bc {
                    Boundary::Reflect if node < 0 => -node,
                    Boundary::Reflect if node > last => 2 * last - node,
                    _ => node.rem_euclid(n as isize),
                } as usize;
                let offset = j as isize - i as isize;
                if offset.abs() <= 2 {
                    diag[(offset + 2) as usize][i] += wk;
                } else {
                    let (a, b) = (slot(i).expect("a corner row"), slot(j).expect("a corner column"));
                    corner[a][b] += wk;
                }
            }
        }
        let [m2, m1, d, p1, p2] = &diag;
        let band = Penta::factor(m2, m1, d, p1, p2);
        let cyclic = (bc == Boundary::Periodic).then(|| {
            let mut z = vec![0.0; 4 * n];
            for (b, col) in z.chunks_mut(n).enumerate() {
                col[idx[b]] = 1.0;
                band.solve(col);
            }
            let mut m = [[0.0; 4]; 4];
            for (a, row) in m.iter_mut().enumerate() {
                for (b, mab) in row.iter_mut().enumerate() {
                    let mut s = if a == b { 1.0 } else { 0.0 };
                    for (c, &idx_c) in idx.iter().enumerate() {
                        s += corner[a][c] * z[b * n + idx_c];
                    }
                    *mab = s;
                }
            }
            Cyclic { idx, c: corner, z, m: Small::factor(m) }
        });
        StencilSolver { band, cyclic }
    }

    /// x ← A⁻¹ x. Periodic: y = B⁻¹x, then x = y − Z (I + C PᵀZ)⁻¹ C Pᵀy.
    pub fn solve(&self, x: &mut [f64]) {
        self.band.solve(x);
        if let Some(cy) = &self.cyclic {
            let n = x.len();
            let mut t = [0.0; 4];
            for (a, ta) in t.iter_mut().enumerate() {
                for (c, &idx_c) in cy.idx.iter().enumerate() {
                    *ta += cy.c[a][c] * x[idx_c];
                }
            }
            let s = cy.m.solve(t);
            for (b, col) in cy.z.chunks(n).enumerate() {
                for (xi, zi) in x.iter_mut().zip(col) {
                    *xi -= zi * s[b];
                }
            }
        }
    }
}

/// A cyclic pentadiagonal matrix (n ≥ 6): row i holds `m2[i]` … `p2[i]` in the columns
/// (i − 2 … i + 2) mod n, solved as `StencilSolver` solves "periodic" (the twin of
/// `CyclicPentaBatch` in banded.py): the band by `Penta`, the wrapped entries as the corner
/// block, Sherman–Morrison–Woodbury.
#[derive(Debug, Clone)]
pub struct CyclicPenta {
    band: Penta,
    cy: Cyclic,
}

impl CyclicPenta {
    #[allow(clippy::needless_range_loop)]
    pub fn factor(m2: &[f64], m1: &[f64], d: &[f64], p1: &[f64], p2: &[f64]) -> CyclicPenta {
        let n = d.len();
        assert!(n >= 6, "a cyclic five-point solve needs at least 6 nodes");
        let band = Penta::factor(m2, m1, d, p1, p2);
        let idx = [0, 1, n - 2, n - 1];
        let diags = [m2, m1, d, p1, p2];
        let mut corner = [[0.0; 4]; 4];
        for (a, &i) in idx.iter().enumerate() {
            for (k, dg) in diags.iter().enumerate() {
                let node = i as isize + k as isize - 2;
                if (0..n as isize).contains(&node) {
                    continue;
                }
                let col = node.rem_euclid(n as isize) as usize;
                let b = idx.iter().position(|&c| c == col).expect("a corner column");
                corner[a][b] += dg[i];
            }
        }
        let mut z = vec![0.0; 4 * n];
        for (b, col) in z.chunks_mut(n).enumerate() {
            col[idx[b]] = 1.0;
            band.solve(col);
        }
        let mut m = [[0.0; 4]; 4];
        for a in 0..4 {
            for b in 0..4 {
                let mut s = 0.0;
                for (c, &idx_c) in idx.iter().enumerate() {
                    s += corner[a][c] * z[b * n + idx_c];
                }
                m[a][b] = (if a == b { 1.0 } else { 0.0 }) + s;
            }
        }
        CyclicPenta { band, cy: Cyclic { idx, c: corner, z, m: Small::factor(m) } }
    }

    /// x ← A⁻¹ x.
    pub fn solve(&self, x: &mut [f64]) {
        self.band.solve(x);
        self.correct(x);
    }

    /// The band's factors (`correct` after a band solve makes the full solve).
    pub fn band(&self) -> &Penta {
        &self.band
    }

    /// x ← y − Z (I + C PᵀZ)⁻¹ C Pᵀy for the band solution y in x.
    pub fn correct(&self, x: &mut [f64]) {
        let (cy, n) = (&self.cy, x.len());
        let mut t = [0.0; 4];
        for (a, ta) in t.iter_mut().enumerate() {
            for (c, &idx_c) in cy.idx.iter().enumerate() {
                *ta += cy.c[a][c] * x[idx_c];
            }
        }
        let s = cy.m.solve(t);
        for (b, col) in cy.z.chunks(n).enumerate() {
            for (xi, zi) in x.iter_mut().zip(col) {
                *xi -= zi * s[b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A x by the stencil with ghost nodes, directly.
    fn apply(x: &[f64], w: [f64; 5], bc: Boundary) -> Vec<f64> {
        (0..x.len())
            .map(|i| (0..5).map(|k| w[k] * crate::boundary::ghost(x, i as isize + k as isize - 2, bc)).sum())
            .collect()
    }

    #[test]
    fn solves_invert_the_stencil_with_its_ghost_nodes() {
        let c = 0.7;
        let w = [c, -16.0 * c, 1.0 + 30.0 * c, -16.0 * c, c];
        for n in [6, 7, 8, 13, 200] {
            for bc in [Boundary::Reflect, Boundary::Periodic] {
                let x: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64 - 5.0 + (i as f64).sin()).collect();
                let mut r = apply(&x, w, bc);
                StencilSolver::new(n, w, bc).solve(&mut r);
                let err = r.iter().zip(&x).fold(0.0_f64, |a, (p, q)| a.max((p - q).abs()));
                assert!(err < 1e-11, "{n} {bc:?}: {err}");
            }
        }
    }

    #[test]
    fn a_general_pentadiagonal_matrix() {
        let n = 9;
        let m2: Vec<f64> = (0..n).map(|i| 0.1 * i as f64).collect();
        let m1: Vec<f64> = (0..n).map(|i| -0.3 + 0.05 * i as f64).collect();
        let d: Vec<f64> = (0..n).map(|i| 3.0 + 0.2 * i as f64).collect();
        let p1: Vec<f64> = (0..n).map(|i| 0.4 - 0.1 * i as f64).collect();
        let p2: Vec<f64> = (0..n).map(|i| -0.2 * (i % 3) as f64).collect();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos()).collect();
        let mut r = vec![0.0; n];
        for i in 0..n {
            let at = |j: isize| if (0..n as isize).contains(&j) { x[j as usize] } else { 0.0 };
            let i_ = i as isize;
            r[i] = m2[i] * at(i_ - 2) + m1[i] * at(i_ - 1) + d[i] * x[i] + p1[i] * at(i_ + 1) + p2[i] * at(i_ + 2);
        }
        Penta::factor(&m2, &m1, &d, &p1, &p2).solve(&mut r);
        for i in 0..n {
            assert!((r[i] - x[i]).abs() < 1e-13);
        }
    }

    #[test]
    fn a_cyclic_pentadiagonal_matrix() {
        let n = 8;
        let diag: Vec<Vec<f64>> = (0..5)
            .map(|k| (0..n).map(|i| if k == 2 { 4.0 + 0.1 * i as f64 } else { 0.3 - 0.07 * (i + k) as f64 }).collect())
            .collect();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.9).sin() + 0.2).collect();
        let mut r = vec![0.0; n];
        for i in 0..n {
            for k in 0..5 {
                r[i] += diag[k][i] * x[(i + n + k - 2) % n];
            }
        }
        CyclicPenta::factor(&diag[0], &diag[1], &diag[2], &diag[3], &diag[4]).solve(&mut r);
        for i in 0..n {
            assert!((r[i] - x[i]).abs() < 1e-13);
        }
    }

    #[test]
    fn systems_side_by_side_are_solved_as_alone() {
        let n = 9;
        let mats: Vec<Penta> = (0..4)
            .map(|s| {
                let d: Vec<Vec<f64>> = (0..5)
                    .map(|k| {
                        (0..n)
                            .map(|i| if k == 2 { 3.0 + 0.1 * (i + s) as f64 } else { 0.2 - 0.05 * (i * k + s) as f64 })
                            .collect()
                    })
                    .collect();
                Penta::factor(&d[0], &d[1], &d[2], &d[3], &d[4])
            })
            .collect();
        // four systems side by side, and two of other sizes (fewer than LANES, ragged)
        let r: Vec<f64> = (0..4 * n).map(|i| (i as f64 * 0.37).sin()).collect();
        let short = Penta::factor(&[0.1; 5], &[0.2; 5], &[3.0; 5], &[0.3; 5], &[0.05; 5]);
        for fs in [vec![&mats[0], &mats[1], &mats[2], &mats[3]], vec![&mats[1], &short]] {
            let lanes = Lanes::new(&fs);
            let mut x = vec![0.0; lanes.len() * LANES];
            for (s, f) in fs.iter().enumerate() {
                for i in 0..f.u0.len() {
                    x[i * LANES + s] = r[s * n + i];
                }
            }
            lanes.solve(&mut x);
            for (s, f) in fs.iter().enumerate() {
                let mut y = r[s * n..s * n + f.u0.len()].to_vec();
                f.solve(&mut y);
                let got: Vec<f64> = (0..f.u0.len()).map(|i| x[i * LANES + s]).collect();
                assert_eq!(y, got);
            }
        }
    }
}

//! Two-dimensional Gaussian kernel density estimation (product kernel, bandwidths (hx, hy)) of
//! particles onto the nodes of a 2-D field (ny, nx): "exact" (direct truncated sum with images)
//! or "binned" (bilinear binning, then a separable convolution), divided next to obstacles by
//! the room's share of each node's kernel, zero at obstacle and exit nodes, scaled to a given
//! mass Σ w·m over the SPEC2D quadrature weights.
//!
//! The maths: see mfg_ensemble/kernels/reference/kde2d.py.
//!
//! Implementation, independent of the thread count: both methods work over fixed-size blocks of
//! particles, each summing into its own array, the blocks added in block order; the convolution
//! runs in parallel over lines (rows, then columns), each line by the same operations.

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{KernelError, KernelResult};
use crate::grid2d::{EXIT, FREE, OBSTACLE};
use crate::kde::{Method, CUTOFF};

/// Particles per block of the exact sum and of the binning.
const BLOCK: usize = 4096;

/// One dimension of the grid: nodes lo + i·d (i < n); "reflect" walls at the end nodes or one
/// period of length n·d.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub lo: f64,
    pub d: f64,
    pub n: usize,
    pub bc: Boundary,
}

impl Axis {
    pub fn periodic(&self) -> bool {
        self.bc == Boundary::Periodic
    }

    /// The upper end of the domain: the last node ("reflect") or lo + period ("periodic").
    pub fn hi(&self) -> f64 {
        if self.periodic() {
            self.lo + self.n as f64 * self.d
        } else {
            self.lo + (self.n - 1) as f64 * self.d
        }
    }

    /// The positions through which a particle at `p` contributes (itself and one image per side).
    #[inline]
    fn sources(&self, p: f64) -> [f64; 3] {
        if self.periodic() {
            let length = self.n as f64 * self.d;
            [p, p - length, p + length]
        } else {
            let hi = self.lo + (self.n - 1) as f64 * self.d;
            [p, 2.0 * self.lo - p, 2.0 * hi - p]
        }
    }

    /// The 1-D quadrature weights: d inside, d/2 at the end nodes of a "reflect" axis.
    pub fn weights(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| if !self.periodic() && (i == 0 || i == self.n - 1) { 0.5 * self.d } else { self.d })
            .collect()
    }

    /// The lattice cell [k, k + 1] holding `p` and the fraction f of the way across it.
    #[inline]
    fn cell(&self, p: f64) -> (usize, f64) {
        let t = (p - self.lo) / self.d;
        let last = if self.periodic() { self.n - 1 } else { self.n - 2 };
        let k = (t.floor().max(0.0) as usize).min(last);
        (k, t - k as f64)
    }

    /// Σ over the sources of `p` of exp(−(g_i − s)²/(2h²)) for |g_i − s| ≤ 8h, into `out`
    /// (zeroed first); returns the range of indices written.
    fn kernel_row(&self, p: f64, h: f64, out: &mut [f64]) -> (usize, usize) {
        let cut = CUTOFF * h;
        let (mut first, mut last) = (usize::MAX, 0usize);
        out.iter_mut().for_each(|o| *o = 0.0);
        for s in self.sources(p) {
            let a = ((s - cut - self.lo) / self.d).floor() - 1.0;
            let b = ((s + cut - self.lo) / self.d).ceil() + 1.0;
            if b < 0.0 || a > (self.n - 1) as f64 {
                continue;
            }
            let (a, b) = (a.max(0.0) as usize, (b as usize).min(self.n - 1));
            for (i, o) in out.iter_mut().enumerate().take(b + 1).skip(a) {
                let diff = (self.lo + i as f64 * self.d) - s;
                if diff.abs() <= cut {
                    let z = diff / h;
                    *o += (-0.5 * (z * z)).exp();
                    first = first.min(i);
                    last = last.max(i);
                }
            }
        }
        (first, last)
    }
}

/// The quadrature weights w[j, i] = wy[j]·wx[i], 0 at OBSTACLE nodes (SPEC2D), row-major.
pub fn weights_2d(ax: &Axis, ay: &Axis, kinds: &[u8]) -> Vec<f64> {
    let (wx, wy) = (ax.weights(), ay.weights());
    let mut w = vec![0.0; ay.n * ax.n];
    for ((row, krow), &wyj) in w.chunks_exact_mut(ax.n).zip(kinds.chunks_exact(ax.n)).zip(&wy) {
        for ((o, &k), &wxi) in row.iter_mut().zip(krow).zip(&wx) {
            *o = if k == OBSTACLE { 0.0 } else { wyj * wxi };
        }
    }
    w
}

/// The bandwidth rule for 2-D particles (interleaved x, y): "scott" and "silverman" are both
/// σ̂_d·n^(−1/6) per dimension; `None` when a column has no spread (or fewer than 2 particles).
/// With `weights` w (None: all 1, the same bits): mean x̄ = Σwx/Σw, variance
/// Σw(x − x̄)²/(Σw − Σw²/Σw) (reliability weights: ddof = 1 for w = 1), n_eff = (Σw)²/Σw² for n,
/// all sums in particle order; `None` also when the variance's denominator is not positive.
pub fn bandwidth_rule_2d(particles: &[f64], weights: Option<&[f64]>) -> Option<(f64, f64)> {
    let n = particles.len() / 2;
    if n < 2 {
        return None;
    }
    let (sw, sw2) = (0..n).map(|k| weight_of(weights, k)).fold((0.0, 0.0), |(a, b), v| (a + v, b + v * v));
    let denominator = sw - sw2 / sw;
    if denominator.is_nan() || denominator <= 0.0 {
        return None;
    }
    let factor = (sw * sw / sw2).powf(-1.0 / 6.0);
    let mut h = [0.0; 2];
    for (a, ha) in h.iter_mut().enumerate() {
        let column = || particles.iter().skip(a).step_by(2).enumerate().map(|(k, x)| (x, weight_of(weights, k)));
        let mean = column().map(|(x, v)| v * x).sum::<f64>() / sw;
        let var = column().map(|(x, v)| v * ((x - mean) * (x - mean))).sum::<f64>() / denominator;
        let std = var.sqrt();
        if std.is_nan() || std <= 0.0 {
            return None;
        }
        *ha = std * factor;
    }
    Some((h[0], h[1]))
}

/// The weight of particle k of a block: `weights[k]`, or 1 (multiplying by it changes no bit).
#[inline(always)]
fn weight_of(weights: Option<&[f64]>, k: usize) -> f64 {
    weights.map_or(1.0, |w| w[k])
}

/// Σ over the particles' blocks of `BLOCK` of the field (`size` values) that `fill` adds up for
/// one block (its particles, its weights or None, the zeroed field), the blocks in parallel and
/// their fields summed in block order (the same bits for any thread count).
fn blockwise<F>(particles: &[f64], weights: Option<&[f64]>, size: usize, fill: F) -> Vec<f64>
where
    F: Fn(&[f64], Option<&[f64]>, &mut [f64]) + Sync,
{
    let blocks = particles.chunks(2 * BLOCK).len();
    let weight_blocks: Vec<Option<&[f64]>> = match weights {
        Some(w) => w.chunks(BLOCK).map(Some).collect(),
        None => vec![None; blocks],
    };
    let parts: Vec<Vec<f64>> = particles
        .par_chunks(2 * BLOCK)
        .zip(weight_blocks)
        .map(|(block, wb)| {
            let mut field = vec![0.0; size];
            fill(block, wb, &mut field);
            field
        })
        .collect();
    let mut total = vec![0.0; size];
    for part in &parts {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    total
}

/// The direct truncated sum: m[j, i] = Σ_p w_p·Ay[p, j]·Ax[p, i] (`Axis::kernel_row`).
fn raw_exact(particles: &[f64], weights: Option<&[f64]>, ax: &Axis, ay: &Axis, h: (f64, f64)) -> Vec<f64> {
    let (nx, ny) = (ax.n, ay.n);
    blockwise(particles, weights, ny * nx, |block, wb, m| {
        let (mut rx, mut ry) = (vec![0.0; nx], vec![0.0; ny]);
        for (k, p) in block.chunks_exact(2).enumerate() {
            let (i0, i1) = ax.kernel_row(p[0], h.0, &mut rx);
            let (j0, j1) = ay.kernel_row(p[1], h.1, &mut ry);
            if i0 > i1 || j0 > j1 {
                continue;
            }
            let wk = weight_of(wb, k);
            for j in j0..=j1 {
                let (yv, row) = (wk * ry[j], &mut m[j * nx..(j + 1) * nx]);
                for (o, &xv) in row[i0..=i1].iter_mut().zip(&rx[i0..=i1]) {
                    *o += yv * xv;
                }
            }
        }
    })
}

/// Bilinear binning weights (ny, nx) of the particles, each scaled by its weight.
fn bilinear_binning(particles: &[f64], weights: Option<&[f64]>, ax: &Axis, ay: &Axis) -> Vec<f64> {
    let (nx, ny) = (ax.n, ay.n);
    blockwise(particles, weights, ny * nx, |block, wb, w| {
        for (k, p) in block.chunks_exact(2).enumerate() {
            let (i, fx) = ax.cell(p[0]);
            let (j, fy) = ay.cell(p[1]);
            let (i1, j1) = ((i + 1) % nx, (j + 1) % ny);
            let (gx, gy) = (1.0 - fx, weight_of(wb, k) * (1.0 - fy));
            let fy = weight_of(wb, k) * fy;
            w[j * nx + i] += gx * gy;
            w[j * nx + i1] += fx * gy;
            w[j1 * nx + i] += gx * fy;
            w[j1 * nx + i1] += fx * fy;
        }
    })
}

/// The truncated kernel exp(−(k·d)²/(2h²)), k = 0 ..= ⌊8h/d⌋ (capped at 2n).
fn line_kernel(axis: &Axis, h: f64) -> Vec<f64> {
    let reach = ((CUTOFF * h / axis.d).floor() as usize).min(2 * axis.n);
    (0..=reach)
        .map(|k| {
            let z = k as f64 * axis.d / h;
            (-0.5 * (z * z)).exp()
        })
        .collect()
}

/// One line's weights `w` with their images (mirrored about the end nodes, or wrapped),
/// convolved with the symmetric `kernel`, into `out`; `ext` is scratch of n + 2·reach values.
fn convolve_line(w: &[f64], out: &mut [f64], kernel: &[f64], bc: Boundary, ext: &mut [f64]) {
    let n = w.len() as i64;
    let r = kernel.len() - 1;
    let images: [(i64, i64); 3] =
        if bc == Boundary::Periodic { [(1, 0), (1, -n), (1, n)] } else { [(1, 0), (-1, 0), (-1, 2 * (n - 1))] };
    ext.iter_mut().for_each(|e| *e = 0.0);
    for (sign, offset) in images {
        for (j, &wj) in w.iter().enumerate() {
            let e = sign * j as i64 + offset + r as i64;
            if e >= 0 && (e as usize) < ext.len() {
                ext[e as usize] += wj;
            }
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        let c = i + r;
        let mut acc = kernel[0] * ext[c];
        for (k, &kv) in kernel.iter().enumerate().skip(1) {
            acc += kv * (ext[c - k] + ext[c + k]);
        }
        *o = acc;
    }
}

/// Convolve every line of `lines` (rows of length `axis.n`) in parallel.
fn convolve_lines(lines: &[f64], axis: &Axis, h: f64) -> Vec<f64> {
    let kernel = line_kernel(axis, h);
    let mut out = vec![0.0; lines.len()];
    out.par_chunks_mut(axis.n).zip(lines.par_chunks(axis.n)).for_each_init(
        || vec![0.0; axis.n + 2 * (kernel.len() - 1)],
        |ext, (o, w)| convolve_line(w, o, &kernel, axis.bc, ext),
    );
    out
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// The separable convolution S of a field of nodes (ny, nx): along the rows (x), then along
/// the columns (y).
fn convolve(field: &[f64], ax: &Axis, ay: &Axis, h: (f64, f64)) -> Vec<f64> {
    let rows = convolve_lines(field, ax, h.0);
    let cols = convolve_lines(&transpose(&rows, ay.n, ax.n), ay, h.1);
    transpose(&cols, ax.n, ay.n)
}

/// Binning, then the separable convolution.
fn raw_binned(particles: &[f64], weights: Option<&[f64]>, ax: &Axis, ay: &Axis, h: (f64, f64)) -> Vec<f64> {
    convolve(&bilinear_binning(particles, weights, ax, ay), ax, ay, h)
}

/// The neighbours (below, above) of node `i` of an axis: beyond a "reflect" end node its mirror
/// image, wrapped for "periodic".
fn neighbours(i: usize, axis: &Axis) -> (usize, usize) {
    let (n, wrap) = (axis.n, axis.periodic());
    let below = if i > 0 {
        i - 1
    } else if wrap {
        n - 1
    } else {
        1
    };
    let above = if i + 1 < n {
        i + 1
    } else if wrap {
        0
    } else {
        n - 2
    };
    (below, above)
}

/// T v: the binning weights of a uniform crowd over the node cells weighted by `v` (ny, nx);
/// along x, then y, ¾v_i + ⅛(v_{i−1} + v_{i+1}) with `neighbours`.
fn uniform_binning(v: &[f64], ax: &Axis, ay: &Axis) -> Vec<f64> {
    let nx = ax.n;
    let mut x = vec![0.0; v.len()];
    for (row, out) in v.chunks(nx).zip(x.chunks_mut(nx)) {
        for (i, o) in out.iter_mut().enumerate() {
            let (lo, hi) = neighbours(i, ax);
            *o = 0.75 * row[i] + 0.125 * (row[lo] + row[hi]);
        }
    }
    let mut y = vec![0.0; v.len()];
    for (j, out) in y.chunks_mut(nx).enumerate() {
        let (lo, hi) = neighbours(j, ay);
        for (i, o) in out.iter_mut().enumerate() {
            *o = 0.75 * x[j * nx + i] + 0.125 * (x[lo * nx + i] + x[hi * nx + i]);
        }
    }
    y
}

/// The room's share of each node's kernel, c = S(B)/S(1) with B = R ("exact") or T R ("binned",
/// T `uniform_binning`), R = 1 off the OBSTACLE nodes, 0 on them; None when there is no
/// OBSTACLE node.
fn room_fraction(ax: &Axis, ay: &Axis, h: (f64, f64), method: Method, kinds: &[u8]) -> Option<Vec<f64>> {
    if !kinds.contains(&OBSTACLE) {
        return None;
    }
    let mut room: Vec<f64> = kinds.iter().map(|&k| if k == OBSTACLE { 0.0 } else { 1.0 }).collect();
    if method == Method::Binned {
        room = uniform_binning(&room, ax, ay);
    }
    let all = convolve(&vec![1.0; kinds.len()], ax, ay, h);
    Some(convolve(&room, ax, ay, h).iter().zip(&all).map(|(r, a)| r / a).collect())
}

/// The KDE (ny, nx, row-major) of `particles` (interleaved x, y), each of weight `weights[p]`
/// (None: 1), with bandwidths `h`, divided by `room_fraction` next to obstacles, zero at obstacle
/// and exit nodes, scaled to Σ w·m = `mass` (all zeros for no particles).
#[allow(clippy::too_many_arguments)]
pub fn density(
    particles: &[f64],
    weights: Option<&[f64]>,
    ax: &Axis,
    ay: &Axis,
    h: (f64, f64),
    method: Method,
    kinds: &[u8],
    mass: f64,
) -> KernelResult<Vec<f64>> {
    if particles.is_empty() {
        return Ok(vec![0.0; ax.n * ay.n]);
    }
    let mut m = match method {
        Method::Exact => raw_exact(particles, weights, ax, ay, h),
        Method::Binned => raw_binned(particles, weights, ax, ay, h),
    };
    if let Some(share) = room_fraction(ax, ay, h, method, kinds) {
        for ((v, &k), &c) in m.iter_mut().zip(kinds).zip(&share) {
            if k == FREE {
                *v /= c;
            }
        }
    }
    for (v, &k) in m.iter_mut().zip(kinds) {
        if k == OBSTACLE || k == EXIT {
            *v = 0.0;
        }
    }
    let total: f64 = weights_2d(ax, ay, kinds).iter().zip(&m).map(|(w, v)| w * v).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(KernelError(format!(
            "bandwidth ({}, {}) is too small for this grid: the density vanishes at every free node",
            h.0, h.1
        )));
    }
    let scale = mass / total;
    m.iter_mut().for_each(|v| *v *= scale);
    Ok(m)
}

/// Check what the kernels assume of a grid and its particles (the facade checks them first,
/// with its own messages): sizes, positive finite spacings and bandwidths, particles finite
/// and inside the domain, `kinds` of size ny·nx.
pub fn validate(particles: &[f64], ax: &Axis, ay: &Axis, h: (f64, f64), kinds: &[u8]) -> KernelResult<()> {
    for (name, a) in [("x", ax), ("y", ay)] {
        if a.n < 2 || !(a.d.is_finite() && a.d > 0.0 && a.lo.is_finite()) {
            return Err(KernelError(format!("{name} must have >= 2 uniform nodes, got n={}, d={}", a.n, a.d)));
        }
    }
    if kinds.len() != ax.n * ay.n {
        return Err(KernelError(format!("nodes must have shape (ny, nx) = ({}, {})", ay.n, ax.n)));
    }
    for (name, v) in [("bandwidth[0]", h.0), ("bandwidth[1]", h.1)] {
        crate::error::check_positive(name, v)?;
    }
    if particles.len() % 2 != 0 {
        return Err(KernelError("particles must have shape (n, 2)".into()));
    }
    crate::error::check_finite("particles", particles)?;
    for (k, &v) in particles.iter().enumerate() {
        let a = if k % 2 == 0 { ax } else { ay };
        if v < a.lo || v > a.hi() {
            return Err(KernelError(format!(
                "particles[{}, {}] = {v} lies outside the nodes' domain [{}, {}]",
                k / 2,
                k % 2,
                a.lo,
                a.hi()
            )));
        }
    }
    Ok(())
}

/// The facade's KDE: unit mass.
pub fn kde_2d(
    particles: &[f64],
    ax: &Axis,
    ay: &Axis,
    h: (f64, f64),
    method: Method,
    kinds: &[u8],
) -> KernelResult<Vec<f64>> {
    validate(particles, ax, ay, h, kinds)?;
    if particles.is_empty() {
        return Err(KernelError("particles must not be empty".into()));
    }
    density(particles, None, ax, ay, h, method, kinds, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(n: usize, bc: Boundary) -> Axis {
        let d = if bc == Boundary::Periodic { 1.0 / n as f64 } else { 1.0 / (n - 1) as f64 };
        Axis { lo: 0.0, d, n, bc }
    }

    fn cloud(n: usize) -> Vec<f64> {
        let mut z = vec![0.0; 2 * n];
        crate::rng::fill_normals(4, 0, 9, 0, &mut z);
        z.iter().map(|v| crate::particles::fold_into(0.4 + 0.2 * v, 0.0, 1.0, Boundary::Reflect)).collect()
    }

    #[test]
    fn integer_weights_repeat_the_particles() {
        let (ax, ay) = (axis(21, Boundary::Reflect), axis(17, Boundary::Periodic));
        let kinds = vec![0u8; 21 * 17];
        let p = cloud(9000); // more than two blocks
        let w: Vec<f64> = (0..p.len() / 2).map(|k| (1 + k % 3) as f64).collect();
        let repeated: Vec<f64> = p
            .chunks_exact(2)
            .zip(&w)
            .flat_map(|(q, &c)| std::iter::repeat_n([q[0], q[1]], c as usize))
            .flatten()
            .collect();
        for method in [Method::Exact, Method::Binned] {
            let a = density(&p, Some(&w), &ax, &ay, (0.07, 0.09), method, &kinds, 1.0).unwrap();
            let b = density(&repeated, None, &ax, &ay, (0.07, 0.09), method, &kinds, 1.0).unwrap();
            let top = b.iter().fold(0.0f64, |m, &v| m.max(v));
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-12 * top));
            let ones = vec![1.0; w.len()];
            assert_eq!(
                density(&p, Some(&ones), &ax, &ay, (0.07, 0.09), method, &kinds, 1.0).unwrap(),
                density(&p, None, &ax, &ay, (0.07, 0.09), method, &kinds, 1.0).unwrap()
            );
        }
        assert_eq!(bandwidth_rule_2d(&p, Some(&vec![1.0; w.len()])), bandwidth_rule_2d(&p, None));
    }

    #[test]
    fn unit_mass_and_binned_close_to_exact() {
        for bc in [Boundary::Reflect, Boundary::Periodic] {
            let (ax, ay) = (axis(41, bc), axis(33, Boundary::Reflect));
            let kinds = vec![0u8; 41 * 33];
            let p = cloud(5000);
            let w = weights_2d(&ax, &ay, &kinds);
            let exact = kde_2d(&p, &ax, &ay, (0.06, 0.08), Method::Exact, &kinds).unwrap();
            let binned = kde_2d(&p, &ax, &ay, (0.06, 0.08), Method::Binned, &kinds).unwrap();
            for m in [&exact, &binned] {
                let mass: f64 = w.iter().zip(m.iter()).map(|(a, b)| a * b).sum();
                assert!((mass - 1.0).abs() < 1e-13);
            }
            let top = exact.iter().fold(0.0f64, |a, &b| a.max(b));
            assert!(exact.iter().zip(&binned).all(|(a, b)| (a - b).abs() < 0.01 * top));
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let (ax, ay) = (axis(5, Boundary::Reflect), axis(4, Boundary::Reflect));
        let kinds = vec![0u8; 20];
        assert!(kde_2d(&[0.5, 1.5], &ax, &ay, (0.1, 0.1), Method::Exact, &kinds).is_err());
        assert!(kde_2d(&[0.5, 0.5], &ax, &ay, (0.0, 0.1), Method::Exact, &kinds).is_err());
        assert!(kde_2d(&[0.5, 0.5], &ax, &ay, (0.1, 0.1), Method::Exact, &kinds[1..]).is_err());
        assert!(bandwidth_rule_2d(&[0.5, 0.5, 0.6, 0.5], None).is_none());
    }
}

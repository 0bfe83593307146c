//! Gaussian kernel density estimation of particles onto a grid, truncated at 8 bandwidths:
//! "exact" (the direct sum) or "binned" (linear binning, then a direct convolution), with
//! "reflect", "periodic" or "none" boundaries, and the bandwidth rules of scipy.
//!
//! The maths: see mfg_ensemble/kernels/reference/kde.py.
//!
//! Implementation, both methods independent of the thread count:
//!
//! * "exact" runs grid chunk by grid chunk, each grid point adding its particles in index
//!   order; or, for many particles on a fine uniform grid, particle block by particle block,
//!   each particle adding its kernel values along the grid by a recurrence (two
//!   multiplications per grid point instead of an exp, SIMD-dispatched), the fixed-size blocks
//!   added in block order.
//! * "binned" bins fixed-size blocks of particles (two histograms per block, SIMD-dispatched),
//!   added in block order, then convolves in parallel over grid chunks.

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{check_finite, check_inside, check_positive, KernelError, KernelResult};
use crate::simd;

/// Kernel truncation radius in bandwidths.
pub const CUTOFF: f64 = 8.0;
const GRID_CHUNK: usize = 64;
const PARTICLE_BLOCK: usize = 65_536;

/// The boundary conditions of the KDE, in the order the error message lists them.
pub const BCS: [Boundary; 3] = [Boundary::Reflect, Boundary::Open, Boundary::Periodic];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Exact,
    Binned,
}

impl Method {
    pub fn parse(text: &str) -> KernelResult<Method> {
        match text {
            "exact" => Ok(Method::Exact),
            "binned" => Ok(Method::Binned),
            _ => Err(KernelError(format!("method must be one of 'exact', 'binned', got '{text}'"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bandwidth {
    Fixed(f64),
    Scott,
    Silverman,
}

impl Bandwidth {
    pub fn parse(text: &str) -> KernelResult<Bandwidth> {
        match text {
            "scott" => Ok(Bandwidth::Scott),
            "silverman" => Ok(Bandwidth::Silverman),
            _ => Err(KernelError(format!("bandwidth must be one of 'scott', 'silverman', got '{text}'"))),
        }
    }

    /// The bandwidth h for these particles.
    pub fn resolve(self, particles: &[f64]) -> KernelResult<f64> {
        let factor = match self {
            Bandwidth::Fixed(h) => return Ok(h),
            Bandwidth::Scott => (particles.len() as f64).powf(-0.2),
            Bandwidth::Silverman => (0.75 * particles.len() as f64).powf(-0.2),
        };
        let n = particles.len() as f64;
        let mean = particles.iter().sum::<f64>() / n;
        let var = particles.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        let std = var.sqrt();
        if particles.len() < 2 || std.is_nan() || std <= 0.0 {
            return Err(KernelError(
                "a bandwidth rule needs at least 2 distinct particles; pass a float bandwidth instead".into(),
            ));
        }
        Ok(std * factor)
    }
}

/// The interval the particles live in and how they are imaged across its ends.
#[derive(Debug, Clone, Copy)]
struct Domain {
    lo: f64,
    hi: f64,
    bc: Boundary,
}

impl Domain {
    fn of(grid: &[f64], bc: Boundary) -> KernelResult<Domain> {
        let (lo, last) = (grid[0], grid[grid.len() - 1]);
        let hi = match bc {
            Boundary::Periodic => lo + grid.len() as f64 * uniform_spacing(grid, "bc='periodic'")?,
            _ => last,
        };
        Ok(Domain { lo, hi, bc })
    }

    /// The positions through which a particle at `x` contributes.
    #[inline(always)]
    fn sources(&self, x: f64) -> ([f64; 3], usize) {
        match self.bc {
            Boundary::Reflect => ([x, 2.0 * self.lo - x, 2.0 * self.hi - x], 3),
            Boundary::Periodic => ([x, x - (self.hi - self.lo), x + (self.hi - self.lo)], 3),
            Boundary::Open => ([x, 0.0, 0.0], 1),
        }
    }

    fn check_inside(&self, particles: &[f64]) -> KernelResult<()> {
        let interval =
            if self.bc == Boundary::Periodic { "[grid[0], grid[0] + period]" } else { "[grid[0], grid[-1]]" };
        check_inside("particles", particles, interval, self.lo, self.hi)
    }
}

fn validate(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<Domain> {
    if particles.is_empty() {
        return Err(KernelError("particles must not be empty".into()));
    }
    if grid.len() < 2 {
        return Err(KernelError(format!("grid needs at least 2 points, got {}", grid.len())));
    }
    check_positive("bandwidth", h)?;
    check_finite("particles", particles)?;
    check_finite("grid", grid)?;
    if let Some(i) = grid.windows(2).position(|w| w[1] <= w[0]) {
        return Err(KernelError(format!(
            "grid must be strictly increasing, grid[{}] = {} >= grid[{}] = {}",
            i,
            grid[i],
            i + 1,
            grid[i + 1]
        )));
    }
    let domain = Domain::of(grid, bc)?;
    if bc != Boundary::Open {
        domain.check_inside(particles)?;
    }
    Ok(domain)
}

fn uniform_spacing(grid: &[f64], what: &str) -> KernelResult<f64> {
    let m = grid.len();
    let dx = (grid[m - 1] - grid[0]) / (m - 1) as f64;
    let tol = 1e-9 * (grid[m - 1] - grid[0]);
    match (0..m).position(|i| (grid[i] - (grid[0] + i as f64 * dx)).abs() > tol) {
        None => Ok(dx),
        Some(i) => Err(KernelError(format!(
            "grid must be uniformly spaced for {what} (grid[{i}] = {} is off the uniform grid)",
            grid[i]
        ))),
    }
}

/// Scale `density` by 1/(n h √(2π)); with walls or a period, to unit mass on the grid.
fn finish(mut density: Vec<f64>, grid: &[f64], n: usize, h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    let norm = 1.0 / (n as f64 * h * (2.0 * std::f64::consts::PI).sqrt());
    density.iter_mut().for_each(|d| *d *= norm);
    let mass = match bc {
        Boundary::Open => return Ok(density),
        Boundary::Reflect => trapezoid(&density, grid),
        Boundary::Periodic => density.iter().sum::<f64>() * (grid[1] - grid[0]),
    };
    if !(mass > 0.0 && mass.is_finite()) {
        return Err(KernelError(format!(
            "bandwidth {h} is too small for this grid: the density vanishes at every grid point"
        )));
    }
    density.iter_mut().for_each(|d| *d /= mass);
    Ok(density)
}

/// Trapezoid rule ∫ f dx on the (not necessarily uniform) grid.
pub fn trapezoid(f: &[f64], grid: &[f64]) -> f64 {
    f.windows(2).zip(grid.windows(2)).map(|(fw, gw)| 0.5 * (fw[0] + fw[1]) * (gw[1] - gw[0])).sum()
}

/// Particles per block of the recurrence path of `kde_exact` (each block sums into its own
/// density; the blocks are added in block order, whatever the thread count).
const EXACT_BLOCK: usize = 4096;
/// Fewest particles for which `kde_exact` uses the recurrence.
const RECURRENCE_MIN: usize = 1024;
/// Lanes of the recurrence: kernel values of grid points i and i + LANES are one factor apart.
const LANES: usize = 8;

/// The uniform spacing of `grid` when the exact sum may run by recurrence on it: grid points
/// within 10⁻⁹·h of the ideal points g0 + i·dx (the recurrence runs on the ideal points and
/// corrects to the actual ones to first order, leaving errors below 10⁻¹⁶ relative) and
/// dx ≤ h/2 (so that the recurrence factors stay within e^±32).
fn recurrence_spacing(grid: &[f64], h: f64) -> Option<f64> {
    let m = grid.len();
    if m < 2 {
        return None;
    }
    let dx = (grid[m - 1] - grid[0]) / (m - 1) as f64;
    if !(dx > 0.0 && dx <= 0.5 * h) {
        return None;
    }
    let off = grid.iter().enumerate().fold(0.0f64, |a, (i, &g)| a.max((g - (grid[0] + i as f64 * dx)).abs()));
    (off <= 1e-9 * h).then_some(dx)
}

/// Σ over the sources in `xs` of exp(−(g − s)²/(2h²)) on the uniform `grid` (spacing dx),
/// added into `out`, for the grid points with |g − s| ≤ 8h (decided on the actual grid values,
/// as the direct sum does).
///
/// Along the grid, with d_i = g0 + i·dx − s, the kernel values E_i = exp(−d_i²/(2h²)) obey
/// E_{i+L} = E_i·ρ_i, ρ_{i+L} = ρ_i·exp(−L²dx²/h²) (L = LANES), so after three exp per source
/// every further grid point costs two multiplications and an addition, in L independent lanes.
///
/// The recurrence runs on the ideal points; with δ_i = g_i − (g0 + i·dx) (`shift`, divided
/// by h²), exp(−(d_i + δ_i)²/(2h²)) = E_i·(1 − (g_i − s)·δ_i/h²) up to O((8δ/h)²) relative.
fn add_sources_by_recurrence(
    xs: &[f64],
    domain: &Domain,
    grid: &[f64],
    shift: &[f64],
    h: f64,
    dx: f64,
    out: &mut [f64],
) {
    let m = grid.len();
    let cut = CUTOFF * h;
    let (g0, inv_dx) = (grid[0], 1.0 / dx);
    let two_h2 = 2.0 * h * h;
    let lf = LANES as f64;
    let q = (-(dx * dx) / (h * h)).exp(); // R_{i+1}/R_i
    let q_lane = (-(lf * dx * dx) / (h * h)).exp(); // ρ_{l+1}/ρ_l
    let q_step = (-(lf * lf * dx * dx) / (h * h)).exp(); // ρ_{i+L}/ρ_i
    for &x in xs {
        let (src, count) = domain.sources(x);
        for &s in &src[..count] {
            // first grid point with g − s ≥ −cut, last with g − s ≤ cut
            let guess = ((s - cut - g0) * inv_dx).ceil().clamp(0.0, m as f64) as usize;
            let mut first = guess;
            while first > 0 && grid[first - 1] - s >= -cut {
                first -= 1;
            }
            while first < m && grid[first] - s < -cut {
                first += 1;
            }
            let guess = ((s + cut - g0) * inv_dx).floor().clamp(-1.0, (m - 1) as f64);
            let mut end = (guess + 1.0) as usize; // one past the last
            while end < m && grid[end] - s <= cut {
                end += 1;
            }
            while end > first && grid[end - 1] - s > cut {
                end -= 1;
            }
            if end <= first {
                continue;
            }
            let d0 = (g0 + first as f64 * dx) - s;
            let mut e = [0.0f64; LANES];
            let mut rho = [0.0f64; LANES];
            e[0] = (-(d0 * d0) / two_h2).exp();
            let mut r = (-(2.0 * d0 * dx + dx * dx) / two_h2).exp();
            rho[0] = (-(2.0 * lf * d0 * dx + lf * lf * dx * dx) / two_h2).exp();
            for l in 1..LANES {
                e[l] = e[l - 1] * r;
                r *= q;
                rho[l] = rho[l - 1] * q_lane;
            }
            let row = &mut out[first..end];
            let (gs, sh) = (&grid[first..end], &shift[first..end]);
            let mut blocks = row.chunks_exact_mut(LANES);
            let mut gb = gs.chunks_exact(LANES);
            let mut sb = sh.chunks_exact(LANES);
            for ((o, g), c) in (&mut blocks).zip(&mut gb).zip(&mut sb) {
                for l in 0..LANES {
                    o[l] += e[l] * (1.0 - (g[l] - s) * c[l]);
                    e[l] *= rho[l];
                    rho[l] *= q_step;
                }
            }
            let tail = blocks.into_remainder().iter_mut().zip(gb.remainder()).zip(sb.remainder());
            for (((o, &g), &c), &v) in tail.zip(e.iter()) {
                *o += v * (1.0 - (g - s) * c);
            }
        }
    }
}

/// The arguments of `add_sources_by_recurrence`, for `simd::dispatch`.
struct AddSources<'a> {
    xs: &'a [f64],
    domain: &'a Domain,
    grid: &'a [f64],
    shift: &'a [f64],
    h: f64,
    dx: f64,
    out: &'a mut [f64],
}

impl simd::Kernel for AddSources<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        add_sources_by_recurrence(self.xs, self.domain, self.grid, self.shift, self.h, self.dx, self.out)
    }
}

/// `add_sources_by_recurrence` with the widest vectors the CPU has (same arithmetic).
fn add_sources(xs: &[f64], domain: &Domain, grid: &[f64], shift: &[f64], h: f64, dx: f64, out: &mut [f64]) {
    simd::dispatch(AddSources { xs, domain, grid, shift, h, dx, out })
}

/// Direct-sum KDE of `particles` on `grid` with bandwidth `h`.
///
/// On a uniform grid fine enough for the bandwidth (`recurrence_spacing`) the sum runs
/// particle by particle, each adding its kernel values along the grid by recurrence
/// (`add_sources_by_recurrence`), over fixed blocks of particles added in block order;
/// otherwise grid chunk by grid chunk with one exp per term.
pub fn kde_exact(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    let domain = validate(particles, grid, h, bc)?;
    // The recurrence carries a relative error of about (|argument of the exp| + steps)·ε per
    // term, ≲ 10⁻¹⁴; it pays off only for many particles (few particles take the direct sum).
    let recurrence = if particles.len() >= RECURRENCE_MIN { recurrence_spacing(grid, h) } else { None };
    if let Some(dx) = recurrence {
        let m = grid.len();
        let shift: Vec<f64> =
            grid.iter().enumerate().map(|(i, &g)| (g - (grid[0] + i as f64 * dx)) / (h * h)).collect();
        let partial: Vec<Vec<f64>> = particles
            .par_chunks(EXACT_BLOCK)
            .map(|block| {
                let mut d = vec![0.0; m];
                add_sources(block, &domain, grid, &shift, h, dx, &mut d);
                d
            })
            .collect();
        let mut density = vec![0.0; m];
        for d in &partial {
            density.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
        return finish(density, grid, particles.len(), h, bc);
    }
    let cut = CUTOFF * h;
    let mut density = vec![0.0; grid.len()];
    density.par_chunks_mut(GRID_CHUNK).zip(grid.par_chunks(GRID_CHUNK)).for_each(|(out, g)| {
        let (a, b) = (g[0] - cut, g[g.len() - 1] + cut);
        for &x in particles {
            let (src, count) = domain.sources(x);
            for &s in &src[..count] {
                if s < a || s > b {
                    continue;
                }
                let first = g.partition_point(|&gv| gv - s < -cut);
                for (o, &gv) in out[first..].iter_mut().zip(&g[first..]) {
                    let d = gv - s;
                    if d > cut {
                        break;
                    }
                    let z = d / h;
                    *o += (-0.5 * (z * z)).exp();
                }
            }
        }
    });
    finish(density, grid, particles.len(), h, bc)
}

/// Linear-binning weights of `particles` on the uniform grid (g0, dx, m nodes); with
/// `wrap`, the cell after the last node ends on node 0.
fn linear_binning(particles: &[f64], g0: f64, dx: f64, m: usize, wrap: bool) -> Vec<f64> {
    let last_cell = if wrap { m - 1 } else { m - 2 };
    let partial: Vec<Vec<f64>> = particles
        .par_chunks(PARTICLE_BLOCK)
        .map(|block| {
            let mut w = vec![0.0; m];
            let mut w2 = vec![0.0; m];
            simd::dispatch(Bin { block, g0, dx, last_cell, w: &mut w, w2: &mut w2 });
            w.iter_mut().zip(&w2).for_each(|(a, b)| *a += b);
            w
        })
        .collect();
    // blocks are fixed-size and added in block order: the same sum for any thread count
    let mut weights = vec![0.0; m];
    for w in &partial {
        weights.iter_mut().zip(w).for_each(|(a, b)| *a += b);
    }
    weights
}

/// Linear binning of `block` into two histograms (even and odd particles, so that
/// consecutive particles do not wait for each other's stores; the caller adds them).
#[inline(always)]
fn bin_body(block: &[f64], g0: f64, dx: f64, last_cell: usize, w: &mut [f64], w2: &mut [f64]) {
    let m = w.len();
    let inv_dx = 1.0 / dx;
    let add = |w: &mut [f64], x: f64| {
        let t = (x - g0) * inv_dx;
        let j = (t.floor().max(0.0) as usize).min(last_cell);
        let f = t - j as f64;
        let next = if j + 1 == m { 0 } else { j + 1 };
        w[j] += 1.0 - f;
        w[next] += f;
    };
    let mut pairs = block.chunks_exact(2);
    for pair in &mut pairs {
        add(w, pair[0]);
        add(w2, pair[1]);
    }
    for &x in pairs.remainder() {
        add(w, x);
    }
}

/// The arguments of `bin_body`, for `simd::dispatch`: up to AVX2, for SSE4.1's rounding
/// instruction for `floor` (the baseline x86-64 target calls a library floor); the scattered
/// histogram updates gain nothing from wider vectors. Same results on every path.
struct Bin<'a> {
    block: &'a [f64],
    g0: f64,
    dx: f64,
    last_cell: usize,
    w: &'a mut [f64],
    w2: &'a mut [f64],
}

impl simd::Kernel for Bin<'_> {
    type Output = ();
    const AVX512: bool = false;
    #[inline(always)]
    fn run(self) {
        bin_body(self.block, self.g0, self.dx, self.last_cell, self.w, self.w2)
    }
}

/// The images of node j as extended node indices sign·j + offset.
fn node_images(m: usize, bc: Boundary) -> Vec<(i64, i64)> {
    let m = m as i64;
    match bc {
        Boundary::Open => vec![(1, 0)],
        Boundary::Reflect => vec![(1, 0), (-1, 0), (-1, 2 * (m - 1))],
        Boundary::Periodic => vec![(1, 0), (1, -m), (1, m)],
    }
}

/// Linear binning + truncated direct convolution on a uniform grid.
pub fn kde_binned(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    let domain = validate(particles, grid, h, bc)?;
    if bc == Boundary::Open {
        Domain { bc: Boundary::Reflect, ..domain }.check_inside(particles)?;
    }
    let dx = uniform_spacing(grid, "method='binned'")?;
    let m = grid.len();
    let weights = linear_binning(particles, grid[0], dx, m, bc == Boundary::Periodic);
    let reach = ((CUTOFF * h / dx).floor() as usize).min(2 * m) as i64;
    let kernel: Vec<f64> = (0..=reach)
        .map(|k| {
            let z = k as f64 * dx / h;
            (-0.5 * (z * z)).exp()
        })
        .collect();
    // the weights and their images on the extended nodes −reach .. m − 1 + reach (images are
    // added in the order of `node_images`), then a dense symmetric convolution
    let r = reach as usize;
    let mut ext = vec![0.0; m + 2 * r];
    for &(sign, offset) in &node_images(m, bc) {
        for (j, &w) in weights.iter().enumerate() {
            let e = sign * j as i64 + offset + reach;
            if e >= 0 && (e as usize) < ext.len() {
                ext[e as usize] += w;
            }
        }
    }
    let mut density = vec![0.0; m];
    density.par_chunks_mut(GRID_CHUNK * 4).enumerate().for_each(|(c, out)| {
        let base = c * GRID_CHUNK * 4 + r; // ext index of out[0]
        let len = out.len();
        for (o, &e) in out.iter_mut().zip(&ext[base..base + len]) {
            *o = kernel[0] * e;
        }
        for (k, &kv) in kernel.iter().enumerate().skip(1) {
            let (left, right) = (&ext[base - k..base - k + len], &ext[base + k..base + k + len]);
            for ((o, &a), &b) in out.iter_mut().zip(left).zip(right) {
                *o += kv * (a + b);
            }
        }
    });
    finish(density, grid, particles.len(), h, bc)
}

/// KDE by `method` with the bandwidth `bandwidth` resolved for these particles.
pub fn kde(
    particles: &[f64],
    grid: &[f64],
    bandwidth: Bandwidth,
    method: Method,
    bc: Boundary,
) -> KernelResult<Vec<f64>> {
    check_finite("particles", particles)?;
    let h = bandwidth.resolve(particles)?;
    match method {
        Method::Exact => kde_exact(particles, grid, h, bc),
        Method::Binned => kde_binned(particles, grid, h, bc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(m: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..m).map(|i| lo + (hi - lo) * i as f64 / (m - 1) as f64).collect()
    }

    fn particles(n: usize) -> Vec<f64> {
        let mut z = vec![0.0; n];
        crate::rng::fill_normals(3, 0, 9, 0, &mut z);
        z.iter().map(|v| crate::particles::fold_into(0.3 * v, -1.0, 1.0, Boundary::Reflect)).collect()
    }

    #[test]
    fn reflected_density_has_unit_mass() {
        let g = grid(201, -1.0, 1.0);
        let p = particles(5000);
        for d in
            [kde_exact(&p, &g, 0.05, Boundary::Reflect).unwrap(), kde_binned(&p, &g, 0.05, Boundary::Reflect).unwrap()]
        {
            assert!((trapezoid(&d, &g) - 1.0).abs() < 1e-13);
            assert!(d.iter().all(|&v| v >= 0.0));
        }
    }

    #[test]
    fn binned_is_close_to_exact() {
        let g = grid(401, -1.0, 1.0);
        let p = particles(20_000);
        let e = kde_exact(&p, &g, 0.08, Boundary::Reflect).unwrap();
        let b = kde_binned(&p, &g, 0.08, Boundary::Reflect).unwrap();
        let peak = e.iter().cloned().fold(0.0, f64::max);
        let worst = e.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3 * peak, "{worst} vs peak {peak}");
    }

    #[test]
    fn one_particle_far_from_walls_is_a_gaussian() {
        let g = grid(101, -5.0, 5.0);
        let d = kde_exact(&[0.0], &g, 0.5, Boundary::Open).unwrap();
        let exact = |x: f64| (-0.5 * (x / 0.5).powi(2)).exp() / (0.5 * (2.0 * std::f64::consts::PI).sqrt());
        for (i, &x) in g.iter().enumerate() {
            if x.abs() <= CUTOFF * 0.5 {
                assert!((d[i] - exact(x)).abs() <= 1e-14 * exact(x), "at {x}");
            } else {
                assert_eq!(d[i], 0.0, "truncated beyond 8h at {x}");
            }
        }
    }

    #[test]
    fn recurrence_equals_the_direct_sum() {
        // linspace-like grids (not exactly uniform) and several bandwidths, all boundaries
        let p = particles(3000);
        for (m, h) in [(201, 0.07), (1000, 0.02), (401, 0.3)] {
            let g = grid(m, -1.0, 1.0);
            let dx = recurrence_spacing(&g, h).expect("fine uniform grid");
            for bc in [Boundary::Open, Boundary::Reflect] {
                let domain = Domain::of(&g, bc).unwrap();
                let mut fast = vec![0.0; m];
                let shift: Vec<f64> =
                    g.iter().enumerate().map(|(i, &x)| (x - (g[0] + i as f64 * dx)) / (h * h)).collect();
                add_sources(&p, &domain, &g, &shift, h, dx, &mut fast);
                let cut = CUTOFF * h;
                let peak = fast.iter().cloned().fold(0.0, f64::max);
                for (i, &gv) in g.iter().enumerate() {
                    let mut direct = 0.0;
                    for &x in &p {
                        let (src, count) = domain.sources(x);
                        for &s in &src[..count] {
                            let d = gv - s;
                            if d.abs() <= cut {
                                direct += (-0.5 * (d / h) * (d / h)).exp();
                            }
                        }
                    }
                    assert!((fast[i] - direct).abs() <= 1e-13 * peak, "m={m} h={h} {bc:?} at {i}");
                }
            }
        }
    }

    #[test]
    fn periodic_density_wraps_around() {
        let m = 100;
        let g: Vec<f64> = (0..m).map(|i| i as f64 / m as f64).collect();
        let p = [0.01, 0.02, 0.98, 0.5];
        for d in [
            kde_exact(&p, &g, 0.03, Boundary::Periodic).unwrap(),
            kde_binned(&p, &g, 0.03, Boundary::Periodic).unwrap(),
        ] {
            assert!((d.iter().sum::<f64>() * 0.01 - 1.0).abs() < 1e-13);
            // node 0 sits between the particles at 0.98 and 0.01: it sees both sides
            assert!(d[0] > d[5] && (d[0] - d[99]).abs() < 0.2 * d[0]);
        }
    }

    #[test]
    fn bandwidth_rules_follow_scipy() {
        let x = [0.0, 1.0, 2.0, 4.0];
        let std = (((0.0f64 - 1.75).powi(2) + 0.75f64.powi(2) + 0.25f64.powi(2) + 2.25f64.powi(2)) / 3.0).sqrt();
        assert!((Bandwidth::Scott.resolve(&x).unwrap() - std * 4f64.powf(-0.2)).abs() < 1e-15);
        assert!((Bandwidth::Silverman.resolve(&x).unwrap() - std * 3f64.powf(-0.2)).abs() < 1e-15);
        assert!(Bandwidth::Scott.resolve(&[1.0]).is_err());
        assert!(Bandwidth::Scott.resolve(&[1.0, 1.0]).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let g = grid(11, 0.0, 1.0);
        assert!(kde_exact(&[], &g, 0.1, Boundary::Reflect).is_err());
        assert!(kde_exact(&[0.5], &g, 0.0, Boundary::Reflect).is_err());
        assert!(kde_exact(&[1.5], &g, 0.1, Boundary::Reflect).is_err());
        assert!(kde_exact(&[0.5], &[0.0, 0.0, 1.0], 0.1, Boundary::Open).is_err());
        assert!(kde_binned(&[0.5], &[0.0, 0.1, 1.0], 0.1, Boundary::Open).is_err());
        assert!(kde_exact(&[0.55], &g, 1e-6, Boundary::Reflect).is_err());
    }
}

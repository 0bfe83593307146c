//! Gaussian kernel density estimation of particles onto a grid.
//!
//!   m(g) = 1/(n h √(2π)) Σᵢ exp(−(g − xᵢ)²/(2h²)),   truncated where |g − xᵢ| > 8h
//!
//! (the neglected tail is below e⁻³² ≈ 1.3·10⁻¹⁴ of the kernel's peak). Units: 1/length.
//!
//! * "exact": the direct sum above, parallel over fixed chunks of grid points; every grid
//!   point adds its particles in index order, so the result does not depend on the threads.
//! * "binned": linear binning of the particles onto a uniform grid (weights 1 − f and f on
//!   the two nodes around a particle at fraction f of a cell), then a direct truncated
//!   convolution of the weights with the sampled kernel exp(−(k dx)²/(2h²)).
//!
//! Boundary "reflect" (no-flux walls at grid[0] = lo and grid[-1] = hi): every particle also
//! contributes through its images 2·lo − x and 2·hi − x, so no mass leaks through the walls;
//! the density is then divided by its trapezoid mass on the grid so that it integrates to
//! one exactly (that factor differs from one by the quadrature error only). Boundary "none":
//! no images, no normalisation.

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{check_finite, check_positive, KernelError, KernelResult};

/// Kernel truncation radius in bandwidths.
pub const CUTOFF: f64 = 8.0;
const GRID_CHUNK: usize = 64;
const PARTICLE_BLOCK: usize = 65_536;

fn validate(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<()> {
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
    match bc {
        Boundary::Reflect => check_inside(particles, grid),
        Boundary::Open => Ok(()),
        Boundary::Periodic => Err(KernelError("bc must be one of 'reflect', 'none', got 'periodic'".into())),
    }
}

fn check_inside(particles: &[f64], grid: &[f64]) -> KernelResult<()> {
    let (lo, hi) = (grid[0], grid[grid.len() - 1]);
    match particles.iter().position(|&x| x < lo || x > hi) {
        None => Ok(()),
        Some(i) => Err(KernelError(format!(
            "particles must lie in [grid[0], grid[-1]] = [{lo}, {hi}], particles[{i}] = {}",
            particles[i]
        ))),
    }
}

fn uniform_spacing(grid: &[f64]) -> KernelResult<f64> {
    let m = grid.len();
    let dx = (grid[m - 1] - grid[0]) / (m - 1) as f64;
    let tol = 1e-9 * (grid[m - 1] - grid[0]);
    match (0..m).position(|i| (grid[i] - (grid[0] + i as f64 * dx)).abs() > tol) {
        None => Ok(dx),
        Some(i) => Err(KernelError(format!(
            "grid must be uniformly spaced for method='binned' (grid[{i}] = {} is off the uniform grid)",
            grid[i]
        ))),
    }
}

/// Scale `density` by 1/(n h √(2π)), and with reflection by 1/(trapezoid mass).
fn finish(mut density: Vec<f64>, grid: &[f64], n: usize, h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    let norm = 1.0 / (n as f64 * h * (2.0 * std::f64::consts::PI).sqrt());
    density.iter_mut().for_each(|d| *d *= norm);
    if bc == Boundary::Reflect {
        let mass = trapezoid(&density, grid);
        if !(mass > 0.0 && mass.is_finite()) {
            return Err(KernelError(format!(
                "bandwidth {h} is too small for this grid: the density vanishes at every grid point"
            )));
        }
        density.iter_mut().for_each(|d| *d /= mass);
    }
    Ok(density)
}

/// Trapezoid rule ∫ f dx on the (not necessarily uniform) grid.
pub fn trapezoid(f: &[f64], grid: &[f64]) -> f64 {
    f.windows(2)
        .zip(grid.windows(2))
        .map(|(fw, gw)| 0.5 * (fw[0] + fw[1]) * (gw[1] - gw[0]))
        .sum()
}

/// The positions that contribute for a particle at `x`: itself and, with reflection, its images.
#[inline(always)]
fn sources(x: f64, lo: f64, hi: f64, bc: Boundary) -> ([f64; 3], usize) {
    match bc {
        Boundary::Reflect => ([x, 2.0 * lo - x, 2.0 * hi - x], 3),
        _ => ([x, 0.0, 0.0], 1),
    }
}

/// Direct-sum KDE of `particles` on `grid` with bandwidth `h`.
pub fn kde_exact(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    validate(particles, grid, h, bc)?;
    let (lo, hi) = (grid[0], grid[grid.len() - 1]);
    let cut = CUTOFF * h;
    let mut density = vec![0.0; grid.len()];
    density
        .par_chunks_mut(GRID_CHUNK)
        .zip(grid.par_chunks(GRID_CHUNK))
        .for_each(|(out, g)| {
            let (a, b) = (g[0] - cut, g[g.len() - 1] + cut);
            for &x in particles {
                let (src, count) = sources(x, lo, hi, bc);
                for &s in &src[..count] {
                    if s < a || s > b {
                        continue;
                    }
                    let first = g.partition_point(|&gv| gv - s < -cut);
                    for k in first..g.len() {
                        let d = g[k] - s;
                        if d > cut {
                            break;
                        }
                        let z = d / h;
                        out[k] += (-0.5 * (z * z)).exp();
                    }
                }
            }
        });
    finish(density, grid, particles.len(), h, bc)
}

/// Linear-binning weights of `particles` on the uniform grid (g0, dx, m nodes).
fn linear_binning(particles: &[f64], g0: f64, dx: f64, m: usize) -> Vec<f64> {
    let partial: Vec<Vec<f64>> = particles
        .par_chunks(PARTICLE_BLOCK)
        .map(|block| {
            let mut w = vec![0.0; m];
            for &x in block {
                let t = (x - g0) / dx;
                let j = (t.floor().max(0.0) as usize).min(m - 2);
                let f = t - j as f64;
                w[j] += 1.0 - f;
                w[j + 1] += f;
            }
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

/// Linear binning + truncated direct convolution on a uniform grid.
pub fn kde_binned(particles: &[f64], grid: &[f64], h: f64, bc: Boundary) -> KernelResult<Vec<f64>> {
    validate(particles, grid, h, bc)?;
    check_inside(particles, grid)?;
    let dx = uniform_spacing(grid)?;
    let m = grid.len();
    let weights = linear_binning(particles, grid[0], dx, m);
    let reach = ((CUTOFF * h / dx).floor() as usize).min(2 * (m - 1));
    let kernel: Vec<f64> = (0..=reach)
        .map(|k| {
            let z = k as f64 * dx / h;
            (-0.5 * (z * z)).exp()
        })
        .collect();
    let last = 2 * (m - 1);
    let mut density = vec![0.0; m];
    density.par_chunks_mut(GRID_CHUNK).enumerate().for_each(|(c, out)| {
        for (k, o) in out.iter_mut().enumerate() {
            let i = c * GRID_CHUNK + k;
            let (j0, j1) = (i.saturating_sub(reach), (i + reach).min(m - 1));
            let mut acc = 0.0;
            for j in j0..=j1 {
                acc += weights[j] * kernel[i.abs_diff(j)];
            }
            if bc == Boundary::Reflect {
                // image about lo: node j at offset i + j; image about hi: offset 2(m−1) − i − j
                for j in 0..m {
                    let near = i + j;
                    if near > reach {
                        break;
                    }
                    acc += weights[j] * kernel[near];
                }
                for j in (0..m).rev() {
                    let far = last - i - j;
                    if far > reach {
                        break;
                    }
                    acc += weights[j] * kernel[far];
                }
            }
            *o = acc;
        }
    });
    finish(density, grid, particles.len(), h, bc)
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
        for d in [kde_exact(&p, &g, 0.05, Boundary::Reflect).unwrap(), kde_binned(&p, &g, 0.05, Boundary::Reflect).unwrap()] {
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

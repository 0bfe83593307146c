//! Euler–Maruyama particles for the Fokker–Planck equation: one step of dX = b dt + σ dW for
//! every particle (`evolve_particles`), folded back into [lo, hi], and the forward march
//! (`particles_forward`): drift −∂x u, CFL-limited sub-steps, the KDE at every output time.
//!
//! The maths: see mfg_ensemble/kernels/reference/particles.py.
//!
//! Implementation: particles are moved in fixed chunks (`CHUNK`, in parallel), each chunk's
//! normals made in one batch by `rng::fill_normals` from the particles' indices, so the result
//! does not depend on how Rayon splits the work. The move and the fold are one branch-free,
//! SIMD-dispatched loop (`step_body`) with the bits of `fold_into`.

use rayon::prelude::*;

use crate::boundary::{Boundary, REFLECT_OR_PERIODIC};
use crate::error::{
    all_inside, check_finite, check_inside, check_non_negative, check_positive, KernelError, KernelResult,
};
use crate::kde::{kde, Bandwidth, Method};
use crate::rng::{fill_normals, STREAM_EM};
use crate::simd;
use crate::substeps::{floors, substeps, Marching};

/// Particles per parallel task: a multiple of 4 (one Philox block gives four normals).
const CHUNK: usize = 8192;

/// Bring `x` back into [lo, hi] for the boundary condition `bc` (Reflect or Periodic).
#[inline]
pub fn fold_into(x: f64, lo: f64, hi: f64, bc: Boundary) -> f64 {
    let length = hi - lo;
    let y = match bc {
        Boundary::Periodic => {
            let y = (x - lo).rem_euclid(length);
            if y >= length {
                0.0
            } else {
                y
            }
        }
        _ => {
            let y = (x - lo).rem_euclid(2.0 * length);
            if y > length {
                2.0 * length - y
            } else {
                y
            }
        }
    };
    (lo + y).clamp(lo, hi)
}

/// Arguments of one Euler–Maruyama step that are not arrays.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub dt: f64,
    pub sigma: f64,
    pub lo: f64,
    pub hi: f64,
    pub seed: u64,
    pub step: u64,
    pub bc: Boundary,
}

impl Step {
    pub fn validate(&self) -> KernelResult<()> {
        check_positive("dt", self.dt)?;
        check_non_negative("sigma", self.sigma)?;
        if !(self.lo.is_finite() && self.hi.is_finite() && self.lo < self.hi) {
            return Err(KernelError(format!(
                "lo and hi must be finite with lo < hi, got lo={}, hi={}",
                self.lo, self.hi
            )));
        }
        self.bc.check(&REFLECT_OR_PERIODIC)?;
        Ok(())
    }
}

/// One Euler–Maruyama step of the particles `x` with per-particle drift `drift`.
pub fn evolve_particles(x: &[f64], drift: &[f64], p: &Step) -> KernelResult<Vec<f64>> {
    p.validate()?;
    if drift.len() != x.len() {
        return Err(KernelError(format!(
            "drift must have one value per particle: len(x)={}, len(drift)={}",
            x.len(),
            drift.len()
        )));
    }
    check_finite("x", x)?;
    check_finite("drift", drift)?;
    check_inside("x", x, "[lo, hi]", p.lo, p.hi)?;
    let mut out = x.to_vec();
    advance_slice(&mut out, drift, p);
    Ok(out)
}

/// Move every particle in place by one step; `drift(i, x_i)` gives its drift.
fn advance(x: &mut [f64], drift: impl Fn(usize, f64) -> f64 + Sync, p: &Step) {
    advance_chunks(x, p, |start, xs, out| {
        for (k, (o, &xi)) in out.iter_mut().zip(xs.iter()).enumerate() {
            *o = drift(start + k, xi);
        }
    });
}

/// Move every particle in place by one step with the drift `drift[i]` of particle i.
fn advance_slice(x: &mut [f64], drift: &[f64], p: &Step) {
    advance_chunks(x, p, |start, xs, out| out.copy_from_slice(&drift[start..start + xs.len()]));
}

/// The step, chunk by chunk (in parallel; a particle's noise depends on its index only):
/// `fill_drift(start, x_chunk, out)` writes the chunk's drifts, `fill_normals` its normals
/// in one batch, then `step_chunk` moves the particles and folds them back.
fn advance_chunks(x: &mut [f64], p: &Step, fill_drift: impl Fn(usize, &[f64], &mut [f64]) + Sync) {
    let scale = p.sigma * p.dt.sqrt();
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * CHUNK;
        let mut noise = [0.0; CHUNK];
        let noise = &mut noise[..chunk.len()];
        fill_normals(p.seed, p.step, STREAM_EM, start as u64, noise);
        let mut drift = [0.0; CHUNK];
        let drift = &mut drift[..chunk.len()];
        fill_drift(start, chunk, drift);
        simd::dispatch(StepChunk { x: chunk, drift, noise, scale, p });
    });
}

/// x ← fold(x + drift·dt + scale·noise), element by element, branch-free so that it
/// vectorises.
///
/// The fold is `fold_into`'s arithmetic for |x' − lo| < period (the remainder of y = x' − lo is
/// then y, or y + period for y < 0, exactly): the same bits. Particles thrown farther keep
/// x' here, which lies outside [lo, hi], and a second pass sends those through `fold_into`.
#[inline(always)]
fn step_body(x: &mut [f64], drift: &[f64], noise: &[f64], scale: f64, p: &Step) {
    let n = x.len();
    let (drift, noise) = (&drift[..n], &noise[..n]);
    let (dt, lo, hi) = (p.dt, p.lo, p.hi);
    let length = hi - lo;
    if p.bc == Boundary::Periodic {
        for k in 0..n {
            let moved = x[k] + drift[k] * dt + scale * noise[k];
            let y = moved - lo;
            let r = if y < 0.0 { y + length } else { y };
            let r = if r >= length { 0.0 } else { r };
            let folded = (lo + r).max(lo).min(hi);
            x[k] = if y.abs() < length { folded } else { moved };
        }
    } else {
        let period = 2.0 * length;
        for k in 0..n {
            let moved = x[k] + drift[k] * dt + scale * noise[k];
            let y = moved - lo;
            let r = if y < 0.0 { y + period } else { y };
            let r = if r > length { period - r } else { r };
            let folded = (lo + r).max(lo).min(hi);
            x[k] = if y.abs() < period { folded } else { moved };
        }
    }
    if !all_inside(x, lo, hi) {
        for xi in x.iter_mut() {
            if !(*xi >= lo && *xi <= hi) {
                *xi = fold_into(*xi, lo, hi, p.bc);
            }
        }
    }
}

/// The arguments of `step_body`, for `simd::dispatch`.
struct StepChunk<'a> {
    x: &'a mut [f64],
    drift: &'a [f64],
    noise: &'a [f64],
    scale: f64,
    p: &'a Step,
}

impl simd::Kernel for StepChunk<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        step_body(self.x, self.drift, self.noise, self.scale, self.p)
    }
}

/// Parameters of the forward march `particles_forward` that are not arrays.
#[derive(Debug, Clone, Copy)]
pub struct ForwardParams {
    pub sigma: f64,
    pub horizon: f64,
    pub lo: f64,
    pub hi: f64,
    pub bc: Boundary,
    pub seed: u64,
    pub method: Method,
    pub bandwidth: Bandwidth,
}

/// ∂x u at the nodes of one output row: central differences, 0 at reflecting walls
/// (the mirror ghost node), wrapped for a periodic grid.
pub fn node_gradient(u: &[f64], dx: f64, bc: Boundary) -> Vec<f64> {
    let n = u.len();
    (0..n)
        .map(|i| match (bc, i) {
            (Boundary::Periodic, _) => (u[(i + 1) % n] - u[(i + n - 1) % n]) / (2.0 * dx),
            (_, 0) => 0.0,
            (_, i) if i == n - 1 => 0.0,
            _ => (u[i + 1] - u[i - 1]) / (2.0 * dx),
        })
        .collect()
}

/// Linear interpolation of node values `v` (nodes lo + i·dx) at `x`; periodic grids wrap.
#[inline]
pub fn interpolate(v: &[f64], lo: f64, dx: f64, x: f64, periodic: bool) -> f64 {
    let n = v.len();
    let t = (x - lo) / dx;
    let last_cell = if periodic { n - 1 } else { n - 2 };
    let j = (t.floor().max(0.0) as usize).min(last_cell);
    let f = t - j as f64;
    (1.0 - f) * v[j] + f * v[(j + 1) % n]
}

/// The Philox step of sub-step `s` of output interval `j` in the forward march: (j << 32) | s.
/// Sub-step counts are at most `MAX_SUBSTEPS` < 2³², so distinct (j, s) never share a step.
#[inline]
pub fn noise_step(j: usize, s: usize) -> u64 {
    ((j as u64) << 32) | s as u64
}

/// The particle Fokker–Planck march: from the particles `x0` at t = 0, Euler–Maruyama steps
/// with drift α = −∂x u (u of shape (nt, nx) on `grid`, linear in t between output times, ∂x u
/// by `node_gradient`, linear in x between nodes), and the KDE of the particles at every output
/// time. Output interval j (length Δt) takes k_j = max(min_substeps[j], ⌈Δt·G_j/dx⌉) ≥ 1 equal
/// sub-steps Δt/k_j, G_j the max |∂x u| of the output rows at both ends of the interval (no
/// particle drifts more than one cell per step); sub-step s of interval j draws its noise from
/// Philox step `noise_step(j, s)` = (j << 32) | s, so the march is a pure function of
/// (x0, u, seed, k) and changing k_j changes the noise of interval j only. The k_j taken are
/// returned.
pub fn particles_forward(
    x0: &[f64],
    u: &[f64],
    grid: &[f64],
    nt: usize,
    p: &ForwardParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Marching> {
    let nx = grid.len();
    let kde_bc = if p.bc == Boundary::Periodic { Boundary::Periodic } else { Boundary::Reflect };
    let mut values = vec![f64::NAN; nt * nx];
    let (substeps, diverged) = drive(x0, u, grid, nt, p, min_substeps, |j, x| {
        values[j * nx..(j + 1) * nx].copy_from_slice(&kde(x, grid, p.bandwidth, p.method, kde_bc)?);
        Ok(())
    })?;
    Ok(Marching { values, substeps, diverged })
}

/// The particle motion of `particles_forward`: `at_output(j, x)` gets the particles at every output
/// time t_j reached (j = 0 for x0). Returns the sub-step counts and the divergence reason.
fn drive(
    x0: &[f64],
    u: &[f64],
    grid: &[f64],
    nt: usize,
    p: &ForwardParams,
    min_substeps: Option<&[usize]>,
    mut at_output: impl FnMut(usize, &[f64]) -> KernelResult<()>,
) -> KernelResult<(Vec<usize>, Option<String>)> {
    let nx = grid.len();
    if nx < 3 || nt < 2 || u.len() != nt * nx {
        return Err(KernelError(format!(
            "u must have shape (nt, nx) with nt >= 2 and nx = len(grid) >= 3, got {} values for nt={nt}, nx={nx}",
            u.len()
        )));
    }
    if x0.is_empty() {
        return Err(KernelError("x0 must not be empty".into()));
    }
    check_positive("T", p.horizon)?;
    let step = Step { dt: 1.0, sigma: p.sigma, lo: p.lo, hi: p.hi, seed: p.seed, step: 0, bc: p.bc };
    step.validate()?;
    check_finite("u", u)?;
    check_finite("x0", x0)?;
    check_inside("x0", x0, "[lo, hi]", p.lo, p.hi)?;
    let floor = floors(min_substeps, nt - 1)?;
    let periodic = p.bc == Boundary::Periodic;
    let dx = (p.hi - p.lo) / if periodic { nx } else { nx - 1 } as f64;
    let dt_out = p.horizon / (nt - 1) as f64;
    let mut counts = vec![0; nt - 1];
    let mut x = x0.to_vec();
    at_output(0, &x)?;
    let mut grad_now = node_gradient(&u[..nx], dx, p.bc);
    for j in 0..nt - 1 {
        let grad_next = node_gradient(&u[(j + 1) * nx..(j + 2) * nx], dx, p.bc);
        let gmax = grad_now.iter().chain(&grad_next).fold(0.0_f64, |a, v| a.max(v.abs()));
        let Some((k, dt)) = substeps(dt_out, dx / gmax, floor[j]) else {
            let reason = format!("FP particles: the drift blew up near t = {}", j as f64 * dt_out);
            return Ok((counts, Some(reason)));
        };
        for s in 0..k {
            let theta = s as f64 / k as f64;
            let grad: Vec<f64> = grad_now.iter().zip(&grad_next).map(|(a, b)| (1.0 - theta) * a + theta * b).collect();
            let params = Step { dt, step: noise_step(j, s), ..step };
            advance(&mut x, |_, xi| -interpolate(&grad, p.lo, dx, xi, periodic), &params);
        }
        counts[j] = k;
        at_output(j + 1, &x)?;
        grad_now = grad_next;
    }
    Ok((counts, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(bc: Boundary) -> Step {
        Step { dt: 0.01, sigma: 0.5, lo: -1.0, hi: 1.0, seed: 42, step: 3, bc }
    }

    #[test]
    fn folding_stays_inside_and_is_a_reflection() {
        for bc in [Boundary::Reflect, Boundary::Periodic] {
            for &x in &[-7.3, -1.0 - 1e-17, -1.0, 0.2, 1.0, 1.0 + 1e-300, 2.9, 1e6, -1e-20] {
                let y = fold_into(x, -1.0, 1.0, bc);
                assert!((-1.0..=1.0).contains(&y), "{bc:?} {x} -> {y}");
            }
        }
        assert!((fold_into(1.25, -1.0, 1.0, Boundary::Reflect) - 0.75).abs() < 1e-15);
        assert!((fold_into(-1.5, -1.0, 1.0, Boundary::Reflect) + 0.5).abs() < 1e-15);
        assert!((fold_into(1.25, -1.0, 1.0, Boundary::Periodic) + 0.75).abs() < 1e-15);
    }

    #[test]
    fn result_is_independent_of_chunking() {
        let n = 3 * CHUNK + 5;
        let x: Vec<f64> = (0..n).map(|i| -0.9 + 1.8 * i as f64 / n as f64).collect();
        let drift: Vec<f64> = x.iter().map(|v| -v).collect();
        let all = evolve_particles(&x, &drift, &step(Boundary::Reflect)).unwrap();
        // particle i alone sees the same noise as in the whole array
        for &i in &[0usize, 1, 5, CHUNK - 1, CHUNK, 2 * CHUNK + 3, n - 1] {
            let mut noise = [0.0];
            fill_normals(42, 3, STREAM_EM, i as u64, &mut noise);
            let expect = fold_into(x[i] + drift[i] * 0.01 + 0.5 * 0.1 * noise[0], -1.0, 1.0, Boundary::Reflect);
            assert_eq!(all[i], expect);
        }
    }

    fn forward_params(bc: Boundary) -> ForwardParams {
        ForwardParams {
            sigma: 0.05,
            horizon: 1.0,
            lo: -1.0,
            hi: 1.0,
            bc,
            seed: 9,
            method: Method::Exact,
            bandwidth: Bandwidth::Fixed(0.1),
        }
    }

    /// The particles at every output time of a march.
    fn positions(
        x0: &[f64],
        u: &[f64],
        grid: &[f64],
        nt: usize,
        p: &ForwardParams,
        floor: &[usize],
    ) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut rows = Vec::new();
        let (k, diverged) = drive(x0, u, grid, nt, p, Some(floor), |_, x| {
            rows.push(x.to_vec());
            Ok(())
        })
        .unwrap();
        assert!(diverged.is_none());
        (rows, k)
    }

    #[test]
    fn the_noise_of_an_interval_does_not_depend_on_the_substeps_of_another() {
        // zero drift (k_cfl = 1), particles near the centre and small σ (no wall is reached):
        // over interval 1 (one sub-step of Δt = 0.5) each particle moves by σ·√Δt·ξ_i with ξ
        // from Philox step (1 << 32) | 0, whether interval 0 took 1 or 3 sub-steps.
        let (nx, nt) = (21, 3);
        let grid: Vec<f64> = (0..nx).map(|i| -1.0 + 0.1 * i as f64).collect();
        let u = vec![0.0; nt * nx];
        let x0: Vec<f64> = (0..1000).map(|i| -0.1 + 0.2 * i as f64 / 1000.0).collect();
        let p = forward_params(Boundary::Reflect);
        let (one, k_one) = positions(&x0, &u, &grid, nt, &p, &[1, 1]);
        let (three, k_three) = positions(&x0, &u, &grid, nt, &p, &[3, 1]);
        assert_eq!((k_one, k_three), (vec![1, 1], vec![3, 1]));
        assert_ne!(one[1], three[1], "interval 0 must differ");
        let mut xi = vec![0.0; x0.len()];
        fill_normals(p.seed, 1 << 32, STREAM_EM, 0, &mut xi);
        let scale = p.sigma * 0.5_f64.sqrt();
        for run in [&one, &three] {
            for i in 0..x0.len() {
                assert!(run[2][i].abs() < 0.9);
                assert!((run[2][i] - run[1][i] - scale * xi[i]).abs() < 1e-14, "particle {i}");
            }
        }
        // and interval 0 of the first run drew Philox step 0
        let mut xi0 = vec![0.0; x0.len()];
        fill_normals(p.seed, 0, STREAM_EM, 0, &mut xi0);
        assert!((0..x0.len()).all(|i| (one[1][i] - x0[i] - scale * xi0[i]).abs() < 1e-14));
        assert_eq!(noise_step(3, 7), 3 * (1u64 << 32) + 7);
    }

    #[test]
    fn the_march_honours_the_floor_and_returns_the_densities() {
        let (nx, nt) = (21, 4);
        let grid: Vec<f64> = (0..nx).map(|i| -1.0 + 0.1 * i as f64).collect();
        let u: Vec<f64> = (0..nt * nx).map(|k| grid[k % nx].powi(2)).collect();
        let x0: Vec<f64> = (0..500).map(|i| -0.5 + i as f64 / 500.0).collect();
        let p = forward_params(Boundary::Reflect);
        let free = particles_forward(&x0, &u, &grid, nt, &p, None).unwrap();
        let floor = [free.substeps[0] + 4, 1, 1];
        let floored = particles_forward(&x0, &u, &grid, nt, &p, Some(&floor)).unwrap();
        assert_eq!(floored.substeps, vec![floor[0], free.substeps[1], free.substeps[2]]);
        assert!(floored.values.iter().all(|v| v.is_finite()));
        assert!(particles_forward(&x0, &u, &grid, nt, &p, Some(&[1, 1])).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = [0.0, 0.5];
        assert!(evolve_particles(&x, &[0.0], &step(Boundary::Reflect)).is_err());
        assert!(evolve_particles(&[0.0, 2.0], &[0.0, 0.0], &step(Boundary::Reflect)).is_err());
        let mut s = step(Boundary::Reflect);
        s.lo = 1.0;
        assert!(evolve_particles(&x, &[0.0, 0.0], &s).is_err());
        let mut s = step(Boundary::Reflect);
        s.dt = -1.0;
        assert!(evolve_particles(&x, &[0.0, 0.0], &s).is_err());
        assert!(evolve_particles(&x, &[f64::NAN, 0.0], &step(Boundary::Reflect)).is_err());
    }
}

//! Euler–Maruyama for the particle Fokker–Planck equation.
//!
//! One step of dX = b dt + σ dW for every particle:
//!
//!   x' = x + b·dt + σ·√dt·ξ,   ξ ~ N(0, 1)
//!
//! with ξ for particle i at step `step` the normal number i of the Philox sequence
//! (seed, step, STREAM_EM) of `rng` — a pure function of (seed, step, i), so the result does
//! not depend on how Rayon splits the work. x' is then brought back into [lo, hi]:
//! "reflect" folds it about the walls (as often as needed), "periodic" wraps it into [lo, hi).

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::rng::{fill_normals, STREAM_EM};

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
        if self.bc == Boundary::Open {
            return Err(KernelError("bc must be one of 'reflect', 'periodic', got 'none'".into()));
        }
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
    if let Some(i) = x.iter().position(|&v| v < p.lo || v > p.hi) {
        return Err(KernelError(format!(
            "x must lie in [lo, hi] = [{}, {}], x[{i}] = {}",
            p.lo, p.hi, x[i]
        )));
    }
    let scale = p.sigma * p.dt.sqrt();
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * CHUNK;
        fill_normals(p.seed, p.step, STREAM_EM, start as u64, chunk);
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = start + k;
            let moved = x[i] + drift[i] * p.dt + scale * *o;
            *o = fold_into(moved, p.lo, p.hi, p.bc);
        }
    });
    Ok(out)
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

//! The Fokker–Planck equation of the MFG marched forward by a conservative finite-volume
//! scheme: upwind drift, central diffusion, explicit Euler with CFL-limited sub-steps per
//! output interval. Mass is conserved to rounding and m stays ≥ 0.
//!
//! The maths: see mfg_ensemble/kernels/reference/fv.py.

use crate::boundary::{Boundary, REFLECT_OR_PERIODIC};
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::substeps::{floors, substeps, Marching};

#[derive(Debug, Clone, Copy)]
pub struct FvParams {
    pub dx: f64,
    pub sigma: f64,
    pub horizon: f64,
    pub bc: Boundary,
    pub cfl: f64,
}

/// Number of faces that carry flux: nx − 1 interior faces, plus the wrap-around face if periodic.
fn face_count(nx: usize, bc: Boundary) -> usize {
    if bc == Boundary::Periodic {
        nx
    } else {
        nx - 1
    }
}

/// Face drifts α_{i+½} = −(u_{i+1} − u_i)/dx of one output row of u.
fn face_drift(u: &[f64], dx: f64, bc: Boundary) -> Vec<f64> {
    let nx = u.len();
    (0..face_count(nx, bc)).map(|i| -(u[(i + 1) % nx] - u[i]) / dx).collect()
}

/// Control-volume widths.
pub fn cell_widths(nx: usize, dx: f64, bc: Boundary) -> Vec<f64> {
    let mut w = vec![dx; nx];
    if bc != Boundary::Periodic {
        w[0] = 0.5 * dx;
        w[nx - 1] = 0.5 * dx;
    }
    w
}

fn validate(u: &[f64], m0: &[f64], nt: usize, p: &FvParams) -> KernelResult<()> {
    let nx = m0.len();
    if nx < 3 {
        return Err(KernelError(format!("m0 needs at least 3 points, got {nx}")));
    }
    if nt < 2 {
        return Err(KernelError(format!("nt must be >= 2, got {nt}")));
    }
    if u.len() != nt * nx {
        return Err(KernelError(format!("u must have shape (nt, nx) = ({nt}, {nx}), got {} values", u.len())));
    }
    check_positive("dx", p.dx)?;
    check_non_negative("sigma", p.sigma)?;
    check_positive("T", p.horizon)?;
    if !(p.cfl > 0.0 && p.cfl <= 1.0) {
        return Err(KernelError(format!("cfl must be in (0, 1], got {}", p.cfl)));
    }
    p.bc.check(&REFLECT_OR_PERIODIC)?;
    check_finite("u", u)?;
    check_finite("m0", m0)?;
    match m0.iter().position(|&v| v < 0.0) {
        Some(i) => Err(KernelError(format!("m0 must be >= 0, m0[{i}] = {}", m0[i]))),
        None => Ok(()),
    }
}

/// m at the nt output times, row-major (nt, nx), transported by the drift −∂x u of `u` (nt, nx);
/// `min_substeps` (nt − 1 values ≥ 1, or `None` for ones) are the floors of the sub-step counts.
pub fn fv_forward(
    u: &[f64],
    m0: &[f64],
    nt: usize,
    p: &FvParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Marching> {
    validate(u, m0, nt, p)?;
    let floor = floors(min_substeps, nt - 1)?;
    let nx = m0.len();
    let nf = face_count(nx, p.bc);
    let diffusion = 0.5 * p.sigma * p.sigma;
    let dt_out = p.horizon / (nt - 1) as f64;
    let widths = cell_widths(nx, p.dx, p.bc);
    let mut out = Marching::new(nt, nx);
    out.row_mut(0, nx).copy_from_slice(m0);
    let mut m = m0.to_vec();
    let mut flux = vec![0.0; nf];
    let mut drift_now = face_drift(&u[..nx], p.dx, p.bc);
    for j in 0..nt - 1 {
        let drift_next = face_drift(&u[(j + 1) * nx..(j + 2) * nx], p.dx, p.bc);
        let amax = drift_now.iter().chain(&drift_next).fold(0.0_f64, |a, v| a.max(v.abs()));
        let Some((k, dt)) = substeps(dt_out, p.cfl * p.dx / (2.0 * amax + 2.0 * diffusion / p.dx), floor[j]) else {
            out.diverged = Some(format!("FP: the CFL sub-step collapsed near t = {}", j as f64 * dt_out));
            return Ok(out);
        };
        for s in 0..k {
            let theta = s as f64 / k as f64;
            for (i, fl) in flux.iter_mut().enumerate() {
                let a = (1.0 - theta) * drift_now[i] + theta * drift_next[i];
                let (here, next) = (m[i], m[(i + 1) % nx]);
                *fl = a.max(0.0) * here + a.min(0.0) * next - diffusion * (next - here) / p.dx;
            }
            for i in 0..nx {
                let right = if i < nf { flux[i] } else { 0.0 };
                let left = match (i, p.bc) {
                    (0, Boundary::Periodic) => flux[nx - 1],
                    (0, _) => 0.0,
                    _ => flux[i - 1],
                };
                m[i] -= dt / widths[i] * (right - left);
            }
        }
        out.substeps[j] = k;
        if let Some(i) = m.iter().position(|v| !v.is_finite()) {
            out.diverged = Some(format!("FP: m is not finite at t = {}, x index {i}", (j + 1) as f64 * dt_out));
            return Ok(out);
        }
        out.row_mut(j + 1, nx).copy_from_slice(&m);
        drift_now = drift_next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mass(m: &[f64], w: &[f64]) -> f64 {
        m.iter().zip(w).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn mass_is_conserved_and_density_stays_non_negative() {
        for bc in [Boundary::Reflect, Boundary::Periodic] {
            let (nx, nt) = (51, 21);
            let dx = 1.0 / (nx - 1) as f64;
            let u: Vec<f64> = (0..nt * nx).map(|k| 3.0 * ((k % nx) as f64 * dx * 6.0).sin()).collect();
            let m0: Vec<f64> = (0..nx).map(|i| if (10..20).contains(&i) { 5.0 } else { 0.0 }).collect();
            let p = FvParams { dx, sigma: 0.3, horizon: 1.0, bc, cfl: 0.9 };
            let s = fv_forward(&u, &m0, nt, &p, None).unwrap();
            let w = cell_widths(nx, dx, bc);
            let m_start = mass(&m0, &w);
            for j in 0..nt {
                let row = &s.values[j * nx..(j + 1) * nx];
                assert!((mass(row, &w) - m_start).abs() < 1e-13 * m_start);
                assert!(row.iter().all(|&v| v >= 0.0));
            }
        }
    }

    #[test]
    fn the_floor_sets_the_substeps_where_it_dominates() {
        let (nx, nt) = (41, 6);
        let dx = 1.0 / 40.0;
        let u: Vec<f64> = (0..nt * nx).map(|k| ((k % nx) as f64 * dx * 5.0).sin()).collect();
        let m0 = vec![1.0; nx];
        let p = FvParams { dx, sigma: 0.2, horizon: 1.0, bc: Boundary::Reflect, cfl: 0.9 };
        let free = fv_forward(&u, &m0, nt, &p, None).unwrap();
        let floor = [free.substeps[0] + 5, 1, free.substeps[2] * 3, 1, 1];
        let floored = fv_forward(&u, &m0, nt, &p, Some(&floor)).unwrap();
        assert_eq!(floored.substeps, vec![floor[0], free.substeps[1], floor[2], free.substeps[3], free.substeps[4]]);
        assert!(fv_forward(&u, &m0, nt, &p, Some(&[1; 4])).is_err());
    }

    #[test]
    fn pure_diffusion_flattens_to_uniform() {
        let (nx, nt) = (41, 11);
        let dx = 1.0 / 40.0;
        let m0: Vec<f64> = (0..nx).map(|i| 1.0 + (std::f64::consts::PI * i as f64 * dx).cos()).collect();
        let p = FvParams { dx, sigma: 1.0, horizon: 2.0, bc: Boundary::Reflect, cfl: 0.9 };
        let s = fv_forward(&vec![0.0; nt * nx], &m0, nt, &p, None).unwrap();
        let last = &s.values[(nt - 1) * nx..];
        // the cos mode decays like exp(−π²/2·t): e^(−π²) ≈ 5e-5 at t = 2
        assert!(last.iter().all(|v| (v - 1.0).abs() < 1e-3));
    }
}

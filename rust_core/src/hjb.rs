//! The Hamilton–Jacobi–Bellman equation of the MFG, solved backward in time.
//!
//!   −∂t u − (σ²/2) ∂xx u + H(∂x u) = f(t, x),   u(T, x) = g(x),   H(p) = p²/2
//!
//! In backward time s = T − t this reads ∂s u = (σ²/2) ∂xx u − H(∂x u) + f. Space: the
//! HJ-WENO5 derivatives d⁻, d⁺ of `weno` in the monotone Godunov Hamiltonian of the convex H,
//!
//!   Ĥ(d⁻, d⁺) = ½ max(max(d⁻, 0)², min(d⁺, 0)²),
//!
//! and the central second difference (u_{i+1} − 2u_i + u_{i−1})/dx² with the same ghost
//! nodes (mirror for "reflect": zero flux at the walls; wrap for "periodic"). Time: TVD-RK3
//! (Shu–Osher) from one output time to the previous one, f linear in t between output times.
//! With the step limit δ(p) = cfl/(p/dx + σ²/dx²) and pmax = max|d±| of a state, output
//! interval j (length Δt = T/(nt − 1)) takes k_j = max(min_substeps[j], ⌈Δt/δ(pmax₀)⌉) equal
//! sub-steps Δt/k_j, pmax₀ taken at the interval's start, so they add up to Δt exactly. At the
//! start of every sub-step, and at the interval's end, the CFL is checked with the current
//! slopes: if Δt/k_j > 2·δ(pmax) (a CFL number above 2·cfl, the slopes steepened within the
//! interval) the interval is
//! restarted from its start with ⌈Δt/δ(pmax)⌉ sub-steps, clamped to [2·k_j, 8·k_j] (the
//! slopes of an overshot state can be far steeper than the solution's). A limit that asks
//! for more than 10⁶ sub-steps (or is NaN), or a non-finite u, ends the sweep as diverged.
//! The k_j taken are returned. Units: u in cost, f in cost/time, σ in length/√time.

use crate::boundary::Boundary;
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::sweep::{floors, substeps, Sweep, MAX_SUBSTEPS};
use crate::weno::{derivatives_unchecked, Variant, MIN_NODES};

#[derive(Debug, Clone, Copy)]
pub struct HjbParams {
    pub dx: f64,
    pub sigma: f64,
    pub horizon: f64,
    pub bc: Boundary,
    pub variant: Variant,
    pub eps: f64,
    pub cfl: f64,
}

/// max(a, b) that propagates NaN like NumPy's `maximum` (`f64::max` drops it, which would
/// turn a blown-up derivative into a silent 0).
#[inline(always)]
fn max_nan(a: f64, b: f64) -> f64 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// Godunov's numerical Hamiltonian for H(p) = p²/2.
#[inline(always)]
pub fn godunov(d_minus: f64, d_plus: f64) -> f64 {
    let a = max_nan(d_minus, 0.0);
    let b = -max_nan(-d_plus, 0.0);
    0.5 * max_nan(a * a, b * b)
}

/// ∂s u = (σ²/2) u_xx − Ĥ(d⁻, d⁺) + f(θ) at every node, and max |d±| for the CFL limit.
fn rhs(u: &[f64], f_hi: &[f64], f_lo: &[f64], theta: f64, p: &HjbParams) -> (Vec<f64>, f64) {
    let n = u.len();
    let (dm, dp) = derivatives_unchecked(u, p.dx, p.bc, p.variant, p.eps);
    let half_s2 = 0.5 * p.sigma * p.sigma;
    let dx2 = p.dx * p.dx;
    let mut out = vec![0.0; n];
    let mut pmax: f64 = 0.0;
    for i in 0..n {
        let (left, right) = match p.bc {
            Boundary::Periodic => (u[(i + n - 1) % n], u[(i + 1) % n]),
            _ => (
                if i == 0 { u[1] } else { u[i - 1] },
                if i == n - 1 { u[n - 2] } else { u[i + 1] },
            ),
        };
        let lap = (right - 2.0 * u[i] + left) / dx2;
        let f = (1.0 - theta) * f_hi[i] + theta * f_lo[i];
        out[i] = half_s2 * lap - godunov(dm[i], dp[i]) + f;
        pmax = max_nan(max_nan(pmax, dm[i].abs()), dp[i].abs());
    }
    (out, pmax)
}

fn validate(f: &[f64], g: &[f64], nt: usize, p: &HjbParams) -> KernelResult<()> {
    let nx = g.len();
    if nx < MIN_NODES {
        return Err(KernelError(format!("g needs at least {MIN_NODES} points, got {nx}")));
    }
    if nt < 2 {
        return Err(KernelError(format!("nt must be >= 2, got {nt}")));
    }
    if f.len() != nt * nx {
        return Err(KernelError(format!(
            "f must have shape (nt, nx) = ({nt}, {nx}), got {} values",
            f.len()
        )));
    }
    check_positive("dx", p.dx)?;
    check_non_negative("sigma", p.sigma)?;
    check_positive("T", p.horizon)?;
    check_positive("eps", p.eps)?;
    if !(p.cfl > 0.0 && p.cfl <= 1.0) {
        return Err(KernelError(format!("cfl must be in (0, 1], got {}", p.cfl)));
    }
    if p.bc == Boundary::Open {
        return Err(KernelError("bc must be one of 'reflect', 'periodic', got 'none'".into()));
    }
    check_finite("f", f)?;
    check_finite("g", g)
}

/// One try at an output interval: k equal TVD-RK3 sub-steps of dt_out/k backward from `u`
/// (`start` = its right-hand side and pmax). The state at the interval's other end, or
/// `Err(δ)` with the step limit δ of the first sub-step whose CFL check failed
/// (dt_out/k > 2δ, or δ NaN).
#[allow(clippy::too_many_arguments)]
fn try_interval(
    u: &[f64],
    start: &(Vec<f64>, f64),
    k: usize,
    f_hi: &[f64],
    f_lo: &[f64],
    dt_out: f64,
    p: &HjbParams,
    step_limit: impl Fn(f64) -> f64,
) -> Result<Vec<f64>, f64> {
    let nx = u.len();
    let dt = dt_out / k as f64;
    let dtheta = 1.0 / k as f64;
    let mut v = u.to_vec();
    for s in 0..k {
        let theta = s as f64 / k as f64;
        let later;
        let (l1, pmax) = if s == 0 {
            (&start.0, start.1)
        } else {
            later = rhs(&v, f_hi, f_lo, theta, p);
            (&later.0, later.1)
        };
        let allowed = step_limit(pmax);
        if dt > 2.0 * allowed || allowed.is_nan() {
            return Err(allowed);
        }
        let u1: Vec<f64> = v.iter().zip(l1).map(|(a, l)| a + dt * l).collect();
        let (l2, _) = rhs(&u1, f_hi, f_lo, theta + dtheta, p);
        let u2: Vec<f64> = (0..nx).map(|i| 0.75 * v[i] + 0.25 * (u1[i] + dt * l2[i])).collect();
        let (l3, _) = rhs(&u2, f_hi, f_lo, theta + 0.5 * dtheta, p);
        for i in 0..nx {
            v[i] = v[i] / 3.0 + 2.0 / 3.0 * (u2[i] + dt * l3[i]);
        }
    }
    // the last sub-step is checked against the slopes it produced
    let allowed = step_limit(rhs(&v, f_hi, f_lo, 1.0, p).1);
    if dt > 2.0 * allowed || allowed.is_nan() {
        return Err(allowed);
    }
    Ok(v)
}

/// The sub-step count of a restarted interval: what the slopes ask (`wanted` = Δt/δ), but at
/// least 2k and at most 8k — an overshot state's slopes can be far steeper than the
/// solution's, so its limit is trusted only to grow k geometrically. `None` past the limit.
fn more_substeps(k: usize, wanted: f64) -> Option<usize> {
    let next = if wanted.is_finite() { (wanted.ceil() as usize).clamp(2 * k, 8 * k) } else { 8 * k };
    (next <= MAX_SUBSTEPS).then_some(next)
}

/// u at the nt output times t_j = j·T/(nt − 1), row-major (nt, nx), for the running cost
/// `f` (nt, nx) and terminal cost `g` (nx); `min_substeps` (nt − 1 values ≥ 1, or `None` for
/// ones) are the floors of the per-interval sub-step counts.
pub fn hjb_backward(
    f: &[f64],
    g: &[f64],
    nt: usize,
    p: &HjbParams,
    min_substeps: Option<&[usize]>,
) -> KernelResult<Sweep> {
    validate(f, g, nt, p)?;
    let floor = floors(min_substeps, nt - 1)?;
    let nx = g.len();
    let dt_out = p.horizon / (nt - 1) as f64;
    let rate_diffusion = p.sigma * p.sigma / (p.dx * p.dx);
    let step_limit = |pmax: f64| p.cfl / (pmax / p.dx + rate_diffusion);
    let mut out = Sweep::new(nt, nx);
    out.row_mut(nt - 1, nx).copy_from_slice(g);
    let mut u = g.to_vec();
    for j in (0..nt - 1).rev() {
        let (f_lo, f_hi) = (&f[j * nx..(j + 1) * nx], &f[(j + 1) * nx..(j + 2) * nx]);
        let collapsed = || format!("HJB: the CFL sub-step collapsed near t = {}", j as f64 * dt_out);
        let start = rhs(&u, f_hi, f_lo, 0.0, p);
        let Some((mut k, _)) = substeps(dt_out, step_limit(start.1), floor[j]) else {
            out.diverged = Some(collapsed());
            return Ok(out);
        };
        u = loop {
            match try_interval(&u, &start, k, f_hi, f_lo, dt_out, p, step_limit) {
                Ok(v) => break v,
                // the slopes steepened beyond twice the limit: redo the interval with more steps
                Err(allowed) => match more_substeps(k, dt_out / allowed) {
                    Some(more) => k = more,
                    None => {
                        out.diverged = Some(collapsed());
                        return Ok(out);
                    }
                },
            }
        };
        out.substeps[j] = k;
        if let Some(i) = u.iter().position(|v| !v.is_finite()) {
            out.diverged = Some(format!("HJB: u is not finite at t = {}, x index {i}", j as f64 * dt_out));
            return Ok(out);
        }
        out.row_mut(j, nx).copy_from_slice(&u);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(nx: usize, sigma: f64) -> HjbParams {
        HjbParams {
            dx: 1.0 / (nx - 1) as f64,
            sigma,
            horizon: 1.0,
            bc: Boundary::Reflect,
            variant: Variant::Js,
            eps: 1e-6,
            cfl: 0.4,
        }
    }

    #[test]
    fn constant_running_cost_integrates_in_time() {
        // f = c, g = 0 ⇒ u(t) = c (T − t) exactly (no gradients, no diffusion)
        let (nx, nt) = (21, 11);
        let f = vec![2.0; nx * nt];
        let s = hjb_backward(&f, &vec![0.0; nx], nt, &params(nx, 0.3), None).unwrap();
        assert!(s.diverged.is_none());
        for j in 0..nt {
            let expect = 2.0 * (1.0 - j as f64 / 10.0);
            assert!(s.values[j * nx..(j + 1) * nx].iter().all(|v| (v - expect).abs() < 1e-13));
        }
    }

    #[test]
    fn heat_equation_mode_decays_at_its_rate() {
        // H = 0 region not available, but with tiny amplitude H ≈ 0: u = ε cos(πx) decays as
        // exp(−σ²π²/2 · (T − t)) in backward time.
        let (nx, nt) = (101, 6);
        let p = params(nx, 0.5);
        let g: Vec<f64> = (0..nx).map(|i| 1e-8 * (std::f64::consts::PI * i as f64 * p.dx).cos()).collect();
        let s = hjb_backward(&vec![0.0; nx * nt], &g, nt, &p, None).unwrap();
        let decay = (-0.25 * std::f64::consts::PI.powi(2) / 2.0).exp();
        let ratio = s.values[0] / g[0];
        assert!((ratio - decay).abs() < 1e-3, "{ratio} vs {decay}");
    }

    #[test]
    fn divergence_is_reported_not_panicked() {
        let (nx, nt) = (11, 3);
        let mut f = vec![0.0; nx * nt];
        f[5] = 1e300;
        let g: Vec<f64> = (0..nx).map(|i| 1e200 * i as f64).collect();
        let s = hjb_backward(&f, &g, nt, &params(nx, 0.1), None).unwrap();
        assert!(s.diverged.is_some());
    }

    #[test]
    fn the_floor_sets_the_substeps_where_it_dominates() {
        let (nx, nt) = (41, 6);
        let p = params(nx, 0.1);
        let g: Vec<f64> = (0..nx).map(|i| (3.0 * i as f64 * p.dx).sin()).collect();
        let f = vec![0.0; nx * nt];
        let free = hjb_backward(&f, &g, nt, &p, None).unwrap();
        let floor: Vec<usize> = free.substeps.iter().enumerate().map(|(j, k)| if j % 2 == 0 { k + 7 } else { 1 }).collect();
        let floored = hjb_backward(&f, &g, nt, &p, Some(&floor)).unwrap();
        for (j, (&k, &min)) in floored.substeps.iter().zip(&floor).enumerate() {
            assert!(k >= min);
            if j % 2 == 0 {
                assert_eq!(k, min);
            }
        }
        assert!(hjb_backward(&f, &g, nt, &p, Some(&[1, 1])).is_err());
        assert!(hjb_backward(&f, &g, nt, &p, Some(&[1, 1, 0, 1, 1])).is_err());
    }

    #[test]
    fn steepening_slopes_restart_the_interval_with_more_substeps() {
        // g = 0 and σ = 0: the step limit at the start of the last interval is infinite, so
        // the floor k = 4 is taken (k_cfl = 1); the steep running cost makes slopes of ~ s·|f'| ≈ 20 after the
        // first sub-step, a CFL number of ~50 ≫ 2·cfl. The guard must restart the interval with
        // more sub-steps instead of blowing up.
        let (nx, nt) = (21, 3);
        let mut p = params(nx, 0.0);
        p.horizon = 1.0;
        let f: Vec<f64> = (0..nt * nx).map(|k| 50.0 * (std::f64::consts::PI * (k % nx) as f64 * p.dx).cos()).collect();
        let g = vec![0.0; nx];
        let s = hjb_backward(&f, &g, nt, &p, Some(&[4, 4])).unwrap();
        assert!(s.diverged.is_none(), "{:?}", s.diverged);
        assert!(s.substeps[1] > 2 * 4, "no restart: {:?}", s.substeps);
        // the restart begins afresh from the interval's start: running with the final counts
        // as floors (no restart needed) gives the same values bit for bit
        let again = hjb_backward(&f, &g, nt, &p, Some(&s.substeps)).unwrap();
        assert_eq!(again.substeps, s.substeps);
        assert_eq!(again.values, s.values);
        // and the result is a stable one: close to a finely stepped solve
        let fine = hjb_backward(&f, &g, nt, &p, Some(&[20_000, 20_000])).unwrap();
        let scale = fine.values.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
        let gap = s.values.iter().zip(&fine.values).fold(0.0_f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(gap < 1e-3 * scale, "gap {gap}, scale {scale}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = params(11, 0.1);
        assert!(hjb_backward(&[0.0; 10], &[0.0; 11], 2, &p, None).is_err());
        assert!(hjb_backward(&[0.0; 22], &[0.0; 11], 1, &p, None).is_err());
        let mut q = p;
        q.cfl = 2.0;
        assert!(hjb_backward(&[0.0; 22], &[0.0; 11], 2, &q, None).is_err());
    }

    #[test]
    fn the_last_sub_step_is_checked_against_its_own_slopes() {
        // flat start (no step limit), steep running cost: one sub-step is not enough
        let (nx, nt) = (21, 3);
        let p = params(nx, 0.0);
        let row: Vec<f64> = (0..nx).map(|i| 50.0 * (std::f64::consts::PI * i as f64 * p.dx).cos()).collect();
        let f: Vec<f64> = row.iter().cycle().take(nx * nt).copied().collect();
        let s = hjb_backward(&f, &vec![0.0; nx], nt, &p, None).unwrap();
        assert!(s.diverged.is_none(), "{:?}", s.diverged);
        assert!(s.substeps.iter().all(|&k| k > 1), "{:?}", s.substeps);
        assert!(s.values.iter().all(|v| v.is_finite()));
    }
}

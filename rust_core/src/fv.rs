//! The Fokker–Planck equation of the MFG marched forward by a conservative finite-volume
//! scheme on node-centred control volumes, with sub-steps per output interval. Two schemes:
//! "muscl2" (default) — Strang splitting of SSP-RK2 advection with van Leer–limited MUSCL
//! fluxes and L-stable SDIRK2 implicit diffusion (tridiagonal solves), sub-steps set by the
//! drift CFL only, each sub-step redone by the positive first-order IMEX step (upwind forward
//! Euler + backward-Euler diffusion) if it made m negative; "upwind1" — first-order upwind
//! drift, central diffusion, explicit Euler. Mass is conserved to rounding and m stays ≥ 0.
//!
//! The maths: see mfg_ensemble/kernels/reference/fv.py. Sequential (no Rayon): the result
//! does not depend on the thread count.

use crate::boundary::{Boundary, REFLECT_OR_PERIODIC};
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::substeps::{floors, substeps, Marching};

/// Which finite-volume scheme marches the density.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FvScheme {
    /// Second order: MUSCL (van Leer) SSP-RK2 advection, SDIRK2 implicit diffusion, Strang.
    Muscl2,
    /// First order: upwind drift, central diffusion, explicit Euler.
    Upwind1,
}

impl FvScheme {
    pub fn parse(text: &str) -> KernelResult<FvScheme> {
        match text {
            "muscl2" => Ok(FvScheme::Muscl2),
            "upwind1" => Ok(FvScheme::Upwind1),
            _ => Err(KernelError(format!("scheme must be one of 'muscl2', 'upwind1', got '{text}'"))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FvParams {
    pub dx: f64,
    pub sigma: f64,
    pub horizon: f64,
    pub bc: Boundary,
    pub cfl: f64,
    pub scheme: FvScheme,
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

/// γ = 1 − 1/√2 of the SDIRK2 diffusion stage.
fn gamma() -> f64 {
    1.0 - 0.5_f64.sqrt()
}

/// m_i ← m_i − (δ/w_i)(F_{i+½} − F_{i−½}) for the face fluxes `flux`, `rate` = δ/w.
fn conservative_update(from: &[f64], flux: &[f64], rate: &[f64], bc: Boundary, to: &mut [f64]) {
    for_each_divergence(flux, from.len(), bc, |i, d| to[i] = from[i] - rate[i] * d);
}

/// `f(i, F_{i+½} − F_{i−½})` for every node i (no flux through the walls of "reflect").
#[inline(always)]
fn for_each_divergence(flux: &[f64], nx: usize, bc: Boundary, mut f: impl FnMut(usize, f64)) {
    let last = nx - 1;
    let periodic = bc == Boundary::Periodic;
    f(0, flux[0] - if periodic { flux[last] } else { 0.0 });
    for i in 1..last {
        f(i, flux[i] - flux[i - 1]);
    }
    f(last, if periodic { flux[last] } else { 0.0 } - flux[last - 1]);
}

/// van Leer slopes s_i = 2Δ⁻Δ⁺/(Δ⁻ + Δ⁺) where Δ⁻Δ⁺ > 0, else 0 (0 at the walls of "reflect").
fn van_leer_slopes(m: &[f64], bc: Boundary, s: &mut [f64]) {
    #[inline(always)]
    fn van_leer(minus: f64, plus: f64) -> f64 {
        let prod = minus * plus;
        if prod > 0.0 {
            2.0 * prod / (minus + plus)
        } else {
            0.0
        }
    }
    let last = m.len() - 1;
    for i in 1..last {
        s[i] = van_leer(m[i] - m[i - 1], m[i + 1] - m[i]);
    }
    if bc == Boundary::Periodic {
        s[0] = van_leer(m[0] - m[last], m[1] - m[0]);
        s[last] = van_leer(m[last] - m[last - 1], m[0] - m[last]);
    } else {
        s[0] = 0.0;
        s[last] = 0.0;
    }
}

/// Upwind advective fluxes G_{i+½} of the van Leer MUSCL reconstruction (`slopes` Some) or of m.
fn advective_flux(m: &[f64], a: &[f64], slopes: Option<&[f64]>, flux: &mut [f64]) {
    let nx = m.len();
    let face = |i: usize, j: usize| {
        let (left, right) = match slopes {
            Some(s) => (m[i] + 0.5 * s[i], m[j] - 0.5 * s[j]),
            None => (m[i], m[j]),
        };
        a[i].max(0.0) * left + a[i].min(0.0) * right
    };
    for (i, fl) in flux[..nx - 1].iter_mut().enumerate() {
        *fl = face(i, i + 1);
    }
    if flux.len() == nx {
        flux[nx - 1] = face(nx - 1, 0);
    }
}

/// The factored M = W − (τ L) with diagonal wᵢ + c·(neighbours) and off-diagonal −c, cyclic
/// for "periodic": Thomas' algorithm, Sherman–Morrison for the corners.
struct Tridiagonal {
    c: f64,
    /// 1/den_i of the forward sweep; g_i = c/den_i.
    inv: Vec<f64>,
    g: Vec<f64>,
    /// Sherman–Morrison data of "periodic": c/b₀, z = B⁻¹u and 1 + v·z.
    cyclic: Option<(f64, Vec<f64>, f64)>,
}

impl Tridiagonal {
    fn new(widths: &[f64], c: f64, bc: Boundary) -> Tridiagonal {
        let n = widths.len();
        let mut d: Vec<f64> = widths.iter().map(|&w| w + 2.0 * c).collect();
        let mut ratio = 0.0;
        let mut b0 = 0.0;
        if bc == Boundary::Periodic {
            b0 = d[0];
            ratio = c / b0;
            d[0] = b0 + b0;
            d[n - 1] += c * ratio;
        } else {
            d[0] = widths[0] + c;
            d[n - 1] = widths[n - 1] + c;
        }
        let mut inv = vec![0.0; n];
        let mut g = vec![0.0; n];
        inv[0] = 1.0 / d[0];
        g[0] = c * inv[0];
        for i in 1..n {
            inv[i] = 1.0 / (d[i] - c * g[i - 1]);
            g[i] = c * inv[i];
        }
        let mut t = Tridiagonal { c, inv, g, cyclic: None };
        if bc == Boundary::Periodic {
            let mut z = vec![0.0; n];
            z[0] = -b0;
            z[n - 1] = -c;
            t.thomas(&mut z);
            let denom = 1.0 + (z[0] + ratio * z[n - 1]);
            t.cyclic = Some((ratio, z, denom));
        }
        t
    }

    /// x ← B⁻¹x for the tridiagonal part (in place).
    fn thomas(&self, x: &mut [f64]) {
        let n = x.len();
        x[0] *= self.inv[0];
        for i in 1..n {
            x[i] = (x[i] + self.c * x[i - 1]) * self.inv[i];
        }
        for i in (0..n - 1).rev() {
            x[i] += self.g[i] * x[i + 1];
        }
    }

    /// x ← M⁻¹x (in place).
    fn solve(&self, x: &mut [f64]) {
        self.thomas(x);
        if let Some((ratio, z, denom)) = &self.cyclic {
            let n = x.len();
            let q = (x[0] + ratio * x[n - 1]) / denom;
            for (xi, zi) in x.iter_mut().zip(z) {
                *xi -= q * zi;
            }
        }
    }
}

/// Work arrays of the second-order march.
struct Scratch {
    a0: Vec<f64>,
    a1: Vec<f64>,
    flux: Vec<f64>,
    slopes: Vec<f64>,
    y: Vec<f64>,
    y1: Vec<f64>,
    y2: Vec<f64>,
    wm: Vec<f64>,
}

/// 𝒟_τ in place: M y¹ = W m, M y² = W m + c2·(Δy¹_{i+½} − Δy¹_{i−½}), c2 = (1 − γ)τD/dx.
#[allow(clippy::too_many_arguments)]
fn sdirk2(
    m: &mut [f64],
    widths: &[f64],
    solver: &Tridiagonal,
    c2: f64,
    bc: Boundary,
    wm: &mut [f64],
    y1: &mut [f64],
    df: &mut [f64],
) {
    let nx = m.len();
    for i in 0..nx {
        wm[i] = widths[i] * m[i];
    }
    y1.copy_from_slice(wm);
    solver.solve(y1);
    for (f, pair) in df.iter_mut().zip(y1.windows(2)) {
        *f = pair[1] - pair[0];
    }
    if df.len() == nx {
        df[nx - 1] = y1[0] - y1[nx - 1];
    }
    for_each_divergence(df, nx, bc, |i, d| m[i] = wm[i] + c2 * d);
    solver.solve(m);
}

#[allow(clippy::too_many_arguments)]
fn muscl2_interval(
    m: &mut [f64],
    now: &[f64],
    next: &[f64],
    k: usize,
    dt: f64,
    widths: &[f64],
    diffusion: f64,
    p: &FvParams,
    w: &mut Scratch,
) {
    let bc = p.bc;
    let implicit = diffusion > 0.0;
    let half = 0.5 * dt;
    let rate: Vec<f64> = widths.iter().map(|w| dt / w).collect();
    let gamma = gamma();
    let half_solver = implicit.then(|| Tridiagonal::new(widths, gamma * half * diffusion / p.dx, bc));
    let c2 = (1.0 - gamma) * half * diffusion / p.dx;
    let mut fallback_solver: Option<Tridiagonal> = None;
    for s in 0..k {
        let (t0, t1) = (s as f64 / k as f64, (s + 1) as f64 / k as f64);
        for i in 0..now.len() {
            w.a0[i] = (1.0 - t0) * now[i] + t0 * next[i];
            w.a1[i] = (1.0 - t1) * now[i] + t1 * next[i];
        }
        w.y.copy_from_slice(m);
        if let Some(solver) = &half_solver {
            sdirk2(&mut w.y, widths, solver, c2, bc, &mut w.wm, &mut w.y1, &mut w.flux);
        }
        van_leer_slopes(&w.y, bc, &mut w.slopes);
        advective_flux(&w.y, &w.a0, Some(&w.slopes), &mut w.flux);
        conservative_update(&w.y, &w.flux, &rate, bc, &mut w.y1);
        van_leer_slopes(&w.y1, bc, &mut w.slopes);
        advective_flux(&w.y1, &w.a1, Some(&w.slopes), &mut w.flux);
        conservative_update(&w.y1, &w.flux, &rate, bc, &mut w.y2);
        for (yi, y2i) in w.y.iter_mut().zip(&w.y2) {
            *yi = 0.5 * (*yi + y2i);
        }
        if let Some(solver) = &half_solver {
            sdirk2(&mut w.y, widths, solver, c2, bc, &mut w.wm, &mut w.y1, &mut w.flux);
        }
        if w.y.iter().any(|&v| v < 0.0) {
            if implicit && fallback_solver.is_none() {
                fallback_solver = Some(Tridiagonal::new(widths, dt * diffusion / p.dx, bc));
            }
            first_order_imex_step(m, &w.a0, &rate, widths, fallback_solver.as_ref(), bc, &mut w.flux, &mut w.y);
        }
        m.copy_from_slice(&w.y);
    }
}

/// The positive fallback into `to`: forward-Euler upwind advection, then backward-Euler diffusion
/// (W − δL) m_new = W m_adv (`solver` factors W − δL; `None`: no diffusion).
#[allow(clippy::too_many_arguments)]
fn first_order_imex_step(
    m: &[f64],
    a: &[f64],
    rate: &[f64],
    widths: &[f64],
    solver: Option<&Tridiagonal>,
    bc: Boundary,
    flux: &mut [f64],
    to: &mut [f64],
) {
    advective_flux(m, a, None, flux);
    conservative_update(m, flux, rate, bc, to);
    if let Some(solver) = solver {
        for (yi, wi) in to.iter_mut().zip(widths) {
            *yi *= wi;
        }
        solver.solve(to);
    }
}

#[allow(clippy::too_many_arguments)]
fn upwind1_interval(
    m: &mut [f64],
    now: &[f64],
    next: &[f64],
    k: usize,
    dt: f64,
    widths: &[f64],
    diffusion: f64,
    p: &FvParams,
    flux: &mut [f64],
) {
    let nx = m.len();
    let rate: Vec<f64> = widths.iter().map(|w| dt / w).collect();
    for s in 0..k {
        let theta = s as f64 / k as f64;
        for (i, fl) in flux.iter_mut().enumerate() {
            let a = (1.0 - theta) * now[i] + theta * next[i];
            let (here, next) = (m[i], m[(i + 1) % nx]);
            *fl = a.max(0.0) * here + a.min(0.0) * next - diffusion * (next - here) / p.dx;
        }
        for_each_divergence(flux, nx, p.bc, |i, d| m[i] -= rate[i] * d);
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
    let mut scratch = Scratch {
        a0: vec![0.0; nf],
        a1: vec![0.0; nf],
        flux: vec![0.0; nf],
        slopes: vec![0.0; nx],
        y: vec![0.0; nx],
        y1: vec![0.0; nx],
        y2: vec![0.0; nx],
        wm: vec![0.0; nx],
    };
    let mut drift_now = face_drift(&u[..nx], p.dx, p.bc);
    for j in 0..nt - 1 {
        let drift_next = face_drift(&u[(j + 1) * nx..(j + 2) * nx], p.dx, p.bc);
        let amax = drift_now.iter().chain(&drift_next).fold(0.0_f64, |a, v| a.max(v.abs()));
        let limit = match p.scheme {
            FvScheme::Upwind1 => p.cfl * p.dx / (2.0 * amax + 2.0 * diffusion / p.dx),
            FvScheme::Muscl2 => p.cfl * p.dx / (2.0 * amax),
        };
        let Some((k, dt)) = substeps(dt_out, limit, floor[j]) else {
            out.diverged = Some(format!("FP: the CFL sub-step collapsed near t = {}", j as f64 * dt_out));
            return Ok(out);
        };
        match p.scheme {
            FvScheme::Upwind1 => {
                upwind1_interval(&mut m, &drift_now, &drift_next, k, dt, &widths, diffusion, p, &mut scratch.flux)
            }
            FvScheme::Muscl2 => {
                muscl2_interval(&mut m, &drift_now, &drift_next, k, dt, &widths, diffusion, p, &mut scratch)
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
            for scheme in [FvScheme::Muscl2, FvScheme::Upwind1] {
                let p = FvParams { dx, sigma: 0.3, horizon: 1.0, bc, cfl: 0.9, scheme };
                let s = fv_forward(&u, &m0, nt, &p, None).unwrap();
                let w = cell_widths(nx, dx, bc);
                let m_start = mass(&m0, &w);
                for j in 0..nt {
                    let row = &s.values[j * nx..(j + 1) * nx];
                    // muscl2: ~2000 sub-steps of 4 tridiagonal solves, each exact to ~1e-17
                    // relative, which add up to ~1e-13; upwind1: explicit fluxes only
                    let tol = if scheme == FvScheme::Muscl2 { 1e-12 } else { 1e-13 };
                    assert!(
                        (mass(row, &w) - m_start).abs() < tol * m_start,
                        "{scheme:?} {bc:?} {}",
                        mass(row, &w) / m_start - 1.0
                    );
                    assert!(row.iter().all(|&v| v >= 0.0));
                }
            }
        }
    }

    #[test]
    fn the_floor_sets_the_substeps_where_it_dominates() {
        let (nx, nt) = (41, 6);
        let dx = 1.0 / 40.0;
        let u: Vec<f64> = (0..nt * nx).map(|k| ((k % nx) as f64 * dx * 5.0).sin()).collect();
        let m0 = vec![1.0; nx];
        let p = FvParams { dx, sigma: 0.2, horizon: 1.0, bc: Boundary::Reflect, cfl: 0.9, scheme: FvScheme::Muscl2 };
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
        let p = FvParams { dx, sigma: 1.0, horizon: 2.0, bc: Boundary::Reflect, cfl: 0.9, scheme: FvScheme::Muscl2 };
        let s = fv_forward(&vec![0.0; nt * nx], &m0, nt, &p, None).unwrap();
        let last = &s.values[(nt - 1) * nx..];
        // the cos mode decays like exp(−π²/2·t): e^(−π²) ≈ 5e-5 at t = 2
        assert!(last.iter().all(|v| (v - 1.0).abs() < 1e-3));
        // implicit diffusion: no drift, no step limit, one sub-step per interval
        assert!(s.substeps.iter().all(|&k| k == 1));
    }

    #[test]
    fn the_fallback_step_stays_positive_where_sdirk2_does_not() {
        // a spike under stiff diffusion (τD/dx² = 20): one SDIRK2 stage pair goes negative at
        // the spike, the first-order IMEX step does not, and both conserve mass
        for bc in [Boundary::Reflect, Boundary::Periodic] {
            let (nx, dx, diffusion, dt) = (21, 0.05, 0.5, 0.1);
            let widths = cell_widths(nx, dx, bc);
            let mut m = vec![0.0; nx];
            m[10] = 1.0 / dx;
            let a: Vec<f64> = (0..face_count(nx, bc)).map(|i| if i < 10 { 0.2 } else { -0.2 }).collect();
            let start = mass(&m, &widths);
            let (mut wm, mut y1, mut df) = (vec![0.0; nx], vec![0.0; nx], vec![0.0; face_count(nx, bc)]);
            let gamma = gamma();
            let solver = Tridiagonal::new(&widths, gamma * dt * diffusion / dx, bc);
            let mut stiff = m.clone();
            sdirk2(&mut stiff, &widths, &solver, (1.0 - gamma) * dt * diffusion / dx, bc, &mut wm, &mut y1, &mut df);
            assert!(stiff[10] < 0.0);
            assert!((mass(&stiff, &widths) - start).abs() < 1e-13 * start);
            let backward = Tridiagonal::new(&widths, dt * diffusion / dx, bc);
            let mut safe = vec![0.0; nx];
            let rate: Vec<f64> = widths.iter().map(|w| dt / w).collect();
            first_order_imex_step(&m, &a, &rate, &widths, Some(&backward), bc, &mut df, &mut safe);
            assert!(safe.iter().all(|&v| v >= 0.0));
            assert!((mass(&safe, &widths) - start).abs() < 1e-13 * start);
        }
    }

    #[test]
    fn the_cyclic_solve_inverts_the_periodic_matrix() {
        let n = 7;
        let widths = vec![0.1; n];
        let c = 3.7;
        let t = Tridiagonal::new(&widths, c, Boundary::Periodic);
        let x: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64).sin()).collect();
        // r = M x, M = diag(w + 2c) − c (neighbours, wrapping)
        let mut r: Vec<f64> =
            (0..n).map(|i| (widths[i] + 2.0 * c) * x[i] - c * (x[(i + 1) % n] + x[(i + n - 1) % n])).collect();
        t.solve(&mut r);
        assert!(r.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}

//! The Hamilton–Jacobi–Bellman equation of the MFG, marched backward in time: HJ-WENO5
//! derivatives in Godunov's Hamiltonian, fourth-order central diffusion, either the IMEX
//! Runge–Kutta ARS(4,4,3) with implicit diffusion (banded solves of `banded`, sub-steps
//! limited by the slopes alone; the default) or the explicit TVD-RK3, with CFL-limited
//! sub-steps per output interval (restarted with more sub-steps when the slopes steepen).
//!
//! The maths: see mfg_ensemble/kernels/reference/hjb.py.
//!
//! Implementation: one set of buffers per march (the state with its ghost nodes, d±, the RK
//! stages), reused by every stage; each right-hand side is one WENO call on the ghosted state
//! and one SIMD-dispatched pass (second difference, Ĥ, f, the RK combination, pmax when
//! needed). The right-hand side at an interval's end, evaluated for its CFL check, starts the
//! next interval. Every value has the bits of the unfused form (tests below). The IMEX
//! sub-steps keep the stages' explicit and implicit parts and the banded solver of their
//! sub-step count (factored again only when the count changes).

use crate::banded::StencilSolver;
use crate::boundary::{fill_ghosted, Boundary, GHOSTS, REFLECT_OR_PERIODIC};
use crate::error::{check_finite, check_non_negative, check_positive, KernelError, KernelResult};
use crate::simd;
use crate::substeps::{floors, substeps, Marching, MAX_SUBSTEPS};
use crate::weno::{derivatives_extended_into, Variant, Workspace, MIN_NODES};

#[derive(Debug, Clone, Copy)]
pub struct HjbParams {
    pub dx: f64,
    pub sigma: f64,
    pub horizon: f64,
    pub bc: Boundary,
    pub variant: Variant,
    pub eps: f64,
    pub cfl: f64,
    pub scheme: Scheme,
}

/// The time stepping: the IMEX Runge–Kutta ARS(4,4,3) with implicit diffusion (the default),
/// or the explicit TVD-RK3 of every term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Imex,
    Rk3,
}

impl Scheme {
    pub fn parse(text: &str) -> KernelResult<Scheme> {
        match text {
            "imex" => Ok(Scheme::Imex),
            "rk3" => Ok(Scheme::Rk3),
            _ => Err(KernelError(format!("scheme must be one of 'imex', 'rk3', got '{text}'"))),
        }
    }
}

/// ARS(4,4,3) (Ascher, Ruuth & Spiteri 1997, §2.8): the explicit tableau's rows for the stages
/// 1…4 (coefficients of E₀…E₃), the implicit tableau's below-diagonal rows (coefficients of
/// I₁…I₃), its diagonal γ, and the explicit abscissae c₀…c₃. Stiffly accurate: the last stage
/// is the step's result.
pub(crate) const ARS_EXPLICIT: [[f64; 4]; 4] = [
    [0.5, 0.0, 0.0, 0.0],
    [11.0 / 18.0, 1.0 / 18.0, 0.0, 0.0],
    [5.0 / 6.0, -5.0 / 6.0, 0.5, 0.0],
    [0.25, 1.75, 0.75, -1.75],
];
pub(crate) const ARS_IMPLICIT: [[f64; 3]; 4] =
    [[0.0, 0.0, 0.0], [1.0 / 6.0, 0.0, 0.0], [-0.5, 0.5, 0.0], [1.5, -1.5, 0.5]];
pub(crate) const ARS_GAMMA: f64 = 0.5;
pub(crate) const ARS_C: [f64; 4] = [0.0, 0.5, 2.0 / 3.0, 0.5];

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

/// What a right-hand side evaluation writes at node i, from the value `a` already there, the
/// evaluated state's value `c` at i and L = ∂s u at i.
trait Combine: Fn(f64, f64, f64) -> f64 {}
impl<C: Fn(f64, f64, f64) -> f64> Combine for C {}

/// The right-hand side ∂s u = (σ²/2) u_xx − Ĥ(d⁻, d⁺) + f(θ) with its buffers, allocated once
/// per march and reused by every stage: the state with its ghost nodes (`ue`, node i at
/// ue[i + 3], shared by the WENO stencils and the second difference) and d⁻, d⁺.
struct Rhs {
    p: HjbParams,
    half_s2: f64,
    dx2: f64,
    ue: Vec<f64>,
    dm: Vec<f64>,
    dp: Vec<f64>,
    ws: Workspace,
}

impl Rhs {
    fn new(nx: usize, p: &HjbParams) -> Rhs {
        Rhs {
            p: *p,
            half_s2: 0.5 * p.sigma * p.sigma,
            dx2: p.dx * p.dx,
            ue: vec![0.0; nx + 6],
            dm: vec![0.0; nx],
            dp: vec![0.0; nx],
            ws: Workspace::new(),
        }
    }

    /// The ghosted copy of `u` and its WENO5 one-sided derivatives d⁻, d⁺, into the scratch.
    fn derivatives(&mut self, u: &[f64]) {
        fill_ghosted(u, -(GHOSTS as isize), self.p.bc, &mut self.ue);
        derivatives_extended_into(
            &self.ue,
            self.p.dx,
            self.p.variant,
            self.p.eps,
            &mut self.dm,
            &mut self.dp,
            &mut self.ws,
        );
    }

    /// The arguments of a right-hand-side pass over the derivatives just computed.
    fn finish<'a>(&'a self, f_hi: &'a [f64], f_lo: &'a [f64], theta: f64) -> Finish<'a> {
        Finish { ue: &self.ue, dm: &self.dm, dp: &self.dp, f_hi, f_lo, theta, half_s2: self.half_s2, dx2: self.dx2 }
    }

    /// Evaluates the right-hand side L of `u` and sets out[i] = combine(out[i], u[i], L[i])
    /// (in one pass with the second difference, Ĥ and the interpolation of f); returns
    /// pmax = max |d±| of `u` when `PMAX` (NaN if any d± is NaN), else 0.
    fn eval<const PMAX: bool>(
        &mut self,
        u: &[f64],
        f_hi: &[f64],
        f_lo: &[f64],
        theta: f64,
        out: &mut [f64],
        combine: impl Combine,
    ) -> f64 {
        self.derivatives(u);
        let args = self.finish(f_hi, f_lo, theta);
        simd::dispatch(FinishPass::<_, PMAX> { args: &args, out, combine })
    }

    /// The IMEX split of the right-hand side of `u`: e = f(θ) − Ĥ(d⁻, d⁺) (explicit) and, when
    /// `implicit` is given, (σ²/2)Δ₄u into it; returns pmax as `eval`.
    fn eval_split<const PMAX: bool>(
        &mut self,
        u: &[f64],
        (f_hi, f_lo, theta): (&[f64], &[f64], f64),
        e: &mut [f64],
        implicit: Option<&mut [f64]>,
    ) -> f64 {
        self.derivatives(u);
        let args = self.finish(f_hi, f_lo, theta);
        simd::dispatch(SplitPass::<PMAX> { args: &args, e, implicit })
    }
}

/// `Rhs::eval_split`'s per-node pass.
struct SplitPass<'a, const PMAX: bool> {
    args: &'a Finish<'a>,
    e: &'a mut [f64],
    implicit: Option<&'a mut [f64]>,
}

impl<const PMAX: bool> simd::Kernel for SplitPass<'_, PMAX> {
    type Output = f64;
    #[inline(always)]
    fn run(self) -> f64 {
        let a = self.args;
        let n = self.e.len();
        let (dm, dp, f_hi, f_lo) = (&a.dm[..n], &a.dp[..n], &a.f_hi[..n], &a.f_lo[..n]);
        for (i, e) in self.e.iter_mut().enumerate() {
            let f = (1.0 - a.theta) * f_hi[i] + a.theta * f_lo[i];
            *e = f - godunov(dm[i], dp[i]);
        }
        if let Some(out) = self.implicit {
            let ue = &a.ue[..n + 6];
            let (left2, left, mid) = (&ue[1..n + 1], &ue[2..n + 2], &ue[3..n + 3]);
            let (right, right2) = (&ue[4..n + 4], &ue[5..n + 5]);
            for (i, o) in out[..n].iter_mut().enumerate() {
                *o = a.half_s2 * laplacian4(left2[i], left[i], mid[i], right[i], right2[i], a.dx2);
            }
        }
        if PMAX {
            abs_max(dm, dp)
        } else {
            0.0
        }
    }
}

/// The inputs of the per-node pass of `Rhs::eval`.
struct Finish<'a> {
    ue: &'a [f64],
    dm: &'a [f64],
    dp: &'a [f64],
    f_hi: &'a [f64],
    f_lo: &'a [f64],
    theta: f64,
    half_s2: f64,
    dx2: f64,
}

/// The fourth-order central second difference
/// (−u_{i+2} + 16u_{i+1} − 30u_i + 16u_{i−1} − u_{i−2})/(12 dx²), in the reference's order of
/// operations (`dx2` = dx·dx).
#[inline(always)]
pub fn laplacian4(l2: f64, l1: f64, m: f64, r1: f64, r2: f64, dx2: f64) -> f64 {
    (-r2 + 16.0 * r1 - 30.0 * m + 16.0 * l1 - l2) / (12.0 * dx2)
}

/// out[i] = combine(out[i], u_i, (σ²/2)·Δ₄u_i − Ĥ(d⁻_i, d⁺_i) + f_i(θ)) with Δ₄ = `laplacian4`,
/// the arithmetic of the reference (NumPy `_rhs`) term by term; and max |d±| when `PMAX`.
#[inline(always)]
fn finish_body<const PMAX: bool>(a: &Finish, out: &mut [f64], combine: impl Combine) -> f64 {
    let n = out.len();
    let (ue, dm, dp, f_hi, f_lo) = (&a.ue[..n + 6], &a.dm[..n], &a.dp[..n], &a.f_hi[..n], &a.f_lo[..n]);
    let (left2, left, mid) = (&ue[1..n + 1], &ue[2..n + 2], &ue[3..n + 3]);
    let (right, right2) = (&ue[4..n + 4], &ue[5..n + 5]);
    let (theta, half_s2, dx2) = (a.theta, a.half_s2, a.dx2);
    for i in 0..n {
        let lap = laplacian4(left2[i], left[i], mid[i], right[i], right2[i], dx2);
        let f = (1.0 - theta) * f_hi[i] + theta * f_lo[i];
        let l = half_s2 * lap - godunov(dm[i], dp[i]) + f;
        out[i] = combine(out[i], mid[i], l);
    }
    if PMAX {
        abs_max(dm, dp)
    } else {
        0.0
    }
}

/// max(0, max |d⁻|, max |d⁺|), NaN if any of them is NaN (as NumPy's `max`). The maximum of
/// exact values does not depend on the order, so it is kept in lanes (to vectorise) with NaN
/// tracked apart.
#[inline(always)]
fn abs_max(dm: &[f64], dp: &[f64]) -> f64 {
    const LANES: usize = 8;
    let (mut top, mut nan) = ([0.0f64; LANES], [false; LANES]);
    for d in [dm, dp] {
        let chunks = d.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                let x = c[j].abs();
                top[j] = if x > top[j] { x } else { top[j] };
                nan[j] |= x.is_nan();
            }
        }
        for (j, &x) in rest.iter().enumerate() {
            let x = x.abs();
            top[j] = if x > top[j] { x } else { top[j] };
            nan[j] |= x.is_nan();
        }
    }
    if nan.iter().any(|&b| b) {
        return f64::NAN;
    }
    top.iter().fold(0.0, |m, &x| if x > m { x } else { m })
}

/// `finish_body` with its arguments, for `simd::dispatch`.
struct FinishPass<'a, C, const PMAX: bool> {
    args: &'a Finish<'a>,
    out: &'a mut [f64],
    combine: C,
}

impl<C: Combine, const PMAX: bool> simd::Kernel for FinishPass<'_, C, PMAX> {
    type Output = f64;
    #[inline(always)]
    fn run(self) -> f64 {
        finish_body::<PMAX>(self.args, self.out, self.combine)
    }
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
        return Err(KernelError(format!("f must have shape (nt, nx) = ({nt}, {nx}), got {} values", f.len())));
    }
    check_positive("dx", p.dx)?;
    check_non_negative("sigma", p.sigma)?;
    check_positive("T", p.horizon)?;
    check_positive("eps", p.eps)?;
    if !(p.cfl > 0.0 && p.cfl <= 1.0) {
        return Err(KernelError(format!("cfl must be in (0, 1], got {}", p.cfl)));
    }
    p.bc.check(&REFLECT_OR_PERIODIC)?;
    check_finite("f", f)?;
    check_finite("g", g)
}

/// The state buffers of the stepping, reused by every interval and every try.
struct Buffers {
    /// the state being stepped (the interval's end once a try succeeds)
    v: Vec<f64>,
    u1: Vec<f64>,
    u2: Vec<f64>,
    /// the right-hand side of the state at the interval's end, f taken at that output time
    l_end: Vec<f64>,
}

/// One try at an output interval: k equal TVD-RK3 sub-steps of dt_out/k backward from `u`
/// (`l_start`, `pmax_start` = its right-hand side and pmax) into `b.v`. `Ok` with the pmax of
/// the state at the interval's other end, whose right-hand side with f = `f_lo` (the next
/// interval's start) is left in `b.l_end`; or `Err(δ)` with the step limit δ of the first
/// sub-step whose CFL check failed (dt_out/k > 2δ, or δ NaN).
#[allow(clippy::too_many_arguments)]
fn try_interval(
    rhs: &mut Rhs,
    b: &mut Buffers,
    u: &[f64],
    (l_start, pmax_start): (&[f64], f64),
    k: usize,
    (f_hi, f_lo, f_next): (&[f64], &[f64], &[f64]),
    dt_out: f64,
    step_limit: impl Fn(f64) -> f64,
) -> Result<f64, f64> {
    let dt = dt_out / k as f64;
    let dtheta = 1.0 / k as f64;
    let Buffers { v, u1, u2, l_end } = b;
    v.copy_from_slice(u);
    for s in 0..k {
        let theta = s as f64 / k as f64;
        // u1 = v + dt·L(v), checked against the slopes of v
        let pmax = if s == 0 {
            for ((o, a), l) in u1.iter_mut().zip(v.iter()).zip(l_start) {
                *o = a + dt * l;
            }
            pmax_start
        } else {
            rhs.eval::<true>(v, f_hi, f_lo, theta, u1, |_, c, l| c + dt * l)
        };
        let allowed = step_limit(pmax);
        if dt > 2.0 * allowed || allowed.is_nan() {
            return Err(allowed);
        }
        u2.copy_from_slice(v);
        rhs.eval::<false>(u1, f_hi, f_lo, theta + dtheta, u2, |a, c, l| 0.75 * a + 0.25 * (c + dt * l));
        rhs.eval::<false>(u2, f_hi, f_lo, theta + 0.5 * dtheta, v, |a, c, l| a / 3.0 + 2.0 / 3.0 * (c + dt * l));
    }
    // the last sub-step is checked against the slopes it produced; its right-hand side with
    // f at this end (θ = 0 of the next interval, the same bits as evaluating it there afresh)
    // starts the next interval
    let pmax = rhs.eval::<true>(v, f_lo, f_next, 0.0, l_end, |_, _, l| l);
    let allowed = step_limit(pmax);
    if dt > 2.0 * allowed || allowed.is_nan() {
        return Err(allowed);
    }
    Ok(pmax)
}

/// The buffers of the IMEX stepping: the explicit parts E₀…E₃ and implicit parts I₁…I₃ of a
/// sub-step's stages, and the solver of (I − γ dt (σ²/2)Δ₄) for the sub-step count it was
/// built for.
struct ImexBuffers {
    e: [Vec<f64>; 4],
    li: [Vec<f64>; 3],
    solver: Option<(usize, StencilSolver)>,
}

impl ImexBuffers {
    fn new(nx: usize) -> ImexBuffers {
        ImexBuffers {
            e: std::array::from_fn(|_| vec![0.0; nx]),
            li: std::array::from_fn(|_| vec![0.0; nx]),
            solver: None,
        }
    }
}

/// The matrix I − γ·dt·(σ²/2)Δ₄ as its five-point stencil.
fn implicit_stencil(dt: f64, p: &HjbParams) -> [f64; 5] {
    let c = ARS_GAMMA * dt * (0.5 * p.sigma * p.sigma) / (12.0 * (p.dx * p.dx));
    [c, -16.0 * c, 1.0 + 30.0 * c, -16.0 * c, c]
}

/// `try_interval` with ARS(4,4,3) sub-steps: the WENO/Godunov part and f explicit, (σ²/2)Δ₄
/// implicit (one banded solve per stage; none when σ = 0). `l_start` and `b.l_end` hold the
/// explicit part only.
#[allow(clippy::too_many_arguments)]
fn try_interval_imex(
    rhs: &mut Rhs,
    b: &mut Buffers,
    im: &mut ImexBuffers,
    u: &[f64],
    (l_start, pmax_start): (&[f64], f64),
    k: usize,
    (f_hi, f_lo, f_next): (&[f64], &[f64], &[f64]),
    dt_out: f64,
    step_limit: impl Fn(f64) -> f64,
) -> Result<f64, f64> {
    let dt = dt_out / k as f64;
    let dtheta = 1.0 / k as f64;
    let p = rhs.p;
    let diffusive = p.sigma > 0.0;
    if diffusive && im.solver.as_ref().is_none_or(|(kk, _)| *kk != k) {
        im.solver = Some((k, StencilSolver::new(u.len(), implicit_stencil(dt, &p), p.bc)));
    }
    let Buffers { v, u1: stage, l_end, .. } = b;
    let ImexBuffers { e, li, solver } = im;
    v.copy_from_slice(u);
    for s in 0..k {
        let theta = s as f64 / k as f64;
        let pmax = if s == 0 {
            e[0].copy_from_slice(l_start);
            pmax_start
        } else {
            rhs.eval_split::<true>(v, (f_hi, f_lo, theta), &mut e[0], None)
        };
        let allowed = step_limit(pmax);
        if dt > 2.0 * allowed || allowed.is_nan() {
            return Err(allowed);
        }
        for st in 1..=4 {
            let (ae, ai) = (&ARS_EXPLICIT[st - 1], &ARS_IMPLICIT[st - 1]);
            // stage = v + dt·acc, acc summed term by term (as the reference) in passes that
            // vectorise
            stage.fill(0.0);
            for (&a, ej) in ae.iter().zip(e.iter()).take(st) {
                for (x, y) in stage.iter_mut().zip(ej) {
                    *x += a * y;
                }
            }
            for (&a, lj) in ai.iter().zip(li.iter()).take(st - 1) {
                for (x, y) in stage.iter_mut().zip(lj) {
                    *x += a * y;
                }
            }
            for (x, y) in stage.iter_mut().zip(v.iter()) {
                *x = y + dt * *x;
            }
            if let Some((_, solver)) = solver.as_ref().filter(|_| diffusive) {
                solver.solve(stage);
            }
            if st < 4 {
                let (e_st, li_st) = (&mut e[st], &mut li[st - 1]);
                rhs.eval_split::<false>(stage, (f_hi, f_lo, theta + ARS_C[st] * dtheta), e_st, Some(li_st));
            } else {
                v.copy_from_slice(stage);
            }
        }
    }
    let pmax = rhs.eval_split::<true>(v, (f_lo, f_next, 0.0), l_end, None);
    let allowed = step_limit(pmax);
    if dt > 2.0 * allowed || allowed.is_nan() {
        return Err(allowed);
    }
    Ok(pmax)
}

/// The sub-step count of a restarted interval: what the slopes ask (`wanted` = Δt/δ), but at
/// least 2k and at most 8k — an overshot state's slopes can be far steeper than the
/// solution's, so its limit is trusted only to grow k geometrically. `None` past the limit.
pub(crate) fn more_substeps(k: usize, wanted: f64) -> Option<usize> {
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
) -> KernelResult<Marching> {
    validate(f, g, nt, p)?;
    let floor = floors(min_substeps, nt - 1)?;
    let nx = g.len();
    let dt_out = p.horizon / (nt - 1) as f64;
    // explicit diffusion: the largest decay rate of (σ²/2)Δ₄ is (σ²/2)(16/3)/dx² =
    // (4/3)·2σ²/dx², so the limit keeps the margin the 3-point stencil (2σ²/dx²) had; implicit
    // diffusion sets no limit
    let rate_diffusion = if p.scheme == Scheme::Rk3 { 4.0 / 3.0 * (p.sigma * p.sigma) / (p.dx * p.dx) } else { 0.0 };
    let step_limit = |pmax: f64| p.cfl / (pmax / p.dx + rate_diffusion);
    let mut out = Marching::new(nt, nx);
    out.row_mut(nt - 1, nx).copy_from_slice(g);
    let mut rhs = Rhs::new(nx, p);
    let mut b = Buffers { v: vec![0.0; nx], u1: vec![0.0; nx], u2: vec![0.0; nx], l_end: vec![0.0; nx] };
    let row = |j: usize| &f[j * nx..(j + 1) * nx];
    let mut u = g.to_vec();
    // the right-hand side at the start of the last interval (θ = 0: f at t_{nt−1})
    let mut l_start = vec![0.0; nx];
    let mut im = ImexBuffers::new(if p.scheme == Scheme::Imex { nx } else { 0 });
    let mut pmax_start = match p.scheme {
        Scheme::Rk3 => rhs.eval::<true>(&u, row(nt - 1), row(nt - 2), 0.0, &mut l_start, |_, _, l| l),
        Scheme::Imex => rhs.eval_split::<true>(&u, (row(nt - 1), row(nt - 2), 0.0), &mut l_start, None),
    };
    for j in (0..nt - 1).rev() {
        let (f_lo, f_hi) = (row(j), row(j + 1));
        // f of the interval before this one, for the right-hand side at t_j that starts it
        let f_next = row(j.saturating_sub(1));
        let collapsed = || format!("HJB: the CFL sub-step collapsed near t = {}", j as f64 * dt_out);
        let Some((mut k, _)) = substeps(dt_out, step_limit(pmax_start), floor[j]) else {
            out.diverged = Some(collapsed());
            return Ok(out);
        };
        pmax_start = loop {
            let fs = (f_hi, f_lo, f_next);
            let tried = match p.scheme {
                Scheme::Rk3 => try_interval(&mut rhs, &mut b, &u, (&l_start, pmax_start), k, fs, dt_out, step_limit),
                Scheme::Imex => {
                    try_interval_imex(&mut rhs, &mut b, &mut im, &u, (&l_start, pmax_start), k, fs, dt_out, step_limit)
                }
            };
            match tried {
                Ok(pmax_end) => break pmax_end,
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
        std::mem::swap(&mut u, &mut b.v);
        std::mem::swap(&mut l_start, &mut b.l_end);
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
            scheme: Scheme::Imex,
        }
    }

    /// The right-hand side as it was computed before the buffers were shared (one allocation
    /// per call, derivatives from `weno::derivatives_unchecked`, the reference's order of
    /// operations): the fused pass must give the same bits.
    fn rhs_reference(u: &[f64], f_hi: &[f64], f_lo: &[f64], theta: f64, p: &HjbParams) -> (Vec<f64>, f64) {
        let n = u.len();
        let (dm, dp) = crate::weno::derivatives_unchecked(u, p.dx, p.bc, p.variant, p.eps);
        let half_s2 = 0.5 * p.sigma * p.sigma;
        let dx2 = p.dx * p.dx;
        let mut out = vec![0.0; n];
        let mut pmax: f64 = 0.0;
        for i in 0..n {
            let at = |k: isize| crate::boundary::ghost(u, i as isize + k, p.bc);
            let lap = (-at(2) + 16.0 * at(1) - 30.0 * u[i] + 16.0 * at(-1) - at(-2)) / (12.0 * dx2);
            let f = (1.0 - theta) * f_hi[i] + theta * f_lo[i];
            out[i] = half_s2 * lap - godunov(dm[i], dp[i]) + f;
            pmax = max_nan(max_nan(pmax, dm[i].abs()), dp[i].abs());
        }
        (out, pmax)
    }

    fn wiggly(n: usize, seed: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919 + seed) % 1000) as f64 / 1000.0 + (i as f64 * 0.05).sin()).collect()
    }

    #[test]
    fn fused_right_hand_side_equals_the_unfused_one_bit_for_bit() {
        for n in [6, 7, 201, 3 * 512 + 7] {
            let u = wiggly(n, 1);
            let (f_hi, f_lo) = (wiggly(n, 2), wiggly(n, 3));
            for bc in [Boundary::Reflect, Boundary::Periodic] {
                for variant in [Variant::Js, Variant::Z] {
                    for (eps, sigma) in [(1e-6, 0.3), (1e-30, 0.0)] {
                        let mut p = params(n, sigma);
                        (p.bc, p.variant, p.eps) = (bc, variant, eps);
                        let mut rhs = Rhs::new(n, &p);
                        let (want, want_pmax) = rhs_reference(&u, &f_hi, &f_lo, 0.375, &p);
                        let mut got = vec![0.0; n];
                        let pmax = rhs.eval::<true>(&u, &f_hi, &f_lo, 0.375, &mut got, |_, _, l| l);
                        assert_eq!(got, want, "{n} {bc:?} {variant:?} {eps}");
                        assert_eq!(pmax.to_bits(), want_pmax.to_bits());
                        assert_eq!(rhs.eval::<false>(&u, &f_hi, &f_lo, 0.375, &mut got, |_, _, l| l), 0.0);
                        // a combining pass: out[i] = combine(out[i], u_i, L_i)
                        let mut acc = f_lo.clone();
                        rhs.eval::<false>(&u, &f_hi, &f_lo, 0.375, &mut acc, |a, c, l| 0.75 * a + 0.25 * (c + 0.1 * l));
                        for i in 0..n {
                            assert_eq!(acc[i], 0.75 * f_lo[i] + 0.25 * (u[i] + 0.1 * want[i]));
                        }
                    }
                }
            }
        }
        // NaN in the slopes makes pmax NaN, as NumPy's max
        let n = 21;
        let mut u = wiggly(n, 4);
        u[10] = f64::NAN;
        let p = params(n, 0.1);
        let mut out = vec![0.0; n];
        assert!(Rhs::new(n, &p).eval::<true>(&u, &u, &u, 0.0, &mut out, |_, _, l| l).is_nan());
        u[10] = f64::INFINITY;
        let pmax = Rhs::new(n, &p).eval::<true>(&u, &u, &u, 0.0, &mut out, |_, _, l| l);
        assert_eq!(pmax.to_bits(), rhs_reference(&u, &u, &u, 0.0, &p).1.to_bits());
    }

    #[test]
    fn derivatives_of_the_extended_state_equal_the_ghost_lookups_bit_for_bit() {
        let mut ws = crate::weno::Workspace::new();
        for n in [6, 9, 201, 512, 513, 3 * 512 + 7] {
            let u = wiggly(n, 5);
            for bc in [Boundary::Reflect, Boundary::Periodic] {
                let mut ue = vec![0.0; n + 6];
                fill_ghosted(&u, -3, bc, &mut ue);
                for variant in [Variant::Js, Variant::Z] {
                    for eps in [1e-6, 1e-30] {
                        let (rm, rp) = crate::weno::derivatives_unchecked(&u, 0.01, bc, variant, eps);
                        let (mut dm, mut dp) = (vec![0.0; n], vec![0.0; n]);
                        derivatives_extended_into(&ue, 0.01, variant, eps, &mut dm, &mut dp, &mut ws);
                        assert_eq!((dm, dp), (rm, rp), "{n} {bc:?} {variant:?} {eps}");
                    }
                }
            }
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
        // the implicit diffusion sets no step limit: one sub-step per interval (the slopes are
        // ~1e-8); the explicit scheme needs ~σ²/dx² of them
        assert!(s.substeps.iter().all(|&k| k == 1), "{:?}", s.substeps);
        let explicit =
            hjb_backward(&vec![0.0; nx * nt], &g, nt, &HjbParams { scheme: Scheme::Rk3, ..p }, None).unwrap();
        assert!(explicit.substeps.iter().all(|&k| k > 100), "{:?}", explicit.substeps);
        let ratio = explicit.values[0] / g[0];
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
        let floor: Vec<usize> =
            free.substeps.iter().enumerate().map(|(j, k)| if j % 2 == 0 { k + 7 } else { 1 }).collect();
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

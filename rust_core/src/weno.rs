//! WENO5 for Hamilton–Jacobi equations: the smoothness indicators of 5-point windows and the
//! left- and right-biased derivatives d⁻, d⁺ at every node (Jiang–Shu "js" or WENO-Z "z"
//! weights), with "periodic" or "reflect" ghost nodes.
//!
//! The maths: see mfg_ensemble/kernels/reference/weno.py.
//!
//! Implementation: the derivatives run block by block (`BLOCK` nodes, the differences in
//! per-task scratch buffers that stay in L1), each block one SIMD-dispatched loop
//! (`simd::dispatch`) in a rearranged form of the reference algebra with two divisions per
//! node (see `block_body`); a block whose result is not finite is redone in the reference
//! form. ε is relative to the data (ε_rel · max of the window's squared differences + 1e-300,
//! Osher–Fedkiw), so each node's ε, too, depends on its own stencil only. Large grids run in parallel over fixed chunks; each node's result depends on its own
//! stencil only, so the bits do not depend on the thread count. `derivatives_extended_into`
//! serves the HJB march: it takes the state with its ghost nodes already filled and reuses
//! the caller's buffers.

use rayon::prelude::*;

use crate::boundary::{fill_ghosted, ghost, Boundary, GHOSTS};
use crate::error::{check_finite, check_positive, finite_body, KernelError, KernelResult};
use crate::simd;

/// Fewest nodes the derivative kernel accepts (three ghost nodes are mirrored from the interior).
pub const MIN_NODES: usize = 6;
/// The boundary conditions of the derivatives, in the order the error message lists them.
pub const BCS: [Boundary; 2] = [Boundary::Periodic, Boundary::Reflect];
const CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Js,
    Z,
}

impl Variant {
    pub fn parse(text: &str) -> KernelResult<Variant> {
        match text {
            "js" => Ok(Variant::Js),
            "z" => Ok(Variant::Z),
            _ => Err(KernelError(format!("variant must be one of 'js', 'z', got '{text}'"))),
        }
    }
}

/// Jiang–Shu smoothness indicators (β0, β1, β2) of the window (a, b, c, d, e) = u_{i−2..i+2}.
#[inline(always)]
fn window_betas(a: f64, b: f64, c: f64, d: f64, e: f64) -> [f64; 3] {
    let s0 = a - 2.0 * b + c;
    let t0 = a - 4.0 * b + 3.0 * c;
    let s1 = b - 2.0 * c + d;
    let t1 = b - d;
    let s2 = c - 2.0 * d + e;
    let t2 = 3.0 * c - 4.0 * d + e;
    [
        13.0 / 12.0 * (s0 * s0) + 0.25 * (t0 * t0),
        13.0 / 12.0 * (s1 * s1) + 0.25 * (t1 * t1),
        13.0 / 12.0 * (s2 * s2) + 0.25 * (t2 * t2),
    ]
}

/// β0, β1, β2 of every 5-point window of `u`, row-major with shape (3, n − 4).
pub fn smoothness_indicators(u: &[f64]) -> KernelResult<Vec<f64>> {
    if u.len() < 5 {
        return Err(KernelError(format!("u needs at least 5 points for a 5-point window, got {}", u.len())));
    }
    check_finite("u", u)?;
    let m = u.len() - 4;
    let mut out = vec![0.0; 3 * m];
    let (b0, rest) = out.split_at_mut(m);
    let (b1, b2) = rest.split_at_mut(m);
    b0.par_chunks_mut(CHUNK).zip(b1.par_chunks_mut(CHUNK)).zip(b2.par_chunks_mut(CHUNK)).enumerate().for_each(
        |(c, ((o0, o1), o2))| {
            let start = c * CHUNK;
            for k in 0..o0.len() {
                let w = &u[start + k..start + k + 5];
                let [x0, x1, x2] = window_betas(w[0], w[1], w[2], w[3], w[4]);
                o0[k] = x0;
                o1[k] = x1;
                o2[k] = x2;
            }
        },
    );
    Ok(out)
}

/// The absolute floor of ε (see the reference): ε = eps · max(v1², …, v5²) + EPS_FLOOR.
pub const EPS_FLOOR: f64 = 1e-300;

/// max(a, b) for the finite values of a window (compiles to one vector max).
#[inline(always)]
fn fmax(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

/// 1/ε of the window v1..v5: ε relative to the largest squared difference, plus the floor.
#[inline(always)]
fn inverse_eps(v: [f64; 5], eps: f64) -> f64 {
    let [v1, v2, v3, v4, v5] = v;
    let scale = fmax(fmax(fmax(v1 * v1, v2 * v2), fmax(v3 * v3, v4 * v4)), v5 * v5);
    1.0 / (eps * scale + EPS_FLOOR)
}

/// The WENO combination of the three third-order stencils on differences v1..v5 (the
/// reference form: weights from Sₖ/ε and τ/ε).
#[inline(always)]
pub(crate) fn weno_combine(v: [f64; 5], variant: Variant, eps: f64) -> f64 {
    let [v1, v2, v3, v4, v5] = v;
    let phi1 = v1 / 3.0 - 7.0 * v2 / 6.0 + 11.0 * v3 / 6.0;
    let phi2 = -v2 / 6.0 + 5.0 * v3 / 6.0 + v4 / 3.0;
    let phi3 = v3 / 3.0 + 5.0 * v4 / 6.0 - v5 / 6.0;
    let [s1, s2, s3] = window_betas(v1, v2, v3, v4, v5);
    let inv = inverse_eps(v, eps);
    let (q1, q2, q3) = (1.0 + s1 * inv, 1.0 + s2 * inv, 1.0 + s3 * inv);
    let (a1, a2, a3) = match variant {
        Variant::Js => (0.1 / (q1 * q1), 0.6 / (q2 * q2), 0.3 / (q3 * q3)),
        Variant::Z => {
            let tau = (s1 - s3).abs() * inv;
            let (r1, r2, r3) = (tau / q1, tau / q2, tau / q3);
            (0.1 * (1.0 + r1 * r1), 0.6 * (1.0 + r2 * r2), 0.3 * (1.0 + r3 * r3))
        }
    };
    (a1 * phi1 + a2 * phi2 + a3 * phi3) / (a1 + a2 + a3)
}

/// Left- and right-biased HJ-WENO5 derivatives (d⁻, d⁺) of `u` at every node.
pub fn weno5_derivatives(
    u: &[f64],
    dx: f64,
    bc: Boundary,
    variant: Variant,
    eps: f64,
) -> KernelResult<(Vec<f64>, Vec<f64>)> {
    if u.len() < MIN_NODES {
        return Err(KernelError(format!("u needs at least {MIN_NODES} points for the WENO5 stencil, got {}", u.len())));
    }
    check_positive("dx", dx)?;
    check_positive("eps", eps)?;
    bc.check(&BCS)?;
    check_finite("u", u)?;
    Ok(derivatives_unchecked(u, dx, bc, variant, eps))
}

/// Nodes per block: a block's differences live in stack buffers (L1-resident).
const BLOCK: usize = 512;
/// Grids below this many nodes run on the calling thread (Rayon's overhead would dominate).
const PARALLEL_MIN: usize = 65_536;
/// Nodes per parallel task (a multiple of BLOCK).
const TASK: usize = 32 * BLOCK;
/// The blocked form below multiplies up to six (1 + S/ε)² factors, each in [1, (1 + 34/eps)²]
/// (eps = ε_rel); with eps ≥ EPS_MIN their products stay finite. Smaller eps takes the
/// reference form (as does a block whose product overflows).
const EPS_MIN: f64 = 1e-24;

/// Per-task buffers of `block_body`, allocated once per task and reused by its blocks.
struct Scratch {
    ue: Vec<f64>,
    v: Vec<f64>,
    dv: Vec<f64>,
    sd: Vec<f64>,
    k2: Vec<f64>,
    sq: Vec<f64>,
    sc: Vec<f64>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            ue: vec![0.0; BLOCK + 6],
            v: vec![0.0; BLOCK + 5],
            dv: vec![0.0; BLOCK + 4],
            sd: vec![0.0; BLOCK + 3],
            k2: vec![0.0; BLOCK + 3],
            sq: vec![0.0; BLOCK + 5],
            sc: vec![0.0; BLOCK + 1],
        }
    }
}

/// d⁻ and d⁺ of the nodes `start .. start + dm.len()` (1 ≤ dm.len() ≤ BLOCK).
///
/// Window w of the block is (a, b, c, d, e) = v[w .. w + 5] (v[t] = v_{start+t−3} of the
/// reference); d⁻ of node start + w uses window w, d⁺ of node start + w − 1 uses it reversed,
/// so both share the window's smoothness indicators (S1 and S3 swap roles). The same algebra
/// as the reference, rearranged for fewer operations and two divisions per node:
///
/// * with e1 = c − b, e2 = d − c and the second differences s0, s1, s2 of the three
///   sub-stencils, t0 = a − 4b + 3c = s0 + 2e1, t1 = b − d = −(e1 + e2), t2 = s2 − 2e2, and
///   Sₖ = 13/12 sₖ² + 1/4 tₖ²; the 13/12 s² terms are computed once per position;
/// * φₖ = c + δₖ with δ1 = s0/3 + e1/2, δ2 = e2/2 − s1/6, δ3 = e2/2 − s2/6 (d⁻) and
///   δ1 = s2/3 − e2/2, δ2 = −e1/2 − s1/6, δ3 = −e1/2 − s0/6 (d⁺);
/// * 1/ε of the window from its largest squared difference (one division, the first);
/// * with pₖ = (1 + Sₖ/ε)² the weights αₖ are multiplied by p1 p2 p3: js αₖ ∝ γₖ Pₖ, z αₖ ∝
///   γₖ (pₖ + (τ/ε)²) Pₖ, Pₖ the product of the other two p's; d = c + Σ αₖ δₖ / Σ αₖ, the two
///   divisions of d⁻ and d⁺ done as one reciprocal of the product of their weight sums.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_body(
    u: &[f64],
    bc: Boundary,
    inv_dx: f64,
    start: usize,
    variant: Variant,
    eps: f64,
    dm: &mut [f64],
    dp: &mut [f64],
    sc: &mut Scratch,
) {
    let len = dm.len();
    debug_assert!((1..=BLOCK).contains(&len) && dp.len() == len);
    let n = u.len();
    let Scratch { ue: ue_buf, v: v_buf, dv: dv_buf, sd: sd_buf, k2: k2_buf, sq: sq_buf, sc: sc_buf } = sc;
    // u_{start−3 .. start+len+3}
    let ue: &[f64] = if start >= GHOSTS && start + len + GHOSTS <= n {
        &u[start - GHOSTS..start + len + GHOSTS]
    } else {
        let ue = &mut ue_buf[..len + 2 * GHOSTS];
        fill_ghosted(u, start as isize - GHOSTS as isize, bc, ue);
        ue
    };
    // v (len + 5), its differences dv (len + 4), second differences sd and 13/12·sd² (len + 3)
    let v = &mut v_buf[..len + 5];
    for (t, o) in v.iter_mut().enumerate() {
        *o = (ue[t + 1] - ue[t]) * inv_dx;
    }
    let v: &[f64] = v;
    let dv = &mut dv_buf[..len + 4];
    for (t, o) in dv.iter_mut().enumerate() {
        *o = v[t + 1] - v[t];
    }
    let dv: &[f64] = dv;
    let (sd, k2) = (&mut sd_buf[..len + 3], &mut k2_buf[..len + 3]);
    for t in 0..len + 3 {
        let x = dv[t + 1] - dv[t];
        sd[t] = x;
        k2[t] = (13.0 / 12.0) * (x * x);
    }
    let (sd, k2): (&[f64], &[f64]) = (sd, k2);
    // the scale of window w, max(v[w..w + 5]²): pairs, then quadruples, then the fifth
    let sq = &mut sq_buf[..len + 5];
    for (o, &x) in sq.iter_mut().zip(v) {
        *o = x * x;
    }
    let sc = &mut sc_buf[..len + 1];
    for (t, o) in sc.iter_mut().enumerate() {
        *o = fmax(fmax(fmax(sq[t], sq[t + 1]), fmax(sq[t + 2], sq[t + 3])), sq[t + 4]);
    }
    let sc: &[f64] = sc;
    // windows 1 .. len: d⁻ of local nodes 1 .. len, d⁺ of local nodes 0 .. len − 1
    let m = len - 1;
    let cc = &v[3..3 + m];
    let (e1s, e2s) = (&dv[2..2 + m], &dv[3..3 + m]);
    let (s0s, s1s, s2s) = (&sd[1..1 + m], &sd[2..2 + m], &sd[3..3 + m]);
    let (k0s, k1s, k2s) = (&k2[1..1 + m], &k2[2..2 + m], &k2[3..3 + m]);
    let scs = &sc[1..1 + m];
    let (om, op) = (&mut dm[1..1 + m], &mut dp[..m]);
    let z = variant == Variant::Z;
    for k in 0..m {
        let (c, e1, e2) = (cc[k], e1s[k], e2s[k]);
        let (s0, s1, s2) = (s0s[k], s1s[k], s2s[k]);
        let t0 = s0 + 2.0 * e1;
        let t1 = e1 + e2;
        let t2 = s2 - 2.0 * e2;
        let b1 = k0s[k] + 0.25 * (t0 * t0);
        let b2 = k1s[k] + 0.25 * (t1 * t1);
        let b3 = k2s[k] + 0.25 * (t2 * t2);
        let inv = 1.0 / (eps * scs[k] + EPS_FLOOR);
        let (q1, q2, q3) = (1.0 + b1 * inv, 1.0 + b2 * inv, 1.0 + b3 * inv);
        let (p1, p2, p3) = (q1 * q1, q2 * q2, q3 * q3);
        let (mut w1, mut w2, mut w3) = (p2 * p3, p1 * p3, p1 * p2);
        if z {
            let tau = (b1 - b3) * inv;
            let tt = tau * tau;
            w1 *= p1 + tt;
            w2 *= p2 + tt;
            w3 *= p3 + tt;
        }
        let w2g = 0.6 * w2;
        let (w1m, w3m) = (0.1 * w1, 0.3 * w3);
        let (w1p, w3p) = (0.3 * w1, 0.1 * w3);
        let (h1, h2) = (0.5 * e1, 0.5 * e2);
        let s1_6 = s1 * (1.0 / 6.0);
        let dm1 = s0 * (1.0 / 3.0) + h1;
        let dm2 = h2 - s1_6;
        let dm3 = h2 - s2 * (1.0 / 6.0);
        let dp1 = s2 * (1.0 / 3.0) - h2;
        let dp2 = -h1 - s1_6;
        let dp3 = -h1 - s0 * (1.0 / 6.0);
        let den_m = w1m + w2g + w3m;
        let den_p = w3p + w2g + w1p;
        let num_m = w1m * dm1 + w2g * dm2 + w3m * dm3;
        let num_p = w3p * dp1 + w2g * dp2 + w1p * dp3;
        let prod = den_m * den_p;
        let r = 1.0 / prod;
        // an overflowed product (r = 0) is marked NaN; NaN and inf send the block to the fallback
        let (xm, xp) =
            if prod <= f64::MAX { (c + num_m * (den_p * r), c + num_p * (den_m * r)) } else { (f64::NAN, f64::NAN) };
        om[k] = xm;
        op[k] = xp;
    }
    if !finite_body(om) || !finite_body(op) {
        for k in 0..m {
            let w = &v[k + 1..k + 6];
            om[k] = weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps);
            op[k] = weno_combine([w[4], w[3], w[2], w[1], w[0]], variant, eps);
        }
    }
    dm[0] = weno_combine([v[0], v[1], v[2], v[3], v[4]], variant, eps);
    dp[len - 1] = weno_combine([v[len + 4], v[len + 3], v[len + 2], v[len + 1], v[len]], variant, eps);
}

/// The arguments of `block_body`, for `simd::dispatch`.
struct Block<'a> {
    u: &'a [f64],
    bc: Boundary,
    inv_dx: f64,
    start: usize,
    variant: Variant,
    eps: f64,
    dm: &'a mut [f64],
    dp: &'a mut [f64],
    sc: &'a mut Scratch,
}

impl simd::Kernel for Block<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Block { u, bc, inv_dx, start, variant, eps, dm, dp, sc } = self;
        block_body(u, bc, inv_dx, start, variant, eps, dm, dp, sc)
    }
}

/// d⁻, d⁺ of nodes `start ..` (any length) block by block, each with the widest vector code
/// the CPU supports (`simd::dispatch`: the same bits on every CPU).
#[allow(clippy::too_many_arguments)]
fn combine_range(
    u: &[f64],
    bc: Boundary,
    inv_dx: f64,
    start: usize,
    variant: Variant,
    eps: f64,
    dm: &mut [f64],
    dp: &mut [f64],
) {
    if eps < EPS_MIN {
        for (k, (om, op)) in dm.iter_mut().zip(dp.iter_mut()).enumerate() {
            let w: [f64; 6] = std::array::from_fn(|t| {
                let i = (start + k) as isize + t as isize - 3;
                (ghost(u, i + 1, bc) - ghost(u, i, bc)) * inv_dx
            });
            *om = weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps);
            *op = weno_combine([w[5], w[4], w[3], w[2], w[1]], variant, eps);
        }
        return;
    }
    let mut sc = Scratch::new();
    for (b, (dm, dp)) in dm.chunks_mut(BLOCK).zip(dp.chunks_mut(BLOCK)).enumerate() {
        let start = start + b * BLOCK;
        simd::dispatch(Block { u, bc, inv_dx, start, variant, eps, dm, dp, sc: &mut sc });
    }
}

/// The derivatives without argument checks (for callers that validated already, e.g. the
/// HJB solver); small grids run on the calling thread, large ones in parallel over fixed
/// chunks (each node's result depends only on its own stencil, whatever the threads).
pub(crate) fn derivatives_unchecked(
    u: &[f64],
    dx: f64,
    bc: Boundary,
    variant: Variant,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = u.len();
    let inv_dx = 1.0 / dx;
    let mut d_minus = vec![0.0; n];
    let mut d_plus = vec![0.0; n];
    if n < PARALLEL_MIN {
        combine_range(u, bc, inv_dx, 0, variant, eps, &mut d_minus, &mut d_plus);
    } else {
        d_minus
            .par_chunks_mut(TASK)
            .zip(d_plus.par_chunks_mut(TASK))
            .enumerate()
            .for_each(|(c, (dm, dp))| combine_range(u, bc, inv_dx, c * TASK, variant, eps, dm, dp));
    }
    (d_minus, d_plus)
}

/// Reusable buffers of [`derivatives_extended_into`], so that a solver calling it many times
/// on the same small grid allocates them once.
pub struct Workspace {
    sc: Scratch,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace { sc: Scratch::new() }
    }
}

impl Default for Workspace {
    fn default() -> Workspace {
        Workspace::new()
    }
}

/// d⁻, d⁺ of the nodes start .. start + dm.len() of `ue` = u with its three ghost nodes on
/// each side already in place (node i of u is ue[i + 3]): `combine_range` without the ghost
/// lookups and with the caller's scratch.
#[allow(clippy::too_many_arguments)]
fn combine_extended(
    ue: &[f64],
    inv_dx: f64,
    start: usize,
    variant: Variant,
    eps: f64,
    dm: &mut [f64],
    dp: &mut [f64],
    sc: &mut Scratch,
) {
    if eps < EPS_MIN {
        for (k, (om, op)) in dm.iter_mut().zip(dp.iter_mut()).enumerate() {
            let i = start + k;
            let w: [f64; 6] = std::array::from_fn(|t| (ue[i + t + 1] - ue[i + t]) * inv_dx);
            *om = weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps);
            *op = weno_combine([w[5], w[4], w[3], w[2], w[1]], variant, eps);
        }
        return;
    }
    // every block lies inside ue with its three ghosts, so `bc` is never consulted
    let bc = Boundary::Periodic;
    for (b, (dm, dp)) in dm.chunks_mut(BLOCK).zip(dp.chunks_mut(BLOCK)).enumerate() {
        let start = GHOSTS + start + b * BLOCK;
        simd::dispatch(Block { u: ue, bc, inv_dx, start, variant, eps, dm, dp, sc: &mut *sc });
    }
}

/// `derivatives_unchecked` of u = ue[3 .. ue.len() − 3] written into `dm`, `dp` (length
/// ue.len() − 6 ≥ MIN_NODES), for a caller that keeps u with its ghost nodes filled as the
/// reference says (`boundary::fill_ghosted` with first = −GHOSTS),
/// e.g. because it needs them for its own stencils, and calls this once per time stage: no
/// allocation on small grids (the buffers live in `ws`), the same bits as
/// `derivatives_unchecked`, large grids in parallel over the same fixed chunks.
pub fn derivatives_extended_into(
    ue: &[f64],
    dx: f64,
    variant: Variant,
    eps: f64,
    dm: &mut [f64],
    dp: &mut [f64],
    ws: &mut Workspace,
) {
    let n = ue.len().saturating_sub(6);
    assert!(n >= MIN_NODES && dm.len() == n && dp.len() == n, "derivatives_extended_into: lengths");
    let inv_dx = 1.0 / dx;
    if n < PARALLEL_MIN {
        combine_extended(ue, inv_dx, 0, variant, eps, dm, dp, &mut ws.sc);
    } else {
        dm.par_chunks_mut(TASK).zip(dp.par_chunks_mut(TASK)).enumerate().for_each(|(c, (dm, dp))| {
            combine_extended(ue, inv_dx, c * TASK, variant, eps, dm, dp, &mut Scratch::new())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_error(n: usize, variant: Variant) -> f64 {
        let dx = std::f64::consts::TAU / n as f64;
        let u: Vec<f64> = (0..n).map(|i| (i as f64 * dx).sin()).collect();
        let (dm, dp) = weno5_derivatives(&u, dx, Boundary::Periodic, variant, 1e-6).unwrap();
        (0..n)
            .map(|i| {
                let exact = (i as f64 * dx).cos();
                (dm[i] - exact).abs().max((dp[i] - exact).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn fifth_order_on_a_smooth_periodic_function() {
        for variant in [Variant::Js, Variant::Z] {
            let (e1, e2) = (max_error(80, variant), max_error(160, variant));
            let order = (e1 / e2).log2();
            assert!(order > 4.8, "{variant:?}: order {order} ({e1:e} -> {e2:e})");
        }
    }

    #[test]
    fn exact_for_linear_data_and_zero_for_constants() {
        let u: Vec<f64> = (0..20).map(|i| 3.0 * i as f64 * 0.1).collect();
        let (dm, dp) = weno5_derivatives(&u, 0.1, Boundary::Reflect, Variant::Js, 1e-6).unwrap();
        for i in 3..17 {
            assert!((dm[i] - 3.0).abs() < 1e-12 && (dp[i] - 3.0).abs() < 1e-12);
        }
        let c = vec![2.5; 10];
        let (dm, dp) = weno5_derivatives(&c, 0.1, Boundary::Periodic, Variant::Z, 1e-6).unwrap();
        assert!(dm.iter().chain(dp.iter()).all(|&d| d == 0.0));
    }

    #[test]
    fn reflect_mirrors_the_walls() {
        let u: Vec<f64> = (0..12).map(|i| ((i as f64) * 0.3).cos() + 0.1 * i as f64).collect();
        let (dm, dp) = weno5_derivatives(&u, 0.3, Boundary::Reflect, Variant::Js, 1e-6).unwrap();
        // mirror symmetry about node 0: d⁻(0) = −d⁺(0)
        assert!((dm[0] + dp[0]).abs() < 1e-12);
        assert!((dm[11] + dp[11]).abs() < 1e-12);
    }

    /// The reference form, node by node, on ghost nodes.
    fn naive(u: &[f64], dx: f64, bc: Boundary, variant: Variant, eps: f64) -> (Vec<f64>, Vec<f64>) {
        (0..u.len())
            .map(|i| {
                let w: Vec<f64> = (0..6)
                    .map(|t| {
                        let k = i as isize + t - 3;
                        (ghost(u, k + 1, bc) - ghost(u, k, bc)) / dx
                    })
                    .collect();
                (
                    weno_combine([w[0], w[1], w[2], w[3], w[4]], variant, eps),
                    weno_combine([w[5], w[4], w[3], w[2], w[1]], variant, eps),
                )
            })
            .unzip()
    }

    #[test]
    fn blocked_form_equals_the_reference_form_including_fallbacks() {
        let n = 3 * BLOCK + 7;
        let mut u: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 1000.0 + (i as f64 * 0.01).sin()).collect();
        for (scale, eps) in [(1.0, 1e-6), (1e60, 1e-6), (1e-30, 1e-40), (1.0, 1e-30)] {
            u.iter_mut().for_each(|x| *x *= scale);
            for bc in [Boundary::Periodic, Boundary::Reflect] {
                for variant in [Variant::Js, Variant::Z] {
                    let (dm, dp) = derivatives_unchecked(&u, 0.01, bc, variant, eps);
                    let (rm, rp) = naive(&u, 0.01, bc, variant, eps);
                    let peak = rm.iter().chain(&rp).fold(0.0f64, |a, v| a.max(v.abs()));
                    for i in 0..n {
                        assert!((dm[i] - rm[i]).abs() <= 1e-13 * peak, "{scale} {eps} {bc:?} {variant:?} d- {i}");
                        assert!((dp[i] - rp[i]).abs() <= 1e-13 * peak, "{scale} {eps} {bc:?} {variant:?} d+ {i}");
                    }
                }
            }
            u.iter_mut().for_each(|x| *x /= scale);
        }
    }

    #[test]
    fn a_kink_of_slope_1e_minus_4_does_not_overshoot() {
        // absolute ε = 1e-6 gave the linear weights here: 34 % overshoot
        let x: Vec<f64> = (0..81).map(|i| -1.0 + 0.025 * i as f64).collect();
        for slope in [1e-4, 1.0, 1e4] {
            let u: Vec<f64> = x.iter().map(|&x| slope * (x - 0.3).abs()).collect();
            for variant in [Variant::Js, Variant::Z] {
                let (dm, dp) = weno5_derivatives(&u, 0.025, Boundary::Reflect, variant, 1e-6).unwrap();
                let peak = dm[4..77].iter().chain(&dp[4..77]).fold(0.0f64, |a, d| a.max(d.abs()));
                assert!(peak <= slope * (1.0 + 1e-9), "{slope} {variant:?}: {}", peak / slope - 1.0);
            }
        }
    }

    #[test]
    fn betas_of_a_window() {
        let b = smoothness_indicators(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]).unwrap();
        assert_eq!(b.len(), 6);
        // window (1,2,4,8,16): β0 = 13/12·1 + 1/4·(1−8+12)² = 13/12 + 25/4
        assert!((b[0] - (13.0 / 12.0 + 25.0 / 4.0)).abs() < 1e-13);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(weno5_derivatives(&[1.0; 5], 0.1, Boundary::Periodic, Variant::Js, 1e-6).is_err());
        assert!(weno5_derivatives(&[1.0; 8], 0.0, Boundary::Periodic, Variant::Js, 1e-6).is_err());
        let mut u = vec![1.0; 8];
        u[3] = f64::NAN;
        let e = weno5_derivatives(&u, 0.1, Boundary::Periodic, Variant::Js, 1e-6).unwrap_err();
        assert!(e.0.contains("index 3"));
        assert!(smoothness_indicators(&[1.0; 4]).is_err());
        assert!(Variant::parse("weno").is_err());
    }
}

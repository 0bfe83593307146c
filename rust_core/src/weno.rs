//! WENO5 for Hamilton–Jacobi equations (Jiang & Peng, SIAM J. Sci. Comput. 21, 2000).
//!
//! On a uniform grid with spacing dx, let vₖ = (u_{k+1} − u_k)/dx be the first divided
//! differences. The left-biased approximation d⁻ of ∂u/∂x at node i uses
//! (v1..v5) = (v_{i−3}, v_{i−2}, v_{i−1}, v_i, v_{i+1}); the right-biased d⁺ uses the mirror
//! (v_{i+2}, v_{i+1}, v_i, v_{i−1}, v_{i−2}). With these, both are
//!
//!   φ1 = v1/3 − 7v2/6 + 11v3/6,  φ2 = −v2/6 + 5v3/6 + v4/3,  φ3 = v3/3 + 5v4/6 − v5/6
//!   S1 = 13/12 (v1 − 2v2 + v3)² + 1/4 (v1 − 4v2 + 3v3)²
//!   S2 = 13/12 (v2 − 2v3 + v4)² + 1/4 (v2 − v4)²
//!   S3 = 13/12 (v3 − 2v4 + v5)² + 1/4 (3v3 − 4v4 + v5)²
//!   d  = (α1 φ1 + α2 φ2 + α3 φ3)/(α1 + α2 + α3),  ideal weights (γ1, γ2, γ3) = (0.1, 0.6, 0.3)
//!
//! with αₖ = γₖ/(ε + Sₖ)² (Jiang–Shu, "js") or αₖ = γₖ (1 + (τ/(ε + Sₖ))²), τ = |S1 − S3|
//! (WENO-Z of Borges et al., J. Comput. Phys. 227, 2008, with exponent 2), units of u/x.
//! Ghost nodes: "periodic" wraps (node n is node 0); "reflect" mirrors about the end nodes,
//! u_{−k} = u_k and u_{n−1+k} = u_{n−1−k}, so the slope at the walls is zero.

use rayon::prelude::*;

use crate::boundary::Boundary;
use crate::error::{check_finite, check_positive, KernelError, KernelResult};

/// Fewest nodes the derivative kernel accepts (three ghost nodes are mirrored from the interior).
pub const MIN_NODES: usize = 6;
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
        return Err(KernelError(format!(
            "u needs at least 5 points for a 5-point window, got {}",
            u.len()
        )));
    }
    check_finite("u", u)?;
    let m = u.len() - 4;
    let mut out = vec![0.0; 3 * m];
    let (b0, rest) = out.split_at_mut(m);
    let (b1, b2) = rest.split_at_mut(m);
    b0.par_chunks_mut(CHUNK)
        .zip(b1.par_chunks_mut(CHUNK))
        .zip(b2.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((o0, o1), o2))| {
            let start = c * CHUNK;
            for k in 0..o0.len() {
                let w = &u[start + k..start + k + 5];
                let [x0, x1, x2] = window_betas(w[0], w[1], w[2], w[3], w[4]);
                o0[k] = x0;
                o1[k] = x1;
                o2[k] = x2;
            }
        });
    Ok(out)
}

/// The WENO combination of the three third-order stencils on differences v1..v5.
#[inline(always)]
fn weno_combine(v: [f64; 5], variant: Variant, eps: f64) -> f64 {
    let [v1, v2, v3, v4, v5] = v;
    let phi1 = v1 / 3.0 - 7.0 * v2 / 6.0 + 11.0 * v3 / 6.0;
    let phi2 = -v2 / 6.0 + 5.0 * v3 / 6.0 + v4 / 3.0;
    let phi3 = v3 / 3.0 + 5.0 * v4 / 6.0 - v5 / 6.0;
    let [s1, s2, s3] = window_betas(v1, v2, v3, v4, v5);
    let (a1, a2, a3) = match variant {
        Variant::Js => {
            let (q1, q2, q3) = (eps + s1, eps + s2, eps + s3);
            (0.1 / (q1 * q1), 0.6 / (q2 * q2), 0.3 / (q3 * q3))
        }
        Variant::Z => {
            let tau = (s1 - s3).abs();
            let (r1, r2, r3) = (tau / (eps + s1), tau / (eps + s2), tau / (eps + s3));
            (0.1 * (1.0 + r1 * r1), 0.6 * (1.0 + r2 * r2), 0.3 * (1.0 + r3 * r3))
        }
    };
    (a1 * phi1 + a2 * phi2 + a3 * phi3) / (a1 + a2 + a3)
}

/// `u` with three ghost nodes on each side, filled for the boundary condition `bc`.
fn with_ghosts(u: &[f64], bc: Boundary) -> Vec<f64> {
    let n = u.len();
    let mut ext = Vec::with_capacity(n + 6);
    for k in (1..=3).rev() {
        ext.push(match bc {
            Boundary::Reflect => u[k],
            _ => u[n - k],
        });
    }
    ext.extend_from_slice(u);
    for k in 1..=3 {
        ext.push(match bc {
            Boundary::Reflect => u[n - 1 - k],
            _ => u[k - 1],
        });
    }
    ext
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
        return Err(KernelError(format!(
            "u needs at least {MIN_NODES} points for the WENO5 stencil, got {}",
            u.len()
        )));
    }
    check_positive("dx", dx)?;
    check_positive("eps", eps)?;
    if bc == Boundary::Open {
        return Err(KernelError("bc must be one of 'periodic', 'reflect', got 'none'".into()));
    }
    check_finite("u", u)?;
    Ok(derivatives_unchecked(u, dx, bc, variant, eps))
}

/// d⁻ and d⁺ of nodes `start ..` into `dm`, `dp` from the divided differences `diff`.
fn combine_range(diff: &[f64], start: usize, variant: Variant, eps: f64, dm: &mut [f64], dp: &mut [f64]) {
    for k in 0..dm.len() {
        let v = &diff[start + k..start + k + 6];
        dm[k] = weno_combine([v[0], v[1], v[2], v[3], v[4]], variant, eps);
        dp[k] = weno_combine([v[5], v[4], v[3], v[2], v[1]], variant, eps);
    }
}

/// The derivatives without argument checks (for callers that validated already, e.g. the
/// HJB solver); small grids run on the calling thread, large ones in parallel.
pub(crate) fn derivatives_unchecked(
    u: &[f64],
    dx: f64,
    bc: Boundary,
    variant: Variant,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = u.len();
    let ext = with_ghosts(u, bc);
    // diff[j] = (ext[j+1] − ext[j])/dx is v_{j−3} of the docstring.
    let diff: Vec<f64> = ext.windows(2).map(|w| (w[1] - w[0]) / dx).collect();
    let mut d_minus = vec![0.0; n];
    let mut d_plus = vec![0.0; n];
    if n <= CHUNK {
        combine_range(&diff, 0, variant, eps, &mut d_minus, &mut d_plus);
    } else {
        d_minus
            .par_chunks_mut(CHUNK)
            .zip(d_plus.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (dm, dp))| combine_range(&diff, c * CHUNK, variant, eps, dm, dp));
    }
    (d_minus, d_plus)
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

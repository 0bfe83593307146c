//! The one error type of the kernels, a message that names the offending argument, and the
//! argument checks that produce it. The PyO3 layer turns it into a Python `ValueError`
//! (`convert.rs`).
//!
//! The array checks run a branch-free scan first (`all_finite`, `all_inside`: they vectorise)
//! and look for the first offending index, for the message, only when that scan fails.

use std::fmt;

use crate::simd;

#[derive(Debug, Clone, PartialEq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

pub type KernelResult<T> = Result<T, KernelError>;

/// Whether every value is finite, branch-free per value so that it vectorises: x·0 is ±0
/// unless x is NaN or ±inf, where it is NaN, and NaN survives the lane sums.
#[inline(always)]
pub(crate) fn finite_body(x: &[f64]) -> bool {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j] * 0.0;
        }
    }
    for (j, &r) in rest.iter().enumerate() {
        acc[j] += r * 0.0;
    }
    acc.iter().all(|&a| a == 0.0)
}

struct Finite<'a>(&'a [f64]);

impl simd::Kernel for Finite<'_> {
    type Output = bool;
    #[inline(always)]
    fn run(self) -> bool {
        finite_body(self.0)
    }
}

/// `finite_body` with the widest vectors the CPU has.
pub(crate) fn all_finite(x: &[f64]) -> bool {
    simd::dispatch(Finite(x))
}

/// `Err` unless every value of `values` is finite; names `name` and the first bad index.
pub fn check_finite(name: &str, values: &[f64]) -> KernelResult<()> {
    if all_finite(values) {
        return Ok(());
    }
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(KernelError(format!("{name} contains NaN or inf (first at index {i}: {})", values[i]))),
    }
}

/// Whether lo ≤ x ≤ hi for every x that is not NaN: a branch-free min/max scan that
/// vectorises (`check_inside` gives the message when it fails).
#[inline(always)]
pub(crate) fn all_inside(x: &[f64], lo: f64, hi: f64) -> bool {
    let (mut mn, mut mx) = ([lo; 8], [hi; 8]);
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            mn[j] = if c[j] < mn[j] { c[j] } else { mn[j] };
            mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
        }
    }
    rest.iter().all(|&v| v >= lo && v <= hi) && mn.iter().all(|&v| v >= lo) && mx.iter().all(|&v| v <= hi)
}

/// `Err` unless lo ≤ x ≤ hi for every x of `values` (NaN is not caught here: check finiteness
/// first); the message names `name`, the interval as `interval` spells it for the caller (e.g.
/// "[lo, hi]" or "[grid[0], grid[-1]]"), its bounds and the first value outside.
pub fn check_inside(name: &str, values: &[f64], interval: &str, lo: f64, hi: f64) -> KernelResult<()> {
    if all_inside(values, lo, hi) {
        return Ok(());
    }
    match values.iter().position(|&v| v < lo || v > hi) {
        None => Ok(()),
        Some(i) => {
            Err(KernelError(format!("{name} must lie in {interval} = [{lo}, {hi}], {name}[{i}] = {}", values[i])))
        }
    }
}

/// `Err` unless the scalar `value` is finite and strictly positive.
pub fn check_positive(name: &str, value: f64) -> KernelResult<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(KernelError(format!("{name} must be finite and > 0, got {value}")))
    }
}

/// `Err` unless the scalar `value` is finite and >= 0.
pub fn check_non_negative(name: &str, value: f64) -> KernelResult<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(KernelError(format!("{name} must be finite and >= 0, got {value}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_scans_agree_with_the_messages() {
        let mut x: Vec<f64> = (0..37).map(|i| i as f64 / 36.0).collect();
        assert!(all_finite(&x) && check_finite("x", &x).is_ok());
        assert!(check_inside("x", &x, "[lo, hi]", 0.0, 1.0).is_ok());
        x[20] = 1.5;
        let e = check_inside("x", &x, "[lo, hi]", 0.0, 1.0).unwrap_err();
        assert_eq!(e.0, "x must lie in [lo, hi] = [0, 1], x[20] = 1.5");
        x[33] = f64::INFINITY;
        assert!(!all_finite(&x));
        assert_eq!(check_finite("x", &x).unwrap_err().0, "x contains NaN or inf (first at index 33: inf)");
        x[2] = f64::NAN;
        assert!(check_finite("x", &x).unwrap_err().0.contains("index 2: NaN"));
    }
}

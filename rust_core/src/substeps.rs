//! What a time march (HJB backward, FP forward by finite volumes or particles) returns,
//! [`Marching`], and how an output interval is cut into sub-steps: the count k_j =
//! max(min_substeps[j], k_cfl_j) and the checked floors `min_substeps`.
//!
//! The maths: see mfg_ensemble/kernels/reference/substeps.py.

use std::fmt::Display;

use crate::error::{KernelError, KernelResult};

/// A time march's result: the values at the output times, row-major (nt, nx), the sub-steps
/// taken in each of the nt − 1 output intervals (0 for intervals not reached), and why the
/// solution blew up, if it did (then the rows not reached are NaN). The PyO3 layer raises
/// `mfg_ensemble.errors.Diverged` for the latter.
#[derive(Debug, Clone)]
pub struct Marching {
    pub values: Vec<f64>,
    pub substeps: Vec<usize>,
    pub diverged: Option<String>,
}

impl Marching {
    pub fn new(nt: usize, nx: usize) -> Marching {
        Marching { values: vec![f64::NAN; nt * nx], substeps: vec![0; nt.saturating_sub(1)], diverged: None }
    }

    pub fn row_mut(&mut self, j: usize, nx: usize) -> &mut [f64] {
        &mut self.values[j * nx..(j + 1) * nx]
    }
}

/// Most sub-steps one output interval may take before the march is declared diverged.
pub const MAX_SUBSTEPS_PER_INTERVAL: f64 = 1e6;
/// The same bound as an integer: the largest accepted `min_substeps` value.
pub const MAX_SUBSTEPS: usize = 1_000_000;

/// Sub-steps k and their length for an interval `dt_out` under the step limit `dt_max` and the
/// floor `min_k`: k = max(min_k, ⌈dt_out/dt_max⌉, 1) equal steps, which add up to the interval.
/// `None` when the limit asks for more than `MAX_SUBSTEPS_PER_INTERVAL` steps or is NaN (a
/// blown-up gradient).
pub fn substeps(dt_out: f64, dt_max: f64, min_k: usize) -> Option<(usize, f64)> {
    let ratio = dt_out / dt_max;
    if ratio.is_nan() || ratio > MAX_SUBSTEPS_PER_INTERVAL {
        return None;
    }
    let k = (ratio.ceil().max(1.0) as usize).max(min_k);
    Some((k, dt_out / k as f64))
}

fn out_of_range(i: usize, value: impl Display) -> KernelError {
    KernelError(format!("min_substeps must be integers in [1, {MAX_SUBSTEPS}], min_substeps[{i}] = {value}"))
}

/// The per-interval floors of a march over `intervals` output intervals: `min_substeps` checked
/// (one value per interval, each in [1, MAX_SUBSTEPS]), or all ones when it is `None`.
pub fn floors(min_substeps: Option<&[usize]>, intervals: usize) -> KernelResult<Vec<usize>> {
    let Some(values) = min_substeps else {
        return Ok(vec![1; intervals]);
    };
    if values.len() != intervals {
        return Err(KernelError(format!(
            "min_substeps must have nt - 1 = {intervals} values (one per output interval), got {}",
            values.len()
        )));
    }
    match values.iter().position(|&v| !(1..=MAX_SUBSTEPS).contains(&v)) {
        Some(i) => Err(out_of_range(i, values[i])),
        None => Ok(values.to_vec()),
    }
}

/// Signed floors (as they come from Python) as `usize`, refusing values below 1 or above
/// `MAX_SUBSTEPS` with the same message as `floors`.
pub fn floors_from_i64(values: &[i64]) -> KernelResult<Vec<usize>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| if (1..=MAX_SUBSTEPS as i64).contains(&v) { Ok(v as usize) } else { Err(out_of_range(i, v)) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_wins_when_it_is_larger() {
        assert_eq!(substeps(1.0, 0.3, 1), Some((4, 0.25)));
        assert_eq!(substeps(1.0, 0.3, 10), Some((10, 0.1)));
        assert_eq!(substeps(1.0, f64::INFINITY, 3).map(|s| s.0), Some(3));
        assert_eq!(substeps(1.0, f64::NAN, 3), None);
        assert_eq!(substeps(1.0, 1e-7, 1), None);
    }

    #[test]
    fn bad_floors_are_refused() {
        assert_eq!(floors(None, 3).unwrap(), vec![1, 1, 1]);
        assert_eq!(floors(Some(&[2, 5]), 2).unwrap(), vec![2, 5]);
        assert!(floors(Some(&[1, 1]), 3).unwrap_err().0.contains("min_substeps must have nt - 1 = 3"));
        assert!(floors(Some(&[1, 0]), 2).unwrap_err().0.contains("min_substeps[1] = 0"));
        assert!(floors(Some(&[MAX_SUBSTEPS + 1]), 1).is_err());
        assert!(floors_from_i64(&[3, -2]).unwrap_err().0.contains("min_substeps[1] = -2"));
        assert_eq!(floors_from_i64(&[3, 1]).unwrap(), vec![3, 1]);
    }
}

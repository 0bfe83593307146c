//! What a whole-horizon time sweep (HJB backward, FP forward) returns.

/// Values at the output times, row-major (nt, nx), the number of sub-steps taken, and
/// whether the solution blew up (then the rows not reached are NaN).
#[derive(Debug, Clone)]
pub struct Sweep {
    pub values: Vec<f64>,
    pub substeps: usize,
    pub diverged: Option<String>,
}

impl Sweep {
    pub fn new(nt: usize, nx: usize) -> Sweep {
        Sweep { values: vec![f64::NAN; nt * nx], substeps: 0, diverged: None }
    }

    pub fn row_mut(&mut self, j: usize, nx: usize) -> &mut [f64] {
        &mut self.values[j * nx..(j + 1) * nx]
    }
}

/// Most sub-steps one output interval may take before the sweep is declared diverged.
pub const MAX_SUBSTEPS_PER_INTERVAL: f64 = 1e6;

/// Sub-steps k and their length for an interval `dt_out` under the step limit `dt_max`:
/// k = ⌈dt_out/dt_max⌉ ≥ 1 equal steps, which add up to the interval. `None` when the limit
/// asks for more than `MAX_SUBSTEPS_PER_INTERVAL` steps (a blown-up gradient).
pub fn substeps(dt_out: f64, dt_max: f64) -> Option<(usize, f64)> {
    let ratio = dt_out / dt_max;
    if ratio.is_nan() || ratio > MAX_SUBSTEPS_PER_INTERVAL {
        return None;
    }
    let k = ratio.ceil().max(1.0);
    Some((k as usize, dt_out / k))
}

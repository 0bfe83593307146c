//! The one error type of the kernels: a message that names the offending argument.
//! The PyO3 layer turns it into a Python `ValueError`.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

pub type KernelResult<T> = Result<T, KernelError>;

/// `Err` unless every value of `values` is finite; names `name` and the first bad index.
pub fn check_finite(name: &str, values: &[f64]) -> KernelResult<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(KernelError(format!(
            "{name} contains NaN or inf (first at index {i}: {})",
            values[i]
        ))),
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

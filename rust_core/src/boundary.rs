//! Boundary conditions shared by the kernels.

use crate::error::{KernelError, KernelResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// The domain wraps around: node n is node 0, a particle leaving at hi enters at lo.
    Periodic,
    /// No-flux walls: mirror ghost nodes, particles and density mass reflected at the walls.
    Reflect,
    /// No boundary treatment (KDE on the whole line).
    Open,
}

impl Boundary {
    pub fn name(self) -> &'static str {
        match self {
            Boundary::Periodic => "periodic",
            Boundary::Reflect => "reflect",
            Boundary::Open => "none",
        }
    }

    /// Parse `text` as one of `allowed`; the error names the argument `bc` and the choices.
    pub fn parse(text: &str, allowed: &[Boundary]) -> KernelResult<Boundary> {
        allowed
            .iter()
            .copied()
            .find(|b| b.name() == text)
            .ok_or_else(|| {
                let names: Vec<String> = allowed.iter().map(|b| format!("'{}'", b.name())).collect();
                KernelError(format!("bc must be one of {}, got '{text}'", names.join(", ")))
            })
    }
}

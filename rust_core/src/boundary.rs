//! Boundary conditions shared by the kernels, and the one ghost-node filling of the grid
//! kernels (the WENO stencils of `weno` and the state with ghost nodes of `hjb`).
//!
//! Ghost nodes (the maths: see mfg_ensemble/kernels/reference/weno.py): "periodic" wraps (node
//! n is node 0); "reflect" mirrors about the end nodes, u_{−k} = u_k, u_{n−1+k} = u_{n−1−k}.

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
        allowed.iter().copied().find(|b| b.name() == text).ok_or_else(|| not_allowed(text, allowed))
    }

    /// `Err` unless `self` is one of `allowed` (for kernels that refuse some conditions).
    pub fn check(self, allowed: &[Boundary]) -> KernelResult<Boundary> {
        Boundary::parse(self.name(), allowed)
    }
}

fn not_allowed(text: &str, allowed: &[Boundary]) -> KernelError {
    let names: Vec<String> = allowed.iter().map(|b| format!("'{}'", b.name())).collect();
    KernelError(format!("bc must be one of {}, got '{text}'", names.join(", ")))
}

/// The conditions of the time marches and the particles (walls or a period, no open line).
pub const REFLECT_OR_PERIODIC: [Boundary; 2] = [Boundary::Reflect, Boundary::Periodic];

/// Ghost nodes on each side of a grid kernel's extended state (the WENO5 stencil's reach).
pub const GHOSTS: usize = 3;

/// Node k of `u` extended by ghost nodes (−n < k < 2n − 1) for `bc`: mirrored about the end
/// nodes for "reflect", wrapped otherwise.
#[inline]
pub fn ghost(u: &[f64], k: isize, bc: Boundary) -> f64 {
    let n = u.len() as isize;
    let j = if (0..n).contains(&k) {
        k
    } else if bc == Boundary::Reflect {
        if k < 0 {
            -k
        } else {
            2 * (n - 1) - k
        }
    } else {
        k.rem_euclid(n)
    };
    u[j as usize]
}

/// out[t] = node `first` + t of `u` extended by ghost nodes (`ghost`): the nodes inside the
/// grid copied, only the ghosts looked up. E.g. `first` = −GHOSTS and out.len() = n + 2·GHOSTS
/// gives u with its ghost nodes on both sides (node i at out[i + GHOSTS]).
pub fn fill_ghosted(u: &[f64], first: isize, bc: Boundary, out: &mut [f64]) {
    let (n, len) = (u.len() as isize, out.len() as isize);
    // out[inside] holds the grid's own nodes
    let begin = (-first).clamp(0, len);
    let end = (n - first).clamp(begin, len);
    let inside = begin as usize..end as usize;
    if begin < end {
        out[inside.clone()].copy_from_slice(&u[(first + begin) as usize..(first + end) as usize]);
    }
    for t in (0..inside.start).chain(inside.end..out.len()) {
        out[t] = ghost(u, first + t as isize, bc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghosts_mirror_or_wrap() {
        let u = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0];
        let mut ue = [0.0; 12];
        fill_ghosted(&u, -3, Boundary::Reflect, &mut ue);
        assert_eq!(ue, [13.0, 12.0, 11.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 14.0, 13.0, 12.0]);
        fill_ghosted(&u, -3, Boundary::Periodic, &mut ue);
        assert_eq!(ue, [13.0, 14.0, 15.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 10.0, 11.0, 12.0]);
        // a window of the extended grid, partly outside it
        let mut w = [0.0; 4];
        fill_ghosted(&u, 4, Boundary::Reflect, &mut w);
        assert_eq!(w, [14.0, 15.0, 14.0, 13.0]);
        for first in -3..4 {
            let mut w = [0.0; 5];
            fill_ghosted(&u, first, Boundary::Periodic, &mut w);
            assert!((0..5).all(|t| w[t] == ghost(&u, first + t as isize, Boundary::Periodic)));
        }
    }

    #[test]
    fn parse_names_the_allowed_choices() {
        let allowed = [Boundary::Periodic, Boundary::Reflect];
        assert_eq!(Boundary::parse("reflect", &allowed), Ok(Boundary::Reflect));
        let e = Boundary::parse("open", &allowed).unwrap_err();
        assert_eq!(e.0, "bc must be one of 'periodic', 'reflect', got 'open'");
        assert_eq!(
            Boundary::Open.check(&allowed).unwrap_err().0,
            "bc must be one of 'periodic', 'reflect', got 'none'"
        );
    }
}

//! Node kinds of a 2-D grid (the twin of `mfg_ensemble/kernels/reference/grid2d.py`).
//!
//! A field is row-major (ny, nx), index `j * nx + i`. `FREE` nodes are the room, `OBSTACLE`
//! nodes block their cell (walls on the faces to their neighbours, m = u = 0 there), `EXIT`
//! nodes are absorbing boundary nodes of a "reflect" side (m = u = 0, inflow counted as exited).

pub const FREE: u8 = 0;
pub const OBSTACLE: u8 = 1;
pub const EXIT: u8 = 2;

use crate::boundary::Boundary;
use crate::error::{KernelError, KernelResult};

/// `Err` naming `nodes` unless it holds ny·nx kinds FREE/OBSTACLE/EXIT, exits only on boundary
/// nodes of a "reflect" side, at least one FREE node (the rule of grid2d.check_nodes).
pub fn check_nodes(nodes: &[u8], ny: usize, nx: usize, bc_x: Boundary, bc_y: Boundary) -> KernelResult<()> {
    if nodes.len() != ny * nx {
        return Err(KernelError(format!("nodes must have shape (ny, nx) = ({ny}, {nx}), got {} values", nodes.len())));
    }
    if nodes.iter().any(|&k| k > EXIT) {
        return Err(KernelError(format!(
            "nodes must hold only {FREE} (free), {OBSTACLE} (obstacle) and {EXIT} (exit)"
        )));
    }
    for (q, &k) in nodes.iter().enumerate() {
        let (j, i) = (q / nx, q % nx);
        let on_x = bc_x == Boundary::Reflect && (i == 0 || i == nx - 1);
        let on_y = bc_y == Boundary::Reflect && (j == 0 || j == ny - 1);
        if k == EXIT && !(on_x || on_y) {
            return Err(KernelError(format!("nodes[{j}, {i}] is an exit but not a boundary node of a 'reflect' side")));
        }
    }
    if !nodes.contains(&FREE) {
        return Err(KernelError("nodes must have at least one free node".into()));
    }
    Ok(())
}

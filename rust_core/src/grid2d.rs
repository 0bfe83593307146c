//! Node kinds of a 2-D grid (the twin of `mfg_ensemble/kernels/reference/grid2d.py`).
//!
//! A field is row-major (ny, nx), index `j * nx + i`. `FREE` nodes are the room, `OBSTACLE`
//! nodes block their cell (walls on the faces to their neighbours, m = u = 0 there), `EXIT`
//! nodes are absorbing boundary nodes of a "reflect" side (m = u = 0, inflow counted as exited).

pub const FREE: u8 = 0;
pub const OBSTACLE: u8 = 1;
pub const EXIT: u8 = 2;

"""Node kinds of a 2-D grid: the NumPy twin of ``rust_core/src/grid2d.rs``.

A 2-D field is an array of shape (ny, nx), index [j, i] (j along y, i along x). ``nodes``
(uint8, shape (ny, nx)) says what each node is:

* ``FREE``: a node of the room;
* ``OBSTACLE``: the node's cell [x_i ± dx/2] × [y_j ± dy/2] is blocked; its walls are the
  faces between it and its non-obstacle neighbours (half-way between nodes); m = u = 0 there;
* ``EXIT``: a boundary node of a "reflect" side where players leave (absorbing): m = 0 and
  u = 0 there at all times, and what flows into its cell is counted as exited.
"""

from __future__ import annotations

import numpy as np

FREE, OBSTACLE, EXIT = 0, 1, 2
KINDS = (FREE, OBSTACLE, EXIT)


def check_nodes(nodes: np.ndarray, ny: int, nx: int, bc: tuple[str, str]) -> np.ndarray:
    """``nodes`` as a C-contiguous uint8 array, or ``ValueError`` naming ``nodes``: shape (ny, nx),
    values FREE/OBSTACLE/EXIT, exits only on boundary nodes of a "reflect" side, one FREE node at least."""
    arr = np.asarray(nodes)
    if arr.shape != (ny, nx):
        raise ValueError(f"nodes must have shape (ny, nx) = {(ny, nx)}, got {arr.shape}")
    if arr.dtype.kind not in "biu" or not np.isin(arr, KINDS).all():
        raise ValueError(f"nodes must hold only {FREE} (free), {OBSTACLE} (obstacle) and {EXIT} (exit)")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    boundary = np.zeros((ny, nx), dtype=bool)
    if bc[0] == "reflect":
        boundary[:, [0, -1]] = True
    if bc[1] == "reflect":
        boundary[[0, -1], :] = True
    bad = (arr == EXIT) & ~boundary
    if bad.any():
        j, i = map(int, np.argwhere(bad)[0])
        raise ValueError(f"nodes[{j}, {i}] is an exit but not a boundary node of a 'reflect' side")
    if not (arr == FREE).any():
        raise ValueError("nodes must have at least one free node")
    return arr

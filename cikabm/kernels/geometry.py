"""Lattice geometry: padded flat layout and neighbour-offset tables.

2D and 3D lattices share one code path. A lattice of interior shape
``(nz, ny, nx)`` (``nz = 1`` in 2D) is stored flat with a one-site wall border
in every simulated dimension, so kernels never test for the boundary: a
neighbour index is always valid and a wall site is never empty.

This module is plain NumPy (no Numba) and has no side effects on import.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Geometry(NamedTuple):
    """Padded flat lattice layout, passed to every kernel.

    Attributes
    ----------
    dims : int
        2 or 3.
    nz, ny, nx : int
        Interior shape (``nz == 1`` in 2D).
    pz, py, px : int
        Padded shape (``pz == 1`` in 2D, else ``nz + 2``).
    z0 : int
        First interior z index in the padded array (0 in 2D, 1 in 3D).
    offsets : ndarray of int64
        Flat offsets of the contact neighbourhood; entry 0 is the site itself
        (offset 0), entries ``1..n_neighbours`` are the neighbours.
    n_neighbours : int
        Number of neighbours (8 or 4 in 2D, 26 or 6 in 3D).
    coarsening : int
        Edge of a field cell in lattice sites.
    cz, cy, cx : int
        Shape of the coarse field grid.
    """

    dims: int
    nz: int
    ny: int
    nx: int
    pz: int
    py: int
    px: int
    z0: int
    offsets: np.ndarray
    n_neighbours: int
    coarsening: int
    cz: int
    cy: int
    cx: int


def make_geometry(shape: tuple[int, ...], neighbourhood: str, coarsening: int) -> Geometry:
    """Build the padded layout for an interior ``shape`` of 2 or 3 ints.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` or ``(nz, ny, nx)`` interior sites.
    neighbourhood : {"moore", "von_neumann"}
        Contact neighbourhood: Moore (8 / 26 neighbours) or von Neumann (4 / 6).
    coarsening : int
        Field grid cell edge in sites (the IFN-gamma field is coarse).
    """
    dims = len(shape)
    if dims == 2:
        nz, ny, nx = 1, int(shape[0]), int(shape[1])
        pz, z0 = 1, 0
    elif dims == 3:
        nz, ny, nx = (int(s) for s in shape)
        pz, z0 = nz + 2, 1
    else:
        raise ValueError(f"lattice shape must have 2 or 3 entries, got {shape!r}")
    py, px = ny + 2, nx + 2
    stride_z, stride_y = py * px, px
    offsets = [0]
    rng_z = (-1, 0, 1) if dims == 3 else (0,)
    for dz in rng_z:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dz == dy == dx == 0:
                    continue
                manhattan = abs(dz) + abs(dy) + abs(dx)
                if neighbourhood == "von_neumann" and manhattan != 1:
                    continue
                offsets.append(dz * stride_z + dy * stride_y + dx)
    if neighbourhood not in ("moore", "von_neumann"):
        raise ValueError(f"unknown neighbourhood {neighbourhood!r}")
    c = int(coarsening)
    cz = 1 if dims == 2 else -(-nz // c)
    return Geometry(
        dims=dims,
        nz=nz,
        ny=ny,
        nx=nx,
        pz=pz,
        py=py,
        px=px,
        z0=z0,
        offsets=np.asarray(offsets, dtype=np.int64),
        n_neighbours=len(offsets) - 1,
        coarsening=c,
        cz=cz,
        cy=-(-ny // c),
        cx=-(-nx // c),
    )


def n_sites(geom: Geometry) -> int:
    """Number of interior (simulated) sites."""
    return geom.nz * geom.ny * geom.nx


def interior_view(padded_flat: np.ndarray, geom: Geometry) -> np.ndarray:
    """Interior of a flat padded array as ``(ny, nx)`` or ``(nz, ny, nx)``."""
    arr = padded_flat.reshape(geom.pz, geom.py, geom.px)
    if geom.dims == 2:
        return arr[0, 1:-1, 1:-1]
    return arr[1:-1, 1:-1, 1:-1]


def flat_index(geom: Geometry, coords: np.ndarray) -> np.ndarray:
    """Padded flat index of interior coordinates (rows of ``(y, x)`` or ``(z, y, x)``)."""
    coords = np.atleast_2d(np.asarray(coords, dtype=np.int64))
    if geom.dims == 2:
        z = np.zeros(len(coords), dtype=np.int64)
        y, x = coords[:, 0], coords[:, 1]
    else:
        z, y, x = coords[:, 0] + 1, coords[:, 1], coords[:, 2]
    return (z * geom.py + (y + 1)) * geom.px + (x + 1)

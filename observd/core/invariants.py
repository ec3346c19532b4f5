"""astroalign's asterism invariants of a star list, computed with whole-array numpy.

`astroalign.find_transform` describes each star list by the triangles of every star and its
4 nearest neighbours (`NUM_NEAREST_NEIGHBORS` = 5 points, 10 triangles each): each triangle's
vertices ordered by its sides, and its two side ratios. Its `_generate_invariants` builds these
triangle by triangle in Python and removes duplicates with a quadratic list search: ~26 ms for
a list of 50 control points, so ~50 ms of the ~90 ms a light's match cost (the frame's list and
the reference's). `generate_invariants` returns the same arrays (same triangles, same order,
same ratios to the bit); tests/test_invariants.py checks it against astroalign's.
`install_fast_invariants()` puts it in astroalign's place, once per process, where the process
starts (the CLI, the worker pool's initialiser): an explicit step, not an import side effect.
"""

from __future__ import annotations

import functools
import inspect
from itertools import combinations

import astroalign
import numpy as np

__all__ = ["LIBRARY_INVARIANTS", "generate_invariants", "install_fast_invariants"]

LIBRARY_INVARIANTS = (
    inspect.unwrap(astroalign._generate_invariants) if hasattr(astroalign, "_generate_invariants") else None
)
"""astroalign's own asterism invariants, which `install_fast_invariants` replaces. A private function
of astroalign 2.x: were a release to drop it, `find_transform` would simply keep its own cost."""


@functools.cache
def _triplets(k: int) -> np.ndarray:
    """The (i, j, l) index triplets of `itertools.combinations(range(k), 3)`, in its order."""
    return np.array(list(combinations(range(k), 3)), dtype=np.intp).reshape(-1, 3)


def generate_invariants(sources: np.ndarray, neighbours: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(invariants, vertices) as astroalign's `_generate_invariants(sources)` returns them.

    invariants: (n, 2) side ratios L3/L2, L2/L1 (L1 < L2 < L3) of each unique triangle;
    vertices: (n, 3) indices into `sources` of the vertex opposite L3, opposite L1 and opposite
    L2 (astroalign's (a, b, c): a joins L1 and L2, b joins L2 and L3, c joins L3 and L1).
    A triangle met from several of its stars is kept once, at its last occurrence, as astroalign
    keeps it. `neighbours`: astroalign's NUM_NEAREST_NEIGHBORS.
    """
    from scipy.spatial import KDTree  # not at import time: see observd.jobs.pool._PRELOAD

    sources = np.asarray(sources, dtype=np.float64)
    knn = min(len(sources), neighbours)
    _, nearest = KDTree(sources).query(sources, knn)
    nearest = np.asarray(nearest, dtype=np.intp).reshape(len(sources), knn)
    # every star's triangles, star by star, in combinations' order: (n_stars * C(knn, 3), 3)
    vertices = nearest[:, _triplets(knn)].reshape(-1, 3)
    points = sources[vertices]  # (m, 3, 2)
    # side k joins vertex k and vertex k+1; it is opposite vertex k+2. Lengths as astroalign
    # takes them (np.linalg.norm), which both its vertex order and its ratios come from
    sides = _norm((points - np.roll(points, -1, axis=1)).reshape(-1, 2)).reshape(-1, 3)
    order = np.argsort(sides, axis=1, kind="stable")  # L1, L2, L3 as side numbers
    arranged = np.take_along_axis(vertices, (order[:, [2, 0, 1]] + 2) % 3, axis=1)
    lengths = np.take_along_axis(sides, order, axis=1)
    invariants = np.stack([lengths[:, 2] / lengths[:, 1], lengths[:, 1] / lengths[:, 0]], axis=1)
    # a triangle met again later is dropped here: keep each distinct invariant's last occurrence
    _, last_from_end = np.unique(invariants[::-1], axis=0, return_index=True)
    keep = np.sort(len(invariants) - 1 - last_from_end)
    return invariants[keep], arranged[keep]


def _norm(d: np.ndarray) -> np.ndarray:
    """Row lengths of (m, 2) differences as `np.linalg.norm` gives each, sqrt(x.dot(x)): a
    batched matmul takes the same dot kernel (an elementwise x² + y² differs in the last bit
    for ~8 % of rows)."""
    return np.sqrt((d[:, None, :] @ d[:, :, None]).ravel())


@functools.wraps(LIBRARY_INVARIANTS or generate_invariants)
def _fast_invariants(sources):
    return generate_invariants(sources, astroalign.NUM_NEAREST_NEIGHBORS)


def install_fast_invariants() -> None:
    """Make astroalign use `generate_invariants` in this process (idempotent; a no-op when the
    installed astroalign has no such private function to replace)."""
    if LIBRARY_INVARIANTS is not None and hasattr(astroalign, "NUM_NEAREST_NEIGHBORS"):
        astroalign._generate_invariants = _fast_invariants

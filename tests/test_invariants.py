"""invariants: astroalign's asterism invariants, vectorised, against astroalign's own function."""

from __future__ import annotations

import astroalign
import numpy as np
import pytest
from starfield import apply_matrix, similarity

from observd.core import invariants
from observd.core.invariants import LIBRARY_INVARIANTS, generate_invariants, install_fast_invariants


def _assert_same(got, want):
    (inv, vertices), (inv_ref, vertices_ref) = got, want
    np.testing.assert_array_equal(vertices, vertices_ref)  # same triangles, same order
    np.testing.assert_allclose(inv, inv_ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 12, 50, 200])
def test_random_star_lists_give_astroalign_s_arrays(n):
    sources = np.random.default_rng(n).uniform(0, 2048, (n, 2))
    _assert_same(generate_invariants(sources), LIBRARY_INVARIANTS(sources))


def test_a_lattice_whose_triangles_share_shapes_is_deduplicated_like_astroalign():
    """On a grid many different triangles have exactly the same side ratios: astroalign keeps
    one triangle per distinct invariant (its last occurrence), and so must the fast path."""
    x, y = np.meshgrid(np.arange(7) * 10.0, np.arange(6) * 10.0)
    sources = np.column_stack([x.ravel(), y.ravel()])
    got = generate_invariants(sources)
    assert len(got[0]) < 10 * len(sources) / 3  # shapes repeat: most triangles dropped
    _assert_same(got, LIBRARY_INVARIANTS(sources))


def test_the_fast_path_is_installed_and_find_transform_is_unchanged(monkeypatch):
    monkeypatch.setattr(astroalign, "_generate_invariants", LIBRARY_INVARIANTS)
    install_fast_invariants()
    assert astroalign._generate_invariants is invariants._fast_invariants
    rng = np.random.default_rng(9)
    ref = rng.uniform(0, 1000, (60, 2))
    matrix = similarity(181.0, 1.002, (12.5, -7.25), (500, 500))  # a meridian flip
    frame = np.column_stack(apply_matrix(np.linalg.inv(matrix), ref[:, 0], ref[:, 1]))
    frame += rng.normal(0, 0.05, frame.shape)
    fast, _ = astroalign.find_transform(frame, ref)
    monkeypatch.setattr(astroalign, "_generate_invariants", LIBRARY_INVARIANTS)
    library, _ = astroalign.find_transform(frame, ref)
    np.testing.assert_allclose(fast.params, library.params, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.params, matrix, atol=0.02)

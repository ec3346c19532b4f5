"""Reference choice (core.references): which light a target is aligned to."""

from __future__ import annotations

from observd.core.references import choose_reference, quality_rank


def _row(i: int, n_stars: int | None, fwhm: float | None, elongation: float | None = 1.1, state="calibrated"):
    return {
        "id": i,
        "name": f"f{i}.fits",
        "path": f"/n/f{i}.fits",
        "state": state,
        "n_stars": n_stars,
        "fwhm": fwhm,
        "elongation": elongation,
        "night": "n",
        "object": "M42",
    }


def test_a_frame_whose_fwhm_could_not_be_measured_ranks_below_every_measured_one():
    """A trailed frame can show the most detections but no measurable FWHM: it must not become the
    reference (it ranked best when an unknown FWHM counted as no FWHM at all)."""
    rows = [_row(1, 120, 3.1), _row(2, 180, None, elongation=1.5), _row(3, 118, 2.9)]
    assert choose_reference(rows, final=True)["id"] == 1
    assert sorted(rows, key=quality_rank)[0]["id"] == 2


def test_most_stars_then_sharpest_then_roundest():
    rows = [_row(1, 100, 3.0), _row(2, 100, 2.8, elongation=1.3), _row(3, 100, 2.8, elongation=1.1)]
    assert choose_reference(rows, final=True)["id"] == 3
    rows.append(_row(4, 101, 3.5))
    assert choose_reference(rows, final=True)["id"] == 4


def test_the_choice_does_not_depend_on_the_order_of_the_rows():
    rows = [_row(i, 100, 3.0, elongation=1.2) for i in range(5)]  # all equal: the path decides
    assert len({choose_reference(order, final=True)["id"] for order in (rows, rows[::-1], rows[2:] + rows[:2])}) == 1


def test_the_daemon_waits_for_enough_good_frames_unless_the_night_is_over():
    rows = [_row(1, 100, 3.0), _row(2, 90, 3.0, state="bad")]
    assert choose_reference(rows, final=False, min_frames=2) is None
    assert choose_reference(rows, final=True, min_frames=2)["id"] == 1


def test_a_fixed_reference_is_taken_once_measured():
    rows = [_row(1, 100, 3.0), _row(2, 50, 4.0)]
    assert choose_reference(rows, final=False, fixed="f2.fits")["id"] == 2
    assert choose_reference(rows, final=True, fixed="f9.fits") is None

"""The catalog's tables, and the migrations that create and upgrade them.

Each migration is idempotent and runs in a transaction (`Catalog._migrate`); the catalog's
`meta` table holds the number of the last one applied. A new column or table is a new
migration at the end of `MIGRATIONS`, never an edit of an old one: catalogs made by earlier
versions of observd are upgraded in place.
"""

from __future__ import annotations

import sqlite_utils

FILE_COLUMNS = {
    "id": int,
    "path": str,
    "name": str,
    "version": int,
    "current": int,
    "size": int,
    "mtime_ns": int,
    "sha256": str,
    "state": str,
    "reason": str,
    "first_seen": str,
    "updated": str,
    "attempts": int,
    "next_attempt": float,
    "traceback": str,
    # FrameInfo
    "frame_type": str,
    "type_source": str,
    "exptime": float,
    "ccd_temp": float,
    "set_temp": float,
    "filter": str,
    "xbin": int,
    "ybin": int,
    "naxis1": int,
    "naxis2": int,
    "gain_setting": float,
    "offset": float,
    "readout_mode": str,
    "egain": float,
    "rdnoise": float,
    "saturation": float,
    "instrument": str,
    "telescope": str,
    "object": str,
    "date_obs": str,
    "night": str,
    "biassec": str,
    "trimsec": str,
    "hdu_index": int,
    # calibration-frame grouping
    "group_key": str,
    # lights: calibration, measurement, alignment
    "bias_id": int,
    "dark_id": int,
    "flat_id": int,
    "dark_scale": float,
    "calibrated_path": str,
    "background": float,
    "noise": float,
    "n_stars": int,
    "fwhm": float,
    "elongation": float,
    "n_saturated": int,
    "stars": str,
    "reference_id": int,
    "transform": str,
    "align_rms": float,
    "n_matches": int,
    "aligned_path": str,
    "calibration_note": str,
}

MASTER_COLUMNS = {
    "id": int,
    "type": str,
    "group_key": str,
    "version": int,
    "current": int,
    "path": str,
    "night": str,
    "created": str,
    "n_frames": int,
    "ccd_temp_mean": float,
    "ccd_temp_min": float,
    "ccd_temp_max": float,
    "exptime": float,
    "filter": str,
    "instrument": str,
    "xbin": int,
    "ybin": int,
    "naxis1": int,
    "naxis2": int,
    "gain_setting": float,
    "offset": float,
    "readout_mode": str,
    "includes_bias": int,
    "date_obs": str,
    "median": float,
    "n_bad_pixels": int,
    "flag": str,
}

PRODUCT_COLUMNS = {
    "id": int,
    "night": str,
    "object": str,
    "filter": str,
    "path": str,
    "preview_path": str,
    "thumbnail_path": str,
    "n_combined": int,
    "total_exptime": float,
    "reference": str,
    "noise": float,
    "created": str,
    "current": int,
}


def _migration_1(db: sqlite_utils.Database) -> None:
    db["files"].create(FILE_COLUMNS, pk="id", defaults={"current": 1, "attempts": 0, "version": 1})
    db["files"].create_index(["path", "version"], unique=True)
    db["files"].create_index(["sha256"])
    db["files"].create_index(["night", "frame_type", "state"])
    db["files"].create_index(["current", "path"])
    db["masters"].create(MASTER_COLUMNS, pk="id")
    db["masters"].create_index(["group_key", "version"], unique=True)
    db["master_inputs"].create({"master_id": int, "file_id": int}, pk=("master_id", "file_id"))
    db["products"].create(PRODUCT_COLUMNS, pk="id")
    db["product_inputs"].create({"product_id": int, "file_id": int}, pk=("product_id", "file_id"))
    db["stack_runs"].create({"night": str, "ran_at": str, "n_products": int}, pk="night")
    db["events"].create({"id": int, "time": str, "level": str, "event": str, "path": str, "message": str}, pk="id")


def _migration_2(db: sqlite_utils.Database) -> None:
    """masters.subtracted: the ids of the bias and dark a master subtracted, as JSON
    ('{"bias": 3, "dark": null}'); NULL for masters built before it was recorded."""
    if "subtracted" not in db["masters"].columns_dict:
        db["masters"].add_column("subtracted", str)


def _migration_3(db: sqlite_utils.Database) -> None:
    """Colour: files.bayer (the stored Bayer pattern of a one-shot-colour frame, NULL for mono),
    files.bayer_note (why a named pattern was not used), files.channel_stats (a colour light's sky
    level and RMS per channel, JSON), masters.bayer (the pattern of the frames a master was built
    from), products.channels ('R,G,B' for a colour cube, NULL for one plane)."""
    for table, column in (
        ("files", "bayer"),
        ("files", "bayer_note"),
        ("files", "channel_stats"),
        ("masters", "bayer"),
        ("products", "channels"),
    ):
        if column not in db[table].columns_dict:
            db[table].add_column(column, str)


def _migration_4(db: sqlite_utils.Database) -> None:
    """morning_reports: the ledger of morning reports, one row per night and notification target
    (`observd.adapters.report_ledger`); an index on events.path, for one file's history."""
    if not db["morning_reports"].exists():
        db["morning_reports"].create(
            {
                "night": str,
                "target": str,
                "state": str,
                "attempts": int,
                "next_attempt": float,
                "last_error": str,
                "created": str,
                "sent": str,
            },
            pk=("night", "target"),
            defaults={"attempts": 0, "next_attempt": 0.0},
        )
    db["events"].create_index(["path"], if_not_exists=True)


PLATE_SOLUTION_COLUMNS = {
    "solve_state": str,  # 'solved' | 'skipped' | 'failed'; NULL: not attempted ([astrometry] enabled = false)
    "solve_reason": str,  # why it was skipped or failed
    "solve_ra": float,  # field centre, degrees (ICRS/J2000)
    "solve_dec": float,
    "solve_scale": float,  # "/px
    "solve_rotation": float,  # degrees E of N of the image's +y axis
    "solve_residual": float,  # RMS of the matched stars, arcsec
    "solve_seconds": float,  # wall time of solve-field
}


def _migration_5(db: sqlite_utils.Database) -> None:
    """Plate solving: products.solve_* (the stack's astrometric solution, or why there is none)."""
    for column, kind in PLATE_SOLUTION_COLUMNS.items():
        if column not in db["products"].columns_dict:
            db["products"].add_column(column, kind)


DEEP_FRAME_COLUMNS = {
    "file_id": int,  # the light (files.id)
    "object": str,
    "reference_id": int,  # the target's deep reference (files.id)
    "matrix": str,  # JSON 3x3: the light's pixels -> the deep reference's (frame -> night reference -> deep)
    "source": str,  # JSON: what the resampled frame was made from; another source means align again
    "path": str,  # the resampled frame under <output>/deep/<object>/aligned/
    "aligned": str,  # when it was written (ISO-8601 UTC)
}


def _migration_6(db: sqlite_utils.Database) -> None:
    """Deep stacks (every night of a target): products.nights (the nights of a deep product,
    comma-separated; NULL for a nightly one, whose night is in products.night), and deep_frames, the
    lights resampled onto their target's deep reference with the transform used, so that a new night
    aligns only its own frames (`observd.pipeline.deep_stacks`)."""
    if "nights" not in db["products"].columns_dict:
        db["products"].add_column("nights", str)
    if not db["deep_frames"].exists():
        db["deep_frames"].create(DEEP_FRAME_COLUMNS, pk="file_id")
        db["deep_frames"].create_index(["object"])


LIGHT_CURVE_COLUMNS = {
    "id": int,
    "night": str,
    "target": str,  # the [photometry.targets] name ('OBJECT': the pointing target)
    "object": str,  # the lights' OBJECT (which stack's frames were measured)
    "filter": str,
    "state": str,  # 'written' | 'skipped' | 'failed'
    "reason": str,  # why skipped or failed
    "path": str,  # the ECSV light curve
    "plot_path": str,  # its PNG
    "ra": float,  # the target's position, degrees
    "dec": float,
    "n_frames": int,
    "n_good": int,  # frames not flagged bad
    "n_comparisons": int,
    "scatter": float,  # point-to-point scatter of the relative flux over the good frames
    "expected": float,  # median expected error of the relative flux (photon + sky + read noise)
    "created": str,
    "current": int,
}


def _migration_7(db: sqlite_utils.Database) -> None:
    """Light curves: one row per night, target and stack (object, filter) — written, or why not."""
    if not db["light_curves"].exists():
        db["light_curves"].create(LIGHT_CURVE_COLUMNS, pk="id", defaults={"current": 1})
        db["light_curves"].create_index(["night", "current"])


MIGRATIONS = [_migration_1, _migration_2, _migration_3, _migration_4, _migration_5, _migration_6, _migration_7]

"""Column schema of the results store: the contract between the measuring stages and the store.

Every table is columnar: one HDF5 dataset per column, all of the same length. Strings are
fixed-length ASCII bytes (``S<n>``) so that they can be appended in SWMR mode; readers decode them.
Units are given in each column's ``unit`` attribute in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Column", "TABLES", "SCHEMA_VERSION", "CONFIG_PART_BYTES", "empty_table", "as_table", "exposure_name"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    unit: str
    description: str


def _cols(*rows: tuple[str, str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*r) for r in rows)


#: One row per dark frame that was measured.
EXPOSURES = _cols(
    ("rootname", "S16", "", "HST rootname (IPPPSSOOT); <rootname>_<k> for imset k of a STIS CR-SPLIT file"),
    ("month", "S7", "", "month window YYYY-MM"),
    ("group_id", "i4", "", "CR-SPLIT group within the month (-1: none)"),
    ("method", "S12", "", "how CRs were found: crsplit, ir_ramp, threshold; "
                          "given (hstcosmicrays measure: the file's own flags)"),
    ("date_obs", "S23", "", "DATE-OBS and TIME-OBS as ISO UTC"),
    ("mjd", "f8", "d", "MJD (UTC) of the exposure start (EXPSTART)"),
    ("expstart", "f8", "d", "EXPSTART (MJD)"),
    ("expend", "f8", "d", "EXPEND (MJD)"),
    ("exptime", "f4", "s", "EXPTIME"),
    ("flashdur", "f4", "s", "FLASHDUR (0 when absent)"),
    ("integration_time", "f4", "s", "EXPTIME + FLASHDUR + readout time (IR: ramp time)"),
    ("n_cr", "i4", "", "number of CRs (8-connected groups of 3 or more flagged pixels)"),
    ("rate", "f4", "CR / (s cm2)",
     "rate of CRs of 3 or more pixels hitting the detector: n_cr / integration_time / detector_area"),
    ("rate_err", "f4", "CR / (s cm2)", "Poisson error sqrt(n_cr) / integration_time / detector_area"),
    ("fraction_hit", "f4", "", "fraction of science pixels inside a counted CR"),
    ("ccdamp", "S4", "", "CCDAMP"),
    ("gain", "f4", "electron / DN", "mean gain of the amplifiers used"),
    ("ra", "f8", "deg", "RA of the reference pixel of the first chip"),
    ("dec", "f8", "deg", "Dec of the reference pixel of the first chip"),
    ("orientat", "f4", "deg", "ORIENTAT of the first chip"),
    ("saa_exit", "f8", "d", "SAA_EXIT (MJD of the last SAA exit; NaN when absent)"),
    ("saa_time", "f4", "s", "SAA_TIME (time since the last SAA exit; NaN when absent)"),
    ("hst_lat", "f4", "deg", "mean geocentric latitude of HST over the exposure"),
    ("hst_lon", "f4", "deg", "circular mean east longitude of HST over the exposure (-180, 180]"),
    ("hst_alt", "f4", "km", "mean altitude of HST over the exposure"),
)

#: One row per cosmic ray.
COSMIC_RAYS = _cols(
    ("exposure_index", "i8", "", "row of the exposure in /exposures"),
    ("chip", "i1", "", "chip the CR is on: EXTVER of its imset in a file of one exposure (STIS, a subarray: 1)"),
    ("read", "i2", "", "IR read in which the CR arrived (time order, 1 = first after the zeroth read); -1 for CCDs"),
    ("x", "f4", "pix", "energy-weighted centroid column, 0-based, of the science array (a subarray's own; "
                       "on its chip x - LTV1)"),
    ("y", "f4", "pix", "energy-weighted centroid row, 0-based, of the science array (a subarray's own; "
                       "on its chip y - LTV2)"),
    ("n_pixels", "i4", "pix", "size in pixels"),
    ("size_sigma", "f4", "pix", "sqrt((Ixx + Iyy) / 2)"),
    ("shape", "f4", "", "sqrt(((Ixx - Iyy)^2 + 4 Ixy^2) / (Ixx + Iyy)^2); 0 round, 1 a line"),
    ("energy", "f4", "electron", "energy deposited: sum of the pixel values, negatives set to 0"),
    ("ixx", "f4", "pix2", "second moment in x"),
    ("iyy", "f4", "pix2", "second moment in y"),
    ("ixy", "f4", "pix2", "mixed second moment"),
)

#: HST position samples over each exposure.
ORBIT = _cols(
    ("exposure_index", "i8", "", "row of the exposure in /exposures"),
    ("mjd", "f8", "d", "MJD (UTC) of the sample"),
    ("lat", "f4", "deg", "geocentric latitude of HST"),
    ("lon", "f4", "deg", "east longitude of HST, (-180, 180]"),
    ("alt", "f4", "km", "altitude above the equatorial Earth radius"),
)

#: Frames that could not be used, and why.
FAILURES = _cols(
    ("month", "S7", "", "month window YYYY-MM"),
    ("rootname", "S16", "", "rootname of the frame (empty for a whole-month problem)"),
    ("stage", "S16", "", "stage that rejected it: fetch, select, read, reject, measure, ..."),
    ("reason", "S240", "", "what went wrong"),
)

#: The month ledger: append-only; the latest row of a month is its state.
MONTHS = _cols(
    ("month", "S7", "", "month window YYYY-MM"),
    ("state", "S10", "", "committed or failed"),
    ("n_found", "i4", "", "frames found: the archive's datasets, each imset of a STIS CR-SPLIT file counted"),
    ("n_processed", "i4", "", "frames measured"),
    ("n_failed", "i4", "", "frames recorded in /failures"),
    ("n_cr", "i8", "", "CRs stored"),
    ("median_rate", "f4", "CR / (s cm2)", "median rate of the month's frames"),
    ("exposures_start", "i8", "", "first row of the month in /exposures"),
    ("exposures_stop", "i8", "", "one past the last row"),
    ("cosmic_rays_start", "i8", "", ""),
    ("cosmic_rays_stop", "i8", "", ""),
    ("orbit_start", "i8", "", ""),
    ("orbit_stop", "i8", "", ""),
    ("failures_start", "i8", "", ""),
    ("failures_stop", "i8", "", ""),
    ("started", "f8", "s", "unix time the month's processing started"),
    ("finished", "f8", "s", "unix time of the commit"),
    ("software_version", "S16", "", "hstcosmicrays version"),
    ("config_hash", "S16", "", "digest of the configuration used"),
    ("error", "S240", "", "why the month failed (empty when committed)"),
)

#: Bytes of configuration text per row of /configurations.
CONFIG_PART_BYTES = 4000

#: The configurations named by the ledger's ``config_hash``: the text of each, in pieces of
#: :data:`CONFIG_PART_BYTES`, written once, before the first ledger row that names it.
CONFIGURATIONS = _cols(
    ("config_hash", "S16", "", "digest: the first 16 hex digits of the SHA-256 of the text"),
    ("part", "i4", "", "index of the piece (0, 1, ...); the pieces in order make the text"),
    ("text", f"S{CONFIG_PART_BYTES}", "", "a piece of the configuration as JSON (sorted keys, UTF-8)"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "exposures": EXPOSURES,
    "cosmic_rays": COSMIC_RAYS,
    "orbit": ORBIT,
    "failures": FAILURES,
    "months": MONTHS,
    "configurations": CONFIGURATIONS,
}

#: Tables whose rows belong to a month and are made visible by its ledger row.
DATA_TABLES = ("exposures", "cosmic_rays", "orbit", "failures")


def exposure_name(rootname: str, imset: int = 0) -> str:
    """The ``rootname`` of an exposure in the store (and ``FrameHeader.rootname``): the rootname
    for a file of one exposure (``imset`` 0), ``<rootname>_<imset>`` for an imset of a file of
    several (a STIS CR-SPLIT FLT)."""
    return f"{rootname}_{imset}" if imset else rootname


def empty_table(name: str, n: int = 0) -> dict[str, np.ndarray]:
    """Zero-filled columns of table ``name`` with ``n`` rows."""
    return {c.name: np.zeros(n, dtype=c.dtype) for c in TABLES[name]}


def as_table(name: str, columns: dict) -> dict[str, np.ndarray]:
    """Check and cast a mapping of columns to table ``name``'s dtypes.

    Raises
    ------
    ValueError
        A column is missing or unknown, or the columns differ in length.
    """
    spec = TABLES[name]
    names = {c.name for c in spec}
    missing = names - set(columns)
    extra = set(columns) - names
    if missing or extra:
        raise ValueError(f"table {name}: missing columns {sorted(missing)}, unknown columns {sorted(extra)}")
    out = {}
    for c in spec:
        v = np.asarray(columns[c.name])
        if c.dtype.startswith("S") and v.dtype.kind == "U":
            v = np.char.encode(v, "ascii", "replace")
        out[c.name] = np.ascontiguousarray(v, dtype=c.dtype).reshape(-1)
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ValueError(f"table {name}: columns differ in length {sorted(lengths)}")
    return out

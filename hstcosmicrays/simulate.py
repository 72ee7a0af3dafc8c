"""Simulated HST darks with the real file structure of each instrument and a truth table.

This is the embedded default archive (``--archive simulated``) and the yardstick of every accuracy
test: the files look like the products MAST delivers (FLT + SPT for the CCDs, IMA + SPT for the IR
detectors, C0M + C1M + SHM for WFPC2, with the real extension layout and header keywords; a STIS
CR-SPLIT set is one FLT whose imsets are its exposures, as STIS writes it), and a truth file
beside each dataset lists every injected cosmic ray.

Physics
-------
**Cosmic-ray rate.** The incident rate (CR s^-1 cm^-2) at time ``t`` (MJD) and HST position
(latitude, longitude) is

.. math::

    R(t) = R_0 \\, S(t) \\, A(\\phi, \\lambda)

with :math:`R_0` = :data:`BASE_RATE` (1.5 CR/s/cm^2, the mean outside the SAA),
:func:`solar_modulation` :math:`S(t) = 1 + a \\cos(2\\pi (t - t_{max}) / P)` (amplitude
:data:`SOLAR_AMPLITUDE` 0.2, period :data:`SOLAR_PERIOD_YEARS` 11 yr, maximum of the CR flux
:data:`CR_MAXIMUM_MJD` in 2009, i.e. anti-correlated with solar activity) and the South Atlantic
Anomaly :func:`saa_factor` :math:`A = 1 + A_0 \\exp(-(r^2/2)^2)`, a flat-topped bump of height
:data:`SAA_PEAK` centred at latitude -25 deg, longitude -45 deg with
:math:`r^2 = ((\\phi + 25)/8)^2 + ((\\lambda + 45)/22)^2`; HST is "in the SAA" where
``A > SAA_CONTOUR`` (2), roughly longitude -97..+7 deg and latitude below -6 deg.

The number of CRs of a frame is Poisson with mean
:math:`\\bar N = \\mathcal{A} \\int R\\,dt` over the integration time (EXPTIME + FLASHDUR +
readout, see ``InstrumentConfig.integration_time``; IR: the ramp), with HST's position from the
frame's SPT orbit (:mod:`hstcosmicrays.orbit`) sampled every 30 s, and :math:`\\mathcal{A}` the
area of the simulated pixels (the detector area for full frames). Arrival times follow
:math:`R(t)`.

**Tracks.** Directions are isotropic; the flux through the detector plane is weighted by
:math:`\\cos\\theta` (:math:`\\cos\\theta = \\sqrt{U}`), so the projected length is
:math:`d\\tan\\theta / p` pixels (``d`` depletion thickness, ``p`` pixel pitch; capped at
:data:`MAX_TRACK_PIXELS`) and the path in silicon :math:`d / \\cos\\theta`. Particles are protons
(87 %), helium nuclei (12 %, charge deposit x4) and heavier nuclei (1 %, x Z^2, Z uniform 3..26).
The deposit is Landau-like: :math:`Q = m\\,L\\,Z^2\\,(1 + w X)` with ``m`` = ``mpv_per_micron``
(80 e-/micron), ``L`` the path (micron), ``X = -ln(G^2)``, ``G`` standard normal (a Moyal variate,
mode 0, long upper tail) and ``w`` = :data:`LANDAU_WIDTH`. The charge is released at points every
1/3 pixel along the track, in lumps (Gamma(4) weights), each spread by charge diffusion, a
Gaussian whose sigma grows linearly with depth from ``diffusion_min`` to ``diffusion_max``
(micron), integrated over 3x3 pixels. Everything is vectorised over all points of all CRs
(``np.add.at``, ``bincount``).

**Detector.** Bias-subtracted dark current (``dark_current`` e-/s at ``active_start``, growing by
``dark_growth`` per year), hot pixels (``hot_fraction`` at start, ``hot_growth`` new per year with
rates >= ``hot_rate`` drawn from a Pareto law of index 1.5; a fraction ``hot_permanent`` survives
the anneals every ``anneal_period`` days, the rest are cured at the next anneal; the frames of one
CR-SPLIT set share their hot pixels, and a hot pixel keeps its place and rate in every later frame
until an anneal cures it), ``bad_columns`` per chip (extra dark current, DQ 4),
Poisson noise, per-amplifier read noise (``read_noise`` +- 3 %), full-well and ADC saturation
(DQ ``dq_saturated``), optional post-flash (``flash_fraction`` of sets, ``flash_level`` e-).
Permanent hot pixels are flagged DQ 16. Frames are in electrons (ACS, WFC3) or DN (STIS, WFPC2,
NICMOS counts) with the set's gain; ERR is :math:`\\sqrt{\\sigma_{read}^2 + \\max(S, 0)}`.
IR ramps (WFC3/IR, NICMOS) are NSAMP reads every ``sample_time`` s, the zeroth read subtracted;
a CR adds its charge from the read after its arrival on, and the DQ CR bit is set from that read
on where the CR's charge exceeds the truth threshold. Not simulated: blooming of saturated
charge, CTE trails, IPC, non-linearity.

Knobs
-----
Per instrument, in the ``simulation`` section of ``config/hstcosmicrays.yaml``
(:class:`hstcosmicrays.config.SimulationConfig`): ``darks_per_month``, ``exptime``, ``crsplit``,
``single_fraction``, ``nsamp``, ``sample_time``, ``gains``, ``read_noise``, ``dark_current``,
``dark_growth``, ``hot_fraction``, ``hot_growth``, ``hot_permanent``, ``hot_rate``,
``anneal_period``, ``full_well``, ``adc_max``, ``dq_saturated``, ``bad_columns``,
``flash_fraction``, ``flash_level``, ``plate_scale``, ``mpv_per_micron``, ``diffusion_min``,
``diffusion_max``, ``saa_pass_fraction``. The environment (rate, solar cycle, SAA) is set by the
module constants above. ``shape`` arguments simulate smaller chips (same pixel pitch; the truth
rate uses the simulated area, also written as SIMAREA in the primary header).

Opt-in features (off unless a ``--config`` file sets them; the default archive does not change)
make the data that only some real darks have, each with its real header keywords:

* ``dn_frames`` (CCDs in electrons: ACS, WFC3/UVIS): FLT SCI and ERR in DN, BUNIT ``COUNTS``,
  each pixel divided by the gain of the amplifier that read it, the ``ATODGN[A-D]`` of the
  header (the quadrants of :func:`_amp_columns`); ``amp_gain_factors`` sets those gains
  relative to CCDGAIN (default: each within +-2 % of it at random).
* ``subarray_fraction``, ``subarray_shape`` (CCDs): a set is a subarray set with that
  probability: ``SUBARRAY = T``, SIZAXIS1/2, CENTERA1/2, one imset (EXTVER 1, the CCDCHIP of
  its chip), LTV1 = -column and LTV2 = -row of its first pixel on a chip of the instrument's
  ``chip_shape`` (whatever ``shape`` argument), CCDAMP the amplifier whose half it lies in (both
  amplifiers of the chip for one wider than half the chip, split at the chip's middle column;
  one-chip detectors: their amplifier), ATODGN/READNSE 0 for the amplifiers it does not use. Its
  hot pixels and bad columns are those of the full chips inside its window.
* ``reed_solomon_fraction`` (ACS): a frame has Reed-Solomon decoding errors of the on-board
  compression (early ACS data) with that probability: one to three runs of consecutive pixels
  (a quarter row to four rows) replaced by fill (SCI and ERR 0) and flagged DQ 2
  (:data:`DQ_REED_SOLOMON`).

Subarray sets and Reed-Solomon frames are drawn from random streams of their own, so that every
other property of the schedule and of the frames is the same with the features on or off.

Schedule and names
------------------
A month's darks are CR-SPLIT sets (``crsplit`` frames with the same EXPTIME, CCDAMP and gain,
consecutive EXPSTART) spread evenly over the month; a fraction ``saa_pass_fraction`` of the sets
is placed so that it crosses the SAA contour (the mean factor of each frame at most
:data:`SAA_MAX_MEAN`: darks skirt the SAA, they are not taken in its core), the others
outside it. Each month has its own orbit (:func:`hstcosmicrays.orbit.realistic_elements`) and
every frame's SPT carries it. Rootnames are ``<prefix><code><MM><SS><FF><t>``: the instrument's
prefix, a detector code (:data:`DETECTOR_CODES`), the month (base 36, months since 1990-01), the
set and the frame in the set (base 36), and ``q`` (``t`` for WFPC2); :func:`resolve_obs_id`
inverts it. The same seed, instrument, month (and darks per month, shape) give byte-identical
files.

Each frame is a dataset (an obs_id, a directory of files) of its own, except on an instrument
whose files hold exposures as imsets (``imset_exposures``: STIS), where each CR-SPLIT set of two
or more frames is one dataset, as STIS writes a CR-SPLIT observation (:func:`month_datasets`,
:class:`DatasetSpec`). Its rootname (:func:`set_obs_id_for`) is its first frame's with the last
character :data:`SET_LAST` (``0``, as HST names an association), ``<prefix><code><MM><SS>000``,
which no frame has; :func:`resolve_obs_id` gives its frame index as None. Its FLT holds frame
``k`` of the set in imset ``k`` (SCI/ERR/DQ with EXTVER ``k``), with the frame's own EXPTIME,
EXPSTART, EXPEND, DATE-OBS, TIME-OBS, DARKTIME, SAA_EXIT and SAA_TIME in that SCI header and the
pixels of the frame's file of its own; its primary header gives the set's ROOTNAME, FILENAME,
NEXTEND = 3 N, CRSPLIT = N and the totals TEXPTIME, TEXPSTRT, TEXPEND (no EXPTIME, EXPSTART or
EXPEND; DATE-OBS, TIME-OBS, SAA_EXIT and SAA_TIME are the first frame's). Its one SPT has the
set's ROOTNAME, the month's orbit and a UDL extension per imset. The pipeline stores frame ``k``
as ``<set rootname>_<k>`` (:func:`frame_name`). A lone frame (a set of one) is a file of one
exposure, as on every other instrument. :func:`write_dataset` given one frame
(:class:`FrameSpec`) writes it as a file of its own under its own rootname, whatever its set.

Truth
-----
``<obs_id>_truth.fits`` beside the products: extension ``FRAME`` (one row per frame, in imset
order in a set's file; ``obs_id`` the name the pipeline stores the frame under, :func:`frame_name`;
n_cr, true and expected rate, integration time, area, solar modulation and mean and max SAA
factor over the integration time, mean HST lat/lon/alt over EXPSTART..EXPEND (samples at most
60 s apart; the longitude a circular mean), dark current, read noise, threshold, ...) and
extension ``CRS`` (one row per CR: chip (its EXTVER in a file of one exposure, the chip the
pipeline stores), read (IR, time order, 1 = first after the zeroth; -1 for CCDs), x, y (charge-weighted
centroid of the deposited charge on the chip, 0-based pixels), x_mid, y_mid, n_pixels (pixels whose
charge from this CR exceeds the threshold, 5 sigma of the read noise of one read), charge (e- on
the chip), charge_total, z (nuclear charge), path_um, length_px, theta_deg, phi_deg, time_s
(arrival, s after EXPSTART); in a set's file an ``imset`` column first, 1..N, the frame of the
CR). Read them with :func:`read_truth`, which names each CR's frame in its ``obs_id`` column.
A subarray's CRs are in its own pixels (x, y of its array; on its chip: x - ltv1, y - ltv2),
on chip 1 (its one imset), as charge in electrons whatever the FLT's units.

When an opt-in feature is on, FRAME has these columns too (:func:`_feature_truth`):
``subarray``, ``ccdchip`` (of a subarray, 0 for a full frame), ``ltv1``, ``ltv2``, ``bunit`` (of
the FLT), ``rs_pixels`` (pixels with DQ 2) and ``pipeline_exclusion``, what the pipeline must do
with the frame: ``subarray`` (left out at stage ``select``: subarrays are not rejected),
``reed_solomon`` (left out at ``select`` by ``crreject.screen_frame``), or empty (measured,
unless all its CR-SPLIT partners are left out).

Per-pixel truth is not written to any file: :func:`simulate_frame` returns it in memory as
``SimulatedFrame.cr_charge``, the CR charge (e-) deposited in every pixel (what the tests of CR
rejection score flags against).
"""

from __future__ import annotations

import datetime as _dt
import errno
import io
import logging
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from astropy.io import fits
from scipy.integrate import trapezoid
from scipy.special import ndtr

from .config import ConfigError, InstrumentConfig, SimulationConfig
from .intervals import Month, active_time_label, month_windows, span_label, unended_months, utc_today
from .orbit import (
    OrbitalElements,
    circular_mean_deg,
    hst_positions,
    realistic_elements,
    sample_times,
)
from .schema import exposure_name

__all__ = [
    "BASE_RATE",
    "SOLAR_AMPLITUDE",
    "SOLAR_PERIOD_YEARS",
    "CR_MAXIMUM_MJD",
    "SAA_CENTER",
    "SAA_SIGMA",
    "SAA_PEAK",
    "SAA_CONTOUR",
    "DETECTOR_CODES",
    "SET_LAST",
    "FrameSpec",
    "DatasetSpec",
    "SimulatedFrame",
    "solar_modulation",
    "saa_factor",
    "cr_rate",
    "month_schedule",
    "month_datasets",
    "dataset_obs_id",
    "frame_name",
    "simulate_frame",
    "build_products",
    "render_dataset",
    "product_size",
    "write_dataset",
    "write_archive",
    "read_truth",
    "obs_id_for",
    "set_obs_id_for",
    "resolve_obs_id",
    "truth_threshold",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# the environment

#: Mean CR rate outside the SAA (CR s^-1 cm^-2) averaged over the solar cycle.
BASE_RATE = 1.5
#: Relative amplitude of the solar-cycle modulation of the CR rate.
SOLAR_AMPLITUDE = 0.2
#: Period of the solar cycle (years).
SOLAR_PERIOD_YEARS = 11.0
#: MJD of a maximum of the CR flux (a solar minimum; 2009-08).
CR_MAXIMUM_MJD = 55050.0
#: Centre of the SAA (geocentric latitude, east longitude; deg).
SAA_CENTER = (-25.0, -45.0)
#: Widths of the SAA (latitude, longitude; deg).
SAA_SIGMA = (8.0, 22.0)
#: Enhancement of the CR rate at the centre of the SAA.
SAA_PEAK = 800.0
#: SAA factor above which HST is inside the SAA (SAA_EXIT / SAA_TIME and scheduling).
SAA_CONTOUR = 2.0
#: Largest mean SAA factor (over its integration) of a frame scheduled through the SAA.
SAA_MAX_MEAN = 4.0
#: Relative width of the Landau-like (Moyal) deposit.
LANDAU_WIDTH = 0.15
#: Longest projected track (pixels).
MAX_TRACK_PIXELS = 60.0
#: Points per pixel of projected track length at which charge is released.
POINTS_PER_PIXEL = 3.0
#: Truth threshold in units of the read noise of one read.
THRESHOLD_SIGMA = 5.0

#: One character per instrument, the second character of simulated rootnames.
DETECTOR_CODES = {
    "wfc3_uvis": "u", "wfc3_ir": "r", "acs_wfc": "w", "acs_hrc": "h", "stis_ccd": "c",
    "wfpc2": "p", "nicmos_nic1": "1", "nicmos_nic2": "2", "nicmos_nic3": "3",
}
#: Last character of the rootname of a CR-SPLIT set's file (frames end in ``q``, WFPC2 ``t``).
SET_LAST = "0"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_MONTH_ZERO = 1990 * 12  # months since 1990-01 are encoded in rootnames
_TAGS = {"schedule": 1, "frame": 2, "hot": 3, "cycle": 4, "badcol": 5, "amps": 6, "subarray": 7, "rs": 8}
#: DQ flag of pixels lost to Reed-Solomon decoding errors and replaced by fill (ACS; what
#: ``crreject.DQ_REED_SOLOMON`` screens for).
DQ_REED_SOLOMON = 2
#: BUNIT of a CCD FLT written in DN by the opt-in ``dn_frames`` (as HST names DN).
BUNIT_COUNTS = "COUNTS"

# reference-file names written in the headers (simulated names in the real style)
_REFFILES = {
    "acs_wfc": ("jref$29p1548cj_crr.fits", "jref$72m1821aj_ccd.fits"),
    "acs_hrc": ("jref$n4e12510j_crr.fits", "jref$o151530kj_ccd.fits"),
    "stis_ccd": ("oref$j3m1403io_crr.fits", "oref$16j16005o_ccd.fits"),
    "wfc3_uvis": ("iref$n9i1435li_crr.fits", "iref$t291659mi_ccd.fits"),
    "wfc3_ir": ("iref$u6a1748ri_crr.fits", "iref$t2c16200i_ccd.fits"),
}


def solar_modulation(mjd) -> np.ndarray:
    """Solar-cycle modulation of the CR rate (dimensionless, mean 1).

    .. math:: S(t) = 1 + a \\cos\\left(2\\pi \\frac{t - t_{max}}{365.25\\,P}\\right)

    with ``a`` = :data:`SOLAR_AMPLITUDE`, ``P`` = :data:`SOLAR_PERIOD_YEARS` and
    ``t_max`` = :data:`CR_MAXIMUM_MJD` (t in MJD). CRs peak at solar minimum.
    """
    t = np.asarray(mjd, dtype=np.float64)
    return 1.0 + SOLAR_AMPLITUDE * np.cos(2.0 * np.pi * (t - CR_MAXIMUM_MJD) / (365.25 * SOLAR_PERIOD_YEARS))


def saa_factor(lat, lon) -> np.ndarray:
    """Enhancement of the CR rate by the South Atlantic Anomaly at HST's position.

    .. math::

        A = 1 + A_0 \\exp\\left(-\\tfrac14 r^4\\right), \\qquad
        r^2 = \\left(\\frac{\\phi - \\phi_0}{\\sigma_\\phi}\\right)^2
            + \\left(\\frac{\\Delta\\lambda}{\\sigma_\\lambda}\\right)^2

    with :math:`A_0` = :data:`SAA_PEAK`, centre :data:`SAA_CENTER` and widths :data:`SAA_SIGMA`
    (deg); :math:`\\Delta\\lambda` is the longitude difference wrapped to [-180, 180).

    Parameters
    ----------
    lat, lon : float or array_like
        Geocentric latitude and east longitude (deg).
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    dlon = (lon - SAA_CENTER[1] + 180.0) % 360.0 - 180.0
    r2 = ((lat - SAA_CENTER[0]) / SAA_SIGMA[0]) ** 2 + (dlon / SAA_SIGMA[1]) ** 2
    return 1.0 + SAA_PEAK * np.exp(-0.25 * r2 * r2)


def cr_rate(*, mjd, lat, lon, base_rate: float = BASE_RATE) -> np.ndarray:
    """Incident CR rate (CR s^-1 cm^-2): ``base_rate * solar_modulation(mjd) * saa_factor(lat, lon)``."""
    return base_rate * solar_modulation(mjd) * saa_factor(lat, lon)


def truth_threshold(instrument: InstrumentConfig) -> float:
    """Charge (e-) above which a pixel counts in a truth CR's ``n_pixels``:
    :data:`THRESHOLD_SIGMA` (5) times the read noise of one read."""
    return THRESHOLD_SIGMA * _sim(instrument).read_noise


# --------------------------------------------------------------------------------------------
# names


def _b36(value: int, width: int) -> str:
    if value < 0 or value >= 36**width:
        raise ValueError(f"{value} does not fit in {width} base-36 digits")
    out = ""
    for _ in range(width):
        value, r = divmod(value, 36)
        out = _B36[r] + out
    return out


def _detector_code(name: str) -> str:
    if name in DETECTOR_CODES:
        return DETECTOR_CODES[name]
    return _B36[10 + zlib.crc32(name.encode()) % 26]


def obs_id_for(*, instrument: InstrumentConfig, month: Month, set_index: int, frame_index: int) -> str:
    """Rootname (lower case) of a simulated frame: ``<prefix><code><MM><SS><FF><t>``."""
    months = month.year * 12 + month.month - 1 - _MONTH_ZERO
    last = "t" if instrument.kind == "wfpc2" else "q"
    return (instrument.rootname_prefix.lower() + _detector_code(instrument.name) + _b36(months, 2)
            + _b36(set_index, 2) + _b36(frame_index, 2) + last)


def set_obs_id_for(*, instrument: InstrumentConfig, month: Month, set_index: int) -> str:
    """Rootname (lower case) of the one file of a CR-SPLIT set of several exposures
    (``instrument.imset_exposures``): its first frame's rootname with the last character
    :data:`SET_LAST` (``0``), ``<prefix><code><MM><SS>000``, as HST names an association."""
    return _set_rootname(obs_id_for(instrument=instrument, month=month, set_index=set_index, frame_index=0))


def _set_rootname(first: str) -> str:
    """The rootname of a set's file from its first frame's rootname (the naming rule, once)."""
    return first[:-1] + SET_LAST


def resolve_obs_id(
    obs_id: str, instruments: Optional[Sequence[str]] = None,
) -> tuple[str, Month, int, Optional[int]]:
    """Instrument key, month, set index and frame index of a simulated rootname.

    Parameters
    ----------
    obs_id : str
        A rootname made by :func:`obs_id_for`, or by :func:`set_obs_id_for` (any case).
    instruments : sequence of str, optional
        Instrument keys to consider besides :data:`DETECTOR_CODES` (configured extras).

    Returns
    -------
    tuple
        ``(instrument, month, set_index, frame_index)``; ``frame_index`` is None for the
        rootname of a set's file (:func:`set_obs_id_for`), which holds every frame of the set.

    Raises
    ------
    ValueError
        Not a simulated rootname.
    """
    s = obs_id.strip().lower()
    if len(s) != 9 or any(c not in _B36 for c in s[:8]) or (s[8] == SET_LAST and s[6:8] != "00"):
        raise ValueError(f"{obs_id!r} is not a simulated rootname")
    names = list(DETECTOR_CODES) + [n for n in (instruments or ()) if n not in DETECTOR_CODES]
    matches = [n for n in names if _detector_code(n) == s[1]]
    if not matches:
        raise ValueError(f"{obs_id!r}: unknown detector code {s[1]!r}")
    months = int(s[2:4], 36) + _MONTH_ZERO
    month = Month(months // 12, months % 12 + 1)
    frame_index = None if s[8] == SET_LAST else int(s[6:8], 36)
    return matches[0], month, int(s[4:6], 36), frame_index


# --------------------------------------------------------------------------------------------
# the schedule


@dataclass(frozen=True)
class FrameSpec:
    """Everything that determines one simulated frame (its files are a pure function of it).

    Times are MJD (UTC) and seconds; gains in e-/DN; read noise in e-; angles in degrees.
    ``amp_gains`` and ``amp_readnoise`` hold amplifiers A-D (0 for amplifiers not used).
    ``shape`` is the (rows, columns) of one chip; ``hot_epoch`` the MJD at which the hot-pixel
    population is evaluated (the set's start, shared by its frames).

    The opt-in features of ``SimulationConfig`` add: ``subarray`` (the frame is a subarray of
    ``shape`` on the chip whose CCDCHIP is ``ccdchip``, its first pixel at the 0-based column and
    row ``origin`` of the full chip of ``instrument.chip_shape``: LTV1 = -origin[0],
    LTV2 = -origin[1]) and ``reed_solomon`` (runs of its pixels are lost to Reed-Solomon
    decoding errors).
    """

    instrument: str
    obs_id: str
    month: str
    set_index: int
    frame_index: int
    set_size: int
    set_obs_ids: tuple[str, ...]
    expstart: float
    expend: float
    exptime: float
    flashdur: float
    flash_level: float
    ccdgain: float
    amp_gains: tuple[float, float, float, float]
    amp_readnoise: tuple[float, float, float, float]
    ccdamp: str
    ra: float
    dec: float
    orientat: float
    elements: OrbitalElements
    saa_exit: float
    saa_time: float
    hot_epoch: float
    shape: tuple[int, int]
    nsamp: int
    sample_time: float
    proposid: int
    seed: tuple[int, ...]
    subarray: bool = False
    ccdchip: int = 0
    origin: tuple[int, int] = (0, 0)
    reed_solomon: bool = False


def _sim(instrument: InstrumentConfig) -> SimulationConfig:
    if instrument.simulation is None:
        raise ConfigError(f"instruments.{instrument.name}.simulation: no simulation settings; cannot simulate")
    return instrument.simulation


def _rng(seed: int, instrument: InstrumentConfig, tag: str, *keys: int) -> np.random.Generator:
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(instrument.name.encode()), _TAGS[tag], *keys))
    return np.random.default_rng(ss)


def _mjd(date_text: str) -> float:
    d = _dt.date.fromisoformat(date_text)
    return float((d - _dt.date(1858, 11, 17)).days)


def _active_window(instrument: InstrumentConfig, month: Month) -> Optional[tuple[float, float]]:
    """Longest active sub-interval [lo, hi) (MJD) of the month, or None."""
    if not month_windows(instrument=instrument, start=month, stop=month, include_unended=True):
        return None
    lo, hi = month.mjd_start, month.mjd_stop
    lo = max(lo, _mjd(instrument.active_start))
    if instrument.active_stop:
        hi = min(hi, _mjd(instrument.active_stop))
    pieces = [(lo, hi)]
    for a, b in instrument.inactive:
        ga, gb = _mjd(a), _mjd(b)
        new = []
        for p0, p1 in pieces:
            if gb <= p0 or ga >= p1:
                new.append((p0, p1))
                continue
            if ga > p0:
                new.append((p0, ga))
            if gb < p1:
                new.append((gb, p1))
        pieces = new
    pieces = [p for p in pieces if p[1] - p[0] > 0.1]
    return max(pieces, key=lambda p: p[1] - p[0]) if pieces else None


def _default_shape(instrument: InstrumentConfig) -> tuple[int, int]:
    return (int(instrument.chip_shape[0]), int(instrument.chip_shape[1]))


def _frame_exptime(instrument: InstrumentConfig) -> float:
    sim = _sim(instrument)
    if instrument.kind == "ir":
        return (sim.nsamp - 1) * sim.sample_time
    return sim.exptime


def _amp_letters(instrument: InstrumentConfig) -> str:
    """CCDAMP of full-frame darks."""
    if instrument.kind == "ir" or len(instrument.chips) == 2:
        return "ABCD"
    if instrument.kind == "wfpc2":
        return ""
    return "C" if instrument.instrume.upper() == "ACS" else "D"


def _subarray_placement(instrument: InstrumentConfig, rng: np.random.Generator) -> tuple[int, str, tuple[int, int]]:
    """CCDCHIP, CCDAMP and origin (0-based column, row on the full chip) of a subarray of
    ``simulation.subarray_shape``.

    Two-chip detectors: an amplifier at random; a subarray no wider than half the chip lies in
    that amplifier's half (CCDAMP one letter), a wider one across the middle of the amplifier's
    chip, read by both its amplifiers (CCDAMP ``AB`` on CCDCHIP 1, ``CD`` on CCDCHIP 2; the
    layout of :mod:`hstcosmicrays.frames`). One-chip detectors: the full frame's amplifier.
    The position is uniform over the places allowed.
    """
    rows, cols = instrument.chip_shape
    ny, nx = _sim(instrument).subarray_shape
    amp = "ABCD"[int(rng.integers(4))]
    x_draw, y_draw = rng.random(2)
    if len(instrument.chips) == 2:
        ccdchip = 1 if amp in "AB" else 2
        half = cols // 2
        if nx <= half:
            lo, hi = (0, half - nx) if amp in "AC" else (half, cols - nx)
            ccdamp = amp
        else:
            lo, hi = max(0, half - nx + 1), min(half - 1, cols - nx)
            ccdamp = "AB" if ccdchip == 1 else "CD"
    else:
        ccdchip = int(instrument.ccdchip[0])
        ccdamp = _amp_letters(instrument)
        lo, hi = 0, cols - nx
    x0 = lo + min(int(x_draw * (hi - lo + 1)), hi - lo)
    y0 = min(int(y_draw * (rows - ny + 1)), rows - ny)
    return ccdchip, ccdamp, (x0, y0)


def _saa_exit(elements: OrbitalElements, expstart: float) -> tuple[float, float]:
    """MJD of the last exit from the SAA contour before ``expstart`` and seconds since then."""
    step = 30.0 / 86400.0
    t = expstart - np.arange(0, 2881)[::-1] * step  # the day before, oldest first
    lat, lon, _ = hst_positions(elements=elements, mjd=t)
    inside = saa_factor(lat, lon) > SAA_CONTOUR
    if inside[-1]:
        return expstart, 0.0
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return math.nan, math.nan
    exit_mjd = float(t[idx[-1]] + step)
    return exit_mjd, round((expstart - exit_mjd) * 86400.0)


def month_schedule(
    *, instrument: InstrumentConfig, month: Month, seed: int, darks_per_month: Optional[int] = None,
    shape: Optional[tuple[int, int]] = None,
) -> list[FrameSpec]:
    """The darks of one instrument in one month, sorted by EXPSTART.

    Parameters
    ----------
    instrument : InstrumentConfig
        Must have a ``simulation`` section.
    month : Month
    seed : int
    darks_per_month : int, optional
        Frames in the month (default ``simulation.darks_per_month``).
    shape : (int, int), optional
        Rows and columns of each simulated chip (default: the full chip).

    Returns
    -------
    list of FrameSpec
        Empty when the instrument was not active in the month.

    Notes
    -----
    With ``simulation.subarray_fraction`` a set is a subarray set with that probability
    (:func:`_subarray_placement`; its frames have ``shape`` = ``subarray_shape`` whatever the
    ``shape`` argument), and with ``reed_solomon_fraction`` a frame has Reed-Solomon errors with
    that probability; both are drawn from random streams of their own, so that the rest of the
    schedule is the same with the features on or off.
    """
    sim = _sim(instrument)
    n_frames = sim.darks_per_month if darks_per_month is None else int(darks_per_month)
    window = _active_window(instrument, month)
    if n_frames <= 0 or window is None:
        return []
    shape = tuple(int(v) for v in (shape or _default_shape(instrument)))
    rng = _rng(seed, instrument, "schedule", month.year, month.month, n_frames)
    # set sizes
    crsplit = 1 if instrument.kind == "ir" else sim.crsplit
    sizes: list[int] = []
    while sum(sizes) < n_frames:
        size = 1 if rng.random() < sim.single_fraction else crsplit
        sizes.append(min(size, n_frames - sum(sizes)))
    exptime = _frame_exptime(instrument)
    readout = instrument.integration_time(exptime=exptime) - exptime
    gap = readout + 30.0  # s between the end of one frame and the start of the next
    lo, hi = window
    elements = realistic_elements(epoch_mjd=lo, rng=rng)
    amp_rng = _rng(seed, instrument, "amps")
    gain_scatter = 1.0 + 0.02 * amp_rng.standard_normal(4)
    rn_scatter = 1.0 + 0.03 * amp_rng.standard_normal(4)
    if sim.amp_gain_factors:
        gain_scatter = np.asarray(sim.amp_gain_factors, dtype=np.float64)
    letters = _amp_letters(instrument)
    sub_rng = (_rng(seed, instrument, "subarray", month.year, month.month, n_frames)
               if sim.subarray_fraction > 0 else None)
    rs_rng = (_rng(seed, instrument, "rs", month.year, month.month, n_frames)
              if sim.reed_solomon_fraction > 0 else None)
    month_code = (month.year * 12 + month.month) % 100000
    specs: list[FrameSpec] = []
    n_sets = len(sizes)
    stratum = (hi - lo) / n_sets
    for s, size in enumerate(sizes):
        duration = (size * exptime + (size - 1) * gap + readout) / 86400.0
        span = max(stratum - duration, 0.0)
        want_saa = rng.random() < sim.saa_pass_fraction
        cand = lo + s * stratum + np.sort(rng.random(48)) * span
        # SAA factor over each frame's integration (16 samples a frame) for every candidate start
        frame_t0 = np.arange(size) * (exptime + gap) / 86400.0
        within = np.linspace(0.0, (exptime + readout) / 86400.0, 16)
        grid = cand[:, None, None] + frame_t0[None, :, None] + within[None, None, :]
        lat, lon, _ = hst_positions(elements=elements, mjd=grid)
        fac = saa_factor(lat, lon)  # (candidates, frames, samples)
        crosses = fac.max(axis=(1, 2)) > SAA_CONTOUR
        worst = fac.mean(axis=2).max(axis=1)  # the largest mean factor of a frame
        ok = (crosses & (worst <= SAA_MAX_MEAN)) if want_saa else ~crosses
        start = float(cand[np.argmax(ok)] if ok.any() else cand[np.argmin(worst)])
        start = math.floor(start * 86400.0) / 86400.0  # whole seconds
        ccdgain = float(sim.gains[int(rng.integers(len(sim.gains)))])
        flashed = rng.random() < sim.flash_fraction
        ra = float(rng.uniform(0.0, 360.0))
        dec = float(np.degrees(np.arcsin(rng.uniform(-1.0, 1.0))))
        orientat = float(rng.uniform(-180.0, 180.0))
        proposid = int(rng.integers(8000, 17999))
        sub = None
        if sub_rng is not None and sub_rng.random() < sim.subarray_fraction:
            sub = _subarray_placement(instrument, sub_rng)
        set_letters = sub[1] if sub else letters
        used = [a in set_letters for a in "ABCD"] if set_letters else [True] * 4
        amp_gains = tuple(float(round(ccdgain * g, 4)) if u else 0.0 for g, u in zip(gain_scatter, used))
        amp_rn = tuple(float(round(sim.read_noise * r, 3)) if u else 0.0 for r, u in zip(rn_scatter, used))
        sub_fields = {}
        if sub:
            sub_fields = dict(subarray=True, ccdchip=sub[0], origin=sub[2],
                              shape=tuple(int(v) for v in sim.subarray_shape))
        obs_ids = tuple(
            obs_id_for(instrument=instrument, month=month, set_index=s, frame_index=f) for f in range(size)
        )
        for f in range(size):
            expstart = start + f * (exptime + gap) / 86400.0
            expend = expstart + exptime / 86400.0
            saa_exit, saa_time = _saa_exit(elements, expstart)
            specs.append(FrameSpec(
                instrument=instrument.name, obs_id=obs_ids[f], month=month.label, set_index=s,
                frame_index=f, set_size=size, set_obs_ids=obs_ids, expstart=expstart, expend=expend,
                exptime=float(exptime), flashdur=round(sim.flash_level / 10.0, 1) if flashed else 0.0,
                flash_level=sim.flash_level if flashed else 0.0, ccdgain=ccdgain,
                amp_gains=amp_gains, amp_readnoise=amp_rn, ccdamp=set_letters, ra=ra, dec=dec,
                orientat=orientat, elements=elements, saa_exit=saa_exit, saa_time=saa_time,
                hot_epoch=start, nsamp=int(sim.nsamp) if instrument.kind == "ir" else 0,
                sample_time=float(sim.sample_time) if instrument.kind == "ir" else 0.0,
                proposid=proposid, seed=(int(seed), month_code, s, f, n_frames),
                reed_solomon=bool(rs_rng is not None and rs_rng.random() < sim.reed_solomon_fraction),
                **{"shape": shape, **sub_fields},
            ))
    specs.sort(key=lambda sp: sp.expstart)
    return specs


# --------------------------------------------------------------------------------------------
# datasets: the files of one obs_id


@dataclass(frozen=True)
class DatasetSpec:
    """The files of one simulated obs_id: one exposure, or a CR-SPLIT set of several.

    An instrument whose files hold exposures as imsets (``instrument.imset_exposures``: STIS)
    keeps each CR-SPLIT set of two or more frames in one FLT (and one SPT), imset ``k`` holding
    ``frames[k - 1]``; any other dataset is one frame, as MAST serves it.

    Attributes
    ----------
    obs_id : str
        Rootname of the files (lower case): the frame's own (:func:`obs_id_for`) for one
        exposure, the set's (:func:`set_obs_id_for`) for several.
    frames : tuple of FrameSpec
        The exposures, in time order.
    """

    obs_id: str
    frames: tuple[FrameSpec, ...]

    @property
    def is_set(self) -> bool:
        """True for a file of several exposures (imsets 1..N)."""
        return len(self.frames) > 1

    @property
    def instrument(self) -> str:
        return self.frames[0].instrument

    @property
    def month(self) -> str:
        return self.frames[0].month

    @property
    def expstart(self) -> float:
        """MJD of the first exposure's start (TEXPSTRT of a set)."""
        return self.frames[0].expstart

    @property
    def expend(self) -> float:
        """MJD of the last exposure's end (TEXPEND of a set)."""
        return self.frames[-1].expend

    @property
    def exptime(self) -> float:
        """Exposure time (s) summed over the exposures (TEXPTIME; MAST's ``t_exptime``)."""
        return float(sum(f.exptime for f in self.frames))

    @property
    def frame_names(self) -> tuple[str, ...]:
        """The name the pipeline stores for each exposure (``FrameHeader.rootname``):
        ``<obs_id>_<k>`` for imset ``k`` of a set, the obs_id for one exposure."""
        if self.is_set:
            return tuple(exposure_name(self.obs_id, k) for k in range(1, len(self.frames) + 1))
        return (self.obs_id,)


def _as_dataset(spec: FrameSpec | DatasetSpec) -> DatasetSpec:
    """A frame on its own is a dataset of one exposure under its own rootname."""
    return spec if isinstance(spec, DatasetSpec) else DatasetSpec(obs_id=spec.obs_id, frames=(spec,))


def _in_set_file(instrument: InstrumentConfig, spec: FrameSpec) -> bool:
    return bool(instrument.imset_exposures) and spec.set_size > 1


def dataset_obs_id(*, instrument: InstrumentConfig, spec: FrameSpec) -> str:
    """The obs_id of the dataset that holds frame ``spec`` in the simulated archive: the set's
    (:func:`set_obs_id_for`) for a frame of a CR-SPLIT set of several exposures of an instrument
    with ``imset_exposures``, the frame's own rootname otherwise."""
    if _in_set_file(instrument, spec):
        return _set_rootname(spec.set_obs_ids[0])
    return spec.obs_id


def frame_name(*, instrument: InstrumentConfig, spec: FrameSpec) -> str:
    """The name under which the pipeline stores frame ``spec`` of the simulated archive (and the
    ``obs_id`` :func:`read_truth` gives it): ``<set obs_id>_<k>`` for exposure ``k`` (1, 2, ...)
    of a set's file, the frame's rootname otherwise."""
    if _in_set_file(instrument, spec):
        return f"{dataset_obs_id(instrument=instrument, spec=spec)}_{spec.frame_index + 1}"
    return spec.obs_id


def month_datasets(
    *, instrument: InstrumentConfig, month: Month, seed: int, darks_per_month: Optional[int] = None,
    shape: Optional[tuple[int, int]] = None,
) -> list[DatasetSpec]:
    """The datasets (obs_ids) of one instrument in one month, sorted by their first EXPSTART.

    The frames are those of :func:`month_schedule` (same arguments). With
    ``instrument.imset_exposures`` (STIS) each CR-SPLIT set of two or more frames is one
    dataset (:func:`set_obs_id_for`); every other frame is a dataset of its own.

    Returns
    -------
    list of DatasetSpec
        Empty when the instrument was not active in the month.
    """
    specs = month_schedule(instrument=instrument, month=month, seed=seed, darks_per_month=darks_per_month,
                           shape=shape)
    groups: dict[str, list[FrameSpec]] = {}
    for spec in specs:
        groups.setdefault(dataset_obs_id(instrument=instrument, spec=spec), []).append(spec)
    datasets = [DatasetSpec(obs_id=obs_id, frames=tuple(sorted(frames, key=lambda f: f.frame_index)))
                for obs_id, frames in groups.items()]
    datasets.sort(key=lambda d: d.expstart)
    return datasets


# --------------------------------------------------------------------------------------------
# pixels


@dataclass(frozen=True)
class SimulatedFrame:
    """Pixel arrays and truth of one frame.

    CCD/WFPC2: ``sci``, ``err`` (file units), ``dq`` with shape (chips, rows, cols).
    IR: shape (nsamp, rows, cols) in time order (index 0 = zeroth read), ``sci`` a count rate in
    file units. ``crs`` and ``frame`` are the truth columns (see the module docstring).

    ``cr_charge`` is the per-pixel truth: the charge (e-, float32) that the injected cosmic rays
    deposited in each pixel, summed over all CRs, before noise and before saturation clipping.
    CCD/WFPC2: shape (chips, rows, cols), the same pixels as ``sci``. IR: shape
    (nsamp - 1, rows, cols), layer ``k - 1`` holding the charge that arrived between reads
    ``k - 1`` and ``k`` (time order). It is exactly 0 where no CR released any charge; the
    3x3 diffusion stamps leave tiny positive values (down to ~1e-10 e-) beside every track.
    The CR charge itself carries no further shot noise in the pixels (it is added as is), so a
    pixel's recorded counts are ``cr_charge`` + Poisson(dark, hot, flash) + read noise. It is
    not written to any file (the products and the truth file do not change).
    """

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    crs: dict
    frame: dict
    cr_charge: Optional[np.ndarray] = None


def _poisson_uniform(rng: np.random.Generator, lam: float, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson variates of one mean ``lam`` by inverse-CDF lookup (22-bit uniform), float32.

    Exact up to the 2^-22 resolution of the quantiles; ~6x faster than ``rng.poisson`` for a
    full frame.
    """
    if lam <= 0:
        return np.zeros(shape, dtype=np.float32)
    if lam > 1000:
        return rng.poisson(lam, size=shape).astype(np.float32)
    bits = 22
    kmax = int(lam + 12 * math.sqrt(lam) + 20)
    k = np.arange(kmax + 1)
    logp = k * math.log(lam) - lam - np.array([math.lgamma(v + 1) for v in k])
    cdf = np.cumsum(np.exp(logp))
    # the quantile (j + 0.5) / 2^bits maps to the first k with cdf[k] >= it: count the table
    # entries below each cdf step and repeat k that many times
    edges = np.minimum(np.ceil(cdf * 2**bits - 0.5), 2**bits).astype(np.int64)
    counts = np.diff(np.concatenate([[0], edges]))
    counts[-1] += 2**bits - edges[-1]
    lut = np.repeat(np.arange(kmax + 1, dtype=np.float32), counts)
    idx = rng.integers(0, 2**bits, size=shape, dtype=np.uint32)
    return lut[idx]


def _years_since(instrument: InstrumentConfig, mjd: float) -> float:
    return max(0.0, (mjd - _mjd(instrument.active_start)) / 365.25)


def _hot_draw(rng: np.random.Generator, n: int, npix: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices and rate quantiles of ``n`` hot pixels, the first ``m`` the same for any n >= m."""
    u = rng.random((n, 2))
    return np.minimum((u[:, 0] * npix).astype(np.int64), npix - 1), u[:, 1]


def _hot_pixels(instrument: InstrumentConfig, spec: FrameSpec, npix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices, dark rates (e-/s) and 'permanent' flags of the hot pixels at ``hot_epoch``."""
    sim = _sim(instrument)
    seed = spec.seed[0]
    years = _years_since(instrument, spec.hot_epoch)
    permanent_share = 1.0 if sim.anneal_period <= 0 else sim.hot_permanent
    # permanent population: one stream per instrument and frame size, grown in birth order
    n_perm = int(npix * (sim.hot_fraction + sim.hot_growth * permanent_share * years))
    # (position, rate quantile) pairs drawn row by row, so that a longer draw extends a shorter
    # one: a hot pixel keeps its place and its rate in every later frame
    idx_p, u_p = _hot_draw(_rng(seed, instrument, "hot", npix), n_perm, npix)
    # hot pixels born since the last anneal (cured at the next one)
    if sim.anneal_period > 0:
        days = (spec.hot_epoch - _mjd(instrument.active_start))
        cycle = int(max(days, 0.0) // sim.anneal_period)
        into = max(days, 0.0) - cycle * sim.anneal_period
        n_new = int(npix * sim.hot_growth * (1.0 - permanent_share) * into / 365.25)
        idx_c, u_c = _hot_draw(_rng(seed, instrument, "cycle", npix, cycle), n_new, npix)
    else:
        idx_c = np.zeros(0, dtype=np.int64)
        u_c = np.zeros(0)
    idx = np.concatenate([idx_p, idx_c])
    u = np.concatenate([u_p, u_c])
    rates = sim.hot_rate * np.minimum((1.0 - u) ** (-1.0 / 1.5), 300.0)
    permanent = np.concatenate([np.ones(n_perm, bool), np.zeros(idx_c.size, bool)])
    return idx, rates, permanent


def _bad_columns(instrument: InstrumentConfig, spec: FrameSpec, nchips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chip, column and extra dark rate (e-/s) of each bad column (fixed for the instrument)."""
    sim = _sim(instrument)
    ny, nx = spec.shape
    n = sim.bad_columns * nchips
    r = _rng(spec.seed[0], instrument, "badcol", nx)
    chips = np.repeat(np.arange(nchips), sim.bad_columns)
    cols = r.integers(0, nx, size=n)
    extra = r.uniform(0.02, 0.3, size=n)
    return chips, cols, extra


def _defects(instrument: InstrumentConfig, spec: FrameSpec, nchips: int) -> tuple[np.ndarray, ...]:
    """Hot pixels (flat indices into (chips, rows, cols), rates e-/s, permanent flags) and bad
    columns (chip, column, extra rate e-/s) of a frame.

    A subarray sees the defects of the full chips of ``instrument.chip_shape`` (a full frame of
    that size at the same epoch) inside its window, so that subarrays at different places have
    different hot pixels and bad columns, and one place the same ones at every epoch they share.
    """
    if not spec.subarray:
        return (*_hot_pixels(instrument, spec, nchips * spec.shape[0] * spec.shape[1]),
                *_bad_columns(instrument, spec, nchips))
    rows, cols = (int(v) for v in instrument.chip_shape)
    n_full = len(instrument.chips)
    full = replace(spec, shape=(rows, cols), subarray=False, ccdchip=0, origin=(0, 0))
    idx, rates, permanent = _hot_pixels(instrument, full, n_full * rows * cols)
    bc_chip, bc_col, bc_extra = _bad_columns(instrument, full, n_full)
    k = list(instrument.ccdchip).index(spec.ccdchip)  # the chip's index in a full frame
    (x0, y0), (ny, nx) = spec.origin, spec.shape
    chip, rest = np.divmod(idx, rows * cols)
    r, c = np.divmod(rest, cols)
    inside = (chip == k) & (r >= y0) & (r < y0 + ny) & (c >= x0) & (c < x0 + nx)
    sub_idx = (r[inside] - y0) * nx + (c[inside] - x0)
    on = (bc_chip == k) & (bc_col >= x0) & (bc_col < x0 + nx)
    return (sub_idx, rates[inside], permanent[inside], np.zeros(int(on.sum()), dtype=bc_chip.dtype),
            bc_col[on] - x0, bc_extra[on])


def _inject_crs(
    *, rng: np.random.Generator, n: int, nlayers: int, shape: tuple[int, int], border: int,
    pixel_size: float, depletion: float, mpv: float, diffusion: tuple[float, float], threshold: float,
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """Charge of ``n`` CR tracks on ``nlayers`` images of ``shape``.

    Returns
    -------
    flat : int64 array
        Flat index into (nlayers, rows, cols) of each charge entry.
    charge : float32 array
        Electrons of each entry.
    crs : dict of arrays
        Truth columns per CR (layer, x, y, x_mid, y_mid, n_pixels, charge, charge_total, z,
        path_um, length_px, theta_deg, phi_deg).
    owner : int array
        CR index of each entry.
    """
    ny, nx = shape
    # directions: cos-weighted through the plane, uniform azimuth
    cos_t = np.sqrt(rng.random(n))
    cos_t = np.maximum(cos_t, 1e-6)
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    length = np.minimum(depletion / pixel_size * tan_t, MAX_TRACK_PIXELS)
    path_um = np.sqrt(depletion**2 + (length * pixel_size) ** 2)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    layer = rng.integers(0, nlayers, n)
    x_mid = rng.uniform(border - 0.5, nx - border - 0.5, n)
    y_mid = rng.uniform(border - 0.5, ny - border - 0.5, n)
    # particle species and the Landau-like deposit
    species = rng.random(n)
    z = np.where(species < 0.87, 1, np.where(species < 0.99, 2, rng.integers(3, 27, n)))
    moyal = -np.log(np.maximum(rng.standard_normal(n) ** 2, 1e-300))
    q_total = mpv * path_um * z.astype(np.float64) ** 2 * np.clip(1.0 + LANDAU_WIDTH * moyal, 0.3, 50.0)
    # release points along each track
    k = 1 + np.ceil(length * POINTS_PER_PIXEL).astype(np.int64)
    owner = np.repeat(np.arange(n), k)
    first = np.cumsum(k) - k
    j = np.arange(owner.size) - first[owner]
    frac = (j + 0.5) / k[owner] - 0.5  # -0.5 .. 0.5 along the track
    dx, dy = length * np.cos(phi), length * np.sin(phi)
    x = x_mid[owner] + frac * dx[owner]
    y = y_mid[owner] + frac * dy[owner]
    downward = rng.random(n) < 0.5
    depth = np.where(downward[owner], frac + 0.5, 0.5 - frac)  # 0 front .. 1 back
    sigma = (diffusion[0] + (diffusion[1] - diffusion[0]) * depth) / pixel_size
    lumps = rng.gamma(4.0, size=owner.size)
    lumps /= np.bincount(owner, lumps, minlength=n)[owner]
    q = q_total[owner] * lumps
    # 3x3 stamps of the diffused charge, separable
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    off = np.arange(-1, 2)
    inv = 1.0 / sigma[:, None]
    lo_x = (ix[:, None] + off - 0.5 - x[:, None]) * inv
    lo_y = (iy[:, None] + off - 0.5 - y[:, None]) * inv
    wx = ndtr(lo_x + inv) - ndtr(lo_x)
    wy = ndtr(lo_y + inv) - ndtr(lo_y)
    wx /= wx.sum(axis=1, keepdims=True)
    wy /= wy.sum(axis=1, keepdims=True)
    w = (q[:, None, None] * wy[:, :, None] * wx[:, None, :]).reshape(-1)
    px = (ix[:, None, None] + off[None, None, :] + 0 * off[None, :, None]).reshape(-1)
    py = (iy[:, None, None] + off[None, :, None] + 0 * off[None, None, :]).reshape(-1)
    own = np.repeat(owner, 9)
    valid = (px >= border) & (px < nx - border) & (py >= border) & (py < ny - border)
    px, py, w, own = px[valid], py[valid], w[valid], own[valid]
    flat = (layer[own] * ny + py) * nx + px
    # truth per CR: on-chip charge, centroid, pixels above threshold (dense per-CR boxes)
    charge = np.bincount(own, w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = np.bincount(own, w * px, minlength=n) / charge
        yc = np.bincount(own, w * py, minlength=n) / charge
    bx0 = np.minimum.reduceat(ix, first) - 1
    by0 = np.minimum.reduceat(iy, first) - 1
    bw = np.maximum.reduceat(ix, first) + 1 - bx0 + 1
    bh = np.maximum.reduceat(iy, first) + 1 - by0 + 1
    cells = bw * bh
    start = np.cumsum(cells) - cells
    local = start[own] + (py - by0[own]) * bw[own] + (px - bx0[own])
    box = np.bincount(local, w, minlength=int(cells.sum()))
    box_owner = np.repeat(np.arange(n), cells)
    n_pixels = np.bincount(box_owner[box > threshold], minlength=n)
    crs = dict(
        layer=layer, x=xc.astype(np.float32), y=yc.astype(np.float32),
        x_mid=x_mid.astype(np.float32), y_mid=y_mid.astype(np.float32),
        n_pixels=n_pixels.astype(np.int32), charge=charge.astype(np.float32),
        charge_total=q_total.astype(np.float32), z=z.astype(np.int16),
        path_um=path_um.astype(np.float32), length_px=length.astype(np.float32),
        theta_deg=np.degrees(np.arccos(cos_t)).astype(np.float32),
        phi_deg=np.degrees(phi).astype(np.float32),
    )
    return flat, w.astype(np.float32), crs, own


def _exposure_rate(instrument: InstrumentConfig, spec: FrameSpec, t_int: float):
    """Orbit samples over [EXPSTART, EXPSTART + t_int] and the rate model on them."""
    t = sample_times(expstart=spec.expstart, expend=spec.expstart + t_int / 86400.0, max_step=30.0)
    lat, lon, alt = hst_positions(elements=spec.elements, mjd=t)
    fac = saa_factor(lat, lon)
    rate = cr_rate(mjd=t, lat=lat, lon=lon)
    return t, lat, lon, alt, fac, rate


def _arrivals(rng: np.random.Generator, t: np.ndarray, rate: np.ndarray, n: int) -> np.ndarray:
    """``n`` arrival times (s after t[0]) distributed as the piecewise-linear ``rate``(t)."""
    sec = (t - t[0]) * 86400.0
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(sec))])
    if cum[-1] <= 0:
        return rng.uniform(0.0, sec[-1], n)
    return np.interp(rng.random(n) * cum[-1], cum, sec)


def simulate_frame(*, instrument: InstrumentConfig, spec: FrameSpec) -> SimulatedFrame:
    """Pixels and truth of one frame (deterministic in ``spec``).

    See the module docstring for the physics. Runs in about a second for a full WFC3/UVIS frame.
    """
    sim = _sim(instrument)
    rng = np.random.default_rng(np.random.SeedSequence(
        entropy=spec.seed[0], spawn_key=(zlib.crc32(instrument.name.encode()), _TAGS["frame"], *spec.seed[1:])))
    ny, nx = spec.shape
    ir = instrument.kind == "ir"
    nchips = _n_chips(instrument, spec)
    border = instrument.border if ir else 0
    sci_pixels = nchips * (ny - 2 * border) * (nx - 2 * border)
    area = sci_pixels * (instrument.pixel_size * 1e-4) ** 2  # cm^2
    t_int = instrument.integration_time(exptime=spec.exptime, flashdur=spec.flashdur)
    t, lat, lon, alt, fac, rate = _exposure_rate(instrument, spec, t_int)
    sec = (t - t[0]) * 86400.0
    mean_rate = float(trapezoid(rate, sec) / sec[-1]) if sec[-1] > 0 else float(rate[0])
    n_expected = mean_rate * area * t_int
    n_cr = int(rng.poisson(n_expected))
    threshold = truth_threshold(instrument)
    years = _years_since(instrument, spec.expstart)
    dark = sim.dark_current * (1.0 + sim.dark_growth * years)  # e-/s
    gain = spec.ccdgain
    arrival = _arrivals(rng, t, rate, n_cr)
    if ir:
        nsamp = spec.nsamp
        read_times = np.arange(nsamp) * spec.sample_time
        # read (time order) in which each CR shows: the first read after its arrival
        read_of = np.clip(np.searchsorted(read_times, arrival, side="left"), 1, nsamp - 1)
        layers = nsamp - 1
    else:
        layers = nchips
    flat, charge, crs, owner = _inject_crs(
        rng=rng, n=n_cr, nlayers=1 if ir else nchips, shape=(ny, nx), border=border,
        pixel_size=instrument.pixel_size, depletion=instrument.depletion_thickness,
        mpv=sim.mpv_per_micron, diffusion=(sim.diffusion_min, sim.diffusion_max), threshold=threshold,
    )
    npix = ny * nx
    if ir:
        flat = flat + (read_of[owner] - 1).astype(np.int64) * npix  # layer 0 -> interval of the read
    cr_image = np.zeros(layers * npix, dtype=np.float32)
    np.add.at(cr_image, flat, charge)
    cr_image = cr_image.reshape(layers, ny, nx)
    # dark current, hot pixels, bad columns (extra dark rates, e-/s)
    hot_idx, hot_rates, hot_perm, bc_chip, bc_col, bc_extra = _defects(instrument, spec, nchips)
    dq_base = np.zeros((nchips, ny, nx), dtype=np.int16)
    dq_base.reshape(-1)[hot_idx[hot_perm]] |= 16
    dq_base[bc_chip, :, bc_col] |= instrument.dq_bad
    extra_idx = np.concatenate([hot_idx, ((bc_chip[:, None] * ny + np.arange(ny)[None, :]) * nx
                                          + bc_col[:, None]).reshape(-1)])
    extra_rate = np.concatenate([hot_rates, np.repeat(bc_extra, ny)])
    # a pixel drawn twice (a hot pixel on a bad column, a new hot pixel on an old one) adds its rates
    extra_idx, inverse = np.unique(extra_idx, return_inverse=True)
    extra_rate = np.bincount(inverse, weights=extra_rate, minlength=extra_idx.size)
    rn_cols = _readnoise_columns(instrument, spec, nchips)  # (nchips, 1, nx) e-
    full = min(sim.full_well, sim.adc_max * gain)
    if border:
        inner = np.zeros((ny, nx), dtype=bool)
        inner[border:ny - border, border:nx - border] = True
    if not ir:
        darktime = spec.exptime + spec.flashdur
        lam = dark * darktime + spec.flash_level
        signal = _poisson_uniform(rng, lam, (nchips, ny, nx))
        signal.reshape(-1)[extra_idx] += rng.poisson(extra_rate * darktime).astype(np.float32)
        signal += cr_image
        noise = rng.standard_normal((nchips, ny, nx), dtype=np.float32)
        noise *= rn_cols
        signal += noise
        dq = dq_base
        sat = signal > full
        if sat.any():
            signal[sat] = full
            dq[sat] |= sim.dq_saturated
        err = np.maximum(signal, 0.0)
        err += rn_cols**2
        np.sqrt(err, out=err)
        if not instrument.bunit.upper().startswith("ELECTRON"):
            signal /= np.float32(gain)
            err /= np.float32(gain)
        elif sim.dn_frames:  # DN: each pixel by the gain of the amplifier that read it
            gain_cols = _amp_columns(instrument, spec, nchips, spec.amp_gains, spec.ccdgain, as_read=True)
            signal /= gain_cols
            err /= gain_cols
        n_rs = 0
        if spec.reed_solomon:
            lost = _reed_solomon_pixels(instrument, spec, nchips)
            n_rs = int(lost.size)
            signal.reshape(-1)[lost] = 0.0  # the fill value
            err.reshape(-1)[lost] = 0.0
            dq.reshape(-1)[lost] |= np.int16(DQ_REED_SOLOMON)
        sci = signal
        crs_chip = (instrument.chips[0] + crs["layer"]).astype(np.int16) if nchips > 1 else np.full(
            n_cr, instrument.chips[0], np.int16)
        crs_read = np.full(n_cr, -1, np.int16)
        dark_time = darktime
    else:
        nsamp = spec.nsamp
        dt = spec.sample_time
        incr = _poisson_uniform(rng, dark * dt, (nsamp - 1, ny, nx))
        extra_counts = rng.poisson(np.broadcast_to(extra_rate * dt, (nsamp - 1, extra_rate.size)))
        incr.reshape(nsamp - 1, -1)[:, extra_idx % npix] += extra_counts.astype(np.float32)
        if border:
            incr *= inner
        incr += cr_image
        total = np.cumsum(incr, axis=0)
        noise = rng.standard_normal((nsamp, ny, nx), dtype=np.float32)
        noise *= np.float32(sim.read_noise)
        counts = np.zeros((nsamp, ny, nx), dtype=np.float32)
        counts[1:] = total + noise[1:] - noise[0]
        dq = np.empty((nsamp, ny, nx), dtype=np.int16)
        dq[:] = dq_base[0]
        # the total only grows (Poisson and CR increments are >= 0): saturated from the first
        # read above the full well on
        if (total[-1] > full).any():
            sat = np.zeros((nsamp, ny, nx), dtype=bool)
            sat[1:] = total > full
            counts[sat] = full
            dq[sat] |= sim.dq_saturated
        # the CR bit from the read of the hit on: cumulative OR over the reads in time order
        hit = np.zeros((ny, nx), dtype=bool)
        for k in range(1, nsamp):
            hit |= cr_image[k - 1] > threshold
            dq[k] |= hit.astype(np.int16) * np.int16(instrument.dq_cr)
        sci = np.zeros((nsamp, ny, nx), dtype=np.float32)
        err = np.empty((nsamp, ny, nx), dtype=np.float32)
        err[0] = sim.read_noise
        var0 = np.float32(2.0 * sim.read_noise**2)
        for k in range(1, nsamp):  # a loop over reads, each step vectorised over the pixels
            inv_t = np.float32(1.0 / read_times[k])
            np.multiply(counts[k], inv_t, out=sci[k])
            np.sqrt(var0 + np.maximum(counts[k], 0.0), out=err[k])
            err[k] *= inv_t
        if not instrument.bunit.upper().startswith("ELECTRON"):
            sci /= np.float32(gain)
            err /= np.float32(gain)
        crs_chip = np.full(n_cr, instrument.chips[0], np.int16)
        crs_read = read_of.astype(np.int16)
        dark_time = spec.exptime
    # mean position over the exposure itself (EXPSTART..EXPEND, as the results store defines it)
    exp_lat, exp_lon, exp_alt = hst_positions(
        elements=spec.elements, mjd=sample_times(expstart=spec.expstart, expend=spec.expend))
    order = np.lexsort((crs["x"], crs["y"], crs_chip, arrival)) if n_cr else np.zeros(0, np.int64)
    crs_out = {
        "chip": crs_chip[order], "read": crs_read[order], "time_s": arrival[order].astype(np.float32),
        **{k: v[order] for k, v in crs.items() if k != "layer"},
    }
    frame = {
        "obs_id": spec.obs_id, "instrument": instrument.name, "month": spec.month,
        "set_index": spec.set_index, "frame_index": spec.frame_index, "set_size": spec.set_size,
        "expstart": spec.expstart, "expend": spec.expend, "exptime": spec.exptime,
        "flashdur": spec.flashdur, "integration_time": t_int, "area_cm2": area, "n_cr": n_cr,
        "n_expected": n_expected, "rate_true": n_cr / t_int / area if t_int > 0 else math.nan,
        "rate_expected": mean_rate, "solar_modulation": float(np.mean(solar_modulation(t))),
        "saa_factor_mean": float(trapezoid(fac, sec) / sec[-1]) if sec[-1] > 0 else float(fac[0]),
        "saa_factor_max": float(fac.max()), "in_saa": bool(fac.max() > SAA_CONTOUR),
        "hst_lat": float(np.mean(exp_lat)), "hst_lon": circular_mean_deg(exp_lon),
        "hst_alt": float(np.mean(exp_alt)),
        "dark_current": dark, "dark_time": dark_time, "read_noise": sim.read_noise, "gain": gain,
        "threshold_e": threshold, "threshold_rule": f"{THRESHOLD_SIGMA:g} x read noise of one read",
        "n_hot": int(hot_idx.size), "nsamp": spec.nsamp, "saa_exit": spec.saa_exit,
        "saa_time": spec.saa_time,
    }
    if sim.opt_in_features:  # what the features did, and what the pipeline should do about it
        frame.update(_feature_truth(instrument, spec, n_rs=0 if ir else n_rs))
    return SimulatedFrame(sci=sci, err=err, dq=dq, crs=crs_out, frame=frame, cr_charge=cr_image)


def _n_chips(instrument: InstrumentConfig, spec: FrameSpec) -> int:
    """Chips (imsets) of a frame: 1 for IR ramps and subarrays, else the instrument's."""
    return 1 if instrument.kind == "ir" or spec.subarray else len(instrument.chips)


def _readnoise_columns(instrument: InstrumentConfig, spec: FrameSpec, nchips: int) -> np.ndarray:
    """Read noise (e-) of each column of each chip, shape (nchips, 1, cols)."""
    return _amp_columns(instrument, spec, nchips, spec.amp_readnoise, _sim(instrument).read_noise)


def _amp_columns(instrument: InstrumentConfig, spec: FrameSpec, nchips: int, values: Sequence[float],
                 default: float, *, as_read: bool = False) -> np.ndarray:
    """A per-amplifier quantity (``values`` of amplifiers A-D, 0 where unused: ``default``) for
    each column of each chip, shape (nchips, 1, cols), float32.

    Two-chip CCDs: CCDCHIP 1 is read by A (left half) and B (right half), CCDCHIP 2 by C and D.
    The halves meet at the chip's physical middle column, ``chip_shape[1] / 2 - origin[0]`` in
    the array's own columns (clipped to the array), as :mod:`hstcosmicrays.frames` reads them,
    for a subarray and, with ``as_read`` (the gains of DN frames), for a full frame too: a full
    frame simulated narrower than the chip (the ``shape`` argument) holds the chip's first
    columns, all read by the left amplifier. Without ``as_read`` a full frame's halves meet at
    half the simulated width (the read noise, as it always was: the same at full width). One-chip
    CCDs: the amplifier of CCDAMP everywhere.
    """
    ny, nx = spec.shape
    out = np.full((nchips, 1, nx), default, dtype=np.float32)
    amp = dict(zip("ABCD", values))
    if instrument.kind == "ccd" and len(instrument.chips) == 2:
        ccdchips = (spec.ccdchip,) if spec.subarray else instrument.ccdchip
        if spec.subarray or as_read:
            split = min(max(instrument.chip_shape[1] // 2 - spec.origin[0], 0), nx)
        else:
            split = nx // 2
        for i, ccdchip in enumerate(ccdchips):
            left, right = ("A", "B") if ccdchip == 1 else ("C", "D")
            out[i, 0, :split] = amp[left] or default
            out[i, 0, split:] = amp[right] or default
    elif instrument.kind == "ccd" and spec.ccdamp:
        out[:] = amp[spec.ccdamp[0]] or default
    return out


def _reed_solomon_pixels(instrument: InstrumentConfig, spec: FrameSpec, nchips: int) -> np.ndarray:
    """Flat indices into (chips, rows, cols) of the pixels lost to Reed-Solomon decoding errors.

    One to three runs of consecutive pixels in readout order (row after row of one chip), each
    a quarter of a row to four rows long, at random places (a random stream of the frame's own).
    """
    ny, nx = spec.shape
    rng = _rng(spec.seed[0], instrument, "rs", *spec.seed[1:])
    n_runs = int(rng.integers(1, 4))
    chip = rng.integers(0, nchips, n_runs)
    length = np.minimum(rng.integers(max(nx // 4, 1), 4 * nx + 1, n_runs), ny * nx)
    first = (rng.random(n_runs) * (ny * nx - length + 1)).astype(np.int64)
    run = np.repeat(np.arange(n_runs), length)
    offset = np.arange(run.size) - np.repeat(np.cumsum(length) - length, length)
    return np.unique(chip[run] * (ny * nx) + first[run] + offset)


def _feature_truth(instrument: InstrumentConfig, spec: FrameSpec, *, n_rs: int) -> dict:
    """Truth columns of the opt-in features (FRAME rows; only when one of them is on).

    ``subarray``, ``ccdchip`` (of a subarray; 0 for a full frame), ``ltv1``, ``ltv2`` (the
    header's LTV1/LTV2: the subarray's column and row on its chip are ``x - ltv1``,
    ``y - ltv2``), ``bunit`` (of the FLT's SCI), ``rs_pixels`` (pixels with DQ 2) and
    ``pipeline_exclusion``: why the pipeline leaves the frame out (stage ``select``):
    ``subarray`` (``crreject.group_stacks`` without ``allow_subarrays``, checked first),
    ``reed_solomon`` (``crreject.screen_frame``), or empty when it is measured (unless its
    CR-SPLIT partners are all left out).
    """
    exclusion = "subarray" if spec.subarray else ("reed_solomon" if n_rs else "")
    return {
        "subarray": bool(spec.subarray), "ccdchip": int(spec.ccdchip),
        "ltv1": _ltv(spec)[0], "ltv2": _ltv(spec)[1],
        "bunit": _file_bunit(instrument), "rs_pixels": int(n_rs), "pipeline_exclusion": exclusion,
    }


def _ltv(spec: FrameSpec) -> tuple[float, float]:
    """LTV1, LTV2 of a frame: minus the 0-based column and row of its first pixel on the chip
    (a subarray's ``origin``; 0, 0 for a full frame), never -0.0."""
    return float(-spec.origin[0]) + 0.0, float(-spec.origin[1]) + 0.0


def _file_bunit(instrument: InstrumentConfig) -> str:
    """BUNIT of the science arrays written: the instrument's, or ``COUNTS`` (DN) for a CCD in
    electrons with the opt-in ``dn_frames``."""
    sim = instrument.simulation
    if sim is not None and sim.dn_frames and instrument.bunit.upper().startswith("ELECTRON"):
        return BUNIT_COUNTS
    return instrument.bunit


# --------------------------------------------------------------------------------------------
# files


def _iso(mjd: float) -> tuple[str, str]:
    d = _dt.datetime(1858, 11, 17) + _dt.timedelta(seconds=round(mjd * 86400.0))
    return d.strftime("%Y-%m-%d"), d.strftime("%H:%M:%S")


def _saa_exit_text(mjd: float) -> str:
    if not math.isfinite(mjd):
        return ""
    d = _dt.datetime(1858, 11, 17) + _dt.timedelta(seconds=round(mjd * 86400.0))
    return f"{d.year:04d}.{d.timetuple().tm_yday:03d}:{d.strftime('%H:%M:%S')}"


def _product_suffixes(instrument: InstrumentConfig) -> tuple[str, ...]:
    return tuple(s.upper() for s in instrument.products)


def _filename(obs_id: str, suffix: str) -> str:
    return f"{obs_id}_{suffix.lower()}.fits"


def _primary_cards(instrument: InstrumentConfig, spec: FrameSpec, suffix: str, nextend: int) -> list:
    sim = _sim(instrument)
    date_obs, time_obs = _iso(spec.expstart)
    kind = instrument.kind
    cards = [
        ("NEXTEND", nextend, "Number of standard extensions"),
        ("FILENAME", _filename(spec.obs_id, suffix), "name of file"),
        ("FILETYPE", {"SPT": "SPT", "SHM": "SHP", "C1M": "DQ"}.get(suffix, "SCI"), "type of data found in data file"),
        ("TELESCOP", "HST", "telescope used to acquire data"),
        ("INSTRUME", instrument.instrume, "identifier for instrument used to acquire data"),
        ("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        ("ROOTNAME", spec.obs_id.upper(), "rootname of the observation set"),
        ("IMAGETYP", "DARK", "type of exposure identifier"),
        ("PRIMESI", instrument.instrume, "instrument designated as prime"),
        ("TARGNAME", "DARK", "proposer's target name"),
        ("RA_TARG", spec.ra, "right ascension of the target (deg) (J2000)"),
        ("DEC_TARG", spec.dec, "declination of the target (deg) (J2000)"),
        ("PROPOSID", spec.proposid, "PEP proposal identifier"),
        ("LINENUM", f"{spec.set_index + 1:02d}.{spec.frame_index + 1:03d}", "proposal logsheet line number"),
        ("OBSTYPE", "IMAGING", "observation type - imaging or spectroscopic"),
        ("OBSMODE", "MULTIACCUM" if kind == "ir" else "ACCUM", "operating mode"),
        ("DATE-OBS", date_obs, "UT date of start of observation (yyyy-mm-dd)"),
        ("TIME-OBS", time_obs, "UT time of start of observation (hh:mm:ss)"),
        ("EXPSTART", spec.expstart, "exposure start time (Modified Julian Date)"),
        ("EXPEND", spec.expend, "exposure end time (Modified Julian Date)"),
        ("EXPTIME", spec.exptime, "exposure duration (seconds)--calculated"),
        ("TEXPTIME", spec.exptime, "total exposure time (seconds)"),
        ("DARKTIME", spec.exptime + spec.flashdur, "dark time (seconds)"),
        ("EXPFLAG", "NORMAL", "Exposure interruption indicator"),
        ("QUALCOM1", "", "data quality comment 1"),
        ("QUALITY", "", "data quality summary"),
    ]
    if kind != "wfpc2":
        cards.append(("DETECTOR", instrument.detector, "detector in use"))
    if instrument.instrume.upper() == "NICMOS":
        cards.append(("CAMERA", int(instrument.detector) if instrument.detector.isdigit() else 0, "camera in use"))
    if kind == "ir":
        cards += [
            ("SUBARRAY", False, "data from a subarray (T) or full frame (F)"),
            ("SAMP_SEQ", f"STEP{int(spec.sample_time)}", "MultiAccum exposure time sequence name"),
            ("NSAMP", spec.nsamp, "number of MULTIACCUM samples"),
            ("SAMPZERO", 0.0, "sample time of the zeroth read (sec)"),
            ("FILTER", "BLANK", "element selected from filter wheel"),
        ]
    else:
        cards.append(("SUBARRAY", bool(spec.subarray), "data from a subarray (T) or full frame (F)"))
        if spec.subarray:  # size and centre of the subarray (1-based pixels of its chip)
            ny, nx = spec.shape
            cards += [
                ("SIZAXIS1", nx, "subarray axis1 size in unbinned detector pixels"),
                ("SIZAXIS2", ny, "subarray axis2 size in unbinned detector pixels"),
                ("CENTERA1", spec.origin[0] + nx // 2 + 1, "subarray axis1 center pt in unbinned dect. pix"),
                ("CENTERA2", spec.origin[1] + ny // 2 + 1, "subarray axis2 center pt in unbinned dect. pix"),
            ]
        cards.append(("CRSPLIT", spec.set_size, "number of cosmic ray split exposures"))
        if kind == "ccd":
            cards += [
                ("CCDAMP", spec.ccdamp, "CCD amplifier read out configuration"),
                ("CCDGAIN", spec.ccdgain, "commanded gain of CCD"),
                ("BINAXIS1", 1, "axis1 data bin size in unbinned detector pixels"),
                ("BINAXIS2", 1, "axis2 data bin size in unbinned detector pixels"),
            ]
        if instrument.instrume.upper() == "ACS":
            cards += [("FILTER1", "CLEAR1L", "element selected from filter wheel 1"),
                      ("FILTER2", "CLEAR2L", "element selected from filter wheel 2")]
        elif instrument.instrume.upper() == "STIS":
            cards += [("OPT_ELEM", "MIRVIS", "optical element in use"),
                      ("APERTURE", "50CCD", "aperture name")]
        elif kind == "wfpc2":
            cards += [("FILTNAM1", "", "first filter name"), ("FILTNAM2", "", "second filter name"),
                      ("MODE", "FULL", "instr. mode: FULL (full res.), AREA (area int.)"),
                      ("SERIALS", "OFF", "serial clocks: ON, OFF")]
        else:
            cards.append(("FILTER", "F218W" if instrument.instrume.upper() == "WFC3" else "CLEAR", "element selected from filter wheel"))
        if kind == "ccd":
            cards += [
                ("FLASHDUR", spec.flashdur, "Exposure time in seconds: 0.1 to 409.5"),
                ("FLASHCUR", "LOW" if spec.flashdur > 0 else "OFF", "Post flash current (zero, low, medium, high)"),
                ("FLASHSTA", "SUCCESSFUL" if spec.flashdur > 0 else "NOT PERFORMED", "Status: SUCCESSFUL, ABORTED, NOT PERFORMED"),
                ("SHUTRPOS", "A", "Shutter position: A or B"),
            ]
    # gain and read noise keywords
    gk, rk = instrument.gain_keywords, instrument.readnoise_keywords
    amp_style = len(gk) == 4 and all(k[-1] == a for k, a in zip(gk, "ABCD"))
    if amp_style:
        for k, v in zip(gk, spec.amp_gains):
            cards.append((k, v, f"calibrated gain for amplifier {k[-1]}"))
    else:
        for k in gk:
            cards.append((k, spec.ccdgain, "analog to digital gain (electrons/DN)"))
    ir_factor = math.sqrt(2.0) if kind == "ir" else 1.0  # IR headers give the CDS noise
    if len(rk) == 4 and all(k[-1] == a for k, a in zip(rk, "ABCD")):
        for k, v in zip(rk, spec.amp_readnoise):
            cards.append((k, round(v * ir_factor, 3), f"calibrated read noise for amplifier {k[-1]}"))
    else:
        # one keyword: the read noise of the amplifier that read the pixels (as in
        # _readnoise_columns), so that readers of the header see the noise in the data
        rn_one = sim.read_noise
        if kind == "ccd" and len(instrument.chips) == 1 and spec.ccdamp:
            rn_one = dict(zip("ABCD", spec.amp_readnoise)).get(spec.ccdamp[0]) or sim.read_noise
        for k in rk:
            cards.append((k, round(rn_one * ir_factor, 3), "read noise (electrons)"))
    tabs = _REFFILES.get(instrument.name)
    if tabs:
        cards += [("CRREJTAB", tabs[0], "cosmic ray rejection parameters"),
                  ("CCDTAB", tabs[1], "detector calibration parameters")]
    if kind != "wfpc2":
        cards += [
            ("DARKCORR", "OMIT", "Subtract dark image"),
            ("CRCORR", "OMIT", "combine observations to reject cosmic rays"),
        ]
    cards += [
        ("SAA_EXIT", _saa_exit_text(spec.saa_exit), "time of last exit from SAA contour level 2"),
        ("SAA_TIME", int(spec.saa_time) if math.isfinite(spec.saa_time) else 0, "seconds since last exit from SAA contour"),
        ("SIMULATE", True, "simulated by hstcosmicrays"),
        ("SIMAREA", round(_sim_area(instrument, spec), 6), "simulated detector area (cm**2)"),
    ]
    return cards


def _sim_area(instrument: InstrumentConfig, spec: FrameSpec) -> float:
    ny, nx = spec.shape
    if instrument.kind == "ir":
        b = instrument.border
        return (ny - 2 * b) * (nx - 2 * b) * (instrument.pixel_size * 1e-4) ** 2
    return _n_chips(instrument, spec) * ny * nx * (instrument.pixel_size * 1e-4) ** 2


def _wcs_cards(instrument: InstrumentConfig, spec: FrameSpec, chip_number: int, index: int) -> list:
    sim = _sim(instrument)
    ny, nx = spec.shape
    scale = sim.plate_scale
    if instrument.kind == "wfpc2" and chip_number == 1:
        scale = 0.0455  # the Planetary Camera
    s = scale / 3600.0
    th = math.radians(spec.orientat)
    # chips laid out side by side along the image y axis (WFPC2: an L of four)
    offsets = {0: (0.0, 0.0)}
    nchips = 1 if instrument.kind == "ir" else len(instrument.chips)
    if nchips == 2:
        offsets = {0: (0.0, -(ny / 2 + 20) * scale), 1: (0.0, (ny / 2 + 20) * scale)}
    elif nchips == 4:
        h = 40.0
        offsets = {0: (h, h), 1: (-h, h), 2: (-h, -h), 3: (h, -h)}
    ox, oy = offsets.get(index, (0.0, 0.0))
    ltv1, ltv2 = _ltv(spec)
    east = (-ox * math.cos(th) + oy * math.sin(th)) / 3600.0
    north = (ox * math.sin(th) + oy * math.cos(th)) / 3600.0
    dec = float(np.clip(spec.dec + north, -89.9, 89.9))
    ra = (spec.ra + east / max(math.cos(math.radians(dec)), 1e-3)) % 360.0
    return [
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", nx / 2.0, "x-coordinate of reference pixel"),
        ("CRPIX2", ny / 2.0, "y-coordinate of reference pixel"),
        ("CRVAL1", round(ra, 9), "first axis value at reference pixel"),
        ("CRVAL2", round(dec, 9), "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN", "the coordinate type for the second axis"),
        ("CD1_1", -s * math.cos(th), "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", s * math.sin(th), "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", s * math.sin(th), "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", s * math.cos(th), "partial of second axis coordinate w.r.t. y"),
        ("LTV1", ltv1, "offset in X to subsection start"),
        ("LTV2", ltv2, "offset in Y to subsection start"),
        ("LTM1_1", 1.0, "reciprocal of sampling rate in X"),
        ("LTM2_2", 1.0, "reciprocal of sampling rate in Y"),
        ("ORIENTAT", round(spec.orientat, 4), "position angle of image y axis (deg. e of n)"),
        ("RA_APER", round(ra, 9), "RA of aperture reference position"),
        ("DEC_APER", round(dec, 9), "Declination of aperture reference position"),
    ]


def _header(cards: list) -> fits.Header:
    h = fits.Header()
    for key, value, comment in cards:
        h.append((key, value, comment), end=True)
    return h


def _checksum_cards() -> list:
    return [("CHECKSUM", "0" * 16, "HDU checksum"), ("DATASUM", "0", "data unit checksum")]


def _layout(instrument: InstrumentConfig, spec: FrameSpec, suffix: str) -> list[tuple[str, fits.Header, Optional[tuple], Optional[str]]]:
    """(kind, header, data shape, data key) of each HDU of one product; kind 'primary' or 'image'.

    The data key names the array of :class:`SimulatedFrame` (``sci``/``err``/``dq`` with an
    index) that fills the HDU, or None for header-only HDUs.
    """
    kind = instrument.kind
    ny, nx = spec.shape
    out = []
    if suffix in ("SPT", "SHM"):
        cards = _primary_cards(instrument, spec, suffix, 0 if suffix == "SHM" else 1)
        cards = [c for c in cards if c[0] not in ("QUALCOM1", "QUALITY", "DARKCORR", "CRCORR", "CRREJTAB", "CCDTAB")]
        cards += [("PSTRTIME", _saa_exit_text(spec.expstart), "predicted obs. start time (yyyy.ddd:hh:mm:ss)"),
                  ("PSTPTIME", _saa_exit_text(spec.expend), "predicted obs. stop time (yyyy.ddd:hh:mm:ss)")]
        cards += [(k, v, c) for k, v, c in spec.elements.to_cards()]
        out.append(("primary", _header(cards + _checksum_cards()), None, None))
        if suffix == "SPT":
            ext = [("EXTNAME", "UDL", "extension name"), ("EXTVER", 1, "extension version number"),
                   ("ROOTNAME", spec.obs_id.upper(), "rootname of the observation set")]
            out.append(("image", _header(ext + _checksum_cards()), (1, 2048), "udl"))
        return out
    if kind == "ir":
        nsamp = spec.nsamp
        out.append(("primary", _header(_primary_cards(instrument, spec, suffix, 5 * nsamp) + _checksum_cards()), None, None))
        for extver in range(1, nsamp + 1):
            k = nsamp - extver  # time-order read index
            t_k = k * spec.sample_time
            routtime = spec.expstart + t_k / 86400.0
            common = [("EXTVER", extver, "extension version number"),
                      ("ROOTNAME", spec.obs_id.upper(), "rootname of the observation set")]
            samp = [("SAMPNUM", k, "MULTIACCUM sample number"),
                    ("SAMPTIME", t_k, "total integration time (sec)"),
                    ("DELTATIM", spec.sample_time if k > 0 else 0.0, "sample integration time (sec)"),
                    ("ROUTTIME", routtime, "UT time of array readout (MJD)")]
            for name, key in (("SCI", "sci"), ("ERR", "err"), ("DQ", "dq")):
                cards = [("EXTNAME", name, "extension name")] + common
                if name != "DQ":
                    cards.append(("BUNIT", instrument.bunit, "brightness units"))
                cards += samp + _wcs_cards(instrument, spec, 1, 0)
                out.append(("image", _header(cards + _checksum_cards()), (ny, nx), f"{key}:{k}"))
            for name, value in (("SAMP", 1 if k > 0 else 0), ("TIME", t_k)):
                cards = [("EXTNAME", name, "extension name")] + common + [
                    ("PIXVALUE", value, "values of pixels in constant array"),
                    ("NPIX1", nx, "length of constant array axis 1"),
                    ("NPIX2", ny, "length of constant array axis 2"),
                ]
                if name == "TIME":
                    cards.append(("BUNIT", "SECONDS", "brightness units"))
                out.append(("image", _header(cards + _checksum_cards()), None, None))
        return out
    if kind == "wfpc2":
        nchips = len(instrument.chips)
        cards = _primary_cards(instrument, spec, suffix, nchips)
        out.append(("primary", _header(cards + _checksum_cards()), None, None))
        name, key = ("SCI", "sci") if suffix == "C0M" else ("DQ", "dq")
        for i, (extver, chip) in enumerate(zip(instrument.chips, instrument.ccdchip)):
            cards = [("EXTNAME", name, "extension name"), ("EXTVER", extver, "extension version number"),
                     ("DETECTOR", chip, "CCD detector (1 PC, 2-4 WF)"),
                     ("ROOTNAME", spec.obs_id.upper(), "rootname of the observation set")]
            if name == "SCI":
                cards.append(("BUNIT", instrument.bunit, "brightness units"))
            cards += _wcs_cards(instrument, spec, chip, i)
            out.append(("image", _header(cards + _checksum_cards()), (ny, nx), f"{key}:{i}"))
        return out
    # CCD FLT
    chips = _flt_chips(instrument, spec)
    nchips = len(chips)
    out.append(("primary", _header(_primary_cards(instrument, spec, suffix, 3 * nchips) + _checksum_cards()), None, None))
    for i, (extver, ccdchip) in enumerate(chips):
        for name, key in (("SCI", "sci"), ("ERR", "err"), ("DQ", "dq")):
            cards = [("EXTNAME", name, "extension name"), ("EXTVER", extver, "extension version number"),
                     ("ROOTNAME", spec.obs_id.upper(), "rootname of the observation set"),
                     ("CCDCHIP", ccdchip, "CCD chip (1 or 2)")]
            if name != "DQ":
                cards.append(("BUNIT", _file_bunit(instrument), "brightness units"))
            cards += _wcs_cards(instrument, spec, ccdchip, i)
            out.append(("image", _header(cards + _checksum_cards()), (ny, nx), f"{key}:{i}"))
    return out


def _flt_chips(instrument: InstrumentConfig, spec: FrameSpec) -> list[tuple[int, int]]:
    """(EXTVER, CCDCHIP) of the imsets of a CCD FLT: the instrument's chips; a subarray's one
    chip is EXTVER 1 (the first of ``instrument.chips``) with the CCDCHIP of the chip it is on."""
    if spec.subarray:
        return [(int(instrument.chips[0]), int(spec.ccdchip))]
    return list(zip(instrument.chips, instrument.ccdchip))


#: Keywords of one exposure: in the primary header of a file of one exposure, in the SCI header
#: of its imset in a set's file (whose primary header gives the totals TEXPTIME, TEXPSTRT, TEXPEND).
_EXPOSURE_KEYWORDS = ("DATE-OBS", "TIME-OBS", "EXPSTART", "EXPEND", "EXPTIME", "DARKTIME", "SAA_EXIT", "SAA_TIME")


def _set_primary_cards(instrument: InstrumentConfig, ds: DatasetSpec, suffix: str, nextend: int) -> list:
    """Primary cards of a set's file: its first frame's, under the set's ROOTNAME and FILENAME,
    without EXPSTART, EXPEND, EXPTIME and DARKTIME (each imset's own, in its SCI header), with
    the totals TEXPTIME, TEXPSTRT and TEXPEND. DATE-OBS, TIME-OBS, SAA_EXIT and SAA_TIME are the
    first exposure's; CRSPLIT is the number of exposures."""
    out = []
    for key, value, comment in _primary_cards(instrument, ds.frames[0], suffix, nextend):
        if key in ("EXPSTART", "EXPEND", "EXPTIME", "DARKTIME"):
            continue
        if key == "ROOTNAME":
            value = ds.obs_id.upper()
        elif key == "FILENAME":
            value = _filename(ds.obs_id, suffix)
        elif key == "TEXPTIME":
            out += [("TEXPTIME", ds.exptime, comment),
                    ("TEXPSTRT", ds.expstart, "start time of the first exposure (MJD)"),
                    ("TEXPEND", ds.expend, "end time of the last exposure (MJD)")]
            continue
        out.append((key, value, comment))
    return out


def _set_layout(instrument: InstrumentConfig, ds: DatasetSpec, suffix: str) -> list[tuple[str, fits.Header, Optional[tuple], Optional[str]]]:
    """As :func:`_layout`, for the file of a CR-SPLIT set (STIS): imset ``k`` (EXTVER
    ``chips + (k - 1) * len(chips)``) holds frame ``k - 1``, whose data keys carry it as a third
    field (``sci:<chip>:<frame>``). The SPT has one UDL extension per imset."""
    if instrument.kind != "ccd" or suffix not in ("FLT", "SPT"):
        raise ValueError(f"{instrument.name}: no {suffix} file of several exposures")
    n = len(ds.frames)
    chips = _flt_chips(instrument, ds.frames[0])
    nchips = len(chips)
    ny, nx = ds.frames[0].shape
    root = ("ROOTNAME", ds.obs_id.upper(), "rootname of the observation set")
    out = []
    if suffix == "SPT":
        cards = _set_primary_cards(instrument, ds, suffix, n)
        cards = [c for c in cards if c[0] not in ("QUALCOM1", "QUALITY", "DARKCORR", "CRCORR", "CRREJTAB", "CCDTAB")]
        cards += [("PSTRTIME", _saa_exit_text(ds.expstart), "predicted obs. start time (yyyy.ddd:hh:mm:ss)"),
                  ("PSTPTIME", _saa_exit_text(ds.expend), "predicted obs. stop time (yyyy.ddd:hh:mm:ss)")]
        cards += [(k, v, c) for k, v, c in ds.frames[0].elements.to_cards()]  # the month's orbit
        out.append(("primary", _header(cards + _checksum_cards()), None, None))
        for k in range(1, n + 1):
            ext = [("EXTNAME", "UDL", "extension name"), ("EXTVER", k, "extension version number"), root]
            out.append(("image", _header(ext + _checksum_cards()), (1, 2048), "udl"))
        return out
    out.append(("primary", _header(_set_primary_cards(instrument, ds, suffix, 3 * nchips * n) + _checksum_cards()),
                None, None))
    for f, spec in enumerate(ds.frames):
        exposure = [c for c in _primary_cards(instrument, spec, suffix, 0) if c[0] in _EXPOSURE_KEYWORDS]
        for i, (extver, ccdchip) in enumerate(chips):
            for name, key in (("SCI", "sci"), ("ERR", "err"), ("DQ", "dq")):
                cards = [("EXTNAME", name, "extension name"),
                         ("EXTVER", extver + f * nchips, "extension version number"), root,
                         ("CCDCHIP", ccdchip, "CCD chip (1 or 2)")]
                if name != "DQ":
                    cards.append(("BUNIT", _file_bunit(instrument), "brightness units"))
                if name == "SCI":
                    cards += exposure
                cards += _wcs_cards(instrument, spec, ccdchip, i)
                out.append(("image", _header(cards + _checksum_cards()), (ny, nx), f"{key}:{i}:{f}"))
    return out


def _dataset_layout(instrument: InstrumentConfig, ds: DatasetSpec, suffix: str) -> list:
    if ds.is_set:
        return _set_layout(instrument, ds, suffix)
    return _layout(instrument, ds.frames[0], suffix)


_DTYPES = {"sci": ">f4", "err": ">f4", "dq": ">i2", "udl": ">i2"}


def _hdu_size(header: fits.Header, shape: Optional[tuple], dtype: Optional[str], primary: bool) -> int:
    """Bytes of one HDU written by astropy: the header (our cards plus the structural ones astropy
    adds: SIMPLE/XTENSION, BITPIX, NAXIS, NAXISn, EXTEND (primary) or PCOUNT, GCOUNT, then END)
    padded to 2880, plus the padded data. Every card of ours fits on one 80-character line."""
    ndim = 0 if shape is None else len(shape)
    structural = (4 if primary else 5) + ndim
    head = -(-(len(header) + structural + 1) * 80 // 2880) * 2880
    data_bytes = 0 if shape is None else int(np.prod(shape)) * np.dtype(dtype).itemsize
    return head + -(-data_bytes // 2880) * 2880


def product_size(*, instrument: InstrumentConfig, spec: FrameSpec | DatasetSpec, suffix: str) -> int:
    """Exact size (bytes) of the product file ``suffix`` of ``spec`` (cheap: headers only).

    ``spec`` is a dataset (:func:`month_datasets`) or one frame, which is then a file of its own
    under its own rootname.
    """
    total = 0
    for kind, header, shape, key in _dataset_layout(instrument, _as_dataset(spec), suffix.upper()):
        dtype = _DTYPES[key.split(":")[0]] if key else None
        total += _hdu_size(header, shape, dtype, kind == "primary")
    return total


def _wanted_suffixes(instrument: InstrumentConfig, suffixes: Optional[Sequence[str]]) -> list[str]:
    """``suffixes`` in upper case; None means every product of the instrument, [] none."""
    return [s.upper() for s in (_product_suffixes(instrument) if suffixes is None else suffixes)]


def build_products(
    *, instrument: InstrumentConfig, spec: FrameSpec | DatasetSpec,
    frame: SimulatedFrame | Sequence[SimulatedFrame] | None = None,
    suffixes: Optional[Sequence[str]] = None,
) -> dict[str, fits.HDUList]:
    """The product files of one dataset as HDU lists (``{suffix: HDUList}``).

    ``spec`` is a dataset (:func:`month_datasets`) or one frame (a file of its own). ``frame``
    holds the pixels of its frames (one :class:`SimulatedFrame`, or one per frame of a dataset);
    they are simulated when not given and a science product is asked for; the SPT/SHM need only
    ``spec``.
    """
    ds = _as_dataset(spec)
    suffixes = _wanted_suffixes(instrument, suffixes)
    need_pixels = any(s not in ("SPT", "SHM") for s in suffixes)
    frames = (frame,) if isinstance(frame, SimulatedFrame) else frame
    if need_pixels and frames is None:
        frames = _simulate_frames(instrument, ds)
    out = {}
    for suffix in suffixes:
        hdus = []
        for kind, header, shape, key in _dataset_layout(instrument, ds, suffix):
            data = None
            if key == "udl":
                data = np.zeros(shape, dtype=np.int16)
            elif key:
                name, idx, *member = key.split(":")
                data = getattr(frames[int(member[0]) if member else 0], name)[int(idx)]
            if kind == "primary":
                hdus.append(fits.PrimaryHDU(data, header=header))
            else:
                hdus.append(fits.ImageHDU(data, header=header))
        out[suffix] = fits.HDUList(hdus)
    return out


def _truth_hdulist(frames: Sequence[SimulatedFrame], ds: DatasetSpec) -> fits.HDUList:
    """The truth file of a dataset: FRAME (a row per frame, ``obs_id`` the name the pipeline
    stores it under) and CRS (a row per CR; in a set's file an ``imset`` column first, 1..N,
    the row of FRAME and the imset of the FLT that hold the CR)."""
    names = ds.frame_names
    rows = [dict(f.frame, obs_id=name) for f, name in zip(frames, names)]
    cols = []
    for key, value in rows[0].items():
        values = [r[key] for r in rows]
        if isinstance(value, str):
            width = max(max(len(v) for v in values), 1)
            cols.append(fits.Column(name=key, format=f"{width}A", array=np.array(values)))
        elif isinstance(value, (bool, np.bool_)):
            cols.append(fits.Column(name=key, format="L", array=np.array(values)))
        elif isinstance(value, (int, np.integer)):
            cols.append(fits.Column(name=key, format="K", array=np.array(values, dtype=np.int64)))
        else:
            cols.append(fits.Column(name=key, format="D", array=np.array(values, dtype=np.float64)))
    frame_hdu = fits.BinTableHDU.from_columns(cols, name="FRAME")
    fmt = {np.dtype(np.float32): "E", np.dtype(np.int16): "I", np.dtype(np.int32): "J", np.dtype(np.int64): "K"}
    crs = {k: np.concatenate([np.asarray(f.crs[k]) for f in frames]) for k in frames[0].crs}
    if ds.is_set:
        counts = [len(np.asarray(f.crs["chip"])) for f in frames]
        crs = {"imset": np.repeat(np.arange(1, len(frames) + 1, dtype=np.int16), counts), **crs}
    cr_cols = [fits.Column(name=k, format=fmt[v.dtype], array=v) for k, v in crs.items()]
    crs_hdu = fits.BinTableHDU.from_columns(cr_cols, name="CRS")
    units = {"x": "pix", "y": "pix", "x_mid": "pix", "y_mid": "pix", "charge": "electron",
             "charge_total": "electron", "path_um": "micron", "length_px": "pix", "theta_deg": "deg",
             "phi_deg": "deg", "time_s": "s"}
    for i, c in enumerate(crs_hdu.columns, start=1):
        if c.name in units:
            crs_hdu.header[f"TUNIT{i}"] = units[c.name]
    first = rows[0]
    prim = fits.PrimaryHDU()
    if ds.is_set:
        prim.header["ROOTNAME"] = (ds.obs_id.upper(), "rootname of the simulated CR-SPLIT set")
    else:
        prim.header["ROOTNAME"] = (first["obs_id"].upper(), "rootname of the simulated frame")
    prim.header["THRESH"] = (first["threshold_e"], "e-: n_pixels counts pixels above this")
    prim.header["THRRULE"] = (first["threshold_rule"], "how THRESH was chosen")
    if ds.is_set:
        prim.header["CRSPLIT"] = (len(frames), "exposures: FRAME rows, CRS imset 1..CRSPLIT")
    return fits.HDUList([prim, frame_hdu, crs_hdu])


def _add_checksums(hdul: fits.HDUList) -> fits.HDUList:
    """CHECKSUM/DATASUM cards with a fixed comment (astropy's default comment is a timestamp,
    which would make the bytes depend on the time of writing)."""
    for hdu in hdul:
        hdu.add_checksum(when="HDU checksum")
    return hdul


def _to_bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    _add_checksums(hdul).writeto(buf)
    return buf.getvalue()


def _simulate_frames(instrument: InstrumentConfig, ds: DatasetSpec) -> tuple[SimulatedFrame, ...]:
    return tuple(simulate_frame(instrument=instrument, spec=f) for f in ds.frames)


def render_dataset(
    *, instrument: InstrumentConfig, spec: FrameSpec | DatasetSpec, suffixes: Optional[Sequence[str]] = None,
    truth: bool = True,
) -> dict[str, bytes]:
    """Bytes of the product files of one dataset, ``{suffix: bytes}``, plus ``"TRUTH"`` when asked.

    ``suffixes`` None gives every product of the instrument; an empty list gives none (only the
    truth, when ``truth``).

    ``spec`` is a dataset (:func:`month_datasets`) or one frame (a file of its own). The frames
    of a set are simulated in memory together (a few full frames at most).
    Deterministic: the same ``spec`` gives the same bytes.
    """
    ds = _as_dataset(spec)
    suffixes = _wanted_suffixes(instrument, suffixes)
    need_pixels = truth or any(s not in ("SPT", "SHM") for s in suffixes)
    frames = _simulate_frames(instrument, ds) if need_pixels else None
    out = {s: _to_bytes(h) for s, h in build_products(instrument=instrument, spec=ds, frame=frames, suffixes=suffixes).items()}
    if truth:
        out["TRUTH"] = _to_bytes(_truth_hdulist(frames, ds))
    return out


def write_dataset(*, instrument: InstrumentConfig, spec: FrameSpec | DatasetSpec, out_dir: Path) -> dict[str, Path]:
    """Write the products and the truth of one dataset into ``out_dir`` (created).

    ``spec`` is a dataset (:func:`month_datasets`) or one frame, which is then written as a file
    of its own under its own rootname (whatever set it belongs to). Files are written under a
    temporary name and renamed, so a file that exists is complete.

    Returns
    -------
    dict
        ``{suffix: path}`` including ``"TRUTH"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = _as_dataset(spec)
    frames = _simulate_frames(instrument, ds)
    hduls = build_products(instrument=instrument, spec=ds, frame=frames)
    hduls["TRUTH"] = _truth_hdulist(frames, ds)
    paths = {}
    for suffix, hdul in hduls.items():
        path = out_dir / _filename(ds.obs_id, suffix)
        tmp = path.with_name(path.name + ".part")
        _add_checksums(hdul).writeto(tmp, overwrite=True)
        tmp.replace(path)
        paths[suffix] = path
    return paths


def write_archive(
    *, instrument: InstrumentConfig, start: Month, stop: Month, out: Path,
    darks_per_month: Optional[int], seed: int, shape: Optional[tuple[int, int]] = None,
) -> list[Path]:
    """Write every simulated dark of ``instrument`` from ``start`` to ``stop`` (inclusive).

    Files go to ``out/mastDownload/HST/<obs_id>/`` (MAST's download layout) with the truth file
    beside the products, one directory per dataset (:func:`month_datasets`: a STIS CR-SPLIT set
    of several exposures is one).

    Months outside the instrument's active time are skipped, and so are months that have not
    ended yet (UTC), as in a pipeline run (:func:`~hstcosmicrays.intervals.month_windows`); the
    latter are named in a warning.

    Returns
    -------
    list of Path
        The dataset directories written, in time order.

    Raises
    ------
    NotADirectoryError
        ``out`` exists and is not a directory (checked before anything is written).
    ValueError
        ``stop`` is before ``start``, or no month of the window can be simulated; the message
        says why: the window is outside the instrument's active time (which it gives), or its
        months have not ended yet.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(out))
    today = utc_today()
    months = month_windows(instrument=instrument, start=start, stop=stop, today=today)
    unended = unended_months(instrument=instrument, start=start, stop=stop, today=today)
    if not months and not unended:
        raise ValueError(f"{instrument.name}: no month of {span_label(start, stop)} is in the instrument's "
                         f"active time ({active_time_label(instrument)})")
    if not months:
        verb = "has" if len(unended) == 1 else "have"
        raise ValueError(f"{instrument.name}: {span_label(unended[0], unended[-1])} {verb} not ended yet (UTC); "
                         "a month is simulated once it has ended")
    if unended:
        log.warning("%s: %s not simulated: a month is simulated once it has ended (UTC)",
                    instrument.name, span_label(unended[0], unended[-1]))
    written = []
    for month in months:
        for ds in month_datasets(instrument=instrument, month=month, seed=seed,
                                 darks_per_month=darks_per_month, shape=shape):
            d = out / "mastDownload" / "HST" / ds.obs_id
            write_dataset(instrument=instrument, spec=ds, out_dir=d)
            log.info("simulated %s (%s) in %s", ds.obs_id, month.label, d)
            written.append(d)
    return written


def read_truth(path) -> tuple["pandas.DataFrame", "pandas.DataFrame"]:  # noqa: F821
    """Truth of simulated frames: ``(frames, crs)`` DataFrames.

    Parameters
    ----------
    path : str or Path
        A ``*_truth.fits`` file, or a directory searched recursively for them.

    Returns
    -------
    frames : DataFrame
        One row per frame (columns of the ``FRAME`` extension); ``obs_id`` is the name the
        pipeline stores the frame under (:func:`frame_name`: ``<set>_<k>`` for imset ``k`` of a
        set's file).
    crs : DataFrame
        One row per CR (columns of the ``CRS`` extension) with the ``obs_id`` of its frame added
        (the ``imset`` column of a set's file is replaced by it).
    """
    import pandas as pd

    path = Path(path)
    files = sorted(path.rglob("*_truth.fits")) if path.is_dir() else [path]
    frames, crs = [], []
    for f in files:
        with fits.open(f) as hdul:
            columns = {c: _native(hdul["FRAME"].data[c]) for c in hdul["FRAME"].columns.names}
            rows = [{c: v[i] for c, v in columns.items()} for i in range(len(hdul["FRAME"].data))]
            rows = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items()} for r in rows]
            cr_table = {c: _native(hdul["CRS"].data[c]) for c in hdul["CRS"].columns.names}
        frames.extend(rows)
        names = np.array([str(r["obs_id"]).strip() for r in rows])
        imset = cr_table.pop("imset", None)
        df = pd.DataFrame(cr_table)
        df.insert(0, "obs_id", names[0] if imset is None else names[np.asarray(imset, dtype=np.int64) - 1])
        crs.append(df)
    frames_df = pd.DataFrame(frames)
    for col in ("obs_id", "instrument", "month", "threshold_rule", "bunit", "pipeline_exclusion"):
        if col in frames_df:
            frames_df[col] = frames_df[col].astype(str).str.strip()
    crs_df = pd.concat(crs, ignore_index=True) if crs else pd.DataFrame()
    return frames_df, crs_df


def _native(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "SU":
        return a
    return a.astype(a.dtype.newbyteorder("="))

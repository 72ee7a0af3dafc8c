"""Measure one frame whose DQ already carries CR flags: per-CR table, frame summary, HST orbit.

:func:`measure_frame` is the stage the pipeline calls after CR rejection; :func:`measure_file`
does the same for one file on disk (``hstcosmicrays measure FILE``).

For every chip on its own (a CR never spans two chips): label the CR pixels
(:func:`hstcosmicrays.labels.label_crs`, the instrument's reference-pixel border excluded),
measure each CR in electrons (:func:`hstcosmicrays.stats.cr_properties` with the chip's
per-pixel gain). Per frame:

.. math::

    t = \\mathrm{EXPTIME} + \\mathrm{FLASHDUR} + t_\\mathrm{readout}, \\qquad
    R = \\frac{N}{t A}, \\qquad \\sigma_R = \\frac{\\sqrt N}{t A}, \\qquad
    f_\\mathrm{hit} = \\frac{\\sum_\\mathrm{CRs} n_\\mathrm{pixels}}{N_\\mathrm{science\\ pixels}}

with :math:`N` the CRs of all chips and :math:`A` the area searched: the instrument's
``detector_area`` (cm^2) times the fraction of the detector's science pixels present in the
frame (1 for a full frame; smaller for a subarray, so that subarray rates are comparable).
:math:`f_\\mathrm{hit}` counts each pixel once: no two CRs of one image share a pixel, but the
CRs of different reads of an IR ramp may, so a ramp counts the pixels inside a counted CR of any
read (:func:`hstcosmicrays.ir.measure_ramp`).

HST positions are sampled over [EXPSTART, EXPEND] (at least one sample a minute, at least 5)
from the orbit keywords of the SPT (or SHM) header (:mod:`hstcosmicrays.orbit`); the exposure row
holds their mean latitude and altitude and circular-mean longitude. A missing or unreadable SPT
leaves the positions NaN, the orbit table empty and a message in ``FrameResult.warnings``; it
never fails the frame.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import Config, InstrumentConfig
from .frames import (
    Chip,
    FrameError,
    FrameHeader,
    companion_path,
    identify_instrument,
    imset_offset,
    pointing,
    read_chips,
    read_headers,
    saa_exit_mjd,
)
from .labels import label_crs
from .orbit import OrbitalElements, circular_mean_deg, hst_positions, sample_times
from .schema import COSMIC_RAYS, EXPOSURES, ORBIT
from .stats import cr_properties, fraction_hit, frame_rate

__all__ = ["FrameResult", "measure_frame", "frame_result", "measure_file", "orbit_samples", "month_of"]

log = logging.getLogger(__name__)

_CR_DTYPES = {c.name: c.dtype for c in COSMIC_RAYS if c.name != "exposure_index"}
_ORBIT_DTYPES = {c.name: c.dtype for c in ORBIT if c.name != "exposure_index"}
_EXPOSURE_COLUMNS = tuple(c.name for c in EXPOSURES)


@dataclass(frozen=True)
class FrameResult:
    """Everything measured on one frame, laid out as rows of the store's tables.

    Attributes
    ----------
    exposure : dict
        One value per column of ``schema.EXPOSURES``.
    cosmic_rays : dict of ndarray
        One array per column of ``schema.COSMIC_RAYS`` except ``exposure_index`` (the store
        adds it), one row per CR.
    orbit : dict of ndarray
        One array per column of ``schema.ORBIT`` except ``exposure_index``; empty arrays when
        the orbit is unknown.
    warnings : tuple of str
        What went wrong without failing the frame (e.g. no SPT file).
    """

    exposure: dict
    cosmic_rays: dict
    orbit: dict
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_cr(self) -> int:
        return int(self.exposure["n_cr"])

    def cosmic_ray_frame(self):
        """The per-CR table as a pandas DataFrame (schema column order and dtypes)."""
        import pandas as pd

        return pd.DataFrame({k: self.cosmic_rays[k] for k in _CR_DTYPES})

    def exposure_frame(self):
        """The frame summary as a one-row pandas DataFrame (text columns as str)."""
        import pandas as pd

        return pd.DataFrame({k: [self.exposure[k]] for k in _EXPOSURE_COLUMNS})

    def orbit_frame(self):
        """The HST position samples as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame({k: self.orbit[k] for k in _ORBIT_DTYPES})

    def summary_text(self, *, warnings: bool = True) -> str:
        """A short human-readable summary of the frame, ending with its warnings (``warning:
        ...`` lines) unless ``warnings`` is False (they were logged when measured)."""
        e = self.exposure
        cr = self.cosmic_rays
        lines = [
            f"{e['rootname']}  {e['date_obs']}  EXPTIME {e['exptime']:.1f} s  "
            f"integration {e['integration_time']:.1f} s  CCDAMP {e['ccdamp'] or '-'}  gain {e['gain']:.3g} e-/DN",
            f"CRs: {e['n_cr']}  rate {e['rate']:.4g} +/- {e['rate_err']:.2g} CR/s/cm^2  "
            f"fraction of pixels hit {e['fraction_hit']:.4g}",
        ]
        if e["n_cr"]:
            lines.append(
                f"median per CR: {np.median(cr['n_pixels']):.3g} pixels, size {np.median(cr['size_sigma']):.3g} pix, "
                f"shape {np.median(cr['shape']):.3g}, energy {np.median(cr['energy']):.4g} e-"
            )
        lines.append(
            f"pointing RA {e['ra']:.5f} Dec {e['dec']:.5f} ORIENTAT {e['orientat']:.2f}; "
            f"HST lat {e['hst_lat']:.2f} lon {e['hst_lon']:.2f} deg alt {e['hst_alt']:.1f} km; "
            f"SAA_TIME {e['saa_time']:.0f} s"
        )
        if warnings:
            lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def month_of(mjd: float) -> str:
    """``YYYY-MM`` (UTC) of an MJD."""
    from astropy.time import Time

    return Time(mjd, format="mjd", scale="utc").strftime("%Y-%m")


def orbit_samples(
    *, spt_path: Path | None, expstart: float, expend: float,
) -> tuple[dict[str, np.ndarray], tuple[str, ...], dict]:
    """HST positions over an exposure from the SPT/SHM file's orbit keywords.

    Returns
    -------
    orbit : dict of ndarray
        ``mjd``, ``lat``, ``lon``, ``alt`` samples (empty when the orbit is unknown).
    warnings : tuple of str
        Why the orbit is unknown, if it is.
    spt_header : dict
        The SPT primary header as a mapping (empty when unreadable), for SAA keywords.
    """
    empty = {k: np.zeros(0, dtype=dt) for k, dt in _ORBIT_DTYPES.items()}
    if spt_path is None:
        return empty, ("no SPT/SHM file: HST positions unknown (NaN)",), {}
    from astropy.io import fits

    try:
        with fits.open(spt_path, memmap=False) as hdul:
            header = dict(hdul[0].header)
    except Exception as exc:  # any unreadable file is a warning, not a failed frame
        return empty, (f"{spt_path}: unreadable SPT/SHM file ({type(exc).__name__}: {exc}); HST positions NaN",), {}
    try:
        elements = OrbitalElements.from_header(header)
        mjd = sample_times(expstart=expstart, expend=expend, max_step=60.0, min_samples=5)
        lat, lon, alt = hst_positions(elements=elements, mjd=mjd)
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return empty, (f"{spt_path}: {msg}; HST positions NaN",), header
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(alt))):
        return empty, (f"{spt_path}: orbit model gave non-finite positions; HST positions NaN",), header
    orbit = {
        "mjd": mjd.astype(_ORBIT_DTYPES["mjd"]),
        "lat": lat.astype(_ORBIT_DTYPES["lat"]),
        "lon": lon.astype(_ORBIT_DTYPES["lon"]),
        "alt": alt.astype(_ORBIT_DTYPES["alt"]),
    }
    return orbit, (), header


def _empty_crs() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=dt) for k, dt in _CR_DTYPES.items()}


def measure_frame(
    *, header: FrameHeader, chips: Sequence[Chip], instrument: InstrumentConfig, spt_path: Path | None,
    method: str, group_id: int, month: str,
) -> FrameResult:
    """Measure the CRs of one frame whose DQ arrays carry CR flags (``instrument.dq_cr``).

    Parameters
    ----------
    header : FrameHeader
        From :func:`hstcosmicrays.frames.read_header`.
    chips : sequence of Chip
        The frame's chips (each labelled on its own).
    instrument : InstrumentConfig
        DQ bits, size limits, border, readout time and detector area.
    spt_path : Path or None
        SPT (or SHM) file with the orbit keywords; None or unreadable gives NaN positions.
    method : str
        How the CR flags were made (``crsplit``, ``ir_ramp``, ``threshold``, ``given``).
    group_id : int
        CR-SPLIT group within the month (-1: none).
    month : str
        ``YYYY-MM`` of the month window.

    Returns
    -------
    FrameResult
        ``cosmic_rays`` rows are in chip order, then label order; ``x``/``y`` are 0-based
        column/row of the chip's science array: for a subarray its own pixels, on chip 1 (its
        one imset), whose place on the chip is ``x - LTV1``, ``y - LTV2`` (``header.ltv``);
        the pipeline leaves subarrays out, so its stored CRs are in full-chip pixels. ``energy``
        in electrons (each pixel converted with its amplifier's gain); ``read`` is -1 (CCDs).
    """
    parts = []
    n_science = 0
    b = max(int(instrument.border), 0)
    # the chip's number as in a file of one exposure (STIS imset k of a CR-SPLIT file is chip 1)
    offset = imset_offset(instrument, header.imset)
    for chip in chips:
        rows, cols = chip.dq.shape
        n_science += max(rows - 2 * b, 0) * max(cols - 2 * b, 0)
        labels, n = label_crs(
            dq=chip.dq, cr_bit=instrument.dq_cr, bad_bit=instrument.dq_bad, min_pixels=3,
            max_pixels=instrument.max_cr_pixels, border=b,
        )
        props = cr_properties(labels=labels, image=chip.sci, gain=chip.gain, n=n)
        cols_ = props.as_columns()
        cols_["chip"] = np.full(n, chip.extver - offset)
        cols_["read"] = np.full(n, -1)
        parts.append(cols_)
    if parts:
        cosmic_rays = {k: np.concatenate([p[k] for p in parts]).astype(dt) for k, dt in _CR_DTYPES.items()}
    else:
        cosmic_rays = _empty_crs()
    return frame_result(
        header=header, cosmic_rays=cosmic_rays, n_science=n_science, instrument=instrument,
        spt_path=spt_path, method=method, group_id=group_id, month=month,
    )


def frame_result(
    *, header: FrameHeader, cosmic_rays: dict, n_science: int, instrument: InstrumentConfig,
    spt_path: Path | None, method: str, group_id: int, month: str, integration_time: float | None = None,
    n_hit: int | None = None,
) -> FrameResult:
    """Assemble a frame's :class:`FrameResult` from its measured CRs: rate over the area searched,
    fraction of pixels hit, pointing, HST orbit samples and SAA keywords.

    Shared by :func:`measure_frame` (CCDs, WFPC2) and :mod:`hstcosmicrays.ir` (ramps), so that
    every detector fills the exposure row the same way.

    Parameters
    ----------
    header : FrameHeader
    cosmic_rays : dict of ndarray
        One array per column of ``schema.COSMIC_RAYS`` except ``exposure_index``.
    n_science : int
        Science pixels searched (all chips, reference border excluded); the area searched is
        ``detector_area * n_science / N_full`` with ``N_full`` the science pixels of a full frame.
    instrument : InstrumentConfig
    spt_path : Path or None
        SPT/SHM file with the orbit keywords.
    method, group_id, month
        As in :func:`measure_frame`.
    integration_time : float, optional
        Integration time (s) of the rate; default EXPTIME + FLASHDUR + readout time
        (``instrument.integration_time``). IR ramps pass their sampled ramp time.
    n_hit : int, optional
        Science pixels inside a counted CR, each pixel once (the numerator of
        ``fraction_hit``); default the sum of ``n_pixels``, which it is when no two CRs share a
        pixel (one image). IR ramps pass their own count: a pixel hit in two reads belongs to
        two CRs but is one pixel hit.

    Returns
    -------
    FrameResult
        Its ``warnings`` (e.g. a missing SPT: positions NaN) are returned, not logged.
    """
    warnings: list[str] = []
    b = max(int(instrument.border), 0)
    n_cr = int(cosmic_rays["n_pixels"].shape[0])
    if n_hit is None:
        n_hit = int(cosmic_rays["n_pixels"].sum(dtype=np.int64))

    full_pixels = len(instrument.chips) * max(instrument.chip_shape[0] - 2 * b, 0) * max(
        instrument.chip_shape[1] - 2 * b, 0)
    area = instrument.detector_area * (n_science / full_pixels if full_pixels and n_science else 1.0)
    if integration_time is None:
        t_int = instrument.integration_time(exptime=header.exptime, flashdur=header.flashdur)
    else:
        t_int = float(integration_time)
    if t_int > 0 and area > 0:
        rate, rate_err = frame_rate(n_cr=n_cr, integration_time=t_int, detector_area=area)
    else:
        rate = rate_err = math.nan
        warnings.append(f"integration time {t_int} s or area {area} cm^2 not positive: rate NaN")

    try:
        ra, dec, orientat = pointing(header.path)
    except Exception as exc:  # a pointing is metadata; never fail the frame for it
        ra = dec = orientat = math.nan
        warnings.append(f"{header.path}: pointing unreadable ({type(exc).__name__}: {exc})")

    orbit, orbit_warnings, spt_header = orbit_samples(
        spt_path=spt_path, expstart=header.expstart, expend=header.expend)
    warnings.extend(orbit_warnings)
    if orbit["mjd"].size:
        hst_lat = float(np.mean(orbit["lat"], dtype=np.float64))
        hst_alt = float(np.mean(orbit["alt"], dtype=np.float64))
        hst_lon = circular_mean_deg(orbit["lon"])
    else:
        hst_lat = hst_lon = hst_alt = math.nan

    saa_exit, saa_time = header.saa_exit, header.saa_time
    if math.isnan(saa_exit) and "SAA_EXIT" in spt_header:
        saa_exit = saa_exit_mjd(spt_path, spt_header["SAA_EXIT"])
    if math.isnan(saa_time) and "SAA_TIME" in spt_header:
        try:
            saa_time = float(spt_header["SAA_TIME"])
        except (TypeError, ValueError):
            pass

    exposure = {
        "rootname": header.rootname,
        "month": month,
        "group_id": int(group_id),
        "method": method,
        "date_obs": header.date_obs,
        "mjd": header.expstart,
        "expstart": header.expstart,
        "expend": header.expend,
        "exptime": header.exptime,
        "flashdur": header.flashdur,
        "integration_time": t_int,
        "n_cr": n_cr,
        "rate": rate,
        "rate_err": rate_err,
        "fraction_hit": fraction_hit(n_hit=n_hit, n_pixels=n_science),
        "ccdamp": header.ccdamp,
        "gain": header.mean_gain,
        "ra": ra,
        "dec": dec,
        "orientat": orientat,
        "saa_exit": saa_exit,
        "saa_time": saa_time,
        "hst_lat": hst_lat,
        "hst_lon": hst_lon,
        "hst_alt": hst_alt,
    }
    # returned, not logged: the caller reports them once (the pipeline in its driver's log, where
    # a dask worker's own log lines never arrive; ``hstcosmicrays measure`` in its summary)
    return FrameResult(exposure=exposure, cosmic_rays=cosmic_rays, orbit=orbit, warnings=tuple(warnings))


def measure_file(path: str | Path, *, config: Config, imset: int | None = None) -> FrameResult:
    """Measure one file whose DQ already carries CR flags (``hstcosmicrays measure FILE``).

    ``imset`` picks the exposure of a file that holds several (a STIS CR-SPLIT FLT: imsets
    1..N); it must be given for such a file, and 1 (or None) for any other.

    The instrument comes from INSTRUME/DETECTOR, the SPT (or SHM) file is looked up beside the
    file (``<rootname>_spt.fits``), the month from EXPSTART; ``method`` is ``"given"`` and
    ``group_id`` -1. IR ramps (WFC3/IR, NICMOS IMA files) are measured read by read with
    :func:`hstcosmicrays.ir.measure_ima` (``hstcosmicrays measure`` picks it for them).

    A frame whose DQ has no pixel with the CR bit (``instrument.dq_cr``) has not been through a
    CR rejection: it is measured (0 CRs), and a warning in ``FrameResult.warnings`` (also
    logged) says so and what to run first. A WFPC2 C0M's DQ is its C1M, where no command of
    this package writes CR flags (``hstcosmicrays crreject`` takes no WFPC2 files; the pipeline
    finds WFPC2 CRs in memory).

    Raises
    ------
    FrameError
        Not FITS, truncated, unknown instrument, missing keyword (see
        :func:`hstcosmicrays.frames.read_header`), an IR instrument (use
        :func:`hstcosmicrays.ir.measure_ima`), a WFPC2 C1M (the message names its C0M), a file
        of several exposures without ``imset``, or an imset the file does not have.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    instrument = identify_instrument(path, config=config)
    if instrument.kind == "ir":
        raise FrameError(f"{path}: an up-the-ramp IR file ({instrument.name}); "
                         "measure it with hstcosmicrays.ir.measure_ima")
    if instrument.kind == "wfpc2" and _product_suffix(path) == "c1m":
        root = path.name[: path.name.lower().rindex("_c1m")]
        c0m = companion_path(path, "c0m") or path.with_name(f"{root}_c0m.fits")
        raise FrameError(f"{path}: a WFPC2 C1M holds the data quality of a frame, not its pixels; give its C0M, {c0m}")
    headers = read_headers(path, instrument=instrument)
    n = len(headers)
    if imset is None and n > 1:
        raise FrameError(f"{path}: holds {n} exposures (imsets 1 to {n}); name the one to measure (--imset)")
    k = 1 if imset is None else int(imset)
    if not 1 <= k <= n:
        raise FrameError(f"{path}: has no imset {k}; it holds " + (f"imsets 1 to {n}" if n > 1 else "one exposure"))
    header = headers[k - 1]
    chips = read_chips(path, instrument=instrument, imset=header.imset)
    spt = companion_path(path, "spt") or companion_path(path, "shm")
    result = measure_frame(
        header=header, chips=chips, instrument=instrument, spt_path=spt, method="given", group_id=-1,
        month=month_of(header.expstart),
    )
    if any(np.any(chip.dq & instrument.dq_cr) for chip in chips):
        return result
    warning = _no_cr_flags(path, instrument=instrument, n_exposures=n)
    log.warning("%s: %s", header.rootname, warning)
    return dataclasses.replace(result, warnings=result.warnings + (warning,))


def _product_suffix(path: Path) -> str:
    """The product of an HST file name, lower case: ``flt`` of ``ib1f01a1q_flt.fits(.gz)``."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".fits")
    return name.rsplit("_", 1)[1] if "_" in name else ""


def _no_cr_flags(path: Path, *, instrument: InstrumentConfig, n_exposures: int) -> str:
    """Why a frame without any CR flag counts no CR, and how it gets its flags."""
    bit = instrument.dq_cr
    if instrument.kind == "wfpc2":
        c1m = companion_path(path, "c1m")
        return (f"{c1m}: no pixel carries the CR bit (DQ {bit}), so no CR is counted; a C0M's CR flags are read "
                "from its C1M, and no command of hstcosmicrays writes them there (crreject takes no WFPC2 "
                "files; run_pipeline finds the CRs of WFPC2 darks itself)")
    if n_exposures > 1:
        how = f"run `hstcosmicrays crreject {path}` first (this FLT holds its CR-SPLIT set as imsets)"
    else:
        how = "run `hstcosmicrays crreject` on the FLT files of its CR-SPLIT set first"
    return f"{path}: no pixel carries the CR bit (DQ {bit}), so no CR is counted; {how}"

"""Read an HST dark: header metadata, per-chip SCI/ERR/DQ arrays, gains, read noise, pointing.

Only headers are read by :func:`read_header` (cheap, used to select and group frames);
:func:`read_chips` loads the pixel arrays of the instrument's science chips.

Units
-----
``Chip.sci`` keeps the units of the file (electrons for ACS and WFC3/UVIS FLT, DN for STIS FLT
and WFPC2 C0M). ``Chip.gain`` converts them to electrons (``sci * gain``); it is 1 for files in
electrons. ``Chip.readnoise`` is always in electrons.

Amplifier quadrants
-------------------
Headers give one gain (``ATODGN[A-D]``, e-/DN) and one read noise (``READNSE[A-D]``, e-) per
amplifier. Each pixel takes the value of the amplifier that read it:

* two-chip detectors (ACS/WFC, WFC3/UVIS): the chip with CCDCHIP 1 holds amplifiers A (left
  half, columns below the chip's middle) and B (right half); the chip with CCDCHIP 2 holds C
  (left) and D (right). When CCDAMP names both amplifiers of a chip the chip is split at its
  middle column (in physical pixels, i.e. corrected by LTV1 for subarrays); when it names one,
  that amplifier covers the whole chip.
* one-chip detectors (ACS/HRC, STIS/CCD): the amplifier named in CCDAMP (e.g. ``'C'`` or ``'D'``)
  covers the whole chip; if CCDAMP names several, their mean is used for the whole chip.
* an instrument with a single gain keyword (``ATODGAIN``: STIS, WFPC2) uses it everywhere.

An amplifier whose value is missing or zero falls back to the mean of the non-zero values of the
amplifiers named in CCDAMP (gain) or to ``instrument.readnoise_default`` (read noise).

Per-pixel gain and read-noise arrays vary only along columns, so they are returned as read-only
broadcast views of one row (no full-size allocation); use them in arithmetic, do not write to them.

Files of several exposures (``instrument.imset_exposures``, STIS): a CR-SPLIT or repeated
observation keeps its sub-exposures as the imsets SCI,1..N of one FLT, each with its own EXPTIME,
EXPSTART and EXPEND in its SCI header (as ocrreject reads them). :func:`read_headers` gives one
:class:`FrameHeader` per imset (``imset`` 1..N, ``rootname`` ``<ROOTNAME>_<k>``), and
:func:`read_header` / :func:`read_chips` read one of them (``imset=k``). A file with one imset
is one exposure like any other (``imset`` 0, the plain rootname).

Every file is opened by :func:`open_fits`, which reads all its headers and refuses a truncated
file (cut inside data, inside a header, or short of the extensions NEXTEND announces) with a
one-line :class:`FrameError` naming it, before any array of it is read.

IR IMA files (``kind == "ir"``): :func:`read_header` reads their metadata (the imset with EXTVER 1,
the last read, stands for the science extension; NSAMP is the number of reads; NICMOS headers
without DETECTOR are matched by CAMERA); their pixels, one imset per read, are read by
:func:`hstcosmicrays.ir.read_ramp`, not by :func:`read_chips`. Otherwise this module serves
FLT-like CCD files and WFPC2 C0M/C1M pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astropy.io import fits

from ._text import plural
from .archive.fitsfile import fits_structure_warnings_quieted, fits_trailing_bytes, fits_truncation
from .config import Config, InstrumentConfig
from .schema import exposure_name

__all__ = [
    "FrameError",
    "FrameHeader",
    "Chip",
    "read_header",
    "read_headers",
    "read_chips",
    "imset_extvers",
    "imset_offset",
    "pointing",
    "identify_instrument",
    "companion_path",
    "open_fits",
    "saa_exit_mjd",
]

log = logging.getLogger(__name__)

_AMPS = "ABCD"


class FrameError(ValueError):
    """A file cannot be used as a frame of the instrument; the message names the file and why."""


@dataclass(frozen=True)
class FrameHeader:
    """Header metadata of one dark frame.

    Attributes
    ----------
    path : Path
        The file (FLT, or C0M for WFPC2).
    rootname : str
        ROOTNAME in lower case; ``<rootname>_<k>`` for imset ``k`` of a file of several
        exposures (see ``imset``).
    instrument : str
        Configuration key of the instrument, e.g. ``"wfc3_uvis"``.
    instrume, detector : str
        INSTRUME and DETECTOR keywords (WFPC2: DETECTOR is ``"WFPC2"``).
    exptime, flashdur : float
        EXPTIME and FLASHDUR (s); FLASHDUR is 0 when absent.
    expstart, expend : float
        EXPSTART and EXPEND (MJD).
    date_obs : str
        ``"YYYY-MM-DDTHH:MM:SS"`` from DATE-OBS and TIME-OBS (UTC).
    ccdamp : str
        CCDAMP (empty when absent, e.g. WFPC2).
    ccdgain : float
        CCDGAIN (commanded gain, e-/DN); ATODGAIN or the mean gain when absent.
    subarray : bool
        SUBARRAY, or chip shape differs from the instrument's full chip.
    shape : tuple of int
        (rows, columns) of one chip's science array.
    nchips : int
        Number of the instrument's science chips present in the file.
    quality, bunit, imagetyp, targname : str
        QUALITY, BUNIT (of the science extension), IMAGETYP, TARGNAME; empty when absent.
    crsplit, nsamp : int
        CRSPLIT and NSAMP (1 when absent).
    gains : tuple of float
        e-/DN. Four values (amplifiers A, B, C, D; 0 for an amplifier not given) when the
        instrument has the keywords ``ATODGN[A-D]``, otherwise one value for all amplifiers.
    readnoise : tuple of float
        e-, laid out like ``gains``; ``instrument.readnoise_default`` when no keyword is present.
    saa_exit : float
        SAA_EXIT as MJD (NaN when absent).
    saa_time : float
        SAA_TIME (s since the last SAA exit; NaN when absent).
    imset : int
        0 when the file is one exposure; ``k`` (1, 2, ...) for the exposure in imset ``k`` of a
        file of several (``instrument.imset_exposures``).
    imset_ok : bool
        IMSET_OK of the imset's SCI header (calstis sets it False for an imset it could not
        calibrate, e.g. one of zero EXPTIME; ocrreject leaves such imsets out); True when absent.
    ltv : tuple of float
        LTV1, LTV2 of the first science chip's SCI header (0 when absent): where the array lies
        on its chip (its pixel (x, y) is the chip's (x - LTV1, y - LTV2)); a subarray's position.
    """

    path: Path
    rootname: str
    instrument: str
    instrume: str
    detector: str
    exptime: float
    flashdur: float
    expstart: float
    expend: float
    date_obs: str
    ccdamp: str
    ccdgain: float
    subarray: bool
    shape: tuple[int, int]
    nchips: int
    quality: str
    bunit: str
    crsplit: int
    nsamp: int
    gains: tuple[float, ...]
    readnoise: tuple[float, ...]
    saa_exit: float
    saa_time: float
    imagetyp: str
    targname: str
    imset: int = 0
    imset_ok: bool = True
    ltv: tuple[float, float] = (0.0, 0.0)

    @property
    def in_electrons(self) -> bool:
        """True when the science arrays are in electrons (or electrons/s)."""
        return self.bunit.upper().startswith("ELECTRON")

    @property
    def amplifier_gains(self) -> dict[str, float]:
        """Gain (e-/DN) of each amplifier named in CCDAMP (all amplifiers share one value when
        the header has a single gain keyword)."""
        return _amp_values(self.gains, self.ccdamp)

    @property
    def mean_gain(self) -> float:
        """Mean gain (e-/DN) of the amplifiers used (non-zero values only); NaN if none."""
        vals = [v for v in self.amplifier_gains.values() if v > 0]
        if not vals:
            vals = [v for v in self.gains if v > 0]
        return float(np.mean(vals)) if vals else math.nan


@dataclass(frozen=True)
class Chip:
    """The arrays of one science chip (imset).

    Attributes
    ----------
    extver : int
        EXTVER of the imset (WFPC2: the group / chip number).
    ccdchip : int
        CCDCHIP of the chip (physical chip number).
    sci : ndarray of float32
        Science array in the file's units (``FrameHeader.bunit``).
    err : ndarray of float32 or None
        Error array in the file's units (None when the file has none, e.g. WFPC2).
    dq : ndarray of int
        Data-quality flags, native byte order.
    gain : ndarray of float32
        Electrons per file unit for every pixel (1 for files in electrons). Read-only.
    readnoise : ndarray of float32
        Read noise (e-) of the amplifier that read every pixel. Read-only.
    """

    extver: int
    ccdchip: int
    sci: np.ndarray
    err: Optional[np.ndarray]
    dq: np.ndarray
    gain: np.ndarray
    readnoise: np.ndarray

    @property
    def electrons(self) -> np.ndarray:
        """Science array in electrons: ``sci * gain`` (float32)."""
        return np.multiply(self.sci, self.gain, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# small helpers


def open_fits(path: str | Path) -> fits.HDUList:
    """Open a FITS file to read it (memory-mapped), every header read; a truncated file is refused.

    The one place where this package opens a science file (FLT, IMA, C0M, C1M) for reading: it
    reads every HDU's header at once, so that a file cut short is found here
    (:func:`hstcosmicrays.archive.fitsfile.fits_truncation`) and not when its pixels are read,
    and astropy's warnings about the cut are not shown. Bytes after the last HDU that are not a
    header are ignored, with a warning in the log.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    astropy.io.fits.HDUList
        Open; close it (``with open_fits(path) as hdul:``).

    Raises
    ------
    FrameError
        Not a FITS file, or truncated: ``"<path>: truncated: <bytes> of at least <bytes> bytes
        (the FITS headers announce more data)"`` and the like, one line.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    with fits_structure_warnings_quieted():
        try:
            hdul = fits.open(path, memmap=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except OSError as exc:
            raise FrameError(f"{path}: {fits_truncation(path) or f'not a FITS file ({exc})'}") from None
        try:
            hdul.readall()  # every header: where astropy meets the end of a cut file
            reason = fits_truncation(path, hdul=hdul)
            extra = fits_trailing_bytes(path, hdul=hdul)
        except BaseException:
            hdul.close()
            raise
    if reason is not None:
        hdul.close()
        raise FrameError(f"{path}: {reason}")
    if extra:
        log.warning("%s: %s after its HDU %d, not a FITS HDU: ignored", path, plural(extra, "byte"), len(hdul) - 1)
    return hdul


def _get(headers: list, key: str, default: Any = None) -> Any:
    for h in headers:
        if h is not None and key in h and h[key] is not None and not isinstance(h[key], fits.card.Undefined):
            return h[key]
    return default


def _require(path: Path | str, headers: list, key: str) -> Any:
    value = _get(headers, key)
    if value is None:
        raise FrameError(f"{path}: missing keyword {key}")
    return value


def _as_float(path: Path | str, key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FrameError(f"{path}: keyword {key}: expected a number, got {value!r}") from None


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _iso_date(path: Path | str, date: str, time: str) -> str:
    """DATE-OBS (``YYYY-MM-DD`` or old ``DD/MM/YY``) and TIME-OBS -> ``YYYY-MM-DDTHH:MM:SS``."""
    date = date.strip()
    time = time.strip()
    m = re.fullmatch(r"(\d{2})/(\d{2})/(\d{2})", date)
    if m:
        day, month, yy = (int(g) for g in m.groups())
        date = f"{1900 + yy if yy >= 50 else 2000 + yy:04d}-{month:02d}-{day:02d}"
    if "T" in date:  # DATE-OBS already carries the time
        date, time = date.split("T", 1)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise FrameError(f"{path}: keyword DATE-OBS: expected YYYY-MM-DD, got {date!r}")
    if not re.fullmatch(r"\d{2}:\d{2}:\d{2}(\.\d*)?", time):
        raise FrameError(f"{path}: keyword TIME-OBS: expected HH:MM:SS, got {time!r}")
    return f"{date}T{time[:8]}"


def saa_exit_mjd(path: str | Path, value: Any) -> float:
    """SAA_EXIT as MJD: numbers are taken as MJD; strings ``YYYY.DDD:HH:MM:SS`` (or with ``:``)
    as a UTC day-of-year date."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    m = re.fullmatch(r"(\d{4})[.:](\d{3}):(\d{2}):(\d{2}):(\d{2}(?:\.\d*)?)", text)
    if not m:
        try:
            return float(text)
        except ValueError:
            log.debug("%s: SAA_EXIT %r not understood; using NaN", path, value)
            return math.nan
    from astropy.time import Time

    year, doy, hh, mm, ss = m.groups()
    return float(Time(f"{year}:{doy}:{hh}:{mm}:{ss}", format="yday", scale="utc").mjd)


def _amp_values(values: tuple[float, ...], ccdamp: str) -> dict[str, float]:
    """Map a gain/read-noise tuple (4 per-amplifier values, or 1 shared) to the amps in CCDAMP."""
    amps = [a for a in ccdamp.upper() if a in _AMPS] or list(_AMPS if len(values) == 4 else "A")
    if len(values) == 4:
        return {a: float(values[_AMPS.index(a)]) for a in amps}
    return {a: float(values[0]) for a in amps}


def _keyword_values(headers: list, keywords: tuple[str, ...]) -> Optional[tuple[float, ...]]:
    """Values of per-amplifier keywords ``X[A-D]`` (4 values, 0 when absent) or of a single one."""
    found = [_get(headers, k) for k in keywords]
    if all(v is None for v in found):
        return None
    vals = tuple(float(v) if v is not None else 0.0 for v in found)
    if len(keywords) == 4 and all(k[-1] == a for k, a in zip(keywords, _AMPS)):
        return vals
    return (float(np.mean([v for v in vals if v > 0])) if any(v > 0 for v in vals) else 0.0,)


def _detector_matches(instrument: InstrumentConfig, instrume: str, detector: str) -> bool:
    if instrume.upper() != instrument.instrume.upper():
        return False
    if instrument.kind == "wfpc2":  # WFPC2's DETECTOR is the chip number, not the camera
        return True
    return detector.upper() == instrument.detector.upper()


def imset_offset(instrument: InstrumentConfig, imset: int = 0) -> int:
    """What the EXTVERs of imset ``imset`` add to the chips' numbers (``instrument.chips``):
    ``(imset - 1) * len(chips)`` for an exposure of a file of several
    (``instrument.imset_exposures``), 0 for a file that is one exposure (``imset`` 0)."""
    if imset < 0:
        raise ValueError(f"imset: expected 0 or more, got {imset}")
    if imset and not instrument.imset_exposures:
        raise ValueError(f"{instrument.name}: its imsets are the chips of one exposure, not exposures (imset {imset})")
    return (imset - 1) * len(instrument.chips) if imset else 0


def imset_extvers(instrument: InstrumentConfig, imset: int = 0) -> tuple[int, ...]:
    """EXTVER of the science chips of an exposure: ``instrument.chips`` plus
    :func:`imset_offset`."""
    offset = imset_offset(instrument, imset)
    return tuple(int(v) + offset for v in instrument.chips)


def _n_imsets(hdul) -> int:
    """Number of SCI extensions of an FLT file."""
    return sum(1 for h in hdul if h.name == "SCI")


def _science_hdus(hdul, instrument: InstrumentConfig, imset: int = 0) -> list:
    """Image HDUs of the science chips of one exposure, in the order of ``instrument.chips``."""
    if instrument.kind == "wfpc2":
        images = [h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2]
        by_ver = {}
        for i, h in enumerate(images, start=1):
            by_ver.setdefault(int(h.header.get("EXTVER", i)), h)
        return [by_ver[v] for v in instrument.chips if v in by_ver]
    out = []
    for v in imset_extvers(instrument, imset):
        try:
            out.append(hdul["SCI", v])
        except KeyError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# public API


def read_header(path: str | Path, *, instrument: InstrumentConfig, imset: int = 0) -> FrameHeader:
    """Read the header metadata of one frame (headers only, no pixel data).

    Parameters
    ----------
    path : str or Path
        FLT file (CCDs), C0M file (WFPC2) or IMA file (IR).
    instrument : InstrumentConfig
        The instrument the file must belong to.
    imset : int
        0: the file is one exposure (for a file of several, its first imset stands for it).
        ``k`` >= 1: the exposure in imset ``k`` (``instrument.imset_exposures`` only); its
        EXPTIME, EXPSTART, EXPEND, DATE-OBS and TIME-OBS come from its SCI header.

    Returns
    -------
    FrameHeader

    Raises
    ------
    FrameError
        Not a FITS file, a truncated one (:func:`open_fits`), a required keyword (ROOTNAME,
        INSTRUME, DETECTOR, EXPTIME, EXPSTART, EXPEND, DATE-OBS, TIME-OBS) missing or
        malformed, INSTRUME/DETECTOR of another instrument, no science extension (of the
        imset), or no gain for a file in DN.
    FileNotFoundError
        The file does not exist.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        return _frame_header(hdul, path=path, instrument=instrument, imset=imset)


def read_headers(path: str | Path, *, instrument: InstrumentConfig) -> tuple[FrameHeader, ...]:
    """The header metadata of every exposure in a file: one for most files; one per imset for a
    file of several exposures (``instrument.imset_exposures`` and two or more SCI extensions).

    Raises
    ------
    FrameError, FileNotFoundError
        As :func:`read_header`, for any of the imsets.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        n = _n_imsets(hdul) if instrument.imset_exposures else 1
        if n <= 1:
            return (_frame_header(hdul, path=path, instrument=instrument, imset=0),)
        return tuple(_frame_header(hdul, path=path, instrument=instrument, imset=k) for k in range(1, n + 1))


def _frame_header(hdul, *, path: Path, instrument: InstrumentConfig, imset: int) -> FrameHeader:
    primary = hdul[0].header
    extvers = imset_extvers(instrument, imset)
    scis = _science_hdus(hdul, instrument, imset)
    if not scis:
        what = f"imset {imset}" if imset else f"science extension of {instrument.name}"
        raise FrameError(f"{path}: no {what} (expected EXTVER {list(extvers)})")
    sci = scis[0].header
    headers = [primary, sci]
    # the exposure's own keywords (times, SAA_EXIT, SAA_TIME): in the SCI header of its imset when
    # a file holds several exposures (STIS keeps the file's totals, TEXPTIME etc., in the primary)
    timing = [sci, primary] if instrument.imset_exposures else headers
    where: Any = f"{path} (imset {imset})" if imset else path
    instrume = _str(_require(path, headers, "INSTRUME"))
    if instrument.kind == "wfpc2":
        detector = _str(_get(headers, "DETECTOR", ""))
    elif instrument.kind == "ir" and _get(headers, "DETECTOR") is None and _get(headers, "CAMERA") is not None:
        detector = _str(_get(headers, "CAMERA"))  # NICMOS names its camera, not a detector
    else:
        detector = _str(_require(path, headers, "DETECTOR"))
    if not _detector_matches(instrument, instrume, detector):
        raise FrameError(
            f"{path}: INSTRUME/DETECTOR {instrume}/{detector} is not {instrument.name} "
            f"({instrument.instrume}/{instrument.detector})"
        )
    if instrument.kind == "wfpc2":
        detector = instrument.detector
    rootname = exposure_name((_str(_get(headers, "ROOTNAME")) or path.name.split("_")[0]).lower(), imset)
    exptime = _as_float(where, "EXPTIME", _require(where, timing, "EXPTIME"))
    flashdur = _as_float(where, "FLASHDUR", _get(timing, "FLASHDUR", 0.0))
    expstart = _as_float(where, "EXPSTART", _require(where, timing, "EXPSTART"))
    expend = _as_float(where, "EXPEND", _require(where, timing, "EXPEND"))
    date_obs = _iso_date(where, _str(_require(where, timing, "DATE-OBS")),
                         _str(_get(timing, "TIME-OBS", "00:00:00")))
    ccdamp = _str(_get(headers, "CCDAMP", "")).upper()
    bunit = _str(_get([sci, primary], "BUNIT", instrument.bunit))
    shape = (int(sci["NAXIS2"]), int(sci["NAXIS1"]))
    subarray_kw = _get(headers, "SUBARRAY")
    subarray = bool(subarray_kw) if subarray_kw is not None else shape != tuple(instrument.chip_shape)

    gains = _keyword_values(headers, instrument.gain_keywords)
    if gains is None or not any(g > 0 for g in gains):
        fallback = _get(headers, "ATODGAIN", _get(headers, "CCDGAIN"))
        if fallback is not None and float(fallback) > 0:
            gains = (float(fallback),)
        elif bunit.upper().startswith("ELECTRON"):
            gains = (1.0,)
            log.debug("%s: no gain keyword; file in electrons, gain 1 assumed", path)
        else:
            raise FrameError(
                f"{path}: missing keyword {'/'.join(instrument.gain_keywords) or 'ATODGAIN'} "
                f"(gain needed to convert {bunit or 'DN'} to electrons)"
            )
    readnoise = _keyword_values(headers, instrument.readnoise_keywords)
    if readnoise is None or not any(r > 0 for r in readnoise):
        rn = _get(headers, "READNSE")
        readnoise = (float(rn),) if rn is not None and float(rn) > 0 else (instrument.readnoise_default,)
    ccdgain_kw = _get(headers, "CCDGAIN", _get(headers, "ATODGAIN"))
    ccdgain = float(ccdgain_kw) if ccdgain_kw is not None else math.nan

    saa_time_kw = _get(timing, "SAA_TIME")
    header = FrameHeader(
        path=path,
        rootname=rootname,
        instrument=instrument.name,
        instrume=instrume,
        detector=detector,
        exptime=exptime,
        flashdur=flashdur,
        expstart=expstart,
        expend=expend,
        date_obs=date_obs,
        ccdamp=ccdamp,
        ccdgain=ccdgain,
        subarray=subarray,
        shape=shape,
        nchips=len(scis),
        quality=_str(_get(headers, "QUALITY", "")),
        bunit=bunit,
        crsplit=int(_get(headers, "CRSPLIT", 1) or 1),
        nsamp=int(_get(headers, "NSAMP", 1) or 1),
        gains=tuple(gains),
        readnoise=tuple(readnoise),
        saa_exit=saa_exit_mjd(path, _get(timing, "SAA_EXIT")),
        saa_time=_as_float(path, "SAA_TIME", saa_time_kw) if saa_time_kw not in (None, "") else math.nan,
        imagetyp=_str(_get(headers, "IMAGETYP", "")),
        targname=_str(_get(headers, "TARGNAME", "")),
        imset=int(imset),
        imset_ok=bool(_get([sci], "IMSET_OK", True)),
        ltv=(_as_float(where, "LTV1", sci.get("LTV1", 0.0)), _as_float(where, "LTV2", sci.get("LTV2", 0.0))),
    )
    if math.isnan(header.ccdgain):
        header = dataclasses.replace(header, ccdgain=header.mean_gain)
    return header


def _amp_row(
    *, values: tuple[float, ...], ccdamp: str, ccdchip: int, two_chip: bool, ncols: int,
    split_col: int, fallback: float,
) -> np.ndarray:
    """Per-column value (float32, length ``ncols``) of a per-amplifier quantity for one chip.

    See the module docstring for the amplifier layout.
    """
    used = _amp_values(values, ccdamp)
    good = [v for v in used.values() if v > 0]
    default = float(np.mean(good)) if good else fallback

    def value(amp: str) -> float:
        v = used.get(amp, 0.0)
        return v if v > 0 else default

    row = np.full(ncols, default, dtype=np.float32)
    if len(values) != 4:
        row[:] = values[0] if values[0] > 0 else fallback
        return row
    amps_here = [a for a in ccdamp if a in _AMPS]
    if two_chip:
        left, right = ("A", "B") if ccdchip == 1 else ("C", "D")
        mine = [a for a in (left, right) if a in amps_here]
        if len(mine) == 2:
            s = int(np.clip(split_col, 0, ncols))
            row[:s] = value(left)
            row[s:] = value(right)
        elif len(mine) == 1:
            row[:] = value(mine[0])
    elif len(amps_here) == 1:
        row[:] = value(amps_here[0])
    return row


def read_chips(path: str | Path, *, instrument: InstrumentConfig, imset: int = 0) -> tuple[Chip, ...]:
    """Load the science chips of one frame.

    Parameters
    ----------
    path : str or Path
        FLT file (CCDs: imsets SCI/ERR/DQ with EXTVER in ``instrument.chips``) or C0M file
        (WFPC2: its image extensions; the DQ comes from the C1M file beside it).
    instrument : InstrumentConfig
    imset : int
        The exposure in imset ``imset`` of a file of several (see :func:`read_header`); its
        chips keep the EXTVER of the file (:func:`imset_extvers`). 0: the file's first.

    Returns
    -------
    tuple of Chip
        In the order of ``instrument.chips``; subarrays hold only the chips present.
        ERR/DQ extensions stored as constant arrays (NPIX1/NPIX2/PIXVALUE) are expanded.

    Raises
    ------
    FrameError
        Not a FITS file, a truncated one (the C0M or the C1M: the message names which;
        :func:`open_fits`), no science chip, a missing DQ (or C1M for WFPC2), or an IR file
        (read those with :func:`hstcosmicrays.ir.read_ramp`).
    """
    path = Path(path)
    if instrument.kind == "ir":
        raise FrameError(f"{path}: IR ramps ({instrument.name}) are read one read at a time by hstcosmicrays.ir.read_ramp")
    header = read_header(path, instrument=instrument, imset=imset)
    if instrument.kind == "wfpc2":
        return _read_wfpc2(path, header=header, instrument=instrument)
    chips = []
    two_chip = len(instrument.chips) == 2
    with open_fits(path) as hdul:
        for extver, ccdchip_default in zip(imset_extvers(instrument, imset), instrument.ccdchip):
            try:
                sci_hdu = hdul["SCI", extver]
            except KeyError:
                continue
            sci = _image(path, sci_hdu, np.float32)
            try:
                dq = _image(path, hdul["DQ", extver], None, shape=sci.shape)
            except KeyError:
                raise FrameError(f"{path}: missing extension DQ,{extver}") from None
            try:
                err = _image(path, hdul["ERR", extver], np.float32, shape=sci.shape)
            except KeyError:
                err = None
            h = sci_hdu.header
            ccdchip = int(h.get("CCDCHIP", ccdchip_default))
            chips.append(_make_chip(
                extver=extver, ccdchip=ccdchip, sci=sci, err=err, dq=dq, header=header,
                instrument=instrument, two_chip=two_chip, ltv1=float(h.get("LTV1", 0.0)),
            ))
    return tuple(chips)


def _make_chip(*, extver, ccdchip, sci, err, dq, header, instrument, two_chip, ltv1) -> Chip:
    nrows, ncols = sci.shape
    split_col = int(round(instrument.chip_shape[1] / 2 + ltv1))
    common = dict(ccdamp=header.ccdamp, ccdchip=ccdchip, two_chip=two_chip, ncols=ncols, split_col=split_col)
    if header.in_electrons:
        gain_row = np.ones(ncols, dtype=np.float32)
    else:
        gain_row = _amp_row(values=header.gains, fallback=header.mean_gain, **common)
    rn_row = _amp_row(values=header.readnoise, fallback=instrument.readnoise_default, **common)
    return Chip(
        extver=int(extver), ccdchip=int(ccdchip), sci=sci, err=err, dq=dq,
        gain=np.broadcast_to(gain_row, sci.shape), readnoise=np.broadcast_to(rn_row, sci.shape),
    )


def _image(path: Path, hdu, dtype, shape=None) -> np.ndarray:
    """Data of an image HDU as a native-order array; a constant array (no data, NPIX1/NPIX2,
    PIXVALUE) is expanded to ``shape``."""
    data = hdu.data
    if data is None:
        h = hdu.header
        if "NPIX1" in h and "NPIX2" in h:
            shp = (int(h["NPIX2"]), int(h["NPIX1"]))
        elif shape is not None:
            shp = shape
        else:
            raise FrameError(f"{path}: extension {hdu.name},{hdu.ver} has no data")
        value = h.get("PIXVALUE", 0)
        return np.full(shp, value, dtype=dtype or np.int16)
    if dtype is None:
        dt = data.dtype
        if dt.kind not in "iu":
            raise FrameError(f"{path}: extension {hdu.name},{hdu.ver}: expected integer data, got {dt}")
        return np.asarray(data, dtype=dt.newbyteorder("="))
    return np.asarray(data, dtype=dtype)


def _read_wfpc2(path: Path, *, header: FrameHeader, instrument: InstrumentConfig) -> tuple[Chip, ...]:
    c1m = companion_path(path, "c1m")
    if c1m is None:
        raise FrameError(f"{path}: no C1M data-quality file beside it")
    chips = []
    with open_fits(path) as sci_hdul, open_fits(c1m) as dq_hdul:
        scis = _science_hdus(sci_hdul, instrument)
        dqs = _science_hdus(dq_hdul, instrument)
        if len(dqs) != len(scis):
            raise FrameError(f"{c1m}: {plural(len(dqs), 'data-quality chip')} for "
                             f"{plural(len(scis), 'science chip')} in {path}")
        for i, (s, d) in enumerate(zip(scis, dqs)):
            extver = int(s.header.get("EXTVER", instrument.chips[i]))
            sci = _image(path, s, np.float32)
            dq = _image(c1m, d, None, shape=sci.shape)
            ccdchip = int(s.header.get("DETECTOR", extver)) if str(
                s.header.get("DETECTOR", "")).strip().isdigit() else extver
            chips.append(_make_chip(
                extver=extver, ccdchip=ccdchip, sci=sci, err=None, dq=dq, header=header,
                instrument=instrument, two_chip=False, ltv1=0.0,
            ))
    return tuple(chips)


def pointing(path: str | Path) -> tuple[float, float, float]:
    """RA, Dec of the reference pixel and ORIENTAT of the first science chip.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ra_deg, dec_deg, orientat_deg : float
        RA/Dec (deg) of the reference pixel (CRPIX) from the chip's WCS (``astropy.wcs``,
        header only: distortion lookup tables are not needed at the reference pixel).
        ORIENTAT (deg) is the keyword when present, else the position angle of the image +y axis
        east of north from the CD matrix, ``atan2(CD1_2, CD2_2)``. NaN where the header has
        no celestial WCS.
    """
    from astropy.wcs import WCS, FITSFixedWarning

    path = Path(path)
    with open_fits(path) as hdul:
        hdu = next((h for h in hdul if h.name == "SCI"), None)
        if hdu is None:
            hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2), hdul[0])
        h = hdu.header.copy()
    nan = (math.nan, math.nan, math.nan)
    if "CRVAL1" not in h or "CRVAL2" not in h:
        return nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(h, naxis=2, relax=True)
        except Exception as exc:  # a malformed WCS is a missing pointing, not a failed frame
            log.debug("%s: WCS not usable (%s)", path, exc)
            return nan
    if not w.has_celestial:
        return nan
    ra, dec = (float(v) for v in w.wcs.crval[:2])
    if "ORIENTAT" in h:
        orientat = float(h["ORIENTAT"])
    else:
        cd = w.wcs.cd if w.wcs.has_cd() else w.pixel_scale_matrix
        orientat = math.degrees(math.atan2(cd[0, 1], cd[1, 1]))
    return ra, dec, orientat


def identify_instrument(path: str | Path, *, config: Config) -> InstrumentConfig:
    """The configured instrument a file belongs to, from its INSTRUME and DETECTOR keywords.

    Raises
    ------
    FrameError
        Not FITS, truncated (:func:`open_fits`), or no configured instrument has that
        INSTRUME/DETECTOR.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        headers = [hdul[0].header] + ([hdul[1].header] if len(hdul) > 1 else [])
        instrume = _str(_get(headers, "INSTRUME", ""))
        detector = _str(_get(headers, "DETECTOR", _get(headers, "CAMERA", "")))
    if not instrume:
        raise FrameError(f"{path}: missing keyword INSTRUME")
    for inst in config.instruments.values():
        if _detector_matches(inst, instrume, detector):
            return inst
    raise FrameError(f"{path}: no configured instrument has INSTRUME/DETECTOR {instrume}/{detector}")


def companion_path(path: str | Path, suffix: str) -> Path | None:
    """The product ``<rootname>_<suffix>.fits`` (any case, optionally ``.gz``) beside ``path``.

    ``path``'s rootname is its name up to the last ``_`` (``ib1f01a1q_flt.fits`` ->
    ``ib1f01a1q``). Returns None when no such file exists.
    """
    path = Path(path)
    stem = path.name.lower()
    root = stem.rsplit("_", 1)[0] if "_" in stem else stem.split(".")[0]
    wanted = {f"{root}_{suffix.lower()}.fits", f"{root}_{suffix.lower()}.fits.gz"}
    try:
        candidates = sorted(path.parent.iterdir())
    except OSError:
        return None
    for p in candidates:
        if p.name.lower() in wanted and p.is_file():
            return p
    return None

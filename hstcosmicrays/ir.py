"""Up-the-ramp IR detectors (WFC3/IR, NICMOS NIC1/NIC2/NIC3): cosmic rays read by read.

An IR dark is not read once but sampled non-destructively NSAMP times ("reads"); a cosmic ray
(CR) shows as a jump in a pixel's accumulated charge between two consecutive reads. The
calibrated IMA file keeps every read:

* NSAMP imsets (SCI, ERR, DQ, SAMP, TIME) in **reverse time order**: EXTVER 1 is the last read,
  EXTVER NSAMP the zeroth read (taken just after the reset).
* SCI is a count rate: electrons/s for WFC3 (BUNIT ``ELECTRONS/S``), DN/s for NICMOS
  (``COUNTS/S``; the gain in e-/DN is the instrument's gain keyword, ADCGAIN).
* TIME is the time of each read (s) since the zeroth read (a constant array; its PIXVALUE).

Conventions here: reads are numbered in time order, :math:`k = 0` the zeroth read and
:math:`k = n-1` the last. The accumulated charge of read :math:`k` in electrons is

.. math::

    c_k = \\mathrm{SCI}_k \\, \\mathrm{TIME}_k \\, g

(:math:`g` = 1 for WFC3, ADCGAIN for NICMOS), and arrays "per difference" have :math:`n-1`
planes, plane :math:`j` belonging to read :math:`k = j + 1` (the charge gathered between reads
:math:`k-1` and :math:`k`).

Which pixels a CR hit during read k
-----------------------------------
1. **From the ramp fit's flags** (the calibration pipelines flag a jump with the CR bit,
   ``instrument.dq_cr`` = 8192 for WFC3, 512 for NICMOS, in the read where it happened and in
   every later read): pixels whose CR bit is set in read :math:`k` and not in read
   :math:`k-1` (:func:`new_cr_flags`). A flagged pixel stays flagged, so a second CR on a pixel
   hit earlier is invisible in the flags; such a pixel (flagged in read :math:`k-1`) counts as
   hit again in read :math:`k` when its jump passes the test of method 2 (with NSAMP >= 4).
   Without this, CRs arriving late in a ramp lose the pixels they share with earlier CRs (on
   simulated WFC3/IR darks 1-2 % of them fell below 3 pixels, up to 4.5 % in the last reads).
2. **From the counts, where the file carries no CR flags** (:func:`detect_jumps`): with the
   first differences :math:`d_k = c_k - c_{k-1}`, :math:`\\Delta t_k = t_k - t_{k-1}`, the
   pixel's dark rate estimated robustly as the median of its difference rates
   :math:`r = \\mathrm{median}_k(d_k / \\Delta t_k)` (e-/s; one CR moves the median of the
   NSAMP-1 differences by at most one rank), and the jump (excess charge, e-)

   .. math::

       J_k = d_k - r\\,\\Delta t_k, \\qquad
       \\sigma_k = \\sqrt{2\\,\\mathrm{RN}^2 + \\max(r, 0)\\,\\Delta t_k},

   a pixel is hit in read :math:`k` when :math:`J_k > \\kappa\\,\\sigma_k` (``ksigma``
   :math:`\\kappa`, the instrument's ``jump_sigma``, 4 by default, the threshold of the WFC3
   ramp fit). RN is the read noise of one read (e-), :func:`read_noise_per_read`: the header's
   read-noise keywords give the noise of a difference of two reads (WFC3 ``READNSE[A-D]``), so
   RN is their mean over :math:`\\sqrt 2`; without keywords (NICMOS) it is the instrument's
   ``readnoise_default``. This needs at least 3 differences (NSAMP >= 4); fewer are refused.

``source="auto"`` (the default) uses the flags when any read of the file carries the CR bit, or
when the header says the ramp fit ran (``CRCORR`` or ``CRIDCALC`` = ``COMPLETE``), and the jump
detection otherwise.

Each read is labelled on its own (:func:`hstcosmicrays.labels.label_crs`: 8-connected, more than
2 and fewer than ``instrument.max_cr_pixels`` pixels), without pixels flagged bad
(``instrument.dq_bad``) in that read and without the reference-pixel border
(``instrument.border``, 5 for WFC3/IR). A CR therefore belongs to exactly one read, and a pixel
hit in two reads belongs to two CRs. Each CR is measured (:func:`hstcosmicrays.stats.cr_properties`)
on the jump image :math:`J_k` in electrons: the charge it added, with the dark current expected
in that interval taken away.

Rate
----
The CRs of a ramp are those that arrived between the zeroth and the last read, so the rate is
taken over the sampled time, not EXPTIME:

.. math::

    t_\\mathrm{int} = t_{n-1} - t_0, \\qquad R = \\frac{N}{t_\\mathrm{int} A}

with :math:`A` the area of the science pixels searched (border excluded). For WFC3 and NICMOS
:math:`t_0 = 0`, so :math:`t_\\mathrm{int}` is the TIME of the last read (what EXPTIME holds).

Like every detector here, this counts CRs of more than 2 pixels. IR pixels are large (18 and
40 micron) and their absorbers thin, so many CRs light only 1 or 2 pixels: on simulated darks
about 46 % of the WFC3/IR CRs and 24 % of the NICMOS CRs have 3 or more pixels above 5 x the
read noise, and the rate is that of those CRs, not of all particles.
"""

from __future__ import annotations

import errno
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from ._text import plural
from .config import InstrumentConfig
from .frames import FrameError, FrameHeader, companion_path, open_fits, read_header
from .labels import label_crs
from .measure import FrameResult, frame_result, month_of
from .schema import COSMIC_RAYS
from .stats import cr_properties

__all__ = [
    "JUMP_SIGMA",
    "Ramp",
    "read_ramp",
    "read_noise_per_read",
    "new_cr_flags",
    "jump_excess",
    "detect_jumps",
    "ramp_cr_masks",
    "measure_ramp",
    "measure_ima",
    "split_ima",
]

log = logging.getLogger(__name__)

#: Default jump threshold (sigma) of :func:`detect_jumps`.
JUMP_SIGMA = 4.0

#: Extensions of one IMA imset, in file order.
IMSET_EXTENSIONS = ("SCI", "ERR", "DQ", "SAMP", "TIME")

_CR_DTYPES = {c.name: c.dtype for c in COSMIC_RAYS if c.name != "exposure_index"}


@dataclass(frozen=True)
class Ramp:
    """Every read of one IR dark, in time order.

    Attributes
    ----------
    header : FrameHeader
        Metadata (:func:`hstcosmicrays.frames.read_header`).
    counts : ndarray of float32, shape (n_reads, rows, cols)
        Accumulated charge :math:`c_k` (electrons) of each read; index 0 the zeroth read.
    dq : ndarray of int, shape (n_reads, rows, cols)
        Data-quality flags of each read (native byte order; zeros where the file has none).
    time : ndarray of float64, shape (n_reads,)
        TIME of each read (s since the zeroth read).
    readnoise : float
        Read noise of one read (electrons).
    ramp_fitted : bool
        True when the file carries the ramp fit's CR flags (some pixel has ``instrument.dq_cr``
        in some read, or CRCORR/CRIDCALC is ``COMPLETE``).
    """

    header: FrameHeader
    counts: np.ndarray
    dq: np.ndarray
    time: np.ndarray
    readnoise: float
    ramp_fitted: bool

    @property
    def n_reads(self) -> int:
        return int(self.counts.shape[0])

    @property
    def integration_time(self) -> float:
        """Sampled ramp time :math:`t_{n-1} - t_0` (s)."""
        return float(self.time[-1] - self.time[0])


# ---------------------------------------------------------------------------------------------
# reading


def _hdu_array(path: Path, hdu, dtype, shape) -> np.ndarray:
    """Data of an image HDU (a constant array without data is expanded from PIXVALUE)."""
    data = hdu.data
    if data is None:
        h = hdu.header
        if "NPIX1" in h and "NPIX2" in h:
            shape = (int(h["NPIX2"]), int(h["NPIX1"]))
        if shape is None:
            raise FrameError(f"{path}: extension {hdu.name},{hdu.ver} has no data")
        return np.full(shape, h.get("PIXVALUE", 0), dtype=dtype)
    if dtype is None:
        if data.dtype.kind not in "iu":
            raise FrameError(f"{path}: extension {hdu.name},{hdu.ver}: expected integer data, got {data.dtype}")
        return np.asarray(data, dtype=data.dtype.newbyteorder("="))
    return np.asarray(data, dtype=dtype)


def _read_time(path: Path, time_hdu, extver: int, sci_header) -> tuple[float, np.ndarray | None]:
    """TIME of one read (s) and its per-pixel array if the file stores one: the TIME extension
    (its PIXVALUE, or the median of its array), else the SCI header's SAMPTIME."""
    if time_hdu is not None:
        if time_hdu.data is not None:
            t_pix = np.asarray(time_hdu.data, dtype=np.float32)
            return float(np.median(t_pix)), t_pix
        if "PIXVALUE" in time_hdu.header:
            return float(time_hdu.header["PIXVALUE"]), None
    if "SAMPTIME" in sci_header:
        return float(sci_header["SAMPTIME"]), None
    raise FrameError(f"{path}: read EXTVER {extver} has neither a TIME extension nor SAMPTIME")


def read_noise_per_read(*, header, instrument: InstrumentConfig) -> float:
    """Read noise of one read (electrons) of an IR ramp.

    IR headers give the noise of one correlated double sample, the difference of two reads
    (``READNSE[A-D]`` of WFC3/IR, about 20 e-), so the noise of one read is
    :math:`\\mathrm{RN} = \\overline{\\mathrm{READNSE}} / \\sqrt 2` (mean of the non-zero
    amplifier values). Without such keywords (NICMOS) ``instrument.readnoise_default`` is taken
    as the noise of one read.

    Parameters
    ----------
    header : mapping
        The IMA primary header.
    instrument : InstrumentConfig
    """
    values = []
    for key in instrument.readnoise_keywords:
        try:
            v = float(header[key])
        except (KeyError, TypeError, ValueError):
            continue
        if v > 0:
            values.append(v)
    if values:
        return float(np.mean(values)) / math.sqrt(2.0)
    return float(instrument.readnoise_default)


def read_ramp(path: str | Path, *, instrument: InstrumentConfig) -> Ramp:
    """Read every imset of an IMA file into a :class:`Ramp` in time order, in electrons.

    Parameters
    ----------
    path : str or Path
        IMA file of a WFC3/IR or NICMOS dark.
    instrument : InstrumentConfig
        An instrument of kind ``"ir"``.

    Returns
    -------
    Ramp
        :math:`c_k = \\mathrm{SCI}_k \\mathrm{TIME}_k g` (electrons); non-finite values are set
        to 0 and flagged ``instrument.dq_bad`` in that read.

    Raises
    ------
    FrameError
        Not an IR instrument, not FITS, truncated (:func:`hstcosmicrays.frames.open_fits`:
        checked before any read is taken), a required keyword missing (see
        :func:`hstcosmicrays.frames.read_header`), fewer than 2 reads, reads of different
        shapes, a read without TIME/SAMPTIME, or times not increasing.
    """
    path = Path(path)
    if instrument.kind != "ir":
        raise FrameError(f"{path}: {instrument.name} is not an up-the-ramp IR detector")
    header = read_header(path, instrument=instrument)
    gain = 1.0 if header.in_electrons else header.mean_gain
    if not (gain > 0):
        raise FrameError(f"{path}: no gain to convert {header.bunit or 'DN'}/s to electrons")
    with open_fits(path) as hdul:
        primary = hdul[0].header
        readnoise = read_noise_per_read(header=primary, instrument=instrument)
        extvers = sorted(int(h.ver) for h in hdul if h.name == "SCI")
        n = len(extvers)
        if n < 2:
            raise FrameError(f"{path}: {plural(n, 'read')}; an up-the-ramp dark needs at least 2")
        if extvers != list(range(1, n + 1)):
            raise FrameError(f"{path}: SCI extensions {extvers} are not EXTVER 1..{n}")
        if header.nsamp != n:
            log.debug("%s: NSAMP %d but %s; using the extensions", path, header.nsamp, plural(n, "SCI extension"))
        shape = header.shape
        counts = np.empty((n,) + tuple(shape), dtype=np.float32)
        dq = None
        time = np.empty(n, dtype=np.float64)
        for k in range(n):  # time order: read k is EXTVER n - k
            extver = n - k
            sci_hdu = hdul["SCI", extver]
            sci = _hdu_array(path, sci_hdu, np.float32, shape)
            if sci.shape != tuple(shape):
                raise FrameError(f"{path}: read EXTVER {extver} has shape {sci.shape}, not {tuple(shape)}")
            try:
                time_hdu = hdul["TIME", extver]
            except KeyError:
                time_hdu = None
            time[k], t_pix = _read_time(path, time_hdu, extver, sci_hdu.header)
            if t_pix is None or t_pix.shape != sci.shape:
                t_pix = np.float32(time[k])
            np.multiply(sci, t_pix * np.float32(gain), out=counts[k])
            try:
                d = _hdu_array(path, hdul["DQ", extver], None, shape)
            except KeyError:
                d = np.zeros(shape, dtype=np.int16)
            if dq is None:
                dq = np.empty((n,) + tuple(shape), dtype=np.promote_types(d.dtype, np.int16))
            dq[k] = d
        fitted_kw = any(
            str(primary.get(key, "")).strip().upper() == "COMPLETE" for key in ("CRCORR", "CRIDCALC")
        )
    if np.any(np.diff(time) <= 0):
        raise FrameError(f"{path}: read times {time.tolist()} do not increase")
    bad = ~np.isfinite(counts)
    if bad.any():
        counts[bad] = 0.0
        dq[bad] |= instrument.dq_bad
    ramp_fitted = fitted_kw or bool(np.any(dq & instrument.dq_cr))
    return Ramp(header=header, counts=counts, dq=dq, time=time, readnoise=readnoise, ramp_fitted=ramp_fitted)


# ---------------------------------------------------------------------------------------------
# which pixels jumped in which read


def new_cr_flags(*, dq: np.ndarray, cr_bit: int) -> np.ndarray:
    """Pixels whose CR bit is set in read k but not in read k-1.

    Parameters
    ----------
    dq : ndarray of int, shape (n_reads, rows, cols)
        DQ of every read in time order.
    cr_bit : int
        The CR bit of the ramp fit (8192 WFC3, 512 NICMOS).

    Returns
    -------
    ndarray of bool, shape (n_reads - 1, rows, cols)
        Plane j: read k = j + 1.
    """
    flagged = (np.asarray(dq) & cr_bit) != 0
    return flagged[1:] & ~flagged[:-1]


def jump_excess(*, counts: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Charge of each difference in excess of the pixel's robust dark rate.

    .. math::

        r = \\mathrm{median}_k \\frac{c_k - c_{k-1}}{t_k - t_{k-1}}, \\qquad
        J_k = (c_k - c_{k-1}) - r\\,(t_k - t_{k-1})

    Parameters
    ----------
    counts : ndarray, shape (n_reads, rows, cols)
        Accumulated charge (electrons), time order.
    time : ndarray, shape (n_reads,)
        Read times (s), increasing.

    Returns
    -------
    excess : ndarray of float32, shape (n_reads - 1, rows, cols)
        :math:`J_k` (electrons); plane j is read k = j + 1.
    rate : ndarray of float32, shape (rows, cols)
        :math:`r` (electrons/s).
    """
    time = np.asarray(time, dtype=np.float64)
    dt = np.diff(time).astype(np.float32)[:, None, None]
    excess = np.diff(np.asarray(counts, dtype=np.float32), axis=0)
    rate = np.median(excess / dt, axis=0)
    excess -= rate * dt
    return excess, rate.astype(np.float32, copy=False)


def detect_jumps(
    *, excess: np.ndarray, rate: np.ndarray, time: np.ndarray, readnoise: float, ksigma: float = JUMP_SIGMA,
) -> np.ndarray:
    """Pixels whose charge jumped during each read (no ramp-fit flags needed).

    A pixel is hit in read k when :math:`J_k > \\kappa \\sqrt{2\\,\\mathrm{RN}^2 + \\max(r,0)\\,\\Delta t_k}`.

    Parameters
    ----------
    excess, rate : ndarray
        From :func:`jump_excess` (electrons, electrons/s).
    time : ndarray, shape (n_reads,)
        Read times (s).
    readnoise : float
        Read noise of one read (electrons).
    ksigma : float
        :math:`\\kappa`.

    Returns
    -------
    ndarray of bool, shape (n_reads - 1, rows, cols)

    Raises
    ------
    ValueError
        Fewer than 3 differences: the median rate would follow a jump.
    """
    if excess.shape[0] < 3:
        raise ValueError(f"jump detection needs at least 3 differences (NSAMP >= 4), got {excess.shape[0]}")
    dt = np.diff(np.asarray(time, dtype=np.float64)).astype(np.float32)[:, None, None]
    var = 2.0 * np.float32(readnoise) ** 2 + np.maximum(rate, 0.0) * dt
    return excess > np.float32(ksigma) * np.sqrt(var)


def ramp_cr_masks(
    *, ramp: Ramp, instrument: InstrumentConfig, ksigma: float | None = None, source: str = "auto",
) -> tuple[np.ndarray, np.ndarray, str]:
    """CR pixels of each read of a ramp, and the jump image they are measured on.

    Parameters
    ----------
    ramp : Ramp
    instrument : InstrumentConfig
        ``dq_cr`` (the ramp fit's CR bit) and ``dq_bad`` (never a CR).
    ksigma : float, optional
        Jump threshold of :func:`detect_jumps` (default ``instrument.jump_sigma``, 4).
    source : str
        ``"flags"``, ``"jumps"`` or ``"auto"`` (flags when ``ramp.ramp_fitted``).

    Returns
    -------
    masks : ndarray of bool, shape (n_reads - 1, rows, cols)
        Plane j: pixels hit during read k = j + 1, bad pixels of that read removed. With
        flags: newly flagged pixels, plus flagged pixels whose jump passes :func:`detect_jumps`.
    excess : ndarray of float32, shape (n_reads - 1, rows, cols)
        Jump :math:`J_k` (electrons).
    source : str
        ``"flags"`` or ``"jumps"``: what was used.
    """
    if source not in ("auto", "flags", "jumps"):
        raise ValueError(f"ramp_cr_masks: source must be 'auto', 'flags' or 'jumps', got {source!r}")
    if source == "auto":
        source = "flags" if ramp.ramp_fitted else "jumps"
    if ksigma is None:
        ksigma = instrument.jump_sigma
    excess, rate = jump_excess(counts=ramp.counts, time=ramp.time)
    if source == "flags":
        masks = new_cr_flags(dq=ramp.dq, cr_bit=instrument.dq_cr)
        if excess.shape[0] >= 3:  # a pixel flagged before can be hit again: its jump shows it
            flagged_before = (ramp.dq[:-1] & instrument.dq_cr) != 0
            masks |= flagged_before & detect_jumps(
                excess=excess, rate=rate, time=ramp.time, readnoise=ramp.readnoise, ksigma=ksigma)
    else:
        masks = detect_jumps(excess=excess, rate=rate, time=ramp.time, readnoise=ramp.readnoise, ksigma=ksigma)
    if instrument.dq_bad:
        masks &= (ramp.dq[1:] & instrument.dq_bad) == 0
    return masks, excess, source


# ---------------------------------------------------------------------------------------------
# measuring


def measure_ramp(
    *, ramp: Ramp, instrument: InstrumentConfig, spt_path: Path | None, month: str, group_id: int = -1,
    ksigma: float | None = None, source: str = "auto",
) -> FrameResult:
    """Label and measure the CRs of every read of a ramp: one :class:`FrameResult`.

    Parameters
    ----------
    ramp : Ramp
    instrument : InstrumentConfig
    spt_path : Path or None
        SPT file with the orbit keywords.
    month : str
        ``YYYY-MM`` of the month window.
    group_id : int
        -1: IR ramps are not CR-SPLIT groups.
    ksigma, source
        See :func:`ramp_cr_masks`.

    Returns
    -------
    FrameResult
        ``method`` ``"ir_ramp"``; ``cosmic_rays`` in read order, then label order, with ``read``
        = k (1 = the first read after the zeroth), ``chip`` 1, ``energy`` the jump in electrons;
        ``integration_time`` the sampled ramp time :math:`t_{n-1} - t_0`; ``fraction_hit`` the
        science pixels inside a counted CR of any read, each pixel once (a pixel hit in two
        reads is in two CRs).
    """
    masks, excess, used = ramp_cr_masks(ramp=ramp, instrument=instrument, ksigma=ksigma, source=source)
    b = max(int(instrument.border), 0)
    parts = []
    # pixels inside a counted CR of any read: a pixel hit in two reads is one pixel hit
    counted = np.zeros(masks.shape[1:], dtype=bool)
    for j in range(masks.shape[0]):  # one labelling per read (a few tens at most)
        labels, n = label_crs(
            dq=masks[j].view(np.uint8), cr_bit=1, bad_bit=0, min_pixels=3,
            max_pixels=instrument.max_cr_pixels, border=b,
        )
        counted |= labels > 0
        cols = cr_properties(labels=labels, image=excess[j], n=n).as_columns()
        cols["chip"] = np.full(n, instrument.chips[0])
        cols["read"] = np.full(n, j + 1)
        parts.append(cols)
    cosmic_rays = {k: np.concatenate([p[k] for p in parts]).astype(dt) for k, dt in _CR_DTYPES.items()}
    rows, cols_ = ramp.counts.shape[1:]
    n_science = max(rows - 2 * b, 0) * max(cols_ - 2 * b, 0)
    log.debug(
        "%s: %s, CRs from %s, %s over %.1f s", ramp.header.rootname, plural(ramp.n_reads, "read"), used,
        plural(len(cosmic_rays["n_pixels"]), "CR"), ramp.integration_time,
    )
    return frame_result(
        header=ramp.header, cosmic_rays=cosmic_rays, n_science=n_science, instrument=instrument,
        spt_path=spt_path, method="ir_ramp", group_id=group_id, month=month,
        integration_time=ramp.integration_time, n_hit=int(np.count_nonzero(counted)),
    )


def measure_ima(
    path: str | Path, *, instrument: InstrumentConfig, spt_path: Path | None = None, month: str | None = None,
    group_id: int = -1, ksigma: float | None = None, source: str = "auto",
) -> FrameResult:
    """:func:`read_ramp` + :func:`measure_ramp` for one IMA file.

    ``spt_path`` defaults to ``<rootname>_spt.fits`` beside the file, ``month`` to the month of
    EXPSTART.
    """
    path = Path(path)
    ramp = read_ramp(path, instrument=instrument)
    if spt_path is None:
        spt_path = companion_path(path, "spt")
    if month is None:
        month = month_of(ramp.header.expstart)
    return measure_ramp(
        ramp=ramp, instrument=instrument, spt_path=spt_path, month=month, group_id=group_id,
        ksigma=ksigma, source=source,
    )


# ---------------------------------------------------------------------------------------------
# export: one file per read


def split_ima(path: str | Path, *, out_dir: str | Path) -> list[Path]:
    """Write each read of an IMA file as its own FITS file.

    Each output holds the IMA's primary header and the SCI, ERR, DQ, SAMP and TIME extensions of
    one read (those present), renumbered EXTVER 1. It is named
    ``<rootname>_read<kk>.fits`` with ``kk`` the read's place in time order (``00`` the zeroth
    read); its primary header gets ``READNUM`` (that number), ``IMSET`` (the read's EXTVER in
    the IMA), ``ORIGNSMP`` (the IMA's NSAMP) and ``NSAMP = 1``. Existing outputs are replaced;
    the input is not changed.

    Parameters
    ----------
    path : str or Path
        IMA file.
    out_dir : str or Path
        Created if needed.

    Returns
    -------
    list of Path
        The files written, in time order.

    Raises
    ------
    FrameError
        Not a FITS file, a truncated one (:func:`hstcosmicrays.frames.open_fits`; before anything
        is written), no SCI extension, or no NSAMP keyword (not a ramp, e.g. an FLT file).
    FileNotFoundError
        No such file.
    NotADirectoryError
        ``out_dir`` exists and is not a directory (checked before anything is read).
    """
    path = Path(path)
    out_dir = Path(out_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(out_dir))
    written = []
    with open_fits(path) as hdul:
        primary = hdul[0].header
        extvers = sorted({int(h.ver) for h in hdul if h.name == "SCI"})
        if not extvers:
            raise FrameError(f"{path}: no SCI extension; not an IMA file")
        if "NSAMP" not in primary:
            raise FrameError(f"{path}: no NSAMP keyword; not an up-the-ramp IMA file (WFC3/IR, NICMOS)")
        n = len(extvers)
        rootname = str(primary.get("ROOTNAME", path.name.split("_")[0])).strip().lower()
        out_dir.mkdir(parents=True, exist_ok=True)
        for extver in sorted(extvers, reverse=True):  # time order: zeroth read first
            read = n - extvers.index(extver) - 1
            ph = primary.copy()
            ph["NSAMP"] = (1, "reads in this file")
            ph["ORIGNSMP"] = (int(primary.get("NSAMP", n)), "NSAMP of the IMA this read comes from")
            ph["READNUM"] = (read, "read number in time order (0 = zeroth read)")
            ph["IMSET"] = (extver, "EXTVER of this read in the IMA")
            hdus = [fits.PrimaryHDU(header=ph)]
            for name in IMSET_EXTENSIONS:
                try:
                    src = hdul[name, extver]
                except KeyError:
                    continue
                h = src.header.copy()
                h["EXTVER"] = 1
                data = None if src.data is None else np.array(src.data)
                hdus.append(fits.ImageHDU(data=data, header=h, name=name, ver=1))
            out = out_dir / f"{rootname}_read{read:02d}.fits"
            fits.HDUList(hdus).writeto(out, overwrite=True)
            written.append(out)
    return written

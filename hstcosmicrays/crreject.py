"""CR-SPLIT cosmic-ray rejection, equivalent to the STScI tools acsrej, wf3rej and ocrreject.

Two or more frames of one detector with the same amplifiers, gain, exposure time and size are
compared pixel by pixel; a pixel that stands out of the stack's clean estimate by more than
``CRSIGMAS`` standard deviations is a cosmic-ray hit, and its neighbours within ``CRRADIUS``
are flagged too when they stand out by more than ``CRTHRESH`` times that threshold. A frame is
one exposure: an FLT file, or one imset of a STIS CR-SPLIT FLT, which holds its sub-exposures
as imsets SCI,1..N (ocrreject reads them so; :func:`hstcosmicrays.frames.read_headers`).

Algorithm (per chip; what the hstcal C code does, checked line by line)
-----------------------------------------------------------------------
Let :math:`s_k` be the science array of frame :math:`k` (file units), :math:`g` the gain
(electrons per file unit, 1 for files in electrons), :math:`t_k` its EXPTIME (s) and
:math:`b_k` its sky (file units).

1. **Sky.** ``skysub = none``: :math:`b_k = 0`. ``skysub = mode``: the mode of a histogram of
   the frame's pixels whose DQ is exactly 0, bins 1 file unit wide. The range comes from the
   *first* frame's pixels that pass BADINPDQ: ``lo = int(max(min, -15000))`` (truncated),
   ``mean = int(sum/n + 1)`` (1 if the sum is not positive), ``hi = 2 mean - lo``; at least
   1000 and at most 10000 bins (wider bins above that). The mode is the peak bin refined by a
   parabola through it and its two neighbours (``cr_mode.c``).
2. Sky-subtracted counts in electrons :math:`e_k = (s_k - b_k)\\,g`; rates :math:`e_k/t_k`.
3. **Initial guess** :math:`\\bar r`: the per-pixel minimum (``initgues = minimum``) or median
   (``median``; mean of the two middle values for an even count) of :math:`e_k/t_k` over the
   frames where the pixel is good; over all frames where no frame is good (such a pixel is
   never a hit, only the spill test below looks at it).
4. **One iteration per value** :math:`\\sigma` of CRSIGMAS, with the predicted counts
   :math:`p_k = \\bar r\\,t_k` and :math:`S_k = \\max(p_k, 0)`:

   * noise model ``readnoise`` (WFC3, STIS; written in electrons, identical to the C code's DN
     form multiplied by :math:`g^2`):
     :math:`V'_k = \\mathrm{RN}^2 + \\max(p_k + b_k g, 0)`;
   * noise model ``err`` (ACS): :math:`V'_k = (\\mathrm{ERR}_k\\,g)^2`;
   * :math:`V_k = V'_k + (\\mathrm{SCALENSE}/100 \\cdot S_k)^2`;
   * hit: :math:`(e_k - p_k)^2 > \\sigma^2 V_k` at a pixel whose DQ has no BADINPDQ bit;
   * spill: a pixel within CRRADIUS of a hit (:math:`dx^2 + dy^2 \\le R^2`) is flagged when
     :math:`(e_k - p_k)^2 > (\\mathrm{CRTHRESH}\\,\\sigma)^2 V'_k` (BADINPDQ pixels included, as in
     the C code; ``CRTHRESH <= 0`` flags every neighbour);
   * new estimate: :math:`\\bar r = \\sum_k u_k e_k / \\sum_k u_k t_k` over the frames where the
     pixel is good and not flagged (:math:`u_k = 1`); unchanged where no frame is left.

   Only the flags of the last iteration are kept (each iteration starts from the inputs' DQ).
5. The combined (crj) image is :math:`\\bar r \\sum_k t_k + \\max(\\sum_k b_k, 0)` in file units,
   0 where every frame is flagged or bad.

Where this differs from the C code, on purpose
----------------------------------------------
* **Spill direction.** ocrreject (STIS) spills to neighbours on all sides. acsrej and wf3rej
  process the image in a buffer scrolling upwards and write a row's flags as soon as it is the
  centre row, so spill to rows *below* a hit is lost, and wf3rej tests spill to rows *above* a
  hit against a threshold buffer that still holds the data values. Here the spill is symmetric
  for every instrument (the STIS behaviour, and what the algorithm describes).
* **Internal codes.** The C code keeps DQ values and its own marks (HIT 8, SPILL 2, EXCLUDE 4)
  in one array, so an input pixel whose DQ is exactly 2 or 8 (with those bits not in BADINPDQ)
  ends up flagged as a cosmic ray, and one whose DQ is exactly 4 is never tested. Here DQ bits
  are only ever tested against BADINPDQ.
* acsrej on DARK/BIAS images drops bit 4 from BADINPDQ and averages excluded pixels; here the
  parameters are applied as given.
* acsrej's minimum initial guess sets a pixel to 0 when the frame holding the minimum is bad;
  here the minimum is taken over good frames only (STIS takes it over all frames).
* A pixel excluded by BADINPDQ in *every* frame (a flagged hot pixel or bad column) gets the
  estimate 0 in acsrej and wf3rej, so the spill test, which does look at excluded pixels,
  flags every such pixel within CRRADIUS of a hit whatever its value: on simulated WFC3/UVIS
  darks that was half of all false flags (hot pixels, DQ 16). Here its estimate is the minimum
  or median over all frames (ocrreject's rule, which ignores DQ in the initial guess), so
  spill flags it only when it stands out in its own frame, e.g. a CR on a bad pixel.
* A pixel excluded by BADINPDQ that is first marked as spill can, in the C code, be tested as a
  hit itself and spill further; here excluded pixels are never hits (they can be spill).
* DQ 8192 is OR-ed into the inputs; the C code also clears 8192 where a pixel is not flagged now.
  The pipeline, which never writes its inputs, reads them with the CR bit cleared
  (``ignore_dq``) and stores only its own flags, so FLT files that already carry the STScI
  pipeline's flags (CRMASK of a CR-SPLIT association) give the same CRs as files without.
* Row selection in a CRREJTAB ignores CCDCHIP in the C code; :func:`select_crrejtab_row` keeps
  that behaviour unless ``ccdchip`` is given.

False flags on pure noise
-------------------------
Even a stack with no cosmic ray gets flags, at rates fixed by the parameters. For Gaussian noise
of standard deviation :math:`\\sigma` described exactly by the noise model, one iteration at
:math:`s` and :math:`Q(x) = P(Z > x)` for a standard normal :math:`Z`:

* a pair against its minimum flags a fraction :math:`p = Q(s/\\sqrt 2)` of the frame-pixels
  (:math:`e_k - e_j` has variance :math:`2\\sigma^2`);
* three frames against their median flag :math:`\\tfrac{2}{3} P(X_{(3)} - X_{(2)} > s)`;
* spill adds, for a pixel with :math:`m` neighbours within CRRADIUS,
  :math:`(q - p)\\,(1 - (1 - p)^m)` with :math:`q = Q(c\\,s/\\sqrt 2)`, :math:`c` = CRTHRESH.

(``tests/test_crreject.py`` checks these to within 3 %.) With several iterations the last one
compares each value with the mean of the others and itself, whose residual has variance
:math:`(1 - 1/n)\\,\\sigma^2`, so the rate grows with the number of frames :math:`n`. Measured
on such noise with the real tables: the ACS/WFC rows (5,4,3 sigma, CRTHRESH 0.5555, radius 2.1)
flag 0.03 % of the pixels for :math:`n = 2`, 0.08 % for 4 and 0.24 % for 8; the STIS/CCD pair
row for long darks (one 4-sigma iteration against the minimum, variance from the lower frame)
flags 0.6 %.

Memory and speed
----------------
Each chip is processed in blocks of rows, each with a margin of ``len(CRSIGMAS) * floor(R)``
rows on both sides, so that all iterations (whose spill reaches ``floor(R)`` rows further each
time) run inside the block; results are kept for the block's own rows only. The inputs may be
numpy arrays, memory maps, or anything that returns an array for ``source[a:b]`` (an astropy
``ImageHDU.section``), so a stack of any size needs memory for its masks plus one block.
Blocks may run on several threads (``threads``): numpy releases the GIL for the work, and reads
from inputs that are not arrays in memory are serialised by a lock (a section reads through
its file object, which two threads must not share at once).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ._text import plural
from .config import Config, ConfigError, CRRejectParams, InstrumentConfig

__all__ = [
    "CRRejectError",
    "clear_bits",
    "Stack",
    "Exclusion",
    "ChipRejection",
    "FileSummary",
    "CRRejectReport",
    "parse_crsigmas",
    "select_crrejtab_row",
    "select_configured_row",
    "params_for_stack",
    "parse_param",
    "parameter_source",
    "group_stacks",
    "screen_frame",
    "sky_mode",
    "spill_offsets",
    "reject_chip",
    "reject_stack",
    "ChipInfo",
    "reject_files",
    "crreject_files",
]

log = logging.getLogger(__name__)

#: QUALITY keyword values that do not flag a problem (compared upper-case, stripped).
BENIGN_QUALITY = frozenset({"", "OK", "GOOD", "NONE", "NORMAL", "NOMINAL", "FULL"})

#: DQ bit of Reed-Solomon decoding errors (data replaced by fill) in ACS.
DQ_REED_SOLOMON = 2

#: Largest EXPTIME difference (s) between frames rejected together.
EXPTIME_TOLERANCE = 0.01

#: Largest number of elements of one work array of a block (float32: 64 MB).
MAX_BLOCK_ELEMENTS = 1 << 24


class CRRejectError(ValueError):
    """Inputs that cannot be rejected together; the message names the file(s) and the reason."""


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Stack:
    """Frames that can be rejected together (a CR-SPLIT set, or all compatible darks of a month).

    Attributes
    ----------
    group_id : int
        Number of the stack within the call of :func:`group_stacks` (0, 1, ... by first EXPSTART).
    headers : tuple of FrameHeader
        The frames, in EXPSTART order.
    """

    group_id: int
    headers: tuple

    @property
    def n_images(self) -> int:
        return len(self.headers)

    @property
    def rejectable(self) -> bool:
        """False for a stack of one frame: there is nothing to compare it with."""
        return len(self.headers) >= 2

    @property
    def reason(self) -> str | None:
        """Why the stack cannot be rejected (None when it can)."""
        return None if self.rejectable else "single frame: no CR-SPLIT partner to reject cosmic rays against"

    @property
    def exptime(self) -> float:
        """Total EXPTIME (s) of the stack."""
        return float(sum(h.exptime for h in self.headers))

    @property
    def mean_exptime(self) -> float:
        """Mean EXPTIME (s), the MEANEXP used to select a CRREJTAB row."""
        return self.exptime / max(len(self.headers), 1)

    @property
    def rootnames(self) -> tuple[str, ...]:
        return tuple(h.rootname for h in self.headers)


@dataclass(frozen=True)
class Exclusion:
    """A frame left out of every stack, and why."""

    rootname: str
    reason: str


@dataclass(frozen=True)
class ChipRejection:
    """Result of rejecting one chip of a stack.

    Attributes
    ----------
    masks : tuple of ndarray of bool
        Cosmic-ray mask of each frame (hits and spill of the last iteration).
    sky : tuple of float
        Sky of each frame (file units), 0 with ``skysub = none``.
    combined, combined_err : ndarray of float32 or None
        The crj image and its error (file units of the first frame), when asked for.
    combined_dq : ndarray of int32 or None
        OR of the inputs' DQ without the CR bit, plus the CR bit where every frame is flagged.
    """

    masks: tuple
    sky: tuple
    combined: Optional[np.ndarray] = None
    combined_err: Optional[np.ndarray] = None
    combined_dq: Optional[np.ndarray] = None


# ---------------------------------------------------------------------------------------------
# parameters


def parse_crsigmas(text: Any) -> tuple[float, ...]:
    """CRSIGMAS as a tuple of floats.

    Accepts a sequence of numbers or a string with values separated by commas, semicolons,
    slashes or blanks (as the C ``strtor`` does), e.g. ``"6.5,5.5,4.5"`` or ``"5,4.0"``.

    Raises
    ------
    CRRejectError
        Empty, non-numeric or non-positive values.
    """
    if isinstance(text, (bytes, np.bytes_)):
        text = text.decode("ascii", "replace")
    if isinstance(text, str):
        parts = [p for p in text.replace(";", ",").replace("/", ",").replace(" ", ",").split(",") if p.strip()]
    else:
        try:
            parts = list(text)
        except TypeError:
            parts = [text]
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise CRRejectError(f"CRSIGMAS: expected numbers separated by commas, got {text!r}") from None
    if not values or any(not (v > 0) or not math.isfinite(v) for v in values):
        raise CRRejectError(f"CRSIGMAS: expected one or more positive numbers, got {text!r}")
    return values


def _initgues(value: Any) -> str:
    text = str(value).strip().lower()
    if text[:3] == "med":
        return "median"
    if text[:3] == "min":
        return "minimum"
    raise CRRejectError(f"INITGUES: expected 'minimum' or 'median', got {value!r}")


def _skysub(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("none", "mode"):
        return text
    raise CRRejectError(f"SKYSUB: expected 'none' or 'mode', got {value!r}")


def _table_columns(table: Any) -> tuple[dict[str, np.ndarray], str]:
    """Columns (lower-case names -> arrays, masked entries as NaN) and a name for messages."""
    if isinstance(table, (str, os.PathLike)):
        from astropy.io import fits

        path = Path(table)
        try:
            with fits.open(path) as hdul:
                hdu = next((h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)), None)
                if hdu is None:
                    raise CRRejectError(f"{path}: no binary table extension (not a CRREJTAB)")
                cols = {name.lower(): np.array(hdu.data[name]) for name in hdu.columns.names}
        except FileNotFoundError:
            raise CRRejectError(f"{path}: CRREJTAB not found") from None
        except OSError as exc:
            raise CRRejectError(f"{path}: cannot read CRREJTAB ({exc})") from None
        return cols, str(path)
    names = getattr(table, "colnames", None) or getattr(getattr(table, "dtype", None), "names", None)
    if not names:
        raise CRRejectError(f"CRREJTAB: expected a FITS file or a table, got {type(table).__name__}")
    cols = {}
    for name in names:
        col = table[name]
        if np.ma.isMaskedArray(col) or hasattr(col, "mask"):
            arr = np.ma.asarray(col)
            if arr.dtype.kind == "f":
                arr = arr.filled(np.nan)
            else:
                arr = np.asarray(arr)
        else:
            arr = np.asarray(col)
        cols[name.lower()] = arr
    source = getattr(table, "meta", {}).get("FILENAME", "") if hasattr(table, "meta") else ""
    return cols, f"CRREJTAB {source}".strip() if source else "CRREJTAB (table)"


def _best_row(*, crsplit, meanexp, n_images: int, mean_exptime: float, rows=None) -> int | str:
    """Index of the row the STScI tools choose (see :func:`select_crrejtab_row`), or a message
    (with a ``{chip}`` slot) when no row matches. ``meanexp`` NaN matches any exposure."""
    crsplit = np.asarray(crsplit).astype(np.int64)
    meanexp = np.asarray(meanexp, dtype=np.float64)
    meanexp = np.where(np.isfinite(meanexp), meanexp, 1.6e38)
    usable = np.ones(crsplit.size, dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    n = min(int(n_images), int(crsplit.max()))
    diff = meanexp - float(mean_exptime)
    match = usable & (crsplit == n) & (diff >= 0)
    if not match.any():
        return (f"no row with CRSPLIT={n}{{chip}} and MEANEXP >= {float(mean_exptime):g} s "
                f"(for {plural(n_images, 'image')})")
    idx = np.flatnonzero(match)
    return int(idx[np.flatnonzero(diff[idx] == diff[idx].min())[-1]])


def select_configured_row(*, instrument: InstrumentConfig, n_images: int, mean_exptime: float) -> CRRejectParams:
    """The instrument's configured parameters for a stack: the ``crreject_rows`` row chosen by
    the CRREJTAB rule (:func:`select_crrejtab_row`), completed from ``crreject``; ``crreject``
    itself when the instrument has no rows.

    Raises
    ------
    CRRejectError
        No configured row matches the stack.
    """
    best = _configured_row_index(instrument=instrument, n_images=n_images, mean_exptime=mean_exptime)
    if best is None:
        return instrument.crreject
    return instrument.crreject_rows[best].params(instrument.crreject)


def _configured_row_index(*, instrument: InstrumentConfig, n_images: int, mean_exptime: float) -> int | None:
    """Index of the ``crreject_rows`` row for a stack (see :func:`select_configured_row`); None
    when the instrument has no rows."""
    table = instrument.crreject_rows
    if not table:
        return None
    # the real tables hold MEANEXP as 32-bit floats: compare with the same values
    meanexp = [np.nan if r.meanexp is None else float(np.float32(r.meanexp)) for r in table]
    best = _best_row(crsplit=[r.crsplit for r in table], meanexp=meanexp, n_images=n_images,
                     mean_exptime=mean_exptime)
    if isinstance(best, str):
        raise CRRejectError(f"instruments.{instrument.name}.crreject_rows: {best.format(chip='')}")
    return best


def parameter_source(*, instrument: InstrumentConfig, n_images: int, mean_exptime: float,
                     crrejtab: Any = None) -> str:
    """Where :func:`params_for_stack` takes a stack's parameters from, in words: the CRREJTAB, the
    instrument's ``crreject``, or the ``crreject_rows`` row chosen for the stack (which then
    wins over ``crreject`` for the keys it sets)."""
    if crrejtab is not None:
        return f"parameters from {crrejtab}"
    best = _configured_row_index(instrument=instrument, n_images=n_images, mean_exptime=mean_exptime)
    if best is None:
        return "configured parameters"
    row = instrument.crreject_rows[best]
    meanexp = "any" if row.meanexp is None else f"{row.meanexp:g} s"
    return (f"configured parameters: instruments.{instrument.name}.crreject_rows[{best}], the row for "
            f"{plural(n_images, 'image')} of mean EXPTIME {mean_exptime:g} s (CRSPLIT {row.crsplit}, "
            f"MEANEXP {meanexp}), completed from crreject")


def select_crrejtab_row(
    *, table: Any, n_images: int, mean_exptime: float, ccdchip: Optional[int] = None
) -> CRRejectParams:
    """Choose the CRREJTAB row for a stack exactly as acsrej, wf3rej and ocrreject do.

    Rule (``rejpar_in`` / ``o_cal2_in`` in hstcal): ``n = min(n_images, max(CRSPLIT))``; among
    the rows with ``CRSPLIT == n`` and ``MEANEXP >= mean_exptime`` take the one with the smallest
    ``MEANEXP - mean_exptime``; on a tie the *last* such row wins. A null (NaN) MEANEXP is read
    by the C table library as 1.6e38, so it matches any exposure but loses to any finite
    MEANEXP that also matches.

    Parameters
    ----------
    table : str, Path or table
        A CRREJTAB FITS file, or an already-read table (astropy Table or FITS record array)
        with the columns CRSPLIT, MEANEXP, CRSIGMAS, CRRADIUS, CRTHRESH, INITGUES, SKYSUB,
        SCALENSE, BADINPDQ.
    n_images : int
        Number of frames in the stack.
    mean_exptime : float
        Total exposure time divided by the number of frames (s).
    ccdchip : int, optional
        Keep only rows of this CCDCHIP when the table has that column (the C code does not
        look at CCDCHIP; every real table has identical rows for both chips).

    Returns
    -------
    CRRejectParams

    Raises
    ------
    CRRejectError
        A missing column, or no matching row; the message names the table.
    """
    cols, name = _table_columns(table)
    for col in ("crsplit", "meanexp", "crsigmas", "crradius", "crthresh", "initgues", "skysub",
                "scalense", "badinpdq"):
        if col not in cols:
            raise CRRejectError(f"{name}: column {col.upper()} does not exist")
    if np.asarray(cols["crsplit"]).size == 0:
        raise CRRejectError(f"{name}: the table has no rows")
    rows = None
    if ccdchip is not None and "ccdchip" in cols:
        rows = np.asarray(cols["ccdchip"]).astype(np.int64) == int(ccdchip)
    best = _best_row(crsplit=cols["crsplit"], meanexp=cols["meanexp"], n_images=n_images,
                     mean_exptime=mean_exptime, rows=rows)
    if isinstance(best, str):
        chip = f", CCDCHIP={ccdchip}" if rows is not None else ""
        raise CRRejectError(f"{name}: {best.format(chip=chip)}")

    def text(col: str) -> str:
        value = cols[col][best]
        return value.decode() if isinstance(value, bytes) else str(value)

    try:
        return CRRejectParams(
            crsigmas=parse_crsigmas(text("crsigmas")),
            crradius=float(cols["crradius"][best]),
            crthresh=float(cols["crthresh"][best]),
            initgues=_initgues(text("initgues")),
            skysub=_skysub(text("skysub")),
            scalense=float(cols["scalense"][best]),
            badinpdq=int(cols["badinpdq"][best]),
        )
    except (CRRejectError, ConfigError) as exc:
        raise CRRejectError(f"{name}, row {best + 1}: {exc}") from None


_PARAM_NAMES = ("crsigmas", "crradius", "crthresh", "initgues", "skysub", "scalense", "badinpdq")

#: The largest BADINPDQ: the DQ arrays of HST files are 16-bit signed integers.
DQ_BITS_MAX = 32767

#: What each parameter takes, for the messages about a bad value.
_EXPECTED = {
    "crsigmas": "positive numbers, comma-separated, e.g. 6.5,5.5,4.5",
    "crradius": "a number of pixels, 0 or more",
    "crthresh": "a number, e.g. 0.5555 (0 or less flags every neighbour)",
    "initgues": "'minimum' or 'median'",
    "skysub": "'none' or 'mode'",
    "scalense": "a percentage, 0 or more",
    "badinpdq": f"DQ bits, a whole number 0 to {DQ_BITS_MAX} (the sum of the bits, e.g. 32575)",
}


def parse_param(key: str, value: Any) -> Any:
    """One CR-rejection parameter (a name of ``CRRejectParams``) from a value or its text.

    ``crsigmas`` as :func:`parse_crsigmas`; ``initgues`` ``min``/``minimum``/``med``/``median``;
    ``skysub`` ``none``/``mode``; ``crradius`` (pixels) and ``scalense`` (percent) finite and 0 or
    more; ``crthresh`` finite (0 or less flags every neighbour); ``badinpdq`` a whole number 0 to
    :data:`DQ_BITS_MAX`.

    Raises
    ------
    CRRejectError
        An unknown name, or a value that is not what the parameter takes (the message says what is).
    """
    if key not in _PARAM_NAMES:
        raise CRRejectError(f"unknown CR-rejection parameter {key!r}; expected one of {', '.join(_PARAM_NAMES)}")
    try:
        if key == "crsigmas":
            return parse_crsigmas(value)
        if key == "initgues":
            return _initgues(value)
        if key == "skysub":
            return _skysub(value)
        if key == "badinpdq":
            number = int(value.strip()) if isinstance(value, str) else value
            if isinstance(number, bool) or int(number) != number or not 0 <= int(number) <= DQ_BITS_MAX:
                raise ValueError
            return int(number)
        number = float(value)
        if not math.isfinite(number) or (key != "crthresh" and number < 0):
            raise ValueError
        return number
    except (TypeError, ValueError):  # CRRejectError is a ValueError too
        raise CRRejectError(f"expected {_EXPECTED[key]}, got {value!r}") from None


def params_for_stack(
    *,
    instrument: InstrumentConfig,
    n_images: int,
    mean_exptime: float,
    crrejtab: Any = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> CRRejectParams:
    """Parameters for one stack: a CRREJTAB row when a table is given, else the instrument's
    configured parameters (:func:`select_configured_row`), then any ``overrides``.

    Parameters
    ----------
    instrument : InstrumentConfig
    n_images : int
    mean_exptime : float
        Mean EXPTIME of the stack (s).
    crrejtab : str, Path or table, optional
        See :func:`select_crrejtab_row`.
    overrides : mapping, optional
        Any of ``crsigmas`` (sequence or ``"6.5,5.5,4.5"``), ``crradius``, ``crthresh``,
        ``initgues`` (``min``/``minimum``/``med``/``median``), ``skysub``, ``scalense``,
        ``badinpdq``. None values are ignored.

    Raises
    ------
    CRRejectError
        An unknown override or a bad value; a table problem (see :func:`select_crrejtab_row`).
    """
    if crrejtab is not None:
        params = select_crrejtab_row(table=crrejtab, n_images=n_images, mean_exptime=mean_exptime)
    else:
        params = select_configured_row(instrument=instrument, n_images=n_images, mean_exptime=mean_exptime)
    if not overrides:
        return params
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in _PARAM_NAMES:
            raise CRRejectError(f"unknown CR-rejection parameter {key!r}; expected one of {', '.join(_PARAM_NAMES)}")
        try:
            changes[key] = parse_param(key, value)
        except CRRejectError as exc:
            raise CRRejectError(f"CR-rejection parameter {key}: {exc}") from None
    try:
        return dataclasses.replace(params, **changes)
    except ConfigError as exc:
        raise CRRejectError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# grouping and screening


def _frame_label(header) -> str:
    """The file of a frame, with its imset when the file holds several exposures."""
    return f"{header.path} (imset {header.imset})" if header.imset else str(header.path)


def _quality_problem(quality: str) -> str | None:
    text = " ".join(str(quality).split()).upper()
    if text in BENIGN_QUALITY:
        return None
    return f"QUALITY keyword flags a problem: {quality.strip()!r}"


def group_stacks(
    *,
    headers: Sequence,
    instrument: InstrumentConfig,
    exptime_tolerance: float = EXPTIME_TOLERANCE,
    allow_subarrays: bool = False,
) -> tuple[list[Stack], list[Exclusion]]:
    """Group frames into stacks that can be rejected together, and list the frames left out.

    Frames are compatible when they share INSTRUME, DETECTOR, CCDAMP, CCDGAIN, FLASHDUR (to
    0.01 s), the science array shape, its place on the chip (LTV1, LTV2: subarrays of one size
    at different places hold different pixels) and number of chips, BUNIT, and EXPTIME within
    ``exptime_tolerance`` seconds (frames of different exposure time are never mixed). Groups
    may have any size (the C tools stop at about 75 inputs). A group of one frame is returned as
    a :class:`Stack` of one (``stack.rejectable`` is False); it is never given flags.

    Excluded (each with a reason): EXPTIME below ``instrument.min_exptime``, a QUALITY keyword
    that flags a problem (anything but blank/``OK``/``GOOD``/``NONE``/``NORMAL``/``NOMINAL``), an
    imset marked ``IMSET_OK = F`` (as ocrreject leaves it out), a subarray (unless
    ``allow_subarrays``), a frame of another instrument, and a second frame with the same
    rootname. The imsets of a file of several exposures (STIS) are frames of their own.

    Parameters
    ----------
    headers : sequence of FrameHeader
    instrument : InstrumentConfig
    exptime_tolerance : float
        Largest EXPTIME difference (s) within one stack.
    allow_subarrays : bool
        Keep subarray frames (grouped by their shape and place).

    Returns
    -------
    stacks : list of Stack
        Ordered by the EXPSTART of their first frame; frames within a stack by EXPSTART.
    exclusions : list of Exclusion
    """
    exclusions: list[Exclusion] = []
    kept = []
    seen: set[str] = set()
    for h in headers:
        reason = None
        if getattr(h, "instrument", instrument.name) != instrument.name:
            reason = f"frame of {h.instrument}, not {instrument.name}"
        elif h.rootname in seen:
            reason = "duplicate rootname: another frame with this rootname is already in the set"
        elif not h.imset_ok:
            reason = "IMSET_OK = F: the calibration marked this imset unusable"
        elif not (h.exptime >= instrument.min_exptime):
            reason = f"EXPTIME {h.exptime:g} s is below {instrument.min_exptime:g} s"
        elif h.subarray and not allow_subarrays:
            reason = f"subarray {h.shape[0]}x{h.shape[1]}: subarrays are not rejected"
        else:
            reason = _quality_problem(h.quality)
        if reason:
            exclusions.append(Exclusion(rootname=h.rootname, reason=reason))
            continue
        seen.add(h.rootname)
        kept.append(h)

    def key(h) -> tuple:
        gain = h.ccdgain if math.isfinite(h.ccdgain) else -1.0
        return (h.instrume.upper(), h.detector.upper(), h.ccdamp.upper(), round(float(gain), 3),
                round(float(h.flashdur), 2), tuple(h.shape), tuple(float(v) for v in h.ltv), int(h.nchips),
                h.bunit.upper())

    by_key: dict[tuple, list] = {}
    for h in kept:
        by_key.setdefault(key(h), []).append(h)
    groups: list[list] = []
    for members in by_key.values():
        members.sort(key=lambda h: (h.exptime, h.expstart, h.rootname))
        current = [members[0]]
        for h in members[1:]:
            if h.exptime - current[0].exptime <= exptime_tolerance:
                current.append(h)
            else:
                groups.append(current)
                current = [h]
        groups.append(current)
    for g in groups:
        g.sort(key=lambda h: (h.expstart, h.rootname))
    groups.sort(key=lambda g: (g[0].expstart, g[0].rootname))
    stacks = [Stack(group_id=i, headers=tuple(g)) for i, g in enumerate(groups)]
    return stacks, exclusions


def screen_frame(*, header: Any, chips: Sequence, instrument: InstrumentConfig) -> str | None:
    """A reason found in a frame's pixels to leave it out, or None when it is usable.

    * ACS: pixels flagged DQ 2 (Reed-Solomon decoding errors of the on-board compression,
      replaced by fill values; found in early ACS data): the whole frame is left out.
    * Any instrument: a science array with no finite value or with all values 0 (no data).

    Parameters
    ----------
    header : FrameHeader
    chips : sequence of Chip
    instrument : InstrumentConfig
    """
    if not chips:
        return "no science chip"
    if instrument.instrume.upper() == "ACS":
        n_rs = int(sum(np.count_nonzero(np.asarray(c.dq) & DQ_REED_SOLOMON) for c in chips))
        if n_rs:
            return f"Reed-Solomon decoding errors: {plural(n_rs, 'pixel')} with DQ {DQ_REED_SOLOMON}"
    for c in chips:
        sci = np.asarray(c.sci)
        finite = np.isfinite(sci)
        if not finite.any():
            return f"chip {c.extver}: no finite science value"
        if not np.any(sci[finite] != 0):
            return f"chip {c.extver}: science array is all zero (no data)"
    return None


# ---------------------------------------------------------------------------------------------
# the sky: mode of the histogram (acsrej_sky.c / rej_sky.c / crrej_sky.c and cr_mode.c)

_SKY_MINVAL = -15000
_SKY_MIN_BINS = 1000
_SKY_MAX_BINS = 10000


#: Serialises reads from sources that are not arrays in memory. An astropy ``ImageHDU.section``
#: reads through its HDUList's file object (seek, then read), so two threads reading one file at
#: once can get each other's rows. The computation on the blocks stays parallel.
_READ_LOCK = threading.Lock()


def _rows(source: Any, a: int, b: int, dtype=None) -> np.ndarray:
    if isinstance(source, np.ndarray):
        block = source[a:b]
    else:
        with _READ_LOCK:
            block = np.asarray(source[a:b])
    return np.asarray(block, dtype=dtype) if dtype is not None else np.asarray(block)


def _histogram_mode(hist: np.ndarray, hwidth: float, hmin: float) -> float:
    """Mode of a histogram: the peak bin refined by a parabola through it and its neighbours.

    With counts :math:`h` and peak bin :math:`b` (first maximum),
    :math:`\\Delta_1 = h_b - h_{b-1}`, :math:`\\Delta_2 = h_b - h_{b+1}` and
    mode :math:`= h_{min} + (b + 1/2 + (\\Delta_1 - \\Delta_2) / (2 (\\Delta_1 + \\Delta_2)))\\,w`;
    the bin centre when the peak is the first or last bin or the denominator vanishes.
    """
    nbins = hist.size
    if nbins == 1:
        return hmin + 0.5 * hwidth
    if nbins == 2:
        if hist[0] > hist[1]:
            return hmin + 0.5 * hwidth
        if hist[1] > hist[0]:
            return hmin + 1.5 * hwidth
        return hmin + hwidth
    b = int(np.argmax(hist))
    if b == 0:
        return hmin + 0.5 * hwidth
    if b == nbins - 1:
        return hmin + (nbins - 0.5) * hwidth
    dh1 = float(hist[b] - hist[b - 1])
    dh2 = float(hist[b] - hist[b + 1])
    denom = dh1 + dh2
    if abs(denom) < 1e-20:
        return hmin + (b + 0.5) * hwidth
    return hmin + (b + 0.5 + 0.5 * (dh1 - dh2) / denom) * hwidth


def sky_mode(
    *, sci: Sequence, dq: Sequence, badinpdq: int, shape: Optional[tuple[int, int]] = None,
    block_rows: int = 512,
) -> list[float]:
    """Sky of each frame as the mode of its pixel histogram, as the STScI tools compute it.

    The histogram range is set by the first frame's pixels without a BADINPDQ bit:
    ``lo = int(max(min, -15000))`` (truncated toward zero), ``mean = int(sum / n + 1)`` (1 when
    the sum is not positive), ``hi = 2 mean - lo``, ``nbins = hi - lo + 1`` bins of width 1,
    raised to 1000 bins (width 1) or capped at 10000 (width ``nbins/10000``). Each frame's
    histogram counts its pixels with DQ exactly 0 at bin ``int((x - lo) / width)``; its mode is
    taken with :func:`_histogram_mode`. Non-finite values are ignored. Units: those of ``sci``.

    Parameters
    ----------
    sci, dq : sequence of 2-D arrays (or row-sliceable sources), one per frame
    badinpdq : int
    shape : (rows, columns), optional
        Needed only when the sources have no ``shape``.
    block_rows : int
        Rows read at a time.

    Returns
    -------
    list of float
        One sky value per frame (0 for a frame without any usable pixel).
    """
    nrows = int(shape[0] if shape is not None else sci[0].shape[0])
    data_min = math.inf
    total = 0.0
    npt = 0
    for a in range(0, nrows, block_rows):
        b = min(nrows, a + block_rows)
        s = _rows(sci[0], a, b, np.float32)
        ok = ((_rows(dq[0], a, b) & badinpdq) == 0) & np.isfinite(s)
        if ok.any():
            v = s[ok]
            data_min = min(data_min, float(v.min()))
            total += float(v.sum(dtype=np.float64))
            npt += v.size
    if npt == 0:
        log.debug("sky: no good pixel in the first frame; sky 0")
        return [0.0] * len(sci)
    lo = int(max(data_min, _SKY_MINVAL))  # int() truncates toward zero, like the C cast
    mean = int(total / npt + 1) if total > 0 else 1
    hi = 2 * mean - lo
    nbins = hi - lo + 1
    if nbins < _SKY_MIN_BINS:
        nbins, hwidth = _SKY_MIN_BINS, 1.0
    elif nbins > _SKY_MAX_BINS:
        hwidth = float(np.float32(nbins) / np.float32(_SKY_MAX_BINS))
        nbins = _SKY_MAX_BINS
    else:
        hwidth = 1.0
    lo32, w32 = np.float32(lo), np.float32(hwidth)
    skies = []
    for k in range(len(sci)):
        hist = np.zeros(nbins + 2, dtype=np.int64)
        for a in range(0, nrows, block_rows):
            b = min(nrows, a + block_rows)
            x = np.subtract(_rows(sci[k], a, b, np.float32), lo32)
            if hwidth != 1.0:
                x /= w32
            # bin = int(x) truncated toward zero (the C cast): x in (-1, 0) falls into bin 0;
            # x <= -1 or NaN -> -1 (dropped), x >= nbins -> nbins (dropped); DQ != 0 -> dropped
            np.fmax(x, np.float32(-1.0), out=x)
            np.minimum(x, np.float32(nbins), out=x)
            idx = x.astype(np.int32)
            idx += 1
            idx *= (_rows(dq[k], a, b) == 0)
            hist += np.bincount(idx.ravel(), minlength=nbins + 2)
        skies.append(_histogram_mode(hist[1:nbins + 1], hwidth, float(lo)))
    return skies


# ---------------------------------------------------------------------------------------------
# the rejection core


def spill_offsets(radius: float) -> tuple[tuple[int, int], ...]:
    """Offsets (dy, dx) other than (0, 0) with :math:`dx^2 + dy^2 \\le R^2` (R^2 in float32, as
    in the C code). CRRADIUS 2.1 gives 12 neighbours, 1.5 gives 8, below 1 none."""
    if not radius > 0:
        return ()
    r2 = float(np.float32(radius) * np.float32(radius))
    w = int(math.floor(radius + 1e-6))
    return tuple(
        (dy, dx)
        for dy in range(-w, w + 1)
        for dx in range(-w, w + 1)
        if (dy or dx) and dx * dx + dy * dy <= r2
    )


@dataclass(frozen=True)
class _Context:
    nrows: int
    ncols: int
    n: int
    exptime: np.ndarray           # (N,) float32
    equal_t: bool
    sky: np.ndarray               # (N,) float32, file units
    sigmas: tuple
    psig2: float                  # CRTHRESH^2 (or -1)
    scale: float                  # SCALENSE / 100
    badinpdq: int
    initgues: str
    noise_model: str
    offsets: tuple
    halo: int
    combine: bool


def _dilate(hit: np.ndarray, offsets: tuple) -> np.ndarray:
    """OR of ``hit`` shifted by every offset (dy, dx): True within the spill radius of a hit.
    ``hit`` is (N, rows, cols); shifts never wrap around the edges."""
    out = np.zeros_like(hit)
    rows, cols = hit.shape[1:]
    for dy, dx in offsets:
        ys, yd = (slice(0, rows - dy), slice(dy, rows)) if dy >= 0 else (slice(-dy, rows), slice(0, rows + dy))
        xs, xd = (slice(0, cols - dx), slice(dx, cols)) if dx >= 0 else (slice(-dx, cols), slice(0, cols + dx))
        np.bitwise_or(out[:, yd, xd], hit[:, ys, xs], out=out[:, yd, xd])
    return out


def _initial_guess(e: np.ndarray, good: np.ndarray, all_good: bool, ctx: _Context) -> np.ndarray:
    """Per-pixel minimum or median of the rates e_k / t_k over good frames (e/s).

    Where no frame is good (every input excluded by BADINPDQ, e.g. a flagged hot pixel or bad
    column), the minimum or median over all frames: such a pixel is never a hit, but the
    spill test compares it with this estimate (against 0 it would flag every excluded pixel
    near a hit; see the module docstring).
    """
    if ctx.equal_t:
        rates = e
        inv_t = np.float32(1.0 / float(ctx.exptime[0]))
    else:
        rates = e / ctx.exptime[:, None, None]
        inv_t = np.float32(1.0)
    if ctx.initgues == "minimum" and all_good:
        ave = np.minimum.reduce(rates, axis=0)
    else:
        ngood = good.sum(axis=0)
        none = ngood == 0
        if none.any():
            # no good frame: use every frame for these pixels
            good = good | none[None]
            ngood = np.where(none, ctx.n, ngood)
        filled = np.where(good, rates, np.float32(np.inf))
        if ctx.initgues == "minimum":
            ave = filled.min(axis=0)
        else:
            filled.sort(axis=0)
            lo = np.take_along_axis(filled, ((ngood - 1) // 2)[None], axis=0)[0]
            hi = np.take_along_axis(filled, (ngood // 2)[None], axis=0)[0]
            ave = np.where(ngood % 2 == 1, lo, (lo + hi) * np.float32(0.5))
    ave = np.asarray(ave, dtype=np.float32)
    if inv_t != 1:
        ave = ave * inv_t
    return ave


def _load_block(sources: dict, ctx: _Context, a: int, b: int) -> dict:
    """Rows [a, b) of every frame: sky-subtracted electrons, good pixels, variance terms."""
    rows, n = b - a, ctx.n
    shape3 = (n, rows, ctx.ncols)
    e = np.empty(shape3, dtype=np.float32)
    good = np.empty(shape3, dtype=bool)
    var0 = np.empty(shape3, dtype=np.float32) if ctx.noise_model == "err" else None
    rn2, skye, gains = [], [], []
    dq_or = np.zeros((rows, ctx.ncols), dtype=np.int64) if ctx.combine else None
    all_good = True
    for k in range(n):
        s = _rows(sources["sci"][k], a, b, np.float32)
        g = sources["gain"][k]
        g = np.float32(g) if np.ndim(g) == 0 else np.asarray(g[a:b], dtype=np.float32)
        unit_gain = np.ndim(g) == 0 and g == 1
        gains.append(g)
        np.subtract(s, ctx.sky[k], out=e[k])
        if not unit_gain:
            np.multiply(e[k], g, out=e[k])
        d = _rows(sources["dq"][k], a, b)
        np.equal(np.bitwise_and(d, ctx.badinpdq), 0, out=good[k])
        if dq_or is not None:
            np.bitwise_or(dq_or, d, out=dq_or)
        finite = np.isfinite(e[k])
        if var0 is not None:
            er = _rows(sources["err"][k], a, b, np.float32)
            if not unit_gain:
                er = er * g
            np.multiply(er, er, out=var0[k])
            finite &= np.isfinite(var0[k])
        if not finite.all():
            good[k] &= finite
            e[k][~finite] = 0
            if var0 is not None:
                var0[k][~finite] = 0
        all_good = all_good and bool(good[k].all())
        if ctx.noise_model == "readnoise":
            rn = sources["readnoise"][k]
            rn = np.float32(rn) if np.ndim(rn) == 0 else _compact(np.asarray(rn[a:b], dtype=np.float32))
            # V'_k = max(p + sky_e, 0) + RN^2 = max(p + (sky_e + RN^2), RN^2): keep both terms
            # as full planes so that each iteration needs one add and one maximum
            plane = (rows, ctx.ncols)
            rn2_k = np.ascontiguousarray(np.broadcast_to(rn * rn, plane), dtype=np.float32)
            sky_k = ctx.sky[k] * (g if np.ndim(g) == 0 else _compact(g))
            rn2.append(rn2_k)
            skye.append(np.add(rn2_k, sky_k, dtype=np.float32))
    return {"e": e, "good": good, "var0": var0, "rn2": rn2, "skye": skye, "gains": gains,
            "dq_or": dq_or, "all_good": all_good}


def _compact(arr: np.ndarray) -> np.ndarray:
    """A (rows, cols) array whose rows are all equal (a broadcast view) as one (1, cols) row."""
    if arr.ndim == 2 and arr.shape[0] > 1 and arr.strides[0] == 0:
        return arr[:1]
    return arr


def _reject_block(sources: dict, ctx: _Context, r0: int, r1: int) -> dict:
    """All iterations for rows [r0, r1) of one chip, computed on rows [a, b) with the margin."""
    a = max(0, r0 - ctx.halo)
    b = min(ctx.nrows, r1 + ctx.halo)
    blk = _load_block(sources, ctx, a, b)
    e, good, var0, rn2, skye = blk["e"], blk["good"], blk["var0"], blk["rn2"], blk["skye"]
    n, rows = ctx.n, b - a
    plane = (rows, ctx.ncols)
    t = ctx.exptime
    ave = _initial_guess(e, good, blk["all_good"], ctx)

    hit = np.empty(e.shape, dtype=bool)
    elig = np.empty(e.shape, dtype=bool)
    d2 = np.empty(plane, dtype=np.float32)
    vp = np.empty(plane, dtype=np.float32)
    v = np.empty(plane, dtype=np.float32)
    thr = np.empty(plane, dtype=np.float32)
    usef = np.empty(plane, dtype=np.float32)
    sum_e = np.empty(plane, dtype=np.float32)
    texp = np.empty(plane, dtype=np.float32)
    zeros = np.zeros(plane, dtype=np.float32)
    scale = np.float32(ctx.scale)
    niter = len(ctx.sigmas)
    mask = None
    for it, sigma in enumerate(ctx.sigmas):
        sig2 = np.float32(sigma * sigma)
        spill2 = np.float32(ctx.psig2 * sigma * sigma) if ctx.psig2 >= 0 else None
        # the C readnoise model with a minimum initial guess uses the full variance (with the
        # SCALENSE term) in the spill test of the first iteration
        spill_full = it == 0 and ctx.initgues == "minimum" and ctx.noise_model == "readnoise"
        p_shared = ave * t[0] if ctx.equal_t else None
        s2_shared = None
        if ctx.scale > 0 and ctx.equal_t:
            s2_shared = np.maximum(p_shared, zeros) * scale
            np.multiply(s2_shared, s2_shared, out=s2_shared)
        for k in range(n):
            pk = p_shared if ctx.equal_t else ave * t[k]
            np.subtract(e[k], pk, out=d2)
            np.multiply(d2, d2, out=d2)
            if ctx.noise_model == "readnoise":
                np.add(pk, skye[k], out=vp)          # skye holds sky_e + RN^2
                np.maximum(vp, rn2[k], out=vp)
                vpk = vp
            else:
                vpk = var0[k]
            if ctx.scale > 0:
                s2 = s2_shared
                if s2 is None:
                    s2 = np.maximum(pk, zeros) * scale
                    s2 *= s2
                np.add(vpk, s2, out=v)
                vk = v
            else:
                vk = vpk
            np.multiply(vk, sig2, out=thr)
            np.greater(d2, thr, out=hit[k])
            np.logical_and(hit[k], good[k], out=hit[k])
            if ctx.offsets:
                if spill2 is None:
                    elig[k] = True
                else:
                    np.multiply(vk if spill_full else vpk, spill2, out=thr)
                    np.greater(d2, thr, out=elig[k])
        if ctx.offsets:
            mask = _dilate(hit, ctx.offsets)
            np.logical_and(mask, elig, out=mask)
            np.logical_or(mask, hit, out=mask)
        else:
            mask = hit.copy()
        # exposure-weighted mean of the frames where the pixel is good and not flagged
        for k in range(n):
            np.greater(good[k], mask[k], out=hit[k])   # reuse: u_k = good and not flagged
            tk, sk = (texp, sum_e) if k == 0 else (usef, d2)
            tk[...] = hit[k]
            np.multiply(tk, e[k], out=sk)
            if not ctx.equal_t:
                tk *= t[k]
            if k:
                np.add(texp, tk, out=texp)
                np.add(sum_e, sk, out=sum_e)
        if ctx.equal_t:
            texp *= t[0]
        empty = np.flatnonzero(texp.ravel() <= 0)
        texp.ravel()[empty] = 1.0
        new = np.divide(sum_e, texp)
        texp.ravel()[empty] = 0.0
        if it < niter - 1:
            new.ravel()[empty] = ave.ravel()[empty]
        else:
            new.ravel()[empty] = 0.0   # fill value where every frame is flagged or bad
        ave = new

    lo, hi = r0 - a, r1 - a
    out = {"masks": mask[:, lo:hi].copy()}
    if ctx.combine:
        out.update(_combine_rows(blk, ctx, mask, ave, texp, lo, hi, sources["dq_cr"]))
    return out


def _combine_rows(blk: dict, ctx: _Context, mask, ave, texp, lo: int, hi: int, dq_cr: int) -> dict:
    """crj rows [lo, hi) of the block: SCI, ERR (file units) and DQ."""
    e, good, var0 = blk["e"][:, lo:hi], blk["good"][:, lo:hi], blk["var0"]
    use = np.greater(good, mask[:, lo:hi])
    texpt = np.float32(ctx.exptime.sum())
    skysum = np.float32(max(float(ctx.sky.sum()), 0.0))
    g0 = blk["gains"][0]
    g0 = g0 if np.ndim(g0) == 0 else g0[lo:hi]
    ave_c = ave[lo:hi]
    sumvar = np.zeros(ave_c.shape, dtype=np.float32)
    for k in range(ctx.n):
        if var0 is not None:
            var = var0[k, lo:hi]
        else:
            rn2, skye = blk["rn2"][k][lo:hi], blk["skye"][k][lo:hi]
            var = np.maximum(e[k] + skye, rn2)     # max(e + sky_e, 0) + RN^2
        sumvar += var * use[k]
    pixexp = texp[lo:hi]
    err = np.zeros(ave_c.shape, dtype=np.float32)
    np.divide(np.sqrt(sumvar) * texpt, pixexp, out=err, where=pixexp > 0)
    cr = np.int64(dq_cr)
    allflag = mask[:, lo:hi].all(axis=0)
    return {
        "combined": (ave_c * texpt / g0 + skysum).astype(np.float32),
        "combined_err": (err / g0).astype(np.float32),
        "combined_dq": ((blk["dq_or"][lo:hi] & ~cr) | np.where(allflag, cr, 0)).astype(np.int32),
    }


def _as_sources(values: Optional[Sequence], n: int, name: str) -> list:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise CRRejectError(f"{name}: expected {plural(n, 'value')} (one per frame), got {len(values)}")
    return values


def reject_chip(
    *,
    sci: Sequence,
    dq: Sequence,
    exptime: Sequence[float],
    params: CRRejectParams,
    noise_model: str,
    err: Optional[Sequence] = None,
    gain: Optional[Sequence] = None,
    readnoise: Optional[Sequence] = None,
    shape: Optional[tuple[int, int]] = None,
    sky: Optional[Sequence[float]] = None,
    block_rows: int = 256,
    threads: int = 1,
    combine: bool = False,
    dq_cr: int = 8192,
    progress: Optional[Callable[[int], None]] = None,
) -> ChipRejection:
    """Reject cosmic rays in one chip of a stack (the pure core of :func:`reject_stack`).

    See the module docstring for the algorithm and its formulas.

    Parameters
    ----------
    sci : sequence of 2-D arrays, one per frame
        Science arrays in file units, or any row-sliceable source (``source[a:b]`` returns the
        rows; memory maps and astropy ``ImageHDU.section`` work), all of one shape.
    dq : sequence of 2-D integer arrays (or sources)
    exptime : sequence of float
        EXPTIME of each frame (s), all positive.
    params : CRRejectParams
    noise_model : {"err", "readnoise"}
        ``err``: variance from the ERR arrays (ACS); ``readnoise``: from read noise and counts
        (WFC3, STIS, WFPC2).
    err : sequence of 2-D arrays (or sources), optional
        ERR arrays in file units; required for ``noise_model="err"``.
    gain : sequence, optional
        Per frame: electrons per file unit, a scalar or an array broadcastable to the chip
        (default 1).
    readnoise : sequence, optional
        Per frame: read noise (e-), a scalar or an array of the chip's shape (required for
        ``noise_model="readnoise"``).
    shape : (rows, columns), optional
        Needed when the sources have no ``shape`` attribute.
    sky : sequence of float, optional
        Sky of each frame (file units); computed with :func:`sky_mode` (``skysub = mode``) or 0
        (``none``) when not given.
    block_rows : int
        Rows per block (capped so that one work array holds at most 2^24 elements).
    threads : int
        Blocks processed at once (numpy releases the GIL in its array loops).
    combine : bool
        Also compute the combined crj image, its error and DQ.
    dq_cr : int
        The cosmic-ray DQ bit, kept out of / put into the combined DQ.
    progress : callable, optional
        Called, in the calling thread, with the number of the chip's rows rejected so far: 0 as
        the chip begins, then after each block of rows (in row order: with ``threads``, a block
        done early is counted once the blocks before it are), e.g. for a progress display.

    Returns
    -------
    ChipRejection

    Raises
    ------
    CRRejectError
        Fewer than 2 frames, mismatched shapes, missing ERR or read noise, bad exposure times.
    """
    n = len(sci)
    if n < 2:
        raise CRRejectError(f"cannot reject cosmic rays in {plural(n, 'frame')}: at least 2 are needed")
    if noise_model not in ("err", "readnoise"):
        raise CRRejectError(f"noise_model: expected 'err' or 'readnoise', got {noise_model!r}")
    dq = _as_sources(dq, n, "dq")
    err = _as_sources(err, n, "err")
    shapes = {tuple(getattr(s, "shape", shape or ())) for s in list(sci) + dq}
    if shape is None:
        if len(shapes) != 1:
            raise CRRejectError(f"frames have different shapes: {sorted(shapes)}")
        shape = shapes.pop()
    if len(shape) != 2:
        raise CRRejectError(f"expected 2-D chips, got shape {shape}")
    if noise_model == "err" and any(x is None for x in err):
        raise CRRejectError("noise model 'err' needs the ERR array of every frame")
    if noise_model == "readnoise" and readnoise is None:
        raise CRRejectError("noise model 'readnoise' needs the read noise of every frame")
    t = np.asarray(list(exptime), dtype=np.float32)
    if t.shape != (n,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise CRRejectError(f"exposure times must be {plural(n, 'positive number')}, got {list(exptime)}")
    gain = [1.0] * n if gain is None else _as_sources(gain, n, "gain")
    readnoise = [0.0] * n if readnoise is None else _as_sources(readnoise, n, "readnoise")
    if progress is not None:
        progress(0)
    if sky is None:
        if params.skysub == "mode":
            sky = sky_mode(sci=sci, dq=dq, badinpdq=params.badinpdq, shape=shape)
        else:
            sky = [0.0] * n
    sky = np.asarray(list(sky), dtype=np.float32)
    offsets = spill_offsets(params.crradius)
    reach = max((abs(dy) for dy, _ in offsets), default=0)
    ctx = _Context(
        nrows=int(shape[0]), ncols=int(shape[1]), n=n, exptime=t, equal_t=bool(np.all(t == t[0])),
        sky=sky, sigmas=tuple(float(s) for s in params.crsigmas),
        psig2=float(params.crthresh) ** 2 if params.crthresh > 0 else -1.0,
        scale=float(params.scalense) / 100.0, badinpdq=int(params.badinpdq), initgues=params.initgues,
        noise_model=noise_model, offsets=offsets, halo=reach * len(params.crsigmas), combine=combine,
    )
    rows_cap = max(8, MAX_BLOCK_ELEMENTS // max(1, n * ctx.ncols) - 2 * ctx.halo)
    step = max(1, min(int(block_rows), rows_cap))
    sources = {"sci": list(sci), "dq": dq, "err": err, "gain": gain, "readnoise": readnoise, "dq_cr": dq_cr}
    masks = [np.zeros(shape, dtype=bool) for _ in range(n)]
    combined = np.zeros(shape, dtype=np.float32) if combine else None
    combined_err = np.zeros(shape, dtype=np.float32) if combine else None
    combined_dq = np.zeros(shape, dtype=np.int32) if combine else None
    starts = list(range(0, ctx.nrows, step))

    def run(r0: int) -> int:
        r1 = min(ctx.nrows, r0 + step)
        res = _reject_block(sources, ctx, r0, r1)
        for k in range(n):
            masks[k][r0:r1] = res["masks"][k]
        if combine:
            combined[r0:r1] = res["combined"]
            combined_err[r0:r1] = res["combined_err"]
            combined_dq[r0:r1] = res["combined_dq"]
        return r1

    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=int(threads)) as pool:
            for r1 in pool.map(run, starts):
                if progress is not None:
                    progress(r1)
    else:
        for r0 in starts:
            r1 = run(r0)
            if progress is not None:
                progress(r1)
    return ChipRejection(
        masks=tuple(masks), sky=tuple(float(s) for s in sky), combined=combined,
        combined_err=combined_err, combined_dq=combined_dq,
    )


def _check_stack(frames: Sequence[Sequence], headers: Sequence) -> None:
    if len(frames) != len(headers):
        raise CRRejectError(f"{plural(len(frames), 'frame')} but {plural(len(headers), 'header')}")
    if len(frames) < 2:
        name = headers[0].rootname if headers else "?"
        raise CRRejectError(f"{name}: cannot reject a single frame (no CR-SPLIT partner)")
    first = headers[0]
    for h, chips in zip(headers, frames):
        if abs(h.exptime - first.exptime) > EXPTIME_TOLERANCE:
            raise CRRejectError(
                f"{h.path}: EXPTIME {h.exptime:g} s differs from {first.path} ({first.exptime:g} s); "
                "frames of different exposure time are never rejected together"
            )
        if len(chips) != len(frames[0]):
            raise CRRejectError(f"{h.path}: {plural(len(chips), 'chip')}, {first.path} has {len(frames[0])}")
        for c, c0 in zip(chips, frames[0]):
            if c.extver != c0.extver or tuple(np.shape(c.sci)) != tuple(np.shape(c0.sci)):
                raise CRRejectError(
                    f"{h.path}: chip {c.extver} {np.shape(c.sci)} does not match chip {c0.extver} "
                    f"{np.shape(c0.sci)} of {first.path}"
                )


def reject_stack(
    *,
    frames: Sequence[Sequence],
    headers: Sequence,
    params: CRRejectParams,
    instrument: InstrumentConfig,
    block_rows: int = 256,
    threads: int = 1,
    ignore_dq: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> list[list[np.ndarray]]:
    """Cosmic-ray masks of every chip of every frame of a stack.

    Parameters
    ----------
    frames : sequence (one per frame) of sequences of Chip
        The chips of each frame (``frames.read_chips``), in the same order for every frame.
    headers : sequence of FrameHeader
        EXPTIME of each frame; all equal (within 0.01 s).
    params : CRRejectParams
    instrument : InstrumentConfig
        ``noise_model`` chooses the variance: ``err`` (ACS) or ``readnoise`` (WFC3, STIS).
    block_rows, threads : int
        See :func:`reject_chip`.
    ignore_dq : int
        DQ bits of the inputs read as 0 everywhere (BADINPDQ, the sky histogram): e.g. the CR
        bit of an earlier rejection, so that the masks do not depend on it.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` after each block of rows, the rows counted
        over the chips one after the other (``rows_total``: the rows of every chip of a frame);
        see :func:`reject_chip`.

    Returns
    -------
    list of list of ndarray of bool
        ``masks[frame][chip]``: True where the pixel is a cosmic ray (to be OR-ed as
        ``instrument.dq_cr`` into the DQ).

    Raises
    ------
    CRRejectError
        Fewer than 2 frames, different exposure times, chips that do not match.
    """
    _check_stack(frames, headers)
    n = len(frames)
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    chip_rows = [int(np.shape(ch.sci)[0]) for ch in frames[0]]
    for c in range(len(frames[0])):
        chips = [frames[k][c] for k in range(n)]
        noise_model = instrument.noise_model
        if noise_model == "err" and any(ch.err is None for ch in chips):
            log.warning("%s: no ERR arrays; using the read-noise model", instrument.name)
            noise_model = "readnoise"
        res = reject_chip(
            sci=[ch.sci for ch in chips], dq=[_without_bits(ch.dq, ignore_dq) for ch in chips],
            err=[ch.err for ch in chips] if noise_model == "err" else None,
            gain=[ch.gain for ch in chips], readnoise=[ch.readnoise for ch in chips],
            exptime=[h.exptime for h in headers], params=params, noise_model=noise_model,
            block_rows=block_rows, threads=threads, dq_cr=instrument.dq_cr,
            progress=_rows_of_stack(progress, before=sum(chip_rows[:c]), total=sum(chip_rows)),
        )
        log.debug(
            "chip %d: sky %s, flagged %s pixels", chips[0].extver,
            ", ".join(f"{s:.3g}" for s in res.sky), ", ".join(str(int(m.sum())) for m in res.masks),
        )
        for k in range(n):
            out[k].append(res.masks[k])
    return out


def _rows_of_stack(progress: Optional[Callable[[int, int], None]], *, before: int,
                   total: int) -> Optional[Callable[[int], None]]:
    """The ``progress`` of one chip (:func:`reject_chip`: its rows done) as ``progress`` of the
    stack (rows done over the chips, ``before`` of them in the chips before this one; ``total``)."""
    if progress is None:
        return None
    return lambda rows: progress(before + rows, total)


# ---------------------------------------------------------------------------------------------
# files: the `hstcosmicrays crreject` command

#: Above this many bytes of pixel data a stack is read row block by row block from the files.
IN_MEMORY_LIMIT = 1 << 30

#: Row blocks rejected at once by default (numpy releases the GIL): the number of CPUs, at most 4.
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class FileSummary:
    """What :func:`crreject_files` did to one input frame (a file, or one imset of a STIS
    CR-SPLIT file)."""

    path: Path
    rootname: str
    exptime: float
    sky: tuple           # per chip, file units
    flagged: tuple       # per chip, pixels newly given the CR bit (or already carrying it)
    npix: tuple          # per chip
    imset: int = 0       # imset of the frame in a file of several exposures (0: the whole file)

    @property
    def label(self) -> str:
        """The file name, with ``[k]`` for imset ``k`` of a file of several exposures."""
        return f"{self.path.name}[{self.imset}]" if self.imset else self.path.name

    @property
    def fraction(self) -> float:
        """Fraction of the file's pixels flagged as cosmic rays."""
        total = sum(self.npix)
        return sum(self.flagged) / total if total else 0.0


@dataclass(frozen=True)
class CRRejectReport:
    """Summary of one :func:`crreject_files` run; ``str()`` gives a readable table."""

    instrument: str
    params: CRRejectParams
    files: tuple
    crrejtab: Optional[str] = None
    output: Optional[Path] = None
    seconds: float = 0.0
    overridden: tuple = ()
    crmask: bool = True
    source: str = ""  # where the parameters come from (parameter_source); default from crrejtab

    def __str__(self) -> str:
        p = self.params
        source = self.source or (f"parameters from {self.crrejtab}" if self.crrejtab else "configured parameters")
        if self.overridden:
            source += ", " + ", ".join(self.overridden) + " as given"
        lines = [
            f"CR rejection of {plural(len(self.files), f'{self.instrument} frame')} ({source})",
            f"  crsigmas={','.join(f'{s:g}' for s in p.crsigmas)} crradius={p.crradius:g} "
            f"crthresh={p.crthresh:g} initgues={p.initgues} skysub={p.skysub} "
            f"scalense={p.scalense:g} badinpdq={p.badinpdq}",
            f"  {'file':40s} {'exptime':>9s} {'sky (per chip)':>20s} {'CR pixels':>12s} {'fraction':>9s}",
        ]
        for f in self.files:
            sky = ",".join(f"{s:.2f}" for s in f.sky)
            lines.append(
                f"  {f.label:40s} {f.exptime:9.1f} {sky:>20s} {sum(f.flagged):12d} {f.fraction:9.4%}"
            )
        if self.output is not None:
            lines.append(f"  combined image written to {self.output}")
        if self.crmask:
            lines.append(f"  DQ bit 8192 OR-ed into the inputs in {self.seconds:.2f} s")
        else:
            lines.append(f"  inputs left untouched (no crmask); {self.seconds:.2f} s")
        return "\n".join(lines)


class _ConstantImage:
    """Rows of an image stored as a constant (NPIX1/NPIX2/PIXVALUE, no data array)."""

    def __init__(self, shape: tuple[int, int], value: float, dtype) -> None:
        self.shape = shape
        self._row = np.full((1, shape[1]), value, dtype=dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        n = len(range(*rows.indices(self.shape[0])))
        return np.broadcast_to(self._row, (n, self.shape[1]))


def clear_bits(dq: np.ndarray, bits: int) -> np.ndarray:
    """A copy of the DQ array ``dq`` with ``bits`` cleared, in its own integer type."""
    dq = np.asarray(dq)
    return dq & np.array(~int(bits)).astype(dq.dtype)


class _WithoutBits:
    """Rows of a DQ source with some bits cleared."""

    def __init__(self, source: Any, bits: int) -> None:
        self.shape = tuple(source.shape)
        self._source = source
        self._bits = int(bits)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return clear_bits(self._source[rows], self._bits)


def _without_bits(source: Any, bits: int) -> Any:
    """``source`` (an array or a row source) read with ``bits`` cleared; itself when no bits."""
    return _WithoutBits(source, bits) if bits else source


def _hdu_rows(path: Path, hdul, name: str, extver: int, shape: tuple[int, int], dtype, *, lazy: bool):
    """A row source for extension (name, extver): the array, or its section when ``lazy``."""
    try:
        hdu = hdul[name, extver]
    except KeyError:
        return None
    h = hdu.header
    if h.get("NAXIS", 0) == 0:
        return _ConstantImage(shape, h.get("PIXVALUE", 0), dtype)
    if tuple(hdu.shape) != tuple(shape):
        raise CRRejectError(f"{path}: extension {name},{extver} has shape {hdu.shape}, expected {shape}")
    if lazy:
        return hdu.section
    data = np.asarray(hdu.data)
    return data.astype(data.dtype.newbyteorder("="), copy=False)


@dataclass(frozen=True)
class ChipInfo:
    """What the rejection needs of a chip besides its pixels (see :func:`reject_files`).

    ``gain`` and ``readnoise`` are the chip's arrays from ``frames.read_chips`` (read-only
    broadcasts of one row, so they cost no memory of the chip's size).
    """

    extver: int
    gain: np.ndarray
    readnoise: np.ndarray
    has_err: bool

    @classmethod
    def of(cls, chip) -> "ChipInfo":
        return cls(extver=int(chip.extver), gain=chip.gain, readnoise=chip.readnoise, has_err=chip.err is not None)


def reject_files(
    *,
    paths: Sequence[Path],
    headers: Sequence,
    info: Sequence[Sequence[ChipInfo]],
    params: CRRejectParams,
    instrument: InstrumentConfig,
    combine: bool = False,
    block_rows: int = 256,
    threads: int = 1,
    ignore_dq: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> list[ChipRejection]:
    """Reject a stack of FLT files chip by chip, reading the pixels from the files.

    A stack of more than :data:`IN_MEMORY_LIMIT` bytes of pixel data (10 bytes a pixel: SCI,
    ERR, DQ) is read one block of rows at a time (``ImageHDU.section``), so the memory needed
    is that of the masks (1 byte a pixel of every frame) and one block, whatever the number of
    frames; a smaller one is read whole, one chip at a time. The masks are those of
    :func:`reject_stack` on the same frames.

    Parameters
    ----------
    paths : sequence of Path
        FLT file of each frame (imsets SCI/ERR/DQ), all of one stack (same shape and chips). A
        file of several exposures (STIS) appears once per imset that is in the stack.
    headers : sequence of FrameHeader
        The frames' headers (``frames.read_header``, with ``imset`` for a file of several
        exposures), in the same order.
    info : sequence of sequence of ChipInfo
        Per frame, per chip (``ChipInfo.of`` of ``frames.read_chips``): the EXTVER to read.
    params : CRRejectParams
    instrument : InstrumentConfig
    combine : bool
        Also compute the combined image (see :func:`reject_chip`).
    block_rows, threads : int
        See :func:`reject_chip`.
    ignore_dq, progress
        See :func:`reject_stack`.

    Returns
    -------
    list of ChipRejection
        One per chip, in the order of ``info[0]``.

    Raises
    ------
    CRRejectError
        Chips that differ between files, a missing DQ extension, an extension of another shape.
    """
    from astropy.io import fits

    from .frames import imset_offset

    paths = [Path(p) for p in paths]
    n = len(paths)

    def chips_of(k: int) -> list[int]:
        """The chips of frame k numbered as in a file of one exposure (comparable across frames)."""
        offset = imset_offset(instrument, headers[k].imset)
        return [c.extver - offset for c in info[k]]

    chips0 = chips_of(0)
    for k in range(1, n):
        if chips_of(k) != chips0:
            raise CRRejectError(f"{_frame_label(headers[k])}: chips {chips_of(k)} differ from "
                                f"{_frame_label(headers[0])} ({chips0})")
    rows, cols = headers[0].shape
    lazy = n * len(chips0) * rows * cols * 10 > IN_MEMORY_LIMIT
    results: list[ChipRejection] = []
    opened: dict[Path, Any] = {}
    try:
        for p in paths:
            if p not in opened:
                opened[p] = fits.open(p, memmap=False, lazy_load_hdus=True)
        hduls = [opened[p] for p in paths]
        for c in range(len(chips0)):
            noise_model = instrument.noise_model
            if noise_model == "err" and not all(chips[c].has_err for chips in info):
                log.warning("%s: ERR arrays missing; using the read-noise model", instrument.name)
                noise_model = "readnoise"
            sci, dq, err = [], [], []
            for p, hdul, chips in zip(paths, hduls, info):
                extver = chips[c].extver
                sci.append(_hdu_rows(p, hdul, "SCI", extver, (rows, cols), np.float32, lazy=lazy))
                dq.append(_hdu_rows(p, hdul, "DQ", extver, (rows, cols), np.int16, lazy=lazy))
                if noise_model == "err":
                    err.append(_hdu_rows(p, hdul, "ERR", extver, (rows, cols), np.float32, lazy=lazy))
                if dq[-1] is None:
                    raise CRRejectError(f"{p}: missing extension DQ,{extver}")
                dq[-1] = _without_bits(dq[-1], ignore_dq)
            results.append(reject_chip(
                sci=sci, dq=dq, err=err if noise_model == "err" else None,
                gain=[chips[c].gain for chips in info], readnoise=[chips[c].readnoise for chips in info],
                exptime=[h.exptime for h in headers], params=params, noise_model=noise_model,
                shape=(rows, cols), block_rows=block_rows, threads=threads,
                combine=combine, dq_cr=instrument.dq_cr,
                progress=_rows_of_stack(progress, before=c * rows, total=len(chips0) * rows),
            ))
            del sci, dq, err
    finally:
        for hdul in opened.values():
            hdul.close()
    return results


def _read_inputs(paths: Sequence[Path], config: Config):
    """Instrument and frame headers of the inputs, checked to form one stack.

    A file of several exposures (STIS) gives one header per imset; imsets marked
    ``IMSET_OK = F`` are left out, with a warning, as ocrreject leaves them out.
    """
    from .frames import FrameError, identify_instrument, read_headers

    if not paths:
        raise CRRejectError("CR-SPLIT rejection needs at least 2 exposures; no input file given")
    seen = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise CRRejectError(f"{p}: given twice")
        seen[key] = p
    instruments, headers = [], []
    for p in paths:
        try:
            inst = identify_instrument(p, config=config)
            in_file = read_headers(p, instrument=inst)
        except FileNotFoundError as exc:
            raise CRRejectError(str(exc) if str(p) in str(exc) else f"{p}: no such file") from None
        except (FrameError, OSError) as exc:
            msg = str(exc)
            raise CRRejectError(msg if str(p) in msg else f"{p}: {msg}") from None
        instruments.append(inst)
        for h in in_file:
            if h.imset_ok:
                headers.append(h)
            else:
                log.warning("%s: IMSET_OK = F; left out, as ocrreject does", _frame_label(h))
    exposures = {}
    for h in headers:  # a copy of a file under another name: rejected against itself, nothing is flagged
        if h.rootname in exposures:
            raise CRRejectError(f"{_frame_label(h)}: the same exposure (ROOTNAME {h.rootname}) as "
                                f"{_frame_label(exposures[h.rootname])}")
        exposures[h.rootname] = h
    names = {i.name for i in instruments}
    if len(names) > 1:
        listing = ", ".join(f"{p.name} ({i.name})" for p, i in zip(paths, instruments))
        raise CRRejectError(f"inputs are of different instruments: {listing}")
    inst = instruments[0]
    if inst.kind == "ir":
        raise CRRejectError(f"{paths[0]}: {inst.name} is an IR detector; CR-SPLIT rejection is for CCD frames")
    if inst.kind == "wfpc2":
        raise CRRejectError(f"{paths[0]}: a WFPC2 C0M file keeps its DQ in the C1M file beside it; this command "
                            "works on FLT files (ACS, WFC3/UVIS, STIS), while run_pipeline rejects WFPC2 pairs itself")
    if len(headers) < 2:
        named = ", ".join(str(p) for p in paths)
        raise CRRejectError(
            f"CR-SPLIT rejection needs at least 2 exposures (files, or imsets of a STIS CR-SPLIT file), "
            f"got {len(headers)} ({named})")
    first = headers[0]
    here = _frame_label(first)
    for h in headers[1:]:
        there = _frame_label(h)
        if abs(h.exptime - first.exptime) > EXPTIME_TOLERANCE:
            raise CRRejectError(
                f"{there}: EXPTIME {h.exptime:g} s differs from {here} ({first.exptime:g} s); "
                "frames of different exposure time are never rejected together"
            )
        for label, a, b in (("CCDAMP", h.ccdamp, first.ccdamp), ("shape", h.shape, first.shape),
                            ("place on the chip (LTV1, LTV2)", h.ltv, first.ltv),
                            ("number of chips", h.nchips, first.nchips)):
            if a != b:
                raise CRRejectError(f"{there}: {label} {a} differs from {here} ({b})")
        if math.isfinite(h.ccdgain) and math.isfinite(first.ccdgain) and abs(h.ccdgain - first.ccdgain) > 1e-3:
            raise CRRejectError(f"{there}: CCDGAIN {h.ccdgain:g} differs from {here} ({first.ccdgain:g})")
    return inst, headers


def _write_dq(path: Path, *, extvers: Sequence[int], masks: Sequence[np.ndarray], bit: int) -> None:
    """OR ``bit`` into the DQ arrays of ``path`` where ``masks`` are True; nothing else changes."""
    from astropy.io import fits

    if not any(m.any() for m in masks):
        return
    with fits.open(path, mode="update", memmap=False) as hdul:
        for extver, mask in zip(extvers, masks):
            if not mask.any():
                continue
            hdu = hdul["DQ", extver]
            if hdu.header.get("NAXIS", 0) == 0:
                value = int(hdu.header.get("PIXVALUE", 0))
                data = np.full(mask.shape, value, dtype=np.int16)
                for key in ("NPIX1", "NPIX2", "PIXVALUE"):
                    hdu.header.pop(key, None)
            else:
                data = np.array(hdu.data)
            data[mask] |= np.asarray(bit).astype(data.dtype)
            hdu.data = data


def _darktime(header: Any) -> Any:
    """DARKTIME of a frame: from its imset's SCI header, then the primary (None when absent)."""
    from astropy.io import fits

    with fits.open(header.path, memmap=False, lazy_load_hdus=True) as hdul:
        value = hdul["SCI", header.imset].header.get("DARKTIME") if header.imset else None
        return value if value is not None else hdul[0].header.get("DARKTIME")


def _write_combined(output: Path, *, headers: Sequence, results: Sequence[ChipRejection],
                    extvers: Sequence[int], chips: Sequence[int], params: CRRejectParams) -> None:
    """Write the crj file: the primary header of the first frame's file, and per chip SCI, ERR,
    DQ with the SCI header of the first frame (its EXTVER ``extvers``), numbered ``chips`` (as
    in a file of one exposure)."""
    from astropy.io import fits

    with fits.open(headers[0].path, memmap=False) as src:
        primary = fits.PrimaryHDU(header=src[0].header.copy())
        sci_headers = [src["SCI", v].header.copy() for v in extvers]
    darktimes = [_darktime(h) for h in headers]
    total = float(sum(h.exptime for h in headers))
    ph = primary.header
    ph["FILENAME"] = output.name
    for key in ("EXPTIME", "TEXPTIME"):
        ph[key] = (total, "total exposure time of the combined frames (s)")
    if all(isinstance(t, (int, float)) for t in darktimes):
        ph["DARKTIME"] = (float(sum(darktimes)), "total dark time of the combined frames (s)")
    else:  # the first frame's value alone would describe one frame
        ph.remove("DARKTIME", ignore_missing=True)
    ph["NCOMBINE"] = (len(headers), "number of frames combined")
    ph["EXPSTART"] = min(h.expstart for h in headers)
    ph["EXPEND"] = max(h.expend for h in headers)
    ph["CRSIGMAS"] = ",".join(f"{s:g}" for s in params.crsigmas)
    ph["CRRADIUS"] = params.crradius
    ph["CRTHRESH"] = params.crthresh
    ph["INITGUES"] = params.initgues
    ph["SKYSUB"] = params.skysub
    ph["SCALENSE"] = params.scalense
    ph["BADINPDQ"] = params.badinpdq
    ph["SKYSUM"] = (max(float(sum(results[0].sky)), 0.0), "summed sky of the first chip (file units)")
    ph.add_history("CR-SPLIT rejection by hstcosmicrays: " + ", ".join(h.rootname for h in headers))
    hdus = [primary]
    for extver, res, sh in zip(chips, results, sci_headers):
        sh = sh.copy()
        for key in ("BSCALE", "BZERO"):
            sh.pop(key, None)
        hdus.append(fits.ImageHDU(res.combined, header=sh, name="SCI", ver=extver))
        hdus.append(fits.ImageHDU(res.combined_err, name="ERR", ver=extver))
        hdus.append(fits.ImageHDU(res.combined_dq.astype(np.int16), name="DQ", ver=extver))
    ph["NEXTEND"] = (len(hdus) - 1, "number of standard extensions")
    # under a temporary name, renamed when complete: an interrupted write leaves no broken file
    part = output.with_name(output.name + ".part")
    try:
        # new CHECKSUM/DATASUM cards: the ones copied from the first input describe other data
        fits.HDUList(hdus).writeto(part, overwrite=True, checksum=True)
        os.replace(part, output)
    except OSError as exc:  # named as the caller named it, not by the temporary name
        if exc.errno is None or str(exc.filename) not in (str(part), str(output)):
            raise
        raise OSError(exc.errno, exc.strerror, str(output)) from None
    finally:
        part.unlink(missing_ok=True)


def _already_flagged(path: Path, n: int, *, bit: int, badinpdq: int) -> str:
    """The warning for an input whose DQ carries the CR bit before this rejection (an earlier
    run, perhaps with other parameters): its flags are merged with the new ones, not replaced."""
    text = (f"{path}: {plural(n, 'pixel')} already {'carries' if n == 1 else 'carry'} the CR bit (DQ {bit}), from an "
            f"earlier rejection: {'it stays' if n == 1 else 'they stay'} flagged (this run adds its flags and "
            "removes none)")
    if badinpdq & bit:
        them = "it" if n == 1 else "them"
        text += f", and BADINPDQ {badinpdq} includes {bit}, so this rejection leaves {them} out as bad input"
    return text


def crreject_files(
    paths: Sequence,
    *,
    config: Config,
    crrejtab: Any = None,
    overrides: Optional[Mapping[str, Any]] = None,
    output: Any = None,
    block_rows: int = 256,
    threads: Optional[int] = None,
    crmask: bool = True,
    overwrite: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CRRejectReport:
    """Reject cosmic rays in a set of FLT files and OR DQ 8192 into their DQ arrays in place.

    Like running acsrej / wf3rej / ocrreject with ``crmask=yes``: the DQ arrays of the inputs
    get the CR bit (``instrument.dq_cr``) where a cosmic ray is found; no other bit, no other
    extension and no other file is changed (except ``output`` when given). With
    ``crmask=False`` the inputs are only read (they may be read-only) and ``output`` is needed.
    The CR bit is only ever added: pixels that carry it already (an earlier run, perhaps with
    other parameters) stay flagged, and a warning names each such file with their number (and
    says they are left out as bad input when ``badinpdq`` includes the bit).

    Parameters
    ----------
    paths : sequence of str or Path
        FLT files of one detector with the same EXPTIME, CCDAMP, CCDGAIN, size and place on the
        chip (LTV1, LTV2: a subarray's position), holding two or more exposures together: two
        or more files, or a STIS CR-SPLIT FLT whose imsets are its sub-exposures (each imset is
        a frame, as for ocrreject; imsets marked ``IMSET_OK = F`` are left out). The instrument
        comes from each file's INSTRUME/DETECTOR (``config.instruments``).
    config : Config
    crrejtab : str or Path, optional
        CRREJTAB to take the parameters from (row chosen as the STScI tools do); otherwise the
        instrument's configured defaults.
    overrides : mapping, optional
        Parameter overrides (see :func:`params_for_stack`).
    output : str or Path, optional
        Write the combined crj image (exposure-weighted mean of unflagged values scaled to the
        total exposure, plus the summed sky) here, with ERR and DQ per chip.
    block_rows : int
    threads : int, optional
        Blocks processed at once (default: the number of CPUs, at most 4).
    crmask : bool
        OR the CR bit into the inputs' DQ arrays (``crmask=yes``); False leaves them untouched.
    overwrite : bool
        Replace ``output`` when it exists. Without it an existing ``output`` is refused, as the
        STScI tools refuse one (unless ``imclobber=yes``): it may be a file the user meant to
        keep, e.g. another exposure's FLT.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` as the rejection goes on (rows of the
        chips, as in :func:`reject_files`), e.g. for a progress bar.

    Returns
    -------
    CRRejectReport

    Raises
    ------
    CRRejectError
        Fewer than 2 files, a file that cannot be read or written (named), mixed instruments,
        exposure times, amplifiers, gains, sizes or places on the chip, an output path that is
        one of the inputs, that exists (without ``overwrite``) or whose directory does not
        exist. All of these are found before any file is changed.
    """
    import time

    from .frames import imset_offset, read_chips

    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    inst, headers = _read_inputs(paths, config)
    if output is not None:
        output = Path(output)
        if output.resolve() in {p.resolve() for p in paths}:
            raise CRRejectError(f"{output}: the output file must not be one of the inputs")
        if output.is_dir():
            raise CRRejectError(f"{output}: is a directory; expected a file name for the combined image")
        if output.exists() and not overwrite:
            raise CRRejectError(f"{output}: exists; the combined image replaces a file only when asked "
                                "(overwrite=True; --overwrite on the command line)")
        if not output.parent.is_dir():
            raise CRRejectError(f"{output}: its directory {output.parent} does not exist")
        if not os.access(output.parent, os.W_OK):
            raise CRRejectError(f"{output}: its directory {output.parent} is not writable")
    if not crmask and output is None:
        raise CRRejectError("crmask=False leaves the inputs' DQ untouched, so output (the combined crj image) "
                            "is needed: nothing would be written")
    for p in paths:
        if crmask and not os.access(p, os.W_OK):
            raise CRRejectError(f"{p}: not writable (the CR flags are written into its DQ arrays)")
    n = len(headers)
    mean_exptime = sum(h.exptime for h in headers) / n
    params = params_for_stack(
        instrument=inst, n_images=n, mean_exptime=mean_exptime, crrejtab=crrejtab, overrides=overrides,
    )
    source = parameter_source(instrument=inst, n_images=n, mean_exptime=mean_exptime, crrejtab=crrejtab)
    log.info("%s: rejecting %s with %s", inst.name, plural(n, "frame"), params)
    if threads is None:
        threads = DEFAULT_THREADS

    # gain and read noise per chip (broadcast rows: no full-size arrays are kept), and the CR
    # flags the inputs carry already, counted on the DQ arrays this read loads anyway
    info = []
    flagged_before: dict[Path, int] = {}
    for h in headers:
        try:
            chips = read_chips(h.path, instrument=inst, imset=h.imset)
        except Exception as exc:  # noqa: BLE001 - named and re-raised as a usage error
            raise CRRejectError(f"{_frame_label(h)}: cannot read the science chips ({exc})") from None
        reason = screen_frame(header=h, chips=chips, instrument=inst)
        if reason:
            log.warning("%s: %s (rejecting it anyway, as asked)", _frame_label(h), reason)
        info.append(tuple(ChipInfo.of(c) for c in chips))
        flagged_before[h.path] = flagged_before.get(h.path, 0) + sum(
            int(np.count_nonzero(c.dq & inst.dq_cr)) for c in chips)
        del chips
    for p, n_flagged in flagged_before.items():
        if n_flagged:
            log.warning("%s", _already_flagged(p, n_flagged, bit=inst.dq_cr, badinpdq=params.badinpdq))
    results = reject_files(
        paths=[h.path for h in headers], headers=headers, info=info, params=params, instrument=inst,
        combine=output is not None, block_rows=block_rows, threads=threads, progress=progress,
    )

    # the new file first: if it cannot be written, no input has been changed
    if output is not None:
        extvers = [c.extver for c in info[0]]
        offset = imset_offset(inst, headers[0].imset)
        _write_combined(output, headers=headers, results=results, extvers=extvers,
                        chips=[v - offset for v in extvers], params=params)
    summaries = []
    flags: dict[Path, tuple[list, list]] = {}  # per file: the EXTVERs and masks of all its frames
    for k, h in enumerate(headers):
        masks = [res.masks[k] for res in results]
        file_extvers, file_masks = flags.setdefault(h.path, ([], []))
        file_extvers.extend(c.extver for c in info[k])
        file_masks.extend(masks)
        summaries.append(FileSummary(
            path=h.path, rootname=h.rootname, exptime=h.exptime,
            sky=tuple(res.sky[k] for res in results),
            flagged=tuple(int(m.sum()) for m in masks), npix=tuple(int(m.size) for m in masks),
            imset=h.imset,
        ))
    if crmask:
        for p, (file_extvers, file_masks) in flags.items():
            _write_dq(p, extvers=file_extvers, masks=file_masks, bit=inst.dq_cr)
    return CRRejectReport(
        instrument=inst.name, params=params, files=tuple(summaries),
        crrejtab=str(crrejtab) if crrejtab is not None else None, output=output,
        overridden=tuple(sorted(k for k, v in (overrides or {}).items() if v is not None)),
        seconds=time.perf_counter() - t0, crmask=crmask, source=source,
    )

"""Read API for notebooks: the tables of a results store as pandas (or dask) DataFrames.

Open a store with :func:`open_results` and query it::

    import hstcosmicrays as hcr
    res = hcr.open_results("wfc3_uvis")                 # data_products/wfc3_uvis.h5
    exp = res.exposures(start="2012-01-01", stop="2013-01-01", where="exptime > 500")
    crs = res.cosmic_rays(columns=["n_pixels", "energy"], lazy=True)   # a dask DataFrame
    monthly = res.rate_series()                         # cleaned monthly CR rate

Every call reads the file again, through the store's ledger, so a notebook can follow a run that
is still writing the store: it sees exactly the months committed when the call was made.

Conventions
-----------
- Strings are decoded to ``str``.
- ``start`` / ``stop`` select exposures with ``start <= mjd < stop`` (``stop`` excluded). They
  accept ``'YYYY-MM-DD'`` (or any ISO date/time) strings, dates, datetimes, pandas Timestamps
  (naive ones are UTC), or numbers (taken as MJD). Cosmic rays and orbit samples are selected by
  the MJD of their exposure, so an exposure's CRs and track are kept or dropped together.
- ``where`` is a :meth:`pandas.DataFrame.query` string on the returned columns (and on any
  column of the table, which is then read for the query and dropped).
- The index of ``exposures`` is ``exposure_index``, the exposure's row in the file; the
  ``exposure_index`` column of ``cosmic_rays`` and ``orbit`` refers to it, so
  ``crs.join(exp, on="exposure_index")`` attaches exposure columns to each CR. The index of
  ``cosmic_rays`` (``cr_index``) and ``orbit`` (``sample_index``) are their file rows.
- Rows come in file order: months in the order they were committed (each month's exposures by
  exposure start). A month reprocessed (``--reprocess``) or retried after a failure is
  committed later, so that is not time order; sort when it matters, e.g.
  ``exp.sort_values("mjd")`` (the index keeps the joins right).
- Tables with an ``mjd`` column get a derived ``date`` column (UTC datetime) when all columns are
  asked for or when ``"date"`` is named in ``columns``; ``where`` may name it in any case
  (``where="date >= '2012-03-01'"``).
- Memory: an eager ``cosmic_rays`` or ``orbit`` read holds the rows read and the DataFrame made
  of them, about twice the DataFrame (:data:`READ_PEAK_FACTOR`); one that would need more than
  the memory available (:func:`available_memory`, within a container's or batch job's limit)
  raises :class:`MemoryError` before reading, naming the ways out (``columns``,
  ``start``/``stop``, ``where``, ``lazy=True``, ...). A ``where`` query is read piece by
  piece, so its memory is a piece and the rows kept.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from . import store
from ._text import plural
from .schema import TABLES

__all__ = [
    "Results",
    "RateMap",
    "open_results",
    "to_mjd",
    "mjd_to_datetime",
    "summarize_rates",
    "bin_rate_map",
    "read_activity_csv",
    "PUBLISHED_MIN_RATE",
    "PUBLISHED_CLIP_SIGMA",
    "PUBLISHED_CLIP_ITERS",
]

log = logging.getLogger(__name__)

#: MJD of 1970-01-01T00:00 UTC.
MJD_UNIX_EPOCH = 40587.0

#: The cleaning of the original analysis (Miles et al. 2021): frames with rate above
#: 0.2 CR/s/cm^2, sigma-clipped at 3 sigma with at most 5 iterations.
PUBLISHED_MIN_RATE = 0.2
PUBLISHED_CLIP_SIGMA = 3.0
PUBLISHED_CLIP_ITERS = 5

#: Rows of ``cosmic_rays`` read at a time (a multiple of the store's chunk, about a million):
#: one dask partition.
PARTITION_ROWS = store.CHUNK_ROWS["cosmic_rays"] * 32

#: Peak memory of an eager read of a table, in units of the DataFrame it returns: the columns
#: read from the file and the DataFrame built from them are held at once (measured with
#: tracemalloc on the 21 million CRs of a simulated WFC3/UVIS store: 2.31 GB at the peak for the
#: 1.15 GB DataFrame of every column, 1.87-2.0 times the estimate with text columns attached).
READ_PEAK_FACTOR = 2.0

#: Bytes a row of a text (object) column takes in a DataFrame, for the estimate: the pointer
#: and a short ``str`` object.
_TEXT_CELL_BYTES = 64

#: Parquet format version of every Parquet file written: 2.6 keeps the nanoseconds of the
#: ``date`` columns. pyarrow before 13 defaults to 2.4, which holds microseconds and refuses to
#: drop the rest.
PARQUET_VERSION = "2.6"

_INDEX_NAMES = {"exposures": "exposure_index", "cosmic_rays": "cr_index", "orbit": "sample_index"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ----------------------------------------------------------------------------------------------
# times


#: Whole numbers read as a year, not an MJD (MJD 1900 to 2100 fall in 1864, long before HST)
_YEARS = (1900, 2100)


def to_mjd(value) -> float | None:
    """A date given as text, date, datetime, Timestamp or MJD number, as MJD (UTC).

    .. math:: \\mathrm{MJD} = 40587 + (t - \\text{1970-01-01T00:00Z}) / 1\\,\\mathrm{day}

    Parameters
    ----------
    value : str, datetime.date, datetime.datetime, pandas.Timestamp, numpy.datetime64, float or None
        Strings are parsed by :class:`pandas.Timestamp` (``'2012-05-01'``, ``'2012-05-01T12:00'``);
        naive times are UTC; numbers are MJD already.

    Returns
    -------
    float or None
        None when ``value`` is None.

    Raises
    ------
    ValueError
        Not a date; or a whole number from 1900 to 2100, which is a year given by mistake.
    """
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if float(value).is_integer() and _YEARS[0] <= value <= _YEARS[1]:
            raise ValueError(f"{value!r} looks like a year, and numbers are MJD: give a date such as "
                             f"'{int(value)}-01-01' (HST's darks have MJD 48000 and above)")
        return float(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot read {value!r} as a date: {exc}") from None
    if ts is pd.NaT:
        raise ValueError(f"cannot read {value!r} as a date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return MJD_UNIX_EPOCH + (ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)


def _time_window(start, stop) -> tuple[float | None, float | None]:
    """``start`` and ``stop`` as MJD (:func:`to_mjd`); a stop before the start is a ValueError
    (it would select nothing, silently)."""
    t0, t1 = to_mjd(start), to_mjd(stop)
    if t0 is not None and t1 is not None and t1 < t0:
        raise ValueError(f"stop {stop!r} is before start {start!r}")
    return t0, t1


def mjd_to_datetime(mjd) -> pd.DatetimeIndex:
    """MJD (UTC) as naive UTC datetimes (nanosecond resolution; inverse of :func:`to_mjd`)."""
    days = np.asarray(mjd, dtype=np.float64) - MJD_UNIX_EPOCH
    return pd.DatetimeIndex(pd.to_datetime(np.round(days * 86400e6).astype("int64"), unit="us"))


def _month_text(mjd: float, shift: int) -> str:
    """``YYYY-MM`` of the month containing ``mjd``, moved by ``shift`` months."""
    ts = mjd_to_datetime([mjd])[0]
    k = ts.year * 12 + (ts.month - 1) + shift
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


# ----------------------------------------------------------------------------------------------
# pure science on arrays


def summarize_rates(
    *, mjd, rate, rate_err, freq: str = "MS", clip_sigma: float = PUBLISHED_CLIP_SIGMA,
    min_rate: float = PUBLISHED_MIN_RATE, max_iters: int = PUBLISHED_CLIP_ITERS, stdfunc: str = "std",
) -> pd.DataFrame:
    """Per-period statistics of the per-frame CR rate after the published cleaning.

    In each period (``freq``, a pandas frequency: ``'MS'`` month starts, ``'QS'``, ``'YS'``, ...)
    the frames with :math:`r > r_\\mathrm{min}` are sigma-clipped
    (:func:`astropy.stats.sigma_clip`, centre the median, scale the standard deviation,
    ``clip_sigma``, at most ``max_iters`` iterations); of the :math:`n` frames kept:

    .. math::

        \\bar r = \\frac1n\\sum r_i, \\qquad
        \\sigma_\\mathrm{Poisson} = \\frac1n\\sqrt{\\sum \\sigma_i^2}, \\qquad
        \\sigma_\\mathrm{scatter} = \\frac{s}{\\sqrt n},\\;
        s^2 = \\frac{1}{n-1}\\sum (r_i - \\bar r)^2

    with :math:`\\sigma_i = \\sqrt{N_i}/(t_i A)` the Poisson error of each frame's rate.

    Parameters
    ----------
    mjd : array
        Exposure start (MJD, UTC).
    rate, rate_err : array
        Per-frame rate and its Poisson error (CR/s/cm^2).
    freq : str
        Period length (pandas offset alias).
    clip_sigma : float
        Clipping threshold in standard deviations (None or 0: no clipping).
    min_rate : float
        Frames at or below this rate (CR/s/cm^2) are dropped first.
    max_iters : int
        Maximum clipping iterations.
    stdfunc : str
        Scale of the clipping: ``"std"`` (the published cleaning) or ``"mad_std"``
        (:math:`1.4826\\,\\mathrm{MAD}`, robust when a period holds many frames crossing the SAA).

    Returns
    -------
    pandas.DataFrame
        Indexed by the start of each period that keeps at least one frame (``period``), with
        columns ``mjd`` (mean MJD of the frames kept), ``n_frames`` (frames above ``min_rate``),
        ``count`` (kept after clipping), ``mean``, ``median``, ``q25``, ``q75``, ``std``
        (:math:`s`, NaN for one frame), ``poisson_err``, ``scatter_err`` (CR/s/cm^2).
    """
    from astropy.stats import sigma_clip

    if isinstance(stdfunc, str) and stdfunc not in ("std", "mad_std"):
        raise ValueError(f"summarize_rates: stdfunc must be 'std' or 'mad_std', not {stdfunc!r}")
    try:
        pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise ValueError(f"summarize_rates: freq {freq!r} is not a pandas period alias; e.g. 'MS' monthly, "
                         "'QS' quarterly, 'YS' yearly, 'W' weekly") from None
    mjd = np.asarray(mjd, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    rate_err = np.asarray(rate_err, dtype=np.float64)
    if not (mjd.shape == rate.shape == rate_err.shape):
        raise ValueError("summarize_rates: mjd, rate and rate_err differ in length")
    good = np.isfinite(rate) & np.isfinite(mjd) & (rate > min_rate)
    frames = pd.DataFrame({"mjd": mjd[good], "rate": rate[good], "rate_err": rate_err[good]},
                          index=mjd_to_datetime(mjd[good])).sort_index()
    columns = ["mjd", "n_frames", "count", "mean", "median", "q25", "q75", "std", "poisson_err", "scatter_err"]
    labels, rows = [], []
    # one clipping per period (a few hundred for decades of data), vectorised within it
    for label, group in frames.resample(freq):
        r = group["rate"].to_numpy()
        if len(r) == 0:
            continue
        if clip_sigma:
            clipped = sigma_clip(r, sigma=clip_sigma, maxiters=max_iters, cenfunc="median", stdfunc=stdfunc,
                                 masked=True)
            kept = ~np.ma.getmaskarray(clipped)
        else:
            kept = np.ones(len(r), dtype=bool)
        rk = r[kept]
        n = len(rk)
        if n == 0:
            continue
        q25, median, q75 = np.percentile(rk, [25.0, 50.0, 75.0])
        std = float(np.std(rk, ddof=1)) if n > 1 else float("nan")
        poisson = float(np.sqrt(np.sum(group["rate_err"].to_numpy()[kept] ** 2))) / n
        labels.append(label)
        rows.append((float(group["mjd"].to_numpy()[kept].mean()), len(r), n, float(rk.mean()), median, q25, q75,
                     std, poisson, std / np.sqrt(n)))
    out = pd.DataFrame(rows, columns=columns, index=pd.DatetimeIndex(labels, name="period"))
    return out.astype({"n_frames": "int64", "count": "int64"})


@dataclass(frozen=True)
class RateMap:
    """Mean CR rate in longitude/latitude bins.

    Attributes
    ----------
    lon_edges, lat_edges : numpy.ndarray
        Bin edges (deg), east longitude in [-180, 180] and geocentric latitude.
    mean : numpy.ndarray
        Shape ``(n_lat, n_lon)``: mean rate of the samples in each bin (CR/s/cm^2), NaN where
        there is none.
    count : numpy.ndarray
        Shape ``(n_lat, n_lon)``: number of orbit samples in each bin.
    """

    lon_edges: np.ndarray
    lat_edges: np.ndarray
    mean: np.ndarray
    count: np.ndarray

    def peak(self, *, min_count: int = 1) -> tuple[float, float]:
        """(lon, lat) of the centre of the bin with the highest mean rate among bins holding at
        least ``min_count`` samples."""
        m = np.where(self.count >= min_count, self.mean, np.nan)
        if not np.isfinite(m).any():
            raise ValueError("the rate map has no bin with enough samples")
        i, j = np.unravel_index(np.nanargmax(m), m.shape)
        return (0.5 * (self.lon_edges[j] + self.lon_edges[j + 1]), 0.5 * (self.lat_edges[i] + self.lat_edges[i + 1]))


def bin_rate_map(*, lon, lat, rate, lon_bin: float = 10.0, lat_bin: float = 5.0,
                 lat_range: tuple[float, float] = (-35.0, 35.0)) -> RateMap:
    """Mean of ``rate`` over the samples in each longitude/latitude bin.

    .. math:: \\bar r_{jk} = \\frac{\\sum_{s \\in (j,k)} r_s}{N_{jk}}

    where each orbit sample :math:`s` carries the rate :math:`r_s` of its exposure.

    Parameters
    ----------
    lon, lat : array
        Sample position (deg); longitudes are wrapped to [-180, 180).
    rate : array
        Rate carried by each sample (CR/s/cm^2).
    lon_bin, lat_bin : float
        Bin widths (deg), positive; ``360 / lon_bin`` must be a whole number.
    lat_range : (float, float)
        Latitude span of the grid (deg); HST reaches +-28.5 deg.

    Raises
    ------
    ValueError
        A bin width that is not positive, or ``lon_bin`` not dividing 360 deg.
    """
    _check_bin_widths(lon_bin=lon_bin, lat_bin=lat_bin)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    n_lon = int(round(360.0 / lon_bin))
    lo, hi = lat_range
    n_lat = int(np.ceil((hi - lo) / lat_bin - 1e-9))
    lon_edges = np.linspace(-180.0, 180.0, n_lon + 1)
    lat_edges = lo + lat_bin * np.arange(n_lat + 1)
    ok = np.isfinite(lon) & np.isfinite(lat) & np.isfinite(rate) & (lat >= lo) & (lat < lat_edges[-1])
    wrapped = (lon[ok] + 180.0) % 360.0 - 180.0
    j = np.minimum(((wrapped + 180.0) / lon_bin).astype(np.int64), n_lon - 1)
    i = np.minimum(((lat[ok] - lo) / lat_bin).astype(np.int64), n_lat - 1)
    flat = i * n_lon + j
    count = np.bincount(flat, minlength=n_lat * n_lon).reshape(n_lat, n_lon)
    total = np.bincount(flat, weights=rate[ok], minlength=n_lat * n_lon).reshape(n_lat, n_lon)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return RateMap(lon_edges=lon_edges, lat_edges=lat_edges, mean=mean, count=count)


def _check_bin_widths(*, lon_bin: float, lat_bin: float) -> None:
    """Refuse map bin widths (deg) that are not positive and finite, or a ``lon_bin`` that does
    not divide 360 deg, naming the argument."""
    for name, width in (("lon_bin", lon_bin), ("lat_bin", lat_bin)):
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"{name} must be a positive bin width in deg, not {width}")
    n_lon = int(round(360.0 / lon_bin))
    if n_lon < 1 or abs(n_lon * lon_bin - 360.0) > 1e-9:
        raise ValueError(f"lon_bin {lon_bin} does not divide 360 deg")


def read_activity_csv(path) -> pd.Series:
    """A solar-activity series (e.g. a monthly sunspot-number table) from a CSV file.

    The file has a header; the dates are the column named ``date`` (any case), else the first
    column, and the values the column named ``value``, else the second. Rows whose date or value
    cannot be read (including the negative "missing" markers of sunspot tables) are dropped.

    Returns
    -------
    pandas.Series
        Values indexed by naive UTC datetimes, sorted; the name is the value column's name.
    """
    try:
        frame = pd.read_csv(path, comment="#", skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        # pandas' own text names no file ("No columns to parse from file", a codec's complaint)
        raise ValueError(f"{path}: not a CSV file of dates and values ({' '.join(str(exc).split())})") from None
    if frame.shape[1] < 2:
        raise ValueError(f"{path}: expected at least two columns (date, value), found {list(frame.columns)}")
    lower = {str(c).strip().lower(): c for c in frame.columns}
    date_col = lower.get("date", frame.columns[0])
    value_col = lower.get("value", [c for c in frame.columns if c != date_col][0])
    dates = pd.to_datetime(frame[date_col].astype(str).str.strip(), errors="coerce", utc=True)
    values = pd.to_numeric(frame[value_col], errors="coerce")
    ok = dates.notna().to_numpy() & values.notna().to_numpy() & (values.to_numpy() >= 0)
    if not ok.any():
        raise ValueError(f"{path}: no row with a readable date and a non-negative value")
    index = pd.DatetimeIndex(dates[ok]).tz_localize(None)
    series = pd.Series(values[ok].to_numpy(np.float64), index=index, name=str(value_col).strip())
    return series.sort_index()


# ----------------------------------------------------------------------------------------------
# reading helpers


def available_memory(*, meminfo: str | os.PathLike = "/proc/meminfo",
                     cgroup: str | os.PathLike = "/proc/self/cgroup",
                     cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory available to new allocations now; None where it cannot be read (systems
    other than Linux): then nothing is checked.

    The system's ``MemAvailable`` (``meminfo``), or less when the process's control group (a
    container, a notebook server's pod, a batch job) or one of its ancestors has a memory limit:
    at each such level, the limit less what the group uses, its inactive file cache (which the
    kernel reclaims before it kills) not counted::

        available = min(MemAvailable, min over levels (limit - (usage - inactive_file)))

    Both cgroup versions: v2 (``memory.max``, ``memory.current``, ``inactive_file`` of
    ``memory.stat``) and v1 (``memory.limit_in_bytes``, ``memory.usage_in_bytes``,
    ``total_inactive_file``). ``cgroup`` lists the process's groups, ``cgroup_root`` is where
    their hierarchies are mounted; a group not found under it (another cgroup namespace) is
    read at the root of its hierarchy, which is then the container's own.
    """
    found = None
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        return None
    return min([found, *_cgroup_headroom(cgroup=Path(cgroup), root=Path(cgroup_root))])


#: The files of a cgroup memory controller, by version: limit, usage, and the line of
#: ``memory.stat`` that counts the inactive file cache.
_CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                 1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


def _cgroup_headroom(*, cgroup: Path, root: Path) -> list[int]:
    """``limit - (usage - inactive_file)`` in bytes of each memory-limited group from the
    process's own up to the root of its hierarchy (see :func:`available_memory`)."""
    try:
        lines = cgroup.read_text().splitlines()
    except OSError:
        return []
    headroom = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            version, base = 2, root
        elif "memory" in parts[1].split(","):
            version, base = 1, root / parts[1]
        else:
            continue
        relative = Path(parts[2].lstrip("/"))
        if not (base / relative).is_dir():
            relative = Path()
        for level in (relative, *relative.parents):
            value = _cgroup_level_headroom(base / level, files=_CGROUP_FILES[version])
            if value is not None:
                headroom.append(value)
    return headroom


def _cgroup_level_headroom(directory: Path, *, files: tuple[str, str, str]) -> int | None:
    """``limit - (usage - inactive_file)`` of one cgroup ``directory``; None without a limit
    (``max``) or where the limit or the usage cannot be read; the inactive file cache counted
    as used where ``memory.stat`` cannot be read."""
    limit_file, usage_file, inactive_key = files
    try:
        limit_text = (directory / limit_file).read_text().strip()
        if limit_text == "max":
            return None
        limit = int(limit_text)
        usage = int((directory / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        for line in (directory / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
                break
    except (OSError, ValueError):
        pass
    return max(limit - max(usage - inactive, 0), 0)


def _row_bytes(meta: pd.DataFrame) -> int:
    """Bytes a row of a DataFrame shaped as ``meta`` (its columns and dtypes, index included)
    takes: each numeric or date column its item size, each text column (object or pandas'
    string dtype) :data:`_TEXT_CELL_BYTES`."""
    dtypes = list(meta.dtypes) + [meta.index.dtype]
    return int(sum(_TEXT_CELL_BYTES if dt == object or not hasattr(dt, "itemsize") else dt.itemsize
                   for dt in dtypes))


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        decode = np.strings.decode if hasattr(np, "strings") else np.char.decode
        return decode(values, "ascii", "replace")
    return values


def _split_ranges(ranges: Sequence[tuple[int, int]], rows: int) -> list[tuple[int, int]]:
    """Cut ranges into pieces of at most ``rows`` rows, at multiples of ``rows`` in the file."""
    pieces = []
    for a, b in ranges:
        edges = np.arange((a // rows + 1) * rows, b, rows)
        cuts = np.concatenate([[a], edges, [b]]).astype(np.int64)
        pieces.extend((int(x), int(y)) for x, y in zip(cuts[:-1], cuts[1:]) if y > x)
    return pieces


def _where_columns(where: str | None, table: str) -> list[str]:
    """The columns of ``table`` that ``where`` names, with the derived ``date`` if it has ``mjd``."""
    if not where:
        return []
    names = {c.name for c in TABLES[table]}
    if "mjd" in names:
        names.add("date")
    return [n for n in dict.fromkeys(_IDENTIFIER.findall(where)) if n in names]


def _where_syntax_error(where: str, exc: SyntaxError) -> ValueError:
    """A ``where`` that pandas cannot parse, named with the reason and an example (text is
    quoted: ``month == '2012-01'``, not ``month == 2012-01``)."""
    return ValueError(f"where {where!r} is not a valid query ({exc.msg}); compare columns with numbers or "
                      "quoted text, e.g. \"n_pixels > 10 and chip == 1\" or \"month == '2012-01'\"")


def _stored(names: Iterable[str]) -> list[str]:
    """The stored columns to read for ``names``: the derived ``date`` is read as ``mjd``."""
    return ["mjd" if n == "date" else n for n in names]


def _table_columns(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]


@dataclass(frozen=True)
class _ExposureLookup:
    """Per file row of ``/exposures``: whether it is selected, plus attached columns."""

    selected: np.ndarray                    # bool, length = file rows of /exposures covered
    attached: dict                          # name in the output -> array over file rows


def _frame_from_columns(table: str, data: dict, rows: np.ndarray, *, columns: list[str],
                        lookup: _ExposureLookup | None, where: str | None) -> pd.DataFrame:
    """Assemble one DataFrame (or one dask partition) from columns read from the file."""
    keep = None
    if lookup is not None:
        idx = data["exposure_index"]
        keep = lookup.selected[idx]
    cols = {}
    for name in columns:
        if name == "date":
            continue
        if name in data:
            cols[name] = data[name]
    out_names = list(columns)
    if lookup is not None:
        idx = data["exposure_index"]
        for name, values in lookup.attached.items():
            cols[name] = values[idx]
            out_names.append(name)
    where_only = _where_extra(where, table, columns, lookup)
    for name in where_only:
        if name != "date":
            cols[name] = data[name]
    if keep is not None:
        cols = {k: v[keep] for k, v in cols.items()}
        rows = rows[keep]
    cols = {k: _decode(v) for k, v in cols.items()}
    if ("date" in columns or "date" in where_only) and "mjd" in data:
        mjd = data["mjd"][keep] if keep is not None else data["mjd"]
        cols["date"] = mjd_to_datetime(mjd)
    ordered = {k: cols[k] for k in dict.fromkeys(out_names + list(cols)) if k in cols}
    frame = pd.DataFrame(ordered, index=pd.Index(rows, name=_INDEX_NAMES.get(table)))
    if where:
        try:
            frame = frame.query(where)
        except pd.errors.UndefinedVariableError as exc:
            hint = _exposure_columns_hint(where, table, frame.columns)
            if hint is None:
                names = _table_columns(table) + (["date"] if "mjd" in _table_columns(table) else [])
                hint = f"where names no such column of {table}; its columns: {', '.join(names)}"
            raise KeyError(f"{exc}: {hint}") from None
        except SyntaxError as exc:
            raise _where_syntax_error(where, exc) from None
        extra = [c for c in frame.columns if c not in out_names]
        frame = frame.drop(columns=extra)
    return frame


def _where_extra(where, table, columns, lookup) -> list[str]:
    attached = set(lookup.attached) if lookup is not None else set()
    return [c for c in _where_columns(where, table) if c not in columns and c not in attached]


def _exposure_columns_hint(where: str, table: str, present) -> str | None:
    """For a ``where`` on a per-CR or per-sample table that names columns of ``exposures``: how to
    attach them (``exposure_columns=``). None when it names none."""
    if table == "exposures":
        return None
    names = [n for n in _where_columns(where, "exposures") if n not in present]
    if not names:
        return None
    own = set(_table_columns(table)) | {"date"}
    renamed = [f"{n} as exposure_{n}" for n in names if n in own]
    return (f"{', '.join(names)} {'is a column' if len(names) == 1 else 'are columns'} of exposures, not of "
            f"{table}: attach with exposure_columns={names!r}"
            + (f" and query {', '.join(renamed)}" if renamed else ""))


def _read_part(path: str, table: str, columns: list[str], read: list[str], lookup, where, file_id,
               ranges) -> pd.DataFrame:
    """Read a list of ``(start, stop)`` row ranges into one DataFrame: the function behind each
    dask partition (picklable). ``file_id``: of the file whose ledger gave the ranges (a store
    compacted since raises :class:`~hstcosmicrays.store.StoreRewrittenError`)."""
    data = store.read_rows(path, table, ranges=ranges, columns=read, file_id=file_id)
    return _frame_from_columns(table, data, store.row_numbers(ranges), columns=columns, lookup=lookup, where=where)


# ----------------------------------------------------------------------------------------------
# the reader


@dataclass(frozen=True)
class Results:
    """Reader of one instrument's results store (see the module docstring for conventions).

    Attributes
    ----------
    path : Path
        The HDF5 store.
    instrument : str
        Instrument key recorded in the store.
    """

    path: Path
    instrument: str

    def __repr__(self) -> str:
        return f"Results({self.instrument!r}, path={str(self.path)!r})"

    # -- plain tables ---------------------------------------------------------------------------

    def months(self) -> pd.DataFrame:
        """The month ledger: one row per month with its current state, counts and timings
        (``started``/``finished`` as UTC datetimes)."""
        ledger = store.read_ledger(self.path)
        frame = pd.DataFrame({k: _decode(v) for k, v in ledger.items()})
        for name in ("started", "finished"):
            frame[name] = pd.to_datetime(frame[name], unit="s")
        return frame

    def configuration(self, config_hash: str | None = None) -> dict:
        """The configuration that produced the results: the packaged defaults merged with the
        user's file, as the nested mapping of the YAML file.

        Parameters
        ----------
        config_hash : str, optional
            A digest from the ``config_hash`` column of :meth:`months`. Default: that of the
            month committed last (of the month recorded last when every month failed).

        Returns
        -------
        dict
            Written as YAML, a file for ``--config`` that gives the same digest (with the same
            software version); ``hstcosmicrays status --show-config`` prints it so.

        Raises
        ------
        KeyError
            No month names the digest (or the ledger is empty), or the store has no text for it
            (stores created before configurations were recorded, until ``hstcosmicrays compact``
            and a new commit).
        """
        import json

        if config_hash is None:
            ledger = store.read_ledger(self.path)
            rows = np.flatnonzero(ledger["state"] == b"committed")
            if not len(rows):  # only failed months: the configuration of the run that tried last
                rows = np.arange(len(ledger["state"]))
            if not len(rows):
                raise KeyError(f"{self.path}: the ledger has no month")
            config_hash = ledger["config_hash"][rows[np.argmax(ledger["finished"][rows])]].decode()
        texts = store.read_configurations(self.path)
        if config_hash not in texts:
            named = sorted(set(_decode(store.read_ledger(self.path, latest=False)["config_hash"])))
            missing = [d for d in named if d not in texts]
            raise KeyError(
                f"{self.path}: no stored configuration {config_hash!r}; the ledger names {', '.join(named) or 'none'}"
                + (f" (not stored: {', '.join(missing)})" if missing else "")
            )
        return json.loads(texts[config_hash])

    def failures(self) -> pd.DataFrame:
        """Frames (and months) that could not be used: month, rootname, stage, reason."""
        data = store.read_committed(self.path, "failures")
        return pd.DataFrame({k: _decode(v) for k, v in data.items()})

    def exposures(self, *, start=None, stop=None, columns: Iterable[str] | None = None,
                  where: str | None = None) -> pd.DataFrame:
        """One row per measured dark, indexed by ``exposure_index``.

        Rows are in file order, which is not time order once a month has been reprocessed
        (``--reprocess``) or retried after a failure: its rows come after those of the months
        committed before. For time order, sort::

            exp = res.exposures().sort_values("mjd")

        Parameters
        ----------
        start, stop : date-like, optional
            ``start <= mjd < stop`` (see :func:`to_mjd`).
        columns : iterable of str, optional
            Columns of ``/exposures`` (and ``"date"``); default all.
        where : str, optional
            :meth:`pandas.DataFrame.query` filter.
        """
        columns = self._columns("exposures", columns)
        t0, t1 = _time_window(start, stop)
        read = list(dict.fromkeys(
            [c for c in columns if c != "date"] + _stored(_where_columns(where, "exposures"))
            + (["mjd"] if (t0 is not None or t1 is not None or "date" in columns) else [])))

        def snapshot_rows():
            ranges, file_id = self._ranges(("exposures",), t0, t1)
            data = store.read_rows(self.path, "exposures", ranges=ranges["exposures"], columns=read, file_id=file_id)
            return data, store.row_numbers(ranges["exposures"])

        data, rows = store.read_again_if_rewritten(snapshot_rows)
        if t0 is not None or t1 is not None:
            keep = self._in_window(data["mjd"], t0, t1)
            data = {k: v[keep] for k, v in data.items()}
            rows = rows[keep]
        return _frame_from_columns("exposures", data, rows, columns=columns, lookup=None, where=where)

    def cosmic_rays(self, *, start=None, stop=None, columns: Iterable[str] | None = None,
                    where: str | None = None, lazy: bool = False,
                    exposure_columns: Iterable[str] | None = None):
        """One row per cosmic ray, indexed by ``cr_index``.

        Parameters
        ----------
        start, stop : date-like, optional
            Select CRs by the MJD of their exposure, ``start <= mjd < stop``.
        columns : iterable of str, optional
            Columns of ``/cosmic_rays``; default all. The ``shape`` column hides
            :attr:`pandas.DataFrame.shape` as an attribute: use ``crs["shape"]``, not ``crs.shape``.
        where : str, optional
            :meth:`pandas.DataFrame.query` filter, e.g. ``"chip == 1 and n_pixels > 4"``; a column
            of ``/exposures`` (``month``, ``rate``, ...) must be attached with ``exposure_columns``
            to be queried (a :class:`KeyError` says so). It is applied to one piece of ~1e6 file
            rows at a time, so memory holds a piece and the rows kept, not the whole selection.
        lazy : bool
            Return a :class:`dask.dataframe.DataFrame` with one partition per ~1e6 rows of the
            file, read only when computed: for stores larger than memory.
        exposure_columns : iterable of str, optional
            Columns of ``/exposures`` to attach to each CR (e.g. ``["mjd", "month"]``); a name
            the table already has gets the prefix ``exposure_``, and so does ``date`` (the
            exposure's start as a UTC datetime), always: ``exposure_date``.
        """
        return self._per_exposure_table("cosmic_rays", start=start, stop=stop, columns=columns, where=where,
                                        lazy=lazy, exposure_columns=exposure_columns)

    def orbit(self, *, start=None, stop=None, columns: Iterable[str] | None = None,
              where: str | None = None, lazy: bool = False,
              exposure_columns: Iterable[str] | None = None):
        """HST position samples over each exposure (``mjd``, ``lat``, ``lon``, ``alt``), indexed
        by ``sample_index``. Parameters as for :meth:`cosmic_rays`; e.g.
        ``orbit(exposure_columns=["rate"])`` gives each sample its exposure's CR rate."""
        return self._per_exposure_table("orbit", start=start, stop=stop, columns=columns, where=where,
                                        lazy=lazy, exposure_columns=exposure_columns)

    # -- summaries ------------------------------------------------------------------------------

    def rate_series(self, *, freq: str = "MS", clip_sigma: float = PUBLISHED_CLIP_SIGMA,
                    min_rate: float = PUBLISHED_MIN_RATE, max_iters: int = PUBLISHED_CLIP_ITERS,
                    stdfunc: str = "std", start=None, stop=None, where: str | None = None) -> pd.DataFrame:
        """The CR rate per period after the published cleaning (see :func:`summarize_rates`).

        Parameters
        ----------
        freq : str
            Period (pandas offset alias): ``'MS'`` monthly, ``'QS'`` quarterly, ``'YS'`` yearly.
        clip_sigma, min_rate, max_iters, stdfunc :
            Cleaning: frames with rate > ``min_rate`` (CR/s/cm^2), clipped at ``clip_sigma``
            standard deviations (``stdfunc``) with at most ``max_iters`` iterations.
        start, stop, where :
            Frame selection as in :meth:`exposures`.
        """
        exp = self.exposures(start=start, stop=stop, columns=["mjd", "rate", "rate_err"], where=where)
        return summarize_rates(mjd=exp["mjd"].to_numpy(), rate=exp["rate"].to_numpy(),
                               rate_err=exp["rate_err"].to_numpy(), freq=freq, clip_sigma=clip_sigma,
                               min_rate=min_rate, max_iters=max_iters, stdfunc=stdfunc)

    def rate_map(self, *, lon_bin: float = 10.0, lat_bin: float = 5.0, min_rate: float = PUBLISHED_MIN_RATE,
                 start=None, stop=None, where: str | None = None) -> RateMap:
        """Mean CR rate over longitude/latitude bins from the orbit samples.

        Each orbit sample carries the rate of its exposure (frames with rate > ``min_rate``);
        a bin's value is the mean over its samples (:func:`bin_rate_map`). No sigma clipping:
        the frames that cross the SAA are the point of the map. ``where`` filters exposures.
        ``lon_bin`` and ``lat_bin`` (deg) are checked before anything is read.
        """
        _check_bin_widths(lon_bin=lon_bin, lat_bin=lat_bin)
        orb = self.orbit(start=start, stop=stop, columns=["exposure_index", "lat", "lon"],
                         exposure_columns=["rate"])
        rate = orb["rate"].to_numpy(np.float64)
        use = rate > min_rate
        if where:
            chosen = self.exposures(start=start, stop=stop, columns=[], where=where).index.to_numpy()
            use &= np.isin(orb["exposure_index"].to_numpy(), chosen)
        return bin_rate_map(lon=orb["lon"].to_numpy()[use], lat=orb["lat"].to_numpy()[use], rate=rate[use],
                            lon_bin=lon_bin, lat_bin=lat_bin)

    def histogram(self, column: str, *, bins, table: str = "cosmic_rays", start=None, stop=None,
                  where: str | None = None, exposure_columns: Iterable[str] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of one column, accumulated over pieces of ~1e6 rows (bounded memory).

        Parameters
        ----------
        column : str
            A numeric column of ``table``.
        bins : int or sequence of float
            Bin edges (increasing; values outside are dropped, the last bin includes its right
            edge), or, as in :func:`numpy.histogram`, a number of equal-width bins spanning the
            finite values of the selection (the table is then read twice, from one snapshot).
        table : str
            ``cosmic_rays``, ``orbit`` or ``exposures``.
        start, stop, where, exposure_columns :
            Row selection as in :meth:`cosmic_rays` (``exposure_columns`` for the ``cosmic_rays``
            and ``orbit`` tables: columns of ``exposures`` that ``where`` may name, e.g.
            ``exposure_columns=["rate"], where="rate > 2"``).
        progress : callable, optional
            Called as ``progress(rows_done, rows_total)`` before the first piece and after
            each (file rows read, twice the rows when ``bins`` is a number).

        Returns
        -------
        counts : numpy.ndarray of int64
        edges : numpy.ndarray
            As :func:`numpy.histogram`.
        """
        return self.histograms({column: bins}, table=table, start=start, stop=stop, where=where,
                               exposure_columns=exposure_columns, progress=progress)[column]

    def histograms(self, bins: Mapping[str, object], *, table: str = "cosmic_rays", start=None, stop=None,
                   where: str | None = None, exposure_columns: Iterable[str] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """:meth:`histogram` of several columns at once: each piece of the table is read once
        for all (and a ``where`` evaluated once), rather than once a column.

        ``bins`` maps each column to its bins, as ``bins`` of :meth:`histogram`. Returns
        ``{column: (counts, edges)}`` in the order of ``bins``. The selection and ``progress`` as
        in :meth:`histogram` (the rows read twice when a number of bins is given for any column).
        """
        bins = dict(bins)
        if not bins:
            raise ValueError("histograms: name one or more columns and their bins")
        kinds = {c.name: np.dtype(c.dtype).kind for c in TABLES.get(table, ())}
        edges, n_bins = {}, {}
        for column, spec in bins.items():
            if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
                if spec < 1:
                    raise ValueError(f"histogram: bins must be a positive number of bins, not {spec}")
                n_bins[column] = int(spec)
            else:
                edges[column] = np.asarray(spec, dtype=np.float64)
                if edges[column].ndim != 1 or len(edges[column]) < 2 or not (np.diff(edges[column]) > 0).all():
                    raise ValueError("histogram: bins must be a number of bins or at least two increasing edges, "
                                     f"not {spec!r}")
            if kinds.get(column) in ("S", "U"):
                numeric = [name for name, kind in kinds.items() if kind in "iuf"]
                raise ValueError(f"histogram: {column} is a text column of {table}; numeric columns: "
                                 f"{', '.join(numeric)}")
        readers = self._chunk_readers(table, start=start, stop=stop, columns=list(bins), where=where,
                                      exposure_columns=exposure_columns, rows=PARTITION_ROWS)
        passes = 2 if n_bins else 1
        total = passes * sum(rows for rows, _ in readers)
        done = 0
        if progress is not None:
            progress(done, total)
        if n_bins:
            lo = dict.fromkeys(n_bins, np.inf)
            hi = dict.fromkeys(n_bins, -np.inf)
            for rows, read in readers:
                frame = read()
                for column in n_bins:
                    values = frame[column].to_numpy(np.float64)
                    values = values[np.isfinite(values)]
                    if len(values):
                        lo[column] = min(lo[column], float(values.min()))
                        hi[column] = max(hi[column], float(values.max()))
                done += rows
                if progress is not None:
                    progress(done, total)
            for column, n in n_bins.items():
                span = np.array([lo[column], hi[column]]) if lo[column] <= hi[column] else np.zeros(0)
                edges[column] = np.histogram_bin_edges(span, bins=n)   # no value: numpy's (0, 1)
        counts = {column: np.zeros(len(edges[column]) - 1, dtype=np.int64) for column in bins}
        for rows, read in readers:
            frame = read()
            for column in bins:
                counts[column] += np.histogram(frame[column].to_numpy(), bins=edges[column])[0]
            done += rows
            if progress is not None:
                progress(done, total)
        return {column: (counts[column], edges[column]) for column in bins}

    # -- export and chunked reading -------------------------------------------------------------

    def iter_chunks(self, table: str, *, start=None, stop=None, columns: Iterable[str] | None = None,
                    where: str | None = None, exposure_columns: Iterable[str] | None = None,
                    rows: int = PARTITION_ROWS) -> Iterator[pd.DataFrame]:
        """Yield a table as DataFrames of at most ``rows`` file rows each (one consistent
        snapshot of the ledger, taken when iteration starts).

        ``exposures`` and the small tables ``months`` (:meth:`months`) and ``failures``
        (:meth:`failures`) come as one piece, and so does a selection of no row (an empty
        DataFrame with the columns). ``start``/``stop`` select by exposure time and do
        not apply to ``months`` and ``failures`` (select their months with ``where``).
        ``exposure_columns`` attaches columns of ``exposures`` to ``cosmic_rays`` and ``orbit``
        as in :meth:`cosmic_rays`.
        """
        for _, read in self._chunk_readers(table, start=start, stop=stop, columns=columns, where=where,
                                           exposure_columns=exposure_columns, rows=rows):
            yield read()

    def _chunk_readers(self, table, *, start, stop, columns, where, rows, exposure_columns=None) -> list:
        """``(file rows, read)`` per piece of :meth:`iter_chunks`: ``read`` takes no argument and
        gives the piece's DataFrame, all pieces from the same ledger snapshot (taken now); the
        one-piece tables are read now (their rows are those of the DataFrame)."""
        if exposure_columns and table not in ("cosmic_rays", "orbit"):
            raise ValueError(f"exposure_columns attaches columns of exposures to cosmic_rays and orbit, not to "
                             f"the {table} table")
        if table == "exposures":
            frame = self.exposures(start=start, stop=stop, columns=columns, where=where)
            return [(len(frame), lambda: frame)]
        if table in ("months", "failures"):
            if start is not None or stop is not None:
                raise ValueError(f"iter_chunks: start and stop do not apply to the {table} table; "
                                 "select its months with where, e.g. \"month >= '2012-01'\"")
            frame = self.months() if table == "months" else self.failures()
            if where:
                try:
                    frame = frame.query(where)
                except SyntaxError as exc:
                    raise _where_syntax_error(where, exc) from None
            if columns is not None:
                columns = [columns] if isinstance(columns, str) else list(columns)
                unknown = [c for c in columns if c not in frame.columns]
                if unknown:
                    raise KeyError(f"table {table} has no column(s) {unknown}; columns: {', '.join(frame.columns)}")
                frame = frame[columns]
            frame = frame.reset_index(drop=True)
            return [(len(frame), lambda: frame)]
        if table not in ("cosmic_rays", "orbit"):
            raise KeyError(f"iter_chunks: table must be exposures, cosmic_rays, orbit, months or failures, "
                           f"not {table!r}")
        plan = self._plan(table, start=start, stop=stop, columns=columns, where=where,
                          exposure_columns=exposure_columns)
        pieces = _split_ranges(plan["ranges"], rows)
        if not pieces:  # no row: one empty piece with the columns, as exposures gives (an export writes them)
            meta = plan["meta"]
            return [(0, lambda: meta)]
        return [(b - a, partial(plan["reader"], [(a, b)])) for a, b in pieces]

    def export(self, *, table: str, fmt: str, out, start=None, stop=None, columns: Iterable[str] | None = None,
               where: str | None = None, exposure_columns: Iterable[str] | None = None,
               progress: Callable[[int, int], None] | None = None) -> int:
        """Write a table as CSV or Parquet, piece by piece (so tables larger than memory work).

        ``table`` is one of ``exposures``, ``cosmic_rays``, ``orbit``, ``months`` (the month
        ledger) and ``failures`` (see :meth:`iter_chunks`). The index (``exposure_index``,
        ``cr_index``, ``sample_index``) is written as the first column; ``months`` and
        ``failures`` have none. ``exposure_columns`` attaches columns of ``exposures`` to
        ``cosmic_rays`` and ``orbit`` (written, and for ``where``), as in :meth:`cosmic_rays`.
        Returns the number of rows written.

        ``progress``, if given, is called as ``progress(rows_done, rows_total)`` before the
        first piece and after each piece is written, counting the file rows read (``where``
        may write fewer), e.g. for a progress bar.

        Raises
        ------
        IsADirectoryError
            ``out`` is a directory (checked before anything is read or written).
        """
        out = Path(out)
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"export: format must be csv or parquet, not {fmt!r}")
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory; export needs a file name", str(out))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        n = 0
        writer = None
        try:
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq
            first = True
            readers = self._chunk_readers(table, start=start, stop=stop, columns=columns, where=where,
                                          exposure_columns=exposure_columns, rows=PARTITION_ROWS)
            total, done = sum(rows for rows, _ in readers), 0
            if progress is not None:
                progress(done, total)
            for rows, read in readers:
                part = read()
                if first or len(part):  # a selection of no row still writes the columns once
                    frame = part if table in ("months", "failures") else part.reset_index()
                    if fmt == "csv":
                        frame.to_csv(tmp, mode="w" if first else "a", header=first, index=False)
                    else:
                        arrow = pa.Table.from_pandas(frame, preserve_index=False)
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, arrow.schema, version=PARQUET_VERSION)
                        writer.write_table(arrow.cast(writer.schema))
                    n += len(frame)
                    first = False
                done += rows
                if progress is not None:
                    progress(done, total)
            if writer is not None:
                writer.close()
                writer = None
            os.replace(tmp, out)
        finally:
            if writer is not None:
                writer.close()
            if tmp.exists():
                tmp.unlink()
        log.debug("exported %s of %s to %s", plural(n, "row"), table, out)  # the CLI prints its own line
        return n

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _columns(table: str, columns) -> list[str]:
        names = _table_columns(table)
        if columns is None:
            return names + (["date"] if "mjd" in names else [])
        columns = [columns] if isinstance(columns, str) else list(columns)
        unknown = [c for c in columns if c not in names and not (c == "date" and "mjd" in names)]
        if unknown:
            raise KeyError(f"table {table} has no column(s) {unknown}; columns: {', '.join(names)}")
        return columns

    @staticmethod
    def _in_window(mjd: np.ndarray, t0, t1) -> np.ndarray:
        keep = np.ones(len(mjd), dtype=bool)
        if t0 is not None:
            keep &= mjd >= t0
        if t1 is not None:
            keep &= mjd < t1
        return keep

    def _ranges(self, tables, t0, t1) -> tuple[dict, tuple]:
        """Visible ranges from one ledger read, restricted to the months that can hold frames of
        [t0, t1) (with a month of margin on each side), and the id of the file they are of (for
        ``store.read_rows(file_id=)``)."""
        first = _month_text(t0, -1) if t0 is not None else None
        last = _month_text(t1, +1) if t1 is not None else None
        return store.visible_ranges(self.path, tables=tables, first_month=first, last_month=last, with_file_id=True)

    def _plan(self, table, *, start, stop, columns, where, exposure_columns) -> dict:
        """Everything needed to read ``table`` piece by piece with a consistent exposure lookup."""
        columns = self._columns(table, columns)
        t0, t1 = _time_window(start, stop)
        exposure_columns = [exposure_columns] if isinstance(exposure_columns, str) else list(exposure_columns or [])
        unknown = [c for c in exposure_columns if c not in _table_columns("exposures") and c != "date"]
        if unknown:
            raise KeyError(f"table exposures has no column(s) {unknown}")
        ranges, file_id = self._ranges(("exposures", table), t0, t1)
        lookup = None
        if t0 is not None or t1 is not None or exposure_columns:
            exp_read = list(dict.fromkeys(
                (["mjd"] if (t0 is not None or t1 is not None or "date" in exposure_columns) else [])
                + [c for c in exposure_columns if c != "date"]))
            exp = store.read_rows(self.path, "exposures", ranges=ranges["exposures"], columns=exp_read,
                                  file_id=file_id)
            rows = store.row_numbers(ranges["exposures"])
            size = int(rows.max()) + 1 if len(rows) else 0
            selected = np.zeros(size, dtype=bool)
            selected[rows] = self._in_window(exp["mjd"], t0, t1) if "mjd" in exp else True
            attached = {}
            own = set(_table_columns(table)) | {"date"}
            for name in exposure_columns:
                values = mjd_to_datetime(exp["mjd"]).to_numpy() if name == "date" else exp[name]
                full = np.zeros(size, dtype=values.dtype)
                full[rows] = values
                attached[f"exposure_{name}" if name in own else name] = full
            lookup = _ExposureLookup(selected=selected, attached=attached)
        read = list(dict.fromkeys(
            [c for c in columns if c != "date"]
            + (["exposure_index"] if lookup is not None else [])
            + (["mjd"] if "date" in columns else [])
            + _stored(_where_columns(where, table))))
        reader = partial(_read_part, str(self.path), table, columns, read, lookup, where, file_id)
        meta_data = {c: np.zeros(0, dtype=dict((col.name, col.dtype) for col in TABLES[table])[c]) for c in read}
        meta = _frame_from_columns(table, meta_data, np.zeros(0, dtype=np.int64), columns=columns,
                                   lookup=lookup, where=where)
        return {"ranges": ranges[table], "reader": reader, "meta": meta}

    def _check_fits_in_memory(self, table: str, planned: dict) -> None:
        """Raise MemoryError, before anything is read, when an eager read of ``planned`` would
        need more than the memory available (:func:`available_memory`), rather than let the
        system kill the process (a notebook's kernel, with its session)."""
        available = available_memory()
        if available is None:
            return
        rows = sum(b - a for a, b in planned["ranges"])
        need = READ_PEAK_FACTOR * rows * _row_bytes(planned["meta"])
        if need > available:
            names = ", ".join(planned["meta"].columns) or "no column"
            raise MemoryError(
                f"{self.path}: reading {rows:,} rows of {table} ({names}) at once needs about "
                f"{need / 1e9:.1f} GB of memory, and {available / 1e9:.1f} GB is available; select fewer "
                "columns (columns=), a time range (start=, stop=) or rows (where=, which is read piece "
                "by piece), or read the table lazily (lazy=True), in pieces (iter_chunks), as "
                "histograms (histogram) or into a file (export)")

    def _per_exposure_table(self, table, *, start, stop, columns, where, lazy, exposure_columns):
        def plan():
            return self._plan(table, start=start, stop=stop, columns=columns, where=where,
                              exposure_columns=exposure_columns)

        if not lazy:
            def read_now():  # one snapshot, read at once: done again if the store is compacted meanwhile
                planned = plan()
                if not planned["ranges"]:
                    return planned["meta"]
                if not where:
                    self._check_fits_in_memory(table, planned)
                    return planned["reader"](planned["ranges"])
                # filtered piece by piece, so that memory holds one piece and the rows kept, not
                # the whole selection (a query of a few rows of a store larger than memory works)
                parts = [planned["reader"]([piece]) for piece in _split_ranges(planned["ranges"], PARTITION_ROWS)]
                kept = [part for part in parts if len(part)] or parts[:1]
                return pd.concat(kept) if len(kept) > 1 else kept[0]

            return store.read_again_if_rewritten(read_now)
        planned = store.read_again_if_rewritten(plan)
        pieces = _split_ranges(planned["ranges"], PARTITION_ROWS)
        import dask.dataframe as dd

        if not pieces:
            return dd.from_pandas(planned["meta"], npartitions=1)
        divisions = [a for a, _ in pieces] + [pieces[-1][1] - 1]
        # the partitions read the rows when computed: a store compacted since raises
        # StoreRewrittenError (its rows were renumbered) rather than giving other rows
        return dd.from_map(planned["reader"], [[p] for p in pieces], meta=planned["meta"], divisions=divisions,
                           enforce_metadata=False)


def open_results(path_or_instrument, output_dir: str | os.PathLike = "data_products") -> Results:
    """Open an instrument's results store for reading.

    Parameters
    ----------
    path_or_instrument : str or path
        A store file (``*.h5`` or any existing file), or an instrument name or alias
        (``"wfc3_uvis"``, ``"WFC3/UVIS"``, ...), whose store is ``<output_dir>/<name>.h5``.
    output_dir : str or path
        Directory of the stores when an instrument is given.

    Returns
    -------
    Results

    Raises
    ------
    FileNotFoundError
        No store at the resolved path.
    IsADirectoryError
        ``path_or_instrument`` is a directory (a path object, a string starting with ``.``,
        ``/`` or ``~``, or a string that names no instrument); the message lists the stores
        (``*.h5``) it holds.
    StoreError
        Not a results store, damaged, or (opened by instrument name) another instrument's store.
    """
    candidate = Path(path_or_instrument)
    # a path object, or a string that starts as a path does, is never read as an alias ("./uvis")
    as_path = isinstance(path_or_instrument, os.PathLike) or str(path_or_instrument).startswith((".", "/", "~"))
    if as_path and candidate.is_dir():
        raise IsADirectoryError(_directory_message(candidate))
    unknown = ""
    expected = None  # the instrument asked for by name
    if candidate.suffix == ".h5" or candidate.is_file():
        path = candidate
    else:
        name = str(path_or_instrument)
        try:
            from .config import ConfigError, load_config

            name = expected = load_config().instrument(name).name
        except (ConfigError, KeyError) as exc:
            unknown = f"; and {exc}"
        path = store.store_path(output_dir, name)
    if expected is None and candidate.is_dir() and not path.is_file():
        raise IsADirectoryError(_directory_message(candidate))
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}{unknown}")
    with store.open_for_reading(path) as f:
        if "months" not in f:
            raise store.StoreError(f"{path} is not a results store (no /months ledger)")
    return Results(path=path, instrument=store.stored_instrument(path, expected=expected))


def _directory_message(directory: Path) -> str:
    """Why a directory cannot be opened as a store, and what to open instead."""
    stores = sorted(p.name for p in directory.glob("*.h5") if p.is_file())
    if not stores:
        return (f"{directory} is a directory with no results store (*.h5) in it; open_results takes a store "
                "file, or an instrument name with output_dir set to the directory of the stores")
    return (f"{directory} is a directory, not a results store; it holds {', '.join(stores)}: open one of them "
            f"(open_results('{directory / stores[0]}')) or give an instrument name with "
            f"output_dir='{directory}'")

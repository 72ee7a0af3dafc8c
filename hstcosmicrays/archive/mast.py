"""MAST through astroquery: month queries of calibration darks, verified downloads with retries.

One month of one instrument is fetched in four steps, all through astroquery's
``ObservationsClass`` (the real client, so that its request shapes, paging and long polling are
what MAST sees):

1. ``query_criteria_count`` then ``query_criteria`` with ::

       obs_collection='HST', intentType='calibration', target_name='DARK*',
       instrument_name=<instrument.mast_name>, t_min=[month.mjd_start, month.mjd_stop],
       t_exptime=<instrument.exptime_range>, dataproduct_type=['image']

   The number of rows, and of distinct ``obsid`` among them, must equal the count MAST
   announced (a short answer, e.g. a page lost during paging, or a row that moved from one page
   to the next and came twice, is retried), and rows are kept only when
   ``mjd_start <= t_min < mjd_stop`` (MAST's range filter is inclusive at both ends, so a dark
   starting exactly at midnight of the 1st would otherwise belong to two months).
2. ``get_product_list`` of those observations, then ``filter_products`` with
   ``productSubGroupDescription=<instrument.products>`` and ``mrp_only=False`` (support files
   such as SPT are not "minimum recommended products"). A product row belongs to the
   observation its ``obsID`` names, or else to its ``parent_obsid`` (the obsid asked for: MAST
   lists an association's files with the member that owns them as ``obsID``).
3. ``download_file`` per product into ``<workdir>/mastDownload/HST/<obs_id>/<file>.part``;
   the part file is verified (size equal to the size MAST announced in the product list, opens
   as FITS, every HDU complete, the science extensions the readers need are present) and only
   then renamed to its final name, so a truncated file never has a final name.
4. Files that failed are retried in rounds with exponential back-off
   (``backoff * 2**k`` seconds before round ``k + 1``) up to ``retries`` extra rounds; a file
   still missing after that raises :class:`~hstcosmicrays.archive.base.ArchiveError` for the whole
   month, which the pipeline records as failed and retries on the next run. One exception: on the
   last round a file whose size differs from the product list's but which is a complete FITS file
   with the needed extensions is accepted with a warning (catalogue sizes can lag reprocessing;
   a cut file never passes the FITS structure check).

Valid files already present are kept without any request, so a re-run after a failure only
downloads what is missing. Every archive-supplied name (obs_id, productFilename) passes through
:func:`~hstcosmicrays.archive.base.safe_filename` before it touches the file system.

Time-outs. astroquery issues its HTTP requests without a socket time-out and polls an
``EXECUTING`` answer until ``astroquery.mast.conf.timeout`` (600 s) has passed. ``MastArchive``
mounts a ``requests`` transport adapter on its own client's session that gives every request a
(connect, read) time-out of ``timeout`` seconds and, during a query, refuses to send anything
once the query has run for ``timeout`` seconds. The adapter is plain ``requests`` configuration;
astroquery's code is not modified.

Pointing the client elsewhere (tests, mirrors). astroquery freezes the server URL when
``astroquery.mast`` is first imported; set it in the astropy configuration file
``$XDG_CONFIG_HOME/astropy/astroquery.cfg`` (section ``[mast]``, key ``server``) before the
process imports astroquery. ``hstcosmicrays.testing.mast_server.write_astroquery_config`` writes
such a file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._text import plural
from ..config import InstrumentConfig
from ..intervals import Month
from .base import ArchiveError, Dataset, ProductFile, is_local_write_error, safe_filename
from .fitsfile import fits_structure_warnings_quieted, fits_trailing_bytes, fits_truncation

__all__ = ["MastArchive", "MastQuery", "dark_criteria", "verify_product"]

log = logging.getLogger(__name__)

#: Collection of every HST product in MAST; the download layout is ``mastDownload/HST/<obs_id>/``.
COLLECTION = "HST"


def dark_criteria(instrument: InstrumentConfig, month: Month) -> dict[str, Any]:
    """The ``query_criteria`` keywords that select one month of darks of one instrument.

    Parameters
    ----------
    instrument : InstrumentConfig
        Supplies ``mast_name`` (MAST ``instrument_name``) and ``exptime_range`` (s).
    month : Month
        The window ``[month.mjd_start, month.mjd_stop]`` (MJD, UTC) on the exposure start
        ``t_min``.

    Returns
    -------
    dict
        Keyword arguments for ``astroquery.mast.Observations.query_criteria``.
    """
    lo, hi = instrument.exptime_range
    return {
        "obs_collection": COLLECTION,
        "intentType": "calibration",
        "target_name": "DARK*",
        "instrument_name": instrument.mast_name,
        "t_min": [month.mjd_start, month.mjd_stop],
        "t_exptime": [float(lo), float(hi)],
        "dataproduct_type": ["image"],
    }


# ---------------------------------------------------------------------------------------------
# verification


def _required_extensions(suffix: str, instrument: InstrumentConfig | None) -> str:
    """Which extensions a product must have, as a key of the checks in :func:`verify_product`."""
    if suffix == "FLT":
        return "imset"
    if suffix == "IMA":
        return "ramp"
    if suffix in ("C0M", "C1M"):
        return "images"
    return "primary"


def verify_product(
    path: str | Path, *, suffix: str, size: int | None = None,
    instrument: InstrumentConfig | None = None,
) -> str | None:
    """Check a downloaded product file; return None when it is good, else the reason.

    Checks, in order:

    * the file exists and its size in bytes equals ``size`` (the size MAST announced), when
      ``size`` is known (> 0);
    * it opens as FITS, is not truncated (:func:`~hstcosmicrays.archive.fitsfile.fits_truncation`:
      cut inside data or inside a header, or fewer extensions than NEXTEND) and has no bytes
      after its last HDU (:func:`~hstcosmicrays.archive.fitsfile.fits_trailing_bytes`): its
      HDUs fill the file exactly;
    * the extensions the readers need are present:
      FLT: ``(SCI, v)`` and ``(DQ, v)`` for at least one ``v`` of ``instrument.chips``
      (subarray darks carry one chip); IMA: ``(SCI, 1)``, ``(DQ, 1)`` and ``(TIME, 1)``;
      C0M and C1M: at least one two-dimensional image extension; other products (SPT, SHM, ...):
      a primary header.

    Parameters
    ----------
    path : str or Path
    suffix : str
        Product type in upper case (``FLT``, ``SPT``, ``IMA``, ``C0M``, ``C1M``, ``SHM``).
    size : int, optional
        Expected size in bytes.
    instrument : InstrumentConfig, optional
        Supplies the science chips (EXTVER); without it ``(SCI, 1)`` is required of an FLT.

    Returns
    -------
    str or None
        None for a good file, else a one-line reason.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        actual = path.stat().st_size
    except OSError as exc:
        return f"missing ({exc.strerror})"
    if size is not None and size > 0 and actual != size:
        return f"size {actual} bytes, archive announced {size}"
    if actual == 0:
        return "empty file"
    kind = _required_extensions(suffix.upper(), instrument)
    try:
        # our own file object: closed even when astropy raises half-way through the open
        with open(path, "rb") as fobj, fits_structure_warnings_quieted(), \
                fits.open(fobj, memmap=False, lazy_load_hdus=False) as hdul:
            if len(hdul) == 0:
                return "no HDU"
            truncated = fits_truncation(path, hdul=hdul)
            if truncated is not None:
                return truncated
            extra = fits_trailing_bytes(path, hdul=hdul)
            if extra:
                return f"not FITS: {plural(extra, 'byte')} after its last HDU"
            names = {(h.name.upper(), int(h.ver)) for h in hdul}
            if kind == "imset":
                chips = instrument.chips if instrument is not None else (1,)
                if not any(("SCI", v) in names and ("DQ", v) in names for v in chips):
                    return f"no SCI/DQ imset of chips {tuple(chips)}"
            elif kind == "ramp":
                missing = [e for e in (("SCI", 1), ("DQ", 1), ("TIME", 1)) if e not in names]
                if missing:
                    return f"missing extensions {missing}"
            elif kind == "images":
                if not any(h.is_image and h.header.get("NAXIS", 0) == 2 for h in hdul):
                    return "no two-dimensional image extension"
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError on garbage
        try:
            cut = fits_truncation(path)  # a primary header cut short
        except OSError:
            cut = None
        return cut or f"not a readable FITS file ({type(exc).__name__}: {exc})"
    return None


# ---------------------------------------------------------------------------------------------
# the astroquery client with time-outs


class _TimeoutAdapter:
    """Factory of a ``requests`` adapter that adds a (connect, read) time-out and a deadline.

    Built lazily so that importing this module does not import ``requests``.
    """

    @staticmethod
    def make(timeout: float, state: threading.local, cancelled: threading.Event):
        import requests
        from requests.adapters import HTTPAdapter

        class TimeoutAdapter(HTTPAdapter):
            def send(self, request, **kwargs):  # noqa: D401 - requests' signature
                if cancelled.is_set():
                    raise requests.exceptions.ConnectionError("MAST access cancelled")
                limit = timeout
                deadline = getattr(state, "deadline", None)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise requests.exceptions.Timeout(
                            f"MAST query still unanswered after {timeout:g} s")
                    limit = min(limit, remaining)
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = (limit, limit)
                return super().send(request, **kwargs)

        return TimeoutAdapter()


@dataclass(frozen=True)
class MastQuery:
    """What one month's query asked and what came back (kept for logging and tests).

    Attributes
    ----------
    criteria : dict
        The ``query_criteria`` keywords sent.
    count : int
        Observations MAST counted for the criteria.
    kept : int
        Observations whose ``t_min`` lies in the half-open month window.
    products : int
        Product files of the instrument's types listed for them.
    """

    criteria: dict
    count: int
    kept: int
    products: int


class _Retry(Exception):
    """A transient failure of one attempt (retried after a back-off)."""


class MastArchive:
    """Calibration darks from MAST through astroquery, one month at a time.

    Parameters
    ----------
    timeout : float
        Seconds: (connect, read) time-out of every HTTP request, and the longest a query (with
        its ``EXECUTING`` polling and paging) may take before the attempt counts as failed.
    retries : int
        Extra attempts after the first, for a query and for each round of downloads.
    backoff : float
        Seconds before the first retry; doubled before each further one
        (``backoff * 2**k`` before retry ``k + 1``).
    cloud : bool
        Fetch from the public HST bucket on AWS (``enable_cloud_dataset(provider='AWS')``),
        falling back to MAST per file. Needs boto3; without it the option is skipped with an
        error in the log and files come from MAST. ``timeout`` and :meth:`cancel` do not reach
        that path: astroquery looks up each file's bucket path with a request of its own (no
        time-out), and boto3 transfers with its own time-outs.
    pagesize : int, optional
        Rows per MAST answer (default: astroquery's ``conf.pagesize``, 50000); the client asks
        for every page.
    sleep : callable, optional
        ``sleep(seconds)`` used for the back-off (default: a wait that :meth:`cancel` ends).

    Notes
    -----
    Each instance owns a fresh ``astroquery.mast.ObservationsClass`` client (its own HTTP
    session); calls on one instance are serialised by a lock, so one archive may be used from a
    background thread (see :class:`~hstcosmicrays.archive.base.Prefetcher`).
    """

    #: What its darks are (:data:`~hstcosmicrays.archive.base.SOURCES`); a local stand-in
    #: (``hstcosmicrays mast-server``) serves simulated ones under this name.
    source = "hst"

    def __init__(
        self, *, timeout: float = 600.0, retries: int = 5, backoff: float = 2.0, cloud: bool = False,
        pagesize: int | None = None, sleep: Callable[[float], None] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be 0 or more, got {backoff}")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.cloud_requested = bool(cloud)
        if pagesize is not None and pagesize < 1:
            raise ValueError(f"pagesize must be 1 or more, got {pagesize}")
        self.pagesize = pagesize
        self.cloud_enabled = False
        self._cancelled = threading.Event()
        self._sleep = sleep or self._cancelled.wait
        self._lock = threading.RLock()
        self._state = threading.local()
        self._client = None
        self._instruments: dict[str, InstrumentConfig] = {}
        self.last_query: MastQuery | None = None

    def __repr__(self) -> str:
        return (f"MastArchive(timeout={self.timeout:g}, retries={self.retries}, "
                f"backoff={self.backoff:g}, cloud={self.cloud_requested})")

    # -- the client ---------------------------------------------------------------------------

    @property
    def client(self):
        """The astroquery ``ObservationsClass`` instance (created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        from astroquery.mast import ObservationsClass

        client = ObservationsClass()
        adapter = _TimeoutAdapter.make(self.timeout, self._state, self._cancelled)
        client._session.mount("https://", adapter)
        client._session.mount("http://", adapter)
        log.debug("MAST client for %s", client._portal_api_connection.MAST_REQUEST_URL)
        if self.cloud_requested:
            try:
                client.enable_cloud_dataset(provider="AWS", verbose=False)
            except ImportError as exc:
                log.error("--cloud skipped: the public HST bucket on AWS needs boto3 (%s); "
                          "install it with pip (the package's 'cloud' extra) to use it. Downloading from MAST "
                          "instead.", exc)
            else:
                self.cloud_enabled = True
                log.info("downloading from the public HST bucket on AWS where possible")
        return client

    def _backoff(self, attempt: int) -> float:
        return self.backoff * (2.0 ** attempt)

    def cancel(self) -> None:
        """Stop as soon as possible: no new request is sent and back-off waits end at once.

        Safe to call from another thread (e.g. the pipeline's Ctrl-C handler while a background
        thread downloads the next month). The call in progress then raises ArchiveError;
        verified files stay in place for the next run.
        """
        self._cancelled.set()

    def reset(self) -> None:
        """Undo :meth:`cancel`, for the next run of a pipeline that keeps this archive."""
        self._cancelled.clear()

    def _check_cancelled(self, what: str) -> None:
        if self._cancelled.is_set():
            raise ArchiveError(f"{what}: cancelled")

    # -- query --------------------------------------------------------------------------------

    def query(self, instrument: InstrumentConfig, month: Month) -> list[Dataset]:
        """Darks of ``instrument`` whose exposure starts in ``month``, sorted by ``t_min``.

        An empty month is an empty list. Raises ArchiveError when MAST does not answer after
        ``retries`` retries.
        """
        from astroquery.exceptions import InvalidQueryError

        self._instruments[instrument.name] = instrument
        criteria = dark_criteria(instrument, month)
        errors = []
        for attempt in range(self.retries + 1):
            self._check_cancelled(f"{instrument.name} {month}")
            if attempt:
                delay = self._backoff(attempt - 1)
                log.info("%s %s: query retry %d/%d in %.3g s (%s)", instrument.name, month,
                         attempt, self.retries, delay, errors[-1])
                self._sleep(delay)
                self._check_cancelled(f"{instrument.name} {month}")
            try:
                with self._lock:
                    return self._query_once(instrument, month, criteria)
            except InvalidQueryError as exc:  # our criteria are wrong: retrying cannot help
                raise ArchiveError(f"{instrument.name} {month}: MAST rejected the query: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - every other failure is worth a retry
                errors.append(_describe(exc))
        raise ArchiveError(
            f"{instrument.name} {month}: MAST query failed after {plural(self.retries + 1, 'attempt')}: "
            f"{errors[-1]}"
        )

    def _query_once(self, instrument: InstrumentConfig, month: Month, criteria: dict) -> list[Dataset]:
        client = self.client
        self._state.deadline = time.monotonic() + self.timeout
        try:
            count = int(client.query_criteria_count(**criteria))
            if count == 0:
                self.last_query = MastQuery(criteria, 0, 0, 0)
                log.info("%s %s: no darks in MAST", instrument.name, month)
                return []
            obs = client.query_criteria(pagesize=self.pagesize, **criteria)
            if len(obs) != count:
                raise _Retry(f"MAST announced {plural(count, 'observation')} but returned {len(obs)}")
            # a row that moves between the requests for two pages comes twice, and another never
            distinct = len(set(np.asarray(obs["obsid"], dtype=str)))
            if distinct != count:
                raise _Retry(f"MAST returned {plural(count, 'observation')} of which {count - distinct} "
                             f"twice (paging)")
            t_min = _float_column(obs, "t_min")
            exptime = _float_column(obs, "t_exptime")
            names = np.asarray(obs["instrument_name"], dtype=str)
            same = _name_matches(names, instrument.mast_name)
            keep = np.flatnonzero((t_min >= month.mjd_start) & (t_min < month.mjd_stop) & same)
            if keep.size == 0:
                self.last_query = MastQuery(criteria, count, 0, 0)
                return []
            obs = obs[keep]
            t_min, exptime = t_min[keep], exptime[keep]
            products = client.get_product_list(obs)
            if len(products) == 0:
                raise _Retry(f"MAST listed no products for {plural(len(obs), 'observation')}")
            chosen = client.filter_products(
                products, productSubGroupDescription=list(instrument.products), mrp_only=False,
            )
        finally:
            self._state.deadline = None
        datasets = self._datasets(instrument, obs, t_min, exptime, chosen)
        self.last_query = MastQuery(criteria, count, len(keep), len(chosen))
        log.debug("%s %s: %s in MAST (%s of %s)", instrument.name, month, plural(len(datasets), "dark"),
                  plural(sum(len(d.products) for d in datasets), "file"), "+".join(instrument.products))
        return datasets

    def _datasets(self, instrument, obs, t_min, exptime, products) -> list[Dataset]:
        """Group the chosen product rows by rootname into Datasets with a complete product set."""
        parent = {}
        for i in range(len(obs)):
            parent[str(obs["obsid"][i])] = (str(obs["obs_id"][i]).lower(), float(t_min[i]), float(exptime[i]))
        files: dict[str, dict[str, ProductFile]] = defaultdict(dict)
        when: dict[str, tuple[float, float]] = {}
        for row in products:
            name = str(row["productFilename"])
            try:
                filename = safe_filename(name)
            except ValueError:
                log.warning("%s: product with an unusable file name %r skipped", instrument.name, name)
                continue
            suffix = str(row["productSubGroupDescription"]).upper()
            rootname = _rootname(filename, str(row["obs_id"]))
            size = _int_or_none(row["size"])
            # obsID owns the file (a member of an association); parent_obsid is the obsid asked for
            info = parent.get(str(row["obsID"]))
            if info is None and "parent_obsid" in products.colnames:
                info = parent.get(str(row["parent_obsid"]))
            if info is None:
                log.warning("%s: product %s of an observation that was not asked for", instrument.name, filename)
                continue
            prev = files[rootname].get(suffix)
            if prev is not None and prev.filename != filename:
                log.warning("%s: two %s files for %s (%s, %s); keeping the first",
                            instrument.name, suffix, rootname, prev.filename, filename)
                continue
            files[rootname][suffix] = ProductFile(
                filename=filename, suffix=suffix, size=size, uri=str(row["dataURI"]))
            obs_id, t0, texp = info
            when.setdefault(rootname, (t0, texp))
            if obs_id == rootname:
                when[rootname] = (t0, texp)
        out = []
        wanted = [s.upper() for s in instrument.products]
        for rootname, by_suffix in files.items():
            missing = [s for s in wanted if s not in by_suffix]
            if missing:
                log.warning("%s %s: MAST lists no %s file; dark skipped", instrument.name, rootname,
                            "+".join(missing))
                continue
            t0, texp = when[rootname]
            out.append(Dataset(
                obs_id=rootname, instrument=instrument.name, t_min=t0, exptime=texp,
                products=tuple(by_suffix[s] for s in wanted),
            ))
        missing_obs = {v[0] for v in parent.values()} - set(files)
        for obs_id in sorted(missing_obs):
            log.warning("%s %s: MAST lists none of the %s files; dark skipped", instrument.name, obs_id,
                        "+".join(wanted))
        out.sort(key=lambda d: (d.t_min, d.obs_id))
        return out

    # -- fetch --------------------------------------------------------------------------------

    def fetch(self, datasets: Sequence[Dataset], workdir: Path) -> dict[str, dict[str, Path]]:
        """Download and verify every product of ``datasets`` under ``workdir/mastDownload/HST/``.

        Returns ``{obs_id: {suffix: path}}``. Valid files already present are kept without a
        request. Raises ArchiveError when a file is still missing or invalid after ``retries``
        retry rounds; files that did verify are left in place for the next run.
        """
        workdir = Path(workdir)
        base = workdir / "mastDownload" / COLLECTION
        todo = []  # (obs_id, ProductFile, final path)
        out: dict[str, dict[str, Path]] = {}
        for ds in datasets:
            obs_id = safe_filename(ds.obs_id)
            out[obs_id] = {}
            for prod in ds.products:
                todo.append((obs_id, ds.instrument, prod, base / obs_id / safe_filename(prod.filename)))
        # keep what is already there and valid
        pending = []
        for obs_id, inst, prod, dest in todo:
            if dest.exists() and self._check(dest, prod, inst) is None:
                out[obs_id][prod.suffix] = dest
            else:
                pending.append((obs_id, inst, prod, dest))
        kept = len(todo) - len(pending)
        if kept:
            log.info("%d of %s already present and valid", kept, plural(len(todo), "file"))
        reasons: dict[Path, str] = {}
        for attempt in range(self.retries + 1):
            if not pending:
                break
            if attempt:
                delay = self._backoff(attempt - 1)
                log.info("download retry %d/%d of %s in %.3g s (e.g. %s: %s)", attempt, self.retries,
                         plural(len(pending), "file"), delay, pending[0][3].name, reasons[pending[0][3]])
                self._sleep(delay)
            still = []
            for obs_id, inst, prod, dest in pending:
                self._check_cancelled("download")
                reason = self._download_one(prod, dest, inst, last=attempt == self.retries)
                if reason is None:
                    out[obs_id][prod.suffix] = dest
                    reasons.pop(dest, None)
                else:
                    reasons[dest] = reason
                    still.append((obs_id, inst, prod, dest))
            pending = still
        if pending:
            first = "; ".join(f"{dest.name}: {reasons[dest]}" for *_, dest in pending[:3])
            raise ArchiveError(
                f"{len(pending)} of {plural(len(todo), 'file')} not downloaded after "
                f"{plural(self.retries + 1, 'attempt')} ({first}{'; ...' if len(pending) > 3 else ''})"
            )
        return out

    def _check(self, path: Path, prod: ProductFile, instrument_name: str) -> str | None:
        return verify_product(path, suffix=prod.suffix, size=prod.size,
                              instrument=self._instruments.get(instrument_name))

    def _download_one(self, prod: ProductFile, dest: Path, instrument_name: str, *, last: bool = False) -> str | None:
        """One try at one file: download to ``<dest>.part``, verify, rename. None on success.

        On the ``last`` try, a file whose only defect is a size different from the product
        list's is accepted with a warning when it is a complete FITS file with the needed
        extensions: MAST's catalogue size can lag a reprocessed file, and refusing it would fail
        the month on every run.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")  # always has a suffix: never taken for a directory
        _unlink(part)
        try:
            with self._lock:
                status, msg, _url = self.client.download_file(
                    prod.uri, local_path=str(part), cache=False, verbose=False)
        except Exception as exc:  # noqa: BLE001 - time-outs, cut connections, ...
            _unlink(part)
            if is_local_write_error(exc):  # a full disk here, not MAST: no retry, no ArchiveError
                raise
            return _describe(exc)
        if status != "COMPLETE":
            _unlink(part)
            return f"{status}: {msg}"
        reason = self._check(part, prod, instrument_name)
        if reason is not None and last and reason.startswith("size "):
            instrument = self._instruments.get(instrument_name)
            if verify_product(part, suffix=prod.suffix, size=None, instrument=instrument) is None:
                log.warning("%s: %s; accepted after %s: the FITS file is complete",
                            dest.name, reason, plural(self.retries + 1, "try", "tries"))
                reason = None
        if reason is not None:
            _unlink(part)
            return reason
        os.replace(part, dest)
        return None


# ---------------------------------------------------------------------------------------------
# helpers


#: requests/urllib3 wrap the cause at the end: "Pool(host=..): Max retries .. (Caused by X('..: why'))"
_CAUSED_BY = re.compile(r"\(Caused by (\w+)\((.*)\)\)$")
#: what precedes the reason inside the cause: an object repr or "HTTPSConnection(host=.., port=..): "
_CAUSE_PREFIX = re.compile(r"^[\"']?(?:<[^>]*>|[\w.]+\([^)]*\))?[:,]?\s*[\"']?")


def _describe(exc: BaseException) -> str:
    """One short line for a failed request: the exception's type and, for a connection error of
    requests, the underlying cause first (a DNS failure, a time-out, a refused connection), so
    that the ledger's 240 characters keep it."""
    lines = str(exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    cause = _CAUSED_BY.search(text)
    if cause:
        text = f"{cause.group(1)}: {_CAUSE_PREFIX.sub('', cause.group(2)).rstrip(chr(34) + chr(39))}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _name_matches(names: np.ndarray, pattern: str) -> np.ndarray:
    """Which ``names`` equal ``pattern`` ignoring case, ``*`` matching any run of characters
    (as MAST does for a wildcard criterion such as ``instrument_name='WFPC2*'``)."""
    import fnmatch

    rx = re.compile(fnmatch.translate(pattern.upper()))
    return np.array([rx.match(n.upper()) is not None for n in names], dtype=bool)


def _float_column(table, name: str) -> np.ndarray:
    """A table column as float64, masked entries as NaN (they then fail every window test)."""
    return np.ma.filled(np.ma.asarray(table[name]).astype(float), np.nan)


def _int_or_none(value) -> int | None:
    if value is None or value is np.ma.masked:
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _rootname(filename: str, obs_id: str) -> str:
    """Rootname of a product: the file name before its first ``_``, else the product obs_id."""
    stem = filename.split("_", 1)[0] if "_" in filename else ""
    return (stem or safe_filename(obs_id)).lower()

"""A local HTTP server that answers the calls astroquery's MAST client makes, from any archive.

The real job talks to MAST for weeks; MAST is not reachable from a test machine. This server
stands in for it so that the real astroquery client (not a mock of it) can be exercised against
realistic answers and injected faults.

Endpoints (the ones ``astroquery.mast.Observations`` uses for queries and downloads):

``POST /portal/Mashup/Mashup.asmx/columnsconfig`` (form ``colConfigId=...``)
    Column configuration of ``Mast.Caom.Cone`` (used for ``Mast.Caom.Filtered``) and of
    ``Mast.Caom.Products``: a JSON object ``{column: {"text", "vot.datatype", "separator", ...}}``.
``POST /api/v0/invoke`` (form ``request=<JSON>``)
    Mashup services ``Mast.Caom.Filtered`` (rows, or ``COUNT_BIG(*)``), ``Mast.Caom.Filtered.Position``
    and ``Mast.Caom.Products``, with MAST's paging (``pagesize``, ``page``) and reply shape
    ``{"status", "msg", "data", "fields", "paging"}``.
``GET`` / ``HEAD /api/v0.1/Download/file?uri=mast:HST/product/<file>``
    The bytes of a product, with ``Content-Length``.

The answers come from an archive object (anything with the
:class:`~hstcosmicrays.archive.base.Archive` methods ``query`` and ``fetch``, normally
:class:`~hstcosmicrays.archive.simulated.SimulatedArchive`, whose STIS CR-SPLIT sets are one
dataset each, one FLT of several imsets): an observation row per dataset, a
product row per file (the instrument's product types plus the other types MAST lists for a dark,
such as RAW, TRL, JIF; those extra files are served as small FITS files), and the file bytes.
Filters are applied as MAST applies them: discrete columns match any listed value
(case-insensitively, per ``separator``-separated part) or the ``freeText`` LIKE pattern,
continuous columns match ``min <= value <= max``.

Faults (:class:`Fault`) are injected per request count, so a fault can be transient (the first
``times`` matching requests) or persistent (``times=None``). Every request is recorded
(:class:`RequestRecord`), so a test can check exactly what the client asked for.

Pointing astroquery at the server: astroquery reads its server URL from the astropy
configuration when ``astroquery.mast`` is first imported, so write the configuration file with
:func:`write_astroquery_config` and start the client process with ``XDG_CONFIG_HOME`` set to
that directory.

Command line, to try ``run_pipeline --archive mast`` without MAST::

    hstcosmicrays mast-server --port 8765 --darks-per-month 2 --config-home /tmp/aq
    XDG_CONFIG_HOME=/tmp/aq run_pipeline --instr acs_hrc --archive mast --start 2003-01 --stop 2003-02
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import threading
import zlib
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from ..config import InstrumentConfig
from ..intervals import Month

__all__ = [
    "Fault",
    "RequestRecord",
    "MastServer",
    "write_astroquery_config",
    "CAOM_FIELDS",
    "PRODUCT_FIELDS",
    "COUNT_FIELDS",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# reply shapes (names and types as in MAST's answers)

#: Fields of a ``Mast.Caom.Filtered`` row, in MAST's order, with MAST's type names.
CAOM_FIELDS = (
    ("dataproduct_type", "string"), ("calib_level", "int"), ("obs_collection", "string"),
    ("obs_id", "string"), ("target_name", "string"), ("s_ra", "float"), ("s_dec", "float"),
    ("t_min", "float"), ("t_max", "float"), ("t_exptime", "float"), ("wavelength_region", "string"),
    ("filters", "string"), ("em_min", "float"), ("em_max", "float"),
    ("target_classification", "string"), ("obs_title", "string"), ("t_obs_release", "float"),
    ("instrument_name", "string"), ("proposal_pi", "string"), ("proposal_id", "string"),
    ("project", "string"), ("s_region", "string"), ("jpegURL", "string"), ("dataURL", "string"),
    ("obsid", "string"), ("objID", "string"),
)

#: Fields of a ``Mast.Caom.Products`` row. MAST now also answers ``proposal_id`` and, after
#: ``size``, ``parent_obsid`` (the obsid that was asked for; ``obsID`` is the observation owning
#: the file, a member of it for an association), ``dataRights``, ``calib_level`` and ``filters``.
PRODUCT_FIELDS = (
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"),
    ("obs_id", "string"), ("description", "string"), ("type", "string"), ("dataURI", "string"),
    ("productType", "string"), ("productGroupDescription", "string"),
    ("productSubGroupDescription", "string"), ("productDocumentationURL", "string"),
    ("project", "string"), ("prvversion", "string"), ("proposal_id", "string"),
    ("productFilename", "string"), ("size", "int"), ("parent_obsid", "string"),
    ("dataRights", "string"), ("calib_level", "int"), ("filters", "string"),
    ("_selected_", "boolean"),
)

#: Fields of a ``COUNT_BIG(*)`` answer.
COUNT_FIELDS = (("Column1", "string"),)

# column configuration: MAST's vot.datatype per column (what the client uses to tell continuous
# from discrete filters) and the separator of multi-valued columns
_CAOM_DATATYPES = {
    "intentType": "char", "obs_collection": "char", "instrument_name": "char", "project": "char",
    "filters": "char", "wavelength_region": "char", "target_name": "char",
    "target_classification": "char", "obs_id": "char", "s_ra": "double", "s_dec": "double",
    "obs_title": "char", "proposal_pi": "char", "dataproduct_type": "char", "calib_level": "int",
    "t_min": "double", "t_max": "double", "t_obs_release": "double", "t_exptime": "double",
    "em_min": "double", "em_max": "double", "objID": "long", "s_region": "char", "jpegURL": "char",
    "distance": "float", "obsid": "long", "proposal_id": "char", "dataURL": "string",
}
_SEPARATED = ("obs_collection", "project", "filters", "wavelength_region", "target_classification")
_PRODUCT_DATATYPES = {
    "obsID": "char", "obs_collection": "char", "dataproduct_type": "char", "obs_id": "char",
    "description": "char", "type": "char", "dataURI": "char", "productType": "char",
    "productGroupDescription": "char", "productSubGroupDescription": "char",
    "productDocumentationURL": "char", "project": "char", "prvversion": "char",
    "proposal_id": "char", "productFilename": "char", "size": "long", "parent_obsid": "char",
    "dataRights": "char", "calib_level": "int", "filters": "char",
}

_MRP = "Minimum Recommended Products"
# product types MAST lists for a dark besides the ones the pipeline wants, and the MRP ones
_EXTRA_PRODUCTS = {
    "ccd": ("RAW", "FLC", "TRL", "JIF", "JIT"),
    "ir": ("RAW", "FLT", "TRL", "JIF", "JIT"),
    "wfpc2": ("D0M", "Q0M", "X0M", "C0F", "C1F", "TRL"),
}
_MRP_TYPES = {"FLT", "FLC", "C0F", "C1F", "DRZ", "CRJ"}
_SCIENCE_TYPES = {"FLT", "FLC", "IMA", "C0M", "C0F", "CRJ", "DRZ", "RAW", "D0M"}
_CALIBRATED_TYPES = {"FLT", "FLC", "IMA", "C0M", "C1M", "C0F", "C1F", "CRJ", "DRZ"}
#: added to an obsid to make the obsid of the member observation a ``member`` fault lists
_MEMBER_OBSID_OFFSET = 50_000_000

_DOWNLOAD_PATH = "/api/v0.1/Download/file"
_INVOKE_PATH = "/api/v0/invoke"
_COLUMNS_PATH = "/portal/Mashup/Mashup.asmx/columnsconfig"


def _column_config(datatypes: Mapping[str, str], separated=()) -> dict:
    out = {"_selected_": {"text": "selected", "add": True, "type": "boolean", "hidden": True}}
    for name, dtype in datatypes.items():
        entry = {"text": name, "vot.datatype": dtype, "vot.ID": name, "vot.name": name,
                 "vot.description": name}
        if dtype == "char":
            entry["vot.arraysize"] = "*"
        if name in separated:
            entry["separator"] = ";"
        out[name] = entry
    return out


# ---------------------------------------------------------------------------------------------
# faults and records


_REQUEST_KINDS = ("columnsconfig", "count", "filtered", "products", "download")
_FAULT_KINDS = ("status", "missing", "hang", "truncate", "short", "corrupt", "executing", "error",
                "empty", "rename", "resize", "member", "shift")
_BODY_FAULTS = ("truncate", "short", "corrupt")


@dataclass
class Fault:
    """A fault injected into the answers to matching requests.

    Parameters
    ----------
    kind : str
        ``status``: HTTP error ``status`` (500, 503, ...); ``missing``: HTTP 404;
        ``hang``: answer only after ``seconds`` (past the client's time-out);
        ``truncate``: announce the full ``Content-Length`` but close the connection after
        ``fraction`` of the body; ``short``: serve only ``fraction`` of the body with a matching
        ``Content-Length`` (a short file that looks complete); ``corrupt``: the right number of
        bytes, all zero; ``executing``: a Mashup answer ``{"status": "EXECUTING"}``;
        ``error``: a Mashup answer ``{"status": "ERROR"}``; ``empty``: no rows;
        ``rename``: product rows name their file ``template.format(filename=...)`` (e.g.
        ``"../../{filename}"``), served under that name too; ``resize``: product rows announce
        ``delta`` bytes more than the file has (a stale catalogue size); ``member``: product
        rows name as ``obsID`` a member observation that no query lists, the asked obsid only as
        ``parent_obsid`` (as MAST lists the files of an association's members); ``shift``:
        a page after the first starts with the last row of the page before it instead of its own
        first row (a row that moved between the requests for two pages: the row count is right,
        one observation comes twice and one never).
    target : str
        Which requests: ``columnsconfig``, ``count`` (the ``COUNT_BIG(*)`` query), ``filtered``
        (the row query), ``query`` (both), ``products``, ``invoke`` (every Mashup service call),
        ``download`` or ``any``.
    times : int or None
        How many matching requests are affected (None: all of them, a persistent fault).
    after : int
        Matching requests let through before the fault starts.
    match : str
        Substring that the request's subject must contain: the ``uri`` of a download, the
        ``"<instrument_name> <YYYY-MM>"`` of a query (month of the window start), the obs_ids of
        a product request, the ``colConfigId`` of a columns-config request.
    method : str, optional
        ``GET``, ``HEAD`` or ``POST``; body faults on downloads default to ``GET``.
    status : int
        HTTP status of a ``status`` fault.
    seconds : float
        Delay of a ``hang`` fault.
    fraction : float
        Part of the body sent by ``truncate`` and ``short``.
    template : str
        File-name template of a ``rename`` fault.
    delta : int
        Bytes added to the announced size by a ``resize`` fault.
    """

    kind: str
    target: str = "any"
    times: int | None = 1
    after: int = 0
    match: str = ""
    method: str | None = None
    status: int = 500
    seconds: float = 30.0
    fraction: float = 0.5
    template: str = "{filename}"
    delta: int = 2880
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {_FAULT_KINDS}, got {self.kind!r}")
        if self.target not in _REQUEST_KINDS + ("query", "invoke", "any"):
            raise ValueError(f"fault target {self.target!r} unknown")
        if self.method is None and self.kind in _BODY_FAULTS and self.target == "download":
            self.method = "GET"  # a HEAD answer has no body to damage

    def matches(self, kind: str, method: str, subject: str) -> bool:
        if self.target == "query":
            ok = kind in ("count", "filtered")
        elif self.target == "invoke":
            ok = kind in ("count", "filtered", "products")
        else:
            ok = self.target in ("any", kind)
        if self.method is not None and self.method != method:
            return False
        return ok and self.match in subject


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received.

    Attributes
    ----------
    index : int
        Order of arrival (from 0).
    method, path : str
    kind : str
        ``columnsconfig``, ``count``, ``filtered``, ``products``, ``download`` or ``other``.
    service : str
        Mashup service (``Mast.Caom.Filtered``, ...) or the ``colConfigId``.
    params : dict
        The Mashup request's ``params`` (``filters``, ``columns``, ``obsid``, ``position``).
    page, pagesize : int or None
    uri : str
        The ``uri`` of a download.
    status : int
        HTTP status sent (0 while the answer is pending, e.g. hanging, or when the body was cut).
    fault : str
        Kind of the fault applied, or ``""``.
    """

    index: int
    method: str
    path: str
    kind: str
    service: str = ""
    params: dict = field(default_factory=dict)
    page: int | None = None
    pagesize: int | None = None
    uri: str = ""
    status: int = 200
    fault: str = ""


def write_astroquery_config(
    config_home: str | Path, server_url: str, *, pagesize: int | None = None,
    timeout: float | None = None,
) -> Path:
    """Write ``<config_home>/astropy/astroquery.cfg`` pointing ``astroquery.mast`` at ``server_url``.

    A process started with ``XDG_CONFIG_HOME=<config_home>`` then sends every MAST request of
    ``astroquery.mast`` to the server. ``pagesize`` sets MAST's page size (rows per request) and
    ``timeout`` astroquery's limit (s) on polling an ``EXECUTING`` answer.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(config_home) / "astropy" / "astroquery.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[mast]", f"server = {server_url.rstrip('/')}"]
    if pagesize is not None:
        lines.append(f"pagesize = {int(pagesize)}")
    if timeout is not None:
        lines.append(f"timeout = {float(timeout):g}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# the catalogue: archive datasets as MAST rows


@dataclass
class _Entry:
    """One served file."""

    dataset: Any
    suffix: str
    filename: str
    path: Path | None = None  # None: a generated extra product (bytes in `data`)
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return self.path.read_bytes()

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size


def _tiny_fits(filename: str) -> bytes:
    """A valid primary-only FITS file standing for a product the pipeline does not use."""
    cards = [
        "SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    0",
        "EXTEND  =                    T", f"FILENAME= '{filename[:60]}'", "ORIGIN  = 'hstcosmicrays MAST stand-in'",
        "END",
    ]
    block = "".join(c.ljust(80) for c in cards)
    return block.ljust(2880).encode("ascii")


class _Catalogue:
    """Observation rows, product rows and file bytes built from an archive, cached per month."""

    def __init__(self, archive, instruments: Mapping[str, InstrumentConfig], cache_dir: Path):
        self.archive = archive
        self.by_mast_name = {inst.mast_name.upper(): inst for inst in instruments.values()}
        self.cache_dir = cache_dir
        self._lock = threading.RLock()
        self._months: dict[tuple[str, Month], list] = {}
        self._obs: dict[int, tuple[dict, list[_Entry]]] = {}  # obsid -> (row, entries)
        self._uris: dict[str, _Entry] = {}
        self._obsids: dict[str, int] = {}

    def obsid_of(self, rootname: str) -> int:
        if rootname not in self._obsids:
            value = 2_000_000_000 + zlib.crc32(rootname.encode()) % 900_000_000
            while value in self._obs or value in self._obsids.values():
                value += 1
            self._obsids[rootname] = value
        return self._obsids[rootname]

    def rows(self, mast_name: str, mjd_lo: float, mjd_hi: float) -> list[dict]:
        """Observation rows of one instrument with t_min in [mjd_lo, mjd_hi] (before other filters)."""
        inst = self.by_mast_name.get(mast_name.upper())
        if inst is None:
            return []
        from astropy.time import Time

        lo = Month.from_date(Time(max(mjd_lo, 40000.0), format="mjd").datetime.date())
        hi = Month.from_date(Time(min(mjd_hi, 80000.0), format="mjd").datetime.date())
        out = []
        m, n = lo, 0
        while m <= hi and n < 1200:
            out.extend(r for r in self._month_rows(inst, m) if mjd_lo <= r["t_min"] <= mjd_hi)
            m, n = m.next(), n + 1
        return out

    def _month_rows(self, inst: InstrumentConfig, month: Month) -> list[dict]:
        key = (inst.name, month)
        with self._lock:
            if key not in self._months:
                rows = []
                for ds in self.archive.query(inst, month):
                    rows.append(self._add_dataset(inst, ds))
                self._months[key] = rows
            return self._months[key]

    def _add_dataset(self, inst: InstrumentConfig, ds) -> dict:
        root = ds.obs_id.lower()
        obsid = self.obsid_of(root)
        h = zlib.crc32(root.encode())
        ra, dec = (h % 36000) / 100.0, ((h // 36000) % 17000) / 100.0 - 85.0
        row = {
            "dataproduct_type": "image", "calib_level": 2, "obs_collection": "HST",
            "obs_id": root.upper(), "target_name": "DARK", "s_ra": ra, "s_dec": dec,
            "t_min": float(ds.t_min), "t_max": float(ds.t_min) + float(ds.exptime) / 86400.0,
            "t_exptime": float(ds.exptime), "wavelength_region": "OPTICAL",
            "filters": "DARK", "em_min": 0, "em_max": 0, "target_classification": "CALIBRATION",
            "obs_title": f"{inst.mast_name} dark monitor", "t_obs_release": float(ds.t_min) + 1.0,
            "instrument_name": inst.mast_name, "proposal_pi": "Calibration", "proposal_id": "0",
            "project": "HST",
            "s_region": (f"POLYGON ICRS {ra:.5f} {dec:.5f} {ra + 0.01:.5f} {dec:.5f} "
                         f"{ra + 0.01:.5f} {dec + 0.01:.5f} {ra:.5f} {dec + 0.01:.5f}"),
            "jpegURL": None, "dataURL": None, "obsid": obsid, "objID": obsid + 1_000_000_000,
            # not returned (not a field of the reply) but filterable, as in MAST
            "intentType": "calibration",
        }
        entries = [_Entry(dataset=ds, suffix=p.suffix.upper(), filename=p.filename) for p in ds.products]
        have = {e.suffix for e in entries}
        for sfx in _EXTRA_PRODUCTS.get(inst.kind, ()):
            if sfx not in have:
                name = f"{root}_{sfx.lower()}.fits"
                entries.append(_Entry(dataset=ds, suffix=sfx, filename=name, data=_tiny_fits(name)))
        self._obs[obsid] = (row, entries)
        for e in entries:
            self._uris[f"mast:HST/product/{e.filename}"] = e
        return row

    def _materialise(self, entries: list[_Entry]) -> None:
        """Make the archive write the files of one dataset (once), for their sizes and bytes."""
        need = [e for e in entries if e.data is None and e.path is None]
        if not need:
            return
        ds = need[0].dataset
        paths = self.archive.fetch([ds], self.cache_dir / ds.obs_id)
        files = paths[ds.obs_id]
        for e in need:
            e.path = Path(files[e.suffix])

    def products(self, obsids: list[int], rename: str | None, delta: int = 0,
                 member: bool = False) -> list[dict]:
        out = []
        with self._lock:
            for obsid in obsids:
                if obsid not in self._obs:
                    continue
                row, entries = self._obs[obsid]
                self._materialise(entries)
                for e in entries:
                    filename = e.filename if rename is None else rename.format(filename=e.filename)
                    uri = f"mast:HST/product/{filename}"
                    self._uris.setdefault(uri, e)
                    out.append({
                        "obsID": obsid + _MEMBER_OBSID_OFFSET if member else obsid,
                        "obs_collection": "HST", "dataproduct_type": "image",
                        "obs_id": row["obs_id"],
                        "description": f"DADS {e.suffix} file - {row['instrument_name']}",
                        "type": "S", "dataURI": uri,
                        "productType": "SCIENCE" if e.suffix in _SCIENCE_TYPES else "AUXILIARY",
                        "productGroupDescription": _MRP if e.suffix in _MRP_TYPES else None,
                        "productSubGroupDescription": e.suffix, "productDocumentationURL": None,
                        "project": "HST", "prvversion": None, "proposal_id": row["proposal_id"],
                        "productFilename": filename, "size": e.size() + delta,
                        "parent_obsid": obsid, "dataRights": "PUBLIC",
                        "calib_level": 2 if e.suffix in _CALIBRATED_TYPES else 1,
                        "filters": row["filters"], "_selected_": None,
                    })
        return out

    def entry(self, uri: str) -> _Entry | None:
        with self._lock:
            e = self._uris.get(uri)
            if e is not None:
                row, entries = self._obs[self.obsid_of(e.dataset.obs_id.lower())]
                self._materialise(entries)
            return e

    def obs_ids(self, obsids: list[int]) -> str:
        return ",".join(self._obs[o][0]["obs_id"].lower() for o in obsids if o in self._obs)


# ---------------------------------------------------------------------------------------------
# filtering as MAST does


def _like(pattern: str) -> re.Pattern:
    parts = [re.escape(p) for p in pattern.split("%")]
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _apply_filters(rows: list[dict], filters: list[dict], config: Mapping[str, dict]) -> list[dict]:
    """Rows that pass every Mashup filter (``{"paramName", "values", "freeText", "separator"}``)."""
    out = rows
    for f in filters:
        name = f["paramName"]
        info = config.get(name)
        if info is None:
            raise KeyError(name)
        values = f.get("values", [])
        continuous = info.get("vot.datatype") in ("double", "float", "numeric")
        if continuous:
            bounds = [(float(v["min"]), float(v["max"])) for v in values]
            out = [r for r in out if r.get(name) is not None
                   and any(lo <= float(r[name]) <= hi for lo, hi in bounds)]
        else:
            wanted = {str(v).upper() for v in values}
            free = _like(f["freeText"]) if f.get("freeText") else None
            sep = f.get("separator") or info.get("separator")

            def ok(r):
                value = r.get(name)
                if value is None:
                    return False
                parts = str(value).split(sep) if sep else [str(value)]
                return any(p.upper() in wanted or (free is not None and free.match(p)) for p in parts)

            out = [r for r in out if ok(r)]
    return out


def _angular_distance(ra1, dec1, ra2, dec2) -> float:
    """Great-circle distance in degrees."""
    r = math.radians
    c = (math.sin(r(dec1)) * math.sin(r(dec2))
         + math.cos(r(dec1)) * math.cos(r(dec2)) * math.cos(r(ra1 - ra2)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


# ---------------------------------------------------------------------------------------------
# the server


class MastServer:
    """A MAST stand-in on ``host:port`` serving an archive's datasets; run it in a thread.

    Parameters
    ----------
    archive : Archive
        Source of the datasets (``query``) and of the file bytes (``fetch``), e.g.
        ``SimulatedArchive(seed=2021, darks_per_month=2)``.
    instruments : mapping of str to InstrumentConfig
        The instruments the server knows (``Config.instruments``), found by ``mast_name``.
    host : str
        Address to bind (default ``127.0.0.1``).
    port : int
        Port (default 0: any free port; see :attr:`url`).
    cache_dir : str or Path, optional
        Where the archive writes the served files (default: a temporary directory removed by
        :meth:`stop`).

    Examples
    --------
    >>> with MastServer(archive, config.instruments) as server:       # doctest: +SKIP
    ...     server.add_fault(Fault("status", target="download", status=503, times=2))
    ...     write_astroquery_config(tmp, server.url)
    ...     # run the astroquery client in a process with XDG_CONFIG_HOME=tmp
    """

    def __init__(
        self, archive, instruments: Mapping[str, InstrumentConfig], *, host: str = "127.0.0.1",
        port: int = 0, cache_dir: str | Path | None = None,
    ) -> None:
        self._tmp = None
        if cache_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mast-server-")
            cache_dir = self._tmp.name
        self.catalogue = _Catalogue(archive, instruments, Path(cache_dir))
        self.caom_config = _column_config(_CAOM_DATATYPES, _SEPARATED)
        self.products_config = _column_config(_PRODUCT_DATATYPES)
        self._faults: list[Fault] = []
        self._records: list[RequestRecord] = []
        self._generation = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        try:
            self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        except BaseException:  # cannot listen there (a port in use): no cache directory left behind
            if self._tmp is not None:
                self._tmp.cleanup()
            raise
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "MastServer":
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="mast-server",
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging answers, remove the temporary cache."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "MastServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def prepare(self, instrument: InstrumentConfig, months) -> int:
        """Build the rows and write the files of ``months`` now, so answers come without delay.

        Otherwise the first product list of a month makes the archive write its files, which can
        take longer than a short client time-out. Returns the number of files prepared.
        """
        n = 0
        for month in months:
            rows = self.catalogue.rows(instrument.mast_name, month.mjd_start, month.mjd_stop)
            n += len(self.catalogue.products([r["obsid"] for r in rows], None))
        return n

    # -- faults and records -------------------------------------------------------------------

    def add_fault(self, fault: Fault | None = None, /, **kwargs) -> Fault:
        """Add a fault (a :class:`Fault`, or its keyword arguments); returns it."""
        fault = fault if fault is not None else Fault(**kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far, in order of arrival."""
        with self._lock:
            return list(self._records)

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()
            self._generation += 1  # answers still pending (e.g. hanging) are not recorded later

    def _fault_for(self, kind: str, method: str, subject: str) -> Fault | None:
        with self._lock:
            chosen = None
            for f in self._faults:
                if not f.matches(kind, method, subject):
                    continue
                n = f.seen
                f.seen += 1
                active = n >= f.after and (f.times is None or n < f.after + f.times)
                if active and chosen is None:
                    chosen = f
                    f.fired += 1
            return chosen

    def _begin(self, **kwargs) -> tuple[int, int]:
        """Record a request on arrival (status 0 until :meth:`_finish`); returns its token."""
        with self._lock:
            self._records.append(RequestRecord(index=len(self._records), status=0, **kwargs))
            return self._generation, len(self._records) - 1

    def _finish(self, token: tuple[int, int], status: int) -> None:
        with self._lock:
            generation, index = token
            if generation == self._generation:
                self._records[index] = replace(self._records[index], status=status)

    # -- answers ------------------------------------------------------------------------------

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            server_version = "MASTStandIn/1.0"

            def log_message(self, fmt, *args):  # route to logging instead of stderr
                log.debug("%s %s", self.address_string(), fmt % args)

            def do_POST(self):
                server._post(self)

            def do_GET(self):
                server._download(self, head=False)

            def do_HEAD(self):
                server._download(self, head=True)

        return Handler

    def _send(self, h, status: int, body: bytes, *, content_type="application/json", head=False,
              announce: int | None = None, extra: dict | None = None, cut: int | None = None) -> None:
        """Send an answer; ``announce`` overrides Content-Length, ``cut`` sends only that many bytes."""
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body) if announce is None else announce))
            for k, v in (extra or {}).items():
                h.send_header(k, v)
            h.send_header("Connection", "close")
            h.end_headers()
            if not head:
                h.wfile.write(body if cut is None else body[:cut])
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    def _hang(self, fault: Fault) -> None:
        self._stopping.wait(fault.seconds)

    def _json(self, h, status: int, obj, fault: Fault | None, head=False) -> int:
        """Send JSON, applying a body fault (truncate/short). Returns the status sent (0: cut)."""
        body = json.dumps(obj).encode()
        if fault is not None and fault.kind == "truncate":
            self._send(h, status, body, announce=len(body), cut=max(1, int(len(body) * fault.fraction)))
            return 0
        if fault is not None and fault.kind == "short":
            body = body[: max(1, int(len(body) * fault.fraction))]
        self._send(h, status, body, head=head)
        return status

    def _generic_fault(self, h, fault: Fault | None) -> int | None:
        """Faults common to every endpoint: a hang past the client's time-out (then the answer goes
        on), or a status code / 404 instead of the answer. Returns the status sent, or None."""
        if fault is None:
            return None
        if fault.kind == "hang":
            self._hang(fault)
            return None
        if fault.kind == "status":
            self._send(h, fault.status, f"<html><body>{fault.status}</body></html>".encode(),
                       content_type="text/html")
            return fault.status
        if fault.kind == "missing":
            self._send(h, 404, b"<html><body>404 Not Found</body></html>", content_type="text/html")
            return 404
        return None

    def _post(self, h) -> None:
        path = urlsplit(h.path).path
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode("utf-8", "replace") if length else ""
        form = parse_qs(raw, keep_blank_values=True)
        if path == _COLUMNS_PATH:
            self._columnsconfig(h, form)
        elif path == _INVOKE_PATH:
            self._invoke(h, form)
        else:
            self._finish(self._begin(method="POST", path=path, kind="other"), 404)
            self._send(h, 404, b"not found", content_type="text/plain")

    def _columnsconfig(self, h, form) -> None:
        name = (form.get("colConfigId") or [""])[0]
        fault = self._fault_for("columnsconfig", "POST", name)
        token = self._begin(method="POST", path=_COLUMNS_PATH, kind="columnsconfig", service=name,
                            fault=fault.kind if fault else "")
        status = self._generic_fault(h, fault)
        if status is None:
            config = {"Mast.Caom.Cone": self.caom_config, "Mast.Caom.Filtered": self.caom_config,
                      "Mast.Caom.Filtered.Position": self.caom_config,
                      "Mast.Caom.Products": self.products_config}.get(name, {})
            status = self._json(h, 200, config, fault)
        self._finish(token, status)

    def _invoke(self, h, form) -> None:
        try:
            request = json.loads((form.get("request") or ["{}"])[0])
        except ValueError:
            request = {}
        service = str(request.get("service", ""))
        params = request.get("params", {}) or {}
        page = int(request.get("page", 1) or 1)
        pagesize = int(request.get("pagesize", 50000) or 50000)
        columns = str(params.get("columns", "*"))
        if service in ("Mast.Caom.Filtered", "Mast.Caom.Filtered.Position"):
            kind = "count" if "COUNT_BIG" in columns.upper() else "filtered"
            subject = self._query_subject(params.get("filters", []))
        elif service == "Mast.Caom.Products":
            kind = "products"
            subject = self.catalogue.obs_ids(_ints(params.get("obsid", "")))
        else:
            kind, subject = "other", service
        fault = self._fault_for(kind, "POST", subject) if kind != "other" else None
        record = dict(method="POST", path=_INVOKE_PATH, kind=kind, service=service, params=params,
                      page=page, pagesize=pagesize, fault=fault.kind if fault else "")
        token = self._begin(**record)
        status = self._generic_fault(h, fault)
        if status is not None:
            self._finish(token, status)
            return
        if fault is not None and fault.kind == "executing":
            reply = {"status": "EXECUTING", "msg": "", "data": [], "fields": [], "paging": {}}
            self._finish(token, self._json(h, 200, reply, None))
            return
        if fault is not None and fault.kind == "error":
            reply = {"status": "ERROR", "msg": "Request failed: session in kill state", "data": [],
                     "fields": [], "paging": {}}
            self._finish(token, self._json(h, 200, reply, None))
            return
        empty = fault is not None and fault.kind == "empty"
        rename = fault.template if fault is not None and fault.kind == "rename" else None
        try:
            if kind in ("count", "filtered"):
                rows = [] if empty else self._query(params, service)
                if kind == "count":
                    reply = self._page([{"Column1": len(rows)}], COUNT_FIELDS, 1, pagesize)
                else:
                    fields = CAOM_FIELDS + ((("distance", "float"),) if service.endswith("Position") else ())
                    first = (page - 1) * pagesize
                    if fault is not None and fault.kind == "shift" and 0 < first < len(rows):
                        rows = rows[:first] + [rows[first - 1]] + rows[first + 1:]
                    reply = self._page(rows, fields, page, pagesize)
            elif kind == "products":
                delta = fault.delta if fault is not None and fault.kind == "resize" else 0
                member = fault is not None and fault.kind == "member"
                rows = [] if empty else self.catalogue.products(
                    _ints(params.get("obsid", "")), rename, delta, member)
                reply = self._page(rows, PRODUCT_FIELDS, page, pagesize)
            else:
                reply = {"status": "ERROR", "msg": f"Unknown service {service!r}", "data": [],
                         "fields": [], "paging": {}}
        except KeyError as exc:
            reply = {"status": "ERROR", "msg": f"Unknown column {exc.args[0]!r}", "data": [],
                     "fields": [], "paging": {}}
        self._finish(token, self._json(h, 200, reply, fault if fault and fault.kind in _BODY_FAULTS else None))

    def _query_subject(self, filters) -> str:
        inst, month = "", ""
        for f in filters or []:
            if f.get("paramName") == "instrument_name" and f.get("values"):
                inst = str(f["values"][0])
            if f.get("paramName") == "t_min" and f.get("values"):
                from astropy.time import Time

                try:
                    d = Time(float(f["values"][0]["min"]), format="mjd").datetime.date()
                    month = Month.from_date(d).label
                except (KeyError, TypeError, ValueError):
                    pass
        return f"{inst} {month}"

    def _query(self, params: dict, service: str) -> list[dict]:
        filters = params.get("filters", []) or []
        inst = next((f for f in filters if f.get("paramName") == "instrument_name"), None)
        window = next((f for f in filters if f.get("paramName") == "t_min"), None)
        if inst is None or not (inst.get("values") or inst.get("freeText")):
            # the stand-in only serves queries by instrument, like the pipeline makes them
            return []
        names = list(inst.get("values") or [])
        if inst.get("freeText"):
            like = _like(inst["freeText"])
            names += [n for n in self.catalogue.by_mast_name if like.match(n)]
        lo, hi = 40000.0, 80000.0
        if window is not None and window.get("values"):
            lo = min(float(v["min"]) for v in window["values"])
            hi = max(float(v["max"]) for v in window["values"])
        rows = []
        for name in dict.fromkeys(str(n).upper() for n in names):
            rows.extend(self.catalogue.rows(name, lo, hi))
        rows = _apply_filters(rows, filters, self.caom_config)
        if service.endswith("Position") and params.get("position"):
            ra, dec, radius = (float(x) for x in str(params["position"]).split(","))
            rows = [dict(r, distance=_angular_distance(ra, dec, r["s_ra"], r["s_dec"]) * 3600.0)
                    for r in rows]
            rows = [r for r in rows if r["distance"] <= radius * 3600.0]
        rows.sort(key=lambda r: (r["t_min"], r["obs_id"]))
        return rows

    @staticmethod
    def _page(rows: list[dict], fields, page: int, pagesize: int) -> dict:
        names = [n for n, _ in fields]
        total = len(rows)
        pages = math.ceil(total / pagesize) if pagesize > 0 else 1
        chunk = rows[(page - 1) * pagesize: page * pagesize] if pagesize > 0 else rows
        data = [{n: r.get(n) for n in names if n != "_selected_" or "_selected_" in r} for r in chunk]
        return {
            "status": "COMPLETE", "msg": "",
            "data": data,
            "fields": [{"name": n, "type": t} for n, t in fields],
            "paging": {"page": page, "pageSize": pagesize, "pagesFiltered": pages,
                       "rows": len(chunk), "rowsFiltered": total, "rowsTotal": total},
        }

    def _download(self, h, *, head: bool) -> None:
        parts = urlsplit(h.path)
        method = "HEAD" if head else "GET"
        if parts.path != _DOWNLOAD_PATH:
            self._finish(self._begin(method=method, path=parts.path, kind="other"), 404)
            self._send(h, 404, b"not found", content_type="text/plain", head=head)
            return
        uri = (parse_qs(parts.query).get("uri") or [""])[0]
        fault = self._fault_for("download", method, uri)
        record = dict(method=method, path=parts.path, kind="download", uri=uri,
                      fault=fault.kind if fault else "")
        token = self._begin(**record)
        status = self._generic_fault(h, fault)
        if status is not None:
            self._finish(token, status)
            return
        entry = self.catalogue.entry(uri)
        if entry is None:
            self._send(h, 404, b"<html><body>404 Not Found</body></html>", content_type="text/html",
                       head=head)
            self._finish(token, 404)
            return
        body = entry.read()
        name = uri.rsplit("/", 1)[-1]
        extra = {"Content-Disposition": f"attachment; filename={name}"}
        kind = fault.kind if fault is not None else ""
        if kind == "truncate":
            self._send(h, 200, body, content_type="application/octet-stream", head=head, extra=extra,
                       cut=max(1, int(len(body) * fault.fraction)))
            self._finish(token, 0)
            return
        if kind == "short":
            body = body[: max(1, int(len(body) * fault.fraction))]
        elif kind == "corrupt":
            body = bytes(len(body))
        self._send(h, 200, body, content_type="application/octet-stream", head=head, extra=extra)
        self._finish(token, 200)


def _ints(text) -> list[int]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if part.lstrip("-").isdigit():
            out.append(int(part))
    return out


# ---------------------------------------------------------------------------------------------
# serving the simulated archive (``hstcosmicrays mast-server``)


def serve_simulated(
    *, config, host: str = "127.0.0.1", port: int = 0, seed: int | None = None,
    darks_per_month: int | None = None, config_home: Path | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the simulated archive as MAST until KeyboardInterrupt.

    Parameters
    ----------
    config : Config
    host, port : where to listen (port 0: any free port)
    seed, darks_per_month : of the simulated archive (seed default: the configured one)
    config_home : Path, optional
        Write ``<config_home>/astropy/astroquery.cfg`` pointing astroquery at this server.
    ready : callable, optional
        Called with the server URL once it listens.
    """
    import time

    from ..archive.simulated import SimulatedArchive

    seed = seed if seed is not None else config.pipeline.simulation_seed
    archive = SimulatedArchive(seed=seed, darks_per_month=darks_per_month)
    with MastServer(archive, config.instruments, host=host, port=port) as server:
        log.debug("MAST stand-in at %s", server.url)  # ready() reports it to the user
        if config_home is not None:
            path = write_astroquery_config(config_home, server.url)
            log.info("wrote %s; run clients with XDG_CONFIG_HOME=%s", path, config_home)
        if ready is not None:
            ready(server.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass

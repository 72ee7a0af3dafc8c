"""MastArchive through the real astroquery client against the local MAST stand-in.

The server runs in a thread of the test process (so faults can be set and requests inspected);
the client runs in a child process whose astropy configuration
(``$XDG_CONFIG_HOME/astropy/astroquery.cfg``) points ``astroquery.mast`` at the server, because
astroquery fixes its server URL when it is first imported. Nothing in astroquery is patched.

The source archive here is a tiny in-test archive with known contents (three darks a month,
one of them starting exactly at 00:00 of the 1st), so every expected answer is known.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits

from hstcosmicrays.archive.base import Dataset, ProductFile
from hstcosmicrays.archive.mast import dark_criteria, verify_product
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import Month
from hstcosmicrays.testing.mast_server import (
    CAOM_FIELDS, PRODUCT_FIELDS, MastServer, write_astroquery_config,
)

CONFIG = load_config()
HRC = CONFIG.instrument("acs_hrc")
WFC = CONFIG.instrument("acs_wfc")
MAY = Month(2003, 5)
JUNE = Month(2003, 6)


# ---------------------------------------------------------------------------------------------
# a tiny archive with known contents


class TinyArchive:
    """Three darks a month per instrument; the first starts exactly at the month's start."""

    def __init__(self, darks_per_month: int = 3, shape=(8, 8)):
        self.n = darks_per_month
        self.shape = shape

    def query(self, instrument, month):
        out = []
        for i in range(self.n):
            root = f"{instrument.rootname_prefix}{month.year % 100:02d}{month.month:02d}{i:02d}x{zlib.crc32(instrument.name.encode()) % 100:02d}"
            t0 = month.mjd_start + i * (month.mjd_stop - month.mjd_start) / self.n
            prods = tuple(ProductFile(filename=f"{root}_{s.lower()}.fits", suffix=s, size=None, uri=f"tiny:{root}")
                          for s in instrument.products)
            out.append(Dataset(obs_id=root, instrument=instrument.name, t_min=t0, exptime=900.0 + i, products=prods))
        return out

    def fetch(self, datasets, workdir):
        out = {}
        for ds in datasets:
            d = Path(workdir) / "mastDownload" / "HST" / ds.obs_id
            d.mkdir(parents=True, exist_ok=True)
            out[ds.obs_id] = {}
            for p in ds.products:
                out[ds.obs_id][p.suffix] = write_product(d / p.filename, p.suffix, ds.obs_id, self.shape)
        return out


def write_product(path: Path, suffix: str, rootname: str, shape=(8, 8), chips=(1,)) -> Path:
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    primary = fits.PrimaryHDU()
    primary.header["ROOTNAME"] = rootname
    hdus = [primary]
    if suffix == "FLT":
        for v in chips:
            hdus += [fits.ImageHDU(rng.normal(size=shape).astype("f4"), name="SCI", ver=v),
                     fits.ImageHDU(np.ones(shape, "f4"), name="ERR", ver=v),
                     fits.ImageHDU(np.zeros(shape, "i2"), name="DQ", ver=v)]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------
# the client in a child process

WORKER = r"""
import io, json, logging, sys
opts = json.loads(sys.argv[1])
if opts.get("hide_boto3"):
    sys.modules["boto3"] = None  # as if boto3 were not installed
root = logging.getLogger()
root.setLevel(logging.INFO)
from hstcosmicrays.archive.base import ArchiveError
from hstcosmicrays.archive.mast import MastArchive
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import parse_month
config = load_config()


def run(args):
    inst = load_config(args["config"]).instrument(args["instrument"]) if args.get("config") else \
        config.instrument(args["instrument"])
    archive = MastArchive(timeout=args["timeout"], retries=args["retries"], backoff=args["backoff"],
                          cloud=args["cloud"], pagesize=args["pagesize"])
    out = {"months": {}}
    for label in args["months"]:
        res = {"datasets": None, "files": None, "query_error": None, "fetch_error": None}
        try:
            ds = archive.query(inst, parse_month(label))
            res["datasets"] = [[d.obs_id, d.t_min, d.exptime, [[p.suffix, p.filename, p.size] for p in d.products]]
                               for d in ds]
        except ArchiveError as exc:
            res["query_error"] = str(exc)
        if res["datasets"] is not None and args["fetch"]:
            try:
                files = archive.fetch(ds, args["workdir"])
                res["files"] = {k: {s: str(p) for s, p in v.items()} for k, v in files.items()}
            except ArchiveError as exc:
                res["fetch_error"] = str(exc)
        out["months"][label] = res
    out["cloud_enabled"] = archive.cloud_enabled
    return out


for line in sys.stdin:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    try:
        out = run(json.loads(line))
    finally:
        root.removeHandler(handler)
    out["log"] = buf.getvalue()
    print("RESULT " + json.dumps(out), flush=True)
"""


class ClientProcess:
    """A child process running MastArchive with astroquery pointed at ``server_url``.

    It serves one request per line on stdin, so the (slow) imports happen once per process.
    """

    def __init__(self, server_url: str, config_home: Path, *, hide_boto3: bool = False):
        write_astroquery_config(config_home, server_url)
        self.stderr = open(config_home / "client.stderr", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps({"hide_boto3": hide_boto3})],
            env=dict(os.environ, XDG_CONFIG_HOME=str(config_home)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                self.lines.put(json.loads(line[len("RESULT "):]))
        self.lines.put(None)

    def run(self, **args) -> dict:
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        try:
            out = self.lines.get(timeout=120)
        except queue.Empty:
            out = None
        if out is None:
            self.stderr.seek(0)
            raise AssertionError("the client process failed:\n" + self.stderr.read()[-3000:])
        return out

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def tiny():
    return TinyArchive()


@pytest.fixture(scope="module")
def mast(tiny):
    with MastServer(tiny, CONFIG.instruments) as srv:
        yield srv


@pytest.fixture
def server(mast):
    """The module's server without faults and with an empty request log."""
    mast.clear_faults()
    mast.clear_requests()
    yield mast
    mast.clear_faults()


@pytest.fixture(scope="module")
def client(mast, tmp_path_factory):
    with ClientProcess(mast.url, tmp_path_factory.mktemp("xdg")) as proc:
        yield proc


def run_client(client: ClientProcess, tmp_path: Path, months=(MAY,), *, instrument="acs_hrc", timeout=5.0,
               retries=3, backoff=0.01, pagesize=None, workdir=None, fetch=True, cloud=False,
               config=None) -> dict:
    """MastArchive.query (+ fetch) of ``months`` in the client process; files under ``workdir``."""
    workdir = Path(workdir or tmp_path / "work")
    return client.run(instrument=instrument, months=[m.label for m in months], timeout=timeout,
                      retries=retries, backoff=backoff, pagesize=pagesize, workdir=str(workdir),
                      fetch=fetch, cloud=cloud, config=str(config) if config else None)


def expected_files(archive: TinyArchive, instrument, month) -> dict[str, set[str]]:
    """obs_id -> product file names of the darks starting in [month start, next month start)."""
    return {d.obs_id: {p.filename for p in d.products} for d in archive.query(instrument, month)}


def downloads(server: MastServer, method="GET") -> list[str]:
    return [r.uri.rsplit("/", 1)[-1] for r in server.requests if r.kind == "download" and r.method == method]


def assert_month_complete(result: dict, archive: TinyArchive, instrument, month, workdir: Path):
    """The month's files are all there, in MAST's layout, byte-identical to the archive's."""
    res = result["months"][month.label]
    assert res["query_error"] is None and res["fetch_error"] is None, res
    want = expected_files(archive, instrument, month)
    assert {d[0] for d in res["datasets"]} == set(want)
    assert set(res["files"]) == set(want)
    reference = archive.fetch(archive.query(instrument, month), workdir.parent / "reference")
    for obs_id, by_suffix in res["files"].items():
        assert set(by_suffix) == set(instrument.products)
        for suffix, path in by_suffix.items():
            path = Path(path)
            assert path.parent == workdir / "mastDownload" / "HST" / obs_id
            assert path.read_bytes() == reference[obs_id][suffix].read_bytes()
    assert not list(workdir.rglob("*.part"))


# ---------------------------------------------------------------------------------------------
# reply shapes against the recorded real MAST replies shipped with astroquery


def recorded(name: str) -> dict:
    import astroquery.mast

    path = Path(astroquery.mast.__file__).parent / "tests" / "data" / name
    if not path.exists():
        pytest.skip(f"astroquery's recorded MAST reply {name} is not installed")
    return json.loads(path.read_text())


def invoke(server: MastServer, request: dict) -> dict:
    from urllib.parse import quote

    body = "request=" + quote(json.dumps(request))
    r = requests.post(server.url + "/api/v0/invoke", data=body, timeout=10,
                      headers={"Content-type": "application/x-www-form-urlencoded"})
    r.raise_for_status()
    return r.json()


def _filters(instrument, month):
    lo, hi = instrument.exptime_range
    return [
        {"paramName": "obs_collection", "separator": ";", "values": ["HST"]},
        {"paramName": "intentType", "values": ["calibration"]},
        {"paramName": "target_name", "values": [], "freeText": "DARK%"},
        {"paramName": "instrument_name", "values": [instrument.mast_name]},
        {"paramName": "t_min", "values": [{"min": month.mjd_start, "max": month.mjd_stop}]},
        {"paramName": "t_exptime", "values": [{"min": lo, "max": hi}]},
        {"paramName": "dataproduct_type", "values": ["image"]},
    ]


def _same_kind(value, ours) -> bool:
    """JSON values of one field are alike: both null-or-text, or both numbers."""
    def kind(v):
        if v is None or isinstance(v, str):
            return "text"
        if isinstance(v, bool):
            return "bool"
        return "number"
    return ours is None or value is None or kind(value) == kind(ours)


@pytest.mark.parametrize("service, recorded_name, fields", [
    ("Mast.Caom.Filtered", "advSearch.json", CAOM_FIELDS),
    ("Mast.Caom.Products", "products.json", PRODUCT_FIELDS),
    ("count", "countsResp.json", None),
])
def test_replies_have_the_shape_of_recorded_mast_replies(server, service, recorded_name, fields):
    real = recorded(recorded_name)
    filters = _filters(HRC, MAY)
    if service == "Mast.Caom.Products":
        rows = invoke(server, {"service": "Mast.Caom.Filtered", "params": {"columns": "*", "filters": filters},
                               "format": "json", "pagesize": 50000, "page": 1})["data"]
        request = {"service": service, "params": {"obsid": ",".join(str(r["obsid"]) for r in rows)}}
    elif service == "count":
        request = {"service": "Mast.Caom.Filtered", "params": {"columns": "COUNT_BIG(*)", "filters": filters}}
    else:
        request = {"service": service, "params": {"columns": "*", "filters": filters}}
    ours = invoke(server, dict(request, format="json", pagesize=50000, page=1))
    assert set(ours) == set(real)
    assert set(ours["paging"]) == set(real["paging"])
    assert ours["status"] == real["status"] == "COMPLETE"
    # the recorded fields with their MAST type names, in the same order; a product row also has
    # the fields MAST added since the recording (parent_obsid, ...)
    ours_fields = [(f["name"], f["type"]) for f in ours["fields"]]
    real_fields = [(f["name"], f["type"]) for f in real["fields"]]
    added = set(ours_fields) - set(real_fields)
    assert [f for f in ours_fields if f not in added] == real_fields
    assert {n for n, _ in added} == ({"proposal_id", "parent_obsid", "dataRights", "calib_level", "filters"}
                                     if service == "Mast.Caom.Products" else set())
    assert ours["data"], "the stand-in returned no rows"
    for row in ours["data"]:
        assert set(row) == set(real["data"][0]) | {n for n, _ in added}
        for name, value in row.items():
            assert all(_same_kind(r.get(name), value) for r in real["data"]), name
    if service == "count":
        assert ours["data"][0]["Column1"] == len(expected_files(TinyArchive(), HRC, MAY)) + 1  # + next month's 1st


def test_columnsconfig_agrees_with_the_recorded_one(server):
    real = recorded("columnsconfig.json")
    r = requests.post(server.url + "/portal/Mashup/Mashup.asmx/columnsconfig", data="colConfigId=Mast.Caom.Cone",
                      headers={"Content-type": "application/x-www-form-urlencoded"}, timeout=10)
    ours = r.json()
    for name, _ in CAOM_FIELDS:
        assert name in real and name in ours
    for name in set(ours) & set(real):
        # what the client reads: the data type (continuous or discrete filter) and the separator
        assert ours[name].get("vot.datatype") == real[name].get("vot.datatype"), name
        assert ours[name].get("separator") == real[name].get("separator"), name
    assert "intentType" in ours


def test_the_client_parses_the_stand_in_replies(server):
    """astroquery's own JSON-to-table conversion accepts every reply (types as MAST's)."""
    from astroquery.mast.discovery_portal import _json_to_table

    reply = invoke(server, {"service": "Mast.Caom.Filtered", "format": "json", "pagesize": 50000, "page": 1,
                            "params": {"columns": "*", "filters": _filters(HRC, MAY)}})
    table = _json_to_table(reply)
    assert len(table) == 4 and table["t_min"].dtype.kind == "f"
    assert set(table["instrument_name"]) == {"ACS/HRC"}


# ---------------------------------------------------------------------------------------------
# queries


def test_dark_criteria_are_those_of_the_configured_instrument_and_month():
    c = dark_criteria(WFC, MAY)
    assert c == {
        "obs_collection": "HST", "intentType": "calibration", "target_name": "DARK*",
        "instrument_name": "ACS/WFC", "t_min": [MAY.mjd_start, MAY.mjd_stop],
        "t_exptime": list(WFC.exptime_range), "dataproduct_type": ["image"],
    }


def test_query_asks_mast_for_exactly_the_instrument_window_and_product_types(server, client, tiny, tmp_path):
    result = run_client(client, tmp_path, (MAY,), pagesize=2)
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")
    reqs = server.requests
    queries = [r for r in reqs if r.kind in ("count", "filtered")]
    assert {r.kind for r in queries} == {"count", "filtered"}
    for r in queries:
        assert r.service == "Mast.Caom.Filtered"
        assert "position" not in r.params
        assert r.params["filters"] == _filters(HRC, MAY)
    # paging: 4 rows (3 of May + the dark at 00:00 on June 1st) in pages of 2
    assert [r.page for r in queries if r.kind == "filtered"] == [1, 2]
    assert all(r.pagesize == 2 for r in queries if r.kind == "filtered")
    # the products asked for are those of the kept observations only (not the June 1st dark)
    rows = invoke(server, {"service": "Mast.Caom.Filtered", "format": "json", "pagesize": 50, "page": 1,
                           "params": {"columns": "*", "filters": _filters(HRC, MAY)}})["data"]
    may_ids = {str(r["obsid"]) for r in rows if r["t_min"] < MAY.mjd_stop}
    asked = {r.params["obsid"] for r in reqs if r.kind == "products"}
    assert len(asked) == 1 and set(asked.pop().split(",")) == may_ids
    # downloads: exactly the FLT and SPT files (the product list also names RAW, FLC, TRL, JIF, JIT)
    want = set().union(*expected_files(tiny, HRC, MAY).values())
    assert sorted(downloads(server, "GET")) == sorted(want)
    assert {n.split("_")[1] for n in want} == {"flt.fits", "spt.fits"}


def test_a_dark_starting_at_midnight_of_the_first_belongs_to_that_month_only(server, client, tiny, tmp_path):
    result = run_client(client, tmp_path, (MAY, JUNE), fetch=False)
    may = {d[0] for d in result["months"][MAY.label]["datasets"]}
    june = {d[0] for d in result["months"][JUNE.label]["datasets"]}
    first_of_june = tiny.query(HRC, JUNE)[0]
    assert first_of_june.t_min == JUNE.mjd_start
    assert first_of_june.obs_id in june and first_of_june.obs_id not in may
    assert may == set(expected_files(tiny, HRC, MAY))


def test_a_wildcard_instrument_name_is_sent_as_free_text_and_matched(server, client, tiny, tmp_path):
    user = tmp_path / "wild.yaml"
    user.write_text("instruments:\n  acs_hrc:\n    mast_name: 'ACS/H*'\n")
    result = run_client(client, tmp_path, (MAY,), config=user)
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")
    for r in server.requests:
        if r.kind in ("count", "filtered"):
            f = next(x for x in r.params["filters"] if x["paramName"] == "instrument_name")
            assert f == {"paramName": "instrument_name", "values": [], "freeText": "ACS/H%"}


def test_empty_month_is_an_empty_list_not_an_error(server, client, tmp_path):
    server.add_fault(kind="empty", target="query", times=None)
    result = run_client(client, tmp_path, (MAY,))
    res = result["months"][MAY.label]
    assert res["datasets"] == [] and res["query_error"] is None and res["fetch_error"] is None
    assert not [r for r in server.requests if r.kind in ("products", "download")]


def test_dataset_t_min_and_exptime_come_from_the_observation_rows(server, client, tiny, tmp_path):
    result = run_client(client, tmp_path, (MAY,), fetch=False)
    got = {d[0]: (d[1], d[2]) for d in result["months"][MAY.label]["datasets"]}
    for ds in tiny.query(HRC, MAY):
        assert got[ds.obs_id] == pytest.approx((ds.t_min, ds.exptime), abs=1e-9)
    sizes = {p[1]: p[2] for d in result["months"][MAY.label]["datasets"] for p in d[3]}
    assert all(isinstance(s, int) and s > 0 for s in sizes.values())


# ---------------------------------------------------------------------------------------------
# faults: transient ones are retried to a complete month, persistent ones raise ArchiveError

TRANSIENT = {
    "count 500": dict(kind="status", target="count", status=500, times=2),
    "query 503": dict(kind="status", target="filtered", status=503, times=1),
    "columnsconfig 503": dict(kind="status", target="columnsconfig", status=503, times=1),
    "executing then complete": dict(kind="executing", target="filtered", times=3),
    "session in kill state": dict(kind="error", target="products", times=1),
    "truncated query reply": dict(kind="truncate", target="filtered", times=1),
    "query hangs past the time-out": dict(kind="hang", target="filtered", times=1, seconds=8),
    "second page lost": dict(kind="empty", target="filtered", after=1, times=1),
    "a row moves from the second page to the first": dict(kind="shift", target="filtered", after=1, times=1),
    "download 500": dict(kind="status", target="download", status=500, times=2),
    "download 503 on GET": dict(kind="status", target="download", status=503, method="GET", times=3),
    "download truncated": dict(kind="truncate", target="download", times=2),
    "download short file": dict(kind="short", target="download", times=1),
    "download corrupt": dict(kind="corrupt", target="download", times=1),
    "listed file 404s once": dict(kind="missing", target="download", match="_flt", times=1),
    "download hangs past the time-out": dict(kind="hang", target="download", method="GET", times=1, seconds=8),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_fault_is_retried_to_a_complete_month(server, client, tiny, tmp_path, name):
    fault = server.add_fault(**TRANSIENT[name])
    pagesize = 2 if TRANSIENT[name]["target"] == "filtered" and TRANSIENT[name].get("after") else None
    if fault.target == "columnsconfig":
        # astroquery caches column configurations per process: only a new process asks for them
        with ClientProcess(server.url, tmp_path / "xdg") as fresh:
            result = run_client(fresh, tmp_path, (MAY,), timeout=2.0)
    else:
        result = run_client(client, tmp_path, (MAY,), timeout=2.0, pagesize=pagesize)
    assert fault.fired == (fault.times or fault.fired) and fault.fired >= 1
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")


PERSISTENT = {
    "query 500": (dict(kind="status", target="query", status=500, times=None), "query"),
    "query hangs": (dict(kind="hang", target="filtered", times=None, seconds=8), "query"),
    "always executing": (dict(kind="executing", target="filtered", times=None), "query"),
    "listed file always 404s": (dict(kind="missing", target="download", match="_spt", times=None), "fetch"),
    "always truncated": (dict(kind="truncate", target="download", match="_flt", times=None), "fetch"),
    "always short": (dict(kind="short", target="download", match="_flt", times=None), "fetch"),
}


@pytest.mark.parametrize("name", sorted(PERSISTENT))
def test_persistent_fault_raises_archive_error_and_leaves_no_bad_file(server, client, tiny, tmp_path, name):
    spec, stage = PERSISTENT[name]
    server.add_fault(**spec)
    result = run_client(client, tmp_path, (MAY,), timeout=1.5, retries=2)
    res = result["months"][MAY.label]
    work = tmp_path / "work"
    if stage == "query":
        assert res["query_error"] and "2003-05" in res["query_error"]
        assert res["datasets"] is None
        assert not work.exists() or not any(p.is_file() for p in work.rglob("*"))
        return
    assert res["query_error"] is None and res["fetch_error"], res
    assert "3 of 6 files" in res["fetch_error"]
    # the files that did verify are in place, nothing truncated has a final name, no part files
    bad = "_spt" if "404" in name else "_flt"
    present = sorted(p.name for p in work.rglob("*") if p.is_file())
    want = sorted(n for names in expected_files(tiny, HRC, MAY).values() for n in names if bad not in n)
    assert present == want
    for p in work.rglob("*.fits"):
        assert verify_product(p, suffix=p.stem.split("_")[1].upper(), instrument=HRC) is None
    # bounded: 1 + retries tries per bad file
    gets = [n for n in downloads(server, "GET" if "404" not in name else "HEAD") if bad in n]
    assert len(gets) == 3 * 3


def test_refetch_keeps_valid_files_and_replaces_bad_ones(server, client, tiny, tmp_path):
    work = tmp_path / "work"
    first = run_client(client, tmp_path, (MAY,))
    assert_month_complete(first, tiny, HRC, MAY, work)
    files = sorted(work.rglob("*.fits"))
    truncated, removed, garbage = files[0], files[1], files[2]
    truncated.write_bytes(truncated.read_bytes()[:1000])
    removed.unlink()
    garbage.write_bytes(bytes(garbage.stat().st_size))  # right size, not FITS
    untouched = {p: p.stat().st_mtime_ns for p in files[3:]}
    server.clear_requests()
    second = run_client(client, tmp_path, (MAY,))
    assert_month_complete(second, tiny, HRC, MAY, work)
    assert sorted(downloads(server, "GET")) == sorted(p.name for p in (truncated, removed, garbage))
    assert all(p.stat().st_mtime_ns == t for p, t in untouched.items())


def test_archive_file_names_cannot_escape_the_work_directory(server, client, tiny, tmp_path):
    server.add_fault(kind="rename", target="products", times=None, template="../../../../{filename}")
    work = tmp_path / "deep" / "work"
    result = run_client(client, tmp_path, (MAY,), workdir=work)
    res = result["months"][MAY.label]
    assert res["fetch_error"] is None and res["query_error"] is None, res
    # the client asked for the archive's (hostile) names but wrote only under the work directory
    assert any(r.uri.startswith("mast:HST/product/../") for r in server.requests if r.kind == "download")
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "xdg" not in p.parts)
    assert written and all(work in p.parents for p in written)
    assert {p.name for p in written} == set().union(*expected_files(tiny, HRC, MAY).values())


def test_files_of_a_member_observation_are_found_through_parent_obsid(server, client, tiny, tmp_path):
    """MAST lists an association's files with the member that owns them as obsID and the obsid
    that was asked for as parent_obsid; the member itself need not be a row of the query."""
    server.add_fault(kind="member", target="products", times=None)
    result = run_client(client, tmp_path, (MAY,))
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")
    assert "not asked for" not in result["log"]


def test_a_stale_catalogue_size_is_accepted_on_the_last_try_for_a_complete_fits_file(server, client, tiny, tmp_path):
    server.add_fault(kind="resize", target="products", times=None, delta=2880)
    result = run_client(client, tmp_path, (MAY,), retries=2)
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")
    # every file was tried 1 + retries times before being accepted, with a warning each
    gets = downloads(server, "GET")
    assert sorted(gets) == sorted(3 * [n for names in expected_files(tiny, HRC, MAY).values() for n in names])
    assert result["log"].count("accepted after 3 tries") == 6


def test_retries_are_bounded_and_back_off_exponentially(server, client, tmp_path):
    server.add_fault(kind="status", target="count", status=503, times=None)
    result = run_client(client, tmp_path, (MAY,), retries=3, backoff=0.2, fetch=False)
    assert "4 attempts" in result["months"][MAY.label]["query_error"]
    counts = [r for r in server.requests if r.kind == "count"]
    assert len(counts) == 4
    # waits of 0.2, 0.4, 0.8 s are logged before the three retries
    waits = re.findall(r"query retry \d+/3 in ([\d.]+) s", result["log"])
    assert [float(w) for w in waits] == [0.2, 0.4, 0.8]


def test_cloud_without_boto3_is_skipped_with_a_clear_error(server, tiny, tmp_path):
    with ClientProcess(server.url, tmp_path / "xdg", hide_boto3=True) as fresh:
        result = run_client(fresh, tmp_path, (MAY,), cloud=True)
    assert result["cloud_enabled"] is False
    assert "--cloud skipped" in result["log"] and "boto3" in result["log"]
    assert_month_complete(result, tiny, HRC, MAY, tmp_path / "work")


def test_cloud_with_boto3_enables_the_aws_bucket(server, client, tmp_path):
    pytest.importorskip("boto3")
    # no download here: with the bucket enabled, astroquery would ask the real MAST for bucket paths
    result = run_client(client, tmp_path, (MAY,), cloud=True, fetch=False)
    assert result["cloud_enabled"] is True
    assert "downloading from the public HST bucket on AWS" in result["log"]


# ---------------------------------------------------------------------------------------------
# verification of one file


@pytest.fixture
def flt(tmp_path):
    return write_product(tmp_path / "j0000001q_flt.fits", "FLT", "j0000001q", chips=(1, 2))


def test_verify_accepts_a_good_file(flt):
    assert verify_product(flt, suffix="FLT", size=flt.stat().st_size, instrument=WFC) is None


def test_verify_accepts_a_subarray_with_one_chip_of_two(tmp_path):
    path = write_product(tmp_path / "j0000002q_flt.fits", "FLT", "j0000002q", chips=(2,))
    assert verify_product(path, suffix="FLT", instrument=WFC) is None


@pytest.mark.parametrize("damage, reason", [
    ("size", "archive announced"),
    ("truncate", "announced"),
    ("zeros", "not a readable FITS"),
    ("empty", "empty"),
    ("missing", "missing"),
    ("no_dq", "no SCI/DQ imset"),
])
def test_verify_rejects_a_damaged_file(flt, damage, reason):
    size = flt.stat().st_size
    if damage == "size":
        size += 2880
    elif damage == "truncate":
        flt.write_bytes(flt.read_bytes()[: size // 2])
    elif damage == "zeros":
        flt.write_bytes(bytes(size))
    elif damage == "empty":
        flt.write_bytes(b"")
        size = None
    elif damage == "missing":
        flt.unlink()
    elif damage == "no_dq":
        with fits.open(flt) as h:
            fits.HDUList([hdu.copy() for hdu in h if hdu.name != "DQ"]).writeto(flt, overwrite=True)
        size = None
    got = verify_product(flt, suffix="FLT", size=size, instrument=WFC)
    assert got is not None and reason in got


@pytest.mark.parametrize("cut", [2880, 2880 + 100, 1, 2 * 2880 + 100])
def test_verify_rejects_a_fits_file_cut_anywhere(flt, cut):
    """Even without an announced size, a file cut inside data or inside a header is refused,
    as truncated, and astropy's warnings about it are kept quiet (they are errors here)."""
    data = flt.read_bytes()
    flt.write_bytes(data[: len(data) - cut])
    got = verify_product(flt, suffix="FLT", size=None, instrument=WFC)
    assert got is not None and got.startswith(f"truncated: {len(data) - cut:,} ")


def test_verify_rejects_bytes_after_the_last_hdu(flt):
    flt.write_bytes(flt.read_bytes() + bytes(10))
    assert verify_product(flt, suffix="FLT", size=None, instrument=WFC) == "not FITS: 10 bytes after its last HDU"


# ---------------------------------------------------------------------------------------------
# the live service


def test_cancel_stops_queries_until_reset():
    """The pipeline cancels on Ctrl-C or an outage; a pipeline run again (a notebook) resets."""
    from hstcosmicrays.archive.base import ArchiveError
    from hstcosmicrays.archive.mast import MastArchive

    archive = MastArchive(timeout=1, retries=0, backoff=0.01)
    archive.cancel()
    with pytest.raises(ArchiveError, match="cancelled"):
        archive.query(HRC, MAY)
    assert archive._sleep(0.5) is True  # a back-off wait ends at once while cancelled
    archive.reset()
    assert archive._sleep(0.01) is False


@pytest.mark.remote_data
def test_live_mast_lists_acs_hrc_darks_of_may_2003():
    from hstcosmicrays.archive.mast import MastArchive

    archive = MastArchive(timeout=120, retries=2, backoff=5)
    darks = archive.query(HRC, MAY)
    assert darks, "MAST lists no ACS/HRC darks in May 2003"
    for d in darks:
        assert MAY.mjd_start <= d.t_min < MAY.mjd_stop
        assert d.obs_id.startswith("j")
        assert {p.suffix for p in d.products} == {"FLT", "SPT"}
        assert all(p.size and p.size > 0 for p in d.products)


@pytest.mark.remote_data
@pytest.mark.parametrize("cloud", [False, True])
def test_live_download_of_one_support_file_verifies(tmp_path, cloud):
    import dataclasses

    from hstcosmicrays.archive.mast import MastArchive

    if cloud:
        pytest.importorskip("boto3")
    archive = MastArchive(timeout=120, retries=2, backoff=5, cloud=cloud)
    darks = archive.query(HRC, MAY)
    assert darks
    one = dataclasses.replace(darks[0], products=tuple(p for p in darks[0].products if p.suffix == "SPT"))
    files = archive.fetch([one], tmp_path)
    path = files[one.obs_id]["SPT"]
    assert path.parent == tmp_path / "mastDownload" / "HST" / one.obs_id
    assert verify_product(path, suffix="SPT", size=one.products[0].size, instrument=HRC) is None
    assert archive.cloud_enabled is cloud


def test_mast_server_command_serves_the_simulated_archive(tmp_path):
    """`hstcosmicrays mast-server` listens, writes the astroquery configuration and stops on Ctrl-C."""
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "hstcosmicrays", "-q", "mast-server", "--config-home", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("MAST stand-in at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[3]
        cfg = (tmp_path / "astropy" / "astroquery.cfg").read_text()
        assert url in cfg
        body = urllib.request.urlopen(url + "/portal/Mashup/Mashup.asmx/columnsconfig",
                                      data=b"colConfigId=Mast.Caom.Cone", timeout=30).read()
        assert body.startswith(b"{")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        proc.stdout.close() if not proc.stdout.closed else None
    assert proc.returncode == 0, err


def test_a_simulated_stis_crsplit_set_is_served_as_one_observation(tmp_path):
    """Serving the simulated archive, the stand-in lists each STIS CR-SPLIT set of several
    exposures as one observation (the set's obs_id, its total exposure time), announces the sizes
    of the bytes it serves, and the real client downloads the set's one FLT of several imsets and
    its SPT, byte-identical to the simulated archive's; a lone exposure stays a file of its own."""
    from hstcosmicrays import simulate
    from hstcosmicrays.archive.simulated import SimulatedArchive

    stis = CONFIG.instrument("stis_ccd")
    month = Month(2012, 3)
    sim = SimulatedArchive(seed=5, darks_per_month=3, shape=(16, 24))
    want = sim.query(stis, month)
    assert [len(sim.dataset(stis, d.obs_id).frames) for d in want] == [2, 1]
    (tmp_path / "xdg").mkdir()
    with MastServer(sim, CONFIG.instruments) as srv, ClientProcess(srv.url, tmp_path / "xdg") as client:
        result = run_client(client, tmp_path, months=(month,), instrument="stis_ccd")
    res = result["months"][month.label]
    assert res["query_error"] is None and res["fetch_error"] is None, res
    assert [(d[0], d[2]) for d in res["datasets"]] == [(d.obs_id, d.exptime) for d in want]
    assert want[0].obs_id.endswith(simulate.SET_LAST) and want[0].exptime == 2 * want[1].exptime
    for d, (obs_id, _, _, products) in zip(want, res["datasets"]):
        assert products == [[p.suffix, p.filename, p.size] for p in d.products]
        for suffix, path in res["files"][obs_id].items():
            data = Path(path).read_bytes()
            assert data == sim.product_bytes(stis, obs_id, suffix)
            assert len(data) == next(p.size for p in d.products if p.suffix == suffix)
    with fits.open(res["files"][want[0].obs_id]["FLT"]) as hdul:
        assert hdul[0].header["NEXTEND"] == 6 and [h.ver for h in hdul[1:]] == [1, 1, 1, 2, 2, 2]
    with fits.open(res["files"][want[1].obs_id]["FLT"]) as hdul:
        assert hdul[0].header["NEXTEND"] == 3 and hdul[0].header["EXPSTART"] == want[1].t_min


def test_a_connection_failure_is_described_by_its_cause_in_one_short_line():
    """requests puts the reason of a failed connection at the end of a long text; the ledger
    keeps 240 characters, so the description leads with the cause (a refused connection, a DNS
    failure) instead of the pool and URL."""
    from hstcosmicrays.archive.mast import _describe

    with pytest.raises(requests.ConnectionError) as refused:
        requests.get("http://127.0.0.1:1/portal/Mashup/Mashup.asmx/invoke", timeout=5)
    text = _describe(refused.value)
    assert text.startswith("ConnectionError: NewConnectionError: Failed to establish a new connection: "), text
    assert "Connection refused" in text and "object at 0x" not in text and len(text) < 120
    # exceptions without a wrapped cause keep their first line
    assert _describe(requests.ReadTimeout("read timed out (600 s)\nmore")) == "ReadTimeout: read timed out (600 s)"
    assert _describe(TimeoutError()) == "TimeoutError"


def test_a_download_the_local_disk_cannot_write_is_raised_at_once_not_blamed_on_mast(tmp_path):
    """A full disk (ENOSPC while astroquery writes the file) is the local disk's problem: no
    retry round, no ArchiveError that the pipeline would record as MAST failing the month, and no
    part file left."""
    import errno

    from hstcosmicrays.archive.mast import MastArchive

    calls = []

    class FullDiskClient:  # stands in for the astroquery client: what its download does on a full disk
        def download_file(self, uri, *, local_path, cache, verbose):
            calls.append(uri)
            Path(local_path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", local_path)

    archive = MastArchive(retries=3, backoff=0.0, sleep=lambda s: None)
    archive._client = FullDiskClient()
    ds = Dataset(obs_id="jabc01abq", instrument="acs_hrc", t_min=53000.0, exptime=1000.0, products=(
        ProductFile(filename="jabc01abq_flt.fits", suffix="FLT", size=None, uri="mast:HST/product/jabc01abq_flt.fits"),))
    with pytest.raises(OSError) as info:
        archive.fetch([ds], tmp_path)
    assert info.value.errno == errno.ENOSPC
    assert len(calls) == 1
    assert not list(tmp_path.rglob("*.part"))

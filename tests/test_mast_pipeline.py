"""``run_pipeline --archive mast`` end to end through the real astroquery client.

A MAST stand-in (``hstcosmicrays.testing.mast_server``) serves the simulated archive from a
thread of the test process; ``run_pipeline`` runs as a child process whose astropy configuration
points ``astroquery.mast`` at it (astroquery reads its server URL when it is imported, so the
configuration file is the way in; nothing is patched). The store it writes must equal the store
of ``run_pipeline --archive simulated`` on the same months, and under injected faults every
month must end either committed complete or recorded failed, and a second run without the fault
must complete it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hstcosmicrays.archive.simulated import SimulatedArchive
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import Month
from hstcosmicrays.store import read_committed, read_ledger, visible_row_numbers
from hstcosmicrays.testing.mast_server import MastServer, write_astroquery_config

CONFIG = load_config()
INSTR = CONFIG.instrument("acs_hrc")  # a 1024x1024 detector keeps the runs short
MONTHS = ("2003-01", "2003-02", "2003-03")
DARKS = 2
COMMON = ["--instr", INSTR.name, "--start", MONTHS[0], "--stop", MONTHS[-1], "--workers", "1", "-q"]
SIM = SimulatedArchive(seed=CONFIG.pipeline.simulation_seed, darks_per_month=DARKS)


def run_pipeline(args: list[str], *, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from hstcosmicrays.cli import run_pipeline_main as m; sys.exit(m())",
         *args], env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The store of ``--archive simulated`` on the three months."""
    out = tmp_path_factory.mktemp("simulated")
    proc = run_pipeline(COMMON + ["--archive", "simulated", "--darks-per-month", str(DARKS), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / INSTR.store_name


@pytest.fixture(scope="module")
def mast_server():
    with MastServer(SIM, CONFIG.instruments) as server:
        # write the simulated files before any client asks, so that answers are never slow
        server.prepare(INSTR, [Month(int(m[:4]), int(m[5:])) for m in MONTHS])
        yield server


@pytest.fixture
def server(mast_server):
    mast_server.clear_faults()
    mast_server.clear_requests()
    yield mast_server
    mast_server.clear_faults()


def run_mast(server: MastServer, tmp_path: Path, out: Path) -> subprocess.CompletedProcess:
    """``run_pipeline --archive mast`` against ``server``, with short time-outs and back-off."""
    home = tmp_path / "xdg"
    write_astroquery_config(home, server.url)
    user = tmp_path / "fast_mast.yaml"
    user.write_text("pipeline:\n  mast_timeout: 3.0\n  download_retries: 2\n  download_backoff: 0.01\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(home))
    return run_pipeline(COMMON + ["--archive", "mast", "--config", str(user), "--output", str(out)], env=env)


# ---------------------------------------------------------------------------------------------
# comparing stores

LEDGER_COLUMNS = ("month", "state", "n_found", "n_processed", "n_failed", "n_cr", "median_rate")


def month_content(path: Path, month: str) -> dict:
    """The visible rows of one month, exposure_index replaced by rootnames, in a canonical order."""
    out = {}
    ex = read_committed(path, "exposures", months=[month])
    order = np.argsort(ex["rootname"], kind="stable")
    out["exposures"] = {k: v[order] for k, v in ex.items()}
    all_rows = visible_row_numbers(path, "exposures")
    all_names = read_committed(path, "exposures", columns=["rootname"])["rootname"]
    name_of = dict(zip(all_rows.tolist(), all_names.tolist()))
    for table, keys in (("cosmic_rays", ("y", "x", "chip", "read")), ("orbit", ("mjd",))):
        t = read_committed(path, table, months=[month])
        names = np.array([name_of[i] for i in t["exposure_index"].tolist()], dtype=object)
        order = np.lexsort(tuple(t[k] for k in keys) + (names.astype(str),))
        out[table] = {**{k: v[order] for k, v in t.items() if k != "exposure_index"}, "rootname": names[order]}
    fl = read_committed(path, "failures", months=[month])
    order = np.lexsort((fl["stage"], fl["rootname"]))
    out["failures"] = {k: v[order] for k, v in fl.items()}
    ledger = read_ledger(path)
    row = list(ledger["month"]).index(month.encode())
    out["months"] = {k: ledger[k][row] for k in LEDGER_COLUMNS}
    return out


def assert_same_month(a: Path, b: Path, month: str) -> None:
    ta, tb = month_content(a, month), month_content(b, month)
    for table in ta:
        assert set(ta[table]) == set(tb[table]), table
        for col in ta[table]:
            np.testing.assert_array_equal(ta[table][col], tb[table][col], err_msg=f"{month} {table}.{col}")


def assert_all_months_equal_reference(store: Path, reference: Path) -> None:
    """Every month is committed and holds the same rows as the simulated-archive reference."""
    assert ledger_states(store) == {m: "committed" for m in MONTHS}
    for month in MONTHS:
        assert_same_month(store, reference, month)


def ledger_states(path: Path) -> dict[str, str]:
    ledger = read_ledger(path)
    return {m.decode(): s.decode() for m, s in zip(ledger["month"], ledger["state"])}


def ledger_errors(path: Path) -> dict[str, str]:
    ledger = read_ledger(path)
    return {m.decode(): e.decode() for m, e in zip(ledger["month"], ledger["error"])}


def window_start(record) -> float:
    """MJD start of the t_min window of a recorded query."""
    f = next(x for x in record.params["filters"] if x["paramName"] == "t_min")
    return f["values"][0]["min"]


def rootnames(month: str) -> list[str]:
    y, m = (int(v) for v in month.split("-"))
    return [d.obs_id for d in SIM.query(INSTR, Month(y, m))]


# ---------------------------------------------------------------------------------------------
# the acceptance


def test_mast_run_through_astroquery_equals_the_simulated_run(server, reference, tmp_path):
    out = tmp_path / "mast"
    proc = run_mast(server, tmp_path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = out / INSTR.store_name
    assert_all_months_equal_reference(store, reference)
    assert read_committed(store, "exposures", columns=["rootname"])["rootname"].size == DARKS * len(MONTHS)
    # what was asked of MAST: the configured instrument, each month's window, FLT+SPT only
    queries = [r for r in server.requests if r.kind in ("count", "filtered")]
    windows = set()
    for r in queries:
        f = {x["paramName"]: x for x in r.params["filters"]}
        assert f["instrument_name"]["values"] == ["ACS/HRC"]
        assert f["obs_collection"]["values"] == ["HST"] and f["intentType"]["values"] == ["calibration"]
        assert f["target_name"]["freeText"] == "DARK%" and f["dataproduct_type"]["values"] == ["image"]
        assert f["t_exptime"]["values"] == [{"min": INSTR.exptime_range[0], "max": INSTR.exptime_range[1]}]
        windows.add((f["t_min"]["values"][0]["min"], f["t_min"]["values"][0]["max"]))
    want_windows = set()
    for label in MONTHS:
        m = Month(int(label[:4]), int(label[5:]))
        want_windows.add((m.mjd_start, m.mjd_stop))
    assert windows == want_windows
    got = sorted(r.uri.rsplit("/", 1)[-1] for r in server.requests if r.kind == "download" and r.method == "GET")
    want = sorted(f"{root}_{s.lower()}.fits" for month in MONTHS for root in rootnames(month) for s in ("FLT", "SPT"))
    assert got == want


def test_transient_faults_are_retried_and_every_month_commits_complete(server, reference, tmp_path):
    jan, feb, mar = (rootnames(m) for m in MONTHS)
    server.add_fault(kind="status", target="count", status=500, times=1, match="2003-01")
    server.add_fault(kind="executing", target="filtered", times=3, match="2003-02")
    server.add_fault(kind="truncate", target="query", times=1, match="2003-03")
    server.add_fault(kind="error", target="products", times=1)
    server.add_fault(kind="truncate", target="download", times=1, match=jan[0] + "_flt")
    server.add_fault(kind="short", target="download", times=1, match=feb[1] + "_flt")
    server.add_fault(kind="status", target="download", status=503, times=2, match=mar[0])
    server.add_fault(kind="missing", target="download", times=1, match=mar[1] + "_spt")
    server.add_fault(kind="hang", target="download", method="GET", times=1, seconds=8, match=feb[0] + "_spt")
    out = tmp_path / "mast"
    proc = run_mast(server, tmp_path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = out / INSTR.store_name
    assert_all_months_equal_reference(store, reference)
    assert all(f.fired >= 1 for f in server._faults)


@pytest.mark.parametrize("scenario", ["downloads", "queries"])
def test_persistent_faults_fail_the_month_and_a_second_run_completes_it(server, reference, tmp_path, scenario):
    jan, feb, mar = (rootnames(m) for m in MONTHS)
    if scenario == "downloads":
        faults = [
            server.add_fault(kind="missing", target="download", times=None, match=jan[1] + "_spt"),
            server.add_fault(kind="truncate", target="download", times=None, match=feb[0] + "_flt"),
        ]
        bad = {"2003-01": [jan[1] + "_spt.fits"], "2003-02": [feb[0] + "_flt.fits"]}
    else:
        faults = [
            server.add_fault(kind="hang", target="filtered", times=None, seconds=8, match="2003-02"),
            server.add_fault(kind="status", target="count", status=503, times=None, match="2003-03"),
        ]
        bad = {"2003-02": [], "2003-03": []}
    out = tmp_path / "mast"
    store = out / INSTR.store_name
    first = run_mast(server, tmp_path, out)
    assert first.returncode == 1, first.stderr[-3000:]  # the run ends, with failed months
    states = ledger_states(store)
    assert states == {m: ("failed" if m in bad else "committed") for m in MONTHS}
    errors = ledger_errors(store)
    for month in bad:
        # a failed month shows nothing and says why
        assert read_committed(store, "exposures", columns=["rootname"], months=[month])["rootname"].size == 0
        assert errors[month]
        for name in bad[month]:
            assert name in errors[month]
    for month in MONTHS:
        if month not in bad:
            assert_same_month(store, reference, month)  # committed complete
    # the failed downloads left no file with a final name that is bad
    for month, names in bad.items():
        for name in names:
            assert not list((out / "work").rglob(name))
    # the fault is gone: the second run completes the failed months
    server.clear_faults()
    server.clear_requests()
    second = run_mast(server, tmp_path, out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_all_months_equal_reference(store, reference)
    # committed months were not asked for again; a failed month's valid files were kept
    asked = {window_start(r) for r in server.requests if r.kind == "count"}
    assert asked == {Month(int(m[:4]), int(m[5:])).mjd_start for m in bad}
    got = sorted(r.uri.rsplit("/", 1)[-1] for r in server.requests if r.kind == "download" and r.method == "GET")
    if scenario == "downloads":
        assert got == sorted(n for names in bad.values() for n in names)
    assert all(f.fired >= 1 for f in faults)


def test_empty_month_is_committed_empty(server, reference, tmp_path):
    server.add_fault(kind="empty", target="query", times=None, match="2003-02")
    out = tmp_path / "mast"
    proc = run_mast(server, tmp_path, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = out / INSTR.store_name
    assert ledger_states(store) == {m: "committed" for m in MONTHS}
    ledger = read_ledger(store)
    assert ledger["n_found"][list(ledger["month"]).index(b"2003-02")] == 0
    assert read_committed(store, "exposures", columns=["rootname"], months=["2003-02"])["rootname"].size == 0
    for month in ("2003-01", "2003-03"):
        assert_same_month(store, reference, month)

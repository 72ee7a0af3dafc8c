"""The HDF5 results store: visibility through the ledger, atomic commits, recovery after SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from hstcosmicrays.schema import empty_table
from hstcosmicrays.store import (
    ResultsStore, StoreError, StoreLockedError, format_ledger, lookup3, open_for_reading, read_committed,
    read_ledger, visible_row_numbers,
)

OPEN = dict(instrument="wfc3_uvis", software_version="0.1.0", config_hash="cafe")


def month_tables(label, n_exp=3, n_cr=500, seed=0):
    rng = np.random.default_rng(seed)
    e = empty_table("exposures", n_exp)
    e["rootname"][:] = [f"i{label[2:4]}{label[5:]}{i:03d}q".encode() for i in range(n_exp)]
    e["month"][:] = label
    e["n_cr"][:] = n_cr // n_exp
    e["rate"][:] = rng.uniform(1, 2, n_exp)
    c = empty_table("cosmic_rays", n_cr)
    c["exposure_index"][:] = np.arange(n_cr) % n_exp
    c["energy"][:] = rng.uniform(100, 5000, n_cr)
    o = empty_table("orbit", 5 * n_exp)
    o["exposure_index"][:] = np.arange(5 * n_exp) // 5
    o["lat"][:] = rng.uniform(-28, 28, 5 * n_exp)
    return dict(exposures=e, cosmic_rays=c, orbit=o)


def test_lookup3_known_values():
    # reference values of Bob Jenkins' hashlittle
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago", 0) == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_commit_read_and_reprocess(tmp_path):
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        for k in range(1, 4):
            store.commit_month(month=f"2010-0{k}", n_found=3, started=time.time(), **month_tables(f"2010-0{k}", seed=k))
        assert store.committed_months() == {"2010-01", "2010-02", "2010-03"}
        # reprocessing a month replaces its rows; the old ones become invisible
        store.commit_month(month="2010-02", n_found=3, started=time.time(), **month_tables("2010-02", n_exp=2, n_cr=10))
        store.record_month_failure(month="2010-04", error="MAST unreachable", started=time.time(), n_found=0)
    ex = read_committed(path, "exposures")
    assert len(ex["rootname"]) == 3 + 2 + 3
    assert sorted(set(ex["month"].tolist())) == [b"2010-01", b"2010-02", b"2010-03"]
    cr = read_committed(path, "cosmic_rays", columns=["exposure_index"])
    assert len(cr["exposure_index"]) == 500 + 10 + 500
    # every CR points at a visible exposure row
    assert set(np.unique(cr["exposure_index"])) <= set(visible_row_numbers(path, "exposures"))
    ledger = read_ledger(path)
    assert ledger["month"].tolist() == [b"2010-01", b"2010-02", b"2010-03", b"2010-04"]
    assert ledger["state"].tolist() == [b"committed"] * 3 + [b"failed"]
    assert ledger["n_cr"][1] == 10
    assert len(read_ledger(path, latest=False)["month"]) == 5
    text = format_ledger(path)
    assert "2010-04  failed" in text and "MAST unreachable" in text
    only = read_committed(path, "exposures", columns=["month"], months=["2010-03"])
    assert set(only["month"].tolist()) == {b"2010-03"}


def test_schema_attributes_and_wrong_instrument(tmp_path):
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN):
        pass
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 1 and f.attrs["instrument"] == "wfc3_uvis"
        assert f["cosmic_rays/energy"].attrs["unit"] == "electron"
        assert f["cosmic_rays/energy"].compression == "gzip"
    with pytest.raises(StoreError, match="not 'acs_wfc'"):
        ResultsStore.open(path, instrument="acs_wfc", software_version="0", config_hash="x")


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN):
        code = f"from hstcosmicrays.store import ResultsStore; ResultsStore.open({str(path)!r}, **{OPEN!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0 and "StoreLockedError" in proc.stderr and "pid" in proc.stderr
    with pytest.raises(StoreLockedError):
        with ResultsStore.open(path, **OPEN):
            ResultsStore.open(path, **OPEN)


def test_store_stays_readable_when_the_recovery_itself_is_killed(tmp_path):
    """A run killed while it recovers the store (at its start, after an earlier kill) leaves a
    file that readers can open at once, without waiting for the next run."""
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        store.commit_month(month="2010-01", n_found=3, started=time.time(), **month_tables("2010-01"))
    code = textwrap.dedent(f"""
        import time
        from hstcosmicrays import store as st
        read = st._read_ledger_arrays
        def slow(f):
            print("recovering", flush=True)
            time.sleep(60)
            return read(f)
        st._read_ledger_arrays = slow
        st.ResultsStore.open({str(path)!r}, **{OPEN!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "recovering"  # inside _recover, the file open
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdout.close()
    with open_for_reading(path, wait=0.0):
        pass
    assert list(read_ledger(path)["month"]) == [b"2010-01"]
    assert len(read_committed(path, "exposures", columns=["month"])["month"]) == 3
    with ResultsStore.open(path, **OPEN) as store:  # and the next run recovers it
        assert store.committed_months() == {"2010-01"}


def test_bad_rows_are_refused(tmp_path):
    with ResultsStore.open(tmp_path / "s.h5", **OPEN) as store:
        tables = month_tables("2010-01")
        tables["cosmic_rays"]["exposure_index"][0] = 7
        with pytest.raises(ValueError, match="exposure_index"):
            store.commit_month(month="2010-01", n_found=3, started=0.0, **tables)
        tables = month_tables("2010-01")
        del tables["orbit"]["alt"]
        with pytest.raises(ValueError, match="missing columns"):
            store.commit_month(month="2010-01", n_found=3, started=0.0, **tables)


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_store import month_tables, OPEN
    from hstcosmicrays.store import ResultsStore
    with ResultsStore.open({path!r}, **OPEN) as store:
        done = store.committed_months()
        for k in range(40):
            label = f"{{2000 + k // 12}}-{{k % 12 + 1:02d}}"
            if label in done:
                continue
            store.commit_month(month=label, n_found=4, started=time.time(),
                               **month_tables(label, n_exp=4, n_cr=30000, seed=k))
            print(label, flush=True)
""")


def _check_consistent(path):
    """Every visible month is complete and equal to what the writer produced."""
    ledger = read_ledger(path)
    ex = read_committed(path, "exposures", columns=["month"])
    cr = read_committed(path, "cosmic_rays", columns=["energy"])
    months = [m.decode() for m in ledger["month"]]
    assert len(set(months)) == len(months)
    assert len(ex["month"]) == 4 * len(months)
    expected = np.concatenate(
        [month_tables(m, n_exp=4, n_cr=30000, seed=(int(m[:4]) - 2000) * 12 + int(m[5:]) - 1)["cosmic_rays"]["energy"]
         for m in sorted(months)]) if months else np.zeros(0, "f4")
    np.testing.assert_array_equal(np.sort(cr["energy"]), np.sort(expected))
    return months


def test_sigkill_at_random_instants_never_loses_or_exposes_a_partial_month(tmp_path):
    path = str(tmp_path / "kill.h5")
    script = WRITER.format(tests=os.path.dirname(__file__), path=path)
    rng = np.random.default_rng(7)
    kills = 0
    for attempt in range(60):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        # let it get into its commits, then kill it at a random instant
        with proc.stdout:
            first = proc.stdout.readline()
            if first:
                time.sleep(rng.uniform(0.0, 0.25))
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not first:
            break
        kills += 1
        # a reader right after the kill sees only complete months
        _check_consistent(path)
    assert kills >= 10
    # finish without interruption
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    months = _check_consistent(path)
    assert len(months) == 40


READER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from hstcosmicrays.store import read_committed, read_ledger
    seen = 0
    t0 = time.time()
    while time.time() - t0 < 30:
        ex = read_committed({path!r}, "exposures", columns=["month"])
        months, counts = np.unique(ex["month"], return_counts=True)
        assert (counts == 4).all(), counts  # only whole months are visible
        assert len(months) >= seen  # and none disappears
        seen = len(months)
        assert len(read_ledger({path!r})["month"]) >= seen
        if seen == 40:
            break
    print(seen)
""")


def test_reader_in_another_process_while_writing(tmp_path):
    path = str(tmp_path / "live.h5")
    with ResultsStore.open(path, **OPEN):
        pass  # create the file so that the reader can start first
    reader = subprocess.Popen([sys.executable, "-c", READER.format(path=path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    subprocess.run([sys.executable, "-c", WRITER.format(tests=os.path.dirname(__file__), path=path)],
                   check=True, capture_output=True)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) == 40
    _check_consistent(path)


def test_compact_an_empty_store_and_one_with_only_a_failed_month(tmp_path):
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        store.compact()
    assert len(read_ledger(path, latest=False)["month"]) == 0
    with ResultsStore.open(path, **OPEN) as store:
        store.record_month_failure(month="2012-01", error="MAST down", started=0.0)
        store.record_month_failure(month="2012-01", error="MAST down again", started=1.0)
        store.compact()
    ledger = read_ledger(path, latest=False)
    assert ledger["month"].tolist() == [b"2012-01"] and ledger["error"].tolist() == [b"MAST down again"]
    assert ledger["state"].tolist() == [b"failed"] and ledger["failures_stop"].tolist() == [0]

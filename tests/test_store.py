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

from hstcosmicrays import store as store_mod
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
    assert "configuration" not in text.splitlines()[1]  # one configuration: no column for it
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


def test_a_reader_opens_again_when_hdf5_finds_the_file_extended_meanwhile(tmp_path, monkeypatch):
    """HDF5 before 2.0 compares a file's length with its superblock at open even in SWMR-read
    mode: a writer extending the store between the reader's own length check and its open made
    the open fail ("truncated file"; 4 of 15 reader-while-writing runs under load with h5py
    3.12). The reader checks the length again and opens; with no time left to wait, HDF5's error
    is the answer."""
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        store.commit_month(month="2010-01", n_found=3, started=0.0, **month_tables("2010-01"))
    real_file = store_mod.h5py.File
    calls = []

    def extended_once(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise OSError("Unable to synchronously open file (truncated file: eof = 100, sblock->base_addr = 0, "
                          "stored_eof = 165)")
        return real_file(*args, **kwargs)

    monkeypatch.setattr(store_mod.h5py, "File", extended_once)
    with open_for_reading(path, wait=5.0) as f:
        assert "months" in f
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(StoreError, match="truncated file"):  # no time left to look again
        open_for_reading(path, wait=0.0)
    assert len(calls) == 1


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


def test_compact_tells_its_progress_in_values_copied(tmp_path):
    """progress(done, total) starts at 0, never goes back, and ends at the rows kept times the
    columns of the data tables (the rows --reprocess left are not counted)."""
    from hstcosmicrays.schema import DATA_TABLES, TABLES

    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        for k in range(1, 4):
            store.commit_month(month=f"2010-0{k}", n_found=3, started=0.0, **month_tables(f"2010-0{k}", seed=k))
        store.commit_month(month="2010-02", n_found=3, started=1.0, **month_tables("2010-02", n_exp=2, n_cr=10))
        calls = []
        store.compact(progress=lambda done, total: calls.append((done, total)))
    kept = {t: len(next(iter(read_committed(path, t).values()))) for t in DATA_TABLES}
    assert kept["cosmic_rays"] == 500 + 10 + 500 and kept["exposures"] == 3 + 2 + 3
    total = sum(kept[t] * len(TABLES[t]) for t in DATA_TABLES)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) > 3 * len(TABLES["cosmic_rays"])


def test_threads_reading_one_store_get_the_same_rows_as_one_reader(tmp_path):
    """dask's default (threaded) scheduler reads the partitions of a lazy table at the same
    time; two threads refreshing datasets of one file in SWMR mode used to get wrong rows,
    silently (up to half of the pieces)."""
    from concurrent.futures import ThreadPoolExecutor

    from hstcosmicrays.store import read_rows, visible_ranges

    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        for k in range(1, 4):
            store.commit_month(month=f"2010-0{k}", n_found=3, started=0.0,
                               **month_tables(f"2010-0{k}", n_cr=300_000, seed=k))
    n = visible_ranges(path, tables=("cosmic_rays",))["cosmic_rays"][-1][1]
    pieces = [(a, min(a + 100_000, n)) for a in range(0, n, 100_000)]
    expected = read_rows(path, "cosmic_rays", ranges=[(0, n)], columns=["energy"])["energy"]

    def read(piece):
        return piece, read_rows(path, "cosmic_rays", ranges=[piece], columns=["energy"])["energy"]

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for (a, b), got in pool.map(read, pieces):
                np.testing.assert_array_equal(got, expected[a:b], err_msg=f"rows {a}:{b}")


# ----------------------------------------------------------------------------------------------
# configurations: the text behind every config_hash of the ledger


def _configured(text):
    from hstcosmicrays.config import config_digest

    return dict(OPEN, config_hash=config_digest(text), configuration=text)


def test_each_configuration_is_stored_once_and_read_back_by_its_digest(tmp_path):
    from hstcosmicrays.config import load_config
    from hstcosmicrays.store import read_configurations

    path = tmp_path / "s.h5"
    first = load_config().text  # the packaged defaults: several pieces of CONFIG_PART_BYTES
    second = '{"pipeline": {"workers": 1}}'
    for text, months in ((first, ("2010-01", "2010-02")), (second, ("2010-03",)), (first, ("2010-04",))):
        with ResultsStore.open(path, **_configured(text)) as store:
            for m in months:
                store.commit_month(month=m, n_found=3, started=0.0, **month_tables(m))
    stored = read_configurations(path)
    assert stored == {_configured(first)["config_hash"]: first, _configured(second)["config_hash"]: second}
    with open_for_reading(path) as f:
        digests = f["configurations"]["config_hash"][:]
    assert len(first) > 2 * store_mod.CONFIG_PART_BYTES
    assert (digests == _configured(first)["config_hash"].encode()).sum() == -(-len(first) // store_mod.CONFIG_PART_BYTES)
    text = format_ledger(path)
    assert f"configuration {_configured(first)['config_hash']}: 3 months" in text
    assert f"configuration {_configured(second)['config_hash']}: 1 month" in text
    # several configurations: each month's line names its own
    lines = {line.split()[0]: line.split() for line in text.splitlines()[3:7]}
    assert {m: cols[-1] for m, cols in lines.items()} == {
        "2010-01": _configured(first)["config_hash"], "2010-02": _configured(first)["config_hash"],
        "2010-03": _configured(second)["config_hash"], "2010-04": _configured(first)["config_hash"]}
    assert text.splitlines()[1].split()[-1] == "configuration"
    # compaction keeps the texts the remaining ledger rows name
    with ResultsStore.open(path, **OPEN) as store:
        store.compact()
    assert read_configurations(path) == stored


def test_a_configuration_whose_text_does_not_match_its_digest_is_refused(tmp_path):
    with pytest.raises(ValueError, match="digest"):
        ResultsStore.open(tmp_path / "s.h5", **dict(_configured("{}"), config_hash="cafe"))
    assert not (tmp_path / "s.h5").exists()


def test_a_configuration_cut_short_by_a_killed_writer_is_written_again(tmp_path):
    from hstcosmicrays.config import load_config
    from hstcosmicrays.store import read_configurations

    path = tmp_path / "s.h5"
    text = load_config().text
    opened = _configured(text)
    with ResultsStore.open(path, **OPEN):
        pass
    # the first two pieces only, as a writer killed while appending them leaves them
    raw = text.encode()
    with h5py.File(path, "r+") as f:
        grp = f["configurations"]
        piece = store_mod.CONFIG_PART_BYTES
        for name, values in (("config_hash", [opened["config_hash"]] * 2), ("part", [0, 1]),
                             ("text", [raw[:piece], raw[piece:2 * piece]])):
            grp[name].resize((2,))
            grp[name][:] = values
    with ResultsStore.open(path, **opened) as store:
        store.commit_month(month="2010-01", n_found=3, started=0.0, **month_tables("2010-01"))
    assert read_configurations(path) == {opened["config_hash"]: text}


def test_a_store_without_the_configurations_table_is_still_written_and_compact_adds_it(tmp_path, caplog):
    from hstcosmicrays.store import read_configurations

    path = tmp_path / "s.h5"
    opened = _configured('{"pipeline": {}}')
    with ResultsStore.open(path, **opened) as store:
        store.commit_month(month="2010-01", n_found=3, started=0.0, **month_tables("2010-01"))
    with h5py.File(path, "r+") as f:
        del f["configurations"]  # as stores created before configurations were recorded
    assert read_configurations(path) == {}
    with ResultsStore.open(path, **opened) as store:
        store.commit_month(month="2010-02", n_found=3, started=0.0, **month_tables("2010-02"))
        assert "compact" in caplog.text
        store.compact()
        store.commit_month(month="2010-03", n_found=3, started=0.0, **month_tables("2010-03"))
    assert read_configurations(path) == {opened["config_hash"]: '{"pipeline": {}}'}
    assert len(read_ledger(path)["month"]) == 3


# ----------------------------------------------------------------------------------------------
# damaged (truncated) stores: refused at once, never a hang

#: Reads a store in a subprocess (HDF5 in SWMR-read mode used to hang for ever on a truncated
#: file; the subprocess and its timeout keep such a regression from hanging the test suite).
DAMAGED_READER = textwrap.dedent("""
    import sys
    from hstcosmicrays.store import StoreError, format_ledger, open_for_reading, read_committed, read_ledger
    path, wanted = sys.argv[1], sys.argv[2:]
    reads = dict(
        open=lambda: open_for_reading(path, wait=0.5).close(),
        ledger=lambda: read_ledger(path),
        committed=lambda: read_committed(path, "exposures"),
        status=lambda: format_ledger(path),
    )
    for name, read in reads.items():
        if wanted and name not in wanted:
            continue
        try:
            read()
        except StoreError as exc:
            print(name, "StoreError", exc, flush=True)
        else:
            print(name, "read", flush=True)
""")


def _read_in_subprocess(path, *reads, timeout=60):
    proc = subprocess.run([sys.executable, "-c", DAMAGED_READER, str(path), *reads], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _two_month_store(path):
    with ResultsStore.open(path, **OPEN) as store:
        for k in (1, 2):
            store.commit_month(month=f"2010-0{k}", n_found=3, started=0.0, **month_tables(f"2010-0{k}", seed=k))


def _superblock_flags(path, flags):
    """Set the superblock's consistency flags, as a writer killed while it had the file open leaves them."""
    with open(path, "r+b") as fh:
        sb = bytearray(fh.read(48))
        sb[11] = flags
        sb[44:48] = lookup3(bytes(sb[:44])).to_bytes(4, "little")
        fh.seek(0)
        fh.write(sb)


@pytest.mark.parametrize("keep", [20000, 30])
def test_truncated_store_is_refused_by_readers_at_once(tmp_path, keep):
    good = tmp_path / "good.h5"
    _two_month_store(good)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes()[:keep])
    t0 = time.monotonic()
    lines = _read_in_subprocess(bad)
    assert time.monotonic() - t0 < 30
    reads = ("open", "ledger", "committed", "status")
    assert [line.split()[:2] for line in lines] == [[name, "StoreError"] for name in reads]
    for line in lines:
        assert str(bad) in line and "damaged" in line and "truncated" in line and "restore it from a copy" in line
    if keep == 20000:
        assert f"the file is 20000 bytes but its HDF5 superblock says {good.stat().st_size}" in lines[0]
    # the healthy store reads as before
    assert _read_in_subprocess(good) == ["open read", "ledger read", "committed read", "status read"]


def test_truncated_store_marked_open_by_a_killed_writer_is_refused_after_the_wait(tmp_path):
    """A file marked open for SWMR writing may be shorter than its superblock says for a moment
    while the writer extends it; one that stays shorter is refused after ``wait`` seconds."""
    good = tmp_path / "good.h5"
    _two_month_store(good)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(good.read_bytes()[:20000])
    _superblock_flags(bad, 0x05)  # write + SWMR-write access
    t0 = time.monotonic()
    [line] = _read_in_subprocess(bad, "open")  # with wait=0.5
    assert time.monotonic() - t0 < 20
    assert line.startswith("open StoreError") and "still marked as open by a writer" in line
    assert str(bad) in line and "truncated" in line and "restore it from a copy" in line


def test_truncated_store_is_refused_by_the_writer_and_left_as_it_was(tmp_path):
    good = tmp_path / "good.h5"
    _two_month_store(good)
    bad = tmp_path / "bad.h5"
    damaged = good.read_bytes()[:20000]
    for flags in (0x00, 0x05):  # closed cleanly before the truncation, or by a killed writer
        bad.write_bytes(damaged)
        _superblock_flags(bad, flags)
        before = bad.read_bytes()
        with pytest.raises(StoreError, match=r"damaged: the file is 20000 bytes but its HDF5 superblock says"):
            ResultsStore.open(bad, **OPEN)
        assert bad.read_bytes() == before
    # and the lock is released: a healthy store opens again at once
    with ResultsStore.open(good, **OPEN) as store:
        assert store.committed_months() == {"2010-01", "2010-02"}


def test_length_check_never_refuses_a_store_that_a_writer_is_extending(tmp_path):
    """The check against the superblock runs in a tight loop while a writer commits months (the
    file grows, the superblock changes) and never takes the store for truncated."""
    path = tmp_path / "live.h5"
    with ResultsStore.open(path, **OPEN):
        pass
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=os.path.dirname(__file__), path=str(path))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checks = reads = 0
    try:
        while writer.poll() is None:
            store_mod._check_not_truncated(path, wait=10.0)
            checks += 1
            if checks % 200 == 0:
                read_ledger(path)
                reads += 1
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert len(out.split()) == 40 and checks > 1000 and reads > 5
    _check_consistent(path)


def test_a_commit_that_cannot_be_written_is_one_store_error_not_a_crash(tmp_path):
    """A write that fails in the middle of a commit (a full disk; here a file size limit, which
    fails the same way) is a StoreError naming the store, the month and the system's reason.
    HDF5 crashed the process (segmentation fault) when it closed a file whose cached chunks a
    failed write had left dirty."""
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        store.commit_month(month="2010-01", n_found=3, started=time.time(), **month_tables("2010-01"))
    code = textwrap.dedent(f"""
        import resource, signal, sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import OPEN, month_tables
        from hstcosmicrays.store import ResultsStore, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        limit = {path.stat().st_size} + 1000
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        with ResultsStore.open({str(path)!r}, **OPEN) as store:
            try:
                store.commit_month(month="2010-02", n_found=3, started=time.time(),
                                   **month_tables("2010-02", n_exp=50, n_cr=200000))
            except StoreError as exc:
                print(exc, flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"{path}: cannot write 2010-02; the months committed before are kept, and the "
                                   "next run does 2010-02 again (File too large)")


def test_a_compaction_that_cannot_be_written_leaves_the_store_as_it_was(tmp_path):
    """The compacted copy cannot be written (a full disk; here a file size limit): one
    StoreError line naming the copy and the reason, not a crash, and the store unchanged."""
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        for label in ("2010-01", "2010-01", "2010-02"):  # 2010-01 reprocessed: something to drop
            store.commit_month(month=label, n_found=3, started=time.time(),
                               **month_tables(label, n_exp=20, n_cr=100000))
    before = path.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import OPEN
        from hstcosmicrays.store import ResultsStore, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
        with ResultsStore.open({str(path)!r}, **OPEN) as store:
            try:
                store.compact()
            except StoreError as exc:
                print(exc, flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    message = proc.stdout.strip()
    assert message.startswith(f"{path}.compacting: cannot write the compacted copy; {path} is left as it was (")
    assert message.lower().endswith("(file too large)")  # HDF5's words or the system's
    assert path.read_bytes() == before and not (tmp_path / "s.h5.compacting").exists()


def test_a_store_the_system_will_not_open_for_writing_is_named_with_the_reason_not_as_damaged(tmp_path, monkeypatch):
    """A store that became unwritable (permissions, a file system remounted read-only, an
    immutable file) is refused with the system's reason, not as "it may be damaged"."""
    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        store.commit_month(month="2010-01", n_found=3, started=time.time(), **month_tables("2010-01"))
        real_open = h5py.h5f.open

        def refused(name, flags, fapl=None):
            if flags & h5py.h5f.ACC_RDWR:
                raise OSError(1, "Unable to synchronously open file (unable to open file: name = "
                                 f"'{path}', errno = 1, error message = 'Operation not permitted', "
                                 "flags = 1, o_flags = 2)")
            return real_open(name, flags, fapl=fapl)

        monkeypatch.setattr(h5py.h5f, "open", refused)
        with pytest.raises(StoreError) as info:
            store.commit_month(month="2010-02", n_found=3, started=time.time(), **month_tables("2010-02"))
    assert str(info.value) == f"{path}: cannot open the results store for writing (Operation not permitted)"


def test_a_killed_compaction_leaves_a_file_that_status_names_and_the_next_writer_deletes(tmp_path, caplog):
    """SIGKILL in the middle of a compaction leaves ``<store>.compacting`` (as big as the store),
    which stayed until the next compact. ``status`` names it: the leftover of an interrupted
    compaction while no process holds the store's lock, a compaction in progress while one
    does; the next writer (a run or a compact), holding the lock, deletes it and says so."""
    import fcntl
    import logging

    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN) as store:
        for label in ("2010-01", "2010-01"):  # reprocessed: something for the compaction to drop
            store.commit_month(month=label, n_found=3, started=time.time(), **month_tables(label))
    before = path.read_bytes()
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import OPEN
        from hstcosmicrays import store as store_mod
        create_tables = store_mod._create_tables
        def killed_after_creating_tables(f, **kwargs):
            create_tables(f, **kwargs)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        store_mod._create_tables = killed_after_creating_tables
        with store_mod.ResultsStore.open({str(path)!r}, **OPEN) as store:
            store.compact()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftover = tmp_path / "s.h5.compacting"
    assert leftover.exists() and path.read_bytes() == before
    last = format_ledger(path).splitlines()[-1]
    assert last.startswith(f"{leftover} (") and "is the leftover of a `hstcosmicrays compact` that was interrupted" in last
    assert "safe to delete" in last
    with open(tmp_path / "s.h5.lock", "a+") as lock:  # a compaction in progress holds the lock
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.truncate(0)
        lock.write("pid 4242")
        lock.flush()
        assert format_ledger(path).splitlines()[-1].endswith(
            "is being written by a compaction in progress (pid 4242 holds the lock)")
    assert store_mod.compacting_file(path).leftover
    size = leftover.stat().st_size
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hstcosmicrays"), ResultsStore.open(path, **OPEN):
        pass
    assert not leftover.exists() and path.read_bytes() == before
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{path}: deleted s.h5.compacting ({size / 1e6:.1f} MB), the leftover of a compaction "
        "that was interrupted (the store is as it was before it)"]
    assert store_mod.compacting_file(path) is None and "compact" not in format_ledger(path).splitlines()[-1]


def test_a_writer_waits_for_a_status_that_looks_at_the_lock(tmp_path, monkeypatch):
    """``status`` takes the lock, shared, for an instant to see whether a compaction runs: a writer
    starting then waits for it (up to LOCK_WAIT) instead of being refused as if a run held it."""
    import fcntl

    path = tmp_path / "s.h5"
    with ResultsStore.open(path, **OPEN):
        pass
    probe = open(tmp_path / "s.h5.lock")
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    waits = []

    def sleep(seconds):  # the writer's first wait: the status is done
        waits.append(seconds)
        probe.close()

    monkeypatch.setattr(store_mod.time, "sleep", sleep)
    try:
        with ResultsStore.open(path, **OPEN):
            pass
    finally:
        probe.close()
    assert len(waits) == 1

"""The month loop end to end on the simulated archive: resume, crash safety, parallel executors."""

import dataclasses
import errno
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hstcosmicrays.archive.base import ArchiveError
from hstcosmicrays.cli import main, run_pipeline_main
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import parse_month
from hstcosmicrays.pipeline import CosmicRayPipeline, RunOptions
from hstcosmicrays.schema import TABLES
from hstcosmicrays.store import read_committed, read_ledger

INSTR = "acs_hrc"  # a 1024x1024 detector keeps the runs short
RUN = ["--instr", INSTR, "--archive", "simulated", "--darks-per-month", "2", "--workers", "1"]


def store_tables(path):
    """The visible content of a store, without the wall-clock columns, in a canonical order."""
    out = {}
    ex = read_committed(path, "exposures")
    order = np.lexsort((ex["rootname"],))
    out["exposures"] = {k: v[order] for k, v in ex.items()}
    cr = read_committed(path, "cosmic_rays")
    # exposure_index refers to file rows; replace it by the rootname for comparison
    files_rows = read_committed(path, "exposures", columns=["rootname"])["rootname"]
    from hstcosmicrays.store import visible_row_numbers

    rows = visible_row_numbers(path, "exposures")
    name_of = dict(zip(rows.tolist(), files_rows.tolist()))
    cr_names = np.array([name_of[i] for i in cr["exposure_index"].tolist()])
    order = np.lexsort((cr["y"], cr["x"], cr["chip"], cr_names))
    out["cosmic_rays"] = {**{k: v[order] for k, v in cr.items() if k != "exposure_index"}, "rootname": cr_names[order]}
    ledger = read_ledger(path)
    out["months"] = {k: v for k, v in ledger.items()
                     if k in ("month", "state", "n_found", "n_processed", "n_failed", "n_cr", "median_rate")}
    fl = read_committed(path, "failures")
    order = np.lexsort((fl["stage"], fl["rootname"]))
    out["failures"] = {k: v[order] for k, v in fl.items()}
    return out


def assert_same_store(a, b):
    ta, tb = store_tables(a), store_tables(b)
    for table in ta:
        assert set(ta[table]) == set(tb[table])
        for col in ta[table]:
            np.testing.assert_array_equal(ta[table][col], tb[table][col], err_msg=f"{table}.{col}")


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    """An uninterrupted in-process run of three months."""
    out = tmp_path_factory.mktemp("reference")
    assert run_pipeline_main(RUN + ["--start", "2003-01", "--stop", "2003-03", "--output", str(out), "-q"]) == 0
    return out / f"{INSTR}.h5"


def test_run_commits_every_month_with_real_measurements(reference_store, capsys):
    ledger = read_ledger(reference_store)
    assert ledger["month"].tolist() == [b"2003-01", b"2003-02", b"2003-03"]
    assert set(ledger["state"].tolist()) == {b"committed"}
    ex = read_committed(reference_store, "exposures")
    assert len(ex["rootname"]) == 6 and (ex["n_cr"] > 0).all()
    assert np.all((ex["rate"] > 0.5) & (ex["rate"] < 50))
    assert set(ex["method"].tolist()) == {b"crsplit"}
    cr = read_committed(reference_store, "cosmic_rays", columns=["n_pixels", "energy"])
    assert len(cr["n_pixels"]) == ex["n_cr"].sum()
    assert (cr["n_pixels"] > 2).all() and (cr["energy"] > 0).all()
    orbit = read_committed(reference_store, "orbit", columns=["alt"])
    assert len(orbit["alt"]) >= 5 * 6 and np.all((orbit["alt"] > 500) & (orbit["alt"] < 600))
    # the work directories are gone, a log was written
    out = reference_store.parent
    assert not any((out / "work" / INSTR).iterdir())
    assert list((out / "logs").glob(f"{INSTR}-*.log"))
    assert main(["status", "--instr", INSTR, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("committed") >= 3 and "2003-02" in text


def test_rerun_skips_committed_months_and_reprocess_redoes_them(reference_store, tmp_path, caplog):
    import shutil

    path = tmp_path / f"{INSTR}.h5"
    shutil.copy(reference_store, path)
    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-04"),
                      workers=1, darks_per_month=2)
    with caplog.at_level("INFO", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
                                    options=opts).run()
    assert summary.committed == ("2003-04",) and summary.skipped == ("2003-01", "2003-02", "2003-03")
    assert f"{INSTR}: 1 month to process, 3 already committed; store {path}" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="hstcosmicrays"):
        again = CosmicRayPipeline(
            instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
            options=RunOptions(archive="simulated", start=parse_month("2003-02"), stop=parse_month("2003-02"),
                               workers=1, darks_per_month=2, reprocess=True),
        ).run()
    assert again.committed == ("2003-02",)
    # the months are processed again, whatever the ledger says: no count of committed ones
    assert f"{INSTR}: 1 month to reprocess (--reprocess); store {path}" in caplog.text
    assert "already committed" not in caplog.text
    ledger = read_ledger(path, latest=False)
    assert ledger["month"].tolist().count(b"2003-02") == 2
    # reprocessing gives the same rows, and no duplicates are visible
    ex = read_committed(path, "exposures", columns=["rootname"])
    assert len(ex["rootname"]) == len(set(ex["rootname"].tolist())) == 8


@pytest.mark.parametrize("keep", [False, True])
def test_a_months_downloads_are_deleted_before_its_commit_and_kept_downloads_stay(reference_store, tmp_path,
                                                                                   monkeypatch, keep):
    """A month's downloads are gone by the time it is committed (unless --keep-downloads): a run
    killed between the commit and their deletion left them for good, as no later run processes
    a committed month. Downloads kept by an earlier --keep-downloads run stay."""
    import shutil

    from hstcosmicrays.store import ResultsStore

    shutil.copy(reference_store, tmp_path / f"{INSTR}.h5")  # 2003-01 to 2003-03 committed
    cfg = load_config()
    kept = tmp_path / "work" / INSTR / "2003-01"
    kept.mkdir(parents=True)
    (kept / "jh3o0000q_flt.fits").write_bytes(b"\0" * 2880)  # of a --keep-downloads run
    present_at_commit = {}
    commit = ResultsStore.commit_month

    def watched(self, *, month, **kwargs):
        present_at_commit[month] = (tmp_path / "work" / INSTR / month).exists()
        return commit(self, month=month, **kwargs)

    monkeypatch.setattr(ResultsStore, "commit_month", watched)
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-05"),
                      workers=1, darks_per_month=2, keep_downloads=keep)
    summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
                                options=opts).run()
    assert summary.committed == ("2003-04", "2003-05")
    assert present_at_commit == {"2003-04": keep, "2003-05": keep}
    assert (kept / "jh3o0000q_flt.fits").exists()


def test_a_run_with_another_configuration_than_the_committed_months_says_so(reference_store, tmp_path, caplog):
    """A --config added, changed or forgotten between runs: the new months sit beside months
    made with other parameters, with nothing on the terminal to say so (status lists digests,
    not which months). The run names the months and their configuration; a run that redoes
    them all (--reprocess) does not."""
    import shutil

    shutil.copy(reference_store, tmp_path / f"{INSTR}.h5")
    user = tmp_path / "user.yaml"
    user.write_text(f"instruments:\n  {INSTR}:\n    crreject:\n      crsigmas: [8.0, 6.0, 4.0]\n")
    default, cfg = load_config(), load_config(user)
    assert cfg.digest != default.digest

    def run(start, stop, reprocess=False):
        opts = RunOptions(archive="simulated", start=parse_month(start), stop=parse_month(stop), workers=1,
                          darks_per_month=2, reprocess=reprocess)
        caplog.clear()
        with caplog.at_level("WARNING", logger="hstcosmicrays"):
            CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts).run()
        return caplog.text

    text = run("2003-01", "2003-04")
    assert (f"{INSTR}: committed months of the store were made with another configuration than this run's "
            f"({cfg.digest}): 2003-01 to 2003-03 with {default.digest}.") in text
    assert "another configuration" not in run("2003-01", "2003-03", reprocess=True)


def test_a_configuration_that_changes_only_how_a_run_goes_is_not_another(reference_store, tmp_path, caplog):
    """workers, download retries and the like change the digest (it names the text) but not the
    results: months made with such a configuration are not named as another's. Months of two
    other configurations are named with each."""
    import shutil

    shutil.copy(reference_store, tmp_path / f"{INSTR}.h5")
    default = load_config()

    def run(yaml_text, start, stop):
        user = tmp_path / "user.yaml"
        user.write_text(yaml_text)
        cfg = load_config(user)
        opts = RunOptions(archive="simulated", start=parse_month(start), stop=parse_month(stop), workers=1,
                          darks_per_month=2)
        caplog.clear()
        with caplog.at_level("WARNING", logger="hstcosmicrays"):
            CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts).run()
        return cfg, caplog.text

    run_only = "pipeline:\n  workers: 2\n  download_retries: 9\n  download_backoff: 0.5\n  mast_timeout: 60\n"
    cfg, text = run(run_only, "2003-04", "2003-04")
    assert cfg.digest != default.digest and "configuration" not in text
    science = f"instruments:\n  {INSTR}:\n    crreject:\n      crsigmas: [8.0, 6.0, 4.0]\n"
    cfg2, text = run(science, "2003-05", "2003-05")
    made = "; ".join(f"{months} with {digest}" for digest, months in sorted(
        {default.digest: "2003-01 to 2003-03", cfg.digest: "2003-04"}.items()))   # named in digest order
    assert (f"made with other configurations than this run's ({cfg2.digest}): {made}. The store will hold "
            "results of each") in text
    _, text = run(run_only.replace("workers: 2", "workers: 1"), "2003-06", "2003-06")
    assert f"2003-05 with {cfg2.digest}. The store will hold results of both" in text
    assert default.digest not in text.split("this run's")[1]


def test_compact_drops_what_reprocess_left_and_keeps_what_readers_see(reference_store, tmp_path, capsys):
    import shutil

    from hstcosmicrays.results import open_results

    path = tmp_path / f"{INSTR}.h5"
    shutil.copy(reference_store, path)
    # months 2003-02 and 2003-03 processed twice: their first rows stay in the file, unseen
    args = RUN + ["--start", "2003-02", "--stop", "2003-03", "--output", str(tmp_path), "--reprocess", "-q"]
    assert run_pipeline_main(args) == 0
    seen = store_tables(path)
    ledger = read_ledger(path, latest=False)
    with h5py.File(path, "r") as f:
        stored = f["cosmic_rays/x"].shape[0]
    assert len(ledger["month"]) == 5 and stored > len(seen["cosmic_rays"]["x"])
    size = path.stat().st_size

    assert main(["compact", "--instr", INSTR, "--output", str(tmp_path)]) == 0
    assert "MB ->" in capsys.readouterr().out
    assert path.stat().st_size < size
    compacted = read_ledger(path, latest=False)
    assert compacted["month"].tolist() == [b"2003-01", b"2003-02", b"2003-03"]
    for col in ("state", "n_cr", "started", "finished", "config_hash", "software_version"):
        np.testing.assert_array_equal(compacted[col], ledger[col][[0, 3, 4]])
    with h5py.File(path, "r") as f:
        for table in ("exposures", "cosmic_rays", "orbit", "failures"):
            columns = {ds.shape[0] for ds in f[table].values()}
            assert columns == {int(compacted[f"{table}_stop"].max())}, table
    assert_same_store(reference_store, path)
    # each CR still points at its own exposure
    res = open_results(path)
    ex, crs = res.exposures(), res.cosmic_rays()
    assert (crs.groupby("exposure_index").size().reindex(ex.index).to_numpy() == ex.n_cr.to_numpy()).all()
    # and the store takes new months as before
    assert run_pipeline_main(RUN + ["--start", "2003-04", "--stop", "2003-04", "--output", str(tmp_path), "-q"]) == 0
    assert read_ledger(path)["month"].tolist()[-1] == b"2003-04"


def test_an_interrupted_compaction_leaves_the_store_as_it_was(reference_store, tmp_path, monkeypatch):
    import shutil

    from hstcosmicrays import store as store_mod

    path = tmp_path / f"{INSTR}.h5"
    shutil.copy(reference_store, path)
    before = path.read_bytes()

    def killed(tmp, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_fsync_replace", killed)
    assert main(["compact", "--instr", INSTR, "--output", str(tmp_path)]) == 130
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{INSTR}.h5", f"{INSTR}.h5.lock"]


class FlakyArchive:
    """The simulated archive, failing the query of chosen months."""

    def __init__(self, inner, bad):
        self.inner, self.bad = inner, set(bad)

    def query(self, instrument, month):
        if month.label in self.bad:
            raise ArchiveError(f"MAST query for {month} timed out")
        return self.inner.query(instrument, month)

    def fetch(self, datasets, workdir):
        files = self.inner.fetch(datasets, workdir)
        # a frame that is not a FITS file at all: recorded, never fatal for the month
        first = sorted(files)[0]
        files[first]["FLT"].write_bytes(b"this is not FITS")
        return files


def test_archive_failure_marks_month_failed_and_next_run_retries(tmp_path):
    from hstcosmicrays.archive.simulated import SimulatedArchive

    cfg = load_config()
    inst = cfg.instrument(INSTR)
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-02"), workers=1,
                      darks_per_month=3)
    sim = SimulatedArchive(seed=cfg.pipeline.simulation_seed, darks_per_month=3)
    summary = CosmicRayPipeline(instrument=inst, config=cfg, output_dir=tmp_path, options=opts,
                                archive=FlakyArchive(sim, {"2003-02"})).run()
    assert summary.committed == ("2003-01",) and summary.failed == ("2003-02",) and not summary.ok
    ledger = read_ledger(tmp_path / f"{INSTR}.h5")
    assert ledger["state"].tolist() == [b"committed", b"failed"]
    assert b"timed out" in ledger["error"][1]
    failures = read_committed(tmp_path / f"{INSTR}.h5", "failures")
    assert b"read" in failures["stage"].tolist()
    summary = CosmicRayPipeline(instrument=inst, config=cfg, output_dir=tmp_path, options=opts,
                                archive=FlakyArchive(sim, set())).run()
    assert summary.committed == ("2003-02",) and summary.ok
    assert set(read_ledger(tmp_path / f"{INSTR}.h5")["state"].tolist()) == {b"committed"}


RUN_SCRIPT = "import sys; from hstcosmicrays.cli import run_pipeline_main; sys.exit(run_pipeline_main())"


def _wait_for_a_ledger_row(path, timeout=120.0):
    """Wait until a run has recorded its first month in the store at ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(read_ledger(path)["month"]) >= 1:
            return
        time.sleep(0.1)


def _run_cmd(out, start="2003-01", stop="2003-12"):
    return [sys.executable, "-c", RUN_SCRIPT] + RUN + ["--start", start, "--stop", stop, "--output", str(out), "-q"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path):
    """Kill a run at random instants (startup, download, rejection, commit), restart it until it
    finishes, and compare with an uninterrupted run: same rows, no duplicate, no missing month.
    (Kills inside the HDF5 commit itself are exercised many times by test_store.py.)"""
    months = ("2003-01", "2004-12")
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    subprocess.run(_run_cmd(ref, *months), check=True, capture_output=True)
    duration = time.monotonic() - t0
    n_months = len(read_ledger(ref / f"{INSTR}.h5")["month"])
    killed = tmp_path / "killed"
    rng = np.random.default_rng(1)
    kills, finished, remaining = 0, False, 1.0
    for attempt in range(40):
        proc = subprocess.Popen(_run_cmd(killed, *months), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # each of the first 12 runs lives a random part of a quarter of what a full run would
            # take for the months still to do (the timing scales with the machine's speed), so
            # the kills land at random instants while work is left, even if the machine runs
            # faster now than during the reference run; the run after them may finish
            proc.wait(timeout=rng.uniform(0.05, 0.25) * duration * remaining if kills < 12 else 600)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if (killed / f"{INSTR}.h5").exists():
                # whatever the instant of the kill, the store is readable and holds whole months
                ledger = read_ledger(killed / f"{INSTR}.h5")
                ex = read_committed(killed / f"{INSTR}.h5", "exposures", columns=["month"])
                assert len(ex["month"]) == ledger["n_processed"].sum()
                remaining = 1.0 - np.sum(ledger["state"] == b"committed") / n_months
            continue
        assert proc.returncode == 0
        finished = True
        break
    assert finished and kills >= 10
    assert_same_store(ref / f"{INSTR}.h5", killed / f"{INSTR}.h5")


@pytest.mark.slow
def test_reader_in_second_process_while_pipeline_writes(tmp_path):
    proc = subprocess.Popen(_run_cmd(tmp_path, stop="2003-05"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = tmp_path / f"{INSTR}.h5"
    reader = (
        "import sys, numpy as np\n"
        "from hstcosmicrays.store import read_committed, read_ledger\n"
        f"ex = read_committed({str(path)!r}, 'exposures', columns=['month'])\n"
        f"led = read_ledger({str(path)!r})\n"
        "m, c = np.unique(ex['month'], return_counts=True)\n"
        "print(len(m))\n"
    )
    seen = []
    while proc.poll() is None:
        if path.exists():
            r = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            seen.append(int(r.stdout))
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    assert seen == sorted(seen)  # months only ever appear, whole
    assert len(set(seen)) >= 2  # the reader saw the store grow


@pytest.mark.slow
def test_dask_scheduler_and_local_pool_give_the_same_store(reference_store, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        out = tmp_path / "cluster"
        args = [a for a in RUN if a not in ("--workers", "1")]
        assert run_pipeline_main(args + ["--start", "2003-01", "--stop", "2003-03", "--output", str(out),
                                         "--scheduler", cluster.scheduler_address, "-q"]) == 0
    assert_same_store(reference_store, out / f"{INSTR}.h5")
    pool = tmp_path / "pool"
    args = [a for a in RUN if a not in ("--workers", "1")]
    assert run_pipeline_main(args + ["--start", "2003-01", "--stop", "2003-03", "--output", str(pool),
                                     "--workers", "2", "-q"]) == 0
    assert_same_store(reference_store, pool / f"{INSTR}.h5")
    # the stages' times of the tasks, which ran in worker processes, are in the driver's debug log
    for run in (out, pool):
        (logfile,) = (run / "logs").glob("*.log")
        lines = logfile.read_text().splitlines()
        for month in ("2003-01", "2003-02", "2003-03"):
            stack = [ln for ln in lines if f"DEBUG {INSTR} {month}: stack " in ln]
            assert len(stack) == 1 and " 2 frames of 1 chip rejected in " in stack[0], lines
            assert float(stack[0].split(" rejected in ")[1].split()[0]) > 0
            stages = [ln for ln in lines if f"DEBUG {INSTR} {month}: stage times: query " in ln]
            assert len(stages) == 1 and ", 1 group " in stages[0] and "reject " in stages[0], lines


def test_what_a_dask_task_reports_as_it_works_reaches_the_driver():
    """A task on a dask worker reports its progress (GroupProgress) through the scheduler's
    events to the driver, which learns which item it is about, while the task runs."""
    import threading

    from hstcosmicrays.pipeline import GroupProgress, _Dask

    def task(item, report):
        for k in range(3):
            report(GroupProgress("read", k + 1, 3, finished=k))
        return item * 10

    got = []
    executor = _Dask(workers=1, scheduler=None)
    try:
        results = executor.map_unordered(task, [1, 2], threading.Event(),
                                         progress=lambda index, p: got.append((index, p)))
        done = sorted([next(results), next(results)])  # the call still runs: its events are awaited
        deadline = time.monotonic() + 60
        while len(got) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        results.close()
    finally:
        executor.close()
    assert done == [(0, 10), (1, 20)]
    assert sorted(got, key=lambda ip: (ip[0], ip[1].done)) == [
        (i, GroupProgress("read", k + 1, 3, finished=k)) for i in (0, 1) for k in range(3)]


@pytest.mark.slow
def test_large_stacks_are_read_from_the_files_with_the_same_result(reference_store, tmp_path, monkeypatch):
    """A stack above crreject.IN_MEMORY_LIMIT is rejected from row blocks of its files (so a
    month of many darks needs the memory of its masks, not of its frames; see
    benchmarks/bench_pipeline_month.py); the store is the same."""
    from hstcosmicrays import crreject

    read_lazily = []
    real_rows = crreject._hdu_rows
    monkeypatch.setattr(crreject, "_hdu_rows", lambda *a, lazy: read_lazily.append(lazy) or real_rows(*a, lazy=lazy))
    monkeypatch.setattr(crreject, "IN_MEMORY_LIMIT", 0)
    out = tmp_path / "blocks"
    assert run_pipeline_main(RUN + ["--start", "2003-01", "--stop", "2003-03", "--output", str(out), "-q"]) == 0
    assert read_lazily and all(read_lazily)
    assert_same_store(reference_store, out / f"{INSTR}.h5")


@pytest.mark.parametrize("signum,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_stops_cleanly_keeping_committed_months(tmp_path, signum, name):
    """Ctrl-C, and SIGTERM as ``kill``, ``timeout`` and batch schedulers send it."""
    proc = subprocess.Popen(_run_cmd(tmp_path, "2003-01", "2004-12"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    path = tmp_path / f"{INSTR}.h5"
    _wait_for_a_ledger_row(path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"{name}: stopping after the work in progress" in err and "resume" in err
    ledger = read_ledger(path)
    assert 1 <= len(ledger["month"]) < 24 and set(ledger["state"].tolist()) == {b"committed"}
    ex = read_committed(path, "exposures", columns=["month"])
    assert len(ex["month"]) == ledger["n_processed"].sum()
    # the next run resumes after the last committed month
    subprocess.run(_run_cmd(tmp_path, "2003-01", "2004-12"), check=True, capture_output=True)
    assert len(read_ledger(path)["month"]) == 24


#: run_pipeline in-process, whose executor sends the given signal to its own process (argv[2]
#: times, apart by more than SAME_STOP_REQUEST_SECONDS) while it closes, after the last month: the
#: moment a batch scheduler's SIGTERM can land in a real run, or a user's Ctrl-C, pressed twice as
#: the run seems to hang in the cluster's close
SIGNAL_WHILE_CLOSING = """
import os, signal, sys, time
from hstcosmicrays import pipeline
from hstcosmicrays.cli import run_pipeline_main
def close(self):
    for k in range(int(sys.argv[2])):
        if k:
            time.sleep(pipeline.SAME_STOP_REQUEST_SECONDS + 0.2)
        os.kill(os.getpid(), int(sys.argv[1]))
pipeline._InProcess.close = close
sys.exit(run_pipeline_main(sys.argv[3:]))
"""


@pytest.mark.parametrize("signum,times", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_a_stop_request_while_the_executor_closes_after_the_last_month_is_not_a_kill(tmp_path, signum, times):
    """The stop handlers stay until the workers are closed: a signal then neither kills the run
    (status 143 and no summary) nor asks to resume a window that is complete. A second one stops
    the closing at once, and still says what is true: every month is stored (status 0, as the
    README's table gives for a complete window)."""
    cmd = [sys.executable, "-c", SIGNAL_WHILE_CLOSING, str(int(signum)), str(times)] + RUN + [
        "--start", "2003-01", "--stop", "2003-01", "--output", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "stopping after the work in progress" in proc.stderr
    assert "no month of the window is left" in proc.stderr and "again to resume" not in proc.stderr, proc.stderr
    assert ("second stop request came while the workers were closing" in proc.stderr) == (times == 2)
    assert "Traceback" not in proc.stderr
    assert "committed 1 month, 0 failed" in proc.stderr
    assert read_ledger(tmp_path / f"{INSTR}.h5")["state"].tolist() == [b"committed"]


#: run_pipeline in-process, whose executor gets two stop requests (argv[1], argv[2] seconds apart)
#: as it starts the first month's groups
TWO_SIGNALS_IN_A_MONTH = """
import os, signal, sys, time
from hstcosmicrays import pipeline
from hstcosmicrays.cli import run_pipeline_main
def map_unordered(self, fn, items, stop, progress=None):
    os.kill(os.getpid(), int(sys.argv[1]))
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), int(sys.argv[1]))
    yield from ()
pipeline._InProcess.map_unordered = map_unordered
sys.exit(run_pipeline_main(sys.argv[3:]))
"""


def test_a_second_stop_request_in_a_month_stops_at_once_and_counts_what_is_left(tmp_path):
    from hstcosmicrays.pipeline import SAME_STOP_REQUEST_SECONDS

    cmd = [sys.executable, "-c", TWO_SIGNALS_IN_A_MONTH, str(int(signal.SIGINT)),
           str(SAME_STOP_REQUEST_SECONDS + 0.2)] + RUN + ["--start", "2003-01", "--stop", "2003-02",
                                                          "--output", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "stopped at once after 0 committed months, 2 months left; run again to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(read_ledger(tmp_path / f"{INSTR}.h5")["month"]) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_stop_request_delivered_twice_at_once_is_one_request(tmp_path, signum):
    """``timeout`` (and ``kill -- -PGID``) send a signal to the run and again to its process
    group, microseconds apart: that is one request, which lets the month in progress finish,
    not the second that stops at once."""
    cmd = [sys.executable, "-c", TWO_SIGNALS_IN_A_MONTH, str(int(signum)), "0"] + RUN + [
        "--start", "2003-01", "--stop", "2003-02", "--output", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.count("stopping after the work in progress") == 1
    assert "stopped on request after 0 committed months, 2 months left; run again to resume" in proc.stderr
    assert "at once" not in proc.stderr.replace("again to stop at once", "")
    assert "Traceback" not in proc.stderr


class NoSptArchive(FlakyArchive):
    """The simulated archive, with the SPT of the first dataset missing."""

    def fetch(self, datasets, workdir):
        files = self.inner.fetch(datasets, workdir)
        first = sorted(files)[0]
        files[first].pop("SPT").unlink()
        return files


def test_a_store_of_simulated_darks_takes_no_month_of_hst_darks_nor_the_reverse(tmp_path):
    """The README's simulated demo writes data_products/<instrument>.h5: a real run into the
    same directory must not resume from it (its simulated months would stay, as committed).
    The store records what its darks are; a run of the other kind is refused before anything
    is written, naming the store, both kinds and the way out. A store that does not say (made
    before this was recorded) or an archive that does not know is not refused."""
    import h5py

    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.store import StoreError

    class HstLike(SimulatedArchive):
        source = "hst"

    class Unknown(SimulatedArchive):
        source = ""

    cfg = load_config()

    def run(archive, month, out):
        opts = RunOptions(archive="simulated", start=parse_month(month), stop=parse_month(month), workers=1,
                          darks_per_month=2)
        return CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=out, options=opts,
                                 archive=archive).run()

    seed = cfg.pipeline.simulation_seed
    for first, other, stored, refused in ((SimulatedArchive, HstLike, "the simulated archive", "HST darks from MAST"),
                                          (HstLike, SimulatedArchive, "HST darks from MAST", "the simulated archive")):
        out = tmp_path / first.__name__
        assert run(first(seed=seed, darks_per_month=2), "2003-01", out).committed == ("2003-01",)
        path = out / f"{INSTR}.h5"
        with h5py.File(path, "r", locking=False) as f:
            assert f.attrs["source"] == first.source
        before = path.read_bytes()
        with pytest.raises(StoreError, match=rf"^{path} holds months measured on {stored}; this run reads "
                                             rf"{refused}: give it another --output"):
            run(other(seed=seed, darks_per_month=2), "2003-02", out)
        assert path.read_bytes() == before
        assert run(Unknown(seed=seed, darks_per_month=2), "2003-02", out).committed == ("2003-02",)
    # a store that does not say what its darks are (as stores made before): not refused
    out = tmp_path / "unknown"
    assert run(Unknown(seed=seed, darks_per_month=2), "2003-01", out).committed == ("2003-01",)
    assert run(HstLike(seed=seed, darks_per_month=2), "2003-02", out).committed == ("2003-02",)
    assert run(SimulatedArchive(seed=seed, darks_per_month=2), "2003-03", out).committed == ("2003-03",)


def test_a_store_that_holds_no_month_yet_takes_the_source_of_the_next_run(tmp_path):
    """A run that stops before its first commit (a scheduler that does not answer, a Ctrl-C in
    the first download) leaves a store with a source but no month: the next run, of the other
    kind, is not refused for months the store never held, and the store then says its kind."""
    import h5py

    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.store import ResultsStore

    class HstLike(SimulatedArchive):
        source = "hst"

    cfg = load_config()
    path = tmp_path / f"{INSTR}.h5"
    with ResultsStore.open(path, instrument=cfg.instrument(INSTR).name, software_version="0",
                           config_hash=cfg.digest, source="simulated"):
        pass  # the run stopped here
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["source"] == "simulated"
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-01"), workers=1,
                      darks_per_month=2)
    archive = HstLike(seed=cfg.pipeline.simulation_seed, darks_per_month=2)
    summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts,
                                archive=archive).run()
    assert summary.committed == ("2003-01",)
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["source"] == "hst"


def test_missing_spt_gives_nan_positions_and_a_logged_warning(tmp_path, caplog):
    from hstcosmicrays.archive.simulated import SimulatedArchive

    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-01"), workers=1,
                      darks_per_month=2)
    sim = SimulatedArchive(seed=cfg.pipeline.simulation_seed, darks_per_month=2)
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
                                    options=opts, archive=NoSptArchive(sim, set())).run()
    assert summary.committed == ("2003-01",)
    ex = read_committed(tmp_path / f"{INSTR}.h5", "exposures")
    assert len(ex["rootname"]) == 2 and (ex["n_cr"] > 0).all()
    no_orbit = np.isnan(ex["hst_lat"])
    assert no_orbit.sum() == 1
    missing = ex["rootname"][no_orbit][0].decode()
    # once: measure_frame logged it too (and on a dask worker, as a bare line on the terminal)
    said = [r for r in caplog.records if missing in r.getMessage() and "SPT" in r.getMessage().upper()]
    assert len(said) == 1 and said[0].getMessage().startswith(f"{INSTR} 2003-01: {missing}: ")


# ---------------------------------------------------------------------------------------------
# the stored catalogue against the simulator's per-pixel truth, through the whole pipeline


@pytest.mark.parametrize("name,month,shape", [
    pytest.param("acs_wfc", "2012-06", (128, 4096), marks=pytest.mark.xfail(strict=True, reason=(
        "measured 4.9 % of stored CRs on no injected charge: the real ACS/WFC table (sigmas 5,4,3, "
        "minimum) on a month stack of 4 darks flags 0.2 % of pure noise and spills at 1.67 sigma, "
        "which grows noise into 3-pixel CRs; the original study's 6,5,4 with a median guess gives "
        "0.035 %"))),
    ("acs_hrc", "2004-06", (512, 512)),
    ("stis_ccd", "2012-06", (512, 512)), ("wfc3_uvis", "2012-06", (128, 4096)),
])
def test_stored_cosmic_rays_are_injected_ones(tmp_path, name, month, shape):
    """A simulated month through run(): the pipeline's stacks (every compatible dark of the
    month), its configured CRREJTAB parameters, labels and statistics. Nearly every stored CR
    lies on injected charge (its centroid within 2 px of a pixel with more than the truth
    threshold), and the count does not exceed the truth's detectable CRs.

    Measured on these frames: stored CRs on no injected charge ACS/HRC 0.09 %, STIS/CCD 0.03 %,
    WFC3/UVIS 0.05 %, ACS/WFC 4.9 % (its table; see the xfail); count / detectable 0.88-0.96
    (short of 1 because touching CRs merge into one under the 8-connected definition). STIS/CCD
    with the pair row for every stack stored 42 % spurious CRs."""
    from scipy import ndimage

    from hstcosmicrays import simulate
    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.results import open_results

    config = load_config()
    inst = config.instrument(name)
    m = parse_month(month)
    archive = SimulatedArchive(seed=5, shape=shape)
    CosmicRayPipeline(instrument=inst, config=config, output_dir=tmp_path, archive=archive,
                      options=RunOptions(archive="simulated", start=m, stop=m, workers=1)).run()
    results = open_results(tmp_path / inst.store_name)
    exposures, crs = results.exposures(), results.cosmic_rays()
    # each frame under the name the pipeline stores (a STIS set's file: <set obs_id>_<k>)
    specs = {simulate.frame_name(instrument=inst, spec=s): s
             for s in simulate.month_schedule(instrument=inst, month=m, seed=5, shape=shape)}
    assert len(exposures) == len(specs) >= 4
    names = [r.decode() if isinstance(r, bytes) else str(r) for r in exposures.rootname]
    assert sorted(names) == sorted(specs)
    if inst.imset_exposures:  # the simulated STIS sets are files of several exposures
        assert all(n[-2] == "_" and n[-1].isdigit() for n in names)
    threshold = simulate.truth_threshold(inst)
    stored = spurious = detectable = 0
    for index, row in exposures.iterrows():
        rootname = row.rootname.decode() if isinstance(row.rootname, bytes) else str(row.rootname)
        frame = simulate.simulate_frame(instrument=inst, spec=specs[rootname.lower()])
        mine = crs[crs.exposure_index == index]
        for c, chip in enumerate(inst.chips):
            on_charge = ndimage.maximum_filter(frame.cr_charge[c], size=5) > threshold
            sel = mine[mine.chip == chip]
            ys = np.clip(np.rint(sel.y.to_numpy()).astype(int), 0, shape[0] - 1)
            xs = np.clip(np.rint(sel.x.to_numpy()).astype(int), 0, shape[1] - 1)
            spurious += int((~on_charge[ys, xs]).sum())
        stored += int(row.n_cr)
        detectable += int(((frame.crs["n_pixels"] >= 3) & (frame.crs["n_pixels"] < inst.max_cr_pixels)).sum())
    assert stored == len(crs) > 1000
    assert spurious <= 0.01 * stored, f"{name}: {spurious} of {stored} stored CRs lie on no injected charge"
    assert 0.8 * detectable <= stored <= 1.02 * detectable, f"{name}: {stored} stored, {detectable} detectable"


def test_the_current_month_is_left_until_it_has_ended(tmp_path, caplog):
    """A month is committed once and never fetched again, so the month in progress (whose darks
    are not all taken yet) must not be processed; the run says when it will be."""
    import dataclasses

    from hstcosmicrays.intervals import Month, utc_today

    this_month = Month.from_date(utc_today())
    last = Month(this_month.year - 1, 12) if this_month.month == 1 else Month(this_month.year, this_month.month - 1)
    cfg = load_config()
    cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, month_settle_days=0))
    options = RunOptions(archive="simulated", start=last, stop=this_month.next(), workers=1, darks_per_month=1)
    pipeline = CosmicRayPipeline(instrument=cfg.instrument("stis_ccd"), config=cfg, output_dir=tmp_path,
                                 options=options)
    assert [m.label for m in pipeline.months()] == [last.label]
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        summary = pipeline.run()
    assert summary.committed == (last.label,)
    assert f"{this_month} to {this_month.next()} not processed: a month is processed once it has ended" \
        in caplog.text


def test_months_committed_before_they_settled_are_named(tmp_path, caplog):
    """Stores of earlier versions may hold a month committed while it was in progress: the run
    names it and says how to add its late darks."""
    import datetime as dt

    from hstcosmicrays.store import ResultsStore
    from hstcosmicrays.schema import empty_table

    empty = {t: empty_table(t) for t in ("exposures", "cosmic_rays", "orbit")}
    in_progress = dt.datetime(2003, 1, 20, tzinfo=dt.timezone.utc).timestamp()
    settled = dt.datetime(2003, 3, 20, tzinfo=dt.timezone.utc).timestamp()
    with ResultsStore.open(tmp_path / f"{INSTR}.h5", instrument=INSTR, software_version="0", config_hash="x") as store:
        store.commit_month(month="2003-01", n_found=0, started=in_progress, **empty)
        store.commit_month(month="2003-02", n_found=0, started=settled, **empty)
    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-02"), workers=1,
                      darks_per_month=1)
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
                                    options=opts).run()
    assert summary.skipped == ("2003-01", "2003-02")
    assert f"{INSTR}: 2003-01 committed before the archive could have all their darks" in caplog.text


def test_dask_executor_stops_after_the_tasks_in_progress_and_yields_them(tmp_path):
    """Once the stop flag is set no new task starts, and the tasks already running are awaited
    and yielded, not thrown away (a month of one stack would otherwise be lost on Ctrl-C)."""
    import threading

    from hstcosmicrays.pipeline import _Dask

    started = tmp_path / "started"
    started.mkdir()

    def task(i):
        (started / str(i)).touch()
        time.sleep(1.0 if i else 0.2)
        return i * 10

    executor = _Dask(workers=2, scheduler=None)
    stop = threading.Event()
    got = []
    try:
        for i, result in executor.map_unordered(task, list(range(8)), stop):
            got.append((i, result))
            stop.set()  # as the Ctrl-C handler does, once the first task is back
        # a stop that came before the call starts nothing (as in the in-process executor)
        assert list(executor.map_unordered(task, [100, 101], stop)) == []
    finally:
        executor.close()
    # task 0 ended first; 1 and the 2 started in its place were in progress: all three come back
    assert sorted(got) == [(0, 0), (1, 10), (2, 20)]
    assert sorted(int(p.name) for p in started.iterdir()) == [0, 1, 2]


def test_a_local_cluster_closes_without_a_word(capfd, caplog, monkeypatch):
    """Closing the local cluster after a normal map prints nothing: neither what a worker logs
    while it closes (here: the heartbeat failure that raced with the closing connections at the
    end of about one run in twelve, an ERROR with a 30-line traceback; the worker processes
    write to the inherited stderr) nor what the nannies log in the driver meanwhile (in pytest
    distributed's records reach caplog). Both are provoked, as the race itself cannot be."""
    import logging
    import threading

    from distributed.nanny import Nanny

    from hstcosmicrays.pipeline import _Dask

    def heartbeat_fails_on_closing(dask_worker):
        # in each worker: once it closes, log what distributed logs for a heartbeat in flight
        from distributed.comm.core import CommClosedError
        from distributed.core import Status

        def wait_and_log():
            while dask_worker.status in (Status.init, Status.running):
                time.sleep(0.005)
            try:
                raise CommClosedError("in <TCP (closed) ConnectionPool.heartbeat_worker>: Stream is closed")
            except CommClosedError:
                logging.getLogger("distributed.worker").exception(
                    "Failed to communicate with scheduler during heartbeat.")
                logging.getLogger("distributed.core").error("provoked error of a closing worker")

        threading.Thread(target=wait_and_log, daemon=True).start()

    nanny_close = Nanny.close

    async def noisy_close(self, *args, **kwargs):
        logging.getLogger("distributed.nanny").error("provoked error of a closing nanny")
        return await nanny_close(self, *args, **kwargs)

    monkeypatch.setattr(Nanny, "close", noisy_close)
    executor = _Dask(workers=2, scheduler=None)
    try:
        assert len(executor.client.run(heartbeat_fails_on_closing)) == 2
        assert sorted(executor.map_unordered(abs, [-1, -2], threading.Event())) == [(0, 1), (1, 2)]
    finally:
        executor.close()
    time.sleep(0.5)  # the worker processes have ended; their last words would be written by now
    err = capfd.readouterr().err
    assert "provoked" not in err and "heartbeat" not in err and "Traceback" not in err, err
    assert not [r for r in caplog.records if r.name.startswith("distributed") and r.levelno >= logging.ERROR]
    assert logging.getLogger("distributed").level != logging.CRITICAL  # restored after the close


def test_a_cluster_close_cut_short_by_a_second_stop_request_leaves_its_noise_quiet():
    """While a cluster closes, distributed's and tornado's loggers are quiet; a close that ends
    normally restores them, one that a second Ctrl-C interrupts does not (the run stops at once,
    and the half-closed cluster's teardown at exit logged a NameError of distributed's ``sync``
    with its traceback, through tornado)."""
    import logging

    import distributed  # noqa: F401 - its configuration gives some of these loggers a level of their own

    from hstcosmicrays._workers import distributed_logs_quieted

    names = ("distributed", "distributed.client", "distributed.nanny", "tornado", "tornado.application")
    before = {n: logging.getLogger(n).level for n in names}
    with distributed_logs_quieted():
        assert all(not logging.getLogger(n).isEnabledFor(logging.ERROR) for n in names)
    assert {n: logging.getLogger(n).level for n in names} == before
    try:
        with pytest.raises(KeyboardInterrupt), distributed_logs_quieted():
            raise KeyboardInterrupt
        assert all(not logging.getLogger(n).isEnabledFor(logging.ERROR) for n in names)
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_in_a_terminal_with_dask_workers_stops_cleanly(tmp_path, signum):
    """A terminal sends Ctrl-C to the whole process group, dask's worker processes included (and
    ``timeout`` or a batch scheduler SIGTERM): the run must still stop after the work in
    progress, not hang on workers that died nor redo their work in restarted ones."""
    cmd = _run_cmd(tmp_path, "2003-01", "2004-12")
    cmd[cmd.index("--workers") + 1] = "2"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    path = tmp_path / f"{INSTR}.h5"
    _wait_for_a_ledger_row(path)
    os.killpg(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the run did not stop within 90 s of Ctrl-C")
    assert proc.returncode == 130, err
    assert "Restarting worker" not in err and "died unexpectedly" not in err, err
    ledger = read_ledger(path)
    assert 1 <= len(ledger["month"]) < 24 and set(ledger["state"].tolist()) == {b"committed"}
    subprocess.run(_run_cmd(tmp_path, "2003-01", "2004-12"), check=True, capture_output=True)
    assert len(read_ledger(path)["month"]) == 24


def test_run_options_refuse_fewer_than_one_dark_per_month_and_negative_workers():
    with pytest.raises(ValueError, match="--darks-per-month: expected 1 or more, got 0"):
        RunOptions(archive="simulated", darks_per_month=0)
    with pytest.raises(ValueError, match="--workers: expected 0 or more"):
        RunOptions(archive="simulated", workers=-3)


def test_a_run_stops_when_the_archive_fails_several_months_in_a_row(tmp_path, caplog):
    """An unreachable archive would fail every month of a long window, each after its retries:
    the run stops after ARCHIVE_FAILURES_TO_STOP failed months in a row (recorded as failed, so
    the next run retries them) and says why."""
    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.pipeline import ARCHIVE_FAILURES_TO_STOP

    cfg = load_config()
    sim = SimulatedArchive(seed=cfg.pipeline.simulation_seed, darks_per_month=2)
    down = {f"2003-{m:02d}" for m in range(2, 13)}
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-12"), workers=1,
                      darks_per_month=2)
    with caplog.at_level("ERROR", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts,
                                    archive=FlakyArchive(sim, down)).run()
    assert summary.committed == ("2003-01",)
    assert summary.failed == tuple(f"2003-{m:02d}" for m in range(2, 2 + ARCHIVE_FAILURES_TO_STOP))
    assert not summary.ok and not summary.interrupted
    assert f"the archive failed for {ARCHIVE_FAILURES_TO_STOP} months in a row" in caplog.text
    assert read_ledger(tmp_path / f"{INSTR}.h5")["state"].tolist().count(b"failed") == ARCHIVE_FAILURES_TO_STOP
    # months that keep failing for a reason of their own do not stop every later run there:
    # the next run retries them, and they do not count towards the stop
    bad = {f"2003-{m:02d}" for m in range(2, 2 + ARCHIVE_FAILURES_TO_STOP)}
    summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts,
                                archive=FlakyArchive(sim, bad)).run()
    assert summary.failed == tuple(sorted(bad))
    assert summary.committed == tuple(f"2003-{m:02d}" for m in range(2 + ARCHIVE_FAILURES_TO_STOP, 13))


class UnwritableWorkArchive:
    """The simulated archive, whose downloads cannot be written from a chosen month on (the
    output directory became read-only, or the disk is full), as the system reports it."""

    def __init__(self, inner, first_bad, errnum):
        self.inner, self.first_bad, self.errnum = inner, first_bad, errnum

    def query(self, instrument, month):
        return self.inner.query(instrument, month)

    def fetch(self, datasets, workdir):
        if os.path.basename(workdir) >= self.first_bad:
            raise OSError(self.errnum, os.strerror(self.errnum), str(workdir))
        return self.inner.fetch(datasets, workdir)


@pytest.mark.parametrize("errnum", [errno.EROFS, errno.ENOSPC])
def test_downloads_that_cannot_be_written_stop_the_run_without_blaming_the_archive(tmp_path, caplog, errnum):
    """A month whose downloads cannot be written on the local disk is not the archive's failure:
    the run stops there, naming the directory and the reason, and marks no month failed (the
    archive-failure path marked three healthy months failed and said to run again "when it
    answers")."""
    from hstcosmicrays.archive.simulated import SimulatedArchive

    cfg = load_config()
    sim = SimulatedArchive(seed=cfg.pipeline.simulation_seed, darks_per_month=2)
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-06"), workers=1,
                      darks_per_month=2)
    with caplog.at_level("ERROR", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts,
                                    archive=UnwritableWorkArchive(sim, "2003-02", errnum)).run()
    assert summary.committed == ("2003-01",) and summary.failed == ("2003-02",) and not summary.ok
    ledger = read_ledger(tmp_path / f"{INSTR}.h5", latest=False)
    assert ledger["month"].tolist() == [b"2003-01"] and ledger["state"].tolist() == [b"committed"]
    work = tmp_path / "work" / INSTR
    assert (f"{INSTR} 2003-02: cannot write its downloads: {work / '2003-02'}: {os.strerror(errnum)}; stopping here "
            f"(the month is not marked failed); run again once {work} can be written") in caplog.text
    assert "archive" not in caplog.text


def test_months_of_the_window_in_an_inactive_range_are_named(tmp_path, caplog):
    """ACS/WFC did not operate from 2007-01-27 to 2009-05-01: a window across that gap says which
    of its months are left out, rather than silently processing fewer months."""
    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2006-12"), stop=parse_month("2009-06"), workers=1)
    run = CosmicRayPipeline(instrument=cfg.instrument("acs_wfc"), config=cfg, output_dir=tmp_path, options=opts)
    assert [m.label for m in run.months()] == ["2006-12", "2007-01", "2009-05", "2009-06"]
    with caplog.at_level("INFO", logger="hstcosmicrays"):
        run._log_inactive(run.months(), run.unended_months())
    assert "acs_wfc: 2007-02 to 2009-04 skipped: the detector did not operate then" in caplog.text
    caplog.clear()
    inside = CosmicRayPipeline(instrument=cfg.instrument("acs_wfc"), config=cfg, output_dir=tmp_path,
                               options=dataclasses.replace(opts, start=parse_month("2010-01"), stop=parse_month("2010-03")))
    with caplog.at_level("INFO", logger="hstcosmicrays"):
        inside._log_inactive(inside.months(), inside.unended_months())
    assert "skipped" not in caplog.text


def test_options_that_do_not_apply_to_the_archive_are_named(tmp_path, caplog):
    cfg = load_config()
    opts = RunOptions(archive=str(tmp_path), cloud=True, darks_per_month=2)
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts).archive
    assert "--cloud is used only with --archive mast" in caplog.text
    assert "--darks-per-month is used only with --archive simulated" in caplog.text


def test_an_unreachable_scheduler_is_named_in_one_line(tmp_path, capsys):
    import dask

    args = RUN + ["--start", "2003-01", "--stop", "2003-01", "--output", str(tmp_path), "--scheduler",
                  "tcp://127.0.0.1:1"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert run_pipeline_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("run_pipeline: error: --scheduler tcp://127.0.0.1:1: cannot reach the dask scheduler")
    assert not any("Traceback" in line for line in err)


def test_a_pipeline_object_runs_again_after_a_stop(tmp_path):
    """In a notebook the same pipeline may be run again after a Ctrl-C or an archive outage: the
    stop of the previous run must not end the next one at once."""
    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-01"), workers=1,
                      darks_per_month=2)
    pipeline = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts)
    pipeline._stop.set()  # what the previous run's Ctrl-C left
    summary = pipeline.run()
    assert summary.committed == ("2003-01",) and not summary.interrupted


def test_runs_started_in_the_same_second_get_log_files_of_their_own(tmp_path, monkeypatch):
    """Log names had whole seconds: runs started in the same second (a script that runs again at
    once, two processes) wrote into one file. Now the time has microseconds and the name the
    process id; the names still sort by start time."""
    cfg = load_config()
    run = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path,
                            options=RunOptions(archive="simulated"))
    second = 1_000_000_000  # 2001-09-09T01:46:40Z
    real_gmtime = time.gmtime
    names = []
    with monkeypatch.context() as m:
        m.setattr(time, "gmtime", lambda secs=None: real_gmtime(second if secs is None else secs))
        for now, pid in ((second + 0.25, 4242), (second + 0.5, 4242), (second + 0.5, 4243)):
            m.setattr(time, "time", lambda now=now: now)
            m.setattr(os, "getpid", lambda pid=pid: pid)
            names.append(run.new_logfile())
    assert len(set(names)) == 3 and names == sorted(names), names
    assert names[0] == tmp_path / "logs" / f"{INSTR}-20010909T014640.250000Z-4242.log"


def test_the_docs_name_the_log_files_as_new_logfile_does():
    """Every place the docs give a log file's name gives the process id after the time
    (``<instrument>-<UTC start>Z-<pid>.log``, :meth:`CosmicRayPipeline.new_logfile`):
    data_products/README.md still said ``<instrument>-<time>.log``."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/architecture.md", "data_products/README.md"):
        names = re.findall(r"`[^`]*<instrument>-[^`]*\.log`", (root / doc).read_text())
        assert names, doc
        for name in names:
            assert re.search(r"Z-<(pid|process id)>\.log`$", name), (doc, name)


class RecordingBar:
    """A stand-in for the tqdm bars of a run on a terminal: keeps the count and the postfix each
    time the bar would be drawn."""

    bars: list = []

    def __init__(self, *, total, desc, unit, **kwargs):
        self.total, self.desc, self.n, self.postfix, self.disable = total, desc, 0, "", False
        self.states = []
        RecordingBar.bars.append(self)

    def update(self, k=1):
        self.n += k
        self.states.append((self.n, self.postfix))

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        pass


def test_the_frames_bar_moves_while_a_stack_is_rejected_and_measured(tmp_path, monkeypatch):
    """The month's bar counted frames when a group's task ended: a month whose frames form one
    stack sat at 0 % until it was done. Now it counts each frame as it is measured, and says
    what the groups in progress do (reading, rejecting with the share of the rows done)."""
    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-01"), workers=1,
                      darks_per_month=4, progress=True)
    run = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts)
    monkeypatch.setattr(RecordingBar, "bars", [])
    monkeypatch.setattr(CosmicRayPipeline, "_progress", lambda self, **kwargs: RecordingBar(**kwargs))
    assert run.run().committed == ("2003-01",)
    (bar,) = [b for b in RecordingBar.bars if b.desc == "2003-01"]
    counts = [n for n, _ in bar.states]
    assert bar.total == 4 and counts == sorted(counts) and set(counts) == {0, 1, 2, 3, 4}
    shares = [int(text.split()[1][:-1]) for n, text in bar.states if text.startswith("rejecting ") and n == 0]
    assert len(shares) > 2 and shares == sorted(shares) and shares[0] == 0, bar.states
    assert any(text.startswith("reading 1/") for n, text in bar.states if n == 0)
    assert any(text == "measuring" and 0 < n < 4 for n, text in bar.states)
    ledger = read_ledger(tmp_path / f"{INSTR}.h5")
    assert ledger["n_processed"].tolist() == [4]


def test_the_configuration_of_every_month_can_be_recovered_from_the_store(reference_store, tmp_path, capsys):
    import json
    import shutil

    from hstcosmicrays.results import open_results

    path = tmp_path / f"{INSTR}.h5"
    shutil.copy(reference_store, path)
    user = tmp_path / "user.yaml"
    user.write_text("pipeline:\n  month_settle_days: 3\n")
    args = RUN + ["--start", "2003-03", "--stop", "2003-03", "--output", str(tmp_path), "--reprocess", "-q"]
    assert run_pipeline_main(args + ["--config", str(user)]) == 0
    default, changed = load_config(), load_config(user)
    res = open_results(path)
    assert res.months()["config_hash"].tolist() == [default.digest] * 2 + [changed.digest]
    assert res.configuration() == json.loads(changed.text)  # the month committed last
    assert res.configuration(default.digest)["pipeline"]["month_settle_days"] == 7
    with pytest.raises(KeyError, match="no stored configuration 'cafe'"):
        res.configuration("cafe")
    # printed as YAML, it is a --config file that gives the same digest
    capsys.readouterr()
    assert main(["status", "--instr", INSTR, "--output", str(tmp_path), "--show-config", default.digest]) == 0
    again = tmp_path / "again.yaml"
    again.write_text(capsys.readouterr().out)
    assert load_config(again).digest == default.digest
    assert main(["status", "--instr", INSTR, "--output", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"configuration {default.digest}: 2 months" in text and f"configuration {changed.digest}: 1 month" in text
    assert main(["status", "--instr", INSTR, "--output", str(tmp_path), "--show-config", "cafe"]) == 2


def test_the_configuration_of_a_store_whose_months_all_failed_is_that_of_the_last_run(tmp_path, capsys):
    """status lists the digest of failed months; configuration() and --show-config without a
    digest give it too (the run that tried last), rather than 'no month is committed'."""
    import json

    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.results import open_results

    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2003-01"), stop=parse_month("2003-02"), workers=1)
    archive = FlakyArchive(SimulatedArchive(seed=cfg.pipeline.simulation_seed, darks_per_month=2),
                           {"2003-01", "2003-02"})
    summary = CosmicRayPipeline(instrument=cfg.instrument(INSTR), config=cfg, output_dir=tmp_path, options=opts,
                                archive=archive).run()
    assert summary.failed == ("2003-01", "2003-02") and not summary.committed
    assert open_results(tmp_path / f"{INSTR}.h5").configuration() == json.loads(cfg.text)
    capsys.readouterr()
    assert main(["status", "--instr", INSTR, "--output", str(tmp_path), "--show-config"]) == 0
    assert "month_settle_days: 7" in capsys.readouterr().out


@pytest.mark.parametrize("name,shape", [("acs_hrc", (256, 256)), ("wfc3_uvis", (128, 1024))])
def test_cr_flags_already_in_the_inputs_change_nothing(tmp_path, name, shape):
    """FLT files from MAST may already carry the STScI pipeline's DQ 8192 (CRMASK of a CR-SPLIT
    association). The stored CRs are those of this pipeline's own rejection either way: flags
    on background are not counted, and pixels flagged before are not excluded (WFC3/UVIS's
    BADINPDQ includes 8192)."""
    import shutil

    from astropy.io import fits

    from hstcosmicrays import simulate
    from hstcosmicrays.archive.local import LocalArchive

    config = load_config()
    inst = config.instrument(name)
    month = parse_month("2012-06" if name == "wfc3_uvis" else "2004-06")
    clean = tmp_path / "clean"
    simulate.write_archive(instrument=inst, start=month, stop=month, out=clean, darks_per_month=2, seed=3,
                           shape=shape)
    flagged = tmp_path / "flagged"
    shutil.copytree(clean, flagged)
    rng = np.random.default_rng(0)
    n_files = 0
    for path in sorted(flagged.rglob("*_flt.fits")):
        with fits.open(path, mode="update") as hdul:
            for ext in ("DQ",):
                for extver in inst.chips:
                    dq = hdul[ext, extver].data
                    # 3x3 blocks at random places: on background and, by chance or not, on CRs
                    for y, x in zip(rng.integers(0, shape[0] - 3, 40), rng.integers(0, shape[1] - 3, 40)):
                        dq[y:y + 3, x:x + 3] |= inst.dq_cr
                    # and every pixel of the brightest CR in the frame
                    sci = hdul["SCI", extver].data
                    dq[sci > np.percentile(sci, 99.9)] |= inst.dq_cr
        n_files += 1
    assert n_files >= 2
    stores = []
    for archive in (clean, flagged):
        out = tmp_path / f"out-{archive.name}"
        CosmicRayPipeline(instrument=inst, config=config, output_dir=out, archive=LocalArchive(archive),
                          options=RunOptions(archive=str(archive), start=month, stop=month, workers=1)).run()
        stores.append(out / inst.store_name)
    assert read_ledger(stores[0])["n_cr"].sum() > 100
    assert_same_store(*stores)


def test_counts_of_one_are_logged_in_the_singular(tmp_path, caplog):
    """One WFPC2 month of one dark (measured by the threshold, no partner needed): '1 month',
    '1 dark', '1 frame', never '1 months' and the like."""
    import re

    cfg = load_config()
    opts = RunOptions(archive="simulated", start=parse_month("2005-01"), stop=parse_month("2005-01"), workers=1,
                      darks_per_month=1)
    with caplog.at_level("DEBUG", logger="hstcosmicrays"):
        summary = CosmicRayPipeline(instrument=cfg.instrument("wfpc2"), config=cfg, output_dir=tmp_path,
                                    options=opts).run()
    assert summary.committed == ("2005-01",)
    assert f"wfpc2: 1 month to process; store {tmp_path / 'wfpc2.h5'}" in caplog.text  # none committed: not said
    assert "wfpc2 2005-01: 1 dark in the archive" in caplog.text
    assert re.search(r"wfpc2 2005-01: committed 1 frame, 0 failed, \d+ CRs", caplog.text)
    assert "wfpc2: committed 1 month, 0 failed" in caplog.text
    wrong = re.findall(r"\b1 (?:months|frames|darks|CRs|files|groups|stacks|rows|reads|pixels|days)\b", caplog.text)
    assert not wrong, caplog.text


@pytest.mark.slow
def test_the_readme_gives_the_measured_shortfall_of_stored_crs(tmp_path):
    """The README's table of stored against injected CRs, and of spurious stored CRs, is what
    benchmarks/bench_counts.py measures; checked on its ACS/HRC row (the quickest: 48 darks of
    1024 x 1024)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_counts", root / "benchmarks" / "bench_counts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    window = bench.WINDOWS["acs_hrc"]
    _, stored, injected, large, far = bench.measure("acs_hrc", window, tmp_path)
    row = (f"| ACS/HRC (21 um) | {window[0]} to {window[1]} | {100 * (stored / injected - 1):.1f} % | "
           f"{100 * (stored / large - 1):.1f} % | {100 * far / stored:.2f} % |")
    assert row in (root / "README.md").read_text(), row


def test_stis_crsplit_files_of_several_imsets_give_the_stores_of_one_file_per_exposure(tmp_path, caplog):
    """A STIS CR-SPLIT observation is one FLT whose imsets are the sub-exposures (ocrreject reads
    every imset of its input). A month whose sets come as such files stores the same frames and
    CRs as the same month with one file per exposure, each imset a frame named
    ``<rootname>_<k>`` on chip 1, with its own times and SAA keywords. The simulated archive
    writes its STIS sets so (``write_archive``), and its files give the very store of the same
    files assembled from one file per exposure (``tests/_stis_files.py``)."""
    import shutil

    from _stis_files import stis_crsplit_file, stis_spt_file

    from hstcosmicrays import simulate
    from hstcosmicrays.archive.local import LocalArchive

    config = load_config()
    inst = config.instrument("stis_ccd")
    month = parse_month("2012-06")
    specs = simulate.month_schedule(instrument=inst, month=month, seed=4, darks_per_month=5, shape=(256, 256))
    single = tmp_path / "single"  # one file per exposure
    for spec in specs:
        simulate.write_dataset(instrument=inst, spec=spec, out_dir=single / "mastDownload" / "HST" / spec.obs_id)
    simulated = tmp_path / "simulated"  # the simulated archive: a set of several exposures is one file
    simulate.write_archive(instrument=inst, start=month, stop=month, out=simulated, darks_per_month=5, seed=4,
                           shape=(256, 256))
    sets = {}
    for spec in specs:
        sets.setdefault(spec.set_obs_ids, []).append(spec)
    combined = tmp_path / "combined"  # the sets' files assembled from the files of their exposures
    name_of = {s.obs_id: simulate.frame_name(instrument=inst, spec=s) for s in specs}
    for members in sets.values():
        src = [single / "mastDownload" / "HST" / s.obs_id / f"{s.obs_id}_flt.fits" for s in members]
        if len(members) == 1:
            shutil.copytree(src[0].parent, combined / members[0].obs_id)
            continue
        root = simulate.dataset_obs_id(instrument=inst, spec=members[0])
        d = combined / root
        d.mkdir(parents=True)
        stis_crsplit_file(src, d / f"{root}_flt.fits", rootname=root)
        stis_spt_file(src[0].with_name(f"{members[0].obs_id}_spt.fits"), d / f"{root}_spt.fits", rootname=root)
        assert (simulated / "mastDownload" / "HST" / root / f"{root}_flt.fits").exists()
    assert sorted(p.name for p in (simulated / "mastDownload" / "HST").iterdir()) == sorted(
        p.name for p in combined.iterdir())
    assert any(n.endswith("_2") for n in name_of.values()), "no CR-SPLIT set of two or more frames"
    assert any("_" not in n for n in name_of.values()), "no lone frame"

    stores = []
    for archive in (single, combined, simulated):
        out = tmp_path / f"out-{archive.name}"
        caplog.clear()
        with caplog.at_level("INFO", logger="hstcosmicrays"):
            CosmicRayPipeline(instrument=inst, config=config, output_dir=out, archive=LocalArchive(archive),
                              options=RunOptions(archive=str(archive), start=month, stop=month, workers=1)).run()
        # the archive lists datasets; a STIS dataset may hold several exposures
        n_datasets = len(LocalArchive(archive).query(inst, month))
        assert f"2012-06: {n_datasets} datasets in the archive" in caplog.text
        stores.append(out / inst.store_name)
    a = store_tables(stores[0])
    assert a["months"]["n_found"][0] == len(specs)
    assert a["months"]["n_cr"][0] > 100
    keys = {"exposures": (), "cosmic_rays": ("chip", "x", "y"), "failures": ("stage",)}
    for b in (store_tables(stores[1]), store_tables(stores[2])):
        assert b["months"]["n_found"][0] == len(specs)
        for t, more in keys.items():
            renamed = np.array([name_of[r.decode()].encode() for r in a[t]["rootname"]], dtype="S16")
            order_a = np.lexsort(tuple(a[t][c] for c in reversed(more)) + (renamed,))
            order_b = np.lexsort(tuple(b[t][c] for c in reversed(more)) + (b[t]["rootname"],))
            assert sorted(a[t]) == sorted(b[t])
            for col in a[t]:
                want = renamed if col == "rootname" else a[t][col]
                np.testing.assert_array_equal(b[t][col][order_b], want[order_a], err_msg=f"{t}.{col}")
        assert sorted(r.decode() for r in b["exposures"]["rootname"]) == sorted(name_of.values())
        assert set(np.unique(b["cosmic_rays"]["chip"]).tolist()) == {1}
        for k in a["months"]:
            np.testing.assert_array_equal(a["months"][k], b["months"][k], err_msg=k)


# ----------------------------------------------------------------------------------------------
# months of the simulated archive with opt-in features, set in a --config file


def _run_featured_month(tmp_path, name, month, features, *, darks, shape):
    """One month of ``name`` from the simulated archive with the ``features`` (YAML lines of its
    ``simulation``) set in a user configuration file, the downloads kept for their truth files.
    Returns (store path, truth frames, truth CRs, summary)."""
    from hstcosmicrays import simulate
    from hstcosmicrays.archive.simulated import SimulatedArchive

    user = tmp_path / "features.yaml"
    user.write_text(f"instruments:\n  {name}:\n    simulation:\n" + "".join(f"      {line}\n" for line in features))
    config = load_config(user)
    inst = config.instrument(name)
    m = parse_month(month)
    summary = CosmicRayPipeline(
        instrument=inst, config=config, output_dir=tmp_path / "out",
        archive=SimulatedArchive(seed=config.pipeline.simulation_seed, darks_per_month=darks, shape=shape),
        options=RunOptions(archive="simulated", start=m, stop=m, workers=1, keep_downloads=True)).run()
    frames, crs = simulate.read_truth(tmp_path / "out" / "work")
    return tmp_path / "out" / inst.store_name, frames, crs, summary


@pytest.mark.parametrize("name", ["acs_wfc", "wfc3_uvis"])
def test_a_month_of_dn_frames_stores_each_amplifiers_cr_energies_in_electrons(tmp_path, name):
    """FLT files in DN whose four amplifiers have gains 0.7 to 1.6 times CCDGAIN: every stored
    CR's energy is its injected charge in electrons, in each amplifier's quadrant alike (the
    reader converts each pixel with its own amplifier's ATODGN), and the stored gain is the mean
    of the four."""
    from scipy.spatial import cKDTree

    store, frames, truth, summary = _run_featured_month(
        tmp_path, name, "2012-06", ["dn_frames: true", "amp_gain_factors: [0.7, 1.0, 1.3, 1.6]"],
        darks=4, shape=(48, 4096))
    assert summary.committed == ("2012-06",) and (frames["bunit"] == "COUNTS").all()
    ex = read_committed(store, "exposures")
    cr = read_committed(store, "cosmic_rays")
    assert sorted(ex["rootname"].astype(str)) == sorted(frames["obs_id"])
    assert not len(read_committed(store, "failures")["rootname"])
    mean_gain = dict(zip(frames["obs_id"], frames["gain"] * np.mean([0.7, 1.0, 1.3, 1.6])))  # CCDGAIN x factors
    for rootname, gain in zip(ex["rootname"].astype(str), ex["gain"]):
        assert gain == pytest.approx(mean_gain[rootname], rel=1e-3)
    ratios = {}
    for i, rootname in enumerate(ex["rootname"].astype(str)):
        for chip in (1, 2):
            t = truth[(truth.obs_id == rootname) & (truth.chip == chip)]
            mine = (cr["exposure_index"] == i) & (cr["chip"] == chip)
            tree = cKDTree(np.c_[t.x, t.y])
            gap, _ = tree.query(np.c_[t.x, t.y], k=2)
            d, j = tree.query(np.c_[cr["x"][mine], cr["y"][mine]])
            clean = (d < 1.0) & (gap[j, 1] > 6.0) & (t.charge.to_numpy()[j] > 1000)
            right = cr["x"][mine] >= 2048  # CCDCHIP 2 (chip 1): C | D; CCDCHIP 1 (chip 2): A | B
            for side in (False, True):
                sel = clean & (right == side)
                ratios.setdefault((chip, side), []).extend(cr["energy"][mine][sel] / t.charge.to_numpy()[j][sel])
    medians = {k: float(np.median(v)) for k, v in ratios.items()}
    assert min(len(v) for v in ratios.values()) > 100
    assert all(0.97 < v < 1.05 for v in medians.values()), medians
    assert max(medians.values()) - min(medians.values()) < 0.02, medians


def test_subarrays_and_reed_solomon_frames_are_left_out_with_their_reason_and_the_month_commits(tmp_path):
    """An ACS month whose sets are partly subarrays and whose frames partly carry Reed-Solomon
    errors (DQ 2): the month commits; every frame the truth marks is in the store's failures at
    stage select with its reason (a subarray is not rejected; the Reed-Solomon pixels counted),
    every other frame is measured (or failed as a frame left without a CR-SPLIT partner), and
    all are counted as found."""
    store, frames, truth, summary = _run_featured_month(
        tmp_path, "acs_hrc", "2003-02",
        ["subarray_fraction: 0.3", "subarray_shape: [64, 64]", "reed_solomon_fraction: 0.3"],
        darks=10, shape=(128, 128))
    assert summary.committed == ("2003-02",)
    excluded = frames[frames["pipeline_exclusion"] != ""]
    assert set(excluded["pipeline_exclusion"]) == {"subarray", "reed_solomon"}
    ledger = read_ledger(store)
    assert ledger["state"].tolist() == [b"committed"] and ledger["n_found"][0] == len(frames) == 10
    failures = read_committed(store, "failures")
    failed = {r.decode(): (s.decode(), why.decode()) for r, s, why in
              zip(failures["rootname"], failures["stage"], failures["reason"])}
    for row in excluded.itertuples():
        stage, reason = failed[row.obs_id]
        assert stage == "select"
        if row.pipeline_exclusion == "subarray":
            assert row.subarray and reason == "subarray 64x64: subarrays are not rejected"
        else:
            assert not row.subarray and row.rs_pixels > 0
            assert reason == f"Reed-Solomon decoding errors: {row.rs_pixels} pixels with DQ 2"
    stored = set(read_committed(store, "exposures")["rootname"].astype(str))
    kept = set(frames.loc[frames["pipeline_exclusion"] == "", "obs_id"])
    assert stored and stored <= kept and not stored & set(excluded["obs_id"])
    for lone in kept - stored:  # its partners all left out
        assert failed[lone] == ("reject", "single frame: no CR-SPLIT partner to reject cosmic rays against")
    assert ledger["n_processed"][0] == len(stored) and ledger["n_failed"][0] == len(failed) == 10 - len(stored)
    cr = read_committed(store, "cosmic_rays")
    assert ledger["n_cr"][0] == len(cr["x"]) > 100

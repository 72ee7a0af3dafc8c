"""Command-line behaviour that does not need the stage modules."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hstcosmicrays.cli import main, run_pipeline_main


def test_unknown_instrument_exits_nonzero_and_lists_valid(capsys):
    assert run_pipeline_main(["--instr", "nosuch", "--archive", "simulated"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "wfc3_uvis" in err and "stis_ccd" in err


def test_console_script_for_unknown_instrument():
    proc = subprocess.run([sys.executable, "-m", "hstcosmicrays.cli", "status", "--instr", "nosuch"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "valid instruments" in proc.stderr


def test_bad_config_type_names_file_key_and_type(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pipeline:\n  workers: two\n")
    assert run_pipeline_main(["--instr", "wfc3uvis", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(cfg) in err and "'pipeline.workers'" in err and "an integer" in err
    assert len(err.splitlines()) == 1


def test_negative_workers_names_where_the_value_came_from(tmp_path, capsys):
    """From the file: the file and its key pipeline.workers; from the flag: --workers."""
    cfg = tmp_path / "neg.yaml"
    cfg.write_text("pipeline:\n  workers: -3\n")
    args = ["--instr", "wfc3uvis", "--archive", "simulated", "--output", str(tmp_path / "out")]
    assert run_pipeline_main(args + ["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"run_pipeline: error: {cfg}: key 'pipeline.workers': expected 0 or more "
                   "(0 = number of cores), got -3")
    with pytest.raises(SystemExit) as exc:
        run_pipeline_main(args + ["--workers", "-3"])
    assert exc.value.code == 2
    assert "argument --workers: expected 0 or more, got -3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_month_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run_pipeline_main(["--instr", "wfc3uvis", "--start", "2012/01"])
    assert exc.value.code == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_status_without_store(tmp_path, capsys):
    assert main(["status", "--instr", "acs_hrc", "--output", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status"], ["compact"], ["plot", "rate"],
                                     ["export", "--table", "months", "--out", "months.csv"]])
def test_a_store_file_given_as_output_names_the_directory_to_give(tmp_path, capsys, monkeypatch, command):
    """--output of the commands that read a store is the directory of the stores: a store file
    there gave 'no results store ... at uvis/wfc3_uvis.h5/wfc3_uvis.h5'; now the message says
    what --output names and which directory to give."""
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uvis").mkdir()
    with ResultsStore.open(tmp_path / "uvis" / "wfc3_uvis.h5", instrument="wfc3_uvis", software_version="0",
                           config_hash="x"):
        pass
    name = " ".join(command[:1])
    for given, what in (("uvis/wfc3_uvis.h5", "is a file"), ("uvis/acs_wfc.h5", "no such directory")):
        assert main(command + ["--instr", "wfc3uvis", "--output", given]) == 2
        assert capsys.readouterr().err == (
            f"hstcosmicrays {name}: error: --output {given}: {what}; --output names the directory of the stores "
            "(<directory>/<instrument>.h5), not a store: try --output uvis\n")
    assert sorted(p.name for p in (tmp_path / "uvis").iterdir()) == ["wfc3_uvis.h5", "wfc3_uvis.h5.lock"]


def test_status_gives_the_unit_of_the_median_rate(tmp_path, capsys):
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    with ResultsStore.open(tmp_path / "acs_hrc.h5", instrument="acs_hrc", software_version="0", config_hash="x"):
        pass
    assert main(["status", "--instr", "acs_hrc", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "median rate in CR / (s cm2)" in out.splitlines()


@pytest.mark.parametrize("argv, verbosity", [
    (["status", "--instr", "x"], 0),
    (["-v", "status", "--instr", "x"], 1),
    (["status", "-v", "--instr", "x"], 1),
    (["status", "--instr", "x", "--quiet"], -1),
    (["-q", "plot", "rate", "--instr", "x"], -1),
    (["export", "--instr", "x", "--table", "orbit", "--format", "csv", "--out", "o.csv", "-v"], 1),
])
def test_verbosity_flags_before_or_after_the_subcommand(argv, verbosity):
    from hstcosmicrays.cli import _main_parser

    assert _main_parser().parse_args(argv).verbosity == verbosity


def test_stop_before_start_is_a_usage_error_and_creates_nothing(tmp_path, capsys):
    args = ["--instr", "wfc3uvis", "--archive", "simulated", "--output", str(tmp_path / "out"),
            "--start", "2012-05", "--stop", "2012-03"]
    assert run_pipeline_main(args) == 2
    assert "--stop 2012-03 is before --start 2012-05" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["simulate", "--instr", "wfc3uvis", "--start", "2012-05", "--stop", "2012-03",
                 "--out", str(tmp_path / "sim")]) == 2
    assert "before the first month" in capsys.readouterr().err


def test_a_window_outside_the_active_time_says_so(tmp_path, caplog):
    args = ["--instr", "wfc3uvis", "--archive", "simulated", "--output", str(tmp_path), "--stop", "2005-01"]
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        assert run_pipeline_main(args) == 0
    assert "no month up to 2005-01 is in the instrument's active time (2009-05-01 to today)" in caplog.text
    assert not (tmp_path / "wfc3_uvis.h5").exists()  # nothing to store: no store is created


def test_a_window_inside_an_inactive_range_names_it(tmp_path, caplog):
    args = ["--instr", "acs_wfc", "--archive", "simulated", "--output", str(tmp_path), "--start", "2008-01",
            "--stop", "2008-02"]
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        assert run_pipeline_main(args) == 0
    assert ("no month of 2008-01 to 2008-02 is in the instrument's active time "
            "(2002-03-01 to today, inactive 2007-01-27 to 2009-05-01)") in caplog.text


def test_archive_that_is_no_directory_is_a_usage_error_before_the_store(tmp_path, capsys):
    missing = tmp_path / "no_such_archive"
    args = ["--instr", "acs_hrc", "--archive", str(missing), "--output", str(tmp_path / "out"),
            "--start", "2004-06", "--stop", "2004-06"]
    assert run_pipeline_main(args) == 2
    assert f"existing directory, got '{missing}'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "acs_hrc.h5").exists()


def test_the_run_log_names_version_configuration_and_cr_parameters(tmp_path):
    from hstcosmicrays import __version__
    from hstcosmicrays.config import load_config

    args = ["--instr", "acs_hrc", "--archive", "simulated", "--darks-per-month", "2", "--workers", "1",
            "--start", "2004-06", "--stop", "2004-06", "--output", str(tmp_path), "-q"]
    assert run_pipeline_main(args) == 0
    (logfile,) = (tmp_path / "logs").glob("acs_hrc-*.log")
    text = logfile.read_text()
    assert f"hstcosmicrays {__version__}, archive simulated" in text
    assert f"(digest {load_config().digest}, stored with each month)" in text
    assert "acs_hrc: CR-SPLIT parameters CRRejectParams(crsigmas=(6.5, 5.5, 4.5)" in text


def test_a_store_in_use_is_a_one_line_error(tmp_path, capsys):
    """... and the run refused leaves no log file (it left an empty one); one that logged a line
    before the refusal (here: an option that does not apply) ends its log with the refusal."""
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    path = tmp_path / "acs_hrc.h5"
    with ResultsStore.open(path, instrument="acs_hrc", software_version="0", config_hash="x"):
        args = ["--instr", "acs_hrc", "--archive", "simulated", "--output", str(tmp_path), "--workers", "1",
                "--start", "2004-06", "--stop", "2004-06"]
        assert run_pipeline_main(args) == 1
        assert main(["compact", "--instr", "acs_hrc", "--output", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and all(f"{path} is being written by pid" in line for line in err)
        assert list((tmp_path / "logs").glob("*")) == []
        assert run_pipeline_main(args + ["--cloud", "-q"]) == 1
    (logfile,) = (tmp_path / "logs").glob("*")
    lines = logfile.read_text().splitlines()
    assert len(lines) == 2 and "--cloud is used only with --archive mast" in lines[0]
    assert lines[1].endswith(f"ERROR run_pipeline: error: {err[0].split(': error: ', 1)[1]}")


def test_a_log_file_that_cannot_be_created_is_one_line_and_the_run_goes_on(tmp_path, capsys):
    """The file is opened by its first line, outside logging's handling of write errors: its
    failure must not reach the code that logs."""
    import logging

    from hstcosmicrays.cli import setup_logging

    logfile = tmp_path / "logs" / "acs_hrc-1.log"
    logfile.mkdir(parents=True)  # cannot be opened as a file
    try:
        setup_logging(verbosity=0, logfile=logfile)
        for k in range(2):
            logging.getLogger("hstcosmicrays.pipeline").info("month %d committed", k)
        err = capsys.readouterr().err.splitlines()
    finally:
        setup_logging(verbosity=-1)
    assert [line for line in err if "log file" in line] == [
        f"{os.path.basename(sys.argv[0])}: cannot write the log file {logfile} (Is a directory); "
        "the rest of this run's log goes to the terminal only"]
    assert len(err) == 3 and "Traceback" not in "\n".join(err)


def test_mast_server_reports_its_address_once(tmp_path, capsys, monkeypatch):
    """The address is printed once (stdout), not logged as well; Ctrl-C (here: the first sleep) stops it."""
    import time

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    assert main(["mast-server", "--darks-per-month", "1"]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if "MAST stand-in at" in ln]
    assert len(lines) == 1 and lines[0].startswith("MAST stand-in at http://127.0.0.1:"), lines


@pytest.mark.parametrize("value", ["0", "-1"])
def test_darks_per_month_below_one_is_a_usage_error_naming_the_option(tmp_path, capsys, value):
    """run_pipeline, simulate and mast-server refuse the value before any work (no store, no files)."""
    commands = [
        (run_pipeline_main, ["--instr", "stis", "--archive", "simulated", "--output", str(tmp_path / "out"),
                             "--start", "2010-01", "--stop", "2010-01", "--darks-per-month", value]),
        (main, ["simulate", "--instr", "stis", "--start", "2010-01", "--stop", "2010-01",
                "--out", str(tmp_path / "sim"), "--darks-per-month", value]),
        (main, ["mast-server", "--darks-per-month", value]),
    ]
    for entry, argv in commands:
        with pytest.raises(SystemExit) as exc:
            entry(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --darks-per-month: expected 1 or more, got {value}" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "sim").exists()


def test_an_unexpected_os_error_is_one_line_naming_the_file(monkeypatch, capsys):
    """Any OSError a command meets is reported as 'FILE: reason', exit 1, not a traceback."""
    from hstcosmicrays import cli

    def fail(args):
        raise PermissionError(13, "Permission denied", "/data/wfc3_uvis.h5")

    monkeypatch.setattr(cli, "_cmd_status", fail)
    assert main(["status", "--instr", "wfc3uvis"]) == 1
    assert capsys.readouterr().err == "hstcosmicrays status: error: /data/wfc3_uvis.h5: Permission denied\n"


def test_output_paths_that_are_files_or_directories_are_refused_before_the_work(tmp_path, capsys):
    """run_pipeline --output, measure --out, plot --out and mast-server --config-home are checked
    up front: one line naming the path, exit 2, nothing created."""
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    args = ["--instr", "stis", "--archive", "simulated", "--darks-per-month", "1", "--workers", "1",
            "--start", "2010-01", "--stop", "2010-01", "--output", str(existing), "-q"]
    assert run_pipeline_main(args) == 2
    assert capsys.readouterr().err == f"run_pipeline: error: --output {existing}: exists and is not a directory\n"

    a_dir = tmp_path / "table.csv"
    a_dir.mkdir()
    assert main(["measure", str(tmp_path / "missing_flt.fits"), "--out", str(a_dir)]) == 2
    assert capsys.readouterr().err == (
        f"hstcosmicrays measure: error: --out {a_dir}: is a directory; expected a file name\n")
    assert main(["measure", str(tmp_path / "missing_flt.fits"), "--out", str(tmp_path / "crs.txt")]) == 2
    assert "expected a .csv or .parquet file name" in capsys.readouterr().err

    assert main(["plot", "rate", "--instr", "stis", "--output", str(tmp_path), "--out",
                 str(existing / "rate.png")]) == 2
    assert f"--out {existing / 'rate.png'}: {existing} is not a directory" in capsys.readouterr().err

    assert main(["mast-server", "--config-home", str(existing)]) == 2
    assert f"--config-home {existing}: exists and is not a directory" in capsys.readouterr().err
    assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing_file", "table.csv"]



#: A directory in which nobody, root included, can create anything (Linux: /proc).
UNWRITABLE = Path("/proc")
needs_unwritable = pytest.mark.skipif(not (UNWRITABLE / "self").exists(), reason="needs Linux /proc")


@needs_unwritable
def test_output_files_that_cannot_be_written_are_named_as_given_before_the_work(tmp_path, capsys):
    """export, plot and measure --out in a directory where no file can be created: one line
    naming the path the user gave (not its temporary '.part' name) and the system's reason,
    exit 2, before any store or input is read (none exists here)."""
    out = UNWRITABLE / "o.csv"
    assert main(["export", "--instr", "wfc3uvis", "--table", "exposures", "--output", str(tmp_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hstcosmicrays export: error: --out {out}: cannot write in the directory {UNWRITABLE} (")
    assert ".part" not in err and len(err.splitlines()) == 1
    png = UNWRITABLE / "a" / "rate.png"
    assert main(["plot", "rate", "--instr", "wfc3uvis", "--output", str(tmp_path), "--out", str(png)]) == 2
    assert capsys.readouterr().err.startswith(
        f"hstcosmicrays plot: error: --out {png}: cannot create the directory {UNWRITABLE / 'a'} (")
    assert main(["measure", str(tmp_path / "missing_flt.fits"), "--out", str(out)]) == 2
    assert f"--out {out}: cannot write in the directory" in capsys.readouterr().err


def test_an_export_that_fails_while_writing_names_the_file_not_its_temporary(tmp_path, capsys, monkeypatch):
    """A write that fails later (a full disk) names --out, not '<out>.part', exit 1."""
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.results import Results
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    with ResultsStore.open(tmp_path / "acs_hrc.h5", instrument="acs_hrc", software_version="0", config_hash="x"):
        pass
    out = tmp_path / "o.csv"

    def full_disk(self, *, out, **kwargs):
        raise OSError(28, "No space left on device", f"{out}.part")

    monkeypatch.setattr(Results, "export", full_disk)
    assert main(["export", "--instr", "acs_hrc", "--table", "exposures", "--output", str(tmp_path),
                 "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"hstcosmicrays export: error: {out}: No space left on device\n"


@needs_unwritable
def test_an_output_directory_that_cannot_be_created_is_a_usage_error_before_the_work(tmp_path, capsys):
    """run_pipeline --output (and simulate --out) that cannot be created: '--output PATH: cannot
    create the directory (reason)', exit 2, before the store or the log; a directory that can be
    created is checked by creating it, and nothing of the check is left behind."""
    args = ["--instr", "wfc3uvis", "--archive", "simulated", "--start", "2012-01", "--stop", "2012-01", "-q"]
    target = UNWRITABLE / "hstcosmicrays-x"
    assert run_pipeline_main(args + ["--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"run_pipeline: error: --output {target}: cannot create the directory (")
    assert len(err.splitlines()) == 1
    deep = target / "y"
    assert run_pipeline_main(args + ["--output", str(deep)]) == 2
    assert f"--output {deep}: cannot create the directory {target} (" in capsys.readouterr().err
    assert main(["simulate", "--instr", "wfc3uvis", "--start", "2012-01", "--stop", "2012-01",
                 "--out", str(target)]) == 2
    assert f"--out {target}: cannot create the directory (" in capsys.readouterr().err
    from hstcosmicrays.cli import _check_output_dir

    fine = tmp_path / "a" / "b"
    assert _check_output_dir(fine, "--output") == fine
    assert list(tmp_path.iterdir()) == []



@pytest.mark.parametrize("address, why", [
    ("bogus", "no port number"), ("tcp://h", "no port number"), ("tcp://h:", "no port number"),
    ("tcp://h:x", "port 'x' is not a number"), ("tcp://h:0", "port 0 is not 1 to 65535"),
    ("tcp://:8786", "no host"), ("foo://h:1", "unknown scheme 'foo' (dask knows "),
])
def test_a_scheduler_address_dask_cannot_parse_is_refused_with_the_option(tmp_path, capsys, address, why):
    """--scheduler is parsed as dask.distributed parses it, when the arguments are read: the
    option, the form expected, the address and what is wrong with it; no store, no log."""
    args = ["--instr", "wfc3uvis", "--archive", "simulated", "--output", str(tmp_path / "out"),
            "--scheduler", address]
    with pytest.raises(SystemExit) as exc:
        run_pipeline_main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (f"argument --scheduler: expected tcp://HOST:PORT (or another scheme dask.distributed knows, "
            f"e.g. tls://HOST:PORT), got {address!r}: {why}") in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.example:8786",
                                     "tcp://[::1]:8786", "inproc://10.0.0.5/1/2"])
def test_scheduler_addresses_dask_accepts_are_kept(address):
    from hstcosmicrays.cli import _run_pipeline_parser

    args = _run_pipeline_parser().parse_args(["--instr", "wfc3uvis", "--scheduler", address])
    assert args.scheduler == address


def test_a_scheduler_that_does_not_answer_is_named_with_its_option(tmp_path, capsys):
    """A valid address where nothing listens: dask's connect time-out (30 s by default, 1 s
    here), then one line that names --scheduler and the address, exit 1."""
    import socket

    import dask

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    args = ["--instr", "acs_hrc", "--archive", "simulated", "--darks-per-month", "2", "--start", "2004-06",
            "--stop", "2004-06", "--output", str(tmp_path), "--scheduler", address, "-q"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert run_pipeline_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"run_pipeline: error: --scheduler {address}: cannot reach the dask scheduler (")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["run_pipeline", "status", "compact", "simulate", "crreject", "measure",
                                     "split-ima", "plot", "export", "mast-server"])
def test_every_option_of_every_subcommand_has_a_help_text(command, capsys):
    """--help of run_pipeline and of each subcommand explains every option and positional
    argument (--instr and --config of status, compact and export had none)."""
    import argparse

    from hstcosmicrays.cli import _main_parser, _run_pipeline_parser

    if command == "run_pipeline":
        parser, entry, argv = _run_pipeline_parser(), run_pipeline_main, ["--help"]
    else:
        (subparsers,) = [a for a in _main_parser()._actions if isinstance(a, argparse._SubParsersAction)]
        parser, entry, argv = subparsers.choices[command], main, [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        entry(argv)
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {name}: no help text"
        assert " ".join(action.help.split()) in text, f"{command} {name}: help text not shown"


def test_a_missing_solar_file_is_named_with_its_option(tmp_path, capsys):
    """plot --solar with no such file: one line naming the option and the file, exit 2, before
    any work (it was a bare '[Errno 2] No such file or directory')."""
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    with ResultsStore.open(tmp_path / "acs_hrc.h5", instrument="acs_hrc", software_version="0", config_hash="x"):
        pass
    missing = tmp_path / "MISSING.csv"
    argv = ["plot", "rate", "--instr", "acs_hrc", "--output", str(tmp_path), "--solar", str(missing)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"hstcosmicrays plot: error: --solar {missing}: no such file\n"
    assert main(argv[:-1] + [str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"hstcosmicrays plot: error: --solar {tmp_path}: is a directory\n"


class _Terminal:
    """A stand-in for a terminal's stderr: tqdm shows its bars on it (isatty), and it keeps
    what was written."""

    def __init__(self):
        import io

        self._buffer = io.StringIO()
        self.write, self.flush, self.getvalue = self._buffer.write, self._buffer.flush, self._buffer.getvalue

    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_log_lines_on_a_terminal_never_land_inside_a_progress_bar(tmp_path, monkeypatch, terminal):
    """On a terminal the bars are shown and each log line is written apart from them, on a line
    of its own ('months:   0%|...| 0/1 [...]17:48:58 INFO ...' was seen); elsewhere no bars, and
    the log lines are the plain lines of the console handler."""
    import io
    import re

    from hstcosmicrays.cli import setup_logging

    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    args = ["--instr", "acs_hrc", "--archive", "simulated", "--darks-per-month", "2", "--workers", "1",
            "--start", "2004-06", "--stop", "2004-06", "--output", str(tmp_path)]
    try:
        assert run_pipeline_main(args) == 0
    finally:
        setup_logging(verbosity=-1)  # no handler left on this test's stream
    text = stream.getvalue()
    pieces = [p for p in re.split(r"[\r\n]", text) if p.strip()]
    records = [p for p in pieces if re.search(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", p)]
    assert any("acs_hrc 2004-06: committed" in r for r in records), text
    bars = [p for p in pieces if re.match(r"\s*months:", p)]
    assert bool(bars) == terminal, text
    for record in records:
        assert re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", record), f"a log line inside a bar: {record!r}"
    if not terminal:
        assert "\r" not in text and text.endswith("\n")


# ---------------------------------------------------------------------------------------------
# a truncated input file: one line naming it, exit 2


@pytest.fixture(scope="module")
def two_flts(tmp_path_factory):
    """Two simulated ACS/WFC FLT files of small chips and their HDUs' places."""
    from astropy.io import fits

    from hstcosmicrays import simulate
    from hstcosmicrays.config import load_config
    from hstcosmicrays.intervals import parse_month

    inst = load_config().instrument("acs_wfc")
    out = tmp_path_factory.mktemp("flt")
    specs = simulate.month_schedule(instrument=inst, month=parse_month("2005-03"), seed=3, darks_per_month=2,
                                    shape=(64, 48))
    flts = [simulate.write_dataset(instrument=inst, spec=s, out_dir=out)["FLT"] for s in specs]
    with fits.open(flts[0]) as hdul:
        places = {(h.name, h.ver): hdul.fileinfo(i) for i, h in enumerate(hdul)}
    return flts, places


@pytest.mark.parametrize("hdu", [("SCI", 1), ("ERR", 1)])
def test_measure_and_crreject_name_a_truncated_input(two_flts, tmp_path, capsys, hdu):
    """Cut inside the data of SCI,1 (was a traceback, exit 1) or of ERR,1 (was 'missing
    extension DQ,1'); crreject named the intact second file for its number of chips."""
    flts, places = two_flts
    cut = tmp_path / flts[0].name
    cut.write_bytes(flts[0].read_bytes()[: places[hdu]["datLoc"] + 100])
    expected = f"{cut}: truncated: {cut.stat().st_size:,} of at least "
    for argv in (["measure", str(cut)], ["crreject", str(cut), str(flts[1])]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hstcosmicrays {argv[0]}: error: {expected}") and err.count("\n") == 1
        assert "(the FITS headers announce more data)" in err


def test_no_astropy_warning_about_a_truncated_file_reaches_the_console(two_flts, tmp_path):
    flts, places = two_flts
    cut = tmp_path / flts[0].name
    cut.write_bytes(flts[0].read_bytes()[: places[("DQ", 1)]["hdrLoc"] + 1000])  # inside a header
    proc = subprocess.run([sys.executable, "-m", "hstcosmicrays", "crreject", str(cut), str(flts[1])],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == (f"hstcosmicrays crreject: error: {cut}: truncated: {cut.stat().st_size:,} bytes, "
                           "ending inside the header of extension 3\n")


def test_a_log_file_that_cannot_be_written_is_one_line_not_a_traceback_per_log_line(tmp_path, capsys):
    """The debug log on a full disk: logging printed '--- Logging error ---' and a traceback of
    about 30 lines for every log line of the run; now one line names the file and the reason,
    the console keeps every line, and the log file is left alone."""
    import logging

    from hstcosmicrays.cli import setup_logging

    logfile = tmp_path / "logs" / "acs_hrc-1.log"
    setup_logging(verbosity=0, logfile=logfile)
    log = logging.getLogger("hstcosmicrays.pipeline")
    (handler,) = [h for h in logging.getLogger("hstcosmicrays").handlers if isinstance(h, logging.FileHandler)]

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            raise OSError(28, "No space left on device")

        def close(self):
            raise OSError(28, "No space left on device")

    try:
        assert handler.stream is None  # the file is opened by the first line: here, one on a full disk
        handler.stream = FullDisk()
        for k in range(3):
            log.info("month %d committed", k)
        err = capsys.readouterr().err.splitlines()
    finally:
        setup_logging(verbosity=-1)
    assert [line for line in err if "log file" in line] == [
        f"{os.path.basename(sys.argv[0])}: cannot write the log file {logfile} (No space left on device); "
        "the rest of this run's log goes to the terminal only"]
    assert [line.split(" ", 1)[1] for line in err if "committed" in line] == [
        f"INFO month {k} committed" for k in range(3)]
    assert len(err) == 4 and "Traceback" not in "\n".join(err)


def test_status_of_an_hdf5_file_that_is_no_store_is_one_line(tmp_path, capsys):
    """An HDF5 file without the /months ledger where the store should be: status gave h5py's
    KeyError as a traceback (plot and export already said what it is)."""
    import h5py

    from hstcosmicrays.cli import setup_logging

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    h5py.File(tmp_path / "wfc3_uvis.h5", "w").close()
    assert main(["status", "--instr", "wfc3uvis", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"hstcosmicrays status: error: {tmp_path / 'wfc3_uvis.h5'} is not a results "
                                       "store (no /months ledger)\n")


@pytest.mark.parametrize("command", [["measure"], ["split-ima", "--out", "reads"], ["crreject", "--no-crmask",
                                                                                     "--output", "crj.fits"]])
def test_a_directory_given_as_input_file_is_a_usage_error_naming_it(tmp_path, capsys, monkeypatch, command):
    """measure and split-ima exited 1 ('Is a directory', as for a file unreadable during the
    work), crreject 2 with Python's '[Errno 21]' text; the command line is what is wrong."""
    from hstcosmicrays.cli import setup_logging

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    monkeypatch.chdir(tmp_path)
    (tmp_path / "darks").mkdir()
    inputs = ["darks", "darks"] if command[0] == "crreject" else ["darks"]
    assert main(command + inputs) == 2
    assert capsys.readouterr().err == f"hstcosmicrays {command[0]}: error: darks: is a directory; expected a FITS file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["darks"]


@pytest.mark.parametrize("command", [["export", "--instr", "wfc3uvis", "--table", "months", "--output", "stores"],
                                     ["measure", "dark_flt.fits"]])
def test_parquet_without_pyarrow_is_one_line_before_the_work(tmp_path, capsys, monkeypatch, command):
    """pyarrow is only in the test extras, so a plain install may lack it: export gave a
    ModuleNotFoundError traceback after reading the store (measure pandas' ImportError)."""
    from hstcosmicrays.cli import setup_logging
    from hstcosmicrays.store import ResultsStore

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    monkeypatch.chdir(tmp_path)
    with ResultsStore.open(tmp_path / "stores" / "wfc3_uvis.h5", instrument="wfc3_uvis", software_version="0",
                           config_hash="x"):
        pass
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    assert main(command + ["--out", "crs.parquet"]) == 2
    assert capsys.readouterr().err == (f"hstcosmicrays {command[0]}: error: --out crs.parquet: writing Parquet "
                                       "needs pyarrow, which is not installed (pip install pyarrow); or write a "
                                       ".csv file\n")
    assert not (tmp_path / "crs.parquet").exists() and not (tmp_path / "crs.parquet.part").exists()


def test_the_readme_names_every_subcommand():
    """The README's tour and its table of other commands cover what `hstcosmicrays --help`
    lists (mast-server was missing)."""
    import argparse

    from hstcosmicrays.cli import _main_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (subparsers,) = [a for a in _main_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in subparsers.choices if f"hstcosmicrays {name} " not in readme]
    assert not missing, f"README.md does not show: {missing}"


def test_a_mast_server_port_that_cannot_be_used_names_host_and_port(tmp_path, capsys):
    """A port in use gave '[Errno 98] Address already in use' without naming it, exit 1; a
    port above 65535 the socket's OverflowError traceback."""
    import socket

    from hstcosmicrays.cli import setup_logging

    setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["mast-server", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (f"hstcosmicrays mast-server: error: --host 127.0.0.1 --port {port}: "
                                       "cannot listen there (Address already in use)\n")
    with pytest.raises(SystemExit) as exc:
        main(["mast-server", "--port", "99999"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "hstcosmicrays mast-server: error: argument --port: expected a port number, 0 to 65535, got 99999")


#: a command whose import of the module argv[1] is interrupted, as by a Ctrl-C during the
#: start-up imports (h5py, astropy: about a second before the work starts)
INTERRUPTED_IMPORT = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
from hstcosmicrays import cli
sys.exit(getattr(cli, sys.argv[2])(sys.argv[3:]))
"""


@pytest.mark.parametrize("module,entry,args,line", [
    # while --start is read (astropy, for the month), after the arguments (h5py, for the store), and
    # with the configuration read (the pipeline's modules)
    ("astropy.time", "run_pipeline_main", ["--instr", "acs_hrc", "--start", "2003-01"],
     "run_pipeline: interrupted before the run started; nothing was done"),
    ("h5py", "run_pipeline_main", ["--instr", "acs_hrc", "--start", "2003-01"],
     "run_pipeline: interrupted before the run started; nothing was done"),
    ("hstcosmicrays.pipeline", "run_pipeline_main", ["--instr", "acs_hrc", "--start", "2003-01"],
     "run_pipeline: interrupted before the run started; nothing was done"),
    ("h5py", "main", ["status", "--instr", "acs_hrc"],
     "hstcosmicrays: interrupted before the command started; nothing was done"),
])
def test_ctrl_c_during_the_start_up_imports_is_one_line_and_the_interrupt_status(tmp_path, module, entry, args,
                                                                                  line):
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, module, entry, *args,
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and proc.stderr.splitlines() == [line], proc.stderr
    assert not any(tmp_path.iterdir())

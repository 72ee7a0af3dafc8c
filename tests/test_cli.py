"""Command-line behaviour that does not need the stage modules."""

import subprocess
import sys

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


def test_bad_month_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        run_pipeline_main(["--instr", "wfc3uvis", "--start", "2012/01"])
    assert exc.value.code == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_status_without_store(tmp_path, capsys):
    assert main(["status", "--instr", "acs_hrc", "--output", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().err

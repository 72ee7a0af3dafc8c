"""The notebooks run end to end (nbclient) so that they never rot.

- ``quickstart.ipynb`` runs a real simulated job through ``CosmicRayPipeline`` (ACS/HRC, two
  months of four darks) into a temporary directory (``HSTCOSMICRAYS_OUTPUT``), then queries,
  plots and exports.
- ``rate_vs_time.ipynb`` reads a store of six years of simulated WFC3/UVIS darks built from the
  simulator's schedule and rate model (``test_results.build_truth_store``; the pixel pipeline
  over years of darks would take hours), given by ``HSTCOSMICRAYS_STORE``, with a solar-activity
  CSV (``HSTCOSMICRAYS_SOLAR_CSV``). The test reads the numbers the notebook prints and checks
  them against the injected truth.

Both notebooks are committed without outputs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from test_results import build_truth_store

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _own_kernel(data_dir: Path) -> str:
    """Name of a kernelspec under ``data_dir`` (to be put on ``JUPYTER_PATH``) that starts this
    test's own interpreter: the kernel named ``python3`` may be another environment's (a user
    kernelspec in ``~/.local/share/jupyter``), with another copy of the package."""
    spec = data_dir / "kernels" / "hstcosmicrays-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "the test's interpreter", "language": "python",
    }))
    return spec.name


def _execute(name: str, workdir: Path):
    from unittest import mock

    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    data_dir = workdir / "jupyter"
    kernel = _own_kernel(data_dir)
    path = os.pathsep.join(filter(None, [str(data_dir), os.environ.get("JUPYTER_PATH")]))
    with mock.patch.dict(os.environ, {"JUPYTER_PATH": path}):
        client = NotebookClient(nb, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(workdir)}})
        client.execute()
    return nb


def _stdout(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


def _errors(nb) -> list[str]:
    return [out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
            if out.output_type == "stream" and out.name == "stderr" and "Traceback" in out.get("text", "")]


@pytest.mark.parametrize("name", ["quickstart.ipynb", "rate_vs_time.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
def test_quickstart_runs_a_simulated_job(tmp_path, monkeypatch):
    out = tmp_path / "products"
    monkeypatch.setenv("HSTCOSMICRAYS_OUTPUT", str(out))
    monkeypatch.setenv("HSTCOSMICRAYS_INSTRUMENT", "acs_hrc")
    monkeypatch.setenv("HSTCOSMICRAYS_START", "2004-01")
    monkeypatch.setenv("HSTCOSMICRAYS_STOP", "2004-02")
    monkeypatch.setenv("HSTCOSMICRAYS_DARKS_PER_MONTH", "4")
    nb = _execute("quickstart.ipynb", tmp_path)
    assert not _errors(nb)
    m = re.search(r"QUICKSTART frames=(\d+) crs=(\d+) exported=(\d+) median_rate=([\d.]+)", _stdout(nb))
    assert m, _stdout(nb)
    frames, crs, exported, median_rate = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    assert frames == 8 and crs == exported > 1000
    assert 0.2 < median_rate < 10
    # the notebook wrote the store and the export where it was told to
    assert (out / "acs_hrc.h5").exists()
    back = pd.read_parquet(out / "acs_hrc_cosmic_rays.parquet")
    assert len(back) == crs
    assert _images(nb) == 3


@pytest.mark.slow
def test_rate_vs_time_recovers_the_injected_cycle_and_saa(tmp_path, monkeypatch):
    from hstcosmicrays import simulate

    store = tmp_path / "wfc3_uvis.h5"
    build_truth_store(store, first="2009-06", last="2015-05", darks_per_month=12)
    solar = tmp_path / "sunspots.csv"
    months = pd.date_range("2008-01-01", "2016-12-01", freq="MS")
    mjd = 40587.0 + (months - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    # a sunspot-like series: high when the injected CR modulation is low
    sunspots = 80.0 - 300.0 * (simulate.solar_modulation(mjd) - 1.0)
    pd.DataFrame({"date": months.strftime("%Y-%m-%d"), "sunspot number": sunspots}).to_csv(solar, index=False)
    monkeypatch.setenv("HSTCOSMICRAYS_STORE", str(store))
    monkeypatch.setenv("HSTCOSMICRAYS_SOLAR_CSV", str(solar))
    nb = _execute("rate_vs_time.ipynb", tmp_path)
    assert not _errors(nb)
    text = _stdout(nb)
    m = re.search(r"RATE_VS_TIME months=(\d+) corr_median=([-\d.]+) corr_robust_mean=([-\d.]+) "
                  r"peak_lon=([-\d.]+) peak_lat=([-\d.]+) peak_in_saa=(\w+)", text)
    assert m, text
    assert int(m[1]) == 72
    assert float(m[2]) > 0.9 and float(m[3]) > 0.9
    assert m[6] == "True"
    assert simulate.saa_factor(float(m[5]), float(m[4])) > simulate.SAA_CONTOUR
    amp = float(re.search(r"recovered amplitude ([\d.]+)", text)[1])
    assert amp == pytest.approx(simulate.SOLAR_AMPLITUDE, abs=0.03)
    anti = float(re.search(r"with sunspot number: ([-\d.]+)", text)[1])
    assert anti < -0.9
    assert _images(nb) == 3
    assert np.isfinite(float(m[4]))


def test_rate_vs_time_reads_by_default_the_store_of_the_readme_demo():
    """Jupyter (and nbconvert) run a notebook in its own folder, so the default store path is
    taken from notebooks/: it was ``data_products/wfc3_uvis.h5``, i.e. notebooks/data_products/,
    where nothing writes a store, and the notebook stopped at once after the README's demo."""
    from hstcosmicrays.config import load_config

    nb = nbformat.read(NOTEBOOKS / "rate_vs_time.ipynb", as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    default = re.search(r'os\.environ\.get\("HSTCOSMICRAYS_STORE", "([^"]+)"\)', source)[1]
    root = NOTEBOOKS.parent
    # the README's demo runs run_pipeline for WFC3/UVIS from the repository's root, default --output
    demo = re.search(r"^\s*python -m pip install -e \. && (run_pipeline [^\n]*)$",
                     (root / "README.md").read_text(), re.M)[1]
    assert "--instr wfc3uvis" in demo and "--output" not in demo
    assert (NOTEBOOKS / default).resolve() == (root / load_config().pipeline.output_dir / "wfc3_uvis.h5").resolve()

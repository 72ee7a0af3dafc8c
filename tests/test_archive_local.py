"""Tests of LocalArchive: a directory of downloaded files used as an archive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hstcosmicrays.archive.base import Archive, ArchiveError
from hstcosmicrays.archive.local import LocalArchive
from hstcosmicrays.archive.simulated import SimulatedArchive
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import Month

SHAPE = (32, 48)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Simulated WFC3/UVIS (two months) and STIS darks, the STIS ones in a flat directory."""
    config = load_config()
    root = tmp_path_factory.mktemp("library")
    sim = SimulatedArchive(seed=21, darks_per_month=2, shape=SHAPE)
    uvis = config.instruments["wfc3_uvis"]
    stis = config.instruments["stis_ccd"]
    expected = {}
    for month in (Month(2012, 3), Month(2012, 4)):
        ds = sim.query(uvis, month)
        sim.fetch(ds, root / "mast")
        expected[("wfc3_uvis", month)] = ds
    ds = sim.query(stis, Month(2012, 3))
    files = sim.fetch(ds, root / "tmp")
    flat = root / "stis_flat"
    flat.mkdir()
    for paths in files.values():
        for p in paths.values():
            shutil.copy(p, flat / p.name)
    shutil.rmtree(root / "tmp")
    expected[("stis_ccd", Month(2012, 3))] = ds
    (root / "notes_readme.fits").write_text("not a FITS file")
    return root, config, expected


def test_is_an_archive(library):
    root, _, _ = library
    assert isinstance(LocalArchive(root), Archive)
    with pytest.raises(ValueError):
        LocalArchive(root / "missing")


def test_query_finds_the_month_and_instrument(library):
    root, config, expected = library
    archive = LocalArchive(root)
    for (name, month), sim_ds in expected.items():
        found = archive.query(config.instruments[name], month)
        assert [d.obs_id for d in found] == [d.obs_id for d in sim_ds]
        for got, ref in zip(found, sim_ds):
            assert got.t_min == pytest.approx(ref.t_min) and got.exptime == ref.exptime
            assert got.instrument == name
            assert [p.suffix for p in got.products] == ["FLT", "SPT"]
            assert [p.size for p in got.products] == [p.size for p in ref.products]
    assert archive.query(config.instruments["wfc3_uvis"], Month(2012, 5)) == []
    assert archive.query(config.instruments["acs_wfc"], Month(2012, 3)) == []
    assert archive.query(config.instruments["wfc3_ir"], Month(2012, 3)) == []


def test_fetch_copies_without_touching_the_originals(library, tmp_path):
    root, config, expected = library
    archive = LocalArchive(root)
    datasets = archive.query(config.instruments["stis_ccd"], Month(2012, 3))
    before = {p.uri: (Path(p.uri).read_bytes(), os.stat(p.uri).st_mtime_ns) for d in datasets for p in d.products}
    files = archive.fetch(datasets, tmp_path / "work")
    for d in datasets:
        for p in d.products:
            dst = files[d.obs_id][p.suffix]
            assert dst == tmp_path / "work" / "mastDownload" / "HST" / d.obs_id / p.filename
            assert dst.read_bytes() == before[p.uri][0]
            assert dst.stat().st_ino != os.stat(p.uri).st_ino  # a copy, not a link
            with open(dst, "r+b") as fh:  # a later stage writing into its copy ...
                fh.seek(100)
                fh.write(b"X")
    for uri, (data, mtime) in before.items():  # ... leaves the user's files alone
        assert Path(uri).read_bytes() == data
        assert os.stat(uri).st_mtime_ns == mtime
    # a second fetch is cheap and keeps what is there
    again = archive.fetch(datasets, tmp_path / "work")
    assert again == files


def test_fetch_notices_a_vanished_file(library, tmp_path):
    root, config, _ = library
    archive = LocalArchive(root)
    datasets = archive.query(config.instruments["wfc3_uvis"], Month(2012, 4))
    victim = tmp_path / "gone.fits"
    ds = datasets[0]
    moved = ds.products[0].__class__(filename=ds.products[0].filename, suffix="FLT", size=ds.products[0].size,
                                     uri=str(victim))
    broken = ds.__class__(obs_id=ds.obs_id, instrument=ds.instrument, t_min=ds.t_min, exptime=ds.exptime,
                          products=(moved,))
    with pytest.raises(ArchiveError):
        archive.fetch([broken], tmp_path / "work")


def test_a_directory_without_files_of_the_instrument_is_a_usage_error(library, tmp_path, capsys):
    """An empty or wrong --archive used to store every month of the window as a month without
    darks, which a later run with the right directory then skipped."""
    from hstcosmicrays.cli import run_pipeline_main

    config = load_config()
    root = library[0]
    with pytest.raises(ValueError, match=r"no file of acs_wfc \(INSTRUME ACS, DETECTOR WFC\); its \d+ FITS "
                                         r"files are of STIS/CCD, WFC3/UVIS"):
        LocalArchive(root).check_instrument(config.instruments["acs_wfc"])
    LocalArchive(root).check_instrument(config.instruments["wfc3_uvis"])  # no error
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    args = ["--instr", "acs_hrc", "--archive", str(empty), "--start", "2005-01", "--stop", "2005-01",
            "--output", str(out)]
    assert run_pipeline_main(args) == 2
    assert "it holds no file named <rootname>_<suffix>.fits" in capsys.readouterr().err
    assert not (out / "acs_hrc.h5").exists()


def test_a_month_without_files_in_a_local_archive_is_named(library, tmp_path, caplog):
    from hstcosmicrays.cli import run_pipeline_main

    root = library[0]
    args = ["--instr", "wfc3_uvis", "--archive", str(root), "--start", "2012-05", "--stop", "2012-05",
            "--output", str(tmp_path), "--workers", "1"]
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        assert run_pipeline_main(args) == 0
    assert "wfc3_uvis 2012-05: no dark of the month in" in caplog.text
    assert "run again with --reprocess --start 2012-05 --stop 2012-05" in caplog.text


def test_a_product_found_twice_is_named_with_the_copy_used(library, tmp_path, caplog):
    """The same rootname and suffix in two folders (downloaded twice): the first path in sorted
    order is used, and a warning names every copy, so that a stale copy is not taken silently."""
    root, config, expected = library
    uvis = config.instruments["wfc3_uvis"]
    month = Month(2012, 3)
    first = expected[("wfc3_uvis", month)][0]
    src = next(p for p in (root / "mast").rglob(f"{first.obs_id}_flt.fits"))
    lib = tmp_path / "lib"
    shutil.copytree(root / "mast", lib / "a")
    (lib / "b").mkdir()
    shutil.copy(src, lib / "b" / src.name)
    with caplog.at_level("WARNING", logger="hstcosmicrays.archive.local"):
        found = LocalArchive(lib).query(uvis, month)
    used = {p.suffix: Path(p.uri) for d in found if d.obs_id == first.obs_id for p in d.products}
    assert used["FLT"].relative_to(lib).parts[0] == "a"
    warned = [r.getMessage() for r in caplog.records if "2 times" in r.getMessage()]
    assert len(warned) == 1
    assert f"{first.obs_id}_flt of 2012-03 is there 2 times (" in warned[0]  # not "of 2 times is there 2012-03"
    assert str(lib / "b" / src.name) in warned[0]
    assert warned[0].endswith(f"using {used['FLT']}")
    assert [d.obs_id for d in found] == [d.obs_id for d in expected[("wfc3_uvis", month)]]


def test_a_directory_says_whether_its_darks_are_simulated(library, tmp_path):
    """``source``: simulated when every file carries SIMULATE = T (as the simulator writes
    them), hst when none does, not known for both or none."""
    from astropy.io import fits

    root, _, _ = library
    flat = root / "stis_flat"
    assert LocalArchive(flat).source == "simulated"
    copy = tmp_path / "copy"
    shutil.copytree(flat, copy)
    files = sorted(copy.glob("*.fits"))
    fits.delval(files[0], "SIMULATE", ext=0)
    assert LocalArchive(copy).source == ""
    for f in files[1:]:
        fits.delval(f, "SIMULATE", ext=0)
    assert LocalArchive(copy).source == "hst"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert LocalArchive(empty).source == ""

"""The read API: tables as DataFrames, time windows, joins, lazy reading, rate series, rate map.

Test stores are written with the store's own writer (``ResultsStore.commit_month``) from
synthetic frames with a known truth: the simulator's rate model (``simulate.cr_rate``: base rate
x solar modulation(t) x SAA factor) averaged over each frame's orbit samples (real HST ground
tracks from ``orbit``), and Poisson-fluctuated CR counts. :func:`build_store` (frames at random
times, with a CR table) and :func:`build_truth_store` (the simulator's own schedule, a decade)
are shared with ``test_plots`` and ``test_notebooks``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import trapezoid

from hstcosmicrays import open_results, simulate
from hstcosmicrays import results as results_mod
from hstcosmicrays.intervals import Month
from hstcosmicrays.orbit import hst_positions, realistic_elements
from hstcosmicrays.results import bin_rate_map, mjd_to_datetime, summarize_rates, to_mjd
from hstcosmicrays.schema import empty_table
from hstcosmicrays.store import ResultsStore

OPEN = dict(software_version="0.1.0", config_hash="cafe")
AREA = {"wfc3_uvis": 37.804, "acs_wfc": 37.748, "acs_hrc": 4.624, "stis_ccd": 4.624}
READOUT = {"wfc3_uvis": 50.0, "acs_wfc": 50.0, "acs_hrc": 15.0, "stis_ccd": 15.0}


# ----------------------------------------------------------------------------------------------
# the injected truth: the simulator's solar modulation and SAA


def in_saa(lon, lat):
    """Inside the simulator's SAA contour."""
    return bool(simulate.saa_factor(lat, lon) > simulate.SAA_CONTOUR)


def month_frames(*, month: Month, instrument: str, n_frames: int, crs_per_frame: int, rng,
                 n_samples: int = 9):
    """One month of synthetic tables with their truth (true rate per frame), frames at random
    times: the simulator's rate model sampled at ``n_samples`` points of each exposure."""
    t0, t1 = month.mjd_start, month.mjd_stop
    exptime = rng.choice([500.0, 900.0, 1000.0], n_frames).astype(np.float32)
    t_int = exptime + READOUT[instrument]
    expstart = np.sort(rng.uniform(t0, t1 - 0.02, n_frames))
    expend = expstart + exptime / 86400.0
    frac = np.linspace(0.0, 1.0, n_samples)
    sample_mjd = (expstart[:, None] + (expend - expstart)[:, None] * frac).ravel()
    lat, lon, alt = hst_positions(elements=realistic_elements(epoch_mjd=t0, rng=rng), mjd=sample_mjd)
    true_rate = simulate.cr_rate(mjd=sample_mjd, lat=lat, lon=lon).reshape(n_frames, n_samples).mean(axis=1)
    n_cr = rng.poisson(true_rate * t_int * AREA[instrument])
    e = empty_table("exposures", n_frames)
    e["rootname"][:] = [f"i{month.year % 100:02d}{month.month:02d}{i:03d}q".encode() for i in range(n_frames)]
    e["month"][:] = month.label
    e["group_id"][:] = np.arange(n_frames) // 2
    e["method"][:] = b"crsplit"
    e["date_obs"][:] = [t.isoformat(timespec="milliseconds").encode() for t in mjd_to_datetime(expstart)]
    e["mjd"][:] = expstart
    e["expstart"][:] = expstart
    e["expend"][:] = expend
    e["exptime"][:] = exptime
    e["integration_time"][:] = t_int
    e["n_cr"][:] = n_cr
    e["rate"][:] = n_cr / t_int / AREA[instrument]
    e["rate_err"][:] = np.sqrt(n_cr) / t_int / AREA[instrument]
    e["ccdamp"][:] = b"ABCD"
    e["gain"][:] = 1.5
    e["hst_lat"][:] = lat.reshape(n_frames, n_samples).mean(axis=1)
    e["hst_lon"][:] = lon.reshape(n_frames, n_samples)[:, n_samples // 2]
    e["hst_alt"][:] = alt.reshape(n_frames, n_samples).mean(axis=1)
    o = empty_table("orbit", n_frames * n_samples)
    o["exposure_index"][:] = np.repeat(np.arange(n_frames), n_samples)
    o["mjd"][:] = sample_mjd
    o["lat"][:] = lat
    o["lon"][:] = lon
    o["alt"][:] = alt
    # a subsample of CR rows per frame with known morphology distributions
    n_rows = n_frames * crs_per_frame
    c = empty_table("cosmic_rays", n_rows)
    c["exposure_index"][:] = np.repeat(np.arange(n_frames), crs_per_frame)
    c["chip"][:] = rng.integers(1, 3, n_rows)
    c["read"][:] = -1
    c["x"][:] = rng.uniform(0, 4096, n_rows)
    c["y"][:] = rng.uniform(0, 2051, n_rows)
    c["n_pixels"][:] = 3 + rng.geometric(0.35, n_rows)
    c["size_sigma"][:] = rng.gamma(4.0, 0.18, n_rows)
    c["shape"][:] = rng.beta(2.0, 3.0, n_rows)
    c["energy"][:] = rng.lognormal(np.log(1200.0), 0.6, n_rows)
    return dict(exposures=e, cosmic_rays=c, orbit=o), true_rate


def months_between(first: str, last: str) -> list[Month]:
    y, m = map(int, first.split("-"))
    out = [Month(y, m)]
    while out[-1].label < last:
        out.append(out[-1].next())
    return out


def build_store(path, *, instrument="wfc3_uvis", first="2010-01", last="2010-06", frames_per_month=8,
                crs_per_frame=20, seed=1, failures_in=()):
    """Write a store month by month; return the truth as a DataFrame of frames (file order)."""
    rng = np.random.default_rng(seed)
    truth = []
    with ResultsStore.open(path, instrument=instrument, **OPEN) as store:
        for month in months_between(first, last):
            tables, true_rate = month_frames(month=month, instrument=instrument, n_frames=frames_per_month,
                                             crs_per_frame=crs_per_frame, rng=rng)
            failures = empty_table("failures", 0)
            if month.label in failures_in:
                failures = empty_table("failures", 1)
                failures["month"][:] = month.label
                failures["rootname"][:] = b"ibad01abq"
                failures["stage"][:] = b"read"
                failures["reason"][:] = b"truncated FITS file"
            store.commit_month(month=month.label, n_found=frames_per_month + len(failures["month"]),
                               started=time.time(), failures=failures, **tables)
            e = tables["exposures"]
            truth.append(pd.DataFrame({"mjd": e["mjd"], "rate": e["rate"], "true_rate": true_rate,
                                       "n_cr": e["n_cr"], "month": month.label}))
    return pd.concat(truth, ignore_index=True)


def build_truth_store(path, *, instrument="wfc3_uvis", first="2009-06", last="2021-05", darks_per_month=10,
                      seed=2021):
    """A store built from the simulator's truth, without pixels: the simulator's own schedule
    (``simulate.month_schedule``: CR-SPLIT sets, its share of SAA passes, a realistic orbit per
    month), the expected count :math:`\\bar N = \\mathcal{A}\\int R\\,dt` of ``simulate.cr_rate``
    over each frame's integration time (orbit sampled every 30 s, as the simulator does), a
    Poisson count, and orbit samples every 60 s over the exposure (as the pipeline stores them).

    Running the full pipeline over a decade of full-frame darks takes hours; the rate and map
    statistics depend only on these per-frame counts and positions. Returns the truth per frame.
    """
    from hstcosmicrays.config import load_config
    from hstcosmicrays.orbit import sample_times

    inst = load_config().instrument(instrument)
    rng = np.random.default_rng(seed)
    truth = []
    with ResultsStore.open(path, instrument=inst.name, **OPEN) as store:
        for month in months_between(first, last):
            specs = simulate.month_schedule(instrument=inst, month=month, seed=seed,
                                            darks_per_month=darks_per_month)
            if not specs:
                continue
            n = len(specs)
            e = empty_table("exposures", n)
            orbit_parts, expected = [], np.zeros(n)
            for i, sp in enumerate(specs):
                t_int = inst.integration_time(exptime=sp.exptime, flashdur=sp.flashdur)
                t = sample_times(expstart=sp.expstart, expend=sp.expstart + t_int / 86400.0, max_step=30.0)
                lat, lon, _ = hst_positions(elements=sp.elements, mjd=t)
                rate = simulate.cr_rate(mjd=t, lat=lat, lon=lon)
                expected[i] = inst.detector_area * trapezoid(rate, (t - t[0]) * 86400.0)
                ts = sample_times(expstart=sp.expstart, expend=sp.expend)
                slat, slon, salt = hst_positions(elements=sp.elements, mjd=ts)
                orbit_parts.append((np.full(len(ts), i), ts, slat, slon, salt))
                e["integration_time"][i] = t_int
            n_cr = rng.poisson(expected)
            t_int = e["integration_time"].astype(np.float64)
            e["rootname"][:] = [sp.obs_id for sp in specs]
            e["month"][:] = month.label
            e["group_id"][:] = [sp.set_index for sp in specs]
            e["method"][:] = b"crsplit"
            e["mjd"][:] = [sp.expstart for sp in specs]
            e["expstart"][:] = e["mjd"]
            e["expend"][:] = [sp.expend for sp in specs]
            e["exptime"][:] = [sp.exptime for sp in specs]
            e["flashdur"][:] = [sp.flashdur for sp in specs]
            e["n_cr"][:] = n_cr
            e["rate"][:] = n_cr / t_int / inst.detector_area
            e["rate_err"][:] = np.sqrt(n_cr) / t_int / inst.detector_area
            e["saa_exit"][:] = [sp.saa_exit for sp in specs]
            e["saa_time"][:] = [sp.saa_time for sp in specs]
            o = empty_table("orbit", sum(len(p[1]) for p in orbit_parts))
            for k, name in enumerate(("exposure_index", "mjd", "lat", "lon", "alt")):
                o[name][:] = np.concatenate([p[k] for p in orbit_parts])
            for i in range(n):
                sel = o["exposure_index"] == i
                e["hst_lat"][i] = o["lat"][sel].mean()
                e["hst_alt"][i] = o["alt"][sel].mean()
            store.commit_month(month=month.label, exposures=e, cosmic_rays=empty_table("cosmic_rays"), orbit=o,
                               n_found=n, started=time.time())
            truth.append(pd.DataFrame({"mjd": e["mjd"], "rate": e["rate"], "expected": expected,
                                       "true_rate": expected / t_int / inst.detector_area}))
    return pd.concat(truth, ignore_index=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "wfc3_uvis.h5"
    truth = build_store(path, failures_in=("2010-03",))
    return path, truth


# ----------------------------------------------------------------------------------------------
# opening and plain tables


def test_open_by_path_name_and_alias(small, tmp_path):
    path, _ = small
    assert open_results(path).instrument == "wfc3_uvis"
    assert open_results("wfc3_uvis", output_dir=path.parent).path == path
    assert open_results("WFC3/UVIS", output_dir=path.parent).path == path
    with pytest.raises(FileNotFoundError):
        open_results("acs_wfc", output_dir=path.parent)
    with pytest.raises(FileNotFoundError):
        open_results(tmp_path / "nothing.h5")


def test_a_renamed_store_of_another_instrument_is_refused_by_name(small, tmp_path, capsys):
    import shutil

    from hstcosmicrays.cli import main
    from hstcosmicrays.store import StoreError

    path, _ = small
    shutil.copy(path, tmp_path / "acs_wfc.h5")
    with pytest.raises(StoreError, match="holds the results of wfc3_uvis, not acs_wfc"):
        open_results("acs_wfc", output_dir=tmp_path)
    assert open_results(tmp_path / "acs_wfc.h5").instrument == "wfc3_uvis"  # by path: what it holds
    assert main(["status", "--instr", "acs_wfc", "--output", str(tmp_path)]) == 1
    assert "holds the results of wfc3_uvis, not acs_wfc" in capsys.readouterr().err


def test_exposures_all_rows_decoded_and_indexed(small):
    path, truth = small
    exp = open_results(path).exposures()
    assert len(exp) == len(truth)
    assert exp.index.name == "exposure_index"
    assert exp.index.to_list() == list(range(len(truth)))
    assert exp["month"].to_list() == truth["month"].to_list()
    assert isinstance(exp["rootname"].iloc[0], str) and exp["rootname"].iloc[0].startswith("i10")
    np.testing.assert_allclose(exp["rate"], truth["rate"], rtol=1e-6)
    # the derived date column is the MJD as a UTC datetime
    assert exp["date"].iloc[0].year == 2010
    np.testing.assert_allclose([to_mjd(d) for d in exp["date"].iloc[:5]], exp["mjd"].iloc[:5], atol=1e-9)


def test_a_year_given_as_a_number_is_refused_not_read_as_an_mjd(small):
    """stop=2012 would be MJD 2012 (in 1864) and select nothing, silently."""
    res = open_results(small[0])
    with pytest.raises(ValueError, match="2012 looks like a year.*'2012-01-01'"):
        res.exposures(stop=2012)
    assert to_mjd(0) == 0.0 and to_mjd(55927) == 55927.0 and to_mjd(2012.5) == 2012.5
    assert len(res.exposures(start=0)) == len(res.exposures())


def test_exposures_time_window_is_half_open_and_exact(small):
    path, truth = small
    res = open_results(path)
    start, stop = "2010-02-10", dt.date(2010, 4, 20)
    exp = res.exposures(start=start, stop=stop, columns=["mjd", "month"])
    t0, t1 = to_mjd(start), to_mjd(stop)
    expected = truth.index[(truth["mjd"] >= t0) & (truth["mjd"] < t1)]
    assert exp.index.to_list() == expected.to_list()
    assert list(exp.columns) == ["mjd", "month"]
    # a frame exactly at stop is excluded, exactly at start included
    first_mjd = float(truth["mjd"].iloc[10])
    assert res.exposures(stop=first_mjd).index.max() == 9
    assert res.exposures(start=first_mjd).index.min() == 10


def test_exposures_where_on_columns_not_returned(small):
    path, truth = small
    exp = open_results(path).exposures(columns=["rootname"], where="rate > 3 and exptime >= 900")
    exp_all = open_results(path).exposures()
    expected = exp_all[(exp_all["rate"] > 3) & (exp_all["exptime"] >= 900)]
    assert list(exp.columns) == ["rootname"]
    assert exp.index.to_list() == expected.index.to_list()
    assert len(exp) > 0


def test_where_on_the_derived_date_works_with_any_columns(small, monkeypatch):
    """``date`` is derived from ``mjd``: ``where`` may name it whatever ``columns`` asks for, and
    it is dropped afterwards unless asked for; eagerly, lazily and in chunks."""
    path, truth = small
    res = open_results(path)
    where = "date >= '2010-03-01' and date < '2010-05-01'"
    t0, t1 = to_mjd("2010-03-01"), to_mjd("2010-05-01")
    expected = truth.index[(truth["mjd"] >= t0) & (truth["mjd"] < t1)].to_list()
    for columns, out in ((["rate"], ["rate"]), ([], []), (["date"], ["date"]), (None, None)):
        exp = res.exposures(columns=columns, where=where)
        assert exp.index.to_list() == expected and len(expected) == 16
        assert list(exp.columns) == (out if out is not None else list(res.exposures().columns))
    assert list(res.exposures(columns=["rate"], where=where, start="2010-04-01").columns) == ["rate"]
    orb_all = res.orbit()
    orb_expected = orb_all[(orb_all["mjd"] >= t0) & (orb_all["mjd"] < t1)]
    orb = res.orbit(columns=["lat"], where=where)
    assert list(orb.columns) == ["lat"] and orb.index.equals(orb_expected.index)
    joined = res.orbit(columns=["lat"], where=where, exposure_columns=["rate"], start="2010-01-01")
    assert list(joined.columns) == ["lat", "rate"] and joined.index.equals(orb_expected.index)
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 64)  # several partitions
    lazy = res.orbit(columns=["lat"], where=where, lazy=True)
    assert lazy.npartitions > 1 and list(lazy.columns) == ["lat"]
    pd.testing.assert_frame_equal(lazy.compute(), orb)
    assert sum(len(p) for p in res.iter_chunks("orbit", columns=["lat"], where=where, rows=64)) == len(orb)


def test_unknown_column_is_an_error(small):
    path, _ = small
    with pytest.raises(KeyError, match="no column"):
        open_results(path).exposures(columns=["bogus"])
    with pytest.raises(KeyError, match="no column"):
        open_results(path).cosmic_rays(columns=["date"])


def test_months_and_failures(small):
    path, truth = small
    res = open_results(path)
    months = res.months()
    assert months["month"].to_list() == sorted(truth["month"].unique())
    assert set(months["state"]) == {"committed"}
    assert months["n_processed"].sum() == len(truth)
    assert months["finished"].dt.year.min() >= 2024
    fails = res.failures()
    assert fails.to_dict("records") == [
        {"month": "2010-03", "rootname": "ibad01abq", "stage": "read", "reason": "truncated FITS file"}]


# ----------------------------------------------------------------------------------------------
# cosmic rays and orbit


def test_cosmic_rays_join_and_time_window(small):
    path, truth = small
    res = open_results(path)
    crs = res.cosmic_rays()
    assert crs.index.name == "cr_index" and len(crs) == len(truth) * 20
    exp = res.exposures()
    joined = crs.join(exp[["month"]], on="exposure_index")
    assert joined["month"].notna().all()
    win = res.cosmic_rays(start="2010-03-01", stop="2010-05-01", columns=["energy"],
                          exposure_columns=["month", "mjd"])
    assert set(win["month"]) == {"2010-03", "2010-04"}
    assert len(win) == 2 * 8 * 20
    assert list(win.columns) == ["energy", "month", "mjd"]
    np.testing.assert_array_equal(win["energy"].to_numpy(), crs.loc[win.index, "energy"].to_numpy())


def test_where_on_an_exposure_column_suggests_exposure_columns(small):
    """``month`` is a column of exposures, not of cosmic_rays: the error says how to attach it."""
    path, _ = small
    res = open_results(path)
    for lazy in (False, True):
        with pytest.raises(KeyError, match=r"month is a column of exposures, not of cosmic_rays: "
                                           r"attach with exposure_columns=\['month'\]"):
            res.cosmic_rays(where="month == '2010-01'", lazy=lazy)
    with pytest.raises(KeyError, match=r"exposure_columns=\['date'\] and query date as exposure_date"):
        res.cosmic_rays(columns=["energy"], where="date < '2010-02-01'")
    with pytest.raises(KeyError, match=r"rate is a column of exposures, not of orbit: "):
        res.orbit(where="rate > 1 and mjd > 0")
    # a name of no table: a KeyError that lists the table's columns, as for columns=
    with pytest.raises(KeyError, match="bogus.*where names no such column of cosmic_rays; its columns: .*energy"):
        res.cosmic_rays(where="bogus > 1")
    with pytest.raises(KeyError, match="rat.*no such column of exposures; its columns: .*rate.*, date"):
        res.exposures(where="rat > 1")
    # a query pandas cannot parse (text not quoted, an operator mistyped): named, with an example
    for read in (lambda w: res.exposures(where=w), lambda w: res.cosmic_rays(where=w, lazy=True).compute(),
                 lambda w: next(res.iter_chunks("months", where=w))):
        for where in ("month == 2010-01", "energy >>> 5"):
            with pytest.raises(ValueError, match=rf"^where {where!r} is not a valid query \(invalid syntax\); "
                                                 r".*\"month == '2012-01'\""):
                read(where)
    # attached, the column can be queried
    jan = res.cosmic_rays(columns=["energy"], where="month == '2010-01'", exposure_columns=["month"])
    assert len(jan) == 8 * 20 and set(jan["month"]) == {"2010-01"}


def test_the_shape_column_is_read_by_item_as_documented(small):
    """``crs.shape`` is the DataFrame's; the docs say to use ``crs["shape"]``."""
    path, _ = small
    crs = open_results(path).cosmic_rays(columns=["energy", "shape"])
    assert crs.shape == (len(crs), 2)
    assert crs["shape"].between(0.0, 1.0).all()
    assert 'crs["shape"]' in results_mod.Results.cosmic_rays.__doc__


def test_cosmic_rays_where_and_lazy_equal_eager(small, monkeypatch):
    path, _ = small
    res = open_results(path)
    eager = res.cosmic_rays(columns=["n_pixels", "energy"], where="n_pixels > 5 and chip == 1",
                            start="2010-02-01")
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 128)  # force many partitions
    lazy = res.cosmic_rays(columns=["n_pixels", "energy"], where="n_pixels > 5 and chip == 1",
                           start="2010-02-01", lazy=True)
    assert lazy.npartitions > 5
    computed = lazy.compute()
    assert list(computed.columns) == ["n_pixels", "energy"]
    pd.testing.assert_frame_equal(computed, eager)
    assert (eager["n_pixels"] > 5).all() and len(eager) > 0
    # a lazy reduction without materialising the table
    assert int(lazy["n_pixels"].sum().compute()) == int(eager["n_pixels"].sum())


def test_an_eager_query_read_in_pieces_equals_the_whole_selection_filtered(small, monkeypatch):
    """With ``where``, an eager read filters one piece at a time (memory: a piece and the rows
    kept); the rows, their order, index and dtypes are those of the whole selection filtered,
    also when no row or a single piece is kept, and with exposure columns attached."""
    path, _ = small
    res = open_results(path)
    whole = res.cosmic_rays(exposure_columns=["month"], start="2010-02-01")
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 64)  # many pieces
    for where in ("n_pixels > 5 and chip == 1", "month == '2010-04'", "energy < 0", "n_pixels >= 0"):
        got = res.cosmic_rays(exposure_columns=["month"], start="2010-02-01", where=where)
        expected = whole.query(where)
        pd.testing.assert_frame_equal(got, expected, check_index_type=True)
        assert got.index.name == "cr_index"
    assert len(res.cosmic_rays(where="energy < 0")) == 0 and len(whole) > 5 * 64
    orbit_whole = res.orbit(exposure_columns=["rate"])
    pd.testing.assert_frame_equal(res.orbit(exposure_columns=["rate"], where="lat > 10"),
                                  orbit_whole.query("lat > 10"))


def test_an_eager_read_larger_than_the_memory_available_is_refused_before_reading(small, monkeypatch):
    """A read whose DataFrame, twice over (READ_PEAK_FACTOR), exceeds the memory available is
    a MemoryError naming the store, the rows and the ways out, raised before any row is read;
    lazy tables, queries (read piece by piece) and smaller selections are read as before."""
    path, _ = small
    res = open_results(path)
    crs = res.cosmic_rays()
    need = results_mod.READ_PEAK_FACTOR * len(crs) * (crs.memory_usage(deep=True).sum() / len(crs))
    read_part = results_mod._read_part

    def no_read(*args, **kwargs):
        raise AssertionError("rows were read")

    monkeypatch.setattr(results_mod, "_read_part", no_read)
    monkeypatch.setattr(results_mod, "available_memory", lambda: int(need) - 1)
    with pytest.raises(MemoryError, match=rf"^{path}: reading {len(crs):,} rows of cosmic_rays \(exposure_index, "
                                          r"chip, .*\) at once needs about .* GB of memory, .*lazy=True"):
        res.cosmic_rays()
    monkeypatch.setattr(results_mod, "_read_part", read_part)
    assert len(res.cosmic_rays(columns=["energy"])) == len(crs)   # a fraction of the bytes: fits
    assert len(res.cosmic_rays(lazy=True).compute()) == len(crs)
    assert len(res.cosmic_rays(where="n_pixels >= 0")) == len(crs)
    monkeypatch.setattr(results_mod, "available_memory", lambda: int(need))
    assert len(res.cosmic_rays()) == len(crs)
    monkeypatch.setattr(results_mod, "available_memory", lambda: None)  # not known: not checked
    assert len(res.cosmic_rays()) == len(crs)


def test_the_memory_estimate_of_a_read_is_the_dataframes_size():
    """Numeric and date columns exactly as pandas counts them (index included); text columns at
    64 bytes a row, whatever pandas' string dtype."""
    meta = pd.DataFrame({"x": np.zeros(0, np.float32), "n": np.zeros(0, np.int64),
                         "d": pd.to_datetime(np.zeros(0, np.int64))}, index=pd.RangeIndex(0, name="i"))
    frame = pd.DataFrame({"x": np.zeros(1000, np.float32), "n": np.ones(1000, np.int64),
                          "d": pd.to_datetime(np.arange(1000), unit="s")},
                         index=pd.Index(np.arange(1000, dtype=np.int64), name="i"))
    assert 1000 * results_mod._row_bytes(meta) == frame.memory_usage(deep=True).sum() == 1000 * (4 + 8 + 8 + 8)
    text = pd.DataFrame({"m": pd.Series([], dtype=object), "s": pd.Series([], dtype="string")})
    assert results_mod._row_bytes(text) == 2 * 64 + text.index.dtype.itemsize


def test_available_memory_is_what_linux_reports():
    available = results_mod.available_memory()
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        assert available is None
        return
    total = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:"))) * 1024
    assert 0 < available <= total


def _fake_memory_system(tmp_path, *, cgroup: str, groups: dict[str, dict[str, str]]):
    """``meminfo``, ``cgroup`` and ``cgroup_root`` of :func:`available_memory` in ``tmp_path``:
    16 GiB available, the process's groups as ``cgroup``, and each group directory (relative
    to the root) with the files given."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {32 << 20} kB\nMemAvailable:   {16 << 20} kB\n")
    (tmp_path / "cgroup").write_text(cgroup)
    root = tmp_path / "sys"
    for directory, files in groups.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / directory / name).write_text(text)
    return dict(meminfo=meminfo, cgroup=tmp_path / "cgroup", cgroup_root=root)


GIB = 1 << 30


def test_available_memory_is_within_a_cgroup_v2_limit(tmp_path):
    """A pod or job limit of 4 GiB with 3 GiB used, 1 GiB of it inactive file cache: 2 GiB, not
    the 16 GiB the system has; a parent's tighter limit wins; ``max`` is no limit."""
    stat = f"anon {2 * GIB}\nfile {GIB}\nactive_file 0\ninactive_file {GIB}\n"
    kw = _fake_memory_system(tmp_path, cgroup="0::/job/step\n", groups={
        "": {"memory.max": "max"},   # the root has no limit files in reality; max is none either
        "job": {"memory.max": str(8 * GIB), "memory.current": str(3 * GIB), "memory.stat": stat},
        "job/step": {"memory.max": str(4 * GIB), "memory.current": str(3 * GIB), "memory.stat": stat},
    })
    assert results_mod.available_memory(**kw) == 2 * GIB
    (tmp_path / "sys" / "job" / "memory.max").write_text(str(3 * GIB))    # the job's is tighter
    assert results_mod.available_memory(**kw) == GIB
    for level in ("job", "job/step"):
        (tmp_path / "sys" / level / "memory.max").write_text("max\n")
    assert results_mod.available_memory(**kw) == 16 * GIB
    (tmp_path / "sys" / "job" / "memory.max").write_text(str(GIB))        # used more than the limit
    (tmp_path / "sys" / "job" / "memory.stat").unlink()                   # and no stat: all counted
    assert results_mod.available_memory(**kw) == 0


def test_available_memory_in_another_cgroup_namespace_reads_the_root(tmp_path):
    """A container's own group is the root of what it sees: the path in /proc/self/cgroup is
    not under the mount, so the root's files are read."""
    kw = _fake_memory_system(tmp_path, cgroup="0::/kubepods/pod1/abc\n", groups={
        "": {"memory.max": str(6 * GIB), "memory.current": str(GIB), "memory.stat": "inactive_file 0\n"},
    })
    assert results_mod.available_memory(**kw) == 5 * GIB


def test_available_memory_is_within_a_cgroup_v1_limit(tmp_path):
    """cgroup v1 (and the hybrid layout, with a v2 hierarchy without memory files): the memory
    controller's limit, usage and hierarchical ``total_inactive_file``; other controllers and
    an unlimited limit (v1 writes a huge number) change nothing."""
    unlimited = "9223372036854771712\n"
    kw = _fake_memory_system(tmp_path, cgroup="12:cpu,cpuacct:/slurm/job_7\n4:memory:/slurm/job_7\n"
                                               "1:name=systemd:/\n0::/\n", groups={
        "memory": {"memory.limit_in_bytes": unlimited, "memory.usage_in_bytes": str(20 * GIB),
                   "memory.stat": "total_inactive_file 0\n"},
        "memory/slurm/job_7": {"memory.limit_in_bytes": str(10 * GIB), "memory.usage_in_bytes": str(9 * GIB),
                               "memory.stat": f"inactive_file 0\ntotal_inactive_file {3 * GIB}\n"},
        "cpu,cpuacct/slurm/job_7": {"memory.limit_in_bytes": "1"},   # not a memory controller
        "": {"cgroup.controllers": "cpu io\n"},
    })
    assert results_mod.available_memory(**kw) == 4 * GIB


def test_available_memory_without_cgroups_or_meminfo(tmp_path):
    kw = _fake_memory_system(tmp_path, cgroup="", groups={})
    (tmp_path / "cgroup").unlink()
    assert results_mod.available_memory(**kw) == 16 * GIB      # no cgroup file: the system's
    (tmp_path / "meminfo").unlink()
    assert results_mod.available_memory(**kw) is None          # not Linux: not known, not checked


def test_histogram_with_a_number_of_bins_is_numpys(small, monkeypatch):
    """``bins=10`` means numpy's: ten equal bins over the data range, accumulated in pieces."""
    path, _ = small
    res = open_results(path)
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 256)  # several pieces
    for table, column, where in (("cosmic_rays", "energy", None), ("cosmic_rays", "n_pixels", "chip == 1"),
                                 ("exposures", "rate", None), ("orbit", "lat", "date >= '2010-02-01'")):
        values = getattr(res, table)(columns=[column], where=where)[column].to_numpy(np.float64)
        counts, edges = res.histogram(column, bins=10, table=table, where=where)
        expected_counts, expected_edges = np.histogram(values, bins=10)
        np.testing.assert_allclose(edges, expected_edges, rtol=1e-12)
        np.testing.assert_array_equal(counts, expected_counts)
        assert counts.sum() == len(values) > 0
    # explicit edges as before; nothing selected: numpy's range (0, 1)
    counts, edges = res.histogram("energy", bins=[0.0, 1e3, 1e9])
    assert counts.sum() == len(res.cosmic_rays(columns=[]))
    counts, edges = res.histogram("energy", bins=4, where="energy < 0")
    assert counts.tolist() == [0, 0, 0, 0] and edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (0, -3, [1.0], [2.0, 1.0]):
        with pytest.raises(ValueError, match="bins must be"):
            res.histogram("energy", bins=bad)
    with pytest.raises(ValueError, match="rootname is a text column of exposures; numeric columns: .*rate"):
        res.histogram("rootname", table="exposures", bins=5)


def test_histograms_of_several_columns_read_each_piece_once(small, monkeypatch):
    """``histograms`` gives what ``histogram`` gives column by column (explicit edges and a
    number of bins, with a where clause), reading each piece once for all the columns (twice
    with a number of bins); progress counts the file rows read, from 0 to the total."""
    path, _ = small
    res = open_results(path)
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 256)  # several pieces
    bins = {"energy": [0.0, 500.0, 2e3, 1e9], "n_pixels": 7, "shape": np.linspace(0, 1, 5)}
    where = "chip == 1"
    alone = {column: res.histogram(column, bins=spec, where=where) for column, spec in bins.items()}
    rows = len(res.cosmic_rays(columns=[]))
    reads = []
    read_part = results_mod._read_part

    def counted(*args, **kwargs):
        reads.append(1)
        return read_part(*args, **kwargs)

    monkeypatch.setattr(results_mod, "_read_part", counted)
    res.histogram("energy", bins=bins["energy"], where=where)
    pieces = len(reads)                                        # the pieces one column is read in
    reads.clear()
    calls = []
    together = res.histograms(bins, where=where, progress=lambda done, total: calls.append((done, total)))
    assert list(together) == list(bins)
    for column in bins:
        np.testing.assert_array_equal(together[column][0], alone[column][0])
        np.testing.assert_array_equal(together[column][1], alone[column][1])
        assert together[column][0].sum() > 0
    assert pieces >= rows / 256 > 2 and len(reads) == 2 * pieces   # bins=7: a pass for the range, one to count
    assert calls[0] == (0, 2 * rows) and calls[-1] == (2 * rows, 2 * rows)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 1 + 2 * pieces
    reads.clear()
    calls.clear()
    res.histograms({"energy": bins["energy"], "shape": bins["shape"]},
                   progress=lambda done, total: calls.append((done, total)))
    assert len(reads) == pieces and calls[-1] == (rows, rows)
    with pytest.raises(ValueError, match="name one or more columns"):
        res.histograms({})


def test_chunked_reads_take_exposure_columns_as_the_where_hint_says(small, tmp_path):
    """A where on a column of exposures is refused with the hint to attach it with
    exposure_columns=; histogram, histograms, iter_chunks and export take that argument, and
    select what cosmic_rays selects with it."""
    path, _ = small
    res = open_results(path)
    cut = float(res.exposures(columns=["rate"])["rate"].median())
    where = f"rate > {cut}"
    with pytest.raises(KeyError, match=r"attach with exposure_columns=\['rate'\]"):
        res.histogram("energy", bins=[0.0, 1e3, 1e9], where=where)
    chosen = res.cosmic_rays(columns=["energy"], exposure_columns=["rate"], where=where)
    assert 0 < len(chosen) < len(res.cosmic_rays(columns=[]))
    edges = [0.0, 500.0, 2e3, 1e9]
    counts, _ = res.histogram("energy", bins=edges, exposure_columns=["rate"], where=where)
    np.testing.assert_array_equal(counts, np.histogram(chosen["energy"].to_numpy(), edges)[0])
    both = res.histograms({"energy": edges, "n_pixels": 5}, exposure_columns=["rate"], where=where)
    np.testing.assert_array_equal(both["energy"][0], counts)
    assert both["n_pixels"][0].sum() == len(chosen)
    pieces = list(res.iter_chunks("cosmic_rays", columns=["energy"], exposure_columns=["rate"], where=where,
                                  rows=100))
    assert sum(len(p) for p in pieces) == len(chosen)
    n = res.export(table="cosmic_rays", fmt="csv", out=tmp_path / "saa.csv", columns=["energy"],
                   exposure_columns=["mjd", "rate"], where=where)
    written = pd.read_csv(tmp_path / "saa.csv")
    assert n == len(chosen) == len(written) and list(written.columns) == ["cr_index", "energy", "mjd", "rate"]
    assert (written["rate"] > cut).all()
    with pytest.raises(ValueError, match="exposure_columns attaches columns of exposures to cosmic_rays and "
                                         "orbit, not to the exposures table"):
        res.histogram("rate", table="exposures", bins=3, exposure_columns=["mjd"])


def test_a_stop_before_the_start_and_unknown_cleaning_options_are_named(small):
    """Rather than nothing selected, or pandas' and astropy's words without the choices."""
    path, _ = small
    res = open_results(path)
    for read in (res.exposures, res.cosmic_rays, res.orbit):
        with pytest.raises(ValueError, match=r"^stop '2010-01-01' is before start '2010-03-01'$"):
            read(start="2010-03-01", stop="2010-01-01")
    assert len(res.exposures(start="2010-02-01", stop="2010-02-01")) == 0      # empty, but not reversed
    with pytest.raises(ValueError, match="stdfunc must be 'std' or 'mad_std', not 'mad'"):
        res.rate_series(stdfunc="mad")
    with pytest.raises(ValueError, match="freq 'monthly' is not a pandas period alias; e.g. 'MS' monthly"):
        res.rate_series(freq="monthly")
    assert len(res.rate_series(stdfunc="mad_std", freq="QS")) > 0


def test_orbit_samples_carry_exposure_rate(small):
    path, truth = small
    orb = open_results(path).orbit(exposure_columns=["rate", "mjd"])
    assert orb.index.name == "sample_index"
    # the orbit table has its own mjd; the exposure's is prefixed
    assert {"mjd", "exposure_mjd", "rate", "lat", "lon", "date"} <= set(orb.columns)
    np.testing.assert_allclose(orb["rate"], truth["rate"].to_numpy()[orb["exposure_index"]], rtol=1e-6)
    assert (orb["mjd"] >= orb["exposure_mjd"] - 1e-9).all()
    assert orb["lat"].abs().max() < 29.0


def test_reprocessed_month_replaces_rows_and_joins_stay_right(tmp_path):
    path = tmp_path / "wfc3_uvis.h5"
    build_store(path, first="2011-01", last="2011-03", frames_per_month=4, crs_per_frame=3)
    rng = np.random.default_rng(7)
    tables, _ = month_frames(month=Month(2011, 2), instrument="wfc3_uvis", n_frames=2, crs_per_frame=5, rng=rng)
    tables["cosmic_rays"]["energy"][:] = 777.0
    with ResultsStore.open(path, instrument="wfc3_uvis", **OPEN) as store:
        store.commit_month(month="2011-02", n_found=2, started=time.time(), **tables)
    res = open_results(path)
    exp = res.exposures()
    assert (exp["month"] == "2011-02").sum() == 2 and len(exp) == 10
    crs = res.cosmic_rays(exposure_columns=["month"])
    feb = crs[crs["month"] == "2011-02"]
    assert len(feb) == 10 and (feb["energy"] == 777.0).all()
    assert set(crs["exposure_index"]) <= set(exp.index)
    assert res.months().set_index("month").loc["2011-02", "n_processed"] == 2


def test_rows_are_in_file_order_as_documented_not_time_order_after_a_reprocess(tmp_path):
    """A reprocessed month's rows come last in the file, and the tables keep file order (the
    index is the file row, which the joins need); the docstring says so and shows the sort."""
    path = tmp_path / "wfc3_uvis.h5"
    build_store(path, first="2011-01", last="2011-03", frames_per_month=4, crs_per_frame=3)
    rng = np.random.default_rng(8)
    tables, _ = month_frames(month=Month(2011, 2), instrument="wfc3_uvis", n_frames=3, crs_per_frame=2, rng=rng)
    with ResultsStore.open(path, instrument="wfc3_uvis", **OPEN) as store:
        store.commit_month(month="2011-02", n_found=3, started=time.time(), **tables)
    res = open_results(path)
    exp = res.exposures()
    assert exp["month"].to_list() == ["2011-01"] * 4 + ["2011-03"] * 4 + ["2011-02"] * 3
    assert exp.index.is_monotonic_increasing and not exp["mjd"].is_monotonic_increasing
    assert res.cosmic_rays().index.is_monotonic_increasing
    in_time = exp.sort_values("mjd")
    assert in_time["month"].is_monotonic_increasing
    assert 'sort_values("mjd")' in results_mod.Results.exposures.__doc__
    assert "file order" in results_mod.Results.exposures.__doc__ and "file order" in results_mod.__doc__


def test_reads_follow_a_writer(tmp_path):
    path = tmp_path / "wfc3_uvis.h5"
    build_store(path, first="2012-01", last="2012-02", frames_per_month=3, crs_per_frame=2)
    res = open_results(path)
    assert len(res.exposures()) == 6
    rng = np.random.default_rng(3)
    with ResultsStore.open(path, instrument="wfc3_uvis", **OPEN) as store:
        tables, _ = month_frames(month=Month(2012, 3), instrument="wfc3_uvis", n_frames=3, crs_per_frame=2, rng=rng)
        store.commit_month(month="2012-03", n_found=3, started=time.time(), **tables)
        # the same Results object sees the new month on the next call
        assert len(res.exposures()) == 9
        assert len(res.cosmic_rays()) == 18
    # rows appended without a ledger row (a commit in progress) stay invisible
    import h5py

    with h5py.File(path, "r+", libver="latest") as f:
        for name, ds in f["cosmic_rays"].items():
            ds.resize((ds.shape[0] + 100,))
    assert len(res.cosmic_rays()) == 18
    assert len(res.cosmic_rays(lazy=True).compute()) == 18


def _store_with_a_reprocessed_first_month(path):
    """Four months, the first committed again (its new rows last): compaction renumbers every row."""
    build_store(path, first="2011-01", last="2011-04", frames_per_month=4, crs_per_frame=3,
                failures_in=("2011-01", "2011-02", "2011-03"))
    rng = np.random.default_rng(9)
    tables, _ = month_frames(month=Month(2011, 1), instrument="wfc3_uvis", n_frames=4, crs_per_frame=3, rng=rng)
    with ResultsStore.open(path, instrument="wfc3_uvis", **OPEN) as store:
        store.commit_month(month="2011-01", n_found=4, started=time.time(), **tables)


def _compact(path):
    with ResultsStore.open(path, instrument="wfc3_uvis", **OPEN) as store:
        store.compact()


def test_a_lazy_table_planned_before_a_compaction_is_refused_not_read_from_other_rows(tmp_path):
    """A compaction puts a file with renumbered rows in the store's place: the row ranges of a
    lazy DataFrame planned before it name other rows there (here the CRs of 2011-04 for those
    of 2011-03, with the March rootnames attached). Computing it must fail, naming the cause."""
    from hstcosmicrays.store import StoreError

    path = tmp_path / "wfc3_uvis.h5"
    _store_with_a_reprocessed_first_month(path)
    res = open_results(path)
    window = dict(start="2011-03-01", stop="2011-04-01", exposure_columns=["rootname"])
    expected = res.cosmic_rays(**window).reset_index(drop=True)
    lazy = res.cosmic_rays(lazy=True, **window)
    _compact(path)
    with pytest.raises(StoreError, match="rewritten .*compact.*read it again"):
        lazy.compute()
    again = res.cosmic_rays(**window).reset_index(drop=True)
    pd.testing.assert_frame_equal(again.drop(columns="exposure_index"), expected.drop(columns="exposure_index"))


@pytest.mark.parametrize("read", ["exposures", "cosmic_rays", "failures"])
def test_a_read_during_a_compaction_gives_the_rows_of_one_snapshot(tmp_path, monkeypatch, read):
    """A compaction between a call's ledger snapshot and its rows: the call reads again from
    the new file, rather than reading its old ranges in the renumbered one."""
    from hstcosmicrays import store as store_mod

    path = tmp_path / "wfc3_uvis.h5"
    _store_with_a_reprocessed_first_month(path)
    res = open_results(path)
    kwargs = {} if read == "failures" else dict(start="2011-02-01", stop="2011-03-01")
    expected = getattr(res, read)(**kwargs)
    real = store_mod.visible_ranges
    compacted = []

    def snapshot_then_compaction(*args, **kw):
        out = real(*args, **kw)
        if not compacted:  # once: the compaction lands between the first snapshot and its rows
            compacted.append(True)
            _compact(path)
        return out

    monkeypatch.setattr(store_mod, "visible_ranges", snapshot_then_compaction)
    got = getattr(res, read)(**kwargs)
    assert compacted
    drop = [c for c in ("exposure_index",) if c in got.columns]
    pd.testing.assert_frame_equal(got.drop(columns=drop).reset_index(drop=True),
                                  expected.drop(columns=drop).reset_index(drop=True))


# ----------------------------------------------------------------------------------------------
# rate series


def test_summarize_rates_matches_astropy_and_formulas():
    from astropy.stats import sigma_clip

    rng = np.random.default_rng(11)
    jan = to_mjd("2015-01-01") + rng.uniform(0, 31, 40)
    feb = to_mjd("2015-02-01") + rng.uniform(0, 28, 30)
    mjd = np.concatenate([jan, feb])
    rate = np.concatenate([rng.normal(1.5, 0.1, 40), rng.normal(1.2, 0.1, 30)])
    rate[3] = 40.0     # an SAA frame: clipped
    rate[45] = 0.1     # below the 0.2 floor: dropped before clipping
    err = np.sqrt(rate * 900 * 37.8) / 900 / 37.8
    series = summarize_rates(mjd=mjd, rate=rate, rate_err=err)
    assert series.index.to_list() == [pd.Timestamp("2015-01-01"), pd.Timestamp("2015-02-01")]
    for label, sel in (("2015-01-01", slice(0, 40)), ("2015-02-01", slice(40, 70))):
        r, e = rate[sel], err[sel]
        e = e[r > 0.2]
        r = r[r > 0.2]
        kept = ~sigma_clip(r, sigma=3, maxiters=5, cenfunc="median", stdfunc="std").mask
        row = series.loc[label]
        assert row["n_frames"] == len(r) and row["count"] == kept.sum()
        assert row["mean"] == pytest.approx(r[kept].mean())
        assert row["median"] == pytest.approx(np.median(r[kept]))
        assert row["q25"] == pytest.approx(np.percentile(r[kept], 25))
        assert row["scatter_err"] == pytest.approx(r[kept].std(ddof=1) / np.sqrt(kept.sum()))
        assert row["poisson_err"] == pytest.approx(np.sqrt(np.sum(e[kept] ** 2)) / kept.sum())
    assert series.loc["2015-01-01", "count"] == 39          # the 40 CR/s/cm^2 frame is gone
    assert series.loc["2015-02-01", "n_frames"] == 29       # the 0.1 frame is gone
    # without clipping the outlier stays in the mean
    raw = summarize_rates(mjd=mjd, rate=rate, rate_err=err, clip_sigma=0)
    assert raw.loc["2015-01-01", "mean"] > series.loc["2015-01-01", "mean"] + 0.5
    yearly = summarize_rates(mjd=mjd, rate=rate, rate_err=err, freq="YS")
    assert len(yearly) == 1 and yearly["n_frames"].iloc[0] == 69


def test_summarize_rates_empty_and_gaps():
    empty = summarize_rates(mjd=[], rate=[], rate_err=[])
    assert len(empty) == 0 and "mean" in empty.columns
    mjd = [to_mjd("2015-01-05"), to_mjd("2015-04-05")]
    s = summarize_rates(mjd=mjd, rate=[1.0, 2.0], rate_err=[0.1, 0.1])
    # months without frames are left out rather than NaN
    assert len(s) == 2 and np.isnan(s["std"]).all()


def test_rate_series_of_a_store(small):
    path, truth = small
    series = open_results(path).rate_series()
    assert len(series) == 6
    assert series["n_frames"].sum() == (truth["rate"] > 0.2).sum()
    jan = truth[truth["month"] == "2010-01"]
    assert series["n_frames"].iloc[0] == (jan["rate"] > 0.2).sum()
    assert (series["q25"] <= series["median"]).all() and (series["median"] <= series["q75"]).all()


# ----------------------------------------------------------------------------------------------
# rate map


def test_bin_rate_map_known_values():
    lon = np.array([-179.0, -175.0, 5.0, 5.0, 365.0, 10.0])
    lat = np.array([-20.0, -21.0, 1.0, 2.0, 1.0, 50.0])   # 50 deg lies outside the grid
    rate = np.array([2.0, 4.0, 1.0, 3.0, 5.0, 99.0])
    m = bin_rate_map(lon=lon, lat=lat, rate=rate, lon_bin=10, lat_bin=5)
    assert m.mean.shape == (14, 36) and m.count.sum() == 5
    assert m.mean[(-20 + 35) // 5, 0] == pytest.approx(2.0)        # -20 is in [-20, -15)
    assert m.mean[(-25 + 35) // 5, 0] == pytest.approx(4.0)
    assert m.mean[7, 18] == pytest.approx((1.0 + 3.0 + 5.0) / 3)    # 365 deg wraps to 5 deg
    assert m.peak() == (-175.0, -22.5)                               # the single 4.0 sample
    assert m.peak(min_count=3) == (5.0, 2.5)
    with pytest.raises(ValueError):
        bin_rate_map(lon=lon, lat=lat, rate=rate, lon_bin=7)


@pytest.mark.parametrize("name, width", [("lon_bin", 0), ("lon_bin", -10.0), ("lon_bin", float("nan")),
                                         ("lat_bin", 0), ("lat_bin", -5.0), ("lat_bin", float("inf"))])
def test_rate_map_refuses_a_bin_width_that_is_not_positive(small, monkeypatch, name, width):
    """A zero width divided by zero; the error names the argument, before the store is read."""
    path, _ = small
    with pytest.raises(ValueError, match=f"^{name} must be a positive bin width in deg, not"):
        bin_rate_map(lon=[0.0], lat=[0.0], rate=[1.0], **{name: width})

    def no_read(*args, **kwargs):
        raise AssertionError("read the store before checking the bins")

    monkeypatch.setattr(results_mod.Results, "orbit", no_read)
    with pytest.raises(ValueError, match=f"^{name} must be"):
        open_results(path).rate_map(**{name: width})


def test_to_mjd_inputs():
    assert to_mjd("1970-01-01") == 40587.0
    assert to_mjd(dt.date(2000, 1, 1)) == 51544.0
    assert to_mjd(dt.datetime(2000, 1, 1, 12, tzinfo=dt.timezone.utc)) == 51544.5
    assert to_mjd(pd.Timestamp("2000-01-01T12:00", tz="US/Eastern")) == pytest.approx(51544.5 + 5 / 24)
    assert to_mjd(55000) == 55000.0 and to_mjd(None) is None
    with pytest.raises(ValueError):
        to_mjd("not a date")
    assert mjd_to_datetime([51544.25])[0] == pd.Timestamp("2000-01-01T06:00")


# ----------------------------------------------------------------------------------------------
# export


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip_in_pieces(small, tmp_path, monkeypatch, fmt):
    path, _ = small
    res = open_results(path)
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 100)
    out = tmp_path / f"crs.{fmt}"
    n = res.export(table="cosmic_rays", fmt=fmt, out=out, start="2010-02-01")
    expected = res.cosmic_rays(start="2010-02-01").reset_index()
    assert n == len(expected) == 5 * 8 * 20
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(back.columns) == list(expected.columns)
    np.testing.assert_array_equal(back["cr_index"], expected["cr_index"])
    np.testing.assert_allclose(back["energy"], expected["energy"], rtol=1e-6)
    exp_out = tmp_path / f"exp.{fmt}"
    assert res.export(table="exposures", fmt=fmt, out=exp_out) == 48
    back = pd.read_csv(exp_out) if fmt == "csv" else pd.read_parquet(exp_out)
    assert back["rootname"].iloc[0] == res.exposures()["rootname"].iloc[0]
    assert not list(tmp_path.glob("*.part"))


def test_export_tells_its_progress_in_file_rows_read(small, tmp_path, monkeypatch):
    """progress(done, total) starts at 0, never goes back, and ends at the file rows of the
    selection, which a where clause reads in full and writes in part."""
    path, _ = small
    res = open_results(path)
    monkeypatch.setattr(results_mod, "PARTITION_ROWS", 100)
    total = len(res.cosmic_rays(columns=["x"]))
    for where, out in ((None, "all.csv"), ("n_pixels > 5", "big.csv")):
        calls = []
        n = res.export(table="cosmic_rays", fmt="csv", out=tmp_path / out, where=where,
                       progress=lambda done, rows: calls.append((done, rows)))
        assert calls[0] == (0, total) and calls[-1] == (total, total) and {t for _, t in calls} == {total}
        done = [d for d, _ in calls]
        assert done == sorted(done) and len(calls) >= 1 + total // 100
        assert n == (total if where is None else len(res.cosmic_rays(columns=["x"], where=where))) > 0
    assert n < total
    calls = []
    assert res.export(table="months", fmt="csv", out=tmp_path / "m.csv",
                      progress=lambda done, rows: calls.append((done, rows))) == len(res.months())
    assert calls == [(0, len(res.months())), (len(res.months()), len(res.months()))]


def test_cli_export(small, tmp_path, capsys):
    from hstcosmicrays.cli import main

    path, truth = small
    out = tmp_path / "orbit.csv"
    assert main(["-q", "export", "--instr", "wfc3uvis", "--table", "orbit", "--format", "csv",
                 "--out", str(out), "--output", str(path.parent)]) == 0
    assert f"wrote {len(truth) * 9} rows of orbit" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == len(truth) * 9


def test_cli_export_and_compact_draw_a_progress_bar_on_a_terminal_only(small, tmp_path, capsys, monkeypatch):
    """On a terminal, export and compact draw a bar on standard error (gone when the work ends,
    the result line on standard output as always); with -q, or off a terminal, none."""
    import shutil
    import sys

    from hstcosmicrays.cli import main

    path, truth = small
    shutil.copy(path, tmp_path / path.name)
    base = ["--output", str(tmp_path)]
    export = ["export", "--instr", "wfc3uvis", "--table", "orbit", "--out", str(tmp_path / "o.csv")] + base
    compact = ["compact", "--instr", "wfc3uvis"] + base
    assert main(export) == 0 and main(compact) == 0
    off_terminal = capsys.readouterr()
    assert "%|" not in off_terminal.err and "MB ->" in off_terminal.out
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(export) == 0
    out, err = capsys.readouterr()
    # tqdm draws at most every 0.1 s: the first state, then the line is cleared
    assert "exporting orbit:   0%|" in err and f"/{len(truth) * 9} [" in err
    assert err.endswith("\r") and out == f"wrote {len(truth) * 9} rows of orbit to {tmp_path / 'o.csv'}\n"
    assert main(compact) == 0
    out, err = capsys.readouterr()
    assert "compacting:   0%|" in err and err.endswith("\r") and "MB ->" in out
    assert main(["-q"] + export) == 0 and main(compact + ["-q"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_export_format_follows_the_out_suffix_and_refuses_a_contradiction(small, tmp_path, capsys):
    """Without --format the suffix decides; a .csv/.parquet name with the other --format is a usage
    error naming both, before anything is written."""
    from hstcosmicrays.cli import main

    path, truth = small
    base = ["-q", "export", "--instr", "wfc3uvis", "--table", "exposures", "--output", str(path.parent)]
    assert main(base + ["--out", str(tmp_path / "exp.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "exp.parquet")) == len(truth)
    assert main(base + ["--out", str(tmp_path / "exp.CSV")]) == 0
    assert len(pd.read_csv(tmp_path / "exp.CSV")) == len(truth)
    assert main(base + ["--format", "csv", "--out", str(tmp_path / "exp.txt")]) == 0
    assert len(pd.read_csv(tmp_path / "exp.txt")) == len(truth)
    capsys.readouterr()
    for fmt, name in (("parquet", "x.csv"), ("csv", "x.parquet")):
        assert main(base + ["--format", fmt, "--out", str(tmp_path / name)]) == 2
        other = "csv" if fmt == "parquet" else "parquet"
        assert capsys.readouterr().err == (
            f"hstcosmicrays export: error: --format {fmt} contradicts --out {tmp_path / name} (a .{other} file name)\n")
    assert main(base + ["--out", str(tmp_path / "x.dat")]) == 2
    assert capsys.readouterr().err == (
        f"hstcosmicrays export: error: --out {tmp_path / 'x.dat'}: expected a .csv or .parquet file name, "
        "or give --format\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.CSV", "exp.parquet", "exp.txt"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_months_and_failures(small, tmp_path, capsys, fmt):
    from hstcosmicrays.cli import main

    path, _ = small
    res = open_results(path)
    for table, expected in (("months", res.months()), ("failures", res.failures())):
        out = tmp_path / f"{table}.{fmt}"
        assert main(["-q", "export", "--instr", "wfc3uvis", "--table", table, "--out", str(out),
                     "--output", str(path.parent)]) == 0
        rows = "1 row" if len(expected) == 1 else f"{len(expected)} rows"  # failures: one
        assert f"wrote {rows} of {table} to {out}" in capsys.readouterr().out
        back = pd.read_csv(out, dtype={"month": str}) if fmt == "csv" else pd.read_parquet(out)
        assert list(back.columns) == list(expected.columns)
        assert back["month"].tolist() == expected["month"].tolist()
    assert back["reason"].tolist() == ["truncated FITS file"]
    assert res.export(table="months", fmt=fmt, out=tmp_path / f"m.{fmt}", where="month == '2010-03'",
                      columns=["month", "state"]) == 1
    with pytest.raises(ValueError, match="start and stop do not apply to the months table"):
        res.export(table="months", fmt=fmt, out=tmp_path / f"m.{fmt}", start="2010-01-01")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_export_of_no_rows_writes_the_columns(small, tmp_path, capsys, fmt):
    """cosmic_rays or orbit with no row (an empty store, a window of no month) wrote nothing and
    ended with '<out>: No such file or directory' (its temporary file was never made)."""
    from hstcosmicrays.cli import main
    from hstcosmicrays.store import ResultsStore

    path, _ = small
    res = open_results(path)
    for table in ("cosmic_rays", "orbit"):
        out = tmp_path / f"{table}.{fmt}"
        assert res.export(table=table, fmt=fmt, out=out, start="2030-01-01") == 0
        back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert len(back) == 0
        assert list(back.columns) == list(getattr(res, table)(start="2030-01-01").reset_index().columns)
    assert [len(piece) for piece in res.iter_chunks("orbit", stop="2000-01-01")] == [0]
    with ResultsStore.open(tmp_path / "empty" / "acs_hrc.h5", instrument="acs_hrc", software_version="0",
                           config_hash="x"):
        pass
    out = tmp_path / f"empty.{fmt}"
    assert main(["-q", "export", "--instr", "acs_hrc", "--table", "cosmic_rays", "--out", str(out),
                 "--output", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == f"wrote 0 rows of cosmic_rays to {out}\n"
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(back) == 0 and list(back.columns)[:3] == ["cr_index", "exposure_index", "chip"]


def test_export_to_a_directory_is_refused_before_the_work(small, tmp_path, capsys):
    """--out naming an existing directory: one line naming it, exit 2, the directory untouched."""
    from hstcosmicrays.cli import main

    path, _ = small
    target = tmp_path / "data_products"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="data_products"):
        open_results(path).export(table="exposures", fmt="csv", out=target)
    assert main(["export", "--instr", "wfc3uvis", "--table", "exposures", "--format", "csv",
                 "--out", str(target), "--output", str(path.parent)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == f"hstcosmicrays export: error: --out {target}: is a directory; expected a file name"
    assert "wrote" not in captured.out
    # without --format too: it is a directory, not a file name of the wrong suffix
    assert main(["export", "--instr", "wfc3uvis", "--table", "exposures", "--out", str(target),
                 "--output", str(path.parent)]) == 2
    assert capsys.readouterr().err.strip() == err
    assert target.is_dir() and list(target.iterdir()) == [] and list(tmp_path.iterdir()) == [target]


def test_cli_export_reports_the_file_once(small, tmp_path, capsys):
    """At the default verbosity the export is reported by one line, not a log line as well."""
    from hstcosmicrays.cli import main

    path, _ = small
    out = tmp_path / "exposures.csv"
    assert main(["export", "--instr", "wfc3uvis", "--table", "exposures", "--format", "csv",
                 "--out", str(out), "--output", str(path.parent)]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if str(out) in ln]
    assert len(lines) == 1 and lines[0].startswith("wrote "), lines


# ----------------------------------------------------------------------------------------------
# acceptance: a solar cycle of simulated WFC3/UVIS darks


@pytest.fixture(scope="module")
def decade(tmp_path_factory):
    """2009-06 to 2020-05 (one 11-year cycle), 30 darks a month, built by :func:`build_truth_store`
    from the simulator's schedule and rate model (not through the pixel pipeline: see there)."""
    path = tmp_path_factory.mktemp("decade") / "wfc3_uvis.h5"
    truth = build_truth_store(path, first="2009-06", last="2020-05", darks_per_month=30)
    return path, truth


@pytest.mark.slow
def test_acceptance_rate_series_recovers_the_injected_solar_cycle(decade):
    path, truth = decade
    series = open_results(path).rate_series()
    assert len(series) == 132 and series["n_frames"].sum() == len(truth)
    injected = simulate.solar_modulation(series["mjd"].to_numpy())
    for stat in ("mean", "median"):
        r = np.corrcoef(series[stat], injected)[0, 1]
        assert r > 0.9, f"{stat}: correlation {r:.3f}"
    # the amplitude and the quiet rate come back too: median = R0 (1 + a cos(...))
    c1, c0 = np.polyfit((injected - 1.0) / simulate.SOLAR_AMPLITUDE, series["median"], 1)
    assert c1 / c0 == pytest.approx(simulate.SOLAR_AMPLITUDE, abs=0.02)
    assert c0 == pytest.approx(simulate.BASE_RATE, rel=0.03)
    # the clipping removes the frames that crossed the SAA: the kept frames are quiet
    crossed = truth["true_rate"] > 1.5 * simulate.BASE_RATE * simulate.solar_modulation(truth["mjd"])
    # the simulator schedules about 8 % of frames across the SAA edge, half of them above 1.5x
    assert crossed.sum() > 0.03 * len(truth)
    assert (series["n_frames"] - series["count"]).sum() >= 0.8 * crossed.sum()


@pytest.mark.slow
def test_acceptance_map_peak_lies_in_the_injected_saa(decade):
    path, _ = decade
    rmap = open_results(path).rate_map(lon_bin=10, lat_bin=5)
    lon, lat = rmap.peak(min_count=5)
    assert in_saa(lon, lat), (lon, lat)
    # bins whose centre is far from the SAA sit at the quiet rate
    centres_lon, centres_lat = np.meshgrid(0.5 * (rmap.lon_edges[1:] + rmap.lon_edges[:-1]),
                                           0.5 * (rmap.lat_edges[1:] + rmap.lat_edges[:-1]))
    far = (np.abs((centres_lon + 45 + 180) % 360 - 180) > 120) & (rmap.count >= 5)
    assert far.sum() > 20
    assert np.median(rmap.mean[far]) == pytest.approx(simulate.BASE_RATE, rel=0.1)
    assert rmap.mean[far].max() < simulate.BASE_RATE * (1 + simulate.SOLAR_AMPLITUDE)
    # the simulator keeps every frame's mean SAA factor at most 4, so SAA bins reach a few times
    # the quiet rate, not the SAA's peak factor
    assert np.nanmax(rmap.mean) > 2 * simulate.BASE_RATE


def test_open_results_names_the_missing_store_and_an_unknown_instrument(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store at .*acs_wfc.h5$"):
        open_results("ACS/WFC", output_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="unknown instrument 'acswfcx'; valid instruments: acs_hrc"):
        open_results("acswfcx", output_dir=tmp_path)


def test_open_results_of_a_directory_names_its_stores(small, tmp_path, monkeypatch):
    """A directory is not a store: say so, and list the stores it holds (or that it holds none)."""
    import shutil

    path, _ = small
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^{empty} is a directory with no results store"):
        open_results(empty)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(path, out / "wfc3_uvis.h5")
    shutil.copy(path, out / "acs_wfc.h5")
    (out / "notes.txt").write_text("not a store")
    with pytest.raises(IsADirectoryError, match=f"^{out} is a directory, not a results store; it holds "
                                                "acs_wfc.h5, wfc3_uvis.h5: open one of them"):
        open_results(str(out))
    # a relative path that is also an alias once its punctuation is gone is a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uvis").mkdir()
    with pytest.raises(IsADirectoryError, match="^uvis is a directory with no results store"):
        open_results("./uvis")
    # an instrument name is still an instrument name when a directory of that name is at hand
    monkeypatch.chdir(out)
    (out / "wfc3_uvis").mkdir()
    (out / "stis_ccd").mkdir()
    assert open_results("wfc3_uvis", output_dir=out).path == out / "wfc3_uvis.h5"
    with pytest.raises(FileNotFoundError, match="no results store at .*stis_ccd.h5$"):
        open_results("stis_ccd", output_dir=out)


def test_open_results_refuses_a_truncated_store_at_once(tmp_path):
    """In SWMR-read mode HDF5 hung for ever on a truncated file; the read runs in a subprocess
    with a timeout so that a regression cannot hang the test suite."""
    import subprocess
    import sys

    good = tmp_path / "wfc3_uvis.h5"
    with ResultsStore.open(good, instrument="wfc3_uvis", **OPEN) as store:
        store.record_month_failure(month="2012-01", error="MAST down", started=0.0)
    bad = tmp_path / "bad" / "wfc3_uvis.h5"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    code = ("import sys\nfrom hstcosmicrays import open_results\nfrom hstcosmicrays.store import StoreError\n"
            "try:\n    open_results(sys.argv[1]).months()\nexcept StoreError as exc:\n    print(exc)\n")
    for path, expected in ((good, ""), (bad, f"{bad} is damaged")):
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(expected) and ("truncated" in proc.stdout) == (path == bad)

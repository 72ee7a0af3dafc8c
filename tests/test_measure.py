"""Tests of measure: per-chip CRs, rates, schema, orbit positions and their failure modes, CLI."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from astropy.io import fits

from hstcosmicrays import cli
from hstcosmicrays.config import load_config
from hstcosmicrays.frames import read_chips, read_header
from hstcosmicrays.labels import label_crs
from hstcosmicrays.measure import measure_file, measure_frame, month_of
from hstcosmicrays.orbit import realistic_elements
from hstcosmicrays.schema import COSMIC_RAYS, EXPOSURES, ORBIT, as_table

SIDEREAL_DAY = 86164.0905  # s


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def uvis(config):
    return config.instrument("wfc3_uvis")


EXPSTART = 55429.5  # 2010-08-21T12:00:00


def write_flt(path, *, chips, exptime=900.0, bunit="ELECTRONS", ccdamp="ABCD", gains=(1.5, 1.5, 1.5, 1.5),
              flashdur=None, saa=True):
    """An FLT-like WFC3/UVIS file; ``chips`` maps EXTVER -> (sci, dq)."""
    ph = fits.Header()
    for k, v in {
        "ROOTNAME": "IBXX01AAQ", "INSTRUME": "WFC3", "DETECTOR": "UVIS", "EXPTIME": exptime,
        "EXPSTART": EXPSTART, "EXPEND": EXPSTART + exptime / 86400, "DATE-OBS": "2010-08-21",
        "TIME-OBS": "12:00:00", "CCDAMP": ccdamp, "CCDGAIN": 1.5,
    }.items():
        ph[k] = v
    if flashdur is not None:
        ph["FLASHDUR"] = flashdur
    if saa:
        ph["SAA_EXIT"], ph["SAA_TIME"] = "2010.233:11:00:00", 3600  # day 233 = Aug 21
    for a, g in zip("ABCD", gains):
        ph[f"ATODGN{a}"], ph[f"READNSE{a}"] = g, 3.1
    hdus = [fits.PrimaryHDU(header=ph)]
    for ev, (sci, dq) in chips.items():
        sh = fits.Header()
        sh["BUNIT"], sh["CCDCHIP"] = bunit, {1: 2, 2: 1}[ev]
        sh["CTYPE1"], sh["CTYPE2"] = "RA---TAN", "DEC--TAN"
        sh["CRPIX1"], sh["CRPIX2"] = 10.0, 10.0
        sh["CRVAL1"], sh["CRVAL2"] = 12.5, 45.0
        # y axis 30 deg east of north (no ORIENTAT keyword: taken from the CD matrix)
        c, s = 1e-5 * math.cos(math.radians(30)), 1e-5 * math.sin(math.radians(30))
        sh["CD1_1"], sh["CD1_2"], sh["CD2_1"], sh["CD2_2"] = -c, s, s, c
        hdus += [fits.ImageHDU(sci.astype(np.float32), header=sh, name="SCI", ver=ev),
                 fits.ImageHDU(np.ones_like(sci, dtype=np.float32), name="ERR", ver=ev),
                 fits.ImageHDU(dq.astype(np.int16), name="DQ", ver=ev)]
    fits.HDUList(hdus).writeto(path)


def write_spt(path, *, elements=None, drop=None):
    h = fits.Header()
    if elements is not None:
        for key, value, comment in elements.to_cards():
            if key != drop:
                h[key] = (value, comment)
    fits.PrimaryHDU(header=h).writeto(path)


def seam_frame(shape=(6, 10)):
    """Two chips with 3-pixel CRs on the last row of chip 1 and the first row of chip 2: they would
    touch if the chips were stacked (as the original code did)."""
    sci1 = np.zeros(shape)
    sci2 = np.zeros(shape)
    dq1 = np.zeros(shape, np.int16)
    dq2 = np.zeros(shape, np.int16)
    dq1[-1, 2:5] = 8192
    sci1[-1, 2:5] = [100.0, 200.0, 100.0]
    dq2[0, 3:6] = 8192
    sci2[0, 3:6] = [50.0, 50.0, 50.0]
    return {1: (sci1, dq1), 2: (sci2, dq2)}


def test_chips_are_labelled_separately(tmp_path, uvis):
    p = tmp_path / "ibxx01aaq_flt.fits"
    frame = seam_frame()
    write_flt(p, chips=frame)
    # stacked, the two CRs would merge into one
    assert label_crs(dq=np.vstack([frame[1][1], frame[2][1]]), max_pixels=100)[1] == 1
    header = read_header(p, instrument=uvis)
    res = measure_frame(header=header, chips=read_chips(p, instrument=uvis), instrument=uvis,
                        spt_path=None, method="given", group_id=-1, month="2010-08")
    cr = res.cosmic_rays
    assert res.n_cr == 2
    assert list(cr["chip"]) == [1, 2] and list(cr["n_pixels"]) == [3, 3]
    assert list(cr["energy"]) == [400.0, 150.0]
    assert list(cr["x"]) == [3.0, 4.0] and list(cr["y"]) == [5.0, 0.0]
    assert list(cr["read"]) == [-1, -1]


def test_rate_fraction_and_schema(tmp_path, uvis):
    rng = np.random.default_rng(3)
    shape = (60, 80)
    chips = {}
    for ev in (1, 2):
        dq = np.zeros(shape, np.int16)
        sci = rng.normal(0, 3, shape)
        for k in range(10 * ev):  # 10 CRs on chip 1, 20 on chip 2, 4 pixels each, well separated
            r, c = 3 + 5 * (k // 8), 3 + 9 * (k % 8)
            dq[r, c:c + 4] = 8192
            sci[r, c:c + 4] += 500.0
        chips[ev] = (sci, dq)
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=chips, exptime=1000.0, flashdur=12.0)
    header = read_header(p, instrument=uvis)
    res = measure_frame(header=header, chips=read_chips(p, instrument=uvis), instrument=uvis,
                        spt_path=None, method="crsplit", group_id=4, month="2010-08")
    e = res.exposure
    assert e["n_cr"] == 30
    t = 1000.0 + 12.0 + uvis.readout_time
    assert e["integration_time"] == t
    # subarray: the area searched is the detector area times the fraction of its pixels read
    area = uvis.detector_area * (2 * 60 * 80) / (2 * uvis.chip_shape[0] * uvis.chip_shape[1])
    assert e["rate"] == pytest.approx(30 / t / area, rel=1e-12)
    assert e["rate_err"] == pytest.approx(math.sqrt(30) / t / area, rel=1e-12)
    assert e["fraction_hit"] == pytest.approx(120 / (2 * 60 * 80))
    assert (e["ra"], e["dec"]) == pytest.approx((12.5, 45.0))
    assert e["orientat"] == pytest.approx(30.0)
    assert e["saa_time"] == 3600.0 and e["saa_exit"] == pytest.approx(EXPSTART - 0.5 + 11 / 24, abs=1e-8)
    assert e["group_id"] == 4 and e["method"] == "crsplit" and e["gain"] == 1.5
    assert tuple(e) == tuple(c.name for c in EXPOSURES)
    # the dicts go straight into the store's tables
    as_table("exposures", {k: [v] for k, v in e.items()})
    n = len(res.cosmic_rays["x"])
    as_table("cosmic_rays", {**res.cosmic_rays, "exposure_index": np.zeros(n, "i8")})
    assert set(res.cosmic_rays) == {c.name for c in COSMIC_RAYS} - {"exposure_index"}
    assert set(res.orbit) == {c.name for c in ORBIT} - {"exposure_index"}
    for c in COSMIC_RAYS[1:]:
        assert res.cosmic_rays[c.name].dtype == np.dtype(c.dtype)
    df = res.cosmic_ray_frame()
    assert len(df) == 30 and np.allclose(df["energy"], 2000.0, rtol=0.05)
    assert len(res.exposure_frame()) == 1 and "30" in res.summary_text()


def test_dn_file_energies_use_the_gain_and_border_is_excluded(tmp_path, uvis):
    shape = (30, 40)
    sci, dq = np.zeros(shape), np.zeros(shape, np.int16)
    dq[10, 10:13] = 8192
    sci[10, 10:13] = 100.0   # DN
    dq[0, 20:23] = 8192      # on the edge row
    sci[0, 20:23] = 100.0
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips={2: (sci, dq)}, bunit="DN", ccdamp="A", gains=(2.0, 1.0, 1.0, 1.0))
    header = read_header(p, instrument=uvis)
    chips = read_chips(p, instrument=uvis)
    res = measure_frame(header=header, chips=chips, instrument=uvis, spt_path=None, method="given",
                        group_id=-1, month="2010-08")
    assert list(res.cosmic_rays["energy"]) == [600.0, 600.0]  # 3 x 100 DN x 2 e-/DN
    bordered = dataclasses.replace(uvis, border=1)
    res = measure_frame(header=header, chips=chips, instrument=bordered, spt_path=None,
                        method="given", group_id=-1, month="2010-08")
    assert res.n_cr == 1 and res.cosmic_rays["y"][0] == 10.0
    assert res.exposure["fraction_hit"] == pytest.approx(3 / (28 * 38))


def test_missing_or_bad_spt_gives_nan_and_warning(tmp_path, uvis):
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=seam_frame())
    header = read_header(p, instrument=uvis)
    chips = read_chips(p, instrument=uvis)
    garbage = tmp_path / "garbage_spt.fits"
    garbage.write_bytes(b"\x00not fits at all" * 50)
    nokey = tmp_path / "nokey_spt.fits"
    write_spt(nokey, elements=realistic_elements(epoch_mjd=EXPSTART, rng=np.random.default_rng(1)), drop="ECCENTRY")
    for spt, expect in [(None, "no SPT"), (tmp_path / "absent_spt.fits", "unreadable"),
                        (garbage, "unreadable"), (nokey, "ECCENTRY")]:
        res = measure_frame(header=header, chips=chips, instrument=uvis, spt_path=spt, method="given",
                            group_id=-1, month="2010-08")
        assert res.n_cr == 2  # the frame is still measured
        e = res.exposure
        assert math.isnan(e["hst_lat"]) and math.isnan(e["hst_lon"]) and math.isnan(e["hst_alt"])
        assert all(len(v) == 0 for v in res.orbit.values())
        assert len(res.warnings) == 1 and expect in res.warnings[0]


def test_hst_positions_over_one_orbit(tmp_path, uvis):
    elements = realistic_elements(epoch_mjd=EXPSTART, rng=np.random.default_rng(11))
    period = elements.period
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=seam_frame(), exptime=period)
    spt = tmp_path / "ibxx01aaq_spt.fits"
    write_spt(spt, elements=elements)
    header = read_header(p, instrument=uvis)
    res = measure_frame(header=header, chips=read_chips(p, instrument=uvis), instrument=uvis,
                        spt_path=spt, method="given", group_id=-1, month="2010-08")
    assert res.warnings == ()
    o = res.orbit
    mjd = o["mjd"]
    assert mjd[0] == header.expstart and mjd[-1] == header.expend
    assert np.max(np.diff(mjd)) * 86400 <= 60.0 + 1e-6 and len(mjd) >= 5
    assert np.all((o["alt"] > 500) & (o["alt"] < 600))
    assert np.all(np.abs(o["lat"]) <= 28.6)
    assert np.ptp(o["lat"]) > 50  # a whole orbit reaches both turning latitudes
    # over one orbit the sub-satellite point goes once round, less the Earth's rotation
    dlon = np.unwrap(np.radians(o["lon"].astype(float)))
    moved = math.degrees(dlon[-1] - dlon[0])
    assert moved == pytest.approx(360.0 - 360.0 * period / SIDEREAL_DAY, abs=1.0)
    e = res.exposure
    assert e["hst_lat"] == pytest.approx(np.mean(o["lat"]), abs=1e-4)
    assert 500 < e["hst_alt"] < 600


def test_hst_lon_is_a_circular_mean(tmp_path, uvis):
    # find a short exposure whose track crosses the +-180 deg meridian; the mean must be near 180
    elements = realistic_elements(epoch_mjd=EXPSTART, rng=np.random.default_rng(5))
    from hstcosmicrays.orbit import hst_positions

    t = EXPSTART + np.arange(0, 2 * 86400, 30) / 86400
    _, lon, _ = hst_positions(elements=elements, mjd=t)
    i = int(np.flatnonzero((lon[:-1] > 170) & (lon[1:] < -170))[0])
    start = t[i] - 120 / 86400
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=seam_frame(), exptime=240.0)
    spt = tmp_path / "ibxx01aaq_spt.fits"
    write_spt(spt, elements=elements)
    header = dataclasses.replace(read_header(p, instrument=uvis), expstart=start, expend=start + 240 / 86400)
    res = measure_frame(header=header, chips=read_chips(p, instrument=uvis), instrument=uvis,
                        spt_path=spt, method="given", group_id=-1, month="2010-08")
    assert abs(abs(res.exposure["hst_lon"]) - 180.0) < 10.0
    assert np.any(res.orbit["lon"] > 0) and np.any(res.orbit["lon"] < 0)


def test_measure_file_and_cli(tmp_path, config, capsys):
    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=seam_frame())
    write_spt(tmp_path / "ibxx01aaq_spt.fits", elements=realistic_elements(epoch_mjd=EXPSTART, rng=np.random.default_rng(2)))
    res = measure_file(p, config=config)
    assert res.exposure["month"] == month_of(EXPSTART) == "2010-08"
    assert res.exposure["method"] == "given" and res.exposure["group_id"] == -1
    assert res.n_cr == 2 and res.warnings == () and 500 < res.exposure["hst_alt"] < 600
    out = tmp_path / "crs.csv"
    assert cli.main(["measure", str(p), "--out", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 2 and list(table["energy"]) == [400.0, 150.0]
    frame = pd.read_csv(tmp_path / "crs_frame.csv")
    assert frame["n_cr"][0] == 2 and frame["rootname"][0] == "ibxx01aaq"
    assert "CRs: 2" in capsys.readouterr().out
    # a file that is not FITS is a usage error naming the file
    bad = tmp_path / "bad_flt.fits"
    bad.write_text("nope")
    assert cli.main(["measure", str(bad)]) == 2
    assert "bad_flt.fits" in capsys.readouterr().err


def test_measure_parquet_output_holds_the_csv_output(tmp_path):
    """--out x.parquet writes the same two tables as --out x.csv (the per-CR table and the frame
    summary beside it)."""
    import pandas as pd

    p = tmp_path / "ibxx01aaq_flt.fits"
    write_flt(p, chips=seam_frame())
    write_spt(tmp_path / "ibxx01aaq_spt.fits", elements=realistic_elements(epoch_mjd=EXPSTART, rng=np.random.default_rng(2)))
    for suffix in (".csv", ".parquet"):
        assert cli.main(["measure", str(p), "--out", str(tmp_path / f"crs{suffix}")]) == 0
    for name in ("crs", "crs_frame"):
        csv = pd.read_csv(tmp_path / f"{name}.csv")
        parquet = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv) > 0
        for column in csv.columns:
            if pd.api.types.is_numeric_dtype(csv[column]):
                np.testing.assert_allclose(parquet[column].to_numpy(float), csv[column].to_numpy(float), rtol=1e-6)
            else:
                assert parquet[column].astype(str).tolist() == csv[column].astype(str).tolist()


# ---------------------------------------------------------------------------------------------
# against the truth of simulated full-frame WFC3/UVIS darks, after CR-SPLIT rejection


def _simulated_pair(tmp_path_factory, *, exptime: float, seed: int):
    """A simulated full-frame WFC3/UVIS CR-SPLIT pair, rejected with crreject.reject_stack and
    measured with measure_frame, as the pipeline does. Returns per frame
    (instrument, result, truth frame, truth CRs, flagged chips)."""
    from hstcosmicrays import crreject, simulate
    from hstcosmicrays.intervals import Month

    inst0 = load_config().instrument("wfc3_uvis")
    inst = dataclasses.replace(inst0, simulation=dataclasses.replace(inst0.simulation, exptime=exptime))
    specs = simulate.month_schedule(instrument=inst, month=Month(2012, 3), seed=seed, darks_per_month=2)
    assert len(specs) == 2 and specs[0].set_index == specs[1].set_index  # one CR-SPLIT pair
    out = tmp_path_factory.mktemp(f"uvis{exptime:g}")
    paths = [simulate.write_dataset(instrument=inst, spec=s, out_dir=out / s.obs_id) for s in specs]
    headers = [read_header(p["FLT"], instrument=inst) for p in paths]
    frames = [read_chips(p["FLT"], instrument=inst) for p in paths]
    assert frames[0][0].sci.shape == tuple(inst.chip_shape)
    params = crreject.params_for_stack(instrument=inst, n_images=2, mean_exptime=headers[0].exptime)
    masks = crreject.reject_stack(frames=frames, headers=headers, params=params, instrument=inst)
    out_frames = []
    for p, h, chips, m in zip(paths, headers, frames, masks):
        flagged = tuple(dataclasses.replace(c, dq=c.dq | (mk.astype(c.dq.dtype) * inst.dq_cr))
                        for c, mk in zip(chips, m))
        res = measure_frame(header=h, chips=flagged, instrument=inst, spt_path=p["SPT"], method="crsplit",
                            group_id=0, month="2012-03")
        truth_frame, truth_crs = simulate.read_truth(p["TRUTH"])
        out_frames.append((inst, res, truth_frame, truth_crs, flagged))
    return out_frames


def _match(inst, truth_crs, chips):
    """Truth CRs the truth marks detectable (``n_pixels`` >= 3 above its 5-sigma threshold, fewer
    than max_cr_pixels) and the label of the measured CR at each one's true centroid."""
    from scipy import ndimage

    det = truth_crs[(truth_crs.n_pixels >= 3) & (truth_crs.n_pixels < inst.max_cr_pixels)]
    rows = []
    for c in chips:
        labels, n = label_crs(dq=c.dq, cr_bit=inst.dq_cr, bad_bit=inst.dq_bad, max_pixels=inst.max_cr_pixels)
        t = det[det.chip == c.extver]
        lab = labels[np.rint(t.y.values).astype(int), np.rint(t.x.values).astype(int)]
        per_label = np.bincount(lab, minlength=n + 1)
        # labels touching a saturated pixel or a bad detector pixel lose charge by construction
        spoilt = np.zeros(n + 1, bool)
        near_bad = ndimage.maximum_filter((c.dq & (inst.dq_bad | 256)) > 0, size=3)
        spoilt[1:] = ndimage.maximum(near_bad, labels=labels, index=np.arange(1, n + 1)).astype(bool)
        rows.append(dict(chip=c, labels=labels, n=n, truth=t, label=lab, per_label=per_label, spoilt=spoilt))
    return det, rows


@pytest.fixture(scope="module")
def short_pair(tmp_path_factory):
    return _simulated_pair(tmp_path_factory, exptime=30.0, seed=7)


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory):
    return _simulated_pair(tmp_path_factory, exptime=900.0, seed=7)


@pytest.mark.slow
def test_simulated_uvis_counts_and_energies_match_truth(short_pair):
    """A 30 s full-frame pair (~4,700 CRs per frame, 0.2 % of pixels hit, so that overlapping
    CRs are rare): the measured count is within 2 % of the detectable truth, and the energies of
    CRs matched one to one equal the injected charge within the noise."""
    for inst, res, truth_frame, truth_crs, chips in short_pair:
        det, rows = _match(inst, truth_crs, chips)
        assert len(det) > 4000
        assert abs(res.n_cr - len(det)) / len(det) < 0.02
        completeness = sum(np.count_nonzero(r["label"]) for r in rows) / len(det)
        assert completeness > 0.98
        # one-to-one matches away from saturated and bad pixels
        z, rel, offset = [], [], []
        start = 0
        for r in rows:
            n_here = r["n"]
            lab = r["label"]
            one = (lab > 0) & (r["per_label"][lab] == 1) & ~r["spoilt"][lab]
            k = start + lab[one] - 1
            start += n_here
            energy = res.cosmic_rays["energy"][k].astype(float)
            npix = res.cosmic_rays["n_pixels"][k]
            charge = r["truth"].charge.values[one]
            # noise of a sum over the CR's pixels: read noise and dark-current shot noise
            sigma = np.sqrt(npix * (truth_frame.read_noise[0] ** 2
                                    + truth_frame.dark_current[0] * truth_frame.dark_time[0]))
            z.append((energy - charge) / sigma)
            rel.append((energy - charge) / charge)
            offset.append(np.hypot(res.cosmic_rays["x"][k] - r["truth"].x.values[one],
                                   res.cosmic_rays["y"][k] - r["truth"].y.values[one]))
        z, rel, offset = np.concatenate(z), np.concatenate(rel), np.concatenate(offset)
        assert z.size > 0.9 * len(det)
        # charge in the unflagged tails below the spill threshold is not counted: a small
        # negative bias of about one sigma, by the definition of a CR's pixels
        assert -2.0 < np.median(z) < 0.5
        assert np.mean(np.abs(z) < 4.0) > 0.9
        assert abs(np.median(rel)) < 0.005
        assert np.percentile(np.abs(rel), 90) < 0.02
        assert np.median(offset) < 0.05  # centroids within a twentieth of a pixel


@pytest.mark.slow
def test_simulated_uvis_900s_overlaps_explain_the_deficit(long_pair):
    """A realistic 900 s full-frame pair (~55,000 CRs per frame). Two CRs that touch are one CR by
    the published definition, so the count falls short of the truth by the overlaps; after
    accounting for them (truth CRs sharing a label) the count is within 2 %, nearly every
    detectable CR is found, and almost no CR is spurious. The HST positions come from the
    simulated SPT."""
    for inst, res, truth_frame, truth_crs, chips in long_pair:
        det, rows = _match(inst, truth_crs, chips)
        assert len(det) > 40_000
        found = sum(np.count_nonzero(r["label"]) for r in rows)
        shared = sum(int(np.maximum(r["per_label"][1:] - 1, 0).sum()) for r in rows)
        spurious = sum(int(np.count_nonzero(r["per_label"][1:] == 0)) for r in rows)
        n_labels = sum(r["n"] for r in rows)
        assert n_labels == res.n_cr
        assert found / len(det) > 0.98
        assert spurious / res.n_cr < 0.01
        assert res.n_cr <= len(det)
        assert abs(res.n_cr - (len(det) - shared)) / len(det) < 0.02
        e = res.exposure
        assert 500 < e["hst_alt"] < 600 and abs(e["hst_lat"]) <= 28.6
        assert np.all((res.orbit["alt"] > 500) & (res.orbit["alt"] < 600))
        assert np.all(np.abs(res.orbit["lat"]) <= 28.6)
        assert e["saa_time"] == pytest.approx(truth_frame.saa_time[0])
        assert e["rate"] == pytest.approx(res.n_cr / e["integration_time"] / inst.detector_area)


def test_measure_names_the_imset_of_a_stis_crsplit_file(tmp_path, capsys):
    """A STIS CR-SPLIT FLT holds several exposures: `measure` measures the one named by --imset
    and says so when none or a missing one is named."""
    from _stis_files import write_stis_crsplit

    p = tmp_path / "ocmv35010_flt.fits"
    write_stis_crsplit(p, n=2, shape=(20, 20))
    with fits.open(p, mode="update") as hdul:
        for k in (1, 2):
            hdul["DQ", k].data[:] = 0
        hdul["DQ", 2].data[5:8, 5:8] = 8192
    assert cli.main(["measure", str(p), "--imset", "2", "--out", str(tmp_path / "crs.csv")]) == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "crs_frame.csv")
    assert frame["rootname"][0] == "ocmv35010_2" and frame["n_cr"][0] == 1 and frame["exptime"][0] == 1102.0
    assert list(pd.read_csv(tmp_path / "crs.csv")["chip"]) == [1]
    assert cli.main(["measure", str(p)]) == 2
    assert "holds 2 exposures (imsets 1 to 2); name the one to measure (--imset)" in capsys.readouterr().err
    assert cli.main(["measure", str(p), "--imset", "3"]) == 2
    assert "has no imset 3; it holds imsets 1 to 2" in capsys.readouterr().err


def test_a_frame_without_cr_flags_says_what_to_run_first(tmp_path, config, capsys):
    """No pixel with DQ 8192: the frame has not been through a CR rejection, so 'CRs: 0' is not
    a measurement; the result warns, naming the file and the crreject to run first (for a STIS
    CR-SPLIT FLT: on that FLT)."""
    from _stis_files import write_stis_crsplit

    p = tmp_path / "ibxx01aaq_flt.fits"
    chips = seam_frame()
    write_flt(p, chips={ev: (sci, np.where(dq == 8192, 16, dq)) for ev, (sci, dq) in chips.items()})
    res = measure_file(p, config=config)
    warning = (f"{p}: no pixel carries the CR bit (DQ 8192), so no CR is counted; run `hstcosmicrays crreject` "
               "on the FLT files of its CR-SPLIT set first")
    assert res.n_cr == 0 and warning in res.warnings
    assert cli.main(["measure", str(p)]) == 0
    captured = capsys.readouterr()   # logged, on standard error, not again in the summary
    assert warning in captured.err and warning not in captured.out and "CRs: 0" in captured.out
    assert res.summary_text().endswith(f"warning: {warning}") and warning not in res.summary_text(warnings=False)
    stis = tmp_path / "ocmv35010_flt.fits"
    write_stis_crsplit(stis, n=2, shape=(20, 20))
    with fits.open(stis, mode="update") as hdul:
        for k in (1, 2):
            hdul["DQ", k].data[:] = 0
    res = measure_file(stis, config=config, imset=2)
    assert f"run `hstcosmicrays crreject {stis}` first (this FLT holds its CR-SPLIT set as imsets)" in res.warnings[-1]
    # a frame with flags has no such warning
    write_flt(tmp_path / "flagged_flt.fits", chips=chips)
    assert not any("CR bit" in w for w in measure_file(tmp_path / "flagged_flt.fits", config=config).warnings)


def test_wfpc2_c0m_reads_its_cr_flags_from_the_c1m_and_a_c1m_is_refused(tmp_path, config, capsys):
    """A C0M is measured with the DQ of its C1M, where no command writes CR flags: the warning
    says so. A C1M given as the science file was measured as if its flags were pixels; it is
    refused, naming the C0M to give."""
    from hstcosmicrays.intervals import parse_month
    from hstcosmicrays.simulate import month_schedule, write_dataset

    cli.setup_logging(verbosity=-1)  # no handler left on an earlier test's captured stream
    inst = config.instrument("wfpc2")
    (spec,) = month_schedule(instrument=inst, month=parse_month("2001-06"), seed=3, darks_per_month=1,
                             shape=(40, 40))
    paths = write_dataset(instrument=inst, spec=spec, out_dir=tmp_path)
    c0m, c1m = paths["C0M"], paths["C1M"]
    res = measure_file(c0m, config=config)
    assert res.warnings[-1] == (
        f"{c1m}: no pixel carries the CR bit (DQ 8192), so no CR is counted; a C0M's CR flags are read from its "
        "C1M, and no command of hstcosmicrays writes them there (crreject takes no WFPC2 files; run_pipeline "
        "finds the CRs of WFPC2 darks itself)")
    capsys.readouterr()
    assert cli.main(["measure", str(c1m)]) == 2
    assert capsys.readouterr().err == (
        f"hstcosmicrays measure: error: {c1m}: a WFPC2 C1M holds the data quality of a frame, not its pixels; "
        f"give its C0M, {c0m}\n")


def test_the_frame_summary_file_of_out_is_documented(tmp_path, capsys):
    """measure --out writes a second file, <name>_frame.<suffix>: --help and the README say so,
    by the name the command gives it."""
    from pathlib import Path

    with pytest.raises(SystemExit):
        cli.main(["measure", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "goes beside it as <name>_frame.csv or .parquet" in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `hstcosmicrays measure FILE [--out table.csv]"))
    assert "beside it as `table_frame.csv`" in row


# ---------------------------------------------------------------------------------------------
# against the truth of the simulated archive's opt-in features: DN frames with four amplifier
# gains, a subarray across the middle of its chip


def _nearest_isolated(truth, x, y, *, isolation=6.0):
    """Index into ``truth`` of the truth CR whose centroid is nearest each (x, y), and whether
    that match is clean: within 1 pixel, and no other truth CR within ``isolation`` pixels of it
    (CRs that touch are one CR by the published definition)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.c_[truth.x.values, truth.y.values])
    gap, _ = tree.query(np.c_[truth.x.values, truth.y.values], k=2)
    d, j = tree.query(np.c_[x, y])
    return j, (d < 1.0) & (gap[j, 1] > isolation)


@pytest.mark.parametrize("name", ["acs_wfc", "wfc3_uvis"])
def test_a_dn_subarray_across_two_amplifiers_is_measured_in_its_own_pixels_and_electrons(tmp_path, config, name):
    """A CR-SPLIT pair of subarrays in DN that straddle the middle of their chip, read by its two
    amplifiers (CCDAMP CD or AB) whose gains are 0.6 and 1.5 times CCDGAIN, through the commands
    a user runs (``hstcosmicrays crreject``, then ``measure``): every CR's energy, in electrons,
    is the injected charge on either side of the chip's middle column (frames puts it at
    ``chip_shape[1] / 2 + LTV1`` in the subarray's columns), and its x, y are in the subarray's
    own pixels (the truth's; its place on the chip is x - LTV1, y - LTV2), on chip 1."""
    from hstcosmicrays import simulate
    from hstcosmicrays.crreject import crreject_files
    from hstcosmicrays.intervals import Month

    base = config.instrument(name)
    inst = dataclasses.replace(base, simulation=dataclasses.replace(
        base.simulation, dn_frames=True, amp_gain_factors=(0.6, 1.5, 0.6, 1.5), subarray_fraction=1.0,
        subarray_shape=(96, 2400)))
    specs = simulate.month_schedule(instrument=inst, month=Month(2012, 6), seed=4, darks_per_month=2)
    assert len({s.set_index for s in specs}) == 1 and specs[0].ccdamp in ("AB", "CD")
    paths = [simulate.write_dataset(instrument=inst, spec=s, out_dir=tmp_path) for s in specs]
    crreject_files([p["FLT"] for p in paths], config=config)   # ORs DQ 8192 into the files
    middle = base.chip_shape[1] // 2 - specs[0].origin[0]     # the chip's middle, in subarray columns
    assert 200 < middle < 2200
    ratios = {True: [], False: []}
    for spec, p in zip(specs, paths):
        res = measure_file(p["FLT"], config=config)
        truth_frame, truth = simulate.read_truth(p["TRUTH"])
        e, cr = res.exposure, res.cosmic_rays
        assert truth_frame["bunit"][0] == "COUNTS" and truth_frame["ltv1"][0] == -spec.origin[0]
        assert res.n_cr > 300 and set(cr["chip"]) == {1}
        assert e["gain"] == pytest.approx(np.mean([g for g in spec.amp_gains if g]))
        assert e["rate"] * e["integration_time"] * truth_frame["area_cm2"][0] == pytest.approx(res.n_cr, rel=1e-3)
        j, clean = _nearest_isolated(truth, cr["x"], cr["y"])
        assert clean.sum() > 0.3 * res.n_cr
        assert np.median(np.hypot(cr["x"] - truth.x.values[j], cr["y"] - truth.y.values[j])[clean]) < 0.05
        bright = clean & (truth.charge.values[j] > 1000)
        for left in (True, False):
            side = bright & ((cr["x"] < middle) == left)
            ratios[left].extend(cr["energy"][side] / truth.charge.values[j][side])
    left, right = np.median(ratios[True]), np.median(ratios[False])
    assert min(len(ratios[True]), len(ratios[False])) > 50
    # the dark current and noise in a CR's pixels against the charge in its unflagged tails
    assert 0.97 < left < 1.05 and 0.97 < right < 1.05 and abs(left - right) < 0.02, (left, right)

"""Tests of the simulated archive: file structure, realism against the truth, determinism."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from calcos import orbit as calcos_orbit  # the reference model (a test requirement, setup.cfg)

from hstcosmicrays import simulate
from hstcosmicrays.archive.base import Archive
from hstcosmicrays.archive.simulated import SimulatedArchive
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import Month
from hstcosmicrays.orbit import ORBIT_KEYWORDS, OrbitalElements, hst_positions

SHAPE = (96, 128)
MONTHS = {
    "acs_wfc": Month(2004, 5), "acs_hrc": Month(2005, 3), "stis_ccd": Month(2000, 7),
    "wfc3_uvis": Month(2012, 2), "wfc3_ir": Month(2011, 9), "wfpc2": Month(1999, 4),
    "nicmos_nic1": Month(2003, 1), "nicmos_nic2": Month(2004, 8), "nicmos_nic3": Month(2005, 11),
}
PRIMARY_COMMON = ("INSTRUME", "ROOTNAME", "IMAGETYP", "TARGNAME", "EXPTIME", "EXPSTART", "EXPEND",
                  "DATE-OBS", "TIME-OBS", "EXPFLAG", "QUALITY", "NEXTEND", "SUBARRAY", "SAA_EXIT",
                  "SAA_TIME", "FILENAME", "TELESCOP", "PROPOSID")
PRIMARY_CCD = ("DETECTOR", "CCDAMP", "CCDGAIN", "FLASHDUR", "FLASHSTA", "CRSPLIT", "CRREJTAB", "CCDTAB")
WCS_KEYS = ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CTYPE1", "CTYPE2",
            "ORIENTAT")


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def archive():
    return SimulatedArchive(seed=11, darks_per_month=4, shape=SHAPE)


def _archive_for(inst) -> SimulatedArchive:
    """4 darks (2 CR-SPLIT pairs) a month for the CCDs, 2 ramps for IR (their files are larger)."""
    return SimulatedArchive(seed=11, darks_per_month=2 if inst.kind == "ir" else 4, shape=SHAPE)


@pytest.fixture(scope="module")
def fetched(config, tmp_path_factory):
    """Every instrument's simulated month, fetched into one work directory."""
    work = tmp_path_factory.mktemp("sim")
    out = {}
    for name, month in MONTHS.items():
        inst = config.instruments[name]
        archive = _archive_for(inst)
        datasets = archive.query(inst, month)
        out[name] = (inst, datasets, archive.fetch(datasets, work))
    return work, out


def _open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hdul = fits.open(path)
        hdul.verify("exception")
    return hdul


def _check_wcs(header):
    for key in WCS_KEYS:
        assert key in header, key
    assert header["CTYPE1"] == "RA---TAN" and header["CTYPE2"] == "DEC--TAN"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the SCI header of an imset of a STIS CR-SPLIT file carries its exposure's DATE-OBS, as
        # real ones do; astropy derives MJD-OBS from it, with this warning, on real files too
        warnings.filterwarnings("ignore", message="'datfix' made the change 'Set MJD-OBS to [0-9.]+ from DATE-OBS'",
                                category=FITSFixedWarning)
        w = WCS(header)
    ra, dec = w.all_pix2world([[header["CRPIX1"], header["CRPIX2"]]], 1)[0]
    assert ra == pytest.approx(header["CRVAL1"], abs=1e-7)
    assert dec == pytest.approx(header["CRVAL2"], abs=1e-7)
    scale = np.hypot(header["CD1_1"], header["CD2_1"]) * 3600
    assert 0.02 < scale < 0.25


def _check_orbit_header(path, primary):
    for key in ORBIT_KEYWORDS:
        assert key in primary, key
    ref = calcos_orbit.HSTOrbit(str(path))
    start, end = (("EXPSTART", "EXPEND") if "EXPSTART" in primary else ("TEXPSTRT", "TEXPEND"))
    t = np.linspace(primary[start], primary[end], 7)
    xyz = np.array([ref.getPos(float(v))[0] for v in t])
    r = np.linalg.norm(xyz, axis=1)
    lat = np.degrees(np.arcsin(xyz[:, 2] / r))
    assert np.all((r - 6378.137 > 500) & (r - 6378.137 < 600))
    assert np.all(np.abs(lat) <= 28.6)
    elements = OrbitalElements.from_header(primary)
    lat2, _, alt2 = hst_positions(elements=elements, mjd=t)
    np.testing.assert_allclose(alt2, r - 6378.137, atol=1e-6)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)


def test_is_an_archive(archive):
    assert isinstance(archive, Archive)


@pytest.mark.parametrize("name", sorted(MONTHS))
def test_file_structure(fetched, name):
    _, results = fetched
    inst, datasets, files = results[name]
    assert datasets, name
    assert [d.t_min for d in datasets] == sorted(d.t_min for d in datasets)
    for ds in datasets:
        assert ds.obs_id[0] == inst.rootname_prefix and len(ds.obs_id) == 9 and ds.obs_id == ds.obs_id.lower()
        n = len(_archive_for(inst).dataset(inst, ds.obs_id).frames)  # exposures in the dataset's files
        assert n == 1 or inst.imset_exposures
        # a file of several exposures (STIS CR-SPLIT) gives their totals in its primary header
        start, exptime, end = ("EXPSTART", "EXPTIME", "EXPEND") if n == 1 else ("TEXPSTRT", "TEXPTIME", "TEXPEND")
        assert {p.suffix for p in ds.products} == set(inst.products)
        paths = files[ds.obs_id]
        for p in ds.products:
            assert paths[p.suffix].name == p.filename == f"{ds.obs_id}_{p.suffix.lower()}.fits"
            assert paths[p.suffix].stat().st_size == p.size
            assert p.uri == f"mast:HST/product/{p.filename}"
        assert (paths[ds.products[0].suffix].parent / f"{ds.obs_id}_truth.fits").exists()
        assert paths[ds.products[0].suffix].parent.parts[-3:] == ("mastDownload", "HST", ds.obs_id)
        for suffix, path in paths.items():
            with _open(path) as hdul:
                prim = hdul[0].header
                assert prim["ROOTNAME"] == ds.obs_id.upper()
                assert prim["INSTRUME"] == inst.instrume
                assert prim[start] == pytest.approx(ds.t_min)
                assert prim[exptime] == pytest.approx(ds.exptime)
                assert prim[end] > prim[start]
                assert prim["NEXTEND"] == len(hdul) - 1
                if suffix in ("SPT", "SHM"):
                    _check_orbit_header(path, prim)
                    continue
                common = PRIMARY_COMMON if n == 1 else tuple(
                    {"EXPSTART": start, "EXPTIME": exptime, "EXPEND": end}.get(k, k) for k in PRIMARY_COMMON)
                for key in common:
                    assert key in prim, (suffix, key)
                assert prim["IMAGETYP"] == "DARK" and prim["TARGNAME"] == "DARK"
                assert prim["EXPFLAG"] == "NORMAL" and prim["SUBARRAY"] is False
                if inst.kind == "ccd":
                    _check_ccd(inst, hdul, prim, imsets=n)
                elif inst.kind == "ir":
                    _check_ir(inst, hdul, prim)
                else:
                    _check_wfpc2(inst, hdul, prim, suffix)


def _check_gain_keywords(inst, prim):
    for key in inst.gain_keywords + inst.readnoise_keywords:
        assert key in prim, key
    gains = [prim[k] for k in inst.gain_keywords if prim[k] > 0]
    assert gains and all(0.5 < g < 20 for g in gains)


def _check_ccd(inst, hdul, prim, imsets=1):
    for key in PRIMARY_CCD:
        assert key in prim, key
    assert prim["DETECTOR"] == inst.detector
    assert prim["FLASHDUR"] >= 0
    assert prim["FLASHSTA"] in ("NOT PERFORMED", "SUCCESSFUL")
    assert prim["NEXTEND"] == 3 * len(inst.chips) * imsets
    _check_gain_keywords(inst, prim)
    for k in range(imsets):
        for extver, ccdchip in zip(inst.chips, inst.ccdchip):
            extver += k * len(inst.chips)
            sci, err, dq = hdul["SCI", extver], hdul["ERR", extver], hdul["DQ", extver]
            assert sci.data.shape == err.data.shape == dq.data.shape == SHAPE
            assert sci.data.dtype.kind == "f" and dq.data.dtype.kind == "i"
            assert sci.header["CCDCHIP"] == ccdchip and sci.header["BUNIT"] == inst.bunit
            assert np.all(err.data > 0)
            _check_wcs(sci.header)
            if imsets > 1:  # each exposure's own times in its SCI header
                assert sci.header["EXPTIME"] > 0 and sci.header["EXPEND"] > sci.header["EXPSTART"]
    if len(inst.chips) == 2:
        assert hdul["SCI", 1].header["CCDCHIP"] == 2  # ACS and WFC3/UVIS: SCI,1 is chip 2


def _check_ir(inst, hdul, prim):
    nsamp = prim["NSAMP"]
    assert nsamp >= 3 and prim["NEXTEND"] == 5 * nsamp
    _check_gain_keywords(inst, prim)
    times = []
    for extver in range(1, nsamp + 1):
        for name in ("SCI", "ERR", "DQ", "SAMP", "TIME"):
            assert hdul[name, extver].header["EXTVER"] == extver
        assert hdul["SCI", extver].header["BUNIT"] == inst.bunit
        assert hdul["SCI", extver].data.shape == SHAPE
        times.append(hdul["TIME", extver].header["PIXVALUE"])
        assert hdul["SCI", extver].header["SAMPTIME"] == times[-1]
    # reverse time order: EXTVER 1 is the last read, EXTVER NSAMP the zeroth
    assert times == sorted(times, reverse=True) and times[-1] == 0 and times[0] == pytest.approx(prim["EXPTIME"])
    _check_wcs(hdul["SCI", 1].header)
    # the CR bit, once set, stays set in every later read
    flags = np.array([(hdul["DQ", e].data & inst.dq_cr) > 0 for e in range(nsamp, 0, -1)])  # time order
    assert not flags[0].any()
    assert np.all(flags[1:] >= flags[:-1])


def _check_wfpc2(inst, hdul, prim, suffix):
    assert prim["ATODGAIN"] in (7.0, 14.0)
    images = [h for h in hdul[1:]]
    assert len(images) == 4
    for extver, h in zip(inst.chips, images):
        assert h.header["EXTVER"] == extver and h.data.shape == SHAPE
        if suffix == "C0M":
            assert h.name == "SCI" and h.header["BUNIT"] == "DN" and h.data.dtype.kind == "f"
            _check_wcs(h.header)
        else:
            assert h.name == "DQ" and h.data.dtype.kind == "i"


def test_crsplit_sets(config):
    """CCD darks come in CR-SPLIT pairs with identical EXPTIME, CCDAMP and gain."""
    for name in ("acs_wfc", "acs_hrc", "stis_ccd", "wfc3_uvis"):
        inst = config.instruments[name]
        specs = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=3)
        assert len(specs) == inst.simulation.darks_per_month
        sets = {}
        for sp in specs:
            sets.setdefault(sp.set_index, []).append(sp)
        for frames in sets.values():
            assert len(frames) == 2
            a, b = frames
            assert a.exptime == b.exptime and a.ccdamp == b.ccdamp and a.ccdgain == b.ccdgain
            assert 0 < (b.expstart - a.expend) * 86400 < 300  # consecutive
            assert a.set_obs_ids == b.set_obs_ids == (a.obs_id, b.obs_id)
    wfpc2 = config.instruments["wfpc2"]
    sizes = [sp.set_size for m in range(1, 13) for sp in simulate.month_schedule(
        instrument=wfpc2, month=Month(1998, m), seed=3)]
    assert sizes.count(1) > 0 and sizes.count(2) > len(sizes) / 2
    ir = simulate.month_schedule(instrument=config.instruments["wfc3_ir"], month=Month(2012, 1), seed=3)
    assert all(sp.set_size == 1 for sp in ir)


def test_a_stis_crsplit_set_is_one_dataset_of_several_imsets(fetched):
    """A STIS CR-SPLIT set of N exposures is one dataset, as STIS writes it: one FLT whose imset k
    (SCI/ERR/DQ,k) is exposure k, with its own times and SAA keywords in its SCI header and the
    pixels of the exposure's file of its own; the totals in the primary header (NEXTEND 3N,
    CRSPLIT N, TEXPTIME, TEXPSTRT, TEXPEND, no EXPSTART); one SPT (the month's orbit, a UDL
    extension per imset); one truth file naming each frame as the pipeline stores it."""
    from hstcosmicrays.frames import read_headers

    _, results = fetched
    inst, datasets, files = results["stis_ccd"]
    archive = _archive_for(inst)
    members = {sp.obs_id for sp in archive.schedule(inst, MONTHS["stis_ccd"])}
    assert len(datasets) == 2 and len(members) == 4  # two CR-SPLIT pairs
    for ds in datasets:
        spec = archive.dataset(inst, ds.obs_id)
        frames = spec.frames
        assert spec.is_set and len(frames) == 2 and [f.frame_index for f in frames] == [0, 1]
        # the set's name: its first frame's with the last character 0; no frame has it
        assert ds.obs_id == frames[0].obs_id[:-1] + "0" and ds.obs_id not in members
        assert ds.obs_id == simulate.set_obs_id_for(instrument=inst, month=MONTHS["stis_ccd"],
                                                    set_index=frames[0].set_index)
        assert all(simulate.dataset_obs_id(instrument=inst, spec=f) == ds.obs_id for f in frames)
        assert simulate.resolve_obs_id(ds.obs_id.upper()) == ("stis_ccd", MONTHS["stis_ccd"], frames[0].set_index, None)
        assert simulate.resolve_obs_id(frames[1].obs_id)[2:] == (frames[0].set_index, 1)
        with pytest.raises(KeyError, match=f"exposure of the dataset {ds.obs_id}"):
            archive.dataset(inst, frames[1].obs_id)
        assert (ds.t_min, ds.exptime) == (frames[0].expstart, 2 * frames[0].exptime)

        flt = files[ds.obs_id]["FLT"]
        with _open(flt) as hdul:
            prim = hdul[0].header
            assert prim["NEXTEND"] == 6 == len(hdul) - 1 and prim["CRSPLIT"] == 2
            assert prim["ROOTNAME"] == ds.obs_id.upper() and prim["FILENAME"] == flt.name
            assert not {"EXPSTART", "EXPEND", "EXPTIME", "DARKTIME"} & set(prim)
            assert prim["TEXPSTRT"] == frames[0].expstart and prim["TEXPEND"] == frames[1].expend
            assert prim["TEXPTIME"] == frames[0].exptime + frames[1].exptime
            assert (prim["DATE-OBS"], prim["TIME-OBS"]) == simulate._iso(frames[0].expstart)
            for k, f in enumerate(frames, start=1):
                own = simulate.build_products(instrument=inst, spec=f, suffixes=["FLT"])["FLT"]
                sci = hdul["SCI", k].header
                assert sci["ROOTNAME"] == ds.obs_id.upper()
                for key in ("EXPSTART", "EXPEND", "EXPTIME", "DARKTIME", "DATE-OBS", "TIME-OBS", "SAA_EXIT",
                            "SAA_TIME"):
                    assert sci[key] == own[0].header[key], key
                for name in ("SCI", "ERR", "DQ"):
                    np.testing.assert_array_equal(hdul[name, k].data, own[name, 1].data)
        headers = read_headers(flt, instrument=inst)
        assert [h.rootname for h in headers] == list(spec.frame_names) == [f"{ds.obs_id}_1", f"{ds.obs_id}_2"]
        assert [h.imset for h in headers] == [1, 2]
        assert [(h.expstart, h.expend, h.exptime) for h in headers] == [(f.expstart, f.expend, f.exptime) for f in frames]
        assert [h.saa_time for h in headers] == [f.saa_time for f in frames]

        with _open(files[ds.obs_id]["SPT"]) as hdul:
            alone = simulate.render_dataset(instrument=inst, spec=frames[0], suffixes=["SPT"], truth=False)["SPT"]
            own = fits.HDUList.fromstring(alone)[0].header  # the SPT of the first frame on its own
            assert hdul[0].header["ROOTNAME"] == ds.obs_id.upper() and hdul[0].header["NEXTEND"] == 2
            assert [(h.name, h.ver, h.header["ROOTNAME"]) for h in hdul[1:]] == [
                ("UDL", 1, ds.obs_id.upper()), ("UDL", 2, ds.obs_id.upper())]
            assert all(hdul[0].header[key] == own[key] for key in ORBIT_KEYWORDS)

        t_frames, t_crs = simulate.read_truth(flt.parent / f"{ds.obs_id}_truth.fits")
        assert t_frames["obs_id"].tolist() == list(spec.frame_names)
        assert t_frames["frame_index"].tolist() == [0, 1] and (t_frames["set_size"] == 2).all()
        for name, f in zip(spec.frame_names, frames):
            assert simulate.frame_name(instrument=inst, spec=f) == name
            alone = simulate.simulate_frame(instrument=inst, spec=f)
            mine = t_crs[t_crs["obs_id"] == name]
            assert len(mine) == alone.frame["n_cr"] > 0
            np.testing.assert_array_equal(mine["x"].to_numpy(), alone.crs["x"])
        assert set(t_crs["obs_id"]) == set(spec.frame_names)


def test_a_lone_stis_frame_and_other_instruments_keep_one_file_per_exposure(config):
    """Only sets of two or more exposures of an instrument with imset_exposures are one file."""
    stis = config.instruments["stis_ccd"]
    dss = simulate.month_datasets(instrument=stis, month=MONTHS["stis_ccd"], seed=3, darks_per_month=3)
    assert [len(d.frames) for d in dss] == [2, 1]
    lone = dss[1].frames[0]
    assert dss[1].obs_id == lone.obs_id == simulate.frame_name(instrument=stis, spec=lone)
    assert dss[1].frame_names == (lone.obs_id,) and not dss[1].is_set
    for name in ("acs_hrc", "wfc3_uvis", "wfpc2"):
        inst = config.instruments[name]
        specs = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=3, darks_per_month=4)
        dss = simulate.month_datasets(instrument=inst, month=MONTHS[name], seed=3, darks_per_month=4)
        assert [d.frames for d in dss] == [(s,) for s in specs]
        assert [d.obs_id for d in dss] == [s.obs_id for s in specs]


@pytest.mark.parametrize("name", ["acs_wfc", "stis_ccd", "wfc3_uvis"])
def test_hot_pixels_keep_their_rates(config, name):
    """A hot pixel keeps its place and dark rate in every later frame: within an anneal cycle the
    population only grows, and an anneal cures only the pixels born since the previous one. (A
    stack of a month's darks must not see every hot pixel change its rate between two sets.)"""
    import dataclasses

    inst = config.instruments[name]
    period = inst.simulation.anneal_period
    assert period > 0
    start = simulate._mjd(inst.active_start)
    spec = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=3, shape=SHAPE)[0]
    cycle = (spec.hot_epoch - start) // period
    npix = 10_000_000  # about a full frame: enough hot pixels born in a day

    def draw(epoch):
        idx, rate, permanent = simulate._hot_pixels(inst, dataclasses.replace(spec, hot_epoch=epoch), npix)
        return (idx[permanent], rate[permanent]), (idx[~permanent], rate[~permanent])

    (p0, c0), (p1, c1), (p2, c2) = (draw(start + cycle * period + 1.0),        # early in a cycle
                                    draw(start + (cycle + 1) * period - 1.0),  # its last day
                                    draw(start + (cycle + 1) * period + 1.0))  # after the anneal
    # the permanent population at any time is the start of every later one, rates included
    n = p0[0].size
    assert 100 < n <= p1[0].size <= p2[0].size
    for idx, rate in (p1, p2):
        assert np.array_equal(idx[:n], p0[0]) and np.array_equal(rate[:n], p0[1])
    # hot pixels born in a cycle stay to its end, and the anneal cures them
    m = c0[0].size
    assert 10 < m < c1[0].size
    assert np.array_equal(c1[0][:m], c0[0]) and np.array_equal(c1[1][:m], c0[1])
    assert c2[0].size < c1[0].size / 10 and np.intersect1d(c2[0], c1[0]).size <= 2


def test_inactive_months_are_empty(config, archive):
    assert archive.query(config.instruments["acs_wfc"], Month(2008, 3)) == []
    assert archive.query(config.instruments["wfpc2"], Month(2012, 3)) == []


def test_resolve_obs_id(fetched, archive):
    _, results = fetched
    for name, (inst, datasets, _) in results.items():
        for ds in datasets:
            assert archive.resolve(ds.obs_id.upper()) == (name, MONTHS[name])
    with pytest.raises(ValueError):
        archive.resolve("notanid")
    with pytest.raises(ValueError):  # a set's name ends in 0 after frame digits 00
        simulate.resolve_obs_id("oc7h00010")


def test_deterministic_bytes(config, fetched, tmp_path):
    _, results = fetched
    for name in ("wfc3_uvis", "wfc3_ir", "wfpc2", "stis_ccd"):
        inst, datasets, files = results[name]
        again = _archive_for(inst)
        ds = again.query(inst, MONTHS[name])
        assert ds == datasets
        copy = again.fetch(ds[:1], tmp_path / name)
        for suffix, path in files[ds[0].obs_id].items():
            original = path.read_bytes()
            assert copy[ds[0].obs_id][suffix].read_bytes() == original
            assert again.product_bytes(inst, ds[0].obs_id, suffix) == original
        truth = path.parent / f"{ds[0].obs_id}_truth.fits"
        assert again.product_bytes(inst, ds[0].obs_id, "TRUTH") == truth.read_bytes()
    other = SimulatedArchive(seed=12, darks_per_month=4, shape=SHAPE)
    inst = config.instruments["wfc3_uvis"]
    obs = other.query(inst, MONTHS["wfc3_uvis"])[0].obs_id
    assert other.product_bytes(inst, obs, "FLT") != results["wfc3_uvis"][2][obs]["FLT"].read_bytes()


def test_render_dataset_suffixes_none_is_every_product_and_empty_is_none(config):
    """None asks for every product of the instrument; an empty list for none, only the truth
    (the MAST stand-in serves a truth file this way and must not render the FLT for it)."""
    inst = config.instruments["wfc3_uvis"]
    spec = _archive_for(inst).datasets(inst, MONTHS["wfc3_uvis"])[0]
    assert set(simulate.render_dataset(instrument=inst, spec=spec, suffixes=[], truth=True)) == {"TRUTH"}
    assert simulate.render_dataset(instrument=inst, spec=spec, suffixes=[], truth=False) == {}
    every = simulate.render_dataset(instrument=inst, spec=spec, truth=False)
    assert set(every) == {s.upper() for s in inst.products}


@pytest.mark.parametrize("name", ["acs_wfc", "stis_ccd", "wfc3_ir"])
def test_cr_charge_is_the_per_pixel_truth(config, name):
    """``SimulatedFrame.cr_charge`` holds the injected charge of every pixel: per chip (CCD) or
    per read interval (IR) it sums to the truth table's charges, and it is what the pixels
    carry above the dark (the CCD science array minus it has no CR left)."""
    inst = config.instruments[name]
    spec = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=4, shape=(128, 256))[0]
    frame = simulate.simulate_frame(instrument=inst, spec=spec)
    q, crs = frame.cr_charge, frame.crs
    assert q.dtype == np.float32 and q.min() == 0.0
    if inst.kind == "ir":
        assert q.shape == (spec.nsamp - 1,) + spec.shape
        per_layer = np.bincount(crs["read"] - 1, crs["charge"].astype(np.float64), minlength=q.shape[0])
    else:
        assert q.shape == frame.sci.shape
        per_layer = np.bincount(crs["chip"] - inst.chips[0], crs["charge"].astype(np.float64), minlength=q.shape[0])
        gain = 1.0 if inst.bunit.upper().startswith("ELECTRON") else spec.ccdgain
        clean = frame.sci * gain - q
        hit = (q > 200.0) & (frame.dq == 0)   # no saturation, hot pixel or bad column
        assert hit.sum() > 20
        # a CR pixel without its CR charge looks like any other pixel of the frame
        assert np.median(clean[hit]) == pytest.approx(np.median(clean[frame.dq == 0]), abs=2.0)
    np.testing.assert_allclose(q.sum(axis=(1, 2), dtype=np.float64), per_layer, rtol=1e-4)
    assert len(crs["charge"]) > 10


def test_truth_counts_match_the_pixels(fetched, config):
    """Every truth CR is in the image: its brightest pixel stands far above the noise."""
    work, results = fetched
    for name in ("wfc3_uvis", "stis_ccd", "acs_hrc"):
        inst, datasets, files = results[name]
        frames, all_crs = simulate.read_truth(work / "mastDownload" / "HST" / datasets[0].obs_id)
        assert frames["n_cr"].sum() == len(all_crs)
        # a STIS CR-SPLIT set's file holds its frames as imsets: the last one here
        k = len(frames)
        frame = frames.iloc[k - 1]
        crs = all_crs[all_crs["obs_id"] == frame["obs_id"]]
        assert frame["n_cr"] == len(crs) > 20
        with fits.open(files[datasets[0].obs_id]["FLT"]) as hdul:
            gain = 1.0 if inst.bunit == "ELECTRONS" else hdul[0].header[inst.gain_keywords[0]]
            images = {v: hdul["SCI", v + (k - 1) * len(inst.chips)].data * gain for v in inst.chips}
        ok = []
        for cr in crs.itertuples():
            x, y = int(round(cr.x)), int(round(cr.y))
            ys, xs = slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2)
            ok.append(images[cr.chip][ys, xs].max() > 10 * frame["read_noise"])
        assert np.mean(ok) > 0.97
        assert crs["chip"].isin(inst.chips).all() and (crs["read"] == -1).all()
        assert frame["rate_true"] == pytest.approx(
            frame["n_cr"] / frame["integration_time"] / frame["area_cm2"])
        assert frame["integration_time"] == pytest.approx(
            inst.integration_time(exptime=frame["exptime"], flashdur=frame["flashdur"]))
        assert frame["area_cm2"] == pytest.approx(len(inst.chips) * SHAPE[0] * SHAPE[1] * (inst.pixel_size * 1e-4) ** 2)


def test_ir_reads_match_the_truth(fetched):
    """An IR CR is flagged from the read in which the truth says it arrived, not before."""
    work, results = fetched
    inst, datasets, files = results["wfc3_ir"]
    checked = 0
    for ds in datasets:
        frames, crs = simulate.read_truth(work / "mastDownload" / "HST" / ds.obs_id)
        with fits.open(files[ds.obs_id]["IMA"]) as hdul:
            nsamp = hdul[0].header["NSAMP"]
            flags = np.array([(hdul["DQ", e].data & inst.dq_cr) > 0 for e in range(nsamp, 0, -1)])
        strong = crs[crs["charge"] > 2000]
        hits = []
        for cr in strong.itertuples():
            x, y = int(round(cr.x)), int(round(cr.y))
            box = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
            hits.append(flags[cr.read][box].any() and 1 <= cr.read < nsamp)
            checked += 1
        assert np.mean(hits) > 0.95
        assert ((crs["read"] >= 1) & (crs["read"] < nsamp)).all()
        assert (crs["time_s"] <= frames["exptime"].iloc[0]).all()
    assert checked > 20


def _amp_noise(sci, dq, left):
    half = sci.shape[1] // 2
    part = sci[:, :half] if left else sci[:, half:]
    good = dq[:, :half] == 0 if left else dq[:, half:] == 0
    v = part[good]
    med = np.median(v)
    return med, 1.4826 * np.median(np.abs(v - med))

@pytest.mark.parametrize("name,shape", [("acs_wfc", (16, 4096)), ("acs_hrc", (64, 1024)),
                                        ("stis_ccd", (64, 1024)), ("wfc3_uvis", (16, 4096))])
def test_header_read_noise_is_the_noise_in_the_pixels(config, name, shape, tmp_path):
    """The read noise a reader takes from the header (frames.read_chips: per amplifier, or the
    one READNSE keyword of STIS) is the read noise the pixels got: ERR^2 = RN^2 + max(S, 0) in
    electrons. (Two-chip detectors at full width: on narrower simulated chips the simulator
    puts the amplifier boundary at half the simulated width, frames at column 2048.)"""
    from hstcosmicrays.frames import read_chips

    inst = config.instruments[name]
    for spec in simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=3, shape=shape)[:2]:
        path = tmp_path / f"{spec.obs_id}_flt.fits"
        simulate.build_products(instrument=inst, spec=spec, suffixes=["FLT"])["FLT"].writeto(path)
        for chip in read_chips(path, instrument=inst):
            signal = np.maximum(chip.sci * chip.gain, 0.0)
            faint = signal < 1000.0
            rn_pixels = np.sqrt((chip.err * chip.gain) ** 2 - signal)
            np.testing.assert_allclose(rn_pixels[faint], chip.readnoise[faint], rtol=2e-3)



@pytest.mark.parametrize("name", ["wfc3_uvis", "stis_ccd"])
def test_dark_level_and_read_noise(config, name):
    """Dark level and read noise measured from a frame match the configured values."""
    inst = config.instruments[name]
    month = MONTHS[name]
    spec = simulate.month_schedule(instrument=inst, month=month, seed=5, shape=(512, 512))[0]
    frame = simulate.simulate_frame(instrument=inst, spec=spec)
    sim = inst.simulation
    years = (spec.expstart - simulate._mjd(inst.active_start)) / 365.25
    dark_e = sim.dark_current * (1 + sim.dark_growth * years) * (spec.exptime + spec.flashdur) + spec.flash_level
    gain = 1.0 if inst.bunit == "ELECTRONS" else spec.ccdgain
    amps = dict(zip("ABCD", spec.amp_readnoise))
    for i, ccdchip in enumerate(inst.ccdchip):
        for left in (True, False):
            if len(inst.chips) == 2:
                amp = ("A" if left else "B") if ccdchip == 1 else ("C" if left else "D")
            else:
                amp = spec.ccdamp
            med, sigma = _amp_noise(frame.sci[i] * gain, frame.dq[i], left)
            expected_sigma = np.sqrt(amps[amp] ** 2 + dark_e)
            assert med == pytest.approx(dark_e, abs=0.1 * dark_e + 0.3)
            assert sigma == pytest.approx(expected_sigma, rel=0.08)


def test_acs_wfc_fraction_of_pixels_hit(config):
    """1.5-3 % of the pixels of ACS/WFC are hit per 1000 s (ACS ISR 2002-07), across the cycle."""
    inst = config.instruments["acs_wfc"]
    fractions = []
    for month in (Month(2002, 6), Month(2004, 6), Month(2010, 1), Month(2013, 6)):
        for spec in simulate.month_schedule(instrument=inst, month=month, seed=9, shape=(512, 1024)):
            frame = simulate.simulate_frame(instrument=inst, spec=spec)
            if frame.frame["in_saa"]:
                continue
            hit = frame.crs["n_pixels"].sum() / frame.sci.size
            fractions.append(hit / (frame.frame["integration_time"] / 1000.0))
    assert len(fractions) >= 6
    assert 0.015 <= min(fractions) and max(fractions) <= 0.03


@pytest.mark.parametrize("name", ["acs_wfc", "acs_hrc", "stis_ccd", "wfc3_uvis", "wfpc2"])
def test_most_crs_cover_3_to_6_pixels(config, name):
    inst = config.instruments[name]
    spec = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=2, shape=(256, 256))[0]
    frame = simulate.simulate_frame(instrument=inst, spec=spec)
    n = frame.crs["n_pixels"]
    assert len(n) > 300
    assert np.mean((n >= 3) & (n <= 6)) > 0.5
    assert np.mean(n < 3) < 0.1


def test_rates_outside_the_saa(config):
    """Frames outside the SAA see 1-2 CR/s/cm^2; SAA frames more; the true count is Poisson."""
    inst = config.instruments["stis_ccd"]
    outside, inside = [], []
    for year in (1998, 2001, 2010, 2015, 2019):
        for spec in simulate.month_schedule(instrument=inst, month=Month(year, 3), seed=4, darks_per_month=8,
                                            shape=(512, 512)):
            frame = simulate.simulate_frame(instrument=inst, spec=spec).frame
            (inside if frame["in_saa"] else outside).append(frame)
            assert abs(frame["n_cr"] - frame["n_expected"]) < 5 * np.sqrt(frame["n_expected"])
    assert len(outside) > len(inside) > 0
    rates = np.array([f["rate_true"] for f in outside])
    assert np.all((rates > 1.0) & (rates < 2.0))
    assert np.median([f["rate_true"] for f in inside]) > np.median(rates)
    assert all(f["saa_factor_max"] > simulate.SAA_CONTOUR for f in inside)
    assert all(f["saa_time"] == 0 or f["saa_exit"] < f["expstart"] for f in outside + inside)


def test_solar_modulation_and_saa_map():
    mjd = simulate.CR_MAXIMUM_MJD + np.linspace(0, 11 * 365.25, 1001)
    s = simulate.solar_modulation(mjd)
    assert s[0] == pytest.approx(1 + simulate.SOLAR_AMPLITUDE)
    assert s.min() == pytest.approx(1 - simulate.SOLAR_AMPLITUDE, abs=1e-4)
    assert 0.2 <= simulate.SOLAR_AMPLITUDE <= 0.3
    # solar maximum of 2001-2002 and 2013-2014 is a CR minimum
    # CR minima at the solar maxima (2003-12, 2014-05), a CR maximum at the 2009 solar minimum
    assert simulate.solar_modulation(53000.0) < 0.85 < 1.15 < simulate.solar_modulation(55050.0)
    assert simulate.solar_modulation(56800.0) < 0.85
    assert simulate.saa_factor(-25.0, -45.0) > 100
    assert simulate.saa_factor(-25.0, 135.0) == pytest.approx(1.0)
    assert simulate.saa_factor(25.0, -45.0) == pytest.approx(1.0)
    assert simulate.saa_factor(-20.0, -60.0) > simulate.SAA_CONTOUR


def test_schedule_crosses_the_saa_sometimes(config):
    inst = config.instruments["wfc3_uvis"]
    crossing = []
    for m in range(1, 13):
        for spec in simulate.month_schedule(instrument=inst, month=Month(2011, m), seed=1, darks_per_month=8):
            t = np.linspace(spec.expstart, spec.expend, 30)
            lat, lon, _ = hst_positions(elements=spec.elements, mjd=t)
            crossing.append(simulate.saa_factor(lat, lon).max() > simulate.SAA_CONTOUR)
    assert 0.05 < np.mean(crossing) < 0.45


def test_read_truth_columns(fetched):
    work, results = fetched
    frames, crs = simulate.read_truth(work)
    # a frame per exposure: several in a STIS set's truth file
    assert len(frames) == sum(len(_archive_for(inst).dataset(inst, d.obs_id).frames)
                              for inst, datasets, _ in results.values() for d in datasets)
    assert len(frames) > sum(1 for _ in work.rglob("*_truth.fits"))
    # each frame under the name the pipeline stores it under
    names = {simulate.frame_name(instrument=inst, spec=spec)
             for inst, _, _ in results.values() for spec in _archive_for(inst).schedule(inst, MONTHS[inst.name])}
    assert set(frames["obs_id"]) == names and frames["obs_id"].is_unique
    assert frames["obs_id"].str.fullmatch(r"oc\w{7}_[12]").sum() == 4
    assert (crs.groupby("obs_id").size() == frames.set_index("obs_id")["n_cr"]).all()
    assert "imset" not in crs
    for col in ("obs_id", "n_cr", "rate_true", "integration_time", "hst_lat", "hst_lon", "threshold_e"):
        assert col in frames
    for col in ("obs_id", "chip", "read", "x", "y", "n_pixels", "charge", "theta_deg", "phi_deg"):
        assert col in crs
    assert frames["n_cr"].sum() == len(crs)
    assert set(crs["obs_id"]) <= set(frames["obs_id"])
    assert (frames["hst_lat"].abs() <= 28.6).all()


def test_cli_simulate_writes_an_archive(tmp_path):
    from hstcosmicrays.cli import main

    rc = main(["-q", "simulate", "--instr", "stis", "--start", "2010-01", "--stop", "2010-02",
               "--out", str(tmp_path), "--darks-per-month", "2", "--seed", "3"])
    assert rc == 0
    flts = sorted(tmp_path.glob("mastDownload/HST/*/*_flt.fits"))
    assert len(flts) == 2  # a CR-SPLIT pair a month, in one file
    assert [fits.getval(f, "NEXTEND") for f in flts] == [6, 6]
    frames, crs = simulate.read_truth(tmp_path)
    assert len(frames) == 4 and len(crs) == frames["n_cr"].sum()
    assert sorted(frames["obs_id"]) == sorted(f"{f.name[:9]}_{k}" for f in flts for k in (1, 2))


def test_cli_simulate_onto_a_file_is_a_one_line_error(config, tmp_path, capsys):
    """--out naming an existing file: one line and exit 2 before anything is simulated; the
    library raises NotADirectoryError before writing."""
    from hstcosmicrays.cli import main
    from hstcosmicrays.intervals import parse_month

    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    rc = main(["-q", "simulate", "--instr", "stis", "--start", "2010-01", "--stop", "2010-01",
               "--out", str(existing), "--darks-per-month", "1"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hstcosmicrays simulate: error: --out {existing}: exists and is not a directory"
    with pytest.raises(NotADirectoryError, match="existing_file"):
        simulate.write_archive(instrument=config.instrument("stis"), start=parse_month("2010-01"),
                               stop=parse_month("2010-01"), out=existing, darks_per_month=1, seed=3)
    assert existing.read_text() == "keep me" and list(tmp_path.iterdir()) == [existing]


@pytest.mark.parametrize("argv, expected", [
    (["--instr", "acshrc", "--start", "2030-01", "--stop", "2030-02"],
     "acs_hrc: no month of 2030-01 to 2030-02 is in the instrument's active time (2002-03-01 to 2007-01-27)"),
    (["--instr", "stis", "--start", "2005-01", "--stop", "2005-01"],
     "stis_ccd: no month of 2005-01 is in the instrument's active time "
     "(1997-02-01 to today, inactive 2004-08-03 to 2009-05-01)"),
    (["--instr", "wfc3uvis", "--start", "2099-01", "--stop", "2099-02"],
     "wfc3_uvis: 2099-01 to 2099-02 have not ended yet (UTC); a month is simulated once it has ended"),
])
def test_cli_simulate_of_a_window_with_nothing_to_simulate_says_why(tmp_path, capsys, argv, expected):
    """Instead of 'wrote 0 datasets': one line giving the reason, exit 2, nothing written."""
    from hstcosmicrays.cli import main

    out = tmp_path / "sim"
    assert main(["-q", "simulate", *argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"hstcosmicrays simulate: error: {expected}\n"
    assert "wrote" not in captured.out and not out.exists()


def test_write_archive_leaves_out_months_not_ended_with_a_warning(config, tmp_path, monkeypatch, caplog):
    import datetime as dt

    from hstcosmicrays.intervals import parse_month

    monkeypatch.setattr(simulate, "utc_today", lambda: dt.date(2012, 2, 15))
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        written = simulate.write_archive(instrument=config.instrument("stis"), start=parse_month("2012-01"),
                                         stop=parse_month("2012-03"), out=tmp_path, darks_per_month=1, seed=3,
                                         shape=SHAPE)
    frames, _ = simulate.read_truth(tmp_path)
    assert len(written) == len(frames) == 1 and frames["month"].tolist() == ["2012-01"]
    assert "stis_ccd: 2012-02 to 2012-03 not simulated: a month is simulated once it has ended (UTC)" in caplog.text


# ----------------------------------------------------------------------------------------------
# opt-in features: DN frames with four amplifier gains, subarrays, ACS Reed-Solomon artefacts


def _featured(inst, **knobs):
    """``inst`` with opt-in simulation features on (through the configuration's own checks)."""
    import dataclasses

    return dataclasses.replace(inst, simulation=dataclasses.replace(inst.simulation, **knobs))


def _flt(inst, spec):
    """The FLT of one frame (a file of its own) as an open HDUList."""
    import io

    return fits.open(io.BytesIO(simulate.render_dataset(instrument=inst, spec=spec, suffixes=["FLT"], truth=False)["FLT"]))


def test_opt_in_features_leave_every_other_frame_as_it_was(config):
    """Subarray sets and Reed-Solomon frames come from random streams of their own: the schedule
    keeps its frames, times and names, and every frame that is neither has the very bytes of the
    default archive (products and truth CRs); the truth's FRAME rows only gain the features'
    columns. At their off values the features change nothing at all."""
    inst = config.instruments["acs_hrc"]
    on = _featured(inst, subarray_fraction=0.4, subarray_shape=(40, 56), reed_solomon_fraction=0.3)
    off = _featured(inst, dn_frames=False, amp_gain_factors=(), subarray_fraction=0.0, reed_solomon_fraction=0.0)
    kw = dict(month=Month(2003, 2), seed=8, darks_per_month=10, shape=(64, 64))
    plain = simulate.month_schedule(instrument=inst, **kw)
    featured = simulate.month_schedule(instrument=on, **kw)
    assert simulate.month_schedule(instrument=off, **kw) == plain
    assert [s.obs_id for s in featured] == [s.obs_id for s in plain]
    assert any(s.subarray for s in featured) and any(s.reed_solomon and not s.subarray for s in featured)
    untouched = 0
    for a, b in zip(plain, featured):
        assert (a.expstart, a.exptime, a.ccdgain, a.elements, a.seed) == (b.expstart, b.exptime, b.ccdgain, b.elements,
                                                                           b.seed)
        if b.subarray or b.reed_solomon:
            continue
        untouched += 1
        ra, rb = simulate.render_dataset(instrument=inst, spec=a), simulate.render_dataset(instrument=on, spec=b)
        assert ra["FLT"] == rb["FLT"] and ra["SPT"] == rb["SPT"]
        ta, tb = fits.open(io_bytes(ra["TRUTH"])), fits.open(io_bytes(rb["TRUTH"]))
        assert ta["CRS"].data.tobytes() == tb["CRS"].data.tobytes()
        extra = set(tb["FRAME"].columns.names) - set(ta["FRAME"].columns.names)
        assert extra == {"subarray", "ccdchip", "ltv1", "ltv2", "bunit", "rs_pixels", "pipeline_exclusion"}
        for col in ta["FRAME"].columns.names:
            assert ta["FRAME"].data[col][0] == tb["FRAME"].data[col][0], col
        assert tb["FRAME"].data["pipeline_exclusion"][0] == ""
        assert simulate.render_dataset(instrument=off, spec=a) == ra
    assert untouched >= 3


def io_bytes(data):
    import io

    return io.BytesIO(data)


@pytest.mark.parametrize("name, sub_shape", [("acs_wfc", (40, 300)), ("acs_wfc", (40, 2200)), ("wfc3_uvis", (48, 64)),
                                             ("acs_hrc", (40, 56)), ("stis_ccd", (40, 56))])
def test_subarray_files_carry_the_real_keywords_and_truth(config, name, sub_shape, tmp_path):
    """A subarray set: SUBARRAY = T with SIZAXIS1/2 and CENTERA1/2, one imset per exposure (EXTVER
    1; a STIS set's file one per exposure) with the CCDCHIP of its chip and LTV1/LTV2 = minus its
    origin on a full chip, read by the amplifier whose half it lies in (both amplifiers of the
    chip when it is wider than half, its columns meeting at the chip's middle), ATODGN 0 for the
    others; the truth gives its place and its CRs in its own pixels, and frames reads it as a
    subarray at that place."""
    from hstcosmicrays.frames import read_headers

    inst = _featured(config.instruments[name], subarray_fraction=1.0, subarray_shape=sub_shape)
    datasets = simulate.month_datasets(instrument=inst, month=MONTHS[name], seed=5, darks_per_month=4, shape=SHAPE)
    assert datasets
    rows, cols = inst.chip_shape
    for ds in datasets:
        paths = simulate.write_dataset(instrument=inst, spec=ds, out_dir=tmp_path / ds.obs_id)
        frames, crs = simulate.read_truth(paths["TRUTH"])
        with fits.open(paths["FLT"]) as hdul:
            primary = hdul[0].header
            assert primary["SUBARRAY"] is True and primary["NEXTEND"] == 3 * len(ds.frames)
            assert (primary["SIZAXIS2"], primary["SIZAXIS1"]) == sub_shape
            scis = [h for h in hdul if h.name == "SCI"]
            assert [h.ver for h in scis] == list(range(1, len(ds.frames) + 1))
            for spec, sci, (_, frame) in zip(ds.frames, scis, frames.iterrows()):
                x0, y0 = spec.origin
                assert sci.data.shape == sub_shape and 0 <= x0 <= cols - sub_shape[1] and 0 <= y0 <= rows - sub_shape[0]
                assert (sci.header["LTV1"], sci.header["LTV2"]) == (-x0, -y0) == (frame["ltv1"], frame["ltv2"])
                assert sci.header["CCDCHIP"] == frame["ccdchip"] == spec.ccdchip
                assert (primary["CENTERA1"], primary["CENTERA2"]) == (x0 + sub_shape[1] // 2 + 1,
                                                                      y0 + sub_shape[0] // 2 + 1)
                assert frame["subarray"] and frame["pipeline_exclusion"] == "subarray"
                assert frame["area_cm2"] == pytest.approx(sub_shape[0] * sub_shape[1] * (inst.pixel_size * 1e-4) ** 2)
                ccdamp = primary["CCDAMP"]
                if len(inst.chips) == 2:
                    halves = ("A", "B") if spec.ccdchip == 1 else ("C", "D")
                    middle = cols // 2
                    if sub_shape[1] <= middle:
                        assert len(ccdamp) == 1 and ccdamp in halves
                        assert (x0 + sub_shape[1] <= middle) == (ccdamp == halves[0])
                        assert (x0 >= middle) == (ccdamp == halves[1])
                    else:
                        assert ccdamp == "".join(halves) and x0 < middle < x0 + sub_shape[1]
                else:  # the full frame's amplifier
                    assert ccdamp == spec.ccdamp == {"acs_hrc": "C", "stis_ccd": "D"}[name]
                for amp in "ABCD":
                    key = f"ATODGN{amp}"
                    if key in primary:
                        assert (primary[key] > 0) == (amp in ccdamp), key
                mine = crs[crs["obs_id"] == frame["obs_id"]]
                assert len(mine) == frame["n_cr"] and (mine["chip"] == 1).all()
                assert ((mine["x"] >= -0.5) & (mine["x"] < sub_shape[1]) & (mine["y"] >= -0.5)
                        & (mine["y"] < sub_shape[0])).all()
        for spec, header in zip(ds.frames, read_headers(paths["FLT"], instrument=inst)):
            assert header.subarray and header.shape == sub_shape and header.nchips == 1
            assert header.ltv == (-spec.origin[0], -spec.origin[1]) and header.ccdamp == spec.ccdamp


@pytest.mark.parametrize("name", ["acs_hrc", "acs_wfc"])
def test_a_subarray_has_the_hot_pixels_and_bad_columns_of_its_window(config, name):
    """Subarrays at different places see different defects: a subarray's hot pixels (DQ 16) and
    bad columns (DQ 4) are those of a full frame of the same epoch inside its window."""
    import dataclasses

    inst = _featured(config.instruments[name], subarray_fraction=1.0, subarray_shape=(96, 160))
    spec = simulate.month_schedule(instrument=inst, month=MONTHS[name], seed=2, darks_per_month=2)[0]
    sub = simulate.simulate_frame(instrument=inst, spec=spec)
    full_spec = dataclasses.replace(spec, subarray=False, ccdchip=0, origin=(0, 0), shape=tuple(inst.chip_shape),
                                    ccdamp="ABCD" if len(inst.chips) == 2 else spec.ccdamp)
    full = simulate.simulate_frame(instrument=inst, spec=full_spec)
    (x0, y0), (ny, nx) = spec.origin, spec.shape
    k = list(inst.ccdchip).index(spec.ccdchip)
    window = full.dq[k, y0:y0 + ny, x0:x0 + nx]
    for bit in (16, inst.dq_bad):
        np.testing.assert_array_equal(sub.dq[0] & bit, window & bit)
    assert (sub.dq[0] & 16).any()


def test_reed_solomon_frames_have_runs_of_fill_flagged_dq_2(config):
    """ACS frames with Reed-Solomon errors: one to three runs of consecutive pixels (row after
    row) with SCI = ERR = 0 and DQ 2, counted in the truth, which says the pipeline leaves them
    out; no other frame has a DQ 2 pixel."""
    inst = _featured(config.instruments["acs_wfc"], reed_solomon_fraction=0.5)
    specs = simulate.month_schedule(instrument=inst, month=Month(2002, 6), seed=3, darks_per_month=8,
                                    shape=(32, 4096))
    assert 0 < sum(s.reed_solomon for s in specs) < len(specs)
    for spec in specs:
        frame = simulate.simulate_frame(instrument=inst, spec=spec)
        lost = (frame.dq & simulate.DQ_REED_SOLOMON) != 0
        assert frame.frame["rs_pixels"] == lost.sum()
        assert frame.frame["pipeline_exclusion"] == ("reed_solomon" if spec.reed_solomon else "")
        if not spec.reed_solomon:
            assert not lost.any()
            continue
        assert lost.any() and (frame.sci[lost] == 0).all() and (frame.err[lost] == 0).all()
        starts = np.flatnonzero(np.diff(np.concatenate([[0], lost.reshape(lost.shape[0], -1).ravel()]).astype(int)) == 1)
        assert 1 <= len(starts) <= 3   # runs in readout order (touching runs count as one)
    from hstcosmicrays.crreject import DQ_REED_SOLOMON

    assert DQ_REED_SOLOMON == simulate.DQ_REED_SOLOMON


def test_dn_frames_give_each_amplifier_its_gain(config, tmp_path):
    """dn_frames: the FLT's SCI and ERR are in DN (BUNIT COUNTS) and ATODGN[A-D] are
    CCDGAIN x amp_gain_factors; the truth (in electrons) is that of the frames in electrons."""
    factors = (0.7, 1.0, 1.3, 1.6)
    base = config.instruments["wfc3_uvis"]
    inst = _featured(base, dn_frames=True, amp_gain_factors=factors)
    electrons = _featured(base, amp_gain_factors=factors)
    spec = simulate.month_schedule(instrument=inst, month=MONTHS["wfc3_uvis"], seed=6, shape=(16, 4096))[0]
    with _flt(inst, spec) as hdul:
        for amp, f in zip("ABCD", factors):
            assert hdul[0].header[f"ATODGN{amp}"] == pytest.approx(round(spec.ccdgain * f, 4))
        assert {h.header["BUNIT"] for h in hdul[1:] if h.name in ("SCI", "ERR")} == {"COUNTS"}
    a = simulate.simulate_frame(instrument=inst, spec=spec)
    b = simulate.simulate_frame(instrument=electrons, spec=spec)
    for key in b.crs:
        np.testing.assert_array_equal(a.crs[key], b.crs[key])
    assert a.frame["bunit"] == "COUNTS" and b.frame["bunit"] == "ELECTRONS"
    assert not np.array_equal(a.sci, b.sci)

"""Tests of frames: header metadata, chips, amplifier gains, pointing, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from hstcosmicrays.config import load_config
from hstcosmicrays.frames import (
    FrameError,
    companion_path,
    identify_instrument,
    imset_extvers,
    pointing,
    read_chips,
    read_header,
    read_headers,
)

from _stis_files import write_stis_crsplit


@pytest.fixture(scope="module")
def config():
    return load_config()


def write_flt(
    path, *, instrume="WFC3", detector="UVIS", shape=(20, 16), extvers=(1, 2), ccdchips=(2, 1),
    bunit="ELECTRONS", ccdamp="ABCD", gains=(1.5, 1.6, 1.55, 1.65), readnoise=(3.0, 3.1, 3.2, 3.3),
    gain_kw="ATODGN", extra_primary=None, constant_dq=False, ltv1=0.0, seed=0, drop=(),
):
    """A minimal FLT-like file with the keywords frames reads; returns the science arrays."""
    rng = np.random.default_rng(seed)
    ph = fits.Header()
    cards = {
        "ROOTNAME": "IABC01XYQ", "INSTRUME": instrume, "DETECTOR": detector, "EXPTIME": 900.0,
        "FLASHDUR": 2.5, "EXPSTART": 55000.25, "EXPEND": 55000.25 + 900 / 86400,
        "DATE-OBS": "2009-06-18", "TIME-OBS": "06:00:00", "CCDAMP": ccdamp, "CCDGAIN": 1.5,
        "SUBARRAY": False, "CRSPLIT": 2, "IMAGETYP": "DARK", "TARGNAME": "DARK",
        "SAA_EXIT": "2009.169:05:30:00", "SAA_TIME": 1800,
    }
    if gain_kw == "ATODGN":
        for a, g, r in zip("ABCD", gains, readnoise):
            cards[f"ATODGN{a}"] = g
            cards[f"READNSE{a}"] = r
    else:
        cards["ATODGAIN"] = gains[0]
        cards["READNSE"] = readnoise[0]
    cards.update(extra_primary or {})
    for k, v in cards.items():
        if k not in drop:
            ph[k] = v
    hdus = [fits.PrimaryHDU(header=ph)]
    scis = []
    for ev, cc in zip(extvers, ccdchips):
        sci = rng.normal(10, 3, shape).astype(np.float32)
        scis.append(sci)
        sh = fits.Header()
        sh["BUNIT"] = bunit
        sh["CCDCHIP"] = cc
        sh["LTV1"] = ltv1
        sh["CTYPE1"], sh["CTYPE2"] = "RA---TAN", "DEC--TAN"
        sh["CRPIX1"], sh["CRPIX2"] = shape[1] / 2, shape[0] / 2
        sh["CRVAL1"], sh["CRVAL2"] = 150.25, -20.5
        sh["CD1_1"], sh["CD1_2"], sh["CD2_1"], sh["CD2_2"] = -1e-5, 0.0, 0.0, 1e-5
        sh["ORIENTAT"] = 33.0
        hdus.append(fits.ImageHDU(sci, header=sh, name="SCI", ver=ev))
        hdus.append(fits.ImageHDU(np.full(shape, 2.0, np.float32), name="ERR", ver=ev))
        if constant_dq:
            dh = fits.Header()
            dh["NPIX1"], dh["NPIX2"], dh["PIXVALUE"] = shape[1], shape[0], 0
            hdus.append(fits.ImageHDU(None, header=dh, name="DQ", ver=ev))
        else:
            dq = np.zeros(shape, np.int16)
            dq[1, 1] = 8192
            hdus.append(fits.ImageHDU(dq, name="DQ", ver=ev))
    fits.HDUList(hdus).writeto(path)
    return scis


def test_header_fields(tmp_path, config):
    inst = config.instrument("wfc3_uvis")
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p)
    h = read_header(p, instrument=inst)
    assert h.rootname == "iabc01xyq" and h.instrument == "wfc3_uvis"
    assert (h.instrume, h.detector) == ("WFC3", "UVIS")
    assert h.exptime == 900.0 and h.flashdur == 2.5
    assert h.date_obs == "2009-06-18T06:00:00"
    assert h.shape == (20, 16) and h.nchips == 2 and h.crsplit == 2
    assert h.gains == (1.5, 1.6, 1.55, 1.65) and h.readnoise == (3.0, 3.1, 3.2, 3.3)
    assert h.bunit == "ELECTRONS" and h.in_electrons
    assert h.saa_time == 1800.0
    # 2009 day 169 = 2009-06-18, 05:30 UTC
    assert h.saa_exit == pytest.approx(55000.0 + 5.5 / 24, abs=1e-8)
    assert h.mean_gain == pytest.approx(np.mean([1.5, 1.6, 1.55, 1.65]))


def test_header_defaults_when_absent(tmp_path, config):
    inst = config.instrument("wfc3_uvis")
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p, drop=("FLASHDUR", "SAA_EXIT", "SAA_TIME", "READNSEA", "READNSEB", "READNSEC", "READNSED"))
    h = read_header(p, instrument=inst)
    assert h.flashdur == 0.0
    assert math.isnan(h.saa_exit) and math.isnan(h.saa_time)
    assert h.readnoise == (inst.readnoise_default,)


@pytest.mark.parametrize("drop", ["EXPTIME", "EXPSTART", "DATE-OBS", "INSTRUME"])
def test_missing_keyword_names_file_and_key(tmp_path, config, drop):
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p, drop=(drop,))
    with pytest.raises(FrameError, match=rf"{p.name}.*{drop}"):
        read_header(p, instrument=config.instrument("wfc3_uvis"))


def test_wrong_instrument_and_not_fits(tmp_path, config):
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p)
    with pytest.raises(FrameError, match="WFC3/UVIS is not acs_wfc"):
        read_header(p, instrument=config.instrument("acs_wfc"))
    bad = tmp_path / "junk_flt.fits"
    bad.write_text("this is not FITS\n" * 10)
    with pytest.raises(FrameError, match="junk_flt.fits: not a FITS file"):
        read_header(bad, instrument=config.instrument("wfc3_uvis"))
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "absent_flt.fits", instrument=config.instrument("wfc3_uvis"))


def test_chips_electrons_gain_one_and_quadrant_readnoise(tmp_path, config):
    inst = config.instrument("wfc3_uvis")
    p = tmp_path / "iabc01xyq_flt.fits"
    shape = (10, inst.chip_shape[1])  # full width so that the amp split is at 2048
    scis = write_flt(p, shape=shape)
    chips = read_chips(p, instrument=inst)
    assert [c.extver for c in chips] == [1, 2] and [c.ccdchip for c in chips] == [2, 1]
    for c, s in zip(chips, scis):
        np.testing.assert_array_equal(c.sci, s)
        assert c.sci.dtype == np.float32 and c.dq.dtype.kind == "i" and c.dq.dtype.isnative
        assert c.gain.shape == s.shape and np.all(c.gain == 1)
        assert c.dq[1, 1] == 8192 and c.err is not None
    # CCDCHIP 2 (extver 1): C left, D right; CCDCHIP 1 (extver 2): A left, B right
    half = inst.chip_shape[1] // 2
    assert np.all(chips[0].readnoise[:, :half] == np.float32(3.2))
    assert np.all(chips[0].readnoise[:, half:] == np.float32(3.3))
    assert np.all(chips[1].readnoise[:, :half] == np.float32(3.0))
    assert np.all(chips[1].readnoise[:, half:] == np.float32(3.1))


def test_dn_file_gain_per_quadrant_and_single_amp(tmp_path, config):
    inst = config.instrument("wfc3_uvis")
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p, shape=(4, inst.chip_shape[1]), bunit="DN")
    c2, c1 = read_chips(p, instrument=inst)
    half = inst.chip_shape[1] // 2
    np.testing.assert_array_equal(c1.gain[0, [0, half - 1, half, -1]], np.float32([1.5, 1.5, 1.6, 1.6]))
    np.testing.assert_array_equal(c2.gain[0, [0, half - 1, half, -1]], np.float32([1.55, 1.55, 1.65, 1.65]))
    np.testing.assert_allclose(c1.electrons, c1.sci * c1.gain)
    # a subarray read by amplifier C only: the whole chip takes C's gain
    p2 = tmp_path / "iabc02xyq_flt.fits"
    write_flt(p2, shape=(8, 8), extvers=(1,), ccdchips=(2,), bunit="DN", ccdamp="C", ltv1=-100)
    (c,) = read_chips(p2, instrument=inst)
    assert np.all(c.gain == np.float32(1.55)) and np.all(c.readnoise == np.float32(3.2))
    h = read_header(p2, instrument=inst)
    assert h.subarray is False and h.nchips == 1  # SUBARRAY keyword wins over the shape


def test_subarray_split_follows_ltv1(tmp_path, config):
    inst = config.instrument("wfc3_uvis")
    p = tmp_path / "iabc01xyq_flt.fits"
    # 100 columns starting at physical column 2000: the A/B boundary (2048) is image column 48
    write_flt(p, shape=(4, 100), extvers=(2,), ccdchips=(1,), bunit="DN", ccdamp="AB", ltv1=-2000)
    (c,) = read_chips(p, instrument=inst)
    assert np.all(c.gain[:, :48] == np.float32(1.5)) and np.all(c.gain[:, 48:] == np.float32(1.6))


def test_one_chip_single_gain_keyword(tmp_path, config):
    inst = config.instrument("stis_ccd")
    p = tmp_path / "oabc01xyq_flt.fits"
    write_flt(p, instrume="STIS", detector="CCD", extvers=(1,), ccdchips=(1,), bunit="COUNTS",
              ccdamp="D", gains=(4.0,), readnoise=(7.0,), gain_kw="ATODGAIN", constant_dq=True)
    (c,) = read_chips(p, instrument=inst)
    assert np.all(c.gain == 4.0) and np.all(c.readnoise == 7.0)
    assert c.dq.shape == c.sci.shape and not c.dq.any()  # constant DQ expanded
    h = read_header(p, instrument=inst)
    assert h.gains == (4.0,) and h.mean_gain == 4.0


def test_pointing_and_identify(tmp_path, config):
    p = tmp_path / "iabc01xyq_flt.fits"
    write_flt(p)
    ra, dec, orient = pointing(p)
    assert (ra, dec, orient) == pytest.approx((150.25, -20.5, 33.0))
    assert identify_instrument(p, config=config).name == "wfc3_uvis"
    spt = tmp_path / "iabc01xyq_spt.fits"
    spt.write_bytes(b"")
    assert companion_path(p, "spt") == spt
    assert companion_path(p, "shm") is None


def test_wfpc2_c0m_with_c1m_beside_it(tmp_path, config):
    """A simulated WFPC2 dark (small chips): four chips in DN with ATODGAIN, DQ from the C1M."""
    from hstcosmicrays import simulate
    from hstcosmicrays.intervals import Month

    inst = config.instrument("wfpc2")
    spec = simulate.month_schedule(instrument=inst, month=Month(2005, 3), seed=3, darks_per_month=1,
                                   shape=(48, 40))[0]
    paths = simulate.write_dataset(instrument=inst, spec=spec, out_dir=tmp_path)
    h = read_header(paths["C0M"], instrument=inst)
    assert h.nchips == 4 and h.shape == (48, 40) and h.bunit == "DN" and not h.in_electrons
    assert h.gains == (spec.ccdgain,) and h.detector == "WFPC2"
    chips = read_chips(paths["C0M"], instrument=inst)
    assert [c.extver for c in chips] == [1, 2, 3, 4] and all(c.err is None for c in chips)
    with fits.open(paths["C1M"]) as c1m:
        for c in chips:
            np.testing.assert_array_equal(c.dq, c1m["DQ", c.extver].data)
            assert np.all(c.gain == np.float32(spec.ccdgain))
    paths["C1M"].unlink()
    with pytest.raises(FrameError, match="no C1M"):
        read_chips(paths["C0M"], instrument=inst)


# ---------------------------------------------------------------------------------------------
# STIS: the sub-exposures of a CR-SPLIT observation are the imsets of one FLT


def test_each_imset_of_a_stis_crsplit_file_is_a_frame_with_its_own_times(tmp_path, config):
    p = tmp_path / "ocmv35010_flt.fits"
    write_stis_crsplit(p, n=3)
    inst = config.instrument("stis_ccd")
    headers = read_headers(p, instrument=inst)
    assert [h.rootname for h in headers] == ["ocmv35010_1", "ocmv35010_2", "ocmv35010_3"]
    assert [h.imset for h in headers] == [1, 2, 3] and all(h.nchips == 1 for h in headers)
    assert [h.exptime for h in headers] == [1101.0, 1102.0, 1103.0]
    assert [h.date_obs[11:] for h in headers] == ["00:00:00", "00:20:00", "00:40:00"]
    assert [h.saa_time for h in headers] == [100.0, 1300.0, 2500.0]
    assert headers[2].expstart == pytest.approx(56000.0 + 2400 / 86400)
    assert all(h.path == p and h.crsplit == 3 and h.imset_ok for h in headers)
    chips = read_chips(p, instrument=inst, imset=3)
    assert [(c.extver, c.ccdchip) for c in chips] == [(3, 1)]
    assert np.all(chips[0].dq == 3) and chips[0].sci.mean() > 250
    assert imset_extvers(inst, 2) == (2,) and imset_extvers(inst) == (1,)
    # without imset: the first exposure stands for the file (identify, the archive's index)
    assert read_header(p, instrument=inst).rootname == "ocmv35010"
    with pytest.raises(FrameError, match=r"ocmv35010_flt.fits: no imset 4 \(expected EXTVER \[4\]\)"):
        read_header(p, instrument=inst, imset=4)


def test_a_stis_file_of_one_imset_is_one_frame_and_other_imsets_are_chips(tmp_path, config):
    p = tmp_path / "ocmv35020_flt.fits"
    write_stis_crsplit(p, n=1)
    (h,) = read_headers(p, instrument=config.instrument("stis_ccd"))
    assert (h.rootname, h.imset, h.exptime) == ("ocmv35010", 0, 1101.0)
    uvis = tmp_path / "uvis_flt.fits"
    write_flt(uvis)
    inst = config.instrument("wfc3_uvis")
    (h,) = read_headers(uvis, instrument=inst)
    assert (h.rootname, h.imset, h.nchips) == ("iabc01xyq", 0, 2)
    with pytest.raises(ValueError, match="imsets are the chips of one exposure"):
        imset_extvers(inst, 2)


def test_a_stis_imset_without_its_exposure_time_is_named(tmp_path, config):
    p = tmp_path / "ocmv35010_flt.fits"
    write_stis_crsplit(p, n=2, primary_times=False)
    with fits.open(p, mode="update") as hdul:
        del hdul["SCI", 2].header["EXPTIME"]
    with pytest.raises(FrameError, match=r"ocmv35010_flt.fits \(imset 2\): missing keyword EXPTIME"):
        read_headers(p, instrument=config.instrument("stis_ccd"))


# ---------------------------------------------------------------------------------------------
# truncated files: refused when opened, with one line that names the file


@pytest.fixture(scope="module")
def acs_flt(config, tmp_path_factory):
    """A simulated ACS/WFC FLT of small chips (NEXTEND 6), and where each of its HDUs starts."""
    from hstcosmicrays import simulate
    from hstcosmicrays.intervals import Month

    inst = config.instrument("acs_wfc")
    spec = simulate.month_schedule(instrument=inst, month=Month(2005, 3), seed=3, darks_per_month=1,
                                   shape=(64, 48))[0]
    flt = simulate.write_dataset(instrument=inst, spec=spec, out_dir=tmp_path_factory.mktemp("acs"))["FLT"]
    with fits.open(flt) as hdul:
        places = {(h.name, h.ver): hdul.fileinfo(i) for i, h in enumerate(hdul)}
    return flt, places


#: Where a copy is cut, from the places of the HDUs: (HDU, hdrLoc or datLoc, bytes after it).
CUTS = {
    "inside the data of SCI,1": (("SCI", 1), "datLoc", 100),  # was: TypeError from hdu.data
    "inside the data of ERR,1": (("ERR", 1), "datLoc", 100),  # was: missing extension DQ,1
    "inside the header of DQ,1": (("DQ", 1), "hdrLoc", 1000),
    "between DQ,1 and SCI,2": (("SCI", 2), "hdrLoc", 0),  # only NEXTEND tells
    "inside the primary header": (("PRIMARY", 1), "hdrLoc", 1000),
}


def cut_copy(flt, places, tmp_path, where):
    hdu, loc, after = CUTS[where]
    cut = tmp_path / flt.name
    cut.write_bytes(flt.read_bytes()[: places[hdu][loc] + after])
    return cut


@pytest.mark.parametrize("where", CUTS)
def test_every_reader_refuses_a_truncated_file_naming_it(acs_flt, config, tmp_path, where):
    flt, places = acs_flt
    cut = cut_copy(flt, places, tmp_path, where)
    inst = config.instrument("acs_wfc")
    readers = [
        lambda: read_headers(cut, instrument=inst), lambda: read_header(cut, instrument=inst),
        lambda: read_chips(cut, instrument=inst), lambda: identify_instrument(cut, config=config),
        lambda: pointing(cut),
    ]
    for read in readers:
        with pytest.raises(FrameError) as exc:
            read()
        assert str(exc.value).startswith(f"{cut}: truncated: {cut.stat().st_size:,} ")
        assert "\n" not in str(exc.value)


def test_a_truncated_file_says_how_much_its_headers_announce(acs_flt, config, tmp_path):
    flt, places = acs_flt
    cut = cut_copy(flt, places, tmp_path, "inside the data of ERR,1")
    end = places[("ERR", 1)]["datLoc"] + places[("ERR", 1)]["datSpan"]
    with pytest.raises(FrameError) as exc:
        read_chips(cut, instrument=config.instrument("acs_wfc"))
    assert str(exc.value) == (f"{cut}: truncated: {cut.stat().st_size:,} of at least {end:,} bytes "
                              "(the FITS headers announce more data)")
    cut = cut_copy(flt, places, tmp_path, "between DQ,1 and SCI,2")
    with pytest.raises(FrameError, match=r"truncated: [\d,]+ bytes hold 3 of the 6 extensions its primary "
                                         r"header announces \(NEXTEND\)$"):
        read_header(cut, instrument=config.instrument("acs_wfc"))


def test_bytes_after_the_last_hdu_are_no_truncation(acs_flt, config, tmp_path, caplog):
    """Padding or junk after a whole file: read as before, one warning in the log (not astropy's)."""
    flt, _ = acs_flt
    padded = tmp_path / flt.name
    padded.write_bytes(flt.read_bytes() + bytes(100))
    inst = config.instrument("acs_wfc")
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        chips = read_chips(padded, instrument=inst)
    assert len(chips) == 2 and chips[0].sci.shape == (64, 48)
    assert {r.getMessage() for r in caplog.records} == {f"{padded}: 100 bytes after its HDU 6, not a FITS HDU: ignored"}


@pytest.mark.parametrize("name, sub_shape", [("acs_wfc", None), ("acs_wfc", (24, 300)), ("acs_wfc", (24, 2300)),
                                             ("wfc3_uvis", None), ("wfc3_uvis", (24, 2300)), ("acs_hrc", (40, 48))])
def test_simulated_dn_frames_read_as_the_electrons_of_each_amplifier(tmp_path, config, name, sub_shape):
    """The simulated archive's DN frames (BUNIT COUNTS, amplifier gains 0.7 to 1.6 times
    CCDGAIN): read_chips converts every pixel with the gain of the amplifier that read it, in
    full frames and in subarrays (one amplifier's, or across the chip's middle, split at
    ``chip_shape[1] / 2 + LTV1``), and gives the electrons of the same frames written in
    electrons; the read noise is each amplifier's too."""
    import dataclasses

    from hstcosmicrays import simulate
    from hstcosmicrays.intervals import Month

    base = config.instrument(name)
    knobs = dict(amp_gain_factors=(0.7, 1.0, 1.3, 1.6))
    if sub_shape:
        knobs.update(subarray_fraction=1.0, subarray_shape=sub_shape)
    electrons = dataclasses.replace(base, simulation=dataclasses.replace(base.simulation, **knobs))
    dn = dataclasses.replace(base, simulation=dataclasses.replace(electrons.simulation, dn_frames=True))
    month = Month(2004, 6) if name == "acs_hrc" else Month(2012, 6)
    shape = (16, 4096) if len(base.chips) == 2 else (32, 48)
    for spec in simulate.month_schedule(instrument=dn, month=month, seed=5, darks_per_month=2, shape=shape):
        want = simulate.simulate_frame(instrument=electrons, spec=spec)
        path = tmp_path / f"{spec.obs_id}_flt.fits"
        simulate.build_products(instrument=dn, spec=spec, suffixes=["FLT"])["FLT"].writeto(path)
        header = read_header(path, instrument=dn)
        assert header.bunit == "COUNTS" and not header.in_electrons and header.subarray == bool(sub_shape)
        chips = read_chips(path, instrument=dn)
        assert len(chips) == want.sci.shape[0]
        for chip, sci, rn in zip(chips, want.sci, simulate._readnoise_columns(dn, spec, len(chips))):
            np.testing.assert_allclose(chip.electrons, sci, rtol=3e-7, atol=1e-4)
            np.testing.assert_array_equal(chip.readnoise, np.broadcast_to(rn, sci.shape))
        assert {round(float(g), 4) for c in chips for g in np.unique(c.gain)} == {
            g for a, g in zip("ABCD", spec.amp_gains) if a in spec.ccdamp}


@pytest.mark.parametrize("name", ["acs_wfc", "wfc3_uvis"])
def test_simulated_dn_frames_narrower_than_a_chip_read_as_their_electrons(tmp_path, config, name):
    """A full frame simulated narrower than the chip (the ``shape`` argument; LTV1 = 0) holds the
    chip's first columns, all left of its middle: frames reads them with the left amplifier's
    gain, and the simulator divided the right half of the array by the right amplifier's, so
    the electrons read back were off by the ratio of the two gains there."""
    import dataclasses

    from hstcosmicrays import simulate
    from hstcosmicrays.intervals import Month

    base = config.instrument(name)
    electrons = dataclasses.replace(base, simulation=dataclasses.replace(base.simulation,
                                                                          amp_gain_factors=(0.7, 1.0, 1.3, 1.6)))
    dn = dataclasses.replace(electrons, simulation=dataclasses.replace(electrons.simulation, dn_frames=True))
    spec = simulate.month_schedule(instrument=dn, month=Month(2012, 6), seed=5, darks_per_month=2, shape=(16, 256))[0]
    want = simulate.simulate_frame(instrument=electrons, spec=spec)
    path = tmp_path / f"{spec.obs_id}_flt.fits"
    simulate.build_products(instrument=dn, spec=spec, suffixes=["FLT"])["FLT"].writeto(path)
    chips = read_chips(path, instrument=dn)
    assert len(chips) == 2 and chips[0].sci.shape == (16, 256)
    for chip, sci in zip(chips, want.sci):
        np.testing.assert_allclose(chip.electrons, sci, rtol=3e-7, atol=1e-4)

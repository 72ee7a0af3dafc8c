"""Tests of ir: IMA ramps read in time order, CRs per read from the ramp-fit flags and from jumps,
measurement, splitting, and the IR pipeline end to end on the simulated archive."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from hstcosmicrays import cli
from hstcosmicrays.config import load_config
from hstcosmicrays.frames import FrameError, read_chips, read_header
from hstcosmicrays.intervals import parse_month
from hstcosmicrays.ir import (
    detect_jumps,
    jump_excess,
    measure_ima,
    measure_ramp,
    new_cr_flags,
    read_ramp,
    split_ima,
)
from hstcosmicrays.schema import as_table
from hstcosmicrays.simulate import month_schedule, read_truth, write_dataset
from hstcosmicrays.store import read_committed, read_ledger


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def wfc3ir(config):
    return config.instrument("wfc3_ir")


@pytest.fixture(scope="module")
def nic2(config):
    return config.instrument("nicmos_nic2")


EXPSTART = 56000.25
RN = 14.0  # e- per read
PLUS = [(0, 0, 1.0), (-1, 0, 0.5), (1, 0, 0.5), (0, -1, 0.5), (0, 1, 0.5)]  # (dy, dx, fraction)


def make_ramp(*, shape=(40, 48), nsamp=8, dt=50.0, dark=0.05, crs=(), hot=(), seed=1, flag_bit=8192):
    """Counts (e-, time order, zeroth read 0), DQ with the CR bit from the hit read on, times.

    ``crs``: (read, y, x, peak e-) plus-shaped CRs of 5 pixels (peak, and half of it around).
    ``hot``: (y, x, rate e-/s) hot pixels.
    """
    rng = np.random.default_rng(seed)
    time = np.arange(nsamp) * dt
    incr = np.full((nsamp - 1,) + shape, dark * dt, dtype=np.float64)
    for y, x, rate in hot:
        incr[:, y, x] = rate * dt
    dq = np.zeros((nsamp,) + shape, dtype=np.int16)
    for read, y, x, peak in crs:
        for dy, dx, f in PLUS:
            incr[read - 1, y + dy, x + dx] += peak * f
            dq[read:, y + dy, x + dx] |= flag_bit
    counts = np.zeros((nsamp,) + shape)
    counts[1:] = np.cumsum(incr, axis=0)
    noise = rng.normal(0.0, RN, (nsamp,) + shape)
    counts[1:] += noise[1:] - noise[0]  # zeroth read subtracted
    return counts.astype(np.float32), dq, time


def write_ima(path, *, counts, dq, time, instrume="WFC3", gain=1.0, flags=True, rootname="IRAM01ABQ",
              cr_bit=8192):
    """A minimal IMA: NSAMP imsets in reverse time order, SCI a count rate, TIME constant arrays."""
    nsamp, ny, nx = counts.shape
    ph = fits.Header()
    cards = {
        "ROOTNAME": rootname, "INSTRUME": instrume, "EXPTIME": float(time[-1]), "EXPSTART": EXPSTART,
        "EXPEND": EXPSTART + time[-1] / 86400, "DATE-OBS": "2012-03-14", "TIME-OBS": "06:00:00",
        "NSAMP": nsamp, "SUBARRAY": True,
    }
    if instrume == "WFC3":
        cards["DETECTOR"] = "IR"
        for a in "ABCD":
            cards[f"ATODGN{a}"] = 2.5
            cards[f"READNSE{a}"] = RN * math.sqrt(2.0)  # WFC3 headers give the CDS noise
        bunit = "ELECTRONS/S"
    else:
        cards["CAMERA"] = 2
        cards["ADCGAIN"] = gain
        bunit = "COUNTS/S"
    for k, v in cards.items():
        ph[k] = v
    hdus = [fits.PrimaryHDU(header=ph)]
    for extver in range(1, nsamp + 1):
        k = nsamp - extver
        rate = counts[k] / time[k] / gain if time[k] > 0 else np.zeros_like(counts[k])
        sh = fits.Header()
        sh["BUNIT"] = bunit
        sh["SAMPTIME"] = float(time[k])
        hdus.append(fits.ImageHDU(rate.astype(np.float32), header=sh, name="SCI", ver=extver))
        hdus.append(fits.ImageHDU(np.ones((ny, nx), np.float32), name="ERR", ver=extver))
        dq_k = dq[k] if flags else dq[k] & ~np.int16(cr_bit)  # no ramp fit: no CR flags
        hdus.append(fits.ImageHDU(dq_k.astype(np.int16), name="DQ", ver=extver))
        for name, value in (("SAMP", int(k > 0)), ("TIME", float(time[k]))):
            h = fits.Header()
            h["PIXVALUE"], h["NPIX1"], h["NPIX2"] = value, nx, ny
            hdus.append(fits.ImageHDU(header=h, name=name, ver=extver))
    fits.HDUList(hdus).writeto(path)


# ---------------------------------------------------------------------------------------------
# reading


def test_read_ramp_puts_reads_in_time_order_in_electrons(tmp_path, wfc3ir, nic2):
    counts, dq, time = make_ramp(crs=[(3, 20, 20, 600.0)])
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time)
    ramp = read_ramp(p, instrument=wfc3ir)
    assert ramp.n_reads == 8 and ramp.time.tolist() == time.tolist()
    np.testing.assert_allclose(ramp.counts, counts, atol=2e-3, rtol=1e-5)
    np.testing.assert_array_equal(ramp.dq, dq)
    assert ramp.ramp_fitted and ramp.integration_time == 350.0
    assert ramp.readnoise == pytest.approx(RN, rel=1e-6)  # CDS keyword / sqrt(2)
    assert read_header(p, instrument=wfc3ir).nsamp == 8
    # EXTVER 1 is the last read
    with fits.open(p) as h:
        np.testing.assert_allclose(h["SCI", 1].data * h["TIME", 1].header["PIXVALUE"], counts[-1], rtol=1e-5, atol=2e-3)
    # NICMOS: DN/s times ADCGAIN; no read-noise keyword -> readnoise_default per read; CAMERA
    q = tmp_path / "nram01abq_ima.fits"
    write_ima(q, counts=counts, dq=dq, time=time, instrume="NICMOS", gain=5.4, rootname="NRAM01ABQ")
    nramp = read_ramp(q, instrument=nic2)
    np.testing.assert_allclose(nramp.counts, counts, rtol=1e-5, atol=2e-3)
    assert nramp.readnoise == nic2.readnoise_default
    with pytest.raises(FrameError, match="ir.read_ramp"):
        read_chips(q, instrument=nic2)
    with pytest.raises(FrameError, match="not NICMOS|is not nicmos_nic2"):
        read_ramp(p, instrument=nic2)


def test_read_ramp_refuses_too_few_reads_and_flags_non_finite(tmp_path, wfc3ir):
    counts, dq, time = make_ramp(nsamp=2)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts[:1], dq=dq[:1], time=time[:1])
    with pytest.raises(FrameError, match="at least 2"):
        read_ramp(p, instrument=wfc3ir)
    counts, dq, time = make_ramp(nsamp=5)
    counts[2, 7, 9] = np.nan
    q = tmp_path / "iram02abq_ima.fits"
    write_ima(q, counts=counts, dq=dq, time=time, rootname="IRAM02ABQ")
    ramp = read_ramp(q, instrument=wfc3ir)
    assert ramp.counts[2, 7, 9] == 0 and ramp.dq[2, 7, 9] & wfc3ir.dq_bad
    assert np.isfinite(ramp.counts).all()


# ---------------------------------------------------------------------------------------------
# which reads


CRS = [(1, 12, 12, 800.0), (3, 20, 30, 500.0), (3, 30, 15, 2000.0), (7, 25, 40, 400.0)]


def test_the_default_read_noise_is_that_of_one_read_like_the_keywords_give(wfc3ir):
    """WFC3/IR's READNSE keywords (about 20 e-) are the noise of a read pair; without them the
    default must give the same noise per read, not 20 e- per read (a sqrt(2) higher jump
    threshold). It also matches the simulated ramps' noise per read."""
    from hstcosmicrays.ir import read_noise_per_read

    with_keywords = read_noise_per_read(header={f"READNSE{a}": 20.0 for a in "ABCD"}, instrument=wfc3ir)
    without = read_noise_per_read(header={}, instrument=wfc3ir)
    assert without == pytest.approx(with_keywords, rel=0.02)
    assert without == pytest.approx(wfc3ir.simulation.read_noise, rel=0.02)


def test_nicmos_cr_pixels_exclude_its_defective_pixels_not_its_poor_dark_ones(config):
    """NICMOS DQ (calnica): 4 poor dark correction, 32 defective pixel, 512 cosmic ray. A CR on
    pixels of uncertain dark is a CR; one on defective pixels is not."""
    from hstcosmicrays.labels import label_crs

    for name in ("nicmos_nic1", "nicmos_nic2", "nicmos_nic3"):
        inst = config.instrument(name)
        dq = np.zeros((12, 12), dtype=np.int16)
        dq[2, 2:5] = inst.dq_cr | 4      # poor dark correction: still a CR
        dq[8, 2:5] = inst.dq_cr | 32     # defective pixels: never a CR
        dq[5, 8:11] = inst.dq_cr
        _, n = label_crs(dq=dq, cr_bit=inst.dq_cr, bad_bit=inst.dq_bad, min_pixels=3, max_pixels=100)
        assert (inst.dq_cr, inst.dq_bad, n) == (512, 32, 2), name


def test_new_flags_mark_the_read_of_arrival_only():
    _, dq, _ = make_ramp(crs=CRS)
    new = new_cr_flags(dq=dq, cr_bit=8192)
    assert new.shape == (7, 40, 48)
    for read, y, x, _ in CRS:
        assert new[read - 1, y, x] and new[:, y, x].sum() == 1


def test_jumps_are_found_above_the_noise_and_not_on_hot_pixels():
    counts, _, time = make_ramp(crs=CRS, hot=[(5, 5, 80.0), (35, 44, 400.0)], nsamp=8)
    excess, rate = jump_excess(counts=counts, time=time)
    assert rate[5, 5] == pytest.approx(80.0, rel=0.05) and rate[35, 44] == pytest.approx(400.0, rel=0.02)
    hits = detect_jumps(excess=excess, rate=rate, time=time, readnoise=RN)
    for read, y, x, peak in CRS:
        for dy, dx, f in PLUS:
            assert hits[read - 1, y + dy, x + dx]
        assert excess[read - 1, y, x] == pytest.approx(peak, abs=6 * RN)
    injected = sum(len(PLUS) for _ in CRS)
    # a 4-sigma threshold on ~13,000 noise differences: a handful of single false pixels at most
    assert injected <= hits.sum() <= injected + 5
    assert not hits[:, 5, 5].any() and not hits[:, 35, 44].any()
    with pytest.raises(ValueError, match="at least 3 differences"):
        detect_jumps(excess=excess[:2], rate=rate, time=time[:3], readnoise=RN)


@pytest.mark.parametrize("flags", [True, False], ids=["flags", "jumps"])
def test_measure_ramp_finds_each_cr_once_in_its_read(tmp_path, wfc3ir, flags):
    counts, dq, time = make_ramp(crs=CRS, hot=[(8, 30, 200.0)])
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time, flags=flags)
    ramp = read_ramp(p, instrument=wfc3ir)
    assert ramp.ramp_fitted == flags
    res = measure_ramp(ramp=ramp, instrument=wfc3ir, spt_path=None, month="2012-03")
    cr = res.cosmic_rays
    order = np.lexsort((cr["x"], cr["y"], cr["read"]))
    assert cr["read"][order].tolist() == [r for r, *_ in sorted(CRS, key=lambda c: (c[0], c[1], c[2]))]
    truth = sorted(CRS, key=lambda c: (c[0], c[1], c[2]))
    np.testing.assert_allclose(cr["x"][order], [c[2] for c in truth], atol=0.1)
    np.testing.assert_allclose(cr["y"][order], [c[1] for c in truth], atol=0.1)
    assert cr["n_pixels"].tolist() == [5] * 4
    # energy = the jump: 3 x peak, +- the noise of 5 differences
    np.testing.assert_allclose(cr["energy"][order], [3 * c[3] for c in truth], atol=5 * math.sqrt(5 * 2) * RN)
    assert set(cr["chip"].tolist()) == {1}
    ex = res.exposure
    assert ex["method"] == "ir_ramp" and ex["group_id"] == -1 and ex["n_cr"] == 4
    # rate over the sampled ramp time and the area of the science pixels searched (border 5)
    assert ex["integration_time"] == 350.0
    area = wfc3ir.detector_area * (30 * 38) / 1014**2
    assert ex["rate"] == pytest.approx(4 / 350.0 / area, rel=1e-6)
    assert ex["fraction_hit"] == pytest.approx(20 / (30 * 38))
    as_table("exposures", {k: [v] for k, v in ex.items()})
    as_table("cosmic_rays", {**cr, "exposure_index": np.zeros(len(cr["x"]), np.int64)})


@pytest.mark.parametrize("flags", [True, False], ids=["flags", "jumps"])
def test_a_pixel_hit_twice_gives_two_crs(tmp_path, wfc3ir, flags):
    """The ramp fit keeps a pixel flagged after its first CR; the second CR still shows as a jump."""
    crs = [(2, 20, 20, 700.0), (5, 20, 20, 900.0)]
    counts, dq, time = make_ramp(crs=crs)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time, flags=flags)
    res = measure_ima(p, instrument=wfc3ir)
    assert sorted(res.cosmic_rays["read"].tolist()) == [2, 5]
    assert res.exposure["month"] == "2012-03"
    # two CRs of 5 pixels each, on the same 5 pixels: 5 science pixels were hit, not 10
    assert res.cosmic_rays["n_pixels"].tolist() == [5, 5]
    assert res.exposure["fraction_hit"] == pytest.approx(5 / (30 * 38))


def test_cli_measure_reads_an_ima_file_by_its_reads(tmp_path, config, wfc3ir, capsys):
    """`hstcosmicrays measure X_ima.fits` measures the ramp (ir.measure_ima), as it does an FLT."""
    import pandas as pd

    from hstcosmicrays.measure import measure_file

    counts, dq, time = make_ramp(crs=CRS)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time)
    out = tmp_path / "crs.csv"
    assert cli.main(["measure", str(p), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote 4 CRs" in text and "CRs: 4" in text and "iram01abq" in text
    expected = measure_ima(p, instrument=wfc3ir)
    table = pd.read_csv(out)
    assert sorted(table["read"]) == sorted(expected.cosmic_rays["read"].tolist()) == [1, 3, 3, 7]
    np.testing.assert_allclose(table["energy"], expected.cosmic_rays["energy"], rtol=1e-6)
    frame = pd.read_csv(tmp_path / "crs_frame.csv")
    assert frame["method"][0] == "ir_ramp" and frame["n_cr"][0] == 4
    # the library's FLT measurement names the function to use instead of failing in read_chips
    with pytest.raises(FrameError, match="ir.measure_ima"):
        measure_file(p, config=config)


def test_border_and_bad_pixels_are_never_crs(tmp_path, wfc3ir):
    counts, dq, time = make_ramp(crs=[(2, 20, 43, 900.0), (4, 20, 20, 900.0), (4, 20, 30, 900.0)])
    dq[:, 20, 20] |= wfc3ir.dq_bad  # the centre of a plus: 4 pixels left, not 8-connected...
    dq[:, 20, 29:32] |= wfc3ir.dq_bad  # ... the middle row of the other: 2 pixels left
    for flags in (True, False):
        p = tmp_path / f"iram0{int(flags)}abq_ima.fits"
        write_ima(p, counts=counts, dq=dq, time=time, flags=flags, rootname=f"IRAM0{int(flags)}ABQ")
        res = measure_ima(p, instrument=wfc3ir)
        # the first CR straddles the 5-pixel border (columns 42-44 of 48): 1 pixel inside;
        # the second has 4 pixels on a diamond, each diagonal to the next: one CR of 4 pixels
        assert res.cosmic_rays["n_pixels"].tolist() == [4]
        assert res.cosmic_rays["read"].tolist() == [4]


def test_jump_sigma_comes_from_the_configuration(tmp_path, wfc3ir):
    user = tmp_path / "user.yaml"
    user.write_text("instruments:\n  wfc3_ir:\n    jump_sigma: 40.0\n")
    strict = load_config(user).instrument("wfc3_ir")
    assert strict.jump_sigma == 40.0 and wfc3ir.jump_sigma == 4.0
    counts, dq, time = make_ramp(crs=CRS)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time, flags=False)
    assert measure_ima(p, instrument=wfc3ir).n_cr == 4
    # 40 sigma of 20 e- = 800 e-: only the CR of peak 2000 e- keeps 5 pixels above it
    only = measure_ima(p, instrument=strict)
    assert only.n_cr == 1 and only.cosmic_rays["read"].tolist() == [3]
    assert measure_ima(p, instrument=wfc3ir, ksigma=40.0).n_cr == 1


# ---------------------------------------------------------------------------------------------
# splitting


def test_split_ima_writes_one_file_per_read(tmp_path, wfc3ir, capsys):
    counts, dq, time = make_ramp(crs=CRS[:2], nsamp=5)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time)
    before = p.read_bytes()
    out = split_ima(p, out_dir=tmp_path / "reads")
    assert [f.name for f in out] == [f"iram01abq_read{k:02d}.fits" for k in range(5)]
    assert p.read_bytes() == before
    for k, f in enumerate(out):
        with fits.open(f) as h:
            assert [x.name for x in h[1:]] == ["SCI", "ERR", "DQ", "SAMP", "TIME"]
            assert all(x.ver == 1 for x in h[1:])
            ph = h[0].header
            assert (ph["READNUM"], ph["IMSET"], ph["NSAMP"], ph["ORIGNSMP"]) == (k, 5 - k, 1, 5)
            assert h["TIME"].header["PIXVALUE"] == time[k]
            np.testing.assert_array_equal(h["DQ"].data, dq[k])
            np.testing.assert_allclose(h["SCI"].data * time[k], counts[k], rtol=1e-5, atol=2e-3)
    assert cli.main(["split-ima", str(p), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote 5 reads" in capsys.readouterr().out
    assert len(list((tmp_path / "cli").glob("*_read*.fits"))) == 5
    with pytest.raises(FileNotFoundError):
        split_ima(tmp_path / "missing_ima.fits", out_dir=tmp_path)


def test_split_ima_refuses_a_file_that_is_not_a_ramp(tmp_path, capsys):
    flt = tmp_path / "iab01xyq_flt.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32), name="SCI", ver=1)]).writeto(flt)
    with pytest.raises(FrameError, match="no NSAMP keyword; not an up-the-ramp IMA file"):
        split_ima(flt, out_dir=tmp_path / "reads")
    assert cli.main(["split-ima", str(flt), "--out", str(tmp_path / "reads")]) != 0
    assert "iab01xyq_flt.fits: no NSAMP keyword" in capsys.readouterr().err
    assert not (tmp_path / "reads").exists()


def test_split_ima_onto_a_file_is_a_one_line_error(tmp_path, capsys):
    """--out naming an existing file: NotADirectoryError (library), one line and exit 2 (CLI); the
    file is left as it was."""
    counts, dq, time = make_ramp(nsamp=4)
    p = tmp_path / "iram01abq_ima.fits"
    write_ima(p, counts=counts, dq=dq, time=time)
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="existing_file"):
        split_ima(p, out_dir=existing)
    assert cli.main(["split-ima", str(p), "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hstcosmicrays split-ima: error: --out {existing}: exists and is not a directory"
    assert cli.main(["split-ima", str(p), "--out", str(existing / "reads")]) == 2
    assert f"--out {existing / 'reads'}: {existing} is not a directory" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# truncated IMA files: refused when opened, naming the file, before anything is written

#: Where a copy of an IMA of 8 reads is cut: (HDU, hdrLoc or datLoc, bytes after it).
IMA_CUTS = {
    "inside the data of ERR,1": (("ERR", 1), "datLoc", 100),  # was: 1 read; needs at least 2
    "inside the data of SCI,3": (("SCI", 3), "datLoc", 100),  # was: cannot reshape (split-ima)
    "inside the header of SCI,4": (("SCI", 4), "hdrLoc", 1000),  # was: measured on 3 of 8 reads
}


@pytest.mark.parametrize("where", IMA_CUTS)
def test_a_truncated_ima_is_refused_by_every_reader(tmp_path, wfc3ir, capsys, where):
    counts, dq, time = make_ramp(crs=CRS)
    whole = tmp_path / "whole_ima.fits"
    write_ima(whole, counts=counts, dq=dq, time=time)
    with fits.open(whole) as hdul:
        places = {(h.name, h.ver): hdul.fileinfo(i) for i, h in enumerate(hdul)}
    hdu, loc, after = IMA_CUTS[where]
    p = tmp_path / "iram01abq_ima.fits"
    p.write_bytes(whole.read_bytes()[: places[hdu][loc] + after])
    expected = f"{p}: truncated: {p.stat().st_size:,} "
    for read in (lambda: read_ramp(p, instrument=wfc3ir), lambda: measure_ima(p, instrument=wfc3ir),
                 lambda: split_ima(p, out_dir=tmp_path / "reads")):
        with pytest.raises(FrameError) as exc:
            read()
        assert str(exc.value).startswith(expected) and "\n" not in str(exc.value)
    for argv in (["split-ima", str(p), "--out", str(tmp_path / "reads")], ["measure", str(p)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hstcosmicrays {argv[0]}: error: {expected}") and err.count("\n") == 1
    assert not (tmp_path / "reads").exists()


# ---------------------------------------------------------------------------------------------
# accuracy on simulated darks


def simulated(instrument, tmp_path_factory, month, n):
    specs = month_schedule(instrument=instrument, month=parse_month(month), seed=11, darks_per_month=n)
    out = []
    for spec in specs:
        paths = write_dataset(instrument=instrument, spec=spec, out_dir=tmp_path_factory.mktemp(spec.obs_id))
        frame, crs = read_truth(paths["TRUTH"])
        out.append((paths, frame.iloc[0], crs))
    return out


@pytest.fixture(scope="module")
def wfc3ir_darks(wfc3ir, tmp_path_factory):
    """One full-frame simulated WFC3/IR dark (16 reads, ~7,000 CRs) measured both ways."""
    out = []
    for paths, frame, crs in simulated(wfc3ir, tmp_path_factory, "2012-03", 1):
        ramp = read_ramp(paths["IMA"], instrument=wfc3ir)
        res = {s: measure_ramp(ramp=ramp, instrument=wfc3ir, spt_path=paths["SPT"], month="2012-03", source=s)
               for s in ("flags", "jumps")}
        out.append((frame, crs, res))
    return out


@pytest.fixture(scope="module")
def nic2_darks(nic2, tmp_path_factory):
    out = []
    for paths, frame, crs in simulated(nic2, tmp_path_factory, "2003-03", 4):
        res = measure_ima(paths["IMA"], instrument=nic2, spt_path=paths["SPT"], month="2003-03")
        out.append((frame, crs, {"flags": res}))
    return out


def per_read(cr_reads, nsamp):
    return np.bincount(np.asarray(cr_reads, dtype=int), minlength=nsamp)[1:]


def unmatched_fraction(res, crs, radius=2.0):
    """Fraction of detected CRs with no true CR of the same read within ``radius`` pixels: a CR
    counted in a second read, or in a wrong read, or a false detection."""
    cr = res.cosmic_rays
    bad = 0
    for k in np.unique(cr["read"]):
        t = crs[crs["read"] == k]
        d = np.column_stack([cr["x"][cr["read"] == k], cr["y"][cr["read"] == k]])
        if len(t) == 0:
            bad += len(d)
            continue
        dist, _ = cKDTree(np.column_stack([t["x"], t["y"]])).query(d)
        bad += int(np.count_nonzero(dist > radius))
    return bad / max(len(cr["read"]), 1)


def test_wfc3ir_per_read_counts_match_the_truth(wfc3ir_darks):
    for frame, crs, res in wfc3ir_darks:
        assert frame["saa_factor_mean"] < 2, "the accuracy test expects a dark of a typical rate (not deep in the SAA)"
        nsamp = int(frame["nsamp"])
        truth = per_read(crs["read"][crs["n_pixels"] >= 3], nsamp)
        found = per_read(res["flags"].cosmic_rays["read"], nsamp)
        assert truth.sum() > 2000
        rel = np.abs(found - truth) / truth
        assert rel.max() <= 0.03, (found.tolist(), truth.tolist())
        assert abs(found.sum() / truth.sum() - 1) <= 0.03
        # no CR counted in two reads (nor in a wrong one): each detection has a true CR of its read
        assert unmatched_fraction(res["flags"], crs) <= 0.005
        # the rate over the ramp time, in the store's units
        ex = res["flags"].exposure
        assert ex["integration_time"] == pytest.approx(frame["integration_time"])
        assert ex["rate"] == pytest.approx(found.sum() / frame["integration_time"] / frame["area_cm2"], rel=1e-3)


def test_wfc3ir_jump_detection_without_flags_is_close_to_the_truth(wfc3ir_darks):
    """Without flags: 4 sigma of the CDS noise (79 e-) is stricter than the truth's 5 x RN (70 e-)
    per pixel, so slightly fewer CRs reach 3 pixels; each found CR is in its read."""
    for frame, crs, res in wfc3ir_darks:
        truth = int(np.count_nonzero(crs["n_pixels"] >= 3))
        found = len(res["jumps"].cosmic_rays["read"])
        assert 0.90 * truth <= found <= 1.03 * truth
        assert unmatched_fraction(res["jumps"], crs) <= 0.01


def test_nicmos_counts_match_the_truth(nic2_darks):
    """Frames of a typical rate (mean SAA factor below 2). Where CRs are dense (a simulated dark
    deep in the SAA, mean rate x7, ~7,000 CRs on 256x256 pixels) sub-threshold halos of
    overlapping CRs blend into 3-pixel groups that the per-CR truth does not count: +10 % there."""
    found = truth = 0
    quiet = [d for d in nic2_darks if d[0]["saa_factor_mean"] < 2]
    assert len(quiet) >= 2
    for frame, crs, res in quiet:
        cr = res["flags"].cosmic_rays
        assert res["flags"].exposure["method"] == "ir_ramp"
        truth += int(np.count_nonzero(crs["n_pixels"] >= 3))
        found += len(cr["read"])
        assert unmatched_fraction(res["flags"], crs) <= 0.01
        assert (cr["energy"] > 0).all()
    assert truth > 500
    assert abs(found / truth - 1) <= 0.03


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.mark.parametrize("instr,start,stop,darks", [
    pytest.param("wfc3ir", "2012-01", "2012-02", "1", marks=pytest.mark.slow),
    ("nicmos_nic2", "2003-01", "2003-02", "2"),
])
def test_run_pipeline_commits_ir_months(tmp_path, capsys, instr, start, stop, darks):
    argv = ["--instr", instr, "--archive", "simulated", "--darks-per-month", darks, "--workers", "1",
            "--start", start, "--stop", stop, "--output", str(tmp_path), "-q"]
    assert cli.run_pipeline_main(argv) == 0
    capsys.readouterr()
    assert cli.main(["status", "--instr", instr, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{start}  committed" in out and f"{stop}  committed" in out
    name = load_config().instrument(instr).name
    store = tmp_path / f"{name}.h5"
    assert [s for s in read_ledger(store)["state"].tolist()] == [b"committed"] * 2
    ex = read_committed(store, "exposures")
    assert len(ex["rootname"]) == 2 * int(darks)
    assert set(ex["method"].tolist()) == {b"ir_ramp"} and (ex["n_cr"] > 0).all()
    assert np.all((ex["rate"] > 0.05) & (ex["rate"] < 5))
    assert np.all(ex["hst_alt"] > 500)
    cr = read_committed(store, "cosmic_rays", columns=["read", "n_pixels", "energy"])
    assert len(cr["read"]) == ex["n_cr"].sum()
    assert cr["read"].min() >= 1 and (cr["n_pixels"] >= 3).all()
    assert len(read_committed(store, "failures")["rootname"]) == 0

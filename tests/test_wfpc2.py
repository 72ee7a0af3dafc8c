"""Tests of wfpc2: the robust threshold for lone frames, C1M exclusions, the WFPC2 pipeline path
(threshold or CR-SPLIT), accuracy on simulated darks and the pipeline end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hstcosmicrays import cli
from hstcosmicrays.config import load_config
from hstcosmicrays.frames import Chip, read_chips, read_header
from hstcosmicrays.intervals import parse_month
from hstcosmicrays.labels import label_crs
from hstcosmicrays.measure import FrameResult, measure_frame
from hstcosmicrays.pipeline import FrameFailure, GroupTask, process_group
from hstcosmicrays.simulate import month_schedule, read_truth, write_dataset
from hstcosmicrays.store import read_committed, read_ledger
from hstcosmicrays.wfpc2 import EXCLUDE_DQ, robust_level, threshold_masks


@pytest.fixture(scope="module")
def wfpc2():
    return load_config().instrument("wfpc2")


GAIN = 7.0
RN = 5.3  # e-


def chip(sci, dq, extver=1):
    return Chip(
        extver=extver, ccdchip=extver, sci=np.asarray(sci, np.float32), err=None,
        dq=np.asarray(dq, np.int16), gain=np.full(np.shape(sci), GAIN, np.float32),
        readnoise=np.full(np.shape(sci), RN, np.float32),
    )


# ---------------------------------------------------------------------------------------------
# the robust level


def test_robust_level_of_gaussian_noise_with_outliers():
    rng = np.random.default_rng(2)
    v = rng.normal(3.0, 2.0, 200_000)
    v[:4000] = 1e4  # 2 % outliers (cosmic rays) barely move it
    m, s = robust_level(values=v)
    # the median moves to the 0.5/0.98 quantile: 3 + 2 x 0.025
    assert m == pytest.approx(3.05, abs=0.02) and s == pytest.approx(2.0, rel=0.04)
    assert robust_level(values=np.r_[v, np.nan, np.inf])[0] == pytest.approx(m, abs=1e-3)
    # a constant chip: the MAD is 0 and the floor sets the threshold
    assert robust_level(values=np.full(100, 5.0), floor=0.7) == (5.0, 0.7)
    assert all(np.isnan(robust_level(values=np.array([np.nan]))))


# ---------------------------------------------------------------------------------------------
# the threshold masks on a synthetic chip


def synthetic_chip(seed=0):
    """100x100 DN: noise RN/GAIN around 2 DN, CRs of 5 pixels, hot pixels flagged or not."""
    rng = np.random.default_rng(seed)
    sigma = RN / GAIN
    sci = rng.normal(2.0, sigma, (100, 100))
    dq = np.zeros((100, 100), np.int16)
    crs = [(20, 20), (50, 70), (80, 30)]
    for y, x in crs:
        sci[y, x - 1:x + 2] += 40.0
        sci[y - 1, x] += 20.0
        sci[y + 1, x] += 20.0
    # a flagged hot pixel on the track of the second CR: the CR must stay one piece
    dq[50, 70] |= 512
    # flagged hot pixels far from any CR: single, and a cluster of three (WFPC2 warm pixels, and
    # the simulator's DQ 16)
    sci[10, 90] += 300.0
    dq[10, 90] |= 1024
    sci[90, 88:91] += 200.0
    dq[90, 88:91] |= 16
    # an unflagged hot pixel: one pixel, never a CR
    sci[60, 10] += 500.0
    # a bad column (DQ 4), bright: never CR pixels
    sci[:, 45] += 100.0
    dq[:, 45] |= 4
    return sci, dq, crs


def test_threshold_masks_find_crs_and_not_hot_or_bad_pixels(wfpc2):
    sci, dq, crs = synthetic_chip()
    (mask,) = threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2)
    flagged = dq | (mask.astype(np.int16) * wfpc2.dq_cr)
    labels, n = label_crs(dq=flagged, cr_bit=wfpc2.dq_cr, bad_bit=wfpc2.dq_bad, max_pixels=wfpc2.max_cr_pixels)
    assert n == 3
    for y, x in crs:
        assert labels[y, x] > 0 and np.count_nonzero(labels == labels[y, x]) == 5
    assert not mask[10, 90] and not mask[90, 88:91].any() and not mask[:, 45].any()
    assert mask[60, 10]  # above the threshold, but alone: labelling drops it
    # the noise alone: 5 sigma of 10,000 pixels leaves nothing
    assert np.count_nonzero(mask) == 3 * 5 + 1


def test_threshold_follows_k_and_uses_usable_pixels_only(wfpc2):
    rng = np.random.default_rng(4)
    sci = rng.normal(0.0, 1.0, (200, 200))
    dq = np.zeros((200, 200), np.int16)
    dq[:20] |= 2  # 10 % of the chip flagged (calibration defect) with a wild level
    sci[:20] += 1000.0
    (m3,) = threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2, k=3.0)
    (m5,) = threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2, k=5.0)
    assert not m3[:20].any()  # flagged pixels are neither CRs nor in the statistics
    # 3 sigma of 36,000 unit-normal pixels: 0.135 % (49) above
    assert 25 <= m3[20:].sum() <= 80 and m5.sum() <= 1
    # excluding nothing: the flagged rows are all "CRs", and they widen the statistics
    (m_all,) = threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2, k=3.0, exclude_dq=0)
    assert m_all[:20].all() and m_all[20:].sum() < m3[20:].sum()
    # the default k is the configured threshold_sigma (5)
    (m_default,) = threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2)
    np.testing.assert_array_equal(m_default, m5)
    loose = dataclasses.replace(wfpc2, threshold_sigma=3.0)
    np.testing.assert_array_equal(threshold_masks(chips=[chip(sci, dq)], instrument=loose)[0], m3)
    with pytest.raises(ValueError, match="positive"):
        threshold_masks(chips=[chip(sci, dq)], instrument=wfpc2, k=0)
    assert EXCLUDE_DQ & 512 and EXCLUDE_DQ & 1024 and not EXCLUDE_DQ & 8


# ---------------------------------------------------------------------------------------------
# simulated darks


def simulated_set(instrument, out, *, month, n, seed):
    specs = month_schedule(instrument=instrument, month=parse_month(month), seed=seed, darks_per_month=n)
    return [write_dataset(instrument=instrument, spec=s, out_dir=out / s.obs_id) for s in specs]


def measure_threshold(paths, instrument):
    c0m = paths["C0M"]
    header = read_header(c0m, instrument=instrument)
    chips = read_chips(c0m, instrument=instrument)
    masks = threshold_masks(chips=chips, instrument=instrument)
    flagged = [dataclasses.replace(c, dq=c.dq | (m.astype(c.dq.dtype) * instrument.dq_cr))
               for c, m in zip(chips, masks)]
    res = measure_frame(header=header, chips=flagged, instrument=instrument, spt_path=paths["SHM"],
                        method="threshold", group_id=-1, month="x")
    labels = [label_crs(dq=c.dq, cr_bit=instrument.dq_cr, bad_bit=instrument.dq_bad,
                        max_pixels=instrument.max_cr_pixels)[0] for c in flagged]
    return res, labels, flagged


def match(labels, crs, chip_no):
    """Label under each true CR of a chip (largest label in the 3x3 around its centroid)."""
    t = crs[crs["chip"] == chip_no]
    lab = labels
    ny, nx = lab.shape
    x = np.clip(np.rint(t["x"].to_numpy()).astype(int), 0, nx - 1)
    y = np.clip(np.rint(t["y"].to_numpy()).astype(int), 0, ny - 1)
    under = np.zeros(len(t), dtype=lab.dtype)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            under = np.maximum(under, lab[np.clip(y + dy, 0, ny - 1), np.clip(x + dx, 0, nx - 1)])
    return t, under


@pytest.fixture(scope="module")
def darks(wfpc2, tmp_path_factory):
    """Simulated WFPC2 darks: the configured 1000 s, and 300 s (fewer overlapping CRs)."""
    out = {}
    short = dataclasses.replace(wfpc2, simulation=dataclasses.replace(wfpc2.simulation, exptime=300.0))
    for label, inst, n in (("1000s", wfpc2, 3), ("300s", short, 4)):
        sets = simulated_set(inst, tmp_path_factory.mktemp(label), month="2001-06", n=n, seed=7)
        frames = []
        for paths in sets:
            frame, crs = read_truth(paths["TRUTH"])
            frames.append((paths, frame.iloc[0], crs, *measure_threshold(paths, inst)))
        out[label] = frames
    return out


def test_short_darks_count_within_5_percent_of_the_truth(darks):
    found = truth = 0
    for paths, frame, crs, res, labels, _ in darks["300s"]:
        truth += int(np.count_nonzero(crs["n_pixels"] >= 3))
        found += res.n_cr
        assert res.exposure["method"] == "threshold"
    assert truth > 5000
    assert abs(found / truth - 1) <= 0.05, (found, truth)


def test_full_darks_find_every_cr_above_the_threshold(darks):
    """At 1000 s ~9,000 CRs on 4 x 800 x 800 pixels: about 6 % of them touch another and are
    counted as one (no method can split them); every true CR is found, nothing else is."""
    n_truth = n_found_truth = n_det = n_false = n_distinct = 0
    for paths, frame, crs, res, labels, flagged in darks["1000s"]:
        assert res.n_cr == sum(int(lab.max()) for lab in labels)
        for c, lab in enumerate(labels, start=1):
            t, under = match(lab, crs, c)
            big = t["n_pixels"].to_numpy() >= 3
            n_truth += int(big.sum())
            n_found_truth += int(np.count_nonzero(under[big] > 0))
            n_distinct += len(np.unique(under[big & (under > 0)]))
            n_det += int(lab.max())
            # a detection with no true CR under it: a hot pixel or noise counted as a CR
            n_false += int(lab.max()) - len(np.unique(under[under > 0]))
            # no CR made of C1M-flagged (hot, bad) pixels only
            clean = np.bincount(lab[(flagged[c - 1].dq & EXCLUDE_DQ) == 0], minlength=int(lab.max()) + 1)
            assert (clean[1:] > 0).all()
    assert n_truth > 20000
    assert n_found_truth / n_truth >= 0.97
    assert n_false <= 0.002 * n_det
    # counting each true CR inside a detection once, the count matches the truth within 5 %
    resolved = n_det - n_distinct + n_found_truth
    assert abs(resolved / n_truth - 1) <= 0.05
    # and the plain count is short by the overlaps only
    assert 0.90 <= n_det / n_truth <= 1.0


# ---------------------------------------------------------------------------------------------
# the pipeline's WFPC2 path


def test_process_group_thresholds_a_lone_frame_and_rejects_a_pair(wfpc2, tmp_path):
    specs = month_schedule(instrument=wfpc2, month=parse_month("2001-06"), seed=2, darks_per_month=2)
    assert len(specs) == 2 and specs[0].set_size == 2  # one CR-SPLIT pair
    paths = [write_dataset(instrument=wfpc2, spec=s, out_dir=tmp_path / s.obs_id) for s in specs]
    lone = process_group(GroupTask(group_id=0, month="2001-06", science=(paths[0]["C0M"],),
                                   orbit_files=(paths[0]["SHM"],)), instrument=wfpc2)
    assert len(lone) == 1 and isinstance(lone[0], FrameResult)
    assert lone[0].exposure["method"] == "threshold" and lone[0].exposure["group_id"] == -1
    assert np.isfinite(lone[0].exposure["hst_lat"]) and lone[0].n_cr > 1000
    pair = process_group(GroupTask(group_id=4, month="2001-06", science=tuple(p["C0M"] for p in paths),
                                   orbit_files=tuple(p["SHM"] for p in paths)), instrument=wfpc2)
    assert [r.exposure["method"] for r in pair] == ["crsplit", "crsplit"]
    assert [r.exposure["group_id"] for r in pair] == [4, 4]
    for r, p in zip(pair, paths):
        truth = int(np.count_nonzero(read_truth(p["TRUTH"])[1]["n_pixels"] >= 3))
        assert 0.85 * truth <= r.n_cr <= 1.05 * truth  # each CR flagged in its own frame only
    # a partner that cannot be read leaves the other frame alone: it is thresholded
    broken = tmp_path / "broken_c0m.fits"
    broken.write_bytes(b"not FITS")
    mixed = process_group(GroupTask(group_id=5, month="2001-06", science=(paths[0]["C0M"], broken),
                                    orbit_files=(paths[0]["SHM"], None)), instrument=wfpc2)
    assert isinstance(mixed[1], FrameFailure) and mixed[1].stage == "read"
    assert mixed[0].exposure["method"] == "threshold"
    assert mixed[0].n_cr == lone[0].n_cr


# ---------------------------------------------------------------------------------------------
# end to end


def test_run_pipeline_commits_wfpc2_months(tmp_path, capsys):
    argv = ["--instr", "wfpc2", "--archive", "simulated", "--darks-per-month", "3", "--workers", "1",
            "--start", "2003-01", "--stop", "2003-02", "--output", str(tmp_path), "-q"]
    assert cli.run_pipeline_main(argv) == 0
    capsys.readouterr()
    assert cli.main(["status", "--instr", "wfpc2", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2003-01  committed" in out and "2003-02  committed" in out
    store = tmp_path / "wfpc2.h5"
    assert read_ledger(store)["state"].tolist() == [b"committed"] * 2
    ex = read_committed(store, "exposures")
    assert len(ex["rootname"]) == 6
    assert set(ex["method"].tolist()) <= {b"crsplit", b"threshold"}
    assert np.all((ex["rate"] > 0.5) & (ex["rate"] < 5)) and np.all(ex["hst_alt"] > 500)
    cr = read_committed(store, "cosmic_rays", columns=["read", "chip", "n_pixels"])
    assert len(cr["read"]) == ex["n_cr"].sum() and set(cr["read"].tolist()) == {-1}
    assert set(cr["chip"].tolist()) == {1, 2, 3, 4} and (cr["n_pixels"] >= 3).all()


def test_crreject_command_names_what_it_takes_for_wfpc2_files(wfpc2, tmp_path, capsys):
    specs = month_schedule(instrument=wfpc2, month=parse_month("2001-06"), seed=2, darks_per_month=2)
    paths = [write_dataset(instrument=wfpc2, spec=s, out_dir=tmp_path / s.obs_id)["C0M"] for s in specs]
    assert cli.main(["crreject", str(paths[0]), str(paths[1])]) == 2
    err = capsys.readouterr().err
    assert str(paths[0]) in err and "C1M" in err and "FLT files" in err


# ---------------------------------------------------------------------------------------------
# truncated files: the file that is cut is named


def small_pair(wfpc2, out):
    """A simulated C0M/C1M pair of small chips (48 x 40)."""
    spec = month_schedule(instrument=wfpc2, month=parse_month("2005-03"), seed=3, darks_per_month=1,
                          shape=(48, 40))[0]
    return write_dataset(instrument=wfpc2, spec=spec, out_dir=out)


@pytest.mark.parametrize("cut", ["C0M", "C1M"])
def test_a_truncated_c0m_or_c1m_is_the_file_named(wfpc2, tmp_path, cut):
    """Cut at 30,000 bytes (the C0M inside the header of chip 3): the C0M is named, not the C1M
    (which was blamed for holding 4 chips against the C0M's 2), and the C1M when it is the one
    cut."""
    from hstcosmicrays.frames import FrameError

    paths = small_pair(wfpc2, tmp_path)
    path = paths[cut]
    path.write_bytes(path.read_bytes()[:30000])
    readers = [lambda: read_chips(paths["C0M"], instrument=wfpc2)]
    if cut == "C0M":
        readers.append(lambda: read_header(paths["C0M"], instrument=wfpc2))
    for read in readers:
        with pytest.raises(FrameError) as exc:
            read()
        assert str(exc.value).startswith(f"{path}: truncated: 30,000 ")
    failure = process_group(GroupTask(group_id=-1, month="2005-03", science=(paths["C0M"],),
                                      orbit_files=(paths["SHM"],)), instrument=wfpc2)[0]
    assert isinstance(failure, FrameFailure) and failure.stage == "read"
    assert failure.reason == f"FrameError: {exc.value}"


def test_run_pipeline_names_a_truncated_c0m_of_a_local_archive(wfpc2, tmp_path, capfd):
    """The failure stored for a cut C0M names it (not its intact C1M), and no astropy warning
    reaches the console."""
    from hstcosmicrays.simulate import write_archive

    archive = tmp_path / "archive"
    month = parse_month("2005-03")
    write_archive(instrument=wfpc2, start=month, stop=month, out=archive, darks_per_month=2, seed=3,
                  shape=(48, 40))
    c0m = sorted(archive.rglob("*_c0m.fits"))[0]
    c0m.write_bytes(c0m.read_bytes()[:30000])
    argv = ["--instr", "wfpc2", "--archive", str(archive), "--workers", "1", "--start", "2005-03",
            "--stop", "2005-03", "--output", str(tmp_path / "out"), "-q"]
    assert cli.run_pipeline_main(argv) == 0
    (reason,) = [r.decode() for r in read_committed(tmp_path / "out" / "wfpc2.h5", "failures")["reason"]]
    assert reason.startswith("FrameError: ") and reason.endswith(
        f"{c0m.name}: truncated: 30,000 bytes, ending inside the header of extension 3")
    err = capfd.readouterr().err
    assert "astropy" not in err and "truncated" in err and "_c1m" not in err

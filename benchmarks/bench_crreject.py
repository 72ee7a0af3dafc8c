"""Benchmark of CR-SPLIT rejection (hstcosmicrays.crreject).

1. A full-frame WFC3/UVIS pair (2 frames x 2 chips of 2051 x 4096, 900 s darks with ~1.5 % of
   pixels hit): the rejection core on arrays in memory (1 and 2 threads), and the whole
   ``crreject_files`` run on two FLT files (reading, rejecting, OR-ing DQ 8192 into the files).
   Target: no slower than the C wf3rej, about 1.7 s wall for this pair on this kind of machine.
2. Peak memory of a 30-frame full-frame WFC3/UVIS stack (one chip at a time, as
   ``crreject_files`` does), in a child process: rows are generated on demand, so the figure is
   the memory of the rejection itself (masks + one block). Target: within 4 GB.
   ``--files30`` instead writes 30 real FLT files (5 GB of disk) and runs ``crreject_files``.

Run: ``python benchmarks/bench_crreject.py [--repeat 3] [--files30]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (2051, 4096)
EXPTIME = 900.0


def synthetic_chip(rng, shape=SHAPE, exptime=EXPTIME, readnoise=3.1, dark=0.005, cr_fraction=0.015):
    counts = rng.normal(dark * exptime, np.sqrt(readnoise**2 + dark * exptime), shape).astype(np.float32)
    n_crs = int(cr_fraction * shape[0] * shape[1] / 5)
    ys = rng.integers(0, shape[0] - 2, n_crs)
    xs = rng.integers(0, shape[1] - 2, n_crs)
    q = rng.lognormal(np.log(250.0), 0.7, n_crs).astype(np.float32)
    for dy, dx, f in ((0, 0, 1.0), (0, 1, 0.6), (1, 0, 0.5), (1, 1, 0.3), (0, 2, 0.1)):
        np.add.at(counts, (ys + dy, xs + dx), q * f)
    return counts


def write_flt(path, chips, rootname):
    from astropy.io import fits

    ph = fits.Header()
    for k, v in {
        "ROOTNAME": rootname, "INSTRUME": "WFC3", "DETECTOR": "UVIS", "EXPTIME": EXPTIME,
        "EXPSTART": 55000.25, "EXPEND": 55000.26, "DATE-OBS": "2010-06-18", "TIME-OBS": "06:00:00",
        "CCDAMP": "ABCD", "CCDGAIN": 1.5, "SUBARRAY": False, "IMAGETYP": "DARK",
        **{f"ATODGN{a}": 1.55 for a in "ABCD"}, **{f"READNSE{a}": 3.1 for a in "ABCD"},
    }.items():
        ph[k] = v
    hdus = [fits.PrimaryHDU(header=ph)]
    for ev, sci in enumerate(chips, start=1):
        sh = fits.Header()
        sh["BUNIT"] = "ELECTRONS"
        sh["CCDCHIP"] = 3 - ev
        err = np.sqrt(3.1**2 + np.maximum(sci, 0)).astype(np.float32)
        hdus += [fits.ImageHDU(sci, header=sh, name="SCI", ver=ev), fits.ImageHDU(err, name="ERR", ver=ev),
                 fits.ImageHDU(np.zeros(sci.shape, np.int16), name="DQ", ver=ev)]
    fits.HDUList(hdus).writeto(path, overwrite=True)


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def bench_pair(repeat: int) -> None:
    from hstcosmicrays import crreject as cr
    from hstcosmicrays.config import load_config

    config = load_config()
    inst = config.instrument("wfc3_uvis")
    rng = np.random.default_rng(2021)
    frames = [[synthetic_chip(rng) for _ in range(2)] for _ in range(2)]
    mpix = 2 * 2 * SHAPE[0] * SHAPE[1] / 1e6   # frames x chips
    rn = np.broadcast_to(np.full(SHAPE[1], 3.1, np.float32), SHAPE)

    def core(threads):
        for c in range(2):
            cr.reject_chip(
                sci=[frames[0][c], frames[1][c]], dq=[np.zeros(SHAPE, np.int16)] * 2,
                exptime=[EXPTIME] * 2, readnoise=[rn, rn], params=inst.crreject,
                noise_model="readnoise", threads=threads,
            )

    print(f"full-frame WFC3/UVIS pair: 2 frames x 2 chips of {SHAPE[0]}x{SHAPE[1]} ({mpix:.1f} Mpix)")
    for threads in (1, 2):
        best, med = best_of(lambda: core(threads), repeat)
        print(f"  core in memory, {threads} thread(s): {best:.3f} s best, {med:.3f} s median "
              f"-> {mpix / best:.1f} Mpix/s")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"ibench0{k}q_flt.fits" for k in range(2)]
        for k, p in enumerate(paths):
            write_flt(p, frames[k], f"IBENCH0{k}Q")

        def files():
            for k, p in enumerate(paths):   # fresh DQ each time
                from astropy.io import fits
                with fits.open(p, mode="update") as h:
                    for v in (1, 2):
                        h["DQ", v].data[:] = 0
            t0 = time.perf_counter()
            report = cr.crreject_files(paths, config=config)
            return time.perf_counter() - t0, report

        runs = [files() for _ in range(repeat)]
        best = min(t for t, _ in runs)
        report = runs[-1][1]
        print(f"  crreject_files on 2 FLT files (read, reject, write DQ): {best:.3f} s best "
              f"-> {mpix / best:.1f} Mpix/s; flagged {report.files[0].fraction:.3%} / "
              f"{report.files[1].fraction:.3%} of the pixels")
    print("  target: <= 1.7 s (the C wf3rej on this kind of machine)")


class RowSource:
    """Rows of a synthetic frame generated on demand (the same rows give the same values)."""

    def __init__(self, seed: int, shape=SHAPE, kind="sci"):
        self.seed, self.shape, self.kind = seed, shape, kind

    def __getitem__(self, rows: slice):
        a, b, _ = rows.indices(self.shape[0])
        if self.kind == "dq":
            return np.zeros((b - a, self.shape[1]), np.int16)
        out = np.empty((b - a, self.shape[1]), np.float32)
        for i, r in enumerate(range(a, b)):
            rng = np.random.default_rng((self.seed, r))
            row = rng.normal(4.5, 3.8, self.shape[1]).astype(np.float32)
            hits = rng.integers(0, self.shape[1], 40)
            row[hits] += rng.lognormal(np.log(300.0), 0.7, 40).astype(np.float32)
            out[i] = row
        return out


def child_stack30() -> None:
    """Reject both chips of 30 full-frame UVIS frames, one chip at a time; print the peak RSS."""
    from hstcosmicrays import crreject as cr
    from hstcosmicrays.config import load_config

    inst = load_config().instrument("wfc3_uvis")
    n = 30
    t0 = time.perf_counter()
    flagged = 0
    for chip in range(2):
        res = cr.reject_chip(
            sci=[RowSource(100 * chip + k) for k in range(n)],
            dq=[RowSource(0, kind="dq") for _ in range(n)],
            exptime=[EXPTIME] * n, readnoise=[3.1] * n, shape=SHAPE,
            params=cr.params_for_stack(instrument=inst, n_images=n, mean_exptime=EXPTIME),
            noise_model="readnoise", threads=2,
        )
        flagged += sum(int(m.sum()) for m in res.masks)
        del res
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"  30 frames x 2 chips of {SHAPE[0]}x{SHAPE[1]}: {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_gb:.2f} GB (target <= 4 GB), {flagged} pixels flagged")


def child_files30(tmp: str) -> None:
    from hstcosmicrays import crreject as cr
    from hstcosmicrays.config import load_config

    paths = sorted(Path(tmp).glob("*_flt.fits"))
    t0 = time.perf_counter()
    cr.crreject_files(paths, config=load_config())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"  crreject_files on 30 full-frame FLT files: {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_gb:.2f} GB (target <= 4 GB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files30", action="store_true", help="also run crreject_files on 30 written FLT files")
    ap.add_argument("--child", choices=("stack30", "files30"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "stack30":
        child_stack30()
        return
    if args.child == "files30":
        child_files30(args.dir)
        return
    bench_pair(args.repeat)
    print("memory of a 30-frame full-frame WFC3/UVIS stack (child process):")
    subprocess.run([sys.executable, __file__, "--child", "stack30"], check=True)
    if args.files30:
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(7)
            for k in range(30):
                write_flt(Path(tmp) / f"ib30{k:03d}q_flt.fits", [synthetic_chip(rng) for _ in range(2)], f"IB30{k:03d}Q")
            subprocess.run([sys.executable, __file__, "--child", "files30", "--dir", tmp], check=True)


if __name__ == "__main__":
    main()

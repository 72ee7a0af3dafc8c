"""Time to simulate and write one full-frame WFC3/UVIS dark (FLT + SPT + truth) on one core.

Run: ``python benchmarks/bench_simulate.py [--instr wfc3_uvis] [--repeat 3]``. Prints the time of
each part (schedule, pixels, FITS writing) and the total; the target is under 3 s for WFC3/UVIS.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hstcosmicrays import simulate  # noqa: E402
from hstcosmicrays.config import load_config  # noqa: E402
from hstcosmicrays.intervals import Month  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instr", default="wfc3_uvis")
    p.add_argument("--month", default="2012-06")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    instrument = load_config().instrument(args.instr)
    year, month = (int(v) for v in args.month.split("-"))
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            specs = simulate.month_schedule(instrument=instrument, month=Month(year, month), seed=100 + i)
            spec = specs[0]
            t1 = time.perf_counter()
            frame = simulate.simulate_frame(instrument=instrument, spec=spec)
            t2 = time.perf_counter()
            hduls = simulate.build_products(instrument=instrument, spec=spec, frame=frame)
            for suffix, hdul in hduls.items():
                simulate._add_checksums(hdul).writeto(Path(tmp) / f"{spec.obs_id}_{suffix.lower()}.fits", overwrite=True)
            t3 = time.perf_counter()
            one = simulate.DatasetSpec(obs_id=spec.obs_id, frames=(spec,))  # the frame as a file of its own
            simulate._add_checksums(simulate._truth_hdulist((frame,), one)).writeto(
                Path(tmp) / f"{spec.obs_id}_truth.fits", overwrite=True)
            t4 = time.perf_counter()
            totals.append(t4 - t0)
            size = sum(f.stat().st_size for f in Path(tmp).glob(f"{spec.obs_id}_*"))
            print(f"{instrument.name} {spec.obs_id}: schedule {t1 - t0:.3f} s, pixels {t2 - t1:.3f} s "
                  f"({frame.frame['n_cr']} CRs), FITS {t3 - t2:.3f} s, truth {t4 - t3:.3f} s, "
                  f"total {t4 - t0:.3f} s, {size / 1e6:.0f} MB")
    print(f"best of {args.repeat}: {min(totals):.2f} s per {instrument.name} dark (target < 3 s for wfc3_uvis)")


if __name__ == "__main__":
    main()

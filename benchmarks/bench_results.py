"""Benchmark: read one column of 1e7 cosmic-ray rows from a results store.

Builds a store of ``--rows`` CR rows (default 1e7) in ``--months`` monthly commits with realistic
random values (so the gzip compression is not flattered), then times:

- ``Results.cosmic_rays(columns=["energy"])`` (pandas, the notebook call; target < 2 s),
- the same through ``store.read_committed`` (numpy, no DataFrame),
- ``Results.cosmic_rays(columns=["energy"], start=..., stop=...)`` (half the store, by date),
- ``Results.cosmic_rays(columns=["energy"], lazy=True)["energy"].mean().compute()`` (dask),
- ``Results.histogram("energy", ...)`` (chunked, bounded memory),
- ``Results.cosmic_rays(where="n_pixels > 12")`` (eager, filtered piece by piece), with the peak of
  the memory traced by ``tracemalloc`` (numpy's and pandas' arrays) beside that of reading every
  column unfiltered.

Usage::

    python benchmarks/bench_results.py [--rows 10000000] [--months 100] [--store PATH] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from hstcosmicrays.intervals import Month
from hstcosmicrays.results import open_results
from hstcosmicrays.schema import empty_table
from hstcosmicrays.store import ResultsStore, read_committed


def build(path: Path, *, rows: int, months: int, frames_per_month: int = 20, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    per_month = rows // months
    t = time.perf_counter()
    month = Month(2009, 6)
    with ResultsStore.open(path, instrument="wfc3_uvis", software_version="bench", config_hash="bench") as store:
        for _ in range(months):
            e = empty_table("exposures", frames_per_month)
            e["rootname"][:] = b"ibench01q"
            e["month"][:] = month.label
            e["mjd"][:] = np.sort(rng.uniform(month.mjd_start, month.mjd_stop, frames_per_month))
            e["n_cr"][:] = per_month // frames_per_month
            e["rate"][:] = rng.normal(1.3, 0.1, frames_per_month)
            c = empty_table("cosmic_rays", per_month)
            c["exposure_index"][:] = np.sort(rng.integers(0, frames_per_month, per_month))
            c["chip"][:] = rng.integers(1, 3, per_month)
            c["read"][:] = -1
            c["x"][:] = rng.uniform(0, 4096, per_month)
            c["y"][:] = rng.uniform(0, 2051, per_month)
            c["n_pixels"][:] = 3 + rng.geometric(0.35, per_month)
            c["size_sigma"][:] = rng.gamma(4.0, 0.18, per_month)
            c["shape"][:] = rng.beta(2.0, 3.0, per_month)
            c["energy"][:] = rng.lognormal(np.log(1200.0), 0.6, per_month)
            for k in ("ixx", "iyy", "ixy"):
                c[k][:] = rng.gamma(2.0, 0.3, per_month)
            store.commit_month(month=month.label, exposures=e, cosmic_rays=c, orbit=empty_table("orbit"),
                               n_found=frames_per_month, started=time.time())
            month = month.next()
    return time.perf_counter() - t


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def traced_peak(fn) -> tuple[object, int]:
    """``fn()`` and the peak of the memory traced by ``tracemalloc`` meanwhile (bytes)."""
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--months", type=int, default=100)
    p.add_argument("--store", type=Path, help="use (or build) the store at this path")
    p.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = p.parse_args(argv)
    tmpdir = None
    path = args.store
    if path is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="bench_results_"))
        path = tmpdir / "wfc3_uvis.h5"
    try:
        if not path.exists():
            seconds = build(path, rows=args.rows, months=args.months)
            print(f"built {path} with {args.rows:,} CR rows in {args.months} monthly commits: {seconds:.1f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB)")
        res = open_results(path)
        n = len(read_committed(path, "cosmic_rays", columns=["chip"])["chip"])
        t_pd, frame = best_of(lambda: res.cosmic_rays(columns=["energy"]))
        t_np, _ = best_of(lambda: read_committed(path, "cosmic_rays", columns=["energy"]))
        months = res.months()["month"]
        mid = months.iloc[len(months) // 2] + "-01"
        t_half, half = best_of(lambda: res.cosmic_rays(columns=["energy"], start=mid))
        t_lazy, mean = best_of(lambda: res.cosmic_rays(columns=["energy"], lazy=True)["energy"].mean().compute(), 1)
        t_hist, _ = best_of(lambda: res.histogram("energy", bins=np.geomspace(10, 1e6, 81)), 1)
        assert len(frame) == n and abs(mean - frame["energy"].mean()) < 1e-3 * mean
        t_where, (kept, where_peak) = best_of(lambda: traced_peak(lambda: res.cosmic_rays(where="n_pixels > 12")), 1)
        _, (everything, all_peak) = best_of(lambda: traced_peak(res.cosmic_rays), 1)
        del everything
        print(f"rows: {n:,}")
        print(f"Results.cosmic_rays(columns=['energy'])          {t_pd:6.3f} s   (target < 2 s)")
        print(f"store.read_committed(..., columns=['energy'])    {t_np:6.3f} s")
        print(f"... start={mid} ({len(half):,} rows)       {t_half:6.3f} s")
        print(f"lazy=True, energy.mean().compute()               {t_lazy:6.3f} s")
        print(f"Results.histogram('energy', 80 bins)             {t_hist:6.3f} s")
        print(f"cosmic_rays(where='n_pixels > 12') ({len(kept):,} rows) {t_where:6.3f} s, "
              f"peak traced memory {where_peak / 1e9:.2f} GB (every column, unfiltered: {all_peak / 1e9:.2f} GB)")
    finally:
        if tmpdir is not None and not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
        elif tmpdir is not None:
            print(f"kept {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

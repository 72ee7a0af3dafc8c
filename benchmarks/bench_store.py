"""Cost of committing a month to the results store as the store grows.

Commits N months of a typical full-frame CCD month (8 darks, 40,000 CRs each, 20 orbit samples
each) and prints the commit time of the first and last months, so that one can see that the
write cost per month does not grow with the number of months already stored, the file's size
beside the bytes its datasets hold (the rest is mostly chunks rewritten by later commits), and
the read time of one column at the end; then commits every other month again (as ``--reprocess`` does) and
times ``ResultsStore.compact``.

    python benchmarks/bench_store.py [N_MONTHS]
"""

import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from hstcosmicrays.schema import empty_table
from hstcosmicrays.store import ResultsStore, read_committed


def month(label, rng, n_exp=8, n_cr_per=40_000, n_orbit=20):
    e = empty_table("exposures", n_exp)
    e["rootname"][:] = [f"x{label}{i}".encode() for i in range(n_exp)]
    e["month"][:] = label
    e["n_cr"][:] = n_cr_per
    e["rate"][:] = rng.uniform(1, 2, n_exp)
    n = n_exp * n_cr_per
    c = empty_table("cosmic_rays", n)
    c["exposure_index"][:] = np.repeat(np.arange(n_exp), n_cr_per)
    for col in ("x", "y", "energy", "size_sigma", "shape", "ixx", "iyy", "ixy"):
        c[col][:] = rng.uniform(0, 4000, n)
    c["n_pixels"][:] = rng.integers(3, 30, n)
    o = empty_table("orbit", n_exp * n_orbit)
    o["exposure_index"][:] = np.repeat(np.arange(n_exp), n_orbit)
    o["lat"][:] = rng.uniform(-28, 28, len(o["lat"]))
    return dict(exposures=e, cosmic_rays=c, orbit=o)


def data_bytes(path: Path) -> int:
    """Bytes the datasets of the HDF5 file ``path`` hold (their chunks as stored, compressed)."""
    sizes = []
    with h5py.File(path, "r", locking=False) as f:
        f.visititems(lambda _, obj: sizes.append(obj.id.get_storage_size())
                     if isinstance(obj, h5py.Dataset) else None)
    return sum(sizes)


def main(n_months: int = 120) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        times = []
        with ResultsStore.open(path, instrument="bench", software_version="0", config_hash="0") as store:
            for k in range(n_months):
                label = f"{2000 + k // 12}-{k % 12 + 1:02d}"
                tables = month(label, rng)
                t0 = time.perf_counter()
                store.commit_month(month=label, n_found=8, started=0.0, **tables)
                times.append(time.perf_counter() - t0)
        t = np.array(times)
        first, last = np.median(t[:10]), np.median(t[-10:])
        size, data = path.stat().st_size, data_bytes(path)
        print(f"months committed: {n_months} ({n_months * 8 * 40_000:,} CR rows), file {size / 1e6:.0f} MB "
              f"for {data / 1e6:.0f} MB in its datasets ({100 * (size - data) / data:.0f} % more)")
        print(f"commit time per month: first 10 median {first * 1e3:.0f} ms, last 10 median {last * 1e3:.0f} ms "
              f"(ratio last/first {last / first:.2f})")
        t0 = time.perf_counter()
        col = read_committed(path, "cosmic_rays", columns=["energy"])["energy"]
        print(f"read one column of {len(col):,} rows: {time.perf_counter() - t0:.2f} s")
        # reprocess every other month, then compact
        with ResultsStore.open(path, instrument="bench", software_version="0", config_hash="0") as store:
            for k in range(0, n_months, 2):
                label = f"{2000 + k // 12}-{k % 12 + 1:02d}"
                store.commit_month(month=label, n_found=8, started=0.0, **month(label, rng))
            t0 = time.perf_counter()
            before, after = store.compact()
        print(f"compact after reprocessing half of the months: {time.perf_counter() - t0:.1f} s, "
              f"{before / 1e6:.0f} MB -> {after / 1e6:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)

"""Time CR labelling plus per-CR statistics on a full-frame WFC3/UVIS dark (2 chips of 2051x4096)
with about 40,000 CRs.

Run: ``python benchmarks/bench_stats.py [--crs 40000] [--repeat 5]``. Prints the best and median
wall-clock seconds of ``label_crs`` + ``cr_properties`` over both chips (target: under 1 s on one
core), and the split between the two.
"""

from __future__ import annotations

import argparse
import os
import time

# one core: keep any threaded numpy/scipy back end to a single thread
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from hstcosmicrays.labels import label_crs  # noqa: E402
from hstcosmicrays.stats import cr_properties  # noqa: E402

CHIP = (2051, 4096)


def make_chip(*, n_tracks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Read noise, dark and CR tracks of 1-10 pixels (mean ~5), flagged with DQ 8192."""
    rows, cols = CHIP
    image = rng.normal(5.0, 3.0, CHIP).astype(np.float32)
    dq = np.zeros(CHIP, np.int16)
    dq[rng.random(CHIP) < 1e-3] |= 4  # bad pixels
    k = 10
    x0 = rng.uniform(6, cols - 6, n_tracks)
    y0 = rng.uniform(6, rows - 6, n_tracks)
    length = np.minimum(rng.exponential(2.0, n_tracks), 8.0)
    ang = rng.uniform(0, np.pi, n_tracks)
    t = np.linspace(-0.5, 0.5, k)
    xs = np.rint(x0[:, None] + t * (length * np.cos(ang))[:, None]).astype(np.intp).ravel()
    ys = np.rint(y0[:, None] + t * (length * np.sin(ang))[:, None]).astype(np.intp).ravel()
    charge = np.repeat(rng.lognormal(7.0, 0.8, n_tracks) / k, k).astype(np.float32)
    np.add.at(image, (ys, xs), charge)
    dq[ys, xs] |= 8192
    wide = np.repeat(rng.random(n_tracks) < 0.6, k)
    dq[ys[wide], xs[wide] + 1] |= 8192  # a second column of spill
    return image, dq


def run(chips, max_pixels: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    labelled = [label_crs(dq=dq, max_pixels=max_pixels) for _, dq in chips]
    t1 = time.perf_counter()
    n = 0
    for (image, _), (labels, n_chip) in zip(chips, labelled):
        props = cr_properties(labels=labels, image=image, n=n_chip)
        n += len(props)
    t2 = time.perf_counter()
    return n, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crs", type=int, default=60000, help="tracks injected over both chips (about 2/3 survive the 3-pixel minimum)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    chips = [make_chip(n_tracks=args.crs // 2, rng=rng) for _ in range(2)]
    run(chips, 10000)  # warm-up (page faults, imports)
    totals, labs, sts = [], [], []
    for _ in range(args.repeat):
        n, tl, ts = run(chips, 10000)
        totals.append(tl + ts)
        labs.append(tl)
        sts.append(ts)
    print(f"frame: 2 chips x {CHIP[0]}x{CHIP[1]}, {n} CRs kept (of {args.crs} tracks injected)")
    print(f"labelling + statistics: best {min(totals):.3f} s, median {np.median(totals):.3f} s "
          f"over {args.repeat} runs (labelling {np.median(labs):.3f} s, statistics {np.median(sts):.3f} s)")


if __name__ == "__main__":
    main()

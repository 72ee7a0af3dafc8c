"""Time the IR and WFPC2 CR finding on full-size simulated darks.

Run: ``python benchmarks/bench_ir.py [--repeat 3]``. Simulates one full-frame WFC3/IR dark (16
reads of 1024x1024), one NICMOS/NIC2 dark (13 reads of 256x256) and one WFPC2 dark (4 chips of
800x800) into a temporary directory, then prints the best and median wall-clock seconds of:
``ir.read_ramp``, ``ir.measure_ramp`` from the ramp-fit flags and from jumps, and
``wfpc2.threshold_masks`` + ``measure.measure_frame``, on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from hstcosmicrays.config import load_config  # noqa: E402
from hstcosmicrays.frames import read_chips, read_header  # noqa: E402
from hstcosmicrays.intervals import parse_month  # noqa: E402
from hstcosmicrays.ir import measure_ramp, read_ramp  # noqa: E402
from hstcosmicrays.measure import measure_frame  # noqa: E402
from hstcosmicrays.simulate import month_schedule, write_dataset  # noqa: E402
from hstcosmicrays.wfpc2 import threshold_masks  # noqa: E402


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        for name, month in (("wfc3_ir", "2012-03"), ("nicmos_nic2", "2003-03")):
            inst = cfg.instrument(name)
            spec = month_schedule(instrument=inst, month=parse_month(month), seed=1, darks_per_month=1)[0]
            paths = write_dataset(instrument=inst, spec=spec, out_dir=Path(tmp) / spec.obs_id)
            best, med, ramp = timed(lambda: read_ramp(paths["IMA"], instrument=inst), args.repeat)
            print(f"{name}: read_ramp ({ramp.n_reads} reads of {ramp.counts.shape[1]}x{ramp.counts.shape[2]}): "
                  f"best {best:.3f} s, median {med:.3f} s")
            for source in ("flags", "jumps"):
                best, med, res = timed(lambda: measure_ramp(
                    ramp=ramp, instrument=inst, spt_path=paths["SPT"], month=month, source=source), args.repeat)
                print(f"{name}: measure_ramp from {source}: {res.n_cr} CRs, best {best:.3f} s, median {med:.3f} s")
        inst = cfg.instrument("wfpc2")
        spec = month_schedule(instrument=inst, month=parse_month("2001-06"), seed=1, darks_per_month=1)[0]
        paths = write_dataset(instrument=inst, spec=spec, out_dir=Path(tmp) / spec.obs_id)
        header = read_header(paths["C0M"], instrument=inst)
        chips = read_chips(paths["C0M"], instrument=inst)

        def threshold():
            masks = threshold_masks(chips=chips, instrument=inst)
            flagged = [dataclasses.replace(c, dq=c.dq | (m.astype(c.dq.dtype) * inst.dq_cr))
                       for c, m in zip(chips, masks)]
            return measure_frame(header=header, chips=flagged, instrument=inst, spt_path=paths["SHM"],
                                 method="threshold", group_id=-1, month="2001-06")

        best, med, res = timed(threshold, args.repeat)
        print(f"wfpc2: threshold_masks + measure_frame (4 chips of 800x800): {res.n_cr} CRs, "
              f"best {best:.3f} s, median {med:.3f} s")


if __name__ == "__main__":
    main()

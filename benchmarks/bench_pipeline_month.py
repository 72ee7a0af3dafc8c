"""Peak memory and wall time of ``run_pipeline`` on one month of many full-frame darks.

The pipeline puts every compatible dark of a month into one CR-SPLIT stack. A real month can
hold many more darks than the simulated default (4 to 8), so the memory of a stack must not
grow by a whole frame for each dark. This writes a simulated WFC3/UVIS month of N full-frame
darks (2 chips of 2051 x 4096, about 170 MB per FLT file) into a local archive, runs
``run_pipeline --instr wfc3uvis --archive DIR --workers 1`` on it in a child process, and
prints the child's peak resident memory and wall time. Target: within 4 GB for 30 darks, the
issue's bound for the rejection of such a stack (see bench_crreject.py).

Run: ``python benchmarks/bench_pipeline_month.py [N]`` (default 30; needs N x 0.2 GB of disk).
Prints figures only.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

MONTH = "2012-06"

#: run_pipeline in the child, then its wall time (s) and its own peak RSS (GB) on stdout
CHILD = """
import resource, sys, time
from hstcosmicrays.cli import run_pipeline_main
t0 = time.perf_counter()
rc = run_pipeline_main(sys.argv[1:])
wall = time.perf_counter() - t0
if rc:
    sys.exit(rc)
print(wall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hstcosmicrays.cli", "simulate", "--instr", "wfc3uvis", "--start", MONTH,
             "--stop", MONTH, "--darks-per-month", str(n), "--out", str(archive)],
            check=True, capture_output=True,
        )
        size = sum(p.stat().st_size for p in archive.rglob("*_flt.fits")) / 1e9
        print(f"simulated {n} full-frame WFC3/UVIS darks ({size:.1f} GB of FLT files) in "
              f"{time.perf_counter() - t0:.0f} s")
        args = ["--instr", "wfc3uvis", "--archive", str(archive), "--start", MONTH, "--stop", MONTH,
                "--workers", "1", "--output", str(Path(tmp) / "out"), "-q"]
        proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            raise SystemExit(f"run_pipeline exited with {proc.returncode}")
        wall, peak_gb = (float(v) for v in proc.stdout.split()[-2:])
        print(f"run_pipeline, one month of {n} darks in one stack, 1 worker: {wall:.0f} s wall, "
              f"peak RSS {peak_gb:.2f} GB (target <= 4 GB for 30 darks)")


if __name__ == "__main__":
    main()

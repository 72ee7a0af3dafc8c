"""Benchmark of MAST access through astroquery against the local MAST stand-in.

A month of full-frame ACS/WFC darks from the simulated archive (FLT ~160 MB + SPT each) is
served on 127.0.0.1; a child process with astroquery pointed at the server runs
``MastArchive.query`` and ``MastArchive.fetch`` and reports:

* the query time (count + rows + product list, with paging at ``--pagesize`` rows);
* the download rate (MB/s) over loopback, i.e. the client-side cost per byte (astroquery's
  ``download_file``, the ``.part`` write, verification and rename);
* ``verify_product`` time per FLT;
* a second ``fetch`` with every file present (verification only, no request).

Run: ``python benchmarks/bench_mast.py [--darks 4] [--pagesize 50000]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT = r"""
import json, sys, time
from pathlib import Path
from hstcosmicrays.archive.mast import MastArchive, verify_product
from hstcosmicrays.config import load_config
from hstcosmicrays.intervals import parse_month
a = json.loads(sys.argv[1])
inst = load_config().instrument(a["instrument"])
archive = MastArchive(timeout=600, retries=1, backoff=1, pagesize=a["pagesize"])
t0 = time.perf_counter(); ds = archive.query(inst, parse_month(a["month"])); t1 = time.perf_counter()
files = archive.fetch(ds, a["workdir"]); t2 = time.perf_counter()
again = archive.fetch(ds, a["workdir"]); t3 = time.perf_counter()
flts = [f["FLT"] for f in files.values()]
t4 = time.perf_counter()
for p in flts:
    assert verify_product(p, suffix="FLT", instrument=inst) is None
t5 = time.perf_counter()
nbytes = sum(Path(p).stat().st_size for f in files.values() for p in f.values())
print("RESULT " + json.dumps(dict(n=len(ds), query=t1 - t0, fetch=t2 - t1, refetch=t3 - t2,
                                  verify=(t5 - t4) / max(1, len(flts)), nbytes=nbytes)))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instrument", default="acs_wfc")
    p.add_argument("--month", default="2003-05")
    p.add_argument("--darks", type=int, default=4, help="dark exposures per month")
    p.add_argument("--pagesize", type=int, default=50000)
    args = p.parse_args()

    from hstcosmicrays.archive.simulated import SimulatedArchive
    from hstcosmicrays.config import load_config
    from hstcosmicrays.intervals import parse_month
    from hstcosmicrays.testing.mast_server import MastServer, write_astroquery_config

    config = load_config()
    inst = config.instrument(args.instrument)
    archive = SimulatedArchive(seed=config.pipeline.simulation_seed, darks_per_month=args.darks)
    with tempfile.TemporaryDirectory() as tmp, MastServer(archive, config.instruments) as server:
        t0 = time.perf_counter()
        server.prepare(inst, [parse_month(args.month)])
        print(f"server: simulated {args.darks} {inst.name} dark exposures in {time.perf_counter() - t0:.1f} s")
        home = Path(tmp) / "xdg"
        write_astroquery_config(home, server.url)
        run = dict(instrument=inst.name, month=args.month, pagesize=args.pagesize, workdir=str(Path(tmp) / "work"))
        proc = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(run)], capture_output=True, text=True,
                              env=dict(os.environ, XDG_CONFIG_HOME=str(home)))
        if proc.returncode:
            sys.exit(proc.stderr)
        r = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
        mb = r["nbytes"] / 1e6
        # a dataset is one MAST observation: a STIS CR-SPLIT set holds all its exposures in one FLT
        print(f"query (count + rows + products) of {r['n']} datasets: {r['query'] * 1e3:.0f} ms")
        print(f"fetch of {mb:.0f} MB: {r['fetch']:.2f} s = {mb / r['fetch']:.0f} MB/s over loopback")
        print(f"verify_product per FLT: {r['verify'] * 1e3:.1f} ms")
        downloads = [q for q in server.requests if q.kind == "download"]
        print(f"second fetch, all files present and valid: {r['refetch'] * 1e3:.0f} ms; "
              f"{sum(q.method == 'GET' for q in downloads)} file downloads in total "
              f"(and {sum(q.method == 'HEAD' for q in downloads)} HEAD requests, which astroquery sends first)")


if __name__ == "__main__":
    main()

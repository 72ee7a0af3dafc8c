"""Stored CR counts against the injected ones, on simulated months of each CCD and of WFPC2.

For each instrument this runs ``run_pipeline --instr I --archive simulated --start M1 --stop M6
--keep-downloads`` (six months, the instrument's default darks per month, full frames) and
compares each stored frame's ``n_cr`` with the truth files the simulated archive writes beside
the products (``simulate.read_truth``): all injected CRs, and those lighting 3 or more pixels above the
truth threshold (the published definition counts no smaller CR). The stored count is short of
both because CRs that touch are one 8-connected group, and of all because CRs under 3 pixels are
not counted; more so on the 21-um pixels of ACS/HRC and STIS/CCD (15 um: WFC3/UVIS, WFPC2),
which collect twice the CRs of a 15-um pixel in the same exposure and on which a CR lights fewer
pixels. The README quotes the figures.

It also counts the spurious stored CRs: those whose centroid lies more than 4 pixels from every
injected CR of their frame and chip (noise or hot pixels flagged as CRs).

Run: ``python benchmarks/bench_counts.py [INSTRUMENT ...]`` (default: acs_hrc stis_ccd wfpc2
wfc3_uvis acs_wfc; one to three minutes per instrument). Prints figures only.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

#: instrument and the simulated months measured (first, last)
WINDOWS = {"acs_hrc": ("2004-01", "2004-06"), "stis_ccd": ("2012-01", "2012-06"),
           "wfpc2": ("2005-01", "2005-06"), "wfc3_uvis": ("2012-01", "2012-06"),
           "acs_wfc": ("2012-01", "2012-06")}


#: a stored CR whose centroid is farther than this from every injected CR's is spurious (pixels)
FAR = 4.0


def measure(name: str, window: tuple[str, str], out: Path) -> tuple[int, int, int, int, int]:
    """(frames, stored CRs, injected CRs, injected CRs of 3 or more pixels, stored CRs farther
    than :data:`FAR` pixels from every injected CR of their frame and chip) of the months."""
    import numpy as np
    from scipy.spatial import cKDTree

    from hstcosmicrays.cli import run_pipeline_main
    from hstcosmicrays.results import open_results
    from hstcosmicrays.simulate import read_truth

    args = ["--instr", name, "--archive", "simulated", "--start", window[0], "--stop", window[1],
            "--keep-downloads", "--workers", "1", "--output", str(out), "-q"]
    if run_pipeline_main(args) != 0:
        raise SystemExit(f"run_pipeline {' '.join(args)} failed")
    res = open_results(name, output_dir=out)
    exposures = res.exposures(columns=["rootname", "n_cr"])
    stored = {str(r).lower(): int(n) for r, n in zip(exposures["rootname"], exposures["n_cr"])}
    _, crs = read_truth(out / "work" / name)
    crs = crs[crs["obs_id"].str.lower().isin(stored)]
    found = res.cosmic_rays(columns=["chip", "x", "y"], exposure_columns=["rootname"])
    found["obs_id"] = found["rootname"].str.lower()
    truth = {key: cKDTree(g[["x", "y"]].to_numpy()) for key, g in crs.groupby([crs["obs_id"].str.lower(), "chip"])}
    far = 0
    for key, g in found.groupby(["obs_id", "chip"]):
        xy = g[["x", "y"]].to_numpy()
        far += len(xy) if key not in truth else int((truth[key].query(xy)[0] > FAR).sum())
    return len(stored), sum(stored.values()), len(crs), int((crs["n_pixels"] >= 3).sum()), far


def main() -> None:
    names = sys.argv[1:] or list(WINDOWS)
    print(f"{'instrument':10} {'months':15} {'frames':>6} {'stored':>8} {'injected':>8} {'>=3 px':>8} "
          f"{'vs all':>7} {'vs >=3 px':>9} {'spurious':>9}")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            frames, stored, injected, large, far = measure(name, WINDOWS[name], Path(tmp))
        print(f"{name:10} {' to '.join(WINDOWS[name]):15} {frames:6d} {stored:8d} {injected:8d} {large:8d} "
              f"{stored / injected - 1:+7.1%} {stored / large - 1:+9.1%} {far / max(stored, 1):9.2%}")
    print(f"spurious: stored CRs whose centroid is more than {FAR:g} pixels from every injected CR of their chip")


if __name__ == "__main__":
    main()

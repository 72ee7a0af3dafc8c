"""Test helper: STIS CR-SPLIT files in their archive layout, built from single-exposure FLTs.

A STIS CR-SPLIT observation is one FLT file whose imsets SCI/ERR/DQ,1..N are the sub-exposures,
each SCI header with its own EXPTIME, EXPSTART, EXPEND, DATE-OBS, TIME-OBS; the primary header
gives the totals (TEXPTIME, TEXPSTRT, TEXPEND) and NEXTEND = 3 N. The simulated archive writes
its sets so; :func:`stis_crsplit_file` builds such a file from single-exposure FLTs (the files
``simulate.write_dataset`` writes for each frame on its own), independently of the simulator's
own layout; :func:`write_stis_crsplit` writes a small synthetic one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

#: Keywords of one exposure: in its SCI header in a file of several.
EXPOSURE_KEYWORDS = ("EXPTIME", "EXPSTART", "EXPEND", "DATE-OBS", "TIME-OBS", "DARKTIME", "SAA_EXIT", "SAA_TIME")


def stis_crsplit_file(sources, dest, *, rootname: str, imset_ok=None) -> Path:
    """Write the single-exposure FLT files ``sources`` as the imsets 1..N of ``dest``.

    ``imset_ok``: optional IMSET_OK value per imset (written only where given).
    """
    dest = Path(dest)
    opened = [fits.open(p) for p in sources]
    try:
        first = opened[0][0].header
        ph = first.copy()
        ph["ROOTNAME"] = rootname.upper()
        ph["FILENAME"] = dest.name
        ph["NEXTEND"] = 3 * len(opened)
        ph["CRSPLIT"] = len(opened)
        ph["TEXPTIME"] = sum(float(h[0].header["EXPTIME"]) for h in opened)
        ph["TEXPSTRT"] = float(first["EXPSTART"])
        ph["TEXPEND"] = float(opened[-1][0].header["EXPEND"])
        # the first exposure's DATE-OBS, TIME-OBS and SAA keywords stay in the primary header
        for key in ("EXPTIME", "EXPSTART", "EXPEND", "DARKTIME"):
            ph.remove(key, ignore_missing=True)
        hdus = [fits.PrimaryHDU(header=ph)]
        for k, src in enumerate(opened, start=1):
            for name in ("SCI", "ERR", "DQ"):
                hdu = src[name, 1].copy()
                hdu.ver = k
                if name == "SCI":
                    for key in EXPOSURE_KEYWORDS:
                        if key in src[0].header:
                            hdu.header[key] = src[0].header[key]
                    hdu.header["ROOTNAME"] = rootname.upper()
                    if imset_ok is not None and imset_ok[k - 1] is not None:
                        hdu.header["IMSET_OK"] = bool(imset_ok[k - 1])
                hdus.append(hdu)
        fits.HDUList(hdus).writeto(dest, overwrite=True, checksum=True)
    finally:
        for h in opened:
            h.close()
    return dest


def stis_spt_file(source, dest, *, rootname: str) -> Path:
    """Copy an SPT file under another ROOTNAME (the SPT of the CR-SPLIT file)."""
    with fits.open(source) as hdul:
        hdul[0].header["ROOTNAME"] = rootname.upper()
        hdul[0].header["FILENAME"] = Path(dest).name
        hdul.writeto(dest, overwrite=True, checksum=True)
    return Path(dest)


def write_stis_crsplit(path, *, n=2, shape=(12, 10), primary_times=True):
    """A STIS FLT of ``n`` exposures: totals in the primary header, each imset's own times and
    SAA keywords in its SCI header (imset k starts 1200 s after imset k - 1)."""
    ph = fits.Header()
    for k, v in {"ROOTNAME": "OCMV35010", "INSTRUME": "STIS", "DETECTOR": "CCD", "CCDAMP": "D",
                 "CCDGAIN": 1.0, "ATODGAIN": 1.0, "READNSE": 5.5, "CRSPLIT": n, "NEXTEND": 3 * n,
                 "TEXPTIME": 1100.0 * n, "TEXPSTRT": 56000.0, "TEXPEND": 56000.0 + n * 1200 / 86400,
                 "DATE-OBS": "2012-03-14", "TIME-OBS": "00:00:00", "SAA_TIME": 100}.items():
        ph[k] = v
    if primary_times:  # the first exposure's values, which must not stand for the others
        ph["EXPTIME"], ph["EXPSTART"], ph["EXPEND"] = 1100.0, 56000.0, 56000.0 + 1100 / 86400
    hdus = [fits.PrimaryHDU(header=ph)]
    rng = np.random.default_rng(1)
    for k in range(1, n + 1):
        start = 56000.0 + (k - 1) * 1200 / 86400
        sh = fits.Header()
        for key, v in {"BUNIT": "DN", "EXPTIME": 1100.0 + k, "EXPSTART": start, "EXPEND": start + 1100 / 86400,
                       "DATE-OBS": "2012-03-14", "TIME-OBS": f"00:{20 * (k - 1):02d}:00",
                       "SAA_TIME": 100 + 1200 * (k - 1)}.items():
            sh[key] = v
        hdus += [fits.ImageHDU(rng.normal(10, 3, shape).astype(np.float32) + 100 * k, header=sh, name="SCI", ver=k),
                 fits.ImageHDU(np.full(shape, 3.0, np.float32), name="ERR", ver=k),
                 fits.ImageHDU(np.full(shape, k, np.int16), name="DQ", ver=k)]
    fits.HDUList(hdus).writeto(path)

"""A directory of already-downloaded HST files used as an archive.

Any layout works (``mastDownload/HST/<obs_id>/...``, one flat directory, ...): every file named
``<rootname>_<suffix>.fits`` below the directory is indexed by its primary header (ROOTNAME,
INSTRUME, DETECTOR or CAMERA, EXPSTART, EXPTIME; TEXPSTRT and TEXPTIME where those are absent,
as in a STIS CR-SPLIT file, whose primary header gives the totals of its imsets). ``query``
lists the rootnames of an instrument whose EXPSTART falls in the month; ``fetch`` copies their
product files into the work directory in MAST's layout. A product found more than once (the same
rootname and suffix in two folders) is taken from the first path in sorted order, with a warning
naming every copy. The user's files are never modified:
they are copied, not linked, because later stages (CR rejection) write DQ flags into the files
they are given.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from astropy.io import fits

from .._text import plural
from ..config import InstrumentConfig
from ..intervals import Month
from .base import ArchiveError, Dataset, ProductFile, safe_filename

__all__ = ["LocalArchive"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z0-9]+)\.fits$", re.IGNORECASE)


@dataclass(frozen=True)
class _Entry:
    path: Path
    rootname: str
    suffix: str
    instrume: str
    detector: str
    expstart: Optional[float]
    exptime: Optional[float]
    size: int
    simulated: bool = False


class LocalArchive:
    """Darks from a local directory tree.

    Parameters
    ----------
    path : str or Path
        Directory searched recursively for ``*_<suffix>.fits`` files.
    """

    #: A month without files here may be one not copied in yet, not one without darks.
    complete = False

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"local archive: {self.path} is not a directory")
        self._index: Optional[list[_Entry]] = None

    def __repr__(self) -> str:
        return f"LocalArchive({str(self.path)!r})"

    def refresh(self) -> None:
        """Forget the index; the next query scans the directory again."""
        self._index = None

    def _scan(self) -> list[_Entry]:
        if self._index is not None:
            return self._index
        entries = []
        for f in sorted(self.path.rglob("*.fits")):
            m = _NAME.match(f.name)
            if not m or not f.is_file():
                continue
            try:
                h = fits.getheader(f, 0)
            except (OSError, ValueError) as exc:
                log.warning("local archive: skipping %s (%s)", f, exc)
                continue
            root = str(h.get("ROOTNAME", m.group(1))).strip().lower() or m.group(1).lower()
            detector = h.get("DETECTOR", h.get("CAMERA", ""))
            entries.append(_Entry(
                path=f, rootname=root, suffix=m.group(2).upper(),
                instrume=str(h.get("INSTRUME", "")).strip().upper(),
                detector=str(detector).strip().upper(),
                # a STIS file of several exposures gives its totals: TEXPSTRT, TEXPTIME
                expstart=_float(h.get("EXPSTART", h.get("TEXPSTRT"))),
                exptime=_float(h.get("EXPTIME", h.get("TEXPTIME"))),
                size=f.stat().st_size,
                simulated=bool(h.get("SIMULATE", False)),
            ))
        self._index = entries
        log.debug("local archive %s: %s indexed", self.path, plural(len(entries), "file"))
        return entries

    @property
    def source(self) -> str:
        """What its darks are (:data:`~hstcosmicrays.archive.base.SOURCES`): ``"simulated"``
        when every file carries ``SIMULATE = T`` (as ``hstcosmicrays simulate`` writes them),
        ``"hst"`` when none does, ``""`` for both or no file."""
        kinds = {e.simulated for e in self._scan()}
        return {frozenset({True}): "simulated", frozenset({False}): "hst"}.get(frozenset(kinds), "")

    def check_instrument(self, instrument: InstrumentConfig) -> None:
        """Raise ValueError, naming the directory and what it holds, when no file of
        ``instrument`` is in it (a wrong ``--archive``; every month would be stored empty)."""
        try:
            entries = self._scan()
        except OSError as exc:
            raise ValueError(f"local archive {self.path}: {exc}") from None
        if any(self._matches(e, instrument) for e in entries):
            return
        wanted = f"INSTRUME {instrument.instrume}" + (
            "" if instrument.kind == "wfpc2" else f", DETECTOR {instrument.detector}")
        held = sorted({f"{e.instrume}/{e.detector}" if e.detector else e.instrume for e in entries if e.instrume})
        found = (f"its {len(entries)} FITS files are of {', '.join(held)}" if held
                 else f"none of its {len(entries)} FITS files has INSTRUME" if entries
                 else "it holds no file named <rootname>_<suffix>.fits")
        raise ValueError(f"local archive {self.path}: no file of {instrument.name} ({wanted}); {found}")

    @staticmethod
    def _matches(entry: _Entry, instrument: InstrumentConfig) -> bool:
        if entry.instrume != instrument.instrume.upper():
            return False
        if instrument.kind == "wfpc2":
            return True
        return entry.detector == instrument.detector.upper()

    def query(self, instrument: InstrumentConfig, month: Month) -> list[Dataset]:
        """Rootnames of ``instrument`` with EXPSTART in ``month``, sorted by EXPSTART."""
        try:
            entries = self._scan()
        except OSError as exc:
            raise ArchiveError(f"local archive {self.path}: {exc}") from exc
        wanted = {s.upper() for s in instrument.products}
        lo, hi = month.mjd_start, month.mjd_stop
        by_root: dict[str, list[_Entry]] = {}
        for e in entries:
            by_root.setdefault(e.rootname, []).append(e)
        datasets = []
        for root, files in by_root.items():
            ours = [e for e in files if self._matches(e, instrument)]
            if not ours:
                continue
            starts = [e.expstart for e in ours if e.expstart is not None]
            if not starts or not lo <= starts[0] < hi:
                continue
            products = {}
            copies: dict[str, list[Path]] = {}
            for e in sorted(files, key=lambda e: str(e.path)):
                if e.suffix not in wanted:
                    continue
                copies.setdefault(e.suffix, []).append(e.path)
                if e.suffix not in products:
                    products[e.suffix] = ProductFile(
                        filename=f"{root}_{e.suffix.lower()}.fits", suffix=e.suffix, size=e.size,
                        uri=str(e.path),
                    )
            for suffix, paths in copies.items():
                if len(paths) > 1:  # e.g. downloaded twice into two folders: say which one is used
                    log.warning("local archive: %s_%s of %s is there %s (%s); using %s",
                                root, suffix.lower(), month.label, plural(len(paths), "time"),
                                ", ".join(str(q) for q in paths), paths[0])
            if not products:
                continue
            exptime = next((e.exptime for e in ours if e.exptime is not None), 0.0)
            datasets.append(Dataset(
                obs_id=root, instrument=instrument.name, t_min=float(starts[0]), exptime=float(exptime),
                products=tuple(products[s] for s in (x.upper() for x in instrument.products) if s in products),
            ))
        datasets.sort(key=lambda d: (d.t_min, d.obs_id))
        return datasets

    def fetch(self, datasets: Sequence[Dataset], workdir: Path) -> dict[str, dict[str, Path]]:
        """Copy the products of ``datasets`` to ``workdir/mastDownload/HST/<obs_id>/``.

        A copy of the right size already there is kept. Raises ArchiveError when a source file is
        gone or changed size since the query.
        """
        out: dict[str, dict[str, Path]] = {}
        for ds in datasets:
            d = Path(workdir) / "mastDownload" / "HST" / safe_filename(ds.obs_id)
            d.mkdir(parents=True, exist_ok=True)
            paths = {}
            for p in ds.products:
                src = Path(p.uri)
                dst = d / safe_filename(p.filename)
                try:
                    size = src.stat().st_size
                except OSError as exc:
                    raise ArchiveError(f"local archive: {src}: {exc.strerror}") from None
                if p.size is not None and size != p.size:
                    raise ArchiveError(f"local archive: {src} changed size since it was listed")
                if src.resolve() == dst.resolve():
                    raise ArchiveError(f"local archive: work directory {workdir} is inside the archive")
                if not (dst.exists() and dst.stat().st_size == size):
                    tmp = dst.with_name(dst.name + ".part")
                    shutil.copyfile(src, tmp)
                    tmp.replace(dst)
                paths[p.suffix] = dst
            out[ds.obs_id] = paths
        return out


def _float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None

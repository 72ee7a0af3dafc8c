"""The archive protocol shared by MAST, local directories and the simulated archive."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from ..config import InstrumentConfig, PipelineSettings
from ..intervals import Month

__all__ = ["Archive", "ArchiveError", "Dataset", "LOCAL_WRITE_ERRNOS", "ProductFile", "is_local_write_error",
           "make_archive", "safe_filename"]

#: errnos of a failed write that are the local disk's, not the archive's (a full disk or quota,
#: a read-only file system, a directory that cannot be written, a file size limit): every later
#: download would fail the same way, so retrying or blaming the archive is wrong
LOCAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def is_local_write_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an :class:`OSError` of :data:`LOCAL_WRITE_ERRNOS`."""
    return isinstance(exc, OSError) and exc.errno in LOCAL_WRITE_ERRNOS


class ArchiveError(RuntimeError):
    """The archive could not answer for a whole month (query failed, files missing after retries).

    The pipeline records the month as failed, with this message, and retries it on the next run.
    """


@dataclass(frozen=True)
class ProductFile:
    """One file of a dataset as the archive announces it.

    Attributes
    ----------
    filename : str
        Bare file name, e.g. ``ib1f01a1q_flt.fits``.
    suffix : str
        Product type in upper case: ``FLT``, ``SPT``, ``IMA``, ``C0M``, ``C1M``, ``SHM``.
    size : int or None
        Size in bytes announced by the archive (None when unknown).
    uri : str
        Archive URI (MAST ``dataURI``) or a local path.
    """

    filename: str
    suffix: str
    size: int | None
    uri: str


@dataclass(frozen=True)
class Dataset:
    """One dark exposure (an HST observation) and its product files.

    Attributes
    ----------
    obs_id : str
        Rootname in lower case (MAST ``obs_id``).
    instrument : str
        Configuration key of the instrument.
    t_min : float
        MJD of the exposure start.
    exptime : float
        Exposure time (s).
    products : tuple of ProductFile
    """

    obs_id: str
    instrument: str
    t_min: float
    exptime: float
    products: tuple[ProductFile, ...]


#: What an archive's darks are (``Archive.source``, recorded in the results store, which takes
#: no month of the other): ``"simulated"`` (the simulated archive) or ``"hst"`` (HST's own, from
#: MAST); ``""`` when not known (a directory of both, or of no file yet).
SOURCES = {"simulated": "the simulated archive", "hst": "HST darks from MAST"}


@runtime_checkable
class Archive(Protocol):
    """What the pipeline asks of an archive (and, optionally, ``source``: see :data:`SOURCES`)."""

    def query(self, instrument: InstrumentConfig, month: Month) -> list[Dataset]:
        """Darks of ``instrument`` whose exposure starts in ``month``, sorted by ``t_min``.

        Raises ArchiveError when the archive cannot answer.
        """

    def fetch(self, datasets: Sequence[Dataset], workdir: Path) -> dict[str, dict[str, Path]]:
        """Put every product of ``datasets`` under ``workdir/mastDownload/HST/<obs_id>/``.

        Returns ``{obs_id: {suffix: path}}``. Raises ArchiveError unless every file is present and
        verified, so that a month is never processed with a missing or truncated frame.
        """


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_filename(name: str) -> str:
    """Reduce an archive-supplied name to a bare, harmless file name.

    Directory parts are dropped and characters outside ``[A-Za-z0-9._-]`` are replaced by ``_``,
    so that nothing can be written outside the directory it is joined to.

    Raises
    ------
    ValueError
        Nothing usable is left (e.g. ``..`` or an empty name).
    """
    base = re.split(r"[\\/]", str(name))[-1]
    base = _UNSAFE.sub("_", base)
    if base in ("", ".", "..") or set(base) <= {"."}:
        raise ValueError(f"unusable file name from the archive: {name!r}")
    return base


def make_archive(spec: str, *, settings: PipelineSettings, cloud: bool = False) -> Archive:
    """Build the archive named by ``--archive``: ``mast``, ``simulated`` or a directory path."""
    if spec == "mast":
        from .mast import MastArchive

        return MastArchive(
            timeout=settings.mast_timeout, retries=settings.download_retries,
            backoff=settings.download_backoff, cloud=cloud,
        )
    if spec == "simulated":
        from .simulated import SimulatedArchive

        return SimulatedArchive(seed=settings.simulation_seed)
    path = Path(spec)
    if path.is_dir():
        from .local import LocalArchive

        return LocalArchive(path)
    raise ValueError(f"--archive: expected 'mast', 'simulated' or an existing directory, got {spec!r}")

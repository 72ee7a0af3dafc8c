"""Where darks come from: MAST (astroquery), a local directory, or the simulated archive.

Every archive answers the same two calls (see :class:`~hstcosmicrays.archive.base.Archive`):
``query(instrument, month)`` lists the month's darks and ``fetch(datasets, workdir)`` puts their
files on disk in MAST's download layout.
"""

from .base import Archive, ArchiveError, Dataset, ProductFile, make_archive

__all__ = ["Archive", "ArchiveError", "Dataset", "ProductFile", "make_archive"]

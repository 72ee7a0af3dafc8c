"""Is a FITS file whole? The check shared by the download verification and the readers.

A FITS file is a sequence of HDUs, each a header of 2880-byte blocks (80-byte cards up to
``END``) and data padded to a whole block, so the headers say how long the file must be.
astropy opens a file cut short without an error: a cut inside data leaves the last HDU reading
past the end (its ``TypeError``/``ValueError`` come only when the data is read), a cut inside a
header drops that HDU, and it says so only with warnings printed outside any log format. This
module finds those cuts from the HDUs' places in the file, so that a reader can refuse the file
with one line naming it, and keeps astropy's own warnings about them quiet:

* :func:`fits_extent`: the bytes the headers of an opened file announce;
* :func:`fits_truncation`: why a file is cut short, or None;
* :func:`fits_trailing_bytes`: bytes after the last HDU that are not a cut header (junk, or
  HDUs astropy could not read);
* :func:`fits_structure_warnings_quieted`: a context for ``fits.open`` in which astropy's
  warnings about a file's structure ("File may have been truncated", "Error validating header
  for HDU", "Missing padding to end of the FITS block", "Unexpected extra padding") are not
  shown, as :func:`fits_truncation` and :func:`fits_trailing_bytes` report what they mean.

Used by :func:`hstcosmicrays.archive.mast.verify_product` and by
:func:`hstcosmicrays.frames.open_fits` (every reader of a science file).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator

__all__ = ["fits_extent", "fits_trailing_bytes", "fits_truncation", "fits_structure_warnings_quieted"]

#: FITS block size (bytes): headers and data are padded to whole blocks.
_BLOCK = 2880

_CARD = 80
#: The longest header looked for after the last complete HDU (a cut header is shorter; HST
#: headers are a few blocks).
_MAX_HEADER = 100 * _BLOCK

#: How a primary header and an extension header start.
_FIRST_KEYWORDS = (b"SIMPLE  =", b"XTENSION=")

#: astropy's warnings about a file's structure, reported by :func:`fits_truncation` instead.
_STRUCTURE_WARNINGS = (
    "File may have been truncated", "Error validating header for HDU",
    "Missing padding to end of the FITS block", "Unexpected extra padding at the end of the file",
)


@contextlib.contextmanager
def fits_structure_warnings_quieted() -> Iterator[None]:
    """A context in which astropy's warnings about a file's structure are not shown.

    Open a file and read all its headers inside it, then ask :func:`fits_truncation` and
    :func:`fits_trailing_bytes` what its structure is. Other warnings pass as usual.
    """
    from astropy.utils.exceptions import AstropyDeprecationWarning, AstropyUserWarning

    with warnings.catch_warnings():
        for text in _STRUCTURE_WARNINGS:
            warnings.filterwarnings("ignore", message=text, category=AstropyUserWarning)
        # astropy 6.1 words "Error validating header" with its own deprecated indent(), which
        # warns too (the newest astropy for Python 3.10)
        warnings.filterwarnings("ignore", message="The indent function is deprecated",
                                category=AstropyDeprecationWarning)
        yield


def fits_extent(hdul: Any) -> int:
    """Bytes the headers of an opened FITS file announce: the end of its last HDU.

    .. math::

        E = \\max_i (\\mathrm{datLoc}_i + \\mathrm{datSpan}_i)

    with :math:`\\mathrm{datLoc}_i` the byte where the data of HDU :math:`i` starts and
    :math:`\\mathrm{datSpan}_i` its size padded to whole 2880-byte blocks
    (``HDUList.fileinfo``). Reads every header of ``hdul`` (no data).

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        Opened from a file.

    Returns
    -------
    int
        :math:`E` in bytes; 0 for a list without HDUs in a file.
    """
    end = 0
    for i in range(len(hdul)):
        info = hdul.fileinfo(i)
        if info and info.get("datLoc") is not None:
            end = max(end, int(info["datLoc"]) + int(info["datSpan"] or 0))
    return end


def _header_cut_short(path: Path, *, offset: int, size: int) -> bool:
    """True when the bytes of ``path`` from ``offset`` to its end (``size``) are the start of a
    header cut short: ``SIMPLE`` or ``XTENSION`` first, and no ``END`` card, or an ``END`` card
    whose header, padded to whole blocks, runs past the end of the file."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read(min(size - offset, _MAX_HEADER))
    first = text[:len(_FIRST_KEYWORDS[0])]
    if not first or not any(key.startswith(first) for key in _FIRST_KEYWORDS):
        return False
    for start in range(0, len(text) - len(text) % _CARD, _CARD):
        if text[start:start + _CARD].rstrip(b" ") == b"END":
            length = -(-(start + _CARD) // _BLOCK) * _BLOCK
            return offset + length > size
    return size - offset <= _MAX_HEADER  # no END card before the end of the file


def _is_compressed(hdul: Any) -> bool:
    """True for a file astropy decompresses (gzip, bzip2, zip): its size on disk is not that of
    its FITS structure."""
    info = hdul.fileinfo(0) if len(hdul) else None
    return bool(getattr(info and info.get("file"), "compression", None))


def fits_truncation(path: str | Path, *, hdul: Any = None) -> str | None:
    """Why a FITS file is cut short (truncated), or None when nothing says it is.

    A file of ``S`` bytes is truncated when

    * its headers announce more bytes than it has, :math:`E > S` (:func:`fits_extent`): a cut
      inside data or inside the padding of a block;
    * the bytes after its last complete HDU start a header (``XTENSION``; ``SIMPLE`` when
      astropy could not open the file, ``hdul`` None) that ends, padded to whole blocks, past
      the end of the file, or has no ``END`` card: a cut inside a header, which astropy drops;
    * its HDUs fill it exactly, :math:`E = S`, but its primary header's NEXTEND announces more
      extensions than it holds: a cut between two HDUs, which leaves nothing else to see.

    Bytes after the last HDU that do not start a header are not a truncation (junk, or a
    damaged header astropy stopped at: :func:`fits_trailing_bytes`). Of a compressed file
    (``.fits.gz``) only NEXTEND is checked: its size on disk is not its FITS size.

    Parameters
    ----------
    path : str or Path
        The file.
    hdul : astropy.io.fits.HDUList, optional
        ``path`` opened by astropy (inside :func:`fits_structure_warnings_quieted`); every
        header is read. None: astropy could not open it.

    Returns
    -------
    str or None
        ``"truncated: ..."``: how many bytes the file has and what it lacks, one line, without
        the file's name.
    """
    path = Path(path)
    size = path.stat().st_size
    if hdul is None:
        if _header_cut_short(path, offset=0, size=size):
            return f"truncated: {size:,} bytes, ending inside the primary header"
        return None
    n = len(hdul)
    if n and not _is_compressed(hdul):
        end = fits_extent(hdul)
        if end > size:
            return f"truncated: {size:,} of at least {end:,} bytes (the FITS headers announce more data)"
        if end < size:  # a header cut short, or bytes that are no truncation (fits_trailing_bytes)
            if _header_cut_short(path, offset=end, size=size):
                return f"truncated: {size:,} bytes, ending inside the header of extension {n}"
            return None
    nextend = hdul[0].header.get("NEXTEND") if n else None
    if isinstance(nextend, int) and not isinstance(nextend, bool) and n - 1 < nextend:
        return (f"truncated: {size:,} bytes hold {n - 1} of the {nextend} extensions "
                "its primary header announces (NEXTEND)")
    return None


def fits_trailing_bytes(path: str | Path, *, hdul: Any) -> int:
    """Bytes of a FITS file after the end of its last HDU, :math:`S - E` (:func:`fits_extent`).

    Junk appended to a file, or the HDUs from one whose header astropy could not read onwards
    (astropy keeps the HDUs before it). Ask :func:`fits_truncation` first: a header cut short
    there is a truncation.

    Parameters
    ----------
    path : str or Path
    hdul : astropy.io.fits.HDUList
        ``path`` opened by astropy, every header read.

    Returns
    -------
    int
        0 when the HDUs fill the file, when they announce more than it has, or for a
        compressed file.
    """
    if not len(hdul) or _is_compressed(hdul):
        return 0
    return max(Path(path).stat().st_size - fits_extent(hdul), 0)

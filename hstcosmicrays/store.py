"""HDF5 results store: columnar, appendable tables with a month ledger and atomic month commits.

Layout (see docs/architecture.md)::

    /                     attrs: schema_version, instrument, software_version, config_hash, created,
                          source (what the darks are: simulated, hst, or "" not known)
    /<table>/<column>     one resizable, chunked, compressed 1-D dataset per column
    /months/<column>      the ledger
    /configurations/...   the text of each configuration that a ledger row names by its digest

Visibility rule: a reader sees the rows inside the ``[<table>_start, <table>_stop)`` ranges of the
*latest* ledger row of every month. The ledger row is written after the month's data rows have been
flushed, and its ``state`` column is written last, so a month becomes visible all at once.

Crash safety: the writer opens the file only while it commits, in HDF5 SWMR mode, which keeps the
file consistent for readers at every instant. A process killed while committing leaves the
superblock's "open for write" flags set and possibly an end-of-allocation mark short of what it
wrote; the next writer (holding ``<store>.lock``) clears the flags and raises the mark to the file
size, as ``h5clear -s --increment`` would, then truncates each data table to the largest range a
ledger row owns, dropping the partial month.

Damage: a file shorter than its superblock's end-of-file address (a truncated copy, a full disk)
is refused at once, by readers and by the writer, with a :class:`StoreError`. HDF5 itself would
not notice in SWMR-read mode: it skips its own length check there, and a metadata block past the
end of the file reads as zeros, fails its checksum and is read again, up to 100 times, with a
sleep that doubles each time -- a reader would hang for ever.

Compaction (:meth:`ResultsStore.compact`, ``hstcosmicrays compact``) rewrites the file with only
the latest ledger row of each month and its rows, into ``<store>.compacting``, renamed over the
store when complete. A compaction that is killed leaves that file; it runs only under the store's
lock, so the next writer, which holds the lock, deletes it, and :func:`compacting_file` (what
``hstcosmicrays status`` shows) tells a leftover from a compaction in progress by the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

import h5py
import numpy as np

from ._text import plural
from .archive.base import SOURCES
from .config import config_digest
from .schema import CONFIG_PART_BYTES, DATA_TABLES, SCHEMA_VERSION, TABLES, as_table, empty_table

__all__ = [
    "ResultsStore",
    "StoreError",
    "StoreLockedError",
    "StoreRewrittenError",
    "read_again_if_rewritten",
    "store_path",
    "read_committed",
    "read_ledger",
    "read_configurations",
    "format_ledger",
    "stored_instrument",
    "open_for_reading",
    "visible_row_numbers",
    "visible_ranges",
    "read_rows",
    "row_numbers",
    "CompactingFile",
    "compacting_file",
]

log = logging.getLogger(__name__)

#: Rows per chunk of each table: large enough to compress well, small enough that appending a
#: month rewrites at most one partly filled chunk per column. That chunk moves (compressed, it
#: grows), and the space it leaves is lost to the file once the writer closes it: half a chunk
#: per column and month on average. With 2**17 rows a chunk, a simulated WFC3/UVIS store of 24
#: months was 187 MB for 145 MB of data; with 2**15 it is 152 MB, the data no larger and reads
#: as fast (2**14 compresses worse). ``compact`` gives the space back either way.
CHUNK_ROWS = {"exposures": 4096, "cosmic_rays": 1 << 15, "orbit": 1 << 15, "failures": 1024, "months": 256,
              "configurations": 64}

#: Times a read is done again when the store was compacted between its ledger snapshot and
#: its rows (:class:`StoreRewrittenError`).
REWRITTEN_RETRIES = 2

_T = TypeVar("_T")

#: Ledger column written last: the commit mark.
COMMIT_COLUMN = "state"

#: Seconds a writer tries for the store's lock before it is refused: :func:`compacting_file`
#: (``hstcosmicrays status``) holds the lock, shared, for an instant to see whether a writer has it.
LOCK_WAIT = 0.5


class StoreError(RuntimeError):
    """The store file is not a results store of this instrument, or cannot be opened."""


class StoreLockedError(StoreError):
    """Another process is writing this store."""


class StoreRewrittenError(StoreError):
    """The store was rewritten (compacted) after the ledger snapshot whose row ranges are read:
    its row numbers changed, so the ranges no longer name the same rows."""


def store_path(output_dir: str | os.PathLike, instrument) -> Path:
    """Path of an instrument's store in ``output_dir`` (``instrument``: config or name)."""
    name = getattr(instrument, "name", instrument)
    return Path(output_dir) / f"{name}.h5"


def _lock_path(path: Path) -> Path:
    """The lock file of the store ``path``: a writer holds an exclusive ``flock`` on it."""
    return path.with_name(path.name + ".lock")


def _compacting_path(path: Path) -> Path:
    """The file a compaction of the store ``path`` writes, renamed over the store when complete."""
    return path.with_name(path.name + ".compacting")


# ----------------------------------------------------------------------------------------------
# superblock repair after a killed SWMR writer (what `h5clear -s --increment` does)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK32


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` checksum, which HDF5 uses for its metadata.

    Parameters
    ----------
    data : bytes
    initval : int

    Returns
    -------
    int
        32-bit checksum.
    """
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK32
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k:k + 4], "little")) & _MASK32
        b = (b + int.from_bytes(data[k + 4:k + 8], "little")) & _MASK32
        c = (c + int.from_bytes(data[k + 8:k + 12], "little")) & _MASK32
        a = (a - c) & _MASK32; a ^= _rot(c, 4); c = (c + b) & _MASK32  # noqa: E702
        b = (b - a) & _MASK32; b ^= _rot(a, 6); a = (a + c) & _MASK32  # noqa: E702
        c = (c - b) & _MASK32; c ^= _rot(b, 8); b = (b + a) & _MASK32  # noqa: E702
        a = (a - c) & _MASK32; a ^= _rot(c, 16); c = (c + b) & _MASK32  # noqa: E702
        b = (b - a) & _MASK32; b ^= _rot(a, 19); a = (a + c) & _MASK32  # noqa: E702
        c = (c - b) & _MASK32; c ^= _rot(b, 4); b = (b + a) & _MASK32  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k:k + length] + b"\0" * (12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK32
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK32
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK32
    c ^= b; c = (c - _rot(b, 14)) & _MASK32  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _MASK32  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK32  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK32  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK32  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK32  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK32  # noqa: E702
    return c


#: Superblock consistency flags that a writer sets while it has the file open: write access and
#: SWMR-write access (HDF5's ``H5F_SUPER_WRITE_ACCESS`` and ``H5F_SUPER_SWMR_WRITE_ACCESS``).
_SB_WRITE_ACCESS = 0x01
_SB_SWMR_WRITE_ACCESS = 0x04

#: Bytes of a version 2/3 superblock with 8-byte addresses, checksum included.
_SB_SIZE = 48


@dataclass(frozen=True)
class _Superblock:
    """The fields of a version 2/3 superblock that the store checks and repairs."""

    flags: int
    base: int
    eoa: int

    @property
    def length(self) -> int:
        """Bytes the file must have: the end-of-file address, which counts from the base address."""
        return self.eoa - self.base

    @property
    def marked_swmr_writing(self) -> bool:
        """True while a writer has the file open in SWMR mode (or was killed while it had)."""
        mask = _SB_WRITE_ACCESS | _SB_SWMR_WRITE_ACCESS
        return self.flags & mask == mask


def _parse_superblock(sb: bytes, path: Path) -> _Superblock | None:
    """Decode the first bytes of a file as a version 2/3 superblock with 8-byte addresses.

    Layout: signature (8), version, offset size, length size, consistency flags (byte 11),
    base address (12), superblock extension address (20), end-of-file address (28), root group
    address (36), lookup3 checksum of bytes 0-43 (44). The "end-of-file address" is the end of
    the space HDF5 has allocated; a healthy closed file is exactly that long.

    Returns
    -------
    _Superblock or None
        None for anything else (not HDF5, an older superblock version, a user block): HDF5's
        own checks apply to those.

    Raises
    ------
    StoreError
        The file ends inside the superblock, or the superblock's checksum does not match.
    """
    if len(sb) < 10 or sb[:8] != _HDF5_SIGNATURE or sb[8] not in (2, 3):
        return None
    if len(sb) < _SB_SIZE:
        raise StoreError(
            f"{path} is damaged: the file ends inside its HDF5 superblock ({plural(len(sb), 'byte')}; "
            "truncated); restore it from a copy"
        )
    if sb[9] != 8:
        return None
    if lookup3(bytes(sb[:44])) != int.from_bytes(sb[44:48], "little"):
        raise StoreError(f"{path} is damaged: its HDF5 superblock checksum does not match; restore it from a copy")
    return _Superblock(flags=sb[11], base=int.from_bytes(sb[12:20], "little"),
                       eoa=int.from_bytes(sb[28:36], "little"))


def _truncated_error(path: Path, size: int, eoa: int, *, marked_writing: bool = False) -> StoreError:
    """The error for a file shorter than its superblock says."""
    state = " and is still marked as open by a writer" if marked_writing else ""
    return StoreError(
        f"{path} is damaged: the file is {size} bytes but its HDF5 superblock says {eoa}{state} "
        "(truncated, e.g. by an interrupted copy or a full disk); restore it from a copy"
    )


def _check_not_truncated(path: Path, *, wait: float) -> None:
    """Refuse a file that is shorter than its superblock's end-of-file address.

    A SWMR reader must do this itself: HDF5 skips its length check in SWMR-read mode and then
    retries every metadata block that lies past the end of the file, for ever in effect (see
    the module docstring). The check costs two 48-byte reads and an ``fstat``.

    While a writer has the file open in SWMR mode, the superblock may count space the writer
    has allocated but not yet written, so the file may be shorter for a moment: a file marked
    so is refused only if it stays shorter for ``wait`` seconds (the writer keeps the file open
    only while it commits a month). The superblock is read before and after the file size;
    when the two reads differ (a writer opened or closed the file meanwhile), it looks again.

    Raises
    ------
    StoreError
        The file is truncated (or its superblock is damaged).
    """
    deadline = time.monotonic() + wait
    with open(path, "rb") as fh:
        fd = fh.fileno()
        while True:
            before = os.pread(fd, _SB_SIZE, 0)
            size = os.fstat(fd).st_size
            after = os.pread(fd, _SB_SIZE, 0)
            if before == after:
                sb = _parse_superblock(after, path)
                if sb is None or sb.length <= size:
                    return
                if not sb.marked_swmr_writing:
                    raise _truncated_error(path, size, sb.length)
                if time.monotonic() >= deadline:
                    raise _truncated_error(path, size, sb.length, marked_writing=True)
            time.sleep(0.01)


def _repair_superblock(path: Path) -> bool:
    """Clear the write/SWMR flags of a version 2/3 superblock and raise its EOA to the file size.

    Only safe while no process has the file open for writing (the caller holds the store lock).
    See :func:`_parse_superblock` for the layout.

    Returns
    -------
    bool
        True when the superblock was changed.

    Raises
    ------
    StoreError
        The file is shorter than the superblock says (truncated), or the superblock is damaged;
        the file is left as it was.
    """
    with open(path, "r+b") as fh:
        sb = bytearray(fh.read(_SB_SIZE))
        parsed = _parse_superblock(bytes(sb), path)
        if parsed is None:
            return False
        eoa = parsed.eoa
        eof = os.fstat(fh.fileno()).st_size
        if parsed.length > eof:
            # HDF5 would refuse to open it (or hang, for SWMR readers); nothing to repair here
            raise _truncated_error(path, eof, parsed.length, marked_writing=bool(sb[11]))
        if sb[11] == 0 and eoa >= eof:
            return False
        sb[11] = 0
        sb[28:36] = max(eoa, eof).to_bytes(8, "little")
        sb[44:48] = lookup3(bytes(sb[:44])).to_bytes(4, "little")
        fh.seek(0)
        fh.write(sb)
        fh.flush()
        os.fsync(fh.fileno())
    return True


# ----------------------------------------------------------------------------------------------
# reading


#: Held while this process has a store open for reading through the functions of this module:
#: two threads reading one file in SWMR mode, each refreshing its datasets, can get wrong data
#: without any error (HDF5 shares one metadata cache between the handles of a file). h5py
#: serialises every HDF5 call anyway, so this costs no parallelism.
_SWMR_READ_LOCK = threading.RLock()


@contextmanager
def _reading(path: str | os.PathLike, *, wait: float = 10.0) -> Iterator[h5py.File]:
    """:func:`open_for_reading` under :data:`_SWMR_READ_LOCK`, closed on exit."""
    with _SWMR_READ_LOCK, open_for_reading(path, wait=wait) as f:
        yield f


def open_for_reading(path: str | os.PathLike, *, wait: float = 10.0) -> h5py.File:
    """Open a store for reading, safely while a run is writing it (SWMR read, no file lock).

    The writer only ever has the file open in SWMR-write mode; should the file still be marked
    open by a plain (non-SWMR) writer, e.g. a store written by an older version, this retries for
    up to ``wait`` seconds before giving up. It also retries when HDF5 (before 2.0, e.g. h5py
    3.12) finds the file shorter than its superblock says because a writer is extending it.

    Parameters
    ----------
    path : path of the store
    wait : float
        Seconds to wait for a writer to release the file, or to finish extending it (see
        :func:`_check_not_truncated`).

    Returns
    -------
    h5py.File
        Open in SWMR-read mode; close it (use it as a context manager). Not to be used from
        several threads at once, nor beside the other read functions of this module in another
        thread (they take a lock for that).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    StoreError
        The file is not HDF5, is damaged (e.g. shorter than its superblock says), or stays
        locked by a plain writer.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}")
    _check_not_truncated(path, wait=wait)
    deadline = time.monotonic() + wait
    while True:
        try:
            return h5py.File(path, "r", libver="latest", swmr=True, locking=False)
        except OSError as exc:
            if "open for SWMR writing" in str(exc) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if "truncated file" in str(exc) and time.monotonic() < deadline:
                # HDF5 before 2.0 compares the file's length with its superblock at open even in
                # SWMR-read mode, so a writer extending the file since the check above fails the
                # open: check again (it waits for the writer, or refuses a truncated file)
                _check_not_truncated(path, wait=max(deadline - time.monotonic(), 0.0))
                time.sleep(0.01)
                continue
            raise StoreError(f"{path}: cannot open as an HDF5 results store ({exc})") from None


def _file_id(f: h5py.File) -> tuple[int, int]:
    """(device, inode) of the file ``f`` has open: a compaction puts a new file in the store's
    place, so row ranges taken from one file's ledger are valid only in a file of the same id."""
    st = os.fstat(f.id.get_vfd_handle())
    return (st.st_dev, st.st_ino)


def _column_length(group: h5py.Group) -> int:
    """Common length of a table's columns (the shortest, while a writer is appending)."""
    lengths = []
    for ds in group.values():
        if group.file.swmr_mode and group.file.mode == "r":
            ds.refresh()
        lengths.append(ds.shape[0])
    return min(lengths) if lengths else 0


def _read_ledger_arrays(f: h5py.File) -> dict[str, np.ndarray]:
    if "months" not in f:  # an HDF5 file, but not a store: h5py's KeyError was a traceback
        raise StoreError(f"{f.filename} is not a results store (no /months ledger)")
    grp = f["months"]
    n = _column_length(grp)
    state = grp[COMMIT_COLUMN][:n]
    # the commit mark is written last: a row without it was being written and is not yet part
    # of the ledger (only the last row can be in that state)
    empty = np.flatnonzero(state == b"")
    if len(empty):
        n = int(empty[0])
    return {c.name: grp[c.name][:n] for c in TABLES["months"]}


def _latest_rows(ledger: Mapping[str, np.ndarray]) -> np.ndarray:
    """Indices of the latest ledger row of each month, in ledger order."""
    months = ledger["month"]
    if len(months) == 0:
        return np.zeros(0, dtype=np.int64)
    # last occurrence of each month
    rev = months[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    return np.sort(len(months) - 1 - first_in_rev)


def _visible_ranges(ledger: Mapping[str, np.ndarray], table: str) -> list[tuple[int, int]]:
    rows = _latest_rows(ledger)
    starts = ledger[f"{table}_start"][rows]
    stops = ledger[f"{table}_stop"][rows]
    order = np.argsort(starts, kind="stable")
    merged: list[tuple[int, int]] = []
    for a, b in zip(starts[order].tolist(), stops[order].tolist()):
        if b <= a:
            continue
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def _column_names(table: str, columns: Iterable[str] | None) -> list[str]:
    """The requested columns of ``table`` (all by default); KeyError naming unknown ones."""
    names = list(columns) if columns is not None else [c.name for c in TABLES[table]]
    unknown = set(names) - {c.name for c in TABLES[table]}
    if unknown:
        raise KeyError(f"table {table} has no column(s) {sorted(unknown)}")
    return names


def read_ledger(path: str | os.PathLike, *, latest: bool = True) -> dict[str, np.ndarray]:
    """The month ledger as columns (``latest``: one row per month, its current state)."""
    ledger, _ = _read_ledger_snapshot(path)
    if latest:
        rows = _latest_rows(ledger)
        order = np.argsort(ledger["month"][rows], kind="stable")
        ledger = {k: v[rows][order] for k, v in ledger.items()}
    return ledger


def _read_ledger_snapshot(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Every ledger row, and the id of the file it was read from (:func:`_file_id`)."""
    with _reading(path) as f:
        return _read_ledger_arrays(f), _file_id(f)


def read_configurations(path: str | os.PathLike) -> dict[str, str]:
    """The configurations that the store's ledger rows name, as ``{config_hash: JSON text}``.

    A digest of the ledger without a stored text is missing from the result: stores created
    before configurations were recorded have no ``/configurations`` (``hstcosmicrays compact``
    adds the table; the next commit then records its configuration).
    """
    with _reading(path) as f:
        named = set(_read_ledger_arrays(f)["config_hash"].tolist())
        texts = _stored_configurations(f)
    return {k.decode(): v for k, v in sorted(texts.items()) if k in named}


def _stored_configurations(f: h5py.File) -> dict[bytes, str]:
    """Every complete configuration text in ``/configurations``, by digest.

    A text is a run of consecutive rows of one digest with parts 0, 1, 2, ...; a run cut short
    by a killed writer fails the digest check and is ignored (the next writer appends the text
    again)."""
    if "configurations" not in f:
        return {}
    grp = f["configurations"]
    n = _column_length(grp)
    digests, parts, pieces = (grp[c.name][:n] for c in TABLES["configurations"])
    out: dict[bytes, str] = {}
    for first in np.flatnonzero(parts == 0).tolist():
        last = first
        while last + 1 < n and parts[last + 1] == parts[last] + 1 and digests[last + 1] == digests[first]:
            last += 1
        text = b"".join(pieces[first:last + 1].tolist()).decode()
        if config_digest(text) == digests[first].decode():
            out.setdefault(digests[first], text)
    return out


def read_committed(
    path: str | os.PathLike, table: str, *, columns: Iterable[str] | None = None,
    months: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read the visible rows of ``table`` (only months whose latest ledger row owns them).

    Parameters
    ----------
    path : path of the store
    table : str
        ``exposures``, ``cosmic_rays``, ``orbit``, ``failures`` or ``months`` (the full ledger).
    columns : iterable of str, optional
        Subset of columns (default: all). In ``cosmic_rays`` and ``orbit`` the
        ``exposure_index`` values are row numbers of the file's ``/exposures``; the file row
        numbers of the visible exposures are given by :func:`visible_row_numbers`.
    months : iterable of str, optional
        Only these months (``YYYY-MM``).

    Returns
    -------
    dict of numpy arrays
    """
    if table not in TABLES or table == "configurations":
        known = [t for t in TABLES if t != "configurations"]
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(known)} (configurations: read_configurations)")
    names = _column_names(table, columns)
    if table == "months":
        with _reading(path) as f:
            ledger = _read_ledger_arrays(f)
        return {k: ledger[k] for k in names}
    # committed rows are never removed, so the ranges of one ledger snapshot stay readable (in the
    # same file: a compaction in between renumbers them, and the read is done again)
    def snapshot_rows():
        ranges, file_id = visible_ranges(path, tables=(table,), months=months, with_file_id=True)
        return read_rows(path, table, ranges=ranges[table], columns=names, file_id=file_id)

    return read_again_if_rewritten(snapshot_rows)


def read_again_if_rewritten(read: Callable[[], _T]) -> _T:
    """``read()``, done again (up to :data:`REWRITTEN_RETRIES` times) when it raises
    :class:`StoreRewrittenError`: ``read`` takes a new ledger snapshot and reads its rows, and a
    compaction came between the two (it renumbers the rows)."""
    for _ in range(REWRITTEN_RETRIES):
        try:
            return read()
        except StoreRewrittenError:
            pass
    return read()


def row_numbers(ranges: Iterable[tuple[int, int]]) -> np.ndarray:
    """The file row numbers inside ``ranges`` (``[start, stop)`` pairs), as one int64 array."""
    parts = [np.arange(a, b, dtype=np.int64) for a, b in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def visible_row_numbers(path: str | os.PathLike, table: str) -> np.ndarray:
    """File row numbers of the visible rows of ``table`` (to join on ``exposure_index``)."""
    return row_numbers(visible_ranges(path, tables=(table,))[table])


def visible_ranges(
    path: str | os.PathLike, *, tables: Iterable[str] = DATA_TABLES, months: Iterable[str] | None = None,
    first_month: str | None = None, last_month: str | None = None, with_file_id: bool = False,
):
    """File row ranges ``[start, stop)`` of the visible rows of several tables, from one ledger read.

    Reading the ledger once gives a consistent snapshot: ``exposure_index`` values of the
    ``cosmic_rays`` and ``orbit`` ranges point into the ``exposures`` ranges of the same snapshot,
    even while a writer commits more months. The ranges stay readable with :func:`read_rows`
    afterwards, because committed rows are never removed from the file.

    Parameters
    ----------
    path : path of the store
    tables : iterable of str
        Data tables (default: all of them).
    months : iterable of str, optional
        Only these months (``YYYY-MM``).
    first_month, last_month : str, optional
        Only the months from ``first_month`` to ``last_month`` inclusive (``YYYY-MM``).
    with_file_id : bool
        Also return the id of the file the ledger was read from, for ``read_rows(file_id=)``:
        ``hstcosmicrays compact`` puts a new file with renumbered rows in the store's place, and
        ranges read before then name other rows of the new file.

    Returns
    -------
    dict, or (dict, file id) with ``with_file_id``
        ``{table: [(start, stop), ...]}``, ranges sorted and merged where adjacent.
    """
    ledger, file_id = _read_ledger_snapshot(path)
    if months is not None:
        wanted = [m.encode() if isinstance(m, str) else m for m in months]
        keep = np.isin(ledger["month"], wanted)
        ledger = {k: v[keep] for k, v in ledger.items()}
    if first_month is not None or last_month is not None:
        keep = np.ones(len(ledger["month"]), dtype=bool)
        if first_month is not None:
            keep &= ledger["month"] >= first_month.encode()
        if last_month is not None:
            keep &= ledger["month"] <= last_month.encode()
        ledger = {k: v[keep] for k, v in ledger.items()}
    out = {}
    for table in tables:
        if table not in DATA_TABLES:
            raise KeyError(f"unknown data table {table!r}; tables: {', '.join(DATA_TABLES)}")
        out[table] = _visible_ranges(ledger, table)
    return (out, file_id) if with_file_id else out


def read_rows(
    path: str | os.PathLike, table: str, *, ranges: Iterable[tuple[int, int]],
    columns: Iterable[str] | None = None, file_id: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Read the file rows ``ranges`` (from :func:`visible_ranges`) of some columns of ``table``.

    Safe while a run writes the file (SWMR read, no lock). Use it to read a large table in
    pieces, e.g. one range of ~1e6 rows per dask partition.

    Parameters
    ----------
    file_id : optional
        From ``visible_ranges(with_file_id=True)``: the rows are read only from the file whose
        ledger gave the ranges.

    Returns
    -------
    dict of numpy arrays
        The rows of all ranges, concatenated in the order given.

    Raises
    ------
    StoreRewrittenError
        ``file_id`` is given and the store is another file now (compacted since).
    """
    if table not in DATA_TABLES:
        raise KeyError(f"unknown data table {table!r}; tables: {', '.join(DATA_TABLES)}")
    names = _column_names(table, columns)
    ranges = [(int(a), int(b)) for a, b in ranges if b > a]
    with _reading(path) as f:
        if file_id is not None and _file_id(f) != tuple(file_id):
            raise StoreRewrittenError(
                f"{path} was rewritten (hstcosmicrays compact) after its ledger was read: its row numbers "
                "changed; read it again")
        grp = f[table]
        out = {}
        for name in names:
            ds = grp[name]
            ds.refresh()
            if any(b > ds.shape[0] for _, b in ranges):
                raise StoreError(f"{path}: /{table}/{name} has {ds.shape[0]} rows; a range asks for more")
            parts = [ds[a:b] for a, b in ranges]
            out[name] = np.concatenate(parts) if len(parts) > 1 else (
                parts[0] if parts else np.zeros(0, dtype=ds.dtype))
        return out


def stored_instrument(path: str | os.PathLike, *, expected: str | None = None) -> str:
    """The instrument whose results a store holds (its ``instrument`` attribute; "" if none).

    Raises
    ------
    StoreError
        ``expected`` is given and the store holds another instrument's results (a renamed file),
        or the file is damaged or not HDF5.
    """
    with _reading(path) as f:
        instrument = f.attrs.get("instrument", "")
    if isinstance(instrument, bytes):
        instrument = instrument.decode()
    instrument = str(instrument)
    if expected is not None and instrument and instrument != expected:
        raise StoreError(f"{path} holds the results of {instrument}, not {expected} (a renamed file?)")
    return instrument


def format_ledger(path: str | os.PathLike) -> str:
    """The ledger as a text table: one line per month with its state and counts.

    When the months were produced by more than one configuration, each line also names its
    month's ``config_hash`` (for ``hstcosmicrays status --show-config DIGEST``).
    """
    ledger = read_ledger(path)
    instrument = stored_instrument(path) or "?"
    several = len(np.unique(ledger["config_hash"])) > 1
    header = f"{'month':8} {'state':10} {'found':>6} {'processed':>9} {'failed':>6} {'CRs':>10} {'median rate':>11}"
    header += f" {'configuration':16}" if several else ""
    lines = [f"store {path} ({instrument})", header, "-" * len(header)]
    for i in range(len(ledger["month"])):
        rate = ledger["median_rate"][i]
        rate_txt = f"{rate:11.3f}" if np.isfinite(rate) else f"{'-':>11}"
        lines.append(
            f"{ledger['month'][i].decode():8} {ledger['state'][i].decode():10} {ledger['n_found'][i]:6d} "
            f"{ledger['n_processed'][i]:9d} {ledger['n_failed'][i]:6d} {ledger['n_cr'][i]:10d} {rate_txt}"
            + (f" {ledger['config_hash'][i].decode()}" if several else "")
        )
        if ledger["state"][i] == b"failed" and ledger["error"][i]:
            lines.append(f"{'':8} error: {ledger['error'][i].decode(errors='replace')}")
    states = ledger["state"]
    lines.append(
        f"{plural(len(states), 'month')}: {int(np.sum(states == b'committed'))} committed, "
        f"{int(np.sum(states == b'failed'))} failed"
    )
    lines.append(f"median rate in {next(c.unit for c in TABLES['months'] if c.name == 'median_rate')}")
    stored = read_configurations(path)
    digests, counts = np.unique(ledger["config_hash"], return_counts=True)
    for digest, count in zip(digests.tolist(), counts.tolist()):
        note = "" if digest.decode() in stored else ", its text not stored"
        lines.append(f"configuration {digest.decode()}: {plural(count, 'month')}{note}")
    compacting = compacting_file(path)
    if compacting is not None:
        lines.append(compacting.describe())
    return "\n".join(lines)


@dataclass(frozen=True)
class CompactingFile:
    """A ``<store>.compacting`` file beside a store (:func:`compacting_file`).

    Attributes
    ----------
    path : Path
    size : int
        Bytes.
    leftover : bool or None
        True: no process holds the store's lock, so no compaction writes the file (compactions
        run only under the lock): a compaction was killed, and the file is safe to delete.
        False: a process holds the lock (``holder``), a compaction in progress. None: the lock
        file could not be read.
    holder : str
        What the lock file says of the process that holds it (``pid 4242``).
    """

    path: Path
    size: int
    leftover: bool | None
    holder: str = ""

    def describe(self) -> str:
        """One line for ``hstcosmicrays status``."""
        what = f"{self.path} ({self.size / 1e6:.1f} MB)"
        if self.leftover:
            return (f"{what} is the leftover of a `hstcosmicrays compact` that was interrupted: the store "
                    "does not use it, and it is safe to delete (the next run or compact of this store deletes it)")
        if self.leftover is False:
            return f"{what} is being written by a compaction in progress ({self.holder or 'a process'} holds the lock)"
        return (f"{what} is written by a compaction in progress, or the leftover of one that was interrupted "
                "(safe to delete when no compact of this store runs; the next run or compact deletes it)")


def compacting_file(path: str | os.PathLike) -> CompactingFile | None:
    """The ``<store>.compacting`` file beside the store ``path``, if there is one, and whether it
    is the leftover of an interrupted compaction or one in progress.

    Only a compaction writes the file, and only while it holds the store's lock; a writer that
    gets the lock deletes the file (:meth:`ResultsStore.open`). Whether a process holds the lock
    is seen by taking it, shared and without waiting, for as long as the file's size takes to
    read (a writer that starts then waits for it: :data:`LOCK_WAIT`); nothing is changed.

    Returns
    -------
    CompactingFile or None
        None when there is no such file (then the lock is not touched).
    """
    path = Path(path)
    tmp = _compacting_path(path)
    if not tmp.exists():
        return None
    try:
        fh = open(_lock_path(path), "r")
    except FileNotFoundError:  # no writer ever locked this store here: none is writing it
        fh = None
    except OSError:  # e.g. another user's lock file: who holds it cannot be seen
        return _compacting_size(tmp, leftover=None)
    if fh is None:
        return _compacting_size(tmp, leftover=True)
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _compacting_size(tmp, leftover=False, holder=fh.read().strip())
        except OSError:
            return _compacting_size(tmp, leftover=None)
        try:  # under the lock: no compaction can start, or end by renaming the file
            return _compacting_size(tmp, leftover=True)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compacting_size(tmp: Path, *, leftover: bool | None, holder: str = "") -> CompactingFile | None:
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:  # a compaction completed (renamed it) meanwhile
        return None
    return CompactingFile(path=tmp, size=size, leftover=leftover, holder=holder)


# ----------------------------------------------------------------------------------------------
# writing


def _open_swmr_writer(path: Path) -> h5py.File:
    """Open for writing directly in SWMR mode, so that readers can open the file at any instant.

    (Opening read-write and then switching to SWMR leaves a moment in which SWMR readers are
    refused.) File locking is off: the store's own lock file guarantees a single writer.

    The chunk cache is off: each append writes its chunks at once. With chunks left dirty in
    the cache by a write that failed (a full disk), HDF5 flushes them again when the file is
    closed and crashes the process (a segmentation fault in ``H5D__flush_all_cb``, HDF5 2.0).
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_file_locking(False, True)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    mdc_nelmts, rdcc_nslots, _, rdcc_w0 = fapl.get_cache()
    fapl.set_cache(mdc_nelmts, rdcc_nslots, 0, rdcc_w0)
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
    except OSError as exc:
        if "errno = " in str(exc):  # the system refused (permissions, a read-only file system): not damage
            raise StoreError(f"{path}: cannot open the results store for writing ({_hdf5_reason(exc)})") from None
        raise StoreError(f"{path}: cannot open the results store for writing; it may be damaged ({exc})") from None
    return h5py.File(fid)


def _hdf5_reason(exc: BaseException) -> str:
    """The system's reason in an HDF5 error (``error message = '...'``, e.g. "No space left on
    device"), else the error's text on one line."""
    text = " ".join(str(exc).split())
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return exc.strerror
    return text or type(exc).__name__


@contextmanager
def _write_errors(path: Path, failed: str) -> Iterator[None]:
    """A write of the HDF5 file ``path`` that fails (a full disk, a file size limit, a file
    system that became read-only) as one :class:`StoreError` line: ``"<path>: <failed>
    (<reason>)"``."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as exc:  # what h5py raises for a failed write or close
        raise StoreError(f"{path}: {failed} ({_hdf5_reason(exc)})") from None


@contextmanager
def _writing(path: Path, failed: str) -> Iterator[h5py.File]:
    """:func:`_open_swmr_writer`, closed on exit, a failed write reported as by
    :func:`_write_errors`. What readers see stays as it was: the rows written so far are not in
    the ledger, and the next writer drops them."""
    with _write_errors(path, failed), _open_swmr_writer(path) as f:
        yield f


@contextmanager
def _new_file(path: Path, failed: str) -> Iterator[h5py.File]:
    """A new HDF5 file (``<store>.creating``, ``<store>.compacting``), closed on exit, with the
    chunk cache off for the reason given in :func:`_open_swmr_writer`, a failed write reported
    as by :func:`_write_errors`."""
    with _write_errors(path, failed), h5py.File(path, "w", libver="latest", locking=False, rdcc_nbytes=0) as f:
        yield f


def _create_tables(f: h5py.File, *, attrs: Mapping) -> None:
    """The root attributes and every table of the schema, empty, in a new file."""
    for key, value in attrs.items():
        f.attrs[key] = value
    for table, columns in TABLES.items():
        grp = f.create_group(table)
        chunk = CHUNK_ROWS[table]
        for col in columns:
            ds = grp.create_dataset(
                col.name, shape=(0,), maxshape=(None,), dtype=col.dtype, chunks=(chunk,),
                compression="gzip", compression_opts=4, shuffle=True,
            )
            ds.attrs["unit"] = col.unit
            ds.attrs["description"] = col.description


def _append_configuration(grp: h5py.Group, *, digest: str, text: str) -> None:
    """Append ``text`` (UTF-8) to the ``/configurations`` group ``grp``, in pieces of
    :data:`CONFIG_PART_BYTES`, and flush (after the shortest column, if a kill left them uneven)."""
    raw = text.encode()
    pieces = [raw[i:i + CONFIG_PART_BYTES] for i in range(0, len(raw), CONFIG_PART_BYTES)]
    table = as_table("configurations", {
        "config_hash": [digest] * len(pieces), "part": np.arange(len(pieces)), "text": pieces,
    })
    start = _column_length(grp)
    for col in TABLES["configurations"]:
        ds = grp[col.name]
        ds.resize((start + len(pieces),))
        ds[start:] = table[col.name]
        ds.flush()


def _fsync_replace(tmp: Path, path: Path) -> None:
    """Put the finished file ``tmp`` in the place of ``path`` at once (after it is on disk)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class MonthCommit:
    """What a commit appended: the ledger row as plain values."""

    month: str
    state: str
    rows: dict[str, tuple[int, int]]


class ResultsStore:
    """The single writer of an instrument's store.

    Create it with :meth:`open` (a context manager that holds ``<store>.lock``); the HDF5 file is
    opened only during :meth:`commit_month` and :meth:`record_month_failure`.

    Parameters
    ----------
    path : Path
    instrument : str
        Instrument key written in the file attributes and checked on reopening.
    software_version, config_hash : str
        Recorded per ledger row (and in the attributes at creation).
    configuration : str, optional
        The configuration's text, whose :func:`config_digest` is ``config_hash``. When given,
        the first commit that names ``config_hash`` stores it in ``/configurations`` (before its
        ledger row), so that every digest in the ledger can be resolved to the parameters used.
    source : str, optional
        What the darks of the run are (``"simulated"``, ``"hst"``; ``""`` not known), written in
        the attributes at creation, and again at an opening while the ledger has no month (a
        run that stopped before its first commit); :attr:`stored_source` is what the file says
        (``""`` for a store created before sources were recorded, or by a run that did not
        know). A store with months of the other source is refused (simulated months must
        never be resumed by a real run, nor the reverse).

    Raises
    ------
    ValueError
        ``configuration`` does not have the digest ``config_hash``.
    """

    def __init__(self, path: str | os.PathLike, *, instrument: str, software_version: str, config_hash: str,
                 configuration: str = "", source: str = ""):
        if configuration and config_digest(configuration) != config_hash:
            raise ValueError(f"the configuration text has digest {config_digest(configuration)}, not {config_hash}")
        self.path = Path(path)
        self.instrument = instrument
        self.software_version = software_version
        self.config_hash = config_hash
        self.configuration = configuration
        self.source = source
        self.stored_source = ""
        self._lock_fh = None
        self._config_stored = False

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path, *, instrument: str, software_version: str, config_hash: str,
             configuration: str = "", source: str = "") -> "ResultsStore":
        store = cls(path, instrument=instrument, software_version=software_version, config_hash=config_hash,
                    configuration=configuration, source=source)
        store._acquire_lock()
        try:
            store._delete_interrupted_compaction()
            if store.path.exists():
                store._recover()
            else:
                store._create()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _acquire_lock(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(_lock_path(self.path), "a+")
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:  # e.g. a status that looks at the lock for an instant
                    time.sleep(0.02)
                    continue
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise StoreLockedError(
                    f"{self.path} is being written by {holder}; only one run per instrument and output directory"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def _delete_interrupted_compaction(self) -> None:
        """Delete the ``<store>.compacting`` that a killed compaction left (holding the lock, this
        writer knows that no compaction writes it: they run only under the lock), naming it."""
        tmp = _compacting_path(self.path)
        try:
            size = tmp.stat().st_size
            tmp.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("%s is the leftover of a compaction that was interrupted, safe to delete, but it cannot "
                        "be deleted (%s)", tmp, exc.strerror or exc)
            return
        log.warning("%s: deleted %s (%.1f MB), the leftover of a compaction that was interrupted (the store "
                    "is as it was before it)", self.path, tmp.name, size / 1e6)

    def _create(self) -> None:
        tmp = self.path.with_name(self.path.name + ".creating")
        try:
            with _new_file(tmp, "cannot create the results store") as f:
                _create_tables(f, attrs={
                    "schema_version": SCHEMA_VERSION, "instrument": self.instrument,
                    "software_version": self.software_version, "config_hash": self.config_hash,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "source": self.source,
                })
            _fsync_replace(tmp, self.path)
            self.stored_source = self.source
        finally:
            tmp.unlink(missing_ok=True)
        log.info("created results store %s", self.path)

    def _recover(self) -> None:
        if _repair_superblock(self.path):
            log.warning("%s: the previous writer was interrupted; cleared its open-file flags", self.path)
        # in SWMR-write mode like every commit: a kill during the recovery itself must leave a
        # file that readers can still open (a plain read-write open would refuse them until the
        # next run)
        with _writing(self.path, "cannot drop the rows of the interrupted commit; the committed months "
                                 "are kept") as f:
            found = f.attrs.get("instrument")
            if found != self.instrument:
                raise StoreError(f"{self.path} holds results of {found!r}, not {self.instrument!r}")
            source = f.attrs.get("source", "")
            self.stored_source = source.decode() if isinstance(source, bytes) else str(source)
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}; this software writes {SCHEMA_VERSION}")
            for table in ("months",) + DATA_TABLES:
                if table not in f:
                    raise StoreError(f"{self.path}: table /{table} is missing; not a results store")
            ledger = _read_ledger_arrays(f)
            n_ledger = len(ledger["month"])
            if self.source and self.stored_source != self.source:
                if not n_ledger:
                    # no month in it yet (its run stopped before the first commit): as good as
                    # new, so it takes this run's source rather than refuse it for one it never held
                    f.attrs["source"] = self.source
                    self.stored_source = self.source
                elif self.stored_source:  # e.g. the README's simulated demo, then a real run
                    raise StoreError(
                        f"{self.path} holds months measured on "
                        f"{SOURCES.get(self.stored_source, self.stored_source)}; this run reads "
                        f"{SOURCES.get(self.source, self.source)}: give it another --output (or move the "
                        "store away)")
            dropped = {}
            for table in DATA_TABLES:
                keep = int(ledger[f"{table}_stop"].max()) if n_ledger else 0
                for col in f[table].values():
                    if col.shape[0] > keep:
                        dropped[table] = col.shape[0] - keep
                        col.resize((keep,))
            for col in f["months"].values():
                if col.shape[0] > n_ledger:
                    col.resize((n_ledger,))
            if dropped:
                log.warning("%s: dropped the rows of an interrupted commit %s", self.path, dropped)

    def compact(self, *, progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Rewrite the store with only what readers see, dropping the rows that ``--reprocess``
        and retried months left behind.

        Each month keeps its latest ledger row (as it was: state, counts, times, software
        version, config hash) and the rows of every table that this ledger row owns; earlier
        ledger rows of a month and their rows are dropped. The visible content does not change,
        but file row numbers do (``exposure_index`` is renumbered to match): results opened
        before must be opened again.

        The new file is written beside the store (``<store>.compacting``) and put in its place
        at once when complete, so an interruption leaves the store as it was.

        ``progress``, if given, is called as ``progress(values_done, values_total)`` before the
        copy and after each month's rows of each column are copied (values: the rows kept times
        the columns, summed over the tables but ``months``), e.g. for a progress bar.

        Returns
        -------
        (int, int)
            File size in bytes before and after.
        """
        if self._lock_fh is None:
            raise StoreError("the store is not open for writing (use ResultsStore.open)")
        before = self.path.stat().st_size
        tmp = _compacting_path(self.path)
        try:
            with _reading(self.path) as src, \
                    _new_file(tmp, f"cannot write the compacted copy; {self.path} is left as it was") as dst:
                _create_tables(dst, attrs=dict(src.attrs))
                ledger = _read_ledger_arrays(src)
                keep = _latest_rows(ledger)
                rows = {k: v[keep].copy() for k, v in ledger.items()}
                old_starts = {t: rows[f"{t}_start"].copy() for t in DATA_TABLES}
                for table in DATA_TABLES:
                    sizes = np.maximum(rows[f"{table}_stop"] - old_starts[table], 0)
                    rows[f"{table}_stop"] = np.cumsum(sizes)
                    rows[f"{table}_start"] = rows[f"{table}_stop"] - sizes
                # cosmic_rays and orbit point at file rows of exposures: renumber them
                shift = rows["exposures_start"] - old_starts["exposures"]
                lengths = {t: int(rows[f"{t}_stop"][-1]) if len(keep) else 0 for t in DATA_TABLES}
                values_total = sum(lengths[t] * len(TABLES[t]) for t in DATA_TABLES)
                values_done = 0
                if progress is not None:
                    progress(values_done, values_total)
                for table in DATA_TABLES:
                    spans = zip(old_starts[table].tolist(), rows[f"{table}_start"].tolist(),
                                rows[f"{table}_stop"].tolist(), shift.tolist())
                    spans = [span for span in spans if span[2] > span[1]]
                    for col in TABLES[table]:
                        ds = dst[table][col.name]
                        ds.resize((lengths[table],))
                        for a, at, stop, d in spans:
                            data = src[table][col.name][a:a + stop - at]
                            ds[at:stop] = data + d if col.name == "exposure_index" else data
                            values_done += stop - at
                            if progress is not None:
                                progress(values_done, values_total)
                for col in TABLES["months"]:
                    ds = dst["months"][col.name]
                    ds.resize((len(keep),))
                    ds[:] = rows[col.name]
                texts = _stored_configurations(src)
                for digest in dict.fromkeys(rows["config_hash"].tolist()):
                    if digest in texts:
                        _append_configuration(dst["configurations"], digest=digest.decode(), text=texts[digest])
            _fsync_replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._config_stored = False  # a new file: the next commit checks it again
        after = self.path.stat().st_size
        log.debug("%s: compacted from %d to %s, %.1f MB to %.1f MB", self.path,
                  len(ledger["month"]), plural(len(keep), "ledger row"), before / 1e6, after / 1e6)
        return before, after

    # -- queries ------------------------------------------------------------------------------

    def ledger(self) -> dict[str, np.ndarray]:
        """Latest ledger row of each month (see :func:`read_ledger`)."""
        return read_ledger(self.path)

    def committed_months(self) -> set[str]:
        ledger = self.ledger()
        return {m.decode() for m, s in zip(ledger["month"], ledger["state"]) if s == b"committed"}

    def failed_months(self) -> set[str]:
        """Months with a failed ledger row and none committed (the next run retries them)."""
        ledger = self.ledger()
        states: dict[str, set] = {}
        for m, s in zip(ledger["month"], ledger["state"]):
            states.setdefault(m.decode(), set()).add(s)
        return {m for m, s in states.items() if b"failed" in s and b"committed" not in s}

    # -- commits ------------------------------------------------------------------------------

    def commit_month(
        self, *, month: str, exposures: Mapping, cosmic_rays: Mapping, orbit: Mapping,
        failures: Mapping | None = None, n_found: int, started: float,
    ) -> MonthCommit:
        """Append one month atomically and mark it committed.

        ``cosmic_rays["exposure_index"]`` and ``orbit["exposure_index"]`` are row numbers within
        this month's ``exposures`` (0-based); they are offset to file rows here.
        """
        exposures = as_table("exposures", exposures)
        n_exp = len(exposures["rootname"])
        cosmic_rays = as_table("cosmic_rays", cosmic_rays)
        orbit = as_table("orbit", orbit)
        for name, tab in (("cosmic_rays", cosmic_rays), ("orbit", orbit)):
            idx = tab["exposure_index"]
            if len(idx) and (idx.min() < 0 or idx.max() >= n_exp):
                raise ValueError(f"{name}.exposure_index out of range 0..{n_exp - 1}")
        failures = as_table("failures", failures if failures is not None else empty_table("failures"))
        rates = exposures["rate"]
        summary = dict(
            n_found=n_found, n_processed=n_exp, n_failed=len(failures["rootname"]),
            n_cr=int(exposures["n_cr"].sum()),
            median_rate=float(np.median(rates)) if n_exp else float("nan"),
        )
        return self._append(
            month=month, state="committed", error="", started=started, summary=summary,
            tables={"exposures": exposures, "cosmic_rays": cosmic_rays, "orbit": orbit, "failures": failures},
        )

    def record_month_failure(
        self, *, month: str, error: str, started: float, n_found: int = 0, failures: Mapping | None = None,
    ) -> MonthCommit:
        """Record that a month could not be processed (it stays pending for the next run)."""
        failures = as_table("failures", failures if failures is not None else empty_table("failures"))
        summary = dict(n_found=n_found, n_processed=0, n_failed=len(failures["rootname"]), n_cr=0,
                       median_rate=float("nan"))
        empty = {t: empty_table(t) for t in ("exposures", "cosmic_rays", "orbit")}
        return self._append(month=month, state="failed", error=error, started=started, summary=summary,
                            tables={**empty, "failures": failures})

    def _store_configuration(self, f: h5py.File) -> None:
        """Append the configuration's text to ``/configurations`` unless a complete copy is there."""
        if not self.configuration or self._config_stored:
            return
        if "configurations" not in f:
            log.warning("%s was created before configurations were recorded: the configuration %s is not "
                        "stored (`hstcosmicrays compact` adds the table)", self.path, self.config_hash)
            self._config_stored = True
            return
        if self.config_hash.encode() not in _stored_configurations(f):
            _append_configuration(f["configurations"], digest=self.config_hash, text=self.configuration)
        self._config_stored = True

    def _append(self, *, month, state, error, started, summary, tables) -> MonthCommit:
        if self._lock_fh is None:
            raise StoreError("the store is not open for writing (use ResultsStore.open)")
        rows = {}
        failed = (f"cannot write {month}; the months committed before are kept, and the next run "
                  f"does {month} again")
        with _writing(self.path, failed) as f:
            base_exposures = f["exposures"]["rootname"].shape[0]
            for table in DATA_TABLES:
                data = dict(tables[table])
                if table in ("cosmic_rays", "orbit"):
                    data["exposure_index"] = data["exposure_index"] + base_exposures
                grp = f[table]
                start = grp[TABLES[table][0].name].shape[0]
                n = len(next(iter(data.values())))
                for col in TABLES[table]:
                    ds = grp[col.name]
                    if ds.shape[0] != start:
                        raise StoreError(f"{self.path}: columns of /{table} differ in length")
                    if n:
                        ds.resize((start + n,))
                        ds[start:] = data[col.name]
                    ds.flush()
                rows[table] = (start, start + n)
            self._store_configuration(f)
            ledger_row = {
                "month": month, "state": state, **summary,
                **{f"{t}_start": rows[t][0] for t in DATA_TABLES},
                **{f"{t}_stop": rows[t][1] for t in DATA_TABLES},
                "started": started, "finished": time.time(),
                "software_version": self.software_version, "config_hash": self.config_hash,
                "error": error[:240],
            }
            ledger_row = as_table("months", {k: [v] for k, v in ledger_row.items()})
            grp = f["months"]
            n0 = grp[COMMIT_COLUMN].shape[0]
            # every column but the commit mark first, then the mark
            order = [c for c in TABLES["months"] if c.name != COMMIT_COLUMN] + [
                c for c in TABLES["months"] if c.name == COMMIT_COLUMN
            ]
            for col in order:
                ds = grp[col.name]
                ds.resize((n0 + 1,))
                ds[n0:] = ledger_row[col.name]
                ds.flush()
            f.flush()
        return MonthCommit(month=month, state=state, rows=rows)

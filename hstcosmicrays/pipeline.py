"""The month loop: query -> fetch -> reject -> label -> measure -> commit -> clean.

:class:`CosmicRayPipeline` is the only place that knows the order of the stages. Work is split
into *groups* (a CR-SPLIT stack, or one frame where a frame stands alone); each group is one task
that runs in-process (``workers=1``), on a local dask.distributed cluster of processes, or on an
existing cluster (``scheduler``). Only this driver writes the HDF5 store.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as _dt
import functools
import itertools
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ._text import plural
from ._version import __version__
from .archive.base import Archive, ArchiveError, Dataset, is_local_write_error, make_archive
from .config import Config, InstrumentConfig, results_settings
from .intervals import Month, active_time_label, month_windows, parse_month, span_label, unended_months
from .schema import TABLES, exposure_name
from .store import ResultsStore, read_configurations, store_path

__all__ = ["CosmicRayPipeline", "RunOptions", "RunSummary", "GroupTask", "GroupProgress", "FrameFailure",
           "process_group"]

log = logging.getLogger(__name__)

#: product holding the science data of each kind of detector
SCIENCE_PRODUCT = {"ccd": "FLT", "ir": "IMA", "wfpc2": "C0M"}
#: product holding the orbit keywords
ORBIT_PRODUCTS = ("SPT", "SHM")
#: months in a row whose archive query or download failed after which a run stops (the archive
#: is down or unreachable: every later month would fail too, each after its retries)
ARCHIVE_FAILURES_TO_STOP = 3

#: A stop signal this soon (seconds) after the first is the same request, not a second one:
#: ``timeout`` sends its signal to the run and again to its whole process group, and
#: ``kill -- -PGID`` or a batch scheduler may reach the run twice the same way, microseconds
#: apart. A person who means a second request reads the first's message before pressing again.
SAME_STOP_REQUEST_SECONDS = 0.5


@dataclass(frozen=True)
class RunOptions:
    """How to run (the command-line options of ``run_pipeline``)."""

    start: Month | None = None
    stop: Month | None = None
    archive: str = "mast"
    cloud: bool = False
    workers: int = 0
    scheduler: str | None = None
    reprocess: bool = False
    keep_downloads: bool = False
    darks_per_month: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.start is not None and self.stop is not None and self.stop < self.start:
            raise ValueError(f"--stop {self.stop} is before --start {self.start}")
        if self.darks_per_month is not None and self.darks_per_month < 1:
            raise ValueError(f"--darks-per-month: expected 1 or more, got {self.darks_per_month}")
        if self.workers < 0:
            raise ValueError(f"--workers: expected 0 or more (0 = number of cores), got {self.workers}")


@dataclass(frozen=True)
class FrameFailure:
    """A frame that could not be measured, and why (a row of ``/failures``)."""

    rootname: str
    stage: str
    reason: str


@dataclass(frozen=True)
class GroupTask:
    """One unit of parallel work: the frames of one CR-SPLIT stack (or a lone frame).

    Attributes
    ----------
    group_id : int
        Index of the group within its month.
    month : str
    science : tuple of Path
        Science file (FLT, IMA or C0M) of each frame, in exposure order.
    orbit_files : tuple of (Path or None)
        SPT/SHM file of each frame.
    imsets : tuple of int
        Imset of each frame in its file (``FrameHeader.imset``: 0 for a file that is one
        exposure); empty means 0 for every frame.
    """

    group_id: int
    month: str
    science: tuple[Path, ...]
    orbit_files: tuple[Path | None, ...]
    imsets: tuple[int, ...] = ()

    def imset(self, pos: int) -> int:
        """Imset of frame ``pos`` in its file."""
        return self.imsets[pos] if self.imsets else 0


@dataclass(frozen=True)
class RunSummary:
    """What a run did."""

    committed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


@dataclass(frozen=True)
class GroupProgress:
    """What the task of a group has done so far: :func:`process_group` reports it to its
    ``progress`` callable after each frame read, each block of rows rejected and each frame
    measured (a few dozen times a group), for a progress display and the stage timings.

    Attributes
    ----------
    stage : str
        ``"read"``: ``done`` of the ``total`` frames read and screened; ``"reject"``: ``done`` of
        the ``total`` rows of the stack's chips rejected (counted over the chips, one after the
        other), ``frames`` frames of ``chips`` chips; ``"measure"``: ``done`` of the ``total``
        frames measured or recorded as failures.
    done, total : int
    finished : int
        Frames of the group with their outcome (measured, or a failure) so far.
    frames, chips : int
        ``"reject"`` only: frames in the rejection and chips of each (0 otherwise).
    """

    stage: str
    done: int
    total: int
    finished: int
    frames: int = 0
    chips: int = 0


def _no_progress(progress: GroupProgress) -> None:
    """The ``progress`` of :func:`process_group` when none is given."""


# ----------------------------------------------------------------------------------------------
# the per-group task (runs in a worker process; must stay a picklable top-level function)


def _frame_failure(rootname: str, stage: str, exc: BaseException | str) -> FrameFailure:
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return FrameFailure(rootname=rootname, stage=stage, reason=reason)


def _rootname(path: Path, imset: int = 0) -> str:
    """The frame's name before its header is read: as ``FrameHeader.rootname``."""
    return exposure_name(path.name.split("_")[0].lower(), imset)


def process_group(task: GroupTask, *, instrument: InstrumentConfig,
                  progress: Callable[[GroupProgress], None] | None = None) -> list:
    """Reject, label and measure the frames of one group.

    Parameters
    ----------
    task : GroupTask
    instrument : InstrumentConfig
    progress : callable, optional
        Called with a :class:`GroupProgress` after each frame read, each block of rows rejected
        and each frame measured, in the thread that runs the task.

    Returns
    -------
    list
        One :class:`~hstcosmicrays.measure.FrameResult` or :class:`FrameFailure` per frame.
        Failures are returned, never raised, so that one bad frame never stops a month.
    """
    report = _no_progress if progress is None else progress
    if instrument.kind == "ccd":
        return _process_ccd_group(task, instrument=instrument, report=report)
    if instrument.kind == "ir":
        return _process_ir_group(task, instrument=instrument, report=report)
    if instrument.kind == "wfpc2":
        return _process_wfpc2_group(task, instrument=instrument, report=report)
    raise NotImplementedError(f"{instrument.name}: processing of {instrument.kind} detectors is not available")


def _process_ir_group(task: GroupTask, *, instrument: InstrumentConfig, report: Callable) -> list:
    """IR ramps: each IMA on its own (``ir.read_ramp`` + ``ir.measure_ramp``, method ``ir_ramp``).

    The frames of a task share nothing (a ramp needs no CR-SPLIT partner); they are read one at
    a time so that only one ramp is in memory. ``group_id`` is -1: no CR-SPLIT group.
    """
    from .ir import measure_ramp, read_ramp

    outcomes = []
    n = len(task.science)
    for k, (path, orbit_file) in enumerate(zip(task.science, task.orbit_files)):
        try:
            ramp = read_ramp(path, instrument=instrument)
        except Exception as exc:  # noqa: BLE001 - any unreadable frame is recorded, not fatal
            outcomes.append(_frame_failure(_rootname(path), "read", exc))
            report(GroupProgress("read", k + 1, n, finished=len(outcomes)))
            continue
        report(GroupProgress("read", k + 1, n, finished=len(outcomes)))
        try:
            outcomes.append(measure_ramp(
                ramp=ramp, instrument=instrument, spt_path=orbit_file, month=task.month, group_id=-1,
            ))
        except Exception as exc:  # noqa: BLE001
            outcomes.append(_frame_failure(ramp.header.rootname, "measure", exc))
        del ramp
        report(GroupProgress("measure", len(outcomes), n, finished=len(outcomes)))
    return outcomes


def _process_wfpc2_group(task: GroupTask, *, instrument: InstrumentConfig, report: Callable) -> list:
    """WFPC2 (C0M + C1M): CR-SPLIT rejection when two or more usable frames share the group
    (as for the CCDs, method ``crsplit``), else the robust threshold of
    ``wfpc2.threshold_masks`` on the lone frame (method ``threshold``, ``group_id`` -1).
    """
    from .measure import measure_frame
    from .wfpc2 import threshold_masks

    outcomes: dict[int, object] = {}
    frames = _read_usable_frames(task, instrument=instrument, outcomes=outcomes, report=report)
    if len(frames) >= 2:
        _reject_and_measure(frames, task=task, instrument=instrument, outcomes=outcomes, report=report)
    elif frames:
        pos, header, chips, orbit_file = frames[0]
        try:
            masks = threshold_masks(chips=chips, instrument=instrument)
            report(GroupProgress("reject", 1, 1, finished=len(outcomes), frames=1, chips=len(chips)))
            outcomes[pos] = measure_frame(
                header=header, chips=_with_cr_flags(chips, masks, instrument=instrument),
                instrument=instrument, spt_path=orbit_file, method="threshold", group_id=-1,
                month=task.month,
            )
        except Exception as exc:  # noqa: BLE001
            outcomes[pos] = _frame_failure(header.rootname, "measure", exc)
        report(GroupProgress("measure", len(outcomes), len(task.science), finished=len(outcomes)))
    return [outcomes[pos] for pos in sorted(outcomes)]


def _process_ccd_group(task: GroupTask, *, instrument: InstrumentConfig, report: Callable) -> list:
    """CCDs (FLT): CR-SPLIT rejection of the stack; a lone frame is recorded as unrejectable.

    Memory grows with the stack only by its masks (1 byte a pixel of every frame): each frame
    is read whole only to be screened and, after the rejection, to be measured, one at a time;
    the rejection reads the pixels from the files (``crreject.reject_files``, row blocks for a
    large stack).
    """
    outcomes: dict[int, object] = {}
    frames = _read_usable_frames(task, instrument=instrument, outcomes=outcomes, keep_pixels=False, report=report)
    if len(frames) == 1:
        pos, header, _, _ = frames[0]
        outcomes[pos] = _frame_failure(
            header.rootname, "reject", "single frame: no CR-SPLIT partner to reject cosmic rays against"
        )
        report(GroupProgress("measure", len(outcomes), len(task.science), finished=len(outcomes)))
    elif frames:
        _reject_and_measure(frames, task=task, instrument=instrument, outcomes=outcomes, from_files=True,
                            report=report)
    return [outcomes[pos] for pos in sorted(outcomes)]


def _read_usable_frames(
    task: GroupTask, *, instrument: InstrumentConfig, outcomes: dict, keep_pixels: bool = True,
    report: Callable = _no_progress,
) -> list:
    """Read the frames of a task; unreadable or screened-out frames go to ``outcomes``.

    Returns
    -------
    list of (position, FrameHeader, chips, orbit file)
        ``chips`` as ``frames.read_chips`` gives them, or with ``keep_pixels=False`` their
        :class:`~hstcosmicrays.crreject.ChipInfo` only (the pixels are released).
    """
    frames = []
    n = len(task.science)
    for pos, (path, orbit_file) in enumerate(zip(task.science, task.orbit_files)):
        frames.extend(_read_usable_frame(task, pos, path, orbit_file, instrument=instrument, outcomes=outcomes,
                                         keep_pixels=keep_pixels))
        report(GroupProgress("read", pos + 1, n, finished=len(outcomes)))
    return frames


def _read_usable_frame(task: GroupTask, pos: int, path: Path, orbit_file: Path | None, *,
                       instrument: InstrumentConfig, outcomes: dict, keep_pixels: bool) -> list:
    """Frame ``pos`` of :func:`_read_usable_frames`: ``[(position, header, chips, orbit file)]``,
    or ``[]`` with its failure in ``outcomes``."""
    from . import crreject
    from .frames import read_chips, read_header

    imset = task.imset(pos)
    name = _rootname(path, imset)
    try:
        header = read_header(path, instrument=instrument, imset=imset)
        chips = read_chips(path, instrument=instrument, imset=imset)
    except Exception as exc:  # noqa: BLE001 - any unreadable frame is recorded, not fatal
        outcomes[pos] = _frame_failure(name, "read", exc)
        return []
    reason = crreject.screen_frame(header=header, chips=chips, instrument=instrument)
    if reason:
        outcomes[pos] = _frame_failure(name, "select", reason)
        return []
    if not keep_pixels:
        chips = tuple(crreject.ChipInfo.of(c) for c in chips)
    return [(pos, header, chips, orbit_file)]


def _with_cr_flags(chips, masks, *, instrument: InstrumentConfig) -> tuple:
    """Copies of ``chips`` whose CR bit in DQ is set exactly where ``masks`` is (inputs untouched).

    A CR bit the file already had (the STScI pipeline's CRMASK on the FLT of a CR-SPLIT
    association) is cleared, as the STScI tools clear it where a pixel is not flagged now: the
    stored CRs are those of this pipeline's rejection, whatever the archive's processing.
    """
    from .crreject import clear_bits

    return tuple(
        dataclasses.replace(
            chip, dq=clear_bits(chip.dq, instrument.dq_cr) | (mask.astype(chip.dq.dtype) * instrument.dq_cr))
        for chip, mask in zip(chips, masks)
    )


def _reject_and_measure(frames: list, *, task: GroupTask, instrument: InstrumentConfig, outcomes: dict,
                        from_files: bool = False, report: Callable = _no_progress) -> None:
    """CR-SPLIT rejection of two or more frames, then the measurement of each.

    ``frames`` as :func:`_read_usable_frames` gives them: with their chips in memory
    (``crreject.reject_stack``), or with ``from_files`` their ChipInfo only; then the rejection
    reads the FLT files (``crreject.reject_files``) and each frame is read again, one at a time,
    to be measured.
    """
    from . import crreject

    headers = [f[1] for f in frames]
    n = len(task.science)

    def rows_rejected(done: int, total: int) -> None:
        report(GroupProgress("reject", done, total, finished=len(outcomes), frames=len(frames),
                             chips=len(frames[0][2])))

    try:
        params = crreject.params_for_stack(
            instrument=instrument, n_images=len(frames),
            mean_exptime=float(np.mean([h.exptime for h in headers])),
        )
        if from_files:
            results = crreject.reject_files(
                paths=[task.science[f[0]] for f in frames], headers=headers, info=[f[2] for f in frames],
                # a CCD month is usually one stack, so one task: without threads its rejection
                # would use one core whatever the workers
                params=params, instrument=instrument, threads=crreject.DEFAULT_THREADS,
                ignore_dq=instrument.dq_cr, progress=rows_rejected,
            )
            masks = [[r.masks[k] for r in results] for k in range(len(frames))]
        else:
            masks = crreject.reject_stack(
                frames=[f[2] for f in frames], headers=headers, params=params, instrument=instrument,
                ignore_dq=instrument.dq_cr, progress=rows_rejected,
            )
    except Exception as exc:  # noqa: BLE001
        for pos, header, _, _ in frames:
            outcomes[pos] = _frame_failure(header.rootname, "reject", exc)
        report(GroupProgress("measure", len(outcomes), n, finished=len(outcomes)))
        return
    for frame, frame_masks in zip(frames, masks):
        outcomes[frame[0]] = _measure_rejected(frame, frame_masks, task=task, instrument=instrument,
                                               from_files=from_files)
        report(GroupProgress("measure", len(outcomes), n, finished=len(outcomes)))


def _measure_rejected(frame: tuple, masks: list, *, task: GroupTask, instrument: InstrumentConfig,
                      from_files: bool):
    """The outcome of one frame of :func:`_reject_and_measure` (its chips read again from its
    file ``from_files``), with the CR ``masks`` of its chips."""
    from .frames import read_chips
    from .measure import measure_frame

    pos, header, chips, orbit_file = frame
    if from_files:
        try:
            chips = read_chips(task.science[pos], instrument=instrument, imset=header.imset)
        except Exception as exc:  # noqa: BLE001 - e.g. the file changed on disk since the rejection
            return _frame_failure(header.rootname, "read", exc)
    try:
        return measure_frame(
            header=header, chips=_with_cr_flags(chips, masks, instrument=instrument),
            instrument=instrument, spt_path=orbit_file, method="crsplit", group_id=task.group_id,
            month=task.month,
        )
    except Exception as exc:  # noqa: BLE001
        return _frame_failure(header.rootname, "measure", exc)


# ----------------------------------------------------------------------------------------------
# executors: in-process, local process cluster, or an existing dask.distributed cluster


#: ``progress`` of :meth:`_InProcess.map_unordered` and :meth:`_Dask.map_unordered`: called in
#: the driver, from any thread, with the index of an item and what its task reported
ProgressSink = Callable[[int, GroupProgress], None]


class _InProcess:
    def map_unordered(self, fn: Callable, items: Sequence, stop: threading.Event,
                      progress: ProgressSink | None = None) -> Iterable:
        """``fn(item)`` for each item in turn, or ``fn(item, report)`` with ``progress``, where
        ``report(p)`` calls ``progress(index, p)``; yields ``(index, result)``. Once ``stop`` is
        set no task is started."""
        for i, item in enumerate(items):
            if stop.is_set():
                return
            yield i, fn(item) if progress is None else fn(item, functools.partial(progress, i))

    def close(self) -> None:
        pass


class _Dask:
    def __init__(self, *, workers: int, scheduler: str | None):
        from distributed import Client, LocalCluster

        if scheduler:
            self._cluster = None
            try:
                self.client = Client(scheduler)
            except OSError as exc:
                raise OSError(f"--scheduler {scheduler}: cannot reach the dask scheduler ({exc})") from None
            log.info("using the dask.distributed scheduler at %s", scheduler)
        else:
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            )
            self.client = Client(self._cluster)
            # Ctrl-C in a terminal (SIGINT), timeout and batch schedulers (SIGTERM) signal the whole
            # process group: the workers, restarted ones too, must ignore them, so that the driver
            # can stop after the work in progress instead of losing or redoing it
            from ._workers import IgnoreStopSignals, QuietShutdown

            self.client.register_plugin(IgnoreStopSignals())
            # and nothing they log while they close (or after the driver was killed) reaches the terminal
            self.client.register_plugin(QuietShutdown())
            log.info("started a local dask cluster of %s", plural(workers, "worker process", "worker processes"))
        # what the tasks report as they work (GroupProgress) comes back as events of this topic,
        # each with the token of its map_unordered call and the index of its item
        self._topic = f"hstcosmicrays-progress-{uuid.uuid4().hex}"
        self._calls = itertools.count()
        self._sink: tuple[int, ProgressSink] | None = None
        self.client.subscribe_topic(self._topic, self._progress_event)

    def _progress_event(self, event) -> None:
        """An event of :attr:`_topic` (on the client's event loop thread): to the sink of the
        map_unordered call in progress; late events of an earlier call are dropped."""
        _, (token, index, *fields) = event
        sink = self._sink
        if sink is not None and sink[0] == token:
            sink[1](index, GroupProgress(*fields))

    def map_unordered(self, fn: Callable, items: Sequence, stop: threading.Event,
                      progress: ProgressSink | None = None) -> Iterable:
        """Run ``fn`` on the items, at most one task per worker thread at a time, yielding
        ``(index, result)`` as they finish. Once ``stop`` is set no task is started, and the
        tasks in progress are still awaited and yielded (the in-process executor does the same).
        With ``progress``, ``fn(item, report)`` is run instead: ``report(p)`` sends ``p`` from
        the worker to the driver (``Worker.log_event``), where ``progress(index, p)`` gets it."""
        from distributed import as_completed

        queue = iter(enumerate(items))
        running: dict = {}
        finished = as_completed()
        token = next(self._calls)
        self._sink = None if progress is None else (token, progress)

        def top_up() -> None:
            # as many tasks in flight as the cluster has threads now (workers may join later)
            slots = max(1, sum(self.client.nthreads().values()))
            while len(running) < slots and not stop.is_set():
                nxt = next(queue, None)
                if nxt is None:
                    return
                args = (nxt[1],) if progress is None else (nxt[1], _EventReport(self._topic, token, nxt[0]))
                fut = self.client.submit(fn, *args, pure=False)
                running[fut] = nxt[0]
                finished.add(fut)

        top_up()
        try:
            for fut in finished:
                i = running.pop(fut)
                result = fut.result()
                top_up()
                yield i, result
        finally:
            self._sink = None
            for fut in running:
                fut.cancel()

    def close(self) -> None:
        """The client first, then the local cluster (its workers, then its scheduler), with what
        distributed logs meanwhile kept off the terminal: the cluster has done its work, and the
        race of a worker's heartbeat with its closing connections printed an error with a
        traceback at the end of about one successful run in twelve. A second stop request that
        interrupts the close leaves distributed's (and tornado's) loggers quiet: the run stops at
        once, and what is left of the cluster closes as the process ends, with errors that say
        nothing of use (distributed's ``sync``, interrupted, logs a NameError)."""
        from ._workers import distributed_logs_quieted

        with distributed_logs_quieted():
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()


class _EventReport:
    """``report`` of a task on a dask worker (picklable): each :class:`GroupProgress` goes to
    the driver as an event of ``topic`` with the call's ``token`` and the item's ``index``."""

    def __init__(self, topic: str, token: int, index: int):
        self.topic, self.token, self.index = topic, token, index

    def __call__(self, progress: GroupProgress) -> None:
        from distributed import get_worker

        get_worker().log_event(self.topic, [self.token, self.index, *dataclasses.astuple(progress)])


@dataclass(frozen=True)
class _GroupRun:
    """What a group's task returns: its frames' outcomes (as :func:`process_group`) and where
    its time went.

    Attributes
    ----------
    outcomes : list
    seconds : dict of str to float
        Wall time (s) of each stage of :class:`GroupProgress`: the time up to each report is
        that of the report's stage (``read``: reading and screening the frames; ``reject``: the
        rejection, from the parameters to the last block of rows; ``measure``: reading each
        frame again and measuring it).
    wall : float
        Wall time of the whole task (s).
    frames, chips : int
        Frames rejected together and their chips (0: no rejection, e.g. an IR ramp).
    """

    outcomes: list
    seconds: dict
    wall: float
    frames: int = 0
    chips: int = 0


class _StageClock:
    """The ``progress`` given to :func:`process_group` by :class:`_TaskRunner`: times the stages
    (the time since the previous report goes to the stage of this one), notes the size of the
    rejection, and passes each report on to ``report``."""

    def __init__(self, report: Callable[[GroupProgress], None] | None):
        self._report = report
        self.start = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.frames = self.chips = 0

    def __call__(self, progress: GroupProgress) -> None:
        now = time.perf_counter()
        self.seconds[progress.stage] = self.seconds.get(progress.stage, 0.0) + now - self._last
        self._last = now
        if progress.stage == "reject":
            self.frames, self.chips = progress.frames, progress.chips
        if self._report is not None:
            self._report(progress)


class _TaskRunner:
    """Callable shipped to workers: binds the instrument to :func:`process_group`, and times the
    task's stages (:class:`_GroupRun`): what a dask worker logs does not reach the driver's log,
    what it returns does."""

    def __init__(self, instrument: InstrumentConfig):
        self.instrument = instrument

    def __call__(self, task: GroupTask, report: Callable[[GroupProgress], None] | None = None) -> _GroupRun:
        clock = _StageClock(report)
        outcomes = process_group(task, instrument=self.instrument, progress=clock)
        return _GroupRun(outcomes=outcomes, seconds=clock.seconds, wall=time.perf_counter() - clock.start,
                         frames=clock.frames, chips=clock.chips)


class _MonthProgress:
    """The progress bar of a month's frames (tqdm), moved by what the groups' tasks report: the
    frames finished (measured, or recorded as failures) as they finish, and, after the counts,
    what the groups in progress are doing (``reading 3/8 frames``, ``rejecting 42%`` of the rows
    of the stack's chips, ``measuring``), so that a month whose frames form one stack does not sit
    at 0 % until its single task ends. Reports come from any thread (dask's event loop)."""

    def __init__(self, bar, n_groups: int):
        self._bar = bar
        self._lock = threading.Lock()
        self._finished = [0] * n_groups
        self._latest: dict[int, GroupProgress] = {}
        self._ended: set[int] = set()

    def report(self, index: int, progress: GroupProgress) -> None:
        """What group ``index`` reported (ignored once its task has ended)."""
        with self._lock:
            if index in self._ended:
                return
            self._finished[index] = max(self._finished[index], progress.finished)
            self._latest[index] = progress
            self._draw()

    def ended(self, index: int, n_frames: int) -> None:
        """Group ``index`` has ended with the outcomes of its ``n_frames`` frames."""
        with self._lock:
            self._ended.add(index)
            self._finished[index] = n_frames
            self._latest.pop(index, None)
            self._draw()

    def _draw(self) -> None:
        self._bar.set_postfix_str(self.doing(), refresh=False)
        self._bar.update(sum(self._finished) - self._bar.n)  # draws the bar (at most ~10 times a second)

    def doing(self) -> str:
        """What the groups in progress are doing, e.g. ``rejecting 42%, reading 1/2 frames``, or
        ``rejecting 2 stacks (42% 7%)``."""
        by_stage: dict[str, list[GroupProgress]] = {}
        for _, p in sorted(self._latest.items()):
            by_stage.setdefault(p.stage, []).append(p)
        parts = []
        if "reject" in by_stage:
            shares = [f"{100 * p.done // max(p.total, 1)}%" for p in by_stage["reject"]]
            parts.append(f"rejecting {shares[0]}" if len(shares) == 1
                         else f"rejecting {len(shares)} stacks ({' '.join(shares)})")
        if "read" in by_stage:
            done, total = (sum(getattr(p, k) for p in by_stage["read"]) for k in ("done", "total"))
            parts.append(f"reading {done}/{total} frames")
        if any(p.done < p.total for p in by_stage.get("measure", ())):  # else only returning its results
            parts.append("measuring")
        return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# the driver


@dataclass
class _MonthWork:
    month: Month
    datasets: list[Dataset] = field(default_factory=list)
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    error: str | None = None
    local_error: str | None = None  # the downloads could not be written here (not the archive's fault)
    started: float = 0.0
    n_found: int | None = None  # exposures, once the headers are read (a STIS file may hold several)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage (s), for the debug log

    @property
    def found(self) -> int:
        """Exposures found: those of the headers read, else the archive's datasets."""
        return len(self.datasets) if self.n_found is None else self.n_found


class CosmicRayPipeline:
    """Process an instrument's darks month by month into ``<output_dir>/<instrument>.h5``.

    Parameters
    ----------
    instrument : InstrumentConfig
    config : Config
    output_dir : Path
        Where the store, the logs and the month work directories go.
    options : RunOptions
    archive : Archive, optional
        Overrides ``options.archive`` (e.g. a configured archive object in a notebook).

    Examples
    --------
    >>> from hstcosmicrays import load_config, CosmicRayPipeline
    >>> from hstcosmicrays.pipeline import RunOptions
    >>> from hstcosmicrays.intervals import parse_month
    >>> cfg = load_config()
    >>> run = CosmicRayPipeline(instrument=cfg.instrument("acs_hrc"), config=cfg,
    ...                         output_dir="out", options=RunOptions(archive="simulated",
    ...                         start=parse_month("2003-01"), stop=parse_month("2003-02"), workers=1))
    >>> summary = run.run()  # doctest: +SKIP
    """

    def __init__(
        self, *, instrument: InstrumentConfig, config: Config, output_dir: str | Path,
        options: RunOptions = RunOptions(), archive: Archive | None = None,
    ):
        self.instrument = instrument
        self.config = config
        self.output_dir = Path(output_dir)
        self.options = options
        self._archive = archive
        self._stop = threading.Event()

    # -- paths --------------------------------------------------------------------------------

    @property
    def store_path(self) -> Path:
        return store_path(self.output_dir, self.instrument)

    def workdir(self, month: Month) -> Path:
        return self.output_dir / "work" / self.instrument.name / month.label

    def new_logfile(self) -> Path:
        """Path of a new log file: ``<output>/logs/<instrument>-<UTC time>Z-<process id>.log``,
        the time to the microsecond (``wfc3_uvis-20240105T101502.123456Z-4242.log``). The names
        sort by start time, and runs started in the same second (or microsecond, by two
        processes) get one each: with whole seconds, they wrote into one file."""
        start = _dt.datetime.fromtimestamp(time.time(), tz=_dt.timezone.utc)
        stamp = start.strftime("%Y%m%dT%H%M%S.%fZ")
        return self.output_dir / "logs" / f"{self.instrument.name}-{stamp}-{os.getpid()}.log"

    # -- planning -----------------------------------------------------------------------------

    @property
    def archive(self) -> Archive:
        if self._archive is None:
            spec = self.options.archive
            if self.options.cloud and spec != "mast":
                log.warning("--cloud is used only with --archive mast; ignored with --archive %s", spec)
            if self.options.darks_per_month is not None and spec != "simulated":
                log.warning("--darks-per-month is used only with --archive simulated; ignored with "
                            "--archive %s", spec)
            if spec == "simulated":
                from .archive.simulated import SimulatedArchive

                self._archive = SimulatedArchive(
                    seed=self.config.pipeline.simulation_seed, darks_per_month=self.options.darks_per_month,
                )
            else:
                self._archive = make_archive(spec, settings=self.config.pipeline, cloud=self.options.cloud)
        return self._archive

    def months(self) -> list[Month]:
        """All months of the run's window (before skipping committed ones) that have ended
        ``pipeline.month_settle_days`` ago (UTC)."""
        return month_windows(instrument=self.instrument, start=self.options.start, stop=self.options.stop,
                             settle_days=self.config.pipeline.month_settle_days)

    def unended_months(self) -> list[Month]:
        """Months of the run's window that have not ended ``month_settle_days`` ago (UTC): left
        for a later run."""
        return unended_months(instrument=self.instrument, start=self.options.start, stop=self.options.stop,
                              settle_days=self.config.pipeline.month_settle_days)

    def _log_inactive(self, months: list[Month], unended: list[Month]) -> None:
        """Name the months of the window that the instrument's inactive ranges leave out."""
        if not self.instrument.inactive:
            return
        every = month_windows(instrument=dataclasses.replace(self.instrument, inactive=()),
                              start=self.options.start, stop=self.options.stop, include_unended=True)
        kept = {m.label for m in months} | {m.label for m in unended}
        gone = [i for i, m in enumerate(every) if m.label not in kept]
        if not gone:
            return
        # consecutive months (index in the window minus position in gone is constant) make a span
        runs = [[every[i] for _, i in run] for _, run in itertools.groupby(enumerate(gone), key=lambda ki: ki[1] - ki[0])]
        log.info("%s: %s skipped: the detector did not operate then (%s)", self.instrument.name,
                 ", ".join(span_label(r[0], r[-1]) for r in runs), active_time_label(self.instrument))

    def _log_unended(self, unended: list[Month]) -> None:
        if unended:
            # a month is committed once, so it waits until all its darks can be in the archive
            span = span_label(unended[0], unended[-1])
            settle = self.config.pipeline.month_settle_days
            log.log(logging.INFO if self.options.stop is None else logging.WARNING,
                    "%s: %s not processed: a month is processed once it has ended, %s later (UTC, "
                    "pipeline.month_settle_days), when the archive has all its darks; run again after that",
                    self.instrument.name, span, plural(settle, "day"))

    def _warn_early_commits(self, store: ResultsStore, months: list[Month]) -> None:
        """Name committed months of ``months`` whose processing started before they had settled
        (stores of versions that processed the month in progress): their late darks are missing."""
        settle = _dt.timedelta(days=self.config.pipeline.month_settle_days)
        ledger = store.ledger()
        window = {m.label: m for m in months}
        early = sorted({
            label for label, state, started in (
                (m.decode(), s, t) for m, s, t in zip(ledger["month"], ledger["state"], ledger["started"]))
            if state == b"committed" and label in window and started < _dt.datetime.combine(
                window[label].stop + settle, _dt.time(), tzinfo=_dt.timezone.utc).timestamp()
        })
        if early:
            log.warning("%s: %s committed before the archive could have all their darks; run again with "
                        "--reprocess --start M --stop M for each to add the late ones",
                        self.instrument.name, ", ".join(early))

    def _warn_other_configurations(self, store: ResultsStore, todo: list[Month]) -> None:
        """Name the committed months, not redone by this run, that another configuration made:
        the months this run commits will sit beside them in the store, made with other
        parameters (a ``--config`` added, changed or forgotten between runs). A configuration
        that differs from this run's only in settings that do not change results
        (:data:`~hstcosmicrays.config.RUN_ONLY_SETTINGS`: workers, retries, ...) is not another."""
        if not todo:
            return
        ledger = store.ledger()
        redone = {m.label for m in todo}
        other: dict[str, list[str]] = {}
        for label, state, digest in zip(ledger["month"], ledger["state"], ledger["config_hash"]):
            if state == b"committed" and digest.decode() != self.config.digest and label.decode() not in redone:
                other.setdefault(digest.decode(), []).append(label.decode())
        if other:
            texts = read_configurations(store.path)
            ours = results_settings(self.config.text) if self.config.text else None
            other = {digest: labels for digest, labels in other.items()
                     if ours is None or digest not in texts or results_settings(texts[digest]) != ours}
        if not other:
            return
        made = "; ".join(f"{_month_runs(labels)} with {digest}" for digest, labels in sorted(other.items()))
        log.warning("%s: committed months of the store were made with %s than this run's (%s): %s. The store "
                    "will hold results of %s (hstcosmicrays status --show-config DIGEST prints each); to make "
                    "them alike, run with the same --config, or with --reprocess", self.instrument.name,
                    "another configuration" if len(other) == 1 else "other configurations", self.config.digest,
                    made, "both" if len(other) == 1 else "each")

    def pending_months(self, store: ResultsStore) -> tuple[list[Month], list[Month]]:
        """(months to process, committed months skipped)."""
        months = self.months()
        if self.options.reprocess:
            return months, []
        done = store.committed_months()
        return [m for m in months if m.label not in done], [m for m in months if m.label in done]

    # -- running ------------------------------------------------------------------------------

    def _log_provenance(self) -> None:
        """What produced this run's numbers, at the head of its log: the software version, the
        configuration (its digest is stored with every month, its text once in the store) and the
        CR-rejection parameters."""
        inst = self.instrument
        log.info("hstcosmicrays %s, archive %s; configuration %s (digest %s, stored with each month)",
                 __version__, self.options.archive, self.config.source, self.config.digest)
        if inst.kind in ("ccd", "wfpc2") and inst.crreject_rows:
            log.info("%s: CR-SPLIT parameters chosen for each stack by its size and mean exposure time "
                     "among the %s of instruments.%s.crreject_rows", inst.name, plural(len(inst.crreject_rows), "row"),
                     inst.name)
        elif inst.kind in ("ccd", "wfpc2"):
            log.info("%s: CR-SPLIT parameters %s", inst.name, inst.crreject)
        log.debug("%s: configuration %r", inst.name, inst)

    def run(self) -> RunSummary:
        """Process every pending month; returns what was committed, failed or skipped."""
        committed, failed = [], []
        # build the archive first: a wrong --archive is a usage error, found before the store is touched
        check = getattr(self.archive, "check_instrument", None)
        if callable(check):  # a local directory without any file of the instrument
            check(self.instrument)
        # a pipeline object may run again (a notebook): forget the previous run's stop
        self._stop.clear()
        reset = getattr(self._archive, "reset", None)
        if callable(reset):
            reset()
        months, unended = self.months(), self.unended_months()
        if not months:  # nothing to do: no store is created
            self._log_provenance()
            self._log_unended(unended)
            if not unended:
                start, stop = self.options.start, self.options.stop
                window = (f"of {span_label(start, stop)}" if start and stop
                          else f"up to {stop}" if stop else f"from {start}")
                log.warning("%s: no month %s is in the instrument's active time (%s)",
                            self.instrument.name, window, active_time_label(self.instrument))
            return RunSummary()
        source = getattr(self.archive, "source", "")
        with ResultsStore.open(
            self.store_path, instrument=self.instrument.name, software_version=__version__,
            config_hash=self.config.digest, configuration=self.config.text, source=source,
        ) as store:
            self._log_provenance()
            self._log_inactive(months, unended)
            self._log_unended(unended)
            self._warn_early_commits(store, months)
            todo, skipped = self.pending_months(store)
            self._warn_other_configurations(store, todo)
            if self.options.reprocess:
                plan = f"{plural(len(todo), 'month')} to reprocess (--reprocess)"
            else:
                plan = f"{plural(len(todo), 'month')} to process" + (
                    f", {len(skipped)} already committed" if skipped else "")
            log.info("%s: %s; store %s", self.instrument.name, plan, self.store_path)
            if not todo:
                return RunSummary(skipped=tuple(m.label for m in skipped))
            executor = self._make_executor()
            prefetch = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
            previous_handlers = self._install_stop_handlers()
            months_bar = self._progress(total=len(todo), desc="months", unit="month")
            at_once = False  # a second stop request cut the months, or the closing of the workers, short
            try:
                try:
                    self._run_months(todo, store=store, executor=executor, prefetch=prefetch,
                                     months_bar=months_bar, committed=committed, failed=failed)
                except KeyboardInterrupt:  # the second stop request: at once (see _install_stop_handlers)
                    if not self._stop.is_set():
                        raise
                    at_once = True
            finally:
                try:  # a stop request while the cluster closes must not kill the run: handlers last
                    try:
                        months_bar.close()
                        prefetch.shutdown(wait=True, cancel_futures=True)
                        executor.close()
                    except KeyboardInterrupt:  # a second stop request while the workers close
                        if not self._stop.is_set():
                            raise
                        at_once = True
                        prefetch.shutdown(wait=False, cancel_futures=True)  # no download starts now
                finally:
                    self._restore_stop_handlers(previous_handlers)
        left = len(todo) - len(committed) - len(failed)
        interrupted = self._stop.is_set() and left > 0
        if interrupted:
            log.warning("stopped %s after %s, %s left; run again to resume", "at once" if at_once else "on request",
                        plural(len(committed), "committed month"), plural(left, "month"))
        elif at_once:
            log.warning("the second stop request came while the workers were closing, after the last month: "
                        "no month of the window is left, nothing to resume")
        elif self._stop.is_set():
            log.info("the stop request came after the last month: no month of the window is left")
        log.info("%s: committed %s, %d failed", self.instrument.name, plural(len(committed), "month"), len(failed))
        return RunSummary(
            committed=tuple(committed), failed=tuple(failed),
            skipped=tuple(m.label for m in skipped), interrupted=interrupted,
        )

    def _run_months(self, todo: list[Month], *, store: ResultsStore, executor, prefetch, months_bar,
                    committed: list[str], failed: list[str]) -> None:
        """The month loop of :meth:`run`: each month of ``todo`` in turn, the next one downloaded
        meanwhile; appends the labels of the months committed and failed as it goes (so that a
        second stop request, which raises KeyboardInterrupt at any point, leaves them true)."""
        work = None
        pending = prefetch.submit(self._download, todo[0])
        # months in a row whose query or download failed; a month that failed on an earlier
        # run (tried again in its place in time order) does not count (its problem may be its
        # own, e.g. a product that is never delivered: it must not stop every later run there)
        archive_failures = 0
        retried = store.failed_months()
        for i, month in enumerate(todo):
            work = pending.result()
            # download the next month while this one is processed (one month ahead)
            pending = prefetch.submit(self._download, todo[i + 1]) if i + 1 < len(todo) else None
            if self._stop.is_set():
                break
            if work.local_error is not None:
                log.error("%s %s: cannot write its downloads: %s; stopping here (the month is not "
                          "marked failed); run again once %s can be written", self.instrument.name, month,
                          work.local_error, self.workdir(month).parent)
                failed.append(month.label)
                self._cancel_download()
                break
            ok = self._process_month(work, store=store, executor=executor)
            if ok is None:  # interrupted
                break
            (committed if ok else failed).append(month.label)
            months_bar.update(1)
            if work.error is None:
                archive_failures = 0
            elif month.label not in retried:
                archive_failures += 1
            if archive_failures >= ARCHIVE_FAILURES_TO_STOP and pending is not None:
                log.error("%s: the archive failed for %s in a row (last: %s); stopping "
                          "here rather than failing every month of the window; run again when "
                          "it answers", self.instrument.name, plural(archive_failures, "month"), work.error)
                self._cancel_download()
                break
        if pending is not None and (self._stop.is_set() or archive_failures >= ARCHIVE_FAILURES_TO_STOP
                                    or work.local_error is not None):
            pending.cancel()

    def _make_executor(self):
        workers = self.options.workers or _cpu_count()
        if self.options.scheduler:
            return _Dask(workers=workers, scheduler=self.options.scheduler)
        if workers <= 1:
            return _InProcess()
        return _Dask(workers=workers, scheduler=None)

    def _download(self, month: Month) -> _MonthWork:
        work = _MonthWork(month=month, started=time.time())
        clock = time.perf_counter()
        try:
            work.datasets = list(self.archive.query(self.instrument, month))
            work.seconds["query"] = time.perf_counter() - clock
            clock = time.perf_counter()
            # a STIS dataset may hold several exposures (a CR-SPLIT FLT), counted once its headers are read
            noun = "dataset" if self.instrument.imset_exposures else "dark"
            log.info("%s %s: %s in the archive", self.instrument.name, month, plural(len(work.datasets), noun))
            if not work.datasets and not getattr(self.archive, "complete", True):
                log.warning("%s %s: no dark of the month in %s; it is stored as a month without darks (if you "
                            "add its files later, run again with --reprocess --start %s --stop %s)",
                            self.instrument.name, month, getattr(self.archive, "path", self.options.archive),
                            month, month)
            if work.datasets:
                work.files = self.archive.fetch(work.datasets, self.workdir(month))
            work.seconds["download"] = time.perf_counter() - clock
        except ArchiveError as exc:
            work.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - any archive problem fails the month, not the run
            log.debug("archive failure", exc_info=True)
            local = _local_write_error(exc)
            if local is not None:
                work.local_error = local
            else:
                work.error = f"{type(exc).__name__}: {exc}"
        return work

    def _process_month(self, work: _MonthWork, *, store: ResultsStore, executor) -> bool | None:
        """Process and commit one month. Returns True (committed), False (failed), None (stopped)."""
        month = work.month
        if work.error is not None:
            log.error("%s %s: archive failed: %s (will retry on the next run)", self.instrument.name, month, work.error)
            store.record_month_failure(month=month.label, error=work.error, started=work.started,
                                       n_found=len(work.datasets))
            return False
        failures: list[FrameFailure] = []
        clock = time.perf_counter()
        tasks = self._plan_groups(work, failures)
        work.seconds["headers"] = time.perf_counter() - clock
        results = []
        bar = self._progress(total=sum(len(t.science) for t in tasks), desc=month.label, unit="frame", leave=False)
        shown = _MonthProgress(bar, len(tasks))
        runner = _TaskRunner(self.instrument)
        runs: dict[int, _GroupRun] = {}
        clock = time.perf_counter()
        try:
            for i, run in executor.map_unordered(runner, tasks, self._stop,
                                                 progress=None if bar.disable else shown.report):
                for item in run.outcomes:
                    (failures if isinstance(item, FrameFailure) else results).append(item)
                shown.ended(i, len(run.outcomes))
                runs[i] = run
            if len(runs) < len(tasks):
                return None
        except Exception as exc:  # noqa: BLE001 - e.g. a worker died: the month fails, the run goes on
            log.exception("%s %s: processing failed", self.instrument.name, month)
            store.record_month_failure(month=month.label, error=f"{type(exc).__name__}: {exc}",
                                       started=work.started, n_found=work.found)
            return False
        finally:
            bar.close()
        work.seconds["groups"] = time.perf_counter() - clock
        for item in failures:
            log.warning("%s %s: %s rejected at %s: %s", self.instrument.name, month, item.rootname, item.stage, item.reason)
        for result in results:
            for text in result.warnings:  # e.g. a missing SPT: NaN positions, frame kept
                log.warning("%s %s: %s: %s", self.instrument.name, month, result.exposure["rootname"], text)
        tables = _month_tables(results, failures, month=month.label)
        clock = time.perf_counter()
        if not self.options.keep_downloads:
            # before the commit, as the results are in memory: a run killed between the commit and
            # the deletion would leave the month's downloads for good (no later run processes a
            # committed month); killed before the commit, the next run downloads the month again
            shutil.rmtree(self.workdir(month), ignore_errors=True)
        work.seconds["delete downloads"] = time.perf_counter() - clock
        clock = time.perf_counter()
        store.commit_month(month=month.label, n_found=work.found, started=work.started, **tables)
        work.seconds["commit"] = time.perf_counter() - clock
        self._log_timings(work, tasks, runs)
        n_cr = int(tables["exposures"]["n_cr"].sum()) if len(tables["exposures"]["n_cr"]) else 0
        log.info(
            "%s %s: committed %s, %d failed, %s", self.instrument.name, month,
            plural(len(results), "frame"), len(failures), plural(n_cr, "CR"),
        )
        return True

    def _log_timings(self, work: _MonthWork, tasks: list[GroupTask], runs: dict[int, _GroupRun]) -> None:
        """DEBUG: the rejection time of each stack (its frames and chips, from its task's
        :class:`_GroupRun`: a dask worker's own log lines do not reach this log), then where the
        month's time went, stage by stage (the query and download ran in the background, while
        the month before was processed, but for the first month)."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        name, month = self.instrument.name, work.month
        for i, run in sorted(runs.items()):
            if run.frames >= 2:
                log.debug("%s %s: stack %d: %s of %s rejected in %.2f s (its task %.2f s: read %.2f s, "
                          "measure %.2f s)", name, month, tasks[i].group_id, plural(run.frames, "frame"),
                          plural(run.chips, "chip"), run.seconds.get("reject", 0.0), run.wall,
                          run.seconds.get("read", 0.0), run.seconds.get("measure", 0.0))
        in_tasks = {stage: sum(run.seconds.get(stage, 0.0) for run in runs.values())
                    for stage in ("read", "reject", "measure")}
        log.debug("%s %s: stage times: query %.2f s, download %.2f s, headers %.2f s, "
                  "%s %.2f s (time in the tasks: read %.2f s, reject %.2f s, measure %.2f s), delete downloads "
                  "%.2f s, commit %.2f s", name, month, work.seconds.get("query", 0.0),
                  work.seconds.get("download", 0.0), work.seconds["headers"], plural(len(tasks), "group"),
                  work.seconds["groups"], in_tasks["read"], in_tasks["reject"], in_tasks["measure"],
                  work.seconds["delete downloads"], work.seconds["commit"])

    def _plan_groups(self, work: _MonthWork, failures: list[FrameFailure]) -> list[GroupTask]:
        """Read headers, drop unusable frames (recorded), and group the rest into tasks."""
        from . import crreject
        from .frames import read_headers

        science = SCIENCE_PRODUCT[self.instrument.kind]
        headers, orbit_of = [], {}
        extra = 0  # exposures beyond the first of files that hold several (STIS CR-SPLIT imsets)
        for ds in work.datasets:
            files = work.files.get(ds.obs_id, {})
            path = files.get(science)
            if path is None:
                failures.append(FrameFailure(ds.obs_id, "fetch", f"no {science} file among the products"))
                continue
            try:
                in_file = read_headers(path, instrument=self.instrument)
            except Exception as exc:  # noqa: BLE001
                failures.append(_frame_failure(ds.obs_id, "read", exc))
                continue
            headers.extend(in_file)
            extra += len(in_file) - 1
            orbit_of[path] = next((files[p] for p in ORBIT_PRODUCTS if p in files), None)
        work.n_found = len(work.datasets) + extra
        if self.instrument.kind == "ir":
            # a ramp needs no partner: one task per frame, so that a month's ramps run in parallel
            tasks = []
            for header in headers:
                if header.exptime < self.instrument.min_exptime:
                    failures.append(FrameFailure(
                        header.rootname, "select",
                        f"EXPTIME {header.exptime:g} s below the minimum {self.instrument.min_exptime:g} s"))
                    continue
                tasks.append(GroupTask(group_id=-1, month=work.month.label, science=(header.path,),
                                       orbit_files=(orbit_of[header.path],)))
            return tasks
        stacks, exclusions = crreject.group_stacks(headers=headers, instrument=self.instrument)
        failures.extend(FrameFailure(e.rootname, "select", e.reason) for e in exclusions)
        return [
            GroupTask(
                group_id=stack.group_id, month=work.month.label,
                science=tuple(h.path for h in stack.headers),
                orbit_files=tuple(orbit_of[h.path] for h in stack.headers),
                imsets=tuple(h.imset for h in stack.headers),
            )
            for stack in stacks
        ]

    # -- progress and Ctrl-C --------------------------------------------------------------------

    def _progress(self, **kwargs):
        from tqdm import tqdm

        return tqdm(disable=not self.options.progress, **kwargs)

    def _install_stop_handlers(self) -> dict:
        """Ctrl-C (SIGINT) and SIGTERM (what ``kill`` and batch schedulers send before they
        kill a job) set the stop flag: the run stops after the work in progress. A second one
        stops at once, unless it comes within :data:`SAME_STOP_REQUEST_SECONDS` of the first
        (the same request, delivered twice). Returns the previous handlers, for
        :meth:`_restore_stop_handlers`."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        names = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
        first = []  # time.monotonic() of the first stop request

        def handler(signum, frame):
            if self._stop.is_set():
                if first and time.monotonic() - first[0] < SAME_STOP_REQUEST_SECONDS:
                    return
                raise KeyboardInterrupt
            first.append(time.monotonic())
            self._stop.set()
            self._cancel_download()
            name = names.get(signum, f"signal {signum}")
            log.warning("%s: stopping after the work in progress (%s again to stop at once); "
                        "committed months are kept", name, name)

        return {sig: signal.signal(sig, handler) for sig in names}

    def _cancel_download(self) -> None:
        """Cancel an in-flight download of the next month (archives that can)."""
        cancel = getattr(self._archive, "cancel", None)
        if callable(cancel):
            cancel()

    @staticmethod
    def _restore_stop_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _local_write_error(exc: BaseException) -> str | None:
    """What kept a download from being written on the local disk (a full disk, a read-only or
    unwritable directory), from ``exc`` or the errors it came from; None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            if is_local_write_error(exc):
                return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else " ".join(str(exc).split())
            if "Not enough space on disk" in str(exc):  # astropy's words for a full disk, without an errno
                return f"{' '.join(str(exc).split())[:200]}"
        exc = exc.__cause__ or exc.__context__
    return None


def _month_runs(labels: Iterable[str]) -> str:
    """Month labels as spans of consecutive months: ``2004-01 to 2004-03, 2004-06``."""
    months = sorted({parse_month(label) for label in labels})
    runs: list[list[Month]] = []
    for month in months:
        if runs and runs[-1][-1].next() == month:
            runs[-1].append(month)
        else:
            runs.append([month])
    return ", ".join(span_label(r[0], r[-1]) for r in runs)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _month_tables(results: list, failures: list[FrameFailure], *, month: str) -> dict:
    """Concatenate the frames of a month into store tables, in exposure-start order."""
    results = sorted(results, key=lambda r: (float(r.exposure["expstart"]), str(r.exposure["rootname"])))
    exposures = {c.name: np.array([r.exposure[c.name] for r in results], dtype=c.dtype) for c in TABLES["exposures"]}

    def stacked(table: str, attr: str) -> dict[str, np.ndarray]:
        out = {}
        for c in TABLES[table]:
            if c.name == "exposure_index":
                parts = [np.full(len(next(iter(getattr(r, attr).values()))), i, dtype=np.int64)
                         for i, r in enumerate(results)]
            else:
                parts = [np.asarray(getattr(r, attr)[c.name], dtype=c.dtype) for r in results]
            out[c.name] = np.concatenate(parts) if parts else np.zeros(0, dtype=c.dtype)
        return out

    failures = sorted(failures, key=lambda f: (f.rootname, f.stage))
    return {
        "exposures": exposures,
        "cosmic_rays": stacked("cosmic_rays", "cosmic_rays"),
        "orbit": stacked("orbit", "orbit"),
        "failures": {
            "month": np.array([month] * len(failures), dtype="S7"),
            "rootname": np.array([f.rootname for f in failures], dtype="S16"),
            "stage": np.array([f.stage for f in failures], dtype="S16"),
            "reason": np.array([f.reason.encode("ascii", "replace")[:240] for f in failures], dtype="S240"),
        },
    }

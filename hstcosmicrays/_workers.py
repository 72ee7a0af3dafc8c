"""dask worker plugins of the pipeline (imported only when a dask cluster is used)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import weakref

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

#: what a worker logs, with a traceback, when a heartbeat does not reach its scheduler
HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"


def ignore_stop_signals() -> None:
    """In a worker process: ignore SIGINT and SIGTERM.

    A terminal's Ctrl-C, ``timeout`` and batch schedulers send them to the whole process group;
    the driver handles them and stops after the work in progress. The nanny still stops its
    worker through its own queue, and SIGKILL still ends it.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class IgnoreStopSignals(WorkerPlugin):
    """:func:`ignore_stop_signals` in every worker, including the ones a nanny restarts."""

    name = "hstcosmicrays-ignore-stop-signals"

    def setup(self, worker) -> None:
        ignore_stop_signals()


class _ShutdownNoise(logging.Filter):
    """Drops distributed's records below CRITICAL once ``worker`` is closing, and failed
    heartbeats at any time (see :class:`QuietShutdown`)."""

    def __init__(self, worker):
        super().__init__()
        self._worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if str(record.msg).startswith(HEARTBEAT_FAILURE):
            return False
        worker = self._worker()
        return worker is not None and worker.status not in (Status.closing_gracefully, Status.closing,
                                                            Status.closed)


class QuietShutdown(WorkerPlugin):
    """In every worker of the local cluster: nothing of what distributed logs while the worker
    closes, nor a failed heartbeat, reaches the terminal.

    The scheduler of a local cluster lives in the driver process, so a heartbeat fails only when
    the driver closes the cluster (a heartbeat in flight when the worker closes its connections)
    or has been killed; either way its error and traceback (about 30 lines) say nothing of use,
    and the driver notices lost workers itself. Not for the workers of a ``--scheduler`` cluster,
    which are not the pipeline's own.
    """

    name = "hstcosmicrays-quiet-shutdown"

    def setup(self, worker) -> None:
        noise = _ShutdownNoise(worker)
        for handler in logging.getLogger("distributed").handlers:
            handler.addFilter(noise)


@contextlib.contextmanager
def distributed_logs_quieted():
    """In the driver: distributed's loggers (nannies, scheduler, comms) at CRITICAL only, while
    a local cluster that has done its work is closed; their levels are restored afterwards."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)

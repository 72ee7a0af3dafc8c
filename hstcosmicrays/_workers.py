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


#: the driver's loggers that :func:`distributed_logs_quieted` quiets, with those below them that
#: have a level of their own (distributed's configuration gives ``distributed.client`` and
#: ``tornado.application`` one): distributed's, and tornado's, which logs the errors of callbacks
#: on distributed's event loop
QUIETED_LOGGERS = ("distributed", "tornado")


def _quieted_loggers() -> list[logging.Logger]:
    """:data:`QUIETED_LOGGERS` and every logger below them with a level of its own."""
    below = [name for name, logger in list(logging.Logger.manager.loggerDict.items())
             if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
             and any(name.startswith(top + ".") for top in QUIETED_LOGGERS)]
    return [logging.getLogger(name) for name in (*QUIETED_LOGGERS, *sorted(below))]


@contextlib.contextmanager
def distributed_logs_quieted():
    """In the driver: distributed's loggers (nannies, scheduler, comms) and tornado's at CRITICAL
    only, while a cluster that has done its work is closed; their levels are restored afterwards,
    unless the close is interrupted (KeyboardInterrupt: a second stop request, the run stops at
    once and the rest of the cluster is torn down as the process ends, which only logs noise)."""
    loggers = _quieted_loggers()
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if not interrupted:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)

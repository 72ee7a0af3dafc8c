"""dask worker plugins of the pipeline (imported only when a dask cluster is used)."""

from __future__ import annotations

import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin


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

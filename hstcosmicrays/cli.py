"""Command-line entry points: ``run_pipeline`` and ``hstcosmicrays <subcommand>``.

This is the only module that parses arguments and configures logging. Each subcommand is a thin
layer over a library function, so that everything it does can also be done from Python.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from ._text import plural
from ._version import __version__

log = logging.getLogger("hstcosmicrays")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# logging


class _ProgressConsoleHandler(logging.StreamHandler):
    """The console handler while tqdm progress bars are shown: each line goes through
    ``tqdm.write``, which takes the bars off the terminal, writes the line and draws them again
    below it, so that a log line never lands inside a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as logging.StreamHandler.emit does
            self.handleError(record)


class _LogFileHandler(logging.FileHandler):
    """The debug log file, created by its first line: a run that logs nothing before it ends (one
    refused because another run writes the store, a usage error) leaves no empty file. When it
    cannot be written (a full disk, a file system that became read-only), one line on standard
    error says so and the file is left alone from then on: logging's default printed a traceback
    of some 30 lines for every log line of the run."""

    def __init__(self, filename: Path):
        self._given_up = False
        super().__init__(filename, delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self._given_up:
            return
        try:  # the file is opened by the first line, outside logging's own error handling
            super().emit(record)
        except RecursionError:  # as logging.StreamHandler.emit does
            raise
        except Exception:  # noqa: BLE001
            self.handleError(record)

    @property
    def begun(self) -> bool:
        """True once the file has been created (a line was written to it) and is still written."""
        return self.stream is not None and not self._given_up

    def handleError(self, record: logging.LogRecord) -> None:
        if self._given_up:
            return
        self._given_up = True
        exc = sys.exc_info()[1]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        try:
            sys.stderr.write(f"{Path(sys.argv[0]).name}: cannot write the log file {self.baseFilename} "
                             f"({reason}); the rest of this run's log goes to the terminal only\n")
        except Exception:  # noqa: BLE001 - nowhere left to say it
            pass
        stream, self.stream = self.stream, None
        try:
            if stream is not None:
                stream.close()
        except OSError:  # its buffered lines cannot be written either
            pass


def setup_logging(*, verbosity: int, logfile: Path | None = None, progress: bool = False) -> None:
    """Console handler at WARNING/INFO/DEBUG (``-q``/default/``-v``), plus a DEBUG log file.

    With ``progress`` (tqdm bars are shown on the console) console lines are written through
    tqdm, which keeps them apart from the bars.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger("hstcosmicrays")
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    console = (_ProgressConsoleHandler if progress else logging.StreamHandler)(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        fh = _LogFileHandler(logfile)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        root.addHandler(fh)


def _shows_progress(args: argparse.Namespace) -> bool:
    """Progress bars are drawn on standard error when it is a terminal and ``-q`` is not given."""
    return sys.stderr.isatty() and args.verbosity >= 0


@contextmanager
def _progress_bar(args: argparse.Namespace, *, desc: str, unit: str) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callable for the library's long work (export, compact,
    CR rejection, the morphology plot), drawing a tqdm bar on standard error that is removed
    when the work ends; None when no bar is shown (see :func:`_shows_progress`)."""
    if not _shows_progress(args):
        yield None
        return
    from tqdm import tqdm

    bars = []  # drawn from the first call, which gives the total

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=desc, total=total, unit=unit, unit_scale=True, leave=False, file=sys.stderr,
                             dynamic_ncols=True))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


def _run_log(logfile: Path | None) -> _LogFileHandler | None:
    """The handler of the log file ``logfile`` set up by :func:`setup_logging`, if any."""
    if logfile is None:
        return None
    for handler in logging.getLogger("hstcosmicrays").handlers:
        if isinstance(handler, _LogFileHandler) and handler.baseFilename == os.path.abspath(logfile):
            return handler
    return None


def _run_error(text: str, logfile: Path | None) -> None:
    """The error that ends a ``run_pipeline``: one line on standard error and, when the run's log
    file was begun (it is created by its first line), its last line too, so that the log says
    how the run ended. A run refused before it logged anything leaves no log file."""
    line = f"run_pipeline: error: {text}"
    print(line, file=sys.stderr)
    handler = _run_log(logfile)
    if handler is not None and handler.begun:
        handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None))


def _load_config(path):
    from .config import load_config

    return load_config(path)


def _output_dir(args, config) -> Path:
    """``--output`` or the configured output directory."""
    return Path(args.output or config.pipeline.output_dir)


def _month(text):
    from .intervals import parse_month

    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _crreject_param(name: str):
    """An argparse type: the CR-rejection parameter ``name``, checked as the rejection checks it
    (:func:`hstcosmicrays.crreject.parse_param`), so a bad value is refused with what is expected
    before any file is read."""

    def parse(text):
        from .crreject import CRRejectError, parse_param

        try:
            return parse_param(name, text)
        except CRRejectError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _int_at_least(minimum: int):
    """An argparse type: a whole number of ``minimum`` or more; anything else is a usage error."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {minimum} or more, got {value}")
        return value

    return parse


#: ``--darks-per-month`` and the like: 1 or more.
_positive_int = _int_at_least(1)
#: ``--workers`` (0 = number of cores): 0 or more.
_nonnegative_int = _int_at_least(0)


def _scheduler_address(text: str) -> str:
    """An argparse type: a dask.distributed scheduler address, checked as distributed parses it
    (``distributed.comm.parse_address``, then ``parse_host_port`` for every scheme but
    ``inproc``): ``tcp://HOST:PORT``, or ``HOST:PORT`` (tcp), or another scheme dask knows
    (``tls://``, ``ws://``, ``ucx://``...). Whether a scheduler listens there is seen when the run
    connects."""
    expected = ("expected tcp://HOST:PORT (or another scheme dask.distributed knows, e.g. tls://HOST:PORT), "
                f"got {text!r}")
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(text.strip())
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{expected}: {exc}") from None
    try:
        get_backend(scheme)
    except ValueError:
        from distributed.comm.registry import backends

        known = ", ".join(sorted(backends))
        raise argparse.ArgumentTypeError(f"{expected}: unknown scheme {scheme!r} (dask knows {known})") from None
    except Exception as exc:  # noqa: BLE001 - a known scheme whose package is missing (ucx)
        raise argparse.ArgumentTypeError(f"{expected}: scheme {scheme!r} is not available here "
                                         f"({type(exc).__name__}{f': {exc}' if str(exc) else ''})") from None
    if scheme == "inproc":
        return text.strip()
    try:
        host, port = parse_host_port(location)
    except (TypeError, ValueError):
        after_host = location.rsplit("]", 1)[-1]  # an IPv6 host is written [::1]
        _, colon, port_text = after_host.rpartition(":")
        what = f"port {port_text.strip()!r} is not a number" if colon and port_text.strip() else "no port number"
        raise argparse.ArgumentTypeError(f"{expected}: {what}") from None
    if not host:
        raise argparse.ArgumentTypeError(f"{expected}: no host")
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{expected}: port {port} is not 1 to 65535")
    return text.strip()


def _missing_directories(path: Path) -> list[Path]:
    """The directories from ``path`` up that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` at the latest for a relative path)."""
    missing = _missing_directories(path)
    return missing[0].parent if missing else path


def _why_not_writable(directory: Path) -> tuple[str, Path, str] | None:
    """Why files cannot be written in ``directory``, or None: what failed (``"cannot create the
    directory"`` or ``"cannot write in the directory"``), the directory it failed on (``directory``
    or a missing parent of it) and the system's reason.

    The test is the real thing, not a guess from permission bits (root passes those, yet cannot
    write in ``/proc``): the missing directories are created and a file is created in the last,
    then all of it is removed again, so that a check leaves nothing behind."""
    created = []
    try:
        for d in _missing_directories(directory):
            try:
                d.mkdir()
            except FileExistsError:  # made meanwhile by someone else: theirs to keep
                continue
            except OSError as exc:
                return "cannot create the directory", d, exc.strerror or str(exc)
            created.append(d)
        try:
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".hstcosmicrays-probe-")
        except OSError as exc:
            return "cannot write in the directory", directory, exc.strerror or str(exc)
        os.close(fd)
        os.unlink(probe)
        return None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:  # something was put there meanwhile: leave it
                break


def _check_output_file(path: Path, option: str, *, make_parents: bool = True) -> Path:
    """Refuse, before any work, an output file name that cannot be written: a directory, a name
    under something that is not a directory, or a directory where no file can be created (with
    the system's reason). Missing parent directories are fine (they are created) unless
    ``make_parents`` is False."""
    if path.is_dir():
        raise CLIError(f"{option} {path}: is a directory; expected a file name")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise CLIError(f"{option} {path}: {base} is not a directory")
    if not make_parents and base != path.parent:
        raise CLIError(f"{option} {path}: its directory {path.parent} does not exist")
    problem = _why_not_writable(path.parent)
    if problem is not None:
        what, where, reason = problem
        raise CLIError(f"{option} {path}: {what} {where} ({reason})")
    return path


def _check_input_files(paths) -> None:
    """Refuse, before any work, an input file name that is a directory: ``measure`` and
    ``split-ima`` stopped with exit status 1 (as for a file that cannot be read during the work)
    and ``crreject`` with Python's ``[Errno 21]`` text. A missing file is named by the readers."""
    for path in paths:
        if Path(path).is_dir():
            raise CLIError(f"{path}: is a directory; expected a FITS file")


def _check_output_dir(path: Path, option: str) -> Path:
    """Refuse, before any work, an output directory that exists as something else (or lies under
    a file), or that cannot be created or written in (with the system's reason). A missing
    directory is fine (it is created when needed)."""
    base = _nearest_existing(path)
    if not base.is_dir():
        what = "exists and is not a directory" if base == path else f"{base} is not a directory"
        raise CLIError(f"{option} {path}: {what}")
    problem = _why_not_writable(path)
    if problem is not None:
        what, where, reason = problem
        raise CLIError(f"{option} {path}: {what}{'' if where == path else f' {where}'} ({reason})")
    return path


def _check_parquet_writer(path: Path, option: str) -> None:
    """Refuse, before any work, a Parquet output when pyarrow is missing: it is not among the
    package's requirements (only its test extras), and its ImportError was a traceback."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CLIError(f"{option} {path}: writing Parquet needs pyarrow, which is not installed "
                       "(pip install pyarrow); or write a .csv file") from None


def _output_written(out: Path, exc: OSError) -> OSError:
    """``exc`` about ``out`` or its temporary ``<out>.part``, told about ``out``: the name the
    user gave, not one they never saw."""
    if exc.filename is not None and str(exc.filename) in (str(out), f"{out}.part") and exc.errno is not None:
        return OSError(exc.errno, exc.strerror, str(out))
    return exc


def _os_error_text(exc: OSError) -> str:
    """One line for an OSError: the file(s) it names and the system's reason."""
    if exc.filename is not None and exc.strerror:
        names = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
        return f"{names}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _verbosity(p: argparse.ArgumentParser, *, default=0) -> None:
    """``-v``/``-q`` into ``verbosity``. A subcommand's copy uses ``default=argparse.SUPPRESS`` so
    that, when the flag is given before the subcommand only, the subcommand does not reset it."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                   help="debug messages on the console")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                   help="warnings and errors only")


# ---------------------------------------------------------------------------------------------
# run_pipeline


def _run_pipeline_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline",
        description="Measure the cosmic rays of one HST instrument month by month and store them "
                    "in <output>/<instrument>.h5. Resumes at the first month not yet committed.",
    )
    p.add_argument("--instr", required=True, help="instrument, e.g. wfc3uvis, acs_wfc, stis_ccd, wfpc2")
    p.add_argument("--start", type=_month, help="first month YYYY-MM (default: the instrument's first)")
    p.add_argument("--stop", type=_month, help="last month YYYY-MM, inclusive (default: this month); "
                   "months that did not end pipeline.month_settle_days (7) days ago are left for a later run")
    p.add_argument("--archive", help="mast (default), simulated, or a directory of FITS files")
    p.add_argument("--cloud", action="store_true", help="with --archive mast: fetch from the public HST bucket on AWS")
    p.add_argument("--output", type=Path, help="output directory (default: data_products)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.add_argument("--workers", type=_nonnegative_int,
                   help="processes for the frames of a month (default: number of cores; 1 = in-process, "
                        "0 = number of cores)")
    p.add_argument("--scheduler", type=_scheduler_address,
                   help="address of a dask.distributed scheduler, tcp://HOST:PORT")
    p.add_argument("--reprocess", action="store_true", help="process committed months again")
    p.add_argument("--keep-downloads", action="store_true", help="keep each month's downloaded files")
    p.add_argument("--darks-per-month", type=_positive_int,
                   help="with --archive simulated: darks per month, 1 or more (default: the instrument's)")
    p.add_argument("--version", action="version", version=f"hstcosmicrays {__version__}")
    _verbosity(p)
    return p


def run_pipeline_main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_pipeline``."""
    try:
        return _run_pipeline(argv)
    except KeyboardInterrupt:  # before the run started: reading the arguments, importing, configuring
        print("run_pipeline: interrupted before the run started; nothing was done", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run_pipeline(argv: list[str] | None) -> int:
    """``run_pipeline``, but a Ctrl-C before the run starts raises KeyboardInterrupt."""
    args = _run_pipeline_parser().parse_args(argv)
    from .store import StoreError

    run_started = False
    logfile = None
    try:
        from .config import ConfigError

        try:
            config = _load_config(args.config)
            instrument = config.instrument(args.instr)
        except ConfigError as exc:
            print(f"run_pipeline: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        from .pipeline import CosmicRayPipeline, RunOptions

        settings = config.pipeline
        output = _check_output_dir(_output_dir(args, config), "--output")
        options = RunOptions(
            start=args.start, stop=args.stop,
            archive=args.archive or settings.archive,
            cloud=args.cloud,
            workers=args.workers if args.workers is not None else settings.workers,
            scheduler=args.scheduler,
            reprocess=args.reprocess,
            keep_downloads=args.keep_downloads or settings.keep_downloads,
            darks_per_month=args.darks_per_month,
            progress=_shows_progress(args),
        )
        pipeline = CosmicRayPipeline(instrument=instrument, config=config, output_dir=output, options=options)
        logfile = pipeline.new_logfile()
        setup_logging(verbosity=args.verbosity, logfile=logfile, progress=options.progress)
        run_started = True
        summary = pipeline.run()
    except CLIError as exc:
        _run_error(str(exc), logfile)
        return EXIT_USAGE
    except StoreError as exc:  # another run writes the store, or it is not this instrument's
        _run_error(str(exc), logfile)
        return EXIT_ERROR
    except KeyboardInterrupt:  # in the run, before its stop handlers are in place (they take the next ones)
        if not run_started:
            raise
        log.warning("interrupted: committed months are kept; run the same command again to resume")
        return EXIT_INTERRUPTED
    except ValueError as exc:
        _run_error(str(exc), logfile)
        return EXIT_USAGE
    except OSError as exc:  # last resort: a file that cannot be read or written, in one line
        _run_error(_os_error_text(exc), logfile)
        return EXIT_ERROR
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_ERROR


# ---------------------------------------------------------------------------------------------
# hstcosmicrays <subcommand>


def _store_arguments(p) -> None:
    p.add_argument("--instr", required=True, help="instrument, e.g. wfc3uvis, acs_wfc, stis_ccd, wfpc2")
    p.add_argument("--output", type=Path, help="directory of the stores (default: data_products)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")


def _stores_dir(args, config) -> Path:
    """``--output`` (or the configured output directory) of a command that reads the stores: the
    directory that holds them. A store file given instead (an existing file, or a missing
    ``*.h5``) is refused, naming the directory to give."""
    output = _output_dir(args, config)
    if args.output is not None and (output.is_file() or (output.suffix.lower() == ".h5" and not output.exists())):
        what = "is a file" if output.is_file() else "no such directory"
        raise CLIError(f"--output {output}: {what}; --output names the directory of the stores "
                       f"(<directory>/<instrument>.h5), not a store: try --output {output.parent}")
    return output


def _existing_store(args):
    """(config, instrument, path) of the store that ``--instr`` and ``--output`` name; it must exist."""
    from .store import store_path, stored_instrument

    config = _load_config(args.config)
    instrument = config.instrument(args.instr)
    path = store_path(_stores_dir(args, config), instrument)
    if not path.exists():
        raise CLIError(f"no results store for {instrument.name} at {path}")
    stored_instrument(path, expected=instrument.name)
    return config, instrument, path


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="the month ledger of an instrument's store")
    _store_arguments(p)
    p.add_argument("--show-config", nargs="?", const="", metavar="DIGEST",
                   help="print, as YAML for --config, the configuration that produced the month committed "
                        "last (or the one with this config_hash) instead of the ledger")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args) -> int:
    from .store import format_ledger

    _, instrument, path = _existing_store(args)
    if args.show_config is not None:
        import yaml

        from .results import Results

        try:
            data = Results(path=path, instrument=instrument.name).configuration(args.show_config or None)
        except KeyError as exc:
            raise CLIError(exc.args[0]) from None
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return EXIT_OK
    print(format_ledger(path))
    return EXIT_OK


def _add_compact(sub) -> None:
    p = sub.add_parser("compact", help="drop the rows that --reprocess and retried months left in a store")
    _store_arguments(p)
    p.set_defaults(func=_cmd_compact)


def _cmd_compact(args) -> int:
    from .store import ResultsStore

    config, instrument, path = _existing_store(args)
    with ResultsStore.open(path, instrument=instrument.name, software_version=__version__,
                           config_hash=config.digest) as store, \
            _progress_bar(args, desc="compacting", unit="value") as progress:
        before, after = store.compact(progress=progress)
    print(f"{path}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return EXIT_OK


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated dark archive with a truth table")
    p.add_argument("--instr", required=True, help="instrument, e.g. wfc3uvis, acs_wfc, stis_ccd, wfpc2")
    p.add_argument("--start", type=_month, required=True, help="first month YYYY-MM")
    p.add_argument("--stop", type=_month, required=True,
                   help="last month YYYY-MM, inclusive; months outside the instrument's active time "
                        "and months that have not ended yet (UTC) are left out")
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--darks-per-month", type=_positive_int, help="darks per month, 1 or more (default: the instrument's)")
    p.add_argument("--seed", type=int, help="random seed (default: the configured simulation_seed)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args) -> int:
    from .simulate import write_archive

    _check_output_dir(args.out, "--out")
    config = _load_config(args.config)
    instrument = config.instrument(args.instr)
    seed = args.seed if args.seed is not None else config.pipeline.simulation_seed
    written = write_archive(
        instrument=instrument, start=args.start, stop=args.stop, out=args.out,
        darks_per_month=args.darks_per_month, seed=seed,
    )
    print(f"wrote {plural(len(written), 'dataset')} of {instrument.name} under {args.out}")
    return EXIT_OK


def _add_crreject(sub) -> None:
    p = sub.add_parser("crreject", help="CR-SPLIT rejection of FLT files (ORs DQ 8192 into the inputs)")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="FLT files of one CR-SPLIT set: two or more, or one STIS FLT holding the set as imsets")
    p.add_argument("--crrejtab", type=Path, help="CRREJTAB FITS table to take the parameters from")
    p.add_argument("--crsigmas", type=_crreject_param("crsigmas"),
                   help="rejection thresholds in sigma, positive, one iteration per value, e.g. 6.5,5.5,4.5")
    p.add_argument("--crradius", type=_crreject_param("crradius"),
                   help="radius (pixels, 0 or more) around a hit within which neighbours are tested at the "
                        "lower threshold")
    p.add_argument("--crthresh", type=_crreject_param("crthresh"),
                   help="fraction of the sigma used for the neighbours of a hit (0 or less: every neighbour "
                        "within --crradius is flagged)")
    p.add_argument("--initgues", choices=("med", "min", "median", "minimum"),
                   help="initial guess of the clean image: median or minimum")
    p.add_argument("--skysub", choices=("none", "mode"), help="sky subtracted from each image before comparison")
    p.add_argument("--scalense", type=_crreject_param("scalense"),
                   help="multiplicative noise term, percent of the signal (0 or more)")
    p.add_argument("--badinpdq", type=_crreject_param("badinpdq"),
                   help="DQ bits of the inputs that exclude a pixel from the comparison (0 to 32767)")
    p.add_argument("--output", type=Path, help="write the combined crj image here (a new file, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output when it exists (as imclobber=yes for the STScI tools)")
    p.add_argument("--no-crmask", dest="crmask", action="store_false",
                   help="leave the inputs' DQ untouched (they need not be writable then): the "
                        "combined crj image of --output is then the only result, so --output is needed")
    p.add_argument("--config", type=Path,
                   help="YAML file overriding the default configuration (the parameters when no --crrejtab)")
    p.set_defaults(func=_cmd_crreject)


def _cmd_crreject(args) -> int:
    from .crreject import crreject_files

    _check_input_files(args.inputs)
    if not args.crmask and args.output is None:
        raise CLIError("--no-crmask leaves the inputs' DQ untouched, so --output (the combined crj image) is needed")
    overrides = {
        k: getattr(args, k)
        for k in ("crsigmas", "crradius", "crthresh", "initgues", "skysub", "scalense", "badinpdq")
        if getattr(args, k) is not None
    }
    if "initgues" in overrides:
        overrides["initgues"] = {"med": "median", "min": "minimum"}.get(overrides["initgues"], overrides["initgues"])
    if args.output is not None:  # before the rejection work, as run_pipeline checks its --output
        _check_output_file(args.output, "--output", make_parents=False)
    with _progress_bar(args, desc="rejecting", unit="row") as progress:
        report = crreject_files(
            args.inputs, config=_load_config(args.config), crrejtab=args.crrejtab,
            overrides=overrides, output=args.output, crmask=args.crmask, overwrite=args.overwrite,
            progress=progress,
        )
    print(report)
    return EXIT_OK


def _add_measure(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="per-CR table and frame summary of one file: a CCD/WFPC2 file whose DQ carries CR flags, "
             "or an IR IMA ramp (CRs per read)")
    p.add_argument("file", type=Path,
                   help="FLT file with CR flags in its DQ (hstcosmicrays crreject writes them), WFPC2 C0M "
                        "(its DQ is the C1M beside it), or a WFC3/IR or NICMOS IMA file")
    p.add_argument("--out", type=Path,
                   help="per-CR table, .csv or .parquet; the frame summary (one row, as the store's exposures "
                        "table) goes beside it as <name>_frame.csv or .parquet (default: print the summary only)")
    p.add_argument("--imset", type=_positive_int,
                   help="the exposure to measure in a file that holds several (a STIS CR-SPLIT FLT: 1 to N)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.set_defaults(func=_cmd_measure)


def _cmd_measure(args) -> int:
    from .frames import identify_instrument
    from .measure import measure_file

    _check_input_files([args.file])
    if args.out is not None:
        suffix = args.out.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise CLIError(f"--out: expected a .csv or .parquet file name, got {args.out}")
        summary_path = args.out.with_name(args.out.stem + "_frame" + args.out.suffix)
        if suffix == ".parquet":
            _check_parquet_writer(args.out, "--out")
        _check_output_file(args.out, "--out")
        _check_output_file(summary_path, "--out")
    config = _load_config(args.config)
    instrument = identify_instrument(args.file, config=config)
    if instrument.kind == "ir":  # an IMA ramp: CRs read by read (method ir_ramp)
        from .ir import measure_ima

        if args.imset not in (None, 1):
            raise CLIError(f"--imset {args.imset}: {args.file} is an IR ramp; its imsets are reads, not exposures")
        result = measure_ima(args.file, instrument=instrument)
    else:
        result = measure_file(args.file, config=config, imset=args.imset)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table = result.cosmic_ray_frame()
        frame = result.exposure_frame()
        if suffix == ".csv":
            table.to_csv(args.out, index=False)
            frame.to_csv(summary_path, index=False)
        else:
            from .results import PARQUET_VERSION
            table.to_parquet(args.out, index=False, version=PARQUET_VERSION)
            frame.to_parquet(summary_path, index=False, version=PARQUET_VERSION)
        print(f"wrote {plural(len(table), 'CR')} to {args.out} and the frame summary to {summary_path}")
    print(result.summary_text(warnings=False))  # each warning was logged on standard error: once is enough
    return EXIT_OK


def _add_split_ima(sub) -> None:
    p = sub.add_parser("split-ima", help="write each read of an IR IMA file as its own FITS file")
    p.add_argument("file", type=Path, help="WFC3/IR or NICMOS IMA file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=_cmd_split_ima)


def _cmd_split_ima(args) -> int:
    from .ir import split_ima

    _check_input_files([args.file])
    written = split_ima(args.file, out_dir=_check_output_dir(args.out, "--out"))
    print(f"wrote {plural(len(written), 'read')} to {args.out}")
    return EXIT_OK


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="plots from the stores of one or more instruments")
    p.add_argument("kind", choices=("rate", "map", "morphology"),
                   help="rate: CR rate versus time; map: mean rate along the HST orbit; "
                        "morphology: distributions of the CR properties")
    p.add_argument("--instr", required=True,
                   help="instrument; comma-separated to overlay several (rate and morphology; map takes one)")
    p.add_argument("--output", type=Path, help="directory of the stores (default: data_products)")
    p.add_argument("--out", type=Path, help="image file (.png or .pdf); default <output>/<instrument>_<kind>.png, "
                   "the instruments' names joined by _, e.g. data_products/wfc3_uvis_acs_wfc_rate.png")
    p.add_argument("--solar", type=Path, help="rate plot: CSV of solar activity (date, value columns)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args) -> int:
    from . import plots
    from .results import open_results

    config = _load_config(args.config)
    output = _stores_dir(args, config)
    names = list(dict.fromkeys(config.instrument(n).name for n in args.instr.split(",") if n.strip()))
    if not names:
        raise CLIError(f"--instr {args.instr!r}: expected one or more instruments")
    if args.kind == "map" and len(names) > 1:
        raise CLIError(f"--instr {args.instr}: plot map takes one instrument; rate and morphology overlay several")
    out = args.out or output / f"{'_'.join(names)}_{args.kind}.png"
    if out.suffix.lower() not in (".png", ".pdf"):
        raise CLIError(f"--out: expected a .png or .pdf file name, got {out}")
    _check_output_file(out, "--out")
    if args.solar is not None and not args.solar.is_file():
        raise CLIError(f"--solar {args.solar}: {'is a directory' if args.solar.is_dir() else 'no such file'}")
    results = [open_results(n, output_dir=output) for n in names]
    if args.kind == "rate":
        plots.plot_rate(results, solar_csv=args.solar, out=out)
    elif args.kind == "map":
        plots.plot_rate_map(results[0], out=out)
    else:
        with _progress_bar(args, desc="reading CRs", unit="row") as progress:
            plots.plot_morphology(results, out=out, progress=progress)
    print(f"wrote {out}")
    return EXIT_OK


EXPORT_TABLES = ("exposures", "cosmic_rays", "orbit", "months", "failures")
EXPORT_FORMATS = ("csv", "parquet")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a table of an instrument's store as CSV or Parquet")
    p.add_argument("--instr", required=True, help="instrument, e.g. wfc3uvis, acs_wfc, stis_ccd, wfpc2")
    p.add_argument("--table", required=True, choices=EXPORT_TABLES,
                   help="months is the month ledger (as status shows it), failures the frames that could not be used")
    p.add_argument("--format", choices=EXPORT_FORMATS,
                   help="default: as the --out suffix says (.csv or .parquet); a --format that "
                        "contradicts that suffix is refused")
    p.add_argument("--out", type=Path, required=True, help="file to write, e.g. cosmic_rays.parquet")
    p.add_argument("--output", type=Path, help="directory of the stores (default: data_products)")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.set_defaults(func=_cmd_export)


def _export_format(fmt: str | None, out: Path) -> str:
    """``--format``, or the format the ``--out`` suffix names; a suffix of the other format is a
    contradiction."""
    by_suffix = {f".{f}": f for f in EXPORT_FORMATS}.get(out.suffix.lower())
    if fmt is None:
        if by_suffix is None:
            raise CLIError(f"--out {out}: expected a .csv or .parquet file name, or give --format")
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise CLIError(f"--format {fmt} contradicts --out {out} (a .{by_suffix} file name)")
    return fmt


def _cmd_export(args) -> int:
    from .results import open_results

    _check_output_file(args.out, "--out")  # first: a directory is that, whatever its name says of a format
    fmt = _export_format(args.format, args.out)
    if fmt == "parquet":
        _check_parquet_writer(args.out, "--out")
    config = _load_config(args.config)
    output = _stores_dir(args, config)
    res = open_results(config.instrument(args.instr).name, output_dir=output)
    try:
        with _progress_bar(args, desc=f"exporting {args.table}", unit="row") as progress:
            n = res.export(table=args.table, fmt=fmt, out=args.out, progress=progress)
    except OSError as exc:
        raise _output_written(args.out, exc) from None
    print(f"wrote {plural(n, 'row')} of {args.table} to {args.out}")
    return EXIT_OK


def _add_mast_server(sub) -> None:
    p = sub.add_parser("mast-server", help="serve the simulated archive as a local MAST stand-in (for trying --archive mast offline)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port_number, default=0, help="port to listen on (default: 0, any free port)")
    p.add_argument("--seed", type=int, help="simulation seed (default: the configured one)")
    p.add_argument("--darks-per-month", type=_positive_int, help="darks per month, 1 or more (default: the instrument's)")
    p.add_argument("--config-home", type=Path,
                   help="write DIR/astropy/astroquery.cfg pointing astroquery at this server")
    p.add_argument("--config", type=Path, help="YAML file overriding the default configuration")
    p.set_defaults(func=_cmd_mast_server)


def _port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535 (a larger one was an
    OverflowError traceback from the socket)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number, 0 to 65535, got {value}")
    return value


def _cmd_mast_server(args) -> int:
    from .testing.mast_server import serve_simulated

    if args.config_home is not None:
        _check_output_dir(args.config_home, "--config-home")
    listening = []

    def ready(url):
        listening.append(url)
        print(f"MAST stand-in at {url} (Ctrl-C to stop)", flush=True)

    try:
        serve_simulated(
            config=_load_config(args.config), host=args.host, port=args.port, seed=args.seed,
            darks_per_month=args.darks_per_month, config_home=args.config_home, ready=ready,
        )
    except OSError as exc:  # the socket refused (a port in use, an address not of this host): name them
        if listening or exc.filename is not None:
            raise
        reason = exc.strerror or " ".join(str(exc).split())
        raise CLIError(f"--host {args.host} --port {args.port}: cannot listen there ({reason})") from None
    return EXIT_OK


def _main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hstcosmicrays", description="HST cosmic-ray tools")
    p.add_argument("--version", action="version", version=f"hstcosmicrays {__version__}")
    _verbosity(p)
    common = argparse.ArgumentParser(add_help=False)  # -v/-q also after the subcommand
    _verbosity(common, default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=partial(argparse.ArgumentParser, parents=[common]))
    for add in (_add_status, _add_compact, _add_simulate, _add_crreject, _add_measure, _add_split_ima, _add_plot,
                _add_export, _add_mast_server):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hstcosmicrays``."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command started: reading the arguments, importing
        print("hstcosmicrays: interrupted before the command started; nothing was done", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    """``hstcosmicrays``, but a Ctrl-C before the command starts raises KeyboardInterrupt."""
    args = _main_parser().parse_args(argv)
    setup_logging(verbosity=args.verbosity, progress=_shows_progress(args))
    from .config import ConfigError
    from .store import StoreError

    try:
        return args.func(args)
    except (CLIError, ConfigError, ValueError) as exc:
        print(f"hstcosmicrays {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:  # a file or directory the user named is not there
        print(f"hstcosmicrays {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"hstcosmicrays {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # last resort: a file that cannot be read or written, in one line
        print(f"hstcosmicrays {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"hstcosmicrays {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Logging to the rotating file logs/automail.log in the data folder (and stderr on request)."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from types import TracebackType

from automail.paths import log_dir

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MAX_BYTES = 1_000_000
BACKUP_COUNT = 5
log = logging.getLogger("automail")


def setup_logging(
    home: Path,
    verbose: bool = False,
    to_stderr: bool = False,
    *,
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
) -> Path | None:
    """Send AutoMail's log to ``logs/automail.log`` (1 MB × 5 files); returns the file path.

    The app and any CLI command (`automail run`, `status` …) write to the same file at once. The
    standard RotatingFileHandler cannot share it: on Windows a file another process holds open
    cannot be renamed, so past 1 MB every line is lost with "--- Logging error ---"; elsewhere each
    process rotates on its own and overwrites the other's lines. ConcurrentRotatingFileHandler
    takes a lock file around each write and rotation, and on Windows keeps the log closed between writes.

    A log that cannot be written is not a reason to refuse work: AutoMail then says so
    once on stderr, logs nowhere, and returns None.
    """
    folder = log_dir(home)
    file = folder / "automail.log"
    path: Path | None = file
    root = logging.getLogger()
    stop_logging()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(file, "a", encoding="utf-8"):
            pass  # the handler opens the file only when it writes: find out now that it cannot
        file_handler = _LogFile(file, max_bytes, backup_count)
    except OSError as exc:
        _warn_unwritable(file, exc)
        path = None
    else:
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler._automail = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)
    # A windowed (frozen) app has no stderr at all.
    if to_stderr and sys.stderr is not None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        stream._automail = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiosmtpd's own logger is chatty about every connection of the demo server.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    install_excepthooks()
    return path


def _warn_unwritable(path: Path, exc: OSError) -> None:
    if sys.stderr is not None:  # a windowed (frozen) app has none
        print(f"automail: warning: cannot write the log {path}: {exc.strerror}", file=sys.stderr)


class _LogFile(logging.Handler):
    """The shared log file; its ConcurrentRotatingFileHandler is made for the first record written.

    Commands that log nothing (`enqueue`, `merge` of a large mailing run as many processes) then
    do not import it and its lock libraries, about 40 ms of every start (issue 12).
    """

    def __init__(self, path: Path, max_bytes: int, backup_count: int) -> None:
        super().__init__()
        self._path, self._max_bytes, self._backup_count = path, max_bytes, backup_count
        self._file: logging.Handler | None = None
        self._broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None and not self._broken:  # emit runs under this handler's lock
            try:
                from concurrent_log_handler import ConcurrentRotatingFileHandler

                self._file = ConcurrentRotatingFileHandler(
                    str(self._path), maxBytes=self._max_bytes, backupCount=self._backup_count, encoding="utf-8"
                )
            except OSError as exc:
                self._broken = True
                _warn_unwritable(self._path, exc)
                return
            self._file.setFormatter(self.formatter)
        if self._file is not None:
            self._file.handle(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def stop_logging() -> None:
    """Close AutoMail's log handlers (before the log folder is deleted, or to set them up again)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_automail", False):
            root.removeHandler(handler)
            handler.close()


def install_excepthooks() -> None:
    """Uncaught errors of the main thread and of other threads go to the log as well (idempotent).

    Python prints them to sys.stderr only, which a windowed (frozen) build does not have: there
    they would vanish. The previous hooks still run where a stderr exists.
    """
    if getattr(sys.excepthook, "_automail", False):
        return
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def sys_hook(exc: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(exc, KeyboardInterrupt):
            log.critical("uncaught error", exc_info=(exc, value, tb))
        if sys.stderr is not None:
            previous_sys(exc, value, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, SystemExit):
            name = args.thread.name if args.thread is not None else "?"
            log.error("uncaught error in thread %s", name, exc_info=args.exc_value)
        if sys.stderr is not None:
            previous_thread(args)

    sys_hook._automail = True  # type: ignore[attr-defined]
    sys.excepthook = sys_hook
    threading.excepthook = thread_hook

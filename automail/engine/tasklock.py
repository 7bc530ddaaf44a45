"""One engine per task per machine: a file lock per task that names its holder."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from automail.errors import DataFolderError, TaskLockedError

if TYPE_CHECKING:
    from filelock import FileLock


def _unwritable(path: Path, exc: OSError) -> DataFolderError:
    return DataFolderError(f"cannot write the lock file {path}: {exc.strerror}", fix="make the data folder writable")


class TaskLock:
    """An exclusive, crash-safe (OS-released) lock on running one task."""

    def __init__(self, lock_dir: Path, task_name: str) -> None:
        digest = hashlib.sha1(task_name.lower().encode()).hexdigest()[:16]
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(lock_dir, exc) from exc
        self.task_name = task_name
        # filelock is imported here, not at the top: it pulls in asyncio, ~50 ms of every CLI start.
        from filelock import FileLock

        self._lock: FileLock = FileLock(str(lock_dir / f"task-{digest}.lock"), timeout=0, thread_local=False)
        self._owner = lock_dir / f"task-{digest}.owner"

    def acquire(self) -> None:
        """Take the lock or raise TaskLockedError naming the process that holds it."""
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise TaskLockedError(
                f"task {self.task_name!r} is already being run by {self.holder()}",
                fix="stop that AutoMail first, or let it do the sending",
            ) from None
        except OSError as exc:
            raise _unwritable(Path(self._lock.lock_file), exc) from exc
        try:
            self._owner.write_text(
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "cmd": " ".join(sys.argv[:3])}),
                encoding="utf-8",
            )
        except OSError as exc:
            self._lock.release()
            raise _unwritable(self._owner, exc) from exc

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def is_held_elsewhere(self) -> bool:
        """Whether some process (possibly this one) runs the task right now."""
        if self._lock.is_locked:
            return True
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            return True
        except OSError as exc:
            raise _unwritable(Path(self._lock.lock_file), exc) from exc
        self._lock.release()
        return False

    def holder(self) -> str:
        """A readable description of the holding process."""
        try:
            info = json.loads(self._owner.read_text(encoding="utf-8"))
            return f"process {info['pid']} ({info.get('cmd') or 'automail'}) on {info.get('host', '?')}"
        except (OSError, ValueError, KeyError):
            return "another AutoMail process"

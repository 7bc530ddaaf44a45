"""Companies and tasks in one TinyDB file, written atomically under a cross-process lock."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from automail.errors import DefinitionsError, InputError, NotFoundError
from automail.models import Company, Task
from automail.paths import check_outbox_location, outbox_dir, replace_file, safe_filename

_Named = TypeVar("_Named", Company, Task)


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written file (TinyDB#467).

    Writes go to a temp file in the same folder, are fsynced and then
    ``os.replace``d over the original.  A file that cannot be parsed raises
    DefinitionsError and is never overwritten.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8-sig")  # Notepad saves UTF-8 with a BOM
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DefinitionsError(
                f"cannot read {self.path}: {exc.strerror}",
                fix="check the file's permissions",
            ) from exc
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DefinitionsError(
                f"{self.path} is damaged and cannot be read ({exc})",
                fix="restore it from a backup or move it away; AutoMail will not overwrite it",
            ) from exc
        if not isinstance(data, dict):
            raise DefinitionsError(
                f"{self.path} does not hold AutoMail definitions",
                fix="restore it from a backup or move it away",
            )
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".automail-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            replace_file(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass


class Definitions:
    """The definitions store: companies and tasks in ``automail.json``.

    Every read re-reads the file; every change is a read-modify-write under a
    file lock, so the tray app and the CLI can edit at the same time.
    """

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home
        self._lock = FileLock(str(path) + ".lock", timeout=30)
        self._thread_lock = threading.RLock()
        self._db = TinyDB(path, storage=AtomicJSONStorage)
        self.check_readable()

    def check_readable(self) -> None:
        """Raise DefinitionsError now if the file is damaged."""
        self._db.storage.read()

    def mtime(self) -> float:
        """Modification time (ns resolution) of the file, 0 if missing: cheap change detection."""
        try:
            return os.stat(self.path).st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            try:
                with self._lock:
                    yield
            except Timeout as exc:
                raise DefinitionsError(
                    f"{self.path} is locked by another AutoMail process for more than 30 s",
                    fix="close other AutoMail windows or commands and try again",
                ) from exc

    # ---- companies -------------------------------------------------------------
    def companies(self) -> list[Company]:
        """All companies, sorted by name."""
        docs = self._db.table("companies").all()
        return sorted((Company.from_doc(d) for d in docs), key=lambda c: c.name.lower())

    def company(self, name: str) -> Company:
        """The company of that name (case-insensitive) or NotFoundError."""
        return _named(self.companies(), "company", name, fix="add it with `automail company add NAME`")

    def add_company(self, name: str, outbox_path: str | None = None) -> Company:
        """Create a company with its outbox path (default: data folder/outbox/NAME.sqlite3)."""
        name = name.strip()
        if not name or "\n" in name or "\r" in name:
            raise InputError("company", "the name is empty or has a line break", fix="give a one-line name")
        path = outbox_path or self.default_outbox_path(name)
        check_outbox_location(path)  # not on a network drive or in OneDrive (SQLite WAL)
        with self._locked():
            table = self._db.table("companies")
            for doc in table.all():
                if doc["name"].lower() == name.lower():
                    raise InputError("company", f"{name!r} exists already", fix="choose another name")
                if Path(doc["outbox_path"]) == Path(path):
                    raise InputError(
                        "outbox",
                        f"{path} is already the outbox of {doc['name']!r}",
                        fix="choose another location",
                    )
            company = Company(name=name, outbox_path=path)
            _insert(table, company.to_doc())
        return company

    def default_outbox_path(self, name: str) -> str:
        """Where a company's outbox goes unless told otherwise: data folder/outbox/NAME.sqlite3."""
        return str(outbox_dir(self.home) / f"{safe_filename(name.strip())}.sqlite3")

    def remove_company(self, name: str) -> Company:
        """Remove a company that no task uses; its outbox file is kept."""
        with self._locked():
            company = self.company(name)
            users = [t.name for t in self.tasks() if t.company.lower() == company.name.lower()]
            if users:
                raise InputError(
                    "company",
                    f"{company.name!r} is used by task(s) {', '.join(users)}",
                    fix="remove those tasks first",
                )
            self._db.table("companies").remove(Query().name == company.name)
        return company

    # ---- tasks -----------------------------------------------------------------
    def tasks(self) -> list[Task]:
        """All tasks, sorted by name."""
        docs = self._db.table("tasks").all()
        return sorted((Task.from_doc(d) for d in docs), key=lambda t: t.name.lower())

    def task(self, name: str) -> Task:
        """The task of that name (case-insensitive) or NotFoundError."""
        return _named(self.tasks(), "task", name, fix="see `automail task list`")

    def add_task(self, task: Task) -> Task:
        """Validate and store a new task."""
        task = task.validate()
        with self._locked():
            company = self.company(task.company)
            task = _with_company(task, company.name)
            if any(t.name.lower() == task.name.lower() for t in self.tasks()):
                raise InputError("task", f"a task named {task.name!r} exists already", fix="choose another name")
            _insert(self._db.table("tasks"), task.to_doc())
        return task

    def update_task(self, name: str, change: Callable[[Task], Task]) -> Task:
        """Read-modify-write one task under the lock; ``change`` gets the current version."""
        with self._locked():
            current = self.task(name)
            updated = change(current).validate()
            company = self.company(updated.company)
            updated = _with_company(updated, company.name)
            if updated.name.lower() != current.name.lower() and any(
                t.name.lower() == updated.name.lower() for t in self.tasks()
            ):
                raise InputError(
                    "task",
                    f"a task named {updated.name!r} exists already",
                    fix="choose another name",
                )
            self._db.table("tasks").update(_replace_doc(updated.to_doc()), Query().name == current.name)
        return updated

    def remove_task(self, name: str) -> Task:
        """Delete a task definition."""
        with self._locked():
            task = self.task(name)
            self._db.table("tasks").remove(Query().name == task.name)
        return task

    def local_tasks(self, computer: str, user: str) -> list[Task]:
        """Tasks that run on this computer (and for this OS user, where they name one)."""
        return [t for t in self.tasks() if t.runs_here(computer, user)]

    def set_all_enabled(self, enabled: bool, computer: str, user: str) -> list[Task]:
        """Start or stop every task that runs on this computer for this user."""
        with self._locked():
            return [
                self.update_task(task.name, lambda t: _toggle(t, enabled)) for task in self.local_tasks(computer, user)
            ]


def _named(items: Sequence[_Named], kind: str, name: str, fix: str) -> _Named:
    """The item called ``name`` (case-insensitive), or NotFoundError listing the known names."""
    key = name.strip().lower()
    for item in items:
        if item.name.lower() == key:
            return item
    known = ", ".join(item.name for item in items) or "none yet"
    raise NotFoundError(kind, f"no {kind} named {name!r} (known: {known})", fix=fix)


def _insert(table: Table, doc: dict[str, Any]) -> int:
    """Insert with the next free ID of the file as it is now (call under the file lock).

    TinyDB caches a table's next ID after an insert; once another process has inserted, that
    cached ID is taken and ``Table.insert`` raises "Document with ID N already exists".
    """
    next_id = max((d.doc_id for d in table.all()), default=0) + 1
    return table.insert(Document(doc, doc_id=next_id))


def _toggle(task: Task, enabled: bool) -> Task:
    return replace(task, enabled=enabled, start_seq=task.start_seq + (1 if enabled else 0))


def _with_company(task: Task, company_name: str) -> Task:
    return replace(task, company=company_name)


def _replace_doc(new: dict[str, Any]) -> Callable[[MutableMapping[Any, Any]], None]:
    def transform(doc: MutableMapping[Any, Any]) -> None:
        doc.clear()
        doc.update(new)

    return transform

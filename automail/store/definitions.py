"""Companies and tasks in one TinyDB file, written atomically under a cross-process lock."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from automail.errors import DefinitionsError, InputError, NotFoundError
from automail.models import Company, Task, check_name, name_key
from automail.paths import check_outbox_location, outbox_dir, replace_file, safe_filename

if TYPE_CHECKING:
    from filelock import FileLock

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
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DefinitionsError(
                f"cannot read {self.path}: {exc.strerror}",
                fix="check the file's permissions (and that it is a file)",
            ) from exc
        if not blob.strip():
            return None
        try:
            data = json.loads(blob.decode("utf-8-sig"))  # Notepad saves UTF-8 with a BOM
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise DefinitionsError(
                f"{self.path} is damaged and cannot be read ({exc})",
                fix="restore it from a backup or move it away; AutoMail will not overwrite it",
            ) from exc
        _check_layout(self.path, data)
        return cast(dict[str, dict[str, Any]], data)

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


def _check_layout(path: Path, data: object) -> None:
    """TinyDB's layout: {table: {document id: {field: value}}}; anything else is not ours."""
    problem = ""
    if not isinstance(data, dict):
        problem = "its top level is not an object"
    else:
        for table, docs in data.items():
            if not isinstance(docs, dict):
                problem = f"{table!r} is not a table of entries"
            elif not all(isinstance(doc, dict) and str(key).isdigit() for key, doc in docs.items()):
                problem = f"{table!r} holds something other than numbered entries"
            if problem:
                break
    if problem:
        raise DefinitionsError(
            f"{path} does not hold AutoMail definitions ({problem})",
            fix="restore it from a backup or move it away; AutoMail will not overwrite it",
        )


class Definitions:
    """The definitions store: companies and tasks in ``automail.json``.

    Every read re-reads the file; every change is a read-modify-write under a
    file lock, so the tray app and the CLI can edit at the same time.
    """

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home
        self._file_lock: FileLock | None = None  # made on the first change: see _locked
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
            # filelock is imported on the first change, not at the top: it pulls in asyncio, ~50 ms
            # of every start of commands that only read the definitions (`enqueue`, `merge`).
            from filelock import FileLock, Timeout

            if self._file_lock is None:
                self._file_lock = FileLock(str(self.path) + ".lock", timeout=30)
            lock = self._file_lock
            try:
                lock.acquire()
            except Timeout as exc:
                raise DefinitionsError(
                    f"{self.path} is locked by another AutoMail process for more than 30 s",
                    fix="close other AutoMail windows or commands and try again",
                ) from exc
            except OSError as exc:
                raise DefinitionsError(
                    f"cannot create the lock file {lock.lock_file}: {exc.strerror}",
                    fix="make the data folder and its files writable for this user",
                ) from exc
            try:
                yield
            finally:
                lock.release()

    # ---- companies -------------------------------------------------------------
    def companies(self) -> list[Company]:
        """All companies, sorted by name."""
        docs = self._db.table("companies").all()
        return sorted(_decode(self.path, "company", Company.from_doc, docs), key=lambda c: c.name.lower())

    def company(self, name: str) -> Company:
        """The company of that name (case-insensitive) or NotFoundError."""
        return _named(self.companies(), "company", name, fix="add it with `automail company add NAME`")

    def add_company(self, name: str, outbox_path: str | None = None) -> Company:
        """Create a company with its outbox path (default: data folder/outbox/NAME.sqlite3).

        Names are NFC-normalised and compared case-insensitively; the outbox path is stored
        absolute, and compared case-insensitively (as Windows and macOS file systems do).
        """
        name = check_name("company", name)
        given = Path(outbox_path).expanduser().absolute() if outbox_path else None
        if given is not None and given.is_dir():
            raise InputError("outbox", f"{given} is a folder", fix="give a file path, e.g. firma.sqlite3")
        check_outbox_location(given or self.default_outbox_path(name))  # not on a network drive or in OneDrive
        with self._locked():
            companies = self.companies()
            if any(name_key(c.name) == name_key(name) for c in companies):
                raise InputError("company", f"{name!r} exists already", fix="choose another name")
            taken = {name_key(c.outbox_path): c.name for c in companies}
            if given is not None and name_key(str(given)) in taken:
                raise InputError(
                    "outbox",
                    f"{given} is already the outbox of {taken[name_key(str(given))]!r}",
                    fix="choose another location",
                )
            path = given or self.default_outbox_path(name)
            company = Company(name=name, outbox_path=str(path))
            _insert(self._db.table("companies"), company.to_doc())
        return company

    def default_outbox_path(self, name: str) -> Path:
        """Where a company's outbox goes unless told otherwise: data folder/outbox/NAME.sqlite3,
        NAME-2 … when another company's outbox has that file name (compared without regard to case)."""
        taken = {name_key(c.outbox_path) for c in self.companies()}
        return _free_path(outbox_dir(self.home).absolute(), safe_filename(name), taken)

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
        return sorted(_decode(self.path, "task", Task.from_doc, docs), key=lambda t: t.name.lower())

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


def _free_path(folder: Path, stem: str, taken: Collection[str]) -> Path:
    """folder/stem.sqlite3, or stem-2, stem-3 … when another company's outbox has that name."""
    path, n = folder / f"{stem}.sqlite3", 1
    while name_key(str(path)) in taken:
        n += 1
        path = folder / f"{stem}-{n}.sqlite3"
    return path


def _decode(path: Path, kind: str, from_doc: Callable[[Document], _Named], docs: list[Document]) -> list[_Named]:
    """Documents as models; a damaged entry is an error naming it (never a traceback, never overwritten)."""
    result = []
    for doc in docs:
        try:
            result.append(from_doc(doc))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DefinitionsError(
                f"{path}: {kind} entry {doc.doc_id} ({doc.get('name', 'without a name')!r}) is damaged: {problem}",
                fix="correct or remove that entry in the file, or restore it from a backup",
            ) from exc
    return result


def _named(items: Sequence[_Named], kind: str, name: str, fix: str) -> _Named:
    """The item called ``name`` (case-insensitive), or NotFoundError listing the known names."""
    key = name_key(name)
    for item in items:
        if name_key(item.name) == key:
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

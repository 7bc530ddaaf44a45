"""Renaming a task: its definition, keyring entry, outbox records and lock move together, or not at all.

The definitions file is the commit point. Before it is written, a journal names the rename; after a
crash, ``recover`` finishes it (the definitions have the new name) or undoes it (they still have the old
one), so the old name keeps working until the rename is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from automail import secrets
from automail.errors import InputError, NotFoundError, TaskLockedError
from automail.models import Task
from automail.store.definitions import Definitions
from automail.store.outbox import Outbox

from .tasklock import TaskLock

log = logging.getLogger(__name__)


def _journal(lock_dir: Path, old: str) -> Path:
    return lock_dir / f"rename-{hashlib.sha1(old.lower().encode()).hexdigest()[:16]}.json"


def rename_task(
    definitions: Definitions,
    outbox_of: Callable[[str], Outbox],
    lock_for: Callable[[str], TaskLock],
    lock_dir: Path,
    old: str,
    new: str,
) -> Task:
    """Rename task ``old`` to ``new``; refused while either name is being run by an engine."""
    current = definitions.task(old)
    renamed = replace(current, name=new).validate()
    new = renamed.name
    if any(t.name.lower() == new.lower() and t.name != current.name for t in definitions.tasks()):
        raise InputError("name", f"a task named {new!r} exists already", fix="choose another name")
    locks = [lock_for(current.name)] + ([lock_for(new)] if new.lower() != current.name.lower() else [])
    held: list[TaskLock] = []
    try:
        for lock in locks:
            try:
                lock.acquire()
            except TaskLockedError as exc:
                raise InputError(
                    "name",
                    f"task {current.name!r} cannot be renamed while it is sending ({exc})",
                    fix="stop the task, wait until it shows Stopped, then rename it",
                ) from None
            held.append(lock)
        journal = _journal(lock_dir, current.name)
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps({"old": current.name, "new": new}), encoding="utf-8")
        try:
            password = secrets.get_password(current.name)
            if password is not None:
                secrets.set_password(new, password)  # a copy: the old entry goes only after the commit
            outbox_of(current.company).rename_task(current.name, new)
            task = definitions.update_task(current.name, lambda t: replace(t, name=new))  # the commit point
        except BaseException:
            _undo(definitions, outbox_of, current.company, current.name, new)
            journal.unlink(missing_ok=True)
            raise
        _finish(current.name, new)
        journal.unlink(missing_ok=True)
        return task
    finally:
        for lock in held:
            lock.release()


def _finish(old: str, new: str) -> None:
    if old != new:
        secrets.delete_password(old)


def _undo(definitions: Definitions, outbox_of: Callable[[str], Outbox], company: str, old: str, new: str) -> None:
    outbox_of(company).rename_task(new, old)
    if old.lower() != new.lower() and secrets.get_password(old) is not None:
        secrets.delete_password(new)


def recover(definitions: Definitions, outbox_of: Callable[[str], Outbox], lock_dir: Path) -> None:
    """Finish or undo renames a crash interrupted (see the module doc)."""
    for journal in sorted(lock_dir.glob("rename-*.json")) if lock_dir.is_dir() else []:
        try:
            names = json.loads(journal.read_text(encoding="utf-8"))
            old, new = str(names["old"]), str(names["new"])
            try:
                task = definitions.task(new)
                done = task.name == new
            except NotFoundError:
                task, done = definitions.task(old), False
            if done:
                outbox_of(task.company).rename_task(old, new)
                _finish(old, new)
                log.warning("finished renaming task %r to %r after an interruption", old, new)
            else:
                _undo(definitions, outbox_of, task.company, old, new)
                log.warning("undid the interrupted renaming of task %r to %r", old, new)
            journal.unlink()
        except Exception:
            log.exception("cannot recover the interrupted rename in %s", journal)

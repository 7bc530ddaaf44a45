"""The pickup folder: other programs drop finished .eml files in, a running engine queues them.

Each company has ``<data>/pickup/<company>/``. A writer writes under a temporary name and renames
the file to ``*.eml`` when it is complete (a rename within one folder is atomic), so every ``*.eml``
found is whole. Each file passes the same gate as ``automail enqueue`` (the ``prepare`` callback:
``Service.preparer``). Good files are queued in one transaction per batch together with a receipt
of each file (name, size, modification time, content hash); only after the commit are the files
removed. After a crash (kill -9) between the commit and the removal, the receipt says the file is
queued already, and it is removed instead of being queued twice. Files that fail the gate move to
``rejected/`` with a ``NAME.error.txt`` saying why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from automail.errors import AutomailError
from automail.paths import safe_filename
from automail.store.outbox import NewMessage, Outbox

log = logging.getLogger(__name__)

BATCH = 200  # files per transaction
REJECTED = "rejected"
RECEIPT_KEEP_S = 30 * 24 * 3600

Prepare = Callable[[str, bytes], NewMessage]  # (source name, MIME bytes) → a message, or InputError


def pickup_dir(home: Path, company: str) -> Path:
    """The pickup folder of a company in the data folder ``home``."""
    return home / "pickup" / safe_filename(company)


@dataclass
class PickupReport:
    """What one pass over a pickup folder did."""

    queued: int = 0
    rejected: int = 0
    duplicates: int = 0  # files queued before a crash, removed now


def identity(path: Path, raw: bytes, stat: os.stat_result) -> str:
    """What makes a dropped file the same file again after a crash."""
    return f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{hashlib.sha256(raw).hexdigest()}"


def eml_files_in(folder: str | Path) -> list[str]:
    """The paths of the ``*.eml`` files directly in ``folder``, by name; none when it does not exist."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    # Sorted by name as Path objects sort (case-insensitively on Windows), without comparing 30,000 Paths.
    found = [e for e in entries if e.name.lower().endswith(".eml") and e.is_file()]
    return [e.path for e in sorted(found, key=lambda e: os.path.normcase(e.name))]


def dropped_files(folder: Path) -> list[Path]:
    """The complete files waiting in a pickup folder, by name."""
    return [Path(p) for p in eml_files_in(folder)]


def _reject(path: Path, reason: str) -> None:
    """Move a file that failed the gate to rejected/, with NAME.error.txt beside it."""
    target_dir = path.parent / REJECTED
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        n += 1
        target = target_dir / f"{path.stem}-{n}{path.suffix}"
    # The reason first: a crash between the two leaves the file in the folder, rejected again later.
    (target_dir / f"{target.name}.error.txt").write_text(reason + "\n", encoding="utf-8")
    os.replace(path, target)
    log.warning("pickup: %s rejected: %s", path, reason)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def ingest(folder: Path, outbox: Outbox, prepare: Prepare, now: Callable[[], float]) -> PickupReport:
    """Queue every complete ``*.eml`` in ``folder`` (batch by batch); remove each file once it is queued."""
    report = PickupReport()
    folder.mkdir(parents=True, exist_ok=True)
    files = dropped_files(folder)
    for start in range(0, len(files), BATCH):
        _ingest_batch(files[start : start + BATCH], outbox, prepare, now, report)
    if files:
        outbox.prune_receipts(now() - RECEIPT_KEEP_S)
    return report


def _ingest_batch(
    files: list[Path], outbox: Outbox, prepare: Prepare, now: Callable[[], float], report: PickupReport
) -> None:
    read: list[tuple[Path, bytes, str]] = []
    for path in files:
        try:
            stat = path.stat()
            raw = path.read_bytes()
        except OSError as exc:  # gone meanwhile, or still held open by its writer (Windows): next pass
            log.debug("pickup: %s skipped for now: %s", path, exc)
            continue
        read.append((path, raw, identity(path, raw, stat)))
    known = outbox.known_receipts([ident for _p, _r, ident in read])
    good: list[tuple[Path, NewMessage, str]] = []
    for path, raw, ident in read:
        if ident in known:
            _remove(path)  # queued before a crash, not removed then
            report.duplicates += 1
            continue
        try:
            good.append((path, prepare(path.name, raw), ident))
        except AutomailError as exc:
            _reject(path, str(exc))
            report.rejected += 1
    if not good:
        return
    outbox.enqueue([m for _p, m, _i in good], now(), receipts=[i for _p, _m, i in good])
    for path, _m, _i in good:
        _remove(path)
    report.queued += len(good)

"""AutoMail's public Python API: queue messages or run a mail merge, all or nothing, with the CLI's checks.

Example (see the README)::

    from email.message import EmailMessage
    import automail.api as automail

    msg = EmailMessage()
    msg["To"] = "Ján Novák <jan.novak@example.sk>"
    msg["Subject"] = "Faktúra 2026/0042"
    msg.set_content("Dobrý deň, v prílohe posielame faktúru.")
    ids = automail.queue("Firma s.r.o.", [msg], tag="invoices")

    plan = automail.plan_merge("Firma s.r.o.", data="customers.csv", template="reminder.txt")
    if plan.ok:
        automail.queue_merge(plan)

Every function takes ``home=`` (the data folder; default ``$AUTOMAIL_HOME`` or the user's data
folder).  Errors are ``automail.errors.AutomailError`` subclasses: ``InputError`` for bad input
(nothing was queued), others when the outbox cannot be used.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.policy import SMTP
from pathlib import Path

from automail.engine.service import Service
from automail.errors import InputError
from automail.intake.merge import MergeOptions, MergeResult, Problem, Template, load_template, render
from automail.intake.sources import Row, Table, read_table
from automail.message import max_message_bytes, prepare_raw
from automail.store.outbox import NewMessage

__all__ = [
    "MergePlan",
    "Problem",
    "plan_merge",
    "queue",
    "queue_merge",
    "write_rejects",
]


def _service(home: Path | str | None, service: Service | None) -> Service:
    if service is not None:
        return service
    return Service(Path(home) if home is not None else None)


def queue(
    company: str,
    messages: Iterable[EmailMessage | Message | bytes],
    *,
    tag: str = "",
    home: Path | str | None = None,
    service: Service | None = None,
) -> list[int]:
    """Check every message, then queue them all in one transaction (or none); return their ids.

    A message without From gets the sending task's sender at send time; Message-ID and Date are
    added when missing.  Bcc recipients are delivered and the Bcc header removed, as for `enqueue`.
    """
    svc = _service(home, service)
    items: list[tuple[str, bytes]] = []
    for i, msg in enumerate(messages, 1):
        raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=SMTP)
        items.append((f"message {i}", raw))
    if not items:
        raise InputError("messages", "nothing to queue", fix="give at least one message")
    return svc.enqueue_raw(company, items, tag=tag)


@dataclass
class MergePlan:
    """A rendered, checked mailing that has not been queued yet."""

    company: str
    name: str
    table: Table
    result: MergeResult
    sources: tuple[str, ...]
    data: Path
    tag: str = ""
    not_before: float | None = None
    service: Service | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when every row became a message."""
        return self.result.ok

    @property
    def messages(self) -> list[NewMessage]:
        return self.result.messages

    @property
    def problems(self) -> list[Problem]:
        return self.result.problems


def parse_time(text: str, field_name: str = "not-before") -> float:
    """``2026-12-01 08:00`` (local time) or ISO 8601 with an offset → epoch seconds."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(field_name, f"{text!r} is not a date and time", fix='write it as "2026-12-01 08:00"') from None
    return when.timestamp() if when.tzinfo else time.mktime(when.timetuple()) + when.microsecond / 1e6


def plan_merge(
    company: str,
    *,
    data: Path | str,
    template: Path | str | None = None,
    html: Path | str | None = None,
    subject: str | None = None,
    to_column: str = "email",
    name_column: str | None = None,
    attach_column: str | None = None,
    attach: Sequence[Path | str] = (),
    tag: str = "",
    name: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
    not_before: str | float | None = None,
    list_unsubscribe: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    home: Path | str | None = None,
    service: Service | None = None,
) -> MergePlan:
    """Read the data and the templates, render and check every row; queue nothing.

    Raises ``InputError`` for a problem with the whole mailing (an unreadable file, a missing
    column, a template syntax error); problems of single rows are in ``plan.problems``.
    """
    svc = _service(home, service)
    svc.definitions.company(company)  # a clear error for an unknown company, before any work
    data_path = Path(data)
    table = read_table(data_path, encoding=encoding, sheet=sheet)
    tpl: Template = load_template(
        Path(template) if template is not None else None, Path(html) if html is not None else None, subject
    )
    options = MergeOptions(
        to_column=to_column,
        name_column=name_column,
        attach_column=attach_column,
        attachments=tuple(Path(a) for a in attach),
        tag=tag,
        list_unsubscribe=list_unsubscribe,
        default_sender=svc.sender_for(company, tag),
        max_bytes=max_message_bytes(),
    )
    result = render(table, tpl, options, data_dir=data_path.parent, now=svc.clock.now, progress=progress, limit=limit)
    sources = tuple(str(Path(p).resolve()) for p in (data_path, template, html, *attach) if p is not None)
    when = parse_time(not_before) if isinstance(not_before, str) else not_before
    mailing = (name or f"{(Path(template or html or data_path)).stem} {dt.date.today():%Y-%m-%d}").strip()
    return MergePlan(company, mailing, table, result, sources, data_path, tag, when, svc)


def queue_merge(plan: MergePlan, *, skip_invalid: bool = False) -> list[int]:
    """Queue a planned mailing in one transaction; refuse (queue nothing) if any row had a problem,
    unless ``skip_invalid`` (then only the good rows are queued: write the rejects with ``write_rejects``)."""
    if plan.problems and not skip_invalid:
        raise InputError(
            "data",
            f"{len(plan.problems)} problem(s) in {plan.data.name}; nothing was queued",
            fix="correct the rows listed, or queue the good rows only with skip_invalid (--skip-invalid)",
        )
    if not plan.messages:
        raise InputError("data", f"{plan.data.name} gives no message to queue", fix="check the data file")
    svc = plan.service or _service(None, None)
    return svc.enqueue(plan.company, plan.messages, mailing=plan.name, sources=plan.sources, not_before=plan.not_before)


def write_rejects(plan: MergePlan) -> Path | None:
    """Write the refused rows, with the reasons, to ``<data>.rejected.csv`` beside the data file."""
    import csv

    if not plan.problems:
        return None
    by_row: dict[int, list[str]] = {}
    rows: dict[int, Row | None] = {}
    for p in plan.problems:
        key = p.row.number if p.row is not None else 0
        by_row.setdefault(key, []).append(f"{p.column}: {p.reason}" if p.column else p.reason)
        rows[key] = p.row
    out = plan.data.with_name(plan.data.stem + ".rejected.csv")
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["row", *plan.table.columns, "problem"])
        for key in sorted(by_row):
            row = rows[key]
            values = [row.values.get(c, "") for c in plan.table.columns] if row is not None else []
            writer.writerow([row.where if row else "", *values, "; ".join(by_row[key])])
    return out


def prepared(raw: bytes, source: str = "message", tag: str = "") -> NewMessage:
    """One message checked exactly as `automail enqueue` checks it (for callers that queue themselves)."""
    return prepare_raw(raw, source, tag, max_message_bytes())

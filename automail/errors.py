"""The AutoMail error hierarchy: one base class, each error carries its context and a fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class AutomailError(Exception):
    """Base of every error AutoMail raises on purpose.

    ``str(err)`` is a complete sentence for a person: what went wrong, where, and
    (when known) how to fix it.  ``exit_code`` is what the CLI returns for it.
    """

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} — {fix}" if fix else message)


class InputError(AutomailError):
    """Bad input from the user or a calling program; nothing was stored."""

    exit_code = 2

    def __init__(self, field: str, problem: str, *, fix: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}", fix=fix)


class NotFoundError(InputError):
    """A named company, task or message does not exist."""


class DataFolderError(AutomailError):
    """The data folder (or a file in it: log, lock) cannot be created or written."""


class DefinitionsError(AutomailError):
    """automail.json cannot be read or written."""


class OutboxExistsError(InputError):
    """A new company's outbox file exists already: reuse it (with its messages) or start empty."""

    def __init__(self, company: str, path: Path, messages: int, pending: int) -> None:
        super().__init__(
            "outbox",
            f"an outbox for {company!r} exists already at {path} ({messages:,} messages, {pending:,} still to send)",
            fix="reuse it with its messages, or start empty (the old file is kept, renamed with today's date)",
        )
        self.path = path
        self.messages = messages
        self.pending = pending


class SecretStoreError(AutomailError):
    """The OS keyring is missing or refused an operation."""


class OutboxError(AutomailError):
    """A company's outbox database cannot be used."""


class TaskLockedError(AutomailError):
    """Another process on this machine already runs the task."""


class FaultKind(StrEnum):
    """How an SMTP problem affects messages and the task."""

    TRANSIENT = "transient"  # 4xx, timeout, dropped connection: retry the message later
    PERMANENT = "permanent"  # 5xx for this message: fail it, go on with the next
    TASK_FATAL = "task_fatal"  # login/TLS/sender rejected: stop the task until settings change
    TASK_RETRY = "task_retry"  # server unreachable: task waits with backoff, messages stay queued


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and its text (continuation lines joined by spaces)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SmtpError(AutomailError):
    """An SMTP problem, wrapped at the aiosmtplib boundary and classified.

    ``refused`` is set when the server refused every recipient (each with its reply);
    ``outcome_unknown`` when the connection failed after the final dot of DATA, so the
    server may have accepted the message.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: FaultKind,
        code: int | None = None,
        fix: str | None = None,
        refused: dict[str, Reply] | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.kind = kind
        self.code = code
        self.refused = refused
        self.outcome_unknown = outcome_unknown
        super().__init__(message, fix=fix)

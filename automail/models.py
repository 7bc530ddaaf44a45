"""Frozen dataclasses and enums shared by the store, the engine, the CLI and the UI."""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import re
import socket
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from automail import headerparse
from automail.clock import iso
from automail.errors import FaultKind, InputError

RATE_MIN = 100
RATE_MAX = 3000
DEFAULT_RATE = 1000
DEFAULT_RETRY_DELAYS: tuple[int, ...] = (60, 300, 900, 3600, 14400)
DEFAULT_MAX_AGE_S = 3 * 24 * 3600
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024


class Security(StrEnum):
    """How the SMTP connection is protected."""

    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"

    @property
    def default_port(self) -> int:
        return {Security.STARTTLS: 587, Security.TLS: 465, Security.NONE: 25}[self]


class MessageStatus(StrEnum):
    """The outbox state machine: queued → sending → sent | deferred | failed | cancelled."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RecipientStatus(StrEnum):
    """Where one recipient of a message stands: queued → sent | deferred | unknown | failed."""

    QUEUED = "queued"  # not tried yet (or queued again by hand)
    SENT = "sent"  # the server accepted the message for this recipient
    DEFERRED = "deferred"  # refused with 4xx: tried again on the message's retry schedule
    UNKNOWN = "unknown"  # no answer to the final dot: it may have been delivered; tried again
    FAILED = "failed"  # refused with 5xx, or given up: never tried again unless retried by hand

    @property
    def pending(self) -> bool:
        """Whether the next attempt of the message goes to this recipient."""
        return self in (RecipientStatus.QUEUED, RecipientStatus.DEFERRED, RecipientStatus.UNKNOWN)


@dataclass(frozen=True)
class RecipientState:
    """One recipient's state and the server's last answer about it."""

    status: RecipientStatus = RecipientStatus.QUEUED
    reply: str = ""


class TaskState(StrEnum):
    """What a task is doing, as persisted for `automail status` and the UI."""

    STOPPED = "stopped"
    CONNECTING = "connecting"  # started, not yet logged in to its SMTP server
    RUNNING = "running"
    WAITING = "waiting"
    ERROR = "error"


# Local part: no specials, spaces or control characters (quoted local parts are not accepted).
_LOCAL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Characters no header value, name or tag may hold: C0/C1 controls (but TAB), line and paragraph separators.
_FORBIDDEN_TEXT_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Address-parser defects that only flag obsolete but valid syntax (RFC 5322 4) or a UTF-8 local part (RFC 6532).
_HARMLESS_DEFECTS = frozenset({"ObsoleteHeaderDefect", "NonASCIILocalPartDefect"})
MAX_NAME_CHARS = 100


def check_no_newline(field_name: str, value: str) -> str:
    """Refuse CR/LF in a header value: it would let one value inject more headers."""
    if "\r" in value or "\n" in value:
        raise InputError(field_name, "contains a line break (CR/LF)", fix="put the value on one line")
    return value


def check_text(field_name: str, value: str) -> str:
    """Refuse line breaks, NUL, other control characters and U+2028/U+2029 in a one-line value."""
    check_no_newline(field_name, value)
    bad = _FORBIDDEN_TEXT_RE.search(value)
    if bad:
        raise InputError(
            field_name,
            f"contains the control character U+{ord(bad.group()):04X} at position {bad.start() + 1}",
            fix="remove control characters and line separators from the value",
        )
    return value


def _bad_address(field_name: str, addr: str, why: str = "") -> InputError:
    return InputError(
        field_name,
        f"{addr!r} is not a valid e-mail address{f' ({why})' if why else ''}",
        fix="write it as name@example.com",
    )


def _ascii_domain(field_name: str, addr: str, domain: str) -> str:
    """The domain in ASCII: an internationalised (IDN) domain becomes its punycode (xn--) form."""
    if not domain.isascii():
        import idna  # only for internationalised domains: not on every start of the CLI

        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InputError(
                field_name,
                f"{addr!r} has a domain that is not a valid internationalised (IDN) domain name ({exc})",
                fix="check the spelling of the part after the @",
            ) from None
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise _bad_address(field_name, addr, "the part after the @ is not a domain name")
    return domain


def check_address(field_name: str, value: str) -> str:
    """Validate a bare address ``local@domain``; return it stripped, an IDN domain in punycode.

    A non-ASCII local part is kept as UTF-8: such a message needs a server offering SMTPUTF8.
    """
    check_text(field_name, value)
    addr = value.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise _bad_address(field_name, addr)
    if not _LOCAL_RE.match(local) or ".." in local or local.startswith(".") or local.endswith("."):
        raise _bad_address(field_name, addr, 'the part before the @ has a space or a character like <>(),;:" ')
    if "=?" in local:
        raise _bad_address(field_name, addr, "an RFC 2047 encoded-word cannot stand in an address")
    if len(local.encode("utf-8")) > 64:
        raise _bad_address(field_name, addr, "the part before the @ is longer than 64 bytes")
    return f"{local}@{_ascii_domain(field_name, addr, domain)}"


# Values that passed parse_mailboxes, with their result (which depends on the value alone): every
# message of a mailing or a batch of .eml files repeats its From header.  Refusals are not kept.
_CHECKED: dict[str, tuple[tuple[str, str], ...]] = {}


def parse_mailboxes(field_name: str, value: str) -> list[tuple[str, str]]:
    """Parse an address-list header value into (display name, checked address) pairs.

    Obsolete syntax (RFC 5322 section 4) is accepted; anything the parser reports as
    invalid, undecodable or non-printable is refused, as is a control character anywhere.
    """
    known = _CHECKED.get(value)
    if known is not None:
        return list(known)
    check_text(field_name, value)
    parsed = _parse_address_list(value)
    if isinstance(parsed, str):
        raise InputError(
            field_name,
            f"{value!r} is not a valid e-mail address or list of addresses ({parsed})",
            fix='write "Name <name@example.com>" or name@example.com, separated by commas',
        )
    result = []
    for name, addr_spec in parsed:
        check_text(field_name, name)
        result.append((name, check_address(field_name, addr_spec)))
    if len(_CHECKED) >= 256:
        _CHECKED.clear()
    _CHECKED[value] = tuple(result)
    return result


@functools.lru_cache(maxsize=256)
def _parse_address_list(value: str) -> tuple[tuple[str, str], ...] | str:
    """(display name, addr-spec) pairs, or the parser's complaint.  Cached: a mailing repeats
    its From header in every message, and the email package's parser costs ~0.3 ms a header.
    Plain lists take a fast path with the same result; the rest goes to the email package."""
    fast = headerparse.address_list(value)
    return fast if fast is not None else email_address_list(value)


def email_address_list(value: str) -> tuple[tuple[str, str], ...] | str:
    """``_parse_address_list`` by the email package alone (the reference for the fast path)."""
    from email import policy  # imported on first use: plain lists never need it (CLI start-up)

    try:
        header = policy.default.header_factory("To", value)
    except Exception as exc:  # the email package raises IndexError & co. on some garbage
        return f"unreadable: {exc!r}"
    defects = [d for d in header.defects if type(d).__name__ not in _HARMLESS_DEFECTS]
    if defects:
        return str(defects[0])
    return tuple((mailbox.display_name, mailbox.addr_spec) for mailbox in header.addresses)


def check_mailbox(field_name: str, value: str, *, ascii_only: bool = False) -> str:
    """Validate exactly one ``Name <addr>`` or bare address; return it in canonical form.

    ``ascii_only``: refuse a non-ASCII local part (an envelope sender or a header that
    accompanies one: only recipients can make a message need SMTPUTF8).
    """
    return format_mailbox(*single_mailbox(field_name, value, parse_mailboxes(field_name, value), ascii_only))


def single_mailbox(field_name: str, value: str, mailboxes: list[tuple[str, str]], ascii_only: bool) -> tuple[str, str]:
    """The one (name, address) of a parsed sender value; see ``check_mailbox``."""
    if len(mailboxes) != 1:
        raise InputError(
            field_name,
            f"{value!r} holds {len(mailboxes)} addresses, not exactly one",
            fix='give one address, as "Name <name@example.com>" or name@example.com',
        )
    if ascii_only:
        check_ascii_local(field_name, mailboxes[0][1])
    return mailboxes[0]


def check_ascii_local(field_name: str, addr: str) -> None:
    """Refuse a non-ASCII local part where the address is (or goes with) the envelope sender."""
    if not addr.isascii():
        raise InputError(
            field_name,
            f"{addr!r} has non-ASCII characters before the @",
            fix="use an ASCII sender address (recipients may have non-ASCII addresses when the server offers SMTPUTF8)",
        )


_SPECIALS_RE = re.compile(r'[][\\()<>@,:;".]')


def format_mailbox(name: str, addr: str) -> str:
    """``Name <addr>`` (the name quoted when it holds specials), or the bare address without a name.

    Unlike ``email.utils.formataddr`` it keeps non-ASCII text as it is: the header
    policy that writes the message encodes it (or keeps it UTF-8 under SMTPUTF8).
    """
    if not name:
        return addr
    if _SPECIALS_RE.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def mailbox_address(mailbox: str) -> str:
    """The bare address of ``Name <addr>``."""
    from email.utils import parseaddr  # here: email.utils costs ~15 ms of a CLI start

    return parseaddr(mailbox)[1]


def check_name(field_name: str, value: str) -> str:
    """A company or task name: NFC-normalised, stripped, one line, at most MAX_NAME_CHARS characters."""
    name = unicodedata.normalize("NFC", check_text(field_name, value)).strip()
    if not name:
        raise InputError(field_name, "the name is empty", fix="give a name")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(
            field_name,
            f"the name is {len(name)} characters long, over the limit of {MAX_NAME_CHARS}",
            fix=f"choose a name of at most {MAX_NAME_CHARS} characters",
        )
    return name


def name_key(name: str) -> str:
    """What two names are compared by: NFC, case-folded (NFD and NFC spellings are one name)."""
    return unicodedata.normalize("NFC", name).strip().casefold()


MAX_MESSAGE_ID = 2**63 - 1  # SQLite's INTEGER


def check_message_ids(ids: Iterable[int]) -> list[int]:
    """Message ids in given order, each once; refuses ids outside 1…2^63-1 (SQLite's range)."""
    result = list(dict.fromkeys(ids))
    for msg_id in result:
        if not 1 <= msg_id <= MAX_MESSAGE_ID:
            raise InputError("id", f"{msg_id} is not a message id", fix="give ids as listed by `automail outbox`")
    return result


def check_rate(value: int | None) -> int | None:
    """Messages per hour must be within 100…3000 (None = unlimited)."""
    if value is None:
        return None
    if not RATE_MIN <= value <= RATE_MAX:
        raise InputError(
            "rate",
            f"{value:,} e-mails per hour is outside {RATE_MIN}…{RATE_MAX:,}",
            fix=f"choose a value from {RATE_MIN} to {RATE_MAX:,}, or --unlimited",
        )
    return value


def this_computer() -> str:
    """This computer's host name, as tasks name it."""
    return socket.gethostname()


def current_user() -> str:
    """The OS user name tasks may be assigned to."""
    try:
        return getpass.getuser()
    except Exception:  # no user name on some service accounts
        return ""


@dataclass(frozen=True)
class Company:
    """An accounting unit with its own outbox database."""

    name: str
    outbox_path: str

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Company:
        name, path = doc["name"], doc["outbox_path"]
        if not isinstance(name, str) or not name.strip() or not isinstance(path, str) or not path:
            raise ValueError("the name and the outbox path must be non-empty texts")
        return cls(name=name, outbox_path=path)


@dataclass(frozen=True)
class SmtpSettings:
    """How a task logs in to its SMTP server (the password lives in the keyring)."""

    host: str
    port: int = 587
    security: Security = Security.STARTTLS
    username: str = ""
    sender: str = ""
    reply_to: str = ""
    verify_certs: bool = True
    allow_insecure_auth: bool = False
    timeout: float = 30.0
    ca_file: str = ""  # a PEM file of CA certificates trusted for this server (own CA, self-signed)
    pipelining: bool = True  # use PIPELINING when the server offers it

    @property
    def account_key(self) -> str:
        """Identity of the SMTP account; tasks sharing it share one throttle bucket."""
        return f"{self.username.lower()}@{self.host.lower()}:{self.port}"

    @property
    def sender_address(self) -> str:
        return mailbox_address(self.sender)

    @property
    def is_loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    def validate(self) -> SmtpSettings:
        """Check every field; raise InputError naming the first bad one."""
        host = check_no_newline("host", self.host).strip()
        if not host or " " in host:
            raise InputError(
                "host",
                "is empty or contains spaces",
                fix="enter the SMTP server name, e.g. smtp.example.com",
            )
        if not 1 <= int(self.port) <= 65535:
            raise InputError(
                "port",
                f"{self.port} is not a TCP port",
                fix="use 1…65535 (587 STARTTLS, 465 TLS, 25 none)",
            )
        check_no_newline("username", self.username)
        check_no_newline("ca-file", self.ca_file)
        if not self.sender:
            raise InputError("sender", "is missing", fix='give the sender as "Name <name@example.com>"')
        sender = check_mailbox("sender", self.sender, ascii_only=True)
        reply_to = check_mailbox("reply-to", self.reply_to, ascii_only=True) if self.reply_to else ""
        if (
            self.username
            and Security(self.security) is Security.NONE
            and not self.allow_insecure_auth
            and not self.is_loopback
        ):
            raise InputError(
                "security",
                f"logging in to {host} without encryption would send the password in clear",
                fix="choose starttls or tls, or allow insecure auth explicitly",
            )
        if self.timeout <= 0:
            raise InputError("timeout", "must be positive", fix="use e.g. 30 seconds")
        return replace(self, host=host, security=Security(self.security), sender=sender, reply_to=reply_to)

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["security"] = str(self.security)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SmtpSettings:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["security"] = Security(known.get("security", "starttls"))
        return cls(**known)


DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WINDOW_FIX = 'write it like "Mon-Fri 08:00-17:00", "Sat 09:00-12:00" or "22:00-06:00" (every day)'


@dataclass(frozen=True)
class SendingWindow:
    """When a task may send: on some weekdays, from a local time to another (overnight when end ≤ start).

    Written as people say it: "Mon-Fri 08:00-17:00", "Mon,Wed 09:00-12:00", "08:00-17:00" (every day).
    """

    days: frozenset[int]  # 0 = Monday … 6 = Sunday: the days a window *starts* on
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight (24:00 = 1440); ≤ start: ends the next day

    @classmethod
    def parse(cls, text: str) -> SendingWindow:
        """The window a text describes, or InputError saying what is wrong with it."""
        parts = text.split()
        if len(parts) == 1:
            days, times = frozenset(range(7)), parts[0]
        elif len(parts) == 2:
            days, times = _parse_days(parts[0], text), parts[1]
        else:
            raise InputError("window", f"{text!r} is not a sending window", fix=_WINDOW_FIX)
        start_text, sep, end_text = times.partition("-")
        if not sep:
            raise InputError("window", f"{text!r} has no time range like 08:00-17:00", fix=_WINDOW_FIX)
        start, end = _parse_clock(start_text, text), _parse_clock(end_text, text)
        if start == end or start == 1440:
            raise InputError("window", f"{text!r} is empty (it starts when it ends)", fix=_WINDOW_FIX)
        return cls(days, start, end)

    @property
    def length(self) -> int:
        """Minutes the window stays open."""
        return self.end - self.start if self.end > self.start else self.end + 1440 - self.start

    @property
    def text(self) -> str:
        """The canonical text ("Mon-Fri 08:00-17:00")."""
        clock = f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        return clock if len(self.days) == 7 else f"{_days_text(self.days)} {clock}"


def _parse_clock(value: str, text: str) -> int:
    hours, sep, minutes = value.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise InputError("window", f"{value!r} in {text!r} is not a time like 08:00", fix=_WINDOW_FIX)
    total = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or total > 1440:
        raise InputError("window", f"{value!r} in {text!r} is not a time of day", fix="use 00:00 to 24:00")
    return total


def _day(value: str, text: str) -> int:
    key = value.strip()[:3].title()
    if key not in DAY_NAMES or len(value.strip()) < 3:
        raise InputError("window", f"{value!r} in {text!r} is not a day", fix=f"use {', '.join(DAY_NAMES)}")
    return DAY_NAMES.index(key)


def _parse_days(value: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in value.split(","):
        first, sep, last = item.partition("-")
        a = _day(first, text)
        b = _day(last, text) if sep else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # Fri-Mon wraps over the weekend
    return frozenset(days)


def _days_text(days: frozenset[int]) -> str:
    runs: list[str] = []
    ordered = sorted(days)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        a, b = DAY_NAMES[ordered[i]], DAY_NAMES[ordered[j]]
        runs.append(a if i == j else f"{a}-{b}" if j > i + 1 else f"{a},{b}")
        i = j + 1
    return ",".join(runs)


@dataclass(frozen=True)
class Task:
    """An automatic task; type "email" is Automatic e-mail sending."""

    name: str
    company: str
    smtp: SmtpSettings
    type: str = "email"
    computer: str = field(default_factory=this_computer)
    user: str = ""
    enabled: bool = False
    rate_per_hour: int | None = DEFAULT_RATE  # None = unlimited
    daily_cap: int | None = None  # rolling 24 h
    tags: tuple[str, ...] = ()
    retry_delays: tuple[int, ...] = DEFAULT_RETRY_DELAYS
    max_age_s: int = DEFAULT_MAX_AGE_S
    start_seq: int = 0  # bumped by every explicit start: clears a sticky error
    secret_rev: int = 0  # bumped when the password changes: clears a sticky error
    windows: tuple[str, ...] = ()  # sending windows ("Mon-Fri 08:00-17:00"); none: any time

    def validate(self) -> Task:
        """Check every field; raise InputError naming the first bad one."""
        name = check_name("name", self.name)
        if self.type not in TASK_TYPES:
            raise InputError(
                "type",
                f"unknown task type {self.type!r}",
                fix=f"use one of {', '.join(TASK_TYPES)}",
            )
        check_rate(self.rate_per_hour)
        if self.daily_cap is not None and self.daily_cap < 1:
            raise InputError(
                "daily-cap",
                f"{self.daily_cap} is not a positive number",
                fix="give e.g. 2000, or leave it unset",
            )
        if not self.retry_delays or any(d <= 0 for d in self.retry_delays):
            raise InputError("retry-delays", "must be positive seconds", fix="e.g. 60,300,900,3600,14400")
        for tag in self.tags:
            check_no_newline("tag", tag)
            if not tag.strip():
                raise InputError("tag", "is empty", fix="drop the empty tag")
        check_no_newline("computer", self.computer)
        check_no_newline("user", self.user)
        return replace(
            self,
            windows=tuple(SendingWindow.parse(w).text for w in self.windows),
            name=name,
            smtp=self.smtp.validate(),
            computer=self.computer.strip() or this_computer(),
            user=self.user.strip(),
            tags=tuple(t.strip() for t in self.tags),
        )

    def with_settings_of(self, other: Task) -> Task:
        """This task with the settings dialog's fields (Basic and Other tabs) taken from ``other``."""
        return replace(self, **{name: getattr(other, name) for name in SETTINGS_FIELDS})

    def retry_delay(self, attempts: int) -> int:
        """Seconds to wait after the given number of failed attempts (≥ 1)."""
        return self.retry_delays[min(max(attempts, 1), len(self.retry_delays)) - 1]

    def runs_here(self, computer: str, user: str) -> bool:
        """Whether an engine on this computer, as this OS user, should run the task."""
        if self.computer.lower() != computer.lower():
            return False
        return not self.user or self.user.lower() == user.lower()

    def shares_messages_with(self, other: Task) -> bool:
        """Whether both tasks would take the same messages: one company, one computer (and OS user), and
        scopes that overlap (no tags means every message of the company)."""
        if other.name.lower() == self.name.lower() or other.company.lower() != self.company.lower():
            return False
        if other.computer.lower() != self.computer.lower():
            return False
        if self.user and other.user and self.user.lower() != other.user.lower():
            return False
        return not self.tags or not other.tags or bool(set(self.tags) & set(other.tags))

    @property
    def fingerprint(self) -> str:
        """Changes whenever the definition, the password or an explicit start changes."""
        blob = json.dumps(self.to_doc(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def cadence_text(self) -> str:
        parts = [f"{self.rate_per_hour:,}/h" if self.rate_per_hour else "unlimited"]
        if self.daily_cap:
            parts.append(f"max {self.daily_cap:,}/24 h")
        return ", ".join(parts)

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["smtp"] = self.smtp.to_doc()
        doc["tags"] = list(self.tags)
        doc["retry_delays"] = list(self.retry_delays)
        doc["windows"] = list(self.windows)
        if not self.windows:
            del doc["windows"]  # a task without windows keeps its fingerprint from before windows existed
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Task:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["smtp"] = SmtpSettings.from_doc(doc["smtp"])
        known["tags"] = tuple(doc.get("tags", ()))
        known["retry_delays"] = tuple(doc.get("retry_delays", DEFAULT_RETRY_DELAYS))
        known["windows"] = tuple(doc.get("windows", ()))
        for key in ("name", "company", "computer", "user"):
            if not isinstance(known.get(key, ""), str):
                raise ValueError(f"{key} must be a text")
        return cls(**known)


def overlap_warning(task: Task, others: Sequence[Task]) -> str:
    """Why tasks that share messages race for them (without the fix: the GUI and the CLI name their own)."""
    names = ", ".join(repr(t.name) for t in others)
    shared = sorted(set(task.tags) & {tag for t in others for tag in t.tags})
    scope = (
        f"the messages tagged {', '.join(shared)}"
        if shared
        else "the same messages (a task without scope tags takes all)"
    )
    return (
        f"task(s) {names} of {task.company} on {task.computer} also send {scope}: "
        "each message goes to whichever task takes it first, with that task's settings"
    )


SETTINGS_FIELDS = ("smtp", "rate_per_hour", "daily_cap", "retry_delays", "tags", "windows")


@dataclass(frozen=True)
class TaskType:
    """A kind of automatic task; the registry lets other kinds be added later."""

    key: str
    title: str


TASK_TYPES: dict[str, TaskType] = {"email": TaskType("email", "Automatic e-mail sending")}


def register_task_type(task_type: TaskType) -> None:
    """Add a task type to the registry."""
    TASK_TYPES[task_type.key] = task_type


def type_title(key: str) -> str:
    """The title a task type is shown with; an unknown key as it is."""
    return TASK_TYPES[key].title if key in TASK_TYPES else key


@dataclass(frozen=True)
class StoredMessage:
    """One row of a company's outbox."""

    id: int
    status: MessageStatus
    mail_from: str
    recipients: tuple[str, ...]
    from_header: str
    subject: str
    tag: str
    message_id: str
    attempts: int
    last_error_code: int | None
    last_error: str
    refused: dict[str, str]
    server_reply: str
    task: str
    created_at: float
    next_attempt_at: float | None
    sent_at: float | None
    recipient_states: Mapping[str, RecipientState] = field(default_factory=dict)  # missing = queued
    mailing_id: int | None = None  # the mailing it belongs to (Outbox.mailing_name gives its name)

    def recipient_state(self, address: str) -> RecipientState:
        """Where one recipient stands (queued when the message was never tried)."""
        return self.recipient_states.get(address, _QUEUED)

    @property
    def pending_recipients(self) -> tuple[str, ...]:
        """The recipients the next attempt goes to: not yet sent, not failed."""
        return tuple(r for r in self.recipients if self.recipient_state(r).status.pending)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": str(self.status),
            "from": self.from_header or self.mail_from,
            "to": list(self.recipients),
            "subject": self.subject,
            "tag": self.tag,
            "attempts": self.attempts,
            "last_error": (
                f"{self.last_error_code} {self.last_error}".strip() if self.last_error_code else self.last_error
            )
            or None,
            "refused": self.refused or None,
            "recipients": {
                r: {"state": str(st.status), "reply": st.reply or None}
                for r in self.recipients
                for st in (self.recipient_state(r),)
            },
            "created_at": iso(self.created_at),
            "sent_at": iso(self.sent_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "message_id": self.message_id,
        }


_QUEUED = RecipientState()


class MailingAction(StrEnum):
    """What a user can do to a whole mailing."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY_FAILED = "retry-failed"


@dataclass(frozen=True)
class Mailing:
    """A named batch of messages queued together (a merge, a set of files), with its progress."""

    id: int
    name: str
    company: str
    created_at: float
    sources: tuple[str, ...]  # the files it was made from (template, data, .eml files)
    paused: bool
    not_before: float | None  # held until then (None: sent as soon as the task allows)
    queued: int  # waiting for its first attempt (held ones included)
    sending: int  # claimed by a task right now
    sent: int
    deferred: int  # refused for now, tried again later
    failed: int
    cancelled: int
    first_sent_at: float | None
    last_sent_at: float | None
    cancelled_at: float | None = None  # when the user cancelled it (its end then reads "cancelled")
    ended_at: float | None = None  # when its end was announced (None: running, or not yet announced)

    @property
    def total(self) -> int:
        """Every message of the mailing, whatever its state."""
        return self.queued + self.sending + self.sent + self.deferred + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        """Messages not yet finished: queued, being sent or deferred."""
        return self.queued + self.sending + self.deferred

    @property
    def finished(self) -> bool:
        """Nothing of it is left to send (sent, failed or cancelled, every message)."""
        return self.pending == 0

    @property
    def was_cancelled(self) -> bool:
        """The user cancelled it (and did not retry it since)."""
        return self.cancelled_at is not None

    def end_text(self) -> str:
        """How it ended, for notifications and the CLI: 'Faktúry 11/2026' finished: 1,240 sent, 3 failed."""
        how = "cancelled" if self.was_cancelled else "finished"
        text = f"'{self.name}' {how}: {self.sent:,} sent, {self.failed:,} failed"
        return text + (f", {self.cancelled:,} cancelled" if self.cancelled else "")

    @property
    def state(self) -> str:
        """One word for lists: cancelled, finished, paused, scheduled or sending."""
        if self.was_cancelled:  # a message in flight at the cancel may still be finishing: it had left
            return "cancelled"
        if self.finished:
            return "finished"
        if self.paused:
            return "paused"
        if self.not_before is not None and self.sent == 0 and self.sending == 0:
            return "scheduled"
        return "sending"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "company": self.company,
            "state": self.state,
            "created_at": iso(self.created_at),
            "sources": list(self.sources),
            "not_before": iso(self.not_before),
            "paused": self.paused,
            "total": self.total,
            "queued": self.queued,
            "sending": self.sending,
            "sent": self.sent,
            "deferred": self.deferred,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "first_sent_at": iso(self.first_sent_at),
            "last_sent_at": iso(self.last_sent_at),
        }


@dataclass(frozen=True)
class TaskStatus:
    """A task's persisted state plus its outbox counts, for `status` and the UI."""

    task: str
    company: str
    state: TaskState
    queued: int
    deferred: int
    sent_last_hour: int
    sent_last_24h: int
    failed: int
    last_error: str
    updated_at: float | None = None
    pid: int | None = None
    fault: FaultKind | None = None  # of an error state (TASK_FATAL: stopped until settings change)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "company": self.company,
            "state": str(self.state),
            "queued": self.queued,
            "deferred": self.deferred,
            "sent_last_hour": self.sent_last_hour,
            "sent_last_24h": self.sent_last_24h,
            "failed": self.failed,
            "last_error": self.last_error or None,
        }


class EventKind(StrEnum):
    """What an engine event reports."""

    SENT = "sent"  # a message reached every recipient it could (refusals in the detail)
    DEFERRED = "deferred"  # a message (or some of its recipients) waits for its next attempt
    FAILED = "failed"  # a message failed for good
    STATE_CHANGED = "state_changed"  # a task's state changed
    QUEUE_DRAINED = "queue_drained"  # a task has nothing left to send
    MAILING_FINISHED = "mailing_finished"  # a mailing has nothing left to send (``progress``), said once
    MAILING_CANCELLED = "mailing_cancelled"  # a cancelled mailing has nothing left to send (``progress``), said once
    ENGINE_STARTED = "engine_started"
    ENGINE_STOPPED = "engine_stopped"


@dataclass(frozen=True)
class SendingHistory:
    """Messages sent and failed per hour, oldest hour first, and the limits in force: the sending chart."""

    start: float  # when the first hour began (a local clock hour)
    sent: tuple[int, ...]
    failed: tuple[int, ...]  # failed attempts: permanent failures and deferrals
    rate_per_hour: int | None  # the hourly limit in force; None: no limit
    daily_cap: int | None  # the rolling 24-hour cap; None: no cap

    @property
    def sent_total(self) -> int:
        return sum(self.sent)

    @property
    def failed_total(self) -> int:
        return sum(self.failed)


@dataclass(frozen=True)
class EngineEvent:
    """Something the engine did, for the CLI to print and the UI to show."""

    kind: EventKind
    task: str
    company: str
    message_id: int | None = None
    state: TaskState | None = None
    detail: str = ""
    recipients: tuple[str, ...] = ()
    fault: FaultKind | None = None  # for state_changed to error
    mailing: str = ""  # the mailing of a failed message, or the one that finished
    progress: Mailing | None = None  # for mailing_finished and mailing_cancelled: its final counts


EventSink = Callable[[EngineEvent], None]


def unique_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags in given order without duplicates."""
    return tuple(dict.fromkeys(t for t in tags if t))

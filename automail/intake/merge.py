"""Mail merge: one template and one data file → a checked list of messages, or a report of every bad row.

Nothing here queues anything: ``render`` validates every row first (addresses, template variables,
attachment files, header values) and returns the messages together with the problems found, so the
caller can queue all of them in one transaction, or none.
"""

from __future__ import annotations

import errno
import functools
import html as html_lib
import os
import re
import stat
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from email.utils import formatdate, getaddresses, make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from automail.errors import AutomailError, InputError
from automail.message import attachment_type, prepare_raw, read_at_most
from automail.models import DEFAULT_MAX_MESSAGE_BYTES, check_address, check_no_newline, mailbox_address
from automail.store.outbox import NewMessage

from .mime import Part, address_header, attachment_part, header, multipart, text_part
from .mime import message as mime_message
from .sources import Row, Table, decode

TEMPLATE_MAX_BYTES = 4 * 1024 * 1024
_TEMPLATE_HEADERS = ("to", "cc", "bcc", "subject", "reply-to")
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]?(.*)$")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_ADDRESS_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*", re.ASCII)


@dataclass(frozen=True)
class Problem:
    """Why one row cannot be sent: where it is, which column, and the reason."""

    where: str
    column: str
    reason: str
    row: Row | None = None

    def __str__(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        return f"{self.where}{col}: {self.reason}"


@dataclass(frozen=True)
class Template:
    """The parts of a mailing's template, as Jinja2 sources (None where not given)."""

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    to: str | None = None
    cc: str | None = None
    bcc: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class MergeOptions:
    """How rows become messages."""

    to_column: str = "email"
    name_column: str | None = None
    attach_column: str | None = None
    attachments: tuple[Path, ...] = ()
    tag: str = ""
    list_unsubscribe: str | None = None  # "mailto:…", "https://…", or a template giving either
    default_sender: str = ""  # the task's sender: Message-ID domain
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclass
class MergeResult:
    """Every row's outcome: messages ready to queue (in row order), the rows refused, and warnings."""

    messages: list[NewMessage] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)  # the row each message came from
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- templates ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)  # called for every column of every row
def simple_name(column: str) -> str:
    """The simple form of a column name in templates: ``Meno zákazníka`` → ``Meno_zákazníka``.

    Any character that cannot be in a name becomes ``_``; ``{{ row["Meno zákazníka"] }}`` always works.
    """
    name = re.sub(r"\W", "_", unicodedata.normalize("NFC", column.strip()))
    return f"_{name}" if not name or name[0].isdigit() else name


def read_template_file(path: Path, what: str) -> str:
    """A template file as text (UTF-8 with or without BOM, else cp1250)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(TEMPLATE_MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(what, f"cannot read {path}: {exc.strerror}", fix="check the path") from None
    if len(data) > TEMPLATE_MAX_BYTES:
        raise InputError(what, f"{path.name} is larger than 4 MB", fix="is this really a template?")
    return decode(data, path.name)[0]


def load_template(text_path: Path | None, html_path: Path | None = None, subject: str | None = None) -> Template:
    """Read the template files: a text (or whole .eml-style) template, an HTML template, or both.

    A text template that starts with header lines (``To:``, ``Subject:``, ``Cc:``, ``Bcc:``,
    ``Reply-To:``) followed by an empty line gives those headers as templates too.
    """
    headers: dict[str, str] = {}
    text: str | None = None
    if text_path is not None:
        text = read_template_file(text_path, "template")
        text, headers = _split_headers(text, text_path.name)
    html = read_template_file(html_path, "html") if html_path is not None else None
    if text is None and html is None:
        raise InputError("template", "no template given", fix="give --template FILE, --html FILE or both")
    subject = subject if subject is not None else headers.get("subject")
    if subject is None:
        raise InputError(
            "subject",
            "the mailing has no subject",
            fix="give --subject, or a 'Subject:' line at the top of the template",
        )
    return Template(
        subject=subject,
        text=text,
        html=html,
        to=headers.get("to"),
        cc=headers.get("cc"),
        bcc=headers.get("bcc"),
        reply_to=headers.get("reply-to"),
    )


def _split_headers(text: str, source: str) -> tuple[str, dict[str, str]]:
    lines = text.splitlines(keepends=True)
    first = next((ln for ln in lines if ln.strip()), "")
    match = _HEADER_LINE.match(first.rstrip("\r\n"))
    if not match or match.group(1).lower() not in _TEMPLATE_HEADERS:
        return text, {}
    headers: dict[str, str] = {}
    for i, line in enumerate(lines):
        stripped = line.rstrip("\r\n")
        if not stripped:
            return "".join(lines[i + 1 :]), headers
        m = _HEADER_LINE.match(stripped)
        if m is None:
            raise InputError(
                source,
                f"line {i + 1} is neither a header nor the empty line that ends the headers",
                fix="put an empty line between the headers and the text",
            )
        key = m.group(1).lower()
        if key not in _TEMPLATE_HEADERS:
            raise InputError(
                source,
                f"line {i + 1}: the header {m.group(1)} cannot be set by a template",
                fix="use To, Cc, Bcc, Subject or Reply-To (From is the task's sender)",
            )
        headers[key] = m.group(2)
    raise InputError(source, "has headers but no text after them", fix="add an empty line and the message text")


class _Compiled:
    """The template parts compiled once; ``render(name, context)`` one part for one row."""

    def __init__(self, template: Template, extra: dict[str, str | None]) -> None:
        self._text_env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
        self._html_env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=True)
        self.parts: dict[str, Any] = {}
        sources = {
            "subject": template.subject,
            "text": template.text,
            "html": template.html,
            "to": template.to,
            "cc": template.cc,
            "bcc": template.bcc,
            "reply-to": template.reply_to,
            **extra,
        }
        for name, source in sources.items():
            if source is None:
                continue
            env = self._html_env if name == "html" else self._text_env
            try:
                self.parts[name] = env.from_string(source)
            except TemplateSyntaxError as exc:
                raise InputError(
                    f"template ({name})",
                    f"line {exc.lineno}: {exc.message}",
                    fix="check the {{ }} and {% %} markers on that line",
                ) from None

    def render(self, name: str, context: dict[str, Any]) -> str | None:
        tpl = self.parts.get(name)
        return None if tpl is None else str(tpl.render(context))


# ---- rows → messages -----------------------------------------------------------------------------
def render(
    table: Table,
    template: Template,
    options: MergeOptions,
    *,
    data_dir: Path | None = None,
    now: Callable[[], float] = time.time,
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
) -> MergeResult:
    """Render and check every row (or the first ``limit``); refuse nothing silently."""
    result = MergeResult()
    builder = _RowBuilder(table, template, options, data_dir if data_dir is not None else Path.cwd(), now)
    seen: dict[str, str] = {}
    rows = table.rows if limit is None else table.rows[:limit]
    for i, row in enumerate(rows, 1):
        if progress is not None and (i % 500 == 0 or i == len(rows)):
            progress(i, len(rows))
        message, problems = builder.build(row)
        result.problems.extend(problems)
        if message is None:
            continue
        for addr in message.recipients:
            key = addr.casefold()
            if key in seen:
                result.warnings.append(f"{row.where}: {addr} also gets the message of {seen[key]}")
            else:
                seen[key] = row.where
        result.messages.append(message)
        result.rows.append(row)
    # An attachment only one message carries (each customer's own invoice) stays in that message's
    # body: storing it apart would cost a hash, a second row and a lookup at send time, and save nothing.
    uses = Counter(id(body) for m in result.messages for body in m.shared)
    result.messages = [
        replace(m, shared=kept) if (kept := tuple(b for b in m.shared if uses[id(b)] > 1)) != m.shared else m
        for m in result.messages
    ]
    return result


def _context(row: Row) -> dict[str, Any]:
    context: dict[str, Any] = {simple_name(k): v for k, v in row.values.items()}
    context["row"] = dict(row.values)
    return context


class _RowBuilder:
    """What every row shares (compiled templates, columns, common attachments); ``build`` does one row."""

    def __init__(
        self, table: Table, template: Template, options: MergeOptions, base: Path, now: Callable[[], float]
    ) -> None:
        self.table = table
        self.options = options
        self.base = base
        self.now = now
        columns_cf = {c.casefold(): c for c in table.columns}
        self.to_column = self._column(columns_cf, options.to_column, "to-column", needed=template.to is None)
        self.name_column = self._column(columns_cf, options.name_column, "name-column")
        self.attach_column = self._column(columns_cf, options.attach_column, "attach-column")
        extra: dict[str, str | None] = {}
        if options.list_unsubscribe:
            extra["list-unsubscribe"] = options.list_unsubscribe
        self.compiled = _Compiled(template, extra)
        self.msgid_domain = _domain(options.default_sender)
        self._dates: tuple[int, str] = (-1, "")
        self.attachments = _AttachmentCache(options.max_bytes)
        self.common = [self.attachments.read(path, "attach") for path in options.attachments]

    def _column(
        self, columns_cf: dict[str, str], wanted: str | None, option: str, *, needed: bool = True
    ) -> str | None:
        if not wanted:
            return None
        found = columns_cf.get(wanted.strip().casefold())
        if found is None and needed:
            names = ", ".join(repr(c) for c in self.table.columns)
            raise InputError(
                option, f"{self.table.source} has no column {wanted!r}", fix=f"choose one of {names} with --{option}"
            )
        return found

    def build(self, row: Row) -> tuple[NewMessage | None, list[Problem]]:
        """One row's message, or the reasons it cannot be sent (every one found, not just the first)."""
        found: list[Problem] = []

        def problem(column: str, reason: str) -> None:
            found.append(Problem(row.where, column, reason, row))

        rendered: dict[str, str | None] = {}
        context = _context(row)
        for part in self.compiled.parts:
            try:
                rendered[part] = self.compiled.render(part, context)
            except UndefinedError as exc:
                name = _undefined_name(exc)
                problem("", f"the {part} template uses {name}, which is not a column of {self.table.source}")
                return None, found
            except TemplateError as exc:
                problem("", f"the {part} template failed: {exc}")
                return None, found
        display = " ".join(row.values.get(self.name_column, "").split()) if self.name_column else ""
        to_text = rendered["to"] if "to" in rendered else row.values.get(self.to_column or "", "")
        to = _mailboxes(to_text or "", self.to_column or "To", display, problem)
        cc = _mailboxes(rendered.get("cc") or "", "Cc", "", problem)
        bcc = _mailboxes(rendered.get("bcc") or "", "Bcc", "", problem)
        reply_to = _mailboxes(rendered.get("reply-to") or "", "Reply-To", "", problem)
        if not (to or cc or bcc) and not found:
            problem(self.to_column or "To", "no e-mail address")
        subject = " ".join((rendered.get("subject") or "").split())
        if not subject:
            problem("", "the subject is empty")
        files = list(self.common) + self._row_files(row, problem)
        unsubscribe = (rendered.get("list-unsubscribe") or "").strip()
        if unsubscribe and not unsubscribe.lower().startswith(("mailto:", "https://", "http://")):
            problem("", f"List-Unsubscribe {unsubscribe!r} is neither a mailto: nor an http(s) address")
        if found:
            return None, found
        text, html = rendered.get("text"), rendered.get("html")
        if text is None and html is not None:
            text = html_to_text(html)
        try:
            headers = [
                address_header(name, boxes)
                for name, boxes in (("To", to), ("Cc", cc), ("Bcc", bcc), ("Reply-To", reply_to))
                if boxes
            ]
            headers += [
                header("Subject", subject),
                header("Date", self._date()),
                header("Message-ID", make_msgid(domain=self.msgid_domain)),
            ]
            if unsubscribe:
                headers.append(header("List-Unsubscribe", f"<{unsubscribe}>"))
                if unsubscribe.lower().startswith(("https://", "http://")):
                    headers.append(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058
            body = text_part(text or "")
            if html is not None:
                body = multipart("alternative", [body, text_part(html, "html")])
            if files:
                body = multipart("mixed", [body, *files])
            raw = mime_message(headers, body)
            message = prepare_raw(raw, row.where, self.options.tag, self.options.max_bytes)
            return replace(message, shared=tuple(part.body for part in files)), found
        except AutomailError as exc:
            problem("", exc.message + (f" — {exc.fix}" if exc.fix else ""))
        except (ValueError, UnicodeError) as exc:
            problem("", f"cannot build the message: {exc}")
        return None, found

    def _date(self) -> str:
        """The Date header value now, made once per second (formatdate costs ~30 µs a row)."""
        now = self.now()
        second = int(round(now, 6))  # as formatdate rounds: to the microsecond, then the seconds shown
        if second != self._dates[0]:
            self._dates = (second, formatdate(now, localtime=True))
        return self._dates[1]

    def _row_files(self, row: Row, problem: Callable[[str, str], None]) -> list[Part]:
        column = self.attach_column
        if not column:
            return []
        files: list[Part] = []
        for item in (p.strip() for p in row.values.get(column, "").split(";")):
            if not item:
                continue
            path = Path(item)
            path = path if path.is_absolute() else self.base / path
            try:
                files.append(self.attachments.read(path, column))
            except InputError as exc:
                problem(column, exc.message.split(": ", 1)[-1] + (f" — {exc.fix}" if exc.fix else ""))
        return files


def _undefined_name(exc: UndefinedError) -> str:
    match = re.search(r"'([^']+)' is undefined", str(exc))
    if match:
        return "{{ " + match.group(1) + " }}"
    return str(exc.message or "an undefined value")


def _mailboxes(text: str, column: str, display: str, problem: Callable[[str, str], None]) -> list[tuple[str, str]]:
    """``a@x.sk; Ján Novák <jan@y.sk>`` → addresses; a bad one is reported, not dropped."""
    text = text.strip()
    if not text:
        return []
    try:
        check_no_newline(column, text)
    except InputError:
        problem(column, "contains a line break")
        return []
    boxes: list[tuple[str, str]] = []
    # A bare address (the usual recipient column) is what getaddresses would return: skip the parser.
    parts = [("", text)] if _PLAIN_ADDRESS_RE.fullmatch(text) else getaddresses([text.replace(";", ",")])
    for name, addr in parts:
        try:
            check_address(column, addr)
            name = name or (display if len(parts) == 1 else "")
            boxes.append((name, addr))
        except InputError:
            problem(column, f"{(text if len(parts) == 1 or not addr else addr)!r} is not a valid e-mail address")
    return boxes


def _domain(sender: str) -> str:
    addr = mailbox_address(sender) if sender else ""
    domain = addr.rpartition("@")[2]
    return domain or "localhost"


_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # what Path.is_file() calls "not a file"


class _AttachmentCache:
    """Each attachment file is read and encoded once, however many rows name it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: dict[object, Part] = {}
        self._bodies: dict[bytes, bytes] = {}  # one object per distinct encoded content (files alike)

    def read(self, path: Path, column: str) -> Part:
        # The file's identity (device, inode) finds it however it is named: one stat, not a path resolve.
        info: os.stat_result | None
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno not in _MISSING:
                raise
            info = None
        except ValueError:  # a NUL in the name
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise InputError(column, f"the file {path} does not exist", fix="check the path in the data file")
        # Some file systems (FAT, some network shares) report no inode number: then the resolved path.
        key: object = (info.st_dev, info.st_ino) if info.st_ino else path.resolve()
        part = self._parts.get(key)
        if part is None:
            try:
                with path.open("rb") as fh:
                    data = read_at_most(fh, self.max_bytes)
            except OSError as exc:
                raise InputError(column, f"cannot read {path}: {exc.strerror}", fix="check the file") from None
            if len(data) > self.max_bytes:
                raise InputError(
                    column,
                    f"{path.name} is larger than the message size limit ({self.max_bytes // 2**20} MB)",
                    fix="send a link instead",
                )
            part = attachment_part(path.name, attachment_type(path.name), data)
            body = self._bodies.setdefault(part.body, part.body)
            if body is not part.body:  # the same content under another name: counted as one
                part = Part(part.headers, body)
            self._parts[key] = part
        return part


# ---- HTML → text ---------------------------------------------------------------------------------
class _TextExtractor(HTMLParser):
    _BLOCK: ClassVar[set[str]] = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self._href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.out.append("\n")
        if tag == "a" and self._href:
            href = self._href.pop()
            if href and not href.startswith("#"):
                self.out.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body (for the text part when only HTML is given)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [ln.strip() for ln in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return html_lib.unescape(text) + "\n"


def report(problems: Iterable[Problem], limit: int = 50) -> str:
    """The problems as lines a person can act on (the first ``limit``, then how many more)."""
    items = list(problems)
    lines = [str(p) for p in items[:limit]]
    if len(items) > limit:
        lines.append(f"… and {len(items) - limit} more")
    return "\n".join(lines)

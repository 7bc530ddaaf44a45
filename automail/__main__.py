"""The `automail` command line; the GUI is imported only for the GUI commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automail import __version__
from automail.display import has_display
from automail.errors import AutomailError, FaultKind, InputError, OutboxExistsError
from automail.message import max_message_bytes, read_limited
from automail.models import (
    DEFAULT_RATE,
    MAX_MESSAGE_ID,
    EngineEvent,
    EventKind,
    Mailing,
    MailingAction,
    MessageStatus,
    Security,
    SmtpSettings,
    StoredMessage,
    Task,
    TaskState,
    check_message_ids,
    overlap_warning,
    unique_tags,
)
from automail.signals import stop_signals

if TYPE_CHECKING:
    from automail import api
    from automail.engine.service import Service

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
UNTIL_EMPTY_CHECK_S = 0.5  # `run --until-empty` looks at the queue at least this often, and at once when a task drains
# pystray must own the main thread on macOS and so must Tk: the desktop app is refused there, the CLI works.
MACOS_NO_DESKTOP = (
    "The desktop app does not run on macOS yet (its tray icon and its windows would both need the main thread)."
)
PASSWORD_MAX_BYTES = 64 * 1024  # one line of stdin; never read /dev/zero without end
OUTBOX_LIMIT = 1000  # `outbox` shows the newest this many messages unless --limit or --all says otherwise


def _out(text: str = "") -> None:
    # A windowed (frozen) build has no stdout.
    if sys.stdout is not None:
        print(text, flush=True)


def _err(text: str) -> None:
    if sys.stderr is not None:
        print(text, file=sys.stderr, flush=True)


def utf8_output() -> None:
    """Write UTF-8 when stdout/stderr go to a file or a pipe (never crash on a character).

    Python writes redirected output in the ANSI code page on Windows (cp1250, cp1252): `--json`
    piped to a file would be in that code page, or raise on characters outside it. A console keeps
    its own encoding; PYTHONIOENCODING, if set, wins.
    """
    if os.environ.get("PYTHONIOENCODING"):
        return
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if stream is None or reconfigure is None:
            continue
        try:
            if stream.isatty():
                reconfigure(errors="replace")
            else:
                reconfigure(encoding="utf-8", errors="replace")
        except (OSError, ValueError):
            pass


# ---- argument parsing -------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a hint, as argparse does, but say how to get help
        self.print_usage(sys.stderr)
        _err(f"automail: bad input: {message} (see `{self.prog} --help`)")
        sys.exit(EXIT_BAD_INPUT)


def _positive_int(field: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: {text!r} is not a whole number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{field}: must be positive, got {value}")
        return value

    return parse


def _ca_file(text: str) -> str:
    if not text:
        return ""  # --ca-file "" goes back to the system's certificate authorities only
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"ca-file: {text!r} is not a file (give a PEM file of CA certificates)")
    return str(path.resolve())


def _message_id(text: str) -> int:
    try:
        return check_message_ids([int(text)])[0]
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(f"id: {text!r} is not a message id (see `automail outbox`)") from None


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limit: {text!r} is not a whole number") from None
    if value > MAX_MESSAGE_ID:  # SQLite cannot take it; below 1 is refused by the command itself
        raise argparse.ArgumentTypeError(f"limit: {text} is more messages than an outbox can hold")
    return value


def _delays(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"retry-delays: {text!r} is not a list of seconds like 60,300,900") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("retry-delays: give positive seconds, e.g. 60,300,900,3600,14400")
    return values


def _task_options(p: argparse.ArgumentParser, adding: bool) -> None:
    p.add_argument("--company", required=adding, help="company (outbox) the task sends from")
    p.add_argument("--host", required=adding, help="SMTP server name")
    p.add_argument("--port", type=_positive_int("port"), help="default: 587 starttls, 465 tls, 25 none")
    p.add_argument("--security", choices=[s.value for s in Security], help="default starttls")
    p.add_argument("--username", help="SMTP login name")
    p.add_argument("--password-stdin", action="store_true", help="read the SMTP password from standard input")
    p.add_argument("--sender", help='"Name <address>" of the sender')
    p.add_argument("--reply-to", help="Reply-To address")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=int, help=f"e-mails per hour, 100…3000 (default {DEFAULT_RATE})")
    rate.add_argument("--unlimited", action="store_true", help="no spacing between e-mails")
    p.add_argument("--daily-cap", type=_positive_int("daily-cap"), help="at most N e-mails in any 24 hours")
    p.add_argument("--computer", help="computer that runs the task (default: this one)")
    p.add_argument("--user", help="OS user the task runs for (default: any)")
    p.add_argument("--tag", action="append", help="send only messages with this tag (repeatable)")
    p.add_argument("--retry-delays", type=_delays, help="seconds between attempts, e.g. 60,300,900,3600,14400")
    windows = p.add_mutually_exclusive_group()
    windows.add_argument(
        "--window",
        action="append",
        metavar="WINDOW",
        help='send only then, local time, e.g. "Mon-Fri 08:00-17:00" (repeatable; default: any time)',
    )
    windows.add_argument("--any-time", action="store_true", help="remove the sending windows: send at any time")
    p.add_argument("--allow-insecure-auth", action="store_true", help="allow a login without encryption")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-certs", dest="verify_certs", action="store_true", default=None, help="verify the server's certificate"
    )
    verify.add_argument(
        "--no-verify-certs", dest="verify_certs", action="store_false", help="do not verify the server's certificate"
    )
    p.add_argument(
        "--ca-file",
        type=_ca_file,
        metavar="PATH",
        help='PEM file of CA certificates that vouch for the server (own CA, self-signed); "" for none',
    )
    pipelining = p.add_mutually_exclusive_group()
    pipelining.add_argument(
        "--pipelining", dest="pipelining", action="store_true", default=None, help="use PIPELINING (the default)"
    )
    pipelining.add_argument(
        "--no-pipelining",
        dest="pipelining",
        action="store_false",
        help="send SMTP commands one at a time even when the server offers PIPELINING",
    )


def _company_arguments(p: argparse.ArgumentParser) -> None:
    company = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = company.add_parser("add")
    p.add_argument("name")
    p.add_argument("--outbox", help="outbox database path (default: data folder)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--reuse-outbox", action="store_true", help="an outbox file exists there: use it with its messages")
    g.add_argument("--new-outbox", action="store_true", help="an outbox file exists there: keep it aside, start empty")
    p = company.add_parser("list")
    p.add_argument("--json", action="store_true")
    p = company.add_parser("remove", help="remove a company and its tasks; its outbox file is kept, renamed")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="remove it even with messages still to send")


def _task_arguments(p: argparse.ArgumentParser) -> None:
    task = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = task.add_parser("add")
    p.add_argument("name")
    _task_options(p, adding=True)
    p = task.add_parser("edit")
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", help="rename the task (its password, state and history move along)")
    _task_options(p, adding=False)
    p = task.add_parser("list")
    p.add_argument("--json", action="store_true")
    task.add_parser("remove").add_argument("name")
    for verb in ("start", "stop"):
        p = task.add_parser(verb)
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("name", nargs="?")
        g.add_argument("--all", action="store_true")
    task.add_parser("test").add_argument("name")


def _enqueue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    p.add_argument("--tag", default="")
    p.add_argument("--mailing", metavar="NAME", help="queue the files as a new mailing of this name")
    p.add_argument("--not-before", metavar="TIME", help='hold the messages until then, e.g. "2026-12-01 08:00"')
    p.add_argument(
        "--allow-duplicate-id", action="store_true", help="queue a message whose Message-ID the outbox holds already"
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help=".eml files, folders (every *.eml directly in one, by name), patterns like invoices/*.eml "
        "(expanded by AutoMail where the shell does not), or - for standard input; all are checked, "
        "then queued in one transaction, all or nothing",
    )


def _send_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    p.add_argument("--to", nargs="+", default=[], action="extend")
    p.add_argument("--cc", nargs="+", default=[], action="extend")
    p.add_argument("--bcc", nargs="+", default=[], action="extend")
    p.add_argument("--subject", required=True)
    p.add_argument("--text", type=Path)
    p.add_argument("--html", type=Path)
    p.add_argument("--attach", nargs="+", default=[], action="extend", type=Path)
    p.add_argument("--tag", default="")
    p.add_argument("--from", dest="sender", default="", help="From header (default: the task's sender)")


def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    p.add_argument("--data", required=True, type=Path, help="CSV (UTF-8 or cp1250; , ; or tab) or .xlsx")
    p.add_argument(
        "--template", type=Path, help="text template (Jinja2); may start with To/Subject/Cc/Bcc/Reply-To lines"
    )
    p.add_argument("--html", type=Path, help="HTML template (sent with a text part)")
    p.add_argument("--subject", help="subject template (default: the template's Subject: line)")
    p.add_argument("--to-column", default="email", help="column with the recipient (default: email)")
    p.add_argument("--name-column", help="column with the recipient's display name")
    p.add_argument("--attach-column", help="column with attachment paths (relative to the data file; ; between)")
    p.add_argument("--attach", nargs="+", default=[], action="extend", type=Path, help="attached to every message")
    p.add_argument("--tag", default="")
    p.add_argument("--name", help="the mailing's name (default: template name and today's date)")
    p.add_argument("--encoding", help="the CSV file's encoding (default: UTF-8, else cp1250)")
    p.add_argument("--sheet", help="the .xlsx sheet (default: the first)")
    p.add_argument("--not-before", help='hold the mailing until then, e.g. "2026-12-01 08:00"')
    p.add_argument("--list-unsubscribe", help="mailto: or https:// address (a template) for List-Unsubscribe")
    p.add_argument("--dry-run", action="store_true", help="render and check everything; queue nothing")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="print the first N messages; queue nothing")
    p.add_argument("--test-to", metavar="ADDR", help="send the first message now to ADDR only; queue nothing")
    p.add_argument("--skip-invalid", action="store_true", help="queue the good rows; write the rest to a CSV")


def _outbox_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    p.add_argument("--status", choices=[s.value for s in MessageStatus])
    p.add_argument("--search", default="")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit", type=_limit, default=OUTBOX_LIMIT, help=f"show the newest N messages (default {OUTBOX_LIMIT:,})"
    )
    shown.add_argument("--all", action="store_true", help="every matching message, oldest first, streamed")
    p.add_argument("--json", action="store_true")


def _retry_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--failed", action="store_true", help="every failed message")
    g.add_argument("ids", nargs="*", type=_message_id, default=[])


def _cancel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--company", required=True)
    p.add_argument("ids", nargs="+", type=_message_id)


def _mailing_arguments(p: argparse.ArgumentParser) -> None:
    mailing = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = mailing.add_parser("list", help="every mailing with its progress")
    p.add_argument("--company", help="only this company's mailings")
    p.add_argument("--json", action="store_true")
    p = mailing.add_parser("show", help="one mailing: counts per status and its failed messages")
    p.add_argument("name")
    p.add_argument("--company", help="the company, when several have a mailing of that name")
    p.add_argument("--json", action="store_true")
    for action in MailingAction:
        p = mailing.add_parser(action.value, help=_MAILING_HELP[action])
        p.add_argument("name")
        p.add_argument("--company", help="the company, when several have a mailing of that name")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--until-empty", action="store_true", help="exit when nothing is left to send")


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--headless", action="store_true", help="no windows: print progress")


def _install_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-autostart", action="store_true", help="do not start AutoMail when you log in")
    p.add_argument("--no-desktop-icon", action="store_true", help="no shortcut on the desktop")


def _uninstall_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purge", action="store_true", help="also delete the data folder and the stored passwords")


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


# Every command: its one-line help and what adds its arguments (in the order `automail --help` lists them).
_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "company": ("companies and their outboxes", _company_arguments),
    "task": ("automatic e-mail sending tasks", _task_arguments),
    "enqueue": ("queue .eml files", _enqueue_arguments),
    "send": ("compose and queue one message", _send_arguments),
    "merge": ("queue a personalised mailing from a template and a CSV/XLSX file", _merge_arguments),
    "outbox": ("list a company's messages", _outbox_arguments),
    "retry": ("queue failed messages again", _retry_arguments),
    "cancel": ("cancel queued messages", _cancel_arguments),
    "mailing": ("mailings: progress, pause, resume, cancel", _mailing_arguments),
    "status": ("state of every task", _status_arguments),
    "run": ("send in the foreground until stopped", _run_arguments),
    "demo": ("show AutoMail sending a sample mailing to a local capture server", _demo_arguments),
    "gui": ("start the desktop app (the default with a display)", _no_arguments),
    "install": ("install this built AutoMail for you: menu entry, start at login", _install_arguments),
    "uninstall": ("remove the installed AutoMail; your data and passwords stay", _uninstall_arguments),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given ``command``, only that one's arguments are added (the rest are
    listed with their help all the same): building all of them costs every start of the CLI ~10 ms."""
    parser = _Parser(prog="automail", description="Throttled, durable mass e-mail sending.")
    parser.add_argument("--version", action="version", version=f"AutoMail {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (help_text, add_arguments) in _PARSERS.items():
        p = sub.add_parser(name, help=help_text)
        if command in (None, name):
            add_arguments(p)
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed, with only its command's parser built: the same result, help and errors as
    ``build_parser().parse_args(argv)``."""
    args = sys.argv[1:] if argv is None else list(argv)
    # The options before the command take no value: the first other word names it (or is an error).
    word = next((a for a in args if not a.startswith("-")), None)
    return build_parser(word if word in _PARSERS else None).parse_args(args)


# ---- helpers ---------------------------------------------------------------------------------
def _service(read_only: bool = False) -> Service:
    from automail.engine.service import Service

    return Service(read_only=read_only)


def _read_password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    return password_from_stdin(sys.stdin.buffer.readline(PASSWORD_MAX_BYTES) if sys.stdin is not None else b"")


def password_from_stdin(line: bytes) -> str:
    """The password in the first line of standard input, read as UTF-8 bytes (any platform).

    One line end (LF or CR LF) and then one trailing space are removed: Windows' `cmd` turns
    `echo secret | automail …` into "secret \\r\\n". A byte-order mark (PowerShell, Notepad) is skipped.
    """
    line = line.removeprefix(b"\xef\xbb\xbf").removesuffix(b"\n").removesuffix(b"\r").removesuffix(b" ")
    try:
        password = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            "password",
            "standard input is not UTF-8 text",
            fix="pipe UTF-8, e.g. from a UTF-8 file (`automail … --password-stdin < password.txt`); "
            "in Windows cmd run `chcp 65001` first",
        ) from None
    if not password:
        raise InputError("password", "standard input was empty", fix="pipe the password, e.g. `echo … | automail …`")
    return password


def _apply_task_options(task: Task, args: argparse.Namespace) -> Task:
    smtp = task.smtp
    if args.security is not None:
        security = Security(args.security)
        port = args.port or (security.default_port if smtp.port == Security(smtp.security).default_port else smtp.port)
        smtp = replace(smtp, security=security, port=port)
    elif args.port is not None:
        smtp = replace(smtp, port=args.port)
    for name in ("host", "username", "sender", "reply_to"):
        value = getattr(args, name)
        if value is not None:
            smtp = replace(smtp, **{name: value})
    if args.allow_insecure_auth:
        smtp = replace(smtp, allow_insecure_auth=True)
    for name in ("verify_certs", "ca_file", "pipelining"):
        value = getattr(args, name)
        if value is not None:
            smtp = replace(smtp, **{name: value})
    changes: dict[str, Any] = {"smtp": smtp}
    if args.company is not None:
        changes["company"] = args.company
    if args.rate is not None:
        changes["rate_per_hour"] = args.rate
    if args.unlimited:
        changes["rate_per_hour"] = None
    if args.daily_cap is not None:
        changes["daily_cap"] = args.daily_cap
    if args.computer is not None:
        changes["computer"] = args.computer
    if args.user is not None:
        changes["user"] = args.user
    if args.tag:
        changes["tags"] = unique_tags(args.tag)
    if args.retry_delays is not None:
        changes["retry_delays"] = args.retry_delays
    if args.window or args.any_time:
        changes["windows"] = tuple(args.window or ())
    if getattr(args, "new_name", None) is not None:
        changes["name"] = args.new_name
    return replace(task, **changes)


def _printable(text: str) -> str:
    """Control characters (ANSI escape sequences, line breaks) shown as \\x1b etc., never sent to the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
    cells = [list(map(str, header))] + [["" if c is None else _printable(str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_event(event: EngineEvent) -> None:
    if event.kind in (EventKind.SENT, EventKind.DEFERRED, EventKind.FAILED):
        to = ", ".join(event.recipients[:3]) + (" …" if len(event.recipients) > 3 else "")
        _out(f"[{event.task}] {event.kind} #{event.message_id} to {to}: {event.detail}")
    elif event.kind is EventKind.STATE_CHANGED:
        text = f"[{event.task}] {event.state}" + (f": {event.detail}" if event.detail else "")
        (_err if event.state is TaskState.ERROR else _out)(text)
    elif event.kind is EventKind.QUEUE_DRAINED:
        _out(f"[{event.task}] queue empty")
    elif event.kind in (EventKind.MAILING_FINISHED, EventKind.MAILING_CANCELLED) and event.progress is not None:
        _out(f"[{event.task}] mailing {event.progress.end_text()}")


def _warn_overlap(svc: Any, task: Task) -> None:
    others = svc.overlapping(task)
    if others:
        _err(
            f"Warning: {overlap_warning(task, others)} — give the tasks different --tag values "
            "(or run them on different computers)."
        )


def _ask(question: str) -> str:
    """The first letter of a typed answer, lower case; "" when nobody can answer (no terminal)."""
    if sys.stdin is None or not sys.stdin.isatty() or sys.stdout is None:
        return ""
    try:
        return input(question).strip()[:1].lower()
    except EOFError:
        return ""


# ---- commands ----------------------------------------------------------------------------------
def cmd_company(args: argparse.Namespace) -> int:
    svc = _service()
    if args.action == "add":
        reuse = True if args.reuse_outbox else False if args.new_outbox else None
        try:
            c = svc.add_company(args.name, args.outbox, reuse)
        except OutboxExistsError as exc:
            found = exc.message.removeprefix("outbox: ")
            answer = _ask(
                f"{found[:1].upper()}{found[1:]}.\nReuse it with its messages (r), start empty (n), or cancel (c)? "
            )
            if answer not in ("r", "n"):
                raise InputError("outbox", found, fix="add --reuse-outbox to use it, or --new-outbox") from None
            reuse = answer == "r"
            c = svc.add_company(args.name, args.outbox, reuse)
        _out(f"Company {c.name!r} added; outbox: {c.outbox_path}" + (" (reused)" if reuse else ""))
    elif args.action == "list":
        companies = svc.companies()
        if args.json:
            _out(json.dumps([c.to_doc() for c in companies], indent=2, ensure_ascii=False))
        else:
            _print_table([(c.name, c.outbox_path) for c in companies], ("COMPANY", "OUTBOX"))
    else:
        pending, tasks, _running = svc.company_load(args.name)
        what = [f"{pending:,} message(s) still to send"] if pending else []
        what += [f"task(s) {', '.join(tasks)}"] if tasks else []
        if what and not args.yes and _ask(f"{args.name!r} has {' and '.join(what)}. Remove it (y/N)? ") != "y":
            raise InputError(
                "company",
                f"{args.name!r} has {' and '.join(what)}; removing it drops them (the messages are not sent)",
                fix="run again with --yes to remove it; its outbox file is kept, renamed with today's date",
            )
        c, kept = svc.remove_company(args.name)
        _out(f"Company {c.name!r} removed" + (f"; its outbox file was kept as {kept}" if kept else ""))
    return EXIT_OK


def cmd_task(args: argparse.Namespace) -> int:
    svc = _service()
    action = args.action
    if action == "add":
        password = _read_password(args)
        base = Task(name=args.name, company=args.company, smtp=SmtpSettings(host=args.host, port=0))
        base = replace(base, smtp=replace(base.smtp, port=Security(args.security or "starttls").default_port))
        task = svc.add_task(_apply_task_options(base, args), password)
        _out(f"Task {task.name!r} added ({task.company}, {task.smtp.host}:{task.smtp.port}, {task.cadence_text}).")
        _out(f"Start it with: automail task start {task.name!r}")
        _warn_overlap(svc, task)
    elif action == "edit":
        password = _read_password(args)
        task = svc.edit_task(args.name, lambda t: _apply_task_options(t, args), password)
        renamed = f" (renamed from {args.name!r})" if args.new_name else ""
        _out(f"Task {task.name!r} saved{renamed}.")
        _warn_overlap(svc, task)
    elif action == "list":
        tasks = svc.tasks()
        states = {s.task: s for s in svc.status()}
        if args.json:
            docs = []
            for t in tasks:
                doc = t.to_doc()
                doc.pop("start_seq", None)
                doc.pop("secret_rev", None)
                doc["state"] = str(states[t.name].state) if t.name in states else "stopped"
                docs.append(doc)
            _out(json.dumps(docs, indent=2, ensure_ascii=False))
        else:
            rows = [
                (
                    t.name,
                    t.company,
                    t.computer,
                    t.user or "-",
                    f"{t.smtp.host}:{t.smtp.port}",
                    t.cadence_text + "".join(f", {w}" for w in t.windows),
                    "yes" if t.enabled else "no",
                    states[t.name].state if t.name in states else "stopped",
                )
                for t in tasks
            ]
            _print_table(rows, ("TASK", "COMPANY", "COMPUTER", "USER", "SERVER", "CADENCE", "ENABLED", "STATE"))
    elif action == "remove":
        task = svc.remove_task(args.name)
        _out(f"Task {task.name!r} removed.")
    elif action in ("start", "stop"):
        if args.all:
            tasks = svc.start_all() if action == "start" else svc.stop_all()
            _out(f"{'Started' if action == 'start' else 'Stopped'} {len(tasks)} task(s) of {svc.computer}.")
        else:
            task = svc.start_task(args.name) if action == "start" else svc.stop_task(args.name)
            verb = "started" if action == "start" else "stopped"
            note = ""
            if action == "start" and not task.runs_here(svc.computer, svc.user):
                note = f" It runs on {task.computer}" + (f" for user {task.user}" if task.user else "") + "."
            _out(f"Task {task.name!r} {verb}.{note} A running engine picks this up within seconds.")
    elif action == "test":
        _out(svc.test_task(args.name))
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace) -> int:
    from automail.intake.eml_files import eml_paths, read_eml_files, source_name

    paths = eml_paths(args.files)  # a folder without .eml, a pattern matching nothing: refused before anything
    svc = _service()
    # Read as the gate goes: only the checked messages are held until the one transaction that queues them.
    items = read_eml_files(paths, max_message_bytes())
    not_before = None
    if args.not_before:
        from automail.api import parse_time  # the API imports the mail merge (Jinja2): only when needed

        not_before = parse_time(args.not_before)
    ids = svc.enqueue_raw(
        args.company,
        items,
        args.tag,
        mailing=args.mailing,
        not_before=not_before,
        allow_duplicate_id=args.allow_duplicate_id,
        mailing_sources=[
            source_name(name) for name in args.files
        ],  # the mailing was made from a folder, not 30,000 files
    )
    into = f" as mailing {args.mailing.strip()!r}" if args.mailing else ""
    _out(f"Queued {len(ids)} message(s) in {svc.definitions.company(args.company).name}{into}: ids {_id_ranges(ids)}")
    return EXIT_OK


def _id_ranges(ids: Sequence[int]) -> str:
    return f"{ids[0]}–{ids[-1]}" if len(ids) > 1 else str(ids[0])


def _read_text(path: Path | None, field: str) -> str | None:
    if path is None:
        return None
    data = read_limited(path, field, max_message_bytes())
    try:
        return data.decode("utf-8-sig")  # Notepad saves UTF-8 with a BOM
    except UnicodeDecodeError as exc:
        raise InputError(field, f"{path} is not UTF-8 text ({exc})", fix="give a UTF-8 text file") from exc


def cmd_send(args: argparse.Namespace) -> int:
    svc = _service()
    for path in args.attach:
        if not path.is_file():
            raise InputError("attach", f"{path} is not a readable file", fix="check the path")
    msg_id = svc.send(
        args.company,
        to=args.to,
        cc=args.cc,
        bcc=args.bcc,
        subject=args.subject,
        text=_read_text(args.text, "text"),
        html=_read_text(args.html, "html"),
        attachments=args.attach,
        sender=args.sender,
        tag=args.tag,
    )
    _out(f"Queued message {msg_id}.")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from automail import api
    from automail.intake.merge import report

    svc = _service()
    if args.preview < 0:
        raise InputError("preview", "must be 0 or more", fix="give the number of messages to print")
    show_progress = sys.stderr is not None and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show_progress and total >= 1000:
            width = 30
            filled = width * done // total
            sys.stderr.write(f"\rChecking rows [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    plan = api.plan_merge(
        args.company,
        data=args.data,
        template=args.template,
        html=args.html,
        subject=args.subject,
        to_column=args.to_column,
        name_column=args.name_column,
        attach_column=args.attach_column,
        attach=args.attach,
        tag=args.tag,
        name=args.name,
        encoding=args.encoding,
        sheet=args.sheet,
        not_before=args.not_before,
        list_unsubscribe=args.list_unsubscribe,
        limit=1 if args.test_to else None,
        progress=progress,
        service=svc,
    )
    for warning in plan.result.warnings:
        _err(f"warning: {warning}")
    if plan.problems:
        _err(f"{len(plan.problems)} problem(s) in {args.data.name}:")
        _err(report(plan.problems))
    if args.test_to:
        return _merge_test(svc, plan, args.test_to)
    if args.preview:
        for msg in plan.messages[: args.preview]:
            _out(_preview(msg.raw))
            _out("-" * 72)
    total = len(plan.table.rows)
    if args.dry_run or args.preview:
        _out(
            f"{len(plan.messages):,} of {total:,} row(s) would be queued as mailing {plan.name!r}; nothing was queued."
        )
        return EXIT_BAD_INPUT if plan.problems else EXIT_OK
    if plan.problems and not args.skip_invalid:
        _err("Nothing was queued: correct these rows, or queue the good rows only with --skip-invalid.")
        return EXIT_BAD_INPUT
    ids = api.queue_merge(plan, skip_invalid=args.skip_invalid)
    _out(f"Queued {len(ids):,} message(s) as mailing {plan.name!r}.")
    if plan.problems:
        rejects = api.write_rejects(plan)
        _out(f"{len(plan.problems)} row problem(s) skipped; the rows and reasons are in {rejects}.")
    return EXIT_OK


def _merge_test(svc: Service, plan: api.MergePlan, to: str) -> int:
    from automail.models import check_address

    address = check_address("test-to", to)
    if not plan.messages:
        _err("The first row has a problem (above): nothing was sent.")
        return EXIT_BAD_INPUT
    tasks = [t for t in svc.tasks(plan.company) if not t.tags or plan.tag in t.tags]
    if not tasks:
        raise InputError(
            "test-to",
            f"company {plan.company!r} has no task to send through",
            fix="add one with `automail task add`",
        )
    reply = svc.send_now(tasks[0], plan.messages[0].raw, [address])
    _out(f"Sent the first message to {address} through task {tasks[0].name!r}: {reply}")
    return EXIT_OK


def _preview(raw: bytes) -> str:
    import email
    from email import policy

    msg = email.message_from_bytes(raw, policy=policy.default)
    lines = [f"{name}: {msg[name]}" for name in ("To", "Cc", "Reply-To", "Subject", "Date", "Message-ID") if msg[name]]
    body = msg.get_body(("plain",)) if msg.is_multipart() else msg
    text = body.get_content() if body is not None else ""
    attachments = [
        f"{part.get_filename()} ({len(part.get_payload(decode=True) or b''):,} bytes)"
        for part in msg.iter_attachments()
        if part.get_filename()
    ]
    if attachments:
        lines.append("Attachments: " + ", ".join(attachments))
    return "\n".join(lines) + "\n\n" + str(text).replace("\r\n", "\n").rstrip() + "\n"


def cmd_outbox(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InputError("limit", f"--limit must be at least 1, not {args.limit}", fix="give --limit N, or --all")
    box = _service(read_only=True).outbox(args.company)
    status = MessageStatus(args.status) if args.status else None
    messages: Iterable[StoredMessage]
    if args.all:
        messages = box.iter_messages(status, args.search)  # constant memory at any outbox size
    else:
        newest = box.page(status, args.search, limit=args.limit + 1)
        if len(newest) > args.limit:
            newest.pop()
            _err(f"Showing the newest {args.limit:,} messages; --limit N shows more, --all shows every one.")
        messages = reversed(newest)
    if args.json:
        _out_json_array(m.to_json() for m in messages)
        return EXIT_OK
    header = ("ID", "STATUS", "TO", "SUBJECT", "TRIES", "LAST ERROR")
    rows = (
        (m.id, m.status, ", ".join(m.recipients)[:40], m.subject[:40], m.attempts, m.to_json()["last_error"] or "")
        for m in messages
    )
    if args.all:
        _out("\t".join(header))  # streamed: tab-separated, as no column width is known in advance
        for row in rows:
            _out("\t".join("" if c is None else str(c) for c in row))
    else:
        _print_table(list(rows), header)
    return EXIT_OK


def _out_json_array(items: Iterable[dict[str, Any]]) -> None:
    """Print a JSON array one element at a time (the same text json.dumps(indent=2) writes)."""
    first = True
    for item in items:
        text = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        if sys.stdout is not None:
            sys.stdout.write(("[\n  " if first else ",\n  ") + text)
        first = False
    _out("[]" if first else "\n]")


def cmd_retry(args: argparse.Namespace) -> int:
    svc = _service()
    n = svc.retry(args.company, None if args.failed else args.ids)
    _out(f"{n} message(s) queued again.")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    n = _service().cancel(args.company, args.ids)
    _out(f"{n} message(s) cancelled.")
    return EXIT_OK


_MAILING_HELP = {
    MailingAction.PAUSE: "stop sending its messages (other mailings go on)",
    MailingAction.RESUME: "send a paused mailing's messages again",
    MailingAction.CANCEL: "cancel every message of it that has not been sent",
    MailingAction.RETRY_FAILED: "queue its failed messages again",
}
_MAILING_DONE = {
    MailingAction.PAUSE: "{n:,} waiting message(s) held",
    MailingAction.RESUME: "{n:,} message(s) released",
    MailingAction.CANCEL: "{n:,} message(s) cancelled",
    MailingAction.RETRY_FAILED: "{n:,} failed message(s) queued again",
}


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def cmd_mailing(args: argparse.Namespace) -> int:
    if args.action == "list":
        mailings = _service(read_only=True).mailings(args.company)
        if args.json:
            _out(json.dumps([m.to_json() for m in mailings], indent=2, ensure_ascii=False))
            return EXIT_OK
        rows = [
            (m.name, m.company, m.state, m.total, m.queued + m.sending, m.sent, m.deferred, m.failed, m.cancelled,
             _when(m.created_at))
            for m in mailings
        ]  # fmt: skip
        header = ("MAILING", "COMPANY", "STATE", "TOTAL", "QUEUED", "SENT", "DEFERRED", "FAILED", "CANCELLED")
        _print_table(rows, (*header, "CREATED"))
        return EXIT_OK
    if args.action == "show":
        svc = _service(read_only=True)
        m = svc.find_mailing(args.name, args.company)
        failures = svc.mailing_failures(m)
        if args.json:
            _out(json.dumps({**m.to_json(), "failures": [f.to_json() for f in failures]}, indent=2, ensure_ascii=False))
            return EXIT_OK
        lines = [
            ("Mailing", m.name),
            ("Company", m.company),
            ("State", m.state),
            ("Created", _when(m.created_at)),
            ("Sources", ", ".join(m.sources) or "-"),
            ("Not before", _when(m.not_before) or "-"),
            ("First sent", _when(m.first_sent_at) or "-"),
            ("Last sent", _when(m.last_sent_at) or "-"),
            ("Messages", f"{m.total:,}"),
        ] + [(label, f"{n:,}") for label, n in _status_counts(m)]
        for label, value in lines:
            _out(f"{label + ':':<12} {value}")
        if failures:
            _out("")
            _out(f"Failed messages ({m.failed:,}{', first 100' if m.failed > len(failures) else ''}):")
            _print_table(
                [(f.id, ", ".join(f.recipients)[:40], f.to_json()["last_error"] or "") for f in failures],
                ("ID", "TO", "ERROR"),
            )
        return EXIT_OK
    action = MailingAction(args.action)
    changed, n = _service().change_mailing(action, args.name, args.company)
    _out(f"Mailing {changed.name!r} ({changed.company}): {_MAILING_DONE[action].format(n=n)}; now {changed.state}.")
    return EXIT_OK


def _status_counts(m: Mailing) -> list[tuple[str, int]]:
    return [
        ("  queued", m.queued),
        ("  sending", m.sending),
        ("  sent", m.sent),
        ("  deferred", m.deferred),
        ("  failed", m.failed),
        ("  cancelled", m.cancelled),
    ]


def cmd_status(args: argparse.Namespace) -> int:
    statuses = _service(read_only=True).status()  # never waits for a sending engine's write lock
    if args.json:
        _out(json.dumps([s.to_json() for s in statuses], indent=2, ensure_ascii=False))
        return EXIT_OK
    rows = [
        (s.task, s.company, s.state, s.queued, s.deferred, s.sent_last_hour, s.sent_last_24h, s.failed, s.last_error)
        for s in statuses
    ]
    _print_table(rows, ("TASK", "COMPANY", "STATE", "QUEUED", "DEFERRED", "SENT 1H", "SENT 24H", "FAILED", "ERROR"))
    return EXIT_OK


class _StopSignal:
    """SIGINT/SIGTERM (SIGBREAK on Windows) set an event instead of raising in the middle of a send."""

    def __init__(self, wake: threading.Event | None = None) -> None:
        self.event = threading.Event()
        self._wake = wake  # also set by a signal: whoever waits on it looks at ``event`` at once
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in stop_signals():  # SIGBREAK too on Windows (Ctrl+Break, console closed, logoff)
            self._old[sig] = signal.signal(sig, self._stop)
        return self

    def _stop(self, *_: object) -> None:
        self.event.set()
        if self._wake is not None:
            self._wake.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run_engine(svc: Service, until_empty: bool, on_event: Callable[[EngineEvent], None] = _print_event) -> int:
    """Run the engine in the foreground; see `automail run`."""
    failed = 0
    check = threading.Event()  # look at the queue now: a task drained or changed state, or a stop signal

    def count(event: EngineEvent) -> None:
        nonlocal failed
        if event.kind is EventKind.FAILED:
            failed += 1
        on_event(event)
        if event.kind in (EventKind.QUEUE_DRAINED, EventKind.STATE_CHANGED):
            check.set()

    svc.subscribe(count)
    local = [t for t in svc.local_tasks() if t.enabled]
    if not local:
        _err(
            f"No enabled task runs on this computer ({svc.computer}). "
            "Start one with `automail task start NAME` (see `automail task list`)."
        )
        return EXIT_FAILED if until_empty else EXIT_OK
    code = EXIT_OK
    try:  # the engine is stopped also when reading the status fails (a damaged outbox)
        with _StopSignal(check) as stop:  # before saying "Ctrl+C stops it", so a stop right after it is graceful
            _out(f"AutoMail engine running {len(local)} task(s) on {svc.computer}. Ctrl+C stops it.")
            svc.start_engine()
            while True:
                check.wait(UNTIL_EMPTY_CHECK_S)  # --until-empty ends as soon as the last task drains
                check.clear()
                if stop.event.is_set():
                    break
                if not until_empty:
                    continue
                local = [t for t in svc.local_tasks() if t.enabled]
                statuses = svc.status(tasks=local)
                stuck = [s for s in statuses if s.fault is FaultKind.TASK_FATAL]
                if local and len(stuck) == len(local):
                    for s in stuck:
                        _err(f"Task {s.task!r} stopped: {s.last_error}")
                    code = EXIT_FAILED
                    break
                # queued, sending or deferred; a paused mailing's messages wait for a resume, not for this run
                if sum(s.queued + s.deferred for s in statuses) == svc.held(local):
                    code = EXIT_FAILED if failed else EXIT_OK
                    break
    finally:
        svc.stop_engine()
    if until_empty and stop.event.is_set():
        # Stopped by Ctrl+C or SIGTERM before the queue was empty: a script must not take it for done.
        left = svc.pending([t for t in svc.local_tasks() if t.enabled])
        if left or failed:
            _err(f"Stopped before the queue was empty: {left} message(s) still to send.")
            code = EXIT_FAILED
    if failed:
        _err(f"{failed} message(s) failed permanently during this run (see `automail outbox --status failed`).")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    return run_engine(_service(), args.until_empty)


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.headless:
        if sys.platform == "darwin":
            _err(f"{MACOS_NO_DESKTOP} Running `automail demo --headless` instead.")
        elif has_display():
            return _gui(demo=True)
        else:
            _err("No display found, so the desktop demo cannot open: running `automail demo --headless` instead.")
    from automail.demo import DEMO_TASK, RECEIVED, CaptureServer, prepare_demo, sample_size

    svc = _service()  # in the demo's own temporary data folder (see main)
    server = CaptureServer(svc.home / RECEIVED).start()
    try:
        prepare_demo(svc, server)
        total = sample_size()
        _out(f"Demo SMTP server listening on {server.host}:{server.port}; sending {total} e-mails at 3,000/h …")
        _out(f"The e-mails are saved in {server.folder} while the demo runs.")
        done = 0

        def progress(event: EngineEvent) -> None:
            nonlocal done
            if event.task != DEMO_TASK:
                return
            if event.kind is EventKind.SENT:
                done += 1
                _out(f"  [{done:>2}/{total}] sent #{event.message_id} to {', '.join(event.recipients)}")
            elif event.kind in (EventKind.FAILED, EventKind.DEFERRED) or event.state is TaskState.ERROR:
                _print_event(event)

        code = run_engine(svc, until_empty=True, on_event=progress)
    finally:
        server.stop()
        svc.close()
    _out(
        f"The capture server received {server.received} message(s). The demo ran in a temporary data "
        "folder, removed now with its e-mails: your own companies and tasks were not touched."
    )
    return code


def _gui(demo: bool = False, first_start: bool = False) -> int:
    try:
        from automail.ui.app import run_app
    except ImportError as exc:  # the GUI packages are optional for headless servers
        _err(f"The desktop app is not available ({exc}). Use `automail run` or `automail demo --headless`.")
        return EXIT_FAILED
    return int(run_app(demo=demo, first_start=first_start))


def cmd_gui(args: argparse.Namespace) -> int:
    if sys.platform == "darwin":
        _err(f"{MACOS_NO_DESKTOP} Use `automail run` (send in the foreground); see `automail --help`.")
        return EXIT_FAILED
    if not has_display():
        _err(
            "No display found, so the desktop app cannot open. On a server use `automail run` "
            "(send in the foreground) or `automail demo --headless`; see `automail --help`."
        )
        return EXIT_FAILED
    return _gui(first_start=args.command is None)


def cmd_install(args: argparse.Namespace) -> int:
    from automail.install.common import InstallOptions, install_bundle

    options = InstallOptions(autostart=not args.no_autostart, desktop_icon=not args.no_desktop_icon)
    report, installer = install_bundle(options, _quit_running_app)
    for path in report.created:
        _out(f"created {path}")
    for note in report.kept:
        _out(f"kept {note}")
    _out(f"AutoMail is installed in {installer.app_dir}.")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from automail.install.common import installer_for
    from automail.logsetup import stop_logging
    from automail.paths import data_dir

    home = data_dir()
    _quit_running_app()
    tasks: list[str] = []
    if args.purge:
        svc = _service(read_only=True)
        try:
            tasks = [t.name for t in svc.definitions.tasks()]
        finally:
            svc.close()
    report = installer_for().uninstall()
    for path in report.removed:
        _out(f"removed {path}")
    if args.purge:
        from automail.install.common import remove_tree
        from automail.secrets import delete_password

        for name in tasks:
            delete_password(name)
        stop_logging()  # the log file is in the data folder (and Windows cannot delete an open file)
        remove_tree(home, report)
        _out(f"removed {home} and the stored passwords of {len(tasks)} task(s)")
    else:
        _out(f"Your data folder {home} and stored passwords were kept (`uninstall --purge` deletes them).")
    return EXIT_OK


def _quit_running_app() -> bool:
    """Ask a running AutoMail (same data folder) to quit, over the single-instance channel, and wait for it."""
    from automail.paths import data_dir
    from automail.ui.instance import quit_running_instance  # no GUI toolkit: a socket and a file lock

    if quit_running_instance(data_dir()):
        _out("The running AutoMail was asked to quit and has exited.")
        return True
    return False


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "company": cmd_company,
    "task": cmd_task,
    "enqueue": cmd_enqueue,
    "send": cmd_send,
    "merge": cmd_merge,
    "outbox": cmd_outbox,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "mailing": cmd_mailing,
    "status": cmd_status,
    "run": cmd_run,
    "demo": cmd_demo,
    "gui": cmd_gui,
    "install": cmd_install,
    "uninstall": cmd_uninstall,
}


def _data_folder_for(command: str) -> contextlib.AbstractContextManager[Any]:
    """The demo runs in a temporary data folder of its own (removed at its end); the rest in the user's."""
    if command != "demo":
        return contextlib.nullcontext()
    from automail.demo import demo_home

    return demo_home()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `automail`, `python -m automail` and app.py."""
    args = parse_arguments(argv)
    from automail.logsetup import setup_logging
    from automail.paths import data_dir, prepare_data_dir

    command = args.command or "gui"
    utf8_output()
    try:
        with _data_folder_for(command):
            setup_logging(prepare_data_dir(data_dir()), verbose=args.verbose)
            return COMMANDS[command](args)
    except AutomailError as exc:  # exit_code: 2 for bad input (InputError), else 1
        _err(f"automail: {'bad input: ' if isinstance(exc, InputError) else ''}{exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:  # `automail outbox --json | head`: the reader left; not a data-folder problem
        with contextlib.suppress(OSError):
            sys.stdout = None  # nothing more to write, not even at exit
        return EXIT_FAILED
    except (OSError, sqlite3.Error) as exc:  # the last net: a file problem nobody wrapped yet, not a traceback
        logging.getLogger(__name__).exception("unexpected file error")
        _err(f"automail: {exc} — check that the data folder ({data_dir()}) and its files are readable and writable")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

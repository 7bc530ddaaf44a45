"""Show message: a queued or sent message as its recipients see it, and what became of each recipient."""

from __future__ import annotations

import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import customtkinter as ctk

from automail.message import with_sender_headers
from automail.models import MessageStatus, RecipientStatus, StoredMessage, Task
from automail.ui.widgets import PAD, AppToplevel, ReadOnlyText

# Headers a recipient's mail program shows, in its order; others are listed after them.
SHOWN_HEADERS = ("From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def size_text(size: int) -> str:
    """1,234 bytes → "1.2 KB"; sizes as a file manager writes them."""
    if size < 1024:
        return f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:,.1f} KB"
    return f"{size / (1024 * 1024):,.1f} MB"


def normalise_lines(text: str) -> str:
    """CRLF and lone CR line ends as plain newlines (a CR would show as a box glyph)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def recipient_lines(msg: StoredMessage) -> list[str]:
    """One line per recipient: what the server said about it, or what will happen next."""
    error = f"{msg.last_error_code} {msg.last_error}".strip() if msg.last_error_code else msg.last_error
    lines = []
    for rcpt in msg.recipients:
        state = msg.recipient_state(rcpt)
        if state.status is RecipientStatus.SENT:
            outcome = "accepted by the server"
        elif state.status is RecipientStatus.DEFERRED:
            outcome = f"refused for now ({state.reply}), next try {_when(msg.next_attempt_at)}"
        elif state.status is RecipientStatus.UNKNOWN:
            outcome = f"no answer from the server, it may have been delivered; next try {_when(msg.next_attempt_at)}"
        elif state.status is RecipientStatus.FAILED and not state.reply[:1].isdigit():
            outcome = f"failed: {state.reply}"  # e.g. given up after the maximum age
        elif rcpt in msg.refused:
            outcome = f"refused by the server: {msg.refused[rcpt]}"
        elif msg.status is MessageStatus.SENT:
            outcome = "accepted by the server"
        elif msg.status is MessageStatus.FAILED:
            outcome = f"failed: {error}" if error else "failed"
        elif msg.status is MessageStatus.DEFERRED:
            outcome = f"not yet delivered, next try {_when(msg.next_attempt_at)}" + (f" ({error})" if error else "")
        elif msg.status is MessageStatus.CANCELLED:
            outcome = "cancelled: will not be sent"
        elif msg.status is MessageStatus.SENDING:
            outcome = "being sent now"
        else:
            outcome = "waiting in the queue"
        lines.append(f"  {rcpt} — {outcome}")
    return lines


def _header_lines(parsed: EmailMessage, added: set[str], task: Task | None, others: bool = True) -> list[str]:
    names = [n for n in SHOWN_HEADERS if parsed.get(n) is not None]
    if others:
        names += [n for n in dict.fromkeys(parsed.keys()) if n.title() not in {h.title() for h in SHOWN_HEADERS}]
    lines = []
    for name in names:
        for value in parsed.get_all(name, []):
            note = f"    (added at send time from task {task.name})" if task and name.lower() in added else ""
            lines.append(f"{name}: {value}{note}")
    if parsed.get("Date") is None:
        lines.append("Date: none in the message — the receiving server adds the time it arrives")
    return lines


def message_text(msg: StoredMessage, raw: bytes | None, task: Task | None = None) -> str:
    """What "Show message" displays: the message as the recipients see it, then each recipient's outcome.

    ``task``: the task that sent it (or would send it): its sender and Reply-To are added at send time
    to a message without From or Reply-To, exactly as the engine adds them.
    """
    lines = [
        f"Message {msg.id} — {msg.status.value}",
        f"Task: {msg.task or (task.name + ' (not sent yet)' if task else '(not sent yet)')}    "
        f"Tag: {msg.tag or '—'}    Attempts: {msg.attempts}",
        f"Queued at: {_when(msg.created_at)}    Sent at: {_when(msg.sent_at) or '—'}",
    ]
    if msg.last_error and msg.status is not MessageStatus.SENT:
        code = f"{msg.last_error_code} " if msg.last_error_code else ""
        lines.append(f"Error: {code}{msg.last_error}")
    if msg.server_reply:
        lines.append(f"Server reply: {msg.server_reply}")
    lines += ["", "— Recipients —", *recipient_lines(msg), ""]
    if raw is None:
        lines.append("(the message body is not available)")
        return "\n".join(lines)
    return "\n".join(lines + recipient_view(raw, task))


def recipient_view(raw: bytes, task: Task | None = None, all_headers: bool = True) -> list[str]:
    """The headers, text and attachments (with sizes) of MIME bytes, as the recipients see them.

    ``task``: its sender and Reply-To are added to a message without From or Reply-To, as at send time.
    ``all_headers``: False shows only the headers a mail program shows (SHOWN_HEADERS), not MIME-Version etc.
    """
    before = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    if task is not None:
        raw = with_sender_headers(raw, task.smtp.sender, task.smtp.reply_to)
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    added = {n for n in ("from", "reply-to") if before.get(n) is None and parsed.get(n) is not None}
    headers = _header_lines(parsed, added, task, all_headers)
    lines = ["— Headers, as the recipients see them —", *headers, "", "— Text —"]
    body = parsed.get_body(preferencelist=("plain", "html"))
    try:
        lines.append(normalise_lines(str(body.get_content())).rstrip("\n") if body is not None else "(no text part)")
    except (LookupError, ValueError):
        lines.append("(the text part cannot be decoded)")
    attachments = list(parsed.iter_attachments())
    if attachments:
        lines += ["", "— Attachments —"]
        for part in attachments:
            data = part.get_payload(decode=True)
            size = len(data) if isinstance(data, bytes) else 0
            lines.append(f"  {part.get_filename() or '(no name)'} — {size_text(size)}")
    return lines


class MessageView(AppToplevel):
    """One message, read-only."""

    def __init__(self, master: Any, msg: StoredMessage, text: str) -> None:
        super().__init__(master)
        self.title(f"Message {msg.id} — {msg.subject or '(no subject)'}")
        self.geometry("760x560")
        self.transient(master)
        self.text = ReadOnlyText(self, font=ctk.CTkFont(family="TkFixedFont", size=12), wrap="word")
        self.text.pack(fill="both", expand=True, padx=PAD, pady=(PAD, 8))
        self.text.set(text)
        ctk.CTkButton(self, text="Close", width=100, command=self.destroy).pack(side="right", padx=PAD, pady=(0, PAD))
        self.bind("<Escape>", lambda _e: self.destroy())
        self.later(200, self.lift)

    def destroy(self) -> None:
        self.cancel_later()
        super().destroy()

"""Desktop notifications with one notification per incident, delivered off the Tk thread."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from automail.errors import FaultKind
from automail.models import EngineEvent, EventKind, TaskState

log = logging.getLogger(__name__)

APP_NAME = "AutoMail"
UNREACHABLE_GRACE_S = 3 * 60  # "server unreachable" is only worth a notification if it lasts
FAILED_WINDOW_S = 8.0  # permanent failures are collected this long, then reported as one
# pystray's win32 backend copies title and text into NOTIFYICONDATAW's fixed WCHAR buffers
# (szInfoTitle[64], szInfo[256], NUL included): anything longer raises ValueError there.
WIN32_TITLE_LIMIT = 63
WIN32_TEXT_LIMIT = 255


@dataclass
class _Batch:
    first_at: float
    count: int = 0
    recipients: list[str] = field(default_factory=list)
    last_reason: str = ""
    mailings: list[str] = field(default_factory=list)


class Notifier:
    """Decide what deserves a notification (de-duplicated, aggregated) and send it.

    Feed it engine events with ``on_event`` (Tk thread) and call ``tick()`` now and then
    (the app does, every few seconds) to flush aggregated failures and delayed incidents.
    Delivery is a callable ``deliver(title, text)``; by default a background thread that tries
    pystray's own notify, then D-Bus (jeepney), then notify-send.
    """

    def __init__(
        self,
        deliver: Callable[[str, str], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        unreachable_grace_s: float = UNREACHABLE_GRACE_S,
        failed_window_s: float = FAILED_WINDOW_S,
    ) -> None:
        self._deliver = deliver or Delivery().send
        self.clock = clock
        self.unreachable_grace_s = unreachable_grace_s
        self.failed_window_s = failed_window_s
        self._finished: set[tuple[str, str, float | None]] = set()  # (company, mailing, end) already reported
        self._incidents: dict[str, str] = {}  # task -> incident key already notified
        self._pending_unreachable: dict[str, tuple[float, str]] = {}  # task -> (since, reason)
        self._in_error: dict[str, str] = {}  # task -> incident key of the current error
        self._batches: dict[str, _Batch] = {}
        self.sent: list[tuple[str, str]] = []

    # ---- input --------------------------------------------------------------------
    def on_event(self, event: EngineEvent) -> None:
        if event.kind is EventKind.STATE_CHANGED:
            self._on_state(event)
        elif event.kind is EventKind.FAILED:
            batch = self._batches.get(event.task)
            if batch is None:
                batch = self._batches[event.task] = _Batch(self.clock())
            batch.count += 1
            batch.recipients.extend(r for r in event.recipients if r not in batch.recipients)
            batch.last_reason = event.detail
            if event.mailing and event.mailing not in batch.mailings:
                batch.mailings.append(event.mailing)
        elif event.kind is EventKind.QUEUE_DRAINED:
            self._flush_failed(event.task)
        elif event.kind in (EventKind.MAILING_FINISHED, EventKind.MAILING_CANCELLED) and event.progress is not None:
            # A mailing's end is the news (not a task's queue running dry); two tasks sharing a
            # mailing may both see its end: it is said once.
            key = (event.company.casefold(), event.mailing.casefold(), event.progress.ended_at)
            if key not in self._finished:  # the same end (a retried mailing ends again: news again)
                self._finished.add(key)
                self._flush_failed(event.task)
                title = "Mailing cancelled" if event.kind is EventKind.MAILING_CANCELLED else "Mailing finished"
                self._notify(title, f"Mailing {event.progress.end_text()}")
        self.tick()

    def _on_state(self, event: EngineEvent) -> None:
        task = event.task
        if event.state is not TaskState.ERROR:
            # The incident is over: the next error is a new one.
            self._in_error.pop(task, None)
            self._incidents.pop(task, None)
            self._pending_unreachable.pop(task, None)
            return
        key = f"{event.fault}|{_reason_key(event.detail)}"
        self._in_error[task] = key
        if self._incidents.get(task) == key:
            return  # same incident (e.g. the backoff changed the text only)
        if event.fault is FaultKind.TASK_RETRY:
            since = self._pending_unreachable.get(task, (self.clock(), ""))[0]
            self._pending_unreachable[task] = (since, event.detail)
            return
        self._pending_unreachable.pop(task, None)
        self._incidents[task] = key
        self._notify(f"Task “{task}” stopped", _plain(event.detail))

    # ---- time -------------------------------------------------------------------------
    def tick(self) -> None:
        """Send what became due: unreachable servers past the grace time, aggregated failures."""
        now = self.clock()
        for task, (since, reason) in list(self._pending_unreachable.items()):
            if now - since >= self.unreachable_grace_s:
                del self._pending_unreachable[task]
                self._incidents[task] = self._in_error.get(task, "")
                minutes = max(1, int((now - since) // 60))
                self._notify(f"Task “{task}” cannot reach its server", f"For {minutes} min: {_plain(reason)}")
        for task, batch in list(self._batches.items()):
            if now - batch.first_at >= self.failed_window_s:
                self._flush_failed(task)

    def _flush_failed(self, task: str) -> None:
        batch = self._batches.pop(task, None)
        if batch is None or batch.count == 0:
            return
        shown = ", ".join(batch.recipients[:3]) + (" …" if len(batch.recipients) > 3 else "")
        noun = "message" if batch.count == 1 else "messages"
        of = ""
        if batch.mailings:
            names = ", ".join(f"'{m}'" for m in batch.mailings[:2]) + (" …" if len(batch.mailings) > 2 else "")
            of = f" of mailing {names}" if len(batch.mailings) == 1 else f" of mailings {names}"
        text = f"{batch.count} {noun}{of} to {shown} failed in task “{task}”."
        if batch.last_reason:
            text += f" Last reason: {_plain(batch.last_reason)}"
        self._notify("E-mails failed", text)

    def _notify(self, title: str, text: str) -> None:
        self.sent.append((title, text))
        try:
            self._deliver(title, text)
        except Exception:
            log.exception("notification failed")


def _reason_key(detail: str) -> str:
    # "… (retrying every 60 s at most)" changes with the backoff; it is the same incident.
    return detail.split(" (retrying every")[0].strip()


def _plain(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Delivery:
    """Send notifications from one worker thread: pystray icon, D-Bus, notify-send, or nothing."""

    def __init__(self, icon: Any = None, *, use_dbus: bool = True, use_notify_send: bool = True) -> None:
        self.icon = icon
        self.use_dbus = use_dbus and sys.platform.startswith("linux")
        self.use_notify_send = use_notify_send
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.method = ""  # what the last delivery used, for tests and the log

    def send(self, title: str, text: str) -> None:
        """Queue a notification (any thread; never blocks)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="automail-notify", daemon=True)
                self._thread.start()
        self._queue.put((title, text))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            title, text = item
            try:
                self.method = self.deliver_now(title, text)
                log.info("notification (%s): %s: %s", self.method or "none", title, text)
            except Exception:
                log.exception("notification failed")

    def deliver_now(self, title: str, text: str) -> str:
        """Deliver synchronously; return the method used ("" = none available)."""
        icon = self.icon
        if icon is not None and getattr(icon, "HAS_NOTIFICATION", False):
            if sys.platform == "win32":  # Windows has no other path: a too-long text would be lost
                title, text = fit_utf16(title, WIN32_TITLE_LIMIT), fit_utf16(text, WIN32_TEXT_LIMIT)
            try:
                icon.notify(text, title)
                return "pystray"
            except Exception:
                log.debug("pystray notify failed", exc_info=True)
        if self.use_dbus and (bus := _session_bus()):
            try:
                dbus_notify(title, text, bus=bus)
                return "dbus"
            except Exception:
                log.debug("D-Bus notify failed", exc_info=True)
        if self.use_notify_send and shutil.which("notify-send"):
            try:
                subprocess.run(
                    ["notify-send", "--app-name", APP_NAME, title, text],
                    timeout=10,
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                return "notify-send"
            except Exception:
                log.debug("notify-send failed", exc_info=True)
        return ""


def fit_utf16(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 code units (what a WCHAR buffer holds), ending in "…"."""
    if len(text.encode("utf-16-le")) // 2 <= limit:
        return text
    out, used = [], 1  # the "…" takes one unit
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
        out.append(ch)
    return "".join(out).rstrip() + "…"


def _session_bus() -> str:
    """The session bus address: $DBUS_SESSION_BUS_ADDRESS, else systemd's per-user socket, else ""."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    path = f"/run/user/{os.getuid()}/bus" if hasattr(os, "getuid") else ""
    return f"unix:path={path}" if path and os.path.exists(path) else ""


def dbus_notify(title: str, text: str, timeout_ms: int = -1, bus: str = "SESSION") -> int:
    """Call org.freedesktop.Notifications.Notify on the session bus; return the notification id."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    address = DBusAddress(
        "/org/freedesktop/Notifications",
        bus_name="org.freedesktop.Notifications",
        interface="org.freedesktop.Notifications",
    )
    msg = new_method_call(
        address,
        "Notify",
        "susssasa{sv}i",
        (APP_NAME, 0, "", title, text, [], {}, timeout_ms),
    )
    with open_dbus_connection(bus=bus) as conn:
        reply = conn.send_and_get_reply(msg, timeout=5)
    if reply.header.message_type.name == "error":
        raise OSError(f"D-Bus Notify failed: {reply.body}")
    return int(reply.body[0])

"""The one place threads cross: any thread posts; the Tk thread drains a queue with after()."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from automail.models import EngineEvent

log = logging.getLogger(__name__)

BUSY_MS = 60  # drain interval while items arrive
IDLE_MS = 400  # interval after IDLE_AFTER_S without items: an idle app must stay < 1 % CPU
IDLE_AFTER_S = 1.0

EventHandler = Callable[[EngineEvent], None]


class Bridge:
    """Deliver callables and engine events from any thread to the Tk thread.

    ``post`` never touches Tk (Tk is not thread-safe, customtkinter#1006): it only puts on a
    SimpleQueue. The Tk thread polls it with ``root.after`` — every BUSY_MS while items arrive,
    every IDLE_MS once nothing came for IDLE_AFTER_S.
    """

    def __init__(self, root: Any, *, busy_ms: int = BUSY_MS, idle_ms: int = IDLE_MS) -> None:
        self.root = root
        self.busy_ms = busy_ms
        self.idle_ms = idle_ms
        self._queue: queue.SimpleQueue[Callable[[], None] | EngineEvent] = queue.SimpleQueue()
        self._handlers: list[EventHandler] = []
        self._last_item = 0.0
        self._after_id: str | None = None
        self._closed = False
        self.tk_thread = threading.current_thread()

    # ---- any thread --------------------------------------------------------------
    def post(self, item: Callable[[], None] | EngineEvent) -> None:
        """Queue a callable to run on the Tk thread, or an engine event for the handlers."""
        if not self._closed:
            self._queue.put(item)

    def sink(self, event: EngineEvent) -> None:
        """An EventSink for ``Service.subscribe``: runs on the engine thread, only posts."""
        self.post(event)

    # ---- Tk thread ---------------------------------------------------------------
    def add_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` on the Tk thread for every posted engine event."""
        self._handlers.append(handler)

    def start(self) -> None:
        """Begin draining (call on the Tk thread, before or in mainloop)."""
        self.tk_thread = threading.current_thread()
        self._schedule(self.busy_ms)

    def close(self) -> None:
        """Stop draining; later posts are dropped."""
        self._closed = True
        if self._after_id is not None:
            try:
                self.root.after_cancel(self._after_id)
            except Exception:
                pass
            self._after_id = None

    def drain(self, limit: int = 500) -> int:
        """Run up to ``limit`` queued items now (Tk thread); return how many ran."""
        count = 0
        while count < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            count += 1
            try:
                if isinstance(item, EngineEvent):
                    for handler in list(self._handlers):
                        try:
                            handler(item)
                        except Exception:
                            log.exception("UI handler failed for event %s", item.kind)
                else:
                    item()
            except Exception:
                log.exception("UI callback failed")
        return count

    def _tick(self) -> None:
        self._after_id = None
        if self._closed:
            return
        now = time.monotonic()
        if self.drain():
            self._last_item = now
        idle = now - self._last_item > IDLE_AFTER_S
        self._schedule(self.idle_ms if idle else self.busy_ms)

    def _schedule(self, ms: int) -> None:
        if self._closed:
            return
        try:
            self._after_id = self.root.after(ms, self._tick)
        except Exception:  # the root was destroyed
            self._closed = True

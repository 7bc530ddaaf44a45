"""The tray icon: pystray in a daemon thread; its menu only posts to the bridge."""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from automail.models import EngineEvent, TaskState
from automail.paths import log_dir

from . import icons
from .bridge import Bridge

log = logging.getLogger(__name__)

TITLE_LIMIT = 63  # Windows truncates tooltips at 64 characters
STATE_TEXT = {"stopped": "Stopped", "running": "Running", "waiting": "Waiting", "error": "Error"}
REFRESH_AFTER_EVENT_S = 1.0  # status() costs a few queries: refresh at most this often while sending
REDOCK_EVERY_S = 1.5  # how often an icon no tray host has embedded asks again (xorg)


class _OnceFilter(logging.Filter):
    """Let pystray's "Failed to dock icon" (with its traceback) through once, not at every retry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        if self.seen:
            return False
        self.seen = True
        return True


@dataclass
class Entry:
    """One menu entry, independent of pystray so the menu can be tested without a tray."""

    text: str | Callable[[], str]
    action: Callable[[], None] | None = None
    checked: Callable[[], bool] | None = None
    default: bool = False
    submenu: Callable[[], Sequence[Entry]] | None = None
    separator: bool = False

    def label(self) -> str:
        return self.text() if callable(self.text) else self.text


@dataclass
class TraySnapshot:
    """What the menu and tooltip show; written on the Tk thread, read by pystray's thread."""

    state: str = "stopped"
    engine_running: bool = False
    tasks: list[tuple[str, bool]] = field(default_factory=list)  # (name, enabled)
    queued: int = 0
    sent_last_hour: int = 0
    error_task: str = ""


class Tray:
    """The tray icon with state colours, tooltip and menu.

    ``open_window``, ``open_outbox`` and ``quit`` run on the Tk thread (posted via the bridge).
    Pass ``icon_factory`` (name, image, title, menu) -> icon to use a fake icon in tests.
    """

    def __init__(
        self,
        service: Any,
        bridge: Bridge,
        *,
        open_window: Callable[[], None],
        open_outbox: Callable[[], None],
        quit: Callable[[], None],
        refresh_ui: Callable[[], None] = lambda: None,
        icon_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.service = service
        self.bridge = bridge
        self._open_window = open_window
        self._open_outbox = open_outbox
        self._quit = quit
        self._refresh_ui = refresh_ui
        self._icon_factory = icon_factory
        self.images = icons.tray_icons(64)
        self.snapshot = TraySnapshot()
        self.icon: Any = None
        self.error = ""  # why there is no tray icon, if there is none
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._last_refresh = 0.0
        self._last_redock = 0.0
        self._dirty = False

    # ---- menu ---------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """The menu: Open (default), Start/Stop server, Tasks ▸, Open outbox, Open log folder, Quit."""
        return [
            Entry("Open AutoMail", lambda: self.bridge.post(self._open_window), default=True),
            Entry(
                lambda: "Stop server" if self.snapshot.engine_running else "Start server",
                lambda: self.bridge.post(self.toggle_server),
            ),
            Entry("Tasks", submenu=self._task_entries),
            Entry("Open outbox", lambda: self.bridge.post(self._open_outbox)),
            Entry("Open log folder", lambda: self.bridge.post(self.open_log_folder)),
            Entry("", separator=True),
            Entry("Quit", lambda: self.bridge.post(self._quit)),
        ]

    def _task_entries(self) -> list[Entry]:
        if not self.snapshot.tasks:
            return [Entry("(no task on this computer)")]
        return [
            Entry(
                name,
                (lambda n=name: self.bridge.post(lambda: self.toggle_task(n))),
                checked=(lambda n=name: dict(self.snapshot.tasks).get(n, False)),
            )
            for name, _enabled in self.snapshot.tasks
        ]

    # ---- actions (Tk thread) --------------------------------------------------------
    def toggle_server(self) -> None:
        """Start the engine, or stop it in a worker thread (it finishes the message in flight)."""
        if self.service.engine_running:

            def stop() -> None:
                self.service.stop_engine(timeout=10)
                self.bridge.post(self.refresh)

            threading.Thread(target=stop, name="automail-stop-engine", daemon=True).start()
        else:
            self.service.start_engine()
            self.refresh()

    def toggle_task(self, name: str) -> None:
        enabled = dict(self.snapshot.tasks).get(name, False)
        try:
            if enabled:
                self.service.stop_task(name)
            else:
                self.service.start_task(name)
        except Exception:
            log.exception("cannot toggle task %s from the tray", name)
        self.refresh()
        self._refresh_ui()

    def open_log_folder(self) -> None:
        open_folder(log_dir(self.service.home))

    # ---- state (Tk thread) -----------------------------------------------------------
    def on_event(self, event: EngineEvent) -> None:
        """Bridge handler: state changes refresh now, message events at most once a second."""
        if event.kind in ("state_changed", "engine_started", "engine_stopped"):
            self.refresh()
        else:
            self._dirty = True
            self.refresh_if_due()

    def refresh_if_due(self, max_age_s: float = REFRESH_AFTER_EVENT_S) -> None:
        if time.monotonic() - self._last_refresh >= max_age_s or (
            self._dirty and time.monotonic() - self._last_refresh >= REFRESH_AFTER_EVENT_S
        ):
            self.refresh()

    def refresh(self) -> None:
        """Re-read tasks and status from the service and update icon, tooltip and menu."""
        self._last_refresh = time.monotonic()
        self._dirty = False
        try:
            local = self.service.local_tasks()
            statuses = self.service.status(tasks=local)
        except Exception:
            log.exception("tray refresh failed")
            return
        running = bool(self.service.engine_running)
        snap = TraySnapshot(
            engine_running=running,
            tasks=[(t.name, t.enabled) for t in local],
            queued=sum(s.queued + s.deferred for s in statuses),
            sent_last_hour=sum(s.sent_last_hour for s in statuses),
        )
        states = {s.task: s.state for s in statuses}
        errors = [n for n, st in states.items() if st is TaskState.ERROR]
        if errors:
            snap.state, snap.error_task = "error", errors[0]
        elif not running:
            snap.state = "stopped"
        elif TaskState.WAITING in states.values():
            snap.state = "waiting"
        elif TaskState.RUNNING in states.values():
            snap.state = "running"
        else:
            snap.state = "running" if any(enabled for _, enabled in snap.tasks) else "stopped"
        self.update(snap)

    def update(self, snap: TraySnapshot) -> None:
        """Show ``snap``: icon image by state, tooltip, and the menu's texts and checks."""
        changed_image = snap.state != self.snapshot.state or self.icon is None
        self.snapshot = snap
        icon = self.icon
        if icon is None:
            return
        try:
            if changed_image:
                icon.icon = self.images[snap.state]
            icon.title = self.title()
            icon.update_menu()
        except Exception:
            log.debug("tray update failed", exc_info=True)

    def title(self) -> str:
        """The tooltip: state, queued count, sent in the last hour."""
        snap = self.snapshot
        state = STATE_TEXT[snap.state]
        if snap.error_task:
            state = f"Error in {snap.error_task}"
        text = f"AutoMail: {state}, {snap.queued} queued, {snap.sent_last_hour} sent in 1 h"
        if sys.platform not in ("win32", "darwin"):
            text = latin1_text(text)
        return text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 3] + "..."

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> bool:
        """Create the icon and run it in a daemon thread; False if no tray is possible here."""
        self.refresh()
        try:
            if self._icon_factory is not None:
                self.icon = self._icon_factory(
                    "automail", self.images[self.snapshot.state], self.title(), self.entries()
                )
            else:
                self.icon = _make_pystray_icon(self.images[self.snapshot.state], self.title(), self.entries())
        except Exception as exc:  # no DISPLAY raises Xlib errors, not ImportError (shared notes)
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("no tray icon: %s", self.error)
            self.icon = None
            return False
        self._thread = threading.Thread(target=self._run, name="automail-tray", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        def setup(icon: Any) -> None:
            icon.visible = True
            self._ready.set()

        try:
            self.icon.run(setup=setup)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("tray icon stopped: %s", self.error)
        finally:
            self._ready.set()

    def docked(self) -> bool:
        """Whether the icon is really shown in a tray (xorg: a tray host embedded it)."""
        icon = self.icon
        if icon is None or self.error:
            return False
        if hasattr(icon, "_systray_manager"):  # pystray's xorg backend
            return icon._systray_manager is not None
        return bool(getattr(icon, "visible", True))

    def redock(self, now: float | None = None) -> bool:
        """Ask the tray host again to embed an icon it has not embedded (xorg); True once docked.

        pystray asks once, at start (and when its tray host goes away). A tray host that comes up
        a moment later — a panel that starts after the app at login, or is restarted — is never
        asked, and the icon stays invisible. Call this every few seconds (Tk thread); it asks at
        most every REDOCK_EVERY_S and only while the icon is not docked.
        """
        icon = self.icon
        if icon is None or self.error or not hasattr(icon, "_systray_manager"):
            return self.docked()
        if icon._systray_manager is not None:
            return True
        now = time.monotonic() if now is None else now
        alive = self._thread is not None and self._thread.is_alive() and self._ready.is_set()
        if not alive or now - self._last_redock < REDOCK_EVERY_S:
            return False
        self._last_redock = now
        try:
            icon._show()  # pystray runs it on the icon's thread: query the tray owner, request docking
        except Exception:
            log.debug("asking the tray host to embed the icon failed", exc_info=True)
        if icon._systray_manager is not None:
            log.info("the tray icon is docked now")
            return True
        return False

    def stop(self) -> None:
        """Remove the icon (first step of Quit, pystray#143)."""
        icon, self.icon = self.icon, None
        if icon is None:
            return
        try:
            icon.stop()
        except Exception:
            log.debug("tray stop failed", exc_info=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3)
        dispatch = getattr(icon, "_automail_dispatch", None)
        if dispatch is not None:
            dispatch.close()


def latin1_text(text: str) -> str:
    """Text the xorg backend can set as WM_NAME: it encodes Latin-1 only, and a task named
    "Faktúry č. 5" would otherwise raise UnicodeEncodeError in pystray's own thread."""
    if all(ord(c) < 256 for c in text):
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.encode("latin-1", "replace").decode("latin-1")


def menu_text(text: str) -> str:
    """A menu item's text as the platform shows it: Windows menus take "&" as a mnemonic marker,
    so a task named "Smith & Co" would read "Smith  Co"; "&&" shows one "&"."""
    return text.replace("&", "&&") if sys.platform == "win32" else text


def _make_pystray_icon(image: Any, title: str, entries: Sequence[Entry]) -> Any:
    import pystray  # lazily: without a display this raises Xlib errors (shared notes)

    # pystray counts parameters (defaults included) to decide how to call a callback, so the
    # callbacks are closures made by these helpers, never lambdas with default arguments.
    def text_of(e: Entry) -> Any:
        return (lambda _item: menu_text(e.label())) if callable(e.text) else menu_text(e.label())

    def checked_of(e: Entry) -> Any:
        check = e.checked
        return None if check is None else (lambda _item: bool(check()))

    def action_of(e: Entry) -> Any:
        act = e.action
        return None if act is None else (lambda _icon, _item: act())

    def submenu_of(e: Entry) -> Any:
        sub = e.submenu
        assert sub is not None
        return pystray.Menu(lambda: convert(sub()))

    def convert(items: Sequence[Entry]) -> list[Any]:
        out: list[Any] = []
        for e in items:
            if e.separator:
                out.append(pystray.Menu.SEPARATOR)
            elif e.submenu is not None:
                out.append(pystray.MenuItem(text_of(e), submenu_of(e)))
            else:
                out.append(
                    pystray.MenuItem(
                        text_of(e),
                        action_of(e),
                        checked=checked_of(e),
                        default=e.default,
                        enabled=e.action is not None,
                    )
                )
        return out

    icon = pystray.Icon("automail", image, title, pystray.Menu(*convert(entries)))
    if hasattr(icon, "_systray_manager"):  # the xorg backend
        _enable_xorg_click(icon)
        _quiet_dock_failures(icon)
        icon._automail_dispatch = _XorgDispatch(icon)
        icon._automail_dispatch.install()
    return icon


class _XorgDispatch:
    """Hand icon updates from other threads to pystray's thread over an X connection of their own.

    pystray's xorg backend runs ``icon.icon = …``, ``icon.title = …``, ``_show`` and ``stop``
    from another thread by sending a ClientMessage to its own window on the icon's Display,
    which its thread is reading at the same time. python-xlib loses a wake-up when two threads
    share a connection (a thread that flushes while the other waits for a reply returns
    without waking it): the icon's thread then waits for ever, and so does the caller — the
    Tk thread, so the whole app freezes. Updating the icon 2,000 times from one thread hung
    within 40–400 updates here. The message goes over this class's own connection instead;
    callers are serialized, since pystray hands results back through one shared queue.
    """

    METHODS = ("_show", "_hide", "_update_icon", "_update_title", "_stop")
    RESULT_TIMEOUT_S = 5.0

    def __init__(self, icon: Any) -> None:
        self.icon = icon
        self._lock = threading.Lock()
        self._display: Any = None
        self._direct: dict[str, Callable[[], None]] = {}

    def install(self) -> None:
        for name in self.METHODS:
            # pystray's own dispatcher: it runs the method directly when called on the icon's thread
            self._direct[name] = getattr(self.icon, name)
            setattr(self.icon, name, self._dispatcher(name))

    def _dispatcher(self, name: str) -> Callable[[], None]:
        def dispatch() -> None:
            icon_thread = getattr(self.icon, "_thread", None)
            if icon_thread is None or threading.current_thread() is icon_thread:
                self._direct[name]()  # not running yet, or on the icon's thread: pystray calls it
            else:
                self._send(name)

        return dispatch

    def _send(self, name: str) -> None:
        import Xlib.display
        import Xlib.protocol.event
        import Xlib.X

        with self._lock:
            if self._display is None:
                self._display = Xlib.display.Display()
            display = self._display
            results = self.icon._queue
            while not results.empty():  # a late answer to a call that timed out
                results.get_nowait()
            atom = display.intern_atom(f"_PYSTRAY_{name.upper()}")  # pystray's name for the method
            window = display.create_resource_object("window", self.icon._window.id)
            message = Xlib.protocol.event.ClientMessage(
                window=window, client_type=atom, data=(32, (Xlib.X.CurrentTime, 0, 0, 0, 0))
            )
            display.send_event(window, message, event_mask=Xlib.X.NoEventMask)
            display.flush()
            try:
                result = results.get(timeout=self.RESULT_TIMEOUT_S)
            except queue.Empty:
                log.warning("the tray icon did not answer %s within %.0f s", name, self.RESULT_TIMEOUT_S)
                return
        if result is not True:
            raise result[1]

    def close(self) -> None:
        with self._lock:
            display, self._display = self._display, None
        if display is not None:
            try:
                display.close()
            except Exception:
                log.debug("closing the tray's X connection failed", exc_info=True)


def _quiet_dock_failures(icon: Any) -> None:
    """Tray.redock retries docking every few seconds; pystray logs each failure with a traceback."""
    logger = getattr(icon, "_log", None)
    if isinstance(logger, logging.Logger) and not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())


def _enable_xorg_click(icon: Any) -> None:
    """pystray's xorg backend never selects ButtonPress, so a click does nothing (pystray#151).

    Adding ButtonPressMask to the icon window's event mask makes a left click run the default
    menu item (Open AutoMail). The window exists right after Icon() was created.
    """
    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    if window is None or display is None:
        return
    try:
        import Xlib.X

        window.change_attributes(event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask)
        display.flush()
    except Exception:
        log.warning("could not enable clicks on the tray icon", exc_info=True)


def open_folder(path: Any) -> None:
    """Open a folder in the desktop's file manager, without waiting for it."""
    os.makedirs(path, exist_ok=True)
    try:
        if sys.platform == "win32":
            os.startfile(path)  # type: ignore[attr-defined]
        elif sys.platform == "darwin":
            subprocess.Popen(["open", str(path)])
        else:
            subprocess.Popen(["xdg-open", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        log.warning("cannot open %s", path, exc_info=True)

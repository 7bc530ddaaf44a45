"""The tray icon: pystray in a daemon thread; its menu only posts to the bridge."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from automail.models import EngineEvent, EventKind, TaskState
from automail.paths import log_dir

from . import icons
from .bridge import Bridge

if TYPE_CHECKING:
    from automail.engine.service import Service

log = logging.getLogger(__name__)

TITLE_LIMIT = 63  # Windows truncates tooltips at 64 characters
STATE_TEXT = {"stopped": "Stopped", "running": "Running", "waiting": "Waiting", "error": "Error"}
REFRESH_AFTER_EVENT_S = 1.0  # status() costs a few queries: refresh at most this often while sending
REDOCK_EVERY_S = 1.5  # how often an icon no tray host has embedded asks again (xorg)


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
        service: Service,
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
        self._popup: Any = None  # the Tk popup menu of the last right click (xorg)

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
        return [self._task_entry(name) for name, _enabled in self.snapshot.tasks]

    def _task_entry(self, name: str) -> Entry:
        return Entry(
            name,
            lambda: self.bridge.post(lambda: self.toggle_task(name)),
            checked=lambda: dict(self.snapshot.tasks).get(name, False),
        )

    # ---- actions (Tk thread) --------------------------------------------------------
    def toggle_server(self) -> None:
        """Start the engine, or stop it in a worker thread (it finishes the message in flight)."""
        if self.service.engine_running:

            def stop() -> None:
                self.service.stop_engine()
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

    def context_menu(self, x: int, y: int) -> None:
        """A right click on an icon whose backend has no menu (xorg): the menu as a Tk popup at (x, y)."""
        self.bridge.post(lambda: self.popup_menu(x, y))

    def popup_menu(self, x: int, y: int) -> None:
        from . import tray_menu

        if self._popup is not None:
            self._popup.destroy()
        self.refresh()  # the texts and checks as they are now
        self._popup = tray_menu.popup(self.bridge.root, self.entries(), x, y)

    # ---- state (Tk thread) -----------------------------------------------------------
    def on_event(self, event: EngineEvent) -> None:
        """Bridge handler: state changes refresh now, message events at most once a second."""
        if event.kind in (EventKind.STATE_CHANGED, EventKind.ENGINE_STARTED, EventKind.ENGINE_STOPPED):
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
                self.icon = _make_pystray_icon(
                    self.images[self.snapshot.state], self.title(), self.entries(), on_context_menu=self.context_menu
                )
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
        """Whether the icon is really shown in a tray (xorg: a tray host embedded and mapped it)."""
        icon = self.icon
        if icon is None or self.error:
            return False
        if hasattr(icon, "embedded"):  # the xorg icon: what the tray host did, not what was asked
            return bool(icon.embedded)
        return bool(getattr(icon, "visible", True))

    def redock(self, now: float | None = None) -> bool:
        """Ask the tray host again to embed an icon it has not embedded (xorg); True once docked.

        pystray asks once, at start (and when its tray host goes away). A tray host that comes up
        a moment later — a panel that starts after the app at login, or is restarted — or one
        that ignored the request is never asked again, and the icon stays invisible. Call this
        every few seconds (Tk thread); it asks at most every REDOCK_EVERY_S and only while no
        tray host holds the icon.
        """
        icon = self.icon
        if icon is None or self.error or not hasattr(icon, "embedded"):
            return self.docked()
        if icon.embedded:
            return True
        now = time.monotonic() if now is None else now
        alive = self._thread is not None and self._thread.is_alive() and self._ready.is_set()
        if not alive or now - self._last_redock < REDOCK_EVERY_S:
            return False
        self._last_redock = now
        try:
            icon._show()  # runs on the icon's thread: find the tray host, ask it to embed the icon
        except Exception:
            log.debug("asking the tray host to embed the icon failed", exc_info=True)
        return bool(icon.embedded)

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
        close_dispatch = getattr(icon, "close_dispatch", None)  # the xorg icon's own X connection
        if close_dispatch is not None:
            close_dispatch()


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


def _make_pystray_icon(
    image: Any, title: str, entries: Sequence[Entry], on_context_menu: Callable[[int, int], None] | None = None
) -> Any:
    """A pystray icon with ``entries`` as its menu; ``on_context_menu(x, y)``: a right click where
    the backend has no menu (xorg)."""
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

    menu = pystray.Menu(*convert(entries))
    if pystray.Icon.__module__ == "pystray._xorg":  # no PyGObject: the xorg backend, with our fixes
        from .xorg_tray import XorgIcon

        return XorgIcon("automail", image, title, menu, on_context_menu=on_context_menu)
    return pystray.Icon("automail", image, title, menu)


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

"""pystray's xorg tray icon (Linux without PyGObject), with the fixes AutoMail needs.

Checked against pystray 0.19.5 (pinned in pyproject.toml). This subclass relies on these
internals of ``pystray._xorg.Icon``; ``PYSTRAY_INTERNALS`` lists them and a test checks them:

- ``_display``, ``_window``, ``_create_window``: the icon's X connection and window;
- ``_systray_manager``, ``_net_system_tray_opcode``, ``_get_systray_manager``, ``_send_message``:
  finding the tray host and asking it to embed the window (XEMBED system tray protocol);
- ``_message_handlers``, ``_on_button_press``, ``_on_destroy_notify``: the event loop's dispatch;
- ``_icon_data``, ``_icon_valid``, ``_draw``: the scaled image and painting it;
- ``_thread``, ``_queue`` and the ``_PYSTRAY_<METHOD>`` ClientMessage atoms of
  ``_rewrite_implementation``: how pystray runs ``_show``, ``_update_icon``… on its own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import pystray._xorg as _xorg
import Xlib.display
import Xlib.protocol.event
import Xlib.X

log = logging.getLogger(__name__)

PYSTRAY_CHECKED = "0.19.5"
PYSTRAY_INTERNALS = (
    "_create_window", "_get_systray_manager", "_send_message", "_on_button_press", "_on_destroy_notify",
    "_draw", "_rewrite_implementation", "_show", "_hide", "_update_icon", "_update_title", "_stop",
)  # fmt: skip
# and "_thread", once the icon runs
PYSTRAY_ATTRIBUTES = (
    "_display", "_window", "_systray_manager", "_net_system_tray_opcode", "_SYSTEM_TRAY_REQUEST_DOCK",
    "_message_handlers", "_icon_data", "_icon_valid", "_queue",
)  # fmt: skip

ContextMenu = Callable[[int, int], None]


class XorgIcon(_xorg.Icon):  # type: ignore[misc]
    """pystray's xorg icon that stays 24 px wide, knows whether it is really docked, and clicks.

    - pystray asks the tray host to dock the icon again on every image change; after a few of
      them trayer shrinks the icon to 1 px for good (issue 11). Here an image change repaints the
      window in place, and the icon asks to be docked only while no tray host has embedded it.
    - pystray counts the icon as docked as soon as it has sent the request (issue 11, item 14): a
      tray host that ignored it left the app invisible. ``embedded`` is what the tray host did:
      the window reparented away from the root window, and mapped.
    - pystray never selects ButtonPress, so clicks did nothing (pystray#151). A left click runs
      the default menu item, a right click calls ``on_context_menu(x, y)`` (root coordinates):
      this backend has no menu of its own (tray_menu.py shows one).
    """

    def __init__(self, *args: Any, on_context_menu: ContextMenu | None = None, **kwargs: Any) -> None:
        self._on_context_menu = on_context_menu
        self._parent_id = 0  # the window holding ours: the root window, or the tray host's socket
        self._mapped = False
        self._told_no_host = False
        super().__init__(*args, **kwargs)
        self._root_id = self._display.screen().root.id
        self._parent_id = self._root_id
        self._message_handlers[Xlib.X.ButtonRelease] = self._on_button_release
        self._message_handlers[Xlib.X.ReparentNotify] = self._on_reparent_notify
        self._message_handlers[Xlib.X.MapNotify] = self._on_map_notify
        self._message_handlers[Xlib.X.UnmapNotify] = self._on_unmap_notify
        self._automail_dispatch = _XorgDispatch(self)
        self._automail_dispatch.install()

    @property
    def embedded(self) -> bool:
        """A tray host holds the icon: its window was reparented into the tray and is mapped."""
        return self._parent_id != self._root_id and self._mapped

    def close_dispatch(self) -> None:
        """Close the X connection used for calls from other threads (after ``stop``)."""
        self._automail_dispatch.close()

    # ---- pystray's implementation methods (run on the icon's thread) ----------------------
    def _create_window(self) -> Any:
        window = super()._create_window()
        clicks = Xlib.X.ButtonPressMask | Xlib.X.ButtonReleaseMask
        window.change_attributes(event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | clicks)
        return window

    def _show(self) -> None:
        """Ask the tray host to embed the icon, unless one holds (or is taking) it already."""
        if self._parent_id != self._root_id:
            return  # embedded, or reparented and about to be mapped: asking again confuses trayer
        manager = self._get_systray_manager()
        if manager is None:
            if not self._told_no_host:
                log.info("no tray host (system tray) on this display yet: the icon docks when one appears")
                self._told_no_host = True
            self._systray_manager = None
            return
        self._told_no_host = False
        self._send_message(manager, self._net_system_tray_opcode, self._SYSTEM_TRAY_REQUEST_DOCK, self._window.id)
        manager.change_attributes(event_mask=Xlib.X.StructureNotifyMask)  # DestroyNotify when it goes
        self._display.flush()
        self._systray_manager = manager

    def _update_icon(self) -> None:
        """Repaint the new image in place; pystray's version asks to be docked again each time."""
        self._icon_data = None
        if self.embedded:
            self._draw()
        self._icon_valid = True

    def _on_button_press(self, event: Any) -> None:
        if event.detail == 1:
            self()

    def _on_button_release(self, event: Any) -> None:
        # On release, not press: a menu opened under a still-pressed button would take the
        # release as a click on whichever entry it popped up under.
        if event.detail == 3 and self._on_context_menu is not None:
            self._on_context_menu(int(event.root_x), int(event.root_y))

    def _on_destroy_notify(self, event: Any) -> None:
        """The tray host went away: ask whichever takes its place (pystray crashed without one)."""
        manager = self._systray_manager
        if manager is None or event.window.id != manager.id:
            return
        self._systray_manager = None
        self._show()

    def _on_reparent_notify(self, event: Any) -> None:
        if event.window.id == self._window.id:
            self._parent_id = event.parent.id
            if self._parent_id == self._root_id:
                self._mapped = False

    def _on_map_notify(self, event: Any) -> None:
        if event.window.id == self._window.id:
            self._mapped = True

    def _on_unmap_notify(self, event: Any) -> None:
        if event.window.id == self._window.id:
            self._mapped = False


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

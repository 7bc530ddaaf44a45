"""The desktop app: one Tk root, the main window, the tray icon, notifications, single instance."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from automail.models import EngineEvent
from automail.paths import data_dir, resource_path
from automail.signals import stop_signals

from . import instance, theme, win32
from .bridge import Bridge
from .notify import Delivery, Notifier
from .tray import Tray

if TYPE_CHECKING:
    from automail.engine.service import Service

log = logging.getLogger(__name__)

WINDOW_TITLE = "AutoMail – Automatic tasks"
TICK_MS = 2000  # notifier timers and the tray tooltip ("sent in the last hour" ages without events)
TRAY_CHECK_MS = 2500  # after this, an icon no tray host embedded counts as missing


class App:
    """Wires the service, the main window, the tray and the notifier together (Tk thread)."""

    def __init__(
        self, root: Any, service: Service, *, demo: bool = False, icon_factory: Callable[..., Any] | None = None
    ):
        self.root = root
        self.service = service
        self.demo = demo
        self.bridge = Bridge(root)
        self.window = _make_window(root, service, on_quit=self.quit)
        self.tray = Tray(
            service,
            self.bridge,
            open_window=self.show_window,
            open_outbox=lambda: self.window.open_outbox(None),
            quit=self.quit,
            refresh_ui=self.window.refresh,
            icon_factory=icon_factory,
        )
        self.delivery: Delivery | None = None
        self.notifier: Notifier | None = None
        self.demo_server: Any = None
        self.demo_banner: Any = None
        self.guard: instance.SingleInstance | None = None
        self._quitting = False
        self._unsubscribe: Callable[[], None] | None = None
        root.protocol("WM_DELETE_WINDOW", self.close_window)
        # Logoff and shutdown: Windows sends WM_SAVE_YOURSELF (and X session managers may); quit
        # gracefully, so the message in flight is finished and recorded.
        root.protocol("WM_SAVE_YOURSELF", self.end_session)
        root.report_callback_exception = self.report_callback_exception

    # ---- start ------------------------------------------------------------------------
    def start(self) -> None:
        self.bridge.start()
        self.bridge.add_handler(self._on_event)
        self.service.watch_queries(_log_slow_tk_query)  # the Tk thread must never wait on the outbox
        self._unsubscribe = self.service.subscribe(self.bridge.sink)
        tray_ok = self.tray.start()
        self.delivery = Delivery(icon=self.tray.icon)
        self.notifier = Notifier(self.delivery.send)
        if self.demo:
            self._start_demo()
        elif any(t.enabled for t in self.service.local_tasks()):
            # A tray sender should just work: with enabled tasks here, the "server" starts by itself.
            self.service.start_engine()  # its engine_started event refreshes the tray
        first_start = not self.service.companies()
        if self.demo or first_start or not tray_ok:
            self.show_window()
        else:
            self.window.hide()
            self.root.after(TRAY_CHECK_MS, self._check_tray)
        self.root.after(TICK_MS, self._tick)

    def _start_demo(self) -> None:
        from automail.demo import DEMO_COMPANY, RECEIVED, CaptureServer, prepare_demo

        from .demo_banner import DemoBanner

        self.demo_server = CaptureServer(self.service.home / RECEIVED).start()
        prepare_demo(self.service, self.demo_server)
        self.service.start_engine()
        self.window.select_company(DEMO_COMPANY)
        server = self.demo_server
        self.demo_banner = DemoBanner(self.root, server.folder, f"{server.host}:{server.port}")
        self.demo_banner.show_at_top()

    def _check_tray(self) -> None:
        if not self._quitting and not self.tray.docked():
            log.warning(
                "no tray host has embedded the tray icon (none running, or it ignored the request): "
                "showing the window; the icon keeps asking to be docked"
            )
            self.show_window()

    def _tick(self) -> None:
        if self._quitting:
            return
        if self.notifier is not None:
            self.notifier.tick()
        self.tray.redock()
        self.tray.refresh_if_due(30.0)
        self.root.after(TICK_MS, self._tick)

    def _on_event(self, event: EngineEvent) -> None:
        for handler in (self.window.on_event, self.tray.on_event, self.notifier.on_event if self.notifier else None):
            if handler is None:
                continue
            try:
                handler(event)
            except Exception:
                log.exception("handling %s failed", event.kind)

    def end_session(self) -> None:
        """Logoff or shutdown: finish the message in flight before answering; the OS waits for the
        answer (Tk on Windows turns WM_QUERYENDSESSION into this protocol), then quit."""
        log.info("the desktop session ends: stopping the engine")
        try:
            self.service.stop_engine()
        except Exception:
            log.exception("stopping the engine failed")
        self.quit()

    def report_callback_exception(self, exc: type[BaseException], value: BaseException, tb: Any) -> None:
        """An error in a Tk callback: to the log (a windowed build has no stderr) and the status line."""
        log.error("unexpected error in the window", exc_info=(exc, value, tb))
        say = getattr(self.window, "_say", None)
        if say is not None:
            try:
                say(f"Unexpected error ({exc.__name__}): details are in the log (tray › Open log folder).", ok=False)
            except Exception:
                log.debug("cannot show the error in the window", exc_info=True)

    # ---- window -----------------------------------------------------------------------
    def show_window(self) -> None:
        if not self._quitting:
            self.window.show()

    def close_window(self) -> None:
        """The window's close button hides to the tray; without a docked icon it minimizes."""
        if self.tray.docked():
            log.info("window closed: hidden to the tray")
            self.window.hide()
        else:
            log.info("window closed: minimized, as there is no tray icon to bring it back")
            self.root.iconify()

    # ---- quit ----------------------------------------------------------------------------
    def quit(self) -> None:
        """Tray icon away first (pystray#143), engine stopped gracefully, then the Tk root destroyed."""
        if self._quitting:
            return
        self._quitting = True
        log.info("quitting")
        self.tray.stop()
        try:
            self.window.hide()
        except Exception:
            pass

        def stop_engine() -> None:
            try:
                if not self.service.stop_engine():
                    log.warning("the engine did not stop within its shutdown budget")
            except Exception:
                log.exception("stopping the engine failed")
            self.bridge.post(self._destroy)

        # Not on the Tk thread: the message in flight may take seconds and Tk must keep running.
        threading.Thread(target=stop_engine, name="automail-quit", daemon=True).start()

    def _destroy(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.bridge.close()
        if self.delivery is not None:
            self.delivery.close()
        self.root.quit()

    def close(self) -> None:
        """After mainloop: release everything (idempotent)."""
        try:
            self.root.destroy()
        except Exception:
            pass
        if self.demo_server is not None:
            self.demo_server.stop()
            self.demo_server = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        self.service.close()


SLOW_TK_QUERY_S = 0.05  # a query this long on the Tk thread is a visible freeze: log it


def _log_slow_tk_query(sql: str, seconds: float, _cpu: float) -> None:
    if seconds > SLOW_TK_QUERY_S:
        log.warning("outbox query on the Tk thread took %.0f ms: %s", seconds * 1000, " ".join(sql.split())[:200])


def _make_window(root: Any, service: Service, on_quit: Callable[[], None]) -> Any:
    from .main_window import MainWindow  # lazily: a second launch exits before building any widget

    return MainWindow(root, service, on_quit=on_quit)


def make_root() -> Any:
    """The Tk root, withdrawn, with AutoMail's title and icon; customtkinter prepared for Windows."""
    theme.apply()
    win32.prepare_customtkinter()  # before any window exists (CustomTkinter#2810)
    import customtkinter as ctk

    root = ctk.CTk()
    root.title(WINDOW_TITLE)
    root.withdraw()  # shown by App.start when wanted; avoids a flash on a tray-only start
    _set_window_icon(root)
    win32.create_wrapper(root)  # so logoff reaches a window that was never shown
    return root


def _set_window_icon(root: Any) -> None:
    # customtkinter tracks iconbitmap(.ico) only (customtkinter#2663); X11 needs iconphoto.
    try:
        if sys.platform == "win32":
            ico = win32.icon_file()
            root.iconbitmap(ico, default=ico)  # default: plain Tk toplevels get it too
        else:
            import tkinter

            photo = tkinter.PhotoImage(master=root, file=str(resource_path("assets", "automail.png")))
            root.iconphoto(True, photo)
            root._automail_icon = photo  # keep a reference
    except Exception:
        log.debug("window icon not set", exc_info=True)


def run_app(demo: bool = False, first_start: bool = False) -> int:
    """Run the desktop app until Quit, SIGTERM or SIGINT; return the exit code (0).

    ``first_start``: started without a command (a double-click); a built app outside its install
    folder then asks whether to install itself first.
    """
    try:
        if first_start and getattr(sys, "frozen", False):
            from .install_prompt import offer_install

            if offer_install(make_root):
                return 0  # the installed copy runs now
            gc.collect()  # free the prompt's Tcl interpreter on this thread
        return _run(demo)
    finally:
        # Free the Tcl interpreter here, on the main thread, now that _run's frame is gone: if a
        # garbage collection in another thread (tray, notifications) freed it, Tcl would abort
        # the process (Tcl_AsyncDelete).
        gc.collect()


def _run(demo: bool) -> int:
    home = data_dir()
    shown = threading.Event()
    holder: dict[str, App] = {}

    def on_show() -> None:  # from the instance listener thread
        app = holder.get("app")
        if app is not None:
            app.bridge.post(app.show_window)
        shown.set()

    def on_quit() -> None:  # `AutoMail uninstall` or an install over this version
        app = holder.get("app")
        if app is not None:
            app.bridge.post(app.quit)
        quit_asked.set()

    quit_asked = threading.Event()
    guard = instance.claim(home, on_show, on_quit=on_quit)
    if guard is None:
        print("AutoMail is already running: its window was brought to the front.")
        return 0

    from automail.engine.service import Service

    service = Service(home)
    root = make_root()
    app = App(root, service, demo=demo)
    app.guard = guard
    holder["app"] = app
    if shown.is_set():
        app.bridge.post(app.show_window)
    if quit_asked.is_set():
        app.bridge.post(app.quit)

    def on_signal(signum: int, _frame: Any) -> None:
        # Runs between Tk callbacks on the main thread; the bridge's after() loop gives it a chance.
        log.info("signal %s: quitting", signum)
        app.bridge.post(app.quit)

    old = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    try:
        app.start()
        root.mainloop()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        app.close()
    return 0

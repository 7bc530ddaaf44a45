"""Tray icon images, menu actions reaching the service, the app wiring, and the single-instance guard."""

from __future__ import annotations

import gc
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import EngineEvent, EventKind, Task, TaskState
from automail.ui import icons, instance
from automail.ui.bridge import Bridge
from automail.ui.tray import Entry, Tray
from tests import helpers
from tests.conftest import AUTH_USER
from tests.desktop import DesktopSession, missing_tools, wait_for
from tests.smtpd import SmtpServer

# ---- icons ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["stopped", "running", "waiting", "error"])
def test_icon_disc_has_the_state_colour(state: str) -> None:
    img = icons.draw_icon(state, 64).convert("RGBA")
    assert img.size == (64, 64)
    r, g, b, a = img.getpixel((5, 32))  # left edge of the disc, outside the envelope
    expected = icons.STATE_COLORS[state]
    assert a == 255 and max(abs(r - expected[0]), abs(g - expected[1]), abs(b - expected[2])) <= 6
    assert img.getpixel((0, 0))[3] == 0  # transparent corner
    assert img.getpixel((32, 28))[:3] == (255, 255, 255)  # the envelope


def test_error_icon_has_a_white_mark_and_others_do_not() -> None:
    def white_in_badge(state: str) -> int:
        img = icons.draw_icon(state, 64).convert("RGB")
        return sum(1 for x in range(50, 57) for y in range(44, 60) if min(img.getpixel((x, y))) > 230)

    assert white_in_badge("error") >= 8
    assert white_in_badge("running") == 0


def test_state_key_accepts_enum_and_unknown_values() -> None:
    assert icons.state_key(TaskState.WAITING) == "waiting"
    assert icons.state_key(None) == "stopped"
    assert icons.state_key("weird") == "stopped"


def test_write_assets(tmp_path: Path) -> None:
    from PIL import Image

    names = sorted(p.name for p in icons.write_assets(tmp_path))
    assert names == sorted(
        ["automail.ico", "automail.png", "tray-error.png", "tray-running.png", "tray-stopped.png", "tray-waiting.png"]
    )
    with Image.open(tmp_path / "automail.ico") as ico:
        assert (16, 16) in ico.info["sizes"] and (256, 256) in ico.info["sizes"]


# ---- tray menu with a fake icon -----------------------------------------------------------


class FakeRoot:
    """Enough of a Tk root for the bridge when tests drain it by hand."""

    def after(self, ms: int, func: Any) -> str:
        return "after#0"

    def after_cancel(self, ident: str) -> None:
        pass


class FakeIcon:
    HAS_NOTIFICATION = True

    def __init__(self, name: str, image: Any, title: str, menu: list[Entry]) -> None:
        self.name, self.icon, self.title, self.menu = name, image, title, menu
        self.visible = False
        self.menu_updates = 0
        self.notified: list[tuple[str, str]] = []
        self.stopped = threading.Event()

    def run(self, setup: Any = None) -> None:
        if setup:
            setup(self)
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()

    def update_menu(self) -> None:
        self.menu_updates += 1

    def notify(self, message: str, title: str | None = None) -> None:
        self.notified.append((title or "", message))


def make_task(name: str, port: int = 2525, password_user: str = "") -> Task:
    return helpers.make_task(
        name,
        port=port,
        username=password_user,
        sender="Firma <info@firma.sk>",
        allow_insecure_auth=True,
        tags=(name.lower(),),
    )


@pytest.fixture
def service(automail_home: Path) -> Any:
    svc = Service(automail_home)
    svc.add_company("Firma")
    svc.add_task(make_task("Invoices"))
    svc.add_task(make_task("Reminders"))
    yield svc
    svc.close()


class Calls:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> Any:
        return lambda: self.names.append(name)


@pytest.fixture
def tray(service: Service) -> Any:
    calls = Calls()
    bridge = Bridge(FakeRoot())
    t = Tray(
        service,
        bridge,
        open_window=calls("open"),
        open_outbox=calls("outbox"),
        quit=calls("quit"),
        icon_factory=FakeIcon,
    )
    assert t.start()
    t.calls = calls
    yield t
    t.stop()


def by_label(entries: list[Entry], label: str) -> Entry:
    return next(e for e in entries if not e.separator and e.label() == label)


def test_menu_layout_and_default(tray: Tray) -> None:
    labels = [e.label() for e in tray.entries() if not e.separator]
    assert labels == ["Open AutoMail", "Start server", "Tasks", "Open outbox", "Open log folder", "Quit"]
    assert [e.label() for e in tray.entries() if e.default] == ["Open AutoMail"]
    wait_for(lambda: tray.icon.visible, 10, what="setup")


def test_menu_actions_only_post_and_run_on_drain(tray: Tray) -> None:
    for label in ("Open AutoMail", "Open outbox", "Quit"):
        by_label(tray.entries(), label).action()
    assert tray.calls.names == []  # nothing ran on the tray's thread
    tray.bridge.drain()
    assert tray.calls.names == ["open", "outbox", "quit"]


def test_open_log_folder(tray: Tray, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    monkeypatch.setattr("automail.ui.tray.open_folder", opened.append)
    by_label(tray.entries(), "Open log folder").action()
    tray.bridge.drain()
    assert opened == [service.home / "logs"]


def test_start_and_stop_server_from_the_menu(tray: Tray, service: Service) -> None:
    by_label(tray.entries(), "Start server").action()
    tray.bridge.drain()
    assert service.engine_running
    assert by_label(tray.entries(), "Stop server")  # the text follows the engine
    by_label(tray.entries(), "Stop server").action()
    tray.bridge.drain()
    wait_for(lambda: not service.engine_running, 10, what="engine stopped")
    wait_for(lambda: tray.bridge.drain() or not tray.snapshot.engine_running, 5, what="refresh")
    assert by_label(tray.entries(), "Start server")


def test_tasks_submenu_starts_and_stops_tasks(tray: Tray, service: Service) -> None:
    tasks = by_label(tray.entries(), "Tasks").submenu()
    assert [e.label() for e in tasks] == ["Invoices", "Reminders"]
    assert [e.checked() for e in tasks] == [False, False]
    tasks[1].action()
    tray.bridge.drain()
    assert service.task("Reminders").enabled and not service.task("Invoices").enabled
    tasks = by_label(tray.entries(), "Tasks").submenu()
    assert [e.checked() for e in tasks] == [False, True]
    tasks[1].action()
    tray.bridge.drain()
    assert not service.task("Reminders").enabled


def test_icon_and_tooltip_follow_the_state(tray: Tray, service: Service) -> None:
    icon = tray.icon
    assert icon.icon is tray.images["stopped"]
    assert icon.title.startswith("AutoMail: Stopped, 0 queued, 0 sent in 1 h")
    service.send("Firma", to=["a@x.sk"], subject="Hi", text="x", tag="invoices")
    service.outbox("Firma").set_task_state(
        "Invoices", TaskState.ERROR, time.time(), "SMTP login rejected", "task_fatal"
    )
    before = icon.menu_updates
    tray.on_event(EngineEvent(EventKind.STATE_CHANGED, "Invoices", "Firma", state=TaskState.ERROR, detail="x"))
    assert icon.icon is tray.images["error"]
    assert icon.title == "AutoMail: Error in Invoices, 1 queued, 0 sent in 1 h"
    assert icon.menu_updates > before
    assert len(icon.title) <= 63


def test_no_display_means_no_tray_but_no_crash(service: Service) -> None:
    def broken(*_a: Any) -> Any:
        raise RuntimeError("Bad display name")  # what pystray raises without DISPLAY is not ImportError

    t = Tray(service, Bridge(FakeRoot()), open_window=print, open_outbox=print, quit=print, icon_factory=broken)
    assert not t.start()
    assert not t.docked() and "Bad display name" in t.error
    t.stop()


class FakeXorgIcon(FakeIcon):
    """Like automail's xorg icon: ``embedded`` once a tray host took a dock request (``_show``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.embedded = False
        self.tray_host_up = False
        self.dock_requests = 0

    def _show(self) -> None:
        self.dock_requests += 1
        if self.tray_host_up:
            self.embedded = True


def test_redock_asks_again_at_most_every_interval_until_docked(service: Service) -> None:
    from automail.ui.tray import REDOCK_EVERY_S

    t = Tray(service, Bridge(FakeRoot()), open_window=print, open_outbox=print, quit=print, icon_factory=FakeXorgIcon)
    assert t.start()
    try:
        wait_for(lambda: t.icon.visible, 10, what="setup")
        icon = t.icon
        assert not t.docked()
        assert not t.redock(now=100.0) and icon.dock_requests == 1
        assert not t.redock(now=100.0 + REDOCK_EVERY_S / 2) and icon.dock_requests == 1  # not yet again
        icon.tray_host_up = True  # the panel starts
        assert t.redock(now=100.0 + REDOCK_EVERY_S) and icon.dock_requests == 2
        assert t.docked()
        assert t.redock(now=200.0) and icon.dock_requests == 2  # docked: nothing more is asked
    finally:
        t.stop()


# ---- the real pystray icon (xorg backend) -------------------------------------------------------


@pytest.mark.gui
def test_pystray_menu_and_xorg_click_mask(tray: Tray) -> None:
    import Xlib.X

    from automail.ui.tray import _make_pystray_icon

    icon = _make_pystray_icon(tray.images["running"], "AutoMail", tray.entries())
    texts = [item.text for item in icon.menu.items if item is not icon.menu.SEPARATOR]
    assert texts[:3] == ["Open AutoMail", "Start server", "Tasks"]
    assert icon.menu.items[0].default
    icon.menu.items[0](icon)  # what a click on the icon does: the default action
    tray.bridge.drain()
    assert tray.calls.names == ["open"]
    if hasattr(icon, "_window"):  # xorg backend: the click fix of pystray#151
        assert icon._window.get_attributes().your_event_mask & Xlib.X.ButtonPressMask


@pytest.mark.gui
@pytest.mark.timeout(120)
def test_icon_updates_from_another_thread_never_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    """pystray's cross-thread dispatch on a shared python-xlib connection hung within a few hundred
    updates of a docked icon (the app froze); the tray sends them over its own connection."""
    from PIL import Image

    from automail.ui.tray import _make_pystray_icon

    if missing := missing_tools():
        pytest.skip(f"needs {', '.join(missing)}")
    session = DesktopSession(notifications=False).start()  # a tray host: a docked icon redraws
    try:
        monkeypatch.setenv("DISPLAY", session.env["DISPLAY"])
        images = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
        icon = _make_pystray_icon(images[0], "AutoMail", [Entry("Open", lambda: None, default=True)])
        ready = threading.Event()

        def setup(i: Any) -> None:
            i.visible = True
            ready.set()

        threading.Thread(target=lambda: icon.run(setup=setup), daemon=True).start()
        assert ready.wait(10)
        done: list[int] = []

        def update() -> None:
            for n in range(2000):
                icon.icon = images[n % 3]
                icon.title = f"AutoMail {n}"
            done.append(n)

        worker = threading.Thread(target=update, daemon=True)
        worker.start()
        worker.join(90)
        assert done == [1999], "icon updates hung"
        icon.stop()
        icon._automail_dispatch.close()
        icon = None  # pystray's Icon.__del__ closes its X connection: while this X server still runs
        gc.collect()
    finally:
        session.stop()


@pytest.fixture
def tray_display(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A private X display without a tray host yet; DISPLAY points at it."""
    if missing := missing_tools():
        pytest.skip(f"needs {', '.join(missing)}")
    session = DesktopSession(tray=False, notifications=False).start()
    monkeypatch.setenv("DISPLAY", session.env["DISPLAY"])
    yield session
    gc.collect()  # pystray's Icon.__del__ closes its X connection: while this X server still runs
    session.stop()


def xorg_tray(service: Service, root: Any = None) -> Tray:
    """A Tray with the real pystray icon (xorg backend) on $DISPLAY."""
    calls = Calls()
    t = Tray(
        service,
        Bridge(root or FakeRoot()),
        open_window=calls("open"),
        open_outbox=calls("outbox"),
        quit=calls("quit"),
    )
    t.calls = calls  # type: ignore[attr-defined]
    assert t.start(), t.error
    wait_for(t._ready.is_set, 10, what="tray icon running")
    return t


def window_info(session: DesktopSession, window: int) -> dict[str, str]:
    out = session.run(["xwininfo", "-id", str(window)], check=False).stdout
    return dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)


def window_parent(session: DesktopSession, window: int) -> int:
    tree = session.run(["xwininfo", "-tree", "-id", str(window)]).stdout
    line = next(x for x in tree.splitlines() if "Parent window id:" in x)
    return int(line.split()[3], 16)


def icon_pixel(window: int, x: int, y: int) -> tuple[int, int, int]:
    """One pixel of a window, read over a connection of the test's own."""
    import Xlib.display
    import Xlib.X
    from PIL import Image

    display = Xlib.display.Display()
    try:
        win = display.create_resource_object("window", window)
        geometry = win.get_geometry()
        raw = win.get_image(0, 0, geometry.width, geometry.height, Xlib.X.ZPixmap, 0xFFFFFFFF)
        image = Image.frombytes("RGB", (geometry.width, geometry.height), raw.data, "raw", "BGRX")
        return image.getpixel((x, y))  # type: ignore[return-value]
    finally:
        display.close()


def click(session: DesktopSession, window: int, button: int) -> None:
    session.run(["xdotool", "mousemove", "--window", str(window), "12", "12", "click", str(button)])


@pytest.mark.gui
@pytest.mark.timeout(120)
def test_fifty_icon_changes_keep_the_icon_24_px_wide_and_clickable(
    tray_display: DesktopSession, service: Service
) -> None:
    """pystray asked trayer to dock the icon again at every image change; after a few, trayer
    shrank it to 1 px (issue 11). The image is now repainted in place."""
    from automail.ui.tray import TraySnapshot

    tray_display.start_tray()
    t = xorg_tray(service)
    try:
        wait_for(t.docked, 10, what="icon docked in trayer")
        window = t.icon._window.id
        wait_for(lambda: window_info(tray_display, window).get("Width") == "24", 10, what="icon sized by trayer")
        states = ["running", "waiting", "error", "stopped"]
        widths = []
        for n in range(50):
            t.update(TraySnapshot(state=states[n % 4]))
            time.sleep(0.1)
            widths.append(int(window_info(tray_display, window)["Width"]))
        assert widths == [24] * 50
        assert t.docked() and window_info(tray_display, window)["Map State"] == "IsViewable"
        last = icons.STATE_COLORS[states[49 % 4]]

        def painted() -> bool:
            return max(abs(a - b) for a, b in zip(icon_pixel(window, 2, 12), last, strict=True)) <= 24

        wait_for(painted, 5, what=f"the icon painted in {last}")
        click(tray_display, window, 1)
        wait_for(lambda: t.bridge.drain() >= 0 and t.calls.names == ["open"], 10, what="left click opens the window")
    finally:
        t.stop()


@pytest.mark.gui
@pytest.mark.timeout(60)
def test_icon_docks_with_a_tray_host_that_ignores_the_first_request(
    tray_display: DesktopSession, service: Service
) -> None:
    """pystray counted the icon as docked once it had asked: a tray host that ignored the request
    left the app invisible (issue 11). Docked now means embedded, and the icon asks again."""
    host = tray_display.start_test_tray(ignore=1)
    assert host.stdout is not None
    t = xorg_tray(service)
    try:
        window = t.icon._window.id
        assert host.stdout.readline().split() == ["ignored", str(window)]
        time.sleep(0.5)
        assert not t.docked()  # asked, but not embedded: the app shows its window (see test_smoke_app)
        wait_for(lambda: t.redock(), 10, what="icon docked after asking again")
        assert host.stdout.readline().split() == ["embedded", str(window)]
        panel = int(tray_display.windows("--classname", "automailTestTray")[0])
        assert window_parent(tray_display, window) == panel
        assert window_info(tray_display, window)["Width"] == "24"
    finally:
        t.stop()


@pytest.mark.gui
@pytest.mark.timeout(60)
def test_right_click_on_the_xorg_icon_asks_for_the_menu(
    tray_display: DesktopSession, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The xorg backend has no menu (issue 11): a right click asks the Tray for its Tk popup menu,
    at the pointer. (test_smoke_app opens it in the real app and quits from it.)"""
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(Tray, "popup_menu", lambda self, x, y: asked.append((x, y)))  # Tk: see below
    tray_display.start_tray()
    t = xorg_tray(service)
    try:
        wait_for(t.docked, 10, what="icon docked in trayer")
        window = t.icon._window.id
        wait_for(lambda: window_info(tray_display, window).get("Width") == "24", 10, what="icon sized by trayer")
        click(tray_display, window, 3)
        wait_for(lambda: t.bridge.drain() >= 0 and asked, 10, what="the menu asked for")
        info = window_info(tray_display, window)
        left, top = int(info["Absolute upper-left X"]), int(info["Absolute upper-left Y"])
        assert asked == [(left + 12, top + 12)]  # where the pointer is
        assert t.calls.names == []  # a right click is not the default action
    finally:
        t.stop()


def test_tk_tray_menu_has_the_tray_menus_entries(tray: Tray, service: Service, root: Any) -> None:
    from automail.ui import tray_menu

    menu = tray_menu.build_menu(root, tray.entries())
    assert tray_menu.labels(menu) == [
        "Open AutoMail", "Start server", "Tasks", "Open outbox", "Open log folder", "-", "Quit"
    ]  # fmt: skip
    tasks = menu.nametowidget(menu.entrycget(2, "menu"))
    assert tray_menu.labels(tasks) == ["Invoices", "Reminders"]
    assert tasks.type(1) == "checkbutton"
    bold = root.tk.call("font", "actual", menu.entrycget(0, "font"), "-weight") == "bold"
    assert bold  # the default entry, Open AutoMail, in bold as on Windows
    menu.invoke(0)
    tasks.invoke(1)  # Reminders: started from the menu
    menu.invoke(6)
    tray.bridge.drain()
    assert tray.calls.names == ["open", "quit"]
    assert service.task("Reminders").enabled
    tray.refresh()
    menu = tray_menu.build_menu(root, tray.entries())
    tasks = menu.nametowidget(menu.entrycget(2, "menu"))
    assert root.getvar(tasks.entrycget(1, "variable")) in (True, 1)  # shown checked, like a Windows menu


@pytest.mark.gui
def test_pystray_internals_are_those_checked(tray_display: DesktopSession) -> None:
    """xorg_tray.py subclasses pystray's xorg icon: pystray is pinned to the version it was checked with."""
    from importlib.metadata import version

    from PIL import Image

    from automail.ui import xorg_tray

    assert version("pystray") == xorg_tray.PYSTRAY_CHECKED
    for name in xorg_tray.PYSTRAY_INTERNALS:
        assert callable(getattr(xorg_tray._xorg.Icon, name, None)), name
    icon = xorg_tray.XorgIcon("automail", Image.new("RGB", (8, 8)), "AutoMail")
    for name in xorg_tray.PYSTRAY_ATTRIBUTES:
        assert hasattr(icon, name), name
    icon.close_dispatch()
    del icon


# ---- the app wiring: engine error → red icon + notification + window --------------------------


class FakeWindow:
    def __init__(self, root: Any, service: Any, *, on_quit: Any) -> None:
        self.events: list[EngineEvent] = []
        self.shown = 0
        self.on_quit = on_quit

    def on_event(self, event: EngineEvent) -> None:
        self.events.append(event)

    def refresh(self) -> None:
        pass

    def show(self) -> None:
        self.shown += 1

    def hide(self) -> None:
        pass

    def open_outbox(self, company: str | None = None) -> None:
        pass

    def select_company(self, name: str) -> None:
        pass


@pytest.mark.gui
@pytest.mark.timeout(60)
def test_engine_error_reaches_icon_notifier_and_window(
    smtp_server_auth: SmtpServer, automail_home: Path, monkeypatch: pytest.MonkeyPatch, collect_tk_garbage: None
) -> None:
    import customtkinter as ctk

    from automail.ui import app as app_module

    monkeypatch.setattr(app_module, "_make_window", FakeWindow)
    svc = Service(automail_home)
    svc.add_company("Firma")
    svc.add_task(make_task("Invoices", smtp_server_auth.port, AUTH_USER), password="wrong")
    svc.send("Firma", to=["a@x.sk"], subject="Hi", text="x", tag="invoices")
    svc.start_task("Invoices")
    app_module.theme.apply()
    root = ctk.CTk()
    root.withdraw()
    app = app_module.App(root, svc, icon_factory=FakeIcon)
    try:
        app.start()
        assert svc.engine_running  # enabled local task: the server starts by itself

        def red() -> bool:
            root.update()
            return app.tray.icon.icon is app.tray.images["error"] and bool(app.tray.icon.notified)

        wait_for(red, 20, interval=0.05, what="red icon and notification")
        time.sleep(1)
        root.update()
        assert len(app.tray.icon.notified) == 1
        title, text = app.tray.icon.notified[0]
        assert title == "Task “Invoices” stopped" and "login" in text.lower()
        assert any(e.state is TaskState.ERROR for e in app.window.events)
        app.quit()
        assert app.tray.icon is None  # the icon goes first
        wait_for(lambda: root.update() or (not svc.engine_running and app.bridge._closed), 15, what="quit")
    finally:
        app.close()


# ---- single instance ------------------------------------------------------------------------------


def test_second_instance_asks_the_first_to_show(tmp_path: Path) -> None:
    shown = threading.Event()
    first = instance.claim(tmp_path, shown.set)
    assert first is not None
    try:
        assert instance.claim(tmp_path, lambda: None, wait_s=2) is None
        assert shown.wait(2)
        info = json.loads((tmp_path / instance.FILE_NAME).read_text())
        assert set(info) == {"port", "token", "pid"}
    finally:
        first.close()
    assert not (tmp_path / instance.FILE_NAME).exists()


def test_stale_port_file_does_not_block_a_start(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / instance.FILE_NAME).write_text(json.dumps({"port": port, "token": "old", "pid": 1}))
    assert not instance.ask_running_instance(tmp_path)
    guard = instance.claim(tmp_path, lambda: None)
    assert guard is not None
    guard.close()


def test_wrong_token_is_refused(tmp_path: Path) -> None:
    shown = threading.Event()
    guard = instance.claim(tmp_path, shown.set)
    assert guard is not None
    try:
        info = json.loads((tmp_path / instance.FILE_NAME).read_text())
        with socket.create_connection(("127.0.0.1", info["port"])) as conn:
            conn.sendall(b"show nottoken\n")
            assert conn.recv(16).startswith(b"denied")
        assert not shown.wait(0.3)
    finally:
        guard.close()


def test_tooltip_is_latin1_safe_for_the_xorg_backend(tray: Tray) -> None:
    from automail.ui.tray import TraySnapshot, latin1_text

    assert latin1_text("Faktúry č. 5 – ok") == "Faktury c. 5 ? ok"
    tray.update(TraySnapshot(state="error", error_task="Faktúry č. 5 pre zákazníkov a dodávateľov"))
    if sys.platform.startswith("linux"):
        tray.icon.title.encode("latin-1")
    assert len(tray.icon.title) <= 63

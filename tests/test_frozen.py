"""Smoke test of the built app (`pyinstaller build.spec`): version, self-install, headless sending, tray app.

Runs when dist/AutoMail exists or AUTOMAIL_FROZEN_BUNDLE names the bundle folder; .ci/run builds the
bundle and sets the variable, so there a missing bundle fails instead of skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from automail import __version__
from automail.install.common import APP_EXE, CLI_EXE, exe_name
from automail.ui import instance
from tests.desktop import TRAY_CLASSNAME, DesktopSession, missing_tools, wait_for
from tests.helpers import files_under
from tests.smtpd import SmtpServer

BUNDLE_ENV = "AUTOMAIL_FROZEN_BUNDLE"
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "dist" / "AutoMail"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
# Self-install and the tray check use Linux's layout and desktop tools; the Windows and macOS installs
# are tested through fakes in tests/test_install.py (the Windows workflow runs the rest of this file).
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux layout and X11 tray host")
APP, CLI = exe_name(APP_EXE), exe_name(CLI_EXE)


@pytest.fixture(scope="module")
def bundle() -> Path:
    named = os.environ.get(BUNDLE_ENV)
    if named:
        path = Path(named)
        assert (path / APP).is_file() and (path / CLI).is_file(), (
            f"{BUNDLE_ENV}={named} but the built app is not there: run `xvfb-run pyinstaller build.spec`"
        )
        return path
    if not (DEFAULT_BUNDLE / APP).is_file():
        pytest.skip(f"no built app: run `xvfb-run pyinstaller build.spec` or set {BUNDLE_ENV}")
    return DEFAULT_BUNDLE


@pytest.fixture
def env(tmp_path: Path, automail_home: Path) -> dict[str, str]:
    """A fresh user: own HOME, no XDG overrides, the data folder of this test, no test keyring module."""
    home = tmp_path / "user"
    home.mkdir()
    drop = {"XDG_DATA_HOME", "XDG_CONFIG_HOME", "PYTHON_KEYRING_BACKEND", "PYTHONPATH", "DISPLAY"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "HOME": str(home)}


def run(argv: list[str | Path], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_both_executables_print_the_version(bundle: Path, env: dict[str, str]) -> None:
    assert run([bundle / CLI, "--version"], env).stdout.strip() == f"AutoMail {__version__}"
    if sys.platform != "win32":  # a windowed Windows executable has no stdout to print to
        assert run([bundle / APP, "--version"], env).stdout.strip() == f"AutoMail {__version__}"
    assert not (bundle / "_internal" / "assets" / "make_icons.py").exists()
    assert (bundle / "_internal" / "assets" / "automail.png").is_file()


@linux_only
def test_self_install_creates_every_file_and_uninstall_removes_them(
    bundle: Path, env: dict[str, str], automail_home: Path
) -> None:
    home = Path(env["HOME"])
    before = files_under(home)
    out = run([bundle / "AutoMail", "install"], env).stdout
    app = home / ".local/share/AutoMail/app"
    assert f"AutoMail is installed in {app}." in out
    added = files_under(home) - before
    installed = {f".local/share/AutoMail/app/{p}" for p in files_under(bundle)}
    entries = {
        ".local/bin/automail",
        ".local/share/applications/automail.desktop",
        ".config/autostart/automail.desktop",
    }
    assert added == installed | entries  # no Desktop folder in this HOME: no desktop icon
    assert os.readlink(home / ".local/bin/automail") == str(app / "automail")
    menu = (home / ".local/share/applications/automail.desktop").read_text(encoding="utf-8")
    assert f'Exec="{app}/AutoMail" gui' in menu and f"Icon={app}/_internal/assets/automail.png" in menu
    # The installed copy works through the link on PATH.
    assert run([home / ".local/bin/automail", "--version"], env).stdout.strip() == f"AutoMail {__version__}"

    run([home / ".local/bin/automail", "company", "add", "Firma"], env)
    out = run([home / ".local/bin/automail", "uninstall"], env).stdout
    assert files_under(home) == before
    assert "were kept" in out and (automail_home / "automail.json").is_file()


def test_console_cli_sends_headless(bundle: Path, env: dict[str, str], smtp_server: SmtpServer) -> None:
    cli = bundle / CLI
    run([cli, "company", "add", "Firma"], env)
    server = ["--host", "127.0.0.1", "--port", str(smtp_server.port), "--security", "none"]
    run([cli, "task", "add", "Invoices", "--company", "Firma", *server, "--sender", "Firma <info@firma.sk>",
         "--unlimited"], env)  # fmt: skip
    body = Path(env["HOME"]) / "body.txt"
    body.write_text("Hello from the frozen app.\n", encoding="utf-8")
    for i in range(3):
        run([cli, "send", "--company", "Firma", "--to", f"client{i}@example.com", "--subject", f"Invoice {i}",
             "--text", body], env)  # fmt: skip
    run([cli, "task", "start", "Invoices"], env)
    run([cli, "run", "--until-empty"], env)
    received = smtp_server.wait_for(3, timeout=30)
    assert sorted(m.rcpt_tos[0] for m in received) == [f"client{i}@example.com" for i in range(3)]


@pytest.fixture
def desktop() -> Iterator[DesktopSession]:
    if missing := missing_tools():
        pytest.fail(f"the frozen app's smoke test needs {', '.join(missing)}")
    session = DesktopSession().start()
    try:
        yield session
    finally:
        session.stop()


@linux_only
def test_desktop_app_docks_in_the_tray_and_quits_through_the_instance_channel(
    bundle: Path, env: dict[str, str], desktop: DesktopSession, automail_home: Path, tmp_path: Path
) -> None:
    run([bundle / CLI, "company", "add", "Firma"], env)  # not a first start: the window stays hidden
    log = (tmp_path / "app.out").open("wb")
    app = subprocess.Popen([bundle / "AutoMail", "gui"], env={**env, **desktop.env}, stdout=log, stderr=log)
    try:
        icon = wait_for(lambda: desktop.windows("--classname", TRAY_CLASSNAME), 30, what="tray icon")[0]
        wait_for(lambda: "Parent window id" in desktop.run(["xwininfo", "-tree", "-id", icon]).stdout, 10)
        started = time.monotonic()
        assert instance.quit_running_instance(automail_home, wait_s=20) is True
        assert app.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert not desktop.windows("--classname", TRAY_CLASSNAME)
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGKILL)
            app.wait()
        log.close()
        print((tmp_path / "app.out").read_text(errors="replace"), file=sys.stderr)


def test_an_unbundled_keyring_backend_is_a_clear_error(bundle: Path, env: dict[str, str]) -> None:
    """A backend the build lacks (keyrings.alt is not bundled): the keyring error, no traceback, and
    no advice that only works with a Python install."""
    run([bundle / CLI, "company", "add", "Firma"], env)
    add = [bundle / CLI, "task", "add", "T", "--company", "Firma", "--host", "127.0.0.1", "--port", "25",
           "--security", "none", "--sender", "info@firma.sk", "--username", "u", "--password-stdin"]  # fmt: skip
    bad = {**env, "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    done = subprocess.run([str(a) for a in add], env=bad, input="pw\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "PYTHON_KEYRING_BACKEND=keyrings.alt.file.PlaintextKeyring cannot be loaded" in done.stderr
    assert "Traceback" not in done.stderr and "python -m keyring" not in done.stderr
    assert "unset PYTHON_KEYRING_BACKEND" in done.stderr


@linux_only
def test_double_click_asks_installs_starts_the_installed_copy_and_exits(
    bundle: Path, env: dict[str, str], desktop: DesktopSession, automail_home: Path, tmp_path: Path
) -> None:
    home = Path(env["HOME"])
    run([bundle / CLI, "company", "add", "Firma"], env)
    full = {**env, **desktop.env}
    log = (tmp_path / "first.out").open("wb")
    first = subprocess.Popen([bundle / APP], env=full, stdout=log, stderr=log)  # no command: a double-click
    installed_exe = home / ".local/share/AutoMail/app/AutoMail"
    try:
        prompt = wait_for(lambda: desktop.windows("--onlyvisible", "--name", "Install AutoMail"), 30, what="prompt")
        # No window manager on Xvfb: give the prompt the focus, then type Return (XTEST, like a person).
        desktop.run(["xdotool", "windowfocus", "--sync", prompt[0], "sleep", "0.3", "key", "Return"])
        assert first.wait(timeout=60) == 0
        assert installed_exe.is_file() and (home / ".config/autostart/automail.desktop").is_file()
        # The installed copy was started and runs in the tray; it answers the single-instance channel.
        wait_for(lambda: desktop.windows("--classname", TRAY_CLASSNAME), 30, what="installed copy's tray icon")
        assert instance.quit_running_instance(automail_home, wait_s=20) is True
        wait_for(lambda: not desktop.windows("--classname", TRAY_CLASSNAME), 10, what="installed copy gone")
        assert not (automail_home / "install-declined").exists()
        # Started again from the installed folder, it does not ask (it is the installed copy).
        again = subprocess.Popen([installed_exe], env=full, stdout=log, stderr=log)
        wait_for(lambda: desktop.windows("--classname", TRAY_CLASSNAME), 30, what="tray icon without a prompt")
        assert not desktop.windows("--onlyvisible", "--name", "Install AutoMail")
        assert instance.quit_running_instance(automail_home, wait_s=20) is True
        assert again.wait(timeout=10) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
        print((tmp_path / "first.out").read_text(errors="replace"), file=sys.stderr)
        run([home / ".local/bin/automail", "uninstall"], env, check=False)

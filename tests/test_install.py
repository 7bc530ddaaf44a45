"""automail.install: Linux for real in a temporary HOME; Windows and macOS with the system calls recorded by fakes."""

from __future__ import annotations

import os
import plistlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from automail import __main__ as cli_main
from automail import __version__
from automail.install import common
from automail.install.common import InstallError, InstallOptions, should_offer_install
from automail.install.linux import LinuxInstaller
from automail.install.macos import LABEL, MacInstaller
from automail.install.windows import RUN_KEY, UNINSTALL_KEY, WindowsInstaller
from automail.ui import instance
from tests.helpers import files_under, make_service, make_task


def fake_bundle(folder: Path, platform: str = "linux", marker: str = "v1") -> Path:
    """A folder shaped like PyInstaller's dist/AutoMail (executables, _internal/assets)."""
    (folder / "_internal" / "assets").mkdir(parents=True)
    for base in ("AutoMail", "automail"):
        exe = folder / common.exe_name(base, platform)
        exe.write_text(f"#!/bin/sh\necho {marker}\n", encoding="utf-8")
        exe.chmod(0o755)
    (folder / "_internal" / "assets" / "automail.png").write_bytes(b"png")
    (folder / "_internal" / "lib.so").write_bytes(b"x" * 5000)
    return folder


# ---- Linux, for real ----------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "user"
    (home / "Desktop").mkdir(parents=True)
    # The user's own files in the folders we write to: they must survive install and uninstall.
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "other-tool").write_text("x", encoding="utf-8")
    (home / ".config" / "autostart").mkdir(parents=True)
    (home / ".config" / "autostart" / "other.desktop").write_text("[Desktop Entry]\n", encoding="utf-8")
    return home


def test_linux_install_creates_every_file_and_uninstall_removes_exactly_them(tmp_path: Path, home: Path) -> None:
    bundle = fake_bundle(tmp_path / "dist" / "AutoMail")
    before = files_under(home)
    inst = LinuxInstaller(home, {})
    report = inst.install(bundle, InstallOptions())

    app = home / ".local/share/AutoMail/app"
    created = files_under(home) - before
    assert created == {
        ".local/share/AutoMail/app/AutoMail",
        ".local/share/AutoMail/app/automail",
        ".local/share/AutoMail/app/_internal/assets/automail.png",
        ".local/share/AutoMail/app/_internal/lib.so",
        ".local/bin/automail",
        ".local/share/applications/automail.desktop",
        ".config/autostart/automail.desktop",
        "Desktop/automail.desktop",
    }
    assert os.readlink(home / ".local/bin/automail") == str(app / "automail")
    menu = (home / ".local/share/applications/automail.desktop").read_text(encoding="utf-8")
    assert f'Exec="{app}/AutoMail" gui\n' in menu
    assert f"Icon={app}/_internal/assets/automail.png\n" in menu
    assert "Type=Application\n" in menu and "Name=AutoMail\n" in menu
    assert "X-GNOME-Autostart-enabled=true" in (home / ".config/autostart/automail.desktop").read_text()
    assert os.access(app / "AutoMail", os.X_OK)
    assert str(home / ".local/bin/automail") in report.created
    assert inst.autostart_enabled()

    removed = inst.uninstall()
    assert files_under(home) == before
    assert str(app) in removed.removed


def test_linux_install_options_and_autostart_switch(tmp_path: Path, home: Path) -> None:
    inst = LinuxInstaller(home, {"XDG_CONFIG_HOME": str(home / "cfg"), "XDG_DATA_HOME": "relative/ignored"})
    inst.install(fake_bundle(tmp_path / "b"), InstallOptions(autostart=False, desktop_icon=False))
    assert not (home / "Desktop/automail.desktop").exists()
    assert not inst.autostart_enabled()
    assert (home / ".local/share/applications/automail.desktop").is_file()  # relative XDG_DATA_HOME ignored
    inst.set_autostart(True)
    assert (home / "cfg/autostart/automail.desktop").is_file()
    inst.set_autostart(False)
    assert not (home / "cfg/autostart/automail.desktop").exists()


def test_linux_reinstall_replaces_the_app_and_keeps_data_and_foreign_files(tmp_path: Path, home: Path) -> None:
    inst = LinuxInstaller(home, {})
    inst.install(fake_bundle(tmp_path / "v1", marker="v1"), InstallOptions())
    (inst.app_dir / "_internal" / "stale.py").write_text("old", encoding="utf-8")
    data = home / ".local/share/AutoMail/automail.json"
    data.write_text("{}", encoding="utf-8")  # the data folder is the app folder's parent on Linux
    foreign = home / ".local/share/applications/automail.desktop"
    inst.install(fake_bundle(tmp_path / "v2", marker="v2"), InstallOptions())
    assert "v2" in (inst.app_dir / "AutoMail").read_text()
    assert not (inst.app_dir / "_internal" / "stale.py").exists()
    assert data.read_text() == "{}"
    inst.uninstall()
    assert data.exists() and not inst.app_dir.exists()

    # A menu entry or link of the same name that is not ours is never removed or replaced.
    foreign.write_text("[Desktop Entry]\nExec=/usr/bin/other\n", encoding="utf-8")
    (home / ".local/bin/automail").symlink_to("/usr/bin/true")
    inst.uninstall()
    assert foreign.exists() and (home / ".local/bin/automail").is_symlink()
    report = inst.install(fake_bundle(tmp_path / "v3"), InstallOptions())
    assert os.readlink(home / ".local/bin/automail") == "/usr/bin/true"
    assert any("not AutoMail's" in k for k in report.kept)


def test_a_folder_that_is_not_the_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(InstallError, match="AutoMail is missing"):
        common.check_bundle(tmp_path / "x", "linux")


# ---- Windows, registry and shortcuts recorded ------------------------------------------------
class FakeRegistry:
    def __init__(self) -> None:
        self.keys: dict[str, dict[str, str | int]] = {}

    def set_value(self, key: str, name: str, value: str | int) -> None:
        self.keys.setdefault(key, {})[name] = value

    def get_value(self, key: str, name: str) -> str | int | None:
        return self.keys.get(key, {}).get(name)

    def delete_value(self, key: str, name: str) -> None:
        self.keys.get(key, {}).pop(name, None)
        if key in self.keys and not self.keys[key]:
            del self.keys[key]

    def delete_key(self, key: str) -> None:
        self.keys.pop(key, None)


def windows(tmp_path: Path, bundle: Path | None = None) -> tuple[WindowsInstaller, FakeRegistry, list[tuple[str, ...]]]:
    env = {k: str(tmp_path / v) for k, v in (("LOCALAPPDATA", "Local"), ("APPDATA", "Roaming"), ("USERPROFILE", "me"))}
    (tmp_path / "me" / "Desktop").mkdir(parents=True)
    reg, calls = FakeRegistry(), []

    def shortcut(link: Path, target: Path, icon: Path) -> None:
        calls.append(("shortcut", str(link), str(target), str(icon)))
        link.write_bytes(b"lnk")

    def remove_later(folder: Path) -> None:
        calls.append(("remove_later", str(folder)))

    inst = WindowsInstaller(env, registry=reg, shortcut=shortcut, remove_later=remove_later, bundle=bundle)
    return inst, reg, calls


def test_windows_install_writes_run_and_uninstall_keys_and_shortcuts(tmp_path: Path) -> None:
    inst, reg, calls = windows(tmp_path)
    inst.install(fake_bundle(tmp_path / "dist", "win32"), InstallOptions())
    app = tmp_path / "Local" / "Programs" / "AutoMail"
    exe = app / "AutoMail.exe"
    assert (app / "automail-cli.exe").is_file()
    start_menu = tmp_path / "Roaming/Microsoft/Windows/Start Menu/Programs/AutoMail.lnk"
    assert calls == [
        ("shortcut", str(start_menu), str(exe), str(exe)),
        ("shortcut", str(tmp_path / "me/Desktop/AutoMail.lnk"), str(exe), str(exe)),
    ]
    uninstall = reg.keys[UNINSTALL_KEY]
    assert uninstall["DisplayName"] == "AutoMail"
    assert uninstall["DisplayVersion"] == __version__
    assert uninstall["DisplayIcon"] == f"{exe},0"
    assert uninstall["UninstallString"] == f'"{exe}" uninstall'
    assert uninstall["InstallLocation"] == str(app)
    assert uninstall["EstimatedSize"] == common.folder_size_kb(app) and isinstance(uninstall["EstimatedSize"], int)
    assert uninstall["EstimatedSize"] >= 5  # KiB: the 5,000-byte library at least
    assert reg.keys[RUN_KEY] == {"AutoMail": f'"{exe}" gui'}
    assert inst.autostart_enabled()

    inst.set_autostart(False)
    assert RUN_KEY not in reg.keys
    inst.set_autostart(True)

    report = inst.uninstall()
    assert reg.keys == {}
    assert not app.exists() and not start_menu.exists() and not (tmp_path / "me/Desktop/AutoMail.lnk").exists()
    assert str(app) in report.removed


def test_windows_without_autostart_or_desktop_icon(tmp_path: Path) -> None:
    inst, reg, calls = windows(tmp_path)
    inst.install(fake_bundle(tmp_path / "dist", "win32"), InstallOptions(autostart=False, desktop_icon=False))
    assert RUN_KEY not in reg.keys and UNINSTALL_KEY in reg.keys
    assert [c[1] for c in calls] == [str(tmp_path / "Roaming/Microsoft/Windows/Start Menu/Programs/AutoMail.lnk")]


def test_windows_uninstall_from_the_installed_copy_removes_its_folder_after_exit(tmp_path: Path) -> None:
    app = tmp_path / "Local" / "Programs" / "AutoMail"
    inst, reg, calls = windows(tmp_path, bundle=app)
    inst.install(fake_bundle(tmp_path / "dist", "win32"), InstallOptions())
    inst.uninstall()
    assert calls[-1] == ("remove_later", str(app))
    assert app.exists() and reg.keys == {}  # the running AutoMail.exe cannot delete itself


def test_windows_needs_its_folders_in_the_environment() -> None:
    with pytest.raises(InstallError, match="LOCALAPPDATA"):
        WindowsInstaller({})


# ---- macOS, launchctl recorded ---------------------------------------------------------------
def test_macos_launch_agent(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def launchctl(args: Sequence[str]) -> None:
        calls.append(list(args))

    inst = MacInstaller(tmp_path, launchctl)
    inst.install(fake_bundle(tmp_path / "dist", "darwin"), InstallOptions())
    agent = tmp_path / "Library/LaunchAgents" / f"{LABEL}.plist"
    plist = plistlib.loads(agent.read_bytes())
    assert plist["Label"] == LABEL and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [str(tmp_path / "Applications/AutoMail/automail"), "run"]
    assert calls == [["load", "-w", str(agent)]]
    inst.uninstall()
    assert calls[-1] == ["unload", "-w", str(agent)]
    assert not agent.exists() and not (tmp_path / "Applications/AutoMail").exists()


# ---- first start: ask to install? ----------------------------------------------------------
def test_the_install_question_is_asked_only_for_a_double_clicked_build_outside_its_install_folder(
    tmp_path: Path,
) -> None:
    app_dir, data = tmp_path / "installed", tmp_path / "data"
    app_dir.mkdir()
    download = tmp_path / "Downloads" / "AutoMail"
    download.mkdir(parents=True)
    assert should_offer_install(True, download, app_dir, data, None)
    assert not should_offer_install(False, None, app_dir, data, None)  # python app.py
    assert not should_offer_install(True, download, app_dir, data, "gui")  # an explicit command
    assert not should_offer_install(True, app_dir, app_dir, data, None)  # the installed copy
    common.remember_declined(data)
    assert not should_offer_install(True, download, app_dir, data, None)  # "No" is remembered


# ---- single-instance quit request and the CLI ------------------------------------------------
def test_quit_request_reaches_the_running_app_and_waits_for_it(tmp_path: Path) -> None:
    assert instance.quit_running_instance(tmp_path, wait_s=1) is False  # nobody runs
    holder: dict[str, instance.SingleInstance] = {}

    def on_quit() -> None:  # the app finishes its message, then exits (releasing the lock)
        threading.Timer(0.3, holder["guard"].close).start()

    guard = instance.claim(tmp_path, on_show=lambda: None, on_quit=on_quit)
    assert guard is not None
    holder["guard"] = guard
    assert instance.quit_running_instance(tmp_path, wait_s=10) is True
    assert not (tmp_path / instance.FILE_NAME).exists()


def test_an_app_that_does_not_quit_gives_a_clear_error(tmp_path: Path) -> None:
    guard = instance.claim(tmp_path, on_show=lambda: None)  # no quit handler: answers "denied"
    assert guard is not None
    try:
        with pytest.raises(instance.InstanceError, match="did not quit within 1 s"):
            instance.quit_running_instance(tmp_path, wait_s=1)
    finally:
        guard.close()


def test_install_from_python_is_refused_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["install"]) == 1
    assert "pyinstaller build.spec" in capsys.readouterr().err


def test_cli_uninstall_keeps_data_and_passwords_unless_purge(
    tmp_path: Path, home: Path, automail_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    before = files_under(home)
    LinuxInstaller(home, {}).install(fake_bundle(tmp_path / "dist"), InstallOptions())
    svc = make_service(automail_home, make_task(port=2525), password="s3cret")
    svc.close()
    from automail.secrets import get_password

    assert cli_main.main(["uninstall"]) == 0
    assert files_under(home) == before
    assert automail_home.exists() and get_password("Mailing") == "s3cret"
    assert cli_main.main(["uninstall", "--purge"]) == 0
    assert not automail_home.exists() and get_password("Mailing") is None


# ---- the Windows version resource (build.spec) -------------------------------------------------
def test_version_resource_is_generated_from_the_package_version() -> None:
    import runpy

    module = runpy.run_path(str(Path(__file__).resolve().parent.parent / "packaging/windows/version_info.py"))
    assert module["version_tuple"]("1.2.3rc1") == (1, 2, 3, 0)
    assert module["version_tuple"]("2.0") == (2, 0, 0, 0)
    text = module["version_file_text"](__version__, "automail-cli")
    compile(text, "version.txt", "eval")  # PyInstaller evaluates it with its versioninfo classes
    assert f"StringStruct('ProductVersion', '{__version__}')" in text
    assert "StringStruct('OriginalFilename', 'automail-cli.exe')" in text
    assert f"filevers={module['version_tuple'](__version__)}" in text


def test_built_app_keyring_errors_suggest_only_what_the_build_has(monkeypatch: pytest.MonkeyPatch) -> None:
    from automail import secrets

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    err = secrets._error("cannot save the password", ModuleNotFoundError("No module named 'keyrings'"))
    assert "cannot be loaded" in str(err) and "python -m keyring" not in str(err)
    assert err.fix is not None and err.fix.startswith("unset PYTHON_KEYRING_BACKEND")
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    err = secrets._error("cannot save the password", RuntimeError("no backend"))
    assert err.fix is not None and "PYTHON_KEYRING_BACKEND" not in err.fix


def test_installing_over_a_running_app_asks_it_to_quit_first(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    download = fake_bundle(tmp_path / "Downloads" / "AutoMail", marker="new")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(download / "AutoMail"))
    asked: list[str] = []

    def quit_running() -> bool:
        # The old version is still in place while it is asked to quit: its files are replaced only after.
        app = home / ".local/share/AutoMail/app/AutoMail"
        asked.append(app.read_text() if app.exists() else "none")
        return True

    common.install_bundle(InstallOptions(), quit_running)
    assert asked == ["none"]
    old = fake_bundle(tmp_path / "old", marker="old")
    LinuxInstaller(home, {}).install(old, InstallOptions())
    common.install_bundle(InstallOptions(), quit_running)
    assert asked == ["none", "#!/bin/sh\necho old\n"]
    assert "new" in (home / ".local/share/AutoMail/app/AutoMail").read_text()

    # The installed copy installing itself (e.g. `AutoMail install` again) does not quit anyone.
    monkeypatch.setattr(sys, "executable", str(home / ".local/share/AutoMail/app/AutoMail"))
    common.install_bundle(InstallOptions(autostart=False), quit_running)
    assert len(asked) == 2 and not (home / ".config/autostart/automail.desktop").exists()

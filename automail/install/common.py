"""What every platform's installer shares: options, the report, copying the bundle, the first-start decision."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from automail import APP_NAME
from automail.errors import AutomailError

log = logging.getLogger(__name__)

# The two executables of the one-folder build (build.spec); Windows adds ".exe".
APP_EXE = "AutoMail"
CLI_EXE = "automail"
WINDOWS_CLI_EXE = "automail-cli"
DECLINED_FILE = "install-declined"  # in the data folder: the user answered "No" to the first-start question

# Asks a running AutoMail to quit and waits for it; True if one was running. Injected by the caller
# (the single-instance channel lives in automail.ui.instance, above this package).
QuitRunning = Callable[[], bool]


class InstallError(AutomailError):
    """Installing or uninstalling failed; says which file or key and what to do."""


@dataclass(frozen=True)
class InstallOptions:
    autostart: bool = True
    desktop_icon: bool = True


@dataclass
class InstallReport:
    """What an install or uninstall did, for the CLI to print and tests to check."""

    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class Installer(Protocol):
    """One platform's desktop integration."""

    @property
    def app_dir(self) -> Path:
        """Where the bundle is installed."""

    @property
    def app_exe(self) -> Path:
        """The installed desktop app's executable."""

    def install(self, source: Path, options: InstallOptions) -> InstallReport:
        """Copy the bundle folder ``source`` to app_dir and register menu entry, autostart, uninstall entry."""

    def uninstall(self) -> InstallReport:
        """Remove everything install created (the data folder and keyring entries are the caller's)."""

    def autostart_enabled(self) -> bool:
        """True if the app starts at login."""

    def set_autostart(self, enabled: bool) -> None:
        """Switch start at login on or off (only for an installed app)."""


def exe_name(base: str, platform: str = sys.platform) -> str:
    """The file name of one of the bundle's executables on ``platform``."""
    if platform == "win32":
        return (WINDOWS_CLI_EXE if base == CLI_EXE else base) + ".exe"
    return base


def running_bundle() -> Path | None:
    """The folder of the running built app (PyInstaller), or None when run from Python."""
    if not getattr(sys, "frozen", False):
        return None
    return Path(sys.executable).resolve().parent


def is_installed_copy(bundle: Path | None, app_dir: Path) -> bool:
    """True if ``bundle`` is the installed copy in ``app_dir``."""
    if bundle is None:
        return False
    try:
        return bundle.resolve() == app_dir.resolve()
    except OSError:
        return False


def should_offer_install(frozen: bool, bundle: Path | None, app_dir: Path, home: Path, command: str | None) -> bool:
    """Ask "Install AutoMail?" only for a built app started without a command (a double-click) from
    outside its install location, unless the user already said no (``install-declined`` in the data folder)."""
    if not frozen or bundle is None or command is not None:
        return False
    if is_installed_copy(bundle, app_dir):
        return False
    return not (home / DECLINED_FILE).exists()


def remember_declined(home: Path) -> None:
    """Do not ask again (the user can still run `AutoMail install`)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / DECLINED_FILE).write_text("The user chose not to install this copy of AutoMail.\n", encoding="utf-8")


def check_bundle(source: Path, platform: str = sys.platform) -> None:
    """Refuse to install a folder that is not AutoMail's built bundle."""
    for base in (APP_EXE, CLI_EXE):
        exe = source / exe_name(base, platform)
        if not exe.is_file():
            raise InstallError(
                f"{source} is not the built AutoMail folder: {exe.name} is missing",
                fix="run the install from the AutoMail folder `pyinstaller build.spec` made (dist/AutoMail)",
            )


def copy_bundle(source: Path, target: Path) -> None:
    """Copy the bundle folder to ``target``, replacing an older install only once the copy is complete."""
    if is_installed_copy(source, target):
        return  # installing the installed copy over itself: nothing to copy
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".new")
    old = target.with_name(target.name + ".old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        shutil.copytree(source, staging, symlinks=True)
        if target.exists():
            os.replace(target, old)  # the old version's files, removed below
        os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InstallError(
            f"cannot copy {source} to {target}: {exc.strerror or exc}",
            fix=f"quit every running {APP_NAME} and free some disk space, then install again",
        ) from exc
    shutil.rmtree(old, ignore_errors=True)


def folder_size_kb(folder: Path) -> int:
    """Total size of the files under ``folder`` in KiB (Windows' EstimatedSize unit)."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return (total + 1023) // 1024


def remove_file(path: Path, report: InstallReport) -> None:
    """Remove one file or link we created, recording it; a missing one is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InstallError(
            f"cannot remove {path}: {exc.strerror or exc}", fix="close programs using it and uninstall again"
        ) from exc
    report.removed.append(str(path))


def remove_tree(path: Path, report: InstallReport) -> None:
    """Remove a folder we created, recording it."""
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise InstallError(
            f"cannot remove {path}: {exc.strerror or exc}", fix=f"quit every running {APP_NAME} and uninstall again"
        ) from exc
    report.removed.append(str(path))


def write_text(path: Path, text: str, report: InstallReport, mode: int = 0o644) -> None:
    """Write a file we own (menu entry, autostart entry, plist), recording it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    report.created.append(str(path))


def installer_for(
    platform: str = sys.platform, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Installer:
    """The installer of ``platform`` (this computer's by default)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform == "win32":
        from .windows import WindowsInstaller

        return WindowsInstaller(env)
    if platform == "darwin":
        from .macos import MacInstaller

        return MacInstaller(home)
    from .linux import LinuxInstaller

    return LinuxInstaller(home, env)


def install_bundle(options: InstallOptions, quit_running: QuitRunning) -> tuple[InstallReport, Installer]:
    """Install the running built app: quit a running AutoMail (an older version), then copy and register."""
    bundle = running_bundle()
    if bundle is None:
        raise InstallError(
            "`install` installs the built app, and this AutoMail runs from Python",
            fix="build it with `pyinstaller build.spec` and run `dist/AutoMail/AutoMail install`",
        )
    check_bundle(bundle)
    installer = installer_for()
    if not is_installed_copy(bundle, installer.app_dir):
        quit_running()  # its files are about to be replaced
    return installer.install(bundle, options), installer

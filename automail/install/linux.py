"""Linux (XDG desktops): ~/.local/share/AutoMail/app, a ~/.local/bin/automail link, menu and autostart entries."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from automail import APP_NAME

from .common import (
    APP_EXE,
    CLI_EXE,
    InstallOptions,
    InstallReport,
    copy_bundle,
    remove_file,
    remove_tree,
    write_text,
)

DESKTOP_FILE = "automail.desktop"


def _xdg(env: Mapping[str, str], name: str, home: Path, default: str) -> Path:
    value = env.get(name, "")
    return Path(value) if value and Path(value).is_absolute() else home / default  # XDG: relative values are ignored


def _quote(path: Path) -> str:
    """A path as one argument of a .desktop Exec key (Desktop Entry Specification, "Exec key")."""
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return f'"{escaped}"'.replace("%", "%%")


class LinuxInstaller:
    """Per-user install following the XDG Base Directory and Desktop Entry specifications."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        data = _xdg(env, "XDG_DATA_HOME", home, ".local/share")
        config = _xdg(env, "XDG_CONFIG_HOME", home, ".config")
        self._app_dir = data / APP_NAME / "app"
        self.link = home / ".local" / "bin" / CLI_EXE
        self.menu_entry = data / "applications" / DESKTOP_FILE
        self.autostart_entry = config / "autostart" / DESKTOP_FILE
        self.desktop_entry = home / "Desktop" / DESKTOP_FILE

    @property
    def app_dir(self) -> Path:
        return self._app_dir

    @property
    def app_exe(self) -> Path:
        return self._app_dir / APP_EXE

    def _icon(self) -> Path:
        # PyInstaller 6 puts data files in _internal/ beside the executables.
        for candidate in (self._app_dir / "_internal" / "assets", self._app_dir / "assets"):
            if (candidate / "automail.png").is_file():
                return candidate / "automail.png"
        return self._app_dir / "_internal" / "assets" / "automail.png"

    def desktop_entry_text(self, autostart: bool = False) -> str:
        lines = [
            "[Desktop Entry]",
            "Type=Application",
            f"Name={APP_NAME}",
            "Comment=Send mass e-mail at a pace your mail server accepts",
            f"Exec={_quote(self.app_exe)} gui",
            f"Icon={self._icon()}",
            "Terminal=false",
            "Categories=Office;Network;Email;",
            "StartupNotify=false",
        ]
        if autostart:
            lines.append("X-GNOME-Autostart-enabled=true")
        return "\n".join(lines) + "\n"

    def install(self, source: Path, options: InstallOptions) -> InstallReport:
        report = InstallReport()
        copy_bundle(source, self._app_dir)
        report.created.append(str(self._app_dir))
        self.link.parent.mkdir(parents=True, exist_ok=True)
        if self.link.is_symlink() or self.link.exists():
            if not self._is_our_link():
                report.kept.append(f"{self.link} (not AutoMail's: left as it was; no link created)")
            else:
                self.link.unlink()
        if not self.link.exists() and not self.link.is_symlink():
            self.link.symlink_to(self._app_dir / CLI_EXE)
            report.created.append(str(self.link))
        write_text(self.menu_entry, self.desktop_entry_text(), report, mode=0o755)
        if options.desktop_icon and self.desktop_entry.parent.is_dir():
            write_text(self.desktop_entry, self.desktop_entry_text(), report, mode=0o755)
        else:
            remove_file(self.desktop_entry, InstallReport())  # an older install's icon the user now declines
        self.set_autostart(options.autostart, report)
        return report

    def _ours(self, entry: Path) -> bool:
        """A .desktop file we wrote starts our executable (a file of the same name by someone else stays)."""
        return f"Exec={_quote(self.app_exe)} " in entry.read_text(encoding="utf-8", errors="replace")

    def _is_our_link(self) -> bool:
        return self.link.is_symlink() and Path(os.readlink(self.link)).parent == self._app_dir

    def uninstall(self) -> InstallReport:
        report = InstallReport()
        for entry in (self.autostart_entry, self.menu_entry, self.desktop_entry):
            if entry.is_file() and self._ours(entry):
                remove_file(entry, report)
        if self._is_our_link():
            remove_file(self.link, report)
        remove_tree(self._app_dir, report)
        return report

    def autostart_enabled(self) -> bool:
        return self.autostart_entry.is_file()

    def set_autostart(self, enabled: bool, report: InstallReport | None = None) -> None:
        report = report if report is not None else InstallReport()
        if enabled:
            write_text(self.autostart_entry, self.desktop_entry_text(autostart=True), report)
        else:
            remove_file(self.autostart_entry, report)

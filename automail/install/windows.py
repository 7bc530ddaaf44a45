"""Windows, per user (no administrator): %LOCALAPPDATA%\\Programs\\AutoMail, Start menu, HKCU Run and Uninstall."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from automail import APP_NAME, __version__

from .common import (
    APP_EXE,
    InstallError,
    InstallOptions,
    InstallReport,
    copy_bundle,
    exe_name,
    folder_size_kb,
    remove_file,
    remove_tree,
    running_bundle,
)

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
UNINSTALL_KEY = rf"Software\Microsoft\Windows\CurrentVersion\Uninstall\{APP_NAME}"
PUBLISHER = "AutoMail"
CREATE_NO_WINDOW = 0x08000000
DETACHED_PROCESS = 0x00000008


class Registry(Protocol):
    """The few HKEY_CURRENT_USER operations the installer needs (tests record them instead)."""

    def set_value(self, key: str, name: str, value: str | int) -> None: ...
    def get_value(self, key: str, name: str) -> str | int | None: ...
    def delete_value(self, key: str, name: str) -> None: ...
    def delete_key(self, key: str) -> None: ...


class WinRegistry:
    """HKEY_CURRENT_USER through winreg; ``int`` values are REG_DWORD, ``str`` REG_SZ."""

    def __init__(self) -> None:
        import winreg  # Windows only

        self._winreg: Any = winreg  # typeshed declares winreg's contents for Windows only

    def set_value(self, key: str, name: str, value: str | int) -> None:
        w = self._winreg
        with w.CreateKeyEx(w.HKEY_CURRENT_USER, key, 0, w.KEY_SET_VALUE) as handle:
            kind = w.REG_DWORD if isinstance(value, int) else w.REG_SZ
            w.SetValueEx(handle, name, 0, kind, value)

    def get_value(self, key: str, name: str) -> str | int | None:
        w = self._winreg
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, key) as handle:
                value, _kind = w.QueryValueEx(handle, name)
        except FileNotFoundError:
            return None
        return value if isinstance(value, (str, int)) else None

    def delete_value(self, key: str, name: str) -> None:
        w = self._winreg
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, key, 0, w.KEY_SET_VALUE) as handle:
                w.DeleteValue(handle, name)
        except FileNotFoundError:
            pass

    def delete_key(self, key: str) -> None:
        try:
            self._winreg.DeleteKey(self._winreg.HKEY_CURRENT_USER, key)
        except FileNotFoundError:
            pass


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def make_shortcut(link: Path, target: Path, icon: Path) -> None:
    """Create a .lnk through the shell's WScript.Shell COM object (PowerShell ships with Windows)."""
    script = (
        f"$s = (New-Object -ComObject WScript.Shell).CreateShortcut({_ps_quote(str(link))}); "
        f"$s.TargetPath = {_ps_quote(str(target))}; $s.WorkingDirectory = {_ps_quote(str(target.parent))}; "
        f"$s.IconLocation = {_ps_quote(str(icon) + ',0')}; $s.Save()"
    )
    done = subprocess.run(
        ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", script],
        capture_output=True,
        text=True,
        creationflags=CREATE_NO_WINDOW,
        check=False,
    )
    if done.returncode != 0 or not link.exists():
        raise InstallError(
            f"cannot create the shortcut {link}: {done.stderr.strip() or 'PowerShell gave no reason'}",
            fix="check that PowerShell may run, or start AutoMail from its folder",
        )


def remove_after_exit(folder: Path) -> None:
    """Delete ``folder`` a few seconds after this process exits (Windows cannot delete a running .exe)."""
    command = f'ping -n 4 127.0.0.1 >nul & rmdir /s /q "{folder}"'
    subprocess.Popen(
        ["cmd.exe", "/d", "/c", command], creationflags=DETACHED_PROCESS | CREATE_NO_WINDOW, close_fds=True
    )


class WindowsInstaller:
    """What `AutoMail install` writes on Windows; registry, shortcuts and deferred removal are injected."""

    def __init__(
        self,
        env: Mapping[str, str],
        registry: Registry | None = None,
        shortcut: Callable[[Path, Path, Path], None] = make_shortcut,
        remove_later: Callable[[Path], None] = remove_after_exit,
        bundle: Path | None = None,
    ) -> None:
        try:
            local, roaming, profile = Path(env["LOCALAPPDATA"]), Path(env["APPDATA"]), Path(env["USERPROFILE"])
        except KeyError as exc:
            raise InstallError(
                f"the environment variable {exc.args[0]} is not set", fix="sign in to Windows normally and retry"
            ) from None
        self._app_dir = local / "Programs" / APP_NAME
        self.start_menu_link = roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / f"{APP_NAME}.lnk"
        self.desktop_link = profile / "Desktop" / f"{APP_NAME}.lnk"
        self._registry = registry
        self._shortcut = shortcut
        self._remove_later = remove_later
        self._bundle = bundle if bundle is not None else running_bundle()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = WinRegistry()
        return self._registry

    @property
    def app_dir(self) -> Path:
        return self._app_dir

    @property
    def app_exe(self) -> Path:
        return self._app_dir / exe_name(APP_EXE, "win32")

    def install(self, source: Path, options: InstallOptions) -> InstallReport:
        report = InstallReport()
        copy_bundle(source, self._app_dir)
        report.created.append(str(self._app_dir))
        self.start_menu_link.parent.mkdir(parents=True, exist_ok=True)
        self._shortcut(self.start_menu_link, self.app_exe, self.app_exe)
        report.created.append(str(self.start_menu_link))
        if options.desktop_icon:
            self._shortcut(self.desktop_link, self.app_exe, self.app_exe)
            report.created.append(str(self.desktop_link))
        else:
            remove_file(self.desktop_link, InstallReport())
        reg = self.registry
        values: dict[str, str | int] = {
            "DisplayName": APP_NAME,
            "DisplayVersion": __version__,
            "DisplayIcon": f"{self.app_exe},0",
            "Publisher": PUBLISHER,
            "InstallLocation": str(self._app_dir),
            "UninstallString": f'"{self.app_exe}" uninstall',
            "QuietUninstallString": f'"{self.app_exe}" uninstall',
            "EstimatedSize": folder_size_kb(self._app_dir),
            "NoModify": 1,
            "NoRepair": 1,
        }
        for name, value in values.items():
            reg.set_value(UNINSTALL_KEY, name, value)
        report.created.append(rf"HKCU\{UNINSTALL_KEY}")
        self.set_autostart(options.autostart, report)
        return report

    def uninstall(self) -> InstallReport:
        report = InstallReport()
        self.set_autostart(False, report)
        self.registry.delete_key(UNINSTALL_KEY)
        report.removed.append(rf"HKCU\{UNINSTALL_KEY}")
        for link in (self.start_menu_link, self.desktop_link):
            remove_file(link, report)
        if self._bundle is not None and self._bundle.resolve() == self._app_dir.resolve():
            self._remove_later(self._app_dir)  # the running executable is in it
            report.removed.append(f"{self._app_dir} (once AutoMail has exited)")
        else:
            remove_tree(self._app_dir, report)
        return report

    def autostart_enabled(self) -> bool:
        return self.registry.get_value(RUN_KEY, APP_NAME) is not None

    def set_autostart(self, enabled: bool, report: InstallReport | None = None) -> None:
        report = report if report is not None else InstallReport()
        if enabled:
            self.registry.set_value(RUN_KEY, APP_NAME, f'"{self.app_exe}" gui')
            report.created.append(rf"HKCU\{RUN_KEY}\{APP_NAME}")
        elif self.autostart_enabled():
            self.registry.delete_value(RUN_KEY, APP_NAME)
            report.removed.append(rf"HKCU\{RUN_KEY}\{APP_NAME}")

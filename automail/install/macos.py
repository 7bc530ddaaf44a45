"""macOS, per user: ~/Applications/AutoMail and a LaunchAgent that runs the sending engine at login.

The desktop app does not run on macOS yet (automail/__main__.py), so start at login runs
`automail run`, the headless engine.
"""

from __future__ import annotations

import plistlib
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from automail import APP_NAME

from .common import APP_EXE, CLI_EXE, InstallOptions, InstallReport, copy_bundle, remove_file, remove_tree

LABEL = "org.automail.AutoMail"


def run_launchctl(args: Sequence[str]) -> None:
    """Tell launchd about the agent now (it also reads ~/Library/LaunchAgents at the next login)."""
    subprocess.run(["launchctl", *args], capture_output=True, check=False)


class MacInstaller:
    """What `AutoMail install` writes on macOS; launchctl is injected."""

    def __init__(self, home: Path, launchctl: Callable[[Sequence[str]], None] = run_launchctl) -> None:
        self._app_dir = home / "Applications" / APP_NAME
        self.agent = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        self.log_file = home / "Library" / "Logs" / f"{APP_NAME}.log"
        self._launchctl = launchctl

    @property
    def app_dir(self) -> Path:
        return self._app_dir

    @property
    def app_exe(self) -> Path:
        return self._app_dir / APP_EXE

    def agent_plist(self) -> bytes:
        return plistlib.dumps(
            {
                "Label": LABEL,
                "ProgramArguments": [str(self._app_dir / CLI_EXE), "run"],
                "RunAtLoad": True,
                "KeepAlive": False,
                "ProcessType": "Interactive",
                "StandardErrorPath": str(self.log_file),
            }
        )

    def install(self, source: Path, options: InstallOptions) -> InstallReport:
        report = InstallReport()
        copy_bundle(source, self._app_dir)
        report.created.append(str(self._app_dir))
        self.set_autostart(options.autostart, report)
        return report

    def uninstall(self) -> InstallReport:
        report = InstallReport()
        self.set_autostart(False, report)
        remove_tree(self._app_dir, report)
        return report

    def autostart_enabled(self) -> bool:
        return self.agent.is_file()

    def set_autostart(self, enabled: bool, report: InstallReport | None = None) -> None:
        report = report if report is not None else InstallReport()
        if enabled:
            self.agent.parent.mkdir(parents=True, exist_ok=True)
            if self.agent.is_file():
                self._launchctl(["unload", str(self.agent)])  # reload an older agent
            self.agent.write_bytes(self.agent_plist())
            report.created.append(str(self.agent))
            self._launchctl(["load", "-w", str(self.agent)])
        elif self.agent.is_file():
            self._launchctl(["unload", "-w", str(self.agent)])
            remove_file(self.agent, report)

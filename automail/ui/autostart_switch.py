"""The main window's "Start at login" switch: on only for the installed built app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import customtkinter as ctk

from automail.errors import AutomailError
from automail.install.common import Installer, installer_for, is_installed_copy, running_bundle

log = logging.getLogger(__name__)


class AutostartSwitch(ctk.CTkSwitch):  # type: ignore[misc]
    """Switches the platform's start-at-login entry; ``report`` shows a problem in the status line."""

    def __init__(
        self,
        master: Any,
        report: Callable[[str], None],
        installer: Installer | None = None,
        installed: bool | None = None,
    ) -> None:
        self.installer = installer if installer is not None else installer_for()
        if installed is None:
            installed = is_installed_copy(running_bundle(), self.installer.app_dir)
        self.installed = installed
        text = "Start at login" if installed else "Start at login (once installed)"
        super().__init__(master, text=text, command=self._toggle)
        self._report = report
        if self.installer.autostart_enabled():
            self.select()
        if not self.installed:
            self.configure(state="disabled")

    def _toggle(self) -> None:
        wanted = bool(self.get())
        try:
            self.installer.set_autostart(wanted)
        except (AutomailError, OSError) as exc:
            log.warning("start at login not changed: %s", exc)
            self._report(f"Start at login was not changed: {exc}")
            (self.deselect if wanted else self.select)()

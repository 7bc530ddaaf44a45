"""First start of the built app from outside its install folder: a small window asking whether to install it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import customtkinter as ctk

from automail.errors import AutomailError
from automail.install.common import (
    Installer,
    InstallOptions,
    install_bundle,
    installer_for,
    remember_declined,
    running_bundle,
    should_offer_install,
)
from automail.paths import data_dir
from automail.ui import instance
from automail.ui.widgets import ERROR_COLOR, MUTED_COLOR, PAD, font

log = logging.getLogger(__name__)


class InstallPrompt:
    """Fills ``root`` with the question; ``install`` is called with the chosen options, ``done`` when the
    window should close (True: the installed copy was started, this one should exit)."""

    def __init__(
        self,
        root: Any,
        target: Path,
        install: Callable[[InstallOptions], None],
        decline: Callable[[bool], None],
        done: Callable[[bool], None],
    ) -> None:
        self.root, self._install, self._decline, self._done = root, install, decline, done
        root.title("Install AutoMail?")
        root.resizable(False, False)
        body = ctk.CTkFrame(root, fg_color="transparent")
        body.pack(fill="both", expand=True, padx=PAD, pady=PAD)
        ctk.CTkLabel(body, text="Install AutoMail on this computer?", font=font(17, "bold"), anchor="w").pack(fill="x")
        ctk.CTkLabel(
            body,
            text=f"AutoMail will be copied to {target}\nand added to your applications menu. "
            "No administrator rights are needed.",
            justify="left",
            anchor="w",
            text_color=MUTED_COLOR,
        ).pack(fill="x", pady=(6, 10))
        self.autostart = ctk.CTkCheckBox(body, text="Start AutoMail when I log in")
        self.autostart.select()
        self.autostart.pack(anchor="w", pady=(0, 6))
        self.desktop_icon = ctk.CTkCheckBox(body, text="Put a shortcut on the desktop")
        self.desktop_icon.select()
        self.desktop_icon.pack(anchor="w", pady=(0, 6))
        self.never = ctk.CTkCheckBox(body, text="Do not ask again")
        self.never.pack(anchor="w")
        self.error = ctk.CTkLabel(body, text="", text_color=ERROR_COLOR, anchor="w", justify="left", wraplength=460)
        self.error.pack(fill="x", pady=(8, 0))
        buttons = ctk.CTkFrame(root, fg_color="transparent")
        buttons.pack(fill="x", padx=PAD, pady=(0, PAD))
        self.install_button = ctk.CTkButton(buttons, text="Install", width=110, command=self.install)
        self.install_button.pack(side="right")
        self.run_button = ctk.CTkButton(buttons, text="Run without installing", width=170, command=self.run_here)
        self.run_button.pack(side="right", padx=(0, 8))
        root.protocol("WM_DELETE_WINDOW", self.run_here)
        root.bind("<Return>", lambda _e: self.install())  # Install is the default button
        self.install_button.focus_set()

    def install(self) -> None:
        options = InstallOptions(autostart=bool(self.autostart.get()), desktop_icon=bool(self.desktop_icon.get()))
        try:
            self._install(options)
        except AutomailError as exc:  # stay open and say why; "Run without installing" still works
            log.warning("install from the first-start window failed: %s", exc)
            self.error.configure(text=str(exc))
            return
        self._done(True)

    def run_here(self) -> None:
        self._decline(bool(self.never.get()))
        self._done(False)


def offer_install(make_root: Callable[[], Any]) -> bool:
    """Ask on the first start of a built app outside its install folder; True if the installed copy
    was installed and started (this process should then exit)."""
    installer = installer_for()
    home = data_dir()
    if not should_offer_install(getattr(sys, "frozen", False), running_bundle(), installer.app_dir, home, None):
        return False
    root = make_root()
    answer = {"installed": False}

    def install(options: InstallOptions) -> None:
        install_bundle(options, lambda: instance.quit_running_instance(home))
        start_installed(installer)

    def decline(never: bool) -> None:
        if never:
            remember_declined(home)

    def done(installed: bool) -> None:
        answer["installed"] = installed
        root.quit()

    InstallPrompt(root, installer.app_dir, install, decline, done)
    root.deiconify()
    try:
        root.mainloop()
    finally:
        root.destroy()
    return answer["installed"]


def start_installed(installer: Installer) -> None:
    """Start the installed copy, detached from this process, which is about to exit."""
    argv = [str(installer.app_exe)]
    if sys.platform == "win32":
        subprocess.Popen(argv, close_fds=True, creationflags=subprocess.DETACHED_PROCESS)
    else:
        subprocess.Popen(argv, close_fds=True, start_new_session=True)

"""The error panel of the main window: each task in error, why, and what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import customtkinter as ctk

from automail.ui.widgets import font

# (pattern in the engine's reason text, plain words, the fix) — first match wins.
_EXPLANATIONS: list[tuple[tuple[str, ...], str, str]] = [
    (
        ("login rejected", "login to", "authentication"),
        "SMTP login rejected",
        "open Settings › Basic and check the user name and password",
    ),
    (
        ("no password is stored",),
        "No password saved for this task",
        "open Settings › Basic › SMTP server login… and enter the password",
    ),
    (
        ("keyring",),
        "The password store (keyring) is not available",
        "unlock or install the system keyring, then start the task again",
    ),
    (
        ("refusing to send the password",),
        "The password would be sent without encryption",
        "open Settings › Basic and choose STARTTLS or SSL/TLS",
    ),
    (
        ("secure connection (tls)", "certificate", "ssl"),
        "Secure connection (TLS) failed",
        "open Settings › Basic and check the security setting and port (STARTTLS 587, SSL/TLS 465)",
    ),
    (
        ("does not offer login",),
        "The server does not offer login",
        "open Settings › Basic and choose STARTTLS (most servers allow login only after it)",
    ),
    (
        ("cannot reach", "refused the session", "dropped the connection", "did not answer", "connection to"),
        "The SMTP server cannot be reached",
        "check the network and the server name in Settings › Basic; AutoMail keeps retrying",
    ),
    (
        ("sender",),
        "The server refused the sender address",
        "open Settings › Basic and use an address this account may send as",
    ),
    (
        ("locked by", "another automail", "runs the task"),
        "Another AutoMail process runs this task",
        "close the other AutoMail window or command",
    ),
]


def explain(reason: str) -> tuple[str, str]:
    """Plain words and a fix for an engine error text (``"what — fix"`` or a raw SMTP error)."""
    low = reason.lower()
    for patterns, words, fix in _EXPLANATIONS:
        if any(p in low for p in patterns):
            return words, fix
    what, sep, fix = reason.partition(" — ")
    return (what or "Unknown error"), (fix if sep else "open Settings › Basic and use Test connection")


class ErrorPanel(ctk.CTkFrame):  # type: ignore[misc]
    """A red-bordered box listing tasks in error in every company; hidden (by the caller) when there are none."""

    def __init__(
        self, master: Any, on_settings: Callable[[str, str], None], on_start: Callable[[str, str], None]
    ) -> None:
        """``on_settings(company, task)`` and ``on_start(company, task)`` serve the row's buttons."""
        super().__init__(master, border_width=1, border_color=("#E5A0A0", "#8A3A3A"), fg_color=("#FDF1F1", "#3A2224"))
        self._on_settings = on_settings
        self._on_start = on_start
        self._shown: list[tuple[str, str, str]] = []
        self.title = ctk.CTkLabel(self, text="Problems", font=font(13, "bold"), text_color=("#B3261E", "#FF8A80"))
        self.title.grid(row=0, column=0, sticky="w", padx=12, pady=(8, 2))
        self.grid_columnconfigure(0, weight=1)
        self.rows: list[tuple[str, str]] = []  # (task, shown text) for tests and the tray
        self.buttons: list[tuple[ctk.CTkButton, ctk.CTkButton]] = []  # (Settings…, Start again) per row

    def set_errors(self, errors: list[tuple[str, str, str]]) -> None:
        """Show (company, task name, reason) triples; rebuilds only when they changed."""
        if errors == self._shown:
            return
        self._shown = list(errors)
        for child in self.winfo_children():
            if child is not self.title:
                child.destroy()
        self.rows = []
        self.buttons = []
        for i, (company, task, reason) in enumerate(errors, start=1):
            words, fix = explain(reason)
            text = f"{task} ({company}): {words} — {fix}."
            self.rows.append((task, text))
            line = ctk.CTkLabel(self, text="● " + text, anchor="w", justify="left", wraplength=760)
            line.grid(row=2 * i - 1, column=0, sticky="w", padx=12)
            detail = ctk.CTkLabel(
                self, text=reason, anchor="w", justify="left", wraplength=760, font=font(11), text_color="gray40"
            )
            detail.grid(row=2 * i, column=0, sticky="w", padx=26, pady=(0, 6 if i == len(errors) else 2))
            frame = ctk.CTkFrame(self, fg_color="transparent")
            frame.grid(row=2 * i - 1, column=1, rowspan=2, sticky="e", padx=(8, 12))
            settings = ctk.CTkButton(
                frame,
                text="Settings…",
                width=90,
                height=26,
                command=lambda c=company, t=task: self._on_settings(c, t),
            )
            settings.pack(side="left")
            start = ctk.CTkButton(
                frame, text="Start again", width=90, height=26, command=lambda c=company, t=task: self._on_start(c, t)
            )
            start.pack(side="left", padx=(6, 0))
            self.buttons.append((settings, start))

"""The strip atop the main window during `automail demo`: where the demo e-mails go, and a way to see them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import customtkinter as ctk

from . import tray


class DemoBanner(ctk.CTkFrame):  # type: ignore[misc]
    """Says that this is the demo, where its e-mails are saved, with an Open folder button."""

    def __init__(self, master: Any, folder: Path, server: str) -> None:
        super().__init__(master, corner_radius=6, fg_color=("#dbeafe", "#1e3a5f"))
        self.folder = folder
        self.grid_columnconfigure(0, weight=1)
        self.text = (
            f"Demo: the sample e-mails go to a test mail server on this computer ({server}), not to anyone. "
            f"They are saved in {folder} — the demo's temporary data folder, removed when you quit."
        )
        self.label = ctk.CTkLabel(self, text=self.text, anchor="w", justify="left", wraplength=900)
        self.label.grid(row=0, column=0, sticky="ew", padx=(12, 8), pady=8)
        self.open_button = ctk.CTkButton(self, text="Open folder", width=120, command=self.open_folder)
        self.open_button.grid(row=0, column=1, sticky="e", padx=(0, 12), pady=8)

    def open_folder(self) -> None:
        tray.open_folder(self.folder)

    def show_at_top(self) -> None:
        """Pack above the window's other contents (the main window packs into the same root)."""
        others = [w for w in self.master.pack_slaves() if w is not self]
        self.pack(fill="x", padx=16, pady=(12, 0), **({"before": others[0]} if others else {}))

"""The sending chart: messages sent and failed per hour over the last 24 hours, and the limit in force."""

from __future__ import annotations

import math
import time
import tkinter as tk
from collections.abc import Callable
from typing import Any

import customtkinter as ctk

from automail.models import SendingHistory
from automail.ui.widgets import MUTED_COLOR, font

SCOPE_TASK = "Selected task"
SCOPE_COMPANY = "Whole company"
CHART_HEIGHT = 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 14, 24, 22  # plot margins inside the canvas (px)
# (light, dark) pairs, like customtkinter's colours
_SENT = ("#2E7D32", "#66BB6A")
_FAILED = ("#C62828", "#FF6B6B")
_LIMIT = ("#B26A00", "#E3B341")
_GRID = ("#E1E6EB", "#3A3F44")
_TEXT = ("#5F6B76", "#A0A8B0")
_BACKGROUND = ("#FFFFFF", "#2B2B2B")


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (at least 5): a round top for the y axis."""
    value = max(value, 5)
    power = 10 ** math.floor(math.log10(value))
    return next(int(m * power) for m in (1, 2, 5, 10) if m * power >= value)


def summary_text(history: SendingHistory) -> str:
    """ "1,234 sent, 12 failed in the last 24 hours · limit 1,800/h · cap 10,000 per 24 hours" """
    hours = len(history.sent)
    parts = [f"{history.sent_total:,} sent, {history.failed_total:,} failed in the last {hours} hours"]
    parts.append(f"limit {history.rate_per_hour:,}/h" if history.rate_per_hour else "no hourly limit")
    if history.daily_cap:
        parts.append(f"cap {history.daily_cap:,} per 24 hours")
    return " · ".join(parts)


class SendingChart(ctk.CTkFrame):  # type: ignore[misc]
    """A header (title, scope switch) over a Tk canvas with one bar per hour; redraws only on change."""

    def __init__(self, master: Any, on_scope: Callable[[], None]) -> None:
        super().__init__(master, fg_color="transparent")
        header = ctk.CTkFrame(self, fg_color="transparent")
        header.pack(fill="x")
        self.title = ctk.CTkLabel(header, text="Sending, last 24 hours", font=font(13, "bold"), anchor="w")
        self.title.pack(side="left")
        self.scope = ctk.CTkSegmentedButton(header, values=[SCOPE_TASK, SCOPE_COMPANY], command=lambda _v: on_scope())
        self.scope.set(SCOPE_TASK)
        self.scope.pack(side="right")
        self.summary = ctk.CTkLabel(header, text="", text_color=MUTED_COLOR, font=font(12), anchor="w")
        self.summary.pack(side="left", padx=(12, 0))
        self.canvas = tk.Canvas(self, height=CHART_HEIGHT, highlightthickness=0, borderwidth=0)
        self.canvas.pack(fill="x", pady=(4, 0))
        self.canvas.bind("<Configure>", lambda _e: self._paint())
        self.history: SendingHistory | None = None
        self.subject = ""
        self._shown: tuple[object, ...] | None = None
        self.draw_count = 0  # for tests: redraws happen only when something changed

    @property
    def whole_company(self) -> bool:
        return bool(self.scope.get() == SCOPE_COMPANY)

    def show(self, history: SendingHistory | None, subject: str) -> None:
        """Show a history (None: nothing to show) for ``subject`` ("task Invoices", "Firma s.r.o.")."""
        if (history, subject) == (self.history, self.subject):
            return
        self.history, self.subject = history, subject
        self.title.configure(text=f"Sending of {subject}, last 24 hours" if subject else "Sending, last 24 hours")
        self.summary.configure(text=summary_text(history) if history else "")
        self._paint()

    def _color(self, pair: tuple[str, str]) -> str:
        return pair[1] if ctk.get_appearance_mode() == "Dark" else pair[0]

    def _paint(self) -> None:
        c = self.canvas
        width, height = c.winfo_width(), int(c.cget("height"))
        key = (self.history, width, height, ctk.get_appearance_mode())
        if key == self._shown or width < 100:
            return
        self._shown = key
        self.draw_count += 1
        c.delete("all")
        c.configure(bg=self._color(_BACKGROUND))
        history = self.history
        if history is None:
            c.create_text(width // 2, height // 2, text="No task selected", fill=self._color(_TEXT))
            return
        plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
        bottom = _TOP + plot_h
        totals = [s + f for s, f in zip(history.sent, history.failed, strict=True)]
        top = nice_ceiling(max([*totals, history.rate_per_hour or 0]) * 1.1)
        small = ("TkDefaultFont", 9)
        for value in (0, top // 2, top):  # grid lines with their counts
            y = bottom - plot_h * value / top
            c.create_line(_LEFT, y, width - _RIGHT, y, fill=self._color(_GRID))
            c.create_text(_LEFT - 6, y, text=f"{value:,}", anchor="e", fill=self._color(_TEXT), font=small)
        slot = plot_w / len(totals)
        for i, (sent, failed) in enumerate(zip(history.sent, history.failed, strict=True)):
            x0 = _LEFT + i * slot + slot * 0.15
            x1 = x0 + slot * 0.7
            y_sent = bottom - plot_h * sent / top
            if sent:
                c.create_rectangle(x0, y_sent, x1, bottom, fill=self._color(_SENT), width=0, tags=("bar", "sent"))
            if failed:
                y_failed = y_sent - plot_h * failed / top
                c.create_rectangle(x0, y_failed, x1, y_sent, fill=self._color(_FAILED), width=0, tags=("bar", "failed"))
            if i % 3 == 0 or i == len(totals) - 1:
                hour = time.strftime("%H:%M", time.localtime(history.start + i * 3600))
                label = "now" if i == len(totals) - 1 else hour
                c.create_text(x0 + slot * 0.35, bottom + 4, text=label, anchor="n", fill=self._color(_TEXT), font=small)
        if history.rate_per_hour:
            y = bottom - plot_h * history.rate_per_hour / top
            color = self._color(_LIMIT)
            c.create_line(_LEFT, y, width - _RIGHT, y, fill=color, dash=(6, 3), width=2, tags=("limit",))
            c.create_text(
                width - _RIGHT, y - 3, text=f"limit {history.rate_per_hour:,}/h", anchor="se", fill=color, font=small
            )
        self._legend(width)

    def _legend(self, width: int) -> None:
        c, x = self.canvas, _LEFT
        for label, pair in (("sent", _SENT), ("failed", _FAILED)):  # above the plot, clear of the limit line
            c.create_rectangle(x, 4, x + 10, 14, fill=self._color(pair), width=0)
            item = c.create_text(x + 14, 9, text=label, anchor="w", fill=self._color(_TEXT))
            x = c.bbox(item)[2] + 12

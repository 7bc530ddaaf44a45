"""Mailings of one company: progress of each, and Pause / Resume / Cancel / Retry failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.models import Mailing, MailingAction
from automail.ui.widgets import (
    ERROR_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    PAD,
    AppToplevel,
    Background,
    ConfirmDialog,
    ProgressLine,
    configure_changed,
    font,
    secondary_button,
    set_enabled,
)

if TYPE_CHECKING:
    from automail.engine.service import Service

REFRESH_MS = 1000  # the list is re-read this often while the window is open (one indexed query per mailing)
MAILINGS_SHOWN = 50
EMPTY_TEXT = "No mailing yet. Make one with New mailing… in the main window."
_REPACK = object()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def counts_text(m: Mailing) -> str:
    """ "120 of 1,240 sent · 3 failed · 2 deferred" — only the counts that are not zero after "sent"."""
    parts = [f"{m.sent:,} of {m.total:,} sent"]
    for count, word in ((m.failed, "failed"), (m.deferred, "deferred"), (m.cancelled, "cancelled")):
        if count:
            parts.append(f"{count:,} {word}")
    return " · ".join(parts)


def state_text(m: Mailing) -> str:
    if m.state == "scheduled":
        return f"Scheduled for {_when(m.not_before)}"
    return m.state.capitalize()


class MailingRow:
    """One mailing: name and state, a progress bar, counts, and its buttons.

    The list re-reads every mailing each second, while the engine may be sending in the same process:
    each Tcl call can then wait for the GIL, so a refresh reconfigures only what changed (an unchanged
    row costs no Tcl call) and the bar is a ProgressLine (CTkProgressBar.set costs ~74 calls).
    """

    def __init__(self, parent: Any, window: MailingsWindow, mailing: Mailing) -> None:
        self.name = mailing.name
        self.frame = ctk.CTkFrame(parent, border_width=1, corner_radius=6)
        self.frame.pack(fill="x", pady=(0, 8))
        self.frame.grid_columnconfigure(1, weight=1)
        self.title = ctk.CTkLabel(self.frame, text=mailing.name, font=font(14, "bold"), anchor="w")
        self.title.grid(row=0, column=0, sticky="w", padx=(12, 12), pady=(8, 0))
        self.state = ctk.CTkLabel(self.frame, text="", anchor="w")
        self.state.grid(row=0, column=1, sticky="w", pady=(8, 0))
        self.bar = ProgressLine(self.frame, width=200, height=12)
        self.bar.grid(row=1, column=0, columnspan=2, sticky="ew", padx=12, pady=(6, 0))
        self.counts = ctk.CTkLabel(self.frame, text="", text_color=MUTED_COLOR, anchor="w", font=font(12))
        self.counts.grid(row=2, column=0, columnspan=2, sticky="w", padx=12, pady=(2, 8))
        buttons = ctk.CTkFrame(self.frame, fg_color="transparent")
        buttons.grid(row=0, column=2, rowspan=3, sticky="e", padx=12, pady=8)
        self.paused = False
        self.pause_button = ctk.CTkButton(buttons, text="Pause", width=90, command=self._pause_or_resume)
        self.pause_button.pack(side="left")
        self.retry_button = ctk.CTkButton(
            buttons, text="Retry failed", width=110, command=lambda: window.retry_failed(self.name)
        )
        self.retry_button.pack(side="left", padx=(8, 0))
        self.cancel_button = ctk.CTkButton(
            buttons,
            text="Cancel",
            width=90,
            command=lambda: window.cancel(self.name),
            fg_color="#B3261E",
            hover_color="#8C1D18",
        )
        self.cancel_button.pack(side="left", padx=(8, 0))
        self.window = window
        self.show(mailing)

    def show(self, m: Mailing) -> None:
        """Draw the mailing's current state (only what changed is reconfigured)."""
        open_ = not (m.finished or m.was_cancelled)  # a cancelled mailing can only be retried (its failures)
        color = MUTED_COLOR if open_ or m.was_cancelled else ERROR_COLOR if m.failed else OK_COLOR
        configure_changed(self.state, text=state_text(m), text_color=color)
        configure_changed(self.counts, text=counts_text(m))
        self.bar.set((m.sent + m.failed + m.cancelled) / m.total if m.total else 1.0)  # drawn if it moves a pixel
        self.paused = m.paused
        set_enabled(self.pause_button, open_, text="Resume" if m.paused else "Pause")
        set_enabled(self.retry_button, m.failed > 0)
        set_enabled(self.cancel_button, open_, fg_color="#B3261E")

    def _pause_or_resume(self) -> None:
        (self.window.resume if self.paused else self.window.pause)(self.name)

    def destroy(self) -> None:
        self.frame.destroy()


class MailingsWindow(AppToplevel):
    """The mailings of one company, newest first, refreshed live from the outbox in the background."""

    def __init__(self, master: Any, service: Service, company: str) -> None:
        super().__init__(master)
        self.service = service
        self.company = company
        self.place_window(master, f"Mailings — {company}", "900x560", (720, 360))
        self.jobs = Background(self)
        self.busy = 0
        self.rows: dict[str, MailingRow] = {}
        self.mailings: list[Mailing] = []
        self.confirm: ConfirmDialog | None = None
        self.refresh_count = 0
        self._refresh_job: str | None = None
        self._empty_place: object = None  # where the note under the rows is packed: "", after a row (its name), None

        top = ctk.CTkFrame(self, fg_color="transparent")
        top.pack(fill="x", padx=PAD, pady=(PAD, 8))
        ctk.CTkLabel(top, text=f"Mailings of {company}", font=font(18, "bold")).pack(side="left")
        self.list = ctk.CTkScrollableFrame(self, fg_color="transparent")
        self.list.pack(fill="both", expand=True, padx=PAD)
        self.empty = ctk.CTkLabel(
            self.list,
            text=EMPTY_TEXT,
            text_color=MUTED_COLOR,
            anchor="w",
        )
        bottom = ctk.CTkFrame(self, fg_color="transparent")
        bottom.pack(fill="x", padx=PAD, pady=(10, PAD))
        self.status_line = ctk.CTkLabel(bottom, text="", anchor="w")
        self.status_line.pack(side="left")
        secondary_button(bottom, "Close", self.destroy).pack(side="right")
        self.bind("<Escape>", lambda _e: self.destroy())
        self.reload()
        self.later(200, self.lift)  # CTkToplevel may open behind its master (customtkinter#2483)

    # ---- loading --------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the mailings again now (the periodic refresh calls this too)."""
        self.cancel_after(self._refresh_job)
        self._refresh_job = None
        service, company = self.service, self.company
        self.busy += 1
        self.jobs.run(lambda: service.mailings(company), self._loaded, self._load_failed)

    def _schedule(self) -> None:
        if self._refresh_job is None and self.busy == 0:
            self._refresh_job = self.after(REFRESH_MS, self.reload)

    def _load_failed(self, exc: BaseException) -> None:
        self.busy -= 1
        self._say(str(exc), ok=False)
        self._schedule()

    def _loaded(self, mailings: list[Mailing]) -> None:
        self.busy -= 1
        self.refresh_count += 1
        # Newest first; each row is a dozen widgets, so only the newest MAILINGS_SHOWN are drawn.
        self.mailings = list(reversed(mailings))[:MAILINGS_SHOWN]
        older = len(mailings) - len(self.mailings)
        names = [m.name for m in self.mailings]
        for gone in set(self.rows) - set(names):
            self.rows.pop(gone).destroy()
        order_changed = list(self.rows) != [n for n in names if n in self.rows]
        for m in self.mailings:
            row = self.rows.get(m.name)
            if row is None:
                self.rows[m.name] = MailingRow(self.list, self, m)
                order_changed = True
            else:
                row.show(m)
        if order_changed:
            for name in names:
                self.rows[name].frame.pack_forget()
            for name in names:
                self.rows[name].frame.pack(fill="x", pady=(0, 8))
            self.rows = {n: self.rows[n] for n in names}
            self._empty_place = _REPACK  # the rows were packed again: the note must follow them again
        self._place_note(names, older)
        self._schedule()

    def _place_note(self, names: list[str], older: int) -> None:
        """The note under the rows (no mailing yet, or how many older ones are not shown); packed only when it moves."""
        place = None if names and not older else (names[-1] if names else "")
        if place is not None:
            configure_changed(self.empty, text=f"{older:,} older mailing(s) not shown." if older else EMPTY_TEXT)
        if place == self._empty_place:
            return
        self._empty_place = place
        if place is None:
            self.empty.pack_forget()
        elif place:
            self.empty.pack(fill="x", after=self.rows[place].frame)
        else:
            self.empty.pack(fill="x")

    def mailing(self, name: str) -> Mailing | None:
        return next((m for m in self.mailings if m.name == name), None)

    # ---- actions --------------------------------------------------------------------------
    def _say(self, text: str, ok: bool = True) -> None:
        self.status_line.configure(text=text, text_color=OK_COLOR if ok else ERROR_COLOR)

    def _change(self, action: MailingAction, name: str, said: Callable[[int], str]) -> None:
        """Run ``Service.change_mailing`` in the background (it changes only this mailing), then re-read."""
        service, company = self.service, self.company
        self.busy += 1

        def done(result: tuple[Mailing, int]) -> None:
            self.busy -= 1
            self._say(said(result[1]))
            self.reload()

        def failed(exc: BaseException) -> None:
            self.busy -= 1
            self._say(str(exc), ok=False)
            self.reload()

        self.jobs.run(lambda: service.change_mailing(action, name, company), done, failed)

    def pause(self, name: str) -> None:
        """Hold the mailing's waiting messages; other mailings go on."""
        self._change(MailingAction.PAUSE, name, lambda n: f"Mailing {name} paused: {n:,} message(s) held.")

    def resume(self, name: str) -> None:
        self._change(MailingAction.RESUME, name, lambda n: f"Mailing {name} resumed: {n:,} message(s) to send.")

    def retry_failed(self, name: str) -> None:
        self._change(
            MailingAction.RETRY_FAILED, name, lambda n: f"Mailing {name}: {n:,} failed message(s) queued again."
        )

    def cancel(self, name: str) -> None:
        """Cancel what has not left yet, after a confirmation."""
        m = self.mailing(name)
        left = m.pending if m is not None else 0
        self.confirm = ConfirmDialog(
            self,
            "Cancel mailing",
            f"Cancel the mailing {name}?\n{left:,} message(s) not sent yet will not be sent; "
            "messages already sent stay sent.",
            lambda: self._change(MailingAction.CANCEL, name, lambda n: f"Mailing {name}: {n:,} message(s) cancelled."),
            yes_text="Cancel mailing",
            no_text="Keep it",
        )

    def destroy(self) -> None:
        self.cancel_later()
        self.cancel_after(self._refresh_job)
        super().destroy()

"""The outbox window of one company: filter, search, one page of messages at a time, actions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.errors import AutomailError
from automail.models import MessageStatus, StoredMessage, Task
from automail.store.outbox import COUNT_CAP, SEARCH_SCAN_ROWS
from automail.ui.message_view import MessageView, message_text
from automail.ui.widgets import (
    ERROR_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    PAD,
    AppToplevel,
    Background,
    ConfirmDialog,
    OptionMenu,
    font,
    set_text,
    table_colors,
    table_with_scrollbar,
)

if TYPE_CHECKING:
    from automail.engine.service import Service

PAGE_SIZE = 200
ALL = "All messages"
STATUS_LABELS = {ALL: None, **{s.value.capitalize(): s for s in MessageStatus}}
COLUMNS = [
    ("id", "ID", 70, "e"),
    ("status", "Status", 90, "w"),
    ("to", "To", 190, "w"),
    ("subject", "Subject", 220, "w"),
    ("tag", "Tag", 90, "w"),
    ("attempts", "Tries", 50, "e"),
    ("created", "Queued at", 130, "w"),
    ("sent", "Sent at", 130, "w"),
    ("error", "Error", 150, "w"),
]
SEARCH_DELAY_MS = 300


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


@dataclass(frozen=True)
class PageResult:
    """One page as the background job read it."""

    messages: list[StoredMessage]
    total: int  # matching messages; a search stops counting at COUNT_CAP
    capped: bool
    newest: bool  # this is the newest page (position 0)
    indexed: bool  # the search used the full-text index (else only the newest SEARCH_SCAN_ROWS)
    seconds: float


def load_page(
    service: Service, company: str, status: MessageStatus | None, search: str, before: int | None, after: int | None
) -> PageResult:
    """Read one page by key and the count (runs in a background thread: no widget in here)."""
    started = time.perf_counter()
    box = service.outbox(company)
    newest = before is None and after is None
    if search and newest:
        messages, total = box.search_newest(status, search, PAGE_SIZE, COUNT_CAP)
    else:
        messages = box.page(status, search, before=before, after=after, limit=PAGE_SIZE)
        if after and len(messages) < PAGE_SIZE:  # stepped back to the newest messages: show a full page
            messages, newest = box.page(status, search, limit=PAGE_SIZE), True
        total = box.count(status, search, cap=COUNT_CAP if search else None)
    capped = bool(search) and total >= COUNT_CAP
    return PageResult(messages, total, capped, newest, box.search_indexed, time.perf_counter() - started)


def load_message(service: Service, company: str, msg_id: int) -> tuple[StoredMessage, bytes | None, Task | None]:
    """A message, its MIME bytes if still there, and the task that sends it (background thread)."""
    box = service.outbox(company)
    msg = box.get(msg_id)
    try:
        raw: bytes | None = box.raw(msg.id)
    except AutomailError:
        raw = None
    return msg, raw, service.sending_task(company, msg)


class OutboxWindow(AppToplevel):
    """Messages of one company, newest first, PAGE_SIZE at a time, paged by key.

    Every query runs in a background job (widgets.Background): the Tk thread only draws, so the
    window stays responsive at 1,000,000 messages while an engine writes to the same file.
    """

    def __init__(self, master: Any, service: Service, company: str) -> None:
        super().__init__(master)
        self.service = service
        self.company = company
        self.title(f"Outbox — {company}")
        self.geometry("1200x640")
        self.minsize(820, 420)
        if master.winfo_toplevel().state() == "normal":
            # A transient inherits a withdrawn master's state (Tk docs): opened from the tray while the
            # main window is hidden, the outbox must stand alone or it would never appear.
            self.transient(master.winfo_toplevel())
        self.offset = 0  # messages (matching the filter) newer than the first row shown
        self.total = 0
        self.capped = False
        self.messages: list[StoredMessage] = []
        self.message_view: MessageView | None = None
        self.confirm: ConfirmDialog | None = None
        self.load_seconds = 0.0
        self.jobs = Background(self)
        self.busy = 0  # background jobs running
        self._load_seq = 0  # only the newest load's result is drawn
        self._search_job: str | None = None

        top = ctk.CTkFrame(self, fg_color="transparent")
        top.pack(fill="x", padx=PAD, pady=(PAD, 8))
        ctk.CTkLabel(top, text=f"Outbox of {company}", font=font(18, "bold")).pack(side="left")
        self.refresh_button = ctk.CTkButton(top, text="Refresh", width=90, command=self.reload)
        self.refresh_button.pack(side="right")
        self.search = ctk.CTkEntry(top, width=260, placeholder_text="Search subject, recipient, sender…")
        self.search.pack(side="right", padx=(0, 10))
        self.search.bind("<KeyRelease>", self._search_typed)
        self.search.bind("<Return>", lambda _e: self.apply_filter())
        self.status_menu = OptionMenu(top, values=list(STATUS_LABELS), width=150, command=self.apply_filter)
        self.status_menu.pack(side="right", padx=(0, 10))
        ctk.CTkLabel(top, text="Show", text_color=MUTED_COLOR).pack(side="right", padx=(0, 8))

        self.tree, table = table_with_scrollbar(self, COLUMNS)
        table.pack(fill="both", expand=True, padx=PAD)
        self.tree.bind("<Double-1>", lambda _e: self.show_message())
        self.tree.tag_configure("failed", foreground=table_colors().error)
        self.tree.tag_configure("cancelled", foreground=table_colors().muted)

        pager = ctk.CTkFrame(self, fg_color="transparent")
        pager.pack(fill="x", padx=PAD, pady=(8, 0))
        self.first_button = ctk.CTkButton(pager, text="Newest", width=80, command=self.first_page)
        self.first_button.pack(side="left", padx=(0, 6))
        self.prev_button = ctk.CTkButton(pager, text="◀ Newer", width=100, command=self.previous_page)
        self.prev_button.pack(side="left")
        self.page_label = ctk.CTkLabel(pager, text="", width=330)
        self.page_label.pack(side="left", padx=10)
        self.next_button = ctk.CTkButton(pager, text="Older ▶", width=100, command=self.next_page)
        self.next_button.pack(side="left")
        self.last_button = ctk.CTkButton(pager, text="Oldest", width=80, command=self.last_page)
        self.last_button.pack(side="left", padx=(6, 0))
        self.info = ctk.CTkLabel(pager, text="", text_color=MUTED_COLOR, anchor="e")
        self.info.pack(side="right")

        actions = ctk.CTkFrame(self, fg_color="transparent")
        actions.pack(fill="x", padx=PAD, pady=(10, PAD))
        self.show_button = ctk.CTkButton(actions, text="Show message", width=130, command=self.show_message)
        self.show_button.pack(side="left")
        self.retry_button = ctk.CTkButton(actions, text="Retry failed", width=130, command=self.retry_failed)
        self.retry_button.pack(side="left", padx=(10, 0))
        self.cancel_button = ctk.CTkButton(
            actions,
            text="Cancel queued",
            width=130,
            command=self.cancel_queued,
            fg_color="#B3261E",
            hover_color="#8C1D18",
        )
        self.cancel_button.pack(side="left", padx=(10, 0))
        self.status_line = ctk.CTkLabel(actions, text="", anchor="w")
        self.status_line.pack(side="left", padx=(16, 0))
        ctk.CTkButton(
            actions,
            text="Close",
            width=100,
            command=self.destroy,
            fg_color="transparent",
            border_width=1,
            text_color=("gray10", "gray90"),
        ).pack(side="right")

        self.reload()
        self.later(200, self.lift)  # CTkToplevel may open behind its master (customtkinter#2483)

    # ---- loading -------------------------------------------------------------------
    @property
    def status_filter(self) -> MessageStatus | None:
        return STATUS_LABELS[self.status_menu.get()]

    def set_filter(self, status: MessageStatus | None = None, search: str = "") -> None:
        """Set the filter controls and reload page 1."""
        label = next(k for k, v in STATUS_LABELS.items() if v == status)
        self.status_menu.set(label)
        set_text(self.search, search)
        self.apply_filter()

    def _search_typed(self, _event: Any = None) -> None:
        if self._search_job is not None:
            self.after_cancel(self._search_job)
        self._search_job = self.after(SEARCH_DELAY_MS, self.apply_filter)

    def apply_filter(self, *_args: Any) -> None:
        self._search_job = None
        self.first_page()

    @property
    def page(self) -> int:
        """The 0-based number of the page shown (newest = 0)."""
        if self.offset + len(self.messages) >= self.total and not self.capped and self.total:
            return self.pages - 1
        return self.offset // PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))

    def reload(self) -> None:
        """Read the page shown again (after a change, or on Refresh)."""
        if self.offset == 0 or not self.messages:
            self.first_page()
        else:
            self._load(before=self.messages[0].id + 1)

    def first_page(self) -> None:
        """The newest messages."""
        self._load()

    def next_page(self) -> None:
        """Older messages: ``id < the last id shown`` (no OFFSET: every page costs the same)."""
        if self.messages:
            self._load(before=self.messages[-1].id, step=len(self.messages))

    def previous_page(self) -> None:
        """Newer messages: ``id > the first id shown``."""
        if self.messages:
            self._load(after=self.messages[0].id, step=-PAGE_SIZE)

    def last_page(self) -> None:
        """The oldest messages."""
        self._load(after=0, oldest=True)

    def _load(self, before: int | None = None, after: int | None = None, step: int = 0, oldest: bool = False) -> None:
        self._load_seq += 1
        seq = self._load_seq
        service, company = self.service, self.company
        status, search = self.status_filter, self.search.get().strip()
        self.busy += 1
        self.info.configure(text="loading…")
        self.jobs.run(
            lambda: load_page(service, company, status, search, before, after),
            lambda result: self._loaded(seq, result, step, oldest),
            self._load_failed,
        )

    def _load_failed(self, exc: BaseException) -> None:
        self.busy -= 1
        self.info.configure(text="")
        self._say(str(exc), ok=False)

    def _loaded(self, seq: int, result: PageResult, step: int, oldest: bool) -> None:
        self.busy -= 1
        if seq != self._load_seq:
            return  # a newer request is on its way
        self.total, self.capped = result.total, result.capped
        if result.newest:
            self.offset = 0
        elif oldest:
            self.offset = max(0, result.total - len(result.messages))
        else:
            self.offset = max(0, self.offset + step)
        self.messages = result.messages
        self._draw()
        self.load_seconds = result.seconds
        scope = "" if result.indexed or not self.search.get().strip() else f"; searched the newest {SEARCH_SCAN_ROWS:,}"
        self.info.configure(text=f"loaded in {self.load_seconds * 1000:.0f} ms{scope}")

    def _draw(self) -> None:
        selected = set(self.tree.selection())
        self.tree.delete(*self.tree.get_children())
        for i, m in enumerate(self.messages):
            error = f"{m.last_error_code} {m.last_error}".strip() if m.last_error_code else m.last_error
            tags = ["odd"] if i % 2 else []
            if m.status in (MessageStatus.FAILED, MessageStatus.CANCELLED):
                tags.append(m.status.value)
            self.tree.insert(
                "",
                "end",
                iid=str(m.id),
                values=(
                    m.id,
                    m.status.value,
                    ", ".join(m.recipients),
                    m.subject,
                    m.tag,
                    m.attempts,
                    _when(m.created_at),
                    _when(m.sent_at),
                    error,
                ),
                tags=tags,
            )
        keep = [iid for iid in selected if self.tree.exists(iid)]
        if keep:
            self.tree.selection_set(keep)
        plus = "+" if self.capped else ""
        first = self.offset + 1 if self.messages else 0
        last = self.offset + len(self.messages)
        self.page_label.configure(
            text=f"Page {self.page + 1:,} of {self.pages:,}{plus}  ·  {first:,}–{last:,} of {self.total:,}{plus}"
        )
        newer = "normal" if self.offset > 0 else "disabled"
        older = "normal" if len(self.messages) == PAGE_SIZE and (last < self.total or self.capped) else "disabled"
        self.first_button.configure(state=newer)
        self.prev_button.configure(state=newer)
        self.next_button.configure(state=older)
        self.last_button.configure(state=older)

    def destroy(self) -> None:
        self.cancel_later()
        if self._search_job is not None:
            self.after_cancel(self._search_job)
        super().destroy()

    @property
    def row_count(self) -> int:
        return len(self.tree.get_children())

    def selected_ids(self) -> list[int]:
        return [int(iid) for iid in self.tree.selection()]

    def select_ids(self, ids: list[int]) -> None:
        self.tree.selection_set([str(i) for i in ids])

    # ---- actions --------------------------------------------------------------------
    def _say(self, text: str, ok: bool = True) -> None:
        self.status_line.configure(text=text, text_color=OK_COLOR if ok else ERROR_COLOR)

    def _run(self, work: Any, done: Any) -> None:
        """Run ``work`` (a change to the outbox) in the background; ``done(result)`` on the Tk thread."""
        self.busy += 1

        def finished(result: Any) -> None:
            self.busy -= 1
            done(result)

        def failed(exc: BaseException) -> None:
            self.busy -= 1
            self._say(str(exc), ok=False)

        self.jobs.run(work, finished, failed)

    def retry_failed(self) -> None:
        """Retry the selected failed messages, or every failed one when none is selected."""
        by_id = {m.id: m for m in self.messages}
        chosen = [i for i in self.selected_ids() if i in by_id and by_id[i].status is MessageStatus.FAILED]
        if self.selected_ids() and not chosen:
            self._say("Select failed messages to retry (or none to retry every failed message).", ok=False)
            return
        service, company = self.service, self.company
        self._run(lambda: service.retry(company, chosen or None), self._retried)

    def _retried(self, count: int) -> None:
        self._say(f"{count:,} message(s) queued again." if count else "No failed messages to retry.")
        self.reload()

    def cancel_queued(self) -> None:
        """Cancel the selected queued or deferred messages (after a confirmation)."""
        by_id = {m.id: m for m in self.messages}
        chosen = [
            i
            for i in self.selected_ids()
            if i in by_id and by_id[i].status in (MessageStatus.QUEUED, MessageStatus.DEFERRED)
        ]
        if not chosen:
            self._say("Select the queued messages to cancel.", ok=False)
            return
        self.confirm = ConfirmDialog(
            self,
            "Cancel messages",
            f"Cancel {len(chosen):,} queued message(s)? They will not be sent.",
            lambda: self._do_cancel(chosen),
            yes_text="Cancel messages",
        )

    def _do_cancel(self, ids: list[int]) -> None:
        service, company = self.service, self.company
        self._run(lambda: service.cancel(company, ids), self._cancelled)

    def _cancelled(self, count: int) -> None:
        self._say(f"{count:,} message(s) cancelled.")
        self.reload()

    def show_message(self) -> None:
        ids = self.selected_ids()
        if not ids:
            self._say("Select a message to show.", ok=False)
            return
        service, company, msg_id = self.service, self.company, ids[0]
        self._run(lambda: load_message(service, company, msg_id), self._show)

    def _show(self, loaded: tuple[StoredMessage, bytes | None, Task | None]) -> None:
        msg, raw, task = loaded
        if self.message_view is not None and self.message_view.winfo_exists():
            self.message_view.destroy()
        self.message_view = MessageView(self, msg, message_text(msg, raw, task))

"""The outbox window of one company: filter, search, one page of messages at a time, actions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.errors import AutomailError
from automail.models import MessageStatus, StoredMessage
from automail.ui.message_view import MessageView, message_text
from automail.ui.widgets import (
    ERROR_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    PAD,
    AppToplevel,
    ConfirmDialog,
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


class OutboxWindow(AppToplevel):
    """Messages of one company, PAGE_SIZE at a time (never all rows: 100,000 open instantly)."""

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
        self.page = 0
        self.total = 0
        self.messages: list[StoredMessage] = []
        self.message_view: MessageView | None = None
        self.confirm: ConfirmDialog | None = None
        self.load_seconds = 0.0
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
        self.status_menu = ctk.CTkOptionMenu(top, values=list(STATUS_LABELS), width=150, command=self.apply_filter)
        self.status_menu.pack(side="right", padx=(0, 10))
        ctk.CTkLabel(top, text="Show", text_color=MUTED_COLOR).pack(side="right", padx=(0, 8))

        self.tree, table = table_with_scrollbar(self, COLUMNS)
        table.pack(fill="both", expand=True, padx=PAD)
        self.tree.bind("<Double-1>", lambda _e: self.show_message())
        self.tree.tag_configure("failed", foreground=table_colors().error)
        self.tree.tag_configure("cancelled", foreground=table_colors().muted)

        pager = ctk.CTkFrame(self, fg_color="transparent")
        pager.pack(fill="x", padx=PAD, pady=(8, 0))
        self.prev_button = ctk.CTkButton(pager, text="◀ Previous", width=110, command=self.previous_page)
        self.prev_button.pack(side="left")
        self.page_label = ctk.CTkLabel(pager, text="", width=300)
        self.page_label.pack(side="left", padx=10)
        self.next_button = ctk.CTkButton(pager, text="Next ▶", width=110, command=self.next_page)
        self.next_button.pack(side="left")
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
        self.page = 0
        self.reload()

    def reload(self) -> None:
        """Load the current page (one COUNT and one LIMIT/OFFSET query)."""
        started = time.perf_counter()
        box = self.service.outbox(self.company)
        status, search = self.status_filter, self.search.get().strip()
        self.total = box.count(status, search)
        pages = max(1, -(-self.total // PAGE_SIZE))
        self.page = min(self.page, pages - 1)
        self.messages = box.list(status, search, PAGE_SIZE, self.page * PAGE_SIZE)
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
        first = self.page * PAGE_SIZE + 1 if self.total else 0
        last = self.page * PAGE_SIZE + len(self.messages)
        self.page_label.configure(text=f"Page {self.page + 1:,} of {pages:,}  ·  {first:,}–{last:,} of {self.total:,}")
        self.prev_button.configure(state="normal" if self.page > 0 else "disabled")
        self.next_button.configure(state="normal" if self.page < pages - 1 else "disabled")
        self.load_seconds = time.perf_counter() - started
        self.info.configure(text=f"loaded in {self.load_seconds * 1000:.0f} ms")

    def destroy(self) -> None:
        self.cancel_later()
        if self._search_job is not None:
            self.after_cancel(self._search_job)
        super().destroy()

    def next_page(self) -> None:
        self.page += 1
        self.reload()

    def previous_page(self) -> None:
        self.page = max(0, self.page - 1)
        self.reload()

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

    def retry_failed(self) -> None:
        """Retry the selected failed messages, or every failed one when none is selected."""
        by_id = {m.id: m for m in self.messages}
        chosen = [i for i in self.selected_ids() if i in by_id and by_id[i].status is MessageStatus.FAILED]
        try:
            if chosen:
                count = self.service.retry(self.company, chosen)
            elif self.selected_ids():
                self._say("Select failed messages to retry (or none to retry every failed message).", ok=False)
                return
            else:
                count = self.service.retry(self.company, None)
        except AutomailError as exc:
            self._say(str(exc), ok=False)
            return
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
        try:
            count = self.service.cancel(self.company, ids)
        except AutomailError as exc:
            self._say(str(exc), ok=False)
            return
        self._say(f"{count:,} message(s) cancelled.")
        self.reload()

    def show_message(self) -> None:
        ids = self.selected_ids()
        if not ids:
            self._say("Select a message to show.", ok=False)
            return
        box = self.service.outbox(self.company)
        msg = box.get(ids[0])
        try:
            raw: bytes | None = box.raw(msg.id)
        except AutomailError:
            raw = None
        if self.message_view is not None and self.message_view.winfo_exists():
            self.message_view.destroy()
        task = self.service.sending_task(self.company, msg)
        self.message_view = MessageView(self, msg, message_text(msg, raw, task))

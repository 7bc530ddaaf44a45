"""The "Automatic tasks" main window: companies, their tasks, the server switch and the error panel."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.errors import AutomailError, InputError, OutboxExistsError
from automail.models import EventKind, Task, TaskState, TaskStatus, type_title
from automail.paths import log_dir, outbox_dir, safe_filename
from automail.ui import tray
from automail.ui.autostart_switch import AutostartSwitch
from automail.ui.chart import SendingChart
from automail.ui.error_panel import ErrorPanel, explain
from automail.ui.mailing_window import MailingWindow
from automail.ui.mailings_window import MailingsWindow
from automail.ui.outbox_window import OutboxWindow
from automail.ui.settings_dialog import SettingsDialog
from automail.ui.task_dialog import TaskDialog
from automail.ui.widgets import (
    ERROR_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    PAD,
    Background,
    ConfirmDialog,
    Dialog,
    Field,
    OptionMenu,
    configure_changed,
    font,
    input_error_text,
    set_enabled,
    table_with_scrollbar,
)

if TYPE_CHECKING:
    from automail.engine.service import Service
    from automail.models import EngineEvent

REFRESH_MS = 2000  # periodic check while visible (none while hidden)
REFRESH_BUDGET = 0.02  # a periodic refresh may use at most ~2 % of a core: slow ones run less often
FORCED_REFRESH_S = 60  # "sent last hour" changes with time alone: redraw at least this often
EVENT_COALESCE_MS = 250  # engine events arriving in a burst cause one refresh
NO_COMPANY = "(no company yet)"
COLUMNS = [
    ("name", "Name", 130, "w"),
    ("type", "Type", 175, "w"),
    ("computer", "Computer", 110, "w"),
    ("user", "User", 70, "w"),
    ("state", "State", 220, "w"),
    ("queued", "Queued", 75, "e"),
    ("sent", "Sent last hour", 115, "e"),
    ("failed", "Failed", 65, "e"),
    ("cadence", "Cadence", 150, "w"),
]
STATE_WORDS = {
    TaskState.STOPPED: "Stopped",
    TaskState.CONNECTING: "Connecting…",
    TaskState.RUNNING: "Running",
    TaskState.WAITING: "Waiting",
    TaskState.ERROR: "Error",
}


def state_text(status: TaskStatus | None, task: Task, computer: str) -> str:
    """ "Running", "Error: SMTP login rejected", "Stopped (runs on PC-7)"…"""
    if status is None:
        return "Stopped"
    words = STATE_WORDS[status.state]
    if status.state is TaskState.ERROR and status.last_error:
        return f"{words}: {explain(status.last_error)[0]}"
    if status.state is TaskState.STOPPED and task.enabled:
        if task.computer.lower() != computer.lower():
            return f"Enabled (runs on {task.computer})"
        return "Enabled (server stopped)"
    return words


class CompanyDialog(Dialog):
    """Add a company: its name and where its outbox database lives."""

    def __init__(self, master: Any, service: Service, on_added: Callable[[str], None]) -> None:
        super().__init__(master, "Add company")
        self.service = service
        self._on_added = on_added
        self.reuse_dialog: ConfirmDialog | None = None
        b = self.body
        b.grid_columnconfigure(1, weight=1)
        self._auto_location = ""
        self.location = Field(b, 2, "Outbox location", width=320)
        self.name = Field(b, 0, "Company name", width=320, on_change=self._follow_name)
        self.browse = ctk.CTkButton(b, text="Browse…", width=90, command=self._browse)
        self.browse.grid(row=2, column=2, sticky="w", padx=(8, 0), pady=(6, 0))
        ctk.CTkLabel(
            b,
            text="The outbox is a database file holding the company's messages.",
            text_color=MUTED_COLOR,
            font=font(12),
            anchor="w",
        ).grid(row=4, column=1, columnspan=2, sticky="w")
        self._follow_name()
        self.add_buttons("Add")
        self.later(250, self.name.entry.focus_set)

    def default_location(self, name: str) -> str:
        return str(outbox_dir(self.service.home) / f"{safe_filename(name or 'company')}.sqlite3")

    def _follow_name(self) -> None:
        # The location follows the name until the user changes it (typing or Browse…).
        if self.location.get() in ("", self._auto_location):
            self._auto_location = self.default_location(self.name.get().strip())
            self.location.set(self._auto_location)

    def _browse(self) -> None:
        current = Path(self.location.get() or self.default_location(self.name.get()))
        path = filedialog.asksaveasfilename(
            parent=self,
            title="Outbox location",
            initialdir=str(current.parent),
            initialfile=current.name,
            defaultextension=".sqlite3",
            filetypes=[("AutoMail outbox", "*.sqlite3"), ("All files", "*")],
        )
        if path:
            self.location.set(path)

    def ok(self, reuse: bool | None = None) -> None:
        self.name.clear_error()
        self.location.clear_error()
        self.clear_general_error()
        name, location = self.name.get().strip(), self.location.get().strip()
        try:
            company = self.service.add_company(name, location or None, reuse)
        except OutboxExistsError as exc:
            self.reuse_dialog = ConfirmDialog(
                self,
                "Outbox exists",
                f"An outbox for {name} already exists:\n{exc.path}\n{exc.messages:,} messages, {exc.pending:,} of them "
                "still to send.\n\nReuse it with its messages (they are sent once a task runs), or start with an "
                "empty outbox (the old file is kept, renamed with today's date)?",
                lambda: self.ok(reuse=True),
                yes_text="Reuse it",
                no_text="Start empty",
                on_no=lambda: self.ok(reuse=False),
            )
            return
        except InputError as exc:
            (self.location if exc.field == "outbox" else self.name).show_error(input_error_text(exc))
            return
        except AutomailError as exc:
            self.show_general_error(str(exc))
            return
        self.close()
        self._on_added(company.name)


class MainWindow:
    """Fills the given CTk root with the "Automatic tasks" window. All methods: Tk thread only."""

    def __init__(self, root: ctk.CTk, service: Service, *, on_quit: Callable[[], None]) -> None:
        self.root = root
        self.service = service
        self.on_quit = on_quit
        self.company: str | None = None
        self.statuses: dict[str, TaskStatus] = {}
        self.tasks: dict[str, Task] = {}
        self.task_dialog: TaskDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.company_dialog: CompanyDialog | None = None
        self.confirm: ConfirmDialog | None = None
        self.outbox_window: OutboxWindow | None = None
        self.mailing_window: MailingWindow | None = None
        self.mailings_window: MailingsWindow | None = None
        self.jobs = Background(root)
        self._tick_job: str | None = None
        self._event_job: str | None = None
        self._dirty = False
        self._stopping = False
        self.refresh_count = 0
        self.last_refresh_s = 0.0
        self._signature: tuple[object, ...] | None = None
        self._next_tick_ms = REFRESH_MS

        root.geometry("1180x760")
        root.minsize(900, 600)
        self._build()
        self._load_companies()
        self.refresh()
        self._schedule_tick()

    # ---- layout --------------------------------------------------------------------
    def _build(self) -> None:
        r = self.root
        header = ctk.CTkFrame(r, fg_color="transparent")
        header.pack(fill="x", padx=PAD, pady=(PAD, 10))
        ctk.CTkLabel(header, text="Automatic tasks", font=font(22, "bold")).pack(side="left")
        # In the header, not the company row: that row is full (its summary is clipped below ~1,200 px).
        self.new_mailing_button = ctk.CTkButton(header, text="New mailing…", width=120, command=self.new_mailing)
        self.new_mailing_button.pack(side="left", padx=(24, 8))
        self.mailings_button = ctk.CTkButton(header, text="Mailings…", width=110, command=self.open_mailings)
        self.mailings_button.pack(side="left")
        self.server_button = ctk.CTkButton(
            header, text="Start server", width=160, height=38, font=font(14, "bold"), command=self.toggle_server
        )
        self.server_button.pack(side="right")
        self.server_state = ctk.CTkLabel(header, text="", font=font(13))
        self.server_state.pack(side="right", padx=(0, 14))

        bar = ctk.CTkFrame(r, fg_color="transparent")
        bar.pack(fill="x", padx=PAD, pady=(0, 10))
        ctk.CTkLabel(bar, text="Company").pack(side="left")
        self.company_menu = OptionMenu(bar, values=[NO_COMPANY], width=240, command=self.select_company)
        self.company_menu.pack(side="left", padx=(10, 8))
        self.add_company_button = ctk.CTkButton(bar, text="Add company…", width=120, command=self.add_company)
        self.add_company_button.pack(side="left")
        self.remove_company_button = ctk.CTkButton(bar, text="Remove company…", width=140, command=self.remove_company)
        self.remove_company_button.pack(side="left", padx=(8, 0))
        self.outbox_button = ctk.CTkButton(bar, text="Outbox…", width=110, command=lambda: self.open_outbox())
        self.outbox_button.pack(side="right")
        self.summary = ctk.CTkLabel(bar, text="", text_color=MUTED_COLOR)
        self.summary.pack(side="right", padx=(0, 14))

        self.error_panel = ErrorPanel(r, on_settings=self.problem_settings, on_start=self.problem_start)
        self._error_anchor = ctk.CTkFrame(r, height=0, fg_color="transparent")
        self._error_anchor.pack(fill="x", padx=PAD)

        self.tree, table = table_with_scrollbar(r, COLUMNS)
        self._table = table
        table.pack(fill="both", expand=True, padx=PAD)
        self.tree.configure(selectmode="browse")
        self.tree.bind("<Double-1>", lambda _e: self.edit_task())
        self.tree.bind("<<TreeviewSelect>>", lambda _e: self._selection_changed())

        buttons = ctk.CTkFrame(r, fg_color="transparent")
        buttons.pack(fill="x", padx=PAD, pady=(10, 6))
        self.add_button = ctk.CTkButton(buttons, text="Add…", width=90, command=self.add_task)
        self.edit_button = ctk.CTkButton(buttons, text="Edit…", width=90, command=self.edit_task)
        self.remove_button = ctk.CTkButton(buttons, text="Remove", width=90, command=self.remove_task)
        self.settings_button = ctk.CTkButton(buttons, text="Settings…", width=100, command=self.open_settings)
        self.start_button = ctk.CTkButton(buttons, text="Start", width=90, command=self.start_task)
        self.stop_button = ctk.CTkButton(buttons, text="Stop", width=90, command=self.stop_task)
        for i, b in enumerate((self.add_button, self.edit_button, self.remove_button, self.settings_button)):
            b.pack(side="left", padx=(0 if i == 0 else 8, 0))
        self.stop_button.pack(side="right")
        self.start_button.pack(side="right", padx=(0, 8))

        footer = ctk.CTkFrame(r, fg_color="transparent")
        footer.pack(fill="x", padx=PAD, pady=(4, 12))
        # On Linux without a tray menu (pystray's xorg backend) the window must offer the tray's commands.
        quiet = {"fg_color": "transparent", "text_color": ("gray20", "gray80"), "hover_color": ("gray80", "gray30")}
        self.quit_button = ctk.CTkButton(
            footer, text="Quit AutoMail", width=110, height=26, command=self.on_quit, **quiet
        )
        self.quit_button.pack(side="right")
        self.log_button = ctk.CTkButton(
            footer, text="Open log folder", width=120, height=26, command=self.open_log_folder, **quiet
        )
        self.log_button.pack(side="right", padx=(0, 6))
        self.autostart_switch = AutostartSwitch(footer, report=lambda text: self._say(text, ok=False))
        self.autostart_switch.pack(side="right", padx=(0, 14))
        self.status_bar = ctk.CTkLabel(footer, text="", text_color=MUTED_COLOR, anchor="w", font=font(12))
        self.status_bar.pack(side="left", fill="x", expand=True)
        # Bottom rows take their space before the table, so a small window shrinks the table, not them.
        footer.pack_configure(side="bottom", before=table)
        buttons.pack_configure(side="bottom", before=table)
        self.chart = SendingChart(r, on_scope=self.update_chart)
        self.chart.pack(side="bottom", fill="x", padx=PAD, pady=(8, 0), before=buttons)

    def open_log_folder(self) -> None:
        """Show the log files in the file manager."""
        tray.open_folder(log_dir(self.service.home))

    # ---- companies ----------------------------------------------------------------
    def _load_companies(self) -> None:
        names = [c.name for c in self.service.companies()]
        self.company_menu.configure(values=names or [NO_COMPANY])
        if self.company is None or self.company.lower() not in {n.lower() for n in names}:
            self.company = names[0] if names else None
        self.company_menu.set(self.company or NO_COMPANY)

    def select_company(self, name: str) -> None:
        """Show the tasks of that company."""
        if name == NO_COMPANY:
            return
        match = next((c.name for c in self.service.companies() if c.name.lower() == name.lower()), None)
        if match is None:
            return
        self.company = match
        self.company_menu.set(match)
        self.refresh()

    def add_company(self) -> None:
        self.company_dialog = CompanyDialog(self.root, self.service, self._company_added)

    def remove_company(self) -> None:
        """Ask before removing the chosen company: how many messages would not be sent, which tasks go."""
        name = self.company
        if name is None:
            return
        load = self._call(self.service.company_load, name)
        if load is None:
            return
        pending, tasks, running = load
        if running:
            self._say(f"Stop the task(s) {', '.join(running)} first: {name} cannot be removed while they send.", False)
            return
        lines = [f"Remove the company {name}?"]
        lines.append(
            f"{pending:,} message(s) still to send will not be sent." if pending else "It has no messages to send."
        )
        if tasks:
            lines.append(f"Its task(s) {', '.join(tasks)} and their saved passwords are removed too.")
        lines.append("Its outbox file is kept in the outbox folder, renamed with today's date.")
        self.confirm = ConfirmDialog(
            self.root, "Remove company", "\n".join(lines), lambda: self._do_remove_company(name), yes_text="Remove"
        )

    def _do_remove_company(self, name: str) -> None:
        result = self._call(self.service.remove_company, name)
        if result is None:
            return
        _company, kept = result
        self.company = None
        self._load_companies()
        self.refresh()
        self._say(f"Company {name} removed." + (f" Its outbox was kept as {kept}." if kept else ""))

    def _company_added(self, name: str) -> None:
        self._load_companies()
        self.select_company(name)
        self._say(f"Company {name} added.")

    # ---- refresh ------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read tasks, states and counts from the service and redraw."""
        started = time.perf_counter()
        self._dirty = False
        self.refresh_count += 1
        self._signature = self._change_signature()
        try:
            if self.company is not None:
                tasks = self.service.tasks(self.company)
                statuses = self.service.status(tasks=tasks)
            else:
                tasks, statuses = [], []
            problems = self.service.problems()  # every company's: an error elsewhere must show too
        except AutomailError as exc:
            self._say(str(exc), ok=False)
            return
        self.tasks = {t.name: t for t in tasks}
        self.statuses = {s.task: s for s in statuses}
        selected = self.selected_task()
        existing = set(self.tree.get_children())
        for i, task in enumerate(tasks):
            st = self.statuses.get(task.name)
            values = (
                task.name,
                type_title(task.type),
                task.computer,
                task.user or "any",
                state_text(st, task, self.service.computer),
                f"{st.queued + st.deferred:,}" if st else "0",
                f"{st.sent_last_hour:,}" if st else "0",
                f"{st.failed:,}" if st else "0",
                task.cadence_text,
            )
            tags = ["odd"] if i % 2 else []
            if st is not None and st.state is TaskState.ERROR:
                tags.append("error")
            if task.name in existing:
                # Only rows whose values changed are touched (a refresh runs every 250 ms while sending).
                if tuple(self.tree.item(task.name, "values")) != tuple(map(str, values)):
                    self.tree.item(task.name, values=values)
                if list(self.tree.item(task.name, "tags") or ()) != tags:
                    self.tree.item(task.name, tags=tags)
                if self.tree.index(task.name) != i:
                    self.tree.move(task.name, "", i)
                existing.discard(task.name)
            else:
                self.tree.insert("", i, iid=task.name, values=values, tags=tags)
        for gone in existing:
            self.tree.delete(gone)
        if selected and self.tree.exists(selected):
            self.tree.selection_set(selected)
        elif tasks and not self.tree.selection():
            self.tree.selection_set(tasks[0].name)
        self.error_panel.set_errors(problems)
        if problems and not self.error_panel.winfo_manager():
            self.error_panel.pack(fill="x", padx=PAD, pady=(0, 10), after=self._error_anchor)
        elif not problems and self.error_panel.winfo_manager():
            self.error_panel.pack_forget()
        queued = sum(s.queued + s.deferred for s in statuses)
        sent = sum(s.sent_last_hour for s in statuses)
        configure_changed(
            self.summary, text=f"{queued:,} queued · {sent:,} sent in the last hour" if self.company else ""
        )
        self._update_server()
        self._update_buttons()
        self.update_chart()
        self.last_refresh_s = time.perf_counter() - started
        # service.status() counts the outbox (≈40 ms per task at 100,000 messages): keep its share small.
        self._next_tick_ms = max(REFRESH_MS, int(self.last_refresh_s / REFRESH_BUDGET * 1000))

    def _change_signature(self) -> tuple[object, ...]:
        """Cheap to compute; changes when anything the window shows may have changed."""
        try:
            # Every company's outbox: the Problems panel lists errors of all of them.
            versions = tuple(self.service.outbox(c.name).data_version() for c in self.service.companies())
            mtime = self.service.definitions.mtime()
        except AutomailError:
            versions, mtime = (), -1.0
        return (self.company, versions, mtime, self.service.engine_running, int(time.time() // FORCED_REFRESH_S))

    def _update_server(self) -> None:
        # configure_changed / set_enabled: a repeated configure would repaint a hovered button (flicker).
        if self._stopping:
            set_enabled(self.server_button, False, text="Stopping…")
            configure_changed(self.server_state, text="● Server stopping", text_color=("#9A6700", "#E3B341"))
        elif self.service.engine_running:
            set_enabled(self.server_button, True, text="Stop server", fg_color="#B3261E", hover_color="#8C1D18")
            configure_changed(self.server_state, text="● Server running", text_color=OK_COLOR)
        else:
            set_enabled(self.server_button, True, text="Start server", fg_color="#2E7D32", hover_color="#1B5E20")
            configure_changed(self.server_state, text="● Server stopped", text_color=MUTED_COLOR)

    def _update_buttons(self) -> None:
        has_company = self.company is not None
        task = self.tasks.get(self.selected_task() or "")
        set_enabled(self.add_button, has_company)
        set_enabled(self.remove_company_button, has_company)
        for b in (self.outbox_button, self.new_mailing_button, self.mailings_button):
            set_enabled(b, has_company)
        for b in (self.edit_button, self.remove_button, self.settings_button):
            set_enabled(b, task is not None)
        st = self.statuses.get(task.name) if task else None
        in_error = st is not None and st.state is TaskState.ERROR
        # Start also clears a sticky error (login, TLS), so it stays available for a task in error.
        set_enabled(self.start_button, task is not None and (not task.enabled or in_error))
        set_enabled(self.stop_button, task is not None and task.enabled)

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.update_chart()

    def update_chart(self) -> None:
        """Show the sending chart of the selected task, or of the whole company (cheap: indexed, 24 rows)."""
        if self.company is None:
            self.chart.show(None, "")
            return
        task = self.selected_task() if not self.chart.whole_company else None
        if task is not None and task not in self.tasks:
            task = None
        try:
            history = self.service.sending_history(self.company, task)
        except AutomailError as exc:
            self._say(str(exc), ok=False)
            return
        self.chart.show(history, f"task {task}" if task else self.company)

    def _visible(self) -> bool:
        try:
            return self.root.state() != "withdrawn" and bool(self.root.winfo_exists())
        except Exception:
            return False

    def _schedule_tick(self) -> None:
        if self._tick_job is None:
            self._tick_job = self.root.after(self._next_tick_ms, self._tick)

    def _tick(self) -> None:
        self._tick_job = None
        if not self._visible():
            return  # hidden: no polling at all; show() resumes it
        if self._change_signature() != self._signature:  # nothing changed: skip the counting queries
            self.refresh()
        self._schedule_tick()

    def on_event(self, event: EngineEvent) -> None:
        """An engine event (Tk thread): refresh soon, once per burst."""
        if event.kind in (EventKind.ENGINE_STARTED, EventKind.ENGINE_STOPPED):
            self._update_server()
        if not self._visible():
            self._dirty = True
            return
        if self._event_job is None:
            self._event_job = self.root.after(EVENT_COALESCE_MS, self._event_refresh)

    def _event_refresh(self) -> None:
        self._event_job = None
        self.refresh()

    # ---- window ---------------------------------------------------------------------
    def show(self) -> None:
        """Bring the window to the front."""
        self.root.deiconify()
        self.root.lift()
        try:
            self.root.focus_force()
        except Exception:
            pass
        self._load_companies()
        self.refresh()
        self._schedule_tick()

    def hide(self) -> None:
        """Hide to the tray; periodic refreshes stop."""
        self.root.withdraw()
        if self._tick_job is not None:
            self.root.after_cancel(self._tick_job)
            self._tick_job = None

    def open_outbox(self, company: str | None = None) -> None:
        """Open (or raise) the outbox window of a company (default: the chosen one)."""
        if company is not None:
            self.select_company(company)
        if self.company is None:
            self._say("Add a company first.", ok=False)
            return
        win = self.outbox_window
        if win is not None and win.winfo_exists() and win.company == self.company:
            win.reload()
            win.deiconify()
            win.lift()
            return
        if win is not None and win.winfo_exists():
            win.destroy()
        self.outbox_window = OutboxWindow(self.root, self.service, self.company)

    def new_mailing(self) -> None:
        """Open the New mailing window for the chosen company; the Mailings list opens once it is queued."""
        if self.company is None:
            self._say("Add a company first.", ok=False)
            return
        self.mailing_window = MailingWindow(self.root, self.service, self.company, lambda _name: self.open_mailings())

    def open_mailings(self) -> None:
        """Open (or raise and re-read) the Mailings list of the chosen company."""
        if self.company is None:
            self._say("Add a company first.", ok=False)
            return
        win = self.mailings_window
        if win is not None and win.winfo_exists() and win.company == self.company:
            win.reload()
            win.lift()
            return
        if win is not None and win.winfo_exists():
            win.destroy()
        self.mailings_window = MailingsWindow(self.root, self.service, self.company)

    def problem_settings(self, company: str, task: str) -> None:
        """The Problems panel's Settings…: show that task's company, select the task, open its settings."""
        self.select_company(company)
        self.select_task(task)
        self.open_settings(task)

    def problem_start(self, company: str, task: str) -> None:
        """The Problems panel's Start again (the task may belong to another company)."""
        self.select_company(company)
        self.start_task(task)

    # ---- tasks ----------------------------------------------------------------------
    def selected_task(self) -> str | None:
        sel = self.tree.selection()
        return str(sel[0]) if sel else None

    def select_task(self, name: str) -> None:
        if self.tree.exists(name):
            self.tree.selection_set(name)
            self.tree.see(name)
        self._update_buttons()

    def _say(self, text: str, ok: bool = True) -> None:
        self.status_bar.configure(text=text, text_color=MUTED_COLOR if ok else ERROR_COLOR)

    def add_task(self) -> None:
        if self.company is None:
            self._say("Add a company first.", ok=False)
            return
        self.task_dialog = TaskDialog(self.root, self.service, self.company, None, self._task_saved)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one service call; an AutomailError is shown in the status line and gives None."""
        try:
            return fn(*args)
        except AutomailError as exc:
            self._say(str(exc), ok=False)
            return None

    def edit_task(self) -> None:
        name = self.selected_task()
        if name is None:
            return
        task = self._call(self.service.task, name)
        if task is None:
            return
        self.task_dialog = TaskDialog(self.root, self.service, task.company, task, self._task_saved)

    def _task_saved(self, task: Task) -> None:
        self.refresh()
        self.select_task(task.name)
        self._say(f"Task {task.name} saved.")

    def open_settings(self, name: str | None = None) -> None:
        """The settings dialog of a task; OK saves it through service.edit_task."""
        name = name or self.selected_task()
        if name is None:
            return
        task = self._call(self.service.task, name)
        if task is None:
            return

        def save(changed: Task, password: str | None) -> None:
            self.service.edit_task(name, lambda t: t.with_settings_of(changed), password=password)
            self.root.after_idle(self.refresh)
            self._say(f"Settings of {name} saved.")

        self.settings_dialog = SettingsDialog(self.root, self.service, task, save)

    def remove_task(self) -> None:
        name = self.selected_task()
        if name is None:
            return
        self.confirm = ConfirmDialog(
            self.root,
            "Remove task",
            f"Remove the task {name!r}?\nIts settings and saved password are deleted; queued messages stay in the "
            "outbox.",
            lambda: self._do_remove(name),
            yes_text="Remove",
        )

    def _do_remove(self, name: str) -> None:
        if self._call(self.service.remove_task, name) is None:
            return
        self._say(f"Task {name} removed.")
        self.refresh()

    def start_task(self, name: str | None = None) -> None:
        name = name or self.selected_task()
        if name is None:
            return
        task = self._call(self.service.start_task, name)
        if task is None:
            return
        if not self.service.engine_running:
            self._say(f"Task {name} enabled — press Start server to begin sending.")
        elif not task.runs_here(self.service.computer, self.service.user):
            self._say(f"Task {name} enabled — it runs on {task.computer}, not on this computer.")
        else:
            self._say(f"Task {name} started.")
        self.refresh()

    def stop_task(self, name: str | None = None) -> None:
        name = name or self.selected_task()
        if name is None:
            return
        if self._call(self.service.stop_task, name) is None:
            return
        self._say(f"Task {name} stopped.")
        self.refresh()

    # ---- server ---------------------------------------------------------------------
    def toggle_server(self) -> None:
        if self._stopping:
            return
        if self.service.engine_running:
            self.stop_server()
        else:
            self.start_server()

    def start_server(self) -> None:
        if self._call(self.service.start_engine) is None:
            return
        self._say("Server started: enabled tasks of this computer are sending.")
        self.refresh()

    def stop_server(self) -> None:
        """Stop the engine in a worker thread (it finishes the message in flight, up to 15 s)."""
        self._stopping = True
        self._update_server()
        self._say("Stopping: finishing the messages in flight…")
        self.jobs.run(self.service.stop_engine, self._server_stopped, self._server_stop_failed)

    def _server_stopped(self, clean: object) -> None:
        self._stopping = False
        self._say("Server stopped." if clean else "Server stopped; a message in flight was interrupted.")
        self.refresh()

    def _server_stop_failed(self, exc: BaseException) -> None:
        self._stopping = False
        self._say(f"Stopping the server failed: {exc}", ok=False)
        self.refresh()

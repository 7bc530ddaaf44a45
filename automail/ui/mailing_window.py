"""New mailing: templates and a data file become a checked, previewed mailing, queued all or nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import filedialog
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail import api
from automail.errors import InputError
from automail.intake.sources import read_table
from automail.models import Task, check_address
from automail.ui.message_view import recipient_view
from automail.ui.widgets import (
    ERROR_COLOR,
    MUTED_COLOR,
    OK_COLOR,
    PAD,
    AppToplevel,
    Background,
    ErrorLine,
    Field,
    OptionMenu,
    ProgressLine,
    configure_changed,
    font,
    hint,
    input_error_text,
    secondary_button,
    set_enabled,
    table_with_scrollbar,
)

if TYPE_CHECKING:
    from automail.engine.service import Service

NONE = "(none)"
NO_DATA = "(choose a data file)"
NO_TASK = "(no task yet: add one in the main window)"
PROBLEMS_SHOWN = 1000  # rows of the Problems list (the count in the status line is the full one)
PREVIEW_COUNT = 5  # messages the preview steps through
PROGRESS_MS = 100  # progress bar update interval while a job runs
PROBLEM_COLUMNS = [("where", "Where", 120, "w"), ("column", "Column", 150, "w"), ("reason", "Problem", 520, "w")]
DATA_TYPES = [("Spreadsheets", "*.csv *.xlsx *.xlsm"), ("CSV", "*.csv"), ("Excel workbook", "*.xlsx"), ("All", "*")]
# The merge reports problems by the CLI's option names; here they are the window's fields.
FIELD_OF = {
    "data": "data",
    "encoding": "data",
    "sheet": "data",
    "template": "template",
    "html": "html",
    "subject": "subject",
    "to-column": "to",
    "name-column": "name_column",
    "attach-column": "attach_column",
    "not-before": "not_before",
    "mailing": "name",
    "name": "name",
}
# The merge's fixes name the CLI's options; this window has fields and lists instead.
GUI_WORDS = (
    ("give --subject,", "fill in Subject,"),
    ("give --template FILE, --html FILE or both", "choose a text template, an HTML template or both"),
    ("with --to-column", "in the Recipient column list"),
    ("with --name-column", "in the Name column list"),
    ("with --attach-column", "in the Attachment column list"),
    ("give the file's real encoding with --encoding", "save it from the spreadsheet program as CSV UTF-8"),
)


def gui_text(text: str) -> str:
    """An engine message with the CLI's option names replaced by this window's controls."""
    for cli, gui in GUI_WORDS:
        text = text.replace(cli, gui)
    return text


@dataclass(frozen=True)
class Inputs:
    """What the form says (read on the Tk thread, handed to background jobs: no widget in here)."""

    company: str
    data: str
    template: str
    html: str
    subject: str
    to_column: str
    name_column: str
    attach_column: str
    task: str  # the task that sends it ("" when the company has none yet)
    tag: str  # the tag that task serves: the messages carry it so that this task claims them
    name: str
    not_before: str
    # (size, mtime) of the data file and the templates: a file edited after Check must be read again.
    stamps: tuple[tuple[int, int] | None, ...] = ()


class Progress:
    """Rows checked so far: written by the background job, read by the Tk thread (two ints, no lock needed)."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def plan(service: Service, inputs: Inputs, progress: Progress, limit: int | None = None) -> api.MergePlan:
    """Read, render and check the mailing (background thread)."""
    return api.plan_merge(
        inputs.company,
        data=inputs.data,
        template=inputs.template or None,
        html=inputs.html or None,
        subject=inputs.subject or None,
        to_column=inputs.to_column,
        name_column=inputs.name_column or None,
        attach_column=inputs.attach_column or None,
        tag=inputs.tag,
        name=inputs.name or None,
        not_before=inputs.not_before or None,
        limit=limit,
        progress=progress,
        service=service,
    )


def stamp(path: str) -> tuple[int, int] | None:
    """Size and modification time of a file (None if there is none), to notice it changed."""
    try:
        st = Path(path).stat() if path else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


def task_choice(task: Task) -> str:
    """How a task is offered in the Send through list: its name, and the tag its messages get."""
    return f"{task.name} (tag {task.tags[0]})" if task.tags else task.name


def sending_task(service: Service, name: str) -> Task | None:
    """The chosen task, read again (background thread); None when the company has no task yet."""
    return service.task(name) if name else None


def send_test(service: Service, mailing: api.MergePlan, task: Task | None, address: str) -> str:
    """Send the first message of the mailing, now, through ``task`` to ``address`` only (background thread)."""
    if not mailing.messages:
        raise InputError("data", "the first row has a problem, so there is no message to send", fix="correct it first")
    if task is None:
        raise InputError(
            "test-to", f"{mailing.company} has no task to send through", fix="add a task in the main window first"
        )
    reply = service.send_now(task, mailing.messages[0].raw, [address])
    return f"Test message sent to {address} through task {task.name}: {reply}"


def preview_text(mailing: api.MergePlan, index: int, task: Task | None) -> str:
    """Message ``index`` of the mailing as its recipient will see it."""
    return "\n".join(recipient_view(mailing.messages[index].raw, task, all_headers=False))


def column_guess(columns: list[str], *words: str) -> str | None:
    """The first column whose name contains one of ``words`` (ignoring case)."""
    for word in words:
        for col in columns:
            if word in col.casefold():
                return col
    return None


class FileField(Field):
    """A Field with a Browse… button that opens a file chooser."""

    def __init__(
        self,
        parent: Any,
        row: int,
        label: str,
        filetypes: list[tuple[str, str]],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(parent, row, label, width=420, on_change=on_change)
        self.filetypes = filetypes
        self.browse = ctk.CTkButton(parent, text="Browse…", width=90, command=self._browse)
        self.browse.grid(row=row, column=2, sticky="w", padx=(8, 0), pady=(6, 0))
        # A long path shows its end, the file's name, whenever the user is not editing it.
        self.entry.bind("<FocusOut>", lambda _e: self.show_name(), add="+")

    def set(self, text: str) -> None:
        super().set(text)
        self.show_name()

    def show_name(self) -> None:
        """Scroll the entry to the end of its text: the file's name, not the start of a long folder path."""
        self.entry.icursor("end")
        self.entry.xview_moveto(1.0)

    def _browse(self) -> None:
        current = Path(self.get()) if self.get() else None
        path = filedialog.askopenfilename(
            parent=self.entry.winfo_toplevel(),
            title=self.label.cget("text"),
            initialdir=str(current.parent) if current else None,
            filetypes=self.filetypes,
        )
        if path:
            self.set(path)


class ColumnField:
    """A label and a drop-down of the data file's columns, with an error line under it."""

    def __init__(self, parent: Any, row: int, label: str, optional: bool) -> None:
        self.optional = optional
        ctk.CTkLabel(parent, text=label, anchor="w").grid(row=row, column=0, sticky="w", padx=(0, 12), pady=(6, 0))
        self.menu = OptionMenu(parent, values=[NONE if optional else NO_DATA], width=240)
        self.menu.grid(row=row, column=1, sticky="w", pady=(6, 0))
        self.error = ErrorLine(parent, wraplength=520)
        self.error.grid(row=row + 1, column=1, columnspan=2, sticky="w")
        self.error.grid_remove()

    def fill(self, columns: list[str], choice: str | None) -> None:
        values = ([NONE] if self.optional else []) + columns
        self.menu.configure(values=values or [NO_DATA])
        current = self.menu.get()
        if current not in columns:  # a column chosen for an earlier file stays chosen if this file has it
            self.menu.set(choice or (values[0] if values else NO_DATA))

    def get(self) -> str:
        value = str(self.menu.get())
        return "" if value in (NONE, NO_DATA) else value

    def set(self, value: str) -> None:
        self.menu.set(value or NONE)

    def show_error(self, text: str) -> None:
        self.error.show(text)

    def clear_error(self) -> None:
        self.error.clear()


class MailingWindow(AppToplevel):
    """Make a mailing: files, column mapping, check, preview, test message, queue.

    Every step that reads files or talks to the server runs in a background job (widgets.Background);
    the Tk thread only draws, so the window stays responsive while 50,000 rows are checked.
    """

    def __init__(
        self, master: Any, service: Service, company: str, on_queued: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(master)
        self.service = service
        self.company = company
        self.on_queued = on_queued
        self.place_window(master, f"New mailing — {company}", "980x780", (860, 680))
        self.jobs = Background(self)
        self.busy = 0
        self.progress = Progress()
        self.plan: api.MergePlan | None = None
        self.planned: Inputs | None = None  # the inputs self.plan was made from
        self.columns: list[str] = []
        self.preview_index = 0
        self.task: Task | None = None
        self._columns_seq = 0
        self._progress_job: str | None = None

        ctk.CTkLabel(self, text=f"New mailing for {company}", font=font(18, "bold"), anchor="w").pack(
            fill="x", padx=PAD, pady=(PAD, 6)
        )
        form = ctk.CTkFrame(self, fg_color="transparent")
        form.pack(fill="x", padx=PAD)
        form.grid_columnconfigure(1, weight=1)
        templates = [("Templates", "*.txt *.html *.htm *.eml"), ("All", "*")]
        self.template = FileField(form, 0, "Text template", templates, on_change=self._changed)
        self.html = FileField(form, 2, "HTML template", templates, on_change=self._changed)
        self.data = FileField(form, 4, "Data file", DATA_TYPES, on_change=self._data_changed)
        self.subject = Field(form, 6, "Subject", width=420, on_change=self._changed)
        self.to = ColumnField(form, 8, "Recipient column", optional=False)
        self.name_column = ColumnField(form, 10, "Name column", optional=True)
        self.attach_column = ColumnField(form, 12, "Attachment column", optional=True)
        for menu in (self.to, self.name_column, self.attach_column):
            menu.menu.configure(command=lambda _v: self._changed())
        self.tasks = {task_choice(t): t for t in service.tasks(company)}
        ctk.CTkLabel(form, text="Send through", anchor="w").grid(row=14, column=0, sticky="w", pady=(6, 0))
        self.task_menu = OptionMenu(
            form, values=list(self.tasks) or [NO_TASK], width=240, command=lambda _v: self._changed()
        )
        self.task_menu.grid(row=14, column=1, sticky="w", pady=(6, 0))
        self.name = Field(form, 16, "Mailing name", width=420, on_change=self._changed)
        self.not_before = Field(form, 18, "Send not before", width=200, on_change=self._changed)
        when = hint(form, "e.g. 2026-12-01 08:00; empty: as soon as possible")
        self.not_before.entry.grid_configure(sticky="w")
        when.grid(row=18, column=1, sticky="w", padx=(212, 0), pady=(6, 0))
        columns = hint(form, 'In a template, write a column as {{ first_name }} or {{ row["Meno zákazníka"] }}.')
        columns.grid(row=20, column=1, columnspan=2, sticky="w", pady=(4, 0))

        check_row = ctk.CTkFrame(self, fg_color="transparent")
        check_row.pack(fill="x", padx=PAD, pady=(10, 6))
        self.check_button = ctk.CTkButton(check_row, text="Check", width=110, command=self.check)
        self.check_button.pack(side="left")
        self.progress_bar = ProgressLine(check_row, width=220)
        self.progress_bar.pack(side="left", padx=(12, 0))
        self.status_line = ctk.CTkLabel(check_row, text="", anchor="w", justify="left", wraplength=560)
        self.status_line.pack(side="left", fill="x", expand=True, padx=(12, 0))

        self.tabs = ctk.CTkTabview(self, height=240)
        problems_tab = self.tabs.add("Problems")
        preview_tab = self.tabs.add("Preview")
        self.problems, table = table_with_scrollbar(problems_tab, PROBLEM_COLUMNS)
        table.pack(fill="both", expand=True)
        nav = ctk.CTkFrame(preview_tab, fg_color="transparent")
        nav.pack(fill="x")
        self.prev_button = ctk.CTkButton(nav, text="◀ Previous", width=100, command=lambda: self.show_preview(-1))
        self.prev_button.pack(side="left")
        self.next_button = ctk.CTkButton(nav, text="Next ▶", width=100, command=lambda: self.show_preview(1))
        self.next_button.pack(side="left", padx=(8, 0))
        self.preview_label = ctk.CTkLabel(nav, text="", text_color=MUTED_COLOR)
        self.preview_label.pack(side="left", padx=(12, 0))
        self.preview = ctk.CTkTextbox(preview_tab, font=ctk.CTkFont(family="TkFixedFont", size=12), wrap="word")
        self.preview.pack(fill="both", expand=True, pady=(6, 0))
        self.preview.configure(state="disabled")

        test_row = ctk.CTkFrame(self, fg_color="transparent")
        test_row.pack(side="bottom", fill="x", padx=PAD, pady=(10, 0))
        ctk.CTkLabel(test_row, text="Send the first message to").pack(side="left")
        self.test_to = ctk.CTkEntry(test_row, width=260, placeholder_text="you@example.com")
        self.test_to.pack(side="left", padx=(8, 8))
        self.test_button = ctk.CTkButton(test_row, text="Send test", width=110, command=self.send_test)
        self.test_button.pack(side="left")

        bottom = ctk.CTkFrame(self, fg_color="transparent")
        bottom.pack(side="bottom", fill="x", padx=PAD, pady=(12, PAD), before=test_row)
        # The rows at the bottom take their space first: a small window shrinks the tabs, not the buttons.
        self.tabs.pack(fill="both", expand=True, padx=PAD)
        secondary_button(bottom, "Close", self.destroy).pack(side="right")
        self.queue_button = ctk.CTkButton(bottom, text="Queue mailing", width=140, command=self.queue)
        self.queue_button.pack(side="right", padx=(0, 10))
        self._update_buttons()
        # No Esc to close: it would throw away a filled-in form (and Esc closes an open drop-down list).
        self.later(200, self.lift)  # CTkToplevel may open behind its master (customtkinter#2483)

    # ---- form ---------------------------------------------------------------------------
    def inputs(self) -> Inputs:
        task = self.tasks.get(str(self.task_menu.get()))
        return Inputs(
            self.company,
            self.data.get().strip(),
            self.template.get().strip(),
            self.html.get().strip(),
            self.subject.get().strip(),
            self.to.get(),
            self.name_column.get(),
            self.attach_column.get(),
            task.name if task else "",
            task.tags[0] if task and task.tags else "",
            self.name.get().strip(),
            self.not_before.get().strip(),
            tuple(stamp(self._path(f)) for f in (self.data, self.template, self.html)),
        )

    @staticmethod
    def _path(field: Field) -> str:
        return field.get().strip()

    def _fields(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "template": self.template,
            "html": self.html,
            "subject": self.subject,
            "to": self.to,
            "name_column": self.name_column,
            "attach_column": self.attach_column,
            "name": self.name,
            "not_before": self.not_before,
        }

    def _clear_errors(self) -> None:
        for field in self._fields().values():
            field.clear_error()

    def _changed(self) -> None:
        """An input changed: the last check no longer describes what would be queued."""
        self._update_buttons()

    def _data_changed(self) -> None:
        """Read the new data file's column names in the background (the file may be large)."""
        self._changed()
        path = self.data.get().strip()
        self._columns_seq += 1
        seq = self._columns_seq
        if not path or not Path(path).is_file():
            return
        self.jobs.run(
            lambda: list(read_table(path).columns), lambda cols: self._columns_read(seq, cols), self._columns_failed
        )

    def _columns_read(self, seq: int, columns: list[str]) -> None:
        if seq != self._columns_seq:
            return
        self.columns = columns
        self.data.clear_error()
        self.to.fill(columns, column_guess(columns, "email", "e-mail", "mail", "address"))
        self.name_column.fill(columns, column_guess(columns, "name", "meno", "jméno", "zákazník", "customer"))
        self.attach_column.fill(columns, column_guess(columns, "attach", "príloh", "příloh", "priloh", "file", "pdf"))
        self._changed()

    def _columns_failed(self, exc: BaseException) -> None:
        self.data.show_error(input_error_text(exc) if isinstance(exc, InputError) else str(exc))

    def _show_input_error(self, exc: BaseException) -> None:
        if isinstance(exc, InputError):
            key = FIELD_OF.get(exc.field)
            field = self._fields().get(key or "")
            if field is not None:
                field.show_error(gui_text(input_error_text(exc)))
                self._say("Nothing was queued: correct the field marked in red.", ok=False)
                return
            self._say(gui_text(input_error_text(exc)), ok=False)
            return
        self._say(gui_text(str(exc)), ok=False)

    def _missing(self, inputs: Inputs) -> bool:
        """Say what must be filled in before anything can be checked; True if something is missing."""
        missing = False
        if not inputs.data:
            self.data.show_error("Choose the data file (CSV or Excel workbook).")
            missing = True
        if not inputs.template and not inputs.html:
            self.template.show_error("Choose a text template, an HTML template, or both.")
            missing = True
        if inputs.data and not inputs.to_column:
            self.to.show_error("Choose the column that holds the recipients' addresses.")
            missing = True
        return missing

    # ---- background work ------------------------------------------------------------------
    def _say(self, text: str, ok: bool = True) -> None:
        # Only what changed: a new colour repaints the label (~18 Tcl calls), a new text is 3.
        configure_changed(self.status_line, text=text, text_color=OK_COLOR if ok else ERROR_COLOR)

    def _update_buttons(self) -> None:
        idle = self.busy == 0
        for button in (self.check_button, self.queue_button, self.test_button):
            set_enabled(button, idle)
        has_preview = self.plan is not None and bool(self.plan.messages)
        set_enabled(self.prev_button, has_preview and self.preview_index > 0)
        set_enabled(
            self.next_button,
            has_preview
            and self.plan is not None
            and self.preview_index < min(PREVIEW_COUNT, len(self.plan.messages)) - 1,
        )

    def _run(self, what: str, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``work`` in the background with the progress bar moving; ``done(result)`` on the Tk thread."""
        self.busy += 1
        self.progress.done = self.progress.total = 0
        self.progress_bar.set(0)
        self._say(what)
        self._update_buttons()
        if self._progress_job is None:
            self._tick_progress()

        def finished(result: Any) -> None:
            self._job_ended()
            done(result)

        def failed(exc: BaseException) -> None:
            self._job_ended()
            self._show_input_error(exc)

        self.jobs.run(work, finished, failed)

    def _job_ended(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.cancel_after(self._progress_job)
            self._progress_job = None
        self.progress_bar.set(1 if self.progress.total else 0)
        self._update_buttons()

    def _tick_progress(self) -> None:
        self._progress_job = None
        if self.busy == 0:
            return
        done, total = self.progress.done, self.progress.total
        if total:
            self.progress_bar.set(done / total)
            self._say(f"Checking rows: {done:,} of {total:,}…")
        self._progress_job = self.after(PROGRESS_MS, self._tick_progress)

    # ---- check --------------------------------------------------------------------------
    def check(self) -> None:
        """Read, render and check every row; show the problems and a preview. Nothing is queued."""
        self._clear_errors()
        inputs = self.inputs()
        if self._missing(inputs):
            self._say("Fill in the fields marked in red.", ok=False)
            return
        service, progress = self.service, self.progress
        self._run(
            "Reading the data file…",
            lambda: (plan(service, inputs, progress), sending_task(service, inputs.task)),
            lambda result: self._checked(inputs, *result),
        )

    def _checked(self, inputs: Inputs, mailing: api.MergePlan, task: Task | None) -> None:
        self.plan, self.planned, self.task = mailing, inputs, task
        self.problems.delete(*self.problems.get_children())
        # Only the rows shown are turned into text: a Treeview of 50,000 rows (or 50,000 reasons
        # rewritten on the Tk thread) would freeze the window while it fills.
        total = len(mailing.problems) + len(mailing.result.warnings)
        shown = itertools.islice(
            itertools.chain(
                ((p.where, p.column, p.reason, "error") for p in mailing.problems),
                (_warning_line(w) for w in mailing.result.warnings),
            ),
            PROBLEMS_SHOWN,
        )
        for i, (where, column, text, tag) in enumerate(shown):
            text = gui_text(text) if tag else text
            self.problems.insert("", "end", values=(where, column, text), tags=[t for t in (tag, i % 2 * "odd") if t])
        if total > PROBLEMS_SHOWN:
            more = f"{total - PROBLEMS_SHOWN:,} more not listed: correct these first, then check again"
            self.problems.insert("", "end", values=("…", "", more))
        rows = len(mailing.table.rows)
        if mailing.problems:
            self._say(
                f"{len(mailing.problems):,} problem(s) in {rows:,} row(s): correct the rows listed under Problems, "
                "then check again. Nothing was queued.",
                ok=False,
            )
            self.tabs.set("Problems")
        else:
            extra = f" ({len(mailing.result.warnings)} warning(s) under Problems)" if mailing.result.warnings else ""
            self._say(f"All {rows:,} row(s) are correct: {len(mailing.messages):,} message(s) ready to queue{extra}.")
            self.tabs.set("Preview")
        if not self.name.get().strip():
            self.name.set(mailing.name)
            self.planned = self.inputs()
        self.preview_index = 0
        self.show_preview(0)

    def show_preview(self, step: int) -> None:
        """Show the previous (-1), the same (0) or the next (1) of the first messages."""
        text, label = "(check the mailing to see its first messages here)", ""
        if self.plan is not None and self.plan.messages:
            last = min(PREVIEW_COUNT, len(self.plan.messages)) - 1
            self.preview_index = max(0, min(last, self.preview_index + step))
            text = preview_text(self.plan, self.preview_index, self.task)
            count = len(self.plan.messages)
            of = f"{count:,}" if count <= PREVIEW_COUNT else f"{count:,} (the first {PREVIEW_COUNT} are shown)"
            row = self.plan.result.rows[self.preview_index]
            label = f"Message {self.preview_index + 1} of {of}, made from {row.where}"
        elif self.plan is not None:
            text = "(no row became a message: see Problems)"
        self.preview.configure(state="normal")
        self.preview.delete("1.0", "end")
        self.preview.insert("1.0", text)
        self.preview.configure(state="disabled")
        self.preview_label.configure(text=label)
        self._update_buttons()

    @property
    def preview_text(self) -> str:
        return str(self.preview.get("1.0", "end-1c"))

    def problem_rows(self) -> list[tuple[str, ...]]:
        return [tuple(self.problems.item(i, "values")) for i in self.problems.get_children()]

    # ---- test message -----------------------------------------------------------------
    def send_test(self) -> None:
        """Send the first message, now, to the address given (the mailing is not queued)."""
        self._clear_errors()
        try:
            address = check_address("test address", self.test_to.get().strip())
        except InputError as exc:
            self._say(input_error_text(exc), ok=False)
            return
        inputs = self.inputs()
        if self._missing(inputs):
            self._say("Fill in the fields marked in red.", ok=False)
            return
        service, progress, current = self.service, self.progress, self.plan if self.planned == inputs else None

        def work() -> str:
            mailing = current or plan(service, inputs, progress, limit=1)
            return send_test(service, mailing, sending_task(service, inputs.task), address)

        self._run(f"Sending a test message to {address}…", work, lambda reply: self._say(reply))

    # ---- queue ----------------------------------------------------------------------------
    def queue(self) -> None:
        """Queue the mailing in one transaction, after checking it again if anything changed."""
        self._clear_errors()
        inputs = self.inputs()
        if self._missing(inputs):
            self._say("Fill in the fields marked in red.", ok=False)
            return
        service, progress, current = self.service, self.progress, self.plan if self.planned == inputs else None

        def work() -> tuple[api.MergePlan, list[int]]:
            mailing = current or plan(service, inputs, progress)
            if mailing.problems:
                return mailing, []
            return mailing, api.queue_merge(mailing)

        self._run("Checking and queuing…", work, lambda result: self._queued(inputs, *result))

    def _queued(self, inputs: Inputs, mailing: api.MergePlan, ids: list[int]) -> None:
        if not ids:
            self._checked(inputs, mailing, self.task)
            return
        when = f", not before {inputs.not_before}" if inputs.not_before else ""
        self._say(f"Queued {len(ids):,} message(s) as mailing {mailing.name}{when}.")
        self.plan = self.planned = None
        if self.on_queued is not None:
            self.on_queued(mailing.name)

    def destroy(self) -> None:
        self.cancel_later()
        self.cancel_after(self._progress_job)
        super().destroy()


def _warning_line(warning: str) -> tuple[str, str, str, str]:
    """A merge warning ("line 7: jan@example.sk also gets the message of line 2") as a Problems row."""
    where, _sep, text = warning.partition(": ")
    return (where, "", f"warning: {text}", "") if text else ("", "", f"warning: {warning}", "")

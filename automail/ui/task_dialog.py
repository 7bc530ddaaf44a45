"""The "Automatic task" form: type, name, computer, user, and the way into the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.errors import InputError
from automail.models import TASK_TYPES, SmtpSettings, Task, overlap_warning, type_title
from automail.ui.settings_dialog import SETTINGS_ERROR_FIELDS, SettingsDialog
from automail.ui.widgets import (
    LABEL_WIDTH,
    MUTED_COLOR,
    ROW_GAP,
    Dialog,
    ErrorLine,
    Field,
    OptionMenu,
    input_error_text,
)

if TYPE_CHECKING:
    from automail.engine.service import Service

_TYPE_TITLES = {t.title: t.key for t in TASK_TYPES.values()}


class TaskDialog(Dialog):
    """Add (task=None) or edit a task of ``company``; saves through the service on OK only."""

    def __init__(
        self,
        master: Any,
        service: Service,
        company: str,
        task: Task | None,
        on_saved: Callable[[Task], None],
    ) -> None:
        super().__init__(master, "Automatic task")
        self.service = service
        self.company = company
        self.original = task
        self._on_saved = on_saved
        # The draft holds the settings until OK; the password goes to the keyring only then.
        self.draft: Task = task or Task(name="", company=company, smtp=SmtpSettings(host=""))
        self.settings_done = task is not None
        self.password: str | None = None
        self.settings_dialog: SettingsDialog | None = None

        b = self.body
        b.grid_columnconfigure(1, weight=1)
        ctk.CTkLabel(b, text="Type", anchor="w", width=LABEL_WIDTH).grid(row=0, column=0, sticky="w", padx=(0, 12))
        self.type_menu = OptionMenu(b, values=list(_TYPE_TITLES), width=280)
        self.type_menu.grid(row=0, column=1, sticky="w")
        self.type_menu.set(type_title(self.draft.type))

        self.name = Field(b, 1, "Name", placeholder="e.g. Invoices")
        self.name.set(self.draft.name)  # editable: a rename moves the password, state and history too

        ctk.CTkLabel(b, text="Company", anchor="w").grid(row=3, column=0, sticky="w", pady=(ROW_GAP, 0))
        ctk.CTkLabel(b, text=company, anchor="w").grid(row=3, column=1, sticky="w", pady=(ROW_GAP, 0))

        self.note = ctk.CTkLabel(
            b, text="", anchor="w", justify="left", text_color=("#9A6700", "#E3B341"), wraplength=300
        )
        self.note.grid(row=6, column=1, sticky="w")
        self.computer = Field(b, 4, "Computer", on_change=self._update_note)
        self.computer.set(self.draft.computer if task is not None else service.computer)

        self.user = Field(b, 7, "User", placeholder="optional: only for this OS user")
        self.user.set(self.draft.user)

        ctk.CTkLabel(b, text="Settings", anchor="w").grid(row=9, column=0, sticky="w", pady=(ROW_GAP + 6, 0))
        row = ctk.CTkFrame(b, fg_color="transparent")
        row.grid(row=9, column=1, sticky="w", pady=(ROW_GAP + 6, 0))
        self.settings_button = ctk.CTkButton(row, text="Settings…", width=110, command=self.open_settings)
        self.settings_button.pack(side="left")
        self.settings_state = ctk.CTkLabel(row, text="", anchor="w", text_color=MUTED_COLOR)
        self.settings_state.pack(side="left", padx=(10, 0))
        self.settings_error = ErrorLine(b, wraplength=300)
        self.settings_error.grid(row=10, column=1, sticky="w")
        self.settings_error.grid_remove()
        self.overlap = ctk.CTkLabel(
            b, text="", anchor="w", justify="left", text_color=("#9A6700", "#E3B341"), wraplength=300
        )
        self.overlap.grid(row=11, column=1, sticky="w", pady=(ROW_GAP, 0))
        self.overlap.grid_remove()

        self._update_note()
        self._update_settings_state()
        self.add_buttons()
        self.later(250, (self.computer if task else self.name).entry.focus_set)

    def _update_overlap(self) -> None:
        """Warn (not refuse) when another task of this company on this computer would take the same messages."""
        probe = replace(
            self.draft,
            name=self.name.get().strip() or (self.original.name if self.original else "this task"),
            company=self.company,
            computer=self.computer.get().strip() or self.service.computer,
            user=self.user.get().strip() if hasattr(self, "user") else self.draft.user,
        )
        others = [t for t in self.service.overlapping(probe) if not self.original or t.name != self.original.name]
        if others:
            text = overlap_warning(probe, others)
            self.overlap.configure(text=f"Warning: {text[:1].upper()}{text[1:]}. Give them different scope tags "
                                   "(Settings… › Other).")  # fmt: skip
            self.overlap.grid()
        else:
            self.overlap.configure(text="")
            self.overlap.grid_remove()

    @property
    def overlap_text(self) -> str:
        return str(self.overlap.cget("text"))

    def _update_note(self) -> None:
        if hasattr(self, "overlap"):
            self._update_overlap()
        computer = self.computer.get().strip()
        if computer and computer.lower() != self.service.computer.lower():
            here = self.service.computer
            self.note.configure(text=f"Assigned to {computer}: this task will not run on this computer ({here}).")
            self.note.grid()
        else:
            self.note.configure(text="")
            self.note.grid_remove()

    def _update_settings_state(self) -> None:
        if self.settings_done:
            smtp = self.draft.smtp
            self.settings_state.configure(text=f"{smtp.host}:{smtp.port}, {self.draft.cadence_text}")
        else:
            self.settings_state.configure(text="not set up yet")

    @property
    def note_text(self) -> str:
        return str(self.note.cget("text"))

    def open_settings(self) -> None:
        draft = replace(self.draft, name=self.name.get().strip())
        self.settings_dialog = SettingsDialog(
            self, self.service, draft, self._settings_ok, password=self.password, smtp_set=self.settings_done
        )

    def _settings_ok(self, task: Task, password: str | None) -> None:
        self.draft = self.draft.with_settings_of(task)
        self.settings_done = True
        if password:
            self.password = password
        self.settings_error.clear()
        self._update_settings_state()
        self._update_overlap()

    def build(self) -> Task:
        """The task as entered, validated; raises InputError naming the field."""
        task = replace(
            self.draft,
            type=_TYPE_TITLES.get(self.type_menu.get(), self.draft.type),
            name=self.name.get(),
            computer=self.computer.get(),
            user=self.user.get(),
            company=self.company,
        )
        if not self.settings_done:
            if not task.name.strip():
                task.validate()  # the name error first, where the user starts
            raise InputError("settings", "the SMTP server and sender are not set up", fix="click Settings…")
        return task.validate()

    def _fields(self) -> dict[str, Field]:
        return {"name": self.name, "task": self.name, "computer": self.computer, "user": self.user}

    def _clear_errors(self) -> None:
        for f in self._fields().values():
            f.clear_error()
        self.settings_error.clear()
        self.clear_general_error()

    def show_error(self, exc: InputError) -> None:
        text = input_error_text(exc)
        field = self._fields().get(exc.field)
        if field is not None:
            field.show_error(text)
        elif exc.field == "settings" or exc.field in SETTINGS_ERROR_FIELDS:
            self.settings_error.show(text)
        else:
            self.show_general_error(text)

    def ok(self) -> None:
        self._clear_errors()
        try:
            task = self.build()
            if self.original is None:
                saved = self.service.add_task(task, password=self.password)
            else:

                def change(t: Task) -> Task:
                    return replace(
                        t.with_settings_of(task), name=task.name, type=task.type, computer=task.computer, user=task.user
                    )

                saved = self.service.edit_task(self.original.name, change, password=self.password)
        except InputError as exc:
            self.show_error(exc)
            return
        except Exception as exc:  # keyring or definitions refused: nothing was saved
            self.show_general_error(str(exc))
            return
        self.close()
        self._on_saved(saved)

"""The "Settings of automatic task" dialog: Basic (SMTP server, tests) and Other (throttle, retries, scope,
sending windows)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from automail.engine.service import TEST_TIMEOUT_S
from automail.errors import InputError
from automail.models import (
    DEFAULT_RATE,
    RATE_MAX,
    RATE_MIN,
    Security,
    SmtpSettings,
    Task,
    check_address,
    check_no_newline,
    type_title,
    unique_tags,
)
from automail.ui.smtp_dialog import SECURITY_LABELS, SMTP_FIELDS, SmtpDialog
from automail.ui.widgets import (
    ERROR_COLOR,
    LABEL_WIDTH,
    MUTED_COLOR,
    OK_COLOR,
    ROW_GAP,
    AskDialog,
    Background,
    Dialog,
    ErrorLine,
    Field,
    OptionMenu,
    ReadOnlyText,
    font,
    input_error_text,
    set_text,
)

# InputError fields the settings dialog (Basic and Other tabs) shows
SETTINGS_ERROR_FIELDS = (*SMTP_FIELDS, "rate", "daily-cap", "retry-delays", "tag", "window")

if TYPE_CHECKING:
    from automail.engine.service import Service

PRESET_CUSTOM = "Custom"
PRESET_M365 = "Microsoft 365 — 1,800/h, 10,000/day"
PRESET_GOOGLE = "Google Workspace — 2,000/day"
PRESETS: dict[str, tuple[int | None, int | None]] = {
    # (rate per hour, rolling 24-hour cap); None leaves the value as it is
    PRESET_M365: (1800, 10000),
    PRESET_GOOGLE: (None, 2000),
}
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400}
_DELAY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")

OnSettingsOk = Callable[[Task, str | None], None]


def parse_delays(text: str) -> tuple[int, ...]:
    """ "1 min, 5 min, 1 h" or "60, 300, 3600" → seconds; raises InputError("retry-delays")."""
    delays = []
    for part in filter(None, (p.strip().lower() for p in text.replace(";", ",").split(","))):
        match = _DELAY_RE.match(part)
        unit = match.group(2) if match else ""
        if not match or (unit and unit not in _UNITS):
            raise InputError(
                "retry-delays",
                f"{part!r} is not a duration",
                fix='write e.g. "1 min, 5 min, 15 min, 1 h, 4 h" or seconds "60, 300"',
            )
        delays.append(round(float(match.group(1)) * _UNITS.get(unit, 1)))
    if not delays:
        raise InputError("retry-delays", "is empty", fix='write e.g. "1 min, 5 min, 15 min, 1 h, 4 h"')
    return tuple(delays)


def parse_count(text: str) -> int | None:
    """A whole number as typed, with or without thousands separators ("1,800", "1 800"); None if not one."""
    digits = text.strip().replace(",", "").replace(" ", "").replace("\u00a0", "")
    return int(digits) if digits.isdigit() else None


def format_count(value: int) -> str:
    """How the GUI writes a count: 1,800."""
    return f"{value:,}"


def format_delays(delays: tuple[int, ...]) -> str:
    """Seconds → "1 min, 5 min, 1 h"."""
    out = []
    for d in delays:
        if d % 3600 == 0:
            out.append(f"{d // 3600} h")
        elif d % 60 == 0:
            out.append(f"{d // 60} min")
        else:
            out.append(f"{d} s")
    return ", ".join(out)


def interval_text(rate: int) -> str:
    """ "one e-mail every 3.6 s" for a rate per hour."""
    seconds = 3600 / rate
    if seconds >= 60:
        return f"one e-mail every {seconds / 60:.1f} min"
    return f"one e-mail every {seconds:.1f} s".replace(".0 s", " s")


def smtp_summary(smtp: SmtpSettings | None) -> list[tuple[str, str]]:
    """Label/value rows describing an SMTP configuration."""
    if smtp is None or not smtp.host:
        return [("Server", "not set up yet — click “SMTP server login…”")]
    return [
        ("Server", f"{smtp.host}:{smtp.port}"),
        ("Security", SECURITY_LABELS.get(str(smtp.security), str(smtp.security))),
        ("User name", smtp.username or "no login"),
        ("Sender", smtp.sender or "—"),
        ("Reply-To", smtp.reply_to or "same as sender"),
        ("Certificate", _certificate_text(smtp)),
    ]


def _certificate_text(smtp: SmtpSettings) -> str:
    if Security(smtp.security) is Security.NONE:
        return "none (no encryption)"
    if not smtp.verify_certs:
        return "not verified"
    return f"verified with {Path(smtp.ca_file).name}" if smtp.ca_file else "verified"


class SettingsDialog(Dialog):
    """Edit a task's settings; ``on_ok(task, new_password_or_None)`` gets a validated task.

    ``on_ok`` may raise an AutomailError (e.g. the keyring refused): the dialog shows it and stays open.
    """

    def __init__(
        self,
        master: Any,
        service: Service,
        task: Task,
        on_ok: OnSettingsOk,
        *,
        password: str | None = None,
        smtp_set: bool = True,
    ) -> None:
        title = type_title(task.type)
        super().__init__(master, f"Settings of automatic task '{title}'")
        self.service = service
        self._task = task
        self._on_ok = on_ok
        self.smtp: SmtpSettings | None = task.smtp if smtp_set else None
        self.password = password
        self._password_stored = bool(task.name) and _safe_has_password(service, task.name)
        self.smtp_dialog: SmtpDialog | None = None
        self.ask_dialog: AskDialog | None = None
        self.jobs = Background(self)
        self._test_cancel: threading.Event | None = None  # set to stop the running connection test

        ctk.CTkLabel(self.body, text=f"Task: {task.name or 'new task'}", font=font(13), text_color=MUTED_COLOR).pack(
            anchor="w"
        )
        self.tabs = ctk.CTkTabview(self.body, width=560, height=420)
        self.tabs.pack(fill="both", expand=True, pady=(4, 0))
        self.tabs.add("Basic")
        self.tabs.add("Other")
        self._build_basic(self.tabs.tab("Basic"))
        self._build_other(self.tabs.tab("Other"))
        self.add_buttons()

    # ---- Basic --------------------------------------------------------------------
    def _build_basic(self, tab: Any) -> None:
        tab.grid_columnconfigure(0, weight=1)
        box = ctk.CTkFrame(tab, corner_radius=6)
        box.grid(row=0, column=0, sticky="ew", padx=8, pady=(8, 0))
        box.grid_columnconfigure(1, weight=1)
        self.summary_frame = box
        self.summary_error = ErrorLine(tab, wraplength=520)
        self.summary_error.grid(row=1, column=0, sticky="w", padx=10)
        self.summary_error.grid_remove()
        self._fill_summary()

        row = ctk.CTkFrame(tab, fg_color="transparent")
        row.grid(row=2, column=0, sticky="ew", padx=8, pady=(12, 0))
        self.smtp_button = ctk.CTkButton(row, text="SMTP server login…", command=self.open_smtp, width=170)
        self.smtp_button.pack(side="left")
        self.test_button = ctk.CTkButton(row, text="Test connection", command=self.test_connection, width=150)
        self.test_button.pack(side="left", padx=(10, 0))
        self.cancel_test_button = ctk.CTkButton(row, text="Cancel test", command=self.cancel_test, width=110)
        self.send_test_button = ctk.CTkButton(row, text="Send test e-mail to…", command=self.ask_test_email, width=170)
        self.send_test_button.pack(side="left", padx=(10, 0))

        ctk.CTkLabel(tab, text="Result", anchor="w", text_color=MUTED_COLOR).grid(
            row=3, column=0, sticky="w", padx=10, pady=(12, 0)
        )
        self.result = ReadOnlyText(tab, height=96)
        self.result.grid(row=4, column=0, sticky="nsew", padx=8, pady=(2, 8))
        self.result.set("Test the connection before starting the task: AutoMail connects, secures and logs in.")
        tab.grid_rowconfigure(4, weight=1)

    def _fill_summary(self) -> None:
        for child in self.summary_frame.winfo_children():
            child.destroy()
        rows = smtp_summary(self.smtp)
        if self.smtp is not None and self.smtp.username:
            if self.password:
                rows.append(("Password", "new password — saved in the keyring on OK"))
            else:
                rows.append(("Password", "stored in the keyring" if self._password_stored else "none stored yet"))
        for i, (label, value) in enumerate(rows):
            pady = (10 if i == 0 else 0, 10 if i == len(rows) - 1 else 0)
            ctk.CTkLabel(
                self.summary_frame, text=label, anchor="w", width=LABEL_WIDTH - 40, text_color=MUTED_COLOR
            ).grid(row=i, column=0, sticky="w", padx=(12, 8), pady=pady)
            ctk.CTkLabel(self.summary_frame, text=value, anchor="w").grid(row=i, column=1, sticky="w", pady=pady)

    def open_smtp(self) -> None:
        self.smtp_dialog = SmtpDialog(
            self, self.smtp, self._smtp_ok, password=self.password, password_stored=self._password_stored
        )

    def _smtp_ok(self, smtp: SmtpSettings, password: str | None) -> None:
        self.smtp = smtp
        if password:
            self.password = password
        self.summary_error.clear()
        self._fill_summary()

    def _probe_task(self) -> Task | None:
        if self.smtp is None:
            self.summary_error.show("Set up the SMTP server first — click “SMTP server login…”.")
            return None
        return replace(self._task, name=self._task.name or "test", smtp=self.smtp)

    def test_connection(self) -> None:
        """Connect, secure and log in once, in a worker thread; show the server's answer.

        The test gives up after TEST_TIMEOUT_S; "Cancel test" stops it at once.
        """
        task = self._probe_task()
        if task is None:
            return
        self.test_button.configure(state="disabled")
        self.cancel_test_button.pack(side="left", padx=(10, 0), after=self.test_button)
        where = f"{task.smtp.host}:{task.smtp.port}"
        self._show_result(f"Testing {where}: connecting, securing and logging in (at most {TEST_TIMEOUT_S:g} s)…", None)
        service, password = self.service, self.password  # the worker must not reference widgets
        cancel = self._test_cancel = threading.Event()
        self.jobs.run(
            lambda: service.test_task(task, password, timeout=TEST_TIMEOUT_S, cancel=cancel),
            lambda answer: self._test_done(cancel, str(answer), True),
            lambda exc: self._test_done(cancel, str(exc), False),
        )

    def cancel_test(self) -> None:
        """Stop the running connection test; its late answer is ignored."""
        if self._test_cancel is not None:
            self._test_cancel.set()
        self._test_done(self._test_cancel, "Test cancelled.", None)

    def _test_done(self, run: threading.Event | None, text: str, ok: bool | None) -> None:
        if run is not self._test_cancel:
            return  # an earlier, cancelled test answering late
        self._test_cancel = None
        if not self.closed:
            self.cancel_test_button.pack_forget()
            self._job_done(self.test_button, text, ok)

    def close(self) -> None:
        if self._test_cancel is not None:
            self._test_cancel.set()  # the worker stops trying; nobody will read its answer
        super().close()

    def ask_test_email(self) -> None:
        if self._probe_task() is None:
            return
        self.ask_dialog = AskDialog(self, "Send test e-mail", "Send to", self.send_test_email, ok_text="Send")

    def send_test_email(self, to: str) -> None:
        """Send one test e-mail in a worker thread (raises InputError for a bad address)."""
        to = check_address("to", to)
        task = self._probe_task()
        if task is None:
            return
        self.send_test_button.configure(state="disabled")
        self._show_result(f"Sending a test e-mail to {to}…", None)
        service, password = self.service, self.password  # the worker must not reference widgets
        self.jobs.run(
            lambda: service.send_test_email(task, to, password),
            lambda reply: self._job_done(self.send_test_button, f"Test e-mail to {to} accepted. Server: {reply}", True),
            lambda exc: self._job_done(self.send_test_button, f"Test e-mail to {to} failed: {exc}", False),
        )

    def _job_done(self, button: Any, text: str, ok: bool | None) -> None:
        if self.closed:
            return
        button.configure(state="normal")
        self._show_result(text, ok)

    def _show_result(self, text: str, ok: bool | None) -> None:
        mark = "" if ok is None else ("✔ " if ok else "✖ ")
        self.result.set(mark + text)
        color = ("gray10", "gray90") if ok is None else (OK_COLOR if ok else ERROR_COLOR)
        self.result.configure(text_color=color)

    @property
    def result_text(self) -> str:
        return self.result.get_text()

    # ---- Other --------------------------------------------------------------------
    def _build_other(self, tab: Any) -> None:
        t = self._task
        tab.grid_columnconfigure(1, weight=1)
        self.limit = ctk.CTkSwitch(tab, text="Limit sending", command=self._limit_toggled)
        self.limit.grid(row=0, column=0, columnspan=3, sticky="w", padx=8, pady=(8, 0))

        ctk.CTkLabel(tab, text="Provider preset", anchor="w", width=LABEL_WIDTH).grid(
            row=1, column=0, sticky="w", padx=(8, 12), pady=(ROW_GAP + 4, 0)
        )
        self.preset = OptionMenu(
            tab, values=[PRESET_CUSTOM, PRESET_M365, PRESET_GOOGLE], command=self.apply_preset, width=300
        )
        self.preset.grid(row=1, column=1, columnspan=2, sticky="w", pady=(ROW_GAP + 4, 0))

        ctk.CTkLabel(tab, text="E-mails per hour", anchor="w", width=LABEL_WIDTH).grid(
            row=2, column=0, sticky="w", padx=(8, 12), pady=(ROW_GAP + 4, 0)
        )
        rate = t.rate_per_hour or DEFAULT_RATE
        self.rate_slider = ctk.CTkSlider(
            tab, from_=RATE_MIN, to=RATE_MAX, number_of_steps=(RATE_MAX - RATE_MIN) // 50, command=self._slider_moved
        )
        self.rate_slider.grid(row=2, column=1, sticky="ew", pady=(ROW_GAP + 4, 0))
        # A variable, not a key binding: the slider also follows a pasted or dropped value.
        self._rate_var = ctk.StringVar(tab)
        self.rate_entry = ctk.CTkEntry(tab, width=80, justify="right", textvariable=self._rate_var)
        self.rate_entry.grid(row=2, column=2, sticky="e", padx=(10, 8), pady=(ROW_GAP + 4, 0))
        self.rate_error = ErrorLine(tab)
        self.rate_error.grid(row=3, column=1, columnspan=2, sticky="w")
        self.rate_error.grid_remove()
        self.interval = ctk.CTkLabel(tab, text="", anchor="w", text_color=MUTED_COLOR)
        self.interval.grid(row=4, column=1, columnspan=2, sticky="w")

        self.cap_switch = ctk.CTkSwitch(tab, text="Rolling 24-hour cap", command=self._cap_toggled)
        self.cap_switch.grid(row=5, column=0, sticky="w", padx=(8, 12), pady=(ROW_GAP + 4, 0))
        self.cap_entry = ctk.CTkEntry(tab, width=100, justify="right")
        self.cap_entry.grid(row=5, column=1, sticky="w", pady=(ROW_GAP + 4, 0))
        self.cap_entry.bind("<KeyRelease>", lambda _e: self._mark_custom())
        ctk.CTkLabel(tab, text="e-mails per 24 hours", anchor="w", text_color=MUTED_COLOR).grid(
            row=5, column=1, sticky="w", padx=(110, 0), pady=(ROW_GAP + 4, 0)
        )
        self.cap_error = ErrorLine(tab)
        self.cap_error.grid(row=6, column=1, columnspan=2, sticky="w")
        self.cap_error.grid_remove()

        frame = ctk.CTkFrame(tab, fg_color="transparent")
        frame.grid(row=7, column=0, columnspan=3, sticky="ew", padx=8, pady=(10, 0))
        frame.grid_columnconfigure(1, weight=1)
        self.retry = Field(frame, 0, "Retry after", width=300)
        self.retry.set(format_delays(t.retry_delays))
        ctk.CTkLabel(
            frame, text="e.g. 1 min, 5 min, 15 min, 1 h, 4 h", text_color=MUTED_COLOR, font=font(12), anchor="w"
        ).grid(row=2, column=1, sticky="w")
        self.tags = Field(frame, 3, "Scope tags", width=300, placeholder="all messages of the company")
        self.tags.set(", ".join(t.tags))
        ctk.CTkLabel(
            frame,
            text="Comma separated; the task sends only messages with these tags.",
            text_color=MUTED_COLOR,
            font=font(12),
            anchor="w",
        ).grid(row=5, column=1, sticky="w")
        self.windows = Field(frame, 6, "Sending windows", width=300, placeholder="any time")
        self.windows.set("; ".join(t.windows))
        ctk.CTkLabel(
            frame,
            text="Local time, separated by ;  e.g. Mon-Fri 08:00-17:00; Sat 09:00-12:00",
            text_color=MUTED_COLOR,
            font=font(12),
            anchor="w",
        ).grid(row=8, column=1, sticky="w")

        # initial values
        set_text(self.rate_entry, format_count(rate))
        self.rate_slider.set(rate)
        self._rate_var.trace_add("write", lambda *_a: self._rate_typed())
        if t.rate_per_hour is not None:
            self.limit.select()
        if t.daily_cap:
            self.cap_switch.select()
            set_text(self.cap_entry, format_count(t.daily_cap))
        self.preset.set(_detect_preset(t.rate_per_hour, t.daily_cap))
        self._limit_toggled(mark_custom=False)
        self._cap_toggled(mark_custom=False)
        self._update_interval()

    def _limit_toggled(self, mark_custom: bool = True) -> None:
        state = "normal" if self.limit.get() else "disabled"
        self.rate_slider.configure(state=state)
        self.rate_entry.configure(state=state)
        self._update_interval()
        if mark_custom:
            self._mark_custom()

    def _cap_toggled(self, mark_custom: bool = True) -> None:
        self.cap_entry.configure(state="normal" if self.cap_switch.get() else "disabled")
        if mark_custom:
            self._mark_custom()

    def _slider_moved(self, value: float) -> None:
        self._sliding = True  # the entry's trace must not move the slider back while it is dragged
        try:
            set_text(self.rate_entry, format_count(round(value)))
        finally:
            self._sliding = False
        self.rate_error.clear()
        self._update_interval()
        self._mark_custom()

    def _rate_typed(self) -> None:
        if getattr(self, "_sliding", False):
            return
        rate = parse_count(self.rate_entry.get())
        if rate is not None:
            self.rate_slider.set(min(max(rate, RATE_MIN), RATE_MAX))  # out of range: the nearest end
        self._update_interval()
        self._mark_custom()

    def set_rate(self, rate: str | int) -> None:
        """Type a rate into the entry as the user would."""
        set_text(self.rate_entry, str(rate))

    def _update_interval(self) -> None:
        rate = parse_count(self.rate_entry.get())
        if not self.limit.get():
            self.interval.configure(text="no limit: as fast as the server accepts")
        elif rate is not None and RATE_MIN <= rate <= RATE_MAX:
            self.interval.configure(text=interval_text(rate))
        else:
            self.interval.configure(text=f"choose {RATE_MIN}…{RATE_MAX:,} e-mails per hour")

    def _mark_custom(self) -> None:
        if self.preset.get() != PRESET_CUSTOM and _detect_preset(*self._limits_or_none()) != self.preset.get():
            self.preset.set(PRESET_CUSTOM)

    def _limits_or_none(self) -> tuple[int | None, int | None]:
        rate = parse_count(self.rate_entry.get()) if self.limit.get() else None
        cap = parse_count(self.cap_entry.get()) if self.cap_switch.get() else None
        return rate, cap

    def apply_preset(self, name: str) -> None:
        """Fill the limits of a provider preset."""
        self.preset.set(name)
        if name not in PRESETS:
            return
        rate, cap = PRESETS[name]
        if rate is not None:
            self.limit.select()
            self._limit_toggled(mark_custom=False)
            set_text(self.rate_entry, format_count(rate))
            self.rate_slider.set(rate)
        if cap is not None:
            self.cap_switch.select()
            self._cap_toggled(mark_custom=False)
            set_text(self.cap_entry, format_count(cap))
        self.preset.set(name)  # filling the entries marked the preset "Custom" on the way
        self._update_interval()

    # ---- OK ------------------------------------------------------------------------
    def _clear_errors(self) -> None:
        for line in (self.rate_error, self.cap_error, self.summary_error):
            line.clear()
        self.retry.clear_error()
        self.tags.clear_error()
        self.windows.clear_error()
        self.clear_general_error()

    def build(self) -> Task:
        """The task as entered, validated; raises InputError naming the field."""
        if self.smtp is None:
            raise InputError("smtp", "the SMTP server is not set up", fix="click “SMTP server login…”")
        # The GUI's own words (its switches, numbers as 3,000), not the command line's (--unlimited).
        rate: int | None = None
        if self.limit.get():
            rate = parse_count(self.rate_entry.get())
            if rate is None or not RATE_MIN <= rate <= RATE_MAX:
                shown = self.rate_entry.get().strip()
                raise InputError(
                    "rate",
                    f"{shown!r} is not a number"
                    if rate is None
                    else f"{rate:,} e-mails per hour is outside {RATE_MIN}…{RATE_MAX:,}",
                    fix=f"choose a value from {RATE_MIN} to {RATE_MAX:,}, or switch off Limit sending",
                )
        cap: int | None = None
        if self.cap_switch.get():
            cap = parse_count(self.cap_entry.get())
            if cap is None or cap < 1:
                raise InputError(
                    "daily-cap",
                    f"{self.cap_entry.get().strip()!r} is not a positive number",
                    fix="give e.g. 2,000, or switch off Rolling 24-hour cap",
                )
        delays = parse_delays(self.retry.get())
        tags = unique_tags(check_no_newline("tag", t).strip() for t in self.tags.get().split(","))
        windows = tuple(w.strip() for w in self.windows.get().split(";") if w.strip())
        task = replace(
            self._task, smtp=self.smtp, rate_per_hour=rate, daily_cap=cap, retry_delays=delays, tags=tags,
            windows=windows,
        )  # fmt: skip
        # A new task has no name yet: validate with a stand-in so only the settings are judged here.
        probe = task if task.name else replace(task, name="new task")
        probe.validate()
        return task

    def show_error(self, exc: InputError) -> None:
        text = input_error_text(exc)
        other = {"rate": self.rate_error, "daily-cap": self.cap_error}
        if exc.field in other:
            other[exc.field].show(text)
            self.tabs.set("Other")
        elif exc.field == "retry-delays":
            self.retry.show_error(text)
            self.tabs.set("Other")
        elif exc.field == "tag":
            self.tags.show_error(text)
            self.tabs.set("Other")
        elif exc.field == "window":
            self.windows.show_error(text)
            self.tabs.set("Other")
        elif exc.field in SMTP_FIELDS:
            self.summary_error.show(f"SMTP settings: {text}")
            self.tabs.set("Basic")
        else:
            self.show_general_error(text)

    def ok(self) -> None:
        self._clear_errors()
        try:
            task = self.build()
            self._on_ok(task, self.password)
        except InputError as exc:
            self.show_error(exc)
            return
        except Exception as exc:  # keyring refused, definitions locked…: say so and stay open
            self.show_general_error(str(exc))
            return
        self.close()


def _detect_preset(rate: int | None, cap: int | None) -> str:
    if rate == 1800 and cap == 10000:
        return PRESET_M365
    if cap == 2000:
        return PRESET_GOOGLE
    return PRESET_CUSTOM


def _safe_has_password(service: Service, name: str) -> bool:
    try:
        return service.has_password(name)
    except Exception:  # no keyring at all: the summary says "none stored yet"
        return False

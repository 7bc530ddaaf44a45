"""The "SMTP server login" dialog: host, port, security, certificates, login, sender and Reply-To."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any

import customtkinter as ctk

from automail.errors import InputError
from automail.models import Security, SmtpSettings, check_no_newline
from automail.ui.widgets import MUTED_COLOR, ROW_GAP, Dialog, ErrorLine, Field, font, input_error_text

SECURITY_CHOICES = {"None": "none", "SSL/TLS": "tls", "STARTTLS": "starttls"}
SECURITY_LABELS = {v: k for k, v in SECURITY_CHOICES.items()}
# InputError fields this dialog's settings can be refused for
SMTP_FIELDS = ("smtp", "host", "port", "username", "sender", "reply-to", "security", "timeout", "ca-file")

OnSmtpOk = Callable[[SmtpSettings, str | None], None]
# A valid stand-in per refused field, so validation can go on and find the next bad field.
_STAND_INS: dict[str, dict[str, Any]] = {
    "host": {"host": "smtp.example.com"},
    "port": {"port": 587},
    "username": {"username": ""},
    "sender": {"sender": "sender@example.com"},
    "reply-to": {"reply_to": ""},
    "security": {"allow_insecure_auth": True},
    "timeout": {"timeout": 30.0},
    "ca-file": {"ca_file": ""},
}


# The model's fixes name CLI values ("starttls", "tls"); the dialog names its own controls.
def _in_gui_words(exc: InputError) -> InputError:
    if exc.field == "security":
        return InputError(exc.field, exc.message.partition(": ")[2], fix="choose STARTTLS or SSL/TLS under Security")
    if exc.field == "sender" and exc.message.endswith("is missing"):
        return InputError(exc.field, "the sender address is missing", fix="enter one, e.g. info@example.com")
    return exc


def smtp_problems(smtp: SmtpSettings) -> list[InputError]:
    """Every field SmtpSettings.validate refuses, not only the first (the dialog shows them all at once)."""
    problems: list[InputError] = []
    while True:
        try:
            smtp.validate()
            return problems
        except InputError as exc:
            if exc.field in {p.field for p in problems} or exc.field not in _STAND_INS:
                return [*problems, exc]
            problems.append(exc)
            smtp = replace(smtp, **_STAND_INS[exc.field])


class SmtpDialog(Dialog):
    """Edit a task's SMTP settings; ``on_ok(settings, new_password_or_None)`` gets valid settings only.

    The password is not stored here: the caller passes it to service.add_task / edit_task on
    the final OK, so nothing reaches the keyring if the user cancels later.
    """

    def __init__(
        self,
        master: Any,
        smtp: SmtpSettings | None,
        on_ok: OnSmtpOk,
        *,
        password: str | None = None,
        password_stored: bool = False,
    ) -> None:
        super().__init__(master, "SMTP server login")
        self._on_ok = on_ok
        smtp = smtp or SmtpSettings(host="")
        b = self.body
        b.grid_columnconfigure(1, weight=1)

        ctk.CTkLabel(b, text="Server", font=font(14, "bold"), anchor="w").grid(row=0, column=0, sticky="w")
        self.host = Field(b, 1, "SMTP server", placeholder="smtp.example.com")
        self.host.set(smtp.host)

        ctk.CTkLabel(b, text="Security", anchor="w").grid(row=3, column=0, sticky="w", pady=(ROW_GAP, 0))
        self.security = ctk.CTkSegmentedButton(
            b, values=list(SECURITY_CHOICES), command=self._security_changed, width=280
        )
        self.security.grid(row=3, column=1, sticky="ew", pady=(ROW_GAP, 0))
        self.security.set(SECURITY_LABELS[str(smtp.security)])
        self.security_error = ErrorLine(b)
        self.security_error.grid(row=4, column=1, sticky="w")
        self.security_error.grid_remove()

        self.port = Field(b, 5, "Port", width=90)
        self.port.entry.grid_configure(sticky="w")
        self.port.set(str(smtp.port))

        self.verify = ctk.CTkCheckBox(b, text="Verify the server's certificate")
        self.verify.grid(row=7, column=1, sticky="w", pady=(ROW_GAP + 2, 0))
        if smtp.verify_certs:
            self.verify.select()
        self.ca_file = Field(b, 8, "CA file", placeholder="optional: your own CA or self-signed certificate (PEM)")
        self.ca_file.set(smtp.ca_file)
        ctk.CTkButton(b, text="Browse…", width=80, command=self._browse_ca_file).grid(
            row=8, column=2, sticky="w", padx=(8, 0), pady=(ROW_GAP, 0)
        )

        ctk.CTkLabel(b, text="Login", font=font(14, "bold"), anchor="w").grid(
            row=10, column=0, sticky="w", pady=(16, 0)
        )
        self.username = Field(b, 11, "User name", placeholder="usually your e-mail address")
        self.username.set(smtp.username)
        hint = "stored in the keyring — leave empty to keep it" if password_stored else ""
        self.password = Field(b, 13, "Password", show="•", placeholder=hint)
        if password:
            self.password.set(password)
        self.show_password = ctk.CTkCheckBox(b, text="Show password", command=self._toggle_password)
        self.show_password.grid(row=15, column=1, sticky="w", pady=(ROW_GAP, 0))

        ctk.CTkLabel(b, text="Sender", font=font(14, "bold"), anchor="w").grid(
            row=16, column=0, sticky="w", pady=(16, 0)
        )
        name, addr = parseaddr(smtp.sender) if smtp.sender else ("", "")
        self.sender_name = Field(b, 17, "Sender name", placeholder="Firma s.r.o.")
        self.sender_name.set(name)
        self.sender_address = Field(b, 19, "Sender address", placeholder="info@example.com")
        self.sender_address.set(addr)
        self.reply_to = Field(b, 21, "Reply-To", placeholder="optional")
        self.reply_to.set(smtp.reply_to)
        ctk.CTkLabel(
            b,
            text="Replies go to the sender address unless Reply-To is given.",
            text_color=MUTED_COLOR,
            font=font(12),
            anchor="w",
        ).grid(row=23, column=1, sticky="w")
        self._base = smtp
        self.add_buttons()
        self.later(250, self.host.entry.focus_set)

    # ---- behaviour ----------------------------------------------------------------
    def _security_changed(self, label: str) -> None:
        # The port follows the choice (25/465/587) unless the user typed a port of their own.
        if self.port.get().strip() in {"", *(str(sec.default_port) for sec in Security)}:
            self.port.set(str(Security(SECURITY_CHOICES[label]).default_port))

    def set_security(self, label: str) -> None:
        """Choose a security option as a click would (used by tests and presets)."""
        self.security.set(label)
        self._security_changed(label)

    def _browse_ca_file(self) -> None:
        from tkinter import filedialog

        path = filedialog.askopenfilename(
            parent=self,
            title="CA certificate file",
            filetypes=[("Certificates", "*.pem *.crt *.cer"), ("All files", "*")],
        )
        if path:
            self.ca_file.set(path)

    def _toggle_password(self) -> None:
        self.password.entry.configure(show="" if self.show_password.get() else "•")

    def _fields(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "sender": self.sender_address,
            "sender-name": self.sender_name,
            "reply-to": self.reply_to,
            "password": self.password,
            "security": self.security_error,
            "ca-file": self.ca_file,
        }

    def _clear_errors(self) -> None:
        for w in self._fields().values():
            w.clear_error() if isinstance(w, Field) else w.clear()
        self.clear_general_error()

    def show_error(self, exc: InputError) -> None:
        """Show an InputError next to the field it names (or at the bottom)."""
        target = self._fields().get(exc.field)
        text = input_error_text(exc)
        if isinstance(target, Field):
            target.show_error(text)
        elif target is not None:
            target.show(text)
        else:
            self.show_general_error(text)

    def problems(self) -> tuple[SmtpSettings, str | None, list[InputError]]:
        """The settings as entered, the new password, and every field's problem (empty when all is valid)."""
        problems: list[InputError] = []

        def checked(field: str, value: str) -> str:
            try:
                return check_no_newline(field, value)
            except InputError as exc:
                problems.append(exc)
                return ""

        port_text = self.port.get().strip()
        if not port_text.isdigit():
            problems.append(InputError("port", f"{port_text!r} is not a number", fix="use e.g. 587, 465 or 25"))
        name = checked("sender-name", self.sender_name.get()).strip()
        addr = checked("sender", self.sender_address.get()).strip()
        password = checked("password", self.password.get()) or None
        ca_file = checked("ca-file", self.ca_file.get()).strip()
        if ca_file and not Path(ca_file).expanduser().is_file():
            problems.append(
                InputError(
                    "ca-file", "no such file", fix="choose the PEM file of the CA certificate, or leave it empty"
                )
            )
            ca_file = ""
        smtp = replace(
            self._base,
            host=self.host.get().strip(),
            port=int(port_text) if port_text.isdigit() else 587,
            security=SECURITY_CHOICES[self.security.get()],  # type: ignore[arg-type]
            username=self.username.get().strip(),
            sender=formataddr((name, addr)) if name and addr else addr,
            reply_to=self.reply_to.get().strip(),
            verify_certs=bool(self.verify.get()),
            ca_file=str(Path(ca_file).expanduser().resolve()) if ca_file else "",
        )
        if any(p.field == "sender" for p in problems):  # the line-break error says it better than "missing"
            smtp = replace(smtp, **_STAND_INS["sender"])
        problems.extend(_in_gui_words(p) for p in smtp_problems(smtp))
        return smtp, password, problems

    def build(self) -> tuple[SmtpSettings, str | None]:
        """The settings as entered, validated; raises the first field's InputError."""
        smtp, password, problems = self.problems()
        if problems:
            raise problems[0]
        return smtp.validate(), password

    def ok(self) -> None:
        """Show every invalid field at once; hand valid settings to ``on_ok``."""
        self._clear_errors()
        _smtp, _password, problems = self.problems()
        for problem in problems:
            self.show_error(problem)
        if problems:
            return
        try:
            smtp, password = self.build()
            self._on_ok(smtp, password)
        except InputError as exc:
            self.show_error(exc)
            return
        self.close()

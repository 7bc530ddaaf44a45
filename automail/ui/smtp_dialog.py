"""The "SMTP server login" dialog: host, port, security, login, sender and Reply-To."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from email.utils import formataddr, parseaddr
from typing import Any

import customtkinter as ctk

from automail.errors import InputError
from automail.models import Security, SmtpSettings, check_no_newline
from automail.ui.widgets import MUTED_COLOR, ROW_GAP, Dialog, ErrorLine, Field, font, input_error_text

SECURITY_CHOICES = {"None": "none", "SSL/TLS": "tls", "STARTTLS": "starttls"}
SECURITY_LABELS = {v: k for k, v in SECURITY_CHOICES.items()}
# InputError fields this dialog's settings can be refused for
SMTP_FIELDS = ("smtp", "host", "port", "username", "sender", "reply-to", "security", "timeout")

OnSmtpOk = Callable[[SmtpSettings, str | None], None]


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

        ctk.CTkLabel(b, text="Login", font=font(14, "bold"), anchor="w").grid(row=8, column=0, sticky="w", pady=(16, 0))
        self.username = Field(b, 9, "User name", placeholder="usually your e-mail address")
        self.username.set(smtp.username)
        hint = "stored in the keyring — leave empty to keep it" if password_stored else ""
        self.password = Field(b, 11, "Password", show="•", placeholder=hint)
        if password:
            self.password.set(password)
        self.show_password = ctk.CTkCheckBox(b, text="Show password", command=self._toggle_password)
        self.show_password.grid(row=13, column=1, sticky="w", pady=(ROW_GAP, 0))

        ctk.CTkLabel(b, text="Sender", font=font(14, "bold"), anchor="w").grid(
            row=14, column=0, sticky="w", pady=(16, 0)
        )
        name, addr = parseaddr(smtp.sender) if smtp.sender else ("", "")
        self.sender_name = Field(b, 15, "Sender name", placeholder="Firma s.r.o.")
        self.sender_name.set(name)
        self.sender_address = Field(b, 17, "Sender address", placeholder="info@example.com")
        self.sender_address.set(addr)
        self.reply_to = Field(b, 19, "Reply-To", placeholder="optional")
        self.reply_to.set(smtp.reply_to)
        ctk.CTkLabel(
            b,
            text="Replies go to the sender address unless Reply-To is given.",
            text_color=MUTED_COLOR,
            font=font(12),
            anchor="w",
        ).grid(row=21, column=1, sticky="w")
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

    def build(self) -> tuple[SmtpSettings, str | None]:
        """The settings as entered, validated; raises InputError naming the field."""
        port_text = self.port.get().strip()
        if not port_text.isdigit():
            raise InputError("port", f"{port_text!r} is not a number", fix="use e.g. 587, 465 or 25")
        name = check_no_newline("sender-name", self.sender_name.get()).strip()
        addr = check_no_newline("sender", self.sender_address.get()).strip()
        password = check_no_newline("password", self.password.get()) or None
        smtp = replace(
            self._base,
            host=self.host.get().strip(),
            port=int(port_text),
            security=SECURITY_CHOICES[self.security.get()],  # type: ignore[arg-type]
            username=self.username.get().strip(),
            sender=formataddr((name, addr)) if name and addr else addr,
            reply_to=self.reply_to.get().strip(),
            verify_certs=bool(self.verify.get()),
        )
        return smtp.validate(), password

    def ok(self) -> None:
        self._clear_errors()
        try:
            smtp, password = self.build()
            self._on_ok(smtp, password)
        except InputError as exc:
            self.show_error(exc)
            return
        self.close()

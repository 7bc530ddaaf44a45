"""What an SMTP reply or a library exception means for the message and the task (an SmtpError)."""

from __future__ import annotations

from automail.errors import Reply

__all__ = ["Reply"]

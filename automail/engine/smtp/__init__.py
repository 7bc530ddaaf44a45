"""The SMTP client: session (connect, TLS, login), transaction (envelope, data), classify (reply → outcome)."""

from .classify import Reply
from .session import SmtpSession
from .transaction import SendResult

__all__ = ["Reply", "SendResult", "SmtpSession"]

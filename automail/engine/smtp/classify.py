"""What an SMTP reply or a library exception means for the message and the task (an SmtpError).

Every decision here is made from the reply code, the enhanced status code (RFC 3463) and the
exception's type and cause chain — never by searching an error's text, which holds host
names (a server called ``ssl0.ovh.net`` is not a TLS fault).
"""

from __future__ import annotations

import re
import ssl

from automail.errors import FaultKind, Reply, SmtpError
from automail.models import SmtpSettings

__all__ = ["PipeliningFault", "Reply"]

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")

CA_FILE_FIX = (
    "if the server uses your organisation's own certificate authority or a self-signed certificate, "
    'give that CA certificate file as the task\'s CA file (--ca-file PATH, or "CA file" in the SMTP settings)'
)


class PipeliningFault(SmtpError):
    """A protocol error the server made while commands were pipelined: retry without PIPELINING."""


def reply(code: int, text: str) -> Reply:
    """A Reply with the text's lines and runs of spaces joined into single spaces."""
    return Reply(code, " ".join(text.split()))


def enhanced_code(r: Reply) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of the reply text, if any."""
    m = _ENHANCED.match(r.text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def is_size_refusal(r: Reply) -> bool:
    """The reply refuses the message for its size (552 / x.3.4 / x.2.3), not the sender or a mailbox."""
    e = enhanced_code(r)
    if e is not None:
        return e[1:] in ((3, 4), (2, 3))
    return r.code == 552


def is_protocol_error(r: Reply) -> bool:
    """A reply saying the client broke the protocol (bad sequence, synchronisation): x.5.x, or 503."""
    e = enhanced_code(r)
    return e[1] == 5 if e is not None else r.code == 503


# ---- one message ---------------------------------------------------------------------------
def size_error(where: str, size: int, limit: int | None, r: Reply | None = None) -> SmtpError:
    """The message is too large for the server: it fails alone, the task goes on."""
    if limit:
        text = f"the message ({size:,} bytes) is larger than the server's limit of {limit:,} bytes"
    else:
        text = f"the message ({size:,} bytes) is larger than {where} accepts"
    if r is not None:
        text += f": {r}"
    return SmtpError(
        text,
        kind=FaultKind.PERMANENT,
        code=552 if r is None else r.code,
        fix="make the message smaller, e.g. link large files instead of attaching them",
    )


def closing(where: str, step: str, r: Reply) -> SmtpError:
    """A 421 in the middle of a transaction: the server closes the connection (RFC 5321 3.8), for now."""
    return SmtpError(f"{where} closed the connection in answer to {step}: {r}", kind=FaultKind.TRANSIENT, code=r.code)


def mail_refused(where: str, mail_from: str, r: Reply, size: int, limit: int | None) -> SmtpError:
    """MAIL FROM refused: about the sender (task fault), the message (fails alone) or for now."""
    if is_size_refusal(r):
        return size_error(where, size, limit, r)
    if 400 <= r.code < 500:
        return SmtpError(
            f"sender {mail_from} temporarily refused by {where}: {r}", kind=FaultKind.TRANSIENT, code=r.code
        )
    e = enhanced_code(r)
    # 5.1.x is about the sender's address, 5.7.x about the sender's rights: every message
    # would be refused the same way, so the task stops until its settings change.  Without an
    # enhanced code only 550/553 name the sender's mailbox (RFC 5321 §4.2.3).
    if (e is not None and e[1] in (1, 7)) or (e is None and r.code in (550, 553)):
        return SmtpError(
            f"sender {mail_from} refused by {where}: {r}",
            kind=FaultKind.TASK_FATAL,
            code=r.code,
            fix="use a sender address this account may send as (the task's sender, or the From of the message)",
        )
    return SmtpError(f"{where} refused to start this message: {r}", kind=FaultKind.PERMANENT, code=r.code)


def recipients_refused(refused: dict[str, Reply]) -> SmtpError:
    """Every RCPT TO was refused: retry later if any refusal was temporary (4xx)."""
    temporary = [r.code for r in refused.values() if 400 <= r.code < 500]
    detail = "; ".join(f"{addr}: {r}" for addr, r in refused.items())
    return SmtpError(
        f"every recipient was refused: {detail}",
        kind=FaultKind.TRANSIENT if temporary else FaultKind.PERMANENT,
        code=min(temporary) if temporary else max(r.code for r in refused.values()),
        refused=dict(refused),
    )


def message_refused(where: str, r: Reply, size: int, limit: int | None, *, after_dot: bool) -> SmtpError:
    """DATA, or the message after its final dot, refused."""
    if r.code >= 500 and is_size_refusal(r):
        return size_error(where, size, limit, r)
    what = "the message" if after_dot else "DATA"
    kind = FaultKind.TRANSIENT if r.code < 500 else FaultKind.PERMANENT
    return SmtpError(f"{where} refused {what}: {r}", kind=kind, code=r.code)


def send_failed(where: str, step: str, exc: BaseException, waited: float, *, after_dot: bool) -> SmtpError:
    """The connection failed (lost, timed out, garbled) during a step of the transaction."""
    timed_out = isinstance(exc, TimeoutError)
    if after_dot:
        what = (
            f"{where} did not answer within {_duration(waited)} after the end of the message"
            if timed_out
            else f"the connection to {where} was lost after the end of the message was sent ({_short(exc)})"
        )
        return SmtpError(
            f"{what}: outcome unknown, the message may have been delivered",
            kind=FaultKind.TRANSIENT,
            outcome_unknown=True,
        )
    if timed_out:
        return SmtpError(f"{where} did not answer {step} within {_duration(waited)}", kind=FaultKind.TRANSIENT)
    return SmtpError(f"connection to {where} lost during {step}: {_short(exc)}", kind=FaultKind.TRANSIENT)


# ---- the session ---------------------------------------------------------------------------
def tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError in the exception's cause/context chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def certificate_error(where: str, exc: ssl.SSLCertVerificationError, settings: SmtpSettings) -> SmtpError:
    """The server's certificate did not verify: say which option makes it verify."""
    reason = exc.verify_message or exc.reason or "not trusted"
    if settings.ca_file:
        fix = (
            f"the CA file {settings.ca_file} does not vouch for this certificate: give the CA file that "
            "issued it; --no-verify-certs (or unticking the certificate check) turns checking off, "
            "which lets anyone on the network read the mail and the password"
        )
    else:
        fix = (
            f"{CA_FILE_FIX}; if the name does not match, use the server name the certificate is made "
            "out to; --no-verify-certs (or unticking the certificate check) turns checking off"
        )
    return SmtpError(
        f"secure connection (TLS) to {where} failed: its certificate could not be verified ({reason})",
        kind=FaultKind.TASK_FATAL,
        fix=fix,
    )


def tls_failed(where: str, exc: BaseException) -> SmtpError:
    """The TLS handshake failed for a reason other than the certificate."""
    return SmtpError(
        f"secure connection (TLS) to {where} failed: {_short(exc)}",
        kind=FaultKind.TASK_FATAL,
        fix="check the security setting and the port (STARTTLS usually 587, SSL/TLS usually 465)",
    )


def expects_implicit_tls(where: str) -> SmtpError:
    """Plain text (or STARTTLS) sent to a port that waits for a TLS handshake (465 style)."""
    return SmtpError(
        f"{where} sends no SMTP greeting but answers a TLS handshake: this port expects SSL/TLS from the start",
        kind=FaultKind.TASK_FATAL,
        fix="choose SSL/TLS as the security setting (or STARTTLS on port 587)",
    )


def expects_plain_start(where: str) -> SmtpError:
    """A TLS handshake sent to a port that greets in plain text (587/25 style)."""
    return SmtpError(
        f"{where} does not speak TLS from the start (it greets in plain text): this port expects STARTTLS",
        kind=FaultKind.TASK_FATAL,
        fix="choose STARTTLS as the security setting (or SSL/TLS on port 465)",
    )


def starttls_not_offered(where: str) -> SmtpError:
    """STARTTLS chosen, the server does not offer it: never fall back to plain text."""
    return SmtpError(
        f"{where} does not offer STARTTLS, so the connection cannot be encrypted",
        kind=FaultKind.TASK_FATAL,
        fix="choose SSL/TLS (usually port 465), or check the server name and port",
    )


def login_not_offered(where: str, *, over_tls: bool, starttls_offered: bool) -> SmtpError:
    """The task logs in but the server's EHLO lists no AUTH."""
    if not over_tls and starttls_offered:
        return SmtpError(
            f"the server {where} offers login only over TLS", kind=FaultKind.TASK_FATAL, fix="choose STARTTLS"
        )
    return SmtpError(
        f"the SMTP server {where} does not offer login (AUTH)",
        kind=FaultKind.TASK_FATAL,
        fix="check the server name, port and security setting, or leave the user name empty if no login is needed",
    )


def no_common_mechanism(where: str, offered: list[str]) -> SmtpError:
    """The server offers only login methods AutoMail does not speak."""
    return SmtpError(
        f"{where} offers no login method AutoMail supports (it offers {', '.join(offered) or 'none'};"
        " AutoMail speaks PLAIN, LOGIN and CRAM-MD5)",
        kind=FaultKind.TASK_FATAL,
        fix="ask the mail provider for SMTP login with PLAIN or LOGIN over TLS",
    )


def login_refused(where: str, username: str, r: Reply) -> SmtpError:
    """AUTH refused: 4xx is a passing server problem, anything else means the credentials."""
    if 400 <= r.code < 500:
        return SmtpError(
            f"SMTP login to {where} as {username} failed for now: {r}", kind=FaultKind.TASK_RETRY, code=r.code
        )
    return SmtpError(
        f"SMTP login rejected by {where} for {username}: {r}",
        kind=FaultKind.TASK_FATAL,
        code=r.code,
        fix="open Settings › Basic and check the user name and password",
    )


def session_refused(where: str, step: str, r: Reply) -> SmtpError:
    """The greeting, EHLO/HELO or STARTTLS answered with an error code."""
    return SmtpError(
        f"the SMTP server {where} refused the session at {step}: {r}",
        kind=FaultKind.TASK_RETRY,
        code=r.code,
        fix="check the server name and port; AutoMail keeps retrying",
    )


def unreachable(where: str, step: str, exc: BaseException, waited: float) -> SmtpError:
    """No connection, a dropped one, or no answer while setting the session up."""
    if isinstance(exc, TimeoutError):
        text = f"the SMTP server {where} did not answer {step} within {_duration(waited)}"
    else:
        text = f"cannot reach the SMTP server {where} ({step}): {_short(exc)}"
    return SmtpError(
        text, kind=FaultKind.TASK_RETRY, fix="check the server name and port, and the network; AutoMail keeps retrying"
    )


def unexpected(where: str, step: str, exc: BaseException) -> SmtpError:
    """Any other exception: a task error with its text, so the task stops instead of looping."""
    return SmtpError(
        f"unexpected error from the SMTP client during {step} with {where}: {type(exc).__name__}: {_short(exc)}",
        kind=FaultKind.TASK_FATAL,
        fix="check the task's SMTP settings; if they are right, report this error",
    )


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:g} s"

"""What one attempt at a message means for it and for each of its recipients (the "classify" step)."""

from __future__ import annotations

from dataclasses import dataclass

from automail.errors import FaultKind, Reply, SmtpError
from automail.models import MessageStatus, RecipientState, RecipientStatus, StoredMessage, Task


@dataclass(frozen=True)
class Outcome:
    """The message's new status after one attempt, and every recipient's state.

    ``status`` is SENT once no recipient is pending and at least one got the message, FAILED
    when none did, DEFERRED while a recipient waits for its next attempt (``next_at``).
    """

    status: MessageStatus
    recipients: dict[str, RecipientState]
    code: int | None = None  # the reply code behind a deferral or failure
    error: str = ""  # why the message is deferred or failed
    reply: str = ""  # the server's reply to the final dot, when it accepted the message
    next_at: float | None = None

    @property
    def detail(self) -> str:
        """One line for the event: the reply or the error, with refused recipients."""
        refused = [f"{a} {st.reply}" for a, st in self.recipients.items() if st.status is not RecipientStatus.SENT]
        if self.status is MessageStatus.SENT:
            return self.reply + (f" (refused: {', '.join(refused)})" if refused else "")
        return self.error


def _refusal_status(reply: Reply) -> RecipientStatus:
    return RecipientStatus.DEFERRED if 400 <= reply.code < 500 else RecipientStatus.FAILED


def _error_status(error: SmtpError) -> RecipientStatus:
    if error.outcome_unknown:
        return RecipientStatus.UNKNOWN
    return RecipientStatus.DEFERRED if error.kind is FaultKind.TRANSIENT else RecipientStatus.FAILED


def classify(
    message: StoredMessage,
    queued_at: float,
    task: Task,
    now: float,
    reply: str,
    refused: dict[str, Reply],
    error: SmtpError | None = None,
) -> Outcome:
    """The outcome of sending ``message`` to its pending recipients at ``now``.

    Either the server accepted the message (``reply``; ``refused`` = recipients it refused at
    RCPT) or ``error`` says why not (its ``refused`` when every recipient was refused).  4xx
    recipients stay pending on the message's retry schedule, 5xx ones fail for good, and a
    recipient that got the message is never sent it again.
    """
    states = {r: message.recipient_state(r) for r in message.recipients}
    attempted = message.pending_recipients
    rcpt_replies: dict[str, Reply] = dict((error.refused or {}) if error is not None else refused)
    for addr in attempted:
        if addr in rcpt_replies:
            states[addr] = RecipientState(_refusal_status(rcpt_replies[addr]), str(rcpt_replies[addr]))
        elif error is not None:
            states[addr] = RecipientState(_error_status(error), str(error.message))
        else:
            states[addr] = RecipientState(RecipientStatus.SENT, reply)
    waiting = [a for a in attempted if states[a].status.pending]
    code, text = _summary(states, attempted, rcpt_replies, error)
    if waiting:
        attempts = message.attempts + 1
        next_at = now + task.retry_delay(attempts)
        if next_at - queued_at <= task.max_age_s:
            return Outcome(MessageStatus.DEFERRED, states, code, text, reply, next_at)
        gave_up = f"gave up after {attempts} attempts over {task.max_age_s // 3600} h"
        for addr in waiting:
            states[addr] = RecipientState(RecipientStatus.FAILED, f"{gave_up}: {states[addr].reply}")
        text = f"{gave_up}: {text}"
    if any(st.status is RecipientStatus.SENT for st in states.values()):
        return Outcome(MessageStatus.SENT, states, reply=reply or message.server_reply)
    return Outcome(MessageStatus.FAILED, states, code, text)


def _summary(
    states: dict[str, RecipientState],
    attempted: tuple[str, ...],
    rcpt_replies: dict[str, Reply],
    error: SmtpError | None,
) -> tuple[int | None, str]:
    """The message-level code and text of an attempt that left recipients refused or pending."""
    if error is not None and not error.refused:
        if error.outcome_unknown:
            return error.code, f"outcome unknown: it may have been delivered; {error.message}"
        return error.code, error.message
    refused = [a for a in attempted if a in rcpt_replies]
    if not refused:
        return None, ""
    temporary = [a for a in refused if states[a].status.pending]
    head = "temporarily refused" if temporary else "refused"
    text = f"{'recipients' if len(refused) > 1 else 'recipient'} {head}: "
    text += "; ".join(f"{a}: {states[a].reply}" for a in refused)
    delivered = [a for a in attempted if states[a].status is RecipientStatus.SENT]
    if delivered:
        text += f" (delivered to {', '.join(delivered)})"
    # A deferral carries the code it waits on (4xx); a failure the permanent one.
    code = min(rcpt_replies[a].code for a in temporary) if temporary else max(rcpt_replies[a].code for a in refused)
    return code, text

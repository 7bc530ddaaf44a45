"""How long the client waits for each SMTP reply (RFC 5321 §4.5.3.2, scaled down for a desktop client)."""

from __future__ import annotations

from dataclasses import dataclass

FINAL_DOT_S = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes; the server may be filtering a large message


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each reply; ``command`` is the task's timeout setting.

    RFC 5321 asks for 5 minutes for the greeting, MAIL and RCPT, 2 for DATA, 3 per data
    block and 10 for the reply to the final dot.  A desktop client that reports problems
    to a person cannot wait 5 minutes for a greeting, so everything but the final dot is
    scaled down to the task's timeout (30 s by default): twice that where servers are known
    to do slow checks (DNS and policy look-ups on the greeting, MAIL and RCPT) and for a
    data block.  The upload itself has no total deadline: it may take as long as it needs
    while it moves (each block must leave within ``data_block``), so the time allowed grows
    with the size of the message.  The reply to the final dot keeps its full 10 minutes:
    giving up earlier leaves a message the server may have accepted.
    """

    command: float = 30.0  # EHLO, STARTTLS, AUTH, DATA, RSET, NOOP
    greeting: float = 60.0
    envelope: float = 60.0  # MAIL FROM and each RCPT TO
    data_block: float = 60.0  # no progress at all while uploading the message
    final_dot: float = FINAL_DOT_S
    quit: float = 2.0  # a courtesy: never hold up a shutdown for it

    @classmethod
    def for_timeout(cls, timeout: float) -> Timeouts:
        """The timeouts for a task whose timeout setting is ``timeout`` seconds."""
        return cls(command=timeout, greeting=2 * timeout, envelope=2 * timeout, data_block=2 * timeout)

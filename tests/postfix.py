"""A real Postfix for tests: a private instance on 127.0.0.1 that delivers every message to one Maildir.

The session fixture ``postfix`` (tests/conftest.py) starts one instance per test session with
``postfix -c DIR start``: its own main.cf / master.cf, queue and data directories in a fresh
temporary folder, free ports picked at start, so several test sessions can run side by side and the
machine's default Postfix instance is never started or touched. It needs Debian's ``postfix``,
``sasl2-bin`` and ``libsasl2-modules`` (``.ci/run`` installs them) and root (Postfix's master
runs as root); when the instance cannot start, the fixture FAILS with the reason.

Nothing can leave the machine: it listens on 127.0.0.1 only, every domain is a virtual mailbox
domain delivered to the one Maildir, and ``default_transport`` / ``relay_transport`` are ``error:``.

Ports (all on ``HOST`` = 127.0.0.1):

- ``submission_port``: STARTTLS required before MAIL (``smtpd_tls_security_level = encrypt``);
  SASL AUTH (PLAIN, LOGIN; Cyrus sasldb) offered only after TLS (``smtpd_tls_auth_only``), and
  required to send (``permit_sasl_authenticated, reject``). Log in as ``user`` / ``password``.
- ``smtps_port``: implicit TLS (port-465 style, ``smtpd_tls_wrappermode``), same AUTH rule.
- ``plain_port``: no TLS, no AUTH; accepts mail for any domain.
- ``no8bit_port``: like ``plain_port`` but EHLO does not offer 8BITMIME.

Everywhere: ``smtpd_forbid_bare_newline = reject``, ``smtpd_forbid_unauth_pipelining = yes``,
``message_size_limit = size_limit`` (1,000,000 bytes; EHLO says ``SIZE 1000000``), headers left as
the client sent them (no Date, Message-ID or From added: loopback is treated as remote), and recipients
answered by their local part: ``defer…@any`` → 450 4.2.0, ``reject…@any`` → 550 5.1.1,
anything else → 250. The certificate (SAN DNS:localhost, IP:127.0.0.1) is ``ca_file``: trust it
with an ``ssl.SSLContext``'s ``load_verify_locations(ca_file)`` or the task's CA-file option.

API::

    def test_x(postfix: Postfix) -> None:
        mark = postfix.log_mark()
        ...send to postfix.host, postfix.plain_port...
        [msg] = postfix.wait_for(1, message_id="<1@firma.sk>")   # Delivered: raw, message, ...
        assert "warning" not in postfix.log(since=mark)

``messages()`` reads what was delivered so far (one file per accepted recipient; Postfix's
virtual agent prepends ``Return-Path``, ``X-Original-To``, ``Delivered-To`` and ``Received`` headers
and Maildir files end lines with LF, so compare headers and decoded parts, not whole files).
``stop()`` / ``start()`` stop and restart the same instance on the same ports (mail already queued
is delivered after the restart).
The instance is shared by the whole session: tests filter by Message-ID or recipient, or take a
``log_mark()`` / ``len(messages())`` first, rather than expecting an empty mailbox.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.smtpd import HOST, make_self_signed_cert

__all__ = ["HOST", "Delivered", "Postfix", "PostfixError"]

SIZE_LIMIT = 1_000_000
USER = "automail"
REALM = "localhost"
PASSWORD = "Tajn3-heslo!"
MAILBOX_UID = 65534  # nobody: the virtual agent refuses to deliver as root

_RECIPIENT_ACCESS = """\
/^defer[^@]*@/   450 4.2.0 Recipient address temporarily unavailable (test rule: defer)
/^reject[^@]*@/  550 5.1.1 Recipient address rejected: User unknown (test rule: reject)
"""

# The services a private instance needs, none chrooted (no chroot tree is set up).
_MASTER_BASE = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


# Postfix's commands live in /usr/sbin, which a non-login shell's PATH may lack.
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class PostfixError(RuntimeError):
    """The test Postfix could not be set up, started or stopped; the text says why."""


@dataclass(frozen=True)
class Delivered:
    """One delivered copy (one per accepted recipient), as the virtual agent wrote it to the Maildir."""

    path: Path
    raw: bytes  # the file as delivered: LF line ends; Return-Path, X-Original-To, Delivered-To, Received prepended
    message: email.message.EmailMessage

    @property
    def message_id(self) -> str | None:
        """The Message-ID header, angle brackets included."""
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip()

    @property
    def delivered_to(self) -> str:
        """The envelope recipient this copy was delivered for."""
        return str(self.message["Delivered-To"] or "")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Postfix:
    """A private Postfix instance in ``root`` (see the module docstring)."""

    host = HOST
    user = f"{USER}@{REALM}"
    password = PASSWORD
    size_limit = SIZE_LIMIT

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.maildir = root / "mail" / "Maildir"
        self.log_file = root / "maillog"
        self.ca_file = root / "tls" / "cert.pem"
        self.submission_port = self.smtps_port = self.plain_port = self.no8bit_port = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_new_folder(cls) -> Postfix:
        """An instance (not configured yet) in a new folder under the system's temp folder, which
        Postfix's own users can reach (pytest's tmp_path lies below a folder only root may enter)."""
        return cls(Path(tempfile.mkdtemp(prefix="automail-postfix-")))

    # --- set-up -------------------------------------------------------------------------------

    def configure(self) -> None:
        """Write the instance's files: config, certificate, SASL database, directories."""
        for tool in ("postfix", "postconf", "saslpasswd2"):
            if shutil.which(tool, path=_PATH) is None:
                raise PostfixError(f"{tool} is not installed: apt-get install postfix sasl2-bin libsasl2-modules")
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix instance needs root (its master process runs as root)")
        default_dir = Path(_text(run(["postconf", "-dh", "config_directory"])))
        if not (default_dir / "main.cf").exists():
            # `postfix -c DIR` still reads multi_instance_directories from the default main.cf.
            raise PostfixError(
                f"{default_dir / 'main.cf'} is missing, and `postfix -c DIR` reads it even for another "
                f"instance; create an empty one (.ci/run does): touch {default_dir / 'main.cf'}"
            )
        os.chmod(self.root, 0o755)  # Postfix's own processes (user postfix) read files below it
        self.config_dir.mkdir()
        self.queue_dir.mkdir()
        self.data_dir.mkdir()
        shutil.chown(self.data_dir, user="postfix", group="postfix")  # master.lock, TLS caches
        mail = self.maildir.parent
        mail.mkdir()
        os.chown(mail, MAILBOX_UID, MAILBOX_UID)
        cert, key = make_self_signed_cert(self.root / "tls")
        os.chmod(key, 0o600)  # smtpd reads it as root before dropping privileges
        assert cert == self.ca_file
        self._write_sasl()
        (self.config_dir / "recipient_access").write_text(_RECIPIENT_ACCESS)
        self.submission_port, self.smtps_port, self.plain_port, self.no8bit_port = (free_port() for _ in range(4))
        self._write_main_cf()
        self._write_master_cf()

    def _write_sasl(self) -> None:
        sasl_dir = self.config_dir / "sasl"
        sasl_dir.mkdir()
        db = sasl_dir / "sasldb2"
        run(["saslpasswd2", "-c", "-p", "-f", str(db), "-u", REALM, USER], input_=PASSWORD.encode())
        shutil.chown(db, group="postfix")
        os.chmod(db, 0o640)
        (sasl_dir / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {db}\nmech_list: PLAIN LOGIN\n"
        )

    def _write_main_cf(self) -> None:
        settings = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "syslog_name": f"postfix-test-{self.root.name}",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.root),
            "myhostname": "localhost",
            "mydomain": "localhost",
            "myorigin": "localhost",
            "mydestination": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": f"{HOST}/32",
            "smtp_bind_address": HOST,
            # Nothing leaves the box: every domain is a virtual mailbox domain, into one Maildir.
            "default_transport": "error:this test server delivers nothing off the machine",
            "relay_transport": "error:this test server delivers nothing off the machine",
            "local_transport": "error:this test server has no local delivery",
            "relayhost": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": "static:all",
            "virtual_mailbox_base": str(self.maildir.parent),
            "virtual_mailbox_maps": f"static:{self.maildir.name}/",
            "virtual_uid_maps": f"static:{MAILBOX_UID}",
            "virtual_gid_maps": f"static:{MAILBOX_UID}",
            "virtual_mailbox_limit": "0",
            "message_size_limit": str(SIZE_LIMIT),
            "smtpd_banner": "$myhostname ESMTP AutoMail test Postfix",
            "smtpd_recipient_restrictions": f"check_recipient_access regexp:{self.config_dir}/recipient_access",
            "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "smtpd_forbid_unauth_pipelining": "yes",
            # A conformance check must not be slowed down by Postfix's tarpit after client errors.
            "smtpd_error_sleep_time": "0",
            "smtpd_tls_cert_file": str(self.ca_file),
            "smtpd_tls_key_file": str(self.ca_file.with_name("key.pem")),
            "smtpd_tls_security_level": "none",
            "smtpd_tls_loglevel": "1",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": str(self.config_dir / "sasl"),
            "smtpd_sasl_local_domain": "",
            "smtpd_sasl_auth_enable": "no",
            "smtpd_tls_auth_only": "yes",
            "smtputf8_enable": "yes",
            # Deliver headers as the client sent them: no Date/Message-ID/From added or addresses
            # rewritten, as for any remote client (loopback would otherwise count as local).
            "local_header_rewrite_clients": "",
            "remote_header_rewrite_domain": "",
            "always_add_missing_headers": "no",
            "bounce_queue_lifetime": "0",
            "maximal_queue_lifetime": "1h",
            "biff": "no",
            "disable_vrfy_command": "yes",
        }
        text = "".join(f"{name} = {value}\n" for name, value in settings.items())
        (self.config_dir / "main.cf").write_text(text)

    def _write_master_cf(self) -> None:
        auth = (
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_client_restrictions=\n"
        )
        services = (
            f"{HOST}:{self.submission_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"{auth}"
            f"{HOST}:{self.smtps_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/smtps\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"{auth}"
            f"{HOST}:{self.plain_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/plain\n"
            f"{HOST}:{self.no8bit_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/no8bit\n"
            "  -o smtpd_discard_ehlo_keywords=8bitmime\n"
        )
        (self.config_dir / "master.cf").write_text(_MASTER_BASE + services)

    # --- running ------------------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return run(["postfix", "-c", str(self.config_dir), *args], timeout=timeout, check=False)

    def start(self, timeout: float = 30) -> None:
        """Start the instance; PostfixError says why it did not.

        ``postfix start`` returns once the master has bound every port (``master -w``), so no
        probe connection is needed (it would show up in the log tests read).
        """
        done = self._postfix("start", timeout=timeout)
        if done.returncode != 0:
            # The master's own "bind … Address already in use" goes nowhere (its log service is not
            # running yet), so look for a taken port here.
            busy = [port for port in self.ports if not _bindable(port)]
            reason = f"; port(s) {', '.join(map(str, busy))} on {HOST} already in use" if busy else ""
            raise PostfixError(f"postfix start failed ({done.returncode}){reason}: {_text(done)}\n{self._log_tail()}")
        self._start_watchdog()

    def stop(self, timeout: float = 30) -> None:
        """Stop the instance (``postfix stop`` returns once the master has exited)."""
        done = self._postfix("stop", timeout=timeout)
        if done.returncode != 0 and self.running():
            raise PostfixError(f"postfix stop failed ({done.returncode}): {_text(done)}")

    def running(self) -> bool:
        """Whether the instance's master process runs."""
        return self._postfix("status").returncode == 0

    def close(self) -> None:
        """Stop the instance if it runs, end the watchdog and delete the instance's folder."""
        try:
            if self.config_dir.exists() and self.running():
                self.stop()
        finally:
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait()
            shutil.rmtree(self.root, ignore_errors=True)

    def _start_watchdog(self) -> None:
        """Stop the instance and delete its folder if this test process dies without cleaning up."""
        if self._watchdog is not None and self._watchdog.poll() is None:
            return
        script = 'while kill -0 "$1" 2>/dev/null; do sleep 5; done; "$3" -c "$2/etc" stop >/dev/null 2>&1; rm -rf "$2"'
        postfix = shutil.which("postfix", path=_PATH) or "postfix"
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script, "postfix-watchdog", str(os.getpid()), str(self.root), postfix],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def ports(self) -> tuple[int, int, int, int]:
        return (self.submission_port, self.smtps_port, self.plain_port, self.no8bit_port)

    # --- what tests read ------------------------------------------------------------------------

    def messages(self, *, message_id: str | None = None, to: str | None = None) -> list[Delivered]:
        """Delivered copies in delivery order, optionally only those with this Message-ID / recipient."""
        found: list[Path] = []
        for sub in ("new", "cur"):
            folder = self.maildir / sub
            if folder.is_dir():
                found.extend(p for p in folder.iterdir() if p.is_file())
        # Maildir names start with the delivery time (seconds.microsecond-ish), then a unique part.
        found.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        result = []
        for path in found:
            raw = path.read_bytes()
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(msg, email.message.EmailMessage)
            item = Delivered(path, raw, msg)
            if message_id is not None and item.message_id != message_id:
                continue
            if to is not None and item.delivered_to.lower() != to.lower():
                continue
            result.append(item)
        return result

    def wait_for(
        self, n: int, *, message_id: str | None = None, to: str | None = None, timeout: float = 30
    ) -> list[Delivered]:
        """Wait until at least ``n`` copies (matching the filters) were delivered; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(message_id=message_id, to=to)
            if len(found) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(found) < n:
            raise AssertionError(f"Postfix delivered {len(found)} of {n} messages in {timeout} s\n{self._log_tail(30)}")
        return found

    def log_mark(self) -> int:
        """A position in the log; pass it to ``log(since=…)`` to read only what came after."""
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def log(self, since: int = 0) -> str:
        """Postfix's log (maillog_file) from ``since`` (a ``log_mark()``) to its current end."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, since: int = 0, timeout: float = 10) -> str:
        """Wait until ``text`` appears in the log after ``since``; return the log from ``since``."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log(since)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in Postfix's log after {timeout} s:\n{log[-3000:]}")
            time.sleep(0.05)
        return log

    def _log_tail(self, lines: int = 20) -> str:
        tail = self.log().splitlines()[-lines:]
        return "Postfix log (last lines):\n" + "\n".join(tail) if tail else "Postfix log is empty"


def run(
    args: list[str], *, input_: bytes | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run a Postfix / SASL tool; PostfixError with its output when ``check`` and it fails."""
    env = {**os.environ, "PATH": _PATH}
    try:
        done = subprocess.run(args, input=input_, capture_output=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostfixError(f"{' '.join(args)}: {exc}") from exc
    if check and done.returncode != 0:
        raise PostfixError(f"{' '.join(args)} failed ({done.returncode}): {_text(done)}")
    return done


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _text(done: subprocess.CompletedProcess[bytes]) -> str:
    return (done.stdout + done.stderr).decode("utf-8", "replace").strip()


def start_postfix() -> Postfix:
    """Configure and start a fresh private instance in a new temporary folder (retrying once if a
    picked port was taken meanwhile)."""
    last: PostfixError | None = None
    for _ in range(2):
        server = Postfix.in_new_folder()
        try:
            server.configure()
            server.start()
            return server
        except PostfixError as exc:
            last = exc
            server.close()
    assert last is not None
    raise last

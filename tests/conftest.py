"""Shared fixtures: isolated AUTOMAIL_HOME and keyring for every test, and real SMTP servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from tests.keyring_backend import FILE_ENV, FileKeyring
from tests.postfix import Postfix, PostfixError, start_postfix
from tests.smtpd import SmtpServer, make_self_signed_cert
from tests.ui_support import collect_tk_garbage, root, service, win  # noqa: F401 (GUI test fixtures)

REPO_ROOT = Path(__file__).resolve().parent.parent

AUTH_USER = "info@firma.sk"
AUTH_PASSWORD = "S3cret-pass!"


@pytest.fixture(autouse=True)
def automail_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point AUTOMAIL_HOME and the keyring at this test's tmp_path; return the home folder.

    The home folder is not created. The keyring file lies outside it, as an OS keyring would.
    """
    home = tmp_path / "home"
    monkeypatch.setenv("AUTOMAIL_HOME", str(home))
    monkeypatch.setenv(FILE_ENV, str(tmp_path / "keyring.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.keyring_backend.FileKeyring")
    # The tray tests drive pystray's xorg backend; where PyGObject is importable pystray would pick
    # appindicator instead. test_smoke_app's native-backend test clears this for its app.
    monkeypatch.setenv("PYSTRAY_BACKEND", "xorg")
    # Subprocesses (the CLI) must be able to import tests.keyring_backend.
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    keyring.set_keyring(FileKeyring())
    return home


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The self-signed certificate (localhost, 127.0.0.1) the TLS test servers present.

    Trust it with SSL_CERT_FILE=<path> or aiosmtplib's cert_bundle=<path>.
    """
    cert, _key = make_self_signed_cert(tmp_path_factory.mktemp("smtpd-cert"))
    return cert


def _serve(server: SmtpServer) -> Iterator[SmtpServer]:
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no AUTH) on 127.0.0.1."""
    yield from _serve(SmtpServer())


@pytest.fixture
def smtp_server_pipelining() -> Iterator[SmtpServer]:
    """A plain SMTP server advertising PIPELINING (RFC 2920), like Postfix or Exchange."""
    yield from _serve(SmtpServer(pipelining=True))


@pytest.fixture
def smtp_server_auth() -> Iterator[SmtpServer]:
    """A plain SMTP server requiring AUTH as info@firma.sk / S3cret-pass! (allowed without TLS)."""
    yield from _serve(SmtpServer(auth={AUTH_USER: AUTH_PASSWORD}))


@pytest.fixture
def smtp_starttls_server(server_cert: Path) -> Iterator[SmtpServer]:
    """An SMTP server advertising STARTTLS with the self-signed `server_cert`."""
    key = server_cert.with_name("key.pem")
    yield from _serve(SmtpServer(starttls=True, certfile=server_cert, keyfile=key))


@pytest.fixture
def smtp_tls_server(server_cert: Path) -> Iterator[SmtpServer]:
    """An SMTPS server (implicit TLS, port-465 style) with the self-signed `server_cert`."""
    key = server_cert.with_name("key.pem")
    yield from _serve(SmtpServer(tls=True, certfile=server_cert, keyfile=key))


@pytest.fixture(scope="session")
def postfix() -> Iterator[Postfix]:
    """A private Postfix instance on 127.0.0.1 for the whole session (see tests/postfix.py).

    Fails (never skips) with the reason when Postfix cannot be started.
    """
    try:
        server = start_postfix()
    except PostfixError as exc:
        pytest.fail(f"cannot start the test Postfix: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()

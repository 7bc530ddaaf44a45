"""Keyring backends for tests: in-memory, JSON file shared with subprocesses, and always failing.

Select one in a subprocess with PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring
(the repository root must be on PYTHONPATH so that `tests` is importable).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import NoKeyringError, PasswordDeleteError

FILE_ENV = "AUTOMAIL_TEST_KEYRING_FILE"


class DictKeyring(KeyringBackend):
    """Passwords in a class-level dict: shared by all instances in this process."""

    priority: ClassVar[float] = 1  # type: ignore[misc]
    store: ClassVar[dict[tuple[str, str], str]] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.store[(service, username)]
        except KeyError:
            raise PasswordDeleteError(f"no password for {username!r} in {service!r}") from None


class FileKeyring(KeyringBackend):
    """Passwords in the JSON file named by $AUTOMAIL_TEST_KEYRING_FILE: {service: {user: pw}}."""

    @properties.classproperty
    def priority(cls) -> float:
        # Not viable (keyring skips it) unless a test configured the file.
        if not os.environ.get(FILE_ENV):
            raise RuntimeError(f"{FILE_ENV} is not set")
        return 1

    @staticmethod
    def path() -> Path:
        """The JSON file, from the environment at call time."""
        name = os.environ.get(FILE_ENV)
        if not name:
            raise NoKeyringError(f"test keyring: {FILE_ENV} is not set")
        return Path(name)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data: dict[str, dict[str, str]] = json.loads(self.path().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return data

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # readers in other processes never see a half-written file

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        entries = data.get(service, {})
        if username not in entries:
            raise PasswordDeleteError(f"no password for {username!r} in {service!r}")
        del entries[username]
        if not entries:
            del data[service]
        self._save(data)


class FailKeyring(KeyringBackend):
    """Like a machine without any OS keyring: every call raises NoKeyringError."""

    priority: ClassVar[float] = 0  # type: ignore[misc]

    def get_password(self, service: str, username: str) -> str | None:
        raise NoKeyringError("test keyring: no keyring available")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NoKeyringError("test keyring: no keyring available")

    def delete_password(self, service: str, username: str) -> None:
        raise NoKeyringError("test keyring: no keyring available")

"""The OS keyring: the only place passwords are stored or read."""

from __future__ import annotations

import keyring
import keyring.errors

from automail import APP_NAME
from automail.errors import SecretStoreError

_FIX = (
    "install and unlock an OS keyring (Windows Credential Manager, macOS Keychain, "
    "or a Secret Service such as GNOME Keyring / KWallet on Linux), or choose a backend "
    "with the PYTHON_KEYRING_BACKEND environment variable"
)


def _key(task_name: str) -> str:
    return f"task:{task_name}"


def set_password(task_name: str, password: str) -> None:
    """Store the SMTP password of a task in the OS keyring."""
    try:
        keyring.set_password(APP_NAME, _key(task_name), password)
    except keyring.errors.KeyringError as exc:
        # The library's message never contains the password; keep only its class name.
        raise SecretStoreError(
            f"cannot save the password of task {task_name!r} in the OS keyring ({type(exc).__name__})",
            fix=_FIX,
        ) from None


def get_password(task_name: str) -> str | None:
    """The stored SMTP password of a task, or None if there is none."""
    try:
        return keyring.get_password(APP_NAME, _key(task_name))
    except keyring.errors.KeyringError as exc:
        raise SecretStoreError(
            f"cannot read the password of task {task_name!r} from the OS keyring ({type(exc).__name__})",
            fix=_FIX,
        ) from None


def delete_password(task_name: str) -> None:
    """Forget a task's password; missing entries and missing keyrings are ignored."""
    try:
        keyring.delete_password(APP_NAME, _key(task_name))
    except keyring.errors.KeyringError:
        pass

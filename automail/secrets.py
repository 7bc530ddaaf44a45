"""The OS keyring: the only place passwords are stored or read."""

from __future__ import annotations

import os
import sys

from automail import APP_NAME
from automail.errors import InputError, SecretStoreError

_FIX = (
    "install and unlock an OS keyring (Windows Credential Manager, macOS Keychain, "
    "or a Secret Service such as GNOME Keyring / KWallet on Linux), or choose a backend "
    "with the PYTHON_KEYRING_BACKEND environment variable"
)
# The built app (PyInstaller) can use only the backends bundled with it: no advice to pick another.
_FROZEN_FIX = (
    "install and unlock an OS keyring (Windows Credential Manager, macOS Keychain, "
    "or a Secret Service such as GNOME Keyring / KWallet on Linux)"
)
# Windows error codes the Credential Manager answers with (through pywintypes.error).
_NO_LOGON_SESSION = 1312  # a service or scheduled task without a loaded profile has no credential store
_WIN32_FIXES = {
    _NO_LOGON_SESSION: (
        "this Windows account has no Credential Manager session (a service, or a scheduled task set to run "
        "whether the user is logged on or not): sign in once as that account and store the password there, "
        "set AUTOMAIL_HOME to the data folder it should use, and run the task only when the user is logged on"
    ),
}
# CRED_MAX_CREDENTIAL_BLOB_SIZE: keyring stores the password as UTF-16 in at most 2,560 bytes.
WIN32_SECRET_LIMIT_BYTES = 5 * 512


def _key(task_name: str) -> str:
    return f"task:{task_name}"


def _error(problem: str, exc: BaseException) -> SecretStoreError:
    """Our error for anything the keyring raised: the library's error class, never its text.

    Keyring backends raise more than KeyringError: Windows' raises pywintypes.error for all but
    "not found" (error 1312 under a service account), a PYTHON_KEYRING_BACKEND naming a module
    that is not installed raises ModuleNotFoundError, D-Bus backends raise their own errors.
    """
    what = type(exc).__name__
    winerror = getattr(exc, "winerror", None)
    if winerror is None and type(exc).__module__ == "pywintypes" and exc.args and isinstance(exc.args[0], int):
        winerror = exc.args[0]
    if winerror is not None:
        what += f" {winerror}"
    frozen = getattr(sys, "frozen", False)
    default_fix = _FROZEN_FIX if frozen else _FIX
    fix = _WIN32_FIXES.get(winerror, default_fix) if isinstance(winerror, int) else default_fix
    backend = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip()
    if isinstance(exc, (ImportError, AttributeError, TypeError, ValueError)) and backend:
        what = f"the backend PYTHON_KEYRING_BACKEND={backend} cannot be loaded: {what}"
        if frozen:  # only the backends built into the app can load; there is no `python -m keyring`
            names = _bundled_backends()
            fix = "unset PYTHON_KEYRING_BACKEND" + (
                f" or name one of this build's: {', '.join(names)}" if names else ""
            )
        else:
            fix = (
                "unset PYTHON_KEYRING_BACKEND or name an installed backend class "
                "(`python -m keyring --list-backends` lists them)"
            )
    return SecretStoreError(f"{problem} ({what})", fix=fix)


def _bundled_backends() -> list[str]:
    """The keyring backends that work here (for the built app's error message), by class path."""
    try:
        from keyring.backend import get_all_keyring

        found = get_all_keyring()
    except Exception:
        return []
    names = (f"{type(k).__module__}.{type(k).__name__}" for k in found)
    return sorted(n for n in names if not n.startswith(("keyring.backends.fail", "keyring.backends.chainer")))


def check_storable(password: str) -> None:
    """Refuse a password the platform's keyring cannot hold (Windows: 1,280 UTF-16 units)."""
    if sys.platform == "win32" and len(password.encode("utf-16-le")) > WIN32_SECRET_LIMIT_BYTES:
        raise InputError(
            "password",
            f"is longer than the {WIN32_SECRET_LIMIT_BYTES // 2} characters Windows Credential Manager can store",
            fix="use a shorter password or an app password",
        )


def set_password(task_name: str, password: str) -> None:
    """Store the SMTP password of a task in the OS keyring."""
    check_storable(password)
    try:
        import keyring  # here, not at the top: `enqueue` and `merge` never need it and start faster

        keyring.set_password(APP_NAME, _key(task_name), password)
    except Exception as exc:  # broad on purpose: see _error
        # The library's message never reaches ours: some backends echo what they were given.
        raise _error(f"cannot save the password of task {task_name!r} in the OS keyring", exc) from None


def get_password(task_name: str) -> str | None:
    """The stored SMTP password of a task, or None if there is none."""
    try:
        import keyring

        return keyring.get_password(APP_NAME, _key(task_name))
    except Exception as exc:
        raise _error(f"cannot read the password of task {task_name!r} from the OS keyring", exc) from None


def delete_password(task_name: str) -> None:
    """Forget a task's password; missing entries and missing keyrings are ignored."""
    try:
        import keyring

        keyring.delete_password(APP_NAME, _key(task_name))
    except Exception:
        pass

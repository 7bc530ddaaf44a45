"""Where AutoMail keeps its data ($AUTOMAIL_HOME or the platform data folder) and its resources."""

from __future__ import annotations

import hashlib
import ntpath
import os
import re
import sys
import time
import unicodedata
from pathlib import Path, PureWindowsPath

from automail import APP_NAME
from automail.errors import DataFolderError, InputError

MOUNTS_FILE = "/proc/self/mounts"
# File systems where SQLite's write-ahead log (shared memory, byte-range locks) is not safe.
NETWORK_FS = frozenset(
    {
        *("nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs", "davfs"),
        *("sshfs", "fuse.sshfs", "fuse.davfs", "fuse.glusterfs", "fuse.ceph", "fuse.rclone", "fuse.s3fs"),
    }
)
# Folders that sync clients upload while SQLite writes (OneDrive locks -wal/-shm files).
CLOUD_FOLDERS = ("onedrive", "dropbox", "google drive", "icloud drive", "iclouddrive")
CLOUD_ENV = ("OneDrive", "OneDriveCommercial", "OneDriveConsumer")
DRIVE_REMOTE = 4  # GetDriveTypeW: a mapped network drive


def data_dir() -> Path:
    """The data folder: $AUTOMAIL_HOME if set, else the user data folder of "AutoMail"."""
    env = os.environ.get("AUTOMAIL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs  # here: with AUTOMAIL_HOME set (services, tests) it is not needed at all

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def prepare_data_dir(home: Path) -> Path:
    """Create the data folder if needed; DataFolderError when it is a file or cannot be created."""
    if home.exists() and not home.is_dir():
        raise DataFolderError(
            f"the data folder {home} is a file, not a folder",
            fix="point AUTOMAIL_HOME at a folder, or unset it",
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFolderError(
            f"cannot create the data folder {home}: {exc.strerror}",
            fix="point AUTOMAIL_HOME at a folder this user can write to",
        ) from exc
    return home


def definitions_file(home: Path) -> Path:
    return home / "automail.json"


def outbox_dir(home: Path) -> Path:
    return home / "outbox"


def log_dir(home: Path) -> Path:
    return home / "logs"


def lock_dir(home: Path) -> Path:
    return home / "locks"


def resource_path(*parts: str) -> Path:
    """A bundled resource (assets/…), from the source tree or a PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base.joinpath(*parts)


# Names Windows reserves in every folder, whatever the extension (CON.sqlite3 is the console).
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]]
)
MAX_FILENAME_BYTES = 120  # well under the 255 bytes of common file systems, leaving room for suffixes


def safe_filename(name: str) -> str:
    """A file-system-safe stem for a company name on any OS (keeps letters of any script).

    NFC-normalised; a Windows reserved device name (CON, COM1, …) gets a "_" after it; names longer than
    MAX_FILENAME_BYTES in UTF-8 are cut and keep a short hash, so two long names stay apart.
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in unicodedata.normalize("NFC", name).strip())
    cleaned = cleaned.strip("._") or "company"
    stem, dot, rest = cleaned.partition(".")
    if stem.upper() in _WINDOWS_RESERVED:  # "AUX.firma" is the device too: the stem itself must change
        cleaned = f"{stem}_{dot}{rest}"
    if len(cleaned.encode("utf-8")) > MAX_FILENAME_BYTES:
        digest = hashlib.sha1(cleaned.encode("utf-8")).hexdigest()[:8]
        cut = cleaned.encode("utf-8")[: MAX_FILENAME_BYTES - 9].decode("utf-8", "ignore")
        cleaned = f"{cut}-{digest}"
    return cleaned


def replace_file(src: str | Path, dst: str | Path, attempts: int = 10) -> None:
    """``os.replace(src, dst)``, retried for about 2.5 s while ``dst`` is held open.

    On Windows os.replace fails with PermissionError while another process (a second AutoMail
    reading the file, an antivirus scanner) has the target open; it is released within milliseconds.
    """
    for i in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))


def shared_location(path: str | Path) -> str | None:
    """Why ``path`` is on a network or cloud-synced location, or None for a local disk.

    Windows: UNC paths, mapped network drives (GetDriveTypeW), OneDrive / Dropbox / Google Drive
    folders. Elsewhere: NFS, SMB/CIFS and other network mounts (/proc/self/mounts), and the same
    sync-client folders.
    """
    text = str(path)
    if sys.platform == "win32":
        reason = _windows_remote(text)
    else:
        reason = _mount_remote(text)
    return reason or _cloud_folder(text)


def check_outbox_location(path: str | Path) -> None:
    """Refuse an outbox on a network drive or in a cloud-synced folder (InputError with the reason)."""
    reason = shared_location(path)
    if reason:
        raise InputError(
            "outbox",
            f"{path} is {reason}: SQLite's write-ahead log is not safe there (network file systems, "
            "sync clients locking the -wal/-shm files), and a mapped drive is invisible to services",
            fix="choose a folder on this computer's own disk (the default location is); sharing one outbox "
            "between computers needs the shared PostgreSQL outbox, which is planned",
        )


def _windows_remote(text: str) -> str | None:
    drive = PureWindowsPath(text).drive.removeprefix("\\\\?\\").removeprefix("\\\\.\\")
    if drive.startswith("\\\\") or drive.upper().startswith("UNC\\"):
        return f"on a network share ({drive})"
    if len(drive) == 2 and drive[1] == ":":
        import ctypes  # Windows only; not imported on every start of the CLI

        try:
            kind = ctypes.windll.kernel32.GetDriveTypeW(drive + "\\")  # type: ignore[attr-defined]
        except Exception:
            return None
        if kind == DRIVE_REMOTE:
            return f"on the mapped network drive {drive.upper()}"
    return None


def _mount_remote(text: str) -> str | None:
    try:
        with open(MOUNTS_FILE, encoding="utf-8", errors="replace") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    target = os.path.realpath(os.path.abspath(text))
    best: tuple[str, str] = ("", "")
    for fields in mounts:
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # "\\040" = space
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fields[2])
    point, fstype = best
    if fstype in NETWORK_FS:
        return f"on a network file system ({fstype} at {point})"
    return None


def _cloud_folder(text: str) -> str | None:
    win = sys.platform == "win32"
    parts = PureWindowsPath(text).parts if win else Path(text).parts
    for part in parts:
        low = part.lower()
        if low in CLOUD_FOLDERS or low.startswith("onedrive - "):
            return f"in a cloud-synced folder ({part})"
    sep, norm = ("\\", ntpath.normcase) if win else ("/", os.path.normpath)
    for name in CLOUD_ENV:
        root = os.environ.get(name, "").strip()
        if root and (norm(text) + sep).startswith(norm(root).rstrip("\\/") + sep):
            return f"in the OneDrive folder {root}"
    return None

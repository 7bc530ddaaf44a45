"""Outboxes on network drives and in cloud-synced folders are refused (issue 9, item 12).

Linux mounts are read from a mounts file in /proc's format (this machine has no NFS/SMB mount to
test on); the Windows rules run with ``sys.platform`` = "win32" and a fake GetDriveTypeW.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pytest

from automail import paths
from automail.engine.service import Service
from automail.errors import InputError
from tests.helpers import cli


@pytest.fixture
def mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    share = tmp_path / "mnt" / "office share"  # a space, escaped as \040 in /proc/mounts
    share.mkdir(parents=True)
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"//nas/office {str(share).replace(' ', chr(92) + '040')} cifs rw,vers=3.0 0 0\n"
        f"nas:/export/a {tmp_path / 'mnt' / 'nfs'} nfs4 rw 0 0\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(paths, "MOUNTS_FILE", str(table))
    return share


def test_local_disk_is_fine(tmp_path: Path) -> None:
    assert paths.shared_location(tmp_path / "outbox" / "firma.sqlite3") is None  # the real /proc/self/mounts


LINUX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="the Linux mount table")


@LINUX_ONLY
def test_network_mounts_are_found_in_the_mount_table(mounts: Path, tmp_path: Path) -> None:
    reason = paths.shared_location(mounts / "AutoMail" / "firma.sqlite3")
    assert reason == f"on a network file system (cifs at {mounts})"
    assert "nfs4" in (paths.shared_location(tmp_path / "mnt" / "nfs" / "x.sqlite3") or "")
    assert paths.shared_location(tmp_path / "mnt" / "local.sqlite3") is None


@LINUX_ONLY
def test_company_on_a_share_is_refused_and_nothing_stored(mounts: Path, automail_home: Path) -> None:
    svc = Service(automail_home)
    try:
        with pytest.raises(InputError) as info:
            svc.add_company("Firma", str(mounts / "firma.sqlite3"))
        assert "cifs" in str(info.value) and "write-ahead log" in str(info.value)
        assert "own disk" in (info.value.fix or "")
        assert svc.companies() == []
        assert not (mounts / "firma.sqlite3").exists()
    finally:
        svc.close()


def test_cloud_synced_folder_is_refused_by_the_cli(tmp_path: Path) -> None:
    res = cli("company", "add", "Firma", "--outbox", str(tmp_path / "Dropbox" / "firma.sqlite3"), check=2)
    assert "in a cloud-synced folder (Dropbox)" in res.stderr
    assert json.loads(cli("company", "list", "--json").stdout) == []


class _Kernel32:
    def __init__(self, remote: set[str]) -> None:
        self.remote = remote
        self.asked: list[str] = []

    def GetDriveTypeW(self, root: str) -> int:
        self.asked.append(root)
        return 4 if root.upper() in self.remote else 3  # DRIVE_REMOTE, DRIVE_FIXED


class _Windll:
    def __init__(self, remote: set[str]) -> None:
        self.kernel32 = _Kernel32(remote)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("C:\\Users\\jana\\AppData\\Local\\AutoMail\\outbox\\firma.sqlite3", None),
        ("Z:\\AutoMail\\firma.sqlite3", "on the mapped network drive Z:"),
        ("z:/automail/firma.sqlite3", "on the mapped network drive Z:"),
        ("\\\\nas\\office\\AutoMail\\firma.sqlite3", "on a network share (\\\\nas\\office)"),
        ("\\\\?\\UNC\\nas\\office\\firma.sqlite3", "on a network share (UNC\\nas\\office)"),
        ("C:\\Users\\jana\\OneDrive - Firma s.r.o\\firma.sqlite3", "in a cloud-synced folder (OneDrive - Firma s.r.o)"),
        ("C:\\Users\\jana\\OneDrive\\Documents\\firma.sqlite3", "in a cloud-synced folder (OneDrive)"),
        ("d:\\SYNC\\Účtovníctvo\\firma.sqlite3", "in the OneDrive folder D:\\Sync"),
        ("D:\\Synced\\firma.sqlite3", None),
    ],
)
def test_windows_rules(path: str, reason: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    windll = _Windll({"Z:\\"})
    monkeypatch.setattr(ctypes, "windll", windll, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("OneDriveCommercial", "D:\\Sync")
    assert paths.shared_location(path) == reason

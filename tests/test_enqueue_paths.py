"""`automail enqueue` of folders and of patterns the shell left unexpanded (Windows cmd.exe, PowerShell).

Real files in tmp_path, a real outbox, the real CLI in a subprocess: no shell runs between the test and
the program, so a pattern reaches it as a Windows shell would pass it, literally.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automail.errors import InputError
from automail.intake.eml_files import eml_paths
from tests.helpers import cli, eml


def queued_subjects() -> list[str]:
    return [m["subject"] for m in json.loads(cli("outbox", "--company", "Firma", "--all", "--json").stdout)]


def write(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(eml(n))
    return path


@pytest.fixture
def invoices(tmp_path: Path) -> Path:
    """A folder of three .eml files (written out of name order), a .txt and a subfolder with one more .eml."""
    cli("company", "add", "Firma")
    folder = tmp_path / "invoices"
    for name, n in (("c.eml", 3), ("a.eml", 1), ("B.EML", 2)):
        write(folder / name, n)
    (folder / "notes.txt").write_text("not a message", encoding="utf-8")
    write(folder / "old" / "d.eml", 4)
    return folder


def test_a_folder_queues_its_eml_files_by_name_not_its_subfolders(invoices: Path) -> None:
    out = cli("enqueue", "--company", "Firma", str(invoices)).stdout
    assert "Queued 3 message(s)" in out
    assert queued_subjects() == ["Invoice 2", "Invoice 1", "Invoice 3"]  # B.EML, a.eml, c.eml


def test_an_unexpanded_pattern_is_expanded_sorted(invoices: Path) -> None:
    cli("enqueue", "--company", "Firma", str(invoices / "*.eml"))
    assert queued_subjects() == ["Invoice 1", "Invoice 3"]  # a.eml, c.eml (the pattern is case-sensitive here)
    cli("enqueue", "--company", "Firma", str(invoices / "o?d"))  # a pattern matching a folder: its .eml files
    assert queued_subjects()[-1] == "Invoice 4"


def test_a_folder_without_eml_files_is_refused_by_name(invoices: Path) -> None:
    empty = invoices / "old" / "empty"
    empty.mkdir()
    res = cli("enqueue", "--company", "Firma", str(invoices / "a.eml"), str(empty), check=2)
    assert f"the folder {empty} holds no .eml files" in res.stderr
    assert res.stdout == "" and queued_subjects() == []


def test_a_pattern_matching_nothing_is_refused_by_name(invoices: Path) -> None:
    pattern = str(invoices / "*.msg")
    res = cli("enqueue", "--company", "Firma", str(invoices), pattern, check=2)
    assert f"the pattern {pattern} matches no file" in res.stderr
    assert queued_subjects() == []


def test_a_bad_file_in_a_folder_queues_nothing_and_is_named(invoices: Path) -> None:
    bad = invoices / "b2.eml"
    bad.write_bytes(b"To: someone\r\nSubject: broken\r\n\r\nx")
    res = cli("enqueue", "--company", "Firma", str(invoices), check=2)
    assert f"{bad}: To (line 1)" in res.stderr and "not a valid e-mail address" in res.stderr
    assert queued_subjects() == []


def test_standard_input_goes_with_a_folder_in_the_given_order(invoices: Path) -> None:
    cli("enqueue", "--company", "Firma", "-", str(invoices), stdin=eml(9))
    assert queued_subjects() == ["Invoice 9", "Invoice 2", "Invoice 1", "Invoice 3"]


def test_a_file_named_like_a_pattern_is_that_file(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    odd = write(tmp_path / "faktúra [1].eml", 1)
    write(tmp_path / "faktúra 1.eml", 2)  # what "[1]" would match as a pattern
    cli("enqueue", "--company", "Firma", str(odd))
    assert queued_subjects() == ["Invoice 1"]


def test_expansion_keeps_the_order_given(invoices: Path) -> None:
    names = [str(invoices / "c.eml"), str(invoices), "-", str(invoices / "old" / "*.eml")]
    assert eml_paths(names) == [
        str(invoices / "c.eml"),
        *(str(invoices / n) for n in ("B.EML", "a.eml", "c.eml")),
        "-",
        str(invoices / "old" / "d.eml"),
    ]
    assert eml_paths(["missing.eml"]) == ["missing.eml"]  # reported when read, as before
    with pytest.raises(InputError, match="matches no file"):
        eml_paths([str(invoices / "x*")])


def test_a_folder_that_cannot_be_read_is_bad_input_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()

    def refuse(path: object) -> None:  # tests run as root here, whom no folder permission stops
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("automail.intake.pickup.os.scandir", refuse)
    with pytest.raises(InputError, match=f"cannot read the folder {folder}: Permission denied"):
        eml_paths([str(folder)])


def test_a_mailing_from_a_folder_records_the_folder_not_each_file(invoices: Path) -> None:
    cli("enqueue", "--company", "Firma", "--mailing", "Faktúry", str(invoices), "-", stdin=eml(9))
    [mailing] = json.loads(cli("mailing", "list", "--json").stdout)
    assert mailing["sources"] == [str(invoices), "stdin"] and mailing["queued"] == 4

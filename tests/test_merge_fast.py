"""The merge's faster per-row steps (issue 12, performance) give exactly what the slower ones gave."""

from __future__ import annotations

import base64
import os
import random
import re
from email.utils import getaddresses
from pathlib import Path

import pytest

from automail.errors import InputError
from automail.intake import merge, mime


def _encoded_words_reference(text: str, first: int = 0) -> list[str]:
    """The character-by-character writer the fast one replaced."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    budget = (75 - 12 - first) // 4 * 3
    for ch in text:
        b = ch.encode("utf-8")
        if size + len(b) > budget and chunk:
            words.append("=?utf-8?b?" + base64.b64encode(b"".join(chunk)).decode("ascii") + "?=")
            chunk, size, budget = [], 0, (75 - 12) // 4 * 3
        chunk.append(b)
        size += len(b)
    if chunk:
        words.append("=?utf-8?b?" + base64.b64encode(b"".join(chunk)).decode("ascii") + "?=")
    return words


def test_encoded_words_split_between_the_same_characters_as_before() -> None:
    rnd = random.Random(5)
    alphabet = "aZ 9/ľščťžýáíéúäôň€𝄞中\u0301"
    texts = ["", "a", "Ján Novák", "Faktúra 2026/000123 pre Zákazník Čislo 123", "𝄞" * 40, "ž" * 100]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 120))) for _ in range(2000)]
    for text in texts:
        for first in (0, 9, 18, 40, 58, 62, 70):
            assert mime.encoded_words(text, first) == _encoded_words_reference(text, first), (text, first)


def test_base64_lines_are_encodebytes_with_crlf() -> None:
    for n in (0, 1, 2, 3, 56, 57, 58, 114, 2047, 57 * 40, 57 * 40 + 1):
        data = os.urandom(n)
        assert mime.base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    "text",
    [
        "jan.novak@example.sk",
        "A.B-c+d_e'f@sub.example.com",
        "x@y",
        "a..b@example.sk",
        ".a@example.sk",
        "a@example.sk.",
        "a@-example.sk",
        "ján@example.sk",
        "a@príklad.sk",
        "Ján <jan@example.sk>",
        "a@example.sk;b@example.sk",
        '"a b"@example.sk',
        "a@[127.0.0.1]",
    ],
)
def test_a_bare_recipient_is_read_as_the_address_parser_reads_it(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def read() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        problems: list[tuple[str, str]] = []
        boxes = merge._mailboxes(text, "email", "Ján", lambda c, r: problems.append((c, r)))
        return boxes, problems

    fast = read()
    if merge._PLAIN_ADDRESS_RE.fullmatch(text):
        assert getaddresses([text]) == [("", text)]
    monkeypatch.setattr(merge, "_PLAIN_ADDRESS_RE", re.compile("(?!)"))  # never matches: always the parser
    assert read() == fast


def test_attachments_are_read_once_per_file_however_they_are_named(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pdf = tmp_path / "sub" / "faktúra.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"x" * 5000)
    (tmp_path / "link.pdf").symlink_to(pdf)
    cache = merge._AttachmentCache(10_000_000)
    first = cache.read(pdf, "faktura")
    assert cache.read(tmp_path / "sub" / ".." / "sub" / "faktúra.pdf", "faktura") is first
    assert cache.read(tmp_path / "link.pdf", "faktura") is first
    other = tmp_path / "other.pdf"
    other.write_bytes(b"%PDF-1.4\n" + b"y" * 5000)
    assert cache.read(other, "faktura") is not first
    for missing in (tmp_path / "none.pdf", tmp_path / "sub", other / "x.pdf", tmp_path / "nul\x00.pdf"):
        with pytest.raises(InputError, match="does not exist"):
            cache.read(missing, "faktura")


def test_files_are_read_whole_up_to_one_byte_over_the_limit(tmp_path: Path) -> None:
    from automail.message import read_at_most

    for size in (0, 1, 99, 100, 101, 5000):
        path = tmp_path / f"f{size}"
        path.write_bytes(b"x" * size)
        with path.open("rb") as fh:
            assert read_at_most(fh, 100) == b"x" * min(size, 101)
    read_end, write_end = os.pipe()  # size 0 to fstat, yet data to read
    with os.fdopen(write_end, "wb") as w:
        w.write(b"y" * 150)
    with os.fdopen(read_end, "rb") as r:
        assert read_at_most(r, 100) == b"y" * 101
    with (tmp_path / "f99").open("rb") as fh:
        fh.read(10)  # the rest of a file already partly read
        assert read_at_most(fh, 100) == b"x" * 89


def test_only_attachments_several_messages_carry_are_stored_apart(tmp_path: Path) -> None:
    """Each customer's own invoice stays in its message; common content is stored once, whatever its name."""
    from automail.intake.merge import MergeOptions, Template, render
    from automail.intake.sources import read_table
    from automail.store.outbox import Outbox

    for name, content in [("a.pdf", b"A"), ("b.pdf", b"B"), ("c.pdf", b"C"), ("same1.pdf", b"S"), ("same2.pdf", b"S")]:
        (tmp_path / name).write_bytes(content * 5000)  # well over the 2 KB a part must have to be stored apart
    (tmp_path / "terms.pdf").write_bytes(b"T" * 5000)
    rows = ["email;pdf", "a@example.sk;a.pdf", "b@example.sk;b.pdf", "c@example.sk;c.pdf"]
    rows += ["d@example.sk;same1.pdf", "e@example.sk;same2.pdf"]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    options = MergeOptions(attach_column="pdf", attachments=(tmp_path / "terms.pdf",))
    result = render(read_table(tmp_path / "data.csv"), Template(subject="s", text="t"), options, data_dir=tmp_path)
    assert result.ok and len(result.messages) == 5
    assert [len(m.shared) for m in result.messages] == [1, 1, 1, 2, 2]  # terms everywhere; "S" in two
    box = Outbox(tmp_path / "o.sqlite3", "Firma")
    ids = box.enqueue(result.messages, 1000.0)
    assert box._conn().execute("SELECT count(*) FROM parts").fetchone()[0] == 2  # terms.pdf and "S"
    assert [box.raw(i) for i in ids] == [m.raw for m in result.messages]

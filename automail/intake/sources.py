"""Mail-merge data as office people have it: CSV (UTF-8, UTF-8 with BOM, cp1250; `,` `;` or tab) and .xlsx."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automail.errors import InputError

MAX_DATA_BYTES = 512 * 1024 * 1024  # a data file larger than this is not a mailing list
DELIMITERS = ",;\t"
# Excel on Slovak and Czech Windows saves "CSV" in the ANSI code page: cp1250.
FALLBACK_ENCODING = "cp1250"


@dataclass(frozen=True)
class Row:
    """One data row: ``where`` is how a person finds it ("line 12", "sheet Zákazníci row 7")."""

    number: int
    where: str
    values: dict[str, str]


@dataclass(frozen=True)
class Table:
    """The columns and rows of a data file, every value as the text a person sees."""

    source: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    encoding: str = ""


def read_table(path: Path | str, *, encoding: str | None = None, sheet: str | None = None) -> Table:
    """Read a CSV or .xlsx file; raise ``InputError`` naming the file and the fix if it cannot be read."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        if encoding:
            raise InputError("encoding", "applies only to CSV files", fix="leave out --encoding for .xlsx")
        return _read_xlsx(path, sheet)
    if sheet:
        raise InputError("sheet", f"{path.name} is not a workbook", fix="use --sheet only with .xlsx files")
    return _read_csv(path, encoding)


def decode(data: bytes, source: str, encoding: str | None = None) -> tuple[str, str]:
    """Bytes → (text, encoding used): a given encoding, else UTF-8 (with or without BOM), else cp1250."""
    if encoding:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise InputError("encoding", f"{encoding!r} is not a known encoding", fix="use utf-8 or cp1250") from None
        except UnicodeDecodeError as exc:
            raise InputError(
                source,
                f"is not valid {encoding} (byte {exc.start + 1})",
                fix="give the file's real encoding with --encoding",
            ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode(FALLBACK_ENCODING, "replace"), FALLBACK_ENCODING


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_DATA_BYTES + 1)
    except OSError as exc:
        raise InputError("data", f"cannot read {path}: {exc.strerror}", fix="check the path") from None
    if len(data) > MAX_DATA_BYTES:
        raise InputError("data", f"{path.name} is larger than {MAX_DATA_BYTES // 2**20} MB", fix="split the file")
    return data


def _sniff_delimiter(text: str) -> str:
    # The header line decides: the delimiter that splits it into the most columns (outside quotes).
    first = next(iter(csv.reader(io.StringIO(text), delimiter=",")), None)
    header = text.split("\n", 1)[0]
    counts = {d: _count_outside_quotes(header, d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 or first is None else ","


def _count_outside_quotes(line: str, delimiter: str) -> int:
    inside, count = False, 0
    for ch in line:
        if ch == '"':
            inside = not inside
        elif ch == delimiter and not inside:
            count += 1
    return count


def _read_csv(path: Path, encoding: str | None) -> Table:
    source = path.name
    text, used = decode(_read_bytes(path), source, encoding)
    if not text.strip():
        raise InputError(source, "is empty", fix="give a file with a header line and one row per recipient")
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise InputError(source, f"line 1: {exc}", fix="check the quotes in the header line") from None
    columns = _columns(source, header, "line 1")
    rows: list[Row] = []
    start = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(source, f"line {start}: {exc}", fix="check the quotes on that line") from None
        number, start = start, reader.line_num + 1
        if not any(v.strip() for v in record):
            continue  # blank lines, and trailing separators Excel leaves
        if len(record) > len(columns) and any(v.strip() for v in record[len(columns) :]):
            raise InputError(
                source,
                f"line {number} has {len(record)} values but the header names {len(columns)} columns",
                fix=f"quote values containing {_delimiter_name(delimiter)}, or add the missing column names",
            )
        values = {c: (record[i] if i < len(record) else "") for i, c in enumerate(columns)}
        rows.append(Row(number, f"line {number}", values))
    return Table(source, columns, tuple(rows), used)


def _delimiter_name(delimiter: str) -> str:
    return {"\t": "a tab", ",": "a comma", ";": "a semicolon"}[delimiter]


def _columns(source: str, header: list[Any], where: str) -> tuple[str, ...]:
    names = [str(h).strip() if h is not None else "" for h in header]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise InputError(source, f"{where} has no column names", fix="put the column names in the first row")
    seen: set[str] = set()
    for i, name in enumerate(names, 1):
        if not name:
            raise InputError(source, f"{where}: column {i} has no name", fix="name every column in the first row")
        if name.casefold() in seen:
            raise InputError(source, f"{where}: the column {name!r} appears twice", fix="rename one of them")
        seen.add(name.casefold())
    return tuple(names)


# ---- .xlsx --------------------------------------------------------------------------------
def _read_xlsx(path: Path, sheet: str | None) -> Table:
    import zipfile

    from openpyxl import load_workbook  # only for .xlsx data

    source = path.name
    _read_bytes(path)  # size check and a clear error for an unreadable file
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise InputError(source, f"is not a readable .xlsx workbook ({exc})", fix="save it again from Excel") from None
    try:
        if sheet:
            if sheet not in book.sheetnames:
                names = ", ".join(book.sheetnames)
                raise InputError("sheet", f"{source} has no sheet {sheet!r}", fix=f"choose one of: {names}")
            ws = book[sheet]
        else:
            ws = book.worksheets[0]
        rows_iter: Iterator[tuple[Any, ...]] = ws.iter_rows()
        header_cells = next(rows_iter, None)
        title = ws.title
        if header_cells is None:
            raise InputError(source, f"sheet {title!r} is empty", fix="put the column names in the first row")
        columns = _columns(source, [c.value for c in header_cells], f"sheet {title!r} row 1")
        rows: list[Row] = []
        for number, cells in enumerate(rows_iter, 2):
            texts = [_cell_text(c) for c in cells]
            if not any(t.strip() for t in texts):
                continue
            values = {c: (texts[i] if i < len(texts) else "") for i, c in enumerate(columns)}
            rows.append(Row(number, f"sheet {title!r} row {number}", values))
    finally:
        book.close()
    return Table(source, columns, tuple(rows), "xlsx")


def _cell_text(cell: Any) -> str:
    """A cell's value as the sheet shows it (dates in the cell's format, 12.0 as 12)."""
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    fmt = str(getattr(cell, "number_format", "") or "General")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return _format_date(value, fmt)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float | int):
        return _format_number(value, fmt)
    return str(value)


_DATE_TOKENS = (
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("dd", "%d"),
    ("hh", "%H"),
    ("ss", "%S"),
)


def _format_date(value: dt.date | dt.time, fmt: str) -> str:
    f = fmt.lower().split(";")[0]
    for junk in ("\\", '"', "[$-f800]", "[$-409]", "@"):
        f = f.replace(junk, "")
    if not any(ch in f for ch in "ymdhs"):
        f = "dd.mm.yyyy" if not isinstance(value, dt.time) else "hh:mm"
    out, i = [], 0
    while i < len(f):
        for token, code in _DATE_TOKENS:
            if f.startswith(token, i):
                out.append(code)
                i += len(token)
                break
        else:
            if f.startswith("mm", i):
                # Excel's "mm" is minutes right after hours or before seconds, else the month.
                before = "".join(out)
                minutes = before.endswith(("%H:", "%H")) or f[i + 2 : i + 5].startswith(":ss")
                out.append("%M" if minutes else "%m")
                i += 2
            elif f.startswith("d", i):
                out.append("%-d")
                i += 1
            elif f.startswith("m", i):
                out.append("%-m")
                i += 1
            elif f.startswith("h", i):
                out.append("%-H")
                i += 1
            else:
                out.append(f[i].replace("%", "%%"))
                i += 1
    pattern = "".join(out)
    if isinstance(value, dt.datetime) and value.time() == dt.time() and "%H" not in pattern and "%-H" not in pattern:
        value = value.date()
    return _strftime(value, pattern)


def _strftime(value: dt.date | dt.time, pattern: str) -> str:
    # "%-d" is not portable (Windows): strip leading zeros ourselves.
    parts = pattern.split("%-")
    text = value.strftime(parts[0])
    for part in parts[1:]:
        text += str(int(value.strftime("%" + part[0]))) + value.strftime(part[1:])
    return text


def _format_number(value: float | int, fmt: str) -> str:
    f = fmt.split(";")[0]
    if "%" in f:
        decimals = _decimals(f)
        return f"{value * 100:.{decimals}f}%"
    if f.lower() == "general" or not any(ch in f for ch in "0#"):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return repr(value) if isinstance(value, float) else str(value)
    decimals = _decimals(f)
    grouped = "," in f.split(".")[0]
    text = f"{value:,.{decimals}f}" if grouped else f"{value:.{decimals}f}"
    return text


def _decimals(fmt: str) -> int:
    if "." not in fmt:
        return 0
    tail = fmt.split(".", 1)[1]
    return sum(1 for ch in tail if ch in "0#")

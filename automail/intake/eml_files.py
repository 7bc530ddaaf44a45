"""Which .eml files `automail enqueue` was given: files, folders, and patterns the shell left as they were.

Windows' cmd.exe and PowerShell pass ``*.eml`` to a program unexpanded, and 30,000 file names do not
fit on any command line, so a user queues a folder, or a pattern we expand ourselves.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator

from automail.errors import InputError
from automail.intake.pickup import eml_files_in
from automail.message import read_limited

STDIN = "-"
_GLOB_MAGIC = frozenset("*?[")


def _folder_files(folder: str) -> list[str]:
    try:
        found = eml_files_in(folder)  # the pickup folder's listing: every *.eml directly in it, by name
    except OSError as exc:
        raise InputError(
            "files", f"cannot read the folder {folder}: {exc.strerror}", fix="check that you may read it"
        ) from exc
    if not found:
        raise InputError(
            "files",
            f"the folder {folder} holds no .eml files",
            fix="give the folder the .eml files are in (subfolders are not searched), or name the files",
        )
    return found


def _pattern_files(pattern: str) -> list[str]:
    matches = sorted(glob.glob(pattern))
    if not matches:
        raise InputError(
            "files",
            f"the pattern {pattern} matches no file",
            fix="check the folder and the pattern, e.g. invoices\\*.eml or invoices/*.eml",
        )
    # A match is used as if it had been named: a folder gives its .eml files (as a shell would pass it).
    return [f for match in matches for f in (_folder_files(match) if os.path.isdir(match) else [match])]


def eml_paths(names: Iterable[str]) -> list[str]:
    """Every file the command line names, in order: "-" (standard input) and files as given, each folder's
    ``*.eml`` by name, each unexpanded glob pattern's matches by name.  A folder without .eml files or a
    pattern matching nothing is an InputError naming it; a missing file is reported when it is read."""
    paths: list[str] = []
    for name in names:
        if name == STDIN or os.path.isfile(name):  # a file named "a[1].eml" is that file, not a pattern
            paths.append(name)
        elif os.path.isdir(name):
            paths += _folder_files(name)
        elif _GLOB_MAGIC.intersection(name):
            paths += _pattern_files(name)
        else:
            paths.append(name)
    return paths


def source_name(path: str) -> str:
    """How errors and mailings name a path of the command line: "-" is "stdin"."""
    return "stdin" if path == STDIN else path


def read_eml_files(paths: Iterable[str], max_bytes: int) -> Iterator[tuple[str, bytes]]:
    """(source name, contents) of each path, read one at a time as the caller goes ("-": standard input)."""
    for path in paths:
        yield source_name(path), read_limited(path, "file", max_bytes)

"""The command line is parsed with only the given command's parser built: same help, errors and results."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from typing import Any

import pytest

from automail import __main__ as cli_main
from automail.__main__ import build_parser, parse_arguments

ARGVS = [
    [],
    ["--help"],
    ["-h"],
    ["--version"],
    ["-v"],
    ["nope"],
    ["-v", "nope"],
    ["enq"],
    ["--help", "enqueue"],
    ["enqueue"],
    ["enqueue", "--company"],
    ["enqueue", "--company", "C"],
    ["enqueue", "--bogus", "x"],
    ["-v", "enqueue", "--company", "C", "--tag", "t", "-", "invoices", "*.eml"],
    ["enqueue", "--company", "task", "status"],
    ["task"],
    ["task", "bogus"],
    ["task", "add"],
    ["task", "add", "T", "--company", "C", "--host", "h", "--rate", "x"],
    ["task", "start"],
    ["task", "start", "T"],
    ["company", "add"],
    ["mailing", "pause"],
    ["outbox", "--limit", "x", "--company", "C"],
    ["retry", "--company", "C"],
    ["--verb", "status", "--json"],
    ["status", "--json", "extra"],
    ["gui"],
    *([name, "--help"] for name in ("company", "task", "mailing")),
    *([name, "--help"] for name in cli_main.COMMANDS),
    *(["task", verb, "--help"] for verb in ("add", "edit", "list", "remove", "start", "stop", "test")),
    *(["mailing", verb, "--help"] for verb in ("list", "show", "pause", "resume", "cancel", "retry-failed")),
]


def _run(parse: Callable[[list[str]], argparse.Namespace], argv: list[str]) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: Any = vars(parse(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_help_errors_and_results_are_those_of_the_whole_parser(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal's width
    whole = _run(lambda a: build_parser().parse_args(a), argv)
    assert _run(parse_arguments, argv) == whole


def test_only_the_given_command_gets_its_arguments_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    for name, (help_text, add_arguments) in cli_main._PARSERS.items():

        def spy(p: argparse.ArgumentParser, name: str = name, add: Any = add_arguments) -> None:
            built.append(name)
            add(p)

        monkeypatch.setitem(cli_main._PARSERS, name, (help_text, spy))
    args = parse_arguments(["-v", "enqueue", "--company", "Firma", "invoices"])
    assert (args.command, args.company, args.files, args.verbose) == ("enqueue", "Firma", ["invoices"], True)
    assert built == ["enqueue"]
    built.clear()
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parse_arguments(["enq"])  # not a command: the whole parser, for argparse's own error
    assert built == list(cli_main._PARSERS)

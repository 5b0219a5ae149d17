"""Every command's `--help` as the field's tools have it (rio, Raster Vision): a description,
examples that parse, help on every option; and `--version`."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from amberscan.cli import build_parser, version


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line: `amberscan`, each command and each command's actions."""
    pending = [("amberscan", build_parser())]
    while pending:
        path, parser = pending.pop(0)
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{path} {name}", sub) for name, sub in action.choices.items()]


PARSERS = dict(parsers())


def examples(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:\n"), "no examples"
    lines = []
    for line in epilog.split("\n")[1:]:
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines


def test_every_command_and_action_is_walked() -> None:
    assert {"amberscan scan", "amberscan export", "amberscan models promote"} <= set(PARSERS)
    assert "amberscan watch add" in PARSERS and "amberscan data import" in PARSERS


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_help_has_a_description_examples_and_help_on_every_option(path: str) -> None:
    parser = PARSERS[path]
    text = parser.format_help()
    assert parser.description and parser.description in text
    shown = examples(parser)
    assert any(line.startswith(path) for line in shown), f"{path}: no example of itself"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{path} {name}: no help"


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_the_examples_parse(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each example is a command the parser takes (a comment, a redirection and what follows
    a pipe or `&&` left aside)."""
    for line in examples(PARSERS[path]):
        words = shlex.split(line.split(" #")[0], posix=True)
        while words and "=" in words[0]:  # VARIABLE=value before the command
            words.pop(0)
        for stop in (">", "|", "&&"):
            words = words[: words.index(stop)] if stop in words else words
        if not words or words[0] != "amberscan":
            continue
        try:
            args = build_parser().parse_args(words[1:])
        except SystemExit as exit_:
            if exit_.code == 0 and "--help" in words:  # printed the help it asks for
                continue
            pytest.fail(f"{path}: example {line!r} does not parse (exit {exit_.code})")
        assert callable(args.run)


def test_help_runs_in_a_process_and_version_prints_the_package_version() -> None:
    for argv in (["export", "--help"], ["models", "promote", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "amberscan.cli", *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "examples:\n  amberscan " + " ".join(argv[:-1]) in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "amberscan.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"amberscan {version()}" and version()

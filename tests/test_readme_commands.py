"""The README and docs/ stay true to the code (#27): every `amberscan ...` line parses with the real
CLI parser, every `make X` names a target whose recipe reads the variables given to it, every
`AMBERSCAN_*` variable is a setting (or is listed below with who reads it), and every repository
path in backticks exists. Pure: no server, nothing run but the parser."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amberscan.cli import build_parser
from amberscan.common.settings import ProcessSettings, variables

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services" / "amberscan"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Variables the docs name that are not settings of `common/settings.py`, each with who reads it
# (checked: the reader's text names it).
NOT_SETTINGS = {
    "AMBERSCAN_CACHE_DIR": ("stack/lib.sh", "the stack scripts' download cache"),
    "AMBERSCAN_FINETUNE": ("stack/model.sh", "`make model`: 0 serves the frozen backbone"),
    "AMBERSCAN_INT8": ("stack/model.sh", "`make model`: 0 exports float32 only"),
}
# `AMBERSCAN_STACK_*` configure the local stack's scripts, not a process: read by stack/*.
STACK_PREFIX = "AMBERSCAN_STACK_"

# A word that stands for a value the reader gives (`PATH`, `<id>`, `[--model V]`, `…`).
PLACEHOLDER = re.compile(r"<[^>]*>|\[[^\]]*\]|…|\.\.\.|\b[A-Z][A-Z,_]*\b")


@dataclass(frozen=True)
class Snippet:
    """Code from a doc: one line of a fenced block, or one inline `span`."""

    path: Path
    line: int
    text: str
    fenced: bool

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text.strip()}"


def snippets(path: Path) -> Iterator[Snippet]:
    fenced = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            yield Snippet(path, number, line, True)
        else:
            for span in re.findall(r"`([^`\n]+)`", line):
                yield Snippet(path, number, span, False)


ALL = [snippet for path in DOCS for snippet in snippets(path)]


def commands(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (comments dropped), split at `&&`, `;`, `|`, `&`."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="();&|")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unclosed quote: prose, not a command
        return
    current: list[str] = []
    redirected = False
    for word in words:
        if redirected:  # the file of `> out.csv`
            redirected = False
        elif word in {">", ">>", "<", "2>", "&>"}:
            redirected = True
        elif word and set(word) <= set("&;|()"):
            if current:
                yield current
            current = []
        else:
            current.append(word)
    if current:
        yield current


def amberscan_lines() -> Iterator[tuple[Snippet, list[str]]]:
    """Every `amberscan ...` invocation: in fenced blocks, in inline spans that start with it."""
    for snippet in ALL:
        if not snippet.fenced and not re.match(r"(\.venv/bin/)?amberscan ", snippet.text):
            continue
        for words in commands(snippet.text):
            if words[0].rsplit("/", 1)[-1] == "amberscan" and len(words) > 1:
                yield snippet, words[1:]


def help_examples() -> Iterator[tuple[str, list[str]]]:
    """The `amberscan ...` examples of `amberscan --help` and of every command's `--help`."""
    parser = build_parser()
    parsers: list[argparse.ArgumentParser] = [parser]
    index = 0
    while index < len(parsers):
        for action in parsers[index]._actions:  # noqa: SLF001 - argparse keeps subparsers here
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                parsers.extend(p for p in action.choices.values() if p not in parsers)
        index += 1
    for each in parsers:
        for line in (each.epilog or "").splitlines():
            for words in commands(line.strip()):
                if words[0] == "amberscan" and len(words) > 1:
                    yield f"`{each.prog} --help`: {line.strip()}", words[1:]


def refusal(argv: list[str]) -> str | None:
    """Why the real parser refuses `argv` (None when it parses, or exits 0 for `--help`)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as stop:
            return None if stop.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def test_every_amberscan_line_of_the_docs_and_the_help_parses() -> None:
    checked, skipped, refused = 0, [], []
    found = [(s.where(), words, s.fenced) for s, words in amberscan_lines()]
    found += [(where, words, True) for where, words in help_examples()]
    for where, words, whole in found:
        # An inline span names a command (`amberscan models promote`): its words and options must
        # be real, its required arguments may be left out. A fenced line is a whole command.
        why = refusal(words if whole else [*words, "--help"])
        if why is None:
            checked += 1
        elif PLACEHOLDER.search(" ".join(words)):
            skipped.append(f"{where} ({why})")
        else:
            refused.append(f"{where}\n    {why}")
    assert not refused, "the CLI refuses documented lines:\n" + "\n".join(refused)
    # Placeholder lines that cannot parse (`amberscan serve <service>`) are few, said when failing.
    assert checked >= 60 and len(skipped) <= checked // 4, (checked, skipped)


def test_refusal_and_placeholders_are_told_apart() -> None:
    assert refusal(["scan", "--demo"]) is None
    assert refusal(["models", "promote", "--help"]) is None
    assert refusal(["scan", "--no-such-option"]) is not None
    assert PLACEHOLDER.search("serve <service>") and PLACEHOLDER.search("data import PATH")
    assert not PLACEHOLDER.search("scan --bbox 26.85,51.28,26.92,51.31 --provider xyz")


def makefile_rules() -> dict[str, str]:
    """Each Makefile target with its recipe."""
    rules: dict[str, str] = {}
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"([a-z][a-z-]*):(?!=)", line)
        if rule:
            target = rule.group(1)
            rules[target] = ""
        elif target and line.startswith("\t"):
            rules[target] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            target = None
    return rules


def reads(target: str, rules: dict[str, str]) -> str:
    """The text that decides what `make target` reads: its recipe and the scripts it runs."""
    recipe = rules.get(target, "")
    scripts = re.findall(r"\b((?:stack|benchmarks)/[\w./-]+\.(?:sh|py))", recipe)
    return recipe + "".join((ROOT / s).read_text() for s in scripts if (ROOT / s).is_file())


def test_every_make_line_names_a_target_that_reads_its_variables() -> None:
    rules = makefile_rules()
    settings = all_settings()
    wrong, seen = [], 0
    for snippet in ALL:
        if not snippet.fenced and not snippet.text.startswith("make "):
            continue
        for words in commands(snippet.text):
            env = [w for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
            if words[: len(env)] == env:  # `FORCE=1 make model`: given as make's variables
                words = [*words[len(env) :], *env]
            if not words or words[0] != "make" or len(words) == 1:
                continue
            seen += 1
            for word in words[1:]:
                name, equals, _ = word.partition("=")
                if not equals:
                    if name not in rules:
                        wrong.append(f"{snippet.where()}\n    no target {name!r}")
                    continue
                targets = [w for w in words[1:] if "=" not in w] or ["help"]
                read = any(name in reads(t, rules) for t in targets)
                if not read and name not in settings:  # a setting reaches the process as exported
                    wrong.append(f"{snippet.where()}\n    {targets} do not read {name}")
    assert seen >= 15, seen
    assert not wrong, "make lines the Makefile does not do:\n" + "\n".join(wrong)


def all_settings() -> set[str]:
    found: set[str] = set()
    pending: list[type[ProcessSettings]] = [ProcessSettings]
    while pending:
        each = pending.pop()
        found |= set(variables(each))
        pending.extend(each.__subclasses__())
    return found


def test_every_variable_the_docs_name_is_read() -> None:
    settings = all_settings()
    stack = "\n".join(p.read_text() for p in (ROOT / "stack").rglob("*") if p.is_file())
    unknown = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"AMBERSCAN_[A-Z0-9_]*[A-Z0-9](_\*)?", line):
                name = match.group(0)
                if name.endswith("_*"):  # a family: `AMBERSCAN_SOURCE_*`
                    known = any(s.startswith(name[:-1]) for s in settings)
                elif name.startswith(STACK_PREFIX):
                    known = name in stack
                else:
                    known = name in settings or name in NOT_SETTINGS
                if not known:
                    unknown.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert not unknown, "variables no settings field or stack script reads:\n" + "\n".join(unknown)


@pytest.mark.parametrize("name", sorted(NOT_SETTINGS))
def test_every_variable_outside_the_settings_is_read_where_said(name: str) -> None:
    reader, _reason = NOT_SETTINGS[name]
    assert name in (ROOT / reader).read_text()
    assert name not in all_settings()


TOP = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
IN_PACKAGE = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
MADE = {"models", "artifacts", "web/node_modules", ".venv", ".stack"}  # made by make, not committed
# Paths of another repository: the data set's source, texty/amber-methodology.
ELSEWHERE = ("model/datasets/",)


def expand(path: str) -> list[str]:
    """`tests/web/test_{core,params}.py` as the shell expands it."""
    brace = re.search(r"\{([^{}]*)\}", path)
    if not brace:
        return [path]
    return [
        each
        for part in brace.group(1).split(",")
        for each in expand(path[: brace.start()] + part + path[brace.end() :])
    ]


def test_every_repository_path_in_backticks_exists() -> None:
    missing, seen = [], 0
    for snippet in ALL:
        if snippet.fenced or not snippet.text.strip():
            continue
        first = snippet.text.split()[0].rstrip(".,:;)")
        head = first.split("/", 1)[0]
        if "/" not in first or head not in TOP | IN_PACKAGE or PLACEHOLDER.search(first):
            continue
        if head in MADE or "://" in first or first.startswith(ELSEWHERE) or first.endswith(".log"):
            continue  # made at run time (`.stack/services/web.log`), or another repository's
        if not re.search(r"\.[a-z]+$|/$", first):  # `web/app`, `stack/phase`: prose, not a path
            continue
        seen += 1
        bases = [ROOT, PACKAGE, snippet.path.parent]
        for each in expand(first.rstrip("/")):
            if not any(list(base.glob(each)) for base in bases):
                missing.append(f"{snippet.where()}\n    no {each}")
    assert seen >= 50, seen
    assert not missing, "paths that are not in the repository:\n" + "\n".join(missing)

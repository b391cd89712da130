"""What the docs say about the CLI is true: every `ferry ...` command line quoted in the README,
docs/ and examples/ names a command that exists and only options that command has (issue 13,
item 7: the spec reference named `apply --destroy`, which does not exist), and every option has
help text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from engine.cli.app import app

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS += sorted((ROOT / "examples").rglob("*.md")) + sorted((ROOT / "examples").rglob("*.yml"))
DOCS += [ROOT / "examples" / "ci" / "ferry-gate"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]*?\bferry [^`]*?)`", re.S)
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _root() -> Any:
    """The click-style command tree (typer vendors its own click: read it by duck typing)."""
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")
    return command


def _options(command: Any) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The deepest command the words name, and the words naming it."""
    command = _root()
    path: list[str] = []
    for word in words:
        if word not in getattr(command, "commands", {}):
            break
        command = command.commands[word]
        path.append(word)
    return command, path


def _spans(text: str) -> Iterator[str]:
    """Command lines of a doc: each line of its fenced code blocks, its inline code spans (which
    may wrap over lines), and the lines of a script (a file with no Markdown)."""
    if "```" not in text and "`" not in text:
        yield from text.splitlines()
        return
    for block in FENCE.findall(text):
        yield from block.splitlines()
    for span in INLINE.findall(FENCE.sub("", text)):
        yield " ".join(span.split())


def _invocations(text: str) -> Iterator[tuple[list[str], str]]:
    """(command words, the rest) for each `ferry ...` in a piece of docs; in `ferry state list |
    show ADDR | migrate --to REF` each alternative gets its own options."""
    for span in _spans(text):
        for part in re.split(r"&&|;|\|\||\$\(|#", span):
            found = re.search(r"(?:^|[\s/\"])ferry ([a-z][a-z-]*(?: [a-z][a-z-]*)*)(.*)$", part)
            if not found:
                continue
            words = found.group(1).split()
            _, path = _resolve(words)
            if not path:
                continue  # prose ("ferry records ..."), not a command line
            segments = (" ".join(words[len(path) :]) + found.group(2)).split("|")
            yield path, segments[0]
            for segment in segments[1:]:
                first = segment.split()[0] if segment.split() else ""
                sibling = [*path[:-1], first]
                if not first.startswith(("-", "[")) and _resolve(sibling)[1] == sibling:
                    path = sibling
                yield path, segment


def test_every_documented_option_exists() -> None:
    wrong: list[str] = []
    seen = 0
    for doc in DOCS:
        for path, rest in _invocations(doc.read_text()):
            command, _ = _resolve(path)
            for option in OPTION.findall(rest):
                seen += 1
                if option not in _options(command) and option not in _options(_root()):
                    wrong.append(f"{doc.relative_to(ROOT)}: ferry {' '.join(path)} {option}")
    assert seen > 40, "the scanner found almost nothing: its patterns are broken"
    assert not wrong, "the docs name options the CLI does not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize("text", ["`ferry apply SPEC --destroy`", "`ferry plan SPEC --outt x`"])
def test_the_checker_catches_a_wrong_option(text: str) -> None:
    invocations = list(_invocations(text))
    assert invocations
    path, rest = invocations[0]
    command, _ = _resolve(path)
    assert any(o not in _options(command) for o in OPTION.findall(rest))


def _commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_and_option_has_help() -> None:
    missing = [
        f"ferry {name} {'/'.join(p.opts)}"
        for name, command in _commands(_root())
        for p in command.params
        if p.param_type_name == "option" and not p.help
    ]
    missing += [f"ferry {n}" for n, c in _commands(_root()) if not (c.help or c.short_help)]
    assert not missing, "options or commands without help text:\n" + "\n".join(missing)


PROSE = re.compile(r"\b(validate|discover|plan|apply|show|graph|report)\s+((?:--[a-z][a-z-]*\s*)+)")


def _prose_options(text: str) -> Iterator[tuple[str, str]]:
    """`apply --verify`, `plan/apply --destroy`: a command word right before options, in prose."""
    for word, options in PROSE.findall(text):
        for option in OPTION.findall(options):
            yield word, option


def test_options_named_in_prose_exist() -> None:
    assert ("apply", "--destroy") in set(_prose_options("deleted only by plan/apply --destroy"))
    root = _root()
    wrong = [
        f"{doc.relative_to(ROOT)}: {word} {option}"
        for doc in DOCS
        for word, option in _prose_options(doc.read_text())
        if option not in _options(root.commands[word])
    ]
    assert not wrong, "the docs name options the CLI does not have:\n" + "\n".join(wrong)

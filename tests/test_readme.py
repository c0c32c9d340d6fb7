"""The README stays true: its option tables, synopses and command lines match the program's.

Each command, at any depth of the click tree, has one `<!-- options: batchvoid ... -->` marker
in the README, right after its synopsis (a fenced block) and right before its option table.
The table lists exactly the command's options; the synopsis shows each of them. Every
`batchvoid ...` command line anywhere in the README (code blocks and inline code) uses only
options that its command has.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from batchvoid import catalog
from batchvoid.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
HELP = frozenset({"-h", "--help"})  # every command has them; tables need not repeat them
MARKER = re.compile(r"^<!-- options: (batchvoid(?: [a-z][a-z0-9-]*)*) -->$")
FLAG = re.compile(r"(?<![\w$-])(--?[A-Za-z][A-Za-z0-9-]*)")
CALL = re.compile(r"(?:^|(?<=[\s(])|(?<=bin/))batchvoid(?=\s|$)")  # also .venv/bin/batchvoid
SHELL_BREAK = re.compile(r"\|\||&&|[|;#]|\d?>>?|<")


def commands(command: click.Command = main, path: str = "batchvoid") -> Iterator[tuple[str, click.Command]]:
    """Every command in the tree, groups too, as (its path, itself)."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, f"{path} {name}")


def option_names(command: click.Command) -> list[set[str]]:
    """Each visible option of `command` as the set of its names (`{"--quiet", "-q"}`), help aside."""
    context = click.Context(command, info_name=command.name)
    return [
        set(param.opts + param.secondary_opts) - HELP
        for param in command.get_params(context)
        if isinstance(param, click.Option) and not param.hidden and set(param.opts) - HELP
    ]


COMMANDS = dict(commands())


@dataclass(frozen=True)
class Section:
    """What the README says about one command: its synopsis and its table's option names."""

    line: int  # of the marker, 1-based
    synopsis: str
    table: frozenset[str]


def sections(text: str) -> dict[str, list[Section]]:
    """Every marker's command path and what surrounds it."""
    lines = text.splitlines()
    found: dict[str, list[Section]] = {}
    for number, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match is None:
            continue
        found.setdefault(match[1], []).append(
            Section(number + 1, _synopsis_before(lines, number), _table_after(lines, number))
        )
    return found


def _synopsis_before(lines: list[str], marker: int) -> str:
    """The fenced block that ends just above the marker ('' if there is none)."""
    end = marker - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or lines[end].strip() != "```":
        return ""
    start = end - 1
    while start >= 0 and not lines[start].startswith("```"):
        start -= 1
    return "\n".join(lines[start + 1 : end])


def _table_after(lines: list[str], marker: int) -> frozenset[str]:
    """The option names in the first column of the table just below the marker."""
    rows = []
    for line in lines[marker + 1 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    names: set[str] = set()
    for row in rows[2:]:  # past the header and the --- row
        first = row.strip("|").split("|")[0]
        names.update(re.findall(r"`(--?[A-Za-z][A-Za-z0-9-]*)", first))
    return frozenset(names)


def command_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every code block line and inline code span that may run batchvoid."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def invocations(text: str) -> Iterator[tuple[str, list[str]]]:
    """Each `batchvoid ...` in `text`: the command path it names and the flags it passes."""
    text = re.sub(r"\$\([^)]*\)", "", text)  # $(date -u ...): another program's options
    text = re.sub(r"\S*<TAB>", "", text)  # `batchvoid run --max<TAB>`: a word being completed
    for segment in SHELL_BREAK.split(text):
        for call in CALL.finditer(segment):
            tokens = segment[call.end() :].split()
            path, command = "batchvoid", main
            while tokens and isinstance(command, click.Group) and tokens[0] in command.commands:
                command = command.commands[tokens[0]]
                path = f"{path} {tokens.pop(0)}"
            yield path, FLAG.findall(" ".join(tokens))


def test_every_command_has_one_readme_section_and_every_section_a_command() -> None:
    """A command without a README table, a table for no command, or two tables for one, fails."""
    found = sections(README.read_text(encoding="utf-8"))
    assert sorted(set(COMMANDS) - set(found)) == [], (
        "commands with no <!-- options: ... --> table in README.md"
    )
    assert sorted(set(found) - set(COMMANDS)) == [], "README.md tables for commands that do not exist"
    twice = {path: [s.line for s in found[path]] for path in found if len(found[path]) > 1}
    assert twice == {}, "commands with more than one table in README.md"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_the_readme_table_lists_exactly_the_commands_options(path: str) -> None:
    """Each option of the command is in its README table, and the table names no other."""
    (section,) = sections(README.read_text(encoding="utf-8")).get(path, [None])
    assert section is not None, f"README.md has no <!-- options: {path} --> table"
    options = option_names(COMMANDS[path])
    every_name = set().union(*options) if options else set()
    missing = sorted(min(names) for names in options if not names & section.table)
    unknown = sorted(section.table - every_name - HELP)
    assert missing == [], f"{path}: options missing from the README table (line {section.line})"
    assert unknown == [], f"{path}: the README table (line {section.line}) names options it does not have"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_the_readme_synopsis_shows_every_option(path: str) -> None:
    """The fenced synopsis above each table starts with the command and shows each of its options, and no other."""
    (section,) = sections(README.read_text(encoding="utf-8")).get(path, [None])
    assert section is not None, f"README.md has no <!-- options: {path} --> table"
    assert section.synopsis.startswith(path), f"{path}: no synopsis block just above line {section.line}"
    shown = set(FLAG.findall(section.synopsis))
    options = option_names(COMMANDS[path])
    every_name = set().union(*options) if options else set()
    assert sorted(min(names) for names in options if not names & shown) == [], f"{path}: synopsis lacks"
    assert sorted(shown - every_name - HELP) == [], f"{path}: synopsis shows options it does not have"


def test_every_batchvoid_command_line_in_the_readme_uses_real_options() -> None:
    """An example or synopsis anywhere that passes an option its command does not have fails, with its line."""
    wrong = []
    for number, text in command_lines(README.read_text(encoding="utf-8")):
        for path, flags in invocations(text):
            known = set().union(*option_names(COMMANDS[path]), HELP)
            wrong += [f"line {number}: {path} {flag}" for flag in flags if flag not in known]
    assert wrong == []


def test_the_readme_shows_the_providers_listing_as_the_program_prints_it() -> None:
    """The `$ batchvoid providers` example is the program's output, up to its first '...'."""
    text = README.read_text(encoding="utf-8")
    shown = text.split("$ batchvoid providers\n", 1)[1].split("\n...\n", 1)[0]
    assert catalog.text().startswith(shown + "\n")


def test_the_checks_catch_what_they_are_for() -> None:
    """The parsers find a missing, a made-up and a misused option in a README written to have them."""
    fake = (
        "```\nbatchvoid providers [--json] [--colour]\n```\n"
        "<!-- options: batchvoid providers -->\n| option | meaning |\n| --- | --- |\n| `--colour` | x |\n"
        "Then run `batchvoid status --ledger x.sqlite --verbose | grep -v y`.\n"
    )
    (section,) = sections(fake)["batchvoid providers"]
    assert section.table == {"--colour"}
    assert set(FLAG.findall(section.synopsis)) == {"--json", "--colour"}
    calls = [call for _, text in command_lines(fake) for call in invocations(text)]
    assert ("batchvoid status", ["--ledger", "--verbose"]) in calls
    assert all("-v" not in flags for _, flags in calls)  # grep's, after the pipe

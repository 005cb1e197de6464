"""README.md's "Add to your site" section, read as the instructions the drop-in test carries out.

Every code block of the section is either a file block, whose first line is a comment naming the
file and where the code goes::

    # mysite/settings.py: at the end
    # mysite/settings.py: at the end, for production static files
    # mysite/asgi.py: at the end
    {# templates/streamchat/base.html: a new file, for your site's layout #}

or a ``console`` block of commands, whose first line may name its purpose the same way
(``# for production``). A block without a purpose is for every site; the others are for the sites
that purpose names. ``mysite`` stands for the host's project package. Anything else is an error
here, so the README cannot grow a block that the test silently skips.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Add to your site"
PROJECT_PLACEHOLDER = "mysite"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
PYTHON_TARGET = re.compile(r"^# (?P<path>[\w./-]+): (?P<where>[^\n]+)$")
TEMPLATE_TARGET = re.compile(r"^\{# (?P<path>[\w./-]+): (?P<where>[^\n]+) #\}$")
PLACES = {"at the end": "append", "the whole file": "write", "a new file": "write"}
# The purpose of the one block that a new site needs beyond the blocks for every site.
NEW_SITE = "for a site without its own login page"
# The minimal drop-in: the settings, URLs and ASGI lines a new site gets, at most this many.
MINIMAL_LINES = 10


@dataclass(frozen=True)
class FileBlock:
    path: str  # relative to the project folder, with "mysite" for the project package
    mode: str  # "append" or "write"
    purpose: str  # "" for the blocks every site needs, else e.g. "for production static files"
    code: str

    def for_project(self, name: str) -> FileBlock:
        """The block with the project's package name in place of ``mysite``."""
        return FileBlock(
            path=self.path.replace(f"{PROJECT_PLACEHOLDER}/", f"{name}/", 1),
            mode=self.mode,
            purpose=self.purpose,
            code=re.sub(rf"\b{PROJECT_PLACEHOLDER}\.", f"{name}.", self.code),
        )


@dataclass(frozen=True)
class CommandBlock:
    purpose: str  # as a FileBlock's
    lines: list[str]


@dataclass(frozen=True)
class Section:
    text: str
    files: list[FileBlock]
    commands: list[CommandBlock]

    def file_blocks(self, *purposes: str, common: bool = True) -> list[FileBlock]:
        """The blocks every site needs (unless not ``common``), plus those for the given purposes,
        in README order."""
        unknown = set(purposes) - {block.purpose for block in self.files}
        assert not unknown, f"README has no block {unknown}"
        wanted = ("", *purposes) if common else purposes
        return [block for block in self.files if block.purpose in wanted]

    def command_blocks(self, *purposes: str, common: bool = True) -> list[CommandBlock]:
        """The console blocks for every site (unless not ``common``) and for ``purposes``."""
        unknown = set(purposes) - {block.purpose for block in self.commands} - {""}
        assert not unknown, f"README has no console block {unknown}"
        wanted = ("", *purposes) if common else purposes
        return [block for block in self.commands if block.purpose in wanted]

    def minimal_lines(self) -> list[str]:
        """The host's lines of the minimal drop-in on a new site: settings, URLs and ASGI (every
        site's Python blocks and the new site's login block), blank lines and comments aside."""
        return [
            line
            for block in self.file_blocks(NEW_SITE)
            if block.path.endswith(".py")
            for line in block.code.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]

    def command_lines(self, program: str) -> list[str]:
        """Every command line that runs ``program``: console blocks first, then inline code."""
        lines = [
            line for block in self.commands for line in block.lines if line.split()[0] == program
        ]
        lines += re.findall(rf"`({re.escape(program)} [^`]+)`", self.text)
        assert lines, f"README's {SECTION!r} section runs no {program!r}"
        return lines

    def command(self, program: str) -> str:
        """The first command line that runs ``program``."""
        return self.command_lines(program)[0]


def section_text(readme: Path = README) -> str:
    text = readme.read_text()
    match = re.search(rf"^## {re.escape(SECTION)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no {SECTION!r} section"
    return match.group(1)


def parse(readme: Path = README) -> Section:
    text = section_text(readme)
    files: list[FileBlock] = []
    commands: list[CommandBlock] = []
    for fence in FENCE.finditer(text):
        body = textwrap.dedent(fence.group("body"))
        lang = fence.group("lang")
        if lang == "console":
            lines = body.splitlines()
            purpose = lines[0][2:] if lines and lines[0].startswith("# ") else ""
            commands.append(
                CommandBlock(purpose, [line for line in lines if line and not line.startswith("#")])
            )
            continue
        first, _, code = body.partition("\n")
        target = PYTHON_TARGET.match(first) or TEMPLATE_TARGET.match(first)
        assert target, f"a {lang} block does not start by naming its file: {first!r}"
        place, _, purpose = target.group("where").partition(", ")
        assert place in PLACES, f"unknown place {place!r} for {target.group('path')}"
        files.append(FileBlock(target.group("path"), PLACES[place], purpose, code))
    return Section(text=text, files=files, commands=commands)

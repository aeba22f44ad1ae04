"""Every `twin <command> --flag` the docs and deploy examples name exists in the `twin` parser.

A reader copies commands from README.md, docs/*.md and deploy/; a command or flag that the parser does not
know (issue 16: docs named a `twin release publish` that never existed) fails here with file and line.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pipeline.cli.main import make_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DEPLOY = [p for p in sorted((REPO / "deploy").rglob("*")) if p.is_file()] + [REPO / "Makefile"]

# `twin` as a command word (not `ruhrtwin`, `twin-export`, `twin_...`), then the command word.
_TWIN = re.compile(r"(?<![\w./-])(?:\S*/)?(?:twin|\$\(TWIN\))[ \t]+([a-z][a-z_-]*)")
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# code spans that start like a command but are names
NAMES_NOT_COMMANDS = ("twin local ENU frame",)  # the CRS name of `twin points --crs local` (pointcloud.md)
# In Markdown code, a command starts the span or follows `$ `, `&&`, `;`, `|` or environment assignments.
_COMMAND_START = re.compile(r"(?:^|[$;|&]\s*)(?:[A-Z_][A-Z0-9_]*=\S*\s+)*\s*$")
# Where a shell command ends: a real pipe (`a | b`), `;`, `&&`, `||`, a redirection, a comment.
_END = re.compile(r"\s\|\s|;|&&|\|\||>>?|\s#")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("twin has no subcommands")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _code_spans(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block line and every inline code span of a Markdown file."""
    out: list[tuple[int, str]] = []
    fence = False
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            out.append((no, line))
    # inline spans may wrap over a line break; fenced blocks are blanked first
    blanked = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for m in re.finditer(r"`([^`]+)`", blanked):
        out.append((blanked.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " ")))
    return out


def _mentions(path: Path) -> list[tuple[str, int, str, list[str]]]:
    """(file, line, command, flags) for every `twin COMMAND ...` in the file's code."""
    text = path.read_text(encoding="utf-8")
    spans = _code_spans(text) if path.suffix == ".md" else list(enumerate(text.splitlines(), 1))
    found = []
    for no, span in spans:
        span = span.replace("\\|", "|")  # a `|` escaped inside a Markdown table cell
        for m in _TWIN.finditer(span):
            if path.name == "Makefile" and "$(TWIN)" not in m.group(0):
                continue  # `.PHONY: twin test ...` are make targets
            if path.suffix == ".md" and not _COMMAND_START.search(span[: m.start()]):
                continue  # prose inside code: `the twin of ...`
            if span.startswith(NAMES_NOT_COMMANDS):
                continue
            rest = span[m.end() :]
            end = _END.search(rest)
            rest = rest[: end.start()] if end else rest
            nxt = _TWIN.search(rest)  # `twin a` / `twin b` in one span
            rest = rest[: nxt.start()] if nxt else rest
            flags = _FLAG.findall(rest)
            found.append((str(path.relative_to(REPO)), no, m.group(1), flags))
    return found


def _all_mentions() -> list[tuple[str, int, str, list[str]]]:
    return [m for p in DOCS + DEPLOY for m in _mentions(p)]


def test_the_scan_finds_the_commands_the_docs_are_known_to_name() -> None:
    """The extraction itself works: it sees the README's command table and a synthetic wrong mention."""
    seen = {(f, c) for f, _, c, _ in _all_mentions()}
    for cmd in ("demo", "build", "points", "status", "rollback", "gc", "publish", "validate", "view"):
        assert ("README.md", cmd) in seen, f"README.md names no `twin {cmd}`"
    probe = REPO / "docs" / "operations.md"
    assert any(c == "publish" and "--public" in fl for f, _, c, fl in _mentions(probe))


def test_extraction_of_a_crafted_document(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `twin release publish --to x` or\n```\ntwin build cfg.yaml --force  # comment --bogus\n```\n"
        "`twin points a.laz --format 1.1|1.0 | head --lines 3` and `twin view` / `twin gc\n-c C`\n"
        "`the twin of x`, `TWIN_TRACE=f twin demo --json`\n",
        encoding="utf-8",
    )
    got = [(c, fl) for _, _, c, fl in _mentions_of(doc)]
    assert ("release", ["--to"]) in got
    assert ("build", ["--force"]) in got
    assert ("points", ["--format"]) in got
    assert ("view", []) in got and ("gc", ["-c"]) in got
    assert ("demo", ["--json"]) in got and "of" not in [c for c, _ in got]


def _mentions_of(path: Path) -> list[tuple[str, int, str, list[str]]]:
    global REPO
    saved = REPO
    REPO = path.parent
    try:
        return _mentions(path)
    finally:
        REPO = saved


def _wrong(mentions: list[tuple[str, int, str, list[str]]]) -> list[str]:
    commands = _subparsers(make_parser())
    wrong = []
    for f, no, cmd, flags in mentions:
        if cmd not in commands:
            wrong.append(f"{f}:{no}: `twin {cmd}` is no command (twin has: {', '.join(sorted(commands))})")
            continue
        known = _options(commands[cmd])
        wrong += [f"{f}:{no}: `twin {cmd}` has no option {fl}" for fl in flags if fl not in known]
    return wrong


def test_a_wrong_command_and_a_wrong_flag_are_reported(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "`twin release publish` and `twin status -c C --jsn`, `twin gc -c C --keep 3`\n", encoding="utf-8"
    )
    wrong = _wrong(_mentions_of(doc))
    assert len(wrong) == 2
    assert "`twin release` is no command" in wrong[0] and "x.md:1" in wrong[0]
    assert "`twin status` has no option --jsn" in wrong[1]


@pytest.mark.parametrize("path", DOCS + DEPLOY, ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_command_and_flag_exists(path: Path) -> None:
    wrong = _wrong(_mentions(path))
    assert not wrong, "\n".join(wrong)


def test_every_command_and_option_has_a_help_text() -> None:
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    missing = [f"twin {n}" for n in sub.choices if not helps.get(n)]
    for name, p in sub.choices.items():
        missing += [f"twin {name} {a.option_strings or a.dest}" for a in p._actions if not a.help]
    assert missing == []


def test_readme_command_table_has_one_row_per_command() -> None:
    """The README's command table is the one list of commands: every command once, nothing else."""
    rows = [
        line
        for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `twin ")
    ]
    named = [re.match(r"\| `twin ([a-z]+)", r).group(1) for r in rows]
    assert sorted(named) == sorted(_subparsers(make_parser()))

"""Every ``pathreview`` command written in README.md, docs/ and the shipped model cards still parses.

Concrete command lines are parsed whole by ``build_parser``; usage synopses (placeholders such as
``DIR`` or ``INPUT...``, optional parts in brackets) must name an existing sub-command and only options
it takes. A documented option that a refactor drops fails here.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from napari_pathreview.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"[A-Z][A-Z_0-9]*(\.\.\.|\.\w+)?|\.\.\.|.*[\[\]<>…|].*")


def _code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, ``\\``-continued lines joined."""
    out, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = pending + line.strip()
        pending = line[:-1] + " " if line.endswith("\\") else ""
        if not pending:
            out.append(line)
    return out


def _strip(cmd: str) -> str:
    """The command alone: no shell prompt, no trailing comment or description column."""
    cmd = re.sub(r"^\$\s*", "", cmd.strip())
    cmd = re.split(r"\s+#\s|\s{3,}", cmd)[0]
    return cmd.strip().rstrip("\\").strip()


def _doc_commands() -> list[tuple[str, str]]:
    found = []
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in docs:
        text = path.read_text()
        spans = re.findall(r"`(pathreview [^`]+)`", text)
        lines = [ln for ln in _code_lines(text) if re.match(r"(\$\s*)?pathreview\s", ln)]
        spans = [" ".join(c.split()) for c in spans]  # a span wrapped over lines
        found += [(str(path.relative_to(ROOT)), c) for c in spans]
        found += [(str(path.relative_to(ROOT)), _strip(c)) for c in lines]
    return found


def _card_commands() -> list[tuple[str, str]]:
    found = []

    def walk(where, node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "command" and isinstance(v, str) and v.startswith("pathreview "):
                    found.append((where, v))
                else:
                    walk(where, v)
        elif isinstance(node, list):
            for v in node:
                walk(where, v)

    for path in sorted((ROOT / "src/napari_pathreview/weights").glob("*.json")):
        walk(f"{path.relative_to(ROOT)}", json.loads(path.read_text()))
    return found


COMMANDS = sorted(set(_doc_commands() + _card_commands()))


def _variants(parser: argparse.ArgumentParser, words: list[str]) -> list[tuple[argparse.ArgumentParser, list]]:
    """(sub-command parser, the words after its name) for each command the leading words can name:
    ``train|evaluate`` names each alternative, a placeholder (``TASK``) every sub-command, and so does an
    option where a sub-command is due (``pathreview train --data DIR``: the option of every task)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not words or not subs:
        return [(parser, words)]
    first, choices = words[0], subs[0].choices
    if first.startswith("--"):
        return [v for n in choices for v in _variants(choices[n], words)]
    names = list(choices) if re.fullmatch(r"[A-Z][A-Z_]*", first) else [n for n in first.split("|") if n]
    if not all(n in choices for n in names):
        return [(parser, words)]
    return [v for n in names for v in _variants(choices[n], words[1:])]


def test_the_docs_and_cards_hold_commands():
    where = {w.split("/")[0] for w, _ in COMMANDS}
    assert len(COMMANDS) > 50 and {"README.md", "docs", "src"} <= where
    assert any("train detector" in c for _, c in _card_commands())


def _check_synopsis(where: str, command: str, words: list[str], variants: list) -> None:
    """Each ``--option`` of a synopsis exists in every command it names (``--a/--b``: one of them; under a
    placeholder such as ``TASK``: in one of the commands at least)."""
    under_placeholder = any(re.fullmatch(r"[A-Z][A-Z_]*", w) for w in words[: len(words) - len(variants[0][1])])
    for w in variants[0][1]:
        flags = [f for f in w.strip("[]").split("=")[0].split("/") if f.startswith("--")]
        if not flags:
            continue
        knows = [bool(set(flags) & {s for a in p._actions for s in a.option_strings}) for p, _ in variants]
        ok = any(knows) if under_placeholder else all(knows)
        assert ok, f"{where}: `{command}`: {', '.join(p.prog for p, _ in variants)} lack {'/'.join(flags)}"


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c[:70]}" for w, c in COMMANDS])
def test_documented_command_parses(where, command):
    words = shlex.split(command.replace("\\|", "|"))[1:]  # `a\|b`: a table cell's escaped alternatives
    variants = _variants(build_parser(), words)
    assert all(p.prog != "pathreview" for p, _ in variants), f"{where}: `{command}` names no pathreview command"
    if any(PLACEHOLDER.fullmatch(w) for w in words):  # a synopsis: its options must exist
        _check_synopsis(where, command, words, variants)
        return
    if not variants[0][1]:  # a command named in prose (`pathreview train`): it exists
        return
    try:
        build_parser().parse_args(words)
    except SystemExit as e:
        pytest.fail(f"{where}: `{command}` does not parse (exit {e.code})")

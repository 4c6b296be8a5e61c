"""Every command the docs give for a figure exists, and every --flag it uses is one its CLI accepts."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a command inside backticks: `python -m kai_drive.x --flag ...` or `python scripts/x.py ...`
COMMAND = re.compile(r"`((?:python3? -m kai_drive[\w.]*|python3? (?:scripts|benchmarks)/\w+\.py|bash scripts/\w+\.sh)[^`]*)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def doc_commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in COMMAND.finditer(text):
            out.append((doc.name, " ".join(m.group(1).split())))
    return out


COMMANDS = doc_commands()


def target(cmd: str) -> str:
    parts = cmd.split()
    return parts[2] if parts[1] == "-m" else parts[1]


@lru_cache(maxsize=None)
def help_text(tgt: str) -> str:
    if tgt.endswith(".sh"):
        return (ROOT / tgt).read_text()
    argv = [sys.executable, "-m", tgt] if not tgt.endswith(".py") else [sys.executable, str(ROOT / tgt)]
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.stdout + proc.stderr


def test_docs_have_commands():
    assert len(COMMANDS) > 50  # the docs quote many; an empty list means the pattern broke


@pytest.mark.parametrize("tgt", sorted({target(c) for _, c in COMMANDS}))
def test_each_documented_command_exists_and_its_flags_are_accepted(tgt):
    if tgt.endswith((".py", ".sh")):
        assert (ROOT / tgt).is_file(), f"{tgt} is quoted in the docs but does not exist"
    text = help_text(tgt)
    if not tgt.endswith(".sh"):
        assert "usage:" in text, f"{tgt} --help printed no usage:\n{text[-2000:]}"
    bad = []
    for doc, cmd in COMMANDS:
        if target(cmd) != tgt or tgt.startswith("benchmarks/"):  # the peers' venv differs; flags checked by eye
            continue
        for flag in FLAG.findall(cmd):
            if flag not in text:
                bad.append(f"{doc}: `{cmd}` uses {flag}")
    assert not bad, "documented flags the CLI does not accept:\n" + "\n".join(bad)

"""The docs speak to users of the product: what it does, how to run it and what was
measured (with dates and commits), not the sessions, issues and machine it was built in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# pattern -> what to write instead. A Socket.IO or Engine.IO "session" stays allowed.
DIARY_WORDING = {
    r"\bsessions? [0-9]": "a work session: say when (date, commit)",
    r"\bthis session\b": "a work session: say when (date, commit)",
    r"\bissues? ?#?[0-9]": "an issue number: say what the product does",
    r"\btargets? [0-9]": "a benchmark target number: name the scenario by what it measures",
    r"\bworkplace\b": "the place it was built in: say what is true for a user",
    r"\bdevelopment machine\b": "the machine it was built on: say what is true for a user",
}


def user_facing_files() -> list[Path]:
    """README, docs, the page's README, the Makefile, deploy/ and the text make bench writes."""
    files = [REPO / "README.md", REPO / "web" / "README.md", REPO / "Makefile"]
    files += [REPO / "bench" / "run_benchmarks.py", *sorted((REPO / "docs").glob("*.md"))]
    files += sorted(path for path in (REPO / "deploy").rglob("*") if path.is_file())
    return files


def diary_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, line, what to write instead) for each line narrating how it was built."""
    return [
        (number, line.strip(), instead)
        for number, line in enumerate(text.splitlines(), start=1)
        for pattern, instead in DIARY_WORDING.items()
        if re.search(pattern, line, re.IGNORECASE)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "# Benchmarks (issue 5)",
        "Against Node's 20.2 µs of session 2's run",
        "~29.5 KB at the start of this session",
        "Docker cannot run on the development machine, so",
        'Where it goes and what is left: "Target 4".',
        "they cannot be reached, which is the case in this workplace",
    ],
)
def test_diary_wording_is_recognised(line: str) -> None:
    assert diary_lines(line)


@pytest.mark.parametrize(
    "line",
    [
        "Engine.IO long-polling sends a session's requests one by one",
        "new socket.io sessions are refused; every client gets `system_message`",
        "Measured on 2026-11-27 at commit 4c083d3",
        '10k connections: "where a connection\'s memory and time go"',
        'target-version = "py311"',
    ],
)
def test_product_wording_passes(line: str) -> None:
    assert not diary_lines(line)


def test_user_facing_files_name_dates_and_commits_not_sessions_issues_or_the_workplace() -> None:
    files = user_facing_files()
    assert REPO / "docs" / "benchmarks.md" in files
    found = [
        f"{path.relative_to(REPO)}:{number}: {instead}: {line}"
        for path in files
        for number, line, instead in diary_lines(path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)

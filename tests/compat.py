"""`make compat`: the Socket.IO interoperability tests on other releases of the libraries.

    python -m tests.compat python-socketio==5.18.1,aiohttp==3.14.5 python-socketio==5.16.0 ...

Each argument is a version set, comma-separated `name==version` pins (`COMPAT_SETS` in the
Makefile). For each set: a venv under .cache/compat/ made with this Python, the requirements
of pyproject.toml (package and dev extra) with the set's pins in place of pyproject's ranges
for the packages they name (a set may lie outside those ranges: that is what it is for),
then feedserver itself, editable and with --no-deps so that its own ranges are not
re-applied; then `INTEROP_TESTS` there. One summary line per set; exit 1 if any set failed.
A venv is kept while its requirements are unchanged, so a second run only tests.

Standard library only: it runs with the Python that makes the venvs, before any is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "compat"
INTEROP_TESTS = (
    "tests/integration/test_js_interop.py",
    "tests/integration/test_socketio.py",
    "tests/integration/test_js_versions.py",
)
REPORTED = ("python-socketio", "python-engineio", "aiohttp")
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    """The PEP 503 form, so that `Python_SocketIO` and `python-socketio` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_set(text: str) -> dict[str, str]:
    """`a==1,b==2` -> {"a": "a==1", "b": "b==2"}; anything but exact pins is refused."""
    pins: dict[str, str] = {}
    for pin in text.split(","):
        match = _PIN.fullmatch(pin.strip())
        if match is None:
            raise ValueError(f"not a name==version pin: {pin!r} (in {text!r})")
        pins[canonical(match[1])] = f"{match[1]}=={match[2]}"
    return pins


def requirements(pyproject: dict[str, Any], pins: dict[str, str]) -> list[str]:
    """pyproject's dependencies and dev extra, each named package's range replaced by its pin."""
    project = pyproject["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    kept = [r for r in declared if canonical(_name(r)) not in pins]
    return kept + list(pins.values())


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    assert match is not None, requirement
    return match[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    label: str
    versions: dict[str, str]
    passed: int
    failed: int
    install_s: float
    test_s: float
    first_error: str
    log: Path

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def summary(self) -> str:
        versions = " ".join(f"{name} {v}" for name, v in self.versions.items()) or self.label
        line = (
            f"{'ok  ' if self.ok else 'FAIL'} {versions}: {self.passed} passed, "
            f"{self.failed} failed, tests {self.test_s:.0f} s, install {self.install_s:.0f} s"
        )
        if not self.ok:
            line += f"\n       {self.first_error or 'no error line'} (log: {self.log})"
        return line


def install(venv: Path, wanted: list[str]) -> None:
    """Make `venv` hold exactly `wanted` and feedserver, unless it already does."""
    stamp, recorded = venv / "requirements.txt", "\n".join([f"# {sys.executable}", *wanted])
    if stamp.exists() and stamp.read_text() == recorded:
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    with (venv / "install.log").open("w") as log:
        for argv in ([*pip, *wanted], [*pip, "--no-deps", "-e", str(REPO)]):
            subprocess.run(argv, check=True, stdout=log, stderr=subprocess.STDOUT)
    stamp.write_text(recorded)


def installed_versions(venv: Path) -> dict[str, str]:
    script = (
        "import json, sys; from importlib.metadata import version; "
        "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    )
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, *REPORTED],
        capture_output=True,
        text=True,
        check=True,
    )
    versions: dict[str, str] = json.loads(found.stdout)
    return versions


def run_tests(venv: Path) -> tuple[int, int, float, str]:
    """(passed, failed or erred, seconds, the first `E ` line of the log)."""
    junit, log = venv / "junit.xml", venv / "pytest.log"
    junit.unlink(missing_ok=True)
    pytest = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(
            [*pytest, f"--junitxml={junit}", *INTEROP_TESTS],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.monotonic() - started
    errors = [line.strip() for line in log.read_text().splitlines() if line.startswith("E ")]
    first_error = errors[0] if errors else ""
    if not junit.exists():  # pytest itself did not start
        return 0, 1, seconds, first_error
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return tests - skipped - failed, failed, seconds, first_error


def check_set(text: str, pyproject: dict[str, Any]) -> Outcome:
    pins = parse_set(text)
    venv = CACHE / "_".join(p.replace("==", "-") for p in pins.values())
    print(f">> {text}: {venv.relative_to(REPO)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        install(venv, requirements(pyproject, pins))
    except subprocess.CalledProcessError:
        log = venv / "install.log"
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        return Outcome(text, {}, 0, 1, time.monotonic() - started, 0.0, "".join(tail), log)
    install_s = time.monotonic() - started
    passed, failed, test_s, first_error = run_tests(venv)
    return Outcome(
        text,
        installed_versions(venv),
        passed,
        failed,
        install_s,
        test_s,
        first_error,
        venv / "pytest.log",
    )


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.compat NAME==VERSION[,NAME==VERSION...] ...", file=sys.stderr)
        return 2
    try:
        for text in argv:
            parse_set(text)
    except ValueError as exc:
        print(f"tests.compat: {exc}", file=sys.stderr)
        return 2
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    outcomes = [check_set(text, pyproject) for text in argv]
    print("\n".join(outcome.summary() for outcome in outcomes))
    return 0 if all(outcome.ok for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

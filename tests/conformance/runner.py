"""Runs the official protocol suites and Autobahn|Testsuite against the test-only apps.

- `run_protocol_suite("engineio" | "socketio", stack)`: copies the suite from
  `../shared/conformance/` (read-only there) to `.cache/conformance/<suite>/`, `npm ci`
  once (again when the suite's files change), serves the stack's reference app on
  127.0.0.1 and a free port, points a copy of `test-suite.js` at it (the URL is
  hard-coded) and runs mocha; returns mocha's counts and the failing tests' titles.
- `run_autobahn(endpoint)`: installs Autobahn|Testsuite for Python 2.7 (pyenv) into
  `.cache/conformance/autobahn/` once, serves a WebSocket echo endpoint (`echo`), runs
  `wstest -m fuzzingclient` without the 12.* / 13.* (compression) cases and counts the
  cases of its JSON report by behaviour.

`python -m tests.conformance` (`make conformance`) runs all three and prints each one's
summary; pytest's wrappers are in `test_suites.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.conformance.apps import SHORTCUT, Stack
from tests.conformance.echo import ECHO_ENDPOINTS
from tests.listening import listening

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "conformance"
# Where the suites are kept (`SHARED` in the Makefile is ../shared); CONFORMANCE_SUITES overrides.
SUITES_DIR = Path(os.environ.get("CONFORMANCE_SUITES", ROOT.parent / "shared" / "conformance"))
SUITES = {"engineio": "engine.io-protocol", "socketio": "socket.io-protocol"}
SUITE_FILES = ("package.json", "package-lock.json", "test-suite.js", "node-imports.js")
HARD_CODED_URL = "http://localhost:3000"
REPORTER = Path(__file__).with_name("summary-reporter.cjs")
MOCHA_TIMEOUT = 300  # seconds for a whole suite; it takes about 10

AUTOBAHN_VERSION = "25.10.1"
AUTOBAHN_PYTHON_VERSION = "2.7.18"  # autobahntestsuite runs on Python 2.7 only
AUTOBAHN_EXCLUDED = ("12.*", "13.*")  # permessage-deflate, which feedserver turns off
AUTOBAHN_TIMEOUT = 1800
BEHAVIOURS = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED")
ACCEPTED = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})


class HarnessError(RuntimeError):
    """The harness could not run a suite (not a suite's failure)."""


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    title: str
    error: str


@dataclass(frozen=True, slots=True)
class MochaResult:
    suite: str
    stack: str
    passing: int
    failing: int
    pending: int
    failures: tuple[Failure, ...]
    output: str  # mocha's own (spec reporter) output

    @property
    def passed(self) -> bool:
        return self.failing == 0 and self.passing > 0

    def summary(self) -> str:
        lines = [
            f"{self.suite} suite on {self.stack}: {self.passing} passing, {self.failing} failing"
        ]
        lines += [
            f"  FAILED {f.title}: {f.error.splitlines()[0] if f.error else ''}"
            for f in self.failures
        ]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class AutobahnResult:
    endpoint: str
    behaviours: dict[str, str]  # case id -> behaviour
    close_behaviours: dict[str, str]  # case id -> behaviourClose
    seconds: float

    def counts(self) -> dict[str, int]:
        counted = collections.Counter(self.behaviours.values())
        return {
            name: counted.get(name, 0)
            for name in (*BEHAVIOURS, *sorted(counted.keys() - set(BEHAVIOURS)))
        }

    def failed_cases(self) -> list[str]:
        return sorted((c for c, b in self.behaviours.items() if b not in ACCEPTED), key=_case_key)

    @property
    def passed(self) -> bool:
        return bool(self.behaviours) and not self.failed_cases()

    def summary(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.counts().items())
        lines = [
            f"autobahn fuzzingclient on {self.endpoint}: {len(self.behaviours)} cases "
            f"(12.*, 13.* excluded) in {self.seconds:.0f} s: {counts}"
        ]
        lines += [
            f"  {self.behaviours[c]} {c} (close: {self.close_behaviours.get(c, '?')})"
            for c in self.failed_cases()
        ]
        return "\n".join(lines)


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split(".") if part.isdigit())


# -- serving an app ----------------------------------------------------------------------


def serving(app: web.Application) -> contextlib.AbstractAsyncContextManager[int]:
    """Serve `app` as `feedserver serve` does (with the app's `SHORTCUT` if it has one);
    yields the port."""
    return listening(app, app.get(SHORTCUT))


async def _run(
    command: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, within: float
) -> tuple[int, str]:
    """Run `command`; return its exit status and its stdout and stderr, interleaved."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise HarnessError(f"{command[0]} took more than {within} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


# -- the mocha suites --------------------------------------------------------------------


def _suite_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for name in SUITE_FILES:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes())
    return digest.hexdigest()


async def prepare_suite(suite: str) -> Path:
    """The suite's working copy in the cache, with its node_modules installed."""
    source = SUITES_DIR / SUITES[suite] / "test-suite"
    if not (source / "test-suite.js").is_file():
        raise HarnessError(f"no {SUITES[suite]} test suite in {SUITES_DIR} (CONFORMANCE_SUITES)")
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise HarnessError("the protocol suites need node and npm")
    target = CACHE / SUITES[suite]
    stamp = target / ".installed"
    digest = _suite_digest(source)
    if stamp.is_file() and stamp.read_text() == digest:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in SUITE_FILES:
        shutil.copyfile(source / name, target / name)
    status, out = await _run(
        ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=target, within=600
    )
    if status != 0:
        raise HarnessError(f"npm ci in {target} failed:\n{out}")
    stamp.write_text(digest)
    return target


async def run_mocha(suite_dir: Path, url: str, *, suite: str, stack: str) -> MochaResult:
    """Run the suite's tests against `url` (e.g. http://127.0.0.1:PORT)."""
    source = (suite_dir / "test-suite.js").read_text()
    if HARD_CODED_URL not in source:
        raise HarnessError(f"{suite_dir}/test-suite.js no longer contains {HARD_CODED_URL}")
    port = url.rsplit(":", 1)[1]
    script = suite_dir / f"test-suite.{port}.js"  # beside node-imports.js, which it imports
    summary = suite_dir / f"summary.{port}.json"
    reporter = suite_dir / REPORTER.name
    shutil.copyfile(REPORTER, reporter)
    script.write_text(source.replace(HARD_CODED_URL, url))
    try:
        mocha = str(suite_dir / "node_modules" / "mocha" / "bin" / "mocha")
        status, out = await _run(
            # --exit: the suites leave connections open, which keep node alive afterwards.
            ["node", mocha, "--exit", "--reporter", f"./{reporter.name}", script.name],
            cwd=suite_dir,
            env={"MOCHA_SUMMARY": str(summary), "NO_COLOR": "1"},
            within=MOCHA_TIMEOUT,
        )
        if not summary.is_file():
            raise HarnessError(f"mocha exited {status} without a summary:\n{out}")
        counts = json.loads(summary.read_text())
    finally:
        script.unlink(missing_ok=True)
        summary.unlink(missing_ok=True)
    return MochaResult(
        suite=suite,
        stack=stack,
        passing=counts["passes"],
        failing=counts["failures"],
        pending=counts["pending"],
        failures=tuple(Failure(f["title"], f["error"]) for f in counts["failed"]),
        output=out,
    )


async def run_protocol_suite(suite: str, stack: Stack) -> MochaResult:
    """The `engineio` or `socketio` suite against `stack`'s reference app for it."""
    suite_dir = await prepare_suite(suite)
    app = stack.engineio() if suite == "engineio" else stack.socketio()
    async with serving(app) as port:
        return await run_mocha(suite_dir, f"http://127.0.0.1:{port}", suite=suite, stack=stack.name)


# -- Autobahn ----------------------------------------------------------------------------


def autobahn_python() -> str:
    """Python 2.7 for wstest: $AUTOBAHN_PYTHON, pyenv's 2.7.18, or python2.7 on PATH."""
    if explicit := os.environ.get("AUTOBAHN_PYTHON"):
        return explicit
    for root in (os.environ.get("PYENV_ROOT"), Path.home() / ".pyenv", "/opt/pyenv"):
        if (
            root
            and (
                candidate := Path(root) / "versions" / AUTOBAHN_PYTHON_VERSION / "bin" / "python"
            ).is_file()
        ):
            return str(candidate)
    if found := shutil.which("python2.7"):
        return found
    raise HarnessError(
        "Autobahn|Testsuite needs Python 2.7: `pyenv install 2.7.18`, or set AUTOBAHN_PYTHON"
    )


async def prepare_autobahn(python: str) -> Path:
    """autobahntestsuite installed with `pip --target` into the cache (once)."""
    target = CACHE / "autobahn"
    if (target / "autobahntestsuite").is_dir():
        return target
    status, out = await _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(target),
            f"autobahntestsuite=={AUTOBAHN_VERSION}",
        ],
        cwd=ROOT,
        within=900,
    )
    if status != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise HarnessError(f"installing autobahntestsuite failed:\n{out}")
    return target


# `--target` leaves zope's namespace .pth unread: add the directory as a site directory.
_WSTEST = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
    "from autobahntestsuite.wstest import run; sys.exit(run())"
)


async def run_autobahn(endpoint: str = "engineio", cases: Sequence[str] = ("*",)) -> AutobahnResult:
    """Autobahn's fuzzing client against the `endpoint` echo app (see `echo`)."""
    python = autobahn_python()
    site_dir = await prepare_autobahn(python)
    work = CACHE / f"autobahn-{endpoint}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "reports").mkdir(parents=True)
    async with serving(ECHO_ENDPOINTS[endpoint]()) as port:
        spec = {
            "outdir": str(work / "reports"),
            "servers": [{"agent": endpoint, "url": f"ws://127.0.0.1:{port}"}],
            "cases": list(cases),
            "exclude-cases": list(AUTOBAHN_EXCLUDED),
            "exclude-agent-cases": {},
        }
        (work / "fuzzingclient.json").write_text(json.dumps(spec, indent=2))
        started = time.monotonic()
        status, out = await _run(
            [
                python,
                "-c",
                _WSTEST,
                str(site_dir),
                "-m",
                "fuzzingclient",
                "-s",
                "fuzzingclient.json",
            ],
            cwd=work,
            within=AUTOBAHN_TIMEOUT,
        )
        seconds = time.monotonic() - started
    index = work / "reports" / "index.json"
    if status != 0 or not index.is_file():
        raise HarnessError(f"wstest exited {status}:\n{out[-4000:]}")
    results = json.loads(index.read_text())[endpoint]
    return AutobahnResult(
        endpoint=endpoint,
        behaviours={case: r["behavior"] for case, r in results.items()},
        close_behaviours={case: r["behaviorClose"] for case, r in results.items()},
        seconds=seconds,
    )

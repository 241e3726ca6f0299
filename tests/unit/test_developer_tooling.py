""".github/workflows/ci.yml, `make test-watch` and `make compat`, checked without GitHub, a
file watcher or fresh venvs: the workflow as far as parsing it allows (as
tests/integration/test_deploy.py checks the compose files), the make targets by what
`make -n` would run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compat import parse_set, requirements

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def triggers(flow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    found: dict[str, Any] = flow["on"] if "on" in flow else flow[True]
    return found


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job["steps"]
    return found


def commands(job: dict[str, Any]) -> list[str]:
    return [line.strip() for step in steps(job) for line in step.get("run", "").splitlines()]


def action(job: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = [s for s in steps(job) if s.get("uses", "").startswith(f"{name}@")]
    return step


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def dry_run_of(*make_args: str) -> str:
    """The last command `make -n ...` prints, continuation lines joined."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", *make_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    return dry_run.stdout.replace("\\\n", " ").splitlines()[-1]


def test_the_workflow_runs_on_push_and_pull_request() -> None:
    assert set(triggers(workflow())) == {"push", "pull_request"}


def test_the_test_job_runs_the_readmes_two_commands_on_ubuntu() -> None:
    job = workflow()["jobs"]["test"]
    assert job["runs-on"].startswith("ubuntu-")
    assert str(action(job, "actions/setup-python")["with"]["python-version"]) == "3.11"
    assert str(action(job, "actions/setup-node")["with"]["node-version"]) == "20"
    ran = [c for c in commands(job) if c.startswith("make ")]
    assert ran[-2:] == ["make lint", "make test"]
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "`make lint`" in readme


def test_every_make_target_the_workflow_runs_exists() -> None:
    ran = {
        shlex.split(c.removeprefix("sudo "))[1]
        for job in workflow()["jobs"].values()
        for c in commands(job)
        if c.removeprefix("sudo ").startswith("make ")
    }
    assert ran and ran <= make_targets()


def test_the_docker_job_builds_the_existing_dockerfile_from_the_repository_root() -> None:
    job = workflow()["jobs"]["docker"]
    assert job["runs-on"].startswith("ubuntu-")
    (build,) = [shlex.split(c) for c in commands(job) if c.startswith("docker build")]
    dockerfile = build[build.index("-f") + 1]
    assert (REPO / dockerfile).is_file()
    assert build[-1] == "."
    # What the Dockerfile copies from the context is there and not in .dockerignore.
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / dockerfile).read_text(), re.M)
    sources = [source for line in copies for source in line.split()]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.split("/")[0] not in ignored, source


def test_every_action_is_pinned_to_a_major_version() -> None:
    used = [s["uses"] for job in workflow()["jobs"].values() for s in steps(job) if "uses" in s]
    assert used and all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+", name) for name in used), used


def test_make_test_watch_reruns_the_affected_tests_on_change() -> None:
    watch = dry_run_of("test-watch", "PYTEST_ARGS=")
    assert "watchfiles --filter python --target-type command" in watch
    assert re.search(r'"\S+/python -m pytest -q --testmon ?" feedserver tests$', watch), watch


def test_pytest_knows_the_testmon_option() -> None:
    # The plugin `make test-watch` relies on is installed with the dev extra.
    helped = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True
    )
    assert "--testmon" in helped.stdout


def test_make_compat_runs_the_interop_tests_from_the_lowest_to_the_newest_socketio() -> None:
    command = shlex.split(dry_run_of("compat"))
    assert command[1:3] == ["-m", "tests.compat"], command
    sets = [parse_set(text) for text in command[3:]]
    socketio = [pins["python-socketio"] for pins in sets]
    assert socketio[0].startswith("python-socketio==5.16."), socketio
    assert socketio[-1].startswith("python-socketio==5.18."), socketio


def test_a_compat_set_replaces_the_range_of_each_package_it_pins_and_keeps_the_rest() -> None:
    pyproject = {
        "project": {
            "dependencies": [
                "python-socketio>=5.18,<5.19",
                "python_engineio>=4.15",
                "aiohttp>=3.14",
            ],
            "optional-dependencies": {"dev": ["pytest>=9.2,<10"]},
        }
    }
    wanted = requirements(pyproject, parse_set("Python_SocketIO==5.16.0,aiohttp==3.14.4"))
    assert sorted(wanted) == sorted(
        ["python_engineio>=4.15", "pytest>=9.2,<10", "Python_SocketIO==5.16.0", "aiohttp==3.14.4"]
    )


@pytest.mark.parametrize("text", ["python-socketio>=5.16", "python-socketio==5.16.0,", "aiohttp"])
def test_a_compat_set_takes_exact_pins_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a name==version pin"):
        parse_set(text)

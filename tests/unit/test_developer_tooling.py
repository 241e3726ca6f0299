""".github/workflows/ci.yml and `make test-watch`, checked without GitHub or a file watcher:
the workflow as far as parsing it allows (as tests/integration/test_deploy.py checks the
compose files), the make target by what `make -n` would run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "test-watch", "PYTEST_ARGS="],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    watch = dry_run.stdout.replace("\\\n", " ").splitlines()[-1]
    assert "watchfiles --filter python --target-type command" in watch
    assert re.search(r'"\S+/python -m pytest -q --testmon ?" feedserver tests$', watch), watch


def test_pytest_knows_the_testmon_option() -> None:
    # The plugin `make test-watch` relies on is installed with the dev extra.
    helped = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True
    )
    assert "--testmon" in helped.stdout

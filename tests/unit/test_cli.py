"""`feedserver --version` and `feedserver check-config`: every bad value is one line, exit 2."""

from __future__ import annotations

from dataclasses import fields

import pytest

from feedserver import __version__
from feedserver.__main__ import main
from feedserver.config import Settings
from tests.unit.test_config import ATTRIBUTE, BAD, SECRET

# Values that are each fine alone but not together: (variable named in the error, env).
BAD_COMBINATIONS = [
    ("FEED_AUTH", {"FEED_ENV": "production"}),
    ("FEED_AUTH_SECRET", {"FEED_AUTH": "token", "FEED_AUTH_SECRET": "short"}),
    ("FEED_METRICS_PORT", {"PORT": "9100", "FEED_METRICS_PORT": "9100"}),
]
EVERY_BAD_VALUE = [(name, {name: raw}) for name, raws in BAD.items() for raw in raws]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ATTRIBUTE, "FEED_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("name", "env"),
    EVERY_BAD_VALUE + BAD_COMBINATIONS,
    ids=[str(env) for _, env in EVERY_BAD_VALUE + BAD_COMBINATIONS],
)
def test_check_config_refuses_each_bad_value_with_one_line_and_exit_2(
    name: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"feedserver: invalid {name}: ")


def test_a_bad_value_with_a_newline_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "30\n00")
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_check_config_prints_every_setting_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEED_AUTH", "token")
    monkeypatch.setenv("FEED_AUTH_SECRET", SECRET)
    monkeypatch.setenv("FEED_STORE", "redis://feed:hunter2@localhost:6379/0")
    assert main(["check-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "auth_secret = ***" in lines
    assert "store = redis://***@localhost:6379/0" in lines
    assert not any(SECRET in line or "hunter2" in line for line in lines)
    assert [line.split(" = ")[0] for line in lines] == [f.name for f in fields(Settings)]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"feedserver {__version__}"

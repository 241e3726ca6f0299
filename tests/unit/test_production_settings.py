"""Production refuses to start without token auth and a long secret; `feedserver token`."""

from __future__ import annotations

import time

import jwt
import pytest

from feedserver.__main__ import main
from feedserver.config import ConfigError, Settings

SECRET = "x" * 32

_ENV_TO_CLEAR = ("FEED_ENV", "FEED_AUTH", "FEED_AUTH_SECRET", "FEED_TENANTS", "FEED_CONFIG_FILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FEED_ENV": "production"}, "FEED_AUTH"),
        ({"FEED_ENV": "production", "FEED_AUTH": "none"}, "FEED_AUTH"),
        ({"FEED_ENV": "production", "FEED_AUTH": "token"}, "FEED_AUTH_SECRET"),
        (
            {"FEED_ENV": "production", "FEED_AUTH": "token", "FEED_AUTH_SECRET": "x" * 31},
            "FEED_AUTH_SECRET",
        ),
        # bytes, not characters: 16 two-byte characters are 32 bytes, 15 are not
        (
            {"FEED_ENV": "production", "FEED_AUTH": "token", "FEED_AUTH_SECRET": "é" * 15},
            "FEED_AUTH_SECRET",
        ),
    ],
)
def test_production_refuses_weak_auth_naming_the_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


def test_production_starts_with_a_token_and_a_32_byte_secret() -> None:
    for secret in (SECRET, "é" * 16):
        settings = Settings.from_env(
            {"FEED_ENV": "production", "FEED_AUTH": "token", "FEED_AUTH_SECRET": secret}
        )
        assert settings.production and settings.auth == "token"


def test_the_server_command_exits_2_with_one_line_in_production_without_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEED_ENV", "production")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FEED_AUTH" in err


def test_the_token_command_prints_a_token_for_the_tenant(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEED_AUTH_SECRET", SECRET)
    assert main(["token", "--tenant", "tenant_b", "--ttl", "120"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["tenant"] == "tenant_b" and "role" not in claims
    assert time.time() + 110 < claims["exp"] <= time.time() + 120

    assert main(["token", "--tenant", "tenant_a", "--admin"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["role"] == "admin" and claims["exp"] > time.time() + 3500


@pytest.mark.parametrize(
    ("argv", "secret", "named"),
    [
        (["token", "--tenant", "tenant_a"], "", "FEED_AUTH_SECRET"),
        (["token", "--tenant", "tenant_a"], "short", "FEED_AUTH_SECRET"),
        (["token", "--tenant", "tenant_z"], SECRET, "--tenant"),
        (["token", "--tenant", "tenant_a", "--ttl", "0"], SECRET, "--ttl"),
    ],
)
def test_the_token_command_refuses_what_the_server_would_refuse(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    secret: str,
    named: str,
) -> None:
    monkeypatch.setenv("FEED_AUTH_SECRET", secret)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and named in captured.err

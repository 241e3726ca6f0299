"""`feedserver --version` and `feedserver check-config`: every bad value is one line, exit 2."""

from __future__ import annotations

from dataclasses import fields

import pytest

from feedserver import __version__
from feedserver.__main__ import main
from feedserver.config import Settings

GOOD_SECRET = "s" * 32

# One bad value per variable (and per rule), with the Settings field it feeds.
BAD_VALUES: list[tuple[str, dict[str, str]]] = [
    ("port", {"PORT": "http"}),
    ("port", {"PORT": "65536"}),
    ("cors_origins", {"CORS_ORIGIN": "ftp://example.com"}),
    ("env", {"FEED_ENV": "staging"}),
    ("env", {"FEED_ENV": "production"}),  # production without token auth
    ("tenants", {"FEED_TENANTS": "tenant_a,Tenant B"}),
    ("auth", {"FEED_AUTH": "basic"}),
    ("auth_secret", {"FEED_AUTH": "token", "FEED_AUTH_SECRET": "short"}),
    ("store", {"FEED_STORE": "mysql://localhost/feed"}),
    ("history_size", {"FEED_HISTORY_SIZE": "0"}),
    ("initial_events", {"FEED_INITIAL_EVENTS": "-1"}),
    ("max_message_length", {"FEED_MAX_MESSAGE_LENGTH": "0"}),
    ("max_body_bytes", {"FEED_MAX_BODY_BYTES": "12"}),
    ("max_queue", {"FEED_MAX_QUEUE": "none"}),
    ("rate_limit_window_ms", {"RATE_LIMIT_WINDOW_MS": "0"}),
    ("rate_limit_max_requests", {"RATE_LIMIT_MAX_REQUESTS": "1e3"}),
    ("tenant_max_events_per_sec", {"FEED_TENANT_MAX_EVENTS_PER_SEC": "0"}),
    ("max_connections_per_tenant", {"FEED_MAX_CONNECTIONS_PER_TENANT": "0"}),
    ("max_connections_per_ip", {"FEED_MAX_CONNECTIONS_PER_IP": "-5"}),
    ("idempotency_ttl", {"FEED_IDEMPOTENCY_TTL": "0"}),
    ("connection_state_recovery", {"FEED_CONNECTION_STATE_RECOVERY": "maybe"}),
    ("shutdown_timeout", {"FEED_SHUTDOWN_TIMEOUT": "0"}),
    ("ping_interval", {"FEED_PING_INTERVAL": "soon"}),
    ("ping_timeout", {"FEED_PING_TIMEOUT": "0.5"}),
    ("metrics_port", {"FEED_METRICS_PORT": "0"}),
    ("metrics_port", {"PORT": "9100", "FEED_METRICS_PORT": "9100"}),
    ("log_level", {"LOG_LEVEL": "LOUD"}),
    ("log_format", {"LOG_FORMAT": "xml"}),
]
# Fields for which every string is a valid value.
ANY_STRING = {"host", "trust_proxy"}
VARIABLES = {name for _, env in BAD_VALUES for name in env} | {"HOST", "FEED_TRUST_PROXY"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES | {"FEED_CONFIG_FILE"}:
        monkeypatch.delenv(name, raising=False)


def test_every_setting_has_a_bad_value_case() -> None:
    covered = {field for field, _ in BAD_VALUES} | ANY_STRING
    assert covered == {f.name for f in fields(Settings)}


@pytest.mark.parametrize(("field", "env"), BAD_VALUES, ids=[str(env) for _, env in BAD_VALUES])
def test_check_config_refuses_a_bad_value_with_one_line_and_exit_2(
    field: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    named = [name for name in env if name in lines[0]]
    assert lines[0].startswith("feedserver: invalid ") and named, lines[0]


def test_a_bad_value_with_a_newline_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "30\n00")
    assert main(["check-config"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_an_unreadable_config_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--config", "/nonexistent/feed.env", "check-config"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "FEED_CONFIG_FILE" in err


def test_check_config_prints_the_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEED_AUTH", "token")
    monkeypatch.setenv("FEED_AUTH_SECRET", GOOD_SECRET)
    monkeypatch.setenv("FEED_STORE", "redis://feed:hunter2@localhost:6379/0")
    monkeypatch.setenv("PORT", "8080")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "port = 8080" in out.splitlines()
    assert "auth_secret = ***" in out.splitlines()
    assert GOOD_SECRET not in out and "hunter2" not in out
    assert {line.split(" = ")[0] for line in out.splitlines()} == {f.name for f in fields(Settings)}


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"feedserver {__version__}"

"""Settings: every variable's good and bad values, the config file, production rules, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedserver.__main__ import main
from feedserver.config import ConfigError, Settings

SECRET = "s" * 32

# variable -> [(raw value, the parsed attribute value)]
GOOD: dict[str, list[tuple[str, Any]]] = {
    "PORT": [("8080", 8080), ("0", 0), (" 65535 ", 65535)],
    "HOST": [
        ("0.0.0.0", "0.0.0.0"),
        ("::1", "::1"),
        ("localhost", "localhost"),
        ("feed_server.internal", "feed_server.internal"),
    ],
    "CORS_ORIGIN": [
        ("*", ("*",)),
        ("http://a.example,https://b.example:8443", ("http://a.example", "https://b.example:8443")),
    ],
    "FEED_ENV": [("development", "development"), ("DEVELOPMENT", "development")],
    "FEED_TENANTS": [("acme", ("acme",)), (" a1 , b-2,c_3,a1 ", ("a1", "b-2", "c_3"))],
    "FEED_AUTH": [("none", "none"), ("NONE", "none")],
    "FEED_AUTH_SECRET": [("anything", "anything")],
    "FEED_STORE": [
        ("memory", "memory"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://user:pw@cache:6380/2", "rediss://user:pw@cache:6380/2"),
        ("redis-cluster://10.0.0.1:7000", "redis-cluster://10.0.0.1:7000"),
        ("redis-cluster://r1:7000,r2:7001,r3:7002", "redis-cluster://r1:7000,r2:7001,r3:7002"),
    ],
    "FEED_HISTORY_SIZE": [("1", 1), ("1000000", 1_000_000)],
    "FEED_RETENTION_SECONDS": [("1", 1), ("86400", 86_400), ("315360000", 10 * 365 * 86_400)],
    "FEED_INITIAL_EVENTS": [("0", 0), ("10000", 10_000)],
    "FEED_MAX_MESSAGE_LENGTH": [("1", 1), ("100000", 100_000)],
    "FEED_MAX_BODY_BYTES": [("64", 64), ("16777216", 16 << 20)],
    "FEED_MAX_QUEUE": [("1", 1), ("5000", 5000)],
    "FEED_MAX_WRITE_PAUSE_MS": [("0", 0), ("25", 25), ("1000", 1000)],
    "RATE_LIMIT_WINDOW_MS": [("1", 1), ("86400000", 86_400_000)],
    "RATE_LIMIT_MAX_REQUESTS": [("1", 1), ("1000000", 1_000_000)],
    "FEED_TENANT_MAX_EVENTS_PER_SEC": [("1", 1), ("50", 50)],
    "FEED_TRUST_PROXY": [("127.0.0.1, 10.0.0.0/8", ("127.0.0.1", "10.0.0.0/8"))],
    "FEED_MAX_CONNECTIONS_PER_TENANT": [("1", 1), ("20000", 20_000)],
    "FEED_MAX_CONNECTIONS_PER_IP": [("1", 1), ("20", 20)],
    "FEED_IDEMPOTENCY_TTL": [("1", 1), ("604800", 604_800)],
    "FEED_CONNECTION_STATE_RECOVERY": [
        ("false", False),
        ("0", False),
        ("off", False),
        ("TRUE", True),
        ("yes", True),
    ],
    "FEED_SHUTDOWN_TIMEOUT": [("0.5", 0.5), ("30", 30.0)],
    "FEED_PING_INTERVAL": [("1", 1.0), ("2.5", 2.5)],
    "FEED_PING_TIMEOUT": [("3600", 3600.0)],
    "FEED_HTTP_HEADER_TIMEOUT": [("0.5", 0.5), ("10", 10.0)],
    "FEED_HTTP_KEEPALIVE_TIMEOUT": [("15", 15.0), ("3600", 3600.0)],
    "FEED_METRICS_PORT": [("9100", 9100)],
    "FEED_METRICS_MAX_TENANTS": [("0", 0), ("100000", 100_000)],
    "FEED_DATA_DIR": [("/var/lib/feedserver", "/var/lib/feedserver"), (" data ", "data")],
    "LOG_LEVEL": [("debug", "DEBUG"), ("WARNING", "WARNING")],
    "LOG_FORMAT": [("json", "json"), ("TEXT", "text")],
}

BAD: dict[str, list[str]] = {
    "PORT": ["abc", "-1", "65536", "80.5"],
    "HOST": ["not a host", "http://x", "a/b", "-x", "a..b"],
    "CORS_ORIGIN": ["localhost:3000", "ftp://x", "http://a.example/path", ","],
    "FEED_ENV": ["staging"],
    "FEED_TENANTS": ["Tenant_A", "-a", "a,b c", ",", "x" * 65],
    "FEED_AUTH": ["jwt", "basic"],
    "FEED_STORE": [
        "postgres://db",
        "redis://",
        "redis",
        "memory2",
        "redis-cluster://",
        "redis-cluster://r1",
        "redis-cluster://r1:7000,",
        "redis-cluster://r1:7000/0",
    ],
    "FEED_HISTORY_SIZE": ["0", "1000001", "many"],
    "FEED_RETENTION_SECONDS": ["0", "-1", "315360001", "1h"],
    "FEED_INITIAL_EVENTS": ["-1", "10001"],
    "FEED_MAX_MESSAGE_LENGTH": ["0", "100001"],
    "FEED_MAX_BODY_BYTES": ["63", "16777217", "16k"],
    "FEED_MAX_QUEUE": ["0"],
    "FEED_MAX_WRITE_PAUSE_MS": ["-1", "1001", "ten"],
    "RATE_LIMIT_WINDOW_MS": ["0", "86400001"],
    "RATE_LIMIT_MAX_REQUESTS": ["0", "1e3"],
    "FEED_TENANT_MAX_EVENTS_PER_SEC": ["0"],
    "FEED_MAX_CONNECTIONS_PER_TENANT": ["0"],
    "FEED_MAX_CONNECTIONS_PER_IP": ["-3"],
    "FEED_IDEMPOTENCY_TTL": ["0", "604801"],
    "FEED_CONNECTION_STATE_RECOVERY": ["maybe", "2"],
    "FEED_SHUTDOWN_TIMEOUT": ["0", "601", "nan", "soon"],
    "FEED_PING_INTERVAL": ["0.5", "inf"],
    "FEED_PING_TIMEOUT": ["0"],
    "FEED_HTTP_HEADER_TIMEOUT": ["0", "-1", "soon"],
    "FEED_HTTP_KEEPALIVE_TIMEOUT": ["0", "3601"],
    "FEED_METRICS_PORT": ["0", "65536", "x"],
    "FEED_METRICS_MAX_TENANTS": ["-1", "100001", "all"],
    "LOG_LEVEL": ["verbose"],
    "LOG_FORMAT": ["xml"],
}

ATTRIBUTE = {
    "PORT": "port",
    "HOST": "host",
    "CORS_ORIGIN": "cors_origins",
    "FEED_ENV": "env",
    "FEED_TENANTS": "tenants",
    "FEED_AUTH": "auth",
    "FEED_AUTH_SECRET": "auth_secret",
    "FEED_STORE": "store",
    "FEED_HISTORY_SIZE": "history_size",
    "FEED_RETENTION_SECONDS": "retention_seconds",
    "FEED_INITIAL_EVENTS": "initial_events",
    "FEED_MAX_MESSAGE_LENGTH": "max_message_length",
    "FEED_MAX_BODY_BYTES": "max_body_bytes",
    "FEED_MAX_QUEUE": "max_queue",
    "FEED_MAX_WRITE_PAUSE_MS": "max_write_pause_ms",
    "RATE_LIMIT_WINDOW_MS": "rate_limit_window_ms",
    "RATE_LIMIT_MAX_REQUESTS": "rate_limit_max_requests",
    "FEED_TENANT_MAX_EVENTS_PER_SEC": "tenant_max_events_per_sec",
    "FEED_TRUST_PROXY": "trust_proxy",
    "FEED_MAX_CONNECTIONS_PER_TENANT": "max_connections_per_tenant",
    "FEED_MAX_CONNECTIONS_PER_IP": "max_connections_per_ip",
    "FEED_IDEMPOTENCY_TTL": "idempotency_ttl",
    "FEED_CONNECTION_STATE_RECOVERY": "connection_state_recovery",
    "FEED_SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "FEED_PING_INTERVAL": "ping_interval",
    "FEED_PING_TIMEOUT": "ping_timeout",
    "FEED_HTTP_HEADER_TIMEOUT": "http_header_timeout",
    "FEED_HTTP_KEEPALIVE_TIMEOUT": "http_keepalive_timeout",
    "FEED_METRICS_PORT": "metrics_port",
    "FEED_METRICS_MAX_TENANTS": "metrics_max_tenants",
    "FEED_DATA_DIR": "data_dir",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
}


def refusal(environ: dict[str, str], config_file: str | None = None) -> str:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(environ, config_file=config_file)
    text = str(refused.value)
    assert "\n" not in text
    return text


def test_every_variable_is_covered() -> None:
    assert set(GOOD) == set(ATTRIBUTE)
    assert set(BAD) <= set(ATTRIBUTE)


def test_no_variables_give_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.port, settings.host, settings.cors_origins) == (
        3000,
        "127.0.0.1",
        ("http://localhost:3000",),
    )
    assert settings.tenants == ("tenant_a", "tenant_b")
    assert (settings.auth, settings.store, settings.env) == ("none", "memory", "development")
    assert (settings.history_size, settings.initial_events) == (1000, 50)
    assert settings.retention_seconds is None  # kept by count only
    assert (settings.max_message_length, settings.max_body_bytes, settings.max_queue) == (
        500,
        16 * 1024,
        1000,
    )
    assert (settings.rate_limit_window_ms, settings.rate_limit_max_requests) == (900_000, 100)
    assert settings.tenant_max_events_per_sec == 1000
    assert (settings.http_header_timeout, settings.http_keepalive_timeout) == (10.0, 15.0)
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.production is False and settings.redis_url is None


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [(name, raw, value) for name, cases in GOOD.items() for raw, value in cases],
)
def test_good_values_are_parsed(name: str, raw: str, value: Any) -> None:
    assert getattr(Settings.from_env({name: raw}), ATTRIBUTE[name]) == value


@pytest.mark.parametrize("name", sorted(ATTRIBUTE))
def test_an_empty_value_means_the_default(name: str) -> None:
    assert Settings.from_env({name: "  "}) == Settings()


@pytest.mark.parametrize(
    ("name", "raw"), [(name, raw) for name, values in BAD.items() for raw in values]
)
def test_bad_values_raise_config_error_naming_the_variable(name: str, raw: str) -> None:
    assert refusal({name: raw}).startswith(f"invalid {name}: ")


def test_redis_url_is_the_store_unless_memory() -> None:
    assert Settings.from_env({"FEED_STORE": "redis://h:1/0"}).redis_url == "redis://h:1/0"


# -- production ---------------------------------------------------------------------------


def test_production_requires_token_auth() -> None:
    assert refusal({"FEED_ENV": "production"}).startswith("invalid FEED_AUTH: ")


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])
def test_token_auth_requires_a_32_byte_secret(secret: str) -> None:
    environ = {"FEED_ENV": "production", "FEED_AUTH": "token", "FEED_AUTH_SECRET": secret}
    assert refusal(environ).startswith("invalid FEED_AUTH_SECRET: ")
    del environ["FEED_ENV"]
    assert refusal(environ).startswith("invalid FEED_AUTH_SECRET: ")


def test_production_with_a_long_secret_starts() -> None:
    settings = Settings.from_env(
        {"FEED_ENV": "production", "FEED_AUTH": "token", "FEED_AUTH_SECRET": "é" * 16}
    )
    assert settings.production and settings.auth == "token"


def test_masked_hides_secrets() -> None:
    settings = Settings.from_env(
        {"FEED_AUTH": "token", "FEED_AUTH_SECRET": SECRET, "FEED_STORE": "redis://u:pw@h:1/0"}
    )
    masked = settings.masked()
    assert masked["auth_secret"] == "***"
    assert masked["store"] == "redis://***@h:1/0"
    assert SECRET not in str(masked) and "pw" not in str(masked)
    assert Settings().masked()["auth_secret"] == ""


# -- the config file ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "feed.env"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_file_values_are_overlaid_by_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# a comment\n\nPORT=4000\n  FEED_TENANTS = 'x1,x2'  \nLOG_FORMAT=\"json\"\n"
        "FEED_HISTORY_SIZE=10\n",
    )
    settings = Settings.from_env({"FEED_HISTORY_SIZE": "20"}, config_file=path)
    assert settings.port == 4000
    assert settings.tenants == ("x1", "x2")
    assert settings.log_format == "json"
    assert settings.history_size == 20


def test_config_file_from_feed_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "PORT=4001\n")
    assert Settings.from_env({"FEED_CONFIG_FILE": path}).port == 4001


def test_config_file_bad_value_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "FEED_MAX_QUEUE=lots\n")
    assert refusal({}, config_file=path).startswith("invalid FEED_MAX_QUEUE: ")


def test_config_file_line_without_equals_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "PORT=1\nnonsense\n")
    assert refusal({}, config_file=path) == ("invalid FEED_CONFIG_FILE: line 2 is not KEY=VALUE")


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    text = refusal({}, config_file=str(tmp_path / "absent.env"))
    assert text.startswith("invalid FEED_CONFIG_FILE: cannot read ")


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*ATTRIBUTE, "FEED_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("name", "raw"), [("FEED_HISTORY_SIZE", "0"), ("FEED_ENV", "prod")])
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_cli_bad_value_exits_2_with_one_line(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    raw: str,
    command: str,
) -> None:
    clean_env.setenv(name, raw)
    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"feedserver: invalid {name}: ")


@pytest.mark.parametrize(
    ("flag", "raw"), [("--port", "70000"), ("--port", "abc"), ("--host", "a b")]
)
def test_cli_flags_get_the_same_validation(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str, raw: str
) -> None:
    assert main(["serve", flag, raw]) == 2
    err = capsys.readouterr().err
    name = flag.removeprefix("--").upper()
    assert err.count("\n") == 1 and err.startswith(f"feedserver: invalid {name}: ")


def test_cli_check_config_prints_the_effective_settings(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clean_env.setenv("FEED_AUTH", "token")
    clean_env.setenv("FEED_AUTH_SECRET", SECRET)
    path = write(tmp_path, "FEED_HISTORY_SIZE=7\n")
    assert main(["--config", path, "check-config"]) == 0
    out = capsys.readouterr().out
    assert "history_size = 7\n" in out
    assert "auth_secret = ***\n" in out
    assert SECRET not in out


def test_cli_without_a_command_prints_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out

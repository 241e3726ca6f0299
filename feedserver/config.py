"""Settings: every environment variable of PROTOCOL "Configuration", read once.

`Settings.from_env()` is the only place that reads the environment. A bad value raises
`ConfigError` naming the variable; the CLI prints that one line and exits with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?"  # "_": Docker service names
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
MIN_SECRET_BYTES = 32
MAX_RETENTION_SECONDS = 10 * 365 * 86_400

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    port: int = 3000
    host: str = "127.0.0.1"
    cors_origins: tuple[str, ...] = ("http://localhost:3000",)
    env: str = "development"  # development | production
    tenants: tuple[str, ...] = ("tenant_a", "tenant_b")
    auth: str = "none"  # none | token
    auth_secret: str = ""
    store: str = "memory"
    history_size: int = 1000
    retention_seconds: int | None = None  # None: events are kept by count only
    # Redis: how long a node goes on reading a tenant's stream after its last local socket
    # left (a reconnect within it resumes without a new follow).
    follow_grace_s: float = 30.0
    initial_events: int = 50
    max_message_length: int = 500
    max_body_bytes: int = 16 * 1024
    max_queue: int = 1000
    max_write_pause_ms: int = 20
    rate_limit_window_ms: int = 900_000
    rate_limit_max_requests: int = 100
    tenant_max_events_per_sec: int = 1000
    trust_proxy: tuple[str, ...] = ()
    max_connections_per_tenant: int = 10_000
    max_connections_per_ip: int = 1_000
    idempotency_ttl: int = 600
    connection_state_recovery: bool = True
    shutdown_timeout: float = 5.0
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 15.0
    metrics_port: int | None = None
    metrics_max_tenants: int = 1000
    data_dir: str | None = None  # memory store: where the tenant registry is kept
    log_level: str = "INFO"
    log_format: str = "text"  # text | json

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def redis_url(self) -> str | None:
        return None if self.store == "memory" else self.store

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, config_file: str | None = None
    ) -> Settings:
        """Build settings from a config file (KEY=VALUE lines) overlaid by the environment."""
        env = dict(os.environ if environ is None else environ)
        path = config_file or env.get("FEED_CONFIG_FILE")
        values = {**read_config_file(path), **env} if path else env
        settings = _parse(values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules: token auth needs a long secret, production token auth, and the
        metrics port is not the main one."""
        if self.auth == "token" and len(self.auth_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"invalid FEED_AUTH_SECRET: FEED_AUTH=token needs a secret of at least "
                f"{MIN_SECRET_BYTES} bytes"
            )
        if self.production and self.auth != "token":
            raise ConfigError("invalid FEED_AUTH: FEED_ENV=production requires FEED_AUTH=token")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ConfigError("invalid FEED_METRICS_PORT: must differ from PORT")

    def masked(self) -> dict[str, object]:
        """The effective settings with secrets hidden, for `check-config` and logs."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.auth_secret:
            out["auth_secret"] = "***"
        out["store"] = re.sub(r"//[^@/]*@", "//***@", self.store)
        return out


def read_config_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (dotenv style); `#` comments and blank lines are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"invalid FEED_CONFIG_FILE: cannot read {path}: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"invalid FEED_CONFIG_FILE: line {number} is not KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _parse(env: Mapping[str, str]) -> Settings:
    def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
        raw = env.get(name, "").strip()
        return default if raw == "" else parse(name, raw)

    d = Settings()
    return Settings(
        port=get("PORT", _int_range(0, 65535), d.port),
        host=get("HOST", _host, d.host),
        cors_origins=get("CORS_ORIGIN", _origins, d.cors_origins),
        env=get("FEED_ENV", _choice("development", "production"), d.env),
        tenants=get("FEED_TENANTS", _tenants, d.tenants),
        auth=get("FEED_AUTH", _choice("none", "token"), d.auth),
        auth_secret=get("FEED_AUTH_SECRET", _str, d.auth_secret),
        store=get("FEED_STORE", _store, d.store),
        history_size=get("FEED_HISTORY_SIZE", _int_range(1, 1_000_000), d.history_size),
        retention_seconds=get("FEED_RETENTION_SECONDS", _optional_seconds, d.retention_seconds),
        follow_grace_s=get("FEED_FOLLOW_GRACE_SECONDS", _float_range(0, 3600), d.follow_grace_s),
        initial_events=get("FEED_INITIAL_EVENTS", _int_range(0, 10_000), d.initial_events),
        max_message_length=get(
            "FEED_MAX_MESSAGE_LENGTH", _int_range(1, 100_000), d.max_message_length
        ),
        max_body_bytes=get("FEED_MAX_BODY_BYTES", _int_range(64, 16 << 20), d.max_body_bytes),
        max_queue=get("FEED_MAX_QUEUE", _int_range(1, 10_000_000), d.max_queue),
        max_write_pause_ms=get(
            "FEED_MAX_WRITE_PAUSE_MS", _int_range(0, 1000), d.max_write_pause_ms
        ),
        rate_limit_window_ms=get(
            "RATE_LIMIT_WINDOW_MS", _int_range(1, 86_400_000), d.rate_limit_window_ms
        ),
        rate_limit_max_requests=get(
            "RATE_LIMIT_MAX_REQUESTS", _int_range(1, 10**12), d.rate_limit_max_requests
        ),
        tenant_max_events_per_sec=get(
            "FEED_TENANT_MAX_EVENTS_PER_SEC", _int_range(1, 10**9), d.tenant_max_events_per_sec
        ),
        trust_proxy=get("FEED_TRUST_PROXY", _csv, d.trust_proxy),
        max_connections_per_tenant=get(
            "FEED_MAX_CONNECTIONS_PER_TENANT", _int_range(1, 10**7), d.max_connections_per_tenant
        ),
        max_connections_per_ip=get(
            "FEED_MAX_CONNECTIONS_PER_IP", _int_range(1, 10**7), d.max_connections_per_ip
        ),
        idempotency_ttl=get("FEED_IDEMPOTENCY_TTL", _int_range(1, 7 * 86_400), d.idempotency_ttl),
        connection_state_recovery=get(
            "FEED_CONNECTION_STATE_RECOVERY", _bool, d.connection_state_recovery
        ),
        shutdown_timeout=get("FEED_SHUTDOWN_TIMEOUT", _float_range(0.1, 600), d.shutdown_timeout),
        ping_interval=get("FEED_PING_INTERVAL", _float_range(1, 3600), d.ping_interval),
        ping_timeout=get("FEED_PING_TIMEOUT", _float_range(1, 3600), d.ping_timeout),
        http_header_timeout=get(
            "FEED_HTTP_HEADER_TIMEOUT", _float_range(0.1, 3600), d.http_header_timeout
        ),
        http_keepalive_timeout=get(
            "FEED_HTTP_KEEPALIVE_TIMEOUT", _float_range(0.1, 3600), d.http_keepalive_timeout
        ),
        metrics_port=get("FEED_METRICS_PORT", _optional_port, d.metrics_port),
        metrics_max_tenants=get(
            "FEED_METRICS_MAX_TENANTS", _int_range(0, 100_000), d.metrics_max_tenants
        ),
        data_dir=get("FEED_DATA_DIR", _optional_str, d.data_dir),
        log_level=get(
            "LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), d.log_level
        ),
        log_format=get("LOG_FORMAT", _choice("text", "json"), d.log_format),
    )


def _fail(name: str, raw: str, expected: str) -> ConfigError:
    return ConfigError(f"invalid {name}: {raw!r} (expected {expected})")


def _str(name: str, raw: str) -> str:
    return raw


def _int_range(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _fail(name, raw, f"an integer in {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise _fail(name, raw, f"an integer in {lo}..{hi}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise _fail(name, raw, f"a number in {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise _fail(name, raw, f"a number in {lo}..{hi}")
        return value

    return parse


def _optional_str(name: str, raw: str) -> str | None:
    return raw


def _optional_port(name: str, raw: str) -> int | None:
    return _int_range(1, 65535)(name, raw)


def _optional_seconds(name: str, raw: str) -> int | None:
    return _int_range(1, MAX_RETENTION_SECONDS)(name, raw)


def _choice(*options: str, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise _fail(name, raw, " or ".join(options))
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _fail(name, raw, "true or false")


def _csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _tenants(name: str, raw: str) -> tuple[str, ...]:
    tenants = _csv(name, raw)
    bad = [t for t in tenants if not TENANT_RE.match(t)]
    if not tenants or bad:
        raise _fail(name, raw, "a comma-separated list of ids matching ^[a-z0-9][a-z0-9_-]{0,63}$")
    return tuple(dict.fromkeys(tenants))


def _host(name: str, raw: str) -> str:
    """An IP address or a DNS name: checked here so that a typo is not a bind traceback."""
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME_RE.match(raw):
            raise _fail(name, raw, "an IP address or a host name") from None
    return raw


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = _csv(name, raw)
    if not origins:
        raise _fail(name, raw, "'*' or comma-separated origins like http://host:port")
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise _fail(name, raw, "'*' or comma-separated origins like http://host:port")
    return origins


_CLUSTER_NODES_RE = re.compile(r"^redis-cluster://[^\s,:/]+:\d{1,5}(,[^\s,:/]+:\d{1,5})*$")


def _store(name: str, raw: str) -> str:
    if raw == "memory" or re.match(r"^rediss?://[^\s]+$", raw) or _CLUSTER_NODES_RE.match(raw):
        return raw
    raise _fail(
        name, raw, "memory, redis://host:port/db or redis-cluster://host:port[,host:port...]"
    )

"""Marshmallow schemas for what crosses the edges: request bodies and query strings."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from .config import TENANT_RE
from .errors import InvalidKey, ValidationFailed
from .keys import (
    ALGORITHMS,
    KEY_STATUSES,
    KID_RE,
    MAX_CLOCK_AHEAD_S,
    SigningKey,
    generate_hs256_key,
    parse_public_jwk,
)
from .tenants import SETTING_RULES, STATUSES, TENANT_ID_RULE, TenantSettings

MAX_LIMIT = 500
MAX_SEQ = 2**53 - 1  # JavaScript's MAX_SAFE_INTEGER: seq must round-trip through JSON in JS
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_RULE = "must be 1..128 visible ASCII characters"
_idempotency_key = validate.Regexp(r"^[\x21-\x7e]{1,128}\Z", error=IDEMPOTENCY_KEY_RULE)
SYSTEM_MESSAGE_LEVELS = ("info", "warning")
KID_RULE = "1 to 64 characters of A-Z a-z 0-9 _ -"
# How far ahead of this server's clock a `revoke-tokens` cut-off may be (the caller's clock
# may run ahead); later, it would void tokens not yet minted. The same bound as a token's
# `iat`: a cut-off can always reach every token the server takes.
MAX_CUT_OFF_AHEAD_S = MAX_CLOCK_AHEAD_S


class StrictBoolean(fields.Boolean):
    """true or false, nothing that marshmallow would take as one (1, "yes")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


class StrictNumber(fields.Float):
    """A JSON number, not a string of one (marshmallow's Float takes "12")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if type(value) not in (int, float):
            raise self.make_error("invalid")
        return float(super()._deserialize(value, attr, data, **kwargs))


class PublishRequest(NamedTuple):
    """A named tuple: one is made per publish, in half the time of a frozen dataclass."""

    message: str  # as sent: `messages.normalise_message` applies the text rules
    idempotency_key: str | None = None


class PublishSchema(Schema):
    class Meta:
        unknown = RAISE

    message = fields.String(required=True)
    idempotencyKey = fields.String(load_default=None, validate=_idempotency_key)


class RefreshTokenSchema(Schema):
    class Meta:
        unknown = RAISE

    token = fields.String(required=True)


class HistoryQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIMIT))
    since = fields.Integer(load_default=None, validate=validate.Range(0, MAX_SEQ))
    before = fields.Integer(load_default=None, validate=validate.Range(0, MAX_SEQ))


class SystemMessageSchema(Schema):
    class Meta:
        unknown = RAISE

    message = fields.String(required=True)
    level = fields.String(required=True, validate=validate.OneOf(SYSTEM_MESSAGE_LEVELS))


# Every override optional (absent: unchanged, or the default for a new tenant) and
# nullable (null: back to the server's setting); a tenant's answer has all of them.
TenantSettingsSchema = Schema.from_dict(
    {
        name: fields.Integer(
            allow_none=True,
            strict=True,
            validate=validate.Range(rule.lo, rule.hi),
            data_key=rule.json_name,
        )
        for name, rule in SETTING_RULES.items()
    },
    name="TenantSettingsSchema",
)


class TenantCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    # `error` is a format string: the braces of the pattern's {0,63} are doubled.
    id = fields.String(
        required=True,
        validate=validate.Regexp(
            TENANT_RE, error=TENANT_ID_RULE.replace("{", "{{").replace("}", "}}")
        ),
    )
    settings = fields.Nested(TenantSettingsSchema, load_default=None)


class PolicyUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    # The cut-off is not set here: `revoke-tokens` moves it, forward only.
    acceptOperatorKey = StrictBoolean(required=True)


class TenantUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))
    settings = fields.Nested(TenantSettingsSchema, load_default=None)
    policy = fields.Nested(PolicyUpdateSchema, load_default=None)


class KeyCreateSchema(Schema):
    """`{"alg": "HS256"}` (the server makes the secret), or `{"alg": "ES256" | "RS256",
    "jwk": {public JWK}}`; `kid` optional (else the JWK's, else a new one)."""

    class Meta:
        unknown = RAISE

    # Absent, not null: the OpenAPI document (openapi._key_create) says so.
    alg = fields.String(required=True, validate=validate.OneOf(ALGORITHMS))
    kid = fields.String(
        load_default=None, allow_none=False, validate=validate.Regexp(KID_RE, error=KID_RULE)
    )
    jwk = fields.Dict(keys=fields.String(), load_default=None, allow_none=False)


class RevokeTokensSchema(Schema):
    class Meta:
        unknown = RAISE

    # UNIX time (seconds); absent: now.
    before = StrictNumber(load_default=None, allow_nan=False)


# The schemas below document responses (the OpenAPI document is generated from them);
# responses themselves are built by `to_json` methods, which the tests check against them.


class EventSchema(Schema):
    id = fields.String(required=True)
    seq = fields.Integer(required=True)
    tenantId = fields.String(required=True)
    message = fields.String(required=True)
    timestamp = fields.String(required=True)


class HistorySchema(Schema):
    tenantId = fields.String(required=True)
    events = fields.List(fields.Nested(EventSchema), required=True)
    count = fields.Integer(required=True)
    latestSeq = fields.Integer(required=True)


class TenantStatsSchema(Schema):
    events = fields.Integer(required=True)
    held = fields.Integer(required=True)
    connections = fields.Integer(required=True)
    lastEventAt = fields.String(required=True, allow_none=True)


class StatsSchema(Schema):
    totalEvents = fields.Integer(required=True)
    tenantStats = fields.Dict(
        keys=fields.String(), values=fields.Nested(TenantStatsSchema), required=True
    )


class KeySchema(Schema):
    """A signing key as shown: never its secret (the HS256 secret is in `KeyCreated` only)."""

    kid = fields.String(required=True)
    alg = fields.String(required=True, validate=validate.OneOf(ALGORITHMS))
    createdAt = fields.Float(required=True)
    status = fields.String(required=True, validate=validate.OneOf(KEY_STATUSES))
    jwk = fields.Dict(keys=fields.String(), values=fields.String())  # ES256 / RS256


class KeyCreatedSchema(KeySchema):
    secret = fields.String()  # HS256: shown in this answer only, never again


class PolicySchema(Schema):
    acceptOperatorKey = fields.Boolean(required=True)
    tokensValidAfter = fields.Float(required=True, allow_none=True)


class TenantSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    createdAt = fields.String(required=True)
    bootstrap = fields.Boolean(required=True)
    settings = fields.Nested(TenantSettingsSchema, required=True)
    keys = fields.List(fields.Nested(KeySchema), required=True)
    policy = fields.Nested(PolicySchema, required=True)


class TenantListSchema(Schema):
    tenants = fields.List(fields.Nested(TenantSchema), required=True)


class MemorySchema(Schema):
    rss = fields.Integer(required=True)


class StoreHealthSchema(Schema):
    backend = fields.String(required=True)
    ok = fields.Boolean(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("healthy", "unhealthy")))
    timestamp = fields.String(required=True)
    version = fields.String(required=True)
    uptime = fields.Float(required=True)
    memory = fields.Nested(MemorySchema, required=True)
    store = fields.Nested(StoreHealthSchema, required=True)


class StoreReadySchema(Schema):
    ok = fields.Boolean(required=True)


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ready", "unavailable")))
    timestamp = fields.String(required=True)
    store = fields.Nested(StoreReadySchema, required=True)
    shuttingDown = fields.Boolean(required=True)


class ClientConfigSchema(Schema):
    tenants = fields.List(fields.String(), required=True)
    auth = fields.String(required=True, validate=validate.OneOf(("none", "token")))
    maxMessageLength = fields.Integer(required=True)
    version = fields.String(required=True)


class SystemNoticeSchema(Schema):
    """What `system_message` carries to every socket, and what the 202 answer echoes."""

    message = fields.String(required=True)
    level = fields.String(required=True, validate=validate.OneOf(SYSTEM_MESSAGE_LEVELS))
    timestamp = fields.String(required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(keys=fields.String(), values=fields.String())


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


_publish = PublishSchema()
_history = HistoryQuerySchema()
_system_message = SystemMessageSchema()
_refresh_token = RefreshTokenSchema()
_tenant_create = TenantCreateSchema()
_tenant_update = TenantUpdateSchema()
_key_create = KeyCreateSchema()
_revoke_tokens = RevokeTokensSchema()


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate `data`; refusals become `ValidationFailed` with one text per field."""
    if not isinstance(data, dict):
        raise ValidationFailed("Body must be a JSON object", {"body": "must be a JSON object"})
    try:
        result: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed("Invalid request", _flatten(exc.messages_dict)) from None
    return result


def parse_publish(payload: Any) -> PublishRequest:
    """A publish payload (REST body or socket `create_event`), checked field by field."""
    # The common, valid shape skips marshmallow: same answer, a fraction of the cost.
    if type(payload) is dict and len(payload) == 1 and type(payload.get("message")) is str:
        return PublishRequest(payload["message"])
    loaded = load(_publish, payload)
    return PublishRequest(str(loaded["message"]), loaded["idempotencyKey"])


def parse_idempotency_key(raw: str) -> str:
    """The `Idempotency-Key` header, by the same rule as `idempotencyKey` in a payload."""
    try:
        _idempotency_key(raw)
    except ValidationError:
        raise ValidationFailed(
            "Invalid Idempotency-Key", {IDEMPOTENCY_KEY_HEADER: IDEMPOTENCY_KEY_RULE}
        ) from None
    return raw


def parse_system_message(payload: Any) -> tuple[str, str]:
    """(message, level) of a `POST /api/system-messages` body."""
    data = load(_system_message, payload)
    return data["message"], data["level"]


def parse_refresh_token(payload: Any) -> str:
    """The token of a socket `refresh_token` payload, `{"token": "<jwt>"}`."""
    token: str = load(_refresh_token, payload)["token"]
    return token


def parse_history_query(query: dict[str, str]) -> dict[str, Any]:
    return load(_history, query)


def parse_tenant_create(payload: Any) -> tuple[str, TenantSettings]:
    """(id, settings) of a `POST /api/admin/tenants` body."""
    data = load(_tenant_create, payload)
    return data["id"], TenantSettings(**(data["settings"] or {}))


class TenantUpdate(NamedTuple):
    status: str | None
    settings: dict[str, int | None]  # the settings named
    accept_operator_key: bool | None


def parse_tenant_update(payload: Any) -> TenantUpdate:
    """What a `PATCH /api/admin/tenants/{id}` body changes (None: unchanged)."""
    data = load(_tenant_update, payload)
    policy = data["policy"] or {}
    return TenantUpdate(data["status"], data["settings"] or {}, policy.get("acceptOperatorKey"))


def parse_key_create(payload: Any) -> SigningKey:
    """The key a `POST /api/admin/tenants/{id}/keys` body asks for: a new HS256 secret, or
    the uploaded public JWK (`InvalidKey`, 422, for a private or unusable one)."""
    data = load(_key_create, payload)
    alg, kid, jwk = data["alg"], data["kid"], data["jwk"]
    if alg == "HS256":
        if jwk is not None:
            raise InvalidKey(
                "Invalid signing key",
                {"jwk": "HS256 secrets are generated by the server: send no jwk"},
            )
        return generate_hs256_key(kid)
    if jwk is None:
        raise ValidationFailed("Invalid request", {"jwk": f"an {alg} key needs its public JWK"})
    return parse_public_jwk(jwk, alg, kid=kid)


def parse_revoke_tokens(payload: Any, now: float | None = None) -> float:
    """The cut-off of a `POST /api/admin/tenants/{id}/revoke-tokens` body: `before`, or now."""
    now = time.time() if now is None else now
    before = load(_revoke_tokens, payload)["before"]
    if before is None:
        return now
    if not 0 <= before <= now + MAX_CUT_OFF_AHEAD_S:
        raise ValidationFailed(
            "Invalid request", {"before": "a UNIX time in seconds, not in the future"}
        )
    return float(before)


def _flatten(messages: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """One text per field; a nested object's fields as `outer.inner`."""
    out: dict[str, str] = {}
    for field, value in messages.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{field}."))
            continue
        text = value[0] if isinstance(value, list) and value else value
        out[prefix + str(field)] = text if isinstance(text, str) else str(text)
    return out

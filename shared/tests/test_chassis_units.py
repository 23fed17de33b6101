"""Pure unit tests of the chassis (no infrastructure): settings, JWT auth, pagination, database URLs."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import random
import time
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from helpdesk_shared.chassis import app as chassis_app
from helpdesk_shared.chassis.app import freeze_long_lived
from helpdesk_shared.chassis.auth import Principal, TokenVerifier, mint_token, require_roles
from helpdesk_shared.chassis.db import asyncpg_url
from helpdesk_shared.chassis.limits import BodyLimitMiddleware
from helpdesk_shared.chassis.logging import configure_logging
from helpdesk_shared.chassis.outbox import key_partition
from helpdesk_shared.chassis.pagination import (
    InvalidCursor,
    PageParams,
    build_page,
    decode_cursor,
    encode_cursor,
)
from helpdesk_shared.chassis.problems import Forbidden, Unauthorized
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET, ServiceSettings
from helpdesk_shared.contracts import Role

URL = "postgresql://helpdesk@127.0.0.1:5432/intake"
SECRET = "a-real-secret-of-sufficient-length-0123456789"
SHARED_ENV = (
    "HELPDESK_ENV",
    "HELPDESK_JWT_SECRET",
    "HELPDESK_JWT_ALGORITHM",
    "HELPDESK_JWT_PUBLIC_KEY",
    "HELPDESK_JWT_ISSUER",
    "HELPDESK_JWT_AUDIENCE",
    "KAFKA_BOOTSTRAP_SERVERS",
    "HELPDESK_TOPIC_PREFIX",
    "DATABASE_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SHARED_ENV:
        monkeypatch.delenv(name, raising=False)


# --- settings -------------------------------------------------------------------------------------


def test_the_dev_secret_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="HELPDESK_JWT_SECRET"):
        ServiceSettings(database_url=URL, environment="production")
    with pytest.raises(ValidationError, match="HELPDESK_JWT_SECRET"):
        ServiceSettings(database_url=URL, environment="production", jwt_secret=DEV_JWT_SECRET)
    assert ServiceSettings(database_url=URL, environment="production", jwt_secret=SECRET).environment == (
        "production"
    )


@pytest.mark.parametrize("secret", ["", "short-secret", "x" * 31])
def test_an_empty_or_short_secret_is_refused_in_production(secret: str) -> None:
    # `KEY=` in an env file (kubectl create secret --from-env-file) gives an empty secret.
    with pytest.raises(ValidationError, match="HELPDESK_JWT_SECRET must be at least 32 bytes"):
        ServiceSettings(database_url=URL, environment="production", jwt_secret=secret)
    assert ServiceSettings(database_url=URL, environment="production", jwt_secret="x" * 32).jwt_secret


@pytest.mark.parametrize("environment", ["local", "test"])
def test_the_dev_secret_is_accepted_outside_production(environment: str) -> None:
    settings = ServiceSettings(database_url=URL, environment=environment)
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET


def test_production_is_read_from_the_shared_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPDESK_ENV", "production")
    with pytest.raises(ValidationError, match="HELPDESK_JWT_SECRET"):
        ServiceSettings(database_url=URL)
    monkeypatch.setenv("HELPDESK_JWT_SECRET", SECRET)
    assert ServiceSettings(database_url=URL).environment == "production"


def test_rs256_requires_a_public_key() -> None:
    with pytest.raises(ValidationError, match="HELPDESK_JWT_PUBLIC_KEY"):
        ServiceSettings(database_url=URL, jwt_algorithm="RS256")
    assert ServiceSettings(database_url=URL, jwt_algorithm="RS256", jwt_public_key="PEM").jwt_public_key


def test_service_prefix_applies_to_own_settings_but_not_to_shared_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore", frozen=True)
        service_name: str = "demo"

    monkeypatch.setenv("DEMO_DATABASE_URL", URL)
    monkeypatch.setenv("DATABASE_URL", "postgresql://wrong/db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("HELPDESK_TOPIC_PREFIX", "ci42.")
    settings = DemoSettings()
    assert settings.database_url == URL
    assert settings.kafka_bootstrap_servers == "kafka-1:9092"
    assert settings.topic("helpdesk.demo") == "ci42.helpdesk.demo"
    assert settings.source == "/helpdesk/demo"


# --- auth -----------------------------------------------------------------------------------------


def verifier(**overrides: str) -> TokenVerifier:
    return TokenVerifier(ServiceSettings(database_url=URL, jwt_secret=SECRET, **overrides))


def test_a_minted_token_verifies_to_its_principal_and_unknown_roles_are_ignored() -> None:
    subject = uuid.uuid4()
    token = mint_token(secret=SECRET, subject=str(subject), roles=["agent", "lead", "wizard"], name="Ann")
    principal = verifier().verify(token)
    assert principal == Principal(subject=str(subject), roles=frozenset({Role.AGENT, Role.LEAD}), name="Ann")
    assert principal.user_id == subject
    assert Principal(subject="svc-web", roles=frozenset()).user_id is None


def _token_for(audience: str | None) -> str:
    claims: dict[str, object] = {
        "sub": "u-1",
        "roles": ["agent"],
        "iss": "helpdesk",
        "exp": int(time.time()) + 60,
    }
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_tokens_are_held_to_the_configured_audience() -> None:
    # Identity providers (Keycloak, Auth0, Entra ID) put an audience in every token: without the
    # setting each was refused, with it only tokens issued for this API are accepted.
    helpdesk = verifier(jwt_audience="helpdesk-api")
    assert helpdesk.verify(_token_for("helpdesk-api")).subject == "u-1"
    for other in ("billing-api", None):  # another client's token, or one naming no audience
        with pytest.raises(Unauthorized):
            helpdesk.verify(_token_for(other))
    assert verifier().verify(_token_for(None)).subject == "u-1"  # none configured: none expected
    with pytest.raises(Unauthorized):
        verifier().verify(_token_for("billing-api"))


def test_an_expired_token_is_unauthorized() -> None:
    token = mint_token(secret=SECRET, subject="u", roles=["agent"], ttl_seconds=-5)
    with pytest.raises(Unauthorized, match="expired"):
        verifier().verify(token)


def test_a_remembered_token_still_expires() -> None:
    check = verifier()
    # mint_token counts whole seconds: a TTL of 3 leaves the token at least 2 s to be verified in.
    token = mint_token(secret=SECRET, subject="u", roles=["agent"], ttl_seconds=3)
    assert check.verify(token).subject == "u"
    assert check.verify(token).subject == "u"  # from the cache
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() <= expires_at:
        time.sleep(max(0.01, expires_at - time.time()))
    with pytest.raises(Unauthorized, match="expired"):
        check.verify(token)


def test_the_verified_token_cache_is_bounded() -> None:
    check = verifier()
    tokens = [
        mint_token(secret=SECRET, subject=f"u{i}", roles=[]) for i in range(TokenVerifier.CACHE_SIZE + 5)
    ]
    for token in tokens:
        check.verify(token)
    assert len(check._cache) == TokenVerifier.CACHE_SIZE
    assert check.verify(tokens[0]).subject == "u0"  # dropped from the cache, verified again


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(mint_token(secret=SECRET, subject="u", roles=[], issuer="someone-else"), id="issuer"),
        pytest.param(
            mint_token(secret="another-secret-of-sufficient-length!!", subject="u", roles=[]), id="signature"
        ),
        pytest.param(jwt.encode({"sub": "u", "iss": "helpdesk"}, SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(
            jwt.encode({"iss": "helpdesk", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
            id="no-sub",
        ),
        pytest.param(
            jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"), id="no-issuer"
        ),
        pytest.param(
            jwt.encode(
                {"sub": "u", "iss": "helpdesk", "exp": int(time.time()) + 60, "roles": "admin"},
                SECRET,
                algorithm="HS256",
            ),
            id="roles-not-a-list",
        ),
        pytest.param(
            jwt.encode(
                {"sub": "u", "iss": "helpdesk", "exp": int(time.time()) + 60, "roles": ["admin"]},
                None,
                algorithm="none",
            ),
            id="alg-none",
        ),
        pytest.param("not.a.token", id="garbage"),
    ],
)
def test_invalid_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        verifier().verify(token)


def test_an_rs256_verifier_refuses_an_hs256_token() -> None:
    token = mint_token(secret=SECRET, subject="u", roles=["admin"])
    with pytest.raises(Unauthorized):
        verifier(jwt_algorithm="RS256", jwt_public_key="-----BEGIN PUBLIC KEY-----").verify(token)


def test_roles_that_are_not_strings_are_unauthorized() -> None:
    token = jwt.encode(
        {"sub": "u", "iss": "helpdesk", "exp": int(time.time()) + 60, "roles": [["admin"]]},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(Unauthorized):
        verifier().verify(token)


def test_rs256_verification_is_available() -> None:
    assert "RS256" in jwt.algorithms.get_default_algorithms()


async def test_require_roles_admits_the_listed_roles_and_admin() -> None:
    check = require_roles(Role.REVIEWER)
    for roles in ({Role.REVIEWER}, {Role.ADMIN}, {Role.AGENT, Role.REVIEWER}):
        principal = Principal(subject="u", roles=frozenset(roles))
        assert await check(principal) is principal
    with pytest.raises(Forbidden, match="reviewer"):
        await check(Principal(subject="u", roles=frozenset({Role.AGENT})))


# --- pagination -----------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    created, row_id = datetime(2025, 3, 9, 7, 5, 1, 123456, tzinfo=UTC), uuid.uuid4()
    cursor = encode_cursor(created, row_id)
    assert not set(cursor) & set("+/=")
    assert decode_cursor(cursor) == (created, row_id)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        "a",
        "bm90IGpzb24",
        b64(b"{}"),
        b64(b"[1]"),
        b64(b'"x"'),
        b64(b'["nope", "x"]'),
        b64(b'["2025-01-01T00:00:00+00:00", "not-a-uuid"]'),
        b64(b'[17, "3f1b7a9c-8f0e-4f7b-9a51-0c2d1e3f4a5b"]'),
        # Decodes, but was never issued: every issued time has a UTC offset and a UTC reading.
        b64(b'["2025-01-01T00:00:00", "3f1b7a9c-8f0e-4f7b-9a51-0c2d1e3f4a5b"]'),
        b64(b'["9999-12-31T23:00:00-05:00", "3f1b7a9c-8f0e-4f7b-9a51-0c2d1e3f4a5b"]'),
        b64(b'["0001-01-01T00:30:00+01:00", "3f1b7a9c-8f0e-4f7b-9a51-0c2d1e3f4a5b"]'),
    ],
)
def test_a_garbage_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 422


def test_a_cursor_with_a_non_string_id_is_invalid_input() -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(b64(b'["2025-01-01T00:00:00+00:00", 5]'))


def test_build_page_returns_a_cursor_only_when_more_rows_remain() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [(start - timedelta(minutes=i), uuid.uuid4()) for i in range(4)]
    params = PageParams(limit=3, cursor=None)

    page, cursor = build_page(rows, params, key=lambda row: row)
    assert page == rows[:3]
    assert cursor is not None and decode_cursor(cursor) == rows[2]
    assert build_page(rows[:3], params, key=lambda row: row) == (rows[:3], None)
    assert build_page(rows[:1], params, key=lambda row: row) == (rows[:1], None)
    assert build_page([], params, key=lambda row: row) == ([], None)


# --- database URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/intake", "postgresql+asyncpg://u:p@db:5432/intake"),
        ("postgres://u:p@db/intake", "postgresql+asyncpg://u:p@db/intake"),
        ("postgresql+asyncpg://u@db/intake?ssl=require", "postgresql+asyncpg://u@db/intake?ssl=require"),
    ],
)
def test_asyncpg_url_accepts_postgresql_urls(given: str, expected: str) -> None:
    assert asyncpg_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://u:s3cr3t@db/intake", "sqlite:///intake.db", "db:5432/intake"])
def test_asyncpg_url_rejects_other_databases_without_leaking_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="Not a PostgreSQL URL") as caught:
        asyncpg_url(url)
    assert "s3cr3t" not in str(caught.value)


async def test_stopping_a_service_is_bounded_even_when_a_task_will_not_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chassis_app, "_STOP_TIMEOUT", 0.2)
    settings = ServiceSettings(database_url="postgresql://unused@127.0.0.1:1/unused", environment="test")
    runtime = chassis_app.ServiceRuntime(chassis_app.ServiceDefinition(name="stubborn", settings=settings))
    cleaned_up = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned_up.set()
            await asyncio.Event().wait()  # a clean-up that never ends (the bug this guards against)

    async def polite() -> None:
        await asyncio.sleep(3600)

    runtime._spawn("stubborn", stubborn())
    runtime._spawn("polite", polite())
    await asyncio.sleep(0)
    started = time.monotonic()
    await runtime.stop()
    assert cleaned_up.is_set()
    assert time.monotonic() - started < 2.0


def test_key_partition_is_the_kafka_default_partitioner_s_choice() -> None:
    """Word-wise murmur2 picks what aiokafka's (and the Java client's) partitioner picks, for keys
    of every length modulo 4 and any partition count."""
    rng = random.Random(20261123)
    keys = [str(uuid.uuid4()).encode() for _ in range(200)] + [b"", b"a", b"ab", b"abc", "工單".encode()]
    keys += [rng.randbytes(rng.randrange(64)) for _ in range(2000)]
    for key in keys:
        for count in (1, 3, 7, 12):
            partitions = list(range(count))
            assert key_partition(key, partitions) == DefaultPartitioner()(key, partitions, partitions), key
    assert key_partition(None, [0, 1, 2]) in {0, 1, 2}


class _Node:
    """A container the cyclic collector tracks (it can point at itself)."""

    def __init__(self) -> None:
        self.next: _Node = self


def _tracked(obj: object) -> bool:
    return any(candidate is obj for candidate in gc.get_objects())


def test_freezing_collects_garbage_first_and_exempts_what_survives() -> None:
    gc.unfreeze()
    live = _Node()
    dropped = _Node()
    dropped_gone = weakref.ref(dropped)
    del dropped  # a cycle: only the collector can free it
    assert dropped_gone() is not None
    try:
        freeze_long_lived()
        assert dropped_gone() is None  # collected before the freeze, not pinned by it
        assert not _tracked(live)  # exempt from every later pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert _tracked(live)


@pytest.mark.parametrize("threshold", [0, -1, 1_000_001])
def test_a_young_collection_threshold_out_of_range_is_refused(threshold: int) -> None:
    # 0 would switch the collector off: cycles would never be freed.
    with pytest.raises(ValidationError, match="HELPDESK_GC_YOUNG_THRESHOLD"):
        ServiceSettings(database_url="postgresql+asyncpg://x/y", HELPDESK_GC_YOUNG_THRESHOLD=threshold)


def test_uvicorn_builds_no_access_log_line_for_a_service() -> None:
    # uvicorn formats each response's access-log line (client address, path) whenever its access
    # logger has a handler anywhere up the tree; the services never log those lines.
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    def access_log(config: uvicorn.Config) -> bool:
        loop = asyncio.new_event_loop()
        try:
            protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
            return bool(protocol.access_log)
        finally:
            loop.close()

    config = uvicorn.Config(app=app, log_level="info")  # applies uvicorn's own logging set-up
    assert access_log(config)

    configure_logging("svc", "INFO")

    assert not access_log(config)
    # uvicorn's own messages still reach the service's JSON log.
    assert logging.getLogger("uvicorn.error").hasHandlers()


# --- request body limit ---------------------------------------------------------------------------


async def _echo_size(scope: Any, receive: Any, send: Any) -> None:
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def test_a_body_over_the_limit_is_refused_before_it_is_read() -> None:
    app = BodyLimitMiddleware(_echo_size, max_bytes=1000, larger={"/import": 5000})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/tickets", content=b"x" * 1000)).text == "1000"
        declared = await client.post("/tickets", content=b"x" * 1001)

        async def streamed() -> Any:
            for _ in range(3):
                yield b"x" * 600

        undeclared = await client.post("/tickets", content=streamed())
        assert (await client.post("/import", content=b"x" * 4000)).text == "4000"
        too_big_import = await client.post("/import", content=b"x" * 5001)
    for refused in (declared, undeclared, too_big_import):
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/payload-too-large")


def test_the_consumer_group_follows_the_topic_prefix_unless_named() -> None:
    # Two stacks on one cluster under different prefixes must not share (and rebalance) a group.
    assert ServiceSettings(database_url=URL, service_name="routing").group_id == "routing"
    assert ServiceSettings(database_url=URL, service_name="routing", topic_prefix="staging.").group_id == (
        "staging.routing"
    )
    named = ServiceSettings(
        database_url=URL, service_name="routing", topic_prefix="staging.", consumer_group="g"
    )
    assert named.group_id == "g"

"""Bearer JWT authentication and role checks.

Tokens carry `sub` (the user or integration id), `roles` and `exp`. Local
and test environments sign with an HS256 secret; production can verify
RS256 tokens with the identity provider's public key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from helpdesk_shared.chassis.problems import Forbidden, Unauthorized
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.contracts.enums import Role


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[Role]
    name: str | None = None

    def has_any(self, roles: Iterable[Role]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def user_id(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.subject)
        except ValueError:
            return None


class TokenVerifier:
    def __init__(self, settings: ServiceSettings) -> None:
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._required = ["sub", "exp", "aud"] if self._audience is not None else ["sub", "exp"]
        self._key: str = (
            settings.jwt_public_key or ""
            if settings.jwt_algorithm == "RS256"
            else settings.jwt_secret.get_secret_value()
        )
        self._cache: dict[str, tuple[Principal, float]] = {}

    # Verified tokens are remembered until they expire: a channel integration sends the same
    # token with every request, and checking its signature again costs more than the rest of
    # the authentication. Bounded, oldest dropped first; failures are never cached.
    CACHE_SIZE = 4096

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires_at = cached
            if time.time() < expires_at:
                return principal
            del self._cache[token]
        principal, expires_at = self._decode(token)
        if len(self._cache) >= self.CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[token] = (principal, expires_at)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Invalid token: {exc}") from exc
        raw_roles = claims.get("roles", [])
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            raise Unauthorized("Invalid token: roles must be a list of strings")
        roles = frozenset(Role(r) for r in raw_roles if r in Role._value2member_map_)
        principal = Principal(subject=str(claims["sub"]), roles=roles, name=claims.get("name"))
        return principal, float(claims["exp"])


def mint_token(
    *,
    secret: str,
    subject: str,
    roles: Iterable[str],
    issuer: str = "helpdesk",
    audience: str | None = None,
    ttl_seconds: int = 12 * 3600,
    name: str | None = None,
) -> str:
    """HS256 token for local development and tests."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": list(roles),
        "iss": issuer,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if audience is not None:
        claims["aud"] = audience
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier.verify(token.strip())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def allowed_roles(*roles: Role) -> frozenset[Role]:
    """The roles that pass `require_roles(*roles)`: those given, and admin."""
    return frozenset(roles) | {Role.ADMIN}


def require_roles(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """Dependency: the caller must hold at least one of `roles` (admin always may)."""
    allowed = allowed_roles(*roles)

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any(allowed):
            raise Forbidden(f"Requires one of the roles: {', '.join(sorted(r.value for r in allowed))}")
        return principal

    return dependency

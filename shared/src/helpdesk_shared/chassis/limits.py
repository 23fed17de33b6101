"""A ceiling on request bodies, checked before anything reads them.

Without one, a client could send a body of any size: every route (and intake's fast lane, which
reads the body before it checks the token) would hold all of it in memory first. The declared
Content-Length is refused at once; a body streamed without one is counted as it arrives.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpdesk_shared.chassis.problems import DomainError, problem_response

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class RequestTooLarge(DomainError):
    status, slug, title = 413, "payload-too-large", "The request body is larger than the limit"


class BodyLimitMiddleware:
    """Refuses a body over ``max_bytes`` (or the larger limit of a route in ``larger``) with 413."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
                # The server delivers no more than the declared length: nothing left to count
                # (the common case, kept free of the wrappers below).
                await self.app(scope, receive, send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(f"The body may be at most {limit:,} bytes")
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except RequestTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        error = RequestTooLarge(f"The body may be at most {limit:,} bytes")
        response = problem_response(
            error.status, error.slug, error.title, Request(scope), detail=error.detail
        )
        await response(scope, receive, send)

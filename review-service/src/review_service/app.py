"""Composition root of the review service (`uvicorn review_service.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from review_service.api import owners
from review_service.consumers import CONSUMES, HANDLERS
from review_service.settings import ReviewSettings


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()  # database_url comes from the environment
    return create_service_app(
        ServiceDefinition(
            name="review",
            settings=settings,
            routers=[owners.router],
            handlers=HANDLERS,
            consumes=CONSUMES,
            title="Helpdesk review service",
            description="Answer drafts, versions and reviews: every answer is approved by someone else.",
        )
    )

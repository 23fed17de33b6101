"""Composition root of the kb service (`uvicorn kb_service.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from kb_service.api import faq
from kb_service.consumers import CONSUMES, HANDLERS
from kb_service.settings import KbSettings


def create_app(settings: KbSettings | None = None) -> FastAPI:
    settings = settings or KbSettings()  # database_url comes from the environment
    return create_service_app(
        ServiceDefinition(
            name="kb",
            settings=settings,
            routers=[faq.router],
            handlers=HANDLERS,
            consumes=CONSUMES,
            title="Helpdesk knowledge base service",
            description="Categorised, versioned, access-controlled knowledge; FAQ candidates; gap reports.",
        )
    )

"""Composition root of the metrics service (`uvicorn metrics_service.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from metrics_service.api import summary
from metrics_service.consumers import CONSUMES, HANDLERS
from metrics_service.settings import MetricsSettings


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()  # database_url comes from the environment
    return create_service_app(
        ServiceDefinition(
            name="metrics",
            settings=settings,
            routers=[summary.router],
            handlers=HANDLERS,
            consumes=CONSUMES,
            title="Helpdesk metrics service",
            description="Read models built from every event: KPIs, scorecards and reports.",
        )
    )

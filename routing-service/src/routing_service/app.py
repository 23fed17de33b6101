"""Composition root of the routing service (`uvicorn routing_service.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI

from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from routing_service import capacity, classification, sla_timers
from routing_service.api import agents
from routing_service.api import classification as classification_api
from routing_service.api import collaborators as collaborators_api
from routing_service.api import sla as sla_api
from routing_service.api import transfers as transfers_api
from routing_service.api import views as views_api
from routing_service.consumers import CONSUMES, HANDLERS
from routing_service.settings import RoutingSettings


def create_app(settings: RoutingSettings | None = None) -> FastAPI:
    settings = settings or RoutingSettings()  # database_url comes from the environment
    return create_service_app(
        ServiceDefinition(
            name="routing",
            settings=settings,
            routers=[
                agents.router,
                classification_api.router,
                collaborators_api.router,
                sla_api.router,
                transfers_api.router,
                views_api.router,
            ],
            handlers=HANDLERS,
            consumes=CONSUMES,
            larger_bodies={classification_api.EXAMPLES_PATH: classification_api.MAX_BODY_BYTES},
            background=[classification.warm_up, sla_timers.sla_timer_worker, capacity.queue_sweeper],
            title="Helpdesk routing service",
            description=(
                "Classification, assignment, presence, transfers, collaborators, queues, workload and SLAs."
            ),
        )
    )

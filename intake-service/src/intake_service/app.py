"""Composition root of the intake service (`uvicorn intake_service.app:create_app --factory`)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from helpdesk_shared.text import warm_up_in_background
from intake_service.api import complaints, customers, deliveries, email_channel, feedback, tickets
from intake_service.api.fast_intake import FastTicketIntake
from intake_service.autoclose import auto_close_worker
from intake_service.consumers import CONSUMES, handlers
from intake_service.delivery import delivery_worker
from intake_service.settings import IntakeSettings
from intake_service.ticket_writer import TicketWriter


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()  # database_url comes from the environment
    writer = TicketWriter(number_prefix=settings.ticket_number_prefix)
    app = create_service_app(
        ServiceDefinition(
            name="intake",
            settings=settings,
            routers=[
                tickets.router,
                feedback.router,
                complaints.router,
                customers.router,
                email_channel.router,
                deliveries.router,
            ],
            handlers=handlers(settings),
            background=[writer.run, delivery_worker, auto_close_worker, warm_up_in_background],
            middleware=[Middleware(FastTicketIntake)],
            larger_bodies={email_channel.INBOUND_PATH: email_channel.MAX_MESSAGE_BYTES},
            consumes=CONSUMES,
            title="Helpdesk intake service",
            description="Every channel in: tickets, customers and their messages.",
        )
    )
    app.state.ticket_writer = writer
    return app

"""Kafka topics: one per producing service, one dead-letter topic per consuming service.

Messages are keyed by the aggregate id (`EventPayload.aggregate_id()`, also
the CloudEvents `subject`) so that one ticket's events stay ordered.
"""

from __future__ import annotations

from .registry import producer_of

__all__ = [
    "ALL_TOPICS",
    "DLQ_PARTITIONS",
    "DLQ_TOPIC",
    "EVENT_TOPIC_PARTITIONS",
    "PRODUCING_SERVICES",
    "SERVICES",
    "SERVICE_TOPIC",
    "source_for",
    "topic_for_event_type",
]

PRODUCING_SERVICES: tuple[str, ...] = ("intake", "routing", "review", "kb")
"""Services that publish events, each to its own topic."""

SERVICES: tuple[str, ...] = (*PRODUCING_SERVICES, "metrics")
"""Every service; each consumes events and has a dead-letter topic."""

EVENT_TOPIC_PARTITIONS = 4
"""Partitions of each service event topic (the unit of consumer scale-out)."""

DLQ_PARTITIONS = 1
"""Partitions of each dead-letter topic."""

SERVICE_TOPIC: dict[str, str] = {service: f"helpdesk.{service}" for service in PRODUCING_SERVICES}
"""Producing service name → the topic it publishes to."""

DLQ_TOPIC: dict[str, str] = {service: f"helpdesk.{service}.dlq" for service in SERVICES}
"""Consuming service name → its dead-letter topic (poison messages with their error)."""

ALL_TOPICS: dict[str, int] = {
    **{topic: EVENT_TOPIC_PARTITIONS for topic in SERVICE_TOPIC.values()},
    **{topic: DLQ_PARTITIONS for topic in DLQ_TOPIC.values()},
}
"""Every topic to create → its partition count."""


def topic_for_event_type(cloudevent_type: str) -> str:
    """The topic an event type is published to (its producer's topic).

    Raises `UnknownEventType` for an unregistered type.
    """
    return SERVICE_TOPIC[producer_of(cloudevent_type)]


def source_for(service: str) -> str:
    """CloudEvents `source` of a service's events, e.g. `/helpdesk/intake`."""
    return f"/helpdesk/{service}"

"""No request makes review, kb or metrics answer 500: schemathesis-generated requests, valid and
invalid, for every operation of their OpenAPI documents (see `helpdesk_runtime.api_fuzz`; intake
and routing have their own, with stored things to name in their paths)."""

from __future__ import annotations

import importlib

import pytest

from helpdesk_runtime.api_fuzz import fuzz
from helpdesk_runtime.testing import auth_headers

ROLES = ("channel", "agent", "reviewer", "lead", "kb_editor", "admin", "ops")


@pytest.mark.parametrize(
    ("name", "settings"), [("review", "ReviewSettings"), ("kb", "KbSettings"), ("metrics", "MetricsSettings")]
)
async def test_no_generated_request_is_answered_with_a_server_error(
    make_service, name: str, settings: str
) -> None:  # type: ignore[no-untyped-def]
    app = importlib.import_module(f"{name}_service.app")
    settings_cls = getattr(importlib.import_module(f"{name}_service.settings"), settings)
    async with make_service(name, settings_cls, app.create_app, label="fuzz") as service:
        report = await fuzz(service.client, headers=auth_headers(*ROLES))

    report.check(at_least_sent=4, at_least_succeeded=1)  # metrics has four operations, none with a body

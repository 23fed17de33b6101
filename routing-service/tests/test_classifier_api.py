"""Classification over HTTP and in routing, on a database of its own (real PostgreSQL and Kafka)."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from routing_factories import isolated_team
from sqlalchemy import func, select, update

from helpdesk_runtime.testing import ServiceHarness, auth_headers
from helpdesk_shared.chassis.db import OUTBOX
from helpdesk_shared.contracts import EventEnvelope, Priority, TicketCreated
from helpdesk_shared.contracts.routing import TicketAssigned, TicketClassified
from routing_service.app import create_app
from routing_service.domain.classifier import FORMAT_VERSION, train
from routing_service.models import ClassifierModel, TrainingExample
from routing_service.settings import RoutingSettings

LEAD = auth_headers("lead")
AGENT = auth_headers("agent")
NDJSON = {"Content-Type": "application/x-ndjson"}
DOMAINS = 12


def train_split() -> list[dict[str, str]]:
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").exists() and (parent / "routing-service").is_dir():
            path = parent.parent / "shared" / "data" / "insuranceqa-zh" / "train.json.gz"
            assert path.is_file(), f"Labelled data missing: {path}"
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return [{"text": q["zh"], "domain": q["domain"]} for q in json.load(f).values()]
    raise AssertionError("repository root not found")


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


async def post_lines(harness: ServiceHarness, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await harness.client.post(
        "/v1/routing/training-examples", content=body, headers={**LEAD, **NDJSON, **(headers or {})}
    )


@pytest.fixture(scope="module")
async def clf(make_service) -> AsyncIterator[ServiceHarness]:  # type: ignore[no-untyped-def]
    async with make_service("routing", RoutingSettings, create_app, label="clf") as harness:
        yield harness


@pytest.fixture(scope="module")
async def trained(clf: ServiceHarness) -> dict[str, Any]:
    imported = await post_lines(clf, ndjson(train_split()))
    assert imported.status_code == 200, imported.text
    response = await clf.client.post("/v1/routing/classifier/retrain", headers=LEAD)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_nothing_to_classify_with_before_training(make_service) -> None:  # type: ignore[no-untyped-def]
    async with make_service("routing", RoutingSettings, create_app, label="clfempty") as empty:
        preview = await empty.client.post("/v1/routing/classify", json={"text": "車險"}, headers=AGENT)
        assert preview.status_code == 409
        assert preview.headers["content-type"] == "application/problem+json"
        assert preview.json()["type"].endswith("/classifier-not-trained")
        assert (await empty.client.get("/v1/routing/classifier", headers=AGENT)).status_code == 404
        one_domain = [{"text": f"車險問題 {i}", "domain": "auto-insurance"} for i in range(20)]
        assert (await post_lines(empty, ndjson(one_domain))).json() == {"imported": 20, "duplicates": 0}
        refused = await empty.client.post("/v1/routing/classifier/retrain", headers=LEAD)
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("/not-enough-examples")


async def test_examples_without_a_single_word_are_not_enough_to_train(make_service) -> None:  # type: ignore[no-untyped-def]
    async with make_service("routing", RoutingSettings, create_app, label="clfwordless") as empty:
        marks = ["？！", "……", "\u200b", "🙂", "。", "!!", "??", "--", "~~", "**", "##", "@@"]
        lines = [{"text": mark * (i + 1), "domain": ("a", "b")[i % 2]} for i, mark in enumerate(marks)]
        imported = await post_lines(empty, ndjson(lines))
        assert imported.status_code == 200, imported.text
        refused = await empty.client.post("/v1/routing/classifier/retrain", headers=LEAD)
        assert refused.status_code == 409, refused.text  # was a 500: an empty vocabulary
        assert refused.json()["type"].endswith("/not-enough-examples")


async def test_import_counts_new_and_duplicate_lines(clf: ServiceHarness) -> None:
    tag = uuid.uuid4().hex
    rows = [{"text": f"車險續保 {tag} {i}", "domain": "auto-insurance"} for i in range(3)]
    body = ndjson([*rows, rows[0]]).replace(b"\n", b"\n\n", 1)  # a blank line is skipped
    first = await post_lines(clf, body, {"Content-Type": "text/plain; charset=utf-8"})
    assert first.json() == {"imported": 3, "duplicates": 1}
    again = await post_lines(clf, body)
    assert again.json() == {"imported": 0, "duplicates": 4}
    other_domain = await post_lines(clf, ndjson([{"text": rows[0]["text"], "domain": "home-insurance"}]))
    assert other_domain.json() == {"imported": 1, "duplicates": 0}


async def test_a_bad_line_is_named_and_nothing_of_the_file_is_stored(clf: ServiceHarness) -> None:
    before = await _example_count(clf)
    body = b'{"text": "fine", "domain": "auto-insurance"}\n{"text": oops}\n{"text": "no domain"}\n[1]\n'
    response = await post_lines(clf, body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/invalid-training-examples")
    assert problem["line"] == 2
    assert problem["detail"].startswith("line 2")
    assert [e["field"] for e in problem["errors"]] == ["line 2", "line 3.domain", "line 4"]
    assert await _example_count(clf) == before
    empty = await post_lines(clf, b"\n \n")
    assert empty.status_code == 422


async def test_import_refuses_other_media_oversized_bodies_and_non_leads(clf: ServiceHarness) -> None:
    line = b'{"text": "t", "domain": "d"}\n'
    wrong_type = await post_lines(clf, line, {"Content-Type": "application/xml"})
    assert wrong_type.status_code == 415
    assert wrong_type.headers["content-type"] == "application/problem+json"
    too_many = await post_lines(clf, b'{"text": "t", "domain": "d"}\n' * 100_001)
    assert too_many.status_code == 413
    too_big = await post_lines(clf, b'{"text": "' + b"x" * (21 * 1024 * 1024) + b'", "domain": "d"}\n')
    assert too_big.status_code == 413
    assert too_big.json()["type"].endswith("/payload-too-large")
    forbidden = await post_lines(clf, line, AGENT)
    assert forbidden.status_code == 403
    assert (await clf.client.post("/v1/routing/classifier/retrain", headers=AGENT)).status_code == 403


async def test_retrain_stores_and_activates_a_version(clf: ServiceHarness, trained: dict[str, Any]) -> None:
    assert len(trained["classes"]) == DOMAINS
    assert trained["n_examples"] == await _example_count(clf) > 12_000  # train repeats some questions
    assert trained["cv_accuracy"] >= 0.97
    shown = await clf.client.get("/v1/routing/classifier", headers=AGENT)
    assert shown.json() == trained
    async with clf.uow() as uow:
        active = await uow.session.scalar(select(func.count()).where(ClassifierModel.active))
    assert active == 1


async def test_preview_classifies_in_either_script(clf: ServiceHarness, trained: dict[str, Any]) -> None:
    for text in ("我的車被撞了，保險公司會賠嗎？", "我的车被撞了，保险公司会赔吗？"):
        response = await clf.client.post("/v1/routing/classify", json={"text": text}, headers=AGENT)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["domain"] == "auto-insurance"
        assert body["source"] == "model"
        assert body["classifier_version"] == trained["version"]
        assert body["confidence"] == body["domains"][0]["score"] > 0.5
        assert len(body["domains"]) == 5
        assert (body["urgent"], body["difficult"], body["reasons"]) == (False, False, [])
    assert (
        await clf.client.post("/v1/routing/classify", json={"text": ""}, headers=AGENT)
    ).status_code == 422
    channel = auth_headers("channel")
    assert (
        await clf.client.post("/v1/routing/classify", json={"text": "x"}, headers=channel)
    ).status_code == 403


async def test_preview_explains_difficulty_and_urgency(clf: ServiceHarness, trained: dict[str, Any]) -> None:
    body = {"text": "車禍理賠太慢", "kind": "complaint", "customer_vip": True, "priority": "urgent"}
    decision = (await clf.client.post("/v1/routing/classify", json=body, headers=AGENT)).json()
    assert decision["difficult"] and decision["urgent"]
    assert {"complaint", "vip customer", "urgent: priority"} <= set(decision["reasons"])


async def test_rules_are_lead_editable_and_override_the_model(
    clf: ServiceHarness, trained: dict[str, Any]
) -> None:
    rule = {"name": f"claims {uuid.uuid4().hex[:6]}", "pattern": "理賠進度|索賠", "domain": "claims-desk"}
    created = await clf.client.post("/v1/routing/rules", json={**rule, "category": "進度"}, headers=LEAD)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    urgent = {"name": f"asap {uuid.uuid4().hex[:6]}", "pattern": r"\b(asap|urgent)\b", "is_regex": True}
    urgent_rule = await clf.client.post("/v1/routing/rules", json={**urgent, "urgent": True}, headers=LEAD)
    assert urgent_rule.status_code == 201
    try:
        text = "请问理赔进度怎么查 ASAP"
        decision = (await clf.client.post("/v1/routing/classify", json={"text": text}, headers=AGENT)).json()
        assert (decision["domain"], decision["confidence"], decision["source"]) == (
            "claims-desk",
            1.0,
            "rule",
        )
        assert decision["category"] == "進度"
        assert decision["urgent"]
        assert decision["reasons"][:2] == [f"rule: {rule['name']}", f"rule: {urgent['name']}"]
        listed = (await clf.client.get("/v1/routing/rules", headers=AGENT)).json()
        assert rule_id in [r["id"] for r in listed]
        assert (await clf.client.post("/v1/routing/rules", json=rule, headers=LEAD)).status_code == 409
        assert (await clf.client.post("/v1/routing/rules", json=rule, headers=AGENT)).status_code == 403
        bad_regex = {**rule, "name": "bad", "pattern": "(理賠", "is_regex": True}
        refused = await clf.client.post("/v1/routing/rules", json=bad_regex, headers=LEAD)
        assert refused.status_code == 422
        assert refused.json()["type"].endswith("/invalid-rule")
        no_effect = {"name": "nothing", "pattern": "理賠"}
        assert (await clf.client.post("/v1/routing/rules", json=no_effect, headers=LEAD)).status_code == 422
    finally:
        assert (await clf.client.delete(f"/v1/routing/rules/{rule_id}", headers=LEAD)).status_code == 204
        await clf.client.delete(f"/v1/routing/rules/{urgent_rule.json()['id']}", headers=LEAD)
    assert (await clf.client.delete(f"/v1/routing/rules/{rule_id}", headers=LEAD)).status_code == 404
    after = (await clf.client.post("/v1/routing/classify", json={"text": text}, headers=AGENT)).json()
    assert after["source"] == "model"


async def test_a_new_ticket_is_classified_before_it_is_assigned(
    clf: ServiceHarness, trained: dict[str, Any]
) -> None:
    await isolated_team(clf, 5)
    complaint = new_ticket("車險理賠", "車禍後保險公司一直不理賠，我要投訴", kind="complaint")
    question = new_ticket("房屋保險", "房屋保險包括水災嗎？")
    for event in (complaint, question):
        assert await _consume(clf, event)

    classified, assigned = await _events(clf, complaint.data.ticket_id)
    assert classified["domain"] == "auto-insurance"
    assert classified["difficult"] and "complaint" in classified["reasons"]
    assert classified["classifier_version"] == str(trained["version"])
    assert classified["sla_policy_id"] == "5a000000-0000-4000-8000-000000000002"  # difficult → its policy
    assert classified["first_response_due_at"] is not None
    assert assigned["difficult"] is True

    classified, assigned = await _events(clf, question.data.ticket_id)
    assert (classified["domain"], classified["difficult"], assigned["difficult"]) == (
        "home-insurance",
        False,
        False,
    )


async def test_a_version_activated_by_another_replica_is_used_at_once(
    clf: ServiceHarness, trained: dict[str, Any]
) -> None:
    """Another replica retrains: this one must switch at its next classification, and back again."""
    subset = [
        (r["text"], r["domain"]) for r in train_split() if r["domain"] in ("annuities", "auto-insurance")
    ]
    model = await asyncio.to_thread(train, subset)
    async with clf.uow() as uow:
        await uow.session.execute(update(ClassifierModel).where(ClassifierModel.active).values(active=False))
        uow.session.add(
            elsewhere := ClassifierModel(
                format=FORMAT_VERSION,
                trained_at=datetime.now(UTC),
                n_examples=len(subset),
                classes=list(model.classes),
                blob=model.serialize(),
                active=True,
            )
        )
        await uow.commit()
    try:
        decision = await _preview(clf, "房屋保險包括水災嗎？")
        assert decision["classifier_version"] == elsewhere.version
        assert decision["domain"] in ("annuities", "auto-insurance")
    finally:
        async with clf.uow() as uow:
            await uow.session.execute(update(ClassifierModel).values(active=False))
            await uow.session.execute(
                update(ClassifierModel)
                .where(ClassifierModel.version == trained["version"])
                .values(active=True)
            )
            await uow.commit()
    back = await _preview(clf, "房屋保險包括水災嗎？")
    assert (back["classifier_version"], back["domain"]) == (trained["version"], "home-insurance")


def new_ticket(subject: str, description: str, **overrides: Any) -> EventEnvelope[Any]:
    ticket_id = uuid.uuid4()
    payload = TicketCreated(
        ticket_id=ticket_id,
        number="HD-000002",
        channel="web",
        kind=overrides.pop("kind", "question"),
        subject=subject,
        description=description,
        priority=Priority.NORMAL,
        customer_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        **overrides,
    )
    return EventEnvelope.wrap(payload, source="/helpdesk/intake", subject=str(ticket_id))


async def _consume(harness: ServiceHarness, event: EventEnvelope[Any]) -> bool:
    consumer = harness.runtime.consumer
    assert consumer is not None
    return await consumer.handle_event(event, topic="helpdesk.intake")


async def _events(harness: ServiceHarness, ticket_id: uuid.UUID) -> list[dict[str, Any]]:
    """The ticket's outbox payloads in publication order: classified, then assigned."""
    async with harness.uow() as uow:
        rows = (
            await uow.session.execute(
                select(OUTBOX.c.event_type, OUTBOX.c.payload)
                .where(OUTBOX.c.key == str(ticket_id))
                .order_by(OUTBOX.c.seq)
            )
        ).all()
    assert [r.event_type for r in rows] == [
        TicketClassified.cloudevent_type(),
        TicketAssigned.cloudevent_type(),
    ]
    return [r.payload["data"] for r in rows]


async def _preview(harness: ServiceHarness, text: str) -> dict[str, Any]:
    response = await harness.client.post("/v1/routing/classify", json={"text": text}, headers=AGENT)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _example_count(harness: ServiceHarness) -> int:
    async with harness.uow() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(TrainingExample)) or 0)

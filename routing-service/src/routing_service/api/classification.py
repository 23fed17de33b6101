"""Classification: training examples, retraining, the active model, a decision preview, routing rules.

Training examples arrive as JSON lines (one `{"text", "domain"}` object per line), the format
labelled data is usually exported in; the body is read with a size cap before anything is parsed,
and a bad line is reported by its number so the sender can fix the file and send it again
(nothing of a rejected file is stored; re-sending a file stores nothing twice).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from helpdesk_shared.chassis.app import UoW
from helpdesk_shared.chassis.auth import Principal, require_roles
from helpdesk_shared.chassis.problems import (
    DomainError,
    Forbidden,
    InvalidInput,
    Unauthorized,
    problem_responses,
)
from helpdesk_shared.contracts.common import QUESTION_TEXT
from helpdesk_shared.contracts.enums import Role
from routing_service import classification
from routing_service.classification import (
    ClassifierNotTrained,
    ClassifierUnreadable,
    InvalidRule,
    NoActiveClassifier,
    NotEnoughExamples,
    RuleConflict,
    RuleNotFound,
    TrainingInProgress,
)
from routing_service.schemas import (
    ClassifierOut,
    ClassifyRequest,
    ClassifyResponse,
    Domain,
    ImportResult,
    RuleCreate,
    RuleOut,
)

router = APIRouter(prefix="/v1/routing", tags=["classification"])
EXAMPLES_PATH = "/v1/routing/training-examples"  # a bulk import: its own body limit

Manager = Annotated[Principal, Depends(require_roles(Role.LEAD))]
Viewer = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.REVIEWER, Role.LEAD))]
_AUTH = (Unauthorized, Forbidden)

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_LINES = 100_000
MAX_REPORTED_ERRORS = 20
IN_FORCE = (
    "New tickets get the change at once on the replica that made it and at most "
    "`ROUTING_CONFIG_CACHE_SECONDS` (2 s by default) later on every other routing replica, which "
    "keep the rules and the active classifier version in memory for that long."
)
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/json-lines", "text/plain"}
)


class PayloadTooLarge(DomainError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(DomainError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidExamples(InvalidInput):
    slug, title = "invalid-training-examples", "Invalid training examples"


class ExampleLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=QUESTION_TEXT)]
    domain: Domain


_EXAMPLE_LINES = (
    '{"text": "保單理賠要多久？", "domain": "life-insurance"}\n'
    '{"text": "車險怎麼續保", "domain": "auto-insurance"}\n'
)
_NDJSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"One JSON object per line (at most {MAX_LINES:,} lines and 20 MB)",
        "content": {
            media: {"schema": {"type": "string"}, "example": _EXAMPLE_LINES}
            for media in ("application/x-ndjson", "text/plain")
        },
    }
}


@router.post(
    EXAMPLES_PATH.removeprefix(router.prefix),
    response_model=ImportResult,
    openapi_extra=_NDJSON_BODY,
    responses=problem_responses(*_AUTH, InvalidExamples, PayloadTooLarge, UnsupportedMediaType),
)
async def import_training_examples(request: Request, uow: UoW, _: Manager) -> ImportResult:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in NDJSON_TYPES:
        raise UnsupportedMediaType(f"Send JSON lines as one of: {', '.join(sorted(NDJSON_TYPES))}")
    # At most MAX_BODY_BYTES: the chassis' body limit for this route (larger_bodies) refuses more.
    examples = parse_examples(await request.body())
    return await classification.import_examples(uow, examples)


@router.post(
    "/classifier/retrain",
    status_code=status.HTTP_201_CREATED,
    response_model=ClassifierOut,
    responses=problem_responses(*_AUTH, NotEnoughExamples, TrainingInProgress),
    description=IN_FORCE,
)
async def retrain(uow: UoW, principal: Manager) -> ClassifierOut:
    return await classification.retrain(uow, trained_by=principal.subject)


@router.get(
    "/classifier", response_model=ClassifierOut, responses=problem_responses(*_AUTH, NoActiveClassifier)
)
async def active_classifier(uow: UoW, _: Viewer) -> ClassifierOut:
    return await classification.active_classifier(uow)


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=problem_responses(*_AUTH, ClassifierNotTrained, ClassifierUnreadable),
)
async def classify(body: ClassifyRequest, uow: UoW, _: Viewer) -> ClassifyResponse:
    return await classification.preview(uow, body)


@router.post(
    "/rules",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleOut,
    responses=problem_responses(*_AUTH, InvalidRule, RuleConflict),
    description=IN_FORCE,
)
async def create_rule(body: RuleCreate, uow: UoW, principal: Manager) -> RuleOut:
    return await classification.create_rule(uow, body, created_by=principal.subject)


@router.get("/rules", response_model=list[RuleOut], responses=problem_responses(*_AUTH))
async def list_rules(uow: UoW, _: Viewer) -> list[RuleOut]:
    return await classification.list_rules(uow)


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(*_AUTH, RuleNotFound),
    description=IN_FORCE,
)
async def delete_rule(rule_id: uuid.UUID, uow: UoW, _: Manager) -> Response:
    await classification.delete_rule(uow, rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def parse_examples(body: bytes) -> list[tuple[str, str]]:
    """`(text, domain)` pairs from JSON lines; blank lines are skipped, any bad line rejects the body."""
    lines = body.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if sum(1 for line in lines if line.strip()) > MAX_LINES:
        raise PayloadTooLarge(f"At most {MAX_LINES:,} lines per request; split the file")
    examples: list[tuple[str, str]] = []
    errors: list[dict[str, str]] = []
    first_bad: int | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = ExampleLine.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            errors.append({"field": f"line {number}", "message": f"Not JSON: {exc}", "type": "json_invalid"})
        except ValidationError as exc:
            errors.extend(
                {
                    "field": ".".join([f"line {number}", *(str(part) for part in err["loc"])]),
                    "message": err["msg"],
                    "type": err["type"],
                }
                for err in exc.errors()
            )
        else:
            examples.append((line.text, line.domain))
            continue
        first_bad = first_bad or number
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        first = errors[0]
        raise InvalidExamples(f"{first['field']}: {first['message']}", errors=errors, line=first_bad)
    if not examples:
        raise InvalidExamples("The body holds no examples")
    return examples

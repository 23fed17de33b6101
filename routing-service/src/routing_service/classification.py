"""Classification use cases: training examples, model versions, routing rules, classifying tickets.

Models live in the database so that every replica classifies alike: a retrain stores a new
version and activates it in one transaction. Each process keeps the model it loaded, keyed by
version. Which version is active, and the enabled rules, come from an in-memory snapshot
(:data:`CLASSIFIER_CONFIG`) reloaded every ``ROUTING_CONFIG_CACHE_SECONDS`` (2 s): a retrain or a
rule edit takes effect at once on the replica that made it and within that bound on every other
one (:mod:`routing_service.config_cache`). The preview (`POST /v1/routing/classify`) reads both
from the database, so it always shows what is saved.

Training takes seconds of CPU: it runs in a worker thread, outside any database transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk_shared import text as shared_text
from helpdesk_shared.chassis.app import ServiceRuntime
from helpdesk_shared.chassis.logging import get_logger
from helpdesk_shared.chassis.problems import Conflict, InvalidInput, NotFound
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.common import MAX_LIST
from helpdesk_shared.contracts.enums import Priority
from helpdesk_shared.contracts.intake import TicketCreated
from helpdesk_shared.contracts.routing import DomainScore, TicketClassified
from routing_service import config_cache
from routing_service.config_cache import ConfigCache
from routing_service.domain.classifier import (
    FORMAT_VERSION,
    ModelFormatError,
    NotEnoughData,
    Prediction,
    TrainedModel,
    train,
)
from routing_service.domain.difficulty import (
    Decision,
    InvalidPattern,
    Rule,
    TicketFacts,
    apply_rules,
    decide,
    validate_pattern,
)
from routing_service.models import ClassifierModel, RoutingRule, TrainingExample
from routing_service.schemas import (
    ClassifierOut,
    ClassifyRequest,
    ClassifyResponse,
    DomainScoreOut,
    ImportResult,
    RuleCreate,
    RuleOut,
)

if TYPE_CHECKING:
    from routing_service.sla import StartedTimers

log = get_logger(__name__)

INSERT_BATCH = 5_000
MAX_RULES = 1_000
TOP_DOMAINS = 5
_RETRAIN_LOCK_KEY = 0x524F5554  # pg advisory lock serialising activations across replicas

CLASSIFICATIONS = Counter(
    "helpdesk_routing_classifications_total",
    "New tickets classified, by what decided the domain and whether they were difficult",
    ["source", "difficult"],
)


class ClassifierNotTrained(Conflict):
    slug, title = "classifier-not-trained", "No classifier has been trained yet"


class NoActiveClassifier(NotFound):
    slug, title = "classifier-not-trained", "No classifier has been trained yet"


class ClassifierUnreadable(Conflict):
    slug, title = "classifier-unreadable", "The active classifier cannot be read; retrain it"


class NotEnoughExamples(Conflict):
    slug, title = "not-enough-examples", "Not enough training examples"


class TrainingInProgress(Conflict):
    slug, title = "training-in-progress", "A retrain is already running on this replica"


class RuleNotFound(NotFound):
    slug, title = "rule-not-found", "Routing rule not found"


class InvalidRule(InvalidInput):
    slug, title = "invalid-rule", "Invalid routing rule"


class RuleConflict(Conflict):
    slug, title = "rule-conflict", "Routing rule conflicts with existing rules"


class ModelCache:
    """The loaded active model of each database this process talks to, keyed by version."""

    def __init__(self) -> None:
        self._models: dict[str, tuple[int, TrainedModel]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def active(self, session: AsyncSession) -> tuple[int, TrainedModel] | None:
        """The active model as the database has it now (raises `ModelFormatError`)."""
        version = await session.scalar(select(ClassifierModel.version).where(ClassifierModel.active))
        if version is None:
            return None
        model = await self.model(session, version)
        return (version, model) if model is not None else None

    async def model(self, session: AsyncSession, version: int) -> TrainedModel | None:
        """Model ``version``, loaded from the database on a version change (raises `ModelFormatError`)."""
        key = _database_key(session)
        cached = self._models.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        async with self._locks.setdefault(key, asyncio.Lock()):  # one load per version, not one per ticket
            cached = self._models.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            blob = await session.scalar(
                select(ClassifierModel.blob).where(ClassifierModel.version == version)
            )
            if blob is None:
                return None
            model = await asyncio.to_thread(TrainedModel.load, blob)
            self._models[key] = (version, model)
            log.info("classifier_loaded", version=version, classes=len(model.classes))
            return model

    def put(self, session: AsyncSession, version: int, model: TrainedModel) -> None:
        self._models[_database_key(session)] = (version, model)


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """The active classifier version and the enabled rules in evaluation order, as of one moment."""

    version: int | None
    rules: tuple[Rule, ...]


async def _load_classifier_config(session: AsyncSession) -> ClassifierConfig:
    version = await session.scalar(select(ClassifierModel.version).where(ClassifierModel.active))
    return ClassifierConfig(version=version, rules=await _enabled_rules(session))


MODELS = ModelCache()
CLASSIFIER_CONFIG: ConfigCache[ClassifierConfig] = ConfigCache("classifier", _load_classifier_config)
_training = asyncio.Lock()


def _database_key(session: AsyncSession) -> str:
    # In-process test stacks run several routing databases side by side; never mix their models.
    return config_cache.database_key(session)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def import_examples(
    uow: UnitOfWork,
    examples: Sequence[tuple[str, str]],
    *,
    source: Literal["import", "resolved_ticket"] = "import",
) -> ImportResult:
    """Store `(text, domain)` pairs; ones already stored (or repeated in the batch) count as duplicates."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for text, domain in examples:
        digest = text_hash(text)
        rows[(digest, domain)] = {"text": text, "text_hash": digest, "domain": domain, "source": source}
    values = list(rows.values())
    imported = 0
    for start in range(0, len(values), INSERT_BATCH):
        result = await uow.session.execute(
            pg_insert(TrainingExample)
            .values(values[start : start + INSERT_BATCH])
            .on_conflict_do_nothing(index_elements=["text_hash", "domain"])
            .returning(TrainingExample.id)
        )
        imported += len(result.all())
    await uow.commit()
    return ImportResult(imported=imported, duplicates=len(examples) - imported)


async def retrain(uow: UnitOfWork, *, trained_by: str | None) -> ClassifierOut:
    """Train on every stored example in a worker thread, store the model, make it the active one."""
    if _training.locked():
        raise TrainingInProgress("Wait for the running retrain to finish")
    async with _training:
        session = uow.session
        rows = (
            await session.execute(
                select(TrainingExample.text, TrainingExample.domain).order_by(TrainingExample.id)
            )
        ).all()
        await session.rollback()  # end the read: no transaction or connection is held while training
        try:
            model = await asyncio.to_thread(train, [(r.text, r.domain) for r in rows])
        except NotEnoughData as exc:
            raise NotEnoughExamples(str(exc)) from exc
        blob = await asyncio.to_thread(model.serialize)
        info = model.info
        await session.execute(select(func.pg_advisory_xact_lock(_RETRAIN_LOCK_KEY)))
        await session.execute(update(ClassifierModel).where(ClassifierModel.active).values(active=False))
        version = await session.scalar(
            pg_insert(ClassifierModel)
            .values(
                format=FORMAT_VERSION,
                trained_at=info.trained_at,
                trained_by=trained_by[:100] if trained_by else None,
                n_examples=info.n_examples,
                cv_accuracy=info.cv_accuracy,
                classes=list(info.classes),
                blob=blob,
                active=True,
            )
            .returning(ClassifierModel.version)
        )
        assert version is not None
        await uow.commit()
    MODELS.put(session, version, model)
    CLASSIFIER_CONFIG.invalidate(session)
    log.info("classifier_trained", version=version, n_examples=info.n_examples, cv_accuracy=info.cv_accuracy)
    return ClassifierOut(
        version=version,
        n_examples=info.n_examples,
        classes=list(info.classes),
        trained_at=info.trained_at,
        cv_accuracy=info.cv_accuracy,
    )


async def active_classifier(uow: UnitOfWork) -> ClassifierOut:
    row = (
        await uow.session.execute(
            select(
                ClassifierModel.version,
                ClassifierModel.n_examples,
                ClassifierModel.classes,
                ClassifierModel.trained_at,
                ClassifierModel.cv_accuracy,
            ).where(ClassifierModel.active)
        )
    ).first()
    if row is None:
        raise NoActiveClassifier("Import training examples and retrain the classifier")
    return ClassifierOut.model_validate(row._asdict())


async def create_rule(uow: UnitOfWork, body: RuleCreate, *, created_by: str | None) -> RuleOut:
    if body.domain is None and body.category is None and not body.urgent:
        raise InvalidRule("A rule must set a domain, a category or urgent")
    try:
        validate_pattern(body.pattern, is_regex=body.is_regex)
    except InvalidPattern as exc:
        raise InvalidRule(str(exc)) from exc
    session = uow.session
    if await session.scalar(select(RoutingRule.id).where(RoutingRule.name == body.name)) is not None:
        raise RuleConflict(f"A rule named {body.name!r} already exists")
    if (await session.scalar(select(func.count()).select_from(RoutingRule)) or 0) >= MAX_RULES:
        raise RuleConflict(f"There are already {MAX_RULES} rules; delete some first")
    rule = RoutingRule(
        id=uuid.uuid4(),
        created_by=created_by[:100] if created_by else None,
        created_at=datetime.now(UTC),
        **body.model_dump(),
    )
    session.add(rule)
    await session.flush()
    out = RuleOut.model_validate(rule)
    await uow.commit()
    CLASSIFIER_CONFIG.invalidate(session)
    return out


async def list_rules(uow: UnitOfWork) -> list[RuleOut]:
    """Every rule, in evaluation order (at most `MAX_RULES`, so no pagination)."""
    rows = (await uow.session.execute(_rules_in_order())).scalars().all()
    return [RuleOut.model_validate(r) for r in rows]


async def delete_rule(uow: UnitOfWork, rule_id: uuid.UUID) -> None:
    deleted = await uow.session.execute(
        delete(RoutingRule).where(RoutingRule.id == rule_id).returning(RoutingRule.id)
    )
    if deleted.first() is None:
        raise RuleNotFound(f"No routing rule with id {rule_id}")
    await uow.commit()
    CLASSIFIER_CONFIG.invalidate(uow.session)


async def preview(uow: UnitOfWork, body: ClassifyRequest) -> ClassifyResponse:
    """The decision routing would make for this text (and these ticket facts), without storing anything."""
    try:
        active = await MODELS.active(uow.session)
    except ModelFormatError as exc:
        raise ClassifierUnreadable(str(exc)) from exc
    if active is None:
        raise ClassifierNotTrained("Import training examples and retrain the classifier first")
    facts = TicketFacts(
        kind=body.kind, priority=body.priority, customer_vip=body.customer_vip, reopen_count=body.reopen_count
    )
    decision = await _decide(uow.session, body.text, facts, active[1])
    return ClassifyResponse(
        domain=decision.domain,
        confidence=decision.confidence,
        domains=[DomainScoreOut(domain=d, score=s) for d, s in decision.domains],
        category=decision.category,
        urgent=decision.urgent,
        difficult=decision.difficult,
        reasons=decision.reasons,
        source=decision.source,
        classifier_version=active[0] if decision.source == "model" else None,
    )


@dataclass(frozen=True, slots=True)
class Classifier:
    """What new tickets are classified with right now: the rules and the loaded active model."""

    config: ClassifierConfig
    model: TrainedModel | None

    def decide(self, ticket: TicketCreated) -> tuple[Decision, int | None]:
        """A new ticket's domain, urgency and difficulty, and the model version if the model decided."""
        return self.decide_many([ticket])[0]

    def decide_many(self, tickets: Sequence[TicketCreated]) -> list[tuple[Decision, int | None]]:
        """`decide` for each ticket of a run; the model scores the texts no rule decided together."""
        texts = [ticket_text(t) for t in tickets]
        # Folded once for the rules and the model alike.
        normalised = [shared_text.normalise(text) for text in texts]
        outcomes = [
            apply_rules(self.config.rules, text, normalised=folded)
            for text, folded in zip(texts, normalised, strict=True)
        ]
        predictions: list[Prediction | None] = [None] * len(tickets)
        if self.model is not None:
            undecided = [i for i, outcome in enumerate(outcomes) if outcome.domain is None]
            scored = self.model.predict_normalised([normalised[i] for i in undecided], top=TOP_DOMAINS)
            for i, scores in zip(undecided, scored, strict=True):
                predictions[i] = scores
        results = []
        for ticket, outcome, prediction in zip(tickets, outcomes, predictions, strict=True):
            facts = TicketFacts(
                kind=ticket.kind,
                priority=ticket.priority,
                urgent_detected=ticket.urgent_detected,
                customer_vip=ticket.customer_vip,
                category_hint=ticket.category_hint,
            )
            decision = decide(rules=outcome, prediction=prediction, facts=facts)
            CLASSIFICATIONS.labels(decision.source, str(decision.difficult).lower()).inc()
            model_decided = self.model is not None and decision.source == "model"
            results.append((decision, self.config.version if model_decided else None))
        return results


async def current_classifier(session: AsyncSession) -> Classifier:
    """The rules and the active model from the configuration snapshot: no query at all unless the
    snapshot is due for a reload or the active version changed; an unreadable model degrades to
    rules only."""
    config = await CLASSIFIER_CONFIG.get(session)
    model: TrainedModel | None = None
    if config.version is not None:
        try:
            model = await MODELS.model(session, config.version)
        except ModelFormatError as exc:
            log.error("classifier_unreadable", error=str(exc))
    return Classifier(config, model)


async def classify_ticket(session: AsyncSession, ticket: TicketCreated) -> tuple[Decision, int | None]:
    """Decide a new ticket's domain, urgency and difficulty (see `Classifier.decide`)."""
    return (await current_classifier(session)).decide(ticket)


def ticket_text(ticket: TicketCreated) -> str:
    """What a ticket is classified on (and, once resolved, learnt from)."""
    return f"{ticket.subject}\n{ticket.description}"


def announces_classification(decision: Decision, clocks_started: bool) -> bool:
    """Whether a new ticket's `ticket.classified` is published: when routing learnt something
    intake did not know (a domain, category, urgency or difficulty), or started its SLA clocks —
    the event is the only one carrying their due times, which intake shows on the ticket."""
    return decision.informative or clocks_started


def classified_event(
    ticket: TicketCreated,
    decision: Decision,
    version: int | None,
    now: datetime,
    timers: StartedTimers | None = None,
) -> TicketClassified:
    """The `ticket.classified` payload, with the SLA policy and due times matched on this decision."""
    return TicketClassified(
        ticket_id=ticket.ticket_id,
        domain=decision.domain,
        category=decision.category,
        confidence=decision.confidence,
        domains=[DomainScore(domain=d, score=min(max(s, 0.0), 1.0)) for d, s in decision.domains[:MAX_LIST]],
        priority=Priority.URGENT if decision.urgent else ticket.priority,
        urgent=decision.urgent,
        difficult=decision.difficult,
        reasons=decision.reasons[:MAX_LIST],
        classifier_version=str(version) if version is not None else None,
        sla_policy_id=timers.policy_id if timers else None,
        first_response_due_at=timers.first_response_due_at if timers else None,
        resolution_due_at=timers.resolution_due_at if timers else None,
        classified_at=now,
    )


async def warm_up(runtime: ServiceRuntime) -> None:
    """Background start-up task: load jieba's dictionary and the active model before the first ticket."""
    ttl = getattr(runtime.settings, "config_cache_seconds", None)
    if ttl is not None:
        config_cache.set_ttl(config_cache.engine_key(runtime.engine), float(ttl))
    await asyncio.to_thread(shared_text.warm_up)
    try:
        async with runtime.uow() as uow:
            await MODELS.active(uow.session)
    except Exception as exc:  # the first ticket will retry; start-up must not fail over a warm-up
        log.warning("classifier_warm_up_failed", error=repr(exc))


async def _decide(
    session: AsyncSession, text: str, facts: TicketFacts, model: TrainedModel | None
) -> Decision:
    return _decide_with(await _enabled_rules(session), text, facts, model)


def _decide_with(
    rules: Sequence[Rule], text: str, facts: TicketFacts, model: TrainedModel | None
) -> Decision:
    outcome = apply_rules(rules, text)
    prediction = (
        model.predict(text, top=TOP_DOMAINS) if model is not None and outcome.domain is None else None
    )
    return decide(rules=outcome, prediction=prediction, facts=facts)


async def _enabled_rules(session: AsyncSession) -> tuple[Rule, ...]:
    rows = (await session.execute(_rules_in_order().where(RoutingRule.enabled))).scalars().all()
    return tuple(
        Rule(
            name=r.name,
            pattern=r.pattern,
            is_regex=r.is_regex,
            domain=r.domain,
            category=r.category,
            urgent=r.urgent,
        )
        for r in rows
    )


def _rules_in_order() -> Select[RoutingRule]:
    return select(RoutingRule).order_by(RoutingRule.priority.desc(), RoutingRule.created_at, RoutingRule.id)

"""KB use cases."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.pagination import (
    PageParams,
    build_page,
    keyset_page,
)
from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.intake import CustomerErased
from helpdesk_shared.contracts.review import AnswerApproved
from kb_service.models import FaqCandidate


async def add_faq_candidate(uow: UnitOfWork, event: AnswerApproved) -> None:
    """The latest approved version of an answer is its FAQ candidate."""
    values = {
        "answer_id": event.answer_id,
        "answer_version": event.answer_version,
        "ticket_id": event.ticket_id,
        "domain": event.domain,
        "question": event.question,
        "body": event.body,
        "status": "new",
        "approved_at": event.approved_at,
    }
    insert = pg_insert(FaqCandidate).values(**values)
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=[FaqCandidate.answer_id],
            set_={k: insert.excluded[k] for k in ("answer_version", "question", "body", "approved_at")},
            where=FaqCandidate.answer_version < insert.excluded.answer_version,
        )
    )
    await uow.commit()


async def forget_erased_customer(uow: UnitOfWork, event: CustomerErased) -> None:
    """An erased customer's question must not survive as a candidate: those of their tickets go.

    Whole rows, not just the question: the approved answer addresses the customer too (by name,
    often), and a candidate without its question is no use to an editor.
    """
    await uow.session.execute(delete(FaqCandidate).where(FaqCandidate.ticket_id.in_(event.ticket_ids)))
    await uow.commit()


async def faq_candidates(uow: UnitOfWork, params: PageParams) -> tuple[list[FaqCandidate], str | None]:
    """A page of candidates, newest first; the answer id orders those promoted in one transaction."""
    stmt = keyset_page(
        select(FaqCandidate),
        created_col=FaqCandidate.created_at,
        id_col=FaqCandidate.answer_id,
        params=params,
    )
    rows = (await uow.session.execute(stmt)).scalars().all()
    return build_page(list(rows), params, key=lambda c: (c.created_at, c.answer_id))

"""Resolved tickets become training examples of their final domain (the classifier learns from
what specialists confirmed), and routing forgets the customer's text at the latest by then.

Routing keeps a ticket's classification text (`RoutedTicket.text`) from routing until
resolution or closing and for nothing else: customers type personal data into questions, so
the text is never logged and is dropped as soon as it has served. Examples are deduplicated by
(text hash, domain) like imported ones; the next retrain picks them up. An example remembers
its ticket, so that the customer's erasure (`customer.erased`) takes it out again.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from helpdesk_shared.chassis.uow import UnitOfWork
from helpdesk_shared.contracts.intake import CustomerErased, TicketClosed, TicketResolved
from routing_service.classification import text_hash
from routing_service.models import RoutedTicket, TrainingExample
from routing_service.repository import RoutingRepository


async def learn_from_resolution(uow: UnitOfWork, event: TicketResolved) -> None:
    """Store the text under the final domain (else the classified one), then drop it. Does not commit."""
    routed = await RoutingRepository(uow.session).routed(event.ticket_id, lock=True)
    if routed is None or routed.text is None:
        return  # routed before texts were kept, or already resolved once
    domain = event.domain or routed.domain
    if domain is not None:
        await uow.session.execute(
            pg_insert(TrainingExample)
            .values(
                text=routed.text,
                text_hash=text_hash(routed.text),
                domain=domain,
                source="resolved_ticket",
                ticket_id=event.ticket_id,
            )
            # The same text from another ticket leaves the row naming the first ticket only: the
            # erasure of that one deletes it, that of this one does not.
            .on_conflict_do_nothing(index_elements=["text_hash", "domain"])
        )
    routed.text = None
    await uow.flush()


async def forget_text(uow: UnitOfWork, event: TicketClosed) -> None:
    """A ticket closed without a resolution teaches nothing; its text goes. Does not commit."""
    routed = await RoutingRepository(uow.session).routed(event.ticket_id, lock=True)
    if routed is not None and routed.text is not None:
        routed.text = None
        await uow.flush()


async def forget_erased(uow: UnitOfWork, event: CustomerErased) -> None:
    """Drop an erased customer's text: that of their open tickets, and the examples their
    resolved tickets became. Does not commit.

    Examples stored before examples kept their ticket cannot be found (see migration 0011). An
    example whose text another ticket also had names the ticket that stored it first: deleting it
    with that ticket's erasure is right even though the other ticket had the same words — and
    when that other ticket is resolved later it may store the text again, under its own id; that
    is acceptable, the words are then the other customer's too.
    """
    # Routed rows first: a resolution of one of these tickets being handled now holds its row, and
    # erasure waits for it to commit; the DELETE after it then sees the example it stored.
    await uow.session.execute(
        update(RoutedTicket)
        .where(RoutedTicket.ticket_id.in_(event.ticket_ids), RoutedTicket.text.is_not(None))
        .values(text=None)
    )
    await uow.session.execute(delete(TrainingExample).where(TrainingExample.ticket_id.in_(event.ticket_ids)))

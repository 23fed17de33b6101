"""The ticket lifecycle as an explicit state machine.

new → assigned → in_progress → awaiting_review → answered → resolved → closed,
with `reopened` when the customer writes again after an answer or resolution.

The table says which moves exist at all; `LEAD_ONLY` says which of them staff may make by hand
only as a lead (or admin).
"""

from __future__ import annotations

from helpdesk_shared.contracts.enums import TicketStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.NEW: frozenset({S.ASSIGNED, S.CLOSED}),
    # Back to new: routing returned the untouched ticket to the queue (its agent went offline).
    S.ASSIGNED: frozenset({S.NEW, S.IN_PROGRESS, S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
    S.IN_PROGRESS: frozenset({S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
    # Review's outcomes move it (rejected → in_progress, delivered → answered); resolving or
    # closing it by hand is for leads only (`LEAD_ONLY`).
    S.AWAITING_REVIEW: frozenset({S.IN_PROGRESS, S.ANSWERED, S.RESOLVED, S.CLOSED}),
    S.ANSWERED: frozenset({S.ANSWERED, S.RESOLVED, S.REOPENED, S.CLOSED, S.AWAITING_REVIEW}),
    S.RESOLVED: frozenset({S.CLOSED, S.REOPENED}),
    S.CLOSED: frozenset(),  # final: a later message starts a new ticket
    S.REOPENED: frozenset({S.ASSIGNED, S.IN_PROGRESS, S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
}

# A customer message in these states reopens the ticket.
REOPENED_BY_CUSTOMER = frozenset({S.ANSWERED, S.RESOLVED})

# Moves staff may make by hand only as a lead (or admin). While an answer is in review its author
# waits for the outcome; a lead may still take the ticket out of review — a spam or duplicate
# noticed during review, a review whose outcome was lost — by resolving or closing it.
LEAD_ONLY: frozenset[tuple[S, S]] = frozenset(
    {(S.AWAITING_REVIEW, S.RESOLVED), (S.AWAITING_REVIEW, S.CLOSED)}
)

# States in which a (re)assignment moves the ticket to `assigned`; in the
# others the assignee changes but the work already under way keeps its state.
_AWAITING_ASSIGNEE = frozenset({S.NEW, S.REOPENED})


class IllegalTransition(ValueError):
    def __init__(self, current: S, target: S) -> None:
        super().__init__(f"A ticket in status '{current}' cannot become '{target}'")
        self.current = current
        self.target = target


def can_transition(current: S, target: S) -> bool:
    return target in TRANSITIONS[current]


def needs_lead(current: S, target: S) -> bool:
    """Whether staff may make this move by hand only as a lead (or admin)."""
    return (current, target) in LEAD_ONLY


def transition(current: S, target: S) -> S:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def status_after_assignment(current: S) -> S:
    return S.ASSIGNED if current in _AWAITING_ASSIGNEE else current


# An answer the customer has received makes the ticket answered from any open state. Intake's
# mirror of the status may lag: routing's and review's events come on different topics, so the
# delivery can complete while intake still shows the ticket new or assigned (its
# `answer.submitted` skipped or not yet applied). Resolved and closed tickets stay as they are, and
# so does a reopened one: it waits for an answer to the customer's newer message, not to an older
# one's delivered late.
_ANSWERED_BY_DELIVERY = frozenset({S.NEW, S.ASSIGNED, S.IN_PROGRESS, S.AWAITING_REVIEW})
# States a delivery leaves `reopened` when the customer wrote after the delivered answers were
# written (a follow-up sent while the answer was in review): the answer never addressed it.
_REOPENED_BY_DELIVERY = _ANSWERED_BY_DELIVERY | {S.ANSWERED, S.REOPENED}


def status_after_delivery(current: S, *, unanswered_follow_up: bool = False) -> S:
    """The status once an answer was delivered: `answered` from any open state (`reopened` when the
    customer's newest message is still unanswered), else unchanged.

    Only the delivery moves a ticket this way (never a request or another event): the general
    `TRANSITIONS` table stays as strict as it is.
    """
    if unanswered_follow_up and current in _REOPENED_BY_DELIVERY:
        return S.REOPENED
    return S.ANSWERED if current in _ANSWERED_BY_DELIVERY else current

"""The ticket lifecycle as an explicit state machine.

new → assigned → in_progress → awaiting_review → answered → resolved → closed,
with `reopened` when the customer writes again after an answer or resolution.
"""

from __future__ import annotations

from helpdesk_shared.contracts.enums import TicketStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.NEW: frozenset({S.ASSIGNED, S.CLOSED}),
    # Back to new: routing returned the untouched ticket to the queue (its agent went offline).
    S.ASSIGNED: frozenset({S.NEW, S.IN_PROGRESS, S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
    S.IN_PROGRESS: frozenset({S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
    S.AWAITING_REVIEW: frozenset({S.IN_PROGRESS, S.ANSWERED}),
    S.ANSWERED: frozenset({S.ANSWERED, S.RESOLVED, S.REOPENED, S.CLOSED, S.AWAITING_REVIEW}),
    S.RESOLVED: frozenset({S.CLOSED, S.REOPENED}),
    S.CLOSED: frozenset(),  # final: a later message starts a new ticket
    S.REOPENED: frozenset({S.ASSIGNED, S.IN_PROGRESS, S.AWAITING_REVIEW, S.ANSWERED, S.RESOLVED, S.CLOSED}),
}

# A customer message in these states reopens the ticket.
REOPENED_BY_CUSTOMER = frozenset({S.ANSWERED, S.RESOLVED})

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


def transition(current: S, target: S) -> S:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def status_after_assignment(current: S) -> S:
    return S.ASSIGNED if current in _AWAITING_ASSIGNEE else current

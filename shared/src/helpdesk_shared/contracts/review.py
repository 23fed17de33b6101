"""Events published by the review service (topic `helpdesk.review`, key = ticket id).

Answers are keyed by their ticket so that a ticket's answer events stay
ordered; `answer_version` counts revisions (every version is kept).
"""

from __future__ import annotations

from typing import ClassVar, Self
from uuid import UUID

from pydantic import AwareDatetime, Field, model_validator

from .common import ANSWER_TEXT, COMMENT_TEXT, MAX_LIST, QUESTION_TEXT, DomainName
from .enums import AnswerFormat
from .envelope import ContractModel, EventPayload

PRODUCER = "review"


def _not_the_author(author_id: UUID, reviewer_id: UUID | None) -> None:
    """回答審核: an answer goes to a reviewer who is not its author. Checked on the model, so that
    neither review can publish such an event nor another service accept one (intake would deliver
    it to the customer)."""
    if reviewer_id is not None and reviewer_id == author_id:
        raise ValueError(
            f"the reviewer {reviewer_id} is the answer's author: an answer is never reviewed by its author"
        )


class ReviewChecklist(ContractModel):
    """The reviewer's checklist (回答審核): every item must hold for an approval."""

    accurate: bool = Field(description="The answer is factually accurate")
    complete: bool = Field(description="The answer is complete")
    compliant: bool = Field(description="The answer conforms to policy and regulations")
    meets_need: bool = Field(description="The answer meets the customer's actual need")

    def passed(self) -> bool:
        """True when every item holds."""
        return self.accurate and self.complete and self.compliant and self.meets_need


class AnswerSubmitted(EventPayload):
    """An agent submitted an answer version for review."""

    event_type: ClassVar[str] = "answer.submitted"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    answer_id: UUID = Field(description="Answer id (stable across versions)")
    answer_version: int = Field(ge=1, description="Submitted version, 1 for the first draft")
    author_id: UUID = Field(description="Agent who wrote it")
    reviewer_id: UUID | None = Field(default=None, description="Reviewer assigned (never the author)")
    domain: DomainName | None = Field(default=None, description="Domain of the ticket")
    kb_article_ids: list[UUID] = Field(
        default_factory=list, max_length=MAX_LIST, description="Knowledge-base articles the answer cites"
    )
    submitted_at: AwareDatetime = Field(description="When it was submitted")

    @model_validator(mode="after")
    def _reviewer_is_not_the_author(self) -> Self:
        _not_the_author(self.author_id, self.reviewer_id)
        return self


class AnswerApproved(EventPayload):
    """A reviewer approved an answer version; kb may turn it into an FAQ draft."""

    event_type: ClassVar[str] = "answer.approved"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    answer_id: UUID = Field(description="Answer id")
    answer_version: int = Field(ge=1, description="Approved version")
    author_id: UUID = Field(description="Agent who wrote it")
    reviewer_id: UUID = Field(description="Reviewer who approved it")
    checklist: ReviewChecklist = Field(description="The reviewer's checklist")
    comment: str | None = Field(default=None, max_length=COMMENT_TEXT, description="Reviewer's comment")
    domain: DomainName | None = Field(default=None, description="Domain of the ticket")
    question: str | None = Field(
        default=None, max_length=QUESTION_TEXT, description="The ticket's question text (FAQ candidate)"
    )
    body: str = Field(max_length=ANSWER_TEXT, description="The approved answer text (FAQ candidate)")
    body_format: AnswerFormat = Field(default=AnswerFormat.PLAIN, description="Markup of `body`")
    kb_article_ids: list[UUID] = Field(
        default_factory=list, max_length=MAX_LIST, description="Knowledge-base articles the answer cites"
    )
    approved_at: AwareDatetime = Field(description="When it was approved")

    @model_validator(mode="after")
    def _approved_by_another_on_a_passed_checklist(self) -> Self:
        _not_the_author(self.author_id, self.reviewer_id)
        if not self.checklist.passed():
            failed = ", ".join(name for name, held in self.checklist if not held)
            raise ValueError(f"an approval needs every checklist item to hold; failed: {failed}")
        return self


class AnswerRejected(EventPayload):
    """A reviewer rejected an answer version; the author revises and resubmits."""

    event_type: ClassVar[str] = "answer.rejected"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    answer_id: UUID = Field(description="Answer id")
    answer_version: int = Field(ge=1, description="Rejected version")
    author_id: UUID = Field(description="Agent who wrote it")
    reviewer_id: UUID = Field(description="Reviewer who rejected it")
    checklist: ReviewChecklist = Field(description="The reviewer's checklist (what failed)")
    comment: str = Field(min_length=1, max_length=COMMENT_TEXT, description="What to revise")
    rejected_at: AwareDatetime = Field(description="When it was rejected")

    @model_validator(mode="after")
    def _reviewer_is_not_the_author(self) -> Self:
        _not_the_author(self.author_id, self.reviewer_id)
        return self


class AnswerPublished(EventPayload):
    """An approved answer is released to the customer; intake delivers it through the ticket's channel."""

    event_type: ClassVar[str] = "answer.published"

    ticket_id: UUID = Field(description="Ticket id (aggregate id, Kafka key)")
    answer_id: UUID = Field(description="Answer id")
    answer_version: int = Field(ge=1, description="Published (approved) version")
    author_id: UUID = Field(description="Agent who wrote it")
    reviewer_id: UUID = Field(description="Reviewer who approved it")
    body: str = Field(max_length=ANSWER_TEXT, description="The answer text to deliver")
    body_format: AnswerFormat = Field(default=AnswerFormat.PLAIN, description="Markup of `body`")
    kb_article_ids: list[UUID] = Field(
        default_factory=list, max_length=MAX_LIST, description="Knowledge-base articles the answer cites"
    )
    published_at: AwareDatetime = Field(description="When it was published")

    @model_validator(mode="after")
    def _reviewer_is_not_the_author(self) -> Self:
        _not_the_author(self.author_id, self.reviewer_id)
        return self


PAYLOADS: tuple[type[EventPayload], ...] = (
    AnswerSubmitted,
    AnswerApproved,
    AnswerRejected,
    AnswerPublished,
)
"""Every payload review publishes, in ARCHITECTURE.md order."""

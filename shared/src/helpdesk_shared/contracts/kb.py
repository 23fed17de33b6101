"""Events published by the knowledge-base service (topic `helpdesk.kb`).

Key = article id for article events, gap id for gap reports.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import AwareDatetime, Field

from .common import MAX_LIST, QUESTION_TEXT, REASON_TEXT, SHORT_TEXT, DomainName, Label, LanguageTag, Tag
from .enums import ArchiveReason, Confidentiality, GapSource
from .envelope import EventPayload

PRODUCER = "kb"


class KbArticlePublished(EventPayload):
    """A knowledge-base article version was published (new article, revision or FAQ)."""

    event_type: ClassVar[str] = "kb.article.published"
    aggregate_field: ClassVar[str] = "article_id"

    article_id: UUID = Field(description="Article id (aggregate id, Kafka key)")
    article_version: int = Field(ge=1, description="Published version")
    title: str = Field(min_length=1, max_length=300, description="Article title")
    category_id: UUID | None = Field(default=None, description="Category in the directory tree")
    category_path: list[Label] = Field(
        default_factory=list, max_length=20, description="Category names from the root down"
    )
    domain: DomainName | None = Field(default=None, description="Domain the article belongs to")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_LIST, description="Tags")
    confidentiality: Confidentiality = Field(description="Access level")
    is_faq: bool = Field(default=False, description="Part of the self-service FAQ")
    language: LanguageTag | None = Field(default=None, description="BCP 47 language tag")
    source: str | None = Field(
        default=None, max_length=SHORT_TEXT, description="Where the content comes from"
    )
    source_answer_id: UUID | None = Field(
        default=None, description="Approved answer it was promoted from (FAQ candidates)"
    )
    review_due_at: AwareDatetime | None = Field(
        default=None, description="When the article is due for periodic review (stale after)"
    )
    published_by: UUID | None = Field(default=None, description="Editor who published it")
    published_at: AwareDatetime = Field(description="When it was published")


class KbArticleArchived(EventPayload):
    """A knowledge-base article was archived (stale, superseded or withdrawn)."""

    event_type: ClassVar[str] = "kb.article.archived"
    aggregate_field: ClassVar[str] = "article_id"

    article_id: UUID = Field(description="Article id (aggregate id, Kafka key)")
    article_version: int = Field(ge=1, description="Last published version")
    reason: ArchiveReason = Field(description="Why it was archived")
    replaced_by_article_id: UUID | None = Field(default=None, description="Article superseding it")
    note: str | None = Field(default=None, max_length=REASON_TEXT, description="Editor's note")
    archived_by: UUID | None = Field(default=None, description="Editor who archived it (None: the system)")
    archived_at: AwareDatetime = Field(description="When it was archived")


class KbGapReported(EventPayload):
    """The knowledge base had no answer: a search without hits or an agent's report (key = gap id)."""

    event_type: ClassVar[str] = "kb.gap.reported"
    aggregate_field: ClassVar[str] = "gap_id"

    gap_id: UUID = Field(description="Gap item id (aggregate id, Kafka key)")
    source: GapSource = Field(description="How the gap was found")
    ticket_id: UUID | None = Field(default=None, description="Ticket the search or report was made for")
    query: str = Field(
        min_length=1, max_length=QUESTION_TEXT, description="The search text or the unanswered question"
    )
    domain: DomainName | None = Field(default=None, description="Domain of the question, if known")
    note: str | None = Field(default=None, max_length=REASON_TEXT, description="Agent's note")
    reported_by: UUID | None = Field(default=None, description="Agent who reported it (None: search miss)")
    reported_at: AwareDatetime = Field(description="When the gap was reported")


PAYLOADS: tuple[type[EventPayload], ...] = (
    KbArticlePublished,
    KbArticleArchived,
    KbGapReported,
)
"""Every payload kb publishes, in ARCHITECTURE.md order."""

"""Constrained field types and length limits reused by the payload modules."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

SHORT_TEXT = 200
"""Max length of names, categories and other short labels."""

REASON_TEXT = 1_000
"""Max length of reasons and short notes."""

COMMENT_TEXT = 4_000
"""Max length of comments, plans and progress notes."""

QUESTION_TEXT = 20_000
"""Max length of a ticket description or a customer message body."""

ANSWER_TEXT = 50_000
"""Max length of an answer body."""

MAX_LIST = 50
"""Max number of items in tag and id lists."""

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A ticket or article tag."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=SHORT_TEXT)]
"""A short label: a category name, a classification reason."""

DomainName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
"""A knowledge/skill domain (e.g. 理賠, billing)."""

LanguageTag = Annotated[str, StringConstraints(min_length=2, max_length=35)]
"""A BCP 47 language tag such as `zh-CN`, `zh-TW` or `en`."""

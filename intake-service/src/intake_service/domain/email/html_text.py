"""HTML bodies as plain text (``html_to_text``)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from intake_service.domain.email.context import _clean

_BLOCK_TAGS = frozenset(
    (
        "p",
        "div",
        "br",
        "li",
        "tr",
        "table",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "hr",
        "dd",
        "dt",
        "dl",
        "section",
        "article",
        "header",
        "footer",
        "address",
        "center",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "form",
        "fieldset",
        "tbody",
        "thead",
        "tfoot",
        "caption",
        "nav",
        "aside",
        "main",
        "figure",
        "figcaption",
        "details",
        "summary",
    )
)
_SKIP_TAGS = frozenset(("script", "style", "title", "template", "noscript", "head"))
_CELL_TAGS = frozenset(("td", "th"))


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
            if tag == "pre":
                self.pre += 1
        elif tag in _CELL_TAGS:
            self.out.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" or tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        self.out.append(data if self.pre else re.sub(r"[ \t\r\n\f]+", " ", data))


def _tidy_lines(text: str) -> str:
    lines = [line.strip() for line in text.replace("\xa0", " ").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: tags dropped, script/style/head skipped, block breaks kept."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.out)
    except Exception:  # html.parser is lenient; this is a last resort for hostile markup
        text = html.unescape(re.sub(r"<[^>]*>", " ", re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)))
    return _tidy_lines(_clean(text))

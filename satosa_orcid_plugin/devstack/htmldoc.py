"""Just enough of an HTML tree for the scripted browser, on the standard library's
``html.parser``: the demo (``satosa-orcid demo --once``) runs where only the runtime
dependencies are installed, e.g. in the image, without BeautifulSoup.

>>> doc = parse_html('<form id="f"><select name="s"><option value="a">A<option selected value="b">B</select>'
...                  '<a href="/x">Go <b>on</b></a></form><h1> Hi &amp; bye </h1>')
>>> [o.get("value") for o in doc.find("select").find_all("option")]
['a', 'b']
>>> doc.find("option", selected=True)["value"], doc.find("a", href=True).get_text(" ", strip=True)
('b', 'Go on')
>>> doc.find(["h1", "title"]).get_text(" ", strip=True)
'Hi & bye'
"""
from __future__ import annotations

from html.parser import HTMLParser
from typing import Any, Iterator

__all__ = ["Element", "parse_html"]

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})
# an element of these names ends the open one of the same kind (HTML's optional end tags)
SELF_CLOSING_SIBLINGS = frozenset({"option", "li", "p", "tr", "td", "th"})


class Element:
    """An element: ``name``, ``attrs``, children (elements and strings), BeautifulSoup-like lookups."""

    def __init__(self, name: str, attrs: dict[str, str], parent: "Element | None" = None) -> None:
        self.name, self.attrs, self.parent = name, attrs, parent
        self.children: list[Element | str] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.attrs[key]

    def has_attr(self, key: str) -> bool:
        return key in self.attrs

    def descendants(self) -> Iterator["Element"]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.descendants()

    def _matches(self, names: str | list[str] | None, attrs: dict[str, Any]) -> bool:
        if names is not None and self.name not in ([names] if isinstance(names, str) else names):
            return False
        for key, want in attrs.items():
            if want is True:
                if key not in self.attrs:
                    return False
            elif self.attrs.get(key) != want:
                return False
        return True

    def find_all(self, names: str | list[str] | None = None, **attrs: Any) -> list["Element"]:
        return [e for e in self.descendants() if e._matches(names, attrs)]

    def find(self, names: str | list[str] | None = None, **attrs: Any) -> "Element | None":
        return next((e for e in self.descendants() if e._matches(names, attrs)), None)

    def _strings(self) -> Iterator[str]:
        for child in self.children:
            if isinstance(child, str):
                yield child
            else:
                yield from child._strings()

    def get_text(self, separator: str = "", strip: bool = False) -> str:
        parts = list(self._strings())
        if strip:
            parts = [p.strip() for p in parts if p.strip()]
        return separator.join(parts)

    @property
    def string(self) -> str | None:
        """The text of an element whose only child is text (a ``<script>``'s content)."""
        return self.children[0] if len(self.children) == 1 and isinstance(self.children[0], str) else None


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("[document]", {})
        self.open: list[Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SELF_CLOSING_SIBLINGS and self.open[-1].name == tag:
            self.open.pop()
        element = Element(tag, {k: ("" if v is None else v) for k, v in attrs}, self.open[-1])
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: ("" if v is None else v) for k, v in attrs}, self.open[-1])
        self.open[-1].children.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].name == tag:
                del self.open[i:]
                return  # an end tag nothing opened is ignored, as browsers do

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse_html(page: str) -> Element:
    """The document tree of ``page`` (never raises on malformed HTML)."""
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root

"""A small scripted browser over ``requests``: follow redirects, parse HTML forms, submit them.

Used by ``satosa-orcid demo --once`` and by tests that walk the real HTTP endpoints. It is
deliberately simple: no JavaScript, so it presses the visible buttons that every page of the
demo offers (e.g. "Continue" on SAML HTTP-POST pages).

>>> forms = parse_forms('<form action="/x" method="post"><input name="a" value="1">'
...                     '<button name="go" value="y">Go</button></form>', "https://h/p")
>>> forms[0].action, forms[0].method, forms[0].fields, forms[0].buttons[0].text
('https://h/x', 'POST', {'a': '1'}, 'Go')
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Callable, Iterable, Mapping
from urllib.parse import urljoin

import requests

__all__ = ["Button", "Form", "parse_forms", "find_form", "has_button", "ScriptedBrowser", "BrowserError",
           "Element", "parse_html", "link_with_id"]


# --- a small DOM over the standard library's html.parser -------------------------------
# The demo must run from the wheel alone (no BeautifulSoup, a dev-only extra): these pages
# are our own and the emulator's, so a tolerant tree with find/find_all/get_text suffices.
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Elements a new sibling start tag closes implicitly (HTML's optional end tags).
_AUTO_CLOSE = {"option": {"option"}, "li": {"li"}, "p": {"p"}, "td": {"td", "th"}, "th": {"td", "th"},
               "tr": {"tr"}}


class Element:
    """One element: ``name``, ``attrs``, ``children`` (elements and text strings).

    >>> doc = parse_html('<div><a href="/x" id="go">Go <b>now</b></a><p>one<p>two</div>')
    >>> doc.find("a", id="go")["href"], doc.find("a").get_text(" ", strip=True)
    ('/x', 'Go now')
    >>> [p.get_text() for p in doc.find_all("p")]
    ['one', 'two']
    """

    def __init__(self, name: str, attrs: dict[str, str], parent: "Element | None" = None):
        self.name, self.attrs, self.parent = name, attrs, parent
        self.children: list["Element | str"] = []

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.attrs[key]

    def has_attr(self, key: str) -> bool:
        return key in self.attrs

    def descendants(self) -> Iterable["Element"]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.descendants()

    def find_all(self, names: str | Iterable[str] | None = None, **attrs: str | bool) -> list["Element"]:
        """Descendant elements named ``names`` (one or several) whose attributes match
        ``attrs`` (a value, or True for "present")."""
        wanted = {names} if isinstance(names, str) else (set(names) if names is not None else None)
        out = []
        for el in self.descendants():
            if wanted is not None and el.name not in wanted:
                continue
            if all((key in el.attrs) if value is True else el.attrs.get(key) == value
                   for key, value in attrs.items()):
                out.append(el)
        return out

    def find(self, names: str | Iterable[str] | None = None, **attrs: str | bool) -> "Element | None":
        found = self.find_all(names, **attrs)
        return found[0] if found else None

    def strings(self) -> Iterable[str]:
        for child in self.children:
            if isinstance(child, Element):
                yield from child.strings()
            else:
                yield child

    def get_text(self, separator: str = "", strip: bool = False) -> str:
        parts = [s.strip() for s in self.strings()] if strip else list(self.strings())
        return separator.join(p for p in parts if p) if strip else separator.join(parts)

    @property
    def string(self) -> str | None:
        """The text of an element holding only text (a ``<script>``'s JSON), else None."""
        if all(isinstance(c, str) for c in self.children):
            return "".join(self.children)  # type: ignore[arg-type]
        return None


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("[document]", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        closes = _AUTO_CLOSE.get(tag)
        if closes and self.current.name in closes:
            self.current = self.current.parent or self.root
        el = Element(tag, {k: (v if v is not None else "") for k, v in attrs}, self.current)
        self.current.children.append(el)
        if tag not in _VOID:
            self.current = el

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: (v if v is not None else "") for k, v in attrs}, self.current)
        self.current.children.append(el)

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node is not self.root and node.name != tag:
            node = node.parent
        if node is not None and node is not self.root:  # an end tag without a start tag is ignored
            self.current = node.parent or self.root

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(page: str) -> Element:
    """The document as an :class:`Element` tree (tolerant, like a browser, of missing end tags)."""
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


class BrowserError(RuntimeError):
    """The page did not contain what the script expected."""


@dataclass(frozen=True)
class Button:
    text: str
    name: str | None = None
    value: str | None = None


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]
    buttons: list[Button] = field(default_factory=list)
    selects: dict[str, list[str]] = field(default_factory=dict)  # name -> option values
    radios: dict[str, list[str]] = field(default_factory=dict)  # name -> values
    input_types: dict[str, str] = field(default_factory=dict)  # name -> type
    id: str | None = None

    def button(self, text: str | None) -> Button | None:
        if text is None:
            return self.buttons[0] if self.buttons else None
        want = _norm(text)
        for b in self.buttons:
            if _norm(b.text) == want:
                return b
        for b in self.buttons:
            if want in _norm(b.text):
                return b
        raise BrowserError(f"form {self.action} has no button {text!r} (has {[b.text for b in self.buttons]})")

    def has_button(self, text: str) -> bool:
        want = _norm(text)
        return any(want in _norm(b.text) for b in self.buttons)

    def button_with_value(self, value: str) -> Button | None:
        """The submit button sending ``value`` (language-independent, unlike its label)."""
        return next((b for b in self.buttons if b.value == value), None)

    def data(self, overrides: Mapping[str, str] | None = None, button: str | Button | None = None
             ) -> dict[str, str]:
        """The form data a browser sends when ``button`` (a label or a Button) is pressed."""
        data = dict(self.fields)
        data.update(overrides or {})
        if isinstance(button, Button):
            pressed: Button | None = button
        else:
            pressed = self.button(button) if (button or self.buttons) else None
        if pressed is not None and pressed.name:
            data[pressed.name] = pressed.value or ""
        return data


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip().lower()


def parse_forms(page: str, base_url: str) -> list[Form]:
    """Every ``<form>`` of ``page`` with its successful-control defaults and submit buttons."""
    soup = parse_html(page)
    forms = []
    for f in soup.find_all("form"):
        action = urljoin(base_url, f.get("action") or base_url)
        form = Form(action=action, method=(f.get("method") or "GET").upper(), fields={}, id=f.get("id"))
        for el in f.find_all(["input", "button", "select", "textarea"]):
            name = el.get("name")
            if el.name == "button":
                if (el.get("type") or "submit").lower() == "submit":
                    form.buttons.append(Button(el.get_text(" ", strip=True), name, el.get("value")))
                continue
            if el.name == "select":
                options = [o.get("value", o.get_text(strip=True)) for o in el.find_all("option")]
                if name:
                    form.selects[name] = options
                    chosen = el.find("option", selected=True) or (el.find("option") if options else None)
                    if chosen is not None:
                        form.fields[name] = chosen.get("value", chosen.get_text(strip=True))
                continue
            if el.name == "textarea":
                if name:
                    form.fields[name] = el.get_text()
                continue
            kind = (el.get("type") or "text").lower()
            if kind in ("submit", "image"):
                form.buttons.append(Button(el.get("value") or "Submit", name, el.get("value")))
                continue
            if not name or kind in ("button", "reset", "file"):
                continue
            form.input_types[name] = kind
            if kind in ("checkbox", "radio"):
                if kind == "radio":
                    form.radios.setdefault(name, []).append(el.get("value", "on"))
                if el.has_attr("checked"):
                    form.fields[name] = el.get("value", "on")
                continue
            form.fields[name] = el.get("value", "")
        forms.append(form)
    return forms


def find_form(page: str, base_url: str, *, button: str | None = None, form_id: str | None = None,
              field_name: str | None = None, button_value: str | None = None, action: str | None = None) -> Form:
    """The first form matching all given criteria (a button label or value, an id, a field
    name, an action URL prefix)."""
    forms = parse_forms(page, base_url)
    for form in forms:
        if button is not None and not form.has_button(button):
            continue
        if button_value is not None and form.button_with_value(button_value) is None:
            continue
        if action is not None and not form.action.startswith(action):
            continue
        if form_id is not None and form.id != form_id:
            continue
        if field_name is not None and field_name not in form.fields and field_name not in form.input_types:
            continue
        return form
    criteria = (("button", button), ("id", form_id), ("field", field_name), ("button_value", button_value),
                ("action", action))
    wanted = ", ".join(f"{k}={v!r}" for k, v in criteria if v)
    raise BrowserError(f"no form with {wanted or 'anything'} on {base_url} (found {len(forms)} forms)")


def link_with_id(page: str, element_id: str, base_url: str = "") -> str | None:
    """The absolute ``href`` of the ``<a id=element_id>`` of ``page`` (standard library only),
    e.g. the interstitial's "Connect your ORCID iD" link (``connect-orcid``).

    >>> link_with_id('<a id="connect-orcid" href="/o?a=1&amp;b=2">Go</a>', "connect-orcid", "https://h/p")
    'https://h/o?a=1&b=2'
    """
    link = parse_html(page).find("a", id=element_id)
    href = link.get("href") if link is not None else None
    return urljoin(base_url, href) if href else None


def has_button(response: requests.Response, text: str | None = None, *, value: str | None = None) -> bool:
    """Whether a form on ``response``'s page has a submit button labelled ``text`` (or sending ``value``)."""
    return any(
        (text is None or f.has_button(text)) and (value is None or f.button_with_value(value) is not None)
        for f in parse_forms(response.text, response.url)
    )


class ScriptedBrowser:
    """A ``requests.Session`` with helpers for HTML pages.

    Redirects are followed (POST becomes GET after 301/302/303, like browsers do). With
    ``stay_within`` set to a URL prefix, a redirect that leaves it is *returned* instead of
    followed, so a test can hand the target (e.g. a callback on an in-process app) on; with
    ``stop_at`` set, so is a redirect to a URL starting with it (an RP's redirect_uri where
    nothing listens). ``verify`` is passed to every request: e.g. the path of the proxy's self-signed TLS cert.
    """

    max_redirects = 20

    def __init__(self, *, verify: bool | str = True, timeout: float = 20.0,
                 session: requests.Session | None = None, log: Callable[[str], None] | None = None,
                 stay_within: str | None = None, stop_at: str | None = None):
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "satosa-orcid-scripted-browser/1")
        self.verify = verify
        self.timeout = timeout
        self.log = log or (lambda msg: None)
        self.stay_within = stay_within
        self.stop_at = stop_at
        self.history: list[str] = []

    def _note(self, response: requests.Response) -> None:
        line = f"{response.request.method} {response.url} -> {response.status_code}"
        self.history.append(line)
        url = response.url if len(response.url) <= 160 else response.url[:157] + "..."
        self.log(f"  {response.request.method} {url} -> {response.status_code}")

    def request(self, method: str, url: str, **kw) -> requests.Response:
        """Send one request and follow its redirects (see the class docstring)."""
        response = self.session.request(method, url, verify=self.verify, timeout=self.timeout,
                                        allow_redirects=False, **kw)
        self._note(response)
        for _ in range(self.max_redirects):
            if not response.is_redirect:
                return response
            target = urljoin(response.url, response.headers["Location"])
            if self.stay_within is not None and not target.startswith(self.stay_within):
                return response
            if self.stop_at is not None and target.startswith(self.stop_at):
                return response
            if response.status_code in (307, 308):
                response = self.session.request(method, target, verify=self.verify, timeout=self.timeout,
                                                allow_redirects=False, **kw)
            else:
                method = "GET"
                response = self.session.get(target, verify=self.verify, timeout=self.timeout,
                                            allow_redirects=False)
            self._note(response)
        raise BrowserError(f"more than {self.max_redirects} redirects from {url}")

    def get(self, url: str, **kw) -> requests.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, data: Mapping[str, str], **kw) -> requests.Response:
        return self.request("POST", url, data=data, **kw)

    def submit(self, form: Form, overrides: Mapping[str, str] | None = None, button: str | Button | None = None
               ) -> requests.Response:
        data = form.data(overrides, button)
        if form.method == "POST":
            return self.post(form.action, data)
        return self.get(form.action, params=data)

    def submit_on(self, response: requests.Response, *, button: str | None = None,
                  overrides: Mapping[str, str] | None = None, form_id: str | None = None,
                  field_name: str | None = None, button_value: str | None = None) -> requests.Response:
        """Find a form on ``response``'s page and submit it by pressing ``button`` (a label)
        or the button that sends ``button_value``."""
        form = find_form(response.text, response.url, button=button, form_id=form_id, field_name=field_name,
                         button_value=button_value)
        pressed = form.button_with_value(button_value) if button_value is not None else button
        return self.submit(form, overrides, pressed)

    def forms(self, response: requests.Response) -> list[Form]:
        return parse_forms(response.text, response.url)

    def follow_link(self, response: requests.Response, text: str) -> requests.Response:
        soup = parse_html(response.text)
        want = _norm(text)
        for a in soup.find_all("a", href=True):
            if want in _norm(a.get_text(" ", strip=True)):
                return self.get(urljoin(response.url, a["href"]))
        raise BrowserError(f"no link {text!r} on {response.url}")

    def auto_post(self, response: requests.Response, field_names: Iterable[str] = ("SAMLResponse", "SAMLRequest"),
                  max_hops: int = 5) -> requests.Response:
        """Submit auto-posting SAML forms (what JavaScript would do) until none is left."""
        for _ in range(max_hops):
            forms = [f for f in self.forms(response) if any(n in f.fields for n in field_names)
                     and all(kind == "hidden" for kind in f.input_types.values())]
            if not forms:
                return response
            response = self.submit(forms[0])
        return response


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

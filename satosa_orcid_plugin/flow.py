"""The flow record the plugin keeps in SATOSA's state, and ORCID's OAuth callback, parsed.

SATOSA carries ``context.state`` in its state cookie (JSON, compressed, encrypted; see
``state_to_cookie`` in SATOSA's ``src/satosa/state.py``), and browsers drop cookies over
4096 bytes. The record (with the whole login: ``InternalData.to_dict()``, every attribute) is
therefore parked in the store, and the cookie carries only a :class:`Ticket`: kind, OAuth
state, form token, expiry and the parked row's handle, about 130 bytes of JSON whatever the
attributes. Both are checked in one place on the way back (version, kind, every field's type,
expiry). Nothing here imports SATOSA; the glue turns ``InternalData`` into a dict and back.

The callback is read as RFC 6749 section 4.1.2 describes the authorization response: the
state first (in constant time), then ``error`` (section 4.1.2.1), then ``code``. The glue checks
the state with :meth:`FlowRecord.state_matches` *before* it takes the record, so a forged
callback cannot end someone else's login.

The plugin's own forms (the interstitial, the confirmation) carry a random ``form`` token of
their own, never the OAuth ``state``: the state travels in ORCID's authorize URL and could be
read there (RFC 6749 section 10.12 asks for CSRF protection bound to the user agent).
"""
from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from .errors import BadCallback, OrcidOAuthError, StateMismatch, UserDenied

VERSION = 1          # the parked record
TICKET_VERSION = 2   # the ticket in SATOSA's state
MAX_PARAM_LENGTH = 2048
Clock = Callable[[], float]


class FlowKind(str, Enum):
    HOP = "hop"          # the consent hop: at the interstitial or at ORCID's authorize page
    CONNECT = "connect"  # Institutional Connect: the state-protected authorize verifying a state-less grant
    CONFIRM = "confirm"  # the page confirming a pending Institutional Connect link at the next login


_OPTIONAL = ("nonce", "user", "mode", "lang", "pending", "form", "issuer")  # str or absent, same key on the cookie


@dataclass(frozen=True)
class FlowRecord:
    kind: FlowKind
    state: str
    exp: int                              # seconds since the epoch
    login: dict[str, Any] | None = None   # the login to resume (InternalData.to_dict()); none for connect
    nonce: str | None = None
    user: str | None = None
    mode: str | None = None
    lang: str | None = None
    pending: str | None = None            # the pending link's handle
    form: str | None = None               # the CSRF token of the page's form (never the OAuth state)
    issuer: str | None = None             # the issuer of ``user`` ("" for an issuer-free key)
    version: int = VERSION

    @classmethod
    def new(cls, kind: FlowKind, *, state: str, ttl: int, clock: Clock = time.time, **fields: Any) -> "FlowRecord":
        return cls(kind, state, int(clock()) + ttl, **fields)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": self.version, "kind": self.kind.value, "state": self.state, "exp": self.exp}
        if self.login is not None:
            out["flow"] = self.login
        out.update((key, getattr(self, key)) for key in _OPTIONAL if getattr(self, key) is not None)
        return out

    @classmethod
    def from_dict(cls, raw: Any, kinds: Iterable[FlowKind], *, now: float) -> "FlowRecord | None":
        """The record, or None when it is not one of ``kinds``, malformed, or expired."""
        if not isinstance(raw, dict) or not _is_int(raw.get("v")) or raw["v"] != VERSION:
            return None
        kind = next((k for k in kinds if k.value == raw.get("kind")), None)
        state, exp, login = raw.get("state"), raw.get("exp"), raw.get("flow")
        if kind is None or not isinstance(state, str) or not state or not _is_int(exp) or exp < now:
            return None
        if not (isinstance(login, dict) or (login is None and kind is FlowKind.CONNECT)):
            return None
        extra = {key: raw.get(key) for key in _OPTIONAL}
        if not all(value is None or isinstance(value, str) for value in extra.values()):
            return None
        return cls(kind, state, exp, login, **extra)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Ticket:
    """What SATOSA's state cookie holds for a flow in progress: enough to refuse a forged
    callback or form without a database read, and the handle of the parked record."""

    kind: FlowKind
    state: str
    exp: int
    handle: str
    form: str | None = None

    @classmethod
    def of(cls, record: FlowRecord, handle: str) -> "Ticket":
        return cls(record.kind, record.state, record.exp, handle, record.form)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, timezone.utc)

    def state_matches(self, params: Mapping[str, Any]) -> bool:
        """Whether a callback carries this flow's OAuth state (constant time)."""
        got = param(params, "state")
        return bool(got) and hmac.compare_digest(got.encode(), self.state.encode())

    def form_matches(self, got: str | None) -> bool:
        """Whether a form's token is this flow's (constant time); no token, no match."""
        return bool(got) and self.form is not None and hmac.compare_digest(got.encode(), self.form.encode())

    def matches(self, record: FlowRecord | None) -> bool:
        """Whether the parked record is this ticket's (same kind and state)."""
        return record is not None and record.kind is self.kind and hmac.compare_digest(
            record.state.encode(), self.state.encode())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": TICKET_VERSION, "k": self.kind.value, "s": self.state, "x": self.exp,
                               "p": self.handle}
        if self.form is not None:
            out["f"] = self.form
        return out

    @classmethod
    def from_dict(cls, raw: Any, kinds: Iterable[FlowKind], *, now: float) -> "Ticket | None":
        """The ticket, or None when it is not one of ``kinds``, malformed, or expired."""
        if not isinstance(raw, dict) or raw.get("v") != TICKET_VERSION:
            return None
        kind = next((k for k in kinds if k.value == raw.get("k")), None)
        state, exp, handle, form = raw.get("s"), raw.get("x"), raw.get("p"), raw.get("f")
        if kind is None or not _is_int(exp) or exp < now:
            return None
        if not all(isinstance(v, str) and v for v in (state, handle)) or not (form is None or isinstance(form, str)):
            return None
        return cls(kind, state, exp, handle, form)


def save_ticket(state: MutableMapping[str, Any], name: str, ticket: Ticket) -> None:
    state[name] = ticket.to_dict()


def ticket(state: Mapping[str, Any] | None, name: str, kinds: Iterable[FlowKind], *,
           clock: Clock = time.time) -> Ticket | None:
    return Ticket.from_dict(state.get(name) if state is not None else None, kinds, now=clock())


def forget(state: MutableMapping[str, Any] | None, name: str) -> None:
    if state is not None:
        state.pop(name, None)


def form_token() -> str:
    """A fresh token for one of the plugin's forms."""
    return secrets.token_urlsafe(24)


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def log_safe(text: str) -> str:
    """``text`` with control characters (CR, LF, ...) escaped, so that a value from a request
    cannot start a log line of its own."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=~-]")


def log_token(value: str | None, limit: int = 200) -> str:
    """An identifier from a request or an assertion (an entity ID, a scope) for a log line:
    characters outside ``[A-Za-z0-9._:/@+=~-]`` become ``?``, at most ``limit`` of them; ``-``
    for none."""
    if not value:
        return "-"
    text = _TOKEN_UNSAFE.sub("?", str(value)[:limit])
    return text + ("..." if len(str(value)) > limit else "")


def param(params: Mapping[str, Any], key: str) -> str | None:
    """One non-empty value of at most MAX_PARAM_LENGTH characters; a repeated parameter is none."""
    value = params.get(key)
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if not isinstance(value, str) or not value or len(value) > MAX_PARAM_LENGTH:
        return None
    return value


def parse_callback(params: Mapping[str, Any], expected_state: str) -> str:
    """The authorization code of ORCID's redirect, or the error it stands for."""
    got = param(params, "state")
    if not got:
        raise StateMismatch("the ORCID callback carries no state")
    if not hmac.compare_digest(got.encode(), expected_state.encode()):
        raise StateMismatch()
    error = param(params, "error")
    if error == "access_denied":
        raise UserDenied()
    if error:
        raise OrcidOAuthError(error[:64], (param(params, "error_description") or "")[:200])
    code = param(params, "code")
    if not code:
        raise BadCallback()
    return code

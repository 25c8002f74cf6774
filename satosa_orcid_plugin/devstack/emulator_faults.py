"""Fault injection for the ORCID emulator.

A :class:`FaultPlan` is an ordered list of rules. Each rule names the endpoint it applies to,
what goes wrong and how often (``times``; ``None`` means every time)::

    plan.add(endpoint="token", kind="status", status=503, times=1)
    plan.add(endpoint="jwks", kind="delay", seconds=2.5)
    plan.add(endpoint="token", kind="wrong_aud")

Response faults (``delay``, ``status``, ``malformed``, ``drop``) are looked at when a request
reaches the endpoint: every matching ``delay`` fires, then the first matching ``status``,
``malformed`` or ``drop`` replaces the answer. id_token faults only apply to the token
endpoint and fire when that endpoint actually mints an id_token (a 4xx answer does not use
them up).
"""
from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, NoReturn

ENDPOINTS = ("token", "jwks", "userinfo", "revoke", "discovery", "api", "authorize", "*")
RESPONSE_KINDS = ("delay", "status", "malformed", "drop")
ID_TOKEN_KINDS = (
    "bad_signature",
    "wrong_aud",
    "wrong_iss",
    "expired",
    "sub_mismatch",
    "unknown_kid",
    "no_nonce",
    "wrong_nonce",
)
KINDS = RESPONSE_KINDS + ID_TOKEN_KINDS
# Parameters each kind accepts (required ones first); anything else is a typo and rejected.
_PARAMS: dict[str, tuple[set[str], set[str]]] = {
    "delay": ({"seconds"}, set()),
    "status": ({"status"}, {"body", "content_type"}),
    "malformed": (set(), {"body", "content_type"}),
}
MAX_DELAY = 600.0
DEFAULT_MALFORMED_BODY = '{"access_token": "8c1f3e2a-'  # cut short: valid start, not JSON


class DropConnection(ConnectionResetError):
    """Raised by the app to have the server close the TCP connection without answering.

    It is an ``OSError`` with ``ECONNRESET`` so that werkzeug's server (``connection_dropped``)
    and gunicorn's workers both treat it as a dead client and send nothing at all.
    """

    def __init__(self) -> None:
        super().__init__(errno.ECONNRESET, "orcid emulator fault: connection dropped")


def drop_connection(environ: dict) -> NoReturn:
    """Close the client's TCP connection (where the server exposes it) and answer nothing."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise DropConnection()


@dataclass
class FaultRule:
    endpoint: str
    kind: str
    times: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {self.endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind in ID_TOKEN_KINDS and self.endpoint not in ("token", "*"):
            raise ValueError(f"fault {self.kind!r} only applies to the token endpoint")
        if self.times is not None and (isinstance(self.times, bool) or not isinstance(self.times, int) or self.times < 1):
            raise ValueError("fault 'times' must be a positive integer or null (always)")
        required, optional = _PARAMS.get(self.kind, (set(), set()))
        missing = required - self.params.keys()
        extra = self.params.keys() - required - optional
        if missing:
            raise ValueError(f"fault {self.kind!r} needs {', '.join(sorted(missing))}")
        if extra:
            raise ValueError(f"fault {self.kind!r} does not take {', '.join(sorted(extra))}")
        if self.kind == "delay":
            seconds = self.params["seconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_DELAY:
                raise ValueError(f"delay 'seconds' must be a number between 0 and {MAX_DELAY:g}")
        if self.kind == "status":
            status = self.params["status"]
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError("status fault needs an integer 'status' between 200 and 599")
        for key in ("body", "content_type"):
            if key in self.params and not isinstance(self.params[key], str):
                raise ValueError(f"fault {key!r} must be a string")

    @classmethod
    def from_dict(cls, data: Any) -> "FaultRule":
        if not isinstance(data, dict):
            raise ValueError("each fault rule must be a JSON object")
        data = dict(data)
        try:
            endpoint = data.pop("endpoint", "*")
            kind = data.pop("kind")
        except KeyError:
            raise ValueError("fault rule needs a 'kind'") from None
        times = data.pop("times", None)
        data.pop("fired", None)
        return cls(endpoint=endpoint, kind=kind, times=times, params=data)

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": self.kind, "times": self.times, **self.params, "fired": self.fired}

    def applies_to(self, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and (self.times is None or self.fired < self.times)


class FaultPlan:
    """Thread-safe, ordered list of fault rules."""

    def __init__(self, rules: Iterable[FaultRule | dict] = ()) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = [self._coerce(r) for r in rules]

    @staticmethod
    def _coerce(rule: FaultRule | dict) -> FaultRule:
        return rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule)

    def add(self, endpoint: str = "*", kind: str = "", times: int | None = None, **params: Any) -> FaultRule:
        rule = FaultRule(endpoint=endpoint, kind=kind, times=times, params=params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def replace(self, rules: Iterable[FaultRule | dict]) -> None:
        new = [self._coerce(r) for r in rules]  # validate everything before changing anything
        with self._lock:
            self._rules = new

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def as_list(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.rules]

    def __len__(self) -> int:
        return len(self.rules)

    def take_response_faults(self, endpoint: str) -> tuple[float, FaultRule | None]:
        """Fire the delays and the first answer-replacing fault for one request to ``endpoint``.

        Returns the total delay in seconds (the caller sleeps, outside any lock) and the
        ``status``/``malformed``/``drop`` rule to answer with, if any.
        """
        delay = 0.0
        terminal: FaultRule | None = None
        with self._lock:
            for rule in self._rules:
                if rule.kind not in RESPONSE_KINDS or not rule.applies_to(endpoint):
                    continue
                if rule.kind == "delay":
                    rule.fired += 1
                    delay += float(rule.params["seconds"])
                elif terminal is None:
                    rule.fired += 1
                    terminal = rule
        return delay, terminal

    def take_id_token_faults(self) -> set[str]:
        """Fire every active id_token fault; called when the token endpoint mints an id_token."""
        kinds: set[str] = set()
        with self._lock:
            for rule in self._rules:
                if rule.kind in ID_TOKEN_KINDS and rule.applies_to("token"):
                    rule.fired += 1
                    kinds.add(rule.kind)
        return kinds

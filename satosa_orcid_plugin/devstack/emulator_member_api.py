"""The ORCID member API v3.0 for employment and education, for the emulator.

Faithful to ``orcid-facts.md`` §4 where it matters to an integration:

* ``POST /v3.0/{orcid}/employment|education`` -> 201, empty body, ``Location`` ending in the
  put-code; a put-code in the body -> 400 9024.
* ``GET|PUT|DELETE /v3.0/{orcid}/employment/{put-code}``: PUT needs the same ``put-code`` in
  the body (400 9019), PUT/DELETE only by the source client (403 9010), DELETE -> 204.
* ``GET /v3.0/{orcid}/employments|educations``: summaries grouped in ``affiliation-group``
  with ``put-code`` and ``source.source-client-id.path``.
* validation with ORCID's error bodies: 9046 no organisation, 9045 disambiguated organisation
  missing or unknown (a small built-in org list with real ROR ids), 9060 no city/country,
  9047 unreadable JSON.
* 409 9021 when the same client posts an item of the same kind with an equal ``self``
  external id, naming the existing put-code; without external ids POSTing twice silently
  creates two items, as ORCID does.
* 401 ``invalid_token`` for revoked tokens (a user-revoked token may still DELETE), 403 for
  a token without ``/activities/update``.
* rate limit: a token bucket of 24 requests/s, burst 40 -> 503 (counted in ``rate_limited``).
* faults beyond the emulator's own (``delay``/``status``/``drop`` on endpoint ``api``):
  :meth:`MemberApi.add_fault` with ``when="after_commit"``: the change is stored, then the
  answer is delayed (``delay``; :meth:`release` ends it early) or the connection dropped
  (``drop``), the "crash between ORCID's 201 and our commit" case.

State lives in memory behind the emulator's lock. Tests reach it as ``emulator.member_api``.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from werkzeug.wrappers import Request, Response

from .emulator_common import Reply
from .emulator_faults import drop_connection

if TYPE_CHECKING:  # pragma: no cover
    from .emulator import Emulator, Token

SECTIONS = {"employment": "employment", "education": "education", "employments": "employment", "educations": "education"}
WRITE_SCOPE = "/activities/update"
READ_SCOPES = {"/read-limited", "/activities/update", "/read-public"}
ORCID_RATE, ORCID_BURST = 24.0, 40
RECORD_HOST = "orcid.org"
_JSON = "application/vnd.orcid+json;charset=UTF-8"
_MORE_INFO = "https://members.orcid.org/api/resources/troubleshooting"
_USER_MESSAGE = ("There was an error when updating the record. Please try again. "
                 "If the error persists, please contact {client} for assistance.")

# (disambiguation-source, identifier) -> name: a few real organisations, as ORCID's org
# database stores them (ROR as the full URL).
KNOWN_ORGS: dict[tuple[str, str], str] = {
    ("ROR", "https://ror.org/05qwgg493"): "Boston University",
    ("ROR", "https://ror.org/05gq02987"): "Brown University",
    ("ROR", "https://ror.org/052gg0110"): "University of Oxford",
    ("ROR", "https://ror.org/013meh722"): "University of Cambridge",
    ("ROR", "https://ror.org/03vek6s52"): "Harvard University",
    ("ROR", "https://ror.org/042nb2s44"): "Massachusetts Institute of Technology",
    ("ROR", "https://ror.org/05a28rw58"): "ETH Zurich",
    ("ROR", "https://ror.org/01an7q238"): "University of California, Berkeley",
    ("RINGGOLD", "1846"): "Boston University",
    ("GRID", "grid.189504.1"): "Boston University",
    ("FUNDREF", "http://dx.doi.org/10.13039/100000001"): "National Science Foundation",
}
EXTERNAL_ID_TYPES = {"other-id", "grant_number", "doi", "uri", "isni", "ror", "proposal-id", "source-work-id", "handle"}
_DATE_PART = {"year": re.compile(r"^\d{4}$"), "month": re.compile(r"^\d{2}$"), "day": re.compile(r"^\d{2}$")}


@dataclass
class AffiliationItem:
    put_code: int
    orcid: str
    kind: str
    client_id: str
    body: dict[str, Any]
    created: float
    modified: float

    def self_ids(self) -> set[tuple[str, str]]:
        ids = ((self.body.get("external-ids") or {}).get("external-id") or [])
        return {(e.get("external-id-type"), e.get("external-id-value")) for e in ids
                if isinstance(e, dict) and e.get("external-id-relationship") == "self"}


@dataclass
class MemberFault:
    kind: str  # "delay" | "drop"
    method: str | None = None  # POST, PUT, DELETE or None (any write)
    seconds: float = 0.0
    times: int | None = 1
    fired: int = 0


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class MemberApi:
    """Employment/education items of every record, and the rules ORCID applies to them."""

    def __init__(
        self,
        emulator: "Emulator",
        *,
        orgs: dict[tuple[str, str], str] | None = None,
        rate: float = ORCID_RATE,
        burst: int = ORCID_BURST,
        rate_limit: bool = True,
    ) -> None:
        self.emulator = emulator
        self.orgs = dict(KNOWN_ORGS if orgs is None else orgs)
        self.bucket = TokenBucket(rate, burst)
        self.rate_limit = rate_limit
        self.rate_limited = 0  # 503s sent because of the rate limit
        self.items: dict[int, AffiliationItem] = {}
        self.faults: list[MemberFault] = []
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)
        self._put_codes = itertools.count(54563)
        self._release = threading.Event()

    # --- test helpers -------------------------------------------------------------------
    def items_of(self, orcid: str, kind: str | None = None) -> list[AffiliationItem]:
        with self.emulator._lock:
            return sorted((i for i in self.items.values() if i.orcid == orcid and kind in (None, i.kind)),
                          key=lambda i: i.put_code)

    def add_item(self, orcid: str, kind: str, body: dict[str, Any], client_id: str) -> int:
        """Put an item on a record as if ``client_id`` (maybe another integration) had posted it."""
        with self.emulator._lock:
            return self._store(orcid, kind, body, client_id).put_code

    def add_fault(self, kind: str, *, when: str = "after_commit", method: str | None = None,
                  seconds: float = 0.0, times: int | None = 1) -> MemberFault:
        if when != "after_commit" or kind not in ("delay", "drop"):
            raise ValueError("member API faults: when='after_commit', kind 'delay' or 'drop'")
        fault = MemberFault(kind, method.upper() if method else None, seconds, times)
        with self.emulator._lock:
            self.faults.append(fault)
        self._release.clear()
        return fault

    def release(self) -> None:
        """End every 'after_commit' delay now."""
        self._release.set()

    def reset(self) -> None:
        with self.emulator._lock:
            self.items.clear()
            self.faults.clear()
            self.calls.clear()
            self.rate_limited = 0
            self.bucket = TokenBucket(self.bucket.rate, int(self.bucket.burst))
        self._release.set()

    @staticmethod
    def handles(path: str) -> bool:
        parts = path.strip("/").split("/")
        return len(parts) in (3, 4) and parts[0] == "v3.0" and parts[2] in SECTIONS

    # --- WSGI side ----------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        try:
            response = self._handle(request)
        except Reply as answer:  # ours, or the emulator's token check (401)
            response = answer.response
        with self.emulator._lock:
            self.calls.append((request.method, request.path, response.status_code))
        return response

    def _handle(self, request: Request) -> Response:
        if self.rate_limit and not self.bucket.take():
            with self.emulator._lock:
                self.rate_limited += 1
            raise Reply(Response("<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
                                   "<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
                                   503, content_type="text/html"))
        parts = request.path.strip("/").split("/")
        from ..orcid_id import OrcidId  # local: keep the module importable on its own
        from ..errors import InvalidOrcidId

        try:
            orcid = OrcidId.parse(parts[1]).value
        except InvalidOrcidId:
            orcid = ""
        section = parts[2]
        kind = SECTIONS[section]
        plural = section.endswith("s")
        put_code = parts[3] if len(parts) == 4 else None
        if not orcid or orcid != parts[1] or (plural and put_code is not None):
            raise Reply(self._error(404, 9016, f"404 Not Found: The resource was not found. Full validation error: {request.path}",
                                      "The resource was not found."))
        routes = {
            (False, False): ("POST",),
            (False, True): ("GET", "PUT", "DELETE"),
            (True, False): ("GET",),
        }
        allowed = routes[(plural, put_code is not None)]
        if request.method not in allowed:
            raise Reply(Response("", 405, headers={"Allow": ", ".join(allowed)}))
        self.emulator._api_media_type(request)  # 406 unless JSON is asked for
        token = self.emulator._api_token(request, orcid)  # 401 (revoked / wrong record)
        self._check_scope(request.method, token, orcid)
        if orcid not in self.emulator.accounts:
            raise Reply(self._error(404, 9016, f"404 Not Found: The resource was not found. Full validation error: No record {orcid}",
                                      "The resource was not found."))
        if plural:
            return self._list(orcid, kind)
        if put_code is None:
            return self._create(request, orcid, kind, token)
        if not put_code.isdigit():
            raise Reply(self._error(400, 9034, "400 Bad Request: The put code provided is not valid.", self._user(token)))
        number = int(put_code)
        if request.method == "GET":
            return self._read(orcid, kind, number)
        if request.method == "PUT":
            return self._update(request, orcid, kind, number, token)
        return self._delete(request, orcid, kind, number, token)

    def _check_scope(self, method: str, token: "Token", orcid: str) -> None:
        needed = {WRITE_SCOPE} if method in ("POST", "PUT", "DELETE") else READ_SCOPES
        if method in ("POST", "PUT", "DELETE") and token.orcid != orcid:
            needed = set()  # a client-credentials token cannot write to a record
        if not needed & set(token.scopes):
            raise Reply(Response(json.dumps({
                "error": "forbidden",
                "error_description": "Forbidden: The server understood the request but refuses to authorize it. "
                                     "Insufficient or wrong scope.",
            }), 403, content_type="application/json;charset=UTF-8"))

    # --- handlers -----------------------------------------------------------------------
    def _create(self, request: Request, orcid: str, kind: str, token: "Token") -> Response:
        body = self._body(request, token)
        if body.get("put-code") is not None:
            raise Reply(self._error(400, 9024, "400 Bad Request: Put-code is included when not expected. When posting "
                                      "new activities, the put code should be omitted.", self._user(token)))
        self._validate(body, token)
        with self.emulator._lock:
            self._check_duplicates(orcid, kind, body, token, exclude=None)
            item = self._store(orcid, kind, body, token.client_id)
        location = f"{self.emulator.issuer}/v3.0/{orcid}/{kind}/{item.put_code}"
        self._after_commit(request)
        return Response("", 201, headers={"Location": location})

    def _update(self, request: Request, orcid: str, kind: str, put_code: int, token: "Token") -> Response:
        body = self._body(request, token)
        in_body = body.get("put-code")
        if str(in_body) != str(put_code):
            raise Reply(self._error(400, 9019, f"400 Bad Request: The put code in the URL was {put_code} whereas the one "
                                      f"in the body was {'null' if in_body is None else in_body}.", self._user(token)))
        self._validate(body, token)
        with self.emulator._lock:
            item = self._own_item(orcid, kind, put_code, token)
            self._check_duplicates(orcid, kind, body, token, exclude=put_code)
            item.body = self._clean(body)
            item.modified = time.time()
            rendered = self._render(item)
        self._after_commit(request)
        return Response(json.dumps(rendered), 200, content_type=_JSON)

    def _delete(self, request: Request, orcid: str, kind: str, put_code: int, token: "Token") -> Response:
        with self.emulator._lock:
            self._own_item(orcid, kind, put_code, token)
            del self.items[put_code]
        self._after_commit(request)
        return Response("", 204)

    def _read(self, orcid: str, kind: str, put_code: int) -> Response:
        with self.emulator._lock:
            item = self.items.get(put_code)
            if item is None or item.orcid != orcid or item.kind != kind:
                raise Reply(self._not_found(kind, put_code))
            return Response(json.dumps(self._render(item)), 200, content_type=_JSON)

    def _list(self, orcid: str, kind: str) -> Response:
        with self.emulator._lock:
            items = sorted((i for i in self.items.values() if i.orcid == orcid and i.kind == kind), key=lambda i: i.put_code)
            groups = [{
                "last-modified-date": {"value": int(i.modified * 1000)},
                "external-ids": i.body.get("external-ids") or {"external-id": []},
                "summaries": [{f"{kind}-summary": self._render(i, summary=True)}],
            } for i in items]
        last = max((g["last-modified-date"]["value"] for g in groups), default=None)
        body = {
            "last-modified-date": {"value": last} if last else None,
            "affiliation-group": groups,
            "path": f"/{orcid}/{kind}s",
        }
        return Response(json.dumps(body), 200, content_type=_JSON)

    # --- rules --------------------------------------------------------------------------
    def _body(self, request: Request, token: "Token") -> dict[str, Any]:
        ctype = (request.mimetype or "").lower()
        if "json" not in ctype:
            raise Reply(self._error(415, 9001, "415 Unsupported Media Type: data must be in XML or JSON format "
                                      "(the emulator reads JSON only).", "ORCID could not process the data."))
        try:
            body = json.loads(request.get_data(as_text=True) or "")
        except ValueError as exc:
            raise Reply(self._error(400, 9047, f"400 Bad request: invalid JSON - {str(exc)[:120]}", "Invalid JSON.")) from None
        if not isinstance(body, dict):
            raise Reply(self._error(400, 9047, "400 Bad request: invalid JSON - not an object", "Invalid JSON."))
        return body

    def _validate(self, body: dict[str, Any], token: "Token") -> None:
        user = self._user(token)
        org = body.get("organization")
        if not isinstance(org, dict) or not str(org.get("name") or "").strip():
            raise Reply(self._error(400, 9046, "400 Bad request: organization must be present and valid",
                                      "No valid organization is included in the data."))
        disamb = org.get("disambiguated-organization")
        ident = source = ""
        if isinstance(disamb, dict):
            ident = str(disamb.get("disambiguated-organization-identifier") or "").strip()
            source = str(disamb.get("disambiguation-source") or "").strip()
        if not ident or (source, ident) not in self.orgs:
            raise Reply(self._error(400, 9045, "400 Bad request: disambiguated-organization must be present and valid",
                                      "No valid disambiguated-organization is included in the data."))
        address = org.get("address")
        if not isinstance(address, dict) or not str(address.get("city") or "").strip() \
                or not re.fullmatch(r"[A-Z]{2}", str(address.get("country") or "")):
            raise Reply(self._error(400, 9060, "400 Bad Request: City and country are required for education/employment.",
                                      "City and country are required for education/employment."))
        start = self._date(body.get("start-date"), "start-date", user)
        end = self._date(body.get("end-date"), "end-date", user)
        if end is not None and start is None:
            raise Reply(self._error(400, 9006, "400 Bad Request: start-date is required when end-date is present",
                                      user))
        if start is not None and end is not None and start > end:
            raise Reply(self._error(400, 9006, "400 Bad Request: start-date must not be after end-date", user))
        for key in ("department-name", "role-title"):
            if body.get(key) is not None and (not isinstance(body[key], str) or len(body[key]) > 1000):
                raise Reply(self._error(400, 9006, f"400 Bad Request: {key} must be a string of at most 1000 characters",
                                          user))
        ext = body.get("external-ids")
        for e in ((ext or {}).get("external-id") or []) if isinstance(ext, dict) else []:
            if not isinstance(e, dict) or e.get("external-id-type") not in EXTERNAL_ID_TYPES \
                    or not e.get("external-id-value") or e.get("external-id-relationship") not in ("self", "part-of", "version-of", "funded-by"):
                raise Reply(self._error(400, 9006, "400 Bad Request: invalid external identifier (type, value and "
                                          "relationship are required; the type must be one of ORCID's identifier types)", user))
        if body.get("visibility") not in (None, "public", "limited", "registered-only", "private"):
            raise Reply(self._error(400, 9006, "400 Bad Request: invalid visibility", user))

    def _date(self, value: Any, name: str, user: str) -> tuple[int, int, int] | None:
        if value is None:
            return None
        parts = []
        ok = isinstance(value, dict) and isinstance(value.get("year"), dict)
        for part in ("year", "month", "day"):
            node = value.get(part) if isinstance(value, dict) else None
            if node is None:
                parts.append(0)
                continue
            text = node.get("value") if isinstance(node, dict) else None
            if not isinstance(text, str) or not _DATE_PART[part].match(text):
                ok = False
                break
            parts.append(int(text))
        if not ok:
            raise Reply(self._error(400, 9006, f"400 Bad Request: invalid {name}", user))
        return tuple(parts)  # type: ignore[return-value]

    def _check_duplicates(self, orcid: str, kind: str, body: dict[str, Any], token: "Token", exclude: int | None) -> None:
        wanted = AffiliationItem(0, orcid, kind, token.client_id, body, 0, 0).self_ids()
        if not wanted:
            return  # ORCID only matches on self external ids
        for item in self.items.values():
            if (item.orcid == orcid and item.kind == kind and item.client_id == token.client_id
                    and item.put_code != exclude and item.self_ids() & wanted):
                raise Reply(self._error(
                    409, 9021,
                    "409 Conflict: You have already added this activity (matched by external identifiers), please see "
                    f"element with put-code {item.put_code}. If you are trying to edit the item, please use PUT instead of POST.",
                    self._user(token)))

    def _own_item(self, orcid: str, kind: str, put_code: int, token: "Token") -> AffiliationItem:
        item = self.items.get(put_code)
        if item is None or item.orcid != orcid or item.kind != kind:
            raise Reply(self._not_found(kind, put_code))
        if item.client_id != token.client_id:
            raise Reply(self._error(403, 9010, f"403 Forbidden: You are not the source of the {kind}, so you are not "
                                      "allowed to update it.", "The client application is not the source of the resource "
                                      "it is trying to access."))
        return item

    def _store(self, orcid: str, kind: str, body: dict[str, Any], client_id: str) -> AffiliationItem:
        now = time.time()
        item = AffiliationItem(next(self._put_codes), orcid, kind, client_id, self._clean(body), now, now)
        self.items[item.put_code] = item
        return item

    @staticmethod
    def _clean(body: dict[str, Any]) -> dict[str, Any]:
        keep = ("department-name", "role-title", "start-date", "end-date", "organization", "url", "external-ids")
        return {k: body[k] for k in keep if body.get(k) is not None}

    def _after_commit(self, request: Request) -> None:
        fault = None
        with self.emulator._lock:
            for f in self.faults:
                if (f.method in (None, request.method)) and (f.times is None or f.fired < f.times):
                    f.fired += 1
                    fault = f
                    break
        if fault is None:
            return
        if fault.kind == "delay":
            self._release.wait(fault.seconds)
            return
        drop_connection(request.environ)

    # --- rendering ----------------------------------------------------------------------
    def _render(self, item: AffiliationItem, *, summary: bool = False) -> dict[str, Any]:
        client = self.emulator.clients.get(item.client_id)
        out: dict[str, Any] = {
            "created-date": {"value": int(item.created * 1000)},
            "last-modified-date": {"value": int(item.modified * 1000)},
            "source": {
                "source-orcid": None,
                "source-client-id": {"uri": f"https://{RECORD_HOST}/client/{item.client_id}", "path": item.client_id,
                                     "host": RECORD_HOST},
                "source-name": {"value": client.name if client else item.client_id},
            },
            "put-code": item.put_code,
            "department-name": item.body.get("department-name"),
            "role-title": item.body.get("role-title"),
            "start-date": item.body.get("start-date"),
            "end-date": item.body.get("end-date"),
            "organization": item.body.get("organization"),
            "url": item.body.get("url"),
            "external-ids": item.body.get("external-ids") or {"external-id": []},
            "display-index": "0",
            "visibility": "public",
            "path": f"/{item.orcid}/{item.kind}/{item.put_code}",
        }
        if not summary:
            out["path"] = f"/{item.orcid}/{item.kind}/{item.put_code}"
        return out

    def _user(self, token: "Token") -> str:
        client = self.emulator.clients.get(token.client_id)
        return _USER_MESSAGE.format(client=client.name if client else token.client_id)

    def _not_found(self, kind: str, put_code: int) -> Response:
        return self._error(404, 9016, f"404 Not Found: The resource was not found. Full validation error: No entity found "
                           f"with id {put_code} ({kind})", "The resource was not found.")

    @staticmethod
    def _error(status: int, code: int, developer: str, user: str) -> Response:
        return Response(json.dumps({"response-code": status, "developer-message": developer, "user-message": user,
                                    "error-code": code, "more-info": _MORE_INFO}), status, content_type=_JSON)


_ATTACH_LOCK = threading.Lock()


def member_api_for(emulator: "Emulator") -> MemberApi:
    """The emulator's member API, created on first use."""
    api = getattr(emulator, "_member_api_state", None)
    if api is None:
        with _ATTACH_LOCK:
            api = getattr(emulator, "_member_api_state", None)
            if api is None:
                api = MemberApi(emulator)
                emulator._member_api_state = api
    return api


__all__ = ["MemberApi", "AffiliationItem", "KNOWN_ORGS", "member_api_for"]

"""The ORCID member API v3.0 for employment and education, for the emulator.

Faithful to ORCID's member API v3.0 (ORCID-Source ``MemberV3ApiServiceDelegatorImpl``, ``ActivityValidator``; orcid-model XSDs) where it matters to an integration:

* ``POST /v3.0/{orcid}/employment|education`` -> 201, empty body, ``Location`` ending in the
  put-code; a put-code in the body -> 400 9024.
* ``GET|PUT|DELETE /v3.0/{orcid}/employment/{put-code}``: PUT needs the same ``put-code`` in
  the body (400 9019), PUT/DELETE only by the source client (403 9010), DELETE -> 204.
* ``GET /v3.0/{orcid}/employments|educations``: summaries grouped in ``affiliation-group``
  with ``put-code`` and ``source.source-client-id.path``.
* validation with ORCID's error bodies: 9046 no organisation, 9045 disambiguated organisation
  missing or unknown (a small built-in org list with real ROR ids), 9060 no city/country,
  9047 unreadable JSON *or* JSON the v3.0 schema refuses (ORCID-Source ``JSONInputValidator``
  checks JSON input against ``employment-3.0.xsd``/``education-3.0.xsd``: a year outside
  1900-2100, a month outside 1-12, a day outside 1-31, a blank or over-4,000-character
  ``common:long-text``), 9049 a date that does not exist (30 February), 9055 a start date
  after the end date. An end date without a start date is accepted (ORCID-Source v3
  ``ActivityValidator.validateAffiliation`` has no missing-start check for affiliations).
* external ids on affiliations: any non-empty type and value, the relationship optional
  (when present one of ORCID's ``Relationship`` values); no list of types is checked.
* 409 9021 when the same client posts an item of the same kind with an equal external id
  whose relationships are both ``self`` or both absent (``ActivityValidator
  .checkExternalIdentifiersForDuplicates``), naming the existing put-code; without external
  ids POSTing twice silently creates two items, as ORCID does.
* 403 ``forbidden`` without a token (ORCID-Source ``APIAuthenticationEntryPoint``), 401
  ``invalid_token`` for revoked tokens (a user-revoked token may still DELETE), 403 9038 in
  ORCID's error shape for a token without ``/activities/update`` (``OrcidSecurityManagerImpl
  .checkScopes`` throws ``OrcidAccessControlException``, mapped to 403/9038 by
  ``OrcidCoreExceptionMapper``).
* rate limit as https://info.orcid.org/ufaqs/what-are-the-api-limits describes it: 24
  requests/s; up to 40 requests over the rate are queued and slowed down to the rate; beyond
  that burst the answer is 503 (counted in ``rate_limited``; slowed ones in ``rate_delayed``).
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
from datetime import date
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
# orcid-model common-3.0.xsd: ``relationship-type`` is checked against orcid-model's
# ``Relationship`` enum; ``external-id-type`` is only a ``non-empty-string`` on affiliations.
RELATIONSHIPS = ("self", "part-of", "version-of", "funded-by")
LONG_TEXT = 4000  # common-3.0.xsd ``long-text``: department-name, role-title, organization name, city, region
YEARS, MONTHS, DAYS = (1900, 2100), (1, 12), (1, 31)  # common-3.0.xsd ``year``, ``month``, ``day``
_DIGITS = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass
class AffiliationItem:
    put_code: int
    orcid: str
    kind: str
    client_id: str
    body: dict[str, Any]
    created: float
    modified: float

    def self_ids(self) -> set[tuple[str, str, str | None]]:
        """The external ids ORCID matches duplicates on: relationship ``self``, or none at all
        (ORCID-Source v3 ``ActivityValidator.areRelationshipsSameAndSelf``)."""
        ids = ((self.body.get("external-ids") or {}).get("external-id") or [])
        return {(e.get("external-id-type"), e.get("external-id-value"), e.get("external-id-relationship"))
                for e in ids if isinstance(e, dict) and e.get("external-id-relationship") in ("self", None)}


@dataclass
class MemberFault:
    kind: str  # "delay" | "drop"
    method: str | None = None  # POST, PUT, DELETE or None (any write)
    seconds: float = 0.0
    times: int | None = 1
    fired: int = 0


class RequestQueue:
    """ORCID's rate limit (https://info.orcid.org/ufaqs/what-are-the-api-limits): ``rate``
    requests a second; up to ``burst`` requests over that rate are queued and slowed down to
    the rate; a request that would make the queue longer than ``burst`` is refused (503).

    :meth:`admit` answers how long the caller must wait before it is served (0.0 when it is
    within the rate), or None when it is refused.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, int(burst), clock
        self._next = clock()  # when the next request may be served at the rate
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            waiting = (start - now) * self.rate  # requests already queued ahead of this one
            if waiting > self.burst + 1e-9:
                return None
            self._next = start + 1.0 / self.rate
            return start - now


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.emulator = emulator
        self.orgs = dict(KNOWN_ORGS if orgs is None else orgs)
        self.queue = RequestQueue(rate, burst)
        self.rate_limit = rate_limit
        self.sleep = sleep
        self.rate_limited = 0  # 503s sent because of the rate limit
        self.rate_delayed = 0  # requests held back in ORCID's queue before being served
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
            self.rate_delayed = 0
            self.queue = RequestQueue(self.queue.rate, self.queue.burst, self.queue.clock)
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
        wait = self.queue.admit() if self.rate_limit else 0.0
        if wait:
            with self.emulator._lock:
                self.rate_delayed += 1
            self.sleep(wait)  # queued: slowed down to the rate, then served
        if wait is None:
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
        # ORCID-Source MemberV3ApiServiceDelegatorImpl -> OrcidSecurityManagerImpl.checkScopes:
        # OrcidAccessControlException, which OrcidCoreExceptionMapper turns into 403 / 9038
        # (the developer message is api_en.properties' apiError.9038 text, "409 Conflict" and all).
        needed = {WRITE_SCOPE} if method in ("POST", "PUT", "DELETE") else READ_SCOPES
        if method in ("POST", "PUT", "DELETE") and token.orcid != orcid:
            needed = set()  # a client-credentials token cannot write to a record
        if not needed & set(token.scopes):
            raise Reply(self._error(403, 9038, "409 Conflict: The item has a limited or private visibility and your "
                                      "request doesn't have the required scope.",
                                      "You don't have the permissions to execute this action."))

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
        # 1. the v3.0 schema (ORCID-Source JSONInputValidator: JSON is checked against
        #    employment-3.0.xsd / education-3.0.xsd; any violation is 400 9047).
        self._check_schema(body)
        # 2. ORCID-Source v3 ActivityValidator.validateAffiliation, in its order.
        org = body.get("organization")
        if not isinstance(org, dict):
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
            raise Reply(self._error(400, 9060, "City and country are required for education/employment.",
                                      "City and country are required for education/employment."))
        end = self._date(body.get("end-date"))
        start = self._date(body.get("start-date"))
        # No check for an end date without a start date: ORCID has that rule for funding and
        # research resources (MissingStartDateException, 9050), not for affiliations.
        if start is not None and end is not None and _compare(start, end) > 0:
            raise Reply(self._error(400, 9055, "400 Bad Request: End date must come after start date.",
                                      "End date must come after start date."))

    def _check_schema(self, body: dict[str, Any]) -> None:
        def refuse(why: str) -> None:
            raise Reply(self._error(400, 9047, f"400 Bad request: invalid JSON - {why}", "Invalid JSON."))

        def long_text(value: Any, name: str, required: bool = False) -> None:
            if value is None:
                if required:
                    refuse(f"'{name}' is required")
                return
            if not isinstance(value, str) or not value.strip():
                refuse(f"'{name}' must be a non-empty string")
            if len(value) > LONG_TEXT:
                refuse(f"Value with length = '{len(value)}' is not facet-valid with respect to maxLength "
                       f"'{LONG_TEXT}' for type 'long-text' ({name}).")

        for key in ("department-name", "role-title"):
            long_text(body.get(key), key)
        org = body.get("organization")
        if isinstance(org, dict):
            long_text(org.get("name"), "organization/name", required=True)
            address = org.get("address")
            if isinstance(address, dict):
                long_text(address.get("city"), "city")
                long_text(address.get("region"), "region")
        for key in ("start-date", "end-date"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, dict) or not isinstance(value.get("year"), dict):
                refuse(f"'{key}' needs a year")
            parts = [value.get(p) for p in ("year", "month", "day")]
            if parts[2] is not None and parts[1] is None:
                refuse(f"'{key}' has a day without a month")
            for part, node, (low, high) in zip(("year", "month", "day"), parts, (YEARS, MONTHS, DAYS)):
                if node is None:
                    continue
                text = node.get("value") if isinstance(node, dict) else None
                if not isinstance(text, str) or not _DIGITS.match(text) or not low <= int(text) <= high:
                    refuse(f"Value '{text}' is not facet-valid with respect to the range {low}-{high} "
                           f"for type '{part}' ({key}).")
        ext = body.get("external-ids")
        for e in ((ext or {}).get("external-id") or []) if isinstance(ext, dict) else []:
            if not isinstance(e, dict):
                refuse("external-id must be an object")
            for key in ("external-id-type", "external-id-value"):
                if not isinstance(e.get(key), str) or not e[key].strip():
                    refuse(f"'{key}' must be a non-empty string")
            if e.get("external-id-relationship") is not None and e["external-id-relationship"] not in RELATIONSHIPS:
                refuse(f"unknown external-id-relationship '{e['external-id-relationship']}'")
        if body.get("visibility") not in (None, "public", "limited", "registered-only", "private"):
            refuse("invalid visibility")

    def _date(self, value: Any) -> tuple[int, int | None, int | None] | None:
        """A fuzzy date (already schema-checked) or 400 9049 when it does not exist
        (ORCID-Source ``ActivityValidator.validateFuzzyDate``: ``yyyy-MM-dd`` parsed strictly)."""
        if value is None:
            return None
        year, month, day = (int(value[p]["value"]) if isinstance(value.get(p), dict) else None
                            for p in ("year", "month", "day"))
        if day is not None:
            try:
                date(year, month or 1, day)
            except ValueError:
                shown = "-".join(str(value[p]["value"]) for p in ("year", "month", "day"))
                raise Reply(self._error(400, 9049, f"400 Bad request: invalid date: {shown} ", "Invalid date")) from None
        return (year, month, day)

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


def _compare(a: tuple[int, int | None, int | None], b: tuple[int, int | None, int | None]) -> int:
    """ORCID-Source ``FuzzyDateUtils.compareTo``: year, then month, then day; a part missing on
    either side ends the comparison as equal."""
    for x, y in zip(a, b):
        if x is None or y is None:
            return 0
        if x != y:
            return -1 if x < y else 1
    return 0


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


__all__ = ["MemberApi", "AffiliationItem", "KNOWN_ORGS", "RequestQueue", "member_api_for"]

"""ORCID's JSON in both directions: the v3.0 bodies we send and what we read back.

Pure functions and values only (no HTTP: :mod:`.orcid_client` sends and receives, this
module says what the bodies mean). Shapes follow the orcid-model schemas
(https://github.com/ORCID/orcid-model: ``record_3.0/employment-3.0.xsd``,
``education-3.0.xsd``, ``activities-3.0.xsd``, ``error-3.0.xsd``,
``common_3.0/common-3.0.xsd`` and the samples beside them) and ORCID's API tutorials
(https://github.com/ORCID/ORCID-Source, ``orcid-api-web/tutorial/affiliations.md`` and
``api_errors.md``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .affiliations import PartialDate
from .config import DEFAULT_EXTERNAL_ID_TYPE
from .errors import (
    DuplicateItem,
    InvalidOrcidId,
    OrcidApiError,
    OrcidOAuthError,
    OrcidProtocolError,
    OrcidValidationError,
    TokenRevoked,
)
from .orcid_id import OrcidId

_PUT_CODE_IN_409 = re.compile(r"put-code\s+(\d+)", re.IGNORECASE)


# --- the OAuth token response -----------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    """What a successful code exchange yields. The repr never shows a token."""

    orcid: OrcidId
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int | None
    scope: tuple[str, ...]
    name: str | None = None
    amr: str | None = None
    id_token_claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def token_response(self) -> dict[str, Any]:
        """The token fields in ORCID's own shape (for :class:`TokenSet.from_token_response`)."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "scope": " ".join(self.scope),
        }


def read_token_response(body: Mapping[str, Any], *, sandbox: bool) -> Grant:
    """The grant in ORCID's token response (``access_token``, ``orcid`` as a bare iD,
    ``scope`` space-separated, optional ``name``), without its id_token: the caller verifies
    that and adds the claims."""
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise OrcidProtocolError("ORCID token response has no access_token")
    try:
        orcid = OrcidId.parse(body.get("orcid"), sandbox=sandbox)
    except InvalidOrcidId as exc:
        raise OrcidProtocolError(f"ORCID token response has no valid orcid: {exc.message}") from None
    expires_in = body.get("expires_in")
    name = body.get("name")
    return Grant(
        orcid=orcid,
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None,
        expires_in=int(expires_in) if isinstance(expires_in, (int, float)) else None,
        scope=tuple(str(body.get("scope") or "").split()),
        name=name if isinstance(name, str) and name.strip() else None,
    )


# --- error bodies -------------------------------------------------------------------------
def oauth_error(endpoint: str, status: int, body: Any) -> OrcidOAuthError:
    """An OAuth endpoint's refusal (``{"error": ..., "error_description": ...}``, RFC 6749
    section 5.2); ORCID answers a wrong client secret with a bare 401 "Bad client credentials"."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        desc = body.get("error_description") or body.get("error-description") or ""
        cls = TokenRevoked if body["error"] == "invalid_token" else OrcidOAuthError
        return cls(body["error"], str(desc)[:200], status)
    if status == 401:
        return OrcidOAuthError("invalid_client", "Bad client credentials", 401)
    return OrcidOAuthError("http_%d" % status, f"ORCID {endpoint} refused the request", status)


def member_error(endpoint: str, status: int, body: Any) -> OrcidApiError | TokenRevoked:
    """A member API refusal as an exception. The v3.0 error body (orcid-model
    ``error-3.0.xsd``) has ``response-code``, ``developer-message``, ``user-message``,
    ``error-code`` and ``more-info``; a 409 duplicate names the existing put-code in its
    developer message. ORCID echoes the token in some 401 bodies, so only fixed text (never
    ``error_description``) goes into the 401 exception."""
    body = body if isinstance(body, dict) else {}
    if status == 401 and body.get("error") == "invalid_token":
        return TokenRevoked("invalid_token", f"ORCID rejected the access token ({endpoint})", 401)
    raw_code = body.get("error-code")
    error_code = raw_code if isinstance(raw_code, int) else (int(raw_code) if str(raw_code or "").isdigit() else None)
    message = str(body.get("developer-message") or body.get("error") or f"ORCID {endpoint} refused the request")[:300]
    if status == 409:
        m = _PUT_CODE_IN_409.search(message)
        if m:
            return DuplicateItem(status, error_code, message, int(m.group(1)))
    if status == 400:
        return OrcidValidationError(status, error_code, message)
    return OrcidApiError(status, error_code, message)


# --- employment / education: what we send ---------------------------------------------------
def fuzzy_date(value: PartialDate) -> dict[str, Any]:
    """``common:fuzzy-date``: year, then month and day when known, each ``{"value": "07"}``."""
    out: dict[str, Any] = {"year": {"value": f"{value.year:04d}"}}
    if value.month is not None:
        out["month"] = {"value": f"{value.month:02d}"}
    if value.day is not None:
        out["day"] = {"value": f"{value.day:02d}"}
    return out


def organization(org: Mapping[str, Any]) -> dict[str, Any]:
    """``common:organization``: name, address (city and country required by ORCID, 9060;
    region optional) and the disambiguated organisation (identifier and source). A blank
    address part is left out: the schema's ``long-text`` cannot be empty (ORCID would answer
    9047 instead of naming the missing city)."""
    address = {k: org[k] for k in ("city", "region", "country") if isinstance(org.get(k), str) and org[k].strip()}
    return {
        "name": org["name"],
        "address": address,
        "disambiguated-organization": {
            "disambiguated-organization-identifier": org["disambiguated_id"],
            "disambiguation-source": org["disambiguation_source"],
        },
    }


def affiliation_body(state: Mapping[str, Any], self_id: str, *, put_code: int | None = None) -> dict[str, Any]:
    """The ORCID v3.0 employment/education JSON for an outbox state (orcid-model
    ``record_3.0/samples/write_samples/employment-3.0.json``; validated by ORCID-Source's
    v3 ``ActivityValidator.validateAffiliation``).

    ``put_code`` goes into the body for PUT (ORCID: 400 9019 when it does not match the URL)
    and must be absent for POST (400 9024).
    """
    body: dict[str, Any] = {}
    if put_code is not None:
        body["put-code"] = int(put_code)
    if state.get("department"):
        body["department-name"] = state["department"]
    if state.get("role"):
        body["role-title"] = state["role"]
    start = PartialDate.parse(state["start"]) if state.get("start") else None
    if start is not None:
        body["start-date"] = fuzzy_date(start)
    if not state.get("present") and state.get("end"):
        end = PartialDate.parse(state["end"])
        if end is not None:
            # An end date alone is fine (v3 ActivityValidator.validateAffiliation has no
            # missing-start rule for affiliations); start after end would be 400 9055.
            if start is not None and start.after(end):
                end = start
            body["end-date"] = fuzzy_date(end)
    body["organization"] = organization(state["organization"])
    body["external-ids"] = {"external-id": [{
        "external-id-type": state.get("external_id_type") or DEFAULT_EXTERNAL_ID_TYPE,
        "external-id-value": self_id,
        "external-id-relationship": "self",
    }]}
    return body


# --- employment / education: what we read ----------------------------------------------------
@dataclass(frozen=True)
class AffiliationSummary:
    """One employment/education summary from ``GET /v3.0/{orcid}/employments``."""

    put_code: int
    kind: str
    source_client_id: str | None
    external_ids: tuple[tuple[str, str, str], ...]  # (type, value, relationship)
    organization: str | None = None
    org_id: str | None = None
    department: str | None = None
    role: str | None = None
    start: str | None = None
    end: str | None = None

    def has_self_id(self, value: str) -> bool:
        return any(v == value and rel == "self" for _, v, rel in self.external_ids)


def affiliation_summaries(kind: str, body: Mapping[str, Any]) -> list[AffiliationSummary]:
    """Every summary in an ``/employments`` (or ``/educations``) answer: grouped in
    ``affiliation-group[].summaries[].{kind}-summary`` (orcid-model ``activities-3.0.xsd``);
    an entry without a readable put-code is skipped."""
    out = []
    for group in body.get("affiliation-group") or []:
        for wrapper in (group or {}).get("summaries") or []:
            summary = (wrapper or {}).get(f"{kind}-summary")
            if isinstance(summary, dict):
                parsed = _affiliation_summary(kind, summary)
                if parsed is not None:
                    out.append(parsed)
    return out


def _value(node: Any) -> str | None:
    if isinstance(node, dict):
        node = node.get("value")
    return node if isinstance(node, str) and node else None


def _fuzzy_date(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    parts = [_value(node.get(k)) for k in ("year", "month", "day")]
    return "-".join(p for p in parts if p) or None


def _affiliation_summary(kind: str, s: dict[str, Any]) -> AffiliationSummary | None:
    try:
        put_code = int(s.get("put-code"))
    except (TypeError, ValueError):
        return None
    source = s.get("source") or {}
    client = (source.get("source-client-id") or {}) if isinstance(source, dict) else {}
    ext = ((s.get("external-ids") or {}).get("external-id") or []) if isinstance(s.get("external-ids"), dict) else []
    ids = tuple(
        (str(e.get("external-id-type") or ""), str(e.get("external-id-value") or ""), str(e.get("external-id-relationship") or ""))
        for e in ext if isinstance(e, dict)
    )
    org = s.get("organization") or {}
    disamb = org.get("disambiguated-organization") or {} if isinstance(org, dict) else {}
    return AffiliationSummary(
        put_code=put_code,
        kind=kind,
        source_client_id=client.get("path") if isinstance(client, dict) else None,
        external_ids=ids,
        organization=org.get("name") if isinstance(org, dict) else None,
        org_id=disamb.get("disambiguated-organization-identifier") if isinstance(disamb, dict) else None,
        department=s.get("department-name") if isinstance(s.get("department-name"), str) else None,
        role=s.get("role-title") if isinstance(s.get("role-title"), str) else None,
        start=_fuzzy_date(s.get("start-date")),
        end=_fuzzy_date(s.get("end-date")),
    )


__all__ = [
    "Grant", "read_token_response", "oauth_error", "member_error",
    "fuzzy_date", "organization", "affiliation_body", "AffiliationSummary", "affiliation_summaries",
]

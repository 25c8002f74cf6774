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
    OrcidDetail,
    OrcidOAuthError,
    OrcidProtocolError,
    OrcidUnavailable,
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
# ORCID has answered /oauth/token and /oauth/revoke from two generations of code:
#
# * the registry's own Spring OAuth endpoint (ORCID-Source before April 2026,
#   ``OrcidAuthorizationCodeTokenGranter``, ``OrcidClientCredentialEndPointDelegatorImpl``,
#   ``OAuthErrorUtils``): an ``InvalidGrantException`` ("Invalid authorization code: <code>",
#   "Reused authorization code: <code>"), a ``RedirectMismatchException`` ("Redirect URI
#   mismatch."), an ``OAuth2Exception`` ("An authorization code must be supplied.") or a
#   ``InvalidScopeException`` ("Invalid scopes: ...") fell through ``OAuthErrorUtils`` to
#   ``500 {"error": "server_error", "error_description": <message>}``: a *refusal* dressed as
#   a server error (the old ``orcid-api-web/tutorial/api_errors.md`` listed them as 500s);
# * the authorization server the registry forwards to since April 2026 (ORCID-Source
#   ``OauthGenericCallsController``, ``RevokeController``, ``AuthorizationServerUtil``;
#   ``api_errors.md`` as of commit 75c2d7dc8f "Update api_errors with the auth server
#   updates (#7496)"): status and body pass through, documented as 400 "One of the provided
#   parameters is invalid, or, the provided token/code is invalid or expired" and 400
#   "Invalid authorization code: [code]"; when forwarding itself fails the registry answers
#   **401** with ``OAuthErrorUtils``' body, ``server_error`` for an I/O failure.
#
# So neither the status nor the ``error`` alone says whether ORCID refused the request or
# could not serve it: the documented descriptions decide first, then the error code, then
# the status.
_KNOWN_REFUSALS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), error, reason) for pattern, error, reason in (
        (r"^\s*Reused authorization code", "invalid_grant", "code_reused"),
        (r"^\s*Invalid authorization code", "invalid_grant", "code_invalid"),
        (r"^\s*Authorization code has expired", "invalid_grant", "code_expired"),
        (r"^\s*One of the provided parameters is invalid", "invalid_grant", "invalid_parameters"),
        (r"^\s*Redirect URI mismatch", "invalid_grant", "redirect_uri_mismatch"),
        (r"^\s*An authorization code must be supplied", "invalid_request", "code_missing"),
        (r"^\s*Invalid scopes?\b", "invalid_scope", "invalid_scope"),
        (r"^\s*Client ID mismatch", "invalid_client", "client_mismatch"),
        (r"^\s*(Bad client credentials|Client authentication failed)", "invalid_client", "bad_client_credentials"),
    )
)
# RFC 6749 section 5.2 and RFC 7009 section 2.2.1: errors that name a fault of the request.
_REFUSAL_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                             "unsupported_grant_type", "invalid_scope", "unsupported_token_type", "access_denied"})
# RFC 6749 section 4.1.2.1: the server could not serve the request.
_UNAVAILABLE_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


def _oauth_fields(body: Any) -> tuple[str | None, str]:
    """``error`` and ``error_description`` of an OAuth error body (ORCID's userinfo spells it
    ``error-description``, ORCID-Source ``OpenIDController``); a plain-text body is taken as
    the description."""
    if isinstance(body, dict):
        error = body.get("error") if isinstance(body.get("error"), str) else None
        desc = body.get("error_description") or body.get("error-description") or ""
        return error, str(desc)
    if isinstance(body, str) and len(body) < 500 and "<" not in body:
        return None, body.strip()
    return None, ""


def oauth_error(endpoint: str, status: int, body: Any) -> OrcidOAuthError | OrcidUnavailable:
    """An OAuth endpoint's non-200 answer, from either generation of ORCID's authorization
    server (see above), as an exception:

    * a documented refusal (by its description) is an :class:`OrcidOAuthError` with the
      RFC 6749 error it means and a ``reason`` (``code_reused``, ``redirect_uri_mismatch``,
      ...), whatever the status: the old server's 500 "Redirect URI mismatch." is a bad
      request, not an outage;
    * 401 ``invalid_token`` is :class:`TokenRevoked`;
    * ``server_error``/``temporarily_unavailable`` (also the new registry's 401 when it
      cannot reach its authorization server), and a 5xx that names no refusal, are
      :class:`OrcidUnavailable`;
    * any other ``error`` is an :class:`OrcidOAuthError`; a bare 401 is ORCID's "Bad client
      credentials".
    """
    error, desc = _oauth_fields(body)
    desc = desc[:200]
    for pattern, meaning, reason in _KNOWN_REFUSALS:
        if pattern.search(desc):
            return OrcidOAuthError(meaning, desc, status, reason=reason)
    if status == 401 and error == "invalid_token":  # fixed text: ORCID echoes the token in the description
        return TokenRevoked("invalid_token", f"ORCID rejected the access token ({endpoint})", status)
    if error in _UNAVAILABLE_ERRORS or (status >= 500 and error not in _REFUSAL_ERRORS):
        label = f"HTTP {status}" + (f" {error}" if error else "")
        return OrcidUnavailable(f"ORCID {endpoint} answered {label}", detail=OrcidDetail(status, error, desc))
    if error:
        return OrcidOAuthError(error, desc, status)
    if status == 401:
        return OrcidOAuthError("invalid_client", "Bad client credentials", 401, reason="bad_client_credentials")
    return OrcidOAuthError("http_%d" % status, f"ORCID {endpoint} refused the request", status)


# ORCID-Source ``OrcidBearerTokenFilter``: a token the authorization server could not look up
# (introspection failed) is refused with the same 401 ``invalid_token`` as a revoked one, but
# says so in its description. That is an outage, not a revocation.
_INTROSPECTION_FAILED = re.compile(r"Unable to obtain information from the authorization server", re.IGNORECASE)


def member_error(endpoint: str, status: int, body: Any) -> OrcidApiError | TokenRevoked | OrcidUnavailable:
    """A member API refusal as an exception. The v3.0 error body (orcid-model
    ``error-3.0.xsd``) has ``response-code``, ``developer-message``, ``user-message``,
    ``error-code`` and ``more-info``; a 409 duplicate names the existing put-code in its
    developer message. ORCID echoes the token in some 401 bodies, so only fixed text (never
    ``error_description``) goes into the 401 exception. Only a 401 ``invalid_token`` means
    the token is revoked (or expired); a 403 never does."""
    body = body if isinstance(body, dict) else {}
    if status == 401 and body.get("error") == "invalid_token":
        if _INTROSPECTION_FAILED.search(str(body.get("error_description") or "")):
            return OrcidUnavailable(f"ORCID {endpoint}: the authorization server could not check the access token",
                                    detail=OrcidDetail(401, "invalid_token", "Unable to obtain information from the authorization server"))
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

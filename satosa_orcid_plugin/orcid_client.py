"""The one place that talks HTTP to ORCID.

Every request goes through :meth:`OrcidClient._request`: a ``requests.Session`` with a
(connect, read) timeout always set, retries mounted for idempotent GETs only, and every
transport or protocol failure translated into the plugin's error tree. Tokens are sent
in the ``Authorization`` header or the form body, never in a URL, and never logged.

The authorization-code exchange is **never retried**: ORCID revokes every token issued
from a code that is presented twice ("Auth code behavior update: Tokens revoked if same
auth code is used twice", ORCID API news, 14 November 2017, https://members.orcid.org/api-news;
the token endpoint answers ``invalid_grant`` "Reused authorization code"). The answers of
``/oauth/token`` and ``/oauth/revoke`` are read by :func:`.orcid_records.oauth_error`, which
knows both generations of ORCID's authorization server.

Whether a stored token still works is asked with :meth:`OrcidClient.check_token`, and only a
401 ``invalid_token`` from the API's bearer-token filter ever means "revoked".

ORCID's key set (JWKS) is fetched by one background request at a time (single-flight): a
callback waits for it at most the configured ORCID timeouts (connect + read), a known key
set is used while a refresh is in flight, and a failed fetch is remembered for
``JWKS_FAILURE_TTL_SECONDS`` so that callbacks fail fast instead of queueing.
"""
from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .config import KINDS, OrcidSettings
from .errors import (
    InvalidIdToken,
    InvalidOrcidId,
    OrcidError,
    OrcidOAuthError,
    OrcidProtocolError,
    OrcidUnavailable,
    TokenRevoked,
)
from .orcid_id import OrcidId
from .orcid_records import (
    AffiliationSummary,
    Grant,
    affiliation_summaries,
    member_error,
    oauth_error,
    read_token_response,
)
from .tokens import TokenSet

if TYPE_CHECKING:
    import jwt  # imported where an id_token or a key set is handled: a worker serving only
    # linked users' logins never loads PyJWT

log = logging.getLogger(__name__)

JWKS_TTL_SECONDS = 24 * 3600
JWKS_MIN_REFRESH_SECONDS = 60
JWKS_FAILURE_TTL_SECONDS = 10  # a failed key-set fetch answers every callback at once for this long
ID_TOKEN_LEEWAY_SECONDS = 120

RequestObserver = Callable[[str, str, "int | None", float], None]
MEMBER_MEDIA_TYPE = "application/vnd.orcid+json"
# Scopes whose tokens ORCID's userinfo answers (ORCID-Source ``OpenIDController.getInfoFromToken``:
# a scope that combines ``/authenticate``, orcid-model ``ScopePathType``).
USERINFO_SCOPES = frozenset({"openid", "/authenticate"})


class TokenState(str, enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # ORCID could not tell (down, 403, an unexpected answer): change nothing


@dataclass(frozen=True)
class TokenStatus:
    """What :meth:`OrcidClient.check_token` found, and the answer that told it (for logs)."""

    state: TokenState
    evidence: str

    @property
    def revoked(self) -> bool:
        return self.state is TokenState.REVOKED


class _KeyFetch:
    """One fetch of ORCID's key set, shared by every callback that waits for it."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a fetch in flight does not survive a fork
        self.started = time.monotonic()
        self.done = threading.Event()
        self.keys: dict[str, jwt.PyJWK] = {}
        self.error: OrcidError | None = None
        self.warm = False  # a start-up warm-up: its failure is no news (the first callback tries again)


def http_session(*, transport_retries: bool, user_agent: str = "satosa-orcid-plugin", proxy: str | None = None,
                 ca_bundle: str | None = None) -> requests.Session:
    """The one way a ``requests`` session for ORCID is set up.

    ``transport_retries``: urllib3 retries idempotent GETs on connection errors and 502/503/504
    (the login path). The affiliation worker passes False: it owns its retries (backoff, the
    shared rate limit), and a POST is never retried below it.

    The environment is not consulted (``trust_env`` off): ``requests`` would otherwise read the
    proxy variables and ``.netrc`` on every request (measurable on the login path), and a
    variable set for something else would silently reroute ORCID traffic. ``proxy`` and
    ``ca_bundle`` (``orcid.proxy``, ``orcid.ca_bundle``) say it explicitly instead.
    """
    session = requests.Session()
    session.trust_env = False
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    if ca_bundle:
        session.verify = ca_bundle
    retry: Retry | int = 0
    if transport_retries:
        retry = Retry(total=2, connect=2, read=1, status=2, backoff_factor=0.2,
                      allowed_methods=frozenset({"GET"}), status_forcelist=(502, 503, 504), raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=20 if transport_retries else 4)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


class OrcidClient:
    """ORCID OAuth 2.0 / OpenID Connect client for one registered integration."""

    def __init__(
        self,
        settings: OrcidSettings,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        observer: RequestObserver | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.observer = observer
        self.session = session or http_session(transport_retries=True, proxy=settings.proxy,
                                               ca_bundle=settings.ca_bundle)
        base = settings.base_url
        self.authorize_endpoint = f"{base}/oauth/authorize"
        self.token_endpoint = f"{base}/oauth/token"
        self.revoke_endpoint = f"{base}/oauth/revoke"
        self.userinfo_endpoint = f"{base}/oauth/userinfo"
        self.jwks_uri = f"{base}/oauth/jwks"
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched_at = 0.0
        self._jwks_failure: OrcidError | None = None
        self._jwks_failed_at = 0.0
        self._jwks_fetch: _KeyFetch | None = None
        self._jwks_lock = threading.Lock()
        # The key set is fetched once per attempt: a retry would double the wait of every callback.
        self._jwks_session = http_session(transport_retries=False, proxy=settings.proxy, ca_bundle=settings.ca_bundle)  # one attempt: callbacks wait on it

    def __repr__(self) -> str:
        return f"OrcidClient({self.settings!r})"

    # --- the choke point ----------------------------------------------------------
    def _request(self, endpoint: str, method: str, url: str, *, oauth: bool = False,
                 session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
        """One request. A 5xx is :class:`OrcidUnavailable` here, except for the OAuth endpoints
        (``oauth=True``), whose 5xx can be a refusal (:func:`.orcid_records.oauth_error`)."""
        kwargs.setdefault("timeout", self.settings.timeouts.as_tuple())
        kwargs.setdefault("allow_redirects", False)
        headers = kwargs.setdefault("headers", {})
        headers.setdefault("Accept", "application/json")
        started = time.perf_counter()
        status: int | None = None
        try:
            response = (session or self.session).request(method, url, **kwargs)
            status = response.status_code
        except requests.Timeout as exc:
            raise OrcidUnavailable(f"ORCID {endpoint} timed out") from exc
        except requests.RequestException as exc:
            raise OrcidUnavailable(f"ORCID {endpoint} unreachable ({type(exc).__name__})") from exc
        finally:
            elapsed = time.perf_counter() - started
            log.debug("orcid %s %s -> %s in %.0f ms", method, endpoint, status, elapsed * 1000)
            if self.observer:
                self.observer(endpoint, method, status, elapsed)
        if status >= 500 and not oauth:
            raise OrcidUnavailable(f"ORCID {endpoint} answered HTTP {status}")
        return response

    @staticmethod
    def _json(endpoint: str, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            raise OrcidProtocolError(f"ORCID {endpoint} answered HTTP {response.status_code} with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise OrcidProtocolError(f"ORCID {endpoint} answered JSON that is not an object")
        return body

    @staticmethod
    def _body(response: requests.Response) -> Any:
        """The JSON of an error answer, or None when it is not JSON."""
        try:
            return response.json()
        except ValueError:
            return None

    def _oauth_error(self, endpoint: str, response: requests.Response) -> OrcidOAuthError | OrcidUnavailable:
        body = self._body(response)
        if body is None and response.content:
            body = response.text  # e.g. a bare "Bad client credentials"
        return oauth_error(endpoint, response.status_code, body)

    # --- browser leg ----------------------------------------------------------------
    def authorize_url(
        self,
        *,
        redirect_uri: str,
        state: str | None,
        nonce: str | None = None,
        lang: str | None = None,
        prefill: Mapping[str, str] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> str:
        scopes = scopes or self.settings.scopes
        params: dict[str, str] = {
            "client_id": self.settings.client_id,
            "response_type": "code",
            "scope": " ".join(scopes),
            "redirect_uri": redirect_uri,
        }
        if state:
            params["state"] = state
        if "openid" in scopes:
            if nonce:
                params["nonce"] = nonce
            if self.settings.prompt_login:
                params["prompt"] = "login"  # only honoured together with openid
        lang = lang or self.settings.lang
        if lang:
            params["lang"] = lang
        for key in ("given_names", "family_names", "email", "orcid"):
            value = (prefill or {}).get(key)
            if value:
                params[key] = value
        return f"{self.authorize_endpoint}?{urlencode(params, quote_via=_quote)}"

    # --- back channel ---------------------------------------------------------------
    def exchange_code(
        self, code: str, redirect_uri: str, *, nonce: str | None = None, require_id_token: bool | None = None
    ) -> Grant:
        """Exchange an authorization code once. Never retried, whatever happens.

        With ``openid`` configured an id_token is required (``require_id_token=False`` for
        the state-less Institutional Connect code, whose scopes ORCID chose): any id_token
        present is verified all the same.
        """
        if require_id_token is None:
            require_id_token = "openid" in self.settings.scopes
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
        }
        response = self._request("token", "POST", self.token_endpoint, oauth=True, data=form)
        if response.status_code != 200:
            raise self._oauth_error("token", response)
        body = self._json("token", response)
        try:
            return self._verified_grant(body, nonce=nonce, require_id_token=require_id_token)
        except OrcidError as exc:
            issued = body.get("access_token") if isinstance(body, dict) else None
            exc.issued_token = issued if isinstance(issued, str) and issued else None
            raise

    def _verified_grant(self, body: Any, *, nonce: str | None, require_id_token: bool) -> Grant:
        grant = read_token_response(body, sandbox=self.settings.sandbox)
        id_token = body.get("id_token")
        if require_id_token and (not isinstance(id_token, str) or not id_token):
            raise InvalidIdToken("openid was requested but the token response has no id_token")
        if id_token:
            if not isinstance(id_token, str):
                raise InvalidIdToken("id_token is not a string")
            claims = self.verify_id_token(id_token, nonce=nonce, orcid=grant.orcid)
            amr = claims.get("amr") if isinstance(claims.get("amr"), str) else None
            grant = replace(grant, amr=amr, id_token_claims=claims)
        return grant

    def revoke(self, token: str) -> None:
        form = {"client_id": self.settings.client_id, "client_secret": self.settings.client_secret, "token": token}
        response = self._request("revoke", "POST", self.revoke_endpoint, oauth=True, data=form)
        if response.status_code != 200:
            raise self._oauth_error("revoke", response)

    def userinfo(self, access_token: str) -> dict[str, Any]:
        """The OpenID Connect claims of a token with ``openid`` or ``/authenticate``.

        ORCID answers 403 ``access_denied`` "access_token is invalid" alike for a revoked
        token, a token without those scopes and a token its authorization server could not
        look up (ORCID-Source ``OpenIDController.getInfoFromToken``), so a 403 here is an
        :class:`OrcidOAuthError`, never :class:`TokenRevoked`; use :meth:`check_token`.
        """
        response = self._request("userinfo", "GET", self.userinfo_endpoint,
                                 headers={"Authorization": f"Bearer {access_token}"})
        if response.status_code == 403:
            raise OrcidOAuthError("access_denied", "userinfo refused the token (revoked, without openid or "
                                  "/authenticate, or not looked up: ORCID does not say which)", 403)
        if response.status_code != 200:
            raise self._oauth_error("userinfo", response)
        return self._json("userinfo", response)

    def check_token(self, orcid: OrcidId | str, tokens: TokenSet) -> TokenStatus:
        """Ask ORCID whether a stored token still works, with a question ORCID can answer
        for that token's scopes. Never raises for what ORCID answers.

        * Only a 401 ``invalid_token`` from the API's bearer-token filter means revoked (or
          expired): ORCID-Source ``OrcidBearerTokenFilter`` throws ``RevokedTokenException``
          for an inactive token before any scope is looked at. It is asked twice, because
          the same filter answers the same 401 when its token introspection fails on I/O.
        * A token with only ``openid``/``/authenticate`` asks userinfo first (200: active);
          userinfo's 403 says nothing (see :meth:`userinfo`), so the record read decides.
        * A member token (``/read-limited``, ``/activities/update``, ...) reads the
          employments summary (``GET /v3.0/{orcid}/employments``, the cheapest read every
          such token may make: ``/activities/update`` combines ``/read-public``, orcid-model
          ``ScopePathType``).
        * A 403, 404, 5xx or timeout is ``unknown``: nothing should change on it.
        """
        if tokens.scope and set(tokens.scope) <= USERINFO_SCOPES:
            try:
                claims = self.userinfo(tokens.access_token)
            except OrcidError as exc:
                log.debug("token check: userinfo answered %s; reading the record", exc.code)
            else:
                value = orcid.value if isinstance(orcid, OrcidId) else str(orcid)
                if claims.get("sub") == value:
                    return TokenStatus(TokenState.ACTIVE, "userinfo answered 200")
                return TokenStatus(TokenState.UNKNOWN, "userinfo answered for another iD")
        status = self._read_record(orcid, tokens.access_token)
        if status.revoked:
            status = self._read_record(orcid, tokens.access_token)  # confirm: see above
        return status

    def _read_record(self, orcid: OrcidId | str, access_token: str) -> TokenStatus:
        endpoint = "employments.get"
        try:
            response = self._request(endpoint, "GET", self._member_url(orcid, "employment", plural=True),
                                     headers=self._member_headers(access_token))
        except OrcidError as exc:
            return TokenStatus(TokenState.UNKNOWN, f"{endpoint}: {exc.message}")
        if response.status_code == 200:
            return TokenStatus(TokenState.ACTIVE, f"{endpoint} answered 200")
        error = self._member_error(endpoint, response)
        if isinstance(error, TokenRevoked):
            return TokenStatus(TokenState.REVOKED, f"{endpoint} answered 401 invalid_token")
        return TokenStatus(TokenState.UNKNOWN, f"{endpoint} answered HTTP {response.status_code}"
                                               f"{f' ({error.error_code})' if error.error_code else ''}: not a revocation")

    # --- member API v3.0: affiliations (ORCID-Source orcid-api-web/tutorial/affiliations.md) ---
    def _member_url(self, orcid: OrcidId | str, kind: str, put_code: int | None = None, *, plural: bool = False) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        value = orcid.value if isinstance(orcid, OrcidId) else OrcidId.parse(orcid).value
        url = f"{self.settings.api_base_url}/v3.0/{value}/{kind}{'s' if plural else ''}"
        return url if put_code is None else f"{url}/{int(put_code)}"

    @staticmethod
    def _member_headers(access_token: str, *, body: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": MEMBER_MEDIA_TYPE}
        if body:
            headers["Content-Type"] = MEMBER_MEDIA_TYPE
        return headers

    def _member_error(self, endpoint: str, response: requests.Response) -> Exception:
        return member_error(endpoint, response.status_code, self._body(response))

    def post_affiliation(self, orcid: OrcidId | str, kind: str, body: Mapping[str, Any], access_token: str) -> int:
        """Create an employment/education item; returns its put-code (from ``Location``).
        Never retried here: a retry is the caller's decision (it may already exist)."""
        endpoint = f"{kind}.post"
        response = self._request(endpoint, "POST", self._member_url(orcid, kind), data=json.dumps(body),
                                 headers=self._member_headers(access_token, body=True))
        if response.status_code != 201:
            raise self._member_error(endpoint, response)
        location = response.headers.get("Location", "")
        tail = location.rstrip("/").rsplit("/", 1)[-1]
        if not tail.isdigit():
            raise OrcidProtocolError(f"ORCID {endpoint} answered 201 without a put-code in Location")
        return int(tail)

    def put_affiliation(
        self, orcid: OrcidId | str, kind: str, put_code: int, body: Mapping[str, Any], access_token: str
    ) -> dict[str, Any]:
        """Replace an item we are the source of; ``body`` must carry the same ``put-code``."""
        endpoint = f"{kind}.put"
        response = self._request(endpoint, "PUT", self._member_url(orcid, kind, put_code), data=json.dumps(body),
                                 headers=self._member_headers(access_token, body=True))
        if response.status_code != 200:
            raise self._member_error(endpoint, response)
        return self._json(endpoint, response) if response.content else {}

    def delete_affiliation(self, orcid: OrcidId | str, kind: str, put_code: int, access_token: str) -> None:
        endpoint = f"{kind}.delete"
        response = self._request(endpoint, "DELETE", self._member_url(orcid, kind, put_code),
                                 headers=self._member_headers(access_token))
        if response.status_code not in (200, 204):
            raise self._member_error(endpoint, response)

    def list_affiliations(self, orcid: OrcidId | str, kind: str, access_token: str) -> list[AffiliationSummary]:
        """Every employment (or education) summary on the record, with its source client id."""
        endpoint = f"{kind}s.get"
        response = self._request(endpoint, "GET", self._member_url(orcid, kind, plural=True),
                                 headers=self._member_headers(access_token))
        if response.status_code != 200:
            raise self._member_error(endpoint, response)
        return affiliation_summaries(kind, self._json(endpoint, response))

    # --- id_token -------------------------------------------------------------------
    @property
    def key_wait_budget(self) -> float:
        """The longest a callback waits for ORCID's key set: one request's timeouts."""
        connect, read = self.settings.timeouts.as_tuple()
        return float(connect) + float(read)

    def prefetch_keys(self) -> None:
        """Start fetching ORCID's key set in the background (at start-up) when the scopes ask
        for an id_token; never waits and never fails."""
        if "openid" in self.settings.scopes:
            with self._jwks_lock:
                if not self._jwks:
                    self._start_key_fetch(warm=True)

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        started = time.monotonic()
        with self._jwks_lock:
            now = self.clock()
            age = now - self._jwks_fetched_at
            known = self._jwks.get(kid)
            if known is not None:
                if age > JWKS_TTL_SECONDS and not self._key_failure_cached(now):
                    self._start_key_fetch()  # refresh in the background; the known key serves meanwhile
                return known
            if self._jwks and age <= JWKS_MIN_REFRESH_SECONDS:
                raise InvalidIdToken(f"unknown signing key id {kid[:64]!r}")
            if self._key_failure_cached(now):
                raise _key_set_error(self._jwks_failure, "(remembered for a few seconds)")
            fetch = self._start_key_fetch()
        # Wait outside the lock, and never longer than one request may take.
        if not fetch.done.wait(max(0.0, self.key_wait_budget - (time.monotonic() - started))):
            raise OrcidUnavailable("ORCID jwks did not answer within the ORCID timeouts")
        if fetch.error is not None:
            raise _key_set_error(fetch.error)
        try:
            return fetch.keys[kid]
        except KeyError:
            raise InvalidIdToken(f"unknown signing key id {kid[:64]!r}") from None

    def _key_failure_cached(self, now: float) -> bool:
        return self._jwks_failure is not None and now - self._jwks_failed_at < JWKS_FAILURE_TTL_SECONDS

    def _start_key_fetch(self, *, warm: bool = False) -> _KeyFetch:
        """The fetch in flight, or a new one on a background thread (call with the lock held)."""
        fetch = self._jwks_fetch
        abandoned = fetch is not None and (fetch.pid != os.getpid()
                                           or time.monotonic() - fetch.started > 2 * self.key_wait_budget + 1)
        if fetch is not None and not fetch.done.is_set() and not abandoned:
            return fetch
        fetch = self._jwks_fetch = _KeyFetch()
        fetch.warm = warm
        threading.Thread(target=self._run_key_fetch, args=(fetch,), name="orcid-jwks", daemon=True).start()
        return fetch

    def _run_key_fetch(self, fetch: _KeyFetch) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        error: OrcidError | None = None
        try:
            keys = self._fetch_jwks()
        except OrcidError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a waiting callback must hear of any failure
            error = OrcidProtocolError(f"ORCID jwks could not be read ({type(exc).__name__})")
        with self._jwks_lock:
            if error is None:
                self._jwks, self._jwks_fetched_at, self._jwks_failure = keys, self.clock(), None
            elif fetch.warm:  # not remembered: the first callback asks ORCID itself
                log.info("could not fetch ORCID's key set at start-up (the first callback fetches it): %s",
                         error.message)
            else:
                self._jwks_failure, self._jwks_failed_at = error, self.clock()
                log.warning("could not fetch ORCID's key set: %s", error.message)
            fetch.keys, fetch.error = (keys or dict(self._jwks)), error
            if self._jwks_fetch is fetch:
                self._jwks_fetch = None
        fetch.done.set()

    def _fetch_jwks(self) -> dict[str, jwt.PyJWK]:
        import jwt

        response = self._request("jwks", "GET", self.jwks_uri, session=self._jwks_session)
        if response.status_code != 200:
            raise OrcidUnavailable(f"ORCID jwks answered HTTP {response.status_code}")
        body = self._json("jwks", response)
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in body.get("keys") or []:
            if isinstance(jwk, dict) and jwk.get("kid") and jwk.get("kty") == "RSA":
                try:
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256")
                except jwt.PyJWTError:
                    log.warning("ignoring an unreadable key in ORCID's JWKS")
        if not keys:
            raise OrcidProtocolError("ORCID jwks holds no usable RSA key")
        return keys

    def verify_id_token(self, id_token: str, *, nonce: str | None, orcid: OrcidId) -> dict[str, Any]:
        """RS256 against the JWKS; iss, aud, exp, nonce, and sub == the token response's orcid."""
        import jwt

        header = _jose_header(id_token)  # jwt.decode below checks the whole token again
        if header.get("alg") != "RS256":
            raise InvalidIdToken(f"unexpected alg {str(header.get('alg'))[:16]!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidIdToken("no kid in header")
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(
                id_token,
                key=key.key,
                algorithms=["RS256"],
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                leeway=ID_TOKEN_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidIdToken("expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidIdToken("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidIdToken("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidIdToken("bad signature") from None
        except jwt.PyJWTError as exc:
            raise InvalidIdToken(type(exc).__name__) from None
        if nonce is not None and not _equal(str(claims.get("nonce", "")), nonce):
            raise InvalidIdToken("nonce mismatch")
        try:
            sub = OrcidId.parse(claims.get("sub"), sandbox=orcid.sandbox)
        except InvalidOrcidId:
            raise InvalidIdToken("sub is not an ORCID iD") from None
        if sub != orcid:
            raise InvalidIdToken("sub does not match the token response's orcid")
        return claims


def _jose_header(token: Any) -> dict[str, Any]:
    """The JOSE header of a compact JWS (RFC 7515 section 7.1), to pick the key: decoded
    here, because ``jwt.get_unverified_header`` would parse and scan the whole token once more
    before ``jwt.decode`` does."""
    parts = token.split(".") if isinstance(token, str) else ()
    if len(parts) != 3:
        raise InvalidIdToken("not a JWT")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidIdToken("not a JWT") from None
    if not isinstance(header, dict):
        raise InvalidIdToken("not a JWT")
    return header


def _key_set_error(error: OrcidError | None, note: str = "") -> OrcidError:
    """A fresh exception for each waiting callback (one exception object is not shared between
    threads): a protocol error stays one, anything else is ORCID being unavailable."""
    message = f"ORCID's key set could not be fetched: {error.message if error else 'unknown error'}" + (f" {note}" if note else "")
    return OrcidProtocolError(message) if isinstance(error, OrcidProtocolError) else OrcidUnavailable(message)


def _quote(value: str, safe: str = "", encoding: str | None = None, errors: str | None = None) -> str:
    from urllib.parse import quote

    return quote(value, safe="", encoding=encoding, errors=errors)


def _equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())

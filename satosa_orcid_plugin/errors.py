"""One error tree for the whole plugin.

Every exception the plugin raises derives from :class:`OrcidPluginError`, itself a
``SATOSAError`` so that SATOSA treats our errors as its own. Every error has one shape:

* ``code``: short and machine-readable (used in logs, metrics and the error page);
* ``message``: one human-readable line;
* ``detail``: what ORCID said, when the error comes from an ORCID answer (an
  :class:`OrcidDetail`: HTTP status, ORCID's error code and its developer message), else
  None. ``status``, ``error_code`` and ``developer_message`` read it on every error.

Leaf classes say, with a builtin second base, what kind of failure they are.
"""
from __future__ import annotations

from dataclasses import dataclass

from satosa.exception import SATOSAError


@dataclass(frozen=True)
class OrcidDetail:
    """What ORCID answered: the HTTP status, ORCID's error code (an OAuth ``error`` such as
    ``invalid_grant``, RFC 6749 section 5.2, or a member API ``error-code`` such as 9045,
    orcid-model ``error-3.0.xsd``) and its developer message (``error_description`` or
    ``developer-message``)."""

    status: int | None = None
    error_code: int | str | None = None
    developer_message: str = ""


class OrcidPluginError(SATOSAError):
    """Root of every error raised by satosa_orcid_plugin."""

    code = "plugin_error"

    def __init__(self, message: str | None = None, *, detail: OrcidDetail | None = None) -> None:
        self.detail = detail
        super().__init__(message or self.__doc__.strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    @property
    def status(self) -> int | None:
        return self.detail.status if self.detail else None

    @property
    def error_code(self) -> int | str | None:
        return self.detail.error_code if self.detail else None

    @property
    def developer_message(self) -> str:
        return self.detail.developer_message if self.detail else ""


# --- configuration -------------------------------------------------------------------
class ConfigError(OrcidPluginError, ValueError):
    """The plugin configuration is invalid."""

    code = "config_error"

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"satosa-orcid config: {key}: {problem}")


# --- values --------------------------------------------------------------------------
class InvalidOrcidId(OrcidPluginError, ValueError):
    """Not a valid ORCID iD."""

    code = "invalid_orcid_id"


# --- talking to ORCID ----------------------------------------------------------------
class OrcidError(OrcidPluginError):
    """ORCID could not be used for this request."""

    # A token ORCID issued in an answer that was then refused (e.g. an id_token that does not
    # verify): set by OrcidClient.exchange_code so the caller can revoke it.
    issued_token: str | None = None

    code = "orcid_error"


class OrcidUnavailable(OrcidError, ConnectionError):
    """ORCID did not answer (refused, timed out, dropped, or a 5xx/503)."""

    code = "orcid_unavailable"


class OrcidProtocolError(OrcidError):
    """ORCID answered with something we cannot read."""

    code = "orcid_bad_response"


class OrcidOAuthError(OrcidError):
    """ORCID refused an OAuth request (error / error_description).

    ``reason`` names a refusal ORCID documents (``code_reused``, ``redirect_uri_mismatch``,
    ``invalid_parameters``, ...) whichever generation of its authorization server answered,
    else None."""

    code = "orcid_oauth_error"

    def __init__(self, error: str, description: str = "", status: int | None = None, *,
                 reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"ORCID returned {error}" + (f": {description}" if description else ""),
                         detail=OrcidDetail(status, error, description))


class TokenRevoked(OrcidOAuthError):
    """ORCID says the access token is no longer valid (401 invalid_token)."""

    code = "token_revoked"


class InvalidIdToken(OrcidError):
    """The id_token from ORCID failed verification."""

    code = "invalid_id_token"

    def __init__(self, reason: str) -> None:
        super().__init__(f"id_token rejected: {reason}")


# --- the browser flow ----------------------------------------------------------------
class FlowError(OrcidPluginError):
    """The browser came back in a way we cannot continue."""

    code = "flow_error"


class MissingFlowState(FlowError):
    """No ORCID hop is in progress for this browser (state cookie missing or expired)."""

    code = "missing_state"


class StateMismatch(FlowError):
    """The OAuth state in the callback does not match the one we sent."""

    code = "state_mismatch"


class BadCallback(FlowError):
    """The callback carried neither a code nor an error."""

    code = "bad_callback"


class UserDenied(FlowError):
    """The researcher declined to connect their ORCID iD."""

    code = "access_denied"


# --- the store -----------------------------------------------------------------------
class StoreError(OrcidPluginError):
    """The link store failed."""

    code = "store_error"


class LinkConflict(StoreError):
    """This ORCID iD is already linked to another user."""

    code = "link_conflict"


class NotFound(StoreError, LookupError):
    """No such link."""

    code = "not_found"


# --- the member API (affiliations) ----------------------------------------------------
class OrcidApiError(OrcidError):
    """ORCID's member API refused a request (an error body with response-code and error-code)."""

    code = "orcid_api_error"

    def __init__(self, status: int, error_code: int | None = None, developer_message: str = "") -> None:
        label = f"HTTP {status}" + (f", error {error_code}" if error_code is not None else "")
        super().__init__(f"ORCID answered {label}" + (f": {developer_message}" if developer_message else ""),
                         detail=OrcidDetail(status, error_code, developer_message))


class OrcidValidationError(OrcidApiError, ValueError):
    """ORCID rejected the item we sent (400, e.g. 9045 unknown organisation, 9060 no city/country)."""

    code = "orcid_validation_error"


class DuplicateItem(OrcidApiError):
    """ORCID already holds this item from us (409, matched by our ``self`` external id)."""

    code = "orcid_duplicate_item"

    def __init__(self, status: int, error_code: int | None, developer_message: str, put_code: int) -> None:
        self.put_code = put_code
        super().__init__(status, error_code, developer_message)


class ConnectMismatch(FlowError):
    """The ORCID account signed in now is not the one that sent the connect code."""

    code = "connect_mismatch"


class CallbackReplayed(FlowError):
    """This ORCID callback (or Institutional Connect code) was already processed."""

    code = "callback_replayed"


class ConnectThrottled(FlowError):
    """Too many Institutional Connect codes from this client (or in total): nothing was sent to ORCID."""

    code = "connect_throttled"

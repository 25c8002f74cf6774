"""One error tree for the whole plugin.

Every exception the plugin raises derives from :class:`OrcidPluginError`, itself a
``SATOSAError`` so that SATOSA treats our errors as its own. Leaf classes carry a short
machine-readable ``code`` (used in logs, metrics and the error page) and say, with a
builtin second base, what kind of failure they are. ``retryable`` tells callers whether
the same call may safely be made again; the authorization-code exchange never is.
"""
from __future__ import annotations

from satosa.exception import SATOSAError


class OrcidPluginError(SATOSAError):
    """Root of every error raised by satosa_orcid_plugin."""

    code = "plugin_error"
    retryable = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__.strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


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

    code = "orcid_error"


class OrcidUnavailable(OrcidError, ConnectionError):
    """ORCID did not answer (refused, timed out, dropped, or a 5xx/503)."""

    code = "orcid_unavailable"
    retryable = True


class OrcidProtocolError(OrcidError):
    """ORCID answered with something we cannot read."""

    code = "orcid_bad_response"


class OrcidOAuthError(OrcidError):
    """ORCID refused an OAuth request (error / error_description)."""

    code = "orcid_oauth_error"

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"ORCID returned {error}" + (f": {description}" if description else ""))


class TokenRevoked(OrcidOAuthError):
    """ORCID says the access token is no longer valid (401 invalid_token)."""

    code = "token_revoked"


class InvalidIdToken(OrcidError):
    """The id_token from ORCID failed verification."""

    code = "invalid_id_token"

    def __init__(self, reason: str) -> None:
        self.reason = reason
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
    retryable = True


class LinkConflict(StoreError):
    """This ORCID iD is already linked to another user."""

    code = "link_conflict"
    retryable = False


class NotFound(StoreError, LookupError):
    """No such link."""

    code = "not_found"
    retryable = False


# --- the member API (affiliations) ----------------------------------------------------
class OrcidApiError(OrcidError):
    """ORCID's member API refused a request (an error body with response-code and error-code)."""

    code = "orcid_api_error"

    def __init__(self, status: int, error_code: int | None = None, developer_message: str = "") -> None:
        self.status = status
        self.error_code = error_code
        self.developer_message = developer_message
        label = f"HTTP {status}" + (f", error {error_code}" if error_code is not None else "")
        super().__init__(f"ORCID answered {label}" + (f": {developer_message}" if developer_message else ""))


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
    """This ORCID callback was already processed."""

    code = "callback_replayed"

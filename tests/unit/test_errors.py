"""Every error has one shape: code, message, and ORCID's detail when ORCID said something."""
from __future__ import annotations

import inspect
import pytest

from satosa_orcid_plugin import errors
from satosa_orcid_plugin.config import parse_config
from satosa_orcid_plugin.errors import (
    CallbackReplayed,
    ConfigError,
    DuplicateItem,
    InvalidIdToken,
    OrcidApiError,
    OrcidDetail,
    OrcidOAuthError,
    OrcidPluginError,
    OrcidValidationError,
    TokenRevoked,
)
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.orcid_records import Grant
from satosa_orcid_plugin.wiring import login_service
from satosa_orcid_plugin.tokens import TokenCipher

ERROR_CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, OrcidPluginError)]


def _example(cls: type[OrcidPluginError]) -> OrcidPluginError:
    if issubclass(cls, DuplicateItem):
        return cls(409, 9021, "see put-code 7", 7)
    if issubclass(cls, OrcidApiError):
        return cls(400, 9045, "no such organisation")
    if issubclass(cls, OrcidOAuthError):
        return cls("invalid_grant", "Reused authorization code", 400)
    if issubclass(cls, ConfigError):
        return cls("orcid.client_id", "is required")
    if issubclass(cls, InvalidIdToken):
        return cls("expired")
    return cls()


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_has_the_one_shape(cls):
    exc = _example(cls)
    assert isinstance(exc.code, str) and exc.code
    assert isinstance(exc.message, str) and exc.message
    assert exc.detail is None or isinstance(exc.detail, OrcidDetail)
    assert (exc.status, exc.error_code, exc.developer_message) == (
        (exc.detail.status, exc.detail.error_code, exc.detail.developer_message) if exc.detail else (None, None, ""))
    assert not hasattr(exc, "retryable")


def test_oauth_api_and_validation_errors_carry_orcids_detail_the_same_way():
    oauth = OrcidOAuthError("invalid_grant", "Reused authorization code", 400)
    api = OrcidApiError(403, 9010, "You are not the source")
    validation = OrcidValidationError(400, 9060, "City and country are required")
    assert oauth.detail == OrcidDetail(400, "invalid_grant", "Reused authorization code")
    assert api.detail == OrcidDetail(403, 9010, "You are not the source")
    assert validation.detail == OrcidDetail(400, 9060, "City and country are required")
    assert TokenRevoked("invalid_token", "fixed text", 401).status == 401
    assert oauth.message == "ORCID returned invalid_grant: Reused authorization code"
    assert api.message == "ORCID answered HTTP 403, error 9010: You are not the source"
    assert ConfigError("store", "is required").detail is None


class _Client:
    def __init__(self):
        self.exchanged = 0

    def exchange_code(self, code, redirect_uri, *, nonce=None, require_id_token=None):
        self.exchanged += 1
        return Grant(OrcidId("0000-0002-1825-0097"), "at", None, None, ("/authenticate",))


def test_a_reused_connect_code_raises_callback_replayed_and_is_not_exchanged_again(sqlite_url):
    config = parse_config({
        "orcid": {"environment": "sandbox", "client_id": "APP-ABCDEFGHIJKLMNOP", "client_secret": "s"},
        "user_key_attribute": "eppn",
        "store": {"database_url": sqlite_url, "token_keys": [TokenCipher.generate_key()]},
    })
    service = login_service(config)
    service.client = client = _Client()
    service.connect_exchange("code-1", "https://proxy.example.org/orcid/connect")
    with pytest.raises(CallbackReplayed, match="already used"):
        service.connect_exchange("code-1", "https://proxy.example.org/orcid/connect")
    assert client.exchanged == 1

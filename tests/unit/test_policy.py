from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from satosa_orcid_plugin.config import parse_config
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.policy import Action, decide

ID = OrcidId("0000-0002-1825-0097")


def config(**extra):
    raw = {
        "orcid": {"environment": "emulator", "base_url": "http://127.0.0.1:1", "client_id": "c", "client_secret": "s"},
        "user_key_attribute": "uid",
        "store": {"database_url": "sqlite:///x.db", "token_keys": Fernet.generate_key().decode()},
        "policy": {"default": "ask", "requesters": {"req-sp": "require", "off-sp": "never"}},
    }
    raw.update(extra)
    return parse_config(raw)


@pytest.mark.parametrize(
    "kw, action, reason",
    [
        (dict(user_key="u", requester="sp", linked=ID, declined=None), Action.RELEASE, "linked"),
        (dict(user_key="u", requester="off-sp", linked=ID, declined=None), Action.RELEASE, "linked"),
        (dict(user_key="u", requester="sp", linked=None, declined=None), Action.HOP, "not_linked"),
        (dict(user_key=None, requester="sp", linked=None, declined=None), Action.SKIP, "no_user_key"),
        (dict(user_key="u", requester="off-sp", linked=None, declined=None), Action.SKIP, "not_triggered"),
        (dict(user_key="u", requester="sp", linked=None, declined="not_now"), Action.SKIP, "declined_not_now"),
        (dict(user_key="u", requester="sp", linked=None, declined="never"), Action.SKIP, "declined_never"),
        (dict(user_key="u", requester="req-sp", linked=None, declined="never"), Action.HOP, "not_linked"),
        (dict(user_key="u", requester="https://orcid.org/saml2/sp/1", linked=None, declined=None), Action.SKIP, "orcid_signin"),
        (dict(user_key="u", requester="sp", linked=None, declined=None, asserted=ID), Action.RELEASE, "asserted_by_trusted_idp"),
    ],
)
def test_decisions(kw, action, reason):
    d = decide(config(), **kw)
    assert (d.action, d.reason) == (action, reason)


def test_sp_that_requests_the_attribute_is_asked_even_when_default_is_never():
    c = config(policy={"default": "never"})
    assert decide(c, user_key="u", requester="sp", linked=None, declined=None).action is Action.SKIP
    d = decide(c, user_key="u", requester="sp", linked=None, declined=None, requested=True)
    assert d.action is Action.HOP and d.mode == "ask"


def test_require_mode_is_reported():
    assert decide(config(), user_key="u", requester="req-sp", linked=None, declined=None).required

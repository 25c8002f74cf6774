"""Authlib as an OpenID Connect relying party of the proxy (an RP library other than pyop, the
proxy's own OP library).

Discovery, the authorization code flow with PKCE (S256), the token request authenticated with
client_secret_basic, the id_token validated by Authlib against the proxy's JWKS (signature,
issuer, audience, expiry, nonce, at_hash), and ``eduperson_orcid`` as a JSON string in userinfo
and, when the RP asks for it through the ``claims`` parameter (OIDC Core 5.5), in the id_token.
The first login hops through ORCID, the second takes the fast path and uses the scope name
other R&E OPs use, ``eduperson_orcid``.
"""
from __future__ import annotations

import json
import warnings

import pytest
import requests
from interopkit import ACCOUNTS, AUTHLIB_CLIENT_ID, require_module, walk

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def discovery(interop) -> dict:
    require_module("authlib", "Authlib")
    layout = interop.layout
    config = requests.get(f"{layout.proxy_base}/.well-known/openid-configuration",
                          verify=str(layout.tls_cert), timeout=10).json()
    assert config["issuer"] == layout.proxy_base
    return config


def tls(interop) -> str:
    """The proxy's self-signed certificate, passed on every call (a session's ``verify`` loses
    to ``REQUESTS_CA_BUNDLE`` in requests when the call does not name one)."""
    return str(interop.layout.tls_cert)


def rp_session(interop, scope: str):
    from authlib.integrations.requests_client import OAuth2Session

    client = OAuth2Session(AUTHLIB_CLIENT_ID, interop.authlib_client["client_secret"], scope=scope,
                           redirect_uri=interop.authlib_redirect_uri, code_challenge_method="S256",
                           token_endpoint_auth_method="client_secret_basic")
    return client


def authorize(interop, discovery, client, **params) -> tuple[str, str, str]:
    """Start at the authorization endpoint, walk the login; (callback URL, verifier, nonce)."""
    from authlib.common.security import generate_token

    verifier, nonce = generate_token(48), generate_token(20)
    url, _state = client.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier,
                                                  nonce=nonce, **params)
    browser = interop.browser(stop_at=interop.authlib_redirect_uri)

    def at_rp(r) -> bool:
        return r.is_redirect and r.headers["Location"].startswith(interop.authlib_redirect_uri)

    response = walk(interop.layout, browser, browser.get(url), at_rp, "authlib")
    browser.session.close()  # no idle keep-alive connection holds up the proxy's shutdown
    return response.headers["Location"], verifier, nonce


def validated_id_token(discovery, interop, token: dict, nonce: str) -> dict:
    with warnings.catch_warnings():  # Authlib 1.6+ points to joserfc; authlib.jose stays until 2.0
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebKey, jwt
        from authlib.oidc.core import CodeIDToken

    keys = JsonWebKey.import_key_set(requests.get(discovery["jwks_uri"], verify=str(interop.layout.tls_cert),
                                                  timeout=10).json())
    claims = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": discovery["issuer"]}},
                        claims_params={"nonce": nonce, "client_id": AUTHLIB_CLIENT_ID,
                                       "access_token": token["access_token"]})
    claims.validate(leeway=60)
    return dict(claims)


def test_authlib_code_flow_with_pkce_gets_eduperson_orcid_as_a_string(interop, discovery):
    _, orcid = ACCOUNTS["authlib"]
    expected = f"https://orcid.org/{orcid}"
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert {"orcid", "eduperson_orcid"} <= set(discovery["scopes_supported"])
    assert "eduperson_orcid" in discovery["claims_supported"]

    # 1. the hop; the RP asks for the claim in the id_token too (claims parameter)
    client = rp_session(interop, "openid orcid")
    callback, verifier, nonce = authorize(
        interop, discovery, client, claims=json.dumps({"id_token": {"eduperson_orcid": {"essential": True}}}))
    token = client.fetch_token(discovery["token_endpoint"], authorization_response=callback, code_verifier=verifier,
                               verify=tls(interop))
    id_token = validated_id_token(discovery, interop, token, nonce)
    assert id_token["eduperson_orcid"] == expected
    userinfo = client.get(discovery["userinfo_endpoint"], verify=tls(interop)).json()
    assert userinfo["eduperson_orcid"] == expected
    assert userinfo["sub"] == id_token["sub"]
    client.close()

    # 2. the fast path, scope eduperson_orcid, no claims parameter: userinfo only
    client = rp_session(interop, "openid eduperson_orcid")
    callback, verifier, nonce = authorize(interop, discovery, client)
    token = client.fetch_token(discovery["token_endpoint"], authorization_response=callback, code_verifier=verifier,
                               verify=tls(interop))
    id_token = validated_id_token(discovery, interop, token, nonce)
    assert "eduperson_orcid" not in id_token
    assert client.get(discovery["userinfo_endpoint"], verify=tls(interop)).json()["eduperson_orcid"] == expected
    client.close()


def test_a_code_redeemed_with_the_wrong_pkce_verifier_is_refused(interop, discovery):
    from authlib.common.security import generate_token
    from authlib.integrations.base_client import OAuthError

    client = rp_session(interop, "openid orcid")
    callback, _verifier, _nonce = authorize(interop, discovery, client)
    with pytest.raises(OAuthError):
        client.fetch_token(discovery["token_endpoint"], authorization_response=callback,
                           code_verifier=generate_token(48), verify=tls(interop))
    client.close()

"""A demo institutional SAML IdP (werkzeug WSGI app over pysaml2 ``server.Server``).

Users ``alice``, ``bob`` and ``carol``, password ``demo`` (shown on the login page). The IdP
answers AuthnRequests (HTTP-Redirect or HTTP-POST) with a signed assertion, a persistent
NameID and eduPerson attributes, POSTed to the requester's ACS by an auto-submitting form
that also has a visible "Continue" button for clients without JavaScript.

Tests use :class:`DemoIdP` in-process (``respond()``) and :func:`demo_user_attributes`.

>>> demo_user_attributes("alice")["eduPersonPrincipalName"]
['alice@demo.example.org']
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import uuid
from typing import Any

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .layout import DEMO_ATTRIBUTE_NAMES, DEMO_SCOPE, DemoLayout
from .webapp import PageApp


__all__ = [
    "DEMO_SCOPE",
    "DEMO_PASSWORD",
    "DEMO_USERS",
    "DEMO_ATTRIBUTE_NAMES",
    "demo_user_attributes",
    "DemoIdP",
    "make_app_from_env",
]

DEMO_PASSWORD = "demo"

# username -> (givenName, sn, ou, title, eduPersonAffiliation)
_PEOPLE: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "alice": ("Alice", "Andersson", "Department of Physics", "Research Fellow", ("member", "staff", "faculty")),
    "bob": ("Bob", "Baker", "Department of Chemistry", "Doctoral Researcher", ("member", "student")),
    "carol": ("Carol", "Chen", "University Library", "Research Data Librarian", ("member", "staff")),
}
DEMO_USERS: tuple[str, ...] = tuple(_PEOPLE)



def demo_user_attributes(username: str) -> dict[str, list[str]]:
    """The attributes (friendly name -> values) the demo IdP releases for ``username``."""
    try:
        given, sn, ou, title, affiliations = _PEOPLE[username]
    except KeyError:
        raise KeyError(f"unknown demo user {username!r} (known: {', '.join(DEMO_USERS)})") from None
    unique = uuid.uuid5(uuid.NAMESPACE_URL, f"https://{DEMO_SCOPE}/people/{username}").hex
    return {
        "eduPersonPrincipalName": [f"{username}@{DEMO_SCOPE}"],
        "eduPersonUniqueId": [f"{unique}@{DEMO_SCOPE}"],
        "givenName": [given],
        "sn": [sn],
        "displayName": [f"{given} {sn}"],
        "mail": [f"{username}@{DEMO_SCOPE}"],
        "eduPersonAffiliation": list(affiliations),
        "eduPersonScopedAffiliation": [f"{a}@{DEMO_SCOPE}" for a in affiliations],
        "ou": [ou],
        "title": [title],
    }


def check_password(username: str, password: str) -> bool:
    return username in _PEOPLE and hmac.compare_digest(password.encode(), DEMO_PASSWORD.encode())


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem} .box{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}
label{display:block;margin:.5rem 0} input[type=text],input[type=password]{width:100%;padding:.4rem}
button{padding:.5rem 1.2rem;font-size:1rem} .error{color:#a00} code{background:#f4f4f4;padding:0 .2rem}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
"""



def _hidden(fields: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items()
    )


class DemoIdP(PageApp):
    """The demo IdP: ``respond()`` for tests, and a WSGI app (``__call__``) for browsers."""

    style = _STYLE

    def __init__(self, layout: "DemoLayout | None" = None, *, config: dict[str, Any] | None = None,
                 persistent_id_salt: str | None = None):
        from saml2.config import IdPConfig
        from saml2.server import Server

        if config is None:
            if layout is None:
                raise TypeError("DemoIdP needs a layout or a pysaml2 config dict")
            config = layout.idp_saml_config()
        if persistent_id_salt is None:
            persistent_id_salt = layout.secrets.get("idp_persistent_id_salt", "") if layout else ""
        self.layout = layout
        self.server = Server(config=IdPConfig().load(config))
        self.entity_id: str = self.server.config.entityid
        self._salt = persistent_id_salt or secrets.token_hex(16)
        self._metadata_path = layout.idp_metadata if layout else None
        self.url_map = Map(
            [
                Rule("/", endpoint="home", methods=["GET"]),
                Rule("/idp.xml", endpoint="metadata", methods=["GET"]),
                Rule("/sso/redirect", endpoint="sso_redirect", methods=["GET"]),
                Rule("/sso/post", endpoint="sso_post", methods=["POST"]),
                Rule("/login", endpoint="login", methods=["POST"]),
            ]
        )

    # --- SAML -------------------------------------------------------------------------
    def parse_request(self, saml_request: str, binding: str, *, relay_state: str | None = None,
                      sigalg: str | None = None, signature: str | None = None):
        """Parse an AuthnRequest from a known SP; its signature is required and checked.

        With HTTP-Redirect the signature travels in the query (``SigAlg``, ``Signature``, and
        the ``RelayState`` it covers); with HTTP-POST it is inside the XML.
        """
        return self.server.parse_authn_request(
            saml_request, binding, relay_state=relay_state, sigalg=sigalg, signature=signature
        ).message

    def persistent_id(self, username: str, sp_entity_id: str) -> str:
        """Stable, opaque, per-SP persistent NameID value (like Shibboleth's computed IDs)."""
        digest = hashlib.sha256(f"{self._salt}!{self.entity_id}!{sp_entity_id}!{username}".encode()).digest()
        return base64.b64encode(digest).decode("ascii")

    def create_response(self, saml_request: str, binding: str, username: str, *, relay_state: str | None = None,
                        sigalg: str | None = None, signature: str | None = None) -> tuple[str, str]:
        """``(destination ACS URL, signed Response XML)`` for ``username``."""
        from saml2 import BINDING_HTTP_POST
        from saml2.authn_context import PASSWORDPROTECTEDTRANSPORT
        from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
        from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

        message = self.parse_request(saml_request, binding, relay_state=relay_state, sigalg=sigalg,
                                     signature=signature)
        args = self.server.response_args(message, [BINDING_HTTP_POST])
        name_id = NameID(
            format=NAMEID_FORMAT_PERSISTENT,
            text=self.persistent_id(username, args["sp_entity_id"]),
            name_qualifier=self.entity_id,
            sp_name_qualifier=args["sp_entity_id"],
        )
        response = self.server.create_authn_response(
            identity=demo_user_attributes(username),
            userid=username,
            name_id=name_id,
            authn={"class_ref": PASSWORDPROTECTEDTRANSPORT, "authn_auth": self.entity_id},
            sign_assertion=True,
            sign_response=True,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            **args,
        )
        return args["destination"], str(response)

    def respond(self, saml_request: str, relay_state: str | None, binding: str, username: str, *,
                sigalg: str | None = None, signature: str | None = None) -> tuple[str, dict[str, str]]:
        """``(ACS URL, {"SAMLResponse", "RelayState"})``: the HTTP-POST the browser would send.

        ``sigalg``/``signature`` are the HTTP-Redirect query's ``SigAlg``/``Signature``.
        """
        destination, xml = self.create_response(saml_request, binding, username, relay_state=relay_state,
                                                sigalg=sigalg, signature=signature)
        fields = {"SAMLResponse": base64.b64encode(xml.encode("utf-8")).decode("ascii")}
        if relay_state:
            fields["RelayState"] = relay_state
        return destination, fields

    # --- WSGI -------------------------------------------------------------------------
    def _on_home(self, request: Request) -> Response:
        return self._html(
            "Demo University IdP",
            "<h1>Demo University identity provider</h1>"
            f"<p>Entity id <code>{html.escape(self.entity_id)}</code> "
            "(<a href='/idp.xml'>metadata</a>). Sign-ins start at a service provider.</p>",
        )

    def _on_metadata(self, request: Request) -> Response:
        if not self._metadata_path or not self._metadata_path.is_file():
            raise NotFound()
        return Response(self._metadata_path.read_bytes(), mimetype="application/samlmetadata+xml")

    def _on_sso_redirect(self, request: Request) -> Response:
        from saml2 import BINDING_HTTP_REDIRECT

        return self._login_form(request.args, BINDING_HTTP_REDIRECT)

    def _on_sso_post(self, request: Request) -> Response:
        from saml2 import BINDING_HTTP_POST

        return self._login_form(request.form, BINDING_HTTP_POST)

    def _login_form(self, params, binding: str, error: str = "", username: str = "") -> Response:
        saml_request = params.get("SAMLRequest")
        if not saml_request:
            raise BadRequest("SAMLRequest is missing")
        signed = {k: params[k] for k in ("RelayState", "SigAlg", "Signature") if params.get(k)}
        try:
            message = self.parse_request(saml_request, binding, relay_state=signed.get("RelayState"),
                                         sigalg=signed.get("SigAlg"), signature=signed.get("Signature"))
        except Exception as exc:  # any parse/verification failure is the client's fault here
            raise BadRequest(f"Invalid SAMLRequest: {type(exc).__name__}: {exc}") from None
        hidden = {"SAMLRequest": saml_request, "binding": binding, **signed}
        users = "".join(
            f"<tr><td><code>{u}</code></td><td>{html.escape(demo_user_attributes(u)['displayName'][0])}</td></tr>"
            for u in DEMO_USERS
        )
        err = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
        body = (
            "<h1>Demo University: sign in</h1>"
            f"<p><code>{html.escape(message.issuer.text if message.issuer is not None else '?')}</code>"
            " asks you to sign in.</p>"
            f"{err}<form method=post action='/login' class=box id=login-form>{_hidden(hidden)}"
            f"<label>Username <input type=text name=username value='{html.escape(username)}' autocomplete=username autofocus></label>"
            "<label>Password <input type=password name=password autocomplete=current-password></label>"
            "<button type=submit>Sign in</button></form>"
            f"<div class=box><p>Demo accounts (password <code>{DEMO_PASSWORD}</code>):</p>"
            f"<table><tr><th>Username</th><th>Name</th></tr>{users}</table></div>"
        )
        return self._html("Demo University: sign in", body, 401 if error else 200)

    def _on_login(self, request: Request) -> Response:
        form = request.form
        binding = form.get("binding", "")
        username = form.get("username", "").strip().lower()
        if not check_password(username, form.get("password", "")):
            return self._login_form(form, binding, "Unknown user or wrong password.", username)
        try:
            destination, fields = self.respond(form["SAMLRequest"], form.get("RelayState"), binding, username,
                                               sigalg=form.get("SigAlg"), signature=form.get("Signature"))
        except Exception as exc:
            raise BadRequest(f"Cannot answer this SAMLRequest: {exc}") from None
        return self._html("Sending you back", post_form_body(destination, fields, "Signed in. Returning to the service..."))


def post_form_body(action: str, fields: dict[str, str], message: str) -> str:
    """An auto-submitting POST form with a visible Continue button (for clients without JS)."""
    return (
        f"<p>{html.escape(message)}</p>"
        f"<form method=post action='{html.escape(action)}' id=saml-post>{_hidden(fields)}"
        "<noscript><p>JavaScript is off: press Continue.</p></noscript>"
        "<button type=submit>Continue</button></form>"
        "<script>document.getElementById('saml-post').submit();</script>"
    )


def make_app_from_env() -> DemoIdP:
    """Gunicorn entry point: ``gunicorn 'satosa_orcid_plugin.devstack.demo_idp:make_app_from_env()'``."""
    return DemoIdP(DemoLayout.from_env())


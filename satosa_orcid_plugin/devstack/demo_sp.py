"""A demo SAML service provider (werkzeug WSGI app over pysaml2 ``Saml2Client``).

``/`` links to ``/login``, which sends an AuthnRequest to the proxy's SAML frontend
(HTTP-Redirect). ``/acs/post`` verifies the response (a signed assertion is required) and
shows the released attributes by friendly name, eduPersonOrcid first, and embeds the same
data for scripts and tests::

    <script type="application/json" id="released-attributes">
    {"attributes": {"eduPersonOrcid": ["https://orcid.org/..."], ...},
     "attribute_names": {"eduPersonOrcid": "urn:oid:1.3.6.1.4.1.5923.1.1.1.16", ...}, ...}
    </script>

Tests use :class:`DemoSP` in-process (``authn_request_url()``, ``parse_response()``).
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .webapp import PageApp

if TYPE_CHECKING:
    from .layout import DemoLayout

__all__ = ["DemoSP", "ReleasedAttributes", "RELEASED_ATTRIBUTES_ID", "extract_released", "make_app_from_env"]

RELEASED_ATTRIBUTES_ID = "released-attributes"
ORCID_ATTRIBUTE = "eduPersonOrcid"


@dataclass
class ReleasedAttributes:
    """What the SP learnt from one verified SAML response."""

    attributes: dict[str, list[str]]
    attribute_names: dict[str, str] = field(default_factory=dict)  # friendly name -> wire Name
    name_id: str | None = None
    name_id_format: str | None = None
    issuer: str | None = None
    in_response_to: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "attributes": self.attributes,
            "attribute_names": self.attribute_names,
            "name_id": self.name_id,
            "name_id_format": self.name_id_format,
            "issuer": self.issuer,
            "in_response_to": self.in_response_to,
        }


def extract_released(page_html: str) -> dict[str, Any]:
    """The JSON embedded by the SP's result page (``script#released-attributes``)."""
    from .htmldoc import parse_html

    tag = parse_html(page_html).find("script", id=RELEASED_ATTRIBUTES_ID)
    if tag is None:
        raise ValueError("page has no <script id='released-attributes'>")
    return json.loads(tag.string or "")


def _json_for_script(data: Any) -> str:
    # Inside <script> only "</" can end the element early; escape it (and <!-- for old parsers).
    return json.dumps(data, indent=2, sort_keys=True).replace("</", "<\\/").replace("<!--", "<\\!--")


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem} .orcid{border:2px solid #a6ce39;border-radius:8px;padding:1rem;margin:1rem 0;font-size:1.2rem}
.missing{border-color:#c33} table{border-collapse:collapse;width:100%} td,th{border:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top} code{font-size:.85rem} .error{color:#a00}
"""



class DemoSP(PageApp):
    """The demo SP: request/response helpers for tests, and a WSGI app (``__call__``)."""

    style = _STYLE

    def __init__(self, layout: "DemoLayout | None" = None, *, config: dict[str, Any] | None = None,
                 idp_entity_id: str | None = None):
        from saml2.client import Saml2Client
        from saml2.config import SPConfig

        if config is None:
            if layout is None:
                raise TypeError("DemoSP needs a layout or a pysaml2 config dict")
            config = layout.sp_saml_config()
        self.layout = layout
        self.client = Saml2Client(config=SPConfig().load(config))
        self.entity_id: str = self.client.config.entityid
        self.idp_entity_id = idp_entity_id or (layout.proxy_idp_entity_id if layout else None)
        self._metadata_path = layout.sp_metadata if layout else None
        self.url_map = Map(
            [
                Rule("/", endpoint="home", methods=["GET"]),
                Rule("/sp.xml", endpoint="metadata", methods=["GET"]),
                Rule("/login", endpoint="login", methods=["GET"]),
                Rule("/acs/post", endpoint="acs", methods=["POST"]),
            ]
        )

    # --- SAML -------------------------------------------------------------------------
    def authn_request(self, relay_state: str = "/") -> tuple[str, str]:
        """``(request id, URL)``: an HTTP-Redirect AuthnRequest to the proxy's frontend."""
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT

        if not self.idp_entity_id:
            raise RuntimeError("no IdP (proxy) entity id configured")
        req_id, info = self.client.prepare_for_authenticate(
            entityid=self.idp_entity_id,
            relay_state=relay_state,
            binding=BINDING_HTTP_REDIRECT,
            response_binding=BINDING_HTTP_POST,
        )
        return req_id, dict(info["headers"])["Location"]

    def authn_request_url(self, relay_state: str = "/") -> str:
        return self.authn_request(relay_state)[1]

    def parse_response(self, saml_response: str, outstanding: dict[str, str] | None = None) -> ReleasedAttributes:
        """Verify an HTTP-POST ``SAMLResponse`` (base64) and return what it released.

        Raises pysaml2's errors (e.g. ``StatusAuthnFailed``, ``SignatureError``) unchanged.
        """
        from saml2 import BINDING_HTTP_POST
        from saml2.attribute_converter import to_local_name

        response = self.client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding)
        if response is None:
            raise ValueError("empty or unparseable SAML response")
        names: dict[str, str] = {}
        assertions = getattr(response, "assertions", None) or [response.assertion]
        for assertion in assertions:
            for statement in assertion.attribute_statement or []:
                for attribute in statement.attribute or []:
                    friendly = to_local_name(self.client.config.attribute_converters, attribute) or attribute.name
                    names[friendly] = attribute.name
        name_id = response.name_id
        return ReleasedAttributes(
            attributes={k: [str(v) for v in vs] for k, vs in response.ava.items()},
            attribute_names=names,
            name_id=getattr(name_id, "text", None),
            name_id_format=getattr(name_id, "format", None),
            issuer=response.issuer(),
            in_response_to=response.in_response_to,
        )

    # --- WSGI -------------------------------------------------------------------------
    def _on_home(self, request: Request) -> Response:
        return self._html(
            "Demo research service",
            "<h1>Demo research service</h1>"
            "<p>This service trusts the institution's SATOSA proxy, which adds your authenticated "
            "ORCID iD to the login.</p>"
            "<p><a href='/login' id=login>Log in through the proxy</a></p>",
        )

    def _on_metadata(self, request: Request) -> Response:
        if not self._metadata_path or not self._metadata_path.is_file():
            raise NotFound()
        return Response(self._metadata_path.read_bytes(), mimetype="application/samlmetadata+xml")

    def _on_login(self, request: Request) -> Response:
        _, url = self.authn_request(relay_state="/")
        return Response(status=303, headers={"Location": url})

    def _on_acs(self, request: Request) -> Response:
        saml_response = request.form.get("SAMLResponse")
        if not saml_response:
            raise BadRequest("SAMLResponse is missing")
        try:
            released = self.parse_response(saml_response)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            body = (
                "<h1>Login failed</h1>"
                f"<p class=error role=alert>The proxy's response was rejected: {html.escape(reason)}</p>"
                "<p><a href='/'>Start again</a></p>"
                f"<script type='application/json' id='{RELEASED_ATTRIBUTES_ID}'>"
                f"{_json_for_script({'attributes': {}, 'error': reason})}</script>"
            )
            return self._html("Login failed", body, 400)
        return self._html("Signed in", self._result_body(released))

    def _result_body(self, released: ReleasedAttributes) -> str:
        orcids = released.attributes.get(ORCID_ATTRIBUTE, [])
        if orcids:
            links = ", ".join(
                f"<a href='{html.escape(v)}' id=orcid-id>{html.escape(v)}</a>" for v in orcids
            )
            orcid_box = f"<div class=orcid><strong>ORCID iD</strong> (eduPersonOrcid): {links}</div>"
        else:
            orcid_box = "<div class='orcid missing'><strong>No ORCID iD</strong> was released.</div>"
        ordered = sorted(released.attributes, key=lambda n: (n != ORCID_ATTRIBUTE, n.lower()))
        rows = "".join(
            f"<tr><th>{html.escape(n)}</th><td><code>{html.escape(released.attribute_names.get(n, ''))}</code></td>"
            f"<td>{'<br>'.join(html.escape(v) for v in released.attributes[n])}</td></tr>"
            for n in ordered
        )
        display = released.attributes.get("displayName", [""])[0]
        return (
            f"<h1>Signed in{(' as ' + html.escape(display)) if display else ''}</h1>{orcid_box}"
            "<h2>Released attributes</h2><table><tr><th>Attribute</th><th>SAML Name</th><th>Values</th></tr>"
            f"{rows}</table>"
            f"<p>NameID <code>{html.escape(released.name_id or '-')}</code> "
            f"(<code>{html.escape(released.name_id_format or '-')}</code>) from "
            f"<code>{html.escape(released.issuer or '-')}</code></p>"
            "<p><a href='/login'>Log in again</a></p>"
            f"<script type='application/json' id='{RELEASED_ATTRIBUTES_ID}'>"
            f"{_json_for_script(released.to_json_dict())}</script>"
        )


def make_app_from_env() -> DemoSP:
    """Gunicorn entry point: ``gunicorn 'satosa_orcid_plugin.devstack.demo_sp:make_app_from_env()'``."""
    from .layout import DemoLayout

    return DemoSP(DemoLayout.from_env())

"""Hostile input at the plugin's endpoints, through the production WSGI app.

Hypothesis throws arbitrary methods, query strings, form bodies, cookies (none, garbage, a
tampered or a *live* SATOSA state cookie of a login that is at ORCID right now) and headers
at ``/orcid/callback``, ``/orcid/connect``, ``/orcid/choice`` and ``/orcid/confirm`` of
SATOSA's real app built from the real ``proxy_conf/`` (behind the image's request guard).
Whatever arrives: never a 500, never a traceback in the body, a redirect only ever to the
configured ORCID authorize endpoint, and never a stored link.

The ``ci`` hypothesis profile runs 500 examples per endpoint (2,000 requests); ``--slow`` ten
times that.
"""
from __future__ import annotations

import re
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from opskit import OPS_REPORT, fuzz_settings, hop, interstitial, path_and_query
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

ENDPOINTS = {"callback": "GET", "connect": "GET", "choice": "POST", "confirm": "POST"}
PARAMS = ["code", "state", "error", "error_description", "choice", "orcid", "redirect_uri", "lang", "next"]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"/|\bline \d+, in\b")
HEADER_NAME = st.text(alphabet=st.characters(codec="ascii", categories=["Lu", "Ll", "Nd"], include_characters="-"),
                      min_size=1, max_size=20).filter(lambda n: n.lower() not in ("content-length", "host", "cookie",
                                                                                   "content-type", "transfer-encoding"))
HEADER_VALUE = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=80)
FREE_TEXT = st.text(max_size=80)
# longer than any parameter the plugin reads (2,048), built cheaply (generating 6,000 characters
# one by one would cost more than the request)
LONG_TEXT = st.builds(lambda c, n: c * n, st.sampled_from(["a", "%", "\u00e9", "\ud7ff", "="]), st.integers(2049, 6000))


@pytest.fixture(scope="module")
def fuzz(ops_deployment):
    """The app (on_error: continue) and a login parked at ORCID: its state cookie, its OAuth
    state and the interstitial form's own token."""
    client = ops_deployment.client()
    action, fields = interstitial(ops_deployment, client)
    authorize = client.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    cookie = client.get_cookie("SATOSA_STATE")
    assert cookie is not None
    live = {"cookie": cookie.value, "state": parse_qs(urlsplit(authorize).query)["state"][0], "form": fields["state"]}
    authorize_prefix = f"{ops_deployment.layout.emulator_url}/oauth/authorize?"
    assert ops_deployment.links() == []
    yield ops_deployment, live, authorize_prefix
    assert ops_deployment.links() == [], "fuzzing stored a link"


def values(live: dict[str, str]) -> st.SearchStrategy[str]:
    return st.one_of(
        FREE_TEXT,
        st.sampled_from(["access_denied", "connect", "not_now", "never", "cancel", "yes", "no", "invalid_scope",
                         "", "\x00", "%00", "../../etc/passwd", "https://evil.example/", "//evil.example",
                         "javascript:alert(1)", "<script>alert(1)</script>", "0000-0002-1825-0097"]),
        st.sampled_from([live["state"], live["form"]]),
        LONG_TEXT,
    )


COOKIE_TEXT = st.text(alphabet=st.characters(codec="ascii", exclude_characters=";,"), max_size=120)
RAW_COOKIE = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=120)
METHODS = {m: st.sampled_from([m] * 6 + ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]) for m in ("GET", "POST")}
ACCEPT_LANGUAGE = st.one_of(HEADER_VALUE, st.sampled_from(["de-DE,de;q=0.9", "*", "xx;q=abc", ""]))
HEADERS = st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=5)
RAW_QUERY = st.one_of(st.none(), st.text(max_size=150))
BODY_KINDS = st.sampled_from(["form", "form", "form", "raw", "json", "none"])
RAW_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
                             "application/json; charset=x"])
RAW_BODY = st.one_of(st.binary(max_size=300), st.builds(lambda n: b"\xff" * n, st.integers(16 * 1024, 40000)))
JSON_BODY = st.one_of(st.just(b"{"), st.just(b"[1,2]"), st.just(b'{"state": 1, "choice": ["connect"]}'),
                      st.binary(max_size=100))


def requests_for(endpoint: str, live: dict[str, str]) -> st.SearchStrategy:
    """(method, query string, headers, body) of one hostile request (strategies built once)."""
    random_pairs = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), FREE_TEXT), values(live)), max_size=6)
    # near-valid: the live login's own state plus arbitrary other fields, so that examples get
    # past the state check into the plugin's handling of codes, errors and choices
    choices = st.one_of(st.sampled_from(["connect", "connect", "not_now", "never", "cancel", "yes", "no"]), FREE_TEXT)
    near_valid = st.builds(
        lambda extra, pos, token, choice: [*extra[:pos], ("state", token), *extra[pos:], *choice],
        st.lists(st.tuples(st.sampled_from(PARAMS), values(live)), max_size=4), st.integers(0, 4),
        st.sampled_from([live["state"], live["form"]]),  # the callback's state, the forms' token
        st.one_of(st.tuples(st.tuples(st.just("choice"), choices)), st.just(())))
    pairs_strategy = st.one_of(random_pairs, near_valid)
    positions = st.integers(0, len(live["cookie"]) - 1)
    letters = st.sampled_from("AZaz09_-")

    @st.composite
    def build(draw):
        method = draw(METHODS[ENDPOINTS[endpoint]])
        raw_query = draw(RAW_QUERY)
        query = raw_query if raw_query is not None else urlencode(draw(pairs_strategy))
        query = query.encode("utf-8").decode("latin-1")  # what a server makes of raw UTF-8 in a request line
        cookie_parts = []
        state_cookie = draw(st.sampled_from(["live", "live", "live", "none", "garbage", "tampered", "empty"]))
        if state_cookie == "live":
            cookie_parts.append(f"SATOSA_STATE={live['cookie']}")
        elif state_cookie == "garbage":
            cookie_parts.append(f"SATOSA_STATE={draw(COOKIE_TEXT)}")
        elif state_cookie == "tampered":
            value, i = live["cookie"], draw(positions)
            cookie_parts.append(f"SATOSA_STATE={value[:i]}{draw(letters)}{value[i + 1:]}")
        elif state_cookie == "empty":
            cookie_parts.append("SATOSA_STATE=")
        for name in ("orcid_signin", "orcid_pending", "__Host-orcid_signin", "__Host-orcid_pending"):
            if draw(st.booleans()):
                cookie_parts.append(f"{name}={draw(COOKIE_TEXT)}")
        if draw(st.booleans()):
            cookie_parts.append(draw(RAW_COOKIE))
        headers = draw(HEADERS)
        if draw(st.booleans()):
            headers["Accept-Language"] = draw(ACCEPT_LANGUAGE)
        if cookie_parts:
            headers["Cookie"] = "; ".join(cookie_parts)
        body = None
        if method in ("POST", "PUT"):
            kind = draw(BODY_KINDS)
            if kind == "form":
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                body = urlencode(draw(pairs_strategy)).encode()
            elif kind == "raw":
                headers["Content-Type"] = draw(RAW_TYPES)
                body = draw(RAW_BODY)
            elif kind == "json":
                headers["Content-Type"] = "application/json"
                body = draw(JSON_BODY)
        return method, query, headers, body

    return build()


def check(response, authorize_prefix: str) -> None:
    status = response.status_code
    body = response.get_data(as_text=True)
    assert status < 500, (status, body[:500])
    assert not TRACEBACK.search(body), body[:2000]
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        assert location.startswith(authorize_prefix), location  # never an open redirect


def test_the_live_state_reaches_the_plugin(fuzz):
    """Sanity check for the fuzzer: the live cookie and state drive the real hop, so the
    examples reach the plugin's code and not only SATOSA's 'no state' answer."""
    from werkzeug.test import Client

    deployment, live, authorize_prefix = fuzz
    client = Client(deployment.app(), use_cookies=False)
    response = client.post("/orcid/choice", headers={"Cookie": f"SATOSA_STATE={live['cookie']}"},
                           data={"state": live["form"], "choice": "connect"})
    assert response.status_code == 302 and response.headers["Location"].startswith(authorize_prefix)
    # a callback with a code ORCID never issued, on a login of its own (the live state stays unused)
    other = deployment.client()
    state = parse_qs(urlsplit(hop(deployment, other)).query)["state"][0]
    response = other.get("/orcid/callback", query_string={"state": state, "code": "not-a-code"})
    check(response, authorize_prefix)
    assert "SAMLResponse" in response.get_data(as_text=True)  # on_error: continue -> back to the SP


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_fuzzed_requests_never_500_never_leak_never_link(fuzz, endpoint, request):
    from werkzeug.test import Client, EnvironBuilder

    deployment, live, authorize_prefix = fuzz
    client = Client(deployment.app(), use_cookies=False)
    config = fuzz_settings(request.config)
    statuses: Counter = Counter()

    @settings(config)
    @given(requests_for(endpoint, live))
    def run(hostile):
        method, query, headers, body = hostile
        note(f"{method} /orcid/{endpoint}?{query[:200]!r} headers={list(headers)}")
        try:
            environ = EnvironBuilder(path=f"/orcid/{endpoint}", method=method, query_string=query, headers=headers,
                                     data=body).get_environ()
        except (ValueError, UnicodeError):  # not a request any HTTP client could send
            assume(False)
        response = client.open(environ)
        statuses[response.status_code] += 1
        check(response, authorize_prefix)

    run()
    assert deployment.links() == []
    sent = sum(statuses.values())
    assert sent >= 0.9 * config.max_examples, statuses  # the examples were requests, not filtered away
    OPS_REPORT.append(f"fuzz /orcid/{endpoint}: {sent} hostile requests, answers "
                      + ", ".join(f"{code}x{n}" for code, n in sorted(statuses.items())))

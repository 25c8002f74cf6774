"""The flow record in SATOSA's state, and the pure parsing of ORCID's callback."""
import hmac
from dataclasses import replace
import json

import pytest

from satosa_orcid_plugin import flow
from satosa_orcid_plugin.errors import BadCallback, OrcidOAuthError, StateMismatch, UserDenied
from satosa_orcid_plugin.flow import MAX_PARAM_LENGTH, FlowKind, FlowRecord, parse_callback

NOW = 1_700_000_000
HOP = (FlowKind.HOP,)
LOGIN = {"attributes": {"edupersonprincipalname": ["alice@example.org"]}, "requester": "https://sp.example.org"}


def clock(at=NOW):
    return lambda: at


def hop_record(**fields):
    return FlowRecord.new(FlowKind.HOP, state="s" * 32, ttl=1800, clock=clock(), login=LOGIN, nonce="n" * 32,
                          user="alice@example.org", mode="ask", lang="en", **fields)


def test_a_record_round_trips_as_compact_json():
    record = hop_record()
    raw = record.to_dict()  # what the store parks (encrypted) during the hop
    assert raw == {"v": 1, "kind": "hop", "state": "s" * 32, "exp": NOW + 1800, "flow": LOGIN,
                   "nonce": "n" * 32, "user": "alice@example.org", "mode": "ask", "lang": "en"}
    assert FlowRecord.from_dict(json.loads(json.dumps(raw)), HOP, now=NOW) == record


def test_none_fields_are_left_off_the_cookie():
    record = FlowRecord.new(FlowKind.CONNECT, state="s", ttl=60, clock=clock(), pending="h")
    assert record.to_dict() == {"v": 1, "kind": "connect", "state": "s", "exp": NOW + 60, "pending": "h"}
    assert FlowRecord.from_dict(record.to_dict(), (FlowKind.CONNECT,), now=NOW) == record


def test_expiry_uses_the_given_time():
    raw = hop_record().to_dict()
    assert FlowRecord.from_dict(raw, HOP, now=NOW + 1800) is not None  # the last second still counts
    assert FlowRecord.from_dict(raw, HOP, now=NOW + 1801) is None
    assert hop_record().expires_at.timestamp() == NOW + 1800


def test_an_expired_or_invalid_record_is_refused():
    assert FlowRecord.from_dict({**hop_record().to_dict(), "exp": NOW - 1}, HOP, now=NOW) is None
    assert FlowRecord.from_dict("garbage", HOP, now=NOW) is None
    assert FlowRecord.from_dict(None, HOP, now=NOW) is None


def test_the_wrong_kind_is_refused():
    raw = hop_record().to_dict()
    assert FlowRecord.from_dict(raw, (FlowKind.CONFIRM,), now=NOW) is None
    assert FlowRecord.from_dict(raw, (FlowKind.HOP, FlowKind.CONNECT), now=NOW) is not None
    assert FlowRecord.from_dict({**raw, "kind": "other"}, HOP, now=NOW) is None


@pytest.mark.parametrize("version", [0, 2, "1", True, None])
def test_another_version_is_refused(version):
    assert FlowRecord.from_dict({**hop_record().to_dict(), "v": version}, HOP, now=NOW) is None


@pytest.mark.parametrize("key, value", [
    ("state", 123), ("state", ""), ("state", None), ("exp", "9999999999"), ("exp", 1.7e12), ("exp", True),
    ("flow", "x"), ("flow", None), ("nonce", 5), ("user", ["alice"]), ("mode", {}), ("lang", 1), ("pending", 0),
])
def test_tampered_types_are_refused(key, value):
    assert FlowRecord.from_dict({**hop_record().to_dict(), key: value}, HOP, now=NOW) is None


def test_only_a_connect_record_goes_without_a_saved_login():
    raw = {"v": 1, "kind": "connect", "state": "s", "exp": NOW + 60, "pending": "h"}
    assert FlowRecord.from_dict(raw, (FlowKind.CONNECT,), now=NOW).login is None
    assert FlowRecord.from_dict({**raw, "kind": "hop"}, HOP, now=NOW) is None
    assert FlowRecord.from_dict({**raw, "kind": "confirm"}, (FlowKind.CONFIRM,), now=NOW) is None


def test_forget_removes_the_record():
    state = {"orcid": hop_record().to_dict(), "other": 1}
    flow.forget(state, "orcid")
    flow.forget(state, "orcid")
    flow.forget(None, "orcid")
    assert state == {"other": 1}


# --- parameters --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("abc", "abc"), (["abc"], "abc"), (["a", "b"], None), ([], None), ("", None), (None, None), (5, None),
    ("x" * MAX_PARAM_LENGTH, "x" * MAX_PARAM_LENGTH), ("x" * (MAX_PARAM_LENGTH + 1), None),
])
def test_a_parameter_is_one_short_non_empty_string(value, expected):
    assert flow.param({"k": value}, "k") == expected


# --- the callback: state, then error, then code --------------------------------------------------
def test_the_code_of_a_good_callback():
    assert parse_callback({"state": "s1", "code": "c"}, "s1") == "c"
    assert parse_callback({"state": ["s1"], "code": ["c"]}, "s1") == "c"


@pytest.mark.parametrize("params", [
    {"code": "c"}, {"state": "", "code": "c"}, {"state": ["s1", "s1"], "code": "c"},
    {"state": "wrong", "code": "c"}, {"state": "wrong", "error": "access_denied"}, {"state": "wrong"},
])
def test_the_state_is_checked_before_anything_else(params):
    with pytest.raises(StateMismatch):
        parse_callback(params, "s1")


def test_the_error_comes_before_the_code():
    with pytest.raises(UserDenied):
        parse_callback({"state": "s1", "error": "access_denied", "code": "c"}, "s1")
    error = "server_error" + "x" * 100
    with pytest.raises(OrcidOAuthError) as raised:
        parse_callback({"state": "s1", "error": error, "error_description": "d" * 300, "code": "c"}, "s1")
    message = raised.value.message  # ORCID's words, cut to 64 and 200 characters
    assert error[:64] in message and error[:65] not in message
    assert "d" * 200 in message and "d" * 201 not in message


def test_no_code_is_a_bad_callback():
    for params in ({"state": "s1"}, {"state": "s1", "code": ""}, {"state": "s1", "code": ["a", "b"]}):
        with pytest.raises(BadCallback):
            parse_callback(params, "s1")


def test_states_are_compared_in_constant_time(monkeypatch):
    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(flow.hmac, "compare_digest", spy)
    assert parse_callback({"state": "s1", "code": "c"}, "s1") == "c"
    assert calls == [(b"s1", b"s1")]
    ticket = flow.Ticket.of(hop_record(), "h" * 32)  # what a callback or a form is checked against
    assert ticket.state_matches({"state": "s" * 32}) and not ticket.state_matches({"state": "t" * 32})
    assert not ticket.state_matches({})
    assert calls[1:] == [(b"s" * 32, b"s" * 32), (b"t" * 32, b"s" * 32)]
    form = flow.Ticket.of(replace(hop_record(), form="f" * 32), "h" * 32)
    assert form.form_matches("f" * 32) and not form.form_matches("s" * 32) and not form.form_matches(None)
    assert not ticket.form_matches("s" * 32)  # no form token: the OAuth state never stands in for one
    assert calls[3:] == [(b"f" * 32, b"f" * 32), (b"s" * 32, b"f" * 32)]


def test_a_form_token_round_trips_and_is_not_the_state():
    record = replace(hop_record(), form=flow.form_token())
    again = FlowRecord.from_dict(record.to_dict(), [FlowKind.HOP], now=0)
    assert again == record and again.form != again.state and len(again.form) >= 32


@pytest.mark.parametrize("text, logged", [
    ("plain", "plain"),
    ("a\r\nORCID iD linked", "a\\r\\nORCID iD linked"),
    ("tab\tnul\x00del\x7fnel\x85ls\u2028", "tab\\tnul\\x00del\\x7fnel\\x85ls\\u2028"),
    ("caf\u00e9 \u00fc", "caf\u00e9 \u00fc"),  # printable text stays as it is
])
def test_log_safe_escapes_what_could_start_a_log_line(text, logged):
    assert flow.log_safe(text) == logged and "\n" not in flow.log_safe(text) and "\r" not in flow.log_safe(text)


def test_the_ticket_in_the_state_is_small_whatever_the_login_and_names_the_parked_record():
    big = {**LOGIN, "attributes": {"edupersonentitlement": [f"urn:x:{i:040d}" for i in range(200)]}}
    record = FlowRecord.new(FlowKind.HOP, state="s" * 32, ttl=1800, clock=clock(), login=big, nonce="n" * 32,
                            user="u" * 200, mode="ask", lang="en", form="f" * 32)
    state = {}
    flow.save_ticket(state, "orcid", flow.Ticket.of(record, "h" * 32))
    assert len(json.dumps(state["orcid"])) < 200 and "u" * 200 not in json.dumps(state)
    ticket = flow.ticket(state, "orcid", HOP, clock=clock())
    assert (ticket.state, ticket.handle, ticket.exp) == ("s" * 32, "h" * 32, NOW + 1800)
    assert ticket.matches(record) and not ticket.matches(replace(record, state="t" * 32))
    assert ticket.form_matches("f" * 32) and not ticket.form_matches("g" * 32) and not ticket.form_matches(None)
    assert ticket.state_matches({"state": "s" * 32}) and not ticket.state_matches({"state": "x"})
    assert flow.ticket(state, "orcid", (FlowKind.CONNECT,), clock=clock()) is None  # another kind
    assert flow.ticket(state, "orcid", HOP, clock=clock(NOW + 1801)) is None  # expired
    for broken in ({**state["orcid"], "v": 1}, {**state["orcid"], "p": 7}, {**state["orcid"], "s": ""},
                   {**state["orcid"], "x": "soon"}, {**state["orcid"], "f": 3}, "garbage", None):
        assert flow.ticket({"orcid": broken}, "orcid", HOP, clock=clock()) is None, broken

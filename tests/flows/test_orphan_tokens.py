"""No orphan ORCID tokens: every token ORCID issues ends up in a link or is revoked at ORCID.

Driven through SATOSA's real app and the ORCID emulator, which knows which tokens are live.
The failures come after the code exchange: the link write fails (the database went away), the
iD belongs to another user (``on_conflict: refuse``), ORCID's id_token does not verify, and a
re-link replaces the tokens of the link before it. When ORCID does not answer the revoke, the
token waits in the store and a later drain revokes it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flowkit import path_and_query
from prometheus_client import REGISTRY

from test_connect_branches import ALICE, JOSIAH, MARKER, hop_link, sealed_marker
from test_consent_hop import plugin_config, to_orcid
from test_institutional_connect import SOFIA, connect_link, page_of, verify_at_orcid  # noqa: F401

BOB = "bob@demo.example.org"


def live_tokens(orcid_emulator, orcid=JOSIAH):
    return sorted(t.access_token for t in orcid_emulator.tokens(orcid=orcid))


@pytest.fixture
def store(demo_layout):
    """The proxy's store, as an operator's script would open it (``clock`` shifts its time)."""
    from satosa_orcid_plugin.store import Store, utcnow
    from satosa_orcid_plugin.tokens import TokenCipher

    env = demo_layout.env()
    opened = []

    def open_store(later=timedelta(0)):
        opened.append(Store.from_url(env["SATOSA_ORCID_DATABASE_URL"],
                                     TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")),
                                     clock=lambda: utcnow() + later))
        return opened[-1]

    open_store.issuer = demo_layout.idp_entity_id  # the demo IdP asserts every user key here
    yield open_store
    for s in opened:
        s.db.dispose()


def stored_token(store, user=ALICE):
    tokens = store().links.tokens(user, issuer=store.issuer)
    return tokens.access_token if tokens is not None else None


def revoked_count(reason, result="revoked"):
    return REGISTRY.get_sample_value("satosa_orcid_tokens_revoked_total", {"reason": reason, "result": result}) or 0


@pytest.fixture
def link_write_fails(monkeypatch):
    """The database goes away exactly at the link write (after ORCID issued the token)."""
    from satosa_orcid_plugin.errors import StoreError
    from satosa_orcid_plugin.store.links import Links

    def fail(*_args, **_kwargs):
        raise StoreError("database error (OperationalError): server closed the connection unexpectedly")

    monkeypatch.setattr(Links, "link", fail)


def hop_to_callback(client, demo_sp, start_login, idp_respond, orcid_consent, user="alice", orcid=JOSIAH):
    start_login(client, demo_sp)
    callback = orcid_consent(to_orcid(client, idp_respond(client, user)), orcid_id=orcid)
    return client.get(path_and_query(callback))


def test_a_link_write_that_fails_revokes_the_new_token(
    satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, orcid_emulator, store, link_write_fails,
):
    before = revoked_count("link_failed")
    released = sp_receive(hop_to_callback(satosa_app, demo_sp, start_login, idp_respond, orcid_consent), demo_sp)
    assert "eduPersonOrcid" not in released.attributes  # on_error: continue
    assert len(orcid_emulator.tokens(orcid=JOSIAH, active_only=False)) == 1  # ORCID did issue one
    assert live_tokens(orcid_emulator) == []
    assert revoked_count("link_failed") == before + 1


def test_an_id_held_by_another_user_revokes_the_new_token_and_keeps_the_holders(
    satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, orcid_emulator, store,
):
    from werkzeug.test import Client

    hop_link(Client(satosa_app.application), demo_sp, start_login, idp_respond, orcid_consent, sp_receive, user="bob")
    released = sp_receive(hop_to_callback(satosa_app, demo_sp, start_login, idp_respond, orcid_consent), demo_sp)
    assert "eduPersonOrcid" not in released.attributes  # on_conflict: refuse
    assert live_tokens(orcid_emulator) == [stored_token(store, BOB)]
    newest_first = [e["event"] for e in store().db.audit_events(limit=2)]
    assert newest_first == ["token_revoked", "conflict"]


def test_an_id_token_that_does_not_verify_revokes_the_token_it_came_with(
    satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, orcid_emulator,
):
    orcid_emulator.faults.add(endpoint="token", kind="wrong_aud", times=1)
    released = sp_receive(hop_to_callback(satosa_app, demo_sp, start_login, idp_respond, orcid_consent), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert len(orcid_emulator.tokens(orcid=JOSIAH, active_only=False)) == 1
    assert live_tokens(orcid_emulator) == []


@pytest.mark.parametrize("second", [JOSIAH, SOFIA], ids=["same_id", "another_id"])
def test_relinking_revokes_the_tokens_it_replaces(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, orcid_consent, sp_receive, orcid_emulator, store,
    connect_link, second,
):
    hop_link(satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive)
    first = stored_token(store)
    # Institutional Connect from orcid.org, in a browser that just signed in through the proxy: binds at once.
    satosa_app.set_cookie(MARKER, sealed_marker(demo_layout), path="/orcid")
    result = verify_at_orcid(satosa_app, satosa_app.get(path_and_query(connect_link(orcid=second))), orcid_consent,
                             orcid=second)
    assert "connected" in page_of(result).h1.get_text()
    assert str(store().links.get_active(ALICE, issuer=store.issuer).orcid) == second
    assert first not in live_tokens(orcid_emulator, JOSIAH)
    assert live_tokens(orcid_emulator, second) == [stored_token(store)]
    if second != JOSIAH:
        assert live_tokens(orcid_emulator, JOSIAH) == []
    assert store().revocations.waiting() == 0


def test_a_revoke_orcid_does_not_answer_is_retried_later_and_then_succeeds(
    satosa_config, satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, orcid_emulator, store,
    link_write_fails,
):
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.services import TokenRevoker
    from satosa_orcid_plugin.wiring import build_client

    orcid_emulator.faults.add(endpoint="revoke", kind="status", status=503, times=1)
    queued = revoked_count("link_failed", "queued")
    sp_receive(hop_to_callback(satosa_app, demo_sp, start_login, idp_respond, orcid_consent), demo_sp)
    orphan = live_tokens(orcid_emulator)
    assert len(orphan) == 1 and store().revocations.waiting() == 1  # live at ORCID, remembered here
    assert revoked_count("link_failed", "queued") == queued + 1
    revoker = TokenRevoker(build_client(parse_config(plugin_config(satosa_config))), store())
    assert revoker.drain() == 0  # not due yet: backoff
    later = TokenRevoker(revoker.client, store(later=timedelta(minutes=5)))
    assert later.drain() == 1
    assert live_tokens(orcid_emulator) == [] and store().revocations.waiting() == 0
    events = [e["event"] for e in store().db.audit_events(limit=5)]
    assert "token_revoked" in events and "revocation_queued" in events


class Killed(BaseException):
    """The worker dies (SIGKILL, OOM) between ORCID's answer and the link write: no except runs."""


def test_the_housekeeping_after_a_hop_looks_for_due_revocations_once_per_quiet_period(
    satosa_config, orcid_emulator, store, monkeypatch,
):
    """After every link write the proxy revokes a few due tokens; when it found none, the next
    hops of that process skip the look (one read per quiet period, not per hop) until the
    period ends, and then drain what became due."""
    import sqlalchemy as sa

    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.services import TokenRevoker
    from satosa_orcid_plugin.services import revocation
    from satosa_orcid_plugin.wiring import build_client

    later = store(later=timedelta(minutes=5))  # a clock for which a stored retry is due
    later.db.upgrade()  # (no proxy started here to migrate it)
    revoker = TokenRevoker(build_client(parse_config(plugin_config(satosa_config))), later)
    statements = []
    sa.event.listen(later.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    clock = [1000.0]
    monkeypatch.setattr(revocation.time, "monotonic", lambda: clock[0])

    assert revoker.housekeeping() == 0 and len(statements) == 1  # looked: nothing due
    with orcid_emulator._lock:  # a token as ORCID issued it to this client (an emulator helper)
        grant = orcid_emulator._mint(revoker.client.settings.client_id, JOSIAH, ("/authenticate",))
    later.revocations.add(grant.access_token, orcid=JOSIAH, reason="link_failed", error="503")  # due (at once)
    before = len(statements)
    assert revoker.housekeeping() == 0 and len(statements) == before  # quiet: not even a read
    clock[0] += revocation.HOUSEKEEPING_QUIET_SECONDS + 1
    assert revoker.housekeeping() == 1  # the period ended: looked, found it, ORCID revoked it
    assert grant.access_token not in live_tokens(orcid_emulator) and later.revocations.waiting() == 0


def test_a_worker_killed_at_the_link_write_leaves_a_stored_revocation_that_a_later_drain_completes(
    satosa_config, satosa_app, demo_sp, start_login, idp_respond, orcid_consent, orcid_emulator, store, monkeypatch,
):
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.services import TokenRevoker
    from satosa_orcid_plugin.store.links import Links
    from satosa_orcid_plugin.wiring import build_client

    def killed(*_args, **_kwargs):
        raise Killed()

    monkeypatch.setattr(Links, "link", killed)
    with pytest.raises(Killed):
        hop_to_callback(satosa_app, demo_sp, start_login, idp_respond, orcid_consent)
    assert len(live_tokens(orcid_emulator)) == 1 and store().revocations.waiting() == 1
    client = build_client(parse_config(plugin_config(satosa_config)))
    assert TokenRevoker(client, store(later=timedelta(minutes=10))).drain() == 1
    assert live_tokens(orcid_emulator) == [] and store().revocations.waiting() == 0

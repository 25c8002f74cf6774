"""The affiliation worker against the ORCID emulator over loopback, on SQLite and PostgreSQL.

Real HTTP (``serve_in_thread``), real tokens from the emulator's token endpoint, the real
store with its migrations. Worker processes are ``python -m satosa_orcid_plugin.cli sync run``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import yaml

from satosa_orcid_plugin.config import AffiliationSettings, Organization, OrcidSettings, Timeouts, parse_affiliations
from satosa_orcid_plugin.devstack.emulator import ClientRegistration, DemoAccount, DEMO_ACCOUNTS, Emulator, serve_in_thread
from satosa_orcid_plugin.errors import DuplicateItem, OrcidApiError, OrcidValidationError, TokenRevoked
from satosa_orcid_plugin.orcid_client import OrcidClient
from satosa_orcid_plugin.orcid_id import check_digit
from satosa_orcid_plugin.services import LoginService
from satosa_orcid_plugin.store import DONE, PARKED, QUEUED, RETRY, Outbox, Store
from satosa_orcid_plugin.store.schema import AffiliationRow
from satosa_orcid_plugin.orcid_client import http_session
from satosa_orcid_plugin.services import SyncWorker
from satosa_orcid_plugin.tokens import TokenCipher, TokenSet

CLIENT_ID, SECRET = "APP-SYNCTEST", "sync-secret"
OTHER_CLIENT = "APP-OTHERINTEGRATION"
REDIRECT = "https://proxy.example.org/orcid/callback"
SCOPES = "/read-limited /activities/update"
JOSIAH, SOFIA = "0000-0002-1825-0097", "0000-0001-5109-3700"
ORG = {"name": "Boston University", "city": "Boston", "region": "Massachusetts", "country": "US",
       "disambiguated_id": "https://ror.org/05qwgg493"}
FACULTY = {"eduPersonAffiliation": ["faculty", "member"], "ou": ["Chemistry"], "title": ["Professor"]}
ROOT = Path(__file__).resolve().parents[2]


def _generated_accounts(n: int) -> list[DemoAccount]:
    out = []
    for i in range(n):
        base = f"000000039{i:06d}"
        digits = base + check_digit(base)
        orcid = "-".join(digits[j:j + 4] for j in range(0, 16, 4))
        out.append(DemoAccount(orcid, f"load{i}@example.edu", "pw", "Load", f"Tester {i}", None))
    return out


LOAD_ACCOUNTS = _generated_accounts(120)


@pytest.fixture(scope="module")
def server():
    emulator = Emulator("http://placeholder", [
        ClientRegistration(CLIENT_ID, SECRET, [REDIRECT], name="Sync Test University"),
        ClientRegistration(OTHER_CLIENT, "other-secret", [REDIRECT], name="Another Integration"),
    ], accounts=DEMO_ACCOUNTS + LOAD_ACCOUNTS)
    running = serve_in_thread(emulator)
    emulator.issuer = running.url
    yield emulator
    emulator.member_api.release()
    running.stop()


@pytest.fixture
def emulator(server):
    server.faults.clear()
    server.member_api.reset()
    return server


def orcid_settings(url: str, read_timeout: float = 2.0) -> OrcidSettings:
    return OrcidSettings(environment="emulator", base_url=url, api_base_url=url, client_id=CLIENT_ID,
                         client_secret=SECRET, scopes=tuple(SCOPES.split()), timeouts=Timeouts(1.0, read_timeout))


def affiliation_settings(**extra) -> AffiliationSettings:
    raw = {"organization": dict(ORG), "department_attribute": "ou", "role_attribute": "title",
           "sync": {"backoff_base": 0.05, "backoff_max": 1, "max_attempts": 3, "batch_size": 10}}
    raw.update(extra)
    return parse_affiliations(raw)


@dataclass
class Env:
    emulator: Emulator
    store: Store
    outbox: Outbox
    client: OrcidClient
    settings: AffiliationSettings
    worker: SyncWorker
    key: str
    database_url: str

    def link(self, user: str, orcid: str, attributes: dict, *, scopes: str = SCOPES):
        code = self.emulator.issue_code_for(CLIENT_ID, orcid, scopes, REDIRECT)
        grant = self.client.exchange_code(code, REDIRECT)
        tokens = TokenSet.from_token_response(grant.token_response(), datetime.now(timezone.utc))
        return self.store.links.link(user, grant.orcid, tokens, extra=self.outbox.link_extra(self.settings, attributes))

    def login(self, user: str, attributes: dict) -> int:
        return self.outbox.refresh(self.settings, user, attributes)

    def items(self, user: str | None = None):
        return self.outbox.items(user)

    def on_record(self, orcid: str, kind: str | None = None):
        return self.emulator.member_api.items_of(orcid, kind)

    def with_settings(self, settings: AffiliationSettings) -> "Env":
        worker = SyncWorker(self.client, self.outbox, settings.sync, limiter=self.worker.limiter)
        return replace(self, settings=settings, worker=worker)


@pytest.fixture
def env(emulator, database_url) -> Env:
    key = TokenCipher.generate_key()
    store = Store.from_url(database_url, TokenCipher.from_keys([key]))
    store.db.upgrade()
    client = OrcidClient(orcid_settings(emulator.issuer), session=http_session(transport_retries=False))
    settings = affiliation_settings()
    outbox = store.outbox
    worker = SyncWorker(client, outbox, settings.sync, limiter=store.rate_limiter(rate=22, burst=36))
    yield Env(emulator, store, outbox, client, settings, worker, key, database_url)
    store.db.dispose()


def _set_row(store: Store, **values) -> None:
    # A state no public method writes (e.g. a database restored from an old backup).
    with store.db.transaction() as session:
        session.execute(sa.update(AffiliationRow).values(**values))


# --- the journey ----------------------------------------------------------------------------
def test_link_puts_the_item_on_the_record_with_org_department_role_and_dates(env):
    link = env.link("alice@example.org", JOSIAH, FACULTY)
    [queued] = env.items("alice@example.org")
    assert (queued.kind, queued.status, queued.put_code) == ("employment", QUEUED, None)
    assert env.emulator.member_api.calls == []  # nothing talks to ORCID during the login

    report = env.worker.run_once()

    assert (report.claimed, report.posted, report.requests) == (1, 1, 1)
    [item] = env.on_record(JOSIAH)
    assert item.kind == "employment" and item.client_id == CLIENT_ID
    body = item.body
    assert body["organization"]["name"] == "Boston University"
    assert body["organization"]["disambiguated-organization"] == {
        "disambiguated-organization-identifier": "https://ror.org/05qwgg493", "disambiguation-source": "ROR"}
    assert body["organization"]["address"] == {"city": "Boston", "region": "Massachusetts", "country": "US"}
    assert (body["department-name"], body["role-title"]) == ("Chemistry", "Professor")
    created = link.created_at
    assert body["start-date"] == {"year": {"value": f"{created.year:04d}"}, "month": {"value": f"{created.month:02d}"},
                                  "day": {"value": f"{created.day:02d}"}}
    assert "end-date" not in body
    [row] = env.items("alice@example.org")
    assert (row.status, row.put_code, row.posted_at) == (DONE, item.put_code, None)
    # What the record shows, read back through the client, is ours.
    [summary] = env.client.list_affiliations(JOSIAH, "employment", env.store.links.tokens("alice@example.org").access_token)
    assert summary.put_code == item.put_code and summary.source_client_id == CLIENT_ID
    assert summary.has_self_id(row.self_id)


def test_students_get_an_education_item(env):
    env.link("sofia@example.org", SOFIA, {"edupersonaffiliation": ["student"]})
    env.worker.run_once()
    [item] = env.on_record(SOFIA)
    assert item.kind == "education"


def test_attribute_change_is_one_put_and_an_unchanged_login_writes_nothing(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    [before] = env.on_record(JOSIAH)

    assert env.login("alice@example.org", FACULTY) == 0  # unchanged: no write
    assert env.login("alice@example.org", {**FACULTY, "ou": ["Physics"], "title": ["Dean"]}) == 1
    report = env.worker.run_once()

    assert (report.updated, report.posted) == (1, 0)
    [after] = env.on_record(JOSIAH)
    assert after.put_code == before.put_code
    assert (after.body["department-name"], after.body["role-title"]) == ("Physics", "Dean")
    assert [c[0] for c in env.emulator.member_api.calls] == ["POST", "PUT"]


def test_leaving_end_dates_the_item_once(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()

    assert env.login("alice@example.org", {"eduPersonAffiliation": ["member"]}) == 1
    report = env.worker.run_once()
    assert report.ended == 1
    [item] = env.on_record(JOSIAH)
    today = datetime.now(timezone.utc).date()
    assert item.body["end-date"] == {"year": {"value": f"{today.year:04d}"}, "month": {"value": f"{today.month:02d}"},
                                     "day": {"value": f"{today.day:02d}"}}
    # Later logins of the former employee neither write nor call ORCID.
    assert env.login("alice@example.org", {"eduPersonAffiliation": ["member"]}) == 0
    assert env.worker.run_once().claimed == 0


def test_leaving_with_on_leave_delete_removes_the_item(env):
    env = env.with_settings(affiliation_settings(on_leave="delete"))
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    env.login("alice@example.org", {})
    assert env.worker.run_once().deleted == 1
    assert env.on_record(JOSIAH) == []
    [row] = env.items()
    assert (row.status, row.put_code) == (DONE, None)


def test_reruns_resyncs_and_a_lost_put_code_never_duplicate(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    for _ in range(3):
        env.worker.run_once()
    assert env.outbox.resync(None) == 1
    assert env.worker.run_once().updated == 1

    # The database lost the put-code (restored from an old backup): the POST meets a 409
    # naming our item (matched by our self external id), which is adopted.
    _set_row(env.store, put_code=None, posted_at=None, synced_hash=None, status=QUEUED)
    report = env.worker.run_once()
    assert (report.adopted, report.updated) == (1, 1)

    [item] = env.on_record(JOSIAH)
    [row] = env.items()
    assert (row.status, row.put_code) == (DONE, item.put_code)


def test_an_item_in_flight_is_looked_up_before_posting_again(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    [item] = env.on_record(JOSIAH)
    # As after a crash between ORCID's 201 and our commit: marker set, no put-code.
    _set_row(env.store, put_code=None, posted_at=datetime.now(timezone.utc), synced_hash=None, status=QUEUED)
    env.emulator.member_api.calls.clear()

    report = env.worker.run_once()

    assert report.adopted == 1
    assert [c[0] for c in env.emulator.member_api.calls] == ["GET", "PUT"]  # no POST
    assert [i.put_code for i in env.on_record(JOSIAH)] == [item.put_code]


def test_the_fast_path_is_one_statement_when_nothing_changed(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(env.store.db.engine, "before_cursor_execute", record)
    try:
        assert env.login("alice@example.org", FACULTY) == 0
    finally:
        sa.event.remove(env.store.db.engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and len(statements) <= 2, statements  # (PostgreSQL may add a pre-ping)


def test_hooks_for_the_proxy(env):
    service = LoginService(SimpleNamespace(affiliations=env.settings), env.client, env.store)  # type: ignore[arg-type]
    extra = env.outbox.link_extra(env.settings, FACULTY)
    code = env.emulator.issue_code_for(CLIENT_ID, JOSIAH, SCOPES, REDIRECT)
    grant = env.client.exchange_code(code, REDIRECT)
    env.store.links.link("alice@example.org", grant.orcid,
                         TokenSet.from_token_response(grant.token_response(), datetime.now(timezone.utc)), extra=extra)
    assert [i.kind for i in env.items()] == ["employment"]
    assert service.on_release("alice@example.org", FACULTY) == 0
    assert service.on_release("alice@example.org", {"edupersonaffiliation": ["student"]}) == 2
    assert service.on_release("nobody@example.org", FACULTY) == 0

    unconfigured = LoginService(SimpleNamespace(), env.client, env.store)  # type: ignore[arg-type]
    assert env.outbox.link_extra(None, FACULTY) is None
    assert unconfigured.on_release("alice@example.org", {}) == 0


def test_links_without_activities_update_queue_nothing(env):
    env.link("alice@example.org", JOSIAH, FACULTY, scopes="/read-limited")
    assert env.items() == []
    assert env.login("alice@example.org", FACULTY) == 0


# --- failures ---------------------------------------------------------------------------------
def test_a_revoked_token_marks_the_link_revoked_and_parks_until_the_next_link(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.emulator.revoke_user_tokens(JOSIAH)

    report = env.worker.run_once()

    assert (report.revoked, report.parked) == (1, 1)
    [row] = env.items()
    assert row.status == PARKED and "401" in row.last_error
    link = env.store.links.get("alice@example.org")
    assert link.status == "revoked"
    assert env.store.links.tokens("alice@example.org") is None
    assert env.store.db.audit_events("alice@example.org", limit=1)[0]["event"] == "revoke"
    assert env.on_record(JOSIAH) == []

    env.link("alice@example.org", JOSIAH, FACULTY)  # the researcher connects again
    assert env.worker.run_once().posted == 1
    assert len(env.on_record(JOSIAH)) == 1


def test_a_single_401_that_orcid_does_not_repeat_is_retried_not_a_revocation(env):
    """ORCID's bearer filter answers a revoked token's 401 invalid_token also when its token
    introspection fails on I/O (ORCID-Source OrcidBearerTokenFilter): the worker asks again
    (OrcidClient.check_token) before it drops the researcher's tokens."""
    env.link("alice@example.org", JOSIAH, FACULTY)
    body = '{"error":"invalid_token","error_description":"Invalid access token: 1b2c"}'
    env.emulator.faults.add(endpoint="api", kind="status", status=401, body=body, content_type="application/json", times=1)

    report = env.worker.run_once()

    assert (report.revoked, report.retried) == (0, 1)
    assert env.items()[0].status == RETRY
    assert env.store.links.get_active("alice@example.org") is not None
    assert env.store.links.tokens("alice@example.org") is not None


def test_an_unknown_organisation_is_parked_with_orcids_message_and_not_retried(env):
    stanford = {**ORG, "name": "Stanford University", "city": "Stanford", "disambiguated_id": "00f54p054"}
    env = env.with_settings(affiliation_settings(organization=stanford))
    env.link("alice@example.org", JOSIAH, FACULTY)

    assert env.worker.run_once().parked == 1
    [row] = env.items()
    assert row.status == PARKED
    assert "9045" in row.last_error and "disambiguated-organization" in row.last_error
    assert env.worker.run_once().claimed == 0
    summary = env.outbox.summary()
    assert summary["counts"][PARKED] == 1 and "9045" in summary["parked"][0]["reason"]


def test_a_missing_city_is_parked_with_9060(env):
    org = env.settings.organization
    broken = replace(env.settings, organization=Organization(org.name, "", org.country, org.disambiguated_id))
    env = env.with_settings(broken)
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    [row] = env.items()
    assert row.status == PARKED and "9060" in row.last_error


@pytest.mark.parametrize(("code", "message"), [
    (9055, "400 Bad Request: End date must come after start date."),  # StartDateAfterEndDateException
    (9049, "400 Bad request: invalid date: 2025-02-30 "),  # InvalidFuzzyDateException
])
def test_orcids_date_errors_are_parked_with_orcids_message_and_not_retried(env, code, message):
    # ORCID-Source OrcidCoreExceptionMapper / api_en.properties: 400 with error-code 9055 or 9049.
    env.link("alice@example.org", JOSIAH, FACULTY)
    body = json.dumps({"response-code": 400, "developer-message": message, "user-message": "Invalid date",
                       "error-code": code, "more-info": "https://members.orcid.org/api/resources/troubleshooting"})
    env.emulator.faults.add(endpoint="api", kind="status", status=400, body=body,
                            content_type="application/vnd.orcid+json;charset=UTF-8", times=1)
    assert env.worker.run_once().parked == 1
    [row] = env.items()
    assert row.status == PARKED and str(code) in row.last_error and message.strip() in row.last_error
    assert env.worker.run_once().claimed == 0
    assert env.on_record(JOSIAH) == []


def test_an_end_dated_item_without_a_start_date_reaches_the_record(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    token = env.store.links.tokens("alice@example.org").access_token
    ended = {"organization": {"name": "Boston University", "address": {"city": "Boston", "country": "US"},
                              "disambiguated-organization": {"disambiguated-organization-identifier": ORG["disambiguated_id"],
                                                             "disambiguation-source": "ROR"}},
             "end-date": {"year": {"value": "2020"}}, "department-name": "D" * 4000}
    put_code = env.client.post_affiliation(JOSIAH, "employment", ended, token)
    [item] = env.on_record(JOSIAH)
    assert item.put_code == put_code and "start-date" not in item.body and len(item.body["department-name"]) == 4000


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_with_backoff(env, status):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.emulator.faults.add(endpoint="api", kind="status", status=status, times=1)
    before = datetime.now(timezone.utc)

    report = env.worker.run_once(max_items=1)  # (not again in this run however slow the machine)
    after = datetime.now(timezone.utc)

    assert report.retried == 1
    [row] = env.items()
    assert row.status == RETRY and f"HTTP {status}" in row.last_error
    # backoff_base 0.05 s with jitter 0.5..1.5, counted from when the answer came
    assert before + timedelta(seconds=0.025) <= row.next_attempt_at <= after + timedelta(seconds=0.076)
    assert env.worker.run_once(now=before + timedelta(seconds=1)).posted == 1
    assert len(env.on_record(JOSIAH)) == 1


def test_a_timed_out_post_that_orcid_did_store_is_not_posted_twice(env):
    client = OrcidClient(orcid_settings(env.emulator.issuer, read_timeout=0.3), session=http_session(transport_retries=False))
    # a backoff long enough that the retry is never due again inside the same run, however slow the machine
    slow_retry = affiliation_settings(sync={"backoff_base": 30, "backoff_max": 60, "max_attempts": 3, "batch_size": 10})
    env = replace(env, worker=SyncWorker(client, env.outbox, slow_retry.sync))
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.emulator.faults.add(endpoint="api", kind="delay", seconds=0.6, times=1)

    assert env.worker.run_once().retried == 1
    [row] = env.items()
    assert row.status == RETRY and "timed out" in row.last_error and row.posted_at is not None
    deadline = time.monotonic() + 5
    while not env.on_record(JOSIAH) and time.monotonic() < deadline:
        time.sleep(0.05)  # the emulator finishes the slow POST after we gave up

    report = env.worker.run_once(now=datetime.now(timezone.utc) + timedelta(seconds=120))
    assert report.adopted == 1
    assert len(env.on_record(JOSIAH)) == 1
    assert env.items()[0].status == DONE


def test_a_connection_dropped_after_orcid_committed_is_recovered_without_a_duplicate(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.emulator.member_api.add_fault("drop", method="POST")

    assert env.worker.run_once(max_items=1).retried == 1  # (not again in this run however slow the machine)
    assert len(env.on_record(JOSIAH)) == 1  # ORCID stored it; we never saw the 201

    report = env.worker.run_once(now=datetime.now(timezone.utc) + timedelta(seconds=2))
    assert (report.adopted, report.posted) == (1, 0)
    [item] = env.on_record(JOSIAH)
    assert env.items()[0].put_code == item.put_code


def test_giving_up_after_max_attempts_parks_the_item(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.emulator.faults.add(endpoint="api", kind="status", status=503)
    later = datetime.now(timezone.utc)
    for _ in range(3):
        later += timedelta(seconds=5)
        env.worker.run_once(now=later)
    [row] = env.items()
    assert row.status == PARKED and row.last_error.startswith("gave up after 3 attempts")


def test_an_item_of_another_source_is_parked_with_403(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    foreign = env.emulator.member_api.add_item(JOSIAH, "employment", {"organization": {"name": "X"}}, OTHER_CLIENT)
    _set_row(env.store, put_code=foreign, synced_hash=None, status=QUEUED)
    env.worker.run_once()
    [row] = env.items()
    assert row.status == PARKED and "403" in row.last_error and "9010" in row.last_error


def test_an_item_deleted_on_orcid_is_parked_until_an_admin_resyncs(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    env.emulator.member_api.items.clear()  # the researcher deleted it on orcid.org
    env.login("alice@example.org", {**FACULTY, "ou": ["Biology"]})
    env.worker.run_once()
    [row] = env.items()
    assert row.status == PARKED and row.put_code is None and "no longer on the ORCID record" in row.last_error
    env.outbox.resync("alice@example.org")
    assert env.worker.run_once().posted == 1
    assert env.on_record(JOSIAH)[0].body["department-name"] == "Biology"


# --- the client's view of ORCID's answers -----------------------------------------------------
def test_client_maps_member_api_errors(env):
    env.link("alice@example.org", JOSIAH, FACULTY)
    token = env.store.links.tokens("alice@example.org").access_token
    body = {"organization": {"name": "BU", "address": {"city": "Boston", "country": "US"},
                             "disambiguated-organization": {"disambiguated-organization-identifier": "https://ror.org/05qwgg493",
                                                            "disambiguation-source": "ROR"}},
            "external-ids": {"external-id": [{"external-id-type": "other-id", "external-id-value": "x1",
                                              "external-id-relationship": "self"}]}}
    put_code = env.client.post_affiliation(JOSIAH, "employment", body, token)
    with pytest.raises(DuplicateItem) as dup:
        env.client.post_affiliation(JOSIAH, "employment", body, token)
    assert dup.value.put_code == put_code and dup.value.error_code == 9021
    with pytest.raises(OrcidValidationError) as bad:
        env.client.put_affiliation(JOSIAH, "employment", put_code, body, token)  # no put-code in the body
    assert bad.value.error_code == 9019
    with pytest.raises(OrcidValidationError) as bad:
        env.client.post_affiliation(JOSIAH, "employment", {**body, "put-code": 1}, token)
    assert bad.value.error_code == 9024
    assert [s.put_code for s in env.client.list_affiliations(JOSIAH, "employment", token)] == [put_code]
    env.emulator.revoke_user_tokens(JOSIAH)
    with pytest.raises(TokenRevoked) as revoked:
        env.client.post_affiliation(JOSIAH, "employment", body, token)
    assert token not in str(revoked.value) and token not in repr(revoked.value)
    env.client.delete_affiliation(JOSIAH, "employment", put_code, token)  # allowed for user-revoked tokens
    with pytest.raises(OrcidApiError) as gone:
        env.client.delete_affiliation(JOSIAH, "employment", put_code, token)
    assert gone.value.status == 404


# --- processes ----------------------------------------------------------------------------------
def _write_config(tmp_path: Path, env: Env) -> Path:
    config = {
        "module": "satosa_orcid_plugin.OrcidConnect",
        "name": "orcid",
        "config": {
            "orcid": {"environment": "emulator", "base_url": env.emulator.issuer, "client_id": CLIENT_ID,
                      "client_secret": SECRET, "scopes": SCOPES.split(), "timeouts": {"connect": 1, "read": 5}},
            "user_key_attribute": "edupersonprincipalname",
            "store": {"database_url": env.database_url, "token_keys": [env.key], "auto_upgrade": False},
            "affiliations": {"organization": ORG, "department_attribute": "ou", "role_attribute": "title"},
        },
    }
    path = tmp_path / "orcid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _worker(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "satosa_orcid_plugin.cli", "--config", str(config), "sync", "run", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_sigkill_between_orcids_201_and_our_commit_leaves_exactly_one_item(env, tmp_path):
    env.link("alice@example.org", JOSIAH, FACULTY)
    config = _write_config(tmp_path, env)
    env.emulator.member_api.add_fault("delay", method="POST", seconds=30)  # answer held after the commit

    worker = _worker(config, "--once", "--lease", "1")
    try:
        deadline = time.monotonic() + 20
        while not env.on_record(JOSIAH):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker never posted"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)  # ORCID has the item; we never learnt its put-code
        worker.wait(timeout=10)
    finally:
        env.emulator.member_api.release()
        if worker.poll() is None:
            worker.kill()
    [row] = env.items()
    assert row.put_code is None and row.posted_at is not None

    time.sleep(1.1)  # the dead worker's lease runs out
    restarted = _worker(config, "--once")
    out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["adopted"] == 1 and report["posted"] == 0

    [item] = env.on_record(JOSIAH)
    [row] = env.items()
    assert (row.status, row.put_code, row.posted_at) == (DONE, item.put_code, None)


@pytest.mark.postgres
def test_two_worker_processes_write_every_item_once_within_the_rate_limit(emulator, postgres_url, tmp_path):
    key = TokenCipher.generate_key()
    store = Store.from_url(postgres_url, TokenCipher.from_keys([key]))
    store.db.upgrade()
    client = OrcidClient(orcid_settings(emulator.issuer), session=http_session(transport_retries=False))
    settings = affiliation_settings()
    outbox = store.outbox
    env = Env(emulator, store, outbox, client, settings, None, key, postgres_url)  # type: ignore[arg-type]
    for i, account in enumerate(LOAD_ACCOUNTS):
        env.link(f"user{i}@example.org", account.orcid, {"edupersonaffiliation": ["staff"], "ou": [f"Dept {i % 7}"]})
    assert len(env.items()) == len(LOAD_ACCOUNTS)
    emulator.member_api.reset()  # a full bucket at ORCID, as for a fresh client
    config = _write_config(tmp_path, env)

    workers = [_worker(config, "--once", "--batch-size", "4", "--owner", f"w{n}") for n in range(2)]
    results = [w.communicate(timeout=60) for w in workers]

    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in results]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert all(r["posted"] > 0 for r in reports), reports  # both took part
    assert sum(r["posted"] for r in reports) == len(LOAD_ACCOUNTS)
    assert emulator.member_api.rate_limited == 0
    assert [c for c in emulator.member_api.calls if c[2] >= 500] == []
    for account in LOAD_ACCOUNTS:
        assert len(emulator.member_api.items_of(account.orcid)) == 1
    assert {i.status for i in env.items()} == {DONE}
    store.db.dispose()


# --- the command line ----------------------------------------------------------------------------
def test_cli_status_run_show_and_resync(env, tmp_path):
    from click.testing import CliRunner

    from satosa_orcid_plugin.cli import main
    from satosa_orcid_plugin.cli_sync import register

    register(main)
    config = str(_write_config(tmp_path, env))
    runner = CliRunner()
    env.link("alice@example.org", JOSIAH, FACULTY)

    status = runner.invoke(main, ["--config", config, "sync", "status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["counts"]["queued"] == 1

    run = runner.invoke(main, ["--config", config, "sync", "run", "--once"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output.strip().splitlines()[-1])["posted"] == 1

    show = runner.invoke(main, ["--config", config, "affiliations", "show", "alice@example.org", "--json"])
    assert show.exit_code == 0, show.output
    data = json.loads(show.output)
    [ours] = data["ours"]
    [theirs] = data["orcid_has"]["employment"]
    assert ours["put_code"] == theirs["put_code"] and theirs["ours"] and ours["in_step"]
    assert data["orcid_has"]["education"] == [] and data["orcid_error"] is None
    text = runner.invoke(main, ["--config", config, "affiliations", "show", "alice@example.org"])
    assert "employment: put-code" in text.output and "(ours)" in text.output

    resync = runner.invoke(main, ["--config", config, "affiliations", "resync", "--all"])
    assert resync.exit_code == 0 and "queued 1 item(s)" in resync.output
    assert runner.invoke(main, ["--config", config, "affiliations", "resync"]).exit_code == 2

    env.emulator.revoke_user_tokens(JOSIAH)
    runner.invoke(main, ["--config", config, "sync", "run", "--once"])
    text = runner.invoke(main, ["--config", config, "sync", "status"])
    assert "parked: 1" in text.output and "invalid_token" in text.output


# --- the loop and the shared bucket -------------------------------------------------------------
def test_run_forever_picks_up_new_links_and_stops_on_request(env):
    import threading

    worker = SyncWorker(env.client, env.outbox, replace(env.settings.sync, poll_interval=0.05), limiter=env.worker.limiter)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        env.link("alice@example.org", JOSIAH, FACULTY)
        deadline = time.monotonic() + 5
        while not (env.items() and env.items()[0].status == DONE) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(env.on_record(JOSIAH)) == 1 and env.items()[0].status == DONE


def test_the_database_bucket_allows_the_burst_then_the_rate(database_url, token_cipher):
    store = Store.from_url(database_url, token_cipher)
    store.db.upgrade()
    now = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = store.rate_limiter(rate=10, burst=5, clock=lambda: now[0], sleep=sleep)
    other_host = store.rate_limiter(rate=10, burst=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        assert limiter.try_acquire() == 0.0
    assert other_host.try_acquire() == pytest.approx(0.1)  # one bucket for every worker
    assert other_host.acquire() is True and waits and 0.1 <= waits[0] <= 0.11
    now[0] += 100  # a long pause refills only up to the burst
    assert sum(1 for _ in range(8) if limiter.try_acquire() == 0.0) == 5
    assert limiter.acquire(timeout=0.0) is False
    store.db.dispose()



def test_every_write_to_orcid_is_audited_with_a_json_log_line(env, caplog):
    import json as _json
    import logging

    caplog.set_level(logging.INFO, logger="satosa_orcid_plugin.audit")
    env.link("alice@example.org", JOSIAH, FACULTY)
    env.worker.run_once()
    env.login("alice@example.org", {**FACULTY, "title": ["Dean"]})
    env.worker.run_once()
    writes = [e for e in env.store.db.audit_events(user_key="alice@example.org") if e["event"] == "affiliation_write"]
    assert [e["detail"]["action"] for e in reversed(writes)] == ["post", "put"]
    assert all(e["detail"]["kind"] == "employment" and e["detail"]["put_code"] for e in writes)
    lines = [_json.loads(r.getMessage()) for r in caplog.records if r.name == "satosa_orcid_plugin.audit"]
    assert [l["event"] for l in lines if l["event"] == "affiliation_write"] == ["affiliation_write"] * 2
    token = env.store.links.tokens("alice@example.org").access_token
    assert all(token not in r.getMessage() for r in caplog.records)


def test_the_worker_revokes_the_tokens_a_relink_replaced_when_orcid_did_not_answer_at_once(env):
    from satosa_orcid_plugin.services import TokenRevoker

    env.link("alice@uni.example", JOSIAH, FACULTY)
    first = env.store.links.tokens("alice@uni.example").access_token
    relinked = env.link("alice@uni.example", JOSIAH, FACULTY)  # the proxy's immediate revoke did not happen
    assert len(relinked.superseded) == 1
    assert first in {t.access_token for t in env.emulator.tokens(JOSIAH)}
    worker = SyncWorker(env.client, env.outbox, env.settings.sync, revoker=TokenRevoker(env.client, env.store))
    report = worker.run_once()
    assert report.tokens_revoked == 1
    live = {t.access_token for t in env.emulator.tokens(JOSIAH)}
    assert first not in live and env.store.links.tokens("alice@uni.example").access_token in live
    assert env.store.revocations.waiting() == 0


# --- leases when a worker stops ---------------------------------------------------------------------
def _pg_env(emulator, postgres_url, users: int) -> Env:
    key = TokenCipher.generate_key()
    store = Store.from_url(postgres_url, TokenCipher.from_keys([key]))
    store.db.upgrade()
    client = OrcidClient(orcid_settings(emulator.issuer), session=http_session(transport_retries=False))
    env = Env(emulator, store, store.outbox, client, affiliation_settings(), None, key, postgres_url)  # type: ignore[arg-type]
    for i, account in enumerate(LOAD_ACCOUNTS[:users]):
        env.link(f"user{i}@example.org", account.orcid, {"edupersonaffiliation": ["staff"]})
    emulator.member_api.reset()
    return env


def _leases(env: Env) -> list[tuple]:
    with env.store.db.read_transaction() as session:
        return session.execute(sa.select(AffiliationRow.id, AffiliationRow.status, AffiliationRow.lease_owner,
                                         AffiliationRow.lease_until)).all()


def _wait_for_posts(env: Env, worker: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 60
    while len([c for c in env.emulator.member_api.calls if c[0] == "POST"]) < n:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker never posted"
        time.sleep(0.05)


def _wait_for_posting(env: Env, worker: subprocess.Popen) -> None:
    """Until the worker has committed that it is about to POST an item (and is waiting for ORCID)."""
    deadline = time.monotonic() + 60
    while True:
        with env.store.db.read_transaction() as session:
            if session.scalar(sa.select(sa.func.count()).where(AffiliationRow.posted_at.is_not(None))):
                return
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker never started a POST"
        time.sleep(0.02)


@pytest.mark.postgres
def test_a_worker_stopped_with_sigterm_gives_its_leases_back_at_once(emulator, postgres_url, tmp_path):
    env = _pg_env(emulator, postgres_url, 30)
    config = _write_config(tmp_path, env)
    emulator.member_api.add_fault("delay", method="POST", seconds=0.3, times=30)  # a worker busy in a batch
    worker = _worker(config, "--batch-size", "20")  # the long-running loop, default lease
    try:
        _wait_for_posts(env, worker, 2)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        emulator.member_api.release()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err[-2000:]
    assert "stopped" in err
    rows = _leases(env)
    assert [r for r in rows if r.lease_owner is not None or r.lease_until is not None] == []  # nothing held
    waiting = [r for r in rows if r.status == QUEUED]
    assert waiting, "the worker finished everything before the signal: nothing was released"
    # the rest is written by the next worker at once, each item once
    restarted = _worker(config, "--once")
    out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err[-2000:]
    assert {r.status for r in _leases(env)} == {DONE}
    assert all(len(emulator.member_api.items_of(a.orcid)) == 1 for a in LOAD_ACCOUNTS[:30])
    env.store.db.dispose()


@pytest.mark.postgres
def test_a_killed_workers_leases_expire_within_the_default_half_minute(emulator, postgres_url, tmp_path):
    env = _pg_env(emulator, postgres_url, 10)
    config = _write_config(tmp_path, env)
    # ORCID commits the first POST and holds its answer; the worker is killed while it waits for it,
    # well inside its 5 s read timeout (after which it would give the item up for a retry and go on)
    emulator.member_api.add_fault("delay", method="POST", seconds=30, times=1)
    worker = _worker(config, "--batch-size", "10")
    try:
        _wait_for_posting(env, worker)
        killed_at = datetime.now(timezone.utc)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        emulator.member_api.release()
    leased = [r for r in _leases(env) if r.lease_until is not None]
    assert leased  # the batch the dead worker held
    # it died in its first item: the whole batch is unfinished and still leased to it
    unfinished = [r for r in _leases(env) if r.status != DONE]
    assert len(unfinished) == len(leased) == 10, _leases(env)
    latest = max(r.lease_until for r in leased)
    assert latest <= killed_at + timedelta(seconds=30), latest - killed_at  # SyncSettings' default lease
    time.sleep(max(0.0, (latest - datetime.now(timezone.utc)).total_seconds()) + 0.5)  # until they expire
    restarted = _worker(config, "--once")
    out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["claimed"] == len(unfinished), report  # every one of them, as soon as the leases ended
    assert {r.status for r in _leases(env)} == {DONE}
    assert all(len(emulator.member_api.items_of(a.orcid)) == 1 for a in LOAD_ACCOUNTS[:10])  # the in-flight one adopted
    env.store.db.dispose()
